//! Exponential back-off for retry loops (cameras reconnecting, the vision thread after a fault,
//! the event writer when the database is busy). Only computes delays; the caller sleeps, so it
//! can sleep in a way that wakes for shutdown.

use std::time::Duration;

/// Exponential back-off: by default 0.5 s doubling to 30 s; the caller resets it after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    cur: Duration,
    min: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

impl Backoff {
    /// Starting at `min`, doubling to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { cur: min, min, max }
    }

    /// The next delay (and doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.cur;
        self.cur = (self.cur * 2).min(self.max);
        d
    }

    /// Back to the shortest delay.
    pub fn reset(&mut self) {
        self.cur = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        let got: Vec<_> = (0..4).map(|_| b.next_delay()).collect();
        assert_eq!(got, [ms(100), ms(200), ms(350), ms(350)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
    }
}
