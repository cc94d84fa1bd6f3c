//! Propagation latency over sshfs and SFTP, and what following costs the
//! file server, for the old polling (a full look at every poll, every
//! 250 ms) against the new default (every 50 ms one request for the log's
//! size, a full look only when it changed or every `safety_poll`), and the
//! seed system's stock fail2ban polling the same file through the same
//! sshfs mounts, in the same run on the same hosts.
//!
//! N test hosts run `banshare watch --backend log`, all following one log
//! in a chrooted SFTP account's share on the test file server: through
//! sshfs mounts of that share (`dir_cache=no,attr_timeout=0,
//! entry_timeout=0`, as the README says), or with the SFTP transport (no
//! mount, one kept connection per watcher). Each ban is appended with
//! `banshare ban` on the file server's own disk, so the rows measure
//! following, not appending. A latency runs from just before the append to
//! the moment the last of the N watchers printed the ban as applied. The
//! gaps between bans are seeded random, 300-700 ms, so that bans fall at
//! every phase of the polls (the same gaps for every row).
//!
//! The baseline row (`fail2ban`, sshfs only) is the Black Hills InfoSec
//! setup: each of the N hosts runs a stock `fail2ban-server` (Debian's
//! 1.0.2, `tests/support/fail2ban.rs`) whose one jail follows the same
//! newbans.log through the host's sshfs mount with `backend = polling`,
//! the seed system's filter (`HOST <HOST> PORT \d+` after the logger
//! header, with the datepattern fail2ban >= 1.0 needs), `maxretry = 1`,
//! `findtime` and `bantime` of a day (every appended line is a ban) and no
//! action at all (`action =`): the `NOTICE [jail] Ban <ip>` line is logged
//! before any action runs, so it is the moment of the ban, and the row
//! measures fail2ban's following, not nftables. The logpath is read from
//! its end (`tail`), like a node joining a running cluster. The appended
//! lines are the same `banshare ban` records as in the other rows: a
//! banshare ban keeps the seed line's `<13>Mmm dd hh:mm:ss tag[pid]: HOST
//! <ip> PORT <port>` start, which the seed filter matches (the warm-up ban
//! proves it on every host before anything is measured). A latency runs
//! from the wall clock just before the append to the latest of the N
//! servers' `Ban <ip>` lines, by the timestamps fail2ban writes (the same
//! wall clock, local time, milliseconds truncated: up to 1 ms early).
//!
//! fail2ban's polling is its default, not configurable per jail: the filter
//! thread stats the file in `Utils.wait_for` with `sleeptime` as the
//! timeout (`JailThread.sleeptime = Utils.DEFAULT_SLEEP_TIME`, 2 s,
//! `fail2ban/server/jailthread.py` and `utils.py`) and sleeps between
//! tries that grow from `DEFAULT_SLEEP_INTERVAL` (0.2 s) by 0.2 s: stats at
//! 0, 0.2, 0.6, 1.2 and 2 s of each 2 s cycle, about 3 a second
//! (`filterpoll.py`), the cycle restarted after every change it finds. On
//! a change it opens the file, reads its first line (rotation check) and
//! the new lines, and closes it. The actions thread then picks the ticket
//! up on the same back-off (up to 0.8 s later, `actions.py`).
//! The row prints on stderr how much of its latency is the filter's part
//! (from the append to the last server's `Found` line).
//!
//! The file server's cost is the CPU time of its sshd processes (the SFTP
//! sessions; the cluster's sftp is internal-sftp, so sshd is all of it)
//! from /proc over the measured stretch, given per node per 10 s, with
//! their write calls (about three per SFTP request); and the same over a
//! stretch with no bans before them (`BANSHARE_BENCH_IDLE_SECS`, default
//! 30): what a fleet costs its file server most of the time.
//!
//! The old polling is the same binary with `safety_poll` equal to the poll
//! interval (250 ms): a full look at every poll, as before the change.
//!
//! `cargo bench --bench sftp` (as root). Knobs, for a small run on a busy
//! machine or the full one on a quiet machine:
//!
//! - `BANSHARE_BENCH_BANS` (default 500): measured bans per row;
//! - `BANSHARE_BENCH_NODES` (default `10,40`): watcher counts;
//! - `BANSHARE_BENCH_VIAS` (default `sshfs,sftp,fail2ban`): row kinds;
//! - `BANSHARE_BENCH_F2B_NODES` (default: those of `BANSHARE_BENCH_NODES`
//!   up to 10): the node counts at which the fail2ban row runs (one Python
//!   server per host: 40 of them crowd a 2-core machine);
//! - `BANSHARE_BENCH_IDLE_SECS` (default 30): the idle stretch per row.
//!
//! Prints Markdown tables for docs/benchmarks.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{NaiveDateTime, TimeZone};
use support::cluster::{Cluster, ServerWork, require_root};
use support::fail2ban::Fail2ban;
use support::{BANSHARE, Daemon, banshare_sh};

