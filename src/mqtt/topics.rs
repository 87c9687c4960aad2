//! MQTT topic names and slugs: the one place that spells every topic faced publishes or
//! subscribes to (documented in `docs/mqtt.md`; keep the two in step).
//!
//! Invariant: every name built here is a valid MQTT topic name (no `+`, `#`, NUL, no empty
//! level), because the device id is checked by [`check_topic_level`] and person and camera
//! names go through [`slugify`].

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Topic names for one device under one base topic (`faced/<device>/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    root: String,
    node_id: String,
    discovery_prefix: String,
}

impl Topics {
    /// Topics for `device_id` under `base_topic` (e.g. `faced`), with Home Assistant discovery
    /// under `discovery_prefix` (e.g. `homeassistant`). Errors if any of them cannot be used in a
    /// topic.
    pub fn new(base_topic: &str, device_id: &str, discovery_prefix: &str) -> Result<Topics> {
        check_topic_prefix(base_topic, "mqtt.base_topic")?;
        check_topic_prefix(discovery_prefix, "mqtt.discovery_prefix")?;
        check_topic_level(device_id, "device id")?;
        Ok(Topics {
            root: format!("{base_topic}/{device_id}"),
            node_id: format!("faced_{}", slugify(device_id)),
            discovery_prefix: discovery_prefix.to_owned(),
        })
    }

    /// `faced/<device>`: every other topic starts with this.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `faced/<device>/events`: one JSON message per event, from the outbox.
    pub fn events(&self) -> String {
        format!("{}/events", self.root)
    }

    /// `faced/<device>/availability`: retained `online`; the broker publishes `offline` (the
    /// last will) when the connection drops.
    pub fn availability(&self) -> String {
        format!("{}/availability", self.root)
    }

    /// `faced/<device>/person/<slug>`: retained JSON state of one person.
    pub fn person(&self, slug: &str) -> String {
        format!("{}/person/{slug}", self.root)
    }

    /// `faced/<device>/person/<slug>/state`: retained plain `home` / `not_home`.
    pub fn person_state(&self, slug: &str) -> String {
        format!("{}/person/{slug}/state", self.root)
    }

    /// `faced/<device>/last_person`: retained JSON about the last recognized person.
    pub fn last_person(&self) -> String {
        format!("{}/last_person", self.root)
    }

    /// `faced/<device>/visitors`: retained JSON summary of the unknown visitors (today's count,
    /// the most frequent, the last sighting).
    pub fn visitors(&self) -> String {
        format!("{}/visitors", self.root)
    }

    /// `faced/<device>/fleet`: retained JSON, this unit's view of its fleet (sync state, units).
    pub fn fleet(&self) -> String {
        format!("{}/fleet", self.root)
    }

    /// `faced/<device>/visitors/last/snapshot`: retained JPEG of the last unknown visitor's face.
    pub fn last_visitor_snapshot(&self) -> String {
        format!("{}/visitors/last/snapshot", self.root)
    }

    /// `faced/<device>/camera/<slug>/snapshot`: JPEG bytes of the latest snapshot.
    pub fn camera_snapshot(&self, camera_slug: &str) -> String {
        format!("{}/camera/{camera_slug}/snapshot", self.root)
    }

    /// `faced/<device>/cmd/<verb>`: a command to the daemon. faced subscribes to each known
    /// verb's topic, never to a wildcard (see `client.rs` for why).
    pub fn cmd(&self, verb: &str) -> String {
        format!("{}/cmd/{verb}", self.root)
    }

    /// `faced/<device>/cmd/result`: outcome of each command (not retained).
    pub fn cmd_result(&self) -> String {
        format!("{}/cmd/result", self.root)
    }

    /// The verb of a command topic, or `None` if `topic` is not one.
    pub fn cmd_verb<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.root.as_str())?
            .strip_prefix("/cmd/")
    }

    /// Home Assistant node id of this device: `faced_<device slug>`.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// `homeassistant/<component>/faced_<device>/<object_id>/config`.
    pub fn discovery(&self, component: &str, object_id: &str) -> String {
        format!(
            "{}/{component}/{}/{object_id}/config",
            self.discovery_prefix, self.node_id
        )
    }
}

/// `name` as a topic-level slug: lowercase ASCII letters and digits kept, every run of other
/// characters becomes one `_`, no leading or trailing `_`. May be empty (e.g. for a name in
/// another script); [`unique_slugs`] handles that.
pub fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// Unique, stable slugs for people given as `(person id, name)`.
///
/// The person with the lowest id keeps the plain slug of their name; a later person whose name
/// slugs the same gets `<slug>_<id>`, and a name with no ASCII letters or digits gets
/// `person_<id>`. Ids are never reused, so a person's slug does not change when others are
/// added.
pub fn unique_slugs(people: &[(i64, &str)]) -> HashMap<i64, String> {
    let mut sorted: Vec<(i64, &str)> = people.to_vec();
    sorted.sort_by_key(|p| p.0);
    let mut taken = std::collections::HashSet::new();
    let mut out = HashMap::new();
    for (id, name) in sorted {
        let base = slugify(name);
        let mut slug = if base.is_empty() {
            format!("person_{id}")
        } else if taken.contains(&base) {
            format!("{base}_{id}")
        } else {
            base
        };
        // Only possible when an earlier name already looks like `<slug>_<id>`.
        let mut n = 2;
        while taken.contains(&slug) {
            slug = format!("{}_{id}_{n}", slugify(name));
            n += 1;
        }
        taken.insert(slug.clone());
        out.insert(id, slug);
    }
    out
}

/// Checks that `s` can be one topic level: non-empty, at most 128 bytes, no `/`, `+`, `#`, NUL
/// or control characters. `what` names the input in the error.
pub fn check_topic_level(s: &str, what: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 128
        || s.chars()
            .any(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Err(Error::invalid(format!(
            "{what} {s:?} cannot be used in an MQTT topic: it must be 1 to 128 bytes without '/', \
             '+', '#' or control characters"
        )));
    }
    Ok(())
}

/// Checks a topic prefix such as `faced` or `home/faced`: non-empty levels, no wildcards.
fn check_topic_prefix(s: &str, key: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 256
        || s.split('/').any(str::is_empty)
        || s.chars().any(|c| matches!(c, '+' | '#') || c.is_control())
    {
        return Err(Error::invalid(format!(
            "{key} = {s:?} is not a valid topic prefix: use 1 to 256 bytes of non-empty levels \
             separated by '/', without '+', '#' or control characters (e.g. \"faced\")"
        )));
    }
    Ok(())
}

/// Checks a full topic name for publishing: 1 to 1024 bytes, no wildcards, NUL or empty levels.
pub fn check_publish_topic(topic: &str) -> Result<()> {
    if topic.is_empty()
        || topic.len() > 1024
        || topic.chars().any(|c| matches!(c, '+' | '#' | '\0'))
        || topic.split('/').any(str::is_empty)
    {
        return Err(Error::invalid(format!(
            "MQTT topic {topic:?} cannot be published to: it must be 1 to 1024 bytes of non-empty \
             levels without '+', '#' or NUL"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugify_lowercases_and_collapses() {
        assert_eq!(slugify("Anne-Marie  O'Neil"), "anne_marie_o_neil");
        assert_eq!(slugify("José"), "jos");
        assert_eq!(slugify("  Bob  "), "bob");
        assert_eq!(slugify("李雷"), "");
        assert_eq!(slugify("R2D2"), "r2d2");
    }

    #[test]
    fn unique_slugs_are_stable_and_unique() {
        let s = unique_slugs(&[
            (7, "Anne Marie"),
            (3, "Anne-Marie"),
            (9, "李雷"),
            (1, "Bob"),
        ]);
        assert_eq!(s[&3], "anne_marie");
        assert_eq!(s[&7], "anne_marie_7");
        assert_eq!(s[&9], "person_9");
        assert_eq!(s[&1], "bob");
        // A name that slugs to another's suffixed slug still ends up unique.
        let s = unique_slugs(&[(1, "a_b"), (2, "a_b_3"), (3, "a b")]);
        let mut all: Vec<_> = s.values().cloned().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 3, "{s:?}");
    }

    #[test]
    fn topics_are_built_and_checked() {
        let t = Topics::new("faced", "door-1", "homeassistant").unwrap();
        assert_eq!(t.events(), "faced/door-1/events");
        assert_eq!(t.person_state("bob"), "faced/door-1/person/bob/state");
        assert_eq!(
            t.cmd_verb("faced/door-1/cmd/reload_gallery"),
            Some("reload_gallery")
        );
        assert_eq!(t.cmd_verb("faced/other/cmd/x"), None);
        assert_eq!(
            t.discovery("camera", "camera_front"),
            "homeassistant/camera/faced_door_1/camera_front/config"
        );
        let e = Topics::new("faced", "a/b", "homeassistant").unwrap_err();
        assert!(e.to_string().contains("device id \"a/b\""), "{e}");
        let e = Topics::new("faced/#", "a", "homeassistant").unwrap_err();
        assert!(e.to_string().contains("mqtt.base_topic"), "{e}");
        assert!(check_publish_topic("a//b").is_err());
        assert!(check_publish_topic("faced/x/events").is_ok());
    }
}
