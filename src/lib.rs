//! banshare: many fail2ban hosts acting as one.
//!
//! Every node appends its bans to one central log (`newbans.log`) under a
//! lock that excludes other hosts, and every node follows that log and bans
//! locally. The modules follow that path:
//!
//! - [`record`]: the line format, parsed strictly;
//! - [`transport`]: how a node reaches the log, behind one trait;
//! - [`lock`]: the lock that holds across hosts on a shared filesystem;
//! - [`spool`]: where records wait while the log is out of reach;
//! - [`journal`]: each `ban` run's records, kept until delivery is confirmed;
//! - [`append`]: turning a ban into records and delivering or spooling them;
//! - [`detach`]: a child process the caller can walk away from;
//! - [`follow`]: reading the log exactly once through rotation and truncation;
//! - [`backend`]: applying bans locally (nftables, ipset, fail2ban, ...);
//! - [`state`]: a daemon's state directory, its saved position among them;
//! - [`watch`]: the watcher daemon and its policy;
//! - [`monitor`]: sharing bans read from fail2ban's own log;
//! - [`trust`]: signed records and the keys trusted to sign them;
//! - [`config`]: the TOML configuration file.

pub mod append;
pub mod backend;
pub mod config;
pub mod demo;
pub mod detach;
pub mod durable;
pub mod follow;
pub mod journal;
pub mod lock;
pub mod monitor;
pub mod record;
pub mod spool;
pub mod state;
pub mod transport;
pub mod trust;
pub mod watch;
