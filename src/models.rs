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
/// `Auto` (the default) lets the CPU decide, see [`choose`]: int8 where it costs fewer
/// instructions per frame (aarch64 with the `asimddp` int8 dot product, as the Raspberry Pi 5's
/// Cortex-A76; the Pi 3's Cortex-A53), float elsewhere (the Pi 4's A72, x86). Per tracked frame
/// on the emulated cores: A76 −37 %, A53 −19 %, A72 +7 % (docs/bench.md, "ARM cost"). The int8
/// embeddings are slightly less accurate (models/README.md). `FloatStock` runs the embedder
/// file exactly as published, to check the rewrite against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Decided by the CPU at start ([`Precision::resolve`]).
    #[default]
    Auto,
    /// The float models, MobileFaceNet with native PRELU ops ([`MOBILEFACENET_PRELU`]).
    Float,
    /// The float models exactly as published (MobileFaceNet ~1.4× slower, same embeddings).
    FloatStock,
    /// Full-integer int8 (weights and activations; float inputs and outputs).
    Int8,
    /// Dynamic-range int8 (int8 weights, float activations).
    DynamicInt8,
}

impl Precision {
    /// The precision that runs: `Auto` becomes this machine's choice ([`host_choice`]); any
    /// other value is kept.
    pub fn resolve(self) -> Precision {
        match self {
            Precision::Auto => host_choice().precision,
            p => p,
        }
    }

    /// The embedder model for this precision.
    pub fn embedder(self) -> ModelFile {
        match self.resolve() {
            Precision::Float | Precision::Auto => MOBILEFACENET_PRELU,
            Precision::FloatStock => MOBILEFACENET,
            Precision::Int8 => MOBILEFACENET_INT8,
            Precision::DynamicInt8 => MOBILEFACENET_DYNAMIC_INT8,
        }
    }

    /// The short-range detector for this precision.
    pub fn short_range(self) -> ModelFile {
        match self.resolve() {
            Precision::Float | Precision::FloatStock | Precision::Auto => BLAZEFACE_SHORT,
            Precision::Int8 => BLAZEFACE_SHORT_INT8,
            Precision::DynamicInt8 => BLAZEFACE_SHORT_DYNAMIC_INT8,
        }
    }

    /// The full-range detector for this precision.
    pub fn full_range(self) -> ModelFile {
        match self.resolve() {
            Precision::Float | Precision::FloatStock | Precision::Auto => BLAZEFACE_FULL,
            Precision::Int8 => BLAZEFACE_FULL_INT8,
            Precision::DynamicInt8 => BLAZEFACE_FULL_DYNAMIC_INT8,
        }
    }

    /// The configuration spelling (`"auto"`, `"int8"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::Float => "float",
            Precision::FloatStock => "float_stock",
            Precision::Int8 => "int8",
            Precision::DynamicInt8 => "dynamic_int8",
        }
    }

    /// What runs for this setting, and why: for `Auto` the CPU's reason, for an explicit value
    /// "set in the configuration". For logs, `check-config` and the console's System page.
    pub fn choice(self) -> PrecisionChoice {
        match self {
            Precision::Auto => host_choice().clone(),
            p => PrecisionChoice {
                precision: p,
                reason: "set explicitly".into(),
            },
        }
    }
}

/// The precision that runs, and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrecisionChoice {
    /// Never `Auto`.
    pub precision: Precision,
    /// One sentence for a person: the CPU feature found or missing.
    pub reason: String,
}

/// `HWCAP_ASIMDDP` in the aarch64 Linux auxiliary vector (`AT_HWCAP` bit 20,
/// arch/arm64/include/uapi/asm/hwcap.h): the SDOT/UDOT int8 dot product instructions.
const AARCH64_HWCAP_ASIMDDP: u64 = 1 << 20;

/// "CPU part" of an Arm Cortex-A53 in /proc/cpuinfo (implementer 0x41).
const CORTEX_A53_PART: &str = "0xd03";

/// This machine's choice for `Auto`, read once from /proc/cpuinfo and the auxiliary vector.
pub fn host_choice() -> &'static PrecisionChoice {
    static CHOICE: std::sync::OnceLock<PrecisionChoice> = std::sync::OnceLock::new();
    CHOICE.get_or_init(|| {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
        // SAFETY: getauxval reads the process's auxiliary vector; it has no preconditions.
        let hwcap: u64 = unsafe { libc::getauxval(libc::AT_HWCAP) };
        #[cfg(not(all(target_os = "linux", target_arch = "aarch64")))]
        let hwcap: u64 = 0;
        choose(std::env::consts::ARCH, &cpuinfo, hwcap)
    })
}

