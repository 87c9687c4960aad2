//! The seam between the web console and the daemon's pipeline (issue 4, item 3).
//!
//! The console never touches cameras or the vision worker directly: `faced run` hands the web
//! server an `Arc<dyn LiveSource>` that the pipeline implements. Everything here is called from
//! axum handler tasks on the tokio runtime, so implementations must be cheap and non-blocking:
//! `latest_jpeg` returns an already-encoded frame (a `Bytes` clone), `stats` copies counters,
//! `subscribe_overlay` hands out a broadcast receiver the pipeline sends to once per processed
//! frame. A slow browser lags (and skips overlays) instead of slowing the pipeline.
//!
//! [`NoLive`] is the always-built implementation for tools and tests that have no pipeline.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::{Error, Result};

/// A boxed, sendable future (keeps [`LiveSource`] object safe).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One tracked face in an [`Overlay`], in the coordinates of the frame it was found in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlayFace {
    /// Tracker id, stable while the face stays in view (used by "enroll while walking past").
    pub track_id: u64,
    /// Box `[x1, y1, x2, y2]` in frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Recognised person's name, `None` = unknown.
    pub name: Option<String>,
    /// Similarity of the best gallery match (even below the threshold), if any.
    pub similarity: Option<f32>,
}

/// What the pipeline found in one processed frame of one camera; drawn on the Live page's
/// `<canvas>` over the matching MJPEG frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overlay {
    /// Camera name (as in faced.toml).
    pub camera: String,
    /// Frame sequence number, increasing per camera.
    pub frame_seq: u64,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Faces in this frame (empty = none).
    pub faces: Vec<OverlayFace>,
}

/// Health of one camera as the Live and System pages show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraStats {
    /// Camera name.
    pub name: String,
    /// Frames processed per second, averaged over the last few seconds.
    pub fps: f32,
    /// Frames dropped since start (the vision worker was busy).
    pub dropped: u64,
    /// `"running"`, `"starting"`, `"error: <message>"`, … (free text for people).
    pub status: String,
    /// Current recognition threshold (cosine similarity) for this camera.
    pub threshold: f32,
}

/// Connection state of the MQTT client, for the System page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MqttStatus {
    /// Whether MQTT is configured at all.
    pub enabled: bool,
    /// Whether the client is connected now.
    pub connected: bool,
    /// Broker address as configured (no credentials).
    pub broker: Option<String>,
    /// Last error, if any.
    pub last_error: Option<String>,
}

/// A face collected from a live track for enrollment (see [`LiveSource::enroll_from_track`]).
#[derive(Debug, Clone)]
pub struct TrackSample {
    /// L2-normalised embedding.
    pub embedding: Vec<f32>,
    /// JPEG of the 112×112 aligned crop.
    pub crop_jpeg: Vec<u8>,
    /// Quality of this face.
    pub quality: crate::vision::quality::Quality,
}

/// Request for "enroll while walking past".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackEnroll {
    /// Camera the track is on.
    pub camera: String,
    /// Track to follow ([`OverlayFace::track_id`]).
    pub track_id: u64,
    /// How long to collect, seconds (the console limits it to 1..=30).
    pub seconds: f32,
    /// At most this many samples, the best-quality and most varied ones.
    pub max_samples: usize,
}

/// What the daemon's pipeline offers the console. Implemented by `faced run`; see the module
/// docs for the threading rules.
pub trait LiveSource: Send + Sync {
    /// The newest JPEG frame of `camera`, `None` if the camera is unknown or has no frame yet.
    fn latest_jpeg(&self, camera: &str) -> Option<Bytes>;

    /// A receiver of overlays for all cameras, one per processed frame.
    fn subscribe_overlay(&self) -> broadcast::Receiver<Overlay>;

    /// Every camera's current statistics, in configuration order.
    fn stats(&self) -> Vec<CameraStats>;

    /// Sets `camera`'s recognition threshold (cosine similarity, 0..1), effective from the next
    /// frame. [`Kind::NotFound`](crate::Kind::NotFound) for an unknown camera,
    /// [`Kind::InvalidInput`](crate::Kind::InvalidInput) for a value out of range.
    fn set_threshold(&self, camera: &str, threshold: f32) -> Result<()>;

    /// MQTT connection state.
    fn mqtt(&self) -> MqttStatus;

    /// Follows a live track for `req.seconds` and resolves with its best-quality, most varied
    /// faces (the console shows their quality verdicts and stores the ones the user keeps).
    /// [`Kind::NotFound`](crate::Kind::NotFound) if the track is not (or no longer) in view.
    fn enroll_from_track(&self, req: TrackEnroll) -> BoxFuture<Result<Vec<TrackSample>>>;
}

/// A [`LiveSource`] without cameras: no frames, no overlays, every camera unknown.
#[derive(Debug)]
pub struct NoLive {
    tx: broadcast::Sender<Overlay>,
}

impl Default for NoLive {
    fn default() -> Self {
        NoLive {
            tx: broadcast::channel(1).0,
        }
    }
}

impl LiveSource for NoLive {
    fn latest_jpeg(&self, _camera: &str) -> Option<Bytes> {
        None
    }

    fn subscribe_overlay(&self) -> broadcast::Receiver<Overlay> {
        self.tx.subscribe()
    }

    fn stats(&self) -> Vec<CameraStats> {
        Vec::new()
    }

    fn set_threshold(&self, camera: &str, _threshold: f32) -> Result<()> {
        Err(Error::not_found(format!(
            "no camera named {camera:?} (no pipeline is running)"
        )))
    }

    fn mqtt(&self) -> MqttStatus {
        MqttStatus {
            enabled: false,
            connected: false,
            broker: None,
            last_error: None,
        }
    }

    fn enroll_from_track(&self, req: TrackEnroll) -> BoxFuture<Result<Vec<TrackSample>>> {
        Box::pin(async move {
            Err(Error::not_found(format!(
                "no track {} on camera {:?} (no pipeline is running)",
                req.track_id, req.camera
            )))
        })
    }
}

/// Clamp used by the console for [`TrackEnroll::seconds`].
pub const MAX_TRACK_ENROLL: Duration = Duration::from_secs(30);
