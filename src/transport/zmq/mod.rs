//! The ZeroMQ transport. [`message`] is its wire format, parsed strictly:
//! the submissions a publisher's REP socket takes (fail2ban-zmq-tools'
//! `TOKEN|host|jail|action|ip` and banshare's own record lines) and the
//! broadcasts a subscriber reads. It needs no libzmq, so it is built
//! without the `zmq` feature, and fuzzed (`fuzz/fuzz_targets/zmq_message.rs`).
//! [`wire`] is banshare's own protocol beside it: numbered records, the
//! publisher's replies, catch-up after a gap. `docs/zmq.md` describes both.

#[cfg(feature = "zmq")]
pub mod curve;
pub mod message;
pub mod wire;
