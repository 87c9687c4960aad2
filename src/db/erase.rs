//! What an erase does to the database file, beyond deleting rows: see docs/privacy.md.
//!
//! Every connection runs with `secure_delete = ON` ([`super::open`]), so SQLite overwrites the
//! bytes of deleted rows, and the pages they free, with zeros in the page's next version. In
//! WAL mode that next version goes to the WAL first; the database file and the older WAL frames
//! still hold the old bytes until a checkpoint copies the zeroed pages back and the WAL is
//! reset. [`scrub`] does both at once (`wal_checkpoint(TRUNCATE)`), so after it returns no byte
//! of an erased row, plaintext or sealed, is left in `faced.db`, `faced.db-wal` or
//! `faced.db-shm` (which holds only page numbers). What a file system or an SD card's wear
//! levelling keeps of overwritten blocks is beyond SQLite's reach, and is said so in the docs.
//!
//! [`person_traces`] and [`visitor_traces`] remove what names a subject outside its own
//! tables: event JSON waiting in the MQTT outbox and in the dead letters. They run inside the
//! erasing transaction, so an erase is whole or not at all.

use rusqlite::{Connection, Transaction};

use crate::error::Result;

/// How many times [`scrub`] asks again when readers keep an old snapshot; each ask waits up
/// to the busy timeout (5 s) for them.
const SCRUB_TRIES: u32 = 3;

/// Copies every WAL frame into the database file and truncates the WAL to zero bytes, after
/// the commit of an erase (module docs). Waits for readers and writers of other connections
/// through the busy handler; returns `false` (and logs) when they still held an older snapshot
/// after [`SCRUB_TRIES`] waits: the erased rows are gone from every query, and their bytes from
/// the WAL at the next scrub or automatic checkpoint.
pub fn scrub(conn: &Connection) -> Result<bool> {
    scrub_tries(conn, SCRUB_TRIES)
}

/// [`scrub`] with one wait for other connections: for the hourly retention pass, which must not
/// hold up the event writer for long and comes again within the hour.
pub fn scrub_once(conn: &Connection) -> Result<bool> {
    scrub_tries(conn, 1)
}

fn scrub_tries(conn: &Connection, tries: u32) -> Result<bool> {
    for _ in 0..tries {
        let (busy, _log, _done): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        if busy == 0 {
            return Ok(true);
        }
    }
    tracing::warn!(
        "an erase is committed, but other readers of the database kept the write-ahead log in \
         use: its old pages are overwritten at the next erase or checkpoint"
    );
    Ok(false)
}

/// Deletes the MQTT outbox rows and dead letters whose event JSON names person `id` (events
/// not yet published, or not storable), in the erasing transaction.
pub fn person_traces(tx: &Transaction<'_>, id: i64) -> Result<usize> {
    traces(tx, "$.person_id", &[id])
}

/// As [`person_traces`], for the `unknown` events of the visitors `ids`.
pub fn visitor_traces(tx: &Transaction<'_>, ids: &[i64]) -> Result<usize> {
    traces(tx, "$.visitor_id", ids)
}

fn traces(tx: &Transaction<'_>, path: &str, ids: &[i64]) -> Result<usize> {
    let mut n = 0;
    // The outbox stores payloads as BLOBs: cast them, since SQLite reads a BLOB given to the
    // JSON functions as its binary JSONB format. Only event JSON has these keys.
    let mut outbox = tx.prepare_cached(&format!(
        "DELETE FROM mqtt_outbox WHERE json_valid(CAST(payload AS TEXT)) \
           AND json_extract(CAST(payload AS TEXT), '{path}') = ?1"
    ))?;
    let mut dead = tx.prepare_cached(&format!(
        "DELETE FROM event_dead_letter WHERE json_extract(event, '{path}') = ?1"
    ))?;
    for id in ids {
        n += outbox.execute([id])?;
        n += dead.execute([id])?;
    }
    Ok(n)
}
