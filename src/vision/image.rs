//! Reading still images (CLI, uploads) into RGB8 with hard limits, EXIF rotation applied.
//!
//! Every failure names the file and what to do; nothing here panics on hostile input. The limits
//! keep a decompression bomb from exhausting a 1 GiB board: the encoded file is capped before it
//! is read, and the decoder refuses dimensions and allocations beyond [`ImageLimits`].

use std::io::Cursor;
use std::path::Path;

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

/// Decodes an in-memory encoded image (JPEG, PNG, WebP, BMP, GIF, TIFF).
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
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
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(&e))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::invalid("image has no pixels"));
    }
    if w > limits.max_side || h > limits.max_side || (w as u64) * (h as u64) > limits.max_pixels {
        return Err(Error::exhausted(format!(
            "image is {w}×{h} pixels, over the limit of {} per side / {} pixels; downscale it",
            limits.max_side, limits.max_pixels
        )));
    }
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    // 16-bit RGBA plus the RGB8 copy stays under this.
    l.max_alloc = Some(limits.max_pixels * 12);
    decoder.set_limits(l).map_err(|e| decode_error(&e))?;
    // A bad EXIF block must not cost the picture: fall back to no rotation.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(&e))?;
    img.apply_orientation(orientation);
    Ok(to_rgb8(img))
}

/// Converts any decoded image to RGB8. Alpha is composited over black, as a camera would see a
/// transparent area; 16-bit channels are scaled to 8 bits; grey is replicated.
fn to_rgb8(img: DynamicImage) -> RgbImage {
    if img.color().has_alpha() {
        let rgba = img.to_rgba8();
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
}
