//! Stage 4, match + vote: asks the gallery who each new embedding looks like, files the answer
//! with the track's samples (its `votes` best by quality), and decides the track's identity by
//! a majority of them ([`Track::vote`](crate::pipeline::tracker::Track::vote)); a failed vote
//! keeps the previous identity, so one bad frame neither names nor renames a person.
//!
//! Also here, because they need the embedded face: the samples collected for "enroll while
//! walking past", the track's best crop (the event snapshot), and its best face while it has no
//! identity ("enroll the last unknown face"), which updates the shared last-unknown record.
//!
//! The gallery is behind [`Identify`], so tests can vote against a handful of embeddings.

use std::time::Instant;

use image::RgbImage;

use super::{CamState, Embedded};
use crate::error::Result;
use crate::gallery::Gallery;
use crate::pipeline::tracker::{MatchInfo, Sample};
use crate::pipeline::{EnrollRequest, Shared, StageStats, TrackSample, encode_jpeg, face_crop};

/// Who an embedding looks like: the gallery in the daemon.
pub trait Identify {
    /// The best match at any similarity; `None` when there is nobody to compare with.
    fn best_match(&self, embedding: &[f32]) -> Result<Option<MatchInfo>>;
}

impl Identify for Gallery {
    fn best_match(&self, embedding: &[f32]) -> Result<Option<MatchInfo>> {
        Ok(self
            .search(embedding, 1)?
            .into_iter()
            .next()
            .map(|m| MatchInfo {
                person_id: m.person.0,
                name: m.name,
                similarity: m.similarity,
            }))
    }
}

/// Files each embedded face with its track and re-votes the track's identity at `threshold`.
/// `cam` is the camera's index (for the enrollment requests).
#[allow(clippy::too_many_arguments)]
pub fn run(
    gallery: &dyn Identify,
    st: &mut CamState,
    cam: usize,
    img: &RgbImage,
    embedded: Vec<Embedded>,
    threshold: f32,
    enrolls: &mut [EnrollRequest],
    shared: &Shared,
    stats: &mut StageStats,
) -> Result<()> {
    let t0 = Instant::now();
    for Embedded { cand, face } in embedded {
        let best = gallery.best_match(&face.embedding)?;
        let tr = &mut st.tracker.tracks[cand.track];
        for r in enrolls
            .iter_mut()
            .filter(|r| r.camera == cam && r.track_id == tr.id)
        {
            if let Ok(jpeg) = encode_jpeg(&face.aligned, 90) {
                r.samples.push(TrackSample {
                    embedding: face.embedding.clone(),
                    crop_jpeg: jpeg,
                    quality: face.quality,
                });
            }
        }
        tr.embeds += 1;
        tr.since_embed = 0;
        if cand.quality > tr.best_quality {
            tr.best_quality = cand.quality;
            tr.best_crop = Some(face_crop(img, &cand.det.bbox));
            if tr.identity.is_none()
                && let Ok(jpeg) = encode_jpeg(&face.aligned, 90)
            {
                let best = TrackSample {
                    embedding: face.embedding.clone(),
                    crop_jpeg: jpeg,
                    quality: face.quality,
                };
                if tr.unknown_decided {
                    shared.refresh_last_unknown(&st.cfg.name, tr.id, &best);
                }
                tr.best_face = Some(best);
            }
        }
        tr.add_sample(
            Sample {
                quality: cand.quality,
                embedding: face.embedding,
                best,
            },
            st.cfg.votes,
        );
        if tr.live != Some(false)
            && let Some(id) = tr.vote(threshold)
        {
            if tr.identity.is_none() && tr.unknown_decided {
                shared.forget_last_unknown(&st.cfg.name, tr.id);
            }
            tr.identity = Some(id);
        }
    }
    stats.matching += t0.elapsed();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn identity_switches_only_after_a_majority_of_votes() {
        // Embedded on every pass, so each frame casts a vote.
        let mut t = Rig::new(CameraConfig {
            votes: 3,
            embed_every: 1,
            ..camera()
        });
        let g = People::new(&[(1, "ada", RED), (2, "bob", GREEN)]);
        // The same track (same box), first looking like ada, then like bob.
        let id = |t: &Rig| {
            t.st.tracker.tracks[0]
                .identity
                .as_ref()
                .map(|m| m.name.clone())
        };
        t.fake.embed_next(embedding_of(RED));
        t.step_vote(&g, &[RED]);
        assert_eq!(id(&t).as_deref(), Some("ada"));
        t.fake.embed_next(embedding_of(GREEN));
        t.step_vote(&g, &[RED]);
        assert_eq!(
            id(&t).as_deref(),
            Some("ada"),
            "1 of 2 for bob: no majority, sticky"
        );
        t.fake.embed_next(embedding_of(GREEN));
        t.step_vote(&g, &[RED]);
        assert_eq!(id(&t).as_deref(), Some("bob"), "2 of 3 for bob");
        assert_eq!(t.st.tracker.tracks[0].samples.len(), 3);
        assert_eq!(t.st.tracker.tracks[0].embeds, 3);
    }

    #[test]
    fn below_the_threshold_or_spoofed_gets_no_identity() {
        let mut t = Rig::new(camera());
        let g = People::new(&[(1, "ada", RED)]);
        t.step_vote_at(&g, &[RED], 1.01);
        let tr = &t.st.tracker.tracks[0];
        assert!(tr.identity.is_none());
        assert!(
            (tr.best_similarity().unwrap() - 1.0).abs() < 1e-4,
            "the match is kept"
        );
        assert!(tr.best_face.is_some() && tr.best_crop.is_some());
        let mut t = Rig::new(camera());
        t.detect(&[RED]);
        t.st.tracker.tracks[0].live = Some(false);
        t.step_vote(&g, &[RED]);
        assert!(t.st.tracker.tracks[0].identity.is_none());
    }

    #[test]
    fn a_track_being_collected_gets_its_faces_filed_with_the_request() {
        let mut t = Rig::new(camera());
        let g = People::new(&[]);
        t.detect(&[RED, GREEN]);
        let green = t.st.tracker.tracks[1].id;
        let (req, _rx) = enroll_request(0, green);
        t.enrolls.push(req);
        t.step_vote(&g, &[RED, GREEN]);
        t.step_vote(&g, &[RED, GREEN]);
        assert_eq!(
            t.enrolls[0].samples.len(),
            2,
            "two passes of the green track only"
        );
        assert!(
            t.enrolls[0]
                .samples
                .iter()
                .all(|s| same(&s.embedding, &embedding_of(GREEN)))
        );
    }
}
