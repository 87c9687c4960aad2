//! Appending, reading, forgetting and retiring audit rows: [`Trail`] appends inside a caller's
//! transaction, [`Log`] holds its own connection for everything else.
//!
//! An append reads the last row and the seal, inserts the row chained to the last one and
//! rewrites the seal, all in the caller's write transaction: SQLite lets one writer at a time
//! through, and a transaction whose snapshot went stale cannot write (WAL mode refuses it), so
//! two writers on two connections can never chain to the same row.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::Deserialize;

use super::chain::{Chained, Keys, MAC_LEN, Seal, Tampered, Verified};
use super::types::{Action, AuditConfig, By, Entry, MAX_DETAIL_CHARS, Row, Subject, SubjectKind};
use crate::base::{Clocks, rfc3339_utc};
use crate::db::{self, crypto};
use crate::error::{Error, Result};

/// Largest page of [`Log::list`].
pub const MAX_PAGE: usize = 500;
/// Most rows one [`Log::export`] returns.
pub const MAX_EXPORT: usize = 100_000;
const DAY_MS: i64 = 86_400_000;

/// Appends rows inside the caller's transaction (the gallery's writes): the derived keys and
/// the clock that stamps rows. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Trail {
    keys: Arc<Keys>,
    clocks: Arc<dyn Clocks>,
}

impl Trail {
    /// The trail keyed by the gallery key `key`.
    pub(crate) fn new(key: &[u8; crypto::KEY_LEN], clocks: Arc<dyn Clocks>) -> Trail {
        Trail {
            keys: Arc::new(Keys::derive(key)),
            clocks,
        }
    }

    /// Appends `e` on `conn`, which must be inside a write transaction (the row commits or
    /// rolls back with the change it records). Returns the row; log it with [`Row::log`] once
    /// the transaction committed.
    pub fn append(&self, conn: &Connection, e: &Entry<'_>) -> Result<Row> {
        if conn.is_autocommit() {
            return Err(Error::internal(
                "an audit row must be appended inside the change's transaction",
            ));
        }
        let seal = Seal::read(conn)?;
        let last: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT id, mac FROM audit ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (mut seal, damage) = check_end(seal, last, &self.keys);
        let at = self.clocks.unix_ms();
        if let Some(why) = damage {
            // Recorded, not refused: a door must not stop opening because someone edited the
            // file. The damage stays in the chain, MACed, for `faced audit verify` to report.
            let by = By::system("faced");
            let d = Entry {
                by: &by,
                action: Action::AuditDamaged,
                subject: Subject::none(),
                detail: why,
            };
            let row = self.insert(conn, &mut seal, at, &d)?;
            tracing::error!("audit trail damaged: {}", row.detail);
        }
        let row = self.insert(conn, &mut seal, at, e)?;
        seal.write(conn, &self.keys)?;
        Ok(row)
    }

    /// Inserts `e` as the row after `seal.head_id` and moves the head to it.
    fn insert(&self, conn: &Connection, seal: &mut Seal, at: i64, e: &Entry<'_>) -> Result<Row> {
        let id = seal.head_id + 1;
        let detail: String = e.detail.chars().take(MAX_DETAIL_CHARS).collect();
        let (salt, tag) = match &e.subject.name {
            Some(n) => {
                let mut salt = [0u8; 16];
                SystemRandom::new()
                    .fill(&mut salt)
                    .map_err(|_| Error::unavailable("system random source failed"))?;
                let tag = self.keys.name_tag(&salt, n);
                (Some(salt.to_vec()), Some(tag.to_vec()))
            }
            None => (None, None),
        };
        let c = Chained {
            id,
            at,
            actor_kind: e.by.kind.as_str(),
            actor: &e.by.actor,
            origin: &e.by.origin,
            action: e.action.as_str(),
            subject_kind: e.subject.kind.as_str(),
            subject_id: e.subject.id.as_deref(),
            subject_tag: tag.as_deref(),
            detail: &detail,
        };
        let mac = self.keys.row_mac(&c, &seal.head_mac);
        conn.prepare_cached(
            "INSERT INTO audit (id, at, actor_kind, actor, origin, action, subject_kind, subject_id,
                                subject_name, subject_salt, subject_tag, detail, mac)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            id,
            at,
            c.actor_kind,
            c.actor,
            c.origin,
            c.action,
            c.subject_kind,
            c.subject_id,
            e.subject.name,
            salt,
            tag,
            detail,
            &mac[..]
        ])?;
        seal.head_id = id;
        seal.head_mac = mac.to_vec();
        Ok(Row {
            id,
            at_ms: at,
            at: rfc3339_utc(at),
            actor_kind: c.actor_kind.into(),
            actor: e.by.actor.clone(),
            origin: e.by.origin.clone(),
            action: c.action.into(),
            subject_kind: c.subject_kind.into(),
            subject_id: e.subject.id.clone(),
            subject_name: e.subject.name.clone(),
            detail,
        })
    }
}

