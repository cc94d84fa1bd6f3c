//! The typed values a record carries. Each type can only be built from text
//! that passes its own strict check, so a `Record` in memory is always one
//! that would be accepted again when read back.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use super::RejectReason;
use super::text::Text;

/// The address a record is about: one host, or a network in CIDR notation.
/// Whether a network may be banned, and how wide, is the watcher's policy,
/// not the format's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Addr(IpAddr),
    Net(IpNet),
}

impl Target {
    /// The network this target covers (`/32` or `/128` for one address).
    pub fn net(&self) -> IpNet {
        match *self {
            Target::Addr(addr) => IpNet::from(addr),
            Target::Net(net) => net,
        }
    }
}

impl FromStr for Target {
    type Err = RejectReason;

    fn from_str(text: &str) -> Result<Target, RejectReason> {
        let bad = || RejectReason::BadAddress(super::excerpt(text));
        // std's parsers are strict already: no leading zeros in IPv4 octets,
        // no zone ids, no trailing garbage.
        match super::scan::split_once(text, b'/') {
            None => text.parse().map(Target::Addr).map_err(|_| bad()),
            Some((addr, len)) => {
                if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                let len: u8 = len.parse().map_err(|_| bad())?;
                let net = IpNet::new(addr, len).map_err(|_| bad())?;
                // `1.2.3.4/24` is most likely a mistake for one of two
                // different things; refuse to guess which.
                if net.network() != addr {
                    return Err(RejectReason::HostBitsSet(super::excerpt(text)));
                }
                Ok(Target::Net(net))
            }
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => addr.fmt(f),
            Target::Net(net) => net.fmt(f),
        }
    }
}

/// At most this many comma-separated items in a port spec.
const MAX_PORT_ITEMS: usize = 32;
/// Service names as in /etc/services are short.
const MAX_SERVICE_NAME: usize = 32;

/// One item of a port spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortItem {
    Number(u16),
    /// An inclusive range, `first:last`, with `first <= last`.
    Range(u16, u16),
    /// A service name such as `ssh` or `http-alt`, resolved by whoever bans.
    Service(String),
}

/// A fail2ban style port spec: `22`, `ssh`, `0:65535`, `80,443`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortSpec(Vec<PortItem>);

impl PortSpec {
    /// Every port: what a record means when nothing narrower is known.
    pub fn all() -> PortSpec {
        PortSpec(vec![PortItem::Range(0, 65535)])
    }

    pub fn items(&self) -> &[PortItem] {
        &self.0
    }
}

impl FromStr for PortSpec {
    type Err = RejectReason;

    fn from_str(text: &str) -> Result<PortSpec, RejectReason> {
        let bad = || RejectReason::BadPortSpec(super::excerpt(text));
        let count = text.bytes().filter(|b| *b == b',').count() + 1;
        if count > MAX_PORT_ITEMS {
            return Err(bad());
        }
        let mut items = Vec::with_capacity(count);
        for item in super::scan::split(text, b',') {
            items.push(parse_port_item(item).ok_or_else(bad)?);
        }
        Ok(PortSpec(items))
    }
}

fn parse_port_item(item: &str) -> Option<PortItem> {
    if let Some((first, last)) = super::scan::split_once(item, b':') {
        let (first, last) = (parse_port_number(first)?, parse_port_number(last)?);
        return (first <= last).then_some(PortItem::Range(first, last));
    }
    if item.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_port_number(item).map(PortItem::Number);
    }
    is_service_name(item).then(|| PortItem::Service(item.to_owned()))
}

/// A decimal port without sign or leading zeros (except `0` itself).
fn parse_port_number(text: &str) -> Option<u16> {
    let canonical = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

fn is_service_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && text.len() <= MAX_SERVICE_NAME
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match item {
                PortItem::Number(n) => write!(f, "{n}")?,
                PortItem::Range(a, b) => write!(f, "{a}:{b}")?,
                PortItem::Service(name) => f.write_str(name)?,
            }
        }
        Ok(())
    }
}

/// Defines a string newtype whose only constructor checks `$valid`.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $field:literal, $valid:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Text);

        impl $name {
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl FromStr for $name {
            type Err = RejectReason;

            fn from_str(text: &str) -> Result<$name, RejectReason> {
                let valid: fn(&str) -> bool = $valid;
                if valid(text) {
                    Ok($name(Text::new(text)))
                } else {
                    Err(RejectReason::BadValue { key: $field, value: super::excerpt(text) })
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

fn is_name(text: &str, max: usize, extra: &[u8]) -> bool {
    let mut bytes = text.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && text.len() <= max
        && bytes.all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

checked_string!(
    /// A fail2ban jail name: letters, digits, `-`, `_`, `.`, `@`; at most 64.
    Jail,
    "jail",
    |t| is_name(t, 64, b"-_.@")
);

checked_string!(
    /// A node's identity, by default its hostname: letters, digits, `-`,
    /// `_`, `.`; at most 64.
    NodeId,
    "node",
    |t| is_name(t, 64, b"-_.")
);

checked_string!(
    /// The syslog tag (`logger -t`), by default the user name.
    Tag,
    "tag",
    |t| is_name(t, 64, b"-_.@/")
);

checked_string!(
    /// A record's unique id: 16 to 64 lowercase hexadecimal digits.
    /// banshare writes 24 (96 random bits).
    RecordId,
    "id",
    |t| (16..=64).contains(&t.len()) && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
);

checked_string!(
    /// A signature, reserved for record signing: base64 or base64url text.
    Signature,
    "sig",
    |t| (1..=512).contains(&t.len())
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
);

impl RecordId {
    /// A new random id from the operating system's generator.
    pub fn random() -> Result<RecordId, getrandom::Error> {
        let mut bytes = [0u8; 12];
        getrandom::fill(&mut bytes)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(RecordId(Text::new(&hex)))
    }
}

/// The longest ban time a record may carry: `banshare ban` clamps a longer
/// one to it (with a warning), the configuration refuses one. Bounding it
/// keeps `ts + bantime` far from overflow.
pub const MAX_BANTIME_SECS: u64 = 10 * 366 * 24 * 3600;

/// How long a ban lasts. fail2ban writes a negative bantime for "forever".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BanTime {
    Seconds(u64),
    Permanent,
}

impl FromStr for BanTime {
    type Err = RejectReason;

    fn from_str(text: &str) -> Result<BanTime, RejectReason> {
        if text == "-1" {
            return Ok(BanTime::Permanent);
        }
        match parse_positive_decimal(text) {
            Some(secs) if (1..=MAX_BANTIME_SECS).contains(&secs) => Ok(BanTime::Seconds(secs)),
            _ => Err(RejectReason::BadValue {
                key: "bantime",
                value: super::excerpt(text),
            }),
        }
    }
}

/// A decimal without sign or leading zeros.
fn parse_positive_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 12
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    if canonical { text.parse().ok() } else { None }
}

impl fmt::Display for BanTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BanTime::Seconds(secs) => write!(f, "{secs}"),
            BanTime::Permanent => f.write_str("-1"),
        }
    }
}
