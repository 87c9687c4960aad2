//! An erase through `faced run`: a stranger and then Alice (enrolled) pass a camera; the unit
//! publishes her presence, the last-person sensor, the camera's snapshot (her face), Home
//! Assistant's tracker for her, and the last visitor's face (the stranger's). Then the console
//! erases Alice and the visitor. Checked: no retained topic names or shows either of them, not
//! even after the broker restarts without persistence (faced must not publish them again from
//! memory); and no byte of their sealed faces (gallery samples, event snapshots, visitor faces)
//! nor Alice's name is left in `faced.db`, its WAL or its shared memory file.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::broker::{Broker, Msg, Sub};
use crate::util::daemon::{Daemon, add_admin, faces_dir, gallery_with_person01, photos_by_person};
use crate::util::web::{Client, PASSWORD};

const DEV: &str = "erase";
/// Alice's name in the gallery; `SLUG` in topics.
const NAME: &str = "Xanthippe";
const SLUG: &str = "xanthippe";

/// 32-byte windows from the middle of every sealed face in the database: what must not be found
/// in its files after the erase.
fn sealed_faces(db: &Path) -> Vec<Vec<u8>> {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT embedding FROM face_sample",
        "SELECT crop FROM face_sample",
        "SELECT snapshot FROM event WHERE snapshot IS NOT NULL",
        "SELECT embedding FROM visitor_face",
        "SELECT crop FROM visitor_face",
    ] {
        let mut st = c.prepare(sql).unwrap();
        let blobs: Vec<Vec<u8>> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for b in blobs {
            let mid = b.len() / 2;
            out.push(b[mid - 16..mid + 16].to_vec());
        }
    }
    out
}

fn count(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Which of `needles` occur in the database file, its WAL or its shared-memory file.
fn found_in_files(db: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut found = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.display());
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for (i, n) in needles.iter().enumerate() {
            if let Some(at) = bytes.windows(n.len()).position(|w| w == &n[..]) {
                let around = &bytes[at.saturating_sub(48)..(at + n.len() + 48).min(bytes.len())];
                found.push(format!(
                    "needle {i} ({} bytes) in {path} at {at}: {:?}",
                    n.len(),
                    String::from_utf8_lossy(around)
                ));
            }
        }
    }
    found
}

/// The retained messages a new subscriber gets (an erased retained message is not sent).
async fn retained(port: u16, id: &str) -> Vec<Msg> {
    let mut sub = Sub::connect(
        port,
        id,
        &[&format!("faced/{DEV}/#"), "homeassistant/#"],
        false,
    )
    .await;
    sub.drain(Duration::from_millis(1500))
        .await
        .into_iter()
        .filter(|m| m.retain && !m.payload.is_empty())
        .collect()
}

