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
//! log adds its own to what an action prints.

use std::io::Write;

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
    // Fails only if a logger is already installed, which main never does.
    let _ = log::set_logger(&STDERR_LOGGER);
    log::set_max_level(level);
}

static STDERR_LOGGER: StderrLogger = StderrLogger;

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
        let line = format!("banshare: {label}{}\n", record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}
