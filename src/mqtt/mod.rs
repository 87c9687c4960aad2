//! MQTT: events, person state, snapshots, availability and Home Assistant discovery out;
//! signed commands in (off by default; see [`auth`] for why the broker's word is not enough).
//! Every topic and payload is documented in `docs/mqtt.md`.
//!
//! # Shape
//!
//! [`Mqtt::start`] spawns one OS thread, `mqtt`, running a small current-thread tokio runtime
//! with two tasks: the rumqttc event loop (connects, reconnects with back-off) and the
//! publisher, which owns the client and its own SQLite connection to the [`outbox`]. Blocking
//! SQLite calls on that thread never stall the daemon's runtime. The daemon talks to it through
//! the cloneable [`MqttHandle`] (non-blocking calls) and receives validated [`Command`]s on a
//! `tokio::sync::mpsc::Receiver`.
//!
//! # Delivery guarantees
//!
//! * Events go through the outbox table: written in the events' own transaction
//!   ([`outbox::enqueue`]), published QoS 1 in id order, deleted in batches only after PUBACK.
//!   A broker outage or a restart loses none; after a reconnect the unacknowledged rows are
//!   sent again from the oldest, so a consumer can see a message twice (deduplicate on
//!   `event_id`) but never out of order on first sight.
//! * Retained state (availability, discovery, person states, last person, latest snapshot per
//!   camera) is kept in memory and re-published on every connect, so a broker that lost its
//!   retained store (restart without persistence) gets it back. What names or shows an erased
//!   person or visitor leaves memory and is cleared on the broker (an empty retained message,
//!   sent again at every connect): docs/privacy.md.
//! * The session is clean (`clean_session = true`): the outbox, not the broker, holds what is
//!   still to be delivered.
//!
//! # What comes in
//!
//! Only with `mqtt.commands = true` does faced subscribe at all, and then only to the exact
//! topics of the verbs it knows (`cmd/reload_gallery`, ...; no wildcard), after deleting any
//! retained message on them (commands are never retained; see `client.rs`). So the only
//! messages the broker sends faced are commands and acknowledgements, and no message parked on
//! the broker can be replayed at every reconnect.

pub mod auth;
mod client;
pub use client::{connection_options, connection_options_v5};
pub mod command;
pub mod discovery;
mod metrics;
pub mod outbox;
pub mod topics;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot, watch};

pub use command::{Command, CommandResult};
pub use metrics::MqttMetrics;
pub use outbox::{OutboxMessage, enqueue};
pub use topics::{Topics, slugify, unique_slugs};

use crate::base::{Clocks, RealClocks};
use crate::error::{Error, Result};

/// `[mqtt]` section of faced.toml. Every key has a default; see `docs/mqtt.md` for the
/// starter example and [`MqttConfig::validate`] for the rules.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Connect to a broker and publish. Default `false`: a fresh install has no broker.
    pub enabled: bool,
    /// Broker host name or IP address. Default `"localhost"`.
    pub host: String,
    /// Broker TCP port. Default 1883, or 8883 when `[mqtt.tls]` is present.
    pub port: Option<u16>,
    /// MQTT client id. Default `faced-<device id>`; must be unique on the broker.
    pub client_id: Option<String>,
    /// User name for the broker. Default none (anonymous).
    pub username: Option<String>,
    /// Password for `username`. Prefer `password_file` (keeps the secret out of the config).
    /// Never logged; serialized as `"<redacted>"`.
    #[serde(serialize_with = "redact")]
    pub password: Option<String>,
    /// File whose content (trailing newline removed) is the password. Default none.
    pub password_file: Option<PathBuf>,
    /// TLS settings; the presence of `[mqtt.tls]` turns TLS on. Default none (plain TCP).
    pub tls: Option<MqttTlsConfig>,
    /// First topic level of everything faced publishes. Default `"faced"`.
    pub base_topic: String,
    /// Publish Home Assistant MQTT discovery configs. Default `true`.
    pub discovery: bool,
    /// Home Assistant discovery prefix. Default `"homeassistant"`.
    pub discovery_prefix: String,
    /// MQTT keep-alive, seconds (5..=65535): how soon the broker notices a dead faced and
    /// publishes the `offline` last will (after about 1.5× this). Default 30.
    pub keepalive_secs: u64,
    /// Accept commands on `<base>/<device>/cmd/<verb>`, each signed with the command key (see
    /// `command_key`). `false`: faced does not even subscribe. Default `false`.
    pub commands: bool,
    /// File of the per-device command key (64 hex characters, mode 0600), created by faced
    /// when missing. Default: `mqtt-command.key` beside the gallery key.
    pub command_key: Option<PathBuf>,
    /// A signed command's `ts` must be within this many seconds of faced's clock (5..=600);
    /// its nonce is remembered that long so it cannot be replayed. Default 60.
    pub command_window_secs: u64,
    /// Most messages kept in the outbox while the broker is unreachable; beyond it the oldest
    /// are dropped (with a logged count). Default 10000.
    pub outbox_max_messages: u64,
    /// First reconnect delay after a connection failure, milliseconds; doubles up to
    /// `reconnect_max_secs`. Default 500.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, seconds. Default 30.
    pub reconnect_max_secs: u64,
    /// A person's presence turns `not_home` once no camera has seen them for this long,
    /// seconds (1..=86400). Default 180.
    pub away_secs: u64,
}