/// The seal to append after, and what is wrong with the trail's end if anything: the seal
/// missing while rows exist, its MAC wrong, or its head not the last row (rows deleted from the
/// end, or the seal replaced by an older one). The append then chains to the real last row.
fn check_end(
    seal: Option<Seal>,
    last: Option<(i64, Vec<u8>)>,
    keys: &Keys,
) -> (Seal, Option<String>) {
    let (seal, mut why) = match seal {
        None if last.is_none() => return (Seal::empty(), None),
        None => (Seal::empty(), Some("the seal was missing".to_string())),
        Some(s) if !s.is_valid(keys) => (
            Seal {
                mac: Vec::new(),
                ..s
            },
            Some("the seal was altered".to_string()),
        ),
        Some(s) => (s, None),
    };
    let mut seal = seal;
    let (last_id, last_mac) = last.unwrap_or((seal.anchor_id, seal.anchor_mac.clone()));
    if (last_id, &last_mac) != (seal.head_id, &seal.head_mac) {
        let note = format!(
            "the seal named row {} as the newest, the table's newest was row {last_id}",
            seal.head_id
        );
        why = Some(match why {
            Some(w) => format!("{w}; {note}"),
            None => note,
        });
        seal.head_id = last_id;
        seal.head_mac = last_mac;
        seal.anchor_id = seal.anchor_id.min(last_id);
    }
    (seal, why)
}

/// Clears the name of subject `kind` `id` in every row naming them (the chain covers only the
/// name's salted tag, so it still verifies). Called by each erase, inside its transaction.
/// Returns the rows cleared.
pub fn forget_subject(conn: &Connection, kind: SubjectKind, id: &str) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE audit SET subject_name = NULL, subject_salt = NULL
         WHERE subject_kind = ?1 AND subject_id = ?2 AND subject_salt IS NOT NULL",
        params![kind.as_str(), id],
    )?)
}

/// Which rows to list (all optional), newest first: also the query of `GET /api/audit`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Only actors whose name contains this (ASCII case ignored).
    pub actor: Option<String>,
    /// Only this actor kind (`user`, `token`, `cli`, ...).
    pub actor_kind: Option<String>,
    /// Only this action (`enroll`, `erase`, ...).
    pub action: Option<String>,
    /// Only this subject kind (`person`, `visitor`, ...).
    pub subject_kind: Option<String>,
    /// Only this subject id (with `subject_kind`).
    pub subject_id: Option<String>,
    /// At or after this time, Unix ms.
    pub since_ms: Option<i64>,
    /// Before this time, Unix ms.
    pub until_ms: Option<i64>,
    /// Only ids below this (paging: the last id of the previous page).
    pub before_id: Option<i64>,
    /// Page size, 1..=[`MAX_PAGE`] (default 100).
    pub limit: Option<usize>,
}

/// The audit trail of one database on its own connection: standalone appends
/// ([`Log::record`]), listing, retention and verification. Shared (`Arc`) by the gallery, the
/// console and the daemon; every method blocks on SQLite.
#[derive(Debug)]
pub struct Log {
    conn: Mutex<Connection>,
    trail: Trail,
}

