//! Power cuts: the real `faced run` is killed with SIGKILL at a random moment while the console
//! takes an enrollment burst (photo uploads saved as samples, through the HTTP API with a session
//! and CSRF token) and the camera plays the 4-face stream with MQTT on (an event storm: no
//! cool-downs, tracks end after one missed pass). After each kill the database is opened
//! read-only and checked against what the test saw:
//!
//! * `PRAGMA integrity_check` is `ok` (and no foreign key points nowhere);
//! * every sample whose save was acknowledged (2xx) exists exactly once, one whose request was in
//!   flight at most once, a refused one not at all, and nothing else appeared;
//! * every event the daemon logged (it logs after the commit) is stored; no event is stored twice
//!   (same kind, track, person and time); `recognized` events never go back in time as ids grow,
//!   and each track's events are in time order with `left` last (see [`check_db`]);
//! * the outbox holds exactly the newest events (a suffix of the event table); every event was
//!   either received by a persistent QoS 1 subscriber or is still in the outbox; what the
//!   subscriber received is in order, without duplicates, and all stored. The one overlap
//!   allowed is the documented at-least-once edge (`src/mqtt/client.rs`, "Batched deletes"):
//!   rows the broker received whose delete was not yet committed, which must be the oldest
//!   rows of the outbox and at most [`EDGE_MAX`].
//!
//! The kill comes uniformly within [`KILL_WINDOW_MS`], or aimed just after a save request (a
//! save takes a millisecond, a uniform kill would hardly ever catch one), or after a broker
//! stall that leaves committed events unpublished in the outbox: one iteration in three each.
//!
//! Then the daemon is started again with the same configuration: the subscriber must receive
//! the outbox's events first, in id order, and after a clean stop (SIGTERM) the outbox is empty
//! and every stored event has been received; the only events received twice are the edge's.
//!
//! `FACED_POWERCUT_ITERS` iterations (default [`CI_ITERS`], 2-4 s each on the 2-core VM),
//! seeded by `FACED_POWERCUT_SEED` (default: the clock); each iteration prints its seed, so its
//! choices (kill mode and moment, photos) can be replayed alone with
//! `FACED_POWERCUT_SEED=<its seed> FACED_POWERCUT_ITERS=1` (the machine's timing still varies).
//! `scripts/power-cut` runs 50. A violation does not stop the run: every iteration is checked,
//! then the test fails listing them all.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::util::broker::{Broker, Sub, free_port};
use crate::util::daemon::{Daemon, faced_cli, faces_dir, photos_by_person};
use crate::util::web::{Client, PASSWORD};

/// Iterations when `FACED_POWERCUT_ITERS` is unset: enough for CI to catch a regression in the
/// crash path on most runs, within the module's 90 s budget.
const CI_ITERS: u32 = 5;

/// The kill comes this long at most after the enrollment burst starts (uniformly drawn): by
/// then both writers have committed for a while.
const KILL_WINDOW_MS: u64 = 2500;

/// A kill aimed at a save comes after one of the first this many save requests...
const SAVES_BEFORE_KILL_MAX: u64 = 20;
/// ...within this many microseconds: a save is answered within about a millisecond here.
const SAVE_KILL_DELAY_US: u64 = 1500;

/// A broker stall (when drawn) lasts this long and ends with the kill: at ~40 events a second,
/// the longer ones outlast the publisher's window of 64 unacknowledged rows.
const STALL_MIN_MS: u64 = 500;
const STALL_MAX_MS: u64 = 3000;

/// Bound on the at-least-once edge: rows published and possibly received but not yet deleted
/// from the outbox. The publisher keeps up to `WINDOW` (64) rows unacknowledged and deletes
/// acknowledged rows in batches of up to `DELETE_BATCH` (128) or after `DELETE_DELAY` (1 s),
/// both in `src/mqtt/client.rs`.
const EDGE_MAX: usize = 64 + 128;

const ADMIN: &str = "admin";

