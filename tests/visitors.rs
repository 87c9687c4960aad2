//! Unknown visitors through `faced run`: the 61 labelled photos of 13 people, nobody enrolled,
//! played in a shuffled order as a stranger stream (each photo held for 6 frames). Checks the
//! clustering's quality bounds (purity ≥ 0.95, 13 ± 2 visitors, no visitor holding two photos
//! that the pair set marks as different people), the events' visitor fields and the retained MQTT summary with
//! its Home Assistant entities; then one visitor is enrolled from the console's Visitors page in
//! headless Chromium (through the API when Chromium is not installed and `CI` is unset), their
//! earlier `unknown` events are re-labelled, and they are recognized on the stream's next pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::{Value, json};

use crate::browser::{shot, sign_in, start_chromium, wait_js};
use crate::util::broker::{Broker, Sub};
use crate::util::daemon::{Daemon, add_admin, faces_dir, photos_by_person};
use crate::util::web::{Client, PASSWORD};

fn free_listen() -> String {
    format!("127.0.0.1:{}", crate::browser::free_port())
}

fn db_rows(db: &Path, sql: &str) -> Vec<(i64, i64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c.prepare(sql).unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn count(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Pairs of photos that the pair set (`pairs.csv`) marks as two different people.
fn different_pairs() -> BTreeSet<(String, String)> {
    let pairs = std::fs::read_to_string(faces_dir().join("pairs.csv")).unwrap();
    let mut out = BTreeSet::new();
    for line in pairs.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if matches!(f[2].trim(), "0" | "false" | "False") {
            out.insert((f[0].to_string(), f[1].to_string()));
            out.insert((f[1].to_string(), f[0].to_string()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_grouped_into_visitors_and_one_is_enrolled_from_the_console() {
    let _heavy = crate::util::alone_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("faced.db");

    // The stream: every labelled photo once, shuffled (fixed seed), 6 frames each.
    let people = photos_by_person();
    let mut photos: Vec<(String, String)> = people
        .iter()
        .flat_map(|(p, fs)| fs.iter().map(move |f| (f.clone(), p.clone())))
        .collect();
    let mut seed = 0x5EED_u64;
    for i in (1..photos.len()).rev() {
        let j = (crate::util::splitmix64(&mut seed) % (i as u64 + 1)) as usize;
        photos.swap(i, j);
    }
    let play = dir.join("play");
    std::fs::create_dir_all(&play).unwrap();
    for (i, (f, _)) in photos.iter().enumerate() {
        std::fs::copy(faces_dir().join(f), play.join(format!("{i:03}_{f}"))).unwrap();
    }
    let different = different_pairs();
    assert!(different.len() > 500, "pairs.csv read");

    tokio::task::block_in_place(|| add_admin(&db));
    let broker = Broker::start();
    let mut sub = Sub::connect(
        broker.port(),
        "visitors-test",
        &["faced/test/visitors", "homeassistant/#"],
        false,
    )
    .await;
    let listen = free_listen();
    let toml = format!(
        "[device]\nid = \"test\"\n[gallery]\ndb = \"{}\"\n\
         [[cameras]]\nname = \"door\"\nsource = \"dir:{}\"\nfps = 10.0\nframes_per_image = 6\n\
         repeat = true\nlossless = true\n\
         [events]\nunknown_cooldown_secs = 0.0\n\
         [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {}\n\
         [web]\nlisten = \"{listen}\"\n",
        db.display(),
        play.display(),
        broker.port()
    );
    let cfg = dir.join("faced.toml");
    std::fs::write(&cfg, toml).unwrap();
    let d = Daemon::start(
        &["--config", cfg.to_str().unwrap()],
        // A unit fourteen hours east of UTC: its "today" is its own (POSIX TZ, no tzdata needed).
        &[
            ("FACED_LOG", "info"),
            ("FACED_WEB__ENABLED", "true"),
            ("TZ", "FAR-14"),
        ],
    );

    // The first pass: one `unknown` event per photo (the unknown cool-down is off).
    let n = photos.len() as i64;
    let t = Instant::now();
    while count(&db, "SELECT COUNT(*) FROM event WHERE kind = 'unknown'") < n {
        assert!(
            t.elapsed() < Duration::from_secs(400),
            "first pass not done: {} unknown events of {n}\n{}",
            count(&db, "SELECT COUNT(*) FROM event WHERE kind = 'unknown'"),
            d.log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let first_pass_s = t.elapsed().as_secs_f32();
    // Event i is photo i; its visitor is the live one (a merged id is followed).
    let ev = db_rows(
        &db,
        &format!(
            "SELECT e.id, COALESCE(v.merged_into, e.visitor_id) FROM event e
             LEFT JOIN visitor v ON v.id = e.visitor_id
             WHERE e.kind = 'unknown' ORDER BY e.id LIMIT {n}"
        ),
    );
    assert!(
        ev.iter().all(|(_, v)| *v > 0),
        "every unknown event has a visitor"
    );
    let mut by_visitor: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, (_, v)) in ev.iter().enumerate() {
        by_visitor.entry(*v).or_default().push(i);
    }
    let majority: usize = by_visitor
        .values()
        .map(|ix| {
            let mut c: BTreeMap<&str, usize> = BTreeMap::new();
            for &i in ix {
                *c.entry(photos[i].1.as_str()).or_default() += 1;
            }
            *c.values().max().unwrap()
        })
        .sum();
    let purity = majority as f32 / n as f32;
    let visitors = by_visitor.len();
    let report: Vec<String> = by_visitor
        .iter()
        .map(|(v, ix)| {
            let who: Vec<&str> = ix.iter().map(|&i| photos[i].1.as_str()).collect();
            format!("visitor {v}: {who:?}")
        })
        .collect();
    eprintln!(
        "visitors: {visitors} for 13 people, purity {purity:.3}, first pass {first_pass_s:.0} s\n{}",
        report.join("\n")
    );
    assert!(purity >= 0.95, "purity {purity}\n{}", report.join("\n"));
    assert!(
        (11..=15).contains(&visitors),
        "{visitors} visitors for 13 people\n{}",
        report.join("\n")
    );
    // No visitor holds two photos that the pair set marks as different people.
    for ix in by_visitor.values() {
        for &a in ix {
            for &b in ix {
                let (pa, pb) = (&photos[a], &photos[b]);
                assert!(
                    !different.contains(&(pa.0.clone(), pb.0.clone())),
                    "a visitor holds {} ({}) and {} ({}), different people in pairs.csv\n{}",
                    pa.0,
                    pa.1,
                    pb.0,
                    pb.1,
                    report.join("\n")
                );
            }
        }
    }

    // MQTT: the retained summary and the Home Assistant entities.
    let summary = sub
        .until(Duration::from_secs(30), |m| {
            m.topic == "faced/test/visitors" && m.json()["today"].as_u64().unwrap_or(0) >= 11
        })
        .await
        .expect("a visitors summary counting today's visitors");
    let s = summary.json();
    let far_east_date = |ms: i64| {
        let (y, m, d) = faced::base::civil_from_days((ms + 14 * 3_600_000).div_euclid(86_400_000));
        format!("{y:04}-{m:02}-{d:02}")
    };
    let now = faced::base::unix_ms(std::time::SystemTime::now());
    // The day of the unit's zone (either side of its midnight, should the test straddle one).
    assert!(
        [far_east_date(now - 60_000), far_east_date(now)]
            .contains(&s["day"].as_str().unwrap().to_string()),
        "{s}"
    );
    assert!(s["last"]["visitor_id"].as_i64().unwrap() > 0, "{s}");
    assert_eq!(s["last"]["camera"], "door", "{s}");
    // A client connecting now gets them retained (the summary keeps changing while the stream
    // plays, so collect for a fixed time instead of until it is quiet).
    let mut late = Sub::connect(
        broker.port(),
        "late",
        &["faced/test/visitors", "homeassistant/#"],
        false,
    )
    .await;
    let mut topics = BTreeSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(m)) = tokio::time::timeout_at(until, late.next(Duration::from_secs(3))).await
    {
        if m.retain {
            topics.insert(m.topic.clone());
        }
    }
    for t in [
        "faced/test/visitors",
        "homeassistant/sensor/faced_test/unknown_visitors_today/config",
        "homeassistant/sensor/faced_test/last_unknown_visitor/config",
        "homeassistant/camera/faced_test/last_unknown_visitor/config",
    ] {
        assert!(topics.contains(t), "{t} not retained: {topics:?}");
    }

    // The events' visitor fields, as the console lists them.
    tokio::task::block_in_place(|| d.wait_for(&["web console listening"], Duration::from_secs(60)));
    let base = format!("http://{listen}");
    let mut api = Client::new(&base);
    api.login("admin", PASSWORD).await;
    let events: Value = api
        .get("/api/events?unknown=true&limit=500")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["visitor_id"].as_i64().is_some()),
        "{events}"
    );

    // Enroll the visitor holding most of person01's photos.
    let (target, target_events) = by_visitor
        .iter()
        .max_by_key(|(_, ix)| ix.iter().filter(|&&i| photos[i].1 == "person01").count())
        .map(|(v, ix)| (*v, ix.len()))
        .unwrap();
    let before: Value = api
        .get(&format!("/api/visitors/{target}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before["id"], target, "{before}");
    // The Events API lists one visitor's events (merged visitors' included), nobody else's.
    let of_target: Value = api
        .get(&format!("/api/events?visitor_id={target}&limit=500"))
        .await
        .json()
        .await
        .unwrap();
    let got: BTreeSet<i64> = of_target
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let theirs: BTreeSet<i64> = by_visitor[&target].iter().map(|&i| ev[i].0).collect();
    assert!(
        theirs.is_subset(&got),
        "visitor {target}: expected {theirs:?} among {got:?}"
    );
    // Every event listed is the visitor's, or a visitor's merged into it (read right after the
    // request, as the stream goes on).
    let foreign = db_rows(
        &db,
        &format!(
            "SELECT e.id, e.visitor_id FROM event e LEFT JOIN visitor v ON v.id = e.visitor_id
             WHERE e.visitor_id IS NOT NULL AND e.visitor_id != {target}
               AND v.merged_into IS NOT {target}"
        ),
    );
    let wrong: Vec<_> = foreign.iter().filter(|(id, _)| got.contains(id)).collect();
    assert!(
        wrong.is_empty(),
        "events of other visitors listed: {wrong:?}"
    );
    assert!(before["faces"].as_array().unwrap().len() >= 2, "{before}");
    let chrome = start_chromium().await;
    let via = if let Some((_driver, c, _profile)) = chrome {
        sign_in(&c, &base).await;
        // The Events page links an unknown event to its visitor.
        c.goto(&format!("{base}/#events")).await.unwrap();
        wait_js(
            &c,
            "visitor link",
            "return document.querySelectorAll('#event-list a.visitor-link').length",
        )
        .await;
        c.goto(&format!("{base}/#visitors?id={target}"))
            .await
            .unwrap();
        wait_js(
            &c,
            "visitor card",
            &format!("return !!document.querySelector('#visitor-{target}.focus img')"),
        )
        .await;
        // Phone-sized: the card's controls stay inside the viewport.
        c.set_window_size(390, 844).await.unwrap();
        let fits = c
            .execute(
                &format!(
                    "const r = document.querySelector('#visitor-{target} .actions').getBoundingClientRect();
                     return r.right <= window.innerWidth + 1 && r.width > 0;"
                ),
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, json!(true), "visitor actions overflow a phone screen");
        shot(&c, "visitors-phone.png").await;
        c.set_window_size(1280, 1000).await.unwrap();
        // The card links to the visitor's events: the Events page shows only theirs.
        c.find(Locator::Css(&format!("#visitor-{target} a.visitor-events")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_js(
            &c,
            "the visitor's events",
            &format!(
                "const n = document.querySelectorAll('#event-list li.event').length;
                 return location.hash === '#events?visitor={target}'
                   && !document.getElementById('ef-visitor').hidden && n >= {} ? n : 0;",
                theirs.len().min(50)
            ),
        )
        .await;
        // The hidden Visitors page still holds its earlier cards until it loads again: drop
        // them, so the wait below sees the new render, not a card about to be replaced.
        c.execute(
            "document.getElementById('visitor-list').replaceChildren();",
            vec![],
        )
        .await
        .unwrap();
        c.goto(&format!("{base}/#visitors?id={target}"))
            .await
            .unwrap();
        wait_js(
            &c,
            "visitor card again",
            &format!("return !!document.querySelector('#visitor-{target}.focus img')"),
        )
        .await;
        c.find(Locator::Css(&format!(
            "#visitor-{target} input[placeholder=Name]"
        )))
        .await
        .unwrap()
        .send_keys("Courier")
        .await
        .unwrap();
        c.find(Locator::Css(&format!(
            "#visitor-{target} button[aria-label='Enroll visitor {target}']"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        wait_js(
            &c,
            "enrolled",
            "return document.getElementById('flash').textContent.includes('enrolled as Courier')",
        )
        .await;
        shot(&c, "visitors.png").await;
        "chromium"
    } else {
        let r = api
            .post_json(
                &format!("/api/visitors/{target}/enroll"),
                &json!({"name": "Courier"}),
            )
            .await;
        assert_eq!(r.status(), 201);
        "api"
    };
    // Their earlier unknown events now name the person; the visitor is gone from the list.
    let relabelled = count(
        &db,
        &format!(
            "SELECT COUNT(*) FROM event WHERE kind = 'unknown' AND person_name = 'Courier'
             AND id <= {}",
            ev.last().unwrap().0
        ),
    );
    assert!(
        relabelled >= target_events as i64,
        "{relabelled} of {target_events} events re-labelled (via {via})"
    );
    let r = api.get(&format!("/api/visitors/{target}")).await;
    assert_eq!(r.status(), 409, "an enrolled visitor is a person now");
    // The audit trail has the enrollment twice: the person's, and the visitor's.
    let audited = |action: &str, kind: &str| {
        count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM audit WHERE action = '{action}' AND subject_kind = '{kind}'
                 AND actor_kind = 'user' AND origin = '127.0.0.1'"
            ),
        )
    };
    assert_eq!(audited("enroll", "person"), 1, "via {via}");
    assert_eq!(audited("visitor_enroll", "visitor"), 1, "via {via}");
    // And the next pass recognizes them.
    let t = Instant::now();
    while count(
        &db,
        "SELECT COUNT(*) FROM event WHERE kind = 'recognized' AND person_name = 'Courier'",
    ) == 0
    {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "Courier not recognized on the next pass\n{}",
            d.log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(d);
}
