//! Frigate companion mode (`[frigate]`): faced recognizes the people that an existing Frigate
//! NVR tracks, and writes the name back into Frigate as the event's sub label. Frigate's own
//! face recognition needs AVX2; Double Take, which used to connect Frigate to CompreFace, is no
//! longer released. A Pi running faced beside Frigate does the job on its CPU.
//!
//! Data flow: Frigate publishes every tracked object's changes on `<topic_prefix>/events`
//! (`{"type": "new"|"update"|"end", "before": {…}, "after": {…}}`, Frigate's MQTT docs). For a
//! `person` whose box is at least `min_area` px², on a camera in `cameras` (all when empty),
//! without a sub label yet, and that Frigate keeps (a snapshot or a recording: Frigate writes an
//! event to its database, and answers for it, only then — `should_update_db` in
//! frigate/events/maintainer.py), faced first **asks Frigate** about the id
//! (`GET /api/events/<id>`, `api::Api::event`). Frigate's answer, not the message, says which
//! camera and object it is: a `person` on a followed camera, the camera the message named. The
//! answer is kept with the followed event, so an event costs one question. Then faced fetches
//! an image from Frigate — the event's snapshot cropped to the person
//! (`GET /api/events/<id>/snapshot.jpg?crop=1`) once Frigate has one, before that the camera's
//! newest frame (`GET /api/<camera>/latest.jpg`) cropped to the person's box — finds and embeds
//! the faces in it, and matches them against the gallery. The first match at or above
//! `threshold` is posted as the sub label (`POST /api/events/<id>/sub_label`,
//! `{"subLabel": NAME, "subLabelScore": SIMILARITY}`) and, unless the person was seen within
//! `events.cooldown_secs` (the unit's one [`CoolDown`], shared with its own cameras), stored and
//! published as a faced `recognized` event carrying `"frigate": {"id", "camera"}` (stored in
//! `event.frigate_id`). At most `attempts` images per event, one a second; when the event ends
//! with faces seen but none recognized, one `unknown` event (no sub label: Frigate keeps
//! "person"), through the unknown-face cool-down of its camera.
//!
//! Threads: `faced-frigate-mqtt` reads the broker and hands each message to `faced-frigate`
//! through a channel of 64 (full: the message is dropped and counted; the next update of the
//! same event comes a moment later); `faced-frigate` does the HTTP requests and the inference,
//! one event at a time, so a slow Frigate delays only Frigate's events, never the cameras.
//!
//! Trust: messages on the broker are not authenticated (Frigate does not sign them; anyone who
//! may publish on Frigate's topic can send them), so a message is only a hint of *where to
//! look*. Nothing is fetched, stored, published or posted for an event Frigate has not
//! confirmed on `url`, and the image always comes from there. A forged message can cost one
//! question to Frigate, within the rate bound, not make a recognition. An id Frigate answers
//! 404 for is asked at most 3 times in all (`CONFIRM_TRIES`), a second apart (its database
//! write can trail its MQTT message), then refused and remembered; an event not confirmed
//! within 10 s (`CONFIRM_WINDOW`) is given up. An event Frigate says ended more than 5 minutes
//! ago (`ENDED_LONG_AGO`) is refused too: a message about it is a replay, and would make a
//! recognition of someone who is not there. A message naming another camera than Frigate's
//! answer is dropped (the answer stays: the real event's own messages still count). Events
//! from this mode never drive faced's GPIO relay (only the unit's own cameras do); an
//! automation can tell them apart by their `frigate` field. Frigate being down is logged (once
//! per event) and retried at the event's next update; it is not counted as an attempt.
//!
//! Limits (`gate`): ids must have Frigate's shape (`<unix time>-<6 of a-z 0-9>`, see
//! [`gate::is_event_id`]) and camera names 1–64 of `A-Za-z0-9_-`, or the message is dropped
//! and counted before any request; at most `events_per_minute` new events are followed per
//! camera (a token bucket; camera names Frigate never confirmed share one bucket), the excess
//! dropped and counted; drops are logged at most once a minute. Images over 8 MiB and event
//! descriptions over 1 MiB are refused, at most 256 events are followed at once (the oldest is
//! forgotten first), every HTTP request times out after `timeout_secs`. A flood naming a real
//! camera uses up that camera's bucket and delays its real events until it stops: broker ACLs
//! that let only Frigate publish on its topic close that (docs/frigate.md).

