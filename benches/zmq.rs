//! Propagation latency over ZeroMQ (issue 12), beside sshfs and SFTP
//! measured in the same run and the same way.
//!
//! One cluster: the file server's namespace runs `banshare publisher` (and
//! sshd for the file rows), nodes 0-9 run one `banshare watch --backend
//! nftables` each, and node 10 submits. A ban counts as applied on a
//! nftables host when `nft monitor new elements` there shows its element
//! (as benches/watch.rs measures), and on a lightweight subscriber when its
//! `banshare watch --backend log` prints the ban. Each latency runs from
//! just before the submission to the moment the last subscriber reported
//! it (the p50-max columns), or to each subscriber's report (the "each
//! application" column: one latency per ban and subscriber); the next ban is submitted 30 ms after that (700 ms for the rows
//! that poll), or after a 5 s deadline (counted as missed), so each is
//! measured alone.
//!
//! Rows:
//! - ZeroMQ, 10 subscribers (the 10 nftables watchers), then 100 (the same
//!   10 plus 90 log-backend watchers, 9 in each of the 10 node
//!   namespaces); 500 bans each, submitted by a long-lived REQ client in
//!   this bench (one record per request, as `banshare ban` sends one),
//!   run on a thread that entered node 10's network namespace;
//! - ZeroMQ, 10 subscribers, each ban submitted by a `banshare ban
//!   --log zmq+tcp://...` process in node 10 (what fail2ban's action runs);
//! - sshfs and SFTP, the same 10 nftables watchers following one log in
//!   the file server's SFTP share (poll 250 ms), each ban appended with
//!   `banshare ban` on the file server's own disk.
//!
//! `cargo bench --bench zmq`, as root. `BANSHARE_BENCH_BANS=50` makes a
//! short run (50 bans per ZeroMQ row, the other rows in proportion) to
//! check the bench or compare CPU per ban; its latencies are no result. Prints a Markdown table for
//! docs/benchmarks.md on stdout and progress on stderr. Like the other
//! benches it does nothing without `--bench`, so `cargo test --benches`
//! stays fast.

#[path = "common/applied.rs"]
mod applied;
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use applied::{Events, Seen, drain, ms, wait_all, warm_up};
use banshare::record::{self, Record, RecordId, Target};
use support::cluster::{Cluster, require_root};
use support::{BANSHARE, Daemon, wait_until};

/// Watchers applying to nftables, one per host; node `NFT_HOSTS` submits.
const NFT_HOSTS: usize = 10;
/// Lightweight subscribers added for the 100-subscriber row.
const LOG_SUBSCRIBERS: usize = 90;
const ZMQ_BANS: usize = 500;
/// `banshare ban` processes: slower to submit, so fewer.
const ZMQ_CLI_BANS: usize = 100;
const FILE_BANS: usize = 40;
/// Set to N, each ZeroMQ row submits N bans instead of [`ZMQ_BANS`] (the
/// others as many in proportion, at least 5): a short run to check the
/// bench or compare CPU per ban, not a result for docs/benchmarks.md.
const BANS_VAR: &str = "BANSHARE_BENCH_BANS";

/// How many bans each row submits: as above, or fewer by [`BANS_VAR`].
#[derive(Clone, Copy)]
struct Counts {
    zmq: usize,
    zmq_cli: usize,
    file: usize,
}

