//! GPIO actions: a door-strike relay pulsed when an allow-listed person is recognized, a status
//! LED, and an optional PIR motion input that gates detection. Wiring, configuration and what
//! `faced run` does with each pin: docs/gpio.md.
//!
//! `faced run` starts this with [`Gpio::start`] when `gpio.enabled` and hands the
//! [`GpioHandle`] to the pipeline, which calls [`GpioHandle::on_recognized`] for every live
//! identified track, reports its health with [`GpioHandle::set_healthy`] and skips detection
//! while [`GpioHandle::motion_active`] is false.
//!
//! Hardware sits behind two small traits, [`OutputPin`] and [`InputPin`], handed out by a
//! [`GpioBackend`] (as librespot selects its audio backends: one trait, one implementation per
//! build feature, chosen by name from the config):
//!
//! | backend | built | what it drives |
//! |---------|-------|----------------|
//! | `fake`  | always | nothing: records and logs every level change, reads the PIR from a file ([`fake`]) |
//! | `rppal` | `--features gpio` | the Raspberry Pi header through `/dev/gpiomem` ([`rpi`]) |
//!
//! [`backends`] lists what this binary was built with (for `check-config`).
//!
//! # Threads and timing
//! [`Gpio::start`] returns a cheap-to-clone [`GpioHandle`]. [`GpioHandle::on_recognized`] sets
//! the relay *synchronously* on the caller's thread (a register write, microseconds), so a door
//! opens without waiting for a scheduler. One named thread, `gpio`, ends pulses, blinks the LED
//! and polls the PIR input; it sleeps on a condition variable until the next deadline (or 50 ms
//! while a PIR is configured), so an idle unit without a PIR never wakes up. Durations use an
//! injected [`Clocks`]' monotonic time: a Pi has no RTC and its wall clock jumps when NTP
//! syncs, and tests step a [`SimulatedClocks`](crate::base::SimulatedClocks) instead of
//! sleeping.
//!
//! # Invariants
//! - The relay is never re-triggered while it is pulsing, nor during `cooldown_ms` after a pulse.
//! - Every pin has at most one use; [`GpioConfig::validate`] refuses duplicates and pins
//!   outside the header's BCM 0–27, and the backend refuses pins already in use.
//! - When the last handle is dropped the driver thread stops and every output goes inactive
//!   (relay released, LED off) before the pins are released.

pub mod fake;
#[cfg(feature = "gpio")]
pub mod rpi;
// The GPIO logic against the fake backend and simulated clocks (relay pulses, LED, PIR): unit
// tests, so the 64-bit ARM CI step runs them without building the integration test binary.
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::base::{Clocks, RealClocks};
use crate::error::{Error, Kind, Result};

/// Highest BCM GPIO number on the Raspberry Pi's 40-pin header.
pub const MAX_HEADER_PIN: u8 = 27;

/// How often the PIR input is sampled. PIR modules hold their output high for seconds, so 50 ms
/// costs nothing in latency and 20 wake-ups a second cost nothing in power.
pub const PIR_POLL: Duration = Duration::from_millis(50);

/// Which implementation drives the pins (`gpio.backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The Raspberry Pi header through `rppal` (needs a binary built with `--features gpio`;
    /// the arm64 Debian package is).
    #[default]
    Rppal,
    /// No hardware: pin changes are logged at INFO and the PIR input is read from
    /// `gpio.fake_pir_file`. For trying a configuration on a PC, and for tests.
    Fake,
}

