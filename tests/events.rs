//! Events end to end with real parts: the event writer on a real SQLite file with the real MQTT
//! sink and a real Mosquitto, `faced run` on the fixture photos, the CLI.
//!
//! * No poison event can stall the writer: random events with extreme values go through the
//!   real writer; every valid one is stored and published in order, every invalid one lands in
//!   `event_dead_letter` with its reason, and the queue always drains. A busy database is
//!   retried, not blamed on the events; the dead-letter table is bounded.
//! * A face matching its own stored sample (similarity 1 + rounding) is stored and published
//!   by `faced run`, and every event is logged at INFO in one line.
//! * `last_unknown` (MQTT `enroll_last_unknown`) is the face of the last `unknown` event.
//! * A damaged database stops `faced` with an exit status systemd does not restart, naming
//!   the file; `faced enroll` with only bad photos creates nobody.

use crate::util::broker;
use crate::util::daemon as daemon_util;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{Broker, Sub};
use daemon_util::*;
use faced::base::SimulatedClocks;
use faced::events::store::{DEAD_LETTER_KEEP, EventStore, EventWriter, StoreOptions};
use faced::events::{Event, EventKind, rfc3339_utc};
use faced::gallery::{NewSample, SampleKind};
use faced::mqtt::{Mqtt, MqttConfig};

// Tests that run the models or a daemon take turns, with each other and with the heavy tests of
// the other modules: the machine has few cores, and timings ("promptly") are only meaningful
// without a second model run beside them.
use crate::util::alone as heavy;

fn opts() -> StoreOptions {
    StoreOptions {
        retention_days: 0,
        retention_count: 0,
        snapshots: true,
    }
}

/// splitmix64: a seeded generator, so a failure is reproducible from the seed in its message.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        crate::util::splitmix64(&mut self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Clone>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize].clone()
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// The event table's rules as this test understands them from `schema.sql` (written apart from
/// `Event::check` on purpose), plus the test database's trigger that refuses camera "poison".
fn valid(e: &Event) -> bool {
    let name = |s: &str, max: usize| {
        (1..=max).contains(&s.chars().count()) && !s.chars().any(|c| c.is_control())
    };
    name(&e.camera, 32)
        && e.camera != "poison"
        && e.person.as_deref().is_none_or(|p| name(p, 100))
        && e.similarity
            .is_none_or(|s| s.is_finite() && (-1.0..=1.0).contains(&s))
        && e.track_id <= i64::MAX as u64
        && e.duration_ms
            .is_none_or(|d| e.kind == EventKind::Left && d <= i64::MAX as u64)
        && e.bbox.iter().all(|v| v.is_finite())
}

