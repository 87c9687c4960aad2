//! The daemon's pipeline: cameras → newest-frame slot → vision thread (detect, track, embed,
//! identify, liveness) → events.
//!
//! Threads (all named, so `top -H` and logs say who is busy):
//!
//! * `cam-<name>`, one per camera: [`capture::run_camera`] pulls frames and puts each into the
//!   shared [`FrameSlot`], which keeps only the newest per camera. Capture never waits for
//!   inference; a frame replaced before the vision thread took it counts as dropped.
//! * `faced-vision`: owns the [`Processor`] (the models are `Send`, not `Sync`). Per frame it
//!   detects (every frame, or every Nth), updates the camera's IoU [`Tracker`], embeds only the
//!   tracks that need it (new, better quality, every `embed_every` passes, or still undecided),
//!   asks the gallery (`Gallery::search`) about each embedding, decides identity by a vote over
//!   the track's best embeddings, and emits events through the [`CoolDown`]. It beats a
//!   heartbeat every loop; `faced run` sends the systemd watchdog ping only while the thread is
//!   not stuck ([`Handle::vision_stuck`]: silent for longer than this machine's own frame pace
//!   explains), so a stuck vision thread gets the service restarted and a slow one does not.
//!
//! Embedding only when needed is what makes the pipeline cheap: the Python reference embeds
//! every face of every frame; a face that stays in view here is embedded about once every
//! `embed_every` detections (see `faced bench`).
//!
//! Per frame, [`Processor::process`] runs the stages of `src/pipeline/stages/` in order —
//! detect + track, choose, embed + liveness, match + vote, events, publish — passing plain
//! structs between them; each stage is its own file with its own tests on the fake models
//! (`vision::fake`).
//!
//! [`Handle`] is the small, thread-safe view the web console and `faced run` use: latest frame
//! as JPEG, overlays, stats, live thresholds, enroll-from-track, reload. What it publishes
//! ([`live`]) is plain data owned here; the console re-exports it, and the pipeline does not
//! depend on the console. The pipeline's settings ([`Settings`]) are built by the caller from
//! the configuration file.
//!
//! GPIO ([`Pipeline::start_with_gpio`], docs/gpio.md): the vision thread calls
//! [`GpioHandle::on_recognized`] for each live track with an identity (once per track and
//! person; again on later frames only while the relay is cooling down, so someone still waiting
//! at the door gets it opened), sets the status LED from the cameras' health, and while the PIR
//! reports no motion it takes frames from the slot without running them through the models: the
//! cameras keep capturing, so detection resumes with the next frame once motion returns, and the
//! cameras' status reads `idle (no motion)`. The first frame after a pause is treated as a scene
//! cut (every track ends), because whoever was in view before may be long gone.

pub mod live;
pub mod liveness;
pub mod metrics;
pub mod settings;
pub mod sightings;
mod stages;
pub mod tracker;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;
use tokio::sync::{broadcast, oneshot};

use crate::base::{Clocks, Shutdown};
use crate::capture::{self, CameraStatus, Frame, FrameSlot, FrameSource};
use crate::capture::{Camera, CameraConfig};
use crate::error::{Error, Result};
use crate::events::store::EventSender;
use crate::events::{CoolDown, Event, EventKind};
use crate::gallery::Gallery;
use crate::gpio::{GpioHandle, Trigger};
use crate::inference::Backend;
use crate::inference::litert::LiteRt;
use crate::vision::Analyzer;
use crate::visitors::Visitors;
pub use settings::Settings;
use stages::CamState;

/// Embeddings a track gets (one per detection pass) before an unrecognised face is declared
/// `unknown`.
pub const UNKNOWN_AFTER: u32 = 2;

/// A track is re-embedded when its face quality beats its best embedded one by this factor.
pub const QUALITY_GAIN: f32 = 1.15;

/// A running camera's status while the PIR reports no motion (the Live and System pages show it).
pub const IDLE_STATUS: &str = "idle (no motion)";

/// The status LED blinks for at least this long after the vision thread survived an error.
const LED_ERROR_HOLD: Duration = Duration::from_secs(10);

pub use live::{CameraStats, Overlay, OverlayFace, TrackSample};

/// Cumulative per-stage timings of a [`Processor`] (for `faced bench` and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageStats {
    /// Frames processed.
    pub frames: u64,
    /// Detection passes run.
    pub detect_passes: u64,
    /// Faces detected (sum over passes).
    pub faces: u64,
    /// Embeddings computed.
    pub embeds: u64,
    /// Liveness checks run.
    pub liveness_runs: u64,
    /// Time in the detector.
    pub detect: Duration,
    /// Time aligning and embedding.
    pub embed: Duration,
    /// Time in the tracker and the embed policy.
    pub track: Duration,
    /// Time in gallery search and voting.
    pub matching: Duration,
    /// Time in the liveness model.
    pub liveness: Duration,
    /// Time building events (crops, JPEG).
    pub events: Duration,
}

