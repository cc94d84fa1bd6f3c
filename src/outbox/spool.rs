//! The local spool: records wait here while the shared log is out of reach,
//! and [`Spool::flush`] delivers them later, in order, exactly once.
//!
//! Each batch is one file, named so that names sort in spooling order:
//! `<micros since epoch>-<pid>-<seq>.<state>`. The state says what is known:
//!
//! - `pending`: certainly not in the log yet;
//! - `uncertain`: a delivery was under way when it was interrupted (a
//!   timeout, a write error, a crash), so some of its records may be in the
//!   log already. Before delivering it, flush looks the ids up in the log
//!   and sends only the missing ones; over a transport that cannot read
//!   the log back, it sends the batch again whole, and the watchers'
//!   policy drops the copies.
//!
//! A flush marks a file `uncertain` before it appends, and deletes it after,
//! so that a crash at any point leaves a state that recovers exactly once.
//!
//! The spool folder also holds the journals of `banshare ban` runs
//! ([`crate::outbox::journal`]); a flush first turns those of dead runs into
//! `uncertain` batches.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::durable;
use crate::outbox::journal::{self, Journal};
use crate::record::{self, Record, RecordId};
use crate::transport::lock::{LocalLock, LockError};
use crate::transport::{Transport, TransportError};

const PENDING: &str = "pending";
const UNCERTAIN: &str = "uncertain";
/// Spool lines that cannot be read back as records are moved here and
/// never delivered; a human should look at them.
const REJECTED_DIR: &str = "rejected";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The log did not take the records, and the spool could not keep
    /// them either: both reasons, since the first is often the one to fix
    /// (the share), and the second alone hides it.
    #[error("delivery failed ({delivery}), and keeping them in the spool failed: {source}")]
    NotKept {
        delivery: String,
        #[source]
        source: Box<SpoolError>,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A spool directory on local disk.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// What a flush did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Records appended to the log.
    pub delivered: usize,
    /// Records of interrupted deliveries that turned out to be in the log.
    pub already_there: usize,
    /// Records of interrupted deliveries sent again unchecked, because the
    /// transport cannot read the log back: some may be copies, which the
    /// watchers drop. Counted in `delivered` too.
    pub resent_unchecked: usize,
    /// Batches still waiting, because the log became unreachable.
    pub batches_left: usize,
}

/// What waits in the spool.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolSummary {
    /// Records waiting (see [`Spool::depth`]).
    pub records: usize,
    /// When the oldest of them was spooled, by its batch's name; `None`
    /// when none waits.
    pub oldest: Option<SystemTime>,
}

/// A spooled batch, in delivery order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    path: PathBuf,
    uncertain: bool,
}

impl Spool {
    /// Opens the spool, creating the directory (mode 0700) if needed.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        Ok(Spool {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The local lock file that serialises this host's appenders.
    pub fn append_lock_path(&self) -> PathBuf {
        self.dir.join(".append.lock")
    }

    /// Stores one batch durably (see [`durable::write_atomic`]). `uncertain`
    /// is true when a delivery of it may have begun.
    pub fn put(&self, records: &[Record], uncertain: bool) -> Result<PathBuf, SpoolError> {
        let state = if uncertain { UNCERTAIN } else { PENDING };
        let path = self.dir.join(format!("{}.{state}", next_name()));
        durable::write_atomic(&path, &to_batch(records), 0o600).map_err(io_err(&path))?;
        Ok(path)
    }

    /// Writes `records` to a new journal of this run (see [`crate::outbox::journal`]),
    /// named to sort with the spool's batches.
    pub fn new_journal(&self, records: &[Record]) -> Result<Journal, SpoolError> {
        let name = next_name();
        Journal::create(&self.dir, &name, &to_batch(records)).map_err(io_err(&self.dir))
    }

