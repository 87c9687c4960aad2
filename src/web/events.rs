//! The console's read side of the daemon's event log (the `event` table written by
//! `crate::events::store`): filtered listing for the Events page, aggregation for the Reports
//! page, and decrypted snapshots.
//!
//! [`EventLog`] holds its own read connection (from [`crate::db::open`]; WAL: never waits for
//! the event writer) plus an `events::store::EventStore` used only for its snapshot decryption. Every method blocks
//! (SQLite): handlers call them inside `spawn_blocking`.
//!
//! Privacy erase needs nothing here: `event.person_id` is `ON DELETE CASCADE`, so removing a
//! person from the gallery removes their events and snapshots in the same statement.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params_from_iter, types::Value};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::events::store::{EventStore, StoreOptions};

/// Most events one report reads; a wider range is refused with a message to narrow it.
pub const MAX_REPORT_EVENTS: usize = 500_000;
/// Largest page of the event list.
pub const MAX_PAGE: usize = 500;
/// Sightings of one person closer together than this belong to the same visit.
pub const VISIT_GAP_MS: i64 = 15 * 60 * 1000;
/// Earliest report bound accepted: 2000-01-01T00:00:00Z, Unix ms. Bounds are checked before any
/// arithmetic on them, so extreme query values get a 400 instead of an overflow.
pub const MIN_REPORT_MS: i64 = 946_684_800_000;
/// Latest report bound accepted: 2100-01-01T00:00:00Z, Unix ms.
pub const MAX_REPORT_MS: i64 = 4_102_444_800_000;
/// Longest report range, days (ten years and a margin; one bucket per day).
pub const MAX_REPORT_DAYS: i64 = 3700;
const DAY_MS: i64 = 86_400_000;

/// One event as the console lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    /// Event id (increasing).
    pub id: i64,
    /// `recognized`, `unknown` or `left`.
    pub kind: String,
    /// When, wall-clock Unix ms.
    pub at_ms: i64,
    /// Camera name.
    pub camera: String,
    /// Tracker id on that camera.
    pub track_id: i64,
    /// Recognised person, `None` = unknown face.
    pub person_id: Option<i64>,
    /// Their name at the time of the event.
    pub person: Option<String>,
    /// Similarity of the identity vote's best match.
    pub similarity: Option<f32>,
    /// Face box `[x1, y1, x2, y2]` in frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Whether a snapshot crop is stored.
    pub snapshot: bool,
    /// `unknown` events: the visitor the face was grouped into (may since have been merged
    /// into an older one; the Visitors API resolves it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub visitor_id: Option<i64>,
    /// Frigate companion mode: the id of the Frigate event this one is about (Frigate
    /// confirmed it before faced looked).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub frigate_id: Option<String>,
}

/// Which events to list (all optional), newest first. Also the query string of
/// `GET /api/events`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventFilter {
    /// Only this camera.
    pub camera: Option<String>,
    /// Only this person.
    pub person_id: Option<i64>,
    /// Only this visitor's `unknown` events, those of visitors merged into it included.
    pub visitor_id: Option<i64>,
    /// Only unknown faces.
    pub unknown: bool,
    /// Include `left` events (default: only `recognized` and `unknown`).
    pub include_left: bool,
    /// At or after this time, Unix ms.
    pub since_ms: Option<i64>,
    /// Before this time, Unix ms.
    pub until_ms: Option<i64>,
    /// Only ids below this (paging: the last id of the previous page).
    pub before_id: Option<i64>,
    /// Only the events about this Frigate event (Frigate companion mode).
    pub frigate_id: Option<String>,
    /// Page size, 1..=[`MAX_PAGE`] (default 100).
    pub limit: Option<usize>,
}

/// Counts for one bucket of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// `YYYY-MM-DD` (days) or `HH` (hours), in the report's time zone offset.
    pub key: String,
    /// Recognised faces.
    pub recognized: u64,
    /// Unknown faces.
    pub unknown: u64,
}

/// Per-person line of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonLine {
    /// Person id.
    pub person_id: i64,
    /// Name (latest seen in events).
    pub name: String,
    /// First sighting in the range, Unix ms.
    pub first_seen_ms: i64,
    /// Last sighting in the range, Unix ms.
    pub last_seen_ms: i64,
    /// Visits: sightings more than [`VISIT_GAP_MS`] apart count separately.
    pub visits: u64,
    /// Recognised events.
    pub events: u64,
}

/// The Reports page's data for one time range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Range start, Unix ms.
    pub since_ms: i64,
    /// Range end, Unix ms.
    pub until_ms: i64,
    /// Offset applied to bucket times, minutes east of UTC (the browser's time zone).
    pub tz_offset_min: i32,
    /// Per calendar day, oldest first (days without events included).
    pub days: Vec<Bucket>,
    /// Per hour of day, 00..23.
    pub hours: Vec<Bucket>,
    /// Per person, by name.
    pub people: Vec<PersonLine>,
    /// Unknown-face events in the range.
    pub unknown: u64,
    /// Recognised events in the range.
    pub recognized: u64,
}

