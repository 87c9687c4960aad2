//! The daemon with real parts: a real SQLite file, the real models on the fixture photos, the
//! real `faced` binary for process-level behaviour (missing camera, signals, W^X memory, GPIO,
//! configuration errors at start, LiteRT's stderr).
//!
//! GPIO runs on the `fake` backend (`gpio.backend = "fake"`), because GPIO pins cannot exist on
//! the build machine. What the tests see of it is the fake's documented protocol (docs/gpio.md,
//! src/gpio/fake.rs): one INFO line per output level change (`fake gpio: pin 17 -> high
//! (relay)`, and `… -> low (relay) after N ms`), and a PIR input that reads the file
//! `gpio.fake_pir_file` (`1` = motion).
//!
//! The end-to-end test enrolls two people from some of their photos, plays other photos of
//! them and of a stranger through a `dir:` camera, and checks the stored events — what the MQTT
//! outbox gets, since the outbox rows are written in the same transaction.

use crate::util::daemon as daemon_util;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon_util::*;
use faced::base::SimulatedClocks;
use faced::events::store::{EventStore, StoreOptions};
use faced::events::{Event, EventKind};

fn stored_events(dir: &std::path::Path, key: &std::path::Path) -> (EventStore, Vec<Event>) {
    let store = EventStore::open(
        &dir.join("faced.db"),
        key,
        StoreOptions {
            retention_days: 0,
            retention_count: 0,
            snapshots: true,
        },
        Arc::new(SimulatedClocks::new()),
    )
    .unwrap();
    let mut ev = store.recent(1000, None).unwrap();
    ev.reverse();
    (store, ev)
}

#[test]
fn recognizes_enrolled_people_and_reports_a_stranger_once_per_cooldown() {
    let people = photos_by_person();
    let p1: Vec<&str> = people["person01"].iter().map(String::as_str).collect();
    let p2: Vec<&str> = people["person02"].iter().map(String::as_str).collect();
    let stranger = people["person05"][0].as_str();

    let tmp = tempdir();
    let dir = tmp.path();
    let mut g = gallery(dir);
    let mut an = still_analyzer();
    let alice = enroll(&mut g, &mut an, "alice", &p1[..3]);
    let bob = enroll(&mut g, &mut an, "bob", &p2[..3]);
    drop(an);
    let key = g.key_path().to_path_buf();

    // Two unseen photos of each, then the stranger: alice, alice, bob, bob, stranger.
    let play = play_dir(dir, &[p1[3], p1[4], p2[3], p2[4], stranger]);
    let mut cfg = config(dir, &play, 4, 40.0);
    cfg.raw.events.cooldown_secs = 60.0;
    cfg.raw.events.unknown_cooldown_secs = 0.0;

    let clock = Arc::new(SimulatedClocks::new()); // frozen: everything is within the cool-down
    let (pipeline, writer) = start_pipeline(&cfg, g, &key, clock);
    let handle = pipeline.handle();
    // Lossless playback: every frame reaches the vision thread, however loaded the machine.
    wait_finished(&handle, Duration::from_secs(120));
    assert_eq!(handle.stats()[0].dropped, 0);
    pipeline.stop();
    writer.shutdown();

    let (store, events) = stored_events(dir, &key);
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {:?} {:?} track {}",
                e.kind.as_str(),
                e.person,
                e.similarity,
                e.track_id
            )
        })
        .collect();
    let recognized: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::Recognized)
        .collect();
    let unknown: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::Unknown)
        .collect();
    // One recognized per person: the second photo of each is a new track within the cool-down.
    assert_eq!(recognized.len(), 2, "{summary:#?}");
    assert_eq!(
        recognized[0].person.as_deref(),
        Some("alice"),
        "{summary:#?}"
    );
    assert_eq!(recognized[0].person_id, Some(alice.0));
    assert_eq!(recognized[1].person.as_deref(), Some("bob"), "{summary:#?}");
    assert_eq!(recognized[1].person_id, Some(bob.0));
    assert_eq!(unknown.len(), 1, "{summary:#?}");
    assert!(unknown[0].person.is_none() && unknown[0].person_id.is_none());
    // Every reported track ends with a left event.
    let left = events.iter().filter(|e| e.kind == EventKind::Left).count();
    assert_eq!(left, 3, "{summary:#?}");

    for e in recognized.iter().chain(&unknown) {
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["camera"], "front");
        assert!(v["event_id"].as_i64().unwrap() > 0);
        assert!(v["track_id"].as_u64().unwrap() >= 1);
        let b: Vec<f64> = v["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!(
            b.len() == 4 && b[0] < b[2] && b[1] < b[3] && b[2] <= 641.0 && b[3] <= 481.0,
            "{b:?}"
        );
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(v["ts_ms"].as_i64().unwrap() > 1_600_000_000_000);
        assert_eq!(v["snapshot"], true);
        let jpeg = store.snapshot(e.event_id).unwrap().unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "snapshot decrypts to a JPEG");
    }
    for r in &recognized {
        assert!(r.similarity.unwrap() >= 0.5, "{summary:#?}");
    }
    assert!(unknown[0].similarity.is_none_or(|s| s < 0.5));
    // A left event carries the duration and the person.
    let l = events
        .iter()
        .find(|e| e.kind == EventKind::Left && e.person.as_deref() == Some("alice"))
        .unwrap();
    assert!(l.duration_ms.is_some());
}

