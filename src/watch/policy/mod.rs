//! The watcher's policy: which records become bans on this node.
//!
//! Every record read from the shared log passes [`Policy::decide`], which
//! either turns it into an [`Action`] for the backend or says why not. The
//! rules, in order:
//!
//! 1. this node's own records are skipped: they came from this node's
//!    fail2ban, which already banned (the echo loop the seed systems dodged
//!    only by accident);
//! 2. a node whose circuit breaker is open is not heard;
//! 3. addresses that must never be banned: loopback, unspecified, multicast,
//!    link-local, broadcast, this host's own addresses (`ignoreself`),
//!    `ignoreip`, the addresses this node reaches the shared log through
//!    (its file server and the next hop to it), and networks wider than the
//!    configured limit or containing any of those (the fixed part of this
//!    rule is [`never_ban`], which `banshare ban` applies too);
//! 4. time: a record dated more than a day ahead of this host's clock is
//!    refused; one dated less than that keeps its date, but the firewall
//!    holds it for at most its bantime from now (see [`MAX_CLOCK_LEAD`]); a bantime longer than `max_bantime` is cut to
//!    it, and so is a permanent one unless the record is signed by a
//!    trusted node (see [`Policy::bantime`]); a ban whose time is over
//!    (`ts + bantime < now`) is skipped; catch-up after downtime applies
//!    only what is still in force, for what remains;
//! 5. a ban from before an unban seen for its address and jail is stale;
//! 6. an address already banned at least as long is not banned again; a
//!    longer report extends the ban (the longest remaining bantime wins);
//! 7. what is left counts towards its node's rate limit (the breaker);
//! 8. with `min_nodes > 1`, a ban waits until that many distinct nodes
//!    reported the address within `findtime`.
//!
//! Unban records lift the ban and forget pending reports, unless the ban in
//! force is newer than the unban or came from another jail.
//!
//! Rules 5 and 6 and the unban rule make the newest record about an address
//! win, in whatever order the records arrive, and drop copies: a copied
//! line, a compacted log read again, or a signed line replayed is either
//! already in force, or over, or older than the unban that lifted it. So
//! no record ids need to be remembered, which at a million records was a
//! fifth of the catch-up time and 50 MB.
//!
//! The policy decides; it does not build the backend's [`Action`]. A
//! [`Verdict`] takes the record's own fields when it becomes one, so that
//! catching up on a million records does not copy each one's strings.

mod active;
mod breaker_state;
mod control;
pub mod retention;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Datelike, Local, NaiveDate, TimeDelta, TimeZone, Utc};
use ipnet::IpNet;

use crate::backend::{Action, Ban, Unban};
use crate::config::DEFAULT_MAX_BANTIME;
use crate::record::never_ban::{self, normalize, normalize_addr, overlaps};
use crate::record::{BanTime, NodeId, Op, PortSpec, Record, Target};
use crate::trust::Provenance;
pub use active::ActiveBan;
use active::{ActiveBans, NEVER, until_ms};
pub use breaker_state::BreakerState;
use control::{Control, NotListed};
pub use control::{MAX_ALLOWLIST, SavedControl};

/// The knobs of [`Policy`], from the `[watch]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySettings {
    /// This node: its own records are skipped.
    pub node: NodeId,
    /// Addresses and networks never banned.
    pub ignoreip: Vec<IpNet>,
    /// Never ban this host's own addresses (`self_addresses`).
    pub ignoreself: bool,
    pub self_addresses: Vec<IpAddr>,
    /// For records that carry no bantime (hand-written logger lines).
    pub default_bantime: BanTime,
    /// The longest ban applied; permanent ones only from records signed by
    /// a trusted node. Cluster-wide: compaction relies on it.
    pub max_bantime: Duration,
    /// Distinct nodes that must report an address before it is banned.
    pub min_nodes: usize,
    /// The window in which `min_nodes` reports count.
    pub findtime: Duration,
    /// The widest network that may be banned, per family.
    pub max_prefix_v4: u8,
    pub max_prefix_v6: u8,
    /// More ban records than this from one node within a minute (by their
    /// own times) trip that node's circuit breaker.
    pub max_bans_per_node_per_minute: u32,
    /// How long a tripped node's records are refused.
    pub breaker_cooldown: Duration,
}

