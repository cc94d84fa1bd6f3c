//! The SFTP transport against a real sshd in a network namespace, as a
//! chrooted `internal-sftp` account: appending and following with no
//! mount, lock exclusion with sshfs and local writers, strict host key
//! checking, and a 20 s server outage in the middle of a stream of bans.
//! Needs root; fails, never skips, without it.

mod support;

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, require_root};
use support::{BANSHARE, Daemon, ban_loop, banshare_sh, read_records, wait_until};

/// A cluster whose SFTP share holds an empty log.
/// How long an idle watcher is watched, and the CPU it may use meanwhile:
/// a resource bound that an idle process always meets and a spinning one
/// never does, not a speed target.
const IDLE_PERIOD: Duration = Duration::from_secs(5);
const IDLE_CPU_BOUND: Duration = Duration::from_millis(250);

struct Site {
    cluster: Cluster,
    tmp: tempfile::TempDir,
}

impl Site {
    fn new(hint: &str, nodes: usize) -> Site {
        require_root();
        let cluster = Cluster::new(hint, nodes);
        cluster.create_sftp_file("newbans.log");
        Site {
            cluster,
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        self.cluster.sftp_url("newbans.log")
    }

    fn server_log(&self) -> PathBuf {
        self.cluster.sftp_share_dir().join("newbans.log")
    }

    /// The flags that point banshare at the SFTP log, as node `node`.
    fn flags(&self, node: usize, known_hosts: &Path) -> Vec<String> {
        vec![
            "--log".into(),
            self.url(),
            "--identity".into(),
            self.cluster.sftp_identity().display().to_string(),
            "--known-hosts".into(),
            known_hosts.display().to_string(),
            "--node".into(),
            format!("node{node}"),
            "--spool-dir".into(),
            self.tmp
                .path()
                .join(format!("spool{node}"))
                .display()
                .to_string(),
        ]
    }

    fn banshare(&self, node: usize, args: &[&str], known_hosts: &Path) -> Command {
        self.banshare_with(Path::new("/dev/null"), node, args, known_hosts)
    }

    /// As [`Site::banshare`], with the configuration file `config`.
    fn banshare_with(
        &self,
        config: &Path,
        node: usize,
        args: &[&str],
        known_hosts: &Path,
    ) -> Command {
        let mut cmd = self
            .cluster
            .command_in(self.cluster.node_ns(node), BANSHARE);
        cmd.arg("--config")
            .arg(config)
            .args(args)
            .args(self.flags(node, known_hosts));
        cmd
    }

    fn ban(&self, node: usize, address: &str) -> std::process::Output {
        self.banshare(node, &["ban", address], self.cluster.known_hosts())
            .output()
            .unwrap()
    }

    /// `banshare watch --backend log` over SFTP on `node`; applied lines
    /// arrive on the channel, stderr lines too (prefixed `E `).
    fn watch(&self, node: usize, known_hosts: &Path) -> (Daemon, mpsc::Receiver<String>) {
        self.watch_with(Path::new("/dev/null"), "log", node, known_hosts)
    }

    /// The state directory of the watcher on `node`.
    fn state_dir(&self, node: usize) -> PathBuf {
        self.tmp.path().join(format!("state{node}"))
    }

    /// As [`Site::watch`], with the configuration file `config` and the
    /// backend `backend`.
    fn watch_with(
        &self,
        config: &Path,
        backend: &str,
        node: usize,
        known_hosts: &Path,
    ) -> (Daemon, mpsc::Receiver<String>) {
        let state = self.state_dir(node).display().to_string();
        let args = [
            "watch",
            "--backend",
            backend,
            "--poll-interval",
            "100ms",
            "--state-dir",
            &state,
        ];
        let mut child = self
            .banshare_with(config, node, &args, known_hosts)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        forward(child.stdout.take().unwrap(), "", tx.clone());
        forward(child.stderr.take().unwrap(), "E ", tx);
        (Daemon(child), rx)
    }
}

fn forward(
    stream: impl std::io::Read + Send + 'static,
    prefix: &'static str,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(format!("{prefix}{line}"));
        }
    });
}

