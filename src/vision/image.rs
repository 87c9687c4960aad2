//! Reading still images (CLI, uploads) into RGB8 with hard limits, EXIF rotation applied.
//!
//! Every failure names the file and what to do; nothing here panics on hostile input. The limits
//! keep a decompression bomb from exhausting a 1 GiB board: the encoded file is capped before it
//! is read, and the header is read first ([`probe`]): dimensions beyond [`ImageLimits`] are
//! refused before a single pixel is decoded, and the decoder's allocations are capped at what
//! the header announced ([`Probe::decode_bytes`]).
//!
//! A small PNG can announce a huge image (a 280 KB file may hold 6000×6000 16-bit RGBA: 288 MB
//! decoded), so the cost of a decode is known only from the header, never from the file size.
//! Callers that decode for other people (the console) also take the cost from a shared
//! [`DecodeBudget`] before decoding, so concurrent uploads cannot add up past it.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, Kind, Result};

/// Caps applied when decoding an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest encoded file accepted, in bytes.
    pub max_file_bytes: u64,
    /// Largest width or height accepted, in pixels.
    pub max_side: u32,
    /// Largest number of pixels (width × height) accepted.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        // 50 MiB / 16k / 40 MP: more than any camera still, far less than a bomb.
        ImageLimits {
            max_file_bytes: 50 << 20,
            max_side: 16_384,
            max_pixels: 40_000_000,
        }
    }
}

/// Bytes per pixel that [`decode`] may hold beyond the decoder's own output while it converts
/// to RGB8: an RGBA8 copy (4, for images with alpha) and the RGB8 result (3). The same margin
/// covers a progressive JPEG's coefficient planes (up to 6 per pixel) beside its RGB8 output.
const CONVERT_BYTES_PER_PIXEL: u64 = 7;

/// What an image header announces, read without decoding pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The decoder's output colour type (e.g. 16-bit RGBA for a deep PNG).
    pub color: image::ColorType,
    /// Upper bound of the memory [`decode`] needs for it at its peak, in bytes: the decoded
    /// image plus [`CONVERT_BYTES_PER_PIXEL`] per pixel for the conversion to RGB8.
    pub decode_bytes: u64,
}

impl Probe {
    /// `6000×6000 16-bit RGBA` style description for error messages.
    pub fn describe(&self) -> String {
        use image::ColorType as C;
        let color = match self.color {
            C::L8 => "8-bit grey",
            C::La8 => "8-bit grey+alpha",
            C::Rgb8 => "8-bit RGB",
            C::Rgba8 => "8-bit RGBA",
            C::L16 => "16-bit grey",
            C::La16 => "16-bit grey+alpha",
            C::Rgb16 => "16-bit RGB",
            C::Rgba16 => "16-bit RGBA",
            C::Rgb32F => "32-bit float RGB",
            C::Rgba32F => "32-bit float RGBA",
            _ => "other colour type",
        };
        format!("{}×{} {color}", self.width, self.height)
    }
}

/// Reads and decodes the image at `path`.
pub fn load(path: &Path, limits: &ImageLimits) -> Result<RgbImage> {
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            Kind::NotFound
        } else {
            Kind::InvalidInput
        };
        Error::new(kind, format!("cannot read {name}: {e}"))
    })?;
    if !meta.is_file() {
        return Err(Error::invalid(format!("{name} is not a regular file")));
    }
    if meta.len() > limits.max_file_bytes {
        return Err(Error::exhausted(format!(
            "{name} is {} bytes, over the {}-byte limit for images",
            meta.len(),
            limits.max_file_bytes
        )));
    }
    let bytes =
        std::fs::read(path).map_err(|e| Error::invalid(format!("cannot read {name}: {e}")))?;
    decode(&bytes, limits).map_err(|e| Error::new(e.kind(), format!("{name}: {}", e.message())))
}

/// Reads only the header of an in-memory encoded image and checks it against `limits`: a
/// picture over the pixel limits is refused (`ResourceExhausted`) before anything is decoded.
pub fn probe(bytes: &[u8], limits: &ImageLimits) -> Result<Probe> {
    header(bytes, limits).map(|(_, p)| p)
}

