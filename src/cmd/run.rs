//! `faced run`: the daemon. Loads the configuration, opens the gallery database, loads the
//! models, starts the cameras, the vision thread, the event writer, MQTT and the web console,
//! tells systemd it is ready, and keeps going through faults until SIGTERM.
//!
//! Signals: SIGTERM / SIGINT stop cleanly (cameras stop, tracks end with `left` events, the
//! event queue is written, the MQTT outbox drains briefly, the database closes) and exit 0; a
//! second one exits at once. SIGHUP re-reads the config (thresholds, detector scores, tracker
//! and cool-down settings; sources and camera lists need a restart) and reloads the gallery.
//! The gallery is also reloaded, without a signal, within [`GALLERY_POLL`] of another process
//! (`faced enroll`, `faced people`) writing it: see `Gallery::changed_elsewhere`.
//!
//! GPIO (`[gpio]`, docs/gpio.md): started before the pipeline when `gpio.enabled`, so a pin that
//! is taken or a binary without the backend fails the start with a message naming the key; the
//! pipeline then drives the relay, the status LED and PIR gating. The handle is dropped after the
//! pipeline stopped, which releases the relay and turns the LED off.
//!
//! The console: an invalid `[web]` section is a configuration error and stops the start (exit
//! status 2) like any other key; only a console that cannot bind its (valid) address is logged
//! while recognition goes on, since the door matters more than the console.
//!
//! systemd (`Type=notify`): READY=1 once the database is open, the models are loaded and a
//! first frame arrived (or 10 s passed: a missing camera is retried in the background, not a
//! reason to fail the start); WATCHDOG=1 every half watchdog period while the vision thread is
//! not stuck (its heartbeat fresh for this machine's frame pace), so a stuck pipeline gets the
//! service restarted and a slow first frame does not.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use faced::base::RealClocks;
use faced::config::{Config, DEFAULT_PATH};
use faced::db::backup;
use faced::events::store::{EventStore, EventWriter, StoreOptions};
use faced::gallery::{EnrollTarget, Gallery, GalleryOptions};
use faced::pipeline::Pipeline;
use faced::vision::Analyzer;
use faced::vision::detect::DetectorConfig;
use faced::web::live::Live;
use faced::web::live::MqttStatus;
use faced::web::{AppState, Deps, SharedAnalyzer};
use faced::{Error, Kind};
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};

mod metrics;

/// Run the daemon: cameras → recognition → events (SQLite, MQTT) and the web console.
///
/// Without a config file (default /etc/faced/faced.toml) and without cameras, faced plays the
/// bundled sample photos. Environment variables FACED_<SECTION>__<KEY> override config keys;
/// FACED_LOG sets the log filter (e.g. `debug`, `faced=debug,info`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file. When the default path does not exist, the built-in default is used.
    #[arg(long, short, env = "FACED_CONFIG")]
    pub config: Option<PathBuf>,
    /// Camera source overriding the first camera's (the others are not started):
    /// dir:PATH, v4l2:/dev/videoN, http://HOST/PATH or pattern.
    #[arg(long)]
    pub source: Option<String>,
}

/// Loads the configuration as `run` and `check-config` do: an explicit `--config` must
/// exist; the default path may be absent (then the built-in default is used, with a log line).
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => {
            let (cfg, existed) = Config::load_or_default(Path::new(DEFAULT_PATH))?;
            if !existed {
                tracing::info!(
                    "no config file at {DEFAULT_PATH}: using the built-in default (plays the sample photos \
                     from {}); see faced.toml in the source tree or docs/config.md",
                    faced::config::samples_dir().display()
                );
            }
            Ok(cfg)
        }
    }
}

