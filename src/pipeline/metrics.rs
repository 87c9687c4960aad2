//! The pipeline's figures for `/metrics` (docs/metrics.md): per camera, frames captured,
//! processed and dropped and the capture thread's health, read at scrape time from the counters
//! the frame slot and the camera threads keep anyway ([`Handle`]'s [`Source`]); and the
//! latencies only the vision thread sees, observed once per processed frame into histograms
//! ([`FrameHistograms::observe`], on the `faced-vision` thread).
//!
//! Cost: a few histogram observations per frame, each an uncontended lock and a scan of a dozen
//! bounds; measured against a whole frame by `cargo bench --bench metrics` (docs/metrics.md,
//! "Cost").

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::tracker::Track;
use super::{Handle, StageStats};
use crate::events::{Event, EventKind};
use crate::metrics::{
    FACES_BUCKETS, Histogram, RECOGNITION_BUCKETS, Scrape, Source, latency_histogram,
};

/// One camera's frame-path histograms.
#[derive(Debug)]
pub struct FrameHistograms {
    capture: Histogram,
    detect: Histogram,
    embed: Histogram,
    frame: Histogram,
    recognition: Histogram,
    faces: Histogram,
}

impl Default for FrameHistograms {
    fn default() -> Self {
        FrameHistograms {
            capture: latency_histogram(),
            detect: latency_histogram(),
            embed: latency_histogram(),
            frame: latency_histogram(),
            recognition: Histogram::new(RECOGNITION_BUCKETS),
            faces: Histogram::new(FACES_BUCKETS),
        }
    }
}

impl FrameHistograms {
    /// Records one processed frame: `started` is when processing began (real time) and `now`
    /// the pipeline clock's time of the frame; `before` and `after` are the processor's stage
    /// totals around it; `events` what it emitted; `tracks` the camera's tracks after it.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &self,
        captured: Instant,
        started: Instant,
        now: Instant,
        before: &StageStats,
        after: &StageStats,
        events: &[Event],
        tracks: &[Track],
    ) {
        // Real instants: the frame's capture stamp is a real one (capture::Frame::now).
        self.capture
            .observe(secs(started.saturating_duration_since(captured)));
        self.frame.observe(secs(started.elapsed()));
        if after.detect_passes > before.detect_passes {
            self.detect
                .observe(secs(after.detect.saturating_sub(before.detect)));
            self.faces.observe((after.faces - before.faces) as f64);
        }
        if after.embeds > before.embeds {
            self.embed
                .observe(secs(after.embed.saturating_sub(before.embed)));
        }
        for e in events.iter().filter(|e| e.kind == EventKind::Recognized) {
            if let Some(t) = tracks.iter().find(|t| t.id == e.track_id) {
                self.recognition
                    .observe(secs(now.saturating_duration_since(t.first_seen)));
            }
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Source for Handle {
    fn collect(&self, out: &mut Scrape) {
        let s = &self.shared;
        for (i, c) in s.cameras.iter().enumerate() {
            let cam: &[(&'static str, &str)] = &[("camera", &c.name)];
            out.counter(
                "faced_frames_captured",
                "Frames the camera delivered.",
                cam,
                s.slot.captured(i) as f64,
            );
            out.counter(
                "faced_frames_processed",
                "Frames the vision thread ran through the models.",
                cam,
                c.processed.load(Ordering::Relaxed) as f64,
            );
            out.counter(
                "faced_frames_dropped",
                "Frames replaced by a newer one before the vision thread took them.",
                cam,
                s.slot.dropped(i) as f64,
            );
            out.gauge(
                "faced_camera_up",
                "1 while the camera delivers frames (status running), else 0.",
                cam,
                f64::from(u8::from(c.status.get() == "running")),
            );
            out.counter(
                "faced_camera_errors",
                "Times the camera could not be opened or was lost (each retried).",
                cam,
                c.status.errors.load(Ordering::Relaxed) as f64,
            );
            out.counter(
                "faced_camera_bad_frames",
                "Frames that could not be decoded.",
                cam,
                c.status.bad_frames.load(Ordering::Relaxed) as f64,
            );
            let h = &c.histograms;
            for (name, help, hist) in [
                (
                    "faced_capture_latency_seconds",
                    "From a frame's capture to the vision thread taking it, seconds.",
                    &h.capture,
                ),
                (
                    "faced_detect_seconds",
                    "Face detection and tracking of one detection pass, seconds.",
                    &h.detect,
                ),
                (
                    "faced_embed_seconds",
                    "Aligning and embedding the faces chosen in one frame, seconds.",
                    &h.embed,
                ),
                (
                    "faced_frame_seconds",
                    "Processing one frame on the vision thread, all stages, seconds.",
                    &h.frame,
                ),
                (
                    "faced_time_to_recognition_seconds",
                    "From a face's first detection to its recognized event, seconds.",
                    &h.recognition,
                ),
                (
                    "faced_faces_per_frame",
                    "Faces found by one detection pass.",
                    &h.faces,
                ),
            ] {
                out.histogram(name, help, cam, hist);
            }
        }
        out.counter(
            "faced_vision_errors",
            "Errors the vision thread logged and survived.",
            &[],
            s.errors.load(Ordering::Relaxed) as f64,
        );
        out.gauge(
            "faced_detection_paused",
            "1 while detection is paused because the PIR sensor reports no motion.",
            &[],
            f64::from(u8::from(self.idle())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detection_pass_and_a_recognition_are_observed() {
        let h = FrameHistograms::default();
        let t0 = Instant::now();
        let before = StageStats::default();
        let after = StageStats {
            frames: 1,
            detect_passes: 1,
            faces: 2,
            embeds: 1,
            detect: Duration::from_millis(7),
            embed: Duration::from_millis(12),
            ..StageStats::default()
        };
        h.observe(t0, t0, t0, &before, &after, &[], &[]);
        // A frame that was not a detection pass: only capture and frame.
        h.observe(t0, t0, t0, &after, &after, &[], &[]);
        let mut out = Scrape::default();
        for (name, hist) in [
            ("d", &h.detect),
            ("e", &h.embed),
            ("f", &h.frame),
            ("n", &h.faces),
        ] {
            out.histogram(name, "x", &[], hist);
        }
        let text = out.render();
        for want in ["d_count 1\n", "e_count 1\n", "f_count 2\n", "n_sum 2.0\n"] {
            assert!(text.contains(want), "{want}: {text}");
        }
        assert!(text.contains("d_bucket{le=\"0.01\"} 1\n"), "{text}");
    }
}
