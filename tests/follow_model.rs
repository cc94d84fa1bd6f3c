//! A model-based test of the follower, in the style of vector's file-source
//! model test: random sequences of operations on a real folder, the real
//! follower beside a model of what it must deliver.
//!
//! # Operations
//!
//! `Append(n)` n complete lines (finishing a pending partial line first),
//! `AppendLong` one line over the length limit, `AppendPartial` the first
//! part of a line, `Truncate`, `Rotate` (rename to `.1`, replacing an older
//! `.1`, and create an empty log), `Compact(k)` (a new file holding the last
//! k complete lines, renamed over the log), `Delete`, `Create`,
//! `DeleteRecreate`, `Poll(max)` (call `read_lines(max)` until caught up or
//! an error: the lines are "applied"), `Restart(k)` (a crash after applying
//! only the first k lines of the last poll: a new follower from the cursor
//! after line k), `ShareDown` / `ShareUp` (every filesystem call of the
//! follower fails with ENOTCONN meanwhile, open files included). Every line
//! is unique: it starts with its sequence number. Truncate, Rotate, Compact
//! and Delete abandon a pending partial line: it is never finished.
//!
//! Every file ever created keeps a hard link in `graveyard/`, so inode
//! numbers are never reused and "same inode" means "same file" here.
//!
//! # The model
//!
//! The model follower tracks, per followed file: the offset after the last
//! delivered line, the read position (end of file at the last read), and the
//! fingerprinted prefix (the first min(1024, end of file) bytes as of the
//! first read that reached past it). A poll (with the share up):
//!
//! 1. If nothing is followed, the log (if present) is attached: without a
//!    cursor at 0; with one, the file it points into is, in order, the log
//!    when it starts with the cursor's prefix and is the cursor's file; `.1`
//!    when it is the cursor's file, starts with the prefix and is at least
//!    the offset long; the log when it starts with the prefix; `.1` when it
//!    starts with the prefix and is long enough. The log resumes at the
//!    offset (at 0 if shorter than the offset); `.1` is read from the offset
//!    to its end and then the log from 0; no match reads the log from 0.
//! 2. A followed file that is shorter than the read position or no longer
//!    starts with its prefix is read again from 0 (deleted or not), unless
//!    the log is present and `.1` holds the followed file ("renamed": `.1`
//!    starts with the non-empty prefix and is at least the offset long):
//!    then `.1` is read from the offset to its end and the log followed
//!    from 0; or unless it still starts with its (non-empty) prefix and the
//!    log does not ("replaced while open", a compaction seen through sshfs):
//!    then it is read to the end it shows and the log followed from 0. Then, if the log is present and is another file, the followed
//!    file is read to its end (its unfinished last line dropped; from `.1`
//!    at the offset if `.1` holds it and is the followed file, or, where
//!    the open file cannot tell its own identity (sshfs, no inode numbers),
//!    merely starts with the prefix) and the log followed from 0.
//!    "Another file": the inode differs (where the filesystem has inode
//!    numbers), or the log is shorter than the read position, or it does
//!    not start with the (non-empty) prefix.
//! 3. The followed file is read to its end: every complete line after the
//!    offset is delivered, with the cursor after it.
//! 4. If the log is longer than the followed file's end, it is another file
//!    (a copy with the same first bytes): it is followed from 0 and read.
//!
//! On sshfs (`TestFs::sshfs`), a file opened at the log's path shows
//! only as much of itself as the file now at that path holds (both for its
//! size and for reads), so a rotated file looks truncated or ends early
//! unless it is read from `.1`; with nothing at the log's path, it fails
//! to tell its size, so a poll delivers nothing and forgets the open file,
//! keeping its cursor, as with the share down.
//!
//! With the share down, a poll delivers nothing and the follower forgets its
//! open file, keeping its cursor: the next poll attaches as in 1.
//!
//! So lines that exist in a file when the follower reads it are delivered;
//! lines destroyed by Truncate before a poll read them are not; lines of a
//! rotated-away or compacted-away file that was still followed are; after a
//! Restart, the rest of the cursor's file is delivered if it is the log or
//! `.1`, and lost if it is no longer there under either name. Compaction and
//! "no match" re-read lines already delivered.
//!
//! # Checks
//!
//! With inode numbers, after every poll the delivered lines (bytes and
//! per-line cursors) and the follower's cursor equal the model's; likewise
//! on sshfs (run with inode numbers: the size an open file reports is what
//! is modelled there).
//!
//! Without inode numbers (as on SFTP) the same operations run with only the
//! checks below: there, when the followed file's prefix is still empty, a
//! replacement is seen only by the next `read_lines` call, so the follower
//! depends on how a poll splits into calls and the one-step model does not
//! fit.
//!
//! At the end (share up, two final polls):
//! every delivered line was written whole (never a partial line, never an
//! unwritten one); after dropping lines delivered before (the watcher drops
//! them by record id), the sequence numbers rise strictly, in the order of
//! writing; every complete line of the final log was delivered. Across the
//! run, each interesting path (rotated resume, lost cursor, truncation,
//! replacement, missing log, unreachable share, over-long line) is taken at
//! least once.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use banshare::follow::{
    Cursor, FINGERPRINT_MAX, Fingerprint, FollowError, FollowEvent, Follower, Line, LocalFs,
    LogFile, LogFs, Meta,
};
use banshare::record::MAX_LINE_LEN;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const LOG: &str = "newbans.log";
const ROTATED: &str = "newbans.log.1";
const FP_MAX: usize = FINGERPRINT_MAX as usize;

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    AppendLong,
    AppendPartial(u8),
    Truncate,
    Rotate,
    /// Lines kept; `u8::MAX` keeps them all (a copy with the same prefix).
    Compact(u8),
    Delete,
    Create,
    DeleteRecreate,
    Poll(u8),
    Restart(u8),
    ShareDown,
    ShareUp,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..=3).prop_map(Op::Append),
        1 => Just(Op::AppendLong),
        3 => any::<u8>().prop_map(Op::AppendPartial),
        2 => Just(Op::Truncate),
        2 => Just(Op::Rotate),
        2 => prop_oneof![0u8..4, Just(u8::MAX)].prop_map(Op::Compact),
        1 => Just(Op::Delete),
        1 => Just(Op::Create),
        1 => Just(Op::DeleteRecreate),
        7 => (1u8..=8).prop_map(Op::Poll),
        2 => any::<u8>().prop_map(Op::Restart),
        1 => Just(Op::ShareDown),
        1 => Just(Op::ShareUp),
    ]
}

