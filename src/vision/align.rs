//! Face alignment: a least-squares similarity transform (rotation, uniform scale, translation)
//! from the eyes, nose tip and mouth centre onto the standard 112×112 template, then a bilinear
//! warp. Pixel-centre convention as in PIL's `Image.transform(AFFINE)`, which the Python reference
//! uses, so both pipelines crop the same face.

use image::RgbImage;

use super::detect::Detection;

/// Side of the aligned face crop.
pub const CROP: u32 = 112;

/// Where the person's right eye (image left), left eye, nose tip and mouth centre land in the crop.
pub const TEMPLATE: [[f32; 2]; 4] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [56.1396, 92.2848],
];

/// A 2×3 affine matrix `[[a, b, c], [d, e, f]]`: `(x, y) ↦ (a x + b y + c, d x + e y + f)`.
pub type Affine = [[f32; 3]; 2];

/// The similarity transform `T` minimising `Σ |T(dst_i) − src_i|²` (maps crop → image).
pub fn similarity(dst: &[[f32; 2]], src: &[[f32; 2]]) -> Affine {
    let n = dst.len().min(src.len()) as f32;
    let mean = |p: &[[f32; 2]]| {
        let (sx, sy) = p.iter().fold((0.0, 0.0), |(x, y), q| (x + q[0], y + q[1]));
        (sx / n, sy / n)
    };
    let (dx, dy) = mean(dst);
    let (sx, sy) = mean(src);
    let (mut num_a, mut num_b, mut den) = (0.0f32, 0.0f32, 0.0f32);
    for (d, s) in dst.iter().zip(src) {
        let (x, y) = (d[0] - dx, d[1] - dy);
        let (u, v) = (s[0] - sx, s[1] - sy);
        num_a += x * u + y * v;
        num_b += x * v - y * u;
        den += x * x + y * y;
    }
    let (a, b) = if den > 0.0 {
        (num_a / den, num_b / den)
    } else {
        (1.0, 0.0)
    };
    [[a, -b, sx - a * dx + b * dy], [b, a, sy - b * dx - a * dy]]
}

/// The four alignment points of a detection, ordered as [`TEMPLATE`] (image-left eye first).
pub fn source_points(det: &Detection) -> [[f32; 2]; 4] {
    let l = &det.landmarks;
    // BlazeFace keypoint 0 is the person's right eye; swap if the face is mirrored or upside
    // down so that the template's left eye always matches the image-left eye.
    let (mut e0, mut e1) = (l[0], l[1]);
    if e0[0] > e1[0] {
        std::mem::swap(&mut e0, &mut e1);
    }
    [e0, e1, l[2], l[3]]
}

/// Warps the face of `det` out of `img` into a 112×112 RGB crop (black outside the image).
pub fn align(img: &RgbImage, det: &Detection) -> RgbImage {
    let m = similarity(&TEMPLATE, &source_points(det));
    warp(img, &m, CROP, CROP)
}

/// Bilinear warp: output pixel `(x, y)` samples the input at `m · (x + ½, y + ½) − ½`.
pub fn warp(img: &RgbImage, m: &Affine, w: u32, h: u32) -> RgbImage {
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    let mut out = RgbImage::new(w, h);
    let buf: &mut [u8] = &mut out;
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let sx = m[0][0] * fx + m[0][1] * fy + m[0][2] - 0.5;
            let sy = m[1][0] * fx + m[1][1] * fy + m[1][2] - 0.5;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (ax, ay) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let mut acc = [0.0f32; 3];
            for (dy, wy) in [(0, 1.0 - ay), (1, ay)] {
                for (dx, wx) in [(0, 1.0 - ax), (1, ax)] {
                    let (px, py) = (x0 + dx, y0 + dy);
                    if px < 0 || py < 0 || px >= iw || py >= ih {
                        continue;
                    }
                    let o = ((py * iw + px) * 3) as usize;
                    let wgt = wx * wy;
                    for c in 0..3 {
                        acc[c] += src[o + c] as f32 * wgt;
                    }
                }
            }
            let o = ((y * w + x) * 3) as usize;
            for c in 0..3 {
                buf[o + c] = acc[c].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_a_known_transform() {
        // Rotate 30°, scale 2, shift (10, -5).
        let (c, s) = (
            2.0 * 30f32.to_radians().cos(),
            2.0 * 30f32.to_radians().sin(),
        );
        let src: Vec<[f32; 2]> = TEMPLATE
            .iter()
            .map(|p| [c * p[0] - s * p[1] + 10.0, s * p[0] + c * p[1] - 5.0])
            .collect();
        let m = similarity(&TEMPLATE, &src);
        assert!(
            (m[0][0] - c).abs() < 1e-3 && (m[1][0] - s).abs() < 1e-3,
            "{m:?}"
        );
        assert!(
            (m[0][2] - 10.0).abs() < 1e-2 && (m[1][2] + 5.0).abs() < 1e-2,
            "{m:?}"
        );
    }

    #[test]
    fn identity_warp_copies_pixels() {
        let mut img = RgbImage::new(4, 4);
        img.put_pixel(2, 1, image::Rgb([10, 20, 30]));
        let out = warp(&img, &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], 4, 4);
        assert_eq!(out, img);
    }
}
