//! The `[publisher]` section: `banshare publisher`, the ZeroMQ publisher.
//!
//! ```toml
//! [publisher]
//! data_dir = "/var/lib/banshare/publisher"
//! bind = "192.0.2.10"      # or "*" for every address
//! submit_port = 5678
//! catch_up_port = 5679
//! legacy_port = 5680
//! feed_port = 5681
//! legacy = "token"         # off (default), open or token
//! token_file = "/etc/banshare/legacy-token"
//! bantime = "1h"           # carried by records made from legacy bans
//! curve_key_file = "/etc/banshare/publisher.curve"   # CURVE secret key
//! curve_clients_file = "/etc/banshare/curve-clients" # allowed client keys
//! legacy_submit_port = 5682 # plaintext, legacy messages only (with CURVE)
//! ```

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Checker, ConfigError, DurationText, Settings};
use crate::record::BanTime;
use crate::transport::zmq::message::{LegacyPolicy, LegacyToken};
use crate::transport::zmq::wire;

pub const DEFAULT_PUBLISHER_DATA_DIR: &str = "/var/lib/banshare/publisher";

/// The address the publisher listens on unless told otherwise: this host
/// only, so that a publisher started by mistake or before its keys and
/// firewall are set up is reachable from nowhere.
pub const DEFAULT_BIND: BindAddress = BindAddress(Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)));

/// The longest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPublisher {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submit_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bantime: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve_clients_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_submit_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_file: Option<PathBuf>,
}

/// An address to listen on, or every address (`*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindAddress(pub Option<IpAddr>);

impl FromStr for BindAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<BindAddress, String> {
        if text == "*" {
            return Ok(BindAddress(None));
        }
        text.parse().map(|a| BindAddress(Some(a))).map_err(|_| {
            format!("bad address {text:?} (expected an IP address, or * for every one)")
        })
    }
}

impl fmt::Display for BindAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("*"),
            Some(a) => write!(f, "{a}"),
        }
    }
}

/// Which legacy (fail2ban-zmq-tools) submissions are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyMode {
    /// None: only banshare's own records.
    Off,
    /// `host|jail|action|ip` without a token, from anyone who reaches the
    /// port.
    Open,
    /// `TOKEN|host|jail|action|ip`, the token read from `token_file`.
    Token,
}

impl FromStr for LegacyMode {
    type Err = String;

    fn from_str(text: &str) -> Result<LegacyMode, String> {
        match text {
            "off" => Ok(LegacyMode::Off),
            "open" => Ok(LegacyMode::Open),
            "token" => Ok(LegacyMode::Token),
            _ => Err(format!(
                "bad legacy mode {text:?} (expected off, open or token)"
            )),
        }
    }
}

impl fmt::Display for LegacyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LegacyMode::Off => "off",
            LegacyMode::Open => "open",
            LegacyMode::Token => "token",
        })
    }
}

/// The checked `[publisher]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherSettings {
    pub data_dir: PathBuf,
    pub bind: BindAddress,
    pub submit_port: u16,
    pub catch_up_port: u16,
    pub legacy_port: u16,
    pub feed_port: u16,
    pub legacy: LegacyMode,
    pub token_file: Option<PathBuf>,
    /// Carried by records made from legacy bans; `None`: the watchers'
    /// default applies.
    pub bantime: Option<BanTime>,
    /// The publisher's CURVE secret key: with it, banshare's own sockets
    /// (submissions, catch-up, broadcast) are encrypted and admit only the
    /// keys in `curve_clients_file`.
    pub curve_key_file: Option<PathBuf>,
    pub curve_clients_file: Option<PathBuf>,
    /// A plaintext socket for legacy messages only, beside the submission
    /// socket; needed for legacy messages when CURVE is on.
    pub legacy_submit_port: Option<u16>,
    /// Where the metrics for Prometheus are written, if anywhere.
    pub metrics_file: Option<PathBuf>,
}