mod api;
pub mod gate;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::{Backoff, Clocks, Shutdown};
use crate::error::{Error, Result};
use crate::events::store::EventSender;
use crate::events::{CoolDown, MAX_CAMERA_CHARS};
use crate::gallery::Gallery;
use crate::mqtt::MqttConfig;
use crate::vision::Analyzer;
use api::Api;
use gate::Gate;
use worker::Worker;

pub use api::MAX_IMAGE_BYTES;

/// Events followed at once.
const MAX_FOLLOWED: usize = 256;
/// Messages waiting for the worker.
const QUEUE: usize = 64;
/// Times an id is asked about while Frigate answers 404, at least [`CONFIRM_RETRY`] apart.
const CONFIRM_TRIES: u32 = 3;
/// Shortest interval between two questions about one id.
const CONFIRM_RETRY: Duration = Duration::from_secs(1);
/// An event Frigate has not confirmed this long after its first message is given up.
const CONFIRM_WINDOW: Duration = Duration::from_secs(10);
/// An event Frigate says ended longer ago than this (by the two wall clocks, which NTP keeps
/// within seconds) is not looked at: a message about it is a replay, not a sighting.
const ENDED_LONG_AGO: Duration = Duration::from_secs(300);

/// `[frigate]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrigateConfig {
    /// Follow Frigate's events (needs `[mqtt]` on the broker Frigate publishes to).
    pub enabled: bool,
    /// Frigate's HTTP API, e.g. `http://frigate.lan:5000` (the unauthenticated internal port;
    /// plain http on a trusted network).
    pub url: String,
    /// Frigate's MQTT topic prefix (its `mqtt.topic_prefix`).
    pub topic_prefix: String,
    /// Frigate cameras to follow; empty = all.
    pub cameras: Vec<String>,
    /// Images tried per Frigate event before giving up on it.
    pub attempts: u32,
    /// Smallest person box, in px² of Frigate's detect resolution, worth a look.
    pub min_area: u32,
    /// Cosine similarity needed to name a person (as `cameras[].threshold`).
    pub threshold: f32,
    /// Write the recognized name back to Frigate as the event's sub label.
    pub sub_label: bool,
    /// Timeout of each HTTP request to Frigate, seconds.
    pub timeout_secs: f32,
    /// New Frigate events followed per camera per minute (a token bucket of as many): the
    /// bound on what messages on Frigate's topic can make faced do.
    pub events_per_minute: u32,
}

impl Default for FrigateConfig {
    fn default() -> Self {
        FrigateConfig {
            enabled: false,
            url: "http://frigate.local:5000".into(),
            topic_prefix: "frigate".into(),
            cameras: Vec::new(),
            attempts: 5,
            min_area: 2500,
            threshold: 0.5,
            sub_label: true,
            timeout_secs: 5.0,
            events_per_minute: 20,
        }
    }
}

impl FrigateConfig {
    /// Checks every key; the error names it.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, why: String| Err(Error::invalid(format!("frigate.{k}: {why}")));
        let Some(rest) = self.url.strip_prefix("http://") else {
            return bad(
                "url",
                format!(
                    "{:?}: use Frigate's http:// address, e.g. http://frigate.lan:5000",
                    self.url
                ),
            );
        };
        if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
            return bad("url", format!("{:?}: no host", self.url));
        }
        let p = &self.topic_prefix;
        if p.is_empty() || p.len() > 200 || p.contains(['+', '#']) || p.contains(char::is_control) {
            return bad(
                "topic_prefix",
                format!("{p:?}: 1 to 200 characters, no MQTT wildcards"),
            );
        }
        for c in &self.cameras {
            if !valid_name(c) {
                return bad(
                    "cameras",
                    format!("{c:?}: Frigate camera names are 1 to 64 of A-Z a-z 0-9 _ -"),
                );
            }
        }
        if !(1..=50).contains(&self.attempts) {
            return bad("attempts", format!("{}: use 1 to 50", self.attempts));
        }
        if self.min_area > 100_000_000 {
            return bad("min_area", format!("{}: at most 100000000", self.min_area));
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return bad("threshold", format!("{}: use (0, 1]", self.threshold));
        }
        if !(0.5..=60.0).contains(&self.timeout_secs) {
            return bad(
                "timeout_secs",
                format!("{}: use 0.5 to 60", self.timeout_secs),
            );
        }
        if !(1..=600).contains(&self.events_per_minute) {
            return bad(
                "events_per_minute",
                format!("{}: use 1 to 600", self.events_per_minute),
            );
        }
        Ok(())
    }
}

