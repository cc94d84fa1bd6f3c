//! The publisher's own log: every record it accepted, numbered by its place.
//!
//! A directory with two files:
//!
//! - `records.log`: one record line per line, the text format of
//!   newbans.log; record `seq` 1 is the first line. After a compaction
//!   ([`RecordLog::compact`]) a line `# banshare-gap N` stands for N
//!   records dropped there, so that every record keeps its number and
//!   subscribers their place (a record is never renumbered);
//! - `epoch`: 16 hex digits, random, made with the log, so that subscribers
//!   can tell a new log from a restarted publisher (see
//!   [`crate::transport::zmq::wire`]).
//!
//! A batch is appended with one `write` and one `fsync`, before anyone is
//! told it is stored. A crash in the middle of a write leaves a last line
//! without its newline: it was never acknowledged, so opening the log cuts
//! it off. Reading for catch-up starts from an index of byte offsets kept
//! every [`INDEX_STRIDE`] records, so memory stays small (8 bytes per
//! thousand records) and a read never scans from the start.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::transport::zmq::wire::Epoch;
use crate::watch::policy::retention;

/// The log's file name in the data directory.
pub const RECORDS_FILE: &str = "records.log";

/// The epoch's file name in the data directory.
pub const EPOCH_FILE: &str = "epoch";

/// Records between two entries of the offset index.
pub const INDEX_STRIDE: u64 = 1000;

/// How a line standing for records compaction dropped starts; the count
/// follows.
pub const GAP_PREFIX: &str = "# banshare-gap ";

