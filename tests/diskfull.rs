//! A full disk under the running daemon: the database lives on a small tmpfs that the test
//! mounts (as root; without the permission the test says SKIPPED and passes), and the test fills
//! it while `faced run` records an event storm with MQTT on. Recognition and MQTT must go on,
//! event storage must degrade with one clear log line and a console banner, nothing stored
//! before may be damaged, and storing must resume by itself once space is freed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::broker::{Broker, Sub, free_port};
use crate::util::daemon::Daemon;
use crate::util::web::{Client, PASSWORD};
use serde_json::Value;

/// Unmounts on drop (lazily: the daemon may still hold files when a test fails).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> std::result::Result<Mount, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Mount(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes 256 KiB blocks into `path` until the file system refuses one; returns the bytes.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0x5au8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    // The last partial page too, so SQLite cannot grow by a single page.
    while let Ok(k) = f.write(&block[..4096]) {
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    n
}

async fn system(c: &Client) -> Value {
    c.get("/api/system").await.json().await.unwrap()
}

async fn wait_log(d: &Daemon, needle: &str, timeout: Duration) {
    let t = Instant::now();
    while d.count(needle) == 0 {
        assert!(
            t.elapsed() < timeout,
            "no {needle:?} within {timeout:?}:\n{}",
            d.log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Event ids of the next `n` event messages (panics after `timeout`).
async fn next_events(sub: &mut Sub, n: usize, timeout: Duration) -> Vec<i64> {
    let t = Instant::now();
    let mut ids = Vec::new();
    while ids.len() < n {
        let left = timeout.saturating_sub(t.elapsed());
        let m = sub
            .next(left)
            .await
            .unwrap_or_else(|| panic!("only {} of {n} events within {timeout:?}", ids.len()));
        ids.push(m.json()["event_id"].as_i64().unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_degrades_storage_keeps_mqtt_and_recovers() {
    let _heavy = crate::util::alone_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("disk");
    let _mount = match Mount::tmpfs(&mnt, "12m") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a tmpfs for the full-disk test (needs root): {e}");
            return;
        }
    };
    let db = mnt.join("faced.db");
    let db_s = db.to_str().unwrap();
    // Mosaics of four faces, each ending its tracks with a frame without faces: a steady storm
    // of recognized, unknown and left events with snapshots.
    let play =
        crate::util::daemon::storm_unit(tmp.path(), &db, &["four-a.jpg", "four-b.jpg"], 2, 1);
    let broker = Broker::start();
    let port = free_port();
    let conf = tmp.path().join("faced.toml");
    std::fs::write(
        &conf,
        format!(
            "[device]\nid = \"full\"\n[gallery]\ndb = \"{db_s}\"\n\
             [events]\ncooldown_secs = 0.0\nunknown_cooldown_secs = 0.0\n\
             [[cameras]]\nname = \"front\"\nsource = \"dir:{}\"\nfps = 10.0\n\
             repeat = true\nlossless = true\ntrack_max_missed = 1\n\
             [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {}\n\
             [web]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n",
            play.display(),
            broker.port()
        ),
    )
    .unwrap();
    let mut sub = Sub::connect(broker.port(), "full-sub", &["faced/full/events"], false).await;
    let mut d = Daemon::start(
        &["--config", conf.to_str().unwrap()],
        &[("FACED_LOG", "info"), ("FACED_WEB__ENABLED", "true")],
    );
    wait_log(&d, "web console listening", Duration::from_secs(120)).await;
    let mut admin = Client::new(&format!("http://127.0.0.1:{port}"));
    admin.login("admin", PASSWORD).await;

    // Stored while there is space.
    let before = next_events(&mut sub, 10, Duration::from_secs(120)).await;
    assert!(before.iter().all(|&id| id > 0), "{before:?}");
    assert!(system(&admin).await["storage_full_since"].is_null());

    // Fill the disk: events keep coming over MQTT, unstored (event_id 0), with one log line.
    let filler = mnt.join("filler");
    let filled = fill(&filler);
    eprintln!("filled the tmpfs with {filled} bytes");
    wait_log(&d, "the database's disk is full", Duration::from_secs(30)).await;
    let t = Instant::now();
    let mut unstored = 0;
    while unstored < 20 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "only {unstored} unstored events published while the disk was full"
        );
        if let Some(m) = sub.next(Duration::from_secs(10)).await
            && m.json()["event_id"] == 0
        {
            unstored += 1;
        }
    }
    assert_eq!(
        d.count("the database's disk is full"),
        1,
        "one clear line, not one per event"
    );
    let s = system(&admin).await;
    assert!(s["storage_full_since"].is_string(), "no banner: {s}");
    assert_eq!(s["cameras"][0]["status"], "running", "{s}");

    // Free the space: storing resumes by itself, the banner goes.
    std::fs::remove_file(&filler).unwrap();
    wait_log(&d, "has space again", Duration::from_secs(30)).await;
    // Messages published while the disk was full may still be queued for the subscriber.
    let last_before = *before.iter().max().unwrap();
    let stored_again = sub
        .until(Duration::from_secs(60), |m| {
            m.json()["event_id"].as_i64().unwrap() > last_before
        })
        .await;
    assert!(stored_again.is_some(), "events were not stored again");
    assert!(system(&admin).await["storage_full_since"].is_null());
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(60)), Some(0));

    // Nothing stored before was damaged: integrity, and every early event with its snapshot.
    let c = rusqlite::Connection::open(&db).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let store = faced::events::store::EventStore::open(
        &db,
        &mnt.join("faced.db.key"),
        faced::events::store::StoreOptions {
            retention_days: 0,
            retention_count: 0,
            snapshots: true,
        },
        std::sync::Arc::new(faced::base::RealClocks),
    )
    .unwrap();
    let mut snaps = 0;
    for id in &before {
        let kind: String = c
            .query_row("SELECT kind FROM event WHERE id = ?1", [id], |r| r.get(0))
            .unwrap_or_else(|e| panic!("event {id} stored before the disk filled is gone: {e}"));
        if kind != "left" {
            assert!(
                store.snapshot(*id).unwrap().is_some(),
                "event {id}'s snapshot"
            );
            snaps += 1;
        }
    }
    assert!(snaps > 0);
}
