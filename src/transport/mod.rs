//! How a node reaches the shared log. Every way (a local or mounted path,
//! SFTP, a ZeroMQ publisher) sits behind [`Transport`], so the appender, the
//! spool and the monitor do not care which one is configured.
//! [`endpoint`] says which addresses a transport needs to reach;
//! [`Publisher`] keeps one transport for many batches, each call bounded.

pub mod endpoint;
pub mod feed;
pub mod file;
mod host_port;
pub mod lock;
pub mod nats;
mod publisher;
#[cfg(feature = "sftp")]
pub mod sftp;
#[cfg(test)]
pub(crate) mod testing;
pub mod zmq;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use feed::{Entry, Feed, FeedError, Notice, Position};
pub use file::{FileFeed, FileTransport};
pub use publisher::{Opener, Publisher};

use crate::record::RecordId;
use crate::transport::lock::LockError;

/// Where the shared log is, as given by `--log` or `log =`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLocation {
    /// A local path, or a path on a mounted share (sshfs, NFS).
    File(PathBuf),
    /// `sftp://user@host[:port]/path`: over SSH, no mount.
    #[cfg(feature = "sftp")]
    Sftp(sftp::SftpUrl),
    /// `zmq+tcp://host[:port]`: a `banshare publisher`, by its submission
    /// socket.
    #[cfg(feature = "zmq")]
    Zmq(zmq::ZmqUrl),
    /// `nats://host[:port][,host...]/STREAM`: a NATS JetStream stream.
    #[cfg(feature = "nats")]
    Nats(nats::NatsUrl),
}

impl LogLocation {
    /// Parses a `--log` value.
    pub fn parse(text: &str) -> Result<LogLocation, String> {
        if text.is_empty() {
            return Err("the log path is empty".into());
        }
        #[cfg(feature = "sftp")]
        if text.starts_with("sftp://") {
            return sftp::SftpUrl::parse(text).map(LogLocation::Sftp);
        }
        #[cfg(feature = "zmq")]
        if text.starts_with(zmq::SCHEME) {
            return zmq::ZmqUrl::parse(text).map(LogLocation::Zmq);
        }
        #[cfg(feature = "nats")]
        if text.starts_with(nats::SCHEME) || text.starts_with(nats::TLS_SCHEME) {
            return nats::NatsUrl::parse(text).map(LogLocation::Nats);
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "unsupported log URL scheme {scheme:?}: give a file path, sftp://user@host/path, \
                 zmq+tcp://host[:port] or nats://host[:port]/STREAM"
            ));
        }
        Ok(LogLocation::File(PathBuf::from(text)))
    }
}

impl fmt::Display for LogLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogLocation::File(path) => write!(f, "{}", path.display()),
            #[cfg(feature = "sftp")]
            LogLocation::Sftp(url) => write!(f, "{url}"),
            #[cfg(feature = "zmq")]
            LogLocation::Zmq(url) => write!(f, "{url}"),
            #[cfg(feature = "nats")]
            LogLocation::Nats(url) => write!(f, "{url}"),
        }
    }
}

/// A connection to the shared log.
pub trait Transport: Send {
    /// Appends `batch`, whole lines each ending in `\n`, as one unit: under
    /// the cross-host lock, so no other writer's line lands inside it.
    fn append(&mut self, batch: &[u8]) -> Result<(), TransportError>;

    /// Which of `ids` already appear in the log, or `None` if this
    /// transport cannot read the log back (a publisher onto a message bus
    /// that keeps nothing to look in): the default. Used only to recover
    /// spool entries whose delivery was interrupted, so it may read the
    /// whole log; when it cannot tell, the spool resends those entries
    /// whole, and the watchers' policy drops the copies.
    ///
    /// A transport that reads back holds this host's local append lock
    /// while it reads: an append of the same records that is still under
    /// way (a `ban` run whose delivery outlived its deadline on a frozen
    /// mount) lands before the answer, or the call times out, and never
    /// after it.
    fn find_ids(
        &mut self,
        ids: &HashSet<RecordId>,
    ) -> Result<Option<HashSet<RecordId>>, TransportError> {
        let _ = ids;
        Ok(None)
    }

