//! The cameras people own, through `faced run`: `exec:` sources fed by Debian's real `ffmpeg`
//! (the same program the RTSP recipe in docs/cameras.md runs), in both the MJPEG and the raw
//! YUV 4:2:0 formats, a command that keeps dying, one that hangs, and what is left running after
//! the daemon stops. `rpicam-vid` (the Pi camera module) cannot run here: its recipe writes the
//! same MJPEG byte stream as `ffmpeg -f mjpeg`, which is what these tests feed.
//!
//! Skipped, with a message, when ffmpeg is not installed (`scripts/test` installs it).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::daemon::*;
use faced::base::SimulatedClocks;
use faced::events::store::{EventStore, StoreOptions};
use faced::events::{Event, EventKind};

fn have_ffmpeg() -> bool {
    let ok = std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: ffmpeg is not installed (apt-get install ffmpeg; scripts/test does)");
    }
    ok
}

fn events(dir: &Path, key: &Path) -> Vec<Event> {
    let store = EventStore::open(
        &dir.join("faced.db"),
        key,
        StoreOptions {
            retention_days: 0,
            retention_count: 0,
            snapshots: false,
        },
        Arc::new(SimulatedClocks::new()),
    )
    .unwrap();
    store.recent(1000, None).unwrap()
}

/// ffmpeg playing one photo as a live 640×480 camera at 5 fps; `out` is its output options.
fn ffmpeg(photo: &Path, out: &str) -> String {
    format!(
        "ffmpeg -hide_banner -loglevel error -nostdin -re -loop 1 -framerate 5 -i {} \
         -vf scale=640:480:force_original_aspect_ratio=decrease,pad=640:480:-1:-1 {out} -",
        photo.display()
    )
}

