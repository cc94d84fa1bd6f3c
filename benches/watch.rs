//! The watcher (`banshare watch`) against the seed system's stock fail2ban,
//! each figure beside its baseline measured in the same run:
//!
//! - (a) propagation latency over sshfs on 10 watcher hosts;
//! - (b) catch-up over a 1,000,000-record log;
//! - (c) applying 10,000 bans;
//! - (d) the watcher's memory with 100,000 active bans;
//! - (e), (f), (g): signed catch-up, forged records, and the cost per
//!   record from 100,000 to 5,000,000 records (issue 16; see
//!   `watch/catch_up.rs`);
//! - (h) applying 100,000 new bans with the nftables backend, against one
//!   `nft -f` that adds the same elements (the floor).
//!
//! `cargo bench --bench watch`, as root (test hosts in network namespaces,
//! sshd, sshfs, nftables, fail2ban 1.0.2, valgrind, GNU time). Prints
//! Markdown tables for docs/benchmarks.md on stdout and progress on stderr;
//! takes about twenty-five minutes. Like benches/append.rs it does nothing
//! without `--bench`, so `cargo test --benches` stays fast. Name sections to
//! run only those: `propagation` (a), `catch-up` (b), `apply` ((c) and (d),
//! which the memory table needs (b) for too), `signed` ((e) to (g), about
//! fifteen minutes; `forged` is (f) alone) and `apply-floor` ((h), about half a minute), e.g.
//! `cargo bench --bench watch -- signed apply-floor`.

#[path = "watch/catch_up.rs"]
mod catch_up;
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use banshare::backend::{self, Action, BackendKind, BackendSettings, Ban};
use banshare::record::{PortSpec, Target};
use common::element_addresses;
use support::cluster::{Cluster, require_root};
use support::fail2ban::{Fail2ban, logger_line};
use support::{BANSHARE, wait_until};

/// (a): watcher hosts measured, and bans per pacing.
const WATCHERS: usize = 10;
const BURST_BANS: usize = 60;
const ISOLATED_BANS: usize = 25;
/// (b), (c), (d): records in the logs.
const CATCH_UP_RECORDS: usize = 1_000_000;
const APPLY_BANS: usize = 10_000;
/// (c): `fail2ban-client banip` calls with one address each, extrapolated.
const F2B_SINGLE_CALLS: usize = 300;
/// (c): addresses per `set <jail> banip ...` call (banshare's own fail2ban
/// backend uses the same chunk).
const F2B_CHUNK: usize = 1000;
const MEMORY_BANS: usize = 100_000;
/// (h): bans per apply, and rounds (the median is reported).
const FLOOR_BANS: usize = 100_000;
const FLOOR_ROUNDS: usize = 3;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    require_root();
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let start = Instant::now();
    let mut out = String::new();
    let mut section = |text: String| {
        println!("{text}");
        out += &text;
        out.push('\n');
    };
    if wanted("propagation") {
        section(propagation());
    }
    let catch_up = wanted("catch-up").then(catch_up);
    if let Some(c) = &catch_up {
        section(c.table.clone());
    }
    if wanted("apply") {
        let (apply_table, memory_rows) = apply_and_memory();
        section(apply_table);
        let mut memory = memory_rows;
        memory.extend(catch_up.map(|c| c.memory));
        section(memory_table(&memory));
    }
    if wanted("signed") {
        section(catch_up::run());
    } else if wanted("forged") {
        section(catch_up::run_forged());
    }
    if wanted("apply-floor") {
        section(apply_floor());
    }
    eprintln!(
        "\n==== all tables ({:.0} s in all) ====\n",
        start.elapsed().as_secs_f64()
    );
    println!("{out}");
}

fn progress(message: &str) {
    eprintln!("[watch bench] {message}");
}

// ---------------------------------------------------------------------------
// (a) propagation latency
// ---------------------------------------------------------------------------

