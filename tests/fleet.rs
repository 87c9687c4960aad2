//! The fleet through `faced run`: units that share a site key share one gallery through a real
//! Mosquitto, whatever the order of edits, stops and broker restarts.
//!
//! Three daemons (A, B, C) on one broker play the same photos (person01 = "Bob", person02 =
//! "Carol"). Enrolled on A with the CLI (no signal: the daemon notices the database changed),
//! Bob reaches B and C within 2 s and they recognize him. With C stopped, Bob is erased on B and
//! Carol enrolled on A; C, restarted, forgets Bob (his events too) and knows Carol. A message not
//! sealed with the site key is refused and logged. Two units rename Carol at once: every unit
//! ends with the same name. The broker restarts without persistence, a broker client parks a
//! 5 MiB retained message among the records, and a fourth unit joins late: it gets everything,
//! from the other units' republishing, and no unit's connection breaks on the oversized message.
//! A fifth unit on a second broker bridged to the first (a mosquitto `connection` bridge)
//! converges too. Separate tests: the one-time join code, and a rotated key shutting a lost unit
//! out.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::broker::{Broker, BrokerOptions, Sub};
use crate::util::daemon::{Daemon, faced_cli, faced_cli_status, faces_dir};
use crate::util::web::{Client, PASSWORD};

const BOB: [&str; 3] = ["img1.jpg", "img2.jpg", "img4.jpg"];
const CAROL: [&str; 2] = ["img26.jpg", "img27.jpg"];
/// What the cameras play: other photos of Bob, one of Carol.
const PLAY: [&str; 4] = ["img5.jpg", "img6.jpg", "img7.jpg", "img44.jpg"];

struct Unit {
    name: &'static str,
    db: PathBuf,
    key: PathBuf,
    cfg: PathBuf,
    daemon: Option<Daemon>,
    /// The console's address, when it has one.
    web: Option<String>,
}

impl Unit {
    fn new(root: &Path, name: &'static str, port: u16, play: &Path) -> Unit {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("faced.db");
        let key = dir.join("site.key");
        let toml = format!(
            "[device]\nid = \"{name}\"\n[gallery]\ndb = \"{}\"\n\
             [[cameras]]\nname = \"door\"\nsource = \"dir:{}\"\nfps = 4.0\nframes_per_image = 2\n\
             repeat = true\nlossless = true\n\
             [events]\ncooldown_secs = 1.0\n\
             [visitors]\nenabled = false\n\
             [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\n\
             [fleet]\nenabled = true\nkey_path = \"{}\"\n",
            db.display(),
            play.display(),
            key.display()
        );
        let cfg = dir.join("faced.toml");
        std::fs::write(&cfg, toml).unwrap();
        Unit {
            name,
            db,
            key,
            cfg,
            daemon: None,
            web: None,
        }
    }

    /// Turns the console on, with an admin account.
    fn with_console(mut self) -> Unit {
        faced_cli(
            &[
                "user",
                "--db",
                self.db.to_str().unwrap(),
                "add",
                "--admin",
                "admin",
            ],
            &format!("{PASSWORD}\n"),
        );
        self.web = Some(format!("127.0.0.1:{}", crate::browser::free_port()));
        self
    }

    fn start(&mut self) {
        let mut env = vec![("FACED_LOG", "info,faced::fleet=debug")];
        if let Some(w) = &self.web {
            env.extend([
                ("FACED_WEB__ENABLED", "true"),
                ("FACED_WEB__LISTEN", w.as_str()),
            ]);
        }
        let d = Daemon::start(&["--config", self.cfg.to_str().unwrap()], &env);
        self.daemon = Some(d);
    }

    fn d(&self) -> &Daemon {
        self.daemon.as_ref().expect("unit running")
    }

    fn wait_synced(&self) {
        self.d()
            .wait_for(&["fleet: in sync with the broker"], Duration::from_secs(60));
    }

    fn stop(&mut self) {
        let mut d = self.daemon.take().unwrap();
        d.signal(libc::SIGTERM);
        assert_eq!(
            d.wait(Duration::from_secs(30)),
            Some(0),
            "{} stops",
            self.name
        );
    }

