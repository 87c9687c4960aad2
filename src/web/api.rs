//! Handlers of the JSON API under `/api/` (documented route by route in `docs/api.md`).
//!
//! Handlers run on the tokio runtime; anything that blocks (gallery writes, SQLite queries,
//! image decoding, PBKDF2) goes through [`blocking`]. Access rules are not checked here: the
//! router's `guard` has already authenticated the caller and checked their role and CSRF token,
//! and puts the [`Principal`] into the request extensions.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{self, Principal, Role, TokenInfo, User};
use super::error::{ApiError, ApiResult, JsonBody, PathParam, QueryParams};
use super::events::{EventFilter, EventRow, Report, csv_field};
use super::live::{CameraStats, MAX_TRACK_ENROLL, MqttStatus, TrackEnroll};
use super::{AppState, SESSION_COOKIE};
use crate::error::{Error, Kind, Result};
use crate::gallery::{
    Gallery, Match, NewSample, PersonId, PersonSummary, SampleId, SampleInfo, SampleKind,
};
use crate::vision::image::{DecodePermit, ImageLimits, Probe};
use crate::vision::quality::Quality;

/// Runs blocking work on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> ApiResult<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

fn gallery(state: &AppState) -> std::sync::MutexGuard<'_, Gallery> {
    state.deps.gallery.lock().unwrap_or_else(|p| p.into_inner())
}

/// `{"ok": true}`.
fn ok() -> axum::Json<Value> {
    axum::Json(json!({"ok": true}))
}

// ---------------------------------------------------------------------------------------------
// Accounts

/// `GET /api/status` (public): whether setup is needed, and the version.
pub async fn status(State(s): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let setup = s
        .setup_token
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some();
    Ok(axum::Json(
        json!({"setup_required": setup, "version": env!("CARGO_PKG_VERSION")}),
    ))
}

/// Body of `POST /api/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
}

/// Body of `POST /api/setup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The token from the setup link.
    pub token: String,
    /// New admin's name.
    pub name: String,
    /// New admin's password.
    pub password: String,
}

fn client_ip(ci: Option<Extension<ConnectInfo<SocketAddr>>>) -> std::net::IpAddr {
    ci.map(|Extension(ConnectInfo(a))| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

fn rate_limit(s: &AppState, ip: std::net::IpAddr) -> ApiResult<()> {
    s.limiter.check(ip, Instant::now()).map_err(|r| {
        ApiError::with_status(
            StatusCode::TOO_MANY_REQUESTS,
            Kind::ResourceExhausted,
            format!(
                "too many sign-in attempts from {} (web.login_attempts_per_minute*); try again in {} s",
                r.scope,
                r.wait.as_secs_f64().ceil().max(1.0)
            ),
        )
    })
}

fn session_response(s: &AppState, user: &User, secret: &str, csrf: &str) -> Response {
    let secure = if s.config.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut res =
        axum::Json(json!({"user": user.name, "role": user.role, "csrf": csrf})).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `POST /api/login` (public, rate-limited per client IP).
pub async fn login(
    State(s): State<AppState>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(body): JsonBody<Login>,
) -> ApiResult<Response> {
    rate_limit(&s, client_ip(ci))?;
    // Queue for a password-hashing slot; the slot moves into the blocking task, so a client
    // that hangs up cannot free it while its hash still runs.
    let slot = s.hash_gate.acquire(auth::HASH_QUEUE_WAIT).await?;
    let st = s.clone();
    let res = blocking(move || {
        let _slot = slot;
        let Some(user) = st.auth.check_password(&body.name, &body.password)? else {
            return Ok(None);
        };
        let (secret, csrf) = st.auth.create_session(&user)?;
        Ok(Some((user, secret, csrf)))
    })
    .await?;
    let Some((user, secret, csrf)) = res else {
        return Err(Error::new(Kind::Unauthenticated, "wrong user name or password").into());
    };
    tracing::info!(user = %user.name, "console sign-in");
    Ok(session_response(&s, &user, &secret, &csrf))
}

/// `POST /api/setup` (public while no user exists): creates the first admin with the one-time
/// token from the log and signs them in.
pub async fn setup(
    State(s): State<AppState>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(body): JsonBody<Setup>,
) -> ApiResult<Response> {
    rate_limit(&s, client_ip(ci))?;
    let expected = s
        .setup_token
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(expected) = expected else {
        return Err(Error::new(Kind::Conflict, "setup is already done; sign in instead").into());
    };
    if !auth::same_secret(&body.token, &expected) {
        return Err(ApiError::forbidden(
            "the setup token is wrong; copy the whole link from the log",
        ));
    }
    let st = s.clone();
    let res = blocking(move || {
        // Atomic: of concurrent setups with the token, exactly one creates the admin.
        let user = st.auth.add_first_admin(&body.name, &body.password)?;
        let (secret, csrf) = st.auth.create_session(&user)?;
        Ok((user, secret, csrf))
    })
    .await;
    if let Err(e) = &res
        && e.error.kind() == Kind::Conflict
    {
        // Someone else (another setup, or `faced user add`) created a user: the link is spent.
        *s.setup_token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    let (user, secret, csrf) = res?;
    *s.setup_token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    tracing::info!(user = %user.name, "first console admin created via the setup link");
    Ok(session_response(&s, &user, &secret, &csrf))
}

/// `POST /api/logout`.
pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(secret) = super::session_cookie(&headers) {
        let st = s.clone();
        blocking(move || st.auth.end_session(&secret)).await?;
    }
    let mut res = ok().into_response();
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// `GET /api/me`: the caller, with the session's CSRF token.
pub async fn me(Extension(p): Extension<Principal>) -> axum::Json<Value> {
    axum::Json(json!({"user": p.user, "role": p.role, "csrf": p.csrf}))
}

/// Body of `POST /api/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Password (at least 10 characters).
    pub password: String,
}

/// `GET /api/users`.
pub async fn list_users(State(s): State<AppState>) -> ApiResult<axum::Json<Vec<User>>> {
    Ok(axum::Json(blocking(move || s.auth.users()).await?))
}

/// `POST /api/users`.
pub async fn create_user(
    State(s): State<AppState>,
    JsonBody(b): JsonBody<NewUser>,
) -> ApiResult<(StatusCode, axum::Json<User>)> {
    let u = blocking(move || s.auth.add_user(&b.name, b.role, &b.password)).await?;
    Ok((StatusCode::CREATED, axum::Json(u)))
}

/// `DELETE /api/users/{id}`.
pub async fn remove_user(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<Value>> {
    blocking(move || s.auth.remove_user(id)).await?;
    Ok(ok())
}

/// Body of `POST /api/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for.
    pub label: String,
}

/// `GET /api/tokens`.
pub async fn list_tokens(State(s): State<AppState>) -> ApiResult<axum::Json<Vec<TokenInfo>>> {
    Ok(axum::Json(blocking(move || s.auth.tokens()).await?))
}

/// `POST /api/tokens`: a token for the caller; the secret is in this response only.
pub async fn create_token(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    JsonBody(b): JsonBody<NewToken>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let (info, secret) = blocking(move || s.auth.create_token(p.user_id, &b.label)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"token": secret, "info": info})),
    ))
}