/// Checks what can be checked before starting anything, with messages that say what to do.
fn preflight(cfg: &Config) -> anyhow::Result<()> {
    let db = &cfg.raw.gallery.db;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(Error::precondition(format!(
            "the folder {} for the database (gallery.db = {}) does not exist; create it \
             (`sudo install -d -o $USER {}`), or point gallery.db / FACED_GALLERY__DB elsewhere",
            dir.display(),
            db.display(),
            dir.display()
        ))
        .into());
    }
    for cam in &cfg.cameras {
        faced::capture::check_compiled(cam)?;
    }
    Ok(())
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut cfg = load_config(args.config.as_deref())?;
    if let Some(s) = &args.source {
        cfg.override_source(s)?;
    }
    preflight(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("faced-rt")
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let end = rt.block_on(daemon(cfg, args))?;
    drop(rt);
    match end {
        End::Stopped => Ok(ExitCode::SUCCESS),
        End::Restart => {
            // The same binary with the same arguments, in this process: under systemd it keeps
            // its PID (the unit stays active and sees RELOADING, then READY), and a staged
            // restore is applied by the new start before anything opens the database. Every file
            // descriptor Rust opened is close-on-exec, so the database lock is released.
            use std::os::unix::process::CommandExt;
            tracing::info!("restarting");
            let e = std::process::Command::new("/proc/self/exe")
                .args(std::env::args_os().skip(1))
                .exec();
            Err(anyhow::anyhow!("cannot restart faced: {e}"))
        }
    }
}

/// How the daemon ended.
enum End {
    /// SIGTERM/SIGINT: exit.
    Stopped,
    /// The console staged a restore: start again in this process.
    Restart,
}

/// Takes the database's lock (one daemon per database; `faced restore` checks it) and applies
/// a restore staged by the console or by `faced restore` while this daemon ran; returns what
/// the restore replaced, if one was applied.
fn claim_database(cfg: &Config) -> anyhow::Result<(backup::DbLock, Option<backup::Applied>)> {
    let db = &cfg.raw.gallery.db;
    let lock = backup::DbLock::try_acquire(db)?.ok_or_else(|| {
        Error::precondition(format!(
            "another faced run has {} open (it holds {}.lock); stop it first",
            faced::db::describe(db),
            db.display()
        ))
    })?;
    let key = cfg.raw.gallery.key_path.clone().unwrap_or_else(|| {
        let mut p = db.as_os_str().to_owned();
        p.push(".key");
        PathBuf::from(p)
    });
    let applied = backup::apply_staged(db, &key)?;
    if let Some(a) = &applied {
        tracing::warn!(
            db = %db.display(),
            previous = %a.previous.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
            "restored the database from a backup; the previous one is kept"
        );
    }
    Ok((lock, applied))
}

/// Starts `[backup]`'s scheduled backups when a folder is set.
fn start_backups(cfg: &Config, key_path: &Path) -> anyhow::Result<Option<backup::Scheduler>> {
    let b = &cfg.raw.backup;
    let Some(folder) = &b.folder else {
        return Ok(None);
    };
    let pf = b.passphrase_file.as_deref().unwrap_or(Path::new(""));
    let passphrase = backup::Passphrase::from_file(pf)
        .map_err(|e| Error::new(e.kind(), format!("backup.passphrase_file: {}", e.message())))?;
    let s = backup::Schedule {
        db: cfg.raw.gallery.db.clone(),
        key_path: key_path.to_path_buf(),
        folder: folder.clone(),
        passphrase,
        every: Duration::from_secs_f64(b.every_hours * 3600.0),
        keep: b.keep as usize,
        device: cfg.raw.device.id.clone(),
    };
    Ok(Some(backup::Scheduler::start(s, Arc::new(RealClocks))?))
}

