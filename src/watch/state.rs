//! What the watcher keeps on disk in its state directory:
//!
//! - `cursor.json`: where in which file it is, written atomically and
//!   durably after every applied batch, so that a restart (SIGKILL included)
//!   resumes right after the last applied record. It also holds the
//!   circuit breaker's rate windows and open breakers: they count the
//!   records up to the cursor, so they are saved with it, and a restart
//!   neither forgets a flood nor counts a record twice;
//! - `active.json`: the bans it applied that are still in force, so that a
//!   restarted watcher does not shorten them;
//! - `status.json`: counters and follow state for `banshare status`;
//! - `lock`: locked (`flock`) for the daemon's life, so that one watcher or
//!   monitor at a time uses the directory; it holds that daemon's pid.
//!
//! Each JSON file carries `"version"` ([`STATE_VERSION`]). Files without
//! one are format 0, as written before versions; [`StateDir::acquire`]
//! rewrites them in the current format. A file of a newer version is
//! refused, never overwritten: a downgrade must not lose what it holds.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::durable::write_atomic;
use crate::follow::Cursor;
use ipnet::IpNet;

use super::policy::{ActiveBan, BreakerState};
use crate::record::Jail;
use crate::transport::endpoint::Endpoints;

/// The format of the state files this release writes. Format 0 (no
/// `version` field, `active.json` a bare list) is read and migrated.
pub const STATE_VERSION: u64 = 1;

/// Why a state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state directory {dir} is in use by another banshare watcher or monitor{holder}; \
         give each one a state directory of its own"
    )]
    Busy { dir: PathBuf, holder: String },
    #[error(
        "{path} has state format version {found}, newer than this banshare reads \
         ({STATE_VERSION}); refusing to use or overwrite it: run the banshare that wrote it, \
         or move the state directory aside"
    )]
    FutureVersion { path: PathBuf, found: u64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The persisted cursor, tied to the log it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedCursor {
    pub log: PathBuf,
    pub cursor: Cursor,
    /// The watcher's circuit breaker as of this cursor (none: a monitor's
    /// cursor, or format 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerState>,
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
    /// Bytes in the log past the cursor (an unfinished last line
    /// included), as the watcher measured them through its own feed when it
    /// wrote this status: right over every transport, and `status` needs no
    /// access to the log. `None`: it could not look (the log unreachable, or
    /// not opened yet). Optional with a default, so format 1 stays as it
    /// was: files without it read as `None`, and older releases ignore it.
    #[serde(default)]
    pub lag_bytes: Option<u64>,
    /// Complete records past the cursor, measured with `lag_bytes`; `None`
    /// also when the lag was too long to count at every status write.
    #[serde(default)]
    pub lag_records: Option<u64>,
    pub last_record_ts: Option<DateTime<Utc>>,
    pub active_bans: usize,
    pub lines_read: u64,
    pub applied: u64,
    pub rejected: BTreeMap<String, u64>,
    pub skipped: BTreeMap<String, u64>,
    /// Records applied with a change: dated ahead of this host's clock
    /// (`ClockAhead`), bantime cut to `max_bantime` (`BantimeClamped`).
    #[serde(default)]
    pub adjusted: BTreeMap<String, u64>,
    pub backend_errors: u64,
    /// Actions given up after the backend refused them for minutes.
    #[serde(default)]
    pub abandoned: u64,
    /// Nodes whose circuit breaker is open, and until when.
    #[serde(default)]
    pub tripped_nodes: BTreeMap<String, DateTime<Utc>>,
    /// The addresses the log is reached through, never banned.
    #[serde(default)]
    pub transport: Endpoints,
    pub started: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    /// Why the watcher applies nothing: its cursor cannot be saved (a full
    /// or read-only state directory), so it holds rather than run ahead of
    /// it. `None` while it applies.
    #[serde(default)]
    pub held: Option<String>,
}

/// The files in one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    /// The locked `lock` file, for a daemon's life (see [`StateDir::acquire`]).
    _lock: Option<std::sync::Arc<File>>,
}

