//! Unknown-visitor clustering (src/visitors/): the work per unknown track and the memory per
//! 10 000 stored unknown embeddings.
//!
//! `cargo bench --bench visitors`. A real SQLite file: 2 000 visitors × 5 faces (10 000 sealed
//! embeddings and crops), each visitor a random direction with faces at cosine 0.8 around it.
//!
//! * `observe/new_stranger` and `observe/returning`: one `Visitors::observe`, as the vision
//!   thread calls it once per unknown track — the pass over the visitors in memory, the merge
//!   check, sealing, and the SQLite transaction (WAL, synchronous=NORMAL) — with 2 000
//!   visitors. A returning face also trims the visitor to its best 12.
//! * `open_10k`: loading the 10 000 stored embeddings at start (decrypt and sum).
//!
//! The memory figure is printed once (resident set before and after `Visitors::open`, and the
//! bytes the clustering holds per visitor: a sum vector, not the embeddings).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use faced::base::RealClocks;
use faced::gallery::{Gallery, GalleryOptions};
use faced::vision::EMBEDDING_DIM;
use faced::vision::quality::{Quality, QualityLimits};
use faced::visitors::{Observation, Visitors, VisitorsConfig};

mod common;
use common::Rng;

const VISITORS: usize = 2_000;
const FACES: usize = 5;
const Q: Quality = Quality {
    size_px: 90.0,
    sharpness: 150.0,
    yaw: 0.1,
    roll_deg: 2.0,
    frontal: 0.9,
};
/// About the size of a 112×112 aligned face at JPEG quality 90.
const CROP: [u8; 4000] = [0x5a; 4000];

fn open(db: &Path, key: &Path) -> Arc<Visitors> {
    Visitors::open(
        db,
        key,
        VisitorsConfig::default(),
        QualityLimits::default(),
        Arc::new(RealClocks),
    )
    .unwrap()
}

fn see(v: &Visitors, e: &[f32], t: i64) {
    black_box(v.observe(&Observation {
        camera: "door",
        embedding: e,
        crop_jpeg: &CROP,
        quality: &Q,
        hint: 0.5,
        wall_ms: t,
    }));
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("faced.db");
    let key = Gallery::open(&db, &GalleryOptions::default())
        .unwrap()
        .key_path()
        .to_path_buf();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let centres: Vec<Vec<f32>> = (0..VISITORS).map(|_| rng.unit()).collect();
    let now = faced::base::unix_ms(std::time::SystemTime::now());
    {
        let v = open(&db, &key);
        let t = std::time::Instant::now();
        for round in 0..FACES {
            for c in &centres {
                let e = rng.near(c, 0.8);
                see(&v, &e, now - 86_400_000 + round as i64);
            }
        }
        eprintln!(
            "built {} visitors with {} faces in {:.1} s",
            v.len(),
            VISITORS * FACES,
            t.elapsed().as_secs_f32()
        );
    }
    let before = rss_kib();
    let v = open(&db, &key);
    let after = rss_kib();
    eprintln!(
        "open with {} stored embeddings: resident set +{} KiB ({} visitors; the clustering holds \
         {} bytes of sums per visitor)",
        VISITORS * FACES,
        after.saturating_sub(before),
        v.len(),
        EMBEDDING_DIM * 4
    );
    let mut g = c.benchmark_group("visitors");
    g.sample_size(30);
    g.bench_function("observe/new_stranger_2000_visitors", |b| {
        let mut t = now;
        b.iter(|| {
            t += 1;
            let e = rng.unit();
            see(&v, &e, t);
        })
    });
    let mut i = 0;
    g.bench_function("observe/returning_2000_visitors", |b| {
        let mut t = now;
        b.iter(|| {
            t += 1;
            i = (i + 1) % centres.len();
            let e = rng.near(&centres[i], 0.8);
            see(&v, &e, t);
        })
    });
    drop(v);
    g.sample_size(10);
    g.bench_function("open_10k_stored_embeddings", |b| {
        b.iter(|| black_box(open(&db, &key).len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
