//! Reading one open file into complete lines, keeping an unfinished last
//! line until its newline arrives, and never holding more than
//! [`MAX_LINE_LEN`] bytes of one line.

use std::io;
use std::path::PathBuf;

use super::cursor::{Cursor, Fingerprint};
use super::{LogFile, Meta};
use crate::record::MAX_LINE_LEN;

/// One complete line of the log, with the cursor right after it: persisting
/// that cursor after applying this line (and those before it) resumes with
/// the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The line without its newline.
    Complete { bytes: Vec<u8>, cursor: Cursor },
    /// A line over [`MAX_LINE_LEN`] bytes (without the newline): its bytes
    /// were discarded as they arrived; `len` is how long it was.
    TooLong { len: u64, cursor: Cursor },
}

impl Line {
    /// Where to resume after this line.
    pub fn cursor(&self) -> &Cursor {
        match self {
            Line::Complete { cursor, .. } | Line::TooLong { cursor, .. } => cursor,
        }
    }
}

/// What the followed files hold past the last line handed out. See
/// [`Follower::unread`](super::Follower::unread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unread {
    /// Bytes, an unfinished last line included.
    pub bytes: u64,
    /// Complete lines; `None` when they were not counted (more bytes to
    /// look through than the caller allowed).
    pub lines: Option<u64>,
}

/// The lines gathered by one `read_lines` call, and what it may still take.
pub(super) struct Batch {
    pub lines: Vec<Line>,
    max: usize,
    /// Bytes this call may still read: a flood of over-long lines (or one
    /// endless line) yields no lines, yet must not hold the caller forever.
    budget: usize,
}

impl Batch {
    pub fn new(max: usize) -> Batch {
        let budget = max.saturating_mul(MAX_LINE_LEN + 1);
        Batch {
            lines: Vec::new(),
            max,
            budget,
        }
    }

    fn full(&self) -> bool {
        self.lines.len() >= self.max
    }
}

/// A file being read: its handle, identity and position.
pub(super) struct Tail<H> {
    pub file: H,
    /// Where it was opened, for messages and status.
    pub path: PathBuf,
    dev: u64,
    ino: u64,
    fingerprint: Fingerprint,
    /// Right after the last line handed out.
    offset: u64,
    /// The unfinished line's first bytes (at most MAX_LINE_LEN of them).
    partial: Vec<u8>,
    /// The unfinished line's full length so far, kept bytes or not.
    partial_len: u64,
}

impl<H: LogFile> Tail<H> {
    /// Starts at the beginning of `file`.
    pub fn start(file: H, path: PathBuf, meta: &Meta) -> Tail<H> {
        Tail {
            file,
            path,
            dev: meta.dev,
            ino: meta.ino,
            fingerprint: Fingerprint::EMPTY,
            offset: 0,
            partial: Vec::new(),
            partial_len: 0,
        }
    }

    /// Continues `file` where `cursor` stood; the caller checked that the
    /// file matches the cursor's fingerprint and holds its offset.
    pub fn resume(file: H, path: PathBuf, meta: &Meta, cursor: &Cursor) -> Tail<H> {
        Tail {
            fingerprint: cursor.fingerprint,
            offset: cursor.offset,
            ..Tail::start(file, path, meta)
        }
    }

