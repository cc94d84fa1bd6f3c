//! Saving the watcher's cursor ([`WatchCheckpoint`]: the feed's position
//! and the circuit breaker's state as of it) after each applied batch.
//!
//! Following a file, each save writes `cursor.json` atomically and durably
//! ([`crate::durable`]: a temporary file, fsync, rename, fsync of the
//! folder). On a pushed feed (ZeroMQ) every ban arrives alone, so that
//! save ran once per ban, and it was most of the watcher's CPU (0.44 of
//! 0.60 ms per ban, measured; the rest is receiving, deciding and applying),
//! and fsyncs of a hundred watchers queued behind each other. So there the
//! save is split in two ([`Saving::Coalesced`]):
//!
//! - after each batch the checkpoint is **appended to `cursor.journal`**,
//!   one line, one `write`, no fsync. A process that dies (SIGKILL, a
//!   panic, the OOM killer) leaves the page cache behind, so a restart
//!   resumes right after the last applied batch, exactly as from a
//!   `cursor.json` saved per batch: the cursor is never ahead of what was
//!   applied, and nothing is applied twice but the batch a kill lands in
//!   between its apply and its save, as before;
//! - `cursor.json` is written durably at most once per [`DURABLE_EVERY`]
//!   (and at stop, and when the journal passes [`JOURNAL_MAX`]), and the
//!   journal emptied after it. Only a crash of the whole host can lose the
//!   journal's unsynced lines, and then the restart resumes from
//!   `cursor.json`, at most about a second behind: it replays those
//!   records, which the firewall lost with the reboot anyway (the saved
//!   active bans are older still), and the policy drops the ones it knows
//!   as copies. Behind, never ahead.
//!
//! A journal line that does not parse (cut short by a crash, or of
//! another format) is skipped: the line before it, or `cursor.json`, is
//! used, which is only further behind. An older banshare ignores the
//! journal and resumes from `cursor.json` likewise.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::state::WatchCheckpoint;
use crate::state::{STATE_VERSION, StateDir, versioned_json_line};

/// How often, at most, a coalescing watcher writes `cursor.json` durably
/// while batches keep coming.
pub const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// A journal longer than this is folded into `cursor.json` at once, so it
/// stays small however large the breaker's state is.
pub const JOURNAL_MAX: u64 = 1 << 20;

/// The journal's file name in the state directory.
pub const JOURNAL: &str = "cursor.journal";

/// How the cursor is saved after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saving {
    /// `cursor.json`, atomically and durably, after every batch.
    EveryBatch,
    /// To the journal after every batch, to `cursor.json` at most once per
    /// [`DURABLE_EVERY`] (see the module).
    Coalesced,
}

/// Saves the watcher's cursor as [`Saving`] says.
pub struct CursorSaver {
    state: StateDir,
    saving: Saving,
    /// `cursor.journal`, opened at the first coalesced save.
    journal: Option<File>,
    journal_len: u64,
    /// The last checkpoint journaled and not yet in `cursor.json`.
    unsynced: Option<WatchCheckpoint>,
    synced_at: Instant,
    /// [`DURABLE_EVERY`]; longer in tests, which must not race the clock.
    durable_every: Duration,
    /// The last durable save failed: when to try again (a second later,
    /// not in a spin), and why, told until then.
    failed: Option<(Instant, String)>,
    /// A journal left by an earlier run is still there (it could not be
    /// folded at start): removed at the next durable save, so that it
    /// never outlives a newer `cursor.json`.
    stale_journal: bool,
}

impl CursorSaver {
    /// Loads the latest saved checkpoint (the journal's last good line, or
    /// `cursor.json`), folds the journal into `cursor.json` so the directory
    /// holds one cursor again, and returns the saver with it.
    pub fn open(
        state: StateDir,
        saving: Saving,
    ) -> io::Result<(CursorSaver, Option<WatchCheckpoint>)> {
        let (saved, stale_journal) = match load_journal(&state)? {
            // If cursor.json cannot take it now (a full disk), the journal
            // stays until the next durable save: the watcher holds rather
            // than fail to start.
            Some(latest) => {
                let folded = state.save_checkpoint(&latest).is_ok();
                (Some(latest), !folded)
            }
            None => (state.load_checkpoint()?, false),
        };
        let mut saver = CursorSaver {
            state,
            saving,
            journal: None,
            journal_len: 0,
            unsynced: None,
            synced_at: Instant::now(),
            durable_every: DURABLE_EVERY,
            failed: None,
            stale_journal,
        };
        // Best effort: a journal that cannot be removed now (a read-only
        // state directory) goes at the next durable save.
        if !saver.stale_journal && saver.remove_journal().is_err() {
            saver.stale_journal = true;
        }
        Ok((saver, saved))
    }