    /// How many records the log refused for good so far (a publisher's
    /// `NAK`): neither appended nor kept, and logged as errors by the
    /// transport. A file log refuses nothing: the default.
    fn refused(&self) -> u64 {
        0
    }
}

/// Why the log could not be written or read back. Every one of these sends
/// records to the spool; none is fatal to the caller.
///
/// They name the log as the user gave it (`log`: a path, or an `sftp://`
/// URL), so that every transport, a message bus too, reports through the
/// same variants; `hint` is the transport's own advice (a mounted share and
/// an SFTP server call for different fixes). Only the boundary that
/// [`TransportError::wrote_nothing`] draws matters to the spool: a
/// transport reports a failure, a deadline of its own included, as
/// [`TransportError::Write`] once any byte may have been sent, and as one
/// of the others before that.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "log {log} does not exist ({hint}). banshare never creates the log, \
         so that a log that is not there is not mistaken for an empty one"
    )]
    Missing { log: String, hint: &'static str },
    /// The log's place is there but does not answer: a dead sshfs
    /// connection (ENOTCONN), a stale NFS handle, an I/O error, a server
    /// that refuses connections or a timeout.
    #[error("log {log} is unreachable ({hint}): {source}")]
    Unreachable {
        log: String,
        hint: &'static str,
        source: io::Error,
    },
    /// The log answered but would not open for us: permissions, a symlink
    /// loop, an unknown host key, a failed login.
    #[error("cannot open log {log}: {source}")]
    Open { log: String, source: io::Error },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("writing log {log} failed; part of the batch may have been written: {source}")]
    Write { log: String, source: io::Error },
    #[error("reading log {log}: {source}")]
    Read { log: String, source: io::Error },
}

impl TransportError {
    /// Sorts an error from finding or opening the log file at `path` (a
    /// local path or one on a mounted share): only ENOENT means it does not
    /// exist; a share that stopped answering is unreachable, which asks for
    /// another fix than mounting it.
    pub fn opening(path: &std::path::Path, source: io::Error) -> TransportError {
        let log = path.display().to_string();
        if source.kind() == io::ErrorKind::NotFound {
            return TransportError::Missing {
                log,
                hint: file::MISSING_HINT,
            };
        }
        let unreachable = matches!(
            source.raw_os_error(),
            Some(
                libc::ENOTCONN
                    | libc::EIO
                    | libc::ETIMEDOUT
                    | libc::ESHUTDOWN
                    | libc::ESTALE
                    | libc::ECONNABORTED
                    | libc::ECONNRESET
                    | libc::EHOSTUNREACH
                    | libc::ENETUNREACH
                    | libc::ENODEV
                    | libc::ENXIO
            )
        );
        if unreachable {
            TransportError::Unreachable {
                log,
                hint: file::UNREACHABLE_HINT,
                source,
            }
        } else {
            TransportError::Open { log, source }
        }
    }

    /// True when the error came before any byte was written, so a retry
    /// cannot produce a duplicate. Transports must therefore report every
    /// failure after the first byte is sent as [`TransportError::Write`], and
    /// nothing at all once the batch is complete.
    pub fn wrote_nothing(&self) -> bool {
        !matches!(self, TransportError::Write { .. })
    }
}

/// What a writer needs besides the log's location, for every transport:
/// the counterpart of [`FeedSettings`] on the write side.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// A local file that serialises this host's writers (in the spool
    /// folder); the file transports take it before the cross-host lock.
    pub local_lock: std::path::PathBuf,
    /// Who holds a cross-host lock, written into it.
    pub owner: lock::Owner,
    /// How long a lock (or a publisher's reply) is waited for.
    pub timings: lock::LockTimings,
    pub sftp: SftpSettings,
    pub zmq: zmq::ZmqSettings,
    pub nats: nats::NatsSettings,
}

