//! The log's reachability and the lock folder's write permission.
//!
//! Everything that touches the share runs in a thread of its own, bounded
//! by `append.io_timeout`: a hung sshfs mount blocks every call on it for
//! minutes, and doctor must say so rather than hang too. What it finds
//! (the log's size and time, its last bytes, a probe file's time) also
//! feeds the clock check.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use super::Finding;
use super::clock::Evidence;
use super::mounts::{self, Mount};
use crate::config::Settings;
use crate::transport::LogLocation;
use crate::transport::lock::CrossHostLock;

/// How much of the log's end is read for the clock check: the last few
/// hundred records.
const TAIL_BYTES: u64 = 64 << 10;

/// The log and lock findings, and what the clock check needs.
pub struct Probe {
    pub findings: Vec<Finding>,
    pub clock: Evidence,
    /// Why the follow mode cannot be told now: the share did not answer
    /// in time (nothing else may touch it, or doctor hangs with it), or
    /// the log is missing (its folder may be the bare mount point of a
    /// share, whose filesystem is not the one the watcher will follow).
    pub follow_unknown: Option<&'static str>,
}

/// What a look at the log found, through any file transport.
struct Facts {
    /// The log's size and modification time (the file server's clock).
    log: io::Result<(u64, SystemTime)>,
    /// Its last [`TAIL_BYTES`], from a line start.
    tail: io::Result<Vec<u8>>,
    /// The modification time of a probe file just created beside the log
    /// (only where the log is: beside a missing one, the folder may be the
    /// bare mount point of a share that is not mounted).
    write: io::Result<SystemTime>,
    /// The log's folder: its entries (at most 2 counted) and its path with
    /// symlinks resolved; local paths only.
    dir_entries: Option<io::Result<usize>>,
    canonical_dir: Option<PathBuf>,
}

pub fn probe(settings: &Settings) -> Probe {
    let Some(location) = settings.log.clone() else {
        return not_checked("no log is configured (see config)");
    };
    let deadline = settings.append.io_timeout;
    let probe_name = format!(".banshare-doctor-{}-{}", settings.node, std::process::id());
    match location {
        LogLocation::File(path) => {
            let path = absolute(&path);
            let (dir, log) = (parent(&path), path.clone());
            match within(deadline, move || look_local(&log, &probe_name)) {
                Some(facts) => judge_local(&path, &dir, facts),
                None => hung(&path.display().to_string(), &dir, deadline),
            }
        }
        #[cfg(feature = "sftp")]
        LogLocation::Sftp(url) => sftp::probe(url, settings, probe_name, deadline),
        #[cfg(feature = "zmq")]
        LogLocation::Zmq(url) => zmq_probe(&url, settings, deadline),
        #[cfg(feature = "nats")]
        LogLocation::Nats(url) => nats_probe(&url, &settings.nats, deadline),
    }
}

/// Runs `f` in a thread and waits at most `deadline` for it. A thread
/// stuck in a hung mount is left behind; the process ends without it.
fn within<T: Send + 'static>(
    deadline: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("banshare-doctor".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .ok()?;
    rx.recv_timeout(deadline).ok()
}

fn absolute(path: &Path) -> PathBuf {
    match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_owned(),
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_owned)
}

fn look_local(log: &Path, probe_name: &str) -> Facts {
    let dir = parent(log);
    let meta = std::fs::metadata(log).and_then(|m| Ok((m.len(), m.modified()?)));
    let tail = match &meta {
        Ok((len, _)) => std::fs::File::open(log).and_then(|f| read_tail(f, *len)),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    };
    let probe = dir.join(probe_name);
    let write = meta
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
        .and_then(|_| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)?;
            let modified = f.metadata().and_then(|m| m.modified());
            // Closed before it is removed: on FUSE, removing an open file
            // leaves a .fuse_hidden copy behind.
            drop(f);
            std::fs::remove_file(&probe)?;
            modified
        });
    let dir_entries = Some(std::fs::read_dir(&dir).map(|entries| entries.take(2).count()));
    Facts {
        log: meta,
        tail,
        write,
        dir_entries,
        canonical_dir: std::fs::canonicalize(&dir).ok(),
    }
}

