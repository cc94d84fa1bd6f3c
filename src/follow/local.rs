//! [`LogFs`] on the local filesystem, which includes mounted shares.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::{LocalFs, LogFile, LogFs, Meta};

fn meta(m: &fs::Metadata) -> Meta {
    Meta {
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
    }
}

impl LogFile for File {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match FileExt::read_at(self, buf, offset) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn meta(&mut self) -> io::Result<Meta> {
        self.metadata().map(|m| meta(&m))
    }
}

impl LogFs for LocalFs {
    type File = File;

    fn open(&mut self, path: &Path) -> io::Result<File> {
        // O_NONBLOCK: a FIFO put at the log's path must not hang the watcher
        // in open(). It changes nothing for regular files.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(file)
    }

    fn stat(&mut self, path: &Path) -> io::Result<Meta> {
        fs::metadata(path).map(|m| meta(&m))
    }

    fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            // A name that is not UTF-8 is no rotated log of ours.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }
}
