//! The `[trust]` section: which signatures a watcher requires, and the
//! limits that keep one node from flooding the others.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::NodeId;

use super::{Checker, ConfigError, DurationText, duration_text};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTrust {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_signed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_unsigned_logger: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bans_per_node_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker_cooldown: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operators: Option<Vec<String>>,
}

/// The checked `[trust]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustSettings {
    /// The trusted public keys file; `None`: nothing is verified.
    pub keys: Option<PathBuf>,
    /// On whenever `keys` is set, unless turned off explicitly.
    pub require_signed: bool,
    /// Accept hand-written `logger` lines even when signatures are required.
    pub allow_unsigned_logger: bool,
    /// Above this, a node's bans trip its circuit breaker.
    pub max_bans_per_node_per_minute: u32,
    /// How long a tripped node's records are refused.
    pub breaker_cooldown: Duration,
    /// The node ids whose signed allowlist records watchers apply; none by
    /// default (docs/operations.md, *Incident response*).
    pub operators: Vec<NodeId>,
}

pub(super) fn check(raw: &RawTrust, check: &Checker) -> Result<TrustSettings, ConfigError> {
    let settings = TrustSettings {
        keys: raw.keys.clone(),
        require_signed: raw.require_signed.unwrap_or(raw.keys.is_some()),
        allow_unsigned_logger: raw.allow_unsigned_logger.unwrap_or(false),
        max_bans_per_node_per_minute: raw.max_bans_per_node_per_minute.unwrap_or(600),
        breaker_cooldown: check.duration(
            "trust.breaker_cooldown",
            &raw.breaker_cooldown,
            Duration::from_secs(600),
        )?,
        operators: operators(raw, check)?,
    };
    if settings.require_signed && settings.keys.is_none() {
        return Err(check.invalid(
            "trust.require_signed",
            "needs `keys`, the trusted public keys file",
        ));
    }
    if settings.max_bans_per_node_per_minute == 0 {
        return Err(check.invalid("trust.max_bans_per_node_per_minute", "must be at least 1"));
    }
    Ok(settings)
}

fn operators(raw: &RawTrust, check: &Checker) -> Result<Vec<NodeId>, ConfigError> {
    let names = raw.operators.as_deref().unwrap_or_default();
    let operators = names
        .iter()
        .map(|name| {
            name.parse()
                .map_err(|_| check.invalid("trust.operators", format!("bad node id {name:?}")))
        })
        .collect::<Result<Vec<NodeId>, _>>()?;
    if !operators.is_empty() && raw.keys.is_none() {
        return Err(check.invalid(
            "trust.operators",
            "needs `keys`: an allowlist record counts only with an operator's verified signature",
        ));
    }
    Ok(operators)
}

pub(super) fn to_raw(s: &TrustSettings) -> RawTrust {
    RawTrust {
        keys: s.keys.clone(),
        require_signed: Some(s.require_signed),
        allow_unsigned_logger: Some(s.allow_unsigned_logger),
        max_bans_per_node_per_minute: Some(s.max_bans_per_node_per_minute),
        breaker_cooldown: duration_text(s.breaker_cooldown),
        // Left out when empty, as before operators existed.
        operators: (!s.operators.is_empty())
            .then(|| s.operators.iter().map(ToString::to_string).collect()),
    }
}