/// `[gpio]` section of faced.toml. All pins are BCM GPIO numbers (`GPIO17` = 17, physical
/// header pin 11), not physical pin positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpioConfig {
    /// Drive any pins at all. Default `false`: faced touches no GPIO unless asked to.
    pub enabled: bool,
    /// `rppal` (default) or `fake`.
    pub backend: BackendKind,
    /// Output driving the door-strike relay. Default: none (no relay).
    pub relay_pin: Option<u8>,
    /// The relay board switches on a *low* level (common for opto-isolated boards).
    /// Default `false` (high = energised).
    pub relay_active_low: bool,
    /// How long the relay is energised per recognition, in milliseconds, 10–60000. Default 1000.
    pub pulse_ms: u64,
    /// After a pulse ends, further recognitions are ignored for this long, in milliseconds
    /// (≤ 3600000). Default 5000: a person standing in the door is recognized on every frame
    /// and must not make the strike buzz continuously.
    pub cooldown_ms: u64,
    /// People whose recognition opens the door: their names as enrolled (exact match), or `"*"`
    /// for anyone recognized. Default empty (the relay never fires).
    pub allow: Vec<String>,
    /// Output driving a status LED: on while the pipeline is healthy, blinking on error, off
    /// while starting. Default: none.
    pub led_pin: Option<u8>,
    /// Half-period of the error blink, in milliseconds (50–10000). Default 500 (1 Hz).
    pub blink_ms: u64,
    /// Input from a PIR motion sensor (active high, internal pull-down). Default: none, and
    /// motion is then always reported as active so nothing is gated.
    pub pir_pin: Option<u8>,
    /// Motion stays active this many seconds after the PIR output last read high (0–3600).
    /// Default 30.
    pub pir_hold_s: u64,
    /// `backend = "fake"` only: the file the fake PIR input reads (`1` = motion, anything else
    /// or no file = none), so a configuration's PIR gating can be tried without a sensor.
    /// Default: none (the fake PIR then never reports motion).
    pub fake_pir_file: Option<PathBuf>,
}

impl Default for GpioConfig {
    fn default() -> Self {
        GpioConfig {
            enabled: false,
            backend: BackendKind::Rppal,
            relay_pin: None,
            relay_active_low: false,
            pulse_ms: 1000,
            cooldown_ms: 5000,
            allow: Vec::new(),
            led_pin: None,
            blink_ms: 500,
            pir_pin: None,
            pir_hold_s: 30,
            fake_pir_file: None,
        }
    }
}

impl GpioConfig {
    /// The configured pins as `(config key, BCM number)`, in a fixed order.
    pub fn pins(&self) -> Vec<(&'static str, u8)> {
        [
            ("gpio.relay_pin", self.relay_pin),
            ("gpio.led_pin", self.led_pin),
            ("gpio.pir_pin", self.pir_pin),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.map(|p| (k, p)))
        .collect()
    }

    /// Checks ranges and that no pin is used twice; messages name the `gpio.*` key. Called by
    /// [`Gpio::start`] and by `Config::validate` (so `faced check-config` and the start of
    /// `faced run` reject it). A disabled section is checked too: a mistake must show when the
    /// file is checked, not on the day someone sets `enabled = true`.
    pub fn validate(&self) -> Result<()> {
        let pins = self.pins();
        for (i, &(key, pin)) in pins.iter().enumerate() {
            if pin > MAX_HEADER_PIN {
                return Err(Error::invalid(format!(
                    "{key} = {pin} is not a GPIO on the Raspberry Pi header (BCM 0–{MAX_HEADER_PIN}); \
                     use the BCM number (GPIO17 = 17), not the physical pin position"
                )));
            }
            if let Some((other, _)) = pins[..i].iter().find(|(_, p)| *p == pin) {
                return Err(Error::invalid(format!(
                    "{key} = {pin} is also {other}; each GPIO pin can have only one use"
                )));
            }
        }
        let range = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{key} = {v} is out of range {lo}–{hi}"
                )))
            }
        };
        range("gpio.pulse_ms", self.pulse_ms, 10, 60_000)?;
        range("gpio.cooldown_ms", self.cooldown_ms, 0, 3_600_000)?;
        range("gpio.blink_ms", self.blink_ms, 50, 10_000)?;
        range("gpio.pir_hold_s", self.pir_hold_s, 0, 3600)?;
        if self.relay_pin.is_none() && !self.allow.is_empty() {
            return Err(Error::invalid(
                "gpio.allow lists people but gpio.relay_pin is not set; set the relay's BCM pin \
                 or remove gpio.allow",
            ));
        }
        if let Some(bad) = self.allow.iter().find(|n| n.trim().is_empty()) {
            return Err(Error::invalid(format!(
                "gpio.allow contains an empty name ({bad:?})"
            )));
        }
        if let Some(f) = &self.fake_pir_file {
            if self.backend != BackendKind::Fake {
                return Err(Error::invalid(format!(
                    "gpio.fake_pir_file = {:?} is only read by the fake backend; set                      gpio.backend = \"fake\" or remove it",
                    f.display()
                )));
            }
            if self.pir_pin.is_none() || f.as_os_str().is_empty() {
                return Err(Error::invalid(
                    "gpio.fake_pir_file needs a file name and gpio.pir_pin (the input it stands in for)",
                ));
            }
        }
        Ok(())
    }

    fn allows(&self, person: &str) -> bool {
        self.allow.iter().any(|a| a == "*" || a == person)
    }
}