/// Per-camera state shared between the vision thread and [`Handle`].
#[derive(Debug)]
pub struct CameraShared {
    /// Camera name.
    pub name: String,
    threshold: AtomicU32,
    /// Capture thread status.
    pub status: CameraStatus,
    latest: Mutex<Option<Frame>>,
    jpeg: Mutex<(u64, Option<Arc<Vec<u8>>>)>,
    processed: AtomicU64,
    fps_milli: AtomicU32,
    /// Frame-path latencies for `/metrics` (observed by the vision thread).
    histograms: metrics::FrameHistograms,
}

impl CameraShared {
    fn new(cam: &CameraConfig) -> CameraShared {
        CameraShared {
            name: cam.name.clone(),
            threshold: AtomicU32::new(cam.threshold.to_bits()),
            status: CameraStatus::default(),
            latest: Mutex::new(None),
            jpeg: Mutex::new((0, None)),
            processed: AtomicU64::new(0),
            fps_milli: AtomicU32::new(0),
            histograms: Default::default(),
        }
    }

    /// The recognition threshold in force.
    pub fn threshold(&self) -> f32 {
        f32::from_bits(self.threshold.load(Ordering::Relaxed))
    }
}

struct EnrollRequest {
    camera: usize,
    track_id: u64,
    until: Instant,
    max_samples: usize,
    samples: Vec<TrackSample>,
    reply: oneshot::Sender<Result<Vec<TrackSample>>>,
}

enum Control {
    Enroll(EnrollRequest),
    Reload(Box<Settings>),
}

/// State shared by the pipeline's threads and its [`Handle`]s.
pub struct Shared {
    /// Cameras, in configuration order.
    pub cameras: Vec<CameraShared>,
    /// The newest frame of each camera.
    pub slot: Arc<FrameSlot>,
    overlay: broadcast::Sender<Overlay>,
    started: Instant,
    heartbeat_ms: AtomicU64,
    /// The longest a frame took lately (ms; decays by 1/64 per frame), 0 before the first:
    /// what the watchdog allows a frame on this machine.
    slowest_frame_ms: AtomicU64,
    stop: Shutdown,
    control: Mutex<Vec<Control>>,
    errors: AtomicU64,
    /// Frames the vision thread has finished (all cameras), skipped ones included.
    processed: AtomicU64,
    /// Of those, frames taken while the PIR reported no motion and not run through the models.
    skipped: AtomicU64,
    /// Detection is paused: the PIR reports no motion.
    idle: AtomicBool,
    last_unknown: Mutex<Option<LastUnknown>>,
    /// Who is in view, for presence.
    sightings: sightings::Sightings,
    /// The unit's one cool-down: the vision thread reports its cameras' sightings through it,
    /// and Frigate companion mode its own, so a person is news once whichever camera saw them.
    /// Held for a few map operations, never through I/O.
    cooldown: Arc<Mutex<CoolDown>>,
}

/// The face of the most recently reported unknown track (see [`Handle::last_unknown`]).
#[derive(Debug, Clone)]
struct LastUnknown {
    camera: String,
    track_id: u64,
    face: TrackSample,
}

impl Shared {
    /// Records `face` as the last unknown face: track `track_id` on `camera` was just reported
    /// `unknown`.
    fn set_last_unknown(&self, camera: &str, track_id: u64, face: TrackSample) {
        *self.last_unknown.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastUnknown {
            camera: camera.to_string(),
            track_id,
            face,
        });
    }

    /// A better face of track `track_id` on `camera`: replaces the last unknown face only if
    /// it is that track's (a later unknown track keeps its place).
    fn refresh_last_unknown(&self, camera: &str, track_id: u64, face: &TrackSample) {
        let mut g = self.last_unknown.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = g.as_mut()
            && l.camera == camera
            && l.track_id == track_id
        {
            l.face = face.clone();
        }
    }

    /// Track `track_id` on `camera` was recognised after all: its face is no longer unknown.
    fn forget_last_unknown(&self, camera: &str, track_id: u64) {
        let mut g = self.last_unknown.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_ref()
            .is_some_and(|l| l.camera == camera && l.track_id == track_id)
        {
            *g = None;
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cameras", &self.cameras)
            .finish()
    }
}

impl Shared {
    fn new(cams: &[CameraConfig], cooldown: CoolDown) -> Arc<Shared> {
        Arc::new(Shared {
            cameras: cams.iter().map(CameraShared::new).collect(),
            slot: Arc::new(FrameSlot::new(cams.len())),
            overlay: broadcast::channel(64).0,
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            slowest_frame_ms: AtomicU64::new(0),
            stop: Shutdown::new(),
            control: Mutex::new(Vec::new()),
            errors: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            last_unknown: Mutex::new(None),
            sightings: Default::default(),
            cooldown: Arc::new(Mutex::new(cooldown)),
        })
    }

