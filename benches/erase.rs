//! What an erase costs, and what `secure_delete` costs the writes that are not erases.
//!
//! `cargo bench --bench erase`. Groups:
//! * `erase`: `Gallery::remove_person` of a person with 10 samples (5 KB crops), and
//!   `Gallery::remove_sample`, each with the truncating checkpoint that follows the commit
//!   (`db::erase::scrub`), on a database holding 200 other people and 2 000 events;
//! * `event_row`: the event writer's steady state once retention is reached (insert one event
//!   with a 5 KB sealed snapshot, delete the oldest), with `secure_delete` on (faced) and off
//!   (before), in the same run;
//! * `scrub`: the checkpoint alone after 100 event writes.
//!
//! Figures are in docs/privacy.md ("What an erase costs").

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use faced::gallery::{Gallery, GalleryOptions, NewSample, PersonId, SampleKind};
use rusqlite::{Connection, params};

mod common;
use common::Rng;

const CROP: usize = 5000;

fn new_sample<'a>(e: &'a [f32], crop: &'a [u8]) -> NewSample<'a> {
    NewSample {
        kind: SampleKind::Positive,
        embedding: e,
        crop_jpeg: crop,
        quality_json: "{}",
        source: "bench",
    }
}

fn add_person(g: &mut Gallery, name: &str, rng: &mut Rng, crop: &[u8]) -> PersonId {
    let embs: Vec<Vec<f32>> = (0..10).map(|_| rng.unit()).collect();
    let samples: Vec<NewSample> = embs.iter().map(|e| new_sample(e, crop)).collect();
    g.enroll(faced::gallery::EnrollTarget::New(name), &samples)
        .unwrap()
        .person
}

fn insert_event(c: &Connection, i: i64, snap: &[u8]) {
    c.execute(
        "INSERT INTO event (uid, kind, camera, track_id, x1, y1, x2, y2, at, snapshot)
         VALUES (randomblob(16), 'unknown', 'door', ?1, 0, 0, 1, 1, ?1, ?2)",
        params![i, snap],
    )
    .unwrap();
}

fn erase(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let mut gal = Gallery::open(&db, &GalleryOptions::default()).unwrap();
    let mut rng = Rng(11);
    let crop = vec![0x5au8; CROP];
    for i in 0..200 {
        add_person(&mut gal, &format!("Other {i}"), &mut rng, &crop);
    }
    {
        let c = faced::db::open(&db).unwrap();
        let snap = vec![0x33u8; CROP];
        for i in 0..2000 {
            insert_event(&c, i, &snap);
        }
    }
    let gal = std::cell::RefCell::new(gal);
    let mut n = 0;
    let mut g = c.benchmark_group("erase");
    g.sample_size(30);
    g.bench_function("remove_person_10_samples", |b| {
        b.iter_batched(
            || {
                n += 1;
                add_person(&mut gal.borrow_mut(), &format!("P {n}"), &mut rng, &crop)
            },
            |p| gal.borrow_mut().remove_person(p).unwrap(),
            BatchSize::PerIteration,
        )
    });
    let victim = add_person(&mut gal.borrow_mut(), "Victim", &mut rng, &crop);
    g.bench_function("remove_sample", |b| {
        b.iter_batched(
            || {
                let e = rng.unit();
                gal.borrow_mut()
                    .add_sample(victim, new_sample(&e, &crop))
                    .unwrap()
            },
            |s| gal.borrow_mut().remove_sample(s).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn event_row(c: &mut Criterion) {
    let mut g = c.benchmark_group("event_row");
    for on in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bench.db");
        drop(Gallery::open(&db, &GalleryOptions::default()).unwrap());
        let conn = faced::db::open(&db).unwrap();
        faced::db::durable(&conn).unwrap();
        conn.pragma_update(None, "secure_delete", on).unwrap();
        let snap = vec![0x33u8; CROP];
        for i in 0..2000 {
            insert_event(&conn, i, &snap);
        }
        let mut i = 2000;
        let name = if on {
            "insert_and_retire_secure_delete_on"
        } else {
            "insert_and_retire_secure_delete_off"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let tx = conn.unchecked_transaction().unwrap();
                insert_event(&tx, i, &snap);
                tx.execute(
                    "DELETE FROM event WHERE id = (SELECT MIN(id) FROM event)",
                    [],
                )
                .unwrap();
                tx.commit().unwrap();
            })
        });
    }
    g.finish();
}

fn scrub(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    drop(Gallery::open(&db, &GalleryOptions::default()).unwrap());
    let conn = faced::db::open(&db).unwrap();
    let snap = vec![0x33u8; CROP];
    let mut i = 0;
    let mut g = c.benchmark_group("scrub");
    g.sample_size(30);
    g.bench_function("after_100_event_writes", |b| {
        b.iter_batched(
            || {
                for _ in 0..100 {
                    i += 1;
                    insert_event(&conn, i, &snap);
                }
            },
            |()| black_box(faced::db::erase::scrub(&conn).unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, erase, event_row, scrub);
criterion_main!(benches);
