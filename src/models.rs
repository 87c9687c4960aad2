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

/// MobileFaceNet embedder (2×112×112×3 → 2×192), the file exactly as published.
pub const MOBILEFACENET: ModelFile = ModelFile {
    file: "MobileFaceNet.tflite",
    sha256: "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
};

/// The same MobileFaceNet with each PReLU as one PRELU op instead of the five element-wise ops
/// the converter spelled it with (`models/quantize/prelu.py`). Same weights, bit-identical
/// embeddings on the fixtures, ~1.4× faster on XNNPACK: the float default.
pub const MOBILEFACENET_PRELU: ModelFile = ModelFile {
    file: "MobileFaceNet_prelu.tflite",
    sha256: "791298cc12236d245bd218c3e1ac2e99a2a8321115e47ae637a07a332a153f65",
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
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
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

/// Full-integer int8 BlazeFace short-range (see models/README.md, "Quantized models").
pub const BLAZEFACE_SHORT_INT8: ModelFile = ModelFile {
    file: "face_detection_short_range_int8.tflite",
    sha256: "f9a9dcd85f3f55f866888eff206891d8cd52f904d73233027e85d6748021619d",
};

/// Full-integer int8 BlazeFace full-range.
pub const BLAZEFACE_FULL_INT8: ModelFile = ModelFile {
    file: "face_detection_full_range_int8.tflite",
    sha256: "252001e59cb901178947662cc732904d465b8520cafdca42fb524f71617eb466",
};

/// Full-integer int8 MobileFaceNet.
pub const MOBILEFACENET_INT8: ModelFile = ModelFile {
    file: "MobileFaceNet_int8.tflite",
    sha256: "bbfdcf86e8b7a327a3040bc3dafc94f36abd10f2d284fe0beaf7028f487a87d0",
};

/// Dynamic-range int8 BlazeFace short-range (int8 weights, float activations).
pub const BLAZEFACE_SHORT_DYNAMIC_INT8: ModelFile = ModelFile {
    file: "face_detection_short_range_dynamic_int8.tflite",
    sha256: "2890210f12d89cb47c341305a87420e530037c7c65fd5f03cd25a1e1df2ea378",
};

/// Dynamic-range int8 BlazeFace full-range.
pub const BLAZEFACE_FULL_DYNAMIC_INT8: ModelFile = ModelFile {
    file: "face_detection_full_range_dynamic_int8.tflite",
    sha256: "526bb4eda42b8fca06f712f272e8f2104c9ce93e1850e89c853c462468b475a5",
};

/// Dynamic-range int8 MobileFaceNet.
pub const MOBILEFACENET_DYNAMIC_INT8: ModelFile = ModelFile {
    file: "MobileFaceNet_dynamic_int8.tflite",
    sha256: "8eaa941a96435950d837446b5c5d304773c15b3ed95f2d291ffe8ccc57152ae6",
};

/// Which variant of the models to run.
///
/// Float is the default: on this project's x86 reference machine (Zen 3, AVX2, no VNNI) the int8
/// models are no faster (MobileFaceNet 1.0×, detectors 0.8×; models/README.md) at equal accuracy.
/// On ARM cores with int8 dot-product instructions they may be; measure with `faced bench`.
/// `FloatStock` runs the embedder file exactly as published, to check the rewrite against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// The float models, MobileFaceNet with native PRELU ops ([`MOBILEFACENET_PRELU`]).
    #[default]
    Float,
    /// The float models exactly as published (MobileFaceNet ~1.4× slower, same embeddings).
    FloatStock,
    /// Full-integer int8 (weights and activations; float inputs and outputs).
    Int8,
    /// Dynamic-range int8 (int8 weights, float activations).
    DynamicInt8,
}

impl Precision {
    /// The embedder model for this precision.
    pub fn embedder(self) -> ModelFile {
        match self {
            Precision::Float => MOBILEFACENET_PRELU,
            Precision::FloatStock => MOBILEFACENET,
            Precision::Int8 => MOBILEFACENET_INT8,
            Precision::DynamicInt8 => MOBILEFACENET_DYNAMIC_INT8,
        }
    }

    /// The short-range detector for this precision.
    pub fn short_range(self) -> ModelFile {
        match self {
            Precision::Float | Precision::FloatStock => BLAZEFACE_SHORT,
            Precision::Int8 => BLAZEFACE_SHORT_INT8,
            Precision::DynamicInt8 => BLAZEFACE_SHORT_DYNAMIC_INT8,
        }
    }

    /// The full-range detector for this precision.
    pub fn full_range(self) -> ModelFile {
        match self {
            Precision::Float | Precision::FloatStock => BLAZEFACE_FULL,
            Precision::Int8 => BLAZEFACE_FULL_INT8,
            Precision::DynamicInt8 => BLAZEFACE_FULL_DYNAMIC_INT8,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "float" => Ok(Precision::Float),
            "float_stock" => Ok(Precision::FloatStock),
            "int8" => Ok(Precision::Int8),
            "dynamic_int8" => Ok(Precision::DynamicInt8),
            _ => Err(Error::invalid(format!(
                "unknown precision {s:?}: use float, float_stock, int8 or dynamic_int8"
            ))),
        }
    }
}
