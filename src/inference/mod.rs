//! Inference seam: a [`Backend`] turns a verified model file into a [`Session`] that runs f32
//! tensors. The vision code only sees these two traits, so another runtime (the `tflite` crate for
//! 32-bit ARM, an NPU delegate) can be added behind a cargo feature without touching it.
//!
//! The one runtime backend is LiteRT ([`litert`]), loaded at run time from `libLiteRt.so`.
//! `vision::fake` is a test double that needs neither the runtime nor the model files and
//! returns scripted outputs. Sessions are `Send` but not `Sync`: each inference thread owns its own.
//!
//! Models reach a backend through [`Backend::load`], which reads the file and checks its SHA-256
//! before compiling; only a test double overrides it.

pub mod litert;

use std::path::Path;

use crate::error::Result;
use crate::models::{self, ModelFile};

/// Element type of a model tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// Signed 8-bit integer (quantized models).
    I8,
    /// Unsigned 8-bit integer (quantized models).
    U8,
    /// Anything else; such a tensor cannot be fed by this crate.
    Other,
}

/// Shape and element type of one input or output tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Dimensions, outermost first (e.g. `[1, 128, 128, 3]`).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
}

impl TensorSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A compiled model ready to run; owned by one thread at a time.
pub trait Session: Send {
    /// Input tensors in model order.
    fn inputs(&self) -> &[TensorSpec];
    /// Output tensors in model order.
    fn outputs(&self) -> &[TensorSpec];
    /// Runs the model. `inputs[i]` must hold exactly `self.inputs()[i].len()` floats; the outputs
    /// are written into `outputs[i]`, which are resized as needed (no allocation once warm).
    fn run(&mut self, inputs: &[&[f32]], outputs: &mut [Vec<f32>]) -> Result<()>;
}

/// A runtime that can compile models.
pub trait Backend: Send + Sync {
    /// Short name for logs and `faced check-config` (e.g. `"litert"`).
    fn name(&self) -> &'static str;
    /// Compiles `bytes` (the whole `.tflite` file, already checksum-verified) into a session
    /// using up to `threads` CPU threads. `label` names the model in errors.
    fn compile(&self, label: &str, bytes: &[u8], threads: usize) -> Result<Box<dyn Session>>;

    /// Reads `model` from `dir` (or the default places, see [`models::locate`]), checks its
    /// SHA-256 and compiles it. The vision code loads every model through here, so a test double
    /// can override this one method and need no model file.
    fn load(
        &self,
        model: &ModelFile,
        dir: Option<&Path>,
        threads: usize,
    ) -> Result<Box<dyn Session>> {
        let (_, bytes) = models::load_verified(dir, model)?;
        self.compile(model.file, &bytes, threads)
    }
}
