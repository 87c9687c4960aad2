//! The bottom of the crate: small pieces every other module may use and that use nothing of
//! faced's but [`crate::error`].
//!
//! * [`clock`]: the one time source, [`Clocks`] (wall time, monotonic time, sleep), with
//!   [`RealClocks`] for the daemon and [`SimulatedClocks`] for tests that step time instead of
//!   sleeping (session expiry, event retention, cool-downs, GPIO pulses).
//! * [`backoff`]: [`Backoff`], the exponential retry delay used by the cameras, the vision
//!   thread and the event writer.
//! * [`shutdown`]: [`Shutdown`], the stop signal the daemon's threads check and sleep on.
//!
//! Invariant: nothing here imports another faced module (except `error`), so any module can use
//! it without creating an import cycle. No threads are started here.

pub mod backoff;
pub mod clock;
pub mod shutdown;

pub use backoff::Backoff;
pub use clock::{
    CLOCK_SKEW_MS, Clocks, RealClocks, SimulatedClocks, WALL_CLOCK_FLOOR_MS, civil_from_days,
    rfc3339_utc, unix_ms,
};
pub use shutdown::Shutdown;