#[test]
fn cooldown_expiry_reports_the_person_again() {
    let people = photos_by_person();
    let p1: Vec<&str> = people["person01"].iter().map(String::as_str).collect();
    let tmp = tempdir();
    let dir = tmp.path();
    let mut g = gallery(dir);
    let mut an = still_analyzer();
    enroll(&mut g, &mut an, "alice", &p1[..3]);
    drop(an);
    let cfg = config(dir, &play_dir(dir, &[p1[3]]), 3, 40.0);
    let clock = Arc::new(SimulatedClocks::new());
    let mut proc =
        faced::pipeline::Processor::new(&cfg, Arc::new(Mutex::new(g)), None, clock.clone())
            .unwrap();
    let img = faced::capture::convert::letterbox(
        &faced::vision::image::load(&faces_dir().join(p1[3]), &Default::default()).unwrap(),
        640,
        480,
    );
    let frame = |seq| faced::capture::Frame::now(img.clone(), seq);
    let mut kinds = Vec::new();
    for i in 0..3 {
        kinds.extend(
            proc.process(0, &frame(i))
                .unwrap()
                .into_iter()
                .map(|e| e.kind),
        );
    }
    assert_eq!(kinds, vec![EventKind::Recognized]);
    // Gone for longer than the track's patience, back within the cool-down: nothing new.
    let blank = faced::capture::Frame::now(image::RgbImage::new(640, 480), 10);
    for _ in 0..7 {
        kinds.extend(proc.process(0, &blank).unwrap().into_iter().map(|e| e.kind));
    }
    assert_eq!(kinds, vec![EventKind::Recognized, EventKind::Left]);
    clock.advance(Duration::from_secs(30));
    for i in 0..2 {
        kinds.extend(
            proc.process(0, &frame(20 + i))
                .unwrap()
                .into_iter()
                .map(|e| e.kind),
        );
    }
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    for _ in 0..7 {
        proc.process(0, &blank).unwrap();
    }
    // After the cool-down (60 s since the last sighting): reported again.
    clock.advance(Duration::from_secs(61));
    let ev = proc.process(0, &frame(40)).unwrap();
    assert_eq!(
        ev.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Recognized]
    );
}

