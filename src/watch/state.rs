//! What the watcher keeps on disk in its state directory:
//!
//! - `cursor.json`: where in which file it is, written atomically and
//!   durably after every applied batch, so that a restart (SIGKILL included)
//!   resumes right after the last applied record;
//! - `active.json`: the bans it applied that are still in force, so that a
//!   restarted watcher does not shorten them;
//! - `status.json`: counters and follow state for `banshare status`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::durable::write_atomic;
use crate::follow::Cursor;
use ipnet::IpNet;

use super::policy::ActiveBan;
use crate::record::Jail;

/// The persisted cursor, tied to the log it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedCursor {
    pub log: PathBuf,
    pub cursor: Cursor,
}

/// One active ban: the network, when it ends (`None`: never), its jail and
/// when it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedBan {
    pub target: String,
    pub until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub jail: Option<String>,
    pub since: DateTime<Utc>,
}

/// What `banshare status` reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub pid: u32,
    pub log: PathBuf,
    pub backend: String,
    pub mode: String,
    /// Whether the log could be read at the last attempt.
    pub log_present: bool,
    pub last_error: Option<String>,
    /// The cursor: byte offset after the last applied record.
    pub offset: u64,
    pub last_record_ts: Option<DateTime<Utc>>,
    pub active_bans: usize,
    pub lines_read: u64,
    pub applied: u64,
    pub rejected: BTreeMap<String, u64>,
    pub skipped: BTreeMap<String, u64>,
    pub backend_errors: u64,
    /// Actions given up after the backend refused them for minutes.
    #[serde(default)]
    pub abandoned: u64,
    /// Nodes whose circuit breaker is open, and until when.
    #[serde(default)]
    pub tripped_nodes: BTreeMap<String, DateTime<Utc>>,
    pub started: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
}

/// The files in one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens `dir`, creating it (mode 0700) if needed.
    pub fn open(dir: &Path) -> io::Result<StateDir> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(StateDir {
            dir: dir.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn load_cursor(&self) -> io::Result<Option<SavedCursor>> {
        load_json(&self.dir.join("cursor.json"))
    }

    pub fn save_cursor(&self, cursor: &SavedCursor) -> io::Result<()> {
        save_json(&self.dir.join("cursor.json"), cursor)
    }

    pub fn load_active(&self) -> io::Result<Vec<(IpNet, ActiveBan)>> {
        let saved: Vec<SavedBan> = load_json(&self.dir.join("active.json"))?.unwrap_or_default();
        // A file edited by hand may hold anything: keep what parses.
        Ok(saved
            .into_iter()
            .filter_map(|b| {
                let jail = match b.jail {
                    Some(j) => Some(j.parse::<Jail>().ok()?),
                    None => None,
                };
                Some((
                    b.target.parse().ok()?,
                    ActiveBan {
                        until: b.until,
                        jail,
                        since: b.since,
                    },
                ))
            })
            .collect())
    }

    /// Writes the active bans one by one straight to the file (compact
    /// JSON), so 100,000 bans never sit in memory twice.
    pub fn save_active(&self, bans: impl Iterator<Item = (IpNet, ActiveBan)>) -> io::Result<()> {
        crate::durable::write_atomic_with(&self.dir.join("active.json"), 0o600, |out| {
            out.write_all(b"[")?;
            for (i, (net, b)) in bans.enumerate() {
                if i > 0 {
                    out.write_all(b",\n")?;
                }
                let saved = SavedBan {
                    target: net.to_string(),
                    until: b.until,
                    jail: b.jail.map(|j| j.as_str().to_owned()),
                    since: b.since,
                };
                serde_json::to_writer(&mut *out, &saved).map_err(io::Error::other)?;
            }
            out.write_all(b"]\n")
        })
    }

    pub fn load_status(&self) -> io::Result<Option<Status>> {
        load_json(&self.dir.join("status.json"))
    }

    pub fn save_status(&self, status: &Status) -> io::Result<()> {
        save_json(&self.dir.join("status.json"), status)
    }
}

fn load_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn save_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &data, 0o600)
}
