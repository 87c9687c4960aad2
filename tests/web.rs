//! Console API against the real server on 127.0.0.1 and a real SQLite file:
//! setup link, sign-in, roles on every route, CSRF, rate limit, security headers, bad input,
//! enroll → identify, "this is not NAME", privacy erase, reports and CSV.

use crate::util::daemon as daemon_util;
use crate::util::web as web_util;

use std::io::Write;

use faced::events::EventKind;
use faced::web::live::LiveSource;
use faced::web::{Access, WebConfig};
use reqwest::Method;
use serde_json::{Value, json};
use web_util::{Client, PASSWORD, TestServer, aligned_crop_jpeg, fixture, insert_event};

fn concrete(path: &str) -> String {
    path.replace("{id}", "1").replace("{camera}", "front")
}

async fn error_of(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let v: Value = res.json().await.expect("JSON error body");
    (
        status,
        v["error"]["code"].as_str().unwrap().to_string(),
        v["error"]["message"].as_str().unwrap().to_string(),
    )
}

/// Every route in the table: anonymous callers get 401 and viewers 403 on admin routes, and
/// only the pinned list of routes is public. A new route cannot skip the check: it is declared
/// with its access in `web::routes`, and a new public route fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_anonymous_and_viewer_callers() {
    let srv = TestServer::start(true, WebConfig::default()).await;
    let anon = Client::new(&srv.base);
    let viewer = srv.client("viewer").await;
    let table = faced::web::route_table();
    assert!(table.len() > 30);
    let public: Vec<(Method, &str)> = table
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| (r.method.clone(), r.path))
        .collect();
    assert_eq!(
        public,
        vec![
            (Method::GET, "/api/status"),
            (Method::POST, "/api/setup"),
            (Method::POST, "/api/login")
        ],
        "public routes changed: justify it and update this list"
    );
    for r in &table {
        let path = concrete(r.path);
        if r.access != Access::Public {
            let res = anon
                .req(r.method.clone(), &path)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let (status, code, _) = error_of(res).await;
            assert_eq!(
                (status, code.as_str()),
                (401, "unauthenticated"),
                "anonymous {} {}",
                r.method,
                r.path
            );
        }
        if r.access == Access::Admin {
            let res = viewer
                .req(r.method.clone(), &path)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let (status, code, msg) = error_of(res).await;
            assert_eq!(
                (status, code.as_str()),
                (403, "permission_denied"),
                "viewer {} {}",
                r.method,
                r.path
            );
            assert!(msg.contains("admin role"), "{msg}");
        }
    }
    // A viewer may use the viewer routes.
    for path in [
        "/api/me",
        "/api/events",
        "/api/reports",
        "/api/system",
        "/api/cameras",
    ] {
        assert_eq!(viewer.get(path).await.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_link_sessions_csrf_tokens_rate_limit_and_headers() {
    let cfg = WebConfig {
        login_attempts_per_minute: 7,
        ..WebConfig::default()
    };
    let srv = TestServer::start(false, cfg).await;
    let anon = Client::new(&srv.base);
    let status: Value = anon.get("/api/status").await.json().await.unwrap();
    assert_eq!(status["setup_required"], true);
    let link = srv
        .state
        .setup_link()
        .expect("a setup link while there are no users");
    let token = link.split("#setup=").nth(1).unwrap().to_string();

    // Wrong token refused; the right one creates the admin and signs in.
    let res = anon
        .post_json(
            "/api/setup",
            &json!({"token": "nope", "name": "root", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = anon
        .post_json(
            "/api/setup",
            &json!({"token": token, "name": "root", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let mut admin = Client::new(&srv.base);
    admin.take_session(res).await;
    assert!(
        srv.state.setup_link().is_none(),
        "the setup link is one-time"
    );
    let res = anon
        .post_json(
            "/api/setup",
            &json!({"token": token, "name": "x", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 409);

    // CSRF: the same session without the header is refused, with a wrong one too.
    let body = json!({"name": "Alice"});
    let mut no_csrf = Client::new(&srv.base);
    no_csrf.cookie = admin.cookie.clone();
    let (status, _, msg) = error_of(no_csrf.post_json("/api/people", &body).await).await;
    assert_eq!(status, 403);
    assert!(msg.contains("X-CSRF-Token"), "{msg}");
    no_csrf.csrf = Some("forged".into());
    assert_eq!(no_csrf.post_json("/api/people", &body).await.status(), 403);
    assert_eq!(srv.rows("SELECT COUNT(*) FROM person"), 0);
    assert_eq!(admin.post_json("/api/people", &body).await.status(), 201);

    // API token: Bearer works for scripts without CSRF; only its hash is stored.
    let res = admin
        .post_json("/api/tokens", &json!({"label": "backup script"}))
        .await;
    assert_eq!(res.status(), 201);
    let tok: Value = res.json().await.unwrap();
    let secret = tok["token"].as_str().unwrap().to_string();
    let mut script = Client::new(&srv.base);
    script.bearer = Some(secret.clone());
    assert_eq!(script.get("/api/people").await.status(), 200);
    assert_eq!(
        script
            .post_json("/api/people", &json!({"name": "Bob"}))
            .await
            .status(),
        201
    );
    let conn = rusqlite::Connection::open(&srv.db).unwrap();
    let stored: Vec<u8> = conn
        .query_row("SELECT token_hash FROM web_api_token", [], |r| r.get(0))
        .unwrap();
    assert_ne!(stored, secret.as_bytes());
    script.bearer = Some("faced_wrong".into());
    assert_eq!(script.get("/api/people").await.status(), 401);

    // Logout ends the session server-side.
    assert_eq!(
        admin.post_json("/api/logout", &json!({})).await.status(),
        200
    );
    assert_eq!(admin.get("/api/me").await.status(), 401);

    // Login rate limit per client IP: 7 attempts a minute (3 were setups), then 429 even with the
    // right password.
    let mut c = Client::new(&srv.base);
    for _ in 0..2 {
        let r = c
            .post_json(
                "/api/login",
                &json!({"name": "root", "password": "wrong password!"}),
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    let r = c
        .post_json(
            "/api/login",
            &json!({"name": "nobody", "password": "wrong password!"}),
        )
        .await;
    assert_eq!(r.status(), 401);
    c.login("root", PASSWORD).await;
    let (status, code, msg) = error_of(
        c.post_json("/api/login", &json!({"name": "root", "password": PASSWORD}))
            .await,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (429, "resource_exhausted"),
        "{msg}"
    );

    // Security headers on pages and API.
    for path in ["/", "/api/status", "/app.js"] {
        let r = anon.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
    }
    // Static files revalidate with an ETag.
    let r = anon.get("/app.js").await;
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let r = anon
        .req(Method::GET, "/app.js")
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_json_errors_never_500() {
    let cfg = WebConfig {
        max_upload_bytes: 300 * 1024,
        max_upload_photos: 3,
        ..WebConfig::default()
    };
    let srv = TestServer::start(true, cfg).await;
    let admin = srv.client("admin").await;

    let malformed = admin
        .req(Method::POST, "/api/people")
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(malformed).await;
    assert_eq!((status, code.as_str()), (400, "invalid_input"));

    let wrong_type = admin
        .req(Method::POST, "/api/people")
        .body("name=Alice")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(wrong_type).await.0, 415);

    let wrong_field = admin.post_json("/api/people", &json!({"name": 5})).await;
    assert_eq!(error_of(wrong_field).await.0, 400);
    let unknown_field = admin
        .post_json("/api/people", &json!({"name": "A", "admin": true}))
        .await;
    assert_eq!(error_of(unknown_field).await.0, 400);
    let empty_name = admin.post_json("/api/people", &json!({"name": "  "})).await;
    assert_eq!(error_of(empty_name).await.0, 400);

    let huge = json!({"name": "x".repeat(100 * 1024)});
    let (status, code, _) = error_of(admin.post_json("/api/people", &huge).await).await;
    assert_eq!((status, code.as_str()), (413, "resource_exhausted"));

    let bad_id = admin.get("/api/people/abc/samples").await;
    assert_eq!(error_of(bad_id).await.0, 400);
    let missing = admin.get("/api/people/999/samples").await;
    assert_eq!(error_of(missing).await.0, 404);
    let no_route = admin.get("/api/nope").await;
    assert_eq!(error_of(no_route).await.0, 404);
    let bad_query = admin.get("/api/events?limit=abc").await;
    assert_eq!(error_of(bad_query).await.0, 400);
    let bad_limit = admin.get("/api/events?limit=100000").await;
    assert_eq!(error_of(bad_limit).await.0, 400);

    // Uploads: over the request limit, too many photos in a zip, not an image, not multipart.
    let big = vec![0u8; 400 * 1024];
    let (status, _, _) = error_of(admin.upload("/api/uploads", &[("big.jpg", big)]).await).await;
    assert_eq!(status, 413);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let img = std::fs::read(fixture("img5.jpg")).unwrap();
    for i in 0..4 {
        zip.start_file(
            format!("p{i}.jpg"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(&img[..1000]).unwrap();
    }
    let zip = zip.finish().unwrap().into_inner();
    let (status, _, msg) = error_of(admin.upload("/api/uploads", &[("many.zip", zip)]).await).await;
    assert_eq!(status, 413, "{msg}");
    assert!(msg.contains("max_upload_photos"), "{msg}");
    let res = admin
        .upload("/api/uploads", &[("notes.jpg", b"not an image".to_vec())])
        .await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["samples"][0]["verdict"], "unreadable");
    let res = admin.post_json("/api/uploads", &json!({})).await;
    assert_eq!(error_of(res).await.0, 400);

    // Threshold out of range; unknown camera.
    let r = admin
        .req(Method::PUT, "/api/cameras/front/threshold")
        .json(&json!({"threshold": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 400);
    let r = admin
        .req(Method::PUT, "/api/cameras/back/threshold")
        .json(&json!({"threshold": 0.6}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 404);
    let r = admin
        .req(Method::PUT, "/api/cameras/front/threshold")
        .json(&json!({"threshold": 0.6}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(srv.live.stats()[0].threshold, 0.6);
}

/// Upload photos of person01 (files and a zip) → quality verdicts → enroll "Alice" → identify
/// another photo of her → an event of her appears → "this is not Alice" → the same face no
/// longer identifies as Alice → erase Alice → no person, sample or event rows left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_identify_not_person_and_privacy_erase() {
    let srv = TestServer::start(true, WebConfig::default()).await;
    let admin = srv.client("admin").await;
    let read = |n: &str| std::fs::read(fixture(n)).unwrap();

    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for n in ["img4.jpg", "img6.jpg"] {
        zip.start_file(
            format!("alice/{n}"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(&read(n)).unwrap();
    }
    let zip = zip.finish().unwrap().into_inner();
    let res = admin
        .upload(
            "/api/uploads",
            &[
                ("img1.jpg", read("img1.jpg")),
                ("img2.jpg", read("img2.jpg")),
                ("alice.zip", zip),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    let up: Value = res.json().await.unwrap();
    let samples = up["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4, "{up}");
    for s in samples {
        assert_eq!(s["verdict"], "ok", "{s}");
        assert!(s["quality"]["size_px"].as_f64().unwrap() > 40.0);
    }
    let crop = admin
        .get(&format!(
            "/api/uploads/{}/crop",
            samples[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(crop.headers()["content-type"], "image/jpeg");
    let ids: Vec<&str> = samples.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let res = admin
        .post_json("/api/people", &json!({"name": "Alice", "samples": ids}))
        .await;
    assert_eq!(res.status(), 201);
    let alice = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let people: Value = admin.get("/api/people").await.json().await.unwrap();
    assert_eq!(people[0]["name"], "Alice");
    assert_eq!(people[0]["positive_samples"], 4);
    assert_eq!(
        admin
            .get(&format!("/api/people/{alice}/thumbnail"))
            .await
            .status(),
        200
    );

    // Identify a photo of her that was not enrolled, and one of someone else.
    let who = |v: &Value| v["faces"][0]["best"]["name"].as_str().map(String::from);
    let id5: Value = admin
        .upload("/api/identify", &[("img5.jpg", read("img5.jpg"))])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who(&id5).as_deref(), Some("Alice"), "{id5}");
    let other: Value = admin
        .upload("/api/identify", &[("img8.jpg", read("img8.jpg"))])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who(&other), None, "{other}");

    // The daemon records a (wrong, say) recognition of img5's face as Alice.
    let snap = aligned_crop_jpeg("img5.jpg");
    let ev = insert_event(
        &srv.db,
        &srv.key_path(),
        EventKind::Recognized,
        Some((alice, "Alice")),
        Some(0.7),
        Some(snap),
    );
    let unknown_ev = insert_event(
        &srv.db,
        &srv.key_path(),
        EventKind::Unknown,
        None,
        Some(0.2),
        Some(aligned_crop_jpeg("img8.jpg")),
    );
    let viewer = srv.client("viewer").await;
    let list: Value = viewer
        .get(&format!("/api/events?person_id={alice}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], ev);
    assert_eq!(list[0]["person"], "Alice");
    let unknown: Value = viewer
        .get("/api/events?unknown=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unknown[0]["id"], unknown_ev);
    let snap = viewer.get(&format!("/api/events/{ev}/snapshot")).await;
    assert_eq!(snap.headers()["content-type"], "image/jpeg");
    // The one rule for strangers' faces: a viewer sees the unknown event's row, not the face,
    // and cannot follow one stranger's events; an admin can.
    let (status, code, msg) = error_of(
        viewer
            .get(&format!("/api/events/{unknown_ev}/snapshot"))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "permission_denied"), "{msg}");
    assert!(
        msg.contains("strangers' faces are for admins only"),
        "{msg}"
    );
    for path in ["/api/events?visitor_id=1", "/api/events.csv?visitor_id=1"] {
        assert_eq!(viewer.get(path).await.status(), 403, "{path}");
        assert_eq!(admin.get(path).await.status(), 200, "{path}");
    }
    let snap = admin
        .get(&format!("/api/events/{unknown_ev}/snapshot"))
        .await;
    assert_eq!(snap.headers()["content-type"], "image/jpeg");

    // "This is not Alice": stored as a negative sample; the same face no longer matches her.
    let res = admin
        .post_json(&format!("/api/events/{ev}/not"), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let effect: Value = res.json().await.unwrap();
    assert_eq!(effect["before"]["name"], "Alice", "{effect}");
    assert_eq!(effect["still_matches"], false, "{effect}");
    assert_eq!(
        srv.rows("SELECT COUNT(*) FROM face_sample WHERE kind = 'negative'"),
        1
    );
    let again: Value = admin
        .upload("/api/identify", &[("img5.jpg", read("img5.jpg"))])
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(who(&again).as_deref(), Some("Alice"), "{again}");
    // A photo close to her enrolled ones still is Alice.
    let still: Value = admin
        .upload("/api/identify", &[("img1.jpg", read("img1.jpg"))])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who(&still).as_deref(), Some("Alice"), "{still}");

    // "Enroll this face as…" from the unknown event creates Bob.
    let res = admin
        .post_json(
            &format!("/api/events/{unknown_ev}/enroll"),
            &json!({"name": "Bob"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let bob: Value = res.json().await.unwrap();
    assert_eq!(bob["created_person"], true);

    // Reports and CSV.
    let rep: Value = viewer.get("/api/reports").await.json().await.unwrap();
    assert_eq!(rep["recognized"], 1);
    assert_eq!(rep["unknown"], 1);
    assert_eq!(rep["people"][0]["name"], "Alice");
    assert_eq!(rep["people"][0]["visits"], 1);
    let csv = viewer.get("/api/reports.csv?table=people").await;
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    assert!(
        text.starts_with("person_id,name,") && text.contains(",Alice,"),
        "{text}"
    );
    let ev_csv = viewer.get("/api/events.csv").await.text().await.unwrap();
    assert_eq!(ev_csv.lines().count(), 3, "{ev_csv}");

    // Privacy erase: every sample, crop and event of Alice goes.
    let del = admin
        .req(Method::DELETE, &format!("/api/people/{alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let gone: Value = del.json().await.unwrap();
    assert_eq!(gone["samples_removed"], 5);
    assert_eq!(gone["events_removed"], 1);
    assert_eq!(
        srv.rows(&format!("SELECT COUNT(*) FROM person WHERE id = {alice}")),
        0
    );
    assert_eq!(
        srv.rows(&format!(
            "SELECT COUNT(*) FROM face_sample WHERE person_id = {alice}"
        )),
        0
    );
    assert_eq!(
        srv.rows(&format!(
            "SELECT COUNT(*) FROM event WHERE person_id = {alice}"
        )),
        0
    );
    assert_eq!(
        srv.rows(&format!("SELECT COUNT(*) FROM event WHERE id = {ev}")),
        0
    );
    let again: Value = admin
        .upload("/api/identify", &[("img1.jpg", read("img1.jpg"))])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who(&again), None, "{again}");

    // Backup: an encrypted archive of the database copy and its key, refused with a short
    // passphrase, and readable with the right one.
    let (status, code, msg) = error_of(
        admin
            .post_json("/api/backup", &json!({"passphrase": "short"}))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_input"), "{msg}");
    let copy = decrypted_backup(&admin).await;
    assert!(copy.starts_with(b"SQLite format 3"));
}

/// Downloads a backup with the console and decrypts it the way a restore does: the database
/// copy inside.
async fn decrypted_backup(admin: &Client) -> Vec<u8> {
    let pass = "a long test passphrase";
    let b = admin
        .post_json("/api/backup", &json!({"passphrase": pass}))
        .await;
    assert_eq!(b.status(), 200);
    let bytes = b.bytes().await.unwrap();
    assert!(bytes.starts_with(faced::db::backup::MAGIC));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("restored.db");
    let pass = faced::db::backup::Passphrase::new(pass, "test").unwrap();
    faced::db::backup::stage(&bytes[..], &pass, &db).unwrap();
    std::fs::read(faced::db::backup::staged_paths(&db).0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_overlay_and_system() {
    let srv = TestServer::start(true, WebConfig::default()).await;
    let viewer = srv.client("viewer").await;
    let frame = viewer.get("/api/live/front/frame.jpg").await;
    assert_eq!(frame.bytes().await.unwrap(), srv.live.frame);
    let mut mjpeg = viewer.get("/api/live/front/mjpeg").await;
    assert!(
        mjpeg.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("multipart/x-mixed-replace")
    );
    let chunk = mjpeg.chunk().await.unwrap().unwrap();
    assert!(chunk.starts_with(b"--frame\r\nContent-Type: image/jpeg"));
    assert_eq!(viewer.get("/api/live/back/mjpeg").await.status(), 404);

    let mut sse = viewer.get("/api/live/overlay").await;
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let live = srv.live.clone();
    let emitter = tokio::spawn(async move {
        for i in 0..50 {
            live.emit(i, [10.0, 20.0, 110.0, 140.0], Some("Alice"), Some(0.8));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    let mut text = String::new();
    while !text.contains("\n\n") {
        text.push_str(std::str::from_utf8(&sse.chunk().await.unwrap().unwrap()).unwrap());
    }
    emitter.abort();
    assert!(
        text.contains("event: overlay") && text.contains("\"name\":\"Alice\""),
        "{text}"
    );

    let sys: Value = viewer.get("/api/system").await.json().await.unwrap();
    assert!(sys["db_bytes"].as_u64().unwrap() > 0);
    assert_eq!(sys["mqtt"]["connected"], true);
    assert_eq!(sys["cameras"][0]["name"], "front");
}

// ---------------------------------------------------------------------------------------------
// Accounts, sessions and inputs on a hostile LAN: sign-out from the CLI reaches the running
// daemon, one-time setup, bounded report ranges, session lifetime, CSRF storage, names.

// Tests below that run `faced run`, many PBKDF2 hashes or streams take turns, with each other and
// with the heavy tests of the other modules (`crate::util::alone_async`): the machine is shared
// and their time limits must stay meaningful.

use daemon_util::faced_cli_status as faced_cli;

/// `faced user --db DB ARGS`, password (if any) on standard input; panics on failure.
fn faced_user(db: &std::path::Path, args: &[&str], password: &str) -> String {
    let mut all = vec!["user", "--db", db.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, out) = faced_cli(&all, &format!("{password}\n"));
    assert!(ok, "faced {all:?} failed: {out}");
    out
}

/// Polls `GET path` until it answers `want`; returns how long that took, or `None` after
/// `secs` seconds.
async fn until_status(c: &Client, path: &str, want: u16, secs: u64) -> Option<std::time::Duration> {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(secs) {
        if c.get(path).await.status().as_u16() == want {
            return Some(t.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

/// `faced user passwd` and `faced user remove`, run from the CLI (another process) while the
/// user is signed in to the running `faced run`: the old session and the user's API token are
/// refused within seconds, and the removed admin can no longer create users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_password_change_and_removal_sign_out_of_the_running_daemon() {
    let _heavy = crate::util::alone_async().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("faced.db");
    faced_user(&db, &["add", "--admin", "root"], PASSWORD);
    faced_user(&db, &["add", "--admin", "eve"], PASSWORD);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    // No camera is needed: a missing one is retried in the background while the console runs.
    let d = daemon_util::Daemon::start(
        &["--source", "v4l2:/dev/video99"],
        &[
            ("FACED_GALLERY__DB", db.to_str().unwrap()),
            ("FACED_WEB__ENABLED", "true"),
            ("FACED_WEB__LISTEN", &listen),
            ("FACED_LOG", "info"),
        ],
    );
    tokio::task::block_in_place(|| {
        d.wait_for(
            &["web console listening"],
            std::time::Duration::from_secs(180),
        )
    });
    let base = format!("http://{listen}");

    let mut eve = Client::new(&base);
    eve.login("eve", PASSWORD).await;
    let tok: Value = eve
        .post_json("/api/tokens", &json!({"label": "eve's script"}))
        .await
        .json()
        .await
        .unwrap();
    let mut eve_script = Client::new(&base);
    eve_script.bearer = Some(tok["token"].as_str().unwrap().to_string());
    assert_eq!(eve.get("/api/me").await.status(), 200);
    assert_eq!(eve_script.get("/api/users").await.status(), 200);

    // `inference.precision = "auto"` (the default): on x86 the daemon runs the float models,
    // VNNI or not (int8 was measured no faster there), says so at start and on the System page.
    // The ARM choices are checked under QEMU with each board's cpuinfo (scripts/ci-aarch64).
    let sys: Value = eve.get("/api/system").await.json().await.unwrap();
    if cfg!(target_arch = "x86_64") {
        assert_eq!(sys["precision"], "float", "{sys}");
        assert!(
            sys["precision_reason"]
                .as_str()
                .unwrap()
                .starts_with("x86 CPU"),
            "{sys}"
        );
        tokio::task::block_in_place(|| {
            d.wait_for(
                &["models loaded (float models: x86 CPU"],
                std::time::Duration::from_secs(5),
            )
        });
    }

    // Password change from the CLI: session and token refused within seconds.
    let new_pw = "a brand new passphrase";
    let out = tokio::task::block_in_place(|| faced_user(&db, &["passwd", "eve"], new_pw));
    let took = until_status(&eve, "/api/me", 401, 5).await;
    assert!(
        took.is_some(),
        "the old session still works 5 s after `faced user passwd`"
    );
    assert!(out.contains("signed out 1 session"), "{out}");
    assert_eq!(eve_script.get("/api/users").await.status(), 401);
    eprintln!("session refused {took:?} after faced user passwd");
    let r = Client::new(&base)
        .post_json("/api/login", &json!({"name": "eve", "password": PASSWORD}))
        .await;
    assert_eq!(r.status(), 401, "the old password is refused");

    // Signed in again with the new password, then removed from the CLI.
    let mut eve = Client::new(&base);
    eve.login("eve", new_pw).await;
    assert_eq!(eve.get("/api/users").await.status(), 200);
    let out = tokio::task::block_in_place(|| faced_user(&db, &["remove", "eve"], ""));
    assert!(out.contains("removed user"), "{out}");
    let took = until_status(&eve, "/api/me", 401, 5).await;
    assert!(
        took.is_some(),
        "the removed user's session still works 5 s after `faced user remove`"
    );
    eprintln!("session refused {took:?} after faced user remove");
    let r = eve
        .post_json(
            "/api/users",
            &json!({"name": "mallory", "role": "admin", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 401);
    let list = tokio::task::block_in_place(|| faced_user(&db, &["list"], ""));
    let names: Vec<&str> = list.lines().filter_map(|l| l.split('\t').next()).collect();
    assert_eq!(names, vec!["root"], "{list}");
    drop(d);
}

/// 20 concurrent `POST /api/setup` with the valid one-time token: exactly one admin is created,
/// the others are told setup is done (409), and the link is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_setups_create_exactly_one_admin() {
    let _heavy = crate::util::alone_async().await;
    let cfg = WebConfig {
        login_attempts_per_minute: 1000,
        ..WebConfig::default()
    };
    let srv = TestServer::start(false, cfg).await;
    let link = srv.state.setup_link().unwrap();
    let token = link.split("#setup=").nth(1).unwrap().to_string();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = Client::new(&srv.base);
        let body = json!({"token": token, "name": format!("admin{i}"), "password": PASSWORD});
        tasks.push(tokio::spawn(async move {
            c.post_json("/api/setup", &body).await.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(
        srv.rows("SELECT COUNT(*) FROM web_user"),
        1,
        "statuses {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 409),
        "{statuses:?}"
    );
    assert!(srv.state.setup_link().is_none());
    let status: Value = Client::new(&srv.base)
        .get("/api/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["setup_required"], false);
}

/// Report and event queries with extreme numbers: a clear 400 (no overflow, no 500, no garbage
/// days), while a normal range still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_report_ranges_and_ids_get_clear_errors() {
    let srv = TestServer::start(true, WebConfig::default()).await;
    let admin = srv.client("admin").await;
    let (min, max) = (i64::MIN, i64::MAX);
    for q in [
        format!("since_ms={min}&until_ms={max}"),
        format!("until_ms={min}"),
        format!("since_ms={max}"),
        format!("since_ms=0&until_ms={max}"),
        "since_ms=0&until_ms=86400000".to_string(),
        format!(
            "since_ms={}&until_ms={}",
            1_000_000_000_000_i64, 1_900_000_000_000_i64
        ),
    ] {
        for path in ["/api/reports", "/api/reports.csv"] {
            let (status, code, msg) = error_of(admin.get(&format!("{path}?{q}")).await).await;
            assert_eq!(
                (status, code.as_str()),
                (400, "invalid_input"),
                "{path}?{q}: {msg}"
            );
            assert!(
                msg.contains("2000-01-01") || msg.contains("days"),
                "{path}?{q}: {msg}"
            );
        }
    }
    // A normal range: one bucket per calendar day.
    let now = faced::base::unix_ms(std::time::SystemTime::now());
    let week = 7 * 86_400_000;
    let r = admin
        .get(&format!(
            "/api/reports?since_ms={}&until_ms={now}",
            now - week
        ))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let days = v["days"].as_array().unwrap().len();
    assert!((7..=8).contains(&days), "{days} day buckets");
    assert_eq!(admin.get("/api/reports").await.status(), 200);
    // Event queries bind their numbers into SQL; extremes are just empty results.
    let r = admin
        .get(&format!(
            "/api/events?since_ms={min}&until_ms={max}&before_id={min}"
        ))
        .await;
    assert_eq!(r.status(), 200);
    // Path ids at the edge of i64: not found, never an overflow.
    let r = admin
        .post_json(&format!("/api/events/{max}/not"), &json!({}))
        .await;
    assert_eq!(error_of(r).await.0, 404);
}

/// The absolute session lifetime (web.session_max_hours) holds however busy the session is, and
/// the database never holds the session's CSRF token (nor its cookie secret): not in the
/// sessions table, not in the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lifetime_and_csrf_tokens_not_in_the_database() {
    let cfg = WebConfig {
        session_max_hours: 1,
        ..WebConfig::default()
    };
    let srv = TestServer::start(true, cfg).await;
    let admin = srv.client("admin").await;
    let csrf = admin.csrf.clone().unwrap();
    let secret = admin
        .cookie
        .clone()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    // The page gets the same token again after a reload.
    let me: Value = admin.get("/api/me").await.json().await.unwrap();
    assert_eq!(me["csrf"], csrf.as_str());
    assert_eq!(
        admin
            .post_json("/api/people", &json!({"name": "Alice"}))
            .await
            .status(),
        201
    );

    let conn = rusqlite::Connection::open(&srv.db).unwrap();
    let dump: Vec<u8> = {
        let mut st = conn.prepare("SELECT * FROM web_session").unwrap();
        let cols = st.column_count();
        let mut rows = st.query([]).unwrap();
        let mut out = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            for i in 0..cols {
                match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        out.extend_from_slice(t)
                    }
                    v => out.extend_from_slice(format!("{v:?}").as_bytes()),
                }
                out.push(b'|');
            }
        }
        out
    };
    assert!(!dump.is_empty());
    let holds =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        !holds(&dump, &csrf),
        "the CSRF token is stored in web_session"
    );
    assert!(
        !holds(&dump, &secret),
        "the cookie secret is stored in web_session"
    );
    let copy = decrypted_backup(&admin).await;
    assert!(copy.len() > 4096);
    assert!(
        !holds(&copy, &csrf) && !holds(&copy, &secret),
        "token in the backup"
    );

    // Busy but older than session_max_hours: refused and deleted.
    assert_eq!(admin.get("/api/me").await.status(), 200);
    conn.execute(
        "UPDATE web_session SET created_at = created_at - 3600 * 1000 - 1000",
        [],
    )
    .unwrap();
    let (status, code, _) = error_of(admin.get("/api/me").await).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    assert_eq!(srv.rows("SELECT COUNT(*) FROM web_session"), 0);

    // A fresh session is fine, and an idle one (12 h by default) is refused.
    let admin = srv.client("admin").await;
    assert_eq!(admin.get("/api/me").await.status(), 200);
    conn.execute(
        "UPDATE web_session SET last_seen_at = last_seen_at - 721 * 60 * 1000",
        [],
    )
    .unwrap();
    assert_eq!(admin.get("/api/me").await.status(), 401);

    // The lifetime is a validated config key.
    let bad = WebConfig {
        session_max_hours: 0,
        ..WebConfig::default()
    };
    let e = bad.validate().unwrap_err();
    assert!(e.to_string().contains("web.session_max_hours"), "{e}");
}

/// Live streams outlast the request's one check: they end within seconds when their user is
/// signed out (here: removed, as `faced user remove` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_end_when_the_user_is_signed_out() {
    let _heavy = crate::util::alone_async().await;
    let srv = TestServer::start(true, WebConfig::default()).await;
    let viewer = srv.client("viewer").await;
    let mut mjpeg = viewer.get("/api/live/front/mjpeg").await;
    assert_eq!(mjpeg.status(), 200);
    assert!(mjpeg.chunk().await.unwrap().is_some());
    let mut sse = viewer.get("/api/live/overlay").await;
    assert_eq!(sse.status(), 200);
    let st = srv.state.clone();
    tokio::task::spawn_blocking(move || {
        let id = st.auth.user_by_name("viewer").unwrap().unwrap().id;
        st.auth.remove_user(id).unwrap();
    })
    .await
    .unwrap();
    let t = std::time::Instant::now();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(_)) = mjpeg.chunk().await {}
        while let Ok(Some(_)) = sse.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "a stream still runs 10 s after removal");
    eprintln!("streams ended {:?} after removal", t.elapsed());
}

/// Names with control, bidi-override, zero-width or other invisible formatting characters are
/// refused by the console API and the CLI alike (one rule, in the gallery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_invisible_or_bidi_characters_are_refused() {
    let srv = TestServer::start(true, WebConfig::default()).await;
    let admin = srv.client("admin").await;
    for bad in [
        "\u{202E}ecilA",
        "Al\u{200B}ice",
        "Bob\u{2066}",
        "\u{FEFF}Eve",
    ] {
        let (status, _, msg) =
            error_of(admin.post_json("/api/people", &json!({"name": bad})).await).await;
        assert_eq!(status, 400, "{bad:?}");
        assert!(msg.contains("U+"), "{msg}");
    }
    let r = admin
        .post_json("/api/people", &json!({"name": "Alice"}))
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let r = admin
        .req(Method::PATCH, &format!("/api/people/{id}"))
        .json(&json!({"name": "Ali\u{202E}ce"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 400);
    assert_eq!(srv.rows("SELECT COUNT(*) FROM person"), 1);
    let db = srv.db.to_str().unwrap().to_string();
    let (ok, out) = tokio::task::block_in_place(|| {
        faced_cli(
            &["people", "--db", &db, "rename", "Alice", "Ali\u{202E}ce"],
            "",
        )
    });
    assert!(!ok && out.contains("U+202E"), "{out}");
    let photo = fixture("img1.jpg");
    let (ok, out) = tokio::task::block_in_place(|| {
        faced_cli(
            &[
                "enroll",
                "--db",
                &db,
                "--name",
                "Al\u{200B}ice",
                photo.to_str().unwrap(),
            ],
            "",
        )
    });
    assert!(!ok && out.contains("U+200B"), "{out}");
    let names: Vec<String> = {
        let conn = rusqlite::Connection::open(&srv.db).unwrap();
        let mut st = conn.prepare("SELECT name FROM person").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(names, vec!["Alice"]);
}