impl StateDir {
    /// Opens `dir`, creating it (mode 0700) if needed, without locking it
    /// (for reading, and for tests).
    pub fn open(dir: &Path) -> io::Result<StateDir> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(StateDir {
            dir: dir.to_owned(),
            _lock: None,
        })
    }

    /// Opens `dir` for a daemon: creates it if needed, locks it for as long
    /// as the returned value (or a clone) lives, so that a second watcher or
    /// monitor on it is refused instead of overwriting this one's state,
    /// and migrates its files to [`STATE_VERSION`]. `flock` locks only on
    /// this host: the state directory must be local.
    pub fn acquire(dir: &Path) -> Result<StateDir, StateError> {
        let io_err = |source| StateError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut state = StateDir::open(dir).map_err(io_err)?;
        state._lock = Some(std::sync::Arc::new(lock(dir)?));
        state.migrate()?;
        Ok(state)
    }

    /// Rewrites format-0 files in the current format; refuses newer ones.
    fn migrate(&self) -> Result<(), StateError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { path, source }
        };
        for name in ["cursor.json", "active.json", "status.json"] {
            let path = self.dir.join(name);
            let Some(data) = read_state_file(&path)? else {
                continue;
            };
            if check_version(&path, &data)? > 0 {
                continue;
            }
            match name {
                "cursor.json" => {
                    let cursor = parse_json(&path, &data).map_err(io_err(&path))?;
                    self.save_cursor(&cursor).map_err(io_err(&path))?;
                }
                "active.json" => {
                    let bans = self.load_active().map_err(io_err(&path))?;
                    self.save_active(bans.into_iter()).map_err(io_err(&path))?;
                }
                _ => {
                    let status = parse_json(&path, &data).map_err(io_err(&path))?;
                    self.save_status(&status).map_err(io_err(&path))?;
                }
            }
            log::info!(
                "migrated {} from state format 0 to {STATE_VERSION}",
                path.display()
            );
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory's filesystem has `bytes` and an inode free
    /// for this process (root may use the blocks reserved for it).
    pub fn has_room(&self, bytes: u64) -> io::Result<bool> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: statvfs is plain data; all zeroes is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a statvfs to fill in.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let (blocks, inodes) = if root {
            (st.f_bfree, st.f_ffree)
        } else {
            (st.f_bavail, st.f_favail)
        };
        // Some filesystems count no inodes at all (f_files 0).
        let inode_free = st.f_files == 0 || inodes > 0;
        Ok(inode_free && blocks as u128 * st.f_frsize as u128 >= u128::from(bytes))
    }

    pub fn load_cursor(&self) -> io::Result<Option<SavedCursor>> {
        load_json(&self.dir.join("cursor.json"))
    }

    pub fn save_cursor(&self, cursor: &SavedCursor) -> io::Result<()> {
        save_json(&self.dir.join("cursor.json"), cursor)
    }

    pub fn load_active(&self) -> io::Result<Vec<(IpNet, ActiveBan)>> {
        let path = self.dir.join("active.json");
        let saved: Vec<SavedBan> = match read_state_file(&path).map_err(io::Error::other)? {
            None => Vec::new(),
            // Format 0 is the bare list.
            Some(data) if file_version(&path, &data)? == 0 => parse_json(&path, &data)?,
            Some(data) => parse_json::<ActiveFile>(&path, &data)?.bans,
        };
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
    /// JSON, one ban a line), so 100,000 bans never sit in memory twice. The
    /// JSON is written by hand: through serde and chrono's formatting, a
    /// million bans took seconds, and the loop waits while it saves.
    pub fn save_active(&self, bans: impl Iterator<Item = (IpNet, ActiveBan)>) -> io::Result<()> {
        crate::durable::write_atomic_with(&self.dir.join("active.json"), 0o600, |out| {
            let mut line = String::with_capacity(160);
            write!(out, "{{\"version\":{STATE_VERSION},\"bans\":[")?;
            for (i, (net, ban)) in bans.enumerate() {
                line.clear();
                if i > 0 {
                    line.push_str(",\n");
                }
                saved_ban_json(&mut line, net, &ban);
                out.write_all(line.as_bytes())?;
            }
            out.write_all(b"]}\n")
        })
    }

    pub fn load_status(&self) -> io::Result<Option<Status>> {
        load_json(&self.dir.join("status.json"))
    }

    /// Replaces status.json atomically. When the state directory is full,
    /// overwrites it in place instead (it fits in the blocks it has), so
    /// that `banshare status` can still tell that the watcher holds.
    pub fn save_status(&self, status: &Status) -> io::Result<()> {
        let path = self.dir.join("status.json");
        let data = versioned_json(status)?;
        match write_atomic(&path, &data, 0o600) {
            Err(e) if e.kind() == io::ErrorKind::StorageFull => overwrite_in_place(&path, &data),
            result => result,
        }
    }
}

