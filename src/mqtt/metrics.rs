//! MQTT's figures for `/metrics` (docs/metrics.md): the connection, the counters the `mqtt`
//! thread keeps ([`MqttHandle::stats`]), the PUBLISH → PUBACK latency of outbox rows, and the
//! outbox's depth.
//!
//! The depth is counted in the database at scrape time on a connection of its own (opened at
//! the first scrape, kept after), so the `mqtt` thread never does extra work for it; a scrape
//! that cannot read it leaves it out.

use std::path::PathBuf;
use std::sync::Mutex;

use super::{ConnectionState, MqttHandle, outbox::Outbox};
use crate::metrics::{Scrape, Source};

/// MQTT as a [`Source`] of `/metrics`.
pub struct MqttMetrics {
    handle: MqttHandle,
    db: PathBuf,
    outbox: Mutex<Option<Outbox>>,
}

impl MqttMetrics {
    /// The figures of `handle`, whose outbox is in the database `db`.
    pub fn new(handle: MqttHandle, db: impl Into<PathBuf>) -> MqttMetrics {
        MqttMetrics {
            handle,
            db: db.into(),
            outbox: Mutex::new(None),
        }
    }

    fn outbox_len(&self) -> Option<u64> {
        let mut g = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Outbox::open(&self.db)
                .map_err(|e| tracing::debug!("metrics: cannot open the outbox: {e}"))
                .ok();
        }
        g.as_ref()?.len().ok()
    }
}

impl Source for MqttMetrics {
    fn collect(&self, out: &mut Scrape) {
        let state = self.handle.connection_state();
        if state == ConnectionState::Disabled {
            return;
        }
        out.gauge(
            "faced_mqtt_connected",
            "1 while connected to the MQTT broker, else 0.",
            &[],
            f64::from(u8::from(state == ConnectionState::Connected)),
        );
        let s = self.handle.stats();
        for (name, help, v) in [
            (
                "faced_mqtt_published",
                "Outbox messages acknowledged by the broker.",
                s.published,
            ),
            (
                "faced_mqtt_outbox_dropped",
                "Outbox messages dropped because the outbox was over mqtt.outbox_max_messages.",
                s.dropped,
            ),
            (
                "faced_mqtt_connects",
                "Successful connections to the broker (the first one included).",
                s.connects,
            ),
        ] {
            out.counter(name, help, &[], v as f64);
        }
        for (result, v) in [
            ("accepted", s.commands_accepted),
            ("rejected", s.commands_rejected),
        ] {
            out.counter(
                "faced_mqtt_commands",
                "Signed MQTT commands, by result (accepted, rejected).",
                &[("result", result)],
                v as f64,
            );
        }
        out.histogram(
            "faced_mqtt_publish_seconds",
            "From an outbox message's PUBLISH to the broker's PUBACK, seconds.",
            &[],
            &self.handle.inner.stats.publish_latency,
        );
        if let Some(n) = self.outbox_len() {
            out.gauge(
                "faced_mqtt_outbox_messages",
                "Messages in the MQTT outbox, waiting for the broker.",
                &[],
                n as f64,
            );
        }
    }
}
