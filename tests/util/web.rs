//! Test helpers for the web console: a real server on 127.0.0.1 at a random port over a real
//! SQLite file in a temporary directory ([`TestServer`]), an HTTP client that keeps the session
//! cookie and CSRF token ([`Client`]), a fake pipeline ([`FakeLive`]: a fixed camera frame and a
//! stream of overlays) and [`insert_event`], which stores an event through the daemon's own
//! event store (`faced::events::store::EventStore::store_batch`).
//!
//! Used as `crate::util::web` (imported as `web_util`, beside the `web` test module). Needs the LiteRT library and models
//! (`scripts/setup`), like the vision tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use faced::base::RealClocks;
use faced::events::store::{EventStore, StoreOptions};
use faced::events::{Event, EventKind};
use faced::gallery::{Gallery, GalleryOptions};
use faced::vision::detect::DetectorConfig;
use faced::vision::{Analyzer, InferenceConfig};
use faced::web::live::{
    BoxFuture, CameraStats, LiveSource, MqttStatus, Overlay, OverlayFace, TrackEnroll, TrackSample,
};
use faced::web::{AppState, Deps, SharedAnalyzer, WebConfig};
use tokio::sync::broadcast;

/// Password used for every test account.
pub const PASSWORD: &str = "correct horse battery staple";

/// `tests/fixtures/faces/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/faces")
        .join(name)
}

/// One analyzer per test process (loading the models takes a moment).
pub fn analyzer() -> Arc<Mutex<Analyzer>> {
    static A: std::sync::OnceLock<Arc<Mutex<Analyzer>>> = std::sync::OnceLock::new();
    A.get_or_init(|| {
        Arc::new(Mutex::new(
            Analyzer::open(&InferenceConfig::default(), DetectorConfig::default())
                .expect("LiteRT and models (run scripts/setup)"),
        ))
    })
    .clone()
}

/// A pipeline stand-in: camera `front` shows `frame`; [`FakeLive::emit`] sends overlays.
pub struct FakeLive {
    /// The JPEG every `latest_jpeg("front")` returns.
    pub frame: Bytes,
    /// Frame size.
    pub size: (u32, u32),
    tx: broadcast::Sender<Overlay>,
    thresholds: Mutex<f32>,
}

impl FakeLive {
    /// A camera showing the fixture photo `name`.
    pub fn new(name: &str) -> Arc<FakeLive> {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let img = image::load_from_memory(&bytes).unwrap();
        Arc::new(FakeLive {
            frame: Bytes::from(bytes),
            size: (img.width(), img.height()),
            tx: broadcast::channel(16).0,
            thresholds: Mutex::new(0.5),
        })
    }

    /// Sends one overlay with one face box.
    pub fn emit(&self, seq: u64, bbox: [f32; 4], name: Option<&str>, similarity: Option<f32>) {
        let _ = self.tx.send(Overlay {
            camera: "front".into(),
            frame_seq: seq,
            width: self.size.0,
            height: self.size.1,
            faces: vec![OverlayFace {
                track_id: 1,
                bbox,
                name: name.map(String::from),
                similarity,
            }],
        });
    }
}

impl LiveSource for FakeLive {
    fn latest_jpeg(&self, camera: &str) -> Option<Bytes> {
        (camera == "front").then(|| self.frame.clone())
    }
    fn subscribe_overlay(&self) -> broadcast::Receiver<Overlay> {
        self.tx.subscribe()
    }
    fn stats(&self) -> Vec<CameraStats> {
        vec![CameraStats {
            name: "front".into(),
            fps: 9.8,
            dropped: 3,
            status: "running".into(),
            threshold: *self.thresholds.lock().unwrap(),
        }]
    }
    fn set_threshold(&self, camera: &str, threshold: f32) -> faced::Result<()> {
        if camera != "front" {
            return Err(faced::Error::not_found(format!(
                "no camera named {camera:?}"
            )));
        }
        *self.thresholds.lock().unwrap() = threshold;
        Ok(())
    }
    fn mqtt(&self) -> MqttStatus {
        MqttStatus {
            enabled: true,
            connected: true,
            broker: Some("127.0.0.1:1883".into()),
            last_error: None,
        }
    }
    fn enroll_from_track(&self, req: TrackEnroll) -> BoxFuture<faced::Result<Vec<TrackSample>>> {
        Box::pin(async move {
            Err(faced::Error::not_found(format!(
                "no track {}",
                req.track_id
            )))
        })
    }
}

