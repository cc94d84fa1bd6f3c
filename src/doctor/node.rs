//! This node's own setup: the configuration as `watch` and `config check`
//! judge it, how the log will be followed, the trusted keys, and whether
//! the watcher runs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use chrono::{DateTime, Utc};

use super::Finding;
use crate::config::Settings;
use crate::follow::FollowKind;
use crate::follow::mode::{Mode, resolve_explained};
use crate::transport::LogLocation;
use crate::trust::TrustedKeys;
use crate::watch::state::{Liveness, liveness, silence_limit};

/// What `watch` refuses, and what `config check` refuses beside it (the
/// signing key of `ban`, the publisher's legacy token, the state
/// directories' format); the trusted keys have a check of their own
/// ([`trust`]).
pub fn config(settings: &Settings, origin: &Path) -> Vec<Finding> {
    let fix = format!(
        "correct it in {}; `banshare config check` shows the effective configuration",
        origin.display()
    );
    let mut findings = Vec::new();
    if settings.log.is_none() {
        findings.push(Finding::problem(
            "config",
            "no log: `log` is not set in [common]",
            fix.clone(),
        ));
    }
    if settings.watch.backend.is_none() {
        findings.push(Finding::problem(
            "config",
            "no backend: `backend` is not set in [watch] (nftables, ipset, fail2ban, command or log)",
            fix.clone(),
        ));
    }
    let checks = [
        settings.watch_backend(origin).map(drop),
        settings.signing_key(origin).map(drop),
        settings.legacy_policy(origin).map(drop),
        settings.check_state_dirs(origin),
        #[cfg(feature = "zmq")]
        settings.curve_server_keys(origin).map(drop),
    ];
    for e in checks.into_iter().filter_map(Result::err) {
        findings.push(Finding::problem("config", e.to_string(), fix.clone()));
    }
    if findings.is_empty() {
        let from = match origin.exists() {
            true => origin.display().to_string(),
            false => format!("defaults ({} is absent)", origin.display()),
        };
        findings.push(Finding::ok(
            "config",
            format!("{from}: accepted by watch, ban, monitor and publisher"),
        ));
    }
    findings
}

/// How the watcher will notice new records, and why: the decision
/// `watch` itself makes.
pub fn follow(settings: &Settings) -> Finding {
    let w = &settings.watch;
    let (mode, why) = match &settings.log {
        None => return Finding::ok("follow", "not checked: no log is configured"),
        Some(LogLocation::File(path)) => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            resolve_explained(w.follow, dir, w.poll_interval, w.safety_poll)
        }
        #[cfg(feature = "sftp")]
        Some(LogLocation::Sftp(_)) => (
            Mode::Poll(w.poll_interval),
            "SFTP has no change notification".into(),
        ),
        #[cfg(feature = "zmq")]
        Some(LogLocation::Zmq(_)) => (
            Mode::Pushed {
                safety: w.safety_poll,
            },
            "the publisher pushes every record".into(),
        ),
        #[cfg(feature = "nats")]
        Some(LogLocation::Nats(_)) => (
            Mode::Pushed {
                safety: w.safety_poll,
            },
            "the stream's consumer pushes every record".into(),
        ),
    };
    let blind = match &settings.log {
        Some(LogLocation::File(path)) => path
            .parent()
            .and_then(crate::follow::mode::blind_filesystem),
        _ => None,
    };
    if let (Mode::Native { .. }, Some(fs), FollowKind::Native) = (mode, blind, w.follow) {
        return Finding::warning(
            "follow",
            format!(
                "{} ({why}), but the log is on {fs}, where inotify does not see other hosts' writes: \
                 their bans arrive only at the safety poll",
                mode.describe()
            ),
            "set `follow = \"auto\"` (or \"poll\") in [watch]",
        );
    }
    if let (Some(fs), Some(running)) = (blind, inotify_watcher(settings)) {
        return Finding::warning(
            "follow",
            format!(
                "the running watcher (pid {running}) follows with inotify, chosen when it started \
                 (before the share was mounted?), but the log is now on {fs}, where inotify does \
                 not see other hosts' writes: their bans arrive only at its safety poll (every {})",
                humantime::format_duration(w.safety_poll)
            ),
            "restart the watcher (`systemctl restart banshare-watch`), and start it only once the \
             share is mounted (RequiresMountsFor= in its unit)",
        );
    }
    Finding::ok("follow", format!("{}: {why}", mode.describe()))
}

/// The pid of the watcher of this configuration's state directory if it
/// runs on this log and follows it with inotify, as its status says.
fn inotify_watcher(settings: &Settings) -> Option<u32> {
    let limit = silence_limit(settings.watch.safety_poll, settings.backend.timeout);
    let Ok(Liveness::Running(status)) = liveness(&settings.watch.state_dir, limit, Utc::now())
    else {
        return None;
    };
    let log = settings.log.as_ref()?.to_string();
    (status.log == log && status.mode.starts_with("inotify")).then_some(status.pid)
}

