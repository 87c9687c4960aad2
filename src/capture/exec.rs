//! `exec:COMMAND`: frames from a program's standard output. This is how faced reads the cameras it
//! has no driver for: the Raspberry Pi camera module through libcamera (`rpicam-vid --codec mjpeg
//! -t 0 -o -`), an RTSP camera through Debian's `ffmpeg`, or any V4L2 device ffmpeg can open.
//! Recipes: docs/cameras.md.
//!
//! The command runs under `/bin/sh -c` (pipes and quoting work as in a shell; a simple command
//! is `exec`ed by the shell, see [`shell_line`]), in its own process group, with no standard
//! input. Its output is read as `exec_format`:
//! - `mjpeg`: concatenated JPEG images (`rpicam-vid --codec mjpeg`, `ffmpeg -f mjpeg`), split by
//!   walking the JPEG markers, so an APP segment holding a thumbnail with its own end marker does
//!   not cut a frame in two;
//! - `yuv420` (planar I420, `rpicam-vid --codec yuv420`, `ffmpeg -pix_fmt yuv420p -f rawvideo`)
//!   and `rgb24` (`-pix_fmt rgb24 -f rawvideo`): raw frames of the camera's `width` × `height`.
//!
//! Threads: a reader thread per running command turns the byte stream into frames and hands
//! them over a channel of two (the newest wins downstream in the frame slot anyway; a full
//! channel makes the reader wait, which back-pressures the command through its pipe); a second
//! thread copies the command's standard error into the log, line by line, at most 200 lines a
//! minute. [`ExecSource::next_frame`] waits on the channel up to the stall timeout.
//!
//! Failure: the command exiting (or closing its output) is [`CaptureError::Unplugged`] with its
//! exit status and last stderr line; no frame within the stall timeout (the first frame: within
//! at least [`FIRST_FRAME_GRACE`]) is [`CaptureError::Stalled`]; either way the camera thread drops the source and starts the
//! command again with back-off. One undecodable JPEG is a [`CaptureError::BadFrame`]. Dropping
//! the source kills the whole process group (SIGTERM, then SIGKILL after a second), and the
//! command gets SIGKILL if faced itself dies (`PR_SET_PDEATHSIG`, kept across the shell's exec).
//!
//! Limits: a JPEG frame over [`MAX_JPEG_BYTES`] is dropped and the stream resynchronised at the
//! next start-of-image marker; raw frame sizes are bounded by the camera size limits `config`
//! enforces.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::{CaptureError, Frame, FrameSource, convert};
use crate::error::{Error, Result};

/// Largest accepted JPEG frame.
pub const MAX_JPEG_BYTES: usize = 16 << 20;

/// How an `exec:` command writes frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecFormat {
    /// Concatenated JPEG images.
    #[default]
    Mjpeg,
    /// Planar YUV 4:2:0 (I420), `width` × `height`, BT.601 limited range.
    Yuv420,
    /// Packed RGB, 3 bytes per pixel, `width` × `height`.
    Rgb24,
}

/// A running command and the frames read from it.
pub struct ExecSource {
    /// The command line, credentials redacted (for errors).
    command: String,
    child: Child,
    frames: Receiver<std::result::Result<Frame, CaptureError>>,
    stall: Duration,
    /// No frame yet: the command may still be starting (ffmpeg probes an RTSP stream for up
    /// to 5 s before its first frame), so the first wait is at least [`FIRST_FRAME_GRACE`].
    started: bool,
    last_stderr: Arc<Mutex<String>>,
}

/// The longest wait for a command's first frame.
pub const FIRST_FRAME_GRACE: Duration = Duration::from_secs(15);

/// How long to wait for the next frame: the stall timeout, or at least [`FIRST_FRAME_GRACE`]
/// before the first frame (a program or a camera starting a stream takes seconds).
pub fn stall_wait(started: bool, stall: Duration) -> Duration {
    if started {
        stall
    } else {
        stall.max(FIRST_FRAME_GRACE)
    }
}

