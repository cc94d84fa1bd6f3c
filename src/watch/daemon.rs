//! The watcher's event loop.
//!
//! One thread owns all state: the feed, the policy, the backend and the
//! counters. Other threads only send it a [`Msg`]: the feed when there may
//! be more to read (an inotify watch on the log's folder, say), the signal
//! thread on SIGTERM, SIGINT and SIGHUP, and whoever holds a [`Handle`]
//! (the demo, tests). Between messages the loop wakes up on its own as
//! often as the feed asks.
//!
//! The daemon holds its feed as a [`Feed`] trait object: it never knows
//! which transport brings the records, nor what their positions mean.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use super::checking::{Checked, Read, Window, decide_checked};
use super::cursor::{CursorSaver, Saving};
use super::drift::FirewallGuard;
use super::incident;
use super::metrics::{Changes, Snapshot, WatchMetrics};
use super::policy::{Adjusted, Policy, PolicySettings, Skip, record_time};
use super::reach::{Reach, Refresh};
use super::state::{LiftReport, StateDir, Status, WatchCheckpoint, WatcherFiles};
use crate::backend::{Action, Backend, BackendError, Unban};
pub use crate::follow::{Handle, Msg};
use crate::follow::{Mode, Wake};
use crate::record::{self, Record};
use crate::transport::feed::{Entry, Feed, Position, Unread};
use crate::trust::{Provenance, Screened, TrustPolicy, Untrusted};
use log::{debug, error, info, warn};
use rayon::prelude::*;

/// What SIGHUP replaces: the policy settings and the trusted keys (so a
/// node's new key can be added, and an old one removed, without a restart).
pub struct Reloaded {
    pub policy: PolicySettings,
    pub trust: TrustPolicy,
}

/// What the daemon needs besides the policy and the backend.
#[derive(Debug, Clone)]
pub struct Options {
    pub node: String,
    /// The most lines applied in one backend call.
    pub batch_max: usize,
    pub state: StateDir,
    /// Which signatures are required.
    pub trust: TrustPolicy,
    /// How often to check that the backend's firewall objects are still
    /// there (`watch.safety_poll`, whatever the follow mode).
    pub safety_poll: Duration,
}

/// Errors that stop the watcher. Everything else (a missing log, a bad
/// line, a failed batch) is logged, counted and retried.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("backend {backend} cannot start: {source}")]
    Backend {
        backend: &'static str,
        source: BackendError,
    },
    #[error("state directory {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How long to wait before each retry of a batch the backend refused,
/// about three minutes in all; then the batch is given up.
const RETRY_DELAYS: [Duration; 8] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
    Duration::from_secs(60),
    Duration::from_secs(60),
];

/// When the pending batch is tried again.
struct Retry {
    attempt: usize,
    at: Instant,
}

/// The free space the state directory must have before a batch is read:
/// the cursor with the largest breaker state is about 400 KiB.
const STATE_ROOM: u64 = 1 << 20;

/// The most bytes past the cursor each status write looks through to
/// count the records behind it: a few SFTP reads, so a long catch-up is not
/// slowed by reading its backlog again every second. Beyond it the lag is
/// told in bytes only.
const LAG_COUNT_MAX: u64 = 256 * 1024;

/// Up to this many active bans, they are saved every 5 s when they
/// change; above, every 30 s (about a megabyte, written and fsynced).
const ACTIVE_FEW: usize = 10_000;

/// Up to this many active bans (some 150 KiB), they are saved before
/// every status write (at most once a second) that follows a change, so
/// that `banshare bans` lists every ban `banshare status` counts.
const ACTIVE_WITH_STATUS: usize = 1_000;

/// The most lines decided together: their records' signatures are checked
/// on all cores while the loop's thread decides them in order (see
/// [`super::checking`]). Bounds the records alive at a time when
/// `watch.batch_max` is raised past it; a batch of the default 10,000
/// lines is one window.
const CHECK_WINDOW: usize = 16_384;

/// The most lines decided together while signatures are checked one by
/// one (see [`Daemon::batch_failed`]): the pool is then the bottleneck, and
/// a large window would only hold more records at once; this keeps both
/// threads busy with about 50 ms of checks each.
const SINGLE_CHECK_WINDOW: usize = 2048;

/// Below this many lines in a window, they are parsed on the calling
/// thread: a follower's few lines gain nothing from threads.
const PARALLEL_READ_MIN: usize = 256;

/// How often a watcher that holds says so again.
const HOLD_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// At most this many rejected lines are logged one by one per minute; the
/// rest are counted and summed up, so a flood of garbage cannot flood the
/// journal.
const REJECT_LOG_PER_MINUTE: u32 = 20;

pub struct Daemon {
    opts: Options,
    feed: Box<dyn Feed>,
    /// How often the loop looks without being told to.
    mode: Mode,
    policy: Policy,
    backend: Box<dyn Backend>,
    status: Status,
    wake: Wake,
    /// Saves the cursor after each batch.
    cursor: CursorSaver,
    /// A decided batch not yet applied; the cursor stays before it.
    pending: Vec<Action>,
    retry: Option<Retry>,
    /// Lines were read since the cursor was last saved.
    unsaved: bool,
    /// The last batch read was full: a catch-up is under way.
    catching_up: bool,
    /// Those lines and their bytes (newlines included): they are behind
    /// the saved cursor, yet the follower has read past them.
    unsaved_lag: Unread,
    /// The policy's version when the active bans were last saved.
    saved_version: u64,
    /// The policy's control version (allowlist, lifted nodes) when
    /// `control.json` was last saved.
    saved_control: u64,
    rejects: RejectLog,
    last_status: Instant,
    last_active_save: Instant,
    /// The addresses the log is reached through, never banned.
    reach: Option<Reach>,
    /// When the hold (see [`Daemon::save_cursor`]) was last logged.
    hold_logged: Option<Instant>,
    firewall: FirewallGuard,
    /// The transport's addresses are known: its server was found (an
    /// `sftp://` host at once, a mount's server once it is mounted), or the
    /// log has been read, so there is none to find (a local disk). A share
    /// mounted after the watcher started has no server to protect before.
    transport_known: bool,
    /// The metrics file, when one is asked for.
    metrics: Option<WatchMetrics>,
    /// The last-seen times saved with the cursor, handed to the metrics
    /// when they start, and saved again as they were while there are none
    /// (a run without metrics must not forget them for the next one).
    last_seen: BTreeMap<String, DateTime<Utc>>,
    /// The last batch equation failed (a bad signature among its records),
    /// or none has held yet since the start or a reload: signatures are
    /// checked one by one, and lines read [`SINGLE_CHECK_WINDOW`] at a
    /// time, until a chunk of them comes out clean or a window has nothing
    /// to check, from one window to the next. A forged log costs one
    /// failed equation, not one per window (see `trust::verify_chunk`),
    /// and never holds more than a small window in memory, from its first
    /// read on; a genuine catch-up checks its first chunk one by one
    /// (about 0.1 s of CPU, once).
    batch_failed: bool,
}