impl Log {
    /// The trail of the existing database at `db`, keyed by the gallery key file `key_path`
    /// (which must exist: the gallery creates it). Does not upgrade the schema: a database
    /// without the trail's tables (an older faced's) is refused, named.
    pub fn open(db: &Path, key_path: &Path, clocks: Arc<dyn Clocks>) -> Result<Arc<Log>> {
        let what = db::describe(db);
        if !db.is_file() {
            return Err(Error::not_found(format!("{what} does not exist")));
        }
        let conn = db::open(db)?;
        for t in ["audit", "audit_seal"] {
            db::require_table(
                &conn,
                t,
                &what,
                "it was written by an older faced: `faced run` upgrades it",
            )?;
        }
        Self::on(conn, key_path, clocks)
    }

    /// [`Log::open`] that first creates or upgrades the schema (a database just restored from
    /// an older backup).
    pub fn open_upgraded(db: &Path, key_path: &Path, clocks: Arc<dyn Clocks>) -> Result<Arc<Log>> {
        let conn = db::open_migrated(db, &*clocks)?;
        Self::on(conn, key_path, clocks)
    }

    fn on(conn: Connection, key_path: &Path, clocks: Arc<dyn Clocks>) -> Result<Arc<Log>> {
        let key = crypto::read_key(key_path)?.ok_or_else(|| {
            Error::precondition(format!(
                "key file {} does not exist; the audit trail's keys derive from the gallery key \
                 (pass it with --key, or set gallery.key_path)",
                key_path.display()
            ))
        })?;
        Ok(Arc::new(Log {
            conn: Mutex::new(conn),
            trail: Trail::new(&key, clocks),
        }))
    }

    /// [`Log::open`] with the key already read, on a database whose schema is current (the
    /// gallery's).
    pub(crate) fn with_key(
        db: &Path,
        key: &[u8; crypto::KEY_LEN],
        clocks: Arc<dyn Clocks>,
    ) -> Result<Arc<Log>> {
        Ok(Arc::new(Log {
            conn: Mutex::new(db::open(db)?),
            trail: Trail::new(key, clocks),
        }))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The trail, for appends inside another connection's transaction.
    pub fn trail(&self) -> &Trail {
        &self.trail
    }

    /// Appends one row in its own transaction and logs it: for changes made elsewhere (their
    /// commit comes first; see the module docs for the crash window).
    pub fn record(
        &self,
        by: &By,
        action: Action,
        subject: Subject,
        detail: impl Into<String>,
    ) -> Result<Row> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row = self.trail.append(
            &tx,
            &Entry {
                by,
                action,
                subject,
                detail: detail.into(),
            },
        )?;
        tx.commit()?;
        row.log();
        Ok(row)
    }

    /// [`Log::record`] for a change that already happened: a failure is logged as an error
    /// (the change stands; failing its request would say it did not happen).
    pub fn note(&self, by: &By, action: Action, subject: Subject, detail: impl Into<String>) {
        if let Err(e) = self.record(by, action, subject, detail) {
            tracing::error!(
                action = action.as_str(),
                "cannot write the audit row of a {} by {}: {e}",
                action.as_str(),
                by.actor
            );
        }
    }

    /// Frigate companion mode wrote `name` (person `person`) as the sub label of Frigate's
    /// event `event`, at `similarity`.
    pub fn note_sub_label(&self, event: &str, person: i64, name: &str, similarity: f32) {
        let subject = Subject::person(person, Some(name));
        let detail = format!("similarity {similarity:.3}");
        self.note(&By::frigate(event), Action::SubLabel, subject, detail);
    }

