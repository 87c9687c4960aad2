//! Gallery of enrolled people: SQLite storage plus an in-memory embedding index.
//!
//! [`Gallery`] owns the database connection and the [`Index`]; every write goes to SQLite first,
//! in one transaction, and the index is updated only after the commit, so the two never
//! disagree. Enrolling a new person writes the person and their samples in that one
//! transaction: no crash window leaves a person without the faces they were enrolled with. The
//! daemon keeps one `Gallery` behind a `Mutex` (it is `Send`, not `Sync`); a search touches only
//! memory, a write touches the disk.
//!
//! * Storage: the faced database, opened through [`crate::db`] (its settings, the schema in
//!   `src/db/schema.sql`, and the upgrades in [`crate::db::schema`]: **read its docs before
//!   adding a table**). Opening the gallery creates or upgrades the file.
//! * Encryption at rest: embeddings and face crops are AES-256-GCM encrypted with a key file
//!   beside the database (`<db>.key`, mode 0600), created here on first use; see
//!   [`crate::db::crypto`]. Names, counts and quality data are not encrypted.
//! * Search: cosine similarity (embeddings are L2-normalised), a person's score is their best
//!   positive sample, and negative samples ("this is not NAME") veto a person; see [`index`].
//!
//! Timestamps are wall-clock Unix milliseconds.

mod attribution;
mod enroll;
pub mod index;
mod metrics;
pub mod replica;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use crate::audit::{self, Action};
use crate::base::{Clocks, RealClocks};
use crate::db::{self, crypto};
use crate::error::{Error, Kind, Result};
use crate::vision::EMBEDDING_DIM;

pub use attribution::Attributed;
pub use enroll::{EnrollTarget, Enrolled, NotThisPerson};
pub use index::{Index, IndexOptions, Match};
pub use replica::{Record, Uid};

/// Longest accepted person name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest accepted face crop (a 112×112 JPEG is ~5 KB); larger is [`Kind::ResourceExhausted`].
pub const MAX_CROP_BYTES: usize = 256 * 1024;
/// Longest accepted sample `source`, in characters.
pub const MAX_SOURCE_CHARS: usize = 200;
/// Most face samples (positive and negative) a person may reach by additions on this unit.
/// Enrollment needs 5 to 20; the bound keeps a person's replicated record (every sample and
/// removal, see [`replica::MAX_RECORD_SAMPLES`]) acceptable to every other unit, and a client
/// that adds samples in a loop from using up the disk and slowing every search. Replicas may
/// bring a person above it (two units adding at once), never above the record bound.
pub const MAX_PERSON_SAMPLES: usize = 100;

const AAD_EMBEDDING: &str = "face_sample.embedding";
const AAD_CROP: &str = "face_sample.crop";

/// A person's database id (never reused).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct PersonId(pub i64);

/// A face sample's database id (never reused).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct SampleId(pub i64);

impl std::fmt::Display for PersonId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for SampleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether a sample shows the person or a face wrongly matched to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleKind {
    /// A face of this person; matches are scored against these.
    Positive,
    /// A face that was wrongly matched to this person ("this is not NAME"): queries at least as
    /// close to it as to the person's best positive sample do not match the person.
    Negative,
}

impl SampleKind {
    /// The value stored in `face_sample.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SampleKind::Positive => "positive",
            SampleKind::Negative => "negative",
        }
    }

    fn parse(s: &str) -> Result<SampleKind> {
        match s {
            "positive" => Ok(SampleKind::Positive),
            "negative" => Ok(SampleKind::Negative),
            _ => Err(Error::precondition(format!(
                "unknown face_sample.kind {s:?} in the database"
            ))),
        }
    }
}

/// Options for [`Gallery::open`].
#[derive(Debug, Clone, Default)]
pub struct GalleryOptions {
    /// The 32-byte key file; default `<db>.key` (the database path with `.key` appended).
    pub key_path: Option<PathBuf>,
    /// Search tuning (negative-sample margin).
    pub index: IndexOptions,
    /// Time source for the `created_at`/`updated_at` columns; `None` = [`RealClocks`].
    pub clocks: Option<Arc<dyn Clocks>>,
    /// This unit's device id, recorded as `person.origin` of the people enrolled here (the
    /// fleet's "where was this person enrolled"); `None` records `''`.
    pub unit: Option<String>,
}

/// A person as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Person {
    /// Database id.
    pub id: PersonId,
    /// Display name (unique ignoring ASCII case).
    pub name: String,
    /// Enrolment time, Unix ms.
    pub created_at_ms: i64,
    /// Last rename or sample change, Unix ms.
    pub updated_at_ms: i64,
}

/// A person with sample counts, as listed by [`Gallery::people`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PersonSummary {
    /// Database id.
    pub id: PersonId,
    /// Display name.
    pub name: String,
    /// Number of positive samples.
    pub positive_samples: u32,
    /// Number of negative samples.
    pub negative_samples: u32,
    /// Enrolment time, Unix ms.
    pub created_at_ms: i64,
    /// Last rename or sample change, Unix ms.
    pub updated_at_ms: i64,
    /// Device id of the unit where the person was enrolled ('' if unknown).
    pub origin: String,
}

