//! banshare with a real fail2ban (Debian's package) on test hosts in
//! network namespaces: fail2ban bans on host A, the ban reaches host B
//! through the shared log, and B bans. Proof is the attacker namespace's
//! TCP connect. B runs either `banshare watch` or only stock fail2ban with
//! the banshare filter; A either has the banshare action or only runs
//! `banshare monitor`. Needs root; fails, never skips, without it.

mod support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::cluster::{Cluster, require_root};
use support::fail2ban::Fail2ban;
use support::{BANSHARE, Daemon, wait_until};

const PORT: u16 = 8080;
const ACTION: &str = include_str!("../fail2ban/action.d/banshare.conf");
const FILTER: &str = include_str!("../fail2ban/filter.d/banshare.conf");
/// fail2ban polls once a second; bans cross two polls and an append.
const PATIENCE: Duration = Duration::from_secs(30);

/// The test network: hosts with sshfs mounts of one share holding the log,
/// a TCP server on each, and per-host banshare configuration files.
struct Net {
    cluster: Cluster,
    tmp: tempfile::TempDir,
    mounts: Vec<PathBuf>,
}

impl Net {
    fn new(hint: &str, nodes: usize) -> Net {
        require_root();
        let cluster = Cluster::new(hint, nodes);
        fs::write(cluster.export_dir().join("newbans.log"), b"").unwrap();
        let mounts = (0..nodes).map(|i| cluster.mount(i)).collect();
        for node in 0..nodes {
            cluster.serve_tcp(node, PORT);
        }
        let net = Net {
            cluster,
            tmp: tempfile::tempdir().unwrap(),
            mounts,
        };
        for node in 0..nodes {
            net.write_config(node);
        }
        net
    }

    fn config(&self, node: usize) -> PathBuf {
        self.tmp.path().join(format!("banshare-{node}.toml"))
    }

    fn write_config(&self, node: usize) {
        self.write_config_with(node, "");
    }

    /// The node's configuration, with `extra` (sections) at the end.
    fn write_config_with(&self, node: usize, extra: &str) {
        let text = format!(
            "[common]\nlog = {:?}\nnode = \"node{node}\"\nspool_dir = {:?}\n[watch]\nstate_dir = {:?}\n[monitor]\nstate_dir = {:?}\n",
            self.mounts[node].join("newbans.log"),
            self.tmp.path().join(format!("spool{node}")),
            self.tmp.path().join(format!("watch{node}")),
            self.tmp.path().join(format!("monitor{node}")),
        );
        fs::write(self.config(node), text + extra).unwrap();
    }

    /// `banshare --config <node's> ARGS` in the node's namespace.
    fn banshare(&self, node: usize, args: &[&str]) -> Command {
        let mut cmd = self
            .cluster
            .command_in(self.cluster.node_ns(node), BANSHARE);
        cmd.arg("--config").arg(self.config(node)).args(args);
        cmd
    }

