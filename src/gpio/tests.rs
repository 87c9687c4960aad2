//! GPIO logic against the fake backend and a fake clock: relay pulses for allow-listed
//! people only, exactly `pulse_ms` long, never twice within the pulse or cool-down; pins used twice
//! or already held are refused with messages naming the config key; the status LED follows
//! health; the PIR holds motion for `pir_hold_s`. Time is stepped, never slept, except in the one
//! test that checks the real `gpio` thread ends a pulse by itself.

use std::sync::Arc;
use std::time::Duration;

use crate::Kind;
use crate::base::SimulatedClocks;
use crate::gpio::fake::FakeGpio;
use crate::gpio::{BackendKind, Gpio, GpioConfig, GpioHandle, LedState, Trigger};

const RELAY: u8 = 17;
const LED: u8 = 27;
const PIR: u8 = 22;

fn cfg() -> GpioConfig {
    GpioConfig {
        enabled: true,
        backend: BackendKind::Fake,
        relay_pin: Some(RELAY),
        pulse_ms: 800,
        cooldown_ms: 3000,
        allow: vec!["alice".into(), "bob".into()],
        led_pin: Some(LED),
        blink_ms: 250,
        pir_pin: Some(PIR),
        pir_hold_s: 10,
        ..GpioConfig::default()
    }
}

fn start(cfg: &GpioConfig) -> (GpioHandle, FakeGpio, Arc<SimulatedClocks>) {
    let clock = Arc::new(SimulatedClocks::new());
    let gpio = FakeGpio::new(clock.clone());
    let h = Gpio::manual(cfg, Arc::new(gpio.clone()), clock.clone()).expect("start");
    (h, gpio, clock)
}

