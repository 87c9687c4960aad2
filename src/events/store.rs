//! Event storage: the `event` and `event_dead_letter` tables (migrations
//! `0003_events.sql` and `0005_event_dead_letter.sql`, documented in `src/db/schema.sql`) and
//! the writer thread that fills them.
//!
//! [`EventStore`] holds its own connection to the faced database (from [`crate::db::open`];
//! WAL mode: the gallery's reads and the MQTT publisher never wait for it). [`EventWriter`]
//! runs it on a thread named `faced-events`: it takes every event queued since its last write,
//! stores them in **one transaction** together with each [`EventSink`]'s rows (the MQTT
//! outbox), commits, logs each at INFO, then broadcasts them as [`StoredEvent`]s.
//!
//! Invariant: **one bad event never holds up the others.** An event the table cannot take (it
//! breaks a CHECK rule, or SQLite or a sink refuses its content) is set aside in
//! `event_dead_letter` with the reason and a WARN line, and the rest are stored in order (see
//! [`EventStore::store_events`]). Only failures that are not any event's fault (database busy,
//! I/O error, disk full) keep the queue, which is retried with back-off. At shutdown the queue
//! is drained before the connection closes; if the database still fails after three tries the
//! remaining events are logged as lost (crash window: events queued but not committed when
//! the process dies are lost, as is anything in the queue at a power cut).
//!
//! Retention (age and count limits) runs when the writer starts and then hourly, on the
//! injected [`Clocks`]: the age cut-off is wall time (event times are wall time), the hourly
//! period is monotonic. Both the stamps ([`EventStore::stamp`]) and the age cut-off
//! ([`EventStore::apply_retention`]) are guarded against wall-clock jumps: a unit without a
//! real-time clock boots in 1970 and jumps when NTP syncs, and that must neither delete a day of
//! events nor scramble their order.
//!
//! Snapshot crops are sealed by the database's one [`Cipher`](crate::db::crypto) under the
//! gallery's key file, with the associated data `"event.snapshot" 0 uid`, so a crop cannot be
//! moved to another row.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::broadcast;

use super::{Event, EventKind, EventSink, StoredEvent, VisitorRef, rfc3339_utc};
use crate::base::{Backoff, CLOCK_SKEW_MS, Clocks, WALL_CLOCK_FLOOR_MS};
use crate::db::{self, crypto};
use crate::error::{Error, Kind, Result};

const AAD_SNAPSHOT: &str = "event.snapshot";

/// Retention and snapshot settings (from `[events]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreOptions {
    /// Delete events older than this many days (0 = no age limit).
    pub retention_days: u32,
    /// Keep at most this many events (0 = no limit).
    pub retention_count: u64,
    /// Store snapshot crops.
    pub snapshots: bool,
}

