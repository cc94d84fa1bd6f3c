//! Shared helpers for integration tests.
//!
//! Every test binary that says `mod support;` compiles all of this, but each
//! uses only part of it; hence the `dead_code` allowance for this module.
#![allow(dead_code)]

pub mod cluster;

use std::thread;
use std::time::{Duration, Instant};

/// How often [`wait_until`] re-checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `cond` until it returns true or `timeout` has passed.
///
/// Returns whether the condition became true; callers panic with context of
/// their own when it did not. The condition is always checked once after the
/// deadline has passed, so a long sleep before the last poll is not a failure.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL_INTERVAL);
    }
}
