//! The clustering rules on synthetic faces: unit vectors around a random "person" direction,
//! at chosen similarities, so each rule is checked exactly and without models.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::*;
use crate::base::SimulatedClocks;
use crate::gallery::GalleryOptions;

struct Fx {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    key: std::path::PathBuf,
    clocks: Arc<SimulatedClocks>,
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("faced.db");
    let g = Gallery::open(&db, &GalleryOptions::default()).unwrap();
    let key = g.key_path().to_path_buf();
    drop(g);
    let clocks = Arc::new(SimulatedClocks::starting_at(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000),
    ));
    Fx {
        _dir: dir,
        db,
        key,
        clocks,
    }
}

impl Fx {
    fn open(&self) -> Arc<Visitors> {
        self.open_with(VisitorsConfig::default())
    }
    fn open_with(&self, cfg: VisitorsConfig) -> Arc<Visitors> {
        Visitors::open(
            &self.db,
            &self.key,
            cfg,
            QualityLimits::default(),
            self.clocks.clone(),
        )
        .unwrap()
    }
    fn count(&self, sql: &str) -> i64 {
        let c = rusqlite::Connection::open(&self.db).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

/// Deterministic pseudo-random unit vector.
fn unit(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..EMBEDDING_DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 20_000) as f32 / 10_000.0 - 1.0
        })
        .collect();
    crate::gallery::index::normalize(&v).unwrap()
}

/// A unit vector at cosine `sim` from `base`, in a direction fixed by `seed`.
fn near(base: &[f32], sim: f32, seed: u64) -> Vec<f32> {
    let r = unit(seed);
    let d = dot(&r, base);
    let ortho: Vec<f32> = r.iter().zip(base).map(|(a, b)| a - d * b).collect();
    let o = crate::gallery::index::normalize(&ortho).unwrap();
    let s = (1.0 - sim * sim).sqrt();
    base.iter().zip(&o).map(|(b, o)| sim * b + s * o).collect()
}

const GOOD: Quality = Quality {
    size_px: 100.0,
    sharpness: 200.0,
    yaw: 0.0,
    roll_deg: 0.0,
    frontal: 1.0,
};
const BLURRED: Quality = Quality {
    size_px: 100.0,
    sharpness: 1.0,
    yaw: 0.0,
    roll_deg: 0.0,
    frontal: 1.0,
};

fn see(v: &Visitors, e: &[f32], at_ms: i64) -> Sighting {
    see_q(v, e, at_ms, &GOOD)
}

fn see_q(v: &Visitors, e: &[f32], at_ms: i64, q: &Quality) -> Sighting {
    v.observe(&Observation {
        camera: "door",
        embedding: e,
        crop_jpeg: b"\xff\xd8 not really a jpeg \xff\xd9",
        quality: q,
        hint: 0.5,
        wall_ms: at_ms,
    })
    .unwrap()
}

const T0: i64 = 1_780_000_000_000;
const MIN: i64 = 60_000;

#[test]
fn faces_of_one_person_join_one_visitor_and_strangers_start_new_ones() {
    let f = fx();
    let v = f.open();
    let (p, q) = (unit(1), unit(2));
    let a = see(&v, &near(&p, 0.8, 10), T0);
    let b = see(&v, &near(&p, 0.8, 11), T0 + 1000);
    let c = see(&v, &near(&q, 0.8, 12), T0 + 2000);
    assert_eq!(a.visitor_id, b.visitor_id);
    assert_ne!(a.visitor_id, c.visitor_id);
    assert_eq!(
        (b.visits, b.returning),
        (1, false),
        "one visit: within the gap"
    );
    assert_eq!(v.len(), 2);
    // A face below the rule starts a new visitor: 0.45 to the only face of p's visitor.
    let p2 = unit(3);
    let d = see(&v, &p2, T0 + 3000);
    let e = see(&v, &near(&p2, 0.45, 13), T0 + 4000);
    assert_ne!(d.visitor_id, e.visitor_id);
    assert_eq!(f.count("SELECT COUNT(*) FROM visitor_face"), 5);
}

