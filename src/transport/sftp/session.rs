//! One SSH connection with an SFTP channel: strict host key checking
//! against a known_hosts file, key (or agent) authentication, and a timeout
//! on every call, so that a hung server never blocks the caller for long.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};

use ssh2::{CheckResult, HashType, KnownHostFileKind, Session, Sftp};

use super::url::SftpUrl;
pub use crate::transport::SftpSettings;

#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("SSH handshake with {addr} failed: {source}")]
    Handshake { addr: String, source: ssh2::Error },
    #[error(
        "the host key of {host} ({fingerprint}) is not in {known_hosts}: refusing to connect. \
         Check the fingerprint on the server (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) \
         and add it to known_hosts, or pin it once with --accept-new-host-key"
    )]
    UnknownHostKey {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error(
        "THE HOST KEY OF {host} HAS CHANGED (now {fingerprint}); refusing to connect: someone may \
         be intercepting the connection. If the server's key was replaced on purpose, remove its \
         old line from {known_hosts}"
    )]
    HostKeyChanged {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error("known_hosts {path}: {message}")]
    KnownHosts { path: PathBuf, message: String },
    #[error("authentication as {user} on {host} failed: {message}")]
    Auth {
        user: String,
        host: String,
        message: String,
    },
    #[error("SFTP on {host}: {source}")]
    Ssh { host: String, source: ssh2::Error },
}