/// `DELETE /api/tokens/{id}`.
pub async fn remove_token(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<Value>> {
    blocking(move || s.auth.remove_token(id)).await?;
    Ok(ok())
}

// ---------------------------------------------------------------------------------------------
// Live

/// `GET /api/cameras`: every camera's fps, dropped frames, status and threshold.
pub async fn cameras(State(s): State<AppState>) -> axum::Json<Vec<CameraStats>> {
    axum::Json(s.deps.live.stats())
}

/// Body of `PUT /api/cameras/{camera}/threshold`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Cosine similarity 0..1.
    pub threshold: f32,
}

/// `PUT /api/cameras/{camera}/threshold`: applied from the next frame.
pub async fn set_threshold(
    State(s): State<AppState>,
    PathParam(camera): PathParam<String>,
    JsonBody(b): JsonBody<Threshold>,
) -> ApiResult<axum::Json<Value>> {
    if !(0.0..=1.0).contains(&b.threshold) {
        return Err(Error::invalid(format!(
            "threshold must be within 0..1, got {}",
            b.threshold
        ))
        .into());
    }
    s.deps.live.set_threshold(&camera, b.threshold)?;
    tracing::info!(
        camera,
        threshold = b.threshold,
        "threshold changed from the console"
    );
    Ok(ok())
}

/// `GET /api/live/{camera}/frame.jpg`: the newest frame.
pub async fn frame(
    State(s): State<AppState>,
    PathParam(camera): PathParam<String>,
) -> ApiResult<Response> {
    let jpeg = s.deps.live.latest_jpeg(&camera).ok_or_else(|| {
        Error::not_found(format!(
            "camera {camera:?} has no frame (unknown camera, or not started)"
        ))
    })?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response())
}

/// How often a live stream re-checks its caller's session or token.
pub const STREAM_RECHECK: Duration = Duration::from_secs(2);

/// A live stream's caller, checked again every [`STREAM_RECHECK`]: the router's guard checks a
/// request once, at its start, but a stream lasts for hours, and signing someone out (password
/// change, removal, logout, expiry) must end their streams too.
struct StreamCaller {
    state: AppState,
    headers: HeaderMap,
    checked: Instant,
}

impl StreamCaller {
    fn new(state: AppState, headers: HeaderMap) -> Self {
        StreamCaller {
            state,
            headers,
            checked: Instant::now(),
        }
    }

    /// Whether the caller is still signed in (reads the database at most every
    /// [`STREAM_RECHECK`]; a database error counts as signed out, the client reconnects).
    fn still_signed_in(&mut self) -> bool {
        if self.checked.elapsed() < STREAM_RECHECK {
            return true;
        }
        self.checked = Instant::now();
        matches!(super::authenticate(&self.state, &self.headers), Ok(Some(_)))
    }
}

/// `GET /api/live/{camera}/mjpeg`: the camera as `multipart/x-mixed-replace` JPEG frames, at
/// most 10 per second, only when a new frame exists. Ends when the caller is signed out.
pub async fn mjpeg(
    State(s): State<AppState>,
    PathParam(camera): PathParam<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if !s.deps.live.stats().iter().any(|c| c.name == camera)
        && s.deps.live.latest_jpeg(&camera).is_none()
    {
        return Err(Error::not_found(format!("no camera named {camera:?}")).into());
    }
    let live = s.deps.live.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // A browser shows a part only when the next one starts, so an unchanged frame is sent
    // again after a second: a still camera (or a slow image folder) still shows its picture,
    // and the repeat keeps idle proxies from closing the stream.
    let repeat = Duration::from_secs(1);
    let caller = StreamCaller::new(s.clone(), headers);
    let start = (tick, None::<(Bytes, Instant)>, caller);
    let body = stream::unfold(start, move |(mut tick, last, mut caller)| {
        let live = live.clone();
        let camera = camera.clone();
        async move {
            loop {
                tick.tick().await;
                if !caller.still_signed_in() {
                    return None;
                }
                let Some(jpeg) = live.latest_jpeg(&camera) else {
                    continue;
                };
                if last.as_ref().is_some_and(|(l, sent)| {
                    l.as_ptr() == jpeg.as_ptr() && l.len() == jpeg.len() && sent.elapsed() < repeat
                }) {
                    continue;
                }
                let mut part = Vec::with_capacity(jpeg.len() + 100);
                part.extend_from_slice(
                    format!(
                        "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                        jpeg.len()
                    )
                    .as_bytes(),
                );
                part.extend_from_slice(&jpeg);
                part.extend_from_slice(b"\r\n");
                return Some((
                    Ok::<_, Infallible>(Bytes::from(part)),
                    (tick, Some((jpeg, Instant::now())), caller),
                ));
            }
        }
    });
    Ok(Response::builder()
        .header(
            header::CONTENT_TYPE,
            "multipart/x-mixed-replace; boundary=frame",
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(body))
        .unwrap_or_default())
}

