//! The fleet: the units of one site share one gallery, replicated through the MQTT broker they
//! already use. No faced server, no new service: every unit holds the whole gallery and decides
//! locally (recognition never waits for the network); the broker carries and keeps (retains)
//! one sealed record per person.
//!
//! # What is replicated
//!
//! People (create, rename, erase) and their face samples, positive and negative, as
//! [`Record`]s whose merge converges whatever the order (see [`crate::gallery::replica`]).
//! Events, visitors, web accounts, cameras and settings stay on their unit.
//!
//! # The site key
//!
//! `faced fleet init` creates a 32-byte site key file on the first unit; `faced fleet invite`
//! there and `faced fleet join CODE` on a new unit hand it over the broker with a one-time code
//! ([`invite`]); `faced fleet code` prints the key itself as a code for setups without a broker
//! at hand (show it only to whoever sets up a unit). The
//! key *is* the site: the topic segment `<site>` is derived from it ([`SiteKey::site`]), so
//! units with the same key find each other and no other setting must agree. Every message is
//! sealed with AES-256-GCM under a key derived from the site key, with the topic as associated
//! data: the broker and its other clients see only ciphertext and random ids, and a message that
//! was not sealed with the site key (or was moved to another topic) is refused and logged.
//!
//! # Topics (retained unless noted)
//!
//! * `faced/fleet/<site>/person/<shard>/<uid>`: a person's sealed [`Record`] (an erased person
//!   keeps a small sealed tombstone, so a unit that was offline learns of the erase); `<shard>`
//!   is the uid's first byte in hex, see [`SHARDS`].
//! * `faced/fleet/<site>/unit/<device>`: a unit's sealed status (version, people, gallery
//!   digest; `online: false` as its last will).
//! * `faced/fleet/<site>/sync/<client>` (not retained): the unit's own marker, see below.
//! * `faced/fleet/invite/<id>/request|answer` (not retained): a one-time code's exchange, see
//!   [`invite`].
//!
//! # Threads and the protocol
//!
//! `faced-fleet-mqtt` drives the connection (its own client id, `<client>-fleet`) and hands
//! what arrives to `faced-fleet`, which never blocks on the network (it queues publishes with
//! `try_publish` and retries). On every connection the worker walks the person shards: it
//! subscribes to a few, then publishes a marker on its sync topic; the broker sends the shards'
//! retained messages before the marker, so when the marker comes back the unit has seen them,
//! and it goes on with the next shards. Brokers drop what exceeds a client's queue (Mosquitto's
//! `max_queued_messages`, 1000 by default, applies to retained messages too), so one subscription
//! to every record would lose most of a large gallery; the walk keeps each burst to a few hundred.
//! When the last marker is back, the unit has seen everything the broker holds. Each record received is merged into the local gallery; then every local record
//! the broker lacks or holds in an older form is published. So a unit that was offline, a unit
//! that joins late and a broker that restarted without persistence all converge at the next
//! connection. Local changes (console, MQTT enroll, and the CLI once the daemon reloaded what it
//! wrote, within half a second) are published within [`TICK`]. Before the marker nothing is
//! published, so a unit never replaces a retained record with one that lacks what the broker
//! already held.
//!
//! Invariant: every record received has been merged into the local gallery, so the local record
//! always contains it, and publishing the local record never loses another unit's change.

pub mod invite;
mod metrics;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::base::{Backoff, Clocks, Shutdown};
use crate::db::crypto::{self, Cipher, KEY_LEN};
use crate::error::{Error, Result};
use crate::gallery::Gallery;
use crate::gallery::replica::{Record, Uid, merge, parse_uid};
use crate::mqtt::MqttConfig;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, LastWill};
use rumqttc::v5::{Client, Connection};

/// How often the worker looks for local changes.
pub const TICK: Duration = Duration::from_millis(50);
/// Largest fleet message accepted or sent (a person with 200 samples is about 1.6 MB).
pub const MAX_MESSAGE: usize = 4 << 20;
/// Records checked per turn of the worker loop, so that a full rescan (10 000 people) does not
/// keep incoming messages waiting.
const BATCH: usize = 256;
/// Messages waiting between the two threads.
const QUEUE: usize = 256;
/// Publishes rumqttc may hold before `try_publish` says "later".
const REQUESTS: usize = 512;
/// Person topics are spread over this many shards (`person/<first byte of the uid>/<uid>`): a
/// unit learns the broker's retained records a few shards at a time, so no burst exceeds the
/// broker's per-client queue.
pub const SHARDS: usize = 256;
/// A walk step that has not finished after this long starts over (a lost SUBSCRIBE or marker).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long another unit's gallery may differ before this unit walks the broker again.
const DIVERGENCE_GRACE: Duration = Duration::from_secs(15);
/// Least time between two such walks; doubles up to [`RESYNC_MAX`] while the difference stays.
const RESYNC_MIN: Duration = Duration::from_secs(60);
const RESYNC_MAX: Duration = Duration::from_secs(3600);
/// Prefix of a site key code (the key itself; a one-time code starts with `faced-join-`).
const CODE_PREFIX: &str = "faced-site-";

/// `[fleet]`: share the gallery with the other units of a site (docs/fleet.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Replicate the gallery through the MQTT broker (needs `[mqtt] enabled` and the site key).
    /// Default `false`.
    pub enabled: bool,
    /// The site key file (`faced fleet init` / `faced fleet join`); default `<gallery.db>.fleet.key`.
    pub key_path: Option<PathBuf>,
}

