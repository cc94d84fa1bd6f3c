//! `banshare compact` during a live stream: 2,000 ban records (and 200
//! unbans) written under the cross-host lock to a log that 5 watchers
//! follow, 3 over sshfs and 2 over SFTP, while the log is compacted three
//! times, from sshfs and SFTP hosts. Every ban still in force must be
//! applied exactly once on every node, nothing twice, and a last
//! compaction must leave exactly the records still in force. One cluster
//! serves both transports: the sshfs mounts and the SFTP watchers reach
//! the same file. Needs root; fails, never skips, without it.

mod support;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use banshare::transport::lock::{LockTimings, Owner};
use banshare::transport::{FileTransport, Transport};
use chrono::{SecondsFormat, Utc};
use support::cluster::{Cluster, require_root};
use support::{BANSHARE, Daemon, wait_until};

const WATCHERS: usize = 5;
/// A host with an sshfs mount and no watcher, where the sshfs compactions
/// run: FUSE cannot rename atomically over a file open on its own host.
const COMPACTOR: usize = WATCHERS;
/// Nodes 0..SSHFS_WATCHERS follow through an sshfs mount, the others over
/// SFTP.
const SSHFS_WATCHERS: usize = 3;
const RECORDS: usize = 2_000;
const BATCH: usize = 20;
/// Compactions start once this many records are written, while the
/// stream goes on.
const COMPACT_AT: [usize; 3] = [500, 1_000, 1_500];
/// How long the short bans last: over before the last compaction.
const SHORT_BANTIME: u64 = 2;
const WAIT: Duration = Duration::from_secs(30);

/// What a record of the stream is, by its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An hour: in force to the end.
    Long,
    /// [`SHORT_BANTIME`]: applied while in force, dropped once over.
    Short,
    /// Dated two minutes ago with a 30 s bantime: over when written.
    Over,
    /// An hour, lifted by an unban in the same batch.
    Lifted,
}

fn kind(i: usize) -> Kind {
    match i % 10 {
        0..=5 => Kind::Long,
        6 | 7 => Kind::Short,
        8 => Kind::Over,
        _ => Kind::Lifted,
    }
}

fn address(i: usize) -> String {
    format!("10.{}.{}.1", i / 256, i % 256)
}

fn line(verb: &str, i: usize, ts: chrono::DateTime<Utc>, extra: &str, id: usize) -> String {
    format!(
        "<13>Nov 30 10:00:00 banshare[1]: {verb} {} PORT 22 node=writer ts={}{extra} id={id:016x}\n",
        address(i),
        ts.to_rfc3339_opts(SecondsFormat::Millis, true)
    )
}

/// The lines of record `i`: its ban, and for a lifted one its unban.
fn records(i: usize) -> Vec<String> {
    let now = Utc::now();
    match kind(i) {
        Kind::Long => vec![line("HOST", i, now, " bantime=3600", i)],
        Kind::Short => vec![line(
            "HOST",
            i,
            now,
            &format!(" bantime={SHORT_BANTIME}"),
            i,
        )],
        Kind::Over => vec![line(
            "HOST",
            i,
            now - chrono::Duration::seconds(120),
            " bantime=30",
            i,
        )],
        Kind::Lifted => vec![
            line("HOST", i, now, " bantime=3600", i),
            line(
                "UNBAN",
                i,
                now + chrono::Duration::milliseconds(1),
                "",
                RECORDS + i,
            ),
        ],
    }
}

struct Site {
    cluster: Cluster,
    tmp: tempfile::TempDir,
    /// Each sshfs host's mount of the share.
    mounts: HashMap<usize, PathBuf>,
}

impl Site {
    fn server_log(&self) -> PathBuf {
        self.cluster.sftp_share_dir().join("newbans.log")
    }

    /// The flags that point banshare on `node` at the log: through its
    /// sshfs mount, or over SFTP.
    fn log_flags(&self, node: usize, sshfs: bool) -> Vec<String> {
        let mut flags = vec!["--node".into(), format!("node{node}")];
        if sshfs {
            flags.extend([
                "--log".into(),
                self.mounts[&node].join("newbans.log").display().to_string(),
            ]);
        } else {
            flags.extend([
                "--log".into(),
                self.cluster.sftp_url("newbans.log"),
                "--identity".into(),
                self.cluster.sftp_identity().display().to_string(),
                "--known-hosts".into(),
                self.cluster.known_hosts().display().to_string(),
            ]);
        }
        flags
    }