/// The last [`TAIL_BYTES`] of a file of `len` bytes, from the first line
/// start in them.
fn read_tail(mut file: impl Read + Seek, len: u64) -> io::Result<Vec<u8>> {
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut data = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut data)?;
    if start > 0 {
        let first = data
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| i + 1);
        data.drain(..first);
    }
    Ok(data)
}

fn judge_local(log: &Path, dir: &Path, facts: Facts) -> Probe {
    let mounts = mounts::mounts();
    let canonical = facts
        .canonical_dir
        .clone()
        .unwrap_or_else(|| dir.to_owned());
    let mount = mounts::mount_of(&mounts, &canonical).cloned();
    let log_finding = match &facts.log {
        Ok((len, _)) => match &facts.tail {
            Ok(_) => Finding::ok(
                "log",
                format!("{}: {len} bytes, {}", log.display(), on(mount.as_ref())),
            ),
            Err(e) => Finding::problem(
                "log",
                format!("{} cannot be read: {e}", log.display()),
                "let the user banshare runs as read it (on the file server, for a share)",
            ),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            missing_log(log, dir, &canonical, &facts, mount.as_ref())
        }
        Err(e) => broken_log(log, e, mount.as_ref()),
    };
    let lock_finding = match (&facts.write, &facts.log) {
        // Where the log is missing, a folder that takes files may be the
        // bare mount point of a share that is not mounted: a lock there
        // would exclude no other host.
        (_, Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            Finding::ok("lock", "not checked: the log is missing (see log)")
        }
        (Ok(_), _) => Finding::ok(
            "lock",
            format!(
                "{} is writable: the lock file can be created",
                dir.display()
            ),
        ),
        (Err(e), _) => unwritable(log, dir, e),
    };
    let clock = evidence(&facts, "the file server");
    let missing = matches!(&facts.log, Err(e) if e.kind() == io::ErrorKind::NotFound);
    Probe {
        findings: vec![log_finding, lock_finding],
        clock,
        follow_unknown: missing.then_some("the log is missing (see log)"),
    }
}

/// "on fuse.sshfs root@fs:/srv at /mnt/share".
fn on(mount: Option<&Mount>) -> String {
    match mount {
        Some(m) => format!("on {} {} at {}", m.fs_type, m.source, m.point.display()),
        None => "on an unknown filesystem".into(),
    }
}

/// The log is missing: say whether its folder looks like a share that is
/// not mounted (an empty local folder, or a mount point fstab lists).
fn missing_log(
    log: &Path,
    dir: &Path,
    canonical: &Path,
    facts: &Facts,
    mount: Option<&Mount>,
) -> Finding {
    let fstab = std::fs::read_to_string("/etc/fstab").unwrap_or_default();
    let promised = mounts::fstab_points_over(&fstab, canonical)
        .into_iter()
        .find(|(point, _)| {
            mount.is_none_or(|m| m.point.components().count() < point.components().count())
        });
    let is_mount_point = mount.is_some_and(|m| m.point == canonical);
    let spooled = "every ban is spooled and no watcher applies anything";
    match (&facts.dir_entries, promised) {
        (_, Some((point, fs_type))) => Finding::problem(
            "log",
            format!(
                "{} does not exist: /etc/fstab mounts a {fs_type} share on {}, but it is not mounted \
                 ({} is {}); {spooled}",
                log.display(),
                point.display(),
                dir.display(),
                on(mount)
            ),
            format!(
                "mount it: `mount {}`; `findmnt {}` shows it once mounted",
                point.display(),
                point.display()
            ),
        ),
        (Some(Err(e)), None) => Finding::problem(
            "log",
            format!(
                "{} does not exist, nor does its folder {} ({e})",
                log.display(),
                dir.display()
            ),
            "check `log` in [common]; create the folder, or mount the share there",
        ),
        (Some(Ok(0)), None) if !is_mount_point => Finding::problem(
            "log",
            format!(
                "{} does not exist, and {} is an empty local folder {}, not a mount point: the share \
                 is not mounted; {spooled}",
                log.display(),
                dir.display(),
                on(mount)
            ),
            format!(
                "mount the share on {0} (`mount {0}` if /etc/fstab lists it; `findmnt {0}` shows it \
                 once mounted). If the log is meant to be local, create it: `touch {1}`",
                dir.display(),
                log.display()
            ),
        ),
        _ => Finding::problem(
            "log",
            format!(
                "{} does not exist in {} ({}); {spooled}",
                log.display(),
                dir.display(),
                on(mount)
            ),
            format!(
                "check `log` in [common] against the file server; banshare never creates the log, so \
                 create it there once: `touch {}`, writable by every node",
                log.display()
            ),
        ),
    }
}

