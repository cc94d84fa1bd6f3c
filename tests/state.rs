//! The watcher's saved state: it never runs ahead of the cursor it could
//! save (a full state folder), one daemon per state folder, the circuit
//! breaker and rate windows across restarts, and state files of the
//! previous releases (checked-in fixtures in tests/fixtures/state-v0 and -v1).
//!
//! The real binary runs with the log (dry-run) backend; what it applied is
//! read from its stdout, one line per action. The full-folder test mounts a
//! tmpfs, so it needs root (and fails without it).

mod support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use support::watcher::{Watcher, now_ts};
use support::{BANSHARE, Daemon, run_ok, wait_until};

const WAIT: Duration = Duration::from_secs(15);

/// A ban record from `node`, as a line of the shared log.
fn record(address: &str, node: &str) -> String {
    format!(
        "<13>Nov 21 18:00:00 banshare[1]: HOST {address} PORT 22 node={node} ts={}\n",
        now_ts()
    )
}

/// A small tmpfs mounted on a folder for one test; lazily unmounted when
/// dropped, so a failing test (or a watcher still in it) leaves no mount.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        run_ok(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(path),
        );
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

/// Writes to `path` until the filesystem is full. Called again, it takes
/// whatever was freed since (a file the watcher replaced).
fn fill(path: &Path) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let chunk = [0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// Complete lines of `log` before byte `offset`.
fn lines_before(log: &Path, offset: u64) -> usize {
    let data = fs::read(log).unwrap();
    data[..(offset as usize).min(data.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Waits for `child` to exit; kills it and panics if it is still running.
fn exit_of(mut child: Child, what: &str) -> Output {
    let exited = wait_until(WAIT, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "{what} still running after {WAIT:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_full_state_folder_holds_the_watcher_until_its_cursor_can_be_saved() {
    let mut w = Watcher::prepare("[watch]\nbatch_max = 10\n");
    let mount = Tmpfs::mount(&w.state_dir(), "4m");
    let stderr = w.dir.path().join("watch.err");
    w.stderr_file = Some(stderr.clone());
    w.restart(&[]);
    w.append(record("192.0.2.1", "other").as_bytes());
    w.expect("ban 192.0.2.1");
    assert!(wait_until(WAIT, || w.saved_offset().is_some()));

    // Full: every page the watcher frees (a replaced file) is taken again.
    let filler = mount.0.join("filler");
    fill(&filler);
    for i in 10..50 {
        w.append(record(&format!("192.0.2.{i}"), "other").as_bytes());
    }
    let held = wait_until(WAIT, || {
        fill(&filler);
        w.status()["held"].is_string()
    });
    let ahead = |w: &mut Watcher| {
        let saved = lines_before(&w.log(), w.saved_offset().unwrap_or(0));
        let applied = w.applied_now().len();
        (applied, saved)
    };
    let (applied, saved) = ahead(&mut w);
    assert!(
        held,
        "status never said the watcher holds; it applied {applied} records, its saved cursor covers {saved}; status: {}",
        w.status()
    );
    // Nothing applied beyond the saved cursor.
    assert_eq!(applied, saved, "applied {applied}, saved {saved}");
    // Still held a status update later: nothing more applied.
    let updated = w.status()["updated"].clone();
    assert!(wait_until(WAIT, || {
        fill(&filler);
        w.status()["updated"] != updated
    }));
    assert_eq!(ahead(&mut w).0, applied, "applied more while held");
    assert!(w.status()["held"].is_string(), "{}", w.status());

    // Room again: it saves, resumes and applies the rest exactly once.
    fs::remove_file(&filler).unwrap();
    let log_len = fs::metadata(w.log()).unwrap().len();
    assert!(
        wait_until(WAIT, || w.saved_offset() == Some(log_len)
            && w.status()["held"].is_null()),
        "{}",
        w.status()
    );
    let applied = w.applied_now();
    assert_eq!(applied.len(), 41, "{applied:?}");
    let log = fs::read_to_string(&stderr).unwrap();
    assert!(
        log.contains("HOLDING") && log.contains("applying resumes"),
        "{log}"
    );

    // Room, but the save fails (a folder where the watcher writes its
    // temporary cursor file): it holds after that one batch.
    let pid = w.child.as_ref().unwrap().id();
    let blocker = w.state_dir().join(format!(".cursor.json.{pid}.tmp"));
    fs::create_dir(&blocker).unwrap();
    for i in 60..90 {
        w.append(record(&format!("192.0.2.{i}"), "other").as_bytes());
    }
    assert!(
        wait_until(WAIT, || w.status()["held"]
            .as_str()
            .is_some_and(|h| h.contains("cannot save the cursor"))),
        "{}",
        w.status()
    );
    let (held_at, saved) = ahead(&mut w);
    assert!(held_at <= saved + 10, "applied {held_at}, saved {saved}");
    fs::remove_dir(&blocker).unwrap();
    let log_len = fs::metadata(w.log()).unwrap().len();
    assert!(wait_until(WAIT, || w.saved_offset() == Some(log_len)));
    assert_eq!(w.applied_now().len(), 71);
    let log = fs::read_to_string(&stderr).unwrap();
    assert!(log.contains("HOLDING: cannot save the cursor"), "{log}");

    // Killed and started again: nothing is applied a second time.
    w.kill();
    w.restart(&[]);
    w.append(record("192.0.2.200", "other").as_bytes());
    w.expect("ban 192.0.2.200");
    let again = w.stop();
    assert_eq!(again.len(), 1, "applied again after the restart: {again:?}");
}

/// A watcher that holds from its start has not read the log yet: `status`
/// must say so, not that the log is unreadable.
#[test]
fn status_of_a_watcher_held_from_start_does_not_call_the_log_unreadable() {
    let mut w = Watcher::prepare("");
    // Less than the 1 MiB of room the watcher wants before a batch.
    let _mount = Tmpfs::mount(&w.state_dir(), "256k");
    w.append(record("192.0.2.1", "other").as_bytes());
    w.restart(&[]);
    assert!(wait_until(WAIT, || w.status()["held"].is_string()));
    let out = Command::new(BANSHARE)
        .args(["status", "--state-dir"])
        .arg(w.state_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let log_line = text.lines().find(|l| l.starts_with("log:")).unwrap_or("");
    assert!(!log_line.contains("NOT readable"), "{text}");
    assert!(log_line.contains("not read yet"), "{text}");
    w.stop();
}

#[test]
fn a_second_watcher_or_monitor_on_the_same_state_folder_exits_2() {
    let mut w = Watcher::start(&[]);
    assert!(wait_until(WAIT, || w.status()["pid"].is_u64()));
    let first = w.child.as_ref().unwrap().id();
    let second = Command::new(BANSHARE)
        .args([
            "--config",
            "/dev/null",
            "watch",
            "--node",
            "me2",
            "--backend",
            "log",
        ])
        .arg("--log")
        .arg(w.log())
        .arg("--state-dir")
        .arg(w.state_dir())
        .arg("--spool-dir")
        .arg(w.dir.path().join("spool2"))
        .args(["--follow", "poll", "--poll-interval", "20ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let f2blog = w.dir.path().join("fail2ban.log");
    fs::write(&f2blog, b"").unwrap();
    let monitor = Command::new(BANSHARE)
        .args(["--config", "/dev/null", "monitor", "--node", "me3"])
        .arg("--fail2ban-log")
        .arg(&f2blog)
        .arg("--state-dir")
        .arg(w.state_dir())
        .arg("--log")
        .arg(w.log())
        .arg("--spool-dir")
        .arg(w.dir.path().join("spool3"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for (child, what) in [(second, "a second watcher"), (monitor, "a monitor")] {
        let out = exit_of(child, what);
        let message = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {message}");
        assert_eq!(message.lines().count(), 1, "{what}: {message}");
        assert!(
            message.contains(&w.state_dir().display().to_string())
                && message.contains(&format!("pid {first}")),
            "{what}: {message}"
        );
    }
    // The first one runs on, its state untouched.
    w.share("ban", "192.0.2.9", "other", &[]);
    w.expect("ban 192.0.2.9");
    w.stop();
    assert_eq!(w.status()["node"], "me", "{}", w.status());
}

#[test]
fn the_circuit_breaker_and_rate_windows_survive_a_restart() {
    let mut w = Watcher::start_with("[trust]\nmax_bans_per_node_per_minute = 5\n", &[]);
    let flood = |w: &Watcher, range: std::ops::RangeInclusive<u8>| {
        let lines: String = range
            .map(|i| record(&format!("198.51.100.{i}"), "flood"))
            .collect();
        w.append(lines.as_bytes());
    };
    // Three bans, a restart, three more: the sixth in a minute trips it.
    flood(&w, 1..=3);
    w.expect("ban 198.51.100.3");
    let log_len = fs::metadata(w.log()).unwrap().len();
    assert!(wait_until(WAIT, || w.saved_offset() == Some(log_len)));
    w.kill();
    w.restart(&[]);
    flood(&w, 4..=6);
    w.expect("ban 198.51.100.5");
    assert!(
        wait_until(WAIT, || w.status()["skipped"]["BreakerTripped"] == 1),
        "the breaker did not trip across the restart: applied {:?}, status {}",
        w.applied_now(),
        w.status()
    );
    // Killed and started again: the breaker is still open.
    w.kill();
    w.restart(&[]);
    w.append(record("198.51.100.20", "flood").as_bytes());
    w.append(record("198.51.100.21", "other").as_bytes());
    w.expect("ban 198.51.100.21");
    let applied = w.stop();
    assert!(
        !applied.iter().any(|l| l.contains("198.51.100.20")),
        "the flooding node was heard after a restart: {applied:?}"
    );
    let status = w.status();
    assert_eq!(status["skipped"]["NodeTripped"], 1, "{status}");
    assert!(status["tripped_nodes"]["flood"].is_string(), "{status}");
}

/// The fixtures of state format `format` (0 or 1) for a watcher or monitor
/// (`name`).
fn fixtures(format: u32, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/state-v{format}"))
        .join(name)
}

/// The fixture's cursor.json, pointed at `log`.
fn fixture_cursor(format: u32, dir: &str, log: &Path) -> Vec<u8> {
    let data = fs::read(fixtures(format, dir).join("cursor.json")).unwrap();
    let mut cursor: serde_json::Value = serde_json::from_slice(&data).unwrap();
    cursor["log"] = log.to_str().unwrap().into();
    serde_json::to_vec(&cursor).unwrap()
}

fn version_of(path: &Path) -> serde_json::Value {
    let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: serde_json::Value = serde_json::from_slice(&data).unwrap();
    value["version"].clone()
}

#[test]
fn a_watcher_migrates_the_state_files_of_the_previous_release() {
    watcher_migrates_state_files_of_format(1);
}

#[test]
fn a_watcher_migrates_the_state_files_of_format_0() {
    watcher_migrates_state_files_of_format(0);
}

/// A watcher on the fixtures of `format` resumes exactly at their cursor
/// and keeps their bans.
fn watcher_migrates_state_files_of_format(format: u32) {
    let mut w = Watcher::prepare("");
    let state = w.state_dir();
    fs::create_dir(&state).unwrap();
    fs::copy(fixtures(format, "watch").join("newbans.log"), w.log()).unwrap();
    for file in ["active.json", "status.json"] {
        fs::copy(fixtures(format, "watch").join(file), state.join(file)).unwrap();
    }
    let cursor = fixture_cursor(format, "watch", &w.log());
    fs::write(state.join("cursor.json"), cursor).unwrap();
    w.restart(&[]);
    // The saved 1000-day ban covers a shorter report of its network.
    w.share("ban", "203.0.113.0/24", "other", &["--bantime", "600"]);
    w.share("ban", "192.0.2.210", "other", &[]);
    w.expect("ban 192.0.2.210");
    // The fixture's one record after its cursor, from the monitor, may
    // still be in force or not, depending on the day.
    let applied: Vec<String> = w
        .stop()
        .into_iter()
        .filter(|l| !l.starts_with("ban 192.0.2.100 "))
        .collect();
    assert_eq!(applied.len(), 1, "{applied:?}");
    let status = w.status();
    // Resumed at the saved cursor: the one record after it, and the two
    // new ones.
    assert_eq!(status["lines_read"], 3, "{status}");
    assert_eq!(status["skipped"]["AlreadyBanned"], 1, "{status}");
    for file in ["cursor.json", "active.json", "status.json"] {
        assert_eq!(version_of(&state.join(file)), 2, "{file}");
    }
}

#[test]
fn a_monitor_migrates_the_cursor_of_the_previous_release() {
    monitor_migrates_the_cursor_of_format(1);
}

#[test]
fn a_monitor_migrates_the_cursor_of_format_0() {
    monitor_migrates_the_cursor_of_format(0);
}

/// A monitor on the fixture of `format` goes on after its cursor.
fn monitor_migrates_the_cursor_of_format(format: u32) {
    let dir = tempfile::tempdir().unwrap();
    let f2blog = dir.path().join("fail2ban.log");
    let state = dir.path().join("state");
    let log = dir.path().join("newbans.log");
    fs::create_dir(&state).unwrap();
    fs::write(&log, b"").unwrap();
    fs::copy(fixtures(format, "monitor").join("fail2ban.log"), &f2blog).unwrap();
    fs::write(
        state.join("cursor.json"),
        fixture_cursor(format, "monitor", &f2blog),
    )
    .unwrap();
    let monitor = Daemon(
        Command::new(BANSHARE)
            .args(["--config", "/dev/null", "monitor", "--node", "mon"])
            .arg("--fail2ban-log")
            .arg(&f2blog)
            .arg("--state-dir")
            .arg(&state)
            .arg("--log")
            .arg(&log)
            .arg("--spool-dir")
            .arg(dir.path().join("spool"))
            .spawn()
            .unwrap(),
    );
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S,000");
    let line = format!("{now} fail2ban.actions        [752]: NOTICE  [sshd] Ban 192.0.2.101\n");
    OpenOptions::new()
        .append(true)
        .open(&f2blog)
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    assert!(wait_until(WAIT, || log.exists()
        && support::read_records(&log).len() == 1));
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(monitor.0.id() as i32, libc::SIGTERM) };
    assert!(wait_until(WAIT, || version_of(&state.join("cursor.json")) == 2));
    drop(monitor);
    let records = support::read_records(&log);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].target.to_string(), "192.0.2.101");
}

#[test]
fn state_files_of_an_unknown_newer_version_are_refused_not_overwritten() {
    let w = Watcher::prepare("");
    let state = w.state_dir();
    fs::create_dir(&state).unwrap();
    let future = format!(
        "{{\"version\": 99, \"log\": {:?}, \"something\": \"new\"}}",
        w.log()
    );
    fs::write(state.join("cursor.json"), &future).unwrap();
    let child = Command::new(BANSHARE)
        .args([
            "--config",
            "/dev/null",
            "watch",
            "--node",
            "me",
            "--backend",
            "log",
        ])
        .arg("--log")
        .arg(w.log())
        .arg("--state-dir")
        .arg(&state)
        .arg("--spool-dir")
        .arg(w.dir.path().join("spool"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = exit_of(child, "a watcher on state files of version 99");
    let message = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{message}");
    assert!(
        message.contains("cursor.json") && message.contains("version 99"),
        "{message}"
    );
    assert_eq!(
        fs::read_to_string(state.join("cursor.json")).unwrap(),
        future
    );
    assert!(!state.join("status.json").exists(), "it wrote its status");
}
