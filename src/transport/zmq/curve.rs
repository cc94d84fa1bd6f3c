//! CURVE encryption and authentication for banshare's ZeroMQ sockets.
//!
//! The publisher is a CURVE server with a long-term key pair; every sender
//! and subscriber is a CURVE client that knows the server's public key (so
//! a man in the middle cannot pose as the publisher) and has a key pair of
//! its own. The server admits only clients whose public key is in its
//! allow-list: libzmq asks a ZAP handler (RFC 27) about every connection,
//! and [`ZapAllowList`] is that handler. Without it, CURVE would encrypt
//! but admit any client.
//!
//! Keys are kept as Z85 text (40 characters), as `zmq_curve_keypair` and
//! every ZeroMQ tool print them: a secret key file holds the secret key,
//! mode 0600; an allow-list file holds one public key per line, optionally
//! followed by a space and a name (blank lines and lines starting with `#`
//! are skipped; Z85 has `#` among its characters but no space).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// A CURVE key, binary.
pub type Key = [u8; 32];

/// Where libzmq asks its ZAP handler, in each context.
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}, line {line}: not a CURVE key (40 characters of Z85)")]
    NotAKey { path: PathBuf, line: usize },
    #[error(transparent)]
    Mode(#[from] crate::file_mode::ModeError),
}

/// A key from its Z85 text, or `None` if it is not one.
pub fn decode_key(text: &str) -> Option<Key> {
    if text.len() != 40 {
        return None;
    }
    zmq::z85_decode(text).ok()?.try_into().ok()
}

/// A key's Z85 text.
pub fn encode_key(key: &Key) -> String {
    zmq::z85_encode(key).expect("32 bytes always encode")
}

/// A fresh key pair: (public, secret).
pub fn key_pair() -> zmq::Result<(Key, Key)> {
    let pair = zmq::CurveKeyPair::new()?;
    Ok((pair.public_key, pair.secret_key))
}

// libzmq's own derivation (4.2.1 and later), which the zmq crate does not
// wrap; the library is linked through it.
unsafe extern "C" {
    fn zmq_curve_public(public: *mut std::ffi::c_char, secret: *const std::ffi::c_char) -> i32;
}

/// The public key of `secret`, as libzmq derives it.
pub fn public_of(secret: &Key) -> Key {
    let secret_z85 = std::ffi::CString::new(encode_key(secret)).expect("Z85 has no NUL");
    let mut public_z85 = [0u8; 41];
    // SAFETY: libzmq reads a NUL-terminated 40-character Z85 secret key and
    // writes a 40-character Z85 public key and its NUL into 41 bytes.
    let rc = unsafe { zmq_curve_public(public_z85.as_mut_ptr().cast(), secret_z85.as_ptr()) };
    assert_eq!(rc, 0, "libzmq without CURVE");
    let text = std::str::from_utf8(&public_z85[..40]).expect("Z85 is ASCII");
    decode_key(text).expect("libzmq wrote a key")
}

/// Writes a new key pair: the secret key to `out` (mode 0600, never over
/// an existing file) and the public key to `out.pub`; returns the public
/// key.
pub fn write_key_pair(out: &Path) -> Result<Key, KeyError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    let (public, secret) = key_pair()
        .map_err(|e| io::Error::other(e.to_string()))
        .map_err(io_err(out))?;
    crate::durable::write_atomic(out, format!("{}\n", encode_key(&secret)).as_bytes(), 0o600)
        .map_err(io_err(out))?;
    let mut public_path = out.as_os_str().to_owned();
    public_path.push(".pub");
    let public_path = PathBuf::from(public_path);
    crate::durable::write_atomic(
        &public_path,
        format!("{}\n", encode_key(&public)).as_bytes(),
        0o644,
    )
    .map_err(io_err(&public_path))?;
    Ok(public)
}

