//! The record format: one logger-compatible line per ban or unban.
//!
//! ```text
//! <13>Nov 21 18:28:04 banshare[3284]: HOST 1.2.3.4 PORT 22 jail=sshd node=web1 ts=2026-11-21T18:28:04Z bantime=1800 id=5f0c...
//! <13>Nov 21 18:29:10 banshare[3301]: UNBAN 1.2.3.4 PORT 22 jail=sshd node=web1 ts=2026-11-21T18:29:10Z id=9ab1...
//! ```
//!
//! A ban keeps the seed system's `HOST <ip> PORT <port>` words, so a line
//! written by hand with `logger -s` is a valid ban record. An unban starts
//! with `UNBAN` instead, so that no filter written for ban lines can read it
//! as a ban. `docs/format.md` is the full specification.
//!
//! Every line of the shared log may be forged or garbage: [`parse`] accepts
//! exactly the grammar and rejects everything else with a [`RejectReason`].

mod header;
pub mod never_ban;
mod scan;
mod text;
mod value;

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

pub use header::{DEFAULT_PRIORITY, SyslogHeader, SyslogTime};
pub use value::{
    BanTime, Jail, MAX_BANTIME_SECS, NodeId, PortItem, PortSpec, RecordId, Signature, Tag, Target,
};

/// Lines longer than this (without the newline) are rejected.
pub const MAX_LINE_LEN: usize = 4096;

/// How a compacted log's first line starts (see `banshare compact`). It is
/// no record: watchers skip it without counting it as rejected.
pub const COMPACTED_PREFIX: &str = "# banshare-compacted ";

/// Whether `line` is the marker a compaction puts first in the new log.
pub fn is_compaction_marker(line: &[u8]) -> bool {
    line.starts_with(COMPACTED_PREFIX.as_bytes())
}

/// What a record asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Ban,
    Unban,
    /// Put an address or network on the shared allowlist: never banned,
    /// like fail2ban's `ignoreip`, and lifted where banned. A control
    /// record: applied only when signed by an operator (`trust.operators`).
    Allow,
    /// Take an address or network off the shared allowlist (a control
    /// record).
    Unallow,
}

impl Op {
    /// The word that starts the message.
    fn verb(self) -> &'static str {
        match self {
            Op::Ban => "HOST",
            Op::Unban => "UNBAN",
            Op::Allow => "ALLOW",
            Op::Unallow => "UNALLOW",
        }
    }

    /// A control record (the allowlist): it changes what every watcher
    /// may ban, so only an operator's signature makes it count.
    pub fn is_control(self) -> bool {
        matches!(self, Op::Allow | Op::Unallow)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Ban => "ban",
            Op::Unban => "unban",
            Op::Allow => "allow",
            Op::Unallow => "unallow",
        })
    }
}

/// The optional `key=value` fields. A line written by hand with `logger`
/// has none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Fields {
    pub jail: Option<Jail>,
    /// The node that wrote the record.
    pub node: Option<NodeId>,
    /// When the ban started, in UTC.
    pub ts: Option<DateTime<Utc>>,
    pub bantime: Option<BanTime>,
    pub id: Option<RecordId>,
    /// Reserved for signed records.
    pub sig: Option<Signature>,
}

/// One parsed line of the shared log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    pub header: SyslogHeader,
    pub op: Op,
    pub target: Target,
    pub ports: PortSpec,
    pub fields: Fields,
}

impl Record {
    /// The text a signature covers: the message from the verb through every
    /// field but `sig`, in canonical order, without the syslog header (which
    /// carries no information the fields do not, and which relays may
    /// rewrite).
    pub fn signed_text(&self) -> String {
        self.signed_part().to_string()
    }

    /// [`Record::signed_text`] to write somewhere (a hash, a buffer)
    /// without a `String` of its own: a catch-up checks a million.
    pub fn signed_part(&self) -> impl fmt::Display + '_ {
        Body {
            record: self,
            with_sig: false,
        }
    }
}

impl fmt::Display for Record {
    /// The line, without its newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.header)?;
        Body {
            record: self,
            with_sig: true,
        }
        .fmt(f)
    }
}

/// A record's message, from the verb on: the line without its header,
/// with or without the signature.
struct Body<'r> {
    record: &'r Record,
    with_sig: bool,
}

impl fmt::Display for Body<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.record;
        write!(f, "{} {} PORT {}", r.op.verb(), r.target, r.ports)?;
        let fields = &r.fields;
        if let Some(jail) = &fields.jail {
            write!(f, " jail={jail}")?;
        }
        if let Some(node) = &fields.node {
            write!(f, " node={node}")?;
        }
        if let Some(ts) = &fields.ts {
            write!(f, " ts={}", ts.to_rfc3339_opts(SecondsFormat::AutoSi, true))?;
        }
        if let Some(bantime) = &fields.bantime {
            write!(f, " bantime={bantime}")?;
        }
        if let Some(id) = &fields.id {
            write!(f, " id={id}")?;
        }
        match &fields.sig {
            Some(sig) if self.with_sig => write!(f, " sig={sig}"),
            _ => Ok(()),
        }
    }
}

