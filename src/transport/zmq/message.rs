//! The messages of the ZeroMQ transport, one ZeroMQ frame each, parsed
//! strictly: every byte that reaches a publisher's REP socket or a
//! subscriber may be forged or garbage.
//!
//! A submission is one of two shapes, told apart by the `|` byte:
//!
//! - **legacy** (fail2ban-zmq-tools' monitor): `TOKEN|host|jail|action|ip`,
//!   or `host|jail|action|ip` where no token is used. Its answer is the
//!   [`LegacySubmission::ack`] (the message without its token) or [`NAK`].
//! - **record**: one banshare record line, signed or not, exactly as in the
//!   file log ([`record::parse`]), optionally ending in one `\n`. No part of
//!   a record may contain `|` (not the header, an address, a port spec or
//!   any field value), so a message with a `|` is never a record, and one
//!   without is never a legacy message; a record starts with `<`.
//!
//! The legacy broadcast, which an unmodified subscriber of the original
//! `split('|')`s into exactly four fields, is [`legacy_broadcast`].
//!
//! `docs/zmq.md` ("Messages") is the specification, with the choices made
//! where the original was loose.

use std::fmt;
use std::net::IpAddr;

use subtle::ConstantTimeEq;

use crate::record::{self, Jail, MAX_LINE_LEN, NodeId, Op, Record, RejectReason, Target, excerpt};

/// The longest message taken, without a record's trailing `\n`: a record
/// line's own limit. Checked first, on the length alone, so a 1 MB message
/// costs nothing to refuse.
pub const MAX_MESSAGE_LEN: usize = MAX_LINE_LEN;

/// The shortest message any accepted shape can have: `h|j|Ban|::`.
pub const MIN_MESSAGE_LEN: usize = 10;

/// The answer to a refused submission, as the original publisher sends it.
pub const NAK: &str = "NAK";

/// The longest legacy token accepted in the configuration.
pub const MAX_TOKEN_LEN: usize = 256;

/// The longest legacy host: Linux's `HOST_NAME_MAX`, which bounds what the
/// original monitor sends (`socket.gethostname()`), and [`NodeId`]'s limit.
const MAX_HOST_LEN: usize = 64;

/// The longest RFC 1123 label.
const MAX_LABEL_LEN: usize = 63;

/// The jail a legacy broadcast names for a record that has none (`banshare
/// ban` without `--jail`): the jail banshare's own bans land in.
pub const LEGACY_FALLBACK_JAIL: &str = "banshare";

/// What the publisher does with legacy (`|`-separated) submissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyPolicy {
    /// Refuse them all: only banshare's own records are taken.
    Refused,
    /// Take `host|jail|action|ip` without a token (the original's `auth`
    /// off); a message with a token is refused.
    Open,
    /// Take only `TOKEN|host|jail|action|ip` with this token.
    Token(LegacyToken),
}

/// The shared secret of fail2ban-zmq-tools' `authtoken`.
///
/// `Debug` does not show it, no refusal's text quotes it, and `==`
/// compares in constant time too.
#[derive(Clone)]
pub struct LegacyToken(Box<str>);

/// Why a configured legacy token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad legacy token: {0}")]
pub struct BadToken(&'static str);

impl LegacyToken {
    /// Checks a token from the configuration: 1 to [`MAX_TOKEN_LEN`]
    /// printable ASCII characters other than `|` (which would split it).
    pub fn new(text: &str) -> Result<LegacyToken, BadToken> {
        if text.is_empty() {
            return Err(BadToken("it is empty"));
        }
        if text.len() > MAX_TOKEN_LEN {
            return Err(BadToken("it is longer than 256 bytes"));
        }
        if !text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(BadToken("it must be printable ASCII"));
        }
        if text.contains('|') {
            return Err(BadToken("it must not contain `|`"));
        }
        Ok(LegacyToken(text.into()))
    }

    /// Whether `given` is this token, compared in constant time: the time
    /// taken tells nothing of how many leading bytes matched, so the token
    /// cannot be guessed byte by byte. Only whether the lengths are equal
    /// shows (`subtle` returns early on a length mismatch), which gives
    /// away nothing of the token's content.
    fn matches(&self, given: &str) -> bool {
        given.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

impl PartialEq for LegacyToken {
    fn eq(&self, other: &LegacyToken) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for LegacyToken {}

impl fmt::Debug for LegacyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LegacyToken(<redacted>)")
    }
}

/// An accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Legacy(LegacySubmission),
    /// Boxed: a record is several times the size of a legacy submission.
    Record(Box<Record>),
}

