//! ZeroMQ end to end, with the original system's peers: a Python REQ client
//! (pyzmq, Debian's python3-zmq) speaking fail2ban-zmq-tools' format to the
//! real `banshare publisher`, a banshare watcher on another test host
//! applying the ban to nftables, and a Python SUB client written as the
//! original subscriber reads. A ban is proven by the attacker's TCP connect
//! failing after it and succeeding before it.

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::cluster::{Cluster, require_root};
use support::pyzmq::{LEGACY_SUBSCRIBER, PYTHON};
use support::{BANSHARE, Daemon, wait_until};

const PORT: u16 = 8022;
const TOKEN: &str = "s3cret-t0ken";
const WAIT: Duration = Duration::from_secs(20);

/// The original monitor's request: sends one message on a REQ socket and
/// prints the reply (or `TIMEOUT`).
const REQ_CLIENT: &str = r#"
import sys, zmq
c = zmq.Context()
s = c.socket(zmq.REQ)
s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.RCVTIMEO, int(sys.argv[3]) if len(sys.argv) > 3 else 5000)
s.connect(sys.argv[1])
s.send_string(sys.argv[2])
try:
    print(s.recv().decode())
except zmq.Again:
    print("TIMEOUT")
"#;

struct Site {
    cluster: Cluster,
    tmp: tempfile::TempDir,
}

