//! banshare: many fail2ban hosts acting as one.
//!
//! Every node appends its bans to one central log (`newbans.log`) under a
//! lock that excludes other hosts, and every node follows that log and bans
//! locally. The modules follow the path of one ban:
//!
//! - [`record`]: the line format, parsed strictly;
//! - [`outbox`]: turning a ban into records and getting them to the log
//!   (the appender, the journal, the spool);
//! - [`transport`]: how a node reaches the log, each transport with its
//!   write side ([`transport::Transport`]) and its read side
//!   ([`transport::Feed`]), and the lock that holds across hosts on a
//!   shared filesystem;
//! - [`follow`]: reading a file exactly once through rotation and
//!   truncation (the file transports' read side, and the monitor's);
//! - [`watch`]: the watcher daemon, its policy and its state;
//! - [`backend`]: applying bans locally (nftables, ipset, fail2ban, ...);
//! - [`monitor`]: sharing bans read from fail2ban's own log;
//! - `publisher` (feature `zmq`): the ZeroMQ publisher daemon, its own
//!   numbered log, its replies and broadcasts;
//! - [`state`]: a daemon's state directory, its saved position among them;
//! - [`trust`]: signed records and the keys trusted to sign them;
//! - [`config`]: the TOML configuration file;
//! - [`compact`]: rewriting the shared log to what may still be in force;
//! - [`durable`]: writing files so that a crash leaves the old or the new;
//! - [`file_mode`]: who may read or change the secret and trust files.
//! - [`metrics`]: the Prometheus text files the daemons write.
//! - [`doctor`]: the health checks of `banshare doctor`.

pub mod backend;
pub mod compact;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod durable;
pub mod file_mode;
pub mod follow;
pub mod metrics;
pub mod monitor;
pub mod outbox;
#[cfg(feature = "zmq")]
pub mod publisher;
pub mod record;
pub mod state;
pub mod transport;
pub mod trust;
pub mod watch;
