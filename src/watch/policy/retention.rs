//! Which records of the shared log may still matter to some watcher, so
//! that compaction (`banshare compact`) keeps exactly those, byte for byte.
//!
//! The rules are the policy's own, read for every node at once:
//!
//! - a **ban** is kept while it may be in force: until its time plus its
//!   bantime (its own, or `max_bantime` when it has none, since each node's
//!   default is at most that), cut to `max_bantime` as rule 4 cuts it, plus
//!   a margin ([`CLOCK_JITTER`] by default) for watchers whose clocks lag
//!   this one's. A permanent
//!   ban counts as permanent only where rule 4 would apply it so: signed,
//!   and (when this host has the trusted keys) verified;
//! - a ban **lifted** by an unban at least as new, of its jail or without
//!   one (rule 5), is dropped: every watcher refuses it once it saw the
//!   unban, which is kept. A lifted *permanent* ban is the exception: its
//!   unban must be remembered for good, and only the ban in the log says
//!   so to the next compaction, so both stay;
//! - an **unban** is kept when it is the newest of its address and jail,
//!   for as long as the policy remembers it: a day (or `findtime`, if
//!   longer), and until every ban it may have lifted would have ended,
//!   which is at most `max_bantime` after the unban, since a ban it lifts
//!   is older; for good when its address has a lifted permanent ban;
//! - a **copy** (the same record `id`, or the same bytes for a line
//!   without one) is dropped after its first occurrence;
//! - an **allowlist** record (`ALLOW` or `UNALLOW`) is kept only when
//!   signed, with a signature the trusted keys verify (or cannot check, for
//!   want of the signer's key or of any keys here): watchers honour only an
//!   operator's verified signature, so an unsigned one is dropped and
//!   displaces nothing. Of the signed ones, the newest of each network
//!   *and signer* is kept for good, older ones are dropped: whichever
//!   signers a watcher counts as operators (`[trust] operators`, a
//!   watcher's own list, which this host need not have), the newest record
//!   it honours for a network stays;
//! - a line that is not a record, or that the trusted keys refuse, or one
//!   dated more than a day ([`MAX_CLOCK_LEAD`]) plus the clock margin
//!   ahead, is dropped: no watcher applies it.
//!
//! Rules that depend on the node (its own address, `ignoreip`, its rate
//! limit, `min_nodes`) do not drop anything: another node may apply what
//! this one would not.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ipnet::IpNet;

use super::active::{ActiveBans, NEVER, until_ms};
use super::{CLOCK_JITTER, MAX_CLOCK_LEAD, applied_bantime, expiry, record_time};
use crate::record::never_ban::normalize;
use crate::record::{self, BanTime, Jail, NodeId, Op, Record};
use crate::trust::{Provenance, TrustPolicy};

/// What a compaction must know of the cluster's settings.
#[derive(Debug, Clone)]
pub struct RetentionRules {
    /// The cluster's `[watch] max_bantime`: no ban but a verified permanent
    /// one is in force longer than that after its time.
    pub max_bantime: Duration,
    /// `[watch] findtime`: an unban is remembered at least this long.
    pub findtime: Duration,
    /// The trusted keys, when this host has them: records they refuse are
    /// dropped, and only permanent bans they verify stay for good. Without
    /// them, any signed permanent ban is taken as verified.
    pub trust: Option<TrustPolicy>,
    /// How far behind this host's clock a watcher's may be: a ban is kept
    /// this much past its end ([`CLOCK_JITTER`] by default).
    pub clock_margin: Duration,
}

impl RetentionRules {
    /// The rules for `max_bantime` and `findtime`, with the default clock
    /// margin and no trusted keys.
    pub fn new(max_bantime: Duration, findtime: Duration) -> RetentionRules {
        RetentionRules {
            max_bantime,
            findtime,
            trust: None,
            clock_margin: CLOCK_JITTER.to_std().expect("positive"),
        }
    }
}

/// What compaction does with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fate {
    Keep(Kept),
    Drop(Dropped),
}

impl Fate {
    pub fn is_kept(self) -> bool {
        matches!(self, Fate::Keep(_))
    }

