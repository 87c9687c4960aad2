//! The Raspberry Pi backend (`--features gpio`): pins through `rppal`, which writes the GPIO
//! registers via `/dev/gpiomem` (Pi 1–4) or the RP1 block (Pi 5). The `faced` user needs the
//! `gpio` group for that (the Debian package adds it).
//!
//! "Pin already in use" is checked twice, because rppal alone only sees its own process:
//! 1. rppal's [`rppal::gpio::Error::PinUsed`] for a pin this process already holds;
//! 2. the kernel's line info (`GPIO_V2_GET_LINEINFO_IOCTL` on the header's `/dev/gpiochipN`,
//!    read-only), whose `USED` flag and consumer name reveal a pin claimed by a kernel driver
//!    (an overlay such as `w1-gpio` or `gpio-fan`) or by another program through the character
//!    device (libgpiod tools, Home Assistant). This check is best-effort: if no chip can be
//!    opened it is skipped with a debug log, and programs poking `/dev/gpiomem` directly (like
//!    rppal itself) are invisible to it.

use std::fs::File;
use std::os::fd::AsRawFd;

use rppal::gpio;

use super::{GpioBackend, InputPin, OutputPin, pin_busy};
use crate::error::{Error, Kind, Result};

/// The Pi's GPIO peripheral.
#[derive(Debug)]
pub struct RppalGpio {
    gpio: gpio::Gpio,
    chip: Option<File>,
}

impl RppalGpio {
    /// Opens the GPIO peripheral; fails with a message that names the next step.
    pub fn open() -> Result<Self> {
        let gpio = gpio::Gpio::new().map_err(|e| match e {
            gpio::Error::PermissionDenied(path) => Error::new(
                Kind::PermissionDenied,
                format!(
                    "permission denied opening {path} for GPIO; run faced as a member of the \
                     `gpio` group (the Debian package's `faced` user is)"
                ),
            ),
            gpio::Error::UnknownModel => Error::precondition(
                "gpio.enabled = true but this is not a Raspberry Pi that rppal recognises; \
                 set gpio.enabled = false or gpio.backend = \"fake\"",
            ),
            e => Error::unavailable("cannot open the Raspberry Pi GPIO peripheral").with_source(e),
        })?;
        let chip = header_chip();
        if chip.is_none() {
            tracing::debug!("no readable pinctrl /dev/gpiochipN; skipping the kernel in-use check");
        }
        Ok(RppalGpio { gpio, chip })
    }

    fn pin(&self, pin: u8, what: &str) -> Result<gpio::Pin> {
        if let Some(chip) = &self.chip
            && let Some(consumer) = line_consumer(chip, pin)
        {
            return Err(pin_busy(pin, what, Some(&consumer)));
        }
        self.gpio.get(pin).map_err(|e| match e {
            gpio::Error::PinUsed(p) => pin_busy(p, what, Some("faced")),
            gpio::Error::PinNotAvailable(p) => {
                Error::invalid(format!("{what} = {p}: this board has no GPIO {p}"))
            }
            e => Error::unavailable(format!("cannot claim GPIO {pin} ({what})")).with_source(e),
        })
    }
}

impl GpioBackend for RppalGpio {
    fn name(&self) -> &'static str {
        "rppal"
    }

    fn output(&self, pin: u8, what: &str) -> Result<Box<dyn OutputPin>> {
        Ok(Box::new(RpiOutput(self.pin(pin, what)?.into_output_low())))
    }

    fn input(&self, pin: u8, what: &str) -> Result<Box<dyn InputPin>> {
        Ok(Box::new(RpiInput(
            self.pin(pin, what)?.into_input_pulldown(),
        )))
    }
}

struct RpiOutput(gpio::OutputPin);

impl OutputPin for RpiOutput {
    fn set(&mut self, high: bool) {
        self.0.write(if high {
            gpio::Level::High
        } else {
            gpio::Level::Low
        });
    }
}

struct RpiInput(gpio::InputPin);

impl InputPin for RpiInput {
    fn is_high(&self) -> bool {
        self.0.is_high()
    }
}

// --- Kernel line info (linux/gpio.h, uAPI v2); layouts are ABI-stable. ---

/// `struct gpiochip_info`.
#[repr(C)]
struct ChipInfo {
    name: [u8; 32],
    label: [u8; 32],
    lines: u32,
}

/// `struct gpio_v2_line_attribute`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LineAttribute {
    id: u32,
    padding: u32,
    value: u64,
}

/// `struct gpio_v2_line_info`.
#[repr(C)]
struct LineInfo {
    name: [u8; 32],
    consumer: [u8; 32],
    offset: u32,
    num_attrs: u32,
    flags: u64,
    attrs: [LineAttribute; 10],
    padding: [u32; 4],
}

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xB4 << 8) | nr
}
const GPIO_GET_CHIPINFO_IOCTL: u64 = ioc(2, 0x01, size_of::<ChipInfo>());
const GPIO_V2_GET_LINEINFO_IOCTL: u64 = ioc(3, 0x05, size_of::<LineInfo>());
const GPIO_V2_LINE_FLAG_USED: u64 = 1;
/// Labels of the chips that carry the 40-pin header (Pi 1–3, Pi 4, Pi 5).
const HEADER_CHIPS: [&str; 3] = ["pinctrl-bcm2835", "pinctrl-bcm2711", "pinctrl-rp1"];

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Opens the gpiochip whose label is one of [`HEADER_CHIPS`].
fn header_chip() -> Option<File> {
    let mut entries: Vec<_> = std::fs::read_dir("/dev")
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gpiochip"))
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries.into_iter().find_map(|p| {
        let f = File::open(&p).ok()?;
        let mut info = ChipInfo {
            name: [0; 32],
            label: [0; 32],
            lines: 0,
        };
        // SAFETY: GPIO_GET_CHIPINFO_IOCTL writes one `struct gpiochip_info`, which `info` is.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), GPIO_GET_CHIPINFO_IOCTL as _, &mut info) };
        (r == 0 && HEADER_CHIPS.contains(&cstr(&info.label).as_str())).then_some(f)
    })
}

/// The consumer holding line `pin` of `chip`, if the kernel says it is used.
fn line_consumer(chip: &File, pin: u8) -> Option<String> {
    let mut info = LineInfo {
        name: [0; 32],
        consumer: [0; 32],
        offset: u32::from(pin),
        num_attrs: 0,
        flags: 0,
        attrs: [LineAttribute {
            id: 0,
            padding: 0,
            value: 0,
        }; 10],
        padding: [0; 4],
    };
    // SAFETY: GPIO_V2_GET_LINEINFO_IOCTL reads `offset` and writes one `struct
    // gpio_v2_line_info`, which `info` is (256 bytes, checked by the size in the request code).
    let r = unsafe { libc::ioctl(chip.as_raw_fd(), GPIO_V2_GET_LINEINFO_IOCTL as _, &mut info) };
    if r != 0 || info.flags & GPIO_V2_LINE_FLAG_USED == 0 {
        return None;
    }
    // An empty consumer name still means "used"; pin_busy then names no holder.
    Some(cstr(&info.consumer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uapi_layouts_match_linux_gpio_h() {
        assert_eq!(size_of::<ChipInfo>(), 68);
        assert_eq!(size_of::<LineInfo>(), 256);
        assert_eq!(GPIO_GET_CHIPINFO_IOCTL, 0x8044_B401);
        assert_eq!(GPIO_V2_GET_LINEINFO_IOCTL, 0xC100_B405);
    }
}
