//! Shutdown signalling: one [`Shutdown`] is raised once and seen by every thread holding a
//! clone of it.
//!
//! Threads check [`Shutdown::is_raised`] between units of work and wait on
//! [`Shutdown::sleep`], which wakes as soon as the signal is raised. A camera in a 30 s
//! reconnect back-off or a vision thread pausing after an error therefore stops at once, and no
//! thread wakes up periodically just to look at a flag: an idle Pi spends less time awake.
//!
//! Invariant: a raised signal stays raised. Waiters are woken under the lock that they check the
//! flag under, so a raise is never missed between the check and the wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A shutdown signal shared by clones.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<Inner>);

#[derive(Default)]
struct Inner {
    raised: AtomicBool,
    lock: Mutex<()>,
    woken: Condvar,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Shutdown").field(&self.is_raised()).finish()
    }
}

impl Shutdown {
    /// A signal not raised yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Raises the signal and wakes every thread sleeping on it.
    pub fn raise(&self) {
        self.0.raised.store(true, Ordering::SeqCst);
        let _g = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.0.woken.notify_all();
    }

    /// Whether the signal was raised.
    pub fn is_raised(&self) -> bool {
        self.0.raised.load(Ordering::SeqCst)
    }

    /// Sleeps `d` of real (monotonic) time unless the signal is raised first. Returns `true`
    /// when the whole `d` passed, `false` when the signal was raised (at once if it already
    /// was). Real time, not [`super::Clocks`]: these waits pace retries against real devices
    /// and networks.
    pub fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        let mut g = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.is_raised() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            g = self
                .0
                .woken
                .wait_timeout(g, end - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raise_wakes_every_sleeper_at_once_and_stays_raised() {
        let s = Shutdown::new();
        assert!(!s.is_raised());
        // Not raised: the whole sleep passes.
        let t0 = Instant::now();
        assert!(s.sleep(Duration::from_millis(30)));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        let sleepers: Vec<_> = (0..3)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let t0 = Instant::now();
                    (s.sleep(Duration::from_secs(60)), t0.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        s.raise();
        for t in sleepers {
            let (slept, took) = t.join().unwrap();
            assert!(!slept);
            assert!(took < Duration::from_secs(10), "woken late: {took:?}");
        }
        // Raised: later sleeps return at once, and every clone sees it.
        let t0 = Instant::now();
        assert!(!s.clone().sleep(Duration::from_secs(60)));
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(s.is_raised());
    }
}
