//! The follower: which file to read, and noticing when the file at the path
//! is no longer the one being read.

use std::path::{Path, PathBuf};

use super::cursor::{Cursor, Fingerprint, ids_differ};
use super::error::FollowError;
use super::tail::{Batch, Line, Tail, Unread};
use super::{LogFile, LogFs, Meta};

/// Bytes asked for per read: one round trip on a network share.
const CHUNK: usize = 64 * 1024;
/// Events kept for [`Follower::take_events`] when nobody takes them.
const MAX_EVENTS: usize = 64;
/// Rotated files examined on resume, so a folder of thousands of old logs
/// cannot stall a start.
const MAX_SIBLINGS: usize = 64;

/// Something the caller may want to log. See [`Follower::take_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// The persisted cursor matched the log: reading on at `offset`.
    Resumed { offset: u64 },
    /// The persisted cursor matched a rotated file: reading its rest from
    /// `offset` first, then the log from the start.
    ResumedRotated { path: PathBuf, offset: u64 },
    /// No file matches the persisted cursor: reading the log from the
    /// start. Lines added to the old file after the cursor were missed.
    CursorLost { cursor: Cursor },
    /// The log became shorter than the position `offset`: reading it again
    /// from the start.
    Truncated { offset: u64 },
    /// Another file is at the path (rotation, compaction, re-creation): the
    /// old one is read to its end, then the new one from the start.
    Replaced,
    /// Another file is at the path, and ours was found renamed to `path`
    /// (by its first bytes): its rest is read from there, then the new file
    /// from the start.
    Renamed { path: PathBuf },
}

/// Where a poll's cheap look takes the log's size from: see
/// [`Follower::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeFrom {
    /// `fstat` of the open file: on sshfs one SFTP request, and it answers
    /// for the file now at the path (sshfs knows files by path).
    OpenFile,
    /// `stat` of the path: where `fstat` answers for the open file itself
    /// (a local disk, NFS, SFTP, where it is one request too), so that a
    /// file put at the path is seen by its identity or size.
    Path,
}

/// What a poll's cheap look found: see [`Follower::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The file is the size that was read.
    Unchanged,
    /// The file grew: the lines appended to it (perhaps none yet, if only
    /// part of a line came).
    Appended(Vec<Line>),
    /// Only [`Follower::read_lines`] can tell.
    LookFully,
}

/// What `banshare status` shows about the follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowState {
    /// The log's path.
    pub path: PathBuf,
    /// Whether the last call found a file at the path.
    pub present: bool,
    /// Whether a file is open (false after an error, until it is found again).
    pub open: bool,
    /// The position in the followed file (or in the cursor to resume from).
    pub offset: Option<u64>,
    /// A file that was at the path and is being read to its end first.
    pub draining: Option<PathBuf>,
    /// Whether the last call read everything there was.
    pub caught_up: bool,
}

/// The file at the path, as the last check found it.
enum Check {
    Present { size: u64 },
    Gone(FollowError),
}

/// Where a persisted cursor points.
enum Found<H> {
    Log,
    Sibling(Tail<H>),
    Nothing,
}

/// Reads each complete line of the log once, in order. See the module
/// documentation for the rules.
pub struct Follower<F: LogFs> {
    fs: F,
    path: PathBuf,
    /// The file at the path (as of the last check), once attached.
    current: Option<Tail<F::File>>,
    /// A file read to its end before `current`: the one that was replaced
    /// at the path, or a rotated file found on resume.
    draining: Option<Tail<F::File>>,
    /// Where to pick up when nothing is open: the cursor given to `new`, or
    /// where reading stopped when the share failed.
    resume: Option<Cursor>,
    chunk: Vec<u8>,
    events: Vec<FollowEvent>,
    present: bool,
    caught_up: bool,
}

impl<F: LogFs> Follower<F> {
    /// A follower of the log at `path`, resuming at `resume` (a cursor from
    /// [`Follower::cursor`] or [`Line::cursor`]), or from the start of the
    /// log. Nothing is opened until the first [`Follower::read_lines`].
    pub fn new(fs: F, path: PathBuf, resume: Option<Cursor>) -> Follower<F> {
        Follower {
            fs,
            path,
            current: None,
            draining: None,
            resume,
            chunk: vec![0; CHUNK],
            events: Vec::new(),
            present: false,
            caught_up: false,
        }
    }

