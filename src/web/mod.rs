//! Web console: an axum server with the embedded front end (`console/`), accounts
//! and the JSON API under `/api/` (documented in `docs/api.md`).
//!
//! * The daemon builds an [`AppState`] from its [`Deps`] (the shared gallery, a face analyzer,
//!   its [`live::LiveSource`]) and calls [`serve`] on a bound listener; everything runs on the
//!   daemon's tokio runtime, and blocking work (SQLite writes, decoding, inference, PBKDF2) goes
//!   to `spawn_blocking`.
//! * Every route is declared once in [`routes`] with its [`Access`]; the router wraps each
//!   handler in [`guard`], which authenticates (session cookie or `Authorization: Bearer`),
//!   checks the role and the CSRF header before the handler (and its body extractor) runs.
//!   [`route_table`] exposes the same list so tests iterate every route.
//! * Every response carries the security headers ([`security_headers`]); API errors are
//!   `{"error": {"code", "message"}}` ([`error`]).
//! * A hostile LAN client is bounded at every layer: connections by [`conn`] (cap, header and
//!   stall timeouts), sign-ins by [`auth::RateLimiter`] (per address, per network, overall) and
//!   [`auth::HashGate`] (concurrent PBKDF2), uploads by the body limits and, before decoding,
//!   by `web.max_upload_pixels` and the shared [`crate::vision::image::DecodeBudget`]. The
//!   bounds and their tests are listed in docs/web.md, "Hostile clients".

pub mod api;
pub mod assets;
pub mod auth;
pub mod conn;
pub mod error;
pub mod events;
pub mod live;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gallery::Gallery;
use crate::vision::image::DecodeBudget;
use crate::vision::quality::QualityLimits;
use auth::{AuthStore, HashGate, LoginRates, Principal, RateLimiter, Role, Scope};
use error::ApiError;
use events::EventLog;
use live::{BoxFuture, LiveSource};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "faced_session";
/// Header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// `[web]` section of faced.toml. Every field has a default; see `docs/config.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the console at all. Default `true`.
    pub enabled: bool,
    /// Address and port to listen on. Default `0.0.0.0:8080` (every interface).
    pub listen: String,
    /// Address people use to reach the console, for the setup link in the log, e.g.
    /// `http://door.local:8080`. Default: derived from `listen`.
    pub public_url: Option<String>,
    /// Largest upload request (photos or a zip), bytes. Default 32 MiB.
    pub max_upload_bytes: usize,
    /// Largest single photo in an upload, bytes. Default 10 MiB.
    pub max_photo_bytes: usize,
    /// Most photos in one upload (files plus zip members). Default 100.
    pub max_upload_photos: usize,
    /// Largest total uncompressed size of a zip upload, bytes (zip-bomb guard). Default 64 MiB.
    pub max_zip_uncompressed_bytes: u64,
    /// Largest JSON request body, bytes. Default 64 KiB.
    pub max_json_bytes: usize,
    /// Largest backup archive the console accepts for a restore, bytes. Default 1 GiB. The
    /// archive is streamed to a file beside the database, never held in memory.
    pub max_restore_bytes: usize,
    /// Sessions unused for this many minutes are signed out. Default 720 (12 h).
    pub session_idle_minutes: u32,
    /// Sessions are signed out this many hours after sign-in, however busy. Default 168 (7 d).
    pub session_max_hours: u32,
    /// Login (and setup) attempts allowed per client IP per minute. Default 10.
    pub login_attempts_per_minute: u32,
    /// Login (and setup) attempts allowed per client network (IPv4 /24, IPv6 /64) per minute.
    /// Default 30.
    pub login_attempts_per_minute_per_network: u32,
    /// Login (and setup) attempts allowed per minute for the whole console. Default 60.
    pub login_attempts_per_minute_total: u32,
    /// Password checks (PBKDF2) running at once; further sign-ins queue for up to 5 s, then get
    /// 503. Default 1: one core of a 2-core board stays with the camera.
    pub password_hash_concurrency: u32,
    /// Most connections open at once. At the cap, a new connection replaces the oldest one that
    /// has not sent a request yet, or is closed at once. Default 256.
    pub max_connections: u32,
    /// Seconds a client has to send a request's headers: from connecting, and again after each
    /// response on a kept-alive connection (so it is also the idle keep-alive timeout).
    /// Default 10.
    pub header_timeout_s: u32,
    /// A response the client does not read for this many seconds (its socket buffer stays
    /// full) is dropped with its connection. Default 60.
    pub idle_timeout_s: u32,
    /// Largest photo in an upload, in pixels (width × height), checked from the file header
    /// before decoding. Default 24 000 000 (24 MP).
    pub max_upload_pixels: u64,
    /// Memory for decoding uploaded photos, shared by all uploads in flight, MiB. A photo's
    /// share is computed from its header (16-bit RGBA: 15 bytes per pixel, 8-bit RGB: 10).
    /// Default 256.
    pub decode_memory_mb: u32,
    /// Mark the session cookie `Secure` (only sent over HTTPS). Default `false`, because the
    /// console is served over plain HTTP on the local network; set `true` behind a TLS proxy.
    pub secure_cookie: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            listen: "0.0.0.0:8080".into(),
            public_url: None,
            max_upload_bytes: 32 << 20,
            max_photo_bytes: 10 << 20,
            max_upload_photos: 100,
            max_zip_uncompressed_bytes: 64 << 20,
            max_json_bytes: 64 << 10,
            max_restore_bytes: 1 << 30,
            session_idle_minutes: 720,
            session_max_hours: 168,
            login_attempts_per_minute: 10,
            login_attempts_per_minute_per_network: 30,
            login_attempts_per_minute_total: 60,
            password_hash_concurrency: 1,
            max_connections: 256,
            header_timeout_s: 10,
            idle_timeout_s: 60,
            max_upload_pixels: 24_000_000,
            decode_memory_mb: 256,
            secure_cookie: false,
        }
    }
}