/// Collects lines until `done` holds for the collected ones, or panics.
fn collect_until(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    timeout: Duration,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("timed out; got:\n{}", seen.join("\n")),
        }
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn append_and_follow_over_sftp_with_a_chrooted_account() {
    let site = Site::new("sftp", 2);
    let (watcher, rx) = site.watch(1, site.cluster.known_hosts());
    // The SFTP host itself: banning it would cut node1 off from the log.
    let server = site.cluster.fileserver_ip().to_string();
    support::run_ok(site.banshare(0, &["ban", &server], site.cluster.known_hosts()));
    let out = site.ban(0, "192.0.2.1");
    assert!(
        out.status.success() && !stderr(&out).contains("spooled"),
        "{}",
        stderr(&out)
    );
    support::run_ok(site.banshare(0, &["unban", "192.0.2.1"], site.cluster.known_hosts()));
    let mut seen = Vec::new();
    collect_until(&rx, &mut seen, Duration::from_secs(30), |s| {
        s.iter().any(|l| l.starts_with("unban 192.0.2.1"))
    });
    assert!(
        seen.iter()
            .any(|l| l.starts_with("ban 192.0.2.1 ") && l.contains("origin=node0")),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.starts_with(&format!("ban {server} ")))
            && seen
                .iter()
                .any(|l| l.contains(&format!("refused to ban {server} "))),
        "node1 banned the SFTP host it reads the log from: {seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("the log was replaced")),
        "appends to the log taken for a new file: {seen:?}"
    );
    let records = read_records(&site.server_log());
    assert_eq!(records.len(), 3);

    // Idle, the SFTP follower costs a few round trips per poll on its one
    // kept connection: no measurable CPU.
    let pid = watcher.0.id();
    let before = support::cpu_time(pid);
    std::thread::sleep(IDLE_PERIOD);
    let used = support::cpu_time(pid) - before;
    assert!(
        used <= IDLE_CPU_BOUND,
        "the SFTP watcher used {used:?} of CPU in {IDLE_PERIOD:?} with nothing to do (at most {IDLE_CPU_BOUND:?})"
    );
}

#[test]
fn sftp_sshfs_and_local_writers_exclude_each_other() {
    let site = Site::new("sftplock", 3);
    let per_writer = 60;
    let mut writers = Vec::new();
    // Two SFTP writers, on nodes 0 and 1.
    for (w, node) in [(0usize, 0usize), (1, 1)] {
        let mut cmd = site.cluster.command_in(site.cluster.node_ns(node), "sh");
        let flags = site.flags(node, site.cluster.known_hosts()).join(" ");
        cmd.arg("-c")
            .arg(ban_loop(w, per_writer, ""))
            .env("B", format!("{BANSHARE} --config /dev/null --quiet"))
            .env("C", flags);
        writers.push(cmd.stderr(Stdio::piped()).spawn().unwrap());
    }
    // Two sshfs writers, on nodes 1 and 2, through mounts of the same share.
    for (w, node) in [(2usize, 1usize), (3, 2)] {
        let mount = site.cluster.mount_sftp_share(node);
        let sh = site.cluster.command_in(site.cluster.node_ns(node), "sh");
        let spool = site.tmp.path().join(format!("spool-sshfs{w}"));
        let mut cmd = banshare_sh(
            sh,
            &ban_loop(w, per_writer, ""),
            &mount.join("newbans.log"),
            &spool,
            &format!("sshfs{w}"),
        );
        writers.push(cmd.stderr(Stdio::piped()).spawn().unwrap());
    }
    // One writer on the file server itself, on its local disk.
    let local = banshare_sh(
        Command::new("sh"),
        &ban_loop(4, per_writer, ""),
        &site.server_log(),
        &site.tmp.path().join("spool-local"),
        "fileserver",
    );
    writers.push({ local }.stderr(Stdio::piped()).spawn().unwrap());
    for (n, w) in writers.into_iter().enumerate() {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "writer {n}: {}", stderr(&out));
        assert!(
            stderr(&out).is_empty(),
            "writer {n} warned (spooled?): {}",
            stderr(&out)
        );
    }
    let records = read_records(&site.server_log());
    assert_eq!(
        records.len(),
        5 * per_writer,
        "no torn, lost or doubled line"
    );
    let unique: HashSet<String> = records.iter().map(|r| r.target.to_string()).collect();
    assert_eq!(unique.len(), 5 * per_writer);
}

