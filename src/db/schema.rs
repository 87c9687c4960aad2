//! Schema versions and upgrades for the faced database, one schema for every table: the gallery
//! (people, face samples, key check), events and their dead letters, the MQTT outbox, and the
//! console's users, sessions and API tokens. [`super::open_migrated`] runs [`migrate`].
//!
//! # How versions work
//!
//! * A **fresh** (empty) database is created by running `schema.sql`, the documented current
//!   schema, in one transaction, and recording version [`LATEST`] as `'fresh'`.
//! * An **existing** database at version `v < LATEST` gets the upgrades `v+1 ..= LATEST` from
//!   [`MIGRATIONS`], each in its own transaction together with its `schema_version` row, so a
//!   crash or power cut leaves the database at some whole version.
//! * A database at `v > LATEST` was written by a newer faced and is refused with
//!   [`Kind::FailedPrecondition`](crate::Kind::FailedPrecondition): guessing could destroy data.
//!
//! # Adding a migration (one line plus the SQL)
//!
//! 1. Write `src/db/migrations/NNNN_what.sql` (NNNN = the new version, e.g.
//!    `0007_door_log.sql`) with the `CREATE`/`ALTER` statements. No `BEGIN`/`COMMIT`: the runner
//!    wraps it in a transaction.
//! 2. Append one line to [`MIGRATIONS`]: `include_str!("migrations/0007_door_log.sql"),`.
//!    The version a file brings the database to is its position in that list, not its name:
//!    never reorder or remove entries (existing databases record the numbers).
//! 3. Make the same change in `schema.sql`, with a comment on every table and column.
//! 4. `cargo test --test gallery`: `upgraded_database_equals_fresh` fails if 3 and 1 disagree.
//!
//! Why not the `rusqlite_migration` crate: its current release (2.6) depends on rusqlite 0.40
//! while faced uses 0.43, and two rusqlite versions cannot link two bundled SQLites into one
//! binary. The runner below is ~60 lines and also gives us a readable `schema_version` history
//! instead of an opaque `PRAGMA user_version`.

use rusqlite::Connection;

use crate::base::Clocks;
use crate::error::{Error, Result};

/// Every upgrade in order: entry `i` takes a database from version `i` to `i + 1` (entry 0
/// creates version 1 in an empty database). Add new ones at the end; never edit a released one.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_mqtt_outbox.sql"),
    include_str!("migrations/0003_events.sql"),
    include_str!("migrations/0004_web_auth.sql"),
    include_str!("migrations/0005_event_dead_letter.sql"),
    include_str!("migrations/0006_web_session_hardening.sql"),
    include_str!("migrations/0007_visitors.sql"),
    include_str!("migrations/0008_fleet.sql"),
    include_str!("migrations/0009_gallery_change.sql"),
    include_str!("migrations/0010_audit.sql"),
    include_str!("migrations/0011_event_frigate.sql"),
    include_str!("migrations/0012_api_token_scope.sql"),
];

/// The schema version this binary writes: the number of migrations.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// The documented current schema, used for fresh databases.
pub const SCHEMA_SQL: &str = include_str!("schema.sql");

/// Version of the database on `conn`: 0 when it has no `schema_version` table (empty or not
/// faced's).
pub fn version(conn: &Connection) -> Result<i64> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    let v: Option<i64> =
        conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
    Ok(v.unwrap_or(0))
}

/// Brings the database on `conn` to [`LATEST`]: creates it from `schema.sql` when empty,
/// otherwise runs the missing upgrades. `what` names the database in errors; `clocks` stamps the
/// `schema_version` rows.
pub fn migrate(conn: &mut Connection, what: &str, clocks: &dyn Clocks) -> Result<()> {
    let v = version(conn)?;
    check_not_newer(v, what)?;
    if v == LATEST {
        return Ok(());
    }
    if v == 0 {
        let objects: i64 =
            conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
        if objects != 0 {
            return Err(Error::precondition(format!(
                "{what} is not a faced database (it has tables but no schema_version); point \
                 --db / gallery.db at faced's database file"
            )));
        }
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA_SQL)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at, how) VALUES (?1, ?2, 'fresh')",
            (LATEST, clocks.unix_ms()),
        )?;
        tx.commit()?;
        return Ok(());
    }
    upgrade_to(conn, LATEST, what, clocks)
}

/// Runs the upgrades from the current version up to `target` (each in its own transaction).
/// Public so tests and tools can stop at an intermediate version; the daemon uses [`migrate`].
pub fn upgrade_to(
    conn: &mut Connection,
    target: i64,
    what: &str,
    clocks: &dyn Clocks,
) -> Result<()> {
    let v = version(conn)?;
    check_not_newer(v.max(target), what)?;
    for next in v + 1..=target {
        let sql = MIGRATIONS[(next - 1) as usize];
        let tx = conn.transaction()?;
        tx.execute_batch(sql).map_err(|e| {
            Error::internal(format!("upgrading {what} to schema version {next} failed"))
                .with_source(e)
        })?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at, how) VALUES (?1, ?2, ?3)",
            (next, clocks.unix_ms(), format!("migration {next:04}")),
        )?;
        tx.commit()?;
        tracing::info!(db = what, version = next, "upgraded database schema");
    }
    Ok(())
}

fn check_not_newer(v: i64, what: &str) -> Result<()> {
    if v > LATEST {
        return Err(Error::precondition(format!(
            "{what} has schema version {v}, newer than this faced knows ({LATEST}); it was written \
             by a newer faced: upgrade faced, or restore a backup made by this version"
        )));
    }
    Ok(())
}

/// `(type, name, sql)` of every schema object, for comparing databases.
pub fn objects(conn: &Connection) -> Result<Vec<(String, String, Option<String>)>> {
    let mut st = conn.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
