//! The read side of the ZeroMQ transport: the publisher's banshare
//! broadcast (PUB), with catch-up (REQ to its catch-up socket) whenever
//! the broadcast alone may have lost something.
//!
//! PUB drops messages to a subscriber that is slow or away, so the
//! broadcast is only a fast path and a wake-up: records are numbered, and
//! the feed asks the catch-up socket for everything after the last one it
//! handed out when it starts or resumes, when a number is skipped, when a
//! heartbeat announces a record it has not seen, when its own queue
//! overflowed, and when the broadcast has been silent for longer than a
//! few heartbeats (a lost connection, a publisher that restarted). Its
//! [`Position`] is the publisher's epoch, the last record's number and
//! that record's [`Digest`] (absent in positions saved by older versions),
//! of kind `"zmq"`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::handshake::{PROBE_WAIT, probe};
use super::sender::{CONNECT_WAIT, MAX_FRAME, millis_left, request_socket};
use super::wire::{self, CATCH_UP_MAX, CatchUp, Digest, Epoch, Header, WireError};
use super::{CurveClient, UNREACHABLE_HINT, ZmqSettings, ZmqUrl};
use crate::follow::{Handle, Mode, Msg};
use crate::record::MAX_LINE_LEN;
use crate::transport::feed::{Entry, Feed, FeedError, Notice, Position, Unread};

/// The kind of position a [`ZmqFeed`] hands out.
pub const KIND: &str = "zmq";

/// How long the receiver waits in one call: it looks at its stop flag
/// this often, and does nothing else while the feed is idle.
const RECEIVE_WAIT_MS: i32 = 1000;

/// The broadcast is taken as lost after this long without a message
/// (heartbeats come every second): the next read catches up.
const SILENCE: Duration = Duration::from_secs(3);

/// Broadcast messages held between reads; past that, they are dropped and
/// fetched by catch-up.
const QUEUE: usize = 4096;

/// Records held ahead of a missing one, waiting for it.
const HELD_MAX: usize = 4 * CATCH_UP_MAX as usize;

/// Catch-up requests in one read, at most.
const CATCH_UP_ROUNDS: usize = 16;

/// At most one notice about malformed messages per this long.
const MALFORMED_NOTICE_EVERY: Duration = Duration::from_secs(60);

/// What the receiver took from the broadcast.
enum Pushed {
    Record {
        header: Header,
        seq: u64,
        line: Vec<u8>,
    },
    Heartbeat(Header),
    Malformed(WireError),
}

/// What the receiver and the feed share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// The receiver dropped a message: the queue was full.
    overflowed: AtomicBool,
    /// When the broadcast was last heard, in ms since `started`.
    heard_ms: AtomicU64,
    /// The broadcast's connection is up, as libzmq's monitor last said.
    connected: AtomicBool,
    /// It came up again since the last read: what it missed meanwhile is
    /// to be asked for.
    reconnected: AtomicBool,
    handle: Mutex<Option<Handle>>,
}

impl Shared {
    /// Tells the daemon's loop there may be more to read.
    fn wake(&self) {
        let handle = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = handle.as_ref() {
            handle.send(Msg::Changed);
        }
    }
}

/// A publisher's banshare broadcast, as a [`Feed`].
pub struct ZmqFeed {
    url: ZmqUrl,
    log: String,
    settings: ZmqSettings,
    safety: Duration,
    context: zmq::Context,
    started: Instant,
    shared: Arc<Shared>,
    queue: Option<mpsc::Receiver<Pushed>>,
    /// The log the records come from; `None` until the publisher said.
    epoch: Option<Epoch>,
    /// The number of the last record handed out (0: none).
    seq: u64,
    /// That record's digest, sent with each catch-up request so that the
    /// publisher can tell whether its record `seq` is still that one;
    /// `None` when not known.
    digest: Option<Digest>,
    /// The publisher refused a request with a digest (it predates them):
    /// asked without from then on.
    no_digest: bool,
    /// The publisher's last record, as last heard.
    last: Option<u64>,
    /// Records received after `seq + 1`, waiting for the ones before.
    held: BTreeMap<u64, Vec<u8>>,
    /// The last number of the last catch-up reply: up to there, the reply
    /// held every record the publisher has, so a number missing below it
    /// was compacted away there, not lost on the way (see `hand_out`).
    answered_through: u64,
    /// Something may have been missed: ask the catch-up socket.
    behind: bool,
    /// The catch-up socket; `None` before the first catch-up and after one
    /// failed.
    catch_up: Option<zmq::Socket>,
    connections: Arc<AtomicU64>,
    notices: Vec<Notice>,
    malformed: u64,
    malformed_told: Option<Instant>,
}

