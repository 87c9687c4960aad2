//! Face detection with BlazeFace (MediaPipe): letterbox → model → anchor decoding → weighted
//! non-maximum suppression, with boxes and the 6 keypoints mapped back to image pixels.
//!
//! A single pass over a whole frame misses small faces and faces cut by the frame edge, so still
//! images get a multi-scale search with verification (see [`Tiling`]). Runs on whichever thread
//! owns the [`Detector`] (it holds non-`Sync` model sessions).

use fast_image_resize as fr;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::inference::Session;
use crate::models::{self, ModelFile};

/// Which BlazeFace model to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// 128×128 input, faces within about 2 m of the camera. Fastest.
    #[default]
    Short,
    /// 192×192 input, faces up to about 5 m.
    Full,
}

impl DetectorKind {
    /// The model file for this detector.
    pub fn model(self) -> ModelFile {
        match self {
            DetectorKind::Short => models::BLAZEFACE_SHORT,
            DetectorKind::Full => models::BLAZEFACE_FULL,
        }
    }

    /// Input side length in pixels.
    pub fn input_size(self) -> usize {
        match self {
            DetectorKind::Short => 128,
            DetectorKind::Full => 192,
        }
    }

    /// The model's anchor centres (normalised input coordinates), in output order.
    pub fn anchors(self) -> Vec<[f32; 2]> {
        let mut a = Vec::new();
        match self {
            DetectorKind::Short => {
                for (stride, per_cell) in [(8usize, 2usize), (16, 6)] {
                    let g = 128 / stride;
                    for y in 0..g {
                        for x in 0..g {
                            for _ in 0..per_cell {
                                a.push([(x as f32 + 0.5) / g as f32, (y as f32 + 0.5) / g as f32]);
                            }
                        }
                    }
                }
            }
            DetectorKind::Full => {
                let g = 48;
                for y in 0..g {
                    for x in 0..g {
                        a.push([(x as f32 + 0.5) / g as f32, (y as f32 + 0.5) / g as f32]);
                    }
                }
            }
        }
        a
    }
}

impl std::str::FromStr for DetectorKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "short" => Ok(DetectorKind::Short),
            "full" => Ok(DetectorKind::Full),
            _ => Err(Error::invalid(format!(
                "unknown detector {s:?}: use short or full"
            ))),
        }
    }
}

/// How hard to look for faces.
///
/// One whole-frame pass misses faces that are small, or large and cut by the frame edge (a
/// selfie), and BlazeFace short-range also fires on some round, face-like objects. `Auto` fixes
/// both for still images: extra proposal passes (the full-range model, and both models on the
/// frame zoomed out with a black border so that cut faces get context), then every proposal is
/// confirmed by the full-range model on a window three times the face's size around it. Costs
/// about 20–40 ms per image on a small CPU, so streams use `Off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tiling {
    /// One pass of the configured model (cheapest; right for a door camera stream).
    Off,
    /// Multi-scale proposals + verification (the default for still images).
    #[default]
    Auto,
    /// As `Auto`, plus four overlapping corner tiles for very small faces.
    Always,
}

/// Detector settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Which model.
    pub kind: DetectorKind,
    /// Minimum face score (0..1) to keep a detection.
    pub min_score: f32,
    /// IoU above which overlapping detections are merged.
    pub nms_iou: f32,
    /// Extra tiled pass for small faces.
    pub tiling: Tiling,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            kind: DetectorKind::Short,
            min_score: 0.5,
            nms_iou: 0.3,
            tiling: Tiling::Auto,
        }
    }
}

impl DetectorConfig {
    /// Checks the values; the message names the offending key.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_score) {
            return Err(Error::invalid(format!(
                "min_score must be within 0..1, got {}",
                self.min_score
            )));
        }
        if !(0.0..1.0).contains(&self.nms_iou) {
            return Err(Error::invalid(format!(
                "nms_iou must be within 0..1, got {}",
                self.nms_iou
            )));
        }
        Ok(())
    }
}

/// One detected face, in image pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    /// Face score, 0..1.
    pub score: f32,
    /// Box `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Right eye, left eye (the person's), nose tip, mouth centre, right ear, left ear.
    pub landmarks: [[f32; 2]; 6],
}

impl Detection {
    /// Box width in pixels.
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }

    /// Box height in pixels.
    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }
}

/// Intersection over union of two boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    inter / (area(a) + area(b) - inter + 1e-9)
}

/// One BlazeFace model with its scratch buffers.
struct Pass {
    kind: DetectorKind,
    session: Box<dyn Session>,
    size: usize,
    anchors: Vec<[f32; 2]>,
    reg_idx: usize,
    cls_idx: usize,
    input: Vec<f32>,
    outputs: Vec<Vec<f32>>,
}

