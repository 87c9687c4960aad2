//! The live view: `GET /api/cameras`, `GET /api/live/{camera}/mjpeg`,
//! `GET /api/live/{camera}/frame.jpg` and `GET /api/live/overlay` (viewer);
//! `PUT /api/cameras/{camera}/threshold` and `POST /api/live/enroll` (admin).
//!
//! The streams (MJPEG, overlay events) last for hours, so they check their caller again every
//! [`STREAM_RECHECK`] instead of only once, as the router's guard does.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};

use super::{blocking, done};
use crate::error::Error;
use crate::json;
use crate::vision::quality::Quality;
use crate::web::AppState;
use crate::web::error::{ApiResult, JsonBody, PathParam, QueryParams};
use crate::web::live::{CameraStats, MAX_TRACK_ENROLL, TrackEnroll};

/// `GET /api/cameras`: every camera's fps, dropped frames, status and threshold.
pub async fn cameras(State(s): State<AppState>) -> axum::Json<Vec<CameraStats>> {
    axum::Json(s.deps.live.stats())
}

/// `PUT /api/cameras/{camera}/threshold`: applied from the next frame.
pub async fn set_threshold(
    State(s): State<AppState>,
    axum::Extension(by): axum::Extension<crate::audit::By>,
    PathParam(camera): PathParam<String>,
    JsonBody(b): JsonBody<json::Threshold>,
) -> ApiResult<axum::Json<json::Done>> {
    if !(0.0..=1.0).contains(&b.threshold) {
        return Err(Error::invalid(format!(
            "threshold must be within 0..1, got {}",
            b.threshold
        ))
        .into());
    }
    s.deps.live.set_threshold(&camera, b.threshold)?;
    let detail = format!("threshold {}", b.threshold);
    let subject = crate::audit::Subject::camera(&camera);
    blocking(move || {
        s.audit
            .note(&by, crate::audit::Action::Threshold, subject, detail);
        Ok(())
    })
    .await?;
    Ok(done())
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
        matches!(
            crate::web::authenticate(&self.state, &self.headers),
            Ok(Some(_))
        )
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

/// `GET /api/live/overlay`: Server-Sent Events, one `overlay` event (JSON `Overlay`) per
/// processed frame. A slow client skips overlays instead of slowing the pipeline. Ends when the
/// caller is signed out.
pub async fn overlay_sse(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<json::OverlayQuery>,
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

/// `POST /api/live/enroll`: "enroll while walking past" — collects the track's best faces and
/// returns them as candidates with quality verdicts (saved by `POST /api/people`).
pub async fn enroll_from_track(
    State(s): State<AppState>,
    JsonBody(b): JsonBody<json::LiveEnroll>,
) -> ApiResult<axum::Json<json::Candidates<Quality>>> {
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
    let items = samples
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
    Ok(axum::Json(json::Candidates { samples: items }))
}
