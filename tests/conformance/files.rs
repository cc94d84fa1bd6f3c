//! The transports that reach a file: a local path, the same file through
//! sshfs mounts on several test hosts, and SFTP with no mount. Writers and
//! readers on test hosts run in those hosts' network namespaces: the real
//! `banshare` binary through `ip netns exec`, the library's transports
//! and feeds in this process on a thread that entered the namespace.

use std::fs;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use banshare::follow::{FollowKind, Handle, Mode};
use banshare::outbox::spool::Spool;
use banshare::record::RecordId;
use banshare::transport::feed::Unread;
use banshare::transport::lock::{LockTimings, Owner};
use banshare::transport::{
    self, Entry, Feed, FeedError, FeedSettings, LogLocation, Notice, Position, SftpSettings,
    Transport, TransportError, WriterSettings,
};

use crate::support::BANSHARE;
use crate::support::cluster::Cluster;
use crate::{Plan, Subject};

/// Which way the file is reached.
enum Way {
    /// A local path, on this host only.
    Local,
    /// sshfs mounts of the file server's export: node 0 and node 1 write
    /// through theirs, node 2's is read.
    Sshfs,
    /// `sftp://` to the file server's chrooted account: node 0 and 1
    /// write, node 2 reads.
    Sftp,
}

/// The node that reads, in the cross-host transports.
const READER: usize = 2;

/// One file transport, as the suite drives it.
pub struct FileShare<'c> {
    way: Way,
    cluster: Option<&'c Cluster>,
    /// Spools, the local lock, and for [`Way::Local`] the log's folder.
    tmp: tempfile::TempDir,
}

impl<'c> FileShare<'c> {
    pub fn local() -> FileShare<'c> {
        let tmp = tempfile::tempdir().expect("a temp dir");
        fs::create_dir(tmp.path().join("share")).expect("the share folder");
        FileShare {
            way: Way::Local,
            cluster: None,
            tmp,
        }
    }

    /// Expects the export mounted on nodes 0 to 2.
    pub fn sshfs(cluster: &'c Cluster) -> FileShare<'c> {
        FileShare {
            way: Way::Sshfs,
            cluster: Some(cluster),
            tmp: tempfile::tempdir().expect("a temp dir"),
        }
    }

    pub fn sftp(cluster: &'c Cluster) -> FileShare<'c> {
        FileShare {
            way: Way::Sftp,
            cluster: Some(cluster),
            tmp: tempfile::tempdir().expect("a temp dir"),
        }
    }

    fn cluster(&self) -> &'c Cluster {
        self.cluster.expect("a cross-host transport has a cluster")
    }

    /// The log's folder as the file server (or this host) holds it.
    fn server_dir(&self) -> PathBuf {
        match self.way {
            Way::Local => self.tmp.path().join("share"),
            Way::Sshfs => self.cluster().export_dir().to_owned(),
            Way::Sftp => self.cluster().sftp_share_dir(),
        }
    }

    /// `log` as node `node` names it.
    fn location(&self, node: usize, log: &str) -> LogLocation {
        let text = match self.way {
            Way::Local => self.server_dir().join(log).display().to_string(),
            Way::Sshfs => self
                .cluster()
                .mountpoint(node)
                .join(log)
                .display()
                .to_string(),
            Way::Sftp => self.cluster().sftp_url(log),
        };
        LogLocation::parse(&text).expect("a valid log location")
    }

    fn sftp_settings(&self) -> SftpSettings {
        match self.cluster {
            Some(cluster) => SftpSettings {
                identity: Some(cluster.sftp_identity().to_owned()),
                known_hosts: cluster.known_hosts().to_owned(),
                accept_new_host_key: false,
                timeout: Duration::from_secs(5),
            },
            None => SftpSettings::default(),
        }
    }

    /// The network namespace of `node`, for the transports that cross
    /// hosts; `None` on this host.
    fn netns(&self, node: usize) -> Option<PathBuf> {
        match self.way {
            Way::Local => None,
            Way::Sshfs | Way::Sftp => {
                Some(Path::new("/run/netns").join(self.cluster().node_ns(node)))
            }
        }
    }

    /// `banshare` on `node` (on this host for a local log): the global
    /// flags, then `args`, then what points it at `log` and `spool`.
    fn banshare(&self, node: usize, args: &[&str], log: &str, spool: &Path) -> Command {
        let mut cmd = match self.way {
            Way::Local => Command::new(BANSHARE),
            _ => self
                .cluster()
                .command_in(self.cluster().node_ns(node), BANSHARE),
        };
        cmd.args(["--config", "/dev/null"])
            .args(args)
            .args(self.flags(node, log, spool));
        cmd
    }

    fn flags(&self, node: usize, log: &str, spool: &Path) -> Vec<String> {
        let mut flags = vec![
            "--log".to_owned(),
            self.location(node, log).to_string(),
            "--node".to_owned(),
            format!("node{node}"),
            "--spool-dir".to_owned(),
            spool.display().to_string(),
        ];
        if let (Way::Sftp, Some(cluster)) = (&self.way, self.cluster) {
            flags.extend([
                "--identity".to_owned(),
                cluster.sftp_identity().display().to_string(),
                "--known-hosts".to_owned(),
                cluster.known_hosts().display().to_string(),
            ]);
        }
        flags
    }

    /// The node each writer of `plan` runs on.
    fn writer_nodes(&self, plan: &Plan) -> Vec<usize> {
        match self.way {
            // One host by nature: every writer on it.
            Way::Local => vec![0; plan.writers],
            // Writers alternate between node 0 and node 1.
            Way::Sshfs | Way::Sftp => (0..plan.writers).map(|w| w % 2).collect(),
        }
    }
}