impl Pass {
    fn new(kind: DetectorKind, session: Box<dyn Session>) -> Result<Self> {
        let size = kind.input_size();
        let anchors = kind.anchors();
        let bad = || {
            Error::precondition(format!(
                "model {} does not have BlazeFace's shapes (1×{size}×{size}×3 in, {}×16 and {}×1 out)",
                kind.model().file,
                anchors.len(),
                anchors.len()
            ))
        };
        if session.inputs().len() != 1 || session.inputs()[0].shape != [1, size, size, 3] {
            return Err(bad());
        }
        let outs = session.outputs();
        let find = |last: usize| {
            outs.iter()
                .position(|t| t.shape.last() == Some(&last) && t.len() == anchors.len() * last)
        };
        let (reg_idx, cls_idx) = match (find(16), find(1)) {
            (Some(r), Some(c)) if outs.len() == 2 => (r, c),
            _ => return Err(bad()),
        };
        let n_out = outs.len();
        Ok(Pass {
            kind,
            session,
            size,
            anchors,
            reg_idx,
            cls_idx,
            input: vec![0.0; size * size * 3],
            outputs: vec![Vec::new(); n_out],
        })
    }
}

/// A square window of the image, `[x0, y0, side]` in pixels; it may reach past the image, whose
/// outside reads as black (the letterbox padding BlazeFace expects).
type Window = [f32; 3];

/// Shared resize scratch.
#[derive(Default)]
struct Scratch {
    resizer: fr::Resizer,
    pixels: Vec<u8>,
}

/// A BlazeFace detector: the configured model, plus the full-range model as a verifier when
/// [`Tiling`] is not `Off`.
pub struct Detector {
    cfg: DetectorConfig,
    primary: Pass,
    verifier: Option<Pass>,
    scratch: Scratch,
}

