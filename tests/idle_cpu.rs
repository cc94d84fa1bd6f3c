//! An idle watcher and an idle monitor use no measurable CPU, on inotify
//! and on polling, after they have read something: looking at the file
//! must not itself be a reason to look again. Runs the real binary on a
//! local folder; no root needed. The same for the ZeroMQ publisher and a
//! watcher that follows it, on loopback.

mod support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use support::{BANSHARE, Daemon, run_ok, wait_until};

/// How long each process is watched while idle.
const IDLE: Duration = Duration::from_secs(5);
/// CPU time an idle process may use over [`IDLE`]: a few wake-ups a second
/// cost microseconds each, while a loop woken by its own reads used about
/// 80% of a core (4 s here). A bound an idle process always meets and a
/// spinning one never does, even on a loaded machine.
const MAX_IDLE_CPU: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    Inotify,
    Poll,
}

impl Follow {
    fn name(self) -> &'static str {
        match self {
            Follow::Inotify => "inotify",
            Follow::Poll => "poll",
        }
    }
}

/// A watcher or monitor that has read one record and now has nothing to do.
struct Idle {
    what: String,
    process: Daemon,
    dir: tempfile::TempDir,
    /// The file it follows.
    log: PathBuf,
    /// Appends one more line to `log`, as its writer would.
    append: fn(&Path),
}

impl Idle {
    /// Appends a line and waits until it has been read: the event filter
    /// must not drop real changes (the safety poll is an hour away).
    fn append_and_wait(&self) {
        (self.append)(&self.log);
        wait_read_to_end(&self.what, &self.dir.path().join("state"), &self.log);
    }
}

/// A config file naming the follow mode (the monitor has no flag for it),
/// with the safety poll an hour away: on inotify, only events wake it up.
fn config(dir: &Path, follow: Follow) -> PathBuf {
    let path = dir.join("banshare.toml");
    let text = format!(
        "[watch]\nfollow = {:?}\nsafety_poll = \"1h\"\n",
        follow.name()
    );
    fs::write(&path, text).unwrap();
    path
}

fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// The offset in the saved cursor, once there is one.
fn saved_offset(state: &Path) -> Option<u64> {
    let data = fs::read(state.join("cursor.json")).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&data).ok()?;
    value["position"]["seq"].as_u64()
}

/// Waits until the saved cursor is at the end of `log`: all of it read.
fn wait_read_to_end(what: &str, state: &Path, log: &Path) {
    let len = fs::metadata(log).unwrap().len();
    assert!(
        wait_until(Duration::from_secs(20), || saved_offset(state) == Some(len)),
        "{what} never saved a cursor at the end of {} ({len} bytes); saved {:?}",
        log.display(),
        saved_offset(state)
    );
}

fn watcher(follow: Follow) -> Idle {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    let state = dir.path().join("state");
    fs::write(&log, b"").unwrap();
    let child = spawn_daemon(dir.path(), follow, &state, |cmd| {
        cmd.args(["watch", "--backend", "log", "--node", "me"])
            .args(["--follow", follow.name(), "--log"])
            .arg(&log)
            // The metrics file is written when something changed, never on
            // a timer of its own.
            .arg("--metrics-file")
            .arg(log.with_file_name("banshare.prom"))
            .args(["--metrics-listen", "127.0.0.1:0"]);
    });
    let idle = Idle {
        what: format!("the watcher on {}", follow.name()),
        process: Daemon(child),
        dir,
        log,
        append: share_ban,
    };
    idle.append_and_wait();
    idle
}