/// Query of `GET /api/live/overlay`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverlayQuery {
    /// Only this camera.
    pub camera: Option<String>,
}

/// `GET /api/live/overlay`: Server-Sent Events, one `overlay` event (JSON `Overlay`) per
/// processed frame. A slow client skips overlays instead of slowing the pipeline. Ends when the
/// caller is signed out.
pub async fn overlay_sse(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<OverlayQuery>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>> {
    let rx = s.deps.live.subscribe_overlay();
    let caller = StreamCaller::new(s.clone(), headers);
    let st = stream::unfold(
        (rx, q.camera, caller),
        |(mut rx, cam, mut caller)| async move {
            loop {
                if !caller.still_signed_in() {
                    return None;
                }
                // Wake up at least every STREAM_RECHECK, even when no overlay comes.
                let Ok(next) = tokio::time::timeout(STREAM_RECHECK, rx.recv()).await else {
                    continue;
                };
                match next {
                    Ok(o) => {
                        if cam.as_ref().is_some_and(|c| *c != o.camera) {
                            continue;
                        }
                        let ev = SseEvent::default()
                            .event("overlay")
                            .json_data(&o)
                            .unwrap_or_default();
                        return Some((Ok(ev), (rx, cam, caller)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(st).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Body of `POST /api/live/enroll`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveEnroll {
    /// Camera.
    pub camera: String,
    /// Track id from the overlay.
    pub track_id: u64,
    /// Seconds to collect (1..=30, default 5).
    #[serde(default)]
    pub seconds: Option<f32>,
    /// Most samples to keep (1..=20, default 8).
    #[serde(default)]
    pub max_samples: Option<usize>,
}

/// `POST /api/live/enroll`: "enroll while walking past" — collects the track's best faces and
/// returns them as candidates with quality verdicts (saved by `POST /api/people`).
pub async fn enroll_from_track(
    State(s): State<AppState>,
    JsonBody(b): JsonBody<LiveEnroll>,
) -> ApiResult<axum::Json<Value>> {
    let seconds = b.seconds.unwrap_or(5.0);
    if !(1.0..=MAX_TRACK_ENROLL.as_secs_f32()).contains(&seconds) {
        return Err(Error::invalid(format!(
            "seconds must be within 1..={}",
            MAX_TRACK_ENROLL.as_secs()
        ))
        .into());
    }
    let max_samples = b.max_samples.unwrap_or(8);
    if !(1..=20).contains(&max_samples) {
        return Err(Error::invalid("max_samples must be within 1..=20").into());
    }
    let req = TrackEnroll {
        camera: b.camera.clone(),
        track_id: b.track_id,
        seconds,
        max_samples,
    };
    let samples = s.deps.live.enroll_from_track(req).await?;
    let source = format!("live:camera={} track={}", b.camera, b.track_id);
    let items: Vec<Value> = samples
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            s.candidates.add_item(
                &s,
                format!("{source} #{}", i + 1),
                1,
                Some((t.quality, t.embedding, t.crop_jpeg)),
            )
        })
        .collect();
    Ok(axum::Json(json!({"samples": items})))
}

// ---------------------------------------------------------------------------------------------
// Upload candidates

/// A face analysed from an upload or a live track, waiting for the user to save it.
#[derive(Debug, Clone)]
pub struct Candidate {
    embedding: Vec<f32>,
    crop_jpeg: Vec<u8>,
    quality_json: String,
    source: String,
    ok: bool,
    created: Instant,
}

/// Analysed faces waiting to be saved, by random id; kept 30 minutes, at most 2000.
#[derive(Debug, Default)]
pub struct Candidates(Mutex<HashMap<String, Candidate>>);

const CANDIDATE_TTL: Duration = Duration::from_secs(30 * 60);
const MAX_CANDIDATES: usize = 2000;

impl Candidates {
    /// Drops expired candidates.
    pub fn purge(&self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, c| c.created.elapsed() < CANDIDATE_TTL);
    }

    fn insert(&self, c: Candidate) -> String {
        let id = auth::new_secret().unwrap_or_default();
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_CANDIDATES {
            m.retain(|_, c| c.created.elapsed() < CANDIDATE_TTL);
            if m.len() >= MAX_CANDIDATES
                && let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, c)| c.created)
                    .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(id.clone(), c);
        id
    }

    fn get(&self, id: &str) -> Option<Candidate> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// One upload item: verdict, message, quality and (if a face was found) a candidate id.
    fn add_item(
        &self,
        s: &AppState,
        file: String,
        faces: usize,
        face: Option<(Quality, Vec<f32>, Vec<u8>)>,
    ) -> Value {
        let Some((q, embedding, crop_jpeg)) = face else {
            return json!({"file": file, "faces": 0, "ok": false, "verdict": "no_face",
                          "message": "no face found in this photo"});
        };
        let (verdict, message) = match s.deps.quality.check(&q) {
            None => ("ok".to_string(), "good sample".to_string()),
            Some((r, msg)) => (
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                msg,
            ),
        };
        let message = if faces > 1 {
            format!("{message} ({faces} faces found; using the largest)")
        } else {
            message
        };
        let ok = verdict == "ok";
        let id = self.insert(Candidate {
            embedding,
            crop_jpeg,
            quality_json: serde_json::to_string(&q).unwrap_or_else(|_| "{}".into()),
            source: file
                .chars()
                .take(crate::gallery::MAX_SOURCE_CHARS)
                .collect(),
            ok,
            created: Instant::now(),
        });
        json!({"id": id, "file": file, "faces": faces, "ok": ok, "verdict": verdict, "message": message, "quality": q})
    }
}

fn jpeg(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .map_err(|e| Error::internal("cannot encode face crop").with_source(e))?;
    Ok(out)
}

fn largest(faces: Vec<crate::vision::Face>) -> Option<crate::vision::Face> {
    faces.into_iter().max_by(|a, b| {
        let area = |f: &crate::vision::Face| f.detection.width() * f.detection.height();
        area(a).total_cmp(&area(b))
    })
}

fn is_image_name(n: &str) -> bool {
    let n = n.to_ascii_lowercase();
    [
        ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
    ]
    .iter()
    .any(|e| n.ends_with(e))
}

/// Splits an upload into photos: plain files as they are, zips unpacked with limits.
fn photos_of(
    cfg: &super::WebConfig,
    name: &str,
    data: Bytes,
    out: &mut Vec<(String, Bytes)>,
) -> Result<()> {
    let limit_err = || {
        Error::exhausted(format!(
            "too many photos in one upload (limit {}, web.max_upload_photos)",
            cfg.max_upload_photos
        ))
    };
    if !data.starts_with(b"PK\x03\x04") {
        if data.len() > cfg.max_photo_bytes {
            return Err(Error::exhausted(format!(
                "{name} is {} bytes, over the {}-byte photo limit (web.max_photo_bytes)",
                data.len(),
                cfg.max_photo_bytes
            )));
        }
        if out.len() >= cfg.max_upload_photos {
            return Err(limit_err());
        }
        out.push((name.to_string(), data));
        return Ok(());
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(data))
        .map_err(|e| Error::invalid(format!("{name} is not a readable zip file: {e}")))?;
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| Error::invalid(format!("{name}: bad zip entry {i}: {e}")))?;
        let entry_name = entry.name().to_string();
        let base = entry_name.rsplit('/').next().unwrap_or("").to_string();
        if entry.is_dir()
            || !is_image_name(&base)
            || base.starts_with('.')
            || entry_name.starts_with("__MACOSX")
        {
            continue;
        }
        if out.len() >= cfg.max_upload_photos {
            return Err(limit_err());
        }
        // Read at most one byte over each limit: a zip's declared sizes may lie.
        let cap = (cfg.max_photo_bytes as u64)
            .min(cfg.max_zip_uncompressed_bytes - total.min(cfg.max_zip_uncompressed_bytes));
        let mut buf = Vec::new();
        (&mut entry)
            .take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::invalid(format!("{name}: cannot unpack {entry_name}: {e}")))?;
        if buf.len() as u64 > cap {
            return Err(Error::exhausted(format!(
                "{name}: {entry_name} unpacks beyond the limits (web.max_photo_bytes {} per photo, \
                 web.max_zip_uncompressed_bytes {} per zip)",
                cfg.max_photo_bytes, cfg.max_zip_uncompressed_bytes
            )));
        }
        total += buf.len() as u64;
        out.push((format!("{name}/{base}"), Bytes::from(buf)));
    }
    Ok(())
}

/// Reads every file field of a multipart body.
async fn read_files(mut mp: Multipart) -> ApiResult<Vec<(String, Bytes)>> {
    let mut files = Vec::new();
    while let Some(field) = mp.next_field().await? {
        let name = field
            .file_name()
            .map(str::to_string)
            .unwrap_or_else(|| field.name().unwrap_or("upload").to_string());
        let data = field.bytes().await?;
        files.push((name, data));
    }
    if files.is_empty() {
        return Err(Error::invalid(
            "the upload holds no files (send multipart/form-data with one or more file fields)",
        )
        .into());
    }
    Ok(files)
}

fn limits(cfg: &super::WebConfig) -> ImageLimits {
    ImageLimits {
        max_file_bytes: cfg.max_photo_bytes as u64,
        max_pixels: cfg.max_upload_pixels,
        ..ImageLimits::default()
    }
}

/// How long an upload waits for its share of the decode budget before it is refused (503).
const DECODE_QUEUE_WAIT: Duration = Duration::from_secs(20);

/// Reads an uploaded photo's header: its dimensions against `web.max_upload_pixels` and its
/// decode cost against the whole `web.decode_memory_mb`, before anything is decoded. Over either
/// limit is `ResourceExhausted` (413) naming the key; other errors (not an image) are the
/// decoder's.
fn probe_upload(
    cfg: &super::WebConfig,
    budget_bytes: u64,
    name: &str,
    data: &[u8],
) -> Result<Probe> {
    let p = crate::vision::image::probe(data, &limits(cfg)).map_err(|e| {
        if e.kind() == Kind::ResourceExhausted {
            Error::exhausted(format!(
                "{name}: {} (web.max_upload_pixels = {}, web.max_photo_bytes = {})",
                e.message(),
                cfg.max_upload_pixels,
                cfg.max_photo_bytes
            ))
        } else {
            e
        }
    })?;
    if p.decode_bytes > budget_bytes {
        return Err(Error::exhausted(format!(
            "{name} is {}: decoding it needs about {} MiB, more than the console's whole decode \
             budget (web.decode_memory_mb = {}); downscale it or save it as 8-bit",
            p.describe(),
            p.decode_bytes.div_ceil(1 << 20),
            cfg.decode_memory_mb
        )));
    }
    Ok(p)
}

/// Takes `probe`'s share of the console's decode budget (shared by every upload in flight),
/// waiting up to [`DECODE_QUEUE_WAIT`]. Keep the permit while the decoded image is in use.
async fn decode_share(s: &AppState, probe: &Probe) -> ApiResult<DecodePermit> {
    s.decode_budget
        .acquire(probe.decode_bytes, DECODE_QUEUE_WAIT)
        .await
        .map_err(|_| {
            ApiError::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                Kind::Unavailable,
                format!(
                    "the console is busy decoding other uploads (web.decode_memory_mb = {} in \
                     use); try again in a few seconds",
                    s.config.decode_memory_mb
                ),
            )
        })
}

/// `POST /api/uploads` (multipart: photos and/or zips): analyses every photo and returns one
/// item per photo with the largest face's quality verdict and a candidate id to save.
///
/// Every photo's header is read first: one over the pixel or decode budget refuses the whole
/// upload (413, like a photo over `web.max_photo_bytes`) before any photo is decoded. Photos are
/// then decoded one at a time, each within the shared decode budget.
pub async fn upload(
    State(s): State<AppState>,
    mp: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<axum::Json<Value>> {
    let files = read_files(mp?).await?;
    let cfg = s.config.clone();
    let budget = s.decode_budget.total_bytes();
    let photos = blocking(move || {
        let mut photos = Vec::new();
        for (name, data) in files {
            photos_of(&cfg, &name, data, &mut photos)?;
        }
        let mut probed = Vec::with_capacity(photos.len());
        for (name, data) in photos {
            match probe_upload(&cfg, budget, &name, &data) {
                Err(e) if e.kind() == Kind::ResourceExhausted => return Err(e),
                p => probed.push((name, data, p)),
            }
        }
        Ok(probed)
    })
    .await?;
    if photos.is_empty() {
        return Err(Error::invalid(
            "no photos found in the upload (JPEG, PNG, WebP, BMP, GIF or TIFF)",
        )
        .into());
    }
    let mut items = Vec::new();
    for (name, data, probe) in photos {
        let decoded = match probe {
            Ok(probe) => {
                let permit = decode_share(&s, &probe).await?;
                let lim = limits(&s.config);
                blocking(move || crate::vision::image::decode(&data, &lim))
                    .await
                    .map(|img| (img, permit))
            }
            Err(e) => Err(e.into()),
        };
        let (img, permit) = match decoded {
            Ok(d) => d,
            Err(e) => {
                items.push(json!({"file": name, "faces": 0, "ok": false, "verdict": "unreadable", "message": e.error.message()}));
                continue;
            }
        };
        let faces = s.deps.analyzer.analyze(img).await?;
        drop(permit);
        let n = faces.len();
        let face = match largest(faces) {
            Some(f) => Some((
                f.quality,
                f.embedding,
                blocking(move || jpeg(&f.aligned)).await?,
            )),
            None => None,
        };
        items.push(s.candidates.add_item(&s, name, n, face));
    }
    Ok(axum::Json(json!({"samples": items})))
}

/// `GET /api/uploads/{id}/crop`: a candidate's aligned face crop (JPEG).
pub async fn candidate_crop(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
) -> ApiResult<Response> {
    let c = s
        .candidates
        .get(&id)
        .ok_or_else(|| Error::not_found("no such upload sample (expired after 30 minutes?)"))?;
    Ok(jpeg_response(c.crop_jpeg))
}

fn jpeg_response(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=60"),
        ],
        bytes,
    )
        .into_response()
}

