//! The ZeroMQ transport. [`message`] is its wire format, parsed strictly:
//! the submissions a publisher's REP socket takes (fail2ban-zmq-tools'
//! `TOKEN|host|jail|action|ip` and banshare's own record lines) and the
//! broadcasts a subscriber reads. It needs no libzmq, so it is built
//! without the `zmq` feature, and fuzzed (`fuzz/fuzz_targets/zmq_message.rs`).
//! [`wire`] is banshare's own protocol beside it: numbered records, the
//! publisher's replies, catch-up after a gap. `docs/zmq.md` describes both.
//!
//! With the `zmq` feature, a log given as `zmq+tcp://host[:port]`
//! ([`ZmqUrl`]) is written through [`ZmqTransport`] (the submission
//! socket, request by request) and read through [`ZmqFeed`] (the banshare
//! broadcast, with catch-up after every gap).

#[cfg(feature = "zmq")]
pub mod curve;
#[cfg(all(test, feature = "zmq"))]
mod curve_client_tests;
#[cfg(all(test, feature = "zmq"))]
mod fake;
#[cfg(feature = "zmq")]
mod feed;
#[cfg(feature = "zmq")]
mod handshake;
pub mod message;
#[cfg(feature = "zmq")]
mod sender;
mod url;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "zmq")]
pub use feed::{KIND, ZmqFeed};
#[cfg(feature = "zmq")]
pub use sender::ZmqTransport;
pub use url::{SCHEME, ZmqUrl};

/// What to check when the publisher does not answer.
#[cfg(feature = "zmq")]
pub(crate) const UNREACHABLE_HINT: &str =
    "is `banshare publisher` running there, and are its ports open?";

/// Where a publisher's other sockets are, beside the submission socket
/// the URL names (`[zmq]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZmqSettings {
    /// The catch-up socket's port (REP).
    pub catch_up_port: u16,
    /// The banshare broadcast's port (PUB).
    pub feed_port: u16,
    /// Bound on every catch-up request: past it, the publisher is
    /// unreachable for this read, and the socket is made anew.
    pub timeout: Duration,
    /// How this node proves itself to a publisher that requires CURVE;
    /// `None`: plaintext.
    pub curve: Option<CurveClient>,
}

/// This node as a CURVE client (`curve_server_key` and `curve_key_file`
/// in `[zmq]`): every socket to the publisher (sending, catch-up, the
/// feed) is encrypted, the publisher is known by its key, and this node by
/// its own, whose public half must be in the publisher's allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurveClient {
    /// The publisher's public key, Z85 (40 characters).
    pub server_key: String,
    /// This node's secret key file (`banshare curve-keygen`), readable
    /// only by its owner (checked when a socket is made); the public key
    /// is derived from it.
    pub key_file: PathBuf,
}

/// Whether `text` is a CURVE key's Z85 text: 40 characters of Z85.
pub fn is_z85_key(text: &str) -> bool {
    const Z85: &[u8] =
        b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    text.len() == 40 && text.bytes().all(|b| Z85.contains(&b))
}

/// Makes `socket` a CURVE client as `curve` says, if it says anything;
/// returns this node's public key (Z85) then.
#[cfg(feature = "zmq")]
pub(crate) fn secure(
    socket: &::zmq::Socket,
    curve: Option<&CurveClient>,
) -> Result<Option<String>, String> {
    let Some(curve) = curve else {
        return Ok(None);
    };
    let server =
        curve::decode_key(&curve.server_key).ok_or("[zmq] curve_server_key is not a CURVE key")?;
    let secret = curve::read_secret_key(&curve.key_file).map_err(|e| e.to_string())?;
    let public = curve::public_of(&secret);
    curve::connect_as(socket, &server, &public, &secret).map_err(|e| format!("CURVE: {e}"))?;
    Ok(Some(curve::encode_key(&public)))
}

impl Default for ZmqSettings {
    fn default() -> ZmqSettings {
        ZmqSettings {
            catch_up_port: wire::CATCH_UP_PORT,
            feed_port: wire::FEED_PORT,
            timeout: Duration::from_secs(10),
            curve: None,
        }
    }
}