/// How many record numbers `line` (without its newline) stands for: 1 for
/// a record, N for a gap line.
fn numbers_in(line: &[u8]) -> u64 {
    line.strip_prefix(GAP_PREFIX.as_bytes())
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.trim_end().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// Why the log cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {why}")]
    Corrupt { path: PathBuf, why: &'static str },
    #[error("cannot make an epoch: {0}")]
    Random(#[from] getrandom::Error),
}

/// The open log.
#[derive(Debug)]
pub struct RecordLog {
    path: PathBuf,
    file: File,
    epoch: Epoch,
    /// The last record's number (0: none).
    last: u64,
    /// The file's length: where the next record starts.
    len: u64,
    /// `index[k]`: the offset of the line holding record
    /// `k * INDEX_STRIDE + 1` (a gap line may hold it), and the number of
    /// the record before that line.
    index: Vec<(u64, u64)>,
}

impl RecordLog {
    /// Opens the log in `dir`, making it (with a new epoch) if it has none.
    pub fn open(dir: &Path) -> Result<RecordLog, LogError> {
        let path = dir.join(RECORDS_FILE);
        let io = |source| LogError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let scan = scan(&file).map_err(io)?;
        if scan.torn > 0 {
            // Never acknowledged: the fsync that precedes every reply had
            // not returned.
            log::warn!(
                "{}: cutting off {} bytes of a last line left by a crash mid-write (never acknowledged)",
                path.display(),
                scan.torn
            );
            file.set_len(scan.len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let epoch = load_or_make_epoch(dir, scan.last)?;
        Ok(RecordLog {
            path,
            file,
            epoch,
            last: scan.last,
            len: scan.len,
            index: scan.index,
        })
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The last record's number (0: the log is empty).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Appends `lines` (without newlines) with one write and one fsync;
    /// returns the number of the first. On an error nothing is counted as
    /// stored, and the file is cut back to where it was.
    pub fn append(&mut self, lines: &[String]) -> Result<u64, LogError> {
        let first = self.last + 1;
        let mut batch = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        let mut starts = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            debug_assert!(!line.contains('\n'));
            let seq = first + i as u64;
            if (seq - 1).is_multiple_of(INDEX_STRIDE) {
                starts.push((self.len + batch.len() as u64, seq - 1));
            }
            batch.extend_from_slice(line.as_bytes());
            batch.push(b'\n');
        }
        let written = self
            .file
            .write_all(&batch)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            // Best effort: a partial line would be cut at the next start.
            let _ = self.file.set_len(self.len);
            return Err(LogError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.index.extend(starts);
        self.len += batch.len() as u64;
        self.last += lines.len() as u64;
        Ok(first)
    }

    /// Up to `max` records after number `after`, with their numbers, and
    /// no more than `max_bytes` of lines (but always the first).
    pub fn read_after(
        &self,
        after: u64,
        max: u64,
        max_bytes: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let io = |source| LogError::Io {
            path: self.path.clone(),
            source,
        };
        if after >= self.last || max == 0 {
            return Ok(Vec::new());
        }
        let slot = (after / INDEX_STRIDE) as usize;
        let (start, mut seq) = self.index[slot];
        let mut file = &self.file;
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut reader = BufReader::new(file.take(self.len - start));
        let mut out = Vec::new();
        let mut line = Vec::new();
        let mut bytes = 0u64;
        while out.len() < max as usize {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                break;
            }
            line.pop();
            let numbers = numbers_in(&line);
            seq += numbers;
            // A gap's records were dropped: a subscriber that asks for
            // them gets what follows.
            if numbers == 1 && seq > after && !line.starts_with(GAP_PREFIX.as_bytes()) {
                bytes += line.len() as u64;
                if bytes > max_bytes && !out.is_empty() {
                    break;
                }
                out.push((seq, line.clone()));
            }
        }
        Ok(out)
    }
}

/// What a compaction of the publisher's log did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    pub kept: u64,
    pub dropped: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl RecordLog {
    /// Keeps only the records that may still be in force (the same rules
    /// as `banshare compact`, [`retention`]), each under its own number:
    /// the dropped ones become gap lines. The epoch stays: a subscriber
    /// goes on from its number, and one that asks for a dropped record
    /// gets what follows it. The last record is always kept, so that the
    /// log still ends at the number subscribers were told.
    ///
    /// Written beside the log, synced, and renamed over it, so that a
    /// crash leaves the old log or the new one.
    pub fn compact(
        &mut self,
        rules: &retention::RetentionRules,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Compacted, LogError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LogError::Io { path, source }
        };
        if self.last == 0 {
            return Ok(Compacted::default());
        }
        let mut data = Vec::with_capacity(self.len as usize);
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0)).map_err(io(&self.path))?;
        file.take(self.len)
            .read_to_end(&mut data)
            .map_err(io(&self.path))?;
        let lines: Vec<&[u8]> = data.split_inclusive(|b| *b == b'\n').collect();
        let fates = retention::plan(lines.iter().copied(), rules, now);
        let mut out = Vec::with_capacity(data.len());
        let mut gap = 0u64;
        let mut stats = Compacted {
            bytes_before: self.len,
            ..Compacted::default()
        };
        for (i, (line, fate)) in lines.iter().zip(&fates).enumerate() {
            let numbers = numbers_in(&line[..line.len() - 1]);
            let is_gap = line.starts_with(GAP_PREFIX.as_bytes());
            let last = i + 1 == lines.len();
            if is_gap || !(fate.is_kept() || last) {
                gap += numbers;
                stats.dropped += u64::from(!is_gap);
                continue;
            }
            if gap > 0 {
                out.extend_from_slice(format!("{GAP_PREFIX}{gap}\n").as_bytes());
                gap = 0;
            }
            out.extend_from_slice(line);
            stats.kept += 1;
        }
        if gap > 0 {
            out.extend_from_slice(format!("{GAP_PREFIX}{gap}\n").as_bytes());
        }
        stats.bytes_after = out.len() as u64;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::durable::write_atomic(&self.path, &out, 0o600).map_err(io(&self.path))?;
        let reopened = RecordLog::open(dir)?;
        if (reopened.epoch, reopened.last) != (self.epoch, self.last) {
            return Err(LogError::Corrupt {
                path: self.path.clone(),
                why: "the compacted log does not end at the same record number",
            });
        }
        *self = reopened;
        Ok(stats)
    }
}

/// What the file holds: its complete lines, and a torn last one.
struct Scan {
    last: u64,
    len: u64,
    torn: u64,
    index: Vec<(u64, u64)>,
}

fn scan(file: &File) -> io::Result<Scan> {
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let (mut last, mut len, mut index) = (0u64, 0u64, Vec::new());
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)? as u64;
        if n == 0 {
            return Ok(Scan {
                last,
                len,
                torn: 0,
                index,
            });
        }
        if line.last() != Some(&b'\n') {
            return Ok(Scan {
                last,
                len,
                torn: n,
                index,
            });
        }
        let numbers = numbers_in(&line[..line.len() - 1]);
        // Every stride start this line holds points at it.
        while (index.len() as u64) * INDEX_STRIDE < last + numbers {
            index.push((len, last));
        }
        last += numbers;
        len += n;
    }
}

