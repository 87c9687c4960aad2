//! Verification-pair scoring over `tests/fixtures/faces/pairs.csv`, shared by the float vision
//! tests and the quantized-model tests so both measure accuracy the same way.
//!
//! Used as `crate::util::pairs`.

use std::path::Path;

use faced::vision::DEFAULT_THRESHOLD;
use faced::vision::embed::cosine;

/// Pair ROC AUC and accuracy at [`DEFAULT_THRESHOLD`] over pairs.csv (140 same-person and 380
/// different-person pairs); `emb` gives a photo's embedding by file name.
pub fn auc_and_accuracy<'a>(emb: impl Fn(&str) -> &'a [f32]) -> (f64, f64) {
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces/pairs.csv");
    let csv = std::fs::read_to_string(csv).unwrap();
    let mut same = Vec::new();
    let mut diff = Vec::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let s = cosine(emb(f[0]), emb(f[1]));
        if f[2] == "1" {
            same.push(s)
        } else {
            diff.push(s)
        }
    }
    assert_eq!((same.len(), diff.len()), (140, 380));
    // ROC AUC = P(similarity of a same pair > that of a different pair).
    let mut wins = 0.0;
    for s in &same {
        for d in &diff {
            wins += if s > d {
                1.0
            } else if s == d {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = wins / (same.len() * diff.len()) as f64;
    let correct = same.iter().filter(|s| **s >= DEFAULT_THRESHOLD).count()
        + diff.iter().filter(|d| **d < DEFAULT_THRESHOLD).count();
    (auc, correct as f64 / (same.len() + diff.len()) as f64)
}