/// Opens the transport for `location`.
pub fn open(location: &LogLocation, settings: &WriterSettings) -> Box<dyn Transport> {
    let WriterSettings {
        local_lock,
        owner,
        timings,
        ..
    } = settings;
    match location {
        LogLocation::File(path) => Box::new(FileTransport::new(
            path,
            local_lock,
            owner.clone(),
            *timings,
        )),
        #[cfg(feature = "sftp")]
        LogLocation::Sftp(url) => Box::new(sftp::SftpTransport::new(
            url,
            &settings.sftp,
            local_lock,
            owner.clone(),
            *timings,
        )),
        // Bounded by the lock timeout, as an SFTP call is by its own: the
        // publisher's reply is what the lock is to a file log.
        #[cfg(feature = "zmq")]
        LogLocation::Zmq(url) => {
            Box::new(zmq::ZmqTransport::new(url, &settings.zmq, timings.timeout))
        }
        // The acknowledgement is what the lock is to a file log.
        #[cfg(feature = "nats")]
        LogLocation::Nats(url) => Box::new(nats::NatsTransport::new(
            url,
            &settings.nats,
            timings.timeout,
        )),
    }
}

/// A [`Publisher`] for `location`: it opens the transport as [`open`] does,
/// on its first call, so nothing is connected yet when it is returned.
pub fn publisher(location: &LogLocation, settings: &WriterSettings) -> Publisher {
    let (location, settings) = (location.clone(), settings.clone());
    Publisher::new(move || open(&location, &settings))
}

/// How a feed notices new records, from `[watch]`.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// How to notice that a followed file changed.
    pub follow: crate::follow::FollowKind,
    /// How often to look where nothing tells of changes.
    pub poll_interval: Duration,
    /// How often to look anyway where something does (inotify).
    pub safety_poll: Duration,
    pub sftp: SftpSettings,
    pub zmq: zmq::ZmqSettings,
    pub nats: nats::NatsSettings,
}

/// Opens the read side of the transport for `location`. Nothing is read or
/// connected until the feed's first call.
pub fn open_feed(location: &LogLocation, settings: &FeedSettings) -> Box<dyn Feed> {
    match location {
        LogLocation::File(path) => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mode = crate::follow::mode::resolve(
                settings.follow,
                dir,
                settings.poll_interval,
                settings.safety_poll,
            );
            let log = path.display().to_string();
            let feed = FileFeed::new(crate::follow::LocalFs, path.clone(), log, mode)
                .full_look_every(settings.safety_poll);
            match settings.follow {
                crate::follow::FollowKind::Auto => {
                    Box::new(feed.auto_follow(settings.poll_interval, settings.safety_poll))
                }
                _ => Box::new(feed),
            }
        }
        // Over SFTP there is nothing to watch: it polls.
        #[cfg(feature = "sftp")]
        LogLocation::Sftp(url) => {
            let fs = sftp::SftpFs::new(url, &settings.sftp);
            let connections = fs.connections();
            let mode = crate::follow::Mode::Poll(settings.poll_interval);
            let feed = FileFeed::new(fs, url.path.clone(), url.to_string(), mode)
                .full_look_every(settings.safety_poll)
                .size_from(crate::follow::SizeFrom::Path);
            Box::new(
                feed.alias(url.path.display().to_string())
                    .hints(sftp::MISSING_HINT, sftp::UNREACHABLE_HINT)
                    .counting_connections(connections),
            )
        }
        // The publisher pushes; the safety poll asks it what was missed.
        #[cfg(feature = "zmq")]
        LogLocation::Zmq(url) => {
            Box::new(zmq::ZmqFeed::new(url, &settings.zmq, settings.safety_poll))
        }
        // The consumer pushes; the safety poll looks anyway.
        #[cfg(feature = "nats")]
        LogLocation::Nats(url) => Box::new(nats::NatsFeed::new(
            url,
            &settings.nats,
            settings.safety_poll,
        )),
    }
}