    fn cooldown(&self) -> std::sync::MutexGuard<'_, CoolDown> {
        self.cooldown.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn beat(&self) {
        self.heartbeat_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Records that a frame took `took`.
    fn frame_took(&self, took: Duration) {
        let ms = took.as_millis() as u64;
        let old = self.slowest_frame_ms.load(Ordering::Relaxed);
        self.slowest_frame_ms
            .store(ms.max(old.saturating_sub(old / 64 + 1)), Ordering::Relaxed);
    }
}

/// The thread-safe view of a running pipeline (cheap to clone).
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    fn cam(&self, camera: &str) -> Result<(usize, &CameraShared)> {
        self.shared
            .cameras
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == camera)
            .ok_or_else(|| Error::not_found(format!("no camera named {camera:?}")))
    }

    /// Calls `f` on the vision thread with each person of the gallery in view, about once a
    /// second per person while they stay ([`sightings`]); `f` must not block.
    pub fn on_sighting(&self, f: sightings::Listener) {
        self.shared.sightings.set_listener(f);
    }

    /// Camera names, in configuration order.
    pub fn cameras(&self) -> Vec<String> {
        self.shared.cameras.iter().map(|c| c.name.clone()).collect()
    }

    /// The newest processed frame of `camera` as JPEG (encoded on demand, cached per frame).
    pub fn latest_jpeg(&self, camera: &str) -> Option<Arc<Vec<u8>>> {
        let (_, c) = self.cam(camera).ok()?;
        let frame = c.latest.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        let mut cache = c.jpeg.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != frame.seq || cache.1.is_none() {
            let jpeg = encode_jpeg(&frame.image, 80).ok()?;
            *cache = (frame.seq, Some(Arc::new(jpeg)));
        }
        cache.1.clone()
    }

    /// The newest processed frame of `camera`.
    pub fn latest_frame(&self, camera: &str) -> Option<Frame> {
        let (_, c) = self.cam(camera).ok()?;
        c.latest.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Overlays of every camera, one per processed frame.
    pub fn subscribe_overlay(&self) -> broadcast::Receiver<Overlay> {
        self.shared.overlay.subscribe()
    }

    /// Every camera's statistics. While the PIR reports no motion, a running camera's status is
    /// `idle (no motion)` and its fps 0 (frames are captured but not processed).
    pub fn stats(&self) -> Vec<CameraStats> {
        let idle = self.idle();
        self.shared
            .cameras
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut status = c.status.get();
                let paused = idle && status == "running";
                if paused {
                    status = IDLE_STATUS.into();
                }
                CameraStats {
                    name: c.name.clone(),
                    fps: if paused {
                        0.0
                    } else {
                        c.fps_milli.load(Ordering::Relaxed) as f32 / 1000.0
                    },
                    dropped: self.shared.slot.dropped(i),
                    status,
                    threshold: c.threshold(),
                }
            })
            .collect()
    }

    /// Whether detection is paused because the PIR reports no motion.
    pub fn idle(&self) -> bool {
        self.shared.idle.load(Ordering::Relaxed)
    }

    /// Frames run through the models so far (all cameras; frames skipped while idle excluded).
    pub fn frames_detected(&self) -> u64 {
        let s = &self.shared;
        s.processed
            .load(Ordering::Acquire)
            .saturating_sub(s.skipped.load(Ordering::Relaxed))
    }

    /// Sets `camera`'s recognition threshold (0..1) from the next frame.
    pub fn set_threshold(&self, camera: &str, threshold: f32) -> Result<()> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(Error::invalid(format!(
                "threshold must be within 0..1, got {threshold}"
            )));
        }
        let (_, c) = self.cam(camera)?;
        c.threshold.store(threshold.to_bits(), Ordering::Relaxed);
        tracing::info!(camera, threshold, "recognition threshold changed");
        Ok(())
    }

    /// Follows track `track_id` on `camera` for `seconds` (embedding it every pass) and
    /// resolves with its best `max_samples` faces by quality.
    pub fn enroll_from_track(
        &self,
        camera: &str,
        track_id: u64,
        seconds: f32,
        max_samples: usize,
    ) -> impl std::future::Future<Output = Result<Vec<TrackSample>>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let req = self.cam(camera).map(|(i, _)| EnrollRequest {
            camera: i,
            track_id,
            until: Instant::now() + Duration::from_secs_f32(seconds.clamp(0.1, 30.0)),
            max_samples: max_samples.clamp(1, 50),
            samples: Vec::new(),
            reply: tx,
        });
        if let Ok(r) = req {
            self.shared
                .control
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Control::Enroll(r));
        }
        async move {
            match rx.await {
                Ok(r) => r,
                Err(_) => Err(Error::unavailable(
                    "the pipeline stopped before the track was collected",
                )),
            }
        }
    }

    /// Applies thresholds, detector scores, tracker and cool-down settings of `cfg` to the
    /// running cameras with the same names (SIGHUP). Sources and camera lists need a restart.
    pub fn reload(&self, cfg: impl Into<Settings>) {
        let cfg: Settings = cfg.into();
        // Here, not on the vision thread: a unit without cameras of its own still has one.
        self.shared
            .cooldown()
            .set_periods(cfg.cooldown, cfg.unknown_cooldown);
        for cam in &cfg.cameras {
            if let Ok((_, c)) = self.cam(&cam.name) {
                c.threshold
                    .store(cam.threshold.to_bits(), Ordering::Relaxed);
            }
        }
        self.shared
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Control::Reload(Box::new(cfg)));
    }

    /// Time since the vision thread last went round its loop.
    pub fn heartbeat_age(&self) -> Duration {
        let now = self.shared.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.shared.heartbeat_ms.load(Ordering::Relaxed)))
    }

    /// Whether the vision thread looks stuck to a watchdog of `period`: silent for longer than
    /// half the period *and* than this machine's own pace allows ([`watchdog_allowance`]).
    /// Returns how long it has been silent and what was allowed, when it is stuck.
    pub fn vision_stuck(&self, period: Duration) -> Option<(Duration, Duration)> {
        let slowest = self.shared.slowest_frame_ms.load(Ordering::Relaxed);
        let allowed = watchdog_allowance(period, Duration::from_millis(slowest));
        let age = self.heartbeat_age();
        (age >= allowed).then_some((age, allowed))
    }

    /// The best face of the most recently reported unknown track (of `camera`, or of any
    /// camera), for "enroll the last unknown face as NAME": recorded when the `unknown` event
    /// is emitted, so it is the face of the last `unknown` event a user was told about (a
    /// stranger held back by the unknown cool-down does not replace it). While that track
    /// stays in view its best-quality face replaces the recorded one; if the track is
    /// recognised after all, nothing is recorded any more.
    pub fn last_unknown(&self, camera: Option<&str>) -> Option<(String, TrackSample)> {
        self.last_unknown_track(camera)
            .map(|(c, _, face)| (c, face))
    }

    /// As [`Handle::last_unknown`], also naming the track: `(camera, track id, face)`.
    pub fn last_unknown_track(&self, camera: Option<&str>) -> Option<(String, u64, TrackSample)> {
        let g = self
            .shared
            .last_unknown
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        g.as_ref()
            .filter(|l| camera.is_none_or(|want| want == l.camera))
            .map(|l| (l.camera.clone(), l.track_id, l.face.clone()))
    }

    /// The unit's person and unknown-face cool-down, for sightings that do not come from the
    /// vision thread (Frigate companion mode): one person is one event, whichever camera saw
    /// them. Lock it only for its own calls.
    pub fn cooldown(&self) -> Arc<Mutex<CoolDown>> {
        self.shared.cooldown.clone()
    }

    /// Errors the vision thread logged and survived.
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// True when every camera has ended (`repeat = false` folders) and the vision thread has
    /// finished every frame they delivered and did not drop: a played folder is fully processed.
    pub fn finished(&self) -> bool {
        let s = &self.shared;
        let (mut delivered, mut dropped) = (0, 0);
        for (i, c) in s.cameras.iter().enumerate() {
            if c.status.get() != "ended" {
                return false;
            }
            delivered += s.slot.captured(i);
            dropped += s.slot.dropped(i);
        }
        s.processed.load(Ordering::Acquire) + dropped >= delivered
    }
}

