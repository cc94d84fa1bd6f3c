//! When a follow loop wakes up: on a message from another thread (stop,
//! reload, or "changed" from a feed: an inotify event for the followed
//! file, a message that arrived), or when the poll interval has passed.
//! The watcher and the monitor share it; [`DirWatch`] is the inotify side
//! for feeds that follow a file.
//!
//! One thread owns the loop's state; the inotify thread, the signal thread
//! and [`Handle`] holders only send it a [`Msg`].

use std::ffi::OsString;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind};

use super::mode::Mode;
use log::warn;

/// What other threads can tell the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// Something changed in the followed file's directory.
    Changed,
    /// Reload the configuration (SIGHUP).
    Reload,
    /// Stop after the current batch (SIGTERM, SIGINT).
    Stop,
}

/// Sends messages to a running loop.
#[derive(Debug, Clone)]
pub struct Handle(Sender<Msg>);

impl Handle {
    pub fn send(&self, msg: Msg) {
        // The loop may have stopped already; then there is nothing to do.
        let _ = self.0.send(msg);
    }
}

/// The loop's side: waits for the next reason to look at the feed.
pub struct Wake {
    rx: Receiver<Msg>,
    mode: Mode,
}

impl Wake {
    /// A loop that looks at least every `mode.interval()`, and whenever a
    /// [`Handle`] sends it a message. Once every handle is gone, it stops.
    pub fn new(mode: Mode) -> (Wake, Handle) {
        let (tx, rx) = mpsc::channel();
        (Wake { rx, mode }, Handle(tx))
    }

    /// Looks at least this often from now on: the feed's mode once it is
    /// watching.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// The mode in effect.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Waits for a message or the poll interval (`None`); a burst of change
    /// events becomes one wake-up, and stop and reload win over changes.
    pub fn wait(&mut self) -> Option<Msg> {
        self.wait_until(None)
    }

    /// As [`Wake::wait`], waiting no longer than `limit` if given: for
    /// work due before the mode's next look (a metrics file to write).
    pub fn wait_at_most(&mut self, limit: Option<Duration>) -> Option<Msg> {
        self.wait_until(limit.map(|l| Instant::now() + l))
    }

    /// As [`Wake::wait`], waking by `deadline` at the latest (when the loop
    /// has something of its own to do then).
    pub fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Msg> {
        let mut timeout = self.mode.interval();
        if let Some(deadline) = deadline {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        let first = match self.rx.recv_timeout(timeout) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => return None,
            Err(RecvTimeoutError::Disconnected) => return Some(Msg::Stop),
        };
        let mut strongest = first;
        while let Ok(msg) = self.rx.try_recv() {
            strongest = match (strongest, msg) {
                (Msg::Stop, _) | (_, Msg::Stop) => Msg::Stop,
                (Msg::Reload, _) | (_, Msg::Reload) => Msg::Reload,
                _ => Msg::Changed,
            };
        }
        Some(strongest)
    }
}

/// inotify on the directory of the file at `path`, telling `handle` of
/// changes to the file and its rotated siblings, kept for as long as the
/// returned value lives.
pub struct DirWatch {
    _watcher: notify::RecommendedWatcher,
}

impl DirWatch {
    /// Starts inotify for `mode` when it asks for it (`Mode::Native`). If
    /// inotify cannot start, says so and returns the polling mode to use
    /// instead.
    pub fn start(path: &Path, mode: Mode, handle: Handle) -> (Mode, Option<DirWatch>) {
        match mode {
            Mode::Native { .. } => match watch_directory(path, handle.0) {
                Ok(watcher) => (mode, Some(DirWatch { _watcher: watcher })),
                Err(e) => {
                    warn!("inotify unavailable ({e}); polling instead");
                    (Mode::Poll(Duration::from_millis(250)), None)
                }
            },
            Mode::Poll(_) | Mode::Pushed { .. } => (mode, None),
        }
    }
}

fn watch_directory(path: &Path, tx: Sender<Msg>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name: OsString = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only changes to the file and its rotated siblings (newbans.log.1)
        // matter; the directory may hold other busy files.
        let relevant = match &event {
            Ok(e) => {
                changes_content_or_names(&e.kind)
                    && (e.paths.is_empty() || e.paths.iter().any(|p| is_file_or_sibling(p, &name)))
            }
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(Msg::Changed);
        }
    })?;
    watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Whether an event may mean new lines or another file at the path: a
/// write, a close after writing, a create, remove or rename, a change of
/// metadata (truncation shows as one on some filesystems), or an event
/// notify cannot classify (a queue overflow among them). Opens, reads and
/// closes after reading are not: the loop's own look at the file makes
/// them, and waking on them spins (about 10,000 opens a second).
fn changes_content_or_names(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

fn is_file_or_sibling(path: &Path, name: &OsString) -> bool {
    path.file_name()
        .is_some_and(|f| f.as_encoded_bytes().starts_with(name.as_encoded_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};

    #[test]
    fn only_changes_wake_the_loop_never_its_own_reads() {
        let wakes = [
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Other,
        ];
        let ignored = [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ];
        for kind in wakes {
            assert!(changes_content_or_names(&kind), "{kind:?}");
        }
        for kind in ignored {
            assert!(!changes_content_or_names(&kind), "{kind:?}");
        }
    }
}
