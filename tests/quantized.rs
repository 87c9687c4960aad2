//! The quantized models (models/README.md) on the real fixture photographs: the int8 and dynamic-range
//! int8 models must load as drop-in replacements (float32 tensors, same shapes, SHA-256 checked)
//! and keep the float pipeline's accuracy: every labelled photo detected, pair ROC AUC within
//! 0.003 of the float models' AUC measured in the same run, leave-one-out identification 61/61.
//!
//! Each precision's analysis of the 61 labelled photos is done once per test binary (see
//! `labelled()`) with the default still-image detector (short-range + full-range verifier), the
//! same settings as tests/vision.rs.

use crate::util::pairs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use faced::gallery::{Index, IndexOptions, PersonId, SampleId, SampleKind};
use faced::inference::litert::LiteRt;
use faced::inference::{Backend, DType};
use faced::models::{self, ModelFile, Precision};
use faced::vision::detect::DetectorConfig;
use faced::vision::image::{ImageLimits, load};
use faced::vision::{Analyzer, DEFAULT_THRESHOLD, Face, InferenceConfig};

/// Largest pair ROC AUC loss allowed against the float models (models/README.md, "Quantized
/// models").
const MAX_AUC_LOSS: f64 = 0.003;

const QUANTIZED: [Precision; 2] = [Precision::Int8, Precision::DynamicInt8];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces")
}

fn inference(precision: Precision) -> InferenceConfig {
    InferenceConfig {
        precision,
        ..InferenceConfig::default()
    }
}

/// The three model files of one precision.
fn model_files(p: Precision) -> [ModelFile; 3] {
    [p.short_range(), p.full_range(), p.embedder()]
}

/// The largest face of a photo (a portrait's subject, not a face in the background).
fn main_face(faces: &[Face]) -> Option<&Face> {
    faces.iter().max_by(|a, b| {
        (a.detection.width() * a.detection.height())
            .total_cmp(&(b.detection.width() * b.detection.height()))
    })
}

/// One precision's view of the labelled photos.
struct Labelled {
    /// file → (person, embedding of the main face, or None when no face was found)
    photos: HashMap<String, (String, Option<Vec<f32>>)>,
}

fn analyze_labelled(precision: Precision) -> Labelled {
    let mut analyzer = Analyzer::open(&inference(precision), DetectorConfig::default())
        .unwrap_or_else(|e| {
            panic!("{precision:?} models and LiteRT load (run scripts/setup): {e}")
        });
    let csv = std::fs::read_to_string(fixtures().join("labels.csv")).unwrap();
    let mut photos = HashMap::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let img = load(&fixtures().join(f[0]), &ImageLimits::default()).unwrap();
        // The models keep the cores busy: not beside a timed test of another module.
        let faces = {
            let _turn = crate::util::beside_others();
            analyzer.analyze(&img).unwrap()
        };
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
}

/// The labelled photos analysed with `precision`'s models, once per test binary.
fn labelled(precision: Precision) -> &'static Labelled {
    static FLOAT: OnceLock<Labelled> = OnceLock::new();
    static INT8: OnceLock<Labelled> = OnceLock::new();
    static DYNAMIC: OnceLock<Labelled> = OnceLock::new();
    static STOCK: OnceLock<Labelled> = OnceLock::new();
    let cell = match precision.resolve() {
        Precision::Float | Precision::Auto => &FLOAT,
        Precision::FloatStock => &STOCK,
        Precision::Int8 => &INT8,
        Precision::DynamicInt8 => &DYNAMIC,
    };
    cell.get_or_init(|| analyze_labelled(precision.resolve()))
}

fn emb(l: &'static Labelled, file: &str) -> &'static [f32] {
    l.photos[file]
        .1
        .as_deref()
        .unwrap_or_else(|| panic!("no face in {file}"))
}

/// Pair ROC AUC and accuracy at [`DEFAULT_THRESHOLD`] over pairs.csv.
fn pair_scores(l: &'static Labelled) -> (f64, f64) {
    pairs::auc_and_accuracy(|f| emb(l, f))
}

#[test]
fn quantized_models_keep_float_tensors_and_the_float_shapes() {
    let rt = LiteRt::open(None).expect("LiteRT loads (run scripts/setup)");
    for p in QUANTIZED {
        for (float, quant) in model_files(Precision::Float)
            .into_iter()
            .zip(model_files(p))
        {
            let (_, fb) = models::load_verified(None, &float).unwrap();
            let (_, qb) = models::load_verified(None, &quant)
                .unwrap_or_else(|e| panic!("{}: {e}", quant.file));
            assert!(
                qb.len() < fb.len(),
                "{} ({} bytes) is not smaller than {}",
                quant.file,
                qb.len(),
                float.file
            );
            let f = rt.compile(float.file, &fb, 2).unwrap();
            let q = rt
                .compile(quant.file, &qb, 2)
                .unwrap_or_else(|e| panic!("{} does not load: {e}", quant.file));
            for t in q.inputs().iter().chain(q.outputs()) {
                assert_eq!(t.dtype, DType::F32, "{}: {t:?}", quant.file);
            }
            assert_eq!(
                q.inputs(),
                f.inputs(),
                "{} inputs differ from {}",
                quant.file,
                float.file
            );
            assert_eq!(
                q.outputs(),
                f.outputs(),
                "{} outputs differ from {}",
                quant.file,
                float.file
            );
        }
    }
}

#[test]
fn quantized_model_with_a_wrong_sha256_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = models::locate(None, &models::MOBILEFACENET_INT8).unwrap();
    let src = src.parent().unwrap();
    for m in model_files(Precision::Int8) {
        std::fs::copy(src.join(m.file), dir.path().join(m.file)).unwrap();
    }
    let inf = InferenceConfig {
        models_dir: Some(dir.path().to_path_buf()),
        ..inference(Precision::Int8)
    };
    // The intact copies load from the temporary directory...
    Analyzer::open(&inf, DetectorConfig::default())
        .unwrap_or_else(|e| panic!("intact copies refused: {e}"));
    // ...one flipped byte in the middle of the embedder does not.
    let target = dir.path().join(models::MOBILEFACENET_INT8.file);
    let mut bytes = std::fs::read(&target).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&target, &bytes).unwrap();
    let err = match Analyzer::open(&inf, DetectorConfig::default()) {
        Ok(_) => panic!("a MobileFaceNet_int8.tflite with a flipped byte was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("MobileFaceNet_int8.tflite"),
        "error does not name the file: {err}"
    );
    assert!(
        err.contains("SHA-256"),
        "error does not mention SHA-256: {err}"
    );
    assert!(
        err.contains(models::MOBILEFACENET_INT8.sha256),
        "error does not give the expected hash: {err}"
    );
}