/// `POST /api/identify` (multipart, one photo): every face with its best matches.
pub async fn identify(
    State(s): State<AppState>,
    mp: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<axum::Json<Value>> {
    let mut files = read_files(mp?).await?;
    if files.len() != 1 {
        return Err(Error::invalid("send exactly one photo to identify").into());
    }
    let (name, data) = files.remove(0);
    let cfg = s.config.clone();
    let budget = s.decode_budget.total_bytes();
    let (data, probe) = blocking(move || {
        let p = probe_upload(&cfg, budget, &name, &data)?;
        Ok((data, p))
    })
    .await?;
    let permit = decode_share(&s, &probe).await?;
    let lim = limits(&s.config);
    let img = blocking(move || crate::vision::image::decode(&data, &lim)).await?;
    let faces = s.deps.analyzer.analyze(img).await?;
    drop(permit);
    let threshold = s.deps.threshold;
    let g = gallery(&s);
    let mut out = Vec::new();
    for f in faces {
        let matches = g.search(&f.embedding, 3)?;
        let best = matches
            .first()
            .filter(|m| m.similarity >= threshold)
            .cloned();
        out.push(json!({"box": f.detection.bbox, "quality": f.quality, "best": best, "matches": matches}));
    }
    Ok(axum::Json(json!({"threshold": threshold, "faces": out})))
}

// ---------------------------------------------------------------------------------------------
// People

/// `GET /api/people`: everyone with sample counts.
pub async fn list_people(State(s): State<AppState>) -> ApiResult<axum::Json<Vec<PersonSummary>>> {
    let st = s.clone();
    Ok(axum::Json(blocking(move || gallery(&st).people()).await?))
}

/// Body of `POST /api/people`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPerson {
    /// Name (1..=100 characters).
    pub name: String,
    /// Candidate ids from `POST /api/uploads` or `POST /api/live/enroll` to store.
    #[serde(default)]
    pub samples: Vec<String>,
    /// Also store candidates whose quality verdict is not `ok`.
    #[serde(default)]
    pub allow_rejected: bool,
}