/// Why a line is not a record. The texts quote at most a short, escaped
/// excerpt of the line, so that a hostile line cannot forge log output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("empty line")]
    Empty,
    #[error("line is {len} bytes long, over the limit of {MAX_LINE_LEN}")]
    TooLong { len: usize },
    #[error("control or non-ASCII byte 0x{byte:02x} at offset {offset}")]
    BadByte { byte: u8, offset: usize },
    #[error("bad syslog header: {0}")]
    BadHeader(&'static str),
    #[error("unknown verb {0:?} (expected HOST, UNBAN, ALLOW or UNALLOW)")]
    UnknownVerb(String),
    #[error("expected `<verb> <address> PORT <ports>`")]
    BadShape,
    #[error("bad address {0:?}")]
    BadAddress(String),
    #[error("network {0:?} has host bits set")]
    HostBitsSet(String),
    #[error("bad port spec {0:?}")]
    BadPortSpec(String),
    #[error("bad field {0:?} (expected key=value)")]
    BadField(String),
    #[error("unknown field {0:?}")]
    UnknownField(String),
    #[error("field {0:?} appears twice")]
    RepeatedField(&'static str),
    #[error("bad value for {key}: {value:?}")]
    BadValue { key: &'static str, value: String },
    /// An allowlist record with a part it may not have: ports other than
    /// `0:65535` (it covers every port, as `ignoreip` does), a `jail` or a
    /// `bantime`.
    #[error("{verb} record: {why}")]
    BadControl {
        verb: &'static str,
        why: &'static str,
    },
}

impl RejectReason {
    /// A stable short name for counting rejections by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            RejectReason::Empty => "empty",
            RejectReason::TooLong { .. } => "too_long",
            RejectReason::BadByte { .. } => "bad_byte",
            RejectReason::BadHeader(_) => "bad_header",
            RejectReason::UnknownVerb(_) => "unknown_verb",
            RejectReason::BadShape => "bad_shape",
            RejectReason::BadAddress(_) => "bad_address",
            RejectReason::HostBitsSet(_) => "host_bits_set",
            RejectReason::BadPortSpec(_) => "bad_port_spec",
            RejectReason::BadField(_) => "bad_field",
            RejectReason::UnknownField(_) => "unknown_field",
            RejectReason::RepeatedField(_) => "repeated_field",
            RejectReason::BadValue { .. } => "bad_value",
            RejectReason::BadControl { .. } => "bad_control",
        }
    }
}

/// A short excerpt of untrusted text for error messages, which show it with
/// `{:?}` so that control characters come out escaped.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX: usize = 64;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Parses one line (a trailing `\n` is allowed) into a record.
pub fn parse(line: &[u8]) -> Result<Record, RejectReason> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = check_bytes(line)?;
    let (header, message) = header::parse(line)?;
    let mut words = scan::split(message, b' ');
    let op = match words.next() {
        Some("HOST") => Op::Ban,
        Some("UNBAN") => Op::Unban,
        Some("ALLOW") => Op::Allow,
        Some("UNALLOW") => Op::Unallow,
        Some(other) => return Err(RejectReason::UnknownVerb(excerpt(other))),
        None => return Err(RejectReason::BadShape),
    };
    let target = words.next().ok_or(RejectReason::BadShape)?.parse()?;
    if words.next() != Some("PORT") {
        return Err(RejectReason::BadShape);
    }
    let ports = words.next().ok_or(RejectReason::BadShape)?.parse()?;
    let fields = parse_fields(words)?;
    if op.is_control() {
        check_control(op, &ports, &fields)?;
    }
    Ok(Record {
        header,
        op,
        target,
        ports,
        fields,
    })
}

/// Only printable ASCII: no control characters (CR, NUL, ESC...) that could
/// forge lines or terminal output, and no lookalike Unicode.
fn check_bytes(line: &[u8]) -> Result<&str, RejectReason> {
    if line.is_empty() {
        return Err(RejectReason::Empty);
    }
    if line.len() > MAX_LINE_LEN {
        return Err(RejectReason::TooLong { len: line.len() });
    }
    let printable = |b: &u8| (b' '..=b'~').contains(b);
    // A fold without an early exit, which the compiler turns into vector
    // instructions; the position is looked for only in a bad line.
    if !line.iter().fold(true, |all, b| all & printable(b)) {
        let offset = line.iter().position(|b| !printable(b)).unwrap_or(0);
        return Err(RejectReason::BadByte {
            byte: line[offset],
            offset,
        });
    }
    // All bytes are ASCII, so this cannot fail.
    std::str::from_utf8(line).map_err(|_| RejectReason::BadShape)
}