/// `[mqtt.tls]`: TLS to the broker (rustls with the *ring* provider).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file of the CA certificate(s) to trust. Default: the system trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS (requires `key_file`). Default none.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`. Default none.
    pub key_file: Option<PathBuf>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            host: "localhost".to_owned(),
            port: None,
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            tls: None,
            base_topic: "faced".to_owned(),
            discovery: true,
            discovery_prefix: "homeassistant".to_owned(),
            keepalive_secs: 30,
            commands: false,
            command_key: None,
            command_window_secs: 60,
            outbox_max_messages: 10_000,
            reconnect_min_ms: 500,
            reconnect_max_secs: 30,
            away_secs: 180,
        }
    }
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .field("base_topic", &self.base_topic)
            .field("discovery", &self.discovery)
            .field("discovery_prefix", &self.discovery_prefix)
            .field("keepalive_secs", &self.keepalive_secs)
            .field("commands", &self.commands)
            .field("command_key", &self.command_key)
            .field("command_window_secs", &self.command_window_secs)
            .field("outbox_max_messages", &self.outbox_max_messages)
            .field("reconnect_min_ms", &self.reconnect_min_ms)
            .field("reconnect_max_secs", &self.reconnect_max_secs)
            .field("away_secs", &self.away_secs)
            .finish()
    }
}

fn redact<S: serde::Serializer>(p: &Option<String>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match p {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

impl MqttConfig {
    /// The port in effect: `port`, else 8883 with TLS, else 1883.
    pub fn effective_port(&self) -> u16 {
        self.port
            .unwrap_or(if self.tls.is_some() { 8883 } else { 1883 })
    }

    /// The client id in effect for `device_id`.
    pub fn effective_client_id(&self, device_id: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("faced-{device_id}"))
    }

    /// Checks every value (whether or not `enabled`, so `faced check-config` catches mistakes
    /// early). Errors are [`Kind::InvalidInput`](crate::Kind::InvalidInput) naming the key.
    /// Files (`password_file`, TLS files) are read, and checked, by [`Mqtt::start`].
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::invalid(format!("mqtt.{key}: {why}")));
        if self.host.is_empty()
            || self.host.len() > 253
            || self.host.chars().any(|c| c.is_whitespace() || c == '/')
        {
            return bad(
                "host",
                format!("{:?} is not a host name or IP address", self.host),
            );
        }
        if self.port == Some(0) {
            return bad("port", "must be 1..=65535".into());
        }
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()))
        {
            return bad(
                "client_id",
                format!("{id:?} must be 1 to 128 bytes without control characters"),
            );
        }
        if let Some(u) = &self.username
            && (u.is_empty() || u.chars().any(|c| c.is_control()))
        {
            return bad(
                "username",
                "must be non-empty, without control characters".into(),
            );
        }
        if self.password.is_some() && self.password_file.is_some() {
            return bad(
                "password",
                "set either mqtt.password or mqtt.password_file, not both".into(),
            );
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            return bad(
                "username",
                "a password is configured but mqtt.username is not set".into(),
            );
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return bad(
                "tls",
                "set both cert_file and key_file for client certificates, or neither".into(),
            );
        }
        // Topic prefixes: reuse the topic checks with a placeholder device id.
        Topics::new(&self.base_topic, "x", &self.discovery_prefix)?;
        if !(5..=65535).contains(&self.keepalive_secs) {
            return bad(
                "keepalive_secs",
                format!("must be 5..=65535 seconds, got {}", self.keepalive_secs),
            );
        }
        if !(5..=600).contains(&self.command_window_secs) {
            return bad(
                "command_window_secs",
                format!("must be 5..=600 seconds, got {}", self.command_window_secs),
            );
        }
        if let Some(k) = &self.command_key
            && (k.as_os_str().is_empty() || k.is_dir())
        {
            return bad("command_key", format!("{} is not a file path", k.display()));
        }
        if !(1..=10_000_000).contains(&self.outbox_max_messages) {
            return bad(
                "outbox_max_messages",
                format!("must be 1..=10000000, got {}", self.outbox_max_messages),
            );
        }
        if !(10..=600_000).contains(&self.reconnect_min_ms) {
            return bad(
                "reconnect_min_ms",
                format!("must be 10..=600000 ms, got {}", self.reconnect_min_ms),
            );
        }
        if !(1..=3600).contains(&self.reconnect_max_secs)
            || self.reconnect_max_secs * 1000 < self.reconnect_min_ms
        {
            return bad(
                "reconnect_max_secs",
                format!(
                    "must be 1..=3600 seconds and at least reconnect_min_ms, got {}",
                    self.reconnect_max_secs
                ),
            );
        }
        if !(1..=86_400).contains(&self.away_secs) {
            return bad(
                "away_secs",
                format!("must be 1..=86400 seconds, got {}", self.away_secs),
            );
        }
        Ok(())
    }
}

