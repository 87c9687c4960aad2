//! The always-built GPIO backend: no hardware, every output level change recorded with a
//! timestamp from an injected [`Clock`], inputs set by the test (or left low).
//!
//! Tests pair it with [`FakeClock`] and [`Gpio::manual`](super::Gpio::manual) to check pulse
//! lengths and cool-downs exactly, without sleeping. With `gpio.backend = "fake"` the daemon uses
//! it in logging mode, so a configuration can be tried on a PC. Pins can be marked busy to
//! exercise the "pin already in use" path exactly as the real backend reports it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Clock, GpioBackend, InputPin, OutputPin, pin_busy};
use crate::error::Result;

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FakeClock {
    origin: Instant,
    offset: Mutex<Duration>,
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeClock {
    /// A clock standing at its origin.
    pub fn new() -> Self {
        FakeClock {
            origin: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += d;
    }

    /// Time since the origin.
    pub fn elapsed(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The instant at `offset` after the origin.
    pub fn at(&self, offset: Duration) -> Instant {
        self.origin + offset
    }

    /// The clock's origin, which [`FakeGpio`] timestamps are relative to when it uses this clock.
    pub fn origin(&self) -> Instant {
        self.origin
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }
}

/// One output level change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// When it happened.
    pub at: Instant,
    /// The new level.
    pub high: bool,
}

/// A high period of an output: from a rising edge to the following falling edge (`len` is `None`
/// while it is still high).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulse {
    /// Rising edge.
    pub start: Instant,
    /// Time to the falling edge, if it came.
    pub len: Option<Duration>,
}

#[derive(Debug, Default)]
struct State {
    /// Current output/input levels by pin.
    levels: BTreeMap<u8, bool>,
    /// Output history by pin (the initial level set at claim time included).
    edges: BTreeMap<u8, Vec<Edge>>,
    /// Pins claimed by faced.
    claimed: BTreeSet<u8>,
    /// Pins "held by someone else", with the holder's name.
    busy: BTreeMap<u8, String>,
}

/// The fake backend; clones share state, so a test keeps one clone to inspect.
#[derive(Debug, Clone)]
pub struct FakeGpio {
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<State>>,
    log: bool,
}

impl FakeGpio {
    /// A silent fake using `clock` for timestamps.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        FakeGpio {
            clock,
            state: Arc::default(),
            log: false,
        }
    }

    /// A fake that also logs every output change at debug level (`gpio.backend = "fake"`).
    pub fn logging(clock: Arc<dyn Clock>) -> Self {
        FakeGpio {
            log: true,
            ..Self::new(clock)
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `pin` as held by another program or driver called `holder`.
    pub fn mark_busy(&self, pin: u8, holder: &str) {
        self.lock().busy.insert(pin, holder.to_string());
    }

    /// Sets the level an input pin reads.
    pub fn set_input(&self, pin: u8, high: bool) {
        self.lock().levels.insert(pin, high);
    }

    /// Current level of `pin` (`false` if never set).
    pub fn level(&self, pin: u8) -> bool {
        self.lock().levels.get(&pin).copied().unwrap_or(false)
    }

    /// Every level change of output `pin`, oldest first.
    pub fn edges(&self, pin: u8) -> Vec<Edge> {
        self.lock().edges.get(&pin).cloned().unwrap_or_default()
    }

    /// The high periods of output `pin`, oldest first.
    pub fn pulses(&self, pin: u8) -> Vec<Pulse> {
        let mut out: Vec<Pulse> = Vec::new();
        let mut high = false;
        for e in self.edges(pin) {
            if e.high && !high {
                out.push(Pulse {
                    start: e.at,
                    len: None,
                });
            } else if !e.high
                && high
                && let Some(p) = out.last_mut()
            {
                p.len = Some(e.at - p.start);
            }
            high = e.high;
        }
        out
    }

    /// Pins currently claimed by faced.
    pub fn claimed(&self) -> Vec<u8> {
        self.lock().claimed.iter().copied().collect()
    }

    fn claim(&self, pin: u8, what: &str) -> Result<()> {
        let mut s = self.lock();
        if let Some(holder) = s.busy.get(&pin) {
            return Err(pin_busy(pin, what, Some(holder)));
        }
        if !s.claimed.insert(pin) {
            return Err(pin_busy(pin, what, Some("faced")));
        }
        Ok(())
    }
}

impl GpioBackend for FakeGpio {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn output(&self, pin: u8, what: &str) -> Result<Box<dyn OutputPin>> {
        self.claim(pin, what)?;
        let mut p = FakeOutput {
            pin,
            gpio: self.clone(),
        };
        p.set(false);
        Ok(Box::new(p))
    }

    fn input(&self, pin: u8, what: &str) -> Result<Box<dyn InputPin>> {
        self.claim(pin, what)?;
        Ok(Box::new(FakeInput {
            pin,
            gpio: self.clone(),
        }))
    }
}

struct FakeOutput {
    pin: u8,
    gpio: FakeGpio,
}

impl OutputPin for FakeOutput {
    fn set(&mut self, high: bool) {
        let at = self.gpio.clock.now();
        let mut s = self.gpio.lock();
        let changed = s.levels.insert(self.pin, high) != Some(high);
        if changed {
            s.edges.entry(self.pin).or_default().push(Edge { at, high });
            if self.gpio.log {
                tracing::debug!(pin = self.pin, high, "fake gpio output");
            }
        }
    }
}

impl Drop for FakeOutput {
    fn drop(&mut self) {
        self.gpio.lock().claimed.remove(&self.pin);
    }
}

struct FakeInput {
    pin: u8,
    gpio: FakeGpio,
}

impl InputPin for FakeInput {
    fn is_high(&self) -> bool {
        self.gpio.level(self.pin)
    }
}

impl Drop for FakeInput {
    fn drop(&mut self) {
        self.gpio.lock().claimed.remove(&self.pin);
    }
}