/// 11 hosts mount the share: hosts 0-9 run a watcher (or a fail2ban), host
/// 10 only appends, so every one of the 10 measured hosts applies every ban.
fn propagation() -> String {
    let hosts = WATCHERS + 1;
    let appender = WATCHERS;
    progress(&format!(
        "(a) building {hosts} test hosts with sshfs mounts"
    ));
    let cluster = Cluster::new("watchlat", hosts);
    let mounts: Vec<PathBuf> = (0..hosts).map(|i| cluster.mount(i)).collect();
    let work = tempfile::tempdir().unwrap();
    let export = cluster.export_dir();
    fs::write(export.join("newbans.log"), b"").unwrap();
    fs::write(export.join("f2b.log"), b"").unwrap();
    let monitors = Monitors::start(&cluster, WATCHERS);

    let mut rng = XorShift(0x5eed_ba45_4a4e);
    let burst_gaps: Vec<Duration> = (0..BURST_BANS).map(|_| rng.millis(250, 350)).collect();
    // 3-5 s: a whole multiple of fail2ban's 2 s polling cycle and of
    // banshare's 250 ms, so that each append falls at a uniformly random
    // phase of both.
    let isolated_gaps: Vec<Duration> = (0..ISOLATED_BANS).map(|_| rng.millis(3000, 5000)).collect();
    let mut rows = Vec::new();

    // banshare: `banshare watch --backend nftables --follow auto` on each.
    {
        let mut watchers: Vec<Watcher> = (0..WATCHERS)
            .map(|i| {
                Watcher::spawn(
                    Some(cluster.node_ns(i)),
                    "nftables",
                    &mounts[i].join("newbans.log"),
                    &work.path().join(format!("n{i}")),
                    &format!("node{i}"),
                )
            })
            .collect();
        let mut modes = Vec::new();
        for w in &mut watchers {
            modes.push(w.wait_started());
        }
        assert!(
            modes.iter().all(|m| m == "poll every 250ms"),
            "follow auto should poll on sshfs, got {modes:?}"
        );
        progress("(a) 10 banshare watchers up (auto -> poll every 250ms)");
        let log = mounts[appender].join("newbans.log");
        let spool = work.path().join("appender-spool");
        let append = |addr: Ipv4Addr| banshare_ban(&log, &spool, addr);
        warm_up(&monitors, Ipv4Addr::new(10, 70, 0, 1), &append);
        for (pacing, gaps, net) in [
            ("0.25-0.35 s apart", &burst_gaps, 71),
            ("3-5 s apart", &isolated_gaps, 72),
        ] {
            let addrs = addresses(net, gaps.len());
            let m = measure(&monitors, gaps, &addrs, &append);
            rows.push(LatencyRow::new("banshare watch (poll 250 ms)", pacing, m));
            progress(&format!("(a) banshare, {pacing}: done"));
        }
        for w in &mut watchers {
            w.terminate();
        }
        for w in &mut watchers {
            w.stop();
        }
        let lines = count_lines(&export.join("newbans.log"));
        assert_eq!(
            lines,
            1 + BURST_BANS + ISOLATED_BANS,
            "every `banshare ban` reached the log (none spooled)"
        );
    }

    // Baseline: the seed system. A stock fail2ban per host polling the
    // shared file through the same mounts, banning with nftables-allports.
    {
        let mut servers: Vec<Fail2ban> = (0..WATCHERS)
            .map(|i| {
                Fail2ban::spawn(
                    Some(cluster.node_ns(i)),
                    "newbans",
                    &format!(
                        "filter = newbans\nlogpath = {}\nbackend = polling\nmaxretry = 1\n\
                         findtime = 1d\nbantime = 1d\nbanaction = nftables-allports\n",
                        mounts[i].join("f2b.log").display()
                    ),
                )
            })
            .collect();
        for s in &mut servers {
            s.wait_ready();
        }
        progress("(a) 10 fail2ban servers up");
        let log = mounts[appender].join("f2b.log");
        let append = |addr: Ipv4Addr| {
            // The seed system's append: one O_APPEND write of a logger line.
            let line = logger_line(&addr.to_string(), 22);
            let mut f = OpenOptions::new().append(true).open(&log).unwrap();
            f.write_all(line.as_bytes()).unwrap();
        };
        // The first ban also runs the action's actionstart (table, chain,
        // set): not measured.
        warm_up(&monitors, Ipv4Addr::new(10, 80, 0, 1), &append);
        for (pacing, gaps, net) in [
            ("0.25-0.35 s apart", &burst_gaps, 81),
            ("3-5 s apart", &isolated_gaps, 82),
        ] {
            let addrs = addresses(net, gaps.len());
            let m = measure(&monitors, gaps, &addrs, &append);
            rows.push(LatencyRow::new(
                "baseline: fail2ban 1.0.2, backend polling",
                pacing,
                m,
            ));
            progress(&format!("(a) fail2ban, {pacing}: done"));
        }
        for s in &servers {
            s.terminate();
        }
        // Drop waits for each.
    }
    drop(monitors);
    latency_table(&mut rows)
}

/// One address per ban: 10.<net>.<i / 250>.<1 + i % 250>.
fn addresses(net: u8, n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| Ipv4Addr::new(10, net, (i / 250) as u8, (1 + i % 250) as u8))
        .collect()
}

