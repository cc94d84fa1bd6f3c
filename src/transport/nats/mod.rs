//! The NATS JetStream transport (`docs/nats.md`). A log given as
//! `nats://host[:port][,host...]/STREAM` ([`NatsUrl`]) is one JetStream
//! stream: [`NatsTransport`] publishes each record line as one message on
//! `banshare.<STREAM>.<origin node>` with its record id as `Nats-Msg-Id`,
//! and waits for the stream's acknowledgement; [`NatsFeed`] reads the
//! stream in order through an ordered consumer, its position the stream
//! sequence of the last record handed out. [`init`] makes the stream,
//! only when `banshare nats init` asks.
//!
//! The client (`async-nats`) is asynchronous; banshare is not. Each
//! transport and feed that is used starts a [`runtime::Runtime`] of its
//! own (a current-thread tokio runtime on one thread) and blocks on it, so
//! nothing of tokio exists on the file and SFTP paths.

#[cfg(feature = "nats")]
pub mod compact;
#[cfg(feature = "nats")]
mod feed;
#[cfg(feature = "nats")]
pub mod init;
#[cfg(feature = "nats")]
mod runtime;
#[cfg(feature = "nats")]
mod sender;
mod url;

use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "nats")]
pub use feed::{KIND, NatsFeed};
#[cfg(feature = "nats")]
pub use sender::NatsTransport;
pub use url::{NatsUrl, SCHEME, TLS_SCHEME, is_stream_name};

/// What to check when no NATS server answers.
#[cfg(feature = "nats")]
pub(crate) const UNREACHABLE_HINT: &str =
    "is nats-server running there with JetStream, and is its client port open?";

/// What to do when the stream is not there.
#[cfg(feature = "nats")]
pub(crate) const MISSING_HINT: &str = "create it with `banshare nats init`";

/// How to reach and prove this node to the servers (`[nats]` in the
/// configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// A credentials file (a user JWT and its NKey seed, as `nsc`
    /// writes it); readable only by its owner.
    pub credentials_file: Option<PathBuf>,
    /// A file holding this node's NKey seed (`SU...`); readable only by
    /// its owner. Not together with `credentials_file`.
    pub nkey_seed_file: Option<PathBuf>,
    /// PEM file of the CA that signs the servers' certificates, added to
    /// the system's roots; setting it requires TLS.
    pub ca_file: Option<PathBuf>,
    /// Bound on connecting and on every request to the servers (stream
    /// look-ups, consumer creation); a publish waits for its
    /// acknowledgement as long as the lock timeout.
    pub timeout: Duration,
}

impl Default for NatsSettings {
    fn default() -> NatsSettings {
        NatsSettings {
            credentials_file: None,
            nkey_seed_file: None,
            ca_file: None,
            timeout: Duration::from_secs(5),
        }
    }
}
