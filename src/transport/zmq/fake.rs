//! A fake publisher for the transport's unit tests: banshare's protocol
//! (`wire`) on 127.0.0.1, at random ports, with switches to misbehave.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::curve::{self, Key, ZapAllowList};
use super::wire::{self, CatchUp, Epoch, Header, Reply};
use super::{ZmqSettings, ZmqUrl};

/// How the submission socket answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Stores every record and answers `OK`.
    Store,
    /// Answers `NAK <kind>` to every record.
    Refuse(String),
    /// Does not read the socket at all.
    Silent,
}

pub struct State {
    pub epoch: Epoch,
    pub log: Vec<Vec<u8>>,
    pub answer: Answer,
    /// Records stored but not broadcast (PUB lost them).
    pub unbroadcast: HashSet<u64>,
    /// Records compaction dropped: their numbers stay, catch-up skips them.
    pub compacted: HashSet<u64>,
    /// Raw messages to broadcast next.
    pub outbox: Vec<Vec<Vec<u8>>>,
    pub catch_ups: u64,
    /// Frames to answer catch-up requests with, instead of the log.
    pub catch_up_garbage: Option<Vec<Vec<u8>>>,
    /// Answers a catch-up request with a digest `NAK malformed`, as a
    /// publisher from before the digest does.
    pub no_digest: bool,
}

pub struct FakePublisher {
    pub submit_port: u16,
    pub catch_up_port: u16,
    pub feed_port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The ZAP handler of a CURVE publisher: admits the allowed keys.
    pub zap: Option<ZapAllowList>,
}

fn bind(context: &zmq::Context, kind: zmq::SocketType, secret: Option<&Key>) -> (zmq::Socket, u16) {
    let socket = context.socket(kind).unwrap();
    socket.set_linger(0).unwrap();
    if let Some(secret) = secret {
        curve::serve(&socket, secret).unwrap();
    }
    socket.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = socket.get_last_endpoint().unwrap().unwrap();
    let port = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    (socket, port)
}

impl FakePublisher {
    pub fn start(epoch: u64) -> FakePublisher {
        FakePublisher::start_with(epoch, None)
    }

    /// A CURVE publisher with `secret`, admitting the keys in `allowed`.
    pub fn start_curve(epoch: u64, secret: Key, allowed: HashSet<Key>) -> FakePublisher {
        FakePublisher::start_with(epoch, Some((secret, allowed)))
    }