impl Counts {
    fn from_env() -> Counts {
        let full = Counts {
            zmq: ZMQ_BANS,
            zmq_cli: ZMQ_CLI_BANS,
            file: FILE_BANS,
        };
        let Some(n) = std::env::var(BANS_VAR).ok() else {
            return full;
        };
        let n: usize = n
            .parse()
            .unwrap_or_else(|_| panic!("{BANS_VAR} must be a number of bans, not {n:?}"));
        let scaled = |count: usize| (count * n / ZMQ_BANS).max(5);
        Counts {
            zmq: n.max(1),
            zmq_cli: scaled(ZMQ_CLI_BANS),
            file: scaled(FILE_BANS),
        }
    }
}
/// After the last subscriber applied a ban, before the next.
const ZMQ_GAP: Duration = Duration::from_millis(30);
/// The file rows poll every 250 ms: a longer gap puts each ban at a
/// random phase of the polls.
const FILE_GAP: Duration = Duration::from_millis(700);
/// A ban not applied everywhere by then is counted as missed.
const BAN_DEADLINE: Duration = Duration::from_secs(5);
const START_DEADLINE: Duration = Duration::from_secs(90);
/// The watchers' and the publisher's configuration: a 500-ban stream from
/// one node is above the default rate limit.
const CONFIG: &str = "[trust]\nmax_bans_per_node_per_minute = 1000000\n";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    require_root();
    let started = Instant::now();
    progress("building 11 test hosts");
    let cluster = Cluster::new("zmqbench", NFT_HOSTS + 1);
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("banshare.toml");
    fs::write(&config, CONFIG).unwrap();
    let counts = Counts::from_env();
    if counts.zmq != ZMQ_BANS {
        progress(&format!(
            "{BANS_VAR}: {} bans per ZeroMQ row, {} with `banshare ban`, {} per file row (a short run)",
            counts.zmq, counts.zmq_cli, counts.file
        ));
    }
    let bench = Bench {
        cluster: &cluster,
        work: work.path(),
        config: &config,
        counts,
    };
    let events = Events::new();
    let _monitors = events.start_nft_monitors(&cluster, NFT_HOSTS);
    let mut rows = Vec::new();
    rows.extend(bench.zmq_rows(&events));
    rows.extend(bench.file_rows(&events));
    let table = table(&rows);
    eprintln!(
        "\n==== table ({:.0} s in all) ====\n",
        started.elapsed().as_secs_f64()
    );
    println!("{table}");
}

fn progress(message: &str) {
    eprintln!("[zmq bench] {message}");
}

/// Runs `command`, a `banshare` (perhaps in a test host), to ban `addr` as
/// node `node` on `log`, as fail2ban's action would. It has no ACK time to
/// report (`None`): the process's exit is all it says.
fn ban(
    mut command: Command,
    addr: Ipv4Addr,
    node: &str,
    log: &std::ffi::OsStr,
    spool: &Path,
) -> Option<Instant> {
    let out = command
        .args(["--config", "/dev/null", "--quiet", "ban"])
        .arg(addr.to_string())
        .args(["--port", "22", "--jail", "sshd", "--bantime", "3600"])
        .args(["--node", node, "--log"])
        .arg(log)
        .arg("--spool-dir")
        .arg(spool)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "banshare ban failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    None
}

struct Bench<'a> {
    cluster: &'a Cluster,
    work: &'a Path,
    config: &'a Path,
    counts: Counts,
}