impl Site {
    fn new(hint: &str) -> Site {
        require_root();
        Site {
            cluster: Cluster::new(hint, 3),
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn publisher_ip(&self) -> Ipv4Addr {
        self.cluster.fileserver_ip()
    }

    fn url(&self) -> String {
        format!("zmq+tcp://{}:5678", self.publisher_ip())
    }

    /// `banshare publisher` in the file server's namespace, legacy
    /// messages taken with the token.
    fn start_publisher(&self) -> Daemon {
        let token = self.tmp.path().join("token");
        write_secret(&token, TOKEN);
        let child = self
            .cluster
            .command_in(self.cluster.fileserver_ns(), BANSHARE)
            .args(["--config", "/dev/null", "publisher", "--node", "pub"])
            .arg("--data-dir")
            .arg(self.tmp.path().join("publisher"))
            .arg("--bind")
            .arg(self.publisher_ip().to_string())
            .args(["--legacy", "token", "--token-file"])
            .arg(&token)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let publisher = Daemon(child);
        let up = wait_until(WAIT, || {
            self.cluster
                .can_connect(self.cluster.node_ns(0), self.publisher_ip(), 5678)
        });
        assert!(up, "the publisher never listened");
        publisher
    }

    /// `banshare watch` over ZeroMQ with nftables in node `node`.
    fn start_watcher(&self, node: usize) -> Daemon {
        let dir = self.tmp.path().join(format!("w{node}"));
        let child = self
            .cluster
            .command_in(self.cluster.node_ns(node), BANSHARE)
            .args(["--config", "/dev/null", "watch", "--backend", "nftables"])
            .args(["--node", &format!("node{node}"), "--log", &self.url()])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let watcher = Daemon(child);
        let ready = wait_until(WAIT, || {
            self.cluster
                .command_in(self.cluster.node_ns(node), "nft")
                .args(["list", "table", "inet", "banshare"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(ready, "node{node}'s watcher never set nftables up");
        watcher
    }

    /// What the original monitor gets back for `message`.
    fn legacy_request(&self, node: usize, message: &str) -> String {
        let endpoint = format!("tcp://{}:5678", self.publisher_ip());
        let out = self
            .cluster
            .command_in(self.cluster.node_ns(node), PYTHON)
            .args(["-c", REQ_CLIENT, &endpoint, message])
            .output()
            .expect("python3 with zmq (Debian package python3-zmq)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The original subscriber in node `node`: each message it prints.
    fn start_legacy_subscriber(&self, node: usize) -> (Daemon, mpsc::Receiver<String>) {
        let endpoint = format!("tcp://{}:5680", self.publisher_ip());
        let child: Child = self
            .cluster
            .command_in(self.cluster.node_ns(node), PYTHON)
            .args(["-c", LEGACY_SUBSCRIBER, &endpoint])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        lines_of(child)
    }
}

/// `child`, with a channel of the lines it prints on its stdout.
fn lines_of(mut child: Child) -> (Daemon, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Daemon(child), rx)
}

/// Until the subscriber hears `want`, sends legacy bans of a warm-up
/// address: a SUB socket misses what is published before it joins.
fn warm_up(site: &Site, rx: &mpsc::Receiver<String>) {
    let heard = wait_until(WAIT, || {
        let reply = site.legacy_request(0, &format!("{TOKEN}|warmup|sshd|Ban|198.51.100.1"));
        assert_eq!(reply, "warmup|sshd|Ban|198.51.100.1");
        rx.recv_timeout(Duration::from_millis(300)).is_ok()
    });
    assert!(heard, "the legacy subscriber never heard the publisher");
    while rx.try_recv().is_ok() {}
}

#[test]
fn a_legacy_client_bans_through_the_publisher_on_another_host_and_unban_reopens() {
    let site = Site::new("zmqint");
    let _publisher = site.start_publisher();
    let (_sub, heard) = site.start_legacy_subscriber(2);
    warm_up(&site, &heard);
    site.cluster.serve_tcp(1, PORT);
    let _watcher = site.start_watcher(1);
    let attacker = site.cluster.attacker_ip();
    let reachable = || {
        site.cluster
            .can_connect(site.cluster.attacker_ns(), site.cluster.node_ip(1), PORT)
    };
    assert!(reachable(), "node1 must accept the attacker before the ban");

    let ban = format!("{TOKEN}|web1|sshd|Ban|{attacker}");
    assert_eq!(
        site.legacy_request(0, &ban),
        format!("web1|sshd|Ban|{attacker}"),
        "the ACK is the message without its token"
    );
    assert!(
        wait_until(WAIT, || !reachable()),
        "node1 still accepts the attacker"
    );
    let line = heard
        .recv_timeout(WAIT)
        .expect("the legacy subscriber heard nothing");
    assert_eq!(line, format!("web1 sshd Ban {attacker}"));

    let unban = format!("{TOKEN}|web1|sshd|Unban|{attacker}");
    assert_eq!(
        site.legacy_request(0, &unban),
        format!("web1|sshd|Unban|{attacker}")
    );
    assert!(
        wait_until(WAIT, reachable),
        "node1 still blocks the attacker after the unban"
    );

    // A wrong token changes nothing and the publisher serves on.
    assert_eq!(
        site.legacy_request(0, &format!("nope|web1|sshd|Ban|{attacker}")),
        "NAK"
    );
    assert_eq!(
        site.legacy_request(0, &format!("{TOKEN}|web1|sshd|Ban|192.0.2.77")),
        "web1|sshd|Ban|192.0.2.77"
    );
    assert!(reachable());
}

#[test]
fn the_original_subscriber_hears_bans_made_with_banshare_ban() {
    let site = Site::new("zmqsub");
    let _publisher = site.start_publisher();
    let (_sub, heard) = site.start_legacy_subscriber(2);
    warm_up(&site, &heard);
    let spool: PathBuf = site.tmp.path().join("spool0");
    let out = site
        .cluster
        .command_in(site.cluster.node_ns(0), BANSHARE)
        .args([
            "--config",
            "/dev/null",
            "ban",
            "192.0.2.9",
            "--jail",
            "sshd",
        ])
        .args(["--node", "node0", "--log", &site.url()])
        .arg("--spool-dir")
        .arg(&spool)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = heard
        .recv_timeout(WAIT)
        .expect("the legacy subscriber heard nothing");
    assert_eq!(line, "node0 sshd Ban 192.0.2.9");
    assert!(spool_is_empty(&spool), "the ban was spooled, not delivered");

    // `banshare monitor` shares what fail2ban logs, through the same
    // transport.
    let f2b_log = site.tmp.path().join("fail2ban.log");
    fs::write(&f2b_log, b"").unwrap();
    let state = site.tmp.path().join("monitor-state");
    let _monitor = Daemon(
        site.cluster
            .command_in(site.cluster.node_ns(1), BANSHARE)
            .args(["--config", "/dev/null", "monitor", "--node", "node1"])
            .arg("--fail2ban-log")
            .arg(&f2b_log)
            .args(["--log", &site.url()])
            .arg("--state-dir")
            .arg(&state)
            .arg("--spool-dir")
            .arg(site.tmp.path().join("monitor-spool"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Its first run starts at the end of fail2ban.log, once it saved that.
    assert!(wait_until(WAIT, || state.join("cursor.json").exists()));
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S,%3f");
    let notice = format!("{now} fail2ban.actions [1]: NOTICE [sshd] Ban 192.0.2.21\n");
    fs::OpenOptions::new()
        .append(true)
        .open(&f2b_log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, notice.as_bytes()))
        .unwrap();
    let line = heard
        .recv_timeout(WAIT)
        .expect("the legacy subscriber heard nothing from the monitor");
    assert_eq!(line, "node1 sshd Ban 192.0.2.21");
}

fn spool_is_empty(spool: &Path) -> bool {
    !spool.exists()
        || banshare::outbox::spool::Spool::open(spool)
            .is_ok_and(|s| s.depth().is_ok_and(|n| n == 0))
}

/// A raw TCP peer that starts a ZMTP 3.0 greeting and prints the mechanism
/// named in the server's greeting.
const GREETING_PEEK: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
# The signature and the major version only: the server then sends its whole
# greeting, and waits for the rest of ours.
s.sendall(b"\xff" + b"\x00" * 7 + b"\x01\x7f" + b"\x03")
got = b""
while len(got) < 64:
    chunk = s.recv(64 - len(got))
    if not chunk:
        break
    got += chunk
print(got[12:32].rstrip(b"\x00").decode())
"#;

/// Writes a secret file as the publisher takes one: only its owner may
/// read it.
fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// `banshare curve-keygen --out DIR/NAME`: the public key it prints.
fn curve_keygen(dir: &Path, name: &str) -> String {
    let out = std::process::Command::new(BANSHARE)
        .args(["--config", "/dev/null", "curve-keygen", "--out"])
        .arg(dir.join(name))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn with_curve_only_allowed_keys_get_through_and_no_address_crosses_the_wire_in_clear() {
    let site = Site::new("zmqcurve");
    let keys = site.tmp.path().join("keys");
    fs::create_dir(&keys).unwrap();
    write_secret(&site.tmp.path().join("token"), TOKEN);
    let server = curve_keygen(&keys, "publisher");
    let allowed = curve_keygen(&keys, "node0");
    curve_keygen(&keys, "stranger");
    fs::write(keys.join("clients"), format!("{allowed} node0\n")).unwrap();
    let data = site.tmp.path().join("publisher");
    let _publisher = Daemon(
        site.cluster
            .command_in(site.cluster.fileserver_ns(), BANSHARE)
            .args(["--config", "/dev/null", "publisher", "--node", "pub"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--bind")
            .arg(site.publisher_ip().to_string())
            .arg("--curve-key")
            .arg(keys.join("publisher"))
            .arg("--curve-clients")
            .arg(keys.join("clients"))
            .args(["--legacy", "token", "--token-file"])
            .arg(site.tmp.path().join("token"))
            .args(["--legacy-submit-port", "5682"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let listening = wait_until(WAIT, || {
        site.cluster
            .can_connect(site.cluster.node_ns(0), site.publisher_ip(), 5678)
    });
    assert!(listening, "the publisher never listened");

    // The server's greeting names CURVE.
    let peek = site
        .cluster
        .command_in(site.cluster.node_ns(2), PYTHON)
        .args([
            "-c",
            GREETING_PEEK,
            &site.publisher_ip().to_string(),
            "5678",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&peek.stdout).trim(),
        "CURVE",
        "{}",
        String::from_utf8_lossy(&peek.stderr)
    );

    // A ban from a node whose key is allowed, traced: what it sends over
    // the network never holds the address in clear.
    let ban_to = |server: &str, node: usize, key: &str, address: &str, trace: Option<&Path>| {
        let config = site.tmp.path().join(format!("{key}.toml"));
        let text = format!(
            "[zmq]\ncurve_server_key = \"{}\"\ncurve_key_file = \"{}\"\ntimeout = \"3s\"\n",
            server.replace('\\', "\\\\").replace('"', "\\\""),
            keys.join(key).display()
        );
        fs::write(&config, text).unwrap();
        let mut command = match trace {
            Some(file) => {
                let mut c = site
                    .cluster
                    .command_in(site.cluster.node_ns(node), "strace");
                c.args([
                    "-f",
                    "-qq",
                    "-s",
                    "65535",
                    "-e",
                    "trace=sendto,sendmsg",
                    "-o",
                ])
                .arg(file)
                .arg(BANSHARE);
                c
            }
            None => site
                .cluster
                .command_in(site.cluster.node_ns(node), BANSHARE),
        };
        command
            .arg("--config")
            .arg(&config)
            .args([
                "ban",
                address,
                "--node",
                &format!("node{node}"),
                "--log",
                &site.url(),
            ])
            .arg("--spool-dir")
            .arg(site.tmp.path().join(format!("spool-{key}")))
            .output()
            .unwrap()
    };
    let ban = |node: usize, key: &str, address: &str, trace: Option<&Path>| {
        ban_to(&server, node, key, address, trace)
    };
    let trace = site.tmp.path().join("ban.strace");
    let out = ban(0, "node0", "192.0.2.9", Some(&trace));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = || fs::read_to_string(data.join("records.log")).unwrap_or_default();
    assert!(wait_until(WAIT, || stored().contains("HOST 192.0.2.9 ")));
    assert!(spool_is_empty(&site.tmp.path().join("spool-node0")));
    let traced = fs::read_to_string(&trace).unwrap();
    assert!(traced.lines().count() > 3, "nothing was traced: {traced}");
    assert!(
        !traced.contains("192.0.2.9"),
        "the address crossed the wire in clear"
    );

    // The original's monitors speak plaintext to a socket of their own,
    // which takes legacy messages only: no record enters without a key.
    let legacy = |message: &str| {
        let endpoint = format!("tcp://{}:5682", site.publisher_ip());
        let out = site
            .cluster
            .command_in(site.cluster.node_ns(2), PYTHON)
            .args(["-c", REQ_CLIENT, &endpoint, message])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        legacy(&format!("{TOKEN}|web1|sshd|Ban|192.0.2.11")),
        "web1|sshd|Ban|192.0.2.11"
    );
    assert!(stored().contains("HOST 192.0.2.11 "));
    let record = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "tail -n 1 \"$0\""])
            .arg(data.join("records.log"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .replace("192.0.2.11", "192.0.2.12");
    assert_eq!(legacy(record.trim()), "NAK records_not_here");
    // The submission socket itself speaks only CURVE: the original's
    // monitor gets no answer there.
    let plain = site
        .cluster
        .command_in(site.cluster.node_ns(2), PYTHON)
        .args(["-c", REQ_CLIENT, &site.url().replace("zmq+tcp", "tcp")])
        .arg(format!("{TOKEN}|web1|sshd|Ban|192.0.2.13"))
        .arg("1500")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), "TIMEOUT");

    // A key the publisher does not list gets nothing stored: the ban waits
    // in its spool.
    let out = ban(1, "stranger", "192.0.2.10", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!spool_is_empty(&site.tmp.path().join("spool-stranger")));
    // It says why: its key is refused, the publisher is not away.
    let said = String::from_utf8_lossy(&out.stderr);
    let stranger_key = fs::read_to_string(keys.join("stranger.pub")).unwrap();
    let cause = format!(
        "the publisher refused this node's CURVE key (not in its allow-list; ZAP status 400): \
         add {}",
        stranger_key.trim()
    );
    assert!(said.contains(&cause), "{said}");
    // An allowed key that takes another key for the publisher's.
    let out = ban_to(stranger_key.trim(), 1, "node0", "192.0.2.10", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("CURVE handshake failed: server key mismatch"),
        "{said}"
    );
    assert!(!stored().contains("192.0.2.10"));
    assert!(!stored().contains("192.0.2.12") && !stored().contains("192.0.2.13"));

    // Subscribers: one with a listed key reads both stored bans; one with
    // a key the publisher does not list reads nothing meanwhile.
    let zmq_config = |key: &str| {
        format!(
            "[zmq]\ncurve_server_key = {:?}\ncurve_key_file = {:?}\n",
            server,
            keys.join(key)
        )
    };
    let (_listed, listed_rx) = log_watcher(&site, 2, "listed", &zmq_config("node0"));
    let (_unlisted, unlisted_rx) = log_watcher(&site, 1, "unlisted", &zmq_config("stranger"));
    let mut listed = Vec::new();
    let read = wait_until(WAIT, || {
        applied(&listed_rx, &mut listed);
        listed.len() >= 2
    });
    assert!(read, "the listed subscriber read {listed:?}");
    listed.sort();
    assert_eq!(listed, ["192.0.2.11", "192.0.2.9"]);
    let mut unlisted = Vec::new();
    applied(&unlisted_rx, &mut unlisted);
    assert!(unlisted.is_empty(), "an unlisted key read {unlisted:?}");
}

/// `banshare watch --backend log` over ZeroMQ in node `node`, as node
/// `name`; each line it prints goes to the channel.
/// `extra` is added to its configuration.
fn log_watcher(
    site: &Site,
    node: usize,
    name: &str,
    extra: &str,
) -> (Daemon, mpsc::Receiver<String>) {
    log_watcher_under(site, node, name, extra, &[])
}

/// As [`log_watcher`], run by `prefix` (`strace ...`) when it is given.
fn log_watcher_under(
    site: &Site,
    node: usize,
    name: &str,
    extra: &str,
    prefix: &[&str],
) -> (Daemon, mpsc::Receiver<String>) {
    let dir = site.tmp.path().join(name);
    fs::create_dir_all(&dir).unwrap();
    let config = dir.join("banshare.toml");
    // Three senders' 1,000 bans in seconds: above the default rate limit.
    let text = format!("[trust]\nmax_bans_per_node_per_minute = 1000000\n{extra}");
    fs::write(&config, text).unwrap();
    let mut command = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = site.cluster.command_in(site.cluster.node_ns(node), program);
            c.args(rest).arg(BANSHARE);
            c
        }
        None => site
            .cluster
            .command_in(site.cluster.node_ns(node), BANSHARE),
    };
    let child = command
        .arg("--config")
        .arg(&config)
        .args([
            "watch",
            "--backend",
            "log",
            "--node",
            name,
            "--log",
            &site.url(),
        ])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    lines_of(child)
}

/// The addresses of the `ban ...` lines received so far, in order.
fn applied(rx: &mpsc::Receiver<String>, into: &mut Vec<String>) {
    while let Ok(line) = rx.try_recv() {
        if let Some(rest) = line.strip_prefix("ban ") {
            into.push(rest.split(' ').next().unwrap_or_default().to_owned());
        }
    }
}

/// Stops a daemon with SIGTERM and waits for it.
fn stop(mut daemon: Daemon) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
    let _ = daemon.0.wait();
}

#[test]
fn a_publisher_killed_mid_stream_loses_no_record_and_every_subscriber_applies_each_once() {
    const RECORDS: usize = 1000;
    const PER_CALL: usize = 2;
    let site = Site::new("zmqkill");
    let publisher = site.start_publisher();
    let (steady, steady_rx) = log_watcher(&site, 1, "steady", "");
    let (late, late_rx) = log_watcher(&site, 2, "late", "");
    let addresses: Vec<String> = (0..RECORDS)
        .map(|i| format!("100.64.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let stored = || {
        fs::read_to_string(site.tmp.path().join("publisher/records.log"))
            .map_or(0, |t| t.lines().count())
    };
    let spool = |k: usize| site.tmp.path().join(format!("sender{k}-spool"));
    let send = |k: usize, batch: &[String]| {
        let mut child = site
            .cluster
            .command_in(site.cluster.node_ns(k), BANSHARE)
            .args([
                "--config",
                "/dev/null",
                "ban",
                "-",
                "--node",
                &format!("sender{k}"),
            ])
            .args(["--log", &site.url()])
            .arg("--spool-dir")
            .arg(spool(k))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", batch.join("\n")).unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success(), "sender{k}'s ban failed");
    };
    let publisher = std::thread::scope(|scope| {
        for k in 0..3 {
            let mine: Vec<String> = addresses.iter().skip(k).step_by(3).cloned().collect();
            let send = &send;
            scope.spawn(move || {
                for batch in mine.chunks(PER_CALL) {
                    send(k, batch);
                }
            });
        }
        // Mid-stream: the late subscriber stops, the publisher is killed.
        assert!(
            wait_until(WAIT, || stored() >= 150),
            "the stream never started"
        );
        stop(late);
        assert!(wait_until(WAIT, || stored() >= 300));
        drop(publisher); // SIGKILL
        let at_kill = stored();
        assert!(at_kill < RECORDS, "the stream was over before the kill");
        eprintln!("publisher killed after {at_kill} records");
        site.start_publisher()
    });
    // What the senders spooled while the publisher was away.
    let spooled: usize = (0..3)
        .map(|k| {
            banshare::outbox::spool::Spool::open(&spool(k)).map_or(0, |s| s.depth().unwrap_or(0))
        })
        .sum();
    eprintln!("{spooled} records spooled while the publisher was away");
    for k in 0..3 {
        let flushed = wait_until(WAIT, || {
            site.cluster
                .command_in(site.cluster.node_ns(k), BANSHARE)
                .args(["--config", "/dev/null", "flush", "--log", &site.url()])
                .arg("--spool-dir")
                .arg(spool(k))
                .output()
                .is_ok_and(|o| o.status.success())
                && spool_is_empty(&spool(k))
        });
        assert!(flushed, "sender{k}'s spool was not delivered");
    }
    let (late, late_rx2) = log_watcher(&site, 2, "late", "");
    let (mut steady_seen, mut late_seen) = (Vec::new(), Vec::new());
    applied(&late_rx, &mut late_seen);
    let all_there = wait_until(Duration::from_secs(60), || {
        applied(&steady_rx, &mut steady_seen);
        applied(&late_rx2, &mut late_seen);
        steady_seen.len() >= RECORDS && late_seen.len() >= RECORDS
    });
    // Anything applied twice would have arrived by now too.
    stop(steady);
    stop(late);
    applied(&steady_rx, &mut steady_seen);
    applied(&late_rx2, &mut late_seen);
    for (name, seen) in [("steady", &mut steady_seen), ("late", &mut late_seen)] {
        let total = seen.len();
        seen.sort();
        seen.dedup();
        assert!(all_there, "{name} applied {} of {RECORDS}", seen.len());
        assert_eq!(total, RECORDS, "{name} applied some record twice");
        let mut want = addresses.clone();
        want.sort();
        assert_eq!(*seen, want, "{name} applied other records");
    }
    drop(publisher);
}

/// The position a watcher restarted on `state` would resume from, read
/// without touching the directory: the last whole line of its cursor
/// journal, or else `cursor.json`.
fn saved_seq(state: &Path) -> Option<u64> {
    let seq = |json: &str| -> Option<u64> {
        serde_json::from_str::<serde_json::Value>(json).ok()?["position"]["seq"].as_u64()
    };
    let journal = fs::read_to_string(state.join("cursor.journal")).unwrap_or_default();
    let whole = journal.rsplit_once('\n').map_or("", |(whole, _)| whole);
    whole
        .lines()
        .rev()
        .find_map(seq)
        .or_else(|| seq(&fs::read_to_string(state.join("cursor.json")).ok()?))
}

/// A watcher on a ZeroMQ feed gets each ban alone. It used to write
/// cursor.json durably after each (two fsyncs and a rename per ban, most of
/// its CPU); now it journals each and makes cursor.json durable at most once
/// a second, and never fsyncs status.json. Killed with SIGKILL mid-stream,
/// it still resumes right after the last ban it applied: nothing is applied
/// twice, nothing is lost.
#[test]
fn a_watcher_killed_mid_stream_applies_each_ban_once_and_makes_its_cursor_durable_once_a_second() {
    const BEFORE: usize = 30;
    const AFTER: usize = 10;
    let site = Site::new("zmqwkill");
    let _publisher = site.start_publisher();
    let trace = site.tmp.path().join("saves.trace");
    let trace_arg = trace.to_str().unwrap();
    let strace = [
        "strace",
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-y",
        "-e",
        "trace=rename,renameat,renameat2,fsync,fdatasync",
        "-o",
        trace_arg,
    ];
    let started = std::time::Instant::now();
    let (traced, killed_rx) = log_watcher_under(&site, 1, "killed", "", &strace);
    let addresses: Vec<String> = (0..BEFORE + AFTER)
        .map(|i| format!("100.65.0.{}", i + 1))
        .collect();
    let ban = |address: &str| {
        let reply = site.legacy_request(0, &format!("{TOKEN}|web1|sshd|Ban|{address}"));
        assert_eq!(reply, format!("web1|sshd|Ban|{address}"));
    };
    let mut seen = Vec::new();
    for address in &addresses[..BEFORE] {
        // One at a time, each applied before the next: one batch each.
        ban(address);
        let applied_it = wait_until(WAIT, || {
            applied(&killed_rx, &mut seen);
            seen.last() == Some(address)
        });
        assert!(applied_it, "{address} was not applied: {seen:?}");
    }
    let state = site.tmp.path().join("killed/state");
    let saved = wait_until(WAIT, || saved_seq(&state) == Some(BEFORE as u64));
    assert!(
        saved,
        "the cursor never reached {BEFORE}: {:?}",
        saved_seq(&state)
    );
    let tracee = support::children_of(traced.0.id());
    assert_eq!(tracee.len(), 1, "strace should run one watcher");
    // SAFETY: kill(2) of the watcher this test started.
    unsafe { libc::kill(tracee[0] as libc::pid_t, libc::SIGKILL) };
    let elapsed = started.elapsed();
    stop(traced); // strace, whose tracee is gone
    applied(&killed_rx, &mut seen);
    let saves = fs::read_to_string(&trace).unwrap();
    let cursor_saves = saves
        .lines()
        .filter(|l| l.contains("rename") && l.contains("cursor.json\")"))
        .count();
    // At most one a second, one at start, one for the straggler: never one
    // per ban.
    assert!(
        cursor_saves as u64 <= elapsed.as_secs() + 2,
        "{cursor_saves} durable cursor saves for {BEFORE} bans in {elapsed:?}:\n{saves}"
    );
    // status.json, rewritten every second, is not worth an fsync.
    let status_fsyncs: Vec<&str> = saves
        .lines()
        .filter(|l| l.contains("sync(") && l.contains("status.json"))
        .collect();
    assert!(
        status_fsyncs.is_empty(),
        "status.json was fsynced: {status_fsyncs:#?}"
    );

    for address in &addresses[BEFORE..] {
        ban(address);
    }
    let (watcher, rx) = log_watcher(&site, 1, "killed", "");
    let all = wait_until(WAIT, || {
        applied(&rx, &mut seen);
        seen.len() >= BEFORE + AFTER
    });
    assert!(all, "only {} of {} applied", seen.len(), BEFORE + AFTER);
    // Anything applied twice, or the cursor's last save, comes by now.
    let durable = wait_until(WAIT, || saved_seq(&state) == Some((BEFORE + AFTER) as u64));
    stop(watcher);
    applied(&rx, &mut seen);
    assert!(
        durable,
        "the restarted watcher's cursor never reached the end"
    );
    assert_eq!(seen, addresses, "each ban once, in order, none lost");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(state.join("cursor.json")).unwrap()).unwrap();
    assert_eq!(
        json["position"]["seq"],
        (BEFORE + AFTER) as u64,
        "stopping makes the cursor durable: {json}"
    );
}
