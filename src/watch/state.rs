//! The watcher's own files in its [state directory](crate::state):
//!
//! - `cursor.json`: the feed's position with the circuit breaker's state as
//!   of it ([`WatchCheckpoint`]): the breaker's rate windows count the
//!   records up to the position, so they are saved with it, and a restart
//!   neither forgets a flood nor counts a record twice; and when each
//!   origin node was last heard from, for the metrics;
//! - `active.json`: the bans it applied that are still in force, so that a
//!   restarted watcher does not shorten them;
//! - `status.json`: counters and follow state for `banshare status`;
//! - `control.json`: the shared allowlist and the nodes whose bans were
//!   lifted ([`SavedControl`]), saved before the cursor moves past the
//!   record that changed them. New in 0.2 (format 2 still): 0.1 does not
//!   read it, so a downgrade forgets the allowlist (docs/format.md).

use std::collections::BTreeMap;
use std::io;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

pub use crate::state::{STATE_VERSION, StateDir, StateError, is_held};
use crate::state::{
    file_version, load_json, overwrite_in_place, parse_json, read_state_file, versioned_json,
};
use crate::transport::feed::Position;
use ipnet::IpNet;

use super::policy::{ActiveBan, BreakerState, SavedControl};
use crate::record::{Jail, NodeId};
use crate::transport::endpoint::Endpoints;

/// The watcher's `cursor.json`: where its feed stands after the last
/// applied record, and its circuit breaker as of then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchCheckpoint {
    pub position: Position,
    /// None in a monitor's checkpoint, or one migrated from format 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerState>,
    /// Per origin node's metrics label, the time of its newest record read
    /// (at most [`MAX_NODE_LABELS`](super::metrics::MAX_NODE_LABELS) and
    /// `_other`), so that a restarted watcher's metrics still show when it
    /// last heard from a node now silent. Added in 0.2 within format 2:
    /// optional, so older files read as empty, and older releases skip it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_seen: BTreeMap<String, DateTime<Utc>>,
}

/// One active ban: the network, when it ends (`None`: never), its jail,
/// when it started (the time of the newest record that reported it) and
/// the node that record came from. `node` was added within format 2:
/// files without it read as `None`, and older releases skip it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedBan {
    pub target: String,
    pub until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub jail: Option<String>,
    pub since: DateTime<Utc>,
    /// The node whose record put the ban in force. Added in 0.2 within
    /// format 2: optional, so 0.1's files read as `None`, and 0.1 skips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What `banshare status` reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub pid: u32,
    /// The log as the user named it: a path or a URL.
    pub log: String,
    pub backend: String,
    pub mode: String,
    /// Whether the log could be read at the last attempt.
    pub log_present: bool,
    pub last_error: Option<String>,
    /// The cursor: byte offset after the last applied record.
    pub offset: u64,
    /// Bytes in the log past the cursor (an unfinished last line
    /// included), as the watcher measured them through its own feed when it
    /// wrote this status: right over every transport, and `status` needs no
    /// access to the log. `None`: it could not look (the log unreachable, or
    /// not opened yet). Optional with a default, so format 1 stays as it
    /// was: files without it read as `None`, and older releases ignore it.
    #[serde(default)]
    pub lag_bytes: Option<u64>,
    /// Complete records past the cursor, measured with `lag_bytes`; `None`
    /// also when the lag was too long to count at every status write.
    #[serde(default)]
    pub lag_records: Option<u64>,
    pub last_record_ts: Option<DateTime<Utc>>,
    pub active_bans: usize,
    pub lines_read: u64,
    pub applied: u64,
    pub rejected: BTreeMap<String, u64>,
    pub skipped: BTreeMap<String, u64>,
    /// Records applied with a change: dated ahead of this host's clock
    /// (`ClockAhead`), bantime cut to `max_bantime` (`BantimeClamped`).
    #[serde(default)]
    pub adjusted: BTreeMap<String, u64>,
    pub backend_errors: u64,
    /// Actions given up after the backend refused them for minutes.
    #[serde(default)]
    pub abandoned: u64,
    /// Nodes whose circuit breaker is open, and until when.
    #[serde(default)]
    pub tripped_nodes: BTreeMap<String, DateTime<Utc>>,
    /// The addresses the log is reached through, never banned.
    #[serde(default)]
    pub transport: Endpoints,
    pub started: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    /// Why the watcher applies nothing: its cursor cannot be saved (a full
    /// or read-only state directory), so it holds rather than run ahead of
    /// it. `None` while it applies.
    #[serde(default)]
    pub held: Option<String>,
    /// Why applying is paused (`banshare pause`: when, and the reason
    /// given), while it is. Optional fields from here on are new in 0.2,
    /// in format 2: 0.1 reads such a file and skips them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// This watcher takes pause flags and lift requests, and SIGUSR1 makes
    /// it look for them. Watchers of 0.1 leave it out (`false`): SIGUSR1
    /// would end them, so `banshare pause` and `lift` do not send it.
    #[serde(default)]
    pub incident_controls: bool,
    /// The networks on the shared allowlist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<String>,
    /// Nodes whose bans were lifted on this node, with how many bans each
    /// lift took away, the last time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lifted: BTreeMap<String, LiftReport>,
}

