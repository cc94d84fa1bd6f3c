//! The front binary of the Debian package: `/usr/bin/banshare`, built
//! without the network transports, runs `ban` and `unban` to a log on a
//! local or mounted filesystem itself and hands every other command to the
//! full binary (`/usr/lib/banshare/banshare`) by `exec`.
//!
//! Why: fail2ban starts one `banshare ban` per ban, and most of a full
//! binary's start is the dynamic loader mapping and relocating libzmq
//! (with libstdc++, libsodium, libpgm, libnorm, Kerberos...) and libssh2's
//! OpenSSL and zlib, none of which an append to a file uses. The front
//! links only libc. Both binaries stay on the system's shared libraries,
//! so OpenSSL and libzmq security updates still come from Debian (see
//! docs/operations.md, "Two binaries").
//!
//! The front is compiled in only when the build lacks a transport and
//! `BANSHARE_FULL_BINARY` names the full binary at build time, as
//! packaging/build-deb does; every other build runs every command itself.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use super::args::{Cli, Command};
use super::setup::load_settings;

/// The full binary, when this build is the front.
pub const FULL_BINARY: Option<&str> =
    if cfg!(all(feature = "sftp", feature = "zmq", feature = "nats")) {
        None
    } else {
        option_env!("BANSHARE_FULL_BINARY")
    };

/// Whether the front runs `parsed` itself: a ban or unban whose settings it
/// can read, so that its log is a path (the front knows no URL scheme).
/// Anything else, including a command line or configuration it cannot
/// parse, the full binary runs, and reports.
pub fn runs_itself(parsed: &Result<Cli, clap::Error>) -> bool {
    let Ok(cli) = parsed else {
        return false;
    };
    matches!(cli.command, Command::Ban(_) | Command::Unban(_)) && load_settings(&cli.config).is_ok()
}

/// Replaces this process with `full`, same arguments (and `argv[0]`, which
/// clap shows in messages); returns only if that fails.
pub fn exec_full(full: &str) -> ExitCode {
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "banshare".into());
    let error = std::process::Command::new(full)
        .arg0(arg0)
        .args(args)
        .exec();
    eprintln!("banshare: error: cannot run the full binary {full}: {error}");
    ExitCode::FAILURE
}
