//! Work that the caller can walk away from: a child process that holds none
//! of the caller's standard streams, and a bounded wait for its report.
//!
//! A thread is not enough for work on a network mount: a thread stuck in an
//! uninterruptible wait (a FUSE request the file server never answers) keeps
//! the whole process from exiting, and so keeps fail2ban waiting on its
//! action. A forked child can stay stuck while the parent exits.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// At most this much of the child's standard error is passed on.
const MAX_MESSAGES: usize = 64 * 1024;
/// How long the parent waits for a child that has reported (or died) to
/// exit, so that it can reap it rather than leave a zombie to init (which,
/// in a container without a real init, may never reap it).
const REAP_WAIT: Duration = Duration::from_millis(500);

/// How the wait for the child ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// The child's report, one line without its `\n`.
    Reported(String),
    /// The child ended without reporting (killed, or it panicked).
    Died,
    /// No report within the wait; the child may still be working.
    TimedOut,
}

/// What the parent learnt from the child.
#[derive(Debug)]
pub struct Detached {
    pub waited: Waited,
    /// What the child wrote to its standard error so far.
    pub messages: Vec<u8>,
    pub pid: u32,
}

/// Forks a child that runs `work` in a session of its own, with standard
/// input and output on `/dev/null` and standard error kept in memory, writes
/// the line `work` returns to the parent, and exits. The parent waits at
/// most `wait` for that line, then briefly (within `wait`) for the child to
/// exit, and reaps it if it did; a child still stuck is left behind.
///
/// Call it only while the process has a single thread: `fork` copies the
/// calling thread alone, so a lock held by another thread would stay held
/// in the child forever.
pub fn run_detached(wait: Duration, work: impl FnOnce() -> String) -> io::Result<Detached> {
    let messages = memfd()?;
    let (report_rx, report_tx) = pipe()?;
    let devnull = File::options().read(true).write(true).open("/dev/null")?;
    // SAFETY: the caller guarantees a single thread (see above).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(report_rx);
            run_child(&devnull, &messages, report_tx, work)
        }
        pid => {
            drop(report_tx);
            let deadline = Instant::now() + wait;
            let waited = wait_for_report(report_rx, wait)?;
            if waited != Waited::TimedOut {
                let left = deadline.saturating_duration_since(Instant::now());
                reap_within(pid, left.min(REAP_WAIT));
            }
            let mut out = vec![0; MAX_MESSAGES];
            let len = messages.read_at(&mut out, 0).unwrap_or(0);
            out.truncate(len);
            Ok(Detached {
                waited,
                messages: out,
                pid: pid as u32,
            })
        }
    }
}

/// The child's side; never returns.
fn run_child(devnull: &File, messages: &File, report: OwnedFd, work: impl FnOnce() -> String) -> ! {
    // SAFETY: plain system calls on descriptors this process owns. After
    // them, nothing refers to the caller's streams (fail2ban's pipes), and
    // no signal for the caller's process group or terminal reaches us.
    unsafe {
        libc::setsid();
        libc::dup2(devnull.as_raw_fd(), 0);
        libc::dup2(devnull.as_raw_fd(), 1);
        libc::dup2(messages.as_raw_fd(), 2);
    }
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(line) => {
            let mut line = line.replace('\n', " ");
            line.push('\n');
            // The parent may be gone; then nobody needs the report.
            let _ = File::from(report).write_all(line.as_bytes());
            0
        }
        Err(_) => 101,
    };
    std::process::exit(code)
}

/// Reads the child's report line, waiting at most `wait`.
fn wait_for_report(report: OwnedFd, wait: Duration) -> io::Result<Waited> {
    let deadline = Instant::now() + wait;
    let mut file = File::from(report);
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut poll = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, ms) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if ready == 0 {
            return Ok(Waited::TimedOut);
        }
        let mut buf = [0u8; 4096];
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(Waited::Died);
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            return Ok(Waited::Reported(
                String::from_utf8_lossy(&line).into_owned(),
            ));
        }
    }
}

/// Reaps child `pid` if it exits within `wait`. Polls, since a child stuck
/// in an uninterruptible call must not hold the caller.
fn reap_within(pid: libc::pid_t, wait: Duration) {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_micros(20);
    loop {
        // SAFETY: waitpid on our own child, no status wanted.
        let reaped = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        if reaped != 0 || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// An anonymous in-memory file.
fn memfd() -> io::Result<File> {
    // SAFETY: a constant NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"banshare-messages".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A pipe: (read end, write end), both close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The children below take no lock and print nothing: the test harness
    // has other threads, which `fork` does not copy.

    fn is_unreaped_child(pid: u32) -> bool {
        // SAFETY: waitpid with WNOHANG; -1 (ECHILD) once it was reaped.
        unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) >= 0 }
    }

    #[test]
    fn the_report_and_the_childs_stderr_reach_the_parent() {
        let detached = run_detached(Duration::from_secs(10), || {
            // SAFETY: writes a constant to the child's standard error.
            unsafe { libc::write(2, b"warning\n".as_ptr().cast(), 8) };
            "D 1\nrest".into()
        })
        .unwrap();
        assert_eq!(detached.waited, Waited::Reported("D 1 rest".into()));
        assert_eq!(detached.messages, b"warning\n");
        assert!(!is_unreaped_child(detached.pid), "the child was reaped");
    }

    #[test]
    fn a_child_that_dies_or_hangs_does_not_hold_the_parent() {
        let died = run_detached(Duration::from_secs(10), || {
            // SAFETY: ends the child at once, as SIGKILL would.
            unsafe { libc::_exit(9) }
        })
        .unwrap();
        assert_eq!(died.waited, Waited::Died);
        assert!(!is_unreaped_child(died.pid), "the dead child was reaped");
        let hung = run_detached(Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(5));
            "late".into()
        })
        .unwrap();
        assert_eq!(hung.waited, Waited::TimedOut);
    }
}
