//! The cost of an audit row (`cargo bench --bench audit`): an append inside a caller's
//! transaction (what a gallery write pays on top of its own work: two reads, three HMACs, an
//! insert, the seal's update; rolled back each time, so the trail does not grow), and a whole
//! `Log::record` (its own IMMEDIATE transaction and commit; WAL, synchronous=NORMAL), with 10 000
//! rows already in the trail. On the 2-core dev VM (shared, load ~3.5): 22.6 µs inside a
//! transaction, 46.1 µs for a whole record (docs/audit.md, "Writes, cost and crash windows").

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use faced::audit::{Action, By, Entry, Subject};
use faced::gallery::{Gallery, GalleryOptions};

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("faced.db");
    // Through the gallery: it creates the database and the key the trail's keys derive from.
    let log = Gallery::open(&db, &GalleryOptions::default())
        .unwrap()
        .audit();
    let by = By::user("admin", "10.0.0.2".parse().unwrap());
    for i in 0..10_000 {
        log.record(&by, Action::Rename, Subject::person(i, Some("Alice")), "")
            .unwrap();
    }
    let mut conn = faced::db::open(&db).unwrap();
    c.bench_function("audit append inside a transaction (rolled back)", |b| {
        b.iter(|| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            let e = Entry {
                by: &by,
                action: Action::Rename,
                subject: Subject::person(1, Some("Alice")),
                detail: String::new(),
            };
            black_box(log.trail().append(&tx, &e).unwrap());
            tx.rollback().unwrap();
        })
    });
    c.bench_function("audit record, own transaction and commit", |b| {
        b.iter(|| {
            black_box(
                log.record(&by, Action::Rename, Subject::person(1, Some("Alice")), "")
                    .unwrap(),
            )
        })
    });
}

criterion_group!(benches, append);
criterion_main!(benches);