    /// Resumes at `cursor` instead: the open files are given up, and the
    /// next [`Follower::read_lines`] finds the cursor's file again, as
    /// after a restart.
    pub fn resume_at(&mut self, cursor: Cursor) {
        self.detach(cursor);
    }

    /// Up to `max_lines` complete lines, in order, each after the last one
    /// handed out. Fewer means caught up, except when the call read
    /// `max_lines * (MAX_LINE_LEN + 1)` bytes without finishing enough
    /// lines (over-long lines); [`FollowState::caught_up`] tells for sure.
    ///
    /// An error means nothing was handed out; the follower keeps its place
    /// and the next call tries again. Lines read before an error are handed
    /// out, and the error comes back on the next call.
    pub fn read_lines(&mut self, max_lines: usize) -> Result<Vec<Line>, FollowError> {
        let mut batch = Batch::new(max_lines);
        self.caught_up = false;
        match self.fill(&mut batch) {
            Err(e) if batch.lines.is_empty() => Err(e),
            _ => Ok(batch.lines),
        }
    }

    /// The position after the last line handed out: what to persist once
    /// those lines are applied. `None` before anything was opened when no
    /// cursor was given.
    pub fn cursor(&self) -> Option<Cursor> {
        let reading = self.draining.as_ref().or(self.current.as_ref());
        reading.map(Tail::cursor).or(self.resume)
    }

    /// Where the follower stands, for status output.
    pub fn state(&self) -> FollowState {
        let current = self.current.as_ref();
        FollowState {
            path: self.path.clone(),
            present: self.present,
            open: current.is_some(),
            offset: current.map(Tail::offset).or(self.resume.map(|c| c.offset)),
            draining: self.draining.as_ref().map(|t| t.path.clone()),
            caught_up: self.caught_up,
        }
    }

    /// What the open files hold past the last line handed out (the file
    /// being drained, then the followed one), measured through them: their
    /// size, and the newlines from where reading stopped, through at most
    /// `count_max` bytes in all. Caught up, that is one `fstat` and one
    /// `read` that returns 0 per file, so it is cheap to ask often. Moves
    /// nothing: the next [`Follower::read_lines`] hands out those lines as
    /// if this had not been asked. `None` when no file is open (nothing
    /// attached yet, or given up after an error until the next call).
    /// As of the open files: another file put at the path since the last
    /// call is not looked at until then.
    pub fn unread(&mut self, count_max: u64) -> std::io::Result<Option<Unread>> {
        if self.current.is_none() {
            return Ok(None);
        }
        let mut budget = count_max;
        let mut total = Unread {
            bytes: 0,
            lines: Some(0),
        };
        for tail in [self.draining.as_mut(), self.current.as_mut()]
            .into_iter()
            .flatten()
        {
            let one = tail.unread(&mut self.chunk, &mut budget)?;
            total.bytes += one.bytes;
            total.lines = total.lines.zip(one.lines).map(|(a, b)| a + b);
        }
        Ok(Some(total))
    }

