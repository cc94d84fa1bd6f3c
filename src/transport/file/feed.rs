//! The read side of the file transports: a [`Feed`] over the
//! [follower](crate::follow), for a local path or a mount ([`LocalFs`],
//! woken by inotify where it sees every writer) and for SFTP (its own
//! [`LogFs`], polled).
//!
//! Its [`Position`] is the follower's [`Cursor`] (the file's identity and
//! fingerprint, and the byte offset), of kind `"file"`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::follow::{
    Cursor, DirWatch, FollowError, FollowEvent, Follower, Handle, Line, LogFs, Mode, Poll, SizeFrom,
};
use crate::transport::feed::{Entry, Feed, FeedError, Notice, Position, Unread};

/// statfs's `f_type` of FUSE filesystems (sshfs among them).
const FUSE_MAGIC: i64 = 0x6573_5546;

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
    /// What to check when the log is missing, and when it does not answer:
    /// the transport's own advice (a mount, or a server).
    hints: (&'static str, &'static str),
    /// inotify on the log's folder, while watching in `Mode::Native`.
    dir_watch: Option<DirWatch>,
    /// Who to wake, once [`Feed::watch`] was called.
    wake: Option<Handle>,
    /// For `follow = auto`: the mode is chosen again when the folder's
    /// filesystem changes.
    auto: Option<AutoFollow>,
    connections: Option<Arc<AtomicU64>>,
    /// Polling, look fully only this often while the open file's size says
    /// nothing changed (see [`FileFeed::full_look_every`]).
    full_look: Option<Duration>,
    /// When the follower last looked fully.
    looked: Option<Instant>,
    /// Where polls take the log's size from; `None`: chosen by the
    /// filesystem of the log's folder at each full look (`size_from_fs`).
    size_from: Option<SizeFrom>,
    size_from_fs: SizeFrom,
}

