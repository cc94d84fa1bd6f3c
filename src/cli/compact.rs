//! `banshare compact`: the log and the cluster's settings from the
//! configuration, the compaction itself in [`banshare::compact`].

use std::path::PathBuf;

use anyhow::anyhow;
use banshare::compact::{self, CompactJob, LocalStore, Outcome};
use banshare::config::Settings;
use banshare::transport::LogLocation;
use banshare::transport::lock::LocalLockFs;
use banshare::watch::policy::retention::{Fate, RetentionRules};

use super::args::CompactArgs;
use super::failure::{Failure, Result, write_stdout};
use super::setup::{apply_log_args, config_path, open_spool, owner, required_log};

/// At most this much of a line is shown by `--dry-run`.
const SHOWN: usize = 200;

/// Whether compacting the log at `location` takes this host's append
/// lock: a file, mounted or over SFTP, is rewritten under it.
fn takes_local_lock(location: &LogLocation) -> bool {
    match location {
        LogLocation::File(_) => true,
        #[cfg(feature = "sftp")]
        LogLocation::Sftp(_) => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

pub fn compact(args: CompactArgs, config: &Option<PathBuf>, mut settings: Settings) -> Result<()> {
    apply_log_args(&mut settings, &args.log)?;
    if let Some(max) = args.max_bantime {
        settings.watch.max_bantime = max;
    }
    let location = required_log(&settings)?;
    let trust = settings
        .trust_policy(&config_path(config))
        .map_err(|e| Failure::Usage(e.to_string()))?;
    // The local append lock is this host's own appends' (in the spool):
    // only a file compaction takes it. A stream's needs no spool, which
    // its timer, run as root without capabilities to hold the
    // administrator's key, could not open.
    let local_lock = match takes_local_lock(&location) {
        true => Some(open_spool(&settings)?.append_lock_path()),
        false => None,
    };
    let job = CompactJob {
        log: PathBuf::new(),
        rules: RetentionRules {
            trust: Some(trust),
            clock_margin: args.clock_margin,
            ..RetentionRules::new(settings.watch.max_bantime, settings.watch.findtime)
        },
        local_lock,
        owner: owner(&settings),
        timings: settings.append.lock,
        dry_run: args.dry_run,
    };
    let mut listing = String::new();
    let mut on_line = |line: &[u8], fate: Fate| {
        if args.dry_run {
            listing.push_str(&listed(line, fate));
        }
    };
    give_up_after(args.timeout, &location);
    let now = chrono::Utc::now();
    let outcome = match &location {
        LogLocation::File(path) => {
            refuse_fuse_holders(path, &args)?;
            let job = CompactJob {
                log: path.clone(),
                ..job
            };
            compact::compact(&LocalStore, &mut LocalLockFs, &job, now, &mut on_line)
        }
        #[cfg(feature = "sftp")]
        LogLocation::Sftp(url) => {
            let conn = banshare::transport::sftp::connect(url, &settings.sftp)
                .map_err(|e| Failure::Runtime(anyhow!(e).context(format!("cannot reach {url}"))))?;
            let store = compact::SftpStore::new(&conn);
            let job = CompactJob {
                log: url.path.clone(),
                ..job
            };
            compact::compact(&store, &mut store.locks(), &job, now, &mut on_line)
        }
        #[cfg(feature = "zmq")]
        LogLocation::Zmq(_) => {
            // The timer runs on the publisher's host too: nothing to do
            // there is no failure.
            return write_stdout(&format!(
                "nothing to compact at {location}: the publisher compacts its own log, at \
                 start and every hour, keeping every record's number\n"
            ));
        }
        // No lock: JetStream deletes single records, and the positions
        // of the rest stay.
        #[cfg(feature = "nats")]
        LogLocation::Nats(url) => {
            let outcome = banshare::transport::nats::compact::compact(
                url,
                &settings.nats,
                &job.rules,
                now,
                args.dry_run,
                &mut on_line,
            )
            .map_err(|e| Failure::Runtime(anyhow!(e).context(format!("cannot compact {url}"))))?;
            listing.push_str(&stream_summary(&location, &outcome, args.dry_run));
            return write_stdout(&listing);
        }
    }
    .map_err(|e| Failure::Runtime(anyhow!(e).context(format!("cannot compact {location}"))))?;
    listing.push_str(&summary(&location, &outcome, args.dry_run));
    write_stdout(&listing)
}

/// Ends the process with exit status 1 once `timeout` has passed: a call
/// on a hung share (sshfs, SFTP) blocks with no way to cancel it, and the
/// compaction timer's unit would never finish. Exiting is safe at any
/// point: the rename is atomic, the local lock goes with the process,
/// writers break a cross-host lock left behind after `stale_lock`, and the
/// next run removes a partial copy.
fn give_up_after(timeout: std::time::Duration, location: &LogLocation) {
    let location = location.to_string();
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        eprintln!(
            "banshare: error: cannot compact {location}: not finished within {} \
             (--timeout); is the share hung? The log is as it was, or wholly replaced",
            humantime::format_duration(timeout)
        );
        std::process::exit(1);
    });
}