fn take_candidates(s: &AppState, ids: &[String], allow_rejected: bool) -> Result<Vec<Candidate>> {
    if ids.len() > 500 {
        return Err(Error::invalid("at most 500 samples per request"));
    }
    ids.iter()
        .map(|id| {
            let c = s.candidates.get(id).ok_or_else(|| {
                Error::not_found(format!(
                    "no upload sample {id:?} (expired after 30 minutes?)"
                ))
            })?;
            if !c.ok && !allow_rejected {
                return Err(Error::invalid(format!(
                    "sample {} failed the quality check; leave it out or set allow_rejected",
                    c.source
                )));
            }
            Ok(c)
        })
        .collect()
}

fn store_samples(
    g: &mut Gallery,
    person: PersonId,
    cands: &[Candidate],
    kind: SampleKind,
) -> Result<Vec<SampleId>> {
    let samples: Vec<NewSample<'_>> = cands
        .iter()
        .map(|c| NewSample {
            kind,
            embedding: &c.embedding,
            crop_jpeg: &c.crop_jpeg,
            quality_json: &c.quality_json,
            source: &c.source,
        })
        .collect();
    g.add_samples(person, &samples)
}

/// `POST /api/people`: enrols a person with the chosen candidates.
pub async fn create_person(
    State(s): State<AppState>,
    JsonBody(b): JsonBody<NewPerson>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let cands = take_candidates(&s, &b.samples, b.allow_rejected)?;
    let st = s.clone();
    let (id, n) = blocking(move || {
        let mut g = gallery(&st);
        let id = g.add_person(&b.name)?;
        match store_samples(&mut g, id, &cands, SampleKind::Positive) {
            Ok(ids) => Ok((id, ids.len())),
            Err(e) => {
                let _ = g.remove_person(id);
                Err(e)
            }
        }
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "samples": n})),
    ))
}

