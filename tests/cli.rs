//! The real `banshare` binary, run in temporary folders on one host: usage
//! errors, delivery, spooling and flush, the lock under concurrency, and a
//! writer killed while it holds the lock.

mod support;

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use banshare::record::{self, Op};
use support::{BANSHARE, read_records, wait_until};

fn banshare() -> Command {
    let mut cmd = Command::new(BANSHARE);
    // Never read the host's real configuration.
    cmd.arg("--config").arg("/dev/null");
    cmd
}

/// A temporary log, spool and the flags that point at them.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::write(site.log(), b"").unwrap();
        site
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("newbans.log")
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = banshare();
        cmd.args(args)
            .arg("--log")
            .arg(self.log())
            .arg("--spool-dir")
            .arg(self.spool())
            .args(["--node", "testnode"]);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn records(&self) -> Vec<record::Record> {
        read_records(&self.log())
    }

    /// The targets of the log's records, in order.
    fn targets(&self) -> Vec<String> {
        self.records()
            .iter()
            .map(|r| r.target.to_string())
            .collect()
    }

    fn spooled_files(&self) -> usize {
        match fs::read_dir(self.spool()) {
            Ok(dir) => dir
                .filter(|e| {
                    !e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with('.')
                })
                .count(),
            Err(_) => 0,
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn ban_and_unban_append_records() {
    let site = Site::new();
    let out = site.run(&[
        "ban",
        "192.0.2.1",
        "2001:db8::/48",
        "-p",
        "22",
        "-j",
        "sshd",
        "-b",
        "30m",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = site.run(&["unban", "192.0.2.1", "-p", "22", "-j", "sshd"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = site.records();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].op, Op::Ban);
    assert_eq!(
        records[0].fields.bantime,
        Some(record::BanTime::Seconds(1800))
    );
    assert_eq!(
        records[0].fields.node.as_ref().unwrap().as_str(),
        "testnode"
    );
    assert_eq!(records[2].op, Op::Unban);
    let ids: HashSet<_> = records
        .iter()
        .map(|r| r.fields.id.clone().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "every record has its own id");
}

#[test]
fn stdin_batch_is_one_append() {
    let site = Site::new();
    let mut child = site
        .cmd(&["ban", "-", "-j", "recidive"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"# attackers\n192.0.2.1\n\n198.51.100.0/24\n2001:db8::5\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(site.records().len(), 3);
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let site = Site::new();
    let cases: &[&[&str]] = &[
        &["ban", "1.2.3"],
        &["ban", "999.1.1.1"],
        &["ban", "1.2.3.4;rm"],
        &["ban", "$(id)"],
        &["ban", "`id`"],
        &["ban", "1.2.3.4/24"],
        &["ban", "1.2.3.4", "--port", "22;reboot"],
        &["ban", "1.2.3.4", "--port", "70000"],
        &["ban", "1.2.3.4", "--jail", "a b"],
        &["ban", "1.2.3.4", "--bantime", "soon"],
        &["ban", "1.2.3.4", "--node", "$(id)"],
        &[
            "ban",
            "1.2.3.4",
            "--lock-timeout",
            "1s",
            "--stale-lock",
            "5s",
        ],
        &["ban"],
        &["ban", "1.2.3.4", "--no-such-flag"],
        &["unban", "1.2.3.4\n5.6.7.8"],
        &["frobnicate"],
    ];
    for args in cases {
        let out = site.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(err.starts_with("banshare: error: "), "{args:?}: {err}");
    }
    for input in [
        &b"1.2.3.4\n1.2.3\n"[..],
        b"1.2.3.4\n$(reboot)\n",
        b"\n",
        b"1.2.3.4\n\xff\n",
    ] {
        let mut child = site
            .cmd(&["ban", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{input:?}: {}", stderr(&out));
    }
    assert_eq!(fs::read(site.log()).unwrap(), b"", "nothing may be written");
    assert_eq!(site.spooled_files(), 0, "nothing may be spooled");
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let site = Site::new();
    let config = site.dir.path().join("banshare.toml");
    fs::write(&config, "[append]\nlock_timout = \"3s\"\n").unwrap();
    let out = Command::new(BANSHARE)
        .args(["--config", config.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("lock_timout"), "{}", stderr(&out));
    let missing = Command::new(BANSHARE)
        .args(["--config", "/nonexistent/banshare.toml", "config", "check"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn a_curve_key_file_others_can_read_is_a_config_error_before_anything_is_written() {
    let site = Site::new();
    let key = site.dir.path().join("node.curve");
    let keygen = Command::new(BANSHARE)
        .args(["--config", "/dev/null", "curve-keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let server = String::from_utf8(keygen.stdout).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    }
    let config = site.dir.path().join("banshare.toml");
    let text = format!(
        "[zmq]\ncurve_server_key = {:?}\ncurve_key_file = {:?}\n",
        server.trim(),
        key
    );
    fs::write(&config, text).unwrap();
    let spool = site.dir.path().join("spool");
    let out = Command::new(BANSHARE)
        .arg("--config")
        .arg(&config)
        .args([
            "ban",
            "192.0.2.1",
            "--node",
            "a",
            "--log",
            "zmq+tcp://127.0.0.1:9",
        ])
        .arg("--spool-dir")
        .arg(&spool)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("zmq.curve_key_file"),
        "{}",
        stderr(&out)
    );
    assert!(!spool.exists(), "it wrote its spool");
}

#[test]
fn config_file_values_apply_and_flags_override_them() {
    let site = Site::new();
    let config = site.dir.path().join("banshare.toml");
    let text = format!(
        "[common]\nlog = {:?}\nnode = \"fromfile\"\nspool_dir = {:?}\n[append]\njail = \"sshd\"\nport = \"ssh\"\nbantime = 600\n",
        site.log(),
        site.spool()
    );
    fs::write(&config, text).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(BANSHARE)
            .args(["--config", config.to_str().unwrap(), "ban", "192.0.2.9"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    run(&[]);
    run(&["--node", "fromflag", "--jail", "recidive"]);
    let records = site.records();
    assert_eq!(
        records[0].fields.node.as_ref().unwrap().as_str(),
        "fromfile"
    );
    assert_eq!(records[0].fields.jail.as_ref().unwrap().as_str(), "sshd");
    assert_eq!(records[0].ports.to_string(), "ssh");
    assert_eq!(
        records[0].fields.bantime,
        Some(record::BanTime::Seconds(600))
    );
    assert_eq!(
        records[1].fields.node.as_ref().unwrap().as_str(),
        "fromflag"
    );
    assert_eq!(
        records[1].fields.jail.as_ref().unwrap().as_str(),
        "recidive"
    );
}

#[test]
fn missing_log_spools_then_flush_delivers_exactly_once() {
    let site = Site::new();
    fs::remove_file(site.log()).unwrap();
    for i in 0..5 {
        let out = site.run(&["ban", &format!("192.0.2.{i}")]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("spooled"), "{}", stderr(&out));
    }
    assert!(!site.log().exists(), "banshare must never create the log");
    assert_eq!(site.spooled_files(), 5);

    let out = site.run(&["flush"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "flush with the log still missing fails"
    );

    fs::write(site.log(), b"").unwrap();
    let out = site.run(&["flush"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = site.run(&["flush"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let addresses: Vec<String> = site.targets();
    assert_eq!(
        addresses,
        (0..5).map(|i| format!("192.0.2.{i}")).collect::<Vec<_>>(),
        "in order, once each"
    );
    assert_eq!(site.spooled_files(), 0);
}

#[test]
fn new_ban_queues_behind_older_spooled_ones() {
    let site = Site::new();
    fs::rename(site.log(), site.dir.path().join("away")).unwrap();
    assert!(site.run(&["ban", "192.0.2.1"]).status.success());
    fs::rename(site.dir.path().join("away"), site.log()).unwrap();
    let out = site.run(&["ban", "192.0.2.2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let addresses: Vec<String> = site.targets();
    assert_eq!(addresses, ["192.0.2.1", "192.0.2.2"]);
    assert_eq!(site.spooled_files(), 0);
}

#[test]
fn unspoolable_record_is_a_runtime_failure() {
    let site = Site::new();
    fs::remove_file(site.log()).unwrap();
    fs::write(site.spool(), b"not a directory").unwrap();
    let out = site.run(&["ban", "192.0.2.1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn interrupted_delivery_is_recovered_by_id() {
    let site = Site::new();
    fs::remove_file(site.log()).unwrap();
    assert!(
        site.run(&["ban", "192.0.2.1", "192.0.2.2"])
            .status
            .success()
    );
    // Simulate a crash after the append but before the spool file was
    // removed: the batch is in the log and marked uncertain in the spool.
    let entry = fs::read_dir(site.spool())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pending"))
        .unwrap();
    let batch = fs::read(&entry).unwrap();
    let first_line = batch
        .split_inclusive(|&b| b == b'\n')
        .next()
        .unwrap()
        .to_vec();
    fs::write(site.log(), &first_line).unwrap();
    fs::rename(&entry, entry.with_extension("uncertain")).unwrap();
    let out = site.run(&["flush"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 found already"), "{}", stderr(&out));
    let addresses: Vec<String> = site.targets();
    assert_eq!(addresses, ["192.0.2.1", "192.0.2.2"]);
}

#[test]
fn concurrent_local_writers_never_tear_or_lose_lines() {
    let site = Site::new();
    // 12 writers, each running `banshare ban` 50 times: 600 separate appends.
    std::thread::scope(|scope| {
        for w in 0..12 {
            let site = &site;
            scope.spawn(move || {
                for i in 0..50 {
                    let out = site.run(&["ban", &format!("10.{w}.0.{i}")]);
                    assert!(out.status.success(), "{}", stderr(&out));
                }
            });
        }
    });
    let records = site.records();
    assert_eq!(records.len(), 600);
    let unique: HashSet<String> = records.iter().map(|r| r.target.to_string()).collect();
    assert_eq!(unique.len(), 600, "no record lost or doubled");
    assert_eq!(site.spooled_files(), 0);
}

#[test]
fn writer_killed_holding_the_lock_is_broken_after_stale_timeout() {
    let site = Site::new();
    let lock = PathBuf::from(format!("{}.lock", site.log().display()));
    let mut holder = site
        .cmd(&[
            "ban",
            "192.0.2.66",
            "--stale-lock",
            "1s",
            "--lock-timeout",
            "10s",
        ])
        .env("BANSHARE_TEST_HOLD_LOCK_MS", "60000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || lock.exists()),
        "the holder never took the lock"
    );
    // The whole run: `ban` delivers from a child process of its own.
    support::kill_tree(&mut holder);
    assert!(lock.exists(), "a killed writer leaves its lock behind");

    let started = Instant::now();
    let out = site.run(&[
        "ban",
        "192.0.2.1",
        "--stale-lock",
        "1s",
        "--lock-timeout",
        "10s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("broke stale lock"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "broken only after the stale timeout"
    );
    let records = site.records();
    assert_eq!(records.len(), 1, "the killed writer wrote nothing");
    assert_eq!(records[0].target.to_string(), "192.0.2.1");
    assert!(!lock.exists());
}

#[test]
fn lock_never_won_within_timeout_spools() {
    let site = Site::new();
    let lock = PathBuf::from(format!("{}.lock", site.log().display()));
    // Other writers take the lock in turn, without pause: its content keeps
    // changing, so it is never stale, and this writer never wins it.
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Held before the writer starts, so it cannot win a race to it.
    fs::write(&lock, "banshare-lock node=busy pid=1 token=start since=x\n").unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut n = 0u64;
            let next = lock.with_extension("lock.next");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Renamed into place: a waiter never reads it half-written
                // (empty, between truncate and write, on a loaded machine).
                fs::write(
                    &next,
                    format!("banshare-lock node=busy pid=1 token={n} since=x\n"),
                )
                .unwrap();
                fs::rename(&next, &lock).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = fs::remove_file(&lock);
        });
        let out = site.run(&[
            "ban",
            "192.0.2.1",
            // Stale only after 1.5 s without a change: far longer than
            // the 10 ms between changes, even on a loaded machine.
            "--lock-timeout",
            "2s",
            "--stale-lock",
            "1500ms",
        ]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stderr(&out).contains("spooled"), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("node=busy"),
            "the warning names the holder: {}",
            stderr(&out)
        );
    });
    assert_eq!(fs::read(site.log()).unwrap(), b"");
    assert_eq!(site.spooled_files(), 1);
}

#[test]
fn help_is_complete_for_every_command() {
    for args in [
        &["--help"][..],
        &["ban", "--help"],
        &["unban", "--help"],
        &["flush", "--help"],
        &["config", "check", "--help"],
        &["demo", "--help"],
    ] {
        let out = banshare().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: banshare"), "{args:?}: {text}");
    }
    let top = banshare().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(text.contains("EXIT STATUS"), "{text}");
    let ban = banshare().args(["ban", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&ban.stdout);
    for flag in [
        "--port",
        "--jail",
        "--bantime",
        "--log",
        "--node",
        "--spool-dir",
        "--lock-timeout",
        "--stale-lock",
    ] {
        assert!(text.contains(flag), "ban --help lacks {flag}");
    }
}

#[test]
fn demo_runs_without_root() {
    let out = banshare().arg("demo").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("198.51.100.77"), "{text}");
}

#[test]
fn failed_lock_release_after_the_write_is_not_a_failed_append() {
    let site = Site::new();
    let lock = PathBuf::from(format!("{}.lock", site.log().display()));
    let holder = site
        .cmd(&["ban", "192.0.2.1"])
        .env("BANSHARE_TEST_HOLD_LOCK_MS", "1000")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || lock.exists()),
        "the writer never took the lock"
    );
    // Reading a directory fails with EISDIR: the release after the write
    // hits an I/O error, as on a mount that dies at that moment.
    fs::remove_file(&lock).unwrap();
    fs::create_dir(&lock).unwrap();
    let out = holder.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("releasing the lock failed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read_records(&site.log()).len(), 1);
    assert_eq!(
        site.spooled_files(),
        0,
        "a written batch must not be spooled again"
    );
}

/// Runs `cmd` with its standard output a pipe whose reader is already
/// gone, as in `banshare status | head -1` once head has exited.
fn output_to_closed_pipe(cmd: &mut Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cmd.stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// Runs `cmd` with its standard output on a full disk.
fn output_to_full_disk(cmd: &mut Command) -> Output {
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    cmd.stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// A closed pipe ends the command quietly, as SIGPIPE ends Unix tools; a
/// full disk is one error line and status 1. Never a panic (status 101).
fn assert_quiet_on_closed_pipe_and_one_line_on_full_disk(mut cmd: impl FnMut() -> Command) {
    let out = output_to_closed_pipe(&mut cmd());
    assert_ne!(out.status.code(), Some(101), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "a closed pipe is not an error to report");
    let out = output_to_full_disk(&mut cmd());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("banshare: error: ") && err.contains("No space left"),
        "{err}"
    );
}

#[test]
fn ban_refuses_addresses_no_watcher_applies() {
    let site = Site::new();
    fs::remove_file(site.log()).unwrap();
    // With the log missing, anything accepted would be spooled: so an empty
    // spool proves the refusal came before delivery.
    for address in [
        "0.0.0.0/0",
        "::/0",
        "0.0.0.0",
        "::",
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "ff02::1",
        "255.255.255.255",
        "169.254.1.1",
        "fe80::1",
        "127.0.0.0/16",
        // Wider than the default max_prefix_v4 (16) and max_prefix_v6 (48).
        "10.0.0.0/8",
        "2001:db8::/32",
    ] {
        for op in ["ban", "unban"] {
            let out = site.run(&[op, "192.0.2.1", address]);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{op} {address}: {}",
                stderr(&out)
            );
            let err = stderr(&out);
            assert_eq!(err.trim_end().lines().count(), 1, "{address}: {err}");
            assert!(
                err.starts_with("banshare: error: ") && err.contains(address),
                "{address}: {err}"
            );
        }
        let mut child = site
            .cmd(&["ban", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let input = format!("192.0.2.1\n{address}\n");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "stdin {address}: {}",
            stderr(&out)
        );
    }
    assert_eq!(site.spooled_files(), 0, "nothing may be spooled");
    fs::write(site.log(), b"").unwrap();
    let out = site.run(&["ban", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(fs::read(site.log()).unwrap(), b"", "nothing may be written");
    // A node that allows its watcher wider networks may share them.
    let config = site.dir.path().join("wide.toml");
    fs::write(&config, "[watch]\nmax_prefix_v4 = 8\n").unwrap();
    let out = Command::new(BANSHARE)
        .arg("--config")
        .arg(&config)
        .args(["ban", "10.0.0.0/8", "--node", "n1", "--log"])
        .arg(site.log())
        .arg("--spool-dir")
        .arg(site.spool())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn config_check_refuses_what_watch_refuses() {
    let site = Site::new();
    let cases = [
        ("[watch]\nbackend = \"frobnicate\"\n", "watch.backend"),
        (
            "[watch]\nbackend = \"log\"\n[trust]\nkeys = \"/nonexistent/trusted_keys\"\n",
            "trust.keys",
        ),
        (
            "[watch]\nbackend = \"command\"\n[backend.command]\nban = [\"/bin/true\", \"{nope}\", \"{ip}\"]\nunban = [\"/bin/true\", \"{ip}\"]\n",
            "backend.command",
        ),
    ];
    for (text, key) in cases {
        let config = site.dir.path().join("banshare.toml");
        let text = format!(
            "[common]\nlog = {:?}\nnode = \"n1\"\nspool_dir = {:?}\n{text}",
            site.log(),
            site.spool(),
        )
        .replace(
            "[watch]\n",
            &format!("[watch]\nstate_dir = {:?}\n", site.dir.path().join("state")),
        );
        fs::write(&config, &text).unwrap();
        for args in [&["config", "check"][..], &["watch"]] {
            let mut cmd = Command::new(BANSHARE);
            cmd.arg("--config").arg(&config).args(args);
            let out = run_with_deadline(&mut cmd, Duration::from_secs(20));
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?} {key}: {}",
                stderr(&out)
            );
            let err = stderr(&out);
            assert!(
                err.contains(key),
                "{args:?}: the key {key} is not named: {err}"
            );
            assert!(
                !err.contains("--backend"),
                "{args:?}: names the flag: {err}"
            );
        }
    }
}

/// `config check` approved a `common.key` that every `ban` (fail2ban's
/// action) and the monitor then refused with exit 2.
#[test]
fn config_check_refuses_a_signing_key_that_ban_refuses() {
    let site = Site::new();
    let garbage = site.dir.path().join("garbage.key");
    fs::write(&garbage, "not a key\n").unwrap();
    for key in [site.dir.path().join("missing.key"), garbage] {
        let config = site.dir.path().join("banshare.toml");
        let text = format!(
            "[common]\nlog = {:?}\nnode = \"n1\"\nspool_dir = {:?}\nkey = {key:?}\n",
            site.log(),
            site.spool(),
        );
        fs::write(&config, &text).unwrap();
        for args in [&["config", "check"][..], &["ban", "192.0.2.1"]] {
            let out = Command::new(BANSHARE)
                .arg("--config")
                .arg(&config)
                .args(args)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        }
        let out = Command::new(BANSHARE)
            .arg("--config")
            .arg(&config)
            .args(["config", "check"])
            .output()
            .unwrap();
        assert!(stderr(&out).contains("common.key"), "{}", stderr(&out));
    }
}

/// Exit 2 promises that nothing was written: a watcher refused for its
/// configuration left its state directory (and a lock file) behind.
#[test]
fn watch_or_monitor_refused_for_its_configuration_creates_no_state_directory() {
    let site = Site::new();
    let state = site.dir.path().join("state");
    let keys = site.dir.path().join("missing_keys");
    let cases: [&[&str]; 3] = [
        &[],
        &["--backend", "frobnicate"],
        &["--backend", "log", "--config", "KEYS"],
    ];
    let config = site.dir.path().join("banshare.toml");
    fs::write(&config, format!("[trust]\nkeys = {keys:?}\n")).unwrap();
    for extra in cases {
        let extra: Vec<&str> = extra
            .iter()
            .map(|a| {
                if *a == "KEYS" {
                    config.to_str().unwrap()
                } else {
                    a
                }
            })
            .collect();
        let mut cmd = Command::new(BANSHARE);
        cmd.arg("watch")
            .args(&extra)
            .arg("--log")
            .arg(site.log())
            .arg("--state-dir")
            .arg(&state);
        let out = run_with_deadline(&mut cmd, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(!state.exists(), "{extra:?} created {}", state.display());
    }
    // The monitor, refused for its signing key.
    fs::write(&config, "[common]\nkey = \"/nonexistent/node.key\"\n").unwrap();
    let mut cmd = Command::new(BANSHARE);
    cmd.arg("--config")
        .arg(&config)
        .arg("monitor")
        .arg("--log")
        .arg(site.log())
        .arg("--fail2ban-log")
        .arg(site.dir.path().join("fail2ban.log"))
        .arg("--state-dir")
        .arg(&state);
    let out = run_with_deadline(&mut cmd, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "monitor: {}", stderr(&out));
    assert!(!state.exists(), "monitor created {}", state.display());
}

/// Runs `cmd` to its end, killing it if it outlives `deadline` (a command
/// that should have refused to start runs forever instead).
fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ended = wait_until(deadline, || child.try_wait().unwrap().is_some());
    if !ended {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "still running after {deadline:?}: {}", stderr(&out));
    out
}

#[test]
fn closed_pipe_exits_quietly_and_full_stdout_is_one_error() {
    assert_quiet_on_closed_pipe_and_one_line_on_full_disk(|| {
        let mut cmd = banshare();
        cmd.args(["config", "check"]);
        cmd
    });
    let tmp = tempfile::tempdir().unwrap();
    assert_quiet_on_closed_pipe_and_one_line_on_full_disk(|| {
        let mut cmd = banshare();
        cmd.arg("demo").env("TMPDIR", tmp.path());
        cmd
    });
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "the demo left its temporary folder behind"
    );
}

#[test]
fn missing_required_argument_is_named() {
    let site = Site::new();
    for (mut cmd, name) in [(site.cmd(&["ban"]), "<ADDRESS>"), (banshare(), "--out")] {
        if name == "--out" {
            cmd.arg("keygen");
        }
        let out = cmd.output().unwrap();
        let args = cmd.get_args().collect::<Vec<_>>();
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        assert!(err.contains(name), "{args:?}: {name} not named: {err}");
    }
}

#[test]
fn zero_poll_interval_is_refused() {
    let site = Site::new();
    let state = site.dir.path().join("state");
    let mut cmd = site.cmd(&[
        "watch",
        "--backend",
        "log",
        "--poll-interval",
        "0",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let out = run_with_deadline(&mut cmd, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--poll-interval"), "{}", stderr(&out));

    // The same in the configuration file, for every interval a loop or
    // the spool's flusher sleeps: a millisecond is as good as a spin.
    for key in ["poll_interval", "safety_poll", "flush_interval"] {
        let config = site.dir.path().join("banshare.toml");
        fs::write(&config, format!("[watch]\n{key} = \"1ms\"\n")).unwrap();
        let mut cmd = Command::new(BANSHARE);
        cmd.arg("--config")
            .arg(&config)
            .args(["watch", "--backend", "log", "--state-dir"])
            .arg(&state)
            .arg("--log")
            .arg(site.log());
        let out = run_with_deadline(&mut cmd, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{key}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("watch.{key}")),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn bantime_errors_name_the_value_given_and_overlong_ones_are_clamped() {
    let site = Site::new();
    let out = site.run(&["ban", "192.0.2.1", "-b", "500ms"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("500ms") && !err.contains("\"0\""), "{err}");
    let out = site.run(&["ban", "192.0.2.1", "-b", "11y"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    let records = site.records();
    assert_eq!(
        records[0].fields.bantime,
        Some(record::BanTime::Seconds(record::MAX_BANTIME_SECS)),
        "clamped to the longest bantime, not made permanent"
    );
    let config = site.dir.path().join("banshare.toml");
    fs::write(&config, "[append]\nbantime = \"11y\"\n").unwrap();
    let out = Command::new(BANSHARE)
        .args(["--config", config.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("append.bantime"), "{}", stderr(&out));
}

#[test]
fn a_log_that_cannot_be_checked_is_not_called_missing() {
    let site = Site::new();
    fs::remove_file(site.log()).unwrap();
    // stat fails with ELOOP, not ENOENT: something is there.
    std::os::unix::fs::symlink(site.log(), site.log()).unwrap();
    let out = site.run(&["ban", "192.0.2.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("spooled"), "{err}");
    assert!(!err.contains("does not exist"), "{err}");
}

#[test]
fn spool_warning_counts_the_older_batches() {
    let site = Site::new();
    fs::remove_file(site.log()).unwrap();
    assert!(site.run(&["ban", "192.0.2.1"]).status.success());
    let out = site.run(&["ban", "192.0.2.2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("behind 1 older batch"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_creates_nothing_and_fails_when_no_watcher_runs() {
    let site = Site::new();
    let state = site.dir.path().join("state");
    let status = |extra: &[&str]| {
        let mut cmd = banshare();
        cmd.args(["status", "--state-dir"])
            .arg(&state)
            .arg("--spool-dir")
            .arg(site.spool())
            .args(extra);
        cmd
    };
    let out = status(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!state.exists(), "status created {}", state.display());
    assert!(!site.spool().exists(), "status created the spool");

    let mut w = support::watcher::Watcher::start(&[]);
    let state = w.dir.path().join("state");
    assert!(
        wait_until(Duration::from_secs(20), || state
            .join("status.json")
            .exists()),
        "the watcher wrote no status"
    );
    let status = |extra: &[&str]| {
        let mut cmd = banshare();
        cmd.args(["status", "--state-dir"]).arg(&state).args(extra);
        cmd
    };
    let out = status(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_quiet_on_closed_pipe_and_one_line_on_full_disk(|| status(&[]));
    assert_quiet_on_closed_pipe_and_one_line_on_full_disk(|| status(&["--json"]));
    w.stop();
    let out = status(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));

    // A watcher killed outright leaves its pid in status.json, and another
    // process may get that pid: only the state folder's lock tells.
    let saved = state.join("status.json");
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    value["pid"] = std::process::id().into();
    std::fs::write(&saved, value.to_string()).unwrap();
    let out = status(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));
}

#[test]
fn os_errors_are_printed_once() {
    let site = Site::new();
    let out = banshare()
        .args([
            "ban",
            "192.0.2.1",
            "--node",
            "n1",
            "--spool-dir",
            "/etc/passwd/spool",
        ])
        .arg("--log")
        .arg(site.log())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
}

#[test]
fn monitor_does_not_share_addresses_no_watcher_applies() {
    let site = Site::new();
    let f2b_log = site.dir.path().join("fail2ban.log");
    fs::write(&f2b_log, b"").unwrap();
    let state = site.dir.path().join("monitor");
    let monitor = site
        .cmd(&["monitor", "--fail2ban-log", f2b_log.to_str().unwrap()])
        .arg("--state-dir")
        .arg(&state)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its first run starts at the end of fail2ban.log, once the cursor is
    // saved. (Stopped below whatever happens.)
    let started = wait_until(Duration::from_secs(20), || {
        state.join("cursor.json").exists()
    });
    let line = |ip: &str| {
        format!("2026-11-21 18:41:45,928 fail2ban.actions [752]: NOTICE [sshd] Ban {ip}\n")
    };
    let shared = started && {
        let mut f = fs::OpenOptions::new().append(true).open(&f2b_log).unwrap();
        use std::io::Write;
        f.write_all((line("127.0.0.1") + &line("192.0.2.9")).as_bytes())
            .unwrap();
        wait_until(Duration::from_secs(20), || {
            fs::read(site.log()).is_ok_and(|d| !d.is_empty())
        })
    };
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(monitor.id() as i32, libc::SIGTERM) };
    let out = monitor.wait_with_output().unwrap();
    assert!(shared, "nothing shared: {}", stderr(&out));
    let targets: Vec<String> = site.targets();
    assert_eq!(targets, ["192.0.2.9"], "{}", stderr(&out));
    assert!(
        stderr(&out).contains("127.0.0.1") && stderr(&out).contains("loopback"),
        "{}",
        stderr(&out)
    );
}

/// The spool's journals (`*.journal`): runs whose delivery is not confirmed.
fn journals(site: &Site) -> Vec<PathBuf> {
    fs::read_dir(site.spool())
        .map(|dir| {
            dir.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "journal"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn ban_killed_while_waiting_for_the_lock_leaves_a_journal_that_flush_delivers_once() {
    let site = Site::new();
    let lock = PathBuf::from(format!("{}.lock", site.log().display()));
    // Another host holds the lock, and it is not stale for a long while.
    fs::write(&lock, "banshare-lock node=other pid=1 token=held since=x\n").unwrap();
    let mut waiter = site
        .cmd(&[
            "ban",
            "192.0.2.7",
            "--stale-lock",
            "50s",
            "--lock-timeout",
            "60s",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its journal exists before delivery starts. The log is on a local
    // disk, which does not hang the way a mount can: the run delivers in
    // its own process, with no child to walk away from.
    let started = wait_until(Duration::from_secs(10), || !journals(&site).is_empty());
    let forked = wait_until(Duration::from_secs(1), || {
        !support::children_of(waiter.id()).is_empty()
    });
    assert!(
        !forked,
        "a ban to a log on a local disk forked a delivery process"
    );

    // A flush while the run is alive must leave its journal to it.
    let out = site.run(&["flush", "--lock-timeout", "2s", "--stale-lock", "1s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    if started {
        assert_eq!(journals(&site).len(), 1, "the live run's journal was taken");
    }

    support::kill_tree(&mut waiter);
    fs::remove_file(&lock).unwrap();
    let out = site.run(&["flush"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = site.run(&["flush"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let delivered: Vec<String> = site.targets();
    assert_eq!(
        delivered,
        ["192.0.2.7"],
        "the killed run's record, delivered exactly once"
    );
    assert!(
        journals(&site).is_empty(),
        "the journal is gone after delivery"
    );
    assert_eq!(site.spooled_files(), 0);
}

/// A tmpfs of 64 KiB mounted on `path`, filled up; unmounted when dropped.
struct FullDisk(PathBuf);

impl FullDisk {
    fn mount(path: PathBuf) -> FullDisk {
        fs::create_dir_all(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot mount a tmpfs (needs root)");
        let disk = FullDisk(path);
        let filler = vec![0u8; 4096];
        let mut file = fs::File::create(disk.0.join(".filler")).unwrap();
        while std::io::Write::write_all(&mut file, &filler).is_ok() {}
        disk
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_spool_disk_does_not_stop_a_delivery_the_log_can_take() {
    let site = Site::new();
    let _full = FullDisk::mount(site.spool());
    let out = site.run(&["ban", "192.0.2.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let delivered: Vec<String> = site.targets();
    assert_eq!(delivered, ["192.0.2.1"]);
}

/// `cleanup` while a watcher runs would be undone within its safety poll
/// (the watcher sets a missing table up again and re-applies its bans), so
/// it refuses and says why; with the watcher stopped it cleans up.
#[test]
fn cleanup_refuses_while_a_watcher_runs_on_the_state_directory() {
    let mut w = support::watcher::Watcher::start(&[]);
    let state = w.state_dir();
    assert!(
        wait_until(Duration::from_secs(20), || w.status()["pid"].is_u64()),
        "the watcher wrote no status"
    );
    let config = w.dir.path().join("cleanup.toml");
    fs::write(
        &config,
        format!("[watch]\nstate_dir = {:?}\n", state.display().to_string()),
    )
    .unwrap();
    let cleanup = || {
        Command::new(BANSHARE)
            .arg("--config")
            .arg(&config)
            .args(["cleanup", "--backend", "log"])
            .output()
            .unwrap()
    };
    let out = cleanup();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stop it first") && stderr(&out).contains(&*state.to_string_lossy()),
        "{}",
        stderr(&out)
    );
    w.stop();
    let out = cleanup();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// The library's log lines obey the global level: `--quiet` keeps the
/// watcher's info lines off stderr but not its warnings, and `-v` adds
/// debug lines (each batch read from the log).
#[test]
fn quiet_and_verbose_rule_the_library_log_lines() {
    let site = Site::new();
    // Runs a watcher until its stderr shows `until`, and returns stderr.
    let watch = |level: &[&str], until: &str| -> String {
        let dir = tempfile::tempdir_in(site.dir.path()).unwrap();
        let (state, err_path) = (dir.path().join("state"), dir.path().join("stderr"));
        let mut args = level.to_vec();
        args.extend(["watch", "--backend", "log", "--state-dir"]);
        args.push(state.to_str().unwrap());
        let mut child = site
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let seen = wait_until(Duration::from_secs(20), || {
            let text = fs::read_to_string(&err_path).unwrap();
            text.contains(until) || child.try_wait().unwrap().is_some()
        });
        let _ = child.kill();
        let status = child.wait().unwrap();
        let text = fs::read_to_string(&err_path).unwrap();
        assert!(seen, "{level:?}: timed out waiting for {until:?}: {text}");
        assert!(
            status.code().is_none(),
            "{level:?}: exited {status}: {text}"
        );
        assert!(text.contains(until), "{level:?}: no {until:?} in: {text}");
        text
    };

    // A peer's ban, so that the watcher has a batch to apply: a debug line
    // would come before the info line that says it was applied.
    let out = banshare()
        .args(["ban", "192.0.2.9", "--node", "peer", "--log"])
        .arg(site.log())
        .arg("--spool-dir")
        .arg(site.spool())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let default = watch(&[], "banshare: applied");
    assert!(default.contains("banshare: watching "), "{default}");
    assert!(!default.contains("debug:"), "{default}");

    let verbose = watch(&["-v"], "banshare: debug: read 1 line(s) from the log");
    assert!(verbose.contains("banshare: watching "), "{verbose}");

    // A missing log is a warning, which --quiet still prints.
    fs::remove_file(site.log()).unwrap();
    let quiet = watch(&["--quiet"], "banshare: warning: cannot read the log");
    assert!(!quiet.contains("banshare: watching"), "{quiet}");
    assert!(!quiet.contains("debug:"), "{quiet}");
}

/// Under systemd, stderr is the journal's stream, named by JOURNAL_STREAM
/// (`<device>:<inode>`): lines then carry their syslog priority for the
/// journal. The variable alone, inherited by a fail2ban action whose stderr
/// is a pipe, changes nothing.
#[test]
fn priority_prefixes_only_when_stderr_is_the_journal_stream() {
    use std::os::unix::fs::MetadataExt;
    let site = Site::new();
    let err_path = site.dir.path().join("stderr");
    let flush_with = |journal_stream: &str| {
        let err = fs::File::create(&err_path).unwrap();
        let status = site
            .cmd(&["flush"])
            .env("JOURNAL_STREAM", journal_stream)
            .stderr(err)
            .status()
            .unwrap();
        assert!(status.success());
        fs::read_to_string(&err_path).unwrap()
    };
    let meta = fs::metadata(site.log()).unwrap();
    let elsewhere = format!("{}:{}", meta.dev(), meta.ino());
    let text = flush_with(&elsewhere);
    assert!(text.starts_with("banshare: flushed"), "{text}");
    let err_meta = fs::metadata(&err_path).unwrap();
    let here = format!("{}:{}", err_meta.dev(), err_meta.ino());
    let text = flush_with(&here);
    assert!(text.starts_with("<6>banshare: flushed"), "{text}");
}

/// A hung share blocks every call on it, with no way to cancel one: the
/// compaction timer's run would then never end. A log that blocks on open
/// (a FIFO with no writer, as a hung sshfs mount does) makes `compact`
/// give up after its `--timeout`, with exit 1 and a reason.
#[test]
fn compact_on_a_hung_log_gives_up_after_its_timeout() {
    let site = Site::new();
    let _ = fs::remove_file(site.log());
    let made = Command::new("mkfifo").arg(site.log()).status().unwrap();
    assert!(made.success(), "mkfifo");
    let mut child = site
        .cmd(&["compact", "--timeout", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    let ended = wait_until(Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(ended, "compact still blocked on the hung log");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.unwrap().code(), Some(1), "{err}");
    assert!(err.contains("not finished within 1s"), "{err}");
}

/// `banshare compact` on a local log: `--dry-run` lists every line's fate
/// and changes nothing; the real run keeps what is in force, byte for byte,
/// behind its marker line; a config file alone names the log (the timer
/// runs it with no arguments); bad arguments exit 2 before anything is
/// read; a ZeroMQ log is left to its publisher (exit 0, as the timer runs
/// there too); `--help` says what is kept, the lock and the exit statuses.
#[test]
fn compact_keeps_what_is_in_force_and_dry_run_only_lists() {
    let site = Site::new();
    let now = chrono::Utc::now();
    let ts = |ago: i64| {
        (now - chrono::Duration::seconds(ago)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let live = format!(
        "<13>Nov 30 10:00:00 banshare[1]: HOST 192.0.2.2 PORT 22 node=a ts={} bantime=3600 id=0000000000000002\n",
        ts(60)
    );
    let text = format!(
        "<13>Nov 30 10:00:00 banshare[1]: HOST 192.0.2.1 PORT 22 node=a ts={} bantime=600 id=0000000000000001\n{live}torn HOST 1\n",
        ts(7200)
    );
    fs::write(site.log(), &text).unwrap();
    let dry = site.run(&["compact", "--dry-run"]);
    assert!(dry.status.success(), "{dry:?}");
    let listed = String::from_utf8_lossy(&dry.stdout);
    assert!(listed.contains("drop\tdropped: ban over\t<13>"), "{listed}");
    assert!(
        listed.contains("keep\tkept: ban still in force\t<13>"),
        "{listed}"
    );
    assert!(
        listed.contains("drop\tdropped: not a record\ttorn"),
        "{listed}"
    );
    assert!(listed.contains("would compact"), "{listed}");
    assert_eq!(fs::read_to_string(site.log()).unwrap(), text);

    let config = site.dir.path().join("banshare.toml");
    fs::write(
        &config,
        format!(
            "[common]\nlog = {:?}\nspool_dir = {:?}\n",
            site.log(),
            site.spool()
        ),
    )
    .unwrap();
    let done = Command::new(BANSHARE)
        .arg("--config")
        .arg(&config)
        .arg("compact")
        .output()
        .unwrap();
    assert!(done.status.success(), "{done:?}");
    let after = fs::read_to_string(site.log()).unwrap();
    let (marker, rest) = after.split_once('\n').unwrap();
    assert!(marker.starts_with("# banshare-compacted "), "{marker}");
    assert_eq!(rest, live);

    for bad in [
        &["compact", "--clock-margin", "soon"][..],
        &["compact", "--max-bantime", "-1"],
        &["compact", "--bogus"],
    ] {
        let out = site.run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
    let no_log = banshare().arg("compact").output().unwrap();
    assert_eq!(no_log.status.code(), Some(2), "{no_log:?}");
    let zmq = banshare()
        .args(["compact", "--log", "zmq+tcp://127.0.0.1:5678"])
        .output()
        .unwrap();
    assert!(zmq.status.success(), "{zmq:?}");
    assert!(
        String::from_utf8_lossy(&zmq.stdout).contains("the publisher compacts its own log"),
        "{zmq:?}"
    );
    let missing = banshare()
        .args([
            "compact",
            "--log",
            "/nonexistent/newbans.log",
            "--spool-dir",
        ])
        .arg(site.spool())
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");

    let help = banshare().args(["compact", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for words in [
        "--dry-run",
        "max_bantime",
        "stale_lock",
        "posix-rename",
        "EXIT STATUS",
    ] {
        assert!(help.contains(words), "compact --help lacks {words}: {help}");
    }
}

/// Every file that holds a secret (the legacy token, a signing key, a
/// CURVE secret key) is refused when others than its owner can read it,
/// and every file that says whom to trust (the CURVE allow-list, the
/// trusted keys) when others can write it, as the CURVE secret key always
/// was: exit 2, one line naming the file and the fix, nothing written.
#[test]
fn secret_and_trust_files_others_can_read_or_change_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let dir = site.dir.path();
    let chmod = |path: &PathBuf, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    };
    let token = dir.join("token");
    fs::write(&token, "s3cret-token-0123456789\n").unwrap();
    let curve_key = dir.join("publisher.curve");
    let keygen = banshare()
        .args(["curve-keygen", "--out"])
        .arg(&curve_key)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let clients = dir.join("curve-clients");
    fs::write(&clients, String::from_utf8(keygen.stdout).unwrap()).unwrap();
    let signing_key = dir.join("node.key");
    let keygen = banshare()
        .args(["keygen", "--out"])
        .arg(&signing_key)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let trusted = dir.join("trusted-keys");
    fs::write(&trusted, &keygen.stdout).unwrap();
    let data = dir.join("data");
    let publisher = |extra: &[&std::ffi::OsStr], config: &str| {
        let config_file = dir.join("publisher.toml");
        fs::write(&config_file, config).unwrap();
        let mut cmd = Command::new(BANSHARE);
        cmd.arg("--config")
            .arg(&config_file)
            .args(["publisher", "--node", "pub1", "--submit-port", "46778"])
            .args(["--catch-up-port", "46779", "--legacy-port", "46780"])
            .args(["--feed-port", "46781", "--data-dir"])
            .arg(&data)
            .args(extra);
        run_with_deadline(&mut cmd, Duration::from_secs(10))
    };
    let token_args = [
        "--legacy".as_ref(),
        "token".as_ref(),
        "--token-file".as_ref(),
        token.as_os_str(),
    ];
    let curve_args = [
        "--curve-key".as_ref(),
        curve_key.as_os_str(),
        "--curve-clients".as_ref(),
        clients.as_os_str(),
    ];
    let key_args = ["--key".as_ref(), signing_key.as_os_str()];
    let trust = format!("[trust]\nkeys = {trusted:?}\n");
    // (the file, its mode, the flags, the configuration, the fix named)
    let cases: [(&PathBuf, u32, &[&std::ffi::OsStr], &str, &str); 6] = [
        (&token, 0o644, &token_args, "", "chmod 600"),
        (&token, 0o640, &token_args, "", "chmod 600"),
        (&clients, 0o666, &curve_args, "", "chmod go-w"),
        (&clients, 0o664, &curve_args, "", "chmod go-w"),
        (&signing_key, 0o644, &key_args, "", "chmod 600"),
        (&trusted, 0o646, &[], &trust, "chmod go-w"),
    ];
    for (file, mode, args, config, fix) in cases {
        chmod(file, mode);
        let out = publisher(args, config);
        let err = stderr(&out);
        let what = format!("{} (mode {mode:o})", file.display());
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(err.contains(&file.display().to_string()), "{what}: {err}");
        assert!(err.contains(fix), "{what}: {err}");
        assert!(!data.exists(), "{what}: the data directory was made");
        // Restored: an owner-only secret, a trust list others may read.
        chmod(file, if fix == "chmod 600" { 0o600 } else { 0o644 });
    }
    // All of them as they should be: the publisher starts.
    let config_file = dir.join("publisher.toml");
    fs::write(&config_file, &trust).unwrap();
    let mut child = Command::new(BANSHARE)
        .arg("--config")
        .arg(&config_file)
        .args(["publisher", "--node", "pub1", "--submit-port", "46778"])
        .args(["--catch-up-port", "46779", "--legacy-port", "46780"])
        .args(["--feed-port", "46781", "--data-dir"])
        .arg(&data)
        .args(token_args)
        .args(curve_args)
        .args(key_args)
        .args(["--legacy-submit-port", "46782"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = wait_until(Duration::from_secs(10), || {
        data.join("epoch").exists() || child.try_wait().unwrap().is_some()
    });
    let ended = child.try_wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        started && ended.is_none(),
        "the publisher did not start: {ended:?}"
    );
}

/// The packaged /etc/banshare/banshare.toml says `banshare config check`
/// "refuses (exit 2) what `watch`, `ban`, `monitor` or `publisher` would
/// refuse", and the issue asks the same. On that very file, as installed
/// (no log, no backend), every one of `ban`, `watch` and `monitor` exits 2,
/// while `config check` exits 0 and says nothing: the admin who follows
/// the file's advice is told all is well.
#[test]
fn config_check_on_the_packaged_default_says_what_watch_refuses() {
    let packaged = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/banshare.toml");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let watch = Command::new(BANSHARE)
        .args(["-c", packaged, "watch", "--state-dir"])
        .arg(&state)
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .output()
        .unwrap();
    assert_eq!(watch.status.code(), Some(2), "{watch:?}");
    let check = Command::new(BANSHARE)
        .args(["-c", packaged, "config", "check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success() || stderr.contains("log"),
        "watch refused it ({}), config check exit {:?}, stderr {stderr:?}",
        String::from_utf8_lossy(&watch.stderr).trim(),
        check.status.code()
    );
    // A host that runs only the ZeroMQ publisher needs no log or backend.
    let publisher = Command::new(BANSHARE)
        .args(["-c", packaged, "config", "check", "--for", "publisher"])
        .output()
        .unwrap();
    assert!(publisher.status.success(), "{publisher:?}");
    let bad = Command::new(BANSHARE)
        .args(["-c", packaged, "config", "check", "--for", "nobody"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}
