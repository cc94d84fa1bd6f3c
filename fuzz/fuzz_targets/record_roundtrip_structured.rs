//! Spec conformance: builds lines that docs/format.md section 1 says are
//! valid records, from fuzzer-chosen parts (every header form, IPv4 and IPv6
//! hosts and networks, all port item kinds, any subset of fields in any
//! order), and checks that `record::parse` accepts each one, reads every part
//! back as written, and that the record round-trips through `to_string`.
//!
//! Where `record_parse` starts from bytes and mostly explores rejections,
//! this target explores the valid side of the grammar.
#![no_main]

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::{Result, Unstructured};
use banshare::record::{self, BanTime, MAX_BANTIME_SECS, Op, PortItem, Target};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HEX: &[u8] = b"0123456789abcdef";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_";

fn pick(u: &mut Unstructured, set: &[u8]) -> Result<char> {
    Ok(char::from(*u.choose(set)?))
}

/// `len` in `min..=max` characters: the first from `first`, the rest from
/// `first` plus `extra`.
fn word(
    u: &mut Unstructured,
    first: &[u8],
    extra: &[u8],
    min: usize,
    max: usize,
) -> Result<String> {
    let len = u.int_in_range(min..=max)?;
    let rest: Vec<u8> = first.iter().chain(extra).copied().collect();
    let mut out = String::with_capacity(len);
    out.push(pick(u, first)?);
    for _ in 1..len {
        out.push(pick(u, &rest)?);
    }
    Ok(out)
}

/// What the line says, part by part, to compare with what the parser read.
#[derive(Debug)]
struct Expected {
    priority: u8,
    time: (u8, u8, u8, u8, u8),
    tag: String,
    pid: Option<u32>,
    op: Op,
    target: Target,
    ports: Vec<PortItem>,
    jail: Option<String>,
    node: Option<String>,
    ts: Option<DateTime<Utc>>,
    bantime: Option<BanTime>,
    id: Option<String>,
    sig: Option<String>,
}

fn target(u: &mut Unstructured) -> Result<(String, Target)> {
    let addr = if u.arbitrary()? {
        IpAddr::V4(Ipv4Addr::from(u.arbitrary::<u32>()?))
    } else if u.ratio(1u8, 8u8)? {
        // IPv4-mapped, which std writes with a dotted quad.
        IpAddr::V6(Ipv4Addr::from(u.arbitrary::<u32>()?).to_ipv6_mapped())
    } else {
        // Mostly zeros, so that `::` compression shows up often.
        let mut segments = [0u16; 8];
        for s in &mut segments {
            if u.arbitrary()? {
                *s = u.arbitrary()?;
            }
        }
        IpAddr::V6(Ipv6Addr::from(segments))
    };
    if u.arbitrary()? {
        return Ok((addr.to_string(), Target::Addr(addr)));
    }
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = u.int_in_range(0..=max)?;
    let net = IpNet::new(addr, len).unwrap().trunc();
    Ok((net.to_string(), Target::Net(net)))
}

fn port_item(u: &mut Unstructured) -> Result<(String, PortItem)> {
    Ok(match u.int_in_range(0..=2u8)? {
        0 => {
            let n: u16 = u.arbitrary()?;
            (n.to_string(), PortItem::Number(n))
        }
        1 => {
            let (a, b): (u16, u16) = (u.arbitrary()?, u.arbitrary()?);
            let (a, b) = (a.min(b), a.max(b));
            (format!("{a}:{b}"), PortItem::Range(a, b))
        }
        _ => {
            let name = word(u, ALPHA, b"0123456789_-", 1, 32)?;
            (name.clone(), PortItem::Service(name))
        }
    })
}

fn ts(u: &mut Unstructured) -> Result<(String, DateTime<Utc>)> {
    let year = u.int_in_range(0..=9999)?;
    let month = u.int_in_range(1..=12)?;
    let mut day = u.int_in_range(1..=31)?;
    while NaiveDate::from_ymd_opt(year, month, day).is_none() {
        day -= 1;
    }
    let date = NaiveDate::from_ymd_opt(year, month, day).unwrap();
    // A leap second, as RFC 3339 writes it: 23:59:60.
    let leap = u.ratio(1u8, 16u8)?;
    let (h, m, s) = if leap {
        (23, 59, 60)
    } else {
        (
            u.int_in_range(0..=23)?,
            u.int_in_range(0..=59)?,
            u.int_in_range(0..=59)?,
        )
    };
    let mut text = format!("{}T{h:02}:{m:02}:{s:02}", date.format("%Y-%m-%d"));
    let digits = u.int_in_range(0..=9usize)?;
    let mut nanos = 0u32;
    if digits > 0 {
        text.push('.');
        for i in 0..digits {
            let d = u.int_in_range(0..=9u32)?;
            text.push(char::from(b'0' + d as u8));
            nanos += d * 10u32.pow(8 - i as u32);
        }
    }
    text.push('Z');
    let time = if leap {
        NaiveTime::from_hms_nano_opt(23, 59, 59, 1_000_000_000 + nanos)
    } else {
        NaiveTime::from_hms_nano_opt(h, m, s, nanos)
    }
    .unwrap();
    Ok((text, date.and_time(time).and_utc()))
}

