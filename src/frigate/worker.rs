//! The `faced-frigate` thread: takes Frigate's event messages from the broker thread, one at a
//! time, and for each decides, in order, whether it is worth anything (the cheap checks of
//! `gate`), whether Frigate vouches for the event (`api::Api::event`, asked once per event),
//! and whether an image is due; then fetches, analyses, labels and reports as the module docs
//! of `frigate` say. The only state is here, owned by this thread: the followed events (at
//! most [`MAX_FOLLOWED`]) and the gate.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::api::{Api, Confirmation};
use super::gate::{DropReason, Gate, is_event_id};
use super::{
    CONFIRM_RETRY, CONFIRM_TRIES, CONFIRM_WINDOW, ENDED_LONG_AGO, FrigateConfig, FrigateDeps,
    FrigateStats, MAX_FOLLOWED, Message, Object, event_camera, valid_name,
};
use crate::base::{Shutdown, rfc3339_utc};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind, FrigateRef};
use crate::pipeline::encode_jpeg;

/// Whether Frigate vouched for a followed event.
#[derive(Debug)]
enum Confirm {
    /// Not yet: questions asked so far that Frigate answered 404, when the last question was
    /// asked (any answer), and when the event was first followed.
    Pending {
        not_found: u32,
        asked: Option<Instant>,
        since: Instant,
    },
    /// Frigate's own camera name for it (the one every later message must name too), and
    /// whether Frigate said it had a snapshot.
    Known { camera: String, snapshot: bool },
}

/// What faced knows about one Frigate event it follows.
#[derive(Debug)]
pub(super) struct Followed {
    confirm: Confirm,
    attempts: u32,
    last_try: Option<Instant>,
    done: bool,
    frigate_down_logged: bool,
    track: u64,
    /// The best unrecognized face so far: similarity to its nearest person, box, crop.
    unknown: Option<(Option<f32>, [f32; 4], Vec<u8>)>,
}

pub(super) struct Worker {
    pub(super) cfg: FrigateConfig,
    pub(super) api: Api,
    pub(super) gate: Gate,
    pub(super) deps: FrigateDeps,
    pub(super) followed: HashMap<String, Followed>,
    pub(super) order: VecDeque<String>,
    pub(super) next_track: u64,
    pub(super) stats: Arc<FrigateStats>,
}

impl Worker {
    pub(super) fn run(&mut self, rx: Receiver<Vec<u8>>, stop: &Shutdown) {
        while !stop.is_raised() {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(payload) => match serde_json::from_slice::<Message>(&payload) {
                    Ok(m) => self.handle(m),
                    Err(e) => {
                        tracing::debug!("frigate: ignoring a message that is not an event: {e}")
                    }
                },
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // The broker thread is gone (only at stop): nothing more will come.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let now = self.deps.clocks.monotonic();
            self.give_up_unconfirmed(now);
            self.gate.log_due(now);
        }
    }

    fn follows(&self, camera: &str) -> bool {
        self.cfg.cameras.is_empty() || self.cfg.cameras.iter().any(|c| c == camera)
    }