/// Line `seq` without its newline: unique, starting with a tag that differs
/// between neighbours (so a new file's first bytes differ from an old one's
/// at once) and then its number.
fn line_text(seq: u64, long: bool) -> Vec<u8> {
    let tag = (seq.wrapping_mul(0x9e37_79b9) >> 16) & 0xffff;
    let mut line = format!("{tag:04x}-{seq:06} ").into_bytes();
    let pad = if long {
        MAX_LINE_LEN + 1 + seq as usize - line.len()
    } else {
        (seq as usize * 7) % 40
    };
    line.resize(line.len() + pad, if long { b'y' } else { b'x' });
    line
}

/// The sequence number a delivered line stands for.
fn seq_of(item: &Item) -> Option<u64> {
    match item {
        Item::Text(bytes) => std::str::from_utf8(bytes.get(5..11)?).ok()?.parse().ok(),
        Item::TooLong(len) => len.checked_sub(MAX_LINE_LEN as u64 + 1),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Text(Vec<u8>),
    TooLong(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    item: Item,
    cursor: Cursor,
}

impl From<Line> for Delivered {
    fn from(line: Line) -> Delivered {
        match line {
            Line::Complete { bytes, cursor } => Delivered {
                item: Item::Text(bytes),
                cursor,
            },
            Line::TooLong { len, cursor } => Delivered {
                item: Item::TooLong(len),
                cursor,
            },
        }
    }
}

// The folder: real files and what they hold.

struct DiskFile {
    content: Vec<u8>,
    dev: u64,
    ino: u64,
}

/// A line whose first part is in the log and whose rest is not yet.
struct Pending {
    seq: u64,
    line: Vec<u8>,
    written: usize,
}

struct Disk {
    dir: tempfile::TempDir,
    /// Whether the filesystem reports inode numbers (SFTP does not).
    ids: bool,
    /// Whether open files answer as on sshfs (see `TestFs::sshfs`).
    sshfs: bool,
    files: Vec<DiskFile>,
    log: Option<usize>,
    rotated: Option<usize>,
    pending: Option<Pending>,
    next_seq: u64,
    /// Every line written whole, by sequence number.
    complete: Vec<Option<Vec<u8>>>,
}

impl Disk {
    fn new(ids: bool, sshfs: bool) -> Disk {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("graveyard")).unwrap();
        let mut disk = Disk {
            dir,
            ids,
            sshfs,
            files: Vec::new(),
            log: None,
            rotated: None,
            pending: None,
            next_seq: 0,
            complete: Vec::new(),
        };
        disk.log = Some(disk.create(LOG));
        disk
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates an empty file, kept alive in the graveyard.
    fn create(&mut self, name: &str) -> usize {
        let id = self.files.len();
        File::create(self.path(name)).unwrap();
        fs::hard_link(self.path(name), self.path(&format!("graveyard/{id}"))).unwrap();
        let meta = fs::metadata(self.path(name)).unwrap();
        let (dev, ino) = if self.ids {
            (meta.dev(), meta.ino())
        } else {
            (0, 0)
        };
        self.files.push(DiskFile {
            content: Vec::new(),
            dev,
            ino,
        });
        id
    }

    fn content(&self, id: usize) -> &[u8] {
        &self.files[id].content
    }

    /// What a file opened at the log's path shows: on sshfs, nothing past
    /// the size of the file now at that path.
    fn visible(&self, id: usize) -> &[u8] {
        let content = self.content(id);
        match self.log {
            Some(log) if self.sshfs => &content[..content.len().min(self.content(log).len())],
            _ => content,
        }
    }

    /// The rotated file `.1` if it holds the file `cur` reads: it starts
    /// with the (non-empty) prefix and holds the offset.
    fn renamed(&self, cur: &MTail) -> Option<usize> {
        let holds = |r: usize| {
            let content = self.content(r);
            content.starts_with(&cur.prefix) && content.len() >= cur.offset
        };
        self.rotated.filter(|&r| !cur.prefix.is_empty() && holds(r))
    }

    fn cursor(&self, c: &MCursor) -> Cursor {
        let file = &self.files[c.file];
        Cursor {
            dev: file.dev,
            ino: file.ino,
            fingerprint: Fingerprint::of(&c.prefix),
            offset: c.offset as u64,
        }
    }

    /// Whether the follower can tell that `log` is not the file `cur` reads:
    /// identities differ, or `log` is shorter than what was read, or starts
    /// otherwise.
    fn another_file(&self, cur: &MTail, log: usize) -> bool {
        let content = self.content(log);
        (self.ids && log != cur.file)
            || content.len() < cur.pos
            || (!cur.prefix.is_empty() && !content.starts_with(&cur.prefix))
    }

    fn write_log(&mut self, bytes: &[u8]) {
        let Some(log) = self.log else { return };
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.path(LOG))
            .unwrap();
        f.write_all(bytes).unwrap();
        self.files[log].content.extend_from_slice(bytes);
    }

    fn new_line(&mut self, long: bool) -> (u64, Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.complete.push(None);
        (seq, line_text(seq, long))
    }

    /// Appends whole lines, finishing the pending one first.
    fn append(&mut self, count: usize, long: bool) {
        if self.log.is_none() {
            return;
        }
        let mut bytes = Vec::new();
        if let Some(p) = self.pending.take() {
            bytes.extend_from_slice(&p.line[p.written..]);
            self.complete[p.seq as usize] = Some(p.line[..p.line.len() - 1].to_vec());
        }
        for _ in 0..count {
            let (seq, line) = self.new_line(long);
            bytes.extend_from_slice(&line);
            bytes.push(b'\n');
            self.complete[seq as usize] = Some(line);
        }
        self.write_log(&bytes);
    }

    fn append_partial(&mut self, cut: u8) {
        if self.log.is_none() || self.pending.is_some() {
            return;
        }
        let (seq, mut line) = self.new_line(false);
        line.push(b'\n');
        // At least one byte, never the newline.
        let written = 1 + usize::from(cut) % (line.len() - 1);
        self.write_log(&line[..written]);
        self.pending = Some(Pending { seq, line, written });
    }

    fn truncate(&mut self) {
        let Some(log) = self.log else { return };
        OpenOptions::new()
            .write(true)
            .open(self.path(LOG))
            .unwrap()
            .set_len(0)
            .unwrap();
        self.files[log].content.clear();
        self.pending = None;
    }

    fn rotate(&mut self) {
        if self.log.is_none() {
            return;
        }
        fs::rename(self.path(LOG), self.path(ROTATED)).unwrap();
        self.rotated = self.log;
        self.log = Some(self.create(LOG));
        self.pending = None;
    }

    fn compact(&mut self, keep: u8) {
        let Some(log) = self.log else { return };
        let content = &self.files[log].content;
        let whole = content
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let lines: Vec<&[u8]> = content[..whole].split_inclusive(|&b| b == b'\n').collect();
        let kept = lines[lines.len().saturating_sub(usize::from(keep))..].concat();
        let id = self.create("compact.tmp");
        fs::write(self.path("compact.tmp"), &kept).unwrap();
        self.files[id].content = kept;
        fs::rename(self.path("compact.tmp"), self.path(LOG)).unwrap();
        self.log = Some(id);
        self.pending = None;
    }

    fn delete(&mut self) {
        if self.log.take().is_some() {
            fs::remove_file(self.path(LOG)).unwrap();
            self.pending = None;
        }
    }

    fn recreate(&mut self) {
        if self.log.is_none() {
            self.log = Some(self.create(LOG));
        }
    }
}

// The model follower.

#[derive(Debug, Clone)]
struct MCursor {
    file: usize,
    offset: usize,
    prefix: Vec<u8>,
}

struct MTail {
    file: usize,
    /// Opened at the log's path (else at `.1`, where it still is).
    at_log: bool,
    offset: usize,
    /// End of file at the last read.
    pos: usize,
    prefix: Vec<u8>,
}

impl MTail {
    fn start(file: usize) -> MTail {
        MTail {
            file,
            at_log: true,
            offset: 0,
            pos: 0,
            prefix: Vec::new(),
        }
    }

    /// Opened at `.1`, at the cursor.
    fn resume_rotated(file: usize, c: &MCursor) -> MTail {
        MTail {
            at_log: false,
            ..MTail::resume(file, c)
        }
    }

    fn resume(file: usize, c: &MCursor) -> MTail {
        MTail {
            file,
            at_log: true,
            offset: c.offset,
            pos: c.offset,
            prefix: c.prefix.clone(),
        }
    }

    fn cursor(&self) -> MCursor {
        MCursor {
            file: self.file,
            offset: self.offset,
            prefix: self.prefix.clone(),
        }
    }

    fn content<'d>(&self, disk: &'d Disk) -> &'d [u8] {
        if self.at_log {
            disk.visible(self.file)
        } else {
            disk.content(self.file)
        }
    }

    /// Whether ours still starts with the bytes read (as far as it shows)
    /// while the file at the log's path does not.
    fn replaced_while_open(&self, disk: &Disk, log: usize) -> bool {
        !self.prefix.is_empty()
            && self.content(disk).starts_with(&self.prefix)
            && !disk.content(log).starts_with(&self.prefix)
    }

    fn truncated(&self, disk: &Disk) -> bool {
        let content = self.content(disk);
        content.len() < self.pos || !content.starts_with(&self.prefix)
    }

    fn read(&mut self, disk: &Disk, out: &mut Vec<(Item, MCursor)>) {
        let content = self.content(disk);
        // The prefix grows on the first read past it.
        if content.len() > self.pos && self.pos <= self.prefix.len() && self.prefix.len() < FP_MAX {
            self.prefix = content[..content.len().min(FP_MAX)].to_vec();
        }
        while let Some(end) = content[self.offset..].iter().position(|&b| b == b'\n') {
            let line = &content[self.offset..self.offset + end];
            self.offset += end + 1;
            let item = if line.len() > MAX_LINE_LEN {
                Item::TooLong(line.len() as u64)
            } else {
                Item::Text(line.to_vec())
            };
            out.push((item, self.cursor()));
        }
        self.pos = content.len();
    }
}

