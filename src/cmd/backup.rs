//! `faced backup` and `faced restore`: encrypted archives of the database and its key
//! (`faced::db::backup` has the format and the restore's steps).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use faced::audit::{Action, By, Log, Subject};
use faced::base::{Clocks, RealClocks};
use faced::db::backup::{self, DbLock, Passphrase};

/// Where the database and its key are: `--db`/`--key`, else the configuration's `gallery.db`
/// and `gallery.key_path`.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Configuration file naming the database (default /etc/faced/faced.toml, or the built-in
    /// default when it does not exist).
    #[arg(long, short, env = "FACED_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database file (overrides the configuration's gallery.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Key file (default: the configuration's gallery.key_path, else `<db>.key`).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// File whose first line is the passphrase (`-` = standard input). At least 10 characters.
    #[arg(long, env = "FACED_BACKUP_PASSPHRASE_FILE")]
    pub passphrase_file: PathBuf,
}

impl Target {
    fn resolve(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (db, key) = match &self.db {
            Some(db) => (db.clone(), self.key.clone()),
            None => {
                let cfg = super::run::load_config(self.config.as_deref())?;
                (
                    cfg.raw.gallery.db.clone(),
                    self.key.clone().or(cfg.raw.gallery.key_path.clone()),
                )
            }
        };
        let key = key.unwrap_or_else(|| {
            let mut p = db.as_os_str().to_owned();
            p.push(".key");
            PathBuf::from(p)
        });
        Ok((db, key))
    }
}

/// Write an encrypted backup of the database (people, face samples, events, console accounts)
/// and its key file. Safe while `faced run` is running: the copy is consistent.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub target: Target,
    /// Archive to write (must not exist); a folder gets a dated name inside it.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// Restore an archive made by `faced backup` or the console. The archive is verified completely
/// before anything changes; the replaced database is kept as `<db>.before-restore`. While
/// `faced run` has the database open, the restore is staged and applies at its next start.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The archive (.fbk).
    pub archive: PathBuf,
    #[command(flatten)]
    pub target: Target,
}

/// Runs `faced backup`.
pub fn backup(a: BackupArgs) -> anyhow::Result<ExitCode> {
    let (db, key) = a.target.resolve()?;
    if !db.exists() {
        return Err(faced::Error::not_found(format!(
            "{} does not exist: nothing to back up",
            faced::db::describe(&db)
        ))
        .into());
    }
    let pass = Passphrase::from_file(&a.target.passphrase_file)?;
    let out = if a.out.is_dir() {
        a.out
            .join(backup::scheduled_name("faced", RealClocks.unix_ms()))
    } else {
        a.out.clone()
    };
    let w = backup::write(&db, &key, &out, &pass, &RealClocks)?;
    let detail = format!("{} bytes, encrypted, to {}", w.bytes, out.display());
    note(
        Log::open(&db, &key, Arc::new(RealClocks)),
        Action::BackupWritten,
        detail,
    );
    println!(
        "wrote {} ({} bytes, schema {}, made {})",
        out.display(),
        w.bytes,
        w.header.schema_version,
        w.header.created_at
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `faced restore`.
pub fn restore(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let (db, key) = a.target.resolve()?;
    let pass = Passphrase::from_file(&a.target.passphrase_file)?;
    let f = std::fs::File::open(&a.archive).map_err(|e| {
        faced::Error::not_found(format!("cannot open {}: {e}", a.archive.display()))
    })?;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        std::fs::create_dir_all(dir)?;
    }
    let staged = backup::stage(std::io::BufReader::new(f), &pass, &db)?;
    // In the database being replaced, which is kept; the restored one records the swap.
    if db.exists() && key.exists() {
        let detail = format!(
            "{} people, {} samples, {} events, made {} by faced {}",
            staged.people,
            staged.samples,
            staged.events,
            staged.header.created_at,
            staged.header.faced_version
        );
        note(
            Log::open(&db, &key, Arc::new(RealClocks)),
            Action::RestoreStaged,
            detail,
        );
    }
    println!(
        "verified {}: made {} by faced {}: {} people, {} face samples, {} events",
        a.archive.display(),
        staged.header.created_at,
        staged.header.faced_version,
        staged.people,
        staged.samples,
        staged.events
    );
    match DbLock::try_acquire(&db)? {
        Some(_lock) => {
            let applied = backup::apply_staged(&db, &key)?;
            if let Some(a) = &applied {
                match Log::open_upgraded(&db, &key, Arc::new(RealClocks)) {
                    Ok(audit) => super::audit::note_restore_applied(&audit, &By::cli(), a),
                    Err(e) => {
                        eprintln!("faced: warning: the restore is not in the audit trail: {e}")
                    }
                }
            }
            let kept = applied
                .and_then(|a| a.previous)
                .map(|p| format!("; the previous database is kept as {}", p.display()))
                .unwrap_or_default();
            println!("restored into {}{kept}", db.display());
        }
        None => println!("{}", running_note(&db)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Records what this command did to the whole database in its audit trail; the command's work
/// is done by then, so a trail that cannot be opened (a database from a newer faced, being
/// backed up as it is) is a warning.
fn note(log: faced::Result<Arc<Log>>, action: Action, detail: String) {
    match log {
        Ok(log) => log.note(&By::cli(), action, Subject::database(), detail),
        Err(e) => eprintln!("faced: warning: not recorded in the audit trail: {e}"),
    }
}

fn running_note(db: &Path) -> String {
    format!(
        "faced is running with {}: the restore is staged and applies when it restarts \
         (`sudo systemctl restart faced`)",
        db.display()
    )
}