#[test]
fn missing_camera_is_logged_and_retried_and_sigterm_exits_cleanly() {
    let tmp = tempdir();
    let db = tmp.path().join("faced.db");
    let d = Daemon::start(
        &["--source", "v4l2:/dev/video99"],
        &[
            ("FACED_GALLERY__DB", db.to_str().unwrap()),
            ("FACED_CONFIG", "/nonexistent/faced.toml"),
            ("FACED_LOG", "info"),
        ],
    );
    // FACED_CONFIG names a missing file explicitly: that is an error (exit 2), not the default.
    let mut d = d;
    assert_eq!(d.wait(Duration::from_secs(30)), Some(2));
    assert!(d.count("/nonexistent/faced.toml") > 0);

    let mut d = Daemon::start(
        &["--source", "v4l2:/dev/video99"],
        &[
            ("FACED_GALLERY__DB", db.to_str().unwrap()),
            ("FACED_LOG", "info"),
        ],
    );
    d.wait_for(
        &["/dev/video99 does not exist", "retrying"],
        Duration::from_secs(60),
    );
    d.wait_for(&["ready"], Duration::from_secs(30));
    let t = std::time::Instant::now();
    while d.count("/dev/video99 does not exist") < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "no retry logged");
        std::thread::sleep(Duration::from_millis(100));
    }
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
    d.wait_for(&["stopped cleanly"], Duration::from_secs(1));
}

#[test]
fn plays_a_folder_and_stores_events_as_a_subprocess() {
    let people = photos_by_person();
    let p1: Vec<&str> = people["person01"].iter().map(String::as_str).collect();
    let tmp = tempdir();
    let dir = tmp.path();
    let mut g = gallery(dir);
    let mut an = still_analyzer();
    enroll(&mut g, &mut an, "alice", &p1[..3]);
    let key = g.key_path().to_path_buf();
    drop((g, an));
    let play = play_dir(dir, &[p1[3]]);
    let toml = format!(
        "[device]\nid = \"test\"\n[gallery]\ndb = \"{}\"\n[[cameras]]\nname = \"front\"\nsource = \"dir:{}\"\nfps = 10.0\nframes_per_image = 3\n",
        dir.join("faced.db").display(),
        play.display()
    );
    let cfgp = dir.join("faced.toml");
    std::fs::write(&cfgp, toml).unwrap();
    let mut d = Daemon::start(&["--config", cfgp.to_str().unwrap()], &[]);
    d.wait_for(&["ready"], Duration::from_secs(60));
    let t = std::time::Instant::now();
    loop {
        let (_, ev) = stored_events(dir, &key);
        if ev
            .iter()
            .any(|e| e.kind == EventKind::Recognized && e.person.as_deref() == Some("alice"))
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no recognized event; log:\n{}",
            d.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.signal(libc::SIGHUP);
    d.wait_for(&["gallery reloaded"], Duration::from_secs(20));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
}

/// `MemoryDenyWriteExecute=yes` in systemd/faced.service is only safe if LiteRT/XNNPACK never
/// maps writable+executable memory (a JIT would). Run the models under the kernel's MDWE.
#[test]
fn inference_works_without_wx_memory() {
    use std::os::unix::process::CommandExt;
    let img = faces_dir().join("img1.jpg");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_faced"));
    cmd.args([
        "bench",
        "--frames",
        "20",
        "--hold",
        "5",
        img.to_str().unwrap(),
    ]);
    // PR_SET_MDWE = 65, PR_MDWE_REFUSE_EXEC_GAIN = 1 (Linux ≥ 6.3); inherited across exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(65, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.output() {
        Ok(out) => assert!(
            out.status.success(),
            "inference failed under MDWE: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            eprintln!("kernel without PR_SET_MDWE: skipped")
        }
        Err(e) => panic!("{e}"),
    }
}

// The tests that run the models in a `faced` subprocess take turns with every heavy test of the
// other modules: the machine has two cores, and the timing assertions (pulse length) must not
// depend on a neighbour test's load.
use crate::util::alone as heavy;

