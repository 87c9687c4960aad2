//! Vision tests with the real models on the real fixture photographs (tests/fixtures/faces, from
//! ../shared/faces; see its README for the source and licence).
//!
//! The 61 labelled photos are analysed once per test binary (see `labelled()`), then each test
//! checks one property the product promises: every photo has a face, verification accuracy,
//! leave-one-out identification, group photos, negatives, bad input, the CLI's JSON contract.

use crate::util::pairs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use faced::gallery::{Index, IndexOptions, PersonId, SampleId, SampleKind};
use faced::vision::detect::DetectorConfig;
use faced::vision::embed::cosine;
use faced::vision::image::{ImageLimits, load};
use faced::vision::{Analyzer, DEFAULT_THRESHOLD, Face, InferenceConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces")
}

fn analyzer() -> &'static Mutex<Analyzer> {
    static A: OnceLock<Mutex<Analyzer>> = OnceLock::new();
    A.get_or_init(|| {
        Mutex::new(
            Analyzer::open(&InferenceConfig::default(), DetectorConfig::default())
                .expect("models and LiteRT load (run scripts/setup)"),
        )
    })
}

fn analyze(file: &str) -> Vec<Face> {
    let img = load(&fixtures().join(file), &ImageLimits::default()).unwrap();
    let _turn = crate::util::beside_others();
    analyzer().lock().unwrap().analyze(&img).unwrap()
}

/// The largest face of a photo (a portrait's subject, not a face in the background).
fn main_face(faces: &[Face]) -> Option<&Face> {
    faces.iter().max_by(|a, b| {
        (a.detection.width() * a.detection.height())
            .total_cmp(&(b.detection.width() * b.detection.height()))
    })
}

struct Labelled {
    /// file → (person, embedding of the main face, or None when no face was found)
    photos: HashMap<String, (String, Option<Vec<f32>>)>,
}

fn labelled() -> &'static Labelled {
    static L: OnceLock<Labelled> = OnceLock::new();
    L.get_or_init(|| {
        let csv = std::fs::read_to_string(fixtures().join("labels.csv")).unwrap();
        let mut photos = HashMap::new();
        for line in csv.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let faces = analyze(f[0]);
            photos.insert(
                f[0].to_string(),
                (
                    f[1].to_string(),
                    main_face(&faces).map(|x| x.embedding.clone()),
                ),
            );
        }
        assert_eq!(photos.len(), 61, "labels.csv lists 61 photos");
        Labelled { photos }
    })
}

fn emb(file: &str) -> &'static [f32] {
    labelled().photos[file]
        .1
        .as_deref()
        .unwrap_or_else(|| panic!("no face in {file}"))
}

#[test]
fn every_labelled_photo_has_a_face() {
    let missing: Vec<&String> = labelled()
        .photos
        .iter()
        .filter(|(_, (_, e))| e.is_none())
        .map(|(f, _)| f)
        .collect();
    assert!(missing.is_empty(), "no face found in {missing:?}");
    for (_, (_, e)) in labelled().photos.iter() {
        let e = e.as_ref().unwrap();
        assert_eq!(e.len(), 192);
        let norm: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "embedding not L2-normalised: {norm}"
        );
    }
}

#[test]
fn verification_pairs_auc_and_accuracy_at_default_threshold() {
    let (auc, acc) = pairs::auc_and_accuracy(emb);
    eprintln!("pairs: AUC {auc:.5}, accuracy {acc:.4} at threshold {DEFAULT_THRESHOLD}");
    assert!(auc >= 0.995, "ROC AUC {auc}");
    assert!(acc >= 0.98, "accuracy {acc} at {DEFAULT_THRESHOLD}");
}

