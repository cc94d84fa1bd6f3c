//! Who may read or change the files banshare takes secrets and trust
//! from: one check for all of them, made when they are loaded.
//!
//! A file holding a secret (a signing key, a CURVE secret key, the legacy
//! token) is refused when anyone but its owner may read it: a secret that
//! others can read is no longer one. A file saying whom to trust (the
//! trusted keys, a CURVE allow-list) is refused when anyone but its owner
//! may write it: whoever can add a line there can ban, or connect. The
//! mode is that of the file a symlink points at, as it is read.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a file holds, which says who must not have access to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Only its owner may read it.
    Secret,
    /// Only its owner may write it.
    Trust,
}

/// A file that others can read or change, or whose mode cannot be seen.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is readable by others than its owner (mode {mode:o}): chmod 600 it")]
    Readable { path: PathBuf, mode: u32 },
    #[error("{path} is writable by others than its owner (mode {mode:o}): chmod go-w it")]
    Writable { path: PathBuf, mode: u32 },
}

/// Refuses `path` if others than its owner can read it (a secret) or
/// write it (a trust list).
pub fn check(path: &Path, holds: Holds) -> Result<(), ModeError> {
    let metadata = std::fs::metadata(path).map_err(|source| ModeError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o7777;
    let path = path.to_owned();
    match holds {
        Holds::Secret if mode & 0o077 != 0 => Err(ModeError::Readable { path, mode }),
        Holds::Trust if mode & 0o022 != 0 => Err(ModeError::Writable { path, mode }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_for_the_owner_and_trust_lists_changed_by_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x").unwrap();
        let with = |mode: u32, holds| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            check(&path, holds)
        };
        assert!(with(0o600, Holds::Secret).is_ok());
        assert!(matches!(
            with(0o640, Holds::Secret),
            Err(ModeError::Readable { mode: 0o640, .. })
        ));
        assert!(matches!(
            with(0o604, Holds::Secret),
            Err(ModeError::Readable { .. })
        ));
        assert!(with(0o644, Holds::Trust).is_ok());
        assert!(matches!(
            with(0o664, Holds::Trust),
            Err(ModeError::Writable { .. })
        ));
        assert!(matches!(
            with(0o646, Holds::Trust),
            Err(ModeError::Writable { .. })
        ));
        let missing = check(&dir.path().join("missing"), Holds::Trust);
        assert!(matches!(missing, Err(ModeError::Io { .. })));
    }
}
