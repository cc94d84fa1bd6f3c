//! The SFTP transport: the log on a file server reached over SSH, with no
//! mount. Appending runs the same cross-host lock protocol as the file
//! transport (exclusive create over SFTP), so local writers on the file
//! server, sshfs writers and SFTP writers all exclude each other.
//!
//! Following goes through [`SftpFs`], one connection per watcher, reused
//! for every poll and re-established with backoff after a failure.

mod fs;
mod session;
mod store;
mod url;

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ssh2::{OpenFlags, OpenType, Sftp};

pub use fs::SftpFs;
pub use session::{Connection, SftpError, SftpSettings, connect};
pub use store::SftpStore;
pub use url::SftpUrl;

use super::{Transport, TransportError, ids_in};
use crate::record::RecordId;
use crate::transport::lock::{CrossHostLock, LocalLock, LockFs, LockTimings, MAX_LOCK_FILE, Owner};

/// What to check when the log is not on the server: its path there, which
/// is inside the account's chroot, if it has one.
pub(crate) const MISSING_HINT: &str =
    "is the path right? it is the path on the server, inside the account's chroot if any";
/// What to check when the server does not answer.
pub(crate) const UNREACHABLE_HINT: &str = "is the server up and reachable?";

/// Appends over SFTP; keeps its connection between appends (the watcher's
/// flusher and the monitor append many times).
pub struct SftpTransport {
    url: SftpUrl,
    settings: SftpSettings,
    lock: PathBuf,
    local_lock: PathBuf,
    owner: Owner,
    timings: LockTimings,
    conn: Option<Connection>,
}

impl SftpTransport {
    pub fn new(
        url: &SftpUrl,
        settings: &SftpSettings,
        local_lock: &Path,
        owner: Owner,
        timings: LockTimings,
    ) -> SftpTransport {
        SftpTransport {
            lock: crate::transport::lock::CrossHostLock::path_for(&url.path),
            url: url.clone(),
            settings: settings.clone(),
            local_lock: local_lock.to_owned(),
            owner,
            timings,
            conn: None,
        }
    }

    /// The connection, made now if there is none.
    fn connection(&mut self) -> Result<&Connection, TransportError> {
        if self.conn.is_none() {
            let conn = connect(&self.url, &self.settings)
                .map_err(|e| connect_error(self.url.to_string(), e))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_ref().expect("just connected"))
    }

    fn append_locked(&mut self, batch: &[u8]) -> Result<(), TransportError> {
        let start = std::time::Instant::now();
        let _local = LocalLock::acquire(&self.local_lock, self.timings.timeout)?;
        let (log, path, lock_path, owner) = (
            self.url.to_string(),
            self.url.path.clone(),
            self.lock.clone(),
            self.owner.clone(),
        );
        let timings = LockTimings {
            timeout: self.timings.timeout.saturating_sub(start.elapsed()),
            ..self.timings
        };
        let sftp = &self.connection()?.sftp;
        sftp.stat(&path).map_err(|e| call_error(&log, e))?;
        let mut lock_fs = SftpLockFs { sftp };
        let lock = CrossHostLock::acquire(&mut lock_fs, &lock_path, &owner, timings)?;
        let write = write_whole_lines(sftp, &log, &path, batch)?;
        write.map_err(|source| TransportError::Write { log, source })?;
        // Written: nothing from here on may fail the append (see the file
        // transport).
        if let Err(e) = lock.release() {
            log::warn!("the batch was appended, but releasing the lock failed ({e})");
        }
        Ok(())
    }
}

/// Opens the log for appending (never creating it), puts a newline first
/// if its last line is unfinished, and writes the batch. The outer error is
/// one from before anything was written; the inner one may have written
/// part of the batch.
fn write_whole_lines(
    sftp: &Sftp,
    log: &str,
    path: &Path,
    batch: &[u8],
) -> Result<io::Result<()>, TransportError> {
    let flags = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::APPEND;
    let mut file = sftp
        .open_mode(path, flags, 0o644, OpenType::File)
        .map_err(|e| call_error(log, e))?;
    let size = file
        .stat()
        .map_err(|e| call_error(log, e))?
        .size
        .unwrap_or(0);
    let mut data = Vec::with_capacity(batch.len() + 1);
    if size > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(size - 1))
            .and_then(|_| file.read_exact(&mut last))
            .map_err(|e| TransportError::Open {
                log: log.to_owned(),
                source: e,
            })?;
        if last[0] != b'\n' {
            data.push(b'\n');
        }
    }
    data.extend_from_slice(batch);
    // The server opened the file with O_APPEND: every write lands at the
    // end, whatever offset the client sends. Close is checked: the server
    // reports some write errors only then.
    Ok(file
        .write_all(&data)
        .and_then(|()| file.close().map_err(io::Error::from)))
}

impl Transport for SftpTransport {
    fn append(&mut self, batch: &[u8]) -> Result<(), TransportError> {
        let result = self.append_locked(batch);
        if result.is_err() {
            // A failed call may have left the session unusable; the next
            // append connects afresh.
            self.conn = None;
        }
        result
    }

    fn find_ids(
        &mut self,
        ids: &HashSet<RecordId>,
    ) -> Result<Option<HashSet<RecordId>>, TransportError> {
        let result = self.find_ids_locked(ids);
        if result.is_err() {
            // As for append: the next call connects afresh.
            self.conn = None;
        }
        result.map(Some)
    }
}

