//! The command line, as clap derive types. Values are parsed into the
//! library's checked types here, so a bad argument is a usage error (exit 2)
//! before anything is read or written.

use std::path::PathBuf;
use std::time::Duration;

use banshare::backend::BackendKind;
use banshare::config::{check_poll_interval, parse_bantime_clamped, parse_duration};
use banshare::follow::FollowKind;
use banshare::record::{BanTime, Jail, NodeId, PortSpec, Target};
use banshare::transport::LogLocation;
use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "Share fail2ban bans between many hosts through one central log";

const LONG_ABOUT: &str = "\
Share fail2ban bans between many hosts through one central log.

Every node appends its bans to one shared newbans.log (on a file server,
reached by a local path or an sshfs/NFS mount) under a lock that excludes
writers on every host. The lines stay compatible with `logger -s`, so the
seed system's `HOST <ip> PORT <port>` lines are valid records.

When the log cannot be reached, records wait in a local spool and are
delivered later by `banshare flush`: nothing is lost.";

const EXIT_STATUS: &str = "\
EXIT STATUS:
    0   Success. For ban and unban this includes records that were spooled
        because the log was unreachable (a warning says so): fail2ban's
        action must not fail while the record is safe.
    1   Runtime failure: for example the records could be neither delivered
        nor spooled, a ZeroMQ publisher refused records for good (an error
        names the reason; they are not kept), or flush left records in the
        spool. doctor: at least one problem.
    2   Usage error or bad input: a bad argument, a bad address on stdin, a
        bad configuration file. Nothing was written.
    3   status: the watcher is not running, or never ran with this state
        directory. bans: no watcher ever ran with this state directory.
    4   status: a process holds the watcher's state directory but has shown
        no sign of life for over the silence limit (4 safety polls plus 2
        backend timeouts, at least 2 minutes): stopped or stuck.
        doctor: warnings, but no problem.

    When standard output is a pipe whose reader has gone (`banshare status
    | head -1`), banshare ends quietly, killed by SIGPIPE like other Unix
    tools; any other failure to write it (a full disk) is an error, status 1.

FILES:
    /etc/banshare/banshare.toml   configuration (see `banshare config check`)
    /var/lib/banshare/spool       records waiting for the log
    /var/lib/banshare/watch       the watcher's cursor and bans (monitor,
                                  publisher: beside it)
    <log>.lock                    the cross-host lock file beside the log
    /usr/share/banshare/fail2ban  what `banshare fail2ban install` copies
    banshare-watch.service        the packaged systemd units (also monitor,
                                  publisher, compact); `banshare
                                  systemd-dropin` ties them to the log

See docs/format.md for the record format and the locking protocol.";

/// `--version`: the release, the commit it was built from and the cargo
/// features it was built with (build.rs), so a report names the binary.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BANSHARE_COMMIT"),
    ", features: ",
    env!("BANSHARE_FEATURES"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "banshare", version = VERSION, about = ABOUT, long_about = LONG_ABOUT, after_long_help = EXIT_STATUS)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes, before or after its name. A struct of
/// their own so that the package's front (`super::front`) parses them as
/// the full command line does, from the same definitions.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file. A missing default file is fine (defaults apply);
    /// a file named here must exist.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print only warnings and errors.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print debug messages too (each batch read from the log, each append).
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Share a ban: append a ban record for each address to the shared log.
    #[command(long_about = BAN_ABOUT)]
    Ban(ShareArgs),
    /// Share an unban: append an unban record for each address.
    #[command(long_about = UNBAN_ABOUT)]
    Unban(ShareArgs),
    /// Deliver the records waiting in the local spool, oldest first.
    #[command(long_about = FLUSH_ABOUT)]
    Flush(FlushArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Follow the shared log and apply bans on this host (a daemon).
    #[command(long_about = WATCH_ABOUT)]
    Watch(WatchArgs),
    /// Rewrite the shared log keeping only what may still be in force.
    #[command(long_about = COMPACT_ABOUT, after_long_help = COMPACT_EXIT)]
    Compact(CompactArgs),
    /// Show the watcher's state: cursor, lag, follow mode, bans, spool.
    #[command(long_about = STATUS_ABOUT)]
    Status(StatusArgs),
    /// List the bans in force on this node: jail, origin node, since, until.
    #[command(long_about = BANS_ABOUT)]
    Bans(BansArgs),
    /// Check this node's setup; print each problem with its fix.
    #[command(long_about = DOCTOR_ABOUT, after_long_help = DOCTOR_EXIT_STATUS)]
    Doctor(DoctorArgs),
    /// Remove what the ban backend created (the nftables table, the ipsets).
    #[command(
        long_about = "Remove what the ban backend created (the nftables table, the ipsets). \
                      Refused (exit 2) while a watcher runs with the configured state \
                      directory: it would set them up again within its safety poll. \
                      Stop it first."
    )]
    Cleanup(CleanupArgs),
    /// Share fail2ban's bans by following fail2ban.log (no fail2ban change).
    #[command(long_about = MONITOR_ABOUT)]
    Monitor(MonitorArgs),
    /// Take submissions over ZeroMQ, store them, broadcast them (a daemon).
    #[cfg(feature = "zmq")]
    #[command(long_about = PUBLISHER_ABOUT)]
    Publisher(PublisherArgs),
    /// Install banshare's fail2ban action and filter, and example jails
    /// that fail2ban does not read (no jail changes).
    #[command(subcommand)]
    Fail2ban(Fail2banCommand),
    /// Make this node's signing key; print the line for the trusted keys.
    #[command(long_about = KEYGEN_ABOUT)]
    Keygen(KeygenArgs),
    /// Manage the JetStream stream of a nats:// log (docs/nats.md).
    #[cfg(feature = "nats")]
    #[command(subcommand)]
    Nats(NatsCommand),
    /// Make a CURVE key pair for the ZeroMQ transport; print the public key.
    #[cfg(feature = "zmq")]
    #[command(long_about = CURVE_KEYGEN_ABOUT)]
    CurveKeygen(CurveKeygenArgs),
    /// Run a local demonstration cluster in a temporary folder (no root).
    #[command(long_about = DEMO_ABOUT)]
    Demo(DemoArgs),
    /// Write the systemd drop-in that ties a unit to the log's mount.
    #[command(long_about = SYSTEMD_DROPIN_ABOUT)]
    SystemdDropin(SystemdDropinArgs),
    /// Write man pages or shell completions (for packagers).
    #[command(hide = true, subcommand)]
    Generate(GenerateCommand),
    /// Pause applying bans on this node (the watcher stops reading the log).
    #[command(long_about = PAUSE_ABOUT)]
    Pause(PauseArgs),
    /// Resume applying bans on this node after `banshare pause`.
    Resume(StateDirArgs),
    /// Lift, on this node, every ban in force that one node's records made.
    #[command(long_about = LIFT_ABOUT)]
    Lift(LiftArgs),
    /// Put addresses on the shared allowlist (or take them off): an
    /// operator's signed record that every watcher honours like ignoreip.
    #[command(long_about = ALLOW_ABOUT)]
    Allow(AllowArgs),
}