impl Bench<'_> {
    fn url(&self) -> String {
        format!("zmq+tcp://{}:5678", self.cluster.fileserver_ip())
    }

    /// The publisher, 10 then 100 subscribers.
    fn zmq_rows(&self, events: &Events) -> Vec<Row> {
        let mut rows = Vec::new();
        let publisher = self.start_publisher();
        let mut nft: Vec<Daemon> = (0..NFT_HOSTS)
            .map(|i| self.start_watcher(i, "nftables", &self.url(), &format!("zn{i}"), None))
            .collect();
        let sender = ReqClient::start(self.cluster, NFT_HOSTS, self.cluster.fileserver_ip());
        let template = self.template();
        let mut submit = |addr: Ipv4Addr| sender.submit(&template, addr);
        let all: Vec<usize> = (0..NFT_HOSTS).collect();
        warm_up(
            events,
            &all,
            net_addr(20, 255, 1),
            &mut submit,
            START_DEADLINE,
        );
        progress("10 nftables watchers up");
        let before = cpu_of(&publisher, &nft, &[]);
        let t = Instant::now();
        let m = measure(events, &all, 21, self.counts.zmq, ZMQ_GAP, &mut submit);
        let mut row = Row::new(
            "ZeroMQ, REQ client in the bench (1 record per request)",
            NFT_HOSTS,
            NFT_HOSTS,
            m,
        );
        row.cpu(before, cpu_of(&publisher, &nft, &[]), t.elapsed());
        rows.push(row);
        progress("ZeroMQ, 10 subscribers: done");

        let spool = self.work.join("cli-spool");
        let url = self.url();
        let mut cli_submit = |addr: Ipv4Addr| {
            let ns = self.cluster.node_ns(NFT_HOSTS);
            let command = self.cluster.command_in(ns, BANSHARE);
            ban(command, addr, "sender", url.as_ref(), &spool)
        };
        rows.push(Row::new(
            "ZeroMQ, one `banshare ban` process per ban",
            NFT_HOSTS,
            NFT_HOSTS,
            measure(
                events,
                &all,
                22,
                self.counts.zmq_cli,
                ZMQ_GAP,
                &mut cli_submit,
            ),
        ));
        progress("ZeroMQ, 10 subscribers, banshare ban: done");

        let light: Vec<Daemon> = (0..LOG_SUBSCRIBERS)
            .map(|j| {
                let id = NFT_HOSTS + j;
                let node = j % NFT_HOSTS;
                self.start_watcher(
                    node,
                    "log",
                    &self.url(),
                    &format!("zl{j}"),
                    Some((id, events)),
                )
            })
            .collect();
        let everyone: Vec<usize> = (0..NFT_HOSTS + LOG_SUBSCRIBERS).collect();
        warm_up(
            events,
            &everyone,
            net_addr(23, 255, 1),
            &mut submit,
            START_DEADLINE,
        );
        progress("100 subscribers up");
        let rss_mb: f64 = light
            .iter()
            .chain(&nft)
            .map(|d| rss_kb(d.0.id()) as f64 / 1024.0)
            .sum::<f64>()
            / (LOG_SUBSCRIBERS + NFT_HOSTS) as f64;
        progress(&format!("watchers' mean RSS: {rss_mb:.1} MB"));
        let before = cpu_of(&publisher, &nft, &light);
        let t = Instant::now();
        let m = measure(events, &everyone, 24, self.counts.zmq, ZMQ_GAP, &mut submit);
        let mut row = Row::new(
            "ZeroMQ, REQ client in the bench (1 record per request)",
            NFT_HOSTS + LOG_SUBSCRIBERS,
            NFT_HOSTS,
            m,
        );
        row.cpu(before, cpu_of(&publisher, &nft, &light), t.elapsed());
        rows.push(row);
        progress("ZeroMQ, 100 subscribers: done");
        drop(light);
        nft.clear();
        drop(sender);
        drop(publisher);
        rows
    }

    /// The same 10 nftables watchers following one log in the SFTP share,
    /// through sshfs and over SFTP.
    fn file_rows(&self, events: &Events) -> Vec<Row> {
        let log = self.cluster.create_sftp_file("newbans.log");
        let spool = self.work.join("file-spool");
        let mut append =
            |addr: Ipv4Addr| ban(Command::new(BANSHARE), addr, "server", log.as_ref(), &spool);
        let all: Vec<usize> = (0..NFT_HOSTS).collect();
        let mut rows = Vec::new();
        for (name, net) in [("sshfs", 30), ("SFTP", 32)] {
            let watchers: Vec<Daemon> = (0..NFT_HOSTS)
                .map(|i| {
                    let log = if name == "sshfs" {
                        self.cluster
                            .mount_sftp_share(i)
                            .join("newbans.log")
                            .display()
                            .to_string()
                    } else {
                        self.cluster.sftp_url("newbans.log")
                    };
                    self.start_watcher(i, "nftables", &log, &format!("{name}{i}"), None)
                })
                .collect();
            warm_up(
                events,
                &all,
                net_addr(net, 255, 1),
                &mut append,
                START_DEADLINE,
            );
            rows.push(Row::new(
                if name == "sshfs" {
                    "sshfs mount, poll 250 ms; `banshare ban` on the server's disk"
                } else {
                    "SFTP, no mount, poll 250 ms; `banshare ban` on the server's disk"
                },
                NFT_HOSTS,
                NFT_HOSTS,
                measure(
                    events,
                    &all,
                    net + 1,
                    self.counts.file,
                    FILE_GAP,
                    &mut append,
                ),
            ));
            progress(&format!("{name}, 10 watchers: done"));
            drop(watchers);
        }
        rows
    }

    fn start_publisher(&self) -> Daemon {
        let ip = self.cluster.fileserver_ip();
        let child = self
            .cluster
            .command_in(self.cluster.fileserver_ns(), BANSHARE)
            .arg("--config")
            .arg(self.config)
            .args(["--quiet", "publisher", "--node", "pub"])
            .arg("--data-dir")
            .arg(self.work.join("publisher"))
            .arg("--bind")
            .arg(ip.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(self.work.join("publisher.err")).unwrap())
            .spawn()
            .unwrap();
        let publisher = Daemon(child);
        let up = wait_until(START_DEADLINE, || {
            self.cluster
                .can_connect(self.cluster.node_ns(NFT_HOSTS), ip, 5678)
        });
        assert!(up, "the publisher never listened");
        publisher
    }

    /// `banshare watch` in node `node`; a log-backend watcher's `ban` lines
    /// go to `events` as subscriber `id`.
    fn start_watcher(
        &self,
        node: usize,
        backend: &str,
        log: &str,
        name: &str,
        reports: Option<(usize, &Events)>,
    ) -> Daemon {
        let dir = self.work.join(name);
        fs::create_dir_all(&dir).unwrap();
        let mut command = self
            .cluster
            .command_in(self.cluster.node_ns(node), BANSHARE);
        command
            .arg("--config")
            .arg(self.config)
            .args(["--quiet", "watch", "--backend", backend, "--node", name])
            .args(["--log", log]);
        if log.starts_with("sftp://") {
            command
                .arg("--identity")
                .arg(self.cluster.sftp_identity())
                .arg("--known-hosts")
                .arg(self.cluster.known_hosts());
        }
        let mut child = command
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .stdin(Stdio::null())
            .stdout(if reports.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(File::create(dir.join("watch.err")).unwrap())
            .spawn()
            .unwrap();
        if let Some((id, events)) = reports {
            let stdout = child.stdout.take().unwrap();
            let tx = events.sender();
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let at = Instant::now();
                    if let Some(addr) = line
                        .strip_prefix("ban ")
                        .and_then(|r| r.split(' ').next())
                        .and_then(|a| a.parse().ok())
                    {
                        let _ = tx.send((id, addr, at));
                    }
                }
            });
        }
        Daemon(child)
    }

    /// A record as `banshare ban` makes it (to a local file), to submit
    /// with other addresses, times and ids.
    fn template(&self) -> Record {
        let log = self.work.join("template.log");
        // banshare appends to a log; it never creates one.
        fs::write(&log, "").unwrap();
        support::run_ok(
            Command::new(BANSHARE)
                .args(["--config", "/dev/null", "--quiet", "ban", "192.0.2.1"])
                .args(["--port", "22", "--jail", "sshd", "--bantime", "3600"])
                .args(["--node", "sender", "--log"])
                .arg(&log)
                .arg("--spool-dir")
                .arg(self.work.join("template-spool")),
        );
        let text = fs::read(&log).unwrap();
        record::parse(&text).expect("banshare ban wrote a record")
    }
}