impl ExecSource {
    /// Starts `command` and the threads that read it.
    pub fn open(
        command: &str,
        format: ExecFormat,
        width: u32,
        height: u32,
        stall: Duration,
        camera: &str,
    ) -> Result<ExecSource> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(shell_line(command))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            Error::unavailable(format!(
                "cannot start exec: command {:?}: {e}",
                super::redact_credentials(command)
            ))
        })?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let last_stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = sync_channel(2);
        let spawned = std::thread::Builder::new()
            .name(format!("faced-exec-{camera}"))
            .spawn(move || read_frames(stdout, format, width, height, tx))
            .and_then(|_| {
                let (last, camera) = (last_stderr.clone(), camera.to_string());
                std::thread::Builder::new()
                    .name(format!("faced-exec-err-{camera}"))
                    .spawn(move || log_stderr(stderr, &camera, &last))
            });
        if let Err(e) = spawned {
            kill_group(&mut child);
            return Err(Error::unavailable(format!(
                "cannot start a reader thread: {e}"
            )));
        }
        Ok(ExecSource {
            command: super::redact_credentials(command),
            child,
            frames: rx,
            stall,
            started: false,
            last_stderr,
        })
    }

    /// Why the command stopped, for the error the camera thread logs.
    fn ended(&mut self, why: &str) -> CaptureError {
        // The reader sees the end of output a moment before the process is reaped.
        let deadline = Instant::now() + Duration::from_millis(500);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break None,
            }
        };
        let last = self
            .last_stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let status = match status {
            Some(s) => format!("exited ({s})"),
            None => why.to_string(),
        };
        let tail = if last.is_empty() {
            String::new()
        } else {
            format!("; its last message: {last}")
        };
        CaptureError::Unplugged(Error::unavailable(format!(
            "exec: command {:?} {status}{tail}",
            self.command
        )))
    }
}

impl FrameSource for ExecSource {
    fn next_frame(&mut self) -> std::result::Result<Frame, CaptureError> {
        let wait = stall_wait(self.started, self.stall);
        match self.frames.recv_timeout(wait) {
            Ok(Ok(f)) => {
                self.started = true;
                Ok(f)
            }
            Ok(Err(CaptureError::End)) | Err(RecvTimeoutError::Disconnected) => {
                Err(self.ended("closed its output"))
            }
            Ok(Err(e)) => Err(e),
            Err(RecvTimeoutError::Timeout) => Err(CaptureError::Stalled(wait)),
        }
    }
}

