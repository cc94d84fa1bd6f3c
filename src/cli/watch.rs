//! `banshare watch`, `banshare status` and `banshare cleanup`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use banshare::backend::Backend;
use banshare::config::Settings;
use banshare::metrics;
use banshare::outbox::spool::Spool;
use banshare::state;
use banshare::transport::{self, FeedSettings, LogLocation};
use banshare::trust::TrustPolicy;
use banshare::watch::daemon::{Daemon, Options, Reloaded};
use banshare::watch::metrics::WatchMetrics;
use banshare::watch::policy::PolicySettings;
use banshare::watch::reach::Reach;
use banshare::watch::state::{Liveness, Status, liveness, silence_limit};
use banshare::watch::{flusher, host};
use serde::Serialize;

use super::args::{CleanupArgs, StatusArgs, WatchArgs};
use super::failure::{Failure, Result, write_stdout};
use super::setup::{
    acquire_state, apply_watch_args, check_metrics_file, config_path, forward_signals,
    load_settings, open_spool_and_transport, required_log,
};

pub fn watch(args: WatchArgs, config: &Option<PathBuf>, mut settings: Settings) -> Result<()> {
    apply_watch_args(&mut settings, &args)?;
    let location = required_log(&settings)?;
    let origin = config_path(config);
    // Checked before the state directory is created and locked: a refused
    // configuration (exit 2) writes nothing. Neither touches the host.
    let backend = open_backend(&settings, &origin)?;
    let trust = trust_policy(&settings, &origin)?;
    let metrics_file = settings.watch.metrics_file.clone();
    check_metrics_file(metrics_file.as_deref(), "watch.metrics_file")?;
    // Listening before the state directory is taken: a port in use stops
    // the watcher before it touches anything.
    let served = match settings.watch.metrics_listen {
        Some(addr) => Some(metrics::serve(addr).map_err(|e| anyhow!(e))?),
        None => None,
    };
    // Locked before the daemon starts: a second watcher must not touch
    // the firewall.
    let state = acquire_state(&settings.watch.state_dir)?;
    let w = &settings.watch;
    let feed = transport::open_feed(
        &location,
        &FeedSettings {
            follow: w.follow,
            poll_interval: w.poll_interval,
            safety_poll: w.safety_poll,
            sftp: settings.sftp.clone(),
            zmq: settings.zmq.clone(),
            nats: settings.nats.clone(),
        },
    );
    let mut reach = Reach::new(location.clone(), w.safety_poll);
    let connections = feed.connections();
    if let Some(connections) = &connections {
        reach = reach.on_reconnect(connections.clone());
    }
    let opts = Options {
        node: settings.node.to_string(),
        batch_max: w.batch_max,
        state,
        trust,
        safety_poll: w.safety_poll,
    };
    let (mut daemon, handle) =
        Daemon::new(feed, opts, policy_settings(&settings), backend).map_err(|e| anyhow!(e))?;
    forward_signals(handle)?;
    let spool = start_flusher(&settings, &location)?;
    if metrics_file.is_some() || served.is_some() {
        let mut metrics =
            WatchMetrics::new(metrics_file, served, Some(spool)).map_err(|e| anyhow!(e))?;
        if let Some(connections) = connections {
            metrics.count_connections(connections);
        }
        daemon.export_metrics(metrics);
    }
    daemon.protect_transport(reach);
    let config = config.clone();
    daemon.run(move || reload_policy(&config, &args));
    Ok(())
}

/// The trusted keys and what they require, from `[trust]`.
fn trust_policy(settings: &Settings, origin: &Path) -> Result<TrustPolicy> {
    settings
        .trust_policy(origin)
        .map_err(|e| Failure::Usage(e.to_string()))
}

/// The policy from the settings, with this host's addresses as they are now.
fn policy_settings(settings: &Settings) -> PolicySettings {
    let w = &settings.watch;
    let self_addresses = match host::local_addresses() {
        Ok(addrs) => addrs,
        Err(e) => {
            log::warn!("cannot list this host's addresses ({e}); ignoreself covers none");
            Vec::new()
        }
    };
    PolicySettings {
        node: settings.node.clone(),
        ignoreip: w.ignoreip.clone(),
        ignoreself: w.ignoreself,
        self_addresses,
        default_bantime: w.bantime,
        max_bantime: w.max_bantime,
        min_nodes: w.min_nodes,
        findtime: w.findtime,
        max_prefix_v4: w.max_prefix_v4,
        max_prefix_v6: w.max_prefix_v6,
        max_bans_per_node_per_minute: settings.trust.max_bans_per_node_per_minute,
        breaker_cooldown: settings.trust.breaker_cooldown,
    }
}

