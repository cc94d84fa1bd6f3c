//! How a follow loop (the watcher's, the monitor's) notices changes: inotify where it can see every writer,
//! polling where it cannot.
//!
//! inotify only reports changes made through this host's kernel. On FUSE
//! (sshfs), NFS, CIFS and other network filesystems, writes by other hosts
//! produce no event and no error, only silence (measured through sshfs; see
//! docs/watch.md), so there the watcher polls. Where inotify works, a slow safety poll still runs, in
//! case events are dropped (queue overflow) or the log is replaced in a way
//! the directory watch misses.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use std::str::FromStr;

use super::mounts::{self, Mount, mount_of};

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
///
/// Telling must not hang either: a `statfs` on a frozen sshfs mount waits
/// as long as the mount does, which made `banshare ban` wait past
/// fail2ban's action timeout. So the path is resolved one component at a
/// time against the mount table, and nothing is asked of a filesystem the
/// table does not show to be a disk's (see [`resolve_on_disk`]).
pub fn disk_filesystem(dir: &Path) -> Option<&'static str> {
    let mounts = mounts::mounts();
    let dir = std::path::absolute(dir).ok()?;
    let real = resolve_on_disk(&mounts, &dir, symlink_target)?;
    // The superblock's own word too, now that asking cannot hang.
    let magic = statfs_type(&real)?;
    DISK.iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// `path` with its symlinks resolved, asking `link_of` (the target of a
/// symlink, `None` for anything else) only about paths the mount table
/// puts on a disk's filesystem; `None` as soon as the path reaches any
/// other mount (a FUSE, NFS or autofs mount point is refused before it is
/// touched), cannot be resolved, or loops.
pub fn resolve_on_disk(
    mounts: &[Mount],
    path: &Path,
    mut link_of: impl FnMut(&Path) -> std::io::Result<Option<PathBuf>>,
) -> Option<PathBuf> {
    const MAX_LINKS: usize = 40; // Linux's own limit
    let mut todo: Vec<OsString> = Vec::new();
    push_parts(&mut todo, path);
    let mut real = PathBuf::from("/");
    on_disk(mounts, &real)?;
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            real.pop();
            continue;
        }
        let next = real.join(&part);
        on_disk(mounts, &next)?;
        match link_of(&next).ok()? {
            Some(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                if target.is_absolute() {
                    real = PathBuf::from("/");
                }
                push_parts(&mut todo, &target);
            }
            None => real = next,
        }
    }
    Some(real)
}

/// Queues `path`'s parts so that its first is popped first.
fn push_parts(todo: &mut Vec<OsString>, path: &Path) {
    let parts = path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    });
    let parts: Vec<OsString> = parts.collect();
    todo.extend(parts.into_iter().rev());
}

/// Whether the mount table puts `path` on a disk's filesystem.
fn on_disk(mounts: &[Mount], path: &Path) -> Option<()> {
    let mount = mount_of(mounts, path)?;
    DISK_NAMES.contains(&mount.fs_type.as_str()).then_some(())
}

/// The target of `path` if it is a symlink.
fn symlink_target(path: &Path) -> std::io::Result<Option<PathBuf>> {
    match std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        true => std::fs::read_link(path).map(Some),
        false => Ok(None),
    }
}

/// The mount table's names of the filesystems in [`DISK`].
const DISK_NAMES: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "bcachefs", "overlay",
];

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

    const MOUNTINFO: &str = "\
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
60 27 0:50 / /mnt/share rw,nosuid,nodev,relatime shared:30 - fuse.sshfs root@198.18.0.1:/srv/export rw
61 27 0:51 / /run rw - tmpfs tmpfs rw
62 27 0:52 / /mnt/stack rw - tmpfs tmpfs rw
63 27 0:53 / /mnt/stack rw - fuse.sshfs root@198.18.0.1:/srv rw
";

    /// A `link_of` for [`resolve_on_disk`] over `links`, which fails the
    /// test if it is asked about anything on the FUSE mounts (a frozen
    /// share would hang there).
    fn fake_links<'a>(
        links: &'a [(&'a str, &'a str)],
    ) -> impl FnMut(&Path) -> std::io::Result<Option<PathBuf>> + 'a {
        move |path: &Path| {
            assert!(
                !path.starts_with("/mnt/share") && !path.starts_with("/mnt/stack"),
                "asked {} on a FUSE mount",
                path.display()
            );
            Ok(links
                .iter()
                .find(|(from, _)| Path::new(from) == path)
                .map(|(_, to)| PathBuf::from(to)))
        }
    }

    #[test]
    fn a_path_is_resolved_on_disk_without_asking_any_other_filesystem() {
        let mounts = mounts::parse_mountinfo(MOUNTINFO);
        let resolve = |path: &str, links: &[(&str, &str)]| {
            resolve_on_disk(&mounts, Path::new(path), fake_links(links))
        };
        assert_eq!(
            resolve("/var/lib/banshare", &[]),
            Some(PathBuf::from("/var/lib/banshare"))
        );
        assert_eq!(resolve("/mnt/share/logs", &[]), None, "under sshfs");
        assert_eq!(resolve("/mnt/share", &[]), None, "the mount point itself");
        assert_eq!(resolve("/mnt/stack/x", &[]), None, "sshfs over a tmpfs");
        assert_eq!(
            resolve("/var/log/bs", &[("/var/log/bs", "../../mnt/share/x")]),
            None,
            "a symlink into sshfs"
        );
        assert_eq!(
            resolve("/srv/a/../b", &[]),
            Some(PathBuf::from("/srv/b")),
            "`..` after a plain folder"
        );
        assert_eq!(
            resolve("/srv/a/../b", &[("/srv/a", "/run/x")]),
            Some(PathBuf::from("/run/b")),
            "`..` after a symlink: the target's parent, as the kernel does"
        );
        assert_eq!(
            resolve("/srv/l/y", &[("/srv/l", "/run/x")]),
            Some(PathBuf::from("/run/x/y"))
        );
        assert_eq!(
            resolve("/srv/l", &[("/srv/l", "/srv/l")]),
            None,
            "a symlink loop"
        );
    }

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
