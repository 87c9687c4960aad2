//! Gallery integration tests: a real SQLite file (and key file) in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use faced::Kind;
use faced::db::schema;
use faced::gallery::{
    Gallery, GalleryOptions, Index, IndexOptions, NewSample, PersonId, SampleId, SampleKind,
};
use faced::vision::EMBEDDING_DIM;

/// Small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn gauss(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
    fn unit(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..EMBEDDING_DIM).map(|_| self.gauss()).collect();
        normalized(&v)
    }
    /// `center` plus noise of relative size `sigma`, normalised.
    fn near(&mut self, center: &[f32], sigma: f32) -> Vec<f32> {
        let n = self.unit();
        normalized(
            &center
                .iter()
                .zip(&n)
                .map(|(c, e)| c + sigma * e)
                .collect::<Vec<_>>(),
        )
    }
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gallery.db");
    Fixture { _dir: dir, db }
}

fn open(db: &Path) -> Gallery {
    Gallery::open(db, &GalleryOptions::default()).unwrap()
}

fn key_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.key", db.display()))
}

const CROP: &[u8] = b"\xff\xd8\xff\xe0JFIF-this-is-a-secret-face-crop-0123456789\xff\xd9";

fn sample(kind: SampleKind, e: &[f32]) -> NewSample<'_> {
    NewSample {
        kind,
        embedding: e,
        crop_jpeg: CROP,
        quality_json: r#"{"sharpness":0.9}"#,
        source: "test",
    }
}

fn count(g: &Gallery, sql: &str) -> i64 {
    g.connection().query_row(sql, [], |r| r.get(0)).unwrap()
}

fn err_kind<T: std::fmt::Debug>(r: faced::Result<T>) -> (Kind, String) {
    let e = r.unwrap_err();
    (e.kind(), e.to_string())
}

/// Three people with five positives each around their own centre; returns (ids, centres).
fn enrol_three(g: &mut Gallery, rng: &mut Rng) -> (Vec<PersonId>, Vec<Vec<f32>>) {
    let mut ids = Vec::new();
    let mut centres = Vec::new();
    for name in ["Alice", "Bob", "Carol"] {
        let id = g.add_person(name).unwrap();
        let c = rng.unit();
        let embs: Vec<Vec<f32>> = (0..5).map(|_| rng.near(&c, 0.5)).collect();
        let samples: Vec<NewSample> = embs
            .iter()
            .map(|e| sample(SampleKind::Positive, e))
            .collect();
        g.add_samples(id, &samples).unwrap();
        ids.push(id);
        centres.push(c);
    }
    (ids, centres)
}

#[test]
fn gallery_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Gallery>();
}

#[test]
fn reopen_gives_identical_search_results() {
    let f = fixture();
    let mut rng = Rng(1);
    let mut g = open(&f.db);
    let (ids, centres) = enrol_three(&mut g, &mut rng);
    let neg = rng.near(&centres[1], 0.5);
    g.add_sample(ids[0], sample(SampleKind::Negative, &neg))
        .unwrap();
    let mut queries: Vec<Vec<f32>> = (0..20).map(|_| rng.unit()).collect();
    queries.extend(centres.iter().cloned());
    queries.push(neg);
    let before: Vec<_> = queries.iter().map(|q| g.search(q, 3).unwrap()).collect();
    assert_eq!(before[20][0].name, "Alice");
    assert_eq!(before[21][0].name, "Bob");
    assert!(
        before[23].iter().all(|m| m.person != ids[0]),
        "Alice vetoed by her negative"
    );
    drop(g);

    let g = open(&f.db);
    assert_eq!(g.index().len(), 16);
    for (i, (q, expected)) in queries.iter().zip(&before).enumerate() {
        assert_eq!(&g.search(q, 3).unwrap(), expected, "query {i}");
    }
}

#[test]
fn rename_keeps_index_in_sync() {
    let f = fixture();
    let mut rng = Rng(2);
    let mut g = open(&f.db);
    let (ids, centres) = enrol_three(&mut g, &mut rng);
    g.rename_person(ids[0], "  Alicia  ").unwrap();
    assert_eq!(g.search(&centres[0], 1).unwrap()[0].name, "Alicia");
    assert!(g.person_by_name("Alice").unwrap().is_none());
    assert_eq!(g.person_by_name("alicia").unwrap().unwrap().id, ids[0]);
    let (kind, msg) = err_kind(g.rename_person(ids[0], "BOB"));
    assert_eq!(kind, Kind::Conflict);
    assert!(msg.contains("already exists"), "{msg}");
    assert_eq!(
        g.search(&centres[0], 1).unwrap()[0].name,
        "Alicia",
        "failed rename left index alone"
    );
    assert_eq!(
        err_kind(g.rename_person(PersonId(999), "Zed")).0,
        Kind::NotFound
    );
    drop(g);
    assert_eq!(
        open(&f.db).search(&centres[0], 1).unwrap()[0].name,
        "Alicia"
    );
}

