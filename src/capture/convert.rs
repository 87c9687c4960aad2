//! Pixel conversions for capture: the raw formats V4L2 drivers give ([`Pixels`]: packed YUYV
//! and UYVY, NV12 and YU12 from SoC ISPs, RGB24, GREY from IR cameras) → RGB, MJPEG frame → RGB
//! (with the standard Huffman tables many webcams leave out), and the letterbox fit used to
//! turn still images into fixed-size stream frames (the same geometry as `refpipe.py --bench`).
//!
//! Called on the capture threads; everything here is pure and allocation-bounded.

use image::RgbImage;
use image::imageops::FilterType;

use crate::error::{Error, Result};
use crate::vision::image::ImageLimits;

/// BT.601 limited-range YUYV (`Y0 U Y1 V` per pixel pair) to RGB. `data` must hold at least
/// `width * height * 2` bytes (`stride` bytes per row, ≥ `width * 2`); `width` must be even.
pub fn yuyv_to_rgb(data: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
    let (w, h) = (width as usize, height as usize);
    if w == 0 || h == 0 || w % 2 != 0 || stride < w * 2 {
        return Err(Error::invalid(format!(
            "YUYV frame {width}×{height} (stride {stride}) is not a valid size"
        )));
    }
    if data.len() < stride * (h - 1) + w * 2 {
        return Err(Error::invalid(format!(
            "YUYV frame is {} bytes, expected {} for {width}×{height}",
            data.len(),
            stride * h
        )));
    }
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        let row = &data[y * stride..y * stride + w * 2];
        let dst = &mut out[y * w * 3..(y + 1) * w * 3];
        for (px, d) in row.chunks_exact(4).zip(dst.chunks_exact_mut(6)) {
            let (u, v) = (px[1] as i32 - 128, px[3] as i32 - 128);
            let (ru, gu, bv) = (409 * v, -100 * u - 208 * v, 516 * u);
            for (k, yy) in [px[0], px[2]].into_iter().enumerate() {
                let c = 298 * (yy as i32 - 16) + 128;
                d[k * 3] = ((c + ru) >> 8).clamp(0, 255) as u8;
                d[k * 3 + 1] = ((c + gu) >> 8).clamp(0, 255) as u8;
                d[k * 3 + 2] = ((c + bv) >> 8).clamp(0, 255) as u8;
            }
        }
    }
    RgbImage::from_raw(width, height, out).ok_or_else(|| Error::internal("YUYV buffer size"))
}

/// A pixel format faced converts from, as a V4L2 driver names it (its FourCC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pixels {
    /// JPEG frames (`MJPG`, also `JPEG`): USB webcams, small over the bus.
    Mjpeg,
    /// Packed 4:2:2, `Y0 U Y1 V` (`YUYV`): every UVC camera, vivid's default.
    Yuyv,
    /// Packed 4:2:2, `U Y0 V Y1` (`UYVY`): HDMI bridges, some CSI sensors.
    Uyvy,
    /// 4:2:0, Y plane then interleaved U/V (`NV12`): SoC ISPs, the Pi's ISP.
    Nv12,
    /// 4:2:0, Y then U then V planes (`YU12`, I420): the Pi's legacy camera driver.
    Yu12,
    /// Packed `R G B` (`RGB3`).
    Rgb24,
    /// 8-bit luminance (`GREY`): IR and monochrome cameras.
    Grey,
}

impl Pixels {
    /// Every format, in the order faced prefers when a camera offers several: MJPEG first
    /// (the least USB bandwidth at a given size), then the native YUV layouts, then RGB, and
    /// luminance only last (a colour camera's GREY mode throws colour away).
    pub const PREFERENCE: [Pixels; 7] = [
        Pixels::Mjpeg,
        Pixels::Yuyv,
        Pixels::Uyvy,
        Pixels::Nv12,
        Pixels::Yu12,
        Pixels::Rgb24,
        Pixels::Grey,
    ];