    fn banshare(&self, node: usize, sshfs: bool, args: &[&str]) -> Command {
        let spool = self.tmp.path().join(format!("spool{node}-{}", args[0]));
        let mut cmd = self
            .cluster
            .command_in(self.cluster.node_ns(node), BANSHARE);
        let config = self.tmp.path().join("banshare.toml");
        // The writer sends 2,000 bans in seconds: above the default rate
        // limit, which would trip its breaker. Replaced by a rename, since
        // a watcher starting meanwhile must never read it half-written
        // (an empty file means the default limit: the breaker tripped).
        static PARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = PARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let part = self.tmp.path().join(format!("banshare.toml.{n}.part"));
        fs::write(&part, "[trust]\nmax_bans_per_node_per_minute = 100000\n").unwrap();
        fs::rename(&part, &config).unwrap();
        cmd.arg("--config")
            .arg(config)
            .args(args)
            .args(self.log_flags(node, sshfs))
            .arg("--spool-dir")
            .arg(spool);
        cmd
    }

    /// A watcher with the log backend; what it applies arrives on the
    /// channel.
    fn watch(&self, node: usize) -> (Daemon, mpsc::Receiver<String>) {
        let state = self.tmp.path().join(format!("state{node}"));
        let state = state.display().to_string();
        let args = [
            "watch",
            "--backend",
            "log",
            "--follow",
            "poll",
            "--poll-interval",
            "100ms",
            "--state-dir",
            &state,
        ];
        let mut child = self
            .banshare(node, node < SSHFS_WATCHERS, &args)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(self.watcher_log(node)).unwrap())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (Daemon(child), rx)
    }

    /// Whether the watcher on `node` has its log open yet (once it polled).
    fn watcher_holds_log(&self, node: usize) -> bool {
        let log = self.mounts[&node].join("newbans.log");
        fs::read_dir("/proc").unwrap().flatten().any(|p| {
            fs::read_dir(p.path().join("fd"))
                .map(|fds| {
                    fds.flatten()
                        .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l == log))
                })
                .unwrap_or(false)
        })
    }

    /// Where the watcher on `node` writes its messages.
    fn watcher_log(&self, node: usize) -> PathBuf {
        self.tmp.path().join(format!("watch{node}.log"))
    }

    /// `banshare compact` from `node`; its report.
    fn compact(&self, node: usize, sshfs: bool) -> String {
        let out = self
            .banshare(node, sshfs, &["compact", "--clock-margin", "0s"])
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "compaction from node{node} ({}) failed: {}{report}",
            if sshfs { "sshfs" } else { "SFTP" },
            String::from_utf8_lossy(&out.stderr)
        );
        report
    }
}

/// What one watcher applied: how many times each `ban`/`unban` address.
#[derive(Default)]
struct Applied {
    bans: HashMap<String, usize>,
    unbans: HashMap<String, usize>,
}

impl Applied {
    fn note(&mut self, line: &str) {
        // "ban 10.0.0.1 ports=22 jail=- for=3600s origin=writer age=12ms"
        let mut words = line.split(' ');
        let map = match words.next() {
            Some("ban") => &mut self.bans,
            Some("unban") => &mut self.unbans,
            _ => return,
        };
        if let Some(address) = words.next() {
            *map.entry(address.to_owned()).or_default() += 1;
        }
    }
}

