//! `banshare demo`: a local cluster in a temporary folder, no root needed.
//!
//! Three nodes share one log through the same code as production: the
//! appender with its cross-host lock, the spool, flush, and a watcher per
//! node with the log (dry-run) backend, each in its own thread with its own
//! state directory. Only the "share" is a local folder, and "unmounting" it
//! is a rename.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::backend::log::LogBackend;
use crate::follow::{LocalFs, Mode};
use crate::outbox::append::{self, Outcome, Request, Writer};
use crate::outbox::spool::Spool;
use crate::record::{BanTime, Op};
use crate::state::StateDir;
use crate::transport::file::FileFeed;
use crate::transport::lock::{LockTimings, Owner};
use crate::transport::{self, LogLocation};
use crate::watch::daemon::{Daemon, Handle, Msg, Options};
use crate::watch::policy::PolicySettings;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const TIMINGS: LockTimings = LockTimings {
    timeout: Duration::from_secs(5),
    stale_after: Duration::from_secs(2),
};
const DEADLINE: Duration = Duration::from_secs(10);
/// How long the demo waits for every watcher to apply what it expects.
const PATIENCE: Duration = Duration::from_secs(20);

/// One demo node: its identity, its own spool and state, as on a separate
/// host.
struct Node {
    name: &'static str,
    writer: Writer,
    spool: Spool,
    log: LogLocation,
}

impl Node {
    fn new(name: &'static str, root: &Path, log: &Path) -> Result<Node, String> {
        let spool = Spool::open(&root.join(name).join("spool")).map_err(|e| e.to_string())?;
        let writer = Writer {
            node: parse(name)?,
            tag: parse("banshare")?,
            pid: std::process::id(),
            key: None,
        };
        Ok(Node {
            name,
            writer,
            spool,
            log: LogLocation::File(log.into()),
        })
    }

    fn share(&self, op: Op, address: &str, port: &str, jail: &str) -> Result<Outcome, String> {
        let request = Request {
            op,
            targets: vec![parse(address)?],
            ports: parse(port)?,
            jail: Some(parse(jail)?),
            bantime: Some(BanTime::Seconds(600)),
        };
        let records =
            append::build_records(&request, &self.writer, Utc::now()).map_err(|e| e.to_string())?;
        let mut publisher = transport::publisher(&self.log, &self.writer_settings());
        append::deliver(records, &mut publisher, &self.spool, DEADLINE).map_err(|e| e.to_string())
    }

    fn owner(&self) -> Owner {
        Owner {
            node: self.writer.node.to_string(),
            pid: self.writer.pid,
        }
    }

    fn transport(&self) -> Box<dyn transport::Transport> {
        transport::open(&self.log, &self.writer_settings())
    }

    fn writer_settings(&self) -> transport::WriterSettings {
        transport::WriterSettings {
            local_lock: self.spool.append_lock_path(),
            owner: self.owner(),
            timings: TIMINGS,
            sftp: Default::default(),
            zmq: Default::default(),
            nats: Default::default(),
        }
    }
}

fn parse<T: std::str::FromStr>(text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| format!("{text}: {e}"))
}

/// A running watcher and what it applied, line by line.
struct Watching {
    handle: Handle,
    thread: JoinHandle<()>,
}

