//! A daemon's state directory: where the watcher and the monitor keep what
//! a restart needs, each in a directory of its own.
//!
//! - `cursor.json`: the [`Position`] of the feed after the last record the
//!   daemon finished with (applied, or shared), written atomically and
//!   durably, so that a restart (SIGKILL included) resumes right after it.
//!   Its kind and content belong to the feed (see
//!   [`crate::transport::feed`]); the watcher saves its circuit breaker
//!   beside it;
//! - the watcher's own files (`active.json`, `status.json`): see
//!   [`crate::watch::state`];
//! - `lock`: locked (`flock`) for the daemon's life, so that one watcher or
//!   monitor at a time uses the directory; it holds that daemon's pid.
//!
//! Each JSON file carries `"version"` ([`STATE_VERSION`]). Files of older
//! formats are read:
//!
//! - format 0 (no `version`; `active.json` a bare list of bans);
//! - format 1 (`cursor.json` held `log` and a file `cursor`, a byte offset
//!   in a followed file): from format 2 on it holds a `position` of a
//!   kind, which a feed that pushes records (a message bus) can hand out
//!   too. A daemon taking the directory ([`StateDir::acquire`]) rewrites
//!   an older `cursor.json` in format 2; the other files are rewritten
//!   when next saved.
//!
//! A file of a newer version is refused, never overwritten: a downgrade
//! must not lose what it holds.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::durable::write_atomic;
use crate::transport::feed::Position;

/// The format of the state files this release writes. Formats 0 and 1 are
/// read and migrated.
pub const STATE_VERSION: u64 = 2;

/// The state files a daemon may have: none may be of a newer format.
const STATE_FILES: [&str; 4] = [CHECKPOINT, "active.json", "status.json", "control.json"];
/// The file that holds the saved position.
const CHECKPOINT: &str = "cursor.json";

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

