//! Incident controls the policy keeps: the shared allowlist (`ALLOW` and
//! `UNALLOW` records, signed by an operator) and the nodes whose bans were
//! lifted (`banshare lift --node`).
//!
//! Both outlive the records that made them: the watcher's cursor moves past
//! an `ALLOW` line, so the allowlist is saved in the state directory
//! (`control.json`) before the cursor is, and restored at start.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::record::NodeId;
use crate::record::never_ban::overlaps;

/// The most allowlist entries (removed ones included) a watcher keeps: an
/// allowlist is a handful of offices and monitoring hosts, and every
/// record is checked against it. Beyond, new entries are refused loudly.
pub const MAX_ALLOWLIST: usize = 1024;

/// One allowlist entry as the newest record about its network left it.
/// A removed entry is kept (`listed: false`), so that an older `ALLOW`
/// read later, a copy or a replay, cannot list the network again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    pub target: IpNet,
    pub listed: bool,
    /// The record's time: the newest record about a network wins.
    pub ts: DateTime<Utc>,
    /// The operator that signed it.
    pub by: Option<NodeId>,
}

/// An [`AllowEntry`] in `control.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedAllow {
    pub target: String,
    pub listed: bool,
    pub ts: DateTime<Utc>,
    #[serde(default)]
    pub by: Option<String>,
}

/// A node whose bans were lifted: its ban records dated up to `before`
/// are refused from then on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiftedNode {
    pub node: String,
    pub before: DateTime<Utc>,
}

/// What `control.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedControl {
    #[serde(default)]
    pub allow: Vec<SavedAllow>,
    #[serde(default)]
    pub lifted: Vec<LiftedNode>,
}

/// Why an allowlist record changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotListed {
    /// A record at least as new about the same network was seen.
    Superseded,
    /// [`MAX_ALLOWLIST`] entries already.
    Full,
}

#[derive(Debug, Default)]
pub(super) struct Control {
    allow: HashMap<IpNet, AllowEntry>,
    /// The listed networks, for the check every record passes.
    listed: Vec<IpNet>,
    /// The networks taken off, and when: a ban dated before its entry was
    /// removed is refused (see [`Control::removed_since`]).
    removed: Vec<(IpNet, DateTime<Utc>)>,
    lifted: HashMap<NodeId, DateTime<Utc>>,
    /// Bumped on every change, so `control.json` is saved only then.
    pub version: u64,
}

impl Control {
    /// `net` is on the allowlist, or overlaps a network that is.
    pub fn allowed(&self, net: &IpNet) -> bool {
        self.listed.iter().any(|n| overlaps(n, net))
    }

    /// A ban dated `ts` on `net` is from before an entry overlapping it was
    /// taken off: while listed, or a copy of one lifted by the `ALLOW`. It
    /// stays refused, so that only a report made after the removal bans
    /// again, whatever order the records are read in.
    pub fn removed_since(&self, net: &IpNet, ts: DateTime<Utc>) -> bool {
        self.removed
            .iter()
            .any(|(n, at)| ts <= *at && overlaps(n, net))
    }

    /// Records an `ALLOW` (`listed`) or `UNALLOW` of `net` at `ts`.
    pub fn set(
        &mut self,
        net: IpNet,
        listed: bool,
        ts: DateTime<Utc>,
        by: Option<&NodeId>,
    ) -> Result<(), NotListed> {
        match self.allow.get(&net) {
            Some(entry) if entry.ts >= ts => return Err(NotListed::Superseded),
            None if self.allow.len() >= MAX_ALLOWLIST => return Err(NotListed::Full),
            _ => {}
        }
        let entry = AllowEntry {
            target: net,
            listed,
            ts,
            by: by.cloned(),
        };
        self.allow.insert(net, entry);
        self.relist();
        Ok(())
    }

    /// Notes that `node`'s bans up to `before` are lifted.
    pub fn lift(&mut self, node: &NodeId, before: DateTime<Utc>) {
        let at = self.lifted.entry(node.clone()).or_insert(before);
        *at = (*at).max(before);
        self.version += 1;
    }