/// Between appends, seeded random in this range.
const GAP_MS: (u64, u64) = (300, 700);
/// The most nodes the fail2ban row runs at by default.
const F2B_DEFAULT_MAX_NODES: usize = 10;
/// The fail2ban jail's name, as its `Ban` lines show it.
const F2B_JAIL: &str = "newbans";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    require_root();
    let bans: usize = env_or("BANSHARE_BENCH_BANS", "500").parse().unwrap();
    let nodes = counts(&env_or("BANSHARE_BENCH_NODES", "10,40"));
    let f2b_nodes = match std::env::var("BANSHARE_BENCH_F2B_NODES") {
        Ok(list) => counts(&list),
        Err(_) => nodes
            .iter()
            .copied()
            .filter(|&n| n <= F2B_DEFAULT_MAX_NODES)
            .collect(),
    };
    let vias: Vec<Via> = env_or("BANSHARE_BENCH_VIAS", "sshfs,sftp,fail2ban")
        .split(',')
        .map(|v| match v.trim() {
            "sshfs" => Via::Sshfs,
            "sftp" => Via::Sftp,
            "fail2ban" => Via::Fail2ban,
            other => panic!("unknown transport {other:?} (sshfs, sftp, fail2ban)"),
        })
        .collect();
    let idle = Duration::from_secs(env_or("BANSHARE_BENCH_IDLE_SECS", "30").parse().unwrap());
    let most = *nodes.iter().max().unwrap();
    let cluster = Cluster::new("sftpbench", most);
    cluster.create_sftp_file("newbans.log");
    let mut mounted = 0;
    let mut rows = Vec::new();
    let mut net = 0u8;
    for &n in &nodes {
        if vias.iter().any(|v| v.mounts()) {
            for i in mounted..n {
                cluster.mount_sftp_share(i);
            }
            mounted = mounted.max(n);
        }
        for &via in &vias {
            let pollings: &[Option<Polling>] = match via {
                Via::Fail2ban if f2b_nodes.contains(&n) => &[None],
                Via::Fail2ban => &[],
                Via::Sshfs | Via::Sftp => &[Some(Polling::Old), Some(Polling::New)],
            };
            for &polling in pollings {
                net += 1;
                let row = measure(&cluster, via, polling, n, bans, net, idle);
                eprintln!("done: {} {} nodes", row.describe(), n);
                rows.push(row);
            }
        }
    }
    print_tables(&rows);
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

/// A comma-separated list of node counts.
fn counts(list: &str) -> Vec<usize> {
    list.split(',').map(|n| n.trim().parse().unwrap()).collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Sshfs,
    Sftp,
    /// The seed system: fail2ban's own polling through the sshfs mounts.
    Fail2ban,
}

impl Via {
    /// Whether the nodes follow through their sshfs mounts.
    fn mounts(self) -> bool {
        matches!(self, Via::Sshfs | Via::Fail2ban)
    }
}

/// How the watchers poll.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Polling {
    /// As before: a full look at every poll, every 250 ms.
    Old,
    /// The default now: the size every 50 ms, a full look when it changed
    /// or every `safety_poll` (5 s).
    New,
}

impl Polling {
    fn config(self) -> &'static str {
        match self {
            Polling::Old => "[watch]\npoll_interval = \"250ms\"\nsafety_poll = \"250ms\"\n",
            Polling::New => "[watch]\n",
        }
    }
}

struct Row {
    via: Via,
    /// The watchers' polling; `None` for fail2ban's own.
    polling: Option<Polling>,
    nodes: usize,
    latencies: Vec<Duration>,
    /// Over the measured stretch.
    wall: Duration,
    server: ServerWork,
    /// Over the idle stretch before it.
    idle_wall: Duration,
    idle: ServerWork,
}

