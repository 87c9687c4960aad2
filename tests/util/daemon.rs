//! Test helpers for the daemon side: fixture photos by person (`labels.csv`), a real gallery in
//! a temporary directory with people enrolled from fixtures ([`enroll`]), a play folder of
//! chosen photos ([`play_dir`]), a validated config for a `dir:` camera ([`config`]), and
//! [`Daemon`], `faced run` as a subprocess whose stderr is collected.
//!
//! Used as `crate::util::daemon` (imported as `daemon_util`). Needs the LiteRT library and the
//! models (`scripts/setup`), like the vision tests.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faced::base::Clocks;
use faced::config::{CameraConfig, Config, RawConfig, stream_detector};
use faced::events::store::{EventStore, EventWriter, StoreOptions};
use faced::gallery::{Gallery, GalleryOptions, NewSample, PersonId, SampleKind};
use faced::pipeline::Pipeline;
use faced::vision::detect::DetectorConfig;
use faced::vision::image::ImageLimits;
use faced::vision::{Analyzer, InferenceConfig};

/// `tests/fixtures/faces`.
pub fn faces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces")
}

/// Person label → photo file names, from `labels.csv`, in file order.
pub fn photos_by_person() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(faces_dir().join("labels.csv")).unwrap();
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        m.entry(f[1].to_string())
            .or_default()
            .push(f[0].to_string());
    }
    m
}

/// A fresh temporary directory (removed on drop).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Opens (creating) the gallery at `db` and enrolls `name` from each fixture photo in `files`
/// (largest face of each). Returns the person id.
pub fn enroll(
    gallery: &mut Gallery,
    analyzer: &mut Analyzer,
    name: &str,
    files: &[&str],
) -> PersonId {
    let id = gallery.add_person(name).unwrap();
    for f in files {
        let img =
            faced::vision::image::load(&faces_dir().join(f), &ImageLimits::default()).unwrap();
        let faces = analyzer.analyze(&img).unwrap();
        let face = faces
            .into_iter()
            .max_by(|a, b| a.detection.width().total_cmp(&b.detection.width()))
            .unwrap();
        let crop = faced::pipeline::encode_jpeg(&face.aligned, 90).unwrap();
        gallery
            .add_sample(
                id,
                NewSample {
                    kind: SampleKind::Positive,
                    embedding: &face.embedding,
                    crop_jpeg: &crop,
                    quality_json: "{}",
                    source: f,
                },
            )
            .unwrap();
    }
    id
}

/// An analyzer for still photos (multi-scale detection, as `faced enroll` uses).
pub fn still_analyzer() -> Analyzer {
    Analyzer::open(&InferenceConfig::default(), DetectorConfig::default()).unwrap()
}

/// Opens the gallery at `dir/faced.db`.
pub fn gallery(dir: &Path) -> Gallery {
    Gallery::open(&dir.join("faced.db"), &GalleryOptions::default()).unwrap()
}

/// The gallery at `dir/faced.db` with `alice` enrolled from the first three photos of
/// `person01`. Returns all of person01's photos (the others are for playing) and the gallery's
/// key file (to read the events back).
pub fn gallery_with_alice(dir: &Path) -> (Vec<String>, PathBuf) {
    gallery_with_person01(dir, "alice")
}

/// [`gallery_with_alice`] under another name.
pub fn gallery_with_person01(dir: &Path, name: &str) -> (Vec<String>, PathBuf) {
    let p1 = photos_by_person().remove("person01").unwrap();
    let mut g = gallery(dir);
    let mut an = still_analyzer();
    let first: Vec<&str> = p1[..3].iter().map(String::as_str).collect();
    enroll(&mut g, &mut an, name, &first);
    (p1, g.key_path().to_path_buf())
}

/// Writes `toml` to `dir/faced.toml` and starts `faced run --config` on it, logging at info.
pub fn start_with_config(dir: &Path, toml: &str) -> Daemon {
    let path = dir.join("faced.toml");
    std::fs::write(&path, toml).unwrap();
    Daemon::start(
        &["--config", path.to_str().unwrap()],
        &[("FACED_LOG", "info")],
    )
}

/// Copies fixture photos into `dir/play` as `000_<name>`, `001_<name>`, … (play order).
pub fn play_dir(dir: &Path, files: &[&str]) -> PathBuf {
    let play = dir.join("play");
    std::fs::create_dir_all(&play).unwrap();
    for (i, f) in files.iter().enumerate() {
        std::fs::copy(faces_dir().join(f), play.join(format!("{i:03}_{f}"))).unwrap();
    }
    play
}

/// A validated config: one camera `front` playing `play` once (`frames_per_image` frames per
/// photo at `fps`), database in `dir`, MQTT and the console off.
pub fn config(dir: &Path, play: &Path, frames_per_image: u32, fps: f32) -> Config {
    let mut raw = RawConfig::default();
    raw.gallery.db = dir.join("faced.db");
    raw.cameras = vec![CameraConfig {
        name: "front".into(),
        source: format!("dir:{}", play.display()),
        fps,
        frames_per_image,
        repeat: false,
        // Every photo is seen however slow the machine: the assertions count events.
        lossless: true,
        detector: stream_detector(),
        ..CameraConfig::default()
    }];
    Config::validate(raw, None, Vec::new()).unwrap()
}