#[test]
fn visits_count_appearances_apart_by_the_gap_and_survive_a_restart() {
    let f = fx();
    let v = f.open();
    let p = unit(4);
    let a = see(&v, &near(&p, 0.9, 41), T0);
    let b = see(&v, &near(&p, 0.9, 42), T0 + 5 * MIN);
    let c = see(&v, &near(&p, 0.9, 43), T0 + 30 * MIN);
    assert_eq!((a.visits, a.returning), (1, false));
    assert_eq!(
        (b.visits, b.returning),
        (1, false),
        "5 min < the 10 min gap"
    );
    assert_eq!((c.visits, c.returning), (2, true));
    assert_eq!(c.first_seen_ms, T0);
    drop(v);
    let v = f.open();
    let d = see(&v, &near(&p, 0.9, 44), T0 + 90 * MIN);
    assert_eq!(d.visitor_id, a.visitor_id, "same id after a restart");
    assert_eq!((d.visits, d.returning), (3, true));
    // A new stranger after the restart gets a new id, never a used one.
    let e = see(&v, &unit(45), T0 + 91 * MIN);
    assert!(e.visitor_id > a.visitor_id);
}

#[test]
fn two_visitors_merge_when_later_faces_show_they_are_one() {
    let f = fx();
    let v = f.open();
    let p = unit(6);
    // Two faces of p that are only 0.5 apart: two visitors at first.
    let a1 = near(&p, 0.866, 20);
    let mut b1 = near(&p, 0.5, 21);
    // Make b1 also 0.5 from a1 in the span of p and a1's offset: build it explicitly.
    b1 = {
        let d = dot(&b1, &a1);
        let o: Vec<f32> = b1.iter().zip(&a1).map(|(x, y)| x - d * y).collect();
        let o = crate::gallery::index::normalize(&o).unwrap();
        a1.iter()
            .zip(&o)
            .map(|(x, y)| 0.5 * x + 0.866 * y)
            .collect()
    };
    let a = see(&v, &a1, T0);
    let b = see(&v, &b1, T0 + 1000);
    assert_ne!(a.visitor_id, b.visitor_id);
    // Faces half-way between them link both: the visitors merge into the older id.
    let mid: Vec<f32> = a1.iter().zip(&b1).map(|(x, y)| x + y).collect();
    let mid = crate::gallery::index::normalize(&mid).unwrap();
    let mut last = None;
    for i in 0..4 {
        last = Some(see(&v, &near(&mid, 0.97, 30 + i), T0 + 2000 + i as i64));
    }
    assert_eq!(v.len(), 1, "merged");
    let s = last.unwrap();
    assert_eq!(s.visitor_id, a.visitor_id, "the older id survives");
    assert_eq!(v.resolve(b.visitor_id).unwrap(), a.visitor_id);
    assert_eq!(v.get(b.visitor_id).unwrap().faces.len(), 6);
    assert_eq!(
        f.count("SELECT COUNT(*) FROM visitor WHERE merged_into IS NOT NULL"),
        1
    );
}

#[test]
fn a_visitor_keeps_only_the_best_faces_and_the_sum_follows() {
    let f = fx();
    let v = f.open();
    let p = unit(7);
    for i in 0..(MAX_FACES_PER_VISITOR as u64 + 5) {
        see(&v, &near(&p, 0.9, 100 + i), T0 + i as i64);
    }
    assert_eq!(v.len(), 1);
    let info = v.list().unwrap().remove(0);
    assert_eq!(info.faces.len(), MAX_FACES_PER_VISITOR);
    // The in-memory sum is the stored faces' sum: a reopen gives the same linkage.
    let probe = near(&p, 0.9, 999);
    let before = {
        let g = v.lock();
        g.live[&info.id].link_face(&probe)
    };
    drop(v);
    let v = f.open();
    let after = v.lock().live[&info.id].link_face(&probe);
    assert!((before - after).abs() < 1e-4, "{before} vs {after}");
}

