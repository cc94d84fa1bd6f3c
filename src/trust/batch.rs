//! Checking many signatures at once, for a catch-up, in batch equations
//! (`watch::checking` runs them on all cores).
//!
//! One Ed25519 check is most of a signed record's cost (about 45 µs on one
//! thread here, against about 1.4 µs for all the rest). A batch equation
//! checks a chunk of signatures with one multi-scalar multiplication, for
//! a fraction of the cost per signature, but it only says whether all of
//! them hold: a failed chunk is checked again one by one to find the bad
//! ones. Per signature, by callgrind, records of 100 nodes: one check
//! 349,000 instructions; `ed25519_dalek::verify_batch` in chunks of 256,
//! 150,000, of 1,024, 130,000; [`batch_holds`], which adds up the terms of
//! each node's key first, 110,000 and 87,000 (chunks of 2,048 are about
//! 5% cheaper again).
//! A log of forged records would then cost a batch and a single check per
//! record, so after a failed chunk the next ones, on whatever thread, are
//! checked one by one, until one comes out clean.
//!
//! A batch accepts exactly the signatures single checks accept, but for
//! signatures made with small-order components on purpose, which takes the
//! signer's secret key: a trusted node can sign what it likes anyway.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha512};

use super::{DOMAIN, Pending, Provenance, Untrusted};
use crate::record::Record;

/// One signature to check: the record and what screening it found.
#[derive(Debug, Clone)]
pub struct SignatureCheck<'a> {
    pub record: &'a Record,
    pub pending: Pending<'a>,
}

impl SignatureCheck<'_> {
    fn verify(&self) -> Result<Provenance, Untrusted> {
        self.pending.verify(self.record)
    }
}

/// The most signatures in one batch equation: large enough for most of
/// the gain, small enough that a bad one wastes little (a failed batch of
/// 2,048 costs about 500 single checks). Equations of 1,024 cost about 5%
/// more per signature; of 4,096, measured no faster.
pub const CHUNK: usize = 2048;