/// Forwards the log backend's lines, tagged with the node's name.
struct Tagged {
    node: &'static str,
    tx: Sender<(&'static str, String)>,
    partial: Vec<u8>,
}

impl Write for Tagged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let _ = self.tx.send((
                self.node,
                String::from_utf8_lossy(&line).trim_end().to_owned(),
            ));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn start_watcher(
    node: &Node,
    root: &Path,
    log: &Path,
    tx: Sender<(&'static str, String)>,
) -> Result<Watching, String> {
    let state = StateDir::open(&root.join(node.name).join("state")).map_err(|e| e.to_string())?;
    let feed = FileFeed::new(
        LocalFs,
        log.to_owned(),
        log.display().to_string(),
        Mode::Poll(Duration::from_millis(50)),
    );
    let opts = Options {
        node: node.name.to_owned(),
        batch_max: 1000,
        state,
        trust: Default::default(),
        safety_poll: Duration::from_secs(5),
    };
    let policy = PolicySettings {
        ignoreself: false,
        default_bantime: BanTime::Seconds(600),
        ..PolicySettings::defaults(node.writer.node.clone())
    };
    let backend = Box::new(LogBackend::new(Box::new(Tagged {
        node: node.name,
        tx,
        partial: Vec::new(),
    })));
    let (daemon, handle) =
        Daemon::new(Box::new(feed), opts, policy, backend).map_err(|e| e.to_string())?;
    let thread = thread::spawn(move || {
        daemon.run(|| None);
    });
    Ok(Watching { handle, thread })
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Its output could not be written (a closed pipe, a full disk).
    #[error("cannot write the demo's output: {0}")]
    Output(#[from] io::Error),
    /// Something in the demonstration failed.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for DemoError {
    fn from(message: String) -> DemoError {
        DemoError::Failed(message)
    }
}

/// The demo's temporary folder, removed when dropped (also when the demo
/// fails or panics) unless kept.
struct TempRoot {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs the demo, printing to `out`; `keep` leaves the temporary folder
/// for inspection.
pub fn run(keep: bool, out: &mut dyn Write) -> Result<(), DemoError> {
    let root = TempRoot {
        path: make_temp_dir()?,
        keep,
    };
    if keep {
        writeln!(out, "keeping {} (--keep)", root.path.display())?;
    }
    let _quiet = QuietWatchers::start();
    run_in(&root.path, out)
}

/// Keeps the watchers' info lines (each ban applied) off stderr while the
/// demo runs: the demo prints its own account. Warnings and errors still
/// show; the level the command had returns when the demo ends.
struct QuietWatchers {
    before: log::LevelFilter,
}

impl QuietWatchers {
    fn start() -> QuietWatchers {
        let before = log::max_level();
        log::set_max_level(before.min(log::LevelFilter::Warn));
        QuietWatchers { before }
    }
}

impl Drop for QuietWatchers {
    fn drop(&mut self) {
        log::set_max_level(self.before);
    }
}

fn run_in(root: &Path, out: &mut dyn Write) -> Result<(), DemoError> {
    let share = root.join("share");
    fs::create_dir_all(&share).map_err(|e| e.to_string())?;
    let log = share.join("newbans.log");
    fs::write(&log, b"").map_err(|e| e.to_string())?;
    let nodes: Vec<Node> = NODES
        .iter()
        .map(|n| Node::new(n, root, &log))
        .collect::<Result<_, _>>()?;
    writeln!(out, "banshare demo: 3 nodes share {}", log.display())?;
    writeln!(
        out,
        "each node runs a watcher with the log backend (a dry run: it prints what it would ban)\n"
    )?;
    let (tx, rx) = mpsc::channel();
    let watchers: Vec<Watching> = nodes
        .iter()
        .map(|n| start_watcher(n, root, &log, tx.clone()))
        .collect::<Result<_, _>>()?;
    drop(tx);
    let result = scenario(&nodes, &rx, root, &share, out);
    for w in &watchers {
        w.handle.send(Msg::Stop);
    }
    for w in watchers {
        let _ = w.thread.join();
    }
    result?;
    writeln!(
        out,
        "\nall watchers stopped; every ban reached every other node."
    )?;
    Ok(())
}

fn scenario(
    nodes: &[Node],
    rx: &Receiver<(&'static str, String)>,
    root: &Path,
    share: &Path,
    out: &mut dyn Write,
) -> Result<(), DemoError> {
    writeln!(
        out,
        "1. node-a bans 192.0.2.10 and 2001:db8::10; node-b bans 192.0.2.11, all at once."
    )?;
    thread::scope(|s| {
        s.spawn(|| nodes[0].share(Op::Ban, "192.0.2.10", "22", "sshd"));
        s.spawn(|| nodes[0].share(Op::Ban, "2001:db8::10", "80,443", "nginx-http-auth"));
        s.spawn(|| nodes[1].share(Op::Ban, "192.0.2.11", "22", "sshd"));
    });
    expect(
        rx,
        &[
            ("node-b", "ban 192.0.2.10"),
            ("node-c", "ban 192.0.2.10"),
            ("node-b", "ban 2001:db8::10"),
            ("node-c", "ban 2001:db8::10"),
            ("node-a", "ban 192.0.2.11"),
            ("node-c", "ban 192.0.2.11"),
        ],
        out,
    )?;

    writeln!(out, "2. node-c lifts the ban on 192.0.2.10.")?;
    nodes[2].share(Op::Unban, "192.0.2.10", "22", "sshd")?;
    expect(
        rx,
        &[
            ("node-a", "unban 192.0.2.10"),
            ("node-b", "unban 192.0.2.10"),
        ],
        out,
    )?;

    writeln!(
        out,
        "3. The share goes away; node-b's ban of 198.51.100.77 waits in its spool."
    )?;
    let offline = root.join("share.offline");
    fs::rename(share, &offline).map_err(|e| e.to_string())?;
    match nodes[1].share(Op::Ban, "198.51.100.77", "ssh", "sshd")? {
        Outcome::Spooled { .. } => writeln!(out, "   spooled (the log is missing)")?,
        Outcome::Delivered { .. } => {
            return Err(DemoError::Failed(
                "the ban was delivered to a missing share".into(),
            ));
        }
        Outcome::Journaled { .. } => {
            return Err(DemoError::Failed("the demo's appends never journal".into()));
        }
    }

    writeln!(
        out,
        "4. The share is back; flush delivers the spool exactly once."
    )?;
    fs::rename(&offline, share).map_err(|e| e.to_string())?;
    let report = nodes[1]
        .spool
        .flush(&mut *nodes[1].transport(), DEADLINE)
        .map_err(|e| e.to_string())?;
    writeln!(out, "   flushed {} record(s)", report.delivered)?;
    expect(
        rx,
        &[
            ("node-a", "ban 198.51.100.77"),
            ("node-c", "ban 198.51.100.77"),
        ],
        out,
    )
}

/// Prints applied lines as they come until every expected (node, prefix)
/// has been seen.
fn expect(
    rx: &Receiver<(&'static str, String)>,
    wanted: &[(&str, &str)],
    out: &mut dyn Write,
) -> Result<(), DemoError> {
    let mut missing: Vec<(&str, &str)> = wanted.to_vec();
    let deadline = Instant::now() + PATIENCE;
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let (node, line) = rx
            .recv_timeout(left)
            .map_err(|_| format!("timed out waiting for {missing:?}"))?;
        writeln!(out, "   {node} applied: {line}")?;
        missing.retain(|(n, prefix)| {
            !(*n == node && (line.starts_with(&format!("{prefix} ")) || line == *prefix))
        });
    }
    Ok(())
}

fn make_temp_dir() -> Result<PathBuf, String> {
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| e.to_string())?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("banshare-demo-{suffix}"));
    fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}