/// The log is there but does not answer properly (a dead sshfs mount
/// reports ENOTCONN).
fn broken_log(log: &Path, e: &io::Error, mount: Option<&Mount>) -> Finding {
    let fix = match mount {
        Some(m) if m.fs_type.starts_with("fuse") => format!(
            "the {} mount at {1} is dead: `umount -l {1}`, then mount it again (sshfs -o reconnect \
             keeps a mount alive through outages)",
            m.fs_type,
            m.point.display()
        ),
        _ => "check the path's permissions and the filesystem".into(),
    };
    Finding::problem(
        "log",
        format!("{}: {e} ({})", log.display(), on(mount)),
        fix,
    )
}

fn unwritable(log: &Path, dir: &Path, e: &io::Error) -> Finding {
    Finding::problem(
        "lock",
        format!(
            "cannot create files in {} ({e}): the lock file {} cannot be made, so every ban waits \
             in the spool",
            dir.display(),
            CrossHostLock::path_for(log).display()
        ),
        format!(
            "make {} writable for the user banshare runs as (on the file server, for a share), and \
             mount it read-write",
            dir.display()
        ),
    )
}

/// The share did not answer within the deadline.
fn hung(log: &str, dir: &Path, deadline: Duration) -> Probe {
    let mount = mounts::mount_of(&mounts::mounts(), dir).cloned();
    let fix = match &mount {
        Some(m) if m.fs_type.starts_with("fuse") => format!(
            "check the file server and the network to it; a dead sshfs mount is released with \
             `umount -l {}` and mounted again",
            m.point.display()
        ),
        _ => "check the file server and the network to it".into(),
    };
    Probe {
        findings: vec![
            Finding::problem(
                "log",
                format!(
                    "{log}: no answer within {} ({}): the share hangs",
                    humantime::format_duration(deadline),
                    on(mount.as_ref())
                ),
                fix,
            ),
            Finding::ok("lock", "not checked: the log does not answer (see log)"),
        ],
        clock: Evidence::unavailable("the log does not answer"),
        follow_unknown: Some("the log does not answer (see log)"),
    }
}

fn not_checked(why: &str) -> Probe {
    Probe {
        findings: vec![
            Finding::ok("log", format!("not checked: {why}")),
            Finding::ok("lock", format!("not checked: {why}")),
        ],
        clock: Evidence::unavailable(why),
        follow_unknown: None,
    }
}

/// What the clock check needs from the facts: the last records, when the
/// log was last written and what time the server gave the probe file.
fn evidence(facts: &Facts, server: &'static str) -> Evidence {
    match &facts.tail {
        Ok(tail) => Evidence {
            records: super::clock::stamps(tail),
            last_write: facts
                .log
                .as_ref()
                .ok()
                .map(|(_, t)| DateTime::<Utc>::from(*t)),
            server_now: facts.write.as_ref().ok().map(|t| DateTime::<Utc>::from(*t)),
            server,
            unavailable: None,
        },
        Err(_) => Evidence::unavailable("the log cannot be read (see log)"),
    }
}

#[cfg(feature = "sftp")]
mod sftp {
    use std::io;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use ssh2::{OpenFlags, OpenType};