/// CPU seconds (user and system) used so far by the publisher, the
/// nftables watchers and the log watchers, each with its reaped children
/// (the nftables backend runs `nft`).
fn cpu_of(publisher: &Daemon, nft: &[Daemon], light: &[Daemon]) -> Cpu {
    let own = |ds: &[Daemon]| {
        ds.iter()
            .map(|d| cpu_with_children(d.0.id()).0)
            .sum::<f64>()
    };
    let children = |ds: &[Daemon]| {
        ds.iter()
            .map(|d| cpu_with_children(d.0.id()).1)
            .sum::<f64>()
    };
    let (publisher, _) = cpu_with_children(publisher.0.id());
    Cpu {
        publisher,
        nft: own(nft),
        nft_children: children(nft),
        light: own(light) + children(light),
    }
}

#[derive(Clone, Copy, Default)]
struct Cpu {
    publisher: f64,
    /// The nftables watchers themselves.
    nft: f64,
    /// The `nft` processes they ran.
    nft_children: f64,
    light: f64,
}

/// utime + stime, and cutime + cstime (reaped children), of
/// `/proc/PID/stat`, in seconds.
fn cpu_with_children(pid: u32) -> (f64, f64) {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    // After the command name (in parentheses): state is field 3, utime 14.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks = |r: std::ops::Range<usize>| {
        fields[r]
            .iter()
            .map(|f| f.parse::<u64>().unwrap())
            .sum::<u64>() as f64
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11..13) / per_second, ticks(13..15) / per_second)
}

fn rss_kb(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn net_addr(net: u8, hi: u8, lo: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, net, hi, lo)
}