/// What a finished command printed, for an error message.
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

impl Subject for FileShare<'_> {
    fn name(&self) -> &'static str {
        match self.way {
            Way::Local => "local file",
            Way::Sshfs => "sshfs",
            Way::Sftp => "SFTP",
        }
    }

    fn create_log(&self, log: &str) {
        match self.way {
            Way::Local | Way::Sshfs => {
                let path = self.server_dir().join(log);
                fs::write(&path, b"").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            Way::Sftp => {
                self.cluster().create_sftp_file(log);
            }
        }
    }

    fn transport(&self, log: &str) -> Box<dyn Transport> {
        let owner = Owner {
            node: "conformance".into(),
            pid: std::process::id(),
        };
        let settings = WriterSettings {
            local_lock: self.tmp.path().join("local.lock"),
            owner,
            timings: LockTimings::default(),
            sftp: self.sftp_settings(),
            zmq: Default::default(),
            nats: Default::default(),
        };
        let transport = transport::open(&self.location(0, log), &settings);
        match (&self.way, self.netns(0)) {
            (Way::Sftp, Some(netns)) => Box::new(OnHost::<dyn Transport> {
                netns,
                inner: transport,
            }),
            _ => transport,
        }
    }

    fn feed(&self, log: &str) -> Box<dyn Feed> {
        let location = self.location(READER, log);
        let settings = FeedSettings {
            follow: FollowKind::Auto,
            poll_interval: Duration::from_millis(100),
            safety_poll: Duration::from_secs(5),
            sftp: self.sftp_settings(),
            zmq: Default::default(),
            nats: Default::default(),
        };
        match (&self.way, self.netns(READER)) {
            // A connection made in this process must come from a test
            // host: every call runs on a thread in the reader's namespace.
            (Way::Sftp, Some(netns)) => {
                let inner = on_host(&netns, || transport::open_feed(&location, &settings));
                Box::new(OnHost::<dyn Feed> { netns, inner })
            }
            _ => transport::open_feed(&location, &settings),
        }
    }

    fn write_concurrently(&self, log: &str, plan: &Plan) -> Result<String, String> {
        let go = self.tmp.path().join("go");
        let _ = fs::remove_file(&go);
        let nodes = self.writer_nodes(plan);
        let mut writers = Vec::new();
        for (w, &node) in nodes.iter().enumerate() {
            let spool = self.tmp.path().join(format!("w{w}"));
            let sh = match self.way {
                Way::Local => Command::new("sh"),
                _ => self
                    .cluster()
                    .command_in(self.cluster().node_ns(node), "sh"),
            };
            let writer = spawn_writer(sh, &go, plan, w, &self.flags(node, log, &spool))?;
            writers.push((writer, spool));
        }
        start_and_judge(&go, writers)?;
        let how = format!(
            "{} `ban -` processes, {} runs of {} addresses each",
            plan.writers, plan.batches, plan.per_batch
        );
        Ok(match self.way {
            Way::Local => format!("{how}, on one host (one host by nature)"),
            _ => {
                let mut hosts = nodes.clone();
                hosts.sort();
                hosts.dedup();
                let names: Vec<String> = hosts.iter().map(|n| format!("node{n}")).collect();
                format!("{how}, on {} hosts ({})", hosts.len(), names.join(", "))
            }
        })
    }

    fn ban(&self, log: &str, targets: &[String], spool: &Path) -> Result<(), String> {
        ban_with(self.banshare(0, &["ban", "-"], log, spool), targets)
    }

    fn flush(&self, log: &str, spool: &Path) -> Result<(), String> {
        flush_with(self.banshare(0, &["flush"], log, spool))
    }

    fn go_away(&self, log: &str) -> String {
        match self.way {
            Way::Local => {
                let dir = self.server_dir();
                fs::rename(dir.join(log), dir.join(format!("away-{log}")))
                    .expect("rename the log away");
                "the log renamed away (missing; banshare never creates it)".into()
            }
            Way::Sshfs | Way::Sftp => {
                self.cluster().stop_sshd();
                "the file server's sshd stopped, then started".into()
            }
        }
    }

    fn come_back(&self, log: &str) {
        match self.way {
            Way::Local => {
                let dir = self.server_dir();
                fs::rename(dir.join(format!("away-{log}")), dir.join(log))
                    .expect("rename the log back");
            }
            Way::Sshfs | Way::Sftp => self.cluster().start_sshd(),
        }
    }

    fn rotate(&self, log: &str) -> Result<String, String> {
        let dir = self.server_dir();
        fs::rename(dir.join(log), dir.join(format!("{log}.1"))).map_err(|e| e.to_string())?;
        self.create_log(log);
        Ok(match self.way {
            Way::Local => "renamed to .1, a new log created".into(),
            _ => "renamed to .1 on the file server, a new log created there".into(),
        })
    }
}