    fn handle(&mut self, m: Message) {
        let now = self.deps.clocks.monotonic();
        let o = &m.after;
        let end = m.kind == "end";
        // Other objects and cameras are Frigate's ordinary traffic, not worth a count.
        if o.label != "person" || !valid_name(&o.camera) || !self.follows(&o.camera) {
            return;
        }
        if !is_event_id(&o.id) {
            self.gate.dropped(DropReason::BadId, &self.stats, now);
            return;
        }
        if self.gate.is_refused(&o.id) {
            return;
        }
        // Someone (a person, another tool, faced itself) already named it.
        let named = !o.sub_label.is_null();
        let area = o
            .area
            .or_else(|| o.bbox.map(|b| (b[2] - b[0]) * (b[3] - b[1])));
        let big_enough = area.is_some_and(|a| a >= self.cfg.min_area as f64);
        if !self.followed.contains_key(&o.id) {
            // Without a snapshot or a recording Frigate has not stored the event: nothing to
            // confirm yet (its next update may bring one).
            if end || named || !big_enough || !(o.has_snapshot || o.has_clip) {
                return;
            }
            if !self.gate.admit(&o.camera, now) {
                self.gate.dropped(DropReason::RateBound, &self.stats, now);
                return;
            }
            self.follow(&o.id, now);
        }
        if !self.confirmed(o, now) {
            if end {
                self.forget(&o.id);
            }
            return;
        }
        let st = self.followed.get_mut(&o.id).expect("followed");
        let due = !st.done
            && !named
            && big_enough
            && st.attempts < self.cfg.attempts
            && (end
                || st
                    .last_try
                    .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1)));
        if due {
            st.last_try = Some(now);
            self.attempt(o, now);
        }
        if end {
            self.finish(o, now);
        }
    }

    fn follow(&mut self, id: &str, now: Instant) {
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
                confirm: Confirm::Pending {
                    not_found: 0,
                    asked: None,
                    since: now,
                },
                attempts: 0,
                last_try: None,
                done: false,
                frigate_down_logged: false,
                track,
                unknown: None,
            },
        );
    }

    fn forget(&mut self, id: &str) -> Option<Followed> {
        self.order.retain(|x| x != id);
        self.followed.remove(id)
    }

    /// Forgets `id` and remembers that Frigate disowned it.
    fn refuse(&mut self, id: &str, why: DropReason, now: Instant) {
        self.forget(id);
        self.gate.refuse(id);
        self.gate.dropped(why, &self.stats, now);
    }

    /// Whether Frigate vouched for the event of `o` and for this message's camera: asks it
    /// the first time, and again (a second apart, a bounded number of times) while it answers
    /// 404 or does not answer.
    fn confirmed(&mut self, o: &Object, now: Instant) -> bool {
        let st = self.followed.get_mut(&o.id).expect("followed");
        let (not_found, since) = match &st.confirm {
            Confirm::Known { camera, .. } if *camera == o.camera => return true,
            Confirm::Known { .. } => {
                // A message about a real event that names another camera: not Frigate's.
                self.gate.dropped(DropReason::Mismatch, &self.stats, now);
                return false;
            }
            Confirm::Pending { asked: Some(t), .. }
                if now.saturating_duration_since(*t) < CONFIRM_RETRY =>
            {
                return false;
            }
            Confirm::Pending {
                not_found, since, ..
            } => (*not_found, *since),
        };
        st.confirm = Confirm::Pending {
            not_found,
            asked: Some(now),
            since,
        };
        self.stats.confirms.fetch_add(1, Ordering::Relaxed);
        match self.api.event(&o.id) {
            Ok(Confirmation::Known(ev)) => {
                if ev.id != o.id || ev.label != "person" || !self.follows(&ev.camera) {
                    // Frigate's own answer rules it out: not asked about again.
                    self.refuse(&o.id, DropReason::Mismatch, now);
                    return false;
                }
                let wall_s = crate::base::unix_ms(self.deps.clocks.realtime()) as f64 / 1000.0;
                if ev
                    .end_time
                    .is_some_and(|end| wall_s - end > ENDED_LONG_AGO.as_secs_f64())
                {
                    // An old event replayed: it would be a recognition that is not happening.
                    self.refuse(&o.id, DropReason::Ended, now);
                    return false;
                }
                self.gate.learn(&ev.camera, now);
                let st = self.followed.get_mut(&o.id).expect("followed");
                st.confirm = Confirm::Known {
                    camera: ev.camera.clone(),
                    snapshot: ev.has_snapshot,
                };
                // Named in Frigate already (the message may be older than the answer).
                if !ev.sub_label.is_null() {
                    st.done = true;
                }
                if ev.camera != o.camera {
                    self.gate.dropped(DropReason::Mismatch, &self.stats, now);
                    return false;
                }
                true
            }
            Ok(Confirmation::Unknown) => {
                let st = self.followed.get_mut(&o.id).expect("followed");
                st.confirm = Confirm::Pending {
                    not_found: not_found + 1,
                    asked: Some(now),
                    since,
                };
                if not_found + 1 >= CONFIRM_TRIES {
                    self.refuse(&o.id, DropReason::Unknown, now);
                }
                false
            }
            Err(e) => {
                self.frigate_failed(o, &e);
                false
            }
        }
    }

    /// Gives up the events Frigate has not confirmed within [`CONFIRM_WINDOW`]: one that it
    /// answered 404 for is refused from then on; one it never answered about (Frigate down)
    /// is only forgotten, and followed again at its next message.
    fn give_up_unconfirmed(&mut self, now: Instant) {
        let stale: Vec<(String, u32)> = self
            .followed
            .iter()
            .filter_map(|(id, st)| match st.confirm {
                Confirm::Pending {
                    not_found, since, ..
                } if now.saturating_duration_since(since) >= CONFIRM_WINDOW => {
                    Some((id.clone(), not_found))
                }
                _ => None,
            })
            .collect();
        for (id, not_found) in stale {
            if not_found > 0 {
                self.refuse(&id, DropReason::Unknown, now);
            } else {
                self.forget(&id);
            }
        }
    }

    /// A request to Frigate failed: counted, logged once per event, retried at its next update.
    fn frigate_failed(&mut self, o: &Object, e: &Error) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let st = self.followed.get_mut(&o.id).expect("followed");
        if !std::mem::replace(&mut st.frigate_down_logged, true) {
            tracing::warn!(
                frigate_event = %o.id,
                camera = %o.camera,
                "frigate: {e}; retrying at the event's next update"
            );
        }
    }

    /// One image of event `o` (confirmed): fetch, analyse, and on a match label it.
    fn attempt(&mut self, o: &Object, now: Instant) {
        let img = match self.fetch(o) {
            Ok(img) => img,
            Err(e) => {
                self.frigate_failed(o, &e);
                return;
            }
        };
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let faces = match self.deps.analyzer.analyze(&img) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(frigate_event = %o.id, "frigate: cannot analyse the image: {e}");
                return;
            }
        };
        let mut best: Option<(crate::gallery::Match, usize)> = None;
        let mut nearest: Option<(Option<f32>, usize)> = None;
        {
            let g = self.deps.gallery.lock().unwrap_or_else(|p| p.into_inner());
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
                self.api
                    .post_sub_label(&o.id, &m.name, m.similarity, &self.stats);
                let audit = self
                    .deps
                    .gallery
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .audit();
                audit.note_sub_label(&o.id, m.person.0, &m.name, m.similarity);
            }
            // Frigate's event gets its name whatever the cool-down says; faced's event log and
            // MQTT get one event per person per cool-down, as from the unit's own cameras.
            let news = self
                .deps
                .cooldown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .person_seen(m.person.0, now);
            if !news {
                self.stats.cooled.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    frigate_event = %o.id,
                    camera = %o.camera,
                    person = %m.name,
                    "frigate: recognized again within events.cooldown_secs: sub label only, no event"
                );
                return;
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
            self.deps.events.send(ev);
        } else if let Some((sim, i)) = nearest {
            let f = &faces[i];
            if st.unknown.as_ref().is_none_or(|(s, _, _)| sim > *s)
                && let Ok(crop) = encode_jpeg(&f.aligned, 90)
            {
                st.unknown = Some((sim, f.detection.bbox, crop));
            }
        }
    }

    /// The event ended: an `unknown` event if faces were seen and none was recognized, unless
    /// its camera reported one within the unknown-face cool-down.
    fn finish(&mut self, o: &Object, now: Instant) {
        let Some(st) = self.forget(&o.id) else {
            return;
        };
        if st.done {
            return;
        }
        let Some((sim, bbox, crop)) = st.unknown else {
            return;
        };
        let camera = event_camera(&o.camera);
        let news = self
            .deps
            .cooldown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unknown_seen(&camera, now);
        if !news {
            self.stats.cooled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let wall = crate::base::unix_ms(self.deps.clocks.realtime());
        self.deps.events.send(Event {
            kind: EventKind::Unknown,
            event_id: 0,
            person: None,
            person_id: None,
            similarity: sim,
            camera,
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
        });
    }

    fn event(&self, kind: EventKind, o: &Object, track: u64, face: &crate::vision::Face) -> Event {
        let wall = crate::base::unix_ms(self.deps.clocks.realtime());
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

    /// The snapshot cropped to the person once Frigate has one (its answer or a later
    /// message says so), else the camera's newest frame cropped to the person's box (with a
    /// margin: the face is at the top of the box). Only for a confirmed event, whose camera is
    /// the message's (checked in `confirmed`).
    fn fetch(&self, o: &Object) -> Result<RgbImage> {
        let confirmed_snapshot = matches!(
            self.followed.get(&o.id).map(|st| &st.confirm),
            Some(Confirm::Known { snapshot: true, .. })
        );
        if o.has_snapshot || confirmed_snapshot {
            self.api.snapshot(&o.id)
        } else {
            self.api.latest(&o.camera, o.bbox)
        }
    }
}