impl Row {
    fn describe(&self) -> String {
        let via = match self.via {
            Via::Sshfs => "sshfs mount",
            Via::Sftp => "SFTP, no mount",
            Via::Fail2ban => "baseline: fail2ban 1.0.2 on the sshfs mount",
        };
        let polling = match self.polling {
            Some(Polling::Old) => "old: full look every 250 ms",
            Some(Polling::New) => "new default: size every 50 ms, full look on change or every 5 s",
            None => "backend polling (its default: stats 0.2-0.8 s apart), no action",
        };
        format!("{via}; {polling}")
    }
}

fn print_tables(rows: &[Row]) {
    println!(
        "| watchers follow by; polling | watchers | bans | p50 s | p90 s | p99 s | max s | \
         file server CPU per 10 s | per node per 10 s | server writes per node per s | \
         idle: CPU per node per 10 s | idle: writes per node per s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let mut latencies = row.latencies.clone();
        latencies.sort();
        let p = |q: f64| {
            let rank = (q * latencies.len() as f64).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1].as_secs_f64()
        };
        let per_10s = row.server.cpu.as_secs_f64() * 10.0 / row.wall.as_secs_f64();
        let writes = row.server.writes as f64 / row.wall.as_secs_f64() / row.nodes as f64;
        let idle_secs = row.idle_wall.as_secs_f64().max(f64::MIN_POSITIVE);
        let idle_per_node = row.idle.cpu.as_secs_f64() * 10_000.0 / idle_secs / row.nodes as f64;
        let idle_writes = row.idle.writes as f64 / idle_secs / row.nodes as f64;
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} s | {:.1} ms | {:.0} | \
             {:.1} ms | {:.0} |",
            row.describe(),
            row.nodes,
            latencies.len(),
            p(0.5),
            p(0.9),
            p(0.99),
            latencies.last().unwrap().as_secs_f64(),
            per_10s,
            per_10s * 1000.0 / row.nodes as f64,
            writes,
            idle_per_node,
            idle_writes,
        );
    }
}

/// Starts the followers, appends `bans` bans one by one, and returns how
/// long each took to be applied on all of them, with the file server's
/// work meanwhile. `net` keeps each row's addresses apart.
fn measure(
    cluster: &Cluster,
    via: Via,
    polling: Option<Polling>,
    nodes: usize,
    bans: usize,
    net: u8,
    idle: Duration,
) -> Row {
    let state = tempfile::tempdir().unwrap();
    let mut followers: Box<dyn Followers> = match polling {
        Some(polling) => Box::new(Watchers::start(cluster, via, polling, nodes, state.path())),
        None => Box::new(Fail2bans::start(cluster, nodes)),
    };
    let log = cluster.sftp_share_dir().join("newbans.log");
    // One unmeasured ban: every follower is up and has read the log once.
    let warm_up = Ipv4Addr::new(10, net, 255, 1);
    let start = Start::now();
    append(&log, state.path(), warm_up);
    followers.latency(warm_up, start, Duration::from_secs(120));
    let idle_before = cluster.fileserver_work();
    let idle_started = Instant::now();
    std::thread::sleep(idle);
    let idle_work = cluster.fileserver_work().since(idle_before);
    let idle_wall = idle_started.elapsed();
    // The same gaps for every row.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut latencies = Vec::new();
    let before = cluster.fileserver_work();
    let started = Instant::now();
    for i in 0..bans {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let gap = GAP_MS.0 + (seed >> 33) % (GAP_MS.1 - GAP_MS.0);
        std::thread::sleep(Duration::from_millis(gap));
        let addr = Ipv4Addr::new(10, net, (i / 250) as u8, 1 + (i % 250) as u8);
        let start = Start::now();
        append(&log, state.path(), addr);
        latencies.push(followers.latency(addr, start, Duration::from_secs(30)));
    }
    let server = cluster.fileserver_work().since(before);
    let wall = started.elapsed();
    drop(followers);
    Row {
        via,
        polling,
        nodes,
        latencies,
        wall,
        server,
        idle_wall,
        idle: idle_work,
    }
}