/// `banshare ban` as fail2ban's action runs it: one process, one locked
/// append through the appender host's sshfs mount.
fn banshare_ban(log: &Path, spool: &Path, addr: Ipv4Addr) {
    let out = Command::new(BANSHARE)
        .args(["--config", "/dev/null", "--quiet", "ban"])
        .arg(addr.to_string())
        .args([
            "--port",
            "22",
            "--jail",
            "sshd",
            "--bantime",
            "3600",
            "--node",
            "appender",
        ])
        .arg("--log")
        .arg(log)
        .arg("--spool-dir")
        .arg(spool)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "banshare ban failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nft monitor new elements` in each measured host: when each address
/// first shows up in any set there. The kernel pushes each committed element
/// to the monitor, so nothing polls: 10 hosts polled with `nft get element`
/// every 5 ms would need about 8 cores of process starts on this 2-core
/// machine and disturb what it measures.
struct Monitors {
    children: Vec<Child>,
    rx: Receiver<(usize, Ipv4Addr, Instant)>,
    hosts: usize,
}

impl Monitors {
    fn start(cluster: &Cluster, hosts: usize) -> Monitors {
        let (tx, rx) = mpsc::channel();
        let mut children = Vec::new();
        for node in 0..hosts {
            // stdbuf: one line per event, not one 4 KiB buffer at a time.
            let mut child = cluster
                .command_in(cluster.node_ns(node), "stdbuf")
                .args(["-oL", "nft", "monitor", "new", "elements"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nft monitor");
            let stdout = child.stdout.take().unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let at = Instant::now();
                    for addr in element_addresses(&line) {
                        let _ = tx.send((node, addr, at));
                    }
                }
            });
            children.push(child);
        }
        Monitors {
            children,
            rx,
            hosts,
        }
    }
}

impl Drop for Monitors {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// When each address first appeared on each measured host.
struct Seen {
    first: HashMap<Ipv4Addr, Vec<Option<Instant>>>,
    hosts: usize,
}

impl Seen {
    fn new(hosts: usize) -> Seen {
        Seen {
            first: HashMap::new(),
            hosts,
        }
    }

    /// Takes monitor events until `until`.
    fn pump(&mut self, rx: &Receiver<(usize, Ipv4Addr, Instant)>, until: Instant) {
        loop {
            let wait = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok((host, addr, at)) => {
                    let slots = self
                        .first
                        .entry(addr)
                        .or_insert_with(|| vec![None; self.hosts]);
                    slots[host].get_or_insert(at);
                }
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => panic!("every nft monitor died"),
            }
        }
    }

    /// When `addr` was present on every host, if it is.
    fn on_all(&self, addr: Ipv4Addr) -> Option<Instant> {
        let slots = self.first.get(&addr)?;
        slots
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }
}

struct Measured {
    latencies: Vec<Duration>,
    /// Bans not present on every host within the deadline.
    missing: usize,
}

/// Appends one ban per gap (waiting the gap first), then waits up to 30 s
/// for the last; each latency runs from just before its append to the
/// element being present on the last of the hosts.
fn measure(
    monitors: &Monitors,
    gaps: &[Duration],
    addrs: &[Ipv4Addr],
    append: &dyn Fn(Ipv4Addr),
) -> Measured {
    let mut seen = Seen::new(monitors.hosts);
    let mut sent = Vec::new();
    let mut next = Instant::now();
    for (gap, &addr) in gaps.iter().zip(addrs) {
        next += *gap;
        seen.pump(&monitors.rx, next);
        sent.push(Instant::now());
        append(addr);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && addrs.iter().any(|a| seen.on_all(*a).is_none()) {
        seen.pump(&monitors.rx, Instant::now() + Duration::from_millis(50));
    }
    let mut latencies = Vec::new();
    let mut missing = 0;
    for (addr, t0) in addrs.iter().zip(sent) {
        match seen.on_all(*addr) {
            Some(t) => latencies.push(t.saturating_duration_since(t0)),
            None => missing += 1,
        }
    }
    Measured { latencies, missing }
}

/// One ban that is not measured: the monitors are live and the first-ban
/// costs (lazy action start) are paid.
fn warm_up(monitors: &Monitors, addr: Ipv4Addr, append: &dyn Fn(Ipv4Addr)) {
    let m = measure(monitors, &[Duration::ZERO], &[addr], append);
    assert_eq!(
        m.missing, 0,
        "the warm-up ban {addr} never reached every host"
    );
}

struct LatencyRow {
    system: &'static str,
    pacing: &'static str,
    measured: Measured,
}

impl LatencyRow {
    fn new(system: &'static str, pacing: &'static str, measured: Measured) -> LatencyRow {
        LatencyRow {
            system,
            pacing,
            measured,
        }
    }
}

fn latency_table(rows: &mut [LatencyRow]) -> String {
    // Each banshare row beside the baseline with the same pacing.
    rows.sort_by_key(|r| r.pacing);
    let mut t = String::from(
        "### (a) Propagation latency, 10 hosts over sshfs\n\n\
         | system | appends | bans | p50 s | p90 s | p99 s | max s | not on all hosts in 30 s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows.iter_mut() {
        let l = &mut r.measured.latencies;
        l.sort();
        let n = l.len() + r.measured.missing;
        t += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.system,
            r.pacing,
            n,
            secs(percentile(l, 0.50)),
            secs(percentile(l, 0.90)),
            secs(percentile(l, 0.99)),
            secs(l.last().copied()),
            r.measured.missing
        );
    }
    t
}

/// Nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.3}", d.as_secs_f64()))
}

/// A small fixed-seed generator: the same gaps for banshare and baseline,
/// and in every run, without phase-locking to either poll interval.
struct XorShift(u64);

impl XorShift {
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(low + self.0 % (high - low))
    }
}

// ---------------------------------------------------------------------------
// Watchers and processes
// ---------------------------------------------------------------------------

/// `banshare watch`, perhaps in a namespace; killed on drop.
struct Watcher {
    child: Option<Child>,
    state: PathBuf,
    started: Instant,
}

impl Watcher {
    fn spawn(ns: Option<&str>, backend: &str, log: &Path, dir: &Path, node: &str) -> Watcher {
        Watcher::spawn_with(ns, backend, log, dir, node, Path::new("/dev/null"))
    }

    /// Like `spawn`, with a configuration file.
    fn spawn_with(
        ns: Option<&str>,
        backend: &str,
        log: &Path,
        dir: &Path,
        node: &str,
        config: &Path,
    ) -> Watcher {
        fs::create_dir_all(dir).unwrap();
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                // `ip netns exec` execs: the child is the watcher itself.
                c.args(["netns", "exec", ns, &catch_up::banshare()]);
                c
            }
            None => Command::new(catch_up::banshare()),
        };
        let started = Instant::now();
        let child = command
            .arg("--config")
            .arg(config)
            .args(["watch", "--backend", backend])
            .args(["--follow", "auto", "--node", node])
            .arg("--log")
            .arg(log)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("watch.err")).unwrap())
            .spawn()
            .unwrap();
        Watcher {
            child: Some(child),
            state: dir.join("state"),
            started,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the first status file (written after the first look at
    /// the log) and returns the follow mode it reports.
    fn wait_started(&mut self) -> String {
        let status = self.state.join("status.json");
        let up = wait_until(Duration::from_secs(20), || status.exists());
        assert!(
            up,
            "a watcher did not start: see {}",
            self.err_path().display()
        );
        let value: serde_json::Value = serde_json::from_slice(&fs::read(status).unwrap()).unwrap();
        value["mode"].as_str().unwrap_or_default().to_owned()
    }

    fn err_path(&self) -> PathBuf {
        self.state.with_file_name("watch.err")
    }

    /// The saved cursor's offset (0 before the first save).
    fn offset(&self) -> u64 {
        let Ok(data) = fs::read(self.state.join("cursor.json")) else {
            return 0;
        };
        let value: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
        value["position"]["seq"].as_u64().unwrap_or(0)
    }

    /// Waits until the saved cursor reaches `size`; the time since spawn.
    fn wait_offset(&self, size: u64, timeout: Duration) -> Duration {
        let done = wait_until(timeout, || self.offset() >= size);
        let elapsed = self.started.elapsed();
        assert!(
            done,
            "the watcher stopped at byte {} of {size}: see {}",
            self.offset(),
            self.err_path().display()
        );
        elapsed
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.state.join("status.json")).unwrap()).unwrap()
    }

    fn terminate(&self) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
    }

    /// SIGTERM and wait (up to 60 s, then SIGKILL). Returns how long the
    /// shutdown took, whether it exited with status 0, and its peak RSS
    /// over the whole run including the shutdown (kB, see `wait_peak`).
    fn stop(&mut self) -> (Duration, bool, u64) {
        let Some(child) = self.child.take() else {
            return (Duration::ZERO, false, 0);
        };
        let t = Instant::now();
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let (ok, peak) = wait_peak(child, Duration::from_secs(60), Duration::from_millis(1));
        (t.elapsed(), ok, peak)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` to exit (killing it after `timeout`), reading its
/// VmHWM every `every` meanwhile. Returns whether it exited with status 0,
/// and the last VmHWM read (kB): its peak RSS up to a moment before it
/// exited. Not getrusage: a spawned child's ru_maxrss starts at its
/// parent's RSS (the mm it shared until exec), here the bench's own.
fn wait_peak(mut child: Child, timeout: Duration, every: Duration) -> (bool, u64) {
    let deadline = Instant::now() + timeout;
    let mut peak = 0;
    loop {
        peak = peak.max(memory_of(child.id()).0);
        match child.try_wait() {
            Ok(Some(status)) => return (status.success(), peak),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(every),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return (false, peak);
            }
        }
    }
}

/// VmHWM and VmRSS of `pid`, in kB.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

fn count_lines(path: &Path) -> usize {
    fs::read(path)
        .unwrap()
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Nodes the records of (b), (c) and (d) come from, and the span of time
/// they were written in (all still in force: bantime 3600).
const RECORD_NODES: usize = 100;
const RECORD_SPAN_SECS: i64 = 50 * 60;

/// `n` banshare records for unique addresses from 10.<net>.0.0 on, in time
/// order over the last 50 minutes, round-robin from 100 nodes, jail sshd
/// (as fail2ban's action writes them), bantime 3600, unique ids. Spread so that no node sends more than the circuit
/// breaker's default 600 bans a minute (`[trust]
/// max_bans_per_node_per_minute`): 1,000,000 records are 200 per node and
/// minute. From one node at one time, all but the first 600 are refused.
fn write_records(path: &Path, n: usize, net: u8, id_base: u64) -> u64 {
    let now = chrono::Utc::now();
    let start = now - chrono::Duration::seconds(RECORD_SPAN_SECS);
    let step_ms = RECORD_SPAN_SECS as f64 * 1000.0 / n as f64;
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut header = (i64::MIN, String::new());
    for i in 0..n {
        let ts = start + chrono::Duration::milliseconds((i as f64 * step_ms) as i64);
        if ts.timestamp() != header.0 {
            let local = ts.with_timezone(&chrono::Local).format("%b %d %H:%M:%S");
            header = (ts.timestamp(), local.to_string());
        }
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, net, 0, 0)) + i as u32);
        writeln!(
            w,
            "<13>{} banshare[1]: HOST {addr} PORT 22 jail=sshd node=n{} ts={} bantime=3600 id={:024x}",
            header.1,
            i % RECORD_NODES,
            ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            id_base + i as u64
        )
        .unwrap();
    }
    w.flush().unwrap();
    fs::metadata(path).unwrap().len()
}