    fn log(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.log.lock().unwrap().join("\n"))
            .unwrap_or_default()
    }

    /// `sql`'s one value; -2 while the daemon has not created the database yet.
    fn q(&self, sql: &str) -> i64 {
        let c = rusqlite::Connection::open(&self.db).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        match c.query_row(sql, [], |r| r.get(0)) {
            Ok(v) => v,
            Err(e) if e.to_string().contains("no such table") => -2,
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    /// Positive samples of `name` (-1: no such person).
    fn samples_of(&self, name: &str) -> i64 {
        self.q(&format!(
            "SELECT IFNULL((SELECT COUNT(s.id) FROM person p LEFT JOIN face_sample s
               ON s.person_id = p.id AND s.kind = 'positive' WHERE p.name = '{name}'
               GROUP BY p.id), -1)"
        ))
    }

    fn names(&self) -> Vec<String> {
        let c = rusqlite::Connection::open(&self.db).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        let mut st = c.prepare("SELECT name FROM person ORDER BY name").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// Enrolls `name` from `photos` with the CLI beside the running daemon, which notices on its
    /// own; returns when the CLI exited.
    fn enroll(&self, name: &str, photos: &[&str]) -> Instant {
        let files: Vec<String> = photos
            .iter()
            .map(|p| faces_dir().join(p).display().to_string())
            .collect();
        let mut args = vec!["enroll", "--db", self.db.to_str().unwrap(), "--name", name];
        args.extend(files.iter().map(String::as_str));
        let (ok, out) = faced_cli_status(&args, "");
        assert!(ok, "enroll {name} on {}: {out}", self.name);
        Instant::now()
    }

    /// `faced people` on the unit's database, beside its daemon.
    fn people(&self, args: &[&str]) {
        let mut a = vec!["people", "--db", self.db.to_str().unwrap()];
        a.extend_from_slice(args);
        faced_cli(&a, "");
    }
}

/// Publishes `payload` on `topic` as any broker client could, whatever its size.
async fn publish_raw(port: u16, topic: &str, payload: Vec<u8>, retain: bool) {
    publish_with(port, None, topic, payload, retain).await
}

/// Publishes as `user` (password `pw-<user>`) or anonymously; returns once the broker
/// acknowledged it (Mosquitto acknowledges a publish its ACL denies, and drops it).
async fn publish_with(port: u16, user: Option<&str>, topic: &str, payload: Vec<u8>, retain: bool) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut o = MqttOptions::new(
        format!("{}-publisher", user.unwrap_or("raw")),
        "127.0.0.1",
        port,
    );
    if let Some(u) = user {
        o.set_credentials(u, format!("pw-{u}"));
    }
    o.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut el) = AsyncClient::new(o, 10);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .await
        .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("raw publish: {e}"),
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "the broker acknowledged the raw publish");
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !matches!(
            el.poll().await,
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
        ) {}
    })
    .await;
}

