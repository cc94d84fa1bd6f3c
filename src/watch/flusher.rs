//! Delivers the local spool while the watcher runs: records this node's
//! `banshare ban` spooled while the log was unreachable go out as soon as it
//! is back, without anyone running `banshare flush`, and so do the journals
//! of `banshare ban` runs that were killed or ended before their delivery
//! was confirmed.
//!
//! It runs on its own thread with its own transport, because a flush may
//! wait for the cross-host lock, and that must never hold up applying bans.

use std::thread;
use std::time::Duration;

use crate::outbox::spool::Spool;
use crate::transport::Transport;
use log::{info, warn};

/// Starts the flusher: every `interval`, if the spool holds anything (or an
/// orphan journal), flush it. The thread ends with the process.
pub fn spawn(
    spool: Spool,
    mut transport: Box<dyn Transport>,
    interval: Duration,
    lock_timeout: Duration,
) {
    let body = move || {
        loop {
            thread::sleep(interval);
            match spool.needs_flush() {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    warn!("cannot read the spool: {e}");
                    continue;
                }
            }
            match spool.flush(&mut *transport, lock_timeout) {
                Ok(report) if report.delivered > 0 => info!(
                    "delivered {} spooled record(s) to the log",
                    report.delivered
                ),
                Ok(_) => {}
                Err(e) => warn!("flushing the spool failed: {e}"),
            }
        }
    };
    if let Err(e) = thread::Builder::new()
        .name("banshare-flush".into())
        .spawn(body)
    {
        warn!("cannot start the spool flusher: {e}");
    }
}
