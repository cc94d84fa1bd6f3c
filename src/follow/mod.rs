//! Following the shared log: reading each complete line exactly once, in
//! order, through appends, partial lines, truncation, rotation by rename,
//! compaction by atomic rename, deletion and re-creation, and a share that
//! goes away for a while.
//!
//! The file is known by its identity (device and inode, where the
//! filesystem has them) plus a fingerprint of its first bytes, so a new file
//! is never mistaken for the old one even where inode numbers are reused or
//! synthetic (sshfs, SFTP).
//!
//! Access to the file goes through [`LogFs`], so the same follower works on
//! a local path, an sshfs or NFS mount, and (later) SFTP.
//!
//! # Use
//!
//! ```no_run
//! # use banshare::follow::{Follower, LocalFs};
//! # let saved = None;
//! let mut follower = Follower::new(LocalFs, "/mnt/banshare/newbans.log".into(), saved);
//! loop {
//!     match follower.read_lines(1000) {
//!         Ok(lines) => {
//!             // apply `lines`, then persist `follower.cursor()`
//! #           let _ = lines;
//!         }
//!         Err(e) => log::warn!("{e}"), // missing or unreachable: retried next time
//!     }
//! #   break;
//! }
//! ```
//!
//! Each [`Line`] carries the cursor right after it, so the caller may also
//! persist after any prefix of a batch.
//!
//! # Each call
//!
//! The followed file stays open between calls. [`Follower::read_lines`]:
//!
//! 1. **Truncation**: the open file looks truncated if it is shorter than
//!    the position, or its first bytes are no longer the fingerprinted ones
//!    (truncated, then written past our position before we looked). This
//!    looks at the open file, so it holds for a log truncated and then
//!    deleted too. But on sshfs, which knows files by path, `fstat` of an
//!    open file answers with the size of whatever file is *now at the path
//!    it was opened at*: after `mv newbans.log newbans.log.1 && : >
//!    newbans.log` on the file server, the still open old file reports the
//!    new file's size, so a rotation looks like a truncation. So, if the
//!    path is there, the follower first looks for its file renamed (as in
//!    step 3); found, it is a rotation. Otherwise it reads the file again
//!    from 0, dropping any unfinished line.
//! 2. `stat`s the path. If nothing is there (or the share fails), it still
//!    reads what the open file holds (a deleted log may have lines written
//!    before its deletion) and then reports the error.
//! 3. **Replacement** (rotation by rename, compaction by atomic rename,
//!    deletion and re-creation): the file at the path is another one when
//!    known identities differ, when it is shorter than our position, or when
//!    its first bytes (read through a fresh `open`) differ from our
//!    fingerprint. Equal identities prove nothing, since sshfs gives a new
//!    file at the same path the same inode number. The old file is then read
//!    to its end, and the new one from 0. "The old file" is, if one is found,
//!    the sibling `<name>.*` or `<name>-*` that starts with our fingerprint
//!    and holds our offset (one with our identity first, then in name
//!    order), opened afresh under its new name and read from our offset;
//!    else the open file. A sibling without our identity is taken only where
//!    the open file cannot tell its own (it answers with the new file's, as
//!    on sshfs, or has none): elsewhere it may be an older copy
//!    (`newbans.log.bak`) that lacks our tail, or a compacted file whose
//!    offsets are not ours. On sshfs the open file cannot be trusted for this:
//!    its size is the new file's, and reads through it may stop there
//!    (depending on the kernel's attribute cache); opened under its new
//!    name, the rotated file shows its true size.
//! 4. Reads from the position until `read` returns 0 (sizes from `stat` may
//!    be stale) and hands out complete lines only; an unfinished last line
//!    waits for its newline and is not part of the cursor. A line over
//!    [`MAX_LINE_LEN`](crate::record::MAX_LINE_LEN) bytes is never held
//!    whole: it becomes one [`Line::TooLong`].
//! 5. If it reached the end of our file short of the size the path's file
//!    had in step 2, the path holds a copy with the same first bytes (seen
//!    only where inode numbers cannot tell): that one is read from 0.
//!
//! On sshfs this full look costs about a dozen SFTP requests (stat, fstat,
//! open, close, reads); a rotation adds a listing of the folder and a look
//! at the siblings. A poll takes it only when [`Follower::poll`], which
//! asks for the log's size (one request) and reads what was appended
//! through the open file, cannot tell, and at least every safety poll.
//!
//! # Resuming from a cursor
//!
//! After a restart (or after an I/O error, which gives up the open files
//! because a reconnected share invalidates them) the cursor is matched
//! against the log and its rotated siblings `<name>.*` and `<name>-*` (not
//! `<name>.lock`). A file matches when its first bytes have the cursor's
//! fingerprint (and, for a sibling, it is at least as long as the offset).
//! Among matches, one whose identity also equals the cursor's wins, then the
//! log, then siblings in natural name order. Identity alone never matches:
//! a remount renumbers devices and sshfs numbers inodes per path.
//!
//! - the log matches: read on at the offset (from 0 if it is now shorter);
//! - a sibling matches: read it from the offset to its end, then the log
//!   from 0;
//! - nothing matches: read the log from 0 and report
//!   [`FollowEvent::CursorLost`].
//!
//! # Duplicates by design
//!
//! Compaction writes a new log holding the newest records, most of them
//! already read, and renames it over the old one. The follower reads the old
//! file to its end and then the new one from 0, so those records come again;
//! the watcher's policy knows them again (already in force, over, or older
//! than an unban) and drops them. A copy put in place with the same
//! first bytes does the same.
//!
//! # Limits
//!
//! - A file renamed away is read to its end when the follower notices the
//!   switch. A writer that still appends to it afterwards (one that opened
//!   it before the rename and wrote after our next poll) is not read.
//! - On sshfs, a file renamed away is finished under its new name only if
//!   that name is beside the log (`<name>.*`, `<name>-*`) when the follower
//!   notices the switch. Moved to another folder, or renamed over again
//!   (`.1` replaced by the next rotation) before the follower's next poll,
//!   it is read through the open file, which may show no more than the new
//!   file's size: its unread rest can be lost. Rotations numbered `.1`,
//!   `.2`, ... keep it findable.
//! - Stopped across two rotations, the follower finds its file as `.2` if
//!   the rotation keeps it, but still reads only that file and then the log:
//!   the file in between (`.1`) is skipped. The same holds for two
//!   rotations between two calls: a file the follower never had open is
//!   not read.
//! - Where the filesystem has no inode numbers, a file replaced before the
//!   follower read any of it is noticed one call later (once its first
//!   bytes are known), and a copy with the same first bytes and size only
//!   once the copy grows. Nothing is lost; lines come a poll later.
//! - A cursor taken on an empty file has an empty fingerprint. Where the
//!   filesystem has no inode numbers, such a cursor cannot find that file
//!   rotated, and the lines written to it before the rotation are missed.
//! - A 64-bit hash over at most 1024 bytes stands for the file's start:
//!   distinct logs that collide are not told apart.

