//! banshare's own protocol between a publisher and its senders and
//! subscribers, beside the legacy messages of [`super::message`]. Pure
//! framing, no sockets: the publisher and the transport both use it, so
//! they cannot disagree.
//!
//! Every record the publisher accepts is appended to its own log and
//! numbered: `seq` 1 is the log's first record. The numbers belong to one
//! *epoch*, a random id the publisher makes with a new log and keeps beside
//! it, so a subscriber can tell a publisher that started over (a new log)
//! from one that restarted.
//!
//! | socket | default | frames |
//! |---|---|---|
//! | submissions, REP | tcp 5678 | request: one frame per message (a legacy message, or a record line); reply: one frame per request frame: the legacy ACK or `NAK`, or [`Reply::Stored`] / [`Reply::Refused`] for a record |
//! | catch-up, REP | tcp 5679 | request: [`CatchUp`] (with the [`Digest`] of the subscriber's last record, optional); reply: [`Header`], then one frame per record, `<seq> <line>` |
//! | legacy broadcast, PUB | tcp 5680 | one frame, `host\|jail\|action\|ip` (what the original's subscriber reads) |
//! | banshare broadcast, PUB | tcp 5681 | [`Header`] then one frame `<seq> <line>`; a heartbeat is the header alone, every second |

use std::fmt;

use crate::record::MAX_LINE_LEN;

/// The first word of every frame of banshare's own protocol that is not a
/// record, so that a peer of another protocol is refused at once.
pub const PROTOCOL: &str = "banshare/1";

/// The most records one catch-up reply carries.
pub const CATCH_UP_MAX: u64 = 1000;

/// The most bytes of record lines one catch-up reply carries (always at
/// least one record): with the publisher's send high-water mark on the
/// catch-up socket, what bounds the memory a client that never reads its
/// replies can make it hold. 1000 records of a usual length (~150 bytes)
/// fit; longer ones come in more replies, which the subscriber asks for
/// until it has the header's last record.
pub const CATCH_UP_MAX_BYTES: u64 = 256 * 1024;

/// The most frames one submission request may carry: a publisher refuses
/// a longer request whole (`NAK too_many_frames` for every frame), so a
/// sender splits a longer batch.
pub const SUBMIT_MAX: usize = 1000;

/// The default ports, as the original's (submissions 5678, legacy
/// broadcast 5680), and banshare's own beside them.
pub const SUBMIT_PORT: u16 = 5678;
pub const CATCH_UP_PORT: u16 = 5679;
pub const LEGACY_PORT: u16 = 5680;
pub const FEED_PORT: u16 = 5681;

/// A malformed frame of banshare's own protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {why}")]
pub struct WireError {
    pub what: &'static str,
    pub why: &'static str,
}

fn bad(what: &'static str, why: &'static str) -> WireError {
    WireError { what, why }
}

/// A publisher's log, as subscribers know it: 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Epoch {
    /// Exactly 16 hex digits, as [`Display`](fmt::Display) writes them.
    pub fn parse(text: &str) -> Option<Epoch> {
        if text.len() != 16 {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Epoch)
    }
}

/// `banshare/1 <epoch> <last>`: which log, and its last record's number
/// (0: none yet). Heads every broadcast and every catch-up reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub epoch: Epoch,
    pub last: u64,
}

impl Header {
    pub fn encode(&self) -> String {
        format!("{PROTOCOL} {} {}", self.epoch, self.last)
    }

    pub fn decode(frame: &[u8]) -> Result<Header, WireError> {
        let what = "header";
        let text = std::str::from_utf8(frame).map_err(|_| bad(what, "not UTF-8"))?;
        let mut words = text.split(' ');
        if words.next() != Some(PROTOCOL) {
            return Err(bad(what, "not banshare/1"));
        }
        let epoch = words.next().and_then(Epoch::parse);
        let last = words.next().and_then(number);
        match (epoch, last, words.next()) {
            (Some(epoch), Some(last), None) => Ok(Header { epoch, last }),
            _ => Err(bad(what, "want banshare/1 <16 hex digits> <number>")),
        }
    }
}

