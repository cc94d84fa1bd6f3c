//! Signed records: who may write bans that this node applies.
//!
//! Every node has its own Ed25519 key (`banshare keygen`). The appender
//! signs each record's [canonical text](crate::record::Record::signed_text)
//! into its `sig` field; watchers verify it against a list of trusted
//! public keys, one or more per node id. Per-node keys, rather than one
//! cluster-wide secret, mean a compromised node can be revoked alone (delete
//! its line) and that no watcher holds anything that can sign: a file
//! server or a watcher that is broken into cannot forge bans.
//! `docs/security.md` has the threat model.
//!
//! A signature covers the verb, address, ports and all fields but `sig`,
//! behind a domain prefix (`banshare-record-v1`) so it cannot be replayed
//! in another protocol. A signed record needs `node`, `ts` and `id`: the
//! node picks the key; `ts` and `id` let watchers refuse replays.

mod batch;
mod keys;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

pub use batch::{CHUNK, SignatureCheck, verify_chunk};
pub use keys::{KeyError, TrustedKeys, generate, load_signing_key, public_line, secret_file};

use crate::record::{NodeId, Record};

/// What every signature is over, before the record's text.
const DOMAIN: &str = "banshare-record-v1\n";

/// Why a record's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("unsigned record where signatures are required")]
    Unsigned,
    #[error("signed record without node, ts or id")]
    Incomplete,
    #[error("no trusted key for the record's node")]
    UnknownNode,
    #[error("bad signature")]
    BadSignature,
    #[error("an allowlist record not signed by an operator (trust.operators)")]
    NotOperator,
}

impl Untrusted {
    /// A stable short name for counting.
    pub fn kind(self) -> &'static str {
        match self {
            Untrusted::Unsigned => "unsigned",
            Untrusted::Incomplete => "incomplete_signed",
            Untrusted::UnknownNode => "unknown_key",
            Untrusted::BadSignature => "bad_signature",
            Untrusted::NotOperator => "not_operator",
        }
    }
}

/// Signs `record` in place. It must carry `node`, `ts` and `id`, as every
/// record banshare writes does.
pub fn sign(record: &mut Record, key: &SigningKey) -> Result<(), Untrusted> {
    let f = &record.fields;
    if f.node.is_none() || f.ts.is_none() || f.id.is_none() {
        return Err(Untrusted::Incomplete);
    }
    let signature = key.sign(message(record).as_bytes());
    let text = URL_SAFE_NO_PAD.encode(signature.to_bytes());
    record.fields.sig = Some(text.parse().expect("base64url is a valid sig"));
    Ok(())
}

/// How far an accepted record is vouched for. Only a record signed by a
/// trusted node may set a permanent ban (see `watch.max_bantime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Signed, and the signature verified with a trusted key of its node.
    Verified,
    /// Accepted without a verified signature: unsigned where signatures
    /// are not required, a logger line where allowed, or signed by a node
    /// with no trusted key where signatures are not required.
    Unverified,
}

/// What a verifying node accepts.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    pub keys: TrustedKeys,
    /// Refuse records without a valid signature.
    pub require_signed: bool,
    /// Accept hand-written `logger` lines (no node, no id, no sig) even
    /// though signatures are required.
    pub allow_unsigned_logger: bool,
    /// The nodes whose verified signature makes an allowlist record count.
    /// A node's own key is not enough: with it, a thief could allowlist
    /// his own address on every watcher, so operators are separate ids
    /// (a key kept off the fleet), and none is the default.
    pub operators: Vec<NodeId>,
}

impl TrustPolicy {
    /// `Ok` if the record may be applied, with how far it is vouched for.
    /// An allowlist record needs a verified signature of an operator,
    /// whether signatures are required or not.
    pub fn check(&self, record: &Record) -> Result<Provenance, Untrusted> {
        let provenance = self.check_signature(record)?;
        self.operator_rule(record, provenance)
    }

