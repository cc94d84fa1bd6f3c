//! Incident controls that act on one node, through files in the watcher's
//! state directory, so that they work whether the watcher runs or not:
//!
//! - `paused`: while it exists, the watcher applies nothing and reads
//!   nothing more from the log (the log keeps the records; see
//!   [`PAUSED`]). `banshare pause` writes it, `banshare resume` removes it;
//! - `lift-node.<NODE>`: a request to lift every ban in force that
//!   `<NODE>`'s records put there (`banshare lift --node`), holding the
//!   time of the request. The watcher takes it at its next cycle (or at
//!   start), applies the unbans and removes the file.
//!
//! Both commands wake a running watcher with SIGUSR1, which only makes it
//! look (`banshare watch` handles it; nothing else in banshare is sent it).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::durable::write_atomic;
use crate::record::NodeId;

/// The pause flag. Paused, the watcher stops reading rather than reading
/// and dropping: the shared log already keeps every record in order, and
/// on resume the watcher catches up from its cursor as after any stop,
/// applying what is still in force (bans over meanwhile are skipped,
/// unbans lift what they must). Nothing is remembered twice, and a pause
/// of any length costs no memory.
pub const PAUSED: &str = "paused";

/// The prefix of a lift request's file name; the node id follows (node ids
/// are `[A-Za-z0-9_.-]`, starting alphanumeric: always one plain name).
const LIFT_PREFIX: &str = "lift-node.";

/// The most bytes of the pause reason kept.
const MAX_REASON: usize = 200;

/// Pauses applying on the watcher of `dir`, saying why.
pub fn pause(dir: &Path, reason: &str) -> io::Result<()> {
    let since = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // Readable by a watcher that runs as its own user.
    write_atomic(
        &dir.join(PAUSED),
        format!("{since} {}\n", clean(reason)).as_bytes(),
        0o644,
    )
}

/// Resumes applying; `false` if it was not paused.
pub fn resume(dir: &Path) -> io::Result<bool> {
    match fs::remove_file(dir.join(PAUSED)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why the watcher of `dir` is paused (`since reason`), if it is.
pub fn paused(dir: &Path) -> Option<String> {
    let text = read_head(&dir.join(PAUSED))?;
    Some(clean(text.lines().next().unwrap_or("")))
}

/// The start of a small file written by a command (checked every cycle, so
/// a file made huge by hand costs no more than one that is not).
fn read_head(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_REASON as u64 + 64)
        .read_to_end(&mut head)
        .ok()?;
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Asks the watcher of `dir` to lift every ban `node`'s records put in
/// force up to `before`. Returns the request's path: the watcher removes
/// it once done.
pub fn request_lift(dir: &Path, node: &NodeId, before: DateTime<Utc>) -> io::Result<PathBuf> {
    let path = dir.join(format!("{LIFT_PREFIX}{node}"));
    let text = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    write_atomic(&path, format!("{text}\n").as_bytes(), 0o644)?;
    Ok(path)
}

/// A lift request found in the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiftRequest {
    pub node: NodeId,
    pub before: DateTime<Utc>,
    pub path: PathBuf,
}

/// The lift requests waiting in `dir`. A file that does not parse (a
/// request written by hand) is named in the error list and left alone.
pub fn lift_requests(dir: &Path) -> io::Result<(Vec<LiftRequest>, Vec<String>)> {
    let mut requests = Vec::new();
    let mut bad = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(node) = name.to_str().and_then(|n| n.strip_prefix(LIFT_PREFIX)) else {
            continue;
        };
        let path = entry.path();
        let parsed = node
            .parse::<NodeId>()
            .ok()
            .zip(read_head(&path).and_then(|t| t.trim().parse::<DateTime<Utc>>().ok()));
        match parsed {
            Some((node, before)) => requests.push(LiftRequest { node, before, path }),
            None => bad.push(path.display().to_string()),
        }
    }
    Ok((requests, bad))
}

/// What [`wake`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A watcher runs, and was sent SIGUSR1.
    Yes,
    /// No watcher holds the state directory: the next one to start acts.
    NotRunning,
    /// The watcher that runs does not take pause flags or lift requests
    /// (an older release not yet restarted after an upgrade), and was not
    /// signalled: SIGUSR1 would end it.
    TooOld,
}

/// Wakes the watcher that holds `dir`, if one does and it handles SIGUSR1
/// (its status says so): SIGUSR1 to the pid in its lock file.
pub fn wake(dir: &Path) -> Woken {
    use crate::watch::state::WatcherFiles;
    if !matches!(crate::state::is_held(dir), Ok(true)) {
        return Woken::NotRunning;
    }
    let handles_it = crate::state::StateDir::open(dir)
        .ok()
        .and_then(|s| s.load_status().ok().flatten())
        .is_some_and(|s| s.incident_controls);
    if !handles_it {
        return Woken::TooOld;
    }
    let Some(pid) = fs::read_to_string(dir.join("lock"))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
    else {
        return Woken::NotRunning;
    };
    // SAFETY: kill(2) with a pid read from the lock its holder wrote.
    match unsafe { libc::kill(pid, libc::SIGUSR1) } {
        0 => Woken::Yes,
        _ => Woken::NotRunning,
    }
}

/// Printable ASCII only, at most [`MAX_REASON`] bytes: the reason is shown
/// by `status` and logged.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| (' '..='~').contains(c))
        .take(MAX_REASON)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_resume_and_lift_requests_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(paused(dir.path()), None);
        pause(dir.path(), "incident 42\u{1b}[31m").unwrap();
        let why = paused(dir.path()).unwrap();
        assert!(why.ends_with(" incident 42[31m"), "{why}");
        assert!(resume(dir.path()).unwrap());
        assert!(!resume(dir.path()).unwrap());
        let web3: NodeId = "web3".parse().unwrap();
        let at: DateTime<Utc> = "2026-11-21T18:00:00.250Z".parse().unwrap();
        let path = request_lift(dir.path(), &web3, at).unwrap();
        fs::write(dir.path().join("lift-node.bad node"), "x").unwrap();
        let (requests, bad) = lift_requests(dir.path()).unwrap();
        assert_eq!(
            requests,
            [LiftRequest {
                node: web3,
                before: at,
                path
            }]
        );
        assert_eq!(bad.len(), 1);
    }
}
