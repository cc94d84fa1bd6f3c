//! `banshare publisher` with real peers: the publisher runs in one test host
//! (a network namespace), and Debian's pyzmq (`/usr/bin/python3`, package
//! python3-zmq) talks to it from another, speaking fail2ban-zmq-tools'
//! format and banshare's own. Needs root, python3-zmq and strace; fails
//! without them.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banshare::transport::zmq::wire::Digest;
use support::cluster::Cluster;
use support::prometheus::{parse_metrics, value};
use support::pyzmq::{LEGACY_SUBSCRIBER, PYTHON};
use support::{BANSHARE, children_of, wait_until};

const TOKEN: &str = "s3cret-token";
const WAIT: Duration = Duration::from_secs(20);

/// A REQ client as fail2ban-zmq-tools' monitor is one: reads a JSON list
/// of requests (each a list of hex frames) on stdin, sends each on a fresh
/// REQ socket, and prints the JSON list of replies (each a list of frames).
const REQ_CLIENT: &str = r#"
import json, sys, zmq
ctx = zmq.Context()
out = []
for frames in json.load(sys.stdin):
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10000)
    s.connect(sys.argv[1])
    s.send_multipart([bytes.fromhex(f) for f in frames])
    out.append([f.decode("latin-1") for f in s.recv_multipart()])
    s.close()
print(json.dumps(out))
"#;

/// A subscriber of banshare's own feed: prints each message's frames as a
/// JSON list.
const FEED_CLIENT: &str = r#"
import json, sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.SUB)
s.connect(sys.argv[1])
s.setsockopt_string(zmq.SUBSCRIBE, "")
while True:
    frames = [f.decode("latin-1") for f in s.recv_multipart()]
    print(json.dumps(frames, separators=(",", ":")), flush=True)
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record line as banshare writes one, for `address`.
fn record_line(address: &str) -> String {
    format!("<13>Nov 30 12:00:00 banshare[1]: HOST {address} PORT 22 node=web2")
}

/// A running publisher, killed on drop.
struct Publisher {
    child: Child,
    /// The publisher's own pid (under strace, the tracee).
    pid: u32,
    stderr: PathBuf,
}

impl Publisher {
    /// Starts `prefix... banshare publisher args...` in node 0 and waits
    /// until its sockets are bound.
    fn start(cluster: &Cluster, dir: &Path, prefix: &[&str], args: &[&str]) -> Publisher {
        let stderr = dir.join(format!("publisher-{}.err", unique()));
        let mut command = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = cluster.command_in(cluster.node_ns(0), program);
                c.args(rest).arg(BANSHARE);
                c
            }
            None => cluster.command_in(cluster.node_ns(0), BANSHARE),
        };
        let child = command
            .args(["--config", "/dev/null", "publisher", "--node", "pub1"])
            .args(["--bind", &cluster.node_ip(0).to_string()])
            .args(["--data-dir", dir.join("data").to_str().unwrap()])
            .args(args)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start banshare publisher");
        let mut publisher = Publisher {
            pid: child.id(),
            child,
            stderr,
        };
        let up = wait_until(WAIT, || {
            publisher.log().contains("publisher: log epoch")
                || matches!(publisher.child.try_wait(), Ok(Some(_)))
        });
        let up = up && publisher.log().contains("publisher: log epoch");
        assert!(up, "the publisher did not start: {}", publisher.log());
        if !prefix.is_empty() {
            let tracee = children_of(publisher.child.id());
            assert_eq!(tracee.len(), 1, "strace should run one publisher");
            publisher.pid = tracee[0];
        }
        publisher
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, and what it logged.
    fn stop(mut self) -> String {
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "publisher: {status}: {}", self.log());
        self.log()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn endpoint(cluster: &Cluster, port: u16) -> String {
    format!("tcp://{}:{port}", cluster.node_ip(0))
}

