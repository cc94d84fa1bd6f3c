//! The NATS JetStream transport at scale (issue 15): publish-to-applied
//! latency at 10, 100 and 1,000 watchers with the servers' CPU and memory,
//! and publish throughput from 10 nodes.
//!
//! One cluster of test hosts (network namespaces on one bridge): a
//! 3-server NATS cluster (Debian's nats-server, JetStream, at .2-.4, as
//! `tests/support/nats.rs` starts it; no authentication and no TLS, or
//! with `BANSHARE_BENCH_NATS_SECURE=1` credentials files and TLS) holding
//! stream `BANS` made by `banshare nats init --replicas 3`; nodes 0-9 run
//! one `banshare watch --backend nftables` each; node 10 publishes; nodes
//! 11 and up each run one consumer process (`client.rs`).
//!
//! **(a) Latency.** A ban counts as applied on a nftables host when `nft
//! monitor new elements` there shows its element (the kernel pushes it,
//! as benches/watch.rs and benches/zmq.rs measure it), and on a consumer
//! process when every consumer in it was handed the record. A latency runs
//! from just before the publish to the moment the **last** watcher or
//! consumer reported it; the next ban is published 30 ms after that (or
//! after a 5 s deadline, counted as missed), so each is measured alone,
//! as in the ZeroMQ bench. Publishing: a long-lived JetStream client in
//! this bench, on a thread inside node 10's namespace, one record per
//! publish as `banshare ban` makes it (fresh id and time, the id as
//! `Nats-Msg-Id`) on `banshare.BANS.sender`, waiting for the stream's
//! acknowledgement (the ACK column); and at the first size also one
//! `banshare ban ADDR --log nats://...` process per ban in node 10, which
//! is what fail2ban's action runs (process start, connect, publish, ack).
//!
//! Watchers beyond the 10 real ones are consumers in consumer processes,
//! each what a banshare watcher's feed is to the servers: its own
//! connection, an ordered push consumer from its own position (the
//! stream's start: it reads every record of the run, and must be handed
//! every sequence once), and the position kept by itself. The servers'
//! CPU (`/proc/PID/stat`) is taken over each measured stretch and over an
//! idle stretch before it, their memory (VmRSS, VmHWM) at its end.
//!
//! **(b) Throughput.** The 10 watcher hosts each publish a batch of
//! `BATCH` records on a fixed schedule that offers `RATE` records per
//! second in all, for `SECS` seconds; a batch starts at its slot, or when
//! that sender's previous batch ended. Two rows: `banshare ban -` runs
//! (node `senderK`: process start, connect, publish, acknowledgements,
//! as a node shares a storm), then a long-lived JetStream client per host
//! in this bench that publishes each batch at once and takes the
//! acknowledgements as they come (the stream's own capacity). Achieved:
//! records acknowledged per second, from the first batch's start to the
//! last acknowledgement. Checked: every `ban -` exits 0 and spools
//! nothing, the stream grew by exactly the records sent, and every
//! watcher read and applied each of them once (`status.json`'s
//! `lines_read` and `applied`) and holds each in its nftables set.
//!
//! **sshfs, in the same run.** First, while their sets are empty, the same 10 hosts follow one log in
//! the file server's SFTP share through sshfs mounts (default polling:
//! the log's size every 50 ms; the nftables backend), each ban appended
//! with `banshare ban` on the file server's own disk, measured as in (a)
//! with 700 ms between bans (as benches/zmq.rs): the file transport's
//! figure beside NATS's.
//!
//! `cargo bench --bench nats` (as root), or name parts: `-- latency`,
//! `-- throughput`, `-- sshfs`. Knobs (defaults are the full sizes):
//!
//! - `BANSHARE_BENCH_WATCHERS` (default `10,100,1000`): watcher counts,
//!   each at least 10 (the 10 real watchers, the rest consumers);
//! - `BANSHARE_BENCH_BANS` (default 500): bans per latency row (the
//!   `banshare ban` row has a fifth of them);
//! - `BANSHARE_BENCH_CONSUMER_PROCS` (default 10): consumer processes the
//!   consumers are spread over, one per test host;
//! - `BANSHARE_BENCH_IDLE_SECS` (default 10): the idle stretch per row;
//! - `BANSHARE_BENCH_RATE` (default 10000), `BANSHARE_BENCH_SECS`
//!   (default 10), `BANSHARE_BENCH_BATCH` (default 500): (b)'s offered
//!   records per second, for how long, and records per `ban -` run;
//! - `BANSHARE_BENCH_ACK_TIMEOUT_MS` (default: not set, the product's
//!   15 s): `append.lock_timeout`, how long a `ban` run waits for the
//!   stream's acknowledgements before it spools;
//! - `BANSHARE_BENCH_NATS_SECURE=1`: every client logs in with a
//!   credentials file (user JWT and seed, one user for all) over TLS with
//!   the servers verified, as docs/deploy.md sets NATS up; otherwise no
//!   authentication and no TLS.
//!
//! Prints Markdown tables for docs/benchmarks.md on stdout and progress on
//! stderr. Like the other benches it does nothing without `--bench`, so
//! `cargo test --benches` stays fast.

#[path = "common/applied.rs"]
mod applied;
#[path = "nats/client.rs"]
mod client;
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use applied::{Events, Seen, drain, ms, wait_all, warm_up};
use banshare::record::{self, Record, RecordId, Target};
use support::cluster::{Cluster, require_root};
use support::nats::{CLIENT_PORT, NatsOptions, NatsServers, ProcessStats};
use support::{BANSHARE, Daemon, wait_until};

