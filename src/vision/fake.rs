//! A test double for [`Backend`]: scripted model outputs, no LiteRT, no model files.
//!
//! It lives in `vision`, not beside the real runtime in `inference`, because it writes tensors
//! in the layouts that vision's decoders read (anchors, the alignment template): `inference`
//! stays below `vision` and knows nothing about faces.
//!
//! Tests that are about the pipeline (tracking, the embed policy, voting, events, publishing)
//! rather than about model accuracy run on this backend anywhere, in milliseconds, also under
//! QEMU. It is compiled only into the library's unit tests (`#[cfg(test)]`), so the daemon
//! never carries it; an integration test that needs it would put it behind a cargo feature.
//!
//! # Protocol
//! The fake writes the output tensors the real models would, in the layout that the decoders in
//! `vision::detect`, `vision::embed` and `pipeline::liveness` read, so those decoders run
//! unchanged:
//!
//! * **BlazeFace** (`face_detection_*`): two outputs, regressors `[1, N, 16]` and scores
//!   `[1, N, 1]` over the model's `N` anchors ([`DetectorKind::anchors`]). Each scripted
//!   [`FakeFace`] takes one anchor: its logit is the face's score, its 16 regressors are the
//!   box centre and size and the six keypoints relative to that anchor, in input pixels of the
//!   whole-frame letterbox window. Every other anchor scores a logit of −100, below any
//!   threshold. The fake does not see the frame, so it is told the frame size
//!   ([`FakeModels::frame_size`], 640×480 by default); scripted faces decode back to the given
//!   boxes when detection runs one whole-frame pass (`tiling = "off"`, what cameras use).
//! * **MobileFaceNet** (`MobileFaceNet*`): output `[2, 192]`, one embedding per input crop. The
//!   embedding is, in order of precedence: the next of [`FakeModels::embed_next`] (per call), the
//!   one scripted for the crop's colour ([`FakeModels::embed_colour`], per face: a face is drawn
//!   as a box of one colour, see [`draw`], and the mean colour of the aligned crop's centre picks
//!   it), or one derived from that colour (faces of one colour match each other, faces of
//!   distant colours do not). The embedder pads a lone face with a copy of itself; a second
//!   slot identical to the first reuses its embedding and takes nothing from the queue.
//! * **FaceAntiSpoofing** (`FaceAntiSpoofing*`): two outputs `[1, 8]` (scores, leaf mask) with
//!   one leaf set, so the decoded spoof score is exactly the scripted one: the next of
//!   [`FakeModels::spoof_next`], else the one for the crop's colour ([`FakeModels::spoof_colour`]),
//!   else 0 (live).
//!
//! [`FakeModels`] is cheap to clone and every clone shares one script, so a test keeps a clone
//! to script the next frames while the pipeline owns the sessions. [`FakeModels::runs`] counts
//! model runs. Sessions are `Send`; the script sits behind a mutex.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::inference::{Backend, DType, Session, TensorSpec};
use crate::models::ModelFile;
use crate::vision::EMBEDDING_DIM;
use crate::vision::align::{CROP, TEMPLATE};
use crate::vision::detect::DetectorKind;

/// Side of the anti-spoofing model's input.
const LIVENESS_SIDE: usize = 256;

/// A crop's colour picks a scripted value when it is within this RGB distance of its key.
const COLOUR_TOLERANCE: f32 = 24.0;

/// One face the fake detector reports, in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FakeFace {
    /// Detector score, 0..1.
    pub score: f32,
    /// Box `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Right eye, left eye (the person's), nose tip, mouth centre, right ear, left ear.
    pub landmarks: [[f32; 2]; 6],
    /// Colour [`draw`] paints the box in (and the embedder keys on).
    pub colour: [u8; 3],
}

impl FakeFace {
    /// A frontal face filling `bbox`: the keypoints sit where the aligner's template puts them,
    /// so the aligned crop is the box itself. Score 0.9.
    pub fn frontal(bbox: [f32; 4], colour: [u8; 3]) -> FakeFace {
        let (w, h) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
        let at = |fx: f32, fy: f32| [bbox[0] + fx * w, bbox[1] + fy * h];
        let c = CROP as f32;
        let t = |k: usize| at(TEMPLATE[k][0] / c, TEMPLATE[k][1] / c);
        FakeFace {
            score: 0.9,
            bbox,
            landmarks: [t(0), t(1), t(2), t(3), at(0.05, 0.5), at(0.95, 0.5)],
            colour,
        }
    }