/// The number after `name=` in a log line (`frames_detected=12`).
fn field(line: &str, name: &str) -> u64 {
    let pat = format!("{name}=");
    let rest = &line[line
        .find(&pat)
        .unwrap_or_else(|| panic!("no {pat} in {line:?}"))
        + pat.len()..];
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{pat} is not a number in {line:?}"))
}

/// A config file for `faced run`: database in `dir`, one `dir:` camera `front` on `play`, and
/// `extra` TOML appended (a `[gpio]` section).
fn write_config(
    dir: &std::path::Path,
    play: &std::path::Path,
    camera: &str,
    extra: &str,
) -> std::path::PathBuf {
    let toml = format!(
        "[device]\nid = \"test\"\n[gallery]\ndb = \"{}\"\n[[cameras]]\nname = \"front\"\nsource = \"dir:{}\"\n{camera}\n{extra}\n",
        dir.join("faced.db").display(),
        play.display()
    );
    let p = dir.join("faced.toml");
    std::fs::write(&p, toml).unwrap();
    p
}

/// Through `faced run`: a recognized person on `gpio.allow` pulses the relay for `pulse_ms`; a
/// recognized person not on it and an unknown face do not.
#[test]
fn gpio_relay_pulses_for_allow_listed_person_only() {
    let _heavy = heavy();
    let people = photos_by_person();
    let p1: Vec<&str> = people["person01"].iter().map(String::as_str).collect();
    let p2: Vec<&str> = people["person02"].iter().map(String::as_str).collect();
    let stranger = people["person05"][0].as_str();
    let tmp = tempdir();
    let dir = tmp.path();
    let mut g = gallery(dir);
    let mut an = still_analyzer();
    enroll(&mut g, &mut an, "alice", &p1[..3]);
    enroll(&mut g, &mut an, "bob", &p2[..3]);
    let key = g.key_path().to_path_buf();
    drop((g, an));
    // Bob (recognized, not allowed), a stranger, then Alice (allowed): each photo ~1 s.
    let play = play_dir(dir, &[p2[3], stranger, p1[3]]);
    let cfg = write_config(
        dir,
        &play,
        "fps = 10.0\nframes_per_image = 10\nrepeat = false\nlossless = true",
        "[gpio]\nenabled = true\nbackend = \"fake\"\nrelay_pin = 17\nallow = [\"alice\"]\n\
         pulse_ms = 300\ncooldown_ms = 0",
    );
    let mut d = Daemon::start(
        &["--config", cfg.to_str().unwrap()],
        &[("FACED_LOG", "info,faced::gpio=debug")],
    );
    d.wait_for(&["camera source ended"], Duration::from_secs(180));
    d.wait_for(
        &["fake gpio: pin 17 -> low (relay) after"],
        Duration::from_secs(30),
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0));
    let log = d.log.lock().unwrap().clone();
    let all = log.join("\n");

    // Everyone was seen: bob recognized, the stranger unknown, alice recognized.
    let (_, events) = stored_events(dir, &key);
    let mut seen: Vec<(EventKind, Option<String>)> = events
        .iter()
        .filter(|e| e.kind != EventKind::Left)
        .map(|e| (e.kind, e.person.clone()))
        .collect();
    seen.dedup();
    assert_eq!(
        seen,
        vec![
            (EventKind::Recognized, Some("bob".into())),
            (EventKind::Unknown, None),
            (EventKind::Recognized, Some("alice".into())),
        ],
        "{all}"
    );
    // Bob reached the relay and was refused; the stranger never reached it.
    assert!(
        log.iter().any(|l| l.contains("door relay not pulsed")
            && l.contains("bob")
            && l.contains("NotAllowed")),
        "{all}"
    );
    assert!(
        !log.iter()
            .any(|l| l.contains("door relay pulsed") && l.contains("bob")),
        "{all}"
    );
    // Exactly one pulse, alice's, of pulse_ms.
    let highs: Vec<usize> = (0..log.len())
        .filter(|&i| log[i].contains("fake gpio: pin 17 -> high (relay)"))
        .collect();
    assert_eq!(highs.len(), 1, "{all}");
    let pulsed = log
        .iter()
        .position(|l| l.contains("door relay pulsed") && l.contains("alice"))
        .unwrap_or_else(|| panic!("alice did not pulse the relay: {all}"));
    assert!(pulsed.abs_diff(highs[0]) <= 2, "{all}");
    let low = log
        .iter()
        .position(|l| l.contains("fake gpio: pin 17 -> low (relay) after"))
        .unwrap();
    assert!(low > highs[0], "{all}");
    let ms = field(&log[low].replace(" after ", " after="), "after");
    assert!(
        (300..1300).contains(&ms),
        "pulse of {ms} ms, wanted 300: {all}"
    );
}