impl PolicySettings {
    /// The defaults of `[watch]` and `[trust]`, for `node`, with no
    /// addresses of its own and nothing ignored.
    pub fn defaults(node: NodeId) -> PolicySettings {
        PolicySettings {
            node,
            ignoreip: Vec::new(),
            ignoreself: true,
            self_addresses: Vec::new(),
            default_bantime: BanTime::Seconds(1800),
            max_bantime: DEFAULT_MAX_BANTIME,
            min_nodes: 1,
            findtime: Duration::from_secs(600),
            max_prefix_v4: 16,
            max_prefix_v6: 48,
            max_bans_per_node_per_minute: 600,
            breaker_cooldown: Duration::from_secs(600),
        }
    }
}

/// Why a record was not applied. Each one is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    OwnNode,
    NeverBan,
    Ignored,
    SelfAddress,
    /// The file server, SFTP host or next hop this node reaches the log
    /// through: banning it would cut the node off from the log.
    TransportAddress,
    TooWide,
    Expired,
    /// Dated more than [`MAX_CLOCK_LEAD`] after now.
    FromTheFuture,
    /// A ban from before an unban seen for its address and jail.
    BanSuperseded,
    WaitingForNodes,
    AlreadyBanned,
    UnbanSuperseded,
    /// An unban with no ban in force and an unban at least as new seen.
    AlreadyLifted,
    /// This record pushed its node over the rate limit: the breaker trips.
    BreakerTripped,
    /// The node's breaker is open: its records are refused for a while.
    NodeTripped,
    /// On the shared allowlist (an operator's `ALLOW` record), or dated
    /// before the entry that covered it was taken off.
    Allowlisted,
    /// A ban from a node whose bans were lifted (`banshare lift --node`),
    /// dated before the lift.
    NodeLifted,
    /// An allowlist record older than one seen for the same network.
    AllowSuperseded,
    /// The allowlist holds [`MAX_ALLOWLIST`] entries already.
    AllowlistFull,
}

impl Skip {
    /// Logged (rate-limited) with the node the record claims, beside its
    /// count: a record that tries to ban what must never be banned, or
    /// dated far ahead, deserves a word; the normal skips (own node,
    /// copies, expired, superseded) do not.
    pub fn is_reported(self) -> bool {
        matches!(
            self,
            Skip::NeverBan
                | Skip::TooWide
                | Skip::SelfAddress
                | Skip::TransportAddress
                | Skip::Ignored
                | Skip::Allowlisted
                | Skip::AllowlistFull
                | Skip::FromTheFuture
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Skip::OwnNode => "this node's own record",
            Skip::NeverBan => "loopback, unspecified, multicast, link-local or broadcast address",
            Skip::Ignored => "in ignoreip",
            Skip::SelfAddress => "one of this host's own addresses",
            Skip::TransportAddress => {
                "this node reaches the shared log through it (file server or next hop)"
            }
            Skip::TooWide => "network wider than allowed",
            Skip::Expired => "ban already over",
            Skip::FromTheFuture => "dated more than a day ahead of this host's clock",
            Skip::BanSuperseded => "ban older than an unban seen for it",
            Skip::WaitingForNodes => "waiting for reports from more nodes",
            Skip::AlreadyBanned => "already banned at least as long",
            Skip::UnbanSuperseded => "unban older than the ban in force, or from another jail",
            Skip::AlreadyLifted => "no ban in force, and an unban at least as new was seen",
            Skip::BreakerTripped => {
                "the node exceeded max_bans_per_node_per_minute: its circuit breaker tripped"
            }
            Skip::NodeTripped => "the node's circuit breaker is open",
            Skip::Allowlisted => "on the shared allowlist, or dated before its entry was taken off",
            Skip::NodeLifted => "the node's bans were lifted (banshare lift --node)",
            Skip::AllowSuperseded => "an allowlist record at least as new was seen for it",
            Skip::AllowlistFull => "the allowlist is full",
        }
    }
}

/// When a ban ends; `None` is never.
pub type Expiry = Option<DateTime<Utc>>;

/// How far ahead of this host's clock a record may be dated and still
/// apply. Further ahead, that clock is broken, not skewed, and the record
/// is refused. Within it, the record keeps its own date for everything the
/// policy compares ("the newest record wins", copies, expiry), so that
/// every watcher decides alike whenever it reads the record, and a copy of
/// it appended later is known as a copy; only the firewall's timeout is
/// cut to the bantime from now (see [`Policy::decide_as`]). The price of a
/// clock ahead by X: its records outrank others' written up to X later
/// (an unban from it makes the bans of its address and jail written in
/// those X stale), which is why it is logged and counted.
pub const MAX_CLOCK_LEAD: TimeDelta = TimeDelta::days(1);