async fn daemon(cfg: Config, args: Args) -> anyhow::Result<End> {
    let started = Instant::now();
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let source_note = match &cfg.path {
        Some(p) => p.display().to_string(),
        None => "built-in default".into(),
    };
    tracing::info!(
        config = source_note,
        device = cfg.raw.device.id,
        cameras = cfg.cameras.len(),
        "faced starting"
    );

    // Database (gallery + events + outbox, one file).
    let (db_lock, restored) = claim_database(&cfg)?;
    let db = cfg.raw.gallery.db.clone();
    let gopts = GalleryOptions {
        key_path: cfg.raw.gallery.key_path.clone(),
        unit: Some(cfg.raw.device.id.clone()),
        ..Default::default()
    };
    let gallery = Gallery::open(&db, &gopts)?;
    let key_path = gallery.key_path().to_path_buf();
    tracing::info!(db = %db.display(), people = gallery.people()?.len(), "gallery open");
    let audit = gallery.audit();
    if let Some(a) = &restored {
        super::audit::note_restore_applied(&audit, &faced::audit::By::system("faced run"), a);
    }
    super::audit::retention(&audit, &cfg.raw.audit).await;
    let gallery = Arc::new(Mutex::new(gallery));

    // Events, with MQTT when enabled.
    let clock = Arc::new(RealClocks);
    let mut store = EventStore::open(
        &db,
        &key_path,
        StoreOptions::from(&cfg.raw.events),
        clock.clone(),
    )?;
    // The command key lives beside the gallery key unless configured.
    let mut mqtt_cfg = cfg.raw.mqtt.clone();
    mqtt_cfg
        .command_key
        .get_or_insert_with(|| faced::mqtt::auth::default_key_path(&key_path));
    let (mqtt, mut commands) = faced::mqtt::Mqtt::start(&mqtt_cfg, &cfg.raw.device.id, &db)?;
    // The gallery's people epoch that MQTT was last told of.
    let mut announced = 0u64;
    if mqtt.is_enabled() {
        store.add_sink(Box::new(faced::events::mqtt_sink::MqttSink::new(
            mqtt.clone(),
        )));
        announce(&mqtt, &gallery, &cfg, &mut announced);
    }
    let writer = EventWriter::spawn(store)?;
    let backups = start_backups(&cfg, &key_path)?;

    // Unknown visitors: strangers grouped by face, summarised on MQTT.
    let visitors = if cfg.raw.visitors.enabled {
        let v = faced::visitors::Visitors::open(
            &db,
            &key_path,
            cfg.raw.visitors.clone(),
            Default::default(),
            clock.clone(),
        )?;
        tracing::info!(visitors = v.len(), "unknown visitors loaded");
        if mqtt.is_enabled() {
            let m = mqtt.clone();
            let publish =
                move |s: &faced::visitors::Summary, face: Option<&[u8]>, erased: &[i64]| {
                    // Withdrawn first: the summary after an erase no longer names them.
                    m.forget_visitors(erased.to_vec());
                    if let Ok(json) = serde_json::to_vec(s) {
                        let face = face
                            .zip(s.last.as_ref())
                            .map(|(f, l)| (l.visitor_id, f.to_vec()));
                        m.publish_visitors(json, face);
                    }
                };
            publish(&v.summary(), None, &[]);
            v.set_listener(Box::new(publish));
        }
        Some(v)
    } else {
        None
    };

    // The fleet: the gallery shared with the site's other units through the broker.
    let fleet = if cfg.raw.fleet.enabled {
        Some(faced::fleet::Fleet::start(faced::fleet::FleetSetup {
            config: cfg.raw.fleet.clone(),
            mqtt: cfg.raw.mqtt.clone(),
            device_id: cfg.raw.device.id.clone(),
            db: db.clone(),
            cameras: cfg.cameras.len() as u32,
            gallery: gallery.clone(),
            clocks: clock.clone(),
            on_status: mqtt.is_enabled().then(|| {
                let m = mqtt.clone();
                Box::new(move |s: &faced::fleet::FleetSummary| {
                    if let Ok(json) = serde_json::to_vec(s) {
                        m.publish_fleet(json);
                    }
                }) as faced::fleet::StatusListener
            }),
        })?)
    } else {
        None
    };
    let mut fleet_changed = fleet.as_ref().map(|f| f.changed.clone());

    // GPIO, then models and cameras.
    let gpio = if cfg.raw.gpio.enabled {
        Some(faced::gpio::Gpio::start(&cfg.raw.gpio)?)
    } else {
        None
    };
    let pipeline = Pipeline::start_with_gpio(
        &cfg,
        gallery.clone(),
        Some(writer.sender()),
        clock,
        None,
        gpio.clone(),
        visitors.clone(),
    )?;
    let handle = pipeline.handle();
    if mqtt.is_enabled() {
        // Presence on MQTT follows who the cameras see.
        let m = mqtt.clone();
        handle.on_sighting(Box::new(move |s| {
            m.person_seen(faced::mqtt::PersonSeen {
                person_id: s.person_id,
                name: s.name,
                camera: s.camera,
                wall_ms: s.wall_ms,
            })
        }));
    }
    let choice = cfg.raw.inference.precision.choice();
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        precision = choice.precision.as_str(),
        configured = cfg.raw.inference.precision.as_str(),
        "models loaded ({} models: {}), cameras starting",
        choice.precision.as_str(),
        choice.reason
    );

    // Frigate companion: its own still-image analyzer (snapshots, like console uploads).
    let frigate = if cfg.raw.frigate.enabled {
        let analyzer = Analyzer::open(&cfg.raw.inference, DetectorConfig::default())?;
        Some(faced::frigate::Frigate::start(
            &cfg.raw.frigate,
            &cfg.raw.mqtt,
            &cfg.raw.device.id,
            faced::frigate::FrigateDeps {
                analyzer,
                gallery: gallery.clone(),
                events: writer.sender(),
                cooldown: handle.cooldown(),
                clocks: Arc::new(RealClocks),
            },
        )?)
    } else {
        None
    };

    // Web console.
    let (restart_tx, mut restart_rx) = tokio::sync::mpsc::channel::<()>(1);
    let restart: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let _ = restart_tx.try_send(());
    });
    let metrics = metrics::sources(metrics::Parts {
        pipeline: &handle,
        writer: &writer,
        gallery: &gallery,
        mqtt: &mqtt,
        db: &db,
        visitors: visitors.as_ref(),
        fleet: fleet.as_ref().map(|f| &f.stats),
    });
    let web = start_web(
        &cfg,
        &handle,
        &mqtt,
        &gallery,
        visitors.clone(),
        fleet.as_ref().map(|f| f.stats.clone()),
        restart,
        writer.health(),
        metrics,
    )
    .await?;

    // READY after a first frame (or 10 s: a missing camera is retried in the background).
    let t = Instant::now();
    let stats = handle.stats();
    while t.elapsed() < Duration::from_secs(10)
        && !stats.is_empty()
        && handle
            .stats()
            .iter()
            .all(|s| s.status != "running" && s.status != faced::pipeline::IDLE_STATUS)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = camera_summary(&handle);
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!(
        startup_ms = started.elapsed().as_millis() as u64,
        "ready: {status}"
    );

    // Watchdog: ping only while the vision thread goes round its loop.
    let watchdog = sd_notify::watchdog_enabled();
    let wd_handle = handle.clone();
    let wd_task = watchdog.map(|period| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                match wd_handle.vision_stuck(period) {
                    None => {
                        let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                    }
                    Some((age, allowed)) => tracing::error!(
                        "vision thread silent for {:.1} s (allowed {:.1} s); not pinging the \
                         watchdog",
                        age.as_secs_f32(),
                        allowed.as_secs_f32()
                    ),
                }
            }
        })
    });

    let mut status_tick = tokio::time::interval(Duration::from_secs(30));
    let mut audit_tick = tokio::time::interval(super::audit::RETENTION_EVERY);
    audit_tick.tick().await; // the first tick is now: retention just ran
    let mut gallery_tick = tokio::time::interval(GALLERY_POLL);
    gallery_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gallery_poll_failed = false;
    // The visitors summary counts the local day: published again when a new one begins.
    let mut day_tick = tokio::time::interval(Duration::from_secs(60));
    let mut summary_day = visitors
        .as_ref()
        .map(|v| v.summary().day)
        .unwrap_or_default();
    let mut end = End::Stopped;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            Some(()) = restart_rx.recv() => {
                tracing::info!("a restore was staged from the console: restarting to apply it");
                end = End::Restart;
                break;
            }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => reload(&args, &handle, &writer, &gallery, &gopts, &db, &cfg, visitors.as_deref()).await,
            Some(cmd) = commands.recv() => {
                let by = faced::audit::By::mqtt(mqtt.command_key_id().unwrap_or("?"));
                let outcome = command(&cmd, &by, &handle, &gallery, &gopts, &db).await;
                if let Err(e) = &outcome { tracing::warn!(verb = cmd.verb(), "MQTT command failed: {e}"); }
                mqtt.report_command(&cmd, outcome);
                if matches!(cmd, faced::mqtt::Command::ReloadGallery { .. } | faced::mqtt::Command::EnrollLastUnknown { .. }) {
                    announce(&mqtt, &gallery, &cfg, &mut announced);
                }
            }
            Ok(()) = async {
                match fleet_changed.as_mut() {
                    Some(c) => c.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                // A person replicated from another unit: Home Assistant learns of them too.
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Some(c) = fleet_changed.as_mut() { c.mark_unchanged(); }
                announce(&mqtt, &gallery, &cfg, &mut announced);
            }
            _ = gallery_tick.tick() => {
                // A person added, renamed or erased by the console, a command or the fleet:
                // Home Assistant learns of it, and what MQTT held about an erased one goes.
                let epoch = gallery.lock().unwrap_or_else(|p| p.into_inner()).people_epoch();
                if mqtt.is_enabled() && epoch != announced {
                    announce(&mqtt, &gallery, &cfg, &mut announced);
                }
                // `faced enroll` or `faced people` beside the daemon wrote the database: load
                // what they wrote, so that it is recognized (and replicated) without a SIGHUP.
                let changed = gallery.lock().unwrap_or_else(|p| p.into_inner()).changed_elsewhere();
                match changed {
                    Ok(false) => gallery_poll_failed = false,
                    Ok(true) => {
                        gallery_poll_failed = false;
                        match reload_gallery(&gallery, &gopts, &db).await {
                            Ok(n) => {
                                tracing::info!(samples = n, "the gallery changed in the database (another process, e.g. faced enroll): reloaded");
                                announce(&mqtt, &gallery, &cfg, &mut announced);
                            }
                            Err(e) => {
                                tracing::error!("the gallery changed in the database but cannot be reloaded, keeping the loaded one: {e}");
                                // Not again at every poll (a whole reload each time): at the next change.
                                let _ = gallery.lock().unwrap_or_else(|p| p.into_inner()).skip_changes_elsewhere();
                            }
                        }
                    }
                    // Said once, not every half second, until the check works again.
                    Err(e) if !gallery_poll_failed => {
                        gallery_poll_failed = true;
                        tracing::warn!("cannot check the database for gallery changes: {e}");
                    }
                    Err(_) => {}
                }
            }
            _ = day_tick.tick(), if visitors.is_some() && mqtt.is_enabled() => {
                if let Some(s) = visitors.as_deref().and_then(|v| v.summary_on_new_day(&mut summary_day))
                    && let Ok(json) = serde_json::to_vec(&s)
                {
                    mqtt.publish_visitors(json, None);
                }
            }
            _ = audit_tick.tick() => super::audit::retention(&audit, &cfg.raw.audit).await,
            _ = status_tick.tick() => {
                let s = camera_summary(&handle);
                let _ = sd_notify::notify(&[NotifyState::Status(&s)]);
                tracing::debug!("{s}");
            }
        }
    }

    // Clean shutdown; a second signal exits at once.
    let _ = sd_notify::notify(&[match end {
        End::Stopped => NotifyState::Stopping,
        End::Restart => NotifyState::Reloading,
    }]);
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("faced: second stop signal, exiting immediately");
        std::process::exit(1);
    });
    if let Some(t) = wd_task {
        t.abort();
    }
    if let Some(w) = web {
        w.abort();
    }
    tokio::task::spawn_blocking(move || {
        drop(frigate);
        drop(fleet);
        pipeline.stop();
        // Relay released and LED off once nothing can pulse them any more.
        drop(gpio);
        writer.shutdown();
    })
    .await
    .context("shutdown task failed")?;
    let report = mqtt.shutdown_drain(Duration::from_secs(5)).await;
    tracing::info!(?report, "MQTT stopped");
    drop(backups);
    drop(gallery);
    drop(db_lock);
    tracing::info!("faced stopped cleanly");
    Ok(end)
}