    use super::{Facts, Finding, Probe, evidence, read_tail, within};
    use crate::config::Settings;
    use crate::transport::sftp::{SftpUrl, connect};

    pub(super) fn probe(
        url: SftpUrl,
        settings: &Settings,
        probe_name: String,
        deadline: Duration,
    ) -> Probe {
        let sftp_settings = settings.sftp.clone();
        let (shown, path) = (url.to_string(), url.path.clone());
        let looked = within(deadline + sftp_settings.timeout, move || {
            let conn = connect(&url, &sftp_settings).map_err(|e| e.to_string())?;
            Ok::<Facts, String>(look(&conn.sftp, &url.path, &probe_name))
        });
        let facts = match looked {
            Some(Ok(facts)) => facts,
            Some(Err(e)) => return unreachable(&shown, &e),
            None => return unreachable(&shown, "no answer within the deadline"),
        };
        let log = match &facts.log {
            Ok((len, _)) => Finding::ok("log", format!("{shown}: {len} bytes, over SFTP")),
            Err(e) => Finding::problem(
                "log",
                format!("{shown}: {e}; every ban is spooled and no watcher applies anything"),
                "the path is the one on the server, inside the account's chroot if any; banshare \
                 never creates the log: create it there once, writable by every node",
            ),
        };
        let dir = super::parent(&path);
        let lock = match (&facts.write, &facts.log) {
            (_, Err(_)) => Finding::ok("lock", "not checked: the log is missing (see log)"),
            (Ok(_), _) => Finding::ok(
                "lock",
                format!(
                    "{} is writable over SFTP: the lock file can be created",
                    dir.display()
                ),
            ),
            (Err(e), _) => super::unwritable(&path, &dir, e),
        };
        Probe {
            findings: vec![log, lock],
            clock: evidence(&facts, "the SFTP server"),
            follow_unknown: None,
        }
    }

    fn look(sftp: &ssh2::Sftp, log: &Path, probe_name: &str) -> Facts {
        let io = |e: ssh2::Error| io::Error::other(e.to_string());
        let time =
            |secs: Option<u64>| SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unwrap_or(0));
        let meta = sftp
            .stat(log)
            .map_err(io)
            .map(|s| (s.size.unwrap_or(0), time(s.mtime)));
        let tail = match &meta {
            Ok((len, _)) => sftp.open(log).map_err(io).and_then(|f| read_tail(f, *len)),
            Err(e) => Err(io::Error::other(e.to_string())),
        };
        let probe = super::parent(log).join(probe_name);
        let write = meta
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), e.to_string()))
            .and_then(|_| {
                sftp.open_mode(
                    &probe,
                    OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                    0o600,
                    OpenType::File,
                )
                .map_err(io)
                .and_then(|file| {
                    drop(file);
                    let stat = sftp.stat(&probe).map_err(io);
                    sftp.unlink(&probe).map_err(io)?;
                    Ok(time(stat?.mtime))
                })
            });
        Facts {
            log: meta,
            tail,
            write,
            dir_entries: None,
            canonical_dir: None,
        }
    }

    fn unreachable(shown: &str, why: &str) -> Probe {
        Probe {
            findings: vec![
                Finding::problem(
                    "log",
                    format!("{shown}: cannot reach it: {why}"),
                    "check that the server answers SSH (`sftp` with the same user, key and \
                     known_hosts), and [sftp] identity and known_hosts",
                ),
                Finding::ok("lock", "not checked: the server does not answer (see log)"),
            ],
            clock: super::Evidence::unavailable("the server does not answer"),
            follow_unknown: None,
        }
    }
}

