//! The write side of the ZeroMQ transport: a batch goes to the
//! publisher's submission socket as one request, one frame per record
//! line, and is delivered when every frame is answered (the lazy-pirate
//! pattern: a REQ socket, a deadline on the reply, and a fresh socket
//! after a deadline passed, since a REQ socket that lost its reply is
//! stuck).

use std::io;
use std::time::{Duration, Instant};

use log::error;

use super::handshake::{PROBE_WAIT, probe};
use super::wire::{Reply, SUBMIT_MAX};
use super::{CurveClient, UNREACHABLE_HINT, ZmqSettings, ZmqUrl};
use crate::transport::{Transport, TransportError};

/// Delivers batches to a `banshare publisher`.
///
/// What is spooled when (the spool decides by
/// [`TransportError::wrote_nothing`]):
///
/// - no publisher took the request within the deadline (ZMQ_IMMEDIATE:
///   nothing is queued for a publisher that is not connected): nothing was
///   sent, [`TransportError::Unreachable`]; or, when a probe's monitor
///   sees the handshake fail (this node's CURVE key refused, a wrong
///   server key, CURVE on one side only), [`TransportError::Open`] naming
///   why;
/// - sent, but no reply within the deadline, or a reply that does not
///   parse: the publisher may have stored it, [`TransportError::Write`];
///   the flush sends it again whole (the transport cannot read the log
///   back), and the watchers' policy drops the copies;
/// - `NAK <kind>` for a record: refused for good, since sending it again
///   changes nothing; it is logged as an error and counted
///   ([`ZmqTransport::refused`]), and not spooled.
pub struct ZmqTransport {
    url: ZmqUrl,
    curve: Option<CurveClient>,
    timeout: Duration,
    context: zmq::Context,
    /// `None` before the first call and after a deadline passed.
    socket: Option<zmq::Socket>,
    refused: u64,
}

impl ZmqTransport {
    /// A transport to the publisher at `url` (with CURVE if `settings`
    /// say so); every call waits at most `timeout` for it. Connects on the
    /// first call.
    pub fn new(url: &ZmqUrl, settings: &ZmqSettings, timeout: Duration) -> ZmqTransport {
        ZmqTransport {
            url: url.clone(),
            curve: settings.curve.clone(),
            timeout,
            context: zmq::Context::new(),
            socket: None,
            refused: 0,
        }
    }

    /// Records the publisher refused for good (`NAK`) so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn socket(&mut self) -> Result<&zmq::Socket, TransportError> {
        if self.socket.is_none() {
            let endpoint = self.url.endpoint(self.url.port);
            let socket =
                request_socket(&self.context, &endpoint, self.curve.as_ref()).map_err(|e| {
                    TransportError::Open {
                        log: self.url.to_string(),
                        source: io::Error::other(e),
                    }
                })?;
            self.socket = Some(socket);
        }
        Ok(self.socket.as_ref().expect("just made"))
    }

    /// Why no publisher took a request: a failed handshake, named (a
    /// probe asks, for at most [`PROBE_WAIT`]), or none heard of (the
    /// publisher is away).
    fn not_taken(&mut self, source: io::Error) -> TransportError {
        self.socket = None;
        let endpoint = self.url.endpoint(self.url.port);
        let failure = probe(&self.context, &endpoint, self.curve.as_ref(), PROBE_WAIT);
        match failure {
            Some(why) => TransportError::Open {
                log: self.url.to_string(),
                source: io::Error::new(io::ErrorKind::PermissionDenied, why.to_string()),
            },
            None => self.unreachable(source),
        }
    }

    fn unreachable(&self, source: io::Error) -> TransportError {
        TransportError::Unreachable {
            log: self.url.to_string(),
            hint: UNREACHABLE_HINT,
            source,
        }
    }

    /// The socket is dropped after any failure: a REQ socket that sent
    /// without receiving takes no further request.
    fn possibly_written(&mut self, why: String) -> TransportError {
        self.socket = None;
        TransportError::Write {
            log: self.url.to_string(),
            source: io::Error::new(io::ErrorKind::TimedOut, why),
        }
    }

    /// Logs and counts the refused records; the batch is done with.
    fn answered(&mut self, lines: &[&[u8]], replies: &[Vec<u8>]) -> Result<(), TransportError> {
        if replies.len() != lines.len() {
            let why = format!(
                "the publisher answered {} frames to {} records",
                replies.len(),
                lines.len()
            );
            return Err(self.possibly_written(why));
        }
        let (mut stored, mut not_stored) = (0, 0);
        for (line, frame) in lines.iter().zip(replies) {
            // A line with a `|` was read as a legacy message, whose refusal
            // is a bare `NAK`: refused for good as well.
            let reply = match frame.as_slice() {
                b"NAK" => Ok(Reply::Refused {
                    kind: "legacy_nak".into(),
                }),
                _ => Reply::decode(frame),
            };
            match reply {
                Ok(Reply::Stored { .. }) => stored += 1,
                Ok(Reply::Refused { kind }) if kind == STORE_FAILED => not_stored += 1,
                Ok(Reply::Refused { kind }) => {
                    self.refused += 1;
                    error!(
                        "publisher {} refused a record for good ({kind}); it is not kept: {:?}",
                        self.url,
                        crate::record::excerpt(&String::from_utf8_lossy(line))
                    );
                }
                Err(e) => return Err(self.possibly_written(format!("from the publisher: {e}"))),
            }
        }
        if not_stored == 0 {
            return Ok(());
        }
        // The publisher could not write its log: the records are to be
        // sent again later, as after an I/O error on a file log.
        let why =
            format!("the publisher could not store {not_stored} record(s) (NAK {STORE_FAILED})");
        match stored {
            0 => Err(self.unreachable(io::Error::other(why))),
            _ => Err(self.possibly_written(why)),
        }
    }
}