/// The action word of a legacy message, kept as sent: the ACK repeats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyAction {
    /// `Ban`.
    Ban,
    /// `Unban`, as fail2ban 0.9 and later log it.
    Unban,
    /// `UnBan`, as older fail2ban logs it (the monitor's `Un[bB]an`).
    UnBan,
}

impl LegacyAction {
    fn parse(text: &str) -> Option<LegacyAction> {
        match text {
            "Ban" => Some(LegacyAction::Ban),
            "Unban" => Some(LegacyAction::Unban),
            "UnBan" => Some(LegacyAction::UnBan),
            _ => None,
        }
    }

    pub fn op(self) -> Op {
        match self {
            LegacyAction::Ban => Op::Ban,
            LegacyAction::Unban | LegacyAction::UnBan => Op::Unban,
        }
    }
}

/// An accepted legacy submission. Its parts are checked: the host is a
/// valid [`NodeId`], the jail a valid [`Jail`], so it always makes a record
/// (`outbox::append::build_legacy_record`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacySubmission {
    host: NodeId,
    jail: Jail,
    action: LegacyAction,
    address: IpAddr,
    /// The message from the host on, as received.
    ack: String,
}

impl LegacySubmission {
    /// The sending host, the node its records are written for.
    pub fn host(&self) -> &NodeId {
        &self.host
    }

    pub fn jail(&self) -> &Jail {
        &self.jail
    }

    pub fn action(&self) -> LegacyAction {
        self.action
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn target(&self) -> Target {
        Target::Addr(self.address)
    }

    /// The answer to an accepted submission: the message without its token
    /// (`host|jail|action|ip`), byte for byte as received, as the original
    /// publisher answers.
    pub fn ack(&self) -> &str {
        &self.ack
    }
}

/// Why a message is refused. The texts quote at most a short excerpt of
/// the message, with `{:?}` so that nothing in it is printed raw, and never
/// the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("empty message")]
    Empty,
    #[error("message is {len} bytes long, under the shortest possible ({MIN_MESSAGE_LEN})")]
    TooShort { len: usize },
    #[error("message is {len} bytes long, over the limit of {MAX_MESSAGE_LEN}")]
    TooLong { len: usize },
    #[error("control or non-ASCII byte 0x{byte:02x} at offset {offset}")]
    BadByte { byte: u8, offset: usize },
    #[error("neither a legacy message (no `|`) nor a record (does not start with `<`)")]
    UnknownShape,
    #[error("legacy (`|`-separated) messages are not accepted here")]
    LegacyRefused,
    #[error(
        "{count} `|`-separated fields; expected host|jail|action|ip, with a token first if configured"
    )]
    FieldCount { count: usize },
    #[error("no token, and one is required (4 fields where 5 are expected)")]
    MissingToken,
    #[error("wrong token")]
    WrongToken,
    #[error("a token, and none is configured (5 fields where 4 are expected)")]
    UnexpectedToken,
    #[error("bad host {0:?} (expected RFC 1123 labels, at most 64 bytes)")]
    BadHost(String),
    #[error("bad jail {0:?} (expected [A-Za-z0-9][A-Za-z0-9_-]*, at most 64 bytes)")]
    BadJail(String),
    #[error("unknown action {0:?} (expected Ban, Unban or UnBan)")]
    UnknownAction(String),
    #[error("bad address {0:?} (expected one IPv4 or IPv6 address)")]
    BadAddress(String),
    #[error("bad record: {0}")]
    BadRecord(#[from] RejectReason),
}

