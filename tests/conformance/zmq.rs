//! ZeroMQ: a publisher on the file server's test host, senders on nodes 0
//! and 1 (the real `banshare` binary, and the library's transport on a
//! thread in node 0's namespace), the feed on node 2.
//!
//! The publisher is [`TestPublisher`], a small stand-in written here with
//! the `zmq` crate until `banshare publisher` exists: it speaks banshare's
//! protocol (`transport::zmq::wire`) on the default layout (submissions,
//! catch-up, feed), stores what parses as a record, refuses the rest with
//! `NAK`, and keeps its log across a restart as the real one keeps it on
//! disk. When `banshare publisher` lands, [`TestPublisher::start`] runs it
//! in the file server's namespace instead, and `go_away` kills it.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use banshare::follow::FollowKind;
use banshare::outbox::spool::Spool;
use banshare::record::MAX_LINE_LEN;
use banshare::transport::lock::{LockTimings, Owner};
use banshare::transport::zmq::ZmqSettings;
use banshare::transport::zmq::wire::{self, CatchUp, Epoch, Header, Reply};
use banshare::transport::{self, Feed, FeedSettings, LogLocation, SftpSettings, Transport};

use crate::files::{OnHost, on_host};
use crate::support::BANSHARE;
use crate::support::cluster::Cluster;
use crate::{Plan, Subject};

/// The node whose feed is read.
const READER: usize = 2;

/// Senders give up on a publisher after this long (the lock timeout):
/// short, so that the outage case does not wait long.
const LOCK_TIMEOUT: &str = "3s";
const TIMINGS: LockTimings = LockTimings {
    timeout: Duration::from_secs(3),
    stale_after: Duration::from_secs(2),
};

/// One publisher's log: kept here, so that it outlives a restart.
struct Log {
    /// Submissions, catch-up, feed.
    ports: [u16; 3],
    epoch: Epoch,
    records: Mutex<Vec<Vec<u8>>>,
}

/// A publisher of banshare's protocol, on a thread in the file server's
/// namespace; stopped (its sockets closed) when dropped.
struct TestPublisher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestPublisher {
    /// Serves `log` on `ip` in the namespace `netns`, once its sockets are
    /// bound.
    fn start(netns: PathBuf, ip: String, log: Arc<Log>) -> TestPublisher {
        let stop = Arc::new(AtomicBool::new(false));
        let (bound_tx, bound) = mpsc::channel();
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let file = fs::File::open(&netns).expect("the file server's namespace");
            // SAFETY: setns on this thread only, with a valid fd; libzmq's
            // I/O thread, started by the first socket, inherits it.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let context = zmq::Context::new();
            let socket = |kind, port: u16| {
                let socket = context.socket(kind).unwrap();
                socket.set_linger(0).unwrap();
                socket
                    .bind(&format!("tcp://{ip}:{port}"))
                    .unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
                socket
            };
            let [s, c, f] = log.ports;
            let sockets = (
                socket(zmq::REP, s),
                socket(zmq::REP, c),
                socket(zmq::PUB, f),
            );
            bound_tx.send(()).unwrap();
            serve(&sockets, &log, &stopping);
        });
        bound
            .recv_timeout(Duration::from_secs(10))
            .expect("the test publisher bound its sockets");
        TestPublisher {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(sockets: &(zmq::Socket, zmq::Socket, zmq::Socket), log: &Log, stop: &AtomicBool) {
    let (submit, catch_up, feed) = sockets;
    let mut heartbeat = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut items = [
            submit.as_poll_item(zmq::POLLIN),
            catch_up.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, 50).unwrap();
        if items[0].is_readable() {
            let frames = submit.recv_multipart(0).unwrap();
            let replies: Vec<Vec<u8>> = frames.iter().map(|f| take(log, f, feed)).collect();
            submit.send_multipart(replies, 0).unwrap();
        }
        if items[1].is_readable() {
            let frames = catch_up.recv_multipart(0).unwrap();
            catch_up
                .send_multipart(catch_up_reply(log, &frames), 0)
                .unwrap();
        }
        if heartbeat.elapsed() >= Duration::from_secs(1) {
            heartbeat = Instant::now();
            feed.send(header(log).encode().as_bytes(), 0).unwrap();
        }
    }
}

fn header(log: &Log) -> Header {
    Header {
        epoch: log.epoch,
        last: log.records.lock().unwrap().len() as u64,
    }
}