impl FleetConfig {
    /// The site key file for a gallery database.
    pub fn key_path(&self, db: &Path) -> PathBuf {
        self.key_path.clone().unwrap_or_else(|| {
            let mut p = db.as_os_str().to_owned();
            p.push(".fleet.key");
            PathBuf::from(p)
        })
    }

    /// Checks the section on its own (the rest is checked at start: the key file, `[mqtt]`).
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = &self.key_path
            && p.as_os_str().is_empty()
        {
            return Err(Error::invalid("fleet.key_path: must not be empty"));
        }
        Ok(())
    }
}

/// The site key: seals every fleet message and names the site.
pub struct SiteKey {
    cipher: Cipher,
    key: [u8; KEY_LEN],
    site: String,
}

impl std::fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SiteKey({})", self.site) // never print key material
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn derive(label: &str, key: &[u8]) -> ring::digest::Digest {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    c.update(label.as_bytes());
    c.update(&[0]);
    c.update(key);
    c.finish()
}

impl SiteKey {
    fn from_key(key: [u8; KEY_LEN]) -> Result<SiteKey> {
        let seal: [u8; KEY_LEN] = derive("faced fleet seal v1", &key)
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let site = crate::models::hex(&derive("faced fleet site v1", &key).as_ref()[..8]);
        Ok(SiteKey {
            cipher: Cipher::new(&seal)?,
            key,
            site,
        })
    }

    /// Reads the key file (mode 0600, 32 bytes); [`Kind::FailedPrecondition`](crate::Kind) with
    /// what to run when it is missing.
    pub fn load(path: &Path) -> Result<SiteKey> {
        match crypto::read_key(path)? {
            Some(k) => SiteKey::from_key(k),
            None => Err(Error::precondition(format!(
                "fleet.key_path: the site key file {} does not exist; run `faced fleet init` on \
                 the first unit of the site, and on the others `faced fleet join CODE` with a \
                 code from `faced fleet invite` on a unit of the site",
                path.display()
            ))),
        }
    }

    /// Creates a new site key file; [`Kind::Conflict`](crate::Kind) if one exists.
    pub fn create(path: &Path) -> Result<SiteKey> {
        if path.exists() {
            return Err(Error::new(
                crate::Kind::Conflict,
                format!(
                    "{} exists: this unit already has a site key (`faced fleet invite` gives a \
                     one-time code for a new unit)",
                    path.display()
                ),
            ));
        }
        SiteKey::from_key(crypto::create_key(path)?)
    }

    /// Installs the key in `code` at `path` (an existing file with the same key is fine; another
    /// key is [`Kind::Conflict`](crate::Kind): this unit belongs to another site).
    pub fn join(path: &Path, code: &str) -> Result<SiteKey> {
        SiteKey::install(path, SiteKey::parse_code(code)?)
    }