impl PublisherSettings {
    pub(super) fn check(
        raw: &RawPublisher,
        check: &Checker,
    ) -> Result<PublisherSettings, ConfigError> {
        Ok(PublisherSettings {
            data_dir: raw
                .data_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_PUBLISHER_DATA_DIR.into()),
            bind: check.parse_or("publisher.bind", &raw.bind, DEFAULT_BIND)?,
            submit_port: raw.submit_port.unwrap_or(wire::SUBMIT_PORT),
            catch_up_port: raw.catch_up_port.unwrap_or(wire::CATCH_UP_PORT),
            legacy_port: raw.legacy_port.unwrap_or(wire::LEGACY_PORT),
            feed_port: raw.feed_port.unwrap_or(wire::FEED_PORT),
            legacy: check.parse_or("publisher.legacy", &raw.legacy, LegacyMode::Off)?,
            token_file: raw.token_file.clone(),
            bantime: raw
                .bantime
                .as_ref()
                .map(|b| check.bantime("publisher.bantime", b))
                .transpose()?,
            curve_key_file: raw.curve_key_file.clone(),
            curve_clients_file: raw.curve_clients_file.clone(),
            legacy_submit_port: raw.legacy_submit_port,
            metrics_file: raw.metrics_file.clone(),
        })
    }

    pub(super) fn to_raw(&self) -> RawPublisher {
        RawPublisher {
            data_dir: Some(self.data_dir.clone()),
            bind: Some(self.bind.to_string()),
            submit_port: Some(self.submit_port),
            catch_up_port: Some(self.catch_up_port),
            legacy_port: Some(self.legacy_port),
            feed_port: Some(self.feed_port),
            legacy: Some(self.legacy.to_string()),
            token_file: self.token_file.clone(),
            bantime: self.bantime.map(super::bantime_text),
            curve_key_file: self.curve_key_file.clone(),
            curve_clients_file: self.curve_clients_file.clone(),
            legacy_submit_port: self.legacy_submit_port,
            metrics_file: self.metrics_file.clone(),
        }
    }

    /// Whether the plaintext legacy broadcast is bound: with legacy
    /// submissions, for the original's subscribers; and without CURVE,
    /// where banshare's own broadcast is in clear anyway. Not with CURVE on
    /// and legacy off: nothing then goes out in clear.
    pub fn legacy_broadcast(&self) -> bool {
        self.legacy != LegacyMode::Off || self.curve_key_file.is_none()
    }

    /// Rules that tie the values together; also checked after flags.
    pub fn check_consistency(&self) -> Result<(), (&'static str, String)> {
        let mut ports = vec![
            self.submit_port,
            self.catch_up_port,
            self.legacy_port,
            self.feed_port,
        ];
        ports.extend(self.legacy_submit_port);
        if ports.contains(&0) {
            return Err(("publisher ports", "a port must not be 0".into()));
        }
        for (i, p) in ports.iter().enumerate() {
            if ports[..i].contains(p) {
                return Err(("publisher ports", format!("port {p} is given twice")));
            }
        }
        if self.curve_key_file.is_some() != self.curve_clients_file.is_some() {
            return Err((
                "publisher.curve_key_file",
                "CURVE needs both the publisher's key and the file of allowed client keys \
                 (curve_clients_file): a CURVE server without an allow-list admits anyone"
                    .into(),
            ));
        }
        let curve = self.curve_key_file.is_some();
        match (curve, self.legacy, self.legacy_submit_port) {
            (true, LegacyMode::Open | LegacyMode::Token, None) => {
                return Err((
                    "publisher.legacy_submit_port",
                    "with CURVE on, legacy messages need a plaintext socket of their own (the \
                     original's monitor speaks plaintext): set legacy_submit_port"
                        .into(),
                ));
            }
            (_, LegacyMode::Off, Some(_)) => {
                return Err((
                    "publisher.legacy_submit_port",
                    "is only used with legacy = open or token".into(),
                ));
            }
            _ => {}
        }
        match (self.legacy, &self.token_file) {
            (LegacyMode::Token, None) => Err((
                "publisher.token_file",
                "legacy = token needs a token file".into(),
            )),
            (LegacyMode::Off | LegacyMode::Open, Some(_)) => Err((
                "publisher.token_file",
                format!("is only read with legacy = token, not {}", self.legacy),
            )),
            _ => Ok(()),
        }
    }
}

impl Settings {
    /// What the publisher does with legacy submissions, with the token
    /// read from its file. `origin` names the configuration in errors.
    pub fn legacy_policy(&self, origin: &Path) -> Result<LegacyPolicy, ConfigError> {
        let check = Checker { origin };
        let p = &self.publisher;
        match (p.legacy, &p.token_file) {
            (LegacyMode::Off, _) => Ok(LegacyPolicy::Refused),
            (LegacyMode::Open, _) => Ok(LegacyPolicy::Open),
            (LegacyMode::Token, None) => {
                Err(check.invalid("publisher.token_file", "legacy = token needs a token file"))
            }
            (LegacyMode::Token, Some(path)) => read_token(path)
                .map(LegacyPolicy::Token)
                .map_err(|m| check.invalid("publisher.token_file", m)),
        }
    }
}

/// The publisher's CURVE secret key and the public keys of the clients it
/// admits.
#[cfg(feature = "zmq")]
pub type CurveServerKeys = (
    crate::transport::zmq::curve::Key,
    std::collections::HashSet<crate::transport::zmq::curve::Key>,
);

#[cfg(feature = "zmq")]
impl Settings {
    /// The publisher's CURVE key files, read as `publisher` reads them at
    /// start (and `config check` too, so it refuses what the publisher
    /// refuses); `None` without CURVE.
    pub fn curve_server_keys(&self, origin: &Path) -> Result<Option<CurveServerKeys>, ConfigError> {
        use crate::transport::zmq::curve;
        let check = Checker { origin };
        let p = &self.publisher;
        let (Some(key), Some(clients)) = (&p.curve_key_file, &p.curve_clients_file) else {
            return Ok(None);
        };
        let secret = curve::read_secret_key(key)
            .map_err(|e| check.invalid("publisher.curve_key_file", e))?;
        let allowed = curve::read_allow_list(clients)
            .map_err(|e| check.invalid("publisher.curve_clients_file", e))?;
        Ok(Some((secret, allowed)))
    }
}

/// The token: the file's content, without one trailing newline. Only
/// its owner may read the file.
fn read_token(path: &Path) -> Result<LegacyToken, String> {
    use std::io::Read;
    crate::file_mode::check(path, crate::file_mode::Holds::Secret).map_err(|e| e.to_string())?;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    LegacyToken::new(text).map_err(|e| format!("{}: {e}", path.display()))
}