impl Daemon {
    /// Prepares the backend, loads the saved position and active bans, and
    /// has the feed resume at that position and start watching.
    pub fn new(
        mut feed: Box<dyn Feed>,
        opts: Options,
        policy: PolicySettings,
        mut backend: Box<dyn Backend>,
    ) -> Result<(Daemon, Handle), WatchError> {
        // Asked before `setup` recreates them: missing now means a reboot
        // (or a flush while stopped), and the saved active bans are gone.
        let lost_at_start = matches!(backend.is_intact(), Ok(false));
        backend.setup().map_err(|source| WatchError::Backend {
            backend: backend.name(),
            source,
        })?;
        let state_err = |source| WatchError::State {
            path: opts.state.path().to_owned(),
            source,
        };
        let (mut cursor, saved) =
            CursorSaver::open(opts.state.clone(), Saving::EveryBatch).map_err(state_err)?;
        let mut policy = Policy::new(policy);
        if let Some(breaker) = saved.as_ref().and_then(|s| s.breaker.clone()) {
            policy.restore_breaker(breaker, Utc::now());
        }
        let last_seen = saved
            .as_ref()
            .map(|s| s.last_seen.clone())
            .unwrap_or_default();
        if let Some(saved) = saved {
            resume(&mut *feed, &saved.position);
        }
        let saved_bans = opts.state.load_active().map_err(state_err)?;
        policy.reserve_bans(saved_bans.len());
        for (net, ban) in saved_bans {
            policy.restore_active(net, ban);
        }
        policy.restore_control(opts.state.load_control().map_err(state_err)?);
        let saved_control = policy.control_version();
        let safety_poll = opts.safety_poll;
        let (mut wake, handle) = Wake::new(Mode::Poll(safety_poll));
        let mode = feed.watch(handle.clone());
        wake.set_mode(mode);
        // A pushed feed brings bans one at a time: its cursor is journaled
        // per batch and made durable once a second (see watch::cursor).
        if matches!(mode, Mode::Pushed { .. }) {
            cursor.set_saving(Saving::Coalesced);
        }
        let status = Status {
            node: opts.node.clone(),
            pid: std::process::id(),
            log: feed.log().to_owned(),
            // Where it resumes: `status` shows it before the first batch.
            offset: feed.position().map_or(0, |p| p.seq),
            backend: backend.name().into(),
            mode: mode.describe(),
            started: Some(Utc::now()),
            incident_controls: true,
            ..Status::default()
        };
        // Until a batch equation holds, a signed log may be forged.
        let batch_failed = !opts.trust.keys.is_empty();
        let mut daemon = Daemon {
            feed,
            mode,
            opts,
            policy,
            backend,
            status,
            wake,
            cursor,
            pending: Vec::new(),
            retry: None,
            unsaved: false,
            catching_up: false,
            unsaved_lag: Unread::default(),
            saved_version: 0,
            saved_control,
            rejects: RejectLog::new(),
            last_status: Instant::now(),
            last_active_save: Instant::now(),
            reach: None,
            hold_logged: None,
            firewall: FirewallGuard::new(safety_poll),
            transport_known: false,
            metrics: None,
            last_seen,
            batch_failed,
        };
        if lost_at_start {
            daemon
                .firewall
                .missing_at_start(&*daemon.backend, &daemon.policy);
        }
        Ok((daemon, handle))
    }

    /// Never bans the addresses `reach` finds, looked up now and kept up
    /// to date while the daemon runs.
    pub fn protect_transport(&mut self, reach: Reach) {
        self.reach = Some(reach);
        self.refresh_transport(true);
    }

    /// Looks the transport's addresses up again if due (or now, if
    /// `force`), and hands them to the policy when they changed.
    fn refresh_transport(&mut self, force: bool) {
        let Some(reach) = &mut self.reach else {
            return;
        };
        let Refresh::Changed(endpoints) = reach.refresh(force) else {
            return;
        };
        let endpoints = endpoints.clone();
        info!("never banning the addresses the log is reached through: {endpoints}");
        self.policy.set_transport_addresses(endpoints.addresses());
        self.transport_known |= !endpoints.is_empty();
        self.status.transport = endpoints;
    }

    /// Writes `metrics` to its file while the daemon runs (see
    /// [`crate::watch::metrics`]).
    pub fn export_metrics(&mut self, mut metrics: WatchMetrics) {
        info!("writing metrics to {}", metrics.describe());
        metrics.restore_last_seen(&self.last_seen, Utc::now());
        self.metrics = Some(metrics);
    }

    /// Runs until told to stop. `reload` returns the new policy settings on
    /// SIGHUP, or `None` if the configuration is bad (the old one stays).
    pub fn run(mut self, mut reload: impl FnMut() -> Option<Reloaded>) -> Status {
        info!(
            "watching {} as node {} ({}), applying with {}",
            self.feed.log(),
            self.opts.node,
            self.mode.describe(),
            self.backend.name()
        );
        // Written before the first look at the log, which may be a long
        // catch-up: `pause` and `lift` read it to know they may wake us.
        self.write_status();
        // A first look at the log, so that the status is true from the start.
        self.cycle();
        self.write_status();
        self.export_metrics_now(true, true);
        loop {
            match self.wake.wait_until(self.next_due()) {
                Some(Msg::Stop) => break,
                Some(Msg::Reload) => self.reload(&mut reload),
                Some(Msg::Changed) | None => {}
            }
            self.cycle();
        }
        self.shutdown()
    }