/// A sample to store with [`Gallery::add_sample`].
#[derive(Debug, Clone, Copy)]
pub struct NewSample<'a> {
    /// Positive (this person) or negative (wrongly matched to them).
    pub kind: SampleKind,
    /// [`EMBEDDING_DIM`] finite values, not all zero (normalised by the embedder; the index
    /// normalises again).
    pub embedding: &'a [f32],
    /// JPEG of the 112×112 aligned face, at most [`MAX_CROP_BYTES`].
    pub crop_jpeg: &'a [u8],
    /// Quality measures, a JSON object.
    pub quality_json: &'a str,
    /// Where the face came from (at most [`MAX_SOURCE_CHARS`] characters).
    pub source: &'a str,
}

/// A stored sample's metadata (the embedding stays in the index; the crop via
/// [`Gallery::sample_crop`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SampleInfo {
    /// Database id.
    pub id: SampleId,
    /// Whose sample.
    pub person: PersonId,
    /// Positive or negative.
    pub kind: SampleKind,
    /// Quality measures (JSON object).
    pub quality_json: String,
    /// Where the face came from.
    pub source: String,
    /// When it was stored, Unix ms.
    pub created_at_ms: i64,
}

/// The gallery: database plus index. See the module docs.
#[derive(Debug)]
pub struct Gallery {
    conn: Connection,
    cipher: crypto::Cipher,
    index: Index,
    db_path: PathBuf,
    key_path: PathBuf,
    clocks: Arc<dyn Clocks>,
    /// Changes whenever samples are added, or the gallery is opened again: whoever derives
    /// something from the samples (the visitors' re-check) compares it with what they saw.
    generation: u64,
    /// Unique per open (in the process): the fleet rescans everything when it changes.
    instance: u64,
    /// Changes whenever a person is added, renamed or removed, or the gallery is opened again:
    /// the daemon announces the people to Home Assistant again, and clears what MQTT still
    /// holds about the removed ones.
    people_epoch: u64,
    /// Hybrid logical clock for replicated versions (`person.name_v`, `tombstone.version`):
    /// never goes back, raised past every version applied from another unit.
    hlc: i64,
    /// `person.origin` for people enrolled here.
    unit: String,
    /// People changed through this `Gallery` since the fleet last asked ([`Gallery::take_dirty`]).
    dirty: std::collections::BTreeSet<Uid>,
    /// The `gallery_change.seq` that memory reflects. Every write through this `Gallery` reads
    /// the counter inside its own transaction, before and after; a database value that differs
    /// means another process (the CLI) wrote the gallery: [`Gallery::changed_elsewhere`].
    seen_change: i64,
    /// Who writes, and the audit trail each write appends its row to, in its transaction.
    author: attribution::Author,
}

/// `gallery_change.seq`: bumped by triggers on every row of `person`, `face_sample` and
/// `tombstone` written by anyone (schema.sql).
fn change_seq(conn: &rusqlite::Connection) -> Result<i64> {
    Ok(
        conn.query_row("SELECT seq FROM gallery_change WHERE id = 1", [], |r| {
            r.get(0)
        })?,
    )
}

/// Starts a write transaction and reads the change counter in it. IMMEDIATE: the write lock is
/// taken (waiting up to the busy timeout) before the read, so the value read is the one this
/// transaction's writes start from, and a later write cannot fail on a stale snapshot.
fn begin_write(conn: &mut rusqlite::Connection) -> Result<(rusqlite::Transaction<'_>, i64)> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let before = change_seq(&tx)?;
    Ok((tx, before))
}

/// Source of [`Gallery::generation`] values, unique in the process.
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Whether `c` may not appear in a person's name: control characters (Cc), format characters
/// (Cf: bidirectional overrides and isolates U+202A–U+202E and U+2066–U+2069, zero-width
/// spaces and joiners, the BOM, soft hyphen, tag characters…) and line or paragraph separators
/// (Zl, Zp). They are invisible or reorder the text around them, so "Alice" and a look-alike
/// name could be two different people in every list, log line, MQTT payload and CSV export.
pub fn is_forbidden_name_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        G::Control | G::Format | G::LineSeparator | G::ParagraphSeparator
    )
}