/// A pin configured as an output.
pub trait OutputPin: Send {
    /// Drives the pin high (`true`) or low.
    fn set(&mut self, high: bool);
}

/// A pin configured as an input.
pub trait InputPin: Send {
    /// Whether the pin currently reads high.
    fn is_high(&self) -> bool;
}

/// Hands out pins. `what` is the config key the pin comes from, for error messages.
pub trait GpioBackend: Send + Sync {
    /// Short name (`fake`, `rppal`), as in [`backends`].
    fn name(&self) -> &'static str;
    /// Claims `pin` as an output, initially low. Fails with [`Kind::Conflict`] if the pin is in
    /// use, naming `what`.
    fn output(&self, pin: u8, what: &str) -> Result<Box<dyn OutputPin>>;
    /// Claims `pin` as an input with a pull-down. Same errors as [`GpioBackend::output`].
    fn input(&self, pin: u8, what: &str) -> Result<Box<dyn InputPin>>;
}

/// The GPIO backends compiled into this binary: `(name, description)`.
pub fn backends() -> &'static [(&'static str, &'static str)] {
    &[
        ("fake", "no hardware; logs pin changes (always built)"),
        #[cfg(feature = "gpio")]
        (
            "rppal",
            "Raspberry Pi header via /dev/gpiomem (feature `gpio`)",
        ),
    ]
}

/// The error for a pin that is already taken; shared by the backends so the message is the same.
pub fn pin_busy(pin: u8, what: &str, holder: Option<&str>) -> Error {
    let by = holder
        .filter(|h| !h.is_empty())
        .map(|h| format!(" by \"{h}\""))
        .unwrap_or_default();
    Error::new(
        Kind::Conflict,
        format!(
            "GPIO {pin} ({what}) is already in use{by}; choose a free pin in faced.toml or stop \
             the program or kernel driver (overlay in /boot/firmware/config.txt) that holds it"
        ),
    )
}

/// What [`GpioHandle::on_recognized`] did, for logging and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The relay was energised.
    Pulsed,
    /// GPIO is disabled or no relay pin is configured.
    NoRelay,
    /// The person is not on `gpio.allow`.
    NotAllowed,
    /// A pulse is in progress.
    AlreadyPulsing,
    /// Within `cooldown_ms` after the previous pulse.
    CoolingDown,
}

/// What the status LED is showing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedState {
    /// Off: starting up (no health reported yet) or shut down.
    Off,
    /// Steady on: the pipeline reported healthy.
    On,
    /// Blinking: the pipeline reported an error.
    Blinking,
}

/// Entry point; see the module docs.
#[derive(Debug)]
pub struct Gpio;