/// `active.json` from format 1 on.
#[derive(Deserialize)]
struct ActiveFile {
    bans: Vec<SavedBan>,
}

/// Just the version of a state file; everything else is skipped unread.
#[derive(Deserialize)]
struct VersionOnly {
    #[serde(default)]
    version: u64,
}

/// A state file's content as saved: `"version"` first, then its fields.
#[derive(Serialize)]
struct Versioned<'a, T> {
    version: u64,
    #[serde(flatten)]
    body: &'a T,
}

/// Locks `dir/lock` without waiting and writes this process's pid into it.
fn lock(dir: &Path) -> Result<File, StateError> {
    let path = dir.join("lock");
    let io_err = |source| StateError::Io {
        path: path.clone(),
        source,
    };
    // Not truncated before it is locked: the holder's pid stays readable.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim().parse::<u32>() {
                Ok(pid) => format!(" (pid {pid})"),
                Err(_) => String::new(),
            };
            return Err(StateError::Busy {
                dir: dir.to_owned(),
                holder,
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
    }
    file.set_len(0).map_err(io_err)?;
    writeln!(file, "{}", std::process::id()).map_err(io_err)?;
    Ok(file)
}

/// Whether a daemon holds the lock of the state directory `dir` now (see
/// [`StateDir::acquire`]). Asked without taking the lock for longer than the
/// question and without creating anything, so `banshare status` can ask it;
/// unlike a saved pid, a lock cannot outlive its holder or be reused.
pub fn is_held(dir: &Path) -> io::Result<bool> {
    let file = match File::open(dir.join("lock")) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        // Released when `file` is dropped, at once.
        Ok(()) => Ok(false),
        Err(fs::TryLockError::WouldBlock) => Ok(true),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The content of a state file, or `None` if there is none.
fn read_state_file(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The format version of a state file's content: 0 without one; an error
/// if it is newer than this release reads.
fn check_version(path: &Path, data: &[u8]) -> Result<u64, StateError> {
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Ok(0); // format 0's active.json is a bare list
    }
    let found = parse_json::<VersionOnly>(path, data)
        .map_err(|source| StateError::Io {
            path: path.to_owned(),
            source,
        })?
        .version;
    if found > STATE_VERSION {
        return Err(StateError::FutureVersion {
            path: path.to_owned(),
            found,
        });
    }
    Ok(found)
}

/// As [`check_version`], for the loaders' `io::Result`.
fn file_version(path: &Path, data: &[u8]) -> io::Result<u64> {
    check_version(path, data).map_err(|e| match e {
        StateError::Io { source, .. } => source,
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

fn parse_json<T: DeserializeOwned>(path: &Path, data: &[u8]) -> io::Result<T> {
    serde_json::from_slice(data).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

fn versioned_json<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let versioned = Versioned {
        version: STATE_VERSION,
        body: value,
    };
    serde_json::to_vec_pretty(&versioned).map_err(io::Error::other)
}

/// Writes `data` over the start of the existing file at `path`, padded
/// with spaces (JSON ignores them) to the file's old length, so that no
/// block needs to be allocated. Not atomic: a reader may catch it half
/// written, and reads again.
fn overwrite_in_place(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    let old_len = file.metadata()?.len() as usize;
    let mut padded = data.to_vec();
    if padded.len() < old_len {
        padded.resize(old_len - 1, b' ');
        padded.push(b'\n');
    }
    file.write_all(&padded)
}

/// One [`SavedBan`] as JSON. Every string in it is plain ASCII that needs
/// no escaping: a network, a checked jail name, RFC 3339 times.
fn saved_ban_json(out: &mut String, net: IpNet, ban: &ActiveBan) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = write!(out, "{{\"target\":\"{net}\",\"until\":");
    match ban.until {
        Some(until) => push_json_time(out, until),
        None => out.push_str("null"),
    }
    out.push_str(",\"jail\":");
    match &ban.jail {
        Some(jail) => {
            out.push('"');
            out.push_str(jail.as_str());
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"since\":");
    push_json_time(out, ban.since);
    out.push('}');
}

/// `"2026-11-21T18:28:04.123Z"`, as chrono's serde writes it for a time in
/// whole milliseconds (the policy keeps no finer times).
fn push_json_time(out: &mut String, t: DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write as _;
    if !(0..=9999).contains(&t.year()) {
        let _ = write!(
            out,
            "\"{}\"",
            t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        );
        return;
    }
    let _ = write!(
        out,
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    match t.timestamp_subsec_millis() {
        0 => out.push_str("Z\""),
        ms => {
            let _ = write!(out, ".{ms:03}Z\"");
        }
    }
}

/// A state file of any version up to [`STATE_VERSION`] (its `version`
/// field is ignored by `T`), or `None` if there is none.
fn load_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(data) => {
            file_version(path, &data)?;
            parse_json(path, &data).map(Some)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn save_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_atomic(path, &versioned_json(value)?, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_bans_are_saved_and_loaded_back_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let bans = vec![
            (
                "192.0.2.7/32".parse().unwrap(),
                ActiveBan {
                    until: Some(t("2026-11-21T19:28:04.123Z")),
                    jail: Some("sshd".parse().unwrap()),
                    since: t("2026-11-21T18:28:04.123Z"),
                },
            ),
            (
                "2001:db8::/48".parse().unwrap(),
                ActiveBan {
                    until: None,
                    jail: None,
                    since: t("2026-01-02T03:04:05Z"),
                },
            ),
        ];
        state.save_active(bans.clone().into_iter()).unwrap();
        assert_eq!(state.load_active().unwrap(), bans);
        // The same JSON as serde writes, so older files and tools agree.
        let text = fs::read_to_string(dir.path().join("active.json")).unwrap();
        let first = SavedBan {
            target: "192.0.2.7/32".into(),
            until: bans[0].1.until,
            jail: Some("sshd".into()),
            since: bans[0].1.since,
        };
        let by_serde = serde_json::to_string(&first).unwrap();
        assert!(
            text.starts_with(&format!("{{\"version\":1,\"bans\":[{by_serde},\n")),
            "{text}"
        );
    }

    #[test]
    fn a_second_acquire_of_a_directory_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::acquire(dir.path()).unwrap();
        match StateDir::acquire(dir.path()) {
            Err(e @ StateError::Busy { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains(&format!("(pid {})", std::process::id())),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        drop(first);
        StateDir::acquire(dir.path()).unwrap();
    }

    #[test]
    fn format_0_is_migrated_and_newer_formats_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let v0 = r#"[{"target":"192.0.2.7/32","until":null,"jail":"sshd","since":"2026-11-21T18:28:04Z"}]"#;
        fs::write(dir.path().join("active.json"), v0).unwrap();
        let state = StateDir::acquire(dir.path()).unwrap();
        let text = fs::read_to_string(dir.path().join("active.json")).unwrap();
        assert!(
            text.starts_with(r#"{"version":1,"bans":[{"target":"192.0.2.7/32""#),
            "{text}"
        );
        assert_eq!(state.load_active().unwrap().len(), 1);
        drop(state);

        let future = r#"{"version":2,"bans":[]}"#;
        fs::write(dir.path().join("active.json"), future).unwrap();
        match StateDir::acquire(dir.path()) {
            Err(StateError::FutureVersion { found: 2, path }) => {
                assert!(path.ends_with("active.json"))
            }
            other => panic!("{other:?}"),
        }
        let e = StateDir::open(dir.path())
            .unwrap()
            .load_active()
            .unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        assert_eq!(
            fs::read_to_string(dir.path().join("active.json")).unwrap(),
            future
        );
    }

    #[test]
    fn a_status_without_the_lag_reads_as_unknown_and_the_lag_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        // As format 1 was written before the watcher measured its lag.
        let mut old = serde_json::to_value(Status::default()).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("lag_bytes");
        fields.remove("lag_records");
        fields.insert("version".into(), 1.into());
        fs::write(dir.path().join("status.json"), old.to_string()).unwrap();
        let read = state.load_status().unwrap().unwrap();
        assert_eq!((read.lag_bytes, read.lag_records), (None, None));
        let measured = Status {
            lag_bytes: Some(396),
            lag_records: Some(3),
            ..Status::default()
        };
        state.save_status(&measured).unwrap();
        assert_eq!(state.load_status().unwrap(), Some(measured));
    }

    #[test]
    fn status_overwritten_in_place_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let long = Status {
            last_error: Some("x".repeat(500)),
            ..Status::default()
        };
        state.save_status(&long).unwrap();
        let short = Status {
            held: Some("cannot save the cursor".into()),
            ..Status::default()
        };
        let path = dir.path().join("status.json");
        overwrite_in_place(&path, &versioned_json(&short).unwrap()).unwrap();
        assert_eq!(state.load_status().unwrap(), Some(short));
    }
}
