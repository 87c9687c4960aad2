//! The model files faced ships in `models/`, where to find them, and their SHA-256 check.
//!
//! Every model is verified against the checksum recorded here (and in `models/README.md`) before
//! it is handed to the runtime: a truncated copy or a swapped file fails loudly at start instead
//! of producing quietly wrong embeddings.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A model file faced knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFile {
    /// File name inside the models directory.
    pub file: &'static str,
    /// Expected SHA-256, lowercase hex.
    pub sha256: &'static str,
}

/// BlazeFace short-range detector (128×128, faces within ~2 m).
pub const BLAZEFACE_SHORT: ModelFile = ModelFile {
    file: "face_detection_short_range.tflite",
    sha256: "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
};

/// BlazeFace full-range detector (192×192, faces up to ~5 m).
pub const BLAZEFACE_FULL: ModelFile = ModelFile {
    file: "face_detection_full_range.tflite",
    sha256: "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
};

/// MobileFaceNet embedder (2×112×112×3 → 2×192).
pub const MOBILEFACENET: ModelFile = ModelFile {
    file: "MobileFaceNet.tflite",
    sha256: "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
};

/// Face anti-spoofing (liveness) model (256×256×3 → two 8-way heads).
pub const ANTI_SPOOFING: ModelFile = ModelFile {
    file: "FaceAntiSpoofing.tflite",
    sha256: "a980757d55e2835aff69f2fa9b04914e21d426dd8a43588c2982d50e8038ec02",
};

/// Where model files are looked for, in order: the explicit directory (config key
/// `inference.models_dir`), `$FACED_MODELS_DIR`, `models/` next to the binary,
/// `/usr/share/faced/models` (the Debian package), and `models/` in the checkout the binary was
/// built from.
pub fn candidate_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = explicit {
        v.push(p.to_path_buf());
        return v;
    }
    if let Some(p) = std::env::var_os("FACED_MODELS_DIR").filter(|s| !s.is_empty()) {
        v.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        v.push(dir.join("models"));
    }
    v.push(PathBuf::from("/usr/share/faced/models"));
    v.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    v
}

/// Returns the first candidate directory that holds `model`.
pub fn locate(explicit: Option<&Path>, model: &ModelFile) -> Result<PathBuf> {
    let dirs = candidate_dirs(explicit);
    dirs.iter().map(|d| d.join(model.file)).find(|p| p.is_file()).ok_or_else(|| {
        let tried: Vec<String> = dirs.iter().map(|p| p.display().to_string()).collect();
        Error::precondition(format!(
            "model file {} not found in {}; set inference.models_dir or FACED_MODELS_DIR to the \
             folder holding faced's models/",
            model.file,
            tried.join(", ")
        ))
    })
}

/// Reads a model and checks its SHA-256; the bytes returned are exactly the verified ones.
pub fn load_verified(explicit_dir: Option<&Path>, model: &ModelFile) -> Result<(PathBuf, Vec<u8>)> {
    let path = locate(explicit_dir, model)?;
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::precondition(format!("cannot read model file {}", path.display())).with_source(e)
    })?;
    let got = hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    if got != model.sha256 {
        return Err(Error::precondition(format!(
            "model file {} has SHA-256 {got}, expected {}; restore it from the faced release \
             (git checkout models/ or reinstall the package)",
            path.display(),
            model.sha256
        )));
    }
    Ok((path, bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
