//! Optional liveness gate: FaceAntiSpoofing.tflite (see `models/README.md`), run **once per
//! track** on its first embedded face. Measured at ~120 ms per run on the 2-core x86 dev box —
//! ten times a detection pass — so running it per frame would cap a camera at a few frames per
//! second; per track it costs one slow frame when someone new appears.
//!
//! Input: the face box (grown by 20 %, clamped) resized to 256×256, RGB scaled to 0..1. Output:
//! two 1×8 heads, class scores and a leaf mask; spoof score = Σ |score_i| · mask_i (lower is
//! live). Runs on the vision thread.

use fast_image_resize as fr;
use image::RgbImage;

use crate::error::{Error, Result};
use crate::inference::{Backend, Session};
use crate::models;
use crate::vision::InferenceConfig;

const SIDE: u32 = 256;

/// The anti-spoofing model with its buffers.
pub struct Liveness {
    session: Box<dyn Session>,
    input: Vec<f32>,
    outputs: Vec<Vec<f32>>,
}

impl Liveness {
    /// Loads and verifies the model through `backend`.
    pub fn open(backend: &dyn Backend, inf: &InferenceConfig) -> Result<Liveness> {
        let m = models::ANTI_SPOOFING;
        let session = backend.load(&m, inf.models_dir.as_deref(), inf.threads)?;
        let ok = session.inputs().len() == 1
            && session.inputs()[0].shape == [1, SIDE as usize, SIDE as usize, 3]
            && session.outputs().len() == 2
            && session.outputs().iter().all(|o| o.len() == 8);
        if !ok {
            return Err(Error::precondition(format!(
                "model {} does not have FaceAntiSpoofing's shapes (1×256×256×3 in, two 1×8 out)",
                m.file
            )));
        }
        Ok(Liveness {
            session,
            input: vec![0.0; (SIDE * SIDE * 3) as usize],
            outputs: vec![Vec::new(), Vec::new()],
        })
    }

    /// Spoof score of the face in `bbox` of `img` (lower is live; ~0.2 is the usual cut).
    pub fn spoof_score(&mut self, img: &RgbImage, bbox: &[f32; 4]) -> Result<f32> {
        let (w, h) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
        let x1 = (bbox[0] - 0.2 * w).max(0.0) as u32;
        let y1 = (bbox[1] - 0.2 * h).max(0.0) as u32;
        let x2 = ((bbox[2] + 0.2 * w) as u32).min(img.width()).max(x1 + 1);
        let y2 = ((bbox[3] + 0.2 * h) as u32).min(img.height()).max(y1 + 1);
        let crop = image::imageops::crop_imm(img, x1, y1, x2 - x1, y2 - y1).to_image();
        let src = fr::images::Image::from_vec_u8(
            crop.width(),
            crop.height(),
            crop.into_raw(),
            fr::PixelType::U8x3,
        )
        .map_err(|e| Error::internal(format!("liveness crop: {e}")))?;
        let mut dst = fr::images::Image::new(SIDE, SIDE, fr::PixelType::U8x3);
        fr::Resizer::new()
            .resize(
                &src,
                &mut dst,
                &fr::ResizeOptions::new()
                    .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear)),
            )
            .map_err(|e| Error::internal(format!("liveness resize: {e}")))?;
        for (d, &s) in self.input.iter_mut().zip(dst.buffer()) {
            *d = s as f32 / 255.0;
        }
        self.session.run(&[&self.input], &mut self.outputs)?;
        let (scores, mask) = (&self.outputs[0], &self.outputs[1]);
        Ok(scores.iter().zip(mask).map(|(s, m)| s.abs() * m).sum())
    }
}
