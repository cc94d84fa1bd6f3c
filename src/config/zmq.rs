//! The `[zmq]` section: where a `zmq+tcp://` publisher's catch-up and feed
//! sockets are, beside its submission socket.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Checker, ConfigError, DurationText, duration_text};
use crate::transport::zmq::{CurveClient, ZmqSettings, is_z85_key};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawZmq {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// CURVE: the publisher's public key and this node's secret key
    /// file; both or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve_server_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve_key_file: Option<PathBuf>,
}

pub(super) fn check(raw: &RawZmq, check: &Checker) -> Result<ZmqSettings, ConfigError> {
    let defaults = ZmqSettings::default();
    let port = |key: &'static str, value: Option<u16>, default: u16| match value {
        Some(0) => Err(check.invalid(key, "a port is 1 to 65535")),
        Some(port) => Ok(port),
        None => Ok(default),
    };
    Ok(ZmqSettings {
        catch_up_port: port(
            "zmq.catch_up_port",
            raw.catch_up_port,
            defaults.catch_up_port,
        )?,
        feed_port: port("zmq.feed_port", raw.feed_port, defaults.feed_port)?,
        timeout: check.duration("zmq.timeout", &raw.timeout, defaults.timeout)?,
        curve: curve(raw, check)?,
    })
}

fn curve(raw: &RawZmq, check: &Checker) -> Result<Option<CurveClient>, ConfigError> {
    let (server_key, key_file) = match (&raw.curve_server_key, &raw.curve_key_file) {
        (None, None) => return Ok(None),
        (Some(s), Some(f)) => (s, f),
        _ => {
            return Err(check.invalid(
                "zmq.curve_server_key",
                "CURVE takes curve_server_key and curve_key_file together",
            ));
        }
    };
    if !is_z85_key(server_key) {
        return Err(check.invalid(
            "zmq.curve_server_key",
            "not a CURVE key (40 characters of Z85)",
        ));
    }
    // Read now, so that a key file that cannot be used is a configuration
    // error (exit 2) rather than every ban spooled as "unreachable".
    #[cfg(feature = "zmq")]
    crate::transport::zmq::curve::read_secret_key(key_file)
        .map_err(|e| check.invalid("zmq.curve_key_file", e.to_string()))?;
    Ok(Some(CurveClient {
        server_key: server_key.clone(),
        key_file: key_file.clone(),
    }))
}

pub(super) fn to_raw(s: &ZmqSettings) -> RawZmq {
    RawZmq {
        catch_up_port: Some(s.catch_up_port),
        feed_port: Some(s.feed_port),
        timeout: duration_text(s.timeout),
        curve_server_key: s.curve.as_ref().map(|c| c.server_key.clone()),
        curve_key_file: s.curve.as_ref().map(|c| c.key_file.clone()),
    }
}
