//! Stage 1, detect + track: runs the detector on detection passes and matches its faces to the
//! camera's tracks. Between passes (`detect_every > 1`) the tracks coast unchanged. A scene cut
//! ends every track and forces a pass.

use std::time::Instant;

use super::{CamState, Seen};
use crate::capture::Frame;
use crate::error::Result;
use crate::events::unix_ms;
use crate::pipeline::StageStats;
use crate::vision::detect::Detector;

/// Detects and tracks on `frame` if it is a detection pass (counting it in `st.frames`);
/// `None` when the tracks coast.
pub fn run(
    detector: &mut Detector,
    st: &mut CamState,
    frame: &Frame,
    now: Instant,
    stats: &mut StageStats,
) -> Result<Option<Seen>> {
    st.frames += 1;
    let cut_ended = if frame.cut {
        st.tracker.end_all()
    } else {
        Vec::new()
    };
    let pass = frame.cut || (st.frames - 1).is_multiple_of(u64::from(st.cfg.detect_every));
    if !pass {
        return Ok(None);
    }
    let t0 = Instant::now();
    let dets = detector.detect(&frame.image)?;
    let t1 = Instant::now();
    stats.detect += t1 - t0;
    stats.detect_passes += 1;
    stats.faces += dets.len() as u64;
    let (assign, mut ended) = st.tracker.update(&dets, now, unix_ms(frame.wall));
    ended.splice(0..0, cut_ended);
    stats.track += t1.elapsed();
    Ok(Some(Seen {
        dets,
        assign,
        ended,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn detects_every_nth_frame_and_tracks_coast_between() {
        let t = Rig::new(CameraConfig {
            detect_every: 3,
            ..camera()
        });
        let mut t = t;
        t.fake.detect(&[RED]);
        let mut passes = Vec::new();
        for seq in 0..7 {
            let f = t.frame(seq, &[RED]);
            let seen = run(
                &mut t.analyzer.detector,
                &mut t.st,
                &f,
                f.captured,
                &mut t.stats,
            )
            .unwrap();
            passes.push(seen.is_some());
        }
        assert_eq!(passes, [true, false, false, true, false, false, true]);
        assert_eq!(t.fake.runs().detector, 3);
        assert_eq!(t.stats.detect_passes, 3);
        assert_eq!(t.st.tracker.tracks.len(), 1);
        assert_eq!(
            t.st.tracker.tracks[0].age, 3,
            "one track, matched on every pass"
        );
    }

    #[test]
    fn a_scene_cut_ends_every_track_and_forces_a_pass() {
        let mut t = Rig::new(CameraConfig {
            detect_every: 5,
            ..camera()
        });
        t.fake.detect(&[RED]);
        let f = t.frame(0, &[RED]);
        run(
            &mut t.analyzer.detector,
            &mut t.st,
            &f,
            f.captured,
            &mut t.stats,
        )
        .unwrap();
        let first = t.st.tracker.tracks[0].id;
        let mut f = t.frame(1, &[RED]);
        f.cut = true;
        let seen = run(
            &mut t.analyzer.detector,
            &mut t.st,
            &f,
            f.captured,
            &mut t.stats,
        )
        .unwrap()
        .expect("a cut is a detection pass");
        assert_eq!(seen.ended.len(), 1);
        assert_eq!(seen.ended[0].id, first);
        assert_eq!(seen.assign, vec![0]);
        assert_ne!(
            t.st.tracker.tracks[0].id, first,
            "the same box is a new track after a cut"
        );
    }
}