/// A random event; `bbox[0]` is its ordinal `i`, so it can be found wherever it ends up.
fn random_event(i: usize, rng: &mut Rng, person_id: i64) -> Event {
    let kind = rng.pick(&[EventKind::Recognized, EventKind::Unknown, EventKind::Left]);
    let camera = if rng.chance(88) {
        rng.pick(&[
            "front".to_string(),
            "back".into(),
            "Tür-🚪".into(),
            "门口".into(),
            "c".repeat(32),
            "a b=\"c\"".into(),
        ])
    } else {
        rng.pick(&[
            String::new(),
            "c".repeat(33),
            "x".repeat(100_000),
            "bad\nname".into(),
            "nul\0".into(),
            "poison".into(),
        ])
    };
    let person = if rng.chance(40) {
        None
    } else if rng.chance(90) {
        Some(rng.pick(&[
            "Alice".to_string(),
            "Zoë".into(),
            "王小明".into(),
            "👩‍👩‍👧‍👦".into(),
            "é".repeat(100),
            "🙂".repeat(100),
            "\u{202E}evil".into(),
        ]))
    } else {
        Some(rng.pick(&[
            String::new(),
            "x".repeat(101),
            "y".repeat(300_000),
            "tab\tname".into(),
            "\u{7f}".into(),
        ]))
    };
    let similarity = if rng.chance(20) {
        None
    } else if rng.chance(75) {
        let u = rng.unit() * 2.0 - 1.0;
        Some(rng.pick(&[u, u, 1.0, -1.0, 0.0, f32::MIN_POSITIVE]))
    } else {
        Some(rng.pick(&[
            1.000_000_1,
            -1.000_000_1,
            1.5,
            -1.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
        ]))
    };
    let r = rng.below(10_000);
    let track_id = if rng.chance(90) {
        rng.pick(&[0, 1, r, i64::MAX as u64])
    } else {
        rng.pick(&[i64::MAX as u64 + 1, u64::MAX])
    };
    let y = if rng.chance(95) {
        rng.unit() * 1000.0
    } else {
        rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY])
    };
    let r = rng.next() as i64;
    let ts_ms = rng.pick(&[i64::MIN, i64::MAX, 0, -1, 1_738_307_109_042, r]);
    let duration_ms = match (kind, rng.below(100)) {
        (EventKind::Left, 0..70) => Some(rng.pick(&[0, 5000, i64::MAX as u64])),
        (EventKind::Left, 70..75) => Some(u64::MAX),
        (_, 0..4) => Some(100),
        _ => None,
    };
    let snapshot_jpeg = match rng.below(100) {
        0..10 => Some((0..200).map(|_| rng.next() as u8).collect()),
        10..13 => Some(Vec::new()),
        _ => None,
    };
    Event {
        kind,
        event_id: 0,
        person,
        person_id: rng.pick(&[None, Some(person_id), Some(999_999)]),
        similarity,
        camera,
        track_id,
        bbox: [i as f32, y, 2000.0, 2000.0],
        time: rfc3339_utc(ts_ms),
        ts_ms,
        duration_ms,
        snapshot: false,
        snapshot_jpeg,
        frame_captured: None,
        frigate: None,
        visitor: None,
    }
}

/// Runs `f` on a thread; `None` if it did not return within `timeout` (a stalled writer).
fn within<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout).ok()
}

/// `(ordinal, error)` of every dead-letter row, oldest first.
fn dead_letters(db: &Path) -> Vec<(usize, String)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT event, error FROM event_dead_letter ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| {
            let (json, err) = r.unwrap();
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            (v["box"][0].as_f64().unwrap() as usize, err)
        })
        .collect()
}

/// Stored events in id order: `(id, ordinal, kind, camera, person, person_id, similarity,
/// track_id, at, duration_ms, has snapshot)`.
type Row = (
    i64,
    usize,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<f64>,
    i64,
    i64,
    Option<i64>,
    bool,
);

fn stored_rows(db: &Path) -> Vec<Row> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT id, x1, kind, camera, person_name, person_id, similarity, track_id, at,
                    duration_ms, snapshot IS NOT NULL FROM event ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get::<_, f64>(1)? as usize,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Row 4 of the attack table, generalised: random events, a third of them broken in some way