/// The event table on its own connection.
pub struct EventStore {
    conn: Connection,
    cipher: crypto::Cipher,
    sinks: Vec<Box<dyn EventSink>>,
    opts: StoreOptions,
    clocks: Arc<dyn Clocks>,
    /// The newest stamp written (`MAX(at)` at open), and when (monotonic; none before the first
    /// write of this process): the stamping rule's memory.
    last_at: i64,
    last_mono: Option<Instant>,
    /// Wall and monotonic time at the first retention pass with a set clock: retention's "now"
    /// never runs ahead of this anchor plus monotonic time (see [`EventStore::apply_retention`]).
    anchor: Option<(i64, Instant)>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("opts", &self.opts)
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl EventStore {
    /// Opens `db` (already created and migrated by `Gallery::open`) with the gallery's key
    /// file `key_path`; `clocks` dates dead letters and drives retention.
    pub fn open(
        db: &Path,
        key_path: &Path,
        opts: StoreOptions,
        clocks: Arc<dyn Clocks>,
    ) -> Result<EventStore> {
        let conn = db::open(db)?;
        db::require_table(
            &conn,
            "event",
            &db::describe(db),
            "open it with Gallery::open first (it upgrades the schema)",
        )?;
        db::durable(&conn)?;
        let last_at: Option<i64> = conn
            .query_row("SELECT MAX(at) FROM event", [], |r| r.get(0))
            .map_err(|e| Error::from(e).in_database(&db::describe(db)))?;
        Ok(EventStore {
            conn,
            cipher: crypto::load_cipher(key_path)?,
            sinks: Vec::new(),
            opts,
            clocks,
            last_at: last_at.unwrap_or(0),
            last_mono: None,
            anchor: None,
        })
    }

    /// Adds a sink called inside every storing transaction.
    pub fn add_sink(&mut self, sink: Box<dyn EventSink>) {
        self.sinks.push(sink);
    }

    /// Changes retention and snapshot settings (SIGHUP).
    pub fn set_options(&mut self, opts: StoreOptions) {
        self.opts = opts;
    }

    fn seal(&self, uid: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        self.cipher.seal(&crypto::aad(AAD_SNAPSHOT, uid), plain)
    }

    fn open_sealed(&self, uid: &[u8], sealed: &[u8], id: i64) -> Result<Vec<u8>> {
        self.cipher.open(
            &crypto::aad(AAD_SNAPSHOT, uid),
            sealed,
            &format!("event {id} snapshot"),
        )
    }

    /// Stores `events` (setting their `event_id`) and calls the sinks, all in one transaction:
    /// all or none. The writer thread uses [`EventStore::store_events`], which also sets aside
    /// events that cannot be stored.
    pub fn store_batch(&mut self, events: &mut [Event]) -> Result<()> {
        let r = self.write_batch(events);
        if r.is_err() {
            for s in &mut self.sinks {
                s.rolled_back();
            }
        }
        r
    }

    /// Stores what can be stored of `pending`, in order, and sets aside (in
    /// `event_dead_letter`, with a WARN line) every event that cannot be, so one bad event
    /// never blocks the others:
    ///
    /// * an event breaking the table's rules ([`Event::check`]) is set aside without trying;
    /// * the rest go in one transaction (the normal case);
    /// * if SQLite or a sink refuses that transaction because of an event's content (a
    ///   constraint, a too-big value: [`is_row_fault`]), they are retried one per transaction
    ///   to find it, and only the refused ones are set aside;
    /// * any other failure (database busy or locked, I/O error, disk full) is not the events'
    ///   fault: it is returned in [`StoreOutcome::error`] and the events not yet stored stay in
    ///   `pending`, in order, for the caller to retry.
    pub fn store_events(&mut self, pending: &mut Vec<Event>) -> StoreOutcome {
        let mut out = StoreOutcome::default();
        let mut valid = Vec::with_capacity(pending.len());
        for mut e in pending.drain(..) {
            // An empty crop would break the snapshot CHECK; it is no snapshot, not a bad event.
            if e.snapshot_jpeg.as_ref().is_some_and(|j| j.is_empty()) {
                e.snapshot_jpeg = None;
                e.snapshot = false;
            }
            match e.check() {
                Ok(()) => valid.push(e),
                Err(why) => {
                    self.dead_letter(&e, &why);
                    out.dead_lettered += 1;
                }
            }
        }
        if valid.is_empty() {
            return out;
        }
        match self.store_batch(&mut valid) {
            Ok(()) => {
                out.stored = valid;
                return out;
            }
            Err(e) if !is_row_fault(&e) => {
                *pending = valid;
                out.error = Some(e);
                return out;
            }
            Err(e) if valid.len() == 1 => {
                self.dead_letter(&valid[0], &e.to_string());
                out.dead_lettered += 1;
                return out;
            }
            Err(e) => {
                tracing::debug!(
                    events = valid.len(),
                    "batch refused ({e}); storing one by one to find the bad event"
                );
            }
        }
        let mut rest = valid.into_iter();
        while let Some(mut e) = rest.next() {
            match self.store_batch(std::slice::from_mut(&mut e)) {
                Ok(()) => out.stored.push(e),
                Err(err) if is_row_fault(&err) => {
                    self.dead_letter(&e, &err.to_string());
                    out.dead_lettered += 1;
                }
                Err(err) => {
                    pending.push(e);
                    pending.extend(rest);
                    out.error = Some(err);
                    break;
                }
            }
        }
        out
    }

    /// Delivers events that cannot be stored because the disk is full: logged and handed to the
    /// sinks' [`EventSink::unstored`] (MQTT publishes them directly), without `event_id` or a
    /// stored snapshot. Nothing is kept, so memory stays bounded however long the disk is full.
    pub fn deliver_unstored(&mut self, events: Vec<Event>) {
        for mut e in events {
            e.event_id = 0;
            e.snapshot = false;
            let json = e.to_json();
            tracing::info!("{} (not stored: disk full)", e.log_line());
            for s in &mut self.sinks {
                s.unstored(&e, &json);
            }
        }
    }

    /// Keeps `e` in `event_dead_letter` with `why`, logs it at WARN, and trims the table to
    /// the newest [`DEAD_LETTER_KEEP`] rows. Never fails: if even that cannot be written, the
    /// event is logged at ERROR in full and dropped (holding it would block the queue).
    fn dead_letter(&mut self, e: &Event, why: &str) {
        let json = dead_letter_json(e);
        let why = truncate_chars(why, 1000);
        let why = if why.is_empty() { "unknown error" } else { why };
        tracing::warn!(
            "event not stored, kept in event_dead_letter: {why}; event {}",
            json
        );
        let r = (|| -> Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO event_dead_letter (event, error, at) VALUES (?1, ?2, ?3)",
                params![json, why, self.clocks.unix_ms()],
            )?;
            tx.execute(
                "DELETE FROM event_dead_letter WHERE id <= \
                 (SELECT id FROM event_dead_letter ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                [DEAD_LETTER_KEEP],
            )?;
            tx.commit()?;
            Ok(())
        })();
        if let Err(err) = r {
            tracing::error!("cannot write event_dead_letter ({err}); event dropped: {json}");
        }
    }

    /// Events set aside, newest first: `(event JSON, reason, Unix ms)`.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<(String, String, i64)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT event, error, at FROM event_dead_letter ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The time stored for an event sighted at wall time `wall` (Unix ms): the wall time while
    /// the clock is set and has not gone back; see "Clock jumps" in docs/reliability.md.
    ///
    /// * Clock not set (before [`WALL_CLOCK_FLOOR_MS`], an RTC-less board before NTP): the last
    ///   stamp plus the monotonic time since it, so events are placed just after the last
    ///   known time instead of in 1970, where retention would delete them as 56 years old.
    /// * Clock behind the last stamp by up to a day: the last stamp (stamps never go backwards,
    ///   so reports list events in the order they happened).
    /// * Clock behind by more than a day: the wall time. Then the earlier stamps were the wrong
    ///   ones (a clock that had run ahead); retention brings them back to the present.
    pub fn stamp(&mut self, wall: i64) -> i64 {
        let now = self.clocks.monotonic();
        let at = if wall < WALL_CLOCK_FLOOR_MS {
            let since = self
                .last_mono
                .map_or(0, |m| now.saturating_duration_since(m).as_millis() as i64);
            self.last_at.max(WALL_CLOCK_FLOOR_MS).saturating_add(since)
        } else if wall < self.last_at && self.last_at - wall <= 86_400_000 {
            self.last_at
        } else {
            wall
        };
        self.last_at = at;
        self.last_mono = Some(now);
        at
    }

    fn write_batch(&mut self, events: &mut [Event]) -> Result<()> {
        for e in events.iter_mut() {
            let at = self.stamp(e.ts_ms);
            if at != e.ts_ms {
                e.ts_ms = at;
                e.time = rfc3339_utc(at);
            }
        }
        let mut rows = Vec::with_capacity(events.len());
        for e in events.iter() {
            let uid: [u8; 16] = self.cipher.random()?;
            let snap = match (&e.snapshot_jpeg, self.opts.snapshots) {
                (Some(j), true) => Some(self.seal(&uid, j)?),
                _ => None,
            };
            rows.push((uid, snap));
        }
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO event (uid, kind, person_id, person_name, similarity, camera, track_id,
                                    x1, y1, x2, y2, at, duration_ms, snapshot, visitor_id,
                                    frigate_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            for (e, (uid, snap)) in events.iter_mut().zip(&rows) {
                // A person removed since the sighting: keep the event without the link.
                let person_id = match e.person_id {
                    Some(p) => tx
                        .query_row("SELECT id FROM person WHERE id = ?1", [p], |r| {
                            r.get::<_, i64>(0)
                        })
                        .optional()?,
                    None => None,
                };
                st.execute(params![
                    &uid[..],
                    e.kind.as_str(),
                    person_id,
                    e.person,
                    e.similarity,
                    e.camera,
                    e.track_id as i64,
                    e.bbox[0],
                    e.bbox[1],
                    e.bbox[2],
                    e.bbox[3],
                    e.ts_ms,
                    e.duration_ms.map(|d| d as i64),
                    snap,
                    e.visitor
                        .as_ref()
                        .filter(|_| e.kind == EventKind::Unknown)
                        .map(|v| v.visitor_id),
                    e.frigate.as_ref().map(|f| &f.id)
                ])?;
                e.event_id = tx.last_insert_rowid();
                e.snapshot = snap.is_some();
            }
        }
        for e in events.iter() {
            let json = e.to_json();
            for s in &mut self.sinks {
                s.on_event(&tx, e, &json)?;
            }
        }
        tx.commit()?;
        for s in &mut self.sinks {
            s.committed();
        }
        Ok(())
    }

    /// Deletes events past the age and count limits; returns how many.
    ///
    /// The age limit is measured on the wall clock, guarded against its jumps (docs/reliability.md,
    /// "Clock jumps"): nothing is deleted by age while the clock is not set
    /// ([`WALL_CLOCK_FLOOR_MS`]); "now" is the wall clock but never more than the monotonic time
    /// since the first pass ahead of that pass's wall clock, so a clock that jumps forward by
    /// years does not make every event look old; and events stamped more than a day in the
    /// future of a set clock (written while it ran ahead) are brought back to now.
    pub fn apply_retention(&mut self) -> Result<usize> {
        let mut n = 0;
        let wall = self.clocks.unix_ms();
        let mono = self.clocks.monotonic();
        if self.opts.retention_days > 0 && wall >= WALL_CLOCK_FLOOR_MS {
            let (aw, am) = *self.anchor.get_or_insert((wall, mono));
            let bound = aw.saturating_add(mono.saturating_duration_since(am).as_millis() as i64);
            if wall + CLOCK_SKEW_MS < bound {
                // The clock went back: re-anchor on it (deleting less is the safe side).
                self.anchor = Some((wall, mono));
            }
            let now = wall.min(bound);
            if wall > bound + 86_400_000 {
                tracing::warn!(
                    ahead_s = (wall - bound) / 1000,
                    "the wall clock jumped ahead of the time elapsed since start; event \
                     retention counts ages from the elapsed time until faced restarts"
                );
            }
            let fixed = self.conn.execute(
                "UPDATE event SET at = ?1 WHERE at > ?2",
                params![now, now.saturating_add(86_400_000)],
            )?;
            if fixed > 0 {
                tracing::warn!(
                    events = fixed,
                    "events stamped more than a day in the future (the clock had run ahead) \
                     were re-stamped to now"
                );
                self.last_at = self.last_at.min(now);
            }
            let cutoff = now - i64::from(self.opts.retention_days) * 86_400_000;
            n += self
                .conn
                .execute("DELETE FROM event WHERE at < ?1", [cutoff])?;
        }
        if self.opts.retention_count > 0 {
            n += self.conn.execute(
                "DELETE FROM event WHERE id <= (SELECT id FROM event ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                [self.opts.retention_count as i64],
            )?;
        }
        // Expired snapshots are faces: gone from the file and its WAL like an erase's. Hourly,
        // whether or not events expired, so that what the trimming of outbox rows and dead
        // letters left in the WAL goes too (about 20 ms).
        crate::db::erase::scrub_once(&self.conn)?;
        Ok(n)
    }

    /// The newest events (newest first), at most `limit`, with ids below `before` if given.
    pub fn recent(&self, limit: usize, before: Option<i64>) -> Result<Vec<Event>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, kind, person_id, person_name, similarity, camera, track_id, x1, y1, x2, y2, at,
                    duration_ms, snapshot IS NOT NULL, visitor_id
             FROM event WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![before.unwrap_or(i64::MAX), limit as i64], |r| {
            let kind: String = r.get(1)?;
            let at: i64 = r.get(11)?;
            Ok(Event {
                kind: EventKind::parse(&kind).unwrap_or(EventKind::Unknown),
                event_id: r.get(0)?,
                person_id: r.get(2)?,
                person: r.get(3)?,
                similarity: r.get(4)?,
                camera: r.get(5)?,
                track_id: r.get::<_, i64>(6)? as u64,
                bbox: [r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?],
                time: rfc3339_utc(at),
                ts_ms: at,
                duration_ms: r.get::<_, Option<i64>>(12)?.map(|d| d as u64),
                snapshot: r.get(13)?,
                snapshot_jpeg: None,
                frame_captured: None,
                frigate: None,
                visitor: r.get::<_, Option<i64>>(14)?.map(|visitor_id| VisitorRef {
                    visitor_id,
                    visits: None,
                    first_seen: None,
                    returning: None,
                }),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The decrypted snapshot JPEG of event `id`; `Ok(None)` if it has none,
    /// [`Kind::NotFound`](crate::Kind::NotFound) if there is no such event.
    pub fn snapshot(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let (uid, sealed): (Vec<u8>, Option<Vec<u8>>) = self
            .conn
            .query_row("SELECT uid, snapshot FROM event WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .ok_or_else(|| Error::not_found(format!("no event with id {id}")))?;
        sealed.map(|s| self.open_sealed(&uid, &s, id)).transpose()
    }

    /// Whether event `id` is about nobody in the gallery (an `unknown` face, or a `left` of an
    /// unknown track): its snapshot is a stranger's face. [`Kind::NotFound`](crate::Kind::NotFound)
    /// if there is no such event.
    pub fn is_stranger(&self, id: i64) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT person_id IS NULL FROM event WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| Error::not_found(format!("no event with id {id}")))
    }

    /// Number of stored events.
    pub fn count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM event", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

/// Newest rows kept in `event_dead_letter` (a few MB at most: an event's JSON there is short).
pub const DEAD_LETTER_KEEP: i64 = 1000;

/// What [`EventStore::store_events`] did with a batch.
#[derive(Debug, Default)]
pub struct StoreOutcome {
    /// Events stored (committed), in order, `event_id` set.
    pub stored: Vec<Event>,
    /// Events set aside in `event_dead_letter`.
    pub dead_lettered: usize,
    /// The transient failure that stopped the batch; the events not stored are back in the
    /// caller's queue.
    pub error: Option<Error>,
}

/// Whether `e` was caused by the event being stored (its content), so storing it again can
/// never succeed: a constraint, a value too big or of the wrong type, or a sink refusing the
/// content. Everything else (busy, locked, I/O, disk full, a broken file) is the database's
/// state and worth retrying.
pub fn is_row_fault(e: &Error) -> bool {
    use rusqlite::ErrorCode as C;
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<rusqlite::Error>() {
            return match r {
                rusqlite::Error::SqliteFailure(f, _) => matches!(
                    f.code,
                    C::ConstraintViolation | C::TooBig | C::TypeMismatch | C::ParameterOutOfRange
                ),
                rusqlite::Error::ToSqlConversionFailure(_)
                | rusqlite::Error::IntegralValueOutOfRange(..) => true,
                _ => false,
            };
        }
        src = s.source();
    }
    matches!(
        e.kind(),
        Kind::InvalidInput | Kind::Conflict | Kind::ResourceExhausted
    )
}

fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The event's JSON for `event_dead_letter`: names cut to 200 characters so the row stays
/// small whatever the event holds (serde_json writes NaN and infinities as null).
fn dead_letter_json(e: &Event) -> String {
    let cut = |s: &str| {
        let t = truncate_chars(s, 200);
        if t.len() < s.len() {
            format!("{t}…")
        } else {
            t.to_string()
        }
    };
    let mut e = e.clone();
    e.event_id = 0;
    e.snapshot_jpeg = None;
    e.camera = cut(&e.camera);
    e.person = e.person.as_deref().map(cut);
    e.time = cut(&e.time);
    e.to_json()
}

enum Cmd {
    Event(Box<Event>),
    Flush(mpsc::Sender<()>),
    Options(StoreOptions),
    Stop,
}

/// Queues events for the writer thread (cheap to clone; never blocks).
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Cmd>,
    counts: Arc<super::EventCounts>,
}