/// Records dated further ahead than this are applied with a warning: a
/// clock kept by NTP is within milliseconds, so a minute means a clock that
/// is not kept, and the next record from it may be a day off.
pub const CLOCK_JITTER: TimeDelta = TimeDelta::minutes(1);

/// A syslog header without a year, dated up to this far ahead of now, is
/// read as this year's (or next year's, at New Year) rather than as a year
/// old: a clock that far ahead is likelier than a line eleven months old,
/// and the policy then refuses it loudly (more than [`MAX_CLOCK_LEAD`]
/// ahead) instead of dropping it silently as long over.
const HEADER_LOOKAHEAD: TimeDelta = TimeDelta::days(31);

/// What the policy changed in a record it accepted. Each is counted and
/// logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Adjusted {
    /// How far the record was dated ahead of this host's clock, beyond
    /// [`CLOCK_JITTER`]: held for at most its bantime from now.
    pub ahead: Option<TimeDelta>,
    /// The record's bantime (or the default it got), when it was cut to
    /// `max_bantime`.
    pub clamped: Option<BanTime>,
}

/// What the policy decided to do with a record it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ban for `remaining` from now (`None`: for good).
    Ban {
        remaining: Option<Duration>,
        ts: DateTime<Utc>,
        adjusted: Adjusted,
    },
    Unban {
        ts: DateTime<Utc>,
        adjusted: Adjusted,
    },
}

impl Verdict {
    fn with(self, adjusted: Adjusted) -> Verdict {
        match self {
            Verdict::Ban { remaining, ts, .. } => Verdict::Ban {
                remaining,
                ts,
                adjusted,
            },
            Verdict::Unban { ts, .. } => Verdict::Unban { ts, adjusted },
        }
    }

    pub fn adjusted(&self) -> Adjusted {
        match self {
            Verdict::Ban { adjusted, .. } | Verdict::Unban { adjusted, .. } => *adjusted,
        }
    }

    /// The backend's action, made of `record`'s own fields (it must be the
    /// record this verdict is for).
    pub fn into_action(self, record: Record) -> Action {
        let Record {
            target,
            ports,
            fields,
            ..
        } = record;
        match self {
            Verdict::Ban { remaining, ts, .. } => Action::Ban(Ban {
                target,
                ports,
                jail: fields.jail,
                remaining,
                origin: fields.node,
                ts: Some(ts),
            }),
            Verdict::Unban { ts, .. } => Action::Unban(Unban {
                target,
                ports,
                jail: fields.jail,
                origin: fields.node,
                ts: Some(ts),
            }),
        }
    }
}

/// The policy and the state it keeps: active bans, recent unbans, reports
/// waiting for `min_nodes`. Every map is keyed by the normalised network
/// (`192.0.2.1/32` for `192.0.2.1` and `::ffff:192.0.2.1`), the same unit
/// the firewall backends ban.
#[derive(Debug)]
pub struct Policy {
    settings: PolicySettings,
    active: ActiveBans,
    /// The latest report per node (`None`: anonymous), per address.
    reports: HashMap<IpNet, HashMap<Option<NodeId>, DateTime<Utc>>>,
    /// Each node's recent ban times (ms since the epoch), for the rate
    /// limit.
    rates: HashMap<Option<NodeId>, VecDeque<i64>>,
    /// Nodes whose breaker is open, until when.
    tripped: HashMap<Option<NodeId>, DateTime<Utc>>,
    /// Bumped whenever `active` changes, so it is saved only then.
    version: u64,
    /// The addresses this node reaches the shared log through, kept
    /// apart from the settings: the watcher looks them up again as the
    /// transport changes, not only on reload.
    transport_addresses: Vec<IpNet>,
    /// The shared allowlist and the lifted nodes.
    control: Control,
}

impl Policy {
    pub fn new(settings: PolicySettings) -> Policy {
        Policy {
            settings,
            active: ActiveBans::default(),
            reports: HashMap::new(),
            rates: HashMap::new(),
            tripped: HashMap::new(),
            version: 0,
            transport_addresses: Vec::new(),
            control: Control::default(),
        }
    }

    /// Changes whenever the allowlist or the lifted nodes change.
    pub fn control_version(&self) -> u64 {
        self.control.version
    }

    /// The allowlist and the lifted nodes, for `control.json`.
    pub fn saved_control(&self) -> SavedControl {
        self.control.saved()
    }

    /// Restores what [`Policy::saved_control`] gave before a restart.
    pub fn restore_control(&mut self, saved: SavedControl) {
        self.control.restore(saved);
    }