/// `<seq> <line>`: one numbered record, in a broadcast or a catch-up reply.
pub fn encode_record(seq: u64, line: &[u8]) -> Vec<u8> {
    let mut frame = format!("{seq} ").into_bytes();
    frame.extend_from_slice(line);
    frame
}

/// The number and the line of a `<seq> <line>` frame. The line is not
/// parsed here: the receiver parses it as every record is parsed.
pub fn decode_record(frame: &[u8]) -> Result<(u64, &[u8]), WireError> {
    let what = "record frame";
    if frame.len() > 21 + MAX_LINE_LEN {
        return Err(bad(what, "too long"));
    }
    let space = memchr::memchr(b' ', frame).ok_or(bad(what, "no number"))?;
    let seq = std::str::from_utf8(&frame[..space])
        .ok()
        .and_then(number)
        .filter(|&seq| seq > 0)
        .ok_or(bad(what, "bad number"))?;
    Ok((seq, &frame[space + 1..]))
}

/// The first 8 bytes of a record line's SHA-256, as 16 hex digits: what
/// tells the record a subscriber read under a number from another record
/// given the same number (a publisher's log restored from an older copy,
/// then grown past the subscriber's position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub u64);

impl Digest {
    pub fn of(line: &[u8]) -> Digest {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(line);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        Digest(u64::from_be_bytes(first))
    }

    /// Exactly 16 hex digits, as [`Display`](fmt::Display) writes them.
    pub fn parse(text: &str) -> Option<Digest> {
        Epoch::parse(text).map(|e| Digest(e.0))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// `banshare/1 since <epoch> <seq> [<digest>]`: the records after `seq` of
/// the log `epoch`. A subscriber with no position asks with `Epoch(0)` and
/// 0. The optional `digest` is the [`Digest`] of record `seq` as the
/// subscriber read it: a publisher whose record `seq` differs answers from
/// its first record, as for another epoch, and the subscriber, seeing
/// records at or before its position, reads the log again. Without it (a
/// subscriber of an older banshare) the publisher answers after `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    pub epoch: Epoch,
    pub after: u64,
    pub digest: Option<Digest>,
}

impl CatchUp {
    pub fn encode(&self) -> String {
        match self.digest {
            Some(digest) => format!("{PROTOCOL} since {} {} {digest}", self.epoch, self.after),
            None => format!("{PROTOCOL} since {} {}", self.epoch, self.after),
        }
    }

    pub fn decode(frame: &[u8]) -> Result<CatchUp, WireError> {
        let what = "catch-up request";
        let text = std::str::from_utf8(frame).map_err(|_| bad(what, "not UTF-8"))?;
        let mut words = text.split(' ');
        if (words.next(), words.next()) != (Some(PROTOCOL), Some("since")) {
            return Err(bad(what, "not banshare/1 since"));
        }
        let epoch = words.next().and_then(Epoch::parse);
        let after = words.next().and_then(number);
        let digest = match words.next() {
            None => Some(None),
            Some(word) => Digest::parse(word).map(Some),
        };
        match (epoch, after, digest, words.next()) {
            (Some(epoch), Some(after), Some(digest), None) => Ok(CatchUp {
                epoch,
                after,
                digest,
            }),
            _ => Err(bad(
                what,
                "want banshare/1 since <16 hex digits> <number> [<16 hex digits>]",
            )),
        }
    }
}

/// The publisher's answer to one record it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK <epoch> <seq>`: in the publisher's log, on its disk (fsynced).
    Stored { epoch: Epoch, seq: u64 },
    /// `NAK <kind>`: refused, for the reason `kind`: a
    /// [`MessageError::kind`](super::message::MessageError::kind), an
    /// [`Untrusted::kind`](crate::trust::Untrusted::kind) (`unsigned`,
    /// `incomplete_signed`; a signed record the publisher cannot verify is
    /// stored, for the watchers to judge), `never_ban`
    /// (an address every watcher refuses), `too_many_frames` or
    /// `records_not_here` (a record sent to the plaintext legacy socket):
    /// sending it again changes nothing; or `store_failed` (the publisher could not
    /// write its log: try again later). A catch-up request the publisher
    /// cannot read is answered `NAK malformed` alone.
    Refused { kind: String },
}