#[test]
fn unknown_and_changed_host_keys_are_refused() {
    let site = Site::new("sftpkey", 1);
    // Unknown: an empty known_hosts. The ban is refused, and spooled.
    let empty = site.tmp.path().join("empty_known_hosts");
    fs::write(&empty, b"").unwrap();
    let out = site
        .banshare(0, &["ban", "192.0.2.1"], &empty)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stderr(&out).contains("is not in"), "{}", stderr(&out));
    assert_eq!(fs::read(site.server_log()).unwrap(), b"");

    // Pinned on first use only when asked.
    let out = site
        .banshare(0, &["ban", "192.0.2.2", "--accept-new-host-key"], &empty)
        .output()
        .unwrap();
    assert!(
        out.status.success() && stderr(&out).contains("pinned"),
        "{}",
        stderr(&out)
    );
    assert!(
        fs::read_to_string(&empty).unwrap().contains("198.18.0.1"),
        "the key was written to known_hosts"
    );
    assert_eq!(
        read_records(&site.server_log()).len(),
        2,
        "the pinned connection also flushed the spooled ban"
    );

    // Changed: the server gets a new key; both known_hosts files now hold
    // the old one. Refused loudly, even with --accept-new-host-key.
    site.cluster.rotate_host_key();
    for args in [
        &["ban", "192.0.2.3"][..],
        &["ban", "192.0.2.3", "--accept-new-host-key"],
    ] {
        let out = site
            .banshare(0, args, site.cluster.known_hosts())
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(stderr(&out).contains("HAS CHANGED"), "{}", stderr(&out));
    }
    assert_eq!(
        read_records(&site.server_log()).len(),
        2,
        "nothing written to a server with a changed key"
    );
    let (_watcher, rx) = site.watch(0, site.cluster.known_hosts());
    let mut seen = Vec::new();
    collect_until(&rx, &mut seen, Duration::from_secs(30), |s| {
        s.iter().any(|l| l.contains("HAS CHANGED"))
    });
}

#[test]
fn sshd_down_for_20_s_mid_stream_loses_and_doubles_nothing() {
    let site = Site::new("sftpdown", 2);
    let total = 80;
    let (_watcher, rx) = site.watch(1, site.cluster.known_hosts());
    let flags = site.flags(0, site.cluster.known_hosts()).join(" ");
    let mut writer = site.cluster.command_in(site.cluster.node_ns(0), "sh");
    writer
        .arg("-c")
        .arg(ban_loop(9, total, ""))
        .env("B", format!("{BANSHARE} --config /dev/null --quiet"))
        .env("C", &flags);
    let writer = writer.stderr(Stdio::null()).spawn().unwrap();

    let log = site.server_log();
    let lines = || {
        fs::read(&log)
            .map(|d| d.iter().filter(|&&b| b == b'\n').count())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(60), || lines() >= 15),
        "the stream never started"
    );
    site.cluster.stop_sshd();
    std::thread::sleep(Duration::from_secs(20)); // the outage itself
    site.cluster.start_sshd();
    let out = writer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "every ban exits 0, delivered or spooled"
    );
    let flush = site
        .banshare(0, &["flush"], site.cluster.known_hosts())
        .output()
        .unwrap();
    assert!(flush.status.success(), "{}", stderr(&flush));

    let records = read_records(&log);
    let ids: HashSet<String> = records
        .iter()
        .map(|r| r.fields.id.as_ref().unwrap().to_string())
        .collect();
    let targets: HashSet<String> = records.iter().map(|r| r.target.to_string()).collect();
    assert_eq!(
        (records.len(), ids.len(), targets.len()),
        (total, total, total),
        "nothing lost, nothing doubled"
    );

    let mut seen = Vec::new();
    let applied = |s: &[String]| s.iter().filter(|l| l.starts_with("ban ")).count();
    collect_until(&rx, &mut seen, Duration::from_secs(120), |s| {
        applied(s) >= total
    });
    let bans: Vec<&String> = seen.iter().filter(|l| l.starts_with("ban ")).collect();
    let unique: HashSet<&str> = bans.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(
        (bans.len(), unique.len()),
        (total, total),
        "the watcher applied each ban once"
    );
}

