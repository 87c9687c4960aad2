//! Presence as Home Assistant sees it, through `faced run`: a real Mosquitto and a subscriber
//! recording Alice's retained presence while the camera plays Alice for 5 s, nobody for 20 s,
//! Alice again for 5 s (within the person cool-down, so no second `recognized` event), then
//! nobody past the away time. Expected: `not_home` at start (nobody seen yet), `home`,
//! `not_home` `mqtt.away_secs` after her last sighting, `home` again, and `not_home` again;
//! a broker restart without persistence while she is home gets `home` back from the unit.

use std::time::{Duration, Instant};

use crate::util::broker::{Broker, Sub};
use crate::util::daemon::{Daemon, faces_dir, gallery_with_person01};

const AWAY_SECS: i64 = 6;

fn now_ms() -> i64 {
    faced::base::unix_ms(std::time::SystemTime::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_the_person_not_the_events() {
    let _heavy = crate::util::alone_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("faced.db");
    let (photos, _) = gallery_with_person01(dir, "alice");
    // 5 s per picture: Alice, nobody ×4, Alice, nobody ×3.
    let play = dir.join("play");
    std::fs::create_dir_all(&play).unwrap();
    let orange = faces_dir().join("negatives/orange.jpg");
    let alice = faces_dir().join(&photos[3]);
    for (i, f) in [
        &alice, &orange, &orange, &orange, &orange, &alice, &orange, &orange, &orange,
    ]
    .iter()
    .enumerate()
    {
        std::fs::copy(f, play.join(format!("{i:03}.jpg"))).unwrap();
    }
    let mut broker = Broker::start();
    let port = broker.port();
    let mut sub = Sub::connect(port, "presence", &["faced/p/person/alice/#"], false).await;
    let toml = format!(
        "[device]\nid = \"p\"\n[gallery]\ndb = \"{}\"\n\
         [[cameras]]\nname = \"door\"\nsource = \"dir:{}\"\nfps = 5.0\nframes_per_image = 25\n\
         repeat = false\nlossless = true\n\
         [events]\ncooldown_secs = 120.0\n\
         [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\nkeepalive_secs = 5\n\
         reconnect_min_ms = 100\nreconnect_max_secs = 1\naway_secs = {AWAY_SECS}\n",
        db.display(),
        play.display(),
    );
    let cfg = dir.join("faced.toml");
    std::fs::write(&cfg, toml).unwrap();
    let d = Daemon::start(
        &["--config", cfg.to_str().unwrap()],
        &[("FACED_LOG", "info")],
    );
    let log = || d.log.lock().unwrap().join("\n");

    // (arrival, state, last_seen_ms of the JSON state published just before it)
    let mut states: Vec<(i64, String, Option<i64>)> = Vec::new();
    let mut last_seen = None;
    let mut restarted = false;
    let t = Instant::now();
    while states.iter().filter(|s| s.1 == "not_home").count() < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(150),
            "states so far {states:?}\n{}",
            log()
        );
        let Some(m) = sub.next(Duration::from_secs(2)).await else {
            continue;
        };
        if m.payload.is_empty() {
            continue;
        }
        if m.topic == "faced/p/person/alice" {
            last_seen = m.json()["last_seen_ms"].as_i64();
            continue;
        }
        let state = m.text().to_string();
        if states.last().is_some_and(|s| s.1 == state) {
            continue;
        }
        states.push((now_ms(), state.clone(), last_seen));
        // The second `home`: the broker restarts without persistence while she is there.
        if state == "home" && states.len() == 4 && !restarted {
            restarted = true;
            drop(sub);
            broker.stop();
            broker.start_again();
            tokio::task::block_in_place(|| {
                d.wait_for(&["reconnected to the MQTT broker"], Duration::from_secs(30))
            });
            sub = Sub::connect(port, "presence-2", &["faced/p/person/alice/#"], false).await;
            let again = sub
                .until(Duration::from_secs(5), |m| {
                    m.topic == "faced/p/person/alice/state"
                })
                .await
                .expect("the state is retained again after the broker restart");
            assert_eq!(again.text(), "home", "{states:?}");
        }
    }
    let kinds: Vec<&str> = states.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(
        kinds,
        ["not_home", "home", "not_home", "home", "not_home"],
        "{states:?}\n{}",
        log()
    );
    // `not_home` comes the away time after her last sighting (the time in the JSON state).
    for (at, state, seen) in &states[2..] {
        if state == "not_home" {
            let lag = at - seen.expect("last_seen_ms in the state");
            assert!(
                (AWAY_SECS * 1000 - 500..=AWAY_SECS * 1000 + 3000).contains(&lag),
                "not_home {lag} ms after the last sighting, away_secs = {AWAY_SECS}: {states:?}"
            );
        }
    }
    // She was gone 20 s between the two visits: long enough to be away, short of the cool-down.
    let gap = states[3].0 - states[2].0;
    assert!(gap > 5_000, "{states:?}");
    let recognized: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM event WHERE kind = 'recognized'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        recognized, 1,
        "the cool-down hid her second visit from the events, not from presence"
    );
    drop(d);
}
