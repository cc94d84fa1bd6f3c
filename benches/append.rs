//! Append throughput: banshare's locked appends against the unlocked
//! `>>` append of the seed system, measured in the same run.
//!
//! `cargo bench --bench append` (as root: the sshfs part builds test hosts
//! in network namespaces). Prints Markdown tables for docs/benchmarks.md.
//! Numbers are appends per second; higher is better. The unlocked baseline
//! is faster and wrong: across hosts it tears lines, and the table counts
//! them.
//!
//! `cargo bench --bench append -- process-rate` runs only the serial
//! per-process rate (`banshare ban` against `logger -s 2>>file` and
//! `/bin/true`, interleaved round by round, so that a busy machine slows
//! all alike); `-- throughput` only the rest. The packaged front binary is
//! measured too when packaging/build-deb has left it in
//! target/package/front.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banshare::transport::lock::{LockTimings, Owner};
use banshare::transport::{FileTransport, Transport};
use support::cluster::{Cluster, require_root};
use support::{BANSHARE, ban_loop, banshare_sh};

struct Row {
    setup: &'static str,
    method: &'static str,
    writers: usize,
    appends: usize,
    elapsed: Duration,
    /// Appends that did not come out as a whole line: torn or lost.
    damaged: usize,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // and must not spend minutes here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |section: &str| only.is_empty() || only.iter().any(|o| o == section);
    if wanted("process-rate") {
        println!("{}", process_rate());
    }
    if !wanted("throughput") {
        return;
    }
    let mut rows = Vec::new();
    for writers in [1, 12] {
        rows.push(local_library(
            writers,
            if writers == 1 { 5000 } else { 500 },
            true,
        ));
        rows.push(local_library(
            writers,
            if writers == 1 { 5000 } else { 500 },
            false,
        ));
        rows.push(local_processes(
            writers,
            if writers == 1 { 300 } else { 50 },
        ));
    }
    require_root();
    for (writers, per_writer) in [(1, 300), (12, 500)] {
        rows.extend(sshfs_processes(writers, per_writer));
    }
    print_table(&rows);
}

fn line(writer: usize, i: usize) -> String {
    format!(
        "<13>Nov 21 18:28:04 bench[1]: HOST 10.{writer}.{}.{} PORT 22 node=w{writer} id={:024x}\n",
        i / 250,
        i % 250,
        writer * 1_000_000 + i
    )
}