    /// `node`'s ban record dated `ts` was lifted.
    pub fn lifted(&self, node: Option<&NodeId>, ts: DateTime<Utc>) -> bool {
        !self.lifted.is_empty()
            && node
                .and_then(|n| self.lifted.get(n))
                .is_some_and(|before| ts <= *before)
    }

    pub fn saved(&self) -> SavedControl {
        let mut entries: Vec<&AllowEntry> = self.allow.values().collect();
        entries.sort_by_key(|e| e.target);
        let allow = entries
            .into_iter()
            .map(|e| SavedAllow {
                target: e.target.to_string(),
                listed: e.listed,
                ts: e.ts,
                by: e.by.as_ref().map(ToString::to_string),
            })
            .collect();
        let mut lifted: Vec<LiftedNode> = self
            .lifted
            .iter()
            .map(|(node, before)| LiftedNode {
                node: node.to_string(),
                before: *before,
            })
            .collect();
        lifted.sort_by(|a, b| a.node.cmp(&b.node));
        SavedControl { allow, lifted }
    }

    /// Takes back what [`Control::saved`] gave; a file edited by hand may
    /// hold anything: what does not parse is left out.
    pub fn restore(&mut self, saved: SavedControl) {
        for entry in saved.allow.into_iter().take(MAX_ALLOWLIST) {
            let Ok(target) = entry.target.parse::<IpNet>() else {
                continue;
            };
            let entry = AllowEntry {
                target,
                listed: entry.listed,
                ts: entry.ts,
                by: entry.by.and_then(|b| b.parse().ok()),
            };
            self.allow.insert(target, entry);
        }
        for LiftedNode { node, before } in saved.lifted {
            if let Ok(node) = node.parse() {
                self.lifted.insert(node, before);
            }
        }
        self.relist();
    }

    fn relist(&mut self) {
        self.listed = self
            .allow
            .values()
            .filter(|e| e.listed)
            .map(|e| e.target)
            .collect();
        self.removed = self
            .allow
            .values()
            .filter(|e| !e.listed)
            .map(|e| (e.target, e.ts))
            .collect();
        self.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_record_about_a_network_wins_and_survives_a_restart() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let net: IpNet = "198.51.100.0/24".parse().unwrap();
        let inside: IpNet = "198.51.100.7/32".parse().unwrap();
        let mut control = Control::default();
        control
            .set(net, true, t("2026-11-21T10:00:00Z"), None)
            .unwrap();
        assert!(control.allowed(&inside));
        assert_eq!(
            control.set(net, false, t("2026-11-21T09:00:00Z"), None),
            Err(NotListed::Superseded)
        );
        control
            .set(net, false, t("2026-11-21T11:00:00Z"), None)
            .unwrap();
        assert!(!control.allowed(&inside));
        assert!(control.removed_since(&inside, t("2026-11-21T11:00:00Z")));
        assert!(!control.removed_since(&inside, t("2026-11-21T11:00:01Z")));
        // A copy of the ALLOW, read again, does not list it again.
        assert_eq!(
            control.set(net, true, t("2026-11-21T10:00:00Z"), None),
            Err(NotListed::Superseded)
        );
        let web3: NodeId = "web3".parse().unwrap();
        control.lift(&web3, t("2026-11-21T12:00:00Z"));
        let mut again = Control::default();
        again.restore(control.saved());
        assert_eq!(again.saved(), control.saved());
        assert!(again.lifted(Some(&web3), t("2026-11-21T12:00:00Z")));
        assert!(!again.lifted(Some(&web3), t("2026-11-21T12:00:01Z")));
        assert!(!again.lifted(None, t("2026-11-21T11:00:00Z")));
    }

    #[test]
    fn the_allowlist_is_bounded() {
        let mut control = Control::default();
        let ts = Utc::now();
        for i in 0..MAX_ALLOWLIST as u32 {
            let net = IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(i)));
            control.set(net, true, ts, None).unwrap();
        }
        let one_more: IpNet = "203.0.113.1/32".parse().unwrap();
        assert_eq!(control.set(one_more, true, ts, None), Err(NotListed::Full));
    }
}
