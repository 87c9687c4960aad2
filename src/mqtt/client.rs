//! The `mqtt` thread: a current-thread tokio runtime running the rumqttc event loop task and
//! the publisher task ([`Publisher`]).
//!
//! # Matching PUBACKs to outbox rows
//!
//! rumqttc reports `Outgoing::Publish(pkid)` in the order requests were queued, and
//! `Incoming::PubAck(pkid)` when the broker acknowledges. The publisher is the only sender, so
//! it queues a [`Tag`] per publish and pops one per `Outgoing::Publish`, which maps packet ids
//! to outbox rows. That only holds if no request queued before a connection loss is sent after
//! it, so on every error the event loop task (1) hands the error to the publisher and waits
//! until the publisher has stopped sending and forgotten its in-flight tags, (2) sleeps the
//! back-off, (3) drops every request still queued in rumqttc (`clean` + `pending.clear`).
//! After the CONNACK the publisher resends from the oldest row still in the outbox.
//!
//! # What the broker may send us
//!
//! rumqttc drops the connection when a packet over [`MAX_INCOMING`] arrives (it refuses to buffer
//! it). A *retained* oversized message on a topic we subscribe to would come back after every
//! reconnect: a reconnect loop that delivers nothing. So (1) with commands off nothing is
//! subscribed; (2) with commands on, only the exact verb topics are subscribed (a message on
//! `cmd/anything-else` is never delivered), and before subscribing, on every connect, faced
//! deletes any retained message on them (an empty retained publish; commands are never
//! retained, so nothing legitimate is lost). The broker handles one client's packets in order,
//! so the SUBSCRIBE that follows finds nothing retained. (3) If the broker does not let faced
//! publish there (ACL) and an oversized message still arrives, the connection is dropped, the
//! reason logged, and the reconnect back-off keeps growing instead of restarting at
//! `reconnect_min_ms`, so a loop slows to one attempt per `reconnect_max_secs`.
//!
//! # Batched deletes
//!
//! Acknowledged row ids are collected and deleted in one transaction when
//! [`DELETE_BATCH`] are waiting, [`DELETE_DELAY`] after the first, on disconnect, and at
//! shutdown: SD cards wear with every write. A crash inside that window republishes those rows.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, LastWill,
    MqttOptions, Outgoing, QoS, StateError, SubscribeFilter, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use serde_json::json;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::auth::Verifier;
use super::command::{self, CommandResult};
use super::outbox::Outbox;
use super::topics::{Topics, slugify, unique_slugs};
use super::{
    Command, ConnectionState, Ctl, DrainReport, MAX_SNAPSHOT_BYTES, MqttConfig, MqttTlsConfig,
    PersonInfo, PersonSeen, PersonState, Stats, Subject, discovery, rfc3339_ms,
};
use crate::base::Clocks;
use crate::error::{Error, Result};

/// Most outbox rows published and not yet acknowledged.
const WINDOW: usize = 64;
/// Delete acknowledged rows once this many are waiting...
const DELETE_BATCH: usize = 128;
/// ...or this long after the first one was acknowledged.
const DELETE_DELAY: Duration = Duration::from_secs(1);
/// Housekeeping tick: delete batches, drain progress.
const TICK: Duration = Duration::from_millis(100);
/// Fallback poll of the outbox (rows enqueued without [`super::MqttHandle::outbox_changed`])
/// and size check.
const POLL: Duration = Duration::from_secs(1);
/// rumqttc request queue (publishes waiting for the event loop).
const REQUEST_QUEUE: usize = 4096;
/// rumqttc in-flight QoS 1 publishes (packet ids in use).
const INFLIGHT: u16 = 256;
/// Largest packet accepted from the broker. Commands are limited to 4 KiB by us; this leaves
/// room so that a merely large one is answered with a clear rejection. A bigger packet drops the
/// connection (rumqttc will not buffer it); see the module docs for why that cannot loop.
const MAX_INCOMING: usize = 1 << 20;
/// Largest packet sent (outbox payloads and snapshots are at most 1 MiB).
const MAX_OUTGOING: usize = 2 << 20;
/// Topics kept empty at most (`Publisher::clears`): a few per erased person, far more than a
/// unit erases between restarts.
const MAX_CLEARS: usize = 10_000;

/// Everything the thread needs; built by [`super::Mqtt::start`].
pub(super) struct Setup {
    pub cfg: MqttConfig,
    pub device_id: String,
    pub topics: Topics,
    pub db_path: std::path::PathBuf,
    pub verifier: Option<Verifier>,
    pub cmd_tx: mpsc::Sender<Command>,
    pub ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    pub notify: Arc<Notify>,
    pub state_tx: watch::Sender<ConnectionState>,
    pub stats: Arc<Stats>,
    /// Wall time for command timestamps and presence times.
    pub clocks: Arc<dyn Clocks>,
}

