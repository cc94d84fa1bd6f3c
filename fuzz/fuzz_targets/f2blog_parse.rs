//! Arbitrary bytes into `monitor::f2blog::parse`, as every line of
//! fail2ban.log is read by `banshare monitor`.
//!
//! Properties, beyond "never panics":
//! - a ban notice becomes a record that the shared log accepts and reads
//!   back unchanged: the record is built as `append::build_records` builds
//!   it (time to the millisecond, local-time header, `ts` in UTC), so a line
//!   of fail2ban.log can never make `monitor` write a poison record that
//!   every watcher rejects;
//! - a rejection's text is short and free of control characters.
#![no_main]

use banshare::monitor::f2blog::{self, Kind};
use banshare::record::{
    self, DEFAULT_PRIORITY, Fields, Op, PortSpec, Record, SyslogHeader, SyslogTime,
};
use chrono::{Local, SubsecRound};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let event = match f2blog::parse(data) {
        Ok(Some(event)) => event,
        Ok(None) => return,
        Err(bad) => {
            common::check_error_text(data, &bad.to_string());
            return;
        }
    };
    let input = String::from_utf8_lossy(data);
    // What `monitor` shares, built as `append::build_records` does.
    let now = event.time.trunc_subsecs(3);
    let record = Record {
        header: SyslogHeader {
            priority: DEFAULT_PRIORITY,
            time: SyslogTime::from_naive(now.with_timezone(&Local).naive_local()),
            tag: "banshare".parse().unwrap(),
            pid: Some(4242),
        },
        op: match event.kind {
            Kind::Ban | Kind::RestoreBan => Op::Ban,
            Kind::Unban => Op::Unban,
        },
        target: event.target,
        ports: PortSpec::all(),
        fields: Fields {
            jail: Some(event.jail.clone()),
            node: Some("fuzz-node".parse().unwrap()),
            ts: Some(now),
            id: Some("0123456789abcdef01234567".parse().unwrap()),
            ..Fields::default()
        },
    };
    let line = record.to_string();
    match record::parse(line.as_bytes()) {
        Ok(again) => assert_eq!(
            again, record,
            "the record of a ban notice does not read back\ninput: {input:?}\nline:  {line:?}"
        ),
        Err(reason) => panic!(
            "a ban notice becomes a record the log rejects: {reason}\n\
             input: {input:?}\nevent: {event:?}\nline:  {line:?}"
        ),
    }
});
