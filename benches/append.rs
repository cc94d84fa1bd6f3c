//! Append throughput: banshare's locked appends against the unlocked
//! `>>` append of the seed system, measured in the same run.
//!
//! `cargo bench --bench append` (as root: the sshfs part builds test hosts
//! in network namespaces). Prints a Markdown table for docs/benchmarks.md.
//! Numbers are appends per second; higher is better. The unlocked baseline
//! is faster and wrong: across hosts it tears lines, and the table counts
//! them.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banshare::lock::{LockTimings, Owner};
use banshare::transport::{FileTransport, Transport};
use support::cluster::{Cluster, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_banshare");

struct Row {
    setup: &'static str,
    method: &'static str,
    writers: usize,
    appends: usize,
    elapsed: Duration,
    bad_lines: usize,
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
    for (writers, per_writer) in [(1, 300), (12, 100)] {
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
        bad_lines: bad_lines(&log),
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
            let script = ban_loop(w, per_writer);
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("B", format!("{BIN} --config /dev/null --quiet"))
                .env(
                    "C",
                    format!(
                        "--log {} --spool-dir {} --node w{w}",
                        log.display(),
                        dir.path().join("spool").display()
                    ),
                )
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
        bad_lines: bad_lines(&log),
    }
}

fn ban_loop(writer: usize, count: usize) -> String {
    format!(
        "set -e; i=0; while [ $i -lt {count} ]; do \
           $B ban 10.{writer}.$((i / 250)).$((i % 250)) $C; i=$((i + 1)); done"
    )
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
    for locked in [true, false] {
        fs::write(&server_log, b"").unwrap();
        let start = Instant::now();
        let children: Vec<Child> = (0..writers)
            .map(|w| {
                let node = w % 3;
                let log = mounts[node].join("newbans.log");
                let script = if locked {
                    ban_loop(w, per_writer)
                } else {
                    echo_loop(w, per_writer, &log)
                };
                cluster
                    .command_in(cluster.node_ns(node), "sh")
                    .arg("-c")
                    .arg(script)
                    .env("B", format!("{BIN} --config /dev/null --quiet"))
                    .env(
                        "C",
                        format!(
                            "--log {} --spool-dir {} --node n{node}",
                            log.display(),
                            spools.path().join(format!("n{node}")).display()
                        ),
                    )
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        wait_all(children);
        let elapsed = start.elapsed();
        rows.push(Row {
            setup: "sshfs, 3 hosts",
            method: if locked {
                "banshare ban (one process per append)"
            } else {
                "baseline: sh `echo >>` (seed system)"
            },
            writers,
            appends: writers * per_writer,
            elapsed,
            bad_lines: bad_lines(&server_log),
        });
    }
    rows
}

fn wait_all(children: Vec<Child>) {
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
}

/// Lines that are not whole records, plus records missing: torn appends.
fn bad_lines(log: &Path) -> usize {
    let data = fs::read(log).unwrap();
    data.split_inclusive(|&b| b == b'\n')
        .filter(|l| banshare::record::parse(l).is_err())
        .count()
}

fn print_table(rows: &[Row]) {
    println!("| setup | method | writers | appends | seconds | appends/s | torn lines |");
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
            r.bad_lines
        );
    }
}
