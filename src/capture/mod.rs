//! Camera capture: every kind of camera behind one blocking trait, [`FrameSource`].
//!
//! | source | module | feature |
//! |---|---|---|
//! | `v4l2:/dev/videoN` (USB / CSI cameras; MJPEG, YUYV, UYVY, NV12, YU12, RGB24, GREY) | [`v4l2`] | `v4l2` (default) |
//! | `dir:PATH` (a folder of images played as a stream) | [`dir`] | always |
//! | `http://…` (MJPEG over HTTP, `multipart/x-mixed-replace`) | [`http`] | always |
//! | `rtsp://HOST/PATH` (IP cameras, H.264 decoded in process) | [`rtsp`] | `rtsp` (default) |
//! | `exec:COMMAND` (a program's output: `rpicam-vid`, `ffmpeg` for RTSP) | [`exec`] | always |
//! | `pattern` (synthetic frames) | [`pattern`] | always |
//!
//! Each camera runs on its own OS thread ([`run_camera`]): open the source, pull frames, hand
//! each to a [`FrameSlot`] that keeps only the newest one (the vision worker takes it when it is
//! free; a frame replaced before it was taken counts as dropped), so capture never waits on
//! inference. When the source fails ([`CaptureError::Unplugged`], [`CaptureError::Stalled`]) the
//! thread logs it, backs off (0.5 s doubling to 30 s) and reopens, until shutdown. Pixel
//! conversion (the raw V4L2 formats → RGB, MJPEG decode) is in [`convert`].
//!
//! What a camera is configured with ([`CameraConfig`], [`SourceSpec`], together a [`Camera`])
//! is defined here too, in `camera.rs`; `config` parses the file into it.

mod camera;
pub mod convert;
pub mod dir;
pub mod exec;
pub mod http;
pub mod pattern;
#[cfg(feature = "rtsp")]
pub mod rtsp;
#[cfg(feature = "v4l2")]
pub mod v4l2;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use image::RgbImage;

use crate::base::{Backoff, Shutdown};
use crate::error::{Error, Kind, Result};

pub use camera::{
    Camera, CameraConfig, PACKAGED_SAMPLES, SourceSpec, V4l2Format, redact_credentials,
    stream_detector,
};

/// Backends compiled into this binary (for `faced check-config`).
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = vec!["dir", "http", "exec", "pattern"];
    if cfg!(feature = "rtsp") {
        v.insert(0, "rtsp");
    }
    if cfg!(feature = "v4l2") {
        v.insert(0, "v4l2");
    }
    v
}

/// Refuses a camera whose kind of source is not compiled into this binary, naming the camera,
/// its source and the way out. `faced check-config` and `faced run` both call it before
/// anything starts, so a build without a backend says so at once instead of retrying the open.
pub fn check_compiled(cam: &Camera) -> Result<()> {
    check_compiled_in(cam, &compiled_backends())
}

fn check_compiled_in(cam: &Camera, built: &[&str]) -> Result<()> {
    let (backend, note) = match &cam.source {
        SourceSpec::V4l2(_) => ("v4l2", "build with default features (needs libclang)"),
        SourceSpec::Rtsp(_) => (
            "rtsp",
            "build with default features, or read the camera with exec: and ffmpeg (docs/cameras.md)",
        ),
        _ => return Ok(()),
    };
    if built.contains(&backend) {
        return Ok(());
    }
    Err(Error::precondition(format!(
        "camera {}: source = \"{}\" needs the `{backend}` feature, but this faced was built \
         without it (capture backends in this build: {}); {note}, or install the Debian package",
        cam.name(),
        cam.source.redacted(),
        built.join(", ")
    )))
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The pixels (shared: the web console and the vision worker may both hold it).
    pub image: Arc<RgbImage>,
    /// Monotonic capture time (latency, tracking).
    pub captured: Instant,
    /// Wall-clock capture time (event timestamps).
    pub wall: SystemTime,
    /// Sequence number from the source, increasing.
    pub seq: u64,
    /// The scene changed completely since the previous frame (a `dir:` source moved to the
    /// next photo): faces cannot be the same people, so tracks end here.
    pub cut: bool,
}

