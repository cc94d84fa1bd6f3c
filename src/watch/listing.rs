//! `banshare bans`: the active bans a watcher saved (`active.json`, see
//! [`crate::watch::state`]), filtered and in the one JSON form the command
//! prints. Reading takes no lock: the watcher replaces the file atomically,
//! so a reader sees one whole save, at most a few seconds old.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Serialize;

use super::policy::ActiveBan;
use crate::record::never_ban::{normalize, normalize_addr, overlaps};
use crate::record::{Jail, NodeId};

/// The version of [`Listing`]'s JSON form. Fields may be added within a
/// version; none is removed or changes its meaning.
pub const LISTING_VERSION: u64 = 1;

/// Which bans to list: all given conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct BanFilter {
    /// Bans whose network contains this address.
    pub addr: Option<IpAddr>,
    /// Bans whose network overlaps this one: inside it, or covering it.
    pub net: Option<IpNet>,
    /// Bans put in force by this node's records.
    pub node: Option<NodeId>,
    pub jail: Option<Jail>,
}

impl BanFilter {
    pub fn matches(&self, net: &IpNet, ban: &ActiveBan) -> bool {
        let net = normalize(*net);
        self.addr.is_none_or(|a| net.contains(&normalize_addr(a)))
            && self.net.is_none_or(|n| overlaps(&normalize(n), &net))
            && self
                .node
                .as_ref()
                .is_none_or(|n| ban.node.as_ref() == Some(n))
            && self
                .jail
                .as_ref()
                .is_none_or(|j| ban.jail.as_ref() == Some(j))
    }
}

/// What `banshare bans --json` prints.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub version: u64,
    /// When the watcher saved these bans (`None`: it saved none yet).
    pub saved: Option<DateTime<Utc>>,
    /// Sorted by address, IPv4 first.
    pub bans: Vec<ListedBan>,
}

/// One ban in force.
#[derive(Debug, Serialize)]
pub struct ListedBan {
    /// An address (`192.0.2.7`), or a network (`2001:db8::/64`).
    pub address: String,
    pub jail: Option<String>,
    /// The node whose record put the ban in force (the newest, when later
    /// reports extended it).
    pub node: Option<String>,
    /// The time of the newest record that reported it.
    pub since: DateTime<Utc>,
    /// When it ends; `None`: never.
    pub until: Option<DateTime<Utc>>,
}

impl Listing {
    /// The bans of `saved` that are still in force at `now` and pass
    /// `filter`.
    pub fn new(
        saved: Vec<(IpNet, ActiveBan)>,
        saved_at: Option<DateTime<Utc>>,
        filter: &BanFilter,
        now: DateTime<Utc>,
    ) -> Listing {
        let mut bans: Vec<(IpNet, ActiveBan)> = saved
            .into_iter()
            .filter(|(_, ban)| ban.until.is_none_or(|until| until > now))
            .filter(|(net, ban)| filter.matches(net, ban))
            .collect();
        bans.sort_by_key(|(net, _)| *net);
        Listing {
            version: LISTING_VERSION,
            saved: saved_at,
            bans: bans
                .into_iter()
                .map(|(net, ban)| ListedBan {
                    address: address_text(net),
                    jail: ban.jail.map(|j| j.to_string()),
                    node: ban.node.map(|n| n.to_string()),
                    since: ban.since,
                    until: ban.until,
                })
                .collect(),
        }
    }
}

/// A network of one address as that address, like fail2ban and records
/// show it; a wider one with its prefix.
fn address_text(net: IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(jail: &str, node: &str, until: Option<DateTime<Utc>>) -> ActiveBan {
        ActiveBan {
            until,
            jail: Some(jail.parse().unwrap()),
            since: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            node: Some(node.parse().unwrap()),
        }
    }

    #[test]
    fn filters_combine_and_over_bans_are_left_out() {
        let now = DateTime::from_timestamp(1_800_000_100, 0).unwrap();
        let later = Some(now + chrono::Duration::seconds(60));
        let saved = vec![
            ("2001:db8::/64".parse().unwrap(), ban("sshd", "web1", None)),
            ("192.0.2.1/32".parse().unwrap(), ban("sshd", "web1", later)),
            (
                "192.0.2.2/32".parse().unwrap(),
                ban("recidive", "web2", later),
            ),
            (
                "192.0.2.3/32".parse().unwrap(),
                ban("sshd", "web1", Some(now)),
            ),
        ];
        let list = |filter: BanFilter| -> Vec<String> {
            Listing::new(saved.clone(), None, &filter, now)
                .bans
                .into_iter()
                .map(|b| b.address)
                .collect()
        };
        assert_eq!(
            list(BanFilter::default()),
            ["192.0.2.1", "192.0.2.2", "2001:db8::/64"]
        );
        let in_net = BanFilter {
            net: Some("192.0.2.0/24".parse().unwrap()),
            jail: Some("sshd".parse().unwrap()),
            ..BanFilter::default()
        };
        assert_eq!(list(in_net), ["192.0.2.1"]);
        let mapped = BanFilter {
            addr: Some("::ffff:192.0.2.2".parse().unwrap()),
            node: Some("web2".parse().unwrap()),
            ..BanFilter::default()
        };
        assert_eq!(list(mapped), ["192.0.2.2"]);
        let covering = BanFilter {
            net: Some("2001:db8::/120".parse().unwrap()),
            ..BanFilter::default()
        };
        assert_eq!(list(covering), ["2001:db8::/64"]);
    }
}