/// (similarity above 1 by rounding, ±inf, NaN, names too long or empty or with control
/// characters, track ids and durations beyond SQLite's integers, NaN boxes) plus events the
/// database itself refuses (a trigger on camera "poison", standing in for any rule the Rust
/// check does not know), sent in bursts so batches mix good and bad. Every valid event is
/// stored and published on MQTT in order with its values intact; every invalid one is in
/// `event_dead_letter` with a reason; the queue drains (on the old code the first bad event
/// made the writer retry its batch forever: the flush below never returned).
#[test]
fn random_events_valid_ones_stored_and_published_in_order_bad_ones_set_aside() {
    let seed = 0x5EED_0009;
    let mut rng = Rng(seed);
    let tmp = tempdir();
    let dir = tmp.path();
    let db = dir.join("faced.db");
    let mut g = gallery(dir);
    let alice = g.add_person("Alice").unwrap().0;
    let key = g.key_path().to_path_buf();
    drop(g);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER test_poison BEFORE INSERT ON event WHEN NEW.camera = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poison camera refused by the test trigger'); END;",
        )
        .unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::start();
    let cfg = MqttConfig {
        enabled: true,
        host: "127.0.0.1".into(),
        port: Some(broker.port()),
        ..Default::default()
    };
    let (mqtt, _commands) = rt
        .block_on(async { Mqtt::start(&cfg, "prop", &db) })
        .unwrap();
    let topic = mqtt.topics().events();
    let mut sub = rt.block_on(Sub::connect(broker.port(), "watch", &[&topic], false));

    let mut store = EventStore::open(&db, &key, opts(), Arc::new(SimulatedClocks::new())).unwrap();
    store.add_sink(Box::new(faced::events::mqtt_sink::MqttSink::new(
        mqtt.clone(),
    )));
    let writer = EventWriter::spawn(store).unwrap();
    let sender = writer.sender();

    const N: usize = 300;
    let events: Vec<Event> = (0..N).map(|i| random_event(i, &mut rng, alice)).collect();
    let good: Vec<&Event> = events.iter().filter(|e| valid(e)).collect();
    let bad: Vec<usize> = (0..N).filter(|&i| !valid(&events[i])).collect();
    assert!(
        good.len() > N / 3 && bad.len() > N / 6,
        "seed {seed:#x}: the mix must exercise both sides ({} good, {} bad)",
        good.len(),
        bad.len()
    );
    assert!(
        bad.iter().any(|&i| events[i].camera == "poison"),
        "seed {seed:#x}: no event for the database to refuse"
    );
    let t = Instant::now();
    let mut i = 0;
    while i < N {
        let burst = 1 + rng.below(40) as usize;
        for e in &events[i..(i + burst).min(N)] {
            assert!(sender.send(e.clone()));
        }
        i += burst;
        std::thread::sleep(Duration::from_millis(rng.below(15)));
    }
    let s = sender.clone();
    assert!(
        within(Duration::from_secs(60), move || s.flush()).is_some(),
        "seed {seed:#x}: the event writer stalled: {N} events not drained within 60 s"
    );
    let drained = t.elapsed();

    // Stored: exactly the valid events, in order, values intact.
    let rows = stored_rows(&db);
    assert_eq!(
        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        good.iter().map(|e| e.bbox[0] as usize).collect::<Vec<_>>(),
        "seed {seed:#x}: stored events (by ordinal) differ from the valid ones"
    );
    let mut last_at = 0i64;
    for (r, e) in rows.iter().zip(&good) {
        let ctx = format!("seed {seed:#x}, event {}", r.1);
        assert_eq!(r.2, e.kind.as_str(), "{ctx}");
        assert_eq!(&r.3, &e.camera, "{ctx}");
        assert_eq!(r.4, e.person, "{ctx}");
        assert_eq!(r.5, e.person_id.filter(|&p| p == alice), "{ctx}");
        assert_eq!(r.6, e.similarity.map(f64::from), "{ctx}");
        assert_eq!(r.7 as u64, e.track_id, "{ctx}");
        // The stored time follows the store's clock rule (docs/reliability.md, "Clock jumps"):
        // a plausible time is kept; one before the rule's floor (a clock never set) continues
        // from the last stamp; one at most a day behind the last stamp takes the last stamp.
        let floor = faced::base::WALL_CLOCK_FLOOR_MS;
        if e.ts_ms < floor {
            let from = last_at.max(floor);
            assert!(
                r.8 >= from && r.8 <= from.saturating_add(300_000),
                "{ctx}: {} stored for {} after {last_at}",
                r.8,
                e.ts_ms
            );
        } else if e.ts_ms < last_at && last_at - e.ts_ms <= 86_400_000 {
            assert_eq!(r.8, last_at, "{ctx}");
        } else {
            assert_eq!(r.8, e.ts_ms, "{ctx}");
        }
        last_at = r.8;
        assert_eq!(r.9.map(|d| d as u64), e.duration_ms, "{ctx}");
        assert_eq!(
            r.10,
            e.snapshot_jpeg.as_ref().is_some_and(|j| !j.is_empty()),
            "{ctx}"
        );
    }

    // Set aside: exactly the invalid ones, each with a reason naming what was wrong.
    // (Within a batch, events the database refuses are found after those the check refuses,
    // so the table is in order of discovery, not of arrival.)
    let dead = dead_letters(&db);
    let mut dead_ordinals: Vec<usize> = dead.iter().map(|d| d.0).collect();
    dead_ordinals.sort_unstable();
    assert_eq!(
        dead_ordinals, bad,
        "seed {seed:#x}: dead letters differ from the invalid events"
    );
    for (i, err) in &dead {
        let e = &events[*i];
        // In the order the writer checks them; the trigger only sees otherwise valid events.
        let want =
            if !(1..=32).contains(&e.camera.chars().count()) || e.camera.contains(['\n', '\0']) {
                "camera name"
            } else if e.person.as_deref().is_some_and(|p| {
                !(1..=100).contains(&p.chars().count()) || p.chars().any(char::is_control)
            }) {
                "person name"
            } else if e
                .similarity
                .is_some_and(|s| !(s.is_finite() && (-1.0..=1.0).contains(&s)))
            {
                "similarity"
            } else if e.track_id > i64::MAX as u64 {
                "track id"
            } else if e
                .duration_ms
                .is_some_and(|d| e.kind != EventKind::Left || d > i64::MAX as u64)
            {
                "duration_ms"
            } else if e.bbox.iter().any(|v| !v.is_finite()) {
                "box"
            } else {
                assert_eq!(e.camera, "poison");
                "poison camera refused"
            };
        assert!(
            err.contains(want),
            "seed {seed:#x}, event {i}: reason {err:?} should mention {want:?}"
        );
    }

    // Published: every stored event, in order, with its database id.
    let published = rt.block_on(async {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < rows.len() && Instant::now() < deadline {
            if let Some(m) = sub.next(Duration::from_secs(5)).await {
                got.push(m.json());
            }
        }
        got
    });
    assert_eq!(
        published
            .iter()
            .map(|v| (
                v["event_id"].as_i64().unwrap(),
                v["box"][0].as_f64().unwrap() as usize
            ))
            .collect::<Vec<_>>(),
        rows.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        "seed {seed:#x}: MQTT did not get every stored event in order"
    );
    for ((v, e), r) in published.iter().zip(&good).zip(&rows) {
        assert_eq!(v["camera"], e.camera.as_str());
        assert_eq!(v["track_id"].as_u64(), Some(e.track_id));
        assert_eq!(v["ts_ms"].as_i64(), Some(r.8), "published as stored");
        assert_eq!(
            v["similarity"].as_f64().map(|x| x as f32),
            e.similarity,
            "{v}"
        );
    }
    eprintln!(
        "{N} events ({} stored and published, {} set aside) drained in {:.2} s",
        good.len(),
        bad.len(),
        drained.as_secs_f64()
    );
    writer.shutdown();
}

