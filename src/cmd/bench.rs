//! `faced bench`: the whole pipeline (detect, track, embed, match, events) on a synthetic
//! 640×480 stream, made exactly as `../shared/bench/refpipe.py --bench` makes it: each image
//! thumbnail-fitted and centred on black, held for `--hold` frames, shifted `frame % 5` pixels
//! right each frame. Prints one JSON line; with `--reference` also runs the Python reference on
//! the same images in the same run and adds its JSON and the fps ratio.
//!
//! With `--source SPEC` the frames come from a real camera source instead (`rtsp://`, `http://`,
//! `exec:`, `dir:`), at the camera's own rate for `--seconds`, on the real clocks: the whole
//! pipeline including receiving and decoding the stream. It adds the source's decode time per
//! frame (sources that decode a video stream themselves report it) and the CPU this process used,
//! as a share of one core.
//!
//! The gallery is a temporary database with each image's largest face enrolled (`bench-1`, …),
//! so matches and `recognized` events happen; the event cool-down is 0 so every new track
//! reports. Frame→event latency is capture of the frame to the commit of its event.
//!
//! Time to recognition: a face *appears* on a detection pass that finds a face after passes that
//! found none (five in a row), or after a scene cut; it is recognized at the first frame whose
//! processing returns a `recognized` event. Reported in frames (1 = recognized on the frame the
//! face appeared in) and in ms at the stream's rate (the frames in between at the camera's
//! interval, plus the processing of the last one).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use faced::base::SimulatedClocks;
use faced::capture::{Frame, convert};
use faced::config::{CameraConfig, Config, RawConfig, stream_detector};
use faced::events::store::{EventStore, EventWriter, StoreOptions};
use faced::gallery::{Gallery, GalleryOptions, NewSample, SampleKind};
use faced::pipeline::{Processor, encode_jpeg};
use faced::vision::detect::DetectorConfig;
use faced::vision::image::ImageLimits;
use faced::vision::{Analyzer, InferenceConfig};
use serde_json::json;

/// Benchmark the pipeline on a stream made from photos (same stream as refpipe.py --bench).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Frames to process.
    #[arg(long, default_value_t = 200)]
    pub frames: usize,
    /// Frames each image is held for.
    #[arg(long, default_value_t = 15)]
    pub hold: usize,
    /// XNNPACK threads per model (the reference gets the same number).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Model precision: auto (the CPU decides, as `faced run` does), float, float_stock (the
    /// published MobileFaceNet file), int8 or dynamic_int8. The reference always runs the
    /// published float files.
    #[arg(long, default_value = "auto")]
    pub precision: faced::models::Precision,
    /// The stream's own frame rate: the pipeline's clock (track ages, cool-downs, event times)
    /// moves by 1/F s per frame, whatever the speed of this machine, so the work done per frame
    /// is the same on a fast PC, a Pi and under an emulator (scripts/arm-cost counts it).
    #[arg(long, default_value_t = 15.0)]
    pub stream_fps: f64,
    /// Re-embed a live track every N detections (the camera's `embed_every`).
    #[arg(long, default_value_t = 10)]
    pub embed_every: u32,
    /// Also run the Python reference (../shared/bench/refpipe.py, with python3 or
    /// $FACED_REFPIPE_PYTHON) on the same images and print the ratio.
    #[arg(long)]
    pub reference: bool,
    /// Also publish every event through the MQTT outbox to the broker at HOST:PORT, subscribe
    /// to it, and report frame capture → event received by a subscriber (`publish_latency_ms`).
    #[arg(long, value_name = "HOST:PORT")]
    pub mqtt: Option<String>,
    /// Read frames from this camera source (as `cameras[].source`: rtsp://, http://, exec:,
    /// dir:) instead of making the synthetic stream; the images are still enrolled.
    #[arg(long, value_name = "SPEC")]
    pub source: Option<String>,
    /// With --source: how long to read it.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// With --source exec:…: what the command writes (mjpeg, yuv420, rgb24).
    #[arg(long, default_value = "mjpeg")]
    pub exec_format: String,
    /// With --source: the frame size of raw exec: formats and of dir: canvases.
    #[arg(long, default_value = "640x480")]
    pub size: String,
    /// Images to enroll (and, without --source, to play).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Time to recognition, followed frame by frame (definition in the module docs).
#[derive(Default)]
struct Ttr {
    /// The frame index and stream time at which the face in view appeared, if one is.
    start: Option<(u64, Duration)>,
    recognized: bool,
    empty_passes: u32,
    appearances: u64,
    frames: Vec<f64>,
    ms: Vec<f64>,
}

