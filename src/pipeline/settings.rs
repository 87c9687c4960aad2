//! The pipeline's own settings, built by the caller from the configuration file (`config.rs`
//! converts a validated `Config`), so the pipeline does not depend on the file's layout.
//!
//! [`Settings`] is read once at start; a reload (SIGHUP) hands the pipeline a new one, of which
//! it applies the per-camera recognition settings and the cool-down (module docs of `pipeline`).

use std::time::Duration;

use crate::capture::{Camera, CameraConfig};
use crate::vision::InferenceConfig;

/// Everything the pipeline needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Runtime library, model folder, threads.
    pub inference: InferenceConfig,
    /// Recognition settings per camera (the `[[cameras]]` keys), in configuration order.
    pub cameras: Vec<CameraConfig>,
    /// What the capture threads open, one per entry of `cameras`, same order.
    pub sources: Vec<Camera>,
    /// Per-person cool-down after a `recognized` event.
    pub cooldown: Duration,
    /// Per-camera cool-down after an `unknown` event.
    pub unknown_cooldown: Duration,
}

impl Settings {
    /// The settings of the camera named `name`.
    pub fn camera(&self, name: &str) -> Option<&CameraConfig> {
        self.cameras.iter().find(|c| c.name == name)
    }
}