impl std::fmt::Debug for EventSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSender")
    }
}

impl EventSender {
    /// Queues `event`; false if the writer has stopped.
    pub fn send(&self, event: Event) -> bool {
        let kind = event.kind;
        let sent = self.tx.send(Cmd::Event(Box::new(event))).is_ok();
        if sent {
            self.counts.count(kind);
        }
        sent
    }

    /// Waits until everything queued before this call is committed (tests, shutdown).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Cmd::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Changes retention and snapshot settings.
    pub fn set_options(&self, opts: StoreOptions) {
        let _ = self.tx.send(Cmd::Options(opts));
    }
}

/// The writer thread (see the module docs).
pub struct EventWriter {
    sender: EventSender,
    stored: broadcast::Sender<StoredEvent>,
    health: Arc<super::StorageHealth>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EventWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventWriter")
    }
}

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// While the disk is full, how often the writer tries to store again (each try costs a failed
/// SQLite write; between tries events go out over MQTT directly).
const DISK_FULL_PROBE: Duration = Duration::from_secs(5);

impl EventWriter {
    /// Starts the writer thread on `store`.
    pub fn spawn(mut store: EventStore) -> Result<EventWriter> {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (stored, _) = broadcast::channel(256);
        let out = stored.clone();
        let health = Arc::new(super::StorageHealth::default());
        let thread_health = health.clone();
        let thread = std::thread::Builder::new()
            .name("faced-events".into())
            .spawn(move || {
                let health = thread_health;
                let clocks = store.clocks.clone();
                let mut last_retention: Option<Instant> = None;
                let mut pending: Vec<Event> = Vec::new();
                let mut flushes: Vec<mpsc::Sender<()>> = Vec::new();
                let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
                let mut failures = 0u32;
                let mut open = true;
                // While the disk is full: since when, and when to try storing again.
                let mut full: Option<Instant> = None;
                while open || !pending.is_empty() {
                    if last_retention.is_none_or(|t| {
                        clocks.monotonic().saturating_duration_since(t) >= RETENTION_EVERY
                    }) {
                        match store.apply_retention() {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(deleted = n, "event retention"),
                            Err(e) => tracing::warn!("event retention failed: {e}"),
                        }
                        last_retention = Some(clocks.monotonic());
                    }
                    // Block for the first command (unless a failed batch waits), then drain.
                    let first = if pending.is_empty() && open {
                        match rx.recv_timeout(RETENTION_EVERY) {
                            Ok(c) => Some(c),
                            Err(mpsc::RecvTimeoutError::Timeout) => continue,
                            Err(mpsc::RecvTimeoutError::Disconnected) => {
                                open = false;
                                None
                            }
                        }
                    } else {
                        None
                    };
                    let mut stop = false;
                    let mut handle =
                        |c: Cmd, pending: &mut Vec<Event>, store: &mut EventStore| match c {
                            Cmd::Event(e) => pending.push(*e),
                            Cmd::Flush(f) => flushes.push(f),
                            Cmd::Options(o) => store.set_options(o),
                            Cmd::Stop => stop = true,
                        };
                    if let Some(c) = first {
                        handle(c, &mut pending, &mut store);
                    }
                    loop {
                        match rx.try_recv() {
                            Ok(c) => handle(c, &mut pending, &mut store),
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    if stop {
                        open = false;
                    }
                    if !pending.is_empty() && full.is_some_and(|t| t.elapsed() < DISK_FULL_PROBE) {
                        // Between probes, events go out without the database.
                        store.deliver_unstored(std::mem::take(&mut pending));
                    }
                    if !pending.is_empty() {
                        let outcome = store.store_events(&mut pending);
                        if outcome.error.is_none() && full.take().is_some() {
                            health.set(None);
                            tracing::warn!(
                                "the database's disk has space again: events are stored again"
                            );
                        }
                        if let Some(e) = &outcome.error
                            && e.kind() == Kind::ResourceExhausted
                        {
                            if full.is_none() {
                                health.set(Some(clocks.unix_ms()));
                                tracing::error!(
                                    "the database's disk is full ({e}): events are published \
                                     over MQTT but not stored, and no snapshots are kept, until \
                                     space is freed; recognition goes on and nothing stored so \
                                     far is affected"
                                );
                            }
                            full = Some(Instant::now());
                            // A real instant, like the back-off: it paces real disk probes.
                        }
                        // Real time, not the injected clocks: it measures latency (`faced
                        // bench`) against frames' real capture instants.
                        let committed = Instant::now();
                        for e in outcome.stored {
                            // The fields reach journald as F_EVENT_ID, F_CAMERA, F_PERSON, so
                            // `journalctl -u faced F_PERSON=alice` finds a person's events.
                            tracing::info!(
                                event_id = e.event_id,
                                camera = e.camera.as_str(),
                                person = e.person.as_deref(),
                                "{}",
                                e.log_line()
                            );
                            let _ = out.send(StoredEvent {
                                event: Arc::new(e),
                                committed,
                            });
                        }
                        match outcome.error {
                            None => {
                                backoff.reset();
                                failures = 0;
                            }
                            Some(_) if full.is_some() => {
                                store.deliver_unstored(std::mem::take(&mut pending));
                            }
                            Some(e) => {
                                failures += 1;
                                let d = backoff.next_delay();
                                tracing::error!(
                                    events = pending.len(),
                                    "cannot store events: {e}; retrying in {:.1} s",
                                    d.as_secs_f32()
                                );
                                if !open && failures >= 3 {
                                    tracing::error!(
                                        lost = pending.len(),
                                        "giving up on events at shutdown"
                                    );
                                    pending.clear();
                                }
                                // A real wait: it gives another process time to release
                                // the database, which simulated time would not.
                                std::thread::sleep(d);
                                continue;
                            }
                        }
                    }
                    for f in flushes.drain(..) {
                        let _ = f.send(());
                    }
                }
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
                tracing::debug!("event writer stopped");
            })
            .map_err(|e| Error::internal(format!("cannot start the event writer thread: {e}")))?;
        Ok(EventWriter {
            sender: EventSender {
                tx,
                counts: Default::default(),
            },
            stored,
            health,
            thread: Some(thread),
        })
    }

    /// Whether events are being stored (the console's banner).
    pub fn health(&self) -> Arc<super::StorageHealth> {
        self.health.clone()
    }

    /// Events handed to this writer so far, by kind (`/metrics`).
    pub fn counts(&self) -> Arc<super::EventCounts> {
        self.sender.counts.clone()
    }

    /// A handle to queue events.
    pub fn sender(&self) -> EventSender {
        self.sender.clone()
    }

    /// Stored events, as they commit.
    pub fn subscribe(&self) -> broadcast::Receiver<StoredEvent> {
        self.stored.subscribe()
    }

    /// The broadcast sender (to hand to other modules that subscribe later).
    pub fn stored_events(&self) -> broadcast::Sender<StoredEvent> {
        self.stored.clone()
    }

    /// Stores everything queued so far, stops the thread and closes the connection (events
    /// sent after this are dropped).
    pub fn shutdown(mut self) {
        let _ = self.sender.tx.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::SimulatedClocks;

    const DAY: Duration = Duration::from_secs(86_400);

    /// A migrated database with its key, and a store on `clocks`.
    fn store(dir: &Path, opts: StoreOptions, clocks: Arc<SimulatedClocks>) -> EventStore {
        let db = dir.join("faced.db");
        let key = dir.join("faced.db.key");
        drop(db::open_migrated(&db, &*clocks).unwrap());
        crypto::create_key(&key).unwrap();
        EventStore::open(&db, &key, opts, clocks).unwrap()
    }

    /// An unknown-face event seen now on `clocks`.
    fn seen_now(clocks: &SimulatedClocks, snapshot: Option<&[u8]>) -> Event {
        let at = clocks.unix_ms();
        Event {
            kind: EventKind::Unknown,
            event_id: 0,
            person: None,
            person_id: None,
            similarity: Some(0.2),
            camera: "front".into(),
            track_id: 1,
            bbox: [1.0, 2.0, 3.0, 4.0],
            time: rfc3339_utc(at),
            ts_ms: at,
            duration_ms: None,
            snapshot: snapshot.is_some(),
            snapshot_jpeg: snapshot.map(<[u8]>::to_vec),
            frame_captured: None,
            frigate: None,
            visitor: None,
        }
    }

    #[test]
    fn retention_deletes_by_age_as_simulated_clocks_advance() {
        let dir = tempfile::tempdir().unwrap();
        let clocks = Arc::new(SimulatedClocks::new());
        let opts = StoreOptions {
            retention_days: 7,
            retention_count: 0,
            snapshots: true,
        };
        let mut s = store(dir.path(), opts, clocks.clone());
        // One event a day for ten days.
        for _ in 0..10 {
            s.store_batch(&mut [seen_now(&clocks, None)]).unwrap();
            clocks.advance(DAY);
        }
        // Now is ten days after the first: the first three are more than seven days old.
        assert_eq!(s.apply_retention().unwrap(), 3);
        assert_eq!(s.count().unwrap(), 7);
        assert_eq!(
            s.apply_retention().unwrap(),
            0,
            "the oldest is exactly seven days old: kept"
        );
        clocks.advance(Duration::from_millis(1));
        assert_eq!(s.apply_retention().unwrap(), 1);
        // Then the count limit, newest kept.
        s.set_options(StoreOptions {
            retention_days: 0,
            retention_count: 2,
            snapshots: true,
        });
        assert_eq!(s.apply_retention().unwrap(), 4);
        let left: Vec<i64> = s
            .recent(10, None)
            .unwrap()
            .iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(left, [10, 9]);
    }

    /// The wall clock of an RTC-less unit: set back to 1970 at a reboot, then NTP jumps it
    /// forward; later a bad time server moves it years ahead and back. Events keep their id
    /// order and non-decreasing stamps, retention (30 days) deletes none of them, and it still
    /// deletes by age once real time has passed.
    #[test]
    fn clock_jumps_neither_delete_events_nor_scramble_their_order() {
        use std::time::UNIX_EPOCH;
        let dir = tempfile::tempdir().unwrap();
        let clocks = Arc::new(SimulatedClocks::new());
        let real = clocks.realtime();
        let opts = StoreOptions {
            retention_days: 30,
            retention_count: 0,
            snapshots: false,
        };
        let mut s = store(dir.path(), opts, clocks.clone());
        let minute = Duration::from_secs(60);
        let one = |s: &mut EventStore| {
            let mut e = [seen_now(&clocks, None)];
            s.store_batch(&mut e).unwrap();
            clocks.advance(minute);
            (e[0].event_id, e[0].ts_ms)
        };
        let mut written = vec![one(&mut s), one(&mut s)];
        assert_eq!(s.apply_retention().unwrap(), 0);
        // Reboot into 1970: stamps continue from the last one, on monotonic time.
        clocks.set_wall(UNIX_EPOCH + Duration::from_secs(3600));
        let mut s = {
            drop(s);
            EventStore::open(
                &dir.path().join("faced.db"),
                &dir.path().join("faced.db.key"),
                opts,
                clocks.clone(),
            )
            .unwrap()
        };
        for _ in 0..3 {
            written.push(one(&mut s));
        }
        assert_eq!(
            s.apply_retention().unwrap(),
            0,
            "retention on an unset clock"
        );
        let last_real = written[1].1;
        assert!(written[2].1 >= last_real && written[4].1 - written[2].1 >= 2 * 60_000);
        // NTP: back to real time (plus what passed).
        clocks.set_wall(real + 10 * minute);
        written.push(one(&mut s));
        assert_eq!(
            s.apply_retention().unwrap(),
            0,
            "the NTP jump deleted events"
        );
        // A bad time server: three years ahead, then corrected.
        clocks.set_wall(real + Duration::from_secs(3 * 365 * 86_400));
        written.push(one(&mut s));
        assert_eq!(
            s.apply_retention().unwrap(),
            0,
            "a forward jump deleted events"
        );
        clocks.set_wall(real + 20 * minute);
        assert_eq!(s.apply_retention().unwrap(), 0);
        written.push(one(&mut s));
        let ids: Vec<i64> = written.iter().map(|w| w.0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let stored: Vec<(i64, i64)> = s
            .conn
            .prepare("SELECT id, at FROM event ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(stored.len(), written.len(), "events lost");
        assert!(
            stored.windows(2).all(|w| w[0].1 <= w[1].1),
            "stamps out of id order: {stored:?}"
        );
        let now = clocks.unix_ms();
        for (id, at) in &stored {
            assert!(
                *at >= real_ms(real) - 60_000 && *at <= now + 86_400_000,
                "event {id} stamped {} (now {})",
                rfc3339_utc(*at),
                rfc3339_utc(now)
            );
        }
        // Real time passes: the age limit applies as usual.
        clocks.advance(31 * 24 * 60 * minute);
        assert_eq!(s.apply_retention().unwrap(), stored.len());
    }

    fn real_ms(t: std::time::SystemTime) -> i64 {
        crate::base::unix_ms(t)
    }

    #[test]
    fn snapshots_use_the_database_cipher_bound_to_their_row() {
        let dir = tempfile::tempdir().unwrap();
        let clocks = Arc::new(SimulatedClocks::new());
        let opts = StoreOptions {
            retention_days: 0,
            retention_count: 0,
            snapshots: true,
        };
        let mut s = store(dir.path(), opts, clocks.clone());
        let mut ev = [
            seen_now(&clocks, Some(b"jpeg one")),
            seen_now(&clocks, Some(b"jpeg two")),
        ];
        s.store_batch(&mut ev).unwrap();
        let (a, b) = (ev[0].event_id, ev[1].event_id);
        assert_eq!(s.snapshot(a).unwrap().as_deref(), Some(&b"jpeg one"[..]));
        // A sealed crop moved to another row does not open there.
        s.conn
            .execute(
                "UPDATE event SET snapshot = (SELECT snapshot FROM event WHERE id = ?1) WHERE id = ?2",
                [a, b],
            )
            .unwrap();
        let e = s.snapshot(b).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("cannot decrypt event {b} snapshot")),
            "{e}"
        );
        // Dead letters are dated by the same clocks.
        let mut bad = seen_now(&clocks, None);
        bad.camera = String::new();
        let mut pending = vec![bad];
        assert_eq!(s.store_events(&mut pending).dead_lettered, 1);
        assert_eq!(s.dead_letters(1).unwrap()[0].2, clocks.unix_ms());
    }
}
