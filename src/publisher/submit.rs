//! Judging one submission frame: parsed strictly, a legacy message turned
//! into a record, every record held to the trust policy and the fixed
//! never-ban ranges. Pure: no sockets, no disk, so the rules are tested
//! alone.

use chrono::Utc;

use crate::outbox::append::{Writer, build_legacy_record};
use crate::record::{BanTime, Record, never_ban};
use crate::transport::zmq::message::{self, LegacyPolicy, Message, NAK};
use crate::transport::zmq::wire::{Epoch, Reply};
use crate::trust::{TrustPolicy, Untrusted};

/// What the publisher needs to judge a submission.
#[derive(Debug, Clone)]
pub struct Rules {
    pub legacy: LegacyPolicy,
    /// The publisher itself: its tag, pid and key stamp and sign the
    /// records made from legacy submissions.
    pub writer: Writer,
    /// Carried by records made from legacy bans (`None`: each watcher's
    /// default applies).
    pub bantime: Option<BanTime>,
    pub trust: TrustPolicy,
}

/// An accepted frame: the record to store, and how to answer once it is.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub record: Record,
    /// `Some(ack)` for a legacy submission, `None` for a record.
    pub legacy_ack: Option<String>,
    /// Why the publisher could not verify this signed record
    /// (`unknown_key`, `bad_signature`): it is stored for the watchers to
    /// judge, and kept off the legacy broadcast, whose readers verify
    /// nothing. `None`: verified, or as the trust policy accepts it.
    pub unverified: Option<&'static str>,
}

impl Accepted {
    /// The reply once the record is stored as `seq`.
    pub fn stored(&self, epoch: Epoch, seq: u64) -> String {
        match &self.legacy_ack {
            Some(ack) => ack.clone(),
            None => Reply::Stored { epoch, seq }.encode(),
        }
    }

    /// The reply when it could not be stored.
    pub fn not_stored(&self, kind: &'static str) -> String {
        refusal(self.legacy_ack.is_some(), kind)
    }
}

/// A refused frame: its kind (for counting), why (for the log), its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub kind: &'static str,
    pub why: String,
    pub reply: String,
}

/// The reply to a refused frame: the original's bare `NAK` to a
/// legacy-shaped message (it holds a `|`), which is what the original's
/// monitor knows; `NAK <kind>` to anything else, so a banshare sender
/// learns why.
fn refusal(legacy_shaped: bool, kind: &'static str) -> String {
    if legacy_shaped {
        NAK.to_owned()
    } else {
        Reply::Refused { kind: kind.into() }.encode()
    }
}

impl Rules {
    /// Judges one frame of a submission request.
    /// As [`Rules::judge`], refusing anything but a legacy message
    /// (`records_not_here`): for the plaintext legacy socket.
    pub fn judge_legacy_only(&self, frame: &[u8]) -> Result<Accepted, Refused> {
        if memchr::memchr(b'|', frame).is_none() {
            let kind = "records_not_here";
            return Err(Refused {
                kind,
                why: "a record sent to the legacy submission socket".into(),
                reply: refusal(false, kind),
            });
        }
        self.judge(frame)
    }

