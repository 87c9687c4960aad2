//! `faced.toml`: the daemon's configuration, in two layers (as ripgrep separates its parsed
//! arguments from the validated settings the program runs on).
//!
//! 1. [`RawConfig`]: the serde mirror of the file. Every section and key has a default and
//!    `deny_unknown_fields`, so a typo is an error instead of a silently ignored setting.
//! 2. [`Config`]: the validated form `faced run` uses — camera sources parsed into
//!    [`SourceSpec`], names checked, ranges checked, the bundled sample directory resolved.
//!
//! Loading order: the file is parsed into a TOML table; environment variables
//! `FACED_<SECTION>__<KEY>` (e.g. `FACED_MQTT__HOST`, `FACED_GALLERY__DB`,
//! `FACED_CAMERAS__0__THRESHOLD`) are written into that table; only then is it deserialised, so
//! overrides are type-checked exactly like the file. Every error names the file (and the
//! variables that were applied), the key path (`cameras[0].detector.min_score`) and the reason.
//!
//! With no camera configured, faced plays the bundled sample photos (a `dir:` source on
//! `/usr/share/faced/samples`, or this checkout's `tests/fixtures/faces`), so `faced run` does
//! something visible on a machine without a camera. `docs/config.md` and the example
//! `faced.toml` at the repository root mirror this file; keep the three in step.
//!
//! Config sits at the edge of the module graph: it may depend on the modules whose settings it
//! parses (each section's type lives with the module that uses it: [`WebConfig`] in `web`,
//! [`MqttConfig`] in `mqtt`, [`CameraConfig`] and [`SourceSpec`] in `capture`, …), and no module
//! below it imports `config`. The section types are re-exported here for callers of the loader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::capture::{Camera, CameraConfig, PACKAGED_SAMPLES, SourceSpec, stream_detector};
use crate::error::{Error, Result};
use crate::gpio::GpioConfig;
use crate::mqtt::MqttConfig;
use crate::vision::InferenceConfig;
use crate::web::WebConfig;

/// Where `faced run` and `faced check-config` look for the file by default.
pub const DEFAULT_PATH: &str = "/etc/faced/faced.toml";

/// Prefix of environment overrides; a variable counts only if it also contains `__`.
pub const ENV_PREFIX: &str = "FACED_";

/// The whole file, as written (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// `[device]`: this installation.
    pub device: DeviceConfig,
    /// `[[cameras]]`: one entry per camera; none = play the bundled sample photos.
    pub cameras: Vec<CameraConfig>,
    /// `[inference]`: runtime library, model folder, threads.
    pub inference: InferenceConfig,
    /// `[gallery]`: the database of enrolled people (and events).
    pub gallery: GalleryConfig,
    /// `[events]`: cool-down, snapshots, retention.
    pub events: EventsConfig,
    /// `[mqtt]`: broker connection (see docs/mqtt.md).
    pub mqtt: MqttConfig,
    /// `[web]`: the console.
    pub web: WebConfig,
    /// `[gpio]`: door relay and other outputs.
    pub gpio: GpioConfig,
    /// `[backup]`: scheduled encrypted backups.
    pub backup: BackupConfig,
    /// `[frigate]`: recognize the people an existing Frigate tracks (companion mode).
    pub frigate: crate::frigate::FrigateConfig,
    /// `[visitors]`: group unknown faces into visitors (docs/web.md, "Visitors").
    pub visitors: crate::visitors::VisitorsConfig,
    /// `[fleet]`: share the gallery with the site's other units (docs/fleet.md).
    pub fleet: crate::fleet::FleetConfig,
    /// `[audit]`: how long the audit trail is kept (docs/audit.md).
    pub audit: crate::audit::AuditConfig,
}

