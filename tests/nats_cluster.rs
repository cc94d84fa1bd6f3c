//! The NATS test hosts of tests/support/nats.rs, checked with an independent
//! client (PyPI's nats-py), before banshare's own NATS transport relies on
//! them: a single server and a 3-server JetStream cluster, with NKey users
//! and TLS, and a cluster losing a server to SIGKILL mid-stream.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};
use support::Daemon;
use support::cluster::Cluster;
use support::nats::{NatsOptions, NatsServers, READY_TIMEOUT};

/// Connects as the environment of [`NatsServers::python`] says: every
/// server's URL, TLS verified with the test CA, user 0's NKey or
/// credentials file. Retries reconnects without end, 100 ms apart, as
/// banshare's feed would. `refuse_anonymous` exits unless a client without
/// NKey or credentials is refused.
const PY_CONNECT: &str = r#"
import asyncio, json, os, ssl, sys
import nats, nats.errors
from nats.js.api import StreamConfig

async def quiet(error):
    pass

async def log_error(error):
    print("nats error:", type(error).__name__, error, file=sys.stderr, flush=True)

async def connect(**extra):
    options = dict(servers=os.environ["NATS_URLS"].split(","), connect_timeout=2,
                   max_reconnect_attempts=-1, reconnect_time_wait=0.1, error_cb=log_error)
    if os.environ["NATS_CA"]:
        options["tls"] = ssl.create_default_context(cafile=os.environ["NATS_CA"])
    if os.environ["NATS_SEED"]:
        options["nkeys_seed"] = os.environ["NATS_SEED"]
    if os.environ["NATS_CREDS"]:
        options["user_credentials"] = os.environ["NATS_CREDS"]
    options.update(extra)
    return await nats.connect(**options)

async def refuse_anonymous():
    try:
        await connect(nkeys_seed=None, user_credentials=None, allow_reconnect=False,
                      error_cb=quiet)
    except nats.errors.Error as e:
        if "Authorization Violation" in str(e):
            return
        raise
    sys.exit("an anonymous client was admitted")

async def read_all(js, stream):
    """Every message body of `stream`, read by an ordered consumer."""
    total = (await js.stream_info(stream)).state.messages
    sub = await js.subscribe(stream + ".>", ordered_consumer=True)
    return total, [(await sub.next_msg(timeout=10)).data.decode() for _ in range(total)]
"#;

/// Argument: the stream. Checks that anonymous clients are refused, then
/// as user 0 makes a stream of 1 replica, publishes 10 records, each
/// twice under its `Nats-Msg-Id`, and prints the stream's bodies as JSON.
const PY_SINGLE: &str = r#"
async def main(stream):
    await refuse_anonymous()
    nc = await connect()
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[stream + ".>"], num_replicas=1))
    for i in range(20):
        await js.publish(stream + ".n0", str(i % 10).encode(), headers={"Nats-Msg-Id": str(i % 10)})
    print(json.dumps((await read_all(js, stream))[1]), flush=True)
    await nc.close()

asyncio.run(main(sys.argv[1]))
"#;

/// Arguments: the stream, the number of senders, records per sender.
/// Checks that anonymous clients are refused, then as user 0 makes a stream of 3 replicas and prints "leader <server>"; then each sender
/// publishes its records one at a time, each retried under its
/// `Nats-Msg-Id` until JetStream acknowledges it, printing "ack" for each;
/// prints "published <retries>", waits for a line on stdin, and prints the
/// stream's bodies as JSON.
const PY_FAULT: &str = r#"
async def main(stream, senders, records):
    await refuse_anonymous()
    nc = await connect()
    js = nc.jetstream()
    info = await js.add_stream(StreamConfig(name=stream, subjects=[stream + ".>"], num_replicas=3))
    print("leader", info.cluster.leader, flush=True)
    retries = 0
    async def sender(n):
        nonlocal retries
        for i in range(records):
            record = f"{n}-{i}"
            while True:
                try:
                    await js.publish(f"{stream}.n{n}", record.encode(), timeout=0.5,
                                     headers={"Nats-Msg-Id": record})
                    break
                except nats.errors.Error as e:
                    retries += 1
                    print("retry", record, type(e).__name__, e, file=sys.stderr, flush=True)
                    await asyncio.sleep(0.05)
            print("ack", flush=True)
    await asyncio.gather(*(sender(n) for n in range(senders)))
    print("published", retries, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps((await read_all(js, stream))[1]), flush=True)
    await nc.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"#;

/// Lines a child prints, as they come, read by a thread of their own.
struct Lines(Receiver<String>);

impl Lines {
    fn of(child: &mut std::process::Child) -> Lines {
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines(rx)
    }

    /// The next line, or None if there is none by `deadline`.
    fn next_by(&self, deadline: Instant) -> Option<String> {
        self.0
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }
}

/// Counts the fault publisher's "ack" lines up to its "published" line.
struct Acks<'a> {
    lines: &'a Lines,
    count: usize,
    /// The "published" line, once read.
    finished: Option<String>,
}