fn parse_fields<'a>(words: impl Iterator<Item = &'a str>) -> Result<Fields, RejectReason> {
    let mut fields = Fields::default();
    for word in words {
        let (key, value) =
            scan::split_once(word, b'=').ok_or_else(|| RejectReason::BadField(excerpt(word)))?;
        match key {
            "jail" => set_once(&mut fields.jail, "jail", value.parse()?)?,
            "node" => set_once(&mut fields.node, "node", value.parse()?)?,
            "ts" => set_once(&mut fields.ts, "ts", parse_ts(value)?)?,
            "bantime" => set_once(&mut fields.bantime, "bantime", value.parse()?)?,
            "id" => set_once(&mut fields.id, "id", value.parse()?)?,
            "sig" => set_once(&mut fields.sig, "sig", value.parse()?)?,
            _ => return Err(RejectReason::UnknownField(excerpt(key))),
        }
    }
    Ok(fields)
}

/// An allowlist entry covers every port of its addresses and every jail,
/// for as long as it stands: a port spec, jail or bantime on it would
/// promise a narrower entry than watchers keep, so such a line is refused.
fn check_control(op: Op, ports: &PortSpec, fields: &Fields) -> Result<(), RejectReason> {
    let bad = |why| RejectReason::BadControl {
        verb: op.verb(),
        why,
    };
    if ports.items() != [PortItem::Range(0, 65535)] {
        return Err(bad("ports must be 0:65535 (an entry covers every port)"));
    }
    if fields.jail.is_some() {
        return Err(bad("no jail (an entry covers every jail)"));
    }
    if fields.bantime.is_some() {
        return Err(bad("no bantime (an entry stands until removed)"));
    }
    Ok(())
}

fn set_once<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), RejectReason> {
    if slot.is_some() {
        return Err(RejectReason::RepeatedField(key));
    }
    *slot = Some(value);
    Ok(())
}

/// RFC 3339 in UTC, spelled with `Z`: `2026-11-21T18:28:04Z`, optionally
/// with fractional seconds.
fn parse_ts(text: &str) -> Result<DateTime<Utc>, RejectReason> {
    let bad = || RejectReason::BadValue {
        key: "ts",
        value: excerpt(text),
    };
    // chrono also takes a space or a lowercase `t`; the format allows only `T`.
    if !text.ends_with('Z') || text.len() > 40 || text.as_bytes().get(10) != Some(&b'T') {
        return Err(bad());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_logger_line() {
        let r = parse(b"<13>Nov 21 18:28:04 root[3284]: HOST 1.2.3.4 PORT 22\n").unwrap();
        assert_eq!(r.op, Op::Ban);
        assert_eq!(r.target.to_string(), "1.2.3.4");
        assert_eq!(r.header.tag.as_str(), "root");
        assert_eq!(r.header.pid, Some(3284));
        assert_eq!(r.fields, Fields::default());
    }

    #[test]
    fn space_padded_day_round_trips() {
        let line = "<13>Nov  1 08:00:00 banshare[1]: UNBAN 2001:db8::/32 PORT ssh";
        assert_eq!(parse(line.as_bytes()).unwrap().to_string(), line);
    }

    #[test]
    fn rejects_repeated_and_unknown_fields() {
        let base = "<13>Nov 21 18:28:04 root: HOST 1.2.3.4 PORT 22";
        assert_eq!(
            parse(format!("{base} jail=a jail=b").as_bytes()),
            Err(RejectReason::RepeatedField("jail"))
        );
        assert!(matches!(
            parse(format!("{base} evil=1").as_bytes()),
            Err(RejectReason::UnknownField(_))
        ));
    }

    #[test]
    fn allowlist_records_cover_every_port_and_jail() {
        let base = "<13>Nov 21 18:28:04 banshare[1]: ";
        for verb in ["ALLOW", "UNALLOW"] {
            let line = format!(
                "{base}{verb} 198.51.100.0/24 PORT 0:65535 node=ops ts=2026-11-21T18:28:04Z id=0123456789abcdef"
            );
            let r = parse(line.as_bytes()).unwrap();
            assert!(r.op.is_control());
            assert_eq!(r.to_string(), line);
            for bad in [
                format!("{base}{verb} 198.51.100.7 PORT 22"),
                format!("{base}{verb} 198.51.100.7 PORT 0:65535 jail=sshd"),
                format!("{base}{verb} 198.51.100.7 PORT 0:65535 bantime=60"),
            ] {
                assert_eq!(
                    parse(bad.as_bytes()).unwrap_err().kind(),
                    "bad_control",
                    "{bad}"
                );
            }
        }
        assert!(matches!(
            parse(format!("{base}allow 1.2.3.4 PORT 0:65535").as_bytes()),
            Err(RejectReason::UnknownVerb(_))
        ));
    }

    #[test]
    fn ts_must_be_utc() {
        assert!(parse_ts("2026-11-21T18:28:04Z").is_ok());
        assert!(parse_ts("2026-11-21T18:28:04.25Z").is_ok());
        assert!(parse_ts("2026-11-21T18:28:04+01:00").is_err());
        assert!(parse_ts("2026-11-21 18:28:04Z").is_err());
    }
}
