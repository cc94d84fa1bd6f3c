//! The text inside a checked value (a jail, node, tag, id or signature).
//!
//! Jail names, node names, tags and ids are short, and a watcher catching
//! up parses a million of each: kept inline up to 30 bytes, they cost no
//! allocation. Longer text (a signature, an unusual name) goes on the heap.
//! Either way it behaves as the `str` it holds: equality, order, hashing
//! and `Debug` look only at the text.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Bytes held inline; with the length and the tag, the type is 32 bytes.
const INLINE: usize = 30;

/// Only [`Text::new`] makes one: the inline bytes are then a whole `str`.
#[derive(Clone)]
pub(super) struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Text {
    pub fn new(text: &str) -> Text {
        if text.len() > INLINE {
            return Text(Repr::Heap(text.into()));
        }
        let mut bytes = [0u8; INLINE];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Text(Repr::Inline {
            len: text.len() as u8, // at most INLINE
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let held = &bytes[..usize::from(*len)];
                // SAFETY: `new` is the only constructor (the field is
                // private to this module), and it copies a whole `str` to
                // `bytes[..len]`, so these bytes are valid UTF-8. (Checking
                // again on every call was 8% of a watcher's catch-up: names
                // are looked at several times per record.)
                unsafe { std::str::from_utf8_unchecked(held) }
            }
            Repr::Heap(text) => text,
        }
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash(value: &impl Hash) -> u64 {
        let mut h = DefaultHasher::new();
        value.hash(&mut h);
        h.finish()
    }

    #[test]
    fn short_and_long_text_behave_as_str() {
        for s in [
            "",
            "sshd",
            &"x".repeat(30),
            &"y".repeat(31),
            &"z".repeat(512),
        ] {
            let text = Text::new(s);
            assert_eq!(text.as_str(), s);
            assert_eq!(hash(&text), hash(&s));
            assert_eq!(format!("{text:?}"), format!("{s:?}"));
            assert_eq!(matches!(text.0, Repr::Inline { .. }), s.len() <= INLINE);
        }
        assert!(Text::new("a") < Text::new(&"b".repeat(40)));
        assert_eq!(Text::new(&"b".repeat(40)), Text::new(&"b".repeat(40)));
        assert_eq!(std::mem::size_of::<Text>(), 32);
    }
}
