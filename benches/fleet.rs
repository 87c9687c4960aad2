//! Fleet scale (src/fleet/): `cargo bench --bench fleet [-- PEOPLE UNITS]` (default 10000 50).
//!
//! Real parts: Mosquitto from Debian on 127.0.0.1 (no persistence, its default queue limits
//! except where printed), real SQLite galleries, the real `Fleet` threads; the units run in this
//! process (gallery-only: no cameras, no models). Synthetic faces: random unit embeddings and a
//! 5 KB crop each (an aligned 112×112 JPEG at quality 90 is 4–6 KB).
//!
//! 1. A seed unit holds PEOPLE people × 5 samples and publishes them (the broker's retained
//!    state); the broker's resident memory before and after.
//! 2. A new unit joins: time until it holds the whole gallery.
//! 3. UNITS units on a fresh site: one enrollment (5 samples) on unit 0, time until every unit
//!    holds it; the sealed record's size and the bytes on the wire.
//! 4. A partition: one unit stopped while 10 people are enrolled and 1 erased elsewhere, then
//!    started again: time until it holds the same gallery.
//!
//! Prints one line per figure (docs/fleet.md, "Figures").

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faced::base::RealClocks;
use faced::fleet::{Fleet, FleetConfig, FleetSetup, SiteKey};
use faced::gallery::{Gallery, GalleryOptions, NewSample, SampleKind};
use faced::mqtt::MqttConfig;

mod common;
use common::Rng;

struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut conf =
            format!("listener {port} 127.0.0.1\npersistence false\nallow_anonymous true\n");
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            conf += "user root\n";
        }
        std::fs::write(dir.path().join("m.conf"), conf).unwrap();
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto (apt install mosquitto)");
        let child = Command::new(bin)
            .arg("-c")
            .arg(dir.path().join("m.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker {
            child,
            port,
            _dir: dir,
        }
    }

    fn rss_mib(&self) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = s
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        kb / 1024.0
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Unit {
    gallery: Arc<Mutex<Gallery>>,
    fleet: Option<Fleet>,
    setup: Box<dyn Fn(Arc<Mutex<Gallery>>) -> FleetSetup>,
}

impl Unit {
    fn new(dir: &Path, name: &str, key: &Path, port: u16) -> Unit {
        let db = dir.join(format!("{name}.db"));
        let gallery = Arc::new(Mutex::new(
            Gallery::open(
                &db,
                &GalleryOptions {
                    unit: Some(name.into()),
                    ..Default::default()
                },
            )
            .unwrap(),
        ));
        let (name, key) = (name.to_string(), key.to_path_buf());
        let setup = Box::new(move |g| FleetSetup {
            config: FleetConfig {
                enabled: true,
                key_path: Some(key.clone()),
            },
            mqtt: MqttConfig {
                enabled: true,
                host: "127.0.0.1".into(),
                port: Some(port),
                ..Default::default()
            },
            device_id: name.clone(),
            db: db.clone(),
            cameras: 0,
            gallery: g,
            clocks: Arc::new(RealClocks),
            on_status: None,
        });
        Unit {
            gallery,
            fleet: None,
            setup,
        }
    }

    fn start(&mut self) {
        self.fleet = Some(Fleet::start((self.setup)(self.gallery.clone())).unwrap());
    }

    fn stop(&mut self) {
        self.fleet = None;
    }

    fn people(&self) -> i64 {
        let g = self.gallery.lock().unwrap();
        g.connection()
            .query_row("SELECT COUNT(*) FROM person", [], |r| r.get(0))
            .unwrap()
    }

    fn samples(&self) -> i64 {
        let g = self.gallery.lock().unwrap();
        g.connection()
            .query_row("SELECT COUNT(*) FROM face_sample", [], |r| r.get(0))
            .unwrap()
    }

    fn enroll(&self, rng: &mut Rng, name: &str) {
        let embs: Vec<Vec<f32>> = (0..5).map(|_| rng.unit()).collect();
        let crops: Vec<Vec<u8>> = (0..5).map(|_| rng.bytes(5000)).collect();
        let samples: Vec<NewSample<'_>> = embs
            .iter()
            .zip(&crops)
            .map(|(e, c)| NewSample {
                kind: SampleKind::Positive,
                embedding: e,
                crop_jpeg: c,
                quality_json: "{}",
                source: "bench",
            })
            .collect();
        let mut g = self.gallery.lock().unwrap();
        let p = g.add_person(name).unwrap();
        g.add_samples(p, &samples).unwrap();
    }