    fn start_with(epoch: u64, curve: Option<(Key, HashSet<Key>)>) -> FakePublisher {
        let context = zmq::Context::new();
        let zap = curve
            .as_ref()
            .map(|(_, allowed)| ZapAllowList::start(&context, allowed.clone()).unwrap());
        let secret = curve.as_ref().map(|(secret, _)| secret);
        let (submit, submit_port) = bind(&context, zmq::REP, secret);
        let (catch_up, catch_up_port) = bind(&context, zmq::REP, secret);
        let (feed, feed_port) = bind(&context, zmq::PUB, secret);
        let state = Arc::new(Mutex::new(State {
            epoch: Epoch(epoch),
            log: Vec::new(),
            answer: Answer::Store,
            unbroadcast: HashSet::new(),
            compacted: HashSet::new(),
            outbox: Vec::new(),
            catch_ups: 0,
            catch_up_garbage: None,
            no_digest: false,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = thread::spawn(move || serve(&submit, &catch_up, &feed, &s, &st));
        FakePublisher {
            submit_port,
            catch_up_port,
            feed_port,
            state,
            stop,
            thread: Some(thread),
            zap,
        }
    }

    pub fn url(&self) -> ZmqUrl {
        ZmqUrl::parse(&format!("zmq+tcp://127.0.0.1:{}", self.submit_port)).unwrap()
    }

    pub fn settings(&self) -> ZmqSettings {
        ZmqSettings {
            catch_up_port: self.catch_up_port,
            feed_port: self.feed_port,
            timeout: Duration::from_secs(5),
            curve: None,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Stores `line` as a sender would, broadcasting it unless `lost`.
    pub fn store(&self, line: &[u8], lost: bool) -> u64 {
        let mut state = self.state();
        state.log.push(line.to_vec());
        let seq = state.log.len() as u64;
        if lost {
            state.unbroadcast.insert(seq);
        }
        let header = Header {
            epoch: state.epoch,
            last: seq,
        };
        if !lost {
            let frames = vec![header.encode().into_bytes(), wire::encode_record(seq, line)];
            state.outbox.push(frames);
        }
        seq
    }
}

impl Drop for FakePublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    submit: &zmq::Socket,
    catch_up: &zmq::Socket,
    feed: &zmq::Socket,
    state: &Mutex<State>,
    stop: &AtomicBool,
) {
    let mut heartbeat = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let silent = state.lock().unwrap().answer == Answer::Silent;
        let mut items = [
            submit.as_poll_item(if silent {
                zmq::PollEvents::empty()
            } else {
                zmq::POLLIN
            }),
            catch_up.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, 20).unwrap();
        let (submitted, asked) = (items[0].is_readable(), items[1].is_readable());
        // Made silent while it polled: a test sets it after the start, and
        // a request that came meanwhile must not be answered.
        if submitted && state.lock().unwrap().answer != Answer::Silent {
            let frames = submit.recv_multipart(0).unwrap();
            let replies = answer(state, &frames);
            submit.send_multipart(replies, 0).unwrap();
        }
        if asked {
            let frames = catch_up.recv_multipart(0).unwrap();
            catch_up
                .send_multipart(reply_catch_up(state, &frames), 0)
                .unwrap();
        }
        let outbox = std::mem::take(&mut state.lock().unwrap().outbox);
        for frames in outbox {
            feed.send_multipart(frames, 0).unwrap();
        }
        if heartbeat.elapsed() >= Duration::from_secs(1) {
            heartbeat = Instant::now();
            let state = state.lock().unwrap();
            let header = Header {
                epoch: state.epoch,
                last: state.log.len() as u64,
            };
            feed.send(header.encode().as_bytes(), 0).unwrap();
        }
    }
}

fn answer(state: &Mutex<State>, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut s = state.lock().unwrap();
    // As `banshare publisher`: a request of too many frames is refused whole.
    if frames.len() > 1000 {
        let nak = Reply::Refused {
            kind: "too_many_frames".into(),
        };
        return vec![nak.encode().into_bytes(); frames.len()];
    }
    let mut replies = Vec::new();
    for frame in frames {
        let reply = match s.answer.clone() {
            // An empty kind: the bare legacy `NAK`.
            Answer::Refuse(kind) if kind.is_empty() => {
                replies.push(b"NAK".to_vec());
                continue;
            }
            Answer::Refuse(kind) => Reply::Refused { kind },
            _ => {
                s.log.push(frame.clone());
                let seq = s.log.len() as u64;
                let header = Header {
                    epoch: s.epoch,
                    last: seq,
                };
                if !s.unbroadcast.contains(&seq) {
                    let frames = vec![
                        header.encode().into_bytes(),
                        wire::encode_record(seq, frame),
                    ];
                    s.outbox.push(frames);
                }
                Reply::Stored {
                    epoch: s.epoch,
                    seq,
                }
            }
        };
        replies.push(reply.encode().into_bytes());
    }
    replies
}

fn reply_catch_up(state: &Mutex<State>, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut s = state.lock().unwrap();
    s.catch_ups += 1;
    if let Some(garbage) = &s.catch_up_garbage {
        return garbage.clone();
    }
    let with_digest = |ask: &[u8]| CatchUp::decode(ask).is_ok_and(|a| a.digest.is_some());
    if let ([ask], true) = (frames, s.no_digest)
        && with_digest(ask)
    {
        return vec![b"NAK malformed".to_vec()];
    }
    let after = match frames {
        [ask] => match CatchUp::decode(ask) {
            // As `banshare publisher`: a position naming another record
            // than the log's is answered from the first record.
            Ok(ask) if ask.epoch == s.epoch => match (ask.digest, ask.after) {
                (Some(digest), after) if after > 0 && after <= s.log.len() as u64 => {
                    match wire::Digest::of(&s.log[after as usize - 1]) == digest {
                        true => after,
                        false => 0,
                    }
                }
                _ => ask.after,
            },
            _ => 0,
        },
        _ => 0,
    };
    let header = Header {
        epoch: s.epoch,
        last: s.log.len() as u64,
    };
    let mut reply = vec![header.encode().into_bytes()];
    let records = s.log.iter().enumerate().skip(after as usize);
    let kept = records.filter(|(i, _)| !s.compacted.contains(&(*i as u64 + 1)));
    for (i, line) in kept.take(wire::CATCH_UP_MAX as usize) {
        reply.push(wire::encode_record(i as u64 + 1, line));
    }
    reply
}
