//! What the stage tests share: a one-camera rig on the fake models, a few coloured faces, and a
//! tiny in-memory gallery.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

pub use super::{CamState, Seen};
use crate::base::{Clocks, SimulatedClocks};
pub use crate::capture::CameraConfig;
use crate::capture::Frame;
use crate::error::Result;
use crate::events::{CoolDown, Event};
use crate::pipeline::liveness::Liveness;
use crate::pipeline::tracker::MatchInfo;
use crate::pipeline::{EnrollRequest, Handle, Shared, StageStats, TrackSample};
use crate::vision::detect::{DetectorConfig, Tiling};
pub use crate::vision::fake::{FakeFace, FakeModels, colour_embedding, draw};
use crate::vision::{Analyzer, InferenceConfig};

use super::vote::Identify;

/// Faces of four people, side by side in a 640×480 frame.
pub const RED: FakeFace = face(20.0, [200, 30, 30]);
/// See [`RED`].
pub const GREEN: FakeFace = face(170.0, [30, 200, 30]);
/// See [`RED`].
pub const BLUE: FakeFace = face(320.0, [30, 30, 200]);
/// See [`RED`].
pub const YELLOW: FakeFace = face(470.0, [200, 200, 30]);

const fn face(x: f32, colour: [u8; 3]) -> FakeFace {
    // FakeFace::frontal is not const: the same keypoints, written out for a 120×140 box.
    let (w, h, y) = (120.0, 140.0, 100.0);
    FakeFace {
        score: 0.9,
        bbox: [x, y, x + w, y + h],
        landmarks: [
            [x + 38.2946 / 112.0 * w, y + 51.6963 / 112.0 * h],
            [x + 73.5318 / 112.0 * w, y + 51.5014 / 112.0 * h],
            [x + 56.0252 / 112.0 * w, y + 71.7366 / 112.0 * h],
            [x + 56.1396 / 112.0 * w, y + 92.2848 / 112.0 * h],
            [x + 0.05 * w, y + 0.5 * h],
            [x + 0.95 * w, y + 0.5 * h],
        ],
        colour,
    }
}

/// What the fake embeds `f` as (no script: derived from its colour).
pub fn embedding_of(f: FakeFace) -> Vec<f32> {
    colour_embedding(f.colour)
}

/// Whether two embeddings are the same up to the embedder's renormalisation.
pub fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() > 0.9999
}

/// Camera `cam`'s settings as the stage tests start from (the configuration defaults).
pub fn camera() -> CameraConfig {
    CameraConfig {
        name: "cam".into(),
        detector: DetectorConfig {
            tiling: Tiling::Off,
            ..DetectorConfig::default()
        },
        ..CameraConfig::default()
    }
}

/// A gallery of one embedding per person: the colour's.
pub struct People(Vec<(i64, String, Vec<f32>)>);

impl People {
    /// `(person id, name, face)` for each person.
    pub fn new(people: &[(i64, &str, FakeFace)]) -> People {
        People(
            people
                .iter()
                .map(|(id, n, f)| (*id, n.to_string(), embedding_of(*f)))
                .collect(),
        )
    }
}

impl Identify for People {
    fn best_match(&self, e: &[f32]) -> Result<Option<MatchInfo>> {
        Ok(self
            .0
            .iter()
            .map(|(id, name, v)| MatchInfo {
                person_id: *id,
                name: name.clone(),
                similarity: v.iter().zip(e).map(|(a, b)| a * b).sum(),
            })
            .max_by(|a, b| a.similarity.total_cmp(&b.similarity)))
    }
}

/// An enrollment request for `track` on camera `cam`, open for a minute.
pub fn enroll_request(
    cam: usize,
    track: u64,
) -> (EnrollRequest, oneshot::Receiver<Result<Vec<TrackSample>>>) {
    let (tx, rx) = oneshot::channel();
    let req = EnrollRequest {
        camera: cam,
        track_id: track,
        until: std::time::Instant::now() + Duration::from_secs(60),
        max_samples: 10,
        samples: Vec::new(),
        reply: tx,
    };
    (req, rx)
}

/// One camera (index 0) with its state, the fake models and what the stages share.
pub struct Rig {
    pub fake: FakeModels,
    pub analyzer: Analyzer,
    pub st: CamState,
    pub stats: StageStats,
    pub shared: Arc<Shared>,
    pub clock: SimulatedClocks,
    pub cooldown: CoolDown,
    pub enrolls: Vec<EnrollRequest>,
    /// Tracks the events stage decided unknown, for the visitors stage.
    pub unknowns: Vec<super::events::UnknownFace>,
    seq: u64,
}