    /// The same face with another detector score.
    pub fn with_score(self, score: f32) -> FakeFace {
        FakeFace { score, ..self }
    }
}

/// Paints `faces` as boxes of their colour on a mid-grey `width`×`height` frame.
pub fn draw(width: u32, height: u32, faces: &[FakeFace]) -> RgbImage {
    let mut img = RgbImage::from_pixel(width, height, Rgb([128, 128, 128]));
    for f in faces {
        let x1 = f.bbox[0].max(0.0) as u32;
        let y1 = f.bbox[1].max(0.0) as u32;
        let x2 = (f.bbox[2].max(0.0) as u32).min(width);
        let y2 = (f.bbox[3].max(0.0) as u32).min(height);
        for y in y1..y2 {
            for x in x1..x2 {
                img.put_pixel(x, y, Rgb(f.colour));
            }
        }
    }
    img
}

/// A deterministic unit embedding for `colour`: equal colours give equal vectors, distinct ones
/// nearly orthogonal vectors (what [`FakeModels`] embeds a face it has no script for as).
pub fn colour_embedding(colour: [u8; 3]) -> Vec<f32> {
    let mut state = u64::from_le_bytes([colour[0], colour[1], colour[2], 0x5a, 1, 2, 3, 4]);
    let mut v: Vec<f32> = (0..EMBEDDING_DIM)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// How often each model ran (see [`FakeModels::runs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Runs {
    /// Detector runs (one per whole-frame pass).
    pub detector: u64,
    /// Embedder runs (one per pair of crops).
    pub embedder: u64,
    /// Crops embedded (padding excluded).
    pub embedded: u64,
    /// Anti-spoofing runs.
    pub liveness: u64,
}

#[derive(Debug)]
struct Script {
    frame: (u32, u32),
    faces: Vec<FakeFace>,
    next_faces: VecDeque<Vec<FakeFace>>,
    embed_next: VecDeque<Vec<f32>>,
    embed_colour: Vec<([u8; 3], Vec<f32>)>,
    spoof_next: VecDeque<f32>,
    spoof_colour: Vec<([u8; 3], f32)>,
    fail_next: u32,
    runs: Runs,
}

/// The fake backend and its script (module docs). Clones share the script.
#[derive(Debug, Clone)]
pub struct FakeModels {
    script: Arc<Mutex<Script>>,
}

impl Default for FakeModels {
    fn default() -> Self {
        FakeModels::new()
    }
}

impl FakeModels {
    /// A backend that detects no face, for 640×480 frames.
    pub fn new() -> FakeModels {
        FakeModels {
            script: Arc::new(Mutex::new(Script {
                frame: (640, 480),
                faces: Vec::new(),
                next_faces: VecDeque::new(),
                embed_next: VecDeque::new(),
                embed_colour: Vec::new(),
                spoof_next: VecDeque::new(),
                spoof_colour: Vec::new(),
                fail_next: 0,
                runs: Runs::default(),
            })),
        }
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The size of the frames the detector will be run on (the boxes are placed for it).
    pub fn frame_size(&self, width: u32, height: u32) -> &Self {
        self.script().frame = (width, height);
        self
    }

    /// What every detector run returns from now on (after any queued [`FakeModels::detect_next`]).
    pub fn detect(&self, faces: &[FakeFace]) -> &Self {
        self.script().faces = faces.to_vec();
        self
    }

    /// Queues the faces of one detector run; queued runs come before [`FakeModels::detect`]'s.
    pub fn detect_next(&self, faces: &[FakeFace]) -> &Self {
        self.script().next_faces.push_back(faces.to_vec());
        self
    }

    /// Queues the embedding of the next embedded crop (per call; before any colour's).
    pub fn embed_next(&self, embedding: Vec<f32>) -> &Self {
        self.script().embed_next.push_back(embedding);
        self
    }

    /// Crops of (about) `colour` embed to `embedding` (per face).
    pub fn embed_colour(&self, colour: [u8; 3], embedding: Vec<f32>) -> &Self {
        let mut s = self.script();
        s.embed_colour.retain(|(c, _)| *c != colour);
        s.embed_colour.push((colour, embedding));
        self
    }

    /// Queues the spoof score of the next anti-spoofing run.
    pub fn spoof_next(&self, score: f32) -> &Self {
        self.script().spoof_next.push_back(score);
        self
    }

    /// Faces of (about) `colour` get spoof score `score` (0 = live; the usual cut is 0.2).
    pub fn spoof_colour(&self, colour: [u8; 3], score: f32) -> &Self {
        let mut s = self.script();
        s.spoof_colour.retain(|(c, _)| *c != colour);
        s.spoof_colour.push((colour, score));
        self
    }

    /// The next `n` model runs (any model) fail with an internal error.
    pub fn fail_next(&self, n: u32) -> &Self {
        self.script().fail_next = n;
        self
    }

    /// How often each model ran so far.
    pub fn runs(&self) -> Runs {
        self.script().runs
    }
}

impl Backend for FakeModels {
    fn name(&self) -> &'static str {
        "fake"
    }