/// `banshare status --json` of the watcher on `node` of `site`; its
/// stderr as a string before the watcher has written a status.
fn status_json(site: &Site, node: usize) -> serde_json::Value {
    let out = Command::new(BANSHARE)
        .args(["--config", "/dev/null", "status", "--json", "--state-dir"])
        .arg(site.state_dir(node))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| stderr(&out).into())
}

/// `banshare status` of a watcher that follows an `sftp://` log shows the
/// lag the watcher measured through its SFTP session: the log's path is
/// the chrooted account's (`/share/newbans.log`), which is no file on the
/// host `status` runs on. The backend refuses until told otherwise, so
/// the records stay unapplied behind the cursor, deterministically.
#[test]
fn status_over_sftp_shows_the_lag_measured_through_the_feed() {
    let site = Site::new("sftplag", 2);
    let refuse = site.tmp.path().join("refuse");
    let script = site.tmp.path().join("ban.sh");
    fs::write(
        &script,
        format!("#!/bin/sh\n[ -e {} ] && exit 1\nexit 0\n", refuse.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let config = site.tmp.path().join("banshare.toml");
    fs::write(
        &config,
        format!(
            "[backend.command]\nban = [{:?}, \"{{ips}}\"]\nunban = [{:?}, \"{{ips}}\"]\n",
            script.display().to_string(),
            script.display().to_string()
        ),
    )
    .unwrap();
    fs::write(&refuse, b"").unwrap();
    let (_watcher, _rx) = site.watch_with(&config, "command", 1, site.cluster.known_hosts());
    let lag = |s: &serde_json::Value| (s["lag_records"].as_u64(), s["lag_bytes"].as_u64());

    let caught_up = wait_until(Duration::from_secs(30), || {
        let s = status_json(&site, 1);
        s["log_present"] == true && lag(&s) == (Some(0), Some(0))
    });
    assert!(
        caught_up,
        "an empty log: lag 0 records, 0 bytes: {}",
        status_json(&site, 1)
    );

    for n in 1..=3 {
        let out = site.ban(0, &format!("192.0.2.{n}"));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let size = fs::metadata(site.server_log()).unwrap().len();
    let behind = wait_until(Duration::from_secs(30), || {
        let s = status_json(&site, 1);
        s["backend_errors"].as_u64() >= Some(1) && lag(&s) == (Some(3), Some(size))
    });
    assert!(
        behind,
        "3 refused records ({size} bytes) behind the cursor: {}",
        status_json(&site, 1)
    );
    let text = Command::new(BANSHARE)
        .args(["--config", "/dev/null", "status", "--state-dir"])
        .arg(site.state_dir(1))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("lag 3 records, {size} bytes behind")),
        "{text}"
    );

    fs::remove_file(&refuse).unwrap();
    let applied = wait_until(Duration::from_secs(60), || {
        let s = status_json(&site, 1);
        s["offset"].as_u64() == Some(size) && lag(&s) == (Some(0), Some(0))
    });
    assert!(
        applied,
        "all applied, lag 0 again: {}",
        status_json(&site, 1)
    );
}

/// `banshare monitor` keeps one SSH connection for all its batches, and
/// makes a new one only when the file server's sshd restarts: the records
/// of the failed batch wait in the spool and go out with the next one,
/// none lost or doubled.
#[test]
fn the_monitor_keeps_one_sftp_connection_and_reconnects_after_sshd_restarts() {
    let site = Site::new("sftpmon", 1);
    let f2b_log = site.tmp.path().join("fail2ban.log");
    fs::write(&f2b_log, b"").unwrap();
    let state = site.tmp.path().join("monitor");
    let args = [
        "monitor",
        "--fail2ban-log",
        f2b_log.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let monitor = site
        .banshare(0, &args, site.cluster.known_hosts())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _monitor = Daemon(monitor);
    assert!(
        wait_until(Duration::from_secs(20), || state
            .join("cursor.json")
            .exists()),
        "the monitor never started"
    );
    let logins = || {
        site.cluster
            .sshd_log()
            .matches("Accepted publickey")
            .count()
    };
    let shared = || read_records(&site.server_log()).len();
    let ban = |n: usize| {
        let line = format!(
            "2026-11-21 18:41:45,928 fail2ban.actions [752]: NOTICE [sshd] Ban 192.0.2.{n}\n"
        );
        let mut f = fs::OpenOptions::new().append(true).open(&f2b_log).unwrap();
        std::io::Write::write_all(&mut f, line.as_bytes()).unwrap();
    };
    // One ban at a time, each delivered before the next: one batch each.
    for n in 1..=3 {
        ban(n);
        assert!(
            wait_until(Duration::from_secs(30), || shared() == n),
            "ban {n} not delivered"
        );
    }
    assert_eq!(logins(), 1, "one SSH login for three batches");

    site.cluster.stop_sshd();
    site.cluster.start_sshd();
    // The first batch after the restart meets the dead session: spooled or
    // delivered over a new connection; the next one goes out with it.
    ban(4);
    let spool = site.tmp.path().join("spool0");
    let spooled = || {
        fs::read_dir(&spool).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
        })
    };
    assert!(
        wait_until(Duration::from_secs(30), || shared() == 4 || spooled()),
        "ban 4 neither delivered nor spooled"
    );
    ban(5);
    assert!(
        wait_until(Duration::from_secs(30), || shared() == 5),
        "bans 4 and 5 not delivered after the restart"
    );
    let records = read_records(&site.server_log());
    let targets: HashSet<String> = records.iter().map(|r| r.target.to_string()).collect();
    assert_eq!(
        (records.len(), targets.len()),
        (5, 5),
        "none lost or doubled"
    );
    assert_eq!(logins(), 2, "one new SSH login after the restart");
}