impl From<SftpError> for io::Error {
    fn from(e: SftpError) -> io::Error {
        // A server that does not answer, or drops the handshake, is
        // unreachable; a refused key or login is not.
        let kind = match &e {
            SftpError::Connect { source, .. } => source.kind(),
            SftpError::Handshake { .. } => io::ErrorKind::NotConnected,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// A live SSH session and its SFTP channel.
pub struct Connection {
    pub session: Session,
    pub sftp: Sftp,
}

/// Connects, checks the host key, authenticates and opens SFTP.
pub fn connect(url: &SftpUrl, settings: &SftpSettings) -> Result<Connection, SftpError> {
    let addr = url.address();
    let connect_err = |source| SftpError::Connect {
        addr: addr.clone(),
        source,
    };
    let target = addr
        .to_socket_addrs()
        .map_err(connect_err)?
        .next()
        .ok_or_else(|| connect_err(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
    let tcp = TcpStream::connect_timeout(&target, settings.timeout).map_err(connect_err)?;
    tcp.set_read_timeout(Some(settings.timeout))
        .map_err(connect_err)?;
    tcp.set_write_timeout(Some(settings.timeout))
        .map_err(connect_err)?;
    let mut session = Session::new().map_err(|source| SftpError::Handshake {
        addr: addr.clone(),
        source,
    })?;
    session.set_tcp_stream(tcp);
    session.set_timeout(settings.timeout.as_millis().min(u128::from(u32::MAX)) as u32);
    session.handshake().map_err(|source| SftpError::Handshake {
        addr: addr.clone(),
        source,
    })?;
    check_host_key(&session, url, settings)?;
    authenticate(&session, url, settings)?;
    let sftp = session.sftp().map_err(|source| SftpError::Ssh {
        host: url.host.clone(),
        source,
    })?;
    Ok(Connection { session, sftp })
}

fn check_host_key(
    session: &Session,
    url: &SftpUrl,
    settings: &SftpSettings,
) -> Result<(), SftpError> {
    let path = &settings.known_hosts;
    let kh_err = |message: String| SftpError::KnownHosts {
        path: path.clone(),
        message,
    };
    let (key, key_type) = session
        .host_key()
        .ok_or_else(|| kh_err("the server sent no host key".into()))?;
    let mut known = session.known_hosts().map_err(|e| kh_err(e.to_string()))?;
    if path.exists() {
        known
            .read_file(path, KnownHostFileKind::OpenSSH)
            .map_err(|e| kh_err(e.to_string()))?;
    }
    let fingerprint = fingerprint(session);
    match known.check_port(&url.host, url.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(SftpError::HostKeyChanged {
            host: url.host.clone(),
            fingerprint,
            known_hosts: path.clone(),
        }),
        CheckResult::NotFound if settings.accept_new_host_key => {
            let name = if url.port == 22 {
                url.host.clone()
            } else {
                format!("[{}]:{}", url.host, url.port)
            };
            known
                .add(
                    &name,
                    key,
                    "added by banshare --accept-new-host-key",
                    key_type.into(),
                )
                .map_err(|e| kh_err(e.to_string()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| kh_err(e.to_string()))?;
            }
            known
                .write_file(path, KnownHostFileKind::OpenSSH)
                .map_err(|e| kh_err(e.to_string()))?;
            log::warn!(
                "pinned the host key of {name} ({fingerprint}) in {}",
                path.display()
            );
            Ok(())
        }
        CheckResult::NotFound => Err(SftpError::UnknownHostKey {
            host: url.host.clone(),
            fingerprint,
            known_hosts: path.clone(),
        }),
        CheckResult::Failure => Err(kh_err("checking the host key failed".into())),
    }
}

fn authenticate(
    session: &Session,
    url: &SftpUrl,
    settings: &SftpSettings,
) -> Result<(), SftpError> {
    let result = match &settings.identity {
        Some(key) => session.userauth_pubkey_file(&url.user, None, key, None),
        None => session.userauth_agent(&url.user),
    };
    let how = settings
        .identity
        .as_ref()
        .map_or("the SSH agent".to_owned(), |k| {
            format!("key {}", k.display())
        });
    match result {
        Ok(()) if session.authenticated() => Ok(()),
        Ok(()) => Err(SftpError::Auth {
            user: url.user.clone(),
            host: url.host.clone(),
            message: format!("{how} was not accepted"),
        }),
        Err(e) => Err(SftpError::Auth {
            user: url.user.clone(),
            host: url.host.clone(),
            message: format!("{how}: {e}"),
        }),
    }
}

/// The server key's fingerprint as OpenSSH prints it: `SHA256:<base64>`.
fn fingerprint(session: &Session) -> String {
    match session.host_key_hash(HashType::Sha256) {
        Some(hash) => format!("SHA256:{}", base64_unpadded(hash)),
        None => "unknown".into(),
    }
}

fn base64_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The io::Error of an SFTP call on `path`, with the path in it.
pub fn io_error(path: &Path, e: ssh2::Error) -> io::Error {
    let inner = from_ssh(e);
    io::Error::new(inner.kind(), format!("{}: {inner}", path.display()))
}

/// An SSH error as an I/O error whose kind says what happened: libssh2's
/// session-level failures other than a timeout (a dropped connection, a
/// failed send) become `NotConnected`, where ssh2 would give `Other`, so
/// that a server gone away reads as unreachable, like a dead mount.
pub fn from_ssh(e: ssh2::Error) -> io::Error {
    let session = matches!(e.code(), ssh2::ErrorCode::Session(_));
    let inner = io::Error::from(e);
    match inner.kind() {
        io::ErrorKind::Other if session => io::Error::new(io::ErrorKind::NotConnected, inner),
        _ => inner,
    }
}

/// As [`from_ssh`], for an I/O error that wraps an SSH error (`Read` on
/// an SFTP file).
pub fn reclassify(e: io::Error) -> io::Error {
    let session = e.kind() == io::ErrorKind::Other
        && e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ssh2::Error>())
            .is_some_and(|ssh| matches!(ssh.code(), ssh2::ErrorCode::Session(_)));
    match session {
        true => io::Error::new(io::ErrorKind::NotConnected, e),
        false => e,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_openssh_style() {
        assert_eq!(super::base64_unpadded(b"hello"), "aGVsbG8");
        assert_eq!(super::base64_unpadded(b"hi!"), "aGkh");
        assert_eq!(super::base64_unpadded(&[0xff]), "/w");
    }
}