    fn reload(&mut self, reload: &mut impl FnMut() -> Option<Reloaded>) {
        match reload() {
            Some(Reloaded { policy, trust }) => {
                self.policy.reconfigure(policy);
                self.opts.trust = trust;
                // Other keys, or none: as at the start, nothing is known
                // of what comes.
                self.batch_failed = !self.opts.trust.keys.is_empty();
                self.refresh_transport(true);
                info!("configuration reloaded");
            }
            None => {
                warn!("configuration not reloaded: it has errors (see above); keeping the old one")
            }
        }
    }

    /// Reads and applies everything available, batch by batch, unless
    /// paused; lift requests are taken even then (they are this node's
    /// own operator's decision, not the log's).
    fn cycle(&mut self) {
        self.take_lift_requests();
        if !self.check_paused() && self.apply_pending() {
            self.read_and_apply();
        }
        self.housekeeping();
    }

    /// Whether applying is paused (`banshare pause`); logs the changes.
    /// A batch already decided waits too, with the cursor before it.
    fn check_paused(&mut self) -> bool {
        let paused = incident::paused(self.opts.state.path());
        if paused != self.status.paused {
            match &paused {
                Some(why) => warn!(
                    "PAUSED ({why}): applying nothing, reading nothing more from the log until                      `banshare resume`; records wait in the log"
                ),
                None => info!("resumed: catching up from the cursor"),
            }
            self.status.paused = paused;
            self.write_status();
        }
        self.status.paused.is_some()
    }

    /// Lifts the bans of each node a `banshare lift --node` asked for.
    fn take_lift_requests(&mut self) {
        let (requests, bad) = match incident::lift_requests(self.opts.state.path()) {
            Ok(found) => found,
            Err(e) => return warn!("cannot look for lift requests: {e}"),
        };
        for path in bad {
            self.rejects.log(&format!(
                "ignored {path}: not a lift request banshare wrote"
            ));
        }
        for request in requests {
            let unbans = self.policy.lift_node(&request.node, request.before);
            let count = unbans.len() as u64;
            self.apply_now(unbans);
            self.save_active_now();
            warn!(
                "LIFTED every ban of node {} ({count} in force); its ban records dated up to {} are \
                 refused from now on",
                request.node, request.before
            );
            let report = self
                .status
                .lifted
                .entry(request.node.to_string())
                .or_default();
            if report.before != request.before {
                *report = LiftReport {
                    before: request.before,
                    bans: 0,
                };
            }
            report.bans += count;
            // The request stays until the lifted node is saved: a crash
            // before then takes it again at the next start.
            if !self.save_control() {
                return;
            }
            self.write_status();
            if let Err(e) = std::fs::remove_file(&request.path) {
                warn!("cannot remove {}: {e}", request.path.display());
            }
        }
    }

    /// Applies unbans the policy decided on its own (a lift) at once, or
    /// after the pending batch if there is one (a refused batch being
    /// retried may ban what they lift: they must come after it). If the
    /// backend refuses them, they become the pending batch, retried with
    /// backoff like a batch of the log: the policy holds those bans no
    /// more, so nothing else would remove them from the firewall.
    fn apply_now(&mut self, unbans: Vec<Unban>) {
        if unbans.is_empty() {
            return;
        }
        let actions: Vec<Action> = unbans.into_iter().map(Action::Unban).collect();
        if !self.pending.is_empty() {
            self.pending.extend(actions);
            return;
        }
        match self.backend.apply(&actions) {
            Ok(()) => self.applied(&actions),
            Err(e) => {
                self.status.backend_errors += 1;
                error!("lifting {} ban(s) failed: {e}; trying again", actions.len());
                self.pending = actions;
            }
        }
    }

    /// Reads and applies batch after batch until the log is drained or a
    /// batch cannot be applied yet.
    fn read_and_apply(&mut self) {
        loop {
            // Between batches too: a catch-up of a million records is one
            // cycle, and a pause must not wait for its end.
            if !self.room_to_save() || self.check_paused() {
                return;
            }
            let batch_max = self.batch_max();
            let read = self.feed.read(batch_max);
            self.log_feed_notices();
            let lines = match read {
                Ok(lines) => {
                    self.log_reachable(None);
                    lines
                }
                Err(e) => return self.log_reachable(Some(e.to_string())),
            };
            let full = lines.len() >= batch_max;
            if !full && std::mem::replace(&mut self.catching_up, false) {
                release_freed_memory();
            }
            self.catching_up |= full;
            if lines.is_empty() {
                // Each wake-up that found nothing: seen with -v, to tell a
                // watcher that polls from one that never wakes.
                debug!("nothing new in the log");
                return;
            }
            debug!("read {} line(s) from the log", lines.len());
            self.unsaved = true;
            self.note_unsaved(&lines);
            self.pending = self.decide(&lines, Utc::now());
            let backlog = full.then(|| self.backlog_bans(&lines)).flatten();
            // The batch's lines, and with the apply its actions, are freed
            // before the map grows for the backlog: the old table and the
            // new one are held at once for a moment, and with the batch
            // beside them that moment was the catch-up's peak.
            drop(lines);
            let applied = self.apply_pending();
            if let Some(bans) = backlog {
                self.policy.reserve_bans(bans);
            }
            if !applied || !full {
                return;
            }
        }
    }

    /// The most lines to read at once: `watch.batch_max`, or a window's
    /// worth while signatures are checked one by one (a forged log), which
    /// costs checks enough per line that more lines at once would only
    /// hold more memory.
    fn batch_max(&self) -> usize {
        match self.batch_failed {
            true => self.opts.batch_max.min(SINGLE_CHECK_WINDOW),
            false => self.opts.batch_max,
        }
    }

