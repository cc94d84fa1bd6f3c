//! The fixed rules on which addresses may be banned at all, shared by the
//! appender (`banshare ban` refuses such a target before writing anything)
//! and the watcher (which skips such a line written by anyone else).
//!
//! Two rules, the same on every node whatever its configuration says about
//! ignoreip or ignoreself:
//!
//! - a network may be no wider than `max_prefix_v4` / `max_prefix_v6`
//!   (`[watch]` settings, /16 and /48 by default);
//! - no target may be or contain loopback, unspecified, "this network"
//!   (0.0.0.0/8), multicast, link-local or broadcast addresses: banning
//!   them breaks the host or its network.
//!
//! An IPv4-mapped IPv6 target (`::ffff:127.0.0.1`) is judged as the IPv4
//! one it stands for, since that is what the packets carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why a target may never be banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NeverBan {
    #[error("network wider than /{max} ({key})")]
    TooWide { max: u8, key: &'static str },
    #[error("{0} address")]
    Reserved(&'static str),
}

/// Checks `net` against the fixed rules; returns it normalised (an
/// IPv4-mapped network as IPv4).
pub fn check(net: IpNet, max_prefix_v4: u8, max_prefix_v6: u8) -> Result<IpNet, NeverBan> {
    let net = normalize(net);
    let (max, key) = match net {
        IpNet::V4(_) => (max_prefix_v4, "watch.max_prefix_v4"),
        IpNet::V6(_) => (max_prefix_v6, "watch.max_prefix_v6"),
    };
    if net.prefix_len() < max {
        return Err(NeverBan::TooWide { max, key });
    }
    match NEVER_BAN.iter().find(|(n, _)| overlaps(n, &net)) {
        Some((_, what)) => Err(NeverBan::Reserved(what)),
        None => Ok(net),
    }
}

/// An IPv4-mapped IPv6 address or network means the IPv4 one.
pub fn normalize(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// An IPv4-mapped IPv6 address means the IPv4 one.
pub fn normalize_addr(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// One of the two networks contains the other: their addresses agree on
/// the shorter prefix. (Checked for every record against every never-ban
/// network, so in plain integer arithmetic.)
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    let len = u32::from(a.prefix_len().min(b.prefix_len()));
    match (a, b) {
        (IpNet::V4(a), IpNet::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            (a.addr().to_bits() ^ b.addr().to_bits()) & mask == 0
        }
        (IpNet::V6(a), IpNet::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            (a.addr().to_bits() ^ b.addr().to_bits()) & mask == 0
        }
        _ => false,
    }
}

/// Ranges no node ever bans, with what they are. Built once: every record
/// is checked against it.
static NEVER_BAN: std::sync::LazyLock<[(IpNet, &'static str); 10]> =
    std::sync::LazyLock::new(never_ban_nets);

fn never_ban_nets() -> [(IpNet, &'static str); 10] {
    let v4 = |a: [u8; 4], len| IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), len).expect("valid");
    let v6 = |a: Ipv6Addr, len| IpNet::new(IpAddr::V6(a), len).expect("valid");
    [
        // "This network", which includes the unspecified address.
        (v4([0, 0, 0, 0], 8), "unspecified"),
        (v4([127, 0, 0, 0], 8), "loopback"),
        (v4([169, 254, 0, 0], 16), "link-local"),
        (v4([224, 0, 0, 0], 4), "multicast"),
        (v4([255, 255, 255, 255], 32), "broadcast"),
        (v6(Ipv6Addr::UNSPECIFIED, 128), "unspecified"),
        (v6(Ipv6Addr::LOCALHOST, 128), "loopback"),
        (
            v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
            "link-local",
        ),
        (
            v6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
            "multicast",
        ),
        (
            v6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 128),
            "unspecified",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_text(text: &str) -> Result<IpNet, NeverBan> {
        let net = crate::config::parse_net(text).unwrap();
        check(net, 16, 48)
    }

    #[test]
    fn reserved_ranges_and_wide_networks_are_named() {
        assert_eq!(check_text("127.0.0.1"), Err(NeverBan::Reserved("loopback")));
        assert_eq!(
            check_text("::ffff:224.0.0.1"),
            Err(NeverBan::Reserved("multicast"))
        );
        assert_eq!(
            check_text("0.0.0.0/0"),
            Err(NeverBan::TooWide {
                max: 16,
                key: "watch.max_prefix_v4"
            })
        );
        assert_eq!(
            check(check_text("10.1.0.0/16").unwrap(), 8, 8).map(|n| n.prefix_len()),
            Ok(16)
        );
        assert_eq!(
            check(crate::config::parse_net("0.0.0.0/0").unwrap(), 0, 0),
            Err(NeverBan::Reserved("unspecified"))
        );
    }
}
