//! Helpers shared by the test modules, and the turns that heavy tests take.

pub mod broker;
pub mod daemon;
pub mod pairs;
pub mod web;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Turns between the tests that load the machine. The machine may have two cores, and the
/// timing assertions of some tests (a relay pulse's length, an event published "promptly", a
/// daemon's frame rate, login time limits) must not depend on a neighbour's load. All test
/// modules share one process, so this lock is the one place where tests of different files
/// learn about each other; tokio's lock is fair, so a waiting [`alone`] test is not starved by a
/// stream of [`beside_others`] ones.
static TURNS: RwLock<()> = RwLock::const_new(());

/// For a test that runs `faced` with the models, or is timed: nothing else that takes a turn
/// runs beside it. From a plain `#[test]` (not inside a runtime).
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    TURNS.blocking_write()
}

/// [`alone`] from an async test.
pub async fn alone_async() -> RwLockWriteGuard<'static, ()> {
    TURNS.write().await
}

/// For work that keeps the cores busy but has no timing assertion (the models run in the test
/// process): it may run beside other such work, never beside an [`alone`] test. From a plain
/// `#[test]` (not inside a runtime).
pub fn beside_others() -> RwLockReadGuard<'static, ()> {
    TURNS.blocking_read()
}

/// [`beside_others`] from an async test.
pub async fn beside_others_async() -> RwLockReadGuard<'static, ()> {
    TURNS.read().await
}

/// splitmix64: the next number of a seeded, reproducible stream (the randomized tests log their
/// seed, so a failure can be replayed).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
