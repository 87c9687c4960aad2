//! Per-face quality: size, sharpness and pose, and the limits enrollment applies.
//!
//! - size: the shorter side of the detection box, in image pixels;
//! - sharpness: variance of the 4-neighbour Laplacian of the grey 112×112 aligned crop (a small
//!   face upscaled to 112 px, or motion blur, gives a low value);
//! - pose: yaw from where the nose tip sits between the eyes (0 = frontal, ±1 = nose over an
//!   eye), roll from the eye line's angle.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::detect::Detection;
use crate::error::{Error, Result};

/// Measured quality of one face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Shorter side of the face box, pixels.
    pub size_px: f32,
    /// Variance of the Laplacian of the aligned grey crop.
    pub sharpness: f32,
    /// Horizontal turn, −1..1 (0 = facing the camera).
    pub yaw: f32,
    /// Head tilt, degrees.
    pub roll_deg: f32,
    /// Frontal-pose score 0..1 (1 = straight on), from yaw.
    pub frontal: f32,
}

/// Limits a face must meet to be enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityLimits {
    /// Minimum face size (shorter box side), pixels.
    pub min_size_px: f32,
    /// Minimum sharpness (variance of the Laplacian).
    pub min_sharpness: f32,
    /// Maximum |yaw| (0..1).
    pub max_yaw: f32,
}

impl Default for QualityLimits {
    fn default() -> Self {
        // Calibrated on tests/fixtures/faces: every labelled photo passes, and faces smaller
        // than ~40 px embed too poorly to enroll (see tests/vision.rs).
        QualityLimits {
            min_size_px: 40.0,
            min_sharpness: 20.0,
            max_yaw: 0.6,
        }
    }
}

/// Why a face was refused for enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    /// Face box smaller than `min_size_px`.
    TooSmall,
    /// Sharpness below `min_sharpness`.
    Blurred,
    /// |yaw| above `max_yaw`.
    TurnedAway,
}

impl Reject {
    /// Human wording, as the console shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::TooSmall => "too small",
            Reject::Blurred => "blurred",
            Reject::TurnedAway => "turned away",
        }
    }
}

impl QualityLimits {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !(self.min_size_px >= 0.0
            && self.min_sharpness >= 0.0
            && (0.0..=1.0).contains(&self.max_yaw))
        {
            return Err(Error::invalid(format!(
                "quality limits out of range (min_size_px ≥ 0, min_sharpness ≥ 0, max_yaw 0..1): {self:?}"
            )));
        }
        Ok(())
    }

    /// The first limit `q` fails, with a sentence for the user, or `None` if it passes.
    pub fn check(&self, q: &Quality) -> Option<(Reject, String)> {
        if q.size_px < self.min_size_px {
            return Some((
                Reject::TooSmall,
                format!(
                    "face too small: {:.0} px, needs at least {:.0} px; move closer",
                    q.size_px, self.min_size_px
                ),
            ));
        }
        if q.sharpness < self.min_sharpness {
            return Some((
                Reject::Blurred,
                format!(
                    "face blurred: sharpness {:.0}, needs at least {:.0}",
                    q.sharpness, self.min_sharpness
                ),
            ));
        }
        if q.yaw.abs() > self.max_yaw {
            return Some((
                Reject::TurnedAway,
                format!(
                    "face turned away: yaw {:.2}, at most {:.2}; look at the camera",
                    q.yaw, self.max_yaw
                ),
            ));
        }
        None
    }
}

/// Measures the quality of `det`, whose aligned crop is `aligned`.
pub fn measure(det: &Detection, aligned: &RgbImage) -> Quality {
    let l = &det.landmarks;
    let (re, le, nose) = (l[0], l[1], l[2]);
    let ex = le[0] - re[0];
    let ey = le[1] - re[1];
    let eye_dist = (ex * ex + ey * ey).sqrt().max(1e-3);
    let mid = [(re[0] + le[0]) / 2.0, (re[1] + le[1]) / 2.0];
    // Nose offset from the eye midpoint, projected on the eye axis, in half eye-distances.
    let along = ((nose[0] - mid[0]) * ex + (nose[1] - mid[1]) * ey) / eye_dist;
    let yaw = (along / (eye_dist / 2.0)).clamp(-1.0, 1.0);
    // Eye axis angle; the person's right eye is on the image left for an upright face.
    let roll_deg = ey.atan2(ex).to_degrees();
    Quality {
        size_px: det.width().min(det.height()),
        sharpness: laplacian_variance(aligned),
        yaw,
        roll_deg,
        frontal: 1.0 - yaw.abs(),
    }
}

/// Variance of the 4-neighbour Laplacian of the image's luma.
pub fn laplacian_variance(img: &RgbImage) -> f32 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let raw = img.as_raw();
    let grey: Vec<f32> = raw
        .chunks_exact(3)
        .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
        .collect();
    let (mut sum, mut sum2, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let c = grey[y * w + x];
            let lap = grey[y * w + x - 1]
                + grey[y * w + x + 1]
                + grey[(y - 1) * w + x]
                + grey[(y + 1) * w + x]
                - 4.0 * c;
            sum += lap as f64;
            sum2 += (lap * lap) as f64;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum2 / n - mean * mean) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_image_has_no_sharpness_and_edges_do() {
        let flat = RgbImage::from_pixel(16, 16, image::Rgb([90, 90, 90]));
        assert_eq!(laplacian_variance(&flat), 0.0);
        let checker = RgbImage::from_fn(16, 16, |x, y| {
            if (x + y) % 2 == 0 {
                image::Rgb([255, 255, 255])
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        assert!(laplacian_variance(&checker) > 1000.0);
    }

    #[test]
    fn yaw_follows_the_nose() {
        let mk = |nose_x: f32| Detection {
            score: 1.0,
            bbox: [0.0, 0.0, 100.0, 100.0],
            landmarks: [
                [30.0, 40.0],
                [70.0, 40.0],
                [nose_x, 60.0],
                [50.0, 80.0],
                [10.0, 45.0],
                [90.0, 45.0],
            ],
        };
        let crop = RgbImage::new(112, 112);
        assert!(measure(&mk(50.0), &crop).yaw.abs() < 1e-6);
        assert!((measure(&mk(60.0), &crop).yaw - 0.5).abs() < 1e-6);
        let q = measure(&mk(75.0), &crop);
        assert_eq!(q.yaw, 1.0);
        let (r, msg) = QualityLimits::default()
            .check(&Quality {
                sharpness: 100.0,
                ..q
            })
            .unwrap();
        assert_eq!(r, Reject::TurnedAway);
        assert!(msg.contains("look at the camera"));
    }
}