/// Through `faced run`: while the (fake) PIR reports no motion, detection pauses — no events,
/// and the count of frames run through the models stands still although the camera keeps
/// delivering — and motion resumes it at once.
#[test]
fn pir_idle_pauses_detection_and_motion_resumes_it() {
    let _heavy = heavy();
    let people = photos_by_person();
    let p1: Vec<&str> = people["person01"].iter().map(String::as_str).collect();
    let tmp = tempdir();
    let dir = tmp.path();
    let mut g = gallery(dir);
    let mut an = still_analyzer();
    enroll(&mut g, &mut an, "alice", &p1[..3]);
    let key = g.key_path().to_path_buf();
    drop((g, an));
    let play = play_dir(dir, &[p1[3], p1[4]]);
    let pir = dir.join("pir");
    std::fs::write(&pir, "0").unwrap();
    let cfg = write_config(
        dir,
        &play,
        "fps = 10.0\nframes_per_image = 5\nrepeat = true",
        &format!(
            "[gpio]\nenabled = true\nbackend = \"fake\"\npir_pin = 22\npir_hold_s = 0\n\
             fake_pir_file = \"{}\"",
            pir.display()
        ),
    );
    let mut d = Daemon::start(
        &["--config", cfg.to_str().unwrap()],
        &[("FACED_LOG", "info")],
    );
    d.wait_for(&["ready"], Duration::from_secs(120));
    let paused = d.wait_for(
        &["no motion (PIR): detection paused"],
        Duration::from_secs(30),
    );
    assert_eq!(field(&paused, "frames_detected"), 0, "idle from the start");
    std::thread::sleep(Duration::from_secs(3));
    let (_, ev) = stored_events(dir, &key);
    assert!(ev.is_empty(), "events while idle: {ev:?}");

    std::fs::write(&pir, "1\n").unwrap();
    let resumed = d.wait_for(
        &["motion (PIR): detection resumed"],
        Duration::from_secs(10),
    );
    assert_eq!(field(&resumed, "frames_detected"), 0);
    let skipped = field(&resumed, "frames_skipped");
    assert!(
        skipped >= 10,
        "the camera kept delivering while idle: {resumed}"
    );
    let t = std::time::Instant::now();
    while !stored_events(dir, &key)
        .1
        .iter()
        .any(|e| e.kind == EventKind::Recognized && e.person.as_deref() == Some("alice"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no recognition after motion"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    std::fs::write(&pir, "0").unwrap();
    let t = std::time::Instant::now();
    while d.count("no motion (PIR): detection paused") < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "detection did not pause again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = |needle: &str| {
        d.log
            .lock()
            .unwrap()
            .iter()
            .rfind(|l| l.contains(needle))
            .unwrap()
            .clone()
    };
    let detected = field(&line("detection paused"), "frames_detected");
    assert!(detected > 0);
    std::thread::sleep(Duration::from_secs(3));
    std::fs::write(&pir, "1").unwrap();
    let t = std::time::Instant::now();
    while d.count("motion (PIR): detection resumed") < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "detection did not resume"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let resumed = line("detection resumed");
    assert_eq!(
        field(&resumed, "frames_detected"),
        detected,
        "frames ran through the models while idle: {resumed}"
    );
    assert!(
        field(&resumed, "frames_skipped") >= skipped + 10,
        "{resumed}"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0));
}

