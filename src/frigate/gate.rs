//! What a `frigate/events` message must pass before faced spends a request to Frigate on it:
//! an id of Frigate's shape, not an id Frigate already disowned, and the per-camera rate bound
//! on new events. Everything here is arithmetic on the `faced-frigate` thread (no I/O, no
//! lock); the drops are counted in [`FrigateStats`] and summarised in the log at most once per
//! [`LOG_EVERY`], so a flood of forged messages costs a few lines, not one per message.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::FrigateStats;

/// Cameras with a rate bucket of their own when `frigate.cameras` is empty (all): learnt from
/// Frigate's answers, so a message cannot create one by naming a camera.
const MAX_LEARNT_CAMERAS: usize = 64;
/// Ids remembered as disowned by Frigate (the oldest is forgotten first).
const MAX_REFUSED: usize = 1024;
/// Shortest interval between two log lines about dropped messages.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// True for an id of the shape Frigate gives its events: `<frame time>-<6 random>`, e.g.
/// `1607123955.475377-mxklsc`. Frigate builds it in `NorfairTracker.register`
/// (frigate/track/norfair_tracker.py: `f"{obj['frame_time']}-{rand_id}"` with `rand_id` six of
/// `string.ascii_lowercase + string.digits`), and the same way for events created through its
/// API (frigate/events/external.py, `f"{now}-{rand_id}"`). The time is Python's `str()` of a
/// Unix time in seconds with microseconds: 1 to 10 digits, a dot, 1 to 6 decimals (trailing
/// zeros dropped, so `1607123955.0` happens). Frigate's `Event.id` column holds at most 30
/// characters (frigate/models.py); this shape holds at most 24. Anything else, `.` and `..`
/// included, is not one of Frigate's events and never goes into a URL.
pub fn is_event_id(s: &str) -> bool {
    let Some((time, rand)) = s.split_once('-') else {
        return false;
    };
    let Some((secs, frac)) = time.split_once('.') else {
        return false;
    };
    let digits =
        |x: &str, max: usize| (1..=max).contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit());
    digits(secs, 10)
        && digits(frac, 6)
        && rand.len() == 6
        && rand
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// A token bucket: holds up to `per_minute` tokens and refills evenly over a minute, so a burst
/// of a minute's worth passes and a flood is cut to the steady rate.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(per_minute: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(per_minute),
            at: now,
        }
    }

    fn take(&mut self, per_minute: u32, now: Instant) -> bool {
        let cap = f64::from(per_minute);
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * cap / 60.0;
        self.tokens = (self.tokens + refill).min(cap);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a message was dropped before any request (the log's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The id does not have Frigate's shape.
    BadId,
    /// Over the camera's rate bound.
    RateBound,
    /// Frigate does not know the id (it answered 404 every time it was asked).
    Unknown,
    /// Frigate knows the id, but as another camera or label than the message said.
    Mismatch,
    /// Frigate knows the id as an event that ended long ago (a replay).
    Ended,
}

impl DropReason {
    fn what(self) -> &'static str {
        match self {
            DropReason::BadId => "ids not of Frigate's shape",
            DropReason::RateBound => "new events over frigate.events_per_minute",
            DropReason::Unknown => "ids Frigate does not know",
            DropReason::Mismatch => "ids whose camera or label Frigate contradicts",
            DropReason::Ended => "ids of events Frigate ended long ago",
        }
    }
}

/// The checks of the module docs, and their counts.
#[derive(Debug)]
pub struct Gate {
    per_minute: u32,
    /// `frigate.cameras` when set: only these have buckets, and others never get here.
    fixed: bool,
    buckets: HashMap<String, Bucket>,
    /// Shared by every camera name Frigate has not confirmed yet (`frigate.cameras` empty).
    unconfirmed_cameras: Bucket,
    refused: HashSet<String>,
    refused_order: VecDeque<String>,
    /// Drops since the last log line, by reason.
    pending: HashMap<DropReason, u64>,
    last_log: Option<Instant>,
}

impl Gate {
    /// A gate for `cameras` (`frigate.cameras`; empty = all) at `per_minute` new events per
    /// camera.
    pub fn new(cameras: &[String], per_minute: u32, now: Instant) -> Gate {
        Gate {
            per_minute,
            fixed: !cameras.is_empty(),
            buckets: cameras
                .iter()
                .map(|c| (c.clone(), Bucket::full(per_minute, now)))
                .collect(),
            unconfirmed_cameras: Bucket::full(per_minute, now),
            refused: HashSet::new(),
            refused_order: VecDeque::new(),
            pending: HashMap::new(),
            last_log: None,
        }
    }

    /// Whether a new event on `camera` (as the message names it) may be followed now: takes a
    /// token of that camera's bucket, or of the bucket shared by cameras Frigate has not
    /// confirmed yet.
    pub fn admit(&mut self, camera: &str, now: Instant) -> bool {
        let pm = self.per_minute;
        match self.buckets.get_mut(camera) {
            Some(b) => b.take(pm, now),
            None => self.unconfirmed_cameras.take(pm, now),
        }
    }

    /// Frigate confirmed an event on `camera`: from now on it has a bucket of its own (all
    /// cameras mode, up to `MAX_LEARNT_CAMERAS`).
    pub fn learn(&mut self, camera: &str, now: Instant) {
        if !self.fixed
            && self.buckets.len() < MAX_LEARNT_CAMERAS
            && !self.buckets.contains_key(camera)
        {
            self.buckets
                .insert(camera.to_string(), Bucket::full(self.per_minute, now));
        }
    }