/// Checks up to [`CHUNK`] signatures with one batch equation, and one by
/// one if it fails. A log of forged records would cost a batch and a
/// single check per record, so while `failed` is set (a chunk had a bad
/// signature) chunks are checked one by one, until one comes out clean.
/// Records of a node with several keys (one being replaced) are checked
/// one by one: which key signed is not known, and single checks try each;
/// the others of the chunk are still batched.
pub fn verify_chunk(
    chunk: &[SignatureCheck<'_>],
    failed: &AtomicBool,
) -> Vec<Result<Provenance, Untrusted>> {
    let mut results: Vec<Option<Result<Provenance, Untrusted>>> = chunk
        .iter()
        .map(|check| (check.pending.keys.len() != 1).then(|| check.verify()))
        .collect();
    let batchable: Vec<&SignatureCheck<'_>> = chunk
        .iter()
        .zip(&results)
        .filter_map(|(check, done)| done.is_none().then_some(check))
        .collect();
    let held = !failed.load(Ordering::Relaxed) && batchable.len() > 1 && batch_holds(&batchable);
    for (check, result) in chunk.iter().zip(results.iter_mut()) {
        if result.is_none() {
            *result = Some(match held {
                true => Ok(Provenance::Verified),
                false => check.verify(),
            });
        }
    }
    let results: Vec<_> = results.into_iter().flatten().collect();
    failed.store(
        !held && results.iter().any(Result::is_err),
        Ordering::Relaxed,
    );
    results
}

/// Whether every signature of `chunk` holds, by one batch equation. Only
/// for records whose node has one key (see [`verify_part`]).
///
/// The equation is `ed25519_dalek::verify_batch`'s, with random 128-bit
/// weights `z`: `[-Σ z·s]B + Σ z·R + Σ (z·k)A = 0`, `k = H(R ‖ A ‖ M)`.
/// A catch-up's records come from a few nodes, so the terms of one key are
/// added up before the multiplication: one point per node instead of one
/// per record, which takes the multi-scalar multiplication from `2n + 1`
/// points to about `n + 1` (ed25519-dalek's function multiplies each
/// record's key on its own). Either way it is the same sum, and
/// it holds exactly when ed25519-dalek's would.
fn batch_holds(chunk: &[&SignatureCheck<'_>]) -> bool {
    let mut weights = vec![0u8; 16 * chunk.len()];
    if getrandom::fill(&mut weights).is_err() {
        return false; // No batch without fresh randomness: single checks.
    }
    // Room for the base point and one key: a chunk of one node's records
    // takes no reallocation (see below for more keys).
    let mut scalars = Vec::with_capacity(chunk.len() + 2);
    let mut points = Vec::with_capacity(chunk.len() + 2);
    let mut base = Scalar::ZERO;
    let mut per_key: Vec<(&VerifyingKey, Scalar)> = Vec::new();
    let mut slot: HashMap<&[u8; 32], usize> = HashMap::new();
    for (check, weight) in chunk.iter().zip(weights.chunks_exact(16)) {
        let [key] = check.pending.keys else {
            return false; // Several keys: for single checks.
        };
        let Some((s, r)) = parse_signature(&check.pending.signature) else {
            return false; // Malformed: the single check says so.
        };
        let z = Scalar::from(u128::from_le_bytes(weight.try_into().unwrap()));
        let k = challenge(&check.pending.signature, key, check.record);
        base += z * s;
        scalars.push(z);
        points.push(r);
        let at = *slot.entry(key.as_bytes()).or_insert_with(|| {
            per_key.push((key, Scalar::ZERO));
            per_key.len() - 1
        });
        per_key[at].1 += z * k;
    }
    // Exactly: doubling a chunk's points for its few keys would hold
    // twice the chunk's points (a third of a megabyte) per thread.
    scalars.reserve_exact(per_key.len() + 1);
    points.reserve_exact(per_key.len() + 1);
    scalars.push(-base);
    points.push(ED25519_BASEPOINT_POINT);
    for (key, weight) in per_key {
        scalars.push(weight);
        points.push(key.to_edwards());
    }
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

/// A signature's `s`, refused unless reduced (as ed25519-dalek does without
/// its `legacy_compatibility`), and its `R` as a point, refused unless
/// canonically encoded: a single check compares the `R` it computes, as
/// encoded, with the signature's bytes, so it refuses every other encoding
/// of a point, and an equation on points alone would not.
fn parse_signature(signature: &Signature) -> Option<(Scalar, EdwardsPoint)> {
    let s = Option::from(Scalar::from_canonical_bytes(*signature.s_bytes()))?;
    let bytes = signature.r_bytes();
    if !is_canonical_point(bytes) {
        return None;
    }
    let r = CompressedEdwardsY(*bytes).decompress()?;
    Some((s, r))
}

/// Whether `bytes` is the one encoding of the point it decodes to, without
/// encoding it again (an inversion, as dear as the decompression): the
/// other encodings are a `y` of `p` or more (`p = 2^255 - 19`), and the
/// sign bit set with `x = 0`, which is `y = 1` or `y = p - 1`.
fn is_canonical_point(bytes: &[u8; 32]) -> bool {
    let high = bytes[31] & 0x7f;
    let middle_all = |b: u8| bytes[1..31].iter().all(|x| *x == b);
    let all_ones = high == 0x7f && middle_all(0xff);
    let y_at_least_p = all_ones && bytes[0] >= 0xed;
    let y_minus_one = all_ones && bytes[0] == 0xec;
    let y_one = high == 0 && middle_all(0) && bytes[0] == 1;
    let sign = bytes[31] & 0x80 != 0;
    !y_at_least_p && !(sign && (y_one || y_minus_one))
}

/// Feeds what is written to a hash.
struct Hashing<'h>(&'h mut Sha512);

impl fmt::Write for Hashing<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// `k = H(R ‖ A ‖ M) mod ℓ`, of Ed25519 (RFC 8032, 5.1.7).
fn challenge(signature: &Signature, key: &VerifyingKey, record: &Record) -> Scalar {
    let mut hash = Sha512::new();
    hash.update(signature.r_bytes());
    hash.update(key.as_bytes());
    hash.update(DOMAIN.as_bytes());
    // Straight into the hash: no `String` per record.
    write!(Hashing(&mut hash), "{}", record.signed_part()).expect("hashing cannot fail");
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&hash.finalize());
    Scalar::from_bytes_mod_order_wide(&wide)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record;
    use crate::trust::{Screened, TrustPolicy, TrustedKeys, generate, message, public_line, sign};
    use ed25519_dalek::SigningKey;

    /// The result of each check, in order, by chunks as the catch-up makes
    /// them, one failure flag for all.
    fn verify_all(checks: &[SignatureCheck<'_>]) -> Vec<Result<Provenance, Untrusted>> {
        let failed = AtomicBool::new(false);
        checks
            .chunks(CHUNK)
            .flat_map(|chunk| verify_chunk(chunk, &failed))
            .collect()
    }

    fn signed(i: usize, key: &SigningKey) -> Record {
        signed_as(i, "web1", key)
    }

    fn signed_as(i: usize, node: &str, key: &SigningKey) -> Record {
        let mut r = record::parse(
            format!(
                "<13>Nov 21 18:00:00 banshare[1]: HOST 192.0.2.{} PORT 22 jail=sshd node={node} \
                 ts=2026-11-21T18:00:00Z bantime=600 id={i:016x}",
                i % 250 + 1
            )
            .as_bytes(),
        )
        .unwrap();
        sign(&mut r, key).unwrap();
        r
    }

    fn policy(keys: &[&SigningKey]) -> TrustPolicy {
        let text: String = keys
            .iter()
            .map(|k| format!("web1 {}\n", public_line(k)))
            .collect();
        TrustPolicy {
            keys: TrustedKeys::parse(&text, "test").unwrap(),
            require_signed: true,
            ..TrustPolicy::default()
        }
    }

    fn checks<'a>(policy: &'a TrustPolicy, records: &'a [Record]) -> Vec<SignatureCheck<'a>> {
        records
            .iter()
            .map(|record| match policy.screen(record) {
                Ok(Screened::Pending(pending)) => SignatureCheck { record, pending },
                other => panic!("not a pending check: {other:?}"),
            })
            .collect()
    }

    fn refs<'a>(checks: &'a [SignatureCheck<'a>]) -> Vec<&'a SignatureCheck<'a>> {
        checks.iter().collect()
    }

    /// Which of `records` hold by [`verify_all`], asserted to be those
    /// that hold by single checks.
    fn agreeing_with_single_checks(policy: &TrustPolicy, records: &[Record]) -> Vec<bool> {
        let results = verify_all(&checks(policy, records));
        let good: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(good, one_by_one(policy, records));
        good
    }

    /// Which of `records` verify, one by one: what a batch must agree with.
    fn one_by_one(policy: &TrustPolicy, records: &[Record]) -> Vec<bool> {
        records
            .iter()
            .map(|r| policy.check_signature(r).is_ok())
            .collect()
    }

    #[test]
    fn a_batch_with_bad_records_among_good_ones_accepts_exactly_the_good_ones() {
        let key = generate().unwrap();
        let forger = generate().unwrap();
        let policy = policy(&[&key]);
        // Enough for several chunks on several threads; bad ones alone, in
        // a run, at a chunk's edges, and two chunks in a row.
        let bad = [
            3,
            CHUNK - 1,
            CHUNK,
            CHUNK + 150,
            CHUNK + 151,
            CHUNK + 152,
            2 * CHUNK + 200,
            3 * CHUNK + 260,
            3 * CHUNK + 299,
        ];
        let records: Vec<Record> = (0..3 * CHUNK + 300)
            .map(|i| match bad.contains(&i) {
                true => signed(i, &forger),
                false => signed(i, &key),
            })
            .collect();
        let mut altered = records[10].clone();
        altered.fields.bantime = Some(record::BanTime::Permanent);
        let mut records = records;
        records[10] = altered;
        let results = verify_all(&checks(&policy, &records));
        let good: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(good, one_by_one(&policy, &records));
        let refused: Vec<usize> = (0..records.len()).filter(|i| !good[*i]).collect();
        let mut expected = bad.to_vec();
        expected.push(10);
        expected.sort();
        assert_eq!(refused, expected);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(Provenance::Verified) | Err(Untrusted::BadSignature)))
        );
    }

    #[test]
    fn after_a_failed_batch_the_next_chunk_is_checked_one_by_one_then_batches_again() {
        let key = generate().unwrap();
        let forger = generate().unwrap();
        let policy = policy(&[&key]);
        // Chunks in order: a clean one, one with a forgery, then two clean
        // ones (the first checked one by one, the next batched).
        let records: Vec<Record> = (0..3 * CHUNK + 10)
            .map(|i| match i == CHUNK + 7 {
                true => signed(i, &forger),
                false => signed(i, &key),
            })
            .collect();
        let results = verify_all(&checks(&policy, &records));
        let good: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(good, one_by_one(&policy, &records));
        assert_eq!(good.iter().filter(|g| !**g).count(), 1);
    }

    #[test]
    fn all_forged_all_good_few_and_a_node_with_two_keys() {
        let key = generate().unwrap();
        let new_key = generate().unwrap();
        let forger = generate().unwrap();
        let policy = policy(&[&key, &new_key]);
        // Two keys for the node: single checks try both.
        let records: Vec<Record> = (0..150)
            .map(|i| match i % 3 {
                0 => signed(i, &key),
                1 => signed(i, &new_key),
                _ => signed(i, &forger),
            })
            .collect();
        let good: Vec<bool> = verify_all(&checks(&policy, &records))
            .iter()
            .map(Result::is_ok)
            .collect();
        assert_eq!(good, one_by_one(&policy, &records));
        assert_eq!(good.iter().filter(|g| **g).count(), 100);
        let single = self::policy(&[&key]);
        for n in [0, 1, 5, 200] {
            let forged: Vec<Record> = (0..n).map(|i| signed(i, &forger)).collect();
            let results = verify_all(&checks(&single, &forged));
            assert_eq!(results, vec![Err(Untrusted::BadSignature); n]);
            let honest: Vec<Record> = (0..n).map(|i| signed(i, &key)).collect();
            let results = verify_all(&checks(&single, &honest));
            assert_eq!(results, vec![Ok(Provenance::Verified); n]);
        }
    }

    #[test]
    fn one_equation_holds_for_clean_chunks_from_several_nodes_and_fails_for_one_bad_signature() {
        let keys: Vec<SigningKey> = (0..3).map(|_| generate().unwrap()).collect();
        let text: String = keys
            .iter()
            .enumerate()
            .map(|(n, k)| format!("web{n} {}\n", public_line(k)))
            .collect();
        let policy = TrustPolicy {
            keys: TrustedKeys::parse(&text, "test").unwrap(),
            require_signed: true,
            ..TrustPolicy::default()
        };
        let records: Vec<Record> = (0..40)
            .map(|i| signed_as(i, &format!("web{}", i % 3), &keys[i % 3]))
            .collect();
        assert!(batch_holds(&refs(&checks(&policy, &records))));
        // Signed by another node's key.
        let mut wrong = records.clone();
        wrong[17] = signed_as(17, "web2", &keys[1]);
        assert!(!batch_holds(&refs(&checks(&policy, &wrong))));
        // The same signature with `s + ℓ`: the same point, refused as
        // malleable by single checks, and so by the batch.
        let mut malleable = records.clone();
        malleable[5] = with_s_plus_order(&records[5]);
        assert!(policy.check_signature(&malleable[5]).is_err());
        assert!(!batch_holds(&refs(&checks(&policy, &malleable))));
        let good = agreeing_with_single_checks(&policy, &malleable);
        assert_eq!(good.iter().filter(|g| !**g).count(), 1);
    }

    /// A signature whose `R` is another encoding of the identity (`y = 1`
    /// with the sign bit set), with `s = k·a`: the equation on points holds
    /// for it, a single check refuses it, and so must the batch (found by
    /// review: before, it passed every batch).
    #[test]
    fn a_non_canonical_r_is_refused_as_single_checks_refuse_it() {
        let key = generate().unwrap();
        let policy = policy(&[&key]);
        let mut records: Vec<Record> = (0..10).map(|i| signed(i, &key)).collect();
        let victim = records[4].clone();
        let mut r = [0u8; 32];
        r[0] = 1;
        r[31] = 0x80;
        let mut hash = Sha512::new();
        hash.update(r);
        hash.update(key.verifying_key().as_bytes());
        hash.update(message(&victim).as_bytes());
        let mut wide = [0u8; 64];
        wide.copy_from_slice(&hash.finalize());
        let s = Scalar::from_bytes_mod_order_wide(&wide) * key.to_scalar();
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r);
        signature[32..].copy_from_slice(s.as_bytes());
        records[4] = with_signature(&victim, &signature);
        assert!(policy.check_signature(&records[4]).is_err());
        assert!(!batch_holds(&refs(&checks(&policy, &records))));
        agreeing_with_single_checks(&policy, &records);
    }

    #[test]
    fn the_other_encodings_of_points_are_told_apart() {
        let with = |low: u8, middle: u8, high: u8| {
            let mut bytes = [middle; 32];
            bytes[0] = low;
            bytes[31] = high;
            is_canonical_point(&bytes)
        };
        assert!(with(1, 0, 0)); // y = 1, the identity
        assert!(!with(1, 0, 0x80)); // the same with the sign bit
        assert!(with(0xec, 0xff, 0x7f)); // y = p - 1
        assert!(!with(0xec, 0xff, 0xff));
        assert!(!with(0xed, 0xff, 0x7f)); // y = p
        assert!(!with(0xee, 0xff, 0xff)); // y = p + 1, sign set
        assert!(!with(0xff, 0xff, 0x7f)); // y = 2^255 - 1
        assert!(with(0xeb, 0xff, 0xff)); // y = p - 2, either sign
        assert!(with(2, 0, 0x80));
        let base = curve25519_dalek::constants::ED25519_BASEPOINT_COMPRESSED;
        assert!(is_canonical_point(base.as_bytes()));
    }

    /// Review 17: the challenge hashed straight from the record's parts is
    /// `H(R ‖ A ‖ M)` of the very message `sign` signs and single checks
    /// verify, for every shape of record: no jail, no bantime, a permanent
    /// one, networks, port lists, ranges and names, unbans, allowlist
    /// records, fractional seconds. A difference would not show in the
    /// other tests: a failed batch falls back to single checks.
    #[test]
    fn the_challenge_hashes_the_signed_message_for_every_shape_of_record() {
        let key = generate().unwrap();
        let keys = TrustPolicy {
            keys: TrustedKeys::parse(
                &format!("web1 {}\nops {}\n", public_line(&key), public_line(&key)),
                "test",
            )
            .unwrap(),
            require_signed: true,
            ..TrustPolicy::default()
        };
        let id = "id=0123456789abcdef";
        let ts = "ts=2026-11-21T18:00:00Z";
        let bodies = [
            format!("HOST 192.0.2.1 PORT 22 node=web1 {ts} {id}"),
            format!("HOST 192.0.2.1 PORT 22 jail=sshd node=web1 {ts} bantime=600 {id}"),
            format!("HOST 192.0.2.1 PORT 22 jail=sshd node=web1 {ts} bantime=-1 {id}"),
            format!("HOST 198.51.100.0/24 PORT 22,80:90,ssh node=web1 {ts} {id}"),
            format!("HOST 2001:db8::/32 PORT 0:65535 jail=a.b-c node=web1 {ts} {id}"),
            format!("HOST 2001:db8::7 PORT https node=web1 ts=2026-11-21T18:00:00.250Z {id}"),
            format!("UNBAN 192.0.2.1 PORT 22 jail=sshd node=web1 {ts} {id}"),
            format!("UNBAN 198.51.100.0/24 PORT 22 node=web1 {ts} {id}"),
            format!("ALLOW 198.51.100.0/24 PORT 0:65535 node=ops {ts} {id}"),
            format!("UNALLOW 192.0.2.9 PORT 0:65535 node=ops {ts} {id}"),
        ];
        let records: Vec<Record> = bodies
            .iter()
            .map(|body| {
                let line = format!("<13>Nov 21 18:00:00 banshare[1]: {body}");
                let mut r = record::parse(line.as_bytes()).unwrap();
                assert_eq!(r.signed_text(), *body);
                sign(&mut r, &key).unwrap();
                assert_eq!(r.signed_text(), *body);
                r
            })
            .collect();
        for r in &records {
            let sig = Signature::from_slice(&{
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(r.fields.sig.as_ref().unwrap().as_str())
                    .unwrap()
            })
            .unwrap();
            let mut hash = Sha512::new();
            hash.update(sig.r_bytes());
            hash.update(key.verifying_key().as_bytes());
            hash.update(message(r).as_bytes());
            let mut wide = [0u8; 64];
            wide.copy_from_slice(&hash.finalize());
            let expected = Scalar::from_bytes_mod_order_wide(&wide);
            assert_eq!(challenge(&sig, &key.verifying_key(), r), expected, "{r}");
            assert!(keys.check_signature(r).is_ok(), "{r}");
        }
        assert!(batch_holds(&refs(&checks(&keys, &records))));
    }

    /// Review 17: chunks checked at once on several threads, sharing one
    /// `failed`, forgeries in some: whatever order the flag is set and
    /// cleared in, each result is the single check's.
    #[test]
    fn chunks_sharing_one_failed_flag_on_several_threads_agree_with_single_checks() {
        let key = generate().unwrap();
        let forger = generate().unwrap();
        let policy = policy(&[&key]);
        let records: Vec<Record> = (0..1200)
            .map(|i| match i % 97 == 5 || (300..310).contains(&i) {
                true => signed(i, &forger),
                false => signed(i, &key),
            })
            .collect();
        let checks = checks(&policy, &records);
        let expected = one_by_one(&policy, &records);
        let failed = AtomicBool::new(false);
        for size in [2, 3, 64, 150] {
            let results: Vec<Vec<bool>> = std::thread::scope(|scope| {
                let jobs: Vec<_> = checks
                    .chunks(size)
                    .map(|chunk| {
                        let failed = &failed;
                        scope.spawn(move || {
                            verify_chunk(chunk, failed)
                                .iter()
                                .map(Result::is_ok)
                                .collect::<Vec<bool>>()
                        })
                    })
                    .collect();
                jobs.into_iter().map(|j| j.join().unwrap()).collect()
            });
            assert_eq!(results.concat(), expected, "chunks of {size}");
        }
    }

    /// `record` with its signature's `s` replaced by `s + ℓ`.
    fn with_s_plus_order(record: &Record) -> Record {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let sig = record.fields.sig.as_ref().unwrap().as_str();
        let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
        // ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let low = 27742317777372353535851937790883648493u128;
        let mut order = [0u8; 32];
        order[..16].copy_from_slice(&low.to_le_bytes());
        order[31] = 0x10;
        let mut carry = 0u16;
        for (b, o) in bytes[32..].iter_mut().zip(order) {
            let sum = u16::from(*b) + u16::from(o) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        with_signature(record, &bytes)
    }

    /// `record` with `signature` (64 bytes) in place of its own.
    fn with_signature(record: &Record, signature: &[u8]) -> Record {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let sig = record.fields.sig.as_ref().unwrap().as_str();
        let text = record
            .to_string()
            .replace(sig, &URL_SAFE_NO_PAD.encode(signature));
        record::parse(text.as_bytes()).unwrap()
    }
}