    /// The key in a site key code (`faced-site-…`, [`SiteKey::code`]).
    pub fn parse_code(code: &str) -> Result<[u8; KEY_LEN]> {
        code.trim()
            .strip_prefix(CODE_PREFIX)
            .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "not a join code: it is `faced-join-` and 12 letters or digits, as printed by \
                     `faced fleet invite`, or `{CODE_PREFIX}` and 43 more characters, as printed \
                     by `faced fleet code`, on a unit of the site"
                ))
            })
    }

    /// Installs `key` at `path`, as [`SiteKey::join`] (same key: fine; another: conflict).
    pub fn install(path: &Path, key: [u8; KEY_LEN]) -> Result<SiteKey> {
        if let Some(old) = crypto::read_key(path)? {
            if old == key {
                return SiteKey::from_key(key);
            }
            return Err(Error::new(
                crate::Kind::Conflict,
                format!(
                    "{} holds the key of another site; `faced fleet join --replace` leaves that site",
                    path.display()
                ),
            ));
        }
        crypto::create_secret_file(path, &key).map_err(|e| {
            Error::precondition(format!("cannot write {}", path.display())).with_source(e)
        })?;
        SiteKey::from_key(key)
    }

    /// Replaces the key at `path` with `key`, keeping the one it replaces beside it as
    /// `<path>.retired-<site>` (mode 0600; delete it once the old site is cleaned up): how a
    /// unit leaves a site whose key a lost or retired unit still holds ([`SiteKey::rotate`] on
    /// one unit, `faced fleet join --replace` on the others). Returns the replaced key, if any.
    /// The new key is written to `<path>.next`, fsynced, then renamed over `path`: a crash
    /// leaves the old key or the new one, never neither.
    pub fn replace(path: &Path, key: [u8; KEY_LEN]) -> Result<(Option<SiteKey>, SiteKey)> {
        let cannot = |what: &str, p: &Path, e: std::io::Error| {
            Error::precondition(format!("cannot {what} {}", p.display())).with_source(e)
        };
        let old = crypto::read_key(path)?.map(SiteKey::from_key).transpose()?;
        if let Some(old) = &old {
            if old.key == key {
                return Ok((None, SiteKey::from_key(key)?));
            }
            let retired = with_suffix(path, &format!(".retired-{}", old.site));
            crypto::create_secret_file(&retired, &old.key)
                .map_err(|e| cannot("keep the replaced key in", &retired, e))?;
        }
        let next = with_suffix(path, ".next");
        // Left by a crash in an earlier try: it never became the key.
        let _ = std::fs::remove_file(&next);
        crypto::create_secret_file(&next, &key).map_err(|e| cannot("write", &next, e))?;
        std::fs::rename(&next, path).map_err(|e| cannot("replace", path, e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok((old, SiteKey::from_key(key)?))
    }

    /// A new random site key in place of the one at `path` (which must exist; the old one is
    /// kept as by [`SiteKey::replace`]). The new key is a new site (the topic segment derives
    /// from it): units that are not given it, a stolen one included, see nothing of it.
    /// Returns (old, new).
    pub fn rotate(path: &Path) -> Result<(SiteKey, SiteKey)> {
        SiteKey::load(path)?;
        let mut key = [0u8; KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| Error::unavailable("system random source failed"))?;
        match SiteKey::replace(path, key)? {
            (Some(old), new) => Ok((old, new)),
            (None, _) => Err(Error::internal("a new random key equals the old one")),
        }
    }

    /// The site key code: the key itself, for `faced fleet join` on another unit when no
    /// broker is at hand ([`invite`] hands the key over without showing it).
    pub fn code(&self) -> String {
        format!("{CODE_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.key))
    }

    /// The site's name in topics: 16 hex digits derived from the key.
    pub fn site(&self) -> &str {
        &self.site
    }

    fn aad(topic: &str) -> Vec<u8> {
        crypto::aad("faced fleet v1", topic.as_bytes())
    }

    /// Seals `plain` for `topic`.
    pub fn seal(&self, topic: &str, plain: &[u8]) -> Result<Vec<u8>> {
        self.cipher.seal(&Self::aad(topic), plain)
    }

    /// Opens a message that arrived on `topic`; an error if it was not sealed with this site key
    /// for this topic.
    pub fn open(&self, topic: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        self.cipher
            .open(
                &Self::aad(topic),
                sealed,
                &format!("fleet message on {topic}"),
            )
            .map_err(|_| {
                Error::invalid(format!(
                    "refused a fleet message on {topic}: not sealed with this site's key"
                ))
            })
    }
}

/// A unit's status as the others see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// Device id.
    pub device: String,
    /// False in the last will: the unit went away.
    pub online: bool,
    /// faced version.
    #[serde(default)]
    pub version: String,
    /// Cameras configured.
    #[serde(default)]
    pub cameras: u32,
    /// People in its gallery.
    #[serde(default)]
    pub people: u64,
    /// Digest of its whole gallery (equal digests: equal galleries), hex.
    #[serde(default)]
    pub digest: String,
    /// When it sent this, Unix ms.
    #[serde(default)]
    pub at_ms: i64,
}

/// Counters and state, for logs, tests and the console.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// The site id.
    pub site: String,
    /// This unit's device id.
    pub device: String,
    /// People in this unit's gallery at the last status.
    pub people: AtomicU64,
    /// Connected to the broker.
    pub connected: AtomicBool,
    /// Connected and past the sync marker.
    pub synced: AtomicBool,
    /// Records received and merged into the local gallery with a change.
    pub applied: AtomicU64,
    /// Records published.
    pub published: AtomicU64,
    /// Messages refused (not sealed with the site key, malformed, invalid).
    pub refused: AtomicU64,
    /// Other units, by device id.
    pub units: Mutex<HashMap<String, UnitStatus>>,
    /// This unit's gallery digest (hex).
    pub digest: Mutex<String>,
}

/// The fleet as one unit sees it: the console's Fleet page (`GET /api/fleet`) and the retained
/// `faced/<device>/fleet` state behind the Home Assistant "gallery sync" sensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetSummary {
    /// `in_sync` (connected, caught up, every online unit holds the same gallery), `syncing`
    /// (connected; catching up, or another unit's gallery differs) or `disconnected`.
    pub state: &'static str,
    /// The site id.
    pub site: String,
    /// This unit.
    pub device: String,
    /// People in this unit's gallery.
    pub people: u64,
    /// This unit's gallery digest.
    pub digest: String,
    /// Records applied from other units since start.
    pub applied: u64,
    /// Records published since start.
    pub published: u64,
    /// Messages refused since start (not sealed with the site key, malformed).
    pub refused: u64,
    /// The other units, by device id.
    pub units: Vec<UnitView>,
}

/// Another unit in a [`FleetSummary`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitView {
    /// Device id.
    pub device: String,
    /// Connected to the broker (its last will says when it is not).
    pub online: bool,
    /// faced version.
    pub version: String,
    /// Cameras configured.
    pub cameras: u32,
    /// People in its gallery.
    pub people: u64,
    /// Its gallery equals this unit's (same digest).
    pub same_gallery: bool,
    /// When this unit last heard from it, Unix ms.
    pub last_seen_ms: i64,
}

impl FleetStats {
    /// The current summary.
    pub fn summary(&self) -> FleetSummary {
        let digest = self
            .digest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut units: Vec<UnitView> = self
            .units
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|u| UnitView {
                device: u.device.clone(),
                online: u.online,
                version: u.version.clone(),
                cameras: u.cameras,
                people: u.people,
                same_gallery: !digest.is_empty() && u.digest == digest,
                last_seen_ms: u.at_ms,
            })
            .collect();
        units.sort_by(|a, b| a.device.cmp(&b.device));
        let state = if !self.connected.load(Ordering::Relaxed) {
            "disconnected"
        } else if self.synced.load(Ordering::Relaxed)
            && units.iter().all(|u| !u.online || u.same_gallery)
        {
            "in_sync"
        } else {
            "syncing"
        };
        FleetSummary {
            state,
            site: self.site.clone(),
            device: self.device.clone(),
            people: self.people.load(Ordering::Relaxed),
            digest,
            applied: self.applied.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            units,
        }
    }
}

