//! The read side of a transport: a [`Feed`] hands out the log's records in
//! order, each once, with a [`Position`] to resume from.
//!
//! The watcher holds its feed as a `Box<dyn Feed>` and knows nothing of
//! paths, offsets or connections: a file followed on a local disk or a
//! mount, the same file over SFTP, and (later) a message bus are all read
//! the same way. Each feed:
//!
//! - hands out whole records only, in the order the log has them, each
//!   once from a given position ([`Feed::read`]);
//! - says where it stands after the last record handed out
//!   ([`Feed::position`]); the watcher saves that once the records are
//!   applied, and gives it back after a restart ([`Feed::resume`]);
//! - wakes the watcher when there may be more ([`Feed::watch`]), or tells
//!   it how often to look;
//! - measures what it holds past that position ([`Feed::unread`]), so
//!   that `banshare status` shows the true lag whatever the transport.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde::{Deserialize, Serialize};

pub use crate::follow::Unread;
use crate::follow::{Handle, Mode};

/// One record of the log as a feed hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A whole record, without its line end, not yet parsed: whatever a
    /// writer put there, forged or garbage included.
    Record(Vec<u8>),
    /// A record over [`MAX_LINE_LEN`](crate::record::MAX_LINE_LEN) bytes:
    /// it was discarded as it arrived; `len` is how long it was.
    TooLong { len: u64 },
}

impl Entry {
    /// The bytes it took in the log, its line end included.
    pub fn size(&self) -> u64 {
        match self {
            Entry::Record(bytes) => bytes.len() as u64 + 1,
            Entry::TooLong { len } => len + 1,
        }
    }
}

/// Where a feed stands: right after the last record it handed out. Saved
/// in the state file; only the kind of feed that made it reads `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The kind of feed that made it: `"file"` for a followed file (a local
    /// path, a mount, or SFTP). A feed of another kind refuses it.
    pub kind: String,
    /// The log it is a position in, as the user named it (a path or a URL).
    pub log: String,
    /// How far, in the feed's own unit (bytes into a file, a message
    /// sequence number): shown by `banshare status`, never used to resume.
    pub seq: u64,
    /// The feed's own description of the place, whatever it needs to find
    /// it again (a file's fingerprint, a stream's name).
    pub at: serde_json::Value,
}

/// Something a feed noticed that the operator should hear about (a resume,
/// a rotation, a position that no longer exists), already in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// A warning (records may have been missed or come twice) rather than
    /// information.
    pub warning: bool,
    pub text: String,
}

/// Why a feed could not read this time. None of these is fatal: the feed
/// keeps its position and the next read tries again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The log is not there: an unmounted share, a log between deletion
    /// and re-creation, a stream not created yet.
    #[error("{0}")]
    Missing(String),
    /// The log does not answer: a dead mount, a lost connection, a broker
    /// down.
    #[error("{0}")]
    Unreachable(String),
    /// Anything else (permissions, a directory at the path, ...).
    #[error("{0}")]
    Other(String),
}

/// The read side of a transport. See the module documentation.
pub trait Feed: Send {
    /// The log as the user named it: a path or a URL.
    fn log(&self) -> &str;

    /// Goes on from `saved` (a position a feed handed out before a
    /// restart) instead of the start. `Err` says why it cannot (another
    /// log, another kind of feed): the feed then starts from the beginning
    /// of the log, and the policy drops what was already applied.
    fn resume(&mut self, saved: &Position) -> Result<(), String>;

    /// Starts telling the loop behind `wake` when there may be more to
    /// read, and returns how often the loop must look anyway.
    fn watch(&mut self, wake: Handle) -> Mode;

    /// A new way to notice changes, when the one [`Feed::watch`] returned
    /// no longer fits (a share mounted on the log's folder after the
    /// start, where inotify is blind): the new mode, already in effect.
    /// Cheap enough to ask on every cycle.
    fn recheck(&mut self) -> Option<Mode> {
        None
    }

    /// Up to `max` records, in log order, each after the last one handed
    /// out. Fewer means caught up for now. An error means none was handed
    /// out and the position is unchanged.
    fn read(&mut self, max: usize) -> Result<Vec<Entry>, FeedError>;

    /// The position right after the last record handed out: what to save
    /// once those records are applied. `None` before anything was read and
    /// nothing resumed.
    fn position(&self) -> Option<Position>;

    /// What the log holds past the last record handed out, counting
    /// records through at most `count_max` bytes. Moves nothing. `None`
    /// when the feed cannot tell now (not connected, not attached yet).
    fn unread(&mut self, count_max: u64) -> Option<Unread>;

    /// What happened since the last call, oldest first, for the caller to
    /// log.
    fn take_notices(&mut self) -> Vec<Notice>;

    /// Connections the feed has made so far, for a feed that connects to a
    /// server: whoever must notice a reconnect (the watcher looks up the
    /// server's addresses again) watches it. `None` for a mount or a local
    /// file, reached through the kernel.
    fn connections(&self) -> Option<Arc<AtomicU64>> {
        None
    }
}