impl Ttr {
    /// One processed frame: `idx` and `at` (its time in the stream), whether a detection pass ran
    /// and found faces, whether the frame is a scene cut, whether processing it gave a
    /// `recognized` event, and how long its processing took after it was captured.
    #[allow(clippy::too_many_arguments)]
    fn frame(
        &mut self,
        idx: u64,
        at: Duration,
        pass: bool,
        faces: bool,
        cut: bool,
        recognized: bool,
        latency: Duration,
    ) {
        if cut {
            self.start = None;
        }
        if pass && faces {
            self.empty_passes = 0;
            if self.start.is_none() {
                self.start = Some((idx, at));
                self.recognized = false;
                self.appearances += 1;
            }
        } else if pass && self.start.is_some() {
            self.empty_passes += 1;
            if self.empty_passes >= 5 {
                self.start = None;
            }
        }
        if let (true, false, Some((i0, t0))) = (recognized, self.recognized, self.start) {
            self.frames.push((idx - i0 + 1) as f64);
            self.ms
                .push((at.saturating_sub(t0) + latency).as_secs_f64() * 1000.0);
            self.recognized = true;
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "appearances": self.appearances,
            "recognized": self.frames.len(),
            "frames": { "median": pct(&mut self.frames.clone(), 0.5), "p95": pct(&mut self.frames.clone(), 0.95) },
            "ms": { "median": pct(&mut self.ms.clone(), 0.5), "p95": pct(&mut self.ms.clone(), 0.95) },
        })
    }
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn pct(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    Some((v[i] * 1000.0).round() / 1000.0)
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.frames == 0 || args.hold == 0 {
        bail!("--frames and --hold must be at least 1");
    }
    if !(args.stream_fps > 0.0 && args.stream_fps <= 1000.0) {
        bail!("--stream-fps must be in (0, 1000]");
    }
    let frame_interval = Duration::from_secs_f64(1.0 / args.stream_fps);
    let inf = InferenceConfig {
        threads: args.threads,
        precision: args.precision,
        ..Default::default()
    };
    let tmp = tempdir()?;
    let db = tmp.join("bench.db");

    // Frames, and a gallery with each image's largest face.
    let mut bases = Vec::new();
    let mut gallery = Gallery::open(&db, &GalleryOptions::default())?;
    let mut enroller = Analyzer::open(&inf, DetectorConfig::default())?;
    for (i, p) in args.images.iter().enumerate() {
        let img = faced::vision::image::load(p, &ImageLimits::default())?;
        if let Some(face) = enroller
            .analyze(&img)?
            .into_iter()
            .max_by(|a, b| a.detection.width().total_cmp(&b.detection.width()))
        {
            let id = gallery.add_person(&format!("bench-{}", i + 1))?;
            let crop = encode_jpeg(&face.aligned, 90)?;
            gallery.add_sample(
                id,
                NewSample {
                    kind: SampleKind::Positive,
                    embedding: &face.embedding,
                    crop_jpeg: &crop,
                    quality_json: "{}",
                    source: "bench",
                },
            )?;
        }
        bases.push(convert::letterbox(&img, 640, 480));
    }
    drop(enroller);
    let key = gallery.key_path().to_path_buf();
    let gallery = Arc::new(Mutex::new(gallery));

    let mut raw = RawConfig {
        inference: inf.clone(),
        ..Default::default()
    };
    raw.gallery.db = db.clone();
    raw.events.cooldown_secs = 0.0;
    raw.events.unknown_cooldown_secs = 0.0;
    let (width, height) = args
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .with_context(|| format!("--size {:?}: expected WxH, e.g. 640x480", args.size))?;
    raw.cameras = vec![CameraConfig {
        name: "bench".into(),
        source: args.source.clone().unwrap_or_else(|| "pattern".into()),
        exec_format: serde_json::from_value(json!(args.exec_format))
            .with_context(|| format!("--exec-format {:?}", args.exec_format))?,
        width,
        height,
        fps: args.stream_fps as f32,
        embed_every: args.embed_every,
        detector: stream_detector(),
        ..CameraConfig::default()
    }];
    let cfg = Config::validate(raw, None, Vec::new())?;
    // A live source runs on the real clocks; the synthetic stream on a simulated one.
    let sim = Arc::new(SimulatedClocks::new());
    let clock: Arc<dyn faced::base::Clocks> = if args.source.is_some() {
        Arc::new(faced::base::RealClocks)
    } else {
        sim.clone()
    };
    let store = EventStore::open(
        &db,
        &key,
        StoreOptions::from(&cfg.raw.events),
        clock.clone(),
    )?;
    let mut store = store;
    let mqtt = match &args.mqtt {
        Some(addr) => Some(MqttProbe::start(addr, &db, &mut store)?),
        None => None,
    };
    let writer = EventWriter::spawn(store)?;
    let mut stored = writer.subscribe();
    let mut proc = Processor::new(&cfg, gallery, Some(writer.sender()), clock.clone())?;

    // Warm-up (first inference allocates): one frame, not counted.
    proc.process(0, &Frame::now(bases[0].clone(), 0))?;
    proc.finish();
    writer.sender().flush();
    while stored.try_recv().is_ok() {}
    proc.stats = Default::default();

    let mut ttr = Ttr::default();
    let mut step = |proc: &mut Processor, idx: u64, at: Duration, frame: &Frame| {
        let (passes, faces) = (proc.stats.detect_passes, proc.stats.faces);
        let started = Instant::now();
        let events = proc.process(0, frame)?;
        // Synthetic frames are made just before processing; a camera's were captured earlier.
        let latency = if args.source.is_some() {
            frame.captured.elapsed()
        } else {
            started.elapsed()
        };
        let recognized = events
            .iter()
            .any(|e| e.kind == faced::events::EventKind::Recognized);
        ttr.frame(
            idx,
            at,
            proc.stats.detect_passes > passes,
            proc.stats.faces > faces,
            frame.cut,
            recognized,
            latency,
        );
        anyhow::Ok(())
    };
    let mut source_out = None;
    let t0 = Instant::now();
    let cpu0 = cpu_time();
    let mut n_frames = args.frames;
    if let Some(spec) = &args.source {
        let cam = &cfg.cameras[0];
        let mut src = faced::capture::open(cam)
            .with_context(|| format!("cannot open {}", cam.source.redacted()))?;
        let (mut n, mut bad, mut first) = (0u64, 0u64, None::<Instant>);
        while t0.elapsed().as_secs_f64() < args.seconds {
            match src.next_frame() {
                Ok(frame) => {
                    let origin = *first.get_or_insert(frame.captured);
                    n += 1;
                    step(&mut proc, n, frame.captured.duration_since(origin), &frame)?;
                }
                Err(faced::capture::CaptureError::BadFrame(_)) => bad += 1,
                Err(faced::capture::CaptureError::End) => break,
                Err(e) => bail!("{}: {e}", faced::capture::redact_credentials(spec)),
            }
        }
        n_frames = n as usize;
        let dec = src.decode_stats();
        source_out = Some(json!({
            "source": faced::capture::redact_credentials(spec),
            "frames_received": n,
            "bad_frames": bad,
            "receive_fps": r3(n as f64 / t0.elapsed().as_secs_f64()),
            "decoded_frames": dec.map(|d| d.frames),
            "decode_ms": dec.map(|d| r3(d.decode.as_secs_f64() * 1000.0 / d.frames.max(1) as f64)),
        }));
        if n == 0 {
            bail!("no frame from the source in {} s", args.seconds);
        }
    } else {
        for i in 0..args.frames {
            sim.advance(frame_interval);
            let base = &bases[(i / args.hold) % bases.len()];
            let mut frame = Frame::now(convert::shift_right(base, (i % 5) as u32), i as u64 + 1);
            // A new photo is a new scene (as a dir: camera marks it): its faces are new tracks.
            frame.cut = i > 0 && i % args.hold == 0 && bases.len() > 1;
            step(&mut proc, i as u64, frame_interval * i as u32, &frame)?;
        }
    }
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    proc.finish();
    writer.sender().flush();
    let s = proc.stats;
    let mut latencies = Vec::new();
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    let mut captured = std::collections::HashMap::new();
    while let Ok(e) = stored.try_recv() {
        *counts.entry(e.event.kind.as_str()).or_default() += 1;
        if let Some(c) = e.event.frame_captured {
            latencies.push(e.committed.saturating_duration_since(c).as_secs_f64() * 1000.0);
            captured.insert(e.event.event_id, c);
        }
    }
    writer.shutdown();
    let publish = mqtt.map(|m| m.finish(&captured));
    let n = n_frames as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let fps = n / wall.as_secs_f64();
    let mut out = json!({
        "frames": n_frames,
        "faces": s.faces,
        "embeds": s.embeds,
        "fps": r3(fps),
        "detect_ms": r3(ms(s.detect) / n),
        "embed_ms_per_face": r3(ms(s.embed) / (s.embeds.max(1) as f64)),
        "track_ms": r3(ms(s.track) / n),
        "match_ms": r3(ms(s.matching) / n),
        "events_ms": r3(ms(s.events) / n),
        "events": counts,
        "event_latency_ms": { "median": pct(&mut latencies.clone(), 0.5), "p99": pct(&mut latencies, 0.99) },
        "threads": args.threads,
        "precision": args.precision.resolve().as_str(),
        "publish_latency_ms": publish,
        "hold": args.hold,
        "images": args.images.len(),
        "time_to_recognition": ttr.json(),
        "cpu_share_of_one_core": r3(cpu.as_secs_f64() / wall.as_secs_f64()),
    });
    if let Some(src) = source_out {
        out["source"] = src;
    }
    if args.reference {
        let r = reference(&args)?;
        let ref_fps = r.get("fps").and_then(|v| v.as_f64()).unwrap_or(0.0);
        out["reference"] = r;
        out["ratio"] = json!(if ref_fps > 0.0 {
            r3(fps / ref_fps)
        } else {
            0.0
        });
    }
    println!("{out}");
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(ExitCode::SUCCESS)
}