/// Camera names: what faced accepts from a message before it goes into a URL (ids: see
/// [`gate::is_event_id`]). Frigate's own rule for them (`REGEX_CAMERA_NAME` in
/// frigate/const.py, `^[a-zA-Z0-9_-]+$`), so `.` and `..` are never a camera.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// One message of `frigate/events`, the fields faced reads (Frigate's MQTT docs).
#[derive(Debug, Deserialize)]
struct Message {
    #[serde(rename = "type")]
    kind: String,
    after: Object,
}

/// A tracked object as Frigate describes it in `after`.
#[derive(Debug, Deserialize)]
struct Object {
    id: String,
    camera: String,
    label: String,
    /// `null`, a name, or `[name, score]` (Frigate 0.14+).
    #[serde(default)]
    sub_label: serde_json::Value,
    /// `[x1, y1, x2, y2]` in the camera's detect resolution.
    #[serde(rename = "box", default)]
    bbox: Option<[f64; 4]>,
    #[serde(default)]
    area: Option<f64>,
    #[serde(default)]
    has_snapshot: bool,
    #[serde(default)]
    has_clip: bool,
}

/// Counters for logs and tests.
#[derive(Debug, Default)]
pub struct FrigateStats {
    /// Messages dropped because the worker was busy.
    pub dropped: AtomicU64,
    /// Questions to Frigate about an id (`GET /api/events/<id>`).
    pub confirms: AtomicU64,
    /// Messages whose id does not have Frigate's shape.
    pub bad_ids: AtomicU64,
    /// New events over the per-camera rate bound.
    pub rate_limited: AtomicU64,
    /// Ids Frigate does not know (404 every time, or not confirmed in time).
    pub unknown_ids: AtomicU64,
    /// Messages whose camera or label Frigate's answer contradicts, or about an event it ended
    /// long ago.
    pub mismatched: AtomicU64,
    /// Recognitions within the person cool-down: sub label written, no faced event.
    pub cooled: AtomicU64,
    /// Images fetched and analysed.
    pub attempts: AtomicU64,
    /// Sub labels written.
    pub labelled: AtomicU64,
    /// Requests to Frigate that failed.
    pub errors: AtomicU64,
}

/// The running companion; stops when dropped.
pub struct Frigate {
    stop: Shutdown,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Counters.
    pub stats: Arc<FrigateStats>,
}

/// What [`Frigate::start`] works with besides its configuration.
pub struct FrigateDeps {
    /// The still-image analyzer (Frigate's images are stills, like console uploads).
    pub analyzer: Analyzer,
    /// The gallery to match against.
    pub gallery: Arc<Mutex<Gallery>>,
    /// Where events go (stored, then published).
    pub events: EventSender,
    /// The unit's cool-down (`pipeline::Handle::cooldown`): one person, one event, whichever
    /// camera saw them.
    pub cooldown: Arc<Mutex<CoolDown>>,
    /// Wall clock for event times, monotonic clock for everything timed.
    pub clocks: Arc<dyn Clocks>,
}

