//! Propagation latency over SFTP against sshfs, measured the same way in
//! the same run: 10 watcher hosts follow one log on the test file server
//! (a chrooted SFTP account), either through an sshfs mount of the share
//! or with the SFTP transport (no mount). A ban is appended on the file
//! server's own disk, so both rows measure following, not appending; each
//! latency runs from just before the append to the moment the last of the
//! 10 watchers reported it applied (the log backend's line on its stdout).
//!
//! `cargo bench --bench sftp` (as root). Prints a Markdown table for
//! docs/benchmarks.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, require_root};
use support::{BANSHARE, Daemon, banshare_sh};

const WATCHERS: usize = 10;
const BANS: usize = 40;
/// Between appends: long enough that each ban is measured alone.
const GAP: Duration = Duration::from_millis(700);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    require_root();
    let cluster = Cluster::new("sftpbench", WATCHERS);
    cluster.create_sftp_file("newbans.log");
    let mut rows = Vec::new();
    for via in [Via::Sshfs, Via::Sftp] {
        rows.push((via, measure(&cluster, via)));
    }
    println!("| watchers follow by | watchers | bans | p50 | p90 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (via, mut latencies) in rows {
        latencies.sort();
        let p = |q: f64| {
            latencies[((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
        };
        println!(
            "| {} | {WATCHERS} | {} | {:.3} s | {:.3} s | {:.3} s | {:.3} s |",
            via.describe(),
            latencies.len(),
            p(0.5).as_secs_f64(),
            p(0.9).as_secs_f64(),
            p(0.99).as_secs_f64(),
            latencies.last().unwrap().as_secs_f64()
        );
    }
}

#[derive(Clone, Copy)]
enum Via {
    Sshfs,
    Sftp,
}

impl Via {
    fn describe(self) -> &'static str {
        match self {
            Via::Sshfs => "sshfs mount (poll 250 ms)",
            Via::Sftp => "SFTP, no mount (poll 250 ms)",
        }
    }
}

/// Starts the watchers, appends `BANS` bans one by one, and returns how
/// long each took to be applied on all of them.
fn measure(cluster: &Cluster, via: Via) -> Vec<Duration> {
    let state = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let watchers: Vec<Daemon> = (0..WATCHERS)
        .map(|i| start_watcher(cluster, via, i, state.path(), tx.clone()))
        .collect();
    let net = match via {
        Via::Sshfs => 1,
        Via::Sftp => 2,
    };
    let log = cluster.sftp_share_dir().join("newbans.log");
    // One unmeasured ban: every watcher is up and has read the log once.
    let mut seen: HashMap<Ipv4Addr, Vec<Instant>> = HashMap::new();
    append(&log, state.path(), Ipv4Addr::new(10, net, 255, 1));
    wait_for(
        &rx,
        &mut seen,
        Ipv4Addr::new(10, net, 255, 1),
        Duration::from_secs(60),
    );
    let mut latencies = Vec::new();
    for i in 0..BANS {
        std::thread::sleep(GAP);
        let addr = Ipv4Addr::new(10, net, 0, 1 + i as u8);
        let start = Instant::now();
        append(&log, state.path(), addr);
        let last = wait_for(&rx, &mut seen, addr, Duration::from_secs(30));
        latencies.push(last.saturating_duration_since(start));
    }
    drop(watchers);
    latencies
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

/// When the last watcher applied `addr`.
fn wait_for(
    rx: &mpsc::Receiver<(usize, String, Instant)>,
    seen: &mut HashMap<Ipv4Addr, Vec<Instant>>,
    addr: Ipv4Addr,
    timeout: Duration,
) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(times) = seen.get(&addr).filter(|t| t.len() == WATCHERS) {
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
    i: usize,
    state: &Path,
    tx: mpsc::Sender<(usize, String, Instant)>,
) -> Daemon {
    let log = match via {
        Via::Sshfs => cluster
            .mount_sftp_share(i)
            .join("newbans.log")
            .display()
            .to_string(),
        Via::Sftp => cluster.sftp_url("newbans.log"),
    };
    let config = state.join(format!("w{i}.toml"));
    std::fs::write(&config, "[trust]\nmax_bans_per_node_per_minute = 1000000\n").unwrap();
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