impl ZmqFeed {
    /// The feed of the publisher at `url`, whose other sockets `settings`
    /// places; the watcher looks anyway every `safety`. Connects nothing
    /// until the first call.
    pub fn new(url: &ZmqUrl, settings: &ZmqSettings, safety: Duration) -> ZmqFeed {
        ZmqFeed {
            url: url.clone(),
            log: url.to_string(),
            settings: settings.clone(),
            safety,
            context: zmq::Context::new(),
            started: Instant::now(),
            shared: Arc::default(),
            queue: None,
            epoch: None,
            seq: 0,
            digest: None,
            no_digest: false,
            last: None,
            held: BTreeMap::new(),
            answered_through: 0,
            behind: true,
            catch_up: None,
            connections: Arc::default(),
            notices: Vec::new(),
            malformed: 0,
            malformed_told: None,
        }
    }

    /// Subscribes, on a thread of its own, if not yet done. Before any
    /// catch-up, so that nothing falls between the two.
    fn subscribe(&mut self) -> Result<(), FeedError> {
        if self.queue.is_some() {
            return Ok(());
        }
        let endpoint = self.url.endpoint(self.settings.feed_port);
        let (socket, monitor) = subscriber(&self.context, &endpoint, self.settings.curve.as_ref())
            .map_err(|e| FeedError::Other(format!("log {}: cannot subscribe: {e}", self.log)))?;
        let (tx, rx) = sync_channel(QUEUE);
        let receiver = Receiver {
            socket,
            monitor,
            queue: tx,
            shared: self.shared.clone(),
            connections: self.connections.clone(),
            started: self.started,
        };
        thread::Builder::new()
            .name("zmq-feed".into())
            .spawn(move || receiver.run())
            .map_err(|e| FeedError::Other(format!("cannot start the zmq receiver: {e}")))?;
        self.queue = Some(rx);
        Ok(())
    }

    fn unreachable(&self, why: String) -> FeedError {
        FeedError::Unreachable(format!(
            "log {} is unreachable ({UNREACHABLE_HINT}): {why}",
            self.log
        ))
    }

    /// Takes what the receiver queued: holds the records after `seq`,
    /// notes what the headers say.
    fn drain(&mut self) {
        let Some(queue) = &self.queue else { return };
        let pushed: Vec<Pushed> = queue.try_iter().collect();
        let reconnected = self.shared.reconnected.swap(false, Ordering::Relaxed);
        if self.shared.overflowed.swap(false, Ordering::Relaxed) || reconnected {
            self.behind = true;
        }
        for message in pushed {
            match message {
                Pushed::Record { header, seq, line } => {
                    if self.note(header) && seq > self.seq && self.held.len() < HELD_MAX {
                        self.held.insert(seq, line);
                    }
                }
                Pushed::Heartbeat(header) => {
                    self.note(header);
                }
                Pushed::Malformed(e) => self.refused_message(e),
            }
        }
        let heard = Duration::from_millis(self.shared.heard_ms.load(Ordering::Relaxed));
        let silent = self.started.elapsed().saturating_sub(heard) > SILENCE;
        if silent || !self.shared.connected.load(Ordering::Relaxed) {
            self.behind = true;
        }
    }

    /// Whether `header` is of the log being read; notes how far it goes.
    fn note(&mut self, header: Header) -> bool {
        if Some(header.epoch) != self.epoch {
            // Another log, or the first word from the publisher: only the
            // catch-up socket's answer changes the epoch.
            self.behind = true;
            return false;
        }
        if header.last < self.seq {
            // The publisher's log ends before what was read: asked again,
            // the catch-up answer says so (see `rolled_back`).
            self.behind = true;
        }
        self.last = Some(header.last.max(self.last.unwrap_or(0)));
        true
    }

    fn refused_message(&mut self, e: WireError) {
        self.malformed += 1;
        let due = self
            .malformed_told
            .is_none_or(|told| told.elapsed() >= MALFORMED_NOTICE_EVERY);
        if due {
            self.malformed_told = Some(Instant::now());
            self.notices.push(Notice {
                warning: true,
                text: format!(
                    "refused a message from the publisher's feed ({e}); {} refused so far",
                    self.malformed
                ),
            });
        }
    }

