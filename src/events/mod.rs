//! Recognition events: what the pipeline reports, the per-person cool-down, and their storage.
//!
//! * [`Event`] is one `recognized`, `unknown` or `left` event; its JSON (see [`Event::to_json`])
//!   is what goes to MQTT `faced/<device>/events` and the console.
//! * [`CoolDown`] decides whether a sighting is news: a person standing at the door is one
//!   event, not thirty. It runs on the pipeline's vision thread on the monotonic time of the
//!   injected [`Clocks`](crate::base::Clocks) (a Pi's wall clock jumps when NTP syncs), so
//!   tests step a [`SimulatedClocks`](crate::base::SimulatedClocks) and are exact and instant.
//! * [`store`] writes events (and their encrypted snapshot crops) to the `event` table of the
//!   faced database on a writer thread, in one transaction per batch, applies retention, and
//!   calls every [`EventSink`] inside that transaction — the MQTT outbox enqueues there, so an
//!   event and its outbox row commit together or not at all. An event the table cannot take
//!   is set aside in `event_dead_letter` with the reason; it never holds up the others.
//!   Every stored event is logged at INFO in one line ([`Event::log_line`]).
//!
//! Event timestamps are wall-clock (the frame's capture time); durations and cool-downs are
//! monotonic.

pub mod mqtt_sink;
pub mod store;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use crate::base::{rfc3339_utc, unix_ms};
use crate::error::Result;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An enrolled person was recognised (after their cool-down expired).
    Recognized,
    /// A face that matches nobody in the gallery.
    Unknown,
    /// A reported track ended (the face left the view).
    Left,
}

impl EventKind {
    /// The value stored in `event.kind` and sent as `"type"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Recognized => "recognized",
            EventKind::Unknown => "unknown",
            EventKind::Left => "left",
        }
    }

    /// Parses [`EventKind::as_str`]'s output.
    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "recognized" => Some(EventKind::Recognized),
            "unknown" => Some(EventKind::Unknown),
            "left" => Some(EventKind::Left),
            _ => None,
        }
    }
}

/// One event. Serialised (see [`Event::to_json`]) as
///
/// ```json
/// {"type":"recognized","event_id":42,"person":"alice","person_id":1,"similarity":0.71,
///  "camera":"front","track_id":17,"box":[102.5,80.0,230.1,241.7],
///  "time":"2025-01-31T07:05:09.042Z","ts_ms":1738307109042,"snapshot":true}
/// ```
///
/// `unknown` has `person`/`person_id` `null` and `similarity` the best (below-threshold) match
/// or `null`; `left` adds `duration_ms` (first to last sighting of the track) and names the
/// person if the track was recognised. `snapshot` says whether a crop was stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `recognized`, `unknown` or `left`.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Database id of the event, increasing (0 until stored).
    pub event_id: i64,
    /// Recognised person's name at the time of the event.
    pub person: Option<String>,
    /// Recognised person's id.
    pub person_id: Option<i64>,
    /// Cosine similarity of the identity vote's best match.
    pub similarity: Option<f32>,
    /// Camera name.
    pub camera: String,
    /// Tracker id, unique per camera per run.
    pub track_id: u64,
    /// Face box `[x1, y1, x2, y2]` in frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Wall-clock time of the frame, RFC 3339 UTC.
    pub time: String,
    /// The same, Unix milliseconds.
    pub ts_ms: i64,
    /// `left` only: how long the track was in view, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
    /// Whether a snapshot crop is stored with the event.
    pub snapshot: bool,
    /// JPEG crop of the face (not serialised; stored encrypted).
    #[serde(skip)]
    pub snapshot_jpeg: Option<Vec<u8>>,
    /// When the frame that caused the event was captured (latency measurement; not
    /// serialised).
    #[serde(skip)]
    pub frame_captured: Option<Instant>,
    /// Frigate companion mode: the Frigate event this one is about (published; its id is
    /// stored in `event.frigate_id`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub frigate: Option<FrigateRef>,
    /// `unknown` only: the visitor the face was grouped into (src/visitors/), as top-level
    /// `visitor_id`, `visits`, `first_seen` and `returning`.
    #[serde(flatten, skip_serializing_if = "Option::is_none", default)]
    pub visitor: Option<VisitorRef>,
}

