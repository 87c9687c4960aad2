//! `faced people`: list, rename and remove enrolled people in the gallery database.
//!
//! Runs on the main thread and opens the database directly; it can run while the daemon is up
//! (SQLite WAL allows it), but the daemon's in-memory index only sees renames and removals
//! after a restart. Never prints embeddings or crops.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use faced::gallery::{Gallery, GalleryOptions, PersonSummary};

/// List, rename or remove enrolled people. Removing a person deletes all their face samples and
/// crops.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gallery database file (it must exist: this command never creates one).
    #[arg(long)]
    db: PathBuf,
    /// The gallery key file (default: the database path with `.key` appended).
    #[arg(long)]
    key: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// List everyone with their sample counts, by name.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rename a person (names ignore ASCII case when looked up).
    Rename {
        /// Current name.
        old: String,
        /// New name: 1 to 100 characters, no control characters, not taken.
        new: String,
    },
    /// Remove a person and every face sample and crop of theirs.
    Remove {
        /// Name of the person to remove.
        name: String,
    },
}

/// Runs `faced people`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.db.is_file() {
        return Err(faced::Error::not_found(format!(
            "database {} does not exist; pass the daemon's gallery database with --db",
            args.db.display()
        ))
        .into());
    }
    let opts = GalleryOptions {
        key_path: args.key.clone(),
        ..Default::default()
    };
    let mut g =
        Gallery::open(&args.db, &opts).with_context(|| format!("opening {}", args.db.display()))?;
    match args.cmd {
        Cmd::List { json } => {
            let people = g.people()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&people)?);
            } else {
                print!("{}", table(&people));
            }
        }
        Cmd::Rename { old, new } => {
            let p = find(&g, &old)?;
            g.by(&faced::audit::By::cli()).rename_person(p.id, &new)?;
            println!("renamed {:?} to {:?}", p.name, new.trim());
        }
        Cmd::Remove { name } => {
            let p = find(&g, &name)?;
            let n = g.samples(p.id)?.len();
            g.by(&faced::audit::By::cli()).remove_person(p.id)?;
            println!("removed {:?} and {n} face sample(s)", p.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn find(g: &Gallery, name: &str) -> anyhow::Result<faced::gallery::Person> {
    Ok(g.person_by_name(name)?.ok_or_else(|| {
        faced::Error::not_found(format!(
            "no person named {name:?}; `faced people list` shows who is enrolled"
        ))
    })?)
}

/// A plain-text table: id, name, positive and negative sample counts, enrolment date (UTC).
fn table(people: &[PersonSummary]) -> String {
    let w = people
        .iter()
        .map(|p| p.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut s = format!(
        "{:>6}  {:<w$}  {:>8}  {:>8}  {}\n",
        "ID", "NAME", "SAMPLES", "NEGATIVE", "ENROLLED (UTC)"
    );
    for p in people {
        s += &format!(
            "{:>6}  {:<w$}  {:>8}  {:>8}  {}\n",
            p.id.0,
            p.name,
            p.positive_samples,
            p.negative_samples,
            utc(p.created_at_ms)
        );
    }
    s
}

/// `YYYY-MM-DD HH:MM` for Unix milliseconds (proleptic Gregorian, UTC).
fn utc(ms: i64) -> String {
    // "2026-11-30T14:05:09.042Z" → "2026-11-30 14:05"
    let t = faced::base::rfc3339_utc(ms);
    let end = t.find('T').map_or(t.len(), |i| i + 6).min(t.len());
    t[..end].replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00");
        assert_eq!(
            super::utc(1_767_225_600_000 + 3_600_000 + 60_000),
            "2026-01-01 01:01"
        );
    }
}