/// JPEG-encodes an image.
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .map_err(|e| Error::internal(format!("JPEG encoding failed: {e}")))?;
    Ok(out)
}

/// The face box grown by 30 % on each side, clamped to the frame, scaled to at most 192 px:
/// the event snapshot.
pub fn face_crop(img: &RgbImage, bbox: &[f32; 4]) -> RgbImage {
    let (w, h) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
    let x1 = (bbox[0] - 0.3 * w).max(0.0) as u32;
    let y1 = (bbox[1] - 0.3 * h).max(0.0) as u32;
    let x2 = ((bbox[2] + 0.3 * w).min(img.width() as f32) as u32)
        .max(x1 + 1)
        .min(img.width());
    let y2 = ((bbox[3] + 0.3 * h).min(img.height() as f32) as u32)
        .max(y1 + 1)
        .min(img.height());
    let crop = image::imageops::crop_imm(
        img,
        x1.min(img.width() - 1),
        y1.min(img.height() - 1),
        x2 - x1,
        y2 - y1,
    )
    .to_image();
    let side = crop.width().max(crop.height());
    if side > 192 {
        let s = 192.0 / side as f32;
        image::imageops::resize(
            &crop,
            ((crop.width() as f32 * s) as u32).max(1),
            ((crop.height() as f32 * s) as u32).max(1),
            image::imageops::FilterType::Triangle,
        )
    } else {
        crop
    }
}