impl Gpio {
    /// Starts GPIO as configured: validates `cfg`, opens the configured backend, claims the pins
    /// and starts the `gpio` thread. With `enabled = false` it returns an inert handle (no pins,
    /// no thread, motion always active).
    pub fn start(cfg: &GpioConfig) -> Result<GpioHandle> {
        if !cfg.enabled {
            return Self::manual(
                cfg,
                Arc::new(fake::FakeGpio::new(Arc::new(RealClocks))),
                Arc::new(RealClocks),
            );
        }
        cfg.validate()?;
        let backend: Arc<dyn GpioBackend> = match cfg.backend {
            BackendKind::Fake => Arc::new(
                fake::FakeGpio::logging(Arc::new(RealClocks))
                    .with_input_file(cfg.fake_pir_file.clone()),
            ),
            #[cfg(feature = "gpio")]
            BackendKind::Rppal => Arc::new(rpi::RppalGpio::open()?),
            #[cfg(not(feature = "gpio"))]
            BackendKind::Rppal => {
                return Err(Error::precondition(
                    "gpio.enabled = true but this faced binary was built without the `gpio` \
                     feature (Raspberry Pi GPIO through rppal); use the arm64 Debian package, \
                     build with `--features gpio`, or set gpio.backend = \"fake\" to try the \
                     configuration without hardware",
                ));
            }
        };
        Self::start_with(cfg, backend, Arc::new(RealClocks))
    }

    /// Like [`Gpio::start`] with an explicit backend and clock; starts the `gpio` thread.
    pub fn start_with(
        cfg: &GpioConfig,
        backend: Arc<dyn GpioBackend>,
        clock: Arc<dyn Clocks>,
    ) -> Result<GpioHandle> {
        let handle = Self::manual(cfg, backend, clock)?;
        if handle.inner.shared.lock().active() {
            let shared = handle.inner.shared.clone();
            let t = std::thread::Builder::new()
                .name("gpio".into())
                .spawn(move || driver(&shared))
                .map_err(|e| Error::internal("cannot start the gpio thread").with_source(e))?;
            *handle
                .inner
                .thread
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(t);
        }
        Ok(handle)
    }

    /// Like [`Gpio::start_with`] but without the `gpio` thread: nothing happens over time unless
    /// the caller calls [`GpioHandle::poll`]. For tests with a [`SimulatedClocks`](crate::base::SimulatedClocks).
    pub fn manual(
        cfg: &GpioConfig,
        backend: Arc<dyn GpioBackend>,
        clock: Arc<dyn Clocks>,
    ) -> Result<GpioHandle> {
        let mut ctl = Controller {
            relay: None,
            led: None,
            pir: None,
            cfg: cfg.clone(),
            relay_off_at: None,
            cooldown_until: None,
            led_state: LedState::Off,
            led_lit: false,
            next_blink: None,
            last_motion: None,
            next_pir_poll: None,
            stop: false,
        };
        if cfg.enabled {
            cfg.validate()?;
            if let Some(p) = cfg.relay_pin {
                let mut pin = backend.output(p, "gpio.relay_pin")?;
                pin.set(cfg.relay_active_low); // inactive level
                ctl.relay = Some(pin);
            }
            if let Some(p) = cfg.led_pin {
                ctl.led = Some(backend.output(p, "gpio.led_pin")?);
            }
            if let Some(p) = cfg.pir_pin {
                ctl.pir = Some(backend.input(p, "gpio.pir_pin")?);
                ctl.next_pir_poll = Some(clock.monotonic());
            }
            tracing::info!(
                backend = backend.name(),
                relay = ?cfg.relay_pin,
                led = ?cfg.led_pin,
                pir = ?cfg.pir_pin,
                "gpio started"
            );
        }
        // Without a PIR nothing is gated: motion is permanently active.
        let (motion_tx, _) = watch::channel(ctl.pir.is_none());
        let shared = Arc::new(Shared {
            ctl: Mutex::new(ctl),
            wake: Condvar::new(),
            clock,
            motion_tx,
        });
        let h = GpioHandle {
            inner: Arc::new(HandleInner {
                shared,
                thread: Mutex::new(None),
            }),
        };
        h.poll();
        Ok(h)
    }
}