/// Threads appending one line per call: through FileTransport (local lock,
/// cross-host lock file, one write, checked close), or with a plain
/// `O_APPEND` write (the baseline).
fn local_library(writers: usize, per_writer: usize, locked: bool) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    fs::write(&log, b"").unwrap();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..writers {
            let (log, lock) = (log.clone(), dir.path().join("local.lock"));
            scope.spawn(move || {
                let owner = Owner {
                    node: format!("w{w}"),
                    pid: 1,
                };
                let mut transport = FileTransport::new(&log, &lock, owner, LockTimings::default());
                for i in 0..per_writer {
                    if locked {
                        transport.append(line(w, i).as_bytes()).unwrap();
                    } else {
                        plain_append(&log, line(w, i).as_bytes());
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    Row {
        setup: "local file",
        method: if locked {
            "banshare (library call)"
        } else {
            "baseline: plain O_APPEND write"
        },
        writers,
        appends: writers * per_writer,
        elapsed,
        damaged: damaged(&log, writers * per_writer),
    }
}

fn plain_append(log: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().append(true).open(log).unwrap();
    f.write_all(data).unwrap();
}

/// `banshare ban` processes, one per append: what a fail2ban action costs.
fn local_processes(writers: usize, per_writer: usize) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    fs::write(&log, b"").unwrap();
    let start = Instant::now();
    let children: Vec<Child> = (0..writers)
        .map(|w| {
            let spool = dir.path().join("spool");
            let script = ban_loop(w, per_writer, "");
            banshare_sh(Command::new("sh"), &script, &log, &spool, &format!("w{w}"))
                .spawn()
                .unwrap()
        })
        .collect();
    wait_all(children);
    Row {
        setup: "local file",
        method: "banshare ban (one process per append)",
        writers,
        appends: writers * per_writer,
        elapsed: start.elapsed(),
        damaged: damaged(&log, writers * per_writer),
    }
}

/// The same addresses as `ban_loop`, as `ban -` batches of `BATCH`. The
/// inner loop runs in the pipe's subshell, so it counts on its own.
fn batch_loop(writer: usize, count: usize) -> String {
    format!(
        "set -e; b=0; while [ $b -lt {batches} ]; do \
           i=$((b * {BATCH})); end=$((i + {BATCH})); \
           while [ $i -lt $end ]; do echo 10.{writer}.$((i / 250)).$((i % 250)); i=$((i + 1)); done \
           | $B ban - $C; b=$((b + 1)); done",
        batches = count / BATCH
    )
}

/// Addresses per `ban -` call in the batch rows.
const BATCH: usize = 50;

#[derive(Clone, Copy)]
enum Method {
    Ban,
    BanBatch,
    Echo,
}

impl Method {
    fn describe(self) -> &'static str {
        match self {
            Method::Ban => "banshare ban (one process per append)",
            Method::BanBatch => "banshare ban - (50 records per append)",
            Method::Echo => "baseline: sh `echo >>` (seed system)",
        }
    }
}

fn echo_loop(writer: usize, count: usize, log: &Path) -> String {
    format!(
        "i=0; while [ $i -lt {count} ]; do \
           echo \"<13>Nov 21 18:28:04 w[$$]: HOST 10.{writer}.$((i / 250)).$((i % 250)) PORT 22\" >> {}; i=$((i + 1)); done",
        log.display()
    )
}

/// 3 hosts (network namespaces) with sshfs mounts of one sshd-served
/// folder; `writers` spread over them round-robin.
fn sshfs_processes(writers: usize, per_writer: usize) -> Vec<Row> {
    let cluster = Cluster::new("bench", 3);
    let mounts: Vec<PathBuf> = (0..3).map(|i| cluster.mount(i)).collect();
    let spools = tempfile::tempdir().unwrap();
    let server_log = cluster.export_dir().join("newbans.log");
    let mut rows = Vec::new();
    for method in [Method::Ban, Method::BanBatch, Method::Echo] {
        fs::write(&server_log, b"").unwrap();
        let start = Instant::now();
        let children: Vec<Child> = (0..writers)
            .map(|w| {
                let node = w % 3;
                let log = mounts[node].join("newbans.log");
                let script = match method {
                    Method::Ban => ban_loop(w, per_writer, ""),
                    Method::BanBatch => batch_loop(w, per_writer),
                    Method::Echo => echo_loop(w, per_writer, &log),
                };
                let sh = cluster.command_in(cluster.node_ns(node), "sh");
                let spool = spools.path().join(format!("n{node}"));
                let mut cmd = banshare_sh(sh, &script, &log, &spool, &format!("n{node}"));
                cmd.stdout(Stdio::null()).spawn().unwrap()
            })
            .collect();
        wait_all(children);
        let elapsed = start.elapsed();
        rows.push(Row {
            setup: "sshfs, 3 hosts",
            method: method.describe(),
            writers,
            appends: writers * per_writer,
            elapsed,
            damaged: damaged(&server_log, writers * per_writer),
        });
    }
    rows
}

fn wait_all(children: Vec<Child>) {
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
}

/// Appends that did not come out as a whole, valid line: torn or lost.
fn damaged(log: &Path, appends: usize) -> usize {
    let data = fs::read(log).unwrap();
    let whole = data
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| banshare::record::parse(l).is_ok())
        .count();
    appends.saturating_sub(whole)
}

fn print_table(rows: &[Row]) {
    println!("| setup | method | writers | appends | seconds | appends/s | torn or lost |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.0} | {} |",
            r.setup,
            r.method,
            r.writers,
            r.appends,
            r.elapsed.as_secs_f64(),
            r.appends as f64 / r.elapsed.as_secs_f64(),
            r.damaged
        );
    }
}

/// Process starts per method and round in [`process_rate`].
const RATE_PROCESSES: usize = 200;
/// Rounds: the median is reported.
const RATE_ROUNDS: usize = 5;

/// One way to append a line per process, for [`process_rate`].
struct Starter {
    name: String,
    /// The command for the `i`th append.
    command: Box<dyn Fn(usize) -> Command>,
    /// Whether each run leaves one record in banshare's log.
    appends_record: bool,
}