    /// Hands out the held records that follow `seq`, up to `max` in all.
    fn hand_out(&mut self, out: &mut Vec<Entry>, max: usize) {
        while out.len() < max {
            let next = self.seq.saturating_add(1);
            if let Some(line) = self.held.remove(&next) {
                self.seq = next;
                self.digest = Some(Digest::of(&line));
                out.push(entry(line));
                continue;
            }
            if next > self.answered_through || next == self.seq {
                break;
            }
            // Compacted away at the publisher (its log keeps the numbers
            // of the records in force): on to the next one it has.
            let resume = match self.held.keys().next() {
                Some(&held) if held <= self.answered_through => held - 1,
                _ => self.answered_through,
            };
            if resume <= self.seq {
                break;
            }
            self.seq = resume;
            // The digest names a record before the gap, not `seq`.
            self.digest = None;
        }
        self.held.retain(|&seq, _| seq > self.seq);
    }

    /// One catch-up request: the records after `seq`, held. Returns whether
    /// it brought anything new.
    fn catch_up_once(&mut self) -> Result<bool, FeedError> {
        let mut ask = CatchUp {
            epoch: self.epoch.unwrap_or(Epoch(0)),
            after: self.seq,
            digest: self.digest.filter(|_| self.seq > 0 && !self.no_digest),
        };
        let mut frames = self.request(&ask.encode())?;
        if ask.digest.is_some() && frames == [b"NAK malformed".to_vec()] {
            // A publisher of an older banshare: asked as it understands.
            self.no_digest = true;
            self.notices.push(Notice {
                warning: true,
                text: "the publisher does not take a record digest in catch-up requests (an \
                       older banshare): a restore of its log is seen only while the log is \
                       shorter than this position; upgrade it"
                    .into(),
            });
            ask.digest = None;
            frames = self.request(&ask.encode())?;
        }
        let Some((first, records)) = frames.split_first() else {
            return Err(self.bad_reply("an empty reply"));
        };
        let header = Header::decode(first).map_err(|e| self.bad_reply(&e.to_string()))?;
        if Some(header.epoch) != self.epoch {
            // The records came for another log: asked again in this one.
            self.new_epoch(header.epoch);
            self.last = Some(header.last);
            return Ok(true);
        }
        if header.last < self.seq {
            self.rolled_back(header.last);
        } else if ask.digest.is_some() && starts_at_or_before(records, self.seq) {
            // Only an answer to a digest that is not the publisher's
            // record `seq` starts there.
            self.renumbered();
        }
        self.last = Some(header.last);
        let mut brought = false;
        let mut first = None;
        for frame in records.iter().take(CATCH_UP_MAX as usize) {
            match wire::decode_record(frame) {
                Ok((seq, line)) if seq > self.seq => {
                    first = first.or(Some(seq));
                    self.answered_through = self.answered_through.max(seq);
                    brought |= self.held.insert(seq, line.to_vec()).is_none();
                }
                Ok(_) => {}
                Err(e) => self.refused_message(e),
            }
        }
        if let Some(first) = first.filter(|&first| first > self.seq.saturating_add(1)) {
            self.skip_lost(first);
        }
        Ok(brought)
    }

    /// The publisher answered records after `seq` from `resume_at` on: it
    /// no longer has those before (its log was cut). Goes on after the gap,
    /// saying so.
    fn skip_lost(&mut self, resume_at: u64) {
        let next = self.seq.saturating_add(1);
        self.notices.push(Notice {
            warning: true,
            text: format!(
                "the publisher no longer has records {next} to {}: skipped (compacted away \
                 as no longer in force, or its log was cut)",
                resume_at - 1
            ),
        });
        self.seq = resume_at - 1;
        self.digest = None;
    }

    /// The publisher's log, of the same epoch, ends at `last`, before the
    /// records read so far (restored from an older copy, or cut). Which of
    /// its records are new cannot be told (the numbers were given again),
    /// so it is read again from its first record; the policy drops what
    /// was already applied. Says so.
    fn rolled_back(&mut self, last: u64) {
        self.notices.push(Notice {
            warning: true,
            text: format!(
                "the publisher's log ends at record {last}, before record {} read here (was it \
                 restored from an older copy?): reading it again from its first record; the \
                 policy drops what was already applied",
                self.seq
            ),
        });
        self.seq = 0;
        self.answered_through = 0;
        self.digest = None;
        self.held.clear();
    }