/// `[backup]`: the unit keeps its own encrypted backups (`faced backup` format) in a folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Folder for scheduled backups; none = no scheduled backups. Put it on another disk or a
    /// network share to survive the loss of the SD card.
    pub folder: Option<PathBuf>,
    /// File whose first line is the passphrase the archives are encrypted with (required with
    /// `folder`; at least 10 characters).
    pub passphrase_file: Option<PathBuf>,
    /// Hours between backups.
    pub every_hours: f64,
    /// Archives kept in `folder` (the oldest are deleted).
    pub keep: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            folder: None,
            passphrase_file: None,
            every_hours: 24.0,
            keep: 7,
        }
    }
}

/// `[device]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// Short id of this installation, used in MQTT topics (`faced/<id>/…`) and Home Assistant
    /// unique ids: 1–64 of `a-z 0-9 _ -`. Default `faced`.
    pub id: String,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig { id: "faced".into() }
    }
}

/// `[gallery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GalleryConfig {
    /// SQLite database (people, samples, events, MQTT outbox). Default
    /// `$STATE_DIRECTORY/faced.db` under systemd, else `/var/lib/faced/faced.db`.
    pub db: PathBuf,
    /// 32-byte key file that encrypts embeddings and face crops; default `<db>.key`.
    pub key_path: Option<PathBuf>,
}

impl Default for GalleryConfig {
    fn default() -> Self {
        let dir = std::env::var_os("STATE_DIRECTORY")
            .filter(|s| !s.is_empty())
            .map(|s| {
                // systemd may pass several colon-separated directories; the first is ours.
                let s = s.to_string_lossy().into_owned();
                PathBuf::from(s.split(':').next().unwrap_or_default())
            })
            .unwrap_or_else(|| PathBuf::from("/var/lib/faced"));
        GalleryConfig {
            db: dir.join("faced.db"),
            key_path: None,
        }
    }
}

/// `[events]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// After a `recognized` event for a person, further sightings of them are not reported for
    /// this many seconds (per person, all cameras).
    pub cooldown_secs: f64,
    /// After an `unknown` event on a camera, further unknown tracks there are not reported for
    /// this many seconds (0 = report every unknown track).
    pub unknown_cooldown_secs: f64,
    /// Store a JPEG crop of the face with each `recognized` / `unknown` event (encrypted).
    pub snapshots: bool,
    /// Delete events older than this many days (0 = keep regardless of age).
    pub retention_days: u32,
    /// Keep at most this many events, deleting the oldest (0 = no limit).
    pub retention_count: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            cooldown_secs: 60.0,
            unknown_cooldown_secs: 10.0,
            snapshots: true,
            retention_days: 30,
            retention_count: 10_000,
        }
    }
}

// Here rather than in `events::store`: the configuration sits at the edge and may depend on
// the modules it configures, never the reverse.
impl From<&EventsConfig> for crate::events::store::StoreOptions {
    fn from(c: &EventsConfig) -> Self {
        crate::events::store::StoreOptions {
            retention_days: c.retention_days,
            retention_count: c.retention_count,
            snapshots: c.snapshots,
        }
    }
}

/// The validated configuration `faced run` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from; `None` for the embedded default.
    pub path: Option<PathBuf>,
    /// Environment variables that were applied, by name (values are not kept: they may be
    /// secrets).
    pub env_applied: Vec<String>,
    /// The effective raw configuration (defaults filled in, overrides applied, camera sources
    /// resolved; at least one camera).
    pub raw: RawConfig,
    /// The cameras, in file order.
    pub cameras: Vec<Camera>,
}

