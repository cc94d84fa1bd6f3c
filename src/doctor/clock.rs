//! Clock skew, from the log's last records. Every record carries its
//! writer's clock (`ts`); the log's modification time and a probe file's
//! carry the file server's. A node whose clock is ahead shows as records
//! dated in the future; one that is behind shows as a last record dated
//! well before the log was last written; this host's own clock shows
//! against the probe file, or as every node seeming off the same way.
//!
//! Skew matters: watchers count a ban from its `ts`, so the bans of a node
//! behind end early everywhere, or are dropped as expired; those of a node
//! ahead are counted from each watcher's own clock, with a warning each,
//! and refused by every watcher beyond [`MAX_CLOCK_LEAD`] (a problem, then:
//! none of that node's bans applies anywhere).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::Finding;
use crate::watch::policy::MAX_CLOCK_LEAD;

/// Skew above this is worth fixing (NTP keeps clocks within milliseconds).
pub const SKEW_WARNING: chrono::Duration = chrono::Duration::seconds(60);

const FIX: &str = "run an NTP client (systemd-timesyncd or chrony) on every node and on the file \
                   server; `timedatectl` shows whether the clock is synchronized";

/// What the clock check looks at.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// The last records' writers and `ts`, in log order.
    pub records: Vec<(String, DateTime<Utc>)>,
    /// When the log was last written, by the file server's clock.
    pub last_write: Option<DateTime<Utc>>,
    /// The time the file server gave a file created just now.
    pub server_now: Option<DateTime<Utc>>,
    /// Who `server_now` is: "the file server", "the SFTP server".
    pub server: &'static str,
    /// Why there is nothing to look at.
    pub unavailable: Option<String>,
}

impl Evidence {
    pub fn unavailable(why: &str) -> Evidence {
        Evidence {
            unavailable: Some(why.to_owned()),
            ..Evidence::default()
        }
    }
}

/// The writer and `ts` of every record in `tail` that has both; other
/// lines (garbage, `logger` lines without a year) tell nothing.
pub fn stamps(tail: &[u8]) -> Vec<(String, DateTime<Utc>)> {
    tail.split_inclusive(|&b| b == b'\n')
        .filter_map(|line| crate::record::parse(line).ok())
        .filter_map(|r| Some((r.fields.node?.to_string(), r.fields.ts?)))
        .collect()
}

/// The finding: the worst skew found, naming whose clock it is.
pub fn check(e: &Evidence, now: DateTime<Utc>) -> Finding {
    if let Some(why) = &e.unavailable {
        return Finding::ok("clock", format!("not checked: {why}"));
    }
    // This host against the file server.
    if let Some(server_now) = e.server_now {
        let skew = server_now - now;
        if skew.abs() > SKEW_WARNING {
            return Finding::warning(
                "clock",
                format!(
                    "this host's clock is {} {} {}'s (a file created there just now is dated {})",
                    span(skew),
                    if skew > chrono::Duration::zero() {
                        "behind"
                    } else {
                        "ahead of"
                    },
                    e.server,
                    stamp(server_now)
                ),
                FIX,
            );
        }
    }
    let newest = newest_by_node(&e.records);
    let ahead: Vec<(&String, chrono::Duration)> = newest
        .iter()
        .map(|(node, ts)| (*node, *ts - now))
        .filter(|(_, skew)| *skew > SKEW_WARNING)
        .collect();
    // Every node that wrote lately seems ahead by about as much: the one
    // clock they share against is this host's.
    if newest.len() >= 2 && ahead.len() == newest.len() {
        let least = ahead.iter().map(|(_, s)| *s).min().unwrap_or_default();
        return Finding::warning(
            "clock",
            format!(
                "this host's clock seems {} behind: the newest records of every node ({}) are dated \
                 that far ahead of it or more",
                span(least),
                names(&ahead)
            ),
            FIX,
        );
    }
    if let Some((node, skew)) = ahead.iter().max_by_key(|(_, s)| *s) {
        let detail = format!(
            "node {node}'s clock is {} ahead of this host's: its newest record is dated {}; ",
            span(*skew),
            stamp(newest[*node])
        );
        // The watchers' own limit: beyond it they refuse, not warn.
        if *skew > MAX_CLOCK_LEAD {
            return Finding::problem(
                "clock",
                format!(
                    "{detail}watchers refuse its bans as dated more than {} ahead (FromTheFuture \
                     in `banshare status`), so none of them applies anywhere",
                    span(MAX_CLOCK_LEAD)
                ),
                FIX,
            );
        }
        return Finding::warning(
            "clock",
            format!(
                "{detail}watchers apply its bans with a warning each (ClockAhead in \
                 `banshare status`)"
            ),
            FIX,
        );
    }
    // The last record against the moment the log was last written.
    if let (Some((node, ts)), Some(written)) = (e.records.last(), e.last_write) {
        let late = written - *ts;
        if late > SKEW_WARNING {
            return Finding::warning(
                "clock",
                format!(
                    "the log's last record, from node {node}, is dated {} before {} wrote it ({}): \
                     {node}'s clock is behind, or the record waited in its spool",
                    span(late),
                    e.server,
                    stamp(written)
                ),
                format!("if {node} has no spool backlog (`banshare status` there): {FIX}"),
            );
        }
    }
    match newest.len() {
        0 => Finding::ok("clock", "no dated records in the log's end to compare with"),
        n => Finding::ok(
            "clock",
            format!(
                "the newest records of {n} node(s) ({}) are dated within {} of this host's clock",
                newest
                    .keys()
                    .cloned()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                span(SKEW_WARNING)
            ),
        ),
    }
}

