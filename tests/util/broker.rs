//! Test helpers for MQTT: a real Mosquitto broker on 127.0.0.1 at a free port ([`Broker`]), a
//! subscriber that collects messages ([`Sub`]), and a TCP proxy whose connections can be cut
//! ([`Proxy`]) to drop a client's connection without a DISCONNECT.
//!
//! Used as `crate::util::broker`. Needs the `mosquitto` binary (Debian
//! package `mosquitto`; `mosquitto_passwd` comes with it): `apt-get install -y mosquitto
//! mosquitto-clients`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use tokio::sync::mpsc;

/// Path of the `mosquitto` binary (it lives in /usr/sbin, often not on a user's PATH).
pub fn mosquitto_bin() -> PathBuf {
    find_bin("mosquitto")
}

/// Path of `mosquitto_passwd`.
pub fn mosquitto_passwd_bin() -> PathBuf {
    find_bin("mosquitto_passwd")
}

fn find_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} not found on PATH or in /usr/sbin; install it: apt-get install -y mosquitto mosquitto-clients"
    );
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Options for [`Broker::start_with`].
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Keep sessions, queued messages and retained messages across [`Broker::stop`] /
    /// [`Broker::start_again`] (mosquitto writes its database on SIGTERM).
    pub persistence: bool,
    /// `(user, password)` pairs; when set, anonymous clients are refused.
    pub users: Vec<(String, String)>,
    /// More mosquitto.conf lines, appended (e.g. a `connection` bridge to another broker).
    pub extra: String,
}

/// A running `mosquitto`, killed on drop.
pub struct Broker {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// Anonymous, no persistence.
    pub fn start() -> Broker {
        Self::start_with(BrokerOptions::default())
    }

    /// Starts a broker with `opts` at a free port (retrying with another port if one is taken
    /// meanwhile).
    pub fn start_with(opts: BrokerOptions) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            write_config(dir.path(), port, &opts);
            if let Some(child) = spawn_mosquitto(dir.path(), port) {
                return Broker {
                    port,
                    dir,
                    child: Some(child),
                };
            }
        }
        panic!(
            "mosquitto did not start; its log:\n{}",
            read_log(dir.path())
        );
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the broker gracefully (SIGTERM; a persistent broker saves its state) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port with the same configuration.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker still running");
        // The port can be briefly unavailable after the stop; retry a few times.
        for _ in 0..50 {
            if let Some(child) = spawn_mosquitto(self.dir.path(), self.port) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "mosquitto did not restart on port {}; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is read, acknowledged
    /// or delivered, like a broker host that stalls. [`Broker::resume`] lets it go on.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        let c = self.child.as_ref().expect("broker running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, sig) };
    }

    /// The broker's log so far (for assertion messages).
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

/// Starts mosquitto with `dir`'s config; `None` (and the process reaped) if it does not listen
/// on `port` within 10 s.
fn spawn_mosquitto(dir: &Path, port: u16) -> Option<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    let mut child = Command::new(mosquitto_bin())
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start mosquitto");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            eprintln!("mosquitto exited early with {st}");
            return None;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn write_config(dir: &Path, port: u16, opts: &BrokerOptions) {
    let mut conf =
        format!("listener {port} 127.0.0.1\nlog_dest stderr\nlog_type all\nlog_timestamp true\n");
    // Started as root, mosquitto drops to the `mosquitto` user, which cannot write into our
    // private temp dir (its persistence file would silently not be saved).
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        conf += "user root\n";
    }
    if opts.persistence {
        conf += &format!(
            "persistence true\npersistence_location {}/\nautosave_interval 0\n",
            dir.display()
        );
    } else {
        conf += "persistence false\n";
    }
    if opts.users.is_empty() {
        conf += "allow_anonymous true\n";
    } else {
        let pw = dir.join("passwd");
        for (i, (u, p)) in opts.users.iter().enumerate() {
            let mut c = Command::new(mosquitto_passwd_bin());
            c.arg("-b");
            if i == 0 {
                c.arg("-c");
            }
            let st = c
                .arg(&pw)
                .arg(u)
                .arg(p)
                .status()
                .expect("run mosquitto_passwd");
            assert!(st.success(), "mosquitto_passwd failed");
        }
        conf += &format!("allow_anonymous false\npassword_file {}\n", pw.display());
    }
    conf += &opts.extra;
    std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
}

/// A message seen by [`Sub`].
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    /// Topic name.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Retain flag as delivered (set for retained messages sent on subscribe).
    pub retain: bool,
}

impl Msg {
    /// The payload as UTF-8 text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("UTF-8 payload")
    }

    /// The payload as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {:?}",
                self.topic,
                self.text()
            )
        })
    }
}

/// An MQTT subscriber (rumqttc) that reconnects by itself and collects every message.
pub struct Sub {
    /// The client, for publishing from the test.
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    task: tokio::task::JoinHandle<()>,
}

impl Sub {
    /// Connects to the broker at `port` as `client_id` and subscribes to `filters` (QoS 1);
    /// returns once the broker acknowledged the subscriptions. `persistent` uses a persistent
    /// session (clean_session = false), so a persistent broker queues messages for it while it
    /// is disconnected.
    pub async fn connect(port: u16, client_id: &str, filters: &[&str], persistent: bool) -> Sub {
        Self::connect_opts(port, client_id, filters, persistent, 4 << 20).await
    }

    /// [`Sub::connect`] (clean session) taking packets up to `max_packet` bytes.
    pub async fn connect_with_max(
        port: u16,
        client_id: &str,
        filters: &[&str],
        max_packet: usize,
    ) -> Sub {
        Self::connect_opts(port, client_id, filters, false, max_packet).await
    }

    async fn connect_opts(
        port: u16,
        client_id: &str,
        filters: &[&str],
        persistent: bool,
        max_packet: usize,
    ) -> Sub {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(!persistent);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(max_packet, max_packet);
        let (client, mut el) = AsyncClient::new(o, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let c = client.clone();
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if !ack.session_present {
                            let fs = filters
                                .iter()
                                .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                            c.try_subscribe_many(fs).unwrap();
                        } else {
                            let _ = ready_tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
            .await
            .expect("subscriber did not connect within 10 s")
            .unwrap();
        Sub { client, rx, task }
    }

    /// The next message within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Msg> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The first message matching `pred` within `timeout`, skipping others.
    pub async fn until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Msg) -> bool,
    ) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()
                .flatten()?;
            if pred(&m) {
                return Some(m);
            }
        }
    }

    /// Every message received within `quiet` of the previous one (stops at the first silence).
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.next(quiet).await {
            out.push(m);
        }
        out
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy from a local port to the broker; [`Proxy::cut`] drops every connection
/// abruptly (no MQTT DISCONNECT), like a crashed client or a pulled cable.
pub struct Proxy {
    port: u16,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                let mut cut_rx = cut_rx.clone();
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cut_rx.changed() => {
                            // Reset, not FIN: the broker must see an abnormal close.
                            let _ = down.set_zero_linger();
                            let _ = up.set_zero_linger();
                        }
                    }
                });
            }
        });
        Proxy { port, cut, task }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every current connection abruptly.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
