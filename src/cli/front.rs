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

use banshare::config::parse_duration;
use banshare::transport::LogLocation;

use super::args::{
    Cli, Command, GlobalArgs, LogArgs, ShareArgs, parse_address_arg, parse_bantime_arg,
};
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
fn parse(args: Vec<OsString>) -> Option<Cli> {
    if let Some(cli) = parse_plain(&args) {
        return Some(cli);
    }
    let matches = <FrontCli as clap::CommandFactory>::command()
        .try_get_matches_from(args)
        .ok()?;
    FrontCli::from_arg_matches(&matches).ok().map(Cli::from)
}

/// A ban or unban in the plain form fail2ban's action and scripts write
/// (`banshare --quiet ban 192.0.2.1 --port 22 --jail sshd --bantime 600`:
/// each option once, as `--name value` or `-x value`), read without clap,
/// whose model of even two commands, help text and all, was still three
/// fifths of a ban's instructions. Each value goes through the parser
/// [`Cli`]'s definition names, so a value reads the same either way; any
/// other form (`--name=value`, `-qv`, `--`, a repeated option, a value that
/// starts with `-` but `--bantime -1`'s, an error) is `None`, and clap
/// decides. A test holds it to clap's reading of the same arguments.
fn parse_plain(args: &[OsString]) -> Option<Cli> {
    let mut words = args.iter().skip(1).map(|a| a.to_str());
    let mut global = GlobalArgs {
        config: None,
        quiet: false,
        verbose: false,
    };
    // The global options may come before the command's name...
    let op = loop {
        match words.next()?? {
            "ban" => break true,
            "unban" => break false,
            word => global_option(&mut global, word, &mut words)?,
        }
    };
    let mut share = ShareArgs {
        addresses: Vec::new(),
        port: None,
        jail: None,
        bantime: None,
        log: LogArgs {
            log: None,
            node: None,
            spool_dir: None,
            lock_timeout: None,
            stale_lock: None,
            key: None,
            identity: None,
            known_hosts: None,
            accept_new_host_key: false,
        },
    };
    // ... or after it, among the command's own.
    while let Some(word) = words.next() {
        let word = word?;
        if word == "-" || !word.starts_with('-') {
            share.addresses.push(parse_address_arg(word).ok()?);
            continue;
        }
        if matches!(word, "--bantime" | "-b") {
            let text = words.next()??;
            set(&mut share.bantime, parse_bantime_arg(text).ok()?)?;
            continue;
        }
        let log = &mut share.log;
        match word {
            "--accept-new-host-key" if !log.accept_new_host_key => log.accept_new_host_key = true,
            "--port" | "-p" => set(&mut share.port, value(&mut words)?.parse().ok()?)?,
            "--jail" | "-j" => set(&mut share.jail, value(&mut words)?.parse().ok()?)?,
            "--log" => set(&mut log.log, LogLocation::parse(value(&mut words)?).ok()?)?,
            "--node" => set(&mut log.node, value(&mut words)?.parse().ok()?)?,
            "--spool-dir" => set(&mut log.spool_dir, value(&mut words)?.into())?,
            "--lock-timeout" => set(
                &mut log.lock_timeout,
                parse_duration(value(&mut words)?).ok()?,
            )?,
            "--stale-lock" => set(
                &mut log.stale_lock,
                parse_duration(value(&mut words)?).ok()?,
            )?,
            "--key" => set(&mut log.key, value(&mut words)?.into())?,
            "--identity" => set(&mut log.identity, value(&mut words)?.into())?,
            "--known-hosts" => set(&mut log.known_hosts, value(&mut words)?.into())?,
            word => global_option(&mut global, word, &mut words)?,
        }
    }
    if share.addresses.is_empty() || global.quiet && global.verbose {
        return None;
    }
    Some(Cli {
        global,
        command: match op {
            true => Command::Ban(share),
            false => Command::Unban(share),
        },
    })
}

/// One of [`GlobalArgs`]' options, each once; `None` for anything else.
fn global_option<'a>(
    global: &mut GlobalArgs,
    word: &str,
    words: &mut impl Iterator<Item = Option<&'a str>>,
) -> Option<()> {
    match word {
        "--quiet" | "-q" if !global.quiet => global.quiet = true,
        "--verbose" | "-v" if !global.verbose => global.verbose = true,
        "--config" | "-c" => set(&mut global.config, value(words)?.into())?,
        _ => return None,
    }
    Some(())
}

