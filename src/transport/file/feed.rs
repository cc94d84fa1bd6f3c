//! The read side of the file transports: a [`Feed`] over the
//! [follower](crate::follow), for a local path or a mount ([`LocalFs`],
//! woken by inotify where it sees every writer) and for SFTP (its own
//! [`LogFs`], polled).
//!
//! Its [`Position`] is the follower's [`Cursor`] (the file's identity and
//! fingerprint, and the byte offset), of kind `"file"`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::follow::{
    Cursor, DirWatch, FollowError, FollowEvent, Follower, Handle, Line, LogFs, Mode,
};
use crate::transport::feed::{Entry, Feed, FeedError, Notice, Position, Unread};

/// The kind of position a [`FileFeed`] hands out.
pub const KIND: &str = "file";

/// A followed file as a [`Feed`].
pub struct FileFeed<F: LogFs> {
    follower: Follower<F>,
    path: PathBuf,
    log: String,
    /// Other names the log had in saved positions: an `sftp://` log was
    /// saved under its remote path alone before positions had a kind.
    aliases: Vec<String>,
    mode: Mode,
    /// inotify on the log's folder, while watching in `Mode::Native`.
    dir_watch: Option<DirWatch>,
    connections: Option<Arc<AtomicU64>>,
}

impl<F: LogFs> FileFeed<F> {
    /// Follows the file at `path` through `fs`; `log` is how the user named
    /// it (the path, or the URL), and `mode` how to notice changes.
    pub fn new(fs: F, path: PathBuf, log: String, mode: Mode) -> FileFeed<F> {
        FileFeed {
            follower: Follower::new(fs, path.clone(), None),
            path,
            log,
            aliases: Vec::new(),
            mode,
            dir_watch: None,
            connections: None,
        }
    }

    /// Also resumes from positions saved under `alias`.
    pub fn alias(mut self, alias: String) -> FileFeed<F> {
        self.aliases.push(alias);
        self
    }

    /// Reports the connections `fs` makes (see [`Feed::connections`]).
    pub fn counting_connections(mut self, connections: Arc<AtomicU64>) -> FileFeed<F> {
        self.connections = Some(connections);
        self
    }

    /// The position for `cursor`.
    fn position_at(&self, cursor: Cursor) -> Position {
        Position {
            kind: KIND.into(),
            log: self.log.clone(),
            seq: cursor.offset,
            at: serde_json::to_value(cursor).expect("a cursor always serializes"),
        }
    }
}

impl<F: LogFs> Feed for FileFeed<F> {
    fn log(&self) -> &str {
        &self.log
    }

    fn resume(&mut self, saved: &Position) -> Result<(), String> {
        if saved.kind != KIND {
            return Err(format!(
                "it is a position in a {} feed, not a file",
                saved.kind
            ));
        }
        if saved.log != self.log && !self.aliases.contains(&saved.log) {
            return Err(format!(
                "it is a position in {}, not {}",
                saved.log, self.log
            ));
        }
        let cursor: Cursor = serde_json::from_value(saved.at.clone())
            .map_err(|e| format!("it is not a file position: {e}"))?;
        self.follower.resume_at(cursor);
        Ok(())
    }

    fn watch(&mut self, wake: Handle) -> Mode {
        let (mode, dir_watch) = DirWatch::start(&self.path, self.mode, wake);
        self.mode = mode;
        self.dir_watch = dir_watch;
        mode
    }

    fn read(&mut self, max: usize) -> Result<Vec<Entry>, FeedError> {
        let lines = self.follower.read_lines(max).map_err(feed_error)?;
        Ok(lines
            .into_iter()
            .map(|line| match line {
                Line::Complete { bytes, .. } => Entry::Record(bytes),
                Line::TooLong { len, .. } => Entry::TooLong { len },
            })
            .collect())
    }

    fn position(&self) -> Option<Position> {
        self.follower.cursor().map(|c| self.position_at(c))
    }

    fn unread(&mut self, count_max: u64) -> Option<Unread> {
        self.follower.unread(count_max).ok().flatten()
    }

    fn take_notices(&mut self) -> Vec<Notice> {
        self.follower
            .take_events()
            .into_iter()
            .map(notice)
            .collect()
    }

    fn connections(&self) -> Option<Arc<AtomicU64>> {
        self.connections.clone()
    }
}

fn feed_error(e: FollowError) -> FeedError {
    match e {
        FollowError::Missing { .. } => FeedError::Missing(e.to_string()),
        FollowError::Unreachable { .. } => FeedError::Unreachable(e.to_string()),
        FollowError::Io { .. } => FeedError::Other(e.to_string()),
    }
}

/// What the follower noticed, in words for the operator.
fn notice(event: FollowEvent) -> Notice {
    let info = |text: String| Notice {
        warning: false,
        text,
    };
    let warn = |text: String| Notice {
        warning: true,
        text,
    };
    match event {
        FollowEvent::Resumed { offset } => info(format!("resuming at byte {offset}")),
        FollowEvent::ResumedRotated { path, offset } => info(format!(
            "resuming in rotated {} at byte {offset}",
            path.display()
        )),
        FollowEvent::CursorLost { .. } => warn(
            "no file matches the saved cursor (rotated away while stopped?): reading the log \
             from the start; records already applied change nothing"
                .into(),
        ),
        FollowEvent::Truncated { offset } => warn(format!(
            "the log was truncated below byte {offset}: reading it from the start"
        )),
        FollowEvent::Replaced => info(
            "the log was replaced (rotation or compaction): finished the old file, reading the new one"
                .into(),
        ),
        FollowEvent::Renamed { path } => info(format!(
            "the log was rotated to {}: finishing it there, then reading the new log",
            path.display()
        )),
    }
}
