//! The file transport: the log is a local path or a file on a mounted share.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};

use super::{Transport, TransportError};
use crate::lock::{CrossHostLock, LocalLock, LockTimings, Owner};
use crate::record::RecordId;

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
        // creating it would write into the bare mount point.
        OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => TransportError::LogMissing(self.log.clone()),
                _ => TransportError::Open {
                    path: self.log.clone(),
                    source: e,
                },
            })
    }

    fn write_err(&self, source: io::Error) -> TransportError {
        TransportError::Write {
            path: self.log.clone(),
            source,
        }
    }
}

impl Transport for FileTransport {
    fn append(&mut self, batch: &[u8]) -> Result<(), TransportError> {
        // One lock_timeout covers both locks, so the caller's deadline holds.
        let start = std::time::Instant::now();
        let _local = LocalLock::acquire(&self.local_lock, self.timings.timeout)?;
        let file = self.open_for_append()?;
        let remaining = LockTimings {
            timeout: self.timings.timeout.saturating_sub(start.elapsed()),
            ..self.timings
        };
        let lock = CrossHostLock::acquire(&self.lock, &self.owner, remaining)?;
        if let Some(hold) = self.hold_lock_for {
            std::thread::sleep(hold);
        }
        // One write call for the whole batch (write_all only loops if the
        // kernel takes less), then a checked close: on sshfs a write error
        // may only surface when the file is flushed at close.
        let mut file = file;
        file.write_all(batch).map_err(|e| self.write_err(e))?;
        close_checked(file).map_err(|e| self.write_err(e))?;
        // The batch is in the log now. Nothing after this point may fail the
        // append: an error here would send the batch to the spool as
        // unwritten, and flush would deliver it a second time.
        match lock.release() {
            Ok(true) => {}
            Ok(false) => eprintln!(
                "banshare: warning: lock {} was broken as stale while this writer held it; \
                 raise stale_lock if the file server is slow",
                self.lock.display()
            ),
            Err(e) => eprintln!(
                "banshare: warning: the batch was appended, but releasing the lock failed \
                 ({e}); other writers will break it after stale_lock"
            ),
        }
        Ok(())
    }

    fn find_ids(&mut self, ids: &HashSet<RecordId>) -> Result<HashSet<RecordId>, TransportError> {
        let read_err = |source| TransportError::Read {
            path: self.log.clone(),
            source,
        };
        let file = File::open(&self.log).map_err(|e| match e.kind() {
            ErrorKind::NotFound => TransportError::LogMissing(self.log.clone()),
            _ => read_err(e),
        })?;
        let mut found = HashSet::new();
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).map_err(read_err)? > 0 {
            if let Some(id) = id_field(&line).filter(|id| ids.contains(id)) {
                found.insert(id);
            }
            line.clear();
        }
        Ok(found)
    }
}

/// The `id=` field of a line, found without parsing the whole line. Only
/// used to match ids banshare itself wrote, so a false match is harmless.
fn id_field(line: &[u8]) -> Option<RecordId> {
    let start = line.windows(4).position(|w| w == b" id=")? + 4;
    let rest = &line[start..];
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\n')
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
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
