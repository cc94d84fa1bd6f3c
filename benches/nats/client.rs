//! The bench's own NATS clients, on async-nats (already banshare's NATS
//! client, so no new dependency) and a current-thread tokio runtime each,
//! as banshare's transport runs it:
//!
//! - [`run_consumers`]: the body of a consumer process. It holds many
//!   consumers, each as a banshare watcher's feed reads the stream: its
//!   own connection, the stream looked up, an ordered push consumer from
//!   its own position (here the stream's start), and the stream sequence
//!   it reached kept by itself. Each counts every record it is handed and
//!   checks the sequences (none skipped, none twice); the process prints
//!   `seen ADDR` once all its consumers were handed the ban of ADDR, and
//!   `ready` once all caught up with the stream as it was at their start.
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

use async_nats::jetstream::{
    self, consumer::DeliverPolicy, consumer::push::OrderedConfig, message::PublishMessage,
};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc};

/// The argument that makes the bench binary a consumer process:
/// `--nats-consumers URLS STREAM COUNT UNTIL_SEQ CREDENTIALS CA` (`-`
/// for none of the last two: [`Secure::args`]).
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
    /// Records handed to it, each sequence once.
    records: u64,
    /// The last stream sequence it was handed.
    last: u64,
    /// Sequences skipped (never handed out): a lost record.
    skipped: u64,
    /// Sequences handed out again (an ordered consumer made anew after a
    /// failure starts where it stopped; a copy is dropped as the feed does).
    again: u64,
    /// Errors the message stream reported (it recovers by itself).
    errors: u64,
    made: bool,
}

enum Event {
    Caught,
    Seen(String),
    Failed(String),
    Report,
}

/// The consumer process: `args` are what follows [`CONSUMER_MODE`].
/// Reads `report` lines on stdin and answers each with
/// `report CONSUMERS MADE MIN_RECORDS MAX_RECORDS MIN_LAST SKIPPED AGAIN ERRORS`.
pub fn run_consumers(args: &[String]) {
    let [urls, stream, count, until, credentials, ca] = args else {
        panic!("{CONSUMER_MODE} URLS STREAM COUNT UNTIL_SEQ CREDENTIALS CA, not {args:?}");
    };
    let secure = Secure::from_args(credentials, ca);
    let count: usize = count.parse().expect("a consumer count");
    let until: u64 = until.parse().expect("a stream sequence");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let tallies = Arc::new(Mutex::new(vec![Tally::default(); count]));
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if line.trim() == "report" {
                    let _ = tx.send(Event::Report);
                }
            }
        });
    }
    runtime.block_on(async move {
        let making = Arc::new(Semaphore::new(MAKING_AT_ONCE));
        for i in 0..count {
            tokio::spawn(consume(
                i,
                urls.clone(),
                stream.clone(),
                until,
                secure.clone(),
                tx.clone(),
                making.clone(),
                tallies.clone(),
            ));
        }
        let mut caught = 0;
        let mut seen: HashMap<String, usize> = HashMap::new();
        while let Some(event) = rx.recv().await {
            match event {
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
                Event::Failed(why) => eprintln!("consumer: {why}"),
                Event::Report => {
                    let t = tallies.lock().unwrap().clone();
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
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
async fn consume(
    i: usize,
    urls: String,
    stream: String,
    until: u64,
    secure: Secure,
    events: mpsc::UnboundedSender<Event>,
    making: Arc<Semaphore>,
    tallies: Arc<Mutex<Vec<Tally>>>,
) {
    let permit = making.acquire_owned().await.expect("never closed");
    let made = async {
        let client = secure.connect(&urls).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(30));
        let stream = js
            .get_stream(&stream)
            .await
            .map_err(|e| format!("stream: {e}"))?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_subject: client.new_inbox(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("consumer: {e}"))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        Ok::<_, String>((client, messages))
    }
    .await;
    drop(permit);
    let (_client, mut messages) = match made {
        Ok(made) => made,
        Err(why) => {
            let _ = events.send(Event::Failed(format!("consumer {i}: {why}")));
            return;
        }
    };
    tallies.lock().unwrap()[i].made = true;
    let mut caught = until == 0;
    if caught {
        let _ = events.send(Event::Caught);
    }
    let mut next = 1;
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(_) => {
                tallies.lock().unwrap()[i].errors += 1;
                continue;
            }
        };
        let Ok(info) = message.info() else { continue };
        let seq = info.stream_sequence;
        {
            let mut tallies = tallies.lock().unwrap();
            let t = &mut tallies[i];
            if seq < next {
                t.again += 1;
                continue;
            }
            t.skipped += seq - next;
            t.records += 1;
            t.last = seq;
        }
        next = seq + 1;
        if !caught && seq >= until {
            caught = true;
            let _ = events.send(Event::Caught);
        }
        if let Some(addr) = banned_address(&message.message.payload) {
            let _ = events.send(Event::Seen(addr));
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