/// The visitor an `unknown` event is about (see [`Event::visitor`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorRef {
    /// Visitor id (the console's Visitors page; stable across restarts).
    pub visitor_id: i64,
    /// Their distinct visits so far, this one included (`None` in events read back from the
    /// table, which keeps only the id).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub visits: Option<u32>,
    /// Their first sighting, RFC 3339 UTC.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_seen: Option<String>,
    /// A returning stranger: seen on an earlier visit. `false` for a new one, and for a
    /// sighting within the same visit.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub returning: Option<bool>,
}

/// The Frigate event a faced event is about (`[frigate]`, src/frigate/).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrigateRef {
    /// Frigate's event id, e.g. `1607123955.475377-mxklsc`.
    pub id: String,
    /// Frigate's camera name, as Frigate spells it.
    pub camera: String,
}

/// Longest camera name the event table takes (characters).
pub const MAX_CAMERA_CHARS: usize = 32;
/// Longest person name the event table takes (characters).
pub const MAX_PERSON_CHARS: usize = 100;

impl Event {
    /// The event's JSON, as published.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Whether the event table can take this event: the rules of its CHECK constraints
    /// (`schema.sql`), checked in Rust so a broken event is set aside with a reason a person
    /// can act on instead of SQLite's "CHECK constraint failed". Also refuses what the table
    /// would take but nobody should publish: control characters in names (the gallery and the
    /// config refuse them too) and non-finite box coordinates (JSON has no NaN).
    pub fn check(&self) -> std::result::Result<(), String> {
        let name_ok = |what: &str, s: &str, max: usize| {
            let n = s.chars().count();
            if !(1..=max).contains(&n) {
                return Err(format!("{what} must be 1 to {max} characters, got {n}"));
            }
            if s.chars().any(char::is_control) {
                return Err(format!("{what} contains control characters"));
            }
            Ok(())
        };
        name_ok("camera name", &self.camera, MAX_CAMERA_CHARS)?;
        if let Some(p) = &self.person {
            name_ok("person name", p, MAX_PERSON_CHARS)?;
        }
        if let Some(s) = self.similarity
            && !(s.is_finite() && (-1.0..=1.0).contains(&s))
        {
            return Err(format!("similarity {s} is not a number within -1..1"));
        }
        if i64::try_from(self.track_id).is_err() {
            return Err(format!(
                "track id {} is beyond the database's integer range",
                self.track_id
            ));
        }
        if let Some(d) = self.duration_ms {
            if self.kind != EventKind::Left {
                return Err(format!(
                    "duration_ms is only for 'left' events, not '{}'",
                    self.kind.as_str()
                ));
            }
            if i64::try_from(d).is_err() {
                return Err(format!(
                    "duration_ms {d} is beyond the database's integer range"
                ));
            }
        }
        if self.bbox.iter().any(|v| !v.is_finite()) {
            return Err(format!("box {:?} has a non-finite coordinate", self.bbox));
        }
        Ok(())
    }

    /// The one-line summary logged at INFO when the event is stored, e.g.
    /// `event recognized camera=front person=Alice similarity=0.84 track=3 id=12`. Names with
    /// spaces, quotes or `=` are quoted so the line stays parseable.
    pub fn log_line(&self) -> String {
        fn field(s: &str) -> String {
            if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '"' || c == '=') {
                format!("{s:?}")
            } else {
                s.to_string()
            }
        }
        let mut l = format!(
            "event {} camera={}",
            self.kind.as_str(),
            field(&self.camera)
        );
        if let Some(p) = &self.person {
            l.push_str(&format!(" person={}", field(p)));
        }
        if let Some(s) = self.similarity {
            l.push_str(&format!(" similarity={s:.2}"));
        }
        if let Some(d) = self.duration_ms {
            l.push_str(&format!(" duration_ms={d}"));
        }
        l.push_str(&format!(" track={} id={}", self.track_id, self.event_id));
        l
    }
}