/// A transport or feed whose every call runs on a thread in a test host's
/// network namespace, so that the connections it makes come from there.
pub(crate) struct OnHost<T: ?Sized> {
    pub netns: PathBuf,
    pub inner: Box<T>,
}

/// Runs `f` on a thread that entered the network namespace `netns`.
pub(crate) fn on_host<R: Send>(netns: &Path, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file =
                    fs::File::open(netns).unwrap_or_else(|e| panic!("{}: {e}", netns.display()));
                // SAFETY: setns on this thread only, with a valid fd.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

impl Transport for OnHost<dyn Transport> {
    fn append(&mut self, batch: &[u8]) -> Result<(), TransportError> {
        let inner = &mut self.inner;
        on_host(&self.netns, || inner.append(batch))
    }

    fn find_ids(
        &mut self,
        ids: &std::collections::HashSet<RecordId>,
    ) -> Result<Option<std::collections::HashSet<RecordId>>, TransportError> {
        let inner = &mut self.inner;
        on_host(&self.netns, || inner.find_ids(ids))
    }
}

impl Feed for OnHost<dyn Feed> {
    fn log(&self) -> &str {
        self.inner.log()
    }

    fn resume(&mut self, saved: &Position) -> Result<(), String> {
        let inner = &mut self.inner;
        on_host(&self.netns, || inner.resume(saved))
    }

    fn watch(&mut self, wake: Handle) -> Mode {
        let inner = &mut self.inner;
        on_host(&self.netns, || inner.watch(wake))
    }

    fn read(&mut self, max: usize) -> Result<Vec<Entry>, FeedError> {
        let inner = &mut self.inner;
        on_host(&self.netns, || inner.read(max))
    }

    fn position(&self) -> Option<Position> {
        self.inner.position()
    }

    fn unread(&mut self, count_max: u64) -> Option<Unread> {
        let inner = &mut self.inner;
        on_host(&self.netns, || inner.unread(count_max))
    }

    fn take_notices(&mut self) -> Vec<Notice> {
        self.inner.take_notices()
    }

    fn connections(&self) -> Option<Arc<AtomicU64>> {
        self.inner.connections()
    }
}

/// Runs `command`, a `banshare ban -`, with `targets` on its stdin.
pub(crate) fn ban_with(mut command: Command, targets: &[String]) -> Result<(), String> {
    let mut ban = command
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

/// Runs `command`, a `banshare flush`.
pub(crate) fn flush_with(mut command: Command) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run banshare flush: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("banshare flush: {}", stderr(&out))),
    }
}

/// `banshare --config /dev/null ARGS FLAGS` on node `node`, as the NATS
/// and ZeroMQ subjects run it.
#[cfg(any(feature = "nats", feature = "zmq"))]
pub(crate) fn banshare_on(
    cluster: &Cluster,
    node: usize,
    args: &[&str],
    flags: &[String],
) -> Command {
    let mut cmd = cluster.command_in(cluster.node_ns(node), BANSHARE);
    cmd.args(["--config", "/dev/null"]).args(args).args(flags);
    cmd
}