/// A ZeroMQ publisher: its sockets accept connections. Neither its log nor
/// its lock is this node's to check.
#[cfg(feature = "zmq")]
fn zmq_probe(
    url: &crate::transport::zmq::ZmqUrl,
    settings: &Settings,
    deadline: Duration,
) -> Probe {
    use std::net::{TcpStream, ToSocketAddrs};
    let ports = [
        ("submission", url.port),
        ("catch-up", settings.zmq.catch_up_port),
        ("feed", settings.zmq.feed_port),
    ];
    let mut closed = Vec::new();
    for (name, port) in ports {
        let reached = (url.host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .is_some_and(|addr| TcpStream::connect_timeout(&addr, deadline).is_ok());
        if !reached {
            closed.push(format!("{name} port {port}"));
        }
    }
    let log = match closed.is_empty() {
        true => Finding::ok(
            "log",
            format!(
                "{url}: the publisher's submission, catch-up and feed ports accept connections"
            ),
        ),
        false => Finding::problem(
            "log",
            format!(
                "{url}: no connection to the publisher's {}",
                closed.join(", ")
            ),
            "check that `banshare publisher` runs on that host with the same ports ([zmq] here, \
             [publisher] there) and binds an address this node reaches (its --bind is 127.0.0.1 by \
             default)",
        ),
    };
    Probe {
        findings: vec![
            log,
            Finding::ok(
                "lock",
                "not needed: the publisher orders and stores the records itself",
            ),
        ],
        clock: Evidence::unavailable("records are read from a publisher, not a file"),
        follow_unknown: None,
    }
}

/// NATS servers: their client ports accept connections, and, as this
/// node logs in, the stream exists.
#[cfg(feature = "nats")]
fn nats_probe(
    url: &crate::transport::nats::NatsUrl,
    settings: &crate::transport::nats::NatsSettings,
    deadline: Duration,
) -> Probe {
    use std::net::{TcpStream, ToSocketAddrs};
    let closed: Vec<String> = url
        .servers
        .iter()
        .filter(|(host, port)| {
            (host.as_str(), *port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .is_none_or(|addr| TcpStream::connect_timeout(&addr, deadline).is_err())
        })
        .map(|(host, port)| format!("{host}:{port}"))
        .collect();
    let stream = || nats_stream(url, settings, deadline);
    let log = match closed.len() {
        0 => stream(),
        n if n < url.servers.len() => {
            let found = stream();
            Finding {
                detail: format!(
                    "{}; no connection to {} (the others answer; the client uses them)",
                    found.detail,
                    closed.join(", ")
                ),
                ..found
            }
        }
        _ => Finding::problem(
            "log",
            format!(
                "{url}: no connection to any NATS server ({})",
                closed.join(", ")
            ),
            "check that nats-server runs there with JetStream, and that its client port is \
             open to this node",
        ),
    };
    Probe {
        findings: vec![
            log,
            Finding::ok(
                "lock",
                "not needed: JetStream orders and stores the records",
            ),
        ],
        clock: Evidence::unavailable("records are read from a NATS stream, not a file"),
        follow_unknown: None,
    }
}

/// The stream, looked up as this node logs in, within `deadline`.
#[cfg(feature = "nats")]
fn nats_stream(
    url: &crate::transport::nats::NatsUrl,
    settings: &crate::transport::nats::NatsSettings,
    deadline: Duration,
) -> Finding {
    use crate::transport::nats::init::look_up;
    let settings = crate::transport::nats::NatsSettings {
        timeout: settings.timeout.min(deadline),
        ..settings.clone()
    };
    match look_up(url, &settings) {
        Ok(Some(facts)) => Finding::ok(
            "log",
            format!(
                "{url}: stream {} holds {} record(s) ({} bytes, last sequence {}), {} \
                 replica(s)",
                url.stream, facts.records, facts.bytes, facts.last_sequence, facts.replicas
            ),
        ),
        Ok(None) => Finding::problem(
            "log",
            format!(
                "{url}: the servers answer, but stream {} does not exist",
                url.stream
            ),
            "make it once, as the administrator: banshare nats init (docs/nats.md); banshare \
             never makes it by itself",
        ),
        Err(e) => Finding::problem(
            "log",
            format!("{url}: {e}"),
            "check [nats] (credentials_file or nkey_seed_file, ca_file) against the servers' \
             accounts and certificates",
        ),
    }
}