    /// The publisher's record `seq` is not the one handed out under that
    /// number: its log went back to an older copy and numbered new records
    /// again, past `seq`, while this feed was away. As for
    /// [`rolled_back`](Self::rolled_back), it is read again from its
    /// first record. Says so.
    fn renumbered(&mut self) {
        self.notices.push(Notice {
            warning: true,
            text: format!(
                "the publisher's record {} is not the one read here (was its log restored from \
                 an older copy?): reading it again from its first record; the policy drops \
                 what was already applied",
                self.seq
            ),
        });
        self.seq = 0;
        self.answered_through = 0;
        self.digest = None;
        self.held.clear();
    }

    /// The publisher's log is not the one read so far: starts again from
    /// its first record.
    fn new_epoch(&mut self, epoch: Epoch) {
        if let Some(old) = self.epoch {
            self.notices.push(Notice {
                warning: true,
                text: format!(
                    "the publisher has a new log (epoch {epoch}, was {old} at record {}): \
                     reading it from its first record; the policy drops what was already applied",
                    self.seq
                ),
            });
        }
        self.epoch = Some(epoch);
        self.seq = 0;
        self.answered_through = 0;
        self.digest = None;
        self.last = None;
        self.held.clear();
    }

    /// Asks the catch-up socket, lazy pirate: a deadline on the whole
    /// exchange, and a fresh socket after any failure.
    fn request(&mut self, ask: &str) -> Result<Vec<Vec<u8>>, FeedError> {
        let deadline = Instant::now() + self.settings.timeout;
        if self.catch_up.is_none() {
            let endpoint = self.url.endpoint(self.settings.catch_up_port);
            let socket = request_socket(&self.context, &endpoint, self.settings.curve.as_ref())
                .map_err(|e| FeedError::Other(format!("log {}: {e}", self.log)))?;
            self.connections.fetch_add(1, Ordering::Relaxed);
            self.catch_up = Some(socket);
        }
        let socket = self.catch_up.as_ref().expect("just made");
        // A publisher that is away fails as fast as for a sender.
        let connect_wait = CONNECT_WAIT.min(self.settings.timeout);
        let sent = socket
            .set_sndtimeo(millis_left(Instant::now() + connect_wait))
            .and_then(|()| socket.send(ask, 0));
        let answer = match sent {
            Err(zmq::Error::EAGAIN) => {
                // Not connected: a failed handshake is named (a probe asks),
                // not taken for a publisher that is away.
                let endpoint = self.url.endpoint(self.settings.catch_up_port);
                let curve = self.settings.curve.as_ref();
                if let Some(failure) = probe(&self.context, &endpoint, curve, PROBE_WAIT) {
                    self.catch_up = None;
                    return Err(FeedError::Other(format!("log {}: {failure}", self.log)));
                }
                Err(format!(
                    "its catch-up socket did not connect within {connect_wait:?}"
                ))
            }
            Err(e) => Err(e.to_string()),
            Ok(()) => socket
                .set_rcvtimeo(millis_left(deadline))
                .and_then(|()| socket.recv_multipart(0))
                .map_err(|e| match e {
                    zmq::Error::EAGAIN => {
                        format!("no catch-up answer within {:?}", self.settings.timeout)
                    }
                    e => e.to_string(),
                }),
        };
        answer.map_err(|why| {
            self.catch_up = None;
            self.unreachable(why)
        })
    }

    fn bad_reply(&mut self, why: &str) -> FeedError {
        self.catch_up = None;
        FeedError::Other(format!(
            "log {}: the publisher's catch-up reply is malformed: {why}",
            self.log
        ))
    }

    /// Catches up until `max` records are out, or nothing more comes, in
    /// a bounded number of requests (a publisher could keep answering).
    fn catch_up(&mut self, out: &mut Vec<Entry>, max: usize) -> Result<(), FeedError> {
        for _ in 0..CATCH_UP_ROUNDS {
            let brought = self.catch_up_once()?;
            self.hand_out(out, max);
            let more = self.last.is_some_and(|last| last > self.seq);
            self.behind = more;
            if !brought || !more || out.len() >= max {
                return Ok(());
            }
        }
        // More next time: the loop would take a short read for caught up.
        // Only after progress: a publisher that keeps changing its epoch
        // must not keep the loop busy.
        if !out.is_empty() {
            self.wake_loop();
        }
        Ok(())
    }

    fn wake_loop(&self) {
        self.shared.wake();
    }
}