/// An invalid `web.listen` stops `faced run` at start with the config error (status 2), instead
/// of a daemon running without its console.
#[test]
fn bad_web_listen_stops_faced_run() {
    let tmp = tempdir();
    let db = tmp.path().join("faced.db");
    let mut d = Daemon::start(
        &["--source", "pattern"],
        &[
            ("FACED_GALLERY__DB", db.to_str().unwrap()),
            ("FACED_WEB__ENABLED", "true"),
            ("FACED_WEB__LISTEN", "not-an-address"),
        ],
    );
    assert_eq!(d.wait(Duration::from_secs(60)), Some(2));
    let all = d.log.lock().unwrap().join("\n");
    assert!(
        all.contains("web.listen") && all.contains("not-an-address"),
        "{all}"
    );
    assert_eq!(d.count("web console not started"), 0, "{all}");
    assert_eq!(d.count("ready"), 0, "{all}");
}

/// LiteRT's own chatter ("… accelerator could not be loaded …") is not printed on stderr by
/// every command; with FACED_LOG=debug it is in the log, as debug lines.
#[test]
fn litert_chatter_is_not_on_stderr() {
    let _heavy = heavy();
    let img = faces_dir().join("img1.jpg");
    let run = |log: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_faced"))
            .args(["analyze", img.to_str().unwrap()])
            .env("FACED_LOG", log)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run("info");
    assert!(
        !stderr.to_ascii_lowercase().contains("accelerator"),
        "LiteRT chatter on stderr:\n{stderr}"
    );
    let debug = run("debug");
    let lines: Vec<&str> = debug
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("accelerator"))
        .collect();
    assert!(
        !lines.is_empty(),
        "LiteRT's lines are lost, not logged:\n{debug}"
    );
    assert!(lines.iter().all(|l| l.contains("DEBUG")), "{lines:#?}");
}