/// Asks the relay to open for each live track with an identity, once per track and person. A
/// refusal because the relay is still cooling down is retried on the next frames (the person is
/// still waiting at the door); any other answer is final for that track and person.
fn door(g: &GpioHandle, st: &mut CamState) {
    let tracks = &st.tracker.tracks;
    st.door.retain(|id, _| tracks.iter().any(|t| t.id == *id));
    for tr in tracks
        .iter()
        .filter(|t| t.missed == 0 && t.live != Some(false))
    {
        let Some(id) = &tr.identity else { continue };
        if st.door.get(&tr.id) == Some(&id.person_id) {
            continue;
        }
        if g.on_recognized(&id.name) != Trigger::CoolingDown {
            st.door.insert(tr.id, id.person_id);
        }
    }
}

/// Sets the status LED from the pipeline's health: blinking while a camera reports an error or
/// shortly after the vision thread survived one, steady once a camera delivers frames, left as
/// it is (off at start) while every camera is still starting.
fn report_health(g: &GpioHandle, s: &Shared, last_error: Option<Instant>) {
    let statuses: Vec<String> = s.cameras.iter().map(|c| c.status.get()).collect();
    if statuses.iter().any(|st| st.starts_with("error"))
        || last_error.is_some_and(|t| t.elapsed() < LED_ERROR_HOLD)
    {
        g.set_healthy(false);
    } else if statuses.iter().any(|st| st == "running" || st == "ended") {
        g.set_healthy(true);
    }
}

/// The vision side of the pipeline, usable without threads (bench, tests): feed it frames with
/// [`Processor::process`].
pub struct Processor {
    analyzers: Vec<Analyzer>,
    liveness: Option<liveness::Liveness>,
    cams: Vec<CamState>,
    gallery: Arc<Mutex<Gallery>>,
    clock: Arc<dyn Clocks>,
    events: Option<EventSender>,
    shared: Arc<Shared>,
    enrolls: Vec<EnrollRequest>,
    gpio: Option<GpioHandle>,
    visitors: Option<Arc<Visitors>>,
    /// The gallery generation the visitors were last re-checked against.
    visitors_checked: u64,
    /// Observe the frame-path histograms (off only to measure what they cost).
    observe: bool,
    /// Cumulative stage timings.
    pub stats: StageStats,
}

impl Processor {
    /// Loads the LiteRT runtime and the models for every camera of `cfg` (and the liveness
    /// model if a camera wants it). Events go to `events` (none: returned from
    /// [`Processor::process`] only).
    pub fn new(
        cfg: impl Into<Settings>,
        gallery: Arc<Mutex<Gallery>>,
        events: Option<EventSender>,
        clock: Arc<dyn Clocks>,
    ) -> Result<Processor> {
        let cfg: Settings = cfg.into();
        let rt = LiteRt::open(cfg.inference.litert_lib.as_deref())?;
        Self::with_backend(&cfg, rt.as_ref(), gallery, events, clock)
    }

    /// As [`Processor::new`], with the models compiled by `backend` (e.g.
    /// the unit tests' `vision::fake::FakeModels`).
    pub fn with_backend(
        cfg: &Settings,
        backend: &dyn Backend,
        gallery: Arc<Mutex<Gallery>>,
        events: Option<EventSender>,
        clock: Arc<dyn Clocks>,
    ) -> Result<Processor> {
        let inf = &cfg.inference;
        let mut analyzers = Vec::new();
        for c in &cfg.cameras {
            analyzers.push(Analyzer::with_backend(backend, inf, c.detector)?);
        }
        let liveness = if cfg.cameras.iter().any(|c| c.liveness) {
            Some(liveness::Liveness::open(backend, inf)?)
        } else {
            None
        };
        Ok(Processor {
            analyzers,
            liveness,
            cams: cfg.cameras.iter().cloned().map(CamState::new).collect(),
            gallery,
            clock,
            events,
            shared: Shared::new(
                &cfg.cameras,
                CoolDown::new(cfg.cooldown, cfg.unknown_cooldown),
            ),
            enrolls: Vec::new(),
            gpio: None,
            visitors: None,
            visitors_checked: 0,
            observe: true,
            stats: StageStats::default(),
        })
    }

