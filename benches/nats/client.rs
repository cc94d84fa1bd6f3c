//! The bench's own NATS clients, on async-nats (already banshare's NATS
//! client, so no new dependency) and a current-thread tokio runtime each,
//! as banshare's transport runs it:
//!
//! - [`run_consumers`]: the body of a consumer process. It holds many
//!   consumers, each banshare's own feed of the stream (`NatsFeed`, as a
//!   watcher reads it: its own connection and runtime thread, what was
//!   stored from its own position, here the stream's start, through a
//!   consumer, then the live copies the stream republishes), read on a
//!   thread of its own as a watcher's loop reads it. Each counts every
//!   record it is handed and checks the sequences (none skipped, none
//!   twice); the process prints `seen ADDR` once all its consumers were
//!   handed the ban of ADDR, and `ready` once all caught up with the
//!   stream as it was at their start.
//! - [`Publisher`]: a long-lived JetStream publisher in a test host's
//!   network namespace, one record per publish with its id as
//!   `Nats-Msg-Id`, waiting for the stream's acknowledgement each time.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use banshare::follow::{Mode, Wake};
use banshare::transport::nats::{NatsFeed, NatsSettings, NatsUrl};
use banshare::transport::{Entry, Feed};
use bytes::Bytes;
use tokio::sync::mpsc;

/// The argument that makes the bench binary a consumer process:
/// `--nats-consumers LOG COUNT UNTIL_SEQ CREDENTIALS CA` (`-` for none of
/// the last two: [`Secure::args`]).
pub const CONSUMER_MODE: &str = "--nats-consumers";

/// Consumers connecting and making their consumer at once, per process:
/// the servers answer a burst of a thousand consumer creations slowly.
const MAKING_AT_ONCE: usize = 16;

/// How the bench's clients prove themselves and check the servers: a
/// credentials file, and the CA of the servers' certificates (TLS); none
/// of them when the servers take anyone without TLS.
#[derive(Clone, Default)]
pub struct Secure {
    pub credentials: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

impl Secure {
    /// As two arguments of a consumer process, `-` for none.
    pub fn args(&self) -> [String; 2] {
        let arg = |p: &Option<PathBuf>| p.as_ref().map_or("-".into(), |p| p.display().to_string());
        [arg(&self.credentials), arg(&self.ca)]
    }

    fn from_args(credentials: &str, ca: &str) -> Secure {
        let path = |a: &str| (a != "-").then(|| PathBuf::from(a));
        Secure {
            credentials: path(credentials),
            ca: path(ca),
        }
    }

    /// Connects to the servers `urls` (comma-separated) as banshare's
    /// transport would, with long timeouts for a busy machine.
    async fn connect(&self, urls: &str) -> Result<async_nats::Client, String> {
        let mut options = async_nats::ConnectOptions::new()
            .name("banshare-bench")
            .connection_timeout(Duration::from_secs(30))
            .request_timeout(Some(Duration::from_secs(30)))
            .max_reconnects(None);
        if let Some(credentials) = &self.credentials {
            options = options
                .credentials_file(credentials)
                .await
                .map_err(|e| format!("credentials: {e}"))?;
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        options
            .connect(servers(urls))
            .await
            .map_err(|e| format!("connect: {e}"))
    }
}

/// What each consumer saw.
#[derive(Default, Clone, Copy)]
struct Tally {
    /// Records handed to it.
    records: u64,
    /// The stream sequence of the last record it was handed.
    last: u64,
    /// Sequences skipped (never handed out): a lost record.
    skipped: u64,
    /// Sequences handed out again: none, or the feed is wrong (it drops
    /// what it handed out before itself); kept for the report's shape.
    again: u64,
    /// Reads that failed (the feed recovers by itself).
    errors: u64,
    made: bool,
}

enum Event {
    Caught,
    Seen(String),
}

/// The consumer process: `args` are what follows [`CONSUMER_MODE`].
/// Reads `report` lines on stdin and answers each with
/// `report CONSUMERS MADE MIN_RECORDS MAX_RECORDS MIN_LAST SKIPPED AGAIN ERRORS`.
pub fn run_consumers(args: &[String]) {
    let [log, count, until, credentials, ca] = args else {
        panic!("{CONSUMER_MODE} LOG COUNT UNTIL_SEQ CREDENTIALS CA, not {args:?}");
    };
    let url = NatsUrl::parse(log).expect("a NATS log URL");
    let secure = Secure::from_args(credentials, ca);
    let settings = NatsSettings {
        credentials_file: secure.credentials.clone(),
        ca_file: secure.ca.clone(),
        timeout: Duration::from_secs(30),
        ..NatsSettings::default()
    };
    let count: usize = count.parse().expect("a consumer count");
    let until: u64 = until.parse().expect("a stream sequence");
    let tallies = Arc::new(Mutex::new(vec![Tally::default(); count]));
    let (tx, rx) = std_mpsc::channel();
    {
        let tallies = tallies.clone();
        thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if line.trim() == "report" {
                    report(&tallies.lock().unwrap());
                }
            }
        });
    }
    // At most MAKING_AT_ONCE consumers catching up at once: the servers
    // answer a burst of a thousand consumer creations slowly.
    let mut started = 0;
    let mut caught = 0;
    let mut seen: HashMap<String, usize> = HashMap::new();
    loop {
        while started < count && started < caught + MAKING_AT_ONCE {
            let (url, settings, tx, tallies) =
                (url.clone(), settings.clone(), tx.clone(), tallies.clone());
            let i = started;
            thread::spawn(move || consume(i, &url, &settings, until, tx, tallies));
            started += 1;
        }
        match rx.recv().expect("the consumers never stop") {
            Event::Caught => {
                caught += 1;
                if caught == count {
                    println!("ready");
                }
            }
            Event::Seen(addr) => {
                let n = seen.entry(addr.clone()).or_default();
                *n += 1;
                if *n == count {
                    seen.remove(&addr);
                    println!("seen {addr}");
                }
            }
        }
    }
}

