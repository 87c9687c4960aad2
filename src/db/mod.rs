//! The faced database: every SQLite connection, its settings, the schema and its upgrades, and
//! the encryption of biometric columns. Everything dealing with the database file flows through
//! here; the modules that own tables (gallery, events, the MQTT outbox, web accounts) get their
//! connections from [`open`] or [`open_migrated`] and never call `Connection::open` themselves.
//!
//! * [`open`]: one connection with the one set of PRAGMAs (below), so a setting cannot differ
//!   between the gallery, the event writer, the outbox publisher and the console.
//! * [`schema`]: versions and upgrades (`migrations/`), and `schema.sql`, the documented current
//!   schema: **read it before touching a table**.
//! * [`crypto`]: AES-256-GCM sealing of face data (embeddings, crops, event snapshots) with the
//!   key file beside the database.
//!
//! # Threads and connections
//! Each user of the database holds its own connection (`rusqlite::Connection` is `Send`, not
//! `Sync`): the gallery (behind the daemon's mutex), the event writer thread `faced-events`, the
//! `mqtt` publisher thread, and the console's account store and event reader (each behind a
//! mutex, used from blocking threads). WAL mode lets readers run while one writer writes, so a
//! login never waits for an enrollment and the publisher never waits for the event writer.
//!
//! # Invariants
//! * The file is created and upgraded only by [`open_migrated`] (the gallery and the account
//!   store, whichever opens first); the others require the tables to exist and say so.
//! * Face data is stored only sealed by [`crypto::Cipher`], bound to table, column and row.
//! * An event and its MQTT outbox row are written in one transaction (`events::store`).

pub mod backup;
pub mod crypto;
pub mod erase;
pub mod schema;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use crate::base::Clocks;
use crate::error::{Error, Result};

/// How long a statement waits for another connection's write lock before failing with "database
/// is locked". Writes are short (a batch of events, one enrollment), so 5 s only runs out when
/// something is wrong; without it, concurrent writers would fail at once.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of the database at `path` in errors ("database /var/lib/faced/faced.db").
pub fn describe(path: &Path) -> String {
    format!("database {}", path.display())
}

/// Opens (creating if needed) the database file at `path` with faced's settings:
///
/// * `busy_timeout` = [`BUSY_TIMEOUT`]: see there.
/// * `journal_mode = WAL`: readers (console, publisher) never block the writer and the writer
///   never blocks them; refused with an error if SQLite cannot switch (e.g. a network file
///   system), since every concurrency argument in faced assumes it. This is also the first
///   statement that reads the file, so a damaged file fails here, named.
/// * `synchronous = NORMAL`: with WAL, no fsync per commit (SD-card wear); a power cut can lose
///   the last commits but never corrupts the file. The event writer and the gallery raise it to
///   `FULL` ([`durable`]), because their commits are announced.
/// * `foreign_keys = ON`: removing a person must remove their samples and events, and removing a
///   user their sessions and tokens (`ON DELETE CASCADE`); SQLite enforces that only when asked,
///   per connection, so every connection asks.
/// * `secure_delete = ON`: deleted rows and freed pages are overwritten with zeros, so an erased
///   face does not stay readable in free space ([`erase`] finishes the job in the WAL). Costs
///   writes of zeros on deletes only; inserts and reads are unchanged.
///
/// Does not touch the schema: see [`open_migrated`] and [`require_table`].
pub fn open(path: &Path) -> Result<Connection> {
    let what = describe(path);
    let conn = Connection::open(path)
        .map_err(|e| Error::precondition(format!("cannot open {what}")).with_source(e))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| Error::from(e).in_database(&what))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::precondition(format!(
            "{what}: cannot switch to WAL mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "secure_delete", true)?;
    Ok(conn)
}

/// Makes every commit on `conn` durable before it returns (`synchronous = FULL`: the WAL is
/// synced at each commit), for the connections whose commits are announced to someone: the
/// event writer (an event is published over MQTT right after its commit) and the gallery (an
/// enrollment is acknowledged to the console). With [`open`]'s `NORMAL`, a power cut can roll
/// back the last commits; for those two it would mean an `event_id` that a subscriber already
/// saw being given to a different event after the reboot, or an acknowledged enrollment gone.
/// The others (outbox deletes, session touches, schema checks) stay `NORMAL`: losing one of
/// their last commits only repeats a publish or a touch. Costs one sync per event batch or
/// enrollment, on the writer's own thread.
pub fn durable(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// [`open`], then brings the schema to [`schema::LATEST`] (creating it in an empty file).
/// `clocks` stamps the `schema_version` rows.
pub fn open_migrated(path: &Path, clocks: &dyn Clocks) -> Result<Connection> {
    let what = describe(path);
    let mut conn = open(path)?;
    schema::migrate(&mut conn, &what, clocks).map_err(|e| e.in_database(&what))?;
    Ok(conn)
}

/// Fails with [`Kind::FailedPrecondition`](crate::Kind::FailedPrecondition) and `hint` unless
/// `table` exists: for connections that use a table but must not create the schema (it is the
/// gallery's and the account store's job, and a missing table means a wrong or foreign file).
pub fn require_table(conn: &Connection, table: &str, what: &str, hint: &str) -> Result<()> {
    let has: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| Error::from(e).in_database(what))?;
    if has.is_none() {
        return Err(Error::precondition(format!(
            "{what} has no {table} table; {hint}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::SimulatedClocks;

    #[test]
    fn every_connection_gets_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faced.db");
        let clocks = SimulatedClocks::new();
        drop(open_migrated(&path, &clocks).unwrap());
        let c = open(&path).unwrap();
        let get = |p: &str| -> String {
            c.query_row(&format!("PRAGMA {p}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
        };
        assert_eq!(get("journal_mode"), "wal");
        assert_eq!(get("foreign_keys"), "1");
        assert_eq!(get("synchronous"), "1", "NORMAL");
        assert_eq!(get("busy_timeout"), "5000");
        assert_eq!(get("secure_delete"), "1", "erased rows overwritten");
        durable(&c).unwrap();
        assert_eq!(get("synchronous"), "2", "FULL for announced commits");
        assert_eq!(schema::version(&c).unwrap(), schema::LATEST);
        let applied: i64 = c
            .query_row("SELECT applied_at FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(applied, clocks.unix_ms());
        assert!(require_table(&c, "event", "db", "").is_ok());
        let e = require_table(&c, "nope", "db", "open it first").unwrap_err();
        assert!(
            e.to_string().contains("no nope table; open it first"),
            "{e}"
        );
    }
}