    fn published(&self) -> u64 {
        self.fleet.as_ref().map_or(0, |f| {
            f.stats.published.load(std::sync::atomic::Ordering::Relaxed)
        })
    }
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

fn main() {
    if std::env::var_os("FACED_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("FACED_LOG"))
            .init();
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let people = args.first().copied().unwrap_or(10_000);
    let units = args.get(1).copied().unwrap_or(50);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = Rng(0x5EED_F1EE7);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fleet bench: {people} people x 5 samples, {units} units; load before: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // 1. The seed unit and the broker's retained state.
    let broker = Broker::start();
    let key = dir.join("site.key");
    SiteKey::create(&key).unwrap();
    let mut seed = Unit::new(dir, "seed", &key, broker.port);
    let t = Instant::now();
    for i in 0..people {
        seed.enroll(&mut rng, &format!("Person {i:05}"));
    }
    println!("seed gallery built: {:.1} s", t.elapsed().as_secs_f64());
    let rss0 = broker.rss_mib();
    seed.start();
    let d = wait("seed publishes", Duration::from_secs(1800), || {
        seed.published() >= people as u64
    });
    // Retained messages are stored when the broker has read them: give it a moment.
    std::thread::sleep(Duration::from_secs(2));
    let rss1 = broker.rss_mib();
    println!(
        "seed published {people} records: {:.1} s ({:.0} records/s)",
        d.as_secs_f64(),
        people as f64 / d.as_secs_f64()
    );
    println!(
        "broker resident memory: {rss0:.1} MiB empty, {rss1:.1} MiB with the retained gallery \
         ({:.1} KiB per person)",
        (rss1 - rss0) * 1024.0 / people as f64
    );

    // 2. A new unit joins.
    let mut joiner = Unit::new(dir, "joiner", &key, broker.port);
    joiner.start();
    let d = wait(
        "the new unit gets the gallery",
        Duration::from_secs(3600),
        || joiner.samples() >= 5 * people as i64,
    );
    println!(
        "new unit holds the whole gallery ({} people, {} samples): {:.1} s",
        joiner.people(),
        joiner.samples(),
        d.as_secs_f64()
    );
    joiner.stop();
    seed.stop();
    drop(broker);

    // 3. Fan-out on a fresh site: one enrollment to every unit.
    let broker = Broker::start();
    let key2 = dir.join("site2.key");
    SiteKey::create(&key2).unwrap();
    let mut fleet: Vec<Unit> = (0..units)
        .map(|i| Unit::new(dir, &format!("u{i:02}"), &key2, broker.port))
        .collect();
    for u in &mut fleet {
        u.start();
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut times = Vec::new();
    for round in 0..5 {
        let t = Instant::now();
        fleet[round % units].enroll(&mut rng, &format!("Visitor {round}"));
        let n = round as i64 + 1;
        wait(
            "one enrollment reaches every unit",
            Duration::from_secs(120),
            || fleet.iter().all(|u| u.samples() >= 5 * n),
        );
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let rec = {
        let g = fleet[0].gallery.lock().unwrap();
        let uid = g.replica_uids().unwrap()[0];
        serde_json::to_vec(&g.replica(&uid).unwrap().unwrap())
            .unwrap()
            .len()
    };
    let sealed = rec + 28;
    println!(
        "one enrollment (5 samples) reaches all {units} units: median {:.0} ms (min {:.0}, max {:.0}, 5 runs)",
        times[2], times[0], times[4]
    );
    println!(
        "bytes per enrollment: record {sealed} B sealed; on the wire {} B = 1 publish + {units} \
         deliveries (no unit republishes an equal record)",
        sealed * (units + 1)
    );

    // 4. A partition: one unit away while others change the gallery.
    let away = units - 1;
    fleet[away].stop();
    for i in 0..10 {
        fleet[i % (units - 1)].enroll(&mut rng, &format!("Late {i}"));
    }
    {
        let mut g = fleet[0].gallery.lock().unwrap();
        let p = g.person_by_name("Visitor 0").unwrap().unwrap();
        g.remove_person(p.id).unwrap();
    }
    // 5 visitors from the fan-out rounds, 10 late, 1 erased.
    let want = 5 + 10 - 1;
    wait("the others converge", Duration::from_secs(60), || {
        fleet[0..away]
            .iter()
            .all(|u| u.people() == want && u.samples() == 5 * want)
    });
    fleet[away].start();
    let d = wait(
        &format!("the returning unit converges to {want} people"),
        Duration::from_secs(120),
        || fleet[away].people() == want && fleet[away].samples() == 5 * want,
    );
    println!(
        "after a partition (10 enrolled, 1 erased meanwhile): the returning unit converged in {:.0} ms",
        d.as_secs_f64() * 1000.0
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load after: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for u in &mut fleet {
        u.stop();
    }
}