#[test]
fn compaction_during_a_live_stream_misses_nothing_and_applies_nothing_twice() {
    require_root();
    let started = Instant::now();
    let cluster = Cluster::new("compact", WATCHERS + 1);
    cluster.create_sftp_file("newbans.log");
    let mounts = (0..SSHFS_WATCHERS)
        .chain([COMPACTOR])
        .map(|node| (node, cluster.mount_sftp_share(node)))
        .collect();
    let site = Arc::new(Site {
        cluster,
        tmp: tempfile::tempdir().unwrap(),
        mounts,
    });
    let watchers: Vec<_> = (0..WATCHERS).map(|node| site.watch(node)).collect();
    // Through sshfs from a host whose watcher holds the log open, FUSE
    // would move the log aside first: refused, nothing changed.
    assert!(wait_until(WAIT, || site.watcher_holds_log(0)));
    let refused = site
        .banshare(0, true, &["compact", "--clock-margin", "0s"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("open on this host by banshare"), "{said}");
    assert_eq!(fs::read(site.server_log()).unwrap(), b"");

    // The writer: a local writer on the file server, under the lock.
    let mut writer = FileTransport::new(
        &site.server_log(),
        &site.tmp.path().join("writer.lock"),
        Owner {
            node: "writer".into(),
            pid: std::process::id(),
        },
        LockTimings::default(),
    );
    let written = Arc::new(AtomicUsize::new(0));
    let started_compactions = Arc::new(AtomicUsize::new(0));
    let compactor = {
        let (site, written, begun) = (
            Arc::clone(&site),
            Arc::clone(&written),
            Arc::clone(&started_compactions),
        );
        std::thread::spawn(move || {
            // Through sshfs and over SFTP, from a host that does not
            // follow the log and from one that does.
            let from = [(COMPACTOR, true), (3, false), (COMPACTOR, true)];
            let mut reports = Vec::new();
            for (at, (node, sshfs)) in COMPACT_AT.iter().zip(from) {
                while written.load(Ordering::SeqCst) < *at {
                    std::thread::sleep(Duration::from_millis(5));
                }
                begun.fetch_add(1, Ordering::SeqCst);
                reports.push(site.compact(node, sshfs));
            }
            reports
        })
    };
    for first in (0..RECORDS).step_by(BATCH) {
        let batch: String = (first..first + BATCH).flat_map(records).collect();
        writer.append(batch.as_bytes()).unwrap();
        written.store(first + BATCH, Ordering::SeqCst);
        // Each compaction starts while the stream goes on.
        let due = COMPACT_AT.iter().filter(|at| first + BATCH >= **at).count();
        while started_compactions.load(Ordering::SeqCst) < due {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stream_end = Instant::now();
    let reports = compactor.join().expect("the compactions failed");
    for report in &reports {
        eprintln!("{report}");
    }
    // No compaction ran after the stream: each overlapped it.
    assert!(Instant::now() >= stream_end);

    // Once every short ban is over, the last compaction leaves exactly
    // the records still in force.
    let short_over = Utc::now() + chrono::Duration::seconds(SHORT_BANTIME as i64 + 1);
    while Utc::now() < short_over {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = fs::metadata(site.server_log()).unwrap().len();
    eprintln!("{}", site.compact(4, false));
    let expected: Vec<String> = (0..RECORDS)
        .flat_map(|i| match kind(i) {
            Kind::Long => vec![(i, "HOST")],
            Kind::Lifted => vec![(i, "UNBAN")],
            _ => vec![],
        })
        .map(|(i, verb)| format!("{verb} {} PORT", address(i)))
        .collect();
    let text = fs::read_to_string(site.server_log()).unwrap();
    let (marker, kept) = text.split_once('\n').unwrap();
    assert!(marker.starts_with("# banshare-compacted "), "{marker}");
    let kept: Vec<&str> = kept.lines().collect();
    let kept_short: Vec<String> = kept
        .iter()
        .map(|l| l.split(": ").nth(1).unwrap_or(l))
        .map(|l| l.split(" PORT").next().unwrap().to_owned() + " PORT")
        .collect();
    assert_eq!(
        kept_short.len(),
        expected.len(),
        "the compacted log holds {} lines, {} records are in force",
        kept.len(),
        expected.len()
    );
    assert_eq!(kept_short, expected, "the compacted log's records");
    let after = text.len() as u64;
    assert!(after < before, "{before} -> {after} bytes");

    // A last ban: once every watcher applied it, each has read the whole
    // compacted log.
    writer
        .append(line("HOST", 65_000, Utc::now(), " bantime=3600", 99_999).as_bytes())
        .unwrap();
    let sentinel = address(65_000);
    let mut applied: Vec<Applied> = (0..WATCHERS).map(|_| Applied::default()).collect();
    for (node, (_, rx)) in watchers.iter().enumerate() {
        let done = wait_until(WAIT, || {
            while let Ok(line) = rx.try_recv() {
                applied[node].note(&line);
            }
            applied[node].bans.contains_key(&sentinel)
        });
        assert!(
            done,
            "node{node} never applied the last ban; it applied {} bans; it said:\n{}",
            applied[node].bans.len(),
            fs::read_to_string(site.watcher_log(node)).unwrap_or_default()
        );
    }
    for (node, (mut daemon, rx)) in watchers.into_iter().enumerate() {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
        daemon.0.wait().unwrap();
        while let Ok(line) = rx.recv() {
            applied[node].note(&line);
        }
    }
    for (node, applied) in applied.iter().enumerate() {
        judge(node, applied);
    }
    eprintln!(
        "compaction test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

/// Every ban in force applied exactly once, nothing twice, nothing over.
fn judge(node: usize, applied: &Applied) {
    let mut missed = Vec::new();
    let mut twice = Vec::new();
    let mut over = Vec::new();
    for i in 0..RECORDS {
        let a = address(i);
        let bans = applied.bans.get(&a).copied().unwrap_or(0);
        let unbans = applied.unbans.get(&a).copied().unwrap_or(0);
        match kind(i) {
            Kind::Long if bans != 1 => missed.push((a, bans)),
            Kind::Over if bans != 0 => over.push(a),
            _ if bans > 1 || unbans > 1 => twice.push((a, bans, unbans)),
            _ => {}
        }
    }
    assert!(
        missed.is_empty() && twice.is_empty() && over.is_empty(),
        "node{node} ({}): bans in force not applied exactly once: {} {:?}; \
         applied twice: {} {:?}; over but applied: {} {:?}",
        if node < SSHFS_WATCHERS {
            "sshfs"
        } else {
            "SFTP"
        },
        missed.len(),
        &missed[..missed.len().min(10)],
        twice.len(),
        &twice[..twice.len().min(10)],
        over.len(),
        &over[..over.len().min(10)],
    );
}
