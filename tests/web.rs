//! Console API against the real server on 127.0.0.1 and a real SQLite file (issue 4, item 5):
//! setup link, sign-in, roles on every route, CSRF, rate limit, security headers, bad input,
//! enroll → identify, "this is not NAME", privacy erase, reports and CSV.

#[path = "util/web.rs"]
mod web_util;

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

    // Backup: a zip with the database copy and its key.
    let b = admin.get("/api/backup").await;
    assert_eq!(b.status(), 200);
    let bytes = b.bytes().await.unwrap();
    let z = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let names: Vec<&str> = z.file_names().collect();
    assert!(
        names.contains(&"faced.db") && names.contains(&"faced.db.key"),
        "{names:?}"
    );
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
