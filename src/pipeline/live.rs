//! The pipeline as the web console sees it: [`Live`] implements
//! [`crate::web::live::LiveSource`] over a pipeline [`Handle`] plus a function reporting the MQTT
//! connection state. Every method is cheap and non-blocking (axum handler tasks call them).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use super::Handle;
use crate::error::Result;
use crate::web::live::{
    BoxFuture, CameraStats, LiveSource, MqttStatus, Overlay, TrackEnroll, TrackSample,
};

/// Reports the MQTT connection state for the console.
pub type MqttStatusFn = Arc<dyn Fn() -> MqttStatus + Send + Sync>;

/// [`LiveSource`] for a running pipeline.
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