impl Drop for ExecSource {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// The line for `sh -c`: a simple command (one program, as every recipe is) is `exec`ed, so
/// the program itself is faced's child and gets the parent-death signal; a pipeline or a list
/// runs under the shell, and if faced is SIGKILLed its programs outlive it until they next
/// write to the closed pipe (SIGPIPE).
fn shell_line(command: &str) -> String {
    let compound = command.contains([';', '|', '&', '\n', '`', '(', ')']) || command.contains("$(");
    if compound {
        command.to_string()
    } else {
        format!("exec {command}")
    }
}

/// Stops the command and everything it started: SIGTERM to the group, SIGKILL after a second.
fn kill_group(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        // The shell is gone; its children may not be.
        // SAFETY: kill(2) with a negative pid signals the process group we created.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        return;
    }
    let pgid = -(child.id() as i32);
    // SAFETY: as above.
    unsafe { libc::kill(pgid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above. Whatever ignored SIGTERM, shell or child, goes now.
    unsafe { libc::kill(pgid, libc::SIGKILL) };
    let _ = child.wait();
}

type Tx = SyncSender<std::result::Result<Frame, CaptureError>>;

fn read_frames(out: impl Read, format: ExecFormat, width: u32, height: u32, tx: Tx) {
    let mut r = BufReader::with_capacity(1 << 20, out);
    let mut seq = 0u64;
    loop {
        let item = match format {
            ExecFormat::Mjpeg => match next_jpeg(&mut r) {
                Ok(Some(jpeg)) => convert::decode_mjpeg(&jpeg).map_err(CaptureError::BadFrame),
                Ok(None) => Err(CaptureError::End),
                Err(e) => Err(CaptureError::BadFrame(e)),
            },
            ExecFormat::Yuv420 | ExecFormat::Rgb24 => {
                let (w, h) = (width as usize, height as usize);
                let len = match format {
                    ExecFormat::Yuv420 => w * h + 2 * (w.div_ceil(2) * h.div_ceil(2)),
                    _ => w * h * 3,
                };
                let mut buf = vec![0u8; len];
                match r.read_exact(&mut buf) {
                    Ok(()) if format == ExecFormat::Yuv420 => Ok(i420_to_rgb(&buf, width, height)),
                    Ok(()) => Ok(RgbImage::from_raw(width, height, buf).expect("sized")),
                    Err(_) => Err(CaptureError::End),
                }
            }
        };
        let end = matches!(item, Err(CaptureError::End));
        let item = item.map(|img| {
            seq += 1;
            Frame::now(img, seq)
        });
        if tx.send(item).is_err() || end {
            return;
        }
    }
}

/// Reads the next JPEG image: skips to a start-of-image marker, then walks the segments (by
/// their lengths) and the entropy-coded data (up to a marker that is not a stuffed `FF 00` or a
/// restart) to the end-of-image marker. `None` at the end of the stream.
fn next_jpeg(r: &mut impl BufRead) -> Result<Option<Vec<u8>>> {
    // Resynchronise on FF D8.
    let mut prev = 0u8;
    loop {
        let mut b = [0u8];
        if r.read(&mut b).map_err(io)? == 0 {
            return Ok(None);
        }
        if prev == 0xFF && b[0] == 0xD8 {
            break;
        }
        prev = b[0];
    }
    let mut jpeg = vec![0xFF, 0xD8];
    // A marker code read while scanning entropy-coded data, not yet handled.
    let mut pending: Option<u8> = None;
    macro_rules! byte {
        () => {
            match byte(r, &mut jpeg)? {
                Some(b) => b,
                None => return Ok(None),
            }
        };
    }
    loop {
        let code = match pending.take() {
            Some(c) => c,
            None => {
                if byte!() != 0xFF {
                    return Err(Error::invalid(
                        "a JPEG frame with a broken segment: dropped",
                    ));
                }
                let mut c = byte!();
                while c == 0xFF {
                    c = byte!();
                }
                c
            }
        };
        match code {
            0xD9 => return Ok(Some(jpeg)),
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let len = u16::from_be_bytes([byte!(), byte!()]) as usize;
        if len < 2 || jpeg.len() + len > MAX_JPEG_BYTES {
            return Err(Error::invalid(format!(
                "a JPEG frame with a bad segment length {len}: dropped"
            )));
        }
        let start = jpeg.len();
        jpeg.resize(start + len - 2, 0);
        if r.read_exact(&mut jpeg[start..]).is_err() {
            return Ok(None);
        }
        if code == 0xDA {
            // The scan's entropy-coded data.
            loop {
                if byte!() != 0xFF {
                    continue;
                }
                let mut c = byte!();
                while c == 0xFF {
                    c = byte!();
                }
                if !matches!(c, 0x00 | 0xD0..=0xD7) {
                    pending = Some(c);
                    break;
                }
            }
        }
    }
}

/// One byte of the frame being read, appended to it; `None` at the end of the stream.
fn byte(r: &mut impl BufRead, jpeg: &mut Vec<u8>) -> Result<Option<u8>> {
    let b = match r.fill_buf().map_err(io)?.first() {
        Some(&b) => b,
        None => return Ok(None),
    };
    r.consume(1);
    if jpeg.len() >= MAX_JPEG_BYTES {
        return Err(Error::invalid(format!(
            "a JPEG frame over {} MiB: dropped",
            MAX_JPEG_BYTES >> 20
        )));
    }
    jpeg.push(b);
    Ok(Some(b))
}

fn io(e: std::io::Error) -> Error {
    Error::unavailable(format!("reading the command's output: {e}"))
}

/// Planar I420 (Y plane, then U and V at half resolution) to RGB, BT.601 limited range: what
/// `rpicam-vid --codec yuv420` and ffmpeg's `yuv420p` write.
pub fn i420_to_rgb(data: &[u8], width: u32, height: u32) -> RgbImage {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let (y, rest) = data.split_at(w * h);
    let (u, v) = rest.split_at(cw * ch);
    let mut out = vec![0u8; w * h * 3];
    for row in 0..h {
        for col in 0..w {
            let yy = (y[row * w + col] as i32 - 16) * 298;
            let c = (row / 2) * cw + col / 2;
            let (uu, vv) = (u[c] as i32 - 128, v[c] as i32 - 128);
            let px = &mut out[(row * w + col) * 3..][..3];
            px[0] = ((yy + 409 * vv + 128) >> 8).clamp(0, 255) as u8;
            px[1] = ((yy - 100 * uu - 208 * vv + 128) >> 8).clamp(0, 255) as u8;
            px[2] = ((yy + 516 * uu + 128) >> 8).clamp(0, 255) as u8;
        }
    }
    RgbImage::from_raw(width, height, out).expect("sized")
}

/// Copies the command's standard error into the log (info level: ffmpeg and rpicam-vid are
/// chatty), keeping the last line for the error when it exits. At most 200 lines a minute reach
/// the log, so a command printing in a loop cannot flood the journal.
fn log_stderr(err: impl Read, camera: &str, last: &Mutex<String>) {
    let mut r = BufReader::new(err);
    let mut line = Vec::new();
    let (mut window, mut n) = (Instant::now(), 0u32);
    loop {
        line.clear();
        // Bounded: a command writing megabytes without a newline is cut into 4 KiB lines.
        match r.by_ref().take(4096).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // ffmpeg prints its input URL, with the camera's password if the URL has one.
        let text = super::redact_credentials(String::from_utf8_lossy(&line).trim());
        if text.is_empty() {
            continue;
        }
        if window.elapsed() > Duration::from_secs(60) {
            if n > 200 {
                tracing::info!(
                    camera,
                    "exec: {} more lines of the command's stderr not logged",
                    n - 200
                );
            }
            (window, n) = (Instant::now(), 0);
        }
        n += 1;
        if n <= 200 {
            tracing::info!(camera, "exec: {text}");
        }
        *last.lock().unwrap_or_else(|p| p.into_inner()) = text;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, shade: u8) -> Vec<u8> {
        let img = RgbImage::from_pixel(w, h, image::Rgb([shade, 100, 50]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&img)
            .unwrap();
        out
    }

    /// A JPEG with an APP1 segment that holds a whole thumbnail JPEG (its own FF D9), as
    /// cameras write EXIF.
    fn with_thumbnail(main: &[u8], thumb: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE1];
        v.extend_from_slice(&((thumb.len() + 2) as u16).to_be_bytes());
        v.extend_from_slice(thumb);
        v.extend_from_slice(&main[2..]);
        v
    }

    #[test]
    fn splits_a_jpeg_stream_on_markers_not_on_bytes() {
        let (a, b) = (jpeg(64, 48, 10), jpeg(32, 24, 200));
        let thumbed = with_thumbnail(&b, &jpeg(8, 8, 0));
        let mut stream = b"garbage before the first image".to_vec();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&thumbed);
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&a[..a.len() / 2]); // cut off by the command exiting
        // Tiny buffers put every FF at a buffer edge somewhere.
        for cap in [1, 2, 3, 7, 4096] {
            let mut r = BufReader::with_capacity(cap, &stream[..]);
            let got: Vec<Vec<u8>> = std::iter::from_fn(|| next_jpeg(&mut r).unwrap()).collect();
            assert_eq!(got.len(), 3, "buffer {cap}");
            assert_eq!(got[0], a);
            assert_eq!(
                got[1], thumbed,
                "the thumbnail's end marker must not end the frame"
            );
            assert_eq!(got[2], a);
            let img = convert::decode_mjpeg(&got[1]).unwrap();
            assert_eq!(img.dimensions(), (32, 24));
        }
    }

    #[test]
    fn oversized_or_broken_frames_are_refused_and_the_stream_goes_on() {
        let a = jpeg(16, 16, 1);
        // A segment claiming more than fits is refused; reading resumes at the next image.
        let mut s = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01];
        s.extend_from_slice(&a);
        let mut r = BufReader::new(&s[..]);
        assert!(next_jpeg(&mut r).is_err());
        assert_eq!(next_jpeg(&mut r).unwrap().unwrap(), a);
        assert!(next_jpeg(&mut r).unwrap().is_none());
    }

