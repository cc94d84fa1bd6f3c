//! What several commands set up the same way: the configuration with the
//! flags over it, the log, the spool and transport, the writer's identity,
//! a daemon's state directory and its signals.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use banshare::config::{self, Settings, check_metrics_listen};
use banshare::follow::{Handle, Msg};
use banshare::outbox::append::Writer;
use banshare::outbox::spool::Spool;
use banshare::state::{StateDir, StateError};
use banshare::transport::lock::Owner;
use banshare::transport::{self, LogLocation, Transport};

use super::args::{LogArgs, WatchArgs};
use super::failure::{Failure, Result};

pub fn load_settings(path: &Option<PathBuf>) -> Result<Settings> {
    Settings::load(&config_path(path), path.is_some()).map_err(|e| Failure::Usage(e.to_string()))
}

/// The configuration file: `--config`, or the default one.
pub fn config_path(path: &Option<PathBuf>) -> PathBuf {
    path.clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
}

/// Applies the flags over the file's settings and re-checks the rules that
/// tie values together.
pub fn apply_log_args(settings: &mut Settings, args: &LogArgs) -> Result<()> {
    if let Some(log) = &args.log {
        settings.log = Some(log.clone());
    }
    if let Some(node) = &args.node {
        settings.node = node.clone();
    }
    if let Some(dir) = &args.spool_dir {
        settings.spool_dir = dir.clone();
    }
    if let Some(t) = args.lock_timeout {
        settings.append.lock.timeout = t;
    }
    if let Some(t) = args.stale_lock {
        settings.append.lock.stale_after = t;
    }
    if let Some(key) = &args.key {
        settings.key = Some(key.clone());
    }
    if let Some(key) = &args.identity {
        settings.sftp.identity = Some(key.clone());
    }
    if let Some(file) = &args.known_hosts {
        settings.sftp.known_hosts = file.clone();
    }
    settings.sftp.accept_new_host_key |= args.accept_new_host_key;
    settings
        .check_consistency()
        .map_err(|(key, message)| Failure::Usage(format!("{key}: {message}")))
}

/// The flags of `watch` over the settings.
pub fn apply_watch_args(settings: &mut Settings, args: &WatchArgs) -> Result<()> {
    apply_log_args(settings, &args.log)?;
    let w = &mut settings.watch;
    if let Some(b) = &args.backend {
        w.backend = Some(b.clone());
    }
    if let Some(d) = &args.state_dir {
        w.state_dir = d.clone();
    }
    if let Some(f) = args.follow {
        w.follow = f;
    }
    if let Some(p) = args.poll_interval {
        w.poll_interval = p;
    }
    if let Some(m) = &args.metrics_file {
        w.metrics_file = Some(m.clone());
    }
    if let Some(addr) = args.metrics_listen {
        w.metrics_listen = Some(addr);
    }
    w.metrics_listen_any |= args.metrics_listen_any;
    if let Some(addr) = w.metrics_listen {
        check_metrics_listen(addr, w.metrics_listen_any)
            .map_err(|m| Failure::Usage(format!("--metrics-listen: {m}")))?;
    }
    Ok(())
}

/// Who writes, with this node's signing key if one is configured.
pub fn writer(settings: &Settings) -> Result<Writer> {
    let key = match &settings.key {
        Some(path) => {
            let key = banshare::trust::load_signing_key(path)
                .map_err(|e| Failure::Usage(format!("signing key: {e}")))?;
            Some(std::sync::Arc::new(key))
        }
        None => None,
    };
    Ok(Writer {
        node: settings.node.clone(),
        tag: settings.append.tag.clone(),
        pid: std::process::id(),
        key,
    })
}

pub fn required_log(settings: &Settings) -> Result<LogLocation> {
    settings.log.clone().ok_or_else(|| {
        Failure::Usage(
            "no log given: pass --log PATH or set `log` in [common] of the config".into(),
        )
    })
}

pub fn open_spool_and_transport(
    settings: &Settings,
    location: &LogLocation,
) -> Result<(Spool, Box<dyn Transport>)> {
    let spool = open_spool(settings)?;
    let transport = transport::open(location, &writer_settings(settings, &spool));
    Ok((spool, transport))
}

/// How this host writes to the log, from the settings, its own lock in
/// `spool`.
pub fn writer_settings(settings: &Settings, spool: &Spool) -> transport::WriterSettings {
    transport::WriterSettings {
        local_lock: spool.append_lock_path(),
        owner: owner(settings),
        timings: settings.append.lock,
        sftp: settings.sftp.clone(),
        zmq: settings.zmq.clone(),
        nats: settings.nats.clone(),
    }
}

pub fn open_spool(settings: &Settings) -> Result<Spool> {
    Ok(Spool::open(&settings.spool_dir).context("cannot open the spool")?)
}

/// This process as the holder of the log's locks.
pub fn owner(settings: &Settings) -> Owner {
    Owner {
        node: settings.node.to_string(),
        pid: std::process::id(),
    }
}

/// The state directory of a watcher or monitor, locked for this process.
/// Another daemon using it, or files of a newer banshare, exit 2.
pub fn acquire_state(dir: &Path) -> Result<StateDir> {
    StateDir::acquire(dir).map_err(|e| state_failure(dir, e))
}

/// How a state directory that cannot be used ends the command.
pub fn state_failure(dir: &Path, e: StateError) -> Failure {
    match e {
        StateError::Busy { .. } | StateError::FutureVersion { .. } => Failure::Usage(e.to_string()),
        StateError::Io { .. } => Failure::Runtime(
            anyhow!(e).context(format!("cannot open the state directory {}", dir.display())),
        ),
    }
}

/// Turns SIGTERM and SIGINT into Stop, SIGHUP into Reload, and SIGUSR1
/// (sent by `banshare pause`, `resume` and `lift`) into a look at the state
/// directory and the log, for `handle`.
pub fn forward_signals(handle: Handle) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("banshare-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                handle.send(match signal {
                    SIGHUP => Msg::Reload,
                    SIGUSR1 => Msg::Changed,
                    _ => Msg::Stop,
                });
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Refuses a metrics file whose folder does not exist (`key` names its
/// setting): the folder is node_exporter's, not banshare's to create.
pub fn check_metrics_file(path: Option<&Path>, key: &str) -> Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let folder = config::metrics_folder(path);
    if !folder.is_dir() {
        return Err(Failure::Usage(format!(
            "the metrics file's folder {} does not exist ({key}, --metrics-file)",
            folder.display()
        )));
    }
    Ok(())
}