    /// Lifts every ban in force that `node`'s records put there, and
    /// refuses its ban records dated up to `before` from now on (copies
    /// read again, a replay with a key not yet revoked). Returns the
    /// unbans for the backend.
    pub fn lift_node(&mut self, node: &NodeId, before: DateTime<Utc>) -> Vec<Unban> {
        self.control.lift(node, before);
        let lifted = self.active.remove_by_node(node);
        self.version += 1;
        lifted
            .into_iter()
            .map(|(net, ban)| unban_of(net, ban))
            .collect()
    }

    /// An allowlist record (`ALLOW` or `UNALLOW`), whose operator's
    /// signature the caller checked. An `ALLOW` lifts every ban in force
    /// that overlaps its network; returns the unbans for the backend. Bans
    /// dated before an entry is removed stay refused after it (those
    /// refused while it was listed, copies of those it lifted): a report
    /// made after the removal is needed, as with fail2ban's `ignoreip`.
    pub fn control(&mut self, record: &Record, now: DateTime<Utc>) -> Result<Vec<Unban>, Skip> {
        let ts = record_time(record, now);
        if ts > now + MAX_CLOCK_LEAD {
            return Err(Skip::FromTheFuture);
        }
        let net = normalize(record.target.net());
        if net.prefix_len() == 0 {
            // Everything: `banshare pause` says that on each node instead.
            return Err(Skip::TooWide);
        }
        let listed = record.op == Op::Allow;
        self.control
            .set(net, listed, ts, record.fields.node.as_ref())
            .map_err(|e| match e {
                NotListed::Superseded => Skip::AllowSuperseded,
                NotListed::Full => Skip::AllowlistFull,
            })?;
        if !listed {
            return Ok(Vec::new());
        }
        self.reports.retain(|reported, _| !overlaps(reported, &net));
        let lifted = self.active.remove_overlapping(&net);
        self.version += 1;
        Ok(lifted
            .into_iter()
            .map(|(net, ban)| unban_of(net, ban))
            .collect())
    }

    /// Changes whenever the set of active bans changes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// New settings (on SIGHUP); the state is kept.
    pub fn reconfigure(&mut self, settings: PolicySettings) {
        self.settings = settings;
    }

    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// Never bans `addresses`, nor a network containing one, from now on
    /// (they replace the previous ones): the transport's endpoints.
    pub fn set_transport_addresses(&mut self, addresses: impl IntoIterator<Item = IpAddr>) {
        self.transport_addresses = addresses
            .into_iter()
            .map(|a| IpNet::from(normalize_addr(a)))
            .collect();
    }

    /// Active bans this node applied and that are not over at `now`.
    pub fn active_count(&self, now: DateTime<Utc>) -> usize {
        self.active.count_live(now.timestamp_millis())
    }

    /// Active bans not over at `now`, per jail (`None`: from records
    /// without a jail).
    pub fn active_by_jail(&self, now: DateTime<Utc>) -> Vec<(Option<String>, usize)> {
        self.active
            .count_live_by_jail(now.timestamp_millis())
            .into_iter()
            .map(|(jail, n)| (jail.map(|j| j.to_string()), n))
            .collect()
    }

