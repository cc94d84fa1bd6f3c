//! Why the log could not be read this time. Every one of these is retried
//! by the caller; none loses the cursor.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Nothing at the path: the share is not mounted (an empty mount
    /// point), or the log is between deletion and re-creation.
    #[error("log {path} is missing (is the share mounted?): {source}")]
    Missing { path: PathBuf, source: io::Error },
    /// The share does not answer: a stale handle, a lost connection, an I/O
    /// error. The open file is given up and found again by its cursor.
    #[error("log {path} is unreachable: {source}")]
    Unreachable { path: PathBuf, source: io::Error },
    /// Any other failure (permissions, a directory at the path, ...).
    #[error("cannot {op} log {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl FollowError {
    /// Sorts an I/O error from `op` on `path`.
    pub(super) fn new(op: &'static str, path: &Path, source: io::Error) -> FollowError {
        let path = path.to_path_buf();
        if missing(&source) {
            FollowError::Missing { path, source }
        } else if unreachable(&source) {
            FollowError::Unreachable { path, source }
        } else {
            FollowError::Io { op, path, source }
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FollowError::Missing { path, .. }
            | FollowError::Unreachable { path, .. }
            | FollowError::Io { path, .. } => path,
        }
    }

    /// Whether the log (or its folder) is absent, rather than failing.
    pub fn is_missing(&self) -> bool {
        matches!(self, FollowError::Missing { .. })
    }
}

fn missing(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Errors of a share gone away. The kinds cover transports that build their
/// errors without an errno (SFTP); EIO, ENODEV and ENXIO have no kind.
fn unreachable(e: &io::Error) -> bool {
    let by_kind = matches!(
        e.kind(),
        ErrorKind::StaleNetworkFileHandle
            | ErrorKind::NotConnected
            | ErrorKind::TimedOut
            | ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::BrokenPipe
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
    );
    by_kind
        || matches!(
            e.raw_os_error(),
            Some(libc::EIO | libc::ENODEV | libc::ENXIO)
        )
}
