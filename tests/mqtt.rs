//! MQTT against a real Mosquitto broker (started per test on 127.0.0.1 at a free port by
//! `util/broker.rs`; needs the Debian packages `mosquitto` and `mosquitto-clients`).
//!
//! Covers: events arrive in order with their payloads, a broker outage loses nothing and keeps
//! order, the last will turns availability `offline` when the connection dies, a restart drains
//! the outbox, Home Assistant discovery is retained and well-formed (and re-published after a
//! broker restart); commands are off unless enabled, must be signed with the device's key (no
//! replay, no stale timestamp, bounded threshold, no silent enroll into an existing person),
//! invalid ones are rejected with a clear message, and no retained or oversized message on a
//! command topic can make the daemon reconnect in a loop. The shell and Python recipes of
//! docs/mqtt.md are run as written.

use crate::util::broker;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use broker::{Broker, BrokerOptions, Msg, Proxy, Sub};
use faced::mqtt::auth::CommandKey;
use faced::mqtt::{
    Command, ConnectionState, Mqtt, MqttConfig, MqttHandle, OutboxMessage, PersonInfo, PersonState,
};
use rumqttc::QoS;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("faced=debug")
        .with_test_writer()
        .try_init();
}

/// A migrated faced database in a temp dir.
struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Db {
    fn new() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faced.db");
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let _: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        faced::db::schema::migrate(&mut conn, "test database", &faced::base::RealClocks).unwrap();
        Db { _dir: dir, path }
    }

    /// Enqueues one event per payload, each in its own transaction (as the events writer does).
    fn enqueue_events(&self, h: &MqttHandle, events: &[Value]) {
        let mut conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        for e in events {
            let tx = conn.transaction().unwrap();
            faced::mqtt::enqueue(
                &tx,
                &OutboxMessage::event(h.topics(), e).unwrap(),
                h.clocks(),
            )
            .unwrap();
            tx.commit().unwrap();
            h.outbox_changed();
        }
    }

    fn outbox_ids(&self) -> Vec<i64> {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        let mut st = conn
            .prepare("SELECT id FROM mqtt_outbox ORDER BY id")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    async fn wait_outbox_empty(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ids = self.outbox_ids();
            if ids.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "outbox still holds {} rows: {ids:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn config(port: u16) -> MqttConfig {
    MqttConfig {
        enabled: true,
        host: "127.0.0.1".into(),
        port: Some(port),
        keepalive_secs: 5,
        reconnect_min_ms: 50,
        reconnect_max_secs: 1,
        ..Default::default()
    }
}

fn event(n: i64) -> Value {
    json!({
        "type": "recognized", "event_id": n, "person": "alice", "person_id": 1, "similarity": 0.71,
        "camera": "front", "track_id": n, "box": [1.0, 2.0, 3.0, 4.0],
        "time": "2026-01-01T00:00:00.000Z", "ts_ms": 1_767_225_600_000i64 + n,
    })
}

fn ids(msgs: &[Msg]) -> Vec<i64> {
    msgs.iter()
        .map(|m| m.json()["event_id"].as_i64().unwrap())
        .collect()
}

/// Receives events until every id in `want` has been seen; returns all (with any redelivered
/// duplicates) in arrival order.
async fn collect_events(
    sub: &mut Sub,
    topic: &str,
    want: std::ops::RangeInclusive<i64>,
    timeout: Duration,
) -> Vec<Msg> {
    let mut got = Vec::new();
    let mut missing: std::collections::BTreeSet<i64> = want.collect();
    let deadline = tokio::time::Instant::now() + timeout;
    while !missing.is_empty() {
        let m = tokio::time::timeout_at(deadline, sub.until(timeout, |m| m.topic == topic))
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("events {missing:?} did not arrive; got {:?}", ids(&got)));
        missing.remove(&m.json()["event_id"].as_i64().unwrap());
        got.push(m);
    }
    got
}