const PAUSE_ABOUT: &str = "\
Pause applying bans on this node. The watcher (with the configured or given
state directory) then applies nothing and reads nothing more from the shared
log, which keeps every record; it keeps delivering this node's spool, and
keeps the bans already in force. `banshare resume` ends the pause: the
watcher catches up from its cursor as after a restart, applying what is
still in force and skipping bans that ended meanwhile. The pause is a file
in the state directory, so it holds across restarts of the watcher. With a
running watcher, waits (up to 10 s) until it says it paused. To pause every
node, run it on every node (docs/operations.md, Incident response).";

const LIFT_ABOUT: &str = "\
Lift, on this node, every ban in force that the records of node --node put
there, and refuse that node's ban records dated up to now from then on
(copies read again, a replay). For a node whose signing key was stolen:
first remove its key from the trusted keys file and reload every watcher
(SIGHUP), then run this on every node. Bans other nodes also reported are
lifted too if --node's record was the last to extend them.

The request is a file in the watcher's state directory: a running watcher
acts on it at once (this command waits up to 30 s and prints how many bans
it lifted); a stopped one when it starts. Bans saved by banshare 0.1 carry
no origin node and are not found: lift those with `banshare unban`.";

const ALLOW_ABOUT: &str = "\
Share an allowlist entry: append a signed ALLOW record (UNALLOW with
--remove) for each address or network to the shared log. Every watcher
that lists the signer in [trust] operators never bans what the entry
covers, on any port, like fail2ban's ignoreip, and lifts the bans in force
that overlap it when the record arrives. Removing an entry does not bring
back the bans refused meanwhile (ban records dated before the removal stay
refused): a later report does.

The record must be signed with an operator's key (--key or common.key, and
--node or common.node naming the operator, as listed in the trusted keys
file and in [trust] operators): a node's own key must not be enough, or a
stolen one could allowlist its thief everywhere. Watchers of banshare 0.1
reject ALLOW lines as an unknown verb: they neither ban nor allowlist.";

#[derive(Debug, Args)]
pub struct StateDirArgs {
    /// The watcher's state directory [config: watch.state_dir]
    /// [default: /var/lib/banshare/watch].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Why, shown by `banshare status` and logged by the watcher.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,

    #[command(flatten)]
    pub state: StateDirArgs,
}

#[derive(Debug, Args)]
pub struct LiftArgs {
    /// The node whose bans to lift.
    #[arg(long, value_name = "ID", required = true)]
    pub node: NodeId,

    #[command(flatten)]
    pub state: StateDirArgs,
}

#[derive(Debug, Args)]
pub struct AllowArgs {
    /// IPv4 or IPv6 addresses or CIDR networks, or `-` to read them from
    /// standard input, one per line.
    #[arg(required = true, value_name = "ADDRESS", value_parser = parse_address_arg)]
    pub addresses: Vec<AddressArg>,

    /// Take the entries off the allowlist (UNALLOW records).
    #[arg(long)]
    pub remove: bool,

    #[command(flatten)]
    pub log: LogArgs,
}

const WATCH_ABOUT: &str = "\
Follow the shared log and apply every ban and unban on this host, in
batches, through the configured backend. Runs in the foreground and logs to
stderr, as systemd expects.

Following: on a local filesystem the log's directory is watched with
inotify, with a slow safety poll. On sshfs, NFS, CIFS and other network
filesystems inotify never sees other hosts' writes, so the log is polled
every poll_interval (50 ms by default). A poll asks for the log's size
alone (one request to the file server) and, when it grew, reads the new
lines; the full look at the log (its path and first bytes, for rotation
and truncation) comes when the size cannot tell, and at least every
[watch] safety_poll (5 s by default). Partial lines, truncation,
rotation by rename, compaction by atomic rename, deletion and re-creation,
and a share that is gone for a while are all handled; the watcher never
exits because the log is missing.

State: the cursor is saved atomically in the state directory after every
applied batch, with the circuit breaker's state; after any restart, SIGKILL
included, the watcher resumes right after the last applied record. If the
cursor cannot be saved (a full disk), the watcher holds, applying nothing,
until it can. One watcher per state directory: a second one exits 2.

