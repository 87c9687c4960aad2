//! LiteRT backend: the `CompiledModel` API of `libLiteRt.so` (XNNPACK on CPU) through
//! `edgefirst_tflite::litert`.
//!
//! The library, its environment and each distinct model are loaded once per process and kept for
//! its lifetime (`'static`): the C API requires the environment and the model to outlive every
//! compiled model, and one environment per process is LiteRT's intended use. Models are keyed by
//! their SHA-256, so reloading the gallery or starting a second pipeline in tests costs no memory.
//!
//! Where the library is looked for, in order (first hit wins):
//! 1. the `inference.litert_lib` config key / the `--litert-lib` option,
//! 2. `$FACED_LITERT_LIB`,
//! 3. `libLiteRt.so` next to the running binary,
//! 4. `/usr/lib/faced/libLiteRt.so` (the Debian package),
//! 5. `.litert/<arch>/libLiteRt.so` in the checkout the binary was built from (what
//!    `scripts/setup` writes).
//!
//! # LiteRT's stderr
//! The library prints its own warnings straight to file descriptor 2 while it starts and
//! compiles models ("NPU accelerator could not be loaded and registered", "GPU accelerator could
//! not be …", on every command and every start), and it exports no call to set its log severity
//! (2.3's `libLiteRt.so` has no `LiteRtSetMinLoggerSeverity`; `edgefirst-tflite` exposes none
//! either). So [`quiet_stderr`] points fd 2 at a pipe for the duration of those calls only; a
//! thread drains the pipe (the library never blocks on a full pipe) and the lines are logged at
//! debug (target `litert`) once fd 2 is back. faced's own log lines never enter the pipe: the
//! logger writes to [`log_stderr`], a copy of fd 2 taken before the first redirection, so a line
//! another thread logs meanwhile is not swallowed. Anything *else* that writes to fd 2 directly in
//! that window (an `eprintln!`, another C library) lands in the debug log too; the windows are
//! the model loads at start, a few hundred milliseconds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use edgefirst_tflite::Library;
use edgefirst_tflite::litert::{
    CompiledModel, Environment, HwAccelerators, Model, Options, TensorBuffer,
};

use super::{Backend, DType, Session, TensorSpec};
use crate::error::{Error, Result};

/// File name of the runtime library.
pub const LIB_NAME: &str = "libLiteRt.so";

/// Architecture folder name used by `scripts/setup` under `.litert/`.
pub fn arch_dir() -> &'static str {
    std::env::consts::ARCH
}

/// The places searched for the library, in order, given an optional explicit path.
pub fn candidate_paths(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = explicit {
        v.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("FACED_LITERT_LIB").filter(|s| !s.is_empty()) {
        v.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        v.push(dir.join(LIB_NAME));
    }
    v.push(PathBuf::from("/usr/lib/faced").join(LIB_NAME));
    v.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".litert")
            .join(arch_dir())
            .join(LIB_NAME),
    );
    v
}

/// Finds the library: the explicit path if given (it must exist), else the first candidate that
/// exists.
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(Error::unavailable(format!(
            "LiteRT runtime library {} (set by config/option) does not exist; run scripts/setup, \
             or point inference.litert_lib / FACED_LITERT_LIB at libLiteRt.so",
            p.display()
        )));
    }
    let cands = candidate_paths(None);
    cands.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let tried: Vec<String> = cands.iter().map(|p| p.display().to_string()).collect();
        Error::unavailable(format!(
            "LiteRT runtime library {LIB_NAME} not found (tried: {}); run scripts/setup to \
             extract it from the pinned ai-edge-litert wheel, or set FACED_LITERT_LIB",
            tried.join(", ")
        ))
    })
}

/// A copy of the process's original stderr, taken once, before any [`quiet_stderr`] redirect.
/// `-1` if it could not be duplicated (then logs go to fd 2 as before).
fn saved_stderr() -> RawFd {
    static SAVED: OnceLock<RawFd> = OnceLock::new();
    // SAFETY: F_DUPFD_CLOEXEC duplicates fd 2 (or fails with -1); the copy is never closed.
    *SAVED.get_or_init(|| unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) })
}

/// Where faced's logger writes: the original stderr, unaffected by [`quiet_stderr`] (module
/// docs). Use as `tracing_subscriber::fmt().with_writer(log_stderr)`.
pub fn log_stderr() -> LogStderr {
    LogStderr(saved_stderr())
}