/// `banshare ban` on the file server's own disk.
fn append(log: &Path, dir: &Path, addr: Ipv4Addr) {
    let sh = std::process::Command::new("sh");
    let script = format!("$B ban {addr} $C");
    support::run_ok(banshare_sh(
        sh,
        &script,
        log,
        &dir.join("spool-server"),
        "server",
    ));
}

/// Just before an append, on both clocks: the watchers' stdout is stamped
/// on the monotonic one, fail2ban's log on the wall clock.
#[derive(Clone, Copy)]
struct Start {
    at: Instant,
    wall: SystemTime,
}

impl Start {
    fn now() -> Start {
        Start {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// What follows the log on the N nodes.
trait Followers {
    /// How long after `start` the last node applied `addr`; panics after
    /// `timeout`.
    fn latency(&mut self, addr: Ipv4Addr, start: Start, timeout: Duration) -> Duration;
}

/// `banshare watch` on each node, stamped as each prints a ban applied.
struct Watchers {
    /// Killed on drop.
    _daemons: Vec<Daemon>,
    rx: mpsc::Receiver<(usize, String, Instant)>,
    seen: HashMap<Ipv4Addr, Vec<Instant>>,
    nodes: usize,
}

impl Watchers {
    fn start(cluster: &Cluster, via: Via, polling: Polling, nodes: usize, state: &Path) -> Self {
        let (tx, rx) = mpsc::channel();
        let daemons = (0..nodes)
            .map(|i| start_watcher(cluster, via, polling, i, state, tx.clone()))
            .collect();
        Watchers {
            _daemons: daemons,
            rx,
            seen: HashMap::new(),
            nodes,
        }
    }
}

impl Followers for Watchers {
    fn latency(&mut self, addr: Ipv4Addr, start: Start, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(times) = self.seen.get(&addr).filter(|t| t.len() == self.nodes) {
                return times
                    .iter()
                    .max()
                    .unwrap()
                    .saturating_duration_since(start.at);
            }
            let (_, line, at) = self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("a watcher never applied the ban");
            if let Some(a) = line
                .strip_prefix("ban ")
                .and_then(|r| r.split(' ').next())
                .and_then(|a| a.parse().ok())
            {
                self.seen.entry(a).or_default().push(at);
            }
        }
    }
}

fn start_watcher(
    cluster: &Cluster,
    via: Via,
    polling: Polling,
    i: usize,
    state: &Path,
    tx: mpsc::Sender<(usize, String, Instant)>,
) -> Daemon {
    let log = match via {
        Via::Sshfs => cluster
            .sftp_share_mountpoint(i)
            .join("newbans.log")
            .display()
            .to_string(),
        Via::Sftp => cluster.sftp_url("newbans.log"),
        Via::Fail2ban => unreachable!("fail2ban's rows run no watcher"),
    };
    let config = state.join(format!("w{i}.toml"));
    let text = format!(
        "{}[trust]\nmax_bans_per_node_per_minute = 1000000\n",
        polling.config()
    );
    std::fs::write(&config, text).unwrap();
    let mut child = cluster
        .command_in(cluster.node_ns(i), BANSHARE)
        .arg("--config")
        .arg(&config)
        .args([
            "watch",
            "--backend",
            "log",
            "--follow",
            "poll",
            "--node",
            &format!("w{i}"),
            "--log",
            &log,
        ])
        .arg("--identity")
        .arg(cluster.sftp_identity())
        .arg("--known-hosts")
        .arg(cluster.known_hosts())
        .arg("--state-dir")
        .arg(state.join(format!("state{i}")))
        .arg("--spool-dir")
        .arg(state.join(format!("spool{i}")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((i, line, Instant::now()));
        }
    });
    Daemon(child)
}

/// A stock fail2ban-server on each node, its jail polling the shared log
/// through the node's sshfs mount; a ban is the moment its log says `Ban`.
struct Fail2bans {
    servers: Vec<Fail2ban>,
    logs: Vec<LogTail>,
    /// Each server's `Found` (its filter read the line) and `Ban` (its
    /// actions thread took the ticket) times per address.
    found: HashMap<Ipv4Addr, Vec<SystemTime>>,
    banned: HashMap<Ipv4Addr, Vec<SystemTime>>,
    /// Per ban, from the append to the last server's `Found`: the filter's
    /// share of the latency, printed on stderr at the end.
    to_found: Vec<Duration>,
}

impl Fail2bans {
    fn start(cluster: &Cluster, nodes: usize) -> Self {
        let mut servers: Vec<Fail2ban> = (0..nodes)
            .map(|i| {
                let log = cluster.sftp_share_mountpoint(i).join("newbans.log");
                Fail2ban::spawn(
                    Some(cluster.node_ns(i)),
                    F2B_JAIL,
                    &format!(
                        "filter = newbans\nlogpath = {} tail\nbackend = polling\nmaxretry = 1\n\
                         findtime = 1d\nbantime = 1d\naction =\n",
                        log.display()
                    ),
                )
            })
            .collect();
        for s in &mut servers {
            s.wait_ready();
        }
        let logs = servers
            .iter()
            .map(|s| LogTail::open(&s.log_path()))
            .collect();
        Fail2bans {
            servers,
            logs,
            found: HashMap::new(),
            banned: HashMap::new(),
            to_found: Vec::new(),
        }
    }
}

impl Followers for Fail2bans {
    fn latency(&mut self, addr: Ipv4Addr, start: Start, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            for log in &mut self.logs {
                for line in log.new_lines() {
                    if let Some((a, at)) = notice(&line, "Found") {
                        self.found.entry(a).or_default().push(at);
                    } else if let Some((a, at)) = notice(&line, "Ban") {
                        self.banned.entry(a).or_default().push(at);
                    }
                }
            }
            if let Some(times) = self
                .banned
                .get(&addr)
                .filter(|t| t.len() == self.servers.len())
            {
                // Each server logs `Found` before its `Ban`.
                let since = |t: &SystemTime| t.duration_since(start.wall).unwrap_or_default();
                let found = self.found.get(&addr).into_iter().flatten().max();
                self.to_found.push(found.map(since).unwrap_or_default());
                return since(times.iter().max().unwrap());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.servers.iter().map(Fail2ban::log).collect();
                panic!(
                    "a fail2ban server never banned {addr}; their logs:\n{}",
                    logs.join("\n---\n")
                );
            }
            // Only when this process learns of the bans: the latency comes
            // from the logs' own timestamps.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Fail2bans {
    fn drop(&mut self) {
        // All at once; dropping each then waits for it.
        for s in &self.servers {
            s.terminate();
        }
        // The first is the warm-up ban.
        let mut to_found = self.to_found.get(1..).unwrap_or_default().to_vec();
        to_found.sort();
        if let Some(p50) = to_found.get(to_found.len() / 2) {
            eprintln!(
                "fail2ban, {} servers: append to the last server's Found (the filter's poll \
                 and read): p50 {:.3} s, max {:.3} s; the rest of each latency is the \
                 actions thread's wait for the ticket",
                self.servers.len(),
                p50.as_secs_f64(),
                to_found.last().unwrap().as_secs_f64()
            );
        }
    }
}

/// `2026-11-21 18:41:45,928 fail2ban.actions [752]: NOTICE [newbans] Ban
/// 10.1.0.1` (`word` `Ban`) or `... INFO [newbans] Found 10.1.0.1 - <the
/// line's time>` (`Found`): the address and the time, read as local time
/// as fail2ban writes it. `Ban` is not `Restore Ban` or `Unban`.
fn notice(line: &str, word: &str) -> Option<(Ipv4Addr, SystemTime)> {
    let (_, rest) = line.split_once(&format!("[{F2B_JAIL}] {word} "))?;
    let addr = rest.split_whitespace().next()?.parse().ok()?;
    let (seconds, millis) = line.get(..23)?.split_once(',')?;
    let time = NaiveDateTime::parse_from_str(seconds, "%Y-%m-%d %H:%M:%S").ok()?
        + chrono::Duration::milliseconds(millis.parse().ok()?);
    let time = chrono::Local.from_local_datetime(&time).single()?;
    Some((addr, time.into()))
}

/// Follows a local file by reading what was added since the last call.
struct LogTail {
    file: File,
    /// A line not yet ended.
    partial: Vec<u8>,
}

impl LogTail {
    fn open(path: &Path) -> Self {
        let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        LogTail {
            file,
            partial: Vec::new(),
        }
    }

    /// The lines completed since the last call.
    fn new_lines(&mut self) -> Vec<String> {
        self.file
            .read_to_end(&mut self.partial)
            .unwrap_or_else(|e| panic!("read fail2ban's log: {e}"));
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        String::from_utf8_lossy(&done)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
