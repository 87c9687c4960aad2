//! `faced audit`: check, list and export the audit trail of a database (docs/audit.md). Reads
//! the database directly, so it works with or without the daemon running (SQLite WAL).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use faced::audit::{Action, By, Filter, Log, Subject};
use faced::base::RealClocks;

/// Check, list or export the audit trail: who changed what, to whom, when and from where.
/// `verify` checks every row's HMAC chain (keyed by the gallery key file) and names the first
/// edited, deleted or reordered row: exit status 0 when the trail is whole, 1 when it is not.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file naming the database (default /etc/faced/faced.toml, or the built-in
    /// default when it does not exist).
    #[arg(long, short, env = "FACED_CONFIG")]
    config: Option<PathBuf>,
    /// Database file (overrides the configuration's gallery.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Gallery key file (default: the configuration's gallery.key_path, else `<db>.key`).
    #[arg(long)]
    key: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Check the whole chain; exit 1 naming the first bad row.
    Verify,
    /// Print the newest rows, newest first.
    List {
        /// How many rows.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=500))]
        limit: u64,
        /// Only actors whose name contains this.
        #[arg(long)]
        actor: Option<String>,
        /// Only this action (enroll, rename, erase, sign_in_failed, ...).
        #[arg(long)]
        action: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the whole trail, newest first (at most 100 000 rows).
    Export {
        /// As CSV (the one format; formula-like cells are prefixed with ').
        #[arg(long, required = true)]
        csv: bool,
        /// File to write (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

/// Runs `faced audit`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (db, key) = match &args.db {
        Some(db) => (db.clone(), args.key.clone()),
        None => {
            let cfg = super::run::load_config(args.config.as_deref())?;
            let g = cfg.raw.gallery;
            (g.db, args.key.clone().or(g.key_path))
        }
    };
    if !db.is_file() {
        return Err(faced::Error::not_found(format!(
            "{} does not exist; pass the daemon's database with --db",
            faced::db::describe(&db)
        ))
        .into());
    }
    let key = key.unwrap_or_else(|| {
        let mut p = db.as_os_str().to_owned();
        p.push(".key");
        PathBuf::from(p)
    });
    let log = Log::open(&db, &key, Arc::new(RealClocks))?;
    match args.cmd {
        Cmd::Verify => return Ok(verify(&log, &db)?),
        Cmd::List {
            limit,
            actor,
            action,
            json,
        } => {
            let f = Filter {
                actor,
                action,
                limit: Some(limit as usize),
                ..Default::default()
            };
            for r in log.list(&f)? {
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    let subject = [r.subject_kind.as_str()]
                        .into_iter()
                        .chain(r.subject_id.as_deref())
                        .chain(r.subject_name.as_deref())
                        .collect::<Vec<_>>()
                        .join(" ");
                    println!(
                        "{:>6}  {}  {} {} from {}  {}  {subject}  {}",
                        r.id, r.at, r.actor_kind, r.actor, r.origin, r.action, r.detail
                    );
                }
            }
        }
        Cmd::Export { csv: _, out } => {
            let rows = log.export(&Filter::default())?;
            let text = faced::audit::csv::to_csv(&rows);
            match &out {
                Some(p) => std::fs::write(p, text)?,
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
            let detail = format!("{} rows as CSV", rows.len());
            log.note(&By::cli(), Action::AuditExport, Subject::database(), detail);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `faced audit verify`: 0 when whole, 1 naming the first bad row (or the damage an append
/// found and recorded).
fn verify(log: &Log, db: &std::path::Path) -> faced::Result<ExitCode> {
    match log.verify()? {
        Ok(v) if v.damaged.is_empty() => {
            println!(
                "audit trail of {}: {} rows, through row {} (retention deleted rows 1..={}); \
                 {} subject names erased; the chain is whole",
                db.display(),
                v.rows,
                v.head,
                v.anchor,
                v.forgotten
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(v) => {
            for id in &v.damaged {
                eprintln!(
                    "faced: audit row {id}: the trail was damaged before this row (rows deleted \
                     from its end, or its seal edited); see `faced audit list`"
                );
            }
            Ok(ExitCode::from(1))
        }
        Err(t) => {
            eprintln!("faced: {t}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Records in the restored database that it replaced another (its own trail goes on from the
/// backup's; the replaced one, with the row of who staged the restore, is kept beside it).
pub fn note_restore_applied(audit: &Log, by: &By, a: &faced::db::backup::Applied) {
    let kept = match &a.previous {
        Some(p) => format!("the replaced database is kept as {}", p.display()),
        None => "no database was replaced".to_string(),
    };
    audit.note(by, Action::RestoreApplied, Subject::database(), kept);
}

/// `faced run`: records a threshold set on `cameras` by a signed MQTT command.
pub fn note_thresholds(audit: &Log, by: &By, cameras: &[String], threshold: f32) {
    for c in cameras {
        let detail = format!("threshold {threshold}");
        audit.note(by, Action::Threshold, Subject::camera(c), detail);
    }
}

/// `faced run`: applies `[audit]` retention now (at start, then every [`RETENTION_EVERY`]).
pub async fn retention(audit: &Arc<Log>, cfg: &faced::audit::AuditConfig) {
    let (a, c) = (audit.clone(), cfg.clone());
    match tokio::task::spawn_blocking(move || a.retain(&c)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(rows = n, "audit retention deleted the oldest rows"),
        Ok(Err(e)) => tracing::error!("audit retention: {e}"),
        Err(e) => tracing::error!("audit retention task: {e}"),
    }
}

/// How often audit retention runs: rows are deleted by the day, an hour late at most.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);