fn case(u: &mut Unstructured) -> Result<(String, Expected)> {
    let mut line = String::new();
    let priority = u.int_in_range(0..=191u8)?;
    let month = u.int_in_range(1..=12u8)?;
    let day = u.int_in_range(1..=31u8)?;
    let (hour, minute, second) = (
        u.int_in_range(0..=23u8)?,
        u.int_in_range(0..=59u8)?,
        u.int_in_range(0..=60u8)?,
    );
    let day_text = if day < 10 && u.arbitrary()? {
        format!(" {day}")
    } else {
        format!("{day:02}")
    };
    let tag = word(u, ALNUM, b"_.@/-", 1, 64)?;
    let pid: Option<u32> = u.arbitrary()?;
    write!(
        line,
        "<{priority}>{} {day_text} {hour:02}:{minute:02}:{second:02} {tag}",
        MONTHS[usize::from(month - 1)]
    )
    .unwrap();
    if let Some(pid) = pid {
        write!(line, "[{pid}]").unwrap();
    }
    let op = if u.arbitrary()? { Op::Ban } else { Op::Unban };
    let (target_text, target) = target(u)?;
    let n_ports = u.int_in_range(1..=32usize)?;
    let mut ports = Vec::new();
    let mut port_texts = Vec::new();
    for _ in 0..n_ports {
        let (text, item) = port_item(u)?;
        port_texts.push(text);
        ports.push(item);
    }
    write!(
        line,
        ": {} {target_text} PORT {}",
        if op == Op::Ban { "HOST" } else { "UNBAN" },
        port_texts.join(",")
    )
    .unwrap();

    let mut expected = Expected {
        priority,
        time: (month, day, hour, minute, second),
        tag,
        pid,
        op,
        target,
        ports,
        jail: None,
        node: None,
        ts: None,
        bantime: None,
        id: None,
        sig: None,
    };
    let mut fields: Vec<String> = Vec::new();
    if u.arbitrary()? {
        let jail = word(u, ALNUM, b"_.@-", 1, 64)?;
        fields.push(format!("jail={jail}"));
        expected.jail = Some(jail);
    }
    if u.arbitrary()? {
        let node = word(u, ALNUM, b"_.-", 1, 64)?;
        fields.push(format!("node={node}"));
        expected.node = Some(node);
    }
    if u.arbitrary()? {
        let (text, time) = ts(u)?;
        fields.push(format!("ts={text}"));
        expected.ts = Some(time);
    }
    // Unban records carry no bantime (docs/format.md 1.3).
    if op == Op::Ban && u.arbitrary()? {
        let bantime = if u.ratio(1u8, 8u8)? {
            BanTime::Permanent
        } else {
            BanTime::Seconds(u.int_in_range(1..=MAX_BANTIME_SECS)?)
        };
        fields.push(format!("bantime={bantime}"));
        expected.bantime = Some(bantime);
    }
    if u.arbitrary()? {
        let id = word(u, HEX, b"", 16, 64)?;
        fields.push(format!("id={id}"));
        expected.id = Some(id);
    }
    if u.arbitrary()? {
        let sig = word(u, BASE64, b"", 1, 512)?;
        fields.push(format!("sig={sig}"));
        expected.sig = Some(sig);
    }
    // Readers accept the fields in any order.
    for i in (1..fields.len()).rev() {
        let j = u.int_in_range(0..=i)?;
        fields.swap(i, j);
    }
    for field in &fields {
        line.push(' ');
        line.push_str(field);
    }
    Ok((line, expected))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((line, want)) = case(&mut u) else {
        return;
    };
    let record = match record::parse(line.as_bytes()) {
        Ok(record) => record,
        Err(reason) => {
            panic!("a valid line is rejected: {reason}\nline: {line:?}\nparts: {want:?}")
        }
    };
    let h = &record.header;
    let f = &record.fields;
    let got = (
        h.priority,
        (
            h.time.month,
            h.time.day,
            h.time.hour,
            h.time.minute,
            h.time.second,
        ),
        h.tag.as_str(),
        h.pid,
        record.op,
        record.target,
        record.ports.items(),
    );
    let wanted = (
        want.priority,
        want.time,
        want.tag.as_str(),
        want.pid,
        want.op,
        want.target,
        &want.ports[..],
    );
    assert_eq!(got, wanted, "read back differently\nline: {line:?}");
    let got_fields = (
        f.jail.as_ref().map(|j| j.as_str()),
        f.node.as_ref().map(|n| n.as_str()),
        f.ts,
        f.bantime,
        f.id.as_ref().map(|i| i.as_str()),
        f.sig.as_ref().map(|s| s.as_str()),
    );
    let wanted_fields = (
        want.jail.as_deref(),
        want.node.as_deref(),
        want.ts,
        want.bantime,
        want.id.as_deref(),
        want.sig.as_deref(),
    );
    assert_eq!(
        got_fields, wanted_fields,
        "fields read back differently\nline: {line:?}"
    );
    let formatted = record.to_string();
    match record::parse(formatted.as_bytes()) {
        Ok(again) => assert_eq!(
            again, record,
            "round trip changed the record\nline: {line:?}"
        ),
        Err(reason) => panic!(
            "a record's own line is rejected: {reason}\nline: {line:?}\nformatted: {formatted:?}"
        ),
    }
});