    /// Saves as `saving` says from now on: the watcher knows its feed's
    /// mode only once it watches.
    pub fn set_saving(&mut self, saving: Saving) {
        self.saving = saving;
    }

    /// Saves `checkpoint`, the position after a batch that was applied.
    /// An error means it may not be saved: the caller holds.
    pub fn save(&mut self, checkpoint: WatchCheckpoint) -> io::Result<()> {
        if self.saving == Saving::EveryBatch || self.synced_at.elapsed() >= self.durable_every {
            return self.write_durably(&checkpoint);
        }
        self.append(&checkpoint)?;
        if self.journal_len > JOURNAL_MAX {
            return self.write_durably(&checkpoint);
        }
        self.unsynced = Some(checkpoint);
        Ok(())
    }

    /// When the journaled checkpoint is due in `cursor.json`; `None` when
    /// `cursor.json` is up to date.
    pub fn due(&self) -> Option<Instant> {
        self.unsynced.as_ref().map(|_| match &self.failed {
            Some((retry, _)) => *retry,
            None => self.synced_at + self.durable_every,
        })
    }

    /// Writes the journaled checkpoint to `cursor.json` if it is due, or
    /// whenever there is one if `now`. After a failed try, and until the
    /// next, it fails with the same error: the watcher holds meanwhile.
    pub fn sync(&mut self, now: bool) -> io::Result<()> {
        let Some(due) = self.due() else {
            return Ok(());
        };
        if !now && Instant::now() < due {
            return match &self.failed {
                Some((_, why)) => Err(io::Error::other(why.clone())),
                None => Ok(()),
            };
        }
        let checkpoint = self.unsynced.take().expect("due only when journaled");
        let result = self.write_durably(&checkpoint);
        if result.is_err() {
            self.unsynced = Some(checkpoint);
        }
        result
    }

    fn append(&mut self, checkpoint: &WatchCheckpoint) -> io::Result<()> {
        if self.journal.is_none() {
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(self.state.file(JOURNAL))?;
            self.journal_len = file.metadata()?.len();
            self.journal = Some(file);
        }
        let mut line = versioned_json_line(checkpoint)?;
        line.push(b'\n');
        let journal = self.journal.as_mut().expect("just opened");
        // One write: a kill cannot leave half a line but at the end, where
        // loading skips it.
        journal.write_all(&line)?;
        self.journal_len += line.len() as u64;
        Ok(())
    }

    fn write_durably(&mut self, checkpoint: &WatchCheckpoint) -> io::Result<()> {
        if let Err(e) = self.state.save_checkpoint(checkpoint) {
            self.failed = Some((Instant::now() + self.durable_every, e.to_string()));
            return Err(e);
        }
        self.failed = None;
        self.synced_at = Instant::now();
        self.unsynced = None;
        // Emptied after cursor.json is written: a crash in between leaves
        // the same checkpoint in both.
        if let Some(journal) = &self.journal
            && self.journal_len > 0
        {
            journal.set_len(0)?;
            self.journal_len = 0;
        }
        if self.stale_journal {
            self.remove_journal()?;
        }
        Ok(())
    }

    fn remove_journal(&mut self) -> io::Result<()> {
        match std::fs::remove_file(self.state.file(JOURNAL)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.stale_journal = false;
        self.journal = None;
        self.journal_len = 0;
        Ok(())
    }
}

/// A journal line: a checkpoint in the current format.
#[derive(Deserialize)]
struct JournalLine {
    version: u64,
    #[serde(flatten)]
    checkpoint: WatchCheckpoint,
}

/// The journal's last line that parses, in the current format.
fn load_journal(state: &StateDir) -> io::Result<Option<WatchCheckpoint>> {
    let mut data = Vec::new();
    match File::open(state.file(JOURNAL)) {
        Ok(mut file) => file.read_to_end(&mut data)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Only whole lines: the last one may have been cut short.
    let whole = match data.iter().rposition(|&b| b == b'\n') {
        Some(end) => &data[..end],
        None => return Ok(None),
    };
    Ok(whole.split(|&b| b == b'\n').rev().find_map(|line| {
        serde_json::from_slice::<JournalLine>(line)
            .ok()
            .filter(|l| l.version == STATE_VERSION)
            .map(|l| l.checkpoint)
    }))
}

#[cfg(test)]
#[path = "cursor_tests.rs"]
mod tests;
