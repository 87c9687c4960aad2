//! Stage 5, events: turns the tracks' state into events, through the cool-down.
//!
//! * `recognized` when a live track gets (or changes to) an identity and the person was not
//!   seen within the cool-down; while they stay in view every frame refreshes their sighting.
//! * `unknown` once per track, after [`UNKNOWN_AFTER`] embeddings without an identity, unless
//!   the camera reported an unknown face within the unknown cool-down; also for a track that
//!   left after one look. The face becomes the shared "last unknown face".
//! * `left` when a track that was reported ends.
//!
//! Every live track with an identity is also a sighting of its person, cool-down or not
//! ([`crate::pipeline::sightings`]). Tracks the liveness model refused produce nothing.

use std::time::{Duration, Instant};

use super::CamState;
use crate::capture::Frame;
use crate::events::{CoolDown, Event, EventKind, rfc3339_utc, unix_ms};
use crate::gallery::index::normalize;
use crate::pipeline::live::TrackSample;
use crate::pipeline::sightings::Sighting;
use crate::pipeline::tracker::Track;
use crate::pipeline::{Shared, StageStats, UNKNOWN_AFTER, encode_jpeg, face_crop};

/// The events of this pass: for the tracks in view, then for `ended`. Every track decided
/// unknown in this pass (whether or not the cool-down let its event through) is added to
/// `unknowns`, for the visitors stage.
#[allow(clippy::too_many_arguments)]
pub fn run(
    cooldown: &mut CoolDown,
    st: &mut CamState,
    ended: Vec<Track>,
    frame: &Frame,
    now: Instant,
    shared: &Shared,
    stats: &mut StageStats,
    unknowns: &mut Vec<UnknownFace>,
) -> Vec<Event> {
    let t0 = Instant::now();
    let wall_ms = unix_ms(frame.wall);
    let mut events = Vec::new();
    let camera = st.cfg.name.clone();
    for tr in st.tracker.tracks.iter_mut().filter(|t| t.missed == 0) {
        if tr.live == Some(false) {
            continue;
        }
        if let Some(id) = tr.identity.clone() {
            // Presence, which the cool-down below must not hide.
            shared.sightings.seen(
                Sighting {
                    person_id: id.person_id,
                    name: id.name.clone(),
                    camera: camera.clone(),
                    wall_ms,
                },
                now,
            );
            if tr.reported_person != Some(id.person_id) {
                tr.reported_person = Some(id.person_id);
                if cooldown.person_seen(id.person_id, now) {
                    tr.reported = true;
                    events.push(make_event(
                        EventKind::Recognized,
                        &camera,
                        tr,
                        wall_ms,
                        frame,
                        None,
                    ));
                }
            } else {
                cooldown.person_still_seen(id.person_id, now);
            }
        } else if !tr.unknown_decided && tr.embeds >= UNKNOWN_AFTER {
            tr.unknown_decided = true;
            unknowns.extend(UnknownFace::of(tr, wall_ms));
            if cooldown.unknown_seen(&camera, now) {
                tr.reported = true;
                if let Some(f) = tr.best_face.clone() {
                    shared.set_last_unknown(&camera, tr.id, f);
                }
                events.push(make_event(
                    EventKind::Unknown,
                    &camera,
                    tr,
                    wall_ms,
                    frame,
                    None,
                ));
            }
        }
    }
    for tr in ended {
        if tr.live == Some(false) {
            continue;
        }
        if tr.identity.is_none() && !tr.unknown_decided && tr.embeds > 0 {
            // Left before a second look: still an unknown face.
            unknowns.extend(UnknownFace::of(&tr, tr.last_wall_ms));
            if cooldown.unknown_seen(&camera, now) {
                if let Some(f) = tr.best_face.clone() {
                    shared.set_last_unknown(&camera, tr.id, f);
                }
                events.push(make_event(
                    EventKind::Unknown,
                    &camera,
                    &tr,
                    tr.last_wall_ms,
                    frame,
                    None,
                ));
            }
        } else if tr.reported {
            let dur = tr.last_seen.saturating_duration_since(tr.first_seen);
            events.push(make_event(
                EventKind::Left,
                &camera,
                &tr,
                tr.last_wall_ms,
                frame,
                Some(dur),
            ));
        }
    }
    stats.events += t0.elapsed();
    events
}

/// A track decided unknown: what the visitors stage needs of it.
#[derive(Debug, Clone)]
pub struct UnknownFace {
    /// The track.
    pub track_id: u64,
    /// Mean of the track's kept embeddings, L2-normalised.
    pub embedding: Vec<f32>,
    /// Its best aligned face (crop and quality).
    pub best: TrackSample,
    /// The tracker's quality hint of that face.
    pub hint: f32,
    /// Wall-clock time, Unix ms.
    pub wall_ms: i64,
}

impl UnknownFace {
    /// `None` for a track without an embedded face.
    fn of(tr: &Track, wall_ms: i64) -> Option<UnknownFace> {
        let best = tr.best_face.clone()?;
        let mut sum = vec![0.0f32; best.embedding.len()];
        for s in &tr.samples {
            for (a, b) in sum.iter_mut().zip(&s.embedding) {
                *a += b;
            }
        }
        let embedding = normalize(&sum).unwrap_or_else(|| best.embedding.clone());
        Some(UnknownFace {
            track_id: tr.id,
            embedding,
            best,
            hint: tr.best_quality,
            wall_ms,
        })
    }
}

