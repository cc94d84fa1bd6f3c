//! Ban backends: how a node applies bans locally. Every backend sits behind
//! [`Backend`] and applies a whole batch in as few external calls as it can
//! (one `nft -f -`, one `ipset restore`, one `fail2ban-client` call per
//! jail), so a storm of bans never becomes a storm of processes.
//!
//! External programs are always run as argv, never through a shell: no
//! text from the shared log can become shell syntax.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::record::{Jail, NodeId, PortSpec, Target};

/// One ban to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub target: Target,
    pub ports: PortSpec,
    pub jail: Option<Jail>,
    /// How long from now; `None` for a permanent ban.
    pub remaining: Option<Duration>,
    /// Where it came from, for logs: the origin node and when it banned.
    pub origin: Option<NodeId>,
    pub ts: Option<DateTime<Utc>>,
}

/// One ban to lift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unban {
    pub target: Target,
    pub ports: PortSpec,
    pub jail: Option<Jail>,
    pub origin: Option<NodeId>,
    pub ts: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Ban(Ban),
    Unban(Unban),
}

impl Action {
    pub fn target(&self) -> Target {
        match self {
            Action::Ban(b) => b.target,
            Action::Unban(u) => u.target,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Config(String),
}

/// Applies bans on this host.
pub trait Backend: Send {
    /// A short name for logs and `banshare status`.
    fn name(&self) -> &'static str;

    /// Prepares the host (tables, sets). Called once before the first batch;
    /// safe to call again.
    fn setup(&mut self) -> Result<(), BackendError>;

    /// Applies a batch, in order, in as few external calls as possible.
    fn apply(&mut self, batch: &[Action]) -> Result<(), BackendError>;

    /// Removes what `setup` created (`banshare cleanup`).
    fn cleanup(&mut self) -> Result<(), BackendError>;
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Ban(b) => write!(f, "ban {} port {}", b.target, b.ports),
            Action::Unban(u) => write!(f, "unban {} port {}", u.target, u.ports),
        }
    }
}
