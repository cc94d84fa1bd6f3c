//! `banshare monitor`: share fail2ban's bans without changing fail2ban's
//! configuration, as fail2ban-zmq-tools' monitor did.
//!
//! It follows fail2ban.log with the same follower as the watcher (rotation
//! aware, cursor persisted atomically), turns each `NOTICE [jail] Ban IP`
//! and `Unban IP` into a record, and delivers the records of one read as
//! one batch through the transport, or to the spool when the log is out of
//! reach. `Restore Ban` lines (fail2ban re-applying its database at start)
//! and the excluded jails (by default `banshare`, the jail that receives
//! banshare's own bans) are not shared, nor are addresses every watcher
//! refuses (loopback, multicast, ...: [`crate::record::never_ban`]).
//!
//! On its first run (no saved cursor) it starts at the end of fail2ban.log:
//! bans from before banshare was installed are not shared.

pub mod f2blog;

use std::path::PathBuf;

use crate::follow::{Handle, LocalFs, Mode, Msg, Wake};
use crate::metrics::{MetricsError, StateExporter, counter, int_gauge};
use crate::outbox::append::{self, Outcome, Request, Writer};
use crate::outbox::spool::Spool;
use crate::record::{BanTime, Jail, Op, PortSpec, Record, never_ban};
use crate::state::{Checkpoint, StateDir};
use crate::transport::feed::{Entry, Feed};
use crate::transport::file::FileFeed;
use crate::transport::lock::LockTimings;
use crate::transport::{self, LogLocation, Publisher};
use f2blog::{Event, Kind};
use log::{error, info, warn};

/// What the monitor needs.
pub struct Options {
    pub fail2ban_log: PathBuf,
    pub mode: Mode,
    pub state: StateDir,
    /// Bans of these jails are not shared.
    pub exclude_jails: Vec<Jail>,
    /// The bantime records carry (fail2ban.log does not say); `None`: each
    /// watcher applies its own default.
    pub bantime: Option<BanTime>,
    pub writer: Writer,
    /// Where and how to deliver.
    pub log: LogLocation,
    pub spool: Spool,
    pub lock: LockTimings,
    pub sftp: crate::transport::SftpSettings,
    pub zmq: crate::transport::zmq::ZmqSettings,
    pub nats: crate::transport::nats::NatsSettings,
    pub deadline: std::time::Duration,
    pub batch_max: usize,
    /// Where to write the metrics, if anywhere.
    pub metrics_file: Option<PathBuf>,
}

/// Counters, logged at stop and written to the metrics file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub shared: u64,
    pub spooled: u64,
    pub skipped: u64,
    pub bad: u64,
}

/// What the monitor's metrics file shows (see docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    counts: Counts,
    /// Whether fail2ban.log could be read at the last try.
    readable: Option<bool>,
    running: bool,
}

/// The metrics of `shown`.
fn metrics_registry(shown: &Shown) -> Result<prometheus::Registry, MetricsError> {
    let r = prometheus::Registry::new();
    let c = &shown.counts;
    counter(
        &r,
        "banshare_monitor_shared_total",
        "Records delivered to the shared log",
        c.shared,
    )?;
    counter(
        &r,
        "banshare_monitor_spooled_total",
        "Records spooled because the shared log could not take them",
        c.spooled,
    )?;
    counter(
        &r,
        "banshare_monitor_not_shared_total",
        "Ban and unban lines not shared: excluded jails, Restore Ban, addresses no watcher applies",
        c.skipped,
    )?;
    counter(
        &r,
        "banshare_monitor_bad_lines_total",
        "fail2ban.log lines that could not be read",
        c.bad,
    )?;
    if let Some(readable) = shown.readable {
        int_gauge(
            &r,
            "banshare_monitor_fail2ban_log_readable",
            "1 when fail2ban.log could be read at the last attempt",
            i64::from(readable),
        )?;
    }
    int_gauge(
        &r,
        "banshare_monitor_running",
        "1 while the monitor runs; 0 written as it stops",
        i64::from(shown.running),
    )?;
    Ok(r)
}