/// Reads a secret key file, which only its owner may read.
pub fn read_secret_key(path: &Path) -> Result<Key, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    crate::file_mode::check(path, crate::file_mode::Holds::Secret)?;
    let text = fs::read_to_string(path).map_err(io_err)?;
    decode_key(text.trim()).ok_or(KeyError::NotAKey {
        path: path.to_owned(),
        line: 1,
    })
}

/// Reads an allow-list: one Z85 public key per line, then optionally a
/// name. Only its owner may change it.
pub fn read_allow_list(path: &Path) -> Result<HashSet<Key>, KeyError> {
    crate::file_mode::check(path, crate::file_mode::Holds::Trust)?;
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut keys = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        // Z85 has `#` among its characters, but no space: a comment is a
        // whole line, and a word after the key names it.
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let word = line.split_whitespace().next().unwrap_or_default();
        let key = decode_key(word).ok_or(KeyError::NotAKey {
            path: path.to_owned(),
            line: i + 1,
        })?;
        keys.insert(key);
    }
    Ok(keys)
}

/// Makes `socket` a CURVE server with `secret`. Its clients are checked
/// by the context's [`ZapAllowList`].
pub fn serve(socket: &zmq::Socket, secret: &Key) -> zmq::Result<()> {
    socket.set_curve_server(true)?;
    socket.set_curve_secretkey(secret)
}

/// Makes `socket` a CURVE client of the server whose public key is
/// `server`, with its own key pair.
pub fn connect_as(
    socket: &zmq::Socket,
    server: &Key,
    public: &Key,
    secret: &Key,
) -> zmq::Result<()> {
    socket.set_curve_serverkey(server)?;
    socket.set_curve_publickey(public)?;
    socket.set_curve_secretkey(secret)
}

