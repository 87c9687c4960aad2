//! Vision benchmarks on real fixture photos letterboxed into a 640×480 frame, as a camera frame:
//! BlazeFace short- and full-range single pass (`Tiling::Off`, the stream setting), the still-image
//! multi-pass search (`Tiling::Auto`), alignment of one face, and MobileFaceNet embedding — each
//! model benchmark for the float, full-integer int8 and dynamic-range int8 models side by side in
//! one run, and the embedder also as the published file (`float_stock`). Inference uses
//! the default thread count (2).
//!
//! `cargo bench --bench vision`. MobileFaceNet's batch is fixed at 2, so `embed/per_face` times
//! one pair batch (two different faces) and reports half of it: the cost per face when faces come
//! in pairs. Targets on the 2-core x86 dev VM: BlazeFace short ≤ 2 ms, MobileFaceNet ≤ 10 ms per
//! face.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use faced::capture::convert::letterbox;
use faced::models::Precision;
use faced::vision::detect::{Detection, DetectorConfig, DetectorKind, Tiling};
use faced::vision::image::{ImageLimits, load};
use faced::vision::{Analyzer, InferenceConfig, align};
use image::RgbImage;

const PRECISIONS: [(Precision, &str); 3] = [
    (Precision::Float, "float"),
    (Precision::Int8, "int8"),
    (Precision::DynamicInt8, "dynamic_int8"),
];

/// A fixture photo letterboxed into a 640×480 camera frame.
fn frame(file: &str) -> RgbImage {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/faces")
        .join(file);
    letterbox(
        &load(&p, &ImageLimits::default()).expect("fixture photo"),
        640,
        480,
    )
}

fn analyzer(precision: Precision, kind: DetectorKind, tiling: Tiling) -> Analyzer {
    let inf = InferenceConfig {
        precision,
        ..InferenceConfig::default()
    };
    let det = DetectorConfig {
        kind,
        tiling,
        ..DetectorConfig::default()
    };
    Analyzer::open(&inf, det).expect("models and LiteRT load (run scripts/setup)")
}

/// The faces of `img`, left to right, found by the float multi-pass detector.
fn faces(img: &RgbImage) -> Vec<Detection> {
    let mut a = analyzer(Precision::Float, DetectorKind::Short, Tiling::Auto);
    let mut dets = a.detector.detect(img).unwrap();
    dets.sort_by(|a, b| a.bbox[0].total_cmp(&b.bbox[0]));
    dets
}

fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // Equal iteration counts per sample: linear sampling would need ~15× as many runs.
    g.sampling_mode(SamplingMode::Flat);
}

fn detect(c: &mut Criterion) {
    let couple = frame("couple.jpg");
    let portrait = frame("img1.jpg");
    for (name, kind, tiling, img) in [
        ("detect_short", DetectorKind::Short, Tiling::Off, &couple),
        ("detect_full", DetectorKind::Full, Tiling::Off, &couple),
        (
            "detect_multipass",
            DetectorKind::Short,
            Tiling::Auto,
            &couple,
        ),
    ] {
        let mut g = c.benchmark_group(name);
        configure(&mut g);
        for (precision, label) in PRECISIONS {
            let mut a = analyzer(precision, kind, tiling);
            let n = a.detector.detect(img).unwrap().len();
            assert!(n >= 1, "{name}/{label}: no face in couple.jpg");
            g.bench_function(BenchmarkId::new(label, "couple.jpg"), |b| {
                b.iter(|| black_box(a.detector.detect(black_box(img)).unwrap()))
            });
        }
        if kind == DetectorKind::Short && tiling == Tiling::Off {
            // A single close face, the door-camera case.
            for (precision, label) in PRECISIONS {
                let mut a = analyzer(precision, kind, tiling);
                g.bench_function(BenchmarkId::new(label, "img1.jpg"), |b| {
                    b.iter(|| black_box(a.detector.detect(black_box(&portrait)).unwrap()))
                });
            }
        }
        g.finish();
    }
}

fn align_and_embed(c: &mut Criterion) {
    let couple = frame("couple.jpg");
    let dets = faces(&couple);
    assert_eq!(dets.len(), 2, "couple.jpg has two faces");

    let mut g = c.benchmark_group("align");
    configure(&mut g);
    g.bench_function("one_face", |b| {
        b.iter(|| black_box(align::align(black_box(&couple), &dets[0])))
    });
    g.finish();

    let crops: Vec<RgbImage> = dets.iter().map(|d| align::align(&couple, d)).collect();
    let pair: Vec<&RgbImage> = crops.iter().collect();
    let mut g = c.benchmark_group("embed");
    configure(&mut g);
    // float_stock: the published MobileFaceNet file, which the default float embedder rewrites.
    for (precision, label) in [(Precision::FloatStock, "float_stock")]
        .into_iter()
        .chain(PRECISIONS)
    {
        let mut a = analyzer(precision, DetectorKind::Short, Tiling::Off);
        g.bench_function(BenchmarkId::new("per_face", label), |b| {
            // One pair batch per iteration; half its time is the cost of one face.
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(a.embedder.embed(black_box(&pair)).unwrap());
                }
                t.elapsed() / 2
            })
        });
    }
    g.finish();
}

criterion_group!(benches, detect, align_and_embed);
criterion_main!(benches);