/// Polls `f` until it is true; panics with `what` and the units' logs after `timeout`.
fn until(what: &str, timeout: Duration, units: &[&Unit], mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > timeout {
            let logs: Vec<String> = units
                .iter()
                .map(|u| format!("--- {}\n{}", u.name, u.log()))
                .collect();
            panic!("{what}: not within {timeout:?}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    t.elapsed()
}

/// Creates the site key at `key` and returns its site key code (`faced fleet code`).
fn join_code(key: &Path) -> String {
    let out = faced_cli(&["fleet", "--key", key.to_str().unwrap(), "init"], "");
    assert!(
        !out.contains("faced-site-"),
        "init does not show the key: {out}"
    );
    let out = faced_cli(&["fleet", "--key", key.to_str().unwrap(), "code"], "");
    out.lines()
        .find(|l| l.starts_with("faced-site-"))
        .unwrap_or_else(|| panic!("no join code in {out}"))
        .to_string()
}

#[test]
fn units_of_a_site_share_one_gallery_through_the_broker() {
    let _heavy = crate::util::alone();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let play = root.join("play");
    std::fs::create_dir_all(&play).unwrap();
    for p in PLAY {
        std::fs::copy(faces_dir().join(p), play.join(p)).unwrap();
    }
    let mut broker = Broker::start();
    let port = broker.port();
    let mut a = Unit::new(root, "a", port, &play).with_console();
    let mut b = Unit::new(root, "b", port, &play);
    let mut c = Unit::new(root, "c", port, &play);

    // One site key: created on A, joined on B and C with the code A printed.
    let code = join_code(&a.key);
    for u in [&b, &c] {
        let out = faced_cli(
            &["fleet", "--key", u.key.to_str().unwrap(), "join", &code],
            "",
        );
        assert!(out.contains("site key installed"), "{out}");
    }
    let site = faced_cli(&["fleet", "--key", a.key.to_str().unwrap(), "code"], "");
    let site = site
        .lines()
        .find_map(|l| l.strip_prefix("# site: "))
        .unwrap()
        .to_string();
    // The broker sees only sealed records: watch everything under the site.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut spy = rt.block_on(Sub::connect(port, "spy", &["faced/fleet/#"], false));
    let mut ha = rt.block_on(Sub::connect(
        port,
        "ha",
        &["faced/a/fleet", "homeassistant/sensor/#"],
        false,
    ));

    for u in [&mut a, &mut b, &mut c] {
        u.start();
    }
    for u in [&a, &b, &c] {
        u.wait_synced();
    }

    // Enroll Bob on A: B and C hold him within 2 s and recognize him.
    let t = a.enroll("Bob", &BOB);
    until(
        "B and C receive Bob",
        Duration::from_secs(10),
        &[&a, &b, &c],
        || b.samples_of("Bob") == 3 && c.samples_of("Bob") == 3,
    );
    let replicated = t.elapsed();
    eprintln!("fleet: Bob reached B and C {replicated:?} after `faced enroll` on A exited");
    assert!(
        replicated < Duration::from_secs(2),
        "Bob took {replicated:?} to reach B and C"
    );
    for u in [&b, &c] {
        until(
            &format!("{} recognizes Bob", u.name),
            Duration::from_secs(60),
            &[u],
            || {
                u.q("SELECT COUNT(*) FROM event WHERE kind = 'recognized' AND person_name = 'Bob'")
                    > 0
            },
        );
    }
    assert_eq!(
        b.q("SELECT origin = 'a' FROM person WHERE name = 'Bob'"),
        1,
        "B knows where Bob was enrolled"
    );
    // B's audit trail: Bob came from the fleet of this site, enrolled on A.
    let fleet_row = format!(
        "SELECT COUNT(*) FROM audit WHERE actor_kind = 'fleet' AND actor = 'site {site}'
         AND origin = 'fleet, enrolled on a' AND action = 'replica_applied'
         AND subject_name = 'Bob' AND detail LIKE 'created%'"
    );
    assert_eq!(b.q(&fleet_row), 1, "B records the record it applied");
    // On the wire: ciphertext only (no name, no JPEG header, no JSON field). Random bytes
    // contain one of these strings with a probability of about 1e-3 per 20 KB record.
    let seen = rt.block_on(spy.drain(Duration::from_millis(500)));
    let records: Vec<_> = seen
        .iter()
        .filter(|m| m.topic.starts_with(&format!("faced/fleet/{site}/person/")))
        .collect();
    assert!(!records.is_empty(), "records are published under the site");
    for m in &records {
        assert!(
            !m.payload.windows(3).any(|w| w == b"Bob")
                && !m.payload.windows(4).any(|w| w == b"JFIF")
                && !m.payload.windows(6).any(|w| w == b"\"name\""),
            "a record on {} is not sealed",
            m.topic
        );
    }

    // A's view of the fleet: the console's Fleet page API and the Home Assistant sensor.
    let mut web = Client::new(&format!("http://{}", a.web.as_ref().unwrap()));
    rt.block_on(web.login("admin", PASSWORD));
    let mut fleet = serde_json::Value::Null;
    until(
        "A sees B and C with its gallery",
        Duration::from_secs(20),
        &[&a, &b, &c],
        || {
            fleet = rt.block_on(async {
                web.get("/api/fleet")
                    .await
                    .json::<serde_json::Value>()
                    .await
                    .unwrap()
            });
            fleet["state"] == "in_sync"
                && fleet["units"].as_array().is_some_and(|u| {
                    u.len() == 2
                        && u.iter()
                            .all(|u| u["online"] == true && u["same_gallery"] == true)
                })
        },
    );
    assert_eq!(fleet["site"], site.as_str());
    assert_eq!(fleet["people"], 1);
    let sensor = rt
        .block_on(ha.until(Duration::from_secs(10), |m| {
            m.topic.starts_with("homeassistant/sensor/")
                && m.topic.ends_with("/gallery_sync/config")
                && m.json()["state_topic"] == "faced/a/fleet"
        }))
        .expect("Home Assistant discovery for the gallery sync sensor");
    assert_eq!(sensor.json()["value_template"], "{{ value_json.state }}");
    let state = rt
        .block_on(ha.until(Duration::from_secs(10), |m| {
            m.topic == "faced/a/fleet"
                && m.json()["state"] == "in_sync"
                && m.json()["people"] == 1
                && m.json()["units"].as_array().is_some_and(|u| u.len() == 2)
        }))
        .expect("faced/a/fleet says in_sync with B and C, Bob included");
    assert_eq!(state.json()["site"], site.as_str());

    // The Fleet page in headless Chromium (skipped where Chromium is not installed and `CI` is
    // unset, as the other browser tests).
    let base = format!("http://{}", a.web.as_ref().unwrap());
    rt.block_on(async {
        let Some((_driver, c, _profile)) = crate::browser::start_chromium().await else {
            return;
        };
        crate::browser::sign_in(&c, &base).await;
        c.goto(&format!("{base}/#fleet")).await.unwrap();
        crate::browser::wait_js(
            &c,
            "B and C listed with the same gallery",
            "return [...document.querySelectorAll('#fleet-units tr[data-unit]')]
               .filter((r) => r.cells[5].textContent === 'same').length === 2
             && document.getElementById('fleet-state').dataset.state === 'in_sync'",
        )
        .await;
        crate::browser::shot(&c, "fleet.png").await;
        c.close().await.unwrap();
    });

    // C goes away; Bob is erased on B and Carol enrolled on A meanwhile.
    let c_stopped_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    c.stop();
    until("A sees C offline", Duration::from_secs(20), &[&a], || {
        let f = rt.block_on(async {
            web.get("/api/fleet")
                .await
                .json::<serde_json::Value>()
                .await
                .unwrap()
        });
        f["units"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["device"] == "c" && u["online"] == false)
    });
    b.people(&["remove", "Bob"]);
    a.enroll("Carol", &CAROL);
    until(
        "A forgets Bob, B learns Carol",
        Duration::from_secs(30),
        &[&a, &b],
        || a.samples_of("Bob") == -1 && b.samples_of("Carol") == 2,
    );
    c.start();
    until(
        "C converges after its restart",
        Duration::from_secs(30),
        &[&a, &b, &c],
        || c.samples_of("Bob") == -1 && c.samples_of("Carol") == 2,
    );
    // The erase took C's earlier events of Bob (and their snapshots) with him.
    assert_eq!(
        c.q(&format!(
            "SELECT COUNT(*) FROM event WHERE person_name = 'Bob' AND at < {c_stopped_ms}"
        )),
        0
    );
    assert_eq!(
        c.q("SELECT COUNT(*) FROM tombstone WHERE kind = 'person'"),
        1
    );

    // A message not sealed with the site key cannot inject a person.
    let forged_topic = format!("faced/fleet/{site}/person/ab/{}", "ab".repeat(16));
    let forged = format!(
        r#"{{"uid":"{}","name":"Mallory","name_v":1,"origin":"x","samples":[],"removed":[]}}"#,
        "ab".repeat(16)
    );
    // Published by the test's own MQTT client (rumqttc), as any other client on the broker could.
    rt.block_on(spy.client.publish(
        &forged_topic,
        rumqttc::QoS::AtLeastOnce,
        false,
        forged.into_bytes(),
    ))
    .unwrap();
    until(
        "the forged record is refused",
        Duration::from_secs(10),
        &[&a],
        || a.log().contains("fleet: refused a message") && a.log().contains(&forged_topic),
    );
    assert_eq!(a.samples_of("Mallory"), -1);
    assert_eq!(b.samples_of("Mallory"), -1);

    // A broker client that deletes a person's retained record: the units publish it again (a
    // unit joining later would otherwise never learn of the person).
    let carol_topic = {
        let c = rusqlite::Connection::open(&a.db).unwrap();
        let uid: String = c
            .query_row(
                "SELECT lower(hex(uid)) FROM person WHERE name = 'Carol'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        format!("faced/fleet/{site}/person/{}/{uid}", &uid[..2])
    };
    {
        rt.block_on(spy.drain(Duration::from_millis(300)));
        // An empty retained message deletes the retained record on the broker.
        rt.block_on(
            spy.client
                .publish(&carol_topic, rumqttc::QoS::AtLeastOnce, true, Vec::new()),
        )
        .unwrap();
        let back = rt.block_on(spy.until(Duration::from_secs(10), |m| {
            m.topic == carol_topic && !m.payload.is_empty()
        }));
        assert!(
            back.is_some(),
            "Carol's record is published again after its deletion"
        );
        // And it is retained again: a new subscriber gets it.
        let mut late = rt.block_on(Sub::connect(port, "late", &[carol_topic.as_str()], false));
        let m = rt.block_on(late.until(Duration::from_secs(10), |m| m.topic == carol_topic));
        assert!(m.is_some_and(|m| m.retain && !m.payload.is_empty()));
    }

    // Two units rename Carol at the same time: every unit ends with one and the same name.
    // Both edits are made while their daemons are stopped, so neither can see the other's
    // first (a daemon picks a CLI edit up within half a second, and a replicated rename would
    // otherwise reach B before its CLI runs).
    a.stop();
    b.stop();
    a.people(&["rename", "Carol", "Caroline"]);
    b.people(&["rename", "Carol", "Carrie"]);
    a.start();
    b.start();
    until(
        "the renames converge",
        Duration::from_secs(30),
        &[&a, &b, &c],
        || {
            let (na, nb, nc) = (a.names(), b.names(), c.names());
            na == nb && nb == nc && na.len() == 1 && na[0] != "Carol"
        },
    );
    let name = a.names()[0].clone();
    eprintln!("fleet: concurrent renames ended as {name:?} everywhere");

    // The broker restarts without persistence (its retained records are gone) and D joins
    // late: the units republish, D gets the whole gallery, Bob's erase included.
    let synced = |u: &Unit| u.d().count("fleet: in sync with the broker");
    let before: Vec<usize> = [&a, &b, &c].iter().map(|u| synced(u)).collect();
    broker.stop();
    broker.start_again();
    for (u, n) in [&a, &b, &c].iter().zip(before) {
        until(
            "in sync again after the restart",
            Duration::from_secs(60),
            &[*u],
            || synced(u) > n,
        );
    }
    let lost = |u: &Unit| u.d().count("fleet: broker connection");
    let lost_before: Vec<usize> = [&a, &b, &c].iter().map(|u| lost(u)).collect();
    // A broker client parks a 5 MiB retained message among the person records (it sees the
    // site id). The units ask the broker (MQTT 5) to drop anything over 4 MiB for them, so it
    // neither ends their connections nor stops D's walk over the shards.
    let poison_topic = format!("faced/fleet/{site}/person/00/{}", "00".repeat(16));
    rt.block_on(publish_raw(port, &poison_topic, vec![0x5a; 5 << 20], true));
    let mut d = Unit::new(root, "d", port, &play);
    faced_cli(
        &["fleet", "--key", d.key.to_str().unwrap(), "join", &code],
        "",
    );
    d.start();
    let t = Instant::now();
    until(
        "D gets the gallery",
        Duration::from_secs(60),
        &[&a, &b, &c, &d],
        || {
            d.samples_of(&name) == 2
                && d.q("SELECT COUNT(*) FROM tombstone WHERE kind = 'person'") == 1
        },
    );
    eprintln!(
        "fleet: a late unit had the gallery {:?} after its start",
        t.elapsed()
    );
    // The oversized message was there all along, and no unit's connection broke on it.
    let mut big = rt.block_on(Sub::connect_with_max(
        port,
        "big",
        &[poison_topic.as_str()],
        8 << 20,
    ));
    let m = rt.block_on(big.next(Duration::from_secs(10)));
    assert!(
        m.is_some_and(|m| m.retain && m.payload.len() == 5 << 20),
        "the broker holds it"
    );
    for (u, n) in [&a, &b, &c, &d]
        .iter()
        .zip(lost_before.into_iter().chain([0]))
    {
        assert_eq!(lost(u), n, "{} lost its connection:\n{}", u.name, u.log());
    }
    // ...and recognizes the person without anything enrolled on it.
    until("D recognizes", Duration::from_secs(60), &[&d], || {
        d.q(&format!(
            "SELECT COUNT(*) FROM event WHERE kind = 'recognized' AND person_name = '{name}'"
        )) > 0
    });

    // A second broker bridged to the first, and E on it.
    let bridge = Broker::start_with(BrokerOptions {
        extra: format!(
            "connection site\naddress 127.0.0.1:{port}\ntopic faced/fleet/# both 1\n\
             cleansession true\nrestart_timeout 1\n"
        ),
        ..Default::default()
    });
    let mut e = Unit::new(root, "e", bridge.port(), &play);
    faced_cli(
        &["fleet", "--key", e.key.to_str().unwrap(), "join", &code],
        "",
    );
    e.start();
    until(
        "E, on the bridged broker, converges",
        Duration::from_secs(60),
        &[&e],
        || e.samples_of(&name) == 2,
    );
    // And an edit on E reaches A through the bridge.
    e.enroll("Bob", &BOB[..2]);
    until(
        "E's enrollment reaches A over the bridge",
        Duration::from_secs(30),
        &[&a, &e],
        || a.samples_of("Bob") == 2,
    );

    for u in [&mut a, &mut b, &mut c, &mut d, &mut e] {
        u.stop();
    }
    drop(bridge);
}

/// `faced fleet invite` on a unit of the site and `faced fleet join` with its one-time code on
/// a new unit hand the site key over the broker, without showing it: the code works once, and
/// an answer made without it is refused. No daemon runs: the exchange is the CLI's own, on a
/// real Mosquitto.
#[test]
fn a_one_time_code_hands_the_site_key_over_the_broker_once() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let broker = Broker::start();
    let port = broker.port();
    let (a, b, c) = (
        Unit::new(root, "a", port, root),
        Unit::new(root, "b", port, root),
        Unit::new(root, "c", port, root),
    );
    faced_cli(&["fleet", "--config", a.cfg.to_str().unwrap(), "init"], "");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut spy = rt.block_on(Sub::connect(port, "spy", &["faced/fleet/invite/#"], false));
    let faced = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faced"));
        cmd.args(args)
            .env_remove("FACED_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };

    // A invites; its code is printed once the broker listens for the request.
    let mut inviter = faced(&["fleet", "--config", a.cfg.to_str().unwrap(), "invite"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(inviter.stdout.take().unwrap()).lines();
    let code = loop {
        let l = lines.next().expect("invite prints a code").unwrap();
        if l.starts_with("faced-join-") {
            break l;
        }
    };
    // B joins with it: same key, and A's invite ends, used up.
    let out = faced_cli(
        &["fleet", "--config", b.cfg.to_str().unwrap(), "join", &code],
        "",
    );
    assert!(out.contains("site key installed"), "{out}");
    let key = std::fs::read(&a.key).unwrap();
    assert_eq!(std::fs::read(&b.key).unwrap(), key);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(inviter.wait().unwrap().success());
    assert!(
        rest.iter().any(|l| l.contains("site key handed over")),
        "{rest:?}"
    );
    // On the wire: one request, one answer, and no key in either.
    let seen = rt.block_on(spy.drain(Duration::from_millis(500)));
    let kinds: Vec<&str> = seen
        .iter()
        .map(|m| m.topic.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(kinds, ["request", "answer"]);
    for m in &seen {
        assert!(
            !m.payload.windows(8).any(|w| key.windows(8).any(|k| k == w)),
            "the site key is visible on {}",
            m.topic
        );
    }

    // Once: the same code again finds nobody, and C stays without a key.
    let (ok, out) = faced_cli_status(
        &[
            "fleet",
            "--config",
            c.cfg.to_str().unwrap(),
            "join",
            &code,
            "--wait",
            "2",
        ],
        "",
    );
    assert!(!ok && out.contains("no unit answered within 2 s"), "{out}");
    assert!(!c.key.exists());

    // A broker client without the code sees C's request and answers it: refused, no key.
    rt.block_on(spy.drain(Duration::from_millis(200)));
    let joiner = faced(&[
        "fleet",
        "--config",
        c.cfg.to_str().unwrap(),
        "join",
        "faced-join-ZZZZ-ZZZZ-ZZZ0",
        "--wait",
        "4",
    ])
    .spawn()
    .unwrap();
    let req = rt
        .block_on(spy.until(Duration::from_secs(10), |m| m.topic.ends_with("/request")))
        .expect("C's request");
    let answer = req.topic.replace("/request", "/answer");
    for forged in [vec![0u8; 32 + 32 + 28 + 32], b"{\"key\":\"x\"}".to_vec()] {
        rt.block_on(
            spy.client
                .publish(&answer, rumqttc::QoS::AtLeastOnce, false, forged),
        )
        .unwrap();
    }
    let out = joiner.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no unit answered") && err.contains("2 answers were refused"),
        "{err}"
    );
    assert!(!c.key.exists());
}

/// A lost (or stolen) unit is shut out by rotating the site key: A rotates, B takes the new key
/// with a one-time code (`join --replace`), C keeps the old one. A and B still share a gallery;
/// what A enrolls never reaches C, and what C does (enroll Mallory, erase Bob) reaches nobody.
#[test]
fn a_rotated_site_key_shuts_a_lost_unit_out() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let _heavy = crate::util::alone();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let play = root.join("play");
    std::fs::create_dir_all(&play).unwrap();
    std::fs::copy(faces_dir().join(PLAY[0]), play.join(PLAY[0])).unwrap();
    let broker = Broker::start();
    let port = broker.port();
    let mut a = Unit::new(root, "a", port, &play);
    let mut b = Unit::new(root, "b", port, &play);
    let mut c = Unit::new(root, "c", port, &play);
    let code = join_code(&a.key);
    for u in [&b, &c] {
        faced_cli(
            &["fleet", "--key", u.key.to_str().unwrap(), "join", &code],
            "",
        );
    }
    for u in [&mut a, &mut b, &mut c] {
        u.start();
    }
    for u in [&a, &b, &c] {
        u.wait_synced();
    }
    a.enroll("Bob", &BOB);
    until(
        "Bob reaches B and C",
        Duration::from_secs(10),
        &[&a, &b, &c],
        || b.samples_of("Bob") == 3 && c.samples_of("Bob") == 3,
    );

    // C is lost. A rotates the key; B takes the new one with a one-time code from A.
    a.stop();
    b.stop();
    let old_key = std::fs::read(&a.key).unwrap();
    let out = faced_cli(
        &["fleet", "--config", a.cfg.to_str().unwrap(), "rotate"],
        "",
    );
    let (new_site, old_site) = out
        .lines()
        .find_map(|l| l.strip_prefix("# site: "))
        .and_then(|l| l.strip_suffix(')'))
        .and_then(|l| l.split_once(" (was "))
        .unwrap_or_else(|| panic!("no sites in {out}"));
    assert_ne!(new_site, old_site);
    assert_ne!(std::fs::read(&a.key).unwrap(), old_key);
    let retired = format!("{}.retired-{old_site}", a.key.display());
    assert_eq!(std::fs::read(&retired).unwrap(), old_key, "{out}");
    assert!(out.contains("--remove-retained"), "{out}");
    let mut inviter = Command::new(env!("CARGO_BIN_EXE_faced"))
        .args(["fleet", "--config", a.cfg.to_str().unwrap(), "invite"])
        .env_remove("FACED_CONFIG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(inviter.stdout.take().unwrap()).lines();
    let invite = loop {
        let l = lines.next().expect("invite prints a code").unwrap();
        if l.starts_with("faced-join-") {
            break l;
        }
    };
    // Without --replace, B refuses before spending the code.
    let (ok, out) = faced_cli_status(
        &[
            "fleet",
            "--config",
            b.cfg.to_str().unwrap(),
            "join",
            &invite,
        ],
        "",
    );
    assert!(!ok && out.contains("--replace"), "{out}");
    let out = faced_cli(
        &[
            "fleet",
            "--config",
            b.cfg.to_str().unwrap(),
            "join",
            "--replace",
            &invite,
        ],
        "",
    );
    assert!(
        out.contains(&format!("replaced the key of site {old_site}")),
        "{out}"
    );
    assert!(inviter.wait().unwrap().success());
    assert_eq!(
        std::fs::read(&b.key).unwrap(),
        std::fs::read(&a.key).unwrap()
    );
    assert_eq!(std::fs::read(&c.key).unwrap(), old_key);
    a.start();
    b.start();
    a.wait_synced();
    b.wait_synced();
    // They share the gallery they had, and what comes next.
    assert_eq!(b.samples_of("Bob"), 3);
    a.enroll("Carol", &CAROL);
    until(
        "Carol reaches B",
        Duration::from_secs(10),
        &[&a, &b],
        || b.samples_of("Carol") == 2,
    );

    // The lost unit enrolls Mallory and erases Bob: published on the old site only.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let old_people = format!("faced/fleet/{old_site}/person/#");
    let mut spy = rt.block_on(Sub::connect(port, "spy", &[old_people.as_str()], false));
    rt.block_on(spy.drain(Duration::from_millis(300)));
    c.enroll("Mallory", &BOB[..1]);
    c.people(&["remove", "Bob"]);
    let mut published = 0;
    while published < 2 {
        let m = rt
            .block_on(spy.next(Duration::from_secs(10)))
            .unwrap_or_else(|| panic!("C publishes on the old site\n{}", c.log()));
        published += usize::from(!m.retain);
    }
    // Give them the time replication takes (tens of ms; 2 s is the promise), then check.
    std::thread::sleep(Duration::from_secs(2));
    for u in [&a, &b] {
        assert_eq!(u.samples_of("Mallory"), -1, "{} got Mallory", u.name);
        assert_eq!(u.samples_of("Bob"), 3, "{} lost Bob", u.name);
    }
    assert_eq!(c.samples_of("Carol"), -1, "the lost unit got Carol");
    assert_eq!(c.samples_of("Mallory"), 1);
}

/// The retained messages under `filter`, read as broker user `user` (password `pw-<user>`).
async fn retained_as(port: u16, user: &str, filter: &str) -> Vec<(String, Vec<u8>)> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new(format!("{user}-reader"), "127.0.0.1", port);
    o.set_credentials(user, format!("pw-{user}"));
    o.set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut el) = AsyncClient::new(o, 100);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let mut out = Vec::new();
    // Retained messages come right after the SUBACK; a quiet half second ends them.
    while let Ok(ev) = tokio::time::timeout(Duration::from_millis(800), el.poll()).await {
        match ev {
            Ok(Event::Incoming(Packet::Publish(p))) if p.retain => {
                out.push((p.topic.clone(), p.payload.to_vec()))
            }
            Ok(_) => {}
            Err(e) => panic!("{user} reading {filter}: {e}"),
        }
    }
    out
}

/// docs/fleet.md's broker ACLs, as written: two units share Bob; the unit `gate` is off when
/// `door` erases him; `door` goes off too, and another broker client (`mallory`, as Home
/// Assistant or any device on a shared broker could) parks Bob's old sealed record on his topic
/// again. The ACL drops it, and `gate`, started then, erases Bob instead of keeping him.
#[test]
fn broker_acls_keep_an_erased_person_from_coming_back() {
    let _heavy = crate::util::alone();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let md = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/fleet.md"))
        .unwrap();
    let acl = md
        .split_once("<!-- fleet-acl: begin -->")
        .and_then(|(_, rest)| rest.split_once("<!-- fleet-acl: end -->"))
        .map(|(block, _)| block.trim())
        .and_then(|b| b.strip_prefix("```text"))
        .and_then(|b| b.strip_suffix("```"))
        .expect("docs/fleet.md has the fleet-acl block");
    let acl_path = root.join("acl");
    std::fs::write(&acl_path, acl).unwrap();
    let users = ["door", "gate", "homeassistant", "mallory"];
    let broker = Broker::start_with(BrokerOptions {
        users: users
            .iter()
            .map(|u| (u.to_string(), format!("pw-{u}")))
            .collect(),
        extra: format!("acl_file {}\n", acl_path.display()),
        ..Default::default()
    });
    let port = broker.port();
    let play = root.join("play");
    std::fs::create_dir_all(&play).unwrap();
    std::fs::copy(faces_dir().join(PLAY[0]), play.join(PLAY[0])).unwrap();
    let mut door = Unit::new(root, "door", port, &play);
    let mut gate = Unit::new(root, "gate", port, &play);
    for u in [&door, &gate] {
        let pw = root.join(format!("{}.mqtt-password", u.name));
        std::fs::write(&pw, format!("pw-{}", u.name)).unwrap();
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let cfg = std::fs::read_to_string(&u.cfg).unwrap().replace(
            "[mqtt]\nenabled = true\n",
            &format!(
                "[mqtt]\nenabled = true\nusername = \"{}\"\npassword_file = \"{}\"\n",
                u.name,
                pw.display()
            ),
        );
        std::fs::write(&u.cfg, cfg).unwrap();
    }
    let code = join_code(&door.key);
    faced_cli(
        &["fleet", "--key", gate.key.to_str().unwrap(), "join", &code],
        "",
    );
    door.start();
    gate.start();
    door.wait_synced();
    gate.wait_synced();
    door.enroll("Bob", &BOB);
    until(
        "Bob reaches gate under the ACLs",
        Duration::from_secs(20),
        &[&door, &gate],
        || gate.samples_of("Bob") == 3,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let records = |rt: &tokio::runtime::Runtime| {
        rt.block_on(retained_as(port, "homeassistant", "faced/fleet/+/person/#"))
    };
    let old = records(&rt);
    assert_eq!(old.len(), 1, "Bob's record is retained");
    let (topic, old_record) = old[0].clone();

    gate.stop();
    door.people(&["remove", "Bob"]);
    until(
        "door publishes Bob's erase",
        Duration::from_secs(20),
        &[&door],
        || records(&rt).first().is_some_and(|(_, r)| *r != old_record),
    );
    door.stop();

    // Bob's old record, parked again by two clients that may use the broker but are not units.
    for who in ["mallory", "homeassistant"] {
        rt.block_on(publish_with(
            port,
            Some(who),
            &topic,
            old_record.clone(),
            true,
        ));
    }
    let now = records(&rt);
    assert!(
        now.len() == 1 && now[0].1 != old_record,
        "the ACL dropped the re-parked record"
    );
    let log = broker.log();
    assert!(
        log.contains("Denied PUBLISH from mallory"),
        "mosquitto logged the denial:\n{log}"
    );

    gate.start();
    gate.wait_synced();
    until(
        "gate applies the erase it missed",
        Duration::from_secs(20),
        &[&gate],
        || gate.samples_of("Bob") == -1,
    );
    assert_eq!(gate.names(), Vec::<String>::new());
}
