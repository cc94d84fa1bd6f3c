//! Append throughput: banshare's locked appends against the unlocked
//! `>>` append of the seed system, measured in the same run.
//!
//! `cargo bench --bench append` (as root: the sshfs part builds test hosts
//! in network namespaces). Prints a Markdown table for docs/benchmarks.md.
//! Numbers are appends per second; higher is better. The unlocked baseline
//! is faster and wrong: across hosts it tears lines, and the table counts
//! them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banshare::transport::lock::{LockTimings, Owner};
use banshare::transport::{FileTransport, Transport};
use support::cluster::{Cluster, require_root};
use support::{ban_loop, banshare_sh};

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