impl Detector {
    /// Builds a detector around a compiled session of `cfg.kind`'s model; `verifier` must be a
    /// full-range session when `cfg.tiling` is not `Off`.
    pub fn new(
        primary: Box<dyn Session>,
        verifier: Option<Box<dyn Session>>,
        cfg: DetectorConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let primary = Pass::new(cfg.kind, primary)?;
        let verifier = verifier
            .map(|v| Pass::new(DetectorKind::Full, v))
            .transpose()?;
        if cfg.tiling != Tiling::Off && verifier.is_none() {
            return Err(Error::internal(
                "multi-pass detection needs the full-range verifier model",
            ));
        }
        Ok(Detector {
            cfg,
            primary,
            verifier,
            scratch: Scratch::default(),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Changes score threshold and NMS live (the models stay; multi-pass can only be turned on
    /// if the verifier was loaded).
    pub fn set_config(&mut self, cfg: DetectorConfig) -> Result<()> {
        cfg.validate()?;
        if cfg.kind != self.cfg.kind || (cfg.tiling != Tiling::Off && self.verifier.is_none()) {
            return Err(Error::invalid(
                "changing the detector model or enabling multi-pass needs a new Detector",
            ));
        }
        self.cfg = cfg;
        Ok(())
    }

    /// Finds the faces in `img`, best score first.
    pub fn detect(&mut self, img: &RgbImage) -> Result<Vec<Detection>> {
        let (w, h) = (img.width() as f32, img.height() as f32);
        if w == 0.0 || h == 0.0 {
            return Ok(Vec::new());
        }
        let s = w.max(h);
        let whole: Window = [(w - s) / 2.0, (h - s) / 2.0, s];
        let mut cands = Vec::new();
        let Some(verifier) = self
            .verifier
            .as_mut()
            .filter(|_| self.cfg.tiling != Tiling::Off)
        else {
            run_window(
                &mut self.primary,
                &mut self.scratch,
                img,
                whole,
                self.cfg.min_score,
                &mut cands,
            )?;
            return Ok(weighted_nms(&mut cands, self.cfg.nms_iou));
        };
        // Proposals at a low score from several views, then each one confirmed.
        const PROPOSAL: f32 = 0.2;
        let z = s * 1.5;
        let zoomed: Window = [(w - z) / 2.0, (h - z) / 2.0, z];
        let mut windows = vec![whole, zoomed];
        if self.cfg.tiling == Tiling::Always {
            let t = s * 0.6;
            for y in [0.0, h - t] {
                for x in [0.0, w - t] {
                    windows.push([x, y, t]);
                }
            }
        }
        for win in &windows {
            run_window(
                &mut self.primary,
                &mut self.scratch,
                img,
                *win,
                PROPOSAL,
                &mut cands,
            )?;
            if self.primary.kind != DetectorKind::Full {
                run_window(verifier, &mut self.scratch, img, *win, PROPOSAL, &mut cands)?;
            }
        }
        let proposals = weighted_nms(&mut cands, self.cfg.nms_iou);
        let mut out = Vec::with_capacity(proposals.len());
        let mut seen = Vec::new();
        for p in proposals {
            let side = 3.0 * p.width().max(p.height());
            let cx = (p.bbox[0] + p.bbox[2]) / 2.0;
            let cy = (p.bbox[1] + p.bbox[3]) / 2.0;
            seen.clear();
            run_window(
                verifier,
                &mut self.scratch,
                img,
                [cx - side / 2.0, cy - side / 2.0, side],
                0.05,
                &mut seen,
            )?;
            let confirm = seen
                .iter()
                .filter(|d| iou(&d.bbox, &p.bbox) > 0.3)
                .map(|d| d.score)
                .fold(0.0, f32::max);
            if std::env::var_os("FACED_DEBUG_DETECT").is_some() {
                eprintln!(
                    "proposal {:?} score {:.2} confirm {confirm:.2}",
                    p.bbox.map(|v| v as i32),
                    p.score
                );
            }
            if confirm < self.cfg.min_score {
                continue;
            }
            // Geometry from the primary model on a window twice the face's size: the face then
            // fills half the input whatever its size in the frame, which gives the steadiest
            // keypoints for alignment (better than a mean over differently-scaled proposals).
            let side = 2.0 * p.width().max(p.height());
            seen.clear();
            run_window(
                &mut self.primary,
                &mut self.scratch,
                img,
                [cx - side / 2.0, cy - side / 2.0, side],
                0.05,
                &mut seen,
            )?;
            let refined = seen
                .iter()
                .filter(|d| iou(&d.bbox, &p.bbox) > 0.3)
                .max_by(|a, b| a.score.total_cmp(&b.score))
                .copied()
                .unwrap_or(p);
            out.push(Detection {
                score: p.score.max(confirm),
                ..refined
            });
        }
        // Two proposals of one face can refine to the same box: keep the better one.
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Detection> = Vec::with_capacity(out.len());
        for d in out {
            if kept
                .iter()
                .all(|k| iou(&k.bbox, &d.bbox) <= self.cfg.nms_iou)
            {
                kept.push(d);
            }
        }
        Ok(kept)
    }
}

/// Runs `pass` on one window of `img` and appends its raw (pre-NMS) detections scoring at least
/// `min_score`, in image pixels.
fn run_window(
    pass: &mut Pass,
    scratch: &mut Scratch,
    img: &RgbImage,
    win: Window,
    min_score: f32,
    out: &mut Vec<Detection>,
) -> Result<()> {
    let [x0, y0, side] = win;
    let size = pass.size;
    let scale = size as f32 / side;
    // The part of the window inside the image, and where it lands in the model input.
    let ix0 = x0.max(0.0).floor();
    let iy0 = y0.max(0.0).floor();
    let ix1 = (x0 + side).min(img.width() as f32).ceil();
    let iy1 = (y0 + side).min(img.height() as f32).ceil();
    pass.input.fill(-1.0);
    if ix1 <= ix0 || iy1 <= iy0 {
        return Ok(());
    }
    let ox = (((ix0 - x0) * scale).round() as usize).min(size - 1);
    let oy = (((iy0 - y0) * scale).round() as usize).min(size - 1);
    let dw = (((ix1 - ix0) * scale).round() as usize).clamp(1, size - ox);
    let dh = (((iy1 - iy0) * scale).round() as usize).clamp(1, size - oy);
    scratch.pixels.resize(dw * dh * 3, 0);
    {
        let src =
            fr::images::ImageRef::new(img.width(), img.height(), img.as_raw(), fr::PixelType::U8x3)
                .map_err(|e| Error::internal(format!("resize source: {e}")))?;
        let mut dst = fr::images::Image::from_slice_u8(
            dw as u32,
            dh as u32,
            &mut scratch.pixels,
            fr::PixelType::U8x3,
        )
        .map_err(|e| Error::internal(format!("resize target: {e}")))?;
        let opts = fr::ResizeOptions::new()
            .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
            .crop(
                ix0 as f64,
                iy0 as f64,
                (ix1 - ix0) as f64,
                (iy1 - iy0) as f64,
            );
        scratch
            .resizer
            .resize(&src, &mut dst, &opts)
            .map_err(|e| Error::internal(format!("resize: {e}")))?;
    }
    for y in 0..dh {
        let row = &scratch.pixels[y * dw * 3..(y + 1) * dw * 3];
        let o = ((y + oy) * size + ox) * 3;
        for (d, &v) in pass.input[o..o + dw * 3].iter_mut().zip(row) {
            *d = v as f32 * (1.0 / 127.5) - 1.0;
        }
    }
    pass.session.run(&[&pass.input], &mut pass.outputs)?;
    let reg = &pass.outputs[pass.reg_idx];
    let cls = &pass.outputs[pass.cls_idx];
    // Threshold in logit space: sigmoid is monotonic, so only survivors pay for exp().
    let m = min_score.clamp(1e-6, 1.0 - 1e-6);
    let logit_min = (m / (1.0 - m)).ln();
    let sx = (ix1 - ix0) / dw as f32;
    let sy = (iy1 - iy0) / dh as f32;
    let sz = size as f32;
    let to_img = |nx: f32, ny: f32| -> [f32; 2] {
        [
            ix0 + (nx * sz - ox as f32) * sx,
            iy0 + (ny * sz - oy as f32) * sy,
        ]
    };
    for (i, a) in pass.anchors.iter().enumerate() {
        let logit = cls[i].clamp(-100.0, 100.0);
        if logit < logit_min {
            continue;
        }
        let score = 1.0 / (1.0 + (-logit).exp());
        let r = &reg[i * 16..i * 16 + 16];
        let cx = r[0] / sz + a[0];
        let cy = r[1] / sz + a[1];
        let bw = r[2] / sz;
        let bh = r[3] / sz;
        let p1 = to_img(cx - bw / 2.0, cy - bh / 2.0);
        let p2 = to_img(cx + bw / 2.0, cy + bh / 2.0);
        let mut landmarks = [[0.0; 2]; 6];
        for (k, l) in landmarks.iter_mut().enumerate() {
            *l = to_img(r[4 + 2 * k] / sz + a[0], r[5 + 2 * k] / sz + a[1]);
        }
        out.push(Detection {
            score,
            bbox: [p1[0], p1[1], p2[0], p2[1]],
            landmarks,
        });
    }
    Ok(())
}

/// MediaPipe-style weighted NMS: each cluster of boxes overlapping the best one by more than
/// `iou_min` becomes one detection, its box and keypoints the score-weighted mean of the cluster,
/// its score the best one. Consumes `dets`.
pub fn weighted_nms(dets: &mut Vec<Detection>, iou_min: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    let mut rest: Vec<Detection> = std::mem::take(dets);
    while let Some(best) = rest.first().copied() {
        let (group, keep): (Vec<Detection>, Vec<Detection>) = rest
            .into_iter()
            .partition(|d| iou(&best.bbox, &d.bbox) > iou_min);
        rest = keep;
        let total: f32 = group.iter().map(|d| d.score).sum();
        let mut merged = Detection {
            score: best.score,
            bbox: [0.0; 4],
            landmarks: [[0.0; 2]; 6],
        };
        for d in &group {
            let wgt = d.score / total;
            for k in 0..4 {
                merged.bbox[k] += d.bbox[k] * wgt;
            }
            for k in 0..6 {
                merged.landmarks[k][0] += d.landmarks[k][0] * wgt;
                merged.landmarks[k][1] += d.landmarks[k][1] * wgt;
            }
        }
        out.push(merged);
    }
    out
}

/// Loads, verifies and compiles the detector model for `cfg` (and the full-range verifier when
/// `cfg.tiling` asks for multi-pass detection), in `inf.precision`.
pub fn load(
    backend: &dyn crate::inference::Backend,
    inf: &super::InferenceConfig,
    cfg: DetectorConfig,
) -> Result<Detector> {
    let compile = |m: ModelFile| -> Result<Box<dyn Session>> {
        backend.load(&m, inf.models_dir.as_deref(), inf.threads)
    };
    let primary = compile(match cfg.kind {
        DetectorKind::Short => inf.precision.short_range(),
        DetectorKind::Full => inf.precision.full_range(),
    })?;
    let verifier = if cfg.tiling == Tiling::Off {
        None
    } else {
        Some(compile(inf.precision.full_range())?)
    };
    Detector::new(primary, verifier, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_match_blazeface_layouts() {
        assert_eq!(DetectorKind::Short.anchors().len(), 896);
        assert_eq!(DetectorKind::Full.anchors().len(), 2304);
        let a = DetectorKind::Short.anchors();
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0]);
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_separate_faces() {
        let d = |s: f32, x: f32| Detection {
            score: s,
            bbox: [x, 0.0, x + 10.0, 10.0],
            landmarks: [[x, 0.0]; 6],
        };
        let mut v = vec![d(0.6, 1.0), d(0.9, 0.0), d(0.8, 50.0)];
        let out = weighted_nms(&mut v, 0.3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        // 0.9 and 0.6 weighted: x1 = 0.6/1.5 = 0.4.
        assert!((out[0].bbox[0] - 0.4).abs() < 1e-5);
        assert_eq!(out[1].bbox[0], 50.0);
    }
}