/// A person as announced to Home Assistant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonInfo {
    /// Gallery person id (never reused; decides slug precedence, see [`unique_slugs`]).
    pub id: i64,
    /// Display name.
    pub name: String,
}

/// Presence of one person, published retained on `faced/<device>/person/<slug>` (JSON) and
/// `.../state` (plain `home` / `not_home`).
#[derive(Debug, Clone, PartialEq)]
pub struct PersonState {
    /// Gallery person id.
    pub person_id: i64,
    /// Display name.
    pub name: String,
    /// `true`: `home` (seen recently), `false`: `not_home`.
    pub home: bool,
    /// When the person was last seen, wall-clock Unix ms.
    pub last_seen_ms: Option<i64>,
    /// Camera that last saw them.
    pub camera: Option<String>,
}

/// A sighting of a person (see [`MqttHandle::person_seen`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PersonSeen {
    /// Gallery person id.
    pub person_id: i64,
    /// Display name.
    pub name: String,
    /// The camera that sees them.
    pub camera: String,
    /// Capture time of the frame, wall-clock Unix ms.
    pub wall_ms: i64,
}

/// Whom a published face shows: what an erase of that person or visitor must withdraw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A gallery person (id).
    Person(i64),
    /// An unknown visitor (id).
    Visitor(i64),
}

/// Where the connection to the broker stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// `mqtt.enabled = false`: nothing is published.
    Disabled,
    /// Connecting for the first time.
    Connecting,
    /// Connected (CONNACK received).
    Connected,
    /// The last attempt failed or the connection dropped; retrying after `retry_in`.
    Disconnected {
        /// What went wrong.
        error: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// Shut down ([`MqttHandle::shutdown_drain`] finished).
    Stopped,
}

/// Counters since start, for logs and the web console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MqttStats {
    /// Outbox rows acknowledged by the broker (and deleted).
    pub published: u64,
    /// Outbox rows dropped because the outbox was over `outbox_max_messages`.
    pub dropped: u64,
    /// Successful connections (the first one included).
    pub connects: u64,
    /// Commands handed to the daemon.
    pub commands_accepted: u64,
    /// Commands rejected (invalid, unsigned, badly signed, stale or replayed).
    pub commands_rejected: u64,
}

struct Stats {
    published: AtomicU64,
    dropped: AtomicU64,
    connects: AtomicU64,
    commands_accepted: AtomicU64,
    commands_rejected: AtomicU64,
    /// An outbox row's PUBLISH to its PUBACK, seconds (`/metrics`).
    publish_latency: crate::metrics::Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            commands_accepted: AtomicU64::new(0),
            commands_rejected: AtomicU64::new(0),
            publish_latency: crate::metrics::latency_histogram(),
        }
    }
}

/// What [`MqttHandle::shutdown_drain`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Rows left in the outbox (published at the next start).
    pub remaining: u64,
    /// Whether the broker was connected at the end (and got a clean DISCONNECT with
    /// availability `offline`).
    pub connected: bool,
}