    pub fn judge(&self, frame: &[u8]) -> Result<Accepted, Refused> {
        let legacy_shaped = memchr::memchr(b'|', frame).is_some();
        let refuse = |kind: &'static str, why: String| Refused {
            kind,
            why,
            reply: refusal(legacy_shaped, kind),
        };
        let accepted = match message::parse(frame, &self.legacy) {
            Err(e) => return Err(refuse(e.kind(), e.to_string())),
            Ok(Message::Legacy(submission)) => {
                let record =
                    build_legacy_record(&submission, &self.writer, self.bantime, Utc::now())
                        .map_err(|e| refuse("no_randomness", format!("cannot make an id: {e}")))?;
                Accepted {
                    record,
                    legacy_ack: Some(submission.ack().to_owned()),
                    unverified: None,
                }
            }
            Ok(Message::Record(record)) => {
                let unverified = match self.trust.check(&record) {
                    Ok(_) => None,
                    // The publisher's keys may be behind the watchers' (a
                    // node added, a key rotated in): refusing would lose
                    // the record for good, where a file log keeps it. Every
                    // watcher verifies it with its own keys (and an
                    // allowlist record against its own `trust.operators`).
                    Err(
                        e @ (Untrusted::UnknownNode
                        | Untrusted::BadSignature
                        | Untrusted::NotOperator),
                    ) => Some(e.kind()),
                    Err(e) => return Err(refuse(e.kind(), e.to_string())),
                };
                Accepted {
                    record: *record,
                    legacy_ack: None,
                    unverified,
                }
            }
        };
        let target = accepted.record.target;
        // What every watcher refuses is not stored, as `banshare ban`
        // refuses it.
        if let Err(why) = never_ban::check(target.net(), 0, 0) {
            return Err(refuse("never_ban", format!("{target}: {why}")));
        }
        Ok(accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::zmq::message::LegacyToken;
    use crate::trust::{Provenance, TrustedKeys, generate, public_line};

    fn rules(legacy: LegacyPolicy, trust: TrustPolicy) -> Rules {
        Rules {
            legacy,
            writer: Writer {
                node: "pub1".parse().unwrap(),
                tag: "banshare".parse().unwrap(),
                pid: 1,
                key: None,
            },
            bantime: None,
            trust,
        }
    }

    fn token() -> LegacyPolicy {
        LegacyPolicy::Token(LegacyToken::new("s3cret").unwrap())
    }

    #[test]
    fn a_legacy_ban_becomes_a_record_of_its_host_and_acks_without_token() {
        let r = rules(token(), TrustPolicy::default());
        let ok = r.judge(b"s3cret|web1|sshd|Ban|203.0.113.9").unwrap();
        assert_eq!(ok.stored(Epoch(1), 5), "web1|sshd|Ban|203.0.113.9");
        assert_eq!(ok.record.fields.node.unwrap().as_str(), "web1");
        assert_eq!(ok.record.target.to_string(), "203.0.113.9");
    }

    #[test]
    fn refusals_answer_nak_by_shape_and_name_the_kind() {
        let r = rules(token(), TrustPolicy::default());
        let wrong = r.judge(b"guess|web1|sshd|Ban|203.0.113.9").unwrap_err();
        assert_eq!((wrong.kind, wrong.reply.as_str()), ("wrong_token", "NAK"));
        let local = r.judge(b"s3cret|web1|sshd|Ban|127.0.0.1").unwrap_err();
        assert_eq!((local.kind, local.reply.as_str()), ("never_ban", "NAK"));
        let short = r.judge(b"<13>x").unwrap_err();
        assert_eq!(short.reply, "NAK too_short");
        let binary = r
            .judge(b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a")
            .unwrap_err();
        assert_eq!(binary.reply, "NAK bad_byte");
    }

    #[test]
    fn legacy_records_are_signed_by_the_publisher_for_their_host() {
        let key = std::sync::Arc::new(generate().unwrap());
        let mut r = rules(token(), TrustPolicy::default());
        r.writer.key = Some(key.clone());
        let ok = r.judge(b"s3cret|web1|sshd|Ban|203.0.113.9").unwrap();
        // A watcher trusts it when it lists the publisher's key for web1.
        let trust = |node: &str| TrustPolicy {
            keys: TrustedKeys::parse(&format!("{node} {}\n", public_line(&key)), "t").unwrap(),
            require_signed: true,
            allow_unsigned_logger: false,
            operators: Vec::new(),
        };
        let line = ok.record.to_string();
        let again = crate::record::parse(line.as_bytes()).unwrap();
        assert_eq!(trust("web1").check(&again), Ok(Provenance::Verified));
        assert!(trust("pub1").check(&again).is_err());
    }

    #[test]
    fn records_are_held_to_the_trust_policy() {
        let line = b"<13>Nov 30 12:00:00 banshare[1]: HOST 198.51.100.7 PORT 22 node=web2";
        let open = rules(LegacyPolicy::Refused, TrustPolicy::default());
        let ok = open.judge(line).unwrap();
        assert_eq!(ok.stored(Epoch(0xab), 3), "OK 00000000000000ab 3");
        let key = generate().unwrap();
        let strict = TrustPolicy {
            keys: TrustedKeys::parse(&format!("web2 {}\n", public_line(&key)), "t").unwrap(),
            require_signed: true,
            allow_unsigned_logger: false,
            operators: Vec::new(),
        };
        let refused = rules(LegacyPolicy::Refused, strict)
            .judge(line)
            .unwrap_err();
        assert_eq!(refused.reply, "NAK unsigned");
        let legacy = open.judge(b"web1|sshd|Ban|203.0.113.9").unwrap_err();
        assert_eq!(
            (legacy.kind, legacy.reply.as_str()),
            ("legacy_refused", "NAK")
        );
    }

    /// Review 12 (issue 12, zgaps): the publisher's keys may be behind the
    /// watchers' (a node added, a key being rotated in): a signed record it
    /// cannot verify is stored for every watcher to judge with its own
    /// keys, as a file log stores it, instead of refused for good. What no
    /// key update changes is still refused.
    #[test]
    fn signed_records_the_publisher_cannot_verify_are_stored_for_the_watchers_to_judge() {
        let signer = std::sync::Arc::new(generate().unwrap());
        let mut maker = rules(token(), TrustPolicy::default());
        maker.writer.key = Some(signer.clone());
        let made = maker.judge(b"s3cret|web1|sshd|Ban|203.0.113.9").unwrap();
        let signed = made.record.to_string();
        let other = generate().unwrap();
        let strict = |keys: &str| TrustPolicy {
            keys: TrustedKeys::parse(keys, "t").unwrap(),
            require_signed: true,
            allow_unsigned_logger: false,
            operators: Vec::new(),
        };
        for (keys, kind) in [
            (format!("web2 {}\n", public_line(&other)), "unknown_key"),
            (format!("web1 {}\n", public_line(&other)), "bad_signature"),
        ] {
            let r = rules(LegacyPolicy::Refused, strict(&keys));
            let ok = r
                .judge(signed.as_bytes())
                .unwrap_or_else(|e| panic!("{kind}: refused: {e:?}"));
            assert_eq!(ok.stored(Epoch(1), 2), "OK 0000000000000001 2");
            assert_eq!(ok.unverified, Some(kind));
        }
        let unsigned = b"<13>Nov 30 12:00:00 banshare[1]: HOST 198.51.100.7 PORT 22 node=web1";
        let r = rules(
            LegacyPolicy::Refused,
            strict(&format!("web1 {}\n", public_line(&signer))),
        );
        assert_eq!(r.judge(unsigned).unwrap_err().reply, "NAK unsigned");
        assert_eq!(r.judge(signed.as_bytes()).unwrap().unverified, None);
        // An allowlist record its own `operators` does not vouch for: the
        // watchers' lists decide.
        let mut allow = crate::record::parse(
            b"<13>Nov 30 12:00:00 banshare[1]: ALLOW 198.51.100.0/24 PORT 0:65535 node=web1 \
              ts=2026-11-30T12:00:00Z id=0123456789abcdef",
        )
        .unwrap();
        crate::trust::sign(&mut allow, &signer).unwrap();
        let ok = r.judge(allow.to_string().as_bytes()).unwrap();
        assert_eq!(ok.unverified, Some("not_operator"));
    }
}