    /// The handle onto this processor's shared state.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    fn apply_control(&mut self) {
        let pending: Vec<Control> = std::mem::take(
            &mut *self
                .shared
                .control
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for c in pending {
            match c {
                Control::Enroll(r) => {
                    let known = self.cams[r.camera]
                        .tracker
                        .tracks
                        .iter()
                        .any(|t| t.id == r.track_id);
                    if known {
                        self.enrolls.push(r);
                    } else {
                        let cam = &self.cams[r.camera].cfg.name;
                        let _ = r.reply.send(Err(Error::not_found(format!(
                            "no track {} on camera {cam:?} (it left the view)",
                            r.track_id
                        ))));
                    }
                }
                Control::Reload(cfg) => {
                    for (i, st) in self.cams.iter_mut().enumerate() {
                        let Some(new) = cfg.camera(&st.cfg.name) else {
                            continue;
                        };
                        let mut s = new.clone();
                        if let Err(e) = self.analyzers[i].detector.set_config(s.detector) {
                            tracing::warn!(
                                camera = st.cfg.name,
                                "detector change needs a restart: {e}"
                            );
                            s.detector = st.cfg.detector;
                        }
                        st.set_config(s);
                    }
                    tracing::info!("pipeline settings reloaded");
                }
            }
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.enrolls.len() {
            if self.enrolls[i].until <= now {
                let mut r = self.enrolls.swap_remove(i);
                r.samples.sort_by(|a, b| {
                    (b.quality.sharpness * b.quality.frontal)
                        .total_cmp(&(a.quality.sharpness * a.quality.frontal))
                });
                r.samples.truncate(r.max_samples);
                let _ = r.reply.send(Ok(r.samples));
            } else {
                i += 1;
            }
        }
    }

    /// The vision thread's step for one frame: [`Processor::process`], unless the PIR reports no
    /// motion, in which case the frame only becomes the camera's latest picture (see the module
    /// docs). Logs when detection pauses and resumes, with the frames run through the models so
    /// far, which stays the same while paused.
    fn gated(&mut self, cam: usize, frame: &Frame) -> Result<()> {
        let motion = self.gpio.as_ref().is_none_or(GpioHandle::motion_active);
        let was_idle = self.shared.idle.load(Ordering::Relaxed);
        if !motion {
            if !was_idle {
                self.shared.idle.store(true, Ordering::Relaxed);
                for st in &mut self.cams {
                    st.cut_next = true;
                }
                // Counts in the message, not as fields: docs/gpio.md gives this line's format.
                tracing::info!(
                    "no motion (PIR): detection paused frames_detected={}",
                    self.handle().frames_detected()
                );
            }
            self.shared.skipped.fetch_add(1, Ordering::Relaxed);
            *self.shared.cameras[cam]
                .latest
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(frame.clone());
            self.apply_control();
            return Ok(());
        }
        if was_idle {
            self.shared.idle.store(false, Ordering::Relaxed);
            tracing::info!(
                "motion (PIR): detection resumed frames_detected={} frames_skipped={}",
                self.handle().frames_detected(),
                self.shared.skipped.load(Ordering::Relaxed)
            );
        }
        if std::mem::take(&mut self.cams[cam].cut_next) {
            let mut f = frame.clone();
            f.cut = true;
            return self.process(cam, &f).map(drop);
        }
        self.process(cam, frame).map(drop)
    }

    /// Processes one frame of camera `cam`; returns the events it caused (also sent to the
    /// event writer, if any). The stages, in order (see `stages`): detect + track, choose,
    /// embed + liveness, match + vote, events, then the door relay, then publish. Frames that
    /// are not detection passes go straight to publish: their tracks coast.
    pub fn process(&mut self, cam: usize, frame: &Frame) -> Result<Vec<Event>> {
        let (started, before) = (Instant::now(), self.stats);
        self.apply_control();
        let now = self.clock.monotonic();
        self.stats.frames += 1;
        let threshold = self.shared.cameras[cam].threshold();
        self.recheck_visitors(threshold);
        let st = &mut self.cams[cam];
        let analyzer = &mut self.analyzers[cam];
        let mut events = Vec::new();
        if let Some(seen) =
            stages::detect::run(&mut analyzer.detector, st, frame, now, &mut self.stats)?
        {
            let t = Instant::now();
            let collecting: Vec<u64> = self
                .enrolls
                .iter()
                .filter(|r| r.camera == cam)
                .map(|r| r.track_id)
                .collect();
            let todo = stages::choose::run(&st.cfg, &st.tracker.tracks, &seen, &collecting);
            self.stats.track += t.elapsed();
            let embedded = stages::embed::run(
                analyzer,
                self.liveness.as_mut(),
                st,
                &frame.image,
                todo,
                &mut self.stats,
            )?;
            if !embedded.is_empty() {
                let g = self.gallery.lock().unwrap_or_else(|p| p.into_inner());
                stages::vote::run(
                    &*g,
                    st,
                    cam,
                    &frame.image,
                    embedded,
                    threshold,
                    &mut self.enrolls,
                    &self.shared,
                    &mut self.stats,
                )?;
            }
            let mut unknowns = Vec::new();
            events = stages::events::run(
                &mut self.shared.cooldown(),
                st,
                seen.ended,
                frame,
                now,
                &self.shared,
                &mut self.stats,
                &mut unknowns,
            );
            if let Some(v) = &self.visitors {
                let t = Instant::now();
                stages::visitors::run(v, st, unknowns, &mut events);
                self.stats.events += t.elapsed();
            }
        }
        if let Some(g) = &self.gpio {
            door(g, st);
        }
        stages::publish::run(&self.shared, cam, st, frame, &events, self.events.as_ref());
        self.shared.cooldown().prune(now);
        if self.observe {
            self.shared.cameras[cam].histograms.observe(
                frame.captured,
                started,
                now,
                &before,
                &self.stats,
                &events,
                &self.cams[cam].tracker.tracks,
            );
        }
        Ok(events)
    }

    /// Whether frames are observed into the `/metrics` histograms (default on). Off only to
    /// measure their cost (`cargo bench --bench metrics`).
    pub fn set_observe(&mut self, on: bool) {
        self.observe = on;
    }

    /// Groups unknown faces into visitors from now on (src/visitors/).
    pub fn set_visitors(&mut self, visitors: Option<Arc<Visitors>>) {
        self.visitors = visitors;
    }

    /// After samples were added to the gallery (any front end, or a reload), visitors that now
    /// match an enrolled person are resolved as them: their `unknown` events are re-labelled.
    fn recheck_visitors(&mut self, threshold: f32) {
        let Some(v) = &self.visitors else { return };
        let g = self.gallery.lock().unwrap_or_else(|p| p.into_inner());
        if g.generation() == self.visitors_checked {
            return;
        }
        self.visitors_checked = g.generation();
        if v.is_empty() || g.index().is_empty() {
            return;
        }
        if let Err(e) = v.recheck(&g, threshold) {
            tracing::warn!("re-checking unknown visitors against the gallery failed: {e}");
        }
    }

    /// Ends every track (emitting `left` for reported ones): shutdown.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        for st in &mut self.cams {
            for tr in st.tracker.end_all() {
                if tr.reported && tr.live != Some(false) {
                    let dur = tr.last_seen.saturating_duration_since(tr.first_seen);
                    out.push(Event {
                        duration_ms: Some(dur.as_millis() as u64),
                        ..stages::events::base_event(
                            EventKind::Left,
                            &st.cfg.name,
                            &tr,
                            tr.last_wall_ms,
                        )
                    });
                }
            }
        }
        if let Some(tx) = &self.events {
            for e in &out {
                tx.send(e.clone());
            }
        }
        out
    }
}

