//! What polling over sshfs costs the file server: a watcher that polls a
//! log nobody writes to asks the server for the log's size alone (one SFTP
//! request a poll), not for the full look at the path, the file's first
//! bytes and a read (about a dozen), and still reads at once what a poll's
//! size shows: a ban, and after a rotation the new file, with the full look
//! an hour away. Test hosts in network namespaces, a real sshd and sshfs,
//! the nftables backend; a ban is proven by the attacker's TCP connect.
//! Needs root.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, require_root};
use support::{BANSHARE, Daemon, banshare_sh, run_ok, wait_until};

const PORT: u16 = 8080;
/// How often the watcher polls; the size is asked at every poll.
const POLL: Duration = Duration::from_millis(50);
/// How long the idle watcher is measured.
const IDLE: Duration = Duration::from_secs(3);
/// The file server's write calls an idle watcher may cost per poll it can
/// make in [`IDLE`] (at most IDLE / POLL + 1). Measured on sshd 9.2 with
/// internal-sftp: one size request (an `fstat`, which sshfs sends as one
/// SFTP STAT) is 3 writes; the full look of every poll before this change
/// was 36. The margin covers the status file's lag measure (a size and a
/// read, once a second) and ssh's keepalives.
const MAX_WRITES_PER_POLL: u64 = 8;

#[test]
fn an_idle_watcher_over_sshfs_asks_only_the_size_and_reads_at_once_what_it_shows() {
    require_root();
    let cluster = Cluster::new("pollcost", 1);
    let server_log = cluster.export_dir().join("newbans.log");
    fs::write(&server_log, b"").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Something to read first, so that the idle polls follow an open file.
    append_on_server(&server_log, dir.path(), "ban", "192.0.2.1");
    let log = cluster.mount(0).join("newbans.log");
    cluster.serve_tcp(0, PORT);
    let reachable = || cluster.can_connect(cluster.attacker_ns(), cluster.node_ip(0), PORT);
    assert!(reachable(), "the attacker must get through before the ban");

    // The full look (and the firewall check) is an hour away: only what
    // each poll's size shows can make the watcher read.
    let config = dir.path().join("banshare.toml");
    fs::write(&config, "[watch]\nsafety_poll = \"1h\"\n").unwrap();
    let _watcher = Daemon(
        cluster
            .command_in(cluster.node_ns(0), BANSHARE)
            .arg("--config")
            .arg(&config)
            .args(["watch", "--backend", "nftables", "--follow", "poll"])
            .arg("--poll-interval")
            .arg(format!("{}ms", POLL.as_millis()))
            .args(["--node", "node0", "--log"])
            .arg(&log)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--spool-dir")
            .arg(dir.path().join("spool"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let read_all = wait_until(Duration::from_secs(20), || {
        saved_offset(&dir.path().join("state")) == Some(file_len(&server_log))
    });
    assert!(read_all, "the watcher never read the first record");

    let before = cluster.fileserver_work();
    let started = Instant::now();
    thread::sleep(IDLE);
    let idle = cluster.fileserver_work().since(before);
    let polls_at_most = (started.elapsed().as_millis() / POLL.as_millis()) as u64 + 1;
    eprintln!(
        "idle for {IDLE:?}: the file server made {} write calls, {:?} of CPU",
        idle.writes, idle.cpu
    );
    assert!(
        idle.writes <= polls_at_most * MAX_WRITES_PER_POLL,
        "an idle watcher cost the file server {} write calls ({:?} of CPU) in {:?}: more than {} \
         per poll for at most {polls_at_most} polls; a poll should ask for the size alone",
        idle.writes,
        idle.cpu,
        started.elapsed(),
        MAX_WRITES_PER_POLL
    );

    let attacker = cluster.attacker_ip().to_string();
    append_on_server(&server_log, dir.path(), "ban", &attacker);
    assert!(
        wait_until(Duration::from_secs(20), || !reachable()),
        "the ban was never applied: a poll's size must lead to a read"
    );

    // Rotated on the server: through sshfs the open file tells the size of
    // the new file at the path, so a poll sees it and the full look finds
    // the rotation.
    fs::rename(&server_log, server_log.with_extension("log.1")).unwrap();
    fs::write(&server_log, b"").unwrap();
    append_on_server(&server_log, dir.path(), "unban", &attacker);
    assert!(
        wait_until(Duration::from_secs(20), reachable),
        "the unban in the rotated log was never applied"
    );
}

/// `banshare ban|unban ADDR` on the file server's own disk, as node
/// "server".
fn append_on_server(log: &Path, dir: &Path, op: &str, addr: &str) {
    run_ok(banshare_sh(
        Command::new("sh"),
        &format!("$B {op} {addr} --bantime 600 $C"),
        log,
        &dir.join("spool-server"),
        "server",
    ));
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// The byte offset in the watcher's saved cursor.
fn saved_offset(state: &Path) -> Option<u64> {
    let text = fs::read_to_string(state.join("cursor.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["position"]["seq"].as_u64()
}
