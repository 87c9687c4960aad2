//! The stages of one frame's trip through the vision thread, in order, each a unit of code with
//! its own tests (on the `vision::fake` backend):
//!
//! 1. [`detect`]: detect + track — the detector on this frame (every `detect_every`th frame, or
//!    at a scene cut), then the camera's IoU tracker; → [`Seen`].
//! 2. [`choose`]: which of the seen tracks to embed (new, better quality, every `embed_every`
//!    passes, still undecided, or being collected for enrollment); → [`Candidate`]s.
//! 3. [`embed`]: embed + liveness — align and embed the candidates, and run the liveness model
//!    once per track; → [`Embedded`] faces.
//! 4. [`vote`]: match + vote — ask the gallery about each embedding and decide each track's
//!    identity by a vote over its best samples.
//! 5. [`events`]: `recognized`, `unknown` and `left` events through the cool-down; then
//!    [`visitors`] places each track decided unknown among the unknown visitors and gives its
//!    event the visitor's id (or drops it, for a visitor marked ignored).
//! 6. [`publish`]: the frame, overlay and stats for [`super::Handle`], and the events to the
//!    event writer.
//!
//! All stages run on the vision thread and own nothing: the per-camera state ([`CamState`]) and
//! the models are the `Processor`'s and are lent to each stage. The data passed between stages
//! is plain structs. Stage timings accumulate in [`StageStats`](super::StageStats) under the
//! same names.

pub mod choose;
pub mod detect;
pub mod embed;
pub mod events;
pub mod publish;
pub mod visitors;
pub mod vote;

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::tracker::{Track, Tracker, TrackerConfig};
use crate::capture::CameraConfig;
use crate::vision::Face;
use crate::vision::detect::Detection;

/// One camera's state on the vision thread.
/// How many frame intervals the processed rate is averaged over.
pub const FPS_WINDOW: usize = 10;

#[derive(Debug)]
pub struct CamState {
    /// Its settings in force.
    pub cfg: CameraConfig,
    /// Its tracks.
    pub tracker: Tracker,
    /// Frames processed.
    pub frames: u64,
    /// Capture times of the last [`FPS_WINDOW`] + 1 frames processed (fps).
    pub recent: VecDeque<Instant>,
    /// Track id → the person the door relay was asked about for it.
    pub door: HashMap<u64, i64>,
    /// The next frame ends every track: detection was paused in between.
    pub cut_next: bool,
}

impl CamState {
    /// A camera with no tracks yet.
    pub fn new(cfg: CameraConfig) -> CamState {
        CamState {
            tracker: Tracker::new(tracker_cfg(&cfg)),
            cfg,
            frames: 0,
            recent: VecDeque::with_capacity(FPS_WINDOW + 1),
            door: HashMap::new(),
            cut_next: false,
        }
    }

    /// Applies new settings (SIGHUP); the tracks stay.
    pub fn set_config(&mut self, cfg: CameraConfig) {
        self.tracker.set_config(tracker_cfg(&cfg));
        self.cfg = cfg;
    }
}

fn tracker_cfg(c: &CameraConfig) -> TrackerConfig {
    TrackerConfig {
        iou: c.track_iou,
        max_missed: c.track_max_missed,
    }
}

/// Output of [`detect`]: what a detection pass saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// The detections, best score first.
    pub dets: Vec<Detection>,
    /// Per detection, the index of its track in the camera's `tracker.tracks`.
    pub assign: Vec<usize>,
    /// Tracks that ended in this pass (scene cut first, then those missed too often).
    pub ended: Vec<Track>,
}

/// Output of [`choose`]: one track to embed this pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Index of the track in the camera's `tracker.tracks`.
    pub track: usize,
    /// Its detection in this frame.
    pub det: Detection,
    /// [`quality_hint`](super::tracker::quality_hint) of that detection.
    pub quality: f32,
}

/// Output of [`embed`]: a candidate with its aligned, embedded face.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// The candidate.
    pub cand: Candidate,
    /// Its face.
    pub face: Face,
}

#[cfg(test)]
pub(crate) mod testing;