/// A running console.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Temporary directory holding the database.
    pub dir: tempfile::TempDir,
    /// The database file.
    pub db: PathBuf,
    /// The server's state (auth store, setup token…).
    pub state: AppState,
    /// The fake pipeline.
    pub live: Arc<FakeLive>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    /// Starts a server; with `users`, creates `admin` (admin) and `viewer` (viewer).
    pub async fn start(users: bool, config: WebConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("faced.db");
        let gallery = Gallery::open(&db, &GalleryOptions::default()).unwrap();
        let live = FakeLive::new("img1.jpg");
        let deps = Deps {
            gallery: Arc::new(Mutex::new(gallery)),
            analyzer: Arc::new(SharedAnalyzer(analyzer())),
            live: live.clone(),
            quality: Default::default(),
            threshold: 0.5,
            restart: None,
            storage: None,
            precision: faced::models::Precision::Auto.choice(),
            visitors: None,
            fleet: None,
            metrics: Some(faced::metrics::Metrics::new()),
        };
        let state = AppState::new(config, deps).unwrap();
        if users {
            let st = state.clone();
            tokio::task::spawn_blocking(move || {
                st.auth
                    .add_user("admin", faced::web::auth::Role::Admin, PASSWORD)
                    .unwrap();
                st.auth
                    .add_user("viewer", faced::web::auth::Role::Viewer, PASSWORD)
                    .unwrap();
            })
            .await
            .unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(faced::web::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        TestServer {
            base,
            dir,
            db,
            state,
            live,
            stop: Some(tx),
        }
    }

    /// The gallery key file.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("faced.db.key")
    }

    /// A signed-in client.
    pub async fn client(&self, user: &str) -> Client {
        let mut c = Client::new(&self.base);
        c.login(user, PASSWORD).await;
        c
    }

    /// Number of rows in `table` (reads the database file directly).
    pub fn rows(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A client that keeps the session cookie and sends the CSRF token on every request.
pub struct Client {
    /// Server base URL.
    pub base: String,
    /// The HTTP client.
    pub http: reqwest::Client,
    /// `faced_session=…` once signed in.
    pub cookie: Option<String>,
    /// The session's CSRF token.
    pub csrf: Option<String>,
    /// An API token to send as `Authorization: Bearer` instead.
    pub bearer: Option<String>,
}

impl Client {
    /// An anonymous client.
    pub fn new(base: &str) -> Client {
        Client {
            base: base.to_string(),
            http: reqwest::Client::new(),
            cookie: None,
            csrf: None,
            bearer: None,
        }
    }

    /// Signs in; panics on failure.
    pub async fn login(&mut self, name: &str, password: &str) {
        let res = self
            .post_json(
                "/api/login",
                &serde_json::json!({"name": name, "password": password}),
            )
            .await;
        assert_eq!(res.status(), 200, "login as {name}");
        self.take_session(res).await;
    }

    /// Keeps the cookie and CSRF token of a login/setup response.
    pub async fn take_session(&mut self, res: reqwest::Response) -> serde_json::Value {
        let cookie = res
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        self.cookie = Some(cookie.split(';').next().unwrap().to_string());
        let body: serde_json::Value = res.json().await.unwrap();
        self.csrf = body["csrf"].as_str().map(String::from);
        body
    }

    /// A request builder with cookie, CSRF and bearer applied.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        if let Some(t) = &self.csrf {
            r = r.header("x-csrf-token", t);
        }
        if let Some(b) = &self.bearer {
            r = r.header("authorization", format!("Bearer {b}"));
        }
        r
    }

    /// GET.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.req(reqwest::Method::GET, path).send().await.unwrap()
    }

    /// POST a JSON body.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.req(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POST files as multipart/form-data (`files` fields).
    pub async fn upload(&self, path: &str, files: &[(&str, Vec<u8>)]) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new();
        for (name, data) in files {
            form = form.part(
                "files",
                reqwest::multipart::Part::bytes(data.clone()).file_name(name.to_string()),
            );
        }
        self.req(reqwest::Method::POST, path)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }
}

/// JPEG of the aligned face crop of the largest face in fixture `name` (what the pipeline
/// stores as an event snapshot).
pub fn aligned_crop_jpeg(name: &str) -> Vec<u8> {
    let img = faced::vision::image::load(&fixture(name), &Default::default()).unwrap();
    let faces = analyzer().lock().unwrap().analyze(&img).unwrap();
    let f = faces
        .into_iter()
        .max_by(|a, b| {
            (a.detection.width() * a.detection.height())
                .total_cmp(&(b.detection.width() * b.detection.height()))
        })
        .expect("a face");
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&f.aligned)
        .unwrap();
    out
}

/// Stores one event through the daemon's event store; returns its id.
pub fn insert_event(
    db: &Path,
    key: &Path,
    kind: EventKind,
    person: Option<(i64, &str)>,
    similarity: Option<f32>,
    snapshot: Option<Vec<u8>>,
) -> i64 {
    let opts = StoreOptions {
        retention_days: 0,
        retention_count: 0,
        snapshots: true,
    };
    let mut store = EventStore::open(db, key, opts, Arc::new(RealClocks)).unwrap();
    let now = faced::base::unix_ms(std::time::SystemTime::now());
    let mut ev = [Event {
        kind,
        event_id: 0,
        person: person.map(|p| p.1.to_string()),
        person_id: person.map(|p| p.0),
        similarity,
        camera: "front".into(),
        track_id: 1,
        bbox: [10.0, 10.0, 100.0, 100.0],
        time: faced::events::rfc3339_utc(now),
        ts_ms: now,
        duration_ms: None,
        snapshot: snapshot.is_some(),
        snapshot_jpeg: snapshot,
        frame_captured: None,
        frigate: None,
        visitor: None,
    }];
    store.store_batch(&mut ev).unwrap();
    ev[0].event_id
}