/// The addresses `write_records` uses.
fn record_addresses(n: usize, net: u8) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, net, 0, 0)) + i as u32))
        .collect()
}

// ---------------------------------------------------------------------------
// (b) catch-up
// ---------------------------------------------------------------------------

struct CatchUp {
    table: String,
    memory: MemoryRow,
}

fn catch_up() -> CatchUp {
    progress("(b) writing a 1,000,000-record log");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    let size = write_records(&log, CATCH_UP_RECORDS, 0, 1);

    progress("(b) banshare watch --backend log");
    let mut watcher = Watcher::spawn(None, "log", &log, &dir.path().join("w"), "bench");
    let elapsed = watcher.wait_offset(size, Duration::from_secs(300));
    let (hwm, rss) = memory_of(watcher.pid());
    let (shutdown, ok, maxrss) = watcher.stop();
    assert!(ok, "the watcher failed on SIGTERM");
    let status = watcher.status();
    assert_eq!(
        status["applied"].as_u64(),
        Some(CATCH_UP_RECORDS as u64),
        "{status}"
    );

    progress("(b) baseline: fail2ban-regex");
    let (f2b_elapsed, f2b_rss, lines) =
        catch_up::fail2ban_regex(&log, dir.path(), Duration::from_secs(300));
    assert!(
        lines.contains(&format!("{CATCH_UP_RECORDS} matched")),
        "fail2ban-regex did not match every line: {lines:?}"
    );

    let mut t = format!(
        "### (b) Catch-up over a {CATCH_UP_RECORDS}-record log ({} MB)\n\n\
         | system | records | seconds | records/s | peak RSS MB | notes |\n\
         |---|---:|---:|---:|---:|---|\n",
        size / 1_000_000
    );
    t += &format!(
        "| banshare watch --backend log | {CATCH_UP_RECORDS} | {:.2} | {:.0} | {} | start to cursor at end of log; RSS then {} MB; SIGTERM took {:.2} s, peak over the whole run incl. shutdown {} MB |\n",
        elapsed.as_secs_f64(),
        CATCH_UP_RECORDS as f64 / elapsed.as_secs_f64(),
        mb(hwm),
        mb(rss),
        shutdown.as_secs_f64(),
        mb(maxrss),
    );
    t += &format!(
        "| baseline: fail2ban-regex (newbans filter) | {CATCH_UP_RECORDS} | {:.2} | {:.0} | {} | {lines} |\n",
        f2b_elapsed.as_secs_f64(),
        CATCH_UP_RECORDS as f64 / f2b_elapsed.as_secs_f64(),
        mb(f2b_rss),
    );
    CatchUp {
        table: t,
        memory: MemoryRow {
            what: "banshare watch --backend log, catch-up (b)",
            bans: CATCH_UP_RECORDS,
            hwm,
            rss,
            with_save: Some(maxrss),
        },
    }
}