fn report(t: &[Tally]) {
    println!(
        "report {} {} {} {} {} {} {} {}",
        t.len(),
        t.iter().filter(|t| t.made).count(),
        t.iter().map(|t| t.records).min().unwrap_or(0),
        t.iter().map(|t| t.records).max().unwrap_or(0),
        t.iter().map(|t| t.last).min().unwrap_or(0),
        t.iter().map(|t| t.skipped).sum::<u64>(),
        t.iter().map(|t| t.again).sum::<u64>(),
        t.iter().map(|t| t.errors).sum::<u64>(),
    );
}

/// Consumer `i`: banshare's own feed of the stream, read from its start
/// as a watcher's loop reads it (woken by the feed, then reading all
/// there is); caught up once it was handed sequence `until`.
fn consume(
    i: usize,
    url: &NatsUrl,
    settings: &NatsSettings,
    until: u64,
    events: std_mpsc::Sender<Event>,
    tallies: Arc<Mutex<Vec<Tally>>>,
) {
    let safety = Duration::from_secs(5);
    let mut feed = NatsFeed::new(url, settings, safety);
    let (mut wake, handle) = Wake::new(Mode::Pushed { safety });
    feed.watch(handle);
    let mut caught = false;
    loop {
        let entries = match feed.read(4096) {
            Ok(entries) => entries,
            Err(_) => {
                tallies.lock().unwrap()[i].errors += 1;
                Vec::new()
            }
        };
        let last = feed.position().map_or(0, |p| p.seq);
        {
            let mut tallies = tallies.lock().unwrap();
            let t = &mut tallies[i];
            let handed = entries.len() as u64;
            t.skipped += (last - t.last).saturating_sub(handed);
            t.again += handed.saturating_sub(last - t.last);
            t.records += handed;
            t.last = last;
            t.made |= feed.unread(0).is_some();
        }
        for entry in &entries {
            if let Entry::Record(line) = entry
                && let Some(addr) = banned_address(line)
            {
                let _ = events.send(Event::Seen(addr));
            }
        }
        let following = until > 0 || tallies.lock().unwrap()[i].made;
        if !caught && following && last >= until {
            caught = true;
            let _ = events.send(Event::Caught);
        }
        if entries.is_empty() {
            wake.wait_at_most(Some(Duration::from_secs(1)));
        }
    }
}

/// `URL,URL,...` as the client takes a list of servers.
fn servers(urls: &str) -> Vec<String> {
    urls.split(',').map(str::to_owned).collect()
}

/// The address of a ban record (`...: HOST ADDR PORT ...`).
fn banned_address(payload: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(payload).ok()?;
    let (_, rest) = text.split_once(": HOST ")?;
    Some(rest.split(' ').next()?.to_owned())
}