/// The bundled sample photos: `/usr/share/faced/samples` when installed, else this checkout's
/// `tests/fixtures/faces`.
pub fn samples_dir() -> PathBuf {
    let packaged = PathBuf::from(PACKAGED_SAMPLES);
    if packaged.is_dir() {
        return packaged;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faces")
}

/// The camera the embedded default plays: the sample photos, each held for 5 frames at 5 fps.
pub fn sample_camera() -> CameraConfig {
    CameraConfig {
        name: "samples".into(),
        source: format!("dir:{}", samples_dir().display()),
        fps: 5.0,
        frames_per_image: 5,
        ..CameraConfig::default()
    }
}

fn origin_label(path: Option<&Path>, env_applied: &[String]) -> String {
    let mut s = match path {
        Some(p) => p.display().to_string(),
        None => "the built-in default configuration".to_string(),
    };
    if !env_applied.is_empty() {
        s.push_str(&format!(
            " (with environment overrides {})",
            env_applied.join(", ")
        ));
    }
    s
}

/// Longest `events.cooldown_secs` / `events.unknown_cooldown_secs`: a week.
pub const MAX_COOLDOWN_SECS: f64 = 7.0 * 86_400.0;

impl Config {
    /// Reads `path` and the process environment. A missing file is [`Kind::NotFound`]
    /// (callers that have a fallback check for it; see [`Config::load_or_default`]).
    ///
    /// [`Kind::NotFound`]: crate::Kind::NotFound
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                crate::Kind::NotFound
            } else {
                crate::Kind::InvalidInput
            };
            Error::new(
                kind,
                format!("cannot read config file {}: {e}", path.display()),
            )
        })?;
        Self::from_toml(&text, Some(path), std::env::vars())
    }

    /// As [`Config::load`], but a missing file gives the embedded default (plus environment
    /// overrides); the `bool` says whether the file existed.
    pub fn load_or_default(path: &Path) -> Result<(Config, bool)> {
        match Self::load(path) {
            Ok(c) => Ok((c, true)),
            Err(e) if e.kind() == crate::Kind::NotFound => {
                Ok((Self::from_toml("", None, std::env::vars())?, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Parses `text` (from `path`, or the embedded default when `None`), applies the
    /// `FACED_<SECTION>__<KEY>` variables among `env`, deserialises and validates.
    pub fn from_toml(
        text: &str,
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let file_label = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in default".into());
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Error::invalid(format!("{file_label} is not valid TOML: {e}"))
        })?;
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        env.sort();
        let mut env_applied = Vec::new();
        for (k, v) in &env {
            apply_env(&mut table, k, v)
                .map_err(|why| Error::invalid(format!("environment variable {k}: {why}")))?;
            env_applied.push(k.clone());
        }
        let origin = origin_label(path, &env_applied);
        prepare_cameras(&mut table);
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                Error::invalid(format!(
                    "{origin}: key {key}: {}",
                    clean_toml_msg(&e.inner().to_string())
                ))
            })?;
        Self::validate(raw, path, env_applied)
    }

    /// Turns a raw configuration into a validated one; errors name the key. Every section is
    /// checked here, `[mqtt]`, `[web]` and `[gpio]` by their own `validate()` (whether or not
    /// they are enabled), so `faced check-config` and the start of `faced run` reject the same
    /// files and no section's mistakes surface only when its feature starts.
    pub fn validate(
        mut raw: RawConfig,
        path: Option<&Path>,
        env_applied: Vec<String>,
    ) -> Result<Config> {
        let origin = origin_label(path, &env_applied);
        let err = |key: &str, why: String| Error::invalid(format!("{origin}: key {key}: {why}"));
        if !is_slug(&raw.device.id, 64) {
            return Err(err(
                "device.id",
                format!("{:?} must be 1–64 characters of a-z 0-9 _ -", raw.device.id),
            ));
        }
        if raw.inference.threads == 0 || raw.inference.threads > 64 {
            return Err(err(
                "inference.threads",
                format!("must be 1..=64, got {}", raw.inference.threads),
            ));
        }
        if raw.gallery.db.as_os_str().is_empty() {
            return Err(err("gallery.db", "must not be empty".into()));
        }
        // Bounded (not only finite): the pipeline turns them into `Duration`s, and a value past
        // what a `Duration` holds (1e300) stopped `faced run` with a panic after this check.
        for (key, v) in [
            ("events.cooldown_secs", raw.events.cooldown_secs),
            (
                "events.unknown_cooldown_secs",
                raw.events.unknown_cooldown_secs,
            ),
        ] {
            if !(0.0..=MAX_COOLDOWN_SECS).contains(&v) {
                return Err(err(
                    key,
                    format!("must be 0 to {MAX_COOLDOWN_SECS} seconds (a week), got {v}"),
                ));
            }
        }
        if !(raw.backup.every_hours > 0.0 && raw.backup.every_hours <= 8760.0) {
            return Err(err(
                "backup.every_hours",
                format!(
                    "must be > 0 and ≤ 8760 (a year), got {}",
                    raw.backup.every_hours
                ),
            ));
        }
        if !(1..=1000).contains(&raw.backup.keep) {
            return Err(err(
                "backup.keep",
                format!("must be 1..=1000, got {}", raw.backup.keep),
            ));
        }
        if raw.backup.folder.is_some() && raw.backup.passphrase_file.is_none() {
            return Err(err(
                "backup.passphrase_file",
                "is required with backup.folder: archives are always encrypted".into(),
            ));
        }
        // The sections' own checks name their keys (`web.listen = …`, `mqtt.port: …`).
        let section = |r: Result<()>| {
            r.map_err(|e| Error::new(e.kind(), format!("{origin}: {}", e.message())))
        };
        section(raw.mqtt.validate())?;
        section(raw.web.validate())?;
        section(raw.gpio.validate())?;
        section(raw.frigate.validate())?;
        section(raw.visitors.validate())?;
        section(raw.fleet.validate())?;
        section(raw.audit.validate())?;
        if raw.fleet.enabled && !raw.mqtt.enabled {
            return Err(err(
                "fleet.enabled",
                "needs mqtt.enabled = true: the broker carries the fleet's gallery".into(),
            ));
        }
        if raw.frigate.enabled && !raw.mqtt.enabled {
            return Err(err(
                "frigate.enabled",
                "needs mqtt.enabled = true, on the broker Frigate publishes to".into(),
            ));
        }
        if let Some(u) = &raw.web.public_url
            && !((u.starts_with("http://") || u.starts_with("https://"))
                && u.len() > "https://".len()
                && !u.chars().any(char::is_whitespace))
        {
            // It is printed as the setup link: a bare host name would be a link to nowhere.
            return Err(err(
                "web.public_url",
                format!(
                    "{u:?} must be an http:// or https:// URL such as \"http://door.local:8080\""
                ),
            ));
        }
        // No camera configured: play the sample photos, so that a first start shows something;
        // except on a Frigate companion, whose faces come from Frigate and which needs none.
        if raw.cameras.is_empty() && !raw.frigate.enabled {
            raw.cameras.push(sample_camera());
        }
        let base_dir = path.and_then(Path::parent).map(Path::to_path_buf);
        let mut cameras = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, c) in raw.cameras.iter_mut().enumerate() {
            let k = |name: &str| format!("cameras[{i}].{name}");
            if !is_slug(&c.name, 32) {
                return Err(err(
                    &k("name"),
                    format!("{:?} must be 1–32 characters of a-z 0-9 _ -", c.name),
                ));
            }
            if !seen.insert(c.name.clone()) {
                return Err(err(
                    &k("name"),
                    format!("{:?} is used by two cameras; names must be unique", c.name),
                ));
            }
            let source = SourceSpec::parse(&c.source)
                .map_err(|e| err(&k("source"), e.message().to_string()))?;
            let source = resolve_source(source, base_dir.as_deref());
            c.source = source.to_string();
            if let Some(f) = &c.credentials_file {
                let SourceSpec::Rtsp(url) = &source else {
                    return Err(err(
                        &k("credentials_file"),
                        "only an rtsp:// camera reads a credentials file".to_string(),
                    ));
                };
                if url.split('/').nth(2).is_some_and(|h| h.contains('@')) {
                    return Err(err(
                        &k("credentials_file"),
                        "the source URL has credentials too; keep them only in the file"
                            .to_string(),
                    ));
                }
                let f = match &base_dir {
                    Some(b) if f.is_relative() => b.join(f),
                    _ => f.clone(),
                };
                if !f.is_file() {
                    return Err(err(
                        &k("credentials_file"),
                        format!("{} is not a readable file", f.display()),
                    ));
                }
                c.credentials_file = Some(f);
            }
            if !(16..=7680).contains(&c.width) || !(16..=4320).contains(&c.height) {
                let key = if (16..=7680).contains(&c.width) {
                    "height"
                } else {
                    "width"
                };
                return Err(err(
                    &k(key),
                    format!(
                        "frame size {}×{} is outside 16×16..7680×4320",
                        c.width, c.height
                    ),
                ));
            }
            if !(c.fps > 0.0 && c.fps <= 240.0) {
                return Err(err(
                    &k("fps"),
                    format!("must be within (0, 240], got {}", c.fps),
                ));
            }
            for (key, v, max) in [
                ("frames_per_image", c.frames_per_image, 100_000),
                ("detect_every", c.detect_every, 1000),
                ("embed_every", c.embed_every, 100_000),
                ("track_max_missed", c.track_max_missed, 10_000),
            ] {
                if v == 0 || v > max {
                    return Err(err(&k(key), format!("must be 1..={max}, got {v}")));
                }
            }
            if !(c.votes >= 1 && c.votes <= 50) {
                return Err(err(&k("votes"), format!("must be 1..=50, got {}", c.votes)));
            }
            for (key, v) in [
                ("threshold", c.threshold),
                ("track_iou", c.track_iou),
                ("liveness_threshold", c.liveness_threshold),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(err(&k(key), format!("must be within 0..1, got {v}")));
                }
            }
            if !(c.min_face_px >= 0.0 && c.min_face_px.is_finite()) {
                return Err(err(
                    &k("min_face_px"),
                    format!("must be ≥ 0, got {}", c.min_face_px),
                ));
            }
            c.detector.validate().map_err(|e| {
                // The detector's messages start with the field (`min_score must be …`): name the
                // full key, as every other message does.
                let m = e.message();
                match m.split_once(' ') {
                    Some((field, why))
                        if field.chars().all(|c| c.is_ascii_lowercase() || c == '_') =>
                    {
                        err(&k(&format!("detector.{field}")), why.to_string())
                    }
                    _ => err(&k("detector"), m.to_string()),
                }
            })?;
            cameras.push(Camera {
                settings: c.clone(),
                source,
            });
        }
        Ok(Config {
            path: path.map(Path::to_path_buf),
            env_applied,
            raw,
            cameras,
        })
    }

    /// Replaces the first camera's source (`faced run --source`) and drops the other cameras.
    pub fn override_source(&mut self, source: &str) -> Result<()> {
        let spec = SourceSpec::parse(source)
            .map_err(|e| Error::invalid(format!("--source: {}", e.message())))?;
        let spec = resolve_source(spec, None);
        if self.cameras.is_empty() {
            let c = sample_camera();
            self.cameras.push(Camera {
                settings: c.clone(),
                source: SourceSpec::Pattern,
            });
            self.raw.cameras.push(c);
        }
        self.raw.cameras.truncate(1);
        self.cameras.truncate(1);
        self.raw.cameras[0].source = spec.to_string();
        self.cameras[0].settings.source = spec.to_string();
        self.cameras[0].source = spec;
        Ok(())
    }

    /// The camera named `name`.
    pub fn camera(&self, name: &str) -> Option<&Camera> {
        self.cameras.iter().find(|c| c.name() == name)
    }

    /// The effective configuration as TOML, with secrets (`password`, `token`, `secret`, `key`
    /// values that are not paths) replaced by `"<redacted>"`.
    pub fn to_toml_redacted(&self) -> String {
        let mut v =
            toml::Value::try_from(&self.raw).unwrap_or(toml::Value::Table(Default::default()));
        redact(&mut v);
        toml::to_string_pretty(&v).unwrap_or_default()
    }
}