impl WebConfig {
    /// Checks the values; messages name the `web.*` key.
    pub fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        let checks: [(&str, bool); 17] = [
            ("web.max_upload_bytes", self.max_upload_bytes >= 1024),
            ("web.max_photo_bytes", self.max_photo_bytes >= 1024),
            ("web.max_upload_photos", self.max_upload_photos >= 1),
            (
                "web.max_zip_uncompressed_bytes",
                self.max_zip_uncompressed_bytes >= 1024,
            ),
            ("web.max_json_bytes", self.max_json_bytes >= 1024),
            ("web.max_restore_bytes", self.max_restore_bytes >= 1024),
            ("web.session_idle_minutes", self.session_idle_minutes >= 1),
            ("web.session_max_hours", self.session_max_hours >= 1),
            (
                "web.login_attempts_per_minute",
                self.login_attempts_per_minute >= 1,
            ),
            (
                "web.login_attempts_per_minute_per_network",
                self.login_attempts_per_minute_per_network >= 1,
            ),
            (
                "web.login_attempts_per_minute_total",
                self.login_attempts_per_minute_total >= 1,
            ),
            (
                "web.password_hash_concurrency",
                self.password_hash_concurrency >= 1,
            ),
            ("web.max_connections", self.max_connections >= 8),
            ("web.header_timeout_s", self.header_timeout_s >= 1),
            ("web.idle_timeout_s", self.idle_timeout_s >= 1),
            ("web.max_upload_pixels", self.max_upload_pixels >= 10_000),
            ("web.decode_memory_mb", self.decode_memory_mb >= 8),
        ];
        for (key, ok) in checks {
            if !ok {
                return Err(Error::invalid(format!(
                    "{key} is too small; see docs/web.md for sensible values"
                )));
            }
        }
        // Upper bounds: beyond these a value defeats its purpose (hashing on every core starves
        // the camera; minutes-long timeouts let idle connections pile up).
        let ceilings: [(&str, u64, u64); 7] = [
            ("web.session_max_hours", self.session_max_hours.into(), 8784),
            (
                "web.password_hash_concurrency",
                self.password_hash_concurrency.into(),
                64,
            ),
            ("web.max_connections", self.max_connections.into(), 65_536),
            ("web.header_timeout_s", self.header_timeout_s.into(), 300),
            ("web.idle_timeout_s", self.idle_timeout_s.into(), 3600),
            (
                "web.max_upload_pixels",
                self.max_upload_pixels,
                u64::from(crate::vision::image::ImageLimits::default().max_side).pow(2),
            ),
            ("web.decode_memory_mb", self.decode_memory_mb.into(), 65_536),
        ];
        for (key, v, max) in ceilings {
            if v > max {
                return Err(Error::invalid(format!(
                    "{key} = {v} is over the maximum {max}; see docs/web.md"
                )));
            }
        }
        // A year: longer is no longer a session limit (and the ms count must not overflow).
        if self.session_max_hours > 366 * 24 {
            return Err(Error::invalid(format!(
                "web.session_max_hours = {} is over a year (8784); see docs/web.md",
                self.session_max_hours
            )));
        }
        Ok(())
    }

    /// `listen` parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.listen.parse().map_err(|_| {
            Error::invalid(format!(
                "web.listen = {:?} is not an address:port such as 0.0.0.0:8080",
                self.listen
            ))
        })
    }
}

