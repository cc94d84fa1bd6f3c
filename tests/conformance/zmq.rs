//! ZeroMQ: the real `banshare publisher` on the file server's test host,
//! senders on nodes 0 and 1 (the `banshare` binary, and the library's
//! transport on a thread in node 0's namespace), the feed on node 2.
//!
//! Each log is a publisher of its own, with its own data directory and
//! ports. Taking the transport away kills the publisher (SIGKILL); it comes
//! back on the same data directory, as after a crash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use banshare::transport::lock::LockTimings;
use banshare::transport::zmq::ZmqSettings;
use banshare::transport::{Feed, LogLocation, Transport};

use crate::files::{
    ban_with, banshare_on, feed_on_node, flush_with, sender_flags, transport_on_node0,
    write_on_two_nodes,
};
use crate::support::cluster::Cluster;
use crate::support::{BANSHARE, Daemon, wait_until};
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

/// One publisher: its ports (submissions, catch-up, legacy, feed) and its
/// data directory, which outlive a restart.
struct Log {
    ports: [u16; 4],
    data_dir: PathBuf,
}

/// The ZeroMQ transport, as the suite drives it.
pub struct ZeroMq<'c> {
    cluster: &'c Cluster,
    tmp: tempfile::TempDir,
    logs: Mutex<HashMap<String, Log>>,
    running: Mutex<HashMap<String, Daemon>>,
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

    fn ports(&self, log: &str) -> [u16; 4] {
        let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        logs.get(log).expect("a log made by create_log").ports
    }

    /// Starts `banshare publisher` for `log` in the file server's
    /// namespace, and waits until it takes submissions.
    fn start_publisher(&self, log: &str) {
        let ip = self.cluster.fileserver_ip();
        let (ports, data_dir) = {
            let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
            let l = logs.get(log).expect("a log made by create_log");
            (l.ports, l.data_dir.clone())
        };
        let [submit, catch_up, legacy, feed] = ports.map(|p| p.to_string());
        let mut child = self
            .cluster
            .command_in(self.cluster.fileserver_ns(), BANSHARE)
            .args(["--config", "/dev/null", "publisher", "--node", "pub"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--bind", &ip.to_string()])
            .args(["--submit-port", &submit, "--catch-up-port", &catch_up])
            .args(["--legacy-port", &legacy, "--feed-port", &feed])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start banshare publisher");
        let up = wait_until(Duration::from_secs(20), || {
            let exited = child.try_wait().ok().flatten();
            assert!(exited.is_none(), "banshare publisher exited: {exited:?}");
            self.cluster
                .can_connect(self.cluster.node_ns(0), ip, ports[0])
        });
        assert!(up, "banshare publisher never listened on {ip}:{}", ports[0]);
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.insert(log.to_owned(), Daemon(child));
    }

    fn location(&self, log: &str) -> LogLocation {
        let port = self.ports(log)[0];
        let url = format!("zmq+tcp://{}:{port}", self.cluster.fileserver_ip());
        LogLocation::parse(&url).expect("a valid zmq location")
    }

    fn banshare(&self, node: usize, args: &[&str], log: &str, spool: &Path) -> Command {
        banshare_on(self.cluster, node, args, &self.flags(node, log, spool))
    }

    fn flags(&self, node: usize, log: &str, spool: &Path) -> Vec<String> {
        sender_flags(&self.location(log).to_string(), node, spool, LOCK_TIMEOUT)
    }
}

impl Subject for ZeroMq<'_> {
    fn name(&self) -> &'static str {
        "ZeroMQ"
    }

    fn create_log(&self, log: &str) {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        let base = 24000 + 10 * logs.len() as u16;
        logs.insert(
            log.to_owned(),
            Log {
                ports: [base, base + 1, base + 2, base + 3],
                data_dir: self.tmp.path().join(format!("publisher-{log}")),
            },
        );
        drop(logs);
        self.start_publisher(log);
    }

    fn transport(&self, log: &str) -> Box<dyn Transport> {
        transport_on_node0(self.cluster, self.tmp.path(), &self.location(log), TIMINGS)
    }

    fn feed(&self, log: &str) -> Box<dyn Feed> {
        let [_, catch_up_port, _, feed_port] = self.ports(log);
        let zmq = ZmqSettings {
            catch_up_port,
            feed_port,
            timeout: Duration::from_secs(2),
            curve: None,
        };
        feed_on_node(self.cluster, READER, &self.location(log), zmq)
    }

    fn write_concurrently(&self, log: &str, plan: &Plan) -> Result<String, String> {
        write_on_two_nodes(self.cluster, self.tmp.path(), log, plan, |node, spool| {
            self.flags(node, log, spool)
        })
    }

    fn ban(&self, log: &str, targets: &[String], spool: &Path) -> Result<(), String> {
        ban_with(self.banshare(0, &["ban", "-"], log, spool), targets)
    }

    fn flush(&self, log: &str, spool: &Path) -> Result<(), String> {
        flush_with(self.banshare(0, &["flush"], log, spool))
    }

    fn go_away(&self, log: &str) -> String {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        // Killed and reaped: as a crash, without a word to anyone.
        drop(running.remove(log));
        "banshare publisher killed (SIGKILL), then started again on its data directory".into()
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
        Some("banshare publisher refuses what is no record (NAK), the records around it come")
    }
}
