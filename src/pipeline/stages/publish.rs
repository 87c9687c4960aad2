//! Stage 6, publish: what the rest of the daemon sees of this frame. The frame becomes the
//! camera's latest picture (the console's MJPEG stream), the fps and frame counters move, the
//! overlay goes to the console's subscribers (only built when someone listens), and the events
//! go to the event writer. Each of these is a newest-value slot or a lossy broadcast: nothing
//! here waits for a reader.

use std::sync::atomic::Ordering;

use super::{CamState, FPS_WINDOW};
use crate::capture::Frame;
use crate::events::Event;
use crate::events::store::EventSender;
use crate::pipeline::{Overlay, OverlayFace, Shared};

/// Publishes `frame` of camera `cam` with its tracks and `events`.
pub fn run(
    shared: &Shared,
    cam: usize,
    st: &mut CamState,
    frame: &Frame,
    events: &[Event],
    sender: Option<&EventSender>,
) {
    let cs = &shared.cameras[cam];
    // Frames processed over the span of the last FPS_WINDOW intervals: a mean of intervals,
    // not of rates. Averaging 1/dt let a burst of frames the driver had queued (dt ≈ 1 ms)
    // report hundreds of fps for many seconds while the vision thread did ~1 per second.
    st.recent.push_back(frame.captured);
    if st.recent.len() > FPS_WINDOW + 1 {
        st.recent.pop_front();
    }
    let fps = match (st.recent.front(), st.recent.back()) {
        (Some(first), Some(last)) if st.recent.len() > 1 => {
            let span = last.saturating_duration_since(*first).as_secs_f32();
            if span > 0.0 {
                (st.recent.len() - 1) as f32 / span
            } else {
                0.0
            }
        }
        _ => 0.0,
    };
    cs.fps_milli.store((fps * 1000.0) as u32, Ordering::Relaxed);
    cs.processed.fetch_add(1, Ordering::Relaxed);
    *cs.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(frame.clone());
    if shared.overlay.receiver_count() > 0 {
        let faces = st
            .tracker
            .tracks
            .iter()
            .filter(|t| t.missed == 0)
            .map(|t| OverlayFace {
                track_id: t.id,
                bbox: t.det.bbox,
                name: t.identity.as_ref().map(|i| i.name.clone()),
                similarity: t
                    .identity
                    .as_ref()
                    .map(|i| i.similarity)
                    .or_else(|| t.best_similarity()),
            })
            .collect();
        let _ = shared.overlay.send(Overlay {
            camera: st.cfg.name.clone(),
            frame_seq: frame.seq,
            width: frame.image.width(),
            height: frame.image.height(),
            faces,
        });
    }
    if let Some(tx) = sender {
        for e in events {
            tx.send(e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::*;
    use super::*;

    #[test]
    fn the_frame_goes_to_the_live_slot_and_the_overlay_to_subscribers() {
        let mut t = Rig::new(camera());
        let g = People::new(&[(7, "ada", RED)]);
        let mut rx = t.shared.overlay.subscribe();
        let f = t.frame(41, &[RED, GREEN]);
        t.fake.detect(&[RED, GREEN]);
        let seen = t.detect_frame(&f).unwrap();
        t.embed_and_vote(&g, &f, &seen);
        run(&t.shared, 0, &mut t.st, &f, &[], None);
        let h = t.handle();
        let latest = h.latest_frame("cam").expect("latest frame");
        assert_eq!(latest.seq, 41);
        assert!(h.latest_jpeg("cam").is_some());
        let o = rx.try_recv().expect("one overlay");
        assert_eq!(
            (o.camera.as_str(), o.frame_seq, o.width, o.height),
            ("cam", 41, 640, 480)
        );
        let names: Vec<_> = o.faces.iter().map(|f| f.name.clone()).collect();
        assert_eq!(names, [Some("ada".to_string()), None]);
        assert_eq!(o.faces[0].bbox, RED.bbox);
        // fps from capture times: frames 100 ms apart.
        let mut f2 = t.frame(42, &[]);
        f2.captured = f.captured + Duration::from_millis(100);
        run(&t.shared, 0, &mut t.st, &f2, &[], None);
        assert!((h.stats()[0].fps - 10.0).abs() < 0.01, "{:?}", h.stats());
        assert_eq!(h.latest_frame("cam").unwrap().seq, 42);
    }

    #[test]
    fn fps_is_the_processed_rate_after_a_burst_of_queued_frames() {
        let mut t = Rig::new(camera());
        let h = t.handle();
        let mut f = t.frame(1, &[]);
        let t0 = f.captured;
        // The driver's four queued buffers come 1 ms apart, then the vision thread takes one
        // frame a second.
        let at = (0..4u64)
            .map(Duration::from_millis)
            .chain((1..=10u64).map(|i| Duration::from_millis(3) + Duration::from_secs(i)));
        for (i, d) in at.enumerate() {
            f.captured = t0 + d;
            f.seq = i as u64 + 1;
            run(&t.shared, 0, &mut t.st, &f, &[], None);
        }
        let fps = h.stats()[0].fps;
        assert!(
            (fps - 1.0).abs() < 0.01,
            "{fps} fps reported, 1 processed per second"
        );
    }
}
