//! Vision: detect → align → embed, with quality and liveness checks.
//!
//! [`Analyzer`] bundles a [`detect::Detector`] and an [`embed::Embedder`], each with its own
//! model session; it is `Send` and meant to be owned by one inference thread (the CLI's main
//! thread, or the daemon's vision worker).

pub mod align;
pub mod detect;
pub mod embed;
// A test double, compiled only into the unit tests: the shipped binary does not carry it.
#[cfg(test)]
pub mod fake;
pub mod image;
pub mod quality;

use std::path::PathBuf;
use std::sync::Arc;

use ::image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::inference::Backend;
use crate::inference::litert::LiteRt;
use crate::models;
use detect::{Detection, DetectorConfig};
use quality::Quality;

/// Length of a face embedding (MobileFaceNet output).
pub const EMBEDDING_DIM: usize = 192;

/// Default cosine similarity at or above which two faces are the same person. Measured on
/// tests/fixtures/faces (520 pairs): pair accuracy 0.996 anywhere in 0.40–0.50, so the middle.
pub const DEFAULT_THRESHOLD: f32 = 0.45;

/// Where the runtime and models are, and how many threads inference may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    /// Path of `libLiteRt.so`; unset = search (see `inference::litert`).
    pub litert_lib: Option<PathBuf>,
    /// Folder with the `.tflite` files; unset = search (see `models`).
    pub models_dir: Option<PathBuf>,
    /// XNNPACK threads per model (LiteRT's CPU accelerator). 2 by default: on the quiet 2-vCPU
    /// x86 dev VM two threads gave 1.5× the frames per second of one (`faced bench --threads`);
    /// one was faster only while other CPU-bound jobs shared the machine.
    pub threads: usize,
    /// Float or int8 models, or `Auto`: the CPU decides (see [`models::Precision`]).
    pub precision: models::Precision,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            litert_lib: None,
            models_dir: None,
            threads: 2,
            precision: models::Precision::Auto,
        }
    }
}

/// One analysed face.
#[derive(Debug, Clone)]
pub struct Face {
    /// Where it is.
    pub detection: Detection,
    /// How good a sample it is.
    pub quality: Quality,
    /// The 112×112 aligned crop the embedding was computed from.
    pub aligned: RgbImage,
    /// L2-normalised embedding, [`EMBEDDING_DIM`] floats.
    pub embedding: Vec<f32>,
}

/// Detector + embedder, ready to analyse images.
pub struct Analyzer {
    /// The face detector.
    pub detector: detect::Detector,
    /// The face embedder.
    pub embedder: embed::Embedder,
}

impl Analyzer {
    /// Loads the LiteRT runtime and the models named by `det` from `inf`'s locations.
    pub fn open(inf: &InferenceConfig, det: DetectorConfig) -> Result<Self> {
        let rt: Arc<LiteRt> = LiteRt::open(inf.litert_lib.as_deref())?;
        Self::with_backend(rt.as_ref(), inf, det)
    }

    /// As [`Analyzer::open`] with an explicit backend.
    pub fn with_backend(
        backend: &dyn Backend,
        inf: &InferenceConfig,
        det: DetectorConfig,
    ) -> Result<Self> {
        let detector = detect::load(backend, inf, det)?;
        let m = inf.precision.embedder();
        let session = backend.load(&m, inf.models_dir.as_deref(), inf.threads)?;
        let embedder = embed::Embedder::new(session, m.file)?;
        Ok(Analyzer { detector, embedder })
    }

    /// Detects, aligns, measures and embeds every face in `img`, best detection score first.
    pub fn analyze(&mut self, img: &RgbImage) -> Result<Vec<Face>> {
        let dets = self.detector.detect(img)?;
        self.embed_detections(img, &dets)
    }

    /// Aligns, measures and embeds the given detections of `img`.
    pub fn embed_detections(&mut self, img: &RgbImage, dets: &[Detection]) -> Result<Vec<Face>> {
        let aligned: Vec<RgbImage> = dets.iter().map(|d| align::align(img, d)).collect();
        let refs: Vec<&RgbImage> = aligned.iter().collect();
        let embs = self.embedder.embed(&refs)?;
        Ok(dets
            .iter()
            .zip(aligned)
            .zip(embs)
            .map(|((d, a), e)| Face {
                detection: *d,
                quality: quality::measure(d, &a),
                aligned: a,
                embedding: e,
            })
            .collect())
    }
}