#[test]
fn ignored_visitors_are_reported_as_such_and_erase_removes_everything() {
    let f = fx();
    let v = f.open();
    let p = unit(8);
    let a = see(&v, &near(&p, 0.9, 1), T0);
    v.set_ignored(a.visitor_id, true).unwrap();
    let b = see(&v, &near(&p, 0.9, 2), T0 + 1000);
    assert!(b.ignored);
    insert_unknown_event(&f, a.visitor_id);
    v.erase(a.visitor_id).unwrap();
    assert_eq!(v.len(), 0);
    assert_eq!(f.count("SELECT COUNT(*) FROM visitor_face"), 0);
    assert_eq!(f.count("SELECT COUNT(*) FROM visitor"), 0);
    assert_eq!(
        f.count("SELECT COUNT(*) FROM event"),
        0,
        "their events go too"
    );
    assert_eq!(
        v.get(a.visitor_id).unwrap_err().kind(),
        crate::Kind::NotFound
    );
}

fn insert_unknown_event(f: &Fx, visitor: i64) {
    insert_unknown_event_at(f, visitor, T0);
}

fn insert_unknown_event_at(f: &Fx, visitor: i64, at: i64) {
    let c = rusqlite::Connection::open(&f.db).unwrap();
    c.execute(
        "INSERT INTO event (uid, kind, camera, track_id, x1, y1, x2, y2, at, visitor_id, snapshot)
         VALUES (randomblob(16), 'unknown', 'door', 1, 0, 0, 1, 1, ?1, ?2, randomblob(64))",
        rusqlite::params![at, visitor],
    )
    .unwrap();
}

#[test]
fn retention_erases_old_faces_on_the_simulated_clock_but_not_after_a_jump_back() {
    let f = fx();
    let v = f.open();
    let erased = Arc::new(Mutex::new(Vec::new()));
    let seen = erased.clone();
    v.set_listener(Box::new(move |_, _, gone| {
        seen.lock().unwrap().extend_from_slice(gone)
    }));
    let (p, q) = (unit(9), unit(10));
    let a = see(&v, &near(&p, 0.9, 1), T0);
    let now = f.clocks.unix_ms();
    let b = see(&v, &near(&q, 0.9, 2), now);
    assert_eq!(v.len(), 2);
    // Their unknown events (with snapshots, in the daemon), and one of an id the erase of an
    // older faced left behind.
    insert_unknown_event(&f, a.visitor_id);
    insert_unknown_event(&f, b.visitor_id);
    insert_unknown_event(&f, 999);
    let other = see(&v, &unit(21), now);
    insert_unknown_event_at(&f, other.visitor_id, now);
    // 15 days on: both faces are older than the 14 days kept.
    f.clocks.advance(Duration::from_secs(15 * 86_400));
    let r = see(&v, &unit(11), f.clocks.unix_ms());
    assert_eq!(v.len(), 1, "both older visitors expired; the new one stays");
    assert_eq!(v.list().unwrap()[0].id, r.visitor_id);
    assert_eq!(
        f.count("SELECT COUNT(*) FROM event"),
        0,
        "an expired visitor's unknown events (their face snapshots) go with them"
    );
    let mut gone = erased.lock().unwrap().clone();
    gone.sort_unstable();
    let mut want = vec![a.visitor_id, b.visitor_id, other.visitor_id, 999];
    want.sort_unstable();
    assert_eq!(gone, want, "the listener withdraws each from MQTT");
    // The clock jumps back to 1970: nothing is erased while it is behind the newest sighting.
    f.clocks
        .set_wall(SystemTime::UNIX_EPOCH + Duration::from_secs(10));
    drop(v);
    let v = f.open_with(VisitorsConfig {
        retention_days: 1,
        ..Default::default()
    });
    assert_eq!(v.len(), 1);
}

