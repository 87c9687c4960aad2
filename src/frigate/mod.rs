//! Frigate companion mode (`[frigate]`): faced recognizes the people that an existing Frigate
//! NVR tracks, and writes the name back into Frigate as the event's sub label. Frigate's own
//! face recognition needs AVX2; Double Take, which used to connect Frigate to CompreFace, is no
//! longer released. A Pi running faced beside Frigate does the job on its CPU.
//!
//! Data flow: Frigate publishes every tracked object's changes on `<topic_prefix>/events`
//! (`{"type": "new"|"update"|"end", "before": {…}, "after": {…}}`, Frigate's MQTT docs). For a
//! `person` whose box is at least `min_area` px², on a camera in `cameras` (all when empty), and
//! without a sub label yet, faced fetches an image from Frigate's HTTP API — the event's snapshot
//! cropped to the person (`GET /api/events/<id>/snapshot.jpg?crop=1`) once Frigate has one,
//! before that the camera's newest frame (`GET /api/<camera>/latest.jpg`) cropped to the person's
//! box — finds and embeds the faces in it, and matches them against the gallery. The first
//! match at or above `threshold` is posted as the sub label (`POST /api/events/<id>/sub_label`,
//! `{"subLabel": NAME, "subLabelScore": SIMILARITY}`) and stored and published as a faced
//! `recognized` event carrying `"frigate": {"id", "camera"}`. At most `attempts` images per
//! event, one a second; when the event ends with faces seen but none recognized, one `unknown`
//! event (no sub label: Frigate keeps "person").
//!
//! Threads: `faced-frigate-mqtt` reads the broker and hands each message to `faced-frigate`
//! through a channel of 64 (full: the message is dropped and counted; the next update of the
//! same event comes a moment later); `faced-frigate` does the HTTP requests and the inference,
//! one event at a time, so a slow Frigate delays only Frigate's events, never the cameras.
//!
//! Trust: messages on the broker are not authenticated (Frigate does not sign them), so a
//! message only selects *which* of Frigate's events to look at; the image always comes from the
//! configured `url`. A forged message can waste an attempt, not inject a face. Events from
//! this mode never drive faced's GPIO relay (only the unit's own cameras do); an automation
//! can tell them apart by their `frigate` field. Frigate being down is logged (once per event)
//! and retried at the event's next update; it is not counted as an attempt.
//!
//! Limits: message fields are checked (ids and camera names 1–64 of `A-Za-z0-9._-`), images
//! over 8 MiB are refused before decoding, at most 256 events are followed at once (the oldest
//! is forgotten first), every HTTP request times out after `timeout_secs`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::base::{Backoff, Clocks, Shutdown, rfc3339_utc};
use crate::error::{Error, Result};
use crate::events::store::EventSender;
use crate::events::{Event, EventKind, FrigateRef, MAX_CAMERA_CHARS};
use crate::gallery::Gallery;
use crate::mqtt::MqttConfig;
use crate::pipeline::encode_jpeg;
use crate::vision::Analyzer;
use crate::vision::image::ImageLimits;

/// Largest image accepted from Frigate.
pub const MAX_IMAGE_BYTES: u64 = 8 << 20;
/// Events followed at once.
const MAX_FOLLOWED: usize = 256;
/// Messages waiting for the worker.
const QUEUE: usize = 64;

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
                    format!("{c:?}: Frigate camera names are 1 to 64 of A-Z a-z 0-9 . _ -"),
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
        Ok(())
    }
}

/// Frigate ids and camera names: what faced accepts from a message before it goes into a URL.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
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
}