/// Runs face analysis for uploads and event snapshots. The daemon may route this to its vision
/// worker; [`SharedAnalyzer`] runs an own [`crate::vision::Analyzer`] on a blocking thread.
pub trait FaceAnalyzer: Send + Sync {
    /// Detects, aligns, measures and embeds every face in `img`.
    fn analyze(&self, img: image::RgbImage) -> BoxFuture<Result<Vec<crate::vision::Face>>>;
    /// Embeds an already aligned 112×112 face crop.
    fn embed_aligned(&self, img: image::RgbImage) -> BoxFuture<Result<Vec<f32>>>;
}

/// A [`FaceAnalyzer`] over an analyzer behind a mutex (one inference at a time).
#[derive(Clone)]
pub struct SharedAnalyzer(pub Arc<Mutex<crate::vision::Analyzer>>);

impl FaceAnalyzer for SharedAnalyzer {
    fn analyze(&self, img: image::RgbImage) -> BoxFuture<Result<Vec<crate::vision::Face>>> {
        let a = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                a.lock().unwrap_or_else(|p| p.into_inner()).analyze(&img)
            })
            .await
            .map_err(|e| Error::internal("face analysis task failed").with_source(e))?
        })
    }

    fn embed_aligned(&self, img: image::RgbImage) -> BoxFuture<Result<Vec<f32>>> {
        let a = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut a = a.lock().unwrap_or_else(|p| p.into_inner());
                a.embedder
                    .embed(&[&img])?
                    .pop()
                    .ok_or_else(|| Error::internal("embedder returned nothing"))
            })
            .await
            .map_err(|e| Error::internal("face embedding task failed").with_source(e))?
        })
    }
}