impl Rig {
    pub fn new(cfg: CameraConfig) -> Rig {
        let fake = FakeModels::new();
        let analyzer =
            Analyzer::with_backend(&fake, &InferenceConfig::default(), cfg.detector).unwrap();
        Rig {
            // The stages get the rig's own cool-down (`cooldown` below), not this one.
            shared: Shared::new(
                std::slice::from_ref(&cfg),
                CoolDown::new(Duration::ZERO, Duration::ZERO),
            ),
            fake,
            analyzer,
            st: CamState::new(cfg),
            stats: StageStats::default(),
            clock: SimulatedClocks::new(),
            cooldown: CoolDown::new(Duration::from_secs(60), Duration::from_secs(10)),
            enrolls: Vec::new(),
            unknowns: Vec::new(),
            seq: 0,
        }
    }

    /// The liveness model on the fake backend.
    pub fn liveness(&self) -> Liveness {
        Liveness::open(&self.fake, &InferenceConfig::default()).unwrap()
    }

    /// A handle onto the rig's shared state.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// A frame showing `faces`, captured at the rig's clock.
    pub fn frame(&self, seq: u64, faces: &[FakeFace]) -> Frame {
        Frame {
            image: Arc::new(draw(640, 480, faces)),
            captured: self.clock.monotonic(),
            wall: self.clock.realtime(),
            seq,
            cut: false,
        }
    }

    /// Stage 1 on `frame`.
    pub fn detect_frame(&mut self, frame: &Frame) -> Option<Seen> {
        super::detect::run(
            &mut self.analyzer.detector,
            &mut self.st,
            frame,
            self.clock.monotonic(),
            &mut self.stats,
        )
        .unwrap()
    }

    /// Stage 1 on a new frame of `faces` (the fake detects exactly those).
    pub fn detect(&mut self, faces: &[FakeFace]) -> Option<Seen> {
        self.fake.detect(faces);
        self.seq += 1;
        let f = self.frame(self.seq, faces);
        self.detect_frame(&f)
    }

    /// Stages 2–4 on what stage 1 saw in `frame`, at `threshold`.
    pub fn embed_and_vote_at(
        &mut self,
        g: &dyn Identify,
        frame: &Frame,
        seen: &Seen,
        threshold: f32,
    ) {
        let collecting: Vec<u64> = self.enrolls.iter().map(|r| r.track_id).collect();
        let todo = super::choose::run(&self.st.cfg, &self.st.tracker.tracks, seen, &collecting);
        let emb = super::embed::run(
            &mut self.analyzer,
            None,
            &mut self.st,
            &frame.image,
            todo,
            &mut self.stats,
        )
        .unwrap();
        super::vote::run(
            g,
            &mut self.st,
            0,
            &frame.image,
            emb,
            threshold,
            &mut self.enrolls,
            &self.shared,
            &mut self.stats,
        )
        .unwrap();
    }

    /// As [`Rig::embed_and_vote_at`] at the camera's threshold.
    pub fn embed_and_vote(&mut self, g: &dyn Identify, frame: &Frame, seen: &Seen) {
        let th = self.st.cfg.threshold;
        self.embed_and_vote_at(g, frame, seen, th);
    }

    /// Stages 1–4 on a new frame of `faces`, at `threshold`.
    pub fn step_vote_at(
        &mut self,
        g: &dyn Identify,
        faces: &[FakeFace],
        threshold: f32,
    ) -> Option<(Frame, Seen)> {
        self.fake.detect(faces);
        self.seq += 1;
        let f = self.frame(self.seq, faces);
        let seen = self.detect_frame(&f)?;
        self.embed_and_vote_at(g, &f, &seen, threshold);
        Some((f, seen))
    }

    /// Stages 1–4 on a new frame of `faces`.
    pub fn step_vote(&mut self, g: &dyn Identify, faces: &[FakeFace]) -> Option<(Frame, Seen)> {
        let th = self.st.cfg.threshold;
        self.step_vote_at(g, faces, th)
    }

    /// Stages 1–5 on a new frame of `faces`: its events.
    pub fn step(&mut self, g: &dyn Identify, faces: &[FakeFace]) -> Vec<Event> {
        let Some((f, seen)) = self.step_vote(g, faces) else {
            return Vec::new();
        };
        super::events::run(
            &mut self.cooldown,
            &mut self.st,
            seen.ended,
            &f,
            self.clock.monotonic(),
            &self.shared,
            &mut self.stats,
            &mut self.unknowns,
        )
    }

    /// The shared last-unknown record: `(camera, track id, face)`.
    pub fn last_unknown(&self) -> Option<(String, u64, TrackSample)> {
        self.handle().last_unknown_track(None)
    }
}