/// An event about `tr` without a snapshot (also used for the `left` events at shutdown).
pub fn base_event(kind: EventKind, camera: &str, tr: &Track, wall_ms: i64) -> Event {
    let id = tr.identity.as_ref();
    Event {
        kind,
        event_id: 0,
        person: id.map(|i| i.name.clone()),
        person_id: id.map(|i| i.person_id),
        similarity: id.map(|i| i.similarity).or_else(|| tr.best_similarity()),
        camera: camera.to_string(),
        track_id: tr.id,
        bbox: tr.det.bbox,
        time: rfc3339_utc(wall_ms),
        ts_ms: wall_ms,
        duration_ms: None,
        snapshot: false,
        snapshot_jpeg: None,
        frame_captured: None,
        frigate: None,
        visitor: None,
    }
}

/// An event about `tr` seen in `frame`: with the snapshot (the track's best crop) unless it is
/// a `left` event, which carries the time in view instead.
fn make_event(
    kind: EventKind,
    camera: &str,
    tr: &Track,
    wall_ms: i64,
    frame: &Frame,
    left: Option<Duration>,
) -> Event {
    let mut e = base_event(kind, camera, tr, wall_ms);
    e.frame_captured = Some(frame.captured);
    if kind == EventKind::Left {
        e.duration_ms = left.map(|d| d.as_millis() as u64);
    } else {
        let crop = tr
            .best_crop
            .clone()
            .unwrap_or_else(|| face_crop(&frame.image, &tr.det.bbox));
        e.snapshot_jpeg = encode_jpeg(&crop, 85).ok();
        e.snapshot = e.snapshot_jpeg.is_some();
    }
    e
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn kinds(ev: &[Event]) -> Vec<(EventKind, Option<String>)> {
        ev.iter().map(|e| (e.kind, e.person.clone())).collect()
    }

    #[test]
    fn a_known_face_is_recognized_once_then_left() {
        let mut t = Rig::new(camera());
        let g = People::new(&[(7, "ada", RED)]);
        let ev = t.step(&g, &[RED]);
        assert_eq!(kinds(&ev), [(EventKind::Recognized, Some("ada".into()))]);
        assert_eq!(ev[0].person_id, Some(7));
        assert!(ev[0].snapshot && ev[0].snapshot_jpeg.is_some());
        for _ in 0..3 {
            assert!(t.step(&g, &[RED]).is_empty(), "still in view: no new event");
        }
        let mut left = Vec::new();
        for _ in 0..=camera().track_max_missed {
            left.extend(t.step(&g, &[]));
        }
        assert_eq!(kinds(&left), [(EventKind::Left, Some("ada".into()))]);
        assert!(left[0].duration_ms.is_some() && !left[0].snapshot);
    }

    #[test]
    fn an_unknown_face_is_reported_after_two_looks_with_a_cool_down() {
        let mut t = Rig::new(camera());
        let g = People::new(&[(7, "ada", RED)]);
        assert!(t.step(&g, &[GREEN]).is_empty(), "one look is not enough");
        let ev = t.step(&g, &[GREEN]);
        assert_eq!(kinds(&ev), [(EventKind::Unknown, None)]);
        let (cam, track, face) = t.last_unknown().expect("recorded");
        assert_eq!((cam.as_str(), track), ("cam", ev[0].track_id));
        assert!(same(&face.embedding, &embedding_of(GREEN)));
        // A second stranger within the unknown cool-down (10 s here) is not reported…
        assert!(t.step(&g, &[GREEN, BLUE]).is_empty());
        assert!(t.step(&g, &[GREEN, BLUE]).is_empty());
        // …but one after it is.
        t.clock.advance(Duration::from_secs(11));
        let ev = t.step(&g, &[GREEN, BLUE, YELLOW]);
        assert!(ev.is_empty());
        let ev = t.step(&g, &[GREEN, BLUE, YELLOW]);
        assert_eq!(kinds(&ev), [(EventKind::Unknown, None)]);
    }

    /// Cool-downs are durations on the monotonic clock: the wall clock jumping back to 1970 or
    /// forward by years neither releases a cool-down early nor holds it for years.
    #[test]
    fn wall_clock_jumps_do_not_move_cool_downs() {
        use std::time::{SystemTime, UNIX_EPOCH};
        let mut t = Rig::new(camera());
        let g = People::new(&[(7, "ada", RED)]);
        assert_eq!(t.step(&g, &[RED]).len(), 1);
        for _ in 0..=camera().track_max_missed {
            t.step(&g, &[]);
        }
        // Forward by ten years: ada comes back within her cool-down, not reported.
        t.clock
            .set_wall(SystemTime::now() + Duration::from_secs(10 * 365 * 86_400));
        assert!(t.step(&g, &[RED]).is_empty(), "released by a forward jump");
        for _ in 0..=camera().track_max_missed {
            t.step(&g, &[]);
        }
        // Back to 1970, and the cool-down (60 s) passes on the monotonic clock: reported,
        // stamped with the frame's wall time as captured (the event store decides what to store).
        t.clock.set_wall(UNIX_EPOCH + Duration::from_secs(60));
        t.clock.advance(Duration::from_secs(61));
        let ev = t.step(&g, &[RED]);
        assert_eq!(kinds(&ev), [(EventKind::Recognized, Some("ada".into()))]);
        assert!(ev[0].ts_ms < 200_000, "{}", ev[0].ts_ms);
    }

    #[test]
    fn a_spoofed_track_produces_no_event() {
        let mut t = Rig::new(camera());
        let g = People::new(&[(7, "ada", RED)]);
        t.detect(&[RED]);
        t.st.tracker.tracks[0].live = Some(false);
        for _ in 0..4 {
            assert!(t.step(&g, &[RED]).is_empty());
        }
        for _ in 0..=camera().track_max_missed {
            assert!(
                t.step(&g, &[]).is_empty(),
                "no left for a track never reported"
            );
        }
    }
}
