//! The `banshare` command: argument types in [`args`], what each command
//! does in [`commands`] and, for the watcher, [`watch`]; [`logging`] prints
//! the library's log lines.

pub mod args;
pub mod commands;
pub mod fail2ban;
pub mod logging;
pub mod watch;
