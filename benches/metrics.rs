//! What `/metrics` costs the frame path (docs/metrics.md, "Cost"). The only per-frame work is
//! the histogram observations at the end of `Processor::process`; everything else is read when
//! Prometheus scrapes.
//!
//! * `frame_metrics/process/{observed,unobserved}`: one 640×480 frame of an enrolled person at
//!   the door through `Processor::process` with the real models (detection every frame, the
//!   stream detector; the track re-embedded every `embed_every` passes, as at a real door),
//!   with the observations on and off (`Processor::set_observe`).
//! * `frame_metrics/observe`: the observations alone, for the busiest kind of frame (a
//!   detection pass that also embedded: capture, frame, detection, faces and embedding
//!   histograms).
//! * `scrape/render`: a whole scrape's text for that pipeline (not on the frame path).
//!
//! `cargo bench --bench metrics`. The cost is `observe` over the median frame; the A/B of the
//! two `process` benches is the same figure buried in the frame's own noise.

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use faced::base::RealClocks;
use faced::capture::Frame;
use faced::config::{CameraConfig, Config, RawConfig, stream_detector};
use faced::gallery::{Gallery, GalleryOptions, NewSample, SampleKind};
use faced::pipeline::metrics::FrameHistograms;
use faced::pipeline::{Processor, StageStats};
use faced::vision::image::{ImageLimits, load};
use faced::vision::{Analyzer, InferenceConfig};
use image::RgbImage;

fn photo(file: &str) -> RgbImage {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/faces")
        .join(file);
    faced::capture::convert::letterbox(&load(&p, &ImageLimits::default()).unwrap(), 640, 480)
}

/// A processor for one camera with person01 of the fixtures enrolled from three photos, and a frame
/// of the same person from a fourth.
fn setup(dir: &Path) -> (Processor, RgbImage) {
    let db = dir.join("faced.db");
    let mut g = Gallery::open(&db, &GalleryOptions::default()).unwrap();
    let mut an = Analyzer::open(&InferenceConfig::default(), Default::default())
        .expect("models and LiteRT load (run scripts/setup)");
    let id = g.add_person("bench").unwrap();
    for f in ["img1.jpg", "img2.jpg", "img4.jpg"] {
        let face = an.analyze(&photo(f)).unwrap().into_iter().next().unwrap();
        let crop = faced::pipeline::encode_jpeg(&face.aligned, 90).unwrap();
        g.add_sample(
            id,
            NewSample {
                kind: SampleKind::Positive,
                embedding: &face.embedding,
                crop_jpeg: &crop,
                quality_json: "{}",
                source: f,
            },
        )
        .unwrap();
    }
    let mut raw = RawConfig::default();
    raw.gallery.db = db;
    raw.cameras = vec![CameraConfig {
        name: "door".into(),
        source: "pattern".into(),
        detector: stream_detector(),
        ..CameraConfig::default()
    }];
    let cfg = Config::validate(raw, None, Vec::new()).unwrap();
    let p = Processor::new(&cfg, Arc::new(Mutex::new(g)), None, Arc::new(RealClocks)).unwrap();
    (p, photo("img5.jpg"))
}

fn frame_path(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut p, img) = setup(tmp.path());
    let mut seq = 0u64;
    let mut next = || {
        seq += 1;
        Frame::now(img.clone(), seq)
    };
    // Warm up the models and let the track be recognised, so the loop is the steady state.
    let mut kinds = Vec::new();
    for _ in 0..20 {
        kinds.extend(p.process(0, &next()).unwrap().into_iter().map(|e| e.kind));
    }
    assert_eq!(
        kinds,
        [faced::events::EventKind::Recognized],
        "the person at the door is recognised once"
    );
    let mut g = c.benchmark_group("frame_metrics");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(30)
        .measurement_time(Duration::from_secs(20));
    for (name, on) in [("process/observed", true), ("process/unobserved", false)] {
        p.set_observe(on);
        g.bench_function(name, |b| {
            b.iter_custom(|n| {
                let mut total = Duration::ZERO;
                for _ in 0..n {
                    // Not timed: copying the frame's pixels, which a camera does anyway.
                    let f = next();
                    let t = Instant::now();
                    black_box(p.process(0, &f).unwrap());
                    total += t.elapsed();
                }
                total
            })
        });
    }
    p.set_observe(true);
    let h = FrameHistograms::default();
    let before = StageStats::default();
    let after = StageStats {
        frames: 1,
        detect_passes: 1,
        faces: 1,
        embeds: 1,
        detect: Duration::from_millis(9),
        embed: Duration::from_millis(14),
        ..StageStats::default()
    };
    let captured = Instant::now();
    g.sampling_mode(SamplingMode::Auto)
        .sample_size(100)
        .measurement_time(Duration::from_secs(5));
    g.bench_function("observe", |b| {
        b.iter(|| {
            h.observe(
                black_box(captured),
                Instant::now(),
                captured,
                &before,
                &after,
                &[],
                &[],
            )
        })
    });
    g.finish();
    interleaved(&mut p, &mut next);

    let m = faced::metrics::Metrics::new();
    m.add(Arc::new(p.handle()));
    let mut g = c.benchmark_group("scrape");
    g.bench_function("render", |b| b.iter(|| black_box(m.render())));
    g.finish();
}

/// The A/B with less drift than two criterion runs one after the other on a shared machine:
/// each frame observed or not at random (not alternately: the track is embedded every tenth
/// frame, and alternation would put all those frames on one side), and the median and mean of
/// each.
fn interleaved(p: &mut Processor, next: &mut impl FnMut() -> Frame) {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..4000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let observe = rng & 1 == 1;
        p.set_observe(observe);
        let f = next();
        let t = Instant::now();
        black_box(p.process(0, &f).unwrap());
        let d = t.elapsed().as_secs_f64() * 1e3;
        if observe { on.push(d) } else { off.push(d) }
    }
    p.set_observe(true);
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v.iter().sum::<f64>() / v.len() as f64)
    };
    let ((a, am), (b, bm)) = (stats(&mut on), stats(&mut off));
    println!(
        "frame_metrics/interleaved: frame median {a:.3} ms / mean {am:.3} ms observed \
         ({} frames), {b:.3} / {bm:.3} ms unobserved ({} frames): median {:+.2} %, mean {:+.2} %",
        on.len(),
        off.len(),
        (a - b) / b * 100.0,
        (am - bm) / bm * 100.0
    );
}

criterion_group!(benches, frame_path);
criterion_main!(benches);