/// A ban from another node, as `banshare ban` appends it.
/// `banshare --quiet` with the configuration for `follow`, the command
/// that `args` adds, and the state and spool folders in `dir`.
fn spawn_daemon(
    dir: &Path,
    follow: Follow,
    state: &Path,
    args: impl FnOnce(&mut Command),
) -> std::process::Child {
    let mut cmd = Command::new(BANSHARE);
    cmd.arg("--config").arg(config(dir, follow)).arg("--quiet");
    args(&mut cmd);
    cmd.arg("--state-dir")
        .arg(state)
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn share_ban(log: &Path) {
    run_ok(
        Command::new(BANSHARE)
            .args(["--config", "/dev/null", "--quiet", "ban", "192.0.2.7"])
            .args(["--node", "other", "--log"])
            .arg(log)
            .arg("--spool-dir")
            .arg(log.with_file_name("spool-other")),
    );
}

/// A ban notice, as fail2ban logs it.
fn log_ban_notice(f2b_log: &Path) {
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S,%3f");
    append(
        f2b_log,
        &format!("{now} fail2ban.actions [1]: NOTICE [sshd] Ban 192.0.2.8\n"),
    );
}

fn monitor(follow: Follow) -> Idle {
    let dir = tempfile::tempdir().unwrap();
    let f2b_log = dir.path().join("fail2ban.log");
    let state = dir.path().join("state");
    let shared = dir.path().join("share/newbans.log");
    fs::write(&f2b_log, b"").unwrap();
    fs::create_dir(dir.path().join("share")).unwrap();
    fs::write(&shared, b"").unwrap();
    let child = spawn_daemon(dir.path(), follow, &state, |cmd| {
        cmd.args(["monitor", "--node", "me", "--fail2ban-log"])
            .arg(&f2b_log)
            .arg("--log")
            .arg(&shared)
            .arg("--metrics-file")
            .arg(f2b_log.with_file_name("monitor.prom"));
    });
    let idle = Idle {
        what: format!("the monitor on {}", follow.name()),
        process: Daemon(child),
        dir,
        log: f2b_log,
        append: log_ban_notice,
    };
    // Its first run starts at the end of fail2ban.log: append after that.
    wait_read_to_end(&idle.what, &state, &idle.log);
    idle.append_and_wait();
    idle
}

#[test]
fn idle_watchers_and_monitors_use_no_measurable_cpu() {
    // All four at once: one idle period for all of them.
    let starts = [
        || watcher(Follow::Inotify),
        || watcher(Follow::Poll),
        || monitor(Follow::Inotify),
        || monitor(Follow::Poll),
    ];
    let idle: Vec<Idle> = starts
        .map(thread::spawn)
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let before: Vec<Duration> = idle
        .iter()
        .map(|i| support::cpu_time(i.process.0.id()))
        .collect();
    thread::sleep(IDLE);
    let used: Vec<(String, Duration)> = idle
        .iter()
        .zip(before)
        .map(|(i, before)| (i.what.clone(), support::cpu_time(i.process.0.id()) - before))
        .collect();
    for (what, cpu) in &used {
        eprintln!("{what}: {cpu:?} of CPU in {IDLE:?} idle");
    }
    for i in &idle {
        i.append_and_wait();
    }
    for (what, cpu) in &used {
        assert!(
            *cpu <= MAX_IDLE_CPU,
            "{what} used {cpu:?} of CPU in {IDLE:?} with nothing to do (at most {MAX_IDLE_CPU:?}); all: {used:?}"
        );
    }
}

/// A publisher and a watcher following it over ZeroMQ, on this host's
/// loopback, both idle after one record.
#[test]
fn an_idle_publisher_and_its_zmq_watcher_use_no_measurable_cpu() {
    let dir = tempfile::tempdir().unwrap();
    // Ports of this test run's own, so parallel runs do not collide.
    let base = 20000 + (std::process::id() % 4000) as u16 * 10;
    let ports = [base, base + 1, base + 2, base + 3];
    let config = dir.path().join("banshare.toml");
    fs::write(
        &config,
        format!(
            "[watch]\nsafety_poll = \"1h\"\n[zmq]\ncatch_up_port = {}\nfeed_port = {}\n",
            ports[1], ports[3]
        ),
    )
    .unwrap();
    let publisher = Daemon(
        support::local_publisher(&dir.path().join("publisher"), ports)
            .spawn()
            .unwrap(),
    );
    let url = format!("zmq+tcp://127.0.0.1:{}", ports[0]);
    let state = dir.path().join("state");
    let watcher = Daemon(
        Command::new(BANSHARE)
            .arg("--config")
            .arg(&config)
            .args([
                "--quiet",
                "watch",
                "--backend",
                "log",
                "--node",
                "me",
                "--log",
                &url,
            ])
            .arg("--state-dir")
            .arg(&state)
            .arg("--spool-dir")
            .arg(dir.path().join("spool"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ban = |address: &str| {
        run_ok(
            Command::new(BANSHARE)
                .arg("--config")
                .arg(&config)
                .args(["--quiet", "ban", address, "--node", "other", "--log", &url])
                .arg("--spool-dir")
                .arg(dir.path().join("spool-other")),
        );
    };
    let applied = |n: u64| wait_until(Duration::from_secs(20), || saved_offset(&state) == Some(n));
    ban("192.0.2.7");
    assert!(applied(1), "the watcher never saved record 1");
    let processes = [("the publisher", &publisher), ("the zmq watcher", &watcher)];
    let before: Vec<Duration> = processes
        .iter()
        .map(|(_, p)| support::cpu_time(p.0.id()))
        .collect();
    thread::sleep(IDLE);
    let used: Vec<(&str, Duration)> = processes
        .iter()
        .zip(before)
        .map(|((what, p), before)| (*what, support::cpu_time(p.0.id()) - before))
        .collect();
    eprintln!("{used:?} of CPU in {IDLE:?} idle");
    ban("192.0.2.8");
    assert!(applied(2), "the watcher stopped taking records");
    for (what, cpu) in &used {
        assert!(
            *cpu <= MAX_IDLE_CPU,
            "{what} used {cpu:?} of CPU in {IDLE:?} with nothing to do; all: {used:?}"
        );
    }
}