/// Advances the clock in `step`s up to `total`, polling as the gpio thread would.
fn run_for(h: &GpioHandle, clock: &SimulatedClocks, total: Duration, step: Duration) {
    let end = clock.elapsed() + total;
    while clock.elapsed() < end {
        clock.advance(step);
        h.poll();
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn allow_listed_person_pulses_once_for_pulse_ms() {
    // Without the PIR, whose 50 ms sampling would be the next deadline.
    let (h, gpio, clock) = start(&GpioConfig {
        pir_pin: None,
        ..cfg()
    });
    assert_eq!(h.on_recognized("alice"), Trigger::Pulsed);
    assert!(gpio.level(RELAY) && h.relay_active());
    // The gpio thread would wake exactly at the deadline poll() returns.
    let next = h.poll().expect("a deadline while pulsing");
    assert_eq!(next, clock.at(ms(800)));
    clock.advance(ms(799));
    h.poll();
    assert!(gpio.level(RELAY), "released early");
    clock.advance(ms(1));
    h.poll();
    assert!(!gpio.level(RELAY) && !h.relay_active());
    let pulses = gpio.pulses(RELAY);
    assert_eq!(pulses.len(), 1, "{pulses:?}");
    assert_eq!(pulses[0].start, clock.origin());
    assert_eq!(pulses[0].len, Some(ms(800)));
}

#[test]
fn others_do_not_pulse() {
    let (h, gpio, clock) = start(&cfg());
    assert_eq!(h.on_recognized("mallory"), Trigger::NotAllowed);
    assert_eq!(
        h.on_recognized("Alice"),
        Trigger::NotAllowed,
        "names match exactly"
    );
    run_for(&h, &clock, ms(2000), ms(100));
    assert!(gpio.pulses(RELAY).is_empty());
}

#[test]
fn no_second_pulse_while_pulsing_or_cooling_down() {
    let (h, gpio, clock) = start(&cfg());
    assert_eq!(h.on_recognized("alice"), Trigger::Pulsed);
    clock.advance(ms(400));
    h.poll();
    assert_eq!(h.on_recognized("bob"), Trigger::AlreadyPulsing);
    clock.advance(ms(400));
    h.poll(); // pulse ends at 800 ms; cool-down until 3800 ms
    assert_eq!(h.on_recognized("alice"), Trigger::CoolingDown);
    clock.advance(ms(2999));
    h.poll();
    assert_eq!(h.on_recognized("alice"), Trigger::CoolingDown);
    assert_eq!(gpio.pulses(RELAY).len(), 1);
    clock.advance(ms(1));
    assert_eq!(h.on_recognized("alice"), Trigger::Pulsed);
    run_for(&h, &clock, ms(1000), ms(50));
    let p = gpio.pulses(RELAY);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[1].start - p[0].start, ms(3800));
    assert!(p.iter().all(|p| p.len == Some(ms(800))), "{p:?}");
}

#[test]
fn star_allows_anyone() {
    let (h, _gpio, _clock) = start(&GpioConfig {
        allow: vec!["*".into()],
        ..cfg()
    });
    assert_eq!(h.on_recognized("carol"), Trigger::Pulsed);
}

#[test]
fn active_low_relay_idles_high_and_pulses_low() {
    let (h, gpio, clock) = start(&GpioConfig {
        relay_active_low: true,
        ..cfg()
    });
    assert!(
        gpio.level(RELAY),
        "idle level of an active-low relay is high"
    );
    h.on_recognized("alice");
    assert!(!gpio.level(RELAY));
    clock.advance(ms(800));
    h.poll();
    assert!(gpio.level(RELAY));
}

#[test]
fn disabled_or_relayless_does_nothing() {
    let (h, gpio, _) = start(&GpioConfig {
        enabled: false,
        ..cfg()
    });
    assert_eq!(h.on_recognized("alice"), Trigger::NoRelay);
    assert!(
        gpio.claimed().is_empty(),
        "a disabled section claims no pins"
    );
    assert!(h.motion_active(), "nothing is gated when disabled");
    let (h, _, _) = start(&GpioConfig {
        relay_pin: None,
        allow: vec![],
        ..cfg()
    });
    assert_eq!(h.on_recognized("alice"), Trigger::NoRelay);
}

#[test]
fn duplicate_pins_refused() {
    let e = GpioConfig {
        led_pin: Some(RELAY),
        ..cfg()
    }
    .validate()
    .unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidInput);
    assert_eq!(
        e.to_string(),
        "gpio.led_pin = 17 is also gpio.relay_pin; each GPIO pin can have only one use"
    );
    let e = GpioConfig {
        pir_pin: Some(LED),
        ..cfg()
    }
    .validate()
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("gpio.pir_pin = 27 is also gpio.led_pin"),
        "{e}"
    );
    // Gpio::manual validates too: nothing is claimed.
    let gpio = FakeGpio::new(Arc::new(SimulatedClocks::new()));
    let r = Gpio::manual(
        &GpioConfig {
            led_pin: Some(RELAY),
            ..cfg()
        },
        Arc::new(gpio.clone()),
        Arc::new(SimulatedClocks::new()),
    );
    assert!(r.is_err());
    assert!(gpio.claimed().is_empty());
}

#[test]
fn bad_values_refused_with_the_key() {
    let cases = [
        (
            GpioConfig {
                relay_pin: Some(40),
                ..cfg()
            },
            "gpio.relay_pin = 40 is not a GPIO on the Raspberry Pi header",
        ),
        (
            GpioConfig {
                pulse_ms: 0,
                ..cfg()
            },
            "gpio.pulse_ms = 0 is out of range 10–60000",
        ),
        (
            GpioConfig {
                blink_ms: 1,
                ..cfg()
            },
            "gpio.blink_ms = 1 is out of range",
        ),
        (
            GpioConfig {
                relay_pin: None,
                ..cfg()
            },
            "gpio.allow lists people but gpio.relay_pin is not set",
        ),
        (
            GpioConfig {
                allow: vec![" ".into()],
                ..cfg()
            },
            "gpio.allow contains an empty name",
        ),
    ];
    for (c, want) in cases {
        let e = c.validate().unwrap_err();
        assert!(e.to_string().starts_with(want), "{e} (wanted {want})");
    }
    // A disabled section is checked too: the mistake shows in `faced check-config` now, not
    // on the day someone enables GPIO.
    let e = GpioConfig {
        enabled: false,
        relay_pin: Some(40),
        ..cfg()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().starts_with("gpio.relay_pin = 40"), "{e}");
    // The fake's PIR file is for the fake backend only, and stands in for a configured PIR.
    let e = GpioConfig {
        backend: BackendKind::Rppal,
        fake_pir_file: Some("/tmp/pir".into()),
        ..cfg()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().starts_with("gpio.fake_pir_file"), "{e}");
    let e = GpioConfig {
        pir_pin: None,
        fake_pir_file: Some("/tmp/pir".into()),
        ..cfg()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("gpio.pir_pin"), "{e}");
}