/// Called with the summary whenever it may have changed (on the `faced-fleet` thread).
pub type StatusListener = Box<dyn Fn(&FleetSummary) + Send>;

/// The running fleet replication; stops when dropped.
pub struct Fleet {
    stop: Shutdown,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Counters.
    pub stats: Arc<FleetStats>,
    /// Ticks once per record applied from another unit (the daemon re-announces its people).
    pub changed: tokio::sync::watch::Receiver<u64>,
}

/// What [`Fleet::start`] needs.
pub struct FleetSetup {
    /// `[fleet]`.
    pub config: FleetConfig,
    /// `[mqtt]`: the broker.
    pub mqtt: MqttConfig,
    /// This unit's device id.
    pub device_id: String,
    /// The gallery database path (for the default key path).
    pub db: PathBuf,
    /// Cameras configured (reported in the unit status).
    pub cameras: u32,
    /// The daemon's gallery.
    pub gallery: Arc<Mutex<Gallery>>,
    /// Time source.
    pub clocks: Arc<dyn Clocks>,
    /// Told the summary when it may have changed (the daemon publishes it on MQTT).
    pub on_status: Option<StatusListener>,
}

enum Net {
    Connected,
    Message(String, Vec<u8>),
    Lost,
}

impl Fleet {
    /// Loads the site key and starts the two threads.
    pub fn start(s: FleetSetup) -> Result<Fleet> {
        s.config.validate()?;
        if !s.mqtt.enabled {
            return Err(Error::invalid(
                "fleet.enabled needs [mqtt] enabled: the broker carries the fleet's gallery",
            ));
        }
        let key = SiteKey::load(&s.config.key_path(&s.db))?;
        let client_id = format!("{}-fleet", s.mqtt.effective_client_id(&s.device_id));
        // MQTT 5, so that the broker drops a message over MAX_MESSAGE instead of sending it:
        // any broker client can publish on the site's topics (it sees the site id), and under
        // MQTT 3.1.1 one oversized retained record would end the connection at every walk.
        let mut options =
            crate::mqtt::connection_options_v5(&s.mqtt, client_id.clone(), MAX_MESSAGE as u32)?;
        let prefix = format!("faced/fleet/{}", key.site());
        let unit_topic = format!("{prefix}/unit/{}", s.device_id);
        let will = UnitStatus {
            device: s.device_id.clone(),
            online: false,
            version: env!("CARGO_PKG_VERSION").into(),
            cameras: s.cameras,
            people: 0,
            digest: String::new(),
            at_ms: 0,
        };
        let will = key.seal(&unit_topic, &serde_json::to_vec(&will).map_err(json)?)?;
        options.set_last_will(LastWill::new(
            &unit_topic,
            will,
            QoS::AtLeastOnce,
            true,
            None,
        ));
        let (client, connection) = Client::new(options, REQUESTS);
        let stop = Shutdown::new();
        let stats = Arc::new(FleetStats {
            site: key.site().to_string(),
            device: s.device_id.clone(),
            ..Default::default()
        });
        let (tx, rx) = sync_channel(QUEUE);
        let (changed_tx, changed) = tokio::sync::watch::channel(0);
        let net = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("faced-fleet-mqtt".into())
                .spawn(move || drive(connection, tx, &stop))
        };
        let worker = {
            let stop = stop.clone();
            let mut w = Worker {
                key,
                client,
                person_prefix: format!("{prefix}/person/"),
                unit_prefix: format!("{prefix}/unit/"),
                sync_topic: format!("{prefix}/sync/{client_id}"),
                unit_topic,
                device: s.device_id,
                cameras: s.cameras,
                gallery: s.gallery,
                clocks: s.clocks,
                stats: stats.clone(),
                changed: changed_tx,
                broker: HashMap::new(),
                local: HashMap::new(),
                pending: BTreeSet::new(),
                instance: 0,
                synced: false,
                walk: Walk {
                    next: SHARDS,
                    step: 1,
                    received: 0,
                    marker: String::new(),
                    since: Instant::now(),
                },
                connected: false,
                status_due: None,
                unmerged: Default::default(),
                blocked_until: None,
                differs_since: None,
                last_walk: None,
                resync_every: RESYNC_MIN,
                acc: [0; 32],
                stats_dirty: false,
                on_status: s.on_status,
                last_summary: None,
            };
            std::thread::Builder::new()
                .name("faced-fleet".into())
                .spawn(move || w.run(rx, &stop))
        };
        let threads = [net, worker]
            .into_iter()
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::internal("cannot start the fleet threads").with_source(e))?;
        tracing::info!(site = %stats.site, "fleet: replicating the gallery through the broker");
        Ok(Fleet {
            stop,
            threads,
            stats,
            changed,
        })
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.raise();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The `faced-fleet-mqtt` thread: polls the connection, forwards what matters.
fn drive(mut conn: Connection, tx: SyncSender<Net>, stop: &Shutdown) {
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::Packet;
    let mut backoff = Backoff::default();
    // After `stop`, go on a little: the worker's last status (offline) and DISCONNECT are queued.
    let mut until: Option<Instant> = None;
    loop {
        if stop.is_raised() {
            let end = *until.get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
            if Instant::now() >= end {
                return;
            }
        }
        let msg = match conn.recv_timeout(Duration::from_millis(300)) {
            Err(_) => continue,
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) => return,
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                backoff = Backoff::default();
                Net::Connected
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => match std::str::from_utf8(&p.topic) {
                Ok(topic) => Net::Message(topic.to_string(), p.payload.to_vec()),
                // MQTT requires UTF-8 topics; nothing faced subscribes to can be otherwise.
                Err(_) => continue,
            },
            Ok(Ok(_)) => continue,
            Ok(Err(_)) if until.is_some() => return,
            Ok(Err(e)) => {
                let d = backoff.next_delay();
                tracing::warn!(
                    "fleet: broker connection: {e}; reconnecting in {:.1} s",
                    d.as_secs_f32()
                );
                if tx.send(Net::Lost).is_err() {
                    return;
                }
                stop.sleep(d);
                continue;
            }
        };
        // Blocks while the worker is busy: back-pressure instead of an unbounded queue. The
        // worker itself never waits for this thread. Once stopping, the worker reads no more.
        if until.is_some() {
            let _ = tx.try_send(msg);
        } else if tx.send(msg).is_err() {
            return;
        }
    }
}