impl Reply {
    pub fn encode(&self) -> String {
        match self {
            Reply::Stored { epoch, seq } => format!("OK {epoch} {seq}"),
            Reply::Refused { kind } => format!("NAK {kind}"),
        }
    }

    pub fn decode(frame: &[u8]) -> Result<Reply, WireError> {
        let what = "reply";
        let text = std::str::from_utf8(frame).map_err(|_| bad(what, "not UTF-8"))?;
        let words: Vec<&str> = text.split(' ').collect();
        match words.as_slice() {
            ["OK", epoch, seq] => {
                let epoch = Epoch::parse(epoch).ok_or(bad(what, "bad epoch"))?;
                let seq = number(seq).ok_or(bad(what, "bad number"))?;
                Ok(Reply::Stored { epoch, seq })
            }
            ["NAK", kind] if kind.len() <= 64 && kind.bytes().all(is_kind_byte) => {
                Ok(Reply::Refused {
                    kind: (*kind).to_owned(),
                })
            }
            _ => Err(bad(what, "want OK <epoch> <seq> or NAK <kind>")),
        }
    }
}

fn is_kind_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b == b'_'
}

/// A decimal number without sign or leading zeros (but `0`).
fn number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: Epoch = Epoch(0x00c0_ffee_1234_5678);

    #[test]
    fn frames_round_trip() {
        let header = Header {
            epoch: EPOCH,
            last: 42,
        };
        assert_eq!(header.encode(), "banshare/1 00c0ffee12345678 42");
        assert_eq!(Header::decode(header.encode().as_bytes()), Ok(header));
        let ask = CatchUp {
            epoch: EPOCH,
            after: 7,
            digest: None,
        };
        assert_eq!(ask.encode(), "banshare/1 since 00c0ffee12345678 7");
        assert_eq!(CatchUp::decode(ask.encode().as_bytes()), Ok(ask));
        let ask = CatchUp {
            digest: Some(Digest(0xfeed)),
            ..ask
        };
        assert_eq!(
            ask.encode(),
            "banshare/1 since 00c0ffee12345678 7 000000000000feed"
        );
        assert_eq!(CatchUp::decode(ask.encode().as_bytes()), Ok(ask));
        let frame = encode_record(8, b"<13>Nov 30 ... HOST 192.0.2.1 PORT 22");
        assert_eq!(
            decode_record(&frame),
            Ok((8, &b"<13>Nov 30 ... HOST 192.0.2.1 PORT 22"[..]))
        );
        for reply in [
            Reply::Stored {
                epoch: EPOCH,
                seq: 9,
            },
            Reply::Refused {
                kind: "wrong_token".into(),
            },
        ] {
            assert_eq!(Reply::decode(reply.encode().as_bytes()), Ok(reply));
        }
    }

    #[test]
    fn malformed_frames_are_refused() {
        for frame in [
            &b""[..],
            b"banshare/2 00c0ffee12345678 1",
            b"banshare/1 00c0ffee1234567 1",
            b"banshare/1 00c0ffee12345678 01",
            b"banshare/1 00c0ffee12345678 -1",
            b"banshare/1 00c0ffee12345678 1 2",
            b"banshare/1 00c0ffee12345678 99999999999999999999",
            b"\xff\xfe",
        ] {
            assert!(Header::decode(frame).is_err(), "{frame:?}");
        }
        for frame in [&b"0 line"[..], b"x line", b"line", b"01 line"] {
            assert!(decode_record(frame).is_err(), "{frame:?}");
        }
        assert!(decode_record(&vec![b'1'; 5000]).is_err());
        for frame in [&b"OK"[..], b"OK 1 2", b"NAK", b"NAK Bad-Kind", b"YES"] {
            assert!(Reply::decode(frame).is_err(), "{frame:?}");
        }
        for frame in [
            &b"banshare/1 since 00c0ffee12345678"[..],
            b"banshare/1 since 00c0ffee12345678 7 feed",
            b"banshare/1 since 00c0ffee12345678 7 000000000000feed x",
        ] {
            assert!(CatchUp::decode(frame).is_err(), "{frame:?}");
        }
    }
}
