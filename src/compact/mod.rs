//! Compacting the shared log (`banshare compact`): a new log holding only
//! the records that may still be in force on some watcher
//! ([`retention`](crate::watch::policy::retention) decides which), renamed
//! over the old one.
//!
//! Records are copied byte for byte, never rewritten, so signatures stay
//! valid. The new log starts with a marker line
//! ([`record::COMPACTED_PREFIX`]) that carries a random nonce: its first
//! bytes, and so its fingerprint, always differ from the old log's, even
//! where the first record is kept and the filesystem has no inode numbers
//! (SFTP) or reuses them (sshfs). Followers thus always see another file at
//! the path: they read the old one to its end and the new one from 0, and
//! the policy drops what they had applied already (docs/watch.md).
//!
//! # The lock, held briefly
//!
//! Writers append under the cross-host lock, and break a lock unchanged for
//! `stale_lock`. So the copy is made without the lock, and caught up with
//! what was appended meanwhile, until little is left. Only then is the lock
//! taken, to copy the last tail and rename; if that took half of
//! `stale_lock` before the rename, compaction gives up and leaves the log
//! as it was, rather than risk a writer breaking the lock and appending to
//! the file about to be replaced. The rename is atomic on the file server:
//! `rename(2)` locally, `posix-rename@openssh.com` through sshfs (which
//! uses it when the server offers it) and over SFTP.

#[cfg(feature = "sftp")]
pub use crate::transport::sftp::SftpStore;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::follow::FINGERPRINT_MAX;
use crate::record;
use crate::transport::lock::{CrossHostLock, LocalLock, LockError, LockFs, LockTimings, Owner};
use crate::watch::policy::retention::{self, Fate, RetentionRules};

/// Catching up without the lock stops once a round finds less than this
/// new: the rest is copied under the lock.
const SMALL_TAIL: usize = 64 * 1024;
/// Rounds of catching up without the lock, at most.
const CATCH_UP_ROUNDS: usize = 5;

/// The file operations compaction needs, on the log's filesystem.
pub trait LogStore {
    /// The bytes of `path` from `offset` to its end (read until a read
    /// returns 0, through a fresh open: a size from `stat` may be stale).
    fn read_from(&self, path: &Path, offset: u64) -> io::Result<Vec<u8>>;
    /// At most `len` bytes of `path` from its start.
    fn head(&self, path: &Path, len: u64) -> io::Result<Vec<u8>>;
    /// Creates `path` (replacing a leftover) holding `data`, with the
    /// permissions, owner and group of `like`: the writers of the old log
    /// must be able to append to the new one. Fails with [`OwnerNotKept`]
    /// (inside the `io::Error`), before writing `data`, when it cannot
    /// give the owner and group; `path` may then exist, empty.
    fn create(&self, path: &Path, data: &[u8], like: &Path) -> io::Result<()>;
    /// Appends `data` to `path` and flushes it to the server's disk.
    fn append_synced(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Renames `from` over `to` in one step: `to` is the old file or the
    /// new one, never missing.
    fn replace(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// The partial copies ([`temp_path`]'s names, of any pid) beside `log`
    /// unchanged for `idle`: left by compactions killed midway. None where
    /// the store cannot list its folder.
    fn stale_copies(&self, log: &Path, idle: Duration) -> io::Result<Vec<PathBuf>> {
        let _ = (log, idle);
        Ok(Vec::new())
    }
}

/// A partial copy unchanged for this long is no running compaction's: one
/// writes its copy, then catches up (appending) within seconds, and gives
/// up when the lock takes longer than `lock_timeout`.
pub const STALE_COPY_IDLE: Duration = Duration::from_secs(3600);

/// Whether `name` is one that [`temp_path`] gives for the log `log_name`.
pub fn is_copy_name(name: &str, log_name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_prefix(log_name))
        .and_then(|n| n.strip_prefix(".compact-"))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The compacted copy could not get the log's owner and group (only root,
/// or the owner within its groups, may set them): renamed over the log,
/// it would lock out the writers that append as the log's owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the log belongs to uid {uid} gid {gid}, but this user cannot give the new log \
     that owner (it would belong to uid {got_uid} gid {got_gid}, and the log's writers \
     could lose access): run compaction as the log's owner, or as root"
)]
pub struct OwnerNotKept {
    pub uid: u32,
    pub gid: u32,
    pub got_uid: u32,
    pub got_gid: u32,
}

impl OwnerNotKept {
    /// The error `LogStore::create` returns: refused, not an I/O failure.
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, self)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    OwnerNotKept(OwnerNotKept),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(
        "the log {0} was replaced or truncated while it was being compacted \
         (another compaction, or a rotation): it was left as it is"
    )]
    Replaced(PathBuf),
    #[error(
        "copying the tail under the lock took {took:?}, over half of stale_lock \
         ({stale_after:?}): gave up before the rename, the log was left as it is. \
         Is the file server slow?"
    )]
    TooSlow {
        took: Duration,
        stale_after: Duration,
    },
}

