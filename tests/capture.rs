//! Capture sources with real parts: the fixture photos as frames, a real HTTP MJPEG server on
//! 127.0.0.1, a nonexistent V4L2 device, and the real models checking that converted frames
//! still give the same face embedding.

use crate::util::daemon as daemon_util;

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use daemon_util::*;
use faced::base::Shutdown;
use faced::capture::convert::{decode_mjpeg, letterbox, rgb_to_yuyv, yuyv_to_rgb};
use faced::capture::dir::DirSource;
use faced::capture::http::HttpMjpeg;
use faced::capture::{CameraStatus, CaptureError, FrameSlot, FrameSource};
use faced::config::{Camera, CameraConfig, SourceSpec};
use faced::vision::image::ImageLimits;

fn photo(name: &str) -> image::RgbImage {
    letterbox(
        &faced::vision::image::load(&faces_dir().join(name), &ImageLimits::default()).unwrap(),
        640,
        480,
    )
}

fn jpeg(img: &image::RgbImage) -> Vec<u8> {
    faced::pipeline::encode_jpeg(img, 85).unwrap()
}

fn embedding(an: &mut faced::vision::Analyzer, img: &image::RgbImage) -> Vec<f32> {
    an.analyze(img)
        .unwrap()
        .into_iter()
        .next()
        .expect("a face")
        .embedding
}

#[test]
fn converted_webcam_frames_give_the_same_face() {
    let mut an = still_analyzer();
    let img = photo("img2.jpg");
    let reference = embedding(&mut an, &img);
    let (yuyv, w) = rgb_to_yuyv(&img);
    let from_yuyv = yuyv_to_rgb(&yuyv, w, 480, w as usize * 2).unwrap();
    let from_mjpeg = decode_mjpeg(&jpeg(&img)).unwrap();
    for (what, f) in [("YUYV", from_yuyv), ("MJPEG", from_mjpeg)] {
        let e = embedding(&mut an, &f);
        let sim: f32 = e.iter().zip(&reference).map(|(a, b)| a * b).sum();
        assert!(sim > 0.95, "{what} frame: similarity {sim} to the original");
    }
}