/// Where the walk over the person shards stands (see [`Worker::walk_step`]).
struct Walk {
    /// The next shard to subscribe to.
    next: usize,
    /// Shards per step: doubles while steps bring few records, halves when they bring many.
    step: usize,
    /// Records received since the last step began.
    received: usize,
    /// The marker of the current step.
    marker: String,
    /// When the current step began.
    since: Instant,
}

struct Worker {
    key: SiteKey,
    client: Client,
    person_prefix: String,
    unit_prefix: String,
    sync_topic: String,
    unit_topic: String,
    device: String,
    cameras: u32,
    gallery: Arc<Mutex<Gallery>>,
    clocks: Arc<dyn Clocks>,
    stats: Arc<FleetStats>,
    changed: tokio::sync::watch::Sender<u64>,
    /// Digest of the record the broker holds per person, as last received or sent on this
    /// connection.
    broker: HashMap<Uid, [u8; 32]>,
    /// Digest of each local record, as last built.
    local: HashMap<Uid, [u8; 32]>,
    /// People to compare with the broker.
    pending: BTreeSet<Uid>,
    /// [`Gallery::instance`] last seen: a change means rescan everything.
    instance: u64,
    synced: bool,
    walk: Walk,
    connected: bool,
    status_due: Option<Instant>,
    /// People whose received record could not be merged here (see [`Worker::reconcile`]).
    unmerged: std::collections::HashSet<Uid>,
    /// rumqttc's request queue was full: no publish before this.
    blocked_until: Option<Instant>,
    /// Since when another unit's gallery digest differs from this one's.
    differs_since: Option<Instant>,
    /// When the last walk began.
    last_walk: Option<Instant>,
    /// Least time between walks started by [`Worker::check_divergence`].
    resync_every: Duration,
    /// XOR of SHA-256(uid, digest) over `local`: the gallery digest.
    acc: [u8; 32],
    /// `local` changed since the counters were refreshed.
    stats_dirty: bool,
    on_status: Option<StatusListener>,
    last_summary: Option<FleetSummary>,
}

fn digest(rec: &Record) -> Result<([u8; 32], Vec<u8>)> {
    let bytes = serde_json::to_vec(rec).map_err(json)?;
    let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
    Ok((d.as_ref().try_into().expect("32 bytes"), bytes))
}

