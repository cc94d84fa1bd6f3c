//! The record format against real `logger -s` output, hostile lines, and
//! property tests: formatting then parsing gives the record back, and no
//! input bytes make the parser panic.

use banshare::record::{
    self, BanTime, Fields, Jail, NodeId, Op, PortSpec, Record, RecordId, RejectReason, Signature,
    SyslogHeader, SyslogTime, Tag, Target,
};
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

fn fixture_lines() -> Vec<String> {
    include_str!("fixtures/logger-lines.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn real_logger_lines_parse_and_format_back_identically() {
    let lines = fixture_lines();
    assert!(lines.len() >= 9);
    for line in lines {
        let r = record::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(r.op, Op::Ban, "{line}");
        assert_eq!(
            r.to_string(),
            line,
            "logger's own spelling must survive a round trip"
        );
    }
}

#[test]
fn banshare_lines_carry_all_fields() {
    let line = "<13>Nov 21 18:28:04 banshare[3284]: HOST 2001:db8::7 PORT 80,443 jail=nginx-http-auth \
                node=web1 ts=2026-11-21T18:28:04.123Z bantime=1800 id=0123456789abcdef01234567";
    let r = record::parse(line.as_bytes()).unwrap();
    assert_eq!(r.fields.jail.unwrap().as_str(), "nginx-http-auth");
    assert_eq!(r.fields.node.unwrap().as_str(), "web1");
    assert_eq!(r.fields.bantime, Some(BanTime::Seconds(1800)));
    assert_eq!(r.fields.ts.unwrap().timestamp_millis() % 1000, 123);
}

#[test]
fn unban_is_not_spelled_like_a_ban() {
    let line = "<13>Nov 21 18:28:04 banshare[1]: UNBAN 1.2.3.4 PORT 22 node=web1";
    let r = record::parse(line.as_bytes()).unwrap();
    assert_eq!(r.op, Op::Unban);
    // A filter written for ban lines looks for "HOST <ip>": it must not occur.
    assert!(!line.contains("HOST "));
}

#[test]
fn port_specs() {
    for ok in [
        "22",
        "ssh",
        "0:65535",
        "80,443",
        "http,https",
        "1:1",
        "imap3,ms-sql-s",
    ] {
        assert!(ok.parse::<PortSpec>().is_ok(), "{ok}");
    }
    for bad in [
        "", "65536", "022", "2:1", "80,", ",80", "a b", "-1", "80;443", "9ssh", "1:2:3",
    ] {
        assert!(bad.parse::<PortSpec>().is_err(), "{bad:?}");
    }
}

#[test]
fn hostile_lines_are_rejected_with_a_reason() {
    let head = "<13>Nov 21 18:28:04 root[1]: ";
    type Expect = fn(&RejectReason) -> bool;
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (format!("{head}HOST 1.2.3 PORT 22").into(), |r| {
            matches!(r, RejectReason::BadAddress(_))
        }),
        (format!("{head}HOST 999.1.1.1 PORT 22").into(), |r| {
            matches!(r, RejectReason::BadAddress(_))
        }),
        (format!("{head}HOST 1.2.3.4;rm PORT 22").into(), |r| {
            matches!(r, RejectReason::BadAddress(_))
        }),
        (format!("{head}HOST $(id) PORT 22").into(), |r| {
            matches!(r, RejectReason::BadAddress(_))
        }),
        (format!("{head}HOST `id` PORT 22").into(), |r| {
            matches!(r, RejectReason::BadAddress(_))
        }),
        (format!("{head}HOST 01.2.3.4 PORT 22").into(), |r| {
            matches!(r, RejectReason::BadAddress(_))
        }),
        (format!("{head}HOST fe80::1%eth0 PORT 22").into(), |r| {
            matches!(r, RejectReason::BadAddress(_))
        }),
        (format!("{head}HOST 1.2.3.4/33 PORT 22").into(), |r| {
            matches!(r, RejectReason::BadAddress(_))
        }),
        (format!("{head}HOST 1.2.3.4/24 PORT 22").into(), |r| {
            matches!(r, RejectReason::HostBitsSet(_))
        }),
        (format!("{head}HOST 1.2.3.4 PORT 22;reboot").into(), |r| {
            matches!(r, RejectReason::BadPortSpec(_))
        }),
        (format!("{head}BAN 1.2.3.4 PORT 22").into(), |r| {
            matches!(r, RejectReason::UnknownVerb(_))
        }),
        (format!("{head}host 1.2.3.4 PORT 22").into(), |r| {
            matches!(r, RejectReason::UnknownVerb(_))
        }),
        (format!("{head}HOST 1.2.3.4").into(), |r| {
            matches!(r, RejectReason::BadShape)
        }),
        (format!("{head}HOST 1.2.3.4 PORT").into(), |r| {
            matches!(r, RejectReason::BadShape)
        }),
        (format!("{head}HOST  1.2.3.4 PORT 22").into(), |r| {
            matches!(r, RejectReason::BadAddress(_))
        }),
        (format!("{head}HOST 1.2.3.4 PORT 22 ").into(), |r| {
            matches!(r, RejectReason::BadField(_))
        }),
        (
            format!("{head}HOST 1.2.3.4 PORT 22 jail=a jail=a").into(),
            |r| *r == RejectReason::RepeatedField("jail"),
        ),
        (
            format!("{head}HOST 1.2.3.4 PORT 22 ts=1 ts=1").into(),
            |r| matches!(r, RejectReason::BadValue { key: "ts", .. }),
        ),
        (
            format!("{head}HOST 1.2.3.4 PORT 22 node=a node=b").into(),
            |r| *r == RejectReason::RepeatedField("node"),
        ),
        (format!("{head}HOST 1.2.3.4 PORT 22 op=ban").into(), |r| {
            matches!(r, RejectReason::UnknownField(_))
        }),
        (
            format!("{head}HOST 1.2.3.4 PORT 22 bantime=0").into(),
            |r| matches!(r, RejectReason::BadValue { key: "bantime", .. }),
        ),
        (
            format!("{head}HOST 1.2.3.4 PORT 22 node=$(id)").into(),
            |r| matches!(r, RejectReason::BadValue { key: "node", .. }),
        ),
        (format!("{head}HOST 1.2.3.4 PORT 22 id=XYZ").into(), |r| {
            matches!(r, RejectReason::BadValue { key: "id", .. })
        }),
        (
            format!("{head}HOST 1.2.3.4 PORT 22\rHOST 6.6.6.6 PORT 22").into(),
            |r| matches!(r, RejectReason::BadByte { byte: b'\r', .. }),
        ),
        (format!("{head}HOST 1.2.3.4 PORT 22\0").into(), |r| {
            matches!(r, RejectReason::BadByte { byte: 0, .. })
        }),
        (format!("{head}HOST 1.2.3.4 PORT 22\x1b[2J").into(), |r| {
            matches!(r, RejectReason::BadByte { byte: 0x1b, .. })
        }),
        (
            format!("{head}HOST 1.2.3.4 PORT 22 jail=sshd\u{00a0}").into(),
            |r| matches!(r, RejectReason::BadByte { .. }),
        ),
        (
            format!("{head}HOST 1.2.3.4 PORT 22 jail={}", "a".repeat(5000)).into(),
            |r| matches!(r, RejectReason::TooLong { .. }),
        ),
        (b"HOST 1.2.3.4 PORT 22".to_vec(), |r| {
            matches!(r, RejectReason::BadHeader(_))
        }),
        (
            b"<13>Foo 21 18:28:04 root: HOST 1.2.3.4 PORT 22".to_vec(),
            |r| matches!(r, RejectReason::BadHeader(_)),
        ),
        (
            b"<13>Nov 32 18:28:04 root: HOST 1.2.3.4 PORT 22".to_vec(),
            |r| matches!(r, RejectReason::BadHeader(_)),
        ),
        (
            b"<192>Nov 21 18:28:04 root: HOST 1.2.3.4 PORT 22".to_vec(),
            |r| matches!(r, RejectReason::BadHeader(_)),
        ),
        (
            b"<13>Nov 21 18:28:04 ro ot: HOST 1.2.3.4 PORT 22".to_vec(),
            |r| matches!(r, RejectReason::BadValue { key: "tag", .. }),
        ),
        (
            b"<13>Nov 21 18:28:04 root[x]: HOST 1.2.3.4 PORT 22".to_vec(),
            |r| matches!(r, RejectReason::BadHeader(_)),
        ),
        (b"\n".to_vec(), |r| *r == RejectReason::Empty),
        (vec![0xff, 0xfe, b'\n'], |r| {
            matches!(r, RejectReason::BadByte { .. })
        }),
    ];
    for (line, expected) in cases {
        match record::parse(&line) {
            Ok(r) => panic!("accepted {:?} as {r:?}", String::from_utf8_lossy(&line)),
            Err(reason) => assert!(
                expected(&reason),
                "{:?}: wrong reason {reason:?}",
                String::from_utf8_lossy(&line)
            ),
        }
    }
}