pub struct Monitor {
    opts: Options,
    /// Kept for the monitor's life: one connection for every batch, made
    /// again only after a call failed or outlived its deadline.
    publisher: Publisher,
    /// fail2ban.log, followed as the file transport follows the shared log.
    feed: Box<dyn Feed>,
    wake: Wake,
    /// Records read but neither delivered nor spooled yet: they go first.
    pending: Vec<Record>,
    counts: Counts,
    reachable: Option<bool>,
    /// Lines were read since the cursor was last saved.
    unsaved: bool,
    /// The cursor could not be saved at the last try.
    held: bool,
    metrics: Option<StateExporter<Shown>>,
}

impl Monitor {
    pub fn new(mut opts: Options) -> std::io::Result<(Monitor, Handle)> {
        let path = opts.fail2ban_log.clone();
        let mut feed: Box<dyn Feed> = Box::new(FileFeed::new(
            LocalFs,
            path.clone(),
            path.display().to_string(),
            opts.mode,
        ));
        let saved: Option<Checkpoint> = opts.state.load_checkpoint()?;
        // A position in another file (fail2ban.log moved): as a first run.
        let first_run = match saved.map(|s| feed.resume(&s.position)) {
            Some(Ok(())) => false,
            Some(Err(why)) => {
                warn!("the saved position cannot be used ({why}): starting as on a first run");
                true
            }
            None => true,
        };
        let (mut wake, handle) = Wake::new(opts.mode);
        opts.mode = feed.watch(handle.clone());
        wake.set_mode(opts.mode);
        let owner = crate::transport::lock::Owner {
            node: opts.writer.node.to_string(),
            pid: std::process::id(),
        };
        let publisher = transport::publisher(
            &opts.log,
            &transport::WriterSettings {
                local_lock: opts.spool.append_lock_path(),
                owner,
                timings: opts.lock,
                sftp: opts.sftp.clone(),
                zmq: opts.zmq.clone(),
                nats: opts.nats.clone(),
            },
        );
        let metrics = opts.metrics_file.clone().map(StateExporter::new);
        let mut monitor = Monitor {
            opts,
            metrics,
            publisher,
            feed,
            wake,
            pending: Vec::new(),
            counts: Counts::default(),
            reachable: None,
            unsaved: false,
            held: false,
        };
        if first_run {
            monitor.skip_history();
        }
        Ok((monitor, handle))
    }

    /// Runs until a stop message.
    pub fn run(mut self) -> Counts {
        info!(
            "monitoring {} ({}), sharing to {} as node {}",
            self.opts.fail2ban_log.display(),
            self.opts.mode.describe(),
            self.opts.log,
            self.opts.writer.node
        );
        if let Some(metrics) = &self.metrics {
            info!("writing metrics to {}", metrics.describe());
        }
        let mut first = true;
        loop {
            self.cycle();
            self.export_metrics(std::mem::take(&mut first), true);
            let due = self
                .metrics
                .as_ref()
                .and_then(|m| m.due_in(&self.shown(true)));
            if self.wake.wait_at_most(due) == Some(Msg::Stop) {
                break;
            }
        }
        let _ = self.save_cursor();
        self.export_metrics(true, false);
        let c = &self.counts;
        info!(
            "stopped: {} shared, {} spooled, {} not shared, {} bad lines",
            c.shared, c.spooled, c.skipped, c.bad
        );
        self.counts
    }

    fn shown(&self, running: bool) -> Shown {
        Shown {
            counts: self.counts.clone(),
            readable: self.reachable,
            running,
        }
    }

    /// Writes the metrics file if due, or now if `force`.
    fn export_metrics(&mut self, force: bool, running: bool) {
        let shown = self.shown(running);
        if let Some(metrics) = &mut self.metrics {
            metrics.export(&shown, force, metrics_registry);
        }
    }

    /// First run: start at the end of fail2ban.log.
    fn skip_history(&mut self) {
        let mut skipped = 0usize;
        while let Ok(lines) = self.feed.read(self.opts.batch_max) {
            if lines.is_empty() {
                break;
            }
            skipped += lines.len();
        }
        let _ = self.save_cursor();
        info!(
            "first run: starting at the end of fail2ban.log ({skipped} earlier lines not shared)"
        );
    }