// ---------------------------------------------------------------------------
// Submitting over ZeroMQ
// ---------------------------------------------------------------------------

/// A REQ socket to the publisher, on a thread of its own inside a test
/// host's network namespace (libzmq's I/O thread, started from it, stays
/// there too). Each request is one record; the reply must be `OK`.
struct ReqClient {
    requests: Option<Sender<String>>,
    replies: Receiver<Result<Instant, String>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ReqClient {
    fn start(cluster: &Cluster, node: usize, publisher: Ipv4Addr) -> ReqClient {
        let ns = PathBuf::from("/run/netns").join(cluster.node_ns(node));
        let endpoint = format!("tcp://{publisher}:5678");
        let (requests, inbox) = mpsc::channel::<String>();
        let (outbox, replies) = mpsc::channel();
        let thread = thread::spawn(move || {
            let netns = File::open(&ns).unwrap();
            // SAFETY: setns(2) on a file we hold open; it changes only this
            // thread's network namespace.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let context = zmq::Context::new();
            let socket = context.socket(zmq::REQ).unwrap();
            socket.set_linger(0).unwrap();
            socket.set_rcvtimeo(5000).unwrap();
            socket.connect(&endpoint).unwrap();
            for line in inbox {
                let reply = socket
                    .send(line.as_bytes(), 0)
                    .and_then(|()| socket.recv_bytes(0))
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        if r.starts_with(b"OK ") {
                            Ok(Instant::now())
                        } else {
                            Err(String::from_utf8_lossy(&r).into_owned())
                        }
                    });
                let failed = reply.is_err();
                let _ = outbox.send(reply);
                if failed {
                    return;
                }
            }
        });
        ReqClient {
            requests: Some(requests),
            replies,
            thread: Some(thread),
        }
    }

    /// Submits `template` for `addr`, fresh time and id; returns when the
    /// publisher acknowledged it.
    fn submit(&self, template: &Record, addr: Ipv4Addr) -> Option<Instant> {
        let mut record = template.clone();
        record.target = Target::Addr(IpAddr::V4(addr));
        record.fields.ts = Some(chrono::Utc::now());
        record.fields.id = Some(RecordId::random().unwrap());
        self.requests
            .as_ref()
            .unwrap()
            .send(record.to_string())
            .unwrap();
        match self.replies.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(at)) => Some(at),
            Ok(Err(e)) => panic!("the publisher refused {addr}: {e}"),
            Err(e) => panic!("no reply for {addr}: {e}"),
        }
    }
}

impl Drop for ReqClient {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Who applied what, when: the ZeroMQ bench's own part (the rest: common/applied.rs)
// ---------------------------------------------------------------------------

impl Seen {
    /// Every report of `addr` among subscribers `who` (all reported).
    fn each_of<'a>(
        &'a self,
        addr: Ipv4Addr,
        who: &'a HashSet<usize>,
    ) -> impl Iterator<Item = Instant> + 'a {
        let got = &self.by_addr[&addr];
        who.iter().map(move |w| got[w])
    }

    /// The last report of `addr` among subscribers `who` (all reported).
    fn last_of(&self, addr: Ipv4Addr, who: std::ops::Range<usize>) -> Instant {
        let got = &self.by_addr[&addr];
        who.map(|w| got[&w]).max().unwrap()
    }
}

struct Measured {
    /// Submission to the last subscriber's report.
    last: Vec<Duration>,
    /// Submission to each subscriber's report: one per (ban, subscriber),
    /// the usual meaning of submit-to-applied latency.
    each: Vec<Duration>,
    /// Submission to the first subscriber's report.
    first: Vec<Duration>,
    /// Submission to the last nftables host's element.
    last_nft: Vec<Duration>,
    /// Submission to the publisher's ACK (the REQ client only).
    acked: Vec<Duration>,
    missed: usize,
}