mod cursor;
mod error;
mod follower;
mod local;
pub mod mode;
pub mod mounts;
mod tail;
#[cfg(test)]
pub(crate) mod test_fs;
#[cfg(test)]
mod tests;
pub mod wake;

use std::io;
use std::path::Path;

pub use cursor::{Cursor, FINGERPRINT_MAX, Fingerprint};
pub use error::FollowError;
pub use follower::{FollowEvent, FollowState, Follower, Poll, SizeFrom};
pub use mode::{FollowKind, Mode};
pub use tail::{Line, Unread};
pub use wake::{DirWatch, Handle, Msg, Wake};

/// What `stat` tells about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// 0 where the filesystem has no stable device number (SFTP).
    pub dev: u64,
    /// 0 where the filesystem has no stable inode number (SFTP).
    pub ino: u64,
    pub size: u64,
}

/// An open file being followed.
pub trait LogFile: Send {
    /// Reads at `offset` into `buf`; 0 at end of file.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The open file's own metadata (not the path's).
    fn meta(&mut self) -> io::Result<Meta>;
}

/// The filesystem the log lives on.
pub trait LogFs: Send {
    type File: LogFile;
    /// Opens for reading; `ErrorKind::NotFound` when missing.
    fn open(&mut self, path: &Path) -> io::Result<Self::File>;
    /// Metadata of whatever file is at `path` now.
    fn stat(&mut self, path: &Path) -> io::Result<Meta>;
    /// Names of the entries in `dir` (to find a rotated file on restart).
    fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<String>>;
}

/// The local filesystem, including mounted shares.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalFs;