fn io_err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> CompactError + 'p {
    move |source| CompactError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// How to compact one log.
#[derive(Debug, Clone)]
pub struct CompactJob {
    pub log: PathBuf,
    pub rules: RetentionRules,
    /// This host's lock for its own writers (in the spool), taken before
    /// the cross-host one as writers take it; `None`: none.
    pub local_lock: Option<PathBuf>,
    pub owner: Owner,
    pub timings: LockTimings,
    /// Decide and report, write nothing.
    pub dry_run: bool,
}

/// What a compaction did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Lines of the log read before the lock, by fate.
    pub fates: BTreeMap<Fate, u64>,
    pub bytes_before: u64,
    /// The new log's size (in a dry run, what it would be without the
    /// tail written meanwhile).
    pub bytes_after: u64,
    /// Bytes appended by writers while compacting, copied as they were.
    pub tail_bytes: u64,
    /// How long the cross-host lock was held.
    pub locked_for: Duration,
}

impl Outcome {
    pub fn kept(&self) -> u64 {
        self.count(true)
    }

    pub fn dropped(&self) -> u64 {
        self.count(false)
    }

    fn count(&self, kept: bool) -> u64 {
        self.fates
            .iter()
            .filter(|(f, _)| f.is_kept() == kept)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The compacted copy's name: hidden, so that a follower looking for its
/// rotated log among `<name>.*` never takes it for one, and per process.
pub fn temp_path(log: &Path) -> PathBuf {
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    log.with_file_name(format!(".{name}.compact-{}", std::process::id()))
}

/// Compacts `job.log` at `now` through `store`, taking the cross-host lock
/// through `locks`. `on_line` sees each line read before the lock with its
/// fate (for `--dry-run`'s listing).
pub fn compact(
    store: &dyn LogStore,
    locks: &mut dyn LockFs,
    job: &CompactJob,
    now: DateTime<Utc>,
    on_line: &mut dyn FnMut(&[u8], Fate),
) -> Result<Outcome, CompactError> {
    let log = &job.log;
    let data = store
        .read_from(log, 0)
        .map_err(io_err("cannot read", log))?;
    let end = complete_lines(&data);
    let lines: Vec<&[u8]> = data[..end].split_inclusive(|b| *b == b'\n').collect();
    let fates = retention::plan(lines.iter().copied(), &job.rules, now);
    let mut outcome = Outcome {
        bytes_before: data.len() as u64,
        ..Outcome::default()
    };
    let mut kept = marker(now, &fates).into_bytes();
    for (line, fate) in lines.iter().zip(&fates) {
        on_line(line, *fate);
        *outcome.fates.entry(*fate).or_default() += 1;
        if fate.is_kept() {
            kept.extend_from_slice(line);
        }
    }
    outcome.bytes_after = kept.len() as u64;
    if job.dry_run {
        return Ok(outcome);
    }
    remove_stale_copies(store, log);
    let head = &data[..data.len().min(FINGERPRINT_MAX as usize)];
    let temp = TempCopy::new(store, temp_path(log));
    store
        .create(&temp.path, &kept, log)
        .map_err(|e| create_err(e, &temp.path))?;
    catch_up_and_replace(
        store,
        locks,
        job,
        head,
        end as u64,
        &temp.path,
        &mut outcome,
    )?;
    temp.renamed();
    Ok(outcome)
}

/// Removes the copies that compactions killed midway left beside `log`:
/// each holds as much space as the log. Failing is not fatal.
fn remove_stale_copies(store: &dyn LogStore, log: &Path) {
    let copies = match store.stale_copies(log, STALE_COPY_IDLE) {
        Ok(copies) => copies,
        Err(e) => {
            log::debug!(
                "cannot look for earlier partial copies of {}: {e}",
                log.display()
            );
            return;
        }
    };
    for copy in copies {
        match store.remove(&copy) {
            Ok(()) => log::info!(
                "removed {}, left by a compaction that was killed midway",
                copy.display()
            ),
            Err(e) => log::warn!(
                "cannot remove the stale partial copy {}: {e}",
                copy.display()
            ),
        }
    }
}

/// The compacted copy, removed when dropped unless it was renamed over the
/// log: a failure anywhere (out of space while writing it, the lock, a
/// rotation) must not leave a partial copy holding the space writers need.
struct TempCopy<'s> {
    store: &'s dyn LogStore,
    path: PathBuf,
    renamed: bool,
}

impl<'s> TempCopy<'s> {
    fn new(store: &'s dyn LogStore, path: PathBuf) -> Self {
        TempCopy {
            store,
            path,
            renamed: false,
        }
    }