    /// In a catch-up, how many more bans the rest of the log will likely
    /// put in force, to make room for in the policy's map at once: as many
    /// per byte as in `batch`, just decided, over the bytes still unread. Logs come
    /// in time order, so the newest part, read last, holds the live bans:
    /// a log that is mostly history reserves nothing until its live part
    /// starts, and then about what that part holds. Growing the map one
    /// doubling at a time instead rehashes every ban at each step and holds
    /// both tables for a moment.
    fn backlog_bans(&mut self, batch: &[Entry]) -> Option<usize> {
        let bans = self
            .pending
            .iter()
            .filter(|a| matches!(a, Action::Ban(_)))
            .count();
        let bytes: u64 = batch.iter().map(Entry::size).sum();
        if bans == 0 || bytes == 0 {
            return None;
        }
        let unread = self.feed.unread(0)?;
        let expected = (unread.bytes as f64 * bans as f64 / bytes as f64) as usize;
        debug!(
            "{} byte(s) unread: room for about {expected} more ban(s)",
            unread.bytes
        );
        Some(expected)
    }

    /// Says what the feed noticed: resuming, rotation, truncation.
    fn log_feed_notices(&mut self) {
        for notice in self.feed.take_notices() {
            match notice.warning {
                true => warn!("{}", notice.text),
                false => info!("{}", notice.text),
            }
        }
    }

    /// Notes whether the log could be read, logging only the changes.
    fn log_reachable(&mut self, error: Option<String>) {
        if error.is_none() && self.status.last_error.is_some() {
            // Back after an outage: the transport may have reconnected
            // elsewhere (a remount, a new DNS answer).
            self.refresh_transport(true);
        }
        if error != self.status.last_error {
            match &error {
                None => info!("log {} is readable again", self.feed.log()),
                Some(e) => warn!("cannot read the log (will retry): {e}"),
            }
        }
        self.status.log_present = error.is_none();
        self.transport_known |= error.is_none();
        self.status.last_error = error;
    }

    /// Decides a batch of lines, in order, into the backend's actions.
    fn decide(&mut self, lines: &[Entry], now: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::with_capacity(lines.len());
        // The screened signatures borrow the trusted keys while `self`
        // counts and decides; nothing in between reads them from `opts`.
        let trust = std::mem::take(&mut self.opts.trust);
        if trust.keys.is_empty() {
            // No signature to check: each line is decided as it is read,
            // without a window's copies of the records.
            for line in lines {
                if let Some(read) = self.read_line(line, &trust) {
                    self.decide_read(read, None, &trust, now, &mut actions);
                }
            }
        } else {
            let failed = AtomicBool::new(self.batch_failed);
            let mut rest = lines;
            while !rest.is_empty() {
                let (window, after) = rest.split_at(window_size(rest.len(), &failed));
                let (parsed, marks) = self.read_window(window, &trust, now);
                decide_checked(parsed, marks, &failed, &mut |read, checked| {
                    self.decide_read(read, checked, &trust, now, &mut actions)
                });
                rest = after;
            }
            self.batch_failed = failed.into_inner();
        }
        self.opts.trust = trust;
        actions
    }

