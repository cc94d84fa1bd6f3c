//! The logger behind the library's `log` macros: one line per message on
//! standard error, in the format admins and tests grep for:
//!
//! ```text
//! banshare: <message>            (info)
//! banshare: warning: <message>
//! banshare: error: <message>
//! banshare: debug: <message>     (-v)
//! ```
//!
//! No timestamps: under systemd the journal adds the time, and fail2ban's
//! log adds its own to what an action prints. When stderr is the journal
//! itself (systemd sets `JOURNAL_STREAM` to its device and inode), each line
//! starts with its syslog priority, `<3>` to `<7>`, which the journal takes
//! as the line's priority and strips (`journalctl -p warning` works).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// How much the command prints: `--quiet`, the default, or `-v`.
pub fn install(quiet: bool, verbose: bool) {
    let level = if quiet {
        LevelFilter::Warn
    } else if verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    UNDER_JOURNAL.store(stderr_is_journal(), Ordering::Relaxed);
    // Fails only if a logger is already installed, which main never does.
    let _ = log::set_logger(&STDERR_LOGGER);
    log::set_max_level(level);
}

static STDERR_LOGGER: StderrLogger = StderrLogger;

/// Whether lines get the journal's priority prefix. Checked once: a process
/// forked later (the detached delivery of `ban`) writes to a memfd that its
/// parent copies to this same stderr, so the same choice holds there.
static UNDER_JOURNAL: AtomicBool = AtomicBool::new(false);

/// Whether fd 2 is the stream `JOURNAL_STREAM` names (`<device>:<inode>`).
/// The variable alone is not enough: children of a journald service, such
/// as a fail2ban action, inherit it with stderr going elsewhere.
fn stderr_is_journal() -> bool {
    let Some(named) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer given; it is read only
    // when the call succeeded.
    let stat = unsafe {
        if libc::fstat(std::io::stderr().as_raw_fd(), stat.as_mut_ptr()) != 0 {
            return false;
        }
        stat.assume_init()
    };
    named.to_str() == Some(&format!("{}:{}", stat.st_dev, stat.st_ino))
}

/// Writes each line to file descriptor 2 when it is logged, unbuffered:
/// the detached child of `banshare ban` has a memfd there that its parent
/// copies out, so nothing may wait in a buffer when it exits.
struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Only banshare's own messages: a dependency's debug output is not
        // the admin's concern.
        metadata.level() <= log::max_level() && metadata.target().starts_with("banshare")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let label = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info => "",
            Level::Debug | Level::Trace => "debug: ",
        };
        // One write call per line, so that lines of concurrent threads
        // do not interleave; a closed or full stderr loses the line rather
        // than stopping the daemon.
        let priority = match (UNDER_JOURNAL.load(Ordering::Relaxed), record.level()) {
            (false, _) => "",
            (true, Level::Error) => "<3>",
            (true, Level::Warn) => "<4>",
            (true, Level::Info) => "<6>",
            (true, Level::Debug | Level::Trace) => "<7>",
        };
        let line = format!("{priority}banshare: {label}{}\n", record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}