    /// The V4L2 FourCC codes of this format.
    pub fn fourccs(self) -> &'static [&'static [u8; 4]] {
        match self {
            Pixels::Mjpeg => &[b"MJPG", b"JPEG"],
            Pixels::Yuyv => &[b"YUYV"],
            Pixels::Uyvy => &[b"UYVY"],
            Pixels::Nv12 => &[b"NV12"],
            Pixels::Yu12 => &[b"YU12"],
            Pixels::Rgb24 => &[b"RGB3"],
            Pixels::Grey => &[b"GREY"],
        }
    }

    /// The format of a FourCC, if faced reads it.
    pub fn from_fourcc(code: &[u8; 4]) -> Option<Pixels> {
        Pixels::PREFERENCE
            .into_iter()
            .find(|p| p.fourccs().contains(&code))
    }

    /// Bytes per pixel of the first (or only) plane: the least row stride at `width`.
    pub fn min_stride(self, width: u32) -> usize {
        let w = width as usize;
        match self {
            Pixels::Mjpeg => 0,
            Pixels::Yuyv | Pixels::Uyvy => w * 2,
            Pixels::Nv12 | Pixels::Yu12 | Pixels::Grey => w,
            Pixels::Rgb24 => w * 3,
        }
    }

    /// Bytes a whole raw frame takes with `stride` bytes per row of the first plane (V4L2's
    /// `bytesperline`; the chroma planes of YU12 have half of it).
    fn frame_len(self, height: u32, stride: usize) -> usize {
        let h = height as usize;
        match self {
            Pixels::Nv12 => stride * h + stride * h.div_ceil(2),
            Pixels::Yu12 => stride * h + 2 * (stride / 2) * h.div_ceil(2),
            _ => stride * h,
        }
    }
}

/// One BT.601 limited-range YCbCr pixel to RGB, in the integer form of the YUYV path.
#[inline]
fn ycc(y: u8, u: i32, v: i32) -> [u8; 3] {
    let c = 298 * (y as i32 - 16) + 128;
    [
        ((c + 409 * v) >> 8).clamp(0, 255) as u8,
        ((c - 100 * u - 208 * v) >> 8).clamp(0, 255) as u8,
        ((c + 516 * u) >> 8).clamp(0, 255) as u8,
    ]
}

/// A frame of `pixels` to RGB. Raw formats need `width` × `height` with `stride` bytes per row
/// of the first plane (at least [`Pixels::min_stride`]); a short buffer or a size the format
/// cannot have (odd width for 4:2:2 and 4:2:0) is an error, never a panic. MJPEG ignores the
/// geometry and decodes the JPEG as it is.
pub fn to_rgb(
    pixels: Pixels,
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<RgbImage> {
    let (w, h) = (width as usize, height as usize);
    match pixels {
        Pixels::Mjpeg => return decode_mjpeg(data),
        Pixels::Yuyv => return yuyv_to_rgb(data, width, height, stride),
        _ => {}
    }
    let chroma = matches!(pixels, Pixels::Uyvy | Pixels::Nv12 | Pixels::Yu12);
    if w == 0 || h == 0 || (chroma && w % 2 != 0) || stride < pixels.min_stride(width) {
        return Err(Error::invalid(format!(
            "{pixels:?} frame {width}×{height} (stride {stride}) is not a valid size"
        )));
    }
    let need = pixels.frame_len(height, stride);
    if data.len() < need {
        return Err(Error::invalid(format!(
            "{pixels:?} frame is {} bytes, expected {need} for {width}×{height}",
            data.len()
        )));
    }
    let mut out = vec![0u8; w * h * 3];
    let y_plane = &data[..stride * h];
    for (row, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        let line = &y_plane[row * stride..];
        match pixels {
            Pixels::Uyvy => {
                for (px, d) in line[..w * 2].chunks_exact(4).zip(dst.chunks_exact_mut(6)) {
                    let (u, v) = (px[0] as i32 - 128, px[2] as i32 - 128);
                    d[..3].copy_from_slice(&ycc(px[1], u, v));
                    d[3..].copy_from_slice(&ycc(px[3], u, v));
                }
            }
            Pixels::Nv12 | Pixels::Yu12 => {
                let uv = stride * h;
                for (col, d) in dst.chunks_exact_mut(3).enumerate() {
                    let (u, v) = if pixels == Pixels::Nv12 {
                        let c = uv + (row / 2) * stride + (col / 2) * 2;
                        (data[c], data[c + 1])
                    } else {
                        let cs = stride / 2;
                        let c = (row / 2) * cs + col / 2;
                        (data[uv + c], data[uv + cs * h.div_ceil(2) + c])
                    };
                    d.copy_from_slice(&ycc(line[col], u as i32 - 128, v as i32 - 128));
                }
            }
            Pixels::Rgb24 => dst.copy_from_slice(&line[..w * 3]),
            Pixels::Grey => {
                for (d, &g) in dst.chunks_exact_mut(3).zip(&line[..w]) {
                    d.fill(g);
                }
            }
            Pixels::Mjpeg | Pixels::Yuyv => unreachable!("handled above"),
        }
    }
    RgbImage::from_raw(width, height, out).ok_or_else(|| Error::internal("raw frame size"))
}

/// RGB to BT.601 limited-range YUYV (chroma averaged over each pixel pair): what a webcam
/// sends. Used to make test frames from photos; `width` is rounded down to even.
pub fn rgb_to_yuyv(img: &RgbImage) -> (Vec<u8>, u32) {
    let w = img.width() & !1;
    let mut out = Vec::with_capacity((w * img.height() * 2) as usize);
    for y in 0..img.height() {
        for x in (0..w).step_by(2) {
            let a = img.get_pixel(x, y).0.map(i32::from);
            let b = img.get_pixel(x + 1, y).0.map(i32::from);
            let luma = |p: [i32; 3]| {
                (((66 * p[0] + 129 * p[1] + 25 * p[2] + 128) >> 8) + 16).clamp(0, 255) as u8
            };
            let (r, g, bl) = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, (a[2] + b[2]) / 2);
            let u = (((-38 * r - 74 * g + 112 * bl + 128) >> 8) + 128).clamp(0, 255) as u8;
            let v = (((112 * r - 94 * g - 18 * bl + 128) >> 8) + 128).clamp(0, 255) as u8;
            out.extend_from_slice(&[luma(a), u, luma(b), v]);
        }
    }
    (out, w)
}