    /// A poll's cheap look: the log's size, from one `fstat` of the open
    /// file or one `stat` of the path (`from`), and when it grew, the lines
    /// appended to the open file, read through it after checking its first
    /// bytes (no fresh open). Through sshfs a poll where nothing changed is
    /// one SFTP request, and one that finds new lines about four, against
    /// about a dozen for [`Follower::read_lines`]'s full look. Either way
    /// the size is the path's file's, so a rotation, compaction or
    /// truncation shows as another size (or, from the path, another
    /// identity where the filesystem has one): shorter, it asks for the
    /// full look ([`Poll::LookFully`]); longer, reads through the open file
    /// end short of that size, which asks for it at the next call.
    ///
    /// [`Poll::LookFully`] also when nothing is open, a replaced file is
    /// still being drained, the last call did not read to the end or found
    /// nothing at the path, or anything fails (the full look reports and
    /// recovers). A file replaced by one of the same size (and, where the
    /// filesystem has no identities, the same first bytes) is seen only by
    /// the next full look.
    pub fn poll(&mut self, max_lines: usize, from: SizeFrom) -> Poll {
        // A log gone from its path stays an error until the full look
        // finds it again, though the open file still answers.
        if self.draining.is_some() || !self.caught_up || !self.present {
            return Poll::LookFully;
        }
        let Some(cur) = self.current.as_mut() else {
            return Poll::LookFully;
        };
        let read = cur.pos();
        let meta = match from {
            SizeFrom::OpenFile => cur.meta(),
            SizeFrom::Path => match self.fs.stat(&self.path) {
                Ok(meta) if ids_differ(cur.ids(), &meta) => return Poll::LookFully,
                other => other,
            },
        };
        let size = match meta {
            Ok(meta) if meta.size == read => return Poll::Unchanged,
            Ok(meta) if meta.size > read => meta.size,
            _ => return Poll::LookFully,
        };
        // Truncated and written past our position since: the full look
        // reads it again from 0.
        if !cur.starts_as_read().unwrap_or(false) {
            return Poll::LookFully;
        }
        let mut batch = Batch::new(max_lines);
        self.caught_up = match cur.read(&mut self.chunk, &mut batch) {
            // Short of the size the path showed: another file is there.
            Ok(eof) => eof && cur.pos() >= size,
            Err(_) => false,
        };
        match batch.lines.is_empty() && !self.caught_up {
            true => Poll::LookFully,
            false => Poll::Appended(batch.lines),
        }
    }

    /// What happened since the last call (resumes, truncations,
    /// replacements), oldest first, for the caller to log.
    pub fn take_events(&mut self) -> Vec<FollowEvent> {
        std::mem::take(&mut self.events)
    }

    fn fill(&mut self, batch: &mut Batch) -> Result<(), FollowError> {
        if self.current.is_none() {
            self.attach()?;
        }
        // A replaced file is read to its end before the path is looked at
        // again. `current` stays open meanwhile, so a second replacement is
        // still noticed, and drained, once this one is done.
        if !self.drain(batch)? {
            return Ok(());
        }
        let size = match self.check()? {
            Check::Present { size } => size,
            Check::Gone(gone) => return self.read_orphan(batch, gone),
        };
        if !self.drain(batch)? || !self.read_current(batch)? {
            return Ok(());
        }
        // At the end of our file, yet the path's file was longer before we
        // read: it is another file with the same first bytes (a copy put in
        // place, seen where inode numbers cannot tell).
        if self.current.as_ref().is_some_and(|cur| cur.pos() < size) {
            let (file, meta) = self.open_path()?;
            self.switch(file, &meta, None);
            if self.drain(batch)? {
                self.read_current(batch)?;
            }
        }
        Ok(())
    }

    /// The path is gone, but the open file may still hold lines written
    /// before it was deleted.
    fn read_orphan(&mut self, batch: &mut Batch, gone: FollowError) -> Result<(), FollowError> {
        self.read_current(batch)?;
        if batch.lines.is_empty() {
            Err(gone)
        } else {
            Ok(())
        }
    }