/// Messages from [`MqttHandle`] to the publisher.
enum Ctl {
    PersonState(PersonState),
    Visitors {
        summary: Vec<u8>,
        snapshot: Option<(i64, Vec<u8>)>,
    },
    ForgetVisitors(Vec<i64>),
    Seen(PersonSeen),
    Fleet(Vec<u8>),
    Unstored(Vec<u8>),
    Snapshot {
        camera: String,
        jpeg: Vec<u8>,
        shows: Option<Subject>,
    },
    Announce {
        people: Vec<PersonInfo>,
        cameras: Vec<String>,
    },
    Result(CommandResult),
    Drain {
        timeout: Duration,
        done: oneshot::Sender<DrainReport>,
    },
}

/// Entry point: see [`Mqtt::start`].
pub struct Mqtt;

/// Cheap, cloneable handle to the MQTT thread. All methods return at once; they never block on
/// the network or the database.
#[derive(Clone)]
pub struct MqttHandle {
    inner: Arc<Inner>,
}

struct Inner {
    topics: Topics,
    ctl: Option<mpsc::UnboundedSender<Ctl>>,
    notify: Arc<Notify>,
    state: watch::Receiver<ConnectionState>,
    stats: Arc<Stats>,
    clocks: Arc<dyn Clocks>,
    /// The command key's id, when commands are on (the audit trail names the signer).
    command_key_id: Option<String>,
}

/// Depth of the command channel to the daemon: commands beyond it are answered "busy".
pub const COMMAND_QUEUE: usize = 16;

/// Largest snapshot JPEG published.
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 20;

impl Mqtt {
    /// Validates `cfg`, reads its password and TLS files, opens the outbox in `db_path` (whose
    /// schema the gallery has already brought up to date), and starts the `mqtt` thread, which
    /// connects and keeps reconnecting in the background (a broker that is down is not an
    /// error here). Callable from inside or outside a tokio runtime.
    ///
    /// With `cfg.enabled = false` nothing is started: the handle's methods do nothing and
    /// [`MqttHandle::connection_state`] is [`ConnectionState::Disabled`]. Do not enqueue outbox
    /// rows then (they would wait for MQTT to be enabled, bounded by `outbox_max_messages`).
    ///
    /// With `cfg.commands`, the command key is read from `cfg.command_key` (default
    /// `mqtt-command.key` in `db_path`'s folder; `faced run` passes the path beside the gallery
    /// key) and created when missing; a key file that cannot be used is an error here.
    ///
    /// `device_id` is the `<device>` topic level (no `/`, `+`, `#`). Returns the handle and the
    /// receiver of validated, authenticated commands (never yields when commands are
    /// disabled).
    pub fn start(
        cfg: &MqttConfig,
        device_id: &str,
        db_path: &Path,
    ) -> Result<(MqttHandle, mpsc::Receiver<Command>)> {
        Self::start_with_clocks(cfg, device_id, db_path, Arc::new(RealClocks))
    }

    /// [`Mqtt::start`] with the time source for command timestamps, presence times and the
    /// outbox's `created_at` (see [`MqttHandle::clocks`]).
    pub fn start_with_clocks(
        cfg: &MqttConfig,
        device_id: &str,
        db_path: &Path,
        clocks: Arc<dyn Clocks>,
    ) -> Result<(MqttHandle, mpsc::Receiver<Command>)> {
        cfg.validate()?;
        let topics = Topics::new(&cfg.base_topic, device_id, &cfg.discovery_prefix)?;
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let stats = Arc::new(Stats::default());
        let notify = Arc::new(Notify::new());
        if !cfg.enabled {
            let (_tx, state) = watch::channel(ConnectionState::Disabled);
            let inner = Inner {
                topics,
                ctl: None,
                notify,
                state,
                stats,
                clocks,
                command_key_id: None,
            };
            return Ok((
                MqttHandle {
                    inner: Arc::new(inner),
                },
                cmd_rx,
            ));
        }
        let verifier = if cfg.commands {
            let path = cfg
                .command_key
                .clone()
                .unwrap_or_else(|| auth::default_key_path(db_path));
            let (key, _created) = auth::CommandKey::load_or_create(&path)?;
            tracing::info!(
                key = %path.display(),
                window_secs = cfg.command_window_secs,
                "MQTT commands enabled; each must be signed with the command key"
            );
            let started = clocks.unix_ms().div_euclid(1000);
            Some(auth::Verifier::new(key, cfg.command_window_secs, started))
        } else {
            None
        };
        let command_key_id = verifier.as_ref().map(|v| v.key_id().to_string());
        let (state_tx, state) = watch::channel(ConnectionState::Connecting);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        client::spawn(client::Setup {
            cfg: cfg.clone(),
            device_id: device_id.to_owned(),
            topics: topics.clone(),
            db_path: db_path.to_owned(),
            verifier,
            cmd_tx,
            ctl_rx,
            notify: notify.clone(),
            state_tx,
            stats: stats.clone(),
            clocks: clocks.clone(),
        })?;
        let inner = Inner {
            topics,
            ctl: Some(ctl_tx),
            notify,
            state,
            stats,
            clocks,
            command_key_id,
        };
        Ok((
            MqttHandle {
                inner: Arc::new(inner),
            },
            cmd_rx,
        ))
    }
}