/// The daemon's handle to the GPIO actions; clone it freely. Dropping the last clone stops the
/// `gpio` thread and switches every output to inactive.
#[derive(Clone)]
pub struct GpioHandle {
    inner: Arc<HandleInner>,
}

impl fmt::Debug for GpioHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.inner.shared.lock();
        f.debug_struct("GpioHandle")
            .field("enabled", &c.cfg.enabled)
            .field("led", &c.led_state)
            .field("relay_on", &c.relay_off_at.is_some())
            .finish()
    }
}

impl GpioHandle {
    /// A person was recognized: pulse the relay if they are allowed and it is not pulsing or
    /// cooling down. Returns at once; the pulse ends on the `gpio` thread.
    pub fn on_recognized(&self, person: &str) -> Trigger {
        let s = &self.inner.shared;
        let now = s.clock.monotonic();
        let mut c = s.lock();
        let t = c.trigger(person, now);
        drop(c);
        if t == Trigger::Pulsed {
            tracing::info!(person, "door relay pulsed");
            s.wake.notify_all();
        } else {
            tracing::debug!(person, outcome = ?t, "door relay not pulsed");
        }
        t
    }

    /// Reports pipeline health: `true` lights the LED steadily, `false` makes it blink.
    pub fn set_healthy(&self, healthy: bool) {
        let s = &self.inner.shared;
        let now = s.clock.monotonic();
        let mut c = s.lock();
        let want = if healthy {
            LedState::On
        } else {
            LedState::Blinking
        };
        if c.led_state != want {
            c.led_state = want;
            c.next_blink = None;
            c.update_led(now);
            drop(c);
            s.wake.notify_all();
        }
    }

    /// What the LED is showing.
    pub fn led_state(&self) -> LedState {
        self.inner.shared.lock().led_state
    }

    /// Whether motion is active (always `true` without a PIR pin).
    pub fn motion_active(&self) -> bool {
        *self.inner.shared.motion_tx.borrow()
    }

    /// Motion as a watch channel the capture loop can `changed().await` on.
    pub fn motion(&self) -> watch::Receiver<bool> {
        self.inner.shared.motion_tx.subscribe()
    }

    /// Whether the relay is energised now.
    pub fn relay_active(&self) -> bool {
        self.inner.shared.lock().relay_off_at.is_some()
    }

    /// Does the time-driven work due at the clock's current time (end a pulse, toggle the blink,
    /// sample the PIR) and returns when it next needs to run, if ever. The `gpio` thread calls
    /// this; tests call it after advancing a fake clock.
    pub fn poll(&self) -> Option<Instant> {
        self.inner.shared.poll()
    }
}

struct HandleInner {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self
            .thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
        self.shared.lock().shutdown();
    }
}

