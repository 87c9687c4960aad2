//! A real Prometheus scrapes `faced run`: Debian's `prometheus` (2.42) on 127.0.0.1 with the
//! scrape config of docs/prometheus/prometheus.yml (only the interval, the target and the token
//! file changed) and the alert rules of docs/prometheus/faced-rules.yml, while the daemon plays a
//! `dir:` camera with a real Mosquitto. Through Prometheus's HTTP API the test asserts that the
//! frame counters increase, that a quantile of the frame-latency histogram is finite, that
//! Alice's recognition moves the events counter, that every panel query of
//! docs/grafana/faced.json runs, and that every alert rule evaluates without error. Also: the
//! metrics-scope token is refused on every other route of the console.
//!
//! Needs `prometheus` and `promtool` (Debian's `prometheus`, installed by scripts/test). Without
//! them the test is skipped with a loud message, unless `CI` is set: then it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::broker::{Broker, free_port};
use crate::util::daemon::{Daemon, add_admin, faced_cli, faces_dir, gallery_with_alice};

/// `prometheus` and `promtool`, or `None` (with a loud message) when they are not installed;
/// under `CI` their absence fails the test instead.
fn prometheus_bins() -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        ["/usr/bin", "/usr/local/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    };
    if let (Some(p), Some(t)) = (find("prometheus"), find("promtool")) {
        return Some((p, t));
    }
    if std::env::var_os("CI").is_some() {
        panic!("prometheus and promtool are required under CI: apt-get install -y prometheus");
    }
    eprintln!(
        "\n\n*** SKIPPING the Prometheus test: prometheus/promtool not found. Install them with\n\
         ***   apt-get install -y prometheus   (scripts/test does)\n\
         *** (under CI=true this test fails instead)\n"
    );
    None
}

