//! The NATS JetStream transport on a 3-server cluster on test hosts, as
//! the product recommends it to be run: a stream of 3 replicas made by
//! `banshare nats init`, users with credentials files (operator/JWT),
//! clients on TLS verifying the servers against the test CA
//! (`tests/support/nats.rs`). Senders are `banshare ban` runs and
//! watchers are `banshare watch` processes, in the test hosts' network
//! namespaces.
//!
//! - Fault: the stream leader is SIGKILLed in the middle of 5,000 records
//!   from 3 senders and started again later: every record is applied
//!   exactly once on every watcher and stored once on every server,
//!   publishing resumes within 10 s of the kill, and nothing stays in a
//!   spool longer than that (each host's, shared by its `ban` runs and
//!   its watcher, as `common.spool_dir` is).
//! - Cross-host ban: a ban published on one test host blocks the attacker's
//!   TCP connect to another test host (nftables), and the unban lifts it.
//!
//! Needs root, nats-server and the Python client (.ci/install-deps); fails,
//! never skips, without them.

mod support;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use banshare::outbox::spool::Spool;
use support::cluster::{Cluster, require_root};
use support::nats::{NatsOptions, NatsServers};
use support::{BANSHARE, wait_until};

/// The stream every test host shares.
const STREAM: &str = "BANS";

/// A publish not acknowledged within this goes to the spool (the lock
/// timeout is the NATS transport's acknowledgement timeout). nats-server
/// elects a new stream leader 4 to 9 s after the old one died (Raft's
/// election timeout, not configurable): a short timeout keeps what waits
/// for acknowledgements meanwhile from adding much to that.
const ACK_TIMEOUT: &str = "1s";

/// How long records, a watcher or a catching-up server may take, at most.
const PATIENCE: Duration = Duration::from_secs(90);

/// The acceptance's bound on the outage a killed server may cause.
const RESUME_WITHIN: Duration = Duration::from_secs(10);

/// The TCP port the attacker connects to.
const PORT: u16 = 8080;

/// Test hosts with a NATS cluster of their own on the same bridge, the
/// stream made, and a configuration file per role.
struct Site {
    cluster: Cluster,
    nats: NatsServers,
    dir: tempfile::TempDir,
    /// The next credentials file to hand out.
    next_user: Mutex<usize>,
}

impl Site {
    /// `nodes` test hosts, 3 NATS servers, and `users` credentials files;
    /// the stream is made with 3 replicas by `banshare nats init` from
    /// node 0, as an administrator would.
    fn new(hint: &str, nodes: usize, users: usize) -> Site {
        require_root();
        let cluster = Cluster::new(hint, nodes);
        let nats = NatsServers::start_on(
            &cluster,
            hint,
            NatsOptions::cluster()
                .with_credentials(users + 1)
                .with_tls(),
        );
        let site = Site {
            cluster,
            nats,
            dir: tempfile::tempdir().expect("a temp dir"),
            next_user: Mutex::new(0),
        };
        let admin = site.config("admin");
        let out = site
            .cluster
            .command_in(site.cluster.node_ns(0), BANSHARE)
            .arg("--config")
            .arg(&admin)
            .args(["nats", "init", "--replicas", "3"])
            .stdin(Stdio::null())
            .output()
            .expect("run banshare nats init");
        assert!(
            out.status.success(),
            "banshare nats init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            site.nats.stream_leader(STREAM).is_some(),
            "the stream has no leader after init"
        );
        site
    }

    /// `nats+tls://` with every server, stream [`STREAM`].
    fn log_url(&self) -> String {
        let servers: Vec<String> = (0..self.nats.server_count())
            .map(|i| format!("{}:{}", self.nats.server_ip(i), support::nats::CLIENT_PORT))
            .collect();
        format!("nats+tls://{}/{STREAM}", servers.join(","))
    }

    /// Where role `name` keeps its spool, state and configuration.
    fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spool(&self, name: &str) -> PathBuf {
        self.home(name).join("spool")
    }

    /// Writes the configuration of role `name` (also its node id), with a
    /// credentials file and a spool of its own, and returns its path.
    fn config(&self, name: &str) -> PathBuf {
        self.config_sharing(name, name)
    }

