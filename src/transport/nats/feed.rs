//! The read side of the NATS transport: the stream, in order, from the
//! sequence after the last record handed out, through an ordered push
//! consumer (ephemeral, made anew by the follower whenever it fails, and
//! after every reconnect). Its [`Position`] is that stream sequence, with
//! the stream's name and the creation time of the stream that sequence
//! is in, of kind `"nats"`: a stream deleted and made again is read from
//! its start, whether the watcher was running (the follower looks the
//! stream up every 30 s) or not.
//!
//! A follower task on the feed's runtime receives the messages and queues
//! them, waking the watcher; the feed hands out what is queued. Each
//! sequence is queued once: the follower drops what it already queued
//! when a consumer made anew delivers it again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::push::OrderedConfig};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::Either;
use tokio::sync::mpsc;

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

/// How often it looks the stream up, to notice one deleted (reported as
/// missing) or made anew (read from its start): one small request per
/// watcher, about what a consumer's heartbeats cost the servers.
const LOOK_EVERY: Duration = Duration::from_secs(30);

/// A message of the stream, as the follower queued it.
struct Delivered {
    seq: u64,
    /// The creation time of the stream it is in: a position pairs a
    /// sequence with its own stream, never with one made anew since.
    created: Arc<str>,
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
    /// The creation time of the stream of `seq`: saved with the position
    /// resumed, then that of the last record handed out.
    created: Option<String>,
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
            created: None,
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
            created: self.created.clone(),
            queue: tx,
            shared: self.shared.clone(),
            link: self.link.clone(),
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
        self.created = created.map(str::to_owned);
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
                if self.created.as_deref() != Some(&*d.created) {
                    self.created = Some(d.created.to_string());
                }
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
        let created = &self.created;
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
    /// The creation time of the stream `next` is in: the saved
    /// position's, then the one looked up.
    created: Option<String>,
    queue: mpsc::Sender<Delivered>,
    shared: Arc<Shared>,
    link: Arc<Link>,
}

/// How a round of following ended without a failure.
enum Followed {
    /// The feed is gone: stop.
    FeedGone,
    /// Follow again from `next` at once, with a consumer of our own: the
    /// client reconnected, or the stream was made anew.
    Again,
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
                        ConnectFailure::Unreachable(_) => self.unreachable(why),
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
                Ok(Followed::Again) => continue,
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