impl Frigate {
    /// Connects to the broker of `mqtt` and starts following Frigate's events.
    pub fn start(
        cfg: &FrigateConfig,
        mqtt: &MqttConfig,
        device_id: &str,
        deps: FrigateDeps,
    ) -> Result<Frigate> {
        cfg.validate()?;
        if !mqtt.enabled {
            return Err(Error::invalid(
                "frigate.enabled needs [mqtt] enabled on the broker Frigate publishes to",
            ));
        }
        let options = crate::mqtt::connection_options(
            mqtt,
            format!("{}-frigate", mqtt.effective_client_id(device_id)),
        )?;
        let topic = format!("{}/events", cfg.topic_prefix);
        let stop = Shutdown::new();
        let stats = Arc::new(FrigateStats::default());
        let (tx, rx) = sync_channel(QUEUE);
        let reader = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name("faced-frigate-mqtt".into())
                .spawn(move || read_broker(options, &topic, tx, &stop, &stats))
        };
        let worker = {
            let (stop, stats, cfg) = (stop.clone(), stats.clone(), cfg.clone());
            let now = deps.clocks.monotonic();
            let mut w = Worker {
                api: Api::new(&cfg),
                gate: Gate::new(&cfg.cameras, cfg.events_per_minute, now),
                cfg,
                deps,
                followed: HashMap::new(),
                order: VecDeque::new(),
                next_track: 1,
                stats,
            };
            std::thread::Builder::new()
                .name("faced-frigate".into())
                .spawn(move || w.run(rx, &stop))
        };
        let threads = [reader, worker]
            .into_iter()
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::internal("cannot start the frigate threads").with_source(e))?;
        tracing::info!(url = %cfg.url, topic = %format!("{}/events", cfg.topic_prefix), "following Frigate's events");
        Ok(Frigate {
            stop,
            threads,
            stats,
        })
    }
}

impl Drop for Frigate {
    fn drop(&mut self) {
        self.stop.raise();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn read_broker(
    options: rumqttc::MqttOptions,
    topic: &str,
    tx: SyncSender<Vec<u8>>,
    stop: &Shutdown,
    stats: &FrigateStats,
) {
    use rumqttc::{Event as MqttEvent, Packet, QoS};
    let (client, mut conn) = rumqttc::Client::new(options, 16);
    let mut backoff = Backoff::default();
    while !stop.is_raised() {
        match conn.recv_timeout(Duration::from_millis(500)) {
            Err(_) => continue, // timeout: look at `stop`
            Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                backoff = Backoff::default();
                // Clean session: subscribe at every connection.
                if let Err(e) = client.try_subscribe(topic, QoS::AtMostOnce) {
                    tracing::warn!("frigate: cannot subscribe to {topic}: {e}");
                }
            }
            Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => {
                if let Err(TrySendError::Full(_)) = tx.try_send(p.payload.to_vec()) {
                    let n = stats.dropped.fetch_add(1, Ordering::Relaxed);
                    if n.is_multiple_of(100) {
                        tracing::warn!(
                            dropped = n + 1,
                            "frigate: busy; dropping Frigate messages (the next update of each \
                             event is used)"
                        );
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let d = backoff.next_delay();
                tracing::warn!(
                    "frigate: broker connection: {e}; reconnecting in {:.1} s",
                    d.as_secs_f32()
                );
                stop.sleep(d);
            }
        }
    }
    let _ = client.disconnect();
}

/// Frigate's camera name as a faced camera name (events' `camera`: ≤ 32, `a-z 0-9 _ -`).
fn event_camera(frigate: &str) -> String {
    frigate
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '_',
        })
        .take(MAX_CAMERA_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_are_checked_and_named() {
        assert!(FrigateConfig::default().validate().is_ok());
        let bad = [
            FrigateConfig {
                url: "https://frigate:8971".into(),
                ..Default::default()
            },
            FrigateConfig {
                url: "http://".into(),
                ..Default::default()
            },
            FrigateConfig {
                topic_prefix: "frigate/#".into(),
                ..Default::default()
            },
            FrigateConfig {
                cameras: vec!["front door".into()],
                ..Default::default()
            },
            FrigateConfig {
                attempts: 0,
                ..Default::default()
            },
            FrigateConfig {
                threshold: 0.0,
                ..Default::default()
            },
            FrigateConfig {
                events_per_minute: 0,
                ..Default::default()
            },
        ];
        for c in bad {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("frigate."), "{e}");
        }
    }

    #[test]
    fn message_fields_that_reach_a_url_are_checked() {
        assert!(valid_name("front_door"));
        for bad in [
            "",
            ".",
            "..",
            "front.door",
            "../../api/config",
            "a/b",
            "a?b=1",
            "x y",
            &"a".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(event_camera("Front.Door"), "front_door");
        assert_eq!(event_camera(&"c".repeat(64)).len(), MAX_CAMERA_CHARS);
    }
}