/// First occurrence of each id, in arrival order (QoS 1 allows redelivery after an outage).
fn first_seen(ids: &[i64]) -> Vec<i64> {
    let mut seen = std::collections::HashSet::new();
    ids.iter().copied().filter(|i| seen.insert(*i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_with_their_payloads() {
    init_logs();
    let broker = Broker::start();
    let db = Db::new();
    let mut sub = Sub::connect(broker.port(), "t-events", &["faced/ev1/#"], false).await;
    let (h, _cmds) = Mqtt::start(&config(broker.port()), "ev1", &db.path).unwrap();
    assert!(
        h.wait_connected(T).await,
        "not connected: {:?}",
        h.connection_state()
    );

    let events: Vec<Value> = (1..=60).map(event).collect();
    db.enqueue_events(&h, &events);
    let got = collect_events(&mut sub, "faced/ev1/events", 1..=60, T).await;
    assert_eq!(
        ids(&got),
        (1..=60).collect::<Vec<_>>(),
        "no redelivery without an outage, in order"
    );
    for (m, want) in got.iter().zip(&events) {
        assert_eq!(&m.json(), want);
        assert!(!m.retain, "events are not retained");
    }
    // Deleted (in a batch) once acknowledged.
    db.wait_outbox_empty(Duration::from_secs(5)).await;
    assert_eq!(h.stats().published, 60);

    // The retained availability says online to a late subscriber.
    let mut late = Sub::connect(broker.port(), "t-late", &["faced/ev1/availability"], false).await;
    let m = late.next(T).await.expect("retained availability");
    assert_eq!((m.text(), m.retain), ("online", true));

    // A clean shutdown says offline (retained) and leaves nothing behind.
    let report = h.shutdown_drain(T).await;
    assert_eq!(report.remaining, 0);
    assert!(report.connected);
    let m = late.next(T).await.expect("offline after shutdown");
    assert_eq!(m.text(), "offline");
    assert_eq!(h.connection_state(), ConnectionState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing_and_keeps_order() {
    init_logs();
    // A persistent broker and a persistent-session subscriber: the broker queues what faced
    // publishes after the restart even if it arrives before the subscriber reconnects.
    let mut broker = Broker::start_with(BrokerOptions {
        persistence: true,
        ..Default::default()
    });
    let db = Db::new();
    let mut sub = Sub::connect(broker.port(), "t-outage", &["faced/out1/events"], true).await;
    let (h, _cmds) = Mqtt::start(&config(broker.port()), "out1", &db.path).unwrap();
    assert!(h.wait_connected(T).await);

    db.enqueue_events(&h, &(1..=20).map(event).collect::<Vec<_>>());
    let before = collect_events(&mut sub, "faced/out1/events", 1..=20, T).await;
    assert_eq!(ids(&before), (1..=20).collect::<Vec<_>>());

    broker.stop();
    let deadline = Instant::now() + T;
    while h.connection_state() == ConnectionState::Connected {
        assert!(
            Instant::now() < deadline,
            "faced did not notice the broker going away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.enqueue_events(&h, &(21..=50).map(event).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = db.outbox_ids();
    assert!(
        queued.len() >= 30,
        "events enqueued during the outage must stay queued: {queued:?}"
    );

    broker.start_again();
    let after = collect_events(
        &mut sub,
        "faced/out1/events",
        21..=50,
        Duration::from_secs(20),
    )
    .await;
    let all: Vec<i64> = ids(&before).into_iter().chain(ids(&after)).collect();
    assert_eq!(
        first_seen(&all),
        (1..=50).collect::<Vec<_>>(),
        "lost or reordered: {all:?}"
    );
    db.wait_outbox_empty(Duration::from_secs(5)).await;
    assert!(h.stats().connects >= 2);
    h.shutdown_drain(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_turns_availability_offline_via_last_will() {
    init_logs();
    let broker = Broker::start();
    let proxy = Proxy::start(broker.port()).await;
    let db = Db::new();
    let mut sub = Sub::connect(
        broker.port(),
        "t-will",
        &["faced/will1/availability"],
        false,
    )
    .await;
    let mut cfg = config(proxy.port());
    cfg.reconnect_min_ms = 3000; // stay away long enough to observe `offline`
    cfg.reconnect_max_secs = 3;
    let (h, _cmds) = Mqtt::start(&cfg, "will1", &db.path).unwrap();
    assert!(h.wait_connected(T).await);
    let m = sub
        .until(T, |m| m.text() == "online")
        .await
        .expect("online");
    assert_eq!(m.topic, "faced/will1/availability");

    // The TCP connection dies without a DISCONNECT, as when faced is SIGKILLed.
    proxy.cut();
    let m = sub
        .until(T, |_| true)
        .await
        .expect("the broker publishes the last will");
    assert_eq!(m.text(), "offline");
    // And faced comes back by itself.
    let m = sub
        .until(T, |_| true)
        .await
        .expect("online again after reconnect");
    assert_eq!(m.text(), "online");
    h.shutdown_drain(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_drains_what_an_earlier_run_queued() {
    init_logs();
    let db = Db::new();
    // First run: no broker at all. Events stay in the outbox through the shutdown.
    let dead_port = broker::free_port();
    let (h, _cmds) = Mqtt::start(&config(dead_port), "rs1", &db.path).unwrap();
    db.enqueue_events(&h, &(1..=10).map(event).collect::<Vec<_>>());
    let report = h.shutdown_drain(Duration::from_millis(500)).await;
    assert_eq!(
        report,
        faced::mqtt::DrainReport {
            remaining: 10,
            connected: false
        }
    );
    assert_eq!(db.outbox_ids().len(), 10);

    // Second run, broker up: the backlog goes out in order and the outbox empties.
    let broker = Broker::start();
    let mut sub = Sub::connect(broker.port(), "t-restart", &["faced/rs1/events"], false).await;
    let (h, _cmds) = Mqtt::start(&config(broker.port()), "rs1", &db.path).unwrap();
    let got = collect_events(&mut sub, "faced/rs1/events", 1..=10, T).await;
    assert_eq!(ids(&got), (1..=10).collect::<Vec<_>>());
    let report = h.shutdown_drain(T).await;
    assert_eq!(report.remaining, 0);
    assert!(db.outbox_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_is_bounded_by_dropping_the_oldest() {
    init_logs();
    let db = Db::new();
    let mut cfg = config(broker::free_port()); // nothing listens: everything stays queued
    cfg.outbox_max_messages = 5;
    let (h, _cmds) = Mqtt::start(&cfg, "bound1", &db.path).unwrap();
    db.enqueue_events(&h, &(1..=12).map(event).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(5);
    while db.outbox_ids().len() > 5 {
        assert!(
            Instant::now() < deadline,
            "outbox not trimmed: {:?}",
            db.outbox_ids()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        db.outbox_ids(),
        vec![8, 9, 10, 11, 12],
        "the newest are kept"
    );
    assert_eq!(h.stats().dropped, 7);
    h.shutdown_drain(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_state_and_snapshots_are_retained_and_well_formed() {
    init_logs();
    let mut broker = Broker::start();
    let db = Db::new();
    let (h, _cmds) = Mqtt::start(&config(broker.port()), "ha1", &db.path).unwrap();
    assert!(h.wait_connected(T).await);
    let people = [
        PersonInfo {
            id: 1,
            name: "Alice".into(),
        },
        PersonInfo {
            id: 2,
            name: "Anne-Marie".into(),
        },
        PersonInfo {
            id: 3,
            name: "Anne Marie".into(),
        },
    ];
    h.announce_people_and_cameras(&people, &["front".into(), "Back Door".into()]);
    h.publish_person_state(PersonState {
        person_id: 1,
        name: "Alice".into(),
        home: true,
        last_seen_ms: Some(1_767_225_600_000),
        camera: Some("front".into()),
    });
    let jpeg =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces/img1.jpg"))
            .unwrap();
    h.publish_snapshot("Back Door", jpeg.clone(), None);

    // A subscriber that arrives later sees all of it, retained.
    let check = |msgs: &[Msg]| {
        let find = |t: &str| {
            msgs.iter().find(|m| m.topic == t).unwrap_or_else(|| {
                panic!(
                    "no retained message on {t}; got {:?}",
                    msgs.iter().map(|m| &m.topic).collect::<Vec<_>>()
                )
            })
        };
        let mut unique = std::collections::HashSet::new();
        for (topic, kind) in [
            (
                "homeassistant/device_tracker/faced_ha1/person_alice/config",
                "person",
            ),
            (
                "homeassistant/device_tracker/faced_ha1/person_anne_marie/config",
                "person",
            ),
            (
                "homeassistant/device_tracker/faced_ha1/person_anne_marie_3/config",
                "person",
            ),
            (
                "homeassistant/camera/faced_ha1/camera_front/config",
                "camera",
            ),
            (
                "homeassistant/camera/faced_ha1/camera_back_door/config",
                "camera",
            ),
            (
                "homeassistant/sensor/faced_ha1/last_person/config",
                "sensor",
            ),
        ] {
            let m = find(topic);
            assert!(m.retain, "{topic} must be retained");
            let v = m.json();
            assert!(
                unique.insert(v["unique_id"].as_str().unwrap().to_owned()),
                "duplicate unique_id in {topic}"
            );
            assert_eq!(v["availability_topic"], "faced/ha1/availability");
            assert_eq!(v["device"]["identifiers"][0], "faced_ha1");
            assert!(v["name"].is_string());
            match kind {
                "person" => {
                    assert_eq!(v["payload_home"], "home");
                    assert!(
                        v["state_topic"]
                            .as_str()
                            .unwrap()
                            .starts_with("faced/ha1/person/")
                    );
                }
                "camera" => assert!(v["topic"].as_str().unwrap().ends_with("/snapshot")),
                _ => assert_eq!(v["state_topic"], "faced/ha1/last_person"),
            }
        }
        let tracker = find("homeassistant/device_tracker/faced_ha1/person_alice/config").json();
        assert_eq!(tracker["state_topic"], "faced/ha1/person/alice/state");
        assert_eq!(find("faced/ha1/person/alice/state").text(), "home");
        let st = find("faced/ha1/person/alice").json();
        assert_eq!(st["state"], "home");
        assert_eq!(st["last_seen"], "2026-01-01T00:00:00.000Z");
        assert_eq!(st["camera"], "front");
        assert_eq!(find("faced/ha1/last_person").json()["person"], "Alice");
        let snap = find("faced/ha1/camera/back_door/snapshot");
        assert_eq!(snap.payload, jpeg);
        assert_eq!(find("faced/ha1/availability").text(), "online");
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sub = Sub::connect(
        broker.port(),
        "t-ha",
        &["homeassistant/#", "faced/ha1/#"],
        false,
    )
    .await;
    let msgs = sub.drain(Duration::from_millis(500)).await;
    check(&msgs);

    // A broker restart without persistence forgets retained messages; faced re-publishes them.
    drop(sub);
    broker.stop();
    broker.start_again();
    assert!(h.wait_connected(T).await);
    let deadline = Instant::now() + T;
    while h.stats().connects < 2 {
        assert!(Instant::now() < deadline, "faced did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sub = Sub::connect(
        broker.port(),
        "t-ha2",
        &["homeassistant/#", "faced/ha1/#"],
        false,
    )
    .await;
    let msgs = sub.drain(Duration::from_millis(500)).await;
    check(&msgs);

    // Removing a person from the gallery removes their entity (empty retained config).
    h.announce_people_and_cameras(&people[..2], &["front".into(), "Back Door".into()]);
    let m = sub
        .until(T, |m| {
            m.topic == "homeassistant/device_tracker/faced_ha1/person_anne_marie_3/config"
        })
        .await
        .expect("removal of the entity");
    assert!(m.payload.is_empty());
    h.shutdown_drain(T).await;
}

/// Home Assistant reconfigures an entity at every config message: each is sent once per
/// connection (an announce that changes nothing sends nothing), and again after a reconnect.
/// The visitor sensor and camera have names of their own, and the sensor has no state (not the
/// text "none") before the first visitor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_is_sent_once_per_connection_and_visitor_entities_are_told_apart() {
    init_logs();
    let mut broker = Broker::start();
    let mut sub = Sub::connect(broker.port(), "t-disc", &["homeassistant/#"], false).await;
    let db = Db::new();
    let (h, _cmds) = Mqtt::start(&config(broker.port()), "ha2", &db.path).unwrap();
    assert!(h.wait_connected(T).await);
    let people = [PersonInfo {
        id: 1,
        name: "Alice".into(),
    }];
    let cams = ["front".to_string()];
    let count = |msgs: &[Msg]| {
        let mut n: std::collections::BTreeMap<String, usize> = Default::default();
        for m in msgs.iter().filter(|m| !m.payload.is_empty()) {
            *n.entry(m.topic.clone()).or_default() += 1;
        }
        n
    };
    h.announce_people_and_cameras(&people, &cams);
    h.publish_visitors(
        br#"{"day":"2026-01-01","today":0,"total":0}"#.to_vec(),
        None,
    );
    h.announce_people_and_cameras(&people, &cams);
    h.announce_people_and_cameras(&people, &cams);
    let msgs = sub.drain(Duration::from_millis(800)).await;
    let n = count(&msgs);
    assert!(n.len() >= 6, "{n:?}");
    assert!(n.values().all(|&c| c == 1), "each config once: {n:?}");
    let find = |t: &str| {
        msgs.iter()
            .find(|m| m.topic == t)
            .unwrap_or_else(|| panic!("no {t}"))
            .json()
    };
    let sensor = find("homeassistant/sensor/faced_ha2/last_unknown_visitor/config");
    let camera = find("homeassistant/camera/faced_ha2/last_unknown_visitor/config");
    assert_ne!(sensor["name"], camera["name"]);
    let tpl = sensor["value_template"].as_str().unwrap();
    assert!(
        tpl.ends_with("else None }}") && !tpl.contains("'none'"),
        "{tpl}"
    );

    // A reconnect sends each once more.
    broker.stop();
    broker.start_again();
    let deadline = Instant::now() + T;
    while h.stats().connects < 2 {
        assert!(Instant::now() < deadline, "faced did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sub = Sub::connect(broker.port(), "t-disc2", &["homeassistant/#"], false).await;
    h.announce_people_and_cameras(&people, &cams);
    let again = count(&sub.drain(Duration::from_millis(800)).await);
    assert_eq!(again, n, "after the reconnect: each config once");
    h.shutdown_drain(T).await;
}

async fn result_for(sub: &mut Sub, verb: &str) -> Value {
    let m = sub
        .until(T, |m| {
            m.topic == "faced/cmd1/cmd/result" && m.json()["verb"] == verb
        })
        .await;
    m.unwrap_or_else(|| panic!("no result for {verb}")).json()
}

/// Unix seconds now.
fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A fresh nonce for each signed command of a test.
fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:016x}{:08x}",
        now_s(),
        N.fetch_add(1, Ordering::Relaxed) as u32 ^ std::process::id()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_commands_are_verified_and_invalid_ones_rejected_with_a_reason() {
    init_logs();
    let broker = Broker::start();
    let db = Db::new();
    let mut sub = Sub::connect(broker.port(), "t-cmd", &["faced/cmd1/cmd/result"], false).await;
    let client = sub.client.clone();
    let send = |verb: &str, payload: Vec<u8>, retain: bool| {
        client
            .try_publish(
                format!("faced/cmd1/cmd/{verb}"),
                QoS::AtLeastOnce,
                retain,
                payload,
            )
            .unwrap();
    };
    let topic = |verb: &str| format!("faced/cmd1/cmd/{verb}");
    // The key faced will create (mode 0600) beside the database, made here first so a retained
    // command can be signed with it before faced starts.
    let key_path = db.path.with_file_name("mqtt-command.key");
    let (key, created) = CommandKey::load_or_create(&key_path).unwrap();
    assert!(created);
    // A correctly signed but retained command, parked on the broker before faced subscribes:
    // faced deletes it on connect (commands are never retained) and never runs it.
    let parked = key.signed_payload(&topic("reload_gallery"), now_s(), &nonce(), "{}");
    send("reload_gallery", parked.clone().into_bytes(), true);
    // A subscriber from before faced starts sees the parked command, then faced's deletion (an
    // empty retained publish). faced reports "connected" before it sends the deletion, so the
    // late subscriber below waits for it instead of racing it on a loaded machine.
    let mut watch = Sub::connect(
        broker.port(),
        "t-cmd-watch",
        &["faced/cmd1/cmd/reload_gallery"],
        false,
    )
    .await;
    // Seen (live or as retained on subscribe) means the broker has stored it.
    let seen = watch
        .next(T)
        .await
        .expect("the parked command is on the broker");
    assert_eq!(seen.payload, parked.as_bytes(), "{seen:?}");

    let mut cfg = config(broker.port());
    cfg.commands = true;
    let (h, mut cmds) = Mqtt::start(&cfg, "cmd1", &db.path).unwrap();
    assert!(h.wait_connected(T).await);
    let deleted = watch.next(T).await;
    assert!(
        deleted.as_ref().is_some_and(|m| m.payload.is_empty()),
        "faced did not delete the retained command: {deleted:?}"
    );
    let mut late = Sub::connect(
        broker.port(),
        "t-cmd-late",
        &["faced/cmd1/cmd/reload_gallery"],
        false,
    )
    .await;
    assert!(
        late.next(Duration::from_secs(1)).await.is_none(),
        "the retained command was not deleted"
    );
    assert!(
        sub.next(Duration::from_millis(500)).await.is_none(),
        "the parked command was answered"
    );
    assert!(cmds.try_recv().is_err(), "the parked command ran");

    // Unsigned: what any client of the broker could send.
    send(
        "enroll_last_unknown",
        br#"{"name":"Mallory","id":"u1"}"#.to_vec(),
        false,
    );
    let r = result_for(&mut sub, "enroll_last_unknown").await;
    assert_eq!(
        (r["status"].as_str(), r["kind"].as_str(), r["id"].as_str()),
        (Some("rejected"), Some("unauthenticated"), Some("u1"))
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("not a signed command"),
        "{r}"
    );

    // Signed with another key.
    let other = CommandKey::from_hex(&"ab".repeat(32)).unwrap();
    let p = other.signed_payload(
        &topic("set_threshold"),
        now_s(),
        &nonce(),
        r#"{"threshold":0.5}"#,
    );
    send("set_threshold", p.into_bytes(), false);
    let r = result_for(&mut sub, "set_threshold").await;
    assert_eq!(r["kind"], "unauthenticated");
    assert!(
        r["message"].as_str().unwrap().contains("bad signature"),
        "{r}"
    );

    // Correctly signed, but out of range.
    let p = key.signed_payload(
        &topic("set_threshold"),
        now_s(),
        &nonce(),
        r#"{"threshold": 0.0, "id": "a1"}"#,
    );
    send("set_threshold", p.into_bytes(), false);
    let r = result_for(&mut sub, "set_threshold").await;
    assert_eq!(r["status"], "rejected");
    assert_eq!(r["ok"], false);
    assert_eq!(r["id"], "a1");
    assert_eq!(r["kind"], "invalid_input");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("\"threshold\" must be a number from 0.30 to 0.95"),
        "{r}"
    );

    send("enroll_last_unknown", vec![b'x'; 5000], false);
    let r = result_for(&mut sub, "enroll_last_unknown").await;
    assert_eq!(r["kind"], "resource_exhausted");
    assert!(
        r["message"].as_str().unwrap().contains("limit of 4096"),
        "{r}"
    );

    let p = key.signed_payload(
        &topic("enroll_last_unknown"),
        now_s(),
        &nonce(),
        r#"{"name": "Bob", "sudo": true}"#,
    );
    send("enroll_last_unknown", p.into_bytes(), false);
    let r = result_for(&mut sub, "enroll_last_unknown").await;
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `sudo`"),
        "{r}"
    );

    // Signed an hour ago.
    let p = key.signed_payload(&topic("reload_gallery"), now_s() - 3600, &nonce(), "{}");
    send("reload_gallery", p.into_bytes(), false);
    let r = result_for(&mut sub, "reload_gallery").await;
    assert_eq!(r["kind"], "unauthenticated");
    assert!(
        r["message"].as_str().unwrap().contains("stale timestamp"),
        "{r}"
    );

    // None of the invalid ones reached the daemon.
    assert!(
        cmds.try_recv().is_err(),
        "an invalid command reached the daemon"
    );
    assert_eq!(h.stats().commands_rejected, 6);

    // A valid one does, is acknowledged, and the daemon's outcome is published.
    let good = key.signed_payload(
        &topic("enroll_last_unknown"),
        now_s(),
        &nonce(),
        r#"{"name": "  Bob ", "id": "e7"}"#,
    );
    send("enroll_last_unknown", good.clone().into_bytes(), false);
    let cmd = tokio::time::timeout(T, cmds.recv()).await.unwrap().unwrap();
    assert_eq!(
        cmd,
        Command::EnrollLastUnknown {
            request_id: Some("e7".into()),
            name: "Bob".into(),
            camera: None,
            add_to_existing: false,
        }
    );
    let r = result_for(&mut sub, "enroll_last_unknown").await;
    assert_eq!(
        (r["status"].as_str(), r["ok"].as_bool(), r["id"].as_str()),
        (Some("accepted"), Some(true), Some("e7"))
    );
    h.report_command(&cmd, Ok(Some("enrolled Bob from track 4".into())));
    let r = result_for(&mut sub, "enroll_last_unknown").await;
    assert_eq!(r["status"], "done");
    assert_eq!(r["message"], "enrolled Bob from track 4");

    // The same signed message again, as someone who recorded it would send it.
    send("enroll_last_unknown", good.into_bytes(), false);
    let r = result_for(&mut sub, "enroll_last_unknown").await;
    assert_eq!(
        (r["status"].as_str(), r["kind"].as_str()),
        (Some("rejected"), Some("unauthenticated"))
    );
    assert!(
        r["message"].as_str().unwrap().contains("replayed nonce"),
        "{r}"
    );
    assert!(cmds.try_recv().is_err(), "the replay reached the daemon");
    h.shutdown_drain(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_file_authenticates_and_a_wrong_password_is_reported() {
    init_logs();
    let broker = Broker::start_with(BrokerOptions {
        users: vec![("faced".into(), "s3cret".into())],
        ..Default::default()
    });
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let mut cfg = config(broker.port());
    cfg.username = Some("faced".into());
    cfg.password_file = Some(pw.clone());
    let (h, _cmds) = Mqtt::start(&cfg, "auth1", &db.path).unwrap();
    assert!(h.wait_connected(T).await, "{:?}", h.connection_state());
    h.shutdown_drain(T).await;

    std::fs::write(&pw, "wrong\n").unwrap();
    let (h, _cmds) = Mqtt::start(&cfg, "auth2", &db.path).unwrap();
    assert!(!h.wait_connected(Duration::from_secs(2)).await);
    match h.connection_state() {
        ConnectionState::Disconnected { error, .. } => {
            assert!(
                error.contains("bad user name or password") || error.contains("not authorized"),
                "{error}"
            )
        }
        other => panic!("expected a refused connection, got {other:?}"),
    }
    h.shutdown_drain(Duration::from_millis(100)).await;

    // A missing password file is an error at start that names the key.
    cfg.password_file = Some(dir.path().join("missing"));
    let e = Mqtt::start(&cfg, "auth3", &db.path)
        .err()
        .expect("missing password file");
    assert!(e.to_string().contains("mqtt.password_file"), "{e}");
}

/// Enqueue → subscriber latency over 200 messages to a local broker, one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_to_publish_latency() {
    init_logs();
    let broker = Broker::start();
    let db = Db::new();
    let mut sub = Sub::connect(broker.port(), "t-lat", &["faced/lat1/events"], false).await;
    let (h, _cmds) = Mqtt::start(&config(broker.port()), "lat1", &db.path).unwrap();
    assert!(h.wait_connected(T).await);
    let mut conn = rusqlite::Connection::open(&db.path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut lat = Vec::new();
    for n in 1..=200 {
        let t0 = Instant::now();
        let tx = conn.transaction().unwrap();
        faced::mqtt::enqueue(
            &tx,
            &OutboxMessage::event(h.topics(), &event(n)).unwrap(),
            h.clocks(),
        )
        .unwrap();
        tx.commit().unwrap();
        h.outbox_changed();
        let m = sub.next(T).await.expect("event");
        lat.push(t0.elapsed());
        assert_eq!(m.json()["event_id"], n);
    }
    lat.sort();
    let (p50, p99) = (lat[lat.len() / 2], lat[lat.len() * 99 / 100]);
    eprintln!(
        "enqueue→receive over 200 messages: median {p50:?}, p99 {p99:?}, max {:?}",
        lat[lat.len() - 1]
    );
    // Loose bound (shared CI cores); the issue's budget for frame→publish is 50 ms p99.
    assert!(p99 < Duration::from_millis(250), "p99 {p99:?}");
    h.shutdown_drain(T).await;
}

/// The real daemon, SIGKILLed: the broker publishes its last will.
#[test]
fn sigkilled_daemon_turns_availability_offline_and_restart_drains() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = Broker::start();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("faced.toml");
        std::fs::write(
            &conf,
            format!(
                "[device]\nid = \"kill1\"\n[gallery]\ndb = \"{}\"\n[mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {}\nkeepalive_secs = 5\n",
                dir.path().join("faced.db").display(),
                broker.port()
            ),
        )
        .unwrap();
        let mut sub = Sub::connect(broker.port(), "t-kill", &["faced/kill1/availability"], false).await;
        let run = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_faced"))
                .args(["run", "--config"])
                .arg(&conf)
                // The console's default port may be taken by a parallel test.
                .env("FACED_WEB__ENABLED", "false")
                .env_remove("NOTIFY_SOCKET")
                .env_remove("JOURNAL_STREAM")
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut child = run();
        let m = sub.until(Duration::from_secs(60), |m| m.text() == "online").await.expect("daemon online");
        assert!(m.retain || m.text() == "online");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let m = sub.until(T, |_| true).await.expect("last will");
        assert_eq!(m.text(), "offline");
        let mut late = Sub::connect(broker.port(), "t-kill-late", &["faced/kill1/availability"], false).await;
        let m = late.next(T).await.expect("retained availability");
        assert_eq!((m.text(), m.retain), ("offline", true));

        // Events the killed daemon had committed but not yet published wait in its outbox.
        let db = dir.path().join("faced.db");
        {
            let topics = faced::mqtt::Topics::new("faced", "kill1", "homeassistant").unwrap();
            let mut conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            let tx = conn.transaction().unwrap();
            for n in 1..=5 {
                faced::mqtt::enqueue(
                    &tx,
                    &OutboxMessage::event(&topics, &event(n)).unwrap(),
                    &faced::base::RealClocks,
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let mut events = Sub::connect(broker.port(), "t-kill-ev", &["faced/kill1/events"], false).await;

        let mut child = run();
        let m = sub.until(Duration::from_secs(60), |m| m.text() == "online").await.expect("online again");
        assert_eq!(m.text(), "online");
        let mut got = Vec::new();
        while got.len() < 5 {
            let m = events.next(Duration::from_secs(30)).await.expect("queued event after restart");
            got.push(m.json()["event_id"].as_i64().unwrap());
        }
        assert_eq!(got, vec![1, 2, 3, 4, 5], "in order, none lost");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n: i64 = rusqlite::Connection::open(&db)
                .unwrap()
                .query_row("SELECT COUNT(*) FROM mqtt_outbox", [], |r| r.get(0))
                .unwrap();
            if n == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "outbox not drained after restart: {n} rows");
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Through the real `faced run`.

use crate::util::daemon as daemon_util;

use daemon_util::Daemon;

// Daemon tests load the models; one at a time (with the heavy tests of the other modules,
// through `crate::util::alone`) keeps the loaded machine's timing sane.

const DT: Duration = Duration::from_secs(30);

/// A play folder: the stranger's photo for one frame, then photos without a face, so the
/// stranger's track ends (as someone walking past) and becomes the last unknown face.
fn stranger_then_nothing(dir: &Path) -> PathBuf {
    let people = daemon_util::photos_by_person();
    let stranger = people["person05"][0].clone();
    let play = daemon_util::play_dir(dir, &[stranger.as_str()]);
    let neg = daemon_util::faces_dir().join("negatives/orange.jpg");
    for i in 1..=7 {
        std::fs::copy(&neg, play.join(format!("{i:03}_orange.jpg"))).unwrap();
    }
    play
}

/// faced.toml for device `dev` playing `play` in a loop, MQTT to `port`, plus `extra` lines in
/// `[mqtt]`.
fn daemon_config(dir: &Path, dev: &str, play: &Path, port: u16, mqtt_extra: &str) -> PathBuf {
    let toml = format!(
        "[device]\nid = \"{dev}\"\n[gallery]\ndb = \"{}\"\n[events]\nunknown_cooldown_secs = 0.0\n\
         [[cameras]]\nname = \"front\"\nsource = \"dir:{}\"\nfps = 10.0\nframes_per_image = 1\n\
         repeat = true\nlossless = true\n\
         [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\nkeepalive_secs = 5\n\
         reconnect_min_ms = 100\nreconnect_max_secs = 2\n{mqtt_extra}\n",
        dir.join("faced.db").display(),
        play.display()
    );
    let path = dir.join("faced.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn start_daemon(conf: &Path) -> Daemon {
    let d = Daemon::start(
        &["--config", conf.to_str().unwrap()],
        &[("FACED_LOG", "info")],
    );
    d.wait_for(&["connected to the MQTT broker"], Duration::from_secs(90));
    d
}

/// (name, positive samples) of everyone in the gallery, read straight from SQLite.
fn people(db: &Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut st = conn
        .prepare(
            "SELECT p.name, COUNT(s.id) FROM person p LEFT JOIN face_sample s ON s.person_id = p.id \
             GROUP BY p.id ORDER BY p.name",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The next result on `dev`'s cmd/result with request id `id` whose status is not `accepted`
/// (`rejected`, `done` or `failed`).
async fn outcome(sub: &mut Sub, dev: &str, id: &str) -> Value {
    let topic = format!("faced/{dev}/cmd/result");
    sub.until(DT, |m| {
        m.topic == topic && m.json()["id"] == id && m.json()["status"] != "accepted"
    })
    .await
    .unwrap_or_else(|| panic!("no outcome for request {id}"))
    .json()
}

fn assert_refused(r: &Value, kind: &str, says: &str) {
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["kind"], kind, "{r}");
    assert!(r["message"].as_str().unwrap().contains(says), "{r}");
}

/// A fenced code block of docs/mqtt.md between `<!-- NAME: begin -->` and `<!-- NAME: end -->`.
fn docs_block(name: &str) -> String {
    let md = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mqtt.md"))
        .unwrap();
    let begin = format!("<!-- {name}: begin -->");
    let end = format!("<!-- {name}: end -->");
    let a = md
        .find(&begin)
        .unwrap_or_else(|| panic!("{begin} not in docs/mqtt.md"))
        + begin.len();
    let b = md[a..].find(&end).unwrap() + a;
    let block = md[a..b].trim();
    let body = block.split_once('\n').unwrap().1; // after ```sh / ```python
    body.strip_suffix("```").unwrap().to_owned()
}

/// Rows 1 and 2 of the broker-client threat: through the daemon, unsigned, wrongly signed,
/// stale and replayed commands are refused and change nothing; enroll never adds to an existing
/// person without `add_to_existing`; the threshold is bounded; the documented shell and Python
/// recipes work as written.
#[test]
fn daemon_runs_only_correctly_signed_commands() {
    let _one = crate::util::alone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = Broker::start();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        {
            let people = daemon_util::photos_by_person();
            let p1: Vec<&str> = people["person01"].iter().map(String::as_str).collect();
            let mut g = daemon_util::gallery(dir);
            let mut an = daemon_util::still_analyzer();
            daemon_util::enroll(&mut g, &mut an, "Alice", &p1[..3]);
        }
        let db = dir.join("faced.db");
        let play = stranger_then_nothing(dir);
        let conf = daemon_config(dir, "sig1", &play, broker.port(), "commands = true");
        let mut sub = Sub::connect(
            broker.port(),
            "t-sig1",
            &["faced/sig1/cmd/result", "faced/sig1/events"],
            false,
        )
        .await;
        let mut d = start_daemon(&conf);
        // faced created the key beside the gallery key, private.
        let key_path = dir.join("mqtt-command.key");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
        let key_hex = std::fs::read_to_string(&key_path).unwrap();
        let key = CommandKey::from_hex(&key_hex).unwrap();
        // Something to enroll: the stranger has walked past at least once.
        sub.until(Duration::from_secs(60), |m| {
            m.topic == "faced/sig1/events" && m.json()["type"] == "unknown"
        })
        .await
        .expect("an unknown event");

        let client = sub.client.clone();
        let send = |verb: &str, payload: String| {
            client
                .try_publish(
                    format!("faced/sig1/cmd/{verb}"),
                    QoS::AtLeastOnce,
                    false,
                    payload.into_bytes(),
                )
                .unwrap();
        };
        let signed = |verb: &str, ts: i64, body: &str| {
            key.signed_payload(&format!("faced/sig1/cmd/{verb}"), ts, &nonce(), body)
        };
        let before = people(&db);
        assert_eq!(before, vec![("Alice".to_string(), 3)]);

        // Unsigned, as in the attack: a stranger's face added to Alice.
        send(
            "enroll_last_unknown",
            r#"{"name":"Alice","id":"u1"}"#.into(),
        );
        assert_refused(
            &outcome(&mut sub, "sig1", "u1").await,
            "unauthenticated",
            "not a signed command",
        );
        // Signed, but with a key that is not this device's.
        let wrong = CommandKey::from_hex(&"5a".repeat(32)).unwrap();
        send(
            "enroll_last_unknown",
            wrong.signed_payload(
                "faced/sig1/cmd/enroll_last_unknown",
                now_s(),
                &nonce(),
                r#"{"name":"Mallory","id":"w1"}"#,
            ),
        );
        assert_refused(
            &outcome(&mut sub, "sig1", "w1").await,
            "unauthenticated",
            "bad signature",
        );
        // Correctly signed long ago.
        send(
            "enroll_last_unknown",
            signed(
                "enroll_last_unknown",
                now_s() - 3600,
                r#"{"name":"Mallory","id":"s1"}"#,
            ),
        );
        assert_refused(
            &outcome(&mut sub, "sig1", "s1").await,
            "unauthenticated",
            "stale timestamp",
        );
        // Correctly signed, to an existing name, without saying so.
        send(
            "enroll_last_unknown",
            signed(
                "enroll_last_unknown",
                now_s(),
                r#"{"name":"alice","id":"x1"}"#,
            ),
        );
        assert_refused(
            &outcome(&mut sub, "sig1", "x1").await,
            "conflict",
            "already exists",
        );
        assert_eq!(people(&db), before, "a refused command changed the gallery");

        // Correctly signed: a new person.
        let good = signed(
            "enroll_last_unknown",
            now_s(),
            r#"{"name":"Stranger","id":"g1"}"#,
        );
        send("enroll_last_unknown", good.clone());
        let r = outcome(&mut sub, "sig1", "g1").await;
        assert_eq!(r["status"], "done", "{r}");
        let after = people(&db);
        assert_eq!(
            after,
            vec![("Alice".to_string(), 3), ("Stranger".to_string(), 1)]
        );
        // Replayed by someone who recorded it.
        send("enroll_last_unknown", good);
        assert_refused(
            &outcome(&mut sub, "sig1", "g1").await,
            "unauthenticated",
            "replayed nonce",
        );
        // Explicitly adding to an existing person works.
        send(
            "enroll_last_unknown",
            signed(
                "enroll_last_unknown",
                now_s(),
                r#"{"name":"Stranger","add_to_existing":true,"id":"g2"}"#,
            ),
        );
        assert_eq!(outcome(&mut sub, "sig1", "g2").await["status"], "done");
        assert_eq!(
            people(&db),
            vec![("Alice".to_string(), 3), ("Stranger".to_string(), 2)]
        );

        // The threshold is bounded, signed or not.
        send(
            "set_threshold",
            signed("set_threshold", now_s(), r#"{"threshold":0.0,"id":"t0"}"#),
        );
        assert_refused(
            &outcome(&mut sub, "sig1", "t0").await,
            "invalid_input",
            "from 0.30 to 0.95",
        );
        send(
            "set_threshold",
            signed("set_threshold", now_s(), r#"{"threshold":0.6,"id":"t1"}"#),
        );
        let r = outcome(&mut sub, "sig1", "t1").await;
        assert_eq!(
            (r["status"].as_str(), r["message"].as_str()),
            (Some("done"), Some("threshold 0.6 on front"))
        );
        // The audit trail names the signing key for each change, and holds nothing refused.
        let signer = format!("command key {}", key.id());
        let want = [
            ("enroll", "person", Some("Stranger")),
            ("samples_added", "person", Some("Stranger")),
            ("threshold", "camera", None),
        ]
        .map(|(a, k, n)| {
            (
                signer.clone(),
                a.to_string(),
                k.to_string(),
                n.map(String::from),
            )
        });
        let rows = || -> Vec<(String, String, String, Option<String>)> {
            let c = rusqlite::Connection::open(&db).unwrap();
            let mut st = c
                .prepare(
                    "SELECT actor, action, subject_kind, subject_name FROM audit
                     WHERE actor_kind = 'mqtt' ORDER BY id",
                )
                .unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        // The threshold's row is written beside the command's reply.
        let t = Instant::now();
        while rows().len() < want.len() && t.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(rows(), want);

        // docs/mqtt.md's shell recipe, as written (mosquitto_pub + openssl).
        let port = broker.port().to_string();
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(docs_block("signed-command-shell"))
            .env("KEY_FILE", &key_path)
            .env("TOPIC", "faced/sig1/cmd/set_threshold")
            .env("BODY", r#"{"threshold":0.55,"id":"sh1"}"#)
            .env("HOST", "127.0.0.1")
            .env("PORT", &port)
            .status()
            .expect("run sh");
        assert!(st.success(), "the documented shell recipe failed: {st}");
        let r = outcome(&mut sub, "sig1", "sh1").await;
        assert_eq!(
            (r["status"].as_str(), r["message"].as_str()),
            (Some("done"), Some("threshold 0.55 on front")),
            "{r}"
        );

        // docs/mqtt.md's Python signer (what Home Assistant runs), as written.
        let script = dir.join("faced_sign.py");
        std::fs::write(&script, docs_block("signed-command-python")).unwrap();
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(&key_path)
            .arg("faced/sig1/cmd/reload_gallery")
            .arg(r#"{"id":"py1"}"#)
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        send(
            "reload_gallery",
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        );
        let r = outcome(&mut sub, "sig1", "py1").await;
        assert_eq!(r["status"], "done", "{r}");

        d.signal(libc::SIGTERM);
        assert_eq!(d.wait(DT), Some(0));
        let log = d.log.lock().unwrap().join("\n");
        assert!(!log.contains(key_hex.trim()), "the key was logged");
    });
}

/// Commands default to off: faced subscribes to nothing, answers nothing, creates no key.
#[test]
fn daemon_with_commands_off_subscribes_to_nothing() {
    let _one = crate::util::alone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = Broker::start();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let play = stranger_then_nothing(dir);
        let conf = daemon_config(dir, "off1", &play, broker.port(), "");
        let mut sub =
            Sub::connect(broker.port(), "t-off1", &["faced/off1/cmd/result"], false).await;
        let mut d = start_daemon(&conf);
        let key = CommandKey::from_hex(&"11".repeat(32)).unwrap();
        for (verb, payload) in [
            ("enroll_last_unknown", r#"{"name":"Alice"}"#.to_string()),
            ("set_threshold", r#"{"threshold":0.0}"#.to_string()),
            (
                "reload_gallery",
                key.signed_payload("faced/off1/cmd/reload_gallery", now_s(), &nonce(), "{}"),
            ),
        ] {
            sub.client
                .try_publish(
                    format!("faced/off1/cmd/{verb}"),
                    QoS::AtLeastOnce,
                    false,
                    payload.into_bytes(),
                )
                .unwrap();
        }
        assert!(
            sub.next(Duration::from_secs(3)).await.is_none(),
            "faced answered a command with commands off"
        );
        let log = broker.log();
        assert!(
            log.contains("as faced-off1"),
            "the daemon never connected:\n{log}"
        );
        assert!(
            !log.contains("Received SUBSCRIBE from faced-off1"),
            "faced subscribed with commands off:\n{log}"
        );
        assert!(!dir.join("mqtt-command.key").exists());
        d.signal(libc::SIGTERM);
        assert_eq!(d.wait(DT), Some(0));
    });
}

/// A retained 2 MiB message on a command topic (a wildcard-matching one and a real verb) must
/// not make the daemon reconnect over and over, and events must keep flowing.
#[test]
fn daemon_survives_retained_oversized_command_messages() {
    let _one = crate::util::alone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = Broker::start();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let play = stranger_then_nothing(dir);
        let conf = daemon_config(dir, "big1", &play, broker.port(), "commands = true");
        let mut sub = Sub::connect(broker.port(), "t-big1", &["faced/big1/events"], false).await;
        let big = vec![b'{'; 2 << 20];
        for verb in ["x", "set_threshold"] {
            sub.client
                .publish(
                    format!("faced/big1/cmd/{verb}"),
                    QoS::AtLeastOnce,
                    true,
                    big.clone(),
                )
                .await
                .unwrap();
        }
        // Both parked on the broker before faced starts.
        let mut check =
            Sub::connect(broker.port(), "t-big1-check", &["faced/big1/cmd/+"], false).await;
        let parked = check.drain(Duration::from_secs(2)).await;
        assert_eq!(parked.len(), 2, "retained messages not stored");
        drop(check);

        let mut d = start_daemon(&conf);
        let connected = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let log = broker.log();
        let connects = log.matches("as faced-big1 ").count();
        assert_eq!(
            connects, 1,
            "faced connected {connects} times within 10 s (a reconnect loop); broker log:\n{log}"
        );
        assert_eq!(d.count("reconnected to the MQTT broker"), 0);
        assert_eq!(d.count("lost the MQTT broker"), 0);
        // faced deleted the retained one on its own command topic; the other it never sees.
        let mut check =
            Sub::connect(broker.port(), "t-big1-check2", &["faced/big1/cmd/+"], false).await;
        let left: Vec<String> = check
            .drain(Duration::from_secs(2))
            .await
            .into_iter()
            .map(|m| m.topic)
            .collect();
        assert_eq!(left, vec!["faced/big1/cmd/x".to_string()]);
        // And events still go out after all this.
        let fresh = sub
            .until(DT, |m| {
                m.json()["type"] == "unknown" && connected.elapsed() > Duration::from_secs(10)
            })
            .await;
        assert!(
            fresh.is_some(),
            "no event published after the oversized messages"
        );
        d.signal(libc::SIGTERM);
        assert_eq!(d.wait(DT), Some(0));
    });
}