    /// Compiles by name (`label` is the model's file name); the bytes are ignored.
    fn compile(&self, label: &str, _bytes: &[u8], _threads: usize) -> Result<Box<dyn Session>> {
        let kind = if label.starts_with("face_detection_short") {
            Kind::Detector(DetectorKind::Short)
        } else if label.starts_with("face_detection_full") {
            Kind::Detector(DetectorKind::Full)
        } else if label.starts_with("MobileFaceNet") {
            Kind::Embedder
        } else if label.starts_with("FaceAntiSpoofing") {
            Kind::Liveness
        } else {
            return Err(Error::precondition(format!(
                "the fake backend has no model like {label}"
            )));
        };
        let f32s = |shape: Vec<usize>| TensorSpec {
            shape,
            dtype: DType::F32,
        };
        let (inputs, outputs) = match kind {
            Kind::Detector(k) => {
                let (s, n) = (k.input_size(), k.anchors().len());
                (
                    vec![f32s(vec![1, s, s, 3])],
                    vec![f32s(vec![1, n, 16]), f32s(vec![1, n, 1])],
                )
            }
            Kind::Embedder => {
                let c = CROP as usize;
                (
                    vec![f32s(vec![2, c, c, 3])],
                    vec![f32s(vec![2, EMBEDDING_DIM])],
                )
            }
            Kind::Liveness => (
                vec![f32s(vec![1, LIVENESS_SIDE, LIVENESS_SIDE, 3])],
                vec![f32s(vec![1, 8]), f32s(vec![1, 8])],
            ),
        };
        Ok(Box::new(FakeSession {
            kind,
            script: self.script.clone(),
            inputs,
            outputs,
        }))
    }

    /// No file is read: the fake needs none.
    fn load(
        &self,
        model: &ModelFile,
        _dir: Option<&Path>,
        threads: usize,
    ) -> Result<Box<dyn Session>> {
        self.compile(model.file, &[], threads)
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Detector(DetectorKind),
    Embedder,
    Liveness,
}

struct FakeSession {
    kind: Kind,
    script: Arc<Mutex<Script>>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
}

/// Mean colour of the `side`×`side` square at the centre of an `n`×`n` RGB tensor, mapping each
/// value back to 0..255 with `to_u8`.
fn centre_colour(t: &[f32], n: usize, side: usize, to_u8: impl Fn(f32) -> f32) -> [f32; 3] {
    let mut sum = [0.0f32; 3];
    let lo = (n - side) / 2;
    for y in lo..lo + side {
        for x in lo..lo + side {
            let p = (y * n + x) * 3;
            for c in 0..3 {
                sum[c] += to_u8(t[p + c]);
            }
        }
    }
    sum.map(|v| v / (side * side) as f32)
}

fn nearest<T>(table: &[([u8; 3], T)], colour: [f32; 3]) -> Option<&T> {
    let dist = |c: &[u8; 3]| {
        c.iter()
            .zip(colour)
            .map(|(&a, b)| (a as f32 - b).powi(2))
            .sum::<f32>()
            .sqrt()
    };
    table
        .iter()
        .map(|(c, v)| (dist(c), v))
        .filter(|(d, _)| *d <= COLOUR_TOLERANCE)
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v)
}

