//! The watcher's metrics file (`--metrics-file`, `[watch] metrics_file`):
//! its [`Status`] counters, its active bans per jail, its lag, the local
//! spool, each origin node's last record and circuit breaker, and how long
//! records took from their `ts` to being applied here. docs/operations.md
//! lists every metric and example alerts.
//!
//! The daemon writes it through [`WatchMetrics::export`] at most every
//! [`WRITE_INTERVAL`](crate::metrics::WRITE_INTERVAL), and only when
//! something changed or a gauge that follows the clock needs it (the
//! spool's oldest record, the lag in seconds): an idle watcher does not
//! write it, nor wake up for it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use prometheus::{GaugeVec, Histogram, HistogramOpts, IntGaugeVec, Opts, Registry};

use super::state::Status;
use crate::metrics::{
    BoundedLabels, MetricsError, MetricsFile, NONE, OTHER, Served, counter, counter_by, encode,
    gauge, int_gauge, log_failure,
};
use crate::outbox::spool::{Spool, SpoolSummary};
use crate::record::NodeId;

/// Origin nodes with a label of their own; the others share `_other`.
pub const MAX_NODE_LABELS: usize = 64;
/// Jails with a label of their own in `banshare_watch_active_bans`.
pub const MAX_JAIL_LABELS: usize = 64;

/// How often the file is looked at again when nothing in the watcher
/// changed, at a wake-up the watcher has anyway.
const REFRESH: Duration = Duration::from_secs(60);

/// The propagation delay's buckets, in seconds: from a watcher woken by
/// inotify (milliseconds) through polling over sshfs (a second) to a
/// spool delivered after an outage (minutes, hours).
const DELAY_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0,
];

/// What the watcher knows when it writes the file, besides what
/// [`WatchMetrics`] keeps itself.
pub struct Snapshot<'a> {
    pub status: &'a Status,
    /// Active bans per jail (`None`: records without a jail).
    pub active_by_jail: Vec<(Option<String>, usize)>,
    /// The nodes whose circuit breaker is open (`None`: records without a
    /// node).
    pub tripped: Vec<Option<String>>,
    /// False in the last write, as the watcher stops.
    pub running: bool,
    pub now: DateTime<Utc>,
}

/// The parts of the status whose change makes the file due again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub lines_read: u64,
    pub applied: u64,
    pub backend_errors: u64,
    pub abandoned: u64,
    /// The policy's version: bumped when the active bans change.
    pub active: u64,
    pub held: bool,
    pub log_present: bool,
    pub tripped: usize,
    /// The spool folder's modification time: `banshare ban` spools
    /// without the watcher knowing, and one `stat` a wake-up tells.
    pub spool: Option<SystemTime>,
    /// The connections the feed made (see [`WatchMetrics::count_connections`]).
    pub connections: u64,
}

/// The watcher's metrics and their file.
pub struct WatchMetrics {
    file: MetricsFile,
    spool: Option<Spool>,
    nodes: BoundedLabels,
    jails: BoundedLabels,
    /// Per node label, the time of its newest record read.
    last_seen: BTreeMap<String, DateTime<Utc>>,
    delay: Histogram,
    /// What the file showed when last written.
    written: Option<Changes>,
    /// The file shows a gauge that follows the clock: written again every
    /// interval while it does.
    clock_gauges: bool,
    /// The last write failed.
    failing: bool,
    /// The records in each spool file seen (see [`Spool::summary_counted`]).
    spool_counted: HashMap<PathBuf, usize>,
    /// The feed's count of connections made to the log's servers, for a
    /// transport that holds connections (NATS, ZeroMQ).
    connections: Option<Arc<AtomicU64>>,
}