    /// Turns this run's journal into a spool batch, durably; `uncertain` as
    /// in [`Spool::put`]. The batch keeps the journal's place in the order.
    pub fn adopt(&self, journal: &Journal, uncertain: bool) -> Result<PathBuf, SpoolError> {
        let state = if uncertain { UNCERTAIN } else { PENDING };
        let target = journal.path().with_extension(state);
        journal.move_to(&target).map_err(io_err(journal.path()))?;
        Ok(target)
    }

    /// Whether a flush has work: spooled batches, or journals of dead runs.
    pub fn needs_flush(&self) -> Result<bool, SpoolError> {
        Ok(!self.is_empty()? || journal::has_orphans(&self.dir).map_err(io_err(&self.dir))?)
    }

    /// How many records wait in the spool: its batches, and the journals
    /// of `banshare ban` runs (whose delivery is not confirmed yet; a dead
    /// run's journal waits for flush like a batch).
    pub fn depth(&self) -> Result<usize, SpoolError> {
        Ok(self.summary()?.records)
    }

    /// How many records wait (see [`Spool::depth`]), and since when.
    pub fn summary(&self) -> Result<SpoolSummary, SpoolError> {
        self.summary_counted(&mut HashMap::new())
    }

    /// As [`Spool::summary`], reading only the files that `counted` does
    /// not know yet: a batch or journal never changes under its name (it
    /// is written whole, then renamed or removed), so a watcher that asks
    /// every few seconds during a long outage reads each file once.
    /// `counted` is left holding the files there now.
    pub fn summary_counted(
        &self,
        counted: &mut HashMap<PathBuf, usize>,
    ) -> Result<SpoolSummary, SpoolError> {
        let journals = journal::paths(&self.dir).map_err(io_err(&self.dir))?;
        let batches = self.entries()?.into_iter().map(|e| e.path);
        let mut summary = SpoolSummary::default();
        let mut now_there = HashMap::with_capacity(counted.len());
        for path in batches.chain(journals) {
            let records = match counted.get(&path) {
                Some(n) => *n,
                None => match fs::read(&path) {
                    Ok(data) => data.iter().filter(|&&b| b == b'\n').count(),
                    // Delivered (or moved on to a batch) since the listing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&path)(e)),
                },
            };
            summary.records += records;
            if records > 0 {
                summary.oldest = match (summary.oldest, spooled_at(&path)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            now_there.insert(path, records);
        }
        *counted = now_there;
        Ok(summary)
    }

    pub fn is_empty(&self) -> Result<bool, SpoolError> {
        Ok(self.entries()?.is_empty())
    }

    /// Delivers every batch, oldest first, stopping at the first one the log
    /// refuses. Only one flush runs at a time on a spool; a second one waits
    /// up to `lock_timeout` for the first.
    pub fn flush(
        &self,
        transport: &mut dyn Transport,
        lock_timeout: Duration,
    ) -> Result<FlushReport, SpoolError> {
        let _guard = LocalLock::acquire(&self.dir.join(".flush.lock"), lock_timeout)?;
        // A run killed or stuck before its delivery was confirmed may have
        // written part of its journal to the log: uncertain.
        journal::claim_orphans(&self.dir, |p| p.with_extension(UNCERTAIN))
            .map_err(io_err(&self.dir))?;
        let mut report = FlushReport::default();
        let entries = self.entries()?;
        for (done, entry) in entries.iter().enumerate() {
            match self.deliver(entry, transport, &mut report) {
                Ok(()) => {}
                Err(Delivery::Transport(e)) => {
                    report.batches_left = entries.len() - done;
                    log::warn!("flush stopped, log unreachable: {e}");
                    break;
                }
                Err(Delivery::Spool(e)) => return Err(e),
            }
        }
        if report.resent_unchecked > 0 {
            // Once per flush, not per batch: it is how this transport
            // works, not a fault.
            log::info!(
                "{} record(s) of interrupted deliveries sent again whole: this transport \
                 cannot read the log back to drop those already there; watchers drop the copies",
                report.resent_unchecked
            );
        }
        Ok(report)
    }

    fn deliver(
        &self,
        entry: &Entry,
        transport: &mut dyn Transport,
        report: &mut FlushReport,
    ) -> Result<(), Delivery> {
        let Some(mut records) = self.read_batch(&entry.path)? else {
            return Ok(());
        };
        let mut unchecked = false;
        let path = if entry.uncertain {
            match drop_delivered(&mut records, transport)? {
                Some(dropped) => report.already_there += dropped,
                None => unchecked = true,
            }
            entry.path.clone()
        } else {
            self.mark_uncertain(&entry.path)?
        };
        if !records.is_empty()
            && let Err(e) = transport.append(&to_batch(&records))
        {
            if e.wrote_nothing() {
                self.mark_pending(&path)?;
            }
            return Err(Delivery::Transport(e));
        }
        report.delivered += records.len();
        if unchecked {
            report.resent_unchecked += records.len();
        }
        fs::remove_file(&path).map_err(io_err(&path))?;
        Ok(())
    }

    /// The batch's records, or `None` when the file is corrupt; a corrupt
    /// file is moved aside with a warning rather than blocking the queue.
    fn read_batch(&self, path: &Path) -> Result<Option<Vec<Record>>, SpoolError> {
        let data = fs::read(path).map_err(io_err(path))?;
        let mut records = Vec::new();
        let mut bad: Vec<u8> = Vec::new();
        let mut reasons = Vec::new();
        for line in data.split_inclusive(|&b| b == b'\n') {
            match record::parse(line) {
                Ok(r) => records.push(r),
                Err(reason) => {
                    bad.extend_from_slice(line);
                    reasons.push(reason.to_string());
                }
            }
        }
        if !bad.is_empty() {
            // Only the bad lines go aside: the good records of the batch
            // are still delivered.
            let rejected = self.dir.join(REJECTED_DIR);
            fs::create_dir_all(&rejected).map_err(io_err(&rejected))?;
            let target = rejected.join(path.file_name().expect("spool entries have names"));
            durable::write_atomic(&target, &bad, 0o600).map_err(io_err(&target))?;
            log::error!(
                "{} line(s) of spool file {} are corrupt ({}); moved to {}",
                reasons.len(),
                path.display(),
                reasons.join("; "),
                target.display()
            );
        }
        Ok(Some(records))
    }

    fn mark_uncertain(&self, path: &Path) -> Result<PathBuf, SpoolError> {
        rename_state(path, UNCERTAIN)
    }

    fn mark_pending(&self, path: &Path) -> Result<PathBuf, SpoolError> {
        rename_state(path, PENDING)
    }

    /// The spooled batches, oldest first.
    fn entries(&self) -> Result<Vec<Entry>, SpoolError> {
        let mut entries = Vec::new();
        for dirent in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = dirent.map_err(io_err(&self.dir))?.path();
            let uncertain = match path.extension().and_then(|e| e.to_str()) {
                Some(PENDING) => false,
                Some(UNCERTAIN) => true,
                _ => continue,
            };
            entries.push(Entry { path, uncertain });
        }
        entries.sort_by(|a, b| a.path.file_stem().cmp(&b.path.file_stem()));
        Ok(entries)
    }
}

/// A flush step's failure: the log (stop and retry later) or the spool
/// itself (an error to report).
enum Delivery {
    Transport(TransportError),
    Spool(SpoolError),
}

impl From<SpoolError> for Delivery {
    fn from(e: SpoolError) -> Delivery {
        Delivery::Spool(e)
    }
}

/// Removes from `records` those whose id the log already holds, and says
/// how many; `None` when the transport cannot read the log back, and then
/// every record stays, to be sent again.
fn drop_delivered(
    records: &mut Vec<Record>,
    transport: &mut dyn Transport,
) -> Result<Option<usize>, Delivery> {
    let ids: HashSet<RecordId> = records.iter().filter_map(|r| r.fields.id.clone()).collect();
    let Some(found) = transport.find_ids(&ids).map_err(Delivery::Transport)? else {
        return Ok(None);
    };
    let before = records.len();
    records.retain(|r| r.fields.id.as_ref().is_none_or(|id| !found.contains(id)));
    Ok(Some(before - records.len()))
}

/// The lines of `records`, each ending in `\n`.
pub fn to_batch(records: &[Record]) -> Vec<u8> {
    let mut batch = String::new();
    for record in records {
        batch.push_str(&record.to_string());
        batch.push('\n');
    }
    batch.into_bytes()
}

/// Renames a batch to its new state, durably: after a power loss a batch
/// marked uncertain must not come back as pending and be sent twice.
fn rename_state(path: &Path, state: &str) -> Result<PathBuf, SpoolError> {
    let target = path.with_extension(state);
    fs::rename(path, &target).map_err(io_err(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    durable::sync_dir(dir).map_err(io_err(dir))?;
    Ok(target)
}

/// A name that sorts after every earlier one from this host: the clock in
/// microseconds, then the pid and a per-process counter to break ties.
/// When the batch or journal at `path` was spooled: the microseconds its
/// name starts with (see [`next_name`]).
fn spooled_at(path: &Path) -> Option<SystemTime> {
    let name = path.file_name()?.to_str()?;
    let micros: u64 = name.split('-').next()?.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_micros(micros))
}

fn next_name() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{micros:020}-{:010}-{seq:06}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log in memory that can be told to refuse appends, or to be a
    /// publisher that cannot read what it sent back.
    #[derive(Default)]
    struct MemoryLog {
        lines: Vec<Record>,
        refuse: Option<fn() -> TransportError>,
        cannot_read_back: bool,
    }

    impl Transport for MemoryLog {
        fn append(&mut self, batch: &[u8]) -> Result<(), TransportError> {
            if let Some(refuse) = self.refuse {
                return Err(refuse());
            }
            self.lines.extend(
                batch
                    .split_inclusive(|&b| b == b'\n')
                    .map(|l| record::parse(l).unwrap()),
            );
            Ok(())
        }

        fn find_ids(
            &mut self,
            ids: &HashSet<RecordId>,
        ) -> Result<Option<HashSet<RecordId>>, TransportError> {
            if self.cannot_read_back {
                return Ok(None);
            }
            Ok(Some(
                self.lines
                    .iter()
                    .filter_map(|r| r.fields.id.clone())
                    .filter(|id| ids.contains(id))
                    .collect(),
            ))
        }
    }

    fn rec(n: u32) -> Record {
        let line = format!(
            "<13>Nov 21 18:28:04 t[1]: HOST 192.0.2.{n} PORT 22 id={:016x}",
            n
        );
        record::parse(line.as_bytes()).unwrap()
    }

    fn missing() -> TransportError {
        TransportError::Missing {
            log: "/x".into(),
            hint: "is the share mounted?",
        }
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn flush_delivers_in_order_and_empties_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.put(&[rec(1), rec(2)], false).unwrap();
        spool.put(&[rec(3)], false).unwrap();
        assert_eq!(spool.depth().unwrap(), 3);
        let mut log = MemoryLog::default();
        let report = spool.flush(&mut log, T).unwrap();
        assert_eq!(
            report,
            FlushReport {
                delivered: 3,
                already_there: 0,
                resent_unchecked: 0,
                batches_left: 0
            }
        );
        assert_eq!(log.lines, vec![rec(1), rec(2), rec(3)]);
        assert!(spool.is_empty().unwrap());
    }

    #[test]
    fn the_summary_counts_each_file_once_and_dates_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut counted = HashMap::new();
        assert_eq!(
            spool.summary_counted(&mut counted).unwrap(),
            SpoolSummary::default()
        );
        let before = SystemTime::now() - Duration::from_secs(1);
        let first = spool.put(&[rec(1), rec(2)], false).unwrap();
        spool.put(&[rec(3)], false).unwrap();
        let summary = spool.summary_counted(&mut counted).unwrap();
        assert_eq!(summary.records, 3);
        let oldest = summary.oldest.unwrap();
        assert!(
            oldest >= before && oldest <= SystemTime::now(),
            "{oldest:?}"
        );
        assert_eq!(oldest, spooled_at(&first).unwrap());
        // Counted once: a file is not read again under the same name.
        fs::write(&first, b"").unwrap();
        assert_eq!(spool.summary_counted(&mut counted).unwrap().records, 3);
        assert_eq!(spool.summary().unwrap().records, 1);
        fs::remove_file(&first).unwrap();
        assert_eq!(spool.summary_counted(&mut counted).unwrap().records, 1);
        assert_eq!(counted.len(), 1);
    }

