//! A transport for unit tests of the code above transports (the appender,
//! the publisher): it takes every batch after a delay and writes nothing
//! anywhere, so it also works in a forked delivering child.

use std::thread;
use std::time::Duration;

use super::{Transport, TransportError};

/// Takes every batch after `delay`; keeps nothing, so it cannot read the
/// log back (`find_ids` says so, as a message bus publisher would).
pub struct SlowLog {
    pub delay: Duration,
}

impl Transport for SlowLog {
    fn append(&mut self, _: &[u8]) -> Result<(), TransportError> {
        thread::sleep(self.delay);
        Ok(())
    }
}
