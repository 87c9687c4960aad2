//! The MQTT outbox: the `mqtt_outbox` table (created by migration
//! `src/db/migrations/0002_mqtt_outbox.sql`, documented in `src/db/schema.sql`) holds messages
//! to publish, in order.
//!
//! * Writers (the events module) call [`enqueue`] inside the transaction that stores the event,
//!   so an event is stored and queued for publishing atomically, then poke
//!   [`MqttHandle::outbox_changed`](super::MqttHandle::outbox_changed) after the commit.
//! * The publisher (the `mqtt` thread, see `client.rs`) reads the oldest rows with
//!   [`Outbox::after`], publishes them with QoS 1, and deletes them with [`Outbox::delete`] in
//!   batches, only after the broker's PUBACK. A row is therefore published at least once;
//!   consumers deduplicate on the event's `event_id`.
//! * [`Outbox::trim`] bounds the table: the oldest rows beyond the limit are dropped (logged by
//!   the caller with the count).

use std::path::Path;

use rusqlite::{Connection, params};

use super::topics::check_publish_topic;
use crate::base::Clocks;
use crate::error::{Error, Result};

/// Largest payload the outbox accepts (also a CHECK in the table): 1 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// A message to publish through the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Full topic name, e.g. from [`Topics::events`](super::Topics::events).
    pub topic: String,
    /// Body as sent (for events: the event JSON).
    pub payload: Vec<u8>,
    /// Publish with the retain flag.
    pub retain: bool,
}

impl OutboxMessage {
    /// A non-retained message.
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        OutboxMessage {
            topic: topic.into(),
            payload: payload.into(),
            retain: false,
        }
    }

    /// An event for `faced/<device>/events`, serialized as JSON.
    pub fn event(topics: &super::Topics, event: &impl serde::Serialize) -> Result<Self> {
        let payload = serde_json::to_vec(event)
            .map_err(|e| Error::internal("cannot serialize event for MQTT").with_source(e))?;
        Ok(OutboxMessage::new(topics.events(), payload))
    }

    fn check(&self) -> Result<()> {
        check_publish_topic(&self.topic)?;
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::exhausted(format!(
                "MQTT message for {} is {} bytes, more than the outbox limit of {MAX_PAYLOAD_BYTES}",
                self.topic,
                self.payload.len()
            )));
        }
        Ok(())
    }
}

/// Queues `msg` for publishing, inside the caller's transaction `tx` (so it commits or rolls
/// back with whatever else `tx` writes), stamped with `clocks`' wall time (pass
/// [`MqttHandle::clocks`](super::MqttHandle::clocks)). Returns the row id, which is also its
/// publish order.
///
/// Errors: [`Kind::InvalidInput`](crate::Kind::InvalidInput) for a topic with wildcards or
/// empty levels, [`Kind::ResourceExhausted`](crate::Kind::ResourceExhausted) for a payload over
/// [`MAX_PAYLOAD_BYTES`], or a database error (e.g. the schema predates the outbox).
pub fn enqueue(
    tx: &rusqlite::Transaction,
    msg: &OutboxMessage,
    clocks: &dyn Clocks,
) -> Result<i64> {
    msg.check()?;
    tx.execute(
        "INSERT INTO mqtt_outbox (topic, payload, retain, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![msg.topic, msg.payload, msg.retain, clocks.unix_ms()],
    )?;
    Ok(tx.last_insert_rowid())
}

/// One queued row, as read by the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id = publish order.
    pub id: i64,
    /// The message.
    pub msg: OutboxMessage,
    /// When it was enqueued, Unix ms.
    pub created_at: i64,
}

/// The publisher's own connection to the database holding the outbox.
pub struct Outbox {
    conn: Connection,
}

impl Outbox {
    /// Opens `db` (which must already have the `mqtt_outbox` table: the gallery's
    /// `db::open_migrated` creates it).
    pub fn open(db: &Path) -> Result<Outbox> {
        let conn = crate::db::open(db).map_err(|e| {
            Error::precondition(format!(
                "cannot open database {} for the MQTT outbox",
                db.display()
            ))
            .with_source(e)
        })?;
        crate::db::require_table(
            &conn,
            "mqtt_outbox",
            &crate::db::describe(db),
            "open it with the gallery first (which upgrades its schema), or check that \
             gallery.db and the daemon point at the same file",
        )?;
        Ok(Outbox { conn })
    }

    /// Up to `limit` rows with `id > after`, oldest first.
    pub fn after(&self, after: i64, limit: usize) -> Result<Vec<OutboxRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, topic, payload, retain, created_at FROM mqtt_outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![after, limit as i64], |r| {
            Ok(OutboxRow {
                id: r.get(0)?,
                msg: OutboxMessage {
                    topic: r.get(1)?,
                    payload: r.get(2)?,
                    retain: r.get(3)?,
                },
                created_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes the rows `ids` (published and acknowledged) in one transaction.
    pub fn delete(&mut self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached("DELETE FROM mqtt_outbox WHERE id = ?1")?;
            for id in ids {
                st.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Number of queued rows.
    pub fn len(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM mqtt_outbox", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM mqtt_outbox)", [], |r| {
                r.get(0)
            })?)
    }

    /// Deletes the oldest rows beyond `max` rows; returns how many were dropped.
    pub fn trim(&mut self, max: u64) -> Result<u64> {
        let n = self.len()?;
        if n <= max {
            return Ok(0);
        }
        let excess = n - max;
        let dropped = self.conn.execute(
            "DELETE FROM mqtt_outbox WHERE id IN (SELECT id FROM mqtt_outbox ORDER BY id LIMIT ?1)",
            [excess as i64],
        )?;
        Ok(dropped as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::SimulatedClocks;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// The outbox's order is its row ids, never its wall-clock column: messages enqueued while
    /// the clock jumps back to 1970 and forward by years come out, and are trimmed, in the
    /// order they were written.
    #[test]
    fn order_and_trimming_follow_ids_across_wall_clock_jumps() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("faced.db");
        let clocks = SimulatedClocks::new();
        let mut conn = crate::db::open_migrated(&db, &clocks).unwrap();
        let walls = [
            SystemTime::now(),
            UNIX_EPOCH + Duration::from_secs(5),
            SystemTime::now() + Duration::from_secs(5 * 365 * 86_400),
            UNIX_EPOCH,
        ];
        let mut ids = Vec::new();
        for (i, w) in walls.iter().enumerate() {
            clocks.set_wall(*w);
            let tx = conn.transaction().unwrap();
            ids.push(
                enqueue(
                    &tx,
                    &OutboxMessage::new("faced/t", format!("m{i}")),
                    &clocks,
                )
                .unwrap(),
            );
            tx.commit().unwrap();
        }
        let mut ob = Outbox::open(&db).unwrap();
        let got: Vec<String> = ob
            .after(0, 10)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.msg.payload).unwrap())
            .collect();
        assert_eq!(got, ["m0", "m1", "m2", "m3"]);
        assert_eq!(ob.trim(2).unwrap(), 2);
        let left: Vec<i64> = ob.after(0, 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(left, ids[2..], "trim kept the newest by id");
    }
}
