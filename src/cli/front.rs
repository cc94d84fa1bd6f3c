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

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use banshare::config::Settings;
use clap::{FromArgMatches, Parser, Subcommand};

use super::args::{Cli, Command, GlobalArgs, ShareArgs};
use super::setup::load_settings;

/// The full binary, when this build is the front.
pub const FULL_BINARY: Option<&str> =
    if cfg!(all(feature = "sftp", feature = "zmq", feature = "nats")) {
        None
    } else {
        option_env!("BANSHARE_FULL_BINARY")
    };

/// The command line the front runs itself: the global options and the two
/// commands, from the same definitions as [`Cli`]'s. Building clap's model
/// of every command, with its help text, was more than half of a `ban`'s
/// instructions (callgrind: 784,000 of 1,365,000); this one has two.
/// Anything it does not take (another command, `--help`, `--version`, a
/// mistake) goes to the full binary, which parses [`Cli`] and reports.
#[derive(Debug, Parser)]
#[command(name = "banshare")]
struct FrontCli {
    #[command(flatten)]
    global: GlobalArgs,

    #[command(subcommand)]
    command: FrontCommand,
}

#[derive(Debug, Subcommand)]
enum FrontCommand {
    Ban(ShareArgs),
    Unban(ShareArgs),
}

impl From<FrontCli> for Cli {
    fn from(front: FrontCli) -> Cli {
        Cli {
            global: front.global,
            command: match front.command {
                FrontCommand::Ban(args) => Command::Ban(args),
                FrontCommand::Unban(args) => Command::Unban(args),
            },
        }
    }
}

/// `args` (with `argv[0]`) as the command line the front runs itself, or
/// `None` for the full binary to run.
fn parse(args: impl IntoIterator<Item = OsString>) -> Option<Cli> {
    let matches = <FrontCli as clap::CommandFactory>::command()
        .try_get_matches_from(args)
        .ok()?;
    FrontCli::from_arg_matches(&matches).ok().map(Cli::from)
}

/// The command line, and its configuration, when the front runs it
/// itself: a ban or unban whose settings it can read, so that its log is a
/// path (the front knows no URL scheme). Anything else, including a command
/// line or configuration it cannot parse, the full binary runs, and
/// reports. The configuration is read once, here.
pub fn runs_itself() -> Option<(Cli, Settings)> {
    let cli = parse(std::env::args_os())?;
    let settings = load_settings(&cli.global.config).ok()?;
    Some((cli, settings))
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, parse};

    fn args(line: &str) -> Vec<std::ffi::OsString> {
        line.split(' ').map(Into::into).collect()
    }

    /// What the front takes, it reads as the full command line would (the
    /// same values, to the last field); everything else it leaves to the
    /// full binary, whose parser reports it.
    #[test]
    fn the_front_takes_a_ban_or_unban_as_the_full_command_line_reads_it_and_nothing_else() {
        for line in [
            "banshare ban 192.0.2.1",
            "banshare --config /etc/x.toml -q ban 192.0.2.1 --port 22 -j sshd --bantime 600 \
             --node web1 --log /srv/newbans.log --spool-dir /var/spool/x",
            "banshare unban 2001:db8::1 -v --jail sshd",
            "banshare ban - --bantime -1",
            "banshare ban 192.0.2.0/24 198.51.100.7 -p 80,443 -b 30m -c /x",
            "banshare ban --log=/l --lock-timeout 2s 192.0.2.1 --bantime=99999999999",
            "banshare ban -- 192.0.2.1",
        ] {
            let front =
                parse(args(line)).unwrap_or_else(|| panic!("{line}: left to the full binary"));
            let full = Cli::try_parse_from(args(line)).unwrap();
            assert_eq!(format!("{front:?}"), format!("{full:?}"), "{line}");
        }
        for line in [
            "banshare",
            "banshare --help",
            "banshare ban --help",
            "banshare --version",
            "banshare -V ban 192.0.2.1",
            "banshare ban",
            "banshare ban 192.0.2.1 --bogus",
            "banshare -q -v ban 192.0.2.1",
            "banshare ban 999.0.0.1",
            "banshare flush",
            "banshare watch",
            "banshare allow 192.0.2.1",
        ] {
            assert!(parse(args(line)).is_none(), "{line}: taken by the front");
        }
    }
}