    /// Reads the file being drained, if any; true once there is none left.
    fn drain(&mut self, batch: &mut Batch) -> Result<bool, FollowError> {
        let Some(old) = self.draining.as_mut() else {
            return Ok(true);
        };
        match old.read(&mut self.chunk, batch) {
            // Its unfinished last line, if any, stays unfinished: the
            // writers have moved to the new file.
            Ok(true) => {
                self.draining = None;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => {
                let err = FollowError::new("read", &old.path, e);
                let cursor = old.cursor();
                self.detach(cursor);
                Err(err)
            }
        }
    }

    /// Reads the followed file; true at its end.
    fn read_current(&mut self, batch: &mut Batch) -> Result<bool, FollowError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(false);
        };
        match cur.read(&mut self.chunk, batch) {
            Ok(eof) => {
                self.caught_up = eof;
                Ok(eof)
            }
            Err(e) => {
                let err = FollowError::new("read", &cur.path, e);
                let cursor = cur.cursor();
                self.detach(cursor);
                Err(err)
            }
        }
    }

    /// Gives up the open files after an I/O error on one: a share that
    /// reconnects invalidates them. The next call finds the file again from
    /// `cursor`, as after a restart.
    fn detach(&mut self, cursor: Cursor) {
        self.current = None;
        self.draining = None;
        self.resume = Some(cursor);
    }

    /// Looks at our file and at the path: truncation of our file (even
    /// where it was deleted since), or another file at the path.
    fn check(&mut self) -> Result<Check, FollowError> {
        let truncated = self.check_truncated()?;
        let meta = match self.fs.stat(&self.path) {
            Ok(meta) => meta,
            Err(e) => {
                if truncated {
                    self.restart_current();
                }
                self.present = false;
                return Ok(Check::Gone(FollowError::new("stat", &self.path, e)));
            }
        };
        self.present = true;
        if truncated {
            // On sshfs an open file renamed away tells the size of the new
            // file at the path, so a rotation looks like a truncation: ours
            // may be beside the log under its new name.
            if let Some(renamed) = self.renamed(true) {
                let (file, new_meta) = self.open_path()?;
                self.switch(file, &new_meta, Some(renamed));
                return Ok(Check::Present { size: meta.size });
            }
            if let Some((file, new_meta)) = self.replaced_while_open()? {
                self.switch(file, &new_meta, None);
                return Ok(Check::Present { size: meta.size });
            }
            self.restart_current();
        }
        if let Some((file, new_meta)) = self.replacement(&meta)? {
            // Only an open file that cannot tell its own end is finished
            // from a sibling found by its first bytes alone: elsewhere that
            // may be an older copy (`newbans.log.bak`) that lacks our tail.
            let untrusted = self.open_file_answers_for_the_path(&new_meta);
            let renamed = self.renamed(untrusted);
            self.switch(file, &new_meta, renamed);
        }
        Ok(Check::Present { size: meta.size })
    }

    /// The file at the path, opened, when ours was replaced while open
    /// rather than truncated: our open file still starts with the bytes we
    /// read, and the path's file does not. On sshfs an open file renamed
    /// over (a compaction, which removes it) tells the size of the shorter
    /// new file, so the replacement looks like a truncation; and reads
    /// through it may go on past that size, so reading it again from 0
    /// would find the same end and "truncation" again, for ever.
    fn replaced_while_open(&mut self) -> Result<Option<(F::File, Meta)>, FollowError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(None);
        };
        let fingerprint = cur.fingerprint();
        if fingerprint.len == 0 || !cur.starts_as_read().unwrap_or(false) {
            return Ok(None);
        }
        self.open_if_other(&fingerprint)
    }

    /// Whether our file lost bytes we read, as far as the open file tells.
    fn check_truncated(&mut self) -> Result<bool, FollowError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(false);
        };
        match cur.truncated() {
            Ok(truncated) => Ok(truncated),
            Err(e) => {
                let err = FollowError::new("stat", &cur.path, e);
                let cursor = cur.cursor();
                self.detach(cursor);
                Err(err)
            }
        }
    }

    /// The file at the path, opened, when it is not the one we follow:
    /// known identities differ, it is shorter than what we read of ours
    /// (which is whole), or its first bytes differ. Equal identities are
    /// not enough: sshfs gives a new file at the same path the same inode.
    fn replacement(&mut self, meta: &Meta) -> Result<Option<(F::File, Meta)>, FollowError> {
        let Some(cur) = self.current.as_ref() else {
            return Ok(None);
        };
        let fingerprint = cur.fingerprint();
        if ids_differ(cur.ids(), meta) || meta.size < cur.pos() {
            return self.open_path().map(Some);
        }
        if fingerprint.len == 0 {
            // Nothing read yet, so nothing to tell the files apart by.
            return Ok(None);
        }
        self.open_if_other(&fingerprint)
    }

    /// The file at the path, opened, if its first bytes are not the ones
    /// `fingerprint` took of ours.
    fn open_if_other(
        &mut self,
        fingerprint: &Fingerprint,
    ) -> Result<Option<(F::File, Meta)>, FollowError> {
        let (mut file, new_meta) = self.open_path()?;
        match fingerprint.matches(&mut file) {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some((file, new_meta))),
            Err(e) => Err(FollowError::new("read", &self.path, e)),
        }
    }

    /// Whether our open file answers with the identity of the file now at
    /// the path (`path_meta`), as on sshfs, or with none we can tell apart
    /// from it, or not at all: then its size and reads may stop at the new
    /// file's, and its rest is to be found under its new name. On a local
    /// disk or NFS it tells its own, which differs.
    fn open_file_answers_for_the_path(&mut self, path_meta: &Meta) -> bool {
        let Some(cur) = self.current.as_mut() else {
            return false;
        };
        match cur.meta() {
            Ok(own) => !ids_differ((own.dev, own.ino), path_meta),
            Err(_) => true,
        }
    }

    /// Starts our file again from 0: it lost bytes we read.
    fn restart_current(&mut self) {
        if let Some(cur) = self.current.as_mut() {
            let offset = cur.offset();
            cur.restart();
            self.event(FollowEvent::Truncated { offset });
        }
    }

    /// Our file, found renamed beside the log (`<name>.1`, `<name>-date`):
    /// a sibling with its first bytes, at least as long as our offset, the
    /// one with its identity first. Opened afresh under its new name, it
    /// shows its true size, which the open file may not: on sshfs an open
    /// file tells the size of whatever is now at its old path, and reads
    /// through it may stop there. `None` when nothing was read yet (no
    /// first bytes to tell it by) or nothing matches. Without
    /// `by_first_bytes`, only a sibling with its identity counts.
    fn renamed(&mut self, by_first_bytes: bool) -> Option<Tail<F::File>> {
        let cursor = self.current.as_ref()?.cursor();
        if cursor.fingerprint.len == 0 {
            return None;
        }
        let siblings = self.siblings();
        self.sibling_match(&cursor, &siblings, true).or_else(|| {
            by_first_bytes
                .then(|| self.sibling_match(&cursor, &siblings, false))
                .flatten()
        })
    }

    /// Follows `file` from 0, after reading the one it replaced to its end:
    /// from `renamed`, where it was found under a new name, else through
    /// the open file.
    fn switch(&mut self, file: F::File, meta: &Meta, renamed: Option<Tail<F::File>>) {
        let fresh = Tail::start(file, self.path.clone(), meta);
        let old = self.current.replace(fresh);
        // `draining` is empty: the path is only checked once it is.
        match renamed {
            Some(renamed) => {
                self.event(FollowEvent::Renamed {
                    path: renamed.path.clone(),
                });
                self.draining = Some(renamed);
            }
            None => {
                self.draining = old;
                self.event(FollowEvent::Replaced);
            }
        }
    }

    fn open_path(&mut self) -> Result<(F::File, Meta), FollowError> {
        let opened = self.fs.open(&self.path).and_then(|mut file| {
            let meta = file.meta()?;
            Ok((file, meta))
        });
        let opened = opened.map_err(|e| FollowError::new("open", &self.path, e));
        self.present = !matches!(&opened, Err(e) if e.is_missing());
        opened
    }

    /// Opens the log and finds where to start: at the cursor, in a rotated
    /// file first, or at 0.
    fn attach(&mut self) -> Result<(), FollowError> {
        let (mut file, meta) = self.open_path()?;
        let Some(cursor) = self.resume else {
            self.current = Some(Tail::start(file, self.path.clone(), &meta));
            return Ok(());
        };
        match self.find(&cursor, &mut file, &meta)? {
            Found::Log => self.resume_log(file, &meta, &cursor),
            Found::Sibling(old) => {
                self.event(FollowEvent::ResumedRotated {
                    path: old.path.clone(),
                    offset: cursor.offset,
                });
                self.draining = Some(old);
                self.current = Some(Tail::start(file, self.path.clone(), &meta));
            }
            Found::Nothing => {
                self.event(FollowEvent::CursorLost { cursor });
                self.current = Some(Tail::start(file, self.path.clone(), &meta));
            }
        }
        self.resume = None;
        Ok(())
    }

    fn resume_log(&mut self, file: F::File, meta: &Meta, cursor: &Cursor) {
        let tail = if meta.size < cursor.offset {
            self.event(FollowEvent::Truncated {
                offset: cursor.offset,
            });
            Tail::start(file, self.path.clone(), meta)
        } else {
            self.event(FollowEvent::Resumed {
                offset: cursor.offset,
            });
            Tail::resume(file, self.path.clone(), meta, cursor)
        };
        self.current = Some(tail);
    }

    /// Which file the cursor points into. The fingerprint decides; among
    /// files that match it, one with the same identity wins, then the log,
    /// then rotated siblings in name order. (Identities alone decide
    /// nothing: a remount renumbers them, and sshfs's are per path.)
    fn find(
        &mut self,
        cursor: &Cursor,
        log: &mut F::File,
        meta: &Meta,
    ) -> Result<Found<F::File>, FollowError> {
        let log_matches = cursor
            .fingerprint
            .matches(log)
            .map_err(|e| FollowError::new("read", &self.path, e))?;
        if log_matches && cursor.same_file(meta) {
            return Ok(Found::Log);
        }
        let siblings = self.siblings();
        if let Some(old) = self.sibling_match(cursor, &siblings, true) {
            return Ok(Found::Sibling(old));
        }
        if log_matches {
            return Ok(Found::Log);
        }
        let old = self.sibling_match(cursor, &siblings, false);
        Ok(old.map_or(Found::Nothing, Found::Sibling))
    }

    /// The first of `siblings` that holds the cursor's file, opened at the
    /// cursor; with `same_file`, only among those with its identity.
    fn sibling_match(
        &mut self,
        cursor: &Cursor,
        siblings: &[PathBuf],
        same_file: bool,
    ) -> Option<Tail<F::File>> {
        for path in siblings {
            if same_file && !self.fs.stat(path).is_ok_and(|m| cursor.same_file(&m)) {
                continue;
            }
            if let Some(old) = self.open_sibling(path, cursor) {
                return Some(old);
            }
        }
        None
    }

    /// `path` opened at the cursor if it matches the fingerprint and is
    /// long enough. Errors count as no match: a rotated file is only a
    /// chance to catch up, and the log itself is still there.
    fn open_sibling(&mut self, path: &Path, cursor: &Cursor) -> Option<Tail<F::File>> {
        let mut file = self.fs.open(path).ok()?;
        let meta = file.meta().ok()?;
        let fits = meta.size >= cursor.offset && cursor.fingerprint.matches(&mut file).ok()?;
        fits.then(|| Tail::resume(file, path.to_path_buf(), &meta, cursor))
    }

    /// Rotated copies of the log beside it, `<name>.*` and `<name>-*`
    /// (not the appenders' lock files), in natural order: `.2` before `.10`.
    fn siblings(&mut self) -> Vec<PathBuf> {
        let Some(name) = self.path.file_name().and_then(|n| n.to_str()) else {
            return Vec::new();
        };
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // An unreadable folder leaves the log itself to resume in.
        let Ok(entries) = self.fs.list_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .into_iter()
            .filter(|e| is_rotated(name, e))
            .collect();
        names.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        names.truncate(MAX_SIBLINGS);
        names.into_iter().map(|n| dir.join(n)).collect()
    }

    fn event(&mut self, event: FollowEvent) {
        if self.events.len() < MAX_EVENTS {
            self.events.push(event);
        }
    }
}

/// Whether `entry` names a rotated copy of the log `log`.
pub(super) fn is_rotated(log: &str, entry: &str) -> bool {
    let Some(rest) = entry.strip_prefix(log) else {
        return false;
    };
    let suffix = rest.starts_with('.') || rest.starts_with('-');
    suffix && rest.len() > 1 && !matches!(rest, ".lock" | ".lock.break")
}