    fn renamed(mut self) {
        self.renamed = true;
    }
}

impl Drop for TempCopy<'_> {
    fn drop(&mut self) {
        if !self.renamed
            && let Err(e) = self.store.remove(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!(
                "cannot remove the unfinished compacted copy {}: {e}",
                self.path.display()
            );
        }
    }
}

/// `create`'s failure as a compaction error: a refusal to change the log's
/// owner says so, anything else is an I/O error on the copy.
fn create_err(e: io::Error, temp: &Path) -> CompactError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<OwnerNotKept>())
    {
        Some(why) => CompactError::OwnerNotKept(why.clone()),
        None => io_err("cannot write the compacted copy", temp)(e),
    }
}

/// Copies what writers appended since `end` into `temp` (most of it
/// without the lock), then renames `temp` over the log under the lock.
fn catch_up_and_replace(
    store: &dyn LogStore,
    locks: &mut dyn LockFs,
    job: &CompactJob,
    head: &[u8],
    mut end: u64,
    temp: &Path,
    outcome: &mut Outcome,
) -> Result<(), CompactError> {
    let log = &job.log;
    for _ in 0..CATCH_UP_ROUNDS {
        let more = read_tail(store, log, head, end)?;
        let whole = complete_lines(&more);
        copy_tail(store, temp, &more[..whole], outcome)?;
        end += whole as u64;
        if more.len() < SMALL_TAIL {
            break;
        }
    }
    let start = Instant::now();
    let _local = job
        .local_lock
        .as_deref()
        .map(|path| LocalLock::acquire(path, job.timings.timeout))
        .transpose()?;
    let timings = LockTimings {
        timeout: job.timings.timeout.saturating_sub(start.elapsed()),
        ..job.timings
    };
    let lock = CrossHostLock::acquire(locks, &CrossHostLock::path_for(log), &job.owner, timings)?;
    let locked_at = Instant::now();
    // Under the lock, every byte: a line a dead writer left unfinished is
    // finished by the next writer's newline, as in the old log.
    let rest = read_tail(store, log, head, end)?;
    copy_tail(store, temp, &rest, outcome)?;
    let took = locked_at.elapsed();
    if took >= job.timings.stale_after / 2 {
        let _ = lock.release();
        return Err(CompactError::TooSlow {
            took,
            stale_after: job.timings.stale_after,
        });
    }
    store
        .replace(temp, log)
        .map_err(io_err("cannot rename the compacted copy over", log))?;
    outcome.locked_for = locked_at.elapsed();
    match lock.release() {
        Ok(true) => {}
        Ok(false) => log::warn!(
            "the lock on {} was broken as stale during compaction; raise stale_lock \
             if the file server is slow",
            log.display()
        ),
        Err(e) => log::warn!("compacted, but releasing the lock failed ({e})"),
    }
    Ok(())
}

/// The log's bytes from `end`, after checking that it is still the file
/// that was copied (same first bytes, at least as long).
fn read_tail(
    store: &dyn LogStore,
    log: &Path,
    head: &[u8],
    end: u64,
) -> Result<Vec<u8>, CompactError> {
    let now_head = store
        .head(log, head.len() as u64)
        .map_err(io_err("cannot read", log))?;
    if now_head != head {
        return Err(CompactError::Replaced(log.to_owned()));
    }
    store
        .read_from(log, end)
        .map_err(io_err("cannot read", log))
}

