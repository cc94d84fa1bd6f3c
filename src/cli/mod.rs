//! The `banshare` command: argument types in [`args`], what each command
//! does in [`commands`] and, for the watcher, [`watch`].

pub mod args;
pub mod commands;
pub mod fail2ban;
pub mod watch;
