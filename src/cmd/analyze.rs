//! `faced analyze`: find faces in images and print each face's box, landmarks, quality and
//! embedding — the scripting contract other tools build on.

use std::path::PathBuf;
use std::process::ExitCode;

use faced::vision::image::{ImageLimits, load};
use serde_json::json;

use super::{VisionArgs, error_line, print_json, r};

/// Detect, align and embed every face in each image. With --json, prints one JSON object per
/// image per line: {"file","width","height","faces":[{"score","box":[x1,y1,x2,y2],
/// "landmarks":[[x,y]×6],"quality":{…},"embedding":[192 floats]}]}; an unreadable image gives
/// {"file","error"} and a non-zero exit status, and the other images are still processed.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    vision: VisionArgs,
    /// Print JSON lines (otherwise a short human summary).
    #[arg(long)]
    json: bool,
    /// Images to analyse (JPEG, PNG, WebP, BMP, GIF, TIFF).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut analyzer = args.vision.analyzer()?;
    let limits = ImageLimits::default();
    let mut failed = 0;
    for path in &args.images {
        let result =
            load(path, &limits).and_then(|img| Ok((img.dimensions(), analyzer.analyze(&img)?)));
        match result {
            Err(e) => {
                failed += 1;
                if args.json {
                    print_json(&error_line(path, &e));
                } else {
                    eprintln!("{}: error: {}", path.display(), e.message());
                }
            }
            Ok(((w, h), faces)) if args.json => {
                let faces: Vec<_> = faces
                    .iter()
                    .map(|f| {
                        let d = &f.detection;
                        json!({
                            "score": r(d.score, 4),
                            "box": d.bbox.map(|v| r(v, 1)),
                            "landmarks": d.landmarks.map(|p| [r(p[0], 1), r(p[1], 1)]),
                            "quality": {
                                "size_px": r(f.quality.size_px, 1),
                                "sharpness": r(f.quality.sharpness, 1),
                                "yaw": r(f.quality.yaw, 3),
                                "roll_deg": r(f.quality.roll_deg, 1),
                                "frontal": r(f.quality.frontal, 3),
                            },
                            "embedding": f.embedding.iter().map(|v| r(*v, 6)).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                print_json(
                    &json!({"file": path.display().to_string(), "width": w, "height": h, "faces": faces}),
                );
            }
            Ok(((w, h), faces)) => {
                println!("{} ({w}×{h}): {} face(s)", path.display(), faces.len());
                for f in &faces {
                    let b = f.detection.bbox;
                    println!(
                        "  score {:.2}  box [{:.0}, {:.0}, {:.0}, {:.0}]  size {:.0} px  sharpness {:.0}  yaw {:+.2}",
                        f.detection.score,
                        b[0],
                        b[1],
                        b[2],
                        b[3],
                        f.quality.size_px,
                        f.quality.sharpness,
                        f.quality.yaw
                    );
                }
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