    /// The stream, looked up: its state and its creation time.
    async fn look_up(
        &self,
        js: &jetstream::Context,
    ) -> Result<(jetstream::stream::Stream, String, u64), FeedError> {
        let stream = js.get_stream(&self.url.stream).await.map_err(|e| {
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
        // Looking it up fetched its state: no second request.
        let info = stream.cached_info();
        let created = info.created.unix_timestamp_nanos().to_string();
        let last_sequence = info.state.last_sequence;
        Ok((stream, created, last_sequence))
    }

    /// Makes a consumer from `next` and queues what it delivers, until it
    /// fails (`Err`: why, as the feed reports it), the feed is gone, or
    /// the consumer must be made anew by us: after a reconnect, or when a
    /// look at the stream every [`LOOK_EVERY`] finds it made anew. The
    /// client remakes an ordered consumer by itself from its own count of
    /// the stream, which knows nothing of the follower's position nor of
    /// a stream made anew (it went on at the old stream's sequence).
    async fn follow_once(
        &mut self,
        js: &jetstream::Context,
        client: &async_nats::Client,
    ) -> Result<Followed, FeedError> {
        let (stream, created, last_sequence) = self.look_up(js).await?;
        self.check_identity(&created, last_sequence);
        let created: Arc<str> = created.into();
        let deliver_policy = match self.next {
            0 | 1 => DeliverPolicy::All,
            start_sequence => DeliverPolicy::ByStartSequence { start_sequence },
        };
        // Made before anything else: it hears every connection made from
        // now on, while the follower waits or not (a `Notified` keeps what
        // `notify_waiters` told it until it is polled).
        let link = self.link.clone();
        let mut reconnected = std::pin::pin!(link.connected.notified());
        let connections = link.connections.load(Ordering::Relaxed);
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_subject: client.new_inbox(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| self.unreachable(format!("making a consumer: {e}")))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| self.unreachable(format!("subscribing: {e}")))?;
        self.shared.set_trouble(None);
        let mut look_at = tokio::time::Instant::now() + LOOK_EVERY;
        loop {
            // Both looked at on every pass, so that records coming without
            // a pause delay neither.
            if link.connections.load(Ordering::Relaxed) != connections {
                return Ok(Followed::Again);
            }
            if tokio::time::Instant::now() >= look_at {
                look_at = tokio::time::Instant::now() + LOOK_EVERY;
                if self.made_anew(js, &created).await? {
                    return Ok(Followed::Again);
                }
            }
            let next = std::pin::pin!(messages.next());
            let either = futures_util::future::select(next, reconnected.as_mut());
            let message = match tokio::time::timeout_at(look_at, either).await {
                Ok(Either::Left((Some(message), _))) => {
                    message.map_err(|e| self.unreachable(format!("consumer: {e}")))?
                }
                Ok(Either::Left((None, _))) => {
                    return Err(self.unreachable("the consumer ended".into()));
                }
                Ok(Either::Right(((), _))) => return Ok(Followed::Again),
                Err(_) => continue,
            };
            let Ok(info) = message.info() else { continue };
            let (seq, pending) = (info.stream_sequence, info.pending);
            if seq < self.next {
                continue;
            }
            let delivered = Delivered {
                seq,
                created: created.clone(),
                payload: message.message.payload.clone(),
                pending,
            };
            if self.queue.send(delivered).await.is_err() {
                return Ok(Followed::FeedGone);
            }
            self.next = seq + 1;
            self.shared.wake();
        }
    }

    /// Whether the stream followed, made at `created`, was deleted and
    /// made again since (`Err` while it does not exist: the watcher says
    /// the log is missing). A look that fails otherwise is left to the
    /// next one: the client reconnects by itself, which is noticed.
    async fn made_anew(&self, js: &jetstream::Context, created: &str) -> Result<bool, FeedError> {
        match self.look_up(js).await {
            Ok((_, now, last_sequence)) => Ok(now != created || self.next > last_sequence + 1),
            Err(missing @ FeedError::Missing(_)) => Err(missing),
            Err(_) => Ok(false),
        }
    }

    /// Notices a stream made anew since the position was saved (another
    /// creation time, or fewer records than the position is past): it is
    /// read from its start, and the watchers' policy drops what was
    /// applied already.
    fn check_identity(&mut self, created: &str, last_sequence: u64) {
        // The same stream's last sequence never goes down (not even when
        // records are deleted); it does when a stream is restored from an
        // older backup, which keeps its creation time.
        let behind = self.next > last_sequence + 1;
        let recreated = match &self.created {
            Some(saved) => saved != created || behind,
            None => behind,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(next: u64, created: &str) -> Follower {
        let (queue, _) = mpsc::channel(1);
        Follower {
            url: NatsUrl::parse("nats://198.51.100.1/BANS").unwrap(),
            settings: NatsSettings::default(),
            next,
            created: Some(created.into()),
            queue,
            shared: Arc::default(),
            link: Arc::default(),
        }
    }

    /// review20 M2: a stream restored from an older backup keeps its
    /// creation time but holds fewer records than the follower read: the
    /// records published there since, below `next`, would never be read.
    #[test]
    fn a_stream_behind_the_position_is_read_from_its_start() {
        let mut same = follower(10, "A");
        same.check_identity("A", 9);
        assert_eq!(same.next, 10, "the stream it read, with all it read");
        let mut restored = follower(10, "A");
        restored.check_identity("A", 5);
        assert_eq!(restored.next, 1);
        let mut anew = follower(10, "A");
        anew.check_identity("B", 20);
        assert_eq!(anew.next, 1);
        let notices = anew.shared.notices.lock().unwrap();
        assert!(
            notices[0]
                .text
                .contains("is not the one the saved position (sequence 9)")
        );
    }
}
