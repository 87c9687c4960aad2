//! What the pipeline publishes about itself, as plain data: the per-frame [`Overlay`], each
//! camera's [`CameraStats`] and the faces collected from a track ([`TrackSample`]).
//!
//! These types belong to the pipeline, which produces them on the vision thread; the web console
//! (`web::live`) re-exports and serialises them, so the pipeline never depends on the console.
//! The serde names are the console's JSON and stay as they are.

use serde::{Deserialize, Serialize};

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

/// A face collected from a live track (for enrollment, and the last unknown face).
#[derive(Debug, Clone)]
pub struct TrackSample {
    /// L2-normalised embedding.
    pub embedding: Vec<f32>,
    /// JPEG of the 112×112 aligned crop.
    pub crop_jpeg: Vec<u8>,
    /// Quality of this face.
    pub quality: crate::vision::quality::Quality,
}