fn redact(v: &mut toml::Value) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let lk = k.to_ascii_lowercase();
                if (lk.contains("password") || lk.contains("secret") || lk.contains("token"))
                    && v.is_str()
                {
                    *v = toml::Value::String("<redacted>".into());
                } else {
                    redact(v);
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(redact),
        // f32 settings widened to f64 print as 0.30000001192092896; show the f32's shortest form.
        toml::Value::Float(f) if (*f as f32) as f64 == *f => {
            *f = (*f as f32).to_string().parse().unwrap_or(*f);
        }
        _ => {}
    }
}

/// `dir:` paths: relative ones are taken from the config file's folder when they exist there,
/// else from the current directory, else from the checkout faced was built from; the packaged
/// sample folder falls back to the checkout's fixtures.
fn resolve_source(s: SourceSpec, base: Option<&Path>) -> SourceSpec {
    let SourceSpec::Dir(p) = s else { return s };
    if p.is_dir() {
        return SourceSpec::Dir(p);
    }
    if p == Path::new(PACKAGED_SAMPLES) {
        return SourceSpec::Dir(samples_dir());
    }
    if p.is_relative() {
        let mut candidates = Vec::new();
        if let Some(b) = base {
            candidates.push(b.join(&p));
        }
        candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(&p));
        if let Some(c) = candidates.into_iter().find(|c| c.is_dir()) {
            return SourceSpec::Dir(c);
        }
    }
    // Left as written: the capture side reports the missing folder and retries.
    SourceSpec::Dir(p)
}