impl WatchMetrics {
    /// Metrics for the file at `path`, served by `served`, or both,
    /// counting the records waiting in `spool` if given.
    pub fn new(
        path: Option<PathBuf>,
        served: Option<Served>,
        spool: Option<Spool>,
    ) -> Result<WatchMetrics, MetricsError> {
        let delay = Histogram::with_opts(
            HistogramOpts::new(
                "banshare_watch_propagation_delay_seconds",
                "Time from a record's own time (its ts) to its application on this node",
            )
            .buckets(DELAY_BUCKETS.to_vec()),
        )?;
        Ok(WatchMetrics {
            file: MetricsFile::to(path, served),
            spool,
            nodes: BoundedLabels::new(MAX_NODE_LABELS),
            jails: BoundedLabels::new(MAX_JAIL_LABELS),
            last_seen: BTreeMap::new(),
            delay,
            written: None,
            clock_gauges: false,
            failing: false,
            spool_counted: HashMap::new(),
            connections: None,
        })
    }

    /// Exports `connections`, the feed's count of connections made to the
    /// log's servers: 1 while the first holds, one more per reconnect.
    pub fn count_connections(&mut self, connections: Arc<AtomicU64>) {
        self.connections = Some(connections);
    }

    /// The connections the feed made so far; 0 for a feed without any.
    pub fn connections(&self) -> u64 {
        self.connections
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Where the metrics go, for the log.
    pub fn describe(&self) -> String {
        self.file.describe()
    }

    /// A record from `node` dated `at` was read at `now` (and its
    /// signature, if required, checked). A record dated ahead counts as
    /// read now: a clock ahead (or a lying `ts`) must not hide its node's
    /// silence for as long as it is ahead.
    pub fn seen(&mut self, node: Option<&NodeId>, at: DateTime<Utc>, now: DateTime<Utc>) {
        let label = self.nodes.label(node.map(NodeId::as_str));
        Self::merge(&mut self.last_seen, label, at.min(now));
    }

    /// Per node label, the time of its newest record read: saved with the
    /// cursor (see [`WatchCheckpoint::last_seen`](super::state::WatchCheckpoint)).
    pub fn last_seen(&self) -> &BTreeMap<String, DateTime<Utc>> {
        &self.last_seen
    }

    /// Takes in the last-seen times a previous run saved, so that a node
    /// silent since is still shown (and alerted on). Labels go through the
    /// same bound as new ones: a saved file with more names than the bound
    /// (an older bound, an edited file) folds the rest into `_other`.
    pub fn restore_last_seen(
        &mut self,
        saved: &BTreeMap<String, DateTime<Utc>>,
        now: DateTime<Utc>,
    ) {
        for (name, at) in saved {
            let label = match name.as_str() {
                NONE | OTHER => name.as_str(),
                name => self.nodes.label(Some(name)),
            };
            Self::merge(&mut self.last_seen, label, (*at).min(now));
        }
    }

    fn merge(last_seen: &mut BTreeMap<String, DateTime<Utc>>, label: &str, at: DateTime<Utc>) {
        match last_seen.get_mut(label) {
            Some(last) => *last = (*last).max(at),
            None => {
                last_seen.insert(label.to_owned(), at);
            }
        }
    }

    /// A record dated `ts` was applied at `now`.
    pub fn applied(&self, ts: DateTime<Utc>, now: DateTime<Utc>) {
        let delay = (now - ts).num_milliseconds().max(0) as f64 / 1000.0;
        self.delay.observe(delay);
    }

    /// How long the daemon may wait before the file is due (see the
    /// module's doc): `None` when nothing is, so an idle watcher sleeps
    /// as long as its follow mode lets it.
    pub fn due_in(&self, changes: &Changes) -> Option<Duration> {
        (self.written.as_ref() != Some(changes) || self.clock_gauges)
            .then(|| self.file.wait_before_write())
    }

    /// The spool folder's modification time (see [`Changes::spool`]).
    pub fn spool_stamp(&self) -> Option<SystemTime> {
        let spool = self.spool.as_ref()?;
        std::fs::metadata(spool.dir())
            .and_then(|m| m.modified())
            .ok()
    }

    /// Whether the file should be written now: it is due, or it was last
    /// written [`REFRESH`] ago (for anything that changed unseen), checked
    /// only when the watcher wakes up anyway.
    pub fn is_due(&self, changes: &Changes) -> bool {
        self.due_in(changes) == Some(Duration::ZERO) || self.file.since_write() >= REFRESH
    }

    /// Writes the file from `snapshot` (whose changes are `changes`). A
    /// failure is logged when it starts and when it ends, not at every
    /// write.
    pub fn export(&mut self, changes: Changes, snapshot: &Snapshot) {
        let spool = spool_summary(self.spool.as_ref(), &mut self.spool_counted);
        let spooled = spool.is_some_and(|s| s.records > 0);
        let lagging = behind(snapshot.status);
        self.clock_gauges = snapshot.running && (spooled || lagging);
        self.written = Some(changes);
        let result = registry(self, snapshot, spool)
            .and_then(|r| encode(&r))
            .and_then(|text| self.file.write(text));
        self.failing = log_failure(result, self.failing, &self.file.describe());
    }
}

/// Whether records wait past the cursor: complete ones counted, or more
/// bytes than could be counted. An unfinished last line alone (a writer
/// midway) is not being behind.
fn behind(status: &Status) -> bool {
    match (status.lag_records, status.lag_bytes) {
        (Some(records), _) => records > 0,
        (None, bytes) => bytes.is_some_and(|b| b > 0),
    }
}

/// The spool's state, or `None` when it cannot be read (then its gauges
/// are left out rather than shown as empty). `counted`: see
/// [`Spool::summary_counted`].
fn spool_summary(
    spool: Option<&Spool>,
    counted: &mut HashMap<PathBuf, usize>,
) -> Option<SpoolSummary> {
    let spool = spool?;
    match spool.summary_counted(counted) {
        Ok(summary) => Some(summary),
        Err(e) => {
            log::warn!("metrics: cannot read the spool: {e}");
            None
        }
    }
}

/// Builds the registry from `s` and what `m` keeps.
fn registry(
    m: &mut WatchMetrics,
    s: &Snapshot,
    spool: Option<SpoolSummary>,
) -> Result<Registry, MetricsError> {
    let r = Registry::new();
    let st = s.status;
    counter(
        &r,
        "banshare_watch_lines_read_total",
        "Lines read from the shared log",
        st.lines_read,
    )?;
    counter(
        &r,
        "banshare_watch_applied_total",
        "Bans and unbans applied through the backend",
        st.applied,
    )?;
    counter_by(
        &r,
        "banshare_watch_rejected_total",
        "Lines refused before the policy: not a record (by parse error) or a missing or bad signature",
        "reason",
        &st.rejected,
    )?;
    counter_by(
        &r,
        "banshare_watch_refused_total",
        "Records the policy did not apply, by reason (OwnNode, AlreadyBanned, Expired, NodeTripped, ...)",
        "reason",
        &st.skipped,
    )?;
    counter_by(
        &r,
        "banshare_watch_adjusted_total",
        "Records applied with a change: ClockAhead, BantimeClamped",
        "reason",
        &st.adjusted,
    )?;
    counter(
        &r,
        "banshare_watch_backend_errors_total",
        "Failed backend calls (each retried)",
        st.backend_errors,
    )?;
    counter(
        &r,
        "banshare_watch_abandoned_total",
        "Bans and unbans given up after the backend refused them for minutes",
        st.abandoned,
    )?;
    let by_jail = IntGaugeVec::new(
        Opts::new(
            "banshare_watch_active_bans",
            "Bans in force on this node, by jail",
        ),
        &["jail"],
    )?;
    for (jail, n) in &s.active_by_jail {
        by_jail
            .with_label_values(&[m.jails.label(jail.as_deref())])
            .add(*n as i64);
    }
    r.register(Box::new(by_jail))?;
    lag(&r, s)?;
    int_gauge(
        &r,
        "banshare_watch_cursor",
        "The applied cursor: a byte offset in a file log, the stream sequence of the last record applied in a nats:// log",
        i64::try_from(st.offset).unwrap_or(i64::MAX),
    )?;
    if let Some(connections) = &m.connections {
        counter(
            &r,
            "banshare_watch_log_connections_total",
            "Connections the feed made to the log's servers (nats://, zmq+tcp://): more than one is a reconnect",
            connections.load(Ordering::Relaxed),
        )?;
    }
    int_gauge(
        &r,
        "banshare_watch_log_readable",
        "1 when the log could be read at the last attempt",
        i64::from(st.log_present),
    )?;
    int_gauge(
        &r,
        "banshare_watch_held",
        "1 while the watcher applies nothing because its cursor cannot be saved",
        i64::from(st.held.is_some()),
    )?;
    int_gauge(
        &r,
        "banshare_watch_running",
        "1 while the watcher runs; 0 written as it stops",
        i64::from(s.running),
    )?;
    if let Some(started) = st.started {
        gauge(
            &r,
            "banshare_watch_start_time_seconds",
            "When the watcher started (Unix time)",
            seconds(started),
        )?;
    }
    nodes(&r, m, s)?;
    r.register(Box::new(m.delay.clone()))?;
    if let Some(spool) = spool {
        spool_gauges(&r, spool, s.now)?;
    }
    Ok(r)
}

/// The lag behind the end of the log, in bytes, records and seconds.
fn lag(r: &Registry, s: &Snapshot) -> Result<(), MetricsError> {
    let st = s.status;
    if let Some(bytes) = st.lag_bytes {
        int_gauge(
            r,
            "banshare_watch_lag_bytes",
            "Bytes of the log past the applied cursor",
            bytes as i64,
        )?;
        let behind_since = st.last_record_ts.or(st.started);
        let secs = match behind_since.filter(|_| behind(st)) {
            None => 0.0,
            Some(t) => (seconds(s.now) - seconds(t)).max(0.0),
        };
        gauge(
            r,
            "banshare_watch_lag_seconds",
            "0 when caught up; else how old the last record read is (the records past it are newer)",
            secs,
        )?;
    }
    if let Some(records) = st.lag_records {
        int_gauge(
            r,
            "banshare_watch_lag_records",
            "Complete records past the applied cursor",
            records as i64,
        )?;
    }
    if let Some(t) = st.last_record_ts {
        gauge(
            r,
            "banshare_watch_last_record_timestamp_seconds",
            "The time of the last record read (Unix time)",
            seconds(t),
        )?;
    }
    Ok(())
}

/// Each origin node's last record and breaker, with bounded labels.
fn nodes(r: &Registry, m: &mut WatchMetrics, s: &Snapshot) -> Result<(), MetricsError> {
    let seen = GaugeVec::new(
        Opts::new(
            "banshare_watch_node_last_seen_timestamp_seconds",
            "The time (by its ts) of the newest record read from each origin node (Unix time)",
        ),
        &["node"],
    )?;
    let breaker = IntGaugeVec::new(
        Opts::new(
            "banshare_watch_node_breaker_open",
            "1 while an origin node's circuit breaker is open",
        ),
        &["node"],
    )?;
    for (node, at) in &m.last_seen {
        seen.with_label_values(&[node.as_str()]).set(seconds(*at));
        breaker.with_label_values(&[node.as_str()]).set(0);
    }
    for node in &s.tripped {
        breaker
            .with_label_values(&[m.nodes.label(node.as_deref())])
            .set(1);
    }
    r.register(Box::new(seen))?;
    r.register(Box::new(breaker))?;
    Ok(())
}

fn spool_gauges(r: &Registry, spool: SpoolSummary, now: DateTime<Utc>) -> Result<(), MetricsError> {
    int_gauge(
        r,
        "banshare_spool_records",
        "Records waiting in the local spool for the log",
        spool.records as i64,
    )?;
    let oldest = spool.oldest.map(DateTime::<Utc>::from);
    let age = oldest.map_or(0.0, |t| (seconds(now) - seconds(t)).max(0.0));
    gauge(
        r,
        "banshare_spool_oldest_age_seconds",
        "How long the oldest spooled record has waited; 0 when none waits",
        age,
    )?;
    if let Some(t) = oldest {
        gauge(
            r,
            "banshare_spool_oldest_timestamp_seconds",
            "When the oldest record waiting was spooled (Unix time)",
            seconds(t),
        )?;
    }
    Ok(())
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_labels_are_bounded_and_the_rest_is_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banshare.prom");
        let mut metrics = WatchMetrics::new(Some(path.clone()), None, None).unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        for i in 0..MAX_NODE_LABELS + 10 {
            let node: NodeId = format!("node{i}").parse().unwrap();
            metrics.seen(
                Some(&node),
                t + chrono::Duration::seconds(i as i64),
                t + chrono::Duration::days(1),
            );
        }
        metrics.seen(None, t, t);
        let status = Status::default();
        let snapshot = Snapshot {
            status: &status,
            active_by_jail: vec![(Some("sshd".into()), 3), (None, 1)],
            tripped: vec![Some(format!("node{}", MAX_NODE_LABELS + 5))],
            running: true,
            now: t,
        };
        metrics.export(Changes::default(), &snapshot);
        let text = std::fs::read_to_string(&path).unwrap();
        let seen: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("banshare_watch_node_last_seen_timestamp_seconds{"))
            .collect();
        assert_eq!(seen.len(), MAX_NODE_LABELS + 2, "{text}");
        // The newest of the nodes past the bound, under one label.
        let last = MAX_NODE_LABELS + 9;
        assert!(
            text.contains(&format!(
                "banshare_watch_node_last_seen_timestamp_seconds{{node=\"_other\"}} {}",
                1_800_000_000 + last
            )),
            "{text}"
        );
        assert!(text.contains("banshare_watch_node_breaker_open{node=\"_other\"} 1"));
        assert!(text.contains("banshare_watch_node_breaker_open{node=\"node0\"} 0"));
        assert!(text.contains("banshare_watch_active_bans{jail=\"_none\"} 1"));
        assert!(text.contains("banshare_watch_active_bans{jail=\"sshd\"} 3"));
    }

    /// Review 13: a record dated 3 days ahead showed its node as heard
    /// from 3 days ahead, hiding its silence that long; and saved times
    /// come back bounded like new ones.
    #[test]
    fn last_seen_is_never_ahead_of_the_read_and_restores_within_the_bound() {
        let mut metrics = WatchMetrics::new(None, None, None).unwrap();
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let web1: NodeId = "web1".parse().unwrap();
        metrics.seen(Some(&web1), now + chrono::Duration::days(3), now);
        assert_eq!(metrics.last_seen()["web1"], now);

        let mut saved: BTreeMap<String, DateTime<Utc>> = (0..MAX_NODE_LABELS + 3)
            .map(|i| {
                (
                    format!("n{i:03}"),
                    now - chrono::Duration::seconds(i as i64),
                )
            })
            .collect();
        saved.insert("_other".into(), now - chrono::Duration::days(9));
        saved.insert("later".into(), now + chrono::Duration::days(9));
        let mut restarted = WatchMetrics::new(None, None, None).unwrap();
        restarted.restore_last_seen(&saved, now);
        let restored = restarted.last_seen();
        assert_eq!(restored.len(), MAX_NODE_LABELS + 1, "{restored:?}");
        assert_eq!(restored["n000"], now);
        assert!(restored.values().all(|at| *at <= now), "{restored:?}");
    }
}