    /// Counts a line and parses and screens it; `None` for a compaction
    /// marker.
    fn read_line<'k>(&mut self, line: &Entry, trust: &'k TrustPolicy) -> Option<Read<'k>> {
        self.status.lines_read += 1;
        read_line(line, trust)
    }

    /// Parses and screens up to [`CHECK_WINDOW`] lines on all cores, in
    /// order, and marks the signature checks to make: one for each record
    /// that has a signature to check and could change something by the
    /// policy's state before the window. The state moves on as the window
    /// is decided: a record left unchecked is asked again in its turn, and
    /// checked alone if it could then change something, so a stale answer
    /// costs time, never a wrong decision.
    fn read_window<'k>(
        &mut self,
        lines: &[Entry],
        trust: &'k TrustPolicy,
        now: DateTime<Utc>,
    ) -> (Window<'k>, Vec<bool>) {
        self.status.lines_read += lines.len() as u64;
        let policy = &self.policy;
        let read = |line| match read_line(line, trust) {
            Some(read) => {
                let check = needs_check(policy, &read, now);
                (Some(read), check)
            }
            None => (None, false),
        };
        // Into vectors of the window's size, made once: the window is
        // the catch-up's largest allocation.
        let (mut window, mut marks) = (Vec::new(), Vec::new());
        match lines.len() >= PARALLEL_READ_MIN {
            true => lines
                .par_iter()
                .map(read)
                .unzip_into_vecs(&mut window, &mut marks),
            false => (window, marks) = lines.iter().map(read).unzip(),
        }
        // A record with the id of one already among the checks is a copy
        // of it (a log read again, a spool sent twice): its check waits
        // for its turn, when the first has been decided and the copy, if
        // the first held, changes nothing and is dropped unchecked.
        let mut ids = HashSet::new();
        for (read, mark) in window.iter().zip(marks.iter_mut()) {
            if let (true, Some(Ok((record, _)))) = (*mark, read) {
                *mark = ids.insert(&record.fields.id);
            }
        }
        (window, marks)
    }

    /// Decides one line read, in its turn: `checked` is its signature's
    /// check if one was made for the window.
    fn decide_read(
        &mut self,
        read: Read<'_>,
        checked: Checked,
        trust: &TrustPolicy,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let (record, screened) = match read {
            Ok(read) => read,
            Err(reason) => return self.rejected(&reason),
        };
        let at = record_time(&record, now);
        self.status.last_record_ts = Some(at);
        let checked = match (screened, checked) {
            (Err(why), _) => Err(why),
            (Ok(Screened::Done(provenance)), _) => Ok(provenance),
            (Ok(Screened::Pending(_)), Some(checked)) => checked,
            (Ok(Screened::Pending(pending)), None) => {
                // Records decided since the window's check may have
                // changed the answer: asked again, for the state now.
                match self.unchecked_skip(&record, now) {
                    Some(skip) => return self.skipped(&record, skip, now),
                    None => pending.verify(&record),
                }
            }
        };
        let provenance = match checked.and_then(|p| trust.operator_rule(&record, p)) {
            Ok(provenance) => provenance,
            Err(why) => return self.untrusted(&record, why),
        };
        // Only records that passed the signature check (where
        // one is required) make a node label.
        if let Some(metrics) = &mut self.metrics {
            metrics.seen(record.fields.node.as_ref(), at, now);
        }
        if record.op.is_control() {
            return self.control(&record, now, actions);
        }
        match self.policy.decide_as(&record, provenance, now) {
            Ok(verdict) => {
                self.adjusted(&record, verdict.adjusted());
                actions.push(verdict.into_action(record));
            }
            Err(skip) => self.skipped(&record, skip, now),
        }
    }

    /// The skip for `record` if the policy would drop it without changing
    /// anything, were its signature good, and quietly: the skips that are
    /// logged with the node the record claims (an address never banned
    /// here, a clock far ahead, a ban over as soon as it arrived) wait for
    /// the signature, so that a forged record is told as forged, not
    /// blamed on that node.
    fn unchecked_skip(&self, record: &Record, now: DateTime<Utc>) -> Option<Skip> {
        unchecked_skip(&self.policy, record, now)
    }

    /// An operator's allowlist record: the unbans it makes join the batch.
    fn control(&mut self, record: &Record, now: DateTime<Utc>, actions: &mut Vec<Action>) {
        match self.policy.control(record, now) {
            Ok(unbans) => {
                let by = record.fields.node.as_ref().map_or("?", |n| n.as_str());
                warn!(
                    "allowlist: {} {} (signed by operator {by}){}",
                    record.op,
                    record.target,
                    match unbans.len() {
                        0 => String::new(),
                        n => format!("; lifting {n} ban(s) in force"),
                    }
                );
                actions.extend(unbans.into_iter().map(Action::Unban));
            }
            Err(skip) => self.skipped(record, skip, now),
        }
    }

    fn rejected(&mut self, reason: &record::RejectReason) {
        *self
            .status
            .rejected
            .entry(reason.kind().into())
            .or_default() += 1;
        let total: u64 = self.status.rejected.values().sum();
        self.rejects.log(&format!(
            "rejected a line of the log: {reason} ({total} rejected so far)"
        ));
    }

    /// A record whose signature is missing or wrong: counted as a
    /// rejection, and logged (rate-limited) with where it claims to be from.
    fn untrusted(&mut self, record: &Record, why: Untrusted) {
        *self.status.rejected.entry(why.kind().into()).or_default() += 1;
        let origin = record
            .fields
            .node
            .as_ref()
            .map_or("no node".into(), |n| format!("node {n}"));
        self.rejects.log(&format!(
            "refused {} {} (claims {origin}): {why}",
            record.op, record.target
        ));
    }

    /// A record applied with a change: counted, and logged (rate-limited)
    /// since each means a node is misconfigured or misbehaving.
    fn adjusted(&mut self, record: &Record, adjusted: Adjusted) {
        let origin = || {
            record
                .fields
                .node
                .as_ref()
                .map_or("an unknown node".into(), |n| format!("node {n}"))
        };
        if let Some(lead) = adjusted.ahead {
            *self.status.adjusted.entry("ClockAhead".into()).or_default() += 1;
            self.rejects.log(&format!(
                "{} {} from {} is dated {} ahead of this host's clock: applied, for at most its \
                 bantime from now (is its writer's clock wrong?)",
                record.op,
                record.target,
                origin(),
                lead_text(lead)
            ));
        }
        if let Some(asked) = adjusted.clamped {
            *self
                .status
                .adjusted
                .entry("BantimeClamped".into())
                .or_default() += 1;
            let max = self.policy.settings().max_bantime;
            let why = match asked {
                record::BanTime::Permanent => {
                    "a permanent ban needs a record signed by a trusted node".to_owned()
                }
                record::BanTime::Seconds(secs) => {
                    format!("bantime {secs}s is longer than max_bantime")
                }
            };
            self.rejects.log(&format!(
                "ban {} from {}: {why}; banned for max_bantime ({})",
                record.target,
                origin(),
                humantime::format_duration(max)
            ));
        }
    }

    fn skipped(&mut self, record: &Record, skip: Skip, now: DateTime<Utc>) {
        *self.status.skipped.entry(format!("{skip:?}")).or_default() += 1;
        if skip == Skip::BreakerTripped {
            // Loud, and never rate-limited: an operator must see this.
            let origin = record
                .fields
                .node
                .as_ref()
                .map_or("records without a node".into(), |n| format!("node {n}"));
            error!(
                "CIRCUIT BREAKER: {origin} sent more than {} bans in a minute; its records are refused for {} \
                 (other nodes' bans still apply). Check that node.",
                self.policy.settings().max_bans_per_node_per_minute,
                humantime::format_duration(self.policy.settings().breaker_cooldown)
            );
        }
        if skip == Skip::Expired {
            self.expired_on_arrival(record, now);
        }
        // Records that try to ban what must never be banned deserve a word;
        // the normal skips (own node, duplicates, expired) do not.
        if skip.is_reported() {
            let origin = record
                .fields
                .node
                .as_ref()
                .map_or("an unknown node".into(), |n| format!("node {n}"));
            let how_far = if skip == Skip::FromTheFuture {
                let lead = record_time(record, now) - now;
                format!(" (by {}; is its writer's clock wrong?)", lead_text(lead))
            } else {
                String::new()
            };
            self.rejects.log(&format!(
                "refused to {} {} from {origin}: {}{how_far}",
                record.op,
                record.target,
                skip.describe()
            ));
        }
    }

    /// Says, at the rejects' bounded rate, that a ban was already over when
    /// read although it is recent: dated less than two of its bantimes ago,
    /// so read soon after its bantime ran out. Its writer's clock (the
    /// publisher's, for a legacy ZeroMQ ban) is then likely behind, which
    /// silently drops every such ban; or this watcher was away. Older
    /// expired bans are a log's normal history and say nothing.
    fn expired_on_arrival(&mut self, record: &Record, now: DateTime<Utc>) {
        let Some((secs, age)) = self.expired_recently(record, now) else {
            return;
        };
        let origin = record
            .fields
            .node
            .as_ref()
            .map_or("an unknown node".into(), |n| format!("node {n}"));
        self.rejects.log(&format!(
            "skipped {} {} from {origin}: its {secs}s ban was already over when read, {} after \
             its date (is its writer's clock behind? a legacy ZeroMQ ban is dated by the \
             publisher's; or was this watcher away?)",
            record.op,
            record.target,
            lead_text(age)
        ));
    }

    /// For a ban over when read that [`Daemon::expired_on_arrival`] tells
    /// of: its bantime in seconds and its age.
    fn expired_recently(&self, record: &Record, now: DateTime<Utc>) -> Option<(u64, TimeDelta)> {
        expired_recently(&self.policy, record, now)
    }

    /// Applies the pending batch, then saves the cursor past it. Returns
    /// whether the loop may read on. A batch the backend refuses is kept,
    /// with the cursor before it, and retried with backoff after setting
    /// the backend up again (an `nft flush ruleset` removes banshare's
    /// table). After [`RETRY_DELAYS`] it is given up, loudly, so that one
    /// poisoned batch cannot stop the node for good; its bans are then
    /// forgotten by the policy, so a later report applies them.
    fn apply_pending(&mut self) -> bool {
        if !self.pending.is_empty() {
            if self.retry.as_ref().is_some_and(|r| Instant::now() < r.at) {
                return false;
            }
            let pending = std::mem::take(&mut self.pending);
            match self.backend.apply(&pending) {
                Ok(()) => self.applied(&pending),
                Err(e) => {
                    self.status.backend_errors += 1;
                    // If the table is what is missing, every active ban
                    // needs applying again, not only this batch's.
                    self.status.backend_errors +=
                        self.firewall.check(&mut *self.backend, &self.policy);
                    let _ = self.backend.setup();
                    if !self.schedule_retry(&pending, &e) {
                        self.pending = pending;
                        return false;
                    }
                }
            }
            self.retry = None;
        }
        (!self.unsaved || self.save_cursor()) && self.sync_cursor(false)
    }

    /// Keeps `batch` for a later retry (true: given up instead).
    fn schedule_retry(&mut self, batch: &[Action], e: &BackendError) -> bool {
        let attempt = self.retry.as_ref().map_or(0, |r| r.attempt + 1);
        let Some(delay) = RETRY_DELAYS.get(attempt) else {
            error!(
                "gave up on a batch of {} after {} attempts: {e}; its bans are not applied here",
                batch.len(),
                attempt + 1
            );
            for action in batch {
                self.policy.forget(action.target());
            }
            self.status.abandoned += batch.len() as u64;
            return true;
        };
        error!(
            "applying a batch of {} failed: {e}; retrying in {}s (reading waits)",
            batch.len(),
            delay.as_secs()
        );
        self.retry = Some(Retry {
            attempt,
            at: Instant::now() + *delay,
        });
        false
    }

    fn applied(&mut self, actions: &[Action]) {
        self.status.applied += actions.len() as u64;
        if let Some(metrics) = &self.metrics {
            let now = Utc::now();
            for ts in actions.iter().filter_map(action_time) {
                metrics.applied(ts, now);
            }
        }
        if actions.len() <= 10 {
            for action in actions {
                info!("applied {action}");
            }
        } else {
            info!("applied a batch of {}", actions.len());
        }
    }

    /// Saves the cursor past what was applied, with the circuit breaker's
    /// state as of it. When it cannot be saved (a full or read-only state
    /// directory), the watcher holds: it reads and applies nothing more,
    /// and tries again at every wake-up, so that it never runs ahead of the
    /// position a restart resumes from. Returns whether it is saved.
    fn save_cursor(&mut self) -> bool {
        let Some(position) = self.feed.position() else {
            self.unsaved = false;
            self.unsaved_lag = Unread::default();
            return true;
        };
        if !self.save_control() {
            return false;
        }
        let seq = position.seq;
        let saved = WatchCheckpoint {
            position,
            breaker: Some(self.policy.breaker_state(Utc::now())),
            last_seen: match &self.metrics {
                Some(metrics) => metrics.last_seen().clone(),
                None => self.last_seen.clone(),
            },
        };
        if let Err(e) = self.cursor.save(saved) {
            self.hold(format!(
                "cannot save the cursor in {}: {e}",
                self.opts.state.path().display()
            ));
            return false;
        }
        self.unsaved = false;
        self.unsaved_lag = Unread::default();
        self.status.offset = seq;
        self.end_hold();
        true
    }

    /// Saves the allowlist and the lifted nodes if they changed; holds
    /// (see [`Daemon::hold`]) if they cannot be saved, since the cursor
    /// must not move past the record that changed them.
    fn save_control(&mut self) -> bool {
        let version = self.policy.control_version();
        if version == self.saved_control {
            return true;
        }
        if let Err(e) = self.opts.state.save_control(&self.policy.saved_control()) {
            self.hold(format!(
                "cannot save the allowlist in {}: {e}",
                self.opts.state.path().display()
            ));
            return false;
        }
        self.saved_control = version;
        true
    }

    /// Writes the journaled cursor durably when it is due (or now, if
    /// `now`); holds as [`Daemon::save_cursor`] does when it cannot.
    /// Returns whether it is saved, or not yet due.
    fn sync_cursor(&mut self, now: bool) -> bool {
        match self.cursor.sync(now) {
            Ok(()) => true,
            Err(e) => {
                self.hold(format!(
                    "cannot save the cursor in {}: {e}",
                    self.opts.state.path().display()
                ));
                false
            }
        }
    }

    /// Before a batch is read: whether the state directory has room for the
    /// cursor after it. If not, the watcher holds before applying anything,
    /// so that a full disk leaves no applied record behind the saved
    /// cursor. (The save can still fail, if the disk fills during the batch
    /// or refuses writes: then `save_cursor` holds.)
    fn room_to_save(&mut self) -> bool {
        match self.opts.state.has_room(STATE_ROOM) {
            Ok(false) => {
                self.hold(format!(
                    "less than {} KiB free in {} for the cursor",
                    STATE_ROOM >> 10,
                    self.opts.state.path().display()
                ));
                false
            }
            // No way to tell: saving the cursor will.
            Ok(true) | Err(_) => {
                self.end_hold();
                true
            }
        }
    }

    /// Notes and logs that the watcher holds: at once, then once a minute.
    fn hold(&mut self, why: String) {
        let first = self.status.held.is_none();
        if first
            || self
                .hold_logged
                .is_none_or(|t| t.elapsed() >= HOLD_LOG_INTERVAL)
        {
            error!(
                "HOLDING: {why}; applying nothing more until the cursor can be saved (retrying)"
            );
            self.hold_logged = Some(Instant::now());
        }
        self.status.held = Some(why);
        if first {
            self.write_status();
        }
    }

    fn end_hold(&mut self) {
        if self.status.held.take().is_some() {
            self.hold_logged = None;
            warn!(
                "the state directory {} takes the cursor again: applying resumes",
                self.opts.state.path().display()
            );
        }
    }

    /// The firewall's check every safety poll, status at most once a
    /// second, active bans and metrics every few seconds when they changed.
    fn housekeeping(&mut self) {
        self.rejects.flush();
        if let Some(mode) = self.feed.recheck() {
            self.mode = mode;
            self.wake.set_mode(mode);
            self.status.mode = mode.describe();
        }
        self.refresh_transport(false);
        // Restoring bans before the transport's addresses are known could
        // ban the file server of a share that is not mounted yet (a reboot:
        // the mount comes up after the watcher), and then it never would.
        // An sftp:// server is known from its URL, even while it is down.
        if self.transport_known {
            self.status.backend_errors += self.firewall.poll(&mut *self.backend, &self.policy);
        }
        if self.last_status.elapsed() >= Duration::from_secs(1) {
            self.write_status();
        }
        if self.last_active_save.elapsed() >= self.active_save_interval() {
            self.save_active();
        }
        self.export_metrics_now(false, true);
    }

    /// When the loop must wake at the latest for a file that is due (the
    /// journaled cursor, the active bans, the metrics); `None` when none
    /// is, and then the follow mode alone wakes it.
    fn next_due(&self) -> Option<Instant> {
        let files = self.due_in().map(|d| Instant::now() + d);
        match (files, self.cursor.due()) {
            (Some(f), Some(c)) => Some(f.min(c)),
            (f, c) => f.or(c),
        }
    }

    /// How long the loop may sleep before a file is due (the active bans,
    /// the metrics): `None` when none is, and then the follow mode alone
    /// wakes it.
    fn due_in(&self) -> Option<Duration> {
        let active = (self.policy.version() != self.saved_version).then(|| {
            self.active_save_interval()
                .saturating_sub(self.last_active_save.elapsed())
        });
        let metrics = self
            .metrics
            .as_ref()
            .and_then(|m| m.due_in(&self.changes()));
        match (active, metrics) {
            (Some(a), Some(m)) => Some(a.min(m)),
            (a, m) => a.or(m),
        }
    }

    /// How often the active bans are saved when they changed: within
    /// seconds, for `banshare bans`, while they are few enough to write
    /// in a blink; less often when a save takes longer.
    fn active_save_interval(&self) -> Duration {
        match self.status.active_bans <= ACTIVE_FEW {
            true => Duration::from_secs(5),
            false => Duration::from_secs(30),
        }
    }

    /// What makes the metrics file due again when it changes.
    fn changes(&self) -> Changes {
        let s = &self.status;
        Changes {
            lines_read: s.lines_read,
            applied: s.applied,
            backend_errors: s.backend_errors,
            abandoned: s.abandoned,
            active: self.policy.version(),
            held: s.held.is_some(),
            log_present: s.log_present,
            tripped: s.tripped_nodes.len(),
            spool: self.metrics.as_ref().and_then(WatchMetrics::spool_stamp),
            connections: self.metrics.as_ref().map_or(0, WatchMetrics::connections),
        }
    }

    /// Writes the metrics file if it is due, or now if `force`; `running`
    /// is false as the watcher stops.
    fn export_metrics_now(&mut self, force: bool, running: bool) {
        let changes = self.changes();
        let Some(metrics) = &mut self.metrics else {
            return;
        };
        if !force && !metrics.is_due(&changes) {
            return;
        }
        let now = Utc::now();
        let snapshot = Snapshot {
            status: &self.status,
            active_by_jail: self.policy.active_by_jail(now),
            tripped: self
                .policy
                .tripped(now)
                .map(|(node, _)| node.map(|n| n.to_string()))
                .collect(),
            running,
            now,
        };
        metrics.export(changes, &snapshot);
    }

    fn write_status(&mut self) {
        let now = Utc::now();
        self.policy.prune(now);
        self.status.active_bans = self.policy.active_count(now);
        // `banshare bans` lists what `status` counts: a set small enough
        // to write in a blink is saved before each status that counts it.
        if self.status.active_bans <= ACTIVE_WITH_STATUS {
            self.save_active();
        }
        self.status.allowlist = self
            .policy
            .saved_control()
            .allow
            .into_iter()
            .filter(|e| e.listed)
            .map(|e| e.target)
            .collect();
        self.status.tripped_nodes = self
            .policy
            .tripped(now)
            .map(|(node, until)| (node.map_or("(no node)".into(), |n| n.to_string()), until))
            .collect();
        self.measure_lag();
        self.status.updated = Some(now);
        if let Err(e) = self.opts.state.save_status(&self.status) {
            warn!("cannot write status: {e}");
        }
        self.last_status = Instant::now();
    }

    /// Counts `lines`, just read, as read but not yet behind the saved
    /// cursor.
    fn note_unsaved(&mut self, lines: &[Entry]) {
        let bytes: u64 = lines.iter().map(Entry::size).sum();
        self.unsaved_lag.bytes += bytes;
        self.unsaved_lag.lines = Some(self.unsaved_lag.lines.unwrap_or(0) + lines.len() as u64);
    }

    /// The lag for `status`: what the follower has read but the saved
    /// cursor is still before (a batch the backend refuses, a cursor that
    /// cannot be saved), plus what it has not read yet, measured through
    /// the feed itself. The watcher measures it, not `status`, since only
    /// the watcher holds the log open, whatever its transport (an
    /// `sftp://` path is no path on this host; a pushed feed may have none),
    /// and `status` then needs no credentials. It is cheap: caught up, one
    /// look at the size and one empty read, at most once a second.
    fn measure_lag(&mut self) {
        let unread = self.feed.unread(LAG_COUNT_MAX);
        self.status.lag_bytes = unread.map(|u| u.bytes + self.unsaved_lag.bytes);
        self.status.lag_records = unread
            .and_then(|u| u.lines)
            .map(|n| n + self.unsaved_lag.lines.unwrap_or(0));
    }

    /// Saves the active bans now, not at the next 30 s tick: after a lift,
    /// a restart must not apply the lifted bans again.
    fn save_active_now(&mut self) {
        self.saved_version = u64::MAX;
        self.save_active();
    }

    fn save_active(&mut self) {
        self.last_active_save = Instant::now();
        if self.policy.version() == self.saved_version {
            return; // nothing changed since the last save
        }
        self.saved_version = self.policy.version();
        if let Err(e) = self.opts.state.save_active(self.policy.active_bans()) {
            warn!("cannot save active bans: {e}");
        }
    }

    fn shutdown(mut self) -> Status {
        if self.pending.is_empty() {
            // If it cannot be saved, the next start applies the last batch
            // again; hold() has said so.
            let _ = self.save_cursor();
            let _ = self.sync_cursor(true);
        } else {
            // The saved cursor stays before the batch: the next start reads
            // and applies it again.
            warn!(
                "stopping with a batch of {} not applied; it is read again at the next start",
                self.pending.len()
            );
            // What was applied before it, journaled, goes to cursor.json.
            let _ = self.sync_cursor(true);
        }
        self.save_active();
        self.write_status();
        self.export_metrics_now(true, false);
        info!("stopped");
        self.status
    }
}

