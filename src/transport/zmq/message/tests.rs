use std::collections::HashSet;

use super::*;

const TOKEN: &str = "s3cret-Tok3n";

fn token() -> LegacyPolicy {
    LegacyPolicy::Token(LegacyToken::new(TOKEN).unwrap())
}

fn legacy(message: &str, policy: &LegacyPolicy) -> Result<LegacySubmission, MessageError> {
    match parse(message.as_bytes(), policy)? {
        Message::Legacy(submission) => Ok(submission),
        Message::Record(record) => panic!("{message:?} parsed as a record: {record}"),
    }
}

fn refusal(message: &[u8], policy: &LegacyPolicy) -> MessageError {
    match parse(message, policy) {
        Ok(accepted) => panic!(
            "{:?} was accepted: {accepted:?}",
            String::from_utf8_lossy(message)
        ),
        Err(why) => why,
    }
}

/// A 4-field message with `field` (0 host, 1 jail, 2 action, 3 ip) replaced.
fn with_field(field: usize, value: &str) -> String {
    let mut fields = ["web1", "sshd", "Ban", "203.0.113.9"];
    fields[field] = value;
    fields.join("|")
}

const SIGNED: &str = "<13>Nov 21 18:28:04 banshare[3284]: HOST 203.0.113.9 PORT 0:65535 \
    jail=sshd node=web1 ts=2026-11-21T18:28:04Z bantime=1800 id=5f0c1d2e3f405162738495a6";

#[test]
fn takes_what_the_original_monitor_sends_with_and_without_a_token() {
    let message = format!("{TOKEN}|web1|sshd|Ban|203.0.113.9");
    let s = legacy(&message, &token()).unwrap();
    assert_eq!(s.host().as_str(), "web1");
    assert_eq!(s.jail().as_str(), "sshd");
    assert_eq!(s.action(), LegacyAction::Ban);
    assert_eq!(s.address().to_string(), "203.0.113.9");
    assert_eq!(s.target(), "203.0.113.9".parse().unwrap());
    // The original's ACK: the message minus its token.
    assert_eq!(s.ack(), "web1|sshd|Ban|203.0.113.9");

    let s = legacy("web1|sshd|Ban|203.0.113.9", &LegacyPolicy::Open).unwrap();
    assert_eq!(s.ack(), "web1|sshd|Ban|203.0.113.9");
}

#[test]
fn takes_the_three_action_spellings_and_keeps_them_in_the_ack() {
    for (word, action, op) in [
        ("Ban", LegacyAction::Ban, Op::Ban),
        ("Unban", LegacyAction::Unban, Op::Unban),
        ("UnBan", LegacyAction::UnBan, Op::Unban),
    ] {
        let message = with_field(2, word);
        let s = legacy(&message, &LegacyPolicy::Open).unwrap();
        assert_eq!((s.action(), s.action().op()), (action, op));
        assert_eq!(s.ack(), message);
    }
}

#[test]
fn takes_fqdn_hosts_ipv6_and_the_shortest_message() {
    let s = legacy(
        "Mail-2.example.COM|nginx-http_auth|Unban|2001:DB8::9",
        &LegacyPolicy::Open,
    )
    .unwrap();
    assert_eq!(s.host().as_str(), "Mail-2.example.COM");
    assert_eq!(s.jail().as_str(), "nginx-http_auth");
    assert_eq!(s.address().to_string(), "2001:db8::9");
    // The ACK repeats the address as sent, not normalised.
    assert_eq!(
        s.ack(),
        "Mail-2.example.COM|nginx-http_auth|Unban|2001:DB8::9"
    );

    let shortest = "h|j|Ban|::";
    assert_eq!(shortest.len(), MIN_MESSAGE_LEN);
    legacy(shortest, &LegacyPolicy::Open).unwrap();
    legacy(&with_field(3, "::ffff:192.0.2.1"), &LegacyPolicy::Open).unwrap();
    let host_64 = format!("{}.{}", "a".repeat(62), "b");
    legacy(&with_field(0, &host_64), &LegacyPolicy::Open).unwrap();
    legacy(&with_field(1, &"j".repeat(64)), &LegacyPolicy::Open).unwrap();
}

#[test]
fn refuses_by_size_before_looking_at_the_bytes() {
    assert_eq!(refusal(b"", &token()), MessageError::Empty);
    assert_eq!(
        refusal(b"h|j|Ban|:", &token()),
        MessageError::TooShort { len: 9 }
    );
    assert_eq!(refusal(b"\n", &token()), MessageError::TooShort { len: 1 });
    // 1 MB of binary: refused on its length alone, not as a bad byte.
    let huge = vec![0u8; 1 << 20];
    assert_eq!(
        refusal(&huge, &token()),
        MessageError::TooLong { len: 1 << 20 }
    );
    let over = format!("web1|sshd|Ban|{}", "1".repeat(MAX_MESSAGE_LEN));
    assert!(matches!(
        refusal(over.as_bytes(), &LegacyPolicy::Open),
        MessageError::TooLong { .. }
    ));
}