/// A small deterministic generator (splitmix64): the test needs only a reproducible stream of
/// numbers from a logged seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        crate::util::splitmix64(&mut self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What every iteration starts from: a gallery with `p1` (person01 of the fixtures, three of
/// whose faces are in each 4-face frame) and the console's admin, and the play folder.
struct Template {
    dir: tempfile::TempDir,
    play: PathBuf,
    /// Labelled photos of everyone but person01: the enrollment burst's uploads.
    burst_photos: Vec<String>,
}

impl Template {
    fn new() -> Template {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("faced.db");
        let db_s = db.to_str().unwrap();
        let f = faces_dir();
        let p1: Vec<String> = ["img1.jpg", "img2.jpg"]
            .iter()
            .map(|n| f.join(n).to_str().unwrap().to_string())
            .collect();
        faced_cli(
            &["enroll", "--db", db_s, "--name", "p1", &p1[0], &p1[1]],
            "",
        );
        faced_cli(
            &["user", "--db", db_s, "add", "--admin", ADMIN],
            &format!("{PASSWORD}\n"),
        );
        // Each mosaic for 3 frames, then 2 frames without a face: every track ends (one missed
        // pass is enough, see the config) and the next mosaic starts 4 new tracks, so each
        // cycle gives 12 recognized/unknown and 12 left events.
        let play = dir.path().join("play");
        std::fs::create_dir_all(&play).unwrap();
        let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench");
        let mut n = 0;
        for m in ["four-a.jpg", "four-b.jpg", "four-c.jpg"] {
            for (src, times) in [(bench.join(m), 3), (f.join("negatives/orange.jpg"), 2)] {
                for _ in 0..times {
                    std::fs::copy(&src, play.join(format!("{n:03}.jpg"))).unwrap();
                    n += 1;
                }
            }
        }
        let burst_photos = photos_by_person()
            .into_iter()
            .filter(|(p, _)| p != "person01")
            .flat_map(|(_, files)| files)
            .collect();
        Template {
            dir,
            play,
            burst_photos,
        }
    }
}

/// One save request of the burst and what came of it.
#[derive(Debug, Clone)]
struct Save {
    /// The uploaded file name, which becomes the sample's `source` (unique per iteration).
    source: String,
    /// The person created by this request, if it created one.
    creates: Option<String>,
    state: SaveState,
}

#[derive(Debug, Clone, PartialEq)]
enum SaveState {
    /// Sent; no answer before the kill.
    InFlight,
    /// 2xx: committed.
    Acked,
    /// Answered with an error: nothing may have been stored.
    Refused(u16),
}

/// Photos per upload request: analysing a photo takes much longer than saving its face, so
/// several are analysed at once and then saved one request each, which gives the kill a fair
/// chance to land during a save.
const PHOTOS_PER_UPLOAD: usize = 3;

