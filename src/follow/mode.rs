//! How a follow loop (the watcher's, the monitor's) notices changes: inotify where it can see every writer,
//! polling where it cannot.
//!
//! inotify only reports changes made through this host's kernel. On FUSE
//! (sshfs), NFS, CIFS and other network filesystems, writes by other hosts
//! produce no event and no error, only silence (measured through sshfs; see
//! docs/watch.md), so there the watcher polls. Where inotify works, a slow safety poll still runs, in
//! case events are dropped (queue overflow) or the log is replaced in a way
//! the directory watch misses.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use std::str::FromStr;

/// How to notice that the log changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowKind {
    /// inotify where it sees every writer; polling on network filesystems.
    Auto,
    /// inotify, plus the slow safety poll.
    Native,
    /// Poll at `poll_interval`.
    Poll,
}

impl FromStr for FollowKind {
    type Err = String;

    fn from_str(text: &str) -> Result<FollowKind, String> {
        match text {
            "auto" => Ok(FollowKind::Auto),
            "inotify" => Ok(FollowKind::Native),
            "poll" => Ok(FollowKind::Poll),
            _ => Err(format!(
                "unknown follow mode {text:?} (auto, inotify or poll)"
            )),
        }
    }
}

impl std::fmt::Display for FollowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FollowKind::Auto => "auto",
            FollowKind::Native => "inotify",
            FollowKind::Poll => "poll",
        })
    }
}

/// The resolved follow mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// inotify on the log's directory, plus a poll every `safety`.
    Native { safety: Duration },
    /// A poll every interval.
    Poll(Duration),
    /// A server pushes records and the feed wakes the loop; a poll every
    /// `safety` asks it for anything missed.
    Pushed { safety: Duration },
}

impl Mode {
    /// The longest the loop waits without an event.
    pub fn interval(&self) -> Duration {
        match *self {
            Mode::Native { safety } | Mode::Pushed { safety } => safety,
            Mode::Poll(interval) => interval,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Mode::Native { safety } => format!(
                "inotify (safety poll every {})",
                humantime::format_duration(*safety)
            ),
            Mode::Poll(interval) => format!("poll every {}", humantime::format_duration(*interval)),
            Mode::Pushed { safety } => format!(
                "pushed by the publisher (safety poll every {})",
                humantime::format_duration(*safety)
            ),
        }
    }
}

/// Picks the mode for a log in `dir`. `Auto` asks the filesystem.
pub fn resolve(kind: FollowKind, dir: &Path, poll: Duration, safety: Duration) -> Mode {
    resolve_explained(kind, dir, poll, safety).0
}

/// As [`resolve`], with the reason for the choice (for `banshare doctor`).
pub fn resolve_explained(
    kind: FollowKind,
    dir: &Path,
    poll: Duration,
    safety: Duration,
) -> (Mode, String) {
    match kind {
        FollowKind::Native => (Mode::Native { safety }, "follow = inotify".into()),
        FollowKind::Poll => (Mode::Poll(poll), "follow = poll".into()),
        FollowKind::Auto => match blind_filesystem(dir) {
            Some(fs) => (
                Mode::Poll(poll),
                format!(
                    "{} is on {fs}, where inotify does not see other hosts' writes",
                    dir.display()
                ),
            ),
            // Unknown (the directory is missing, say): poll, which always works.
            None if statfs_type(dir).is_none() => (
                Mode::Poll(poll),
                format!(
                    "the filesystem of {} cannot be told (missing?): polling always works",
                    dir.display()
                ),
            ),
            None => (
                Mode::Native { safety },
                format!(
                    "{} is on a local filesystem, where inotify sees every write",
                    dir.display()
                ),
            ),
        },
    }
}

/// The name of the filesystem under `dir` if inotify is blind to other
/// hosts' writes on it.
pub fn blind_filesystem(dir: &Path) -> Option<&'static str> {
    let magic = statfs_type(dir)?;
    BLIND
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// Filesystem magic numbers (statfs `f_type`) of network and FUSE
/// filesystems, from linux/magic.h and the filesystems' sources.
const BLIND: &[(i64, &str)] = &[
    (0x6573_5546, "fuse (sshfs)"),
    (0x6969, "nfs"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x517B, "smb"),
    (0x00C3_6400, "ceph"),
    (0x0102_1997, "9p"),
    (0x5346_414F, "afs"),
    (0x7461_636f, "ocfs2"),
    (0x0116_1970, "gfs2"),
    (0x0BD0_0BD0, "lustre"),
];

/// The name of the filesystem under `dir` if it is a local disk's (or
/// memory's): its calls answer or fail, and never wait on a network the
/// way a FUSE or NFS call can wait for minutes. `None` for any other, and
/// when it cannot be told.
pub fn disk_filesystem(dir: &Path) -> Option<&'static str> {
    let magic = statfs_type(dir)?;
    DISK.iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// Filesystem magic numbers (statfs `f_type`) of local disk and memory
/// filesystems, from linux/magic.h and the filesystems' sources. An
/// overlay is on local layers for all the hosts banshare knows (containers).
const DISK: &[(i64, &str)] = &[
    (0xEF53, "ext2/3/4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0xF2F5_2010, "f2fs"),
    (0x2FC1_2FC1, "zfs"),
    (0xCA45_1A4E, "bcachefs"),
    (0x794C_7630, "overlayfs"),
];

/// The filesystem type (statfs `f_type`) under `dir`; `None` when it
/// cannot be told (a missing folder).
pub fn statfs_type(dir: &Path) -> Option<i64> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `buf` is a valid statfs.
    if unsafe { libc::statfs(path.as_ptr(), &mut buf) } != 0 {
        return None;
    }
    Some(buf.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_tmp_is_not_blind_and_auto_uses_inotify() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(blind_filesystem(dir.path()), None);
        let mode = resolve(
            FollowKind::Auto,
            dir.path(),
            Duration::from_millis(250),
            Duration::from_secs(5),
        );
        assert_eq!(
            mode,
            Mode::Native {
                safety: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn local_tmp_is_a_disk_and_neither_a_missing_folder_nor_proc_is() {
        let dir = tempfile::tempdir().unwrap();
        assert!(disk_filesystem(dir.path()).is_some());
        assert_eq!(disk_filesystem(Path::new("/nonexistent/x")), None);
        assert_eq!(disk_filesystem(Path::new("/proc")), None);
    }

    #[test]
    fn missing_directory_polls() {
        let mode = resolve(
            FollowKind::Auto,
            Path::new("/nonexistent/x"),
            Duration::from_millis(250),
            Duration::from_secs(5),
        );
        assert_eq!(mode, Mode::Poll(Duration::from_millis(250)));
    }
}
