//! Why a connection to the publisher never completed, from libzmq's
//! socket monitor: a socket whose handshake fails looks exactly like one
//! whose peer is away (nothing is sent, the deadline passes), but the
//! fixes differ. A publisher that refuses this node's CURVE key, a wrong
//! `curve_server_key` and CURVE on one side only are each told apart and
//! named, so that the log line says what to change.
//!
//! The question is put to a probe: a fresh socket of its own, with the
//! same keys, made only after a request found no publisher. A monitor on
//! the working socket itself made it slower to notice a publisher that
//! died (measured: a request sent just after a SIGKILL went out on the dead
//! connection, in the conformance suite, every time).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::CurveClient;

/// ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH (libzmq 4.3's zmq.h; the
/// `zmq` crate does not re-export it): the peers' greetings name
/// different security mechanisms.
const MECHANISM_MISMATCH: u32 = 0x1100_0002;

/// A handshake that failed, as the last monitor event said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// The publisher's ZAP handler refused this node (status `status`,
    /// 400 for a key not in its allow-list).
    KeyRefused { status: u32, public_key: String },
    /// The publisher closed the connection in the middle of a CURVE
    /// handshake: it could not open this node's HELLO, which is what a
    /// `curve_server_key` that is not the publisher's public key does.
    ServerKeyMismatch,
    /// One side speaks CURVE, the other plaintext.
    MechanismMismatch { curve_here: bool },
    /// A plaintext connection closed mid-handshake (the error): what a
    /// publisher that requires CURVE does when this side writes first.
    ClosedPlaintext(String),
    /// Another protocol error (its libzmq code).
    Other(String),
}

impl HandshakeFailure {
    /// Whether it names its cause: a closed plaintext connection or an
    /// odd protocol error does not replace a failure that does (the
    /// events of several attempts differ by which side closed first).
    fn named(&self) -> bool {
        !matches!(
            self,
            HandshakeFailure::ClosedPlaintext(_) | HandshakeFailure::Other(_)
        )
    }
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeFailure::KeyRefused { status, public_key } => write!(
                f,
                "the publisher refused this node's CURVE key (not in its allow-list; ZAP \
                 status {status}): add {public_key} to its curve_clients_file"
            ),
            HandshakeFailure::ServerKeyMismatch => write!(
                f,
                "CURVE handshake failed: server key mismatch (the publisher closed the \
                 connection during the handshake; is [zmq] curve_server_key its public key?)"
            ),
            HandshakeFailure::MechanismMismatch { curve_here: true } => write!(
                f,
                "the publisher does not speak CURVE, but this node does ([zmq] \
                 curve_server_key is set): use CURVE on both sides or neither"
            ),
            HandshakeFailure::MechanismMismatch { curve_here: false } => write!(
                f,
                "the publisher requires CURVE, but this node speaks plaintext: set [zmq] \
                 curve_server_key and curve_key_file"
            ),
            HandshakeFailure::ClosedPlaintext(why) => write!(
                f,
                "the publisher closed the connection during the handshake ({why}): if it \
                 requires CURVE, set [zmq] curve_server_key and curve_key_file"
            ),
            HandshakeFailure::Other(why) => {
                write!(f, "the handshake with the publisher failed: {why}")
            }
        }
    }
}

/// The longest a probe waits to hear why: a refused connection and a
/// failed handshake are heard in milliseconds; only a publisher whose
/// host drops the connection silently makes it wait this long.
pub(crate) const PROBE_WAIT: Duration = Duration::from_millis(500);

/// Tells each probe's monitor endpoint apart within a context.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Connects a probe to `endpoint` as `curve` says and returns why its
/// handshake failed, if it did within `wait`; `None` when no one answered
/// (the publisher is away) or the handshake succeeded.
pub(crate) fn probe(
    context: &zmq::Context,
    endpoint: &str,
    curve: Option<&CurveClient>,
    wait: Duration,
) -> Option<HandshakeFailure> {
    let deadline = Instant::now() + wait;
    let socket = context.socket(zmq::REQ).ok()?;
    socket.set_ipv6(true).ok()?;
    socket.set_linger(0).ok()?;
    let public_key = super::secure(&socket, curve).ok()?;
    let monitor_at = format!(
        "inproc://banshare-handshake-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let events = zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32
        | zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
        | zmq::SocketEvent::CONNECT_RETRIED as i32;
    socket.monitor(&monitor_at, events).ok()?;
    let monitor = context.socket(zmq::PAIR).ok()?;
    monitor.set_linger(0).ok()?;
    monitor.connect(&monitor_at).ok()?;
    socket.connect(endpoint).ok()?;
    let mut failure: Option<HandshakeFailure> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        monitor.set_rcvtimeo(left.as_millis().max(1) as i32).ok()?;
        let Ok(frames) = monitor.recv_multipart(0) else {
            // The wait is over: what was heard, if anything.
            return failure;
        };
        let Some(&[a, b, c, d, e, f, ..]) = frames.first().map(Vec::as_slice) else {
            continue;
        };
        let value = u32::from_ne_bytes([c, d, e, f]);
        match zmq::SocketEvent::from_raw(u16::from_ne_bytes([a, b])) {
            zmq::SocketEvent::HANDSHAKE_SUCCEEDED => return None,
            // Refused or unanswered, and no handshake failed before: the
            // publisher is away.
            zmq::SocketEvent::CONNECT_RETRIED if failure.is_none() => return None,
            event => match judge(event, value, &public_key) {
                Some(new) if new.named() => return Some(new),
                // Another attempt may name it (which side closed first
                // differs from one attempt to the next).
                Some(new) => failure = Some(new),
                None => {}
            },
        }
    }
}

/// The failure a monitor event tells of, if it tells of one.
fn judge(
    event: zmq::SocketEvent,
    value: u32,
    public_key: &Option<String>,
) -> Option<HandshakeFailure> {
    let curve_here = public_key.is_some();
    Some(match event {
        zmq::SocketEvent::HANDSHAKE_FAILED_AUTH => HandshakeFailure::KeyRefused {
            status: value,
            public_key: public_key.clone().unwrap_or_default(),
        },
        zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL if value == MECHANISM_MISMATCH => {
            HandshakeFailure::MechanismMismatch { curve_here }
        }
        zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL => {
            HandshakeFailure::Other(format!("ZeroMQ protocol error {value:#x}"))
        }
        zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL if curve_here => {
            HandshakeFailure::ServerKeyMismatch
        }
        zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL => HandshakeFailure::ClosedPlaintext(
            std::io::Error::from_raw_os_error(value as i32).to_string(),
        ),
        _ => return None,
    })
}
