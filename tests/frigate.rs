//! Frigate companion mode through `faced run`: a real Mosquitto carries Frigate's event
//! messages, and a real HTTP server on 127.0.0.1 stands in for Frigate's API (a fake: there is
//! no Frigate install here).
//!
//! Where the fake's protocol comes from: the message shape is Frigate's `frigate/events` topic
//! (docs.frigate.video, "Integrations → MQTT": `{"type": "new"|"update"|"end", "before": {…},
//! "after": {…}}` with `id`, `camera`, `label`, `sub_label`, `box`, `area`, `has_snapshot`, …);
//! the endpoints are Frigate's HTTP API (docs.frigate.video, "Integrations → HTTP API"):
//! `GET /api/events/{id}/snapshot.jpg` (with `crop=1`), `GET /api/{camera}/latest.jpg`, and
//! `POST /api/events/{id}/sub_label` with `{"subLabel", "subLabelScore"}` (`EventsSubLabelBody`),
//! answered `{"success": true, "message": …}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::broker::{Broker, free_port};
use crate::util::daemon::*;

/// What the fake Frigate saw.
#[derive(Default)]
struct Seen {
    /// Every request line, `GET /api/...`.
    requests: Vec<String>,
    /// Sub labels posted: event id → body.
    labels: HashMap<String, Value>,
}

/// Frigate's HTTP API for the test: snapshots by event id, latest frames by camera.
struct FakeFrigate {
    seen: Arc<Mutex<Seen>>,
    _rt: tokio::runtime::Runtime,
}

impl FakeFrigate {
    fn start(port: u16, snapshots: HashMap<String, Vec<u8>>) -> FakeFrigate {
        use axum::extract::{Path, State};
        use axum::http::{StatusCode, Uri};
        use axum::routing::{get, post};
        type St = (Arc<Mutex<Seen>>, Arc<HashMap<String, Vec<u8>>>);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state: St = (seen.clone(), Arc::new(snapshots));
        async fn image(State((seen, imgs)): State<St>, uri: Uri) -> (StatusCode, Vec<u8>) {
            seen.lock().unwrap().requests.push(format!("GET {uri}"));
            // /api/events/<id>/snapshot.jpg or /api/<camera>/latest.jpg
            let key = uri
                .path()
                .trim_start_matches("/api/")
                .trim_start_matches("events/")
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            match imgs.get(&key) {
                Some(b) => (StatusCode::OK, b.clone()),
                None => (StatusCode::NOT_FOUND, b"not found".to_vec()),
            }
        }
        async fn sub_label(
            State((seen, _)): State<St>,
            Path(id): Path<String>,
            body: axum::Json<Value>,
        ) -> axum::Json<Value> {
            let mut s = seen.lock().unwrap();
            s.requests.push(format!("POST /api/events/{id}/sub_label"));
            s.labels.insert(id.clone(), body.0);
            axum::Json(json!({"success": true, "message": format!("Event {id} sub label set")}))
        }
        let app = axum::Router::new()
            .route("/api/events/{id}/snapshot.jpg", get(image))
            .route("/api/events/{id}/sub_label", post(sub_label))
            .route("/api/{camera}/latest.jpg", get(image))
            .with_state(state);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeFrigate { seen, _rt: rt }
    }

    fn label(&self, id: &str) -> Option<Value> {
        self.seen.lock().unwrap().labels.get(id).cloned()
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().requests.clone()
    }
}

/// A `frigate/events` message about a tracked object (Frigate's MQTT docs).
fn frigate_event(
    kind: &str,
    id: &str,
    camera: &str,
    label: &str,
    snapshot: bool,
    area: f64,
) -> Vec<u8> {
    let side = area.sqrt();
    let object = json!({
        "id": id,
        "camera": camera,
        "frame_time": 1_764_500_000.5,
        "snapshot_time": 1_764_500_000.5,
        "label": label,
        "sub_label": null,
        "top_score": 0.91,
        "false_positive": false,
        "start_time": 1_764_499_998.1,
        "end_time": if kind == "end" { json!(1_764_500_010.0) } else { Value::Null },
        "score": 0.88,
        "box": [100.0, 50.0, 100.0 + side, 50.0 + side],
        "area": area,
        "ratio": 1.0,
        "region": [0, 0, 640, 640],
        "current_zones": [],
        "entered_zones": ["porch"],
        "thumbnail": null,
        "has_snapshot": snapshot,
        "has_clip": false,
        "active": true,
        "stationary": false,
        "motionless_count": 0,
        "position_changes": 1,
        "attributes": {"face": 0.8},
        "current_attributes": []
    });
    serde_json::to_vec(&json!({"type": kind, "before": object, "after": object})).unwrap()
}