/// One enrollment worker: upload [`PHOTOS_PER_UPLOAD`] photos, save each face found (the first
/// save creates the worker's person, the others add to it), until the daemon dies. Every save
/// is recorded in `saves` and announced on `save_sent` before it is sent.
async fn burst_worker(
    client: Arc<Client>,
    prefix: String,
    photos: Vec<String>,
    saves: Arc<Mutex<Vec<Save>>>,
    save_sent: Arc<tokio::sync::Notify>,
) {
    let mut person: Option<i64> = None;
    let mut n = 0;
    let mut files = photos.iter().cycle();
    loop {
        let mut form = reqwest::multipart::Form::new();
        for file in files.by_ref().take(PHOTOS_PER_UPLOAD) {
            let data = std::fs::read(faces_dir().join(file)).unwrap();
            form = form.part(
                "files",
                reqwest::multipart::Part::bytes(data).file_name(format!("{prefix}-{n}-{file}")),
            );
            n += 1;
        }
        let Ok(res) = client
            .req(reqwest::Method::POST, "/api/uploads")
            .multipart(form)
            .send()
            .await
        else {
            return;
        };
        if !res.status().is_success() {
            return;
        }
        let Ok(body) = res.json::<serde_json::Value>().await else {
            return;
        };
        let items = body["samples"].as_array().cloned().unwrap_or_default();
        // Photos without a face have no candidate id: nothing to save.
        for item in items.iter().filter(|i| i["id"].is_string()) {
            let cand = item["id"].as_str().unwrap();
            let source = item["file"].as_str().unwrap().to_string();
            let (path, req, creates) = match person {
                None => {
                    let name = format!("{prefix}-person");
                    (
                        "/api/people".to_string(),
                        serde_json::json!({"name": name, "samples": [cand], "allow_rejected": true}),
                        Some(name),
                    )
                }
                Some(p) => (
                    format!("/api/people/{p}/samples"),
                    serde_json::json!({"samples": [cand], "allow_rejected": true}),
                    None,
                ),
            };
            let i = {
                let mut s = saves.lock().unwrap();
                s.push(Save {
                    source,
                    creates: creates.clone(),
                    state: SaveState::InFlight,
                });
                s.len() - 1
            };
            save_sent.notify_one();
            let Ok(res) = client
                .req(reqwest::Method::POST, &path)
                .json(&req)
                .send()
                .await
            else {
                return;
            };
            let status = res.status();
            // The status line is written after the handler returned, i.e. after the commit:
            // the save counts as acknowledged even if the body is cut off by the kill.
            saves.lock().unwrap()[i].state = if status.is_success() {
                SaveState::Acked
            } else {
                SaveState::Refused(status.as_u16())
            };
            if status.is_success()
                && creates.is_some()
                && let Ok(b) = res.json::<serde_json::Value>().await
            {
                person = b["id"].as_i64();
            }
        }
    }
}

/// `(id, kind, track, person, at)` of a stored event.
type EventRow = (i64, String, i64, Option<String>, i64);

/// What the database holds, read through a read-only connection (so the check itself recovers
/// nothing and checkpoints nothing: the restarted daemon must do that).
struct Snapshot {
    integrity: String,
    fk_violations: i64,
    events: Vec<EventRow>,
    /// Outbox rows in publish order: `(topic, event_id from the payload)`.
    outbox: Vec<(String, i64)>,
    /// Sample `source` → count.
    samples: BTreeMap<String, i64>,
    /// Person names.
    people: Vec<String>,
}