#[derive(Default)]
struct Model {
    current: Option<MTail>,
    resume: Option<MCursor>,
}

impl Model {
    fn cursor(&self) -> Option<MCursor> {
        self.current
            .as_ref()
            .map(MTail::cursor)
            .or(self.resume.clone())
    }

    fn poll(&mut self, disk: &Disk, up: bool) -> Vec<(Item, MCursor)> {
        let mut out = Vec::new();
        if !up {
            if let Some(cur) = self.current.take() {
                self.resume = Some(cur.cursor());
            }
            return out;
        }
        if self.current.is_none() {
            let Some(log) = disk.log else { return out };
            self.attach(disk, log, &mut out);
        }
        let Some(cur) = self.current.as_mut() else {
            return out;
        };
        if disk.sshfs && disk.log.is_none() {
            // Asked about itself, the open file says its path is gone: the
            // follower lets it go and looks for it again from its cursor.
            self.resume = Some(cur.cursor());
            self.current = None;
            return out;
        }
        let truncated = cur.truncated(disk);
        let Some(log) = disk.log else {
            if truncated {
                *cur = MTail::start(cur.file);
            }
            cur.read(disk, &mut out);
            return out;
        };
        // Ours renamed to `.1` (where the open file shows only what the
        // path holds, it looks truncated): the rest is read from `.1`.
        let renamed = disk.renamed(cur);
        if truncated {
            match renamed {
                Some(r) => {
                    MTail::resume_rotated(r, &cur.cursor()).read(disk, &mut out);
                    *cur = MTail::start(log);
                }
                // Replaced while open (a compaction seen through sshfs):
                // ours still starts as read and the log does not, so ours
                // is finished as far as it shows and the log read from 0,
                // rather than ours again from 0.
                None if cur.replaced_while_open(disk, log) => {
                    if cur.content(disk).len() >= cur.offset {
                        cur.read(disk, &mut out);
                    }
                    *cur = MTail::start(log);
                }
                None => *cur = MTail::start(cur.file),
            }
        }
        if disk.another_file(cur, log) {
            // Where the open file tells its own identity (not sshfs), only
            // `.1` that is that file is read from; a copy with its first
            // bytes may lack its tail, or be compacted (other offsets).
            let renamed = renamed.filter(|&r| disk.sshfs || !disk.ids || r == cur.file);
            match renamed {
                Some(r) => MTail::resume_rotated(r, &cur.cursor()).read(disk, &mut out),
                None => cur.read(disk, &mut out),
            }
            *cur = MTail::start(log);
        }
        cur.read(disk, &mut out);
        // Where identities cannot tell, a copy with our first bytes shows by
        // being longer than what we could read.
        if cur.pos < disk.content(log).len() {
            *cur = MTail::start(log);
            cur.read(disk, &mut out);
        }
        out
    }

