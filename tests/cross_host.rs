//! The appender across hosts: test hosts in network namespaces mount one
//! folder, served by a real sshd in another namespace, with real sshfs, and
//! run the real `banshare` binary. Needs root; fails without it.

mod support;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use support::cluster::{Cluster, require_root};
use support::{BANSHARE as BIN, ban_loop, banshare_sh, read_records, wait_until};

/// A cluster whose share holds an empty `newbans.log`, mounted on every node.
struct Share {
    cluster: Cluster,
    mounts: Vec<PathBuf>,
    spools: tempfile::TempDir,
}

impl Share {
    fn new(hint: &str, nodes: usize) -> Share {
        require_root();
        let cluster = Cluster::new(hint, nodes);
        fs::write(cluster.export_dir().join("newbans.log"), b"").unwrap();
        let mounts = (0..nodes).map(|i| cluster.mount(i)).collect();
        Share {
            cluster,
            mounts,
            spools: tempfile::tempdir().unwrap(),
        }
    }

    /// The log as node `i` sees it, through its mount.
    fn log_via(&self, i: usize) -> PathBuf {
        self.mounts[i].join("newbans.log")
    }

    /// The log as the file server holds it.
    fn server_log(&self) -> PathBuf {
        self.cluster.export_dir().join("newbans.log")
    }

    fn spool(&self, i: usize) -> PathBuf {
        self.spools.path().join(format!("node{i}"))
    }

    /// Runs `script` with `sh` in node `i`'s namespace; `$B` is banshare
    /// with this node's log, spool and id.
    fn spawn_sh(&self, i: usize, script: &str, extra_env: &[(&str, &str)]) -> Child {
        let sh = self.cluster.command_in(self.cluster.node_ns(i), "sh");
        let mut cmd = banshare_sh(
            sh,
            script,
            &self.log_via(i),
            &self.spool(i),
            &format!("node{i}"),
        );
        cmd.envs(extra_env.iter().copied());
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn spooled_batches(&self, i: usize) -> usize {
        spooled_batches(&self.spool(i))
    }
}

fn spooled_batches(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.path()
                        .extension()
                        .is_some_and(|x| x == "pending" || x == "uncertain")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Waits for a writer, checks it succeeded, and returns what it warned.
fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed: {stderr}");
    stderr
}

fn count_lines(path: &Path) -> usize {
    fs::read(path)
        .map(|d| d.iter().filter(|&&b| b == b'\n').count())
        .unwrap_or(0)
}

#[test]
fn three_hosts_twelve_writers_six_thousand_whole_records() {
    let share = Share::new("append", 3);
    let go = share.spools.path().join("go");
    let mut writers = Vec::new();
    for node in 0..3 {
        for w in 0..4 {
            // Writers wait for one "go" so that all twelve really overlap.
            let script = format!(
                "while [ ! -e {go} ]; do sleep 0.01; done; {}",
                ban_loop(node * 4 + w, 500, ""),
                go = go.display()
            );
            writers.push(share.spawn_sh(node, &script, &[]));
        }
    }
    fs::write(&go, b"").unwrap();
    for (n, w) in writers.into_iter().enumerate() {
        let warnings = finish(w, &format!("writer {n}"));
        // Contention alone must never send a record to the spool.
        assert!(warnings.is_empty(), "writer {n} warned: {warnings}");
    }

    let records = read_records(&share.server_log());
    assert_eq!(
        records.len(),
        6000,
        "exactly 6000 records, none torn, lost or doubled"
    );
    let targets: HashSet<String> = records.iter().map(|r| r.target.to_string()).collect();
    assert_eq!(targets.len(), 6000, "every ban appears exactly once");
    let ids: HashSet<_> = records
        .iter()
        .map(|r| r.fields.id.clone().unwrap())
        .collect();
    assert_eq!(ids.len(), 6000);
    for node in 0..3 {
        assert_eq!(
            share.spooled_batches(node),
            0,
            "nothing was left in node{node}'s spool"
        );
    }
}

/// The names in the share's folder that FUSE left behind: a file unlinked
/// while still open on a node is renamed to `.fuse_hidden*` instead.
fn fuse_hidden_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".fuse_hidden"))
        .collect()
}

