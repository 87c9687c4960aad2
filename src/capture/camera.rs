//! A camera as configured: one `[[cameras]]` entry ([`CameraConfig`]), its parsed source
//! ([`SourceSpec`]) and both together ([`Camera`]), which is what [`super::run_camera`] and the
//! pipeline are given.
//!
//! They live here, not in `config`, so that capture does not depend on the configuration
//! loader: `config` parses and validates the file into these types (and re-exports them), and
//! modules below it never import `config`. The recognition keys of [`CameraConfig`]
//! (threshold, votes, tracking, liveness, detector) are read by the pipeline.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::convert::Pixels;
use crate::error::{Error, Result};
use crate::vision::detect::{DetectorConfig, Tiling};

/// Where the Debian package installs the sample photos.
pub const PACKAGED_SAMPLES: &str = "/usr/share/faced/samples";

/// One `[[cameras]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CameraConfig {
    /// Name used in events, topics and the console: 1–32 of `a-z 0-9 _ -`, unique.
    pub name: String,
    /// `v4l2:/dev/videoN`, `dir:PATH`, `http://HOST/PATH` (MJPEG stream; `http:URL` also
    /// accepted), `rtsp://HOST/PATH` (an IP camera's H.264 stream), `exec:COMMAND` (frames from a program's output) or `pattern` (synthetic test
    /// frames).
    pub source: String,
    /// `rtsp://` only: a file holding the camera's `user:password` (one line), read at every
    /// connection; keeps the password out of this file. Relative to the configuration file.
    pub credentials_file: Option<PathBuf>,
    /// `exec:` only: what the command writes: `mjpeg` (JPEG images one after another), `yuv420`
    /// (planar I420) or `rgb24`, the raw ones at `width` × `height`.
    pub exec_format: super::exec::ExecFormat,
    /// `v4l2:` only: the pixel format to ask for, or `auto` (the best the camera offers:
    /// MJPEG, YUYV, UYVY, NV12, YU12, RGB24, GREY, in that order). Set it when a camera's MJPEG
    /// is poor or its driver lists a format it cannot deliver.
    pub v4l2_format: V4l2Format,
    /// Frame width asked of the camera (V4L2), or of the canvas images are letterboxed into
    /// (`dir:`, `pattern`).
    pub width: u32,
    /// Frame height, as `width`.
    pub height: u32,
    /// Frames per second asked of the camera; the playback rate of `dir:` and `pattern`.
    pub fps: f32,
    /// `dir:` only: how many consecutive frames show each image (a person standing in view).
    pub frames_per_image: u32,
    /// `dir:` only: start again after the last image (`false` = stop the camera at the end).
    pub repeat: bool,
    /// `dir:` and `pattern` only: wait for the vision thread instead of replacing a frame it
    /// has not taken yet, so no frame is dropped (processing a folder of recordings faster or
    /// slower than real time, reproducible tests). A live camera always keeps the newest frame.
    pub lossless: bool,
    /// Run the detector on every Nth frame (1 = every frame); tracks coast in between.
    pub detect_every: u32,
    /// Cosine similarity a face must reach to be recognised as an enrolled person (0..1).
    pub threshold: f32,
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
    /// Run the anti-spoofing model once per track and drop faces it calls spoofed. Costs about
    /// 120 ms per track on a 2-core x86; off by default.
    pub liveness: bool,
    /// Spoof score at or above which a face is rejected (the model's score: lower is live).
    pub liveness_threshold: f32,
    /// Face detector for this camera. For cameras `tiling` defaults to `"off"` (one pass per
    /// frame); the other keys default as in `faced analyze`.
    pub detector: DetectorConfig,
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            name: "camera".into(),
            source: format!("dir:{PACKAGED_SAMPLES}"),
            credentials_file: None,
            exec_format: Default::default(),
            v4l2_format: V4l2Format::Auto,
            width: 640,
            height: 480,
            fps: 10.0,
            frames_per_image: 1,
            repeat: true,
            lossless: false,
            detect_every: 1,
            threshold: 0.5,
            embed_every: 10,
            votes: 5,
            min_face_px: 24.0,
            track_iou: 0.3,
            track_max_missed: 5,
            liveness: false,
            liveness_threshold: 0.2,
            detector: stream_detector(),
        }
    }
}

/// `cameras[].v4l2_format`: which pixel format a V4L2 camera is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum V4l2Format {
    /// The first of [`Pixels::PREFERENCE`] the camera offers.
    #[default]
    Auto,
    Mjpeg,
    Yuyv,
    Uyvy,
    Nv12,
    Yu12,
    Rgb24,
    Grey,
}

