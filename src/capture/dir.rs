//! `dir:PATH`: a folder of images played as a camera stream — the demo without a camera (the
//! bundled sample photos), and the source the end-to-end tests drive the daemon with.
//!
//! Images (`jpg jpeg png bmp webp gif tif tiff`, not recursive) play in file-name order, each
//! letterboxed into the camera's frame size and shown for `frames_per_image` frames, paced at
//! `fps`; at the end the folder is listed again (`repeat = true`, new files are picked up) or
//! the source ends. An unreadable image is logged and skipped; a folder without a readable image
//! is an [`Unplugged`](super::CaptureError::Unplugged) error, so the camera thread retries.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;

use super::{CaptureError, Frame, FrameSource, convert};
use crate::error::{Error, Result};
use crate::vision::image::ImageLimits;

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp", "gif", "tif", "tiff"];

/// The image files of `dir`, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        Error::unavailable(format!(
            "cannot read image folder {}: {e}; check the camera's dir: source",
            dir.display()
        ))
    })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// A folder of images played at a fixed rate.
pub struct DirSource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<std::sync::Arc<RgbImage>>,
    shown: u32,
    width: u32,
    height: u32,
    interval: Duration,
    frames_per_image: u32,
    repeat: bool,
    start: Option<Instant>,
    seq: u64,
}

impl DirSource {
    /// Opens `dir`; fails ([`Kind::Unavailable`](crate::Kind::Unavailable)) when it cannot be
    /// read or holds no image files.
    pub fn open(
        dir: &Path,
        width: u32,
        height: u32,
        fps: f32,
        frames_per_image: u32,
        repeat: bool,
    ) -> Result<DirSource> {
        let files = list_images(dir)?;
        if files.is_empty() {
            return Err(Error::unavailable(format!(
                "image folder {} has no image files (jpg, png, bmp, webp, gif, tiff)",
                dir.display()
            )));
        }
        Ok(DirSource {
            dir: dir.to_path_buf(),
            files,
            next_file: 0,
            current: None,
            shown: 0,
            width,
            height,
            interval: Duration::from_secs_f64(1.0 / fps.max(0.001) as f64),
            frames_per_image: frames_per_image.max(1),
            repeat,
            start: None,
            seq: 0,
        })
    }

    /// Number of image files found.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the folder had no images (never true for an opened source).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Loads the next readable image, skipping (and logging) unreadable ones; `Ok(None)` at the
    /// end of a non-repeating folder.
    fn advance(&mut self) -> std::result::Result<Option<std::sync::Arc<RgbImage>>, CaptureError> {
        let mut failures = 0;
        loop {
            if self.next_file >= self.files.len() {
                if !self.repeat {
                    return Ok(None);
                }
                self.files = list_images(&self.dir).map_err(CaptureError::Unplugged)?;
                self.next_file = 0;
                if self.files.is_empty() {
                    return Err(CaptureError::Unplugged(Error::unavailable(format!(
                        "image folder {} has no image files any more",
                        self.dir.display()
                    ))));
                }
            }
            let path = self.files[self.next_file].clone();
            self.next_file += 1;
            match crate::vision::image::load(&path, &ImageLimits::default()) {
                Ok(img) => {
                    return Ok(Some(std::sync::Arc::new(convert::letterbox(
                        &img,
                        self.width,
                        self.height,
                    ))));
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), "skipping unreadable image: {e}");
                    failures += 1;
                    if failures >= self.files.len() {
                        return Err(CaptureError::Unplugged(Error::unavailable(format!(
                            "no readable image in {}",
                            self.dir.display()
                        ))));
                    }
                }
            }
        }
    }
}

impl FrameSource for DirSource {
    fn next_frame(&mut self) -> std::result::Result<Frame, CaptureError> {
        let mut cut = false;
        if self.current.is_none() || self.shown >= self.frames_per_image {
            cut = self.current.is_some();
            match self.advance()? {
                Some(img) => self.current = Some(img),
                None => return Err(CaptureError::End),
            }
            self.shown = 0;
        }
        // Real time: it stands in for a camera, which delivers frames in real time, and stamps
        // them as a camera would.
        let start = *self.start.get_or_insert_with(Instant::now);
        let due = start + self.interval.mul_f64(self.seq as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > self.interval * 10 {
            // Far behind (the machine was suspended or busy): restart the schedule.
            self.start = Some(now - self.interval.mul_f64(self.seq as f64));
        }
        self.shown += 1;
        self.seq += 1;
        let image = self.current.clone().unwrap_or_default();
        Ok(Frame {
            image,
            captured: Instant::now(),
            wall: std::time::SystemTime::now(),
            seq: self.seq,
            cut,
        })
    }
}