/// Body of `PATCH /api/people/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    /// New name.
    pub name: String,
}

/// `PATCH /api/people/{id}`: rename.
pub async fn rename_person(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
    JsonBody(b): JsonBody<Rename>,
) -> ApiResult<axum::Json<Value>> {
    blocking(move || gallery(&s).rename_person(PersonId(id), &b.name)).await?;
    Ok(ok())
}

/// `DELETE /api/people/{id}`: privacy erase — the person, every sample and crop, and every
/// event (with its snapshot) that names them. Returns what was removed.
pub async fn erase_person(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<Value>> {
    let (samples, events) = blocking(move || {
        let events = s.events.count_for_person(id)?;
        let mut g = gallery(&s);
        let samples = g.samples(PersonId(id))?.len();
        // event.person_id is ON DELETE CASCADE: the events and snapshots go in this statement.
        g.remove_person(PersonId(id))?;
        Ok((samples, events))
    })
    .await?;
    tracing::info!(
        person = id,
        samples,
        events,
        "person erased from the console"
    );
    Ok(axum::Json(
        json!({"ok": true, "samples_removed": samples, "events_removed": events}),
    ))
}

/// `GET /api/people/{id}/samples`.
pub async fn list_samples(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<Vec<SampleInfo>>> {
    Ok(axum::Json(
        blocking(move || gallery(&s).samples(PersonId(id))).await?,
    ))
}

/// Body of `POST /api/people/{id}/samples`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddSamples {
    /// Candidate ids.
    pub samples: Vec<String>,
    /// Also store candidates whose verdict is not `ok`.
    #[serde(default)]
    pub allow_rejected: bool,
}

/// `POST /api/people/{id}/samples`: adds candidates to an existing person.
pub async fn add_samples(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
    JsonBody(b): JsonBody<AddSamples>,
) -> ApiResult<axum::Json<Value>> {
    if b.samples.is_empty() {
        return Err(Error::invalid("no samples given").into());
    }
    let cands = take_candidates(&s, &b.samples, b.allow_rejected)?;
    let ids = blocking(move || {
        store_samples(&mut gallery(&s), PersonId(id), &cands, SampleKind::Positive)
    })
    .await?;
    Ok(axum::Json(json!({"ids": ids})))
}

/// `GET /api/people/{id}/thumbnail`: the crop of the person's first positive sample.
pub async fn thumbnail(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Response> {
    let bytes = blocking(move || {
        let g = gallery(&s);
        let first = g
            .samples(PersonId(id))?
            .into_iter()
            .find(|x| x.kind == SampleKind::Positive);
        let first = first.ok_or_else(|| Error::not_found(format!("person {id} has no samples")))?;
        g.sample_crop(first.id)
    })
    .await?;
    Ok(jpeg_response(bytes))
}

/// `GET /api/samples/{id}/crop`.
pub async fn sample_crop(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Response> {
    Ok(jpeg_response(
        blocking(move || gallery(&s).sample_crop(SampleId(id))).await?,
    ))
}

/// `DELETE /api/samples/{id}`.
pub async fn remove_sample(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<axum::Json<Value>> {
    blocking(move || gallery(&s).remove_sample(SampleId(id))).await?;
    Ok(ok())
}

// ---------------------------------------------------------------------------------------------
// Events

/// `GET /api/events`: filtered, newest first (query: see `EventFilter`).
pub async fn list_events(
    State(s): State<AppState>,
    QueryParams(f): QueryParams<EventFilter>,
) -> ApiResult<axum::Json<Vec<EventRow>>> {
    Ok(axum::Json(blocking(move || s.events.list(&f)).await?))
}

/// `GET /api/events.csv`: the same filter as CSV (up to 10 000 rows).
pub async fn events_csv(
    State(s): State<AppState>,
    QueryParams(mut f): QueryParams<EventFilter>,
) -> ApiResult<Response> {
    f.limit = None;
    let rows = blocking(move || s.events.export(&f, 10_000)).await?;
    let mut out =
        String::from("id,time_utc,ts_ms,kind,camera,track_id,person_id,person,similarity\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.id,
            crate::events::rfc3339_utc(r.at_ms),
            r.at_ms,
            r.kind,
            csv_field(&r.camera),
            r.track_id,
            r.person_id.map(|p| p.to_string()).unwrap_or_default(),
            csv_field(r.person.as_deref().unwrap_or("")),
            r.similarity.map(|x| format!("{x:.3}")).unwrap_or_default()
        ));
    }
    Ok(csv_response("events.csv", out))
}

fn csv_response(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/events/{id}/snapshot`: the event's face crop (JPEG).
pub async fn event_snapshot(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Response> {
    let snap = blocking(move || s.events.snapshot(id)).await?;
    let snap = snap.ok_or_else(|| Error::not_found(format!("event {id} has no snapshot")))?;
    Ok(jpeg_response(snap))
}

/// The face of an event's snapshot: embedding, crop, quality JSON.
async fn event_face(s: &AppState, id: i64) -> ApiResult<Candidate> {
    let st = s.clone();
    let snap = blocking(move || st.events.snapshot(id)).await?;
    let snap = snap.ok_or_else(|| {
        Error::new(
            Kind::FailedPrecondition,
            format!("event {id} has no snapshot to learn from"),
        )
    })?;
    let lim = ImageLimits::default();
    let data = snap.clone();
    let img = blocking(move || crate::vision::image::decode(&data, &lim)).await?;
    let source = format!("console:event={id}");
    if img.width() == 112 && img.height() == 112 {
        // The pipeline stores the aligned crop: embed it as it is.
        let embedding = s.deps.analyzer.embed_aligned(img).await?;
        return Ok(Candidate {
            embedding,
            crop_jpeg: snap,
            quality_json: json!({"from": "event snapshot"}).to_string(),
            source,
            ok: true,
            created: Instant::now(),
        });
    }
    let face = largest(s.deps.analyzer.analyze(img).await?).ok_or_else(|| {
        Error::new(
            Kind::FailedPrecondition,
            format!("no face found in event {id}'s snapshot"),
        )
    })?;
    let crop_jpeg = blocking(move || jpeg(&face.aligned).map(|j| (j, face))).await?;
    let (crop_jpeg, face) = crop_jpeg;
    Ok(Candidate {
        embedding: face.embedding,
        crop_jpeg,
        quality_json: serde_json::to_string(&face.quality).unwrap_or_else(|_| "{}".into()),
        source,
        ok: true,
        created: Instant::now(),
    })
}

/// Body of `POST /api/events/{id}/enroll`: an existing person or a new name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventEnroll {
    /// Add to this person.
    #[serde(default)]
    pub person_id: Option<i64>,
    /// Or: this name (an existing person by name, else a new person).
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /api/events/{id}/enroll`: "enroll this face as…".
pub async fn event_enroll(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
    JsonBody(b): JsonBody<EventEnroll>,
) -> ApiResult<axum::Json<Value>> {
    if b.person_id.is_some() == b.name.is_some() {
        return Err(Error::invalid("give exactly one of person_id or name").into());
    }
    let c = event_face(&s, id).await?;
    let (person, sample, created) = blocking(move || {
        let mut g = gallery(&s);
        let (person, created) = match (b.person_id, b.name) {
            (Some(p), _) => (PersonId(p), false),
            (None, Some(n)) => match g.person_by_name(&n)? {
                Some(p) => (p.id, false),
                None => (g.add_person(&n)?, true),
            },
            _ => unreachable!("checked above"),
        };
        let ids = store_samples(
            &mut g,
            person,
            std::slice::from_ref(&c),
            SampleKind::Positive,
        )?;
        Ok((person, ids[0], created))
    })
    .await?;
    Ok(axum::Json(
        json!({"person_id": person, "sample_id": sample, "created_person": created}),
    ))
}

/// Body of `POST /api/events/{id}/not`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotPerson {
    /// The person the face is not; default: the person the event names.
    pub person_id: Option<i64>,
}

/// `POST /api/events/{id}/not`: "this is not NAME" — stores the event's face as a negative
/// sample of NAME, then identifies the face again and returns the match before and after, so
/// the page can show that it no longer matches NAME.
pub async fn event_not_person(
    State(s): State<AppState>,
    PathParam(id): PathParam<i64>,
    JsonBody(b): JsonBody<NotPerson>,
) -> ApiResult<axum::Json<Value>> {
    let person = match b.person_id {
        Some(p) => p,
        None => {
            let st = s.clone();
            // Any i64 arrives in the path: no `id + 1` overflow.
            let before_id = id.saturating_add(1);
            let row = blocking(move || {
                st.events.export(
                    &EventFilter {
                        before_id: Some(before_id),
                        ..Default::default()
                    },
                    1,
                )
            })
            .await?;
            let row = row
                .into_iter()
                .find(|r| r.id == id)
                .ok_or_else(|| Error::not_found(format!("no event with id {id}")))?;
            row.person_id.ok_or_else(|| {
                Error::invalid(format!(
                    "event {id} names nobody; say which person it is not (person_id)"
                ))
            })?
        }
    };
    let c = event_face(&s, id).await?;
    let threshold = s.deps.threshold;
    let (name, before, after) = blocking(move || {
        let mut g = gallery(&s);
        let p = g
            .person(PersonId(person))?
            .ok_or_else(|| Error::not_found(format!("no person with id {person}")))?;
        let before: Option<Match> = g.search(&c.embedding, 1)?.into_iter().next();
        let mut c = c;
        c.source = format!("console:not-person event={id}");
        store_samples(&mut g, p.id, std::slice::from_ref(&c), SampleKind::Negative)?;
        let after: Option<Match> = g.search(&c.embedding, 1)?.into_iter().next();
        Ok((p.name, before, after))
    })
    .await?;
    let still = after
        .as_ref()
        .is_some_and(|m| m.person == PersonId(person) && m.similarity >= threshold);
    let after_match = after.filter(|m| m.similarity >= threshold);
    Ok(axum::Json(json!({
        "person_id": person, "name": name, "threshold": threshold,
        "before": before, "after": after_match, "still_matches": still,
    })))
}

// ---------------------------------------------------------------------------------------------
// Reports

/// Query of `GET /api/reports` and `/api/reports.csv`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportQuery {
    /// Start, Unix ms (default: 7 days before `until_ms`).
    pub since_ms: Option<i64>,
    /// End, Unix ms (default: now).
    pub until_ms: Option<i64>,
    /// Minutes east of UTC for day/hour buckets (the browser's `-getTimezoneOffset()`).
    pub tz_offset_min: i32,
    /// CSV only: `days`, `hours` or `people` (default `days`).
    pub table: Option<String>,
}

async fn make_report(s: AppState, q: &ReportQuery) -> ApiResult<Report> {
    let until = q.until_ms.unwrap_or_else(|| s.auth.now_ms());
    // Saturating: `until` is not checked yet; an absurd one is refused by the range check.
    let since = q
        .since_ms
        .unwrap_or_else(|| until.saturating_sub(7 * 86_400_000));
    let tz = q.tz_offset_min;
    super::events::check_report_range(since, until, tz)?;
    blocking(move || s.events.report(since, until, tz)).await
}

/// `GET /api/reports`.
pub async fn report(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<ReportQuery>,
) -> ApiResult<axum::Json<Report>> {
    if q.table.is_some() {
        return Err(Error::invalid("table applies to /api/reports.csv only").into());
    }
    Ok(axum::Json(make_report(s, &q).await?))
}

/// `GET /api/reports.csv?table=days|hours|people`.
pub async fn report_csv(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<ReportQuery>,
) -> ApiResult<Response> {
    let table = q.table.clone().unwrap_or_else(|| "days".into());
    if !["days", "hours", "people"].contains(&table.as_str()) {
        return Err(Error::invalid(format!(
            "table must be days, hours or people, got {table:?}"
        ))
        .into());
    }
    let r = make_report(s, &q).await?;
    let mut out = String::new();
    match table.as_str() {
        "days" | "hours" => {
            out.push_str(if table == "days" {
                "day,recognized,unknown\n"
            } else {
                "hour,recognized,unknown\n"
            });
            for b in if table == "days" { &r.days } else { &r.hours } {
                out.push_str(&format!("{},{},{}\n", b.key, b.recognized, b.unknown));
            }
        }
        _ => {
            out.push_str("person_id,name,first_seen_utc,last_seen_utc,visits,events\n");
            for p in &r.people {
                out.push_str(&format!(
                    "{},{},{},{},{},{}\n",
                    p.person_id,
                    csv_field(&p.name),
                    crate::events::rfc3339_utc(p.first_seen_ms),
                    crate::events::rfc3339_utc(p.last_seen_ms),
                    p.visits,
                    p.events
                ));
            }
        }
    }
    Ok(csv_response(&format!("report-{table}.csv"), out))
}

// ---------------------------------------------------------------------------------------------
// System

/// Disk space of the file system holding `path`: `(total, available)` bytes.
fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let f = st.f_frsize as u64;
    Some((st.f_blocks as u64 * f, st.f_bavail as u64 * f))
}

