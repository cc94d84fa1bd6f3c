//! The file transport: the log is a local path or a file on a mounted share.
//! This module is its write side ([`FileTransport`]: appends under the
//! cross-host lock); [`feed`] is its read side, the follower as a feed,
//! which SFTP uses too.

pub mod feed;

pub use feed::FileFeed;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};

use super::{Transport, TransportError, ids_in};
use crate::record::RecordId;
use crate::transport::lock::{CrossHostLock, LocalLock, LocalLockFs, LockTimings, Owner};

/// What to check when the log file is not there: most often, the share it
/// lives on is not mounted.
pub(crate) const MISSING_HINT: &str = "is the share mounted?";
/// What to check when the share does not answer.
pub(crate) const UNREACHABLE_HINT: &str = "is the file server up and reachable?";

#[derive(Debug, Clone)]
pub struct FileTransport {
    log: PathBuf,
    lock: PathBuf,
    local_lock: PathBuf,
    owner: Owner,
    timings: LockTimings,
    /// Test hook: hold the cross-host lock this long before writing, so that
    /// a test can kill a writer while it holds the lock.
    hold_lock_for: Option<std::time::Duration>,
}

impl FileTransport {
    /// `local_lock` is a file on local disk (in the spool directory) that
    /// serialises this host's writers before they contend across hosts.
    pub fn new(log: &Path, local_lock: &Path, owner: Owner, timings: LockTimings) -> FileTransport {
        let hold_lock_for = std::env::var("BANSHARE_TEST_HOLD_LOCK_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis);
        FileTransport {
            log: log.to_owned(),
            lock: CrossHostLock::path_for(log),
            local_lock: local_lock.to_owned(),
            owner,
            timings,
            hold_lock_for,
        }
    }

    fn open_for_append(&self) -> Result<File, TransportError> {
        // Never create: a missing log most often means a missing mount, and
        // creating it would write into the bare mount point. Read access is
        // for checking the last byte.
        OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| TransportError::opening(&self.log, e))
    }

    /// `batch`, preceded by a newline if the log does not end in one: a
    /// writer that died mid-line (a full disk, a dropped connection) must
    /// not glue its fragment to our first record.
    fn after_complete_line<'a>(
        &self,
        file: &File,
        batch: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, TransportError> {
        use std::os::unix::fs::FileExt;
        let open_err = |source| TransportError::Open {
            log: self.name(),
            source,
        };
        let size = file.metadata().map_err(open_err)?.len();
        let mut last = [0u8; 1];
        if size == 0
            || (file.read_at(&mut last, size - 1).map_err(open_err)? == 1 && last[0] == b'\n')
        {
            return Ok(batch.into());
        }
        let mut repaired = Vec::with_capacity(batch.len() + 1);
        repaired.push(b'\n');
        repaired.extend_from_slice(batch);
        Ok(repaired.into())
    }

    fn write_err(&self, source: io::Error) -> TransportError {
        TransportError::Write {
            log: self.name(),
            source,
        }
    }

    /// The log as the user named it, for errors.
    fn name(&self) -> String {
        self.log.display().to_string()
    }
}

