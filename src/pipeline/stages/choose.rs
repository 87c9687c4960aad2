//! Stage 2, choose: which tracks seen in this pass get embedded. Embedding is the expensive
//! step, so a face that stays in view is embedded only when that can change something:
//!
//! * its track is new (no embedding yet),
//! * it is still undecided (no identity, no `unknown` verdict, fewer than
//!   [`UNKNOWN_AFTER`] embeddings),
//! * its quality beats the best embedded one by [`QUALITY_GAIN`],
//! * `embed_every` passes went by since its last embedding, or
//! * someone is collecting it for enrollment.
//!
//! Faces smaller than `min_face_px` are tracked but never embedded (too few pixels to embed
//! well). The stage only reads: it changes no track.

use super::{Candidate, Seen};
use crate::capture::CameraConfig;
use crate::pipeline::tracker::{Track, quality_hint};
use crate::pipeline::{QUALITY_GAIN, UNKNOWN_AFTER};

/// The candidates among `seen`'s detections, in detection order. `collecting` holds the ids of
/// tracks being collected for enrollment on this camera.
pub fn run(
    cfg: &CameraConfig,
    tracks: &[Track],
    seen: &Seen,
    collecting: &[u64],
) -> Vec<Candidate> {
    let mut todo = Vec::new();
    for (di, &ti) in seen.assign.iter().enumerate() {
        let Some(tr) = tracks.get(ti) else {
            continue;
        };
        let d = seen.dets[di];
        if d.width().min(d.height()) < cfg.min_face_px {
            continue;
        }
        let q = quality_hint(&d);
        let need = tr.embeds == 0
            || (tr.identity.is_none() && !tr.unknown_decided && tr.embeds < UNKNOWN_AFTER)
            || q > tr.best_quality * QUALITY_GAIN
            || tr.since_embed >= cfg.embed_every
            || collecting.contains(&tr.id);
        if need {
            todo.push(Candidate {
                track: ti,
                det: d,
                quality: q,
            });
        }
    }
    todo
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    /// One detection pass of `faces` through detect, then choose; the chosen tracks are marked
    /// embedded (as the later stages would) so the policy sees its own history.
    fn pass(t: &mut Rig, faces: &[FakeFace], collecting: &[u64]) -> Vec<u64> {
        let seen = t.detect(faces).expect("a detection pass");
        let chosen = run(&t.st.cfg, &t.st.tracker.tracks, &seen, collecting);
        let mut ids = Vec::new();
        for c in &chosen {
            let tr = &mut t.st.tracker.tracks[c.track];
            tr.embeds += 1;
            tr.since_embed = 0;
            tr.best_quality = tr.best_quality.max(c.quality);
            ids.push(tr.id);
        }
        ids
    }

    #[test]
    fn a_decided_track_is_embedded_only_every_n_passes() {
        let mut t = Rig::new(CameraConfig {
            embed_every: 4,
            ..camera()
        });
        let mut embedded = Vec::new();
        for i in 0..12 {
            let ids = pass(&mut t, &[RED], &[]);
            if i == 1 {
                // Decided after UNKNOWN_AFTER looks, as the events stage would.
                t.st.tracker.tracks[0].unknown_decided = true;
            }
            embedded.push(!ids.is_empty());
        }
        // Pass 0 (new) and 1 (undecided), then every 4th pass after the last embedding.
        assert_eq!(
            embedded,
            [
                true, true, false, false, false, true, false, false, false, true, false, false
            ]
        );
    }

    #[test]
    fn a_face_below_min_face_px_is_tracked_but_not_embedded() {
        let mut t = Rig::new(CameraConfig {
            min_face_px: 50.0,
            ..camera()
        });
        let small = FakeFace::frontal([10.0, 10.0, 50.0, 60.0], [1, 2, 200]);
        assert_eq!(pass(&mut t, &[small, RED], &[]), vec![2]);
        assert_eq!(t.st.tracker.tracks.len(), 2, "both faces are tracked");
        assert_eq!(t.st.tracker.tracks[0].embeds, 0);
    }

    #[test]
    fn better_quality_or_an_enrollment_brings_an_early_embedding() {
        let mut t = Rig::new(CameraConfig {
            embed_every: 100,
            ..camera()
        });
        let dim = RED.with_score(0.6);
        for _ in 0..2 {
            pass(&mut t, &[dim], &[]);
        }
        t.st.tracker.tracks[0].unknown_decided = true;
        assert!(pass(&mut t, &[dim], &[]).is_empty());
        // Same box, score 0.6 → 0.9: quality ×1.5 > QUALITY_GAIN.
        assert_eq!(pass(&mut t, &[RED], &[]), vec![1]);
        assert!(pass(&mut t, &[RED], &[]).is_empty());
        assert_eq!(
            pass(&mut t, &[RED], &[1]),
            vec![1],
            "collected for enrollment"
        );
    }
}
