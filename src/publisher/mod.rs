//! `banshare publisher`: the ZeroMQ publisher daemon.
//!
//! One thread owns all state: the log ([`log`]), the counters and four
//! sockets (see [`crate::transport::zmq::wire`]): the submissions REP, the
//! catch-up REP, the legacy PUB and banshare's PUB. It polls the two REP
//! sockets with a short timeout, so that it sends a heartbeat every second
//! and sees the stop flag (set by SIGTERM or SIGINT) within
//! [`STOP_CHECK`].
//!
//! The log is compacted at start and every [`COMPACT_EVERY`]
//! ([`RecordLog::compact`]): records no longer in force become gaps, every
//! other keeps its number, so subscribers go on where they were.
//!
//! A submission request is judged frame by frame ([`submit`]); the records
//! of the accepted frames are appended to the log with one write and one
//! fsync, and only then is the request answered, one reply frame per
//! request frame, and the records broadcast.

pub mod counters;
pub mod log;
pub mod submit;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use self::counters::{Counters, RateLimitedLog};
use self::log::{LogError, RecordLog};
use self::submit::{Accepted, Rules};
use crate::metrics::{MetricsError, StateExporter, counter, counter_by, int_gauge};
use crate::state::StateDir;
use crate::transport::zmq::wire::{self, CatchUp, Header, Reply};
use crate::transport::zmq::{curve, message};
use crate::watch::policy::retention::RetentionRules;

/// The largest frame libzmq hands over on the submission socket. Above the
/// parser's own limit (4096 bytes), so that an oversized message up to
/// this size is refused and counted by the parser (`too_long`); a larger
/// one makes libzmq drop its peer's connection.
pub const MAX_SUBMIT_FRAME: i64 = 2 << 20;

/// The largest frame taken on the catch-up socket: a request is one short
/// line, but libzmq applies the limit to the handshake's commands too, and
/// CURVE's INITIATE is larger than 256 bytes (at 256 every CURVE client
/// was dropped during its handshake).
const MAX_CATCH_UP_FRAME: i64 = 4096;

/// Replies libzmq holds for one catch-up client that has not taken them
/// (ZMQ_SNDHWM); past it, the publisher's reply to that client is dropped
/// (a REP socket drops, never blocks). An honest client (REQ, as the feed)
/// has one request in flight, so it never reaches it; one that sends
/// requests without reading its replies holds at most this many replies
/// of at most [`wire::CATCH_UP_MAX_BYTES`] each in the publisher (unbounded,
/// 1000 replies of 1000 records were hundreds of megabytes).
const CATCH_UP_SEND_HWM: i32 = 2;

/// Catch-up requests libzmq takes in from one client before the publisher
/// has read them (ZMQ_RCVHWM); past it, the rest wait in the network.
const CATCH_UP_RECEIVE_HWM: i32 = 4;

/// The most frames one submission request may hold; a request with more
/// is refused whole (`too_many_frames`).
pub const MAX_FRAMES: usize = 1000;

/// How often the loop looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// How often banshare's feed carries a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How often the publisher compacts its log, besides at start.
pub const COMPACT_EVERY: Duration = Duration::from_secs(3600);

/// How long closing a PUB socket may wait for queued messages.
const LINGER_MS: i32 = 1000;

/// Compacts the log, saying what it did; a failure leaves the log as it
/// was (the new one is renamed over it only once written) and is logged.
fn compact(log: &mut RecordLog, retention: &RetentionRules) {
    match log.compact(retention, chrono::Utc::now()) {
        Ok(done) if done.dropped > 0 => ::log::info!(
            "publisher: compacted the log: {} records kept, {} dropped ({} -> {} bytes); \
             every record keeps its number",
            done.kept,
            done.dropped,
            done.bytes_before,
            done.bytes_after
        ),
        Ok(_) => {}
        Err(e) => ::log::error!("publisher: cannot compact the log: {e}"),
    }
}

