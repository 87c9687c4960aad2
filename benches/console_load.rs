//! Console load test (docs/web.md, "Load"): with the pipeline running, 200 concurrent clients on
//! `GET /api/events` for 30 s; reports errors, latency and the pipeline's frame rate before,
//! during and after the load. Not a criterion bench (`harness = false`): one run, one table.
//!
//! ```sh
//! nice -n 10 cargo bench --bench console_load
//! ```
//!
//! What it does:
//! 1. In a temporary directory: `faced enroll` two people from the fixture photos into a new
//!    gallery, `faced user add --admin` a console user (password on stdin).
//! 2. Starts the real daemon, `faced run`, configured only through `FACED_<SECTION>__<KEY>`
//!    overrides: one camera `front` playing `tests/fixtures/faces` (`dir:`) at a paced
//!    [`CAMERA_FPS`] that the pipeline sustains on an idle machine, 5 frames per photo (so faces
//!    are tracked, as from a real camera), event cool-downs 0 (so the event log fills), MQTT off,
//!    the console on a free 127.0.0.1 port.
//! 3. Signs in once (`POST /api/login`), creates an API token (`POST /api/tokens` with the CSRF
//!    header) and uses `Authorization: Bearer` from then on, as a script would.
//! 4. Lets the pipeline write events until `GET /api/events` returns a full default page (100
//!    events; at least [`WARMUP`], at most 3 minutes), then measures:
//!    * *before*: [`IDLE`] with no load;
//!    * *bounded*: [`LOAD`] of [`CLIENTS`] clients, each with its own keep-alive connection,
//!      doing `GET /api/events` (the default page: newest 100 events) one request at a time with
//!      a fixed pause of [`PAUSE`] between requests (≈ 200 req/s in total);
//!    * *after*: [`IDLE`] with no load again;
//!    * *unbounded* (for information): the same clients without the pause for [`UNBOUNDED`].
//! 5. Frame rate: an overlay subscriber (`GET /api/live/overlay`, one SSE event per processed
//!    frame) counts processed frames exactly; `/api/cameras` gives the dropped-frame counter and
//!    the daemon's own fps average (sampled each second).
//!
//! Environment: `FACED_BENCH_BIN` runs another faced binary (default: the one Cargo built for
//! this bench); `LOAD_CLIENTS`, `LOAD_PAUSE_MS`, `LOAD_SECS`, `IDLE_SECS`, `UNBOUNDED_SECS`,
//! `CAMERA_FPS` change the figures above (`UNBOUNDED_SECS=0` skips the unbounded run).
//! Needs the LiteRT runtime and the models (`scripts/setup`), like the vision tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Concurrent clients.
const CLIENTS: usize = 200;
/// Pause between two requests of one client in the bounded run.
const PAUSE: Duration = Duration::from_millis(1000);
/// Bounded load duration.
const LOAD: Duration = Duration::from_secs(30);
/// No-load measurement before and after.
const IDLE: Duration = Duration::from_secs(20);
/// Unbounded load duration (information only).
const UNBOUNDED: Duration = Duration::from_secs(15);
/// Pipeline running at least this long before the first measurement (fills the event log).
const WARMUP: Duration = Duration::from_secs(15);
/// Camera rate: paced playback of the fixture photos.
const CAMERA_FPS: f64 = 10.0;
/// Console user for the test.
const USER: &str = "loadbench";
const PASSWORD: &str = "load-bench-password";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn faced_bin() -> PathBuf {
    std::env::var_os("FACED_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_faced")))
}

fn faces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of /proc/PID/stat: 12 and 13 after the name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Total CPU busy/all jiffies of the machine (for machine-wide CPU use per phase).
fn machine_cpu() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let all: f64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (all - idle, all)
}