/// What the console needs from the daemon.
pub struct Deps {
    /// The daemon's gallery (shared with the pipeline, so enrollments apply at once).
    pub gallery: Arc<Mutex<Gallery>>,
    /// Face analysis for uploads and event snapshots.
    pub analyzer: Arc<dyn FaceAnalyzer>,
    /// The pipeline's live view.
    pub live: Arc<dyn LiveSource>,
    /// Limits an uploaded face must meet to be enrolled.
    pub quality: QualityLimits,
    /// Similarity threshold for `POST /api/identify` and the "this is not NAME" check.
    pub threshold: f32,
    /// Restarts the daemon in place, after the console staged a restore (`POST /api/restore`);
    /// none where there is no daemon to restart (then the restore applies at the next start).
    pub restart: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Whether the event writer can store events (the console's disk-full banner); none where
    /// no event writer runs.
    pub storage: Option<Arc<crate::events::StorageHealth>>,
    /// The model precision that runs and why (the System page).
    pub precision: crate::models::PrecisionChoice,
    /// The unknown visitors (the Visitors page); none when `visitors.enabled` is off.
    pub visitors: Option<Arc<crate::visitors::Visitors>>,
    /// The fleet's state (the Fleet page); none when `fleet.enabled` is off.
    pub fleet: Option<Arc<crate::fleet::FleetStats>>,
    /// What `GET /metrics` reports (the console adds its request counts); none: 404.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Shared state of the console; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

/// What [`AppState`] holds.
pub struct Inner {
    /// Configuration.
    pub config: WebConfig,
    /// Users, sessions, tokens.
    pub auth: AuthStore,
    /// Login rate limiter.
    pub limiter: RateLimiter,
    /// Cap on concurrent password checks.
    pub hash_gate: HashGate,
    /// Memory budget shared by upload decodes.
    pub decode_budget: DecodeBudget,
    /// Event log reader.
    pub events: EventLog,
    /// Dependencies from the daemon.
    pub deps: Deps,
    /// One-time setup token, while there are no users.
    pub setup_token: Mutex<Option<String>>,
    /// Analysed upload faces waiting to be saved.
    pub candidates: api::Candidates,
    /// The audit trail (the gallery's), for what the console records outside gallery writes.
    pub audit: Arc<crate::audit::Log>,
    /// Requests answered, for `/metrics`.
    pub requests: Arc<metrics::Requests>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Opens the account and event tables in the gallery's database and, if there are no users
    /// yet, creates the one-time setup token (see [`AppState::setup_link`]).
    pub fn new(config: WebConfig, deps: Deps) -> Result<AppState> {
        config.validate()?;
        let (db, key, audit) = {
            let g = deps.gallery.lock().unwrap_or_else(|p| p.into_inner());
            (g.db_path().to_owned(), g.key_path().to_owned(), g.audit())
        };
        let auth = AuthStore::open(
            &db,
            auth::SessionLimits {
                idle: Duration::from_secs(u64::from(config.session_idle_minutes) * 60),
                max_age: Duration::from_secs(u64::from(config.session_max_hours) * 3600),
            },
        )?;
        let events = EventLog::open(&db, &key)?;
        let setup = if auth.user_count()? == 0 {
            Some(auth::new_secret()?)
        } else {
            None
        };
        let requests = Arc::new(metrics::Requests::default());
        if let Some(m) = &deps.metrics {
            m.add(requests.clone());
        }
        Ok(AppState(Arc::new(Inner {
            limiter: RateLimiter::new(LoginRates {
                per_address: config.login_attempts_per_minute,
                per_network: config.login_attempts_per_minute_per_network,
                total: config.login_attempts_per_minute_total,
            }),
            hash_gate: HashGate::new(config.password_hash_concurrency as usize),
            decode_budget: DecodeBudget::new(u64::from(config.decode_memory_mb) << 20),
            config,
            auth,
            events,
            deps,
            setup_token: Mutex::new(setup),
            candidates: api::Candidates::default(),
            audit,
            requests,
        })))
    }

    /// The one-time setup link, while no user exists: `<public_url>/#setup=<token>` (a
    /// fragment, so the token never reaches a server log or a Referer header).
    pub fn setup_link(&self) -> Option<String> {
        let t = self
            .setup_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let base = self.config.public_url.clone().unwrap_or_else(|| {
            let host = match self.config.listen_addr() {
                Ok(a) if a.ip().is_unspecified() => format!("<this-device>:{}", a.port()),
                Ok(a) => a.to_string(),
                Err(_) => self.config.listen.clone(),
            };
            format!("http://{host}")
        });
        Some(format!("{}/#setup={t}", base.trim_end_matches('/')))
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone (sign-in, setup, status). Kept to a short list that a test pins.
    Public,
    /// Any signed-in user.
    Viewer,
    /// Admins only.
    Admin,
    /// Any signed-in user, and API tokens of the `metrics` scope (which may call nothing else).
    Metrics,
}

/// One entry of the route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// HTTP method.
    pub method: Method,
    /// axum path pattern (`/api/people/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

type Route = (RouteInfo, MethodRouter<AppState>);

fn r(method: Method, path: &'static str, access: Access, mr: MethodRouter<AppState>) -> Route {
    (
        RouteInfo {
            method,
            path,
            access,
        },
        mr,
    )
}

/// Every API route with its access rule: the one place routes are declared.
pub fn routes() -> Vec<Route> {
    use Access::*;
    use Method as M;
    vec![
        r(M::GET, "/api/status", Public, get(api::session::status)),
        r(M::POST, "/api/setup", Public, post(api::session::setup)),
        r(M::POST, "/api/login", Public, post(api::session::login)),
        r(M::POST, "/api/logout", Viewer, post(api::session::logout)),
        r(M::GET, "/api/me", Viewer, get(api::session::me)),
        r(M::GET, "/api/cameras", Viewer, get(api::live::cameras)),
        r(
            M::PUT,
            "/api/cameras/{camera}/threshold",
            Admin,
            put(api::live::set_threshold),
        ),
        r(
            M::GET,
            "/api/live/{camera}/mjpeg",
            Viewer,
            get(api::live::mjpeg),
        ),
        r(
            M::GET,
            "/api/live/{camera}/frame.jpg",
            Viewer,
            get(api::live::frame),
        ),
        r(
            M::GET,
            "/api/live/overlay",
            Viewer,
            get(api::live::overlay_sse),
        ),
        r(
            M::POST,
            "/api/live/enroll",
            Admin,
            post(api::live::enroll_from_track),
        ),
        r(M::GET, "/api/events", Viewer, get(api::events::list_events)),
        r(
            M::GET,
            "/api/events.csv",
            Viewer,
            get(api::events::events_csv),
        ),
        r(
            M::GET,
            "/api/events/{id}/snapshot",
            Viewer,
            get(api::events::event_snapshot),
        ),
        r(
            M::POST,
            "/api/events/{id}/enroll",
            Admin,
            post(api::events::event_enroll),
        ),
        r(
            M::POST,
            "/api/events/{id}/not",
            Admin,
            post(api::events::event_not_person),
        ),
        r(M::GET, "/api/reports", Viewer, get(api::reports::report)),
        r(
            M::GET,
            "/api/reports.csv",
            Viewer,
            get(api::reports::report_csv),
        ),
        r(M::GET, "/api/system", Viewer, get(api::system::system)),
        r(M::GET, "/api/fleet", Viewer, get(api::system::fleet)),
        r(M::GET, "/api/people", Admin, get(api::people::list_people)),
        r(
            M::POST,
            "/api/people",
            Admin,
            post(api::people::create_person),
        ),
        r(
            M::PATCH,
            "/api/people/{id}",
            Admin,
            patch(api::people::rename_person),
        ),
        r(
            M::DELETE,
            "/api/people/{id}",
            Admin,
            delete(api::people::erase_person),
        ),
        r(
            M::GET,
            "/api/people/{id}/samples",
            Admin,
            get(api::people::list_samples),
        ),
        r(
            M::POST,
            "/api/people/{id}/samples",
            Admin,
            post(api::people::add_samples),
        ),
        r(
            M::GET,
            "/api/people/{id}/thumbnail",
            Admin,
            get(api::people::thumbnail),
        ),
        r(
            M::GET,
            "/api/samples/{id}/crop",
            Admin,
            get(api::people::sample_crop),
        ),
        r(
            M::DELETE,
            "/api/samples/{id}",
            Admin,
            delete(api::people::remove_sample),
        ),
        r(M::POST, "/api/uploads", Admin, post(api::uploads::upload)),
        r(
            M::GET,
            "/api/uploads/{id}/crop",
            Admin,
            get(api::uploads::candidate_crop),
        ),
        r(
            M::POST,
            "/api/identify",
            Admin,
            post(api::uploads::identify),
        ),
        r(
            M::GET,
            "/api/visitors",
            Admin,
            get(api::visitors::list_visitors),
        ),
        r(
            M::GET,
            "/api/visitors/{id}",
            Admin,
            get(api::visitors::get_visitor),
        ),
        r(
            M::PATCH,
            "/api/visitors/{id}",
            Admin,
            patch(api::visitors::patch_visitor),
        ),
        r(
            M::DELETE,
            "/api/visitors/{id}",
            Admin,
            delete(api::visitors::erase_visitor),
        ),
        r(
            M::POST,
            "/api/visitors/{id}/enroll",
            Admin,
            post(api::visitors::enroll_visitor),
        ),
        r(
            M::GET,
            "/api/visitor-faces/{id}/crop",
            Admin,
            get(api::visitors::face_crop),
        ),
        r(M::GET, "/api/users", Admin, get(api::users::list_users)),
        r(M::POST, "/api/users", Admin, post(api::users::create_user)),
        r(
            M::DELETE,
            "/api/users/{id}",
            Admin,
            delete(api::users::remove_user),
        ),
        r(M::GET, "/api/tokens", Admin, get(api::users::list_tokens)),
        r(
            M::POST,
            "/api/tokens",
            Admin,
            post(api::users::create_token),
        ),
        r(
            M::DELETE,
            "/api/tokens/{id}",
            Admin,
            delete(api::users::remove_token),
        ),
        r(M::POST, "/api/backup", Admin, post(api::backup::backup)),
        r(M::POST, "/api/restore", Admin, post(api::backup::restore)),
        r(M::GET, "/api/audit", Admin, get(api::audit::list)),
        r(M::GET, "/api/audit.csv", Admin, get(api::audit::csv)),
        r(M::GET, "/metrics", Metrics, get(metrics::scrape)),
    ]
}

/// The route table without handlers (for tests and docs).
pub fn route_table() -> Vec<RouteInfo> {
    routes().into_iter().map(|(i, _)| i).collect()
}

/// Routes that take uploads get the upload body limit instead of the JSON one.
fn is_upload(path: &str) -> bool {
    matches!(path, "/api/uploads" | "/api/identify")
}

/// Builds the console's router (API, static files, headers, limits).
pub fn router(state: AppState) -> Router {
    let mut api = Router::new();
    for (info, mr) in routes() {
        let limit = if is_upload(info.path) {
            state.config.max_upload_bytes
        } else if info.path == "/api/restore" {
            state.config.max_restore_bytes
        } else {
            state.config.max_json_bytes
        };
        let mr = mr
            .layer::<_, std::convert::Infallible>(middleware::from_fn_with_state(
                (state.clone(), info.access),
                guard,
            ))
            .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(limit));
        api = api.route(info.path, mr);
    }
    Router::new()
        .merge(api)
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .fallback(assets::serve_asset)
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .with_state(state)
}

async fn api_not_found(req: Request) -> ApiError {
    Error::not_found(format!(
        "no API route {} {}; see docs/api.md",
        req.method(),
        req.uri().path()
    ))
    .into()
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == SESSION_COOKIE && !v.is_empty()).then(|| v.to_string())
        })
}