/// How to reach and trust the server (`[sftp]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpSettings {
    /// The private key; `None`: ask the SSH agent.
    pub identity: Option<PathBuf>,
    /// OpenSSH known_hosts file the server's key must be in.
    pub known_hosts: PathBuf,
    /// Pin an unknown server key on first use, writing it to known_hosts.
    /// Off by default: an unknown key is refused.
    pub accept_new_host_key: bool,
    /// Bound on connecting and on every SFTP call.
    pub timeout: Duration,
}

impl Default for SftpSettings {
    fn default() -> SftpSettings {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        SftpSettings {
            identity: None,
            known_hosts: home.join(".ssh/known_hosts"),
            accept_new_host_key: false,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Which of `ids` the log read from `log` holds, on complete lines.
pub(crate) fn ids_in(
    log: impl std::io::Read,
    ids: &HashSet<RecordId>,
) -> std::io::Result<HashSet<RecordId>> {
    let mut found = HashSet::new();
    for_each_complete_line(log, |line| {
        if let Some(id) = id_field(line).filter(|id| ids.contains(id)) {
            found.insert(id);
        }
    })?;
    Ok(found)
}

/// Calls `f` with every complete line (ending in `\n`) of at most
/// [`crate::record::MAX_LINE_LEN`] bytes; longer lines are skipped without being held, and
/// an unterminated last line (a torn write) does not count.
pub(crate) fn for_each_complete_line(
    file: impl std::io::Read,
    mut f: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::with_capacity(crate::record::MAX_LINE_LEN + 1);
    let mut overlong = false;
    loop {
        let chunk = std::io::BufRead::fill_buf(&mut reader)?;
        if chunk.is_empty() {
            return Ok(());
        }
        let len = chunk.len();
        for &byte in chunk {
            if byte == b'\n' {
                if !overlong {
                    f(&line);
                }
                line.clear();
                overlong = false;
            } else if line.len() < crate::record::MAX_LINE_LEN {
                line.push(byte);
            } else {
                overlong = true;
            }
        }
        std::io::BufRead::consume(&mut reader, len);
    }
}

/// The `id=` field of a line, found without parsing the whole line. Only
/// used to match ids banshare itself wrote, so a false match is harmless.
pub(crate) fn id_field(line: &[u8]) -> Option<RecordId> {
    let start = line.windows(4).position(|w| w == b" id=")? + 4;
    let rest = &line[start..];
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\n')
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::Path;

    use super::TransportError;

    #[test]
    fn only_enoent_is_a_missing_log() {
        let log = Path::new("/mnt/banshare/newbans.log");
        let of = |errno| TransportError::opening(log, io::Error::from_raw_os_error(errno));
        let missing = of(libc::ENOENT);
        assert!(
            matches!(&missing, TransportError::Missing { log: l, .. } if l == "/mnt/banshare/newbans.log"),
            "{missing:?}"
        );
        assert!(
            missing.to_string().contains("is the share mounted?"),
            "{missing}"
        );
        for errno in [libc::ENOTCONN, libc::EIO, libc::ETIMEDOUT, libc::ESHUTDOWN] {
            let e = of(errno);
            assert!(
                matches!(e, TransportError::Unreachable { .. }),
                "{errno}: {e}"
            );
            assert!(!e.to_string().contains("does not exist"), "{e}");
        }
        assert!(matches!(of(libc::ELOOP), TransportError::Open { .. }));
    }

    #[cfg(feature = "zmq")]
    #[test]
    fn zmq_log_location_is_parsed_shown_as_given_and_its_host_never_banned() {
        use super::LogLocation;
        let location = LogLocation::parse("zmq+tcp://198.18.0.1:6000").unwrap();
        assert!(matches!(&location, LogLocation::Zmq(url) if url.port == 6000));
        assert_eq!(location.to_string(), "zmq+tcp://198.18.0.1:6000");
        let hosts = super::endpoint::server_hosts(&location).unwrap();
        assert_eq!(hosts, ["198.18.0.1"]);
        let e = LogLocation::parse("zmq+tcp://host/path").unwrap_err();
        assert!(e.contains("no user, path or query"), "{e}");
    }
}