/// Stores and broadcasts one submitted record, or refuses it.
fn take(log: &Log, frame: &[u8], feed: &zmq::Socket) -> Vec<u8> {
    let refused = |kind: &str| Reply::Refused { kind: kind.into() }.encode().into_bytes();
    if frame.len() > MAX_LINE_LEN {
        return refused("too_long");
    }
    if banshare::record::parse(frame).is_err() {
        return refused("bad_record");
    }
    let seq = {
        let mut records = log.records.lock().unwrap();
        records.push(frame.to_vec());
        records.len() as u64
    };
    let broadcast = [
        header(log).encode().into_bytes(),
        wire::encode_record(seq, frame),
    ];
    feed.send_multipart(broadcast, 0).unwrap();
    Reply::Stored {
        epoch: log.epoch,
        seq,
    }
    .encode()
    .into_bytes()
}

fn catch_up_reply(log: &Log, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let after = match frames {
        [ask] => match CatchUp::decode(ask) {
            Ok(ask) if ask.epoch == log.epoch => ask.after,
            _ => 0,
        },
        _ => 0,
    };
    let mut reply = vec![header(log).encode().into_bytes()];
    let records = log.records.lock().unwrap();
    let rest = records.iter().enumerate().skip(after as usize);
    for (i, line) in rest.take(wire::CATCH_UP_MAX as usize) {
        reply.push(wire::encode_record(i as u64 + 1, line));
    }
    reply
}

/// The ZeroMQ transport, as the suite drives it.
pub struct ZeroMq<'c> {
    cluster: &'c Cluster,
    tmp: tempfile::TempDir,
    logs: Mutex<HashMap<String, Arc<Log>>>,
    running: Mutex<HashMap<String, TestPublisher>>,
}