/// The epoch saved beside the log, or a new one for a log still empty. An
/// empty log always gets a new one, even beside an old epoch file: records
/// it numbers from 1 again are not those subscribers read under the old
/// epoch, and must not be taken for them (subscribers would drop them as
/// already read). A log with records but no epoch is refused: a new epoch
/// would make every subscriber apply it all again as a new log, and hide
/// that it was lost.
fn load_or_make_epoch(dir: &Path, last: u64) -> Result<Epoch, LogError> {
    let path = dir.join(EPOCH_FILE);
    if last == 0 {
        return make_epoch(&path);
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_epoch(text.trim_end_matches('\n')).ok_or(LogError::Corrupt {
            path,
            why: "not 16 hex digits",
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LogError::Corrupt {
            path,
            why: "missing, while records.log holds records; restore it, or move records.log \
                  away to start a new log",
        }),
        Err(source) => Err(LogError::Io { path, source }),
    }
}

/// A new random epoch, saved at `path`.
fn make_epoch(path: &Path) -> Result<Epoch, LogError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)?;
    let epoch = Epoch(u64::from_be_bytes(bytes));
    crate::durable::write_atomic(path, format!("{epoch}\n").as_bytes(), 0o600).map_err(
        |source| LogError::Io {
            path: path.to_owned(),
            source,
        },
    )?;
    Ok(epoch)
}

