//! `banshare watch`: follow the shared log and apply bans locally.
//!
//! - [`daemon`]: the event loop that owns the state;
//! - [`checking`]: signature checks on all cores beside the decisions;
//! - [`drift`]: restoring the firewall when another tool removed it;
//! - [`flusher`]: delivering the local spool while the watcher runs;
//! - [`policy`]: which records become bans;
//! - [`state`]: the cursor and status files;
//! - [`cursor`]: when and how the cursor is saved after each batch;
//! - [`host`]: this host's own addresses;
//! - [`incident`]: pausing, and lifting a node's bans, on this node;
//! - [`listing`]: the active bans as `banshare bans` lists them;
//! - [`metrics`]: the metrics file for Prometheus;
//! - [`reach`]: the addresses this node reaches the shared log through.

pub mod checking;
pub mod cursor;
pub mod daemon;
pub mod drift;
pub mod flusher;
pub mod host;
pub mod incident;
pub mod listing;
pub mod metrics;
pub mod policy;
pub mod reach;
pub mod state;