/// Whether the first of a catch-up reply's `records` is numbered `seq` or
/// before.
fn starts_at_or_before(records: &[Vec<u8>], seq: u64) -> bool {
    records
        .first()
        .and_then(|frame| wire::decode_record(frame).ok())
        .is_some_and(|(first, _)| first <= seq)
}

/// A record line as handed out.
fn entry(line: Vec<u8>) -> Entry {
    if line.len() > MAX_LINE_LEN {
        Entry::TooLong {
            len: line.len() as u64,
        }
    } else {
        Entry::Record(line)
    }
}

/// The endpoint libzmq reports the broadcast's connection events on,
/// within the feed's own context.
const MONITOR: &str = "inproc://zmq-feed-monitor";

/// A SUB socket to `endpoint` (a CURVE client if `curve` says so), and
/// the socket its connection events come on.
fn subscriber(
    context: &zmq::Context,
    endpoint: &str,
    curve: Option<&CurveClient>,
) -> Result<(zmq::Socket, zmq::Socket), String> {
    let (socket, monitor) = monitored_sub(context).map_err(|e| e.to_string())?;
    super::secure(&socket, curve)?;
    socket.connect(endpoint).map_err(|e| e.to_string())?;
    Ok((socket, monitor))
}

/// A SUB socket taking everything, and the socket its connection events
/// come on; not connected yet.
fn monitored_sub(context: &zmq::Context) -> zmq::Result<(zmq::Socket, zmq::Socket)> {
    let socket = context.socket(zmq::SUB)?;
    // As for the request socket: IPv6 publishers are reachable only so.
    socket.set_ipv6(true)?;
    socket.set_linger(0)?;
    socket.set_maxmsgsize(MAX_FRAME as i64)?;
    // A publisher that is away is tried again at most every 5 s.
    socket.set_reconnect_ivl_max(5000)?;
    socket.set_subscribe(b"")?;
    let events = zmq::SocketEvent::CONNECTED as i32 | zmq::SocketEvent::DISCONNECTED as i32;
    socket.monitor(MONITOR, events)?;
    let monitor = context.socket(zmq::PAIR)?;
    monitor.set_linger(0)?;
    monitor.connect(MONITOR)?;
    Ok((socket, monitor))
}

/// The receiver thread: queues what the broadcast brings and wakes the
/// loop for records, for heartbeats that announce something new and when
/// the connection goes or comes. An idle broadcast costs one wake-up of
/// this thread per second.
struct Receiver {
    socket: zmq::Socket,
    monitor: zmq::Socket,
    queue: SyncSender<Pushed>,
    shared: Arc<Shared>,
    connections: Arc<AtomicU64>,
    started: Instant,
}

impl Receiver {
    fn run(self) {
        let mut announced: Option<Header> = None;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let mut items = [
                self.socket.as_poll_item(zmq::POLLIN),
                self.monitor.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, RECEIVE_WAIT_MS.into()) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(_) => return,
            }
            let (message, event) = (items[0].is_readable(), items[1].is_readable());
            if event && let Ok(frames) = self.monitor.recv_multipart(zmq::DONTWAIT) {
                self.connection_event(&frames);
            }
            if message {
                match self.socket.recv_multipart(zmq::DONTWAIT) {
                    Ok(frames) => {
                        if !self.take(&frames, &mut announced) {
                            return;
                        }
                    }
                    Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {}
                    Err(_) => return,
                }
            }
        }
    }

    /// Queues one message; `false` once the feed is gone.
    fn take(&self, frames: &[Vec<u8>], announced: &mut Option<Header>) -> bool {
        let ms = self.started.elapsed().as_millis() as u64;
        self.shared.heard_ms.store(ms, Ordering::Relaxed);
        let pushed = decode(frames);
        let wake = match &pushed {
            Pushed::Heartbeat(header) => announced.replace(*header) != Some(*header),
            Pushed::Record { header, .. } => {
                *announced = Some(*header);
                true
            }
            // Told at the next read; nothing to read meanwhile.
            Pushed::Malformed(_) => false,
        };
        match self.queue.try_send(pushed) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.shared.overflowed.store(true, Ordering::Relaxed),
            Err(TrySendError::Disconnected(_)) => return false,
        }
        if wake {
            self.wake();
        }
        true
    }

    /// A monitor event: `[u16 event, u32 value]`, then the endpoint.
    fn connection_event(&self, frames: &[Vec<u8>]) {
        let Some(&[a, b, ..]) = frames.first().map(Vec::as_slice) else {
            return;
        };
        let shared = &self.shared;
        match zmq::SocketEvent::from_raw(u16::from_ne_bytes([a, b])) {
            zmq::SocketEvent::CONNECTED => {
                shared.connected.store(true, Ordering::Relaxed);
                shared.reconnected.store(true, Ordering::Relaxed);
                self.connections.fetch_add(1, Ordering::Relaxed);
            }
            zmq::SocketEvent::DISCONNECTED => shared.connected.store(false, Ordering::Relaxed),
            _ => return,
        }
        self.wake();
    }

    fn wake(&self) {
        self.shared.wake();
    }
}

