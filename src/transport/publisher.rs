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
    /// Calls run on the caller's thread (see [`Publisher::on_this_thread`]).
    here: bool,
}

impl Publisher {
    /// A publisher that makes its transport with `open` when first used.
    pub fn new(open: impl Fn() -> Box<dyn Transport> + Send + 'static) -> Publisher {
        Publisher {
            open: Box::new(open),
            transport: None,
            here: false,
        }
    }

    /// Runs each call on the caller's thread, with no worker: for a log
    /// on a local disk, whose calls answer or fail instead of hanging, and
    /// whose lock waits are bounded by the lock timeout that the deadline
    /// includes. A thread per call (its stack, its malloc arena, the
    /// hand-over) was a tenth of a `banshare ban`'s system calls.
    pub fn on_this_thread(&mut self) {
        self.here = true;
    }

    /// Runs `work` on the transport on a worker thread and waits at most
    /// `deadline` for it; `None` if it did not finish in time.
    pub fn run_with_deadline<T: Send + 'static>(
        &mut self,
        deadline: Duration,
        work: impl FnOnce(&mut dyn Transport) -> T + Send + 'static,
    ) -> Option<T> {
        let mut transport = self.transport.take().unwrap_or_else(|| (self.open)());
        if self.here {
            let result = work(&mut *transport);
            self.transport = Some(transport);
            return Some(result);
        }
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

    /// A transport that notes the thread each call ran on.
    struct ThreadNoting(Arc<std::sync::Mutex<Vec<thread::ThreadId>>>);

    impl Transport for ThreadNoting {
        fn append(&mut self, _: &[u8]) -> Result<(), crate::transport::TransportError> {
            self.0.lock().unwrap().push(thread::current().id());
            Ok(())
        }
    }

    #[test]
    fn calls_run_on_a_worker_unless_asked_to_run_on_this_thread() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let noted = seen.clone();
        let mut publisher =
            Publisher::new(move || Box::new(ThreadNoting(noted.clone())) as Box<dyn Transport>);
        let call =
            |p: &mut Publisher| p.run_with_deadline(Duration::from_secs(10), |t| t.append(b"x\n"));
        assert!(matches!(call(&mut publisher), Some(Ok(()))));
        publisher.on_this_thread();
        assert!(matches!(call(&mut publisher), Some(Ok(()))));
        let here = thread::current().id();
        assert_eq!(
            seen.lock()
                .unwrap()
                .iter()
                .map(|&t| t == here)
                .collect::<Vec<_>>(),
            [false, true]
        );
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