impl Acks<'_> {
    /// Reads lines until `count` acks, the end of publishing or `deadline`.
    fn wait_for(&mut self, count: usize, deadline: Instant) {
        while self.count < count && self.finished.is_none() {
            match self.lines.next_by(deadline) {
                Some(line) if line == "ack" => self.count += 1,
                Some(line) if line.starts_with("published") => self.finished = Some(line),
                Some(line) => panic!("unexpected line {line:?}"),
                None => return,
            }
        }
    }
}

/// Also the servers on a [`Cluster`]'s bridge, with its node as the client,
/// as the cross-host tests use them.
#[test]
fn single_server_admits_only_nkey_users_over_tls_and_stores_a_record_id_once() {
    let cluster = Cluster::new("natssingle", 1);
    let nats = NatsServers::start_on(
        &cluster,
        "single",
        NatsOptions::single().with_nkey_users(2).with_tls(),
    );
    assert_eq!(nats.urls(), ["tls://198.18.0.2:4222"]);
    let out = support::run_ok(nats.python(cluster.node_ns(0)).args([
        "-c",
        &format!("{PY_CONNECT}{PY_SINGLE}"),
        "SINGLE",
    ]));
    let bodies: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(bodies, expected, "each Nats-Msg-Id stored once, in order");
    assert_eq!(nats.stored_messages(0, "SINGLE"), Some(10));
    let stats = nats.stats(0).expect("the server's /proc entries");
    assert!(stats.rss_bytes > 0 && stats.peak_rss_bytes >= stats.rss_bytes);
}

/// Three senders publish 3 x 1,000 records into a stream of 3 replicas; the
/// stream's leader is SIGKILLed after the first 1,000 acks and restarted
/// with its store after 2,000: publishing resumes within 10 s of the kill,
/// the restarted server catches up, and the stream holds every record
/// exactly once.
#[test]
fn cluster_stream_survives_sigkill_of_its_leader_with_every_record_once() {
    const SENDERS: usize = 3;
    const RECORDS: usize = 1000;
    const TOTAL: usize = SENDERS * RECORDS;
    const RESUME_WITHIN: Duration = Duration::from_secs(10);
    let nats = NatsServers::start(
        "fault",
        NatsOptions::cluster()
            .with_clients(1)
            .with_credentials(1)
            .with_tls(),
    );
    let mut child = nats
        .python(nats.client_ns(0))
        .args(["-c", &format!("{PY_CONNECT}{PY_FAULT}")])
        .args(["BANS", &SENDERS.to_string(), &RECORDS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let lines = Lines::of(&mut child);
    let mut publisher = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(60);

    let leader_line = lines.next_by(deadline).expect("the stream's leader");
    let leader: usize = leader_line
        .strip_prefix("leader s")
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("not a leader line: {leader_line:?}"));
    assert_eq!(nats.stream_leader("BANS"), Some(leader));
    let mut acks = Acks {
        lines: &lines,
        count: 0,
        finished: None,
    };
    acks.wait_for(TOTAL / 3, deadline);
    assert_eq!(acks.count, TOTAL / 3, "no {} acks within 60 s", TOTAL / 3);
    nats.kill(leader);
    let killed = Instant::now();
    // More acks than can be in flight at the kill (one per sender): new
    // publishes were acknowledged after it.
    let resumed = acks.count + 10 * SENDERS;
    acks.wait_for(resumed, killed + RESUME_WITHIN);
    assert!(
        acks.count >= resumed,
        "publishing did not resume within {RESUME_WITHIN:?} of SIGKILL to s{leader}: \
         {} acks, {resumed} wanted",
        acks.count
    );
    eprintln!("publishing resumed {:?} after the kill", killed.elapsed());

    acks.wait_for(2 * TOTAL / 3, deadline);
    nats.restart(leader);
    acks.wait_for(TOTAL + 1, deadline);
    assert_eq!(acks.count, TOTAL);
    let published = acks.finished.expect("the publisher never finished");
    eprintln!("{published} (publishes retried)");

    let caught_up = support::wait_until(READY_TIMEOUT, || {
        nats.stored_messages(leader, "BANS") == Some(TOTAL as u64)
    });
    assert!(
        caught_up,
        "restarted s{leader} holds {:?} of {TOTAL} records",
        nats.stored_messages(leader, "BANS")
    );
    let stdin = publisher.0.stdin.as_mut().expect("piped stdin");
    stdin.write_all(b"read\n").unwrap();
    let read = lines.next_by(deadline).expect("the stream's records");
    let mut bodies: Vec<String> = serde_json::from_str(&read).unwrap();
    bodies.sort();
    let mut expected: Vec<String> = (0..SENDERS)
        .flat_map(|n| (0..RECORDS).map(move |i| format!("{n}-{i}")))
        .collect();
    expected.sort();
    assert!(
        bodies == expected,
        "the stream does not hold every record exactly once"
    );

    for i in 0..nats.server_count() {
        let stats = nats.stats(i).expect("every server's /proc entries");
        assert!(stats.rss_bytes > 0, "s{i}: {stats:?}");
        eprintln!("s{i}: {stats:?}");
    }
}