/// The Huffman tables of JPEG Annex K.3 as one DHT segment: MJPEG cameras omit them from every
/// frame ("MJPEG restricted JPEG", the AVI1 convention), and a plain JPEG decoder then fails.
pub const STANDARD_DHT: [u8; 420] = [
    0xFF, 0xC4, 0x01, 0xA2, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A,
    0x0B, 0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x10, 0x00,
    0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7D, 0x01,
    0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22,
    0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0, 0x24,
    0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28, 0x29,
    0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A,
    0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A,
    0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A,
    0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8,
    0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6,
    0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2, 0xE3,
    0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9,
    0xFA, 0x11, 0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01,
    0x02, 0x77, 0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07,
    0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33,
    0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19,
    0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46,
    0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66,
    0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85,
    0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3,
    0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA,
    0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8,
    0xD9, 0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6,
    0xF7, 0xF8, 0xF9, 0xFA,
];

/// Whether a JPEG has its own DHT segment before the first scan.
fn has_dht(jpeg: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return false;
        }
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        match marker {
            0xC4 => return true,
            0xDA => return false,
            0xD0..=0xD9 | 0x01 => i += 2,
            _ => {
                let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
                i += 2 + len;
            }
        }
    }
    false
}

/// Inserts [`STANDARD_DHT`] right after SOI when the frame has no Huffman tables.
pub fn with_standard_dht(jpeg: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 || has_dht(jpeg) {
        return std::borrow::Cow::Borrowed(jpeg);
    }
    let mut v = Vec::with_capacity(jpeg.len() + STANDARD_DHT.len());
    v.extend_from_slice(&jpeg[..2]);
    v.extend_from_slice(&STANDARD_DHT);
    v.extend_from_slice(&jpeg[2..]);
    std::borrow::Cow::Owned(v)
}

/// Decodes one MJPEG frame (a JPEG, possibly without Huffman tables) to RGB.
pub fn decode_mjpeg(jpeg: &[u8]) -> Result<RgbImage> {
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
        return Err(Error::invalid(format!(
            "MJPEG frame of {} bytes does not start with a JPEG SOI marker",
            jpeg.len()
        )));
    }
    let fixed = with_standard_dht(jpeg);
    crate::vision::image::decode(&fixed, &ImageLimits::default())
        .map_err(|e| Error::invalid(format!("cannot decode MJPEG frame: {}", e.message())))
}

/// Size of `img` after a thumbnail fit into `max_w`×`max_h` (aspect kept, never enlarged),
/// rounded as Pillow's `Image.thumbnail` does.
pub fn thumbnail_size(w: u32, h: u32, max_w: u32, max_h: u32) -> (u32, u32) {
    if w <= max_w && h <= max_h {
        return (w, h);
    }
    let aspect = w as f64 / h as f64;
    let (x, y) = (max_w as f64, max_h as f64);
    let round_aspect = |n: f64, key: &dyn Fn(f64) -> f64| -> u32 {
        let (lo, hi) = (n.floor(), n.ceil());
        let best = if key(lo) <= key(hi) { lo } else { hi };
        best.max(1.0) as u32
    };
    if x / y >= aspect {
        let nx = round_aspect(y * aspect, &|n| (aspect - n / y).abs());
        (nx, max_h)
    } else {
        let ny = round_aspect(x / aspect, &|n| {
            if n == 0.0 {
                0.0
            } else {
                (aspect - x / n).abs()
            }
        });
        (max_w, ny)
    }
}

