//! Key files.
//!
//! - A node's signing key (`banshare keygen --out node.key`): one line,
//!   `banshare-ed25519-secret <base64 seed>`, mode 0600.
//! - The trusted keys file (`[trust] keys`): one line per key,
//!   `<node> ed25519 <base64 public key>`; `#` starts a comment. A node may
//!   have several lines (while its key is being rotated).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::record::NodeId;

const SECRET_TAG: &str = "banshare-ed25519-secret";
const PUBLIC_TAG: &str = "ed25519";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}:{line}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{0} is not a banshare signing key (expected `{SECRET_TAG} <base64>`)")]
    NotAKey(PathBuf),
    #[error("cannot make a key: {0}")]
    Random(String),
    #[error(transparent)]
    Mode(#[from] crate::file_mode::ModeError),
}

/// A new random signing key.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The signing key file's content.
pub fn secret_file(key: &SigningKey) -> String {
    format!("{SECRET_TAG} {}\n", STANDARD.encode(key.to_bytes()))
}

/// `ed25519 <base64 public key>`: what follows the node id in a trusted
/// keys line.
pub fn public_line(key: &SigningKey) -> String {
    format!(
        "{PUBLIC_TAG} {}",
        STANDARD.encode(key.verifying_key().to_bytes())
    )
}

/// Reads a signing key file, which only its owner may read.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    crate::file_mode::check(path, crate::file_mode::Holds::Secret)?;
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let seed = text
        .trim()
        .strip_prefix(SECRET_TAG)
        .map(str::trim)
        .and_then(|b64| STANDARD.decode(b64).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| KeyError::NotAKey(path.to_owned()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The public keys trusted for each node.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    by_node: HashMap<NodeId, Vec<VerifyingKey>>,
}

impl TrustedKeys {
    /// Reads the trusted keys file, which only its owner may change.
    pub fn load(path: &Path) -> Result<TrustedKeys, KeyError> {
        crate::file_mode::check(path, crate::file_mode::Holds::Trust)?;
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        TrustedKeys::parse(&text, &path.display().to_string())
    }

    /// Parses the file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<TrustedKeys, KeyError> {
        let mut keys = TrustedKeys::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |message: &str| KeyError::Syntax {
                origin: origin.into(),
                line: n + 1,
                message: message.into(),
            };
            let mut words = line.split_whitespace();
            let (Some(node), Some(kind), Some(key), None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return Err(syntax("expected `<node> ed25519 <base64 public key>`"));
            };
            let node: NodeId = node.parse().map_err(|_| syntax("bad node id"))?;
            if kind != PUBLIC_TAG {
                return Err(syntax("only ed25519 keys are supported"));
            }
            let bytes = STANDARD
                .decode(key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            let key = bytes
                .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                .ok_or_else(|| syntax("bad ed25519 public key"))?;
            keys.by_node.entry(node).or_default().push(key);
        }
        Ok(keys)
    }

    /// The keys trusted for `node` (none: unknown node).
    pub fn of(&self, node: &NodeId) -> &[VerifyingKey] {
        self.by_node.get(node).map_or(&[], Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }

    /// How many nodes have a key.
    pub fn node_count(&self) -> usize {
        self.by_node.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate().unwrap();
        let path = dir.path().join("node.key");
        fs::write(&path, secret_file(&key)).unwrap();
        assert!(matches!(load_signing_key(&path), Err(KeyError::Mode(_))));
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_signing_key(&path).unwrap().to_bytes(), key.to_bytes());
        fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(load_signing_key(&path), Err(KeyError::NotAKey(_))));
    }

    #[test]
    fn trusted_keys_file_is_strict() {
        let key = generate().unwrap();
        let good = format!(
            "# cluster keys\nweb1 {}\nweb1 {}\n",
            public_line(&key),
            public_line(&generate().unwrap())
        );
        let keys = TrustedKeys::parse(&good, "t").unwrap();
        assert_eq!(keys.of(&"web1".parse().unwrap()).len(), 2);
        assert!(keys.of(&"db1".parse().unwrap()).is_empty());
        for bad in [
            "web1",
            "web1 rsa AAAA",
            "web1 ed25519 !!!",
            "we b1 ed25519 AAAA",
            "web1 ed25519 AAAA extra",
        ] {
            assert!(TrustedKeys::parse(bad, "t").is_err(), "{bad}");
        }
    }
}
