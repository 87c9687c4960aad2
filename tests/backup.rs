//! Encrypted backups and their restore, through the CLI (`faced backup`, `faced restore`) and
//! through the running daemon (`POST /api/backup`, `POST /api/restore`, `[backup]` schedules):
//! a restore on another unit identifies exactly as the original, and every bad archive is
//! refused with a clear error and changes nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::daemon::{Daemon, faces_dir, photos_by_person};
use crate::util::web::{Client, PASSWORD};
use serde_json::{Value, json};

const PASS: &str = "correct horse battery staple";

fn faced(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faced"))
        .args(args)
        .env_remove("FACED_CONFIG")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = faced(args);
    assert!(o.status.success(), "faced {args:?}: {}", text(&o));
    text(&o)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Three people enrolled from two photos each; returns the photos not enrolled.
fn enroll_three(db: &Path) -> Vec<PathBuf> {
    let mut rest = Vec::new();
    for (person, files) in photos_by_person().into_iter().take(3) {
        let photos: Vec<PathBuf> = files.iter().map(|f| faces_dir().join(f)).collect();
        let mut args = vec!["enroll", "--db", s(db), "--name", &person];
        args.extend(photos[..2].iter().map(|p| s(p)));
        ok(&args);
        rest.extend(photos[2..].iter().cloned());
    }
    rest.push(faces_dir().join("couple.jpg"));
    rest
}

fn identify(db: &Path, photos: &[PathBuf]) -> String {
    let mut args = vec!["identify", "--json", "--db", s(db)];
    args.extend(photos.iter().map(|p| s(p)));
    let o = faced(&args);
    String::from_utf8(o.stdout).unwrap()
}

/// Every file in `dir` with its contents (what "changes nothing" compares).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn pass_file(dir: &Path, pass: &str) -> PathBuf {
    let p = dir.join(format!("pass-{}", pass.len()));
    std::fs::write(&p, format!("{pass}\n")).unwrap();
    p
}

