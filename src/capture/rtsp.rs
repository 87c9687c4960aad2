//! `rtsp://`: an IP camera's H.264 stream, read and decoded inside faced (no ffmpeg at run time).
//! The RTSP client is `retina` (pure Rust; moonfire-nvr's); the decoder is Cisco's OpenH264,
//! compiled from the C++ source the `openh264` crate bundles (NEON on ARM; plain C++ on x86
//! unless `nasm` was installed at build time).
//!
//! Choices an installer would otherwise have to make:
//! - **Transport**: RTP interleaved in the RTSP TCP connection. It passes NAT and firewalls, and
//!   loses nothing on a busy Wi-Fi, where UDP drops packets (and so whole frames).
//! - **Stream**: the first H.264 video stream the camera describes. A camera's substream (lower
//!   resolution, what face detection needs) is chosen by its URL, e.g. Hikvision
//!   `/Streaming/Channels/102`, Dahua `…&subtype=1`, Reolink `/h264Preview_01_sub`. An H.265-only
//!   stream is refused with a message naming the way out (an H.264 substream, or `exec:` with
//!   ffmpeg).
//! - **Credentials**: from the camera's `credentials_file` (one line `user:password`, read at
//!   every connection so a changed password needs no restart), or from the URL's `user:pass@`.
//!   retina answers Basic and Digest challenges; logs and the console show the URL without them.
//!
//! Threads: [`RtspSource::open`] starts one thread per connection (`faced-rtsp-<camera>`) running
//! a single-threaded tokio runtime: connect, DESCRIBE, SETUP, PLAY, then receive and decode every
//! frame (H.264 frames depend on the previous ones, so none may be skipped before the decoder).
//! Decoded frames go to [`RtspSource::next_frame`] through a channel of two; when it is full the
//! newest frame is dropped here, not queued, so a slow vision thread never delays the RTSP
//! connection (the camera would drop a client that stops reading).
//!
//! Failure: a refused connection, a failed DESCRIBE/SETUP/PLAY, a stream error or the camera
//! ending the session is [`CaptureError::Unplugged`] (the camera thread reconnects with back-off);
//! no frame within the stall timeout (the first: within [`FIRST_FRAME_GRACE`](super::exec::FIRST_FRAME_GRACE), a camera may send
//! its first key frame seconds after PLAY) is [`CaptureError::Stalled`]; a frame the decoder
//! refuses is [`CaptureError::BadFrame`] (the next key frame repairs the picture). Dropping the
//! source stops its thread, which closes the connection.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use image::RgbImage;
use openh264::formats::YUVSource;
use retina::client::{Credentials, PlayOptions, Session, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat};

use super::exec::stall_wait;
use super::{CaptureError, DecodeStats, Frame, FrameSource};
use crate::error::{Error, Result};

/// Largest decoded picture accepted (the camera size limits of the configuration).
const MAX_PIXELS: usize = 7680 * 4320;

type Item = std::result::Result<Frame, CaptureError>;