Policy: this node's own records, expired bans, records dated more than a
day ahead (less than that: applied with a warning, for at most the
bantime from now), bans
older than an unban seen for them, bans already in force at least as
long, ignoreip, this host's own addresses (ignoreself),
loopback, unspecified, multicast, link-local and broadcast addresses, and
networks wider than max_prefix_v4/max_prefix_v6 are never applied; nor
are the file server or SFTP host the log is reached through and the next
hop of the route to it (looked up at start, on SIGHUP, on reconnect and on
the safety poll). With min_nodes above 1 a ban waits for that many
distinct nodes within findtime. Bans longer than max_bantime (default a
week, a cluster-wide setting) are cut to it; a permanent ban applies only
from a record signed by a trusted node. Every rejected line is counted and
logged (rate-limited), never applied.

The watcher also delivers this node's spooled records whenever the log is
reachable.

Metrics: --metrics-file writes counters, active bans per jail, the lag,
the spool, each origin node's last record and breaker, and a histogram of
propagation delays in Prometheus's text format for node_exporter's
textfile collector; --metrics-listen serves them over HTTP on loopback.
Every metric is listed in docs/operations.md.

Signals: SIGTERM and SIGINT stop it cleanly; SIGHUP reloads the policy
settings from the configuration file.

Backends: nftables (table inet banshare), ipset (sets banshare-*; add the
iptables rule yourself), fail2ban (fail2ban-client banip into a jail),
command (argv templates, never a shell), log (dry run to stdout).";

const STATUS_ABOUT: &str = "\
Show the watcher's state from its state directory: whether it runs, the log
it follows and how (inotify or polling), the cursor and the lag behind the
end of the log in records and bytes (as the watcher last measured it through
its own connection to the log, whatever the transport: status needs no access
to the log), the last record's time, the active bans and counters of applied,
rejected and skipped records, and how many records wait in the local spool.
--json prints the same as one JSON object.

Reads only: creates neither the state directory nor the spool. Exit status
0 while the watcher runs; 3 when it is not running (its last status is
still printed) or has never run with this state directory; 4 when a
process holds its state directory but has written no status for longer
than 4 safety polls plus 2 backend timeouts (at least 2 minutes): it is
stopped or stuck (in an uninterruptible wait on a dead mount, say) and
applies nothing. So `banshare status` serves as a health check.";

const BANS_ABOUT: &str = "\
List the bans in force on this node, as the watcher saved them in its
state directory: one line per banned address or network, with the jail and
the origin node of the record that put it in force, since when (the time
of the newest record that reported it) and until when (`never` for a
permanent ban). Like `fail2ban-client status <jail>` and `fail2ban-client
get <jail> banip --with-time`, for every jail banshare applied. The watcher saves its bans within
a second of a change, before its status counts them, up to 1,000 bans (within
5 s up to 10,000, 30 s above); the list is as of that save.

Filters combine (all must hold): --addr lists the bans that cover an
address, --net those that overlap a network (inside it or covering it),
--node those from one origin node, --jail those of one jail.

