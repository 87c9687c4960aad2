//! The pipeline's own settings, built by the caller from the configuration file (`config.rs`
//! converts a validated `Config`), so the pipeline does not depend on the file's layout.
//!
//! [`Settings`] is read once at start; a reload (SIGHUP) hands the pipeline a new one, of which
//! it applies the per-camera recognition settings and the cool-down (module docs of `pipeline`).

use std::time::Duration;

use crate::capture::Camera;
use crate::vision::InferenceConfig;
use crate::vision::detect::DetectorConfig;

/// Recognition settings of one camera (the `[[cameras]]` keys of the same names).
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSettings {
    /// Camera name (events, topics, the console).
    pub name: String,
    /// Cosine similarity a face must reach to be recognised (0..1).
    pub threshold: f32,
    /// Run the detector on every Nth frame (1 = every frame); tracks coast in between.
    pub detect_every: u32,
    /// Re-embed a live track every N detections even if its quality did not improve.
    pub embed_every: u32,
    /// How many of a track's best embeddings vote on its identity.
    pub votes: usize,
    /// Faces whose shorter box side is below this many pixels are tracked but not embedded.
    pub min_face_px: f32,
    /// IoU a detection needs with a track's last box to continue that track.
    pub track_iou: f32,
    /// A track ends after this many detection passes without a matching face.
    pub track_max_missed: u32,
    /// Run the anti-spoofing model once per track and drop faces it calls spoofed.
    pub liveness: bool,
    /// Spoof score at or above which a face is rejected.
    pub liveness_threshold: f32,
    /// Face detector.
    pub detector: DetectorConfig,
}

/// Everything the pipeline needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Runtime library, model folder, threads.
    pub inference: InferenceConfig,
    /// Recognition settings per camera, in configuration order.
    pub cameras: Vec<CameraSettings>,
    /// What the capture threads open, one per entry of `cameras`, same order.
    pub sources: Vec<Camera>,
    /// Per-person cool-down after a `recognized` event.
    pub cooldown: Duration,
    /// Per-camera cool-down after an `unknown` event.
    pub unknown_cooldown: Duration,
}

impl Settings {
    /// The settings of the camera named `name`.
    pub fn camera(&self, name: &str) -> Option<&CameraSettings> {
        self.cameras.iter().find(|c| c.name == name)
    }
}
