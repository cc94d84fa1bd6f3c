//! How a node reaches the shared log. Every way (a local or mounted path
//! today; SFTP and ZeroMQ later) sits behind [`Transport`], so the appender,
//! the spool and the watcher do not care which one is configured.

mod file;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::PathBuf;

pub use file::FileTransport;

use crate::lock::LockError;
use crate::record::RecordId;

/// Where the shared log is, as given by `--log` or `log =`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLocation {
    /// A local path, or a path on a mounted share (sshfs, NFS).
    File(PathBuf),
}

impl LogLocation {
    /// Parses a `--log` value.
    pub fn parse(text: &str) -> Result<LogLocation, String> {
        if text.is_empty() {
            return Err("the log path is empty".into());
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "unsupported log URL scheme {scheme:?}: give a file path"
            ));
        }
        Ok(LogLocation::File(PathBuf::from(text)))
    }
}

impl fmt::Display for LogLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogLocation::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A connection to the shared log.
pub trait Transport: Send {
    /// Appends `batch`, whole lines each ending in `\n`, as one unit: under
    /// the cross-host lock, so no other writer's line lands inside it.
    fn append(&mut self, batch: &[u8]) -> Result<(), TransportError>;

    /// Which of `ids` already appear in the log. Used only to recover spool
    /// entries whose delivery was interrupted, so it may read the whole log.
    fn find_ids(&mut self, ids: &HashSet<RecordId>) -> Result<HashSet<RecordId>, TransportError>;
}

/// Why the log could not be written. Every one of these sends records to the
/// spool; none is fatal to the caller.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "log {0} does not exist (is the share mounted?). banshare never creates the log, \
         so that an unmounted share is not mistaken for an empty one"
    )]
    LogMissing(PathBuf),
    #[error("cannot open log {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("writing log {path} failed; part of the batch may have been written: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("reading log {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

impl TransportError {
    /// True when the error came before any byte was written, so a retry
    /// cannot produce a duplicate. Transports must therefore report every
    /// failure after the first byte is sent as [`TransportError::Write`], and
    /// nothing at all once the batch is complete.
    pub fn wrote_nothing(&self) -> bool {
        !matches!(self, TransportError::Write { .. })
    }
}

/// Opens the transport for `location`. `local_lock` is a local file that
/// serialises this host's writers.
pub fn open(
    location: &LogLocation,
    local_lock: &std::path::Path,
    owner: crate::lock::Owner,
    timings: crate::lock::LockTimings,
) -> Box<dyn Transport> {
    match location {
        LogLocation::File(path) => Box::new(FileTransport::new(path, local_lock, owner, timings)),
    }
}