/// When the record behind `action` was dated.
fn action_time(action: &Action) -> Option<DateTime<Utc>> {
    match action {
        Action::Ban(ban) => ban.ts,
        Action::Unban(unban) => unban.ts,
    }
}

/// A clock's lead, to the second: `10m 3s`.
fn lead_text(lead: chrono::TimeDelta) -> String {
    let secs = lead.num_seconds().max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// See [`Daemon::unchecked_skip`]: a question for the policy alone, so
/// that a window's lines can ask it on all cores.
fn unchecked_skip(policy: &Policy, record: &Record, now: DateTime<Utc>) -> Option<Skip> {
    let skip = policy.precheck(record, Provenance::Verified, now).err()?;
    let quiet = match skip {
        Skip::Expired => expired_recently(policy, record, now).is_none(),
        skip => !skip.is_reported(),
    };
    quiet.then_some(skip)
}

/// See [`Daemon::expired_recently`].
fn expired_recently(
    policy: &Policy,
    record: &Record,
    now: DateTime<Utc>,
) -> Option<(u64, TimeDelta)> {
    let bantime = record
        .fields
        .bantime
        .unwrap_or(policy.settings().default_bantime);
    let record::BanTime::Seconds(secs) = bantime else {
        return None;
    };
    let age = now - record_time(record, now);
    (age.num_seconds() < 2 * secs as i64).then_some((secs, age))
}

/// How many of the `rest` lines of a batch to decide as the next window:
/// windows of equal size, a batch of `batch_max` lines being one window
/// unless that is raised past [`CHECK_WINDOW`], and smaller ones while the
/// last batch equation failed (`failed`).
fn window_size(rest: usize, failed: &AtomicBool) -> usize {
    let most = match failed.load(Ordering::Relaxed) {
        true => SINGLE_CHECK_WINDOW,
        false => CHECK_WINDOW,
    };
    rest.div_ceil(rest.div_ceil(most)).max(1)
}

/// Whether `read` has a signature to check that could change something by
/// `policy`'s state now (copies aside, see [`Daemon::read_window`]).
fn needs_check(policy: &Policy, read: &Read<'_>, now: DateTime<Utc>) -> bool {
    match read {
        Ok((record, Ok(Screened::Pending(_)))) => unchecked_skip(policy, record, now).is_none(),
        _ => false,
    }
}

/// Parses and screens a line; `None` for a compaction marker.
fn read_line<'k>(line: &Entry, trust: &'k TrustPolicy) -> Option<Read<'k>> {
    if let Entry::Record(bytes) = line
        && record::is_compaction_marker(bytes)
    {
        // Debug only: anyone who can write the log can write this line
        // too, so it must not flood the journal.
        debug!(
            "reading a compacted log ({:?}): records already applied change nothing",
            String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
        );
        return None;
    }
    Some(parse_line(line).map(|record| {
        let screened = trust.screen(&record);
        (record, screened)
    }))
}