/// Read access to the event log. See the module docs.
pub struct EventLog {
    conn: Mutex<Connection>,
    store: Mutex<EventStore>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens the event log in `db` (migrated already) with the gallery key file `key_path`.
    pub fn open(db: &Path, key_path: &Path) -> Result<EventLog> {
        let conn = crate::db::open(db)?;
        let opts = StoreOptions {
            retention_days: 0,
            retention_count: 0,
            snapshots: true,
        };
        // Retention is off here, so the clocks only date dead letters, which this store never
        // writes.
        let store = EventStore::open(db, key_path, opts, Arc::new(crate::base::RealClocks))?;
        Ok(EventLog {
            conn: Mutex::new(conn),
            store: Mutex::new(store),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events matching `f`, newest first.
    pub fn list(&self, f: &EventFilter) -> Result<Vec<EventRow>> {
        let limit = f.limit.unwrap_or(100);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::invalid(format!(
                "limit must be 1 to {MAX_PAGE}, got {limit}"
            )));
        }
        self.query(f, limit)
    }

    /// Events matching `f` (its `limit` ignored), newest first, at most `max` (CSV export).
    pub fn export(&self, f: &EventFilter, max: usize) -> Result<Vec<EventRow>> {
        self.query(f, max)
    }

    fn query(&self, f: &EventFilter, limit: usize) -> Result<Vec<EventRow>> {
        let mut sql = String::from(
            "SELECT id, kind, at, camera, track_id, person_id, person_name, similarity, x1, y1, x2, y2,
                    snapshot IS NOT NULL, visitor_id, frigate_id FROM event WHERE 1",
        );
        let mut args: Vec<Value> = Vec::new();
        let mut cond = |s: &str, v: Value| {
            sql.push_str(&format!(" AND {s} ?{}", args.len() + 1));
            args.push(v);
        };
        if let Some(c) = &f.camera {
            cond("camera =", Value::Text(c.clone()));
        }
        if let Some(p) = f.person_id {
            cond("person_id =", Value::Integer(p));
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
        if let Some(id) = &f.frigate_id {
            cond("frigate_id =", Value::Text(id.clone()));
        }
        if let Some(v) = f.visitor_id {
            // A merge points every visitor it absorbs at the survivor (`visitor.merged_into`,
            // one level: chains are flattened), and their events keep their old ids.
            args.push(Value::Integer(v));
            sql.push_str(&format!(
                " AND (visitor_id = ?{n} OR visitor_id IN \
                 (SELECT id FROM visitor WHERE merged_into = ?{n}))",
                n = args.len()
            ));
        }
        if f.unknown {
            sql.push_str(" AND kind = 'unknown'");
        } else if !f.include_left {
            sql.push_str(" AND kind IN ('recognized', 'unknown')");
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        let conn = self.conn();
        let mut st = conn.prepare_cached(&sql)?;
        let rows = st.query_map(params_from_iter(args), |r| {
            Ok(EventRow {
                id: r.get(0)?,
                kind: r.get(1)?,
                at_ms: r.get(2)?,
                camera: r.get(3)?,
                track_id: r.get(4)?,
                person_id: r.get(5)?,
                person: r.get(6)?,
                similarity: r.get(7)?,
                bbox: [r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?],
                snapshot: r.get(12)?,
                visitor_id: r.get(13)?,
                frigate_id: r.get(14)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The decrypted snapshot JPEG of event `id` (`None` if it has none);
    /// [`Kind::NotFound`](crate::Kind::NotFound) for an unknown id.
    pub fn snapshot(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot(id)
    }

    /// Whether event `id`'s face is a stranger's (see `EventStore::is_stranger`).
    pub fn is_stranger(&self, id: i64) -> Result<bool> {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_stranger(id)
    }

    /// Number of events of `person` (all kinds).
    pub fn count_for_person(&self, person: i64) -> Result<u64> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM event WHERE person_id = ?1",
            [person],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Counts per day and hour, per person and unknown, for `[since, until)`; bucket times are
    /// shifted by `tz_offset_min` minutes. See [`check_report_range`] for what is accepted.
    pub fn report(&self, since_ms: i64, until_ms: i64, tz_offset_min: i32) -> Result<Report> {
        check_report_range(since_ms, until_ms, tz_offset_min)?;
        let f = EventFilter {
            since_ms: Some(since_ms),
            until_ms: Some(until_ms),
            ..Default::default()
        };
        let mut rows = self.query(&f, MAX_REPORT_EVENTS + 1)?;
        if rows.len() > MAX_REPORT_EVENTS {
            return Err(Error::exhausted(format!(
                "the range holds more than {MAX_REPORT_EVENTS} events; choose a shorter range"
            )));
        }
        rows.reverse(); // oldest first
        Ok(aggregate(&rows, since_ms, until_ms, tz_offset_min))
    }
}

/// Checks a report's range: both bounds within [`MIN_REPORT_MS`]..=[`MAX_REPORT_MS`] (years
/// 2000 to 2100), `since < until`, at most [`MAX_REPORT_DAYS`] days, and the time zone offset
/// within ±14 h. Everything [`aggregate`] computes stays far from overflow after this.
pub fn check_report_range(since_ms: i64, until_ms: i64, tz_offset_min: i32) -> Result<()> {
    for (key, v) in [("since_ms", since_ms), ("until_ms", until_ms)] {
        if !(MIN_REPORT_MS..=MAX_REPORT_MS).contains(&v) {
            return Err(Error::invalid(format!(
                "{key} = {v} is outside the reportable time span: Unix milliseconds from \
                 {MIN_REPORT_MS} (2000-01-01) to {MAX_REPORT_MS} (2100-01-01)"
            )));
        }
    }
    if until_ms <= since_ms {
        return Err(Error::invalid(
            "report range is empty: until_ms must be after since_ms",
        ));
    }
    if !(-14 * 60..=14 * 60).contains(&tz_offset_min) {
        return Err(Error::invalid("tz_offset_min must be within ±840"));
    }
    if (until_ms - since_ms) / DAY_MS > MAX_REPORT_DAYS {
        return Err(Error::invalid(format!(
            "report range is longer than {MAX_REPORT_DAYS} days (ten years); narrow it"
        )));
    }
    Ok(())
}

use crate::base::civil_from_days as civil;

fn day_key(local_ms: i64) -> String {
    let (y, m, d) = civil(local_ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Aggregates `rows` (oldest first) into a [`Report`]. The range must have passed
/// [`check_report_range`].
pub fn aggregate(rows: &[EventRow], since_ms: i64, until_ms: i64, tz_offset_min: i32) -> Report {
    let off = i64::from(tz_offset_min) * 60_000;
    let mut days: BTreeMap<i64, Bucket> = BTreeMap::new();
    let first_day = (since_ms + off).div_euclid(86_400_000);
    let last_day = (until_ms - 1 + off).div_euclid(86_400_000);
    for d in first_day..=last_day.min(first_day + 3700) {
        days.insert(
            d,
            Bucket {
                key: day_key(d * 86_400_000),
                ..Default::default()
            },
        );
    }
    let mut hours: Vec<Bucket> = (0..24)
        .map(|h| Bucket {
            key: format!("{h:02}"),
            ..Default::default()
        })
        .collect();
    let mut people: BTreeMap<i64, PersonLine> = BTreeMap::new();
    let (mut unknown, mut recognized) = (0, 0);
    for r in rows {
        let local = r.at_ms + off;
        let day = days.entry(local.div_euclid(86_400_000)).or_default();
        let hour = &mut hours[(local.rem_euclid(86_400_000) / 3_600_000) as usize];
        match (r.kind.as_str(), r.person_id) {
            ("recognized", Some(p)) => {
                recognized += 1;
                day.recognized += 1;
                hour.recognized += 1;
                let line = people.entry(p).or_insert_with(|| PersonLine {
                    person_id: p,
                    name: String::new(),
                    first_seen_ms: r.at_ms,
                    last_seen_ms: r.at_ms,
                    visits: 1,
                    events: 0,
                });
                if r.at_ms - line.last_seen_ms > VISIT_GAP_MS {
                    line.visits += 1;
                }
                line.last_seen_ms = r.at_ms;
                line.events += 1;
                if let Some(n) = &r.person {
                    line.name = n.clone();
                }
            }
            ("unknown", _) => {
                unknown += 1;
                day.unknown += 1;
                hour.unknown += 1;
            }
            _ => {}
        }
    }
    let mut people: Vec<PersonLine> = people.into_values().collect();
    people.sort_by_key(|p| p.name.to_lowercase());
    Report {
        since_ms,
        until_ms,
        tz_offset_min,
        days: days.into_values().collect(),
        hours,
        people,
        unknown,
        recognized,
    }
}

/// Quotes a CSV field (RFC 4180) and neutralises spreadsheet formulas: the audit trail's rule
/// ([`crate::audit::csv::cell`]), one for every CSV the console writes.
pub fn csv_field(s: &str) -> String {
    crate::audit::csv::cell(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at: i64, kind: &str, p: Option<i64>) -> EventRow {
        EventRow {
            id: at,
            kind: kind.into(),
            at_ms: at,
            camera: "c".into(),
            track_id: 1,
            person_id: p,
            person: p.map(|p| format!("p{p}")),
            similarity: None,
            bbox: [0.0; 4],
            snapshot: false,
            visitor_id: None,
            frigate_id: None,
        }
    }

    #[test]
    fn report_counts_days_hours_and_visits() {
        let h = 3_600_000;
        let rows = vec![
            ev(h, "recognized", Some(1)),
            ev(h + 60_000, "recognized", Some(1)),
            ev(5 * h, "recognized", Some(1)),
            ev(25 * h, "unknown", None),
        ];
        let r = aggregate(&rows, 0, 48 * h, 0);
        assert_eq!(r.days.len(), 2);
        assert_eq!(r.days[0].key, "1970-01-01");
        assert_eq!((r.days[0].recognized, r.days[1].unknown), (3, 1));
        assert_eq!(r.hours[1].recognized, 2);
        assert_eq!(r.people[0].visits, 2);
        assert_eq!(r.people[0].events, 3);
        assert_eq!((r.unknown, r.recognized), (1, 3));
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("plain"), "plain");
    }
}