impl Frame {
    /// A frame captured now.
    pub fn now(image: RgbImage, seq: u64) -> Frame {
        // The real clocks, not injected ones: these stamp a physical event (a frame arriving
        // from a camera), and the pipeline measures real latency from them.
        Frame {
            image: Arc::new(image),
            captured: Instant::now(),
            wall: SystemTime::now(),
            seq,
            cut: false,
        }
    }
}

/// Why a source gave no frame.
#[derive(Debug)]
pub enum CaptureError {
    /// The source has no more frames (a `dir:` source with `repeat = false`).
    End,
    /// The device or stream is gone or cannot be opened (unplugged, missing, refused): reopen
    /// with back-off.
    Unplugged(Error),
    /// No frame arrived for this long: reopen with back-off.
    Stalled(Duration),
    /// One frame could not be decoded; the next may be fine.
    BadFrame(Error),
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaptureError::End => f.write_str("end of stream"),
            CaptureError::Unplugged(e) => write!(f, "{e}"),
            CaptureError::Stalled(d) => {
                write!(f, "no frame for {:.1} s (stalled)", d.as_secs_f32())
            }
            CaptureError::BadFrame(e) => write!(f, "bad frame: {e}"),
        }
    }
}

/// A camera: blocking, owned by its capture thread.
pub trait FrameSource: Send {
    /// Waits for and returns the next frame.
    fn next_frame(&mut self) -> std::result::Result<Frame, CaptureError>;

    /// For sources that decode a compressed video stream themselves (`rtsp://`): the work done
    /// so far, for `faced bench --source`. Others decode per frame in `next_frame`, or not at all.
    fn decode_stats(&self) -> Option<DecodeStats> {
        None
    }
}

/// Video decoding done by a source: every frame the decoder produced (including those dropped
/// before the vision thread took them) and the time spent decoding and converting them to RGB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeStats {
    pub frames: u64,
    pub decode: Duration,
}

/// Opens the source a camera is configured with. Errors are what [`run_camera`] logs before
/// retrying; they name the device, folder or URL.
pub fn open(cam: &Camera) -> Result<Box<dyn FrameSource>> {
    let s = &cam.settings;
    match &cam.source {
        SourceSpec::Dir(p) => Ok(Box::new(dir::DirSource::open(
            p,
            s.width,
            s.height,
            s.fps,
            s.frames_per_image,
            s.repeat,
        )?)),
        SourceSpec::Http(url) => Ok(Box::new(http::HttpMjpeg::open(url, stall_timeout(s.fps))?)),
        SourceSpec::Pattern => Ok(Box::new(pattern::Pattern::new(s.width, s.height, s.fps))),
        SourceSpec::Exec(command) => Ok(Box::new(exec::ExecSource::open(
            command,
            s.exec_format,
            s.width,
            s.height,
            stall_timeout(s.fps),
            &s.name,
        )?)),
        SourceSpec::Rtsp(url) => open_rtsp(url, cam),
        SourceSpec::V4l2(dev) => open_v4l2(dev, cam),
    }
}

#[cfg(feature = "rtsp")]
fn open_rtsp(url: &str, cam: &Camera) -> Result<Box<dyn FrameSource>> {
    let s = &cam.settings;
    Ok(Box::new(rtsp::RtspSource::open(
        url,
        s.credentials_file.as_ref(),
        stall_timeout(s.fps),
        &s.name,
    )?))
}

#[cfg(not(feature = "rtsp"))]
fn open_rtsp(url: &str, _cam: &Camera) -> Result<Box<dyn FrameSource>> {
    Err(Error::unavailable(format!(
        "{}: this faced was built without the `rtsp` feature; read the camera with exec: and ffmpeg (docs/cameras.md)",
        redact_credentials(url)
    )))
}