/// A connection to an RTSP camera and the frames decoded from it.
pub struct RtspSource {
    frames: Receiver<Item>,
    stall: Duration,
    started: bool,
    stats: Arc<Mutex<DecodeStats>>,
    /// Dropping it (with the source) tells the connection thread to stop.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The URL without credentials, and the credentials to answer the camera's challenge with.
pub fn split_credentials(
    url: &str,
    credentials_file: Option<&Path>,
) -> Result<(url::Url, Option<Credentials>)> {
    let mut u = url::Url::parse(url).map_err(|e| {
        Error::invalid(format!(
            "{:?} is not an RTSP URL: {e}",
            super::redact_credentials(url)
        ))
    })?;
    if u.scheme() != "rtsp" {
        return Err(Error::invalid("only rtsp:// URLs are RTSP cameras"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid("the RTSP URL has no host"));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let in_url = (!u.username().is_empty()).then(|| Credentials {
        username: decode(u.username()),
        password: decode(u.password().unwrap_or("")),
    });
    // Url can clear its credentials only when it has a host, which was checked above.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let creds = match credentials_file {
        Some(p) => Some(read_credentials(p)?),
        None => in_url,
    };
    Ok((u, creds))
}

/// Reads a credentials file: one line, `user:password` (the password may contain colons).
pub fn read_credentials(p: &Path) -> Result<Credentials> {
    let meta = std::fs::metadata(p)
        .map_err(|e| Error::unavailable(format!("cannot read {}: {e}", p.display())))?;
    if meta.len() > 4096 {
        return Err(Error::invalid(format!(
            "{} is over 4 KiB; it should hold one line, user:password",
            p.display()
        )));
    }
    let text = std::fs::read_to_string(p)
        .map_err(|e| Error::unavailable(format!("cannot read {}: {e}", p.display())))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    match line.split_once(':') {
        Some((u, pw)) if !u.is_empty() => Ok(Credentials {
            username: u.to_string(),
            password: pw.to_string(),
        }),
        _ => Err(Error::invalid(format!(
            "{} should hold one line, user:password",
            p.display()
        ))),
    }
}

impl RtspSource {
    /// Starts connecting to `url` (errors arrive through [`FrameSource::next_frame`], so the
    /// camera thread retries them like any lost camera).
    pub fn open(
        url: &str,
        credentials_file: Option<&PathBuf>,
        stall: Duration,
        camera: &str,
    ) -> Result<RtspSource> {
        let (url, creds) = split_credentials(url, credentials_file.map(PathBuf::as_path))?;
        let (tx, rx) = sync_channel(2);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let stats = Arc::new(Mutex::new(DecodeStats::default()));
        let st = stats.clone();
        std::thread::Builder::new()
            .name(format!("faced-rtsp-{camera}"))
            .spawn(move || connection(url, creds, tx, stop_rx, st))
            .map_err(|e| Error::unavailable(format!("cannot start the RTSP thread: {e}")))?;
        Ok(RtspSource {
            frames: rx,
            stall,
            started: false,
            stats,
            _stop: stop_tx,
        })
    }
}

impl FrameSource for RtspSource {
    fn next_frame(&mut self) -> std::result::Result<Frame, CaptureError> {
        let wait = stall_wait(self.started, self.stall);
        match self.frames.recv_timeout(wait) {
            Ok(Ok(f)) => {
                self.started = true;
                Ok(f)
            }
            Ok(Err(e)) => Err(e),
            Err(RecvTimeoutError::Disconnected) => Err(CaptureError::Unplugged(
                Error::unavailable("the RTSP connection thread ended"),
            )),
            Err(RecvTimeoutError::Timeout) => Err(CaptureError::Stalled(wait)),
        }
    }

    fn decode_stats(&self) -> Option<DecodeStats> {
        Some(*self.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The connection thread: runs the session until it fails or the source is dropped, then
/// reports why (a dropped source no longer listens, and the report is discarded).
fn connection(
    url: url::Url,
    creds: Option<Credentials>,
    tx: SyncSender<Item>,
    stop: tokio::sync::oneshot::Receiver<()>,
    stats: Arc<Mutex<DecodeStats>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = tx.send(Err(CaptureError::Unplugged(Error::unavailable(format!(
                "cannot start the RTSP runtime: {e}"
            )))));
            return;
        }
    };
    let shown = url.to_string();
    let res = rt.block_on(async {
        tokio::select! {
            r = session(url, creds, &tx, &stats) => r,
            _ = stop => Ok(()),
        }
    });
    if let Err(e) = res {
        let _ = tx.send(Err(CaptureError::Unplugged(Error::unavailable(format!(
            "{shown}: {e}"
        )))));
    }
}

async fn session(
    url: url::Url,
    creds: Option<Credentials>,
    tx: &SyncSender<Item>,
    stats: &Mutex<DecodeStats>,
) -> std::result::Result<(), String> {
    let opts = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("faced/{}", env!("CARGO_PKG_VERSION")));
    let mut s = Session::describe(url, opts)
        .await
        .map_err(|e| format!("DESCRIBE failed: {e}"))?;
    let video: Vec<(usize, String)> = s
        .streams()
        .iter()
        .enumerate()
        .filter(|(_, st)| st.media() == "video")
        .map(|(i, st)| (i, st.encoding_name().to_ascii_lowercase()))
        .collect();
    let Some(&(i, _)) = video.iter().find(|(_, enc)| enc == "h264") else {
        let encs: Vec<&str> = video.iter().map(|(_, e)| e.as_str()).collect();
        return Err(if encs.is_empty() {
            "the camera describes no video stream".to_string()
        } else {
            format!(
                "the camera sends {} video, faced decodes H.264 only: choose the camera's H.264 \
                 substream (its URL or its web page), or read it with exec: and ffmpeg",
                encs.join(", ")
            )
        });
    };
    s.setup(
        i,
        SetupOptions::default()
            .transport(Transport::default())
            .frame_format(FrameFormat::SIMPLE),
    )
    .await
    .map_err(|e| format!("SETUP failed: {e}"))?;
    let playing = s
        .play(PlayOptions::default())
        .await
        .map_err(|e| format!("PLAY failed: {e}"))?;
    let mut demuxed = playing.demuxed().map_err(|e| e.to_string())?;
    let mut decoder = openh264::decoder::Decoder::new()
        .map_err(|e| format!("cannot start the H.264 decoder: {e}"))?;
    let mut seq = 0u64;
    while let Some(item) = demuxed.next().await {
        let item = item.map_err(|e| e.to_string())?;
        let CodecItem::VideoFrame(f) = item else {
            continue;
        };
        let t = Instant::now();
        let sent = match decode(&mut decoder, f.data()) {
            Ok(None) => continue,
            Ok(Some(img)) => {
                seq += 1;
                tx.try_send(Ok(Frame::now(img, seq)))
            }
            Err(e) => tx.try_send(Err(CaptureError::BadFrame(e))),
        };
        {
            let mut st = stats.lock().unwrap_or_else(|p| p.into_inner());
            st.frames += 1;
            st.decode += t.elapsed();
        }
        match sent {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            // The source was dropped: stop (the select above sees it too).
            Err(TrySendError::Disconnected(_)) => return Ok(()),
        }
    }
    Err("the camera ended the stream".to_string())
}

/// Decodes one access unit (Annex B, parameter sets before key frames) into RGB; `None` while
/// the decoder has no picture yet.
pub fn decode(dec: &mut openh264::decoder::Decoder, au: &[u8]) -> Result<Option<RgbImage>> {
    let Some(yuv) = dec
        .decode(au)
        .map_err(|e| Error::invalid(format!("H.264 decoder: {e}")))?
    else {
        return Ok(None);
    };
    let (w, h) = yuv.dimensions();
    if w == 0 || h == 0 || w * h > MAX_PIXELS {
        return Err(Error::invalid(format!(
            "decoded picture of {w}×{h} is outside the camera size limits"
        )));
    }
    let mut rgb = vec![0u8; w * h * 3];
    yuv.write_rgb8(&mut rgb);
    Ok(RgbImage::from_raw(w as u32, h as u32, rgb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_url_or_from_the_file() {
        let (u, c) = split_credentials("rtsp://ad%40min:p%3Aw@cam:554/s?x=1", None).unwrap();
        assert_eq!(u.as_str(), "rtsp://cam:554/s?x=1");
        let c = c.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("ad@min", "p:w")
        );

        let dir = std::env::temp_dir().join(format!("faced-rtsp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("cam.cred");
        std::fs::write(&f, "viewer:s3:cret\n").unwrap();
        // The file wins over the URL (config refuses both at once; the file is the documented way).
        let (u, c) = split_credentials("rtsp://cam/s", Some(&f)).unwrap();
        assert_eq!(u.as_str(), "rtsp://cam/s");
        let c = c.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("viewer", "s3:cret")
        );

        std::fs::write(&f, "no colon here\n").unwrap();
        let e = split_credentials("rtsp://cam/s", Some(&f)).unwrap_err();
        assert!(e.to_string().contains("user:password"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(split_credentials("http://cam/s", None).is_err());
        assert!(split_credentials("rtsp:///s", None).is_err());
        let e = split_credentials("rtsp://u:secret@[bad/s", None).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
