//! A test double of the log's filesystem, shared by the follower's unit
//! tests (`src/follow/tests.rs`) and its model test
//! (`tests/follow_model.rs`), which include this file with `#[path]`. The
//! including module brings the follow API (`LocalFs`, `LogFile`, `LogFs`,
//! `Meta`) into scope: `crate::follow` there, `banshare::follow` here.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{LocalFs, LogFile, LogFs, Meta};

/// [`LocalFs`] that can hide inode numbers (as SFTP has none) and fail
/// every call, open files included, as a share that went away.
#[derive(Clone, Default)]
pub struct TestFs {
    pub no_ids: bool,
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
    fs: TestFs,
}

impl LogFile for TestFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.fs.check()?;
        self.file.read_at(offset, buf)
    }

    fn meta(&mut self) -> io::Result<Meta> {
        self.fs.check()?;
        Ok(self.fs.meta(self.file.meta()?))
    }
}

impl LogFs for TestFs {
    type File = TestFile;

    fn open(&mut self, path: &Path) -> io::Result<TestFile> {
        self.check()?;
        Ok(TestFile {
            file: LocalFs.open(path)?,
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
