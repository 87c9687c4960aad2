//! IoU tracker: a face seen over many frames is one [`Track`], matched frame to frame by the
//! overlap of its box (greedy, best IoU first). Runs on the vision thread, once per detection
//! pass; between passes (`detect_every > 1`) tracks coast unchanged.
//!
//! A track remembers its best embeddings ([`Sample`]s, by quality) and the gallery's verdict on
//! each; [`Track::vote`] decides identity by a majority of them, so one bad frame neither names
//! nor renames a person.

use std::time::Instant;

use image::RgbImage;

use crate::vision::detect::{Detection, iou};

/// A face's usefulness for recognition, 0..1, from the detection alone (no crop needed):
/// detector score × frontal pose × size (saturating at 112 px, the embedder's input).
pub fn quality_hint(d: &Detection) -> f32 {
    let l = &d.landmarks;
    let ex = l[1][0] - l[0][0];
    let ey = l[1][1] - l[0][1];
    let eye = (ex * ex + ey * ey).sqrt().max(1e-3);
    let mid = [(l[0][0] + l[1][0]) / 2.0, (l[0][1] + l[1][1]) / 2.0];
    let along = ((l[2][0] - mid[0]) * ex + (l[2][1] - mid[1]) * ey) / eye;
    let frontal = 1.0 - (along / (eye / 2.0)).clamp(-1.0, 1.0).abs();
    let size = (d.width().min(d.height()) / 112.0).clamp(0.0, 1.0);
    d.score * frontal.max(0.05) * size
}

/// The gallery's best match for one embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchInfo {
    /// Person id.
    pub person_id: i64,
    /// Name at the time.
    pub name: String,
    /// Cosine similarity.
    pub similarity: f32,
}

/// One embedding of a track.
#[derive(Debug, Clone)]
pub struct Sample {
    /// [`quality_hint`] of the face it came from.
    pub quality: f32,
    /// The embedding.
    pub embedding: Vec<f32>,
    /// The gallery's best match (any similarity), if the gallery is not empty.
    pub best: Option<MatchInfo>,
}

/// One tracked face.
#[derive(Debug, Clone)]
pub struct Track {
    /// Id, unique per camera for the life of the process.
    pub id: u64,
    /// Latest detection.
    pub det: Detection,
    /// First and latest sighting.
    pub first_seen: Instant,
    /// Latest sighting.
    pub last_seen: Instant,
    /// Wall-clock time of the latest sighting, Unix ms.
    pub last_wall_ms: i64,
    /// Detection passes it was matched in.
    pub age: u32,
    /// Consecutive detection passes without a match.
    pub missed: u32,
    /// Detection passes since the last embedding.
    pub since_embed: u32,
    /// Embeddings computed for it.
    pub embeds: u32,
    /// Best quality embedded so far.
    pub best_quality: f32,
    /// The best samples, best quality first, at most the camera's `votes`.
    pub samples: Vec<Sample>,
    /// Current identity (sticky: a failed vote keeps the previous one).
    pub identity: Option<MatchInfo>,
    /// Person already reported (or suppressed by the cool-down) for this track.
    pub reported_person: Option<i64>,
    /// An `unknown` decision was made for this track.
    pub unknown_decided: bool,
    /// Some event (recognized/unknown) was emitted for this track: `left` follows its end.
    pub reported: bool,
    /// Liveness verdict (`Some(true)` live), when the gate is on.
    pub live: Option<bool>,
    /// Crop of the frame around the best-quality face (the event snapshot).
    pub best_crop: Option<RgbImage>,
    /// Best-quality aligned face while unidentified ("enroll the last unknown face").
    pub best_face: Option<super::live::TrackSample>,
}

impl Track {
    /// Identity by majority over the samples: the person whose matches at or above
    /// `threshold` are more than half of the samples (ties: higher best similarity).
    pub fn vote(&self, threshold: f32) -> Option<MatchInfo> {
        let mut tally: Vec<(i64, usize, MatchInfo)> = Vec::new();
        for s in &self.samples {
            let Some(m) = s.best.as_ref().filter(|m| m.similarity >= threshold) else {
                continue;
            };
            match tally.iter_mut().find(|t| t.0 == m.person_id) {
                Some(t) => {
                    t.1 += 1;
                    if m.similarity > t.2.similarity {
                        t.2 = m.clone();
                    }
                }
                None => tally.push((m.person_id, 1, m.clone())),
            }
        }
        let best = tally.into_iter().max_by(|a, b| {
            a.1.cmp(&b.1)
                .then(a.2.similarity.total_cmp(&b.2.similarity))
        })?;
        (best.1 * 2 > self.samples.len()).then_some(best.2)
    }

    /// Best similarity of any sample (for `unknown` events and the overlay).
    pub fn best_similarity(&self) -> Option<f32> {
        self.samples
            .iter()
            .filter_map(|s| s.best.as_ref().map(|m| m.similarity))
            .max_by(f32::total_cmp)
    }

    /// Adds a sample, keeping the `max` best by quality.
    pub fn add_sample(&mut self, s: Sample, max: usize) {
        self.samples.push(s);
        self.samples.sort_by(|a, b| b.quality.total_cmp(&a.quality));
        self.samples.truncate(max.max(1));
    }
}

/// Tracker settings (per camera).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// IoU needed to continue a track.
    pub iou: f32,
    /// Passes without a match before a track ends.
    pub max_missed: u32,
}