/// One broadcast message: `[header]` or `[header, <seq> <line>]`.
fn decode(frames: &[Vec<u8>]) -> Pushed {
    let malformed = |why| {
        Pushed::Malformed(WireError {
            what: "broadcast",
            why,
        })
    };
    let header = match frames.first().map(|f| Header::decode(f)) {
        Some(Ok(header)) => header,
        Some(Err(e)) => return Pushed::Malformed(e),
        None => return malformed("no frame"),
    };
    match frames {
        [_] => Pushed::Heartbeat(header),
        [_, record] => match wire::decode_record(record) {
            Ok((seq, line)) => Pushed::Record {
                header,
                seq,
                line: line.to_vec(),
            },
            Err(e) => Pushed::Malformed(e),
        },
        _ => malformed("more than two frames"),
    }
}

impl Drop for ZmqFeed {
    fn drop(&mut self) {
        // The receiver sees it within a second and closes its socket.
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

impl Feed for ZmqFeed {
    fn log(&self) -> &str {
        &self.log
    }

    fn resume(&mut self, saved: &Position) -> Result<(), String> {
        if saved.kind != KIND {
            return Err(format!(
                "it is a position in a {} feed, not a ZeroMQ one",
                saved.kind
            ));
        }
        if saved.log != self.log {
            return Err(format!(
                "it is a position in {}, not {}",
                saved.log, self.log
            ));
        }
        let epoch = saved
            .at
            .get("epoch")
            .and_then(|e| e.as_str())
            .and_then(Epoch::parse)
            .ok_or("it has no epoch of 16 hex digits")?;
        // Positions saved before the digest have none: resumed as before.
        let digest = match saved.at.get("digest") {
            None => None,
            Some(d) => Some(
                d.as_str()
                    .and_then(Digest::parse)
                    .ok_or("its digest is not 16 hex digits")?,
            ),
        };
        self.epoch = Some(epoch);
        self.seq = saved.seq;
        self.digest = digest;
        self.held.clear();
        self.behind = true;
        Ok(())
    }

    fn watch(&mut self, wake: Handle) -> Mode {
        *self
            .shared
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(wake);
        // Failing here is told by the first read.
        let _ = self.subscribe();
        Mode::Pushed {
            safety: self.safety,
        }
    }

    fn read(&mut self, max: usize) -> Result<Vec<Entry>, FeedError> {
        self.subscribe()?;
        self.drain();
        let mut out = Vec::new();
        self.hand_out(&mut out, max);
        // Held records past a missing one, or a header announcing more.
        let missing = !self.held.is_empty() || self.last.is_some_and(|last| last > self.seq);
        let wanted = out.len() < max && (self.behind || missing);
        let caught_up = match wanted {
            true => self.catch_up(&mut out, max),
            false => Ok(()),
        };
        // What was handed out stays handed out; the error waits for the
        // next read.
        if let Err(e) = caught_up {
            self.behind = true;
            if out.is_empty() {
                return Err(e);
            }
        }
        Ok(out)
    }

    fn position(&self) -> Option<Position> {
        let epoch = self.epoch?;
        Some(Position {
            kind: KIND.into(),
            log: self.log.clone(),
            seq: self.seq,
            at: match self.digest {
                Some(digest) => serde_json::json!({
                    "epoch": epoch.to_string(),
                    "digest": digest.to_string(),
                }),
                None => serde_json::json!({ "epoch": epoch.to_string() }),
            },
        })
    }

    fn unread(&mut self, _count_max: u64) -> Option<Unread> {
        let behind = self.last?.saturating_sub(self.seq);
        let bytes = self.held.values().map(|l| l.len() as u64 + 1).sum();
        Some(Unread {
            bytes,
            lines: Some(behind),
        })
    }

    fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    fn connections(&self) -> Option<Arc<std::sync::atomic::AtomicU64>> {
        Some(self.connections.clone())
    }
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;
