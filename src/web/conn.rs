//! The console's connection layer: an accept loop over hyper's HTTP/1 server with the limits a
//! shared LAN needs, which `axum::serve` does not have.
//!
//! * **Connection cap** (`web.max_connections`): a [`Table`] counts open connections. At the cap
//!   a new connection replaces the oldest one that has not sent a request yet (a half-open
//!   connection costs the attacker nothing; a real client sends its request within
//!   milliseconds), or, when every connection is busy with a request or a stream, it is closed
//!   at once. So file descriptors stay bounded and a fresh request still gets in while a
//!   thousand half-open connections keep arriving.
//! * **Header timeout** (`web.header_timeout_s`): hyper's `header_read_timeout`, which starts
//!   when a connection is ready for a request (on connect and after each response) and ends
//!   when the request's headers are complete. It is therefore also the keep-alive idle timeout.
//! * **Stall timeout** (`web.idle_timeout_s`): [`Watched`] notes when a write to the socket
//!   stays pending (the client has stopped reading: its receive window and our send buffer are
//!   full); after that long the connection is dropped, so a slow reader cannot hold a live
//!   stream (MJPEG, SSE) and its memory forever.
//! * **File descriptors**: [`ensure_fd_room`] raises the soft `RLIMIT_NOFILE` towards the hard
//!   limit when the cap needs it and warns when it cannot (systemd's `LimitNOFILE=`).
//! * `accept` errors (EMFILE, ECONNABORTED, …) back off for 100 ms and never end the loop.
//!
//! Threads: the accept loop and one task per connection on the daemon's runtime. Shutdown:
//! when `stop` turns true the loop stops accepting, every connection finishes its current
//! response (hyper's graceful shutdown), and [`run`] returns once all are closed or after
//! [`DRAIN`], whichever is first; live streams never end by themselves, and their tasks die
//! with the runtime.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::base::{Clocks, RealClocks};

/// How long shutdown waits for responses in flight.
pub const DRAIN: Duration = Duration::from_secs(3);
/// File descriptors kept for everything but console connections: cameras, the SQLite
/// connections (database, WAL and shared-memory files each), MQTT, the journal, the runtime.
pub const FD_RESERVE: u64 = 128;

/// The connection limits, from `[web]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most open connections.
    pub max_connections: usize,
    /// Time to send a request's headers.
    pub header_timeout: Duration,
    /// Time a write may stay blocked on a client that does not read.
    pub idle_timeout: Duration,
}

/// One connection's shared state.
#[derive(Debug, Default)]
struct Conn {
    /// A request has arrived: no longer evictable.
    started: AtomicBool,
    /// Counted out of [`Table`] (evicted or finished); set exactly once.
    closed: AtomicBool,
    /// Wakes the connection's task to drop it (eviction).
    kill: Notify,
    /// Milliseconds since the table's `epoch` + 1 at which a write became pending; 0: none is.
    stalled_since: AtomicU64,
}

/// Open connections, and those still waiting for their first request in arrival order.
struct Table {
    max: usize,
    clocks: Arc<dyn Clocks>,
    epoch: Instant,
    state: Mutex<TableState>,
    drained: Notify,
}

struct TableState {
    open: usize,
    waiting: VecDeque<Arc<Conn>>,
}

/// What [`Table::admit`] decided.
enum Admit {
    /// Room (possibly made by evicting a half-open connection).
    Yes { conn: Arc<Conn>, evicted: bool },
    /// At the cap and every connection has a request: close the new one.
    Full,
}