impl<'c> ZeroMq<'c> {
    pub fn new(cluster: &'c Cluster) -> ZeroMq<'c> {
        ZeroMq {
            cluster,
            tmp: tempfile::tempdir().expect("a temp dir"),
            logs: Mutex::default(),
            running: Mutex::default(),
        }
    }

    fn log(&self, log: &str) -> Arc<Log> {
        let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        logs.get(log).cloned().expect("a log made by create_log")
    }

    fn netns(&self, ns: &str) -> PathBuf {
        Path::new("/run/netns").join(ns)
    }

    fn start_publisher(&self, log: &str) {
        let publisher = TestPublisher::start(
            self.netns(self.cluster.fileserver_ns()),
            self.cluster.fileserver_ip().to_string(),
            self.log(log),
        );
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.insert(log.to_owned(), publisher);
    }

    fn location(&self, log: &str) -> LogLocation {
        let port = self.log(log).ports[0];
        let url = format!("zmq+tcp://{}:{port}", self.cluster.fileserver_ip());
        LogLocation::parse(&url).expect("a valid zmq location")
    }

    fn banshare(&self, node: usize, args: &[&str], log: &str, spool: &Path) -> Command {
        let mut cmd = self
            .cluster
            .command_in(self.cluster.node_ns(node), BANSHARE);
        cmd.args(["--config", "/dev/null"])
            .args(args)
            .args(self.flags(node, log, spool));
        cmd
    }

    fn flags(&self, node: usize, log: &str, spool: &Path) -> Vec<String> {
        [
            "--log",
            &self.location(log).to_string(),
            "--node",
            &format!("node{node}"),
            "--spool-dir",
            &spool.display().to_string(),
            "--lock-timeout",
            LOCK_TIMEOUT,
            "--stale-lock",
            "2s",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

impl Subject for ZeroMq<'_> {
    fn name(&self) -> &'static str {
        "ZeroMQ"
    }

    fn create_log(&self, log: &str) {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        let n = logs.len() as u16;
        let base = 24000 + 10 * n;
        logs.insert(
            log.to_owned(),
            Arc::new(Log {
                ports: [base, base + 1, base + 3],
                epoch: Epoch(
                    0x5eed_0000_0000_0000 | (u64::from(std::process::id()) << 8) | u64::from(n),
                ),
                records: Mutex::default(),
            }),
        );
        drop(logs);
        self.start_publisher(log);
    }

    fn transport(&self, log: &str) -> Box<dyn Transport> {
        let owner = Owner {
            node: "conformance".into(),
            pid: std::process::id(),
        };
        let inner = transport::open(
            &self.location(log),
            &self.tmp.path().join("local.lock"),
            owner,
            TIMINGS,
            &SftpSettings::default(),
            &ZmqSettings::default(),
        );
        Box::new(OnHost::<dyn Transport> {
            netns: self.netns(self.cluster.node_ns(0)),
            inner,
        })
    }

    fn feed(&self, log: &str) -> Box<dyn Feed> {
        let [_, catch_up_port, feed_port] = self.log(log).ports;
        let settings = FeedSettings {
            follow: FollowKind::Auto,
            poll_interval: Duration::from_millis(100),
            safety_poll: Duration::from_secs(5),
            sftp: SftpSettings::default(),
            zmq: ZmqSettings {
                catch_up_port,
                feed_port,
                timeout: Duration::from_secs(2),
                curve: None,
            },
        };
        let netns = self.netns(self.cluster.node_ns(READER));
        let location = self.location(log);
        let inner = on_host(&netns, || transport::open_feed(&location, &settings));
        Box::new(OnHost::<dyn Feed> { netns, inner })
    }

    fn write_concurrently(&self, log: &str, plan: &Plan) -> Result<String, String> {
        let go = self.tmp.path().join("go");
        let _ = fs::remove_file(&go);
        let mut writers = Vec::new();
        for w in 0..plan.writers {
            let node = w % 2;
            let mut script = format!("while [ ! -e {} ]; do sleep 0.01; done\n", go.display());
            for b in 0..plan.batches {
                let addresses = plan.batch(w, b).join("\\n");
                script.push_str(&format!(
                    "printf '{addresses}\\n' | $B ban - $C || exit 1\n"
                ));
            }
            let spool = self.tmp.path().join(format!("{log}-w{w}"));
            let mut sh = self.cluster.command_in(self.cluster.node_ns(node), "sh");
            sh.arg("-c")
                .arg(script)
                .env("B", format!("{BANSHARE} --config /dev/null"))
                .env("C", self.flags(node, log, &spool).join(" "))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            writers.push((
                sh.spawn().map_err(|e| format!("start a writer: {e}"))?,
                spool,
            ));
        }
        fs::write(&go, b"").map_err(|e| e.to_string())?;
        let finished: Vec<_> = writers
            .into_iter()
            .map(|(writer, spool)| (writer.wait_with_output(), spool))
            .collect();
        for (w, (out, spool)) in finished.into_iter().enumerate() {
            let out = out.map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("writer {w} failed: {}", stderr(&out)));
            }
            let spooled = Spool::open(&spool)
                .and_then(|s| s.depth())
                .map_err(|e| e.to_string())?;
            if spooled != 0 {
                return Err(format!(
                    "writer {w} spooled {spooled} record(s): {}",
                    stderr(&out)
                ));
            }
        }
        Ok(format!(
            "{} `ban -` processes, {} runs of {} addresses each, on 2 hosts (node0, node1)",
            plan.writers, plan.batches, plan.per_batch
        ))
    }

    fn ban(&self, log: &str, targets: &[String], spool: &Path) -> Result<(), String> {
        let mut ban = self
            .banshare(0, &["ban", "-"], log, spool)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start banshare ban: {e}"))?;
        let mut stdin = ban.stdin.take().expect("piped");
        stdin
            .write_all(format!("{}\n", targets.join("\n")).as_bytes())
            .map_err(|e| e.to_string())?;
        drop(stdin);
        let out = ban.wait_with_output().map_err(|e| e.to_string())?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("banshare ban: {}", stderr(&out))),
        }
    }

    fn flush(&self, log: &str, spool: &Path) -> Result<(), String> {
        let out = self
            .banshare(0, &["flush"], log, spool)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run banshare flush: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("banshare flush: {}", stderr(&out))),
        }
    }

    fn go_away(&self, log: &str) -> String {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        drop(running.remove(log));
        "the publisher stopped (its log kept, as on its disk), then started on the same ports"
            .into()
    }

    fn come_back(&self, log: &str) {
        self.start_publisher(log);
    }

    fn rotate(&self, _log: &str) -> Result<String, String> {
        Err(
            "a publisher's log is one numbered sequence, not rotated; a new log is a new \
             epoch, read from its first record (unit test \
             zmq_feed_starts_a_new_epoch_from_its_first_record_and_warns)"
                .into(),
        )
    }

    fn refuses_garbage(&self) -> Option<&'static str> {
        Some("the publisher refuses what is no record (NAK), the records around it come")
    }
}
