//! What the watcher keeps on disk in its state directory:
//!
//! - `cursor.json`: where in which file it is, written atomically and
//!   durably after every applied batch, so that a restart (SIGKILL included)
//!   resumes right after the last applied record;
//! - `active.json`: the bans it applied that are still in force, so that a
//!   restarted watcher does not shorten them;
//! - `status.json`: counters and follow state for `banshare status`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::durable::write_atomic;
use crate::follow::Cursor;
use ipnet::IpNet;

use super::policy::ActiveBan;
use crate::record::Jail;
use crate::transport::endpoint::Endpoints;

/// The persisted cursor, tied to the log it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedCursor {
    pub log: PathBuf,
    pub cursor: Cursor,
}

/// One active ban: the network, when it ends (`None`: never), its jail and
/// when it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedBan {
    pub target: String,
    pub until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub jail: Option<String>,
    pub since: DateTime<Utc>,
}

/// What `banshare status` reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub pid: u32,
    pub log: PathBuf,
    pub backend: String,
    pub mode: String,
    /// Whether the log could be read at the last attempt.
    pub log_present: bool,
    pub last_error: Option<String>,
    /// The cursor: byte offset after the last applied record.
    pub offset: u64,
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
}

/// The files in one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens `dir`, creating it (mode 0700) if needed.
    pub fn open(dir: &Path) -> io::Result<StateDir> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(StateDir {
            dir: dir.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn load_cursor(&self) -> io::Result<Option<SavedCursor>> {
        load_json(&self.dir.join("cursor.json"))
    }

    pub fn save_cursor(&self, cursor: &SavedCursor) -> io::Result<()> {
        save_json(&self.dir.join("cursor.json"), cursor)
    }

    pub fn load_active(&self) -> io::Result<Vec<(IpNet, ActiveBan)>> {
        let saved: Vec<SavedBan> = load_json(&self.dir.join("active.json"))?.unwrap_or_default();
        // A file edited by hand may hold anything: keep what parses.
        Ok(saved
            .into_iter()
            .filter_map(|b| {
                let jail = match b.jail {
                    Some(j) => Some(j.parse::<Jail>().ok()?),
                    None => None,
                };
                Some((
                    b.target.parse().ok()?,
                    ActiveBan {
                        until: b.until,
                        jail,
                        since: b.since,
                    },
                ))
            })
            .collect())
    }

    /// Writes the active bans one by one straight to the file (compact
    /// JSON, one ban a line), so 100,000 bans never sit in memory twice. The
    /// JSON is written by hand: through serde and chrono's formatting, a
    /// million bans took seconds, and the loop waits while it saves.
    pub fn save_active(&self, bans: impl Iterator<Item = (IpNet, ActiveBan)>) -> io::Result<()> {
        crate::durable::write_atomic_with(&self.dir.join("active.json"), 0o600, |out| {
            let mut line = String::with_capacity(160);
            out.write_all(b"[")?;
            for (i, (net, ban)) in bans.enumerate() {
                line.clear();
                if i > 0 {
                    line.push_str(",\n");
                }
                saved_ban_json(&mut line, net, &ban);
                out.write_all(line.as_bytes())?;
            }
            out.write_all(b"]\n")
        })
    }

    pub fn load_status(&self) -> io::Result<Option<Status>> {
        load_json(&self.dir.join("status.json"))
    }

    pub fn save_status(&self, status: &Status) -> io::Result<()> {
        save_json(&self.dir.join("status.json"), status)
    }
}

/// One [`SavedBan`] as JSON. Every string in it is plain ASCII that needs
/// no escaping: a network, a checked jail name, RFC 3339 times.
fn saved_ban_json(out: &mut String, net: IpNet, ban: &ActiveBan) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = write!(out, "{{\"target\":\"{net}\",\"until\":");
    match ban.until {
        Some(until) => push_json_time(out, until),
        None => out.push_str("null"),
    }
    out.push_str(",\"jail\":");
    match &ban.jail {
        Some(jail) => {
            out.push('"');
            out.push_str(jail.as_str());
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"since\":");
    push_json_time(out, ban.since);
    out.push('}');
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

fn load_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn save_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &data, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                },
            ),
            (
                "2001:db8::/48".parse().unwrap(),
                ActiveBan {
                    until: None,
                    jail: None,
                    since: t("2026-01-02T03:04:05Z"),
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
        };
        let by_serde = serde_json::to_string(&first).unwrap();
        assert!(text.starts_with(&format!("[{by_serde},\n")), "{text}");
    }
}
