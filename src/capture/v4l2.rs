//! `v4l2:/dev/videoN`: USB and CSI cameras through Video4Linux2 (the `v4l` crate, feature
//! `v4l2`, a default one). Runs on the camera's capture thread.
//!
//! At open the device's formats are enumerated and one is chosen: the configured
//! `v4l2_format`, or the first of [`Pixels::PREFERENCE`] the camera offers (MJPEG for small
//! frames over USB, decoded with the standard Huffman tables added when the camera leaves them
//! out; the raw YUV/RGB/GREY layouts converted by [`convert::to_rgb`]). The configured size
//! and frame rate are asked for; the driver may pick the nearest it supports, and the info line
//! says what was negotiated. Frames come through four memory-mapped buffers. A dequeue that
//! waits longer than the stall timeout is [`CaptureError::Stalled`]; an I/O error (`ENODEV`
//! when the cable is pulled) is [`CaptureError::Unplugged`]; both make the camera thread reopen
//! with back-off.

use std::path::Path;
use std::time::Duration;

use v4l::buffer::Type;
use v4l::io::traits::CaptureStream;
use v4l::prelude::*;
use v4l::video::Capture;
use v4l::video::capture::Parameters;
use v4l::{Format, FourCC};

use super::convert::Pixels;
use super::{CaptureError, Frame, FrameSource, check_device_node, convert};
use crate::error::{Error, Result};

/// An open V4L2 camera, streaming.
pub struct V4l2Source {
    // Field order matters: the stream must be dropped (buffers unmapped, streaming stopped)
    // before the device is closed.
    stream: MmapStream<'static>,
    _dev: Device,
    path: String,
    pixels: Pixels,
    width: u32,
    height: u32,
    stride: usize,
    stall: Duration,
    seq: u64,
}

fn io_error(path: &str, what: &str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ENXIO) => {
            Error::unavailable(format!("{path}: {what}: camera disconnected ({e})"))
        }
        Some(libc::EBUSY) => Error::unavailable(format!(
            "{path}: {what}: device busy — another program is using the camera ({e})"
        )),
        Some(libc::EACCES) | Some(libc::EPERM) => Error::new(
            crate::Kind::PermissionDenied,
            format!("{path}: {what}: {e}; add the faced user to the `video` group"),
        ),
        _ => Error::unavailable(format!("{path}: {what}: {e}")),
    }
}

impl V4l2Source {
    /// Opens `path`, negotiates format (`want`, or the best offered when `None`), size and
    /// rate, and starts streaming.
    pub fn open(
        path: &Path,
        want: Option<Pixels>,
        width: u32,
        height: u32,
        fps: f32,
        stall: Duration,
    ) -> Result<V4l2Source> {
        check_device_node(path)?;
        let p = path.display().to_string();
        let dev = Device::with_path(path).map_err(|e| io_error(&p, "cannot open", e))?;
        let caps = dev
            .query_caps()
            .map_err(|e| io_error(&p, "cannot query capabilities", e))?;
        let formats = dev
            .enum_formats()
            .map_err(|e| io_error(&p, "cannot list formats", e))?;
        let offered: Vec<(FourCC, Option<Pixels>)> = formats
            .iter()
            .map(|f| (f.fourcc, Pixels::from_fourcc(&f.fourcc.repr)))
            .collect();
        let have = || {
            let v: Vec<String> = offered.iter().map(|(c, _)| c.to_string()).collect();
            v.join(", ")
        };
        let candidates: Vec<Pixels> = match want {
            Some(w) => vec![w],
            None => Pixels::PREFERENCE.to_vec(),
        };
        let Some((fourcc, pixels)) = candidates.iter().find_map(|want| {
            offered
                .iter()
                .find(|(_, got)| got == &Some(*want))
                .map(|(c, _)| (*c, *want))
        }) else {
            return Err(Error::invalid(match want {
                Some(w) => format!(
                    "{p} ({}) offers {} but not {w:?} (cameras[].v4l2_format); set it to \
                     \"auto\" or to one of those (`v4l2-ctl --list-formats -d {p}`)",
                    caps.card,
                    have()
                ),
                None => format!(
                    "{p} ({}) offers {} but faced reads MJPEG, YUYV, UYVY, NV12, YU12, RGB24 \
                     or GREY; pick another /dev/video node (`v4l2-ctl --list-formats -d {p}`)",
                    caps.card,
                    have()
                ),
            }));
        };
        let got = dev
            .set_format(&Format::new(width, height, fourcc))
            .map_err(|e| io_error(&p, "cannot set format", e))?;
        if got.fourcc != fourcc {
            return Err(Error::unavailable(format!(
                "{p}: driver refused {fourcc} (gave {})",
                got.fourcc
            )));
        }
        if (got.width, got.height) != (width, height) {
            tracing::warn!(
                device = p,
                "asked for {width}×{height}, camera gives {}×{}",
                got.width,
                got.height
            );
        }
        let want_fps = fps.round().max(1.0) as u32;
        // What was negotiated goes into the message itself, not only into fields: a journal
        // read without `-o verbose` (or a plain stderr log) must still say it.
        let rate = match dev.set_params(&Parameters::with_fps(want_fps)) {
            Ok(par) => format!(
                "{}/{} s per frame",
                par.interval.numerator, par.interval.denominator
            ),
            Err(e) => {
                tracing::warn!(
                    device = p,
                    "cannot set {want_fps} fps: {e}; using the camera's default"
                );
                "the camera's default rate".into()
            }
        };
        tracing::info!(
            device = p,
            camera = caps.card,
            format = %fourcc,
            width = got.width,
            height = got.height,
            rate = rate,
            "V4L2 camera {p} ({}): {fourcc} {}×{} at {rate}",
            caps.card,
            got.width,
            got.height
        );
        let mut stream = MmapStream::with_buffers(&dev, Type::VideoCapture, 4)
            .map_err(|e| io_error(&p, "cannot map buffers", e))?;
        stream.set_timeout(stall);
        Ok(V4l2Source {
            stream,
            _dev: dev,
            path: p,
            pixels,
            width: got.width,
            height: got.height,
            stride: (got.stride as usize).max(pixels.min_stride(got.width)),
            stall,
            seq: 0,
        })
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> std::result::Result<Frame, CaptureError> {
        let (buf, meta) = match self.stream.next() {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(CaptureError::Stalled(self.stall));
            }
            Err(e) => {
                return Err(CaptureError::Unplugged(io_error(
                    &self.path,
                    "capture failed",
                    e,
                )));
            }
        };
        let used = (meta.bytesused as usize).min(buf.len());
        let data = &buf[..if used == 0 { buf.len() } else { used }];
        let img = convert::to_rgb(self.pixels, data, self.width, self.height, self.stride)
            .map_err(CaptureError::BadFrame)?;
        self.seq += 1;
        Ok(Frame::now(img, self.seq))
    }
}
