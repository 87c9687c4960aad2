//! `faced enroll`: add a person's photos to the gallery, refusing faces below the quality limits.

use std::path::PathBuf;
use std::process::ExitCode;

use faced::gallery::{EnrollTarget, NewSample, SampleKind};
use faced::vision::image::{ImageLimits, load};
use faced::vision::quality::QualityLimits;
use serde_json::json;

use super::{GalleryArgs, VisionArgs, error_line, print_json, r};

/// Enroll NAME from photos: the largest face of each photo becomes a sample if it passes the
/// quality limits (size, sharpness, pose); refused photos are listed with the reason. The person
/// is created if new and at least one photo is accepted; all samples are stored together.
/// Exit status 2 if any photo was refused or unreadable.
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
    let name = faced::gallery::validate_person_name(&args.name)?.to_string();
    let mut analyzer = args.vision.analyzer()?;
    let mut gallery = args.gallery.open()?;

    // Every photo is read and checked first; the person is created (if new) and their samples
    // stored only when at least one photo passed, so photos that are all refused leave no
    // empty person behind.
    struct Accepted {
        embedding: Vec<f32>,
        jpeg: Vec<u8>,
        quality_json: String,
        source: String,
        faces: usize,
        quality: faced::vision::quality::Quality,
    }
    enum Outcome {
        Accepted(Box<Accepted>),
        Refused(serde_json::Value),
        Failed(faced::Error),
    }
    let mut outcomes = Vec::with_capacity(args.images.len());
    for path in &args.images {
        let outcome = (|| -> faced::Result<Outcome> {
            let img = load(path, &ImageLimits::default())?;
            let faces = analyzer.analyze(&img)?;
            let Some(face) = faces.iter().max_by(|a, b| {
                (a.detection.width() * a.detection.height())
                    .total_cmp(&(b.detection.width() * b.detection.height()))
            }) else {
                return Ok(Outcome::Refused(
                    json!({"file": path.display().to_string(), "enrolled": false, "reason": "no face found"}),
                ));
            };
            if let Some((reject, why)) = limits.check(&face.quality) {
                return Ok(Outcome::Refused(
                    json!({"file": path.display().to_string(), "enrolled": false, "reject": reject, "reason": why}),
                ));
            }
            let mut jpeg = Vec::new();
            ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
                .encode_image(&face.aligned)
                .map_err(|e| faced::Error::internal(format!("JPEG encoding failed: {e}")))?;
            Ok(Outcome::Accepted(Box::new(Accepted {
                embedding: face.embedding.clone(),
                jpeg,
                quality_json: serde_json::to_string(&face.quality).unwrap_or_default(),
                source: format!(
                    "file:{}",
                    path.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ),
                faces: faces.len(),
                quality: face.quality,
            })))
        })();
        outcomes.push(outcome.unwrap_or_else(Outcome::Failed));
    }

    let accepted: Vec<&Accepted> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Accepted(a) => Some(&**a),
            _ => None,
        })
        .collect();
    let ids = if accepted.is_empty() {
        Vec::new()
    } else {
        let samples: Vec<NewSample<'_>> = accepted
            .iter()
            .map(|a| NewSample {
                kind: SampleKind::Positive,
                embedding: &a.embedding,
                crop_jpeg: &a.jpeg,
                quality_json: &a.quality_json,
                source: &a.source,
            })
            .collect();
        // All samples or none; a person created here is removed again if they fail.
        gallery
            .by(&faced::audit::By::cli())
            .enroll(EnrollTarget::FindOrCreate(&name), &samples)?
            .samples
    };

    let (mut added, mut failed) = (0, 0);
    let mut next_id = ids.iter();
    for (path, outcome) in args.images.iter().zip(&outcomes) {
        match outcome {
            Outcome::Accepted(a) => {
                added += 1;
                let id = next_id.next().map(|i| i.0);
                if args.json {
                    print_json(
                        &json!({"file": path.display().to_string(), "enrolled": true, "sample_id": id,
                          "faces_in_image": a.faces, "quality": {"size_px": r(a.quality.size_px, 1), "sharpness": r(a.quality.sharpness, 1), "yaw": r(a.quality.yaw, 3)}}),
                    );
                } else {
                    println!("{}: enrolled as {name}", path.display());
                }
            }
            Outcome::Refused(v) => {
                failed += 1;
                if args.json {
                    print_json(v);
                } else {
                    println!(
                        "{}: refused: {}",
                        path.display(),
                        v["reason"].as_str().unwrap_or("?")
                    );
                }
            }
            Outcome::Failed(e) => {
                failed += 1;
                if args.json {
                    print_json(&error_line(path, e));
                } else {
                    eprintln!("{}: error: {}", path.display(), e.message());
                }
            }
        }
    }
    if added == 0 {
        eprintln!("faced: no photo of {name} could be enrolled; nothing was added to the gallery");
    } else if !args.json {
        println!("{name}: {added} sample(s) added, {failed} photo(s) refused or unreadable");
    }
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