/// The trusted keys file: there, parseable, and writable by no one but its
/// owner (whoever can add a line can ban in any node's name).
pub fn trust(settings: &Settings) -> Finding {
    let t = &settings.trust;
    let Some(path) = &t.keys else {
        // require_signed without keys is refused when the file is loaded.
        return Finding::ok(
            "trust",
            "no trusted keys file ([trust] keys): signatures are not checked (see docs/security.md)",
        );
    };
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Finding::problem(
                "trust",
                format!("the trusted keys file {shown} does not exist: watch refuses to start"),
                format!(
                    "copy the cluster's trusted keys file to {shown} (one `<node> ed25519 <key>` line \
                     per node, from `banshare keygen`), or remove `keys` from [trust]"
                ),
            );
        }
        Err(e) => {
            return Finding::problem(
                "trust",
                format!("{shown}: {e}"),
                "let the watcher's user read it",
            );
        }
    };
    // Before loading, which refuses such a file with a less telling message.
    let mode = meta.permissions().mode();
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if mode & 0o022 != 0 || (meta.uid() != 0 && meta.uid() != me) {
        return Finding::problem(
            "trust",
            format!(
                "{shown} (mode {:o}, owner uid {}) can be changed by others than root or this user: \
                 whoever adds a key to it can ban in any node's name",
                mode & 0o7777,
                meta.uid()
            ),
            format!("chown root: {shown} && chmod 644 {shown}"),
        );
    }
    let keys = match TrustedKeys::load(path) {
        Ok(keys) => keys,
        Err(e) => {
            return Finding::problem(
                "trust",
                format!("{e}: watch refuses to start"),
                format!(
                    "correct {shown}: one `<node> ed25519 <base64 key>` line per key, # for comments"
                ),
            );
        }
    };
    if keys.is_empty() && t.require_signed {
        return Finding::problem(
            "trust",
            format!(
                "{shown} lists no key, but [trust] require_signed is on: watch refuses to start"
            ),
            "add the nodes' public keys (`banshare keygen` prints each), or set require_signed = false",
        );
    }
    Finding::ok(
        "trust",
        format!(
            "{shown}: keys of {} node(s), mode {:o}",
            keys.node_count(),
            mode & 0o7777
        ),
    )
}

/// Whether a watcher runs and works on the configured state directory, as
/// `banshare status` tells it.
pub fn watcher(settings: &Settings, now: DateTime<Utc>) -> Finding {
    let dir = &settings.watch.state_dir;
    let shown = dir.display();
    let limit = silence_limit(settings.watch.safety_poll, settings.backend.timeout);
    let start = "start it: `systemctl start banshare-watch` (or `banshare watch`); `journalctl -u \
                 banshare-watch` says why it stopped";
    match liveness(dir, limit, now) {
        Err(e) => Finding::problem(
            "watcher",
            format!("cannot read {shown}: {e}"),
            "run doctor as root or as the watcher's user",
        ),
        Ok(Liveness::NeverRan) => Finding::problem(
            "watcher",
            format!("no watcher has run with state directory {shown}: this node applies no bans"),
            start,
        ),
        Ok(Liveness::Stopped(status)) => Finding::problem(
            "watcher",
            format!(
                "the watcher of {shown} is not running (last status {}): this node applies no bans",
                status.updated.map_or("never".into(), |t| t
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            ),
            start,
        ),
        Ok(Liveness::Silent(status, silent)) => Finding::problem(
            "watcher",
            format!(
                "the watcher of {shown} (pid {}) is not responding: no sign of life for {}; it is \
                 stopped or stuck (on a dead mount?)",
                status.pid,
                humantime::format_duration(std::time::Duration::from_secs(silent.as_secs()))
            ),
            format!(
                "see what it waits on (`cat /proc/{}/stack`, `ps -o stat,wchan -p {0}`); fix the mount \
                 (see log), then `systemctl restart banshare-watch`",
                status.pid
            ),
        ),
        Ok(Liveness::Running(status)) => match (&status.held, &status.last_error) {
            (Some(why), _) => Finding::warning(
                "watcher",
                format!(
                    "the watcher (pid {}) is HELD, applying nothing: {why}",
                    status.pid
                ),
                format!("free space in {shown}, or make it writable"),
            ),
            (None, Some(e)) if !status.log_present => Finding::warning(
                "watcher",
                format!(
                    "the watcher (pid {}) runs but cannot read the log: {e}",
                    status.pid
                ),
                "see the log check; the watcher resumes by itself once the log is back",
            ),
            (None, _) => Finding::ok(
                "watcher",
                format!(
                    "running (pid {}), {} active ban(s), {} applied",
                    status.pid, status.active_bans, status.applied
                ),
            ),
        },
    }
}

/// Records waiting in this node's spool: its bans are not shared yet, so
/// the log was unreachable when they were made, and may still be.
pub fn spool(settings: &Settings) -> Finding {
    let dir = &settings.spool_dir;
    // No folder: nothing was ever spooled. Not created here.
    if !dir.is_dir() {
        return Finding::ok(
            "spool",
            format!("empty ({} does not exist yet)", dir.display()),
        );
    }
    match crate::outbox::spool::Spool::open(dir).and_then(|s| s.depth()) {
        Ok(0) => Finding::ok("spool", format!("{}: empty", dir.display())),
        Ok(n) => Finding::warning(
            "spool",
            format!(
                "{n} record(s) wait in {}: this node's bans have not reached the log",
                dir.display()
            ),
            "make the log reachable (see log and lock); a running watcher delivers them by itself, \
             or run `banshare flush`",
        ),
        Err(e) => Finding::warning(
            "spool",
            format!("cannot count the spool: {e}"),
            "let this user read it",
        ),
    }
}