fn doc(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `promtool ARGS` succeeds; returns its output.
fn promtool(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

/// A running Prometheus, killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(bin: &Path, dir: &Path, config: &Path) -> Prometheus {
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/<what>?query=<q>`'s `data`, or the error Prometheus gave.
    async fn api(&self, what: &str, q: Option<&str>) -> Result<Value, String> {
        let mut url = format!("{}/api/v1/{what}", self.base);
        if let Some(q) = q {
            url = format!("{url}?query={}", form_encode(q));
        }
        let res = reqwest::get(&url).await.map_err(|e| e.to_string())?;
        let body: Value = res.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        Ok(body["data"].clone())
    }

    /// The instant query `q`'s samples: labels and value.
    async fn query(&self, q: &str) -> Result<Vec<(Value, f64)>, String> {
        let data = self.api("query", Some(q)).await?;
        Ok(data["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let v = r["value"][1].as_str().unwrap_or("NaN").parse().unwrap();
                (r["metric"].clone(), v)
            })
            .collect())
    }

    /// The single value of `q`, once `ok` accepts it (polled every 500 ms for `within`).
    async fn wait_value(&self, q: &str, within: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let t = Instant::now();
        let mut last = Err("no query yet".to_string());
        while t.elapsed() < within {
            last = self.query(q).await;
            if let Ok([(_, v)]) = last.as_deref()
                && ok(*v)
            {
                return *v;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!(
            "{q}: last answer {last:?} after {within:?}\nprometheus log:\n{}",
            self.log()
        );
    }
}

/// `application/x-www-form-urlencoded` for a query string value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every panel query (`expr`) of the Grafana dashboard, with its panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(doc("docs/grafana/faced.json")).unwrap())
            .unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// A unit in `dir`: Alice enrolled, an admin with a metrics token, a `dir:` camera showing
/// nobody yet (`play`), MQTT to a real Mosquitto and the console on a free port.
struct Unit {
    daemon: Daemon,
    _broker: Broker,
    web_port: u16,
    token: String,
    play: PathBuf,
    alice: PathBuf,
}

impl Drop for Unit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "faced's log:\n{}",
                self.daemon.log.lock().unwrap().join("\n")
            );
        }
    }
}

fn start_unit(dir: &Path) -> Unit {
    let db = dir.join("faced.db");
    let (photos, _) = gallery_with_alice(dir);
    add_admin(&db);
    // One token for a site: made as an operator would on another unit, stored with --stdin.
    let token = format!("faced_{}", "prometheusTokenForTheWholeSite_0123456789");
    let db_s = db.to_str().unwrap();
    faced_cli(
        &[
            "user",
            "--db",
            db_s,
            "token",
            "admin",
            "--label",
            "prometheus",
            "--metrics",
            "--stdin",
        ],
        &format!("{token}\n"),
    );
    std::fs::write(dir.join("faced.token"), &token).unwrap();
    let play = dir.join("play");
    std::fs::create_dir_all(&play).unwrap();
    std::fs::copy(
        faces_dir().join("negatives/orange.jpg"),
        play.join("000_orange.jpg"),
    )
    .unwrap();
    let broker = Broker::start();
    let web_port = free_port();
    let toml = format!(
        "[device]\nid = \"door\"\n[gallery]\ndb = \"{db_s}\"\n\
         [[cameras]]\nname = \"door\"\nsource = \"dir:{}\"\nfps = 5.0\nframes_per_image = 5\n\
         repeat = true\n\
         [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {}\n\
         [web]\nlisten = \"127.0.0.1:{web_port}\"\n",
        play.display(),
        broker.port()
    );
    std::fs::write(dir.join("faced.toml"), toml).unwrap();
    let daemon = Daemon::start(
        &["--config", dir.join("faced.toml").to_str().unwrap()],
        &[("FACED_LOG", "info"), ("FACED_WEB__ENABLED", "true")],
    );
    daemon.wait_for(&["web console listening"], Duration::from_secs(60));
    Unit {
        daemon,
        _broker: broker,
        web_port,
        token,
        play,
        alice: faces_dir().join(&photos[3]),
    }
}

/// docs/prometheus/prometheus.yml as written but for the interval (1 s), the target (the
/// unit), the token file and the rules' path, checked by promtool; returns its path.
fn prometheus_config(promtool_bin: &Path, dir: &Path, web_port: u16) -> PathBuf {
    let cfg = std::fs::read_to_string(doc("docs/prometheus/prometheus.yml")).unwrap();
    let edited = cfg
        .replace("15s", "1s")
        .replace("door.local:8080", &format!("127.0.0.1:{web_port}"))
        .replace(
            "/etc/prometheus/faced.token",
            dir.join("faced.token").to_str().unwrap(),
        )
        .replace(
            "- faced-rules.yml",
            &format!("- {}", doc("docs/prometheus/faced-rules.yml").display()),
        );
    let settings: Vec<&str> = edited
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    for gone in ["15s", "door.local", "/etc/prometheus", "- faced-rules.yml"] {
        assert!(
            !settings.iter().any(|l| l.contains(gone)),
            "{gone} left in {edited}"
        );
    }
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, edited).unwrap();
    promtool(promtool_bin, &["check", "config", config.to_str().unwrap()]);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_daemon_and_runs_the_dashboard_and_rules() {
    let Some((prometheus, promtool_bin)) = prometheus_bins() else {
        return;
    };
    let _heavy = crate::util::alone_async().await;
    let started = Instant::now();
    let rules = doc("docs/prometheus/faced-rules.yml");
    let out = promtool(&promtool_bin, &["check", "rules", rules.to_str().unwrap()]);
    let rule_count: usize = out
        .split_once("SUCCESS: ")
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let unit = tokio::task::block_in_place(|| start_unit(dir));
    scope_is_enforced(&format!("http://127.0.0.1:{}", unit.web_port), &unit.token).await;
    let config = prometheus_config(&promtool_bin, dir, unit.web_port);
    let prom = Prometheus::start(&prometheus, dir, &config);
    let secs = Duration::from_secs;
    prom.wait_value("up{job=\"faced\"}", secs(30), |v| v == 1.0)
        .await;

    // Frame counters increase from one scrape to a later one.
    for counter in [
        "faced_frames_captured_total",
        "faced_frames_processed_total",
    ] {
        let q = format!("{counter}{{camera=\"door\"}}");
        let first = prom.wait_value(&q, secs(10), |v| v > 0.0).await;
        prom.wait_value(&q, secs(20), |v| v > first).await;
    }
    // A quantile of the frame-latency histogram is a finite number of seconds.
    let q = "histogram_quantile(0.9, sum by (le) (rate(faced_frame_seconds_bucket[10s])))";
    let p90 = prom.wait_value(q, secs(20), f64::is_finite).await;
    assert!(p90 > 0.0 && p90 <= 10.0, "frame p90 {p90}");

    // Nobody recognized yet; then Alice comes to the door and the counter moves.
    let recognized = "faced_events_total{type=\"recognized\"}";
    prom.wait_value(recognized, secs(10), |v| v == 0.0).await;
    std::fs::copy(&unit.alice, unit.play.join("001_alice.jpg")).unwrap();
    prom.wait_value(recognized, secs(60), |v| v >= 1.0).await;
    prom.wait_value("faced_mqtt_connected", secs(10), |v| v == 1.0)
        .await;
    prom.wait_value("faced_mqtt_publish_seconds_count", secs(20), |v| v >= 1.0)
        .await;
    prom.wait_value("faced_gallery_people", secs(5), |v| v == 1.0)
        .await;
    let ttr = "histogram_quantile(0.5, sum by (le) (faced_time_to_recognition_seconds_bucket))";
    prom.wait_value(ttr, secs(10), f64::is_finite).await;

    dashboard_queries_run(&prom).await;
    rules_evaluate(&prom, rule_count).await;
    drop(prom);
    drop(unit);
    eprintln!("metrics test took {:?}", started.elapsed());
}

/// Every panel query of the dashboard runs; those about what the test unit has return data.
async fn dashboard_queries_run(prom: &Prometheus) {
    let here = [
        "faced_frames",
        "faced_frame_seconds",
        "faced_events",
        "faced_mqtt_connected",
        "faced_gallery",
        "process_cpu",
        "faced_console_requests",
    ];
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{queries:?}");
    for (panel, expr) in &queries {
        let q = expr.replace("$instance", ".*");
        let r = prom.query(&q).await;
        let samples = r.unwrap_or_else(|e| panic!("panel {panel:?}: {q}: {e}"));
        if here.iter().any(|m| q.contains(m)) {
            assert!(!samples.is_empty(), "panel {panel:?}: {q} returned nothing");
        }
    }
}

/// Every alert rule (`count` of them) has been evaluated against the unit's series without
/// error.
async fn rules_evaluate(prom: &Prometheus, count: usize) {
    let t = Instant::now();
    loop {
        let groups = prom.api("rules", None).await.unwrap();
        let rules: Vec<Value> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        assert_eq!(rules.len(), count, "{groups}");
        for r in &rules {
            assert_eq!(r["health"], "ok", "rule {}: {}", r["name"], r["lastError"]);
        }
        let evaluated = |r: &Value| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        };
        if rules.iter().all(evaluated) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "rules not evaluated: {groups}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The metrics token reads `/metrics` and is refused everywhere else (403); anonymous callers
/// get 401 at `/metrics`.
async fn scope_is_enforced(base: &str, token: &str) {
    let c = reqwest::Client::new();
    let res = c
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ctype = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let text = res.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("faced_frames_captured_total{camera=\"door\"}"),
        "{text}"
    );
    let anon = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    for r in faced::web::route_table() {
        use faced::web::Access;
        if matches!(r.access, Access::Public | Access::Metrics) {
            continue;
        }
        let path = r
            .path
            .replace("{camera}", "door")
            .replace("{id}", "1")
            .replace("{*rest}", "x");
        let method = reqwest::Method::from_bytes(r.method.as_str().as_bytes()).unwrap();
        let res = c
            .request(method, format!("{base}{path}"))
            .bearer_auth(token)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body = res.text().await.unwrap();
        assert_eq!(status, 403, "{} {path}: {body}", r.method);
        assert!(
            body.contains("scope is metrics"),
            "{} {path}: {body}",
            r.method
        );
    }
}
