//! Checking many signatures at once, for a catch-up: on all cores, and in
//! batches where that pays.
//!
//! One Ed25519 check is most of a signed record's cost (about 45 µs on one
//! thread here, against about 1.4 µs for all the rest). `verify_batch`
//! checks a chunk of signatures with one multi-scalar multiplication, for
//! less than half the cost per signature (callgrind, ed25519-dalek 2.2:
//! 349,000 instructions for one check; per signature in a batch of 16,
//! 186,000; of 64, 172,000; of 256, 149,000; of 1,024, 130,000), but it
//! only says whether all of them hold: a failed chunk is checked again one
//! by one to find the bad ones.
//! A log of forged records would then cost a batch and a single check per
//! record, so after a failed chunk a worker checks its next chunk one by one,
//! and goes back to batches once a chunk comes out clean.
//!
//! A batch accepts exactly the signatures single checks accept, but for
//! signatures made with small-order components on purpose, which takes the
//! signer's secret key: a trusted node can sign what it likes anyway.

use ed25519_dalek::{Signature, VerifyingKey, verify_batch};
use rayon::prelude::*;

use super::{Pending, Provenance, Untrusted, message};
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

/// Below this many checks, they run one by one on the calling thread: a
/// follower's batch of a few records gains nothing from threads.
const PARALLEL_MIN: usize = 128;

/// Signatures per batch equation: large enough for most of the gain,
/// small enough that a bad one wastes little (a failed batch of 256 costs
/// about 110 single checks).
const CHUNK: usize = 256;

/// Work items per thread, so that a thread slowed by other load on the
/// machine leaves its share to the others.
const PARTS_PER_THREAD: usize = 4;

/// The result of each check, in the order of `checks`.
pub fn verify_all(checks: &[SignatureCheck<'_>]) -> Vec<Result<Provenance, Untrusted>> {
    if checks.len() < PARALLEL_MIN {
        return verify_part(checks);
    }
    let parts = rayon::current_num_threads() * PARTS_PER_THREAD;
    let part_len = checks.len().div_ceil(parts).max(CHUNK);
    let results: Vec<Vec<_>> = checks.par_chunks(part_len).map(verify_part).collect();
    results.concat()
}

/// Checks `part` in chunks, in order, on one thread.
fn verify_part(part: &[SignatureCheck<'_>]) -> Vec<Result<Provenance, Untrusted>> {
    let mut results = Vec::with_capacity(part.len());
    let mut last_failed = false;
    for chunk in part.chunks(CHUNK) {
        if !last_failed && chunk.len() > 1 && batch_holds(chunk) {
            results.extend(chunk.iter().map(|_| Ok(Provenance::Verified)));
            continue;
        }
        let before = results.len();
        results.extend(chunk.iter().map(SignatureCheck::verify));
        last_failed = results[before..].iter().any(Result::is_err);
    }
    results
}

/// Whether every signature of `chunk` holds, by one batch equation. Only
/// for records whose node has one key: with more (a key being replaced),
/// which key signed is not known, and single checks try each.
fn batch_holds(chunk: &[SignatureCheck<'_>]) -> bool {
    let mut keys: Vec<VerifyingKey> = Vec::with_capacity(chunk.len());
    for check in chunk {
        match check.pending.keys {
            [key] => keys.push(*key),
            _ => return false,
        }
    }
    let messages: Vec<String> = chunk.iter().map(|c| message(c.record)).collect();
    let messages: Vec<&[u8]> = messages.iter().map(String::as_bytes).collect();
    let signatures: Vec<Signature> = chunk.iter().map(|c| c.pending.signature).collect();
    verify_batch(&messages, &signatures, &keys).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record;
    use crate::trust::{Screened, TrustPolicy, TrustedKeys, generate, public_line, sign};
    use ed25519_dalek::SigningKey;

    fn signed(i: usize, key: &SigningKey) -> Record {
        let mut r = record::parse(
            format!(
                "<13>Nov 21 18:00:00 banshare[1]: HOST 192.0.2.{} PORT 22 jail=sshd node=web1 \
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
        let bad = [3, 63, 64, 150, 151, 152, 200, 260, 299];
        let records: Vec<Record> = (0..300)
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
        // One worker's part: a clean chunk, one with a forgery, then two
        // clean ones (the first checked one by one, the next batched).
        let records: Vec<Record> = (0..3 * CHUNK + 10)
            .map(|i| match i == CHUNK + 7 {
                true => signed(i, &forger),
                false => signed(i, &key),
            })
            .collect();
        let results = verify_part(&checks(&policy, &records));
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
}