#[test]
fn refuses_control_binary_and_non_ascii_bytes() {
    let cases: [(&[u8], u8, usize); 8] = [
        (b"web1|sshd|Ban|203.0.113.9\n", b'\n', 25),
        (b"web1|sshd|Ban|203.0.113.9\r", b'\r', 25),
        (b"web1\0|sshd|Ban|203.0.113.9", 0, 4),
        (b"web1|ss\x1b[2Jhd|Ban|203.0.113.9", 0x1b, 7),
        (b"web1|sshd|Ban\t|203.0.113.9", b'\t', 13),
        (b"web1|sshd|Ban|203.0.113.9\xff", 0xff, 25),
        ("w\u{e9}b1|sshd|Ban|203.0.113.9".as_bytes(), 0xc3, 1),
        (
            b"<13>Nov 21 18:28:04 t: HOST 1.2.3.4 PORT 22\r\n",
            b'\r',
            43,
        ),
    ];
    for (message, byte, offset) in cases {
        assert_eq!(
            refusal(message, &LegacyPolicy::Open),
            MessageError::BadByte { byte, offset },
            "{:?}",
            String::from_utf8_lossy(message)
        );
    }
}

#[test]
fn refuses_the_wrong_number_of_fields() {
    for (message, count) in [
        ("web1|sshd|203.0.113.9", 3),
        ("a|web1|sshd|Ban|203.0.113.9|x", 6),
        ("||||||||||", 11),
    ] {
        for policy in [LegacyPolicy::Open, token()] {
            assert_eq!(
                refusal(message.as_bytes(), &policy),
                MessageError::FieldCount { count }
            );
        }
    }
}

#[test]
fn a_configured_token_is_required_and_must_match_exactly() {
    let good = "web1|sshd|Ban|203.0.113.9";
    assert_eq!(
        refusal(good.as_bytes(), &token()),
        MessageError::MissingToken
    );
    for given in [
        "",
        "wrong",
        &TOKEN[..TOKEN.len() - 1],
        &format!("{TOKEN}x"),
        &TOKEN.to_uppercase(),
        &format!(" {TOKEN}"),
    ] {
        let message = format!("{given}|{good}");
        assert_eq!(
            refusal(message.as_bytes(), &token()),
            MessageError::WrongToken,
            "{given:?}"
        );
    }
    // A wrong token hides whatever else is wrong.
    let message = "nope|-bad-|.|Kill|999.1.1.1";
    assert_eq!(
        refusal(message.as_bytes(), &token()),
        MessageError::WrongToken
    );
}

#[test]
fn without_a_configured_token_a_message_with_one_is_refused() {
    // As the original with auth off, which reads the token as the host
    // and the host as the jail, and so NAKs on the action.
    let message = format!("{TOKEN}|web1|sshd|Ban|203.0.113.9");
    assert_eq!(
        refusal(message.as_bytes(), &LegacyPolicy::Open),
        MessageError::UnexpectedToken
    );
}

#[test]
fn legacy_messages_can_be_refused_altogether() {
    let message = format!("{TOKEN}|web1|sshd|Ban|203.0.113.9");
    for message in [message.as_str(), "web1|sshd|Ban|203.0.113.9"] {
        assert_eq!(
            refusal(message.as_bytes(), &LegacyPolicy::Refused),
            MessageError::LegacyRefused
        );
    }
    assert!(matches!(
        parse(SIGNED.as_bytes(), &LegacyPolicy::Refused),
        Ok(Message::Record(_))
    ));
}

#[test]
fn refuses_bad_hosts() {
    for host in [
        "",
        "-web1",
        "web1-",
        "web1.",
        ".web1",
        "web..example",
        "web_1",
        "web 1",
        "web1:22",
        &"a".repeat(64),
        &format!("{}.{}", "a".repeat(63), "b"),
    ] {
        assert!(
            matches!(
                refusal(with_field(0, host).as_bytes(), &LegacyPolicy::Open),
                MessageError::BadHost(_)
            ),
            "{host:?}"
        );
    }
}

#[test]
fn refuses_bad_jails() {
    for jail in [
        "",
        "_sshd",
        "-sshd",
        "ssh.d",
        "sshd@x",
        "ss hd",
        "$(reboot)",
        &"j".repeat(65),
    ] {
        assert!(
            matches!(
                refusal(with_field(1, jail).as_bytes(), &LegacyPolicy::Open),
                MessageError::BadJail(_)
            ),
            "{jail:?}"
        );
    }
}