/// The tracks of one camera.
#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    /// Live tracks.
    pub tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            cfg,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    /// Changes the settings (SIGHUP).
    pub fn set_config(&mut self, cfg: TrackerConfig) {
        self.cfg = cfg;
    }

    /// Matches `dets` to tracks. Returns, per detection, the index of its track in
    /// [`Tracker::tracks`] (new tracks appended), and the tracks that ended.
    pub fn update(
        &mut self,
        dets: &[Detection],
        now: Instant,
        wall_ms: i64,
    ) -> (Vec<usize>, Vec<Track>) {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (di, d) in dets.iter().enumerate() {
                let o = iou(&t.det.bbox, &d.bbox);
                if o >= self.cfg.iou {
                    pairs.push((o, ti, di));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut det_track = vec![usize::MAX; dets.len()];
        let mut track_taken = vec![false; self.tracks.len()];
        for (_, ti, di) in pairs {
            if track_taken[ti] || det_track[di] != usize::MAX {
                continue;
            }
            track_taken[ti] = true;
            det_track[di] = ti;
        }
        for (ti, t) in self.tracks.iter_mut().enumerate() {
            if track_taken[ti] {
                t.missed = 0;
                t.age += 1;
                t.since_embed += 1;
                t.last_seen = now;
                t.last_wall_ms = wall_ms;
            } else {
                t.missed += 1;
            }
        }
        for (di, d) in dets.iter().enumerate() {
            if det_track[di] == usize::MAX {
                det_track[di] = self.tracks.len();
                self.tracks.push(Track {
                    id: self.next_id,
                    det: *d,
                    first_seen: now,
                    last_seen: now,
                    last_wall_ms: wall_ms,
                    age: 1,
                    missed: 0,
                    since_embed: 0,
                    embeds: 0,
                    best_quality: 0.0,
                    samples: Vec::new(),
                    identity: None,
                    reported_person: None,
                    unknown_decided: false,
                    reported: false,
                    live: None,
                    best_crop: None,
                    best_face: None,
                });
                self.next_id += 1;
            } else {
                self.tracks[det_track[di]].det = *d;
            }
        }
        // Remove ended tracks, keeping the indices in det_track valid.
        let max_missed = self.cfg.max_missed;
        let mut ended = Vec::new();
        let mut remap = vec![usize::MAX; self.tracks.len()];
        let mut kept = Vec::with_capacity(self.tracks.len());
        for (i, t) in std::mem::take(&mut self.tracks).into_iter().enumerate() {
            if t.missed > max_missed {
                ended.push(t);
            } else {
                remap[i] = kept.len();
                kept.push(t);
            }
        }
        self.tracks = kept;
        (det_track.into_iter().map(|i| remap[i]).collect(), ended)
    }

    /// Ends every track (shutdown, camera lost).
    pub fn end_all(&mut self) -> Vec<Track> {
        std::mem::take(&mut self.tracks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32) -> Detection {
        Detection {
            score: 0.9,
            bbox: [x, 0.0, x + 100.0, 100.0],
            landmarks: [
                [x + 30.0, 40.0],
                [x + 70.0, 40.0],
                [x + 50.0, 60.0],
                [x + 50.0, 80.0],
                [x, 50.0],
                [x + 100.0, 50.0],
            ],
        }
    }

    #[test]
    fn tracks_follow_moving_faces_and_end_after_misses() {
        let mut t = Tracker::new(TrackerConfig {
            iou: 0.3,
            max_missed: 2,
        });
        let now = Instant::now();
        let (a, e) = t.update(&[det(0.0), det(300.0)], now, 0);
        assert_eq!((a, e.len()), (vec![0, 1], 0));
        let (a, _) = t.update(&[det(305.0), det(4.0)], now, 0);
        assert_eq!(a, vec![1, 0]);
        assert_eq!(t.tracks[0].id, 1);
        assert_eq!(t.tracks[0].age, 2);
        for _ in 0..2 {
            let (_, e) = t.update(&[det(8.0)], now, 0);
            assert!(e.is_empty());
        }
        let (a, e) = t.update(&[det(8.0)], now, 0);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].id, 2);
        assert_eq!(a, vec![0]);
        assert!(quality_hint(&det(0.0)) > 0.8);
    }

    #[test]
    fn vote_needs_a_majority() {
        let mut t = Tracker::new(TrackerConfig {
            iou: 0.3,
            max_missed: 2,
        });
        t.update(&[det(0.0)], Instant::now(), 0);
        let tr = &mut t.tracks[0];
        let m = |p: i64, s: f32| {
            Some(MatchInfo {
                person_id: p,
                name: format!("p{p}"),
                similarity: s,
            })
        };
        tr.add_sample(
            Sample {
                quality: 0.5,
                embedding: vec![],
                best: m(1, 0.7),
            },
            5,
        );
        assert_eq!(tr.vote(0.5).unwrap().person_id, 1);
        tr.add_sample(
            Sample {
                quality: 0.6,
                embedding: vec![],
                best: m(2, 0.6),
            },
            5,
        );
        assert!(tr.vote(0.5).is_none());
        tr.add_sample(
            Sample {
                quality: 0.4,
                embedding: vec![],
                best: m(2, 0.55),
            },
            5,
        );
        assert_eq!(tr.vote(0.5).unwrap().person_id, 2);
        assert!(tr.vote(0.9).is_none());
        assert_eq!(tr.samples[0].quality, 0.6);
    }
}