/// The last `banshare lift --node` of one node, as the watcher did it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiftReport {
    /// Its bans dated up to this are lifted and refused.
    pub before: DateTime<Utc>,
    /// The bans in force it lifted.
    pub bans: u64,
}

/// The watcher's files, read and written in a [`StateDir`].
pub trait WatcherFiles {
    fn load_active(&self) -> io::Result<Vec<(IpNet, ActiveBan)>>;
    fn save_active(&self, bans: impl Iterator<Item = (IpNet, ActiveBan)>) -> io::Result<()>;
    fn load_status(&self) -> io::Result<Option<Status>>;
    fn save_status(&self, status: &Status) -> io::Result<()>;
    fn load_control(&self) -> io::Result<SavedControl>;
    fn save_control(&self, control: &SavedControl) -> io::Result<()>;
}

impl WatcherFiles for StateDir {
    fn load_active(&self) -> io::Result<Vec<(IpNet, ActiveBan)>> {
        let path = self.file("active.json");
        let saved: Vec<SavedBan> = match read_state_file(&path).map_err(io::Error::other)? {
            None => Vec::new(),
            // Format 0 is the bare list.
            Some(data) if file_version(&path, &data)? == 0 => parse_json(&path, &data)?,
            Some(data) => parse_json::<ActiveFile>(&path, &data)?.bans,
        };
        // A file edited by hand may hold anything: keep what parses.
        Ok(saved
            .into_iter()
            .filter_map(|b| {
                let jail = match b.jail {
                    Some(j) => Some(j.parse::<Jail>().ok()?),
                    None => None,
                };
                let node = match b.node {
                    Some(n) => Some(n.parse::<NodeId>().ok()?),
                    None => None,
                };
                Some((
                    b.target.parse().ok()?,
                    ActiveBan {
                        until: b.until,
                        jail,
                        since: b.since,
                        node,
                    },
                ))
            })
            .collect())
    }

    /// Writes the active bans one by one straight to the file (compact
    /// JSON, one ban a line), so 100,000 bans never sit in memory twice. The
    /// JSON is written by hand: through serde and chrono's formatting, a
    /// million bans took seconds, and the loop waits while it saves.
    fn save_active(&self, bans: impl Iterator<Item = (IpNet, ActiveBan)>) -> io::Result<()> {
        crate::durable::write_atomic_with(&self.file("active.json"), 0o600, |out| {
            let mut line = String::with_capacity(160);
            write!(out, "{{\"version\":{STATE_VERSION},\"bans\":[")?;
            for (i, (net, ban)) in bans.enumerate() {
                line.clear();
                if i > 0 {
                    line.push_str(",\n");
                }
                saved_ban_json(&mut line, net, &ban);
                out.write_all(line.as_bytes())?;
            }
            out.write_all(b"]}\n")
        })
    }

    fn load_status(&self) -> io::Result<Option<Status>> {
        load_json(&self.file("status.json"))
    }

    fn load_control(&self) -> io::Result<SavedControl> {
        Ok(load_json(&self.file("control.json"))?.unwrap_or_default())
    }

    /// Atomically and durably, like the cursor, which it must never be
    /// behind.
    fn save_control(&self, control: &SavedControl) -> io::Result<()> {
        crate::state::save_json(&self.file("control.json"), control)
    }