// ---------------------------------------------------------------------------
// (c) applying 10,000 bans, (d) memory
// ---------------------------------------------------------------------------

struct MemoryRow {
    what: &'static str,
    bans: usize,
    /// VmHWM and VmRSS once every ban is applied, kB.
    hwm: u64,
    rss: u64,
    /// Peak RSS of the whole run up to exit (getrusage), which includes the
    /// shutdown's save of the active bans, kB; None for the baseline.
    with_save: Option<u64>,
}

struct ApplyRow {
    system: &'static str,
    method: String,
    bans: usize,
    elapsed: Duration,
    /// For a baseline run on fewer addresses: the time for APPLY_BANS.
    extrapolated: Option<Duration>,
}

fn apply_and_memory() -> (String, Vec<MemoryRow>) {
    progress("(c) building 4 fresh test hosts");
    let cluster = Cluster::new("watchapply", 4);
    let work = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let mut memory = Vec::new();

    // Library: one apply() of 10,000 bans.
    {
        let ns = cluster.node_ns(0);
        let settings = BackendSettings {
            exec_prefix: ["ip", "netns", "exec", ns].map(String::from).to_vec(),
            ..BackendSettings::default()
        };
        let mut nft = backend::open(BackendKind::Nftables, &settings).unwrap();
        nft.setup().unwrap();
        let actions: Vec<Action> = record_addresses(APPLY_BANS, 10)
            .into_iter()
            .map(|a| {
                Action::Ban(Ban {
                    target: Target::Addr(IpAddr::V4(a)),
                    ports: PortSpec::all(),
                    jail: None,
                    remaining: Some(Duration::from_secs(3600)),
                    origin: None,
                    ts: None,
                })
            })
            .collect();
        for (method, expect_new) in [
            ("library: one apply() of new bans", true),
            ("library: the same apply() again (all present)", false),
        ] {
            let t = Instant::now();
            nft.apply(&actions).unwrap();
            let elapsed = t.elapsed();
            assert_eq!(
                cluster.nft_set_len(ns, "banshare", "v4"),
                APPLY_BANS,
                "{method}: new {expect_new}"
            );
            rows.push(ApplyRow {
                system: "banshare nftables backend",
                method: method.into(),
                bans: APPLY_BANS,
                elapsed,
                extrapolated: None,
            });
        }
        progress("(c) library apply: done");
    }

    // End to end: a watcher on a 10,000-record log (local file: inotify).
    {
        let ns = cluster.node_ns(1);
        let log = work.path().join("apply.log");
        let size = write_records(&log, APPLY_BANS, 20, 1);
        let mut w = Watcher::spawn(
            Some(ns),
            "nftables",
            &log,
            &work.path().join("e2e"),
            "bench",
        );
        let elapsed = w.wait_offset(size, Duration::from_secs(60));
        let (hwm, rss) = memory_of(w.pid());
        assert_eq!(cluster.nft_set_len(ns, "banshare", "v4"), APPLY_BANS);
        let (_, ok, maxrss) = w.stop();
        assert!(ok, "the watcher failed on SIGTERM");
        rows.push(ApplyRow {
            system: "banshare watch --backend nftables",
            method: "end to end: process start, setup, read, apply, cursor saved".into(),
            bans: APPLY_BANS,
            elapsed,
            extrapolated: None,
        });
        memory.push(MemoryRow {
            what: "banshare watch --backend nftables",
            bans: APPLY_BANS,
            hwm,
            rss,
            with_save: Some(maxrss),
        });
        progress("(c) end to end: done");
    }

    // Baseline: fail2ban-client against a stock fail2ban, nftables-allports.
    {
        let ns = cluster.node_ns(2);
        let empty = work.path().join("empty.log");
        fs::write(&empty, b"").unwrap();
        let mut f2b = Fail2ban::spawn(
            Some(ns),
            "bench",
            &format!(
                "filter = newbans\nlogpath = {}\nbackend = polling\nmaxretry = 1\n\
                 bantime = 1d\nbanaction = nftables-allports\n",
                empty.display()
            ),
        );
        f2b.wait_ready();
        let banip = |addrs: &[Ipv4Addr]| {
            let out = f2b
                .client()
                .args(["set", "bench", "banip"])
                .args(addrs.iter().map(Ipv4Addr::to_string))
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "fail2ban-client banip: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let set = "addr-set-bench";
        let wait_set = |n: usize| {
            let full = wait_until(Duration::from_secs(120), || {
                cluster.nft_set_len(ns, "f2b-table", set) >= n
            });
            assert!(full, "fail2ban's set never held {n} elements");
        };
        // The first ban runs actionstart (table, chain, set): not measured.
        banip(&[Ipv4Addr::new(10, 39, 0, 1)]);
        wait_set(1);
        progress(&format!(
            "(c) baseline: {F2B_SINGLE_CALLS} fail2ban-client calls, one address each"
        ));
        let singles = record_addresses(F2B_SINGLE_CALLS, 40);
        let t = Instant::now();
        for a in &singles {
            banip(std::slice::from_ref(a));
        }
        wait_set(1 + F2B_SINGLE_CALLS);
        let elapsed = t.elapsed();
        rows.push(ApplyRow {
            system: "baseline: fail2ban-client",
            method: "one `set <jail> banip IP` call per address (seed systems)".into(),
            bans: F2B_SINGLE_CALLS,
            elapsed,
            extrapolated: Some(elapsed.mul_f64(APPLY_BANS as f64 / F2B_SINGLE_CALLS as f64)),
        });
        progress(&format!(
            "(c) baseline: {APPLY_BANS} addresses in calls of {F2B_CHUNK}"
        ));
        let chunked = record_addresses(APPLY_BANS, 50);
        let t = Instant::now();
        for chunk in chunked.chunks(F2B_CHUNK) {
            banip(chunk);
        }
        wait_set(1 + F2B_SINGLE_CALLS + APPLY_BANS);
        let elapsed = t.elapsed();
        rows.push(ApplyRow {
            system: "baseline: fail2ban-client",
            method: format!("`set <jail> banip IP1 ... IP{F2B_CHUNK}` (best case)"),
            bans: APPLY_BANS,
            elapsed,
            extrapolated: None,
        });
        let (hwm, rss) = memory_of(f2b.pid().unwrap());
        memory.push(MemoryRow {
            what: "baseline: fail2ban-server (nftables-allports, sqlite db)",
            bans: 1 + F2B_SINGLE_CALLS + APPLY_BANS,
            hwm,
            rss,
            with_save: None,
        });
    }

    // (d) 100,000 active bans.
    {
        progress("(d) watcher with 100,000 bans");
        let ns = cluster.node_ns(3);
        let log = work.path().join("memory.log");
        let size = write_records(&log, MEMORY_BANS, 60, 1);
        let mut w = Watcher::spawn(
            Some(ns),
            "nftables",
            &log,
            &work.path().join("mem"),
            "bench",
        );
        w.wait_offset(size, Duration::from_secs(120));
        let (hwm, rss) = memory_of(w.pid());
        assert_eq!(cluster.nft_set_len(ns, "banshare", "v4"), MEMORY_BANS);
        let (_, ok, maxrss) = w.stop();
        assert!(ok, "the watcher failed on SIGTERM");
        memory.push(MemoryRow {
            what: "banshare watch --backend nftables",
            bans: MEMORY_BANS,
            hwm,
            rss,
            with_save: Some(maxrss),
        });
        // The same log with the log backend: what the nft backend adds.
        let mut w = Watcher::spawn(None, "log", &log, &work.path().join("memlog"), "bench");
        w.wait_offset(size, Duration::from_secs(120));
        let (hwm, rss) = memory_of(w.pid());
        let (_, ok, maxrss) = w.stop();
        assert!(ok, "the watcher failed on SIGTERM");
        memory.push(MemoryRow {
            what: "banshare watch --backend log",
            bans: MEMORY_BANS,
            hwm,
            rss,
            with_save: Some(maxrss),
        });
    }

    let mut t = format!(
        "### (c) Applying {APPLY_BANS} bans in a fresh network namespace\n\n\
         | system | method | bans | seconds | bans/s | seconds for {APPLY_BANS} |\n\
         |---|---|---:|---:|---:|---:|\n"
    );
    for r in &rows {
        let for_all = match r.extrapolated {
            Some(d) => format!("{:.1} (extrapolated)", d.as_secs_f64()),
            None => format!("{:.3}", r.elapsed.as_secs_f64()),
        };
        t += &format!(
            "| {} | {} | {} | {:.3} | {:.0} | {for_all} |\n",
            r.system,
            r.method,
            r.bans,
            r.elapsed.as_secs_f64(),
            r.bans as f64 / r.elapsed.as_secs_f64(),
        );
    }
    (t, memory)
}

fn memory_table(rows: &[MemoryRow]) -> String {
    let mut t = String::from(
        "### (d) Memory with many active bans\n\n\
         | process | active bans | all applied: peak RSS (VmHWM) MB | all applied: RSS (VmRSS) MB | peak up to exit, incl. saving active.json, MB |\n\
         |---|---:|---:|---:|---:|\n",
    );
    let mut sorted: Vec<&MemoryRow> = rows.iter().collect();
    sorted.sort_by_key(|r| r.bans);
    for r in sorted {
        t += &format!(
            "| {} | {} | {} | {} | {} |\n",
            r.what,
            r.bans,
            mb(r.hwm),
            mb(r.rss),
            r.with_save.map_or("-".into(), mb)
        );
    }
    t
}

// ---------------------------------------------------------------------------
// (h) applying 100,000 new bans against one `nft -f` add
// ---------------------------------------------------------------------------

/// Runs `script` with `nft -f -` in namespace `ns`, as the backend runs it
/// (`ip netns exec` included, so both sides pay for it).
fn nft_script(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// banshare's nftables backend applying FLOOR_BANS bans of addresses not in
/// its set, one `apply()` (what a joining node's catch-up or a storm
/// does), against the least any tool can do: one `nft -f` of a single
/// `add element` statement with the same elements and timeouts, into a set
/// of the same type. Each round starts both from an empty set, in turns.
fn apply_floor() -> String {
    progress("(h) one test host");
    let cluster = Cluster::new("applyfloor", 1);
    let ns = cluster.node_ns(0);
    let settings = BackendSettings {
        exec_prefix: ["ip", "netns", "exec", ns].map(String::from).to_vec(),
        ..BackendSettings::default()
    };
    let mut nft = backend::open(BackendKind::Nftables, &settings).unwrap();
    let addrs = record_addresses(FLOOR_BANS, 30);
    let actions: Vec<Action> = addrs
        .iter()
        .map(|a| {
            Action::Ban(Ban {
                target: Target::Addr(IpAddr::V4(*a)),
                ports: PortSpec::all(),
                jail: None,
                remaining: Some(Duration::from_secs(3600)),
                origin: None,
                ts: None,
            })
        })
        .collect();
    let mut floor_script = String::from("add element inet floor v4 {\n");
    for (i, a) in addrs.iter().enumerate() {
        if i > 0 {
            floor_script += ",\n";
        }
        floor_script += &format!("{a} timeout 1h");
    }
    floor_script += "\n}\n";
    let (mut banshare, mut floor, mut again) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..FLOOR_ROUNDS {
        nft.cleanup().unwrap();
        nft.setup().unwrap();
        let t = Instant::now();
        nft.apply(&actions).unwrap();
        banshare.push(t.elapsed());
        assert_eq!(cluster.nft_set_len(ns, "banshare", "v4"), FLOOR_BANS);
        // The same batch again: every element is there, so nft refuses
        // the one-statement transaction and banshare runs the one that is
        // right whatever was there.
        let t = Instant::now();
        nft.apply(&actions).unwrap();
        again.push(t.elapsed());

        nft_script(
            ns,
            "add table inet floor\ndelete table inet floor\nadd table inet floor\n\
             add set inet floor v4 { type ipv4_addr; flags timeout; }\n",
        );
        let t = Instant::now();
        nft_script(ns, &floor_script);
        floor.push(t.elapsed());
        assert_eq!(cluster.nft_set_len(ns, "floor", "v4"), FLOOR_BANS);
        progress(&format!("(h) round {} of {FLOOR_ROUNDS}", round + 1));
    }
    nft.cleanup().unwrap();
    let median = |d: &mut Vec<Duration>| {
        d.sort();
        d[d.len() / 2]
    };
    let (b, f, a) = (
        median(&mut banshare),
        median(&mut floor),
        median(&mut again),
    );
    let mut t = format!(
        "### (h) Applying {FLOOR_BANS} new bans (nftables), median of {FLOOR_ROUNDS} rounds\n\n\
         | what | seconds | bans/s | against the floor |\n|---|---:|---:|---:|\n"
    );
    for (what, d) in [
        ("banshare nftables backend: one apply() of new bans", b),
        (
            "banshare: the same apply() again (all present: refused as new, then add/delete/add)",
            a,
        ),
        (
            "floor: one `nft -f` with one `add element` of the same elements",
            f,
        ),
    ] {
        t += &format!(
            "| {what} | {:.3} | {:.0} | {:.2}x |\n",
            d.as_secs_f64(),
            FLOOR_BANS as f64 / d.as_secs_f64(),
            d.as_secs_f64() / f.as_secs_f64()
        );
    }
    t += &format!(
        "\nfail2ban-client: see (c), {F2B_CHUNK} addresses per `set <jail> banip` call, \
         measured on {APPLY_BANS} bans.\n"
    );
    t
}
