//! What each command does, over the library: the dispatcher, and the
//! short commands (ban, unban, flush, keygen, config check); the daemons
//! live in [`super::watch`] and [`super::fail2ban`].

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use banshare::config::Settings;
use banshare::outbox::append::{self, Outcome, Request};
use banshare::record::{Op, PortSpec, Target, never_ban};
use banshare::transport::{self, LogLocation};
use log::{debug, info, warn};

use super::args::{
    AddressArg, AllowArgs, Cli, Command, ConfigCommand, Fail2banCommand, KeygenArgs, LogArgs,
    ShareArgs,
};
use super::failure::{Failure, Result, write_stdout};
use super::setup::{
    apply_log_args, config_path, load_settings, open_spool, open_spool_and_transport, required_log,
    writer, writer_settings,
};

/// Standard input for `ban -` is read whole; this bounds it.
const MAX_STDIN: u64 = 64 << 20;

pub fn run(cli: Cli) -> Result<()> {
    // Doctor reports a bad configuration file as one of its findings.
    if let Command::Doctor(args) = cli.command {
        return super::doctor::doctor(args, &cli.global.config);
    }
    let settings = load_settings(&cli.global.config)?;
    run_with(cli, settings)
}

/// As [`run`], with the configuration already read: the package's front
/// reads it to decide whether it runs the command itself (`super::front`).
pub fn run_with(cli: Cli, settings: Settings) -> Result<()> {
    match cli.command {
        Command::Ban(args) => share(Op::Ban, args, settings),
        Command::Unban(args) => share(Op::Unban, args, settings),
        Command::Flush(args) => flush(&args.log, settings),
        Command::Config(ConfigCommand::Check(args)) => {
            // What the watcher, ban, monitor or publisher would refuse is
            // refused here too.
            let origin = config_path(&cli.global.config);
            settings
                .check_watch(&origin)
                .and_then(|()| settings.signing_key(&origin).map(drop))
                .and_then(|()| settings.legacy_policy(&origin).map(drop))
                .and_then(|()| settings.check_state_dirs(&origin))
                .and_then(|()| check_curve_files(&settings, &origin))
                .map_err(|e| Failure::Usage(e.to_string()))?;
            write_stdout(&settings.to_toml())?;
            // Refused too, as the daemons refuse it (exit 2), after the
            // effective configuration, which shows what is set.
            // A publisher-only host reads no log and applies nothing.
            let needs = match args.for_.as_str() {
                "publisher" => Vec::new(),
                _ => settings.unmet_needs(),
            };
            match needs {
                needs if needs.is_empty() => Ok(()),
                needs => Err(Failure::Usage(format!(
                    "{}: not enough to run {}",
                    origin.display(),
                    needs
                        .iter()
                        .map(|(commands, keys)| format!(
                            "{commands} (needs {})",
                            keys.join(" and ")
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                ))),
            }
        }
        Command::Watch(args) => super::watch::watch(args, &cli.global.config, settings),
        Command::Compact(args) => super::compact::compact(args, &cli.global.config, settings),
        Command::Status(args) => super::watch::status(args, settings),
        Command::Bans(args) => super::bans::bans(args, settings),
        Command::Doctor(_) => unreachable!("run handles it before reading the configuration"),
        Command::Cleanup(args) => super::watch::cleanup(args, &cli.global.config, settings),
        Command::Monitor(args) => super::fail2ban::monitor(args, settings),
        #[cfg(feature = "zmq")]
        Command::Publisher(args) => super::publisher::publisher(args, &cli.global.config, settings),
        Command::Fail2ban(Fail2banCommand::Install(args)) => super::fail2ban::install(args),
        Command::Keygen(args) => keygen(args, settings),
        #[cfg(feature = "zmq")]
        Command::CurveKeygen(args) => super::publisher::curve_keygen(args),
        #[cfg(feature = "nats")]
        Command::Nats(super::args::NatsCommand::Init(args)) => super::nats::init(args, settings),
        #[cfg(feature = "nats")]
        Command::Nats(super::args::NatsCommand::Keygen(args)) => super::nats::keygen(args),
        Command::SystemdDropin(args) => super::systemd::dropin(args, settings),
        Command::Generate(command) => super::generate::generate(command),
        Command::Pause(args) => super::incident::pause(args, settings),
        Command::Resume(args) => super::incident::resume(args, settings),
        Command::Lift(args) => super::incident::lift(args, settings),
        Command::Allow(args) => allow(args, settings),
        Command::Demo(args) => {
            banshare::demo::run(args.keep, &mut std::io::stdout()).map_err(|e| match e {
                banshare::demo::DemoError::Output(e) => Failure::Output(e),
                e => Failure::Runtime(anyhow!(e)),
            })
        }
    }
}

/// The publisher's CURVE key files, which `publisher` reads at start.
fn check_curve_files(
    settings: &Settings,
    origin: &std::path::Path,
) -> std::result::Result<(), banshare::config::ConfigError> {
    #[cfg(feature = "zmq")]
    settings.curve_server_keys(origin)?;
    let _ = (settings, origin);
    Ok(())
}

fn share(op: Op, args: ShareArgs, mut settings: Settings) -> Result<()> {
    apply_log_args(&mut settings, &args.log)?;
    let location = required_log(&settings)?;
    let targets = collect_targets(&args.addresses)?;
    refuse_never_ban(&targets, &settings)?;
    let append = &settings.append;
    if let Some(b) = args.bantime.as_ref().filter(|b| b.clamped && op == Op::Ban) {
        warn!(
            "--bantime {} is longer than the 10-year limit of the record format: shared as 10 \
             years (-1 is a permanent ban)",
            b.text
        );
    }
    let request = Request {
        op,
        targets,
        ports: args.port.unwrap_or_else(|| append.port.clone()),
        jail: args.jail.or_else(|| append.jail.clone()),
        bantime: args.bantime.map(|b| b.bantime).or(append.bantime),
    };
    if let Some(jail) = request
        .jail
        .as_ref()
        .filter(|j| append.skip_jails.contains(j))
    {
        // The echo guard: this jail's bans came from banshare.
        info!("not shared: jail {jail} receives bans from banshare (append.skip_jails)");
        return Ok(());
    }
    deliver(request, &settings, &location)
}

/// `banshare allow`: ALLOW (or UNALLOW) records, signed, delivered as bans
/// are.
fn allow(args: AllowArgs, mut settings: Settings) -> Result<()> {
    apply_log_args(&mut settings, &args.log)?;
    let location = required_log(&settings)?;
    let targets = collect_targets(&args.addresses)?;
    if let Some(everything) = targets.iter().find(|t| t.net().prefix_len() == 0) {
        return Err(Failure::Usage(format!(
            "{everything}: an allowlist entry for every address; watchers refuse it \
             (`banshare pause` stops applying instead); nothing was written"
        )));
    }
    let request = Request {
        op: if args.remove { Op::Unallow } else { Op::Allow },
        targets,
        ports: PortSpec::all(),
        jail: None,
        bantime: None,
    };
    deliver(request, &settings, &location)
}

/// Builds `request`'s records, signed with this node's key, and delivers
/// them (or spools them).
fn deliver(request: Request, settings: &Settings, location: &LogLocation) -> Result<()> {
    let writer = writer(settings)?;
    let op = request.op;
    if op.is_control() && writer.key.is_none() {
        return Err(Failure::Usage(
            "an allowlist record counts only signed by an operator: set --key (or common.key) \
             to the operator's key, and --node to its id; nothing was written"
                .into(),
        ));
    }
    let append = &settings.append;
    let records = append::build_records(&request, &writer, chrono::Utc::now())
        .map_err(|e| anyhow!("cannot make record ids: {e}"))?;
    let count = records.len();
    let spool = open_spool(settings)?;
    // Connects nothing yet: the delivering child does, after the fork.
    let mut publisher = transport::publisher(location, &writer_settings(settings, &spool));
    let outcome = match local_disk(location) {
        Some(fs) => {
            debug!("delivering in this process: the log is on {fs}, which does not hang");
            append::deliver_journaled_here(records, &mut publisher, &spool, append.deadline())
        }
        // Still a single thread here, as deliver_journaled requires.
        None => append::deliver_journaled(records, &mut publisher, &spool, append.deadline()),
    }
    .with_context(|| format!("{count} {op} record(s) could be neither delivered nor spooled"))?;
    match outcome {
        // Refused for good: not shared, not kept. Exit 1, so that fail2ban
        // logs a failed action instead of a ban shared.
        Outcome::Delivered { total, refused } if refused > 0 => {
            return Err(Failure::Runtime(anyhow!(
                "{location} refused {refused} of {total} record(s) for good (the reason is \
                 above): they are neither shared nor kept"
            )));
        }
        Outcome::Delivered { total, .. } if total > count => info!(
            "appended {count} {op} record(s) to {location}, after {} older spooled record(s)",
            total - count
        ),
        Outcome::Delivered { .. } => info!("appended {count} {op} record(s) to {location}"),
        Outcome::Spooled { reason } => warn!(
            "{count} {op} record(s) spooled in {}; `banshare flush` delivers them later. Reason: {reason}",
            spool.dir().display()
        ),
        Outcome::Journaled { path, reason } => warn!(
            "{count} {op} record(s) kept in journal {}; if this run's delivery does not finish, \
             `banshare flush` or the watcher delivers them. Reason: {reason}",
            path.display()
        ),
    }
    Ok(())
}

/// The local disk filesystem `location` is on, if it is a path on one
/// (see [`banshare::follow::mode::disk_filesystem`]).
fn local_disk(location: &LogLocation) -> Option<&'static str> {
    #[allow(irrefutable_let_patterns)] // File is the only variant without the transports
    let LogLocation::File(path) = location else {
        return None;
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    banshare::follow::mode::disk_filesystem(dir)
}

fn flush(args: &LogArgs, mut settings: Settings) -> Result<()> {
    apply_log_args(&mut settings, args)?;
    let location = required_log(&settings)?;
    let (spool, mut transport) = open_spool_and_transport(&settings, &location)?;
    let report = spool
        .flush(&mut *transport, settings.append.deadline())
        .context("flush failed")?;
    let already = match report.already_there {
        0 => String::new(),
        n => format!(" ({n} found already in the log)"),
    };
    if report.batches_left > 0 {
        return Err(Failure::Runtime(anyhow!(
            "delivered {} record(s){already}; {} batch(es) still wait in {}",
            report.delivered,
            report.batches_left,
            spool.dir().display()
        )));
    }
    info!(
        "flushed {} record(s) to {location}{already}",
        report.delivered
    );
    Ok(())
}

fn keygen(args: KeygenArgs, settings: Settings) -> Result<()> {
    if args.out.exists() && !args.force {
        return Err(Failure::Usage(format!(
            "{} exists; --force replaces it",
            args.out.display()
        )));
    }
    let key = banshare::trust::generate().map_err(|e| anyhow!(e))?;
    banshare::durable::write_atomic(
        &args.out,
        banshare::trust::secret_file(&key).as_bytes(),
        0o600,
    )
    .with_context(|| format!("cannot write {}", args.out.display()))?;
    let node = args.node.unwrap_or(settings.node);
    let line = format!("{node} {}\n", banshare::trust::public_line(&key));
    let mut public = args.out.as_os_str().to_owned();
    public.push(".pub");
    banshare::durable::write_atomic(std::path::Path::new(&public), line.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", PathBuf::from(&public).display()))?;
    write_stdout(&line)
}

/// The addresses from the arguments, with `-` replaced by standard input.
fn collect_targets(args: &[AddressArg]) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for arg in args {
        match arg {
            AddressArg::Target(t) => targets.push(*t),
            AddressArg::Stdin => targets.extend(read_stdin_targets()?),
        }
    }
    if targets.is_empty() {
        return Err(Failure::Usage(
            "no addresses given (standard input was empty)".into(),
        ));
    }
    Ok(targets)
}

/// Refuses the whole batch if any target is one no watcher applies (the
/// watchers' fixed rules, with this node's `[watch]` prefix limits), so that
/// a typo such as `0.0.0.0/0` is an error here rather than a line every
/// watcher skips.
fn refuse_never_ban(targets: &[Target], settings: &Settings) -> Result<()> {
    let w = &settings.watch;
    for target in targets {
        if let Err(why) = never_ban::check(target.net(), w.max_prefix_v4, w.max_prefix_v6) {
            return Err(Failure::Usage(format!(
                "{target}: {why}: watchers refuse it; nothing was written"
            )));
        }
    }
    Ok(())
}

/// One address per line; blank lines and `#` comments are skipped. Any bad
/// line refuses the whole batch, naming the line.
fn read_stdin_targets() -> Result<Vec<Target>> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut input)
        .context("cannot read standard input")?;
    if input.len() as u64 > MAX_STDIN {
        return Err(Failure::Usage(format!(
            "standard input is over {} MiB",
            MAX_STDIN >> 20
        )));
    }
    parse_address_lines(&input).map_err(Failure::Usage)
}

fn parse_address_lines(input: &[u8]) -> std::result::Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for (n, line) in input.split(|&b| b == b'\n').enumerate() {
        let text =
            std::str::from_utf8(line).map_err(|_| format!("stdin line {}: not UTF-8", n + 1))?;
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let target = text
            .parse()
            .map_err(|e| format!("stdin line {}: {e}; nothing was written", n + 1))?;
        targets.push(target);
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::parse_address_lines;

    #[test]
    fn stdin_batch_skips_comments_and_names_bad_line() {
        assert_eq!(
            parse_address_lines(b"# x\n1.2.3.4\n\n  2001:db8::1 \n")
                .unwrap()
                .len(),
            2
        );
        let err = parse_address_lines(b"1.2.3.4\n1.2.3\n").unwrap_err();
        assert!(err.starts_with("stdin line 2:"), "{err}");
    }
}