impl MessageError {
    /// A stable short name for counting refusals by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageError::Empty => "empty",
            MessageError::TooShort { .. } => "too_short",
            MessageError::TooLong { .. } => "too_long",
            MessageError::BadByte { .. } => "bad_byte",
            MessageError::UnknownShape => "unknown_shape",
            MessageError::LegacyRefused => "legacy_refused",
            MessageError::FieldCount { .. } => "field_count",
            MessageError::MissingToken => "missing_token",
            MessageError::WrongToken => "wrong_token",
            MessageError::UnexpectedToken => "unexpected_token",
            MessageError::BadHost(_) => "bad_host",
            MessageError::BadJail(_) => "bad_jail",
            MessageError::UnknownAction(_) => "unknown_action",
            MessageError::BadAddress(_) => "bad_address",
            MessageError::BadRecord(_) => "bad_record",
        }
    }
}

/// Parses one submission, as a publisher's REP socket receives it.
pub fn parse(message: &[u8], legacy: &LegacyPolicy) -> Result<Message, MessageError> {
    let text = check_bytes(message)?;
    if text.contains('|') {
        parse_legacy(text, legacy).map(Message::Legacy)
    } else if text.starts_with('<') {
        parse_record(text).map(|r| Message::Record(Box::new(r)))
    } else {
        Err(MessageError::UnknownShape)
    }
}

/// Parses a message that must be a record line (what banshare's own feed
/// carries), with the same limits as [`parse`].
pub fn parse_record_message(message: &[u8]) -> Result<Record, MessageError> {
    let text = check_bytes(message)?;
    if text.contains('|') || !text.starts_with('<') {
        return Err(MessageError::UnknownShape);
    }
    parse_record(text)
}

/// The limits every message is held to, cheapest first: length, then only
/// printable ASCII (no NUL, CR, LF, ESC or other control byte, no binary,
/// no Unicode), except for one `\n` that may end a record line. Returns
/// the message as text, without that `\n`.
fn check_bytes(message: &[u8]) -> Result<&str, MessageError> {
    if message.is_empty() {
        return Err(MessageError::Empty);
    }
    let body = if message.first() == Some(&b'<') {
        message.strip_suffix(b"\n").unwrap_or(message)
    } else {
        message
    };
    if body.len() > MAX_MESSAGE_LEN {
        return Err(MessageError::TooLong { len: message.len() });
    }
    if body.len() < MIN_MESSAGE_LEN {
        return Err(MessageError::TooShort { len: message.len() });
    }
    let printable = |b: &u8| (b' '..=b'~').contains(b);
    if let Some(offset) = body.iter().position(|b| !printable(b)) {
        return Err(MessageError::BadByte {
            byte: body[offset],
            offset,
        });
    }
    // All bytes are ASCII, so this cannot fail.
    std::str::from_utf8(body).map_err(|_| MessageError::UnknownShape)
}

fn parse_record(text: &str) -> Result<Record, MessageError> {
    Ok(record::parse(text.as_bytes())?)
}

