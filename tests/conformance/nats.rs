//! NATS JetStream, in two columns: one real `nats-server` with JetStream
//! on the file server's test host ("NATS"), and a cluster of three on
//! test hosts of their own on the same bridge, each stream kept on all
//! three ("NATS cluster", `tests/support/nats.rs`). Senders on nodes 0
//! and 1 (the `banshare` binary, and the library's transport on a thread
//! in node 0's namespace), the feed on node 2. Each log is a stream of its
//! own (`c1.log` is stream `c1_log`), made by `banshare nats init` as an
//! administrator would. Taking the transport away kills every server
//! (SIGKILL); they come back on their stores, as after a crash.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use banshare::transport::lock::LockTimings;
use banshare::transport::{Feed, LogLocation, Transport};

use crate::files::{
    ban_with, banshare_on, feed_on_node, flush_with, sender_flags, transport_on_node0,
    write_on_two_nodes,
};
use crate::support::BANSHARE;
use crate::support::cluster::Cluster;
use crate::support::nats::{CLIENT_PORT, NatsOptions, NatsServers};
use crate::support::nats_single::NatsServer;
use crate::{Plan, Subject};

/// The node whose feed is read.
const READER: usize = 2;

/// The server's client port on the file server's host.
const PORT: u16 = 24222;

/// Senders give up waiting for acknowledgements after this long.
const LOCK_TIMEOUT: &str = "3s";
const TIMINGS: LockTimings = LockTimings {
    timeout: Duration::from_secs(3),
    stale_after: Duration::from_secs(2),
};

/// Where the streams are kept.
enum Servers {
    /// One server, on the file server's host.
    Single(std::sync::Mutex<NatsServer>),
    /// Three servers routed to each other; every stream has 3 replicas.
    Cluster(NatsServers),
}

/// The NATS transport, as the suite drives it.
pub struct Nats<'c> {
    cluster: &'c Cluster,
    tmp: tempfile::TempDir,
    servers: Servers,
}

impl<'c> Nats<'c> {
    /// One server on the file server's host.
    pub fn new(cluster: &'c Cluster) -> Nats<'c> {
        let server =
            NatsServer::start(cluster.fileserver_ip(), PORT, Some(cluster.fileserver_ns()));
        Nats::with(cluster, Servers::Single(std::sync::Mutex::new(server)))
    }

    /// Three servers on hosts of their own, on `cluster`'s bridge.
    pub fn cluster(cluster: &'c Cluster) -> Nats<'c> {
        let servers = NatsServers::start_on(cluster, "conform", NatsOptions::cluster());
        Nats::with(cluster, Servers::Cluster(servers))
    }

    fn with(cluster: &'c Cluster, servers: Servers) -> Nats<'c> {
        Nats {
            cluster,
            tmp: tempfile::tempdir().expect("a temp dir"),
            servers,
        }
    }

    fn server(&self) -> std::sync::MutexGuard<'_, NatsServer> {
        match &self.servers {
            Servers::Single(server) => server
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            Servers::Cluster(_) => unreachable!("a cluster has no single server"),
        }
    }

    /// Copies of each stream: one per server.
    fn replicas(&self) -> &'static str {
        match &self.servers {
            Servers::Single(_) => "1",
            Servers::Cluster(_) => "3",
        }
    }

    fn url(&self, log: &str) -> String {
        let stream = log.replace('.', "_");
        match &self.servers {
            Servers::Single(server) => server
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .url(&stream),
            Servers::Cluster(servers) => {
                let hosts: Vec<String> = (0..servers.server_count())
                    .map(|i| format!("{}:{CLIENT_PORT}", servers.server_ip(i)))
                    .collect();
                format!("nats://{}/{stream}", hosts.join(","))
            }
        }
    }

    fn location(&self, log: &str) -> LogLocation {
        LogLocation::parse(&self.url(log)).expect("a valid nats location")
    }

    fn banshare(&self, node: usize, args: &[&str], log: &str, spool: &Path) -> Command {
        banshare_on(self.cluster, node, args, &self.flags(node, log, spool))
    }

    fn flags(&self, node: usize, log: &str, spool: &Path) -> Vec<String> {
        sender_flags(&self.url(log), node, spool, LOCK_TIMEOUT)
    }
}

impl Subject for Nats<'_> {
    fn name(&self) -> &'static str {
        match &self.servers {
            Servers::Single(_) => "NATS",
            Servers::Cluster(_) => "NATS cluster",
        }
    }

    fn create_log(&self, log: &str) {
        let out = self
            .cluster
            .command_in(self.cluster.node_ns(0), BANSHARE)
            .args(["--config", "/dev/null", "nats", "init", "--replicas"])
            .arg(self.replicas())
            .args(["--log", &self.url(log)])
            .stdin(Stdio::null())
            .output()
            .expect("run banshare nats init");
        assert!(
            out.status.success(),
            "banshare nats init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn transport(&self, log: &str) -> Box<dyn Transport> {
        transport_on_node0(self.cluster, self.tmp.path(), &self.location(log), TIMINGS)
    }

    fn feed(&self, log: &str) -> Box<dyn Feed> {
        feed_on_node(
            self.cluster,
            READER,
            &self.location(log),
            Default::default(),
        )
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

    fn go_away(&self, _log: &str) -> String {
        match &self.servers {
            Servers::Single(_) => {
                self.server().kill();
                "nats-server killed (SIGKILL), then started again on its store".into()
            }
            Servers::Cluster(servers) => {
                (0..servers.server_count()).for_each(|i| servers.kill(i));
                "all 3 nats-servers killed (SIGKILL), then started again on their stores".into()
            }
        }
    }

    fn come_back(&self, _log: &str) {
        match &self.servers {
            Servers::Single(_) => self.server().start_again(),
            Servers::Cluster(servers) => servers.restart_all(),
        }
    }

    fn rotate(&self, _log: &str) -> Result<String, String> {
        Err(
            "a stream is one numbered sequence, never rotated: retention removes what can no \
             longer be in force (docs/nats.md); a stream made anew is read from its first \
             record"
                .into(),
        )
    }
}
