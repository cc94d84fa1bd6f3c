//! The `banshare` command: argument types in [`args`], what each command
//! does in [`commands`] and, for the daemons, [`watch`], [`fail2ban`] and
//! `publisher` (feature `zmq`); the health checks in [`doctor`];
//! what they set up alike in [`setup`]; exit statuses in [`failure`];
//! [`logging`] prints the library's log lines. Only [`commands`] knows the
//! other command modules, so they form no circle.

pub mod args;
pub mod commands;
pub mod doctor;
pub mod fail2ban;
pub mod failure;
pub mod logging;
#[cfg(feature = "zmq")]
pub mod publisher;
pub mod setup;
pub mod watch;