fn run_cli(args: &[&str], stdin: Option<&str>) {
    let mut cmd = Command::new(faced_bin());
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("cannot start faced");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "faced {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `faced run` as a subprocess, killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counters of the frame-rate monitor.
#[derive(Default)]
struct Frames {
    /// Overlay events received (one per processed frame).
    processed: AtomicU64,
    /// Sum of the daemon's fps figure over the samples (×1000) and the sample count.
    fps_sum_milli: AtomicU64,
    fps_samples: AtomicU64,
    /// Last dropped-frame counter seen.
    dropped: AtomicU64,
}

#[derive(Debug, Clone)]
struct FrameSnap {
    at: Instant,
    processed: u64,
    fps_sum_milli: u64,
    fps_samples: u64,
    dropped: u64,
    daemon_cpu: f64,
    machine: (f64, f64),
    load: String,
}

fn snap(frames: &Frames, pid: u32) -> FrameSnap {
    FrameSnap {
        at: Instant::now(),
        processed: frames.processed.load(Ordering::SeqCst),
        fps_sum_milli: frames.fps_sum_milli.load(Ordering::SeqCst),
        fps_samples: frames.fps_samples.load(Ordering::SeqCst),
        dropped: frames.dropped.load(Ordering::SeqCst),
        daemon_cpu: cpu_secs(pid),
        machine: machine_cpu(),
        load: loadavg(),
    }
}

/// Frame figures of one phase.
#[derive(Debug, Clone)]
struct FramePhase {
    /// Processed frames per second (overlay events / wall time).
    fps: f64,
    /// Mean of the daemon's own fps figure sampled each second.
    daemon_fps: f64,
    /// Frames dropped during the phase.
    dropped: u64,
    /// CPU used by the daemon, in cores (1.0 = one core busy).
    daemon_cores: f64,
    /// CPU used by the whole machine, in cores.
    machine_cores: f64,
    /// Load average (1, 5, 15 min) at the start and the end of the phase.
    load: (String, String),
}

fn phase(a: &FrameSnap, b: &FrameSnap) -> FramePhase {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let n = (b.fps_samples - a.fps_samples).max(1) as f64;
    let (busy, all) = (b.machine.0 - a.machine.0, b.machine.1 - a.machine.1);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    FramePhase {
        fps: (b.processed - a.processed) as f64 / secs,
        daemon_fps: (b.fps_sum_milli - a.fps_sum_milli) as f64 / 1000.0 / n,
        dropped: b.dropped - a.dropped,
        daemon_cores: (b.daemon_cpu - a.daemon_cpu) / secs,
        machine_cores: if all > 0.0 { busy / all * cpus } else { 0.0 },
        load: (a.load.clone(), b.load.clone()),
    }
}

/// Result of one load run.
#[derive(Debug, Default)]
struct LoadResult {
    requests: u64,
    errors: u64,
    first_errors: Vec<String>,
    /// Latencies of successful requests, microseconds, sorted.
    lat_us: Vec<u64>,
    secs: f64,
}

impl LoadResult {
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `clients` clients on `url` for `dur`, each one request at a time, `pause` between requests.
async fn load(
    url: &str,
    token: &str,
    clients: usize,
    pause: Duration,
    dur: Duration,
) -> LoadResult {
    let start = Instant::now();
    let end = start + dur;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let url = url.to_string();
        let auth = format!("Bearer {token}");
        // Spread the first requests over one pause (or 100 ms) so clients do not march in step.
        let offset = pause
            .max(Duration::from_millis(100))
            .mul_f64(i as f64 / clients as f64);
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut lat = Vec::new();
            let mut errors = Vec::new();
            tokio::time::sleep(offset).await;
            while Instant::now() < end {
                let t = Instant::now();
                let r = c.get(&url).header("authorization", &auth).send().await;
                let res = match r {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.bytes().await {
                            Ok(body) if status.is_success() && body.first() == Some(&b'[') => {
                                Ok(())
                            }
                            Ok(body) => Err(format!(
                                "HTTP {status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(200)])
                            )),
                            Err(e) => Err(format!("body: {e}")),
                        }
                    }
                    Err(e) => Err(format!("request: {e}")),
                };
                let us = t.elapsed().as_micros() as u64;
                match res {
                    Ok(()) => lat.push(us),
                    Err(e) => errors.push(e),
                }
                if !pause.is_zero() {
                    // Not past the end, so that req/s is over the load window.
                    tokio::time::sleep_until((Instant::now() + pause).min(end).into()).await;
                }
            }
            (lat, errors)
        }));
    }
    let mut out = LoadResult::default();
    for t in tasks {
        let (lat, errors) = t.await.unwrap();
        out.requests += (lat.len() + errors.len()) as u64;
        out.errors += errors.len() as u64;
        out.lat_us.extend(lat);
        for e in errors {
            if out.first_errors.len() < 5 {
                out.first_errors.push(e);
            }
        }
    }
    out.secs = start.elapsed().as_secs_f64();
    out.lat_us.sort_unstable();
    out
}