fn is_slug(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// toml's messages sometimes repeat "TOML parse error" boilerplate; keep the reason only.
fn clean_toml_msg(s: &str) -> String {
    s.trim()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Gives every camera's `detector` table `tiling = "off"` unless set: streams get one pass
/// per frame, while `DetectorConfig`'s own default (for still images) is `auto`.
fn prepare_cameras(table: &mut toml::Table) {
    let Some(toml::Value::Array(cams)) = table.get_mut("cameras") else {
        return;
    };
    for cam in cams.iter_mut() {
        let toml::Value::Table(cam) = cam else {
            continue;
        };
        let det = cam
            .entry("detector")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let toml::Value::Table(det) = det {
            det.entry("tiling")
                .or_insert_with(|| toml::Value::String("off".into()));
        }
    }
}

/// Writes one `FACED_A__B__C=value` into `table` at `a.b.c` (lower-cased; numeric segments
/// index arrays, and index == length appends an empty table, so `FACED_CAMERAS__0__SOURCE`
/// works on a file without cameras). The value is read as a TOML value when it parses as one
/// (`true`, `0.6`, `[1, 2]`, `"quoted"`), else taken as a plain string.
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> std::result::Result<(), String> {
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err("empty key segment (use FACED_<SECTION>__<KEY>, e.g. FACED_MQTT__HOST)".into());
    }
    let parsed = parse_env_value(value);
    let mut cur = table;
    let mut i = 0;
    loop {
        let seg = &path[i];
        let last = i + 1 == path.len();
        if last {
            cur.insert(seg.clone(), parsed);
            return Ok(());
        }
        let next_is_index = path[i + 1].parse::<usize>().is_ok();
        let entry = cur.entry(seg.clone()).or_insert_with(|| {
            if next_is_index {
                toml::Value::Array(Vec::new())
            } else {
                toml::Value::Table(Default::default())
            }
        });
        match entry {
            toml::Value::Table(t) => {
                cur = t;
                i += 1;
            }
            toml::Value::Array(a) => {
                let idx: usize = path[i + 1]
                    .parse()
                    .map_err(|_| format!("{seg} is a list; index it by number"))?;
                if idx > a.len() {
                    return Err(format!(
                        "{seg} has {} entries; index {idx} would leave a gap",
                        a.len()
                    ));
                }
                if idx == a.len() {
                    a.push(toml::Value::Table(Default::default()));
                }
                if i + 2 == path.len() {
                    a[idx] = parsed;
                    return Ok(());
                }
                match &mut a[idx] {
                    toml::Value::Table(t) => cur = t,
                    _ => return Err(format!("{seg}[{idx}] is not a table")),
                }
                i += 2;
            }
            _ => return Err(format!("{seg} is a value, not a section")),
        }
    }
}

fn parse_env_value(value: &str) -> toml::Value {
    let doc = format!("v = {value}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.into())),
        Err(_) => toml::Value::String(value.into()),
    }
}

/// Keys of every section and their doc lines, for `docs/config.md` consistency tests:
/// section → key names, in declaration order of the example file.
pub fn example_keys(example: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let t: toml::Table = example
        .parse()
        .map_err(|e| Error::invalid(format!("example config: {e}")))?;
    let mut out = BTreeMap::new();
    for (k, v) in t {
        let keys = match v {
            toml::Value::Table(t) => t.keys().cloned().collect(),
            toml::Value::Array(a) => a
                .first()
                .and_then(|v| v.as_table())
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default(),
            _ => vec![],
        };
        out.insert(k, keys);
    }
    Ok(out)
}

/// The pipeline's settings from a validated configuration (the pipeline does not read the file's
/// layout itself).
impl From<&Config> for crate::pipeline::Settings {
    fn from(cfg: &Config) -> Self {
        let ev = &cfg.raw.events;
        crate::pipeline::Settings {
            inference: cfg.raw.inference.clone(),
            cameras: cfg.cameras.iter().map(|c| c.settings.clone()).collect(),
            sources: cfg.cameras.clone(),
            cooldown: std::time::Duration::from_secs_f64(ev.cooldown_secs),
            unknown_cooldown: std::time::Duration::from_secs_f64(ev.unknown_cooldown_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::detect::Tiling;

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn empty_file_plays_samples() {
        let c = Config::from_toml("", None, env(&[])).unwrap();
        assert_eq!(c.cameras.len(), 1);
        assert_eq!(c.cameras[0].name(), "samples");
        let SourceSpec::Dir(d) = &c.cameras[0].source else {
            panic!()
        };
        assert!(d.is_dir(), "{}", d.display());
        assert_eq!(c.cameras[0].settings.detector.tiling, Tiling::Off);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = Config::from_toml(
            "[[cameras]]\nname = \"front\"\nthreshhold = 0.6\n",
            Some(Path::new("/x/f.toml")),
            env(&[]),
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("/x/f.toml") && m.contains("cameras[0]") && m.contains("threshhold"),
            "{m}"
        );
    }

    #[test]
    fn bad_value_names_key() {
        let e = Config::from_toml(
            "[[cameras]]\nthreshold = 1.5\n",
            Some(Path::new("f.toml")),
            env(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cameras[0].threshold"), "{e}");
        let e = Config::from_toml(
            "[[cameras]]\n[cameras.detector]\nmin_score = \"high\"\n",
            None,
            env(&[]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("cameras[0].detector.min_score"),
            "{e}"
        );
    }

    #[test]
    fn env_overrides_are_type_checked() {
        let c = Config::from_toml(
            "[gallery]\ndb = \"/a.db\"\n",
            None,
            env(&[
                ("FACED_GALLERY__DB", "/b.db"),
                ("FACED_CAMERAS__0__THRESHOLD", "0.7"),
                ("FACED_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(c.raw.gallery.db, PathBuf::from("/b.db"));
        assert_eq!(c.cameras[0].settings.threshold, 0.7);
        assert_eq!(
            c.env_applied,
            vec!["FACED_CAMERAS__0__THRESHOLD", "FACED_GALLERY__DB"]
        );
        let e = Config::from_toml("", None, env(&[("FACED_EVENTS__COOLDOWN_SECS", "soon")]))
            .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("FACED_EVENTS__COOLDOWN_SECS") && m.contains("events.cooldown_secs"),
            "{m}"
        );
        let e = Config::from_toml("", None, env(&[("FACED_NOPE__X", "1")])).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn sources_parse() {
        assert_eq!(
            SourceSpec::parse("v4l2:/dev/video0").unwrap(),
            SourceSpec::V4l2("/dev/video0".into())
        );
        assert_eq!(
            SourceSpec::parse("http:http://cam/x").unwrap(),
            SourceSpec::Http("http://cam/x".into())
        );
        assert_eq!(
            SourceSpec::parse("http://cam/x").unwrap(),
            SourceSpec::Http("http://cam/x".into())
        );
        assert_eq!(SourceSpec::parse("pattern").unwrap(), SourceSpec::Pattern);
        assert!(SourceSpec::parse("https://cam").is_err());
        assert_eq!(
            SourceSpec::parse("rtsp://cam/s").unwrap(),
            SourceSpec::Rtsp("rtsp://cam/s".into())
        );
        assert!(SourceSpec::parse("rtsps://cam").is_err());
    }

    #[test]
    fn credentials_file_only_for_rtsp_and_not_twice() {
        let f = std::env::temp_dir().join(format!("faced-cred-{}", std::process::id()));
        std::fs::write(&f, "u:p\n").unwrap();
        let cfg = |source: &str, file: &str| {
            Config::from_toml(
                &format!("[[cameras]]\nname=\"a\"\nsource={source:?}\ncredentials_file={file:?}\n"),
                None,
                Vec::new(),
            )
        };
        let ok = cfg("rtsp://cam/s", f.to_str().unwrap()).unwrap();
        assert_eq!(
            ok.cameras[0].settings.credentials_file.as_deref(),
            Some(f.as_path())
        );
        for (source, file) in [
            ("http://cam/s", f.to_str().unwrap()),
            ("rtsp://u:p@cam/s", f.to_str().unwrap()),
            ("rtsp://cam/s", "/nonexistent/x.cred"),
        ] {
            let e = cfg(source, file).unwrap_err().to_string();
            assert!(
                e.contains("cameras[0].credentials_file"),
                "{source} {file}: {e}"
            );
        }
        std::fs::remove_file(&f).unwrap();
    }

    #[test]
    fn duplicate_camera_names_rejected() {
        let e = Config::from_toml(
            "[[cameras]]\nname=\"a\"\n[[cameras]]\nname=\"a\"\n",
            None,
            env(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cameras[1].name"), "{e}");
    }

    #[test]
    fn example_file_is_valid_and_complete() {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("faced.toml"))
                .unwrap();
        Config::from_toml(&text, Some(Path::new("faced.toml")), env(&[])).unwrap();
        // Every key of our sections appears in the example.
        let keys = example_keys(&text).unwrap();
        let full = toml::Value::try_from(RawConfig {
            cameras: vec![CameraConfig::default()],
            ..Default::default()
        })
        .unwrap();
        for (section, v) in full.as_table().unwrap() {
            if ["mqtt", "web", "gpio"].contains(&section.as_str()) {
                continue; // owned and documented by their modules
            }
            let want: Vec<String> = match v {
                toml::Value::Table(t) => t.keys().cloned().collect(),
                toml::Value::Array(a) => a[0].as_table().unwrap().keys().cloned().collect(),
                _ => continue,
            };
            for k in want {
                assert!(
                    keys.get(section).is_some_and(|ks| ks.contains(&k)),
                    "faced.toml lacks {section}.{k}"
                );
            }
        }
    }
}