#[test]
fn remove_person_erases_all_samples() {
    let f = fixture();
    let mut rng = Rng(3);
    let mut g = open(&f.db);
    let (ids, centres) = enrol_three(&mut g, &mut rng);
    let neg = rng.unit();
    g.add_sample(ids[1], sample(SampleKind::Negative, &neg))
        .unwrap();
    let bob_samples: Vec<SampleId> = g.samples(ids[1]).unwrap().iter().map(|s| s.id).collect();
    assert_eq!(bob_samples.len(), 6);
    assert_eq!(count(&g, "SELECT COUNT(*) FROM face_sample"), 16);

    g.remove_person(ids[1]).unwrap();
    assert_eq!(
        count(
            &g,
            &format!(
                "SELECT COUNT(*) FROM face_sample WHERE person_id = {}",
                ids[1].0
            )
        ),
        0
    );
    assert_eq!(count(&g, "SELECT COUNT(*) FROM face_sample"), 10);
    assert_eq!(count(&g, "SELECT COUNT(*) FROM person"), 2);
    assert_eq!(g.index().len(), 10);
    assert_eq!(err_kind(g.sample_crop(bob_samples[0])).0, Kind::NotFound);
    assert_eq!(err_kind(g.samples(ids[1])).0, Kind::NotFound);
    for m in g.search(&centres[1], 10).unwrap() {
        assert_ne!(m.person, ids[1]);
    }
    assert_eq!(g.search(&centres[1], 10).unwrap().len(), 2);
    assert_eq!(err_kind(g.remove_person(ids[1])).0, Kind::NotFound);
    // The others still match after the rows were moved around in the index.
    assert_eq!(g.search(&centres[0], 1).unwrap()[0].person, ids[0]);
    assert_eq!(g.search(&centres[2], 1).unwrap()[0].person, ids[2]);
    // A new person never reuses the id.
    assert!(g.add_person("Dave").unwrap() > ids[2]);
}

#[test]
fn remove_sample_updates_index_and_counts() {
    let f = fixture();
    let mut rng = Rng(4);
    let mut g = open(&f.db);
    let alice = g.add_person("Alice").unwrap();
    let bob = g.add_person("Bob").unwrap();
    let a = rng.unit();
    let b = rng.near(&a, 0.3); // Bob looks a bit like Alice
    let sa = g
        .add_sample(alice, sample(SampleKind::Positive, &a))
        .unwrap();
    g.add_sample(bob, sample(SampleKind::Positive, &b)).unwrap();
    let m = g.search(&a, 1).unwrap();
    assert_eq!((m[0].person, m[0].sample), (alice, sa));
    assert!((m[0].similarity - 1.0).abs() < 1e-5);
    g.remove_sample(sa).unwrap();
    assert_eq!(g.search(&a, 1).unwrap()[0].person, bob);
    let people = g.people().unwrap();
    assert_eq!(
        people
            .iter()
            .map(|p| (p.name.as_str(), p.positive_samples))
            .collect::<Vec<_>>(),
        [("Alice", 0), ("Bob", 1)]
    );
    assert_eq!(err_kind(g.remove_sample(sa)).0, Kind::NotFound);
}