#[test]
fn every_labelled_photo_is_detected_with_quantized_models() {
    for p in QUANTIZED {
        let l = labelled(p);
        let mut missing: Vec<&String> = l
            .photos
            .iter()
            .filter(|(_, (_, e))| e.is_none())
            .map(|(f, _)| f)
            .collect();
        missing.sort();
        assert!(missing.is_empty(), "{p:?}: no face found in {missing:?}");
        for (file, (_, e)) in &l.photos {
            let e = e.as_ref().unwrap();
            assert_eq!(e.len(), 192);
            let norm: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!(
                (norm - 1.0).abs() < 1e-4,
                "{p:?} {file}: embedding not L2-normalised: {norm}"
            );
        }
        eprintln!("{p:?}: {}/61 labelled photos detected", l.photos.len());
    }
}

/// The default float embedder is a graph rewrite of the published MobileFaceNet (PReLU as one
/// op): it must compute the same embeddings, photo for photo.
#[test]
fn float_prelu_embedder_matches_the_published_file() {
    assert_eq!(Precision::Float.embedder(), models::MOBILEFACENET_PRELU);
    assert_eq!(Precision::FloatStock.embedder(), models::MOBILEFACENET);
    let (ours, stock) = (labelled(Precision::Float), labelled(Precision::FloatStock));
    assert_eq!(ours.photos.len(), stock.photos.len());
    let mut worst = 0f32;
    for (file, (_, e)) in &ours.photos {
        let (Some(a), Some(b)) = (e, &stock.photos[file].1) else {
            assert_eq!(e.is_some(), stock.photos[file].1.is_some(), "{file}");
            continue;
        };
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        worst = worst.max(d);
    }
    eprintln!("largest embedding difference, PRELU rewrite vs published file: {worst:e}");
    assert!(worst < 1e-5, "embeddings differ by up to {worst}");
}

#[test]
fn quantized_pair_auc_is_within_0_003_of_float() {
    let (float_auc, float_acc) = pair_scores(labelled(Precision::Float));
    eprintln!("Float: pair AUC {float_auc:.5}, accuracy {float_acc:.4} at {DEFAULT_THRESHOLD}");
    for p in QUANTIZED {
        let (auc, acc) = pair_scores(labelled(p));
        eprintln!(
            "{p:?}: pair AUC {auc:.5} (loss {:+.5} vs float), accuracy {acc:.4} at {DEFAULT_THRESHOLD}",
            float_auc - auc
        );
        assert!(
            auc >= float_auc - MAX_AUC_LOSS,
            "{p:?}: pair ROC AUC {auc:.5} < float {float_auc:.5} − {MAX_AUC_LOSS}"
        );
        assert!(
            acc >= 0.98,
            "{p:?}: accuracy {acc:.4} at threshold {DEFAULT_THRESHOLD}"
        );
    }
}

#[test]
fn quantized_leave_one_out_identification_is_61_of_61() {
    for p in QUANTIZED {
        let photos = &labelled(p).photos;
        let mut people: Vec<&str> = photos.values().map(|(person, _)| person.as_str()).collect();
        people.sort();
        people.dedup();
        let pid = |name: &str| PersonId(people.iter().position(|p| *p == name).unwrap() as i64 + 1);
        let mut right = 0;
        let mut wrong = Vec::new();
        for (query, (truth, q)) in photos {
            // The gallery's own index, built from every other photo.
            let mut index = Index::new(IndexOptions::default());
            for person in &people {
                index.set_person(pid(person), person);
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
            let best = index.search(q.as_ref().unwrap(), 1);
            if best.first().map(|m| m.name.as_str()) == Some(truth.as_str()) {
                right += 1;
            } else {
                wrong.push((
                    query.clone(),
                    truth.clone(),
                    best.first().map(|m| (m.name.clone(), m.similarity)),
                ));
            }
        }
        eprintln!(
            "{p:?}: leave-one-out identification {right}/{}",
            photos.len()
        );
        assert!(wrong.is_empty(), "{p:?}: misidentified {wrong:?}");
    }
}