fn parse_legacy(text: &str, policy: &LegacyPolicy) -> Result<LegacySubmission, MessageError> {
    let count = text.bytes().filter(|&b| b == b'|').count() + 1;
    let untokened = match (policy, count) {
        (LegacyPolicy::Refused, _) => return Err(MessageError::LegacyRefused),
        (LegacyPolicy::Open, 4) => text,
        (LegacyPolicy::Token(token), 5) => {
            let (given, rest) = text.split_once('|').expect("5 fields have a `|`");
            if !token.matches(given) {
                return Err(MessageError::WrongToken);
            }
            rest
        }
        (LegacyPolicy::Token(_), 4) => return Err(MessageError::MissingToken),
        (LegacyPolicy::Open, 5) => return Err(MessageError::UnexpectedToken),
        (_, count) => return Err(MessageError::FieldCount { count }),
    };
    let mut fields = untokened.split('|');
    let mut next = || fields.next().expect("4 fields counted");
    let (host, jail, action, address) = (next(), next(), next(), next());
    Ok(LegacySubmission {
        host: parse_host(host)?,
        jail: parse_jail(jail)?,
        action: LegacyAction::parse(action)
            .ok_or_else(|| MessageError::UnknownAction(excerpt(action)))?,
        address: address
            .parse()
            .map_err(|_| MessageError::BadAddress(excerpt(address)))?,
        ack: untokened.to_owned(),
    })
}

/// An RFC 1123 host name of at most [`MAX_HOST_LEN`] bytes: labels of 1
/// to 63 letters, digits and hyphens, neither starting nor ending with a
/// hyphen, joined by dots. No trailing dot: `gethostname()` has none.
fn parse_host(text: &str) -> Result<NodeId, MessageError> {
    let bad = || MessageError::BadHost(excerpt(text));
    if !is_rfc1123_host(text) {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

fn is_rfc1123_host(text: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    text.len() <= MAX_HOST_LEN && text.split('.').all(label_ok)
}

/// The original's `[a-zA-Z0-9_-]` jail characters that are also a valid
/// [`Jail`]: non-empty, starting with a letter or digit, at most 64 bytes.
fn parse_jail(text: &str) -> Result<Jail, MessageError> {
    let bad = || MessageError::BadJail(excerpt(text));
    if !is_legacy_jail(text) {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

fn is_legacy_jail(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why a record cannot go out on the legacy feed. Such a record still goes
/// to banshare's own subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotLegacy {
    #[error("a network, where the legacy format carries one address")]
    Network,
    #[error("no node to name as the host")]
    NoNode,
    #[error("the node is not an RFC 1123 host name of at most 64 bytes")]
    NodeNotHost,
    #[error("the jail holds a character the legacy format refuses (`.` or `@`)")]
    JailNotLegacy,
    #[error("an allowlist record, which the legacy format cannot say")]
    Control,
}

impl NotLegacy {
    /// A stable short name for counting.
    pub fn kind(self) -> &'static str {
        match self {
            NotLegacy::Network => "network",
            NotLegacy::NoNode => "no_node",
            NotLegacy::NodeNotHost => "node_not_host",
            NotLegacy::JailNotLegacy => "jail_not_legacy",
            NotLegacy::Control => "control",
        }
    }
}

/// The legacy broadcast of `record`: `host|jail|action|ip`, exactly four
/// fields, which an unmodified subscriber of the original `split('|')`s.
/// The host is the record's node, the action `Ban` or `Unban`, the jail
/// [`LEGACY_FALLBACK_JAIL`] when the record has none. Every broadcast is a
/// message [`parse`] accepts under [`LegacyPolicy::Open`].
pub fn legacy_broadcast(record: &Record) -> Result<String, NotLegacy> {
    let Target::Addr(address) = record.target else {
        return Err(NotLegacy::Network);
    };
    let node = record.fields.node.as_ref().ok_or(NotLegacy::NoNode)?;
    if !is_rfc1123_host(node.as_str()) {
        return Err(NotLegacy::NodeNotHost);
    }
    let jail = record
        .fields
        .jail
        .as_ref()
        .map_or(LEGACY_FALLBACK_JAIL, Jail::as_str);
    if !is_legacy_jail(jail) {
        return Err(NotLegacy::JailNotLegacy);
    }
    let action = match record.op {
        Op::Ban => "Ban",
        Op::Unban => "Unban",
        Op::Allow | Op::Unallow => return Err(NotLegacy::Control),
    };
    Ok(format!("{node}|{jail}|{action}|{address}"))
}

#[cfg(test)]
mod tests;
