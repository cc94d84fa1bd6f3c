//! Locks for appending to the shared log.
//!
//! Two layers, taken in this order and released in reverse:
//!
//! 1. [`LocalLock`]: `flock` on a file in the local spool directory. It makes
//!    writers on the same host queue in the kernel instead of all hammering
//!    the file server.
//! 2. [`CrossHostLock`]: a lock file beside the log, taken by exclusive
//!    create (`O_CREAT|O_EXCL`). Exclusive create is atomic on the file
//!    server, through sshfs, NFS and SFTP alike, whereas `flock` on an sshfs
//!    mount only locks on the local host.
//!
//! A writer that dies while holding the cross-host lock leaves the file
//! behind. A waiter that sees the same lock file content, unchanged, for
//! `stale_after` (timed on its own monotonic clock, so clock skew between
//! hosts cannot make a live lock look old) breaks it. Breaking happens under
//! a second exclusive-create file, `<lock>.break`, so that two breakers never
//! both remove a lock, and the breaker then competes for the lock like any
//! other writer. `docs/format.md` specifies the protocol.
//!
//! On a FUSE mount (sshfs), removing a file that a process on this host
//! still has open renames it to `.fuse_hidden*` instead, and a race inside
//! libfuse between that process's close and our unlink can leave it there
//! for good. Waiters on this host read the lock file all the time, so after
//! each release and break the holder sweeps such leftovers away: see
//! [`LockFs::sweep_leftovers`].

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for locks, and when a held lock counts as abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockTimings {
    /// Give up (and spool) when the lock is not ours within this time.
    pub timeout: Duration,
    /// A lock file whose content has not changed for this long belongs to a
    /// writer that died. Must be shorter than `timeout`.
    pub stale_after: Duration,
}