/// See [`log_stderr`].
#[derive(Debug)]
pub struct LogStderr(RawFd);

impl std::io::Write for LogStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let fd = if self.0 >= 0 { self.0 } else { 2 };
        // SAFETY: writes from a valid buffer to a descriptor this process keeps open.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with fd 2 pointed at a pipe and logs what was written there at debug (module docs).
/// Calls are serialised; if the pipe cannot be set up, `f` runs with stderr as it is.
pub fn quiet_stderr<T>(f: impl FnOnce() -> T) -> T {
    static LOCK: Mutex<()> = Mutex::new(());
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let saved = saved_stderr();
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors on success.
    if saved < 0 || unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return f();
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let drain = std::thread::Builder::new()
        .name("litert-stderr".into())
        .spawn(move || {
            BufReader::new(std::fs::File::from(read))
                .lines()
                .map_while(std::result::Result::ok)
                .collect::<Vec<String>>()
        });
    let Ok(drain) = drain else { return f() };
    /// Puts fd 2 back even if `f` panics; until then the pipe's write end stays open.
    struct Restore(RawFd);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: `self.0` is the saved copy of the original fd 2.
            unsafe { libc::dup2(self.0, 2) };
        }
    }
    // SAFETY: makes fd 2 a copy of the pipe's write end; Restore undoes it.
    let redirected = unsafe { libc::dup2(write.as_raw_fd(), 2) } >= 0;
    drop(write);
    let out = {
        let _restore = redirected.then_some(Restore(saved));
        f()
    };
    // Both write ends are closed now (ours dropped, fd 2 restored): the thread reads to EOF.
    for line in drain.join().unwrap_or_default() {
        if !line.trim().is_empty() {
            tracing::debug!(target: "litert", "{line}");
        }
    }
    out
}

/// A loaded LiteRT runtime; cheap to clone through `Arc`.
pub struct LiteRt {
    path: PathBuf,
    lib: &'static Library,
    env: &'static Environment<'static>,
    models: Mutex<HashMap<[u8; 32], &'static Model<'static>>>,
}

impl std::fmt::Debug for LiteRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiteRt").field("path", &self.path).finish()
    }
}

static RUNTIMES: OnceLock<Mutex<HashMap<PathBuf, Arc<LiteRt>>>> = OnceLock::new();

impl LiteRt {
    /// Loads (once per process and path) the runtime found by [`find_library`].
    pub fn open(explicit: Option<&Path>) -> Result<Arc<LiteRt>> {
        let path = find_library(explicit)?;
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        let mut map = RUNTIMES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(rt) = map.get(&path) {
            return Ok(rt.clone());
        }
        let rt = quiet_stderr(|| Self::load(path.clone()))?;
        map.insert(path, rt.clone());
        Ok(rt)
    }

    fn load(path: PathBuf) -> Result<Arc<LiteRt>> {
        let lib = Library::from_path(&path).map_err(|e| {
            Error::unavailable(format!(
                "cannot load LiteRT runtime {}: {e}; re-run scripts/setup (is it the library for \
                 this CPU architecture, {}?)",
                path.display(),
                std::env::consts::ARCH
            ))
        })?;
        if !lib.has_litert() {
            return Err(Error::unavailable(format!(
                "{} is not a LiteRT runtime (missing symbol {}); use libLiteRt.so from the \
                 ai-edge-litert wheel (scripts/setup)",
                path.display(),
                lib.litert_missing_symbol().unwrap_or("?")
            )));
        }
        // Leaked on purpose: see the module docs.
        let lib: &'static Library = Box::leak(Box::new(lib));
        let env = Environment::new(lib).map_err(|e| {
            Error::unavailable(format!(
                "LiteRT environment failed to start ({}): {e}",
                path.display()
            ))
        })?;
        let env: &'static Environment<'static> = Box::leak(Box::new(env));
        Ok(Arc::new(LiteRt {
            path,
            lib,
            env,
            models: Mutex::new(HashMap::new()),
        }))
    }

