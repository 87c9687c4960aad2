//! Subcommands of the `faced` binary, one module each.

pub mod analyze;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod check_config;
pub mod enroll;
pub mod fleet;
pub mod identify;
pub mod people;
pub mod run;
pub mod user;

use faced::Kind;

/// One tracing subscriber for the whole process, filtered by `FACED_LOG` (default `info`):
/// under systemd with stderr connected to the journal (`JOURNAL_STREAM` names fd 2), events go
/// to journald natively with their own and their spans' fields (`journalctl -o verbose` shows
/// `F_CAMERA=door` on a camera thread's lines); elsewhere they are formatted to stderr. Libraries
/// that log through the `log` crate (rumqttc, rustls) are bridged into the same subscriber by
/// `try_init` (tracing-log).
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FACED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // If the journal socket cannot be opened, fall back to stderr, which systemd also collects
    // (as plain lines): losing the fields is better than losing the log.
    let journal = stderr_is_journal()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|l| l.with_syslog_identifier("faced".into()));
    let stderr = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            // Not fd 2 itself: LiteRT model loads point fd 2 at a pipe for a moment
            // (inference::litert).
            .with_writer(faced::inference::litert::log_stderr)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(stderr)
        .try_init();
}

/// Whether fd 2 is the stream systemd connected to the journal: `JOURNAL_STREAM` is
/// `<device>:<inode>` of that stream, and must match fd 2 itself, because a child started from a
/// service inherits the variable with a different stderr (sd_journal_stream_fd(3)).
fn stderr_is_journal() -> bool {
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().and_then(|v| {
        let (d, i) = v.split_once(':')?;
        Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?))
    }) else {
        return false;
    };
    // SAFETY: fstat only writes into the zeroed struct we pass; fd 2 may be closed, which
    // fstat reports as an error.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// Exit status for an error: 2 for bad input or usage, 3 for a broken installation or missing
/// dependency, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e
        .chain()
        .find_map(|c| c.downcast_ref::<faced::Error>())
        .map(|e| e.kind())
    {
        Some(Kind::InvalidInput | Kind::NotFound | Kind::ResourceExhausted) => 2,
        Some(Kind::FailedPrecondition | Kind::Unavailable) => 3,
        _ => 1,
    }
}

use std::path::{Path, PathBuf};

use faced::vision::detect::{DetectorConfig, DetectorKind, Tiling};
use faced::vision::{Analyzer, InferenceConfig};

/// Options shared by the commands that run the models.
#[derive(clap::Args, Debug, Clone)]
pub struct VisionArgs {
    /// Detector: `short` (faces within ~2 m) or `full` (up to ~5 m).
    #[arg(long, default_value = "short")]
    pub detector: DetectorKind,
    /// Minimum face score, 0..1.
    #[arg(long, default_value_t = 0.5)]
    pub min_score: f32,
    /// One detector pass only (faster; misses small faces and faces cut by the edge).
    #[arg(long)]
    pub single_pass: bool,
    /// XNNPACK threads per model.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Model precision: auto (the CPU decides, as `faced run` does), float, float_stock, int8
    /// or dynamic_int8.
    #[arg(long, default_value = "auto")]
    pub precision: faced::models::Precision,
    /// Path of libLiteRt.so (default: search; see `faced check-config`).
    #[arg(long, env = "FACED_LITERT_LIB")]
    pub litert_lib: Option<PathBuf>,
    /// Folder holding the .tflite models (default: search).
    #[arg(long, env = "FACED_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
}

impl VisionArgs {
    /// Loads the runtime and models.
    pub fn analyzer(&self) -> anyhow::Result<Analyzer> {
        let inf = InferenceConfig {
            litert_lib: self.litert_lib.clone(),
            models_dir: self.models_dir.clone(),
            threads: self.threads,
            precision: self.precision,
        };
        let det = DetectorConfig {
            kind: self.detector,
            min_score: self.min_score,
            tiling: if self.single_pass {
                Tiling::Off
            } else {
                Tiling::Auto
            },
            ..DetectorConfig::default()
        };
        Ok(Analyzer::open(&inf, det)?)
    }
}

/// Options naming the gallery database.
#[derive(clap::Args, Debug, Clone)]
pub struct GalleryArgs {
    /// Gallery database file (created if missing).
    #[arg(long, env = "FACED_GALLERY__DB")]
    pub db: PathBuf,
    /// Encryption key file (default: `<db>.key`, created with mode 0600 on first use).
    #[arg(long, env = "FACED_GALLERY__KEY")]
    pub key: Option<PathBuf>,
}

impl GalleryArgs {
    /// Opens (creating if needed) the gallery.
    pub fn open(&self) -> anyhow::Result<faced::gallery::Gallery> {
        let opts = faced::gallery::GalleryOptions {
            key_path: self.key.clone(),
            ..Default::default()
        };
        Ok(faced::gallery::Gallery::open(&self.db, &opts)?)
    }
}

/// Prints one JSON value as a line on stdout.
pub fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

/// The JSON line for an image that could not be processed.
pub fn error_line(file: &Path, e: &dyn std::fmt::Display) -> serde_json::Value {
    serde_json::json!({ "file": file.display().to_string(), "error": e.to_string() })
}

/// Rounds for compact JSON output.
pub fn r(v: f32, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v as f64 * p).round() / p
}
