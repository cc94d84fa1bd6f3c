//! `banshare watch` across hosts with the nftables backend: test hosts in
//! network namespaces mount the shared folder with sshfs from a real sshd,
//! and a ban is proven by an attacker namespace's TCP connect failing after
//! it and succeeding before. Also: a watcher killed with SIGKILL in the
//! middle of 10,000 records resumes at its cursor. Needs root.

mod support;

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use support::cluster::{Cluster, require_root};
use support::{BANSHARE, wait_until};

const PORT: u16 = 8080;

/// A watcher process in a node's namespace.
struct Watcher {
    child: Child,
}

impl Watcher {
    fn start(cluster: &Cluster, node: usize, log: &Path, state: &Path) -> Watcher {
        // A storm of 10,000 bans from one node is what these tests send on
        // purpose: lift the circuit breaker's per-node limit for them.
        fs::create_dir_all(state).unwrap();
        let config = state.join("banshare.toml");
        fs::write(&config, "[trust]\nmax_bans_per_node_per_minute = 1000000\n").unwrap();
        let child = cluster
            .command_in(cluster.node_ns(node), BANSHARE)
            .arg("--config")
            .arg(&config)
            .args(["watch", "--backend", "nftables", "--node"])
            .arg(format!("node{node}"))
            .arg("--log")
            .arg(log)
            .arg("--state-dir")
            .arg(state.join("state"))
            .arg("--spool-dir")
            .arg(state.join("spool"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Ready once its table is in the node's ruleset.
        let ready = wait_until(Duration::from_secs(20), || {
            cluster
                .nft(node, &["list", "table", "inet", "banshare"])
                .is_some()
        });
        assert!(
            ready,
            "node{node}'s watcher never created its nftables table"
        );
        Watcher { child }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert!(
            self.child.wait().unwrap().success(),
            "the watcher failed on SIGTERM"
        );
    }
}

fn share(cluster: &Cluster, node: usize, op: &str, address: &str, log: &Path, spool: &Path) {
    support::run_ok(
        cluster
            .command_in(cluster.node_ns(node), BANSHARE)
            .args([
                "--config",
                "/dev/null",
                "--quiet",
                op,
                address,
                "--jail",
                "sshd",
                "--bantime",
                "600",
                "--node",
            ])
            .arg(format!("node{node}"))
            .arg("--log")
            .arg(log)
            .arg("--spool-dir")
            .arg(spool),
    );
}

#[test]
fn a_ban_on_one_node_blocks_the_attacker_on_the_others_and_unban_lifts_it() {
    require_root();
    let nodes = 4;
    let cluster = Cluster::new("nftwatch", nodes);
    fs::write(cluster.export_dir().join("newbans.log"), b"").unwrap();
    let state = tempfile::tempdir().unwrap();
    let mounts: Vec<PathBuf> = (0..nodes).map(|i| cluster.mount(i)).collect();
    let log = |i: usize| mounts[i].join("newbans.log");
    for node in 0..nodes {
        cluster.serve_tcp(node, PORT);
    }
    let watchers: Vec<Watcher> = (0..nodes)
        .map(|i| Watcher::start(&cluster, i, &log(i), &state.path().join(format!("n{i}"))))
        .collect();
    let attacker = cluster.attacker_ip().to_string();
    let reachable =
        |node: usize| cluster.can_connect(cluster.attacker_ns(), cluster.node_ip(node), PORT);
    for node in 0..nodes {
        assert!(
            reachable(node),
            "node{node} must accept the attacker before the ban"
        );
    }

    share(
        &cluster,
        0,
        "ban",
        &attacker,
        &log(0),
        &state.path().join("spool0"),
    );
    for node in 1..nodes {
        let blocked = wait_until(Duration::from_secs(15), || !reachable(node));
        assert!(
            blocked,
            "node{node} still accepts the attacker after the ban"
        );
    }
    // node0 wrote the record: its own fail2ban banned already, so its
    // watcher must not apply it again (the echo loop).
    assert!(reachable(0), "node0 applied its own record");

    share(
        &cluster,
        0,
        "unban",
        &attacker,
        &log(0),
        &state.path().join("spool0"),
    );
    for node in 1..nodes {
        let open = wait_until(Duration::from_secs(15), || reachable(node));
        assert!(open, "node{node} still blocks the attacker after the unban");
    }
    for w in watchers {
        w.stop();
    }
}

#[test]
fn sigkill_in_the_middle_of_10000_records_then_restart_applies_every_one() {
    require_root();
    let cluster = Cluster::new("crash", 1);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    fs::write(&log, b"").unwrap();
    let total = 10_000usize;
    let expected: Vec<String> = (0..total)
        .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .collect();

    let watcher = Watcher::start(&cluster, 0, &log, dir.path());
    let writer = {
        let (log, expected) = (log.clone(), expected.clone());
        std::thread::spawn(move || append_slowly(&log, &expected))
    };
    let cursor = dir.path().join("state/cursor.json");
    let partway = wait_until(Duration::from_secs(60), || saved_offset(&cursor) > 200_000);
    assert!(partway, "the watcher never got partway");
    watcher.kill();
    let killed_at = saved_offset(&cursor);
    writer.join().unwrap();
    let size = fs::metadata(&log).unwrap().len();
    assert!(
        killed_at < size,
        "killed too late to test anything ({killed_at} of {size} bytes)"
    );

    let watcher = Watcher::start(&cluster, 0, &log, dir.path());
    let all = wait_until(Duration::from_secs(60), || {
        cluster.banned_v4(0).len() >= total
    });
    let banned: HashSet<String> = cluster.banned_v4(0).into_iter().collect();
    assert!(
        all,
        "only {} of {total} bans applied after the restart",
        banned.len()
    );
    assert_eq!(
        banned,
        expected.iter().cloned().collect::<HashSet<_>>(),
        "exactly the 10,000 addresses"
    );
    assert!(wait_until(Duration::from_secs(10), || saved_offset(
        &cursor
    ) == size));
    watcher.stop();

    // The restarted watcher resumed at its cursor instead of replaying the
    // log: it read only the lines after the cursor saved before the kill.
    let status: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("state/status.json")).unwrap()).unwrap();
    let after = count_lines_after(&log, killed_at);
    assert_eq!(status["lines_read"].as_u64(), Some(after), "{status}");
}

