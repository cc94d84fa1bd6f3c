//! Arbitrary bytes into `transport::zmq::message::parse`, as every message
//! reaches a ZeroMQ publisher's REP socket, under each legacy policy
//! (refused, open, token).
//!
//! Properties, beyond "never panics":
//! - an accepted legacy submission is the message itself (open) or the
//!   token, `|` and the ACK (token); its ACK is four fields and parses back
//!   to the same submission; its record (`append::build_legacy_record`)
//!   reads back unchanged from its line, and the record's legacy broadcast
//!   is four fields that parse back to the same host, jail, op and address;
//! - an accepted record is accepted alike under every policy, carries no
//!   `|`, and is what `parse_record_message` and `record::parse` read;
//! - with a token configured, a refusal's text never shows the token field;
//! - a refusal's text is short and free of control characters.
#![no_main]

use banshare::outbox::append::{Writer, build_legacy_record};
use banshare::record::{self, BanTime, Op, Record};
use banshare::transport::zmq::message::{
    self, LegacyPolicy, LegacySubmission, LegacyToken, Message, MessageError,
};
use chrono::DateTime;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const TOKEN: &str = "s3cret-Tok3n";

fuzz_target!(|data: &[u8]| {
    let policies = [
        LegacyPolicy::Refused,
        LegacyPolicy::Open,
        LegacyPolicy::Token(LegacyToken::new(TOKEN).unwrap()),
    ];
    let mut records = Vec::new();
    for policy in &policies {
        match message::parse(data, policy) {
            Ok(Message::Legacy(submission)) => check_legacy(data, &submission, policy),
            Ok(Message::Record(record)) => records.push(check_record(data, *record)),
            Err(why) => check_refusal(data, &why, policy),
        }
    }
    assert!(
        records.is_empty() || records.len() == policies.len(),
        "a record's acceptance depends on the legacy policy\ninput: {:?}",
        String::from_utf8_lossy(data)
    );
});

fn check_legacy(data: &[u8], submission: &LegacySubmission, policy: &LegacyPolicy) {
    let input = String::from_utf8_lossy(data);
    let ack = submission.ack();
    let expected = match policy {
        LegacyPolicy::Refused => panic!("a legacy message under Refused\ninput: {input:?}"),
        LegacyPolicy::Open => ack.to_owned(),
        LegacyPolicy::Token(_) => format!("{TOKEN}|{ack}"),
    };
    assert_eq!(
        expected.as_bytes(),
        data,
        "the ACK is not the message minus its token"
    );
    assert_eq!(ack.split('|').count(), 4, "ACK {ack:?}");
    let again = legacy(ack.as_bytes());
    assert_eq!(
        &again, submission,
        "the ACK does not read back\ninput: {input:?}"
    );

    let writer = Writer {
        node: "publisher".parse().unwrap(),
        tag: "banshare".parse().unwrap(),
        pid: 4242,
        key: None,
    };
    let now = DateTime::from_timestamp(1_795_000_000, 123_456_789).unwrap();
    let record = build_legacy_record(submission, &writer, Some(BanTime::Seconds(600)), now)
        .expect("random id");
    let line = record.to_string();
    match record::parse(line.as_bytes()) {
        Ok(read) => assert_eq!(read, record, "record does not read back\nline: {line:?}"),
        Err(why) => {
            panic!("a legacy submission makes a record the log rejects: {why}\nline: {line:?}")
        }
    }
    check_broadcast(&record, submission);
}

fn check_broadcast(record: &Record, submission: &LegacySubmission) {
    let broadcast = match message::legacy_broadcast(record) {
        Ok(text) => text,
        Err(why) => panic!("a legacy submission's record is not broadcast: {why}\n{record}"),
    };
    assert_eq!(broadcast.split('|').count(), 4, "broadcast {broadcast:?}");
    let read = legacy(broadcast.as_bytes());
    assert_eq!(read.host(), submission.host());
    assert_eq!(read.jail(), submission.jail());
    assert_eq!(read.action().op(), submission.action().op());
    assert_eq!(read.address(), submission.address());
    let word = match record.op {
        Op::Ban => "Ban",
        Op::Unban => "Unban",
        other => panic!("a legacy submission made a {other} record"),
    };
    assert_eq!(read.action().op(), record.op);
    assert!(broadcast.contains(&format!("|{word}|")), "{broadcast:?}");
}

/// `text` as a legacy message without a token, which it must be.
fn legacy(text: &[u8]) -> LegacySubmission {
    match message::parse(text, &LegacyPolicy::Open) {
        Ok(Message::Legacy(submission)) => submission,
        other => panic!(
            "{:?} is not a legacy message: {other:?}",
            String::from_utf8_lossy(text)
        ),
    }
}

fn check_record(data: &[u8], record: Record) -> Record {
    let input = String::from_utf8_lossy(data);
    assert!(
        !data.contains(&b'|'),
        "a record with a `|`\ninput: {input:?}"
    );
    assert_eq!(message::parse_record_message(data).as_ref(), Ok(&record));
    assert_eq!(
        record::parse(data).as_ref(),
        Ok(&record),
        "input: {input:?}"
    );
    record
}

fn check_refusal(data: &[u8], why: &MessageError, policy: &LegacyPolicy) {
    let text = why.to_string();
    common::check_error_text(data, &text);
    assert!(!why.kind().is_empty());
    // What follows the token field may be quoted; the token field never.
    if let (LegacyPolicy::Token(_), Some(pipe)) = (policy, data.iter().position(|&b| b == b'|')) {
        let after = &data[pipe + 1..];
        let token_after = after.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes());
        assert!(
            token_after || !text.contains(TOKEN),
            "a refusal shows the token: {text:?}"
        );
    }
}