/// Checks files and settings, then starts the `mqtt` thread.
pub(super) fn spawn(s: Setup) -> Result<()> {
    let options = mqtt_options(&s.cfg, &s.device_id, &s.topics)?;
    let outbox = Outbox::open(&s.db_path)?;
    let backoff = (
        Duration::from_millis(s.cfg.reconnect_min_ms),
        Duration::from_secs(s.cfg.reconnect_max_secs),
    );
    let broker = format!("{}:{}", s.cfg.host, s.cfg.effective_port());
    std::thread::Builder::new()
        .name("mqtt".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the MQTT runtime; MQTT is off");
                    return;
                }
            };
            let span = tracing::info_span!("mqtt", %broker);
            let _enter = span.enter();
            rt.block_on(async move {
                let (client, eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
                let (ev_tx, ev_rx) = mpsc::unbounded_channel();
                let looper = tokio::spawn(run_event_loop(eventloop, ev_tx, backoff));
                let p = Publisher::new(s, client, outbox);
                p.run(ev_rx).await;
                looper.abort();
            });
        })
        .map_err(|e| Error::internal("cannot start the mqtt thread").with_source(e))?;
    Ok(())
}

fn mqtt_options(cfg: &MqttConfig, device_id: &str, topics: &Topics) -> Result<MqttOptions> {
    let mut o = connection_options(cfg, cfg.effective_client_id(device_id))?;
    o.set_last_will(LastWill::new(
        topics.availability(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    Ok(o)
}

/// Options for another connection to the configured broker (same address, credentials, TLS
/// and packet limits) under `client_id`, without faced's last will: the Frigate companion's
/// subscriber.
pub fn connection_options(cfg: &MqttConfig, client_id: String) -> Result<MqttOptions> {
    let mut o = MqttOptions::new(client_id, cfg.host.clone(), cfg.effective_port());
    o.set_keep_alive(Duration::from_secs(cfg.keepalive_secs));
    o.set_clean_session(true);
    o.set_max_packet_size(MAX_INCOMING, MAX_OUTGOING);
    o.set_inflight(INFLIGHT);
    if let Some((user, password)) = credentials(cfg)? {
        o.set_credentials(user, password);
    }
    if let Some(t) = transport(cfg)? {
        o.set_transport(t);
    }
    Ok(o)
}

/// The same connection as [`connection_options`] in MQTT 5, for a client that must subscribe
/// with wildcards to topics other broker clients can write (the fleet's). Its CONNECT carries a
/// Maximum Packet Size of `max_packet`, and an MQTT 5 broker then drops, for this client only,
/// any message larger than that instead of sending it (MQTT 5.0, 3.1.2.11.4; Mosquitto logs
/// "Dropping too large outgoing PUBLISH"). Under MQTT 3.1.1 the client could only drop the
/// connection, and a retained oversized message would come back after every reconnect.
pub fn connection_options_v5(
    cfg: &MqttConfig,
    client_id: String,
    max_packet: u32,
) -> Result<rumqttc::v5::MqttOptions> {
    let mut o = rumqttc::v5::MqttOptions::new(client_id, cfg.host.clone(), cfg.effective_port());
    o.set_keep_alive(Duration::from_secs(cfg.keepalive_secs));
    o.set_clean_start(true);
    o.set_max_packet_size(Some(max_packet));
    if let Some((user, password)) = credentials(cfg)? {
        o.set_credentials(user, password);
    }
    if let Some(t) = transport(cfg)? {
        o.set_transport(t);
    }
    Ok(o)
}

/// `mqtt.username` with its password, if a user is set.
fn credentials(cfg: &MqttConfig) -> Result<Option<(String, String)>> {
    let Some(user) = &cfg.username else {
        return Ok(None);
    };
    let password = match (&cfg.password, &cfg.password_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => read_password(f)?,
        (None, None) => String::new(),
    };
    Ok(Some((user.clone(), password)))
}

/// TLS when `[mqtt.tls]` is set (plain TCP otherwise).
fn transport(cfg: &MqttConfig) -> Result<Option<Transport>> {
    let Some(tls) = &cfg.tls else {
        return Ok(None);
    };
    let config = tls_config(tls)?;
    Ok(Some(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(config),
    ))))
}

fn read_password(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::precondition(format!(
            "mqtt.password_file: cannot read {}",
            path.display()
        ))
        .with_source(e)
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o004 != 0
        {
            tracing::warn!(file = %path.display(), "mqtt.password_file is world-readable; chmod 600 it");
        }
    }
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

fn tls_config(tls: &MqttTlsConfig) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let read_certs = |key: &str, path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| {
                Error::precondition(format!(
                    "mqtt.tls.{key}: cannot read PEM certificates from {}",
                    path.display()
                ))
                .with_source(e)
            })?;
        if certs.is_empty() {
            return Err(Error::precondition(format!(
                "mqtt.tls.{key}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            )));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(ca) => {
            for c in read_certs("ca_file", ca)? {
                roots.add(c).map_err(|e| {
                    Error::precondition(format!(
                        "mqtt.tls.ca_file: bad CA certificate in {}",
                        ca.display()
                    ))
                    .with_source(e)
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::precondition(
                    "mqtt.tls: no system CA certificates found; set mqtt.tls.ca_file to the broker's CA (PEM)",
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal("rustls protocol versions").with_source(e))?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("cert_file", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::precondition(format!(
                    "mqtt.tls.key_file: cannot read a PEM private key from {}",
                    key.display()
                ))
                .with_source(e)
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                Error::precondition(
                    "mqtt.tls: cert_file and key_file do not form a usable client certificate",
                )
                .with_source(e)
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// What the event loop task tells the publisher.
enum LoopEvent {
    Event(Event),
    /// The connection failed or dropped. The event loop waits for `ack` (the publisher has
    /// stopped sending) before dropping queued requests and reconnecting after `retry_in`.
    Error {
        error: String,
        refused: bool,
        retry_in: Duration,
        ack: oneshot::Sender<()>,
    },
}

async fn run_event_loop(
    mut el: EventLoop,
    tx: mpsc::UnboundedSender<LoopEvent>,
    (min, max): (Duration, Duration),
) {
    let mut delay = min;
    // The last connection was dropped for an oversized message: keep growing the back-off.
    let mut poisoned = false;
    loop {
        match el.poll().await {
            Ok(ev) => {
                if matches!(ev, Event::Incoming(Incoming::ConnAck(_))) && !poisoned {
                    delay = min;
                }
                if tx.send(LoopEvent::Event(ev)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let refused = matches!(e, ConnectionError::ConnectionRefused(_));
                poisoned = oversized(&e).is_some();
                let (ack, acked) = oneshot::channel();
                let error = describe(&e);
                if tx
                    .send(LoopEvent::Error {
                        error,
                        refused,
                        retry_in: delay,
                        ack,
                    })
                    .is_err()
                    || acked.await.is_err()
                {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max);
                // Requests queued before the publisher heard of the failure must not be sent on
                // the next connection (see the module docs).
                el.clean();
                el.pending.clear();
            }
        }
    }
}

/// The size of the packet that made rumqttc drop the connection, if that was the reason.
fn oversized(e: &ConnectionError) -> Option<usize> {
    match e {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n),
        )) => Some(*n),
        _ => None,
    }
}

fn describe(e: &ConnectionError) -> String {
    if let Some(n) = oversized(e) {
        return format!(
            "the broker sent a {n}-byte message, over faced's limit of {MAX_INCOMING} bytes, so the \
             connection was dropped; faced only subscribes to its command topics and deletes \
             retained messages there on connect: if this repeats, let faced publish on its \
             cmd/ topics (broker ACL) or delete the retained message with \
             `mosquitto_pub -r -n -t <topic>`"
        );
    }
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword => {
                    "bad user name or password (mqtt.username, mqtt.password)"
                }
                ConnectReturnCode::NotAuthorized => {
                    "not authorized (check mqtt.username and the broker's ACLs)"
                }
                ConnectReturnCode::BadClientId => "client id rejected (mqtt.client_id)",
                ConnectReturnCode::ServiceUnavailable => "broker unavailable",
                _ => "refused",
            };
            format!("broker refused the connection: {why}")
        }
        other => other.to_string(),
    }
}

/// What a queued publish was, to route its PUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Outbox(i64),
    Other,
}

/// A published face: (visitor id, JPEG).
type Face = (i64, Vec<u8>);

struct Drain {
    deadline: Instant,
    done: oneshot::Sender<DrainReport>,
}

struct Publisher {
    device_id: String,
    /// `host:port`, for log messages that must say which broker without journald's fields.
    broker: String,
    topics: Topics,
    discovery: bool,
    /// `Some` when commands are enabled.
    verifier: Option<Verifier>,
    max_outbox: u64,
    client: AsyncClient,
    outbox: Outbox,
    cmd_tx: mpsc::Sender<Command>,
    ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    notify: Arc<Notify>,
    state_tx: watch::Sender<ConnectionState>,
    stats: Arc<Stats>,
    clocks: Arc<dyn Clocks>,

    connected: bool,
    /// Failures since the last successful connect (log the first at warn, then quieter).
    failures: u32,
    /// Highest outbox id sent on this connection.
    cursor: i64,
    /// Whether the outbox may hold rows after `cursor`.
    more: bool,
    tags: VecDeque<Tag>,
    /// Packet id of an outbox row in flight → its row id and when its PUBLISH left.
    pkids: HashMap<u16, (i64, Instant)>,
    in_flight: usize,
    acked: Vec<i64>,
    first_ack: Option<Instant>,

    /// person id -> (slug, name), for topics.
    people: BTreeMap<i64, (String, String)>,
    /// camera slug -> name.
    cameras: BTreeMap<String, String>,
    states: BTreeMap<i64, PersonState>,
    /// (seen at, person id, payload) of the last recognized person.
    last_person: Option<(i64, i64, Vec<u8>)>,
    /// The unknown visitors' summary and last face (visitor id, JPEG), once the daemon groups
    /// visitors.
    visitors: Option<(Vec<u8>, Option<Face>)>,
    /// The fleet's sync state, once the daemon replicates its gallery.
    fleet: Option<Vec<u8>>,
    /// camera slug -> (whom it shows, JPEG).
    snapshots: BTreeMap<String, (Option<Subject>, Vec<u8>)>,
    /// Retained topics to keep empty: what named or showed an erased person or visitor, and
    /// the face topics faced holds nothing for since it started (a previous run's face may be
    /// of someone erased since). Cleared again at every connect, before the state held is
    /// published, so a clear missed while disconnected is not lost; a topic leaves the set
    /// when something is published on it.
    clears: BTreeSet<String>,
    /// `mqtt.away_secs`: a person unseen this long is `not_home`.
    away: Duration,
    /// When each person at `home` was last seen by a camera.
    seen_at: HashMap<i64, Instant>,
    /// People removed from the gallery: a state for them still in flight (an event stored just
    /// before the erase) must not publish them again. Ids are never reused.
    erased: HashSet<i64>,
    /// Discovery topics published, to remove entities that disappear.
    discovered: HashSet<String>,
    /// Discovery configs sent on this connection: each is sent once per connection, and again
    /// only when it changes (Home Assistant reconfigures an entity at every config message).
    sent_discovery: HashMap<String, Vec<u8>>,
    announced: bool,
    drain: Option<Drain>,
}

impl Publisher {
    fn new(s: Setup, client: AsyncClient, outbox: Outbox) -> Publisher {
        let clears = [s.topics.last_person(), s.topics.last_visitor_snapshot()]
            .into_iter()
            .collect();
        Publisher {
            broker: format!("{}:{}", s.cfg.host, s.cfg.effective_port()),
            device_id: s.device_id,
            topics: s.topics,
            discovery: s.cfg.discovery,
            verifier: s.verifier,
            max_outbox: s.cfg.outbox_max_messages,
            client,
            outbox,
            cmd_tx: s.cmd_tx,
            ctl_rx: s.ctl_rx,
            notify: s.notify,
            state_tx: s.state_tx,
            stats: s.stats,
            clocks: s.clocks,
            connected: false,
            failures: 0,
            cursor: 0,
            more: true,
            tags: VecDeque::new(),
            pkids: HashMap::new(),
            in_flight: 0,
            acked: Vec::new(),
            first_ack: None,
            people: BTreeMap::new(),
            cameras: BTreeMap::new(),
            states: BTreeMap::new(),
            last_person: None,
            visitors: None,
            fleet: None,
            snapshots: BTreeMap::new(),
            clears,
            erased: HashSet::new(),
            away: Duration::from_secs(s.cfg.away_secs),
            seen_at: HashMap::new(),
            discovered: HashSet::new(),
            sent_discovery: HashMap::new(),
            announced: false,
            drain: None,
        }
    }

    async fn run(mut self, mut events: mpsc::UnboundedReceiver<LoopEvent>) {
        self.trim();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The publisher's timers (outbox poll, delete batching, drain deadline) use real
        // monotonic time: they pace network I/O alongside tokio's real-time interval. Only the
        // wall times that are stored or compared with other machines come from `self.clocks`.
        let mut last_poll = Instant::now();
        let notify = self.notify.clone();
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(LoopEvent::Event(ev)) => self.on_event(ev),
                    Some(LoopEvent::Error { error, refused, retry_in, ack }) => {
                        self.on_error(&error, refused, retry_in);
                        let _ = ack.send(());
                    }
                    None => break,
                },
                c = self.ctl_rx.recv() => match c {
                    Some(c) => self.on_ctl(c),
                    // Every handle dropped without a drain: stop quietly.
                    None => break,
                },
                _ = notify.notified() => self.more = true,
                _ = tick.tick() => {
                    if last_poll.elapsed() >= POLL {
                        last_poll = Instant::now();
                        self.trim();
                        self.more = true;
                    }
                    if self.first_ack.is_some_and(|t| t.elapsed() >= DELETE_DELAY) {
                        self.flush_deletes();
                    }
                    self.expire_presence();
                }
            }
            self.fill();
            if self.drain_done() {
                break;
            }
        }
        self.finish(&mut events).await;
    }

    fn on_error(&mut self, error: &str, refused: bool, retry_in: Duration) {
        let was_connected = self.connected;
        self.connected = false;
        self.flush_deletes();
        self.tags.clear();
        self.pkids.clear();
        self.in_flight = 0;
        self.cursor = 0;
        self.more = true;
        self.failures += 1;
        let queued = self.outbox.len().unwrap_or(0);
        if was_connected {
            tracing::warn!(
                error,
                queued,
                retry_in_ms = retry_in.as_millis() as u64,
                "lost the MQTT broker {}: {error}; reconnecting in {:.1} s",
                self.broker,
                retry_in.as_secs_f32()
            );
        } else if refused || self.failures == 1 || self.failures.is_power_of_two() {
            tracing::warn!(
                error,
                attempt = self.failures,
                queued,
                retry_in_ms = retry_in.as_millis() as u64,
                "cannot connect to the MQTT broker {}: {error}; retrying in {:.1} s",
                self.broker,
                retry_in.as_secs_f32()
            );
        } else {
            tracing::debug!(error, attempt = self.failures, "MQTT connect failed");
        }
        let _ = self.state_tx.send(ConnectionState::Disconnected {
            error: error.to_owned(),
            retry_in,
        });
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Incoming(Incoming::ConnAck(_)) => self.on_connected(),
            Event::Outgoing(Outgoing::Publish(pkid)) => match self.tags.pop_front() {
                Some(Tag::Outbox(id)) => {
                    self.pkids.insert(pkid, (id, Instant::now()));
                }
                Some(Tag::Other) => {}
                None => tracing::error!(pkid, "MQTT publish without a queued tag (bug)"),
            },
            Event::Incoming(Incoming::PubAck(ack)) => {
                if let Some((id, sent)) = self.pkids.remove(&ack.pkid) {
                    self.stats
                        .publish_latency
                        .observe(sent.elapsed().as_secs_f64());
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.acked.push(id);
                    self.first_ack.get_or_insert_with(Instant::now);
                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                    self.more = true;
                    if self.acked.len() >= DELETE_BATCH {
                        self.flush_deletes();
                    }
                }
            }
            Event::Incoming(Incoming::Publish(p)) => {
                self.on_command(&p.topic, &p.payload, p.retain)
            }
            Event::Incoming(Incoming::SubAck(ack))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
            {
                tracing::warn!(
                    topic = self.topics.cmd("<verb>"),
                    "the broker refused a command subscription (ACL?); those commands are off"
                );
            }
            _ => {}
        }
    }

    fn on_connected(&mut self) {
        self.connected = true;
        self.sent_discovery.clear();
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        let queued = self.outbox.len().unwrap_or(0);
        if self.failures > 0 {
            tracing::info!(
                attempts = self.failures,
                queued,
                "reconnected to the MQTT broker"
            );
        } else {
            tracing::info!(queued, "connected to the MQTT broker");
        }
        self.failures = 0;
        let _ = self.state_tx.send(ConnectionState::Connected);
        // Rows acknowledged on the last connection are gone before resending from the oldest.
        self.flush_deletes();
        self.cursor = 0;
        self.more = true;
        self.publish(self.topics.availability(), b"online".to_vec(), true);
        if self.verifier.is_some() {
            // Delete retained commands before subscribing (module docs): the broker processes
            // these publishes before the SUBSCRIBE, so nothing parked there is delivered.
            for verb in command::VERBS {
                self.publish(self.topics.cmd(verb), Vec::new(), true);
            }
            let filters = command::VERBS
                .iter()
                .map(|v| SubscribeFilter::new(self.topics.cmd(v), QoS::AtLeastOnce));
            if let Err(e) = self.client.try_subscribe_many(filters) {
                tracing::warn!(error = %e, "cannot subscribe to commands");
            }
        }
        let clears: Vec<String> = self.clears.iter().cloned().collect();
        for topic in clears {
            self.publish(topic, Vec::new(), true);
        }
        self.publish_discovery();
        let states: Vec<PersonState> = self.states.values().cloned().collect();
        for s in states {
            self.publish_state(&s);
        }
        if let Some((_, _, payload)) = self.last_person.clone() {
            self.publish(self.topics.last_person(), payload, true);
        }
        if let Some(f) = self.fleet.clone() {
            self.publish(self.topics.fleet(), f, true);
        }
        if let Some((summary, snap)) = self.visitors.clone() {
            self.publish(self.topics.visitors(), summary, true);
            if let Some((_, j)) = snap {
                self.publish(self.topics.last_visitor_snapshot(), j, true);
            }
        }
        let snaps: Vec<(String, Vec<u8>)> = self
            .snapshots
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect();
        for (slug, jpeg) in snaps {
            self.publish(self.topics.camera_snapshot(&slug), jpeg, true);
        }
    }

    /// Publishes retained state on `topic`, which is no longer one to keep empty.
    fn set_retained(&mut self, topic: String, payload: Vec<u8>) {
        self.clears.remove(&topic);
        self.publish(topic, payload, true);
    }

    /// Deletes the retained message on `topic` now and at every later connect (see `clears`).
    fn clear(&mut self, topic: String) {
        if self.clears.len() < MAX_CLEARS {
            self.clears.insert(topic.clone());
        }
        self.publish(topic, Vec::new(), true);
    }

    /// Withdraws everything about person `id` that MQTT holds: their state topics (under
    /// `slug`), the last-person sensor and the camera snapshots if they show them.
    fn forget_person(&mut self, id: i64, slug: &str) {
        self.erased.insert(id);
        self.people.remove(&id);
        self.states.remove(&id);
        self.seen_at.remove(&id);
        self.clear(self.topics.person(slug));
        self.clear(self.topics.person_state(slug));
        if self.last_person.as_ref().is_some_and(|l| l.1 == id) {
            self.last_person = None;
            self.clear(self.topics.last_person());
        }
        self.forget_snapshots(|s| s == Subject::Person(id));
    }

    /// Withdraws the last visitor's face and the camera snapshots if they show one of `ids`.
    fn forget_visitors(&mut self, ids: &[i64]) {
        if let Some((_, face)) = &mut self.visitors
            && face.as_ref().is_some_and(|(v, _)| ids.contains(v))
        {
            *face = None;
            self.clear(self.topics.last_visitor_snapshot());
        }
        self.forget_snapshots(|s| matches!(s, Subject::Visitor(v) if ids.contains(&v)));
    }

    fn forget_snapshots(&mut self, shows: impl Fn(Subject) -> bool) {
        let gone: Vec<String> = self
            .snapshots
            .iter()
            .filter(|(_, (who, _))| who.is_some_and(&shows))
            .map(|(slug, _)| slug.clone())
            .collect();
        for slug in gone {
            self.snapshots.remove(&slug);
            self.clear(self.topics.camera_snapshot(&slug));
        }
    }

    /// Queues a QoS 1 publish that is not an outbox row (dropped while disconnected: the
    /// caller keeps what must be re-published on connect).
    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) -> bool {
        self.send(topic, payload, retain, Tag::Other)
    }

    fn send(&mut self, topic: String, payload: Vec<u8>, retain: bool, tag: Tag) -> bool {
        if !self.connected {
            return false;
        }
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.tags.push_back(tag);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "MQTT request queue full; will retry");
                false
            }
        }
    }

    /// Sends outbox rows until the window is full or the outbox has no more.
    fn fill(&mut self) {
        while self.connected && self.more && self.in_flight < WINDOW {
            let room = WINDOW - self.in_flight;
            let rows = match self.outbox.after(self.cursor, room) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the MQTT outbox; retrying in 1 s");
                    self.more = false;
                    return;
                }
            };
            self.more = rows.len() == room;
            for row in rows {
                if !self.send(
                    row.msg.topic,
                    row.msg.payload,
                    row.msg.retain,
                    Tag::Outbox(row.id),
                ) {
                    self.more = true;
                    return;
                }
                self.cursor = row.id;
                self.in_flight += 1;
            }
        }
    }

    fn flush_deletes(&mut self) {
        if self.acked.is_empty() {
            return;
        }
        match self.outbox.delete(&self.acked) {
            Ok(()) => {
                self.acked.clear();
                self.first_ack = None;
            }
            // Kept for the next try; meanwhile the rows may be republished after a reconnect.
            Err(e) => {
                tracing::error!(error = %e, rows = self.acked.len(), "cannot delete published outbox rows")
            }
        }
    }

    fn trim(&mut self) {
        match self.outbox.trim(self.max_outbox) {
            Ok(0) => {}
            Ok(n) => {
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(
                    dropped = n,
                    limit = self.max_outbox,
                    "MQTT outbox over mqtt.outbox_max_messages; dropped the oldest messages"
                );
            }
            Err(e) => tracing::error!(error = %e, "cannot trim the MQTT outbox"),
        }
    }

    fn on_ctl(&mut self, c: Ctl) {
        match c {
            Ctl::PersonState(s) => self.on_person_state(s),
            Ctl::Fleet(summary) => {
                let first = self.fleet.is_none();
                self.publish(self.topics.fleet(), summary.clone(), true);
                self.fleet = Some(summary);
                if first {
                    self.publish_discovery();
                }
            }
            Ctl::Visitors { summary, snapshot } => {
                let first = self.visitors.is_none();
                let snapshot = snapshot.filter(|(_, j)| j.len() <= MAX_SNAPSHOT_BYTES);
                self.publish(self.topics.visitors(), summary.clone(), true);
                if let Some((_, j)) = &snapshot {
                    self.set_retained(self.topics.last_visitor_snapshot(), j.clone());
                }
                let keep = snapshot.or_else(|| self.visitors.take().and_then(|v| v.1));
                self.visitors = Some((summary, keep));
                if first {
                    self.publish_discovery();
                }
            }
            Ctl::Unstored(json) => {
                if !self.publish(self.topics.events(), json, false) {
                    tracing::warn!(
                        "an event that could not be stored (disk full) was not published either: \
                         the broker is not connected"
                    );
                }
            }
            Ctl::ForgetVisitors(ids) => self.forget_visitors(&ids),
            Ctl::Seen(s) => self.on_seen(s),
            Ctl::Snapshot {
                camera,
                jpeg,
                shows,
            } => {
                if jpeg.len() > MAX_SNAPSHOT_BYTES {
                    tracing::warn!(
                        camera,
                        bytes = jpeg.len(),
                        "snapshot too large for MQTT; not published"
                    );
                    return;
                }
                let slug = camera_slug(&camera);
                self.set_retained(self.topics.camera_snapshot(&slug), jpeg.clone());
                self.snapshots.insert(slug, (shows, jpeg));
            }
            Ctl::Announce { people, cameras } => self.on_announce(people, cameras),
            Ctl::Result(r) => self.publish_result(&r),
            Ctl::Drain { timeout, done } => {
                tracing::info!(
                    timeout_ms = timeout.as_millis() as u64,
                    "draining the MQTT outbox"
                );
                self.drain = Some(Drain {
                    deadline: Instant::now() + timeout,
                    done,
                });
            }
        }
    }

    fn slug_for(&mut self, id: i64, name: &str) -> String {
        if let Some((slug, _)) = self.people.get(&id) {
            return slug.clone();
        }
        self.people.insert(id, (String::new(), name.to_owned()));
        self.reslug();
        self.people[&id].0.clone()
    }

    fn reslug(&mut self) {
        let list: Vec<(i64, &str)> = self
            .people
            .iter()
            .map(|(id, (_, n))| (*id, n.as_str()))
            .collect();
        let slugs = unique_slugs(&list);
        for (id, (slug, _)) in self.people.iter_mut() {
            *slug = slugs[id].clone();
        }
    }

    /// Presence follows the cameras, not the events (whose cool-down hides a person who comes
    /// back): `home` at the first sighting, `not_home` once unseen for `away`.
    fn on_seen(&mut self, s: PersonSeen) {
        if self.erased.contains(&s.person_id) {
            return;
        }
        self.seen_at.insert(s.person_id, Instant::now());
        if let Some(st) = self.states.get_mut(&s.person_id)
            && st.home
        {
            // Still home: the retained state stands; `not_home` will carry the last sighting.
            st.last_seen_ms = Some(s.wall_ms);
            st.camera = Some(s.camera);
            st.name = s.name;
            return;
        }
        self.on_person_state(PersonState {
            person_id: s.person_id,
            name: s.name,
            home: true,
            last_seen_ms: Some(s.wall_ms),
            camera: Some(s.camera),
        });
    }

    /// Turns `not_home` whoever no camera has seen for `away`.
    fn expire_presence(&mut self) {
        let away = self.away;
        let gone: Vec<i64> = self
            .seen_at
            .iter()
            .filter(|(_, t)| t.elapsed() >= away)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.seen_at.remove(&id);
            if let Some(mut st) = self.states.get(&id).cloned()
                && st.home
            {
                st.home = false;
                self.on_person_state(st);
            }
        }
    }

    fn on_person_state(&mut self, s: PersonState) {
        if self.erased.contains(&s.person_id) {
            return;
        }
        self.slug_for(s.person_id, &s.name);
        self.publish_state(&s);
        if s.home {
            let newer = match (&self.last_person, s.last_seen_ms) {
                (None, _) => true,
                (Some((t, _, _)), Some(seen)) => seen >= *t,
                (Some(_), None) => false,
            };
            if newer {
                let t = s.last_seen_ms.unwrap_or_else(|| self.clocks.unix_ms());
                let payload = serde_json::to_vec(&json!({
                    "person": s.name,
                    "person_id": s.person_id,
                    "camera": s.camera,
                    "time": rfc3339_ms(t),
                    "ts_ms": t,
                }))
                .expect("JSON values serialize");
                self.set_retained(self.topics.last_person(), payload.clone());
                self.last_person = Some((t, s.person_id, payload));
            }
        }
        self.states.insert(s.person_id, s);
    }

    fn publish_state(&mut self, s: &PersonState) {
        let Some((slug, _)) = self.people.get(&s.person_id).cloned() else {
            return;
        };
        let state = if s.home { "home" } else { "not_home" };
        let payload = serde_json::to_vec(&json!({
            "person": s.name,
            "person_id": s.person_id,
            "state": state,
            "last_seen": s.last_seen_ms.map(rfc3339_ms),
            "last_seen_ms": s.last_seen_ms,
            "camera": s.camera,
        }))
        .expect("JSON values serialize");
        self.set_retained(self.topics.person(&slug), payload);
        self.set_retained(self.topics.person_state(&slug), state.as_bytes().to_vec());
    }

    fn on_announce(&mut self, people: Vec<PersonInfo>, cameras: Vec<String>) {
        let gone: Vec<(i64, String)> = {
            let keep: HashSet<i64> = people.iter().map(|p| p.id).collect();
            self.people
                .iter()
                .filter(|(id, _)| !keep.contains(id))
                .map(|(id, (slug, _))| (*id, slug.clone()))
                .collect()
        };
        for (id, slug) in &gone {
            // Removed from the gallery: erased here or on another unit of the fleet.
            self.forget_person(*id, slug);
        }
        let before: BTreeMap<i64, String> = self
            .people
            .iter()
            .map(|(id, (slug, _))| (*id, slug.clone()))
            .collect();
        for p in &people {
            self.people.insert(p.id, (String::new(), p.name.clone()));
        }
        self.reslug();
        // Someone not seen since faced started is, as far as it knows, not home: say so, rather
        // than leave a previous run's `home` retained.
        for p in &people {
            if !self.states.contains_key(&p.id) {
                let st = PersonState {
                    person_id: p.id,
                    name: p.name.clone(),
                    home: false,
                    last_seen_ms: None,
                    camera: None,
                };
                self.publish_state(&st);
                self.states.insert(p.id, st);
            }
        }
        // A renamed person's topics move: the old ones would keep the old name retained.
        for (id, old) in before {
            if self.people.get(&id).is_some_and(|(slug, _)| *slug != old) {
                self.clear(self.topics.person(&old));
                self.clear(self.topics.person_state(&old));
                if let Some(s) = self.states.get(&id).cloned() {
                    self.publish_state(&s);
                }
            }
        }
        let first = !self.announced;
        self.cameras = cameras
            .iter()
            .map(|c| (camera_slug(c), c.clone()))
            .collect();
        self.snapshots
            .retain(|slug, _| self.cameras.contains_key(slug));
        if first {
            // A previous run's snapshot may show someone erased since: none until the next
            // event of this run.
            let empty: Vec<String> = self
                .cameras
                .keys()
                .filter(|slug| !self.snapshots.contains_key(*slug))
                .cloned()
                .collect();
            for slug in empty {
                self.clear(self.topics.camera_snapshot(&slug));
            }
        }
        self.announced = true;
        self.publish_discovery();
    }

    fn discovery_messages(&self) -> Vec<discovery::DiscoveryMessage> {
        let mut out = vec![discovery::last_person(&self.topics, &self.device_id)];
        if self.visitors.is_some() {
            out.extend(discovery::visitors(&self.topics, &self.device_id));
        }
        if self.fleet.is_some() {
            out.push(discovery::fleet(&self.topics, &self.device_id));
        }
        for (slug, name) in self.people.values() {
            out.push(discovery::person(&self.topics, &self.device_id, slug, name));
        }
        for (slug, name) in &self.cameras {
            out.push(discovery::camera(&self.topics, &self.device_id, slug, name));
        }
        out
    }

    fn publish_discovery(&mut self) {
        if !self.discovery || !self.announced || !self.connected {
            return;
        }
        let msgs = self.discovery_messages();
        let now: HashSet<String> = msgs.iter().map(|m| m.topic.clone()).collect();
        let stale: Vec<String> = self.discovered.difference(&now).cloned().collect();
        for topic in stale {
            self.sent_discovery.remove(&topic);
            let m = discovery::removal(topic);
            self.publish(m.topic, m.payload, true);
        }
        for m in msgs {
            if self.sent_discovery.get(&m.topic) == Some(&m.payload) {
                continue;
            }
            self.sent_discovery
                .insert(m.topic.clone(), m.payload.clone());
            self.publish(m.topic, m.payload, true);
        }
        self.discovered = now;
    }

    fn publish_result(&mut self, r: &CommandResult) {
        let payload = serde_json::to_vec(r).expect("JSON values serialize");
        if !self.publish(self.topics.cmd_result(), payload, false) {
            tracing::info!(
                verb = r.verb,
                status = r.status,
                "command result not published (disconnected)"
            );
        }
    }

    fn on_command(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let Some(verb) = self.topics.cmd_verb(topic) else {
            return;
        };
        if verb == "result" {
            return; // our own answers
        }
        let Some(verifier) = self.verifier.as_mut() else {
            return; // not subscribed; nothing to answer
        };
        if payload.is_empty() {
            // An empty message deletes a retained one (ours on connect, or someone's); it is
            // not a command.
            return;
        }
        let verb = verb.to_owned();
        let now = self.clocks.unix_ms().div_euclid(1000);
        let parsed = command::receive(verifier, &verb, topic, payload, retain, now);
        let cmd = match parsed {
            Ok(c) => c,
            Err(e) => {
                self.stats.commands_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(verb, error = %e, "rejected MQTT command");
                let id = command::sniff_request_id(payload);
                self.publish_result(&CommandResult::error(&verb, id, "rejected", &e));
                return;
            }
        };
        let id = cmd.request_id().map(str::to_owned);
        let result = match self.cmd_tx.try_send(cmd) {
            Ok(()) => {
                self.stats.commands_accepted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(verb, "accepted MQTT command");
                CommandResult::ok(&verb, id, "accepted", None)
            }
            Err(mpsc::error::TrySendError::Full(_)) => CommandResult::error(
                &verb,
                id,
                "failed",
                &Error::unavailable("the daemon is busy with earlier commands; retry"),
            ),
            Err(mpsc::error::TrySendError::Closed(_)) => CommandResult::error(
                &verb,
                id,
                "failed",
                &Error::unavailable("the daemon is not accepting commands"),
            ),
        };
        self.publish_result(&result);
    }

    fn drain_done(&mut self) -> bool {
        let Some(d) = &self.drain else { return false };
        if Instant::now() >= d.deadline {
            return true;
        }
        if !self.connected || self.in_flight > 0 || !self.tags.is_empty() {
            return false;
        }
        self.flush_deletes();
        self.acked.is_empty() && self.outbox.is_empty().unwrap_or(false)
    }

    /// Last words: delete what was acknowledged, say `offline`, disconnect, report.
    async fn finish(mut self, events: &mut mpsc::UnboundedReceiver<LoopEvent>) {
        self.flush_deletes();
        let connected = self.connected;
        if connected {
            // QoS 1 and wait for the broker's PUBACK of `offline`, then a clean DISCONNECT (which
            // suppresses the last will).
            let pkid_tag = self.publish(self.topics.availability(), b"offline".to_vec(), true);
            let _ = self.client.try_disconnect();
            let wait = tokio::time::sleep(Duration::from_secs(2));
            tokio::pin!(wait);
            let mut offline_sent = !pkid_tag;
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Some(LoopEvent::Event(Event::Outgoing(Outgoing::Disconnect))) => break,
                        Some(LoopEvent::Event(Event::Outgoing(Outgoing::Publish(_)))) => offline_sent = true,
                        Some(LoopEvent::Event(Event::Incoming(Incoming::PubAck(ack)))) => {
                            // A late outbox ack still counts.
                            if let Some((id, _)) = self.pkids.remove(&ack.pkid) {
                                self.acked.push(id);
                            }
                        }
                        Some(LoopEvent::Error { ack, .. }) => { let _ = ack.send(()); break; }
                        Some(_) => {}
                        None => break,
                    },
                    _ = &mut wait => break,
                }
            }
            if !offline_sent {
                tracing::debug!("availability offline was not sent before disconnect");
            }
            self.flush_deletes();
        }
        let remaining = self.outbox.len().unwrap_or(0);
        if remaining > 0 {
            tracing::warn!(
                remaining,
                "MQTT outbox not empty at shutdown; it will be published at the next start"
            );
        } else {
            tracing::info!("MQTT outbox drained");
        }
        let _ = self.state_tx.send(ConnectionState::Stopped);
        if let Some(d) = self.drain.take() {
            let _ = d.done.send(DrainReport {
                remaining,
                connected,
            });
        }
    }
}

/// Topic level for a camera name; a name with no ASCII letters or digits becomes `camera`.
fn camera_slug(name: &str) -> String {
    let s = slugify(name);
    if s.is_empty() { "camera".to_owned() } else { s }
}
