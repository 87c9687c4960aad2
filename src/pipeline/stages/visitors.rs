//! Stage 5b, visitors: each track the events stage decided unknown is placed among the unknown
//! visitors (src/visitors/), and its `unknown` event, if the cool-down let one through, gets the
//! visitor's id, visits, first sighting and whether they are returning. A visitor marked ignored
//! raises no event: theirs is dropped here, and the track will not produce a `left` either.
//!
//! One `Visitors::observe` per unknown track, not per frame: a pass over the visitors in memory
//! and one small transaction (see the visitors module for its cost and crash window).

use super::CamState;
use super::events::UnknownFace;
use crate::events::{Event, EventKind, VisitorRef, rfc3339_utc};
use crate::visitors::{Observation, Visitors};

/// Places `unknowns` and annotates (or drops) their events in `events`.
pub fn run(
    visitors: &Visitors,
    st: &mut CamState,
    unknowns: Vec<UnknownFace>,
    events: &mut Vec<Event>,
) {
    for u in unknowns {
        let Some(s) = visitors.observe(&Observation {
            camera: &st.cfg.name,
            embedding: &u.embedding,
            crop_jpeg: &u.best.crop_jpeg,
            quality: &u.best.quality,
            hint: u.hint,
            wall_ms: u.wall_ms,
        }) else {
            continue;
        };
        let is_it = |e: &Event| e.kind == EventKind::Unknown && e.track_id == u.track_id;
        if s.ignored {
            events.retain(|e| !is_it(e));
            if let Some(tr) = st.tracker.tracks.iter_mut().find(|t| t.id == u.track_id) {
                tr.reported = false;
            }
            continue;
        }
        if let Some(e) = events.iter_mut().find(|e| is_it(e)) {
            e.visitor = Some(VisitorRef {
                visitor_id: s.visitor_id,
                visits: Some(s.visits),
                first_seen: Some(rfc3339_utc(s.first_seen_ms)),
                returning: Some(s.returning),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::testing::*;
    use super::*;
    use crate::base::RealClocks;
    use crate::gallery::{Gallery, GalleryOptions};
    use crate::visitors::VisitorsConfig;

    fn visitors(dir: &std::path::Path) -> Arc<Visitors> {
        let db = dir.join("faced.db");
        let key = Gallery::open(&db, &GalleryOptions::default())
            .unwrap()
            .key_path()
            .to_path_buf();
        Visitors::open(
            &db,
            &key,
            VisitorsConfig::default(),
            Default::default(),
            Arc::new(RealClocks),
        )
        .unwrap()
    }

    /// Stages 1–5 and this one on a frame of `faces`.
    fn step(t: &mut Rig, v: &Visitors, faces: &[FakeFace]) -> Vec<Event> {
        let g = People::new(&[(7, "ada", RED)]);
        let mut ev = t.step(&g, faces);
        let unknowns = std::mem::take(&mut t.unknowns);
        run(v, &mut t.st, unknowns, &mut ev);
        ev
    }

    #[test]
    fn unknown_events_name_their_visitor_and_a_returning_face_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let v = visitors(dir.path());
        let mut t = Rig::new(camera());
        assert!(step(&mut t, &v, &[GREEN]).is_empty());
        let ev = step(&mut t, &v, &[GREEN]);
        assert_eq!(ev.len(), 1);
        let first = ev[0].visitor.clone().expect("a visitor");
        assert_eq!((first.visits, first.returning), (Some(1), Some(false)));
        // The face leaves; a different stranger comes: another visitor.
        for _ in 0..=camera().track_max_missed {
            step(&mut t, &v, &[]);
        }
        t.clock.advance(Duration::from_secs(11));
        step(&mut t, &v, &[BLUE]);
        let ev = step(&mut t, &v, &[BLUE]);
        let other = ev[0].visitor.clone().unwrap();
        assert_ne!(other.visitor_id, first.visitor_id);
        // A recognized face gets no visitor and is not placed.
        let ev = step(&mut t, &v, &[BLUE, RED]);
        let ev2 = step(&mut t, &v, &[BLUE, RED]);
        assert!(
            ev.iter()
                .chain(&ev2)
                .all(|e| e.kind != EventKind::Recognized || e.visitor.is_none())
        );
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn an_ignored_visitor_raises_no_unknown_and_no_left_event() {
        let dir = tempfile::tempdir().unwrap();
        let v = visitors(dir.path());
        let mut t = Rig::new(camera());
        step(&mut t, &v, &[GREEN]);
        let id = step(&mut t, &v, &[GREEN])[0]
            .visitor
            .clone()
            .unwrap()
            .visitor_id;
        v.set_ignored(id, true).unwrap();
        for _ in 0..=camera().track_max_missed {
            step(&mut t, &v, &[]);
        }
        t.clock.advance(Duration::from_secs(11));
        let mut all = Vec::new();
        for _ in 0..3 {
            all.extend(step(&mut t, &v, &[GREEN]));
        }
        for _ in 0..=camera().track_max_missed {
            all.extend(step(&mut t, &v, &[]));
        }
        assert!(all.is_empty(), "{all:?}");
        assert_eq!(v.get(id).unwrap().faces.len(), 2, "the visit still counts");
    }
}