/// `cursor.json`: where the daemon's feed stands. The watcher adds its
/// circuit breaker (see [`crate::watch::state::WatchCheckpoint`]); a
/// reader of this type skips it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub position: Position,
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

    /// Refuses files of a newer format, and rewrites `cursor.json` of an
    /// older one in the current format. The other files hold in format 2
    /// what they held before (format 0's bare list of bans is told apart
    /// when read): their readers take every older version, and the daemon
    /// writes them anew in the current format when it next saves them.
    /// Rewriting them here would cost memory in proportion to their size
    /// (`active.json` can hold a million bans) for no change.
    fn migrate(&self) -> Result<(), StateError> {
        for name in STATE_FILES {
            let path = self.dir.join(name);
            let Some(data) = read_state_file(&path)? else {
                continue;
            };
            let found = check_version(&path, &data)?;
            if found == STATE_VERSION || name != CHECKPOINT {
                continue;
            }
            let io_err = |source| StateError::Io {
                path: path.clone(),
                source,
            };
            let old: Value = parse_json(&path, &data).map_err(io_err)?;
            let new = upgrade_checkpoint(old).map_err(io_err)?;
            save_json(&path, &new).map_err(io_err)?;
            log::info!(
                "migrated {} from state format {found} to {STATE_VERSION}",
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

    /// The daemon's saved checkpoint (`cursor.json`): [`Checkpoint`], or
    /// a type with more fields beside the position.
    pub fn load_checkpoint<T: DeserializeOwned>(&self) -> io::Result<Option<T>> {
        load_json(&self.dir.join("cursor.json"))
    }

    /// Saves the checkpoint atomically and durably.
    pub fn save_checkpoint<T: Serialize>(&self, checkpoint: &T) -> io::Result<()> {
        save_json(&self.dir.join("cursor.json"), checkpoint)
    }

    /// The path of the state file `name` in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// `old`, a `cursor.json` of format 0 or 1, in the current format (without
/// its `version`, which saving adds): its `log` and file `cursor` become a
/// `position` of kind `file`; other fields (the breaker) stay as they were.
fn upgrade_checkpoint(mut old: Value) -> io::Result<Value> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let Value::Object(fields) = &mut old else {
        return Err(invalid("not a JSON object"));
    };
    fields.remove("version");
    let log = fields.remove("log").unwrap_or(Value::Null);
    let cursor = fields.remove("cursor").unwrap_or(Value::Null);
    let (Some(log), Some(offset)) = (log.as_str(), cursor["offset"].as_u64()) else {
        return Err(invalid(
            "a cursor of format 0 or 1 without its log or offset",
        ));
    };
    // Formats 0 and 1 only followed files.
    let position = json!({ "kind": "file", "log": log, "seq": offset, "at": cursor });
    fields.insert("position".into(), position);
    Ok(old)
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

/// Refuses what [`StateDir::acquire`] refuses in `dir` before it takes it:
/// state files of a newer format. Reads only and creates nothing, for
/// `config check`; a file it cannot read is the daemon's to report.
pub fn check_versions(dir: &Path) -> Result<(), StateError> {
    for name in STATE_FILES {
        let path = dir.join(name);
        let Ok(Some(data)) = read_state_file(&path) else {
            continue;
        };
        if let Err(e @ StateError::FutureVersion { .. }) = check_version(&path, &data) {
            return Err(e);
        }
    }
    Ok(())
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
pub(crate) fn read_state_file(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
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
pub(crate) fn check_version(path: &Path, data: &[u8]) -> Result<u64, StateError> {
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
pub(crate) fn file_version(path: &Path, data: &[u8]) -> io::Result<u64> {
    check_version(path, data).map_err(|e| match e {
        StateError::Io { source, .. } => source,
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

pub(crate) fn parse_json<T: DeserializeOwned>(path: &Path, data: &[u8]) -> io::Result<T> {
    serde_json::from_slice(data).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

pub(crate) fn versioned_json<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let versioned = Versioned {
        version: STATE_VERSION,
        body: value,
    };
    serde_json::to_vec_pretty(&versioned).map_err(io::Error::other)
}

/// As [`versioned_json`], on one line (no newline at its end), for a
/// journal of them.
pub(crate) fn versioned_json_line<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let versioned = Versioned {
        version: STATE_VERSION,
        body: value,
    };
    serde_json::to_vec(&versioned).map_err(io::Error::other)
}

/// Writes `data` over the start of the existing file at `path`, padded
/// with spaces (JSON ignores them) to the file's old length, so that no
/// block needs to be allocated. Not atomic: a reader may catch it half
/// written, and reads again.
pub(crate) fn overwrite_in_place(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    let old_len = file.metadata()?.len() as usize;
    let mut padded = data.to_vec();
    if padded.len() < old_len {
        padded.resize(old_len - 1, b' ');
        padded.push(b'\n');
    }
    file.write_all(&padded)
}

/// A state file of any version up to [`STATE_VERSION`] (its `version`
/// field is ignored by `T`), or `None` if there is none.
pub(crate) fn load_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(data) => {
            file_version(path, &data)?;
            parse_json(path, &data).map(Some)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn save_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_atomic(path, &versioned_json(value)?, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_format_1_cursor_becomes_a_file_position_and_keeps_the_breaker() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = r#"{"version":1,"log":"/srv/newbans.log","cursor":{"dev":1,"ino":2,
            "fingerprint":{"len":3,"hash":"00000000000000ff"},"offset":42},"breaker":{}}"#;
        fs::write(dir.path().join("cursor.json"), v1).unwrap();
        let state = StateDir::acquire(dir.path()).unwrap();
        let saved: Value = state.load_checkpoint().unwrap().unwrap();
        assert_eq!(saved["version"], 2);
        assert_eq!(saved["breaker"], json!({}));
        let position = &saved["position"];
        assert_eq!(
            (&position["kind"], &position["log"], &position["seq"]),
            (&json!("file"), &json!("/srv/newbans.log"), &json!(42))
        );
        assert_eq!(position["at"]["fingerprint"]["hash"], "00000000000000ff");
        let checkpoint: Checkpoint = state.load_checkpoint().unwrap().unwrap();
        assert_eq!(checkpoint.position.at["offset"], 42);
    }
}
