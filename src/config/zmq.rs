//! The `[zmq]` section: where a `zmq+tcp://` publisher's catch-up and feed
//! sockets are, beside its submission socket.

use serde::{Deserialize, Serialize};

use super::{Checker, ConfigError, DurationText, duration_text};
use crate::transport::zmq::ZmqSettings;

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawZmq {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
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
    })
}

pub(super) fn to_raw(s: &ZmqSettings) -> RawZmq {
    RawZmq {
        catch_up_port: Some(s.catch_up_port),
        feed_port: Some(s.feed_port),
        timeout: duration_text(s.timeout),
    }
}