/// The choice for `Auto` on a CPU of architecture `arch` (as `std::env::consts::ARCH`) whose
/// /proc/cpuinfo reads `cpuinfo` and whose `AT_HWCAP` is `hwcap` (aarch64 only; 0 elsewhere).
///
/// - aarch64: the precision with fewer instructions per frame, as `scripts/arm-cost` measured
///   it on each emulated core (docs/bench.md, "ARM cost"): int8 when the CPU has `asimddp`
///   (the hwcap bit or the cpuinfo "Features" word: XNNPACK reads the hwcap, a person reads the
///   file; −37 % on a Cortex-A76), int8 on a Cortex-A53, whose own XNNPACK kernels make int8
///   cheaper without dot products (−19 %), float otherwise (Cortex-A72: int8 is +7 %).
/// - x86_64: float, even with VNNI (`avx512_vnni`, `avx_vnni`): on a Xeon with both, measured
///   with `faced bench` (docs/bench.md), the int8 embedder took 8.2 ms against float's 7.3 ms
///   and the stream ran 7 % slower, because most of MobileFaceNet's time is elementwise PReLU
///   arithmetic that int8 does not speed up.
/// - anything else: float.
pub fn choose(arch: &str, cpuinfo: &str, hwcap: u64) -> PrecisionChoice {
    // "Features" on ARM, "flags" on x86: one line per core, the first is enough.
    let words = |key: &str| -> Vec<&str> {
        cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.split_whitespace().collect())
            })
            .unwrap_or_default()
    };
    let (precision, reason) = match arch {
        "aarch64" => {
            if hwcap & AARCH64_HWCAP_ASIMDDP != 0 || words("Features").contains(&"asimddp") {
                (
                    Precision::Int8,
                    "the CPU has int8 dot product instructions (asimddp), which make the int8 \
                     models cheaper"
                        .to_string(),
                )
            } else if words("CPU part").contains(&CORTEX_A53_PART) {
                (
                    Precision::Int8,
                    "Cortex-A53 (Raspberry Pi 3, Zero 2 W): XNNPACK's int8 kernels for this core \
                     need 19 % fewer instructions per frame than its float ones"
                        .to_string(),
                )
            } else {
                (
                    Precision::Float,
                    "the CPU has no int8 dot product instructions (no asimddp), so the int8 \
                     models would not be cheaper"
                        .to_string(),
                )
            }
        }
        "x86_64" | "x86" => {
            let flags = words("flags");
            let vnni: Vec<&str> = ["avx512_vnni", "avx_vnni"]
                .into_iter()
                .filter(|f| flags.contains(f))
                .collect();
            let reason = if vnni.is_empty() {
                "x86 CPU without VNNI: the int8 models are slower here".to_string()
            } else {
                format!(
                    "x86 CPU with {}: the int8 models were measured no faster on such a CPU",
                    vnni.join(" and ")
                )
            };
            (Precision::Float, reason)
        }
        other => (
            Precision::Float,
            format!("no int8 speed-up is known for {other} CPUs"),
        ),
    };
    PrecisionChoice { precision, reason }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "float" => Ok(Precision::Float),
            "float_stock" => Ok(Precision::FloatStock),
            "int8" => Ok(Precision::Int8),
            "dynamic_int8" => Ok(Precision::DynamicInt8),
            "auto" => Ok(Precision::Auto),
            _ => Err(Error::invalid(format!(
                "unknown precision {s:?}: use auto, float, float_stock, int8 or dynamic_int8"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first core's lines of /proc/cpuinfo as the boards print them (Raspberry Pi OS
    /// bookworm; scripts/qemu-aarch64 serves the same lines to the emulated binary).
    const PI4: &str = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n";
    const PI5: &str = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n";
    const XEON_VNNI: &str =
        "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx_vnni\n";
    const EPYC: &str = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2\n";

    #[test]
    fn auto_picks_int8_only_where_the_cpu_has_dot_products() {
        assert_eq!(choose("aarch64", PI4, 0).precision, Precision::Float);
        assert_eq!(choose("aarch64", PI5, 0).precision, Precision::Int8);
        let pi3 = PI4.replace("0xd08", "0xd03");
        let a53 = choose("aarch64", &pi3, 0);
        assert_eq!(a53.precision, Precision::Int8);
        assert!(a53.reason.contains("Cortex-A53"), "{}", a53.reason);
        // A kernel that hides cpuinfo's Features still sets the hwcap, and the other way round.
        assert_eq!(
            choose("aarch64", "", AARCH64_HWCAP_ASIMDDP).precision,
            Precision::Int8
        );
        assert_eq!(choose("aarch64", PI4, 1 << 19).precision, Precision::Float);
        // "asimddp" must be a whole word of the Features line, not of another line.
        let fake = "model name\t: asimddp-lookalike\nFeatures\t: fp asimd asimddpx\n";
        assert_eq!(choose("aarch64", fake, 0).precision, Precision::Float);

        let x = choose("x86_64", XEON_VNNI, 0);
        assert_eq!(x.precision, Precision::Float);
        assert!(
            x.reason.contains("avx512_vnni and avx_vnni"),
            "{}",
            x.reason
        );
        let e = choose("x86_64", EPYC, 0);
        assert_eq!(e.precision, Precision::Float);
        assert!(e.reason.contains("without VNNI"), "{}", e.reason);
        assert_eq!(choose("riscv64", "", 0).precision, Precision::Float);
        assert!(choose("aarch64", PI5, 0).reason.contains("asimddp"));
    }

    #[test]
    fn explicit_precisions_are_kept_and_auto_resolves_to_a_model() {
        for p in [
            Precision::Float,
            Precision::FloatStock,
            Precision::Int8,
            Precision::DynamicInt8,
        ] {
            assert_eq!(p.resolve(), p);
            assert_eq!(p.choice().precision, p);
            assert_eq!(p.as_str().parse::<Precision>().unwrap(), p);
        }
        let auto = Precision::Auto.resolve();
        assert_ne!(auto, Precision::Auto);
        assert_eq!(Precision::Auto.embedder(), auto.embedder());
        assert_eq!(Precision::Auto.short_range(), auto.short_range());
        assert_eq!("auto".parse::<Precision>().unwrap(), Precision::Auto);
        assert!(
            "fast"
                .parse::<Precision>()
                .unwrap_err()
                .to_string()
                .contains("auto, float")
        );
    }
}
