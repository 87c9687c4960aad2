//! `faced identify`: match every face in images against the gallery.

use std::path::PathBuf;
use std::process::ExitCode;

use faced::vision::image::{ImageLimits, load};
use serde_json::json;

use super::{GalleryArgs, VisionArgs, error_line, print_json, r};

/// Identify the faces in each image: per face its box, the matched `person` (or null for an
/// unknown face) and the cosine `similarity` of the best match. With --json, one JSON object
/// per image per line: {"file","faces":[{"box","score","person","person_id","similarity"}]}.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    gallery: GalleryArgs,
    #[command(flatten)]
    vision: VisionArgs,
    /// Similarity (cosine, −1..1) at or above which a face is that person.
    #[arg(long, default_value_t = faced::vision::DEFAULT_THRESHOLD)]
    threshold: f32,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
    /// Images to identify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(-1.0..=1.0).contains(&args.threshold) {
        anyhow::bail!("--threshold must be within -1..1, got {}", args.threshold);
    }
    let mut analyzer = args.vision.analyzer()?;
    let gallery = args.gallery.open()?;
    let mut failed = 0;
    for path in &args.images {
        let result = load(path, &ImageLimits::default()).and_then(|img| analyzer.analyze(&img));
        let faces = match result {
            Ok(f) => f,
            Err(e) => {
                failed += 1;
                if args.json {
                    print_json(&error_line(path, &e));
                } else {
                    eprintln!("{}: error: {}", path.display(), e.message());
                }
                continue;
            }
        };
        let mut out = Vec::new();
        for f in &faces {
            // The best candidate is reported even below the threshold, so a script can see how
            // close an unknown face came.
            let best = gallery.search(&f.embedding, 1)?.into_iter().next();
            let matched = gallery.identify(&f.embedding, args.threshold)?;
            out.push(json!({
                "box": f.detection.bbox.map(|v| r(v, 1)),
                "score": r(f.detection.score, 4),
                "person": matched.as_ref().map(|m| m.name.clone()),
                "person_id": matched.as_ref().map(|m| m.person.0),
                "similarity": best.as_ref().map(|m| r(m.similarity, 4)),
            }));
        }
        if args.json {
            print_json(&json!({"file": path.display().to_string(), "faces": out}));
        } else {
            println!("{}: {} face(s)", path.display(), out.len());
            for f in &out {
                println!(
                    "  {}  similarity {}  box {}",
                    f["person"].as_str().unwrap_or("unknown"),
                    f["similarity"]
                        .as_f64()
                        .map(|s| format!("{s:.3}"))
                        .unwrap_or("-".into()),
                    f["box"]
                );
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
