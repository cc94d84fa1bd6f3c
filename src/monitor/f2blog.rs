//! Lines of fail2ban's own log that `banshare monitor` shares:
//!
//! ```text
//! 2026-11-21 18:41:45,928 fail2ban.actions        [752]: NOTICE  [sshd] Ban 192.0.2.7
//! 2026-11-21 18:51:45,101 fail2ban.actions        [752]: NOTICE  [sshd] Unban 192.0.2.7
//! 2026-11-21 18:40:01,003 fail2ban.actions        [752]: NOTICE  [sshd] Restore Ban 192.0.2.7
//! ```
//!
//! fail2ban pads the logger name and the level (`%(name)-24s`,
//! `%(levelname)-7s`) unless told not to, so any run of spaces separates
//! them. The time is local, with milliseconds.
//!
//! Most lines are something else (`Found`, `INFO`, `already banned`):
//! [`parse`] returns `Ok(None)` for those. A line that claims to be a ban
//! notice but carries a bad jail name or address is an error, counted and
//! logged by the caller: fail2ban.log is written by fail2ban, but a bad
//! line there still must never become a ban elsewhere.

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};

use crate::record::{Jail, RejectReason, Target};

/// What fail2ban did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ban,
    Unban,
    /// A ban restored from fail2ban's database at start: not a new ban.
    RestoreBan,
}

/// One ban notice from fail2ban.log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub time: DateTime<Utc>,
    pub jail: Jail,
    pub kind: Kind,
    pub target: Target,
}

/// Why a ban notice could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadNotice {
    #[error("bad time in a ban notice")]
    Time,
    #[error("bad jail name in a ban notice: {0}")]
    Jail(RejectReason),
    #[error("bad address in a ban notice: {0}")]
    Address(RejectReason),
}

/// Reads one line of fail2ban.log (without its newline).
pub fn parse(line: &[u8]) -> Result<Option<Event>, BadNotice> {
    // Ban notices are ASCII; anything else is some other message.
    let Ok(line) = std::str::from_utf8(line) else {
        return Ok(None);
    };
    let line = line.trim_end_matches(['\r', '\n']);
    let Some((stamp, rest)) = line.split_at_checked(23) else {
        return Ok(None);
    };
    let Some(rest) = notice_of_actions(rest) else {
        return Ok(None);
    };
    let Some((jail, action)) = rest.strip_prefix('[').and_then(|r| r.split_once("] ")) else {
        return Ok(None);
    };
    let (kind, address) = match action.split_once(' ') {
        Some(("Ban", address)) => (Kind::Ban, address),
        Some(("Unban" | "UnBan", address)) => (Kind::Unban, address),
        Some(("Restore", rest)) => match rest.strip_prefix("Ban ") {
            Some(address) => (Kind::RestoreBan, address),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    let time = parse_time(stamp).ok_or(BadNotice::Time)?;
    let jail = jail.parse().map_err(BadNotice::Jail)?;
    let target = address.trim().parse().map_err(BadNotice::Address)?;
    Ok(Some(Event {
        time,
        jail,
        kind,
        target,
    }))
}

/// The message of a `fail2ban.actions ... NOTICE` line, or `None`.
fn notice_of_actions(rest: &str) -> Option<&str> {
    let rest = rest.strip_prefix(' ')?.trim_start();
    let rest = rest.strip_prefix("fail2ban.actions")?.trim_start();
    let (_pid, rest) = rest.strip_prefix('[')?.split_once("]: ")?;
    Some(rest.strip_prefix("NOTICE")?.trim_start())
}

/// `2026-11-21 18:41:45,928`, in this host's local time.
/// Strict: chrono's `%Y` alone would take a signed year such as `-026`
/// (found by fuzzing), which no record may carry.
fn parse_time(stamp: &str) -> Option<DateTime<Utc>> {
    if !stamp.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let naive = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S,%3f").ok()?;
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> Option<Event> {
        parse(line.as_bytes()).unwrap()
    }

    #[test]
    fn padded_and_unpadded_notices() {
        let padded =
            "2026-11-21 18:41:45,928 fail2ban.actions        [752]: NOTICE  [sshd] Ban 192.0.2.7";
        let plain = "2026-11-21 18:41:45,928 fail2ban.actions [752]: NOTICE [sshd] Ban 192.0.2.7";
        for line in [padded, plain] {
            let e = event(line).unwrap();
            assert_eq!(
                (e.kind, e.jail.as_str(), e.target.to_string()),
                (Kind::Ban, "sshd", "192.0.2.7".into())
            );
        }
    }

    #[test]
    fn unban_restore_and_ipv6() {
        let e = event("2026-11-21 18:41:45,928 fail2ban.actions [1]: NOTICE [nginx-http-auth] Unban 2001:db8::7").unwrap();
        assert_eq!(
            (e.kind, e.target.to_string()),
            (Kind::Unban, "2001:db8::7".into())
        );
        let e = event(
            "2026-11-21 18:41:45,928 fail2ban.actions [1]: NOTICE [sshd] Restore Ban 192.0.2.7",
        )
        .unwrap();
        assert_eq!(e.kind, Kind::RestoreBan);
    }

    #[test]
    fn other_lines_are_not_events() {
        for line in [
            "2026-11-21 18:41:45,928 fail2ban.filter         [752]: INFO    [sshd] Found 192.0.2.7 - 2026-11-21 18:41:45",
            "2026-11-21 18:41:45,928 fail2ban.actions        [752]: NOTICE  [sshd] 192.0.2.7 already banned",
            "2026-11-21 18:41:45,928 fail2ban.actions        [752]: WARNING [sshd] Ban 192.0.2.7",
            "2026-11-21 18:41:45,928 fail2ban.server         [752]: INFO    Starting Fail2ban v1.0.2",
            "garbage",
            "",
        ] {
            assert_eq!(parse(line.as_bytes()), Ok(None), "{line}");
        }
        assert_eq!(parse(&[0xff, 0xfe]), Ok(None));
    }

    #[test]
    fn bad_ban_notices_are_errors() {
        let head = "2026-11-21 18:41:45,928 fail2ban.actions [1]: NOTICE";
        assert!(matches!(
            parse(format!("{head} [sshd] Ban 1.2.3.4;rm").as_bytes()),
            Err(BadNotice::Address(_))
        ));
        assert!(matches!(
            parse(format!("{head} [sshd] Ban $(id)").as_bytes()),
            Err(BadNotice::Address(_))
        ));
        assert!(matches!(
            parse(format!("{head} [ss hd] Ban 1.2.3.4").as_bytes()),
            Err(BadNotice::Jail(_))
        ));
        let bad_time = "2026-13-21 18:41:45,928 fail2ban.actions [1]: NOTICE [sshd] Ban 1.2.3.4";
        assert_eq!(parse(bad_time.as_bytes()), Err(BadNotice::Time));
        // Found by fuzzing: a signed year chrono would accept.
        let negative = "-026-11-21 20:18:56,453 fail2ban.actions [1]: NOTICE [sshd] Ban 192.0.2.7";
        assert_eq!(parse(negative.as_bytes()), Err(BadNotice::Time));
    }
}