/// SIGHUP: the configuration file again, with the same flags over it.
fn reload_policy(config: &Option<PathBuf>, args: &WatchArgs) -> Option<Reloaded> {
    let settings =
        load_settings(config).and_then(|mut s| apply_watch_args(&mut s, args).map(|()| s));
    let reloaded = settings.and_then(|s| {
        Ok(Reloaded {
            policy: policy_settings(&s),
            trust: trust_policy(&s, &config_path(config))?,
        })
    });
    match reloaded {
        Ok(reloaded) => Some(reloaded),
        Err(e) => {
            log::error!("{}", e.message());
            None
        }
    }
}

/// Starts delivering the spool; returns it, for the metrics.
fn start_flusher(settings: &Settings, location: &LogLocation) -> Result<Spool> {
    let (spool, transport) = open_spool_and_transport(settings, location)?;
    flusher::spawn(
        spool.clone(),
        transport,
        settings.watch.flush_interval,
        settings.append.deadline(),
    );
    Ok(spool)
}

fn open_backend(settings: &Settings, origin: &Path) -> Result<Box<dyn Backend>> {
    settings
        .watch_backend(origin)
        .map_err(|e| Failure::Usage(e.to_string()))?
        .ok_or_else(|| {
            Failure::Usage("no backend given: pass --backend (nftables, ipset, fail2ban, command, log) or set `backend` in [watch]".into())
        })
}

pub fn cleanup(args: CleanupArgs, config: &Option<PathBuf>, mut settings: Settings) -> Result<()> {
    if let Some(b) = args.backend {
        settings.watch.backend = Some(b);
    }
    // A running watcher sets a missing table up again within its safety
    // poll (firewall drift), so a cleanup under it would be undone.
    let dir = &settings.watch.state_dir;
    if state::is_held(dir).unwrap_or(false) {
        return Err(Failure::Usage(format!(
            "a watcher is running with state directory {} and would set the \
             backend up again: stop it first",
            dir.display()
        )));
    }
    let mut backend = open_backend(&settings, &config_path(config))?;
    backend
        .cleanup()
        .map_err(|e| anyhow!("cleanup of {} failed: {e}", backend.name()))?;
    log::info!("removed what the {} backend had set up", backend.name());
    Ok(())
}

/// `banshare status --json`: the watcher's own status (its lag included,
/// which it measures through its own feed: see `Status::lag_bytes`) plus
/// what is measured here now.
#[derive(Debug, Serialize)]
struct Report {
    running: bool,
    /// Running, and its status is fresh: it works. `false` with `running`
    /// for a watcher stopped or stuck (see `Liveness::Silent`).
    responding: bool,
    /// Seconds since the watcher last showed life, when it is silent.
    #[serde(skip_serializing_if = "Option::is_none")]
    silent_secs: Option<u64>,
    spool_records: Option<usize>,
    #[serde(flatten)]
    status: Status,
}

/// Exit status of `status` for a watcher that holds its state directory
/// but does not answer.
const NOT_RESPONDING: u8 = 4;

/// `banshare status`: exit 0 while the watcher runs, 3 when it does not
/// (its last status is printed all the same) or has never run with this
/// state directory, 4 when it holds its state directory but has written
/// no status for longer than the silence limit (stopped or stuck). Reads
/// only: creates neither the state directory nor the spool.
pub fn status(args: StatusArgs, settings: Settings) -> Result<()> {
    let dir = args.state_dir.unwrap_or(settings.watch.state_dir.clone());
    let limit = silence_limit(settings.watch.safety_poll, settings.backend.timeout);
    let liveness = liveness(&dir, limit, chrono::Utc::now())
        .with_context(|| format!("cannot read the watcher's state in {}", dir.display()))?;
    let (status, running, silent) = match liveness {
        Liveness::NeverRan => {
            return Err(Failure::NotRunning(format!(
                "no watcher has run with state directory {} yet",
                dir.display()
            )));
        }
        Liveness::Stopped(status) => (status, false, None),
        Liveness::Silent(status, silent) => (status, true, Some(silent)),
        Liveness::Running(status) => (status, true, None),
    };
    let spool_dir = args.spool_dir.unwrap_or(settings.spool_dir);
    // No spool folder: nothing was ever spooled, so nothing waits.
    let spool_records = match spool_dir.is_dir() {
        true => Spool::open(&spool_dir).ok().and_then(|s| s.depth().ok()),
        false => Some(0),
    };
    let report = Report {
        running,
        responding: running && silent.is_none(),
        silent_secs: silent.map(|s| s.as_secs()),
        spool_records,
        status: *status,
    };
    let text = if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| anyhow!(e))? + "\n"
    } else {
        status_text(&report)
    };
    write_stdout(&text)?;
    if !report.running {
        return Err(Failure::NotRunning(format!(
            "the watcher of {} is not running",
            dir.display()
        )));
    }
    if let Some(silent) = silent {
        return Err(Failure::Unhealthy(
            NOT_RESPONDING,
            format!(
                "the watcher of {} (pid {}) is not responding: no sign of life for {} (over {})",
                dir.display(),
                report.status.pid,
                humantime::format_duration(Duration::from_secs(silent.as_secs())),
                humantime::format_duration(limit)
            ),
        ));
    }
    Ok(())
}

