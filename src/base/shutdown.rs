//! A stop signal that blocking threads and async tasks can both wait on.
//!
//! [`channel`] returns a [`Sender`] and a cloneable [`Receiver`]. Shutdown is requested by
//! [`Sender::shutdown`] or by dropping the sender (so a panicking owner still stops its
//! workers). A blocking thread waits with [`Receiver::wait_for`], which returns at once when
//! shutdown is requested instead of finishing its sleep; an async task awaits
//! [`Receiver::wait`], e.g. as the graceful-shutdown future of a server.
//!
//! Invariant: once requested, shutdown stays requested; every waiter, present or future, sees
//! it. Nothing here starts a thread.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Inner {
    requested: Mutex<bool>,
    cond: Condvar,
    notify: tokio::sync::Notify,
}

impl Inner {
    fn request(&self) {
        *self.requested.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    fn is_requested(&self) -> bool {
        *self.requested.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Requests shutdown (explicitly or when dropped).
#[derive(Debug)]
pub struct Sender(Arc<Inner>);

/// Observes the shutdown request; clones share it.
#[derive(Debug, Clone)]
pub struct Receiver(Arc<Inner>);

/// A new signal, not yet requested.
pub fn channel() -> (Sender, Receiver) {
    let inner = Arc::new(Inner::default());
    (Sender(inner.clone()), Receiver(inner))
}

impl Sender {
    /// Requests shutdown and wakes every waiter.
    pub fn shutdown(&self) {
        self.0.request()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.request()
    }
}

impl Receiver {
    /// Whether shutdown was requested.
    pub fn is_requested(&self) -> bool {
        self.0.is_requested()
    }

    /// Blocks for up to `d`; returns `true` if the whole time passed, `false` as soon as
    /// shutdown is requested. This measures a real wait on a condition variable, so it uses the
    /// real monotonic clock.
    pub fn wait_for(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        let mut req = self.0.requested.lock().unwrap_or_else(|p| p.into_inner());
        while !*req {
            let now = Instant::now();
            if now >= end {
                return true;
            }
            req = self
                .0
                .cond
                .wait_timeout(req, end - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        false
    }

    /// Resolves when shutdown is requested.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Registered before checking the flag, so a request in between is not missed.
            notified.as_mut().enable();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_returns_early_on_shutdown_and_drop_requests_it() {
        let (tx, rx) = channel();
        assert!(!rx.is_requested());
        assert!(rx.wait_for(Duration::from_millis(1)), "timed out normally");
        let waiter = {
            let rx = rx.clone();
            std::thread::spawn(move || rx.wait_for(Duration::from_secs(60)))
        };
        drop(tx);
        assert!(
            !waiter.join().unwrap(),
            "woken by the drop, not the timeout"
        );
        assert!(rx.is_requested());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(rx.wait());
    }

    #[test]
    fn async_wait_wakes_on_request() {
        let (tx, rx) = channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = tokio::spawn(async move { rx.wait().await });
            tokio::task::yield_now().await;
            tx.shutdown();
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("woken")
                .unwrap();
        });
    }
}