#[test]
fn leave_one_out_identification_is_61_of_61() {
    let photos = &labelled().photos;
    let people: Vec<String> = {
        let mut v: Vec<String> = photos.values().map(|(p, _)| p.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let pid = |name: &str| PersonId(people.iter().position(|p| p == name).unwrap() as i64 + 1);
    let mut wrong = Vec::new();
    for (query, (truth, _)) in photos {
        // The gallery's own index, built from every other photo.
        let mut index = Index::new(IndexOptions::default());
        for p in &people {
            index.set_person(pid(p), p);
        }
        for (i, (file, (person, e))) in photos.iter().enumerate() {
            if file != query {
                index.insert(
                    SampleId(i as i64 + 1),
                    pid(person),
                    SampleKind::Positive,
                    e.as_ref().unwrap(),
                );
            }
        }
        let best = index.search(emb(query), 1);
        if best.first().map(|m| m.name.as_str()) != Some(truth.as_str()) {
            wrong.push((
                query.clone(),
                truth.clone(),
                best.first().map(|m| (m.name.clone(), m.similarity)),
            ));
        }
    }
    assert!(wrong.is_empty(), "misidentified: {wrong:?}");
}

#[test]
fn group_photos_find_every_face() {
    assert_eq!(analyze("couple.jpg").len(), 2);
    let n = analyze("selfie-many-people.jpg").len();
    assert!(
        n >= 6,
        "selfie-many-people.jpg: {n} faces, expected at least 6 of its 7"
    );
    assert_eq!(
        analyze("messi5.jpg").len(),
        1,
        "one small face in a wide scene"
    );
}

#[test]
fn images_without_faces_give_none() {
    for entry in std::fs::read_dir(fixtures().join("negatives")).unwrap() {
        let p = entry.unwrap().path();
        let name = format!("negatives/{}", p.file_name().unwrap().to_string_lossy());
        let faces = analyze(&name);
        assert!(
            faces.is_empty(),
            "{name}: {} false faces, scores {:?}",
            faces.len(),
            faces.iter().map(|f| f.detection.score).collect::<Vec<_>>()
        );
    }
}

#[test]
fn mirrored_photo_is_the_same_person() {
    let faces = analyze("img11_reflection.jpg");
    assert_eq!(faces.len(), 1);
    let s = cosine(&faces[0].embedding, emb("img11.jpg"));
    assert!(s > 0.7, "mirror image similarity {s}");
}

/// A JPEG with an EXIF APP1 segment holding just the orientation tag.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0*\0\0\0\x08\0\x01".to_vec(); // big-endian TIFF, IFD at 8, 1 entry
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]); // tag 0x0112 SHORT ×1
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding + next IFD = 0
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn encode(img: &image::DynamicImage, fmt: image::ImageFormat) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut v), fmt)
        .unwrap();
    v
}

#[test]
fn exif_rotation_alpha_grey_and_16_bit_images_work() {
    let dir = tempfile::tempdir().unwrap();
    let orig = image::open(fixtures().join("img1.jpg")).unwrap();
    let reference = emb("img1.jpg");
    // Stored sideways with orientation 6 ("rotate 90° clockwise to display"), as phones do.
    let sideways = orig.rotate270();
    let rotated = dir.path().join("rotated.jpg");
    std::fs::write(
        &rotated,
        with_exif_orientation(&encode(&sideways, image::ImageFormat::Jpeg), 6),
    )
    .unwrap();
    let png = |name: &str, img: image::DynamicImage| {
        let p = dir.path().join(name);
        std::fs::write(&p, encode(&img, image::ImageFormat::Png)).unwrap();
        p
    };
    let variants: Vec<(PathBuf, f32)> = vec![
        (rotated, 0.8),
        (
            png(
                "alpha.png",
                image::DynamicImage::ImageRgba8(orig.to_rgba8()),
            ),
            0.95,
        ),
        (
            png("grey.png", image::DynamicImage::ImageLuma8(orig.to_luma8())),
            0.6,
        ),
        (
            png("deep.png", image::DynamicImage::ImageRgb16(orig.to_rgb16())),
            0.95,
        ),
    ];
    for (path, min_sim) in variants {
        let img = load(&path, &ImageLimits::default()).unwrap();
        let faces = {
            let _turn = crate::util::beside_others();
            analyzer().lock().unwrap().analyze(&img).unwrap()
        };
        let f = main_face(&faces).unwrap_or_else(|| panic!("no face in {}", path.display()));
        let s = cosine(&f.embedding, reference);
        assert!(
            s >= min_sim,
            "{}: similarity to the original {s} < {min_sim}",
            path.display()
        );
    }
}

