//! The syslog header that `logger -s` puts before every message:
//! `<13>Nov 21 18:28:04 root[3284]: `. banshare writes the same header so
//! that fail2ban filters made for logger lines keep working.

use std::fmt;

use chrono::{Datelike, NaiveDateTime, Timelike};

use super::scan;
use super::value::Tag;
use super::{RejectReason, excerpt};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The largest syslog priority: facility 23, severity 7.
const MAX_PRIORITY: u8 = 191;
/// user.notice, what `logger` writes by default.
pub const DEFAULT_PRIORITY: u8 = 13;

/// A BSD syslog timestamp: no year and no zone, as logger writes it. The
/// record's `ts` field is the authoritative time; this one is for humans and
/// for fail2ban's datepattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyslogTime {
    /// 1 to 12.
    pub month: u8,
    /// 1 to 31.
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    /// 0 to 60: a leap second is possible.
    pub second: u8,
}

impl SyslogTime {
    pub fn from_naive(time: NaiveDateTime) -> SyslogTime {
        // chrono reports a leap second as nanosecond >= 1e9 of second 59.
        let second = time.second() + u32::from(time.nanosecond() >= 1_000_000_000);
        SyslogTime {
            month: time.month() as u8,
            day: time.day() as u8,
            hour: time.hour() as u8,
            minute: time.minute() as u8,
            second: second as u8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyslogHeader {
    pub priority: u8,
    pub time: SyslogTime,
    pub tag: Tag,
    /// Present when written with `logger -i` (banshare always writes it).
    pub pid: Option<u32>,
}

impl fmt::Display for SyslogHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.time;
        // Day is space-padded (`Nov  1`), as util-linux logger writes it.
        write!(
            f,
            "<{}>{} {:>2} {:02}:{:02}:{:02} {}",
            self.priority,
            MONTHS[usize::from(t.month - 1)],
            t.day,
            t.hour,
            t.minute,
            t.second,
            self.tag
        )?;
        if let Some(pid) = self.pid {
            write!(f, "[{pid}]")?;
        }
        f.write_str(": ")
    }
}

/// Parses the header at the start of `line` and returns it with the rest of
/// the line (the message).
pub fn parse(line: &str) -> Result<(SyslogHeader, &str), RejectReason> {
    let bad = |what: &'static str| RejectReason::BadHeader(what);
    let rest = line.strip_prefix('<').ok_or(bad("missing <priority>"))?;
    let (priority, rest) = scan::split_once(rest, b'>').ok_or(bad("missing <priority>"))?;
    let priority = parse_decimal(priority, 3)
        .filter(|p| *p <= u32::from(MAX_PRIORITY))
        .ok_or(bad("bad priority"))? as u8;
    let (time, rest) = parse_time(rest).ok_or(bad("bad timestamp"))?;
    let rest = rest.strip_prefix(' ').ok_or(bad("bad timestamp"))?;
    let (ident, message) = scan::split_once_pair(rest, b':', b' ').ok_or(bad("missing `tag: `"))?;
    let (tag, pid) = parse_ident(ident)?;
    Ok((
        SyslogHeader {
            priority,
            time,
            tag,
            pid,
        },
        message,
    ))
}

/// `Mmm dd hh:mm:ss`, where `dd` is space- or zero-padded.
fn parse_time(text: &str) -> Option<(SyslogTime, &str)> {
    let stamp = text.get(..15)?.as_bytes();
    let month = MONTHS.iter().position(|m| m.as_bytes() == &stamp[..3])? as u8 + 1;
    if stamp[3] != b' ' || stamp[6] != b' ' || stamp[9] != b':' || stamp[12] != b':' {
        return None;
    }
    let day = match stamp[4] {
        b' ' => two_digits(b'0', stamp[5])?,
        tens => two_digits(tens, stamp[5])?,
    };
    let time = SyslogTime {
        month,
        day,
        hour: two_digits(stamp[7], stamp[8])?,
        minute: two_digits(stamp[10], stamp[11])?,
        second: two_digits(stamp[13], stamp[14])?,
    };
    let valid =
        (1..=31).contains(&time.day) && time.hour < 24 && time.minute < 60 && time.second <= 60;
    valid.then_some((time, &text[15..]))
}

fn two_digits(tens: u8, ones: u8) -> Option<u8> {
    (tens.is_ascii_digit() && ones.is_ascii_digit()).then(|| (tens - b'0') * 10 + (ones - b'0'))
}

/// `TAG` or `TAG[PID]`.
fn parse_ident(ident: &str) -> Result<(Tag, Option<u32>), RejectReason> {
    let (tag, pid) = match ident.strip_suffix(']') {
        Some(inner) => {
            let (tag, pid) =
                scan::split_once(inner, b'[').ok_or(RejectReason::BadHeader("bad [pid]"))?;
            let pid = parse_decimal(pid, 10).ok_or(RejectReason::BadHeader("bad [pid]"))?;
            (tag, Some(pid))
        }
        None => (ident, None),
    };
    let tag = tag.parse().map_err(|_| RejectReason::BadValue {
        key: "tag",
        value: excerpt(tag),
    })?;
    Ok((tag, pid))
}

/// A decimal of at most `max_len` digits, without leading zeros.
fn parse_decimal(text: &str, max_len: usize) -> Option<u32> {
    let canonical = !text.is_empty()
        && text.len() <= max_len
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}
