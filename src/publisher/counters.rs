//! What the publisher counts, and its refusals logged at a bounded rate:
//! every byte it receives may be hostile, and a flood of bad messages must
//! neither fill the disk with log lines nor hide what was refused.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Refusals logged one by one per minute; the rest are summed up.
const REFUSALS_LOGGED_PER_MINUTE: u32 = 20;

/// The publisher's counters since it started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Legacy submissions stored.
    pub legacy_stored: u64,
    /// banshare records stored.
    pub records_stored: u64,
    /// Refused submissions, by kind (`MessageError::kind`, `Untrusted::kind`,
    /// `never_ban`, `store_failed`, `too_many_frames`).
    pub refused: BTreeMap<&'static str, u64>,
    /// Stored records left off the legacy feed, by `NotLegacy::kind`.
    pub not_legacy: BTreeMap<&'static str, u64>,
    /// Signed records stored that the publisher's keys could not verify,
    /// by `Untrusted::kind` (the watchers judge them).
    pub unverified: BTreeMap<&'static str, u64>,
    /// Catch-up requests answered.
    pub catch_ups: u64,
    /// Catch-up requests refused as malformed.
    pub catch_ups_refused: u64,
    /// Connections refused by CURVE's allow-list (ZAP).
    pub curve_refused: u64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stored {} legacy and {} records; refused {}; left off the legacy feed {}; \
             catch-ups {} ({} refused); stored unverified {}; CURVE connections refused {}",
            self.legacy_stored,
            self.records_stored,
            by_kind(&self.refused),
            by_kind(&self.not_legacy),
            self.catch_ups,
            self.catch_ups_refused,
            by_kind(&self.unverified),
            self.curve_refused
        )
    }
}

/// `{a=1, b=2}`, or `none`.
fn by_kind(map: &BTreeMap<&'static str, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = map.iter().map(|(k, n)| format!("{k}={n}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Logs warnings, at most [`REFUSALS_LOGGED_PER_MINUTE`] a minute; the
/// others are counted and summed up when the minute is over.
#[derive(Debug)]
pub struct RateLimitedLog {
    window: Instant,
    logged: u32,
    suppressed: u64,
}

impl Default for RateLimitedLog {
    fn default() -> RateLimitedLog {
        RateLimitedLog {
            window: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }
}

impl RateLimitedLog {
    pub fn warn(&mut self, message: fmt::Arguments) {
        self.roll();
        if self.logged < REFUSALS_LOGGED_PER_MINUTE {
            self.logged += 1;
            log::warn!("{message}");
        } else {
            self.suppressed += 1;
        }
    }

    /// Starts a new minute once the last is over, saying how many were
    /// not logged in it.
    pub fn roll(&mut self) {
        if self.window.elapsed() < Duration::from_secs(60) {
            return;
        }
        if self.suppressed > 0 {
            log::warn!(
                "{} more refused messages in the last minute were not logged one by one",
                self.suppressed
            );
        }
        *self = RateLimitedLog::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_print_by_kind() {
        let mut c = Counters::default();
        *c.refused.entry("wrong_token").or_default() += 2;
        *c.refused.entry("too_long").or_default() += 1;
        let text = c.to_string();
        assert!(
            text.contains("refused {too_long=1, wrong_token=2}"),
            "{text}"
        );
        assert!(text.contains("legacy feed none"), "{text}");
    }

    #[test]
    fn the_log_stops_logging_within_a_minute() {
        let mut log = RateLimitedLog::default();
        for _ in 0..100 {
            log.warn(format_args!("refused"));
        }
        assert_eq!(log.logged, REFUSALS_LOGGED_PER_MINUTE);
        assert_eq!(log.suppressed, 80);
    }
}