    /// As [`Site::config`], with role `spool_of`'s spool: a host's
    /// `banshare ban` and its watcher share one (`common.spool_dir`), and
    /// the watcher delivers what `ban` left there.
    fn config_sharing(&self, name: &str, spool_of: &str) -> PathBuf {
        let user = {
            let mut next = self.next_user.lock().unwrap();
            *next += 1;
            *next - 1
        };
        let credentials = self.nats.users()[user]
            .credentials_file
            .clone()
            .expect("users with credentials files");
        let home = self.home(name);
        fs::create_dir_all(&home).expect("create a role's dir");
        let config = format!(
            "[common]\n\
             log = \"{log}\"\n\
             node = \"{name}\"\n\
             spool_dir = \"{spool}\"\n\
             [append]\n\
             lock_timeout = \"{ACK_TIMEOUT}\"\n\
             stale_lock = \"500ms\"\n\
             [watch]\n\
             state_dir = \"{state}\"\n\
             flush_interval = \"1s\"\n\
             [trust]\n\
             max_bans_per_node_per_minute = 1000000\n\
             [nats]\n\
             credentials_file = \"{credentials}\"\n\
             ca_file = \"{ca}\"\n",
            log = self.log_url(),
            spool = self.spool(spool_of).display(),
            state = home.join("state").display(),
            credentials = credentials.display(),
            ca = self.nats.ca_file().expect("TLS").display(),
        );
        let path = home.join("banshare.toml");
        fs::write(&path, config).expect("write a configuration");
        path
    }

    /// `banshare --config <name's> ARGS` in node `node`'s namespace.
    fn banshare(&self, node: usize, config: &Path, args: &[&str]) -> Command {
        let mut command = self
            .cluster
            .command_in(self.cluster.node_ns(node), BANSHARE);
        command.arg("--config").arg(config).args(args);
        command
    }

    /// The records the stream holds, as its leader says.
    fn stream_messages(&self) -> Option<u64> {
        let leader = self.nats.stream_leader(STREAM)?;
        self.nats.stored_messages(leader, STREAM)
    }
}

/// A `banshare watch` in a test host.
struct Watcher {
    child: Child,
    /// With the log backend: each line it applied.
    applied: Option<mpsc::Receiver<String>>,
    seen: Vec<String>,
}

impl Watcher {
    /// Starts node `node`'s watcher as role `name` with `backend` (`log`
    /// or `nftables`); with nftables, once its table is there.
    fn start(site: &Site, node: usize, name: &str, backend: &str) -> Watcher {
        let config = site.config(name);
        let mut child = site
            .banshare(node, &config, &["watch", "--backend", backend])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start banshare watch");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        if backend == "nftables" {
            let ready = wait_until(Duration::from_secs(20), || {
                site.cluster
                    .nft(node, &["list", "table", "inet", "banshare"])
                    .is_some()
            });
            assert!(ready, "node{node}'s watcher never made its nftables table");
        }
        Watcher {
            child,
            applied: Some(rx),
            seen: Vec::new(),
        }
    }

    /// The addresses banned so far (log backend: `ban <address> ...`).
    fn bans(&mut self) -> Vec<String> {
        if let Some(applied) = &self.applied {
            self.seen.extend(applied.try_iter());
        }
        self.seen
            .iter()
            .filter_map(|line| line.strip_prefix("ban "))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the spool watch saw: the longest any record waited in a host's
/// spool (a `ban` run's journal included), and the most records at once.
#[derive(Default, Debug)]
struct SpoolWatch {
    oldest_age: Duration,
    oldest_in: Option<PathBuf>,
    max_records: usize,
    /// When records were first seen in a spool, since the watch began.
    first_seen: Option<Duration>,
    /// When the spools were last seen holding anything.
    last_seen: Option<Duration>,
}

/// Looks at `spools` every 50 ms until `stop`, keeping what [`SpoolWatch`]
/// holds.
fn watch_spools(
    spools: Vec<PathBuf>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<SpoolWatch>>,
) -> thread::JoinHandle<()> {
    let began = Instant::now();
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let mut records = 0;
            for dir in &spools {
                let Ok(summary) = Spool::open(dir).and_then(|s| s.summary()) else {
                    continue;
                };
                records += summary.records;
                let age = summary
                    .oldest
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .unwrap_or_default();
                let mut seen = seen.lock().unwrap();
                if age > seen.oldest_age {
                    seen.oldest_age = age;
                    seen.oldest_in = Some(dir.clone());
                }
            }
            let mut seen = seen.lock().unwrap();
            seen.max_records = seen.max_records.max(records);
            if records > 0 {
                seen.first_seen.get_or_insert(began.elapsed());
                seen.last_seen = Some(began.elapsed());
            }
            drop(seen);
            thread::sleep(Duration::from_millis(50));
        }
    })
}

