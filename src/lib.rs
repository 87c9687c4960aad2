//! faced: an edge face-recognition daemon.
//!
//! ARCHITECTURE.md has the one-page map (threads, invariants, where to start). Data flows
//! through the modules in this order:
//!
//! [`capture`] (frames) → [`vision`] (detect, align, embed, quality, liveness) → [`gallery`]
//! (SQLite + in-memory index) → [`pipeline`] (tracking, identity votes) → [`events`] →
//! [`mqtt`], [`web`], [`gpio`].
//!
//! [`inference`] is the seam to the model runtime (LiteRT), [`models`] finds and verifies the
//! model files, and [`config`] plus the `faced` binary's commands (`src/cmd/`) sit at the edge.
//!
//! Underneath everything: [`base`] (the one time source [`base::Clocks`] and retry back-off;
//! depends on nothing but [`error`]), [`json`] (the console API's typed bodies) and [`db`]
//! (every SQLite connection, the schema and its upgrades, the sealing of face data), which the
//! modules that own tables (gallery, events, the MQTT outbox, web accounts) go through, and
//! [`audit`] (the HMAC-chained record of who changed what), which they all write to.
//! [`metrics`] is what `GET /metrics` reads: each module reports its own figures to it.

pub mod audit;
pub mod base;
pub mod capture;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod fleet;
pub mod frigate;
pub mod gallery;
pub mod gpio;
pub mod inference;
pub mod json;
pub mod metrics;
pub mod models;
pub mod mqtt;
pub mod pipeline;
pub mod vision;
pub mod visitors;
pub mod web;

pub use error::{Error, Kind, Result};