impl Default for LockTimings {
    fn default() -> LockTimings {
        LockTimings {
            timeout: Duration::from_secs(15),
            stale_after: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("timed out after {waited:?} waiting for lock {path} (held by: {holder})")]
    Timeout {
        path: PathBuf,
        waited: Duration,
        holder: String,
    },
    #[error("lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl LockError {
    fn io(path: &Path, source: io::Error) -> LockError {
        LockError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// An exclusive `flock` on a local file, released when dropped.
#[derive(Debug)]
pub struct LocalLock {
    _file: File,
}

impl LocalLock {
    /// Takes the lock, creating the file if needed, waiting at most `timeout`.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<LocalLock, LockError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| LockError::io(path, e))?;
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(LocalLock { _file: file }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => backoff.sleep(),
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Timeout {
                        path: path.to_owned(),
                        waited: timeout,
                        holder: "another process on this host".into(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(LockError::io(path, e)),
            }
        }
    }
}

/// Who holds a cross-host lock; written into the lock file for humans and
/// used as the token that tells one holder from the next.
#[derive(Debug, Clone)]
pub struct Owner {
    pub node: String,
    pub pid: u32,
}

/// A held cross-host lock file. Release it with [`CrossHostLock::release`];
/// dropping it releases too, ignoring errors.
pub struct CrossHostLock<'fs> {
    fs: &'fs mut dyn LockFs,
    path: PathBuf,
    content: Vec<u8>,
    stale_after: Duration,
    released: bool,
}

/// What a waiter last saw in the lock file, and since when.
struct Observation {
    content: Vec<u8>,
    since: Instant,
}

impl<'fs> CrossHostLock<'fs> {
    /// The lock file that guards `log`.
    pub fn path_for(log: &Path) -> PathBuf {
        let mut name = log.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock at `path`, breaking it if it is stale.
    pub fn acquire(
        fs: &'fs mut dyn LockFs,
        path: &Path,
        owner: &Owner,
        timings: LockTimings,
    ) -> Result<CrossHostLock<'fs>, LockError> {
        let content = lock_content(owner).map_err(|e| LockError::io(path, e))?;
        let start = Instant::now();
        let mut seen: Option<Observation> = None;
        let mut backoff = Backoff::new();
        loop {
            if try_create(fs, path, &content)? {
                return Ok(CrossHostLock {
                    fs,
                    path: path.to_owned(),
                    content,
                    stale_after: timings.stale_after,
                    released: false,
                });
            }
            // `None`: released between our create and our read.
            if let Some(current) = read_if_exists(fs, path)? {
                let seen = observe(&mut seen, current);
                if seen.since.elapsed() >= timings.stale_after {
                    let left = timings.timeout.saturating_sub(start.elapsed());
                    break_stale(fs, path, &seen.content, &content, timings.stale_after, left)?;
                    continue;
                }
            }
            if start.elapsed() >= timings.timeout {
                return Err(LockError::Timeout {
                    path: path.to_owned(),
                    waited: start.elapsed(),
                    holder: seen.map_or_else(|| "unknown".into(), |s| describe_holder(&s.content)),
                });
            }
            backoff.sleep();
        }
    }

    /// Removes the lock file if it is still ours. Returns `Ok(false)` when it
    /// was not: another writer judged it stale and broke it while we held
    /// it, so that writer may have appended concurrently with us.
    pub fn release(mut self) -> Result<bool, LockError> {
        self.released = true;
        let removed = remove_if_content(self.fs, &self.path, &self.content);
        sweep(self.fs, &self.path, &self.content, self.stale_after);
        removed
    }
}

impl std::fmt::Debug for CrossHostLock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossHostLock")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for CrossHostLock<'_> {
    fn drop(&mut self) {
        if !self.released {
            let _ = remove_if_content(self.fs, &self.path, &self.content);
            sweep(self.fs, &self.path, &self.content, self.stale_after);
        }
    }
}

/// Returns the observation, restarting its clock when the content changed.
fn observe(seen: &mut Option<Observation>, current: Vec<u8>) -> &Observation {
    match seen {
        Some(obs) if obs.content == current => {}
        _ => {
            *seen = Some(Observation {
                content: current,
                since: Instant::now(),
            })
        }
    }
    seen.as_ref().expect("just set")
}

/// The lock file's content: unique to this acquisition, readable by humans.
fn lock_content(owner: &Owner) -> io::Result<Vec<u8>> {
    let mut token = [0u8; 8];
    getrandom::fill(&mut token).map_err(io::Error::other)?;
    let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(format!(
        "banshare-lock node={} pid={} token={token} since={since}\n",
        owner.node, owner.pid
    )
    .into_bytes())
}

/// The three file operations the cross-host lock protocol needs, so that
/// the same protocol runs on a local or mounted path and over SFTP.
pub trait LockFs {
    /// Creates `path` exclusively with `content`. `Ok(false)`: it exists.
    fn create_new(&mut self, path: &Path, content: &[u8]) -> io::Result<bool>;
    /// The content (at most 4 KiB), or `None` if there is no such file.
    fn read(&mut self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Removes `path`. `Ok(false)`: it was already gone.
    fn remove(&mut self, path: &Path) -> io::Result<bool>;
    /// Removes the copies of lock files that removing them left behind in
    /// `lock`'s folder, on filesystems that leave any (FUSE's
    /// `.fuse_hidden*`), and returns how many. It removes only lock records
    /// (see [`is_lock_record`]): `ours` at once, others once `stale_after`
    /// old. The default does nothing: SFTP and local disks leave nothing.
    fn sweep_leftovers(
        &mut self,
        _lock: &Path,
        _ours: &[u8],
        _stale_after: Duration,
    ) -> io::Result<usize> {
        Ok(0)
    }
}

/// The prefix of the names FUSE gives files unlinked while still open.
pub const FUSE_HIDDEN_PREFIX: &str = ".fuse_hidden";

/// How many times [`LocalLockFs::sweep_leftovers`] lists the folder at most:
/// removing a leftover that a process on this host is reading hides it
/// again under a new name, which the next pass removes.
const SWEEP_PASSES: usize = 5;

/// Whether `content` is what this protocol writes into a lock or break
/// guard file: one line `banshare-lock node=... token=...`. Only such
/// files are ever swept, so another program's hidden files are never
/// touched.
pub fn is_lock_record(content: &[u8]) -> bool {
    let Some(line) = content.strip_suffix(b"\n") else {
        return false;
    };
    line.starts_with(b"banshare-lock node=")
        && !line.contains(&b'\n')
        && line.windows(7).any(|w| w == b" token=")
}

/// Lock files on a local or mounted (sshfs, NFS) path.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalLockFs;

/// How many times in a row a failed exclusive create with no file behind
/// it (sshfs's `EPERM`, SFTP's generic failure) is taken for a race lost to
/// a holder who released in between, before it counts as a real error.
pub const LOST_RACE_RETRIES: usize = 20;

impl LockFs for LocalLockFs {
    fn create_new(&mut self, path: &Path, content: &[u8]) -> io::Result<bool> {
        let mut attempts = 0;
        let mut file = loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(path)
            {
                Ok(file) => break file,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
                // sshfs reports a lost O_EXCL race as EPERM. If the file is
                // there, it is held. If not, either the holder released it
                // between our create and our look (try again), or it is a
                // real permission problem, which keeps happening.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    if path.exists() {
                        return Ok(false);
                    }
                    attempts += 1;
                    if attempts >= LOST_RACE_RETRIES {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        if let Err(e) = file.write_all(content).and_then(|()| file.flush()) {
            let _ = fs::remove_file(path);
            return Err(e);
        }
        Ok(true)
    }

    fn read(&mut self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match File::open(path) {
            Ok(file) => {
                let mut content = Vec::new();
                file.take(MAX_LOCK_FILE).read_to_end(&mut content)?;
                Ok(Some(content))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn remove(&mut self, path: &Path) -> io::Result<bool> {
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lists the folder (one listing per pass, usually one pass) and removes
    /// the `.fuse_hidden*` lock records. A leftover's age is the folder's
    /// mtime, which our own unlink just set, minus the leftover's mtime:
    /// both come from the file server's clock, so clock skew between hosts
    /// does not count.
    fn sweep_leftovers(
        &mut self,
        lock: &Path,
        ours: &[u8],
        stale_after: Duration,
    ) -> io::Result<usize> {
        let dir = match lock.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut removed = 0;
        for _ in 0..SWEEP_PASSES {
            let now = fs::metadata(dir)?.modified()?;
            let mut removed_this_pass = 0;
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                if !entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(FUSE_HIDDEN_PREFIX.as_bytes())
                {
                    continue;
                }
                // Files we cannot read or that vanished are not ours to judge.
                let path = entry.path();
                let Ok(Some(content)) = self.read(&path) else {
                    continue;
                };
                if !is_lock_record(&content) {
                    continue;
                }
                let old_enough = || {
                    let modified = entry.metadata().and_then(|m| m.modified()).ok();
                    modified
                        .is_some_and(|m| now.duration_since(m).is_ok_and(|age| age >= stale_after))
                };
                if (content == ours || old_enough()) && self.remove(&path).unwrap_or(false) {
                    removed_this_pass += 1;
                }
            }
            if removed_this_pass == 0 {
                break;
            }
            removed += removed_this_pass;
        }
        Ok(removed)
    }
}

/// Lock files are one short line; reading more means something else is
/// there, and it is read no further.
pub const MAX_LOCK_FILE: u64 = 4096;

/// One exclusive-create attempt. `Ok(false)`: someone else holds it.
fn try_create(fs: &mut dyn LockFs, path: &Path, content: &[u8]) -> Result<bool, LockError> {
    fs.create_new(path, content)
        .map_err(|e| LockError::io(path, e))
}

/// The file's content, or `None` if it does not exist.
fn read_if_exists(fs: &mut dyn LockFs, path: &Path) -> Result<Option<Vec<u8>>, LockError> {
    fs.read(path).map_err(|e| LockError::io(path, e))
}

/// Sweeps leftovers of removed lock files after a release or a break. A
/// failure costs only litter, which a later sweep removes once stale, so it
/// is reported and otherwise ignored.
fn sweep(fs: &mut dyn LockFs, path: &Path, ours: &[u8], stale_after: Duration) {
    if let Err(e) = fs.sweep_leftovers(path, ours, stale_after) {
        log::warn!(
            "cannot sweep leftover lock files beside {}: {e}",
            path.display()
        );
    }
}

/// Removes `path` only if it still holds `content`.
fn remove_if_content(fs: &mut dyn LockFs, path: &Path, content: &[u8]) -> Result<bool, LockError> {
    match read_if_exists(fs, path)? {
        Some(current) if current == content => fs.remove(path).map_err(|e| LockError::io(path, e)),
        _ => Ok(false),
    }
}

/// Removes the lock at `path` if it still holds `stale`, under the break
/// guard `<path>.break` so that no two breakers act at once. A breaker that
/// died inside the guard leaves it behind; the guard is itself broken after
/// twice `stale_after` unchanged.
fn break_stale(
    fs: &mut dyn LockFs,
    path: &Path,
    stale: &[u8],
    ours: &[u8],
    stale_after: Duration,
    time_left: Duration,
) -> Result<(), LockError> {
    let mut guard_path = path.as_os_str().to_owned();
    guard_path.push(".break");
    let guard_path = PathBuf::from(guard_path);
    if !try_create(fs, &guard_path, ours)? {
        // Wait no longer than the caller's deadline allows.
        return break_stale_guard(fs, &guard_path, 2 * stale_after, time_left);
    }
    let result = remove_if_content(fs, path, stale);
    let _ = remove_if_content(fs, &guard_path, ours);
    sweep(fs, path, ours, stale_after);
    if let Ok(true) = result {
        log::warn!(
            "broke stale lock {} left by a writer that stopped ({})",
            path.display(),
            describe_holder(stale)
        );
    }
    result.map(|_| ())
}

/// Waits, for a bounded time, to see whether the break guard changes; if it
/// does not, its holder died and the guard is removed.
fn break_stale_guard(
    fs: &mut dyn LockFs,
    guard: &Path,
    stale_after: Duration,
    time_left: Duration,
) -> Result<(), LockError> {
    let Some(first) = read_if_exists(fs, guard)? else {
        return Ok(());
    };
    let start = Instant::now();
    let mut backoff = Backoff::new();
    while start.elapsed() < stale_after {
        if start.elapsed() >= time_left {
            return Ok(()); // out of time: the caller gives up and spools
        }
        match read_if_exists(fs, guard)? {
            Some(now) if now == first => backoff.sleep(),
            _ => return Ok(()), // the guard moved on: its holder is alive
        }
    }
    remove_if_content(fs, guard, &first).map(|_| ())
}

/// A printable, bounded description of a lock file's content.
fn describe_holder(content: &[u8]) -> String {
    let text: String = content
        .iter()
        .take(200)
        .map(|&b| {
            if (b' '..=b'~').contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    let text = text.trim_end_matches('?').trim();
    if text.is_empty() {
        "a writer that has not written its name yet".into()
    } else {
        text.into()
    }
}

/// Sleeps 1 ms at first, doubling up to 8 ms, with jitter so that waiters
/// on different hosts do not retry in lockstep.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const MAX: Duration = Duration::from_millis(8);

    fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(1),
        }
    }

    fn sleep(&mut self) {
        let mut byte = [0u8; 1];
        let jitter = match getrandom::fill(&mut byte) {
            Ok(()) => self.next.mul_f64(f64::from(byte[0]) / 255.0),
            Err(_) => Duration::ZERO,
        };
        thread::sleep(self.next / 2 + jitter / 2);
        self.next = (self.next * 2).min(Self::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            node: "test".into(),
            pid: 1,
        }
    }

    const FAST: LockTimings = LockTimings {
        timeout: Duration::from_millis(300),
        stale_after: Duration::from_millis(100),
    };

    #[test]
    fn second_acquire_waits_for_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.lock");
        let (mut a, mut b) = (LocalLockFs, LocalLockFs);
        let held = CrossHostLock::acquire(&mut a, &path, &owner(), FAST).unwrap();
        assert!(path.exists());
        assert!(held.release().unwrap());
        assert!(!path.exists());
        CrossHostLock::acquire(&mut b, &path, &owner(), FAST)
            .unwrap()
            .release()
            .unwrap();
    }

    #[test]
    fn stale_lock_is_broken_and_live_one_is_not_released_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.lock");
        fs::write(&path, "banshare-lock node=dead pid=9 token=00 since=x\n").unwrap();
        let mut lfs = LocalLockFs;
        let held = CrossHostLock::acquire(&mut lfs, &path, &owner(), FAST).unwrap();
        // A writer whose lock was broken must not remove the new holder's.
        assert!(
            !remove_if_content(
                &mut LocalLockFs,
                &path,
                b"banshare-lock node=dead pid=9 token=00 since=x\n"
            )
            .unwrap()
        );
        assert!(held.release().unwrap());
    }

    #[test]
    fn live_lock_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.lock");
        let slow = LockTimings {
            timeout: Duration::from_millis(100),
            stale_after: Duration::from_secs(60),
        };
        let (mut a, mut b) = (LocalLockFs, LocalLockFs);
        let _held = CrossHostLock::acquire(&mut a, &path, &owner(), slow).unwrap();
        let err = CrossHostLock::acquire(&mut b, &path, &owner(), slow).unwrap_err();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
    }