fn read_db(db: &Path) -> Snapshot {
    let c = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let fk_violations = c
        .prepare("PRAGMA foreign_key_check")
        .unwrap()
        .query_map([], |_| Ok(()))
        .unwrap()
        .count() as i64;
    let events = c
        .prepare("SELECT id, kind, track_id, person_name, at FROM event ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let outbox = c
        .prepare("SELECT topic, payload FROM mqtt_outbox ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .unwrap()
        .map(|r| {
            let (topic, payload) = r.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            (topic, v["event_id"].as_i64().unwrap())
        })
        .collect();
    let samples = c
        .prepare("SELECT source, COUNT(*) FROM face_sample GROUP BY source")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let people = c
        .prepare("SELECT name FROM person")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    Snapshot {
        integrity,
        fk_violations,
        events,
        outbox,
        samples,
        people,
    }
}

/// `(id, kind, track)` of every `event … track=T id=N` line the daemon logged (after commit).
fn logged_events(log: &[String]) -> Vec<(i64, String, i64)> {
    let num = |l: &str, key: &str| -> Option<i64> {
        let at = l.rfind(key)? + key.len();
        l[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    log.iter()
        .map(|l| strip_ansi(l))
        .filter(|l| l.contains("faced::events::store"))
        .filter_map(|l| {
            let rest = &l[l.find(": event ")? + ": event ".len()..];
            let kind = rest.split_whitespace().next()?.to_string();
            Some((num(rest, " id=")?, kind, num(rest, " track=")?))
        })
        .collect()
}

/// `line` without terminal colour codes (`ESC [ … m`), which the daemon's log carries.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How many times the broker has logged the end of `client`'s connection (a kill shows as
/// "closed its connection" or "Socket error on client …, disconnecting", a clean stop as
/// "disconnected").
fn connection_ends(broker: &Broker, client: &str) -> usize {
    let (named, socket) = (format!("Client {client} "), format!("client {client},"));
    broker
        .log()
        .lines()
        .filter(|l| {
            (l.contains(&named) || l.contains(&socket))
                && (l.contains("closed its connection")
                    || l.contains("disconnected")
                    || l.contains("disconnecting"))
        })
        .count()
}

/// Event ids of the messages `sub` receives until everything the broker took from `client`'s
/// connection has been delivered: the broker has logged more than `ends_before` ends of that
/// connection (it has handled every packet the connection carried by then), then a marker
/// published to `topic` from the subscriber comes back, and the broker delivers one
/// subscription's messages in the order it accepted them. No waiting for a silence that a
/// loaded machine could break.
async fn delivered(
    broker: &Broker,
    sub: &mut Sub,
    client: &str,
    ends_before: usize,
    topic: &str,
) -> Vec<i64> {
    let t = Instant::now();
    while connection_ends(broker, client) <= ends_before {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the broker did not see {client}'s connection end; its log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let marker = format!("{{\"marker\":{ends_before}}}");
    sub.client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, marker.clone())
        .await
        .unwrap();
    let mut ids = Vec::new();
    loop {
        let m = sub
            .next(Duration::from_secs(30))
            .await
            .expect("the marker did not come back within 30 s");
        if m.payload == marker.as_bytes() {
            return ids;
        }
        ids.push(m.json()["event_id"].as_i64().unwrap());
    }
}

fn strictly_increasing(v: &[i64]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

/// Waits (without blocking the runtime) for a log line containing `needle`.
async fn wait_log(d: &Daemon, needle: &str, timeout: Duration) {
    let t = Instant::now();
    while !d.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
        assert!(
            t.elapsed() < timeout,
            "no log line with {needle:?} within {timeout:?}; log:\n{}",
            d.log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Figures of one iteration, for the report and the summary.
#[derive(Debug, Default)]
struct Figures {
    kill_ms: u64,
    /// The kill came just after this save request was sent (0: not aimed at a save).
    after_save: usize,
    stall_ms: u64,
    committed: usize,
    logged: usize,
    received: usize,
    outbox: usize,
    edge: usize,
    acked: usize,
    in_flight: usize,
    /// In-flight saves that were committed all the same.
    in_flight_stored: usize,
    samples: usize,
    redelivered: usize,
}

/// One iteration; returns its figures and the violations found.
async fn iteration(t: &Template, broker: &Broker, iter: u32, seed: u64) -> (Figures, Vec<String>) {
    let mut rng = Rng(seed);
    let mut bad: Vec<String> = Vec::new();
    let mut fig = Figures::default();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for f in ["faced.db", "faced.db.key"] {
        std::fs::copy(t.dir.path().join(f), dir.join(f)).unwrap();
    }
    let db = dir.join("faced.db");
    let dev = format!("pc{iter}");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let conf = dir.join("faced.toml");
    std::fs::write(
        &conf,
        format!(
            "[device]\nid = \"{dev}\"\n[gallery]\ndb = \"{}\"\n\
             [events]\ncooldown_secs = 0.0\nunknown_cooldown_secs = 0.0\n\
             [[cameras]]\nname = \"front\"\nsource = \"dir:{}\"\nfps = 10.0\n\
             frames_per_image = 1\nrepeat = true\nlossless = true\ntrack_max_missed = 1\n\
             [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {}\nkeepalive_secs = 5\n\
             reconnect_min_ms = 100\nreconnect_max_secs = 2\n\
             [web]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n",
            db.display(),
            t.play.display(),
            broker.port()
        ),
    )
    .unwrap();
    let topic = format!("faced/{dev}/events");
    let mqtt_client = format!("faced-{dev}");
    // Persistent session, QoS 1: what the broker accepted reaches it even across a reconnect.
    let mut sub = Sub::connect(broker.port(), &format!("{dev}-sub"), &[&topic], true).await;
    let args = ["--config", conf.to_str().unwrap()];
    let env = [("FACED_LOG", "info"), ("FACED_WEB__ENABLED", "true")];

    // Run 1, killed.
    let mut d = Daemon::start(&args, &env);
    wait_log(&d, "web console listening", Duration::from_secs(60)).await;
    let mut client = Client::new(&base);
    client.login(ADMIN, PASSWORD).await;
    let client = Arc::new(client);
    let saves = Arc::new(Mutex::new(Vec::new()));
    let save_sent = Arc::new(tokio::sync::Notify::new());
    let mut photos = t.burst_photos.clone();
    let start = rng.below(photos.len() as u64) as usize;
    photos.rotate_left(start);
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let mut ph = photos.clone();
            ph.rotate_left(w * photos.len() / 2);
            tokio::spawn(burst_worker(
                client.clone(),
                format!("{dev}-w{w}"),
                ph,
                saves.clone(),
                save_sent.clone(),
            ))
        })
        .collect();
    // Three ways to choose the kill, one iteration in three each:
    // * uniformly within KILL_WINDOW_MS;
    // * just after the k-th save request was sent (0-4 ms later): a save takes a few ms against
    //   a few hundred for an upload's analysis, so a uniform kill would almost never catch one;
    // * after a broker stall, long enough for more events than the publisher's window to pile
    //   up: committed events then wait unpublished in the outbox (on loopback the publisher
    //   otherwise keeps up).
    let burst_start = Instant::now();
    match rng.below(3) {
        0 => {
            tokio::time::sleep(Duration::from_millis(rng.below(KILL_WINDOW_MS + 1))).await;
        }
        1 => {
            fig.after_save = 1 + rng.below(SAVES_BEFORE_KILL_MAX) as usize;
            let delay = Duration::from_micros(rng.below(SAVE_KILL_DELAY_US + 1));
            while saves.lock().unwrap().len() < fig.after_save {
                tokio::time::timeout(Duration::from_secs(30), save_sent.notified())
                    .await
                    .expect("the burst stopped saving");
            }
            // A thread sleep: tokio's timer has millisecond steps.
            tokio::task::block_in_place(|| std::thread::sleep(delay));
        }
        _ => {
            fig.stall_ms = STALL_MIN_MS + rng.below(STALL_MAX_MS - STALL_MIN_MS + 1);
            tokio::time::sleep(Duration::from_millis(rng.below(1001))).await;
            broker.pause();
            tokio::time::sleep(Duration::from_millis(fig.stall_ms)).await;
        }
    }
    fig.kill_ms = burst_start.elapsed().as_millis() as u64;
    // Counted before the kill: a reconnect during the run would have logged an end already.
    let ends_before_kill = connection_ends(broker, &mqtt_client);
    d.child.kill().unwrap(); // SIGKILL
    if fig.stall_ms > 0 {
        broker.resume();
    }
    tokio::task::block_in_place(|| d.wait(Duration::from_secs(10)));
    for w in workers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("burst worker did not stop after the kill")
            .unwrap();
    }
    let log1 = d.log.lock().unwrap().clone();
    drop(d);
    let received = delivered(broker, &mut sub, &mqtt_client, ends_before_kill, &topic).await;
    let saves = saves.lock().unwrap().clone();

    // After the kill.
    let s = read_db(&db);
    let stored: Vec<i64> = s.events.iter().map(|e| e.0).collect();
    let stored_set: BTreeSet<i64> = stored.iter().copied().collect();
    fig.committed = stored.len();
    fig.received = received.len();
    fig.outbox = s.outbox.len();
    check_db(&s, i64::MAX, "after the kill", &mut bad);

    let logged = logged_events(&log1);
    fig.logged = logged.len();
    let by_id: BTreeMap<i64, &EventRow> = s.events.iter().map(|e| (e.0, e)).collect();
    for (id, kind, track) in &logged {
        match by_id.get(id) {
            None => bad.push(format!(
                "event {id} was logged (committed) but is not stored"
            )),
            Some(e) if (&e.1, e.2) != (kind, *track) => bad.push(format!(
                "event {id} was logged as {kind} track {track} but is stored as {} track {}",
                e.1, e.2
            )),
            Some(_) => {}
        }
    }

    let outbox: Vec<i64> = s.outbox.iter().map(|o| o.1).collect();
    if let Some((topic_bad, _)) = s.outbox.iter().find(|o| o.0 != topic) {
        bad.push(format!("outbox row for {topic_bad}, expected only {topic}"));
    }
    if !strictly_increasing(&outbox) {
        bad.push(format!("outbox not in event order: {outbox:?}"));
    }
    // Rows are deleted only after the broker's PUBACK, in publish order, so what is left is the
    // newest events.
    if outbox.as_slice() != &stored[stored.len() - outbox.len().min(stored.len())..] {
        bad.push(format!(
            "the outbox is not the newest events: outbox {outbox:?}, newest stored {:?}",
            &stored[stored.len().saturating_sub(outbox.len() + 3)..]
        ));
    }
    if !strictly_increasing(&received) {
        bad.push(format!("received out of order or twice: {received:?}"));
    }
    let received_set: BTreeSet<i64> = received.iter().copied().collect();
    let outbox_set: BTreeSet<i64> = outbox.iter().copied().collect();
    for id in &received {
        if !stored_set.contains(id) {
            bad.push(format!("event {id} was published but is not stored"));
        }
    }
    for id in &stored {
        if !received_set.contains(id) && !outbox_set.contains(id) {
            bad.push(format!(
                "event {id} is stored, was not received and is not in the outbox: lost"
            ));
        }
    }
    // The edge: received, and still in the outbox because its delete had not committed.
    let edge: Vec<i64> = outbox
        .iter()
        .copied()
        .filter(|id| received_set.contains(id))
        .collect();
    fig.edge = edge.len();
    if edge.as_slice() != &outbox[..edge.len()] {
        bad.push(format!(
            "received events in the outbox are not its oldest rows: edge {edge:?}, outbox {outbox:?}"
        ));
    }
    if edge.len() > EDGE_MAX {
        bad.push(format!(
            "{} received events still in the outbox, more than the publisher's window and delete batch ({EDGE_MAX})",
            edge.len()
        ));
    }

    fig.acked = saves.iter().filter(|x| x.state == SaveState::Acked).count();
    fig.in_flight = saves
        .iter()
        .filter(|x| x.state == SaveState::InFlight)
        .count();
    fig.in_flight_stored = saves
        .iter()
        .filter(|x| x.state == SaveState::InFlight && s.samples.contains_key(&x.source))
        .count();
    check_samples(&s, &saves, &dev, "after the kill", &mut bad);
    // Each enrollment's audit row committed with it, so the kill left the chain whole.
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_faced"))
        .args(["audit", "--db", db.to_str().unwrap(), "verify"])
        .env_remove("FACED_CONFIG")
        .output()
        .unwrap();
    if !verify.status.success() {
        bad.push(format!(
            "faced audit verify after the kill: {}",
            String::from_utf8_lossy(&verify.stderr)
        ));
    }
    fig.samples = s
        .samples
        .iter()
        .filter(|(k, _)| k.starts_with(&dev))
        .map(|(_, n)| *n as usize)
        .sum();

    // Run 2: the same configuration; the outbox goes out first, in order.
    let mut d = Daemon::start(&args, &env);
    // Up before it is stopped: a SIGTERM before the handler is installed would kill it.
    wait_log(&d, "web console listening", Duration::from_secs(60)).await;
    let mut after = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while after.len() < outbox.len() {
        match tokio::time::timeout_at(deadline, sub.next(Duration::from_secs(60))).await {
            Ok(Some(m)) => after.push(m.json()["event_id"].as_i64().unwrap()),
            _ => {
                bad.push(format!(
                    "after the restart only {} of the {} outbox events arrived: {after:?}",
                    after.len(),
                    outbox.len()
                ));
                break;
            }
        }
    }
    if after.len() >= outbox.len() && after[..outbox.len()] != outbox[..] {
        bad.push(format!(
            "after the restart the outbox was not delivered first and in order: outbox {outbox:?}, received {:?}",
            &after[..outbox.len()]
        ));
    }
    fig.redelivered = outbox.len().min(after.len());
    let ends_before_stop = connection_ends(broker, &mqtt_client);
    d.signal(libc::SIGTERM);
    let code = tokio::task::block_in_place(|| d.wait(Duration::from_secs(30)));
    if code != Some(0) {
        bad.push(format!(
            "restarted daemon exited with {code:?}; log:\n{}",
            d.log.lock().unwrap().join("\n")
        ));
    }
    drop(d);
    after.extend(delivered(broker, &mut sub, &mqtt_client, ends_before_stop, &topic).await);
    let s2 = read_db(&db);
    check_db(
        &s2,
        stored.last().copied().unwrap_or(0),
        "after the restart",
        &mut bad,
    );
    check_samples(&s2, &saves, &dev, "after the restart", &mut bad);
    if !s2.outbox.is_empty() {
        bad.push(format!(
            "outbox not drained after a clean stop: {} rows",
            s2.outbox.len()
        ));
    }
    if !strictly_increasing(&after) {
        bad.push(format!(
            "after the restart, received out of order or twice: {after:?}"
        ));
    }
    let twice: Vec<i64> = after
        .iter()
        .copied()
        .filter(|id| received_set.contains(id))
        .collect();
    if twice != edge {
        bad.push(format!(
            "received twice: {twice:?}; only the edge {edge:?} may be"
        ));
    }
    let all: HashSet<i64> = received.iter().chain(&after).copied().collect();
    let missing: Vec<i64> = s2
        .events
        .iter()
        .map(|e| e.0)
        .filter(|id| !all.contains(id))
        .collect();
    if !missing.is_empty() {
        bad.push(format!("stored events never received: {missing:?}"));
    }
    let stored2: BTreeSet<i64> = s2.events.iter().map(|e| e.0).collect();
    if !stored_set.is_subset(&stored2) {
        bad.push("events of the first run disappeared after the restart".into());
    }
    (fig, bad)
}

/// Integrity, no duplicated event, time order. `at` is when the face was seen: for
/// `recognized` the frame being processed, which never goes back as ids grow; `left` (and
/// `unknown` for a track that left after one look) carry the track's last sighting, older than
/// the new tracks' events stored before them in the same pass. So time order is checked for
/// `recognized`, and within each track: its events are stored in time order and `left` is its
/// last. Track ids restart with the daemon; `split` is the last id of the first run.
fn check_db(s: &Snapshot, split: i64, when: &str, bad: &mut Vec<String>) {
    if s.integrity != "ok" {
        bad.push(format!("{when}: integrity_check says {:?}", s.integrity));
    }
    if s.fk_violations != 0 {
        bad.push(format!(
            "{when}: {} foreign key violations",
            s.fk_violations
        ));
    }
    let mut seen = HashSet::new();
    for e in &s.events {
        if !seen.insert((&e.1, e.2, &e.3, e.4)) {
            bad.push(format!(
                "{when}: event {} duplicates an earlier one: {e:?}",
                e.0
            ));
        }
    }
    let recognized: Vec<&EventRow> = s.events.iter().filter(|e| e.1 == "recognized").collect();
    for w in recognized.windows(2) {
        if w[1].4 < w[0].4 {
            bad.push(format!(
                "{when}: recognized event {} is older ({} ms) than event {} ({} ms)",
                w[1].0, w[1].4, w[0].0, w[0].4
            ));
        }
    }
    let mut tracks: BTreeMap<(bool, i64), Vec<&EventRow>> = BTreeMap::new();
    for e in &s.events {
        tracks.entry((e.0 > split, e.2)).or_default().push(e);
    }
    for evs in tracks.values() {
        let in_order = evs.windows(2).all(|w| w[0].4 <= w[1].4);
        let left_last = evs.iter().rev().skip(1).all(|e| e.1 != "left");
        if !in_order || !left_last {
            bad.push(format!("{when}: events of one track out of order: {evs:?}"));
        }
    }
}

/// Acknowledged saves exactly once, in-flight ones at most once, refused ones not at all, and
/// nothing that was not sent.
fn check_samples(s: &Snapshot, saves: &[Save], dev: &str, when: &str, bad: &mut Vec<String>) {
    let sent: HashSet<&str> = saves.iter().map(|x| x.source.as_str()).collect();
    for (source, _) in s.samples.iter().filter(|(k, _)| k.starts_with(dev)) {
        if !sent.contains(source.as_str()) {
            bad.push(format!("{when}: sample {source} was never saved"));
        }
    }
    for x in saves {
        let n = s.samples.get(&x.source).copied().unwrap_or(0);
        let people = x
            .creates
            .as_ref()
            .map(|p| s.people.iter().filter(|q| *q == p).count() as i64);
        let ok = match x.state {
            SaveState::Acked => n == 1 && people.is_none_or(|p| p == 1),
            SaveState::InFlight => n <= 1 && people.is_none_or(|p| p == n),
            SaveState::Refused(_) => n == 0,
        };
        if !ok {
            bad.push(format!(
                "{when}: save of {} ({:?}) left {n} samples and {people:?} people",
                x.source, x.state
            ));
        }
    }
}

#[test]
fn sigkill_during_enrollment_and_event_storm_loses_and_duplicates_nothing() {
    let _one = crate::util::alone();
    let iters: u32 = std::env::var("FACED_POWERCUT_ITERS")
        .ok()
        .map(|v| v.parse().expect("FACED_POWERCUT_ITERS is a number"))
        .unwrap_or(CI_ITERS);
    let seed: u64 = std::env::var("FACED_POWERCUT_SEED")
        .ok()
        .map(|v| v.parse().expect("FACED_POWERCUT_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000_000
        });
    eprintln!("powercut: {iters} iterations, FACED_POWERCUT_SEED={seed}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let t = Template::new();
    let broker = Broker::start();
    let mut all_bad = Vec::new();
    let mut figs = Vec::new();
    for i in 0..iters {
        let s = seed.wrapping_add(u64::from(i));
        let t0 = Instant::now();
        let (f, bad) = rt.block_on(iteration(&t, &broker, i, s));
        eprintln!(
            "powercut {}/{iters} seed={s}: kill at {} ms ({}); events committed {} (logged {}), \
             received {}, in outbox {} (edge {}), re-delivered {}; samples acked {}, in flight \
             {} ({} stored), present {}; violations {}; {:.1} s",
            i + 1,
            f.kill_ms,
            match (f.after_save, f.stall_ms) {
                (0, 0) => "uniform".to_string(),
                (n, 0) => format!("aimed at save request {n}"),
                (_, ms) => format!("after a {ms} ms broker stall"),
            },
            f.committed,
            f.logged,
            f.received,
            f.outbox,
            f.edge,
            f.redelivered,
            f.acked,
            f.in_flight,
            f.in_flight_stored,
            f.samples,
            bad.len(),
            t0.elapsed().as_secs_f32()
        );
        for b in &bad {
            eprintln!("  VIOLATION: {b}");
        }
        all_bad.extend(bad.into_iter().map(|b| format!("seed {s}: {b}")));
        figs.push(f);
    }
    let sum = |g: fn(&Figures) -> usize| figs.iter().map(g).sum::<usize>();
    let mut kills: Vec<u64> = figs.iter().map(|f| f.kill_ms).collect();
    kills.sort();
    eprintln!(
        "powercut summary: {iters} iterations, seed {seed}; kill moments {}..{} ms (median {}); \
         events committed {}, received before the kill {}, left in the outbox {} (edge max {}); \
         samples acked {}, in flight {} ({} stored), present {}; violations {}; wall {:.1} s",
        kills.first().unwrap_or(&0),
        kills.last().unwrap_or(&0),
        kills.get(kills.len() / 2).unwrap_or(&0),
        sum(|f| f.committed),
        sum(|f| f.received),
        sum(|f| f.outbox),
        figs.iter().map(|f| f.edge).max().unwrap_or(0),
        sum(|f| f.acked),
        sum(|f| f.in_flight),
        sum(|f| f.in_flight_stored),
        sum(|f| f.samples),
        all_bad.len(),
        started.elapsed().as_secs_f32()
    );
    assert!(
        all_bad.is_empty(),
        "{} violations:\n{}",
        all_bad.len(),
        all_bad.join("\n")
    );
}