/// Appends the bans in chunks of 250 lines, as many writers would.
fn append_slowly(log: &Path, addresses: &[String]) {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (c, chunk) in addresses.chunks(250).enumerate() {
        let mut text = String::new();
        for (i, addr) in chunk.iter().enumerate() {
            text.push_str(&format!(
                "<13>Nov 21 18:00:00 banshare[1]: HOST {addr} PORT 22 node=other ts={ts} bantime=3600 id={:024x}\n",
                c * 250 + i + 1
            ));
        }
        OpenOptions::new()
            .append(true)
            .open(log)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn saved_offset(cursor: &Path) -> u64 {
    let Ok(data) = fs::read(cursor) else { return 0 };
    let value: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
    value["position"]["seq"].as_u64().unwrap_or(0)
}

fn count_lines_after(log: &Path, offset: u64) -> u64 {
    let data = fs::read(log).unwrap();
    data[offset as usize..]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
}

/// Makes node `node` reach the file server through node `router`, which
/// forwards its packets (and sends no ICMP redirects, which would replace
/// the route by a direct one): the file server's next hop is then the
/// router's address.
fn route_file_server_via(cluster: &Cluster, node: usize, router: usize) {
    let sysctls = "echo 1 > /proc/sys/net/ipv4/ip_forward \
        && echo 0 > /proc/sys/net/ipv4/conf/all/send_redirects \
        && echo 0 > /proc/sys/net/ipv4/conf/eth0/send_redirects";
    support::run_ok(
        cluster
            .command_in(cluster.node_ns(router), "sh")
            .args(["-c", sysctls]),
    );
    support::run_ok(cluster.command_in(cluster.node_ns(node), "sh").args([
        "-c",
        "echo 0 > /proc/sys/net/ipv4/conf/all/accept_redirects \
         && echo 0 > /proc/sys/net/ipv4/conf/eth0/accept_redirects",
    ]));
    let server = format!("{}/32", cluster.fileserver_ip());
    let router = cluster.node_ip(router).to_string();
    support::run_ok(
        cluster
            .command_in(cluster.node_ns(node), "ip")
            .args(["route", "add", &server, "via", &router, "dev", "eth0"]),
    );
}

/// Appends ban records from node `other` for `targets` to `log`.
fn append_bans(log: &Path, targets: &[&str], first_id: usize) {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text: String = targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            format!(
                "<13>Nov 21 18:00:00 banshare[1]: HOST {target} PORT 22 node=other ts={ts} bantime=600 id={:024x}\n",
                first_id + i
            )
        })
        .collect();
    OpenOptions::new()
        .append(true)
        .open(log)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

#[test]
fn records_banning_the_file_server_its_network_or_the_next_hop_are_refused_and_the_share_stays_readable()
 {
    require_root();
    let cluster = Cluster::new("reach", 2);
    route_file_server_via(&cluster, 0, 1);
    // Written on the file server's side, so that the test itself never
    // touches node0's mount (it would hang if node0 banned its file server).
    let server_log = cluster.export_dir().join("newbans.log");
    fs::write(&server_log, b"").unwrap();
    let mount = cluster.mount(0);
    cluster.serve_tcp(0, PORT);
    let dir = tempfile::tempdir().unwrap();
    let watcher = Watcher::start(&cluster, 0, &mount.join("newbans.log"), dir.path());
    let attacker = cluster.attacker_ip();
    let reachable = || cluster.can_connect(cluster.attacker_ns(), cluster.node_ip(0), PORT);
    assert!(reachable(), "node0 must accept the attacker before the ban");

    let file_server = cluster.fileserver_ip().to_string();
    let next_hop = cluster.node_ip(1).to_string();
    // 198.18.0.0/29 holds the file server (.1) but not node0 (.11), so only
    // the transport rule can refuse it, not ignoreself.
    let protected = [file_server.as_str(), "198.18.0.0/29", next_hop.as_str()];
    append_bans(&server_log, &protected, 1);
    let cursor = dir.path().join("state/cursor.json");
    let size = fs::metadata(&server_log).unwrap().len();
    let read = wait_until(Duration::from_secs(15), || saved_offset(&cursor) == size);
    assert!(read, "the watcher never read the records");
    assert!(
        cluster.can_connect(cluster.node_ns(0), cluster.fileserver_ip(), 22),
        "node0 can no longer reach its file server after records banning {protected:?}"
    );
    let banned = cluster.banned_v4(0);
    assert!(
        !banned.contains(&file_server) && !banned.contains(&next_hop),
        "{banned:?}"
    );

    // The share is still read: a normal ban after them is applied.
    append_bans(&server_log, &[&attacker.to_string()], 100);
    let blocked = wait_until(Duration::from_secs(15), || !reachable());
    assert!(blocked, "node0 still accepts the attacker after the ban");
    let status = dir.path().join("state/status.json");
    let refused = wait_until(Duration::from_secs(5), || {
        let Ok(data) = fs::read(&status) else {
            return false;
        };
        let value: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
        value["skipped"]["TransportAddress"].as_u64() == Some(3)
    });
    let status: serde_json::Value = serde_json::from_slice(&fs::read(&status).unwrap()).unwrap();
    assert!(
        refused,
        "the status does not count 3 refused transport addresses: {status}"
    );
    // Found by the watcher itself: the mount's source and the route to it.
    assert_eq!(
        status["transport"],
        serde_json::json!({"servers": [file_server], "next_hops": [next_hop]}),
        "{status}"
    );
    let shown = support::run_ok(
        std::process::Command::new(BANSHARE)
            .args(["--config", "/dev/null", "status", "--state-dir"])
            .arg(dir.path().join("state")),
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!(
            "never bans:  {file_server} (server), {next_hop} (next hop)"
        )),
        "{shown}"
    );

    // The route changes (the file server is now on-link): looked up again
    // on SIGHUP, the old next hop is no longer protected.
    support::run_ok(cluster.command_in(cluster.node_ns(0), "ip").args([
        "route",
        "del",
        &format!("{file_server}/32"),
    ]));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(watcher.child.id() as i32, libc::SIGHUP) };
    let status = dir.path().join("state/status.json");
    let looked_up = wait_until(Duration::from_secs(10), || {
        let data = fs::read(&status).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
        value["transport"] == serde_json::json!({"servers": [file_server], "next_hops": []})
    });
    assert!(
        looked_up,
        "the transport's addresses were not looked up again on SIGHUP: {}",
        fs::read_to_string(&status).unwrap_or_default()
    );
    watcher.stop();
}