/// Backup on one unit, restore on another (another folder, no key there): the same people and
/// byte-identical `faced identify` output on photos that were not enrolled. Archive and key are
/// written 0600 whatever the umask, and the backup leaves no temporary file behind.
#[test]
fn restore_on_another_unit_identifies_identically() {
    let _turn = crate::util::beside_others();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    let db_a = a.join("faced.db");
    let photos = enroll_three(&db_a);
    let pf = pass_file(tmp.path(), PASS);
    let archive = tmp.path().join("unit-a.fbk");
    let out = ok(&[
        "backup",
        "--db",
        s(&db_a),
        "--out",
        s(&archive),
        "--passphrase-file",
        s(&pf),
    ]);
    assert!(out.contains("schema"), "{out}");
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "archive mode");
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["a", "pass-28", "unit-a.fbk"],
        "no temporary file or folder is left"
    );
    let raw = std::fs::read(&archive).unwrap();
    assert!(raw.starts_with(b"FACEDBK1"));
    // Nothing of the database is readable in the archive.
    assert!(!raw.windows(15).any(|w| w == b"SQLite format 3"));

    let db_b = b.join("faced.db");
    let out = ok(&[
        "restore",
        s(&archive),
        "--db",
        s(&db_b),
        "--passphrase-file",
        s(&pf),
    ]);
    assert!(
        out.contains("3 people, 6 face samples") && out.contains("restored into"),
        "{out}"
    );
    let key_mode = std::fs::metadata(b.join("faced.db.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    let (ia, ib) = (identify(&db_a, &photos), identify(&db_b, &photos));
    assert!(ia.matches("\"person\":\"").count() >= 3, "{ia}");
    assert_eq!(ia, ib, "identification differs after restore");
    assert_eq!(
        ok(&["people", "--db", s(&db_a), "list"]),
        ok(&["people", "--db", s(&db_b), "list"])
    );
}

/// A wrong passphrase, a truncated archive, a flipped byte, a foreign file and an archive made
/// by a newer faced: each refused with its own message and exit status, and the unit's files
/// are byte for byte what they were.
#[test]
fn bad_archives_are_refused_and_change_nothing() {
    let _turn = crate::util::beside_others();
    let tmp = tempfile::tempdir().unwrap();
    let unit = tmp.path().join("unit");
    std::fs::create_dir_all(&unit).unwrap();
    let db = unit.join("faced.db");
    let first = &photos_by_person().into_iter().next().unwrap();
    ok(&[
        "enroll",
        "--db",
        s(&db),
        "--name",
        &first.0,
        s(&faces_dir().join(&first.1[0])),
    ]);
    let pf = pass_file(tmp.path(), PASS);
    let archive = tmp.path().join("good.fbk");
    ok(&[
        "backup",
        "--db",
        s(&db),
        "--out",
        s(&archive),
        "--passphrase-file",
        s(&pf),
    ]);
    let good = std::fs::read(&archive).unwrap();
    // A newer faced's backup: the same database with a schema version this faced does not know.
    let newer_db = tmp.path().join("newer.db");
    std::fs::copy(&db, &newer_db).unwrap();
    std::fs::copy(unit.join("faced.db.key"), tmp.path().join("newer.db.key")).unwrap();
    {
        let c = rusqlite::Connection::open(&newer_db).unwrap();
        c.execute(
            "INSERT INTO schema_version (version, applied_at, how) VALUES (999, 0, 'future')",
            [],
        )
        .unwrap();
    }
    let newer = tmp.path().join("newer.fbk");
    ok(&[
        "backup",
        "--db",
        s(&newer_db),
        "--out",
        s(&newer),
        "--passphrase-file",
        s(&pf),
    ]);
    let mut flipped = good.clone();
    let i = good.len() / 2;
    flipped[i] ^= 0x01;
    // (what, archive, passphrase if not the right one, exit status, message)
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, i32, &'a str);
    let cases: Vec<Case> = vec![
        (
            "wrong passphrase",
            good.clone(),
            Some("not the passphrase"),
            2,
            "wrong passphrase",
        ),
        (
            "truncated",
            good[..good.len() - 100].to_vec(),
            None,
            2,
            "truncated",
        ),
        (
            "cut after the header",
            good[..200].to_vec(),
            None,
            2,
            "truncated",
        ),
        ("flipped byte", flipped, None, 2, "altered"),
        (
            "a zip",
            b"PK\x03\x04 not an archive".to_vec(),
            None,
            2,
            "old unencrypted backup zip",
        ),
        (
            "a photo",
            std::fs::read(faces_dir().join("img1.jpg")).unwrap(),
            None,
            2,
            "not a faced backup",
        ),
        (
            "newer schema",
            std::fs::read(&newer).unwrap(),
            None,
            3,
            "newer than this faced",
        ),
    ];
    let before = snapshot(&unit);
    for (what, bytes, pass, code, needle) in cases {
        let f = tmp.path().join("bad.fbk");
        std::fs::write(&f, &bytes).unwrap();
        let pf = pass.map_or(pf.clone(), |p| pass_file(tmp.path(), p));
        let o = faced(&[
            "restore",
            s(&f),
            "--db",
            s(&db),
            "--passphrase-file",
            s(&pf),
        ]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(code), "{what}: {t}");
        assert!(t.contains(needle), "{what}: expected {needle:?} in: {t}");
        assert!(
            t.contains("nothing was changed") || code == 3 || what.starts_with('a'),
            "{what}: {t}"
        );
        assert_eq!(snapshot(&unit), before, "{what}: the unit's files changed");
    }
    // A short passphrase is refused before anything is read.
    let short = pass_file(tmp.path(), "2short");
    let o = faced(&[
        "backup",
        "--db",
        s(&db),
        "--out",
        s(&tmp.path().join("x.fbk")),
        "--passphrase-file",
        s(&short),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("at least 10"), "{}", text(&o));
}

fn free_listen() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

async fn people(c: &Client) -> Vec<String> {
    let v: Value = c.get("/api/people").await.json().await.unwrap();
    let mut names: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| v["people"].as_array().unwrap())
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The console round trip on the running daemon: download an encrypted backup, remove a
/// person, upload the backup with a wrong passphrase (400, nothing changes), then with the right
/// one: the daemon restarts in place (same PID), applies it, and the person is back, with the
/// replaced database kept. `faced restore` while the daemon runs stages instead of swapping the
/// files under it, and the daemon's next start applies it.
/// Adds the console admin `root` with the test password, through `faced user add`.
fn add_admin(db: &Path) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_faced"))
        .args(["user", "--db", s(db), "add", "--admin", "root"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
}

/// Every restore attempt runs the archive's key stretching, so attempts count against the
/// sign-in limits: with 3 a minute, a sign-in and two refused uploads use them up, and the next
/// upload is answered 429 before its body is read. The gallery is untouched throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_attempts_are_rate_limited_like_sign_ins() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("faced.db");
    tokio::task::block_in_place(|| add_admin(&db));
    let listen = free_listen();
    let env = [
        ("FACED_GALLERY__DB", s(&db)),
        ("FACED_WEB__ENABLED", "true"),
        ("FACED_WEB__LISTEN", listen.as_str()),
        ("FACED_WEB__LOGIN_ATTEMPTS_PER_MINUTE", "3"),
    ];
    let d = Daemon::start(&["--source", "v4l2:/dev/video99"], &env);
    tokio::task::block_in_place(|| {
        d.wait_for(&["web console listening"], Duration::from_secs(180))
    });
    let mut admin = Client::new(&format!("http://{listen}"));
    admin.login("root", PASSWORD).await;
    let form = || {
        reqwest::multipart::Form::new()
            .text("passphrase", PASS.to_string())
            .part(
                "archive",
                reqwest::multipart::Part::bytes(b"FACEDBK1 not an archive".to_vec())
                    .file_name("unit.fbk"),
            )
    };
    let mut statuses = Vec::new();
    let mut last = String::new();
    for _ in 0..3 {
        let r = admin
            .req(reqwest::Method::POST, "/api/restore")
            .multipart(form())
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        last = r.text().await.unwrap();
    }
    assert_eq!(statuses, [400, 400, 429], "{last}");
    assert!(last.contains("too many restore attempts"), "{last}");
    assert!(people(&admin).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_restore_restarts_the_daemon_with_the_backup() {
    let _heavy = crate::util::alone_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("faced.db");
    let _ = tokio::task::block_in_place(|| enroll_three(&db));
    tokio::task::block_in_place(|| add_admin(&db));
    let listen = free_listen();
    let env = [
        ("FACED_GALLERY__DB", s(&db)),
        ("FACED_WEB__ENABLED", "true"),
        ("FACED_WEB__LISTEN", listen.as_str()),
        ("FACED_LOG", "info"),
    ];
    let mut d = Daemon::start(&["--source", "v4l2:/dev/video99"], &env);
    let pid = d.child.id();
    tokio::task::block_in_place(|| {
        d.wait_for(&["web console listening"], Duration::from_secs(180))
    });
    let base = format!("http://{listen}");
    let mut admin = Client::new(&base);
    admin.login("root", PASSWORD).await;
    let all = people(&admin).await;
    assert_eq!(all.len(), 3, "{all:?}");

    let r = admin
        .post_json("/api/backup", &json!({"passphrase": PASS}))
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".fbk")
    );
    let archive = r.bytes().await.unwrap().to_vec();

    // Remove one person, then restore.
    let list: Value = admin.get("/api/people").await.json().await.unwrap();
    let arr = list
        .as_array()
        .unwrap_or_else(|| list["people"].as_array().unwrap())
        .clone();
    let id = arr[0]["id"].as_i64().unwrap();
    let del = admin
        .req(reqwest::Method::DELETE, &format!("/api/people/{id}"))
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success(), "{}", del.status());
    assert_eq!(people(&admin).await.len(), 2);

    let form = |pass: &str| {
        reqwest::multipart::Form::new()
            .text("passphrase", pass.to_string())
            .part(
                "archive",
                reqwest::multipart::Part::bytes(archive.clone()).file_name("unit.fbk"),
            )
    };
    let bad = admin
        .req(reqwest::Method::POST, "/api/restore")
        .multipart(form("not the passphrase"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wrong passphrase"),
        "{body}"
    );
    assert_eq!(
        people(&admin).await.len(),
        2,
        "a refused restore changed the gallery"
    );
    let leftovers: Vec<String> = snapshot(tmp.path())
        .into_keys()
        .filter(|n| n.contains("restore"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let good = admin
        .req(reqwest::Method::POST, "/api/restore")
        .multipart(form(PASS))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    let body: Value = good.json().await.unwrap();
    assert_eq!(
        (body["people"].as_i64(), body["restarting"].as_bool()),
        (Some(3), Some(true)),
        "{body}"
    );
    tokio::task::block_in_place(|| {
        d.wait_for(
            &["restored the database from a backup"],
            Duration::from_secs(60),
        );
        // The second start's console.
        let t = std::time::Instant::now();
        while d.count("web console listening") < 2 {
            assert!(t.elapsed() < Duration::from_secs(180), "no restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert_eq!(d.child.id(), pid);
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon exited instead of restarting"
    );
    let mut admin = Client::new(&base);
    admin.login("root", PASSWORD).await;
    assert_eq!(
        people(&admin).await,
        all,
        "the restore did not bring the person back"
    );
    assert!(tmp.path().join("faced.db.before-restore").exists());

    // The CLI while the daemon runs: staged, and applied by the next start.
    let pf = pass_file(tmp.path(), PASS);
    let f = tmp.path().join("cli.fbk");
    std::fs::write(&f, &archive).unwrap();
    let out = tokio::task::block_in_place(|| {
        ok(&[
            "restore",
            s(&f),
            "--db",
            s(&db),
            "--passphrase-file",
            s(&pf),
        ])
    });
    assert!(
        out.contains("faced is running") && out.contains("staged"),
        "{out}"
    );
    assert!(tmp.path().join("faced.db.restore").exists());
    d.signal(libc::SIGTERM);
    assert_eq!(
        tokio::task::block_in_place(|| d.wait(Duration::from_secs(60))),
        Some(0)
    );
    let d2 = Daemon::start(&["--source", "v4l2:/dev/video99"], &env);
    tokio::task::block_in_place(|| {
        d2.wait_for(
            &["restored the database from a backup"],
            Duration::from_secs(180),
        )
    });
    assert!(!tmp.path().join("faced.db.restore").exists());
    drop(d2);
}

/// `[backup]`: the daemon writes an archive every `every_hours`, keeps `keep` of them, and each
/// restores with the passphrase from `passphrase_file`.
#[test]
fn scheduled_backups_rotate_and_restore() {
    let _heavy = crate::util::alone();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("faced.db");
    enroll_three(&db);
    let folder = tmp.path().join("backups");
    let pf = pass_file(tmp.path(), PASS);
    // Every ~1.4 s.
    let d = Daemon::start(
        &["--source", "v4l2:/dev/video99"],
        &[
            ("FACED_GALLERY__DB", s(&db)),
            ("FACED_BACKUP__FOLDER", s(&folder)),
            ("FACED_BACKUP__PASSPHRASE_FILE", s(&pf)),
            ("FACED_BACKUP__EVERY_HOURS", "0.0004"),
            ("FACED_BACKUP__KEEP", "2"),
            ("FACED_DEVICE__ID", "door"),
        ],
    );
    let t = std::time::Instant::now();
    while d.count("scheduled backup written") < 4 {
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "{}",
            d.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(d);
    let kept: Vec<PathBuf> = faced::db::backup::list(&folder).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let mode = std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "backup folder mode");
    for k in &kept {
        let name = k.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("faced-backup-door-"), "{name}");
    }
    let restored = tmp.path().join("restored").join("faced.db");
    let out = ok(&[
        "restore",
        s(kept.last().unwrap()),
        "--db",
        s(&restored),
        "--passphrase-file",
        s(&pf),
    ]);
    assert!(out.contains("3 people"), "{out}");
}