#[test]
fn refuses_actions_other_than_the_three_the_monitor_sends() {
    for action in [
        "ban",
        "BAN",
        "unban",
        "UNBAN",
        "unBan",
        "Found",
        "Restore Ban",
        "",
    ] {
        assert_eq!(
            refusal(with_field(2, action).as_bytes(), &LegacyPolicy::Open),
            MessageError::UnknownAction(action.to_owned()),
        );
    }
}

#[test]
fn refuses_anything_but_one_canonical_address() {
    for address in [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "01.2.3.4",
        "127.1",
        "0x7f.0.0.1",
        "2130706433",
        " 1.2.3.4",
        "1.2.3.0/24",
        "[2001:db8::1]",
        "fe80::1%eth0",
        "2001:db8:::1",
        "localhost",
    ] {
        assert!(
            matches!(
                refusal(with_field(3, address).as_bytes(), &LegacyPolicy::Open),
                MessageError::BadAddress(_)
            ),
            "{address:?}"
        );
    }
}

#[test]
fn takes_banshare_records_signed_or_not_with_at_most_one_newline() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut signed = record::parse(SIGNED.as_bytes()).unwrap();
    crate::trust::sign(&mut signed, &key).unwrap();
    let unsigned = "<13>Nov 21 18:28:04 root[3284]: UNBAN 2001:db8::/32 PORT 22";
    for line in [signed.to_string(), SIGNED.to_owned(), unsigned.to_owned()] {
        let expected = record::parse(line.as_bytes()).unwrap();
        for message in [line.clone(), format!("{line}\n")] {
            for policy in [LegacyPolicy::Refused, LegacyPolicy::Open, token()] {
                assert_eq!(
                    parse(message.as_bytes(), &policy),
                    Ok(Message::Record(Box::new(expected.clone())))
                );
            }
            assert_eq!(
                parse_record_message(message.as_bytes()),
                Ok(expected.clone())
            );
        }
        assert!(matches!(
            refusal(format!("{line}\n\n").as_bytes(), &token()),
            MessageError::BadByte { byte: b'\n', .. }
        ));
    }
    // A record's newline does not count against the limit, so a line of
    // the limit's length reaches the record parser (which refuses this one
    // on its grammar), and one byte more does not.
    let at_limit = format!(
        "{unsigned} {}",
        "x".repeat(MAX_MESSAGE_LEN - unsigned.len() - 1)
    );
    assert!(matches!(
        refusal(format!("{at_limit}\n").as_bytes(), &token()),
        MessageError::BadRecord(_)
    ));
    assert!(matches!(
        refusal(format!("{at_limit}x\n").as_bytes(), &token()),
        MessageError::TooLong { .. }
    ));
}

#[test]
fn tells_records_from_legacy_messages_by_the_pipe() {
    // A `|` anywhere makes it a legacy message, which this is not.
    let piped = SIGNED.replace("jail=sshd", "jail=ss|hd");
    assert!(matches!(
        refusal(piped.as_bytes(), &LegacyPolicy::Open),
        MessageError::FieldCount { count: 2 }
    ));
    assert_eq!(
        parse_record_message(piped.as_bytes()),
        Err(MessageError::UnknownShape)
    );
    assert_eq!(
        parse_record_message(b"web1|sshd|Ban|203.0.113.9"),
        Err(MessageError::UnknownShape)
    );
    // Neither shape.
    assert_eq!(
        refusal(b"HOST 1.2.3.4 PORT 22", &token()),
        MessageError::UnknownShape
    );
    // Record syntax, checked by the record parser.
    assert_eq!(
        refusal(b"<13>Nov 21 18:28:04 t: BAN 1.2.3.4 PORT 22", &token()),
        MessageError::BadRecord(RejectReason::UnknownVerb("BAN".into()))
    );
}

