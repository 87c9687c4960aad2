//! The console in a real headless Chromium: sign in, watch the live overlay
//! draw a box, enroll a person from fixture photos through the People page, see a recognised
//! event on the Events page and mark it "not NAME", read the Reports and export CSV. Screenshots
//! of every page go to `target/screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test is skipped with a loud
//! message, unless `CI` is set: then it fails.

use crate::util::daemon as daemon_util;
use crate::util::web as web_util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use faced::base::RealClocks;
use faced::events::EventKind;
use faced::gallery::{Gallery, GalleryOptions};
use faced::web::WebConfig;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use web_util::{PASSWORD, TestServer, aligned_crop_jpeg, analyzer, fixture, insert_event};

pub(crate) fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/bin", "/usr/lib/chromium"].map(PathBuf::from));
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

pub(crate) struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn shots() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub(crate) async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots().join(name), png).unwrap();
}

pub(crate) async fn wait_js(c: &Client, what: &str, js: &str) -> Value {
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.execute(js, vec![]).await.unwrap();
        if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
            return v;
        }
        if std::time::Instant::now() > end {
            shot(c, &format!("failed-{}.png", what.replace(' ', "-"))).await;
            panic!("timed out waiting for {what} ({js})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Chromium under chromedriver, or `None` (with a loud message) when they are not installed;
/// under `CI` their absence fails the test instead.
pub(crate) async fn start_chromium() -> Option<(Driver, Client, tempfile::TempDir)> {
    let (Some(chromium), Some(driver)) = (
        find(&["chromium", "chromium-browser"]),
        find(&["chromedriver"]),
    ) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "chromium and chromedriver are required under CI: apt-get install -y chromium chromium-driver"
            );
        }
        eprintln!(
            "\n\n*** SKIPPING the browser test: chromium/chromedriver not found. Install them with\n***   apt-get install -y chromium chromium-driver\n*** (under CI=true this test fails instead)\n"
        );
        return None;
    };

    let port = free_port();
    let driver_proc = Driver(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1280,1000",
                     format!("--user-data-dir={}", profile.path().display())],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut c = None;
    for _ in 0..50 {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => {
                c = Some(client);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let c = c.expect("connect to chromedriver");
    Some((driver_proc, c, profile))
}

/// Signs in to the console at `base` as `admin` with the test password.
pub(crate) async fn sign_in(c: &Client, base: &str) {
    c.goto(base).await.unwrap();
    c.wait()
        .for_element(Locator::Id("login-name"))
        .await
        .unwrap();
    shot(c, "login.png").await;
    c.find(Locator::Id("login-name"))
        .await
        .unwrap()
        .send_keys("admin")
        .await
        .unwrap();
    c.find(Locator::Id("login-password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Css("#login-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(c, "nav", "return !document.getElementById('nav').hidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_headless_chromium() {
    // Chromium and the models keep the cores busy: not beside a timed test of another module.
    let _turn = crate::util::beside_others_async().await;
    let srv = TestServer::start(true, WebConfig::default()).await;
    // The fake camera shows img1.jpg; the overlay boxes its face as the pipeline would.
    let frame = faced::vision::image::load(&fixture("img1.jpg"), &Default::default()).unwrap();
    let bbox = analyzer().lock().unwrap().analyze(&frame).unwrap()[0]
        .detection
        .bbox;
    let live = srv.live.clone();
    let emitter = tokio::spawn(async move {
        for i in 0.. {
            live.emit(i, bbox, None, Some(0.31));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let Some((_driver, c, _profile)) = start_chromium().await else {
        return;
    };

    sign_in(&c, &srv.base).await;

    // Live: the overlay canvas draws a box (count opaque pixels).
    let painted = wait_js(
        &c,
        "overlay box",
        "const c = document.getElementById('live-overlay'); if (!c.width) return 0;
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;",
    )
    .await;
    assert!(painted.as_u64().unwrap() > 100, "{painted}");
    wait_js(
        &c,
        "live image",
        "const i = document.getElementById('live-img'); return i.complete && i.naturalWidth > 0",
    )
    .await;
    wait_js(
        &c,
        "stats",
        "return document.getElementById('live-stats').textContent.includes('fps')",
    )
    .await;
    shot(&c, "live.png").await;

    // People: enroll Alice from three photos through the page.
    c.goto(&format!("{}/#people", srv.base)).await.unwrap();
    c.wait().for_element(Locator::Id("add-name")).await.unwrap();
    c.find(Locator::Id("add-name"))
        .await
        .unwrap()
        .send_keys("Alice")
        .await
        .unwrap();
    let files: Vec<String> = ["img1.jpg", "img2.jpg", "img4.jpg"]
        .iter()
        .map(|f| fixture(f).display().to_string())
        .collect();
    c.find(Locator::Id("add-files"))
        .await
        .unwrap()
        .send_keys(&files.join("\n"))
        .await
        .unwrap();
    c.find(Locator::Id("add-check"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        "verdicts",
        "return document.querySelectorAll('#add-samples .sample.ok img').length === 3",
    )
    .await;
    wait_js(&c, "crops", "return [...document.querySelectorAll('#add-samples img')].every(i => i.complete && i.naturalWidth > 0)").await;
    shot(&c, "people-upload.png").await;
    c.find(Locator::Id("add-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        "Alice listed",
        "return !!document.querySelector('li.person[data-person=\"Alice\"]')",
    )
    .await;
    wait_js(&c, "thumbnail", "const i = document.querySelector('li.person img'); return i && i.complete && i.naturalWidth > 0").await;
    let text = wait_js(
        &c,
        "sample count",
        "return document.querySelector('li.person').textContent",
    )
    .await;
    assert!(text.as_str().unwrap().contains("3 samples"), "{text}");
    shot(&c, "people.png").await;

    // Events: an older unknown face, then the real pipeline plays an unseen photo of Alice
    // (img5.jpg) into the same database while the Events page is open; the page shows it.
    let unknown = insert_event(
        &srv.db,
        &srv.key_path(),
        EventKind::Unknown,
        None,
        Some(0.21),
        Some(aligned_crop_jpeg("img8.jpg")),
    );
    // As Frigate companion mode stores one: the page names the Frigate event.
    rusqlite::Connection::open(&srv.db)
        .unwrap()
        .execute(
            "UPDATE event SET frigate_id = '1764500002.3-strngr' WHERE id = ?1",
            [unknown],
        )
        .unwrap();
    c.goto(&format!("{}/#events", srv.base)).await.unwrap();
    wait_js(
        &c,
        "unknown event",
        "return !!document.querySelector('li.event')",
    )
    .await;
    let frigate = wait_js(
        &c,
        "Frigate event id",
        "const e = document.querySelector('li.event .frigate'); return e && e.textContent",
    )
    .await;
    assert_eq!(frigate, "Frigate event 1764500002.3-strngr");
    let (db, key, dir) = (srv.db.clone(), srv.key_path(), srv.dir.path().to_path_buf());
    let pipeline = tokio::task::spawn_blocking(move || {
        let play = daemon_util::play_dir(&dir, &["img5.jpg"]);
        let cfg = daemon_util::config(&dir, &play, 5, 10.0);
        assert_eq!(
            cfg.raw.gallery.db, db,
            "the pipeline records into the console's database"
        );
        // A second Gallery on the same file, opened after the page enrolled Alice.
        let gallery = Gallery::open(&db, &GalleryOptions::default()).unwrap();
        daemon_util::start_pipeline(&cfg, gallery, &key, Arc::new(RealClocks))
    })
    .await
    .unwrap();
    // The page polls for new events; no reload.
    let who = wait_js(
        &c,
        "recognized event",
        "const e = document.querySelector('li.event .who'); return e && e.textContent.startsWith('Alice') && e.textContent",
    )
    .await;
    assert!(who.as_str().unwrap().starts_with("Alice"), "{who}");
    let (p, writer) = pipeline;
    tokio::task::spawn_blocking(move || {
        p.stop();
        writer.shutdown();
    })
    .await
    .unwrap();
    assert!(
        c.execute(
            "return document.getElementById('event-more').offsetParent === null",
            vec![]
        )
        .await
        .unwrap()
        .as_bool()
        .unwrap(),
        "no \"Older events\" button for two events"
    );
    wait_js(&c, "snapshots", "return [...document.querySelectorAll('li.event img')].every(i => i.complete && i.naturalWidth > 0)").await;
    shot(&c, "events.png").await;
    c.find(Locator::Css("li.event .actions button.danger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let effect = wait_js(
        &c,
        "not-Alice effect",
        "const e = document.querySelector('li.event .effect'); return e && e.textContent",
    )
    .await;
    assert!(effect.as_str().unwrap().contains("not Alice"), "{effect}");
    assert!(!effect.as_str().unwrap().contains("now: Alice"), "{effect}");
    shot(&c, "events-not-person.png").await;

    // Reports: chart drawn, CSV export has Alice.
    c.goto(&format!("{}/#reports", srv.base)).await.unwrap();
    wait_js(
        &c,
        "chart",
        "return document.querySelectorAll('#rp-days svg rect').length > 0",
    )
    .await;
    let csv = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(document.getElementById('rp-csv-people').href).then(r => r.text()).then(done);",
            vec![],
        )
        .await
        .unwrap();
    assert!(csv.as_str().unwrap().contains(",Alice,"), "{csv}");
    shot(&c, "reports.png").await;

    // System.
    c.goto(&format!("{}/#system", srv.base)).await.unwrap();
    wait_js(
        &c,
        "system",
        "return document.querySelectorAll('#sys-info dt').length > 3",
    )
    .await;
    shot(&c, "system.png").await;

    // Audit: the page lists what was done above, by whom; its CSV link exports the rows.
    c.goto(&format!("{}/#audit", srv.base)).await.unwrap();
    let row = wait_js(
        &c,
        "audit rows",
        "const r = [...document.querySelectorAll('#audit-rows tr')].find(t => t.textContent.includes('not this person')); return r && r.textContent",
    )
    .await;
    assert!(row.as_str().unwrap().contains("admin (user)"), "{row}");
    let csv = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(document.getElementById('af-csv').href).then(r => r.text()).then(done);",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        csv.as_str().unwrap().contains(",not_this_person,person,"),
        "{csv}"
    );
    shot(&c, "audit.png").await;

    // A phone-sized window.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{}/#people", srv.base)).await.unwrap();
    wait_js(
        &c,
        "people on phone",
        "return !!document.querySelector('li.person')",
    )
    .await;
    shot(&c, "people-phone.png").await;

    emitter.abort();
    c.close().await.unwrap();
}