fn camera_summary(h: &faced::pipeline::Handle) -> String {
    let stats = h.stats();
    if stats.is_empty() {
        return "no camera of its own (Frigate companion)".into();
    }
    stats
        .iter()
        .map(|s| {
            // At READY a camera has given one frame, which is no rate yet: "0.0 fps" there
            // read as a stalled camera.
            let rate = if s.fps > 0.0 || s.status != "running" {
                format!("{:.1} fps", s.fps)
            } else {
                "first frame in".to_string()
            };
            format!("{}: {} {rate}, {} dropped", s.name, s.status, s.dropped)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Tells MQTT who is in the gallery (Home Assistant's entities; whoever is no longer there is
/// withdrawn from the broker) and notes the gallery's people epoch in `announced`.
fn announce(
    mqtt: &faced::mqtt::MqttHandle,
    gallery: &Arc<Mutex<Gallery>>,
    cfg: &Config,
    announced: &mut u64,
) {
    if !mqtt.is_enabled() {
        return;
    }
    let people = {
        let g = gallery.lock().unwrap_or_else(|p| p.into_inner());
        *announced = g.people_epoch();
        g.people()
    };
    let people = match people {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cannot list people for MQTT discovery: {e}");
            return;
        }
    };
    let people: Vec<faced::mqtt::PersonInfo> = people
        .into_iter()
        .map(|p| faced::mqtt::PersonInfo {
            id: p.id.0,
            name: p.name,
        })
        .collect();
    let cams: Vec<String> = cfg.cameras.iter().map(|c| c.name().to_string()).collect();
    mqtt.announce_people_and_cameras(&people, &cams);
}

/// How often the daemon looks for gallery changes made by another process (one read of a
/// one-row table): a person enrolled with the CLI is recognized within this, plus the reload.
const GALLERY_POLL: Duration = Duration::from_millis(500);

async fn reload_gallery(
    gallery: &Arc<Mutex<Gallery>>,
    gopts: &GalleryOptions,
    db: &Path,
) -> faced::Result<usize> {
    let (db, gopts) = (db.to_path_buf(), gopts.clone());
    let fresh = tokio::task::spawn_blocking(move || Gallery::open(&db, &gopts))
        .await
        .map_err(|e| Error::internal(format!("gallery reload task: {e}")))??;
    let n = fresh.index().len();
    *gallery.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
async fn reload(
    args: &Args,
    handle: &faced::pipeline::Handle,
    writer: &EventWriter,
    gallery: &Arc<Mutex<Gallery>>,
    gopts: &GalleryOptions,
    db: &Path,
    old: &Config,
    visitors: Option<&faced::visitors::Visitors>,
) {
    tracing::info!("SIGHUP: reloading the configuration and the gallery");
    match load_config(args.config.as_deref()) {
        Ok(cfg) => {
            handle.reload(&cfg);
            // Retention and the visit gap apply at once; turning visitors on or off needs a
            // restart (the pipeline and the console hold them from the start).
            if let Some(v) = visitors {
                v.set_config(cfg.raw.visitors.clone());
            }
            writer
                .sender()
                .set_options(StoreOptions::from(&cfg.raw.events));
            if cfg
                .cameras
                .iter()
                .map(|c| &c.source)
                .ne(old.cameras.iter().map(|c| &c.source))
            {
                tracing::warn!(
                    "camera sources or the camera list changed: restart faced to apply them"
                );
            }
        }
        Err(e) => tracing::error!("config reload failed, keeping the running settings: {e:#}"),
    }
    match reload_gallery(gallery, gopts, db).await {
        Ok(n) => tracing::info!(samples = n, "gallery reloaded"),
        Err(e) => tracing::error!("gallery reload failed, keeping the loaded one: {e}"),
    }
    // MQTT learns of the reloaded people at the next gallery poll: a new open is a new epoch.
}

async fn command(
    cmd: &faced::mqtt::Command,
    by: &faced::audit::By,
    handle: &faced::pipeline::Handle,
    gallery: &Arc<Mutex<Gallery>>,
    gopts: &GalleryOptions,
    db: &Path,
) -> faced::Result<Option<String>> {
    use faced::mqtt::Command;
    match cmd {
        Command::ReloadGallery { .. } => {
            let n = reload_gallery(gallery, gopts, db).await?;
            Ok(Some(format!("gallery reloaded: {n} samples")))
        }
        Command::SetThreshold {
            threshold, camera, ..
        } => {
            let cams = match camera {
                Some(c) => vec![c.clone()],
                None => handle.cameras(),
            };
            for c in &cams {
                handle.set_threshold(c, *threshold)?;
            }
            let audit = gallery.lock().unwrap_or_else(|p| p.into_inner()).audit();
            let (cams2, by, t) = (cams.clone(), by.clone(), *threshold);
            tokio::task::spawn_blocking(move || {
                super::audit::note_thresholds(&audit, &by, &cams2, t)
            });
            Ok(Some(format!(
                "threshold {threshold} on {}",
                cams.join(", ")
            )))
        }
        Command::EnrollLastUnknown {
            name,
            camera,
            add_to_existing,
            ..
        } => {
            let (cam, face) = handle.last_unknown(camera.as_deref()).ok_or_else(|| {
                Error::new(
                    Kind::NotFound,
                    "no unknown face seen since start (on that camera)".to_string(),
                )
            })?;
            let (gallery, name, add_to_existing) =
                (gallery.clone(), name.clone(), *add_to_existing);
            let by = by.clone();
            tokio::task::spawn_blocking(move || {
                let mut g = gallery.lock().unwrap_or_else(|p| p.into_inner());
                // A name alone never gives a face someone else's identity: adding to an existing
                // person must be asked for, and asking for it never creates one (a typo would).
                let to = if add_to_existing {
                    EnrollTarget::Existing(&name)
                } else {
                    EnrollTarget::New(&name)
                };
                let quality = serde_json::to_string(&face.quality).unwrap_or_else(|_| "{}".into());
                let source = format!("mqtt:enroll_last_unknown:camera={cam}");
                let sample = faced::gallery::NewSample {
                    kind: faced::gallery::SampleKind::Positive,
                    embedding: &face.embedding,
                    crop_jpeg: &face.crop_jpeg,
                    quality_json: &quality,
                    source: &source,
                };
                g.by(&by)
                    .enroll(to, &[sample])
                    .map_err(|e| match e.kind() {
                        Kind::Conflict if !add_to_existing => Error::new(
                            Kind::Conflict,
                            format!(
                                "{}; to add this face to them, send \"add_to_existing\": true",
                                e.message()
                            ),
                        ),
                        Kind::NotFound if add_to_existing => Error::not_found(format!(
                            "{} to add the face to; without \"add_to_existing\" a new person is \
                         created",
                            e.message()
                        )),
                        _ => e,
                    })?;
                Ok(Some(if add_to_existing {
                    format!("added the last unknown face from {cam} to {name}")
                } else {
                    format!("enrolled the last unknown face from {cam} as {name}")
                }))
            })
            .await
            .map_err(|e| Error::internal(format!("enroll task: {e}")))?
        }
    }
}

/// The MQTT connection state as the console shows it.
fn mqtt_status(mqtt: &faced::mqtt::MqttHandle, cfg: &faced::mqtt::MqttConfig) -> MqttStatus {
    use faced::mqtt::ConnectionState as C;
    let state = mqtt.connection_state();
    MqttStatus {
        enabled: !matches!(state, C::Disabled),
        connected: matches!(state, C::Connected),
        broker: cfg
            .enabled
            .then(|| format!("{}:{}", cfg.host, cfg.effective_port())),
        last_error: match state {
            C::Disconnected { error, .. } => Some(error),
            _ => None,
        },
    }
}

/// Starts the web console when `[web]` enables it; `Ok(None)` when disabled or when it cannot
/// start for a reason outside the configuration (logged: the daemon keeps recognising without a
/// console). An invalid setting is an error: a console silently missing is worse than a start
/// that names the key (`Config::validate` normally catches it before anything starts).
#[allow(clippy::too_many_arguments)] // each is a separate piece the console shows
async fn start_web(
    cfg: &Config,
    handle: &faced::pipeline::Handle,
    mqtt: &faced::mqtt::MqttHandle,
    gallery: &Arc<Mutex<Gallery>>,
    visitors: Option<Arc<faced::visitors::Visitors>>,
    fleet: Option<Arc<faced::fleet::FleetStats>>,
    restart: Arc<dyn Fn() + Send + Sync>,
    storage: Arc<faced::events::StorageHealth>,
    metrics: Arc<faced::metrics::Metrics>,
) -> faced::Result<Option<tokio::task::JoinHandle<()>>> {
    if !cfg.raw.web.enabled {
        return Ok(None);
    }
    let start = async {
        // Uploads and snapshots are still photos: multi-scale detection.
        let analyzer = Analyzer::open(&cfg.raw.inference, DetectorConfig::default())?;
        let (m, mcfg) = (mqtt.clone(), cfg.raw.mqtt.clone());
        let live = Live {
            handle: handle.clone(),
            mqtt: Some(Arc::new(move || mqtt_status(&m, &mcfg))),
        };
        let deps = Deps {
            gallery: gallery.clone(),
            analyzer: Arc::new(SharedAnalyzer(Arc::new(Mutex::new(analyzer)))),
            live: Arc::new(live),
            quality: Default::default(),
            threshold: cfg
                .cameras
                .first()
                .map_or(cfg.raw.frigate.threshold, |c| c.settings.threshold),
            restart: Some(restart),
            storage: Some(storage),
            precision: cfg.raw.inference.precision.choice(),
            visitors,
            fleet,
            metrics: Some(metrics),
        };
        let state = AppState::new(cfg.raw.web.clone(), deps)?;
        let addr = cfg.raw.web.listen_addr()?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::unavailable(format!(
                "cannot listen on {addr} for the console: {e}; set web.listen (or FACED_WEB__LISTEN) \
                 to a free address, or web.enabled = false"
            ))
        })?;
        Ok::<_, Error>((listener, state))
    };
    match start.await {
        Ok((listener, state)) => Ok(Some(tokio::spawn(async move {
            if let Err(e) = faced::web::serve(listener, state, std::future::pending()).await {
                tracing::error!("web console stopped: {e}");
            }
        }))),
        Err(e) if e.kind() == Kind::InvalidInput => Err(e),
        Err(e) => {
            tracing::error!("web console not started: {e}");
            Ok(None)
        }
    }
}
