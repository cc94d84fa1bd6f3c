//! Compaction over SFTP: [`SftpStore`] is [`LogStore`] on one connection,
//! with the cross-host lock over the same connection.
//!
//! Plain SFTP (version 3, what OpenSSH speaks) renames only onto a name
//! that is free: OpenSSH's server links the new name and fails when it is
//! taken. Replacing the log in one step needs OpenSSH's
//! `posix-rename@openssh.com` extension, a plain `rename(2)` on the server.
//! libssh2 has it (`libssh2_sftp_posix_rename_ex`, since 1.11.1, in the
//! copy the `libssh2-sys` crate builds), but the `ssh2` crate does not wrap
//! it and keeps its SFTP channel private. So the rename opens a second SFTP
//! channel on the same session through libssh2 itself, used for that one
//! call under the session's lock.

use std::ffi::CString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::raw::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssh2::{OpenFlags, OpenType};

use super::SftpLockFs;
use super::session::{Connection, io_error};
use crate::compact::{LogStore, OwnerNotKept, is_copy_name};
use crate::transport::lock::LockFs;

unsafe extern "C" {
    /// In the libssh2 that `libssh2-sys` builds and links statically
    /// (libssh2 >= 1.11.1), not declared by the crate.
    fn libssh2_sftp_posix_rename_ex(
        sftp: *mut libssh2_sys::LIBSSH2_SFTP,
        source_filename: *const c_char,
        source_filename_len: usize,
        dest_filename: *const c_char,
        dest_filename_len: usize,
    ) -> c_int;
}

/// The log's files over one SFTP connection.
pub struct SftpStore<'a> {
    conn: &'a Connection,
}

impl<'a> SftpStore<'a> {
    pub fn new(conn: &'a Connection) -> SftpStore<'a> {
        SftpStore { conn }
    }

    /// The lock files over the same connection.
    pub fn locks(&self) -> impl LockFs + 'a {
        SftpLockFs {
            sftp: &self.conn.sftp,
        }
    }
}

impl LogStore for SftpStore<'_> {
    fn read_from(&self, path: &Path, offset: u64) -> io::Result<Vec<u8>> {
        let mut file = self.conn.sftp.open(path).map_err(|e| io_error(path, e))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        Ok(data)
    }

    fn head(&self, path: &Path, len: u64) -> io::Result<Vec<u8>> {
        let file = self.conn.sftp.open(path).map_err(|e| io_error(path, e))?;
        let mut data = Vec::new();
        file.take(len).read_to_end(&mut data)?;
        Ok(data)
    }

    fn create(&self, path: &Path, data: &[u8], like: &Path) -> io::Result<()> {
        let sftp = &self.conn.sftp;
        let old = sftp.stat(like).map_err(|e| io_error(like, e))?;
        let mode = old.perm.map_or(0o644, |p| p & 0o7777) as i32;
        let flags = OpenFlags::WRITE | OpenFlags::TRUNCATE;
        let mut file = sftp
            .open_mode(path, flags, mode, OpenType::File)
            .map_err(|e| io_error(path, e))?;
        keep_owner(&mut file, &old, path)?;
        // The server's umask may have narrowed the mode.
        let perm = ssh2::FileStat {
            size: None,
            uid: None,
            gid: None,
            perm: old.perm,
            atime: None,
            mtime: None,
        };
        if let Err(e) = file.setstat(perm) {
            log::debug!("cannot give {} the log's mode: {e}", path.display());
        }
        file.write_all(data)?;
        fsync_and_close(file, path)
    }

    fn append_synced(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let flags = OpenFlags::WRITE | OpenFlags::APPEND;
        let mut file = self
            .conn
            .sftp
            .open_mode(path, flags, 0o644, OpenType::File)
            .map_err(|e| io_error(path, e))?;
        file.write_all(data)?;
        fsync_and_close(file, path)
    }

    fn replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        posix_rename(self.conn, from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.conn.sftp.unlink(path).map_err(|e| io_error(path, e))
    }

    fn stale_copies(&self, log: &Path, idle: Duration) -> io::Result<Vec<PathBuf>> {
        let dir = log.parent().unwrap_or(Path::new("."));
        let log_name = log.file_name().unwrap_or_default().to_string_lossy();
        let entries = self.conn.sftp.readdir(dir).map_err(|e| io_error(dir, e))?;
        // The server's times against this host's clock: the hour's margin
        // covers any skew a cluster of signed records tolerates.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Ok(entries
            .into_iter()
            .filter(|(path, stat)| {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                is_copy_name(&name, &log_name)
                    && stat
                        .mtime
                        .is_some_and(|t| now.saturating_sub(t) >= idle.as_secs())
            })
            .map(|(path, _)| path)
            .collect())
    }
}