impl V4l2Format {
    /// The one format asked for, or `None` for `auto`.
    pub fn pixels(self) -> Option<Pixels> {
        Some(match self {
            V4l2Format::Auto => return None,
            V4l2Format::Mjpeg => Pixels::Mjpeg,
            V4l2Format::Yuyv => Pixels::Yuyv,
            V4l2Format::Uyvy => Pixels::Uyvy,
            V4l2Format::Nv12 => Pixels::Nv12,
            V4l2Format::Yu12 => Pixels::Yu12,
            V4l2Format::Rgb24 => Pixels::Rgb24,
            V4l2Format::Grey => Pixels::Grey,
        })
    }
}

/// Detector defaults for a camera stream: one pass, no tiling (a door camera).
pub fn stream_detector() -> DetectorConfig {
    DetectorConfig {
        tiling: Tiling::Off,
        ..DetectorConfig::default()
    }
}

/// A parsed camera source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A V4L2 device, e.g. `/dev/video0`.
    V4l2(PathBuf),
    /// A directory of images.
    Dir(PathBuf),
    /// An MJPEG-over-HTTP stream (`multipart/x-mixed-replace`), `http://` only.
    Http(String),
    /// A command whose standard output is the stream (run by `/bin/sh -c`).
    Exec(String),
    /// An RTSP camera (H.264), `rtsp://` URL.
    Rtsp(String),
    /// Synthetic frames.
    Pattern,
}

impl SourceSpec {
    /// Parses `v4l2:/dev/videoN`, `dir:PATH`, `http://…` / `http:URL`, `rtsp://…`,
    /// `exec:COMMAND` or `pattern`.
    pub fn parse(s: &str) -> Result<SourceSpec> {
        let s = s.trim();
        let bad = |why: &str| {
            Error::invalid(format!(
                "camera source {s:?}: {why}; use v4l2:/dev/videoN, dir:PATH, http://HOST/PATH, rtsp://HOST/PATH, exec:COMMAND or pattern"
            ))
        };
        if s == "pattern" {
            return Ok(SourceSpec::Pattern);
        }
        if s.starts_with("http://") {
            return Ok(SourceSpec::Http(s.to_string()));
        }
        if s.starts_with("rtsp://") {
            return Ok(SourceSpec::Rtsp(s.to_string()));
        }
        if s.starts_with("rtsps://") {
            return Err(bad(
                "rtsps (RTSP over TLS) is not supported; use the camera's rtsp:// URL on a trusted network",
            ));
        }
        if s.starts_with("https://") || s.starts_with("http:https://") {
            return Err(bad(
                "https streams are not supported (no TLS for cameras); use the camera's http:// URL on a trusted network",
            ));
        }
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(bad("missing the kind of source"));
        };
        if rest.is_empty() {
            return Err(bad("nothing after the colon"));
        }
        match scheme {
            "exec" if rest.trim().is_empty() => Err(bad("no command after exec:")),
            "exec" => Ok(SourceSpec::Exec(rest.trim().to_string())),
            "v4l2" => Ok(SourceSpec::V4l2(PathBuf::from(rest))),
            "dir" => Ok(SourceSpec::Dir(PathBuf::from(rest))),
            "http" if rest.starts_with("http://") => Ok(SourceSpec::Http(rest.to_string())),
            "http" => Ok(SourceSpec::Http(format!(
                "http://{}",
                rest.trim_start_matches('/')
            ))),
            _ => Err(bad(&format!("unknown kind {scheme:?}"))),
        }
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::V4l2(p) => write!(f, "v4l2:{}", p.display()),
            SourceSpec::Dir(p) => write!(f, "dir:{}", p.display()),
            SourceSpec::Http(u) => f.write_str(u),
            SourceSpec::Exec(c) => write!(f, "exec:{c}"),
            SourceSpec::Rtsp(u) => f.write_str(u),
            SourceSpec::Pattern => f.write_str("pattern"),
        }
    }
}

impl SourceSpec {
    /// As `Display`, with any `user:password@` of a URL (an HTTP or RTSP camera's, also inside
    /// an `exec:` command line) replaced by `…@`: for logs and the console.
    pub fn redacted(&self) -> String {
        redact_credentials(&self.to_string())
    }
}

/// Replaces the user information of every `scheme://user:pass@host` in `s` with `…`.
pub fn redact_credentials(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            out.push('…');
            rest = &rest[at..];
        }
    }
    out.push_str(rest);
    out
}

/// A validated camera: its settings plus the parsed source.
#[derive(Debug, Clone, PartialEq)]
pub struct Camera {
    /// The settings as configured (with `source` rewritten to the resolved spec).
    pub settings: CameraConfig,
    /// The parsed, resolved source.
    pub source: SourceSpec,
}

impl Camera {
    /// The camera's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }
}