/// The package's front binary (packaging/build-deb), if it was built.
fn front_binary() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/package/front/banshare");
    path.exists().then_some(path)
}

/// One process per append, one after the other, as fail2ban runs its
/// action: `banshare ban` to a local file against the seed system's
/// `logger -s 2>>file` and the floor, `/bin/true`. Each round runs every
/// method in turn, so a load that comes and goes slows them alike; the
/// table gives the median round and each rate against logger's.
///
/// Each ban creates and removes two files (its journal, the lock file).
/// At hundreds of bans a second on ext4, creating an inode then scans past
/// the ones removed in the last seconds (`recently_deleted` in the kernel's
/// profile, about a fifth of a ban's time here), which fail2ban's pace
/// never reaches; with TMPDIR on a tmpfs the bench leaves that out.
fn process_rate() -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    let seed_log = dir.path().join("seed.log");
    fs::write(&log, b"").unwrap();
    let spool = dir.path().join("spool");
    let ban = |binary: PathBuf, log: PathBuf, spool: PathBuf| {
        move |i: usize| {
            let mut cmd = Command::new(&binary);
            cmd.args(["--config", "/dev/null", "--quiet", "ban"])
                .arg(format!("10.9.{}.{}", i / 250, i % 250 + 1))
                .args(["--port", "22", "--jail", "sshd", "--bantime", "600"])
                .args(["--node", "bench", "--log"])
                .arg(&log)
                .arg("--spool-dir")
                .arg(&spool);
            cmd
        }
    };
    let mut starters = vec![Starter {
        name: "banshare ban (full binary, every feature)".into(),
        command: Box::new(ban(BANSHARE.into(), log.clone(), spool.clone())),
        appends_record: true,
    }];
    if let Some(front) = front_binary() {
        starters.push(Starter {
            name: "banshare ban (the package's front binary)".into(),
            command: Box::new(ban(front, log.clone(), spool.clone())),
            appends_record: true,
        });
    }
    starters.push(Starter {
        name: "baseline: `logger -s 2>>file` (seed system)".into(),
        command: Box::new(move |i: usize| {
            let mut cmd = Command::new("logger");
            cmd.args(["-s", "--socket-errors=off", "-t", "bench"])
                .arg(format!("HOST 10.9.{}.{} PORT 22", i / 250, i % 250 + 1))
                .stderr(
                    fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&seed_log)
                        .unwrap(),
                );
            cmd
        }),
        appends_record: false,
    });
    starters.push(Starter {
        name: "floor: `/bin/true`".into(),
        command: Box::new(|_| Command::new("/bin/true")),
        appends_record: false,
    });
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); starters.len()];
    for _ in 0..RATE_ROUNDS {
        for (s, times) in starters.iter().zip(&mut seconds) {
            let start = Instant::now();
            for i in 0..RATE_PROCESSES {
                let status = (s.command)(i)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "{}: {status}", s.name);
            }
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let records = starters.iter().filter(|s| s.appends_record).count() * RATE_ROUNDS;
    assert_eq!(
        damaged(&log, records * RATE_PROCESSES),
        0,
        "every banshare ban reached the log"
    );
    let median = |t: &[f64]| {
        let mut t = t.to_vec();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let rates: Vec<f64> = seconds
        .iter()
        .map(|t| RATE_PROCESSES as f64 / median(t))
        .collect();
    let logger = starters
        .iter()
        .position(|s| s.name.contains("logger"))
        .map(|i| rates[i])
        .unwrap();
    let mut t = format!(
        "### One process per append, serial ({RATE_PROCESSES} processes per round, median of {RATE_ROUNDS} interleaved rounds)\n\n\
         Log and spool in {} (TMPDIR); load average at the end: {}.\n\n\
         | method | appends/s | ms per process | rate / logger's |\n|---|---:|---:|---:|\n",
        dir.path().display(),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (s, rate) in starters.iter().zip(&rates) {
        t += &format!(
            "| {} | {rate:.0} | {:.2} | {:.2} |\n",
            s.name,
            1000.0 / rate,
            rate / logger
        );
    }
    t
}