/// Subscribes to the overlay stream and polls `/api/cameras` until `stop`.
fn monitor(base: String, token: String, frames: Arc<Frames>, stop: Arc<AtomicBool>) {
    let (b, t, f, s) = (base.clone(), token.clone(), frames.clone(), stop.clone());
    tokio::spawn(async move {
        let c = client_no_timeout();
        let mut resp = c
            .get(format!("{b}/api/live/overlay?camera=front"))
            .header("authorization", format!("Bearer {t}"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "overlay: {}", resp.status());
        let mut carry = String::new();
        while !s.load(Ordering::Relaxed) {
            let Ok(Some(chunk)) = resp.chunk().await else {
                if !s.load(Ordering::Relaxed) {
                    eprintln!("the overlay stream ended early: processed fps figures are wrong");
                }
                return;
            };
            carry.push_str(&String::from_utf8_lossy(&chunk));
            // One `data:` line per overlay event.
            while let Some(i) = carry.find('\n') {
                if carry[..i].starts_with("data:") {
                    f.processed.fetch_add(1, Ordering::SeqCst);
                }
                carry.drain(..=i);
            }
        }
    });
    tokio::spawn(async move {
        let c = client();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let Ok(r) = c
                .get(format!("{base}/api/cameras"))
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
            else {
                continue;
            };
            let Ok(v) = r.json::<Value>().await else {
                continue;
            };
            let cam = &v[0];
            frames.fps_sum_milli.fetch_add(
                (cam["fps"].as_f64().unwrap_or(0.0) * 1000.0) as u64,
                Ordering::SeqCst,
            );
            frames.fps_samples.fetch_add(1, Ordering::SeqCst);
            frames
                .dropped
                .store(cam["dropped"].as_u64().unwrap_or(0), Ordering::SeqCst);
        }
    });
}