#[test]
fn enrolling_a_visitor_uses_their_good_faces_and_relabels_their_events() {
    let f = fx();
    let v = f.open();
    let p = unit(12);
    let a = see(&v, &near(&p, 0.9, 1), T0);
    see(&v, &near(&p, 0.9, 2), T0 + 1000);
    see_q(&v, &near(&p, 0.9, 3), T0 + 2000, &BLURRED);
    insert_unknown_event(&f, a.visitor_id);
    let mut g = Gallery::open(&f.db, &GalleryOptions::default()).unwrap();
    let done = v
        .enroll(a.visitor_id, &mut g, EnrollTarget::New("Courier"))
        .unwrap();
    assert!(done.created);
    assert_eq!(done.samples.len(), 2, "the blurred face is left out");
    assert_eq!(v.len(), 0);
    assert_eq!(f.count("SELECT COUNT(*) FROM visitor_face"), 0);
    assert_eq!(
        f.count("SELECT COUNT(*) FROM event WHERE person_name = 'Courier' AND kind = 'unknown'"),
        1
    );
    assert_eq!(
        v.get(a.visitor_id).unwrap_err().kind(),
        crate::Kind::Conflict
    );
    // Another stranger is enrolled from photos (here: straight into the gallery); a re-check
    // resolves the visitor that matches them and leaves the other one.
    let q = unit(13);
    let b = see(&v, &near(&q, 0.9, 4), T0 + 3000);
    let other = see(&v, &unit(14), T0 + 4000);
    insert_unknown_event(&f, b.visitor_id);
    let crop = b"jpeg".to_vec();
    let qe = near(&q, 0.95, 5);
    g.enroll(
        EnrollTarget::New("Dana"),
        &[NewSample {
            kind: SampleKind::Positive,
            embedding: &qe,
            crop_jpeg: &crop,
            quality_json: "{}",
            source: "test",
        }],
    )
    .unwrap();
    let hits = v.recheck(&g, 0.5).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, b.visitor_id);
    assert_eq!(v.len(), 1);
    assert_eq!(v.list().unwrap()[0].id, other.visitor_id);
    assert_eq!(
        f.count("SELECT COUNT(*) FROM event WHERE person_name = 'Dana'"),
        1
    );
}

#[test]
fn faces_are_sealed_and_bound_to_their_row() {
    let f = fx();
    let v = f.open();
    let a = see(&v, &unit(15), T0);
    let face = v.get(a.visitor_id).unwrap().faces[0].id;
    assert_eq!(
        v.face_crop(face).unwrap(),
        b"\xff\xd8 not really a jpeg \xff\xd9"
    );
    let c = rusqlite::Connection::open(&f.db).unwrap();
    let crop: Vec<u8> = c
        .query_row("SELECT crop FROM visitor_face", [], |r| r.get(0))
        .unwrap();
    assert!(!crop.windows(6).any(|w| w == b"really"), "stored sealed");
    // A second face's sealed crop copied into the first row fails to open.
    let b = see(&v, &unit(16), T0 + 1);
    let face_b = v.get(b.visitor_id).unwrap().faces[0].id;
    c.execute(
        "UPDATE visitor_face SET crop = (SELECT crop FROM visitor_face WHERE id = ?2) WHERE id = ?1",
        [face, face_b],
    )
    .unwrap();
    assert_eq!(
        v.face_crop(face).unwrap_err().kind(),
        crate::Kind::FailedPrecondition
    );
}

/// "Today" is the unit's local day: the same two sightings are both today in UTC and only one
/// of them four hours east, where midnight fell between them.
#[test]
fn today_counts_visitors_since_local_midnight() {
    let f = fx();
    let v = f.open();
    // T0 is 2026-05-28T20:26:40Z; the clocks stand there.
    let (p, q) = (unit(61), unit(62));
    see(&v, &p, T0 - 30 * MIN);
    see(&v, &q, T0 - 10 * MIN);
    let s = v.summary();
    assert_eq!((s.day.as_str(), s.today, s.new_today), ("2026-05-28", 2, 2));
    f.clocks.set_utc_offset_ms(4 * 60 * MIN);
    let s = v.summary();
    assert_eq!((s.day.as_str(), s.today, s.new_today), ("2026-05-29", 1, 1));
    assert_eq!(s.total, 2);
    // The daemon's minute tick: a summary once per new day, nothing in between.
    let mut day = String::new();
    assert_eq!(v.summary_on_new_day(&mut day).unwrap().today, 1);
    assert_eq!(day, "2026-05-29");
    f.clocks.advance(Duration::from_secs(23 * 3600));
    assert!(
        v.summary_on_new_day(&mut day).is_none(),
        "23:26, still the 29th"
    );
    f.clocks.advance(Duration::from_secs(3600));
    let s = v.summary_on_new_day(&mut day).unwrap();
    assert_eq!((s.day.as_str(), s.today, s.total), ("2026-05-30", 0, 2));
}