/// Alice enrolled; Frigate's events arrive on the broker: Alice (snapshot), Alice seen only
/// in the camera's latest frame, a stranger, a car, a person too small, an id that tries to
/// climb out of the API path, and an event that arrives while Frigate is down. Checks the sub
/// labels posted, that nothing else was requested, and faced's own events on MQTT.
#[test]
fn frigate_events_get_sub_labels_for_enrolled_people_only() {
    let _heavy = crate::util::alone();
    let stranger = photos_by_person()["person02"][0].clone();
    let tmp = tempdir();
    let dir = tmp.path();
    let (p1, _) = gallery_with_alice(dir);
    let read = |f: &str| std::fs::read(faces_dir().join(f)).unwrap();

    let broker = Broker::start();
    let http_port = free_port();
    let toml = format!(
        "[device]\nid = \"test\"\n[gallery]\ndb = \"{db}\"\n\
         [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {mq}\ndiscovery = false\n\
         [frigate]\nenabled = true\nurl = \"http://127.0.0.1:{http_port}\"\nmin_area = 2000\n",
        db = dir.join("faced.db").display(),
        mq = broker.port(),
    );
    let d = start_with_config(dir, &toml);
    d.wait_for(&["following Frigate's events"], Duration::from_secs(60));
    // No [[cameras]]: a companion has no camera of its own (and plays no sample photos).
    d.wait_for(&["ready: no camera of its own"], Duration::from_secs(20));

    // The test's own client: publishes as Frigate does, and listens to faced's events.
    let mut opts = rumqttc::MqttOptions::new("frigate-test", "127.0.0.1", broker.port());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = rumqttc::Client::new(opts, 100);
    client
        .subscribe("faced/test/events", rumqttc::QoS::AtLeastOnce)
        .unwrap();
    let faced_events = Arc::new(Mutex::new(Vec::<Value>::new()));
    let fe = faced_events.clone();
    std::thread::spawn(move || {
        for n in conn.iter() {
            match n {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice(&p.payload) {
                        fe.lock().unwrap().push(v);
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    let publish = |payload: Vec<u8>| {
        client
            .publish("frigate/events", rumqttc::QoS::AtMostOnce, false, payload)
            .unwrap();
    };
    // faced subscribes when it connects; wait for its subscription to be in place.
    std::thread::sleep(Duration::from_secs(1));

    // Frigate is down: the event is logged and retried at its next update.
    publish(frigate_event(
        "new",
        "1764500000.1-down",
        "porch",
        "person",
        true,
        9000.0,
    ));
    d.wait_for(
        &["1764500000.1-down", "retrying at the event's next update"],
        Duration::from_secs(20),
    );

    let frigate = FakeFrigate::start(
        http_port,
        HashMap::from([
            ("1764500000.1-down".to_string(), read(&p1[3])),
            ("1764500001.2-alice".to_string(), read(&p1[4])),
            ("1764500002.3-stranger".to_string(), read(&stranger)),
            // The camera's newest frame, for an event without a snapshot yet.
            ("front_door".to_string(), read(&p1[3])),
            ("1764500004.5-car".to_string(), read(&p1[3])),
            ("1764500005.6-small".to_string(), read(&p1[3])),
        ]),
    );
    std::thread::sleep(Duration::from_millis(1100)); // one attempt a second per event
    publish(frigate_event(
        "update",
        "1764500000.1-down",
        "porch",
        "person",
        true,
        9000.0,
    ));
    publish(frigate_event(
        "new",
        "1764500001.2-alice",
        "porch",
        "person",
        true,
        9000.0,
    ));
    publish(frigate_event(
        "new",
        "1764500002.3-stranger",
        "porch",
        "person",
        true,
        9000.0,
    ));
    publish(frigate_event(
        "new",
        "1764500003.4-latest",
        "front_door",
        "person",
        false,
        90000.0,
    ));
    publish(frigate_event(
        "new",
        "1764500004.5-car",
        "porch",
        "car",
        true,
        9000.0,
    ));
    publish(frigate_event(
        "new",
        "1764500005.6-small",
        "porch",
        "person",
        true,
        400.0,
    ));
    publish(frigate_event(
        "new",
        "../../api/config",
        "porch",
        "person",
        true,
        9000.0,
    ));
    publish(b"{\"type\": \"new\", \"after\": 5}".to_vec());
    publish(b"not json at all".to_vec());

    let t = Instant::now();
    let wanted = [
        "1764500000.1-down",
        "1764500001.2-alice",
        "1764500003.4-latest",
    ];
    while wanted.iter().any(|id| frigate.label(id).is_none()) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "sub labels posted: {:?}\nrequests: {:?}\nlog:\n{}",
            frigate.seen.lock().unwrap().labels,
            frigate.requests(),
            d.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in wanted {
        let body = frigate.label(id).unwrap();
        assert_eq!(body["subLabel"], "alice", "{id}: {body}");
        let score = body["subLabelScore"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&score), "{id}: {body}");
    }
    // The stranger ends without a name: no sub label, one `unknown` faced event.
    publish(frigate_event(
        "end",
        "1764500002.3-stranger",
        "porch",
        "person",
        true,
        9000.0,
    ));
    let t = Instant::now();
    loop {
        let evs = faced_events.lock().unwrap().clone();
        let about = |id: &str| evs.iter().find(|e| e["frigate"]["id"] == id).cloned();
        if let (Some(a), Some(s)) = (about("1764500001.2-alice"), about("1764500002.3-stranger")) {
            assert_eq!(a["type"], "recognized", "{a}");
            assert_eq!(a["person"], "alice", "{a}");
            assert_eq!(a["camera"], "porch", "{a}");
            assert_eq!(a["frigate"]["camera"], "porch", "{a}");
            assert_eq!(s["type"], "unknown", "{s}");
            assert!(s["person"].is_null(), "{s}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "faced's events: {evs:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(frigate.label("1764500002.3-stranger"), None);
    // Only what faced should have asked for: no car, no small person, no path from a message.
    let reqs = frigate.requests();
    for r in &reqs {
        assert!(
            !r.contains("car") && !r.contains("small") && !r.contains("config"),
            "unexpected request {r}; all: {reqs:?}"
        );
    }
    for want in [
        "GET /api/front_door/latest.jpg",
        "GET /api/events/1764500001.2-alice/snapshot.jpg?crop=1",
    ] {
        assert!(reqs.iter().any(|r| r.starts_with(want)), "{want}: {reqs:?}");
    }
    drop(d);
}
