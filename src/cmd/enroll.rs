//! `faced enroll`: add a person's photos to the gallery, refusing faces below the quality limits.

use std::path::PathBuf;
use std::process::ExitCode;

use faced::gallery::{NewSample, SampleKind};
use faced::vision::image::{ImageLimits, load};
use faced::vision::quality::QualityLimits;
use serde_json::json;

use super::{GalleryArgs, VisionArgs, error_line, print_json, r};

/// Enroll NAME from photos: the largest face of each photo becomes a sample if it passes the
/// quality limits (size, sharpness, pose); refused photos are listed with the reason. The person
/// is created if new.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    gallery: GalleryArgs,
    #[command(flatten)]
    vision: VisionArgs,
    /// The person's name.
    #[arg(long)]
    name: String,
    /// Minimum face size in pixels.
    #[arg(long, default_value_t = QualityLimits::default().min_size_px)]
    min_size: f32,
    /// Minimum sharpness (variance of the Laplacian).
    #[arg(long, default_value_t = QualityLimits::default().min_sharpness)]
    min_sharpness: f32,
    /// Maximum |yaw| (0 = frontal, 1 = profile).
    #[arg(long, default_value_t = QualityLimits::default().max_yaw)]
    max_yaw: f32,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
    /// Photos of the person.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let limits = QualityLimits {
        min_size_px: args.min_size,
        min_sharpness: args.min_sharpness,
        max_yaw: args.max_yaw,
    };
    limits.validate()?;
    let name = faced::gallery::validate_name(&args.name)?.to_string();
    let mut analyzer = args.vision.analyzer()?;
    let mut gallery = args.gallery.open()?;
    let person = match gallery.person_by_name(&name)? {
        Some(p) => p.id,
        None => gallery.add_person(&name)?,
    };
    let mut added = 0;
    let mut failed = 0;
    for path in &args.images {
        let outcome = (|| -> faced::Result<serde_json::Value> {
            let img = load(path, &ImageLimits::default())?;
            let faces = analyzer.analyze(&img)?;
            let Some(face) = faces.iter().max_by(|a, b| {
                (a.detection.width() * a.detection.height())
                    .total_cmp(&(b.detection.width() * b.detection.height()))
            }) else {
                return Ok(
                    json!({"file": path.display().to_string(), "enrolled": false, "reason": "no face found"}),
                );
            };
            if let Some((reject, why)) = limits.check(&face.quality) {
                return Ok(
                    json!({"file": path.display().to_string(), "enrolled": false, "reject": reject, "reason": why}),
                );
            }
            let mut jpeg = Vec::new();
            ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
                .encode_image(&face.aligned)
                .map_err(|e| faced::Error::internal(format!("JPEG encoding failed: {e}")))?;
            let quality_json = serde_json::to_string(&face.quality).unwrap_or_default();
            let source = format!(
                "file:{}",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            let id = gallery.add_sample(
                person,
                NewSample {
                    kind: SampleKind::Positive,
                    embedding: &face.embedding,
                    crop_jpeg: &jpeg,
                    quality_json: &quality_json,
                    source: &source,
                },
            )?;
            Ok(
                json!({"file": path.display().to_string(), "enrolled": true, "sample_id": id.0,
                      "faces_in_image": faces.len(), "quality": {"size_px": r(face.quality.size_px, 1), "sharpness": r(face.quality.sharpness, 1), "yaw": r(face.quality.yaw, 3)}}),
            )
        })();
        match outcome {
            Ok(v) => {
                let ok = v["enrolled"].as_bool() == Some(true);
                if ok {
                    added += 1;
                } else {
                    failed += 1;
                }
                if args.json {
                    print_json(&v);
                } else if ok {
                    println!("{}: enrolled as {name}", path.display());
                } else {
                    println!(
                        "{}: refused: {}",
                        path.display(),
                        v["reason"].as_str().unwrap_or("?")
                    );
                }
            }
            Err(e) => {
                failed += 1;
                if args.json {
                    print_json(&error_line(path, &e));
                } else {
                    eprintln!("{}: error: {}", path.display(), e.message());
                }
            }
        }
    }
    if !args.json {
        println!("{name}: {added} sample(s) added, {failed} photo(s) refused or unreadable");
    }
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