    pub fn ids(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// What the open file says of itself now (on sshfs: of whatever file
    /// is at the path it was opened at).
    pub fn meta(&mut self) -> io::Result<Meta> {
        self.file.meta()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Where the next read starts: past the unfinished line.
    pub fn pos(&self) -> u64 {
        self.offset.saturating_add(self.partial_len)
    }

    /// The bytes past the last line handed out and, if the rest of the file
    /// fits in `budget` bytes, the complete lines among them; reads from
    /// [`Tail::pos`] into `buf`, taking what it reads from `budget`. Takes
    /// the larger of the file's size and the end that reading found: sizes
    /// from `stat` may be stale on a network share.
    pub fn unread(&mut self, buf: &mut [u8], budget: &mut u64) -> io::Result<Unread> {
        let size = self.file.meta()?.size;
        let mut at = self.pos();
        let mut lines = 0u64;
        let counted = loop {
            if *budget == 0 {
                break false;
            }
            let want = buf
                .len()
                .min(usize::try_from(*budget).unwrap_or(usize::MAX));
            let n = self.file.read_at(at, &mut buf[..want])?;
            if n == 0 {
                break true;
            }
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            at += n as u64;
            *budget -= n as u64;
        };
        Ok(Unread {
            bytes: size.max(at).saturating_sub(self.offset),
            lines: counted.then_some(lines),
        })
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            dev: self.dev,
            ino: self.ino,
            fingerprint: self.fingerprint,
            offset: self.offset,
        }
    }

    /// Goes back to the start of the file, forgetting what it held.
    pub fn restart(&mut self) {
        self.fingerprint = Fingerprint::EMPTY;
        self.offset = 0;
        self.partial.clear();
        self.partial_len = 0;
    }

    /// Whether the open file lost bytes we read: it is shorter than our
    /// position, or its first bytes changed (truncated, then written again
    /// past our position before we looked).
    /// Whether the open file still starts with the bytes we read there.
    pub fn starts_as_read(&mut self) -> io::Result<bool> {
        self.fingerprint.matches(&mut self.file)
    }

    pub fn truncated(&mut self) -> io::Result<bool> {
        if self.file.meta()?.size < self.pos() {
            return Ok(true);
        }
        Ok(!self.fingerprint.matches(&mut self.file)?)
    }

    /// Reads complete lines into `batch` until the end of the file (true),
    /// or until the batch is full or out of budget (false).
    pub fn read(&mut self, chunk: &mut [u8], batch: &mut Batch) -> io::Result<bool> {
        while !batch.full() && batch.budget > 0 {
            let at = self.pos();
            // Read until read says 0: the size from stat may be stale.
            let n = self.file.read_at(at, chunk)?;
            if n == 0 {
                return Ok(true);
            }
            let data = &chunk[..n.min(chunk.len())];
            self.fingerprint.extend(at, data);
            batch.budget = batch.budget.saturating_sub(data.len());
            self.split(data, batch);
        }
        Ok(false)
    }

    /// Hands out the complete lines in `data`. When the batch fills up, the
    /// rest of `data` is dropped: the next call reads it again from `pos()`.
    fn split(&mut self, mut data: &[u8], batch: &mut Batch) {
        while !batch.full() {
            match memchr::memchr(b'\n', data) {
                Some(end) => {
                    let line = self.finish(&data[..end]);
                    batch.lines.push(line);
                    data = &data[end + 1..];
                }
                None => {
                    self.keep(data);
                    return;
                }
            }
        }
    }

    /// Adds to the unfinished line, keeping no more than a line may hold.
    fn keep(&mut self, bytes: &[u8]) {
        let room = (MAX_LINE_LEN + 1).saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.partial_len = self.partial_len.saturating_add(bytes.len() as u64);
    }

    /// The unfinished line ends with `last`, just before a newline.
    fn finish(&mut self, last: &[u8]) -> Line {
        let len = self.partial_len.saturating_add(last.len() as u64);
        self.offset = self.offset.saturating_add(len).saturating_add(1);
        self.partial_len = 0;
        let cursor = self.cursor();
        if len > MAX_LINE_LEN as u64 {
            self.partial.clear();
            return Line::TooLong { len, cursor };
        }
        // Most lines arrive whole within one read: one copy, of exactly
        // the line's length. The buffer of a split line stays for the next.
        let bytes = if self.partial.is_empty() {
            last.to_vec()
        } else {
            self.partial.extend_from_slice(last);
            let bytes = self.partial.clone();
            self.partial.clear();
            bytes
        };
        Line::Complete { bytes, cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in memory.
    struct Mem(Vec<u8>);

    impl LogFile for Mem {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            let rest = self.0.get(offset as usize..).unwrap_or_default();
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            Ok(n)
        }

        fn meta(&mut self) -> io::Result<Meta> {
            Ok(Meta {
                dev: 0,
                ino: 0,
                size: self.0.len() as u64,
            })
        }
    }

    #[test]
    fn an_endless_line_is_never_held_whole() {
        let mut data = vec![b'x'; 1 << 20];
        let meta = Meta {
            dev: 0,
            ino: 0,
            size: 0,
        };
        let mut tail = Tail::start(Mem(data.clone()), PathBuf::new(), &meta);
        let mut chunk = vec![0; 4096];
        let mut batch = Batch::new(usize::MAX);
        assert!(tail.read(&mut chunk, &mut batch).unwrap());
        assert!(batch.lines.is_empty());
        assert!(
            tail.partial.capacity() <= 2 * (MAX_LINE_LEN + 1),
            "{}",
            tail.partial.capacity()
        );
        assert_eq!(tail.pos(), 1 << 20);
        assert_eq!(tail.offset(), 0);

        data.extend_from_slice(b"\nok\n");
        tail.file = Mem(data);
        assert!(tail.read(&mut chunk, &mut batch).unwrap());
        let lens: Vec<_> = batch
            .lines
            .iter()
            .map(|l| match l {
                Line::TooLong { len, .. } => *len,
                Line::Complete { bytes, .. } => bytes.len() as u64,
            })
            .collect();
        assert_eq!(lens, [1 << 20, 2]);
        assert!(matches!(batch.lines[0], Line::TooLong { .. }));
        assert_eq!(batch.lines[1].cursor().offset, (1 << 20) + 4);
    }

    #[test]
    fn the_budget_bounds_one_call() {
        let meta = Meta {
            dev: 0,
            ino: 0,
            size: 0,
        };
        let mut tail = Tail::start(Mem(vec![b'x'; 1 << 20]), PathBuf::new(), &meta);
        let mut chunk = vec![0; 1024];
        let mut batch = Batch::new(2);
        assert!(
            !tail.read(&mut chunk, &mut batch).unwrap(),
            "stops before the end"
        );
        assert_eq!(tail.pos(), 2 * (MAX_LINE_LEN as u64 + 1) + 1022);
    }
}