    fn watch(&self, node: usize) -> Daemon {
        let child = self
            .banshare(node, &["watch", "--backend", "nftables"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let ns = self.cluster.node_ns(node);
        let ready = wait_until(Duration::from_secs(20), || {
            self.cluster
                .command_in(ns, "nft")
                .args(["list", "table", "inet", "banshare"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(ready, "node{node}'s watcher never set up nftables");
        Daemon(child)
    }

    /// fail2ban on `node` with an sshd jail on its own auth log; `actions`
    /// is the jail's action list after its nftables ban.
    fn fail2ban_sshd(&self, node: usize, banshare_action: bool) -> (Fail2ban, PathBuf) {
        self.fail2ban_sshd_with(node, banshare_action.then_some(""))
    }

    /// As `fail2ban_sshd`; `action_options` (`key=value, ...`, perhaps
    /// empty) are added to the banshare action when it is given.
    fn fail2ban_sshd_with(&self, node: usize, action_options: Option<&str>) -> (Fail2ban, PathBuf) {
        let auth = self.tmp.path().join(format!("auth{node}.log"));
        fs::write(&auth, b"").unwrap();
        let share = if let Some(options) = action_options {
            let sep = if options.is_empty() { "" } else { ", " };
            format!(
                "\n         banshare[banshare=\"{BANSHARE} --config {}\"{sep}{options}]",
                self.config(node).display()
            )
        } else {
            String::new()
        };
        let options = format!(
            "filter = sshd\nlogpath = {}\nbackend = polling\nmaxretry = 2\nfindtime = 600\nbantime = 600\n\
             port = 0:65535\naction = nftables-allports[name=sshtest]{share}\n",
            auth.display()
        );
        let mut f2b = Fail2ban::spawn_with_files(
            Some(self.cluster.node_ns(node)),
            "sshtest",
            &options,
            &[("action.d/banshare.conf", ACTION)],
        );
        f2b.wait_ready();
        (f2b, auth)
    }

    /// Stock fail2ban reading the shared log with the banshare filter.
    fn fail2ban_consumer(&self, node: usize) -> Fail2ban {
        let options = format!(
            "filter = banshare\nlogpath = {}\nbackend = polling\nmaxretry = 1\nfindtime = 3600\nbantime = 600\n\
             action = nftables-allports[name=banshare]\n",
            self.mounts[node].join("newbans.log").display()
        );
        let mut f2b = Fail2ban::spawn_with_files(
            Some(self.cluster.node_ns(node)),
            "banshare",
            &options,
            &[("filter.d/banshare.conf", FILTER)],
        );
        f2b.wait_ready();
        f2b
    }

    fn reachable(&self, node: usize) -> bool {
        self.cluster
            .can_connect(self.cluster.attacker_ns(), self.cluster.node_ip(node), PORT)
    }

    fn expect_blocked(&self, node: usize, what: &str) {
        assert!(
            wait_until(PATIENCE, || !self.reachable(node)),
            "{what}: node{node} still accepts the attacker"
        );
    }

    fn expect_open(&self, node: usize, what: &str) {
        assert!(
            wait_until(PATIENCE, || self.reachable(node)),
            "{what}: node{node} still blocks the attacker"
        );
    }

    fn shared_log(&self) -> String {
        fs::read_to_string(self.cluster.export_dir().join("newbans.log")).unwrap()
    }
}

/// Failed SSH logins from `ip`, as sshd logs them, now.
fn fail_logins(auth: &Path, ip: &str, count: usize) {
    let mut file = OpenOptions::new().append(true).open(auth).unwrap();
    for i in 0..count {
        let now = chrono::Local::now().format("%b %e %H:%M:%S");
        writeln!(
            file,
            "{now} hostA sshd[{}]: Failed password for invalid user admin from {ip} port {} ssh2",
            4000 + i,
            50000 + i
        )
        .unwrap();
    }
}

#[test]
fn fail2ban_action_shares_to_a_watcher_and_to_stock_fail2ban_and_unban_propagates() {
    let net = Net::new("f2baction", 3);
    let (a, auth) = net.fail2ban_sshd(0, true);
    let _watch = net.watch(1);
    let _consumer = net.fail2ban_consumer(2);
    for node in 0..3 {
        assert!(
            net.reachable(node),
            "node{node} must accept the attacker before any ban"
        );
    }
    let attacker = net.cluster.attacker_ip().to_string();

    fail_logins(&auth, &attacker, 3);
    net.expect_blocked(0, "fail2ban on A");
    let log = net.shared_log();
    assert!(
        log.contains(&format!(
            "HOST {attacker} PORT 0:65535 jail=sshtest node=node0"
        )),
        "the action's record: {log}"
    );
    net.expect_blocked(1, "banshare watch on B");
    net.expect_blocked(2, "stock fail2ban with the banshare filter on B'");

    support::run_ok(a.client().args(["set", "sshtest", "unbanip", &attacker]));
    net.expect_open(0, "unban on A");
    assert!(
        wait_until(PATIENCE, || net
            .shared_log()
            .contains(&format!("UNBAN {attacker} "))),
        "no unban record"
    );
    net.expect_open(1, "the unban reaching the watcher");
}

#[test]
fn monitor_shares_bans_of_a_fail2ban_without_the_action() {
    let net = Net::new("f2bmonitor", 2);
    let (a, auth) = net.fail2ban_sshd(0, false);
    let monitor = net
        .banshare(0, &["monitor", "--fail2ban-log"])
        .arg(a.log_path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _monitor = Daemon(monitor);
    let cursor = net.tmp.path().join("monitor0/cursor.json");
    assert!(
        wait_until(Duration::from_secs(20), || cursor.exists()),
        "the monitor never started"
    );
    let _watch = net.watch(1);
    assert!(net.reachable(1));
    let attacker = net.cluster.attacker_ip().to_string();

    fail_logins(&auth, &attacker, 3);
    net.expect_blocked(0, "fail2ban on A");
    net.expect_blocked(1, "the monitor's record reaching B");
    assert!(net.shared_log().contains(&format!(
        "HOST {attacker} PORT 0:65535 jail=sshtest node=node0"
    )));

    let out = a
        .client()
        .args(["set", "sshtest", "unbanip", &attacker])
        .output()
        .unwrap();
    assert!(out.status.success());
    net.expect_open(1, "the unban reaching B");
}

#[test]
fn monitor_loses_nothing_when_fail2ban_log_is_rotated() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("newbans.log");
    fs::write(&log, b"").unwrap();
    let auth = tmp.path().join("auth.log");
    fs::write(&auth, b"").unwrap();
    let options = format!(
        "filter = sshd\nlogpath = {}\nbackend = polling\naction =\n",
        auth.display()
    );
    let mut f2b = Fail2ban::spawn(None, "rot", &options);
    f2b.wait_ready();
    let monitor = Command::new(BANSHARE)
        .args([
            "--config",
            "/dev/null",
            "monitor",
            "--node",
            "a",
            "--fail2ban-log",
        ])
        .arg(f2b.log_path())
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--spool-dir")
        .arg(tmp.path().join("spool"))
        .arg("--log")
        .arg(&log)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _monitor = Daemon(monitor);
    assert!(wait_until(Duration::from_secs(20), || tmp
        .path()
        .join("state/cursor.json")
        .exists()));

    let ban = |prefix: &str| {
        let ips: Vec<String> = (1..=5).map(|i| format!("{prefix}.{i}")).collect();
        support::run_ok(f2b.client().args(["set", "rot", "banip"]).args(&ips));
        ips
    };
    let mut all = ban("192.0.2");
    // logrotate's default: rename, then tell fail2ban to reopen its log.
    fs::rename(f2b.log_path(), f2b.log_path().with_extension("log.1")).unwrap();
    all.extend(ban("198.51.100")); // still written to the renamed file
    let out = f2b.client().arg("flushlogs").output().unwrap();
    assert!(out.status.success());
    all.extend(ban("203.0.113")); // into the new file

    let shared = || fs::read_to_string(&log).unwrap();
    let complete = wait_until(PATIENCE, || {
        all.iter()
            .all(|ip| shared().contains(&format!("HOST {ip} ")))
    });
    assert!(complete, "missing records; shared log:\n{}", shared());
    let records = shared().lines().count();
    assert_eq!(records, all.len(), "each ban exactly once:\n{}", shared());
}

/// The share frozen: the file server's SFTP server processes stopped with
/// SIGSTOP. The SSH connections stay up (sshd still answers keepalives), so
/// every call through the mount waits, uninterruptibly, for an answer that
/// does not come: what a node sees when its file server stops answering,
/// before (or without) any connection timeout. Dropping it thaws the share.
///
/// Not nftables drops: the test mounts' `ServerAliveInterval=2`,
/// `ServerAliveCountMax=2` end the connection, and with it the stuck
/// calls, about 10 s after the first dropped packet (measured), so the
/// hang would be neither indefinite nor reliably there when checked.
struct Frozen(Vec<libc::pid_t>);

impl Frozen {
    fn new(cluster: &Cluster) -> Frozen {
        use std::os::unix::fs::MetadataExt;
        let netns = fs::metadata(format!("/run/netns/{}", cluster.fileserver_ns()))
            .unwrap()
            .ino();
        let in_fileserver =
            |pid: u32| fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == netns);
        // internal-sftp runs in a child of the session's `sshd: user@notty`
        // process (which answers the keepalives), named for it.
        let sftp_server = |pid: u32| {
            fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with("sshd: ") && c.contains("@internal-sftp"))
        };
        let pids: Vec<libc::pid_t> = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&p| in_fileserver(p) && sftp_server(p))
            .map(|p| p as libc::pid_t)
            .collect();
        assert!(
            !pids.is_empty(),
            "no SFTP server process on the file server"
        );
        for &pid in &pids {
            // SAFETY: kill(2) has no memory effects.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

/// Whether any process's command line contains `text`.
fn any_process_mentions(text: &str) -> bool {
    !processes_mentioning(text).is_empty()
}

/// The live threads, as `/proc/<pid>/task/<tid>`, of the processes whose
/// command line contains `text`, one thread each. Read per thread: a
/// delivery stuck in the mount is a process whose main thread has exited
/// (its own cmdline and fds read empty) while the stuck thread lives on.
fn processes_mentioning(text: &str) -> Vec<PathBuf> {
    let numbered = |dir: PathBuf| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .map(|e| e.path())
            .collect()
    };
    numbered(PathBuf::from("/proc"))
        .into_iter()
        .filter_map(|process| {
            numbered(process.join("task")).into_iter().find(|task| {
                fs::read(task.join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(text))
            })
        })
        .collect()
}

/// The standard streams that are pipes, as `<task>/fd/<n> -> pipe:[inode]`,
/// of the processes whose command line contains `text`.
fn streams_on_pipes(text: &str) -> Vec<String> {
    processes_mentioning(text)
        .into_iter()
        .flat_map(|task| {
            (0..3).filter_map(move |fd| {
                let link = task.join(format!("fd/{fd}"));
                let target = fs::read_link(&link).ok()?;
                let target = target.to_string_lossy().into_owned();
                target
                    .starts_with("pipe:")
                    .then(|| format!("{} -> {target}", link.display()))
            })
        })
        .collect()
}

#[test]
fn bans_return_in_time_while_the_share_is_frozen_and_each_is_delivered_once_after() {
    let net = Net::new("f2bfreeze", 1);
    // Short lock and I/O timeouts: each ban returns within 2 s + 2 s + 2 s,
    // far inside the action timeout fail2ban is given below.
    net.write_config_with(
        0,
        "[append]\nlock_timeout = \"2s\"\nstale_lock = \"1s\"\nio_timeout = \"2s\"\n",
    );
    let (f2b, _auth) = net.fail2ban_sshd_with(0, Some("timeout=20"));
    support::run_ok(f2b.client().args(["set", "sshtest", "banip", "192.0.2.1"]));
    assert!(
        wait_until(PATIENCE, || net.shared_log().contains("HOST 192.0.2.1 ")),
        "a ban through the working share"
    );

    let frozen = Frozen::new(&net.cluster);
    let ips = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];
    // `set banip` runs the jail's actions before it answers.
    support::run_ok(f2b.client().args(["set", "sshtest", "banip"]).args(ips));
    let log = f2b.log();
    for sign in ["timed out", "Failed to execute", " ERROR "] {
        assert!(
            !log.contains(sign),
            "fail2ban's actions failed or timed out ({sign:?}):\n{log}"
        );
    }
    support::run_ok(f2b.client().arg("ping"));
    let config = net.config(0).display().to_string();
    assert!(
        any_process_mentions(&config),
        "no delivery still stuck in the frozen mount"
    );
    let pipes = streams_on_pipes(&config);
    assert!(
        pipes.is_empty(),
        "banshare processes left holding pipes (fail2ban's) as stdio: {pipes:?}"
    );
    assert!(
        ips.iter().all(|ip| !net.shared_log().contains(ip)),
        "the frozen share took a record"
    );
    drop(frozen);

    let spool = net.tmp.path().join("spool0");
    let delivered = wait_until(Duration::from_secs(60), || {
        // A flush may fail while the thawed runs finish their own work.
        let _ = net.banshare(0, &["flush"]).output();
        let spool_empty = fs::read_dir(&spool)
            .unwrap()
            .all(|e| e.unwrap().file_name().to_string_lossy().starts_with('.'));
        spool_empty
            && ips
                .iter()
                .all(|ip| net.shared_log().contains(&format!("HOST {ip} ")))
    });
    assert!(
        delivered,
        "not everything delivered after the thaw; log:\n{}",
        net.shared_log()
    );
    assert!(
        wait_until(Duration::from_secs(30), || !any_process_mentions(&config)),
        "a banshare run of this test is still alive after the thaw"
    );
    let log = net.shared_log();
    for ip in ips {
        let times = log.matches(&format!("HOST {ip} ")).count();
        assert_eq!(times, 1, "{ip} delivered {times} times:\n{log}");
    }
}