/// The addresses sender `s` bans, in order: `10.<s+1>.x.y`.
fn addresses(s: usize, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("10.{}.{}.{}", s + 1, i / 250, i % 250 + 1))
        .collect()
}

/// Starts sender `s` in node `node`: once `go` exists, `banshare ban -`
/// runs one after the other, `batch` addresses each.
fn start_sender(
    site: &Site,
    node: usize,
    config: &Path,
    targets: &[String],
    batch: usize,
    go: &Path,
) -> Child {
    let mut script = format!("while [ ! -e {} ]; do sleep 0.01; done\n", go.display());
    for chunk in targets.chunks(batch) {
        script.push_str(&format!(
            "printf '{}\\n' | $B ban - || exit 1\n",
            chunk.join("\\n")
        ));
    }
    site.cluster
        .command_in(site.cluster.node_ns(node), "sh")
        .arg("-c")
        .arg(script)
        .env("B", format!("{BANSHARE} --config {}", config.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a sender")
}

#[test]
fn sigkill_of_the_stream_leader_during_5000_records_loses_and_doubles_none() {
    const SENDERS: usize = 3;
    const TOTAL: usize = 5_000;
    const BATCH: usize = 25;
    let started = Instant::now();
    let site = Site::new("natsfault", 3, SENDERS + 3);

    // Watchers on every test host: the log backend on nodes 1 and 2 (what
    // they apply is counted), nftables on node 0.
    let mut watchers: Vec<Watcher> = (0..3)
        .map(|node| {
            let backend = if node == 0 { "nftables" } else { "log" };
            Watcher::start(&site, node, &format!("node{node}"), backend)
        })
        .collect();

    let go = site.dir.path().join("go");
    let mut expected = Vec::new();
    let mut senders = Vec::new();
    let mut spools = Vec::new();
    for s in 0..SENDERS {
        let count = TOTAL / SENDERS + usize::from(s < TOTAL % SENDERS);
        let targets = addresses(s, count);
        // Sender s runs on node s, beside that node's watcher.
        let config = site.config_sharing(&format!("sender{s}"), &format!("node{s}"));
        spools.push(site.spool(&format!("node{s}")));
        senders.push(start_sender(&site, s, &config, &targets, BATCH, &go));
        expected.extend(targets);
    }
    expected.sort();
    assert_eq!(expected.len(), TOTAL);

    let stop = Arc::new(AtomicBool::new(false));
    let spool_watch = Arc::new(Mutex::new(SpoolWatch::default()));
    let spool_thread = watch_spools(spools.clone(), stop.clone(), spool_watch.clone());
    fs::write(&go, b"").expect("start the senders");
    let sending = Instant::now();

    // Mid-stream: the leader, the worst server to lose.
    let kill_at = (TOTAL * 3 / 10) as u64;
    assert!(
        wait_until(PATIENCE, || site.stream_messages() >= Some(kill_at)),
        "the stream never held {kill_at} records: {:?}",
        site.stream_messages()
    );
    let victim = site.nats.stream_leader(STREAM).expect("a stream leader");
    let before = site.nats.stored_messages(victim, STREAM).unwrap_or(0);
    site.nats.kill(victim);
    let killed = Instant::now();
    eprintln!(
        "killed the stream leader s{victim} at {before} records, {:.1} s into sending",
        killed.duration_since(sending).as_secs_f64()
    );

    // Resumed: another server leads and stores records beyond any that
    // were in flight at the kill (a batch per sender).
    let in_flight = (SENDERS * BATCH) as u64;
    let resumed = wait_until(PATIENCE, || {
        site.nats.stream_leader(STREAM).is_some_and(|leader| {
            leader != victim && site.nats.stored_messages(leader, STREAM) > Some(before + in_flight)
        })
    });
    let resumed_after = killed.elapsed();
    assert!(resumed, "publishing never resumed after the kill");
    eprintln!(
        "publishing resumed {:.2} s after the kill (new leader s{:?})",
        resumed_after.as_secs_f64(),
        site.nats.stream_leader(STREAM)
    );

    // Brought back later, on its store, while the senders go on.
    let restart_at = (TOTAL * 7 / 10) as u64;
    assert!(
        wait_until(PATIENCE, || site.stream_messages() >= Some(restart_at)),
        "the stream never held {restart_at} records: {:?}",
        site.stream_messages()
    );
    site.nats.restart(victim);
    eprintln!(
        "restarted s{victim} at {:?} records",
        site.stream_messages()
    );

    let mut warnings = 0;
    for (s, sender) in senders.into_iter().enumerate() {
        let out = sender.wait_with_output().expect("wait for a sender");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "sender {s} failed: {stderr}");
        warnings += stderr.lines().count();
        // The outage is called what it is: the stream is there all along,
        // without a leader for a while.
        let misnamed: Vec<&str> = stderr
            .lines()
            .filter(|line| line.contains("does not exist"))
            .collect();
        assert!(
            misnamed.is_empty(),
            "sender {s} called the stream missing during the election: {:?}",
            &misnamed[..misnamed.len().min(2)]
        );
    }
    let sent_in = sending.elapsed();

    // Every record applied once on every watcher.
    for (node, watcher) in watchers.iter_mut().enumerate().skip(1) {
        let all = wait_until(PATIENCE, || watcher.bans().len() >= TOTAL);
        let mut bans = watcher.bans();
        assert!(all, "node{node} applied {} of {TOTAL}", bans.len());
        bans.sort();
        let doubled: Vec<&String> = bans
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| &w[0])
            .collect();
        assert!(doubled.is_empty(), "node{node} applied twice: {doubled:?}");
        assert_eq!(bans, expected, "node{node} applied other addresses");
    }
    let all = wait_until(PATIENCE, || site.cluster.banned_v4(0).len() >= TOTAL);
    let mut banned = site.cluster.banned_v4(0);
    assert!(
        all,
        "node0's nftables set holds {} of {TOTAL}",
        banned.len()
    );
    banned.sort();
    assert_eq!(banned, expected, "node0's nftables set");
    // Each watcher's own count: every record read once from the stream
    // (the policy would hide a copy from the backends, not from this), and
    // applied once.
    for node in 0..3 {
        let status = site.home(&format!("node{node}")).join("state/status.json");
        let counts = || -> Option<(u64, u64)> {
            let status: serde_json::Value =
                serde_json::from_slice(&fs::read(&status).ok()?).ok()?;
            Some((status["lines_read"].as_u64()?, status["applied"].as_u64()?))
        };
        wait_until(PATIENCE, || {
            counts().is_some_and(|(read, _)| read >= TOTAL as u64)
        });
        assert_eq!(
            counts(),
            Some((TOTAL as u64, TOTAL as u64)),
            "node{node}'s status: (records read, applied)"
        );
    }

    // Stored once, on every server: the restarted one caught up.
    let stored = |i| site.nats.stored_messages(i, STREAM);
    let caught_up = wait_until(PATIENCE, || (0..3).all(|i| stored(i) == Some(TOTAL as u64)));
    assert!(
        caught_up,
        "the servers store {:?} records, not {TOTAL} each",
        (0..3).map(stored).collect::<Vec<_>>()
    );

    stop.store(true, Ordering::Relaxed);
    spool_thread.join().expect("the spool watch");
    let seen = spool_watch.lock().unwrap();
    let left: HashMap<&Path, usize> = spools
        .iter()
        .map(|dir| {
            let depth = Spool::open(dir).and_then(|s| s.depth()).unwrap_or(0);
            (dir.as_path(), depth)
        })
        .collect();
    eprintln!(
        "sent {TOTAL} records in {:.1} s with {warnings} warning line(s); spools: {seen:?}",
        sent_in.as_secs_f64()
    );
    for i in 0..3 {
        eprintln!("s{i}: {:?}", site.nats.stats(i));
    }
    assert!(
        left.values().all(|&n| n == 0),
        "records left in the senders' spools: {left:?}"
    );
    assert!(
        resumed_after <= RESUME_WITHIN,
        "publishing resumed {resumed_after:?} after the kill, not within {RESUME_WITHIN:?}"
    );
    assert!(
        seen.oldest_age <= RESUME_WITHIN,
        "records waited {:?} in a spool ({:?}), longer than {RESUME_WITHIN:?}",
        seen.oldest_age,
        seen.oldest_in
    );
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_ban_published_on_one_host_blocks_the_attacker_on_another() {
    let site = Site::new("natsban", 2, 2);
    site.cluster.serve_tcp(1, PORT);
    let _watcher = Watcher::start(&site, 1, "node1", "nftables");
    let reachable = || {
        site.cluster
            .can_connect(site.cluster.attacker_ns(), site.cluster.node_ip(1), PORT)
    };
    assert!(reachable(), "node1 must accept the attacker before the ban");

    let config = site.config("node0");
    let attacker = site.cluster.attacker_ip().to_string();
    let share = |op: &str| {
        let out = site
            .banshare(0, &config, &[op, &attacker, "--bantime", "600"])
            .stdin(Stdio::null())
            .output()
            .expect("run banshare");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "banshare {op}: {stderr}");
        assert_eq!(
            Spool::open(&site.spool("node0"))
                .and_then(|s| s.depth())
                .unwrap(),
            0,
            "banshare {op} spooled: {stderr}"
        );
    };
    share("ban");
    assert!(
        wait_until(Duration::from_secs(15), || !reachable()),
        "node1 still accepts the attacker after the ban through NATS"
    );
    share("unban");
    assert!(
        wait_until(Duration::from_secs(15), reachable),
        "node1 still blocks the attacker after the unban through NATS"
    );
}