/// Two writers per node with spools of their own, so that writers on one
/// host do not queue behind one local lock but read the lock file while
/// their neighbour removes it: that is what leaves `.fuse_hidden*` files.
#[test]
fn cross_host_appends_leave_no_lock_file_behind() {
    let share = Share::new("hidden", 3);
    let dir = share.cluster.export_dir();
    // Left by an earlier version: a lock record an hour old goes, a file
    // that is not a lock record stays, however old.
    let hour_old = |name: &str, content: &str| {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    };
    hour_old(
        ".fuse_hidden00000abc00000001",
        "banshare-lock node=old pid=7 token=0123456789abcdef since=2026-11-30T09:00:00.000Z\n",
    );
    hour_old(".fuse_hidden00000abc00000002", "not a lock record\n");

    let writers: Vec<Child> = (0..6)
        .map(|w| {
            let node = w % 3;
            let own_spool = format!(
                "--log {} --spool-dir {}/w{w} --node node{node}",
                share.log_via(node).display(),
                share.spools.path().display(),
            );
            share.spawn_sh(node, &ban_loop(w, 50, ""), &[("C", &own_spool)])
        })
        .collect();
    for (n, w) in writers.into_iter().enumerate() {
        finish(w, &format!("writer {n}"));
    }
    assert_eq!(read_records(&share.server_log()).len(), 300);
    assert_eq!(
        fuse_hidden_files(dir),
        [".fuse_hidden00000abc00000002"],
        "no lock file left behind as .fuse_hidden*, and no other file removed"
    );
    assert!(!dir.join("newbans.log.lock").exists(), "no stale lock");
    assert!(!dir.join("newbans.log.lock.break").exists());
}

#[test]
fn writer_killed_holding_the_lock_does_not_stop_other_hosts() {
    let share = Share::new("stale", 3);
    let lock = share.cluster.export_dir().join("newbans.log.lock");
    let holder = share.spawn_sh(
        0,
        "exec $B ban 192.0.2.66 $C",
        &[("BANSHARE_TEST_HOLD_LOCK_MS", "600000")],
    );
    assert!(
        wait_until(Duration::from_secs(20), || lock.exists()),
        "timed out waiting for node0's writer to take the lock"
    );
    kill(holder);
    assert!(lock.exists(), "the killed writer left its lock behind");

    let others: Vec<Child> = (1..3)
        .map(|node| {
            share.spawn_sh(
                node,
                &ban_loop(node, 20, "--stale-lock 2s --lock-timeout 20s"),
                &[],
            )
        })
        .collect();
    for w in others {
        finish(w, "writer after the stale lock");
    }
    let records = read_records(&share.server_log());
    assert_eq!(
        records.len(),
        40,
        "both hosts went on after the stale timeout"
    );
    assert!(
        records.iter().all(|r| r.target.to_string() != "192.0.2.66"),
        "the killed writer wrote nothing"
    );
    assert!(!lock.exists());
}

#[test]
fn unmounted_share_spools_and_flush_delivers_exactly_once() {
    let share = Share::new("unmount", 1);
    let total = 300;
    // A short stale time: a writer caught by the unmount inside its lock
    // leaves the lock file on the server.
    let writer = share.spawn_sh(
        0,
        &ban_loop(7, total, "--stale-lock 2s --lock-timeout 10s"),
        &[],
    );
    let log = share.server_log();
    assert!(
        wait_until(Duration::from_secs(60), || count_lines(&log) >= 50),
        "timed out waiting for 50 records through the mount"
    );
    share.cluster.unmount(0);
    assert!(
        wait_until(Duration::from_secs(60), || share.spooled_batches(0) >= 10),
        "timed out waiting for bans to be spooled while unmounted"
    );
    share.cluster.remount(0);
    finish(writer, "the ban loop (every ban exits 0, spooled or not)");

    let out = share
        .cluster
        .command_in(share.cluster.node_ns(0), BIN)
        .args([
            "--config",
            "/dev/null",
            "flush",
            "--stale-lock",
            "2s",
            "--lock-timeout",
            "10s",
            "--node",
            "node0",
            "--log",
        ])
        .arg(share.log_via(0))
        .arg("--spool-dir")
        .arg(share.spool(0))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flush: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(share.spooled_batches(0), 0);

    let records = read_records(&log);
    let targets: Vec<String> = records.iter().map(|r| r.target.to_string()).collect();
    let unique: HashSet<&String> = targets.iter().collect();
    assert_eq!(unique.len(), total, "every ban arrived");
    assert_eq!(targets.len(), total, "no ban arrived twice");
}

/// Kills the whole run: `ban` delivers from a child process of its own.
fn kill(mut child: Child) {
    support::kill_tree(&mut child);
}

#[test]
fn share_whose_server_is_down_is_called_unreachable_not_missing() {
    let share = Share::new("outage", 1);
    share.cluster.stop_sshd();
    let out = share
        .cluster
        .command_in(share.cluster.node_ns(0), BIN)
        .args([
            "--config",
            "/dev/null",
            "ban",
            "192.0.2.1",
            "--node",
            "node0",
        ])
        .arg("--log")
        .arg(share.log_via(0))
        .arg("--spool-dir")
        .arg(share.spool(0))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(share.spooled_batches(0), 1, "{stderr}");
    assert!(
        stderr.contains("unreachable") && !stderr.contains("does not exist"),
        "{stderr}"
    );
}