    /// Path of the loaded library.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks XNNPACK for `threads` threads. Left alone, LiteRT's CPU accelerator runs on one
    /// thread: MobileFaceNet then takes ~20 ms a pair on the 2-core dev VM instead of ~12 ms.
    ///
    /// LiteRT 2.3's library does not export `LiteRtCreateCpuOptions`/`…SetCpuOptionsNumThread`
    /// (they live in the client-side C API), but those only build an *opaque option*: the
    /// identifier `"xnnpack"` with a TOML payload (`num_threads = N`), which the runtime parses
    /// (`litert::internal::ParseLiteRtCpuOptions`). The opaque-option functions are exported, so
    /// this builds the same option. `edgefirst-tflite` keeps the options handle private; its
    /// `Debug` output carries it.
    fn set_cpu_threads(
        &self,
        opts: &Options<'_>,
        threads: usize,
    ) -> std::result::Result<(), String> {
        type CreateOpaque = unsafe extern "C" fn(
            *const libc::c_char,
            *mut libc::c_void,
            Option<unsafe extern "C" fn(*mut libc::c_void)>,
            *mut *mut libc::c_void,
        ) -> libc::c_int;
        type AddOpaque = unsafe extern "C" fn(*mut libc::c_void, *mut libc::c_void) -> libc::c_int;
        unsafe extern "C" fn free_payload(p: *mut libc::c_void) {
            // SAFETY: the payload was allocated by strdup below.
            unsafe { libc::free(p) }
        }

        let dbg = format!("{opts:?}");
        let raw = dbg
            .split_once("ptr: 0x")
            .and_then(|(_, rest)| {
                let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
                usize::from_str_radix(&hex, 16).ok()
            })
            .filter(|&p| p != 0)
            .ok_or("cannot read the options handle")? as *mut libc::c_void;
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes())
            .map_err(|e| e.to_string())?;
        // SAFETY: the library is already loaded (RTLD_NOLOAD returns its handle, never loads a
        // second copy); the symbols have the C signatures declared above (litert_options.h,
        // litert_opaque_options.h of LiteRT 2.3).
        unsafe {
            let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            if h.is_null() {
                return Err("the LiteRT library is not loaded".into());
            }
            let create = libc::dlsym(h, c"LiteRtCreateOpaqueOptions".as_ptr());
            let add = libc::dlsym(h, c"LiteRtAddOpaqueOptions".as_ptr());
            libc::dlclose(h);
            if create.is_null() || add.is_null() {
                return Err(
                    "the library lacks LiteRtCreateOpaqueOptions/LiteRtAddOpaqueOptions".into(),
                );
            }
            let create: CreateOpaque = std::mem::transmute(create);
            let add: AddOpaque = std::mem::transmute(add);
            let toml =
                std::ffi::CString::new(format!("num_threads = {threads}\n")).expect("no NUL");
            let payload = libc::strdup(toml.as_ptr());
            if payload.is_null() {
                return Err("out of memory".into());
            }
            let mut opaque = std::ptr::null_mut();
            let st = create(
                c"xnnpack".as_ptr(),
                payload.cast(),
                Some(free_payload),
                &mut opaque,
            );
            if st != 0 || opaque.is_null() {
                free_payload(payload.cast());
                return Err(format!("LiteRtCreateOpaqueOptions returned status {st}"));
            }
            // The options take ownership of the opaque options (and so of the payload).
            let st = add(raw, opaque);
            if st != 0 {
                return Err(format!("LiteRtAddOpaqueOptions returned status {st}"));
            }
        }
        Ok(())
    }

    fn model(&self, label: &str, bytes: &[u8]) -> Result<&'static Model<'static>> {
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, bytes)
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = models.get(&key) {
            return Ok(m);
        }
        let m = Model::from_buffer(self.env, bytes.to_vec())
            .map_err(|e| Error::precondition(format!("LiteRT cannot read model {label}: {e}")))?;
        let m: &'static Model<'static> = Box::leak(Box::new(m));
        models.insert(key, m);
        Ok(m)
    }
}

fn spec(t: &edgefirst_tflite::litert::RankedTensorType) -> TensorSpec {
    let rank = t.layout.rank() as usize;
    let shape = t.layout.dimensions[..rank.min(8)]
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    // Values of LiteRtElementType from litert_model.h (ABI-stable; the -sys crate does not
    // re-export the constants).
    let dtype = match t.element_type {
        1 => DType::F32,
        9 => DType::I8,
        3 => DType::U8,
        _ => DType::Other,
    };
    TensorSpec { shape, dtype }
}

impl Backend for LiteRt {
    fn name(&self) -> &'static str {
        "litert"
    }

    fn compile(&self, label: &str, bytes: &[u8], threads: usize) -> Result<Box<dyn Session>> {
        quiet_stderr(|| self.compile_loud(label, bytes, threads))
    }
}