/// How long the vision thread may stay inside one frame before the watchdog counts it as
/// stuck: half the watchdog period, or four times the slowest recent frame when this machine is
/// slower than that (a Pi under load, an emulated CPU), or [`FIRST_FRAME_GRACE`] before any
/// frame finished (the first inference of each model also prepares its weights). A slow CPU
/// then makes faced slow, not restarted in a loop; a thread truly stuck still stops the pings.
pub fn watchdog_allowance(period: Duration, slowest: Duration) -> Duration {
    let pace = if slowest.is_zero() {
        FIRST_FRAME_GRACE
    } else {
        slowest * 4
    };
    (period / 2).max(pace)
}

/// What the watchdog allows the first frame (see [`watchdog_allowance`]).
pub const FIRST_FRAME_GRACE: Duration = Duration::from_secs(120);

/// A running pipeline: camera threads plus the vision thread.
pub struct Pipeline {
    handle: Handle,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("threads", &self.threads.len())
            .finish()
    }
}

/// Opens a camera's source (the daemon uses [`capture::open`]; tests inject their own).
pub type Opener = Arc<dyn Fn(&Camera) -> Result<Box<dyn FrameSource>> + Send + Sync>;

impl Pipeline {
    /// Loads the models (on the calling thread, so a broken installation fails here), then
    /// starts one capture thread per camera and the vision thread. No GPIO.
    pub fn start(
        cfg: impl Into<Settings>,
        gallery: Arc<Mutex<Gallery>>,
        events: Option<EventSender>,
        clock: Arc<dyn Clocks>,
        opener: Option<Opener>,
    ) -> Result<Pipeline> {
        Self::start_with_gpio(cfg, gallery, events, clock, opener, None, None)
    }

