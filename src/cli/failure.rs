//! How a command failed, which decides its exit status, and writing to
//! standard output so that a closed or full stdout is a failure, not a
//! panic.

/// How a command failed, which decides the exit status.
pub enum Failure {
    /// Bad arguments, input or configuration: exit 2, nothing written.
    Usage(String),
    /// Something went wrong while doing the work: exit 1.
    Runtime(anyhow::Error),
    /// Standard output could not be written: its reader went away (quiet
    /// end, by SIGPIPE) or the disk is full (exit 1).
    Output(std::io::Error),
    /// `status`: no watcher runs on this state directory (exit 3).
    NotRunning(String),
    /// A health check failed with this exit status: `status` of a watcher
    /// that stopped answering (4), `doctor` finding problems (1) or only
    /// warnings (4). The message goes to stderr as it is.
    Unhealthy(u8, String),
}

impl Failure {
    /// The one-line message the user sees.
    pub fn message(&self) -> String {
        match self {
            Failure::Usage(m) | Failure::NotRunning(m) | Failure::Unhealthy(_, m) => m.clone(),
            Failure::Runtime(e) => chain_text(e),
            Failure::Output(e) => e.to_string(),
        }
    }
}

/// The error and its causes, `outer: inner`, each said once: many errors
/// already include their cause's text, and repeating it ("Not a directory
/// (os error 20): Not a directory (os error 20)") reads as two failures.
fn chain_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Writes `text` to standard output and flushes it, so that a failure is
/// an error here rather than a panic in `print!` or a loss at exit.
pub fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Failure::Output)
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Runtime(e)
    }
}

pub type Result<T> = std::result::Result<T, Failure>;