/// The watcher's flusher keeps one SSH connection for every flush, and
/// makes a new one after the file server's sshd restarts, even when the
/// first call on the dead session is the read-back of an uncertain batch.
#[test]
fn the_flusher_keeps_one_sftp_connection_and_reconnects_after_sshd_restarts() {
    let site = Site::new("sftpflush", 1);
    let config = site.tmp.path().join("banshare.toml");
    fs::write(&config, "[watch]\nflush_interval = \"200ms\"\n").unwrap();
    let state = site.tmp.path().join("state0");
    let watcher = site
        .cluster
        .command_in(site.cluster.node_ns(0), BANSHARE)
        .arg("--config")
        .arg(&config)
        .args(["watch", "--backend", "log", "--poll-interval", "100ms"])
        .arg("--state-dir")
        .arg(&state)
        .args(site.flags(0, site.cluster.known_hosts()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _watcher = Daemon(watcher);
    let logins = || {
        site.cluster
            .sshd_log()
            .matches("Accepted publickey")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || logins() == 1),
        "the watcher's follower never connected"
    );
    let spool = site.tmp.path().join("spool0");
    let shared = || read_records(&site.server_log()).len();
    // A batch a `ban` run left uncertain: the flusher reads the log back
    // for its id before it appends it.
    let spool_uncertain = |n: usize| {
        let line = format!("<13>Nov 21 18:28:04 t[1]: HOST 192.0.2.{n} PORT 22 id={n:016x}\n");
        let name = format!("{n:020}-0000000001-000000.uncertain");
        let temp = spool.join(format!(".{name}"));
        fs::write(&temp, line).unwrap();
        fs::rename(&temp, spool.join(name)).unwrap();
    };
    assert!(
        wait_until(Duration::from_secs(30), || spool.is_dir()),
        "no spool"
    );
    for n in 1..=2 {
        spool_uncertain(n);
        assert!(
            wait_until(Duration::from_secs(30), || shared() == n),
            "batch {n} not flushed"
        );
    }
    assert_eq!(logins(), 2, "the follower's login and one for the flusher");

    site.cluster.stop_sshd();
    site.cluster.start_sshd();
    spool_uncertain(3);
    assert!(
        wait_until(Duration::from_secs(30), || shared() == 3),
        "the flusher never reconnected"
    );
    let records = read_records(&site.server_log());
    let targets: HashSet<String> = records.iter().map(|r| r.target.to_string()).collect();
    assert_eq!(
        (records.len(), targets.len()),
        (3, 3),
        "none lost or doubled"
    );
}

/// A watcher over sftp:// started on the cursor the previous release saved
/// for it (state format 1, whose `log` was the bare path on the server)
/// resumes exactly there; and a log missing on the server is reported by
/// its URL, with the advice for a server, not for a mount.
#[test]
fn sftp_resumes_a_format_1_cursor_exactly_and_names_a_missing_log_by_its_url() {
    let site = Site::new("sftpv1", 2);
    let bans = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("ban "))
            .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
            .collect()
    };
    let ban = |n: u32| {
        let out = site.ban(0, &format!("192.0.2.{n}"));
        assert!(out.status.success(), "{}", stderr(&out));
    };
    // Stops the watcher with SIGTERM and returns every line it printed.
    let stop = |mut watcher: Daemon, rx: mpsc::Receiver<String>, mut seen: Vec<String>| {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(watcher.0.id() as i32, libc::SIGTERM) };
        watcher.0.wait().unwrap();
        seen.extend(rx.iter());
        seen
    };
    (1..=3).for_each(ban);
    let (watcher, rx) = site.watch(1, site.cluster.known_hosts());
    let mut seen = Vec::new();
    collect_until(&rx, &mut seen, Duration::from_secs(30), |s| {
        bans(s).len() >= 3
    });
    assert_eq!(bans(&stop(watcher, rx, seen)).len(), 3);

    // The cursor as the previous release wrote it for this log.
    let cursor = site.state_dir(1).join("cursor.json");
    let saved: serde_json::Value = serde_json::from_slice(&fs::read(&cursor).unwrap()).unwrap();
    let size = fs::metadata(site.server_log()).unwrap().len();
    assert_eq!(saved["position"]["seq"], size, "{saved}");
    let v1 = serde_json::json!({
        "version": 1,
        // The path as the chrooted SFTP user sees it.
        "log": "/share/newbans.log",
        "cursor": saved["position"]["at"],
        "breaker": saved["breaker"],
    });
    fs::write(&cursor, serde_json::to_vec(&v1).unwrap()).unwrap();
    ban(4);
    let (watcher, rx) = site.watch(1, site.cluster.known_hosts());
    let mut seen = Vec::new();
    collect_until(&rx, &mut seen, Duration::from_secs(30), |s| {
        !bans(s).is_empty()
    });
    fs::remove_file(site.server_log()).unwrap();
    let url = site.cluster.sftp_url("newbans.log");
    let said = wait_until(Duration::from_secs(20), || {
        status_json(&site, 1)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&url) && e.contains("on the server"))
    });
    let seen = stop(watcher, rx, seen);
    assert_eq!(bans(&seen), ["192.0.2.4"], "{seen:?}");
    assert!(said, "{}", status_json(&site, 1)["last_error"]);
}
