//! The audit trail through the real `faced run` and CLI: each change and sensitive read leaves
//! one row naming its actor and address, the console shows and exports them to admins only,
//! each row reaches the log, and `faced audit verify` passes on the daemon's database and names
//! the row someone edited with SQLite afterwards.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::daemon::{Daemon, faces_dir, photos_by_person};
use crate::util::web::{Client, PASSWORD, fixture};
use serde_json::{Value, json};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn faced(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut c = Command::new(env!("CARGO_BIN_EXE_faced"))
        .args(args)
        .env_remove("FACED_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = c.stdin.take().unwrap().write_all(stdin.as_bytes());
    c.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `faced audit verify` on `db`: its exit code and output.
fn verify(db: &Path) -> (Option<i32>, String) {
    let o = faced(&["audit", "--db", s(db), "verify"], "");
    (o.status.code(), text(&o))
}

/// Rows of `faced audit list --json` on `db`, newest first.
fn cli_rows(db: &Path) -> Vec<Value> {
    let o = faced(
        &["audit", "--db", s(db), "list", "--json", "--limit", "500"],
        "",
    );
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The one row of `rows` with `action` (panics unless there is exactly one).
fn one<'a>(rows: &'a [Value], action: &str) -> &'a Value {
    let found: Vec<&Value> = rows.iter().filter(|r| r["action"] == action).collect();
    assert_eq!(found.len(), 1, "{action} in {rows:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_changes_sign_ins_and_backups_are_audited_and_verified() {
    let _heavy = crate::util::alone_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("faced.db");
    let pw = format!("{PASSWORD}\n");
    for (name, admin) in [("root", true), ("watcher", false)] {
        let mut args = vec!["user", "--db", s(&db), "add", name];
        if admin {
            args.push("--admin");
        }
        let o = tokio::task::block_in_place(|| faced(&args, &pw));
        assert!(o.status.success(), "{}", text(&o));
    }
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let env = [
        ("FACED_GALLERY__DB", s(&db)),
        ("FACED_WEB__ENABLED", "true"),
        ("FACED_WEB__LISTEN", listen.as_str()),
        ("FACED_LOG", "info"),
    ];
    let mut d = Daemon::start(&["--source", "v4l2:/dev/video99"], &env);
    tokio::task::block_in_place(|| {
        d.wait_for(&["web console listening"], Duration::from_secs(180))
    });
    let base = format!("http://{listen}");

    // Failed sign-ins (a wrong password; a password typed as the name), then the admin's.
    let anon = Client::new(&base);
    for name in ["root", "Hunter2-Secret"] {
        let r = anon
            .post_json(
                "/api/login",
                &json!({"name": name, "password": "not the password"}),
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    let mut admin = Client::new(&base);
    admin.login("root", PASSWORD).await;

    // Enroll, rename, erase through the console.
    let photo = std::fs::read(fixture("img1.jpg")).unwrap();
    let up: Value = admin
        .upload("/api/uploads", &[("img1.jpg", photo)])
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = up["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    let r = admin
        .post_json(
            "/api/people",
            &json!({"name": "Eve Erasable", "samples": ids}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let eve = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let r = admin
        .req(reqwest::Method::PATCH, &format!("/api/people/{eve}"))
        .json(&json!({"name": "Eve Renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = admin
        .req(reqwest::Method::DELETE, &format!("/api/people/{eve}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A backup download (a sensitive read), and a threshold change by an API token.
    let r = admin
        .post_json(
            "/api/backup",
            &json!({"passphrase": "correct horse battery"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let token: Value = admin
        .post_json("/api/tokens", &json!({"label": "nightly script"}))
        .await
        .json()
        .await
        .unwrap();
    let mut script = Client::new(&base);
    script.bearer = token["token"].as_str().map(String::from);
    let cams: Value = script.get("/api/cameras").await.json().await.unwrap();
    let cam = cams[0]["name"].as_str().unwrap().to_string();
    let r = script
        .req(
            reqwest::Method::PUT,
            &format!("/api/cameras/{cam}/threshold"),
        )
        .json(&json!({"threshold": 0.6}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // A viewer may not read the trail.
    let mut viewer = Client::new(&base);
    viewer.login("watcher", PASSWORD).await;
    for path in ["/api/audit", "/api/audit.csv"] {
        assert_eq!(viewer.get(path).await.status(), 403, "{path}");
    }

    // The trail, as the admin sees it.
    let rows: Vec<Value> = admin
        .get("/api/audit?limit=500")
        .await
        .json()
        .await
        .unwrap();
    let failed: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r["action"] == "sign_in_failed")
        .map(|r| {
            let f = |k: &str| r[k].as_str().unwrap();
            (f("actor"), f("origin"), f("detail"))
        })
        .collect();
    assert_eq!(
        failed,
        [
            ("(unknown)", "127.0.0.1", "no such user"),
            ("root", "127.0.0.1", "wrong password")
        ]
    );
    for action in [
        "enroll",
        "rename",
        "erase",
        "backup_download",
        "token_created",
    ] {
        let r = one(&rows, action);
        assert_eq!(
            (
                r["actor_kind"].as_str(),
                r["actor"].as_str(),
                r["origin"].as_str()
            ),
            (Some("user"), Some("root"), Some("127.0.0.1")),
            "{r}"
        );
    }
    assert!(
        rows.iter()
            .any(|r| r["action"] == "sign_in" && r["actor"] == "root")
    );
    for action in ["enroll", "rename", "erase"] {
        let r = one(&rows, action);
        assert_eq!(r["subject_kind"], "person");
        assert_eq!(r["subject_id"], eve.to_string());
        assert_eq!(r["subject_name"], Value::Null, "erased: {r}");
    }
    assert_eq!(one(&rows, "erase")["detail"], "1 sample, 0 events");
    let t = one(&rows, "threshold");
    assert_eq!(t["actor_kind"], "token");
    let id = token["info"]["id"].as_i64().unwrap();
    assert_eq!(t["actor"], format!("nightly script (token {id} of root)"));
    assert_eq!(
        (&t["subject_id"], &t["detail"]),
        (&json!(cam), &json!("threshold 0.6"))
    );
    let added: Vec<&Value> = rows
        .iter()
        .filter(|r| r["action"] == "user_added")
        .collect();
    assert_eq!(added.len(), 2, "{added:#?}");
    assert!(added.iter().all(|r| r["actor_kind"] == "cli"), "{added:#?}");
    assert!(
        rows.iter().all(|r| r["actor"] != "unattributed"),
        "every write names its caller: {rows:#?}"
    );
    let names = serde_json::to_string(&rows).unwrap();
    assert!(!names.contains("Eve "), "an erased name is gone: {names}");
    assert!(
        !names.contains("Hunter2"),
        "a name that is no user's is not kept"
    );

    // The CSV has the same rows.
    let csv = admin.get("/api/audit.csv").await.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "id,time_utc,ts_ms,actor_kind,actor,origin,action,subject_kind,subject_id,subject_name,detail"
        )
    );
    let body: Vec<&str> = lines.collect();
    assert_eq!(body.len(), rows.len(), "{csv}");
    assert!(
        body.iter()
            .any(|l| l.contains(",user,root,127.0.0.1,erase,person,"))
    );
    assert!(
        body.iter()
            .any(|l| l.contains(",backup_download,database,"))
    );

    // Each row reached the log, without the subject's name.
    let line = tokio::task::block_in_place(|| {
        d.wait_for(
            &["audit ", "user root from 127.0.0.1: erase person"],
            Duration::from_secs(5),
        )
    });
    assert!(line.contains("1 sample, 0 events"), "{line}");
    let named = d
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("audit ") && l.contains("Eve "))
        .count();
    assert_eq!(named, 0, "audit log lines name subjects by id only");

    // The chain checks out on the live database, and names a row edited with SQLite.
    let (code, out) = tokio::task::block_in_place(|| verify(&db));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("the chain is whole"), "{out}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(60)), Some(0));
    let erase = one(&rows, "erase")["id"].as_i64().unwrap();
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("DROP TRIGGER audit_append_only").unwrap();
        c.execute("UPDATE audit SET actor = 'watcher' WHERE id = ?1", [erase])
            .unwrap();
    }
    let (code, out) = tokio::task::block_in_place(|| verify(&db));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("audit row {erase}: was altered")),
        "{out}"
    );
}

/// A `faced` command records the Unix user who ran it; an erase with `faced people` clears the
/// person's name from the trail and the chain still verifies.
#[test]
fn cli_changes_record_the_unix_user() {
    let _heavy = crate::util::beside_others();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("faced.db");
    let (person, files) = photos_by_person().into_iter().next().unwrap();
    let photo = faces_dir().join(&files[0]);
    let o = faced(
        &["enroll", "--db", s(&db), "--name", &person, s(&photo)],
        "",
    );
    assert!(o.status.success(), "{}", text(&o));
    let rows = cli_rows(&db);
    let enroll = one(&rows, "enroll");
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    assert_eq!(enroll["actor_kind"], "cli");
    assert_eq!(enroll["origin"], "cli");
    let actor = enroll["actor"].as_str().unwrap();
    let name = Command::new("id").arg("-un").output().unwrap();
    let name = String::from_utf8(name.stdout).unwrap();
    assert_eq!(actor, format!("{} (uid {uid})", name.trim()));
    assert_eq!(enroll["subject_name"], person.as_str());
    assert_eq!(enroll["detail"], "1 sample");

    let o = faced(&["people", "--db", s(&db), "remove", &person], "");
    assert!(o.status.success(), "{}", text(&o));
    let rows = cli_rows(&db);
    assert_eq!(one(&rows, "erase")["actor"], actor);
    assert!(
        rows.iter().all(|r| r["subject_name"].is_null()),
        "{rows:#?}"
    );
    let (code, out) = verify(&db);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 subject names erased"), "{out}");
    // The CSV export (itself recorded) from the CLI.
    let o = faced(&["audit", "--db", s(&db), "export", "--csv"], "");
    assert!(o.status.success(), "{}", text(&o));
    let csv = String::from_utf8(o.stdout).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert_eq!(
        one(&cli_rows(&db), "audit_export")["detail"],
        "2 rows as CSV"
    );
}