/// A JetStream publisher on a thread inside a test host's network
/// namespace.
pub struct Publisher {
    requests: Option<mpsc::Sender<(String, String, String)>>,
    replies: std_mpsc::Receiver<Result<Instant, String>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Publisher {
    /// Connects to `urls` from network namespace `ns`.
    pub fn start(ns: &str, urls: String, secure: Secure) -> Publisher {
        let ns = PathBuf::from("/run/netns").join(ns);
        let (requests, mut inbox) = mpsc::channel::<(String, String, String)>(1);
        let (outbox, replies) = std_mpsc::channel();
        let thread = thread::spawn(move || {
            let netns = File::open(&ns).unwrap();
            // SAFETY: setns(2) on a file we hold open; it changes only this
            // thread's network namespace (the runtime below is this thread).
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                let client = secure.connect(&urls).await.expect("connect");
                let js = jetstream::new(client);
                while let Some((subject, id, line)) = inbox.recv().await {
                    let message = PublishMessage::build()
                        .payload(Bytes::from(line))
                        .message_id(id);
                    let acked = async {
                        js.send_publish(subject, message)
                            .await
                            .map_err(|e| e.to_string())?
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(Instant::now())
                    }
                    .await;
                    let failed = acked.is_err();
                    let _ = outbox.send(acked);
                    if failed {
                        return;
                    }
                }
            });
        });
        Publisher {
            requests: Some(requests),
            replies,
            thread: Some(thread),
        }
    }

    /// Publishes `line` on `subject` with `id`; returns when the stream
    /// acknowledged it.
    pub fn publish(&self, subject: &str, id: &str, line: String) -> Instant {
        self.requests
            .as_ref()
            .unwrap()
            .blocking_send((subject.to_owned(), id.to_owned(), line))
            .expect("the publisher thread ended");
        match self.replies.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(at)) => at,
            Ok(Err(e)) => panic!("the stream refused a publish: {e}"),
            Err(e) => panic!("no acknowledgement: {e}"),
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One batch of (b) as it went.
pub struct Batch {
    pub began: Instant,
    /// When its last record was acknowledged (or the run ended).
    pub ended: Instant,
    pub records: usize,
    /// Err: why not every record was acknowledged.
    pub outcome: Result<(), String>,
    /// How long after its slot it began.
    pub late: Duration,
}

/// Publishes `messages` (id, line) on `subject` from network namespace
/// `ns` (this thread moves into it), `batch` at a time, batch `r` at
/// `start + r * interval`: all its records at once, the acknowledgements
/// taken as they come while the next batches go out.
#[allow(clippy::too_many_arguments)]
pub fn pump(
    ns: &str,
    urls: String,
    secure: &Secure,
    subject: String,
    messages: Vec<(String, String)>,
    batch: usize,
    interval: Duration,
    start: Instant,
) -> Vec<Batch> {
    let netns = File::open(PathBuf::from("/run/netns").join(ns)).unwrap();
    // SAFETY: setns(2) on a file we hold open; it changes only this
    // thread's network namespace, and the caller's thread ends after.
    let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let client = secure.connect(&urls).await.expect("connect");
        let mut js = jetstream::new(client);
        // Acknowledgements may come late on a busy machine: counted
        // late, not failed, as `banshare ban` with its default 15 s.
        js.set_timeout(Duration::from_secs(15));
        let mut pending = Vec::new();
        for (r, chunk) in messages.chunks(batch).enumerate() {
            let at = start + interval * r as u32;
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            let began = Instant::now();
            let mut acks = Vec::with_capacity(chunk.len());
            let mut failure = None;
            for (id, line) in chunk {
                let message = PublishMessage::build()
                    .payload(Bytes::from(line.clone()))
                    .message_id(id.clone());
                match js.send_publish(subject.clone(), message).await {
                    Ok(ack) => acks.push(ack),
                    Err(e) => failure = Some(e.to_string()),
                }
            }
            let records = chunk.len();
            pending.push(tokio::spawn(async move {
                for ack in acks {
                    match tokio::time::timeout(Duration::from_secs(15), ack.into_future()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => failure = Some(e.to_string()),
                        Err(_) => failure = Some("no acknowledgement in 15 s".into()),
                    }
                }
                Batch {
                    began,
                    ended: Instant::now(),
                    records,
                    outcome: failure.map_or(Ok(()), Err),
                    late: began.saturating_duration_since(at),
                }
            }));
        }
        let mut batches = Vec::new();
        for task in pending {
            batches.push(task.await.expect("an acknowledgement task"));
        }
        batches
    })
}
