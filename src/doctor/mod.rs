//! `banshare doctor`: what stops this node from sharing and applying bans,
//! found by looking rather than by waiting for a ban to go missing. Each
//! check gives one or more [`Finding`]s: ok, a warning, or a problem with
//! a concrete fix.
//!
//! The checks reuse the code that decides the same thing for real: the
//! configuration checks of `watch` and `config check`, the follow-mode
//! decision ([`crate::follow::mode::resolve_explained`]), the state
//! directory's lock as `status` reads it. Nothing here changes the host,
//! except for one empty probe file created and removed beside the log,
//! which is the only way to know that the lock file can be created there.
//!
//! - [`share`]: the log's reachability and the lock folder's write
//!   permission, on a path (local or a mounted share), over SFTP, or to a
//!   ZeroMQ publisher; a hung share is bounded by a deadline;
//! - [`clock`]: clock skew, from the log's last records;
//! - [`host`]: the backend's programs, CAP_NET_ADMIN, fail2ban's socket;
//! - [`mounts`]: `/proc/self/mountinfo` and `/etc/fstab`;
//! - [`node`]: the configuration, the follow mode, the trusted keys, the
//!   watcher and the spool.

pub mod clock;
pub mod host;
pub mod mounts;
pub mod node;
pub mod share;

use std::path::Path;

use serde::Serialize;

use crate::config::Settings;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Problem,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Problem => "problem",
        }
    }
}

/// One thing a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check's short name: `config`, `log`, `lock`, ...
    pub check: &'static str,
    #[serde(rename = "status")]
    pub level: Level,
    /// What was found, in one sentence naming the paths and values.
    pub detail: String,
    /// What to do about it; `None` when all is well.
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warning(
        check: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            level: Level::Warning,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn problem(
        check: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            level: Level::Problem,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every check, in the order a reader fixes things: the configuration,
/// the log and its lock, how it is followed, the backend and its
/// privileges, fail2ban, the trusted keys, the clocks, the watcher and
/// what waits in its spool.
/// `origin` is the configuration file the settings came from.
pub fn examine(settings: &Settings, origin: &Path) -> Vec<Finding> {
    let mut findings = node::config(settings, origin);
    let probe = share::probe(settings);
    findings.extend(probe.findings.iter().cloned());
    findings.push(match probe.follow_unknown {
        // Deciding asks the log's filesystem.
        Some(why) => Finding::ok("follow", format!("not checked: {why}")),
        None => node::follow(settings),
    });
    findings.extend(host::backend(settings));
    findings.push(host::privileges(settings));
    findings.push(host::fail2ban(settings));
    findings.push(node::trust(settings));
    findings.push(clock::check(&probe.clock, chrono::Utc::now()));
    findings.push(node::watcher(settings, chrono::Utc::now()));
    findings.push(node::spool(settings));
    findings
}

/// The worst level among `findings` (`Ok` for none).
pub fn worst(findings: &[Finding]) -> Level {
    findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
}
