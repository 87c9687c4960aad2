//! Subcommands of the `faced` binary, one module each.

pub mod analyze;
pub mod bench;
pub mod check_config;
pub mod enroll;
pub mod identify;
pub mod people;
pub mod run;
pub mod user;

use faced::Kind;

/// Logs to stderr with the `FACED_LOG` filter (default `info`); `faced run` under systemd
/// replaces this with the journal.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FACED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Exit status for an error: 2 for bad input or usage, 3 for a broken installation or missing
/// dependency, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.chain().find_map(|c| c.downcast_ref::<faced::Error>()).map(|e| e.kind()) {
        Some(Kind::InvalidInput | Kind::NotFound | Kind::ResourceExhausted) => 2,
        Some(Kind::FailedPrecondition | Kind::Unavailable) => 3,
        _ => 1,
    }
}
