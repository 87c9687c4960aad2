//! The one time source of the crate.
//!
//! Everything whose behaviour depends on time takes an `Arc<dyn Clocks>` instead of calling
//! `Instant::now` or `SystemTime::now`: session expiry (`web::auth`), event retention and
//! cool-downs (`events`), the MQTT outbox's timestamps, GPIO pulses and blinking. The daemon
//! passes [`RealClocks`]; tests pass a [`SimulatedClocks`] and [`advance`](SimulatedClocks::advance)
//! it, so "a session idle for 31 minutes" or "an event 8 days old" is checked exactly and at
//! once, without sleeping.
//!
//! Two kinds of time, never mixed:
//! * **wall** ([`Clocks::realtime`], [`Clocks::unix_ms`]): what is stored and shown (event
//!   times, `created_at` columns, session ages that must survive a restart). A Pi has no RTC, so
//!   it can jump when NTP syncs; nothing may assume it only moves forward.
//! * **monotonic** ([`Clocks::monotonic`]): durations within one process (cool-downs, pulse
//!   lengths, retry timers). It never jumps, and means nothing across a restart.
//!
//! Direct `Instant::now()` is still fine for pure performance measurement (stage timings,
//! benchmarks): what they measure is the real machine, and no test wants to fake it.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall and monotonic time, and sleeping. See the module docs.
pub trait Clocks: Send + Sync + fmt::Debug + 'static {
    /// Wall-clock now.
    fn realtime(&self) -> SystemTime;

    /// Monotonic now.
    fn monotonic(&self) -> Instant;

    /// Blocks the calling thread for `d` (a simulated clock advances instead).
    fn sleep(&self, d: Duration);

    /// Wall-clock now as Unix milliseconds, the unit of every timestamp column.
    fn unix_ms(&self) -> i64 {
        unix_ms(self.realtime())
    }

    /// How far the unit's local time is ahead of UTC at Unix ms `at`, in ms (negative west of
    /// Greenwich). Only for what people read as a calendar day ("unknown visitors today"):
    /// everything stored stays in UTC.
    fn utc_offset_ms(&self, at: i64) -> i64;

    /// The local calendar day of Unix ms `at` as a day number since 1970-01-01 (see
    /// [`civil_from_days`]), and the Unix ms at which that day began.
    fn local_day(&self, at: i64) -> (i64, i64) {
        let off = self.utc_offset_ms(at);
        let day = (at + off).div_euclid(DAY_MS);
        (day, day * DAY_MS - off)
    }
}

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// Wall times before this (2026-01-01T00:00:00Z, before this faced was written) are a clock
/// that has not been set: a board without a real-time clock boots in 1970, or at a date baked
/// into its image, and jumps when NTP syncs. Below it, faced does not trust the wall clock for
/// anything that deletes or orders (event stamps, retention; docs/reliability.md, "Clock jumps").
pub const WALL_CLOCK_FLOOR_MS: i64 = 1_767_225_600_000;

/// How far a stored time may lie in the future of the wall clock and still be believed: more
/// than this means the clock went back (or the stored time was written by a clock that was
/// ahead), and the rules of `events::store` and `web::auth` apply.
pub const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Unix milliseconds of `t` (0 before 1970).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealClocks;

impl Clocks for RealClocks {
    fn realtime(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }

    /// The C library's local time zone: `TZ` if set, else /etc/localtime (what `timedatectl
    /// set-timezone` writes), UTC without either. Read once per process: a new zone applies
    /// from the next start.
    fn utc_offset_ms(&self, at: i64) -> i64 {
        let t = at.div_euclid(1000) as libc::time_t;
        // SAFETY: localtime_r writes only into `tm`, which lives on this stack frame, and is
        // thread-safe (unlike localtime).
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
        if ok { tm.tm_gmtoff * 1000 } else { 0 }
    }
}

/// Clocks that stand still until told to move: both the wall and the monotonic clock start at
/// the real time of [`SimulatedClocks::new`] and move together by [`SimulatedClocks::advance`]
/// (or [`Clocks::sleep`], which advances instead of blocking).
#[derive(Debug)]
pub struct SimulatedClocks {
    origin: Instant,
    wall_origin: Mutex<SystemTime>,
    elapsed: Mutex<Duration>,
    utc_offset_ms: std::sync::atomic::AtomicI64,
}

