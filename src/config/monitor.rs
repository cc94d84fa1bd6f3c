//! The `[monitor]` section: `banshare monitor` following fail2ban.log.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Checker, ConfigError, DurationText};
use crate::record::{BanTime, Jail};

pub const DEFAULT_FAIL2BAN_LOG: &str = "/var/log/fail2ban.log";
pub const DEFAULT_MONITOR_STATE_DIR: &str = "/var/lib/banshare/monitor";

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMonitor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail2ban_log: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_jails: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bantime: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_file: Option<PathBuf>,
}

/// The checked `[monitor]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSettings {
    pub fail2ban_log: PathBuf,
    pub state_dir: PathBuf,
    /// Bans of these jails are not shared (default: `banshare`).
    pub exclude_jails: Vec<Jail>,
    /// Carried by the records; `None`: the watchers' default applies.
    pub bantime: Option<BanTime>,
    /// Where the metrics for Prometheus are written, if anywhere.
    pub metrics_file: Option<PathBuf>,
}

impl MonitorSettings {
    pub(super) fn check(raw: &RawMonitor, check: &Checker) -> Result<MonitorSettings, ConfigError> {
        Ok(MonitorSettings {
            fail2ban_log: raw
                .fail2ban_log
                .clone()
                .unwrap_or_else(|| DEFAULT_FAIL2BAN_LOG.into()),
            state_dir: raw
                .state_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_MONITOR_STATE_DIR.into()),
            exclude_jails: match &raw.exclude_jails {
                Some(jails) => jails
                    .iter()
                    .map(|j| check.parse("monitor.exclude_jails", j))
                    .collect::<Result<_, _>>()?,
                None => vec!["banshare".parse().expect("valid jail")],
            },
            bantime: raw
                .bantime
                .as_ref()
                .map(|b| check.bantime("monitor.bantime", b))
                .transpose()?,
            metrics_file: raw.metrics_file.clone(),
        })
    }

    pub(super) fn to_raw(&self) -> RawMonitor {
        RawMonitor {
            fail2ban_log: Some(self.fail2ban_log.clone()),
            state_dir: Some(self.state_dir.clone()),
            exclude_jails: Some(self.exclude_jails.iter().map(|j| j.to_string()).collect()),
            bantime: self.bantime.map(super::bantime_text),
            metrics_file: self.metrics_file.clone(),
        }
    }
}
