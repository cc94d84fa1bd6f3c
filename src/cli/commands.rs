//! What each command does, over the library.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use banshare::append::{self, Outcome, Request, Writer};
use banshare::config::{self, Settings};
use banshare::lock::Owner;
use banshare::record::{Op, Target, never_ban};
use banshare::spool::Spool;
use banshare::transport::{self, LogLocation, Transport};

use super::args::{
    AddressArg, Cli, Command, ConfigCommand, Fail2banCommand, KeygenArgs, LogArgs, ShareArgs,
};

/// How a command failed, which decides the exit status.
pub enum Failure {
    /// Bad arguments, input or configuration: exit 2, nothing written.
    Usage(String),
    /// Something went wrong while doing the work: exit 1.
    Runtime(anyhow::Error),
    /// Standard output could not be written: its reader went away (quiet
    /// end, by SIGPIPE) or the disk is full (exit 1).
    Output(std::io::Error),
    /// `status`: no watcher runs on this state directory (exit 3).
    NotRunning(String),
}

impl Failure {
    /// The one-line message the user sees.
    pub fn message(&self) -> String {
        match self {
            Failure::Usage(m) | Failure::NotRunning(m) => m.clone(),
            Failure::Runtime(e) => chain_text(e),
            Failure::Output(e) => e.to_string(),
        }
    }
}

/// The error and its causes, `outer: inner`, each said once: many errors
/// already include their cause's text, and repeating it ("Not a directory
/// (os error 20): Not a directory (os error 20)") reads as two failures.
fn chain_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Writes `text` to standard output and flushes it, so that a failure is
/// an error here rather than a panic in `print!` or a loss at exit.
pub fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Failure::Output)
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Runtime(e)
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// Standard input for `ban -` is read whole; this bounds it.
const MAX_STDIN: u64 = 64 << 20;

pub fn run(cli: Cli) -> Result<()> {
    let out = Reporter { quiet: cli.quiet };
    let settings = load_settings(&cli.config)?;
    match cli.command {
        Command::Ban(args) => share(Op::Ban, args, settings, out),
        Command::Unban(args) => share(Op::Unban, args, settings, out),
        Command::Flush(args) => flush(&args.log, settings, out),
        Command::Config(ConfigCommand::Check) => {
            // What the watcher, ban or monitor would refuse is refused
            // here too.
            let origin = config_path(&cli.config);
            settings
                .check_watch(&origin)
                .and_then(|()| settings.signing_key(&origin).map(drop))
                .map_err(|e| Failure::Usage(e.to_string()))?;
            write_stdout(&settings.to_toml())
        }
        Command::Watch(args) => super::watch::watch(args, &cli.config, settings),
        Command::Status(args) => super::watch::status(args, settings),
        Command::Cleanup(args) => super::watch::cleanup(args, &cli.config, settings),
        Command::Monitor(args) => super::fail2ban::monitor(args, settings),
        Command::Fail2ban(Fail2banCommand::Install(args)) => super::fail2ban::install(args),
        Command::Keygen(args) => keygen(args, settings),
        Command::Demo(args) => {
            banshare::demo::run(args.keep, &mut std::io::stdout()).map_err(|e| match e {
                banshare::demo::DemoError::Output(e) => Failure::Output(e),
                e => Failure::Runtime(anyhow!(e)),
            })
        }
    }
}

/// Prints progress on stderr unless `--quiet`; warnings always.
#[derive(Clone, Copy)]
struct Reporter {
    quiet: bool,
}

impl Reporter {
    fn info(&self, message: &str) {
        if !self.quiet {
            eprintln!("banshare: {message}");
        }
    }

    fn warn(&self, message: &str) {
        eprintln!("banshare: warning: {message}");
    }
}

pub fn load_settings(path: &Option<PathBuf>) -> Result<Settings> {
    Settings::load(&config_path(path), path.is_some()).map_err(|e| Failure::Usage(e.to_string()))
}

/// The configuration file: `--config`, or the default one.
pub fn config_path(path: &Option<PathBuf>) -> PathBuf {
    path.clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
}