/// What of Alice or the stranger is still retained.
fn traces(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| {
            m.topic.contains(SLUG)
                || m.topic.ends_with("/snapshot")
                || (m.topic.ends_with("/last_person")
                    && String::from_utf8_lossy(&m.payload).contains(NAME))
        })
        .map(|m| format!("{} ({} bytes)", m.topic, m.payload.len()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_leaves_no_face_in_the_database_files_nor_on_the_broker() {
    let _heavy = crate::util::alone_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("faced.db");
    // Enrolled under a name found nowhere else in the file (the schema's comments say "alice").
    let (alice_photos, _) = gallery_with_person01(dir, NAME);
    // The stream: the stranger, then Alice (so the camera's last snapshot is her face and the
    // last visitor's is the stranger's), then photos without a face, which end the tracks.
    let stranger = photos_by_person()["person05"][0].clone();
    let play = dir.join("play");
    std::fs::create_dir_all(&play).unwrap();
    let mut n = 0;
    for f in std::iter::once(&stranger).chain(&alice_photos[3..5]) {
        std::fs::copy(faces_dir().join(f), play.join(format!("{n:03}_{f}"))).unwrap();
        n += 1;
    }
    for _ in 0..8 {
        std::fs::copy(
            faces_dir().join("negatives/orange.jpg"),
            play.join(format!("{n:03}_orange.jpg")),
        )
        .unwrap();
        n += 1;
    }
    tokio::task::block_in_place(|| add_admin(&db));
    let mut broker = Broker::start();
    let port = broker.port();
    let mut watch = Sub::connect(port, "erase-watch", &[&format!("faced/{DEV}/#")], false).await;
    let listen = format!("127.0.0.1:{}", crate::util::broker::free_port());
    let toml = format!(
        "[device]\nid = \"{DEV}\"\n[gallery]\ndb = \"{}\"\n\
         [[cameras]]\nname = \"door\"\nsource = \"dir:{}\"\nfps = 10.0\nframes_per_image = 4\n\
         repeat = false\nlossless = true\n\
         [events]\nunknown_cooldown_secs = 0.0\n\
         [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\nkeepalive_secs = 5\n\
         reconnect_min_ms = 100\nreconnect_max_secs = 1\n\
         [web]\nlisten = \"{listen}\"\n",
        db.display(),
        play.display(),
    );
    let cfg = dir.join("faced.toml");
    std::fs::write(&cfg, toml).unwrap();
    let d = Daemon::start(
        &["--config", cfg.to_str().unwrap()],
        &[("FACED_LOG", "info"), ("FACED_WEB__ENABLED", "true")],
    );

    // Everything the issue found left behind is published first.
    let want = [
        format!("faced/{DEV}/person/{SLUG}/state"),
        format!("faced/{DEV}/camera/door/snapshot"),
        format!("faced/{DEV}/visitors/last/snapshot"),
        format!("faced/{DEV}/last_person"),
    ];
    let mut seen = std::collections::BTreeSet::new();
    let t = Instant::now();
    while seen.len() < want.len() {
        let m = watch
            .next(Duration::from_secs(5))
            .await
            .map(|m| m.topic)
            .unwrap_or_default();
        if want.contains(&m) {
            seen.insert(m);
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "published so far: {seen:?}\n{}",
            d.log.lock().unwrap().join("\n")
        );
    }
    // The stream is over (the last faces' tracks ended in the faceless frames before that).
    tokio::task::block_in_place(|| d.wait_for(&["camera source ended"], Duration::from_secs(60)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = retained(port, "erase-before").await;
    let before_traces = traces(&before);
    assert!(
        before_traces.len() >= 5
            && before
                .iter()
                .any(|m| m.topic.starts_with("homeassistant/device_tracker/")
                    && m.topic.contains(SLUG)),
        "what the erase must reach is retained first: {before_traces:?}"
    );
    let needles = sealed_faces(&db);
    let snapshots = count(&db, "SELECT COUNT(*) FROM event WHERE snapshot IS NOT NULL");
    assert!(
        snapshots >= 2 && needles.len() >= 8,
        "faces stored: {snapshots} event snapshots, {} sealed blobs",
        needles.len()
    );

    // The console erases Alice and every visitor.
    tokio::task::block_in_place(|| d.wait_for(&["web console listening"], Duration::from_secs(60)));
    let mut api = Client::new(&format!("http://{listen}"));
    api.login("admin", PASSWORD).await;
    let people: Value = api.get("/api/people").await.json().await.unwrap();
    let alice = people[0]["id"].as_i64().unwrap();
    let res = api
        .req(reqwest::Method::DELETE, &format!("/api/people/{alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let visitors: Value = api.get("/api/visitors").await.json().await.unwrap();
    assert!(!visitors.as_array().unwrap().is_empty(), "{visitors}");
    for v in visitors.as_array().unwrap() {
        let res = api
            .req(
                reqwest::Method::DELETE,
                &format!("/api/visitors/{}", v["id"].as_i64().unwrap()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let t = Instant::now();

    // The broker: nothing of them is retained within a second (the daemon's gallery poll is
    // half a second), Home Assistant's tracker included.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = retained(port, "erase-after").await;
    assert_eq!(
        traces(&after),
        Vec::<String>::new(),
        "retained after the erase"
    );
    assert!(
        !after.iter().any(|m| m.topic.contains(SLUG)),
        "{:?}",
        after.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
    eprintln!(
        "erase: broker clean within {:.1} s",
        t.elapsed().as_secs_f32()
    );

    // The files: no byte of any sealed face, and not her name.
    let left = count(&db, "SELECT COUNT(*) FROM event WHERE snapshot IS NOT NULL");
    if left > 0 {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut st = c
            .prepare("SELECT id, kind, person_id, person_name, visitor_id, track_id FROM event")
            .unwrap();
        let rows: Vec<String> = st
            .query_map([], |r| {
                Ok(format!(
                    "{:?}",
                    (
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, i64>(5)?
                    )
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        panic!("{left} snapshots left: {rows:#?}\nvisitors {visitors}");
    }
    let mut found = found_in_files(&db, &needles);
    found.extend(found_in_files(&db, &[NAME.as_bytes().to_vec()]));
    assert_eq!(found, Vec::<String>::new(), "left in the database files");

    // A broker that lost its retained store gets faced's state again, but nothing of them.
    broker.stop();
    broker.start_again();
    tokio::task::block_in_place(|| {
        d.wait_for(&["reconnected to the MQTT broker"], Duration::from_secs(30))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = retained(port, "erase-again").await;
    assert!(
        again
            .iter()
            .any(|m| m.topic == format!("faced/{DEV}/availability") && m.payload == b"online"),
        "faced republished its state: {:?}",
        again.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
    assert_eq!(
        traces(&again),
        Vec::<String>::new(),
        "republished from memory"
    );
    drop(d);
}
