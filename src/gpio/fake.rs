//! The always-built GPIO backend: no hardware, every output level change recorded with a
//! timestamp from the injected [`Clocks`], inputs set by the test (or left low).
//!
//! Tests pair it with [`SimulatedClocks`](crate::base::SimulatedClocks) and [`Gpio::manual`](super::Gpio::manual) to check pulse
//! lengths and cool-downs exactly, without sleeping. Pins can be marked busy to exercise the
//! "pin already in use" path exactly as the real backend reports it.
//!
//! With `gpio.backend = "fake"` the daemon uses it in logging mode ([`FakeGpio::logging`]), so a
//! configuration can be tried on a PC and a test can watch the pins of a real `faced run` from
//! outside the process. That mode is a small, stable protocol (docs/gpio.md):
//! - every output level change is one INFO line `fake gpio: pin 17 -> high (relay)`, and a fall
//!   after a rise adds how long the pin was high: `fake gpio: pin 17 -> low (relay) after 300 ms`;
//! - inputs read the file `gpio.fake_pir_file` (if set) on every sample: `1` (surrounding
//!   whitespace ignored) is high, anything else or a missing file is low; each change of the
//!   level read is logged as `fake gpio: pin 22 reads high (pir)`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{GpioBackend, InputPin, OutputPin, pin_busy};
use crate::base::Clocks;
use crate::error::Result;

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
    clock: Arc<dyn Clocks>,
    state: Arc<Mutex<State>>,
    log: bool,
    input_file: Option<PathBuf>,
}

impl FakeGpio {
    /// A silent fake using `clock` for timestamps.
    pub fn new(clock: Arc<dyn Clocks>) -> Self {
        FakeGpio {
            clock,
            state: Arc::default(),
            log: false,
            input_file: None,
        }
    }

    /// A fake that also logs every level change at INFO (`gpio.backend = "fake"`; the line format
    /// is in the module docs). INFO, not debug: whoever picks the fake wants to see the pins.
    pub fn logging(clock: Arc<dyn Clocks>) -> Self {
        FakeGpio {
            log: true,
            ..Self::new(clock)
        }
    }

    /// Makes every input read `path` (`gpio.fake_pir_file`): `1` is high, anything else or no
    /// file is low. [`FakeGpio::set_input`] no longer matters then.
    pub fn with_input_file(mut self, path: Option<PathBuf>) -> Self {
        self.input_file = path;
        self
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
            role: role(what),
            gpio: self.clone(),
        };
        p.set(false);
        Ok(Box::new(p))
    }

    fn input(&self, pin: u8, what: &str) -> Result<Box<dyn InputPin>> {
        self.claim(pin, what)?;
        Ok(Box::new(FakeInput {
            pin,
            role: role(what),
            gpio: self.clone(),
        }))
    }
}

/// `gpio.relay_pin` → `relay`: the short name the log lines use.
fn role(what: &str) -> String {
    what.trim_start_matches("gpio.")
        .trim_end_matches("_pin")
        .to_string()
}

fn level_name(high: bool) -> &'static str {
    if high { "high" } else { "low" }
}

struct FakeOutput {
    pin: u8,
    role: String,
    gpio: FakeGpio,
}

impl OutputPin for FakeOutput {
    fn set(&mut self, high: bool) {
        let at = self.gpio.clock.monotonic();
        let mut s = self.gpio.lock();
        let changed = s.levels.insert(self.pin, high) != Some(high);
        if changed {
            let edges = s.edges.entry(self.pin).or_default();
            let rose_at = edges.last().filter(|e| e.high && !high).map(|e| e.at);
            edges.push(Edge { at, high });
            drop(s);
            if self.gpio.log {
                let (pin, level, role) = (self.pin, level_name(high), &self.role);
                match rose_at {
                    Some(t) => tracing::info!(
                        "fake gpio: pin {pin} -> {level} ({role}) after {} ms",
                        at.saturating_duration_since(t).as_millis()
                    ),
                    None => tracing::info!("fake gpio: pin {pin} -> {level} ({role})"),
                }
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
    role: String,
    gpio: FakeGpio,
}

impl InputPin for FakeInput {
    fn is_high(&self) -> bool {
        let Some(path) = &self.gpio.input_file else {
            return self.gpio.level(self.pin);
        };
        let high = std::fs::read_to_string(path).is_ok_and(|s| s.trim() == "1");
        let changed = self.gpio.lock().levels.insert(self.pin, high) != Some(high);
        if changed && self.gpio.log {
            let (pin, role) = (self.pin, &self.role);
            tracing::info!("fake gpio: pin {pin} reads {} ({role})", level_name(high));
        }
        high
    }
}

impl Drop for FakeInput {
    fn drop(&mut self) {
        self.gpio.lock().claimed.remove(&self.pin);
    }
}