/// The caller of a request (session cookie or `Authorization: Bearer`), read from the database
/// each time: also used by live streams to end when their caller is signed out.
pub(crate) fn authenticate(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or("");
        let Some(token) = v.strip_prefix("Bearer ") else {
            return Err(ApiError::unauthenticated());
        };
        return state.auth.token(token.trim()).map_err(Into::into);
    }
    match session_cookie(headers) {
        Some(s) => state.auth.session(&s).map_err(Into::into),
        None => Ok(None),
    }
}

/// The per-route check: authenticate, then role, then CSRF; see the module docs.
pub async fn guard(
    State((state, access)): State<(AppState, Access)>,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = match authenticate(&state, req.headers()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if access != Access::Public {
        let Some(p) = &principal else {
            return ApiError::unauthenticated().into_response();
        };
        if p.scope == Scope::Metrics && access != Access::Metrics {
            return ApiError::forbidden(format!(
                "{} {} is not for this API token: its scope is metrics (GET /metrics only)",
                req.method(),
                req.uri().path()
            ))
            .into_response();
        }
        if access == Access::Admin && p.role != Role::Admin {
            return ApiError::forbidden(format!(
                "{} {} needs the admin role",
                req.method(),
                req.uri().path()
            ))
            .into_response();
        }
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if let (false, Some(expected)) = (safe, &p.csrf) {
            let sent = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !auth::same_secret(sent, expected) {
                return ApiError::forbidden(
                    "missing or wrong X-CSRF-Token header (reload the page)",
                )
                .into_response();
            }
        }
    }
    if let Some(p) = principal {
        // Who the handler's changes are by, for the audit trail.
        let by = api::audit::by(
            &p,
            req.extensions()
                .get()
                .map(|c: &ConnectInfo<SocketAddr>| c.0),
        );
        req.extensions_mut().insert(by);
        req.extensions_mut().insert(p);
    }
    next.run(req).await
}

/// Content-Security-Policy of every response: no inline script or style, nothing from other
/// origins, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers (CSP, nosniff, frame deny, referrer policy) to every response,
/// and `Cache-Control: no-store` to API responses.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    if is_api && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Serves the console on `listener` until `shutdown` resolves. Logs the one-time setup link
/// when no user exists yet.
///
/// Connections are served by [`conn::run`] with the `[web]` connection limits (cap, header and
/// stall timeouts); see there. After `shutdown`, responses in flight get [`conn::DRAIN`] to
/// finish; live streams (MJPEG, SSE) never end by themselves and are cut then.
///
/// `faced run` calls it as
/// `tokio::spawn(web::serve(listener, state, shutdown_future))` after binding
/// `tokio::net::TcpListener::bind(config.web.listen_addr()?)`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::unavailable("web listener has no address").with_source(e))?;
    match state.setup_link() {
        Some(link) => tracing::warn!(
            "no console users yet: open {link} to create the first admin (one-time link, valid until \
             an admin exists), or run `faced user add --admin NAME`"
        ),
        None => tracing::info!(%addr, "web console listening"),
    }
    let limits = conn::Limits {
        max_connections: state.config.max_connections as usize,
        header_timeout: Duration::from_secs(state.config.header_timeout_s.into()),
        idle_timeout: Duration::from_secs(state.config.idle_timeout_s.into()),
    };
    conn::ensure_fd_room(limits.max_connections);
    let purge = state.clone();
    let purger = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(600)).await;
            let s = purge.clone();
            let _ = tokio::task::spawn_blocking(move || s.auth.purge_sessions()).await;
            purge.candidates.purge();
        }
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    conn::run(listener, router(state), limits, rx).await;
    purger.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes `docs/api.md` documents: `(method, path, role)` from every table row whose
    /// first cell is `` `METHOD /api/…` ``, the role from the row's Role column (its first word:
    /// "public, rate-limited" is public). Query strings in the documented path are dropped.
    fn documented_routes() -> Vec<(String, String, String)> {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))
            .expect("docs/api.md is readable");
        let mut out = Vec::new();
        let mut role_col = None;
        for line in doc.lines() {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            if !line.trim_start().starts_with('|') {
                role_col = None;
                continue;
            }
            if cells.first() == Some(&"Method and path") {
                role_col = cells.iter().position(|c| *c == "Role");
                continue;
            }
            let Some(route) = cells[0].strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
                continue;
            };
            let Some((method, path)) = route.split_once(' ') else {
                continue;
            };
            if !path.starts_with("/api/") && path != "/metrics" {
                continue;
            }
            let col = role_col
                .unwrap_or_else(|| panic!("docs/api.md: the table of {route} has no Role column"));
            let role = cells[col]
                .split([',', ' '])
                .next()
                .unwrap_or_default()
                .to_string();
            let path = path.split('?').next().unwrap_or_default().to_string();
            out.push((method.to_string(), path, role));
        }
        out
    }

    /// Every route of [`route_table`] is documented in docs/api.md with its method, path and
    /// role, once, and docs/api.md documents no route that does not exist.
    #[test]
    fn route_table_matches_docs_api_md() {
        let role = |a: Access| match a {
            Access::Public => "public",
            Access::Viewer => "viewer",
            Access::Admin => "admin",
            Access::Metrics => "metrics",
        };
        let table: Vec<(String, String, String)> = route_table()
            .into_iter()
            .map(|r| {
                (
                    r.method.to_string(),
                    r.path.to_string(),
                    role(r.access).into(),
                )
            })
            .collect();
        let documented = documented_routes();
        assert!(
            documented.len() >= 30,
            "docs/api.md parsed to {documented:?}"
        );
        for r in &table {
            let docs: Vec<_> = documented
                .iter()
                .filter(|d| d.0 == r.0 && d.1 == r.1)
                .collect();
            assert_eq!(
                docs.len(),
                1,
                "`{} {}` should be documented once in docs/api.md, found {docs:?}",
                r.0,
                r.1
            );
            assert_eq!(
                docs[0].2, r.2,
                "docs/api.md gives `{} {}` the role {:?}, the route table {:?}",
                r.0, r.1, docs[0].2, r.2
            );
        }
        for d in &documented {
            assert!(
                table.iter().any(|r| r.0 == d.0 && r.1 == d.1),
                "docs/api.md documents `{} {}`, which is not in web::routes()",
                d.0,
                d.1
            );
        }
    }
}
