//! A `banshare watch` process on one host with the log (dry-run) backend,
//! in a temporary folder: what it applied arrives line by line from its
//! stdout; what it logged is kept from its stderr (and passed on to the
//! test's own); `banshare status --json` gives its counters.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::BANSHARE;

/// A log, a state directory and a running watcher whose applied actions
/// arrive on a channel.
pub struct Watcher {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    applied: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Every line the watcher logged, across restarts.
    logged: Arc<Mutex<Vec<String>>>,
    /// Where the watcher's stderr goes (appended) instead of the test's.
    pub stderr_file: Option<PathBuf>,
}

impl Watcher {
    pub fn start(extra: &[&str]) -> Watcher {
        Watcher::start_with("", extra)
    }

    /// With `config` as the configuration file's text.
    pub fn start_with(config: &str, extra: &[&str]) -> Watcher {
        let mut w = Watcher::prepare(config);
        w.restart(extra);
        w
    }

    /// The folder, log and configuration, with no watcher running yet (so
    /// a test can prepare the state directory first).
    pub fn prepare(config: &str) -> Watcher {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("newbans.log"), b"").unwrap();
        fs::write(dir.path().join("banshare.toml"), config).unwrap();
        Watcher {
            dir,
            child: None,
            applied: mpsc::channel().1,
            seen: Vec::new(),
            logged: Arc::default(),
            stderr_file: None,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts the watcher (again) on the same log and state.
    pub fn restart(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "still running");
        let stderr = match &self.stderr_file {
            Some(path) => Stdio::from(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::piped(),
        };
        let (mut child, applied) = spawn_watcher_logging(self.dir.path(), extra, stderr);
        keep_stderr(&mut child, Arc::clone(&self.logged));
        self.child = Some(child);
        self.applied = applied;
        self.seen.clear();
    }

    /// The saved cursor's offset, once the watcher has saved one.
    pub fn saved_offset(&self) -> Option<u64> {
        let data = fs::read(self.dir.path().join("state/cursor.json")).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&data).ok()?;
        value["position"]["seq"].as_u64()
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("newbans.log")
    }

    pub fn append(&self, text: &[u8]) {
        OpenOptions::new()
            .append(true)
            .open(self.log())
            .unwrap()
            .write_all(text)
            .unwrap();
    }

    /// A banshare-written record, as another node would append it.
    pub fn share(&self, op: &str, address: &str, node: &str, extra: &[&str]) {
        super::run_ok(
            Command::new(BANSHARE)
                .args([
                    "--config",
                    "/dev/null",
                    "--quiet",
                    op,
                    address,
                    "--node",
                    node,
                    "--log",
                ])
                .arg(self.log())
                .arg("--spool-dir")
                .arg(self.dir.path().join(format!("spool-{node}")))
                .args(extra),
        );
    }

    /// Waits until an applied line starts with `prefix`; returns it.
    pub fn expect(&mut self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.starts_with(prefix)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.applied.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no applied line starting with {prefix:?}; saw {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits until the watcher logged a line containing every one of
    /// `words`; returns it.
    pub fn expect_logged(&self, words: &[&str]) -> String {
        let found = || {
            let logged = self.logged.lock().unwrap();
            logged
                .iter()
                .find(|l| words.iter().all(|w| l.contains(w)))
                .cloned()
        };
        super::wait_until(Duration::from_secs(10), || found().is_some());
        found().unwrap_or_else(|| {
            panic!(
                "nothing logged with {words:?}; logged {:?}",
                self.logged.lock().unwrap()
            )
        })
    }

    /// Writes `config` as the configuration file and has the running
    /// watcher re-read it (SIGHUP); it does so between cycles.
    pub fn reload_with(&self, config: &str) {
        fs::write(self.dir.path().join("banshare.toml"), config).unwrap();
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    }

    /// Every line the watcher logged so far, without waiting.
    pub fn logged_now(&self) -> Vec<String> {
        self.logged.lock().unwrap().clone()
    }

    /// Every applied line seen so far, without waiting.
    pub fn applied_now(&mut self) -> Vec<String> {
        self.seen.extend(self.applied.try_iter());
        self.seen.clone()
    }

    /// Stops the watcher with SIGTERM and returns every applied line.
    pub fn stop(&mut self) -> Vec<String> {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success(), "watcher exited with {status} on SIGTERM");
        self.seen.extend(self.applied.iter());
        self.seen.clone()
    }

    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// `banshare status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(BANSHARE)
            .arg("--config")
            .arg(self.dir.path().join("banshare.toml"))
            .args(["status", "--json", "--state-dir"])
            .arg(self.dir.path().join("state"))
            .arg("--spool-dir")
            .arg(self.dir.path().join("spool"))
            .output()
            .unwrap();
        // Null until the watcher has written its first status.
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn spawn_watcher(dir: &Path, extra: &[&str]) -> (Child, mpsc::Receiver<String>) {
    spawn_watcher_logging(dir, extra, Stdio::piped())
}

/// As [`spawn_watcher`], with the watcher's stderr going to `stderr`.
pub fn spawn_watcher_logging(
    dir: &Path,
    extra: &[&str],
    stderr: Stdio,
) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BANSHARE)
        .arg("--config")
        .arg(dir.join("banshare.toml"))
        .args(["watch", "--node", "me", "--log"])
        .arg(dir.join("newbans.log"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .args(["--follow", "poll", "--poll-interval", "20ms"])
        // The log backend, unless the test names another.
        .args(if extra.contains(&"--backend") {
            &[][..]
        } else {
            &["--backend", "log"][..]
        })
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Keeps what `child` logs in `logged`, and passes it on to the test's
/// stderr (shown when the test fails). A child whose stderr was taken
/// already (by the caller) is left alone.
fn keep_stderr(child: &mut Child, logged: Arc<Mutex<Vec<String>>>) {
    let Some(stderr) = child.stderr.take() else {
        return;
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            logged.lock().unwrap().push(line);
        }
    });
}

/// Now, as a record's `ts`.
pub fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