    /// The operator rule alone, for a record whose signature was checked
    /// and found good enough as `provenance`: an allowlist record counts
    /// only with an operator's verified signature.
    pub fn operator_rule(
        &self,
        record: &Record,
        provenance: Provenance,
    ) -> Result<Provenance, Untrusted> {
        if !record.op.is_control() {
            return Ok(provenance);
        }
        let operator = record
            .fields
            .node
            .as_ref()
            .is_some_and(|node| self.operators.contains(node));
        match (provenance, operator) {
            (Provenance::Verified, true) => Ok(provenance),
            _ => Err(Untrusted::NotOperator),
        }
    }

    /// `Ok` if the record's signature (or its lack) is acceptable, without
    /// the operator rule: compaction keeps the allowlist records of any
    /// signer, since which signers are operators is each watcher's list.
    pub fn check_signature(&self, record: &Record) -> Result<Provenance, Untrusted> {
        match self.screen(record)? {
            Screened::Done(provenance) => Ok(provenance),
            Screened::Pending(pending) => pending.verify(record),
        }
    }

    /// Everything [`TrustPolicy::check_signature`] decides without the
    /// Ed25519 arithmetic, which is nearly all of its cost: whether a
    /// signature is needed, present, complete, from a known node and well
    /// formed. What is left is a [`Pending`] check, which the watcher makes
    /// only for records that could change its state, and in batches.
    pub fn screen(&self, record: &Record) -> Result<Screened<'_>, Untrusted> {
        let Some(sig) = &record.fields.sig else {
            return match (
                self.require_signed,
                self.allow_unsigned_logger && is_logger_line(record),
            ) {
                (false, _) | (true, true) => Ok(Screened::Done(Provenance::Unverified)),
                (true, false) => Err(Untrusted::Unsigned),
            };
        };
        let f = &record.fields;
        let (Some(node), Some(_), Some(_)) = (&f.node, &f.ts, &f.id) else {
            return Err(Untrusted::Incomplete);
        };
        let keys = self.keys.of(node);
        if keys.is_empty() {
            // Signed by a node we do not know: as good as unsigned.
            return if self.require_signed {
                Err(Untrusted::UnknownNode)
            } else {
                Ok(Screened::Done(Provenance::Unverified))
            };
        }
        let signature = URL_SAFE_NO_PAD
            .decode(sig.as_str())
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or(Untrusted::BadSignature)?;
        Ok(Screened::Pending(Pending { signature, keys }))
    }
}

/// What screening a record's signature found (see [`TrustPolicy::screen`]).
#[derive(Debug, Clone)]
pub enum Screened<'k> {
    /// Decided: no signature check is needed.
    Done(Provenance),
    /// A well-formed signature to check against its node's keys; the
    /// record is [`Provenance::Verified`] if it holds.
    Pending(Pending<'k>),
}

/// A signature still to check, and the keys of the node it claims.
#[derive(Debug, Clone)]
pub struct Pending<'k> {
    signature: Signature,
    keys: &'k [VerifyingKey],
}

impl Pending<'_> {
    /// Checks the signature of `record` (the record it was screened from).
    pub fn verify(&self, record: &Record) -> Result<Provenance, Untrusted> {
        let message = message(record);
        if self
            .keys
            .iter()
            .any(|k| k.verify(message.as_bytes(), &self.signature).is_ok())
        {
            Ok(Provenance::Verified)
        } else {
            Err(Untrusted::BadSignature)
        }
    }
}

/// A line as `logger -s` writes it by hand: nothing but the ban.
fn is_logger_line(record: &Record) -> bool {
    let f = &record.fields;
    f.node.is_none() && f.id.is_none() && f.ts.is_none() && f.sig.is_none()
}