    fn attach(&mut self, disk: &Disk, log: usize, out: &mut Vec<(Item, MCursor)>) {
        let Some(c) = self.resume.take() else {
            self.current = Some(MTail::start(log));
            return;
        };
        let starts = |file: usize| disk.content(file).starts_with(&c.prefix);
        let fits = |file: usize| starts(file) && disk.content(file).len() >= c.offset;
        let same = |file: usize| disk.ids && file == c.file;
        let rotated =
            |only_same: bool| disk.rotated.filter(|&r| (!only_same || same(r)) && fits(r));
        if starts(log) && same(log) {
            self.resume_log(disk, log, &c);
        } else if let Some(old) = rotated(true) {
            self.drain_then(disk, old, log, &c, out);
        } else if starts(log) {
            self.resume_log(disk, log, &c);
        } else if let Some(old) = rotated(false) {
            self.drain_then(disk, old, log, &c, out);
        } else {
            self.current = Some(MTail::start(log));
        }
    }

    fn resume_log(&mut self, disk: &Disk, log: usize, c: &MCursor) {
        let short = disk.content(log).len() < c.offset;
        self.current = Some(if short {
            MTail::start(log)
        } else {
            MTail::resume(log, c)
        });
    }

    fn drain_then(
        &mut self,
        disk: &Disk,
        old: usize,
        log: usize,
        c: &MCursor,
        out: &mut Vec<(Item, MCursor)>,
    ) {
        MTail::resume_rotated(old, c).read(disk, out);
        self.current = Some(MTail::start(log));
    }
}