    /// Shares what was read, batch by batch. Like the watcher, it never
    /// reads past a cursor it could not save: it holds, and tries again at
    /// the next wake-up.
    fn cycle(&mut self) {
        loop {
            if !self.pending.is_empty() && !self.deliver() {
                return; // retried on the next wake-up
            }
            if self.unsaved && !self.save_cursor() {
                return;
            }
            let lines = match self.feed.read(self.opts.batch_max) {
                Ok(lines) => {
                    self.note_reachable(true, None);
                    lines
                }
                Err(e) => return self.note_reachable(false, Some(e.to_string())),
            };
            if lines.is_empty() {
                return;
            }
            self.unsaved = true;
            self.pending = self.records(&lines);
        }
    }

    fn records(&mut self, lines: &[Entry]) -> Vec<Record> {
        let mut records = Vec::new();
        for line in lines {
            let Entry::Record(bytes) = line else {
                continue;
            };
            match f2blog::parse(bytes) {
                Ok(Some(event)) => match self.record(&event) {
                    Some(Ok(record)) => records.push(record),
                    Some(Err(e)) => error!("cannot make a record id: {e}"),
                    None => self.counts.skipped += 1,
                },
                Ok(None) => {}
                Err(bad) => {
                    self.counts.bad += 1;
                    warn!("fail2ban.log: {bad} ({} so far)", self.counts.bad);
                }
            }
        }
        records
    }

    /// The record for an event, or `None` if it is not shared.
    fn record(&self, event: &Event) -> Option<Result<Record, getrandom::Error>> {
        let op = match event.kind {
            Kind::Ban => Op::Ban,
            Kind::Unban => Op::Unban,
            Kind::RestoreBan => return None,
        };
        if self.opts.exclude_jails.contains(&event.jail) {
            return None;
        }
        // What every watcher refuses is not written at all, as `banshare
        // ban` refuses it. (fail2ban bans single addresses, so only the
        // fixed ranges matter here, not the prefix limits.)
        if let Err(why) = never_ban::check(event.target.net(), 0, 0) {
            warn!(
                "not shared: [{}] {op} {}: {why}, which watchers refuse",
                event.jail, event.target
            );
            return None;
        }
        let request = Request {
            op,
            targets: vec![event.target],
            ports: PortSpec::all(),
            jail: Some(event.jail.clone()),
            bantime: self.opts.bantime,
        };
        Some(
            append::build_records(&request, &self.opts.writer, event.time).map(|mut r| r.remove(0)),
        )
    }

    /// Delivers the pending records (or spools them); false if neither.
    fn deliver(&mut self) -> bool {
        let records = std::mem::take(&mut self.pending);
        let count = records.len() as u64;
        match append::deliver(
            records.clone(),
            &mut self.publisher,
            &self.opts.spool,
            self.opts.deadline,
        ) {
            Ok(Outcome::Delivered { .. }) => {
                self.counts.shared += count;
                info!("shared {count} record(s)");
                true
            }
            // `deliver` never journals; kept records are kept either way.
            Ok(Outcome::Spooled { reason } | Outcome::Journaled { reason, .. }) => {
                self.counts.spooled += count;
                warn!("{count} record(s) spooled: {reason}");
                true
            }
            Err(e) => {
                error!("{count} record(s) could be neither delivered nor spooled: {e}; retrying");
                self.pending = records;
                false
            }
        }
    }

    fn note_reachable(&mut self, ok: bool, error: Option<String>) {
        if self.reachable != Some(ok) {
            match error {
                Some(e) => warn!("cannot read fail2ban.log (will retry): {e}"),
                None if self.reachable.is_some() => info!("fail2ban.log is readable again"),
                None => {}
            }
        }
        self.reachable = Some(ok);
    }

    /// Returns whether the cursor is saved; logs when that changes.
    fn save_cursor(&mut self) -> bool {
        let Some(position) = self.feed.position() else {
            self.unsaved = false;
            return true;
        };
        let dir = self.opts.state.path().display();
        match self.opts.state.save_checkpoint(&Checkpoint { position }) {
            Ok(()) => {
                if std::mem::take(&mut self.held) {
                    warn!("cursor saved again in {dir}: sharing resumes");
                }
                self.unsaved = false;
                true
            }
            Err(e) => {
                if !std::mem::replace(&mut self.held, true) {
                    error!(
                        "HOLDING: cannot save the cursor in {dir}: {e}; sharing nothing more until it can be saved (retrying)"
                    );
                }
                false
            }
        }
    }
}
