//! Vision: detect → align → embed, with quality and liveness checks.

/// Length of a face embedding (MobileFaceNet output).
pub const EMBEDDING_DIM: usize = 192;