/// `--mqtt`: the daemon's MQTT path (outbox sink → publisher thread → broker) plus a subscriber
/// that notes when each event arrives.
struct MqttProbe {
    /// Keeps the publisher running until the probe is dropped.
    _handle: faced::mqtt::MqttHandle,
    received: Arc<Mutex<std::collections::HashMap<i64, Instant>>>,
    _client: rumqttc::Client,
}

impl MqttProbe {
    fn start(addr: &str, db: &Path, store: &mut EventStore) -> anyhow::Result<MqttProbe> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .with_context(|| format!("--mqtt {addr:?}: expected HOST:PORT"))?;
        let cfg = faced::mqtt::MqttConfig {
            enabled: true,
            host: host.clone(),
            port: Some(port),
            discovery: false,
            commands: false,
            ..Default::default()
        };
        let (handle, _commands) = faced::mqtt::Mqtt::start(&cfg, "bench", db)?;
        store.add_sink(Box::new(faced::events::mqtt_sink::MqttSink::new(
            handle.clone(),
        )));
        let received = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let mut opts = rumqttc::MqttOptions::new(
            format!("faced-bench-sub-{}", std::process::id()),
            host,
            port,
        );
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut conn) = rumqttc::Client::new(opts, 1000);
        client
            .subscribe("faced/bench/events", rumqttc::QoS::AtLeastOnce)
            .context("cannot subscribe to the bench broker")?;
        let (rx, subscribed) = (received.clone(), std::sync::mpsc::channel());
        std::thread::spawn(move || {
            for n in conn.iter() {
                match n {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = subscribed.0.send(());
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let at = Instant::now();
                        if let Some(id) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                            .ok()
                            .and_then(|v| v["event_id"].as_i64())
                        {
                            rx.lock().unwrap_or_else(|e| e.into_inner()).insert(id, at);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        subscribed
            .1
            .recv_timeout(Duration::from_secs(10))
            .with_context(|| format!("no MQTT broker answered at {addr}"))?;
        Ok(MqttProbe {
            _handle: handle,
            received,
            _client: client,
        })
    }

    /// Waits (≤ 10 s) for every event to arrive; median and p99 of capture → received.
    fn finish(self, captured: &std::collections::HashMap<i64, Instant>) -> serde_json::Value {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let n = self
                .received
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len();
            if n >= captured.len() || Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let got = self.received.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<f64> = captured
            .iter()
            .filter_map(|(id, c)| {
                got.get(id)
                    .map(|r| r.duration_since(*c).as_secs_f64() * 1000.0)
            })
            .collect();
        let missing = captured.len() - v.len();
        drop(got);
        json!({
            "median": pct(&mut v.clone(), 0.5),
            "p99": pct(&mut v, 0.99),
            "events": captured.len(),
            "missing": missing,
        })
    }
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("faced-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    Ok(d)
}

fn reference(args: &Args) -> anyhow::Result<serde_json::Value> {
    let script = std::env::var_os("FACED_REFPIPE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/refpipe.py")
        });
    if !script.is_file() {
        bail!(
            "reference script {} not found; set FACED_REFPIPE to refpipe.py",
            script.display()
        );
    }
    let python = std::env::var("FACED_REFPIPE_PYTHON").unwrap_or_else(|_| "python3".into());
    let models = faced::models::locate(None, &faced::models::BLAZEFACE_SHORT)?;
    let models_dir = models.parent().unwrap_or(Path::new("."));
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg("--bench")
        .args([
            "--frames",
            &args.frames.to_string(),
            "--hold",
            &args.hold.to_string(),
        ])
        .args(["--threads", &args.threads.to_string()])
        .arg(models_dir)
        .args(&args.images)
        .output()
        .with_context(|| {
            format!("cannot run {python} (set FACED_REFPIPE_PYTHON to the reference's venv python)")
        })?;
    if !out.status.success() {
        bail!(
            "reference failed ({}): {}; its venv: python3 -m venv /tmp/ref && /tmp/ref/bin/pip install \
             ai-edge-litert==2.3.0 numpy pillow, then FACED_REFPIPE_PYTHON=/tmp/ref/bin/python",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let last = line
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("reference printed no JSON: {line}"))
}