/// Trims and checks a person name: 1..=[`MAX_NAME_CHARS`] characters, none of them
/// [forbidden](is_forbidden_name_char). The one rule for every way a name comes in (console,
/// CLI, MQTT): the gallery applies it in [`Gallery::add_person`] and [`Gallery::rename_person`],
/// and front ends call it first for an early, clear error.
pub fn validate_person_name(name: &str) -> Result<&str> {
    let n = name.trim();
    let chars = n.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(Error::invalid(format!(
            "person name must be 1 to {MAX_NAME_CHARS} characters after trimming, got {chars}"
        )));
    }
    if let Some(c) = n.chars().find(|&c| is_forbidden_name_char(c)) {
        // Show where it is without echoing it (it would garble the message).
        let shown: String = n
            .chars()
            .map(|c| {
                if is_forbidden_name_char(c) {
                    format!("<U+{:04X}>", u32::from(c))
                } else {
                    c.to_string()
                }
            })
            .collect();
        return Err(Error::invalid(format!(
            "person name \"{shown}\" contains U+{:04X}, an invisible control or formatting \
             character (such as a right-to-left override or a zero-width space); type the name \
             without it",
            u32::from(c)
        )));
    }
    Ok(n)
}

/// Checks an embedding: [`EMBEDDING_DIM`] finite values, not all zero.
pub fn validate_embedding(e: &[f32]) -> Result<()> {
    if e.len() != EMBEDDING_DIM {
        return Err(Error::invalid(format!(
            "embedding has {} values, expected {EMBEDDING_DIM}",
            e.len()
        )));
    }
    if let Some(i) = e.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "embedding value {i} is {} (not finite)",
            e[i]
        )));
    }
    if e.iter().all(|&v| v == 0.0) {
        return Err(Error::invalid("embedding is all zeros"));
    }
    Ok(())
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn name_taken(name: &str) -> Error {
    Error::new(
        Kind::Conflict,
        format!("a person named {name:?} already exists (names ignore ASCII case)"),
    )
}