/// Watchers applying to nftables, one per host (nodes 0-9); node
/// `NFT_HOSTS` publishes; consumer processes run on the nodes after it.
const NFT_HOSTS: usize = 10;
const STREAM: &str = "BANS";
/// After the last subscriber applied a ban, before the next.
const GAP: Duration = Duration::from_millis(30);
/// The sshfs row polls (every 50 ms by default): a longer gap puts each ban at a
/// random phase of the polls (as benches/zmq.rs).
const FILE_GAP: Duration = Duration::from_millis(700);
/// A ban not applied everywhere by then is counted as missed.
const BAN_DEADLINE: Duration = Duration::from_secs(5);
const START_DEADLINE: Duration = Duration::from_secs(180);
/// (b): how long every watcher may take to apply the last record.
const APPLY_DEADLINE: Duration = Duration::from_secs(180);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == client::CONSUMER_MODE) {
        client::run_consumers(&args[at + 1..]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    require_root();
    let only: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| *o == name);
    let sizes = Sizes::from_env();
    let started = Instant::now();
    let hosts = NFT_HOSTS + 1 + sizes.consumer_procs;
    progress(&format!(
        "building {hosts} test hosts and a 3-server NATS cluster"
    ));
    let cluster = Cluster::new("natsbench", hosts);
    // With BANSHARE_BENCH_NATS_SECURE, as docs/deploy.md sets it up:
    // every client logs in with a credentials file (one user for all),
    // over TLS with the servers verified.
    let options = match sizes.secure {
        true => NatsOptions::cluster().with_credentials(1).with_tls(),
        false => NatsOptions::cluster(),
    };
    let nats = NatsServers::start_on(&cluster, "natsbench", options);
    let work = tempfile::tempdir().unwrap();
    let bench = Bench {
        cluster: &cluster,
        nats: &nats,
        work: work.path(),
        config: work.path().join("banshare.toml"),
        sizes,
    };
    bench.init_stream();
    // The sshfs row first, on hosts whose nftables sets are still empty
    // and with no NATS watcher beside its own: after (b) had put 100,000
    // elements in each host's set, its warm-up ban was not seen in time.
    let sshfs = wanted("sshfs").then(|| {
        let events = Events::new();
        let _monitors = events.start_nft_monitors(&cluster, NFT_HOSTS);
        bench.sshfs_row(&events)
    });
    let events = Events::new();
    let monitors = events.start_nft_monitors(&cluster, NFT_HOSTS);
    let watchers: Vec<Daemon> = (0..NFT_HOSTS).map(|i| bench.start_watcher(i)).collect();
    let mut rows = Vec::new();
    if wanted("latency") {
        rows = bench.latency_rows(&events);
    }
    drop(monitors);
    let throughput = wanted("throughput").then(|| bench.throughput(&watchers));
    drop(watchers);
    rows.extend(sshfs);
    let mut out = String::new();
    if !rows.is_empty() {
        out += &latency_tables(&rows, &bench.sizes);
    }
    out += &throughput.unwrap_or_default();
    eprintln!(
        "\n==== tables ({:.0} s in all; load average at the end: {}) ====\n",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    println!("{out}");
}

fn progress(message: &str) {
    eprintln!("[nats bench] {message}");
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

fn env_number(name: &str, default: &str) -> usize {
    let text = env_or(name, default);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name} must be a number, not {text:?}"))
}

struct Sizes {
    watchers: Vec<usize>,
    bans: usize,
    consumer_procs: usize,
    idle: Duration,
    rate: usize,
    secs: usize,
    batch: usize,
    /// `append.lock_timeout` (the acknowledgement timeout) in ms, if not
    /// the default.
    ack_timeout_ms: Option<usize>,
    /// Credentials files and TLS, as docs/deploy.md sets NATS up.
    secure: bool,
}

impl Sizes {
    fn from_env() -> Sizes {
        let watchers: Vec<usize> = env_or("BANSHARE_BENCH_WATCHERS", "10,100,1000")
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("BANSHARE_BENCH_WATCHERS: {n:?} is no number"))
            })
            .collect();
        assert!(
            watchers.iter().all(|&n| n >= NFT_HOSTS),
            "every watcher count is at least the {NFT_HOSTS} real watchers"
        );
        Sizes {
            watchers,
            bans: env_number("BANSHARE_BENCH_BANS", "500").max(1),
            consumer_procs: env_number("BANSHARE_BENCH_CONSUMER_PROCS", "10").max(1),
            idle: Duration::from_secs(env_number("BANSHARE_BENCH_IDLE_SECS", "10") as u64),
            rate: env_number("BANSHARE_BENCH_RATE", "10000").max(1),
            secs: env_number("BANSHARE_BENCH_SECS", "10").max(1),
            batch: env_number("BANSHARE_BENCH_BATCH", "500").max(1),
            ack_timeout_ms: std::env::var("BANSHARE_BENCH_ACK_TIMEOUT_MS")
                .ok()
                .map(|_| env_number("BANSHARE_BENCH_ACK_TIMEOUT_MS", "").max(2)),
            secure: env_or("BANSHARE_BENCH_NATS_SECURE", "") == "1",
        }
    }
}

impl Sizes {
    /// How clients reach the servers, for the tables' titles.
    fn security(&self) -> &'static str {
        match self.secure {
            true => "credentials files, TLS",
            false => "no authentication, no TLS",
        }
    }
}

struct Bench<'a> {
    cluster: &'a Cluster,
    nats: &'a NatsServers,
    work: &'a Path,
    /// The watchers' and senders' configuration.
    config: PathBuf,
    sizes: Sizes,
}