/// Opens a decoder on `bytes` and checks its header; see [`probe`].
fn header<'a>(
    bytes: &'a [u8],
    limits: &ImageLimits,
) -> Result<(impl ImageDecoder + use<'a>, Probe)> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(Error::exhausted(format!(
            "image is {} bytes, over the {}-byte limit",
            bytes.len(),
            limits.max_file_bytes
        )));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::invalid(format!("cannot read image: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::invalid(
            "not an image faced can read (JPEG, PNG, WebP, BMP, GIF or TIFF)".to_string(),
        ));
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills a cut-off scan with grey rather than failing; a half photo
        // must not be enrolled or analysed as if it were whole.
        return Err(Error::invalid(
            "corrupt or truncated image: JPEG data ends before its end-of-image marker",
        ));
    }
    let decoder = reader.into_decoder().map_err(|e| decode_error(&e))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::invalid("image has no pixels"));
    }
    let pixels = u64::from(w) * u64::from(h);
    if w > limits.max_side || h > limits.max_side || pixels > limits.max_pixels {
        return Err(Error::exhausted(format!(
            "image is {w}×{h} pixels, over the limit of {} per side / {} pixels; downscale it",
            limits.max_side, limits.max_pixels
        )));
    }
    let color = decoder.color_type();
    let probe = Probe {
        width: w,
        height: h,
        color,
        decode_bytes: pixels
            .saturating_mul(u64::from(color.bytes_per_pixel()) + CONVERT_BYTES_PER_PIXEL),
    };
    Ok((decoder, probe))
}

/// Decodes an in-memory encoded image (JPEG, PNG, WebP, BMP, GIF, TIFF). Its peak memory is at
/// most [`Probe::decode_bytes`] of [`probe`]`(bytes)` (plus the encoded bytes themselves).
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
    let (mut decoder, probe) = header(bytes, limits)?;
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    // The decoder may allocate what the header announced, and no more.
    l.max_alloc = Some(probe.decode_bytes);
    decoder.set_limits(l).map_err(|e| decode_error(&e))?;
    // A bad EXIF block must not cost the picture: fall back to no rotation.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(&e))?;
    // Rotate the RGB8 result, not the decoded image: a rotation copies the whole buffer, and the
    // RGB8 copy is the smallest one (3 bytes per pixel against 8 for 16-bit RGBA).
    let mut rgb = DynamicImage::ImageRgb8(to_rgb8(img));
    rgb.apply_orientation(orientation);
    Ok(rgb.into_rgb8())
}

/// Converts any decoded image to RGB8. Alpha is composited over black, as a camera would see a
/// transparent area; 16-bit channels are scaled to 8 bits; grey is replicated.
fn to_rgb8(img: DynamicImage) -> RgbImage {
    if img.color().has_alpha() {
        let rgba = img.to_rgba8();
        // The decoded image (up to 8 bytes per pixel) goes before the RGB8 copy is made.
        drop(img);
        let (w, h) = rgba.dimensions();
        let mut out = RgbImage::new(w, h);
        for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
            let a = p[3] as u16;
            for c in 0..3 {
                o[c] = ((p[c] as u16 * a + 127) / 255) as u8;
            }
        }
        out
    } else {
        img.into_rgb8()
    }
}

/// True when the last start-of-scan marker (FF DA) is followed by an end-of-image marker (FF D9).
/// Inside entropy-coded data a literal FF is stuffed as FF 00, so these pairs are real markers;
/// an EXIF thumbnail's own FF D9 comes before the main image's scans and does not count.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

fn decode_error(e: &image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(_) => {
            Error::exhausted(format!("image too large to decode safely: {e}"))
        }
        image::ImageError::Unsupported(_) => Error::invalid(format!("unsupported image: {e}")),
        _ => Error::invalid(format!("corrupt or truncated image: {e}")),
    }
}

/// A memory budget shared by concurrent decodes (the console's uploads): a decode takes its
/// [`Probe::decode_bytes`] from the budget before it starts and returns it when the
/// [`DecodePermit`] is dropped, so however many uploads arrive at once, the pixels being decoded
/// at any moment fit in the budget. Waiters are served first come, first served.
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    sem: Arc<tokio::sync::Semaphore>,
    total_kib: u32,
}

