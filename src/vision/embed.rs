//! Face embedding with MobileFaceNet: aligned 112×112 RGB crops → 192-d L2-normalised vectors,
//! compared by cosine similarity (a dot product).
//!
//! The model's batch is fixed at 2, so faces go through in pairs and a lone face is padded with a
//! copy of itself (its second output is discarded).

use image::RgbImage;

use super::EMBEDDING_DIM;
use super::align::CROP;
use crate::error::{Error, Result};
use crate::inference::Session;

/// A MobileFaceNet session with its input buffer.
pub struct Embedder {
    session: Box<dyn Session>,
    input: Vec<f32>,
    outputs: Vec<Vec<f32>>,
}

const PIXELS: usize = (CROP * CROP * 3) as usize;

impl Embedder {
    /// Wraps a compiled MobileFaceNet session (input 2×112×112×3, output 2×192).
    pub fn new(session: Box<dyn Session>, label: &str) -> Result<Self> {
        let ok = session.inputs().len() == 1
            && session.inputs()[0].shape == [2, CROP as usize, CROP as usize, 3]
            && session.outputs().len() == 1
            && session.outputs()[0].shape == [2, EMBEDDING_DIM];
        if !ok {
            return Err(Error::precondition(format!(
                "model {label} does not have MobileFaceNet's shapes (2×112×112×3 in, 2×192 out): \
                 {:?} → {:?}",
                session.inputs(),
                session.outputs()
            )));
        }
        Ok(Embedder {
            session,
            input: vec![0.0; 2 * PIXELS],
            outputs: vec![Vec::new()],
        })
    }

    /// Embeds each crop; returns one L2-normalised vector per crop, in order.
    pub fn embed(&mut self, crops: &[&RgbImage]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(crops.len());
        for pair in crops.chunks(2) {
            for (slot, crop) in [pair[0], *pair.get(1).unwrap_or(&pair[0])]
                .into_iter()
                .enumerate()
            {
                if crop.dimensions() != (CROP, CROP) {
                    return Err(Error::internal(format!(
                        "crop is {:?}, expected 112×112",
                        crop.dimensions()
                    )));
                }
                let dst = &mut self.input[slot * PIXELS..(slot + 1) * PIXELS];
                for (d, &s) in dst.iter_mut().zip(crop.as_raw().iter()) {
                    *d = (s as f32 - 127.5) * (1.0 / 128.0);
                }
            }
            self.session.run(&[&self.input], &mut self.outputs)?;
            for (i, _) in pair.iter().enumerate() {
                let mut v = self.outputs[0][i * EMBEDDING_DIM..(i + 1) * EMBEDDING_DIM].to_vec();
                normalize(&mut v);
                out.push(v);
            }
        }
        Ok(out)
    }
}

/// Scales `v` to unit length (leaves a zero vector alone).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Cosine similarity of two L2-normalised vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