/// Where the publisher listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The address to bind; `None`: every address (`*`).
    pub address: Option<IpAddr>,
    pub submit_port: u16,
    pub catch_up_port: u16,
    /// The plaintext legacy broadcast; `None`: not bound at all, so that
    /// nothing goes out in clear (CURVE on and no legacy submissions).
    pub legacy_port: Option<u16>,
    pub feed_port: u16,
    /// A plaintext REP that takes legacy messages only, beside the
    /// submission socket: how the original's monitors reach a publisher
    /// whose own sockets use CURVE.
    pub legacy_submit_port: Option<u16>,
}

impl Listen {
    fn endpoint(&self, port: u16) -> String {
        match self.address {
            None => format!("tcp://*:{port}"),
            Some(IpAddr::V4(a)) => format!("tcp://{a}:{port}"),
            Some(IpAddr::V6(a)) => format!("tcp://[{a}]:{port}"),
        }
    }

    fn ipv6(&self) -> bool {
        !matches!(self.address, Some(IpAddr::V4(_)))
    }
}

/// CURVE for banshare's own sockets: the publisher's secret key and the
/// client public keys it admits.
#[derive(Debug, Clone)]
pub struct CurveServer {
    pub secret: curve::Key,
    pub clients: std::collections::HashSet<curve::Key>,
}

/// Which submission socket a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    /// The submission socket: records and (unless CURVE) legacy messages.
    Main,
    /// The plaintext legacy socket: legacy messages only, so that a record
    /// never enters without CURVE's allow-list when CURVE is on.
    Legacy,
}

/// Why the publisher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("the publisher's log: {0}")]
    Log(#[from] LogError),
    #[error("cannot {what}: {source}")]
    Socket {
        what: String,
        #[source]
        source: zmq::Error,
    },
}

fn socket_error(what: impl Into<String>) -> impl FnOnce(zmq::Error) -> PublisherError {
    let what = what.into();
    move |source| PublisherError::Socket { what, source }
}

/// The publisher, its log open, its sockets bound.
pub struct Publisher {
    _data_dir: StateDir,
    log: RecordLog,
    rules: Rules,
    /// What compaction keeps (see [`RecordLog::compact`]).
    retention: RetentionRules,
    _context: zmq::Context,
    /// Asked by libzmq about every client of a CURVE socket; held for
    /// the publisher's life.
    zap: Option<curve::ZapAllowList>,
    submit: zmq::Socket,
    /// See [`Listen::legacy_submit_port`].
    legacy_submit: Option<zmq::Socket>,
    catch_up: zmq::Socket,
    /// The legacy broadcast, if bound.
    legacy: Option<zmq::Socket>,
    feed: zmq::Socket,
    counters: Counters,
    refusals: RateLimitedLog,
    metrics: Option<StateExporter<Shown>>,
}

/// What the publisher's metrics file shows (see docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    counters: Counters,
    /// The number of the last record in the log.
    last: u64,
    running: bool,
}

/// The metrics of `shown`.
fn metrics_registry(shown: &Shown) -> Result<prometheus::Registry, MetricsError> {
    let r = prometheus::Registry::new();
    let c = &shown.counters;
    counter_by(
        &r,
        "banshare_publisher_stored_total",
        "Submissions stored in the publisher's log: banshare records, legacy messages",
        "kind",
        [("record", c.records_stored), ("legacy", c.legacy_stored)],
    )?;
    counter_by(
        &r,
        "banshare_publisher_refused_total",
        "Submissions refused, by reason",
        "reason",
        &c.refused,
    )?;
    counter_by(
        &r,
        "banshare_publisher_not_legacy_total",
        "Stored records left off the legacy broadcast, by reason",
        "reason",
        &c.not_legacy,
    )?;
    counter(
        &r,
        "banshare_publisher_catch_ups_total",
        "Catch-up requests answered",
        c.catch_ups,
    )?;
    counter(
        &r,
        "banshare_publisher_curve_refused_total",
        "Connections refused by the CURVE allow-list (ZAP)",
        c.curve_refused,
    )?;
    counter(
        &r,
        "banshare_publisher_catch_ups_refused_total",
        "Catch-up requests refused as malformed",
        c.catch_ups_refused,
    )?;
    int_gauge(
        &r,
        "banshare_publisher_log_last_record",
        "The number of the last record in the publisher's log (this epoch)",
        i64::try_from(shown.last).unwrap_or(i64::MAX),
    )?;
    int_gauge(
        &r,
        "banshare_publisher_running",
        "1 while the publisher runs; 0 written as it stops",
        i64::from(shown.running),
    )?;
    Ok(r)
}