/// A database that is busy (another writer holds the lock longer than the busy timeout) is
/// not the events' fault: nothing is set aside, and everything is stored in order once the
/// lock is released.
#[test]
fn busy_database_is_retried_not_dead_lettered() {
    let tmp = tempdir();
    let dir = tmp.path();
    let db = dir.join("faced.db");
    let g = gallery(dir);
    let key = g.key_path().to_path_buf();
    drop(g);
    let store = EventStore::open(&db, &key, opts(), Arc::new(SimulatedClocks::new())).unwrap();
    let writer = EventWriter::spawn(store).unwrap();
    let mut rng = Rng(7);
    let events: Vec<Event> = (0..20)
        .map(|i| {
            let mut e = random_event(i, &mut rng, 1);
            e.camera = "front".into();
            e.person = None;
            e.similarity = Some(0.5);
            e.track_id = i as u64;
            e.bbox[1] = 1.0;
            e.duration_ms = None;
            e
        })
        .collect();

    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    for e in &events[..10] {
        writer.sender().send(e.clone());
    }
    // Longer than the writer's 5 s busy timeout: at least one batch fails with SQLITE_BUSY.
    std::thread::sleep(Duration::from_secs(7));
    for e in &events[10..] {
        writer.sender().send(e.clone());
    }
    blocker.execute_batch("ROLLBACK").unwrap();
    let s = writer.sender();
    assert!(
        within(Duration::from_secs(60), move || s.flush()).is_some(),
        "writer did not recover from a busy database"
    );
    let rows = stored_rows(&db);
    assert_eq!(
        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert!(dead_letters(&db).is_empty());
    writer.shutdown();
}

/// However many bad events arrive, `event_dead_letter` keeps only the newest
/// `DEAD_LETTER_KEEP` rows: it cannot fill the disk.
#[test]
fn dead_letter_table_is_bounded() {
    let tmp = tempdir();
    let dir = tmp.path();
    let db = dir.join("faced.db");
    let g = gallery(dir);
    let key = g.key_path().to_path_buf();
    drop(g);
    let store = EventStore::open(&db, &key, opts(), Arc::new(SimulatedClocks::new())).unwrap();
    let writer = EventWriter::spawn(store).unwrap();
    let mut rng = Rng(3);
    let n = DEAD_LETTER_KEEP as usize + 50;
    for i in 0..n {
        let mut e = random_event(i, &mut rng, 1);
        e.similarity = Some(f32::NAN);
        writer.sender().send(e);
    }
    let s = writer.sender();
    assert!(within(Duration::from_secs(120), move || s.flush()).is_some());
    let dead = dead_letters(&db);
    assert_eq!(dead.len(), DEAD_LETTER_KEEP as usize);
    assert_eq!(dead.first().unwrap().0, 50, "the oldest rows go first");
    assert_eq!(dead.last().unwrap().0, n - 1);
    writer.shutdown();
}

/// Picks a fixture photo whose face, embedded exactly as `faced run` embeds it (letterboxed
/// frame, stream detector, default inference settings), has a self-similarity above 1 in f32: enrolled from
/// that very embedding and played back, it matches its own sample at 1 + rounding.
fn self_match_photo() -> (String, Vec<f32>, Vec<u8>) {
    let mut an = faced::vision::Analyzer::open(
        &faced::vision::InferenceConfig::default(),
        faced::config::stream_detector(),
    )
    .unwrap();
    let people = photos_by_person();
    for f in people.values().flatten().take(40) {
        let img = faced::vision::image::load(
            &faces_dir().join(f),
            &faced::vision::image::ImageLimits::default(),
        )
        .unwrap();
        // As a `dir:` camera delivers it: letterboxed into the camera's frame size.
        let cam = faced::config::CameraConfig::default();
        let img = faced::capture::convert::letterbox(&img, cam.width, cam.height);
        let Some(face) = an
            .analyze(&img)
            .unwrap()
            .into_iter()
            .max_by(|a, b| a.detection.width().total_cmp(&b.detection.width()))
        else {
            continue;
        };
        let n = faced::gallery::index::normalize(&face.embedding).unwrap();
        if faced::gallery::index::dot_f32(&n, &n) > 1.0 {
            let crop = faced::pipeline::encode_jpeg(&face.aligned, 90).unwrap();
            return (f.clone(), face.embedding, crop);
        }
    }
    panic!("no fixture face rounds above 1 against itself: the test cannot reproduce the bug");
}

/// Row 4 through `faced run`: a photo enrolled from its own embedding and played back scores
/// 1 + rounding against its sample. The recognized event must be stored and published on MQTT
/// promptly with similarity 1 (on the old code the event table's CHECK refused it and the
/// writer retried forever: nothing was published). Also: each event is logged at INFO in one
/// line, for the recognized person and for a stranger.
#[test]
fn faced_run_publishes_a_self_match_promptly_and_logs_each_event() {
    let _g = heavy();
    let (photo, embedding, crop) = self_match_photo();
    let people = photos_by_person();
    let owner = people
        .iter()
        .find(|(_, fs)| fs.contains(&photo))
        .unwrap()
        .0
        .clone();
    let stranger = people
        .iter()
        .filter(|(p, _)| **p != owner)
        .map(|(_, fs)| fs[0].clone())
        .next_back()
        .unwrap();

    let tmp = tempdir();
    let dir = tmp.path();
    let mut g = gallery(dir);
    let alice = g.add_person("alice").unwrap();
    g.add_sample(
        alice,
        NewSample {
            kind: SampleKind::Positive,
            embedding: &embedding,
            crop_jpeg: &crop,
            quality_json: "{}",
            source: "test",
        },
    )
    .unwrap();
    let key = g.key_path().to_path_buf();
    drop(g);
    let play = play_dir(dir, &[&photo, &stranger]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::start();
    let mut sub = rt.block_on(Sub::connect(
        broker.port(),
        "watch",
        &["faced/test/events"],
        false,
    ));
    let toml = format!(
        "[device]\nid = \"test\"\n[gallery]\ndb = \"{}\"\n[events]\nunknown_cooldown_secs = 0.0\n\
         [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {}\n\
         [[cameras]]\nname = \"front\"\nsource = \"dir:{}\"\nfps = 10.0\nframes_per_image = 5\n",
        dir.join("faced.db").display(),
        broker.port(),
        play.display()
    );
    let cfgp = dir.join("faced.toml");
    std::fs::write(&cfgp, toml).unwrap();
    let mut d = Daemon::start(&["--config", cfgp.to_str().unwrap()], &[]);
    d.wait_for(&["ready"], Duration::from_secs(90));
    let ready = Instant::now();

    let recognized = rt
        .block_on(sub.until(Duration::from_secs(60), |m| {
            m.json()["type"] == "recognized"
        }))
        .unwrap_or_else(|| {
            panic!(
                "no recognized event published within 60 s of ready; log:\n{}",
                d.log.lock().unwrap().join("\n")
            )
        });
    let latency = ready.elapsed();
    let v = recognized.json();
    assert_eq!(v["person"], "alice");
    assert_eq!(
        v["similarity"].as_f64(),
        Some(1.0),
        "a face against its own sample: similarity clamped to 1"
    );
    let unknown = rt
        .block_on(sub.until(Duration::from_secs(60), |m| m.json()["type"] == "unknown"))
        .expect("no unknown event for the stranger");
    let u = unknown.json();

    // One INFO line per event, with camera, type, person and similarity.
    let line = d.wait_for(
        &[
            "event recognized",
            "camera=front",
            "person=alice",
            "similarity=1.00",
        ],
        Duration::from_secs(10),
    );
    assert!(line.contains("INFO"), "{line}");
    let uline = d.wait_for(&["event unknown", "camera=front"], Duration::from_secs(10));
    assert!(
        uline.contains("INFO") && !uline.contains("person="),
        "{uline}"
    );
    assert!(
        uline.contains(&format!("track={}", u["track_id"])),
        "{uline} vs {u}"
    );
    assert!(
        d.count("not stored") == 0 && d.count("cannot store events") == 0,
        "log:\n{}",
        d.log.lock().unwrap().join("\n")
    );

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0));
    let store = EventStore::open(
        &dir.join("faced.db"),
        &key,
        opts(),
        Arc::new(SimulatedClocks::new()),
    )
    .unwrap();
    let ev = store.recent(100, None).unwrap();
    assert!(
        ev.iter().any(|e| e.kind == EventKind::Recognized
            && e.person.as_deref() == Some("alice")
            && e.similarity == Some(1.0)
            && e.event_id == v["event_id"].as_i64().unwrap()),
        "{ev:?}"
    );
    // Each event logged once, not once per frame.
    assert_eq!(d.count("event recognized"), 1);
    assert!(dead_letters(&dir.join("faced.db")).is_empty());
    eprintln!(
        "self-match photo {photo}: recognized event published {:.2} s after ready",
        latency.as_secs_f64()
    );
}