/// The fake's PIR input reads `gpio.fake_pir_file`: `1` is high, anything else or no file low.
#[test]
fn fake_pir_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pir");
    let clock = Arc::new(SimulatedClocks::new());
    let gpio = FakeGpio::logging(clock.clone()).with_input_file(Some(file.clone()));
    let h = Gpio::manual(&cfg(), Arc::new(gpio.clone()), clock.clone()).unwrap();
    run_for(&h, &clock, ms(100), ms(50));
    assert!(!h.motion_active(), "no file: no motion");
    std::fs::write(&file, "1\n").unwrap();
    run_for(&h, &clock, ms(100), ms(50));
    assert!(h.motion_active());
    std::fs::write(&file, "0").unwrap();
    run_for(&h, &clock, Duration::from_secs(11), ms(50));
    assert!(!h.motion_active(), "released after pir_hold_s");
    std::fs::write(&file, "yes").unwrap();
    run_for(&h, &clock, ms(100), ms(50));
    assert!(!h.motion_active(), "only 1 means motion");
}

#[test]
fn pin_in_use_refused_with_holder() {
    let clock = Arc::new(SimulatedClocks::new());
    let gpio = FakeGpio::new(clock.clone());
    gpio.mark_busy(LED, "w1-gpio");
    let e = Gpio::manual(&cfg(), Arc::new(gpio.clone()), clock).unwrap_err();
    assert_eq!(e.kind(), Kind::Conflict);
    assert_eq!(
        e.to_string(),
        "GPIO 27 (gpio.led_pin) is already in use by \"w1-gpio\"; choose a free pin in faced.toml \
         or stop the program or kernel driver (overlay in /boot/firmware/config.txt) that holds it"
    );
    assert!(
        gpio.claimed().is_empty(),
        "pins claimed before the failure are released: {:?}",
        gpio.claimed()
    );
}

#[test]
fn pins_released_and_outputs_inactive_on_drop() {
    let (h, gpio, _clock) = start(&cfg());
    h.set_healthy(true);
    h.on_recognized("alice");
    assert!(gpio.level(RELAY) && gpio.level(LED));
    let h2 = h.clone();
    drop(h);
    assert!(gpio.level(RELAY), "a clone keeps it running");
    drop(h2);
    assert!(!gpio.level(RELAY) && !gpio.level(LED));
    assert!(gpio.claimed().is_empty());
}

#[test]
fn led_off_while_starting_on_when_healthy_blinks_on_error() {
    let (h, gpio, clock) = start(&cfg());
    assert_eq!(h.led_state(), LedState::Off);
    assert!(!gpio.level(LED));
    h.set_healthy(true);
    assert_eq!(h.led_state(), LedState::On);
    assert!(gpio.level(LED));
    run_for(&h, &clock, ms(2000), ms(50));
    assert_eq!(
        gpio.edges(LED).len(),
        2,
        "steady: one initial low, one rise"
    );

    let t0 = clock.elapsed();
    h.set_healthy(false);
    assert_eq!(h.led_state(), LedState::Blinking);
    run_for(&h, &clock, ms(1000), ms(50));
    // Lit at t0 (already on), off at +250, on at +500, off at +750, on at +1000.
    let changes: Vec<(Duration, bool)> = gpio
        .edges(LED)
        .iter()
        .skip(2)
        .map(|e| (e.at - clock.origin() - t0, e.high))
        .collect();
    assert_eq!(
        changes,
        vec![
            (ms(250), false),
            (ms(500), true),
            (ms(750), false),
            (ms(1000), true)
        ]
    );

    h.set_healthy(true);
    let n = gpio.edges(LED).len();
    run_for(&h, &clock, ms(1000), ms(50));
    assert!(gpio.level(LED));
    assert_eq!(gpio.edges(LED).len(), n, "no blinking once healthy again");
}

