//! The `[sftp]` section: how to reach a log given as `sftp://`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Checker, ConfigError, DurationText, duration_text};
use crate::transport::SftpSettings;

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSftp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_new_host_key: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
}

pub(super) fn check(raw: &RawSftp, check: &Checker) -> Result<SftpSettings, ConfigError> {
    let defaults = SftpSettings::default();
    Ok(SftpSettings {
        identity: raw.identity.clone(),
        known_hosts: raw.known_hosts.clone().unwrap_or(defaults.known_hosts),
        accept_new_host_key: raw.accept_new_host_key.unwrap_or(false),
        timeout: check.duration("sftp.timeout", &raw.timeout, defaults.timeout)?,
    })
}

pub(super) fn to_raw(s: &SftpSettings) -> RawSftp {
    RawSftp {
        identity: s.identity.clone(),
        known_hosts: Some(s.known_hosts.clone()),
        accept_new_host_key: Some(s.accept_new_host_key),
        timeout: duration_text(s.timeout),
    }
}
