//! Shared helpers for integration tests.
//!
//! Every test binary that says `mod support;` compiles all of this, but each
//! uses only part of it; hence the `dead_code` allowance for this module.
#![allow(dead_code)]

pub mod cluster;
pub mod fail2ban;
pub mod nats;
pub mod nats_single;
pub mod nspawn;
pub mod prev;
pub mod prometheus;
pub mod pyzmq;
pub mod watcher;

use std::borrow::BorrowMut;
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

/// How often [`wait_until`] re-checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `cond` until it returns true or `timeout` has passed.
///
/// Returns whether the condition became true; callers panic with context of
/// their own when it did not. The condition is always checked once after the
/// deadline has passed, so a long sleep before the last poll is not a failure.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Runs `command` to its end and returns what it printed; panics with its
/// stderr if it failed.
pub fn run_ok(mut command: impl BorrowMut<Command>) -> Output {
    let command = command.borrow_mut();
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `banshare` binary under test.
pub const BANSHARE: &str = env!("CARGO_BIN_EXE_banshare");

/// Makes `sh` (a `Command` for `sh`, perhaps inside a namespace) run
/// `script`, in which `$B` is banshare with no config file and `$C` the
/// flags that point it at `log`, `spool` and node id `node`.
pub fn banshare_sh(mut sh: Command, script: &str, log: &Path, spool: &Path, node: &str) -> Command {
    sh.arg("-c")
        .arg(script)
        .env("B", format!("{BANSHARE} --config /dev/null --quiet"))
        .env(
            "C",
            format!(
                "--log {} --spool-dir {} --node {node}",
                log.display(),
                spool.display()
            ),
        );
    sh
}

/// Every line of the log as a record; panics on a torn or garbage line.
pub fn read_records(log: &Path) -> Vec<banshare::record::Record> {
    let data = std::fs::read(log).unwrap_or_else(|e| panic!("read {}: {e}", log.display()));
    data.split_inclusive(|&b| b == b'\n')
        .map(|l| {
            banshare::record::parse(l).unwrap_or_else(|e| {
                panic!("torn or bad line {:?}: {e}", String::from_utf8_lossy(l))
            })
        })
        .collect()
}

/// A `sh` loop for [`banshare_sh`]: `count` bans, one process each, to the
/// addresses 10.<writer>.<i / 250>.<i % 250>, with `extra` flags.
pub fn ban_loop(writer: usize, count: usize, extra: &str) -> String {
    format!(
        "set -e; i=0; while [ $i -lt {count} ]; do \
           $B ban 10.{writer}.$((i / 250)).$((i % 250)) $C {extra}; i=$((i + 1)); done"
    )
}

/// `banshare publisher` on this host, node `pub`, with its data in
/// `data_dir` and its ports (submit, catch-up, legacy, feed), quiet and
/// with no configuration file: spawn it into a [`Daemon`].
pub fn local_publisher(data_dir: &Path, ports: [u16; 4]) -> Command {
    let mut cmd = Command::new(BANSHARE);
    cmd.args(["--config", "/dev/null", "--quiet", "publisher"])
        .args(["--node", "pub", "--data-dir"])
        .arg(data_dir)
        .args(["--submit-port", &ports[0].to_string()])
        .args(["--catch-up-port", &ports[1].to_string()])
        .args(["--legacy-port", &ports[2].to_string()])
        .args(["--feed-port", &ports[3].to_string()])
        .stdout(std::process::Stdio::null());
    cmd
}

/// A child process (a watcher, a monitor) killed and reaped when dropped,
/// so a failing test leaves nothing running.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pids of `pid`'s children, read from /proc (each process's `ppid`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                // The command name in parentheses may hold spaces: the
                // fields after its closing parenthesis are state, ppid.
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.to_owned()))
                .and_then(|rest| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}

/// SIGKILLs `child` and everything it started (a `banshare ban` delivers
/// from a detached child process of its own), children first, and reaps
/// `child`: a whole run killed at once, as by a crash or the OOM killer.
pub fn kill_tree(child: &mut std::process::Child) {
    fn kill_descendants(pid: u32) {
        for p in children_of(pid) {
            // SAFETY: kill(2) has no memory effects.
            unsafe { libc::kill(p as libc::pid_t, libc::SIGSTOP) };
            kill_descendants(p);
            unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
        }
    }
    // Stopped first, so that it starts nothing new while we look.
    // SAFETY: as above, on our own unreaped child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGSTOP) };
    kill_descendants(child.id());
    let _ = child.kill();
    let _ = child.wait();
}

/// CPU time (user and system) used by process `pid` so far, from
/// `/proc/PID/stat`: for checking that an idle daemon stays idle.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}