/// A share of a [`DecodeBudget`], given back on drop.
#[derive(Debug)]
pub struct DecodePermit {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Why [`DecodeBudget::acquire`] gave no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetRefusal {
    /// The decode alone needs more than the whole budget: it can never run.
    TooLarge,
    /// Other decodes held the budget for the whole wait.
    Busy,
}

impl DecodeBudget {
    /// A budget of `bytes` (counted in KiB; at least 1 KiB, at most 4 TiB).
    pub fn new(bytes: u64) -> DecodeBudget {
        let total_kib = (bytes / 1024).clamp(1, u64::from(u32::MAX)) as u32;
        DecodeBudget {
            sem: Arc::new(tokio::sync::Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// The whole budget, bytes.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_kib) * 1024
    }

    /// Bytes not taken by running decodes right now.
    pub fn available_bytes(&self) -> u64 {
        self.sem.available_permits() as u64 * 1024
    }

    /// Takes `bytes` of the budget, waiting at most `wait` for running decodes to finish.
    pub async fn acquire(
        &self,
        bytes: u64,
        wait: Duration,
    ) -> std::result::Result<DecodePermit, BudgetRefusal> {
        let kib = bytes.div_ceil(1024).max(1);
        if kib > u64::from(self.total_kib) {
            return Err(BudgetRefusal::TooLarge);
        }
        match tokio::time::timeout(wait, self.sem.clone().acquire_many_owned(kib as u32)).await {
            Ok(Ok(p)) => Ok(DecodePermit { _permit: p }),
            // The semaphore is never closed; a closed one would mean nothing can decode.
            Ok(Err(_)) | Err(_) => Err(BudgetRefusal::Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(img: DynamicImage) -> Vec<u8> {
        let mut v = Vec::new();
        img.write_to(&mut Cursor::new(&mut v), image::ImageFormat::Png)
            .unwrap();
        v
    }

    #[test]
    fn alpha_grey_and_16_bit_decode_to_rgb8() {
        let mut rgba = image::RgbaImage::new(4, 2);
        rgba.put_pixel(0, 0, image::Rgba([200, 100, 50, 255]));
        rgba.put_pixel(1, 0, image::Rgba([200, 100, 50, 0]));
        let out = decode(
            &png(DynamicImage::ImageRgba8(rgba)),
            &ImageLimits::default(),
        )
        .unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [200, 100, 50]);
        assert_eq!(out.get_pixel(1, 0).0, [0, 0, 0]);

        let grey = image::ImageBuffer::from_pixel(3, 3, image::Luma([77u8]));
        let out = decode(
            &png(DynamicImage::ImageLuma8(grey)),
            &ImageLimits::default(),
        )
        .unwrap();
        assert_eq!(out.get_pixel(2, 2).0, [77, 77, 77]);

        let deep = image::ImageBuffer::from_pixel(3, 3, image::Rgb([65535u16, 0, 32896]));
        let out = decode(
            &png(DynamicImage::ImageRgb16(deep)),
            &ImageLimits::default(),
        )
        .unwrap();
        assert_eq!(out.get_pixel(1, 1).0, [255, 0, 128]);
    }

    #[test]
    fn oversized_dimensions_are_refused_before_decoding() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(300, 200));
        let limits = ImageLimits {
            max_side: 256,
            ..Default::default()
        };
        let e = decode(&png(img), &limits).unwrap_err();
        assert_eq!(e.kind(), Kind::ResourceExhausted);
        assert!(e.message().contains("300×200"), "{e}");
    }

    #[test]
    fn garbage_and_truncation_are_invalid_input() {
        let e = decode(b"hello, not an image", &ImageLimits::default()).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        let full = png(DynamicImage::ImageRgb8(RgbImage::new(64, 64)));
        let e = decode(&full[..full.len() / 2], &ImageLimits::default()).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput, "{e}");
    }

    #[test]
    fn probe_reads_the_header_and_prices_the_decode() {
        let deep = image::ImageBuffer::from_pixel(30, 20, image::Rgba([1u16, 2, 3, 4]));
        let p = probe(
            &png(DynamicImage::ImageRgba16(deep)),
            &ImageLimits::default(),
        )
        .unwrap();
        assert_eq!(
            (p.width, p.height, p.color),
            (30, 20, image::ColorType::Rgba16)
        );
        assert_eq!(p.decode_bytes, 30 * 20 * (8 + 7));
        assert_eq!(p.describe(), "30×20 16-bit RGBA");
        let limits = ImageLimits {
            max_pixels: 599,
            ..Default::default()
        };
        let e = probe(
            &png(DynamicImage::ImageRgb8(RgbImage::new(30, 20))),
            &limits,
        )
        .unwrap_err();
        assert_eq!(e.kind(), Kind::ResourceExhausted);
    }

    #[test]
    fn decode_budget_is_shared_and_refuses_what_cannot_fit() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = DecodeBudget::new(10 << 20);
            let w = Duration::from_millis(50);
            assert_eq!(
                b.acquire(11 << 20, w).await.unwrap_err(),
                BudgetRefusal::TooLarge
            );
            let first = b.acquire(6 << 20, w).await.unwrap();
            assert_eq!(
                b.acquire(6 << 20, w).await.unwrap_err(),
                BudgetRefusal::Busy
            );
            drop(first);
            assert!(b.acquire(6 << 20, w).await.is_ok());
            assert_eq!(b.available_bytes(), 10 << 20);
        });
    }
}
