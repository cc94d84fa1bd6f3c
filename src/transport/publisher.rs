//! [`Publisher`]: one transport kept for many batches, as the monitor and
//! `banshare ban` deliver through it, each call bounded by a deadline.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::Transport;

/// Makes a transport. Opening one connects nothing: a transport connects
/// on its first call, so a publisher can be made before a fork.
pub type Opener = Box<dyn Fn() -> Box<dyn Transport> + Send>;

/// A transport kept between batches and lent to one call at a time, so
/// that a long-lived writer (the monitor) keeps one connection: an SFTP
/// transport reconnects by itself only after a call failed.
///
/// A call runs on a worker thread and is waited for at most its deadline:
/// a call hung on a frozen mount or a silent server cannot be cancelled,
/// but it need not hold up the caller. The hung worker keeps that
/// transport; the next call opens a fresh one.
pub struct Publisher {
    open: Opener,
    /// `None` until the first call, and after a call outlived its deadline.
    transport: Option<Box<dyn Transport>>,
}

impl Publisher {
    /// A publisher that makes its transport with `open` when first used.
    pub fn new(open: impl Fn() -> Box<dyn Transport> + Send + 'static) -> Publisher {
        Publisher {
            open: Box::new(open),
            transport: None,
        }
    }

    /// Runs `work` on the transport on a worker thread and waits at most
    /// `deadline` for it; `None` if it did not finish in time.
    pub fn run_with_deadline<T: Send + 'static>(
        &mut self,
        deadline: Duration,
        work: impl FnOnce(&mut dyn Transport) -> T + Send + 'static,
    ) -> Option<T> {
        let mut transport = self.transport.take().unwrap_or_else(|| (self.open)());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let result = work(&mut *transport);
            let _ = tx.send((result, transport));
        });
        let (result, transport) = rx.recv_timeout(deadline).ok()?;
        self.transport = Some(transport);
        Some(result)
    }
}

#[cfg(test)]
mod tests {

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    use crate::transport::testing::SlowLog;

    /// A publisher whose opener counts the transports it makes; the first
    /// one is slow.
    fn counted(first_delay: Duration) -> (Publisher, Arc<AtomicUsize>) {
        let opened = Arc::new(AtomicUsize::new(0));
        let count = opened.clone();
        let publisher = Publisher::new(move || {
            let delay = match count.fetch_add(1, Ordering::SeqCst) {
                0 => first_delay,
                _ => Duration::ZERO,
            };
            Box::new(SlowLog { delay })
        });
        (publisher, opened)
    }

    #[test]
    fn one_transport_serves_every_batch() {
        let (mut publisher, opened) = counted(Duration::ZERO);
        assert_eq!(opened.load(Ordering::SeqCst), 0, "opened before use");
        for _ in 0..3 {
            let done = publisher.run_with_deadline(Duration::from_secs(10), |t| t.append(b"x\n"));
            assert!(matches!(done, Some(Ok(()))));
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_call_past_its_deadline_leaves_its_transport_behind() {
        let (mut publisher, opened) = counted(Duration::from_secs(30));
        let late = publisher.run_with_deadline(Duration::from_millis(50), |t| t.append(b"x\n"));
        assert!(late.is_none());
        let next = publisher.run_with_deadline(Duration::from_secs(10), |t| t.append(b"x\n"));
        assert!(matches!(next, Some(Ok(()))));
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }
}