fn message(record: &Record) -> String {
    format!("{DOMAIN}{}", record.signed_part())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record;

    fn record(text: &str) -> Record {
        record::parse(format!("<13>Nov 21 18:00:00 banshare[1]: {text}").as_bytes()).unwrap()
    }

    fn signed_by(key: &SigningKey) -> Record {
        let mut r = record(
            "HOST 192.0.2.1 PORT 22 jail=sshd node=web1 ts=2026-11-21T18:00:00Z bantime=600 id=0123456789abcdef",
        );
        sign(&mut r, key).unwrap();
        r
    }

    fn policy(key: &SigningKey) -> TrustPolicy {
        let keys = TrustedKeys::parse(&format!("web1 {}\n", public_line(key)), "test").unwrap();
        TrustPolicy {
            keys,
            require_signed: true,
            allow_unsigned_logger: false,
            operators: Vec::new(),
        }
    }

    #[test]
    fn allowlist_records_need_an_operators_signature() {
        let key = generate().unwrap();
        let allow = |node: &str| {
            let mut r = record(&format!(
                "ALLOW 192.0.2.1 PORT 0:65535 node={node} ts=2026-11-21T18:00:00Z id=0123456789abcdef"
            ));
            sign(&mut r, &key).unwrap();
            r
        };
        let keys =
            TrustedKeys::parse(&format!("web1 {0}\nops {0}\n", public_line(&key)), "test").unwrap();
        let mut p = TrustPolicy {
            keys,
            require_signed: false,
            allow_unsigned_logger: true,
            operators: vec!["ops".parse().unwrap()],
        };
        assert_eq!(p.check(&allow("ops")), Ok(Provenance::Verified));
        assert_eq!(
            p.check(&allow("web1")),
            Err(Untrusted::NotOperator),
            "a node's own key"
        );
        let mut unsigned = allow("ops");
        unsigned.fields.sig = None;
        assert_eq!(p.check(&unsigned), Err(Untrusted::NotOperator));
        p.keys = TrustedKeys::default();
        assert_eq!(
            p.check(&allow("ops")),
            Err(Untrusted::NotOperator),
            "unknown key"
        );
    }

    #[test]
    fn a_signed_record_survives_the_log_and_verifies() {
        let key = generate().unwrap();
        let r = signed_by(&key);
        let again = record::parse(r.to_string().as_bytes()).unwrap();
        assert_eq!(policy(&key).check(&again), Ok(Provenance::Verified));
    }

    #[test]
    fn forged_altered_unsigned_and_unknown_are_refused() {
        let key = generate().unwrap();
        let other = generate().unwrap();
        let p = policy(&key);
        assert_eq!(
            p.check(&signed_by(&other)),
            Err(Untrusted::BadSignature),
            "signed with another key"
        );
        let mut altered = signed_by(&key);
        altered.target = "192.0.2.99".parse().unwrap();
        assert_eq!(
            p.check(&altered),
            Err(Untrusted::BadSignature),
            "address changed after signing"
        );
        let mut longer = signed_by(&key);
        longer.fields.bantime = Some(record::BanTime::Permanent);
        assert_eq!(
            p.check(&longer),
            Err(Untrusted::BadSignature),
            "bantime changed after signing"
        );
        let unsigned =
            record("HOST 192.0.2.1 PORT 22 node=web1 ts=2026-11-21T18:00:00Z id=0123456789abcdef");
        assert_eq!(p.check(&unsigned), Err(Untrusted::Unsigned));
        let mut stranger = signed_by(&key);
        stranger.fields.node = Some("db9".parse().unwrap());
        assert_eq!(p.check(&stranger), Err(Untrusted::UnknownNode));
        let mut garbage = signed_by(&key);
        garbage.fields.sig = Some("AAAA".parse().unwrap());
        assert_eq!(p.check(&garbage), Err(Untrusted::BadSignature));
    }

    #[test]
    fn logger_lines_only_when_allowed() {
        let key = generate().unwrap();
        let logger = record("HOST 192.0.2.1 PORT 22");
        let mut p = policy(&key);
        assert_eq!(p.check(&logger), Err(Untrusted::Unsigned));
        p.allow_unsigned_logger = true;
        assert_eq!(p.check(&logger), Ok(Provenance::Unverified));
        // An unsigned banshare record is not a logger line.
        let unsigned =
            record("HOST 192.0.2.1 PORT 22 node=web1 ts=2026-11-21T18:00:00Z id=0123456789abcdef");
        assert_eq!(p.check(&unsigned), Err(Untrusted::Unsigned));
    }

    #[test]
    fn without_keys_nothing_is_required() {
        let p = TrustPolicy::default();
        assert_eq!(
            p.check(&record("HOST 192.0.2.1 PORT 22")),
            Ok(Provenance::Unverified)
        );
        // A signature from a node with no trusted key vouches for nothing.
        let key = generate().unwrap();
        assert_eq!(p.check(&signed_by(&key)), Ok(Provenance::Unverified));
    }
}
