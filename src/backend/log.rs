//! The log backend: a dry run. Bans nothing; writes one line per action:
//!
//! ```text
//! ban 192.0.2.7 ports=22 jail=sshd for=1800s origin=web1 age=12ms
//! ban 2001:db8::/48 ports=0:65535 jail=- for=permanent origin=-
//! unban 192.0.2.7 ports=22 jail=sshd origin=web1 age=3ms
//! ```
//!
//! `for` is the remaining ban time, rounded up to seconds; `jail` and
//! `origin` are `-` when the record has none; `age` is how long ago the ban
//! started at its origin (now minus the record's `ts`, so on one host the
//! time from ban to here; negative if clocks disagree), left out without a
//! `ts`. Every value comes from a checked record: no spaces or control
//! characters.

use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::{Action, Backend, BackendError, timeout_secs};
use crate::record::Target;

pub struct LogBackend {
    out: Box<dyn Write + Send>,
}

impl LogBackend {
    /// Writes to `out`: stdout in the daemon, a buffer in tests.
    pub fn new(out: Box<dyn Write + Send>) -> LogBackend {
        LogBackend { out }
    }
}

/// The line for `action` at time `now`, without the newline.
pub fn format_action(action: &Action, now: DateTime<Utc>) -> String {
    let mut line = String::new();
    write_action(&mut line, action, now);
    line
}

/// Appends the line for `action`, without the newline, to `out`. Written
/// in place: a catch-up prints a million of these.
fn write_action(out: &mut String, action: &Action, now: DateTime<Utc>) {
    let (verb, target, ports, jail, origin, ts) = match action {
        Action::Ban(b) => ("ban", b.target, &b.ports, &b.jail, &b.origin, b.ts),
        Action::Unban(u) => ("unban", u.target, &u.ports, &u.jail, &u.origin, u.ts),
    };
    out.push_str(verb);
    out.push(' ');
    push_target(out, target);
    // Writing to a String cannot fail.
    let _ = write!(out, " ports={ports} jail=");
    out.push_str(jail.as_ref().map_or("-", |j| j.as_str()));
    if let Action::Ban(b) = action {
        match b.remaining {
            Some(r) => {
                out.push_str(" for=");
                // At most MAX_BANTIME_SECS, far below i64::MAX.
                push_decimal(out, timeout_secs(r) as i64);
                out.push('s');
            }
            None => out.push_str(" for=permanent"),
        }
    }
    out.push_str(" origin=");
    out.push_str(origin.as_ref().map_or("-", |o| o.as_str()));
    if let Some(ts) = ts {
        out.push_str(" age=");
        push_decimal(out, (now - ts).num_milliseconds());
        out.push_str("ms");
    }
}

/// As `Display`, but an IPv4 address without the formatting machinery,
/// which cost a third of each line.
fn push_target(out: &mut String, target: Target) {
    match target {
        Target::Addr(IpAddr::V4(v4)) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(out, octet.into());
            }
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

fn push_decimal(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    // 64-bit arithmetic: 128-bit division is a slow library call.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

impl Backend for LogBackend {
    fn name(&self) -> &'static str {
        "log"
    }

    fn setup(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn apply(&mut self, batch: &[Action]) -> Result<(), BackendError> {
        let now = Utc::now();
        let mut text = String::with_capacity(batch.len() * 80);
        for action in batch {
            write_action(&mut text, action, now);
            text.push('\n');
        }
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| BackendError::Failed {
                program: "log".into(),
                status: "write error".into(),
                stderr: e.to_string(),
            })
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ban, unban};
    use super::super::{Ban, Unban};
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn lines() {
        let now: DateTime<Utc> = "2026-11-21T18:28:04.135Z".parse().unwrap();
        let ts: DateTime<Utc> = "2026-11-21T18:28:04.123Z".parse().unwrap();
        let full = Action::Ban(Ban {
            target: "192.0.2.7".parse().unwrap(),
            ports: "22".parse().unwrap(),
            jail: Some("sshd".parse().unwrap()),
            remaining: Some(Duration::from_millis(1_799_990)),
            origin: Some("web1".parse().unwrap()),
            ts: Some(ts),
        });
        assert_eq!(
            format_action(&full, now),
            "ban 192.0.2.7 ports=22 jail=sshd for=1800s origin=web1 age=12ms"
        );
        assert_eq!(
            format_action(&ban("2001:db8::/48", None), now),
            "ban 2001:db8::/48 ports=0:65535 jail=- for=permanent origin=-"
        );
        let un = Action::Unban(Unban {
            target: "192.0.2.7".parse().unwrap(),
            ports: "80,443".parse().unwrap(),
            jail: Some("nginx".parse().unwrap()),
            origin: Some("web2".parse().unwrap()),
            ts: Some("2026-11-21T18:28:05Z".parse().unwrap()),
        });
        assert_eq!(
            format_action(&un, now),
            "unban 192.0.2.7 ports=80,443 jail=nginx origin=web2 age=-865ms"
        );
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_one_line_per_action() {
        let buf = Shared::default();
        let mut b = LogBackend::new(Box::new(buf.clone()));
        b.setup().unwrap();
        b.apply(&[ban("192.0.2.1", Some(60)), unban("192.0.2.1")])
            .unwrap();
        b.cleanup().unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "ban 192.0.2.1 ports=0:65535 jail=- for=60s origin=-\nunban 192.0.2.1 ports=0:65535 jail=- origin=-\n"
        );
    }

    #[test]
    fn numbers_and_addresses_are_written_as_display_writes_them() {
        for n in [0, 7, 10, 255, -1, -865, 1_800, i64::MAX, i64::MIN] {
            let mut out = String::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        for target in ["0.0.0.0", "10.20.255.1", "192.0.2.0/24", "2001:db8::7"] {
            let target: Target = target.parse().unwrap();
            let mut out = String::new();
            push_target(&mut out, target);
            assert_eq!(out, target.to_string());
        }
    }
}