#[test]
fn pir_motion_held_for_pir_hold_s() {
    let (h, gpio, clock) = start(&cfg());
    let mut rx = h.motion();
    assert!(!h.motion_active(), "no motion seen yet");
    gpio.set_input(PIR, true);
    run_for(&h, &clock, ms(100), ms(50));
    assert!(h.motion_active());
    assert!(rx.has_changed().unwrap());
    assert!(*rx.borrow_and_update());
    gpio.set_input(PIR, false);
    run_for(&h, &clock, Duration::from_secs(9), ms(50));
    assert!(h.motion_active(), "held for pir_hold_s");
    assert!(
        !rx.has_changed().unwrap(),
        "no spurious notifications while held"
    );
    run_for(&h, &clock, Duration::from_secs(2), ms(50));
    assert!(!h.motion_active());
    assert!(rx.has_changed().unwrap());
}

#[test]
fn without_pir_motion_is_always_active() {
    let (h, _, _) = start(&GpioConfig {
        pir_pin: None,
        ..cfg()
    });
    assert!(h.motion_active());
    assert!(*h.motion().borrow());
}

#[test]
fn config_parses_with_defaults_and_rejects_unknown_keys() {
    let c: GpioConfig =
        toml::from_str("enabled = true\nrelay_pin = 17\nallow = [\"alice\"]\n").unwrap();
    assert_eq!(c.pulse_ms, 1000);
    assert_eq!(c.cooldown_ms, 5000);
    assert_eq!(c.pir_hold_s, 30);
    assert_eq!(c.backend, BackendKind::Rppal);
    c.validate().unwrap();
    let e = toml::from_str::<GpioConfig>("relay = 17\n").unwrap_err();
    assert!(e.to_string().contains("unknown field `relay`"), "{e}");
    assert!(!GpioConfig::default().enabled);
}

#[test]
fn backends_table_lists_fake() {
    let names: Vec<&str> = crate::gpio::backends().iter().map(|b| b.0).collect();
    assert!(names.contains(&"fake"));
    assert_eq!(names.contains(&"rppal"), cfg!(feature = "gpio"));
}

#[cfg(not(feature = "gpio"))]
#[test]
fn rppal_backend_without_feature_is_refused() {
    let e = Gpio::start(&GpioConfig {
        backend: BackendKind::Rppal,
        ..cfg()
    })
    .unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    assert!(
        e.to_string().contains("built without the `gpio` feature"),
        "{e}"
    );
}

/// The real thread, real clock: the pulse ends without anyone calling poll().
#[test]
fn gpio_thread_ends_the_pulse() {
    let clock = Arc::new(crate::base::RealClocks);
    let gpio = FakeGpio::new(clock.clone());
    let c = GpioConfig {
        pulse_ms: 30,
        pir_pin: None,
        ..cfg()
    };
    let h = Gpio::start_with(&c, Arc::new(gpio.clone()), clock).unwrap();
    assert_eq!(h.on_recognized("alice"), Trigger::Pulsed);
    // The thread raises the pin after on_recognized returns (under emulation, noticeably
    // later), so wait for a whole pulse, not merely for a low level.
    let t = std::time::Instant::now();
    let ended = || gpio.pulses(RELAY).first().is_some_and(|p| p.len.is_some());
    while !ended() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(ms(5));
    }
    let p = gpio.pulses(RELAY);
    assert_eq!(p.len(), 1, "{p:?}");
    let len = p[0].len.expect("pulse ended");
    assert!(len >= ms(30) && len < ms(1000), "{len:?}");
    drop(h);
    assert!(gpio.claimed().is_empty());
}
