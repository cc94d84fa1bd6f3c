//! A transport for unit tests of the code above transports (the appender,
//! the publisher): it takes every batch after a delay and writes nothing
//! anywhere, so it also works in a forked delivering child.

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use super::{Transport, TransportError};
use crate::record::RecordId;

/// Takes every batch after `delay`; has no records to find.
pub struct SlowLog {
    pub delay: Duration,
}

impl Transport for SlowLog {
    fn append(&mut self, _: &[u8]) -> Result<(), TransportError> {
        thread::sleep(self.delay);
        Ok(())
    }

    fn find_ids(&mut self, _: &HashSet<RecordId>) -> Result<HashSet<RecordId>, TransportError> {
        Ok(HashSet::new())
    }
}