impl Bench<'_> {
    /// `nats://` (`nats+tls://` with TLS) with every server, stream
    /// [`STREAM`].
    fn log_url(&self) -> String {
        let servers: Vec<String> = (0..self.nats.server_count())
            .map(|i| format!("{}:{CLIENT_PORT}", self.nats.server_ip(i)))
            .collect();
        let scheme = if self.sizes.secure {
            "nats+tls"
        } else {
            "nats"
        };
        format!("{scheme}://{}/{STREAM}", servers.join(","))
    }

    /// What the bench's own clients log in with.
    fn secure(&self) -> client::Secure {
        client::Secure {
            credentials: self
                .nats
                .users()
                .first()
                .and_then(|u| u.credentials_file.clone()),
            ca: self.nats.ca_file(),
        }
    }

    /// Writes the configuration and makes the stream with 3 replicas, as
    /// docs/deploy.md says an administrator does.
    fn init_stream(&self) {
        // A stream of bans from one node is above the default rate limit;
        // the rest is the product's defaults (the acknowledgement timeout
        // is `append.lock_timeout`, 15 s), unless the bench is told one.
        let append = match self.sizes.ack_timeout_ms {
            Some(ms) => format!(
                "[append]\nlock_timeout = \"{ms}ms\"\nstale_lock = \"{}ms\"\n",
                ms / 2
            ),
            None => String::new(),
        };
        let secure = self.secure();
        let mut nats = String::new();
        if let Some(credentials) = &secure.credentials {
            nats += &format!("credentials_file = \"{}\"\n", credentials.display());
        }
        if let Some(ca) = &secure.ca {
            nats += &format!("ca_file = \"{}\"\n", ca.display());
        }
        if !nats.is_empty() {
            nats = format!("[nats]\n{nats}");
        }
        let config = format!(
            "[common]\nlog = \"{}\"\n{append}\
             [trust]\nmax_bans_per_node_per_minute = 1000000\n{nats}",
            self.log_url()
        );
        fs::write(&self.config, config).unwrap();
        support::run_ok(
            self.cluster
                .command_in(self.cluster.node_ns(NFT_HOSTS), BANSHARE)
                .arg("--config")
                .arg(&self.config)
                .args(["nats", "init", "--replicas", "3"]),
        );
        assert!(
            self.nats.stream_leader(STREAM).is_some(),
            "the stream has no leader after init"
        );
    }

    /// The records the stream holds, as its leader says.
    fn stream_messages(&self) -> u64 {
        let leader = self.nats.stream_leader(STREAM).expect("a stream leader");
        self.nats
            .stored_messages(leader, STREAM)
            .expect("the leader's count")
    }

    /// `banshare watch --backend nftables` in node `node`, once its table
    /// is there.
    fn start_watcher(&self, node: usize) -> Daemon {
        let dir = self.watcher_dir(node);
        fs::create_dir_all(&dir).unwrap();
        let child = self
            .cluster
            .command_in(self.cluster.node_ns(node), BANSHARE)
            .arg("--config")
            .arg(&self.config)
            .args(["--quiet", "watch", "--backend", "nftables"])
            .args(["--node", &format!("node{node}")])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("watch.err")).unwrap())
            .spawn()
            .unwrap();
        let watcher = Daemon(child);
        let ready = wait_until(START_DEADLINE, || {
            self.cluster
                .nft(node, &["list", "table", "inet", "banshare"])
                .is_some()
        });
        assert!(ready, "node{node}'s watcher never made its nftables table");
        watcher
    }

    /// The sshfs row, for comparison in the same run: the same 10 hosts
    /// and nftables backend following one log in the file server's SFTP
    /// share through sshfs mounts (default polling), each ban appended with
    /// `banshare ban` on the file server's own disk, as benches/zmq.rs
    /// measures it; 700 ms after each ban was applied everywhere, so that
    /// bans fall at every phase of the polls.
    fn sshfs_row(&self, events: &Events) -> Row {
        let log = self.cluster.create_sftp_file("newbans.log");
        let config = self.work.join("sshfs.toml");
        fs::write(&config, "[trust]\nmax_bans_per_node_per_minute = 1000000\n").unwrap();
        let spool = self.work.join("sshfs-spool");
        let watchers: Vec<Daemon> = (0..NFT_HOSTS)
            .map(|i| {
                let mount = self.cluster.mount_sftp_share(i).join("newbans.log");
                let dir = self.work.join(format!("sshfs{i}"));
                fs::create_dir_all(&dir).unwrap();
                let child = self
                    .cluster
                    .command_in(self.cluster.node_ns(i), BANSHARE)
                    .arg("--config")
                    .arg(&config)
                    .args(["--quiet", "watch", "--backend", "nftables"])
                    .args(["--node", &format!("sshfs{i}"), "--log"])
                    .arg(&mount)
                    .arg("--state-dir")
                    .arg(dir.join("state"))
                    .arg("--spool-dir")
                    .arg(dir.join("spool"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(File::create(dir.join("watch.err")).unwrap())
                    .spawn()
                    .unwrap();
                Daemon(child)
            })
            .collect();
        let log = log.display().to_string();
        let mut append = |addr: Ipv4Addr| ban(Command::new(BANSHARE), &config, addr, &log, &spool);
        let all: Vec<usize> = (0..NFT_HOSTS).collect();
        warm_up(
            events,
            &all,
            net_addr(40, 255, 1),
            &mut append,
            START_DEADLINE,
        );
        let count = (self.sizes.bans * 40 / 500).max(5);
        let m = measure(events, &all, 41, count, FILE_GAP, &mut append);
        progress("sshfs, 10 watchers: done");
        drop(watchers);
        Row {
            how: "sshfs mount, default polling (the size every 50 ms); `banshare ban` on the file server's disk",
            watchers: NFT_HOSTS,
            procs: 0,
            m,
            servers: None,
            checked: Checked::default(),
        }
    }

    fn watcher_dir(&self, node: usize) -> PathBuf {
        self.work.join(format!("node{node}"))
    }

    /// (a): for each watcher count, consumer processes for the consumers
    /// beyond the 10 real watchers, an idle stretch, then the bans.
    fn latency_rows(&self, events: &Events) -> Vec<Row> {
        let publisher = client::Publisher::start(
            self.cluster.node_ns(NFT_HOSTS),
            self.nats.url_list(),
            self.secure(),
        );
        let template = self.template();
        let subject = format!("banshare.{STREAM}.sender");
        let mut publish = |addr: Ipv4Addr| {
            let (id, line) = record_line(&template, addr);
            Some(publisher.publish(&subject, &id, line))
        };
        let nft_hosts: Vec<usize> = (0..NFT_HOSTS).collect();
        warm_up(
            events,
            &nft_hosts,
            net_addr(20, 255, 1),
            &mut publish,
            START_DEADLINE,
        );
        progress("10 nftables watchers up");
        let mut rows = Vec::new();
        for (k, &watchers) in self.sizes.watchers.iter().enumerate() {
            let net = 21 + 2 * k as u8;
            let consumers = watchers - NFT_HOSTS;
            let procs = self.sizes.consumer_procs.min(consumers);
            let until = self.stream_messages();
            let mut group = ConsumerGroup::start(self, consumers, procs, until, events);
            let who: Vec<usize> = (0..NFT_HOSTS + procs).collect();
            warm_up(
                events,
                &who,
                net_addr(net, 255, 1),
                &mut publish,
                START_DEADLINE,
            );
            progress(&format!(
                "{watchers} watchers up: 10 nftables watchers and {consumers} consumers in {procs} processes"
            ));
            let idle_before = self.server_stats();
            thread::sleep(self.sizes.idle);
            let idle_after = self.server_stats();
            let before = self.server_stats();
            let t = Instant::now();
            let m = measure(events, &who, net, self.sizes.bans, GAP, &mut publish);
            let wall = t.elapsed();
            let after = self.server_stats();
            let checked = group.check(self.stream_messages());
            let consumer_rss_mb = group.rss_mb();
            rows.push(Row {
                how: "JetStream client in the bench (1 record per publish)",
                watchers,
                procs,
                m,
                servers: Some(ServerUse {
                    idle: cpu_delta(&idle_before, &idle_after),
                    idle_wall: self.sizes.idle,
                    busy: cpu_delta(&before, &after),
                    wall,
                    rss_mb: after.iter().map(|s| mb(s.rss_bytes)).collect(),
                    peak_mb: after.iter().map(|s| mb(s.peak_rss_bytes)).collect(),
                    consumer_rss_mb,
                }),
                checked,
            });
            progress(&format!("{watchers} watchers: done"));
            if k == 0 {
                let spool = self.work.join("cli-spool");
                let url = self.log_url();
                let mut cli = |addr: Ipv4Addr| {
                    let ns = self.cluster.node_ns(NFT_HOSTS);
                    let command = self.cluster.command_in(ns, BANSHARE);
                    ban(command, &self.config, addr, &url, &spool)
                };
                let m = measure(
                    events,
                    &who,
                    net + 1,
                    (self.sizes.bans / 5).max(5),
                    GAP,
                    &mut cli,
                );
                rows.push(Row {
                    how: "one `banshare ban` process per ban",
                    watchers,
                    procs,
                    m,
                    servers: None,
                    checked: group.check(self.stream_messages()),
                });
                progress(&format!("{watchers} watchers, banshare ban: done"));
            }
            group.stop();
        }
        rows
    }

    /// CPU and memory of the 3 servers now.
    fn server_stats(&self) -> Vec<ProcessStats> {
        (0..self.nats.server_count())
            .map(|i| self.nats.stats(i).expect("every server runs"))
            .collect()
    }

    /// A record as `banshare ban` makes it (to a local file), to publish
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

    /// (b): the 10 watcher hosts publish `RATE` records per second for
    /// `SECS` seconds, first with `banshare ban -` runs, then with the
    /// bench's own clients; every watcher must apply each record.
    fn throughput(&self, watchers: &[Daemon]) -> String {
        let mut t = format!(
            "### (b) Publish throughput: {NFT_HOSTS} nodes, 10 nftables watchers, {}\n\n\
             load average at the start: {}\n\n\
             | published by | offered records/s | records sent | batches (records each) | failed batches | batch ms p50 / max | publish seconds | achieved records/s | stored in the stream | every watcher read / applied / in its set | all applied after s (status.json, written each second) | servers' CPU s (s0/s1/s2) | 10 watchers' CPU s (their own + their `nft` runs) |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|\n",
            self.sizes.security(),
            load_average()
        );
        let mut notes = String::new();
        for via in [Via::BanCommand, Via::Client] {
            t += &self.throughput_row(via, watchers, &mut notes);
            progress(&format!("(b) {}: done", via.name()));
        }
        t + &notes
    }

    fn throughput_row(&self, via: Via, watchers: &[Daemon], notes: &mut String) -> String {
        let sizes = &self.sizes;
        let senders = NFT_HOSTS;
        let per_sender = sizes.rate * sizes.secs / senders;
        // Batch r of sender s starts at (r + s / senders) * interval.
        let interval =
            Duration::from_secs_f64(sizes.batch as f64 * senders as f64 / sizes.rate as f64);
        assert!(per_sender <= 250 * 250, "at most 62,500 records per sender");
        let base_messages = self.stream_messages();
        // status.json is written about once a second: wait until every
        // watcher says it read all the stream holds.
        let settled = wait_until(Duration::from_secs(120), || {
            (0..NFT_HOSTS).all(|i| self.applied(i).0 == base_messages)
        });
        assert!(
            settled,
            "the watchers never read the {base_messages} records before (b)"
        );
        let base: Vec<(u64, u64)> = (0..NFT_HOSTS).map(|i| self.applied(i)).collect();
        let base_set: Vec<usize> = (0..NFT_HOSTS)
            .map(|i| {
                self.cluster
                    .nft_set_len(self.cluster.node_ns(i), "banshare", "v4")
            })
            .collect();
        progress(&format!(
            "(b) {}: {senders} senders, {per_sender} records each in batches of {}, one every {:.0} ms",
            via.name(),
            sizes.batch,
            interval.as_secs_f64() * 1000.0
        ));
        let template = self.template();
        let before = self.server_stats();
        let watchers_before = watchers_cpu(watchers);
        let start = Instant::now() + Duration::from_millis(200);
        let mut runs: Vec<client::Batch> = Vec::new();
        thread::scope(|scope| {
            let senders: Vec<_> = (0..senders)
                .map(|s| {
                    let net = via.first_net() + s as u8;
                    let addrs: Vec<Ipv4Addr> = (0..per_sender)
                        .map(|i| net_addr(net, (i / 250) as u8, (1 + i % 250) as u8))
                        .collect();
                    let template = &template;
                    // Ten nodes do not publish in step: sender s's slots
                    // are a tenth of an interval after sender s - 1's.
                    let start = start + interval.mul_f64(s as f64 / senders as f64);
                    scope.spawn(move || match via {
                        Via::BanCommand => self.ban_batches(s, &addrs, interval, start),
                        Via::Client => {
                            let messages = addrs
                                .iter()
                                .map(|&addr| record_line(template, addr))
                                .collect();
                            client::pump(
                                self.cluster.node_ns(s),
                                self.nats.url_list(),
                                &self.secure(),
                                format!("banshare.{STREAM}.bench{s}"),
                                messages,
                                sizes.batch,
                                interval,
                                start,
                            )
                        }
                    })
                })
                .collect();
            for sender in senders {
                runs.extend(sender.join().expect("a sender panicked"));
            }
        });
        let first = runs.iter().map(|r| r.began).min().unwrap();
        let last = runs.iter().map(|r| r.ended).max().unwrap();
        let failures: Vec<&String> = runs
            .iter()
            .filter_map(|r| r.outcome.as_ref().err())
            .collect();
        // A batch starts late when the sender's previous one was still going.
        let late = runs.iter().filter(|r| r.late > interval / 10).count();
        let latest = runs.iter().map(|r| r.late).max().unwrap_or_default();
        let sent: usize = runs.iter().map(|r| r.records).sum();
        let publish_wall = last - first;
        let mut durations: Vec<Duration> = runs.iter().map(|r| r.ended - r.began).collect();
        durations.sort();
        let target = sent as u64;
        let applied_all = wait_until(APPLY_DEADLINE, || {
            (0..NFT_HOSTS).all(|i| {
                let (read, applied) = self.applied(i);
                read >= base[i].0 + target && applied >= base[i].1 + target
            })
        });
        let all_applied = first.elapsed();
        let after = self.server_stats();
        let watchers_after = watchers_cpu(watchers);
        let watchers_used = (
            watchers_after.0 - watchers_before.0,
            watchers_after.1 - watchers_before.1,
        );
        let stored = self.stream_messages() - base_messages;
        let mut per_watcher = Vec::new();
        for i in 0..NFT_HOSTS {
            let (read, applied) = self.applied(i);
            let in_set = self
                .cluster
                .nft_set_len(self.cluster.node_ns(i), "banshare", "v4")
                - base_set[i];
            per_watcher.push((read - base[i].0, applied - base[i].1, in_set));
        }
        let busy = cpu_delta(&before, &after);
        let uniform = per_watcher.iter().all(|w| *w == per_watcher[0]);
        let watcher_text = if uniform {
            let (r, a, s) = per_watcher[0];
            format!("{r} / {a} / {s} (all 10)")
        } else {
            per_watcher
                .iter()
                .map(|(r, a, s)| format!("{r}/{a}/{s}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if late > 0 {
            *notes += &format!(
                "\n{}: {late} of {} batches started more than a tenth of the interval after their slot \
                 (the sender's previous batch was still going), the latest by {:.0} ms.\n",
                via.name(),
                runs.len(),
                latest.as_secs_f64() * 1000.0
            );
        }
        for f in failures.iter().take(3) {
            *notes += &format!("\n{}: failed batch: {f}\n", via.name());
        }
        format!(
            "| {} | {} | {} | {} ({}) | {} | {} / {} | {:.2} | {:.0} | {} | {} | {} | {} | {:.2} ({:.2} + {:.2}) |\n",
            via.name(),
            sizes.rate,
            sent,
            runs.len(),
            sizes.batch,
            failures.len(),
            ms(&durations, 0.5),
            ms(&durations, 1.0),
            publish_wall.as_secs_f64(),
            sent as f64 / publish_wall.as_secs_f64(),
            stored,
            watcher_text,
            if applied_all {
                format!("{:.2}", all_applied.as_secs_f64())
            } else {
                format!("not in {} s", APPLY_DEADLINE.as_secs())
            },
            busy.iter()
                .map(|c| format!("{:.2}", c.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" / "),
            watchers_used.0 + watchers_used.1,
            watchers_used.0,
            watchers_used.1,
        )
    }

    /// Sender `s`'s `banshare ban -` runs of `batch` addresses each, run
    /// `r` started at `start + r * interval` (or when run `r - 1` ended).
    fn ban_batches(
        &self,
        s: usize,
        addrs: &[Ipv4Addr],
        interval: Duration,
        start: Instant,
    ) -> Vec<client::Batch> {
        let mut runs = Vec::new();
        for (r, chunk) in addrs.chunks(self.sizes.batch).enumerate() {
            let at = start + interval * r as u32;
            thread::sleep(at.saturating_duration_since(Instant::now()));
            let began = Instant::now();
            let outcome = self.ban_batch(s, chunk);
            runs.push(client::Batch {
                began,
                ended: Instant::now(),
                records: chunk.len(),
                outcome,
                late: began - at,
            });
        }
        runs
    }

    /// `banshare ban -` of `addrs` as node `senderS` in node `s`; Err with
    /// its stderr when it failed or spooled anything.
    fn ban_batch(&self, s: usize, addrs: &[Ipv4Addr]) -> Result<(), String> {
        let mut child = self
            .cluster
            .command_in(self.cluster.node_ns(s), BANSHARE)
            .arg("--config")
            .arg(&self.config)
            .args([
                "ban",
                "-",
                "--port",
                "22",
                "--jail",
                "sshd",
                "--bantime",
                "3600",
            ])
            .args(["--node", &format!("sender{s}")])
            .arg("--spool-dir")
            .arg(self.work.join(format!("sender{s}-spool")))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        stdin.write_all(text.as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !out.status.success() || stderr.contains("spool") {
            return Err(format!("exit {:?}: {stderr}", out.status.code()));
        }
        Ok(())
    }

    /// `lines_read` and `applied` of node `node`'s watcher's status.json.
    fn applied(&self, node: usize) -> (u64, u64) {
        let path = self.watcher_dir(node).join("state/status.json");
        let Ok(text) = fs::read_to_string(path) else {
            return (0, 0);
        };
        let Ok(status) = serde_json::from_str::<serde_json::Value>(&text) else {
            return (0, 0);
        };
        (
            status["lines_read"].as_u64().unwrap_or(0),
            status["applied"].as_u64().unwrap_or(0),
        )
    }
}

/// Runs `banshare ban ADDR --log URL` (perhaps in a test host), as
/// fail2ban's action would. No ACK time: the exit is all it says.
fn ban(
    mut command: Command,
    config: &Path,
    addr: Ipv4Addr,
    log: &str,
    spool: &Path,
) -> Option<Instant> {
    let out = command
        .arg("--config")
        .arg(config)
        .args(["--quiet", "ban"])
        .arg(addr.to_string())
        .args(["--port", "22", "--jail", "sshd", "--bantime", "3600"])
        .args(["--node", "sender", "--log", log])
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

/// How (b) publishes.
#[derive(Clone, Copy)]
enum Via {
    /// `banshare ban -` runs, one per batch, as a node shares a storm.
    BanCommand,
    /// A long-lived JetStream client per node in this bench, publishing
    /// each batch at once and taking the acknowledgements as they come.
    Client,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::BanCommand => "`banshare ban -`, one run per batch",
            Via::Client => "JetStream clients in the bench (pipelined)",
        }
    }

    /// Sender `s` bans 10.<first_net + s>.x.y.
    fn first_net(self) -> u8 {
        match self {
            Via::BanCommand => 100,
            Via::Client => 120,
        }
    }
}

/// `template` for `addr`, with a fresh time and id: the id and the line.
fn record_line(template: &Record, addr: Ipv4Addr) -> (String, String) {
    let mut record = template.clone();
    record.target = Target::Addr(IpAddr::V4(addr));
    record.fields.ts = Some(chrono::Utc::now());
    let id = RecordId::random().unwrap();
    record.fields.id = Some(id.clone());
    (id.to_string(), record.to_string())
}

fn net_addr(net: u8, hi: u8, lo: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, net, hi, lo)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn cpu_delta(before: &[ProcessStats], after: &[ProcessStats]) -> Vec<Duration> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.cpu.saturating_sub(b.cpu))
        .collect()
}

/// CPU seconds (user and system) the watchers used so far: their own,
/// and the children they reaped (the nftables backend runs `nft`).
fn watchers_cpu(watchers: &[Daemon]) -> (f64, f64) {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let seconds = |fields: &[&str]| -> f64 {
        let ticks: u64 = fields.iter().map(|f| f.parse::<u64>().unwrap()).sum();
        ticks as f64 / tick
    };
    watchers
        .iter()
        .filter_map(|d| fs::read_to_string(format!("/proc/{}/stat", d.0.id())).ok())
        .map(|stat| {
            // After the command name (in parentheses): state is field 3,
            // utime 14, stime 15, cutime 16, cstime 17.
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            (seconds(&fields[11..13]), seconds(&fields[13..15]))
        })
        .fold((0.0, 0.0), |(own, nft), (o, n)| (own + o, nft + n))
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Consumer processes
// ---------------------------------------------------------------------------

/// Consumer processes (this bench's binary in [`client::CONSUMER_MODE`]),
/// one per test host after the publisher's; process `p` reports as
/// subscriber `NFT_HOSTS + p`.
struct ConsumerGroup {
    children: Vec<(Child, ChildStdin)>,
    reports: Receiver<String>,
    consumers: usize,
}

impl ConsumerGroup {
    /// `consumers` consumers over `procs` processes, each ready once it
    /// read the stream up to sequence `until`.
    fn start(
        bench: &Bench,
        consumers: usize,
        procs: usize,
        until: u64,
        events: &Events,
    ) -> ConsumerGroup {
        let exe = std::env::current_exe().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (report_tx, reports) = mpsc::channel();
        let mut children = Vec::new();
        for p in 0..procs {
            let count = consumers / procs + usize::from(p < consumers % procs);
            let ns = bench.cluster.node_ns(NFT_HOSTS + 1 + p);
            let mut child = bench
                .cluster
                .command_in(ns, &exe)
                .arg(client::CONSUMER_MODE)
                .arg(bench.nats.url_list())
                .arg(STREAM)
                .arg(count.to_string())
                .arg(until.to_string())
                .args(bench.secure().args())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(File::create(bench.work.join(format!("consumers{p}.err"))).unwrap())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let stdin = child.stdin.take().unwrap();
            let (tx, ready_tx, report_tx) = (events.sender(), ready_tx.clone(), report_tx.clone());
            let id = NFT_HOSTS + p;
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let at = Instant::now();
                    if let Some(addr) = line.strip_prefix("seen ") {
                        if let Ok(addr) = addr.parse() {
                            let _ = tx.send((id, addr, at));
                        }
                    } else if line == "ready" {
                        let _ = ready_tx.send(p);
                    } else if line.starts_with("report ") {
                        let _ = report_tx.send(line);
                    }
                }
            });
            children.push((child, stdin));
        }
        let mut ready = 0;
        let deadline = Instant::now() + START_DEADLINE;
        while ready < procs {
            match ready_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(_) => ready += 1,
                Err(_) => panic!(
                    "{ready} of {procs} consumer processes caught up in {START_DEADLINE:?} \
                     (see consumers*.err in {})",
                    bench.work.display()
                ),
            }
        }
        ConsumerGroup {
            children,
            reports,
            consumers,
        }
    }

    /// Asks every process how its consumers did, once the stream holds
    /// `records`: each consumer must have been handed every record once.
    /// A summary for the table.
    fn check(&mut self, records: u64) -> Checked {
        let mut checked = Checked {
            consumers: self.consumers,
            ..Checked::default()
        };
        if self.children.is_empty() {
            return checked;
        }
        let caught_up = wait_until(Duration::from_secs(60), || {
            let reports = self.ask();
            reports.len() == self.children.len() && reports.iter().all(|r| r.min_last >= records)
        });
        let reports = self.ask();
        checked.caught_up = caught_up;
        for r in &reports {
            checked.made += r.made;
            checked.min_records = Some(
                checked
                    .min_records
                    .map_or(r.min_records, |m: u64| m.min(r.min_records)),
            );
            checked.max_records = checked.max_records.max(r.max_records);
            checked.skipped += r.skipped;
            checked.again += r.again;
            checked.errors += r.errors;
        }
        checked.records = records;
        checked
    }

    fn ask(&mut self) -> Vec<Report> {
        while self.reports.try_recv().is_ok() {}
        for (_, stdin) in &mut self.children {
            let _ = stdin.write_all(b"report\n");
            let _ = stdin.flush();
        }
        let mut reports = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reports.len() < self.children.len() {
            match self
                .reports
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => reports.push(Report::parse(&line)),
                Err(_) => break,
            }
        }
        reports
    }

    /// The consumer processes' resident memory, in all.
    fn rss_mb(&self) -> f64 {
        self.children
            .iter()
            .filter_map(|(c, _)| support::nats::process_stats(c.id()))
            .map(|s| mb(s.rss_bytes))
            .sum()
    }

    fn stop(mut self) {
        for (child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for ConsumerGroup {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One process's answer to `report`.
struct Report {
    made: usize,
    min_records: u64,
    max_records: u64,
    min_last: u64,
    skipped: u64,
    again: u64,
    errors: u64,
}

impl Report {
    fn parse(line: &str) -> Report {
        let n: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|w| w.parse().expect("a number in a report"))
            .collect();
        Report {
            made: n[1] as usize,
            min_records: n[2],
            max_records: n[3],
            min_last: n[4],
            skipped: n[5],
            again: n[6],
            errors: n[7],
        }
    }
}

/// How every consumer did over a row.
#[derive(Default, Clone)]
struct Checked {
    consumers: usize,
    made: usize,
    caught_up: bool,
    records: u64,
    min_records: Option<u64>,
    max_records: u64,
    skipped: u64,
    again: u64,
    errors: u64,
}

impl Checked {
    fn text(&self) -> String {
        if self.consumers == 0 {
            return "-".into();
        }
        let whole = self.made == self.consumers
            && self.caught_up
            && self.min_records == Some(self.records)
            && self.max_records == self.records
            && self.skipped == 0;
        format!(
            "{}: {} of {} consumers made, each handed {}-{} of {} records, {} skipped, {} again",
            if whole { "all" } else { "**NOT all**" },
            self.made,
            self.consumers,
            self.min_records.unwrap_or(0),
            self.max_records,
            self.records,
            self.skipped,
            self.again,
        )
    }
}

// ---------------------------------------------------------------------------
// Who applied what, when: the NATS bench's own part (the rest: common/applied.rs)
// ---------------------------------------------------------------------------

impl Seen {
    /// The last report of `addr` among subscribers `who` (all reported).
    fn last_of(&self, addr: Ipv4Addr, who: std::ops::Range<usize>) -> Instant {
        let got = &self.by_addr[&addr];
        who.map(|w| got[&w]).max().unwrap()
    }
}

struct Measured {
    /// Publish to the last subscriber's report.
    last: Vec<Duration>,
    /// Publish to the first subscriber's report.
    first: Vec<Duration>,
    /// Publish to the last nftables host's element.
    last_nft: Vec<Duration>,
    /// Publish to the last consumer process's report.
    last_consumer: Vec<Duration>,
    /// Publish to the stream's acknowledgement (the bench's client only).
    acked: Vec<Duration>,
    missed: usize,
}

/// Publishes `count` bans to 10.<net>.x.y, each once the previous one was
/// applied everywhere (or its deadline passed) and [`GAP`] more went by.
fn measure(
    events: &Events,
    who: &[usize],
    net: u8,
    count: usize,
    gap: Duration,
    submit: &mut dyn FnMut(Ipv4Addr) -> Option<Instant>,
) -> Measured {
    let who: HashSet<usize> = who.iter().copied().collect();
    let consumers = NFT_HOSTS..NFT_HOSTS + who.len() - NFT_HOSTS;
    let mut seen = Seen::default();
    let mut m = Measured {
        last: Vec::new(),
        first: Vec::new(),
        last_nft: Vec::new(),
        last_consumer: Vec::new(),
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
                let nft = seen.last_of(addr, 0..NFT_HOSTS);
                m.last_nft.push(nft.saturating_duration_since(start));
                if !consumers.is_empty() {
                    let c = seen.last_of(addr, consumers.clone());
                    m.last_consumer.push(c.saturating_duration_since(start));
                }
            }
            None => m.missed += 1,
        }
        // What is done with is not needed again.
        seen.by_addr.remove(&addr);
    }
    m
}

