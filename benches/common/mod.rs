//! What more than one bench needs: reading the elements nftables reports.

use std::net::Ipv4Addr;

/// The IPv4 addresses in `add element inet t s { 10.0.0.1 timeout 1h ... }`,
/// a line of `nft monitor new elements` (`create element ...` for an
/// element banshare knew to be new).
pub fn element_addresses(line: &str) -> Vec<Ipv4Addr> {
    let Some(rest) = line
        .strip_prefix("add element ")
        .or_else(|| line.strip_prefix("create element "))
    else {
        return Vec::new();
    };
    let (Some(open), Some(close)) = (rest.find('{'), rest.rfind('}')) else {
        return Vec::new();
    };
    rest[open + 1..close]
        .split(',')
        .filter_map(|e| e.split_whitespace().next()?.parse().ok())
        .collect()
}