/// Gives `file` the owner and group of the log (`old`) where they differ,
/// or fails with [`OwnerNotKept`]: the SFTP account is usually the log's
/// owner, as the writers' are, but a compaction through another account
/// would lock them out.
fn keep_owner(file: &mut ssh2::File, old: &ssh2::FileStat, path: &Path) -> io::Result<()> {
    let (Some(uid), Some(gid)) = (old.uid, old.gid) else {
        return Ok(());
    };
    let ids = |f: &mut ssh2::File| {
        f.stat()
            .map(|st| (st.uid, st.gid))
            .map_err(|e| io_error(path, e))
    };
    if ids(file)? == (Some(uid), Some(gid)) {
        return Ok(());
    }
    let owner = ssh2::FileStat {
        size: None,
        uid: Some(uid),
        gid: Some(gid),
        perm: None,
        atime: None,
        mtime: None,
    };
    if let Err(e) = file.setstat(owner) {
        log::debug!("cannot give {} the log's owner: {e}", path.display());
    }
    match ids(file)? {
        (Some(u), Some(g)) if (u, g) == (uid, gid) => Ok(()),
        (got_uid, got_gid) => Err(OwnerNotKept {
            uid,
            gid,
            got_uid: got_uid.unwrap_or(u32::MAX),
            got_gid: got_gid.unwrap_or(u32::MAX),
        }
        .into_io()),
    }
}

/// `fsync@openssh.com` where the server has it (OpenSSH does), then a
/// checked close: the server reports some write errors only then.
fn fsync_and_close(mut file: ssh2::File, path: &Path) -> io::Result<()> {
    if let Err(e) = file.fsync() {
        log::debug!("fsync of {} over SFTP failed: {e}", path.display());
    }
    file.close().map_err(|e| io_error(path, e))
}

/// Renames `from` over `to` with `posix-rename@openssh.com`.
fn posix_rename(conn: &Connection, from: &Path, to: &Path) -> io::Result<()> {
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
    };
    let (src, dst) = (cstr(from)?, cstr(to)?);
    let mut session = conn.session.raw();
    let session: *mut libssh2_sys::LIBSSH2_SESSION = &mut *session;
    // SAFETY: `session` is the live session, locked by the guard above for
    // the whole block, in blocking mode as `connect` leaves it. The SFTP
    // channel made here is used for this one call and shut down before
    // the guard is released; the strings outlive the call.
    let rc = unsafe {
        let sftp = libssh2_sys::libssh2_sftp_init(session);
        if sftp.is_null() {
            return Err(session_error(session, to));
        }
        let rc = libssh2_sftp_posix_rename_ex(
            sftp,
            src.as_ptr(),
            src.as_bytes().len(),
            dst.as_ptr(),
            dst.as_bytes().len(),
        );
        let sftp_code = libssh2_sys::libssh2_sftp_last_error(sftp);
        libssh2_sys::libssh2_sftp_shutdown(sftp);
        if rc == libssh2_sys::LIBSSH2_ERROR_SFTP_PROTOCOL {
            return Err(io_error(
                to,
                ssh2::Error::new(
                    ssh2::ErrorCode::SFTP(sftp_code as c_int),
                    "posix-rename@openssh.com refused",
                ),
            ));
        }
        rc
    };
    if rc != 0 {
        // SAFETY: as above; the session is still alive and ours.
        return Err(unsafe { session_error(session, to) });
    }
    Ok(())
}

/// The session's last error, about `path`.
///
/// # Safety
/// `session` must be a live session that this thread holds locked.
unsafe fn session_error(session: *mut libssh2_sys::LIBSSH2_SESSION, path: &Path) -> io::Error {
    // SAFETY: guaranteed by the caller.
    let code = unsafe { libssh2_sys::libssh2_session_last_errno(session) };
    io_error(
        path,
        ssh2::Error::new(ssh2::ErrorCode::Session(code), "SFTP rename failed"),
    )
}
