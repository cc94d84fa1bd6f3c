//! The read side of the NATS transport: the stream, in order, from the
//! sequence after the last record handed out. Its [`Position`] is that
//! stream sequence, with the stream's name and creation time, of kind
//! `"nats"`: a stream deleted and made again is read from its start.
//!
//! A follower task on the feed's runtime receives the records and queues
//! them, waking the watcher; the feed hands out what is queued. It reads
//! what was stored before it came through an ordered push consumer
//! (ephemeral, made anew whenever it fails), then drops the consumer and
//! follows the copies the stream republishes on plain subjects
//! (`docs/nats.md`, "Following"): to the servers, a subscriber costs a
//! copy of each record, a consumer a delivery with its own state, flow
//! control and heartbeats. Copies are sent at most once, so the follower
//! checks that their sequences follow each other, and goes back to a
//! consumer from the first record it misses: when a later copy shows the
//! gap, after a reconnect, or when the stream holds a record that has not
//! come a look (5 s) later. Each sequence is queued once: what was queued
//! already is dropped. A stream that does not republish, or a node that
//! may not subscribe to the copies, is read through the consumer only.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::push::OrderedConfig};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::init;
use super::runtime::{self, ConnectFailure, Link, Runtime};
use super::{MISSING_HINT, NatsSettings, NatsUrl, UNREACHABLE_HINT};
use crate::follow::{Handle, Mode, Msg};
use crate::record::MAX_LINE_LEN;
use crate::transport::feed::{Entry, Feed, FeedError, Notice, Position, Unread};

/// The kind of position a [`NatsFeed`] hands out.
pub const KIND: &str = "nats";

/// Messages queued between reads; past that, the follower waits (and the
/// server holds the rest, by flow control).
const QUEUE: usize = 4096;

/// How long the follower waits before trying again after a failure, at
/// most.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long `unread` waits for messages the server said are on their way.
const UNREAD_WAIT: Duration = Duration::from_secs(1);

/// How often a follower on the live copies looks whether it reconnected
/// or was refused them.
const LIVE_TICK: Duration = Duration::from_secs(1);

/// Every how many ticks it asks the stream for its last sequence: a
/// record whose live copy was lost, with none after it to show the gap,
/// is then read through a consumer within two such looks (10 s).
const VERIFY_TICKS: u32 = 5;

/// A message of the stream, as the follower queued it.
struct Delivered {
    seq: u64,
    payload: Bytes,
    /// Messages after this one in the stream, as the server counted them.
    pending: u64,
}

/// What the follower and the feed share.
#[derive(Default)]
struct Shared {
    handle: Mutex<Option<Handle>>,
    /// Why the follower cannot read now; `None` while it follows.
    trouble: Mutex<Option<FeedError>>,
    /// The creation time of the stream being read, as the server said.
    created: Mutex<Option<String>>,
    notices: Mutex<Vec<Notice>>,
    /// The follower's client, once it connected.
    client: Mutex<Option<async_nats::Client>>,
}

impl Shared {
    fn wake(&self) {
        let handle = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = handle.as_ref() {
            handle.send(Msg::Changed);
        }
    }

    fn set_trouble(&self, trouble: Option<FeedError>) {
        let waking = trouble.is_some();
        *self.trouble.lock().unwrap_or_else(PoisonError::into_inner) = trouble;
        if waking {
            self.wake();
        }
    }

    /// Whether the follower's client lost its connection (and is making
    /// it again). Before its first connection, a failure to connect is
    /// `trouble`.
    fn disconnected(&self) -> bool {
        let client = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        client
            .as_ref()
            .is_some_and(|c| c.connection_state() != async_nats::connection::State::Connected)
    }

    /// Whether the follower's client is connected now.
    fn connected(&self) -> bool {
        let client = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        client
            .as_ref()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected)
    }

    fn notice(&self, warning: bool, text: String) {
        let mut notices = self.notices.lock().unwrap_or_else(PoisonError::into_inner);
        notices.push(Notice { warning, text });
    }
}