/// The report as `status` prints it without `--json`.
fn status_text(r: &Report) -> String {
    let mut out = String::new();
    write_status(&mut out, r).expect("writing to a String never fails");
    out
}

/// What the cursor counts for the log named `log`: bytes into a file, or
/// the number of the last record from a publisher, which numbers them.
fn cursor_unit(log: &str) -> &'static str {
    match LogLocation::parse(log) {
        #[cfg(feature = "zmq")]
        Ok(LogLocation::Zmq(_)) => "record",
        #[cfg(feature = "nats")]
        Ok(LogLocation::Nats(_)) => "record",
        _ => "byte",
    }
}

fn write_status(out: &mut String, r: &Report) -> std::fmt::Result {
    use std::fmt::Write;
    let s = &r.status;
    let state = match (r.running, r.silent_secs) {
        (true, None) => format!("running (pid {})", s.pid),
        (true, Some(secs)) => format!(
            "NOT RESPONDING (pid {} holds the state directory, no sign of life for {})",
            s.pid,
            humantime::format_duration(Duration::from_secs(secs))
        ),
        (false, _) => "not running".into(),
    };
    writeln!(
        out,
        "watcher:     {state}, node {}, backend {}",
        s.node, s.backend
    )?;
    // No error and not present: the watcher has not tried yet (it holds
    // from its start, see HELD below).
    let readable = match (s.log_present, &s.last_error) {
        (true, _) => "readable".to_string(),
        (false, Some(e)) => format!("NOT readable: {e}"),
        (false, None) => "not read yet".to_string(),
    };
    writeln!(out, "log:         {} ({readable})", s.log)?;
    writeln!(out, "follow mode: {}", s.mode)?;
    let lag = match (s.lag_records, s.lag_bytes) {
        (Some(rec), Some(b)) => format!("{rec} records, {b} bytes behind"),
        (None, Some(b)) => format!("{b} bytes behind (too many to count the records)"),
        _ => "unknown (the watcher could not look at the log)".into(),
    };
    writeln!(
        out,
        "cursor:      {} {}; lag {lag}",
        cursor_unit(&s.log),
        s.offset
    )?;
    if let Some(why) = &s.held {
        writeln!(
            out,
            "HELD:        applying nothing until the cursor can be saved: {why}"
        )?;
    }
    if let Some(why) = &s.paused {
        writeln!(
            out,
            "PAUSED:      applying nothing until `banshare resume` (since {why})"
        )?;
    }
    if !s.allowlist.is_empty() {
        writeln!(out, "allowlist:   {}", s.allowlist.join(", "))?;
    }
    for (node, lift) in &s.lifted {
        writeln!(
            out,
            "lifted:      node {node}'s bans up to {} ({} lifted)",
            lift.before
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            lift.bans
        )?;
    }
    let last = s.last_record_ts.map_or("none yet".into(), |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    writeln!(out, "last record: {last}")?;
    writeln!(
        out,
        "bans:        {} active, {} applied, {} backend errors",
        s.active_bans, s.applied, s.backend_errors
    )?;
    if !s.transport.is_empty() {
        writeln!(out, "never bans:  {} (the log's transport)", s.transport)?;
    }
    for (node, until) in &s.tripped_nodes {
        writeln!(
            out,
            "BREAKER:     {node} is flooding; its records are refused until {}",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )?;
    }
    writeln!(out, "rejected:    {}", counts(&s.rejected))?;
    writeln!(out, "skipped:     {}", counts(&s.skipped))?;
    writeln!(out, "adjusted:    {}", counts(&s.adjusted))?;
    let spool = r
        .spool_records
        .map_or("unknown".into(), |n| format!("{n} records waiting"));
    writeln!(out, "spool:       {spool}")?;
    let updated = s.updated.map_or("never".into(), |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    writeln!(out, "updated:     {updated}")
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    let total: u64 = map.values().sum();
    let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!("{total} ({})", parts.join(", "))
}
