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

use std::io;
use std::path::Path;

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
