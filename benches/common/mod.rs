//! What the benches share: each bench is a crate of its own and declares `mod common;`.

// Each bench uses only part of this module.
#![allow(dead_code)]

use faced::vision::EMBEDDING_DIM;

/// A small deterministic generator (xorshift64*): a bench makes the same synthetic data on
/// every run, so two runs compare, and needs no `rand`.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-0.5, 0.5).
    pub fn next(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    /// A random direction: a unit vector of [`EMBEDDING_DIM`] values (each a sum of uniforms,
    /// close enough to Gaussian).
    pub fn unit(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..EMBEDDING_DIM)
            .map(|_| (0..4).map(|_| self.next()).sum())
            .collect();
        norm(v)
    }

    /// A unit vector at cosine `sim` from the unit vector `base`.
    pub fn near(&mut self, base: &[f32], sim: f32) -> Vec<f32> {
        let r = self.unit();
        let d: f32 = r.iter().zip(base).map(|(a, b)| a * b).sum();
        let o = norm(r.iter().zip(base).map(|(a, b)| a - d * b).collect());
        let s = (1.0 - sim * sim).sqrt();
        base.iter().zip(&o).map(|(b, o)| sim * b + s * o).collect()
    }

    /// `n` random bytes (stand-ins for JPEG crops).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

/// `v` scaled to unit length.
pub fn norm(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}