    /// As [`Pipeline::start`], driving `gpio` (relay, status LED, PIR gating; module docs) and
    /// grouping unknown faces into `visitors`.
    pub fn start_with_gpio(
        cfg: impl Into<Settings>,
        gallery: Arc<Mutex<Gallery>>,
        events: Option<EventSender>,
        clock: Arc<dyn Clocks>,
        opener: Option<Opener>,
        gpio: Option<GpioHandle>,
        visitors: Option<Arc<Visitors>>,
    ) -> Result<Pipeline> {
        let cfg: Settings = cfg.into();
        let mut processor = Processor::new(cfg.clone(), gallery, events, clock)?;
        processor.gpio = gpio.clone();
        processor.visitors = visitors;
        let handle = processor.handle();
        let shared = handle.shared.clone();
        let opener: Opener = opener.unwrap_or_else(|| Arc::new(capture::open));
        let mut threads = Vec::new();
        for (i, cam) in cfg.sources.iter().enumerate() {
            let (cam, shared, opener) = (cam.clone(), shared.clone(), opener.clone());
            let t = std::thread::Builder::new()
                .name(format!("cam-{}", cam.name()))
                .spawn(move || {
                    let _span = tracing::info_span!("camera", camera = cam.name()).entered();
                    capture::run_camera(
                        i,
                        &cam,
                        &*opener,
                        &shared.slot,
                        &shared.cameras[i].status,
                        &shared.stop,
                    );
                })
                .map_err(|e| Error::internal(format!("cannot start a camera thread: {e}")))?;
            threads.push(t);
        }
        let vshared = shared.clone();
        let t = std::thread::Builder::new()
            .name("faced-vision".into())
            .spawn(move || {
                let mut backoff =
                    crate::base::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
                let mut last_error = None;
                let mut next_health = Instant::now();
                vshared.beat();
                while !vshared.stop.is_raised() {
                    vshared.beat();
                    if let Some(g) = gpio.as_ref().filter(|_| Instant::now() >= next_health) {
                        report_health(g, &vshared, last_error);
                        next_health = Instant::now() + Duration::from_millis(250);
                    }
                    let Some((cam, frame)) = vshared.slot.take_any(Duration::from_millis(200))
                    else {
                        processor.apply_control();
                        continue;
                    };
                    let t = Instant::now();
                    let r = processor.gated(cam, &frame);
                    vshared.frame_took(t.elapsed());
                    vshared.processed.fetch_add(1, Ordering::Release);
                    match r {
                        Ok(()) => backoff.reset(),
                        Err(e) => {
                            last_error = Some(Instant::now());
                            vshared.errors.fetch_add(1, Ordering::Relaxed);
                            let d = backoff.next_delay();
                            tracing::error!(
                                camera = vshared.cameras[cam].name,
                                "vision error: {e}; continuing in {:.1} s",
                                d.as_secs_f32()
                            );
                            vshared.stop.sleep(d);
                        }
                    }
                }
                processor.finish();
                // Drop the models and the event sender here, on this thread.
                drop(processor);
                tracing::debug!("vision thread stopped");
            })
            .map_err(|e| Error::internal(format!("cannot start the vision thread: {e}")))?;
        threads.push(t);
        Ok(Pipeline { handle, threads })
    }

    /// The handle.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops the cameras and the vision thread (ending every track) and waits for them.
    pub fn stop(self) {
        self.handle.shared.stop.raise();
        self.handle.shared.slot.close();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod watchdog_tests {
    use super::*;

    #[test]
    fn a_slow_machine_is_allowed_its_pace_and_a_stuck_thread_is_not() {
        let period = Duration::from_secs(30);
        // Before any frame: the first-frame grace, not half the period.
        assert_eq!(
            watchdog_allowance(period, Duration::ZERO),
            FIRST_FRAME_GRACE
        );
        // A fast machine: half the period.
        assert_eq!(
            watchdog_allowance(period, Duration::from_millis(80)),
            Duration::from_secs(15)
        );
        // Frames of 20 s (an emulated CPU): four of them.
        assert_eq!(
            watchdog_allowance(period, Duration::from_secs(20)),
            Duration::from_secs(80)
        );

        let h = Handle {
            shared: Shared::new(&[], CoolDown::new(Duration::ZERO, Duration::ZERO)),
        };
        let period = Duration::from_millis(8);
        h.shared.beat();
        h.shared.frame_took(Duration::from_millis(50));
        assert_eq!(h.vision_stuck(period), None);
        // Silent for 250 ms after frames of 50 ms: stuck (allowed 200 ms).
        std::thread::sleep(Duration::from_millis(250));
        let (age, allowed) = h.vision_stuck(period).expect("stuck");
        assert!(age >= Duration::from_millis(250), "{age:?}");
        assert_eq!(allowed, Duration::from_millis(200));
        // The same silence after a frame of 10 s on this machine: not stuck.
        h.shared.frame_took(Duration::from_secs(10));
        assert_eq!(h.vision_stuck(period), None);
        // The allowance decays with fast frames, so one slow frame long ago stops counting.
        for _ in 0..400 {
            h.shared.frame_took(Duration::from_millis(1));
        }
        assert!(h.shared.slowest_frame_ms.load(Ordering::Relaxed) < 10);
        assert!(h.vision_stuck(Duration::from_millis(8)).is_some());
    }
}