#[cfg(feature = "v4l2")]
fn open_v4l2(dev: &std::path::Path, cam: &Camera) -> Result<Box<dyn FrameSource>> {
    let s = &cam.settings;
    Ok(Box::new(v4l2::V4l2Source::open(
        dev,
        s.v4l2_format.pixels(),
        s.width,
        s.height,
        s.fps,
        stall_timeout(s.fps),
    )?))
}

#[cfg(not(feature = "v4l2"))]
fn open_v4l2(dev: &std::path::Path, _cam: &Camera) -> Result<Box<dyn FrameSource>> {
    check_device_node(dev)?;
    Err(Error::precondition(format!(
        "{} exists, but this faced was built without V4L2 support; rebuild with default \
         features (`cargo build --release`, needs libclang) or install the Debian package",
        dev.display()
    )))
}

/// Checks that a V4L2 device node exists and is a character device; the error says what to do.
pub fn check_device_node(dev: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(dev) {
        Ok(m) if m.file_type().is_char_device() => Ok(()),
        Ok(_) => Err(Error::invalid(format!(
            "{} is not a video device (not a character device)",
            dev.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::unavailable(format!(
            "camera device {} does not exist: is the camera plugged in? (`ls /dev/video*` or \
             `v4l2-ctl --list-devices` lists the cameras)",
            dev.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(Error::new(
            Kind::PermissionDenied,
            format!(
                "no permission to open {}: add the faced user to the `video` group",
                dev.display()
            ),
        )),
        Err(e) => Err(Error::unavailable(format!(
            "cannot open {}: {e}",
            dev.display()
        ))),
    }
}

/// Sleeps the back-off `d` before reopening, or less for a V4L2 camera whose device node
/// appears meanwhile (plugged in again, its driver reloaded): it is tried a second after it
/// appears instead of after the rest of a back-off of up to 30 s. The second is udev's: the
/// kernel creates the node as root's and udev gives it the `video` group just after, so an open
/// at once fails with "permission denied". For the same reason a node changed in the last few
/// seconds (an open that raced udev) is tried again after a second. False when stopping.
fn back_off(stop: &Shutdown, d: Duration, source: &SourceSpec) -> bool {
    const UDEV: Duration = Duration::from_secs(1);
    let SourceSpec::V4l2(dev) = source else {
        return stop.sleep(d);
    };
    if changed_lately(dev) {
        return stop.sleep(d.min(UDEV));
    }
    let end = Instant::now() + d;
    let was_there = dev.exists();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        if !stop.sleep(left.min(Duration::from_millis(250))) {
            return false;
        }
        if !was_there && dev.exists() {
            return stop.sleep(UDEV);
        }
    }
}

/// Whether `dev` exists and was created or had its owner or mode changed in the last 5 s.
fn changed_lately(dev: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(dev) else {
        return false;
    };
    let changed = SystemTime::UNIX_EPOCH
        + Duration::new(
            m.ctime().max(0) as u64,
            m.ctime_nsec().clamp(0, 999_999_999) as u32,
        );
    SystemTime::now()
        .duration_since(changed)
        .is_ok_and(|age| age < Duration::from_secs(5))
}

/// How long without a frame before a live source counts as stalled: 10 frame intervals, at
/// least 3 s.
pub fn stall_timeout(fps: f32) -> Duration {
    Duration::from_secs_f32((10.0 / fps.max(0.1)).max(3.0))
}

/// The newest frame of each camera, waiting for the vision worker.
///
/// Capture threads [`put`](FrameSlot::put) (never blocking for long: a mutex held for a swap);
/// the worker [`take_any`](FrameSlot::take_any)s round-robin. A frame replaced before being
/// taken is counted in [`dropped`](FrameSlot::dropped).
#[derive(Debug)]
pub struct FrameSlot {
    frames: Mutex<SlotState>,
    cv: Condvar,
    /// Signalled when the worker takes a frame (for [`FrameSlot::put_wait`]).
    space: Condvar,
    dropped: Vec<AtomicU64>,
    captured: Vec<AtomicU64>,
}

#[derive(Debug)]
struct SlotState {
    frames: Vec<Option<Frame>>,
    next: usize,
    closed: bool,
}

impl FrameSlot {
    /// Slots for `cameras` cameras.
    pub fn new(cameras: usize) -> FrameSlot {
        FrameSlot {
            frames: Mutex::new(SlotState {
                frames: vec![None; cameras],
                next: 0,
                closed: false,
            }),
            cv: Condvar::new(),
            space: Condvar::new(),
            dropped: (0..cameras).map(|_| AtomicU64::new(0)).collect(),
            captured: (0..cameras).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Stores `frame` as camera `cam`'s newest, replacing (and counting as dropped) one not yet
    /// taken.
    pub fn put(&self, cam: usize, frame: Frame) {
        let mut st = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        if st.frames[cam].replace(frame).is_some() {
            self.dropped[cam].fetch_add(1, Ordering::Relaxed);
        }
        self.captured[cam].fetch_add(1, Ordering::Relaxed);
        drop(st);
        self.cv.notify_one();
    }

    /// Stores `frame` once the worker has taken camera `cam`'s previous one (lossless playback);
    /// gives up, dropping the frame, when the slot is closed or `stop` is raised.
    pub fn put_wait(&self, cam: usize, frame: Frame, stop: &Shutdown) {
        let mut st = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        while st.frames[cam].is_some() {
            if st.closed || stop.is_raised() {
                return;
            }
            st = self
                .space
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.frames[cam] = Some(frame);
        self.captured[cam].fetch_add(1, Ordering::Relaxed);
        drop(st);
        self.cv.notify_one();
    }

    /// Takes the newest frame of some camera (round-robin), waiting up to `timeout`; `None` on
    /// timeout or when closed.
    pub fn take_any(&self, timeout: Duration) -> Option<(usize, Frame)> {
        // A real timeout on a condition variable: real monotonic time.
        let deadline = Instant::now() + timeout;
        let mut st = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if st.closed {
                return None;
            }
            let n = st.frames.len();
            for k in 0..n {
                let i = (st.next + k) % n;
                if let Some(f) = st.frames[i].take() {
                    st.next = (i + 1) % n;
                    self.space.notify_all();
                    return Some((i, f));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Wakes the worker and makes [`take_any`](FrameSlot::take_any) return `None` from now on.
    pub fn close(&self) {
        self.frames.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.cv.notify_all();
        self.space.notify_all();
    }

    /// Frames of camera `cam` replaced before the worker took them.
    pub fn dropped(&self, cam: usize) -> u64 {
        self.dropped[cam].load(Ordering::Relaxed)
    }

    /// Frames camera `cam` has delivered.
    pub fn captured(&self, cam: usize) -> u64 {
        self.captured[cam].load(Ordering::Relaxed)
    }
}

/// What a camera thread reports about itself (for stats and the console).
#[derive(Debug, Default)]
pub struct CameraStatus {
    status: Mutex<String>,
    /// Open failures and stalls since start.
    pub errors: AtomicU64,
    /// Frames that failed to decode since start.
    pub bad_frames: AtomicU64,
}

impl CameraStatus {
    /// Sets the status line (`starting`, `running`, `error: …`, `ended`).
    pub fn set(&self, s: impl Into<String>) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = s.into();
    }

    /// The status line.
    pub fn get(&self) -> String {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A camera's capture loop (run it on its own thread): open, deliver frames into `slot` as
/// camera `idx`, reopen with back-off on failure, return at `stop` or at the end of a
/// non-repeating source. `opener` is [`open`] in the daemon; tests pass their own.
pub fn run_camera(
    idx: usize,
    cam: &Camera,
    opener: &dyn Fn(&Camera) -> Result<Box<dyn FrameSource>>,
    slot: &FrameSlot,
    status: &CameraStatus,
    stop: &Shutdown,
) {
    let name = cam.name();
    let source = cam.source.redacted();
    let mut backoff = Backoff::default();
    // Live devices keep the newest frame; played files may wait for the vision thread.
    let lossless =
        cam.settings.lossless && matches!(cam.source, SourceSpec::Dir(_) | SourceSpec::Pattern);
    status.set("starting");
    while !stop.is_raised() {
        let mut src = match opener(cam) {
            Ok(s) => s,
            Err(e) => {
                status.errors.fetch_add(1, Ordering::Relaxed);
                let d = backoff.next_delay();
                tracing::error!(camera = name, source = %source, "cannot open camera: {e}; retrying in {:.1} s", d.as_secs_f32());
                status.set(format!("error: {e}"));
                if !back_off(stop, d, &cam.source) {
                    break;
                }
                continue;
            }
        };
        tracing::info!(camera = name, source = %source, "camera opened");
        let mut bad_in_row = 0u32;
        while !stop.is_raised() {
            match src.next_frame() {
                Ok(f) => {
                    if bad_in_row > 0 || status.get() != "running" {
                        status.set("running");
                    }
                    bad_in_row = 0;
                    backoff.reset();
                    if lossless {
                        slot.put_wait(idx, f, stop);
                    } else {
                        slot.put(idx, f);
                    }
                }
                Err(CaptureError::End) => {
                    tracing::info!(camera = name, source = %source, "camera source ended (repeat = false)");
                    status.set("ended");
                    return;
                }
                Err(CaptureError::BadFrame(e)) => {
                    status.bad_frames.fetch_add(1, Ordering::Relaxed);
                    bad_in_row += 1;
                    tracing::warn!(camera = name, "skipping a frame: {e}");
                    if bad_in_row >= 30 {
                        tracing::error!(
                            camera = name,
                            "30 bad frames in a row; reopening {source}"
                        );
                        break;
                    }
                }
                Err(e @ (CaptureError::Unplugged(_) | CaptureError::Stalled(_))) => {
                    status.errors.fetch_add(1, Ordering::Relaxed);
                    let d = backoff.next_delay();
                    tracing::error!(camera = name, source = %source, "camera lost: {e}; reopening in {:.1} s", d.as_secs_f32());
                    status.set(format!("error: {e}"));
                    drop(src);
                    if !back_off(stop, d, &cam.source) {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(source: &str) -> Camera {
        Camera {
            settings: CameraConfig {
                name: "front".into(),
                source: source.into(),
                ..CameraConfig::default()
            },
            source: SourceSpec::parse(source).unwrap(),
        }
    }

    #[test]
    fn a_source_this_build_cannot_open_is_refused_by_name() {
        // The shipped build reads V4L2 and RTSP cameras.
        assert!(compiled_backends().contains(&"v4l2"));
        check_compiled(&camera("v4l2:/dev/video0")).unwrap();
        // A build without them says which camera, which source and what to do.
        let e = check_compiled_in(&camera("v4l2:/dev/video0"), &["dir", "pattern"]).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.kind(), Kind::FailedPrecondition, "{msg}");
        for want in [
            "camera front",
            "v4l2:/dev/video0",
            "`v4l2` feature",
            "dir, pattern",
        ] {
            assert!(msg.contains(want), "{want:?} missing from {msg}");
        }
        let e = check_compiled_in(&camera("rtsp://u:secret@cam/s"), &["dir"]).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(e.to_string().contains("exec:"), "{e}");
        // Sources every build reads are never refused.
        check_compiled_in(&camera("pattern"), &[]).unwrap();
    }
}