impl Publisher {
    /// Opens the log in `data_dir` (locked by the caller) and binds the
    /// sockets; with `curve`, banshare's own sockets are CURVE servers
    /// (the legacy broadcast stays plaintext, as the original's
    /// subscribers read it).
    pub fn open(
        data_dir: StateDir,
        listen: &Listen,
        rules: Rules,
        retention: RetentionRules,
        curve: Option<CurveServer>,
    ) -> Result<Publisher, PublisherError> {
        let mut log = RecordLog::open(data_dir.path())?;
        compact(&mut log, &retention);
        let context = zmq::Context::new();
        let zap = match &curve {
            Some(c) => Some(
                curve::ZapAllowList::start(&context, c.clients.clone())
                    .map_err(socket_error("start the CURVE client check (ZAP)"))?,
            ),
            None => None,
        };
        let secret = curve.as_ref().map(|c| c.secret);
        // `hwm`: the send and receive high-water marks, if not libzmq's.
        let bind = |kind,
                    port,
                    max_frame: Option<i64>,
                    hwm: Option<(i32, i32)>,
                    name: &str,
                    encrypted: bool| {
            let socket = context
                .socket(kind)
                .map_err(socket_error(format!("make the {name} socket")))?;
            let endpoint = listen.endpoint(port);
            let setup = || -> zmq::Result<()> {
                socket.set_ipv6(listen.ipv6())?;
                socket.set_linger(LINGER_MS)?;
                if let Some(max) = max_frame {
                    socket.set_maxmsgsize(max)?;
                }
                if let Some((send, receive)) = hwm {
                    socket.set_sndhwm(send)?;
                    socket.set_rcvhwm(receive)?;
                }
                if let (true, Some(secret)) = (encrypted, &secret) {
                    curve::serve(&socket, secret)?;
                }
                socket.bind(&endpoint)
            };
            setup().map_err(socket_error(format!("listen on {endpoint} ({name})")))?;
            Ok::<_, PublisherError>(socket)
        };
        let submit = bind(
            zmq::REP,
            listen.submit_port,
            Some(MAX_SUBMIT_FRAME),
            None,
            "submissions",
            true,
        )?;
        let legacy_submit = match listen.legacy_submit_port {
            Some(port) => Some(bind(
                zmq::REP,
                port,
                Some(MAX_SUBMIT_FRAME),
                None,
                "legacy submissions",
                false,
            )?),
            None => None,
        };
        let catch_up = bind(
            zmq::REP,
            listen.catch_up_port,
            Some(MAX_CATCH_UP_FRAME),
            Some((CATCH_UP_SEND_HWM, CATCH_UP_RECEIVE_HWM)),
            "catch-up",
            true,
        )?;
        let legacy = match listen.legacy_port {
            Some(port) => Some(bind(zmq::PUB, port, None, None, "legacy broadcast", false)?),
            None => None,
        };
        let feed = bind(
            zmq::PUB,
            listen.feed_port,
            None,
            None,
            "banshare broadcast",
            true,
        )?;
        // Every port, and which are in clear: what a firewall review reads.
        let plaintext = |port: Option<u16>| match port {
            Some(port) => format!("{} (plaintext)", listen.endpoint(port)),
            None => "off".to_owned(),
        };
        ::log::info!(
            "publisher: log epoch {} with {} records; CURVE {}; submissions {}, catch-up {}, \
             banshare broadcast {}, legacy submissions {}, legacy broadcast {}",
            log.epoch(),
            log.last(),
            if secret.is_some() { "on" } else { "off" },
            listen.endpoint(listen.submit_port),
            listen.endpoint(listen.catch_up_port),
            listen.endpoint(listen.feed_port),
            plaintext(listen.legacy_submit_port),
            plaintext(listen.legacy_port),
        );
        Ok(Publisher {
            _data_dir: data_dir,
            log,
            rules,
            retention,
            _context: context,
            zap,
            submit,
            legacy_submit,
            catch_up,
            legacy,
            feed,
            counters: Counters::default(),
            refusals: RateLimitedLog::default(),
            metrics: None,
        })
    }