#[test]
fn every_refusal_has_its_own_kind_and_never_shows_the_token() {
    let wrong = format!("{TOKEN}x|web1|sshd|Ban|1.2.3.4");
    let unexpected = format!("{TOKEN}|web1|sshd|Ban|1.2.3.4");
    let refusals = [
        refusal(b"", &token()),
        refusal(b"x", &token()),
        refusal(&[b'x'; MAX_MESSAGE_LEN + 1], &token()),
        refusal(b"web1|sshd|Ban|1.2.3.\0", &token()),
        refusal(b"no pipe, no record", &token()),
        refusal(b"web1|sshd|Ban|1.2.3.4", &LegacyPolicy::Refused),
        refusal(b"web1|sshd|1.2.3.4", &token()),
        refusal(b"web1|sshd|Ban|1.2.3.4", &token()),
        refusal(wrong.as_bytes(), &token()),
        refusal(unexpected.as_bytes(), &LegacyPolicy::Open),
        refusal(b"web_1|sshd|Ban|1.2.3.4", &LegacyPolicy::Open),
        refusal(b"web1|_sshd|Ban|1.2.3.4", &LegacyPolicy::Open),
        refusal(b"web1|sshd|Kill|1.2.3.4", &LegacyPolicy::Open),
        refusal(b"web1|sshd|Ban|1.2.3", &LegacyPolicy::Open),
        refusal(b"<13>Nov 21 18:28:04 t: BAN 1.2.3.4", &token()),
    ];
    let kinds: HashSet<&str> = refusals.iter().map(MessageError::kind).collect();
    assert_eq!(kinds.len(), refusals.len(), "{kinds:?}");
    for why in &refusals {
        let text = why.to_string();
        assert!(!text.contains(TOKEN), "{text}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
    let debug = format!("{:?}", token());
    assert!(!debug.contains(TOKEN), "{debug}");
}

#[test]
fn refusal_texts_quote_a_short_excerpt() {
    let host = "h".repeat(300);
    let why = refusal(with_field(0, &host).as_bytes(), &LegacyPolicy::Open);
    assert!(why.to_string().len() < 200, "{why}");
}

#[test]
fn a_token_is_printable_ascii_without_a_pipe() {
    assert!(LegacyToken::new("correct horse battery staple").is_ok());
    assert!(LegacyToken::new(&"t".repeat(MAX_TOKEN_LEN)).is_ok());
    for bad in ["", "a|b", "tab\there", "caf\u{e9}", "nl\n"] {
        assert!(LegacyToken::new(bad).is_err(), "{bad:?}");
    }
    assert!(LegacyToken::new(&"t".repeat(MAX_TOKEN_LEN + 1)).is_err());
    assert_eq!(LegacyToken::new(TOKEN), LegacyToken::new(TOKEN));
    assert_ne!(LegacyToken::new(TOKEN), LegacyToken::new("s3cret-Tok3"));
}

fn record_of(line: &str) -> Record {
    record::parse(line.as_bytes()).unwrap()
}

#[test]
fn legacy_broadcast_is_four_fields_the_original_subscriber_splits() {
    let ban = record_of(SIGNED);
    let text = legacy_broadcast(&ban).unwrap();
    assert_eq!(text, "web1|sshd|Ban|203.0.113.9");
    assert_eq!(text.split('|').count(), 4);
    let unban = record_of(
        "<13>Nov 21 18:28:04 t: UNBAN 2001:DB8::9 PORT 22 jail=sshd node=mail.example.com",
    );
    assert_eq!(
        legacy_broadcast(&unban).unwrap(),
        "mail.example.com|sshd|Unban|2001:db8::9"
    );
    // No jail: the fallback.
    let jailless = record_of("<13>Nov 21 18:28:04 t: HOST 192.0.2.1 PORT 22 node=web1");
    assert_eq!(
        legacy_broadcast(&jailless).unwrap(),
        "web1|banshare|Ban|192.0.2.1"
    );
    // Every broadcast is a message banshare itself takes, to the same ban.
    for record in [ban, unban, jailless] {
        let text = legacy_broadcast(&record).unwrap();
        let s = legacy(&text, &LegacyPolicy::Open).unwrap();
        assert_eq!(s.ack(), text);
        assert_eq!(s.action().op(), record.op);
        assert_eq!(s.target(), record.target);
        assert_eq!(Some(s.host()), record.fields.node.as_ref());
    }
}

#[test]
fn legacy_broadcast_leaves_out_what_the_format_cannot_carry() {
    for (line, why) in [
        (
            "<13>Nov 21 18:28:04 t: HOST 192.0.2.0/24 PORT 22 node=web1",
            NotLegacy::Network,
        ),
        (
            "<13>Nov 21 18:28:04 t: HOST 192.0.2.1 PORT 22",
            NotLegacy::NoNode,
        ),
        (
            "<13>Nov 21 18:28:04 t: HOST 192.0.2.1 PORT 22 node=web_1",
            NotLegacy::NodeNotHost,
        ),
        (
            "<13>Nov 21 18:28:04 t: HOST 192.0.2.1 PORT 22 node=web1.",
            NotLegacy::NodeNotHost,
        ),
        (
            "<13>Nov 21 18:28:04 t: HOST 192.0.2.1 PORT 22 jail=a.b node=web1",
            NotLegacy::JailNotLegacy,
        ),
    ] {
        assert_eq!(legacy_broadcast(&record_of(line)), Err(why), "{line}");
        assert!(!why.kind().is_empty());
    }
}
