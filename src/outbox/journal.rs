//! The journal: each run of `banshare ban` or `unban` writes its records to
//! a file of its own in the spool folder before delivery starts, so that
//! nothing is lost if the run is killed or hangs on a frozen mount.
//!
//! A journal is named like a spool batch, `<µs>-<pid>-<seq>.journal`, so
//! that it sorts with them. Its owner holds an exclusive `flock` on it for
//! as long as it lives (the lock dies with the last process holding the
//! file open), which is how [`claim_orphans`] tells a live run from a dead
//! one: a journal nobody holds locked is an orphan, and becomes an
//! `uncertain` spool batch, because its run may have written part or all of
//! it before dying.
//!
//! The common path costs no fsync: the journal is written with one `write`
//! and removed once delivery is confirmed. It is fsynced only when the run
//! returns without confirmed delivery, so a host crash in the milliseconds
//! of a successful delivery can lose it, as fail2ban's own database
//! (`synchronous=OFF`) can.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::durable;

/// The extension of a journal file.
pub const JOURNAL: &str = "journal";

/// A journal this process owns and holds locked.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Writes `batch` to a new journal in `dir`, named `<name>.journal`.
    ///
    /// The file is written and locked under a temporary name first, so that
    /// no flush can see it unlocked and take it for an orphan.
    pub fn create(dir: &Path, name: &str, batch: &[u8]) -> io::Result<Journal> {
        let tmp = dir.join(format!(".{name}.{JOURNAL}.tmp"));
        let path = dir.join(format!("{name}.{JOURNAL}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let written = file
            .lock()
            .and_then(|()| (&file).write_all(batch))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Journal { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the journal survive a host crash: its data, and its name.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()?;
        durable::sync_dir(self.dir())
    }

    /// Delivery is confirmed: the journal is no longer needed.
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_file(&self.path)
    }

    /// Turns the journal into a spool batch at `target`, durably: the batch
    /// must not come back as a journal (or vanish) after a power loss.
    pub fn move_to(&self, target: &Path) -> io::Result<()> {
        self.file.sync_data()?;
        fs::rename(&self.path, target)?;
        durable::sync_dir(self.dir())
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Renames every orphan journal in `dir` (one whose run is dead: no process
/// holds its lock) to the spool batch `rename_to` names for it, durably, and
/// returns how many. Journals of live runs are left to them.
pub fn claim_orphans(dir: &Path, rename_to: impl Fn(&Path) -> PathBuf) -> io::Result<usize> {
    let mut claimed = 0;
    for dirent in fs::read_dir(dir)? {
        let path = dirent?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(JOURNAL) {
            continue;
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            // Delivered and removed by its run since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => return Err(e),
        }
        // Locked by us now, so no run can still own it; its dead owner may
        // not have synced it.
        file.sync_data()?;
        match fs::rename(&path, rename_to(&path)) {
            Ok(()) => claimed += 1,
            // Its run moved it to the spool just before dying.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    if claimed > 0 {
        durable::sync_dir(dir)?;
    }
    Ok(claimed)
}

/// The journals in `dir`, of live runs and dead ones.
pub fn paths(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for dirent in fs::read_dir(dir)? {
        let path = dirent?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(JOURNAL) {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// Whether `dir` holds a journal whose run is dead.
pub fn has_orphans(dir: &Path) -> io::Result<bool> {
    for dirent in fs::read_dir(dir)? {
        let path = dirent?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(JOURNAL) {
            continue;
        }
        if let Ok(file) = File::open(&path)
            && file.try_lock().is_ok()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_journal_is_left_and_an_unlocked_one_is_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let live = Journal::create(dir.path(), "1", b"one\n").unwrap();
        let rename_to = |p: &Path| p.with_extension("uncertain");
        assert!(!has_orphans(dir.path()).unwrap());
        assert_eq!(claim_orphans(dir.path(), rename_to).unwrap(), 0);
        assert!(live.path().exists(), "a live run's journal stays");

        drop(live); // the run died: its lock went with it
        assert!(has_orphans(dir.path()).unwrap());
        assert_eq!(claim_orphans(dir.path(), rename_to).unwrap(), 1);
        assert_eq!(fs::read(dir.path().join("1.uncertain")).unwrap(), b"one\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn removed_after_delivery_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        Journal::create(dir.path(), "1", b"one\n")
            .unwrap()
            .remove()
            .unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