/// Applies the flags over the file's settings and re-checks the rules that
/// tie values together.
pub fn apply_log_args(settings: &mut Settings, args: &LogArgs) -> Result<()> {
    if let Some(log) = &args.log {
        settings.log = Some(log.clone());
    }
    if let Some(node) = &args.node {
        settings.node = node.clone();
    }
    if let Some(dir) = &args.spool_dir {
        settings.spool_dir = dir.clone();
    }
    if let Some(t) = args.lock_timeout {
        settings.append.lock.timeout = t;
    }
    if let Some(t) = args.stale_lock {
        settings.append.lock.stale_after = t;
    }
    if let Some(key) = &args.key {
        settings.key = Some(key.clone());
    }
    if let Some(key) = &args.identity {
        settings.sftp.identity = Some(key.clone());
    }
    if let Some(file) = &args.known_hosts {
        settings.sftp.known_hosts = file.clone();
    }
    settings.sftp.accept_new_host_key |= args.accept_new_host_key;
    settings
        .check_consistency()
        .map_err(|(key, message)| Failure::Usage(format!("{key}: {message}")))
}

fn share(op: Op, args: ShareArgs, mut settings: Settings, out: Reporter) -> Result<()> {
    apply_log_args(&mut settings, &args.log)?;
    let location = required_log(&settings)?;
    let targets = collect_targets(&args.addresses)?;
    refuse_never_ban(&targets, &settings)?;
    let append = &settings.append;
    if let Some(b) = args.bantime.as_ref().filter(|b| b.clamped && op == Op::Ban) {
        out.warn(&format!(
            "--bantime {} is longer than the 10-year limit of the record format: shared as 10 \
             years (-1 is a permanent ban)",
            b.text
        ));
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
        out.info(&format!(
            "not shared: jail {jail} receives bans from banshare (append.skip_jails)"
        ));
        return Ok(());
    }
    let writer = writer(&settings)?;
    let records = append::build_records(&request, &writer, chrono::Utc::now())
        .map_err(|e| anyhow!("cannot make record ids: {e}"))?;
    let count = records.len();
    let spool = open_spool(&settings)?;
    // Connects nothing yet: the delivering child does, after the fork.
    let mut publisher = transport::publisher(
        &location,
        &spool.append_lock_path(),
        owner(&settings),
        settings.append.lock,
        &settings.sftp,
    );
    // Still a single thread here, as deliver_journaled requires.
    let outcome = append::deliver_journaled(records, &mut publisher, &spool, append.deadline())
        .with_context(|| {
            format!("{count} {op} record(s) could be neither delivered nor spooled")
        })?;
    match outcome {
        Outcome::Delivered { total } if total > count => out.info(&format!(
            "appended {count} {op} record(s) to {location}, after {} older spooled record(s)",
            total - count
        )),
        Outcome::Delivered { .. } => out.info(&format!("appended {count} {op} record(s) to {location}")),
        Outcome::Spooled { reason } => out.warn(&format!(
            "{count} {op} record(s) spooled in {}; `banshare flush` delivers them later. Reason: {reason}",
            spool.dir().display()
        )),
        Outcome::Journaled { path, reason } => out.warn(&format!(
            "{count} {op} record(s) kept in journal {}; if this run's delivery does not finish, \
             `banshare flush` or the watcher delivers them. Reason: {reason}",
            path.display()
        )),
    }
    Ok(())
}

fn flush(args: &LogArgs, mut settings: Settings, out: Reporter) -> Result<()> {
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
    out.info(&format!(
        "flushed {} record(s) to {location}{already}",
        report.delivered
    ));
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

/// Who writes, with this node's signing key if one is configured.
pub fn writer(settings: &Settings) -> Result<Writer> {
    let key = match &settings.key {
        Some(path) => {
            let key = banshare::trust::load_signing_key(path)
                .map_err(|e| Failure::Usage(format!("signing key: {e}")))?;
            Some(std::sync::Arc::new(key))
        }
        None => None,
    };
    Ok(Writer {
        node: settings.node.clone(),
        tag: settings.append.tag.clone(),
        pid: std::process::id(),
        key,
    })
}

pub fn required_log(settings: &Settings) -> Result<LogLocation> {
    settings.log.clone().ok_or_else(|| {
        Failure::Usage(
            "no log given: pass --log PATH or set `log` in [common] of the config".into(),
        )
    })
}

pub fn open_spool_and_transport(
    settings: &Settings,
    location: &LogLocation,
) -> Result<(Spool, Box<dyn Transport>)> {
    let spool = open_spool(settings)?;
    let transport = transport::open(
        location,
        &spool.append_lock_path(),
        owner(settings),
        settings.append.lock,
        &settings.sftp,
    );
    Ok((spool, transport))
}

fn open_spool(settings: &Settings) -> Result<Spool> {
    Ok(Spool::open(&settings.spool_dir).context("cannot open the spool")?)
}

/// This process as the holder of the log's locks.
fn owner(settings: &Settings) -> Owner {
    Owner {
        node: settings.node.to_string(),
        pid: std::process::id(),
    }
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