    /// Bans known to be in force, for persisting across restarts.
    pub fn active_bans(&self) -> impl Iterator<Item = (IpNet, ActiveBan)> + '_ {
        self.active.iter()
    }

    /// Why rule 3 refuses `net` now, if it does: a ban saved before
    /// ignoreip, this host's addresses or the transport's changed (or
    /// before an upgrade) stays in the policy but must not be applied
    /// again, or a reboot would cut the node off from its file server
    /// once more.
    pub fn refuses(&self, net: IpNet) -> Option<Skip> {
        self.check_target(Target::Net(net)).err()
    }

    /// Restores a ban applied before a restart, so that a shorter report
    /// cannot shorten it.
    pub fn restore_active(&mut self, net: IpNet, ban: ActiveBan) {
        // How long the firewall holds it is not saved: take its end.
        let until = until_ms(ban.until);
        self.active.insert(
            normalize(net),
            until,
            until,
            ban.since.timestamp_millis(),
            (ban.jail.as_ref(), ban.node.as_ref()),
        );
        self.version += 1;
    }

    /// Makes room for `additional` more bans in force than the map holds
    /// now, at once, where it can (see `ActiveBans::reserve`).
    pub fn reserve_bans(&mut self, additional: usize) {
        self.active.reserve(additional);
    }

    /// Forgets the ban in force on `target` (its application failed), so a
    /// later report applies it again.
    pub fn forget(&mut self, target: Target) {
        self.active.remove(&normalize(target.net()));
        self.version += 1;
    }

    /// Drops state that can no longer matter at `now`.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.active.prune(now.timestamp_millis());
        self.tripped.retain(|_, until| *until > now);
        let cutoff = now.timestamp_millis() - 60_000;
        self.rates
            .retain(|_, times| times.back().is_some_and(|t| *t > cutoff));
        let window = self.findtime();
        self.reports.retain(|_, r| {
            r.retain(|_, ts| *ts + window > now);
            !r.is_empty()
        });
    }

    fn findtime(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.findtime).unwrap_or(chrono::Duration::MAX)
    }

    /// What to do with `record` at `now`, a record with no verified
    /// signature (see [`Policy::decide_as`]).
    pub fn decide(&mut self, record: &Record, now: DateTime<Utc>) -> Result<Verdict, Skip> {
        self.decide_as(record, Provenance::Unverified, now)
    }

    /// What to do with `record` at `now`, vouched for as `provenance` says.
    pub fn decide_as(
        &mut self,
        record: &Record,
        provenance: Provenance,
        now: DateTime<Utc>,
    ) -> Result<Verdict, Skip> {
        let (net, ts) = self.admit(record, now)?;
        let mut adjusted = Adjusted {
            ahead: Some(ts - now).filter(|lead| *lead > CLOCK_JITTER),
            clamped: None,
        };
        match record.op {
            Op::Unban => self.unban(record, net, ts, now),
            Op::Ban => {
                let (bantime, clamped) = self.bantime(record, provenance);
                adjusted.clamped = clamped;
                self.ban(record, net, ts, bantime, now)
            }
            // The daemon hands allowlist records to `control`.
            Op::Allow | Op::Unallow => Err(Skip::AllowSuperseded),
        }
        .map(|verdict| verdict.with(adjusted))
    }

    /// Whether deciding `record` at `now` could change anything, were it
    /// vouched for as `provenance` says: `Err` with the skip
    /// [`Policy::decide_as`] would return without touching any state (the
    /// record is over, superseded, a copy of a ban in force, never banned
    /// here), `Ok` otherwise. It changes nothing itself, so the watcher asks
    /// it before a record's signature is checked, and checks signatures
    /// only where the answer is `Ok`. It answers for the state as it is:
    /// records decided in between may change the answer.
    pub fn precheck(
        &self,
        record: &Record,
        provenance: Provenance,
        now: DateTime<Utc>,
    ) -> Result<(), Skip> {
        if record.op.is_control() {
            // Allowlist records go to `control`, not `decide_as`, whoever
            // wrote them: always checked.
            return Ok(());
        }
        let (net, ts) = self.admit(record, now)?;
        let jail = record.fields.jail.as_ref();
        let at = ts.timestamp_millis();
        match record.op {
            Op::Unban => match self.active.get(&net) {
                // An unban with nothing to lift, older than one seen.
                None if self.active.lifted_since(&net, at, jail) => Err(Skip::AlreadyLifted),
                // It lifts a ban, or is remembered (`note_lift`).
                _ => Ok(()),
            },
            Op::Ban => {
                let (bantime, _) = self.bantime(record, provenance);
                let times = self.ban_times(record, &net, ts, bantime, now)?;
                if self.covered(&net, ts, &times, now) {
                    // Unless it moves the ban in force's `since` up.
                    return match self.active.get(&net) {
                        Some(current) if current.since >= at => Err(Skip::AlreadyBanned),
                        _ => Ok(()),
                    };
                }
                if self.reported_already(record, &net, ts) {
                    return Err(Skip::WaitingForNodes);
                }
                // It counts towards its node's rate limit, at least.
                Ok(())
            }
            Op::Allow | Op::Unallow => Ok(()),
        }
    }

    /// Rules 1 to 4 but the bantime, which need no state but the settings,
    /// the breakers and the allowlist: the normalised network and the
    /// record's time, or why it is refused.
    fn admit(&self, record: &Record, now: DateTime<Utc>) -> Result<(IpNet, DateTime<Utc>), Skip> {
        let node = &record.fields.node;
        if node.as_ref() == Some(&self.settings.node) {
            return Err(Skip::OwnNode);
        }
        if self.tripped.get(node).is_some_and(|until| *until > now) {
            return Err(Skip::NodeTripped);
        }
        let net = self.check_target(record.target)?;
        let ts = record_time(record, now);
        if record.op == Op::Ban && self.control.lifted(node.as_ref(), ts) {
            return Err(Skip::NodeLifted);
        }
        if record.op == Op::Ban && self.control.removed_since(&net, ts) {
            return Err(Skip::Allowlisted);
        }
        if ts > now + MAX_CLOCK_LEAD {
            return Err(Skip::FromTheFuture);
        }
        Ok((net, ts))
    }

    /// Rule 4: the bantime applied, and the one asked for when it was cut.
    /// A bantime longer than `max_bantime` is cut to it, so that a single
    /// writer cannot ban for ten years, and compaction knows that nothing
    /// but a permanent ban is in force longer than that after its record.
    /// A permanent ban is applied only from a record signed by a trusted
    /// node: it is an operator's decision, not a log line's.
    fn bantime(&self, record: &Record, provenance: Provenance) -> (BanTime, Option<BanTime>) {
        applied_bantime(
            record,
            provenance,
            self.settings.default_bantime,
            self.settings.max_bantime,
        )
    }

    /// The circuit breaker: a node that sends more bans per minute than
    /// allowed is refused for `breaker_cooldown`, so a compromised or broken
    /// node cannot flood every firewall, while other nodes' bans still
    /// apply. Minutes are counted on the records' own times, so catching up
    /// after downtime does not look like a flood. Only bans that would
    /// change something count: a replayed copy of a node's signed line
    /// cannot trip that node's breaker.
    fn count_ban(
        &mut self,
        record: &Record,
        ts: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), Skip> {
        let node = &record.fields.node;
        // Times in milliseconds; the window drops from the front, since logs
        // come in time order (a late record only makes the count generous).
        let at = ts.timestamp_millis();
        let cutoff = at - 60_000;
        let max = self.settings.max_bans_per_node_per_minute as usize;
        let times = match self.rates.get_mut(node) {
            Some(times) => times,
            None => self.rates.entry(node.clone()).or_default(),
        };
        while times.front().is_some_and(|t| *t <= cutoff) {
            times.pop_front();
        }
        times.push_back(at);
        if times.len() <= max {
            return Ok(());
        }
        times.clear();
        let cooldown = chrono::Duration::from_std(self.settings.breaker_cooldown)
            .unwrap_or(chrono::Duration::MAX);
        self.tripped.insert(node.clone(), now + cooldown);
        Err(Skip::BreakerTripped)
    }

    /// Nodes whose breaker is open at `now`, and until when (`None`: the
    /// records that carry no node).
    pub fn tripped(
        &self,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = (Option<&NodeId>, DateTime<Utc>)> {
        self.tripped
            .iter()
            .filter(move |(_, until)| **until > now)
            .map(|(node, until)| (node.as_ref(), *until))
    }

    /// Rule 3: addresses that are never banned on this node. Returns the
    /// normalised network.
    fn check_target(&self, target: Target) -> Result<IpNet, Skip> {
        let s = &self.settings;
        let net = never_ban::check(target.net(), s.max_prefix_v4, s.max_prefix_v6).map_err(
            |e| match e {
                never_ban::NeverBan::TooWide { .. } => Skip::TooWide,
                never_ban::NeverBan::Reserved(_) => Skip::NeverBan,
            },
        )?;
        if s.ignoreip.iter().any(|n| overlaps(&normalize(*n), &net)) {
            return Err(Skip::Ignored);
        }
        if self.control.allowed(&net) {
            return Err(Skip::Allowlisted);
        }
        if s.ignoreself
            && s.self_addresses
                .iter()
                .any(|a| overlaps(&net, &IpNet::from(normalize_addr(*a))))
        {
            return Err(Skip::SelfAddress);
        }
        if self.transport_addresses.iter().any(|a| overlaps(&net, a)) {
            return Err(Skip::TransportAddress);
        }
        Ok(net)
    }

    /// An unban lifts the ban in force unless that ban is newer, or came
    /// from another jail (an sshd unban must not lift a recidive ban). An
    /// unban without a jail (given by hand) lifts any older ban.
    ///
    /// The unban is remembered for a day (or findtime, if longer), and at
    /// least until the ban it lifts would have ended, so that a ban record
    /// from before it cannot ban again (rule 5). Reports waiting for
    /// `min_nodes` need no longer: a report older than findtime never
    /// counts.
    fn unban(
        &mut self,
        record: &Record,
        net: IpNet,
        ts: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Verdict, Skip> {
        let jail = record.fields.jail.as_ref();
        let at = ts.timestamp_millis();
        let keep = (now + chrono::Duration::days(1).max(self.findtime())).timestamp_millis();
        match self.active.get(&net) {
            Some(current) if current.since > at || current.other_jail(jail) => {
                // The ban in force stays, but the unban still makes older
                // bans of its jail stale, whichever order they come in.
                let keep = keep.max(current.until);
                self.active.note_lift(net, at, jail, keep);
                return Err(Skip::UnbanSuperseded);
            }
            None if self.active.lifted_since(&net, at, jail) => {
                return Err(Skip::AlreadyLifted);
            }
            _ => {}
        }
        self.active.lift(net, at, jail, keep);
        self.reports.remove(&net);
        self.version += 1;
        Ok(Verdict::Unban {
            ts,
            adjusted: Adjusted::default(),
        })
    }

    fn ban(
        &mut self,
        record: &Record,
        net: IpNet,
        ts: DateTime<Utc>,
        bantime: BanTime,
        now: DateTime<Utc>,
    ) -> Result<Verdict, Skip> {
        let times = self.ban_times(record, &net, ts, bantime, now)?;
        let BanTimes {
            until_ms,
            firewall_ms,
        } = times;
        let now_ms = now.timestamp_millis();
        if self.covered(&net, ts, &times, now) {
            // The ban in force covers this one, which is still evidence
            // from its time: an unban older than it must not lift it.
            if self.active.renew_since(&net, ts.timestamp_millis()) {
                self.version += 1;
            }
            return Err(Skip::AlreadyBanned);
        }
        if self.reported_already(record, &net, ts) {
            // A copy of a report still waiting: it changes nothing, so it
            // must not count towards its node's rate limit either.
            return Err(Skip::WaitingForNodes);
        }
        self.count_ban(record, ts, now)?;
        if !self.enough_nodes(record, net, ts, now) {
            return Err(Skip::WaitingForNodes);
        }
        // The backends replace an address's timeout: never with one that
        // ends before the firewall's hold of the ban in force (a ban from a
        // clock ahead outlasts it by its date, but is held for less).
        let firewall_ms = self
            .active
            .get(&net)
            .map_or(firewall_ms, |current| current.firewall.max(firewall_ms));
        let remaining = (firewall_ms != NEVER)
            .then(|| Duration::from_millis(u64::try_from(firewall_ms - now_ms).unwrap_or(0)));
        self.version += 1;
        self.active.insert(
            net,
            until_ms,
            firewall_ms,
            ts.timestamp_millis(),
            (record.fields.jail.as_ref(), record.fields.node.as_ref()),
        );
        Ok(Verdict::Ban {
            remaining,
            ts,
            adjusted: Adjusted::default(),
        })
    }

    /// When a ban from `record`, dated `ts`, ends by its date and in the
    /// firewall; `Err` when it is over or an unban lifted it since (rule
    /// 5).
    fn ban_times(
        &self,
        record: &Record,
        net: &IpNet,
        ts: DateTime<Utc>,
        bantime: BanTime,
        now: DateTime<Utc>,
    ) -> Result<BanTimes, Skip> {
        let until = expiry(ts, bantime);
        if until.is_some_and(|t| t <= now) {
            return Err(Skip::Expired);
        }
        let jail = record.fields.jail.as_ref();
        if self.active.lifted_since(net, ts.timestamp_millis(), jail) {
            return Err(Skip::BanSuperseded);
        }
        // Permanent is `NEVER`, the largest time: it lasts at least as
        // long as anything, and nothing but another permanent ban lasts
        // as long as it.
        let now_ms = now.timestamp_millis();
        Ok(BanTimes {
            until_ms: until_ms(until),
            firewall_ms: firewall_timeout(until, bantime, now).map_or(NEVER, |d| {
                now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }),
        })
    }

    /// Rule 6: the ban in force on `net` covers a ban dated `ts` lasting
    /// `times`: it lasts as long by its date, and the firewall holds it as
    /// long too. A record still dated ahead (a copy of one from a clock
    /// ahead) is judged by its date alone: a copy must not ban again once
    /// the firewall let the original go.
    fn covered(
        &self,
        net: &IpNet,
        ts: DateTime<Utc>,
        times: &BanTimes,
        now: DateTime<Utc>,
    ) -> bool {
        self.active.get(net).is_some_and(|current| {
            current.until >= times.until_ms && (current.firewall >= times.firewall_ms || ts > now)
        })
    }

    /// This node's report on `net`, as new as `ts`, is already waiting for
    /// `min_nodes`.
    fn reported_already(&self, record: &Record, net: &IpNet, ts: DateTime<Utc>) -> bool {
        !self.reports.is_empty()
            && self
                .reports
                .get(net)
                .and_then(|by_node| by_node.get(&record.fields.node))
                .is_some_and(|latest| *latest >= ts)
    }

    /// Rule 8. Records without a node (hand-written logger lines) count as
    /// one anonymous node. Only each node's latest report is kept, so a
    /// flood of reports costs constant work each.
    fn enough_nodes(
        &mut self,
        record: &Record,
        net: IpNet,
        ts: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool {
        let need = self.settings.min_nodes.max(1);
        if need == 1 {
            return true;
        }
        let window = self.findtime();
        let reports = self.reports.entry(net).or_default();
        if ts + window > now {
            let latest = reports.entry(record.fields.node.clone()).or_insert(ts);
            *latest = (*latest).max(ts);
        }
        reports.retain(|_, t| *t + window > now);
        if reports.len() < need {
            return false;
        }
        self.reports.remove(&net);
        true
    }
}

/// When a ban ends, in ms since the epoch: by its record's date
/// (`NEVER` for a permanent ban), and in the firewall (see
/// [`firewall_timeout`]).
#[derive(Clone, Copy)]
struct BanTimes {
    until_ms: i64,
    firewall_ms: i64,
}

/// Rule 4's bantime for `record`: its own or `default`, cut to `max`, and
/// permanent only when `provenance` is verified. Returns the bantime
/// applied, and the one asked for when it was cut. Compaction uses it too,
/// so that it keeps a record exactly as long as a watcher would hold it.
pub(crate) fn applied_bantime(
    record: &Record,
    provenance: Provenance,
    default: BanTime,
    max: Duration,
) -> (BanTime, Option<BanTime>) {
    let asked = record.fields.bantime.unwrap_or(default);
    let max = max.as_secs();
    match asked {
        BanTime::Seconds(s) if s > max => (BanTime::Seconds(max), Some(asked)),
        BanTime::Permanent if provenance != Provenance::Verified => {
            (BanTime::Seconds(max), Some(asked))
        }
        _ => (asked, None),
    }
}

/// The unban that lifts `ban`, in force on `net`, by the policy's own
/// decision (an allowlist entry, a lifted node) rather than a record's.
fn unban_of(net: IpNet, ban: ActiveBan) -> Unban {
    let target = if net.prefix_len() == net.max_prefix_len() {
        Target::Addr(net.addr())
    } else {
        Target::Net(net)
    };
    Unban {
        target,
        ports: PortSpec::all(),
        jail: ban.jail,
        origin: ban.node,
        ts: Some(ban.since),
    }
}

/// How long the firewall holds a ban ending at `until`: what remains of it,
/// but never more than its bantime from now. A record dated ahead of this
/// host's clock (within [`MAX_CLOCK_LEAD`]) would otherwise be held for its
/// bantime plus the clock's lead. The policy itself keeps `until`, so that a
/// copy read later is still known to be in force (or over).
fn firewall_timeout(until: Expiry, bantime: BanTime, now: DateTime<Utc>) -> Option<Duration> {
    let remaining = (until? - now).to_std().unwrap_or(Duration::ZERO);
    Some(match bantime {
        BanTime::Seconds(s) => remaining.min(Duration::from_secs(s)),
        BanTime::Permanent => remaining,
    })
}

pub(crate) fn expiry(ts: DateTime<Utc>, bantime: BanTime) -> Expiry {
    match bantime {
        BanTime::Permanent => None,
        BanTime::Seconds(s) => Some(ts + chrono::Duration::seconds(s as i64)),
    }
}

/// The record's time: its `ts` field, or else the syslog header read as
/// local time in the most recent year that does not put it more than
/// [`HEADER_LOOKAHEAD`] ahead (fail2ban reads logger lines likewise, with
/// no allowance for a clock ahead). An impossible date counts as now.
pub fn record_time(record: &Record, now: DateTime<Utc>) -> DateTime<Utc> {
    if let Some(ts) = record.fields.ts {
        return ts;
    }
    let t = record.header.time;
    let local_now = now.with_timezone(&Local);
    let at_year = |year: i32| {
        NaiveDate::from_ymd_opt(year, u32::from(t.month), u32::from(t.day))
            .and_then(|d| {
                d.and_hms_opt(
                    u32::from(t.hour),
                    u32::from(t.minute),
                    u32::from(t.second.min(59)),
                )
            })
            .and_then(|n| Local.from_local_datetime(&n).earliest())
            .map(|l| l.with_timezone(&Utc))
    };
    let limit = now + HEADER_LOOKAHEAD;
    // Next year's only around New Year, from a clock ahead of ours.
    let year = local_now.year();
    [year + 1, year, year - 1]
        .into_iter()
        .filter_map(at_year)
        .find(|t| *t <= limit)
        .unwrap_or(now)
}
