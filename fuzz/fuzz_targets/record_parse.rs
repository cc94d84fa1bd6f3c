//! Arbitrary bytes into `record::parse`, as every line of the shared log is.
//!
//! Properties, beyond "never panics":
//! - a record that parses formats (`to_string`) to a line that parses again
//!   to an equal record, and that line is a fixed point of format(parse(.));
//! - that line is within the format's own limits (printable ASCII, at most
//!   `MAX_LINE_LEN` bytes), and a trailing `\n` does not change it;
//! - a rejection's text is short and free of control characters.
#![no_main]

use banshare::record::{self, MAX_LINE_LEN};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let record = match record::parse(data) {
        Ok(record) => record,
        Err(reason) => {
            common::check_error_text(data, &reason.to_string());
            let _ = reason.kind();
            return;
        }
    };
    let line = record.to_string();
    let input = String::from_utf8_lossy(data);
    assert!(
        line.len() <= MAX_LINE_LEN && line.bytes().all(|b| (b' '..=b'~').contains(&b)),
        "formatted record is outside the line grammar: {line:?}\ninput: {input:?}"
    );
    let again = match record::parse(line.as_bytes()) {
        Ok(again) => again,
        Err(reason) => {
            panic!("a record's own line is rejected: {reason}\ninput: {input:?}\nline:  {line:?}")
        }
    };
    assert_eq!(
        again, record,
        "round trip changed the record\ninput: {input:?}\nline:  {line:?}"
    );
    assert_eq!(
        again.to_string(),
        line,
        "formatting is not a fixed point\ninput: {input:?}"
    );
    let mut with_newline = line.clone().into_bytes();
    with_newline.push(b'\n');
    assert_eq!(
        record::parse(&with_newline).as_ref(),
        Ok(&record),
        "a trailing newline changed the record\nline: {line:?}"
    );
});