fn embedding_bytes(e: &[f32]) -> Vec<u8> {
    e.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Checks new samples before anything is stored.
fn validate_new_samples(samples: &[NewSample<'_>]) -> Result<()> {
    for s in samples {
        validate_embedding(s.embedding)?;
        if s.crop_jpeg.is_empty() {
            return Err(Error::invalid("face crop is empty"));
        }
        if s.crop_jpeg.len() > MAX_CROP_BYTES {
            return Err(Error::exhausted(format!(
                "face crop is {} bytes, limit {MAX_CROP_BYTES}",
                s.crop_jpeg.len()
            )));
        }
        match serde_json::from_str::<serde_json::Value>(s.quality_json) {
            Ok(v) if v.is_object() => {}
            _ => return Err(Error::invalid("sample quality must be a JSON object")),
        }
        if s.source.chars().count() > MAX_SOURCE_CHARS {
            return Err(Error::invalid(format!(
                "sample source is longer than {MAX_SOURCE_CHARS} characters"
            )));
        }
    }
    Ok(())
}

/// Reads the change counter (after the transaction's writes) and commits; returns the value.
fn commit(tx: rusqlite::Transaction<'_>) -> Result<i64> {
    let after = change_seq(&tx)?;
    tx.commit()?;
    Ok(after)
}

/// Refuses `adding` samples to a person holding `held`: see [`MAX_PERSON_SAMPLES`].
fn check_room(held: usize, adding: usize) -> Result<()> {
    if held + adding > MAX_PERSON_SAMPLES {
        return Err(Error::exhausted(format!(
            "this person has {held} face samples and {adding} more would exceed the limit of \
             {MAX_PERSON_SAMPLES}; remove some first"
        )));
    }
    Ok(())
}

/// Inserts a person row (on `conn` or inside the caller's transaction).
fn insert_person(
    conn: &rusqlite::Connection,
    name: &str,
    now: i64,
    uid: &Uid,
    version: i64,
    unit: &str,
) -> Result<PersonId> {
    match conn.execute(
        "INSERT INTO person (name, created_at, updated_at, uid, name_v, origin)
         VALUES (?1, ?2, ?2, ?3, ?4, ?5)",
        params![name, now, &uid[..], version, unit],
    ) {
        Ok(_) => Ok(PersonId(conn.last_insert_rowid())),
        Err(e) if is_constraint(&e) => Err(name_taken(name)),
        Err(e) => Err(e.into()),
    }
}

/// Inserts checked samples of `person` inside the caller's transaction, sealing embedding and
/// crop under a new random uid each. Returns their ids in order.
fn insert_samples(
    tx: &rusqlite::Transaction<'_>,
    cipher: &crypto::Cipher,
    person: PersonId,
    samples: &[NewSample<'_>],
    now: i64,
) -> Result<Vec<SampleId>> {
    let mut st = tx.prepare_cached(
        "INSERT INTO face_sample (person_id, uid, kind, embedding, crop, quality, source, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut ids = Vec::with_capacity(samples.len());
    for s in samples {
        let uid: [u8; 16] = cipher.random()?;
        let emb = cipher.seal(
            &crypto::aad(AAD_EMBEDDING, &uid),
            &embedding_bytes(s.embedding),
        )?;
        let crop = cipher.seal(&crypto::aad(AAD_CROP, &uid), s.crop_jpeg)?;
        st.execute(params![
            person.0,
            &uid[..],
            s.kind.as_str(),
            emb,
            crop,
            s.quality_json,
            s.source,
            now
        ])?;
        ids.push(SampleId(tx.last_insert_rowid()));
    }
    Ok(ids)
}

impl Gallery {
    /// Opens (creating if needed) the database at `db`, upgrades its schema, loads the key and
    /// builds the index.
    ///
    /// Errors ([`Kind::FailedPrecondition`] unless noted): the schema is newer than this binary;
    /// the file is not a faced database; the key file is group/world accessible, not 32 bytes,
    /// or does not match the database; the key file is missing while the database holds
    /// samples (a new key is created only when there is nothing to decrypt).
    pub fn open(db: &Path, opts: &GalleryOptions) -> Result<Gallery> {
        let what = format!("database {}", db.display());
        let key_path = opts.key_path.clone().unwrap_or_else(|| {
            let mut p = db.as_os_str().to_owned();
            p.push(".key");
            PathBuf::from(p)
        });
        let clocks = opts.clocks.clone().unwrap_or_else(|| Arc::new(RealClocks));
        let conn = db::open_migrated(db, &*clocks)?;
        db::durable(&conn)?;

        let samples: i64 = conn
            .query_row("SELECT COUNT(*) FROM face_sample", [], |r| r.get(0))
            .map_err(|e| Error::from(e).in_database(&what))?;
        let (key, new_key) = match crypto::read_key(&key_path)? {
            Some(k) => (k, false),
            None if samples > 0 => {
                return Err(Error::precondition(format!(
                    "{what} holds {samples} encrypted face samples but its key file {} is missing; \
                     restore the key file from backup (or pass its path with --key / \
                     gallery.key_path). A new key cannot decrypt them; to start over, move the \
                     database away",
                    key_path.display()
                )));
            }
            None => (crypto::create_key(&key_path)?, true),
        };
        let cipher = crypto::Cipher::new(&key)?;
        let matches = crypto::key_check(&conn, &cipher)?;
        if matches != Some(true) {
            if matches == Some(false) && !new_key {
                return Err(Error::precondition(format!(
                    "key file {} does not belong to {what} (its key check fails); use the key file \
                     created with this database",
                    key_path.display()
                )));
            }
            // No check yet, or a fresh key for a database without samples: (re)write it.
            conn.execute(
                "INSERT OR REPLACE INTO key_check (id, sealed, created_at) VALUES (1, ?1, ?2)",
                params![crypto::seal_key_check(&cipher)?, clocks.unix_ms()],
            )?;
        }

        if let Some(unit) = opts.unit.as_deref().filter(|u| !u.is_empty()) {
            // People enrolled with the CLI beside this unit's daemon (which does not know the
            // device id), or before the fleet existed, were enrolled here.
            conn.execute("UPDATE person SET origin = ?1 WHERE origin = ''", [unit])
                .map_err(|e| Error::from(e).in_database(&what))?;
        }
        let hlc: i64 = conn
            .query_row(
                "SELECT MAX((SELECT IFNULL(MAX(name_v), 0) FROM person),
                            (SELECT IFNULL(MAX(version), 0) FROM tombstone))",
                [],
                |r| r.get(0),
            )
            .map_err(|e| Error::from(e).in_database(&what))?;
        // The counter's one row, should a hand-edited or damaged file have lost it (the
        // triggers then count nothing, and CLI edits would wait for a restart).
        conn.execute(
            "INSERT OR IGNORE INTO gallery_change (id, seq) VALUES (1, 0)",
            [],
        )
        .map_err(|e| Error::from(e).in_database(&what))?;
        // Read before loading: a write by another process in between then makes the next
        // [`Gallery::changed_elsewhere`] say yes (one reload too many, never one too few).
        let seen_change = change_seq(&conn).map_err(|e| e.in_database(&what))?;
        let author = attribution::Author::new(audit::Log::with_key(db, &key, clocks.clone())?);
        let mut g = Gallery {
            conn,
            cipher,
            index: Index::new(opts.index),
            db_path: db.to_owned(),
            key_path,
            clocks,
            generation: next_generation(),
            instance: next_generation(),
            people_epoch: next_generation(),
            hlc,
            unit: opts.unit.clone().unwrap_or_default(),
            dirty: Default::default(),
            seen_change,
            author,
        };
        g.load_index().map_err(|e| e.in_database(&what))?;
        Ok(g)
    }

    fn load_index(&mut self) -> Result<()> {
        {
            let mut st = self.conn.prepare("SELECT id, name FROM person")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                self.index
                    .set_person(PersonId(r.get(0)?), &r.get::<_, String>(1)?);
            }
        }
        let mut st = self
            .conn
            .prepare("SELECT id, person_id, kind, uid, embedding FROM face_sample")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let id = SampleId(r.get(0)?);
            let person = PersonId(r.get(1)?);
            let kind = SampleKind::parse(&r.get::<_, String>(2)?)?;
            let uid: Vec<u8> = r.get(3)?;
            let sealed: Vec<u8> = r.get(4)?;
            let what = format!("face_sample {id} embedding");
            let plain = self
                .cipher
                .open(&crypto::aad(AAD_EMBEDDING, &uid), &sealed, &what)?;
            let e: Vec<f32> = plain
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if !self.index.insert(id, person, kind, &e) {
                return Err(Error::precondition(format!(
                    "{what} is not a valid embedding"
                )));
            }
        }
        Ok(())
    }

    /// The database file this gallery uses.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The key file this gallery uses.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// The connection, for modules that keep their own tables in the same database (add them as
    /// migrations: see [`schema`]). Do not write `person` or `face_sample` through it: the index
    /// would not know.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The in-memory index (read-only), e.g. for statistics.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Enrols a new person with no samples. The name is trimmed and must be 1..=100 characters
    /// without control characters ([`Kind::InvalidInput`]) and not taken ([`Kind::Conflict`]).
    pub fn add_person(&mut self, name: &str) -> Result<PersonId> {
        let name = validate_person_name(name)?;
        let now = self.clocks.unix_ms();
        let uid: Uid = self.cipher.random()?;
        let v = self.tick();
        let (tx, before) = begin_write(&mut self.conn)?;
        let id = insert_person(&tx, name, now, &uid, v, &self.unit)?;
        let subject = audit::Subject::person(id.0, Some(name));
        let row = self
            .author
            .note(&tx, Action::Enroll, subject, "no samples yet")?;
        let after = commit(tx)?;
        row.log();
        self.own_write(before, after);
        self.index.set_person(id, name);
        self.people_epoch = next_generation();
        self.dirty.insert(uid);
        Ok(id)
    }

    /// A new person named `name` holding `samples`, in one transaction: a crash or an error
    /// leaves either both or neither, never an empty person ([`Gallery::enroll`]).
    pub(super) fn add_person_with_samples(
        &mut self,
        name: &str,
        samples: &[NewSample<'_>],
    ) -> Result<(PersonId, Vec<SampleId>)> {
        let name = validate_person_name(name)?;
        validate_new_samples(samples)?;
        check_room(0, samples.len())?;
        let now = self.clocks.unix_ms();
        let uid: Uid = self.cipher.random()?;
        let v = self.tick();
        let (tx, before) = begin_write(&mut self.conn)?;
        let person = insert_person(&tx, name, now, &uid, v, &self.unit)?;
        let ids = insert_samples(&tx, &self.cipher, person, samples, now)?;
        let subject = audit::Subject::person(person.0, Some(name));
        let detail = audit::count(ids.len() as i64, "sample");
        let row = self.author.note(&tx, Action::Enroll, subject, detail)?;
        let after = commit(tx)?;
        row.log();
        self.own_write(before, after);
        self.index.set_person(person, name);
        self.people_epoch = next_generation();
        for (s, &id) in samples.iter().zip(&ids) {
            self.index.insert(id, person, s.kind, s.embedding);
        }
        self.generation = next_generation();
        self.dirty.insert(uid);
        Ok((person, ids))
    }

    fn person_where(&self, cond: &str, p: impl rusqlite::Params) -> Result<Option<Person>> {
        let sql = format!("SELECT id, name, created_at, updated_at FROM person WHERE {cond}");
        Ok(self
            .conn
            .query_row(&sql, p, |r| {
                Ok(Person {
                    id: PersonId(r.get(0)?),
                    name: r.get(1)?,
                    created_at_ms: r.get(2)?,
                    updated_at_ms: r.get(3)?,
                })
            })
            .optional()?)
    }

    /// The person with this name (trimmed; ASCII case ignored), if any.
    pub fn person_by_name(&self, name: &str) -> Result<Option<Person>> {
        self.person_where("name = ?1", [name.trim()])
    }

    /// The person with this id, if any.
    pub fn person(&self, id: PersonId) -> Result<Option<Person>> {
        self.person_where("id = ?1", [id.0])
    }

    fn require_person(&self, id: PersonId) -> Result<Person> {
        self.person(id)?
            .ok_or_else(|| Error::not_found(format!("no person with id {id}")))
    }

    /// Everyone, by name, with sample counts.
    pub fn people(&self) -> Result<Vec<PersonSummary>> {
        let mut st = self.conn.prepare(
            "SELECT p.id, p.name, p.created_at, p.updated_at,
                    COUNT(s.id) FILTER (WHERE s.kind = 'positive'),
                    COUNT(s.id) FILTER (WHERE s.kind = 'negative'), p.origin
             FROM person p LEFT JOIN face_sample s ON s.person_id = p.id
             GROUP BY p.id ORDER BY p.name, p.id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(PersonSummary {
                id: PersonId(r.get(0)?),
                name: r.get(1)?,
                created_at_ms: r.get(2)?,
                updated_at_ms: r.get(3)?,
                positive_samples: r.get(4)?,
                negative_samples: r.get(5)?,
                origin: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Renames a person (same name rules as [`Gallery::add_person`]); [`Kind::NotFound`] if the
    /// id does not exist.
    pub fn rename_person(&mut self, id: PersonId, new_name: &str) -> Result<()> {
        let name = validate_person_name(new_name)?;
        let v = self.tick();
        let (tx, before) = begin_write(&mut self.conn)?;
        let uid: Option<Vec<u8>> = match tx
            .query_row(
                "UPDATE person SET name = ?1, updated_at = ?2, name_v = ?3 WHERE id = ?4
                 RETURNING uid",
                params![name, self.clocks.unix_ms(), v, id.0],
                |r| r.get(0),
            )
            .optional()
        {
            Ok(u) => u,
            Err(e) if is_constraint(&e) => return Err(name_taken(name)),
            Err(e) => return Err(e.into()),
        };
        let Some(uid) = uid else {
            return Err(Error::not_found(format!("no person with id {id}")));
        };
        let subject = audit::Subject::person(id.0, Some(name));
        let row = self.author.note(&tx, Action::Rename, subject, "")?;
        let after = commit(tx)?;
        row.log();
        self.own_write(before, after);
        self.index.set_person(id, name);
        self.people_epoch = next_generation();
        self.mark_dirty(&uid);
        Ok(())
    }

    /// Removes a person with every sample and crop (ON DELETE CASCADE) and drops them from the
    /// index; [`Kind::NotFound`] if the id does not exist.
    /// The erase leaves a tombstone (the person's random uid, no name, no face) so that it
    /// replicates to the other units of a fleet and no replica brings the person back.
    pub fn remove_person(&mut self, id: PersonId) -> Result<()> {
        let v = self.tick();
        let (tx, before) = begin_write(&mut self.conn)?;
        let (samples, events): (i64, i64) = tx.query_row(
            "SELECT (SELECT COUNT(*) FROM face_sample WHERE person_id = ?1),
                    (SELECT COUNT(*) FROM event WHERE person_id = ?1)",
            [id.0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let uid: Option<Vec<u8>> = tx
            .query_row(
                "DELETE FROM person WHERE id = ?1 RETURNING uid",
                [id.0],
                |r| r.get(0),
            )
            .optional()?;
        let Some(uid) = uid else {
            return Err(Error::not_found(format!("no person with id {id}")));
        };
        tx.execute(
            "INSERT INTO tombstone (uid, kind, person_uid, version) VALUES (?1, 'person', ?1, ?2)
             ON CONFLICT (uid) DO UPDATE SET version = MAX(version, excluded.version)",
            params![uid, v],
        )?;
        // The person's sample tombstones are covered by the person's.
        tx.execute(
            "DELETE FROM tombstone WHERE person_uid = ?1 AND kind = 'sample'",
            [&uid],
        )?;
        db::erase::person_traces(&tx, id.0)?;
        let (samples, events) = (
            audit::count(samples, "sample"),
            audit::count(events, "event"),
        );
        let row = self
            .author
            .erase(&tx, id.0, Action::Erase, format!("{samples}, {events}"))?;
        let after = commit(tx)?;
        row.log();
        self.own_write(before, after);
        self.index.remove_person(id);
        self.people_epoch = next_generation();
        self.mark_dirty(&uid);
        self.scrub();
        Ok(())
    }

    /// Stores one sample; see [`Gallery::add_samples`].
    pub fn add_sample(&mut self, person: PersonId, sample: NewSample<'_>) -> Result<SampleId> {
        Ok(self.add_samples(person, &[sample])?[0])
    }

    /// Stores samples of one person in a single transaction (all or none), encrypting the
    /// embedding and crop, then adds them to the index. Returns their ids in order.
    ///
    /// Errors: [`Kind::NotFound`] for an unknown person; [`Kind::InvalidInput`] for an embedding
    /// of the wrong length, with non-finite values or all zeros, an empty crop, quality that is
    /// not a JSON object, or a too-long source; [`Kind::ResourceExhausted`] for a crop over
    /// [`MAX_CROP_BYTES`], or when the person would hold more than [`MAX_PERSON_SAMPLES`].
    pub fn add_samples(
        &mut self,
        person: PersonId,
        samples: &[NewSample<'_>],
    ) -> Result<Vec<SampleId>> {
        self.add_samples_as(person, samples, Action::SamplesAdded)
    }

    /// [`Gallery::add_samples`], recorded in the audit trail as `action`.
    pub(super) fn add_samples_as(
        &mut self,
        person: PersonId,
        samples: &[NewSample<'_>],
        action: Action,
    ) -> Result<Vec<SampleId>> {
        validate_new_samples(samples)?;
        let person_uid = self.require_person_uid(person)?;
        let held: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM face_sample WHERE person_id = ?1",
            [person.0],
            |r| r.get(0),
        )?;
        check_room(held as usize, samples.len())?;
        let now = self.clocks.unix_ms();
        let (tx, before) = begin_write(&mut self.conn)?;
        let ids = insert_samples(&tx, &self.cipher, person, samples, now)?;
        let name: String = tx.query_row(
            "UPDATE person SET updated_at = ?1 WHERE id = ?2 RETURNING name",
            params![now, person.0],
            |r| r.get(0),
        )?;
        let detail = match ids.as_slice() {
            [one] => format!("sample {one}"),
            many => audit::count(many.len() as i64, "sample"),
        };
        let subject = audit::Subject::person(person.0, Some(&name));
        let row = self.author.note(&tx, action, subject, detail)?;
        let after = commit(tx)?;
        row.log();
        self.own_write(before, after);
        for (s, &id) in samples.iter().zip(&ids) {
            self.index.insert(id, person, s.kind, s.embedding);
        }
        self.generation = next_generation();
        self.mark_dirty(&person_uid);
        Ok(ids)
    }

    /// A value that changes whenever samples are added (and differs between two opens).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A value that changes whenever a person is added, renamed or removed (and differs
    /// between two opens): the daemon compares it to announce the people again.
    pub fn people_epoch(&self) -> u64 {
        self.people_epoch
    }

    /// After the commit of an erase: leaves no byte of the erased rows in the database file or
    /// its WAL ([`db::erase::scrub`]). The erase itself is committed either way; a scrub that
    /// fails is logged and done by the next one.
    fn scrub(&self) {
        if let Err(e) = db::erase::scrub(&self.conn) {
            tracing::warn!("an erase is committed but its pages could not be overwritten yet: {e}");
        }
    }

    /// Whether another process wrote people, samples or tombstones to the database since this
    /// gallery was opened or last wrote (`faced enroll` or `faced people` beside the daemon):
    /// memory no longer matches the database, and the owner should open the gallery again. One
    /// read of a one-row table, cheap enough to poll.
    pub fn changed_elsewhere(&self) -> Result<bool> {
        Ok(change_seq(&self.conn)? != self.seen_change)
    }

    /// Takes the database's current state as seen without loading it: after a reload that
    /// failed, so that the same change is not reloaded (every sample decrypted) and reported
    /// again at every poll; the next change tries again.
    pub fn skip_changes_elsewhere(&mut self) -> Result<()> {
        self.seen_change = change_seq(&self.conn)?;
        Ok(())
    }

    /// After a committed write that moved the counter from `before` to `after`: memory reflects
    /// `after` only if it reflected `before`, i.e. nobody else wrote since memory was in step.
    fn own_write(&mut self, before: i64, after: i64) {
        if before == self.seen_change {
            self.seen_change = after;
        }
    }

    /// A person's samples, oldest first; [`Kind::NotFound`] for an unknown person.
    pub fn samples(&self, person: PersonId) -> Result<Vec<SampleInfo>> {
        self.require_person(person)?;
        let mut st = self.conn.prepare(
            "SELECT id, kind, quality, source, created_at FROM face_sample WHERE person_id = ?1 ORDER BY id",
        )?;
        let mut rows = st.query([person.0])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(SampleInfo {
                id: SampleId(r.get(0)?),
                person,
                kind: SampleKind::parse(&r.get::<_, String>(1)?)?,
                quality_json: r.get(2)?,
                source: r.get(3)?,
                created_at_ms: r.get(4)?,
            });
        }
        Ok(out)
    }

    /// The decrypted JPEG crop of a sample; [`Kind::NotFound`] for an unknown sample.
    pub fn sample_crop(&self, id: SampleId) -> Result<Vec<u8>> {
        let (uid, sealed): (Vec<u8>, Vec<u8>) = self
            .conn
            .query_row(
                "SELECT uid, crop FROM face_sample WHERE id = ?1",
                [id.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| Error::not_found(format!("no face sample with id {id}")))?;
        self.cipher.open(
            &crypto::aad(AAD_CROP, &uid),
            &sealed,
            &format!("face_sample {id} crop"),
        )
    }

    /// Removes one sample (and its crop) from the database and the index; [`Kind::NotFound`] for
    /// an unknown sample.
    pub fn remove_sample(&mut self, id: SampleId) -> Result<()> {
        let v = self.tick();
        let (tx, before) = begin_write(&mut self.conn)?;
        let removed: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "DELETE FROM face_sample WHERE id = ?1 RETURNING person_id, uid",
                [id.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((person, sample_uid)) = removed else {
            return Err(Error::not_found(format!("no face sample with id {id}")));
        };
        let (person_uid, name): (Vec<u8>, String) = tx.query_row(
            "UPDATE person SET updated_at = ?1 WHERE id = ?2 RETURNING uid, name",
            params![self.clocks.unix_ms(), person],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        // A tombstone, so the removal replicates and no replica brings the sample back.
        tx.execute(
            "INSERT INTO tombstone (uid, kind, person_uid, version) VALUES (?1, 'sample', ?2, ?3)
             ON CONFLICT (uid) DO NOTHING",
            params![sample_uid, person_uid, v],
        )?;
        let subject = audit::Subject::person(person, Some(&name));
        let detail = format!("sample {id}");
        let row = self
            .author
            .note(&tx, Action::SampleRemoved, subject, detail)?;
        let after = commit(tx)?;
        row.log();
        self.own_write(before, after);
        self.index.remove_sample(id);
        self.mark_dirty(&person_uid);
        self.scrub();
        Ok(())
    }

    /// The `k` best-matching people for `embedding`, best first (see [`index`] for the rule,
    /// including negative samples). [`Kind::InvalidInput`] for an invalid embedding.
    pub fn search(&self, embedding: &[f32], k: usize) -> Result<Vec<Match>> {
        validate_embedding(embedding)?;
        Ok(self.index.search(embedding, k))
    }

    /// The best match if its similarity is at least `threshold`.
    pub fn identify(&self, embedding: &[f32], threshold: f32) -> Result<Option<Match>> {
        Ok(self
            .search(embedding, 1)?
            .into_iter()
            .next()
            .filter(|m| m.similarity >= threshold))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What another process writes is noticed; what this gallery writes (and replicated records
    /// it applies) is not; a write racing with an own write is still noticed; reopening catches up.
    #[test]
    fn changed_elsewhere_notices_other_writers_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let mut e = vec![0.01f32; crate::vision::EMBEDDING_DIM];
        e[3] = 1.0;
        let s = NewSample {
            kind: SampleKind::Positive,
            embedding: &e,
            crop_jpeg: &[0xff, 0xd8, 1],
            quality_json: "{}",
            source: "test",
        };
        let mut daemon = Gallery::open(&db, &GalleryOptions::default()).unwrap();
        assert!(!daemon.changed_elsewhere().unwrap());
        // Every kind of own write.
        let bob = daemon.add_person("Bob").unwrap();
        let sid = daemon.add_sample(bob, s).unwrap();
        daemon.rename_person(bob, "Robert").unwrap();
        daemon.remove_sample(sid).unwrap();
        let carol = daemon.enroll(EnrollTarget::New("Carol"), &[s]).unwrap();
        let uid = daemon.replica_uids().unwrap()[0];
        let mut rec = daemon.replica(&uid).unwrap().unwrap();
        rec.name_v += 1;
        rec.name = "Rob".into();
        assert!(daemon.apply_replica(&rec).unwrap());
        daemon.remove_person(carol.person).unwrap();
        assert!(!daemon.changed_elsewhere().unwrap(), "own writes only");

        // The CLI, another connection: noticed, and an own write after it does not hide it.
        let mut cli = Gallery::open(&db, &GalleryOptions::default()).unwrap();
        cli.enroll(EnrollTarget::New("Dave"), &[s]).unwrap();
        drop(cli);
        assert!(daemon.changed_elsewhere().unwrap());
        daemon.add_person("Eve").unwrap();
        assert!(daemon.changed_elsewhere().unwrap(), "still behind Dave");
        assert!(
            daemon.search(&e, 1).unwrap().is_empty(),
            "memory lacks Dave"
        );
        // Reopened (the daemon's reload): in step, Dave included.
        let daemon = Gallery::open(&db, &GalleryOptions::default()).unwrap();
        assert!(!daemon.changed_elsewhere().unwrap());
        assert_eq!(daemon.search(&e, 1).unwrap()[0].name, "Dave");
        // A reload that failed skips that change; the next one is noticed again.
        let mut daemon = daemon;
        Gallery::open(&db, &GalleryOptions::default())
            .unwrap()
            .add_person("Grace")
            .unwrap();
        assert!(daemon.changed_elsewhere().unwrap());
        daemon.skip_changes_elsewhere().unwrap();
        assert!(!daemon.changed_elsewhere().unwrap());
        // A file that lost the counter's row gets it back at the next open, and counts again.
        daemon
            .connection()
            .execute("DELETE FROM gallery_change", [])
            .unwrap();
        drop(daemon);
        let daemon = Gallery::open(&db, &GalleryOptions::default()).unwrap();
        let mut cli = Gallery::open(&db, &GalleryOptions::default()).unwrap();
        cli.add_person("Frank").unwrap();
        assert!(daemon.changed_elsewhere().unwrap());
    }

    #[test]
    fn person_names_refuse_invisible_and_reordering_characters() {
        for ok in [
            "Alice",
            "José Ñúñez",
            "Zoë O'Brien-Smith",
            "李小龙",
            "علي",
            "Ahmed علي",
        ] {
            assert_eq!(validate_person_name(ok).unwrap(), ok);
        }
        assert_eq!(validate_person_name("  Bob  ").unwrap(), "Bob");
        let bad = [
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{061C}',
            '\u{E0041}',
            '\u{0007}',
            '\u{001B}',
            '\u{0085}',
            '\u{2028}',
            '\u{2029}',
        ];
        for c in bad {
            let name = format!("Al{c}ice");
            let e = validate_person_name(&name).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidInput);
            let msg = e.to_string();
            assert!(msg.contains(&format!("U+{:04X}", u32::from(c))), "{msg}");
            assert!(
                !msg.contains(c),
                "the message must not echo the character: {msg}"
            );
        }
    }
}