/// A JetStream stream, as a [`Feed`].
pub struct NatsFeed {
    url: NatsUrl,
    log: String,
    settings: NatsSettings,
    safety: Duration,
    runtime: Option<Runtime>,
    follower: Option<tokio::task::JoinHandle<()>>,
    queue: Option<mpsc::Receiver<Delivered>>,
    /// Taken from the queue by `unread`, not handed out yet.
    held: VecDeque<Delivered>,
    shared: Arc<Shared>,
    link: Arc<Link>,
    /// The stream sequence of the last record handed out (0: none).
    seq: u64,
    /// A position was resumed or a record handed out.
    placed: bool,
    /// The stream's creation time saved with the position resumed.
    saved_created: Option<String>,
    notices: Vec<Notice>,
}

impl NatsFeed {
    /// The feed of the stream at `url`, reached as `settings` say; the
    /// watcher looks anyway every `safety`. Starts and connects nothing
    /// until the first call.
    pub fn new(url: &NatsUrl, settings: &NatsSettings, safety: Duration) -> NatsFeed {
        NatsFeed {
            url: url.clone(),
            log: url.to_string(),
            settings: settings.clone(),
            safety,
            runtime: None,
            follower: None,
            queue: None,
            held: VecDeque::new(),
            shared: Arc::default(),
            link: Arc::default(),
            seq: 0,
            placed: false,
            saved_created: None,
            notices: Vec::new(),
        }
    }