/// The flags of a sender on node `node` of the NATS and ZeroMQ subjects:
/// the log `url`, its own `spool`, and `lock_timeout` (stale after 2 s).
#[cfg(any(feature = "nats", feature = "zmq"))]
pub(crate) fn sender_flags(
    url: &str,
    node: usize,
    spool: &Path,
    lock_timeout: &str,
) -> Vec<String> {
    [
        "--log",
        url,
        "--node",
        &format!("node{node}"),
        "--spool-dir",
        &spool.display().to_string(),
        "--lock-timeout",
        lock_timeout,
        "--stale-lock",
        "2s",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The library's transport to `location` as the NATS and ZeroMQ subjects
/// send: on a thread in node 0's namespace, with `timings` and its local
/// lock in `tmp`.
#[cfg(any(feature = "nats", feature = "zmq"))]
pub(crate) fn transport_on_node0(
    cluster: &Cluster,
    tmp: &Path,
    location: &LogLocation,
    timings: LockTimings,
) -> Box<dyn Transport> {
    let settings = WriterSettings {
        local_lock: tmp.join("local.lock"),
        owner: Owner {
            node: "conformance".into(),
            pid: std::process::id(),
        },
        timings,
        sftp: SftpSettings::default(),
        zmq: Default::default(),
        nats: Default::default(),
    };
    let inner = transport::open(location, &settings);
    Box::new(OnHost::<dyn Transport> {
        netns: Path::new("/run/netns").join(cluster.node_ns(0)),
        inner,
    })
}

/// The library's feed of `location` as the NATS and ZeroMQ subjects read
/// it: made and read on a thread in node `node`'s namespace, with `zmq`
/// (the publisher's ports; the defaults for NATS).
#[cfg(any(feature = "nats", feature = "zmq"))]
pub(crate) fn feed_on_node(
    cluster: &Cluster,
    node: usize,
    location: &LogLocation,
    zmq: banshare::transport::zmq::ZmqSettings,
) -> Box<dyn Feed> {
    let settings = FeedSettings {
        follow: FollowKind::Auto,
        poll_interval: Duration::from_millis(100),
        safety_poll: Duration::from_secs(5),
        sftp: SftpSettings::default(),
        zmq,
        nats: Default::default(),
    };
    let netns = Path::new("/run/netns").join(cluster.node_ns(node));
    let inner = on_host(&netns, || transport::open_feed(location, &settings));
    Box::new(OnHost::<dyn Feed> { netns, inner })
}

/// Writes `plan` as the nats and zmq subjects do: writer `w` on node
/// `w % 2` (node0, node1), through its own spool `<log>-w<w>` in `tmp`, with
/// `flags(node, spool)` as its `banshare` flags; says how it was written.
#[cfg(any(feature = "nats", feature = "zmq"))]
pub(crate) fn write_on_two_nodes(
    cluster: &Cluster,
    tmp: &Path,
    log: &str,
    plan: &Plan,
    flags: impl Fn(usize, &Path) -> Vec<String>,
) -> Result<String, String> {
    let go = tmp.join("go");
    let _ = fs::remove_file(&go);
    let mut writers = Vec::new();
    for w in 0..plan.writers {
        let node = w % 2;
        let spool = tmp.join(format!("{log}-w{w}"));
        let sh = cluster.command_in(cluster.node_ns(node), "sh");
        let writer = spawn_writer(sh, &go, plan, w, &flags(node, &spool))?;
        writers.push((writer, spool));
    }
    start_and_judge(&go, writers)?;
    Ok(format!(
        "{} `ban -` processes, {} runs of {} addresses each, on 2 hosts (node0, node1)",
        plan.writers, plan.batches, plan.per_batch
    ))
}

/// Starts writer `w` of `plan` in `sh` (a shell on the writer's host): it
/// waits for `go`, then runs one `banshare ban -` with `flags` per batch.
fn spawn_writer(
    mut sh: Command,
    go: &Path,
    plan: &Plan,
    w: usize,
    flags: &[String],
) -> Result<std::process::Child, String> {
    let mut script = format!("while [ ! -e {} ]; do sleep 0.01; done\n", go.display());
    for b in 0..plan.batches {
        let addresses = plan.batch(w, b).join("\\n");
        script.push_str(&format!(
            "printf '{addresses}\\n' | $B ban - $C || exit 1\n"
        ));
    }
    sh.arg("-c")
        .arg(script)
        .env("B", format!("{BANSHARE} --config /dev/null"))
        .env("C", flags.join(" "))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    sh.spawn().map_err(|e| format!("start a writer: {e}"))
}

/// Lets the `writers` (each with its spool) go by creating `go`, waits for
/// every one of them before judging any (none is left running), and fails
/// unless each ended well with nothing spooled.
pub(crate) fn start_and_judge(
    go: &Path,
    writers: Vec<(std::process::Child, PathBuf)>,
) -> Result<(), String> {
    fs::write(go, b"").map_err(|e| e.to_string())?;
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
                "writer {w} spooled {spooled} record(s) under contention: {}",
                stderr(&out)
            ));
        }
    }
    Ok(())
}