/// CPU temperature in °C from the first thermal zone (Raspberry Pi: the SoC).
fn temperature_c() -> Option<f32> {
    let t = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp").ok()?;
    Some(t.trim().parse::<f32>().ok()? / 1000.0)
}

fn load_avg() -> Option<[f32; 3]> {
    let t = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = t.split_whitespace().map(|x| x.parse::<f32>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Response of `GET /api/system`.
#[derive(Debug, Serialize)]
pub struct SystemInfo {
    /// faced version.
    pub version: &'static str,
    /// 1, 5 and 15 minute load averages.
    pub load: Option<[f32; 3]>,
    /// CPU cores.
    pub cpus: usize,
    /// SoC temperature, °C.
    pub temperature_c: Option<f32>,
    /// Total bytes of the database's file system.
    pub disk_total_bytes: Option<u64>,
    /// Available bytes there.
    pub disk_free_bytes: Option<u64>,
    /// Database size including its WAL, bytes.
    pub db_bytes: u64,
    /// Enrolled people.
    pub people: usize,
    /// Stored face samples.
    pub samples: usize,
    /// Cameras.
    pub cameras: Vec<CameraStats>,
    /// MQTT state.
    pub mqtt: MqttStatus,
}

/// `GET /api/system`.
pub async fn system(State(s): State<AppState>) -> ApiResult<axum::Json<SystemInfo>> {
    let st = s.clone();
    let (db, people, samples) = blocking(move || {
        let g = gallery(&st);
        let people = g.people()?;
        let samples = people
            .iter()
            .map(|p| (p.positive_samples + p.negative_samples) as usize)
            .sum();
        Ok((g.db_path().to_owned(), people.len(), samples))
    })
    .await?;
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let disk = disk_space(dir);
    Ok(axum::Json(SystemInfo {
        version: env!("CARGO_PKG_VERSION"),
        load: load_avg(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        temperature_c: temperature_c(),
        disk_total_bytes: disk.map(|d| d.0),
        disk_free_bytes: disk.map(|d| d.1),
        db_bytes: size(&db) + size(std::path::Path::new(&wal)),
        people,
        samples,
        cameras: s.deps.live.stats(),
        mqtt: s.deps.live.mqtt(),
    }))
}

/// `GET /api/backup`: a zip of a consistent database copy (`VACUUM INTO`) and its key file.
/// Whoever holds it can read every face crop: store it like a password.
pub async fn backup(State(s): State<AppState>) -> ApiResult<Response> {
    let st = s.clone();
    let (zip_bytes, name) = blocking(move || {
        let key_path = gallery(&st).key_path().to_owned();
        let dir = tempfile_dir()?;
        let copy = dir.join("faced.db");
        st.auth.snapshot_to(&copy)?;
        let db = std::fs::read(&copy)
            .map_err(|e| Error::internal("cannot read the backup copy").with_source(e))?;
        let _ = std::fs::remove_dir_all(&dir);
        let key = std::fs::read(&key_path).map_err(|e| {
            Error::unavailable(format!("cannot read key file {}", key_path.display()))
                .with_source(e)
        })?;
        let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let io = |e: zip::result::ZipError| {
            Error::internal("cannot write the backup zip").with_source(e)
        };
        zw.start_file("faced.db", opts).map_err(io)?;
        zw.write_all(&db)
            .map_err(|e| Error::internal("cannot write the backup zip").with_source(e))?;
        zw.start_file("faced.db.key", opts).map_err(io)?;
        zw.write_all(&key)
            .map_err(|e| Error::internal("cannot write the backup zip").with_source(e))?;
        let out = zw.finish().map_err(io)?.into_inner();
        let day = crate::events::rfc3339_utc(st.auth.now_ms())
            .chars()
            .take(10)
            .collect::<String>();
        Ok((out, format!("faced-backup-{day}.zip")))
    })
    .await?;
    tracing::info!("database backup downloaded from the console");
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        zip_bytes,
    )
        .into_response())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("faced-backup-{}", auth::new_secret()?));
    std::fs::create_dir(&d)
        .map_err(|e| Error::unavailable(format!("cannot create {}", d.display())).with_source(e))?;
    Ok(d)
}