fn parse_epoch(text: &str) -> Option<Epoch> {
    (text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(text, 16).ok().map(Epoch))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|i| format!("line {i}")).collect()
    }

    #[test]
    fn numbers_survive_a_reopen_and_keep_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RecordLog::open(dir.path()).unwrap();
        assert_eq!(log.last(), 0);
        assert_eq!(log.append(&lines(1..=3)).unwrap(), 1);
        let epoch = log.epoch();
        drop(log);
        let mut log = RecordLog::open(dir.path()).unwrap();
        assert_eq!((log.epoch(), log.last()), (epoch, 3));
        assert_eq!(log.append(&lines(4..=4)).unwrap(), 4);
        let got = log.read_after(2, 10, u64::MAX).unwrap();
        assert_eq!(got, vec![(3, b"line 3".to_vec()), (4, b"line 4".to_vec())]);
    }

    #[test]
    fn reads_across_index_strides_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RecordLog::open(dir.path()).unwrap();
        for chunk in 0..5 {
            log.append(&lines(chunk * 700 + 1..=chunk * 700 + 700))
                .unwrap();
        }
        assert_eq!(log.index.len(), 4);
        let reopened = RecordLog::open(dir.path()).unwrap();
        assert_eq!(reopened.index, log.index);
        for after in [0, 999, 1000, 1001, 2500, 3499] {
            let got = reopened.read_after(after, 1000, u64::MAX).unwrap();
            let want = (after + 1..=(after + 1000).min(3500))
                .map(|i| (i, format!("line {i}").into_bytes()))
                .collect::<Vec<_>>();
            assert_eq!(got, want, "after {after}");
        }
        assert!(
            reopened
                .read_after(3500, 1000, u64::MAX)
                .unwrap()
                .is_empty()
        );
        // A byte limit cuts a read short, but never below one record.
        let got = reopened.read_after(10, 1000, 20).unwrap();
        assert_eq!(
            got,
            vec![(11, b"line 11".to_vec()), (12, b"line 12".to_vec())]
        );
        assert_eq!(reopened.read_after(10, 1000, 1).unwrap().len(), 1);
    }

    #[test]
    fn a_torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RecordLog::open(dir.path()).unwrap();
        log.append(&lines(1..=2)).unwrap();
        drop(log);
        let path = dir.path().join(RECORDS_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"line 3 half").unwrap();
        let mut log = RecordLog::open(dir.path()).unwrap();
        assert_eq!(log.last(), 2);
        assert_eq!(log.append(&lines(3..=3)).unwrap(), 3);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "line 1\nline 2\nline 3\n"
        );
    }

    /// Review 12: an emptied log (records.log moved away or lost, its
    /// epoch file left) numbers from 1 again; under the old epoch every
    /// subscriber that had read further drops the new records as already
    /// seen. A log that starts anew must start a new epoch.
    #[test]
    fn a_log_started_anew_beside_an_old_epoch_gets_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RecordLog::open(dir.path()).unwrap();
        log.append(&lines(1..=5)).unwrap();
        let old = log.epoch();
        drop(log);
        std::fs::remove_file(dir.path().join(RECORDS_FILE)).unwrap();
        let log = RecordLog::open(dir.path()).unwrap();
        assert_eq!(log.last(), 0);
        assert_ne!(
            log.epoch(),
            old,
            "an empty log reuses the epoch of one that held 5 records"
        );
    }

    fn record(i: u64, ts: &str, bantime: u32) -> String {
        format!(
            "<13>Nov 21 17:00:00 banshare[1]: HOST 10.0.{}.{} PORT 22 node=a ts={ts} bantime={bantime} id={i:016x}",
            i / 256,
            i % 256
        )
    }

    /// Compaction keeps each record under its number, across strides of
    /// the index and a reopen; what was dropped is skipped by catch-up; the
    /// epoch, the last number and the numbering of new records stay.
    #[test]
    fn compaction_keeps_every_record_under_its_number() {
        let now: chrono::DateTime<chrono::Utc> = "2026-11-21T18:00:00Z".parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut log = RecordLog::open(dir.path()).unwrap();
        // Every third record is in force; the others ended an hour ago;
        // the last one too, but it stays, as the log's end.
        let records: Vec<String> = (1..=3001)
            .map(|i| match i % 3 {
                0 => record(i, "2026-11-21T17:59:00Z", 3600),
                _ => record(i, "2026-11-21T16:00:00Z", 600),
            })
            .collect();
        for chunk in records.chunks(700) {
            log.append(chunk).unwrap();
        }
        let epoch = log.epoch();
        let rules = retention::RetentionRules::new(
            std::time::Duration::from_secs(7 * 24 * 3600),
            std::time::Duration::from_secs(600),
        );
        let done = log.compact(&rules, now).unwrap();
        assert_eq!((done.kept, done.dropped), (1001, 2000));
        assert!(done.bytes_after < done.bytes_before / 2, "{done:?}");
        let in_force = |after: u64| -> Vec<(u64, Vec<u8>)> {
            (after + 1..=3001)
                .filter(|i| i % 3 == 0 || *i == 3001)
                .map(|i| (i, records[i as usize - 1].clone().into_bytes()))
                .collect()
        };
        for log in [&log, &RecordLog::open(dir.path()).unwrap()] {
            assert_eq!((log.epoch(), log.last()), (epoch, 3001));
            for after in [0, 1, 2, 3, 998, 999, 1000, 1001, 2999, 3000] {
                assert_eq!(
                    log.read_after(after, 5000, u64::MAX).unwrap(),
                    in_force(after),
                    "after {after}"
                );
            }
            assert_eq!(log.read_after(0, 2, u64::MAX).unwrap(), in_force(0)[..2]);
        }
        assert_eq!(log.append(&lines(3002..=3002)).unwrap(), 3002);
        // Compacting again merges the gaps and keeps the numbers.
        log.compact(&rules, now).unwrap();
        assert_eq!(log.last(), 3002);
        // 3001 is no longer the last: dropped now.
        let after = log.read_after(2999, 10, u64::MAX).unwrap();
        assert_eq!(
            after.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [3000, 3002]
        );
        let text = std::fs::read_to_string(dir.path().join(RECORDS_FILE)).unwrap();
        assert!(text.starts_with("# banshare-gap 2\n"), "{}", &text[..40]);
    }

    #[test]
    fn records_without_their_epoch_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        RecordLog::open(dir.path())
            .unwrap()
            .append(&lines(1..=1))
            .unwrap();
        std::fs::remove_file(dir.path().join(EPOCH_FILE)).unwrap();
        assert!(matches!(
            RecordLog::open(dir.path()),
            Err(LogError::Corrupt { .. })
        ));
    }
}