fn client_no_timeout() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let clients: usize = env_or("LOAD_CLIENTS", CLIENTS);
    let pause = Duration::from_millis(env_or("LOAD_PAUSE_MS", PAUSE.as_millis() as u64));
    let load_dur = Duration::from_secs(env_or("LOAD_SECS", LOAD.as_secs()));
    let idle = Duration::from_secs(env_or("IDLE_SECS", IDLE.as_secs()));
    let unbounded = Duration::from_secs(env_or("UNBOUNDED_SECS", UNBOUNDED.as_secs()));
    let camera_fps: f64 = env_or("CAMERA_FPS", CAMERA_FPS);

    let bin = faced_bin();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("faced.db");
    let db_s = db.to_str().unwrap();
    let faces = faces_dir();
    let photo = |f: &str| faces.join(f).to_str().unwrap().to_string();
    eprintln!("faced binary: {}", bin.display());
    eprintln!("enrolling two people, adding console user {USER:?} …");
    let (a1, a2) = (photo("img1.jpg"), photo("img2.jpg"));
    run_cli(&["enroll", "--db", db_s, "--name", "Alice", &a1, &a2], None);
    let bob = person_photos("person02");
    let bob: Vec<String> = bob.iter().take(2).map(|f| photo(f)).collect();
    let mut args = vec!["enroll", "--db", db_s, "--name", "Bob"];
    args.extend(bob.iter().map(String::as_str));
    run_cli(&args, None);
    run_cli(
        &["user", "--db", db_s, "add", "--admin", USER],
        Some(&format!("{PASSWORD}\n")),
    );

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("faced.toml");
    std::fs::write(&config, "# everything from FACED_* variables\n").unwrap();
    let log = dir.path().join("faced.log");
    let fps_s = camera_fps.to_string();
    let env: Vec<(&str, String)> = vec![
        ("FACED_GALLERY__DB", db_s.to_string()),
        ("FACED_MQTT__ENABLED", "false".into()),
        ("FACED_WEB__ENABLED", "true".into()),
        ("FACED_WEB__LISTEN", format!("127.0.0.1:{port}")),
        ("FACED_CAMERAS__0__NAME", "front".into()),
        (
            "FACED_CAMERAS__0__SOURCE",
            format!("dir:{}", faces.display()),
        ),
        ("FACED_CAMERAS__0__FPS", fps_s),
        ("FACED_CAMERAS__0__FRAMES_PER_IMAGE", "5".into()),
        ("FACED_EVENTS__COOLDOWN_SECS", "0".into()),
        ("FACED_EVENTS__UNKNOWN_COOLDOWN_SECS", "0".into()),
        ("FACED_LOG", "info".into()),
    ];
    let mut cmd = Command::new(&bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("FACED_CONFIG");
    for (k, v) in &env {
        cmd.env(k, v);
    }
    eprintln!(
        "starting faced run on {base} (camera dir:{} at {camera_fps} fps) …",
        faces.display()
    );
    let daemon = Daemon {
        child: cmd.spawn().expect("cannot start faced run"),
        log,
    };
    let pid = daemon.child.id();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async move {
        let c = client();
        // Wait for the console.
        let t = Instant::now();
        loop {
            if let Ok(r) = c.get(format!("{base}/api/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the console did not come up; log:\n{}",
                daemon.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let token = api_token(&c, &base).await;
        eprintln!("signed in, API token created; pipeline warming up (at least {WARMUP:?}, until 100 events) …");

        let frames = Arc::new(Frames::default());
        let stop = Arc::new(AtomicBool::new(false));
        monitor(base.clone(), token.clone(), frames.clone(), stop.clone());
        // Until the default page of the Events view is full (100 events), at least WARMUP.
        let events_url = format!("{base}/api/events");
        let t = Instant::now();
        let probe = loop {
            let probe: Value = get_json(&c, &events_url, &token).await;
            let n = probe.as_array().map_or(0, Vec::len);
            if (n >= 100 && t.elapsed() >= WARMUP) || t.elapsed() > Duration::from_secs(180) {
                break probe;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        let all: Value = get_json(&c, format!("{base}/api/events?limit=500&include_left=true"), &token).await;
        let page = probe.as_array().map_or(0, Vec::len);
        let body_len = serde_json::to_vec(&probe).unwrap().len();
        eprintln!(
            "event log: {} events (up to 500 counted), GET /api/events returns {page} ({body_len} bytes)",
            all.as_array().map_or(0, Vec::len)
        );

        eprintln!("before: {idle:?} without load …");
        let s0 = snap(&frames, pid);
        tokio::time::sleep(idle).await;
        let s1 = snap(&frames, pid);
        eprintln!(
            "bounded: {clients} clients, {pause:?} pause, {load_dur:?} (load {}) …",
            loadavg()
        );
        let bounded = load(&events_url, &token, clients, pause, load_dur).await;
        let s2 = snap(&frames, pid);
        eprintln!("after: {idle:?} without load …");
        tokio::time::sleep(idle).await;
        let s3 = snap(&frames, pid);
        let unb = if unbounded.is_zero() {
            None
        } else {
            eprintln!("unbounded: {clients} clients, no pause, {unbounded:?} …");
            let r = load(&events_url, &token, clients, Duration::ZERO, unbounded).await;
            Some((r, phase(&s3, &snap(&frames, pid))))
        };
        stop.store(true, Ordering::Relaxed);
        let (before, during, after) = (phase(&s0, &s1), phase(&s1, &s2), phase(&s2, &s3));
        let report: Value = get_json(&c, format!("{base}/api/reports"), &token).await;

        let mut rep = String::new();
        let w = &mut rep;
        use std::fmt::Write as _;
        let _ = writeln!(
            w,
            "\nfaced {} · {} CPUs · camera dir: {camera_fps} fps, 5 frames per photo · {} recognized/unknown events in the log at the end · GET /api/events = newest {page} ({body_len} bytes)\n",
            bin.display(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            report["recognized"].as_u64().unwrap_or(0) + report["unknown"].as_u64().unwrap_or(0),
        );
        let _ = writeln!(
            w,
            "| run | clients | pause | requests | errors | req/s | median ms | p95 ms | p99 ms | max ms |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
        let mut row = |name: &str, p: Duration, r: &LoadResult| {
            let _ = writeln!(
                w,
                "| {name} | {clients} | {} ms | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
                p.as_millis(),
                r.requests,
                r.errors,
                r.requests as f64 / r.secs,
                r.pct(0.5),
                r.pct(0.95),
                r.pct(0.99),
                r.lat_us.last().map_or(f64::NAN, |&m| m as f64 / 1000.0),
            );
        };
        row(&format!("bounded {:.0} s", bounded.secs), pause, &bounded);
        if let Some((r, _)) = &unb {
            row(&format!("unbounded {:.0} s (info)", r.secs), Duration::ZERO, r);
        }
        let _ = writeln!(
            w,
            "\n| pipeline | processed fps | daemon fps (mean) | dropped frames | faced CPU (cores) | machine CPU (cores) | load avg 1/5/15: start → end |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|");
        let mut prow = |name: &str, p: &FramePhase| {
            let _ = writeln!(
                w,
                "| {name} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {} → {} |",
                p.fps, p.daemon_fps, p.dropped, p.daemon_cores, p.machine_cores, p.load.0, p.load.1
            );
        };
        prow("before (no load)", &before);
        prow("during bounded load", &during);
        prow("after (no load)", &after);
        if let Some((_, p)) = &unb {
            prow("during unbounded load (info)", p);
        }
        let base_fps = (before.fps + after.fps) / 2.0;
        let drop_pct = (1.0 - during.fps / base_fps) * 100.0;
        let _ = writeln!(
            w,
            "\nframe-rate drop under bounded load: {drop_pct:.1} % (processed fps during vs the mean of before and after)"
        );
        if let Some((_, p)) = &unb {
            let _ = writeln!(
                w,
                "frame-rate drop under unbounded load: {:.1} %",
                (1.0 - p.fps / base_fps) * 100.0
            );
        }
        for e in &bounded.first_errors {
            let _ = writeln!(w, "bounded error: {e}");
        }
        if let Some((r, _)) = &unb {
            for e in &r.first_errors {
                let _ = writeln!(w, "unbounded error: {e}");
            }
        }
        let ok = bounded.errors == 0 && bounded.pct(0.99) < 100.0 && drop_pct <= 10.0;
        let _ = writeln!(
            w,
            "\ntarget (bounded: no errors, p99 < 100 ms, fps drop ≤ 10 %): {}",
            if ok { "PASS" } else { "FAIL" }
        );
        println!("{rep}");
        let status = daemon.tail();
        if status.contains("panicked") || status.contains(" ERROR ") {
            println!("faced log tail:\n{status}");
        }
        drop(daemon);
        ok
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    if !ok {
        std::process::exit(1);
    }
}

/// File names of `person` in `labels.csv`.
fn person_photos(person: &str) -> Vec<String> {
    let text = std::fs::read_to_string(faces_dir().join("labels.csv")).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.get(1) == Some(&person)).then(|| f[0].to_string())
        })
        .collect()
}

/// Signs in with the password and creates an API token, as a script's setup would.
/// GET `url` with the API token; the JSON body.
async fn get_json(c: &reqwest::Client, url: impl reqwest::IntoUrl, token: &str) -> Value {
    c.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn api_token(c: &reqwest::Client, base: &str) -> String {
    let r = c
        .post(format!("{base}/api/login"))
        .json(&json!({"name": USER, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "login: {}", r.status());
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("faced_session="))
        .and_then(|v| v.split(';').next())
        .expect("no session cookie")
        .to_string();
    let me: Value = r.json().await.unwrap();
    let csrf = me["csrf"].as_str().unwrap().to_string();
    let r = c
        .post(format!("{base}/api/tokens"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"label": "console load bench"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create token: {}", r.status());
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_string()
}