    /// Rows matching `f`, newest first, one page.
    pub fn list(&self, f: &Filter) -> Result<Vec<Row>> {
        let limit = f.limit.unwrap_or(100);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::invalid(format!(
                "limit must be 1..={MAX_PAGE}, got {limit}"
            )));
        }
        self.query(f, limit)
    }

    /// Rows matching `f` (its `limit` ignored), newest first, at most [`MAX_EXPORT`].
    pub fn export(&self, f: &Filter) -> Result<Vec<Row>> {
        self.query(f, MAX_EXPORT)
    }

    fn query(&self, f: &Filter, limit: usize) -> Result<Vec<Row>> {
        let mut sql = String::from(
            "SELECT id, at, actor_kind, actor, origin, action, subject_kind, subject_id,
                    subject_name, detail FROM audit WHERE 1",
        );
        let mut args: Vec<Value> = Vec::new();
        if let Some(a) = f.actor.as_deref().filter(|a| !a.is_empty()) {
            // instr, not LIKE: a `%` or `_` in the filter is a character, not a pattern.
            args.push(Value::Text(a.into()));
            sql.push_str(" AND instr(lower(actor), lower(?1)) > 0");
        }
        let mut cond = |s: &str, v: Value| {
            args.push(v);
            sql.push_str(&format!(" AND {s} ?{}", args.len()));
        };
        for (col, v) in [
            ("actor_kind", &f.actor_kind),
            ("action", &f.action),
            ("subject_kind", &f.subject_kind),
            ("subject_id", &f.subject_id),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                cond(&format!("{col} ="), Value::Text(v.into()));
            }
        }
        if let Some(t) = f.since_ms {
            cond("at >=", Value::Integer(t));
        }
        if let Some(t) = f.until_ms {
            cond("at <", Value::Integer(t));
        }
        if let Some(b) = f.before_id {
            cond("id <", Value::Integer(b));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        let conn = self.conn();
        let mut st = conn.prepare(&sql)?;
        let rows = st.query_map(params_from_iter(args), |r| {
            let at: i64 = r.get(1)?;
            Ok(Row {
                id: r.get(0)?,
                at_ms: at,
                at: rfc3339_utc(at),
                actor_kind: r.get(2)?,
                actor: r.get(3)?,
                origin: r.get(4)?,
                action: r.get(5)?,
                subject_kind: r.get(6)?,
                subject_id: r.get(7)?,
                subject_name: r.get(8)?,
                detail: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes the oldest rows: those older than `cfg.retention_days` (from the oldest up to
    /// the first younger one: a row stamped by a clock that had not synced yet does not take
    /// younger rows with it) and those beyond `cfg.max_rows`. Moves the anchor to the last row
    /// deleted, so the rest still verifies. Returns the rows deleted.
    pub fn retain(&self, cfg: &AuditConfig) -> Result<u64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(mut seal) = Seal::read(&tx)? else {
            return Ok(0);
        };
        let cutoff = self
            .trail
            .clocks
            .unix_ms()
            .saturating_sub(i64::from(cfg.retention_days) * DAY_MS);
        let young: Option<i64> = tx
            .query_row(
                "SELECT id FROM audit WHERE at >= ?1 ORDER BY id LIMIT 1",
                [cutoff],
                |r| r.get(0),
            )
            .optional()?;
        let by_age = young.unwrap_or(seal.head_id + 1) - 1;
        let by_count = seal.head_id.saturating_sub(cfg.max_rows as i64);
        let last = by_age.max(by_count).min(seal.head_id);
        if last <= seal.anchor_id {
            return Ok(0);
        }
        let mac: Option<Vec<u8>> = tx
            .query_row("SELECT mac FROM audit WHERE id = ?1", [last], |r| r.get(0))
            .optional()?;
        let mac = mac.filter(|m| m.len() == MAC_LEN).ok_or_else(|| {
            Error::precondition(format!(
                "audit row {last} is missing: the trail was tampered with; run `faced audit \
                 verify` (retention waits until the trail is whole)"
            ))
        })?;
        if !seal.is_valid(&self.trail.keys) {
            return Err(Error::precondition(
                "the audit seal does not verify: run `faced audit verify` (retention waits \
                 until the trail is whole)",
            ));
        }
        seal.anchor_id = last;
        seal.anchor_mac = mac;
        seal.write(&tx, &self.trail.keys)?;
        let n = tx.execute("DELETE FROM audit WHERE id <= ?1", [last])?;
        tx.commit()?;
        Ok(n as u64)
    }

    /// Checks the whole trail: `Ok(Err(_))` names the first bad row.
    pub fn verify(&self) -> Result<std::result::Result<Verified, Tampered>> {
        super::chain::verify(&self.conn(), &self.trail.keys)
    }
}