    #[test]
    fn exec_sources_parse_and_hide_passwords() {
        use crate::capture::{SourceSpec, redact_credentials};
        let cmd = "ffmpeg -rtsp_transport tcp -i rtsp://admin:s3cret@10.0.0.9:554/sub -f mjpeg -";
        let spec = SourceSpec::parse(&format!("exec: {cmd} ")).unwrap();
        assert_eq!(spec, SourceSpec::Exec(cmd.into()));
        assert_eq!(
            spec.to_string(),
            format!("exec:{cmd}"),
            "Display round-trips"
        );
        let shown = spec.redacted();
        assert!(
            !shown.contains("s3cret") && !shown.contains("admin"),
            "{shown}"
        );
        assert!(shown.contains("rtsp://…@10.0.0.9:554/sub"), "{shown}");
        assert!(SourceSpec::parse("exec:").is_err());
        assert!(SourceSpec::parse("exec:   ").is_err());
        // Two URLs, one without credentials, and an @ in a path are left as they are.
        assert_eq!(
            redact_credentials("a http://u:p@h/x b rtsp://h2/y@z 'rtsp://v:w@h3'"),
            "a http://…@h/x b rtsp://h2/y@z 'rtsp://…@h3'"
        );
    }

    #[test]
    fn i420_grey_and_colours() {
        // 2×2: Y 16 (black) and 235 (white) with neutral chroma, then a red block.
        let img = i420_to_rgb(&[16, 235, 235, 16, 128, 128], 2, 2);
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
        // BT.601 red (255, 0, 0) is Y 81, U 90, V 240.
        let red = i420_to_rgb(&[81, 81, 81, 81, 90, 240], 2, 2);
        let p = red.get_pixel(0, 0).0;
        assert!(p[0] > 245 && p[1] < 10 && p[2] < 10, "{p:?}");
        // Odd sizes round the chroma planes up.
        let odd = i420_to_rgb(&[128u8; 3 * 3 + 2 * 4], 3, 3);
        assert_eq!(odd.dimensions(), (3, 3));
    }
}