/// CRC-32 (IEEE), as PNG chunks use.
fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn faced() -> Command {
    Command::new(env!("CARGO_BIN_EXE_faced"))
}

#[test]
fn analyze_json_follows_the_contract_and_bad_files_do_not_stop_the_rest() {
    // `faced` runs the models: not beside a timed test of another module.
    let _turn = crate::util::beside_others();
    let dir = tempfile::tempdir().unwrap();
    let good = fixtures().join("couple.jpg");
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "this is not an image").unwrap();
    let truncated = dir.path().join("truncated.jpg");
    let bytes = std::fs::read(fixtures().join("img2.jpg")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    // A PNG whose header claims 100000×100000 pixels: refused before any allocation.
    let bomb = dir.path().join("bomb.png");
    let mut png = encode(
        &image::DynamicImage::ImageRgb8(image::RgbImage::new(1, 1)),
        image::ImageFormat::Png,
    );
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]); // IHDR type + data, so the header itself is valid
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&bomb, &png).unwrap();
    let missing = dir.path().join("missing.jpg");

    let out = faced()
        .args(["analyze", "--json"])
        .args([
            &good,
            &text,
            &truncated,
            &bomb,
            &missing,
            &fixtures().join("img5.jpg"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "one line per image");

    let first = &lines[0];
    assert_eq!(first["file"], good.display().to_string());
    assert!(first["width"].as_u64().unwrap() > 0 && first["height"].as_u64().unwrap() > 0);
    let faces = first["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 2);
    for f in faces {
        assert_eq!(f["box"].as_array().unwrap().len(), 4);
        assert_eq!(f["landmarks"].as_array().unwrap().len(), 6);
        assert_eq!(f["embedding"].as_array().unwrap().len(), 192);
        assert!(f["score"].as_f64().unwrap() > 0.5);
        assert!(f["quality"]["sharpness"].as_f64().is_some());
    }

    let expect_error = |i: usize, path: &Path, words: &str| {
        let l = &lines[i];
        assert_eq!(l["file"], path.display().to_string());
        let e = l["error"]
            .as_str()
            .unwrap_or_else(|| panic!("line {i} has no error: {l}"));
        assert!(
            e.contains(words),
            "error for {}: {e:?} should mention {words:?}",
            path.display()
        );
    };
    expect_error(1, &text, "not an image");
    expect_error(2, &truncated, "truncated");
    expect_error(3, &bomb, "100000×100000");
    expect_error(4, &missing, "cannot read");
    assert_eq!(
        lines[5]["faces"].as_array().unwrap().len(),
        1,
        "processing went on after the errors"
    );
}

#[test]
fn enroll_then_identify_through_the_cli() {
    // `faced` runs the models: not beside a timed test of another module.
    let _turn = crate::util::beside_others();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let fx = fixtures();
    let run = |args: &[&str], files: &[&str]| {
        let out = faced()
            .args(args)
            .arg("--db")
            .arg(&db)
            .args(files.iter().map(|f| fx.join(f)))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, _, err) = run(
        &["enroll", "--name", "Alice"],
        &["img1.jpg", "img2.jpg", "img4.jpg"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&["enroll", "--name", "Bob"], &["img26.jpg", "img27.jpg"]);
    assert_eq!(code, Some(0), "{err}");
    // A refused photo: a face far smaller than the minimum size.
    let (code, stdout, _) = run(
        &["enroll", "--name", "Carol", "--json", "--min-size", "400"],
        &["img8.jpg"],
    );
    assert_eq!(code, Some(2));
    let v: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(v["enrolled"], false);
    assert_eq!(v["reject"], "too_small");

    let (code, stdout, err) = run(
        &["identify", "--json"],
        &["img5.jpg", "img42.jpg", "img8.jpg"],
    );
    assert_eq!(code, Some(0), "{err}");
    let people: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["faces"][0]["person"].clone()
        })
        .collect();
    assert_eq!(
        people,
        vec![
            serde_json::json!("Alice"),
            serde_json::json!("Bob"),
            serde_json::Value::Null
        ]
    );
    assert!(
        std::fs::metadata(dir.path().join("g.db.key")).is_ok(),
        "key file created beside the database"
    );
}