/// `cfg`'s cameras recording in-process as `faced run` wires them: pipeline → event writer into
/// `cfg`'s gallery database (snapshot crops encrypted with `key`). Stop with
/// [`Pipeline::stop`], then [`EventWriter::shutdown`].
pub fn start_pipeline(
    cfg: &Config,
    gallery: Gallery,
    key: &Path,
    clock: Arc<dyn Clocks>,
) -> (Pipeline, EventWriter) {
    let store = EventStore::open(
        &cfg.raw.gallery.db,
        key,
        StoreOptions::from(&cfg.raw.events),
        clock.clone(),
    )
    .unwrap();
    let writer = EventWriter::spawn(store).unwrap();
    let pipeline = Pipeline::start(
        cfg,
        Arc::new(Mutex::new(gallery)),
        Some(writer.sender()),
        clock,
        None,
    )
    .unwrap();
    (pipeline, writer)
}

/// Waits until every camera of `handle` has played to its end (lossless `dir:` playback), failing
/// the test with the cameras' stats after `timeout`.
pub fn wait_finished(handle: &faced::pipeline::Handle, timeout: Duration) {
    let t = Instant::now();
    while !handle.finished() {
        assert!(
            t.elapsed() < timeout,
            "camera did not finish: {:?}",
            handle.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `faced run` as a subprocess; stderr lines are collected in the background.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The thread that reads stderr; it ends at end of file, after the process's last line.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `faced run` with `args` and extra environment `env` (the console is off unless
    /// `env` sets `FACED_WEB__ENABLED`).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::spawn(Self::command(args, env))
    }

    /// [`Daemon::start`] with the soft open-file limit `nofile` (as a unit's `LimitNOFILE=`).
    /// Set in the child between fork and exec: the test process's own limit is shared by every
    /// test running beside this one and stays as it is.
    pub fn start_with_nofile(args: &[&str], env: &[(&str, &str)], nofile: libc::rlim_t) -> Daemon {
        use std::os::unix::process::CommandExt;
        let mut cmd = Self::command(args, env);
        // SAFETY: the closure runs in the forked child before exec and only calls getrlimit and
        // setrlimit, which are async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                let mut r = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                r.rlim_cur = nofile.min(r.rlim_max);
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Self::spawn(cmd)
    }

    fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faced"));
        cmd.arg("run")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.env_remove("JOURNAL_STREAM").env_remove("NOTIFY_SOCKET");
        // The console listens on :8080 by default; parallel tests would fight over it.
        cmd.env("FACED_WEB__ENABLED", "false");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(mut cmd: Command) -> Daemon {
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().unwrap();
        let l = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Daemon {
            child,
            log,
            reader: Some(reader),
        }
    }

    /// Waits until a log line contains every string of `needles` (panics after `timeout`).
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> String {
        let t = Instant::now();
        loop {
            if let Some(l) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return l.clone();
            }
            if t.elapsed() > timeout {
                panic!(
                    "no log line with {needles:?} within {timeout:?}; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit (panics after `timeout`); returns the exit code. On return the log holds
    /// every line the process wrote: a process can exit before the reader thread has taken its
    /// last lines from the pipe, so this waits for the reader to reach end of file.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    r.join().unwrap();
                }
                return s.code();
            }
            if t.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "faced did not exit within {timeout:?}; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI `faced ARGS` with `stdin` on its standard input (and no `FACED_CONFIG` from the
/// test's environment): whether it succeeded, and its stdout and stderr.
pub fn faced_cli_status(args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_faced"))
        .args(args)
        .env_remove("FACED_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that does not read its standard input (`faced user list`) may exit before the
    // write: a broken pipe then is not an error.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// [`faced_cli_status`] that panics unless the command succeeds; returns its output.
pub fn faced_cli(args: &[&str], stdin: &str) -> String {
    let (ok, text) = faced_cli_status(args, stdin);
    assert!(ok, "faced {args:?} failed: {text}");
    text
}

/// A unit for event storms: the gallery at `db` with the first fixture person enrolled (one of
/// the four faces of the bench mosaics; the others are strangers) and an admin user `admin`
/// with [`crate::util::web::PASSWORD`], and a play folder `dir/play` holding each of `mosaics`
/// (files of tests/fixtures/bench) for `frames` frames followed by `empty` frames without a
/// face, so every cycle ends its tracks and starts new ones: recognized, unknown and left
/// events. Returns the play folder.
pub fn storm_unit(dir: &Path, db: &Path, mosaics: &[&str], frames: usize, empty: usize) -> PathBuf {
    let db_s = db.to_str().unwrap();
    let (person, files) = photos_by_person().into_iter().next().unwrap();
    let photo = faces_dir().join(&files[0]);
    faced_cli(
        &[
            "enroll",
            "--db",
            db_s,
            "--name",
            &person,
            photo.to_str().unwrap(),
        ],
        "",
    );
    faced_cli(
        &["user", "--db", db_s, "add", "--admin", "admin"],
        &format!("{}\n", crate::util::web::PASSWORD),
    );
    let play = dir.join("play");
    std::fs::create_dir_all(&play).unwrap();
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench");
    let mut n = 0;
    for m in mosaics {
        for (src, times) in [
            (bench.join(m), frames),
            (faces_dir().join("negatives/orange.jpg"), empty),
        ] {
            for _ in 0..times {
                std::fs::copy(&src, play.join(format!("{n:04}.jpg"))).unwrap();
                n += 1;
            }
        }
    }
    play
}

/// Adds the console user `admin` (password [`crate::util::web::PASSWORD`]) to the database
/// at `db` with the CLI.
pub fn add_admin(db: &Path) {
    faced_cli(
        &[
            "user",
            "--db",
            db.to_str().unwrap(),
            "add",
            "--admin",
            "admin",
        ],
        &format!("{}\n", crate::util::web::PASSWORD),
    );
}