/// Counters for logs and tests.
#[derive(Debug, Default)]
pub struct FrigateStats {
    /// Messages dropped because the worker was busy.
    pub dropped: AtomicU64,
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

impl Frigate {
    /// Connects to the broker of `mqtt` and starts following Frigate's events.
    pub fn start(
        cfg: &FrigateConfig,
        mqtt: &MqttConfig,
        device_id: &str,
        analyzer: Analyzer,
        gallery: Arc<Mutex<Gallery>>,
        events: EventSender,
        clocks: Arc<dyn Clocks>,
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
            let agent = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs_f32(cfg.timeout_secs)))
                    .http_status_as_error(false)
                    .build(),
            );
            let mut w = Worker {
                cfg,
                agent,
                analyzer,
                gallery,
                events,
                clocks,
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

/// What faced knows about one Frigate event it follows.
#[derive(Debug, Default)]
struct Followed {
    attempts: u32,
    last_try: Option<Instant>,
    done: bool,
    frigate_down_logged: bool,
    track: u64,
    /// The best unrecognized face so far: similarity to its nearest person, box, crop.
    unknown: Option<(Option<f32>, [f32; 4], Vec<u8>)>,
}

struct Worker {
    cfg: FrigateConfig,
    agent: ureq::Agent,
    analyzer: Analyzer,
    gallery: Arc<Mutex<Gallery>>,
    events: EventSender,
    clocks: Arc<dyn Clocks>,
    followed: HashMap<String, Followed>,
    order: VecDeque<String>,
    next_track: u64,
    stats: Arc<FrigateStats>,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Vec<u8>>, stop: &Shutdown) {
        while !stop.is_raised() {
            let payload = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(p) => p,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                // The broker thread is gone (only at stop): nothing more will come.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            match serde_json::from_slice::<Message>(&payload) {
                Ok(m) => self.handle(m),
                Err(e) => tracing::debug!("frigate: ignoring a message that is not an event: {e}"),
            }
        }
    }

    fn handle(&mut self, m: Message) {
        let o = &m.after;
        let end = m.kind == "end";
        if o.label != "person"
            || !valid_name(&o.id)
            || !valid_name(&o.camera)
            || !(self.cfg.cameras.is_empty() || self.cfg.cameras.contains(&o.camera))
        {
            return;
        }
        // Someone (a person, another tool, faced itself) already named it.
        let named = !o.sub_label.is_null();
        let area = o
            .area
            .or_else(|| o.bbox.map(|b| (b[2] - b[0]) * (b[3] - b[1])));
        let big_enough = area.is_some_and(|a| a >= self.cfg.min_area as f64);
        if !self.followed.contains_key(&o.id) {
            if end || named || !big_enough {
                return;
            }
            self.follow(&o.id);
        }
        let now = Instant::now();
        let st = self.followed.get_mut(&o.id).expect("followed");
        let due = !st.done
            && !named
            && big_enough
            && st.attempts < self.cfg.attempts
            && (end
                || st
                    .last_try
                    .is_none_or(|t| now - t >= Duration::from_secs(1)));
        if due {
            st.last_try = Some(now);
            self.attempt(o);
        }
        if end {
            self.finish(o);
        }
    }

    fn follow(&mut self, id: &str) {
        if self.order.len() >= MAX_FOLLOWED
            && let Some(old) = self.order.pop_front()
        {
            self.followed.remove(&old);
        }
        self.order.push_back(id.to_string());
        let track = self.next_track;
        self.next_track += 1;
        self.followed.insert(
            id.to_string(),
            Followed {
                track,
                ..Default::default()
            },
        );
    }

    /// One image of event `o`: fetch, analyse, and on a match label it.
    fn attempt(&mut self, o: &Object) {
        let img = match self.fetch(o) {
            Ok(img) => img,
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let st = self.followed.get_mut(&o.id).expect("followed");
                if !std::mem::replace(&mut st.frigate_down_logged, true) {
                    tracing::warn!(
                        frigate_event = %o.id,
                        camera = %o.camera,
                        "frigate: {e}; retrying at the event's next update"
                    );
                }
                return;
            }
        };
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let faces = match self.analyzer.analyze(&img) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(frigate_event = %o.id, "frigate: cannot analyse the image: {e}");
                return;
            }
        };
        let mut best: Option<(crate::gallery::Match, usize)> = None;
        let mut nearest: Option<(Option<f32>, usize)> = None;
        {
            let g = self.gallery.lock().unwrap_or_else(|p| p.into_inner());
            for (i, f) in faces.iter().enumerate() {
                let top = g
                    .search(&f.embedding, 1)
                    .ok()
                    .and_then(|v| v.into_iter().next());
                let sim = top.as_ref().map(|m| m.similarity);
                if let Some(m) = top.filter(|m| m.similarity >= self.cfg.threshold)
                    && best
                        .as_ref()
                        .is_none_or(|(b, _)| m.similarity > b.similarity)
                {
                    best = Some((m, i));
                }
                if nearest.is_none_or(|(s, _)| sim > s) {
                    nearest = Some((sim, i));
                }
            }
        }
        let st = self.followed.get_mut(&o.id).expect("followed");
        st.attempts += 1;
        if let Some((m, i)) = best {
            st.done = true;
            let track = st.track;
            if self.cfg.sub_label {
                self.post_sub_label(o, &m.name, m.similarity);
                let audit = self
                    .gallery
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .audit();
                audit.note_sub_label(&o.id, m.person.0, &m.name, m.similarity);
            }
            let face = &faces[i];
            let mut ev = self.event(EventKind::Recognized, o, track, face);
            ev.person = Some(m.name.clone());
            ev.person_id = Some(m.person.0);
            ev.similarity = Some(m.similarity);
            tracing::info!(
                frigate_event = %o.id,
                camera = %o.camera,
                person = %m.name,
                similarity = m.similarity,
                "frigate: recognized"
            );
            self.events.send(ev);
        } else if let Some((sim, i)) = nearest {
            let f = &faces[i];
            if st.unknown.as_ref().is_none_or(|(s, _, _)| sim > *s)
                && let Ok(crop) = encode_jpeg(&f.aligned, 90)
            {
                st.unknown = Some((sim, f.detection.bbox, crop));
            }
        }
    }

    /// The event ended: an `unknown` event if faces were seen and none was recognized.
    fn finish(&mut self, o: &Object) {
        self.order.retain(|x| x != &o.id);
        let Some(st) = self.followed.remove(&o.id) else {
            return;
        };
        if st.done {
            return;
        }
        if let Some((sim, bbox, crop)) = st.unknown {
            let wall = crate::base::unix_ms(self.clocks.realtime());
            let ev = Event {
                kind: EventKind::Unknown,
                event_id: 0,
                person: None,
                person_id: None,
                similarity: sim,
                camera: event_camera(&o.camera),
                track_id: st.track,
                bbox,
                time: rfc3339_utc(wall),
                ts_ms: wall,
                duration_ms: None,
                snapshot: true,
                snapshot_jpeg: Some(crop),
                frame_captured: None,
                frigate: Some(FrigateRef {
                    id: o.id.clone(),
                    camera: o.camera.clone(),
                }),
                visitor: None,
            };
            self.events.send(ev);
        }
    }

    fn event(&self, kind: EventKind, o: &Object, track: u64, face: &crate::vision::Face) -> Event {
        let wall = crate::base::unix_ms(self.clocks.realtime());
        let crop = encode_jpeg(&face.aligned, 90).ok();
        Event {
            kind,
            event_id: 0,
            person: None,
            person_id: None,
            similarity: None,
            camera: event_camera(&o.camera),
            track_id: track,
            bbox: face.detection.bbox,
            time: rfc3339_utc(wall),
            ts_ms: wall,
            duration_ms: None,
            snapshot: crop.is_some(),
            snapshot_jpeg: crop,
            frame_captured: None,
            frigate: Some(FrigateRef {
                id: o.id.clone(),
                camera: o.camera.clone(),
            }),
            visitor: None,
        }
    }

    /// The snapshot cropped to the person once Frigate has one, else the camera's newest frame
    /// cropped to the person's box (with a margin: the face is at the top of the box).
    fn fetch(&self, o: &Object) -> Result<RgbImage> {
        let base = self.cfg.url.trim_end_matches('/');
        if o.has_snapshot {
            let url = format!(
                "{base}/api/events/{}/snapshot.jpg?crop=1&bbox=0&timestamp=0&quality=95",
                o.id
            );
            return self.get_image(&url);
        }
        let url = format!("{base}/api/{}/latest.jpg?bbox=0&timestamp=0", o.camera);
        let img = self.get_image(&url)?;
        Ok(match o.bbox {
            Some(b) => crop(&img, b),
            None => img,
        })
    }

    fn get_image(&self, url: &str) -> Result<RgbImage> {
        let mut resp = self
            .agent
            .get(url)
            .call()
            .map_err(|e| Error::unavailable(format!("GET {url}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::unavailable(format!("GET {url}: HTTP {status}")));
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_IMAGE_BYTES)
            .read_to_vec()
            .map_err(|e| Error::unavailable(format!("GET {url}: {e}")))?;
        crate::vision::image::decode(&bytes, &ImageLimits::default())
            .map_err(|e| Error::invalid(format!("GET {url}: {}", e.message())))
    }

    /// Writes the name into Frigate; retried twice (0.5 s, 1 s) when Frigate does not answer.
    fn post_sub_label(&self, o: &Object, name: &str, similarity: f32) {
        let url = format!(
            "{}/api/events/{}/sub_label",
            self.cfg.url.trim_end_matches('/'),
            o.id
        );
        // Frigate takes up to 100 characters and a score in (0, 1].
        let label: String = name.chars().take(100).collect();
        let body = serde_json::json!({
            "subLabel": label,
            "subLabelScore": (similarity.clamp(0.01, 1.0) * 1000.0).round() / 1000.0,
        })
        .to_string();
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=3 {
            let r = self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.as_bytes());
            match r {
                Ok(resp) if resp.status().is_success() => {
                    self.stats.labelled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(resp) => {
                    // Frigate refused it (an event it no longer has): retrying will not help.
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(frigate_event = %o.id, "frigate: POST {url}: HTTP {}", resp.status());
                    return;
                }
                Err(e) if attempt == 3 => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(frigate_event = %o.id, "frigate: POST {url}: {e}; sub label not written");
                }
                Err(_) => {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
    }
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

/// `img` cut to `b` (`[x1, y1, x2, y2]`, clamped), widened by a quarter each side so a face at
/// the box's edge keeps its surroundings for the detector.
fn crop(img: &RgbImage, b: [f64; 4]) -> RgbImage {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let (bw, bh) = ((b[2] - b[0]).max(1.0), (b[3] - b[1]).max(1.0));
    let x1 = (b[0] - bw / 4.0).clamp(0.0, w - 1.0);
    let y1 = (b[1] - bh / 4.0).clamp(0.0, h - 1.0);
    let x2 = (b[2] + bw / 4.0).clamp(x1 + 1.0, w);
    let y2 = (b[3] + bh / 4.0).clamp(y1 + 1.0, h);
    image::imageops::crop_imm(
        img,
        x1 as u32,
        y1 as u32,
        (x2 - x1) as u32,
        (y2 - y1) as u32,
    )
    .to_image()
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
        ];
        for c in bad {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("frigate."), "{e}");
        }
    }

    #[test]
    fn message_fields_that_reach_a_url_are_checked() {
        assert!(valid_name("1607123955.475377-mxklsc"));
        assert!(valid_name("front_door"));
        for bad in [
            "",
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

    #[test]
    fn crops_stay_inside_the_frame() {
        let img = RgbImage::new(100, 80);
        assert_eq!(crop(&img, [40.0, 20.0, 60.0, 60.0]).dimensions(), (30, 60));
        assert_eq!(
            crop(&img, [-50.0, -50.0, 500.0, 500.0]).dimensions(),
            (100, 80)
        );
        let c = crop(&img, [99.0, 79.0, 99.0, 79.0]);
        assert!(c.width() >= 1 && c.height() >= 1);
    }
}