/// The ZAP handler of one context: admits a CURVE client whose public key
/// is allowed, refuses every other connection (any other mechanism
/// included), and counts the refusals; its owner logs them, at a bounded
/// rate (a client with random keys makes thousands a second). Dropping it
/// stops the handler within a second; the context's server sockets then
/// admit no one.
pub struct ZapAllowList {
    refused: Arc<AtomicU64>,
    last_refused: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

/// How often the handler looks whether it is to stop: its only wake-up
/// while no client connects.
const ZAP_STOP_CHECK_MS: i32 = 1000;

impl ZapAllowList {
    /// Starts answering libzmq's questions in `context`, before any server
    /// socket of it binds.
    pub fn start(context: &zmq::Context, allowed: HashSet<Key>) -> zmq::Result<ZapAllowList> {
        let socket = context.socket(zmq::REP)?;
        socket.set_linger(0)?;
        socket.set_rcvtimeo(ZAP_STOP_CHECK_MS)?;
        socket.bind(ZAP_ENDPOINT)?;
        let refused = Arc::default();
        let last_refused = Arc::default();
        let stop = Arc::default();
        let handler = Handler {
            allowed,
            refused: Arc::clone(&refused),
            last_refused: Arc::clone(&last_refused),
            stop: Arc::clone(&stop),
        };
        let thread = thread::spawn(move || handler.run(&socket));
        Ok(ZapAllowList {
            refused,
            last_refused,
            stop,
            thread: Some(thread),
        })
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The address of the last connection refused, if any.
    pub fn last_refused_from(&self) -> Option<String> {
        self.last_refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ZapAllowList {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Handler {
    allowed: HashSet<Key>,
    refused: Arc<AtomicU64>,
    last_refused: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
}

impl Handler {
    /// Answers ZAP requests until told to stop.
    fn run(&self, socket: &zmq::Socket) {
        while !self.stop.load(Ordering::Relaxed) {
            match socket.recv_multipart(0) {
                Ok(frames) => {
                    if socket.send_multipart(self.answer(&frames), 0).is_err() {
                        return;
                    }
                }
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// The reply to one request: version, request id, domain, address,
    /// identity, mechanism, then the mechanism's credentials (CURVE: the
    /// client's public key).
    fn answer(&self, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let admitted = frames.len() == 7
            && frames[5] == b"CURVE"
            && <Key>::try_from(frames[6].as_slice()).is_ok_and(|key| self.allowed.contains(&key));
        if !admitted {
            let address = frames
                .get(3)
                .map(|a| String::from_utf8_lossy(a).into_owned());
            log::debug!(
                "refused a ZeroMQ connection from {}: its key is not allowed",
                address.as_deref().unwrap_or("an unknown address")
            );
            *self
                .last_refused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = address;
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        let request_id = frames.get(1).cloned().unwrap_or_default();
        let (code, text): (&[u8], &[u8]) = match admitted {
            true => (b"200", b"OK"),
            false => (b"400", b"key not allowed"),
        };
        [&b"1.0"[..], &request_id, code, text, b"", b""]
            .iter()
            .map(|f| f.to_vec())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CURVE REP server on a random port with `allowed` clients; returns
    /// its endpoint and public key.
    fn server(
        context: &zmq::Context,
        allowed: HashSet<Key>,
    ) -> (zmq::Socket, ZapAllowList, String, Key) {
        let zap = ZapAllowList::start(context, allowed).unwrap();
        let (public, secret) = key_pair().unwrap();
        let rep = context.socket(zmq::REP).unwrap();
        serve(&rep, &secret).unwrap();
        rep.set_linger(0).unwrap();
        rep.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = rep.get_last_endpoint().unwrap().unwrap();
        (rep, zap, endpoint, public)
    }

    fn ask(
        context: &zmq::Context,
        endpoint: &str,
        server: &Key,
        me: (Key, Key),
    ) -> Option<Vec<u8>> {
        let req = context.socket(zmq::REQ).unwrap();
        req.set_linger(0).unwrap();
        req.set_rcvtimeo(1500).unwrap();
        connect_as(&req, server, &me.0, &me.1).unwrap();
        req.connect(endpoint).unwrap();
        req.send("ping", 0).unwrap();
        req.recv_bytes(0).ok()
    }

    #[test]
    fn only_allowed_client_keys_get_through() {
        let context = zmq::Context::new();
        let allowed_client = key_pair().unwrap();
        let stranger = key_pair().unwrap();
        let (rep, zap, endpoint, server_key) =
            server(&context, [allowed_client.0].into_iter().collect());
        let echo = thread::spawn(move || {
            rep.set_rcvtimeo(3000).unwrap();
            while let Ok(message) = rep.recv_bytes(0) {
                rep.send(message, 0).unwrap();
            }
        });
        assert_eq!(
            ask(&context, &endpoint, &server_key, allowed_client),
            Some(b"ping".to_vec())
        );
        assert_eq!(ask(&context, &endpoint, &server_key, stranger), None);
        // A client that trusts another server key gets nothing either.
        let (impostor, _) = key_pair().unwrap();
        assert_eq!(ask(&context, &endpoint, &impostor, allowed_client), None);
        assert!(zap.refused() >= 1);
        drop(zap);
        // The echo thread ends at its receive timeout.
        drop(echo);
    }

    #[test]
    fn key_files_are_read_strictly() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (public, secret) = key_pair().unwrap();
        let list = dir.path().join("clients");
        fs::write(
            &list,
            format!("# the nodes\n{} node1\n\n", encode_key(&public)),
        )
        .unwrap();
        assert_eq!(
            read_allow_list(&list).unwrap(),
            [public].into_iter().collect()
        );
        fs::write(&list, "not a key\n").unwrap();
        assert!(matches!(
            read_allow_list(&list),
            Err(KeyError::NotAKey { line: 1, .. })
        ));
        let key = dir.path().join("secret");
        fs::write(&key, encode_key(&secret) + "\n").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_secret_key(&key), Err(KeyError::Mode(_))));
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_key(&key).unwrap(), secret);
        assert_eq!(public_of(&secret), public);
    }
}
