//! Propagation latency over sshfs and SFTP, and what following costs the
//! file server, for the old polling (a full look at every poll, every
//! 250 ms) against the new default (every 50 ms one request for the log's
//! size, a full look only when it changed or every `safety_poll`), in the
//! same run on the same hosts.
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
//! - `BANSHARE_BENCH_VIAS` (default `sshfs,sftp`): transports;
//! - `BANSHARE_BENCH_IDLE_SECS` (default 30): the idle stretch per row.
//!
//! Prints Markdown tables for docs/benchmarks.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ServerWork, require_root};
use support::{BANSHARE, Daemon, banshare_sh};

/// Between appends, seeded random in this range.
const GAP_MS: (u64, u64) = (300, 700);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    require_root();
    let bans: usize = env_or("BANSHARE_BENCH_BANS", "500").parse().unwrap();
    let nodes: Vec<usize> = env_or("BANSHARE_BENCH_NODES", "10,40")
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let vias: Vec<Via> = env_or("BANSHARE_BENCH_VIAS", "sshfs,sftp")
        .split(',')
        .map(|v| match v.trim() {
            "sshfs" => Via::Sshfs,
            "sftp" => Via::Sftp,
            other => panic!("unknown transport {other:?} (sshfs, sftp)"),
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
        if vias.contains(&Via::Sshfs) {
            for i in mounted..n {
                cluster.mount_sftp_share(i);
            }
            mounted = mounted.max(n);
        }
        for &via in &vias {
            for polling in [Polling::Old, Polling::New] {
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Sshfs,
    Sftp,
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
    polling: Polling,
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
        };
        let polling = match self.polling {
            Polling::Old => "old: full look every 250 ms",
            Polling::New => "new default: size every 50 ms, full look on change or every 5 s",
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

/// Starts the watchers, appends `bans` bans one by one, and returns how
/// long each took to be applied on all of them, with the file server's
/// work meanwhile. `net` keeps each row's addresses apart.
fn measure(
    cluster: &Cluster,
    via: Via,
    polling: Polling,
    nodes: usize,
    bans: usize,
    net: u8,
    idle: Duration,
) -> Row {
    let state = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let watchers: Vec<Daemon> = (0..nodes)
        .map(|i| start_watcher(cluster, via, polling, i, state.path(), tx.clone()))
        .collect();
    let log = cluster.sftp_share_dir().join("newbans.log");
    // One unmeasured ban: every watcher is up and has read the log once.
    let mut seen: HashMap<Ipv4Addr, Vec<Instant>> = HashMap::new();
    let warm_up = Ipv4Addr::new(10, net, 255, 1);
    append(&log, state.path(), warm_up);
    wait_for(&rx, &mut seen, warm_up, nodes, Duration::from_secs(120));
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
        let start = Instant::now();
        append(&log, state.path(), addr);
        let last = wait_for(&rx, &mut seen, addr, nodes, Duration::from_secs(30));
        latencies.push(last.saturating_duration_since(start));
    }
    let server = cluster.fileserver_work().since(before);
    let wall = started.elapsed();
    drop(watchers);
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

/// When the last of `nodes` watchers applied `addr`.
fn wait_for(
    rx: &mpsc::Receiver<(usize, String, Instant)>,
    seen: &mut HashMap<Ipv4Addr, Vec<Instant>>,
    addr: Ipv4Addr,
    nodes: usize,
    timeout: Duration,
) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(times) = seen.get(&addr).filter(|t| t.len() == nodes) {
            return *times.iter().max().unwrap();
        }
        let (_, line, at) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a watcher never applied the ban");
        if let Some(a) = line
            .strip_prefix("ban ")
            .and_then(|r| r.split(' ').next())
            .and_then(|a| a.parse().ok())
        {
            seen.entry(a).or_default().push(at);
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
