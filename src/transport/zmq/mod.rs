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
mod fake;
#[cfg(feature = "zmq")]
mod feed;
pub mod message;
#[cfg(feature = "zmq")]
mod sender;
mod url;
pub mod wire;

use std::time::Duration;

#[cfg(feature = "zmq")]
pub use feed::{KIND, ZmqFeed};
#[cfg(feature = "zmq")]
pub use sender::ZmqTransport;
pub use url::{SCHEME, ZmqUrl};

/// What to check when the publisher does not answer.
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
}

impl Default for ZmqSettings {
    fn default() -> ZmqSettings {
        ZmqSettings {
            catch_up_port: wire::CATCH_UP_PORT,
            feed_port: wire::FEED_PORT,
            timeout: Duration::from_secs(10),
        }
    }
}
