//! Soak: the real `faced run` on the 4-face stream at 10 fps with MQTT on, the console polled
//! every 2 s, and the broker restarted every few minutes, for `FACED_SOAK_MINUTES` (default: a
//! short run for CI; `scripts/soak` runs an hour). Reports RSS after warm-up and at the end,
//! warnings and errors, dropped frames, event latency (publish → a subscriber, p50/p99) and lost
//! events (stored but never received), and asserts what must hold however long it runs: no
//! event lost, memory bounded, the pipeline keeping up.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::util::broker::{Broker, BrokerOptions, Sub, free_port};
use crate::util::daemon::Daemon;
use crate::util::web::{Client, PASSWORD};
use serde_json::Value;

/// CI's run: long enough for a broker restart and a warm-up, short enough for the budget.
const CI_SECONDS: u64 = 45;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_four_faces_with_mqtt_console_and_broker_restarts() {
    let _heavy = crate::util::alone_async().await;
    let total = std::env::var("FACED_SOAK_MINUTES")
        .ok()
        .map(|m| Duration::from_secs_f64(m.parse::<f64>().expect("FACED_SOAK_MINUTES") * 60.0))
        .unwrap_or(Duration::from_secs(CI_SECONDS));
    // Broker restarts: every 10 minutes in a long run, once in the middle of a short one.
    let restart_every = if total >= Duration::from_secs(1200) {
        Duration::from_secs(600)
    } else {
        total / 2
    };
    let warmup = (total / 6).min(Duration::from_secs(300));

    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("faced.db");
    let db_s = db.to_str().unwrap();
    // The 4-face stream: three mosaics, each for 2 s at 10 fps, then 1 s without faces.
    let play = crate::util::daemon::storm_unit(
        tmp.path(),
        &db,
        &["four-a.jpg", "four-b.jpg", "four-c.jpg"],
        20,
        10,
    );
    let mut broker = Broker::start_with(BrokerOptions {
        persistence: true,
        ..Default::default()
    });
    let port = free_port();
    let conf = tmp.path().join("faced.toml");
    std::fs::write(
        &conf,
        format!(
            "[device]\nid = \"soak\"\n[gallery]\ndb = \"{db_s}\"\n\
             [events]\ncooldown_secs = 5.0\nunknown_cooldown_secs = 0.0\n\
             [[cameras]]\nname = \"front\"\nsource = \"dir:{}\"\nfps = 10.0\nrepeat = true\n\
             [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {}\nkeepalive_secs = 5\n\
             reconnect_min_ms = 200\nreconnect_max_secs = 2\n\
             [web]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n",
            play.display(),
            broker.port()
        ),
    )
    .unwrap();
    let mut sub = Sub::connect(broker.port(), "soak-sub", &["faced/soak/events"], true).await;
    let mut d = Daemon::start(
        &["--config", conf.to_str().unwrap()],
        &[("FACED_LOG", "info"), ("FACED_WEB__ENABLED", "true")],
    );
    let pid = d.child.id();
    {
        let t = Instant::now();
        while d.count("web console listening") == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "daemon did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut admin = Client::new(&format!("http://127.0.0.1:{port}"));
    admin.login("admin", PASSWORD).await;

    let start = Instant::now();
    let mut received = BTreeSet::new();
    let mut duplicates = 0u64;
    let mut latencies = Vec::new();
    let mut rss_warm = None;
    let mut rss_max = 0;
    let mut polls = 0u64;
    let mut poll_errors = 0u64;
    let mut restarts = 0;
    let mut next_restart = restart_every;
    let mut next_poll = Duration::ZERO;
    let mut last_dropped = 0u64;
    while start.elapsed() < total {
        if let Some(m) = sub.next(Duration::from_millis(200)).await {
            let v = m.json();
            let id = v["event_id"].as_i64().unwrap();
            if !received.insert(id) {
                duplicates += 1;
            }
            let now = faced::base::unix_ms(std::time::SystemTime::now());
            latencies.push(now - v["ts_ms"].as_i64().unwrap());
        }
        let el = start.elapsed();
        if el >= next_poll {
            next_poll = el + Duration::from_secs(2);
            polls += 1;
            let s: Option<Value> = admin.get("/api/system").await.json().await.ok();
            let ev = admin.get("/api/events?limit=20").await.status();
            let frame = admin.get("/api/live/front/frame.jpg").await.status();
            match s {
                Some(s) if ev.is_success() && frame.is_success() => {
                    last_dropped = s["cameras"][0]["dropped"].as_u64().unwrap_or(0)
                }
                _ => poll_errors += 1,
            }
            let r = rss_kib(pid);
            rss_max = rss_max.max(r);
            if rss_warm.is_none() && el >= warmup {
                rss_warm = Some(r);
            }
        }
        if el >= next_restart && el + Duration::from_secs(10) < total {
            next_restart += restart_every;
            restarts += 1;
            broker.stop();
            tokio::time::sleep(Duration::from_secs(1)).await;
            broker.start_again();
        }
    }
    let rss_end = rss_kib(pid);
    d.signal(libc::SIGTERM);
    assert_eq!(
        tokio::task::block_in_place(|| d.wait(Duration::from_secs(60))),
        Some(0)
    );
    // What is still on its way to the subscriber (the outbox drains at shutdown).
    while let Some(m) = sub.next(Duration::from_secs(3)).await {
        let id = m.json()["event_id"].as_i64().unwrap();
        if !received.insert(id) {
            duplicates += 1;
        }
    }
    let c = rusqlite::Connection::open(&db).unwrap();
    let stored: BTreeSet<i64> = c
        .prepare("SELECT id FROM event")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let lost: Vec<i64> = stored.difference(&received).copied().collect();
    let log = d.log.lock().unwrap().clone();
    let errors = log.iter().filter(|l| l.contains("ERROR")).count();
    let warnings = log.iter().filter(|l| l.contains("WARN")).count();
    latencies.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let rss_warm = rss_warm.unwrap_or(rss_end);
    let frames = total.as_secs() * 10;
    let summary = serde_json::json!({
        "minutes": total.as_secs_f64() / 60.0,
        "events_stored": stored.len(),
        "events_received": received.len(),
        "events_lost": lost.len(),
        "duplicates": duplicates,
        "latency_ms_p50": p50,
        "latency_ms_p99": p99,
        "rss_kib_after_warmup": rss_warm,
        "rss_kib_end": rss_end,
        "rss_kib_max": rss_max,
        "dropped_frames": last_dropped,
        "frames_offered": frames,
        "broker_restarts": restarts,
        "console_polls": polls,
        "console_poll_errors": poll_errors,
        "log_errors": errors,
        "log_warnings": warnings,
    });
    println!("soak: {summary}");
    for l in log
        .iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .take(20)
    {
        println!("soak log line: {l}");
    }
    assert!(stored.len() > 10, "{summary}");
    assert!(
        lost.is_empty(),
        "events stored but never received: {lost:?}; {summary}"
    );
    assert_eq!(poll_errors, 0, "{summary}");
    // Bounded memory: growth after warm-up stays small whatever the duration.
    assert!(
        rss_end < rss_warm + 64 * 1024,
        "RSS grew from {rss_warm} KiB after warm-up to {rss_end} KiB: {summary}"
    );
    assert!(p50 < 3000, "{summary}");
}