fn rounded(c: [f32; 3]) -> [u8; 3] {
    c.map(|v| v.round().clamp(0.0, 255.0) as u8)
}

impl Session for FakeSession {
    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    fn run(&mut self, inputs: &[&[f32]], outputs: &mut [Vec<f32>]) -> Result<()> {
        let mut s = self.script.lock().unwrap_or_else(|p| p.into_inner());
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(Error::internal("fake model failure (scripted)"));
        }
        for (o, spec) in outputs.iter_mut().zip(&self.outputs) {
            o.clear();
            o.resize(spec.len(), 0.0);
        }
        match self.kind {
            Kind::Detector(k) => {
                s.runs.detector += 1;
                let faces = s.next_faces.pop_front().unwrap_or_else(|| s.faces.clone());
                let (w, h) = (s.frame.0 as f32, s.frame.1 as f32);
                let side = w.max(h);
                let (x0, y0) = ((w - side) / 2.0, (h - side) / 2.0);
                let sz = k.input_size() as f32;
                let anchors = k.anchors();
                let (reg, cls) = outputs.split_at_mut(1);
                let (reg, cls) = (&mut reg[0], &mut cls[0]);
                cls.fill(-100.0);
                for (f, (a, i)) in faces.iter().zip(anchors.iter().zip(0..)) {
                    // Normalised coordinates of the whole-frame window, relative to the anchor,
                    // in input pixels: the inverse of vision::detect's decoding.
                    let nx = |x: f32| ((x - x0) / side - a[0]) * sz;
                    let ny = |y: f32| ((y - y0) / side - a[1]) * sz;
                    let r = &mut reg[i * 16..i * 16 + 16];
                    r[0] = nx((f.bbox[0] + f.bbox[2]) / 2.0);
                    r[1] = ny((f.bbox[1] + f.bbox[3]) / 2.0);
                    r[2] = (f.bbox[2] - f.bbox[0]) / side * sz;
                    r[3] = (f.bbox[3] - f.bbox[1]) / side * sz;
                    for (k, l) in f.landmarks.iter().enumerate() {
                        r[4 + 2 * k] = nx(l[0]);
                        r[5 + 2 * k] = ny(l[1]);
                    }
                    let p = f.score.clamp(1e-6, 1.0 - 1e-6);
                    cls[i] = (p / (1.0 - p)).ln();
                }
            }
            Kind::Embedder => {
                s.runs.embedder += 1;
                let c = CROP as usize;
                let px = c * c * 3;
                let input = inputs
                    .first()
                    .ok_or_else(|| Error::internal("fake embedder: no input"))?;
                let mut first: Option<Vec<f32>> = None;
                for slot in 0..2 {
                    let crop = &input[slot * px..(slot + 1) * px];
                    let e = match &first {
                        Some(e) if crop == &input[..px] => e.clone(),
                        _ => {
                            s.runs.embedded += 1;
                            let colour = centre_colour(crop, c, 16, |v| v * 128.0 + 127.5);
                            match s.embed_next.pop_front() {
                                Some(e) => e,
                                None => nearest(&s.embed_colour, colour)
                                    .cloned()
                                    .unwrap_or_else(|| colour_embedding(rounded(colour))),
                            }
                        }
                    };
                    if e.len() != EMBEDDING_DIM {
                        return Err(Error::internal(format!(
                            "fake embedder: scripted embedding has {} values, not {EMBEDDING_DIM}",
                            e.len()
                        )));
                    }
                    outputs[0][slot * EMBEDDING_DIM..(slot + 1) * EMBEDDING_DIM]
                        .copy_from_slice(&e);
                    first.get_or_insert(e);
                }
            }
            Kind::Liveness => {
                s.runs.liveness += 1;
                let input = inputs
                    .first()
                    .ok_or_else(|| Error::internal("fake liveness: no input"))?;
                let colour = centre_colour(input, LIVENESS_SIDE, 16, |v| v * 255.0);
                let score = match s.spoof_next.pop_front() {
                    Some(v) => v,
                    None => nearest(&s.spoof_colour, colour).copied().unwrap_or(0.0),
                };
                outputs[0][0] = score;
                outputs[1][0] = 1.0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::detect::{DetectorConfig, Tiling};
    use crate::vision::{Analyzer, InferenceConfig};

    fn analyzer(fake: &FakeModels) -> Analyzer {
        let det = DetectorConfig {
            tiling: Tiling::Off,
            ..DetectorConfig::default()
        };
        Analyzer::with_backend(fake, &InferenceConfig::default(), det).unwrap()
    }

    #[test]
    fn scripted_faces_decode_to_their_boxes_and_keypoints() {
        let fake = FakeModels::new();
        let a = FakeFace::frontal([100.0, 60.0, 220.0, 200.0], [200, 30, 30]);
        let b = FakeFace::frontal([400.0, 300.0, 460.0, 370.0], [30, 200, 30]).with_score(0.7);
        fake.detect(&[a, b]);
        let mut an = analyzer(&fake);
        let dets = an.detector.detect(&draw(640, 480, &[a, b])).unwrap();
        assert_eq!(dets.len(), 2);
        for (d, f) in dets.iter().zip([a, b]) {
            assert!((d.score - f.score).abs() < 1e-4, "{d:?}");
            for k in 0..4 {
                assert!((d.bbox[k] - f.bbox[k]).abs() < 0.01, "{d:?} vs {f:?}");
            }
            for k in 0..6 {
                for c in 0..2 {
                    assert!((d.landmarks[k][c] - f.landmarks[k][c]).abs() < 0.01);
                }
            }
        }
        // Below the configured min_score (0.5): not reported.
        fake.detect(&[a.with_score(0.3)]);
        assert!(an.detector.detect(&draw(640, 480, &[])).unwrap().is_empty());
        assert_eq!(fake.runs().detector, 2);
    }

    #[test]
    fn embeddings_follow_the_queue_then_the_face_colour() {
        let fake = FakeModels::new();
        let red = FakeFace::frontal([100.0, 60.0, 220.0, 200.0], [200, 30, 30]);
        let green = FakeFace::frontal([400.0, 200.0, 520.0, 340.0], [30, 200, 30]);
        let img = draw(640, 480, &[red, green]);
        let mut an = analyzer(&fake);
        let dets = [red, green].map(|f| crate::vision::detect::Detection {
            score: f.score,
            bbox: f.bbox,
            landmarks: f.landmarks,
        });
        let scripted = colour_embedding([1, 2, 3]);
        fake.embed_colour([30, 200, 30], scripted.clone());
        // The embedder renormalises what the model outputs: equal up to rounding.
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() > 0.9999;
        let faces = an.embed_detections(&img, &dets).unwrap();
        assert!(same(&faces[0].embedding, &colour_embedding([200, 30, 30])));
        assert!(same(&faces[1].embedding, &scripted));
        // Per call: the queue wins over the colour, one entry per real crop (not the padding).
        let queued = colour_embedding([9, 9, 9]);
        fake.embed_next(queued.clone());
        let faces = an.embed_detections(&img, &dets[1..]).unwrap();
        assert!(same(&faces[0].embedding, &queued));
        let faces = an.embed_detections(&img, &dets[1..]).unwrap();
        assert!(same(&faces[0].embedding, &scripted));
        assert_eq!(fake.runs().embedded, 4);
        let cos: f32 = colour_embedding([200, 30, 30])
            .iter()
            .zip(&scripted)
            .map(|(a, b)| a * b)
            .sum();
        assert!(cos.abs() < 0.3, "distinct colours must not match: {cos}");
    }

    #[test]
    fn unknown_model_names_and_scripted_failures_are_errors() {
        let fake = FakeModels::new();
        assert!(fake.compile("other.tflite", &[], 1).is_err());
        let mut an = analyzer(&fake);
        fake.fail_next(1);
        assert!(an.detector.detect(&draw(64, 48, &[])).is_err());
        assert!(an.detector.detect(&draw(64, 48, &[])).is_ok());
    }
}