#[test]
fn line_limit_is_exact() {
    let head = "<13>Nov 21 18:28:04 root: HOST 1.2.3.4 PORT ";
    let ports: String = std::iter::repeat_n("1", 1).collect();
    let mut line = format!("{head}{ports}");
    // Pad with a sig field to exactly the limit, then one byte over.
    let pad = record::MAX_LINE_LEN - line.len() - " sig=".len();
    line.push_str(&format!(" sig={}", "A".repeat(pad)));
    assert_eq!(line.len(), record::MAX_LINE_LEN);
    // The sig value is over its own limit, so check the length rule alone:
    assert!(!matches!(
        record::parse(line.as_bytes()),
        Err(RejectReason::TooLong { .. })
    ));
    line.push('A');
    assert!(matches!(
        record::parse(line.as_bytes()),
        Err(RejectReason::TooLong { .. })
    ));
}

#[test]
fn reject_messages_escape_hostile_text() {
    let line = "<13>Nov 21 18:28:04 root: HOST 1.2.3.4\u{1b}[31m PORT 22";
    // Non-ASCII/control bytes are refused before any text is quoted.
    let message = record::parse(line.as_bytes()).unwrap_err().to_string();
    assert!(!message.contains('\u{1b}'), "{message}");
}

// ---- property tests ----

