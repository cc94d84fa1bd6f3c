//! `banshare monitor` and `banshare fail2ban install`.

use std::fs;
use std::path::Path;

use anyhow::{Context, anyhow};
use banshare::config::Settings;
use banshare::follow::mode;
use banshare::monitor::{Monitor, Options};
use banshare::outbox::spool::Spool;
use banshare::transport::LogLocation;

use super::args::{InstallArgs, MonitorArgs};
use super::failure::Result;
use super::setup::{
    acquire_state, apply_log_args, check_metrics_file, forward_signals, required_log, writer,
};

pub fn monitor(args: MonitorArgs, mut settings: Settings) -> Result<()> {
    apply_log_args(&mut settings, &args.log)?;
    if let Some(path) = args.fail2ban_log {
        settings.monitor.fail2ban_log = path;
    }
    if let Some(dir) = args.state_dir {
        settings.monitor.state_dir = dir;
    }
    if let Some(path) = args.metrics_file {
        settings.monitor.metrics_file = Some(path);
    }
    let location: LogLocation = required_log(&settings)?;
    let m = &settings.monitor;
    // Before the state directory is created: a refused key (exit 2)
    // writes nothing.
    let writer = writer(&settings)?;
    check_metrics_file(m.metrics_file.as_deref(), "monitor.metrics_file")?;
    let state = acquire_state(&m.state_dir)?;
    let spool = Spool::open(&settings.spool_dir).context("cannot open the spool")?;
    let dir = m
        .fail2ban_log
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let w = &settings.watch;
    let opts = Options {
        fail2ban_log: m.fail2ban_log.clone(),
        mode: mode::resolve(w.follow, dir, w.poll_interval, w.safety_poll),
        state,
        exclude_jails: m.exclude_jails.clone(),
        bantime: m.bantime,
        writer,
        log: location,
        spool,
        lock: settings.append.lock,
        sftp: settings.sftp.clone(),
        zmq: settings.zmq.clone(),
        nats: settings.nats.clone(),
        deadline: settings.append.deadline(),
        batch_max: w.batch_max,
        metrics_file: m.metrics_file.clone(),
    };
    let (monitor, handle) = Monitor::new(opts).context("cannot load the monitor's cursor")?;
    forward_signals(handle)?;
    monitor.run();
    Ok(())
}

/// The files `install` writes, embedded at build time for a binary that
/// has no packaged copies beside it.
const FILES: [(&str, &str); 3] = [
    (
        "action.d/banshare.conf",
        include_str!("../../fail2ban/action.d/banshare.conf"),
    ),
    (
        "filter.d/banshare.conf",
        include_str!("../../fail2ban/filter.d/banshare.conf"),
    ),
    (
        "jail.d/banshare.local.example",
        include_str!("../../fail2ban/jail.d/banshare.local.example"),
    ),
];

/// What earlier releases installed as live jails: fail2ban reads it after
/// jail.local, so it overrides the admin's own jail settings.
const OLD_LIVE_JAILS: &str = "jail.d/banshare.local";

pub fn install(args: InstallArgs) -> Result<()> {
    if !args.dir.is_dir() {
        return Err(anyhow!(
            "{} is not a folder: is fail2ban installed? (--dir names another)",
            args.dir.display()
        )
        .into());
    }
    let files = source_files(&args.from)?;
    // Every file is checked before any is written: a refused install
    // leaves the folder as it was, not half upgraded.
    if !args.force {
        for (name, content) in &files {
            refuse_other_content(&args.dir.join(name), content)?;
        }
    }
    for (name, content) in &files {
        install_file(&args.dir.join(name), content)?;
    }
    let old = args.dir.join(OLD_LIVE_JAILS);
    if old.exists() {
        // Not removed: the admin may have made it theirs.
        log::warn!(
            "{} (from an earlier install) is read by fail2ban after \
             jail.local and overrides the jails it names; compare it with \
             banshare.local.example and remove it unless you made it yours",
            old.display()
        );
    }
    log::info!(
        "no jail was changed. To share a jail's bans, add `banshare` to its action \
         list where you configured it (see jail.d/banshare.local.example), then run \
         `fail2ban-client reload`"
    );
    Ok(())
}

/// The files to install: the packaged copies in `from` (the package's
/// action calls the binary where the package puts it), or, when there is
/// no such folder, the copies built in.
fn source_files(from: &Path) -> Result<Vec<(&'static str, String)>> {
    if !from.is_dir() {
        log::debug!(
            "{} is missing: installing the built-in copies",
            from.display()
        );
        return Ok(FILES
            .map(|(name, content)| (name, content.to_owned()))
            .to_vec());
    }
    FILES
        .iter()
        .map(|(name, _)| {
            let path = from.join(name);
            let content = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {} (nothing was written)", path.display()))?;
            Ok((*name, content))
        })
        .collect()
}

/// Refuses to replace `path` if it holds something other than `content`.
fn refuse_other_content(path: &Path, content: &str) -> Result<()> {
    match fs::read_to_string(path) {
        Ok(existing) if existing != content => Err(anyhow!(
            "{} exists with other content; --force replaces it (nothing was written)",
            path.display()
        )
        .into()),
        _ => Ok(()),
    }
}

fn install_file(path: &Path, content: &str) -> Result<()> {
    if fs::read_to_string(path).is_ok_and(|existing| existing == content) {
        log::info!("{} is up to date", path.display());
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    banshare::durable::write_atomic(path, content.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    log::info!("wrote {}", path.display());
    Ok(())
}
