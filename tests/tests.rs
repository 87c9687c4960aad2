//! The integration tests, as one test binary: each file beside this one is a module (`web.rs` is
//! `web::`), and `util/` holds the helpers they share. One binary links the test code once instead
//! of once per file; select tests by module, e.g. `cargo test --test tests web::`.
//!
//! The modules run in one process, so tests of different files run at the same time: a test
//! must not change process-wide state (environment, working directory, signal handlers, resource
//! limits; set them on the spawned `Command` instead), takes its turn through [`util::alone`]
//! when it is timed or runs `faced` with the models, and through [`util::beside_others`] when it
//! keeps the cores busy without timing anything.

mod architecture;
mod audit;
mod backup;
mod browser;
mod cameras;
mod capture;
mod config;
mod daemon;
mod diskfull;
mod erase;
mod events;
mod fleet;
mod frigate;
mod fuzz;
mod gallery;
mod hostile;
mod journal;
mod metrics;
mod mqtt;
mod powercut;
mod presence;
mod quantized;
mod soak;
mod util;
mod vision;
mod visitors;
mod web;