fn copy_tail(
    store: &dyn LogStore,
    temp: &Path,
    tail: &[u8],
    outcome: &mut Outcome,
) -> Result<(), CompactError> {
    store
        .append_synced(temp, tail)
        .map_err(io_err("cannot write the compacted copy", temp))?;
    outcome.tail_bytes += tail.len() as u64;
    outcome.bytes_after += tail.len() as u64;
    Ok(())
}

/// The length of `data` up to and with its last newline.
fn complete_lines(data: &[u8]) -> usize {
    data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
}

/// The new log's first line: when, how much, and a nonce that makes its
/// first bytes unlike any other log's.
fn marker(now: DateTime<Utc>, fates: &[Fate]) -> String {
    let kept = fates.iter().filter(|f| f.is_kept()).count();
    let mut nonce = [0u8; 8];
    // Without randomness the time and counts still tell most logs apart.
    let _ = getrandom::fill(&mut nonce);
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}at={} kept={kept} dropped={} nonce={nonce}\n",
        record::COMPACTED_PREFIX,
        now.to_rfc3339_opts(SecondsFormat::Millis, true),
        fates.len() - kept,
    )
}

/// The processes on this host (pid, name) that hold `log` open, when it
/// is on a FUSE mount (sshfs); empty elsewhere. FUSE renames over a file
/// that is open on its own host in two steps (the old file is first moved
/// aside as `.fuse_hidden*`, unless the mount has `hard_remove`), so a
/// compaction from such a host would leave the log missing for a moment:
/// writers would spool, watchers would retry. The CLI refuses then.
pub fn fuse_holders(log: &Path) -> Vec<(u32, String)> {
    let dir = match log.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_owned(),
        None => PathBuf::from("."),
    };
    if crate::follow::mode::blind_filesystem(&dir) != Some(FUSE) {
        return Vec::new();
    }
    let (Ok(dir), Some(name)) = (dir.canonicalize(), log.file_name()) else {
        return Vec::new();
    };
    let target = dir.join(name);
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Another user's descriptors cannot be read unless we are root.
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|p| p == target))
        {
            let name = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            holders.push((pid, name.trim().to_owned()));
        }
    }
    holders
}

/// How [`crate::follow::mode::blind_filesystem`] names FUSE.
const FUSE: &str = "fuse (sshfs)";

/// The log on a local path or a mounted share (sshfs, NFS).
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalStore;

impl LogStore for LocalStore {
    fn read_from(&self, path: &Path, offset: u64) -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        Ok(data)
    }

    fn head(&self, path: &Path, len: u64) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        File::open(path)?.take(len).read_to_end(&mut data)?;
        Ok(data)
    }

    fn create(&self, path: &Path, data: &[u8], like: &Path) -> io::Result<()> {
        use std::os::unix::fs::{MetadataExt, fchown};
        let old = fs::metadata(like)?;
        let mut file = File::create(path)?;
        let new = file.metadata()?;
        if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
            // Only root may give a file away, the owner only to its groups:
            // checked below, whatever the error.
            if let Err(e) = fchown(&file, Some(old.uid()), Some(old.gid())) {
                log::debug!("cannot give {} the log's owner: {e}", path.display());
            }
            let new = file.metadata()?;
            if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
                return Err(OwnerNotKept {
                    uid: old.uid(),
                    gid: old.gid(),
                    got_uid: new.uid(),
                    got_gid: new.gid(),
                }
                .into_io());
            }
        }
        // After the chown, which clears set-id bits.
        file.set_permissions(old.permissions())?;
        file.write_all(data)?;
        file.sync_all()
    }

    fn append_synced(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new().append(true).open(path)?;
        file.write_all(data)?;
        file.sync_all()
    }

    fn replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)?;
        // The rename itself durable where the folder can be synced (not
        // through every FUSE filesystem: best effort).
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn stale_copies(&self, log: &Path, idle: Duration) -> io::Result<Vec<PathBuf>> {
        let dir = match log.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir,
            None => Path::new("."),
        };
        let log_name = log.file_name().unwrap_or_default().to_string_lossy();
        let mut stale = Vec::new();
        for entry in fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            if !is_copy_name(&name.to_string_lossy(), &log_name) {
                continue;
            }
            let idle_for = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default());
            if idle_for.is_ok_and(|d| d >= idle) {
                stale.push(entry.path());
            }
        }
        Ok(stale)
    }
}

#[cfg(test)]
mod tests;