impl Worker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Gallery> {
        self.gallery.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&mut self, rx: Receiver<Net>, stop: &Shutdown) {
        let mut next_tick = Instant::now();
        while !stop.is_raised() {
            // With records to compare, take only what has arrived and go on working.
            let busy = self.synced
                && !self.pending.is_empty()
                && self.blocked_until.is_none_or(|t| Instant::now() >= t);
            let wait = if busy {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            match rx.recv_timeout(wait) {
                Ok(Net::Connected) => self.on_connected(),
                Ok(Net::Lost) => {
                    self.connected = false;
                    self.synced = false;
                    self.stats.synced.store(false, Ordering::Relaxed);
                    self.stats.connected.store(false, Ordering::Relaxed);
                    self.tell();
                }
                Ok(Net::Message(topic, payload)) => self.on_message(&topic, &payload),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if busy {
                self.work();
            }
            if Instant::now() >= next_tick {
                self.on_tick();
                next_tick = Instant::now() + TICK;
            }
        }
        if self.connected {
            self.publish_status(false);
        }
        let _ = self.client.disconnect();
    }

    fn on_connected(&mut self) {
        self.connected = true;
        self.stats.connected.store(true, Ordering::Relaxed);
        let filters = vec![
            Filter::new(format!("{}+", self.unit_prefix), QoS::AtLeastOnce),
            Filter::new(self.sync_topic.clone(), QoS::AtLeastOnce),
        ];
        if let Err(e) = self.client.try_subscribe_many(filters) {
            tracing::warn!("fleet: cannot subscribe: {e}");
        }
        self.start_walk();
    }

    /// Starts learning the broker's retained records again, shard by shard (see [`SHARDS`]).
    fn start_walk(&mut self) {
        self.synced = false;
        self.stats.synced.store(false, Ordering::Relaxed);
        // The broker may have lost its retained store: learn it again from what it sends.
        self.broker.clear();
        self.last_walk = Some(Instant::now());
        self.walk = Walk {
            next: 0,
            step: 1,
            received: 0,
            marker: String::new(),
            since: Instant::now(),
        };
        self.walk_step();
    }

    /// Subscribes to the next shards and sends the marker that says when their retained records
    /// have all arrived. Re-subscribing a shard makes the broker send its retained records again,
    /// so a new walk needs no unsubscribe.
    fn walk_step(&mut self) {
        let w = &mut self.walk;
        if w.next >= SHARDS {
            return self.on_synced();
        }
        let end = (w.next + w.step).min(SHARDS);
        let filters: Vec<Filter> = (w.next..end)
            .map(|h| Filter::new(format!("{}{h:02x}/+", self.person_prefix), QoS::AtLeastOnce))
            .collect();
        w.marker = format!(
            "{:016x}:{}",
            u64::from(rand_u32()) << 32 | u64::from(rand_u32()),
            w.next
        );
        w.next = end;
        w.received = 0;
        w.since = Instant::now();
        let marker = w.marker.clone().into_bytes();
        if let Err(e) = self.client.try_subscribe_many(filters) {
            tracing::warn!("fleet: cannot subscribe: {e}");
        }
        if let Err(e) =
            self.client
                .try_publish(self.sync_topic.clone(), QoS::AtLeastOnce, false, marker)
        {
            tracing::warn!("fleet: cannot publish the sync marker: {e}");
        }
    }

    fn on_synced(&mut self) {
        self.synced = true;
        self.stats.synced.store(true, Ordering::Relaxed);
        // Everything the broker held has arrived: compare every local record with it.
        let uids = self.lock().replica_uids();
        match uids {
            Ok(u) => self.pending.extend(u),
            Err(e) => tracing::error!("fleet: cannot list the gallery: {e}"),
        }
        self.status_due = Some(Instant::now());
        tracing::info!(
            records = self.broker.len(),
            "fleet: in sync with the broker's retained state"
        );
    }

    fn refuse(&mut self, topic: &str, why: &str) {
        let n = self.stats.refused.fetch_add(1, Ordering::Relaxed);
        if n < 10 || n.is_multiple_of(100) {
            tracing::warn!(topic, refused = n + 1, "fleet: refused a message: {why}");
        }
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) {
        if topic == self.sync_topic {
            if !self.synced && payload == self.walk.marker.as_bytes() {
                // Keep each step's burst well under the broker's queue limit (Mosquitto drops
                // messages beyond `max_queued_messages`, 1000 by default, even retained ones).
                let w = &mut self.walk;
                if w.received < 150 {
                    w.step = (w.step * 2).min(64);
                } else if w.received > 400 {
                    w.step = (w.step / 2).max(1);
                }
                self.walk_step();
            }
            return;
        }
        if let Some(device) = topic.strip_prefix(&self.unit_prefix) {
            if payload.is_empty() {
                return; // a unit's status cleared: it says nothing
            }
            match self.key.open(topic, payload).and_then(|p| {
                serde_json::from_slice::<UnitStatus>(&p)
                    .map_err(|e| Error::invalid(format!("malformed unit status: {e}")))
            }) {
                Ok(mut s) if s.device == device => {
                    if device != self.device {
                        // When this unit heard from it (the other unit's clock may be off).
                        s.at_ms = self.clocks.unix_ms();
                        self.stats
                            .units
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(device.to_string(), s);
                        self.tell();
                    }
                }
                Ok(_) => self.refuse(topic, "unit status for another device"),
                Err(e) => self.refuse(topic, &e.to_string()),
            }
            return;
        }
        self.walk.received += 1;
        let Some(uid) = topic
            .strip_prefix(&self.person_prefix)
            .and_then(|t| t.split_once('/'))
            .and_then(|(shard, uid)| parse_uid(uid).filter(|u| shard == format!("{:02x}", u[0])))
        else {
            self.refuse(topic, "not a fleet topic");
            return;
        };
        if payload.is_empty() {
            // No unit clears a person's record (an erase is a sealed tombstone), so this is a
            // broker client deleting it: the broker lacks the record now, and units that join
            // later would never learn of the person. Publish it again.
            self.broker.remove(&uid);
            self.pending.insert(uid);
            return self.refuse(
                topic,
                "a person's record was deleted from the broker; restoring it",
            );
        }
        let rec = match self.key.open(topic, payload).and_then(|p| {
            let r: Record = serde_json::from_slice(&p)
                .map_err(|e| Error::invalid(format!("malformed record: {e}")))?;
            r.validate()?;
            Ok(r)
        }) {
            Ok(r) if r.uid == uid => r,
            Ok(_) => return self.refuse(topic, "record for another person than its topic"),
            Err(e) => return self.refuse(topic, &e.to_string()),
        };
        match digest(&rec) {
            Ok((d, _)) => {
                self.broker.insert(uid, d);
            }
            Err(e) => return tracing::error!("fleet: {e}"),
        }
        if let Err(e) = self.reconcile(uid, Some(rec)) {
            tracing::error!(topic, "fleet: cannot merge a record: {e}");
        }
    }

    /// Merges `received` (if any) into the local gallery, then publishes the local record if
    /// the broker does not hold it.
    fn reconcile(&mut self, uid: Uid, received: Option<Record>) -> Result<()> {
        let gallery = self.gallery.clone();
        let mut applied = false;
        let local = {
            let mut g = gallery.lock().unwrap_or_else(|p| p.into_inner());
            let local = g.replica(&uid)?;
            if let Some(r) = &received {
                let merged = match &local {
                    Some(l) => merge(l, r),
                    None => r.clone(),
                };
                let changed = if local.as_ref() == Some(&merged) {
                    false
                } else {
                    let by = crate::audit::By::fleet(self.key.site(), &merged.origin);
                    match g.by(&by).apply_replica(&merged) {
                        Ok(c) => c,
                        Err(e) => {
                            // The local record lacks what was received: publishing it would
                            // take that from the broker. Hold it back until a merge succeeds.
                            self.unmerged.insert(uid);
                            return Err(e);
                        }
                    }
                };
                self.unmerged.remove(&uid);
                if changed {
                    let n = self.stats.applied.fetch_add(1, Ordering::Relaxed) + 1;
                    self.changed.send_replace(n);
                    applied = true;
                    tracing::info!(
                        person = %crate::models::hex(&uid),
                        erased = merged.erased.is_some(),
                        samples = merged.samples.len(),
                        "fleet: applied a change from another unit"
                    );
                }
                g.replica(&uid)?
            } else {
                local
            }
        };
        if applied {
            self.status_due
                .get_or_insert(Instant::now() + Duration::from_secs(1));
        }
        let Some(local) = local else { return Ok(()) };
        let (d, json) = digest(&local)?;
        self.set_local(uid, Some(d));
        if !self.synced || self.broker.get(&uid) == Some(&d) || self.unmerged.contains(&uid) {
            return Ok(());
        }
        let topic = format!(
            "{}{:02x}/{}",
            self.person_prefix,
            uid[0],
            crate::models::hex(&uid)
        );
        let sealed = self.key.seal(&topic, &json)?;
        if sealed.len() > MAX_MESSAGE {
            tracing::error!(
                topic,
                bytes = sealed.len(),
                "fleet: a person's record is too large to replicate; remove some samples"
            );
            return Ok(());
        }
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, sealed)
        {
            Ok(()) => {
                self.broker.insert(uid, d);
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                self.status_due
                    .get_or_insert(Instant::now() + Duration::from_secs(1));
            }
            // The request queue is full: try again when the connection thread has sent some.
            Err(_) => {
                self.pending.insert(uid);
                self.blocked_until = Some(Instant::now() + Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn on_tick(&mut self) {
        {
            let gallery = self.gallery.clone();
            let mut g = gallery.lock().unwrap_or_else(|p| p.into_inner());
            let dirty = g.take_dirty();
            if g.instance() != self.instance {
                self.instance = g.instance();
                match g.replica_uids() {
                    Ok(u) => {
                        let keep: std::collections::HashSet<Uid> = u.iter().copied().collect();
                        let gone: Vec<Uid> = self
                            .local
                            .keys()
                            .filter(|k| !keep.contains(*k))
                            .copied()
                            .collect();
                        for g in gone {
                            self.set_local(g, None);
                        }
                        self.pending.extend(u)
                    }
                    Err(e) => tracing::error!("fleet: cannot list the gallery: {e}"),
                }
            }
            self.pending.extend(dirty);
        }
        if !self.synced {
            if self.connected && self.walk.since.elapsed() > STEP_TIMEOUT {
                tracing::warn!("fleet: the broker did not answer a sync step; starting over");
                self.start_walk();
            }
            return;
        }
        self.work();
        self.check_divergence();
        if self.status_due.is_some_and(|t| Instant::now() >= t) && self.pending.is_empty() {
            self.status_due = None;
            self.publish_status(true);
        } else if self.stats_dirty && self.pending.is_empty() {
            self.refresh_stats();
        }
    }

    /// Records the digest of a local record (`None`: gone) and keeps the gallery digest: the
    /// XOR of SHA-256(uid, record digest) over every record, so it is order-independent, equal
    /// on two units iff (but for collisions) they hold the same records, and updated in O(1).
    fn set_local(&mut self, uid: Uid, d: Option<[u8; 32]>) {
        let old = match d {
            Some(d) => self.local.insert(uid, d),
            None => self.local.remove(&uid),
        };
        if old == d {
            return;
        }
        for x in old.iter().chain(d.iter()) {
            let mut c = ring::digest::Context::new(&ring::digest::SHA256);
            c.update(&uid);
            c.update(x);
            for (a, b) in self.acc.iter_mut().zip(c.finish().as_ref()) {
                *a ^= b;
            }
        }
        self.stats_dirty = true;
    }

    fn gallery_digest(&self) -> String {
        crate::models::hex(&self.acc[..16])
    }

    /// Brings the counters the console and MQTT show up to date.
    fn refresh_stats(&mut self) {
        self.stats_dirty = false;
        let people: i64 = self
            .lock()
            .connection()
            .query_row("SELECT COUNT(*) FROM person", [], |r| r.get(0))
            .unwrap_or(0);
        self.stats.people.store(people as u64, Ordering::Relaxed);
        *self.stats.digest.lock().unwrap_or_else(|p| p.into_inner()) = self.gallery_digest();
        self.tell();
    }

    /// Compares up to [`BATCH`] pending records with the broker's, publishing where they differ.
    fn work(&mut self) {
        if !self.synced {
            return;
        }
        let batch: Vec<Uid> = self.pending.iter().take(BATCH).copied().collect();
        for uid in batch {
            self.pending.remove(&uid);
            if let Err(e) = self.reconcile(uid, None) {
                tracing::error!(person = %crate::models::hex(&uid), "fleet: {e}");
            }
            if self.blocked_until.is_some_and(|t| Instant::now() < t) {
                break;
            }
        }
    }

    /// Anti-entropy: when another online unit has announced a different gallery for a while
    /// (statuses follow changes within a second or two), one of the two missed a live message
    /// (a broker drops what exceeds a client's queue): walk the broker's retained records again.
    /// At most once per [`RESYNC_MIN`], doubling while the difference persists.
    fn check_divergence(&mut self) {
        if !self.synced || !self.pending.is_empty() {
            return;
        }
        let mine = self.gallery_digest();
        let differs = self
            .stats
            .units
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|u| u.online && !u.digest.is_empty() && u.digest != mine);
        if !differs {
            self.differs_since = None;
            self.resync_every = RESYNC_MIN;
            return;
        }
        let since = *self.differs_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= DIVERGENCE_GRACE
            && self
                .last_walk
                .is_none_or(|t| t.elapsed() >= self.resync_every)
        {
            tracing::info!(
                "fleet: another unit's gallery differs; walking the broker's records again"
            );
            self.resync_every = (self.resync_every * 2).min(RESYNC_MAX);
            self.differs_since = None;
            self.start_walk();
        }
    }

    /// Tells the listener the summary if it changed.
    fn tell(&mut self) {
        let Some(f) = &self.on_status else { return };
        let s = self.stats.summary();
        if self.last_summary.as_ref() != Some(&s) {
            f(&s);
            self.last_summary = Some(s);
        }
    }

    fn publish_status(&mut self, online: bool) {
        self.refresh_stats();
        let people = self.stats.people.load(Ordering::Relaxed);
        let digest = self.gallery_digest();
        let s = UnitStatus {
            device: self.device.clone(),
            online,
            version: env!("CARGO_PKG_VERSION").into(),
            cameras: self.cameras,
            people,
            digest,
            at_ms: self.clocks.unix_ms(),
        };
        let sealed = match serde_json::to_vec(&s)
            .map_err(json)
            .and_then(|j| self.key.seal(&self.unit_topic, &j))
        {
            Ok(s) => s,
            Err(e) => return tracing::error!("fleet: {e}"),
        };
        let _ = self
            .client
            .try_publish(self.unit_topic.clone(), QoS::AtLeastOnce, true, sealed);
    }
}

fn json(e: serde_json::Error) -> Error {
    Error::internal(format!("cannot encode JSON: {e}"))
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_makes_a_new_site_and_keeps_the_old_key_aside() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.key");
        assert!(SiteKey::rotate(&path).is_err(), "nothing to rotate");
        let old = SiteKey::create(&path).unwrap();
        // A crash in an earlier rotation left a `.next` that never became the key.
        std::fs::write(dir.path().join("site.key.next"), b"stale").unwrap();
        let (was, new) = SiteKey::rotate(&path).unwrap();
        assert_eq!(was.site(), old.site());
        assert_ne!(new.site(), old.site());
        assert_eq!(SiteKey::load(&path).unwrap().site(), new.site());
        assert!(!dir.path().join("site.key.next").exists());
        let retired = dir.path().join(format!("site.key.retired-{}", old.site()));
        assert_eq!(std::fs::read(&retired).unwrap(), old.key);
        let mode = std::fs::metadata(&retired).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the retired key is private");
        // What the old key seals, the new one refuses.
        let t = "faced/fleet/x/person/00";
        assert!(new.open(t, &old.seal(t, b"Mallory").unwrap()).is_err());
        // Replacing with the key already held changes nothing; with the old one, it comes back.
        assert!(SiteKey::replace(&path, new.key).unwrap().0.is_none());
        let (gone, back) = SiteKey::replace(&path, old.key).unwrap();
        assert_eq!(gone.unwrap().site(), new.site());
        assert_eq!(back.site(), old.site());
    }

    #[test]
    fn join_codes_carry_the_key_and_units_of_one_site_agree() {
        let dir = tempfile::tempdir().unwrap();
        let a = SiteKey::create(&dir.path().join("a.key")).unwrap();
        assert!(SiteKey::create(&dir.path().join("a.key")).is_err());
        let code = a.code();
        assert!(code.starts_with(CODE_PREFIX));
        let b = SiteKey::join(&dir.path().join("b.key"), &code).unwrap();
        assert_eq!(a.site(), b.site());
        // Joining again with the same code is fine; with another site's code it is refused.
        SiteKey::join(&dir.path().join("b.key"), &code).unwrap();
        let other = SiteKey::create(&dir.path().join("c.key")).unwrap();
        assert_ne!(other.site(), a.site());
        assert!(SiteKey::join(&dir.path().join("b.key"), &other.code()).is_err());
        assert!(SiteKey::join(&dir.path().join("d.key"), "faced-site-short").is_err());

        let t = "faced/fleet/x/person/00";
        let sealed = a.seal(t, b"hello").unwrap();
        assert_eq!(b.open(t, &sealed).unwrap(), b"hello");
        // Another topic, another key, an altered byte, or plain text: refused.
        assert!(b.open("faced/fleet/x/person/01", &sealed).is_err());
        assert!(other.open(t, &sealed).is_err());
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(b.open(t, &bad).is_err());
        assert!(b.open(t, b"{\"uid\":\"00\"}").is_err());
    }
}
