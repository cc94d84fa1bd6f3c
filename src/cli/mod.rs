//! The `banshare` command: argument types in [`args`], what each command
//! does in [`commands`] and, for the daemons, [`watch`], [`fail2ban`] and
//! `publisher` (feature `zmq`); the incident controls in [`incident`];
//! the ban listing in [`bans`]; the health checks in [`doctor`];
//! the package's front binary's hand-over in [`front`];
//! what they set up alike in [`setup`]; exit statuses in [`failure`];
//! [`logging`] prints the library's log lines; [`generate`] writes man
//! pages and completions, [`systemd`] the units' drop-ins. Only [`commands`] knows the
//! other command modules, so they form no circle.

pub mod args;
pub mod bans;
pub mod commands;
pub mod compact;
pub mod doctor;
pub mod fail2ban;
pub mod failure;
pub mod front;
pub mod generate;
pub mod incident;
pub mod logging;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "zmq")]
pub mod publisher;
pub mod setup;
pub mod systemd;
pub mod watch;