    #[test]
    fn depth_counts_the_records_in_journals_too() {
        // `banshare ban` says a killed or stuck run's records are "kept in
        // journal ...; flush delivers them": `status` must count them as
        // waiting, not report an empty spool.
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.put(&[rec(1), rec(2)], false).unwrap();
        let live = spool.new_journal(&[rec(3)]).unwrap();
        drop(spool.new_journal(&[rec(4), rec(5)]).unwrap()); // its run died
        assert_eq!(spool.depth().unwrap(), 5);
        live.remove().unwrap();
        assert_eq!(spool.depth().unwrap(), 4);
    }

    #[test]
    fn refused_flush_keeps_batches_pending() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.put(&[rec(1)], false).unwrap();
        spool.put(&[rec(2)], false).unwrap();
        let mut log = MemoryLog {
            refuse: Some(missing),
            ..Default::default()
        };
        let report = spool.flush(&mut log, T).unwrap();
        assert_eq!(report.batches_left, 2);
        assert!(
            spool.entries().unwrap().iter().all(|e| !e.uncertain),
            "nothing was written, so still pending"
        );
        log.refuse = None;
        spool.flush(&mut log, T).unwrap();
        assert_eq!(log.lines, vec![rec(1), rec(2)]);
    }

    #[test]
    fn uncertain_batch_sends_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.put(&[rec(1), rec(2), rec(3)], true).unwrap();
        let mut log = MemoryLog {
            lines: vec![rec(1), rec(2)],
            ..Default::default()
        };
        let report = spool.flush(&mut log, T).unwrap();
        assert_eq!(report.already_there, 2);
        assert_eq!(report.delivered, 1);
        assert_eq!(report.resent_unchecked, 0);
        assert_eq!(log.lines, vec![rec(1), rec(2), rec(3)]);
    }

    /// A transport that cannot read the log back (a publisher onto a
    /// message bus) cannot say which records of an interrupted delivery
    /// arrived: the batch goes again whole, and the watchers' policy drops
    /// the copies.
    #[test]
    fn uncertain_batch_is_resent_whole_when_the_log_cannot_be_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.put(&[rec(1), rec(2), rec(3)], true).unwrap();
        spool.put(&[rec(4)], false).unwrap();
        let mut log = MemoryLog {
            lines: vec![rec(1), rec(2)],
            cannot_read_back: true,
            ..Default::default()
        };
        let report = spool.flush(&mut log, T).unwrap();
        assert_eq!(
            report,
            FlushReport {
                delivered: 4,
                already_there: 0,
                resent_unchecked: 3,
                batches_left: 0
            }
        );
        let sent = vec![rec(1), rec(2), rec(1), rec(2), rec(3), rec(4)];
        assert_eq!(log.lines, sent);
        assert!(spool.is_empty().unwrap());
    }

    #[test]
    fn corrupt_batch_is_moved_aside_not_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        fs::write(
            dir.path()
                .join("00000000000000000001-0000000001-000000.pending"),
            b"garbage\n",
        )
        .unwrap();
        spool.put(&[rec(1)], false).unwrap();
        let mut log = MemoryLog::default();
        spool.flush(&mut log, T).unwrap();
        assert_eq!(log.lines, vec![rec(1)]);
        assert_eq!(
            fs::read_dir(dir.path().join(REJECTED_DIR)).unwrap().count(),
            1
        );
    }
}