/// An option's value: the next word, unless it looks like an option or is
/// empty (clap refuses an empty path).
fn value<'a>(words: &mut impl Iterator<Item = Option<&'a str>>) -> Option<&'a str> {
    words
        .next()?
        .filter(|v| !v.is_empty() && !v.starts_with('-'))
}

/// Sets an option given once; `None` if it was given already.
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// The command line, and its configuration, when the front runs it
/// itself: a ban or unban whose settings it can read, so that its log is a
/// path (the front knows no URL scheme). Anything else, including a command
/// line or configuration it cannot parse, the full binary runs, and
/// reports. The configuration is read once, here.
pub fn runs_itself() -> Option<(Cli, Settings)> {
    let cli = parse(std::env::args_os().collect())?;
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

    use super::{Cli, parse, parse_plain};

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

    /// The plain form fail2ban's action writes is read without clap, as
    /// clap reads it.
    #[test]
    fn the_action_s_command_line_is_read_without_clap() {
        for line in [
            "banshare --quiet ban 192.0.2.1 --port 22 --jail sshd --bantime 600",
            "banshare --quiet unban 2001:db8::1 --port 0:65535 --jail recidive --bantime -1",
            "banshare --config /dev/null --quiet ban 10.9.0.1 --port 22 --jail sshd \
             --bantime 600 --node bench --log /tmp/newbans.log --spool-dir /tmp/spool",
        ] {
            let plain = parse_plain(&args(line)).unwrap_or_else(|| panic!("{line}: left to clap"));
            let full = Cli::try_parse_from(args(line)).unwrap();
            assert_eq!(format!("{plain:?}"), format!("{full:?}"), "{line}");
        }
    }

    /// Whatever the plain reading takes, clap reads the same way: random
    /// command lines from words that are right, wrong, repeated and out
    /// of place.
    #[test]
    fn what_is_read_without_clap_clap_reads_the_same() {
        const GLOBAL: &[&str] = &[
            "-q",
            "--quiet",
            "-v",
            "--verbose",
            "-c /c.toml",
            "--config /c",
        ];
        // Mostly right: an address, or an option and a value for it.
        const RIGHT: &[&str] = &[
            "192.0.2.1",
            "2001:db8::/64",
            "-",
            "--port 22",
            "-p 80,443",
            "--port ssh",
            "--jail sshd",
            "-j recidive",
            "--bantime 600",
            "--bantime -1",
            "-b 30m",
            "--log /l",
            "--log sftp://h/l",
            "--node n1",
            "--spool-dir /s",
            "--lock-timeout 2s",
            "--stale-lock 1s",
            "--key /k",
            "--identity /i",
            "--known-hosts /h",
            "--accept-new-host-key",
            "-q",
            "--verbose",
            "-c /c",
            "--config /c",
        ];
        const WRONG: &[&str] = &[
            "--spool-dir ",
            "--jail ",
            "--log ",
            "-c ",
            "--bantime ",
            "999.1.1.1",
            "--bogus",
            "--",
            "--port=22",
            "-qv",
            "",
            "ban",
            "-c",
            "--port",
            "0",
            "0.0.0.0/0",
            "-h",
            "--help",
            "-V",
            "--bantime 0",
            "--jail",
            "--bantime",
            "-p -1",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut taken = 0;
        for _ in 0..1200 {
            let mut line = vec!["banshare"];
            (0..next(3)).for_each(|_| line.extend(GLOBAL[next(GLOBAL.len())].split(' ')));
            line.push(["ban", "unban", "ban", "unban", "flush"][next(5)]);
            line.push(["192.0.2.7", "2001:db8::7", "198.51.100.0/24"][next(3)]);
            for _ in 0..1 + next(5) {
                let unit = match next(6) {
                    0 => WRONG[next(WRONG.len())],
                    _ => RIGHT[next(RIGHT.len())],
                };
                line.extend(unit.split(' '));
            }
            let argv: Vec<std::ffi::OsString> = line.iter().map(Into::into).collect();
            let Some(plain) = parse_plain(&argv) else {
                continue;
            };
            taken += 1;
            let full = Cli::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("{line:?}: read without clap, refused by it: {e}"));
            assert_eq!(format!("{plain:?}"), format!("{full:?}"), "{line:?}");
        }
        assert!(taken > 200, "only {taken} lines were read without clap");
    }
}