--json prints one object, `version` 1:

  {\"version\": 1, \"saved\": \"2026-11-21T18:28:09.120Z\",
   \"bans\": [{\"address\": \"192.0.2.7\", \"jail\": \"sshd\", \"node\": \"web1\",
             \"since\": \"2026-11-21T18:28:04Z\", \"until\": \"2026-11-21T18:58:04Z\"}]}

`address` is an address, or a network with its prefix; `jail` and `node`
are null when the record had none; `until` is null for a permanent ban;
`saved` is when the watcher saved the list (null: it saved none yet). Bans
are sorted by address, IPv4 first. Later versions only add fields.

Reads only, and takes no lock: a running watcher is not disturbed, and no
running watcher is needed. Exit status 0 (even when no ban matches); 2 for
a bad filter; 3 when no watcher ever ran with this state directory.";

const BAN_ABOUT: &str = "\
Share a ban: append one ban record per address to the shared log.

The record is one line, written in one write under the local and the
cross-host lock, for example:

  <13>Nov 21 18:28:04 banshare[3284]: HOST 192.0.2.7 PORT 22 jail=sshd \\
      node=web1 ts=2026-11-21T18:28:04Z bantime=1800 id=5f0c9a...

If the log is missing (share not mounted), locked for longer than
lock_timeout, or otherwise unreachable, the records are spooled locally and
the command still exits 0 with a warning; `banshare flush` (or a running
watcher) delivers them later. The records are kept in a journal in the spool
folder before delivery starts, and delivered by a detached child process, so
the command returns within lock_timeout + io_timeout + 2 s even if the mount
hangs; a run killed midway leaves its journal to `banshare flush`. A log on
a local disk (ext4, xfs, btrfs, tmpfs...), which cannot hang that way, is
delivered to by the command's own process, journal kept.

With `-` as the address, addresses are read from standard input, one per
line (blank lines and lines starting with # are skipped), and appended as
one batch. If any line is not a valid address, the whole batch is refused
with exit status 2 and nothing is written, so a batch is never half-shared.

Addresses no watcher applies are refused the same way (exit status 2,
nothing written): loopback, unspecified, multicast, link-local and
broadcast addresses, networks containing any of them, and networks wider
than [watch] max_prefix_v4 / max_prefix_v6 (/16 and /48 by default).";

const UNBAN_ABOUT: &str = "\
Share an unban: append one unban record per address to the shared log.

Unban records start with UNBAN instead of HOST, so a fail2ban filter that
matches ban lines never mistakes them for bans. Delivery, spooling and `-`
for standard input work as for `banshare ban`.";

const FLUSH_ABOUT: &str = "\
Deliver the records waiting in the local spool to the shared log, oldest
first, exactly once.

A batch whose earlier delivery was interrupted is checked against the log
by record id first, and only its missing records are sent. The journals of
`banshare ban` runs that died before their delivery was confirmed are
delivered too, the same way; those of runs still alive are left to them. Flush stops at
the first batch the log refuses and exits 1 with the records left waiting.";

const COMPACT_ABOUT: &str = "\
Rewrite the shared log keeping only the records that may still be in force
on some watcher, so that it does not grow for ever. Meant to run from a
timer, with the log and the settings from the configuration file.

Kept, byte for byte (signatures stay valid):
  - bans not over yet: their time plus their bantime (or, without one,
    max_bantime), cut to max_bantime as every watcher cuts it, plus a
    minute for clocks that lag;
  - permanent bans (bantime=-1) signed by a trusted node, until an unban
    lifts them (a lifted one stays beside its unban, which every watcher
    must learn, however late);
  - the newest unban of each address and jail, for as long as a watcher
    remembers it: a day (or findtime), and at least max_bantime;
  - the newest signed allowlist record (ALLOW/UNALLOW) of each network and
    signer, for good (whether the signer is an operator is each watcher's
    [trust] operators).
Dropped: bans over or lifted by a newer unban, older unbans, copies of a
record (same id, or same bytes), unsigned allowlist records, records dated
more than a day ahead, and lines that are not records or that the trusted
keys ([trust] keys) refuse. max_bantime is cluster-wide: a node with a
longer one would lose bans.

The copy is made without the lock; the cross-host lock (<log>.lock) is
taken only to copy what writers appended meanwhile and to rename the copy
over the log, atomically on the file server (rename(2) locally, OpenSSH's
posix-rename@openssh.com through sshfs and over SFTP). Through an sshfs
mount on which a process of this host has the log open (a watcher), FUSE
would first move the old log aside, so compaction refuses there (exit 1)
unless the mount has -o hard_remove (--mount-has-hard-remove): run it on
the file server, over sftp://, or on a host that does not follow the log.
If that takes half
of stale_lock, compaction gives up and leaves the log as it was. The new
log starts with a `# banshare-compacted` line, which watchers skip:
they read the old log to its end and the new one from its start, and
drop what they had applied already. Works on a file path (local, sshfs,
NFS) or an sftp:// log. Given a zmq+tcp:// log it does nothing (exit 0):
the publisher compacts its own log, at start and every hour.

The new log gets the old one's owner, group and mode. Run by a user that
cannot give them (not root, not the log's owner), compaction refuses
before writing anything (exit 1): run it as the log's owner, or as root.
A run longer than --timeout gives up (exit 1).";

const COMPACT_EXIT: &str = "\
EXIT STATUS:
    0   Compacted (or, with --dry-run, listed).
    1   Runtime failure: the log unreachable, the lock not taken in time,
        the log replaced meanwhile, the tail too slow to copy under the
        lock, or the log open on this host through an sshfs mount. The log
        is left as it was.
    2   Usage error: a bad argument or configuration, no log given.";

const DEMO_ABOUT: &str = "\
Run a local demonstration in a temporary folder, without root: three nodes,
each with a watcher using the log (dry-run) backend, share bans and an
unban concurrently through one shared log under the lock; then the share
goes away, a ban is spooled, the share comes back, and the spool is
flushed. Prints each step and every ban and unban each watcher applied
(\"node-b applied: ban 192.0.2.10 ...\"), then removes the folder, even when
it fails (unless --keep).";

/// Which log, which node, which spool: shared by every command that writes.
#[derive(Debug, Args, Clone)]
pub struct LogArgs {
    /// The shared log: a local path, a path on an sshfs/NFS mount,
    /// sftp://user@host[:port]/path/newbans.log, a ZeroMQ publisher,
    /// zmq+tcp://host[:port] (docs/zmq.md), or a NATS JetStream stream,
    /// nats://host[:port][,host...]/STREAM (docs/nats.md)
    /// [config: common.log].
    #[arg(long, value_name = "PATH", value_parser = LogLocation::parse)]
    pub log: Option<LogLocation>,

    /// This node's id, stamped on every record [config: common.node]
    /// [default: the host name].
    #[arg(long, value_name = "ID")]
    pub node: Option<NodeId>,

    /// Where records wait while the log is unreachable
    /// [config: common.spool_dir] [default: /var/lib/banshare/spool].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Give up waiting for the lock after this long, and spool
    /// [config: append.lock_timeout] [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_timeout: Option<Duration>,

    /// Break a lock whose holder has shown no change for this long: it died
    /// holding it. Must be shorter than --lock-timeout
    /// [config: append.stale_lock] [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stale_lock: Option<Duration>,

    /// Sign records with this node's key (from `banshare keygen`)
    /// [config: common.key].
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// For an sftp:// log: the private key to log in with
    /// [config: sftp.identity] [default: the SSH agent].
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// For an sftp:// log: the known_hosts file the server's key must be in
    /// [config: sftp.known_hosts] [default: ~/.ssh/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// For an sftp:// log: if the server's key is unknown, trust it and add
    /// it to known_hosts (pinning on first use). A CHANGED key is refused
    /// regardless [config: sftp.accept_new_host_key].
    #[arg(long)]
    pub accept_new_host_key: bool,
}

/// An address argument: one target, or `-` for standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressArg {
    Stdin,
    Target(Target),
}

pub(super) fn parse_address_arg(text: &str) -> Result<AddressArg, String> {
    if text == "-" {
        return Ok(AddressArg::Stdin);
    }
    text.parse()
        .map(AddressArg::Target)
        .map_err(|e: banshare::record::RejectReason| e.to_string())
}

#[derive(Debug, Args)]
pub struct ShareArgs {
    /// IPv4 or IPv6 addresses or CIDR networks, or `-` to read addresses
    /// from standard input, one per line.
    #[arg(required = true, value_name = "ADDRESS", value_parser = parse_address_arg)]
    pub addresses: Vec<AddressArg>,

    /// Ports, as fail2ban writes them: 22, ssh, 0:65535, 80,443
    /// [config: append.port] [default: 0:65535].
    #[arg(long, short = 'p', value_name = "PORTS")]
    pub port: Option<PortSpec>,

    /// The fail2ban jail that banned [config: append.jail].
    #[arg(long, short = 'j', value_name = "JAIL")]
    pub jail: Option<Jail>,

    /// How long the ban lasts: seconds, a duration such as 30m, or -1 for
    /// permanent; at least 1 second. Over 10 years (the record format's
    /// limit) it is shared as 10 years, with a warning. Without it each
    /// watcher applies its own default [config: append.bantime]. Ignored
    /// for unban.
    #[arg(long, short = 'b', value_name = "SECONDS", allow_hyphen_values = true, value_parser = parse_bantime_arg)]
    pub bantime: Option<BantimeArg>,

    #[command(flatten)]
    pub log: LogArgs,
}

/// `--bantime` as given, and the bantime it stands for.
#[derive(Debug, Clone)]
pub struct BantimeArg {
    pub text: String,
    pub bantime: BanTime,
    /// Over the 10-year limit: shared as the limit.
    pub clamped: bool,
}

pub(super) fn parse_bantime_arg(text: &str) -> Result<BantimeArg, String> {
    let (bantime, clamped) = parse_bantime_clamped(text)?;
    Ok(BantimeArg {
        text: text.to_owned(),
        bantime,
        clamped,
    })
}

#[derive(Debug, Args)]
pub struct FlushArgs {
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub log: LogArgs,

    /// Print every line's fate (kept or dropped, and why) and the totals;
    /// change nothing, take no lock.
    #[arg(long)]
    pub dry_run: bool,

    /// The cluster's longest ban; set it as on every watcher
    /// [config: watch.max_bantime] [default: 1w].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_bantime: Option<Duration>,

    /// Keep a ban this long past its end, for watchers whose clocks lag
    /// this host's.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1m")]
    pub clock_margin: Duration,

    /// The log's sshfs mount has `-o hard_remove`: compact even though a
    /// process on this host (a watcher) has the log open. Without that
    /// option FUSE moves an open file aside before renaming over it, and
    /// the log would be missing for a moment, so compaction refuses.
    #[arg(long)]
    pub mount_has_hard_remove: bool,

    /// Give up (exit 1) if the whole compaction takes longer than this: a
    /// hung share would otherwise block it, and its timer, for ever. The
    /// log is then as it was, or wholly replaced (the rename is atomic);
    /// the next run removes a copy left behind.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration file and print the effective configuration
    /// (file values, then defaults) as TOML. Runs the checks `watch` runs
    /// too (the backend and its [backend] settings, the trusted keys file,
    /// state directories holding files of a newer banshare) and loads the
    /// signing key (common.key) as `ban` does, so what it approves the
    /// watcher and the appender accept. A file that sets no `log` in
    /// [common] or no `backend` in [watch] (the packaged default) is
    /// refused as the daemons refuse it: the effective configuration is
    /// printed, then what each command still needs (e.g. "watch (needs
    /// [common] log and [watch] backend)"), and the exit status is 2.
    /// `--for publisher` checks a host that runs only the ZeroMQ
    /// publisher, which needs neither. Exit status: 0 accepted, 2 refused.
    /// `banshare doctor` checks the rest.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// What this host runs: `all` (watch, ban, monitor, compact and
    /// publisher: the file must be enough for each) or `publisher` (only
    /// `banshare publisher`: no log or backend needed).
    #[arg(long = "for", value_name = "WHAT", default_value = "all", value_parser = ["all", "publisher"])]
    pub for_: String,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// How bans are applied: nftables, ipset, fail2ban, command or log
    /// [config: watch.backend].
    #[arg(long, value_name = "BACKEND", value_parser = parse_backend)]
    pub backend: Option<String>,

    /// Where the cursor and status are kept
    /// [config: watch.state_dir] [default: /var/lib/banshare/watch].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// auto (inotify on local filesystems, polling on network ones),
    /// inotify, or poll [config: watch.follow] [default: auto].
    #[arg(long, value_name = "MODE")]
    pub follow: Option<FollowKind>,

    /// How often to poll where inotify is blind (sshfs, NFS, SFTP): each
    /// poll asks for the log's size alone, and reads when it changed; at
    /// least 10ms [config: watch.poll_interval] [default: 50ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_poll_interval)]
    pub poll_interval: Option<Duration>,

    /// Write metrics in Prometheus's text format to this file, for
    /// node_exporter's textfile collector (for example
    /// /var/lib/prometheus/node-exporter/banshare.prom): replaced
    /// atomically at most every 5 seconds, and only when something changed.
    /// Its folder must exist [config: watch.metrics_file].
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// Also serve the metrics over HTTP at http://ADDR:PORT/metrics, for a
    /// Prometheus that scrapes this host directly; a loopback address
    /// (127.0.0.1:9610) unless --metrics-listen-any
    /// [config: watch.metrics_listen].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Allow --metrics-listen on an address other hosts reach. The endpoint
    /// has no authentication: guard it with a firewall
    /// [config: watch.metrics_listen_any].
    #[arg(long)]
    pub metrics_listen_any: bool,

    #[command(flatten)]
    pub log: LogArgs,
}

fn parse_poll_interval(text: &str) -> Result<Duration, String> {
    parse_duration(text).and_then(check_poll_interval)
}

/// A backend name, checked here so that a bad one names the flag.
fn parse_backend(text: &str) -> Result<String, String> {
    text.parse::<BackendKind>()
        .map(|kind| kind.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    /// The watcher's state directory [config: watch.state_dir].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// The spool to count [config: common.spool_dir].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
}

const DOCTOR_ABOUT: &str = "\
Check what this node needs to share and apply bans, and print one line per
finding: ok, warning or problem, each warning and problem followed by a
line saying how to fix it. Takes the same flags as `watch`, so that it
checks what that watcher would use.

Checks, in order:
    config      what watch, ban, monitor and publisher refuse in the
                configuration (config check refuses the same), and a
                missing log or backend
    log         the log is reachable: a local path or a mounted share
                (present, answering within append.io_timeout; an unmounted
                share, whose mount point is an empty local folder, is named
                as such, from /proc/self/mountinfo and /etc/fstab), an
                SFTP server, or a ZeroMQ publisher's ports
    lock        the log's folder takes new files (the lock file), by
                creating and removing an empty probe file there
    follow      inotify or polling, and why (the watcher's own decision)
    backend     the backend's programs (nft, ipset, iptables,
                fail2ban-client, the command's) on PATH
    privileges  CAP_NET_ADMIN (CapEff in /proc/self/status), for nftables
                and ipset
    fail2ban    fail2ban's socket answers, for the fail2ban backend or a
                monitor
    trust       the trusted keys file: present, parseable, writable only
                by its owner (root or this user)
    clock       skew: the log's last records (their ts) against this
                host's clock and the file server's, over 60s is a warning
                naming whose clock is off
    watcher     a watcher runs on the state directory and answers, as
                `status` tells it
    spool       records waiting in this node's spool (a warning)

Changes nothing but the probe file. Run it as the user the watcher runs as:
the privileges and permissions checked are this process's.";

const DOCTOR_EXIT_STATUS: &str = "\
EXIT STATUS:
    0   Every check is ok.
    1   At least one problem.
    2   Usage error (a bad flag).
    4   Warnings, but no problem.";

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON object (`checks`: check, status, detail, fix).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Debug, Args)]
pub struct BansArgs {
    /// Only the bans that cover this address.
    #[arg(long, value_name = "ADDRESS")]
    pub addr: Option<std::net::IpAddr>,

    /// Only the bans that overlap this network (203.0.113.0/24), or an
    /// address.
    #[arg(long, value_name = "NETWORK", value_parser = parse_network)]
    pub net: Option<ipnet::IpNet>,

    /// Only the bans put in force by this origin node's records.
    #[arg(long, value_name = "ID")]
    pub node: Option<NodeId>,

    /// Only the bans of this jail.
    #[arg(long, value_name = "JAIL")]
    pub jail: Option<Jail>,

    /// Print one JSON object (see above) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The watcher's state directory [config: watch.state_dir]
    /// [default: /var/lib/banshare/watch].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    banshare::config::parse_net(text)
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The backend whose rules and sets to remove [config: watch.backend].
    #[arg(long, value_name = "BACKEND", value_parser = parse_backend)]
    pub backend: Option<String>,
}

const MONITOR_ABOUT: &str = "\
Share fail2ban's bans without changing fail2ban's configuration: follow
fail2ban.log (rotation-aware, with a cursor saved in the state directory),
and turn each `NOTICE [jail] Ban IP` and `Unban IP` line into a record in
the shared log, delivered like `banshare ban` (spooled while the log is
unreachable).

Not shared: `Restore Ban` lines (fail2ban re-applying its database at
start), the jails in [monitor] exclude_jails (default: banshare, the
jail that receives banshare's own bans), and addresses every watcher
refuses (loopback, multicast, ...), with a warning. On the first run the monitor
starts at the end of fail2ban.log. fail2ban.log does not say how long a ban
lasts: records carry [monitor] bantime if set, else each watcher applies
its own default.

Use either the monitor or the banshare action on a node, not both, or each
ban is shared twice (harmless: watchers drop repeated reports).

SIGTERM and SIGINT stop it after saving the cursor.";

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// fail2ban's log [config: monitor.fail2ban_log]
    /// [default: /var/log/fail2ban.log].
    #[arg(long, value_name = "PATH")]
    pub fail2ban_log: Option<PathBuf>,

    /// Where the cursor is kept [config: monitor.state_dir]
    /// [default: /var/lib/banshare/monitor].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Write metrics in Prometheus's text format to this file, for
    /// node_exporter's textfile collector: replaced atomically at most
    /// every 5 seconds, and only when a count changed. Its folder must
    /// exist [config: monitor.metrics_file].
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    #[command(flatten)]
    pub log: LogArgs,
}

#[cfg(feature = "zmq")]
const PUBLISHER_ABOUT: &str = "\
Take ban submissions over ZeroMQ, store each in the publisher's own log
(fsynced before it is acknowledged), and broadcast it. Runs in the
foreground and logs to stderr, as systemd expects. See docs/zmq.md.

Sockets (tcp, on --bind):
    --submit-port   5678  REP: submissions, one reply frame per request frame:
                          banshare records (`OK <epoch> <seq>` or
                          `NAK <kind>`) and, with --legacy, fail2ban-zmq-tools'
                          `[TOKEN|]host|jail|action|ip` (the ACK or `NAK`)
    --catch-up-port 5679  REP: `banshare/1 since <epoch> <seq>`, answered with
                          up to 1000 stored records
    --legacy-port   5680  PUB: `host|jail|action|ip`, for the original's
                          subscribers (plaintext)
    --feed-port     5681  PUB: numbered records and a heartbeat every second,
                          for banshare subscribers

The default --bind is 127.0.0.1: nothing outside this host reaches the
publisher until it is given an address (or * for every one).

Legacy submissions (--legacy): off (default) refuses them; token takes
only `TOKEN|host|jail|action|ip` with the token in --token-file; open
takes `host|jail|action|ip` from anyone who reaches the port. A legacy
submission becomes a record of its host, signed with --key when given:
where watchers require signatures, the publisher's public key must then be
trusted for every host that submits through it, so a token holder can ban
in any of those hosts' names. [publisher] bantime sets the bantime those
records carry (none by default: each watcher's default applies).

Records are checked against [trust] as a watcher checks them (when
require_signed is on, unsigned or untrusted records are refused).
Addresses every watcher refuses (loopback, multicast, ...) are refused.
Every refusal is counted by kind and logged, at most 20 a minute; the
counts are logged when the publisher stops.

The data directory holds records.log, epoch and a lock: a second publisher
on the same directory exits 2. SIGTERM and SIGINT stop it.";

#[cfg(feature = "zmq")]
#[derive(Debug, Args)]
pub struct PublisherArgs {
    /// This publisher's node id: its own records and signatures
    /// [config: common.node] [default: the host name].
    #[arg(long, value_name = "ID")]
    pub node: Option<NodeId>,

    /// Where the log and its epoch are kept [config: publisher.data_dir]
    /// [default: /var/lib/banshare/publisher].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The address to listen on, or * for every address
    /// [config: publisher.bind] [default: 127.0.0.1].
    #[arg(long, value_name = "ADDR", value_parser = parse_bind)]
    pub bind: Option<banshare::config::BindAddress>,

    /// Submissions (REP) [config: publisher.submit_port] [default: 5678].
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub submit_port: Option<u16>,

    /// Catch-up requests (REP) [config: publisher.catch_up_port]
    /// [default: 5679].
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub catch_up_port: Option<u16>,

    /// The legacy broadcast (PUB), plaintext; bound only with --legacy open
    /// or token, or without CURVE [config: publisher.legacy_port]
    /// [default: 5680].
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub legacy_port: Option<u16>,

    /// banshare's broadcast (PUB) [config: publisher.feed_port]
    /// [default: 5681].
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub feed_port: Option<u16>,

    /// Legacy submissions: off, open or token [config: publisher.legacy]
    /// [default: off].
    #[arg(long, value_name = "MODE", value_parser = parse_legacy_mode)]
    pub legacy: Option<banshare::config::LegacyMode>,

    /// The file holding the legacy token (for --legacy token)
    /// [config: publisher.token_file].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Sign the records made from legacy submissions with this key (from
    /// `banshare keygen`) [config: common.key].
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Also take legacy messages (only) on this port, in plaintext: how the
    /// original's monitors reach a publisher that uses CURVE
    /// [config: publisher.legacy_submit_port].
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub legacy_submit_port: Option<u16>,

    /// Encrypt banshare's own sockets with CURVE, with this secret key
    /// (from `banshare curve-keygen`); needs --curve-clients. The legacy
    /// broadcast stays plaintext [config: publisher.curve_key_file].
    #[arg(long, value_name = "FILE")]
    pub curve_key: Option<PathBuf>,

    /// The client public keys admitted when CURVE is on, one per line
    /// [config: publisher.curve_clients_file].
    #[arg(long, value_name = "FILE")]
    pub curve_clients: Option<PathBuf>,

    /// Write metrics in Prometheus's text format to this file, for
    /// node_exporter's textfile collector: replaced atomically at most
    /// every 5 seconds, and only when a count changed. Its folder must
    /// exist [config: publisher.metrics_file].
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[cfg(feature = "zmq")]
fn parse_bind(text: &str) -> Result<banshare::config::BindAddress, String> {
    text.parse()
}

#[cfg(feature = "zmq")]
fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("bad port {text:?} (expected 1 to 65535)")),
    }
}

#[cfg(feature = "zmq")]
fn parse_legacy_mode(text: &str) -> Result<banshare::config::LegacyMode, String> {
    text.parse()
}

#[cfg(feature = "nats")]
#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Create the stream the nats:// log names, once, before any node
    /// uses it.
    #[command(long_about = NATS_INIT_ABOUT)]
    Init(NatsInitArgs),
    /// Make this node's NKey (a user key) for the NATS servers; print its
    /// public key.
    #[command(long_about = NATS_KEYGEN_ABOUT)]
    Keygen(NatsKeygenArgs),
}

#[cfg(feature = "nats")]
const NATS_KEYGEN_ABOUT: &str = "\
Make an NKey user key pair for this node: the seed (the secret, SU...) goes \
to --out, readable only by its owner, and is never replaced; the public key \
(U...) is printed, for the servers' authorization list (users = [ { nkey: \
U... } ]). Point [nats] nkey_seed_file at the seed. See docs/nats.md.";

#[cfg(feature = "nats")]
#[derive(Debug, Args)]
pub struct NatsKeygenArgs {
    /// Where to write the seed (never over an existing file).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[cfg(feature = "nats")]
const NATS_INIT_ABOUT: &str = "\
Create the JetStream stream the nats:// log names (--log or common.log): \
subjects banshare.<STREAM>.> (one subject per origin node), file storage, \
limits retention without an age limit, new records refused rather than \
old ones dropped when a size limit is reached. Records leave it only by \
`banshare compact`, which deletes those no watcher can still need. \
Watchers and senders never create it: until it exists they report the log \
as missing and spool.

A stream that exists with the same settings is left alone (exit 0); one \
with other settings is not changed (exit 1). With --dry-run, the stream's \
configuration is printed as JSON and nothing is connected. Server \
credentials and TLS are taken from [nats] of the configuration. \
Retention, and why no ban in force leaves the stream: docs/nats.md.";

#[cfg(feature = "nats")]
#[derive(Debug, Args)]
pub struct NatsInitArgs {
    /// The stream: nats://host[:port][,host[:port]...]/STREAM
    /// [config: common.log].
    #[arg(long, value_name = "URL", value_parser = LogLocation::parse)]
    pub log: Option<LogLocation>,

    /// Copies of the stream, each on its own server: 1, 3 or 5.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub replicas: usize,

    /// How long the servers remember a record id, so that a batch sent
    /// again is stored once [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duplicate_window: Option<Duration>,

    /// Refuse new records once the stream holds this many bytes
    /// [default: no limit].
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,

    /// Print the stream's configuration and do nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum Fail2banCommand {
    /// Write action.d/banshare.conf, filter.d/banshare.conf and
    /// jail.d/banshare.local.example into fail2ban's configuration folder,
    /// from the package's copies in /usr/share/banshare/fail2ban.
    /// No jail changes: fail2ban does not read the example, and the admin
    /// adds the banshare action to the jails of their choice.
    Install(InstallArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// fail2ban's configuration folder.
    #[arg(long, value_name = "DIR", default_value = "/etc/fail2ban")]
    pub dir: PathBuf,

    /// Replace files that exist with other content.
    #[arg(long)]
    pub force: bool,

    /// Where the packaged copies are; when this folder is missing (a
    /// binary built from source), the copies built into banshare are used.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/usr/share/banshare/fail2ban"
    )]
    pub from: PathBuf,
}

const KEYGEN_ABOUT: &str = "\
Make this node's Ed25519 signing key. The private key goes to --out (mode
0600; set `key =` in [common] to sign every record this node writes), the
public key to <out>.pub and to standard output as one line for the trusted
keys file that every watcher reads ([trust] keys):

    web1 ed25519 0bJx...=