    #[test]
    fn lock_records_are_told_from_other_files() {
        assert!(is_lock_record(
            b"banshare-lock node=a pid=1 token=00 since=x\n"
        ));
        assert!(!is_lock_record(b"banshare-lock node=a pid=1 since=x\n"));
        assert!(!is_lock_record(b"banshare-lock node=a token=0"));
        assert!(!is_lock_record(b"banshare-lock node=a token=0\nmore\n"));
        assert!(!is_lock_record(b"someone's editor swap file\n"));
    }

    #[test]
    fn sweep_removes_our_leftovers_and_stale_lock_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("log.lock");
        let ours = b"banshare-lock node=me pid=1 token=01 since=x\n";
        let write = |name: &str, content: &[u8], age: Duration| {
            let path = dir.path().join(name);
            fs::write(&path, content).unwrap();
            let file = File::options().write(true).open(&path).unwrap();
            file.set_modified(std::time::SystemTime::now() - age)
                .unwrap();
        };
        let old = Duration::from_secs(3600);
        write(".fuse_hidden0000000100000001", ours, Duration::ZERO);
        write(
            ".fuse_hidden0000000200000002",
            b"banshare-lock node=dead pid=2 token=02 since=x\n",
            old,
        );
        // Another writer's, released a moment ago: its owner sweeps it.
        write(
            ".fuse_hidden0000000300000003",
            b"banshare-lock node=other pid=3 token=03 since=x\n",
            Duration::ZERO,
        );
        // Not a lock record, however old: never ours to remove.
        write(".fuse_hidden0000000400000004", b"user data\n", old);
        write("log.lock.old", ours, old);
        let removed = LocalLockFs
            .sweep_leftovers(&lock, ours, Duration::from_secs(10))
            .unwrap();
        assert_eq!(removed, 2);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".fuse_hidden0000000300000003",
                ".fuse_hidden0000000400000004",
                "log.lock.old"
            ]
        );
    }
}