/// `img` thumbnail-fitted into a black `width`×`height` canvas, centred (as `refpipe.py`).
pub fn letterbox(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (tw, th) = thumbnail_size(img.width(), img.height(), width, height);
    let small;
    let src = if (tw, th) == img.dimensions() {
        img
    } else {
        small = image::imageops::resize(img, tw, th, FilterType::CatmullRom);
        &small
    };
    let mut out = RgbImage::new(width, height);
    let (ox, oy) = ((width - tw) / 2, (height - th) / 2);
    image::imageops::replace(&mut out, src, ox as i64, oy as i64);
    out
}

/// `frame` moved `dx` pixels to the right, the uncovered left columns black (the bench's
/// "shifted frame_index % 5 px right").
pub fn shift_right(frame: &RgbImage, dx: u32) -> RgbImage {
    let (w, h) = frame.dimensions();
    let mut out = RgbImage::new(w, h);
    if dx >= w {
        return out;
    }
    let row = (w * 3) as usize;
    let n = ((w - dx) * 3) as usize;
    let (src, dst) = (frame.as_raw(), &mut *out);
    for y in 0..h as usize {
        dst[y * row + (dx * 3) as usize..y * row + (dx * 3) as usize + n]
            .copy_from_slice(&src[y * row..y * row + n]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> RgbImage {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/faces")
            .join(name);
        crate::vision::image::load(&p, &ImageLimits::default()).unwrap()
    }

    fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
        let mse: f64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum::<f64>()
            / a.as_raw().len() as f64;
        10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
    }

    #[test]
    fn yuyv_round_trip_on_a_fixture_photo() {
        let img = letterbox(&fixture("img1.jpg"), 640, 480);
        let (yuyv, w) = rgb_to_yuyv(&img);
        assert_eq!(yuyv.len(), 640 * 480 * 2);
        let back = yuyv_to_rgb(&yuyv, w, 480, 640 * 2).unwrap();
        let p = psnr(&img, &back);
        assert!(p > 30.0, "PSNR {p:.1} dB");
        // Pure colours land where BT.601 puts them.
        let grey = yuyv_to_rgb(&[128, 128, 128, 128], 2, 1, 4).unwrap();
        assert!(
            grey.pixels()
                .all(|p| p.0.iter().all(|&c| (128..=132).contains(&c))),
            "{:?}",
            grey
        );
        let white = yuyv_to_rgb(&[235, 128, 235, 128], 2, 1, 4).unwrap();
        assert_eq!(white.get_pixel(0, 0).0, [255, 255, 255]);
    }

    /// `img` as a raw frame of `pixels` with `pad` bytes of padding after each row of the
    /// first plane (what drivers do to align rows), BT.601 limited range like a camera.
    fn encode(img: &RgbImage, pixels: Pixels, pad: usize) -> (Vec<u8>, usize) {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let stride = pixels.min_stride(img.width()) + pad;
        let px = |x: usize, y: usize| img.get_pixel(x as u32, y as u32).0.map(i32::from);
        let luma = |p: [i32; 3]| (((66 * p[0] + 129 * p[1] + 25 * p[2] + 128) >> 8) + 16) as u8;
        let cb = |p: [i32; 3]| (((-38 * p[0] - 74 * p[1] + 112 * p[2] + 128) >> 8) + 128) as u8;
        let cr = |p: [i32; 3]| (((112 * p[0] - 94 * p[1] - 18 * p[2] + 128) >> 8) + 128) as u8;
        let mut out = vec![0u8; pixels.frame_len(h as u32, stride)];
        for y in 0..h {
            for x in 0..w {
                let p = px(x, y);
                let at = y * stride;
                match pixels {
                    Pixels::Uyvy => {
                        out[at + x * 2 + 1] = luma(p);
                        out[at + (x & !1) * 2 + if x % 2 == 0 { 0 } else { 2 }] =
                            if x % 2 == 0 { cb(p) } else { cr(px(x - 1, y)) };
                    }
                    Pixels::Nv12 | Pixels::Yu12 | Pixels::Grey => out[at + x] = luma(p),
                    Pixels::Rgb24 => {
                        out[at + x * 3..at + x * 3 + 3].copy_from_slice(&p.map(|c| c as u8))
                    }
                    _ => unreachable!(),
                }
                if y % 2 == 0 && x % 2 == 0 {
                    let uv = stride * h;
                    match pixels {
                        Pixels::Nv12 => {
                            out[uv + (y / 2) * stride + x] = cb(p);
                            out[uv + (y / 2) * stride + x + 1] = cr(p);
                        }
                        Pixels::Yu12 => {
                            let cs = stride / 2;
                            out[uv + (y / 2) * cs + x / 2] = cb(p);
                            out[uv + cs * h.div_ceil(2) + (y / 2) * cs + x / 2] = cr(p);
                        }
                        _ => {}
                    }
                }
            }
        }
        (out, stride)
    }

    #[test]
    fn every_raw_v4l2_format_round_trips_a_photo() {
        let img = letterbox(&fixture("img1.jpg"), 320, 240);
        for pixels in [Pixels::Uyvy, Pixels::Nv12, Pixels::Yu12, Pixels::Rgb24] {
            for pad in [0, 64] {
                let (raw, stride) = encode(&img, pixels, pad);
                let back = to_rgb(pixels, &raw, 320, 240, stride).unwrap();
                let p = psnr(&img, &back);
                assert!(p > 28.0, "{pixels:?} pad {pad}: PSNR {p:.1} dB");
                // One byte short is refused, not read past.
                assert!(to_rgb(pixels, &raw[..raw.len() - 1], 320, 240, stride).is_err());
            }
        }
        // GREY keeps luminance only: every channel equal, and the luminance right.
        let (raw, stride) = encode(&img, Pixels::Grey, 0);
        let grey = to_rgb(Pixels::Grey, &raw, 320, 240, stride).unwrap();
        assert!(grey.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
        assert_eq!(grey.get_pixel(160, 120).0[0], raw[120 * stride + 160]);
        // The FourCCs map both ways, and a format faced cannot read maps to nothing.
        for p in Pixels::PREFERENCE {
            assert_eq!(Pixels::from_fourcc(p.fourccs()[0]), Some(p));
        }
        assert_eq!(Pixels::from_fourcc(b"JPEG"), Some(Pixels::Mjpeg));
        assert_eq!(Pixels::from_fourcc(b"BA81"), None);
        // Odd widths cannot be 4:2:2 or 4:2:0; a stride below the row is refused.
        assert!(to_rgb(Pixels::Nv12, &[0; 64], 3, 2, 3).is_err());
        assert!(to_rgb(Pixels::Rgb24, &[0; 64], 4, 2, 8).is_err());
    }

    #[test]
    fn yuyv_rejects_short_and_odd_frames() {
        assert!(yuyv_to_rgb(&[0; 10], 4, 2, 8).is_err());
        assert!(yuyv_to_rgb(&[0; 12], 3, 2, 6).is_err());
    }

    #[test]
    fn mjpeg_without_huffman_tables_decodes_like_the_full_jpeg() {
        let img = letterbox(&fixture("img2.jpg"), 640, 480);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
            .encode_image(&img)
            .unwrap();
        let full = decode_mjpeg(&jpeg).unwrap();
        assert!(psnr(&img, &full) > 28.0);
        // Strip the DHT segments, as MJPEG webcams do: the encoder uses the Annex K tables.
        let mut stripped = jpeg[..2].to_vec();
        let mut i = 2;
        while i < jpeg.len() {
            let marker = jpeg[i + 1];
            if marker == 0xDA {
                stripped.extend_from_slice(&jpeg[i..]);
                break;
            }
            let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
            if marker != 0xC4 {
                stripped.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        assert!(stripped.len() < jpeg.len() && !has_dht(&stripped));
        let mjpeg = decode_mjpeg(&stripped).unwrap();
        assert_eq!(mjpeg.as_raw(), full.as_raw());
        assert!(decode_mjpeg(b"not a jpeg").is_err());
        let _ = decode_mjpeg(&jpeg[..jpeg.len() / 3]); // truncated: an error or grey rows, no panic
    }

    #[test]
    fn thumbnail_matches_pillow_rounding() {
        // Pillow: Image.new("RGB", (800, 533)).thumbnail((640, 480)) -> (640, 426)
        assert_eq!(thumbnail_size(800, 533, 640, 480), (640, 426));
        assert_eq!(thumbnail_size(533, 800, 640, 480), (320, 480));
        assert_eq!(thumbnail_size(300, 200, 640, 480), (300, 200));
    }

    #[test]
    fn letterbox_and_shift() {
        let img = letterbox(&fixture("img1.jpg"), 640, 480);
        assert_eq!(img.dimensions(), (640, 480));
        let s = shift_right(&img, 3);
        assert_eq!(s.get_pixel(0, 240).0, [0, 0, 0]);
        assert_eq!(s.get_pixel(103, 240), img.get_pixel(100, 240));
    }
}