    /// Replaces status.json atomically, without fsync: it only reports,
    /// is rewritten every second and at stop, and nothing reads it back at
    /// start, so its two fsyncs a second (per watcher, on a disk that a
    /// ZeroMQ publisher may share) bought nothing. A host crash may leave
    /// it old or empty until the watcher runs again. When the state
    /// directory is full, overwrites it in place instead (it fits in the
    /// blocks it has), so that `banshare status` can still tell that the
    /// watcher holds.
    fn save_status(&self, status: &Status) -> io::Result<()> {
        let path = self.file("status.json");
        let data = versioned_json(status)?;
        match crate::durable::replace(&path, &data, 0o600) {
            Err(e) if e.kind() == io::ErrorKind::StorageFull => overwrite_in_place(&path, &data),
            result => result,
        }
    }
}

/// Whether a watcher works, as `status` and `doctor` tell it from its state
/// directory.
#[derive(Debug, Clone, PartialEq)]
pub enum Liveness {
    /// No watcher has written a status in this directory.
    NeverRan,
    /// No process holds the directory's lock: the watcher is not running.
    Stopped(Box<Status>),
    /// A process holds the lock but has not written its status for this
    /// long, over [`silence_limit`]: stopped, or stuck (in an
    /// uninterruptible wait on a dead mount, say). It applies nothing.
    Silent(Box<Status>, std::time::Duration),
    Running(Box<Status>),
}

/// How long a running watcher may leave its status unwritten before it
/// counts as not responding. It writes its status at every wake-up (at
/// most once a second) and wakes at least every safety poll; a batch holds
/// it for a few backend calls, each cut at the backend's timeout.
pub fn silence_limit(
    safety_poll: std::time::Duration,
    backend_timeout: std::time::Duration,
) -> std::time::Duration {
    (safety_poll * 4 + backend_timeout * 2).max(std::time::Duration::from_secs(120))
}

/// The liveness of the watcher of `dir`, read without creating anything.
/// `limit`: see [`silence_limit`].
pub fn liveness(
    dir: &std::path::Path,
    limit: std::time::Duration,
    now: DateTime<Utc>,
) -> io::Result<Liveness> {
    if !dir.is_dir() {
        return Ok(Liveness::NeverRan);
    }
    let Some(status) = StateDir::open(dir)?.load_status()? else {
        return Ok(Liveness::NeverRan);
    };
    let status = Box::new(status);
    if !is_held(dir)? {
        return Ok(Liveness::Stopped(status));
    }
    // The last sign of life: the status, or taking the lock (which writes
    // the pid into it) for a watcher still starting up over an older
    // status. One dated ahead of now (a clock set back) counts as fresh.
    let locked = std::fs::metadata(dir.join("lock"))
        .and_then(|m| m.modified())
        .ok()
        .map(DateTime::<Utc>::from);
    let silent = status
        .updated
        .max(locked)
        .map_or(Some(limit), |t| (now - t).to_std().ok());
    Ok(match silent {
        Some(silent) if silent > limit => Liveness::Silent(status, silent),
        _ => Liveness::Running(status),
    })
}

/// `active.json` from format 1 on.
#[derive(Deserialize)]
struct ActiveFile {
    bans: Vec<SavedBan>,
}

/// One [`SavedBan`] as JSON. Every string in it is plain ASCII that needs
/// no escaping: a network, checked jail and node names, RFC 3339 times.
fn saved_ban_json(out: &mut String, net: IpNet, ban: &ActiveBan) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = write!(out, "{{\"target\":\"{net}\",\"until\":");
    match ban.until {
        Some(until) => push_json_time(out, until),
        None => out.push_str("null"),
    }
    out.push_str(",\"jail\":");
    push_json_name(out, ban.jail.as_ref().map(|j| j.as_str()));
    out.push_str(",\"since\":");
    push_json_time(out, ban.since);
    // A checked node id needs no escaping either.
    if let Some(node) = &ban.node {
        out.push_str(",\"node\":\"");
        out.push_str(node.as_str());
        out.push('"');
    }
    out.push('}');
}

/// A checked name (which needs no escaping) as a JSON string, or `null`.
fn push_json_name(out: &mut String, name: Option<&str>) {
    match name {
        Some(name) => {
            out.push('"');
            out.push_str(name);
            out.push('"');
        }
        None => out.push_str("null"),
    }
}