impl MqttHandle {
    /// The id of the key signed commands are checked with ([`auth::CommandKey::id`]); `None`
    /// when commands are off.
    pub fn command_key_id(&self) -> Option<&str> {
        self.inner.command_key_id.as_deref()
    }

    /// Topic names of this device (e.g. [`Topics::events`] for [`OutboxMessage`]s).
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    /// The clocks this MQTT instance runs on; writers pass them to [`enqueue`] so the outbox's
    /// `created_at` follows the same time as everything else.
    pub fn clocks(&self) -> &dyn Clocks {
        &*self.inner.clocks
    }

    /// Whether MQTT is enabled (a thread is running or was).
    pub fn is_enabled(&self) -> bool {
        self.inner.ctl.is_some()
    }

    /// Tells the publisher that outbox rows were committed. Call after the transaction that
    /// called [`enqueue`] commits; without it rows still go out, but only at the next 1 s poll.
    pub fn outbox_changed(&self) {
        self.inner.notify.notify_one();
    }

    fn send(&self, c: Ctl) {
        if let Some(tx) = &self.inner.ctl {
            // Fails only after shutdown, when there is nothing left to publish to.
            let _ = tx.send(c);
        }
    }

    /// Publishes an event that could not be stored (the disk is full) on the events topic,
    /// directly instead of through the outbox: delivered while the broker is connected, dropped
    /// (logged) otherwise, since nothing can hold it for later.
    pub fn publish_unstored_event(&self, json: Vec<u8>) {
        self.send(Ctl::Unstored(json));
    }

    /// Publishes (retained) a person's presence, and updates the last-recognized-person sensor
    /// when they are home. Kept and re-published on every reconnect.
    pub fn publish_person_state(&self, state: PersonState) {
        self.send(Ctl::PersonState(state));
    }

    /// Someone in the gallery is in view of a camera now (the pipeline says so about once a
    /// second per person while they stay): their presence is `home`, and turns `not_home`
    /// `mqtt.away_secs` after the last of these.
    pub fn person_seen(&self, seen: PersonSeen) {
        self.send(Ctl::Seen(seen));
    }

    /// Publishes (retained) the unknown visitors' summary JSON and, if given, the last unknown
    /// visitor's face (visitor id, JPEG); the first call also adds their Home Assistant
    /// entities. Kept and re-published on every reconnect.
    pub fn publish_visitors(&self, summary: Vec<u8>, snapshot: Option<(i64, Vec<u8>)>) {
        self.send(Ctl::Visitors { summary, snapshot });
    }

    /// Withdraws what the broker and memory hold of the visitors `ids` (just erased): the last
    /// visitor's face and the camera snapshots that show them. Never published again.
    pub fn forget_visitors(&self, ids: Vec<i64>) {
        if !ids.is_empty() {
            self.send(Ctl::ForgetVisitors(ids));
        }
    }

    /// Publishes (retained) the fleet's sync state JSON (`crate::fleet::FleetSummary`); the
    /// first call also adds its Home Assistant sensor. Kept and re-published on every reconnect.
    pub fn publish_fleet(&self, summary: Vec<u8>) {
        self.send(Ctl::Fleet(summary));
    }

    /// Publishes (retained) the latest JPEG snapshot of `camera`, which `shows` a person or a
    /// visitor (so that erasing them withdraws it). Only the latest per camera is kept while
    /// disconnected. Snapshots over [`MAX_SNAPSHOT_BYTES`] are dropped with a warning.
    pub fn publish_snapshot(&self, camera: &str, jpeg: Vec<u8>, shows: Option<Subject>) {
        self.send(Ctl::Snapshot {
            camera: camera.to_owned(),
            jpeg,
            shows,
        });
    }