/// A stored event, as broadcast to in-process listeners (console, GPIO, bench).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The event, `event_id` set.
    pub event: std::sync::Arc<Event>,
    /// When its transaction committed (monotonic).
    pub committed: Instant,
}

/// Something that must happen in the same transaction as storing an event: the MQTT outbox.
///
/// Implemented by the MQTT module (`crate::mqtt`), which enqueues the event JSON (and the
/// snapshot for `faced/<device>/camera/<name>/snapshot`) into its outbox table. Called on the
/// event writer thread; an error rolls back the batch: a transient one (database busy, I/O) is
/// retried with back-off, one caused by the event's content sets that event aside (see
/// [`store`]).
pub trait EventSink: Send {
    /// Called once per event inside the storing transaction, `event.event_id` set. `json` is
    /// [`Event::to_json`]; `snapshot_jpeg` the plain crop if one was taken.
    fn on_event(&mut self, tx: &rusqlite::Transaction<'_>, event: &Event, json: &str)
    -> Result<()>;
    /// Called after the transaction committed (e.g. to wake a publisher).
    fn committed(&mut self) {}
    /// Called after the transaction was rolled back: forget whatever [`EventSink::on_event`]
    /// kept for [`EventSink::committed`] (the events will be offered again, or set aside).
    fn rolled_back(&mut self) {}
    /// Called for an event that cannot be stored because the database's disk is full
    /// (`event_id` 0): deliver it anyway if the sink can without the database (MQTT can,
    /// best effort while connected).
    fn unstored(&mut self, _event: &Event, _json: &str) {}
}

/// Events emitted since start, by kind: counted as they are handed to the event writer
/// ([`store::EventSender::send`]), stored or not; read by `/metrics`.
#[derive(Debug, Default)]
pub struct EventCounts {
    by_kind: [std::sync::atomic::AtomicU64; 3],
}

impl EventCounts {
    fn slot(kind: EventKind) -> usize {
        match kind {
            EventKind::Recognized => 0,
            EventKind::Unknown => 1,
            EventKind::Left => 2,
        }
    }

