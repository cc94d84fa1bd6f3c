//! Where the follower stands: which file, known by its identity and a
//! fingerprint of its first bytes, and how far into it.

use std::io;

use serde::{Deserialize, Serialize};

use super::{LogFile, Meta};

/// The most leading bytes a fingerprint covers.
pub const FINGERPRINT_MAX: u64 = 1024;

/// A hash of a file's first `len` bytes (`len` at most [`FINGERPRINT_MAX`]).
///
/// A short file grows, so a fingerprint covers the bytes read so far and
/// grows with the file; comparing it with another file hashes only `len`
/// bytes of that file. The hash is 64-bit FNV-1a, written out here because
/// it is persisted: std's hashers may change between Rust versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u64,
    /// Persisted as 16 hex digits: half of all hashes do not fit the signed
    /// 64-bit integers of TOML and of many JSON readers.
    #[serde(with = "hex_u64")]
    pub hash: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

impl Fingerprint {
    /// The fingerprint of an empty prefix: it matches every file.
    pub const EMPTY: Fingerprint = Fingerprint {
        len: 0,
        hash: FNV_OFFSET,
    };

    /// The fingerprint of the first [`FINGERPRINT_MAX`] bytes of `prefix`.
    pub fn of(prefix: &[u8]) -> Fingerprint {
        let mut fp = Fingerprint::EMPTY;
        fp.extend(0, prefix);
        fp
    }

    /// Extends the fingerprint with the bytes of `chunk` (read at file
    /// offset `at`) that lie just past the covered prefix, if any.
    pub(super) fn extend(&mut self, at: u64, chunk: &[u8]) {
        if at > self.len || self.len >= FINGERPRINT_MAX {
            return;
        }
        // Both are at most FINGERPRINT_MAX here, so the casts are exact.
        let skip = (self.len - at) as usize;
        let room = (FINGERPRINT_MAX - self.len) as usize;
        let Some(fresh) = chunk.get(skip..) else {
            return;
        };
        let fresh = &fresh[..fresh.len().min(room)];
        self.hash = fnv1a(self.hash, fresh);
        self.len += fresh.len() as u64;
    }

    /// Whether `file` starts with the bytes this fingerprint covers. A file
    /// shorter than the prefix does not match.
    pub(super) fn matches(&self, file: &mut impl LogFile) -> io::Result<bool> {
        // A persisted cursor may carry any length: never allocate from it.
        if self.len > FINGERPRINT_MAX {
            return Ok(false);
        }
        let mut buf = [0u8; FINGERPRINT_MAX as usize];
        let want = &mut buf[..self.len as usize];
        let mut got = 0;
        while got < want.len() {
            // Network filesystems may return short reads before the end.
            let n = file.read_at(got as u64, &mut want[got..])?;
            if n == 0 {
                return Ok(false);
            }
            got += n;
        }
        Ok(Fingerprint::of(want) == *self)
    }
}

/// The position after the last line handed out, in a file known by its
/// identity and fingerprint. This is what the watcher persists.
///
/// `dev` and `ino` are 0 where the filesystem has none (SFTP). They are
/// never trusted alone: sshfs makes up inode numbers per path, and a remount
/// renumbers devices, so the fingerprint decides and the identity only
/// breaks ties (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: Fingerprint,
    /// Byte offset right after the newline of the last line handed out.
    pub offset: u64,
}

impl Cursor {
    /// Whether `meta` is certainly the same file: both identities known and
    /// equal.
    pub(super) fn same_file(&self, meta: &Meta) -> bool {
        known(self.ino) && (self.dev, self.ino) == (meta.dev, meta.ino)
    }
}

/// Whether two identities are known and differ: then they are certainly two
/// files. Equal identities prove nothing on sshfs, so the caller goes on to
/// the fingerprint.
pub(super) fn ids_differ(a: (u64, u64), b: &Meta) -> bool {
    known(a.1) && known(b.ino) && a != (b.dev, b.ino)
}

fn known(ino: u64) -> bool {
    ino != 0
}

mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{value:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        u64::from_str_radix(&text, 16)
            .map_err(|e| D::Error::custom(format!("bad hash {text:?}: {e}")))
    }
}
