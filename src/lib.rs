//! faced: an edge face-recognition daemon.
//!
//! Data flows through the modules in this order:
//!
//! `capture` (frames) → [`vision`] (detect, align, embed, quality, liveness) → [`gallery`]
//! (SQLite + in-memory index) → `events` → `mqtt`, `web`, `gpio`.
//!
//! [`inference`] is the seam to the model runtime (LiteRT), [`models`] finds and verifies the
//! model files, and `config` / the `faced` binary's commands sit at the edge.

pub mod error;
pub mod gallery;
pub mod inference;
pub mod models;
pub mod vision;

pub use error::{Error, Kind, Result};
