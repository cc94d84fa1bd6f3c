//! `banshare publisher`: the ZeroMQ publisher daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use banshare::config::Settings;
use banshare::publisher::submit::Rules;
use banshare::publisher::{CurveServer, Listen, Publisher};
use banshare::state::{StateDir, StateError};
use banshare::transport::zmq::curve;
use banshare::watch::policy::retention::RetentionRules;

use super::args::{CurveKeygenArgs, PublisherArgs};
use super::failure::{Failure, Result};
use super::setup::{check_metrics_file, config_path, state_failure, writer};

pub fn publisher(
    args: PublisherArgs,
    config: &Option<PathBuf>,
    mut settings: Settings,
) -> Result<()> {
    apply_args(&mut settings, args)?;
    let origin = config_path(config);
    // Everything that can be refused is checked before the data
    // directory is created: a usage error (exit 2) writes nothing.
    let legacy = settings
        .legacy_policy(&origin)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let trust = settings
        .trust_policy(&origin)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let rules = Rules {
        legacy,
        writer: writer(&settings)?,
        bantime: settings.publisher.bantime,
        trust,
    };
    let p = &settings.publisher;
    let listen = Listen {
        address: p.bind.0,
        submit_port: p.submit_port,
        catch_up_port: p.catch_up_port,
        legacy_port: p.legacy_broadcast().then_some(p.legacy_port),
        feed_port: p.feed_port,
        legacy_submit_port: p.legacy_submit_port,
    };
    let curve = curve_server(&settings, &origin)?;
    check_metrics_file(p.metrics_file.as_deref(), "publisher.metrics_file")?;
    let data_dir = acquire_data_dir(&p.data_dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    // No trusted keys: the publisher stores signed records it cannot
    // verify for the watchers to judge, and so keeps them when compacting.
    let retention = RetentionRules::new(settings.watch.max_bantime, settings.watch.findtime);
    let mut publisher = Publisher::open(data_dir, &listen, rules, retention, curve)
        .with_context(|| format!("cannot start the publisher in {}", p.data_dir.display()))?;
    if let Some(path) = &p.metrics_file {
        publisher.export_metrics(path.clone());
    }
    publisher.run(&stop);
    Ok(())
}

/// The publisher's data directory, locked for this process; refused, naming
/// the publisher, when another one holds it.
fn acquire_data_dir(dir: &Path) -> Result<StateDir> {
    StateDir::acquire(dir).map_err(|e| match e {
        StateError::Busy { holder, .. } => Failure::Usage(format!(
            "data directory {} is in use by another banshare publisher{holder}; give each \
             publisher a data directory of its own",
            dir.display()
        )),
        // The watchers' errors and exit codes for the rest.
        e => state_failure(dir, e),
    })
}

/// The CURVE key and allowed clients, read before anything is written.
fn curve_server(settings: &Settings, origin: &Path) -> Result<Option<CurveServer>> {
    let keys = settings
        .curve_server_keys(origin)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(keys.map(|(secret, clients)| CurveServer { secret, clients }))
}

/// The flags over the configuration file's values.
fn apply_args(settings: &mut Settings, args: PublisherArgs) -> Result<()> {
    if let Some(node) = args.node {
        settings.node = node;
    }
    if let Some(key) = args.key {
        settings.key = Some(key);
    }
    let p = &mut settings.publisher;
    let set = |value: Option<u16>, port: &mut u16| {
        if let Some(v) = value {
            *port = v;
        }
    };
    set(args.submit_port, &mut p.submit_port);
    set(args.catch_up_port, &mut p.catch_up_port);
    set(args.legacy_port, &mut p.legacy_port);
    set(args.feed_port, &mut p.feed_port);
    if let Some(port) = args.legacy_submit_port {
        p.legacy_submit_port = Some(port);
    }
    if let Some(dir) = args.data_dir {
        p.data_dir = dir;
    }
    if let Some(bind) = args.bind {
        p.bind = bind;
    }
    if let Some(mode) = args.legacy {
        p.legacy = mode;
    }
    if let Some(file) = args.token_file {
        p.token_file = Some(file);
    }
    if let Some(file) = args.curve_key {
        p.curve_key_file = Some(file);
    }
    if let Some(file) = args.curve_clients {
        p.curve_clients_file = Some(file);
    }
    if let Some(file) = args.metrics_file {
        p.metrics_file = Some(file);
    }
    settings
        .check_consistency()
        .map_err(|(key, message)| Failure::Usage(format!("{key}: {message}")))
}

/// `banshare curve-keygen`: a new CURVE key pair; prints the public key.
pub fn curve_keygen(args: CurveKeygenArgs) -> Result<()> {
    if args.out.exists() {
        return Err(Failure::Usage(format!(
            "{} exists: a CURVE key is not replaced by accident; remove it first",
            args.out.display()
        )));
    }
    let public = curve::write_key_pair(&args.out).map_err(|e| Failure::Runtime(e.into()))?;
    super::failure::write_stdout(&format!("{}\n", curve::encode_key(&public)))
}
