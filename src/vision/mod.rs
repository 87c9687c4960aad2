//! Vision: detect → align → embed, with quality and liveness checks.
