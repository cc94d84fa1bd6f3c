//! The circuit breaker's state as the watcher saves it with its cursor:
//! each node's rate window and the open breakers. Without it, each restart
//! would let a flooding node through for another minute's worth of bans.
//!
//! The saved size is bounded, since any record can claim any node name:
//! at most [`MAX_SAVED_NODES`] open breakers (the latest to close) and
//! [`MAX_SAVED_TIMES`] ban times (the fullest windows first, so the nodes
//! nearest to tripping are the ones remembered). A window left out only
//! starts empty again, as every window did before.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Policy;
use crate::record::NodeId;

/// The most open breakers saved.
pub const MAX_SAVED_NODES: usize = 1024;
/// The most ban times saved over all rate windows.
pub const MAX_SAVED_TIMES: usize = 20_000;

/// What [`Policy::breaker_state`] saves and [`Policy::restore_breaker`]
/// reads back. A node of `None` is the records that carry no node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerState {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<RateWindow>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tripped: Vec<OpenBreaker>,
}

/// One node's recent ban times (milliseconds since the epoch, by the
/// records' own times, oldest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateWindow {
    pub node: Option<String>,
    pub times: Vec<i64>,
}

/// A node whose records are refused until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenBreaker {
    pub node: Option<String>,
    pub until: DateTime<Utc>,
}

impl Policy {
    /// The breaker's state at `now`, bounded as the module says.
    pub fn breaker_state(&self, now: DateTime<Utc>) -> BreakerState {
        let mut tripped: Vec<OpenBreaker> = self
            .tripped(now)
            .map(|(node, until)| OpenBreaker {
                node: node.map(NodeId::to_string),
                until,
            })
            .collect();
        tripped.sort_by_key(|b| std::cmp::Reverse(b.until));
        tripped.truncate(MAX_SAVED_NODES);
        let mut fullest: Vec<_> = self.rates.iter().filter(|(_, t)| !t.is_empty()).collect();
        fullest.sort_by_key(|(_, times)| std::cmp::Reverse(times.len()));
        let mut budget = MAX_SAVED_TIMES;
        let mut windows = Vec::new();
        for (node, times) in fullest {
            if budget == 0 {
                break;
            }
            // The newest times, which stay in the window longest.
            let keep = times.len().min(budget);
            budget -= keep;
            windows.push(RateWindow {
                node: node.as_ref().map(NodeId::to_string),
                times: times.iter().skip(times.len() - keep).copied().collect(),
            });
        }
        BreakerState { windows, tripped }
    }

    /// Restores a saved breaker state. Node names that no longer parse are
    /// dropped; breakers closed by `now` stay closed.
    pub fn restore_breaker(&mut self, state: BreakerState, now: DateTime<Utc>) {
        let max = self.settings.max_bans_per_node_per_minute as usize;
        for window in state.windows {
            let Some(node) = parse_node(window.node) else {
                continue;
            };
            let mut times: VecDeque<i64> = window.times.into_iter().collect();
            while times.len() > max {
                times.pop_front();
            }
            self.rates.insert(node, times);
        }
        for open in state.tripped {
            if open.until <= now {
                continue;
            }
            if let Some(node) = parse_node(open.node) {
                self.tripped.insert(node, open.until);
            }
        }
    }
}

/// `Some(None)` for the records without a node, `None` for a bad name.
fn parse_node(node: Option<String>) -> Option<Option<NodeId>> {
    match node {
        None => Some(None),
        Some(name) => name.parse().ok().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::policy::{PolicySettings, Skip};

    fn policy(max: u32) -> Policy {
        Policy::new(PolicySettings {
            max_bans_per_node_per_minute: max,
            ..PolicySettings::defaults("me".parse().unwrap())
        })
    }

    fn now() -> DateTime<Utc> {
        "2026-11-21T18:00:00Z".parse().unwrap()
    }

    fn ban(i: u32, node: &str) -> crate::record::Record {
        let text = format!(
            "<13>Nov 21 18:00:00 banshare[1]: HOST 10.0.{}.{} PORT 22 node={node} ts=2026-11-21T17:59:30Z",
            i / 250,
            i % 250
        );
        crate::record::parse(text.as_bytes()).unwrap()
    }

    /// The state saved, as JSON and back, into a fresh policy.
    fn restarted(p: &Policy, max: u32) -> Policy {
        let json = serde_json::to_string(&p.breaker_state(now())).unwrap();
        let mut fresh = policy(max);
        fresh.restore_breaker(serde_json::from_str(&json).unwrap(), now());
        fresh
    }

    #[test]
    fn an_open_breaker_and_a_rate_window_survive_a_restart() {
        let mut p = policy(3);
        for i in 0..4 {
            let _ = p.decide(&ban(i, "flood"), now());
        }
        let _ = p.decide(&ban(100, "busy"), now());
        let _ = p.decide(&ban(101, "busy"), now());
        let _ = p.decide(&ban(102, "busy"), now());
        let mut p = restarted(&p, 3);
        assert_eq!(p.decide(&ban(5, "flood"), now()), Err(Skip::NodeTripped));
        // "busy" sent three in the window: the fourth trips it.
        assert_eq!(
            p.decide(&ban(103, "busy"), now()),
            Err(Skip::BreakerTripped)
        );
        // A closed breaker is not restored.
        let later = now() + chrono::Duration::hours(1);
        let mut fresh = policy(3);
        fresh.restore_breaker(p.breaker_state(now()), later);
        assert_eq!(fresh.tripped(later).count(), 0);
    }

    #[test]
    fn the_saved_state_is_bounded_fullest_windows_first() {
        let max = 600;
        let mut p = policy(max);
        // One node near its limit, then many nodes with one ban each.
        for i in 0..590 {
            let _ = p.decide(&ban(i, "near"), now());
        }
        for n in 0..(MAX_SAVED_TIMES as u32) {
            let _ = p.decide(&ban(1000 + n, &format!("n{n}")), now());
        }
        let state = p.breaker_state(now());
        let saved: usize = state.windows.iter().map(|w| w.times.len()).sum();
        assert_eq!(saved, MAX_SAVED_TIMES);
        assert_eq!(state.windows[0].node.as_deref(), Some("near"));
        assert_eq!(state.windows[0].times.len(), 590);
    }
}