/// `"2026-11-21T18:28:04.123Z"`, as chrono's serde writes it for a time in
/// whole milliseconds (the policy keeps no finer times).
fn push_json_time(out: &mut String, t: DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write as _;
    if !(0..=9999).contains(&t.year()) {
        let _ = write!(
            out,
            "\"{}\"",
            t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        );
        return;
    }
    let _ = write!(
        out,
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    match t.timestamp_subsec_millis() {
        0 => out.push_str("Z\""),
        ms => {
            let _ = write!(out, ".{ms:03}Z\"");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn active_bans_are_saved_and_loaded_back_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let bans = vec![
            (
                "192.0.2.7/32".parse().unwrap(),
                ActiveBan {
                    until: Some(t("2026-11-21T19:28:04.123Z")),
                    jail: Some("sshd".parse().unwrap()),
                    since: t("2026-11-21T18:28:04.123Z"),
                    node: None,
                },
            ),
            (
                "2001:db8::/48".parse().unwrap(),
                ActiveBan {
                    until: None,
                    jail: None,
                    since: t("2026-01-02T03:04:05Z"),
                    node: Some("web3".parse().unwrap()),
                },
            ),
        ];
        state.save_active(bans.clone().into_iter()).unwrap();
        assert_eq!(state.load_active().unwrap(), bans);
        // The same JSON as serde writes, so older files and tools agree.
        let text = fs::read_to_string(dir.path().join("active.json")).unwrap();
        let first = SavedBan {
            target: "192.0.2.7/32".into(),
            until: bans[0].1.until,
            jail: Some("sshd".into()),
            since: bans[0].1.since,
            node: None,
        };
        let by_serde = serde_json::to_string(&first).unwrap();
        assert!(
            text.starts_with(&format!("{{\"version\":2,\"bans\":[{by_serde},\n")),
            "{text}"
        );
    }

    #[test]
    fn older_active_bans_are_read_as_they_are_and_newer_formats_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("active.json");
        let ban = r#"{"target":"192.0.2.7/32","until":null,"jail":"sshd","since":"2026-11-21T18:28:04Z"}"#;
        for old in [
            format!("[{ban}]"),
            format!(r#"{{"version":1,"bans":[{ban}]}}"#),
        ] {
            fs::write(&path, &old).unwrap();
            // Taking the directory leaves it as it is: a million bans are
            // not parsed twice to change a version number.
            let state = StateDir::acquire(dir.path()).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), old);
            let bans = state.load_active().unwrap();
            assert_eq!(bans.len(), 1, "{old}");
            state.save_active(bans.into_iter()).unwrap();
            let text = fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with(&format!(
                    "{{\"version\":{STATE_VERSION},\"bans\":[{{\"target\":"
                )),
                "{text}"
            );
        }

        let future = r#"{"version":3,"bans":[]}"#;
        fs::write(dir.path().join("active.json"), future).unwrap();
        match StateDir::acquire(dir.path()) {
            Err(StateError::FutureVersion { found: 3, path }) => {
                assert!(path.ends_with("active.json"))
            }
            other => panic!("{other:?}"),
        }
        let e = StateDir::open(dir.path())
            .unwrap()
            .load_active()
            .unwrap_err();
        assert!(e.to_string().contains("version 3"), "{e}");
        assert_eq!(
            fs::read_to_string(dir.path().join("active.json")).unwrap(),
            future
        );
    }

    #[test]
    fn a_status_without_the_lag_reads_as_unknown_and_the_lag_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        // As format 1 was written before the watcher measured its lag.
        let mut old = serde_json::to_value(Status::default()).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("lag_bytes");
        fields.remove("lag_records");
        fields.insert("version".into(), 1.into());
        fs::write(dir.path().join("status.json"), old.to_string()).unwrap();
        let read = state.load_status().unwrap().unwrap();
        assert_eq!((read.lag_bytes, read.lag_records), (None, None));
        let measured = Status {
            lag_bytes: Some(396),
            lag_records: Some(3),
            ..Status::default()
        };
        state.save_status(&measured).unwrap();
        assert_eq!(state.load_status().unwrap(), Some(measured));
    }

    #[test]
    fn status_overwritten_in_place_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let long = Status {
            last_error: Some("x".repeat(500)),
            ..Status::default()
        };
        state.save_status(&long).unwrap();
        let short = Status {
            held: Some("cannot save the cursor".into()),
            ..Status::default()
        };
        let path = dir.path().join("status.json");
        overwrite_in_place(&path, &versioned_json(&short).unwrap()).unwrap();
        assert_eq!(state.load_status().unwrap(), Some(short));
    }
}