    /// Whether Frigate disowned `id` before.
    pub fn is_refused(&self, id: &str) -> bool {
        self.refused.contains(id)
    }

    /// Remembers that Frigate disowned `id`: its later messages cost nothing.
    pub fn refuse(&mut self, id: &str) {
        if self.refused.insert(id.to_string()) {
            self.refused_order.push_back(id.to_string());
            if self.refused_order.len() > MAX_REFUSED
                && let Some(old) = self.refused_order.pop_front()
            {
                self.refused.remove(&old);
            }
        }
    }

    /// Counts a drop, and logs the drops so far if the last line is [`LOG_EVERY`] old.
    pub fn dropped(&mut self, why: DropReason, stats: &FrigateStats, now: Instant) {
        let counter = match why {
            DropReason::BadId => &stats.bad_ids,
            DropReason::RateBound => &stats.rate_limited,
            DropReason::Unknown => &stats.unknown_ids,
            DropReason::Mismatch | DropReason::Ended => &stats.mismatched,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *self.pending.entry(why).or_default() += 1;
        self.log_due(now);
    }

    /// Logs the drops counted since the last line, if any and if it is time (called on every
    /// message and every idle half second, so a count is not held back long).
    pub fn log_due(&mut self, now: Instant) {
        if self.pending.is_empty()
            || self
                .last_log
                .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            return;
        }
        self.last_log = Some(now);
        let mut parts: Vec<(DropReason, u64)> = self.pending.drain().collect();
        parts.sort_by_key(|(d, _)| *d as u8);
        let text = parts
            .iter()
            .map(|(d, n)| format!("{n} {}", d.what()))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(
            "frigate: dropped messages: {text} (next summary in {} s at the earliest; anyone who \
             may publish on Frigate's topic can send these: docs/frigate.md, \"Trust\")",
            LOG_EVERY.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_frigates_shape() {
        for good in [
            "1607123955.475377-mxklsc",
            "1764500001.2-alice1",
            "1607123955.0-000000",
            "1.5-abcdef",
        ] {
            assert!(is_event_id(good), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../api/config",
            "1607123955-mxklsc",
            "1607123955.475377",
            "1607123955.475377-mxkls",
            "1607123955.475377-mxklscx",
            "1607123955.475377-MXKLSC",
            "1607123955.4753771-mxklsc",
            "16071239551.475377-mxklsc",
            "1607123955.475377-mx.lsc",
            "1607123955.475377-mx-lsc",
            ".475377-mxklsc",
            "1607123955.-mxklsc",
            "+607123955.475377-mxklsc",
            "1607123955.475377-mxklsc/../x",
            "1607123955.475377-mxklsc\n",
            "１607123955.475377-mxklsc",
        ] {
            assert!(!is_event_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_rate_bound_is_per_camera_and_refills_evenly() {
        let t0 = Instant::now();
        let stats = FrigateStats::default();
        let mut g = Gate::new(&["porch".into(), "yard".into()], 6, t0);
        // A minute's worth passes at once, then nothing until a token refills (10 s each).
        for _ in 0..6 {
            assert!(g.admit("porch", t0));
        }
        assert!(!g.admit("porch", t0));
        assert!(!g.admit("porch", t0 + Duration::from_secs(9)));
        // The yard has its own bucket.
        assert!(g.admit("yard", t0 + Duration::from_secs(9)));
        assert!(g.admit("porch", t0 + Duration::from_secs(10)));
        assert!(!g.admit("porch", t0 + Duration::from_secs(11)));
        // 20 a second for a minute: six more.
        let mut passed = 0;
        for i in 0..1200 {
            if g.admit(
                "porch",
                t0 + Duration::from_secs(11) + Duration::from_millis(50 * i),
            ) {
                passed += 1;
            }
        }
        assert!((5..=6).contains(&passed), "{passed}");
        g.dropped(DropReason::RateBound, &stats, t0);
        assert_eq!(stats.rate_limited.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn unconfirmed_camera_names_share_one_bucket() {
        let t0 = Instant::now();
        let mut g = Gate::new(&[], 3, t0);
        // Made-up camera names do not each get a bucket.
        assert!(g.admit("a", t0) && g.admit("b", t0) && g.admit("c", t0));
        assert!(!g.admit("d", t0));
        // A camera Frigate confirmed gets its own.
        g.learn("porch", t0);
        assert!(g.admit("porch", t0));
        assert!(!g.admit("e", t0));
        for _ in 0..MAX_LEARNT_CAMERAS + 10 {
            g.learn(&format!("cam{}", g.buckets.len()), t0);
        }
        assert_eq!(g.buckets.len(), MAX_LEARNT_CAMERAS);
        // Configured cameras: nothing is learnt.
        let mut g = Gate::new(&["porch".into()], 3, t0);
        g.learn("yard", t0);
        assert_eq!(g.buckets.len(), 1);
    }

    #[test]
    fn refused_ids_are_remembered_within_a_bound() {
        let mut g = Gate::new(&[], 3, Instant::now());
        g.refuse("1.1-aaaaaa");
        g.refuse("1.1-aaaaaa");
        assert!(g.is_refused("1.1-aaaaaa"));
        for i in 0..MAX_REFUSED {
            g.refuse(&format!("{i}.1-bbbbbb"));
        }
        assert!(!g.is_refused("1.1-aaaaaa"), "the oldest is forgotten first");
        assert_eq!(g.refused.len(), MAX_REFUSED);
        assert_eq!(g.refused_order.len(), MAX_REFUSED);
    }
}