impl Default for SimulatedClocks {
    fn default() -> Self {
        Self::new()
    }
}

impl SimulatedClocks {
    /// Clocks standing at the real now.
    pub fn new() -> SimulatedClocks {
        Self::starting_at(SystemTime::now())
    }

    /// Clocks whose wall time stands at `wall` (the monotonic origin is the real now).
    pub fn starting_at(wall: SystemTime) -> SimulatedClocks {
        SimulatedClocks {
            origin: Instant::now(),
            wall_origin: Mutex::new(wall),
            elapsed: Mutex::new(Duration::ZERO),
            utc_offset_ms: Default::default(),
        }
    }

    /// Puts the simulated unit in a time zone `offset_ms` ahead of UTC (0 at creation).
    pub fn set_utc_offset_ms(&self, offset_ms: i64) {
        self.utc_offset_ms
            .store(offset_ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Moves both clocks forward by `d`.
    pub fn advance(&self, d: Duration) {
        *self.elapsed.lock().unwrap_or_else(|p| p.into_inner()) += d;
    }

    /// Sets the wall clock to `wall` without moving the monotonic clock: a clock set back to
    /// 1970, or forward by years, as an RTC-less board or a bad time server does.
    pub fn set_wall(&self, wall: SystemTime) {
        let mut o = self.wall_origin.lock().unwrap_or_else(|p| p.into_inner());
        *o = wall
            .checked_sub(self.elapsed())
            .unwrap_or(std::time::UNIX_EPOCH);
    }

    /// Time advanced since the origin.
    pub fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The monotonic instant at creation.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// The monotonic instant `offset` after the origin.
    pub fn at(&self, offset: Duration) -> Instant {
        self.origin + offset
    }
}

impl Clocks for SimulatedClocks {
    fn realtime(&self) -> SystemTime {
        *self.wall_origin.lock().unwrap_or_else(|p| p.into_inner()) + self.elapsed()
    }

    fn monotonic(&self) -> Instant {
        self.origin + self.elapsed()
    }

    fn sleep(&self, d: Duration) {
        self.advance(d)
    }

    fn utc_offset_ms(&self, _at: i64) -> i64 {
        self.utc_offset_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Civil date (year, month, day) of a day number since 1970-01-01, proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`): the one calendar conversion of the crate.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// RFC 3339 UTC with milliseconds, e.g. `2025-01-31T07:05:09.042Z`.
pub fn rfc3339_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_clocks_move_only_when_advanced_and_together() {
        let c = SimulatedClocks::starting_at(UNIX_EPOCH + Duration::from_secs(1_000));
        let (m0, w0) = (c.monotonic(), c.unix_ms());
        assert_eq!(w0, 1_000_000);
        assert_eq!(c.monotonic(), m0, "stands still");
        c.advance(Duration::from_millis(1500));
        c.sleep(Duration::from_millis(500));
        assert_eq!(c.monotonic() - m0, Duration::from_secs(2));
        assert_eq!(c.unix_ms() - w0, 2_000);
        assert_eq!(c.elapsed(), Duration::from_secs(2));
        assert_eq!(c.at(c.elapsed()), c.monotonic());
    }

    #[test]
    fn local_days_begin_at_local_midnight() {
        // 2026-12-01T23:30:00Z.
        let at = 1_796_167_800_000;
        let c = SimulatedClocks::starting_at(UNIX_EPOCH + Duration::from_millis(at as u64));
        let (day, start) = c.local_day(at);
        assert_eq!(civil_from_days(day), (2026, 12, 1));
        assert_eq!(start, at - 23 * 3_600_000 - 1_800_000);
        // Two hours east it is already 01:30 on the 2nd; the day began 90 minutes earlier.
        c.set_utc_offset_ms(2 * 3_600_000);
        let (day, start) = c.local_day(at);
        assert_eq!(civil_from_days(day), (2026, 12, 2));
        assert_eq!(at - start, 5_400_000);
        // Ten hours west it is 13:30 on the 1st.
        c.set_utc_offset_ms(-10 * 3_600_000);
        let (day, start) = c.local_day(at);
        assert_eq!(civil_from_days(day), (2026, 12, 1));
        assert_eq!(at - start, 13 * 3_600_000 + 1_800_000);
    }

    #[test]
    fn unix_ms_before_1970_is_zero() {
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(42)), 42);
    }
}