fn parse_line(line: &Entry) -> Result<Record, record::RejectReason> {
    match line {
        Entry::Record(bytes) => record::parse(bytes),
        Entry::TooLong { len } => Err(record::RejectReason::TooLong { len: *len as usize }),
    }
}

/// Hands the heap's free memory back to the system, once a catch-up is
/// over: its batches of up to `batch_max` lines and their records were
/// freed, but glibc keeps freed memory for reuse, and a follower reads a
/// few lines at a time from then on (about 2 MB at 100,000 bans).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Has `feed` go on from the saved `position`, or from the start of the
/// log if it cannot (another log or transport than when it was saved).
fn resume(feed: &mut dyn Feed, position: &Position) {
    if let Err(why) = feed.resume(position) {
        warn!(
            "the saved position cannot be used ({why}): reading {} from the start; \
             records already applied change nothing",
            feed.log()
        );
    }
}

/// Rate-limits messages about hostile input.
struct RejectLog {
    window: Instant,
    logged: u32,
    suppressed: u64,
}

impl RejectLog {
    fn new() -> RejectLog {
        RejectLog {
            window: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }

    fn log(&mut self, message: &str) {
        self.flush();
        if self.logged < REJECT_LOG_PER_MINUTE {
            self.logged += 1;
            warn!("{}", message);
        } else {
            self.suppressed += 1;
        }
    }

    /// Starts a new minute, summing up what was suppressed in the last.
    fn flush(&mut self) {
        if self.window.elapsed() < Duration::from_secs(60) {
            return;
        }
        if self.suppressed > 0 {
            warn!(
                "{} more rejected, refused or adjusted lines in the last minute were not logged one by one",
                self.suppressed
            );
        }
        *self = RejectLog::new();
    }
}
