//! The `[nats]` section: how this node proves itself to the NATS servers
//! of a `nats://` log, and how it checks theirs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Checker, ConfigError, DurationText, duration_text};
use crate::file_mode::{self, Holds};
use crate::transport::nats::NatsSettings;

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawNats {
    /// A credentials file (user JWT and NKey seed); or `nkey_seed_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey_seed_file: Option<PathBuf>,
    /// The CA of the servers' certificates; requires TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
}

pub(super) fn check(raw: &RawNats, check: &Checker) -> Result<NatsSettings, ConfigError> {
    let defaults = NatsSettings::default();
    if raw.credentials_file.is_some() && raw.nkey_seed_file.is_some() {
        return Err(check.invalid(
            "nats.nkey_seed_file",
            "give credentials_file or nkey_seed_file, not both",
        ));
    }
    // Checked now, so that a secret others can read is a configuration
    // error (exit 2) rather than every ban spooled.
    for (key, path) in [
        ("nats.credentials_file", &raw.credentials_file),
        ("nats.nkey_seed_file", &raw.nkey_seed_file),
    ] {
        if let Some(path) = path {
            file_mode::check(path, Holds::Secret).map_err(|e| check.invalid(key, e))?;
        }
    }
    Ok(NatsSettings {
        credentials_file: raw.credentials_file.clone(),
        nkey_seed_file: raw.nkey_seed_file.clone(),
        ca_file: raw.ca_file.clone(),
        timeout: check.duration("nats.timeout", &raw.timeout, defaults.timeout)?,
    })
}

pub(super) fn to_raw(s: &NatsSettings) -> RawNats {
    RawNats {
        credentials_file: s.credentials_file.clone(),
        nkey_seed_file: s.nkey_seed_file.clone(),
        ca_file: s.ca_file.clone(),
        timeout: duration_text(s.timeout),
    }
}