/// What `follow = auto` chose from, to choose again when it changed: a
/// watcher started before the share was mounted saw a local folder
/// (inotify), and would otherwise stay blind to other hosts' writes once
/// the share is mounted over it.
struct AutoFollow {
    poll: Duration,
    safety: Duration,
    /// The filesystem type (statfs) the mode was chosen for.
    fs: Option<i64>,
    /// When it was last looked at: at most once a second.
    looked: Instant,
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
            hints: (super::MISSING_HINT, super::UNREACHABLE_HINT),
            dir_watch: None,
            wake: None,
            auto: None,
            connections: None,
            full_look: None,
            looked: None,
            size_from: None,
            size_from_fs: SizeFrom::Path,
        }
    }

    /// While polling, looks fully (the path, a fresh open to compare the
    /// first bytes, reads: about a dozen SFTP requests through sshfs) only
    /// when the cheap look ([`Follower::poll`]: the log's size, and
    /// what was appended to it) cannot tell, and at least once every
    /// `every`. A poll where nothing changed is then one request, about a
    /// tenth of the full look, so polls can come that much more often at
    /// the same cost to the file server. What the size cannot show waits
    /// for the next full look. Not used with inotify, which wakes the loop
    /// on changes and looks fully at every safety poll.
    pub fn full_look_every(mut self, every: Duration) -> FileFeed<F> {
        self.full_look = Some(every);
        self
    }

    /// Polls take the log's size from `from` rather than as the log's
    /// folder's filesystem suggests (for SFTP, whose paths are not on this
    /// host).
    pub fn size_from(mut self, from: SizeFrom) -> FileFeed<F> {
        self.size_from = Some(from);
        self
    }

    /// Where polls take the size from: the open file on FUSE (sshfs: one
    /// request, and it answers for the path), the path elsewhere (a local
    /// disk, NFS, CIFS: where `fstat` answers for the open file alone).
    fn choose_size_from(&mut self) {
        if self.size_from.is_none() {
            let fuse = crate::follow::mode::statfs_type(self.dir()) == Some(FUSE_MAGIC);
            self.size_from_fs = match fuse {
                true => SizeFrom::OpenFile,
                false => SizeFrom::Path,
            };
        }
    }

    /// A poll's cheap look ([`Follower::poll`]) when polling and the last
    /// full look is less than the full-look interval ago; `None` when the
    /// full look is due or needed.
    fn poll_cheaply(&mut self, max: usize) -> Option<Vec<Line>> {
        let every = self.full_look?;
        let recent = self.looked.is_some_and(|t| t.elapsed() < every);
        if !matches!(self.mode, Mode::Poll(_)) || !recent {
            return None;
        }
        let from = self.size_from.unwrap_or(self.size_from_fs);
        match self.follower.poll(max, from) {
            Poll::Unchanged => Some(Vec::new()),
            Poll::Appended(lines) => Some(lines),
            Poll::LookFully => None,
        }
    }

    /// Chooses the mode again, as `follow = auto` does, whenever the
    /// filesystem of the log's folder changes (a share mounted over it).
    pub fn auto_follow(mut self, poll: Duration, safety: Duration) -> FileFeed<F> {
        self.auto = Some(AutoFollow {
            poll,
            safety,
            fs: crate::follow::mode::statfs_type(self.dir()),
            looked: Instant::now(),
        });
        self
    }

    /// The log's folder.
    fn dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    /// Whether `log`, from a saved position, names this feed's log: as it
    /// was given, under an alias, or as the same path written otherwise
    /// (`/srv//newbans.log`, `/srv/./newbans.log`).
    fn names(&self, log: &str) -> bool {
        log == self.log || self.aliases.iter().any(|a| a == log) || Path::new(log) == self.path
    }

    /// Gives other advice than a mount's in errors: `missing` when the log
    /// is not there, `unreachable` when it does not answer.
    pub fn hints(mut self, missing: &'static str, unreachable: &'static str) -> FileFeed<F> {
        self.hints = (missing, unreachable);
        self
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

    /// A follow error in the user's words: the log as they named it (an
    /// `sftp://` URL, not the path on the server), the transport's advice,
    /// and the file it was about if that was a rotated one.
    fn feed_error(&self, e: FollowError) -> FeedError {
        let (missing, unreachable) = self.hints;
        let log = &self.log;
        let (path, text) = match &e {
            FollowError::Missing { path, source } => {
                (path, format!("log {log} is missing ({missing}): {source}"))
            }
            FollowError::Unreachable { path, source } => (
                path,
                format!("log {log} is unreachable ({unreachable}): {source}"),
            ),
            FollowError::Io { op, path, source } => {
                (path, format!("cannot {op} log {log}: {source}"))
            }
        };
        let text = match path == &self.path {
            true => text,
            false => format!("{text} (in {}, the rotated log)", path.display()),
        };
        match e {
            FollowError::Missing { .. } => FeedError::Missing(text),
            FollowError::Unreachable { .. } => FeedError::Unreachable(text),
            FollowError::Io { .. } => FeedError::Other(text),
        }
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
        if !self.names(&saved.log) {
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
        // The old directory watch goes first: one inotify watch at a time.
        self.dir_watch = None;
        let (mode, dir_watch) = DirWatch::start(&self.path, self.mode, wake.clone());
        self.mode = mode;
        self.dir_watch = dir_watch;
        self.wake = Some(wake);
        mode
    }

    fn recheck(&mut self) -> Option<Mode> {
        let dir = self.dir().to_owned();
        let auto = self.auto.as_mut()?;
        if auto.looked.elapsed() < Duration::from_secs(1) {
            return None;
        }
        auto.looked = Instant::now();
        let fs = crate::follow::mode::statfs_type(&dir);
        if fs == auto.fs {
            return None;
        }
        auto.fs = fs;
        let (poll, safety) = (auto.poll, auto.safety);
        let (mode, why) = crate::follow::mode::resolve_explained(
            crate::follow::FollowKind::Auto,
            &dir,
            poll,
            safety,
        );
        if mode == self.mode {
            return None;
        }
        log::info!("following {} differently now: {why}", self.log);
        self.mode = mode;
        let wake = self.wake.clone()?;
        Some(self.watch(wake))
    }

    fn read(&mut self, max: usize) -> Result<Vec<Entry>, FeedError> {
        let lines = match self.poll_cheaply(max) {
            Some(lines) => lines,
            None => {
                let now = Instant::now();
                // After an error, the next poll looks fully again: it is
                // the full look that finds the log back, and says so.
                self.looked = None;
                self.choose_size_from();
                let lines = self
                    .follower
                    .read_lines(max)
                    .map_err(|e| self.feed_error(e))?;
                self.looked = Some(now);
                lines
            }
        };
        // Into a vector of their own size: collected in place, the entries
        // kept the lines' larger allocation (1 MB for a catch-up's batch of
        // 10,000, four times what they need) until the batch was done.
        let mut entries = Vec::with_capacity(lines.len());
        entries.extend(lines.into_iter().map(|line| match line {
            Line::Complete { bytes, .. } => Entry::Record(bytes),
            Line::TooLong { len, .. } => Entry::TooLong { len },
        }));
        Ok(entries)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::follow::LocalFs;
    use std::time::Duration;

    fn feed(path: &str) -> FileFeed<LocalFs> {
        let mode = Mode::Poll(Duration::from_secs(1));
        FileFeed::new(LocalFs, path.into(), path.into(), mode)
    }

    fn saved(kind: &str, log: &str) -> Position {
        let cursor = Cursor {
            dev: 0,
            ino: 0,
            fingerprint: crate::follow::Fingerprint::EMPTY,
            offset: 0,
        };
        Position {
            kind: kind.into(),
            log: log.into(),
            seq: 0,
            at: serde_json::to_value(cursor).unwrap(),
        }
    }

    #[test]
    fn a_position_in_the_same_file_written_otherwise_is_taken_others_are_refused() {
        let mut feed = feed("/srv/banshare/newbans.log");
        for same in ["/srv/banshare/newbans.log", "/srv//banshare/./newbans.log"] {
            assert_eq!(feed.resume(&saved(KIND, same)), Ok(()), "{same}");
        }
        let other = feed.resume(&saved(KIND, "/srv/other.log")).unwrap_err();
        assert!(other.contains("/srv/other.log"), "{other}");
        let kind = feed.resume(&saved("nats", "/srv/banshare/newbans.log"));
        assert!(kind.unwrap_err().contains("nats"));
        let mut garbage = saved(KIND, "/srv/banshare/newbans.log");
        garbage.at = "garbage".into();
        assert!(feed.resume(&garbage).is_err());
    }
}