    /// Starts the follower from the sequence after `self.seq`, if not yet
    /// done.
    fn follow(&mut self) -> Result<(), FeedError> {
        if self.follower.is_some() {
            return Ok(());
        }
        if self.runtime.is_none() {
            let runtime = Runtime::start().map_err(|e| {
                FeedError::Other(format!(
                    "log {}: cannot start the NATS client: {e}",
                    self.log
                ))
            })?;
            self.runtime = Some(runtime);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let follower = Follower {
            url: self.url.clone(),
            settings: self.settings.clone(),
            next: self.seq + 1,
            created: self.saved_created.clone(),
            queue: tx,
            shared: self.shared.clone(),
            link: self.link.clone(),
            live_refused: false,
        };
        let runtime = self.runtime.as_ref().expect("just made");
        self.follower = Some(runtime.handle().spawn(follower.run()));
        self.queue = Some(rx);
        Ok(())
    }

    /// Stops the follower; the next call starts it again from `self.seq`.
    fn stop_following(&mut self) {
        if let Some(follower) = self.follower.take() {
            follower.abort();
        }
        self.queue = None;
        self.held.clear();
    }

    /// Moves what the follower queued to `held`, holding at most
    /// [`QUEUE`] messages: the rest waits in the queue, and behind it on
    /// the server.
    fn drain(&mut self) {
        if let Some(queue) = &mut self.queue {
            while self.held.len() < QUEUE {
                let Ok(delivered) = queue.try_recv() else {
                    break;
                };
                self.held.push_back(delivered);
            }
        }
    }

    fn trouble(&self) -> Option<FeedError> {
        self.shared
            .trouble
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for NatsFeed {
    fn drop(&mut self) {
        self.stop_following();
    }
}

impl Feed for NatsFeed {
    fn log(&self) -> &str {
        &self.log
    }

    fn resume(&mut self, saved: &Position) -> Result<(), String> {
        if saved.kind != KIND {
            return Err(format!(
                "the saved position is in a {:?} log, not a NATS stream",
                saved.kind
            ));
        }
        let stream = saved.at.get("stream").and_then(|s| s.as_str());
        if stream != Some(self.url.stream.as_str()) {
            return Err(format!(
                "the saved position is in stream {stream:?}, not {:?}",
                self.url.stream
            ));
        }
        let seq = saved
            .at
            .get("seq")
            .and_then(|s| s.as_u64())
            .ok_or("the saved position has no stream sequence")?;
        let created = saved.at.get("created").and_then(|c| c.as_str());
        self.stop_following();
        self.seq = seq;
        self.placed = true;
        self.saved_created = created.map(str::to_owned);
        *self
            .shared
            .created
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.saved_created.clone();
        Ok(())
    }

    fn watch(&mut self, wake: Handle) -> Mode {
        *self
            .shared
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(wake);
        if let Err(e) = self.follow() {
            self.notices.push(Notice {
                warning: true,
                text: e.to_string(),
            });
        }
        Mode::Pushed {
            safety: self.safety,
        }
    }

    fn read(&mut self, max: usize) -> Result<Vec<Entry>, FeedError> {
        self.follow()?;
        self.drain();
        if self.held.is_empty() {
            if let Some(trouble) = self.trouble() {
                return Err(trouble);
            }
            if self.shared.disconnected() {
                return Err(FeedError::Unreachable(format!(
                    "log {} is unreachable ({UNREACHABLE_HINT}): not connected to any server \
                     now",
                    self.log
                )));
            }
        }
        let n = max.min(self.held.len());
        let entries = self
            .held
            .drain(..n)
            .map(|d| {
                self.seq = d.seq;
                self.placed = true;
                entry(d.payload)
            })
            .collect();
        Ok(entries)
    }

    fn position(&self) -> Option<Position> {
        if !self.placed {
            return None;
        }
        let created = self
            .shared
            .created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Some(Position {
            kind: KIND.into(),
            log: self.log.clone(),
            seq: self.seq,
            at: serde_json::json!({
                "stream": self.url.stream,
                "seq": self.seq,
                "created": created,
            }),
        })
    }

    fn unread(&mut self, count_max: u64) -> Option<Unread> {
        self.runtime.as_ref()?;
        self.queue.as_ref()?;
        if !self.shared.connected() || self.trouble().is_some() {
            return None;
        }
        self.drain();
        let bytes = |held: &VecDeque<Delivered>| -> u64 {
            held.iter().map(|d| d.payload.len() as u64 + 1).sum()
        };
        // What the server announced is on its way is waited for, briefly,
        // so that the count is whole.
        let deadline = tokio::time::Instant::now() + UNREAD_WAIT;
        while self.held.back().is_some_and(|d| d.pending > 0)
            && self.held.len() < QUEUE
            && bytes(&self.held) < count_max
        {
            let (Some(runtime), Some(queue)) = (self.runtime.as_ref(), self.queue.as_mut()) else {
                return None;
            };
            // The timeout is made inside the runtime: it needs its timer,
            // which the watcher's thread does not have.
            let next = async { tokio::time::timeout_at(deadline, queue.recv()).await };
            match runtime.block_on(next) {
                Ok(Some(delivered)) => self.held.push_back(delivered),
                Ok(None) | Err(_) => break,
            }
        }
        let whole = self.held.back().is_none_or(|d| d.pending == 0);
        Some(Unread {
            bytes: bytes(&self.held),
            lines: whole.then_some(self.held.len() as u64),
        })
    }

    fn take_notices(&mut self) -> Vec<Notice> {
        let mut shared = self
            .shared
            .notices
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut notices = std::mem::take(&mut self.notices);
        notices.append(&mut shared);
        notices
    }

    fn connections(&self) -> Option<Arc<AtomicU64>> {
        Some(self.link.connections.clone())
    }
}

/// A message's payload as an entry: one record, or its length when it is
/// longer than a record may be.
fn entry(payload: Bytes) -> Entry {
    if payload.len() > MAX_LINE_LEN {
        Entry::TooLong {
            len: payload.len() as u64,
        }
    } else {
        Entry::Record(payload.to_vec())
    }
}

/// The task that follows the stream and queues its messages.
struct Follower {
    url: NatsUrl,
    settings: NatsSettings,
    /// The next stream sequence to queue.
    next: u64,
    /// The stream's creation time when the position was saved, if known.
    created: Option<String>,
    queue: mpsc::Sender<Delivered>,
    shared: Arc<Shared>,
    link: Arc<Link>,
    /// A server refused this node the live copies: read through a
    /// consumer only.
    live_refused: bool,
}

/// How a round of following ended without a failure.
enum Followed {
    /// The feed is gone: stop.
    FeedGone,
    /// Records were missed on the live subjects (their copies are sent at
    /// most once): follow again from the next sequence, at once.
    Behind,
    /// The consumer handed out every record stored so far.
    CaughtUp,
}

impl Follower {
    async fn run(mut self) {
        let mut pause = Duration::from_millis(100);
        let client = loop {
            match runtime::connect(&self.url, &self.settings, self.link.clone()).await {
                Ok(client) => {
                    *self
                        .shared
                        .client
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(client.clone());
                    break client;
                }
                Err(failure) => {
                    let why = failure.text().to_owned();
                    self.shared.set_trouble(Some(match failure {
                        ConnectFailure::Unreachable(_) => FeedError::Unreachable(format!(
                            "log {} is unreachable ({UNREACHABLE_HINT}): {why}",
                            self.url
                        )),
                        ConnectFailure::Refused(_) => {
                            FeedError::Other(format!("log {}: {why}", self.url))
                        }
                    }));
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MAX);
        };
        let mut js = jetstream::new(client.clone());
        js.set_timeout(self.settings.timeout);
        loop {
            match self.follow_once(&js, &client).await {
                Ok(Followed::FeedGone) => return,
                Ok(Followed::Behind | Followed::CaughtUp) => continue,
                Err(trouble) => {
                    log::debug!("log {}: {trouble}", self.url);
                    self.shared.set_trouble(Some(trouble));
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// The error that says the stream is out of reach, and why.
    fn unreachable(&self, why: String) -> FeedError {
        FeedError::Unreachable(format!(
            "log {} is unreachable ({UNREACHABLE_HINT}): {why}",
            self.url
        ))
    }

    /// Follows the stream from `next`: subscribes to its live copies (if
    /// it republishes them and this node may), reads what was stored
    /// before through a consumer, then only the live copies, until a gap
    /// (`Behind`), a failure (`Err`: why, as the feed reports it) or the
    /// feed is gone. A stream that does not republish is read through the
    /// consumer only.
    async fn follow_once(
        &mut self,
        js: &jetstream::Context,
        client: &async_nats::Client,
    ) -> Result<Followed, FeedError> {
        let mut stream = js.get_stream(&self.url.stream).await.map_err(|e| {
            let missing = matches!(
                e.kind(),
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
            );
            match missing {
                true => FeedError::Missing(format!(
                    "log {}: stream {:?} does not exist ({MISSING_HINT})",
                    self.url, self.url.stream
                )),
                false => self.unreachable(format!("looking up stream {:?}: {e}", self.url.stream)),
            }
        })?;
        // Subscribed before the stream's state is read: every record
        // stored after that state comes live.
        let live = match stream.cached_info().config.republish == Some(init::live_copies(&self.url))
        {
            true => self.subscribe_live(client).await?,
            false => None,
        };
        let info = stream
            .info()
            .await
            .map_err(|e| self.unreachable(format!("stream info: {e}")))?;
        let created = info.created.unix_timestamp_nanos().to_string();
        self.check_identity(&created, info.state.last_sequence);
        let Some(live) = live else {
            return self.consume(&mut stream, client, false).await;
        };
        if self.next <= info.state.last_sequence
            && let Followed::FeedGone = self.consume(&mut stream, client, true).await?
        {
            return Ok(Followed::FeedGone);
        }
        self.shared.set_trouble(None);
        self.follow_live(&mut stream, live, created).await
    }

    /// A subscription to the stream's live copies, once the server took
    /// it; `None` when this node may not subscribe to them (it then reads
    /// through a consumer, and says so once).
    async fn subscribe_live(
        &mut self,
        client: &async_nats::Client,
    ) -> Result<Option<async_nats::Subscriber>, FeedError> {
        if self.live_refused {
            return Ok(None);
        }
        let subscriber = client
            .subscribe(self.url.live_subjects())
            .await
            .map_err(|e| self.unreachable(format!("subscribing: {e}")))?;
        // The server takes a subscription before it answers the flush's
        // ping; a refusal comes before the answer too, but is noted
        // later, so `follow_live` looks again.
        client
            .flush()
            .await
            .map_err(|e| self.unreachable(format!("subscribing: {e}")))?;
        if self.refused_live() {
            return Ok(None);
        }
        Ok(Some(subscriber))
    }

    /// Whether a server refused this node's subscription to the live
    /// copies; the first time, a warning says what to grant.
    fn refused_live(&mut self) -> bool {
        if self.live_refused {
            return true;
        }
        let live = self.url.live_subjects();
        let refused = self
            .link
            .refusal()
            .is_some_and(|why| why.contains("Subscription") && why.contains(&live));
        if refused {
            self.live_refused = true;
            self.shared.notice(
                true,
                format!(
                    "log {}: this node may not subscribe to {live}, where the stream \
                     republishes its records: following it through a consumer instead, which \
                     costs the servers more (docs/deploy.md lists the permissions)",
                    self.url
                ),
            );
        }
        refused
    }

    /// Says (with `-v`) why the live copies are left: the records from
    /// `next` on are read through a consumer.
    fn behind(&self, why: fmt::Arguments) -> Followed {
        log::debug!(
            "log {}: following through a consumer from sequence {}: {why}",
            self.url,
            self.next
        );
        Followed::Behind
    }

    /// Reads the stream from `next` through an ordered consumer, queueing
    /// each record, until it is caught up (when `until_caught_up`), fails
    /// (`Err`) or the feed is gone.
    async fn consume(
        &mut self,
        stream: &mut jetstream::stream::Stream,
        client: &async_nats::Client,
        until_caught_up: bool,
    ) -> Result<Followed, FeedError> {
        let deliver_policy = match self.next {
            0 | 1 => DeliverPolicy::All,
            start_sequence => DeliverPolicy::ByStartSequence { start_sequence },
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_subject: client.new_inbox(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| self.unreachable(format!("making a consumer: {e}")))?;
        let name = consumer.cached_info().name.clone();
        // Records deleted (compacted) since the state was read leave
        // nothing to deliver.
        if until_caught_up && consumer.cached_info().num_pending == 0 {
            drop_consumer(stream, &name).await;
            return Ok(Followed::CaughtUp);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| self.unreachable(format!("subscribing: {e}")))?;
        self.shared.set_trouble(None);
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| self.unreachable(format!("consumer: {e}")))?;
            let Ok(info) = message.info() else { continue };
            let (seq, pending) = (info.stream_sequence, info.pending);
            if seq >= self.next
                && !self
                    .queue_record(seq, &message.message.payload, pending)
                    .await
            {
                return Ok(Followed::FeedGone);
            }
            if until_caught_up && pending == 0 {
                drop(messages);
                drop_consumer(stream, &name).await;
                return Ok(Followed::CaughtUp);
            }
        }
        Err(self.unreachable("the consumer ended".into()))
    }

    /// Queues the record of sequence `seq`, the next one; `false` when the
    /// feed is gone.
    async fn queue_record(&mut self, seq: u64, payload: &Bytes, pending: u64) -> bool {
        let delivered = Delivered {
            seq,
            payload: payload.clone(),
            pending,
        };
        if self.queue.send(delivered).await.is_err() {
            return false;
        }
        self.next = seq + 1;
        self.shared.wake();
        true
    }

    /// Follows the live copies, each in sequence. A copy ahead of `next`
    /// means copies were lost (a reconnect, a new stream leader, a slow
    /// subscriber): `Behind`. So does a new connection, a stream made
    /// anew, or a record the stream held two looks ago that has not come:
    /// the last record's copy may be lost with no later one to show it.
    async fn follow_live(
        &mut self,
        stream: &mut jetstream::stream::Stream,
        mut live: async_nats::Subscriber,
        created: String,
    ) -> Result<Followed, FeedError> {
        let connections = self.link.connections.load(Ordering::Relaxed);
        let mut stored_before: Option<u64> = None;
        let mut ticks = 0u32;
        let mut tick = tokio::time::Instant::now() + LIVE_TICK;
        loop {
            match tokio::time::timeout_at(tick, live.next()).await {
                Ok(Some(message)) => {
                    // Not a live copy of this stream's: ignored. Before
                    // `next`: handed out already.
                    let Some(seq) = live_sequence(&message, &self.url.stream) else {
                        continue;
                    };
                    if seq > self.next {
                        return Ok(self.behind(format_args!("the copy of {seq} came")));
                    }
                    if seq == self.next && !self.queue_record(seq, &message.payload, 0).await {
                        return Ok(Followed::FeedGone);
                    }
                }
                Ok(None) => return Err(self.unreachable("the subscription ended".into())),
                Err(_) => {
                    tick = tokio::time::Instant::now() + LIVE_TICK;
                    ticks += 1;
                    if self.refused_live() {
                        return Ok(self.behind(format_args!("refused")));
                    }
                    if self.link.connections.load(Ordering::Relaxed) != connections {
                        return Ok(self.behind(format_args!("reconnected")));
                    }
                    if !ticks.is_multiple_of(VERIFY_TICKS) {
                        continue;
                    }
                    // A failed look is left to the next one: the client
                    // reconnects by itself, and that is noticed above.
                    let Ok(info) = stream.info().await else {
                        continue;
                    };
                    let made_anew = info.created.unix_timestamp_nanos().to_string() != created;
                    if made_anew {
                        return Ok(self.behind(format_args!("the stream was made anew")));
                    }
                    if let Some(last) = stored_before.filter(|&last| last >= self.next) {
                        return Ok(self.behind(format_args!("the stream held {last} a look ago")));
                    }
                    stored_before = Some(info.state.last_sequence);
                }
            }
        }
    }

    /// Notices a stream made anew since the position was saved (another
    /// creation time, or fewer records than the position is past): it is
    /// read from its start, and the watchers' policy drops what was
    /// applied already.
    fn check_identity(&mut self, created: &str, last_sequence: u64) {
        let recreated = match &self.created {
            Some(saved) => saved != created,
            None => self.next > last_sequence + 1,
        };
        if recreated && self.next > 1 {
            self.shared.notice(
                true,
                format!(
                    "log {}: stream {:?} is not the one the saved position (sequence {}) is in \
                     (made anew, or emptied): reading it from its start",
                    self.url,
                    self.url.stream,
                    self.next - 1
                ),
            );
            self.next = 1;
        }
        self.created = Some(created.to_owned());
        *self
            .shared
            .created
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(created.to_owned());
    }
}

/// Deletes the consumer `name`, no longer read, so that the servers stop
/// keeping it at once rather than after its inactivity limit (30 s). One
/// not deleted (a server gone) goes then.
async fn drop_consumer(stream: &jetstream::stream::Stream, name: &str) {
    if let Err(e) = stream.delete_consumer(name).await {
        log::debug!("deleting consumer {name}: {e}");
    }
}

/// The stream sequence of a live copy of a record of `stream`, from the
/// headers the stream adds; `None` for a message that is not one.
fn live_sequence(message: &async_nats::Message, stream: &str) -> Option<u64> {
    let headers = message.headers.as_ref()?;
    if headers.get(async_nats::header::NATS_STREAM)?.as_str() != stream {
        return None;
    }
    headers
        .get(async_nats::header::NATS_SEQUENCE)?
        .as_str()
        .parse()
        .ok()
}
