//! Stage 3, embed + liveness: aligns and embeds the chosen faces (one batch per frame), and runs
//! the liveness model once per track, on its first embedded face, when the camera asks for it.
//! A track the liveness model calls spoofed keeps `live = Some(false)` for its whole life: it
//! gets no identity and no event.

use std::time::Instant;

use image::RgbImage;

use super::{CamState, Candidate, Embedded};
use crate::error::Result;
use crate::pipeline::StageStats;
use crate::pipeline::liveness::Liveness;
use crate::vision::Analyzer;

/// Embeds `todo` (in order) and sets the liveness verdict of tracks that have none yet.
pub fn run(
    analyzer: &mut Analyzer,
    liveness: Option<&mut Liveness>,
    st: &mut CamState,
    img: &RgbImage,
    todo: Vec<Candidate>,
    stats: &mut StageStats,
) -> Result<Vec<Embedded>> {
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    let t0 = Instant::now();
    let dets: Vec<_> = todo.iter().map(|c| c.det).collect();
    let faces = analyzer.embed_detections(img, &dets)?;
    stats.embed += t0.elapsed();
    stats.embeds += faces.len() as u64;
    if let Some(lv) = liveness.filter(|_| st.cfg.liveness) {
        for c in &todo {
            let tr = &mut st.tracker.tracks[c.track];
            if tr.live.is_some() {
                continue;
            }
            let t = Instant::now();
            let score = lv.spoof_score(img, &c.det.bbox)?;
            stats.liveness += t.elapsed();
            stats.liveness_runs += 1;
            tr.live = Some(score < st.cfg.liveness_threshold);
            if score >= st.cfg.liveness_threshold {
                tracing::info!(
                    camera = st.cfg.name,
                    track = tr.id,
                    score,
                    "face rejected by the liveness check"
                );
            }
        }
    }
    Ok(todo
        .into_iter()
        .zip(faces)
        .map(|(cand, face)| Embedded { cand, face })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn embeds_each_candidate_with_its_own_face() {
        let mut t = Rig::new(camera());
        let seen = t.detect(&[RED, GREEN]).unwrap();
        let todo = super::super::choose::run(&t.st.cfg, &t.st.tracker.tracks, &seen, &[]);
        let img = t.frame(0, &[RED, GREEN]).image;
        let out = run(&mut t.analyzer, None, &mut t.st, &img, todo, &mut t.stats).unwrap();
        assert_eq!(out.len(), 2);
        assert!(same(&out[0].face.embedding, &embedding_of(RED)));
        assert!(same(&out[1].face.embedding, &embedding_of(GREEN)));
        assert!(!same(&out[0].face.embedding, &embedding_of(GREEN)));
        assert_eq!(t.stats.embeds, 2);
        assert_eq!(t.fake.runs().liveness, 0, "liveness is off on this camera");
    }

    #[test]
    fn liveness_runs_once_per_track_and_refuses_a_spoof() {
        let mut t = Rig::new(CameraConfig {
            liveness: true,
            liveness_threshold: 0.2,
            ..camera()
        });
        let mut lv = t.liveness();
        t.fake.spoof_colour(GREEN.colour, 0.7);
        for seq in 0..3 {
            let seen = t.detect(&[RED, GREEN]).unwrap();
            let todo: Vec<Candidate> = seen
                .assign
                .iter()
                .zip(&seen.dets)
                .map(|(&track, &det)| Candidate {
                    track,
                    det,
                    quality: 1.0,
                })
                .collect();
            let img = t.frame(seq, &[RED, GREEN]).image;
            run(
                &mut t.analyzer,
                Some(&mut lv),
                &mut t.st,
                &img,
                todo,
                &mut t.stats,
            )
            .unwrap();
        }
        assert_eq!(t.fake.runs().liveness, 2, "once per track, not per frame");
        assert_eq!(t.stats.liveness_runs, 2);
        let live: Vec<_> = t.st.tracker.tracks.iter().map(|tr| tr.live).collect();
        assert_eq!(live, [Some(true), Some(false)]);
    }
}
