//! Writing small files so that a crash leaves either the old content or the
//! new, never a mix: a temporary file in the same folder, fsync, rename over
//! the target, fsync the folder. [`replace`] skips the fsyncs, for files
//! whose loss in a host crash costs nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `data` atomically and durably. The file is created
/// with `mode` if new.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_with(path, mode, |out| out.write_all(data))
}

/// As [`write_atomic`], with the content written by `fill` straight to the
/// file, so that large content is never built in memory first.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    replace_with(path, mode, Sync::Durably, fill)
}

/// Replaces `path` with `data` atomically (a reader or a killed writer
/// sees the old content or the new), without fsync: for a file that only
/// reports, which a host crash may leave old or empty, and is written
/// again soon after (the watcher's status).
pub fn replace(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    replace_with(path, mode, Sync::No, |out| out.write_all(data))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sync {
    Durably,
    No,
}

fn replace_with(
    path: &Path,
    mode: u32,
    sync: Sync,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = write_file(&tmp, mode, sync, fill).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    match sync {
        Sync::Durably => sync_dir(dir),
        Sync::No => Ok(()),
    }
}

fn write_file(
    path: &Path,
    mode: u32,
    sync: Sync,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    let mut out = io::BufWriter::with_capacity(64 * 1024, file);
    fill(&mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    match sync {
        Sync::Durably => file.sync_all(),
        Sync::No => Ok(()),
    }
}

/// Makes a rename or create in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor.json");
        super::write_atomic(&path, b"one", 0o600).unwrap();
        super::write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