/// `last_unknown` (what MQTT `enroll_last_unknown` enrolls) is recorded when the `unknown`
/// event is emitted: a stranger who stays in view is the last unknown face, with the track of
/// the event. On the old code it was recorded only for tracks that ended before being
/// declared unknown, so this stayed empty.
#[test]
fn last_unknown_is_the_face_of_the_unknown_event() {
    let _g = heavy();
    let people = photos_by_person();
    let p1: Vec<&str> = people["person01"].iter().map(String::as_str).collect();
    let stranger = people["person05"][0].as_str();
    let tmp = tempdir();
    let dir = tmp.path();
    let mut g = gallery(dir);
    let mut an = still_analyzer();
    enroll(&mut g, &mut an, "alice", &p1[..3]);
    let key = g.key_path().to_path_buf();
    let play = play_dir(dir, &[stranger]);
    let mut cfg = config(dir, &play, 8, 20.0);
    cfg.raw.events.unknown_cooldown_secs = 0.0;

    let (pipeline, writer) = start_pipeline(&cfg, g, &key, Arc::new(SimulatedClocks::new()));
    let handle = pipeline.handle();
    wait_finished(&handle, Duration::from_secs(120));
    // Read while the stranger's track is still alive (the camera ended, the pipeline runs).
    let (camera, track, face) = handle
        .last_unknown_track(None)
        .expect("no last unknown face after an unknown event");
    assert!(handle.last_unknown(Some("back")).is_none());
    let (cam2, face2) = handle.last_unknown(Some("front")).unwrap();
    assert_eq!(
        (cam2.as_str(), &face2.embedding),
        ("front", &face.embedding)
    );
    pipeline.stop();
    writer.shutdown();

    assert_eq!(camera, "front");
    let store = EventStore::open(
        &cfg.raw.gallery.db,
        &key,
        opts(),
        Arc::new(SimulatedClocks::new()),
    )
    .unwrap();
    let ev = store.recent(100, None).unwrap();
    let unknowns: Vec<&Event> = ev.iter().filter(|e| e.kind == EventKind::Unknown).collect();
    assert_eq!(unknowns.len(), 1, "{ev:?}");
    assert_eq!(unknowns[0].track_id, track);
    // It is the stranger's face: a usable sample of them.
    let img = image::load_from_memory(&face.crop_jpeg).unwrap();
    assert_eq!((img.width(), img.height()), (112, 112));
    let still = an
        .analyze(
            &faced::vision::image::load(
                &faces_dir().join(stranger),
                &faced::vision::image::ImageLimits::default(),
            )
            .unwrap(),
        )
        .unwrap()
        .into_iter()
        .max_by(|a, b| a.detection.width().total_cmp(&b.detection.width()))
        .unwrap();
    let a = faced::gallery::index::normalize(&still.embedding).unwrap();
    let b = faced::gallery::index::normalize(&face.embedding).unwrap();
    let sim = faced::gallery::index::dot_f32(&a, &b);
    assert!(sim > 0.8, "last unknown face is not the stranger's: {sim}");
    assert!(face.quality.size_px > 0.0);
}