/// Processes whose command line contains `needle` (from /proc).
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) && !c.contains("cargo") {
                found.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Alice enrolled from three photos; another photo of her is played by two `exec:` cameras,
/// one reading ffmpeg's MJPEG and one its raw yuv420p. Both recognize her. After SIGTERM no
/// ffmpeg of this test is left running.
#[test]
fn exec_cameras_fed_by_ffmpeg_recognize_an_enrolled_person() {
    if !have_ffmpeg() {
        return;
    }
    let _heavy = crate::util::alone();
    let tmp = tempdir();
    let dir = tmp.path();
    let (p1, key) = gallery_with_alice(dir);
    // No cool-down: a person recognized on one camera is not held back on the other.
    // The photo is copied into the test's folder, so its path marks this test's processes.
    let photo = dir.join("alice-at-the-door.jpg");
    std::fs::copy(faces_dir().join(&p1[3]), &photo).unwrap();
    let mjpeg = ffmpeg(&photo, "-f mjpeg -q:v 4");
    let yuv = ffmpeg(&photo, "-pix_fmt yuv420p -f rawvideo");
    let toml = format!(
        "[device]\nid = \"test\"\n[gallery]\ndb = \"{db}\"\n\
         [events]\ncooldown_secs = 0.0\n\
         [[cameras]]\nname = \"mjpeg\"\nsource = \"exec:{mjpeg}\"\nfps = 5.0\n\
         [[cameras]]\nname = \"yuv\"\nsource = \"exec:{yuv}\"\nexec_format = \"yuv420\"\nfps = 5.0\n",
        db = dir.join("faced.db").display(),
    );
    let mut d = start_with_config(dir, &toml);
    d.wait_for(&["ready"], Duration::from_secs(60));
    let t = Instant::now();
    loop {
        let ev = events(dir, &key);
        let seen = |cam: &str| {
            ev.iter().any(|e| {
                e.kind == EventKind::Recognized
                    && e.camera == cam
                    && e.person.as_deref() == Some("alice")
            })
        };
        if seen("mjpeg") && seen("yuv") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "not recognized on both cameras: {ev:#?}\nlog:\n{}",
            d.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ours = format!("-i {}", photo.display());
    assert_eq!(
        processes_with(&ours).len(),
        2,
        "{:?}",
        processes_with(&ours)
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
    // The commands die with the daemon, not later.
    assert!(
        processes_with(&ours).is_empty(),
        "{:?}",
        processes_with(&ours)
    );
}

/// A command that writes a few frames, says something on stderr and exits is logged (its
/// stderr line and exit status) and started again with back-off; a command that writes nothing
/// is killed as stalled and started again. When the daemon is SIGKILLed (no chance to clean
/// up), the command still goes: the kernel signals it as its parent dies (a simple command is
/// exec'ed by the shell, so it is faced's child).
#[test]
fn exec_commands_that_exit_or_hang_are_restarted_and_die_with_the_daemon() {
    if !have_ffmpeg() {
        return;
    }
    let _heavy = crate::util::alone();
    let tmp = tempdir();
    let dir = tmp.path();
    let photo = dir.join("door.jpg");
    std::fs::copy(faces_dir().join("img1.jpg"), &photo).unwrap();
    let dying = format!(
        "{} ; echo the camera went away >&2 ; exit 3",
        ffmpeg(&photo, "-frames:v 3 -f mjpeg")
    );
    // `sleep` never writes: stalled after the first frame's 15 s grace. Its odd duration marks
    // it.
    let hang = "sleep 6133";
    let toml = format!(
        "[device]\nid = \"test\"\n[gallery]\ndb = \"{db}\"\n\
         [[cameras]]\nname = \"dying\"\nsource = \"exec:{dying}\"\nfps = 5.0\n\
         [[cameras]]\nname = \"hung\"\nsource = \"exec:{hang}\"\nfps = 5.0\n",
        db = dir.join("faced.db").display(),
    );
    let mut d = start_with_config(dir, &toml);
    d.wait_for(
        &["dying", "exec: the camera went away"],
        Duration::from_secs(60),
    );
    let lost = d.wait_for(
        &["dying", "camera lost", "exited (exit status: 3)"],
        Duration::from_secs(20),
    );
    assert!(lost.contains("the camera went away"), "{lost}");
    // Started again, frames and all: a second exit.
    let t = Instant::now();
    while d.count("exited (exit status: 3)") < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the dying command was not started again; log:\n{}",
            d.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.wait_for(&["hung", "camera lost", "stalled"], Duration::from_secs(40));
    let t = Instant::now();
    while processes_with("sleep 6133").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the hung command was not restarted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each stall killed its sleep: never more than the one running now.
    assert!(
        processes_with("sleep 6133").len() <= 1,
        "{:?}",
        processes_with("sleep 6133")
    );
    d.signal(libc::SIGKILL);
    d.wait(Duration::from_secs(10));
    let t = Instant::now();
    while !processes_with("sleep 6133").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the command outlived a SIGKILLed daemon: {:?}",
            processes_with("sleep 6133")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether GStreamer's RTSP server can run here (Debian's gir1.2-gst-rtsp-server-1.0 with
/// python3-gi, the good and bad plugin sets; scripts/test installs them).
fn have_rtsp_server() -> bool {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); \
             from gi.repository import Gst, GstRtspServer; Gst.init(None); \
             assert Gst.ElementFactory.find('h264parse') and Gst.ElementFactory.find('qtdemux')",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED: no GStreamer RTSP server (apt-get install gir1.2-gst-rtsp-server-1.0 \
             gstreamer1.0-plugins-good gstreamer1.0-plugins-bad python3-gi)"
        );
    }
    ok
}

/// An H.264 MP4 of `photo` held still for a minute at 5 fps, 640×480, a key frame every
/// second: what an IP camera's substream looks like to a client.
fn h264_video(photo: &Path, out: &Path) {
    let st = std::process::Command::new("ffmpeg")
        .args([
            "-y",
            "-hide_banner",
            "-loglevel",
            "error",
            "-loop",
            "1",
            "-framerate",
            "5",
        ])
        .args(["-t", "60", "-i"])
        .arg(photo)
        .args([
            "-vf",
            "scale=640:480:force_original_aspect_ratio=decrease,pad=640:480:-1:-1,format=yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-g",
            "5",
            "-bf",
            "0",
        ])
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg could not make {}", out.display());
}

/// A gallery in `dir` with Alice and Bob enrolled from three photos each, and an H.264 video of
/// each made from a fourth photo: (the gallery key, Alice's video, Bob's video).
fn alice_and_bob_videos(
    dir: &Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (p1, key) = gallery_with_alice(dir);
    let p2 = photos_by_person().remove("person02").unwrap();
    {
        let mut g = gallery(dir);
        let mut an = still_analyzer();
        let first: Vec<&str> = p2[..3].iter().map(String::as_str).collect();
        enroll(&mut g, &mut an, "bob", &first);
    }
    let (alice, bob) = (dir.join("alice.mp4"), dir.join("bob.mp4"));
    h264_video(&faces_dir().join(&p1[3]), &alice);
    h264_video(&faces_dir().join(&p2[3]), &bob);
    (key, alice, bob)
}

/// Waits up to 60 s for a `recognized` event of `name` in the daemon's database.
fn wait_recognized(dir: &Path, key: &Path, name: &str, d: &Daemon) {
    let t = Instant::now();
    while !events(dir, key)
        .iter()
        .any(|e| e.kind == EventKind::Recognized && e.person.as_deref() == Some(name))
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{name} not recognized through RTSP; log:\n{}",
            d.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// GStreamer's RTSP server (tests/util/rtsp_server.py) on `port`, serving `video`.
struct RtspServer(std::process::Child);

impl RtspServer {
    fn start(port: u16, video: &Path) -> RtspServer {
        RtspServer::start_with(port, video, &[])
    }

    /// With `auth` = `[user, password]`, clients must authenticate (Digest).
    fn start_with(port: u16, video: &Path, auth: &[&str]) -> RtspServer {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/util/rtsp_server.py");
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .arg(video)
            .args(auth)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the RTSP server did not start");
        RtspServer(child)
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An RTSP camera through the documented recipe (`exec:` + Debian's ffmpeg, TCP interleaved):
/// Alice is recognized; the server is killed (the camera is lost, ffmpeg restarted with
/// back-off while nothing listens) and started again serving Bob's video: Bob is recognized,
/// so frames flow again after the reconnection.
#[test]
fn rtsp_camera_through_ffmpeg_recognizes_and_reconnects_after_a_server_restart() {
    if !have_ffmpeg() || !have_rtsp_server() {
        return;
    }
    let _heavy = crate::util::alone();
    let tmp = tempdir();
    let dir = tmp.path();
    let (key, alice, bob) = alice_and_bob_videos(dir);
    let port = crate::util::broker::free_port();
    let server = RtspServer::start(port, &alice);
    let cmd = format!(
        "ffmpeg -hide_banner -loglevel error -nostdin -rtsp_transport tcp \
         -i rtsp://127.0.0.1:{port}/stream -f mjpeg -q:v 4 -"
    );
    let toml = format!(
        "[device]\nid = \"test\"\n[gallery]\ndb = \"{db}\"\n[events]\ncooldown_secs = 0.0\n\
         [[cameras]]\nname = \"shop\"\nsource = \"exec:{cmd}\"\nfps = 5.0\n",
        db = dir.join("faced.db").display(),
    );
    let mut d = start_with_config(dir, &toml);
    let wait = |name: &str, d: &Daemon| wait_recognized(dir, &key, name, d);
    wait("alice", &d);
    drop(server);
    d.wait_for(&["shop", "camera lost"], Duration::from_secs(30));
    let server = RtspServer::start(port, &bob);
    wait("bob", &d);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
    drop(server);
}

/// An RTSP camera read by faced itself (`rtsp://`: retina + OpenH264, no ffmpeg at run time),
/// from a server that requires a password:
/// - the credentials file first holds a wrong password: the camera is refused, and the log says
///   so without showing the password;
/// - the file is corrected while the daemon runs (it is read at every connection): Alice is
///   recognized;
/// - the server is killed and started again serving Bob's video: faced reconnects with back-off
///   and recognizes Bob.
#[test]
fn rtsp_camera_read_natively_authenticates_recognizes_and_reconnects() {
    if !have_ffmpeg() || !have_rtsp_server() {
        return;
    }
    let _heavy = crate::util::alone();
    let tmp = tempdir();
    let dir = tmp.path();
    let (key, alice, bob) = alice_and_bob_videos(dir);
    let port = crate::util::broker::free_port();
    let auth = ["viewer", "s3cret:door"];
    let server = RtspServer::start_with(port, &alice, &auth);
    let cred = dir.join("shop.cred");
    std::fs::write(&cred, "viewer:not-the-password\n").unwrap();
    let toml = format!(
        "[device]\nid = \"test\"\n[gallery]\ndb = \"{db}\"\n[events]\ncooldown_secs = 0.0\n\
         [[cameras]]\nname = \"shop\"\nsource = \"rtsp://127.0.0.1:{port}/stream\"\n\
         credentials_file = \"shop.cred\"\nfps = 5.0\n",
        db = dir.join("faced.db").display(),
    );
    let mut d = start_with_config(dir, &toml);
    let refused = d.wait_for(&["shop", "camera lost", "401"], Duration::from_secs(30));
    assert!(!refused.contains("not-the-password"), "{refused}");
    std::fs::write(&cred, format!("{}:{}\n", auth[0], auth[1])).unwrap();
    let wait = |name: &str, d: &Daemon| wait_recognized(dir, &key, name, d);
    wait("alice", &d);
    assert!(
        processes_with("ffmpeg")
            .iter()
            .all(|p| !p.contains(&port.to_string())),
        "no ffmpeg reads the camera"
    );
    drop(server);
    d.wait_for(&["shop", "camera lost"], Duration::from_secs(30));
    let server = RtspServer::start_with(port, &bob, &auth);
    wait("bob", &d);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
    let log = d.log.lock().unwrap().join("\n");
    assert!(!log.contains("s3cret"), "the password reached the log");
    drop(server);
}