struct Shared {
    ctl: Mutex<Controller>,
    wake: Condvar,
    clock: Arc<dyn Clocks>,
    motion_tx: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Controller> {
        // A panic while holding the lock leaves consistent-enough state (pin levels and
        // deadlines); keep driving the pins rather than poisoning the door.
        self.ctl.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poll(&self) -> Option<Instant> {
        let now = self.clock.monotonic();
        let mut c = self.lock();
        let (next, motion) = c.poll(now);
        drop(c);
        if let Some(m) = motion {
            self.motion_tx
                .send_if_modified(|cur| std::mem::replace(cur, m) != m);
        }
        next
    }
}

/// Body of the `gpio` thread: poll, then sleep until the next deadline or a notification.
fn driver(shared: &Shared) {
    loop {
        let next = shared.poll();
        let c = shared.lock();
        if c.stop {
            return;
        }
        let _guard = match next {
            Some(at) => {
                let wait = at.saturating_duration_since(shared.clock.monotonic());
                shared
                    .wake
                    .wait_timeout(c, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => shared.wake.wait(c).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// The pin state machine; all times come from the injected clock.
struct Controller {
    cfg: GpioConfig,
    relay: Option<Box<dyn OutputPin>>,
    led: Option<Box<dyn OutputPin>>,
    pir: Option<Box<dyn InputPin>>,
    /// Set while the relay is energised: when to release it.
    relay_off_at: Option<Instant>,
    /// No new pulse before this instant (end of the last pulse + cool-down).
    cooldown_until: Option<Instant>,
    led_state: LedState,
    /// Whether the LED is lit right now (toggles while blinking).
    led_lit: bool,
    next_blink: Option<Instant>,
    last_motion: Option<Instant>,
    next_pir_poll: Option<Instant>,
    stop: bool,
}

impl Controller {
    /// Whether there is anything for the `gpio` thread to do.
    fn active(&self) -> bool {
        self.relay.is_some() || self.led.is_some() || self.pir.is_some()
    }

    fn set_relay(&mut self, on: bool) {
        let level = on != self.cfg.relay_active_low;
        if let Some(r) = self.relay.as_mut() {
            r.set(level);
        }
    }

    fn trigger(&mut self, person: &str, now: Instant) -> Trigger {
        if !self.cfg.enabled || self.relay.is_none() {
            return Trigger::NoRelay;
        }
        if !self.cfg.allows(person) {
            return Trigger::NotAllowed;
        }
        if self.relay_off_at.is_some() {
            return Trigger::AlreadyPulsing;
        }
        if self.cooldown_until.is_some_and(|t| now < t) {
            return Trigger::CoolingDown;
        }
        self.set_relay(true);
        self.relay_off_at = Some(now + Duration::from_millis(self.cfg.pulse_ms));
        Trigger::Pulsed
    }

    fn update_led(&mut self, now: Instant) {
        let lit = match self.led_state {
            LedState::Off => false,
            LedState::On => true,
            LedState::Blinking => {
                let half = Duration::from_millis(self.cfg.blink_ms);
                match self.next_blink {
                    None => {
                        self.next_blink = Some(now + half);
                        true
                    }
                    Some(t) if now >= t => {
                        // Stay in phase even if a poll came late; skip whole missed periods.
                        let mut t = t;
                        let mut lit = self.led_lit;
                        while t <= now {
                            t += half;
                            lit = !lit;
                        }
                        self.next_blink = Some(t);
                        lit
                    }
                    Some(_) => self.led_lit,
                }
            }
        };
        if self.led_state != LedState::Blinking {
            self.next_blink = None;
        }
        if let Some(led) = self.led.as_mut()
            && lit != self.led_lit
        {
            led.set(lit);
        }
        self.led_lit = lit;
    }

    /// Returns the next deadline and, if the PIR was sampled, whether motion is active.
    fn poll(&mut self, now: Instant) -> (Option<Instant>, Option<bool>) {
        if self.relay_off_at.is_some_and(|t| now >= t) {
            self.set_relay(false);
            self.relay_off_at = None;
            self.cooldown_until = Some(now + Duration::from_millis(self.cfg.cooldown_ms));
        }
        self.update_led(now);
        let mut motion = None;
        if let Some(pir) = self.pir.as_ref()
            && self.next_pir_poll.is_some_and(|t| now >= t)
        {
            if pir.is_high() {
                self.last_motion = Some(now);
            }
            let hold = Duration::from_secs(self.cfg.pir_hold_s);
            motion = Some(
                self.last_motion
                    .is_some_and(|t| now.saturating_duration_since(t) <= hold),
            );
            self.next_pir_poll = Some(now + PIR_POLL);
        }
        let next = [self.relay_off_at, self.next_blink, self.next_pir_poll]
            .into_iter()
            .flatten()
            .min();
        (next, motion)
    }

    /// Everything inactive: relay released, LED off.
    fn shutdown(&mut self) {
        if self.relay_off_at.take().is_some() || self.relay.is_some() {
            self.set_relay(false);
        }
        self.led_state = LedState::Off;
        if let Some(led) = self.led.as_mut() {
            led.set(false);
        }
        self.led_lit = false;
    }
}