/// A gallery database of random bytes: `faced run` and `faced people list` stop with exit
/// status 3 (which the unit's RestartPreventExitStatus lists, so systemd does not restart it
/// every 5 s) and a message naming the file and the way out. The old code exited 1 with
/// "database error: file is not a database".
#[test]
fn damaged_database_names_the_file_and_is_not_restarted() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/faced.service"),
    )
    .unwrap();
    let no_restart: Vec<i32> = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestartPreventExitStatus="))
        .expect("the unit has RestartPreventExitStatus")
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();

    let tmp = tempdir();
    let db = tmp.path().join("faced.db");
    let mut rng = Rng(99);
    std::fs::write(
        &db,
        (0..65536).map(|_| rng.next() as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    let before = std::fs::read(&db).unwrap();
    let play = play_dir(tmp.path(), &["img1.jpg"]);
    let source = format!("dir:{}", play.display());

    let mut d = Daemon::start(
        &["--source", &source],
        &[
            ("FACED_GALLERY__DB", db.to_str().unwrap()),
            ("FACED_LOG", "info"),
        ],
    );
    let code = d.wait(Duration::from_secs(60)).unwrap();
    let log = d.log.lock().unwrap().join("\n");
    assert_ne!(code, 0, "{log}");
    assert!(
        no_restart.contains(&code),
        "exit status {code} is not in RestartPreventExitStatus {no_restart:?}: systemd would \
         restart faced every 5 s; log:\n{log}"
    );
    assert!(log.contains(db.to_str().unwrap()), "{log}");
    assert!(log.contains("restore it from a backup"), "{log}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faced"))
        .args(["people", "--db", db.to_str().unwrap(), "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap();
    assert!(no_restart.contains(&code), "people list exit {code}: {err}");
    assert!(
        err.contains(db.to_str().unwrap()) && err.contains("backup"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the damaged file is left as it was"
    );
}

/// `faced enroll` with only bad photos (a face below the size limit, a text file, a missing
/// file) exits non-zero with one error per file and creates nobody (the old code left an empty
/// person "Carol"). With one good photo among bad ones, the person is created with that sample.
#[test]
fn enroll_with_only_bad_photos_creates_nobody() {
    let _g = heavy();
    let tmp = tempdir();
    let dir = tmp.path();
    let db = dir.join("g.db");
    let text = dir.join("notes.jpg");
    std::fs::write(&text, "not an image").unwrap();
    let missing = dir.join("missing.jpg");
    let faced = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_faced"))
            .args(args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let small = faces_dir().join("img8.jpg");
    let bad = [
        small.to_str().unwrap(),
        text.to_str().unwrap(),
        missing.to_str().unwrap(),
    ];
    let mut args = vec!["enroll", "--name", "Carol", "--min-size", "400"];
    args.extend(bad);
    let (code, stdout, stderr) = faced(&args);
    let people = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_faced"))
            .args(["people", "--db", db.to_str().unwrap(), "list", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(
        people(),
        serde_json::json!([]),
        "an empty person was created"
    );
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stdout.contains("img8.jpg: refused"), "{stdout}");
    assert!(stderr.contains("notes.jpg: error"), "{stderr}");
    assert!(stderr.contains("missing.jpg: error"), "{stderr}");
    assert!(stderr.contains("nothing was added"), "{stderr}");

    // One good photo among the bad: Carol with one sample, still exit 2 for the bad ones.
    let good = faces_dir().join("img1.jpg");
    let (code, stdout, stderr) = faced(&[
        "enroll",
        "--name",
        "Carol",
        "--json",
        text.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0]["error"].is_string(), "{stdout}");
    assert_eq!(lines[1]["enrolled"], true, "{stdout}");
    assert!(lines[1]["sample_id"].is_i64(), "{stdout}");
    let p = people();
    assert_eq!(p[0]["name"], "Carol");
    assert_eq!(p[0]["positive_samples"], 1);
}