impl Transport for FileTransport {
    fn append(&mut self, batch: &[u8]) -> Result<(), TransportError> {
        // One lock_timeout covers both locks, so the caller's deadline holds.
        let start = std::time::Instant::now();
        let _local = LocalLock::acquire(&self.local_lock, self.timings.timeout)?;
        // A missing log most often means a missing mount: say so before
        // leaving a lock file in the bare mount point. (Not `exists()`,
        // which says false for a dead mount too.)
        std::fs::metadata(&self.log).map_err(|e| TransportError::opening(&self.log, e))?;
        let remaining = LockTimings {
            timeout: self.timings.timeout.saturating_sub(start.elapsed()),
            ..self.timings
        };
        let mut lock_fs = LocalLockFs;
        let lock = CrossHostLock::acquire(&mut lock_fs, &self.lock, &self.owner, remaining)?;
        if let Some(hold) = self.hold_lock_for {
            std::thread::sleep(hold);
        }
        // Opened only under the lock: on NFS the append offset comes from
        // the size seen at open, and the file may have been rotated while
        // we waited.
        let mut file = self.open_for_append()?;
        let batch = self.after_complete_line(&file, batch)?;
        // One write call for the whole batch (write_all only loops if the
        // kernel takes less), then a checked close: on sshfs a write error
        // may only surface when the file is flushed at close.
        file.write_all(&batch).map_err(|e| self.write_err(e))?;
        close_checked(file).map_err(|e| self.write_err(e))?;
        // The batch is in the log now. Nothing after this point may fail the
        // append: an error here would send the batch to the spool as
        // unwritten, and flush would deliver it a second time.
        log::debug!(
            "appended {} byte(s) to {} under lock {}",
            batch.len(),
            self.log.display(),
            self.lock.display()
        );
        match lock.release() {
            Ok(true) => {}
            Ok(false) => log::warn!(
                "lock {} was broken as stale while this writer held it; \
                 raise stale_lock if the file server is slow",
                self.lock.display()
            ),
            Err(e) => log::warn!(
                "the batch was appended, but releasing the lock failed \
                 ({e}); other writers will break it after stale_lock"
            ),
        }
        Ok(())
    }

    fn find_ids(
        &mut self,
        ids: &HashSet<RecordId>,
    ) -> Result<Option<HashSet<RecordId>>, TransportError> {
        let _local = LocalLock::acquire(&self.local_lock, self.timings.timeout)?;
        let read_err = |source| TransportError::Read {
            log: self.name(),
            source,
        };
        let file = File::open(&self.log).map_err(|e| match e.kind() {
            ErrorKind::NotFound => TransportError::opening(&self.log, e),
            _ => read_err(e),
        })?;
        ids_in(file, ids).map(Some).map_err(read_err)
    }
}

/// Closes the file and reports the error that `drop` would swallow.
fn close_checked(file: File) -> io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` came from `into_raw_fd`, so we own it and close it once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::MAX_LINE_LEN;

    fn transport(dir: &Path) -> FileTransport {
        let owner = Owner {
            node: "t".into(),
            pid: 1,
        };
        FileTransport::new(
            &dir.join("newbans.log"),
            &dir.join("local.lock"),
            owner,
            LockTimings::default(),
        )
    }

    const LINE: &str = "<13>Nov 21 18:28:04 t[1]: HOST 192.0.2.1 PORT 22 id=0123456789abcdef\n";

    #[test]
    fn a_torn_fragment_is_closed_before_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("newbans.log"),
            b"<13>Nov 21 18:28:04 t[1]: HOST 19",
        )
        .unwrap();
        transport(dir.path()).append(LINE.as_bytes()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("newbans.log")).unwrap();
        assert_eq!(text.lines().last().unwrap(), LINE.trim_end());
    }

    #[test]
    fn find_ids_counts_only_complete_lines_and_skips_overlong_ones() {
        let dir = tempfile::tempdir().unwrap();
        let wanted: RecordId = "0123456789abcdef".parse().unwrap();
        let other: RecordId = "fedcba9876543210".parse().unwrap();
        let overlong = format!("{} id=fedcba9876543210\n", "x".repeat(MAX_LINE_LEN + 10));
        let torn = "<13>Nov 21 18:28:04 t[1]: HOST 192.0.2.2 PORT 22 id=fedcba9876543210";
        std::fs::write(
            dir.path().join("newbans.log"),
            format!("{LINE}{overlong}{torn}"),
        )
        .unwrap();
        let ids: HashSet<RecordId> = [wanted.clone(), other].into();
        let found = transport(dir.path()).find_ids(&ids).unwrap();
        assert_eq!(found, Some([wanted].into()));
    }
}