impl Table {
    fn new(max: usize, clocks: Arc<dyn Clocks>) -> Table {
        Table {
            max: max.max(1),
            epoch: clocks.monotonic(),
            clocks,
            state: Mutex::new(TableState {
                open: 0,
                waiting: VecDeque::new(),
            }),
            drained: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(&self) -> Admit {
        let mut st = self.lock();
        let mut evicted = false;
        if st.open >= self.max {
            while let Some(c) = st.waiting.pop_front() {
                if !c.started.load(Ordering::Acquire) && !c.closed.swap(true, Ordering::AcqRel) {
                    st.open -= 1;
                    c.kill.notify_one();
                    evicted = true;
                    break;
                }
            }
            if !evicted {
                return Admit::Full;
            }
        }
        st.open += 1;
        let conn = Arc::new(Conn::default());
        st.waiting.push_back(conn.clone());
        if st.waiting.len() > 2 * self.max {
            st.waiting.retain(|c| {
                !c.started.load(Ordering::Acquire) && !c.closed.load(Ordering::Acquire)
            });
        }
        Admit::Yes { conn, evicted }
    }

    fn release(&self, c: &Conn) {
        if !c.closed.swap(true, Ordering::AcqRel) {
            let mut st = self.lock();
            st.open -= 1;
            if st.open == 0 {
                self.drained.notify_waiters();
            }
        }
    }

    fn open(&self) -> usize {
        self.lock().open
    }

    /// Monotonic milliseconds since the table was made (fits the atomics in [`Conn`]).
    fn elapsed_ms(&self) -> u64 {
        self.clocks
            .monotonic()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }
}

/// Gives a connection's slot back when its task ends, however it ends.
struct Slot {
    table: Arc<Table>,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.release(&self.conn);
    }
}

/// A TCP stream that records when a write stays pending (see the module docs).
struct Watched {
    io: TcpStream,
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl Watched {
    fn note<T>(&self, r: &Poll<T>) {
        if r.is_pending() {
            if self.conn.stalled_since.load(Ordering::Relaxed) == 0 {
                self.conn
                    .stalled_since
                    .store(self.table.elapsed_ms() + 1, Ordering::Relaxed);
            }
        } else {
            self.conn.stalled_since.store(0, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Logs at most once per 10 s per kind of event, with the count since the last line, so a
/// flood cannot flood the journal.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(10) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Makes room for `max_connections` sockets plus [`FD_RESERVE`] under `RLIMIT_NOFILE`: raises
/// the soft limit up to the hard one if needed; warns (naming the key) when even that is short.
pub fn ensure_fd_room(max_connections: usize) {
    let need = max_connections as u64 + FD_RESERVE;
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return;
    }
    // rlim_t is u64 on the 64-bit targets faced ships for, narrower on some 32-bit ones.
    #[allow(clippy::unnecessary_cast)]
    let (soft, hard) = (r.rlim_cur as u64, r.rlim_max as u64);
    if soft >= need {
        return;
    }
    let raised = need.min(hard);
    if raised > soft {
        r.rlim_cur = raised as libc::rlim_t;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
            tracing::info!(
                from = soft,
                to = raised,
                "raised the open-file limit for the console"
            );
            if raised >= need {
                return;
            }
        }
    }
    tracing::warn!(
        "web.max_connections = {max_connections} needs about {need} open files but the limit is \
         {} (LimitNOFILE= in the systemd unit); the console may hit \"Too many open files\" \
         before its own cap: lower web.max_connections or raise the limit",
        raised.max(soft)
    );
}

/// Serves `router` on `listener` with `limits` until `stop` turns true; see the module docs.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    // Real clocks: the stall check runs on tokio's real-time interval, and the two must agree.
    let table = Arc::new(Table::new(limits.max_connections, Arc::new(RealClocks)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let http = Arc::new(http);
    let (mut accept_errors, mut full, mut evictions) = (
        Throttle::default(),
        Throttle::default(),
        Throttle::default(),
    );
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|&s| s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors (or a connection reset before accept): the listener
                // is still good; back off instead of spinning on the error.
                if let Some(n) = accept_errors.hit(table.clocks.monotonic()) {
                    tracing::warn!(
                        suppressed = n,
                        "web console cannot accept a connection: {e}; retrying"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn = match table.admit() {
            Admit::Yes { conn, evicted } => {
                if evicted && let Some(n) = evictions.hit(table.clocks.monotonic()) {
                    tracing::warn!(
                        suppressed = n,
                        "web.max_connections = {} reached: closing the oldest connections that \
                         have not sent a request (latest from {peer})",
                        limits.max_connections
                    );
                }
                conn
            }
            Admit::Full => {
                if let Some(n) = full.hit(table.clocks.monotonic()) {
                    tracing::warn!(
                        suppressed = n,
                        "web.max_connections = {} reached and every connection is busy: \
                         refusing connections (latest from {peer})",
                        limits.max_connections
                    );
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = Slot {
            table: table.clone(),
            conn: conn.clone(),
        };
        tokio::spawn(serve_one(
            Watched {
                io: stream,
                conn,
                table: table.clone(),
            },
            peer,
            slot,
            http.clone(),
            router.clone(),
            limits.idle_timeout,
            stop.clone(),
        ));
    }
    drop(listener);
    let drained = table.drained.notified();
    tokio::pin!(drained);
    drained.as_mut().enable();
    if table.open() > 0 {
        let _ = tokio::time::timeout(DRAIN, drained).await;
    }
}

async fn serve_one(
    io: Watched,
    peer: SocketAddr,
    slot: Slot,
    http: Arc<hyper::server::conn::http1::Builder>,
    router: Router,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let conn = slot.conn.clone();
    let table = slot.table.clone();
    let started = conn.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        started.started.store(true, Ordering::Release);
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut r = router.clone();
        // Router is always ready (axum documents `poll_ready` as always Ready).
        tower_service::Service::call(&mut r, req)
    });
    let c = http.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(c);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = false;
    let idle_ms = idle_timeout.as_millis() as u64;
    loop {
        tokio::select! {
            r = c.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, "console connection ended: {e}");
                }
                break;
            }
            _ = conn.kill.notified() => {
                tracing::debug!(%peer, "console connection evicted (no request, connection cap reached)");
                break;
            }
            _ = stop.wait_for(|&s| s), if !draining => {
                c.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = tick.tick() => {
                let since = conn.stalled_since.load(Ordering::Relaxed);
                if since != 0 && table.elapsed_ms().saturating_sub(since - 1) > idle_ms {
                    tracing::info!(%peer, "console client stopped reading for {idle_timeout:?} (web.idle_timeout_s): closing its connection");
                    break;
                }
            }
        }
    }
    drop(slot);
}