    pub fn describe(self) -> &'static str {
        match self {
            Fate::Keep(Kept::Ban) => "kept: ban still in force",
            Fate::Keep(Kept::PermanentBan) => "kept: permanent ban",
            Fate::Keep(Kept::LiftedPermanentBan) => {
                "kept: permanent ban lifted by an unban, kept so its unban stays known"
            }
            Fate::Keep(Kept::Unban) => "kept: newest unban of its address, still remembered",
            Fate::Keep(Kept::Allowlist) => {
                "kept: newest signed allowlist record of its network and signer"
            }
            Fate::Drop(Dropped::Garbage) => "dropped: not a record",
            Fate::Drop(Dropped::Marker) => "dropped: an earlier compaction's first line",
            Fate::Drop(Dropped::Untrusted) => {
                "dropped: refused by the trusted keys, or an unsigned allowlist record"
            }
            Fate::Drop(Dropped::Expired) => "dropped: ban over",
            Fate::Drop(Dropped::Lifted) => "dropped: ban lifted by a newer unban",
            Fate::Drop(Dropped::OlderUnban) => {
                "dropped: unban older than another one of its address and jail"
            }
            Fate::Drop(Dropped::Forgotten) => "dropped: unban no longer remembered",
            Fate::Drop(Dropped::Copy) => "dropped: copy of an earlier record",
            Fate::Drop(Dropped::FromTheFuture) => {
                "dropped: dated more than a day ahead, which every watcher refuses"
            }
            Fate::Drop(Dropped::OlderAllowlist) => {
                "dropped: allowlist record older than another one of its network and signer"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kept {
    Ban,
    PermanentBan,
    LiftedPermanentBan,
    Unban,
    /// The newest signed `ALLOW` or `UNALLOW` of a network and signer: kept
    /// for good, since
    /// an allowlist entry lasts until taken off, and a removal must reach
    /// every watcher however late.
    Allowlist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dropped {
    Garbage,
    /// The line an earlier compaction put first; the new one gets its own.
    Marker,
    Untrusted,
    Expired,
    Lifted,
    OlderUnban,
    Forgotten,
    Copy,
    OlderAllowlist,
    /// Dated more than [`MAX_CLOCK_LEAD`] (plus the clock margin) ahead:
    /// every watcher refuses it.
    FromTheFuture,
}

/// What the rules need of one record, so that the record itself need not
/// be kept between passes.
struct Seen {
    op: Op,
    net: IpNet,
    ts: i64,
    /// When a ban ends (`NEVER`: permanent); unused for an unban.
    until: i64,
    jail: Option<Jail>,
    /// Who wrote it: allowlist records compete per signer.
    node: Option<NodeId>,
}

/// The fate of each of `lines` (each one line of the log, with or without
/// its newline), in order, at `now`.
pub fn plan<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    rules: &RetentionRules,
    now: DateTime<Utc>,
) -> Vec<Fate> {
    let mut fates = Vec::new();
    let mut seen = Vec::new();
    let mut ids = HashSet::new();
    let mut bare_lines = HashSet::new();
    for line in lines {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        match first_look(line, rules, now, &mut ids, &mut bare_lines) {
            Ok(s) => {
                fates.push(Fate::Keep(Kept::Ban));
                seen.push(Some(s));
            }
            Err(dropped) => {
                fates.push(Fate::Drop(dropped));
                seen.push(None);
            }
        }
    }
    decide(&mut fates, &seen, rules, now);
    fates
}

/// Parses and checks one line, and drops copies of what came before.
fn first_look<'a>(
    line: &'a [u8],
    rules: &RetentionRules,
    now: DateTime<Utc>,
    ids: &mut HashSet<record::RecordId>,
    bare_lines: &mut HashSet<&'a [u8]>,
) -> Result<Seen, Dropped> {
    if record::is_compaction_marker(line) {
        return Err(Dropped::Marker);
    }
    let record = record::parse(line).map_err(|_| Dropped::Garbage)?;
    let provenance = provenance(&record, rules)?;
    let first = match &record.fields.id {
        Some(id) => ids.insert(id.clone()),
        None => bare_lines.insert(line),
    };
    if !first {
        return Err(Dropped::Copy);
    }
    let ts = record_time(&record, now);
    let latest = MAX_CLOCK_LEAD
        .checked_add(&margin(rules))
        .and_then(|lead| now.checked_add_signed(lead));
    if latest.is_some_and(|latest| ts > latest) {
        return Err(Dropped::FromTheFuture);
    }
    let until = match record.op {
        Op::Ban => {
            let default = BanTime::Seconds(rules.max_bantime.as_secs());
            let (bantime, _) = applied_bantime(&record, provenance, default, rules.max_bantime);
            until_ms(expiry(ts, bantime))
        }
        Op::Unban | Op::Allow | Op::Unallow => NEVER,
    };
    Ok(Seen {
        op: record.op,
        net: normalize(record.target.net()),
        ts: ts.timestamp_millis(),
        until,
        jail: record.fields.jail,
        node: record.fields.node,
    })
}

/// How far a record is vouched for, as a watcher with this host's trusted
/// keys would see it; with none, a signature is taken on trust.
fn provenance(record: &Record, rules: &RetentionRules) -> Result<Provenance, Dropped> {
    if record.op.is_control() {
        return allowlist_provenance(record, rules);
    }
    match &rules.trust {
        Some(trust) if !trust.keys.is_empty() || trust.require_signed => {
            trust.check(record).map_err(|_| Dropped::Untrusted)
        }
        _ if record.fields.sig.is_some() => Ok(Provenance::Verified),
        _ => Ok(Provenance::Unverified),
    }
}

/// An allowlist record stays only signed, and not refused by the trusted
/// keys for its signature: no watcher honours it otherwise. Whether its
/// signer is an operator is left to each watcher.
fn allowlist_provenance(record: &Record, rules: &RetentionRules) -> Result<Provenance, Dropped> {
    if record.fields.sig.is_none() {
        return Err(Dropped::Untrusted);
    }
    match &rules.trust {
        Some(trust) => trust
            .check_signature(record)
            .map_err(|_| Dropped::Untrusted),
        None => Ok(Provenance::Verified),
    }
}

/// Applies the ban and unban rules to the records that survived the first
/// look, turning their provisional `Keep` into their fate.
fn decide(fates: &mut [Fate], seen: &[Option<Seen>], rules: &RetentionRules, now: DateTime<Utc>) {
    let now_ms = now.timestamp_millis();
    let margin = i64::try_from(rules.clock_margin.as_millis()).unwrap_or(i64::MAX);
    // Every unban, as the policy remembers them (never forgotten here).
    let mut lifts = ActiveBans::default();
    let mut newest_unban: HashMap<(IpNet, Option<&str>), usize> = HashMap::new();
    for (i, s) in seen.iter().enumerate() {
        let Some(s) = s.as_ref().filter(|s| s.op == Op::Unban) else {
            continue;
        };
        lifts.note_lift(s.net, s.ts, s.jail.as_ref(), NEVER);
        let key = (s.net, s.jail.as_ref().map(Jail::as_str));
        match newest_unban.get(&key) {
            Some(&j) if seen[j].as_ref().is_some_and(|o| o.ts > s.ts) => {
                fates[i] = Fate::Drop(Dropped::OlderUnban);
            }
            Some(&j) => {
                fates[j] = Fate::Drop(Dropped::OlderUnban);
                newest_unban.insert(key, i);
            }
            None => {
                newest_unban.insert(key, i);
            }
        }
    }
    keep_newest_allowlist(fates, seen);
    let mut lifted_permanent = HashSet::new();
    for (i, s) in seen.iter().enumerate() {
        let Some(s) = s.as_ref().filter(|s| s.op == Op::Ban) else {
            continue;
        };
        let lifted = lifts.lifted_since(&s.net, s.ts, s.jail.as_ref());
        fates[i] = match (s.until == NEVER, lifted) {
            (true, true) => {
                lifted_permanent.insert(s.net);
                Fate::Keep(Kept::LiftedPermanentBan)
            }
            (true, false) => Fate::Keep(Kept::PermanentBan),
            (false, true) => Fate::Drop(Dropped::Lifted),
            (false, false) if s.until.saturating_add(margin) <= now_ms => {
                Fate::Drop(Dropped::Expired)
            }
            (false, false) => Fate::Keep(Kept::Ban),
        };
    }
    let remembered = unban_memory(rules).num_milliseconds();
    for i in newest_unban.into_values() {
        let s = seen[i].as_ref().expect("an unban seen");
        let forever = lifted_permanent.contains(&s.net);
        fates[i] = if forever || s.ts.saturating_add(remembered).saturating_add(margin) > now_ms {
            Fate::Keep(Kept::Unban)
        } else {
            Fate::Drop(Dropped::Forgotten)
        };
    }
}

/// The newest allowlist record (`ALLOW` or `UNALLOW`) of each network and
/// signer stays, for good; older ones go: the policy lets the newest
/// record it honours about a network win, whatever order they come in,
/// and the newest among any set of operators is the newest of one of them.
fn keep_newest_allowlist(fates: &mut [Fate], seen: &[Option<Seen>]) {
    let mut newest: HashMap<(IpNet, Option<&NodeId>), usize> = HashMap::new();
    for (i, s) in seen.iter().enumerate() {
        let Some(s) = s
            .as_ref()
            .filter(|s| matches!(s.op, Op::Allow | Op::Unallow))
        else {
            continue;
        };
        fates[i] = Fate::Keep(Kept::Allowlist);
        let key = (s.net, s.node.as_ref());
        if let Some(j) = newest.insert(key, i) {
            let older = if seen[j].as_ref().is_some_and(|o| o.ts > s.ts) {
                newest.insert(key, j);
                i
            } else {
                j
            };
            fates[older] = Fate::Drop(Dropped::OlderAllowlist);
        }
    }
}

/// How far a watcher's clock may be from this host's.
fn margin(rules: &RetentionRules) -> TimeDelta {
    TimeDelta::from_std(rules.clock_margin).unwrap_or(TimeDelta::MAX)
}

/// How long after its time an unban may still matter to a watcher: the
/// policy remembers it a day (or `findtime`), and at least until the bans
/// it lifted would have ended, at most `max_bantime` after it.
fn unban_memory(rules: &RetentionRules) -> TimeDelta {
    let of = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    TimeDelta::days(1)
        .max(of(rules.findtime))
        .max(of(rules.max_bantime))
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