    /// Sets the people and cameras Home Assistant should know (call at start and after the
    /// gallery changes): publishes their discovery configs (if `mqtt.discovery`) and removes
    /// those of people and cameras announced before but missing now.
    pub fn announce_people_and_cameras(&self, people: &[PersonInfo], cameras: &[String]) {
        self.send(Ctl::Announce {
            people: people.to_vec(),
            cameras: cameras.to_vec(),
        });
    }

    /// Publishes the daemon's outcome of `cmd` on `cmd/result`: `done` with an optional
    /// message, or `failed` with the error.
    pub fn report_command(&self, cmd: &Command, outcome: Result<Option<String>>) {
        let id = cmd.request_id().map(str::to_owned);
        let r = match outcome {
            Ok(msg) => CommandResult::ok(cmd.verb(), id, "done", msg),
            Err(e) => CommandResult::error(cmd.verb(), id, "failed", &e),
        };
        self.send(Ctl::Result(r));
    }

    /// The connection's current state.
    pub fn connection_state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// Waits until connected, up to `timeout`; returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.state.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s == ConnectionState::Connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Counters since start.
    pub fn stats(&self) -> MqttStats {
        let s = &self.inner.stats;
        MqttStats {
            published: s.published.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
            commands_accepted: s.commands_accepted.load(Ordering::Relaxed),
            commands_rejected: s.commands_rejected.load(Ordering::Relaxed),
        }
    }

    /// For SIGTERM: keeps publishing until the outbox is empty or `timeout` passes, then
    /// publishes availability `offline`, disconnects cleanly and stops the thread. Rows still
    /// queued stay in the database for the next start. Idempotent; with MQTT disabled it
    /// returns at once.
    pub async fn shutdown_drain(&self, timeout: Duration) -> DrainReport {
        let Some(tx) = &self.inner.ctl else {
            return DrainReport {
                remaining: 0,
                connected: false,
            };
        };
        let (done, rx) = oneshot::channel();
        if tx.send(Ctl::Drain { timeout, done }).is_err() {
            return DrainReport {
                remaining: 0,
                connected: false,
            };
        }
        // The thread answers within `timeout` plus a bounded disconnect wait.
        rx.await.unwrap_or(DrainReport {
            remaining: 0,
            connected: false,
        })
    }
}

/// `ms` (Unix ms, UTC) as RFC 3339 with milliseconds, e.g. `2026-11-24T14:15:19.042Z`.
pub use crate::base::rfc3339_utc as rfc3339_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_parse_from_empty_toml() {
        let c: MqttConfig = toml::from_str("").unwrap();
        assert_eq!(c, MqttConfig::default());
        c.validate().unwrap();
        assert_eq!(c.effective_port(), 1883);
        assert_eq!(c.effective_client_id("door"), "faced-door");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = toml::from_str::<MqttConfig>("hostname = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `hostname`"), "{e}");
        let cases = [
            ("keepalive_secs = 1", "mqtt.keepalive_secs"),
            (
                "password = \"p\"",
                "mqtt.username: a password is configured",
            ),
            (
                "username = \"u\"\npassword = \"p\"\npassword_file = \"/x\"",
                "mqtt.password: set either",
            ),
            ("base_topic = \"a/+\"", "mqtt.base_topic"),
            ("host = \"\"", "mqtt.host"),
            ("outbox_max_messages = 0", "mqtt.outbox_max_messages"),
            ("[tls]\ncert_file = \"/c.pem\"", "mqtt.tls: set both"),
            ("command_window_secs = 0", "mqtt.command_window_secs"),
            ("command_window_secs = 601", "mqtt.command_window_secs"),
            ("command_key = \"\"", "mqtt.command_key"),
        ];
        for (toml_text, want) in cases {
            let c: MqttConfig = toml::from_str(toml_text).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains(want), "{toml_text}: {e}");
        }
    }

    #[test]
    fn password_is_never_printed() {
        let c = MqttConfig {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!toml::to_string(&c).unwrap().contains("hunter2"));
        let tls: MqttConfig = toml::from_str("[tls]").unwrap();
        assert_eq!(tls.effective_port(), 8883);
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_961_719_042), "2026-11-29T14:15:19.042Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
