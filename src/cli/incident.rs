//! `banshare pause`, `resume` and `lift`: incident controls on this node,
//! through files in the watcher's state directory (see
//! [`banshare::watch::incident`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use banshare::config::Settings;
use banshare::state::StateDir;
use banshare::watch::incident;
use banshare::watch::state::WatcherFiles;
use log::{info, warn};

use super::args::{LiftArgs, PauseArgs, StateDirArgs};
use super::failure::Result;

/// How long `pause` waits for a running watcher to say it paused.
const PAUSE_WAIT: Duration = Duration::from_secs(10);
/// How long `lift` waits for a running watcher to take its request.
const LIFT_WAIT: Duration = Duration::from_secs(30);

pub fn pause(args: PauseArgs, settings: Settings) -> Result<()> {
    let dir = state_dir(&args.state, &settings)?;
    incident::pause(&dir, &args.reason)
        .with_context(|| format!("cannot write the pause flag in {}", dir.display()))?;
    if !woken(&dir, "starts paused")? {
        return Ok(());
    }
    let acknowledged = wait_for(PAUSE_WAIT, || {
        StateDir::open(&dir)
            .ok()
            .and_then(|s| s.load_status().ok().flatten())
            .is_some_and(|s| s.paused.is_some())
    });
    match acknowledged {
        true => info!("paused: the watcher applies nothing until `banshare resume`"),
        false => warn!(
            "paused, but the watcher has not said so within {}s (busy applying a batch, or \
             holding?); see `banshare status`",
            PAUSE_WAIT.as_secs()
        ),
    }
    Ok(())
}

pub fn resume(args: StateDirArgs, settings: Settings) -> Result<()> {
    let dir = state_dir(&args, &settings)?;
    let was = incident::resume(&dir)
        .with_context(|| format!("cannot remove the pause flag in {}", dir.display()))?;
    if was {
        // An older watcher never paused: nothing to tell it.
        incident::wake(&dir);
    }
    match was {
        true => info!("resumed: the watcher catches up from its cursor"),
        false => info!("not paused"),
    }
    Ok(())
}

pub fn lift(args: LiftArgs, settings: Settings) -> Result<()> {
    let dir = state_dir(&args.state, &settings)?;
    let request = incident::request_lift(&dir, &args.node, chrono::Utc::now())
        .with_context(|| format!("cannot write a lift request in {}", dir.display()))?;
    if !woken(
        &dir,
        &format!("lifts node {}'s bans when it starts", args.node),
    )? {
        return Ok(());
    }
    if !wait_for(LIFT_WAIT, || !request.exists()) {
        warn!(
            "the watcher has not taken the request {} within {}s; it will (see `banshare status`)",
            request.display(),
            LIFT_WAIT.as_secs()
        );
        return Ok(());
    }
    let lifted = StateDir::open(&dir)
        .ok()
        .and_then(|s| s.load_status().ok().flatten())
        .and_then(|s| s.lifted.get(args.node.as_str()).map(|r| r.bans));
    match lifted {
        Some(n) => info!("lifted {n} ban(s) of node {} on this node", args.node),
        None => info!("lifted the bans of node {} on this node", args.node),
    }
    Ok(())
}

/// Wakes the watcher of `dir`; whether it runs. A watcher of an older
/// release, which would not act on the request, is an error, so that an
/// operator in an incident is never told a control took effect when it
/// did not.
fn woken(dir: &Path, later: &str) -> Result<bool> {
    match incident::wake(dir) {
        incident::Woken::Yes => Ok(true),
        incident::Woken::NotRunning => {
            warn!(
                "no watcher runs with {} now: the next one {later}",
                dir.display()
            );
            Ok(false)
        }
        incident::Woken::TooOld => Err(super::failure::Failure::Runtime(anyhow::anyhow!(
            "the watcher running with {} is of an older release that ignores this; restart it \
             (the new release {later})",
            dir.display()
        ))),
    }
}

/// The state directory, which must exist: a watcher made it.
fn state_dir(args: &StateDirArgs, settings: &Settings) -> Result<PathBuf> {
    let dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| settings.watch.state_dir.clone());
    if !Path::new(&dir).is_dir() {
        return Err(super::failure::Failure::Usage(format!(
            "{} is no watcher's state directory (no watcher has run with it)",
            dir.display()
        )));
    }
    Ok(dir)
}

fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