/// Found by the fault test: a watcher's status asks its feed for the lag
/// while records still arrive (a catch-up after an outage); the feed then
/// waits briefly for those the server announced, and that wait must run
/// on its own runtime, not panic on the watcher's thread ("there is no
/// reactor running"). One server on the loopback is enough to show it.
#[test]
fn the_lag_asked_while_records_still_arrive_is_measured() {
    use banshare::transport::Transport;
    use banshare::transport::nats::{NatsFeed, NatsSettings, NatsTransport, NatsUrl};
    use support::nats_single::NatsServer;

    let server = NatsServer::local();
    let log = server.url("LAG");
    let out = Command::new(BANSHARE)
        .args(["--config", "/dev/null", "nats", "init", "--replicas", "1"])
        .args(["--log", &log])
        .stdin(Stdio::null())
        .output()
        .expect("run banshare nats init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = NatsUrl::parse(&log).expect("a NATS location");
    let settings = NatsSettings::default();
    const BATCHES: usize = 20;
    const PER_BATCH: usize = 500;
    let publisher = {
        let (url, settings) = (url.clone(), settings.clone());
        thread::spawn(move || {
            let mut transport = NatsTransport::new(&url, &settings, Duration::from_secs(10));
            for b in 0..BATCHES {
                let batch: String = (0..PER_BATCH).map(|i| format!("line {b} {i}\n")).collect();
                transport.append(batch.as_bytes()).expect("append");
            }
        })
    };
    let mut feed = NatsFeed::new(&url, &settings, Duration::from_secs(5));
    let mut got = 0;
    let mut measured = 0;
    let all = wait_until(PATIENCE, || {
        use banshare::transport::Feed;
        got += feed.read(100).map(|e| e.len()).unwrap_or(0);
        if feed.unread(u64::MAX).is_some() {
            measured += 1;
        }
        got >= BATCHES * PER_BATCH
    });
    publisher.join().expect("the publisher");
    assert!(all, "{got} of {} records read", BATCHES * PER_BATCH);
    assert!(measured > 0, "the lag was never measured");
}
