//! `banshare systemd-dropin`: what the packaged units cannot know, written
//! from the configuration into a drop-in beside them: the share the log is
//! on (a mount to wait for and a folder to write), folders configured
//! outside /var/lib/banshare, and root for a backend that needs it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use banshare::backend::BackendKind;
use banshare::config::Settings;
use banshare::transport::LogLocation;

use super::args::{SystemdDropinArgs, UnitName, UnitUser};
use super::failure::{Result, write_stdout};

/// Every unit may write here already (packaging/*.service).
const PACKAGED_STATE: &str = "/var/lib/banshare";

/// fail2ban's banshare action, relative to fail2ban's folder.
const ACTION: &str = "action.d/banshare.conf";

/// The drop-in's file name inside `<unit>.service.d/`.
const DROPIN_FILE: &str = "banshare-dropin.conf";

pub fn dropin(args: SystemdDropinArgs, settings: Settings) -> Result<()> {
    let root = root_reason(&args, &settings);
    if let Some(reason) = root {
        log::info!("{} runs as root: {reason}", unit_name(args.unit));
    }
    let text = render(args.unit, root, &settings);
    if args.print {
        return write_stdout(&text);
    }
    let dir = args.dir.join(format!("{}.service.d", unit_name(args.unit)));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(DROPIN_FILE);
    banshare::durable::write_atomic(&path, text.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    log::info!(
        "wrote {}; run `systemctl daemon-reload` to apply it",
        path.display()
    );
    Ok(())
}

pub fn unit_name(unit: UnitName) -> &'static str {
    match unit {
        UnitName::Watch => "banshare-watch",
        UnitName::Monitor => "banshare-monitor",
        UnitName::Publisher => "banshare-publisher",
        UnitName::Compact => "banshare-compact",
    }
}

/// Why a unit must run as root, or `None` when the banshare user will do.
fn root_reason(args: &SystemdDropinArgs, settings: &Settings) -> Option<&'static str> {
    let spool_user = matches!(args.unit, UnitName::Watch | UnitName::Monitor);
    match args.user {
        UnitUser::Root => Some("--user root"),
        UnitUser::Banshare => None,
        // fail2ban's socket is root's alone (/run/fail2ban is mode 0700).
        UnitUser::Auto if args.unit == UnitName::Watch && uses_fail2ban(settings) => {
            Some("the fail2ban backend: fail2ban's socket is root's")
        }
        // fail2ban runs its actions as root: what `banshare ban` spools
        // there is root's, and this unit delivers the spool.
        UnitUser::Auto if spool_user && args.fail2ban_dir.join(ACTION).exists() => Some(
            "fail2ban's banshare action is installed: fail2ban runs it as root, so the spool is root's",
        ),
        UnitUser::Auto => None,
    }
}

/// Whether the watcher's backend is fail2ban.
fn uses_fail2ban(settings: &Settings) -> bool {
    settings
        .watch
        .backend
        .as_deref()
        .is_some_and(|b| matches!(b.parse(), Ok(BackendKind::Fail2ban)))
}

/// The drop-in's text for `unit`.
fn render(unit: UnitName, root: Option<&str>, settings: &Settings) -> String {
    let mut text = format!(
        "# Written by `banshare systemd-dropin --unit {}` from the configuration.\n\
         # Write it again after moving the log, the spool or a state folder.\n",
        unit_name(unit).trim_start_matches("banshare-")
    );
    let share = share_folder(unit, settings);
    let _ = writeln!(text, "\n[Unit]");
    match &share {
        Some(folder) => {
            let _ = writeln!(text, "RequiresMountsFor={}", folder.display());
        }
        None => {
            let _ = writeln!(
                text,
                "# The log is reached over the network: no mount to wait for."
            );
        }
    }
    if unit == UnitName::Watch && uses_fail2ban(settings) {
        // Its backend talks to fail2ban's socket: at boot, fail2ban may
        // take minutes reading its logs before the socket is there.
        let _ = writeln!(text, "After=fail2ban.service");
    }
    let _ = writeln!(text, "\n[Service]");
    for folder in writable_folders(unit, settings, share.as_deref()) {
        let _ = writeln!(text, "ReadWritePaths={}", folder.display());
    }
    if let Some(folder) = metrics_folder(unit, settings) {
        // "-": node_exporter's folder may come later; the unit still starts.
        let _ = writeln!(text, "ReadWritePaths=-{}", folder.display());
    }
    if let Some(reason) = root {
        // Compaction gives the new log the old one's owner and mode, which
        // only CHOWN and FOWNER allow for another user's log.
        let chown = if unit == UnitName::Compact {
            " CAP_CHOWN CAP_FOWNER"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "# Root, for {reason};\n\
             # still bounded: DAC_OVERRIDE reaches the banshare user's files.\n\
             User=root\n\
             Group=root\n\
             CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH{chown}"
        );
    }
    text
}

/// The folder of a log on a path, which every unit but the publisher
/// writes: the lock file beside the log, appends (the watcher delivers
/// the spool), and compaction's rename. `None` over SFTP or ZeroMQ.
fn share_folder(unit: UnitName, settings: &Settings) -> Option<PathBuf> {
    if unit == UnitName::Publisher {
        return None;
    }
    match settings.log.as_ref()? {
        LogLocation::File(path) => Some(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned(),
        ),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The folder of the unit's metrics file ([watch], [monitor] or
/// [publisher] metrics_file), which the packaged unit cannot know: it is
/// replaced by a rename there, so the folder must be writable.
fn metrics_folder(unit: UnitName, settings: &Settings) -> Option<PathBuf> {
    let file = match unit {
        UnitName::Watch => settings.watch.metrics_file.as_ref(),
        UnitName::Monitor => settings.monitor.metrics_file.as_ref(),
        UnitName::Publisher => settings.publisher.metrics_file.as_ref(),
        UnitName::Compact => None,
    }?;
    let folder = file.parent()?;
    (!folder.starts_with(PACKAGED_STATE)).then(|| folder.to_owned())
}

/// The share, and the folders this unit writes that the packaged unit does
/// not already make writable.
fn writable_folders(unit: UnitName, settings: &Settings, share: Option<&Path>) -> Vec<PathBuf> {
    let own: Vec<&Path> = match unit {
        UnitName::Watch => vec![&settings.spool_dir, &settings.watch.state_dir],
        UnitName::Monitor => vec![&settings.spool_dir, &settings.monitor.state_dir],
        UnitName::Publisher => vec![&settings.publisher.data_dir],
        UnitName::Compact => vec![&settings.spool_dir, &settings.publisher.data_dir],
    };
    share
        .into_iter()
        .chain(own.into_iter().filter(|d| !d.starts_with(PACKAGED_STATE)))
        .map(Path::to_owned)
        .collect()
}
