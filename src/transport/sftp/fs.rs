//! Following the log over SFTP: [`SftpFs`] implements the follower's
//! [`LogFs`] on one reused connection. SFTP has no inode numbers, so files
//! are told apart by size and fingerprint alone (the follower's design).
//!
//! A failed call drops the connection; the next call reconnects, at most
//! once per backoff step (1 s doubling to 60 s, with jitter), so a server
//! that is down is not hammered and the watcher's poll never blocks longer
//! than the SFTP timeout.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ssh2::ErrorCode;

use super::session::{Connection, SftpSettings, connect, from_ssh, io_error, reclassify};
use super::url::SftpUrl;
use crate::follow::{LogFile, LogFs, Meta};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

/// The log's filesystem over SFTP.
pub struct SftpFs {
    url: SftpUrl,
    settings: SftpSettings,
    conn: Option<Connection>,
    /// No reconnect before this; and how long the next wait is.
    retry_at: Option<Instant>,
    retry_step: Duration,
    last_error: String,
    /// Connections made so far, shared with whoever must notice a
    /// reconnect (the watcher looks up the server's addresses again).
    connections: Arc<AtomicU64>,
}

impl SftpFs {
    pub fn new(url: &SftpUrl, settings: &SftpSettings) -> SftpFs {
        SftpFs {
            url: url.clone(),
            settings: settings.clone(),
            conn: None,
            retry_at: None,
            retry_step: FIRST_RETRY,
            last_error: String::new(),
            connections: Arc::default(),
        }
    }

    /// Counts the connections made, the first one included.
    pub fn connections(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.connections)
    }

    fn connection(&mut self) -> io::Result<&Connection> {
        if self.conn.is_none() {
            if let Some(at) = self.retry_at.filter(|at| Instant::now() < *at) {
                let wait = at.saturating_duration_since(Instant::now());
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!(
                        "{}: reconnecting in {}s ({})",
                        self.url,
                        wait.as_secs() + 1,
                        self.last_error
                    ),
                ));
            }
            match connect(&self.url, &self.settings) {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.connections.fetch_add(1, Ordering::Relaxed);
                    self.retry_at = None;
                    self.retry_step = FIRST_RETRY;
                }
                Err(e) => {
                    self.last_error = e.to_string();
                    self.schedule_retry();
                    return Err(e.into());
                }
            }
        }
        Ok(self.conn.as_ref().expect("just connected"))
    }

    fn schedule_retry(&mut self) {
        let mut byte = [0u8; 1];
        let _ = getrandom::fill(&mut byte);
        let jitter = self.retry_step.mul_f64(f64::from(byte[0]) / 255.0 / 4.0);
        self.retry_at = Some(Instant::now() + self.retry_step + jitter);
        self.retry_step = (self.retry_step * 2).min(LAST_RETRY);
    }

    /// Converts an SSH error; a session-level one (timeout, broken
    /// connection) drops the connection so the next call reconnects.
    fn fail(&mut self, path: &Path, e: ssh2::Error) -> io::Error {
        if matches!(e.code(), ErrorCode::Session(_)) {
            self.last_error = e.to_string();
            self.conn = None;
            self.schedule_retry();
        }
        io_error(path, e)
    }
}

impl LogFs for SftpFs {
    type File = SftpLogFile;

    fn open(&mut self, path: &Path) -> io::Result<SftpLogFile> {
        let opened = self.connection()?.sftp.open(path);
        let file = opened.map_err(|e| self.fail(path, e))?;
        Ok(SftpLogFile {
            file,
            position: 0,
            at_end: false,
        })
    }

    fn stat(&mut self, path: &Path) -> io::Result<Meta> {
        let stat = self.connection()?.sftp.stat(path);
        let stat = stat.map_err(|e| self.fail(path, e))?;
        Ok(Meta {
            dev: 0,
            ino: 0,
            size: stat.size.unwrap_or(0),
        })
    }

    fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        let entries = self.connection()?.sftp.readdir(dir);
        let entries = entries.map_err(|e| self.fail(dir, e))?;
        Ok(entries
            .into_iter()
            .filter_map(|(path, _)| path.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }
}

/// An open remote file. Its handle stays valid while the connection does;
/// after a reconnect the follower opens the file again.
pub struct SftpLogFile {
    file: ssh2::File,
    position: u64,
    /// The last read met the end of the file.
    at_end: bool,
}

impl LogFile for SftpLogFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset != self.position || self.at_end {
            // libssh2 remembers an end of file it met and answers 0 from
            // then on, however the file grows, until a seek clears it; and
            // a seek to where it stands may change nothing. So after an end
            // it seeks away and back. Seeks only set its offset: no round
            // trip.
            if self.at_end {
                self.file.seek(SeekFrom::Start(offset.wrapping_add(1)))?;
            }
            self.file.seek(SeekFrom::Start(offset))?;
            self.position = offset;
        }
        let n = self.file.read(buf).map_err(reclassify)?;
        self.position += n as u64;
        self.at_end = n == 0 && !buf.is_empty();
        Ok(n)
    }

    fn meta(&mut self) -> io::Result<Meta> {
        let stat = self.file.stat().map_err(from_ssh)?;
        Ok(Meta {
            dev: 0,
            ino: 0,
            size: stat.size.unwrap_or(0),
        })
    }
}