/// Refuses to rename over a log that this host holds open through FUSE
/// (see [`compact::fuse_holders`]).
fn refuse_fuse_holders(log: &std::path::Path, args: &CompactArgs) -> Result<()> {
    if args.dry_run || args.mount_has_hard_remove {
        return Ok(());
    }
    let holders = compact::fuse_holders(log);
    if holders.is_empty() {
        return Ok(());
    }
    let who: Vec<String> = holders
        .iter()
        .map(|(pid, name)| format!("{name} (pid {pid})"))
        .collect();
    Err(Failure::Runtime(anyhow!(
        "{} is on an sshfs mount and open on this host by {}: FUSE would move it aside \
         before renaming the compacted log over it, leaving no log for a moment. Compact on \
         the file server, over sftp://, or on a host that does not follow the log (or mount \
         with -o hard_remove and pass --mount-has-hard-remove). Nothing was changed",
        log.display(),
        who.join(", ")
    )))
}

/// One line of `--dry-run`: the fate, then the line, escaped and cut.
fn listed(line: &[u8], fate: Fate) -> String {
    let text = String::from_utf8_lossy(&line[..line.len().min(SHOWN)]);
    let text = text.trim_end_matches('\n').escape_debug().to_string();
    let more = if line.len() > SHOWN { "..." } else { "" };
    let verb = if fate.is_kept() { "keep" } else { "drop" };
    format!("{verb}\t{}\t{text}{more}\n", fate.describe())
}

/// What compacting a NATS stream did: records deleted by sequence, no
/// copy and no lock.
#[cfg(feature = "nats")]
fn stream_summary(location: &LogLocation, outcome: &Outcome, dry_run: bool) -> String {
    let mut text = format!(
        "{} {location}: {} record(s) kept, {} {}; {} -> {} bytes\n",
        if dry_run {
            "would compact"
        } else {
            "compacted"
        },
        outcome.kept(),
        outcome.dropped(),
        if dry_run { "to delete" } else { "deleted" },
        outcome.bytes_before,
        outcome.bytes_after,
    );
    for (fate, n) in &outcome.fates {
        text.push_str(&format!("  {n:>8}  {}\n", fate.describe()));
    }
    text
}

fn summary(location: &LogLocation, outcome: &Outcome, dry_run: bool) -> String {
    let mut text = format!(
        "{} {location}: {} line(s) kept, {} dropped; {} -> {} bytes",
        if dry_run {
            "would compact"
        } else {
            "compacted"
        },
        outcome.kept(),
        outcome.dropped(),
        outcome.bytes_before,
        outcome.bytes_after,
    );
    if !dry_run {
        text.push_str(&format!(
            " ({} bytes appended meanwhile copied; lock held {} ms)",
            outcome.tail_bytes,
            outcome.locked_for.as_millis()
        ));
    }
    text.push('\n');
    for (fate, n) in &outcome.fates {
        text.push_str(&format!("  {n:>8}  {}\n", fate.describe()));
    }
    text
}