// ------------------------------------------------------------ firewall drift

/// A watcher in node 0's namespace with `backend`, a safety poll of 1 s and
/// its log in a file; the attacker's TCP connects tell whether it is banned.
struct DriftHost {
    cluster: Cluster,
    dir: tempfile::TempDir,
    backend: &'static str,
    watcher: Option<Child>,
}

impl DriftHost {
    fn new(hint: &str, backend: &'static str) -> DriftHost {
        require_root();
        let cluster = Cluster::new(hint, 1);
        cluster.serve_tcp(0, PORT);
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("newbans.log"), b"").unwrap();
        fs::write(
            dir.path().join("banshare.toml"),
            "[watch]\nsafety_poll = \"1s\"\n",
        )
        .unwrap();
        let mut host = DriftHost {
            cluster,
            dir,
            backend,
            watcher: None,
        };
        host.start();
        host
    }

    /// Starts the watcher; returns once it has set its backend up.
    fn start(&mut self) {
        let dir = self.dir.path();
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("watcher.log"))
            .unwrap();
        let child = self
            .cluster
            .command_in(self.cluster.node_ns(0), BANSHARE)
            .arg("--config")
            .arg(dir.join("banshare.toml"))
            .args(["watch", "--backend", self.backend, "--node", "node0"])
            .arg("--log")
            .arg(dir.join("newbans.log"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.watcher = Some(child);
        let status = dir.join("state/status.json");
        assert!(
            wait_until(Duration::from_secs(20), || status.exists()),
            "the watcher never started: {}",
            self.log()
        );
    }

    /// Stops the watcher with SIGTERM; it saves its active bans.
    fn stop(&mut self) {
        let mut child = self.watcher.take().expect("running");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(
            child.wait().unwrap().success(),
            "the watcher failed on SIGTERM"
        );
    }

    /// What the watcher logged.
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("watcher.log")).unwrap_or_default()
    }

    /// A ban of the attacker for 600 s from another node, as it would append it.
    fn ban_attacker(&self) {
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let line = format!(
            "<13>Nov 21 18:00:00 banshare[1]: HOST {} PORT 22 node=other ts={ts} bantime=600 id=00000000000000000000000000000001\n",
            self.cluster.attacker_ip()
        );
        OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("newbans.log"))
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }

    fn reachable(&self) -> bool {
        let c = &self.cluster;
        c.can_connect(c.attacker_ns(), c.node_ip(0), PORT)
    }

    /// Runs `args` in the node's namespace and asserts it succeeded.
    fn run(&self, args: &[&str]) -> String {
        let out = support::run_ok(
            self.cluster
                .command_in(self.cluster.node_ns(0), args[0])
                .args(&args[1..]),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits for the attacker to be blocked, saying after what.
    fn expect_blocked(&self, after: &str) {
        assert!(
            wait_until(Duration::from_secs(15), || !self.reachable()),
            "the attacker is not blocked {after}; the watcher logged:\n{}",
            self.log()
        );
    }

    /// How many times the watcher has re-applied its active bans.
    fn reapplied(&self) -> usize {
        self.log().matches("re-applied 1 active bans").count()
    }
}

impl Drop for DriftHost {
    fn drop(&mut self) {
        if let Some(mut child) = self.watcher.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The timeout nft reports for `addr` in the v4 set, in seconds.
fn nft_timeout(host: &DriftHost, addr: &str) -> Option<u64> {
    let json = host.run(&["nft", "-j", "list", "set", "inet", "banshare", "v4"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["nftables"]
        .as_array()?
        .iter()
        .flat_map(|item| item["set"]["elem"].as_array().into_iter().flatten())
        .find(|elem| elem["elem"]["val"] == addr)
        .and_then(|elem| elem["elem"]["timeout"].as_u64())
}

#[test]
fn nftables_table_flushed_or_deleted_is_restored_with_the_active_bans() {
    let mut host = DriftHost::new("nftdrift", "nftables");
    let attacker = host.cluster.attacker_ip().to_string();
    assert!(host.reachable(), "the attacker connects before the ban");
    host.ban_attacker();
    host.expect_blocked("after the ban");

    for (n, drift) in [
        &["nft", "flush", "ruleset"][..],
        &["nft", "delete", "table", "inet", "banshare"][..],
    ]
    .into_iter()
    .enumerate()
    {
        host.run(drift);
        assert!(host.reachable(), "`{}` lifted the ban", drift.join(" "));
        host.expect_blocked(&format!(
            "within the safety poll after `{}`",
            drift.join(" ")
        ));
        assert!(
            wait_until(Duration::from_secs(5), || host.reapplied() == n + 1),
            "the watcher did not say it re-applied the ban:\n{}",
            host.log()
        );
    }
    // With the time it had left, not a fresh bantime.
    let timeout = nft_timeout(&host, &attacker).expect("the attacker is in the v4 set");
    assert!(timeout < 600, "re-applied with timeout {timeout}");

    // A reboot keeps the state and loses the ruleset.
    host.stop();
    host.run(&["nft", "flush", "ruleset"]);
    assert!(host.reachable());
    host.start();
    host.expect_blocked("after a restart that found the table gone");
    assert!(
        host.log()
            .contains("firewall objects were not there at start (a reboot?): applying the 1 saved"),
        "{}",
        host.log()
    );
}

#[test]
fn ipset_sets_destroyed_are_restored_with_the_active_bans() {
    let host = DriftHost::new("ipsetdrift", "ipset");
    let attacker = host.cluster.attacker_ip().to_string();
    let rule = |verb: &str| {
        host.run(&[
            "iptables",
            verb,
            "INPUT",
            "-m",
            "set",
            "--match-set",
            "banshare-v4",
            "src",
            "-j",
            "DROP",
        ]);
    };
    rule("-I");
    assert!(host.reachable(), "the attacker connects before the ban");
    host.ban_attacker();
    host.expect_blocked("after the ban");

    // The kernel destroys a set only when no rule uses it.
    rule("-D");
    host.run(&["ipset", "destroy", "banshare-v4"]);
    assert!(host.reachable());
    let restored = wait_until(Duration::from_secs(15), || {
        host.run(&["ipset", "list", "-n"]).contains("banshare-v4\n")
            && host
                .run(&["ipset", "list", "banshare-v4"])
                .lines()
                .any(|l| l.starts_with(&format!("{attacker} ")))
    });
    assert!(
        restored,
        "the set and its ban are not back:\n{}",
        host.log()
    );
    rule("-I");
    host.expect_blocked("once the set is back");
    assert!(
        wait_until(Duration::from_secs(5), || host.reapplied() == 1),
        "the watcher did not say it re-applied the ban:\n{}",
        host.log()
    );
}

/// After a reboot the watcher may start before the share is mounted, and it
/// restores the bans it saved. One of them may be the file server itself
/// (banned by an older banshare, which did not protect it): restored before
/// the watcher knows the server, it would keep the share from ever mounting.
/// So saved bans wait until the log has been read once.
#[test]
fn saved_bans_wait_for_the_share_so_a_reboot_never_bans_its_file_server() {
    require_root();
    let cluster = Cluster::new("boot", 1);
    fs::write(cluster.export_dir().join("newbans.log"), b"").unwrap();
    cluster.serve_tcp(0, PORT);
    let attacker = cluster.attacker_ip().to_string();
    let file_server = cluster.fileserver_ip().to_string();
    let dir = tempfile::tempdir().unwrap();
    // active.json as an older banshare saved it (format 0, a bare list).
    let now = chrono::Utc::now();
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let saved: Vec<serde_json::Value> = [&file_server, &attacker]
        .iter()
        .map(|ip| {
            serde_json::json!({
                "target": format!("{ip}/32"),
                "until": at(now + chrono::Duration::hours(1)),
                "jail": null,
                "since": at(now),
            })
        })
        .collect();
    fs::create_dir_all(dir.path().join("state")).unwrap();
    fs::write(
        dir.path().join("state/active.json"),
        serde_json::to_vec(&saved).unwrap(),
    )
    .unwrap();
    // The share is not mounted yet, as at boot: the log is missing. In the
    // machine's own mount namespace (nsenter, not `ip netns exec`, whose
    // private mount namespace would never see the mount made later).
    let log = cluster.mountpoint(0).join("newbans.log");
    let mut child = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", cluster.node_ns(0)))
        .args([BANSHARE, "--config", "/dev/null", "watch", "--backend"])
        .args(["nftables", "--node", "node0", "--log"])
        .arg(&log)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ready = wait_until(Duration::from_secs(20), || {
        cluster
            .nft(0, &["list", "table", "inet", "banshare"])
            .is_some()
    });
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
    }
    let watcher = Watcher { child };
    assert!(ready, "the watcher never created its nftables table");
    let banned_early = wait_until(Duration::from_secs(3), || {
        cluster.banned_v4(0).contains(&file_server)
    });
    assert!(
        !banned_early,
        "the watcher banned its file server before its share was mounted"
    );
    cluster.mount(0);
    let restored = wait_until(Duration::from_secs(20), || {
        !cluster.can_connect(cluster.attacker_ns(), cluster.node_ip(0), PORT)
    });
    assert!(restored, "the saved ban of the attacker was never restored");
    assert!(
        !cluster.banned_v4(0).contains(&file_server),
        "the file server was banned once its share was mounted"
    );
    assert!(cluster.can_connect(cluster.node_ns(0), cluster.fileserver_ip(), 22));
    watcher.stop();
}