    pub(crate) fn count(&self, kind: EventKind) {
        self.by_kind[Self::slot(kind)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Events of `kind` so far.
    pub fn get(&self, kind: EventKind) -> u64 {
        self.by_kind[Self::slot(kind)].load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl crate::metrics::Source for EventCounts {
    fn collect(&self, out: &mut crate::metrics::Scrape) {
        for kind in [EventKind::Recognized, EventKind::Unknown, EventKind::Left] {
            out.counter(
                "faced_events",
                "Events emitted, by type (recognized, unknown, left).",
                &[("type", kind.as_str())],
                self.get(kind) as f64,
            );
        }
    }
}

/// Whether events are being stored: shared by the event writer (which sets it) and the console
/// (which shows a banner while the disk is full).
#[derive(Debug, Default)]
pub struct StorageHealth {
    /// Unix ms since when the disk has been full; 0 while events are stored.
    full_since_ms: std::sync::atomic::AtomicI64,
}

impl StorageHealth {
    /// When the disk filled up, if it is full now.
    pub fn full_since(&self) -> Option<i64> {
        match self
            .full_since_ms
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            t => Some(t),
        }
    }

    pub(crate) fn set(&self, since: Option<i64>) {
        let v = since.map_or(0, |t| t.max(1));
        self.full_since_ms
            .store(v, std::sync::atomic::Ordering::Relaxed);
    }
}

impl crate::metrics::Source for StorageHealth {
    fn collect(&self, out: &mut crate::metrics::Scrape) {
        out.gauge(
            "faced_events_storage_full",
            "1 while the database's disk is full and events are published but not stored.",
            &[],
            f64::from(u8::from(self.full_since().is_some())),
        );
    }
}

/// Per-person cool-down (and per-camera cool-down for unknown faces), on the monotonic clock.
///
/// A person is news when they have not been *seen* (recognised on any camera) for
/// `cooldown`: every sighting refreshes it, so someone standing at the door for ten minutes is
/// one event, and they are reported again only after being away for the cool-down.
#[derive(Debug)]
pub struct CoolDown {
    cooldown: Duration,
    unknown_cooldown: Duration,
    seen: HashMap<i64, Instant>,
    unknown: HashMap<String, Instant>,
}

impl CoolDown {
    /// With the two periods from `[events]`.
    pub fn new(cooldown: Duration, unknown_cooldown: Duration) -> CoolDown {
        CoolDown {
            cooldown,
            unknown_cooldown,
            seen: HashMap::new(),
            unknown: HashMap::new(),
        }
    }

    /// Changes the periods (SIGHUP).
    pub fn set_periods(&mut self, cooldown: Duration, unknown_cooldown: Duration) {
        self.cooldown = cooldown;
        self.unknown_cooldown = unknown_cooldown;
    }

    /// Records a sighting of `person` at `now`; true if it should be reported.
    pub fn person_seen(&mut self, person: i64, now: Instant) -> bool {
        let news = self
            .seen
            .get(&person)
            .is_none_or(|&t| now.saturating_duration_since(t) >= self.cooldown);
        self.seen.insert(person, now);
        news
    }

    /// Refreshes `person`'s last sighting without reporting (their track is still in view).
    pub fn person_still_seen(&mut self, person: i64, now: Instant) {
        self.seen.insert(person, now);
    }

    /// An unknown face on `camera` at `now`: true if it should be reported.
    pub fn unknown_seen(&mut self, camera: &str, now: Instant) -> bool {
        let news = self
            .unknown
            .get(camera)
            .is_none_or(|&t| now.saturating_duration_since(t) >= self.unknown_cooldown);
        if news {
            self.unknown.insert(camera.to_string(), now);
        }
        news
    }

    /// Forgets entries older than the longest period (keeps the maps small).
    pub fn prune(&mut self, now: Instant) {
        let keep = self.cooldown.max(self.unknown_cooldown);
        self.seen
            .retain(|_, t| now.saturating_duration_since(*t) < keep);
        self.unknown
            .retain(|_, t| now.saturating_duration_since(*t) < keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_738_307_109_042), "2025-01-31T07:05:09.042Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn cooldown_refreshes_while_seen() {
        use crate::base::{Clocks, SimulatedClocks};
        let clock = SimulatedClocks::new();
        let mut c = CoolDown::new(Duration::from_secs(60), Duration::from_secs(10));
        assert!(c.person_seen(1, clock.monotonic()));
        clock.advance(Duration::from_secs(50));
        assert!(!c.person_seen(1, clock.monotonic()));
        clock.advance(Duration::from_secs(50)); // 100 s after the first, 50 after the last sighting
        assert!(!c.person_seen(1, clock.monotonic()));
        assert!(c.person_seen(2, clock.monotonic()));
        clock.advance(Duration::from_secs(61));
        assert!(c.person_seen(1, clock.monotonic()));
        assert!(c.unknown_seen("front", clock.monotonic()));
        assert!(!c.unknown_seen("front", clock.monotonic()));
        assert!(c.unknown_seen("back", clock.monotonic()));
        clock.advance(Duration::from_secs(10));
        assert!(c.unknown_seen("front", clock.monotonic()));
    }

    #[test]
    fn json_shape() {
        let e = Event {
            kind: EventKind::Recognized,
            event_id: 3,
            person: Some("alice".into()),
            person_id: Some(1),
            similarity: Some(0.71),
            camera: "front".into(),
            track_id: 17,
            bbox: [1.0, 2.0, 3.0, 4.0],
            time: rfc3339_utc(1000),
            ts_ms: 1000,
            duration_ms: None,
            snapshot: true,
            snapshot_jpeg: Some(vec![1, 2]),
            frame_captured: None,
            frigate: None,
            visitor: None,
        };
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["type"], "recognized");
        assert_eq!(v["person"], "alice");
        assert_eq!(v["box"][2], 3.0);
        assert_eq!(v["time"], "1970-01-01T00:00:01.000Z");
        assert!(v.get("duration_ms").is_none() && v.get("snapshot_jpeg").is_none());
    }
}
