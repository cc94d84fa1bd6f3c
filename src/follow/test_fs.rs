//! A test double of the log's filesystem, shared by the library's unit
//! tests (`crate::follow::test_fs`: the follower's, compaction's) and the
//! follower's model test (`tests/follow_model.rs`, which includes this file
//! with `#[path]`). The parent module brings the follow API (`LocalFs`,
//! `LogFile`, `LogFs`, `Meta`) into scope: `crate::follow` in the library,
//! `banshare::follow` in the model test.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{LocalFs, LogFile, LogFs, Meta};

/// [`LocalFs`] that can hide inode numbers (as SFTP has none), answer for
/// open files as sshfs does, and fail every call, open files included, as
/// a share that went away.
#[derive(Clone, Default)]
pub struct TestFs {
    pub no_ids: bool,
    /// As on sshfs, which knows files by path: an open file's `meta()`
    /// tells about the file now at the path it was opened at (its size,
    /// its identity), or fails with ENOENT if nothing is there; reads
    /// through it return nothing past that size (all of the file if
    /// nothing is there).
    pub sshfs: bool,
    /// With `sshfs`: reads through an open file go on to its own end,
    /// past the size it tells (as they did in a cluster test once the
    /// kernel's attribute cache had the old size).
    pub reads_past_size: bool,
    /// While set, every call fails with ENOTCONN.
    pub down: Arc<AtomicBool>,
}

impl TestFs {
    #[allow(dead_code)] // the model test builds its own
    pub fn no_ids() -> TestFs {
        TestFs {
            no_ids: true,
            ..TestFs::default()
        }
    }

    fn check(&self) -> io::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
        }
        Ok(())
    }

    fn meta(&self, meta: Meta) -> Meta {
        if self.no_ids {
            Meta {
                dev: 0,
                ino: 0,
                ..meta
            }
        } else {
            meta
        }
    }
}

pub struct TestFile {
    file: File,
    /// Where it was opened.
    path: PathBuf,
    fs: TestFs,
}

impl TestFile {
    /// What the file says about itself: on sshfs, what the path says.
    fn own_meta(&mut self) -> io::Result<Meta> {
        if !self.fs.sshfs {
            return self.file.meta();
        }
        LocalFs.stat(&self.path)
    }
}

impl LogFile for TestFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.fs.check()?;
        if !self.fs.sshfs || self.fs.reads_past_size {
            return self.file.read_at(offset, buf);
        }
        let size = self.own_meta().map_or(u64::MAX, |m| m.size);
        let room = size.saturating_sub(offset).min(buf.len() as u64) as usize;
        self.file.read_at(offset, &mut buf[..room])
    }

    fn meta(&mut self) -> io::Result<Meta> {
        self.fs.check()?;
        let meta = self.own_meta()?;
        Ok(self.fs.meta(meta))
    }
}

impl LogFs for TestFs {
    type File = TestFile;

    fn open(&mut self, path: &Path) -> io::Result<TestFile> {
        self.check()?;
        Ok(TestFile {
            file: LocalFs.open(path)?,
            path: path.to_path_buf(),
            fs: self.clone(),
        })
    }

    fn stat(&mut self, path: &Path) -> io::Result<Meta> {
        self.check()?;
        Ok(self.meta(LocalFs.stat(path)?))
    }

    fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        self.check()?;
        LocalFs.list_dir(dir)
    }
}