fn newest_by_node(records: &[(String, DateTime<Utc>)]) -> BTreeMap<&String, DateTime<Utc>> {
    let mut newest = BTreeMap::new();
    for (node, ts) in records {
        let t = newest.entry(node).or_insert(*ts);
        *t = (*t).max(*ts);
    }
    newest
}

fn names(skews: &[(&String, chrono::Duration)]) -> String {
    skews
        .iter()
        .map(|(n, s)| format!("{n} +{}", span(*s)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A skew as people say it: whole minutes from two minutes on (a record's
/// `ts` has whole seconds, and it was written some seconds ago), else
/// seconds.
fn span(d: chrono::Duration) -> String {
    let secs = d.num_seconds().unsigned_abs();
    let rounded = match secs {
        s if s >= 120 => (s + 30) / 60 * 60,
        s => s,
    };
    humantime::format_duration(std::time::Duration::from_secs(rounded)).to_string()
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn at(now: DateTime<Utc>, records: &[(&str, i64)]) -> Evidence {
        Evidence {
            records: records
                .iter()
                .map(|(n, s)| (n.to_string(), now + Duration::seconds(*s)))
                .collect(),
            last_write: Some(now),
            server_now: Some(now),
            server: "the file server",
            unavailable: None,
        }
    }

    #[test]
    fn names_whose_clock_is_off() {
        let now = Utc::now();
        let ok = check(&at(now, &[("a", -5), ("b", 0)]), now);
        assert_eq!(ok.level, super::super::Level::Ok, "{ok:?}");
        let one = check(&at(now, &[("a", -5), ("fast", 595)]), now);
        assert!(
            one.detail.contains("node fast's clock is 10m ahead"),
            "{one:?}"
        );
        let all = check(&at(now, &[("a", 600), ("b", 1200)]), now);
        assert!(
            all.detail.contains("this host's clock seems 10m behind"),
            "{all:?}"
        );
        let behind = check(&at(now, &[("a", -10), ("slow", -600)]), now);
        assert!(
            behind
                .detail
                .contains("from node slow, is dated 10m before"),
            "{behind:?}"
        );
        let mut server = at(now, &[]);
        server.server_now = Some(now + Duration::seconds(600));
        let host = check(&server, now);
        assert!(
            host.detail
                .contains("this host's clock is 10m behind the file server's"),
            "{host:?}"
        );
    }

    /// Review 13: a node more than a day ahead has every ban refused by
    /// every watcher (FromTheFuture, "dated more than a day ahead"), yet
    /// doctor said its bans are applied with a warning each.
    #[test]
    fn a_node_a_day_ahead_is_said_to_have_its_bans_refused() {
        let now = Utc::now();
        let far = check(&at(now, &[("a", -5), ("fast", 2 * 86_400)]), now);
        assert!(
            !far.detail.contains("watchers apply its bans") && far.detail.contains("refuse"),
            "{far:?}"
        );
    }
}