/// A REQ socket to `endpoint` (a CURVE client if `curve` says so) that
/// queues nothing for a peer that is not connected (a send then fails at
/// its deadline: nothing left this host) and drops what it holds when
/// closed.
pub(super) fn request_socket(
    context: &zmq::Context,
    endpoint: &str,
    curve: Option<&CurveClient>,
) -> Result<zmq::Socket, String> {
    let socket = (|| {
        let socket = context.socket(zmq::REQ)?;
        // Without it libzmq never connects to an IPv6 address or an
        // AAAA-only name; IPv4 addresses still work with it on.
        socket.set_ipv6(true)?;
        socket.set_linger(0)?;
        socket.set_immediate(true)?;
        socket.set_reconnect_ivl_max(5000)?;
        socket.set_maxmsgsize(MAX_FRAME as i64)?;
        Ok(socket)
    })()
    .map_err(|e: zmq::Error| e.to_string())?;
    super::secure(&socket, curve)?;
    socket.connect(endpoint).map_err(|e| e.to_string())?;
    Ok(socket)
}

/// How long a request waits for a publisher to be connected: a fresh
/// socket connects in milliseconds to a publisher that is up, even far
/// away, so past this one that is away fails fast, and its batch is
/// spooled as undelivered.
pub(super) const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// The refusal that is no refusal: the publisher could not write its
/// log, and takes the records again later.
const STORE_FAILED: &str = "store_failed";

/// The longest frame taken from a publisher: a numbered record line.
pub(super) const MAX_FRAME: usize = crate::record::MAX_LINE_LEN + 64;

/// Milliseconds left until `deadline`, at least 1 (0 would not wait).
pub(super) fn millis_left(deadline: Instant) -> i32 {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    left.clamp(1, i32::MAX as u128) as i32
}

impl Transport for ZmqTransport {
    fn refused(&self) -> u64 {
        ZmqTransport::refused(self)
    }

    fn append(&mut self, batch: &[u8]) -> Result<(), TransportError> {
        let lines: Vec<&[u8]> = batch
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .collect();
        let deadline = Instant::now() + self.timeout;
        for (i, request) in lines.chunks(SUBMIT_MAX).enumerate() {
            match self.request(request, deadline) {
                Ok(()) => {}
                // Part of the batch is in the publisher's log already.
                Err(e) if i > 0 && e.wrote_nothing() => {
                    return Err(self.possibly_written(format!(
                        "{e}, after {} of {} records were stored",
                        i * SUBMIT_MAX,
                        lines.len()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl ZmqTransport {
    /// Sends `lines` as one request and judges the answer.
    fn request(&mut self, lines: &[&[u8]], deadline: Instant) -> Result<(), TransportError> {
        let connect_wait = CONNECT_WAIT.min(self.timeout);
        let connect_by = Instant::now() + connect_wait;
        let socket = self.socket()?;
        // The first frame goes out with the whole request or not at all,
        // and only once a publisher is connected (ZMQ_IMMEDIATE).
        let sent = socket
            .set_sndtimeo(millis_left(connect_by.min(deadline)))
            .and_then(|()| socket.send_multipart(lines.iter().copied(), 0));
        if let Err(e) = sent {
            let source = match e {
                zmq::Error::EAGAIN => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no publisher took the request within {connect_wait:?}"),
                ),
                e => e.into(),
            };
            return Err(self.not_taken(source));
        }
        let replies = socket
            .set_rcvtimeo(millis_left(deadline))
            .and_then(|()| socket.recv_multipart(0));
        match replies {
            Ok(replies) => self.answered(lines, &replies),
            Err(e) => {
                let why = format!(
                    "no reply within {:?} ({e}); the publisher may have stored the batch",
                    self.timeout
                );
                Err(self.possibly_written(why))
            }
        }
    }
}

#[cfg(test)]
#[path = "sender_tests.rs"]
mod tests;