Collect one such line per node into that file and distribute it. To rotate
a key without downtime, add the new line beside the old one everywhere,
switch the node to the new key, then remove the old line. See
docs/security.md.";

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// The node id for the public key line [default: common.node].
    #[arg(long, value_name = "ID")]
    pub node: Option<NodeId>,

    /// Replace an existing key file.
    #[arg(long)]
    pub force: bool,
}

#[cfg(feature = "zmq")]
const CURVE_KEYGEN_ABOUT: &str = "\
Make a CURVE key pair for banshare's ZeroMQ sockets: the secret key goes to
--out (mode 0600), the public key to --out with .pub added, and to stdout.

The publisher needs one (publisher.curve_key_file) and the list of its
clients' public keys (publisher.curve_clients_file, one per line, a name
after a space if you like). Every sender and watcher needs one of its own
(zmq.curve_key_file) and the publisher's public key (zmq.curve_server_key).
See docs/zmq.md.";

#[cfg(feature = "zmq")]
#[derive(Debug, Args)]
pub struct CurveKeygenArgs {
    /// Where to write the secret key (never over an existing file).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's temporary folder instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

const SYSTEMD_DROPIN_ABOUT: &str = "\
Write the systemd drop-in for one of the packaged units
(banshare-watch, banshare-monitor, banshare-publisher, banshare-compact)
from the configuration: the package cannot know where the log is.

For a log on a path (a local disk, an sshfs or NFS mount) the drop-in
holds RequiresMountsFor= on the log's folder, so the unit starts only after
the share is mounted and stops before it is unmounted, and ReadWritePaths=
for that folder (the lock file is created beside the log, and every one of
these units writes the log: the watcher delivers the spool). An sftp://,
zmq+tcp:// or nats:// log needs no mount: the drop-in waits for the network
instead.
A spool or state folder configured outside /var/lib/banshare is made
writable too.

The units run as the banshare user with CAP_NET_ADMIN only. The drop-in
runs the unit as root, still bounded to the capabilities it needs, with
--user root, for a watcher with the fail2ban backend (its socket is
root's), and for watch and monitor where fail2ban's banshare action is
installed (fail2ban runs it as root, so what it spools is root's, and
these units deliver the spool). --user banshare keeps the banshare user.
A watcher with the fail2ban backend is also ordered After=fail2ban.service,
whose socket it needs.

Writes <dir>/banshare-<unit>.service.d/banshare-dropin.conf atomically,
then `systemctl daemon-reload` applies it.";

/// The packaged units a drop-in can be written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnitName {
    Watch,
    Monitor,
    Publisher,
    Compact,
}

/// Who a unit runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnitUser {
    /// The banshare user, unless the backend needs root (fail2ban).
    Auto,
    Banshare,
    Root,
}

#[derive(Debug, Args)]
pub struct SystemdDropinArgs {
    /// The unit to write the drop-in for.
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitName,

    /// Who the unit runs as [default: auto].
    #[arg(long, value_name = "USER", default_value = "auto")]
    pub user: UnitUser,

    /// systemd's folder for the admin's units.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    pub dir: PathBuf,

    /// Print the drop-in instead of writing it.
    #[arg(long)]
    pub print: bool,

    /// fail2ban's configuration folder: with its banshare action installed
    /// (run as root by fail2ban), watch and monitor run as root too.
    #[arg(long, value_name = "DIR", default_value = "/etc/fail2ban")]
    pub fail2ban_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write banshare.1 and a page per command into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Write banshare.bash, _banshare (zsh) and banshare.fish into DIR.
    Completions {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}
