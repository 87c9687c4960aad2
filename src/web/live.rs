//! The seam between the web console and the daemon's pipeline.
//!
//! The console never touches cameras or the vision worker directly: `faced run` hands the web
//! server an `Arc<dyn LiveSource>` that the pipeline implements. Everything here is called from
//! axum handler tasks on the tokio runtime, so implementations must be cheap and non-blocking:
//! `latest_jpeg` returns an already-encoded frame (a `Bytes` clone), `stats` copies counters,
//! `subscribe_overlay` hands out a broadcast receiver the pipeline sends to once per processed
//! frame. A slow browser lags (and skips overlays) instead of slowing the pipeline.
//!
//! [`Live`] implements [`LiveSource`] over a running pipeline's [`Handle`]; [`NoLive`] is the
//! always-built implementation for tools and tests that have no pipeline. The data the pipeline
//! publishes ([`Overlay`], [`CameraStats`], [`TrackSample`]) is defined in `pipeline::live` and
//! re-exported here: the console depends on the pipeline, never the reverse.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::pipeline::Handle;
pub use crate::pipeline::live::{CameraStats, Overlay, OverlayFace, TrackSample};

/// A boxed, sendable future (keeps [`LiveSource`] object safe).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

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

/// Reports the MQTT connection state for the console.
pub type MqttStatusFn = Arc<dyn Fn() -> MqttStatus + Send + Sync>;

/// [`LiveSource`] for a running pipeline: a pipeline [`Handle`] plus a function reporting the
/// MQTT connection state. Every method is cheap and non-blocking (the handle copies counters or
/// hands out an already-encoded frame).
#[derive(Clone)]
pub struct Live {
    /// The pipeline.
    pub handle: Handle,
    /// MQTT state; `None` = MQTT not configured.
    pub mqtt: Option<MqttStatusFn>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("handle", &self.handle)
            .finish()
    }
}

impl LiveSource for Live {
    fn latest_jpeg(&self, camera: &str) -> Option<Bytes> {
        self.handle
            .latest_jpeg(camera)
            .map(|j| Bytes::from((*j).clone()))
    }

    fn subscribe_overlay(&self) -> broadcast::Receiver<Overlay> {
        self.handle.subscribe_overlay()
    }

    fn stats(&self) -> Vec<CameraStats> {
        self.handle.stats()
    }

    fn set_threshold(&self, camera: &str, threshold: f32) -> Result<()> {
        self.handle.set_threshold(camera, threshold)
    }

    fn mqtt(&self) -> MqttStatus {
        match &self.mqtt {
            Some(f) => f(),
            None => MqttStatus {
                enabled: false,
                connected: false,
                broker: None,
                last_error: None,
            },
        }
    }

    fn enroll_from_track(&self, req: TrackEnroll) -> BoxFuture<Result<Vec<TrackSample>>> {
        Box::pin(self.handle.enroll_from_track(
            &req.camera,
            req.track_id,
            req.seconds,
            req.max_samples,
        ))
    }
}