impl LiteRt {
    fn compile_loud(&self, label: &str, bytes: &[u8], threads: usize) -> Result<Box<dyn Session>> {
        let model = self.model(label, bytes)?;
        let err = |what: &str, e: edgefirst_tflite::Error| {
            Error::precondition(format!("LiteRT {what} failed for model {label}: {e}"))
        };
        let opts = Options::new(self.lib)
            .and_then(|o| o.hardware_accelerators(HwAccelerators::CPU))
            .map_err(|e| err("options", e))?;
        if threads > 0 {
            self.set_cpu_threads(&opts, threads).map_err(|e| {
                Error::precondition(format!("LiteRT CPU options for model {label}: {e}"))
            })?;
        }
        let compiled =
            CompiledModel::create(self.env, model, &opts).map_err(|e| err("compile", e))?;
        let n_in = model.num_inputs(0).map_err(|e| err("num_inputs", e))?;
        let n_out = model.num_outputs(0).map_err(|e| err("num_outputs", e))?;
        let mut in_specs = Vec::new();
        let mut inputs = Vec::new();
        for i in 0..n_in {
            in_specs.push(spec(
                &model
                    .input_tensor_type(0, i)
                    .map_err(|e| err("input type", e))?,
            ));
            inputs.push(
                compiled
                    .create_input_buffer(0, i)
                    .map_err(|e| err("input buffer", e))?,
            );
        }
        let mut out_specs = Vec::new();
        let mut outputs = Vec::new();
        for i in 0..n_out {
            out_specs.push(spec(
                &model
                    .output_tensor_type(0, i)
                    .map_err(|e| err("output type", e))?,
            ));
            outputs.push(
                compiled
                    .create_output_buffer(0, i)
                    .map_err(|e| err("output buffer", e))?,
            );
        }
        for (what, s) in in_specs
            .iter()
            .map(|s| ("input", s))
            .chain(out_specs.iter().map(|s| ("output", s)))
        {
            if s.dtype != DType::F32 {
                return Err(Error::precondition(format!(
                    "model {label} has a {:?} {what} tensor; faced feeds float tensors (quantized \
                     models must keep float inputs and outputs)",
                    s.dtype
                )));
            }
        }
        Ok(Box::new(LiteRtSession {
            label: label.to_string(),
            compiled,
            inputs,
            outputs,
            in_specs,
            out_specs,
        }))
    }
}

struct LiteRtSession {
    label: String,
    compiled: CompiledModel<'static>,
    inputs: Vec<TensorBuffer<'static>>,
    outputs: Vec<TensorBuffer<'static>>,
    in_specs: Vec<TensorSpec>,
    out_specs: Vec<TensorSpec>,
}

impl Session for LiteRtSession {
    fn inputs(&self) -> &[TensorSpec] {
        &self.in_specs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.out_specs
    }

    fn run(&mut self, inputs: &[&[f32]], outputs: &mut [Vec<f32>]) -> Result<()> {
        if inputs.len() != self.inputs.len() || outputs.len() != self.outputs.len() {
            return Err(Error::internal(format!(
                "model {} takes {} inputs and {} outputs, got {} and {}",
                self.label,
                self.inputs.len(),
                self.outputs.len(),
                inputs.len(),
                outputs.len()
            )));
        }
        for ((buf, data), spec) in self.inputs.iter_mut().zip(inputs).zip(&self.in_specs) {
            if data.len() != spec.len() {
                return Err(Error::internal(format!(
                    "model {} input {:?} needs {} floats, got {}",
                    self.label,
                    spec.shape,
                    spec.len(),
                    data.len()
                )));
            }
            buf.write_bytes(bytemuck::cast_slice(data))
                .map_err(|e| Error::internal(format!("model {} input write: {e}", self.label)))?;
        }
        self.compiled
            .run(0, &mut self.inputs, &mut self.outputs)
            .map_err(|e| Error::internal(format!("model {} inference failed: {e}", self.label)))?;
        for ((buf, out), spec) in self
            .outputs
            .iter_mut()
            .zip(outputs.iter_mut())
            .zip(&self.out_specs)
        {
            out.resize(spec.len(), 0.0);
            buf.read_bytes_into(bytemuck::cast_slice_mut(out))
                .map_err(|e| Error::internal(format!("model {} output read: {e}", self.label)))?;
        }
        Ok(())
    }
}
