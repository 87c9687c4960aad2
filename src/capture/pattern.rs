//! `pattern`: synthetic frames (colour bars with a moving square and no faces), for checking a
//! set-up — console, MQTT, systemd — without a camera or photos.

use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};

use super::{CaptureError, Frame, FrameSource};

/// A test pattern paced at a fixed rate.
pub struct Pattern {
    width: u32,
    height: u32,
    interval: Duration,
    start: Instant,
    seq: u64,
}

impl Pattern {
    /// Frames of `width`×`height` at `fps`.
    pub fn new(width: u32, height: u32, fps: f32) -> Pattern {
        Pattern {
            width,
            height,
            interval: Duration::from_secs_f64(1.0 / fps.max(0.001) as f64),
            // Real time: it stands in for a camera, which delivers frames in real time.
            start: Instant::now(),
            seq: 0,
        }
    }

    /// Frame number `n` of the pattern.
    pub fn render(&self, n: u64) -> RgbImage {
        const BARS: [[u8; 3]; 7] = [
            [192, 192, 192],
            [192, 192, 0],
            [0, 192, 192],
            [0, 192, 0],
            [192, 0, 192],
            [192, 0, 0],
            [0, 0, 192],
        ];
        let (w, h) = (self.width, self.height);
        let side = (h / 6).max(1);
        let span = w.saturating_sub(side).max(1) as u64;
        let sx = ((n * 8) % span) as u32;
        let sy = h / 2 - side / 2;
        RgbImage::from_fn(w, h, |x, y| {
            if x >= sx && x < sx + side && y >= sy && y < sy + side {
                Rgb([255, 255, 255])
            } else {
                Rgb(BARS[(x * 7 / w) as usize])
            }
        })
    }
}

impl FrameSource for Pattern {
    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        let due = self.start + self.interval.mul_f64(self.seq as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        self.seq += 1;
        Ok(Frame::now(self.render(self.seq), self.seq))
    }
}