#[test]
fn directory_plays_in_order_skips_bad_files_and_ends() {
    let tmp = tempdir();
    let play = play_dir(tmp.path(), &["img1.jpg", "img2.jpg"]);
    std::fs::write(play.join("001a_broken.jpg"), b"not a jpeg").unwrap();
    std::fs::write(play.join("notes.txt"), b"ignored").unwrap();
    let mut src = DirSource::open(&play, 320, 240, 200.0, 2, false).unwrap();
    assert_eq!(src.len(), 3);
    let mut frames = Vec::new();
    loop {
        match src.next_frame() {
            Ok(f) => frames.push(f),
            Err(CaptureError::End) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(frames.len(), 4, "2 readable photos × 2 frames each");
    assert!(frames.iter().all(|f| f.image.dimensions() == (320, 240)));
    assert_eq!(
        frames.iter().map(|f| f.cut).collect::<Vec<_>>(),
        vec![false, false, true, false]
    );
    assert!(
        frames
            .windows(2)
            .all(|w| w[1].captured >= w[0].captured && w[1].seq > w[0].seq)
    );
    assert!(DirSource::open(&tmp.path().join("missing"), 320, 240, 1.0, 1, true).is_err());
}

#[test]
fn http_mjpeg_stream_is_read_until_the_server_goes_away() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let frames: Vec<Vec<u8>> = ["img1.jpg", "img2.jpg", "img4.jpg"]
        .iter()
        .map(|f| jpeg(&photo(f)))
        .collect();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = std::io::Read::read(&mut s, &mut buf);
        s.write_all(
            b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n",
        )
        .unwrap();
        for (i, f) in frames.iter().enumerate() {
            s.write_all(b"--frame\r\nContent-Type: image/jpeg\r\n")
                .unwrap();
            if i != 1 {
                // The middle part has no Content-Length: read to the JPEG's EOI.
                s.write_all(format!("Content-Length: {}\r\n", f.len()).as_bytes())
                    .unwrap();
            }
            s.write_all(b"\r\n").unwrap();
            s.write_all(f).unwrap();
            s.write_all(b"\r\n").unwrap();
        }
    });
    let mut src = HttpMjpeg::open(
        &format!("http://127.0.0.1:{port}/stream"),
        Duration::from_secs(5),
    )
    .unwrap();
    for _ in 0..3 {
        let f = src.next_frame().unwrap();
        assert_eq!(f.image.dimensions(), (640, 480));
    }
    server.join().unwrap();
    assert!(matches!(src.next_frame(), Err(CaptureError::Unplugged(_))));
    // Nothing listening: a clear error naming the URL.
    let e = HttpMjpeg::open(
        &format!("http://127.0.0.1:{port}/stream"),
        Duration::from_secs(1),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn missing_v4l2_device_is_retried_with_a_clear_error() {
    let cam = Camera {
        settings: CameraConfig {
            name: "door".into(),
            source: "v4l2:/dev/video77".into(),
            ..Default::default()
        },
        source: SourceSpec::V4l2("/dev/video77".into()),
    };
    let slot = Arc::new(FrameSlot::new(1));
    let status = Arc::new(CameraStatus::default());
    let stop = Shutdown::new();
    let (s2, st2, stop2) = (slot.clone(), status.clone(), stop.clone());
    let t = std::thread::spawn(move || {
        faced::capture::run_camera(0, &cam, &faced::capture::open, &s2, &st2, &stop2)
    });
    std::thread::sleep(Duration::from_millis(1800));
    // Raised in the middle of a back-off: the camera thread returns at once, not at its end.
    let raised = Instant::now();
    stop.raise();
    t.join().unwrap();
    assert!(
        raised.elapsed() < Duration::from_millis(500),
        "the camera thread took {:?} to stop",
        raised.elapsed()
    );
    let msg = status.get();
    assert!(
        msg.contains("/dev/video77 does not exist") && msg.contains("plugged in"),
        "{msg}"
    );
    assert!(
        status.errors.load(Ordering::Relaxed) >= 2,
        "retried (0.5 s, then 1 s back-off)"
    );
    assert!(slot.take_any(Duration::from_millis(10)).is_none());
}

/// A V4L2 camera that comes back (plugged in again, its driver reloaded) is opened about a
/// second after its device node appears, not at the end of a back-off that has grown to 8 s,
/// and an open that races udev (permission denied on the new node) is tried again a second
/// later, not after 16 s. The opener stands in for the device: it fails while the node is
/// missing, once more with "permission denied", then gives the test pattern.
#[test]
fn a_camera_that_comes_back_is_reopened_without_waiting_out_the_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("video0");
    let cam = Camera {
        settings: CameraConfig {
            name: "door".into(),
            source: format!("v4l2:{}", node.display()),
            ..Default::default()
        },
        source: SourceSpec::V4l2(node.clone()),
    };
    let appeared = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (a2, c2, n2) = (appeared.clone(), calls.clone(), node.clone());
    let raced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opener = move |_: &Camera| -> faced::Result<Box<dyn faced::capture::FrameSource>> {
        if n2.exists() {
            // The first open of the new node races udev, which has not given it its group yet.
            if !raced.swap(true, Ordering::SeqCst) {
                return Err(faced::Error::new(
                    faced::Kind::PermissionDenied,
                    "cannot open: Permission denied",
                ));
            }
            return Ok(Box::new(faced::capture::pattern::Pattern::new(
                64, 48, 10.0,
            )));
        }
        // After the 5th failure (7.5 s in) the back-off is 8 s; the node appears 1 s into it.
        if c2.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
            let (a3, n3) = (a2.clone(), n2.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(1));
                std::fs::write(&n3, b"").unwrap();
                *a3.lock().unwrap() = Some(Instant::now());
            });
        }
        Err(faced::Error::unavailable("camera device does not exist"))
    };
    let slot = Arc::new(FrameSlot::new(1));
    let status = Arc::new(CameraStatus::default());
    let stop = Shutdown::new();
    let (s2, st2, stop2) = (slot.clone(), status.clone(), stop.clone());
    let t =
        std::thread::spawn(move || faced::capture::run_camera(0, &cam, &opener, &s2, &st2, &stop2));
    let frame = slot.take_any(Duration::from_secs(30));
    let opened = Instant::now();
    stop.raise();
    slot.close();
    t.join().unwrap();
    assert!(frame.is_some(), "no frame after the node appeared");
    let appeared = appeared.lock().unwrap().expect("the node appeared");
    let after = opened.saturating_duration_since(appeared);
    assert!(
        after < Duration::from_secs(4),
        "opened {after:?} after the node appeared (the back-off had 7 s left, then 16 s)"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[test]
fn slot_keeps_only_the_newest_frame_and_counts_drops() {
    let slot = FrameSlot::new(2);
    let img = image::RgbImage::new(4, 4);
    for i in 0..3 {
        slot.put(0, faced::capture::Frame::now(img.clone(), i));
    }
    slot.put(1, faced::capture::Frame::now(img.clone(), 7));
    let (c, f) = slot.take_any(Duration::ZERO).unwrap();
    assert_eq!((c, f.seq), (0, 2));
    let (c, f) = slot.take_any(Duration::ZERO).unwrap();
    assert_eq!((c, f.seq), (1, 7));
    assert_eq!((slot.dropped(0), slot.captured(0)), (2, 3));
    assert!(slot.take_any(Duration::from_millis(5)).is_none());
}

/// The newest-frame slot drops what the worker has not taken; the lossless put waits instead.
#[test]
fn slot_keeps_newest_or_waits_when_lossless() {
    let frame = |seq| faced::capture::Frame::now(image::RgbImage::new(4, 4), seq);
    let slot = Arc::new(FrameSlot::new(1));
    slot.put(0, frame(1));
    slot.put(0, frame(2));
    assert_eq!(slot.dropped(0), 1);
    assert_eq!(slot.take_any(Duration::from_millis(10)).unwrap().1.seq, 2);

    let stop = Shutdown::new();
    let (s2, st2) = (slot.clone(), stop.clone());
    let producer = std::thread::spawn(move || {
        for seq in 10..20 {
            s2.put_wait(0, frame(seq), &st2);
        }
    });
    let mut got = Vec::new();
    while got.len() < 10 {
        if let Some((_, f)) = slot.take_any(Duration::from_secs(5)) {
            got.push(f.seq);
            std::thread::sleep(Duration::from_millis(5)); // a slow worker
        }
    }
    producer.join().unwrap();
    assert_eq!(got, (10..20).collect::<Vec<_>>());
    assert_eq!(slot.dropped(0), 1, "the lossless puts dropped nothing");

    // A waiting put gives up when stopped.
    slot.put(0, frame(30));
    stop.raise();
    slot.put_wait(0, frame(31), &stop);
    assert_eq!(slot.take_any(Duration::from_millis(10)).unwrap().1.seq, 30);
}