fn name(max: usize, extra: &'static str) -> impl Strategy<Value = String> {
    let re = format!("[A-Za-z0-9][A-Za-z0-9{extra}]{{0,{}}}", max - 1);
    proptest::string::string_regex(&re).unwrap()
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        any::<std::net::IpAddr>().prop_map(Target::Addr),
        (any::<std::net::Ipv4Addr>(), 0u8..=32).prop_map(|(a, l)| Target::Net(ipnet::IpNet::V4(
            ipnet::Ipv4Net::new(a, l).unwrap().trunc()
        ))),
        (any::<std::net::Ipv6Addr>(), 0u8..=128).prop_map(|(a, l)| Target::Net(ipnet::IpNet::V6(
            ipnet::Ipv6Net::new(a, l).unwrap().trunc()
        ))),
    ]
}

fn ports() -> impl Strategy<Value = PortSpec> {
    let item = prop_oneof![
        any::<u16>().prop_map(|p| p.to_string()),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| format!("{}:{}", a.min(b), a.max(b))),
        proptest::string::string_regex("[a-z][a-z0-9-]{0,10}").unwrap(),
    ];
    proptest::collection::vec(item, 1..5).prop_map(|items| items.join(",").parse().unwrap())
}

fn ts() -> impl Strategy<Value = DateTime<Utc>> {
    // 1970 to 9999, to the nanosecond.
    (0i64..253_402_300_799, 0u32..1_000_000_000).prop_map(|(s, n)| Utc.timestamp_opt(s, n).unwrap())
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        proptest::option::of(name(64, "_.@-").prop_map(|s| s.parse::<Jail>().unwrap())),
        proptest::option::of(name(64, "_.-").prop_map(|s| s.parse::<NodeId>().unwrap())),
        proptest::option::of(ts()),
        proptest::option::of(prop_oneof![
            (1..=record::MAX_BANTIME_SECS).prop_map(BanTime::Seconds),
            Just(BanTime::Permanent)
        ]),
        proptest::option::of("[0-9a-f]{16,64}".prop_map(|s| s.parse::<RecordId>().unwrap())),
        proptest::option::of(
            "[A-Za-z0-9+/=_-]{1,100}".prop_map(|s| s.parse::<Signature>().unwrap()),
        ),
    )
        .prop_map(|(jail, node, ts, bantime, id, sig)| Fields {
            jail,
            node,
            ts,
            bantime,
            id,
            sig,
        })
}

fn header() -> impl Strategy<Value = SyslogHeader> {
    (
        0u8..=191,
        1u8..=12,
        1u8..=31,
        0u8..24,
        0u8..60,
        0u8..=60,
        name(64, "_.@/-"),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |(priority, month, day, hour, minute, second, tag, pid)| SyslogHeader {
                priority,
                time: SyslogTime {
                    month,
                    day,
                    hour,
                    minute,
                    second,
                },
                tag: tag.parse::<Tag>().unwrap(),
                pid,
            },
        )
}

fn any_record() -> impl Strategy<Value = Record> {
    (
        header(),
        prop_oneof![Just(Op::Ban), Just(Op::Unban)],
        target(),
        ports(),
        fields(),
    )
        .prop_map(|(header, op, target, ports, fields)| Record {
            header,
            op,
            target,
            ports,
            fields,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_of_format_is_identity(r in any_record()) {
        let line = r.to_string();
        prop_assert!(line.len() <= record::MAX_LINE_LEN);
        prop_assert_eq!(record::parse(line.as_bytes()), Ok(r));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = record::parse(&bytes);
    }

    #[test]
    fn mutated_valid_lines_never_panic(r in any_record(), at in any::<usize>(), byte in any::<u8>()) {
        let mut line = r.to_string().into_bytes();
        let at = at % line.len();
        line[at] = byte;
        if let Ok(parsed) = record::parse(&line) {
            // Whatever is accepted formats back to exactly what was read, or
            // to a canonical spelling that parses to the same record.
            prop_assert_eq!(record::parse(parsed.to_string().as_bytes()), Ok(parsed));
        }
    }
}