#[test]
fn samples_crops_and_people_round_trip() {
    let f = fixture();
    let mut rng = Rng(5);
    let mut g = open(&f.db);
    let (ids, _) = enrol_three(&mut g, &mut rng);
    let n = rng.unit();
    g.add_sample(ids[2], sample(SampleKind::Negative, &n))
        .unwrap();
    let s = g.samples(ids[2]).unwrap();
    assert_eq!(s.len(), 6);
    assert_eq!(s[5].kind, SampleKind::Negative);
    assert_eq!(s[5].quality_json, r#"{"sharpness":0.9}"#);
    assert_eq!(g.sample_crop(s[0].id).unwrap(), CROP);
    let p = g.people().unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(
        (
            p[2].name.as_str(),
            p[2].positive_samples,
            p[2].negative_samples
        ),
        ("Carol", 5, 1)
    );
}

#[test]
fn names_are_validated() {
    let f = fixture();
    let mut g = open(&f.db);
    let id = g.add_person("  Alice ").unwrap();
    assert_eq!(g.person(id).unwrap().unwrap().name, "Alice");
    assert_eq!(err_kind(g.add_person("alice")).0, Kind::Conflict);
    assert_eq!(err_kind(g.add_person("   ")).0, Kind::InvalidInput);
    assert_eq!(
        err_kind(g.add_person(&"x".repeat(101))).0,
        Kind::InvalidInput
    );
    g.add_person(&"é".repeat(100)).unwrap(); // characters, not bytes
    assert_eq!(err_kind(g.add_person("Bob\nSmith")).0, Kind::InvalidInput);
    assert_eq!(count(&g, "SELECT COUNT(*) FROM person"), 2);
}

#[test]
fn invalid_embeddings_are_rejected() {
    let f = fixture();
    let mut g = open(&f.db);
    let id = g.add_person("Alice").unwrap();
    let short = vec![0.1f32; EMBEDDING_DIM - 1];
    let (kind, msg) = err_kind(g.add_sample(id, sample(SampleKind::Positive, &short)));
    assert_eq!(kind, Kind::InvalidInput);
    assert!(msg.contains("191 values, expected 192"), "{msg}");
    let mut nan = vec![0.1f32; EMBEDDING_DIM];
    nan[7] = f32::NAN;
    assert_eq!(
        err_kind(g.add_sample(id, sample(SampleKind::Positive, &nan))).0,
        Kind::InvalidInput
    );
    let zero = vec![0f32; EMBEDDING_DIM];
    assert_eq!(
        err_kind(g.add_sample(id, sample(SampleKind::Positive, &zero))).0,
        Kind::InvalidInput
    );
    assert_eq!(err_kind(g.search(&short, 1)).0, Kind::InvalidInput);
    assert_eq!(err_kind(g.identify(&nan, 0.5)).0, Kind::InvalidInput);
    // A batch with one bad sample stores nothing.
    let good = vec![0.1f32; EMBEDDING_DIM];
    let r = g.add_samples(
        id,
        &[
            sample(SampleKind::Positive, &good),
            sample(SampleKind::Positive, &short),
        ],
    );
    assert_eq!(err_kind(r).0, Kind::InvalidInput);
    let bad_quality = NewSample {
        quality_json: "not json",
        ..sample(SampleKind::Positive, &good)
    };
    assert_eq!(
        err_kind(g.add_sample(id, bad_quality)).0,
        Kind::InvalidInput
    );
    let huge = vec![0u8; faced::gallery::MAX_CROP_BYTES + 1];
    let big_crop = NewSample {
        crop_jpeg: &huge,
        ..sample(SampleKind::Positive, &good)
    };
    assert_eq!(
        err_kind(g.add_sample(id, big_crop)).0,
        Kind::ResourceExhausted
    );
    assert_eq!(
        err_kind(g.add_sample(PersonId(42), sample(SampleKind::Positive, &good))).0,
        Kind::NotFound
    );
    assert_eq!(count(&g, "SELECT COUNT(*) FROM face_sample"), 0);
    assert!(g.index().is_empty());
}

#[test]
fn negative_sample_vetoes_close_faces_only() {
    let f = fixture();
    let mut rng = Rng(6);
    let mut g = open(&f.db);
    let alice = g.add_person("Alice").unwrap();
    let bob = g.add_person("Bob").unwrap();
    let a = rng.unit();
    let carl = rng.near(&a, 0.6); // an unenrolled look-alike, wrongly matched to Alice
    let b = rng.near(&carl, 0.9); // Bob: further from Carl than Alice is
    g.add_sample(alice, sample(SampleKind::Positive, &a))
        .unwrap();
    g.add_sample(bob, sample(SampleKind::Positive, &b)).unwrap();
    let q = rng.near(&carl, 0.1); // Carl walks by
    assert!(
        dot(&q, &a) > dot(&q, &b),
        "test setup: Alice is the best match before the veto"
    );
    assert_eq!(g.identify(&q, 0.0).unwrap().unwrap().person, alice);

    // "This is not Alice".
    g.add_sample(alice, sample(SampleKind::Negative, &carl))
        .unwrap();
    let m = g.search(&q, 5).unwrap();
    assert_eq!(
        m.iter().map(|m| m.person).collect::<Vec<_>>(),
        [bob],
        "Alice is vetoed, Bob remains"
    );
    assert!(
        g.identify(&q, dot(&q, &b) + 0.01).unwrap().is_none(),
        "Bob is below this threshold"
    );
    // Alice herself still matches.
    let qa = rng.near(&a, 0.1);
    assert_eq!(g.identify(&qa, 0.5).unwrap().unwrap().person, alice);
    // The veto survives a reopen, and removing the negative lifts it.
    drop(g);
    let mut g = open(&f.db);
    assert_eq!(g.search(&q, 1).unwrap()[0].person, bob);
    let neg = g
        .samples(alice)
        .unwrap()
        .into_iter()
        .find(|s| s.kind == SampleKind::Negative)
        .unwrap();
    g.remove_sample(neg.id).unwrap();
    assert_eq!(g.search(&q, 1).unwrap()[0].person, alice);
}

#[test]
fn negative_margin_rejects_earlier() {
    let mut rng = Rng(7);
    let a = rng.unit();
    let n = rng.near(&a, 0.4);
    let q = rng.near(&a, 0.3);
    let (sa, sn) = (dot(&q, &a), dot(&q, &n));
    assert!(sa > sn, "setup: the query is closer to the positive");
    for (margin, matched) in [(0.0, true), (sa - sn + 0.01, false)] {
        let mut idx = Index::new(IndexOptions {
            negative_margin: margin,
        });
        idx.set_person(PersonId(1), "A");
        assert!(idx.insert(SampleId(1), PersonId(1), SampleKind::Positive, &a));
        assert!(idx.insert(SampleId(2), PersonId(1), SampleKind::Negative, &n));
        assert_eq!(!idx.search(&q, 1).is_empty(), matched, "margin {margin}");
    }
}

/// A person for the exactness tests: id, positive and negative embeddings.
type RefPerson = (PersonId, Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Naive reference: per person best positive, veto by negatives, sorted.
fn brute_force(people: &[RefPerson], q: &[f32], k: usize) -> Vec<(PersonId, f32)> {
    let mut v: Vec<(PersonId, f32)> = people
        .iter()
        .filter_map(|(id, pos, neg)| {
            let best = pos
                .iter()
                .map(|p| dot(p, q))
                .fold(f32::NEG_INFINITY, f32::max);
            (best.is_finite() && !neg.iter().any(|n| dot(n, q) >= best)).then_some((*id, best))
        })
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

fn check_exact(people: &[RefPerson], queries: &[Vec<f32>]) {
    let mut idx = Index::new(IndexOptions::default());
    let mut sid = 0;
    for (id, pos, neg) in people {
        idx.set_person(*id, &format!("p{}", id.0));
        for (kind, vs) in [(SampleKind::Positive, pos), (SampleKind::Negative, neg)] {
            for v in vs {
                sid += 1;
                assert!(idx.insert(SampleId(sid), *id, kind, v));
            }
        }
    }
    for (i, q) in queries.iter().enumerate() {
        for k in [1, 5] {
            let fast = idx.search(q, k);
            let slow = idx.search_f32(q, k);
            assert_eq!(
                fast, slow,
                "query {i} k {k}: int8 path differs from the f32 scan"
            );
            // The naive reference sums in another order, so its values differ in the last bits:
            // ranks must agree except between people within 1e-5 of each other.
            let all = brute_force(people, q, people.len());
            let reference = &all[..k.min(all.len())];
            assert_eq!(fast.len(), reference.len(), "query {i} k {k}");
            for (m, (id, s)) in fast.iter().zip(reference) {
                assert!((m.similarity - s).abs() < 1e-5, "query {i} k {k}");
                if m.person != *id {
                    let theirs = all.iter().find(|(p, _)| *p == m.person).map(|x| x.1);
                    assert!(
                        theirs.is_some_and(|t| (t - s).abs() < 1e-5),
                        "query {i} k {k}: {fast:?} vs {reference:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn int8_search_is_exact_on_random_data() {
    let mut rng = Rng(8);
    let people: Vec<_> = (0..2000)
        .map(|i| {
            let pos = (0..3).map(|_| rng.unit()).collect();
            let neg = if i % 7 == 0 { vec![rng.unit()] } else { vec![] };
            (PersonId(i), pos, neg)
        })
        .collect();
    let queries: Vec<_> = (0..100).map(|_| rng.unit()).collect();
    check_exact(&people, &queries);
}

#[test]
fn int8_search_is_exact_on_clustered_data() {
    // Tight clusters: many samples within quantisation error of each other, near-duplicate people
    // (twins), and negatives right next to positives, so the int8 bounds overlap a lot.
    let mut rng = Rng(9);
    let centres: Vec<Vec<f32>> = (0..40).map(|_| rng.unit()).collect();
    let mut people = Vec::new();
    for (c, centre) in centres.iter().enumerate() {
        for t in 0..10 {
            let id = PersonId((c * 10 + t) as i64);
            let me = rng.near(centre, 0.05);
            let pos = (0..5).map(|_| rng.near(&me, 0.02)).collect();
            let neg = if t % 3 == 0 {
                vec![rng.near(&me, 0.03)]
            } else {
                vec![]
            };
            people.push((id, pos, neg));
        }
    }
    let queries: Vec<_> = (0..200)
        .map(|i| rng.near(&centres[i % centres.len()], 0.05))
        .collect();
    check_exact(&people, &queries);
}

#[test]
fn index_stays_consistent_under_churn() {
    let mut rng = Rng(10);
    let mut idx = Index::new(IndexOptions::default());
    let mut live: Vec<(SampleId, PersonId, Vec<f32>)> = Vec::new();
    for p in 0..20 {
        idx.set_person(PersonId(p), "x");
    }
    for s in 0..600 {
        let p = PersonId((rng.next_u64() % 20) as i64);
        let v = rng.unit();
        idx.insert(SampleId(s), p, SampleKind::Positive, &v);
        live.push((SampleId(s), p, v));
        if s % 3 == 0 {
            let i = (rng.next_u64() as usize) % live.len();
            let (id, _, _) = live.swap_remove(i);
            assert!(idx.remove_sample(id));
        }
        if s % 150 == 149 {
            let p = PersonId((rng.next_u64() % 20) as i64);
            idx.remove_person(p);
            live.retain(|(_, q, _)| *q != p);
            idx.set_person(p, "x");
        }
    }
    assert_eq!(idx.len(), live.len());
    // Every live sample is found as its own best match, with its own id.
    for (id, p, v) in &live {
        let m = idx.search(v, 1);
        assert_eq!((m[0].person, m[0].sample), (*p, *id));
    }
}

#[test]
fn embeddings_and_crops_are_encrypted_on_disk() {
    let f = fixture();
    let mut rng = Rng(11);
    let e = rng.unit();
    let needle: Vec<u8> = e.iter().take(4).flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(needle.len(), 16);
    let crop_needle = b"this-is-a-secret-face-crop";
    let contains = |path: &Path, n: &[u8]| -> bool {
        let data = std::fs::read(path).unwrap_or_default();
        data.windows(n.len()).any(|w| w == n)
    };
    let wal = PathBuf::from(format!("{}-wal", f.db.display()));
    {
        let mut g = open(&f.db);
        let id = g.add_person("Alice").unwrap();
        g.add_sample(id, sample(SampleKind::Positive, &e)).unwrap();
        assert!(
            std::fs::metadata(&wal)
                .map(|m| m.len() > 0)
                .unwrap_or(false),
            "writes go to the WAL"
        );
        for p in [&f.db, &wal] {
            assert!(
                !contains(p, &needle),
                "plaintext embedding in {}",
                p.display()
            );
            assert!(
                !contains(p, crop_needle),
                "plaintext crop in {}",
                p.display()
            );
        }
        // Sanity check of the search itself: the name is stored in clear and is found.
        assert!(contains(&f.db, b"Alice") || contains(&wal, b"Alice"));
        // The raw column is nonce + ciphertext + tag.
        assert_eq!(
            count(&g, "SELECT length(embedding) FROM face_sample"),
            (12 + 4 * EMBEDDING_DIM + 16) as i64
        );
    }
    // After close (checkpoint) the main file has the data, still encrypted.
    assert!(contains(&f.db, b"Alice"));
    assert!(!contains(&f.db, &needle));
    assert!(!contains(&f.db, crop_needle));
}

#[test]
fn key_file_is_created_private_and_checked() {
    let f = fixture();
    let key = key_of(&f.db);
    {
        let mut g = open(&f.db);
        assert_eq!(g.key_path(), key);
        let id = g.add_person("Alice").unwrap();
        g.add_sample(id, sample(SampleKind::Positive, &Rng(12).unit()))
            .unwrap();
    }
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);

    // Group/world readable: refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (kind, msg) = err_kind(Gallery::open(&f.db, &GalleryOptions::default()));
    assert_eq!(kind, Kind::FailedPrecondition);
    assert!(
        msg.contains("chmod 600") && msg.contains("gallery.db.key"),
        "{msg}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Wrong length: refused, file untouched.
    let good = std::fs::read(&key).unwrap();
    std::fs::write(&key, &good[..20]).unwrap();
    let (kind, msg) = err_kind(Gallery::open(&f.db, &GalleryOptions::default()));
    assert_eq!(kind, Kind::FailedPrecondition);
    assert!(msg.contains("has 20 bytes, expected 32"), "{msg}");

    // Missing key while samples exist: refused, and no new key is made.
    std::fs::remove_file(&key).unwrap();
    let (kind, msg) = err_kind(Gallery::open(&f.db, &GalleryOptions::default()));
    assert_eq!(kind, Kind::FailedPrecondition);
    assert!(
        msg.contains("holds 1 encrypted face samples") && msg.contains("missing"),
        "{msg}"
    );
    assert!(!key.exists());

    // The real key, at a configured path, works.
    let elsewhere = f.db.with_file_name("elsewhere.key");
    let mut fh = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(fh.write(true).create_new(true), 0o600);
    std::io::Write::write_all(&mut fh.open(&elsewhere).unwrap(), &good).unwrap();
    let opts = GalleryOptions {
        key_path: Some(elsewhere),
        ..Default::default()
    };
    assert_eq!(Gallery::open(&f.db, &opts).unwrap().index().len(), 1);
}

fn write_key(path: &Path, bytes: &[u8; 32]) {
    let mut o = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(o.write(true).create_new(true), 0o600);
    std::io::Write::write_all(&mut o.open(path).unwrap(), bytes).unwrap();
}

#[test]
fn wrong_key_fails_clearly() {
    let f = fixture();
    {
        let mut g = open(&f.db);
        let id = g.add_person("Alice").unwrap();
        g.add_sample(id, sample(SampleKind::Positive, &Rng(13).unit()))
            .unwrap();
    }
    let wrong = f.db.with_file_name("wrong.key");
    write_key(&wrong, &[7u8; 32]);
    let opts = GalleryOptions {
        key_path: Some(wrong),
        ..Default::default()
    };
    let (kind, msg) = err_kind(Gallery::open(&f.db, &opts));
    assert_eq!(kind, Kind::FailedPrecondition);
    assert!(msg.contains("does not belong to database"), "{msg}");

    // Without the key check row, decrypting the sample itself fails, just as clearly.
    {
        let c = rusqlite::Connection::open(&f.db).unwrap();
        c.execute("DELETE FROM key_check", []).unwrap();
    }
    let (kind, msg) = err_kind(Gallery::open(&f.db, &opts));
    assert_eq!(kind, Kind::FailedPrecondition);
    assert!(
        msg.contains("cannot decrypt face_sample 1 embedding: wrong key file"),
        "{msg}"
    );
}

#[test]
fn ciphertext_cannot_be_moved_between_rows_or_columns() {
    let f = fixture();
    let mut rng = Rng(14);
    let (a, b);
    {
        let mut g = open(&f.db);
        let id = g.add_person("Alice").unwrap();
        a = g
            .add_sample(id, sample(SampleKind::Positive, &rng.unit()))
            .unwrap();
        b = g
            .add_sample(id, sample(SampleKind::Positive, &rng.unit()))
            .unwrap();
        // Crop of b copied into a: decrypts only with b's uid.
        g.connection()
            .execute("UPDATE face_sample SET crop = (SELECT crop FROM face_sample WHERE id = ?2) WHERE id = ?1", [a.0, b.0])
            .unwrap();
        let (kind, msg) = err_kind(g.sample_crop(a));
        assert_eq!(kind, Kind::FailedPrecondition);
        assert!(msg.contains("cannot decrypt face_sample"), "{msg}");
        assert_eq!(g.sample_crop(b).unwrap(), CROP);
    }
    let c = rusqlite::Connection::open(&f.db).unwrap();
    c.execute("UPDATE face_sample SET embedding = (SELECT embedding FROM face_sample WHERE id = ?2) WHERE id = ?1", [a.0, b.0])
        .unwrap();
    drop(c);
    let (kind, msg) = err_kind(Gallery::open(&f.db, &GalleryOptions::default()));
    assert_eq!(kind, Kind::FailedPrecondition);
    assert!(
        msg.contains(&format!("face_sample {} embedding", a.0)),
        "{msg}"
    );
}

#[test]
fn fresh_database_without_samples_gets_a_new_key_if_lost() {
    let f = fixture();
    open(&f.db).add_person("Alice").unwrap();
    let first = std::fs::read(key_of(&f.db)).unwrap();
    std::fs::remove_file(key_of(&f.db)).unwrap();
    let mut g = open(&f.db); // nothing to decrypt: a new key is fine
    assert_ne!(std::fs::read(key_of(&f.db)).unwrap(), first);
    let id = g.person_by_name("Alice").unwrap().unwrap().id;
    g.add_sample(id, sample(SampleKind::Positive, &Rng(15).unit()))
        .unwrap();
    drop(g);
    assert_eq!(open(&f.db).index().len(), 1);
}

/// sqlite_master with comments and insignificant whitespace removed from the SQL.
fn normalized_schema(conn: &rusqlite::Connection) -> Vec<(String, String, String)> {
    fn norm(sql: &str) -> String {
        let no_comments: String = sql
            .lines()
            .map(|l| l.split_once("--").map_or(l, |(a, _)| a))
            .collect::<Vec<_>>()
            .join(" ");
        let mut s = no_comments.split_whitespace().collect::<Vec<_>>().join(" ");
        for p in ["(", ")", ","] {
            s = s.replace(&format!(" {p}"), p).replace(&format!("{p} "), p);
        }
        s
    }
    schema::objects(conn)
        .unwrap()
        .into_iter()
        .map(|(t, n, sql)| (t, n, norm(&sql.unwrap_or_default())))
        .collect()
}

#[test]
fn upgraded_database_equals_fresh() {
    let f = fixture();
    drop(open(&f.db));
    let fresh = rusqlite::Connection::open(&f.db).unwrap();
    let fresh_schema = normalized_schema(&fresh);
    assert!(fresh_schema.iter().any(|(_, n, _)| n == "face_sample"));

    // Step by step: one binary version at a time, closing the file in between.
    let stepped = f.db.with_file_name("stepped.db");
    for v in 1..=schema::LATEST {
        let mut c = rusqlite::Connection::open(&stepped).unwrap();
        schema::upgrade_to(&mut c, v, "stepped", &faced::base::RealClocks).unwrap();
        assert_eq!(schema::version(&c).unwrap(), v);
    }
    let c = rusqlite::Connection::open(&stepped).unwrap();
    assert_eq!(
        normalized_schema(&c),
        fresh_schema,
        "migrations/ and schema.sql disagree"
    );
    drop(c);
    // And the gallery opens the upgraded file as it is.
    let mut g = open(&stepped);
    g.add_person("Alice").unwrap();
    let hist: i64 = count(&g, "SELECT COUNT(*) FROM schema_version");
    assert_eq!(hist, schema::LATEST);
}

#[test]
fn too_new_schema_is_refused() {
    let f = fixture();
    drop(open(&f.db));
    {
        let c = rusqlite::Connection::open(&f.db).unwrap();
        c.execute(
            "INSERT INTO schema_version (version, applied_at, how) VALUES (?1, 0, 'future')",
            [schema::LATEST + 1],
        )
        .unwrap();
    }
    let (kind, msg) = err_kind(Gallery::open(&f.db, &GalleryOptions::default()));
    assert_eq!(kind, Kind::FailedPrecondition);
    assert!(
        msg.contains(&format!(
            "schema version {}, newer than this faced knows",
            schema::LATEST + 1
        )),
        "{msg}"
    );
}

#[test]
fn foreign_database_is_refused() {
    let f = fixture();
    {
        let c = rusqlite::Connection::open(&f.db).unwrap();
        c.execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
            .unwrap();
    }
    let (kind, msg) = err_kind(Gallery::open(&f.db, &GalleryOptions::default()));
    assert_eq!(kind, Kind::FailedPrecondition);
    assert!(msg.contains("is not a faced database"), "{msg}");
}

#[test]
fn database_uses_wal_and_foreign_keys() {
    let f = fixture();
    let g = open(&f.db);
    let mode: String = g
        .connection()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(count(&g, "PRAGMA foreign_keys"), 1);
}

/// What a `faced` run printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `faced ARGS…` as a subprocess, as an operator runs it.
fn faced(args: &[&std::ffi::OsStr]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faced"))
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `faced people --db DB REST…`.
fn people_cmd(db: &Path, rest: &[&str]) -> Run {
    let mut args = vec!["people".as_ref(), "--db".as_ref(), db.as_os_str()];
    args.extend(rest.iter().map(std::ffi::OsStr::new));
    faced(&args)
}

impl Run {
    /// Asserts exit status 0 and returns standard output.
    fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        self.stdout
    }

    /// Asserts a failure with exit `code` (`faced`'s exit codes: 2 for a missing thing or bad
    /// input, 1 for the rest) and returns the error message.
    fn fails(self, code: i32) -> String {
        assert_eq!(
            self.code,
            Some(code),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(self.stderr.contains("faced: error: "), "{}", self.stderr);
        self.stderr
    }
}

#[test]
fn people_command_lists_renames_and_removes() {
    let f = fixture();
    let missing = people_cmd(&f.db, &["list"]).fails(2);
    assert!(missing.contains("does not exist"), "{missing}");
    assert!(!f.db.exists(), "list must not create a database");

    let mut rng = Rng(16);
    let (ids, _) = enrol_three(&mut open(&f.db), &mut rng);
    let table = people_cmd(&f.db, &["list"]).ok();
    assert!(table.starts_with("    ID  NAME "), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&people_cmd(&f.db, &["list", "--json"]).ok()).unwrap();
    let listed: Vec<_> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_i64().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [(ids[0].0, "Alice"), (ids[1].0, "Bob"), (ids[2].0, "Carol")]
    );
    let renamed = people_cmd(&f.db, &["rename", "alice", "Alicia"]).ok();
    assert_eq!(renamed, "renamed \"Alice\" to \"Alicia\"\n");
    let removed = people_cmd(&f.db, &["remove", "Bob"]).ok();
    assert_eq!(removed, "removed \"Bob\" and 5 face sample(s)\n");
    // Not found: exit 2 and the message of `Kind::NotFound` from the name lookup.
    let e = people_cmd(&f.db, &["remove", "Bob"]).fails(2);
    assert!(e.contains("no person named \"Bob\""), "{e}");
    // Conflict: exit 1 and the message of `Kind::Conflict` from the gallery.
    let e = people_cmd(&f.db, &["rename", "Alicia", "carol"]).fails(1);
    assert!(e.contains("a person named \"carol\" already exists"), "{e}");

    let g = open(&f.db);
    let names: Vec<_> = g
        .people()
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    assert_eq!(
        names,
        [
            (ids[0], "Alicia".to_string()),
            (ids[2], "Carol".to_string())
        ]
    );
    assert_eq!(count(&g, "SELECT COUNT(*) FROM face_sample"), 10);
}

#[test]
fn people_list_prints_counts_and_utc_enrolment_dates() {
    let f = fixture();
    let mut rng = Rng(17);
    let mut g = open(&f.db);
    let (ids, centres) = enrol_three(&mut g, &mut rng);
    let neg = rng.near(&centres[0], 0.5);
    g.add_sample(ids[1], sample(SampleKind::Negative, &neg))
        .unwrap();
    let people = g.people().unwrap();
    drop(g);

    let json: serde_json::Value =
        serde_json::from_str(&people_cmd(&f.db, &["list", "--json"]).ok()).unwrap();
    assert_eq!(json, serde_json::to_value(&people).unwrap());

    let table = people_cmd(&f.db, &["list"]).ok();
    let mut lines = table.lines();
    assert_eq!(
        lines.next(),
        Some("    ID  NAME    SAMPLES  NEGATIVE  ENROLLED (UTC)")
    );
    for (line, p) in lines.zip(&people) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 6, "{line}");
        assert_eq!(cols[0], p.id.0.to_string(), "{line}");
        assert_eq!(cols[1], p.name, "{line}");
        assert_eq!(cols[2], p.positive_samples.to_string(), "{line}");
        assert_eq!(cols[3], p.negative_samples.to_string(), "{line}");
        // The date and time of `created_at_ms`, which `date -u` formats the same way.
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M"])
            .arg(format!("--date=@{}", p.created_at_ms.div_euclid(1000)))
            .output()
            .unwrap();
        assert_eq!(
            format!("{} {}", cols[4], cols[5]),
            String::from_utf8(date.stdout).unwrap().trim_end(),
            "{line}"
        );
    }
    assert_eq!(table.lines().count(), 1 + people.len(), "{table}");
    assert_eq!(people[1].negative_samples, 1);
}

/// A person holds at most `MAX_PERSON_SAMPLES` samples added on a unit (their replicated record
/// must stay acceptable to every other unit): `faced enroll` beyond it fails with a message that
/// says what to do, and stores nothing.
#[test]
fn enroll_beyond_the_sample_limit_is_refused_and_stores_nothing() {
    let f = fixture();
    let mut rng = Rng(21);
    {
        let mut g = open(&f.db);
        let id = g.add_person("Alice").unwrap();
        let embs: Vec<Vec<f32>> = (0..faced::gallery::MAX_PERSON_SAMPLES)
            .map(|_| rng.unit())
            .collect();
        let samples: Vec<NewSample> = embs
            .iter()
            .map(|e| sample(SampleKind::Positive, e))
            .collect();
        g.add_samples(id, &samples).unwrap();
    }
    let (_, photos) = crate::util::daemon::photos_by_person()
        .into_iter()
        .next()
        .unwrap();
    let photo = crate::util::daemon::faces_dir().join(&photos[0]);
    let run = faced(&[
        "enroll".as_ref(),
        "--db".as_ref(),
        f.db.as_os_str(),
        "--name".as_ref(),
        "Alice".as_ref(),
        photo.as_os_str(),
    ]);
    let err = run.fails(2);
    assert!(
        err.contains("limit of 100") && err.contains("remove some first"),
        "{err}"
    );
    let g = open(&f.db);
    assert_eq!(
        count(&g, "SELECT COUNT(*) FROM face_sample"),
        faced::gallery::MAX_PERSON_SAMPLES as i64
    );
}