// ---------------------------------------------------------------------------
// The tables
// ---------------------------------------------------------------------------

/// The servers over a row.
struct ServerUse {
    /// CPU per server over the idle stretch before the bans.
    idle: Vec<Duration>,
    idle_wall: Duration,
    /// CPU per server over the measured stretch.
    busy: Vec<Duration>,
    wall: Duration,
    rss_mb: Vec<f64>,
    peak_mb: Vec<f64>,
    consumer_rss_mb: f64,
}

struct Row {
    how: &'static str,
    watchers: usize,
    procs: usize,
    m: Measured,
    servers: Option<ServerUse>,
    checked: Checked,
}

fn latency_tables(rows: &[Row], sizes: &Sizes) -> String {
    let mut t = format!(
        "### (a) Publish-to-applied latency, 3 servers, stream of 3 replicas, {}\n\n\
         load average at the end: {}\n\n\
         | published by | watchers: nftables + consumers (processes) | bans | p50 ms | p90 ms | p99 ms | max ms | first p50 ms | last nftables host p50 / p99 ms | last consumer p50 / p99 ms | ACK p50 / p99 ms | missed (5 s) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        sizes.security(),
        load_average()
    );
    for r in rows {
        let sorted = |v: &Vec<Duration>| {
            let mut v = v.clone();
            v.sort();
            v
        };
        let (last, first, nft, consumer, acked) = (
            sorted(&r.m.last),
            sorted(&r.m.first),
            sorted(&r.m.last_nft),
            sorted(&r.m.last_consumer),
            sorted(&r.m.acked),
        );
        let pair = |v: &[Duration]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                format!("{} / {}", ms(v, 0.5), ms(v, 0.99))
            }
        };
        t += &format!(
            "| {} | {} = {} + {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.how,
            r.watchers,
            NFT_HOSTS,
            r.watchers - NFT_HOSTS,
            if r.watchers > NFT_HOSTS { r.procs } else { 0 },
            last.len() + r.m.missed,
            ms(&last, 0.5),
            ms(&last, 0.9),
            ms(&last, 0.99),
            ms(&last, 1.0),
            ms(&first, 0.5),
            pair(&nft),
            pair(&consumer),
            pair(&acked),
            r.m.missed
        );
    }
    t += "\nEvery consumer read every record, once:\n\n| watchers | consumers |\n|---:|---|\n";
    for r in rows {
        t += &format!("| {} ({}) | {} |\n", r.watchers, r.how, r.checked.text());
    }
    t += &format!(
        "\n### (a) The servers' CPU and memory by watcher count\n\n\
         CPU from `/proc/PID/stat` (utime + stime), over an idle stretch of {} s before the bans and over the bans; memory from `/proc/PID/status` after the bans.\n\n\
         | watchers | idle: servers' cores busy (s0 + s1 + s2) | bans: servers' CPU ms per ban (s0/s1/s2) | bans: servers' cores busy | RSS MB (s0/s1/s2) | peak RSS (VmHWM) MB (s0/s1/s2) | consumer processes' RSS MB, in all |\n\
         |---:|---:|---|---:|---|---|---:|\n",
        sizes.idle.as_secs()
    );
    let mut growth = Vec::new();
    for r in rows {
        let Some(s) = &r.servers else { continue };
        let bans = (r.m.last.len() + r.m.missed) as f64;
        let idle: f64 =
            s.idle.iter().map(Duration::as_secs_f64).sum::<f64>() / s.idle_wall.as_secs_f64();
        let busy: f64 = s.busy.iter().map(Duration::as_secs_f64).sum::<f64>();
        let join = |v: &[f64], digits: usize| {
            v.iter()
                .map(|x| format!("{x:.digits$}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let per_ban: Vec<f64> = s
            .busy
            .iter()
            .map(|c| c.as_secs_f64() * 1000.0 / bans)
            .collect();
        t += &format!(
            "| {} | {:.3} | {} | {:.3} | {} | {} | {} |\n",
            r.watchers,
            idle,
            join(&per_ban, 2),
            busy / s.wall.as_secs_f64(),
            join(&s.rss_mb, 1),
            join(&s.peak_mb, 1),
            match r.watchers - NFT_HOSTS {
                0 => "-".to_owned(),
                _ => format!("{:.1}", s.consumer_rss_mb),
            },
        );
        growth.push((
            r.watchers as f64,
            per_ban.iter().sum::<f64>(),
            s.rss_mb.iter().sum::<f64>(),
            idle,
        ));
    }
    if let (Some(a), Some(b)) = (growth.first(), growth.last())
        && b.0 > a.0
    {
        let per100 = |x: f64, y: f64| (y - x) * 100.0 / (b.0 - a.0);
        t += &format!(
            "\nFrom {} to {} watchers, per 100 more watchers: the three servers' CPU per ban {:+.2} ms, their RSS {:+.1} MB in all, idle cores busy {:+.4}.\n\n",
            a.0,
            b.0,
            per100(a.1, b.1),
            per100(a.2, b.2),
            per100(a.3, b.3),
        );
    }
    t
}
