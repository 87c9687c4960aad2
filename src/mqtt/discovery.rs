//! Home Assistant MQTT discovery payloads (pure functions; published retained by the `mqtt`
//! thread on every connect, see `docs/mqtt.md`).
//!
//! One device per faced instance (`faced_<device>`), with a `device_tracker` per person
//! (`home` / `not_home`, attributes from the person's JSON state), a `camera` per camera (the
//! snapshot topic) and a `sensor` with the last recognized person. Every entity uses the
//! availability topic, so HA greys them out when faced goes offline.

use serde_json::{Value, json};

use super::topics::Topics;

/// One discovery message: retained `payload` on `topic`; an empty payload removes the entity.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryMessage {
    /// `homeassistant/<component>/faced_<device>/<object_id>/config`.
    pub topic: String,
    /// JSON config, or empty to remove the entity.
    pub payload: Vec<u8>,
}

fn device(t: &Topics, device_id: &str) -> Value {
    json!({
        "identifiers": [t.node_id()],
        "name": format!("faced {device_id}"),
        "manufacturer": "faced",
        "model": "faced face recognition",
        "sw_version": env!("CARGO_PKG_VERSION"),
    })
}

fn common(t: &Topics, device_id: &str, unique_id: String, name: &str) -> Value {
    json!({
        "name": name,
        "unique_id": unique_id,
        "object_id": unique_id,
        "availability_topic": t.availability(),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device(t, device_id),
        "origin": { "name": "faced", "sw_version": env!("CARGO_PKG_VERSION") },
    })
}

fn merge(mut base: Value, extra: Value) -> Vec<u8> {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    serde_json::to_vec(&base).expect("JSON values serialize")
}

/// Object id of a person's entity.
pub fn person_object_id(slug: &str) -> String {
    format!("person_{slug}")
}

/// Object id of a camera's entity.
pub fn camera_object_id(camera_slug: &str) -> String {
    format!("camera_{camera_slug}")
}

/// `device_tracker` for person `name` (slug `slug`).
pub fn person(t: &Topics, device_id: &str, slug: &str, name: &str) -> DiscoveryMessage {
    let object_id = person_object_id(slug);
    let payload = merge(
        common(t, device_id, format!("{}_{object_id}", t.node_id()), name),
        json!({
            "state_topic": t.person_state(slug),
            "payload_home": "home",
            "payload_not_home": "not_home",
            "source_type": "router",
            "json_attributes_topic": t.person(slug),
            "icon": "mdi:account",
        }),
    );
    DiscoveryMessage {
        topic: t.discovery("device_tracker", &object_id),
        payload,
    }
}

/// `camera` showing the snapshots of camera `name` (slug `slug`).
pub fn camera(t: &Topics, device_id: &str, slug: &str, name: &str) -> DiscoveryMessage {
    let object_id = camera_object_id(slug);
    let payload = merge(
        common(
            t,
            device_id,
            format!("{}_{object_id}", t.node_id()),
            &format!("Camera {name}"),
        ),
        json!({ "topic": t.camera_snapshot(slug) }),
    );
    DiscoveryMessage {
        topic: t.discovery("camera", &object_id),
        payload,
    }
}

/// `sensor` whose state is the name of the last recognized person.
pub fn last_person(t: &Topics, device_id: &str) -> DiscoveryMessage {
    let payload = merge(
        common(
            t,
            device_id,
            format!("{}_last_person", t.node_id()),
            "Last recognized person",
        ),
        json!({
            "state_topic": t.last_person(),
            "value_template": "{{ value_json.person }}",
            "json_attributes_topic": t.last_person(),
            "icon": "mdi:face-recognition",
        }),
    );
    DiscoveryMessage {
        topic: t.discovery("sensor", "last_person"),
        payload,
    }
}

/// The unknown visitors' entities: a `sensor` counting today's unknown visitors, a `sensor`
/// naming the last one (visitor id, with visits, camera and whether they are returning as
/// attributes), and a `camera` showing their face.
pub fn visitors(t: &Topics, device_id: &str) -> Vec<DiscoveryMessage> {
    let node = t.node_id();
    let today = merge(
        common(
            t,
            device_id,
            format!("{node}_unknown_visitors_today"),
            "Unknown visitors today",
        ),
        json!({
            "state_topic": t.visitors(),
            "value_template": "{{ value_json.today }}",
            "json_attributes_topic": t.visitors(),
            "state_class": "measurement",
            "icon": "mdi:account-question",
        }),
    );
    let last = merge(
        common(
            t,
            device_id,
            format!("{node}_last_unknown_visitor"),
            "Last unknown visitor",
        ),
        json!({
            "state_topic": t.visitors(),
            // "None" is Home Assistant's MQTT word for no value: the sensor shows as unknown
            // (empty) before the first visitor, not as a visitor called "none".
            "value_template": "{{ value_json.last.visitor_id if value_json.last else None }}",
            "json_attributes_topic": t.visitors(),
            "json_attributes_template": "{{ (value_json.last or {}) | tojson }}",
            "icon": "mdi:account-alert",
        }),
    );
    let face = merge(
        common(
            t,
            device_id,
            format!("{node}_last_unknown_visitor_face"),
            // Not the sensor's name: two entities of one device with one name are told apart
            // only by their entity ids.
            "Last unknown visitor face",
        ),
        json!({ "topic": t.last_visitor_snapshot() }),
    );
    vec![
        DiscoveryMessage {
            topic: t.discovery("sensor", "unknown_visitors_today"),
            payload: today,
        },
        DiscoveryMessage {
            topic: t.discovery("sensor", "last_unknown_visitor"),
            payload: last,
        },
        DiscoveryMessage {
            topic: t.discovery("camera", "last_unknown_visitor"),
            payload: face,
        },
    ]
}

/// The fleet's entity: a `sensor` whose state is this unit's gallery sync state (`in_sync`,
/// `syncing`, `disconnected`), with the other units as attributes.
pub fn fleet(t: &Topics, device_id: &str) -> DiscoveryMessage {
    let node = t.node_id();
    DiscoveryMessage {
        topic: t.discovery("sensor", "gallery_sync"),
        payload: merge(
            common(t, device_id, format!("{node}_gallery_sync"), "Gallery sync"),
            json!({
                "state_topic": t.fleet(),
                "value_template": "{{ value_json.state }}",
                "json_attributes_topic": t.fleet(),
                "icon": "mdi:sync",
            }),
        ),
    }
}

/// The empty retained message that removes the entity at `topic` from Home Assistant.
pub fn removal(topic: String) -> DiscoveryMessage {
    DiscoveryMessage {
        topic,
        payload: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_tracker_points_at_state_topics() {
        let t = Topics::new("faced", "door", "homeassistant").unwrap();
        let m = person(&t, "door", "alice", "Alice");
        assert_eq!(
            m.topic,
            "homeassistant/device_tracker/faced_door/person_alice/config"
        );
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["state_topic"], "faced/door/person/alice/state");
        assert_eq!(v["json_attributes_topic"], "faced/door/person/alice");
        assert_eq!(v["unique_id"], "faced_door_person_alice");
        assert_eq!(v["availability_topic"], "faced/door/availability");
        assert_eq!(v["device"]["identifiers"][0], "faced_door");
    }
}