    /// Writes the metrics to `path` while the publisher runs: at most
    /// every few seconds, when a count changed (its loop wakes up every
    /// [`STOP_CHECK`] anyway).
    pub fn export_metrics(&mut self, path: std::path::PathBuf) {
        ::log::info!("writing metrics to {}", path.display());
        self.metrics = Some(StateExporter::new(path));
    }

    /// Writes the metrics file if due, or now if `force`.
    fn write_metrics(&mut self, force: bool, running: bool) {
        let Some(metrics) = &mut self.metrics else {
            return;
        };
        let shown = Shown {
            counters: self.counters.clone(),
            last: self.log.last(),
            running,
        };
        metrics.export(&shown, force, metrics_registry);
    }

    /// Serves until `stop` is set; returns the counters.
    pub fn run(mut self, stop: &Arc<AtomicBool>) -> Counters {
        let mut next_heartbeat = Instant::now();
        let mut next_compaction = Instant::now() + COMPACT_EVERY;
        self.write_metrics(true, true);
        while !stop.load(Ordering::Relaxed) {
            self.write_metrics(false, true);
            let now = Instant::now();
            if now >= next_compaction {
                compact(&mut self.log, &self.retention);
                next_compaction = now + COMPACT_EVERY;
            }
            if now >= next_heartbeat {
                self.heartbeat();
                next_heartbeat = now + HEARTBEAT;
            }
            let wait = STOP_CHECK.min(next_heartbeat.saturating_duration_since(now));
            let (submit, catch_up, legacy_submit) = match self.poll(wait) {
                Ok(ready) => ready,
                // A signal: the loop looks at the flag.
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    // Not seen in practice; waiting keeps it from spinning.
                    ::log::warn!("poll: {e}");
                    std::thread::sleep(STOP_CHECK);
                    continue;
                }
            };
            if submit {
                self.serve_submission(Door::Main);
            }
            if legacy_submit {
                self.serve_submission(Door::Legacy);
            }
            if catch_up {
                self.serve_catch_up();
            }
            self.note_curve_refusals();
            self.refusals.roll();
        }
        ::log::info!("publisher stopping: {}", self.counters);
        self.write_metrics(true, false);
        self.counters
    }

    /// Which REP sockets have a request: submissions, catch-up, legacy
    /// submissions.
    fn poll(&self, wait: Duration) -> zmq::Result<(bool, bool, bool)> {
        let mut items = vec![
            self.submit.as_poll_item(zmq::POLLIN),
            self.catch_up.as_poll_item(zmq::POLLIN),
        ];
        if let Some(socket) = &self.legacy_submit {
            items.push(socket.as_poll_item(zmq::POLLIN));
        }
        zmq::poll(&mut items, wait.as_millis().max(1) as i64)?;
        let legacy = items.get(2).is_some_and(|i| i.is_readable());
        Ok((items[0].is_readable(), items[1].is_readable(), legacy))
    }

    fn door(&self, door: Door) -> &zmq::Socket {
        match (door, &self.legacy_submit) {
            (Door::Legacy, Some(socket)) => socket,
            _ => &self.submit,
        }
    }

    fn header(&self) -> Header {
        Header {
            epoch: self.log.epoch(),
            last: self.log.last(),
        }
    }

    fn heartbeat(&self) {
        if let Err(e) = self
            .feed
            .send(self.header().encode().as_bytes(), zmq::DONTWAIT)
        {
            ::log::debug!("heartbeat not sent: {e}");
        }
    }

    /// Answers one submission request and broadcasts what it stored.
    fn serve_submission(&mut self, door: Door) {
        let frames = match self.door(door).recv_multipart(zmq::DONTWAIT) {
            Ok(frames) => frames,
            Err(zmq::Error::EAGAIN) => return,
            Err(e) => {
                ::log::warn!("cannot receive a submission: {e}");
                return;
            }
        };
        let (replies, stored) = self.judge_and_store(&frames, door);
        if let Err(e) = self
            .door(door)
            .send_multipart(replies.iter().map(String::as_bytes), 0)
        {
            // The records are stored: the sender will learn of them from the
            // feed, or send them again (watchers drop a record's copy; a
            // legacy message sent again is a new record, docs/zmq.md).
            ::log::warn!("cannot answer a submission: {e}");
        }
        for (seq, accepted) in stored {
            self.broadcast(seq, &accepted);
        }
    }

    /// The reply frames for `frames`, one each, and the records stored with
    /// their numbers. Every accepted record is stored by one append.
    fn judge_and_store(
        &mut self,
        frames: &[Vec<u8>],
        door: Door,
    ) -> (Vec<String>, Vec<(u64, Accepted)>) {
        if frames.len() > MAX_FRAMES {
            let kind = "too_many_frames";
            *self.counters.refused.entry(kind).or_default() += frames.len() as u64;
            self.refusals.warn(format_args!(
                "refused a submission of {} frames (at most {MAX_FRAMES})",
                frames.len()
            ));
            let reply = Reply::Refused { kind: kind.into() }.encode();
            return (vec![reply; frames.len()], Vec::new());
        }
        let mut replies = vec![String::new(); frames.len()];
        let mut accepted = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let judged = match door {
                Door::Legacy => self.rules.judge_legacy_only(frame),
                Door::Main => self.rules.judge(frame),
            };
            match judged {
                Ok(a) => accepted.push((i, a)),
                Err(refused) => {
                    *self.counters.refused.entry(refused.kind).or_default() += 1;
                    self.refusals.warn(format_args!(
                        "refused a submission ({}): {}",
                        refused.kind, refused.why
                    ));
                    replies[i] = refused.reply;
                }
            }
        }
        if accepted.is_empty() {
            return (replies, Vec::new());
        }
        let lines: Vec<String> = accepted.iter().map(|(_, a)| a.record.to_string()).collect();
        match self.log.append(&lines) {
            Ok(first) => {
                let epoch = self.log.epoch();
                let mut stored = Vec::with_capacity(accepted.len());
                for (n, (i, a)) in accepted.into_iter().enumerate() {
                    let seq = first + n as u64;
                    replies[i] = a.stored(epoch, seq);
                    if a.legacy_ack.is_some() {
                        self.counters.legacy_stored += 1;
                    } else {
                        self.counters.records_stored += 1;
                    }
                    if let Some(kind) = a.unverified {
                        *self.counters.unverified.entry(kind).or_default() += 1;
                        self.refusals.warn(format_args!(
                            "stored record {seq}, which this publisher's [trust] keys cannot \
                             verify ({kind}); every watcher judges it with its own keys"
                        ));
                    }
                    stored.push((seq, a));
                }
                (replies, stored)
            }
            Err(e) => {
                ::log::error!("cannot store {} records: {e}", lines.len());
                let kind = "store_failed";
                for (i, a) in accepted {
                    *self.counters.refused.entry(kind).or_default() += 1;
                    replies[i] = a.not_stored(kind);
                }
                (replies, Vec::new())
            }
        }
    }

    /// Sends a stored record to both feeds. A PUB socket never blocks: a
    /// subscriber too slow to take it loses it and catches up.
    fn broadcast(&mut self, seq: u64, accepted: &Accepted) {
        let header = Header {
            epoch: self.log.epoch(),
            last: seq,
        };
        let line = accepted.record.to_string();
        let frames = [
            header.encode().into_bytes(),
            wire::encode_record(seq, line.as_bytes()),
        ];
        if let Err(e) = self.feed.send_multipart(frames, zmq::DONTWAIT) {
            ::log::debug!("record {seq} not broadcast: {e}");
        }
        if let Some(kind) = accepted.unverified {
            // The original's subscribers verify nothing: only what the
            // publisher vouches for reaches them.
            *self.counters.not_legacy.entry(kind).or_default() += 1;
            ::log::debug!("record {seq} left off the legacy feed: {kind}");
            return;
        }
        match message::legacy_broadcast(&accepted.record) {
            Ok(text) => {
                let Some(legacy) = &self.legacy else { return };
                if let Err(e) = legacy.send(text.as_bytes(), zmq::DONTWAIT) {
                    ::log::debug!("record {seq} not broadcast on the legacy feed: {e}");
                }
            }
            Err(why) => {
                *self.counters.not_legacy.entry(why.kind()).or_default() += 1;
                ::log::debug!("record {seq} left off the legacy feed: {why}");
            }
        }
    }

    /// Counts the connections the ZAP handler refused since the last look,
    /// and logs them with the rate-limited refusals: a client with random
    /// keys makes thousands a second.
    fn note_curve_refusals(&mut self) {
        let Some(zap) = &self.zap else { return };
        let refused = zap.refused();
        if refused == self.counters.curve_refused {
            return;
        }
        let new = refused - self.counters.curve_refused;
        let from = zap.last_refused_from();
        self.counters.curve_refused = refused;
        self.refusals.warn(format_args!(
            "refused {new} ZeroMQ connection(s) whose CURVE key is not allowed, the last from {}",
            from.as_deref().unwrap_or("an unknown address")
        ));
    }

    /// Answers one catch-up request: the header, then the records after
    /// the asked number, or from the first if the epoch is not this log's.
    fn serve_catch_up(&mut self) {
        let frames = match self.catch_up.recv_multipart(zmq::DONTWAIT) {
            Ok(frames) => frames,
            Err(zmq::Error::EAGAIN) => return,
            Err(e) => {
                ::log::warn!("cannot receive a catch-up request: {e}");
                return;
            }
        };
        let reply = match frames.as_slice() {
            [frame] => CatchUp::decode(frame).map_err(|e| e.to_string()),
            _ => Err(format!("{} frames, expected one", frames.len())),
        };
        let reply = match reply {
            Ok(ask) => {
                self.counters.catch_ups += 1;
                self.catch_up_frames(ask)
            }
            Err(why) => {
                self.counters.catch_ups_refused += 1;
                self.refusals
                    .warn(format_args!("refused a catch-up request: {why}"));
                vec![
                    Reply::Refused {
                        kind: "malformed".into(),
                    }
                    .encode()
                    .into_bytes(),
                ]
            }
        };
        if let Err(e) = self.catch_up.send_multipart(reply, 0) {
            ::log::warn!("cannot answer a catch-up request: {e}");
        }
    }

    fn catch_up_frames(&self, ask: CatchUp) -> Vec<Vec<u8>> {
        let after = if ask.epoch == self.log.epoch() && !self.numbered_another(&ask) {
            ask.after
        } else {
            0
        };
        let mut frames = vec![self.header().encode().into_bytes()];
        match self
            .log
            .read_after(after, wire::CATCH_UP_MAX, wire::CATCH_UP_MAX_BYTES)
        {
            Ok(records) => frames.extend(
                records
                    .into_iter()
                    .map(|(seq, line)| wire::encode_record(seq, &line)),
            ),
            // The header alone: the subscriber sees it is behind and asks
            // again.
            Err(e) => ::log::error!("cannot read the log for a catch-up: {e}"),
        }
        frames
    }

    /// Whether the subscriber's last record, named by its digest, is not
    /// this log's record of that number: the log was restored from an
    /// older copy and numbered new records again. The subscriber is then
    /// answered from the first record, and reads the log again.
    fn numbered_another(&self, ask: &CatchUp) -> bool {
        let Some(digest) = ask.digest else {
            return false;
        };
        if ask.after == 0 || ask.after > self.log.last() {
            // Nothing to compare: a log shorter than the position is told
            // by the header.
            return false;
        }
        match self
            .log
            .read_after(ask.after - 1, 1, wire::CATCH_UP_MAX_BYTES)
        {
            Ok(records) => match records.first() {
                Some((seq, line)) if *seq == ask.after => wire::Digest::of(line) != digest,
                // Compacted away (the log keeps the numbers of the records
                // in force): nothing to compare it with.
                _ => false,
            },
            Err(e) => {
                ::log::error!("cannot read the log for a catch-up: {e}");
                false
            }
        }
    }
}
