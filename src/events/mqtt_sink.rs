//! The [`EventSink`] that feeds MQTT: each stored event's JSON is enqueued into the MQTT outbox
//! (`crate::mqtt::outbox`) inside the event's own transaction; after the commit the publisher
//! is woken and the event's snapshot becomes the camera's retained snapshot. Presence does not
//! come from events (the cool-down hides a person who comes back) but from the pipeline's
//! sightings ([`crate::mqtt::MqttHandle::person_seen`]); only a Frigate event, which no camera
//! of this unit saw, counts as a sighting here. Runs on the event writer thread; every call is
//! non-blocking.

use super::{Event, EventKind, EventSink};
use crate::error::Result;
use crate::mqtt::{MqttHandle, OutboxMessage, PersonSeen, Subject, enqueue};

/// What to publish once the transaction commits: a Frigate sighting, and a camera's snapshot
/// (with whom it shows).
type AfterCommit = (
    Option<PersonSeen>,
    Option<(String, Vec<u8>, Option<Subject>)>,
);

/// A Frigate `recognized` event as a sighting (see the module docs).
fn frigate_sighting(event: &Event) -> Option<PersonSeen> {
    match (event.kind, event.person_id, &event.person, &event.frigate) {
        (EventKind::Recognized, Some(id), Some(name), Some(_)) => Some(PersonSeen {
            person_id: id,
            name: name.clone(),
            camera: event.camera.clone(),
            wall_ms: event.ts_ms,
        }),
        _ => None,
    }
}

/// Whom the event's snapshot shows, so that erasing them withdraws it.
fn shows(event: &Event) -> Option<Subject> {
    match (event.person_id, &event.visitor) {
        (Some(p), _) => Some(Subject::Person(p)),
        (None, Some(v)) => Some(Subject::Visitor(v.visitor_id)),
        (None, None) => None,
    }
}

/// Publishes events through the MQTT outbox.
pub struct MqttSink {
    mqtt: MqttHandle,
    after_commit: Vec<AfterCommit>,
}

impl std::fmt::Debug for MqttSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MqttSink")
    }
}

impl MqttSink {
    /// A sink publishing through `mqtt` (which must be enabled).
    pub fn new(mqtt: MqttHandle) -> MqttSink {
        MqttSink {
            mqtt,
            after_commit: Vec::new(),
        }
    }
}

impl EventSink for MqttSink {
    fn on_event(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        event: &Event,
        json: &str,
    ) -> Result<()> {
        enqueue(
            tx,
            &OutboxMessage::new(self.mqtt.topics().events(), json.as_bytes().to_vec()),
            self.mqtt.clocks(),
        )?;
        let state = frigate_sighting(event);
        let snap = event
            .snapshot_jpeg
            .clone()
            .map(|j| (event.camera.clone(), j, shows(event)));
        self.after_commit.push((state, snap));
        Ok(())
    }

    fn unstored(&mut self, event: &Event, json: &str) {
        self.mqtt.publish_unstored_event(json.as_bytes().to_vec());
        if let Some(s) = frigate_sighting(event) {
            self.mqtt.person_seen(s);
        }
        if let Some(j) = &event.snapshot_jpeg {
            self.mqtt
                .publish_snapshot(&event.camera, j.clone(), shows(event));
        }
    }

    fn rolled_back(&mut self) {
        // Those events were not stored: no presence or snapshot for them (a retry queues its
        // own).
        self.after_commit.clear();
    }

    fn committed(&mut self) {
        self.mqtt.outbox_changed();
        for (state, snap) in self.after_commit.drain(..) {
            if let Some(s) = state {
                self.mqtt.person_seen(s);
            }
            if let Some((camera, jpeg, who)) = snap {
                self.mqtt.publish_snapshot(&camera, jpeg, who);
            }
        }
    }
}