/// What the Live and System pages show: a camera paused by the PIR reads `idle (no motion)`
/// (fps 0), and `running` again once there is motion.
#[test]
fn idle_camera_status_reads_idle_no_motion() {
    use faced::base::RealClocks;
    use faced::gpio::fake::FakeGpio;
    use faced::gpio::{BackendKind, Gpio, GpioConfig};
    let _heavy = heavy();
    let people = photos_by_person();
    let tmp = tempdir();
    let dir = tmp.path();
    let g = gallery(dir);
    let play = play_dir(dir, &[people["person01"][0].as_str()]);
    let mut cfg = config(dir, &play, 1, 10.0);
    cfg.cameras[0].settings.repeat = true;
    cfg.cameras[0].settings.lossless = false;
    let fake = FakeGpio::new(Arc::new(RealClocks));
    let gcfg = GpioConfig {
        enabled: true,
        backend: BackendKind::Fake,
        pir_pin: Some(22),
        pir_hold_s: 0,
        ..GpioConfig::default()
    };
    let gpio = Gpio::start_with(&gcfg, Arc::new(fake.clone()), Arc::new(RealClocks)).unwrap();
    let pipeline = faced::pipeline::Pipeline::start_with_gpio(
        &cfg,
        Arc::new(Mutex::new(g)),
        None,
        Arc::new(SimulatedClocks::new()),
        None,
        Some(gpio),
        None,
    )
    .unwrap();
    let h = pipeline.handle();
    let wait = |want: &str| {
        let t = std::time::Instant::now();
        while h.stats()[0].status != want {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "status {:?}, wanted {want:?}",
                h.stats()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait(faced::pipeline::IDLE_STATUS);
    assert_eq!(faced::pipeline::IDLE_STATUS, "idle (no motion)");
    assert_eq!(h.stats()[0].fps, 0.0);
    assert!(h.idle());
    fake.set_input(22, true);
    wait("running");
    assert!(!h.idle());
    pipeline.stop();
}

/// `faced enroll` and `faced people remove` beside a running daemon, with no signal: the daemon
/// sees the database change and recognizes the person on its camera, then, after the removal,
/// no longer does (a door must not keep opening for someone removed with the CLI).
#[test]
fn cli_edits_beside_the_running_daemon_apply_without_a_signal() {
    let people = photos_by_person();
    let p1: Vec<&str> = people["person01"].iter().map(String::as_str).collect();
    let others = [
        people["person02"][0].as_str(),
        people["person05"][0].as_str(),
    ];
    let tmp = tempdir();
    let dir = tmp.path();
    let db = dir.join("faced.db");
    // Three people in turn, over and over: every photo starts a new track.
    let play = play_dir(dir, &[p1[3], others[0], others[1]]);
    let toml = format!(
        "[device]\nid = \"test\"\n[gallery]\ndb = \"{}\"\n[[cameras]]\nname = \"front\"\n\
         source = \"dir:{}\"\nfps = 10.0\nframes_per_image = 5\nrepeat = true\n\
         [events]\nunknown_cooldown_secs = 0.0\ncooldown_secs = 0.0\n",
        db.display(),
        play.display()
    );
    let cfgp = dir.join("faced.toml");
    std::fs::write(&cfgp, toml).unwrap();
    let mut d = Daemon::start(&["--config", cfgp.to_str().unwrap()], &[]);
    d.wait_for(&["ready"], Duration::from_secs(60));
    let q = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    let until = |what: &str, d: &Daemon, f: &dyn Fn() -> bool| {
        let t = std::time::Instant::now();
        while !f() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{what}; log:\n{}",
                d.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t.elapsed()
    };
    until("no first pass", &d, &|| {
        q("SELECT COUNT(*) FROM event WHERE kind = 'unknown'") >= 3
    });
    assert_eq!(q("SELECT COUNT(*) FROM event WHERE kind = 'recognized'"), 0);

    let photos: Vec<String> = p1[..3]
        .iter()
        .map(|p| faces_dir().join(p).display().to_string())
        .collect();
    let mut args = vec!["enroll", "--db", db.to_str().unwrap(), "--name", "alice"];
    args.extend(photos.iter().map(String::as_str));
    faced_cli(&args, "");
    let took = until(
        "alice, enrolled with the CLI, is not recognized",
        &d,
        &|| q("SELECT COUNT(*) FROM event WHERE kind = 'recognized' AND person_name = 'alice'") > 0,
    );
    eprintln!("daemon: alice recognized {took:?} after `faced enroll` exited");
    assert_eq!(d.count("the gallery changed in the database"), 1);

    faced_cli(
        &["people", "--db", db.to_str().unwrap(), "remove", "alice"],
        "",
    );
    until("the removal is not loaded", &d, &|| {
        d.count("the gallery changed in the database") == 2
    });
    // A track that began before the reload may still be reported under alice's name; wait past
    // it (one pass is 1.5 s), then two whole passes must name nobody.
    std::thread::sleep(Duration::from_millis(1500));
    let mark = q("SELECT IFNULL(MAX(id), 0) FROM event");
    until("the stream stopped", &d, &|| {
        q(&format!(
            "SELECT COUNT(*) FROM event WHERE kind = 'unknown' AND id > {mark}"
        )) >= 6
    });
    assert_eq!(
        q(&format!(
            "SELECT COUNT(*) FROM event WHERE kind = 'recognized' AND id > {mark}"
        )),
        0,
        "alice is still recognized after `faced people remove`"
    );
    assert_eq!(d.count("SIGHUP"), 0);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
}
