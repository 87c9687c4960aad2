//! Who is in view: the vision thread reports each person of the gallery that a live track on
//! some camera shows, at most once per [`EVERY`] per person, to one listener (the daemon passes
//! them to MQTT, where presence is decided: `home` while reported, `not_home` after
//! `mqtt.away_secs` without). Unlike events, sightings ignore the cool-down: someone who comes
//! back within it is in view again, even if no new `recognized` event says so.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest time between two reports of one person: presence needs to know they are still
/// there, not every frame.
pub const EVERY: Duration = Duration::from_secs(1);

/// A person of the gallery in view (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    /// Gallery person id.
    pub person_id: i64,
    /// Their name as the track's identity has it.
    pub name: String,
    /// The camera.
    pub camera: String,
    /// Capture time of the frame, wall-clock Unix ms.
    pub wall_ms: i64,
}

/// Receives sightings on the vision thread: must not block.
pub type Listener = Box<dyn Fn(Sighting) + Send + Sync>;

/// The listener and the time of each person's last report.
#[derive(Default)]
pub struct Sightings {
    inner: Mutex<(Option<Listener>, HashMap<i64, Instant>)>,
}

impl std::fmt::Debug for Sightings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sightings")
    }
}

impl Sightings {
    /// Sets the listener (replacing an earlier one).
    pub fn set_listener(&self, f: Listener) {
        self.lock().0 = Some(f);
    }

    /// Reports `s`, seen at `now`, unless its person was reported less than [`EVERY`] ago.
    pub fn seen(&self, s: Sighting, now: Instant) {
        let mut g = self.lock();
        let (listener, last) = &mut *g;
        let Some(f) = listener else {
            return;
        };
        if last
            .get(&s.person_id)
            .is_some_and(|t| now.saturating_duration_since(*t) < EVERY)
        {
            return;
        }
        last.insert(s.person_id, now);
        f(s);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Listener>, HashMap<i64, Instant>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn each_person_is_reported_at_most_once_a_second_and_only_with_a_listener() {
        let s = Sightings::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let of = |id: i64| Sighting {
            person_id: id,
            name: format!("p{id}"),
            camera: "door".into(),
            wall_ms: 0,
        };
        s.seen(of(1), at(0)); // no listener yet: dropped, and not counted
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        s.set_listener(Box::new(move |x| g.lock().unwrap().push(x.person_id)));
        for ms in (0..2500).step_by(100) {
            s.seen(of(1), at(ms));
            if ms == 300 {
                s.seen(of(2), at(ms));
            }
        }
        assert_eq!(
            *got.lock().unwrap(),
            vec![1, 2, 1, 1],
            "at 0, 300 (2), 1000, 2000"
        );
    }
}