/// Sends each request (a list of frames) from the attacker's host, on a
/// fresh REQ socket; returns each reply's frames.
fn request(cluster: &Cluster, port: u16, requests: &[Vec<Vec<u8>>]) -> Vec<Vec<String>> {
    use std::io::Write;
    let input: Vec<Vec<String>> = requests
        .iter()
        .map(|frames| frames.iter().map(|f| hex(f)).collect())
        .collect();
    let mut child = cluster
        .command_in(cluster.attacker_ns(), PYTHON)
        .args(["-c", REQ_CLIENT, &endpoint(cluster, port)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 (Debian packages python3, python3-zmq)");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python REQ client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One frame per request, one request each.
fn send_each(cluster: &Cluster, messages: &[&[u8]]) -> Vec<String> {
    let requests: Vec<Vec<Vec<u8>>> = messages.iter().map(|m| vec![m.to_vec()]).collect();
    request(cluster, 5678, &requests)
        .into_iter()
        .map(|mut frames| {
            assert_eq!(frames.len(), 1, "one reply frame per request frame");
            frames.remove(0)
        })
        .collect()
}

/// The original subscriber, running in the attacker's host; its lines
/// collected as they come.
struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    fn start(cluster: &Cluster, script: &str, port: u16) -> Subscriber {
        let mut child = cluster
            .command_in(cluster.attacker_ns(), PYTHON)
            .args(["-u", "-c", script, &endpoint(cluster, port)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run /usr/bin/python3");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = BufReader::new(child.stdout.take().unwrap());
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Subscriber { child, lines }
    }

    fn has(&self, line: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l == line)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `message` until `subscriber` shows `expected`: a SUB socket gets
/// only what is published after its subscription has reached the
/// publisher, which nothing in the original's protocol tells.
fn publish_until_seen(
    cluster: &Cluster,
    subscriber: &Subscriber,
    message: &[u8],
    ack: &str,
    expected: &str,
) {
    let seen = wait_until(WAIT, || {
        assert_eq!(send_each(cluster, &[message]), [ack]);
        wait_until(Duration::from_secs(2), || subscriber.has(expected))
    });
    assert!(seen, "the original subscriber never printed {expected:?}");
}

fn token_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    // Only its owner may read it, or the publisher refuses it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn legacy_args(token: &Path) -> Vec<String> {
    vec![
        "--legacy".into(),
        "token".into(),
        "--token-file".into(),
        token.to_str().unwrap().into(),
    ]
}

#[test]
fn original_peers_interoperate_and_bad_messages_are_refused_and_counted() {
    let cluster = Cluster::new("zpub-legacy", 1);
    let dir = tempfile::tempdir().unwrap();
    let mut args = legacy_args(&token_file(dir.path()));
    let metrics = dir.path().join("publisher.prom");
    args.extend(["--metrics-file".into(), metrics.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let publisher = Publisher::start(&cluster, dir.path(), &[], &args);
    // The start-up line marks the plaintext sockets.
    let plaintext = format!("legacy broadcast {} (plaintext)", endpoint(&cluster, 5680));
    assert!(
        publisher.log().contains("CURVE off;") && publisher.log().contains(&plaintext),
        "{}",
        publisher.log()
    );
    let subscriber = Subscriber::start(&cluster, LEGACY_SUBSCRIBER, 5680);

    let ban = format!("{TOKEN}|web1|sshd|Ban|203.0.113.9");
    publish_until_seen(
        &cluster,
        &subscriber,
        ban.as_bytes(),
        "web1|sshd|Ban|203.0.113.9",
        "web1 sshd Ban 203.0.113.9",
    );
    // A banshare record reaches the original subscriber in its format.
    let record = record_line("198.51.100.7");
    let ok = send_each(&cluster, &[record.as_bytes()]);
    assert!(
        ok[0].starts_with("OK ") && ok[0].split(' ').count() == 3,
        "{ok:?}"
    );
    let seen = wait_until(WAIT, || subscriber.has("web2 banshare Ban 198.51.100.7"));
    assert!(
        seen,
        "the banshare record never reached the original subscriber"
    );

    let megabyte = vec![b'a'; 1_000_000];
    let bad: Vec<&[u8]> = vec![
        b"a|b|Ban",
        &megabyte,
        b"\x00\x01\xff\xfe binary \x1b[0m|||",
        b"guess|web1|sshd|Ban|203.0.113.9",
        b"s3cret-token|web1|sshd|Bann|203.0.113.9",
        b"s3cret-token|web1|sshd|Ban|127.1",
        b"web1|sshd|Ban|203.0.113.9",
    ];
    let replies = send_each(&cluster, &bad);
    assert_eq!(
        replies,
        ["NAK", "NAK too_long", "NAK", "NAK", "NAK", "NAK", "NAK"]
    );
    // Still serving; several frames in one request, one reply each.
    let unban = format!("{TOKEN}|web1|sshd|Unban|203.0.113.9");
    let replies = request(
        &cluster,
        5678,
        &[vec![
            unban.clone().into_bytes(),
            b"not a message".to_vec(),
            record_line("198.51.100.8").into_bytes(),
        ]],
    );
    let frames = &replies[0];
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(frames[0], "web1|sshd|Unban|203.0.113.9");
    assert_eq!(frames[1], "NAK unknown_shape");
    assert!(frames[2].starts_with("OK "), "{frames:?}");
    let seen = wait_until(WAIT, || subscriber.has("web1 sshd Unban 203.0.113.9"));
    assert!(seen, "the unban never reached the original subscriber");

    let log = publisher.stop();
    assert!(
        log.contains(
            "refused {bad_address=1, bad_byte=1, missing_token=1, too_long=1, too_short=1, \
             unknown_action=1, unknown_shape=1, wrong_token=1}"
        ),
        "{log}"
    );
    assert!(log.contains("refused a submission (wrong_token)"), "{log}");
    assert!(!log.contains(TOKEN), "the token must not be logged: {log}");
    // The same counts in the metrics file, as Prometheus reads them.
    let m = parse_metrics(&std::fs::read_to_string(&metrics).unwrap());
    let refused = |reason| {
        value(
            &m,
            "banshare_publisher_refused_total",
            &[("reason", reason)],
        )
    };
    for reason in ["bad_address", "wrong_token", "too_long", "unknown_shape"] {
        assert_eq!(refused(reason), Some(1.0), "{reason}");
    }
    let stored = |kind| value(&m, "banshare_publisher_stored_total", &[("kind", kind)]);
    assert_eq!(stored("record"), Some(2.0));
    // The first legacy ban is sent until the subscriber sees it.
    assert!(stored("legacy").is_some_and(|n| n >= 2.0), "{m:?}");
    assert_eq!(value(&m, "banshare_publisher_running", &[]), Some(0.0));
}

/// The records of the publisher's log, as catch-up from the start returns
/// them: (header, frames).
fn catch_up_from_start(cluster: &Cluster) -> (String, Vec<String>) {
    let mut reply = request(
        cluster,
        5679,
        &[vec![b"banshare/1 since 0000000000000000 0".to_vec()]],
    );
    let mut frames = reply.remove(0);
    let header = frames.remove(0);
    (header, frames)
}

#[test]
fn acked_records_survive_sigkill_with_their_epoch_and_numbers() {
    support::cluster::require_root();
    let cluster = Cluster::new("zpub-restart", 1);
    let dir = tempfile::tempdir().unwrap();
    let args = legacy_args(&token_file(dir.path()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut publisher = Publisher::start(&cluster, dir.path(), &[], &args);

    let ban = format!("{TOKEN}|web1|sshd|Ban|203.0.113.9");
    let replies = request(
        &cluster,
        5678,
        &[
            vec![ban.into_bytes()],
            vec![
                record_line("198.51.100.1").into_bytes(),
                record_line("198.51.100.2").into_bytes(),
            ],
        ],
    );
    assert_eq!(replies[0], ["web1|sshd|Ban|203.0.113.9"]);
    let epoch = replies[1][0].split(' ').nth(1).unwrap().to_owned();
    assert_eq!(
        replies[1],
        [format!("OK {epoch} 2"), format!("OK {epoch} 3")]
    );

    // A second publisher on the same data directory is refused.
    let second = cluster
        .command_in(cluster.node_ns(0), BANSHARE)
        .args([
            "--config",
            "/dev/null",
            "publisher",
            "--submit-port",
            "6678",
        ])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2), "{second:?}");

    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(publisher.pid as libc::pid_t, libc::SIGKILL) };
    publisher.child.wait().unwrap();
    let publisher = Publisher::start(&cluster, dir.path(), &[], &args);
    assert!(
        publisher
            .log()
            .contains(&format!("log epoch {epoch} with 3 records")),
        "{}",
        publisher.log()
    );
    // banshare's feed: a heartbeat every second, then the numbered record.
    let feed = Subscriber::start(&cluster, FEED_CLIENT, 5681);
    let heartbeat = format!("[\"banshare/1 {epoch} 3\"]");
    assert!(
        wait_until(WAIT, || feed.has(&heartbeat)),
        "no heartbeat {heartbeat}"
    );
    let replies = send_each(&cluster, &[record_line("198.51.100.4").as_bytes()]);
    assert_eq!(replies, [format!("OK {epoch} 4")]);
    let broadcast = serde_json::to_string(&[
        format!("banshare/1 {epoch} 4"),
        format!("4 {}", record_line("198.51.100.4")),
    ])
    .unwrap();
    assert!(
        wait_until(WAIT, || feed.has(&broadcast)),
        "no broadcast {broadcast}"
    );

    let (header, records) = catch_up_from_start(&cluster);
    assert_eq!(header, format!("banshare/1 {epoch} 4"));
    assert_eq!(records.len(), 4, "{records:?}");
    assert!(records[0].starts_with("1 <13>") && records[0].contains("HOST 203.0.113.9"));
    assert!(records[0].contains("node=web1"), "{records:?}");
    for (i, address) in [
        (1, "198.51.100.1"),
        (2, "198.51.100.2"),
        (3, "198.51.100.4"),
    ] {
        assert_eq!(records[i], format!("{} {}", i + 1, record_line(address)));
    }
    // Asked from a known number, only what follows it.
    let reply = request(
        &cluster,
        5679,
        &[vec![format!("banshare/1 since {epoch} 3").into_bytes()]],
    );
    assert_eq!(
        reply[0],
        [
            format!("banshare/1 {epoch} 4"),
            format!("4 {}", record_line("198.51.100.4"))
        ]
    );
    // With the digest of the asker's record 3: the same when it is the
    // log's record 3; from the first record when it is not (a log restored
    // from an older copy numbered another record 3).
    let digest = |line: &str| Digest::of(line.as_bytes()).to_string();
    let ask = |digest: String| {
        let ask = format!("banshare/1 since {epoch} 3 {digest}");
        request(&cluster, 5679, &[vec![ask.into_bytes()]]).remove(0)
    };
    assert_eq!(ask(digest(&record_line("198.51.100.2")))[1..], records[3..]);
    let other = ask(digest(&record_line("198.51.100.77")));
    assert_eq!(other.len(), 5, "{other:?}");
    assert!(other[1].starts_with("1 <13>"), "{other:?}");

    // Compaction, at the next start: records 5, 6 and 8 ended long ago,
    // 7 is in force. 5 and 6 are dropped, 8 stays as the log's end; every
    // record keeps its number and the epoch stays, so subscribers go on.
    let over = |address: &str| {
        format!(
            "{} ts=2026-01-01T00:00:00Z bantime=60",
            record_line(address)
        )
    };
    let lines = [
        over("198.51.100.5"),
        over("198.51.100.6"),
        record_line("198.51.100.7"),
        over("198.51.100.8"),
    ];
    let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    let replies = send_each(&cluster, &lines);
    assert_eq!(replies[3], format!("OK {epoch} 8"), "{replies:?}");
    publisher.stop();
    let publisher = Publisher::start(&cluster, dir.path(), &[], &args);
    assert!(
        publisher
            .log()
            .contains("compacted the log: 6 records kept, 2 dropped"),
        "{}",
        publisher.log()
    );
    let (header, records) = catch_up_from_start(&cluster);
    assert_eq!(header, format!("banshare/1 {epoch} 8"));
    let numbers: Vec<&str> = records
        .iter()
        .map(|r| r.split(' ').next().unwrap())
        .collect();
    assert_eq!(numbers, ["1", "2", "3", "4", "7", "8"], "{records:?}");
    assert_eq!(records[4], format!("7 {}", record_line("198.51.100.7")));
    // A subscriber that had read 5, a number compacted away, gets what
    // is in force after it.
    let reply = request(
        &cluster,
        5679,
        &[vec![format!("banshare/1 since {epoch} 5").into_bytes()]],
    );
    assert_eq!(
        reply[0],
        [
            format!("banshare/1 {epoch} 8"),
            format!("7 {}", record_line("198.51.100.7")),
            format!("8 {}", over("198.51.100.8")),
        ]
    );
    // The same with the digest of its record 5, which the publisher has no
    // more to compare: not a restored log, so still what follows 5.
    let ask = format!(
        "banshare/1 since {epoch} 5 {}",
        Digest::of(over("198.51.100.5").as_bytes())
    );
    let with_digest = request(&cluster, 5679, &[vec![ask.into_bytes()]]);
    assert_eq!(
        with_digest, reply,
        "a compacted-away record is not a restore"
    );
    let replies = send_each(&cluster, &[record_line("198.51.100.9").as_bytes()]);
    assert_eq!(replies, [format!("OK {epoch} 9")]);
    publisher.stop();
}

/// strace shows the log's fsync returning before the reply leaves: the
/// reply is the one `sendto` whose buffer holds the ACK text (libzmq's I/O
/// thread writes a ZMTP frame, its flags and length bytes, then the text).
#[test]
fn the_log_is_fsynced_before_the_ack_is_sent() {
    let cluster = Cluster::new("zpub-strace", 1);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("strace.out");
    let args = legacy_args(&token_file(dir.path()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let strace = [
        "strace",
        "-f",
        "-s",
        "256",
        "-e",
        "trace=fsync,fdatasync,sendto,write",
        "-o",
        trace.to_str().unwrap(),
    ];
    let publisher = Publisher::start(&cluster, dir.path(), &strace, &args);
    let ban = format!("{TOKEN}|web1|sshd|Ban|203.0.113.77");
    assert_eq!(
        send_each(&cluster, &[ban.as_bytes()]),
        ["web1|sshd|Ban|203.0.113.77"]
    );
    publisher.stop();
    let trace = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    // The write of the record to the log, and its fd.
    let (write_at, fd) = lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| {
            let rest = l.split_once("write(")?.1;
            rest.contains("HOST 203.0.113.77")
                .then(|| (i, rest.split(',').next().unwrap().to_owned()))
        })
        .unwrap_or_else(|| panic!("no write of the record:\n{trace}"));
    // The fsync of that fd, and the line where it returned (strace -f may
    // split a call into `<unfinished ...>` and `<... resumed>`).
    let sync_at = (write_at..lines.len())
        .find(|&i| {
            lines[i].contains(&format!("fdatasync({fd}"))
                || lines[i].contains(&format!("fsync({fd}"))
        })
        .unwrap_or_else(|| panic!("no fsync of fd {fd} after the write:\n{trace}"));
    let synced_at = if lines[sync_at].contains("<unfinished ...>") {
        (sync_at..lines.len())
            .find(|&i| lines[i].contains("sync resumed>"))
            .unwrap_or_else(|| panic!("the fsync never returned:\n{trace}"))
    } else {
        sync_at
    };
    let reply_at = lines
        .iter()
        .position(|l| l.contains("sendto(") && l.contains("web1|sshd|Ban|203.0.113.77"))
        .unwrap_or_else(|| panic!("no sendto of the ACK:\n{trace}"));
    assert!(
        synced_at < reply_at,
        "the ACK was sent (line {reply_at}) before the fsync returned (line {synced_at}):\n{trace}"
    );
}

#[test]
fn bad_arguments_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (args, what) in [
        (vec!["--legacy", "token"], "token file"),
        (vec!["--legacy", "maybe"], "--legacy"),
        (vec!["--bind", "example.org"], "--bind"),
        (vec!["--submit-port", "0"], "--submit-port"),
        (vec!["--feed-port", "5678"], "port 5678 is given twice"),
        (vec!["--key", "/nonexistent/key"], "signing key"),
    ] {
        let out = Command::new(BANSHARE)
            .args(["--config", "/dev/null", "publisher"])
            .args(["--data-dir", data.to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(what), "{args:?}: {stderr}");
        assert!(!data.exists(), "{args:?} created the data directory");
    }
}

/// A hostile catch-up client: a DEALER (which, unlike REQ, may send
/// without reading) sends argv[2] catch-up requests from the start, reads
/// nothing, and takes as little as it can itself (RCVHWM 1, a small kernel
/// buffer), so that the replies pile up at the publisher; then a malformed
/// request, which the publisher logs once it has served all before it (one
/// connection is served in order). Prints how many it sent, and holds the
/// connection open until its stdin closes.
const CATCH_UP_FLOOD: &str = r#"
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.RCVHWM, 1)
s.setsockopt(zmq.RCVBUF, 4096)
s.setsockopt(zmq.SNDTIMEO, 10000)
s.setsockopt(zmq.LINGER, 0)
s.connect(sys.argv[1])
sent = 0
try:
    for _ in range(int(sys.argv[2])):
        s.send_multipart([b"", b"banshare/1 since 0000000000000000 0"])
        sent += 1
    s.send_multipart([b"", b"banshare/1 flood-done"])
except zmq.Again:
    pass
print(sent, flush=True)
sys.stdin.read()
"#;

/// An honest catch-up client, as banshare's feed is one: one request at a
/// time on a REQ socket, each from the last number received, until the
/// header's last record is in. Prints the records received and the last.
const CATCH_UP_FULLY: &str = r#"
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.REQ)
s.setsockopt(zmq.RCVTIMEO, 10000)
s.setsockopt(zmq.LINGER, 0)
s.connect(sys.argv[1])
epoch, after, got = "0000000000000000", 0, 0
while True:
    s.send_string("banshare/1 since %s %d" % (epoch, after))
    frames = s.recv_multipart()
    _, epoch, last = frames[0].decode().split()
    for f in frames[1:]:
        seq = int(f.split(b" ", 1)[0])
        assert seq == after + 1, (seq, after)
        after, got = seq, got + 1
    if after >= int(last):
        break
print(got, last, flush=True)
"#;

/// A field of /proc/PID/status, in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix(" kB"))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .parse()
        .unwrap()
}

/// The publisher's peak memory while one client sends catch-up requests
/// and never reads the replies: libzmq queued every reply for it (1000
/// by default, each up to 1000 records), so one connection could hold
/// hundreds of megabytes. docs/zmq.md promises a bound per connection; the
/// test allows the publisher 32 MiB in all (16 MiB at rest), for 600 requests of ~300 KB of
/// records each (~180 MB unbounded). An honest subscriber still catches up
/// fully meanwhile.
#[test]
fn a_catch_up_client_that_never_reads_cannot_make_the_publisher_hold_its_replies() {
    const RECORDS: u64 = 1000;
    const FLOOD: usize = 600;
    const BOUND_KB: u64 = 32 * 1024;
    let cluster = Cluster::new("zpub-flood", 1);
    let dir = tempfile::tempdir().unwrap();
    // A log of 1000 records of ~300 bytes, as a publisher leaves it (the
    // padding is a signature it cannot verify, which it stores for the
    // watchers to judge, and keeps when it compacts its log at start).
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let padding = "x".repeat(230);
    let lines: String = (0..RECORDS)
        .map(|i| {
            let address = format!("198.51.{}.{}", i / 250, i % 250 + 1);
            format!("{} sig={padding}\n", record_line(&address))
        })
        .collect();
    std::fs::write(data.join("records.log"), lines).unwrap();
    std::fs::write(data.join("epoch"), "00000000000000ab\n").unwrap();
    let publisher = Publisher::start(&cluster, dir.path(), &[], &[]);
    let before_kb = status_kb(publisher.pid, "VmRSS:");

    let mut flood = cluster
        .command_in(cluster.attacker_ns(), PYTHON)
        .args(["-u", "-c", CATCH_UP_FLOOD, &endpoint(&cluster, 5679)])
        .arg(FLOOD.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3");
    let mut sent = String::new();
    BufReader::new(flood.stdout.take().unwrap())
        .read_line(&mut sent)
        .unwrap();
    assert_eq!(sent.trim(), FLOOD.to_string(), "the flood was not sent");
    let served = wait_until(Duration::from_secs(120), || {
        publisher.log().contains("refused a catch-up request")
    });
    assert!(served, "the flood was not served: {}", publisher.log());
    let peak_kb = status_kb(publisher.pid, "VmHWM:");
    eprintln!("publisher RSS: {before_kb} kB before the flood, peak {peak_kb} kB");

    // An honest subscriber, while the flood's connection is still open.
    let honest = cluster
        .command_in(cluster.attacker_ns(), PYTHON)
        .args(["-c", CATCH_UP_FULLY, &endpoint(&cluster, 5679)])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&honest.stdout).trim(),
        format!("{RECORDS} {RECORDS}"),
        "{}",
        String::from_utf8_lossy(&honest.stderr)
    );
    drop(flood.stdin.take());
    let _ = flood.kill();
    let _ = flood.wait();
    assert!(
        peak_kb < BOUND_KB,
        "the publisher's peak RSS was {peak_kb} kB (bound {BOUND_KB} kB) after {FLOOD} \
         unread catch-up replies"
    );
    publisher.stop();
}

/// A signed record from a node the publisher's `[trust] keys` do not list
/// yet (a node added, or a key rotated in, on the watchers first) is
/// stored and served by catch-up for every watcher to judge with its own
/// keys, as a file log keeps it, instead of refused for good; it stays off
/// the legacy broadcast, whose readers verify nothing.
#[test]
fn a_record_signed_by_a_key_the_publisher_does_not_know_is_stored_for_the_watchers() {
    let cluster = Cluster::new("zpub-unknown", 1);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let keygen = |name: &str, node: &str| {
        let out = Command::new(BANSHARE)
            .args(["--config", "/dev/null", "keygen", "--node", node, "--out"])
            .arg(path(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    std::fs::write(path("trusted"), keygen("web2.key", "web2")).unwrap();
    keygen("web3.key", "web3");
    // web3's ban, signed, as `banshare ban` writes it to a file log.
    std::fs::write(path("newbans.log"), "").unwrap();
    let out = Command::new(BANSHARE)
        .args([
            "--config",
            "/dev/null",
            "ban",
            "198.51.100.30",
            "--node",
            "web3",
        ])
        .arg("--key")
        .arg(path("web3.key"))
        .arg("--log")
        .arg(path("newbans.log"))
        .arg("--spool-dir")
        .arg(path("spool"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = std::fs::read_to_string(path("newbans.log")).unwrap();
    let line = line.trim_end();
    assert!(line.contains(" sig="), "{line}");

    let config = path("publisher.toml");
    std::fs::write(&config, format!("[trust]\nkeys = {:?}\n", path("trusted"))).unwrap();
    let publisher = Publisher::start(
        &cluster,
        dir.path(),
        &[],
        &["--config", config.to_str().unwrap()],
    );
    let replies = send_each(&cluster, &[line.as_bytes()]);
    assert!(
        replies[0].starts_with("OK ") && replies[0].ends_with(" 1"),
        "{replies:?}"
    );
    let (_, records) = catch_up_from_start(&cluster);
    assert_eq!(records, [format!("1 {line}")]);
    let log = publisher.stop();
    assert!(log.contains("stored unverified {unknown_key=1}"), "{log}");
    assert!(
        log.contains("left off the legacy feed {unknown_key=1}"),
        "{log}"
    );
}

/// A CURVE client submitting argv[2] (a record line) with the secret key in
/// the file argv[3] to a publisher whose public key is in argv[4], every
/// 200 ms for 5 s, printing each reply.
const CURVE_SUBMITTER: &str = r#"
import sys, time, zmq
ctx = zmq.Context()
secret = open(sys.argv[3]).read().strip().encode()
server = open(sys.argv[4]).read().strip().encode()
end = time.time() + 5
while time.time() < end:
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 2000)
    s.curve_secretkey = secret
    s.curve_publickey = zmq.curve_public(secret)
    s.curve_serverkey = server
    s.connect(sys.argv[1])
    s.send(sys.argv[2].encode())
    print(s.recv_multipart(), flush=True)
    s.close()
    time.sleep(0.2)
"#;

/// Review 12b: a publisher with CURVE on and legacy submissions off (a
/// site that finished migrating, or never ran the original) still binds
/// the plaintext legacy broadcast and sends every ban on it: any host that
/// reaches the port, with no key, reads every address and node name that
/// CURVE was set up to hide.
#[test]
fn with_curve_and_legacy_off_no_ban_goes_out_in_clear() {
    let cluster = Cluster::new("zpub-leak", 1);
    let dir = tempfile::tempdir().unwrap();
    let keygen = |name: &str| {
        let out = Command::new(BANSHARE)
            .args(["--config", "/dev/null", "curve-keygen", "--out"])
            .arg(dir.path().join(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    keygen("publisher");
    let node = keygen("node");
    let clients = dir.path().join("clients");
    std::fs::write(&clients, format!("{node} node\n")).unwrap();
    let key = dir.path().join("publisher");
    let args = [
        "--curve-key",
        key.to_str().unwrap(),
        "--curve-clients",
        clients.to_str().unwrap(),
    ];
    let publisher = Publisher::start(&cluster, dir.path(), &[], &args);
    assert!(
        publisher.log().contains("CURVE on;")
            && publisher
                .log()
                .contains("legacy submissions off, legacy broadcast off"),
        "{}",
        publisher.log()
    );
    // A second publisher on the same data directory is told what holds it.
    let second = cluster
        .command_in(cluster.node_ns(0), BANSHARE)
        .args(["--config", "/dev/null", "publisher", "--node", "pub2"])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{said}");
    assert!(
        said.contains("in use by another banshare publisher"),
        "{said}"
    );
    // No key: anyone who reaches the legacy port.
    let eavesdropper = Subscriber::start(&cluster, LEGACY_SUBSCRIBER, 5680);
    let record = record_line("198.51.100.7");
    let out = cluster
        .command_in(cluster.attacker_ns(), PYTHON)
        .args(["-c", CURVE_SUBMITTER, &endpoint(&cluster, 5678), &record])
        .arg(dir.path().join("node"))
        .arg(dir.path().join("publisher.pub"))
        .output()
        .unwrap();
    let replies = String::from_utf8_lossy(&out.stdout);
    assert!(replies.contains("OK "), "not stored: {replies} {out:?}");
    let heard = eavesdropper.lines.lock().unwrap().clone();
    assert!(
        heard.is_empty(),
        "a subscriber without a key read bans in clear from a CURVE publisher with legacy off: \
         {heard:?}"
    );
    // A client with an unlisted key gets nothing (its REQ times out), and
    // the publisher logs and counts the refusals.
    keygen("stranger");
    let out = cluster
        .command_in(cluster.attacker_ns(), PYTHON)
        .args(["-c", CURVE_SUBMITTER, &endpoint(&cluster, 5678), &record])
        .arg(dir.path().join("stranger"))
        .arg(dir.path().join("publisher.pub"))
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("OK "),
        "{out:?}"
    );
    let log = publisher.stop();
    assert!(
        log.contains("ZeroMQ connection(s) whose CURVE key is not allowed, the last from"),
        "{log}"
    );
    let refused: u64 = log
        .rsplit("CURVE connections refused ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "not counted in the stop summary: {log}");
}

/// Review 12b: a record the publisher refuses for good (here `unsigned`,
/// where it requires signatures) is dropped by the sender, which is the
/// documented design; but `banshare ban` then still says it "appended 1
/// ban record(s)" (and exits 0), so fail2ban's log and the operator are
/// told the ban was shared when it was lost.
#[test]
fn a_ban_the_publisher_refused_is_not_reported_as_appended() {
    let cluster = Cluster::new("zpub-nak", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BANSHARE)
        .args(["--config", "/dev/null", "keygen", "--out"])
        .arg(dir.path().join("k"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(dir.path().join("k.pub")).unwrap();
    let keys = dir.path().join("keys");
    let public = public.split_once(' ').unwrap().1.trim();
    std::fs::write(&keys, format!("web9 {public}\n")).unwrap();
    let config = dir.path().join("publisher.toml");
    std::fs::write(
        &config,
        format!(
            "[trust]\nkeys = \"{}\"\nrequire_signed = true\n",
            keys.display()
        ),
    )
    .unwrap();
    let stderr = dir.path().join("publisher.err");
    let child = cluster
        .command_in(cluster.node_ns(0), BANSHARE)
        .arg("--config")
        .arg(&config)
        .args(["publisher", "--node", "pub1"])
        .args(["--bind", &cluster.node_ip(0).to_string()])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let publisher = Publisher {
        pid: child.id(),
        child,
        stderr,
    };
    assert!(
        wait_until(WAIT, || publisher.log().contains("publisher: log epoch")),
        "the publisher did not start: {}",
        publisher.log()
    );
    let url = format!("zmq+tcp://{}", cluster.node_ip(0));
    let out = cluster
        .command_in(cluster.attacker_ns(), BANSHARE)
        .args([
            "--config",
            "/dev/null",
            "ban",
            "198.51.100.66",
            "--node",
            "web8",
        ])
        .args(["--log", &url])
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("refused a record for good (unsigned)"),
        "the publisher did not refuse it: {said}"
    );
    assert!(
        !said.contains("appended 1 ban record(s)"),
        "a refused ban is reported as appended (exit {:?}): {said}",
        out.status.code()
    );
    assert!(said.contains("refused 1 of 1 record(s) for good"), "{said}");
    assert_eq!(out.status.code(), Some(1), "{said}");
}