/// Submits `count` bans to 10.<net>.x.y, each once the previous one was
/// applied everywhere (or its deadline passed) and `gap` more went by.
fn measure(
    events: &Events,
    who: &[usize],
    net: u8,
    count: usize,
    gap: Duration,
    submit: &mut dyn FnMut(Ipv4Addr) -> Option<Instant>,
) -> Measured {
    let who: HashSet<usize> = who.iter().copied().collect();
    let mut seen = Seen::default();
    let mut m = Measured {
        last: Vec::new(),
        each: Vec::new(),
        first: Vec::new(),
        last_nft: Vec::new(),
        acked: Vec::new(),
        missed: 0,
    };
    for i in 0..count {
        drain(events, &mut seen, Instant::now() + gap);
        let addr = net_addr(net, (i / 250) as u8, (1 + i % 250) as u8);
        let start = Instant::now();
        if let Some(ack) = submit(addr) {
            m.acked.push(ack - start);
        }
        match wait_all(events, &mut seen, addr, &who, start + BAN_DEADLINE) {
            Some((first, last)) => {
                m.first.push(first.saturating_duration_since(start));
                m.last.push(last.saturating_duration_since(start));
                m.each.extend(
                    seen.each_of(addr, &who)
                        .map(|at| at.saturating_duration_since(start)),
                );
                let nft = seen.last_of(addr, 0..NFT_HOSTS);
                m.last_nft.push(nft.saturating_duration_since(start));
            }
            None => m.missed += 1,
        }
    }
    m
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

struct Row {
    how: &'static str,
    subscribers: usize,
    nft: usize,
    m: Measured,
    /// CPU used during the row, and its wall time.
    used: Option<(Cpu, Duration)>,
}

impl Row {
    fn new(how: &'static str, subscribers: usize, nft: usize, m: Measured) -> Row {
        Row {
            how,
            subscribers,
            nft,
            m,
            used: None,
        }
    }

    fn cpu(&mut self, before: Cpu, after: Cpu, wall: Duration) {
        let used = Cpu {
            publisher: after.publisher - before.publisher,
            nft: after.nft - before.nft,
            nft_children: after.nft_children - before.nft_children,
            light: after.light - before.light,
        };
        self.used = Some((used, wall));
    }
}

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| transport, submitted by | subscribers (nftables) | bans | p50 ms | p90 ms | p99 ms | max ms | each application p50 / p99 ms | first subscriber p50 ms | last nftables host p50 / p99 ms | ACK p50 / p99 ms | missed (5 s) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let mut last = r.m.last.clone();
        let mut first = r.m.first.clone();
        let mut acked = r.m.acked.clone();
        let mut last_nft = r.m.last_nft.clone();
        let mut each = r.m.each.clone();
        last_nft.sort();
        each.sort();
        last.sort();
        first.sort();
        acked.sort();
        let ack = if acked.is_empty() {
            "-".to_owned()
        } else {
            format!("{} / {}", ms(&acked, 0.5), ms(&acked, 0.99))
        };
        t += &format!(
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {} | {} |\n",
            r.how,
            r.subscribers,
            r.nft,
            last.len() + r.m.missed,
            ms(&last, 0.5),
            ms(&last, 0.9),
            ms(&last, 0.99),
            ms(&last, 1.0),
            ms(&each, 0.5),
            ms(&each, 0.99),
            ms(&first, 0.5),
            ms(&last_nft, 0.5),
            ms(&last_nft, 0.99),
            ack,
            r.m.missed
        );
    }
    t += "\n| transport, subscribers | wall s | publisher CPU ms per ban | 10 nftables watchers' CPU ms per ban: watchers + their `nft` runs | log watchers' CPU ms per ban: all / each | cores busy with these |\n\
          |---|---:|---:|---:|---:|---:|\n";
    for r in rows {
        let Some((cpu, wall)) = r.used else { continue };
        let bans = (r.m.last.len() + r.m.missed) as f64;
        let per_ban = |s: f64| format!("{:.2}", s * 1000.0 / bans);
        t += &format!(
            "| ZeroMQ, {} | {:.1} | {} | {} + {} | {} / {} | {:.2} |\n",
            r.subscribers,
            wall.as_secs_f64(),
            per_ban(cpu.publisher),
            per_ban(cpu.nft),
            per_ban(cpu.nft_children),
            per_ban(cpu.light),
            match r.subscribers - r.nft {
                0 => "-".to_owned(),
                light => format!("{:.3}", cpu.light * 1000.0 / bans / light as f64),
            },
            (cpu.publisher + cpu.nft + cpu.nft_children + cpu.light) / wall.as_secs_f64()
        );
    }
    t
}