impl SftpTransport {
    fn find_ids_locked(
        &mut self,
        ids: &HashSet<RecordId>,
    ) -> Result<HashSet<RecordId>, TransportError> {
        let _local = LocalLock::acquire(&self.local_lock, self.timings.timeout)?;
        let (log, path) = (self.url.to_string(), self.url.path.clone());
        let sftp = &self.connection()?.sftp;
        let file = sftp.open(&path).map_err(|e| call_error(&log, e))?;
        ids_in(file, ids).map_err(|source| TransportError::Read { log, source })
    }
}

/// Sorts a failure to connect to the server named in `log`: no answer is
/// unreachable; a server that answered and refused us (its host key, our
/// login) cannot be opened.
fn connect_error(log: String, e: SftpError) -> TransportError {
    match e {
        SftpError::Connect { .. } | SftpError::Handshake { .. } => TransportError::Unreachable {
            log,
            hint: UNREACHABLE_HINT,
            source: e.into(),
        },
        _ => TransportError::Open {
            log,
            source: e.into(),
        },
    }
}

/// Sorts the failure of an SFTP call on the log `log`, made before
/// anything was written: the server's "no such file" means it is missing;
/// a failure of the session itself (a timeout, a dropped connection) that
/// it is unreachable; any other answer of the server that it cannot be
/// opened.
fn call_error(log: &str, e: ssh2::Error) -> TransportError {
    let log = log.to_owned();
    let session_failed = matches!(e.code(), ssh2::ErrorCode::Session(_));
    let source = io::Error::from(e);
    if source.kind() == io::ErrorKind::NotFound {
        TransportError::Missing {
            log,
            hint: MISSING_HINT,
        }
    } else if session_failed {
        TransportError::Unreachable {
            log,
            hint: UNREACHABLE_HINT,
            source,
        }
    } else {
        TransportError::Open { log, source }
    }
}

/// The lock files over SFTP.
struct SftpLockFs<'a> {
    sftp: &'a Sftp,
}

impl LockFs for SftpLockFs<'_> {
    fn create_new(&mut self, path: &Path, content: &[u8]) -> io::Result<bool> {
        let mut attempts = 0;
        loop {
            match self.sftp.open_mode(
                path,
                OpenFlags::WRITE | OpenFlags::EXCLUSIVE,
                0o644,
                OpenType::File,
            ) {
                Ok(mut file) => {
                    let written = file
                        .write_all(content)
                        .and_then(|()| file.close().map_err(io::Error::from));
                    if let Err(e) = written {
                        let _ = self.sftp.unlink(path);
                        return Err(e);
                    }
                    return Ok(true);
                }
                // SFTP version 3 has no "already exists": OpenSSH answers a
                // lost exclusive create with a generic failure. The file
                // being there tells the two apart; if it is gone, the holder
                // released it between our create and our look: try again.
                // A failure that keeps coming with no file is a real one.
                Err(e) => {
                    if self.sftp.stat(path).is_ok() {
                        return Ok(false);
                    }
                    attempts += 1;
                    if attempts >= crate::transport::lock::LOST_RACE_RETRIES {
                        return Err(session::io_error(path, e));
                    }
                }
            }
        }
    }

    fn read(&mut self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match self.sftp.open(path) {
            Ok(file) => {
                let mut content = Vec::new();
                file.take(MAX_LOCK_FILE).read_to_end(&mut content)?;
                Ok(Some(content))
            }
            Err(e) => match io::Error::from(e) {
                e if e.kind() == io::ErrorKind::NotFound => Ok(None),
                e => Err(e),
            },
        }
    }

    fn remove(&mut self, path: &Path) -> io::Result<bool> {
        match self.sftp.unlink(path) {
            Ok(()) => Ok(true),
            Err(e) => match io::Error::from(e) {
                e if e.kind() == io::ErrorKind::NotFound => Ok(false),
                e => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "sftp://banshare@files.example:2222/srv/newbans.log";

    #[test]
    fn errors_name_the_url_and_sort_like_the_file_transport() {
        let refused = SftpError::Connect {
            addr: "files.example:2222".into(),
            source: io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        let e = connect_error(LOG.into(), refused);
        assert!(matches!(e, TransportError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains(LOG), "{e}");
        assert!(e.to_string().contains("is the server up"), "{e}");
        let stranger = SftpError::Auth {
            user: "banshare".into(),
            host: "files.example".into(),
            message: "key /k was not accepted".into(),
        };
        let e = connect_error(LOG.into(), stranger);
        assert!(matches!(e, TransportError::Open { .. }), "{e:?}");
        let no_file = ssh2::Error::new(ssh2::ErrorCode::SFTP(2), "no such file");
        let e = call_error(LOG, no_file);
        assert!(matches!(e, TransportError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains(LOG), "{e}");
        assert!(!e.to_string().contains("mounted"), "{e}");
        let timeout = ssh2::Error::new(ssh2::ErrorCode::Session(-9), "timed out");
        let e = call_error(LOG, timeout);
        assert!(matches!(e, TransportError::Unreachable { .. }), "{e:?}");
        let denied = ssh2::Error::new(ssh2::ErrorCode::SFTP(3), "permission denied");
        assert!(matches!(
            call_error(LOG, denied),
            TransportError::Open { .. }
        ));
    }
}
