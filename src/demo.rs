//! `banshare demo`: a local cluster in a temporary folder, no root needed.
//!
//! Three nodes share one log through the same code paths as production:
//! the file transport with its cross-host lock, the spool, and flush. Only
//! the "share" is a local folder, and "unmounting" it is a rename.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::append::{self, Outcome, Request, Writer};
use crate::lock::{LockTimings, Owner};
use crate::record::{self, BanTime, Op, Record};
use crate::spool::Spool;
use crate::transport::{self, LogLocation};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const TIMINGS: LockTimings = LockTimings {
    timeout: Duration::from_secs(5),
    stale_after: Duration::from_secs(2),
};
const DEADLINE: Duration = Duration::from_secs(10);

/// One demo node: its identity and its own spool, as on a separate host.
struct Node {
    writer: Writer,
    spool: Spool,
    log: LogLocation,
}

impl Node {
    fn new(name: &str, root: &Path, log: &Path) -> Result<Node, String> {
        let spool = Spool::open(&root.join(name).join("spool")).map_err(|e| e.to_string())?;
        let node = name.parse().map_err(|e| format!("{e}"))?;
        let tag = "banshare".parse().map_err(|e| format!("{e}"))?;
        Ok(Node {
            writer: Writer {
                node,
                tag,
                pid: std::process::id(),
            },
            spool,
            log: LogLocation::File(log.into()),
        })
    }

    fn share(&self, op: Op, address: &str, port: &str, jail: &str) -> Result<Outcome, String> {
        let request = Request {
            op,
            targets: vec![address.parse().map_err(|e| format!("{e}"))?],
            ports: port.parse().map_err(|e| format!("{e}"))?,
            jail: Some(jail.parse().map_err(|e| format!("{e}"))?),
            bantime: Some(BanTime::Seconds(600)),
        };
        let records =
            append::build_records(&request, &self.writer, Utc::now()).map_err(|e| e.to_string())?;
        append::deliver(records, self.transport(), &self.spool, DEADLINE).map_err(|e| e.to_string())
    }

    fn transport(&self) -> Box<dyn transport::Transport> {
        let owner = Owner {
            node: self.writer.node.to_string(),
            pid: self.writer.pid,
        };
        transport::open(&self.log, &self.spool.append_lock_path(), owner, TIMINGS)
    }
}

/// Runs the demo; `keep` leaves the temporary folder for inspection.
pub fn run(keep: bool) -> Result<(), String> {
    let root = make_temp_dir()?;
    let result = run_in(&root);
    if keep {
        println!("\nkept {}", root.display());
    } else {
        let _ = fs::remove_dir_all(&root);
    }
    result
}

fn run_in(root: &Path) -> Result<(), String> {
    let share = root.join("share");
    fs::create_dir_all(&share).map_err(|e| e.to_string())?;
    let log = share.join("newbans.log");
    fs::write(&log, b"").map_err(|e| e.to_string())?;
    let nodes: Vec<Node> = NODES
        .iter()
        .map(|n| Node::new(n, root, &log))
        .collect::<Result<_, _>>()?;
    println!("banshare demo: 3 nodes share {}\n", log.display());

    println!("1. Every node bans at once; the lock keeps each line whole.");
    concurrent_bans(&nodes)?;
    nodes[2].share(Op::Unban, "192.0.2.10", "22", "sshd")?;
    println!("   node-c lifted the ban on 192.0.2.10.");

    println!("2. The share goes away; node-b's ban waits in its spool.");
    let offline = root.join("share.offline");
    fs::rename(&share, &offline).map_err(|e| e.to_string())?;
    match nodes[1].share(Op::Ban, "198.51.100.77", "ssh", "sshd")? {
        Outcome::Spooled { reason } => println!("   spooled: {reason}"),
        Outcome::Delivered { .. } => return Err("the ban was delivered to a missing share".into()),
    }

    println!("3. The share is back; flush delivers the spool exactly once.");
    fs::rename(&offline, &share).map_err(|e| e.to_string())?;
    let report = nodes[1]
        .spool
        .flush(&mut *nodes[1].transport(), DEADLINE)
        .map_err(|e| e.to_string())?;
    println!("   flushed {} record(s)\n", report.delivered);

    print_log(&log)
}

fn concurrent_bans(nodes: &[Node]) -> Result<(), String> {
    let started = Instant::now();
    thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                scope.spawn(move || -> Result<(), String> {
                    node.share(Op::Ban, &format!("192.0.2.{}", 10 + i), "22", "sshd")?;
                    node.share(
                        Op::Ban,
                        &format!("2001:db8::{}", 10 + i),
                        "80,443",
                        "nginx-http-auth",
                    )?;
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| "a node thread panicked".to_string())?)
    })?;
    println!(
        "   6 bans from 3 nodes appended in {:.1} ms.",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn print_log(log: &Path) -> Result<(), String> {
    let text = fs::read(log).map_err(|e| e.to_string())?;
    println!("The shared log, parsed back ({} bytes):", text.len());
    println!(
        "   {:<8} {:<6} {:<16} {:<8} {:<16} bantime",
        "node", "op", "address", "ports", "jail"
    );
    for line in text.split_inclusive(|&b| b == b'\n') {
        match record::parse(line) {
            Ok(r) => println!("   {}", summary(&r)),
            Err(reason) => return Err(format!("the demo log holds a bad line: {reason}")),
        }
    }
    println!("\nNext: `banshare watch` follows this log on every node and bans locally.");
    Ok(())
}

fn summary(r: &Record) -> String {
    let f = &r.fields;
    let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    format!(
        "{:<8} {:<6} {:<16} {:<8} {:<16} {}",
        show(f.node.as_ref().map(|n| n.to_string())),
        r.op.to_string(),
        r.target.to_string(),
        r.ports.to_string(),
        show(f.jail.as_ref().map(|j| j.to_string())),
        show(f.bantime.map(|b| b.to_string())),
    )
}

fn make_temp_dir() -> Result<PathBuf, String> {
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| e.to_string())?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("banshare-demo-{suffix}"));
    fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}
