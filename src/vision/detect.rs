//! Face detection with BlazeFace (MediaPipe): letterbox → model → anchor decoding → weighted
//! non-maximum suppression, with boxes and the 6 keypoints mapped back to image pixels.
//!
//! A single pass over a whole frame sees a small face as a few pixels of the 128² input, so group
//! photos also get a tiled pass (see [`Tiling`]): overlapping crops, each letterboxed on its own,
//! whose detections are merged with the whole-frame ones. Runs on whichever thread owns the
//! [`Detector`] (it holds a non-`Sync` model session).

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

    fn anchors(self) -> Vec<[f32; 2]> {
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
            _ => Err(Error::invalid(format!("unknown detector {s:?}: use short or full"))),
        }
    }
}

/// When to run the extra tiled pass that finds small faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tiling {
    /// Never: one pass per frame (cheapest; right for a door camera where faces are large).
    Off,
    /// Only when the whole-frame pass suggests small faces: it found none, or its smallest face
    /// is under a fifth of the frame's short side.
    #[default]
    Auto,
    /// Always.
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
        DetectorConfig { kind: DetectorKind::Short, min_score: 0.5, nms_iou: 0.3, tiling: Tiling::Auto }
    }
}

impl DetectorConfig {
    /// Checks the values; the message names the offending key.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_score) {
            return Err(Error::invalid(format!("min_score must be within 0..1, got {}", self.min_score)));
        }
        if !(0.0..1.0).contains(&self.nms_iou) {
            return Err(Error::invalid(format!("nms_iou must be within 0..1, got {}", self.nms_iou)));
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

/// A BlazeFace detector with its own model session and scratch buffers.
pub struct Detector {
    session: Box<dyn Session>,
    cfg: DetectorConfig,
    size: usize,
    anchors: Vec<[f32; 2]>,
    reg_idx: usize,
    cls_idx: usize,
    input: Vec<f32>,
    outputs: Vec<Vec<f32>>,
    resizer: fr::Resizer,
    scratch: Vec<u8>,
    candidates: Vec<Detection>,
}

/// A rectangle of the image `[x, y, w, h]` in pixels.
type Region = [u32; 4];

impl Detector {
    /// Builds a detector around a compiled session of `cfg.kind`'s model.
    pub fn new(session: Box<dyn Session>, cfg: DetectorConfig) -> Result<Self> {
        cfg.validate()?;
        let size = cfg.kind.input_size();
        let anchors = cfg.kind.anchors();
        let bad = || {
            Error::precondition(format!(
                "model {} does not have BlazeFace's shapes (1×{size}×{size}×3 in, {}×16 and {}×1 out)",
                cfg.kind.model().file,
                anchors.len(),
                anchors.len()
            ))
        };
        if session.inputs().len() != 1 || session.inputs()[0].shape != [1, size, size, 3] {
            return Err(bad());
        }
        let outs = session.outputs();
        let find = |last: usize| {
            outs.iter().position(|t| t.shape.last() == Some(&last) && t.len() == anchors.len() * last)
        };
        let (reg_idx, cls_idx) = match (find(16), find(1)) {
            (Some(r), Some(c)) if outs.len() == 2 => (r, c),
            _ => return Err(bad()),
        };
        let n_out = outs.len();
        Ok(Detector {
            session,
            cfg,
            size,
            anchors,
            reg_idx,
            cls_idx,
            input: vec![0.0; size * size * 3],
            outputs: vec![Vec::new(); n_out],
            resizer: fr::Resizer::new(),
            scratch: Vec::new(),
            candidates: Vec::new(),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Changes score threshold and tiling live (the model stays).
    pub fn set_config(&mut self, cfg: DetectorConfig) -> Result<()> {
        cfg.validate()?;
        if cfg.kind != self.cfg.kind {
            return Err(Error::invalid("changing the detector model needs a new Detector"));
        }
        self.cfg = cfg;
        Ok(())
    }

    /// Finds the faces in `img`, best score first.
    pub fn detect(&mut self, img: &RgbImage) -> Result<Vec<Detection>> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        self.candidates.clear();
        self.run_region(img, [0, 0, w, h], false)?;
        let first = weighted_nms(&mut self.candidates.clone(), self.cfg.nms_iou);
        let small = (w.min(h) as f32) * 0.2;
        let big_enough = w.max(h) as usize >= 2 * self.size;
        let tile = match self.cfg.tiling {
            Tiling::Off => false,
            Tiling::Always => true,
            Tiling::Auto => big_enough && (first.is_empty() || first.iter().any(|d| d.height() < small)),
        };
        if !tile {
            return Ok(first);
        }
        for region in tiles(w, h) {
            self.run_region(img, region, true)?;
        }
        let mut all = std::mem::take(&mut self.candidates);
        let out = weighted_nms(&mut all, self.cfg.nms_iou);
        self.candidates = all;
        Ok(out)
    }

    /// Runs the model on one region and appends its raw (pre-NMS) detections in image pixels.
    /// With `drop_cut`, detections touching a region edge that is not an image edge are dropped:
    /// they are faces cut by the tile, seen whole by a neighbouring tile.
    fn run_region(&mut self, img: &RgbImage, region: Region, drop_cut: bool) -> Result<()> {
        let [rx, ry, rw, rh] = region;
        let size = self.size;
        let s = rw.max(rh) as f32;
        let dw = ((rw as f32 * size as f32 / s).round() as usize).clamp(1, size);
        let dh = ((rh as f32 * size as f32 / s).round() as usize).clamp(1, size);
        let ox = (size - dw) / 2;
        let oy = (size - dh) / 2;
        self.scratch.resize(dw * dh * 3, 0);
        {
            let src = fr::images::ImageRef::new(img.width(), img.height(), img.as_raw(), fr::PixelType::U8x3)
                .map_err(|e| Error::internal(format!("resize source: {e}")))?;
            let mut dst = fr::images::Image::from_slice_u8(dw as u32, dh as u32, &mut self.scratch, fr::PixelType::U8x3)
                .map_err(|e| Error::internal(format!("resize target: {e}")))?;
            let opts = fr::ResizeOptions::new()
                .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
                .crop(rx as f64, ry as f64, rw as f64, rh as f64);
            self.resizer
                .resize(&src, &mut dst, &opts)
                .map_err(|e| Error::internal(format!("resize: {e}")))?;
        }
        // Letterbox: black (−1 after scaling) around the centred, resized region.
        self.input.fill(-1.0);
        for y in 0..dh {
            let row = &self.scratch[y * dw * 3..(y + 1) * dw * 3];
            let out = &mut self.input[((y + oy) * size + ox) * 3..((y + oy) * size + ox + dw) * 3];
            for (o, &v) in out.iter_mut().zip(row) {
                *o = v as f32 * (1.0 / 127.5) - 1.0;
            }
        }
        self.session.run(&[&self.input], &mut self.outputs)?;
        let reg = &self.outputs[self.reg_idx];
        let cls = &self.outputs[self.cls_idx];
        // Threshold in logit space: sigmoid is monotonic, so only survivors pay for exp().
        let min_score = self.cfg.min_score.clamp(1e-6, 1.0 - 1e-6);
        let logit_min = (min_score / (1.0 - min_score)).ln();
        let sx = rw as f32 / dw as f32;
        let sy = rh as f32 / dh as f32;
        let sz = size as f32;
        let to_img = |nx: f32, ny: f32| -> [f32; 2] {
            [rx as f32 + (nx * sz - ox as f32) * sx, ry as f32 + (ny * sz - oy as f32) * sy]
        };
        for (i, a) in self.anchors.iter().enumerate() {
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
            let bbox = [p1[0], p1[1], p2[0], p2[1]];
            if drop_cut {
                let m = 2.0;
                let (x0, y0, x1, y1) = (rx as f32, ry as f32, (rx + rw) as f32, (ry + rh) as f32);
                let cut = (rx > 0 && bbox[0] <= x0 + m)
                    || (ry > 0 && bbox[1] <= y0 + m)
                    || (rx + rw < img.width() && bbox[2] >= x1 - m)
                    || (ry + rh < img.height() && bbox[3] >= y1 - m);
                if cut {
                    continue;
                }
            }
            self.candidates.push(Detection { score, bbox, landmarks });
        }
        Ok(())
    }
}

/// Overlapping 2×2 tiles, each 60 % of the frame's width and height.
fn tiles(w: u32, h: u32) -> Vec<Region> {
    let tw = (w as f32 * 0.6).ceil() as u32;
    let th = (h as f32 * 0.6).ceil() as u32;
    let mut v = Vec::with_capacity(4);
    for y in [0, h - th] {
        for x in [0, w - tw] {
            v.push([x, y, tw, th]);
        }
    }
    v
}

/// MediaPipe-style weighted NMS: each cluster of boxes overlapping the best one by more than
/// `iou_min` becomes one detection, its box and keypoints the score-weighted mean of the cluster,
/// its score the best one. Consumes `dets`.
pub fn weighted_nms(dets: &mut Vec<Detection>, iou_min: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    let mut rest: Vec<Detection> = std::mem::take(dets);
    while let Some(best) = rest.first().copied() {
        let (group, keep): (Vec<Detection>, Vec<Detection>) =
            rest.into_iter().partition(|d| iou(&best.bbox, &d.bbox) > iou_min);
        rest = keep;
        let total: f32 = group.iter().map(|d| d.score).sum();
        let mut merged = Detection { score: best.score, bbox: [0.0; 4], landmarks: [[0.0; 2]; 6] };
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

/// Loads, verifies and compiles the detector model for `cfg`.
pub fn load(
    backend: &dyn crate::inference::Backend,
    models_dir: Option<&std::path::Path>,
    cfg: DetectorConfig,
    threads: usize,
) -> Result<Detector> {
    let model = cfg.kind.model();
    let (_, bytes) = models::load_verified(models_dir, &model)?;
    Detector::new(backend.compile(model.file, &bytes, threads)?, cfg)
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
        let d = |s: f32, x: f32| Detection { score: s, bbox: [x, 0.0, x + 10.0, 10.0], landmarks: [[x, 0.0]; 6] };
        let mut v = vec![d(0.6, 1.0), d(0.9, 0.0), d(0.8, 50.0)];
        let out = weighted_nms(&mut v, 0.3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        // 0.9 and 0.6 weighted: x1 = 0.6/1.5 = 0.4.
        assert!((out[0].bbox[0] - 0.4).abs() < 1e-5);
        assert_eq!(out[1].bbox[0], 50.0);
    }

    #[test]
    fn tiles_cover_the_frame_with_overlap() {
        let t = tiles(800, 600);
        assert_eq!(t.len(), 4);
        assert_eq!(t[3], [320, 240, 480, 360]);
        assert!(t[0][2] > t[1][0]);
    }
}