// The share: the local filesystem, failing every call while it is down,
// and without inode numbers if asked (as SFTP).

#[path = "../src/follow/test_fs.rs"]
mod test_fs;
use test_fs::TestFs as Share;

// Running a case.

/// How often each interesting path was taken, over the whole run.
#[derive(Default)]
struct Coverage {
    resumed_rotated: AtomicUsize,
    cursor_lost: AtomicUsize,
    truncated: AtomicUsize,
    replaced: AtomicUsize,
    renamed: AtomicUsize,
    missing: AtomicUsize,
    unreachable: AtomicUsize,
    too_long: AtomicUsize,
    duplicates: AtomicUsize,
}

impl Coverage {
    fn events(&self, events: Vec<FollowEvent>) {
        for event in events {
            let counter = match event {
                FollowEvent::ResumedRotated { .. } => &self.resumed_rotated,
                FollowEvent::CursorLost { .. } => &self.cursor_lost,
                FollowEvent::Truncated { .. } => &self.truncated,
                FollowEvent::Replaced => &self.replaced,
                FollowEvent::Renamed { .. } => &self.renamed,
                FollowEvent::Resumed { .. } => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn error(&self, e: &FollowError) {
        match e {
            FollowError::Missing { .. } => self.missing.fetch_add(1, Ordering::Relaxed),
            FollowError::Unreachable { .. } => self.unreachable.fetch_add(1, Ordering::Relaxed),
            FollowError::Io { .. } => 0,
        };
    }
}

/// `read_lines(max)` until caught up or an error, as the watcher does.
fn poll<F: LogFs>(
    f: &mut Follower<F>,
    max: u8,
    cov: &Coverage,
) -> Result<Vec<Delivered>, TestCaseError> {
    let mut got = Vec::new();
    for _ in 0..10_000 {
        match f.read_lines(usize::from(max)) {
            Ok(lines) => {
                prop_assert!(lines.len() <= usize::from(max));
                got.extend(lines.into_iter().map(Delivered::from));
                if f.state().caught_up {
                    return Ok(got);
                }
            }
            Err(e) => {
                prop_assert!(
                    !matches!(e, FollowError::Io { .. }),
                    "unexpected error: {}",
                    e
                );
                cov.error(&e);
                return Ok(got);
            }
        }
    }
    Err(TestCaseError::fail("read_lines never caught up"))
}

/// The last poll's cursors, for a restart that applied only some of its
/// lines: the real follower's ([`Cursor`]) or the model's ([`MCursor`]).
struct LastPoll<C> {
    before: Option<C>,
    lines: Vec<C>,
    end: Option<C>,
}

impl<C: Clone> LastPoll<C> {
    /// Nothing polled since the follower started at `at`.
    fn at(at: Option<C>) -> LastPoll<C> {
        LastPoll {
            before: at.clone(),
            lines: Vec::new(),
            end: at,
        }
    }

    /// Where a crash after applying the first `applied` lines resumes.
    fn cursor_after(&self, applied: usize) -> Option<C> {
        match applied {
            0 => self.before.clone(),
            n if n >= self.lines.len() => self.end.clone(),
            n => self.lines.get(n - 1).cloned(),
        }
    }
}

fn run(ops: &[Op], ids: bool, sshfs: bool, cov: &Coverage) -> Result<(), TestCaseError> {
    let mut disk = Disk::new(ids, sshfs);
    let share = Share {
        no_ids: !ids,
        sshfs,
        ..Share::default()
    };
    let mut real = Follower::new(share.clone(), disk.path(LOG), None);
    let mut model = Model::default();
    let mut applied: Vec<Item> = Vec::new();
    let mut last = LastPoll::at(None);
    let mut model_last = LastPoll::at(None);

    // Two final polls: without inode numbers, a file replaced while we had
    // read none of it is told apart only once we have.
    let finish = [Op::ShareUp, Op::Poll(8), Op::Poll(8)];
    for op in ops.iter().chain(&finish) {
        match *op {
            Op::Append(n) => disk.append(usize::from(n), false),
            Op::AppendLong => disk.append(1, true),
            Op::AppendPartial(cut) => disk.append_partial(cut),
            Op::Truncate => disk.truncate(),
            Op::Rotate => disk.rotate(),
            Op::Compact(keep) => disk.compact(keep),
            Op::Delete => disk.delete(),
            Op::Create => disk.recreate(),
            Op::DeleteRecreate => {
                disk.delete();
                disk.recreate();
            }
            Op::ShareDown => share.down.store(true, Ordering::SeqCst),
            Op::ShareUp => share.down.store(false, Ordering::SeqCst),
            Op::Poll(max) => {
                let before = (real.cursor(), model.cursor());
                let got = poll(&mut real, max, cov)?;
                cov.events(real.take_events());
                let want = model.poll(&disk, !share.down.load(Ordering::SeqCst));
                if ids {
                    let want: Vec<Delivered> = want
                        .iter()
                        .map(|(item, c)| Delivered {
                            item: item.clone(),
                            cursor: disk.cursor(c),
                        })
                        .collect();
                    prop_assert_eq!(&got, &want, "the lines of this poll");
                    let model_cursor = model.cursor().map(|c| disk.cursor(&c));
                    prop_assert_eq!(real.cursor(), model_cursor, "the cursor after this poll");
                }
                last = LastPoll {
                    before: before.0,
                    lines: got.iter().map(|d| d.cursor).collect(),
                    end: real.cursor(),
                };
                model_last = LastPoll {
                    before: before.1,
                    lines: want.into_iter().map(|(_, c)| c).collect(),
                    end: model.cursor(),
                };
                applied.extend(got.into_iter().map(|d| d.item));
            }
            Op::Restart(k) => {
                let kept = usize::from(k) % (last.lines.len() + 1);
                applied.truncate(applied.len() - (last.lines.len() - kept));
                let resume = last.cursor_after(kept);
                real = Follower::new(share.clone(), disk.path(LOG), resume);
                let model_resume = model_last.cursor_after(kept);
                model = Model {
                    current: None,
                    resume: model_resume.clone(),
                };
                last = LastPoll::at(resume);
                model_last = LastPoll::at(model_resume);
            }
        }
    }
    check_applied(&disk, &applied, cov)
}

/// Whole, written lines only; in the order of writing once duplicates are
/// dropped; and everything the final log holds.
fn check_applied(disk: &Disk, applied: &[Item], cov: &Coverage) -> Result<(), TestCaseError> {
    let mut seen = HashSet::new();
    let mut newest = None;
    for item in applied {
        let seq = seq_of(item);
        let written = seq.and_then(|s| disk.complete.get(s as usize)?.as_ref());
        let Some(line) = written else {
            return Err(TestCaseError::fail(format!(
                "delivered a line never written whole: {item:?}"
            )));
        };
        match item {
            Item::Text(bytes) => prop_assert_eq!(bytes, line),
            Item::TooLong(len) => {
                prop_assert_eq!(*len, line.len() as u64);
                cov.too_long.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !seen.insert(seq) {
            cov.duplicates.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        prop_assert!(newest < seq, "{:?} delivered after {:?}", seq, newest);
        newest = seq;
    }
    if let Some(log) = disk.log {
        let whole = disk
            .content(log)
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| l.ends_with(b"\n"));
        for line in whole.map(|l| &l[..l.len() - 1]) {
            let item = if line.len() > MAX_LINE_LEN {
                Item::TooLong(line.len() as u64)
            } else {
                Item::Text(line.to_vec())
            };
            prop_assert!(
                seen.contains(&seq_of(&item)),
                "a line of the final log was never delivered"
            );
        }
    }
    Ok(())
}

/// Runs 256 cases, then checks that each interesting path was taken.
fn check_model(ids: bool, sshfs: bool) {
    let config = Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let cov = Coverage::default();
    let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        run(&ops, ids, sshfs, &cov)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let taken = [
        ("resume in a rotated file", &cov.resumed_rotated),
        ("cursor lost", &cov.cursor_lost),
        ("truncation", &cov.truncated),
        ("replacement", &cov.replaced),
        ("rotated file found by its first bytes", &cov.renamed),
        ("missing log", &cov.missing),
        ("unreachable share", &cov.unreachable),
        ("over-long line", &cov.too_long),
        ("duplicate after a re-read", &cov.duplicates),
    ];
    for (what, count) in taken {
        let count = count.load(Ordering::Relaxed);
        eprintln!("{what}: {count}");
        assert!(count > 0, "no case took the path: {what}");
    }
}

#[test]
fn the_follower_delivers_what_the_model_says() {
    check_model(true, false);
}

/// The same without inode numbers, as on SFTP: only first bytes and sizes
/// tell files apart.
#[test]
fn the_follower_delivers_what_the_model_says_without_inode_numbers() {
    check_model(false, false);
}

/// The same where an open file tells the size of the file now at its path
/// and reads through it stop there, as on sshfs after a rotation by rename:
/// the old file's rest is read from its new name.
#[test]
fn the_follower_delivers_what_the_model_says_on_sshfs() {
    check_model(true, true);
}
