//! Rotation by rename on the file server while a watcher on an sshfs node
//! follows the log: the old file's unread tail must still be read. sshfs
//! answers `fstat` of the still open old file with the size of the new file
//! at the path, so a follower that trusts it skips the tail (or takes the
//! rotation for a truncation). Needs root.

mod support;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, require_root};
use support::{BANSHARE, Daemon};

/// Rotations in the test, each right after a burst of lines the watcher
/// has had no time to read.
const ROTATIONS: usize = 12;
/// Lines written to a fresh log before the watcher is waited for: they
/// vary, so the new file is sometimes shorter, sometimes longer than what
/// the watcher read of the old one.
const HEADS: [usize; 6] = [6, 2, 9, 1, 4, 12];
/// Lines written right before each rotation.
const TAIL: usize = 25;

/// A record from another node for `address`, with a unique id.
fn record(seq: usize, address: &str) -> String {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        "<13>Nov 30 10:00:00 banshare[1]: HOST {address} PORT 22 node=server ts={ts} bantime=3600 id={:024x}\n",
        seq + 1
    )
}

/// The server side: appends records to the export's log, as a local
/// writer on the file server does, and rotates it.
struct Writer<'a> {
    log: &'a Path,
    written: Vec<String>,
}

impl Writer<'_> {
    /// Appends `count` records; returns the first one's address.
    fn append(&mut self, count: usize) -> String {
        let mut text = String::new();
        let first = self.written.len();
        for seq in first..first + count {
            let address = format!("10.{}.{}.{}", seq / 65536, (seq / 256) % 256, seq % 256);
            text.push_str(&record(seq, &address));
            self.written.push(address);
        }
        OpenOptions::new()
            .append(true)
            .open(self.log)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        self.written[first].clone()
    }

    /// `mv newbans.log newbans.log.1 && : > newbans.log`.
    fn rotate(&self) {
        fs::rename(self.log, self.log.with_extension("log.1")).unwrap();
        File::create(self.log).unwrap();
    }
}

/// What the watcher applied, address by address.
struct Applied {
    lines: mpsc::Receiver<String>,
    count: HashMap<String, usize>,
}

impl Applied {
    /// Takes what arrived until `address` was applied or `deadline` passed;
    /// whether it was.
    fn wait_for(&mut self, address: &str, deadline: Instant) -> bool {
        while !self.count.contains_key(address) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.note(&line),
                Err(_) => return false,
            }
        }
        true
    }

    fn note(&mut self, line: &str) {
        // "ban 10.0.0.1 ports=22 jail=- for=3600s origin=server age=12ms"
        if let Some(address) = line.strip_prefix("ban ").and_then(|l| l.split(' ').next()) {
            *self.count.entry(address.to_owned()).or_default() += 1;
        }
    }
}

#[test]
fn rotation_by_rename_on_the_file_server_loses_nothing_over_sshfs() {
    require_root();
    let cluster = Cluster::new("rotate", 1);
    let server_log = cluster.export_dir().join("newbans.log");
    fs::write(&server_log, b"").unwrap();
    let mount = cluster.mount(0);
    let state = tempfile::tempdir().unwrap();
    let mut child = cluster
        .command_in(cluster.node_ns(0), BANSHARE)
        .args(["--config", "/dev/null", "--quiet", "watch"])
        .args(["--backend", "log", "--node", "node0", "--follow", "poll"])
        .arg("--log")
        .arg(mount.join("newbans.log"))
        .arg("--state-dir")
        .arg(state.path().join("state"))
        .arg("--spool-dir")
        .arg(state.path().join("spool"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut watcher = Daemon(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut applied = Applied {
        lines: rx,
        count: HashMap::new(),
    };

    let mut writer = Writer {
        log: &server_log,
        written: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for round in 0..ROTATIONS {
        // The watcher is in this file, partway: then a tail it has not
        // read yet, and the rotation right after it.
        let head = writer.append(HEADS[round % HEADS.len()]);
        assert!(
            applied.wait_for(&head, deadline),
            "round {round}: the watcher never applied {head}; applied {} of {}",
            applied.count.len(),
            writer.written.len()
        );
        writer.append(TAIL);
        writer.rotate();
    }
    let last = writer.append(3);
    let all = writer.written.clone();
    let got_last = applied.wait_for(&last, deadline);
    // Stopped, it has printed everything it applied: count repeats too.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(watcher.0.id() as i32, libc::SIGTERM) };
    assert!(
        watcher.0.wait().unwrap().success(),
        "the watcher failed on SIGTERM"
    );
    while let Ok(line) = applied.lines.recv() {
        applied.note(&line);
    }
    let missed: Vec<&String> = all
        .iter()
        .filter(|a| !applied.count.contains_key(*a))
        .collect();
    let twice: Vec<(&String, &usize)> = applied.count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        got_last && missed.is_empty() && twice.is_empty(),
        "{} records in {ROTATIONS} rotations: {} never applied ({missed:?}), {} applied more than once ({twice:?})",
        all.len(),
        missed.len(),
        twice.len()
    );
}
