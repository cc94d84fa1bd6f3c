//! The record ids a watcher has seen, to drop copies of a record.
//!
//! Catching up on a log of a million records means a million ids in
//! memory, so each is kept as a 16-byte key beside one `i64`, with no heap
//! allocation of its own (a `String` id cost about 80 bytes, and SipHash
//! over its text on every look-up).
//!
//! - An id of up to 30 hex digits (banshare writes 24) is packed exactly:
//!   its length, then its digits two to a byte. Two such ids share a key
//!   only if they are equal.
//! - A longer id (the format allows 64) becomes a 120-bit digest under two
//!   SipHash keys drawn at start, marked so it never equals a packed key. A
//!   log writer does not know the keys, so cannot make two of its ids
//!   collide on purpose; by chance, two ids collide with odds of about one
//!   in 2^120 per pair.
//!
//! The map hashes keys with std's randomly keyed SipHash, like every other
//! map of the watcher: ids come from the log, and a forged log must not be
//! able to choose which bucket they land in.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use crate::record::RecordId;

/// Hex digits an exact key holds: 15 bytes of two digits each.
const EXACT_DIGITS: usize = 30;
/// The first byte of a digest key; exact keys start with their length.
const DIGEST_MARK: u8 = 0xff;

/// A record id as a fixed-size key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct IdKey([u8; 16]);

/// Seen ids, each with the time (ms since the epoch, `i64::MAX`: never)
/// after which a copy of its record could no longer do anything.
#[derive(Debug, Default)]
pub(super) struct SeenIds {
    map: HashMap<IdKey, i64>,
    digest: [RandomState; 2],
}

impl SeenIds {
    pub fn contains(&self, id: &RecordId) -> bool {
        self.map.contains_key(&self.key(id))
    }

    /// Remembers `id` until `until_ms`, or later if it was already kept
    /// longer.
    pub fn insert(&mut self, id: &RecordId, until_ms: i64) {
        let until = self.map.entry(self.key(id)).or_insert(until_ms);
        *until = (*until).max(until_ms);
    }

    /// Forgets the ids that can no longer matter at `now_ms`.
    pub fn prune(&mut self, now_ms: i64) {
        self.map.retain(|_, until| *until > now_ms);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn key(&self, id: &RecordId) -> IdKey {
        let text = id.as_str().as_bytes();
        exact_key(text).unwrap_or_else(|| self.digest_key(text))
    }

    fn digest_key(&self, text: &[u8]) -> IdKey {
        let mut key = [0u8; 16];
        key[0] = DIGEST_MARK;
        key[1..9].copy_from_slice(&self.digest[0].hash_one(text).to_le_bytes());
        key[9..16].copy_from_slice(&self.digest[1].hash_one(text).to_le_bytes()[..7]);
        IdKey(key)
    }
}

/// The exact key of a short lowercase-hex id, or `None`.
fn exact_key(text: &[u8]) -> Option<IdKey> {
    if text.len() > EXACT_DIGITS {
        return None;
    }
    let mut key = [0u8; 16];
    key[0] = text.len() as u8; // at most 30: never DIGEST_MARK
    for (i, &c) in text.iter().enumerate() {
        let nibble = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        key[1 + i / 2] |= nibble << (4 * (1 - i % 2));
    }
    Some(IdKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> RecordId {
        text.parse().unwrap()
    }

    #[test]
    fn ids_that_differ_in_any_digit_or_in_length_have_different_keys() {
        let base = "0123456789abcdef01234567";
        let mut keys = vec![exact_key(base.as_bytes()).unwrap()];
        for i in 0..base.len() {
            let mut changed = base.as_bytes().to_vec();
            changed[i] = if changed[i] == b'0' { b'1' } else { b'0' };
            keys.push(exact_key(&changed).unwrap());
        }
        // Leading zeros count: "00..01" of 16 and of 17 digits are two ids.
        keys.push(exact_key(b"0000000000000001").unwrap());
        keys.push(exact_key(b"00000000000000001").unwrap());
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }

    #[test]
    fn short_and_long_ids_are_remembered_and_pruned() {
        let mut seen = SeenIds::default();
        let short = id("0123456789abcdef01234567");
        let long = id(&"ab".repeat(32));
        let long2 = id(&format!("{}c", "ab".repeat(31)));
        seen.insert(&short, 1_000);
        seen.insert(&long, 2_000);
        assert!(seen.contains(&short));
        assert!(seen.contains(&long));
        assert!(!seen.contains(&long2));
        assert!(!seen.contains(&id("0123456789abcdef01234568")));
        seen.prune(1_000);
        assert!(!seen.contains(&short));
        assert!(seen.contains(&long));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn a_later_expiry_is_kept() {
        let mut seen = SeenIds::default();
        let a = id("00000000000000aa");
        seen.insert(&a, 5_000);
        seen.insert(&a, 1_000);
        seen.prune(2_000);
        assert!(seen.contains(&a));
    }
}
