//! Health checks, with the real binary: `banshare doctor` finds and
//! explains what stops a node from sharing and applying bans (each problem
//! with its fix), and `banshare status` fails when the watcher is not
//! working, so that both can serve as a monitoring check.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::cluster::{Cluster, require_root};
use support::watcher::Watcher;
use support::{BANSHARE, wait_until};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` to its end, killing it if it outlives `deadline` (a command
/// that should have refused to start runs forever instead).
fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
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

/// `banshare doctor` with the same flags as the test watcher's, so that it
/// looks at what that watcher uses; `extra` flags come after them and win.
fn doctor(w: &Watcher, extra: &[&str]) -> Command {
    let dir = w.dir.path();
    let mut cmd = Command::new(BANSHARE);
    cmd.arg("--config")
        .arg(dir.join("banshare.toml"))
        .args(["doctor", "--node", "me", "--log"])
        .arg(dir.join("newbans.log"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .args(["--follow", "poll", "--poll-interval", "20ms"]);
    if !extra.contains(&"--backend") {
        cmd.args(["--backend", "log"]);
    }
    cmd.args(extra);
    cmd
}

/// What `doctor --json` found: every check, by name, with its status.
struct Findings {
    out: Output,
    checks: Vec<Value>,
}

impl Findings {
    fn of(mut cmd: Command) -> Findings {
        let out = cmd.arg("--json").output().unwrap();
        let value: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor --json printed no JSON ({e}): {}{}",
                stdout(&out),
                stderr(&out)
            )
        });
        let checks = value["checks"].as_array().cloned().unwrap_or_default();
        Findings { out, checks }
    }

    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    /// The findings of check `name` with `status` (ok, warning, problem).
    fn with(&self, name: &str, status: &str) -> Vec<&Value> {
        self.checks
            .iter()
            .filter(|c| c["check"] == name && c["status"] == status)
            .collect()
    }

    /// The one finding of `name` with `status`, whose detail contains every
    /// one of `words` and which says how to fix it, unless it is ok.
    fn expect(&self, name: &str, status: &str, words: &[&str]) -> &Value {
        let found = self.with(name, status);
        let finding = found
            .iter()
            .find(|c| {
                words
                    .iter()
                    .all(|w| c["detail"].as_str().unwrap().contains(w))
            })
            .unwrap_or_else(|| panic!("no {status} {name} with {words:?} in {self}"));
        if status != "ok" {
            let fix = finding["fix"].as_str().unwrap_or("");
            assert!(fix.len() > 10, "{name}: no fix given: {self}");
        }
        finding
    }

    fn problems(&self) -> Vec<&Value> {
        self.checks
            .iter()
            .filter(|c| c["status"] == "problem")
            .collect()
    }
}

impl std::fmt::Display for Findings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            writeln!(
                f,
                "{} {}: {} (fix: {})",
                c["status"], c["check"], c["detail"], c["fix"]
            )?;
        }
        write!(f, "stderr: {}", stderr(&self.out))
    }
}

/// A running watcher with a trusted keys file, and its first status
/// written: a healthy node.
fn healthy_watcher(keys_dir: &Path) -> Watcher {
    let keys = keys_dir.join("trusted_keys");
    let key = keys_dir.join("other.key");
    let out = support::run_ok(
        Command::new(BANSHARE)
            .args([
                "--config",
                "/dev/null",
                "keygen",
                "--node",
                "other",
                "--out",
            ])
            .arg(&key),
    );
    fs::write(&keys, &out.stdout).unwrap();
    let config = format!("[trust]\nkeys = {keys:?}\n");
    let w = Watcher::start_with(&config, &[]);
    let status = w.state_dir().join("status.json");
    assert!(
        wait_until(Duration::from_secs(20), || status.exists()),
        "the watcher wrote no status"
    );
    w
}

/// A watcher that is stopped (SIGSTOP: as one stuck in an uninterruptible
/// wait on a dead mount) still holds its state directory's lock, but it
/// does nothing; `status` said "running" and exited 0 all the same.
#[test]
fn status_fails_when_the_watcher_has_stopped_answering() {
    let mut w = Watcher::start(&[]);
    let state = w.state_dir();
    assert!(
        wait_until(Duration::from_secs(20), || state
            .join("status.json")
            .exists()),
        "the watcher wrote no status"
    );
    let status = || {
        Command::new(BANSHARE)
            .args(["--config", "/dev/null", "status", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap()
    };
    let pid = w.child.as_ref().unwrap().id() as i32;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Its last status, as written an hour ago.
    let saved = state.join("status.json");
    let mut value: Value = serde_json::from_slice(&fs::read(&saved).unwrap()).unwrap();
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    value["updated"] = hour_ago.to_rfc3339().into();
    fs::write(&saved, value.to_string()).unwrap();
    // And started an hour ago (its last sign of life but the status).
    support::run_ok(
        Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(state.join("lock")),
    );
    let out = status();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("NOT RESPONDING"), "{}", stdout(&out));
    // Running again, it writes its status within a second.
    assert!(
        wait_until(Duration::from_secs(10), || status().status.code()
            == Some(0)),
        "status did not recover once the watcher ran again"
    );
    w.stop();
}

/// `watch` refuses a state directory holding files of a newer banshare
/// (exit 2); `config check` approved the same configuration.
#[test]
fn config_check_refuses_the_state_directory_that_watch_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::write(state.join("cursor.json"), r#"{"version": 99}"#).unwrap();
    let log = dir.path().join("newbans.log");
    fs::write(&log, "").unwrap();
    let config = dir.path().join("banshare.toml");
    fs::write(
        &config,
        format!(
            "[common]\nlog = {log:?}\nnode = \"n1\"\nspool_dir = {:?}\n[watch]\nbackend = \"log\"\nstate_dir = {state:?}\n",
            dir.path().join("spool")
        ),
    )
    .unwrap();
    for args in [&["config", "check"][..], &["watch"]] {
        let mut cmd = Command::new(BANSHARE);
        cmd.arg("--config").arg(&config).args(args);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("version 99"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// Whatever configuration `watch` refuses (exit 2), doctor finds a
/// problem in, with the key that is wrong.
#[test]
fn doctor_finds_every_configuration_watch_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    fs::write(&log, "").unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    let cases = [
        (
            "[watch]\nbackend = \"frobnicate\"\n",
            "config",
            "watch.backend",
        ),
        (
            "[trust]\nkeys = \"/nonexistent/trusted_keys\"\n",
            "trust",
            "/nonexistent/trusted_keys",
        ),
        (
            "[trust]\nrequire_signed = true\n",
            "config",
            "require_signed",
        ),
        (
            "[backend.command]\nban = [\"/bin/true\", \"{nope}\"]\nunban = [\"/bin/true\", \"{ip}\"]\n[watch]\nbackend = \"command\"\n",
            "config",
            "backend.command",
        ),
        (
            "[common]\nkey = \"/nonexistent/node.key\"\n",
            "config",
            "common.key",
        ),
    ];
    for (text, check, key) in cases {
        let config = dir.path().join("banshare.toml");
        let text = match text.contains("[watch]") {
            true => text.replace("[watch]\n", &format!("[watch]\nstate_dir = {state:?}\n")),
            false => format!("{text}[watch]\nbackend = \"log\"\nstate_dir = {state:?}\n"),
        };
        fs::write(&config, &text).unwrap();
        let common = |cmd: &mut Command| {
            cmd.arg("--config")
                .arg(&config)
                .args(["--node", "n1", "--log"])
                .arg(&log)
                .arg("--spool-dir")
                .arg(dir.path().join("spool"));
        };
        // `ban` refuses a bad signing key; the watcher signs nothing.
        let refuser = if key == "common.key" {
            ["ban", "192.0.2.1"]
        } else {
            ["watch", "--backend"]
        };
        let mut refused = Command::new(BANSHARE);
        refused.arg("--config").arg(&config).args(refuser);
        if refuser[0] == "watch" {
            refused.arg(if key == "backend.command" {
                "command"
            } else {
                "log"
            });
        }
        common(&mut refused);
        let out = run_with_deadline(&mut refused, Duration::from_secs(20));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{refuser:?} {text}: {}",
            stderr(&out)
        );
        let mut cmd = Command::new(BANSHARE);
        cmd.arg("--config").arg(&config).arg("doctor");
        common(&mut cmd);
        let found = Findings::of(cmd);
        assert_eq!(found.code(), Some(1), "{text}: {found}");
        found.expect(check, "problem", &[key]);
    }
}

/// `publisher` refuses CURVE key files it cannot use (exit 2, before its
/// data directory is made); `config check` approved them.
#[test]
fn config_check_refuses_the_curve_files_that_publisher_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("publisher.curve");
    support::run_ok(
        Command::new(BANSHARE)
            .args(["--config", "/dev/null", "curve-keygen", "--out"])
            .arg(&key),
    );
    let clients = dir.path().join("clients");
    fs::write(&clients, "not a key\n").unwrap();
    let config = dir.path().join("banshare.toml");
    fs::write(
        &config,
        format!(
            "[publisher]\ndata_dir = {:?}\ncurve_key_file = {key:?}\ncurve_clients_file = {clients:?}\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    for args in [&["config", "check"][..], &["publisher", "--node", "pub"]] {
        let mut cmd = Command::new(BANSHARE);
        cmd.arg("--config").arg(&config).args(args);
        let out = run_with_deadline(&mut cmd, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("clients"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let mut cmd = Command::new(BANSHARE);
    cmd.arg("--config")
        .arg(&config)
        .args(["doctor", "--backend", "log"]);
    Findings::of(cmd).expect("config", "problem", &["publisher.curve_clients_file"]);
}

#[test]
fn doctor_is_all_ok_on_a_healthy_node_and_explains_each_problem() {
    let keys_dir = tempfile::tempdir().unwrap();
    let mut w = healthy_watcher(keys_dir.path());
    let key = keys_dir.path().join("other.key");
    w.share(
        "ban",
        "198.51.100.1",
        "other",
        &["--key", key.to_str().unwrap()],
    );
    w.expect("ban 198.51.100.1 ");

    let healthy = Findings::of(doctor(&w, &[]));
    assert_eq!(healthy.code(), Some(0), "{healthy}");
    for name in [
        "config", "log", "lock", "follow", "backend", "trust", "clock", "watcher", "spool",
    ] {
        assert!(
            !healthy.with(name, "ok").is_empty(),
            "no ok {name}: {healthy}"
        );
    }
    assert!(
        healthy.checks.iter().all(|c| c["status"] == "ok"),
        "{healthy}"
    );
    // The text form: one line per check, all ok.
    let out = doctor(&w, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).lines().all(|l| l.starts_with("ok ")),
        "{}",
        stdout(&out)
    );

    // nft missing from PATH.
    let mut cmd = doctor(&w, &["--backend", "nftables"]);
    cmd.env("PATH", "/nonexistent");
    let found = Findings::of(cmd);
    assert_eq!(found.code(), Some(1), "{found}");
    found.expect("backend", "problem", &["nft", "PATH"]);

    // The trusted keys file is gone.
    fs::rename(
        keys_dir.path().join("trusted_keys"),
        keys_dir.path().join("moved"),
    )
    .unwrap();
    let found = Findings::of(doctor(&w, &[]));
    assert_eq!(found.code(), Some(1), "{found}");
    found.expect("trust", "problem", &["trusted_keys", "does not exist"]);
    fs::rename(
        keys_dir.path().join("moved"),
        keys_dir.path().join("trusted_keys"),
    )
    .unwrap();
    // Anyone may add a key to it.
    let keys = keys_dir.path().join("trusted_keys");
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o666)).unwrap();
    let found = Findings::of(doctor(&w, &[]));
    found.expect("trust", "problem", &["mode 666", "ban in any node's name"]);
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o644)).unwrap();
    // Garbage in it.
    let good = fs::read(&keys).unwrap();
    fs::write(&keys, "other ed25519 nonsense\n").unwrap();
    let found = Findings::of(doctor(&w, &[]));
    found.expect(
        "trust",
        "problem",
        &["trusted_keys:1", "bad ed25519 public key"],
    );
    fs::write(&keys, good).unwrap();

    // A clock 10 minutes ahead: a node writing under libfaketime.
    support::run_ok(
        Command::new("faketime")
            .args(["+10 minutes", BANSHARE, "--config", "/dev/null", "--quiet"])
            .args(["ban", "198.51.100.2", "--node", "fast", "--log"])
            .arg(w.log())
            .arg("--spool-dir")
            .arg(w.dir.path().join("spool-fast")),
    );
    let found = Findings::of(doctor(&w, &[]));
    assert_eq!(found.code(), Some(4), "warnings only: {found}");
    found.expect("clock", "warning", &["fast", "ahead", "10m"]);
    // This host's own clock 10 minutes behind: every writer seems ahead,
    // and so does the log's folder.
    let mut cmd = Command::new("faketime");
    cmd.args(["-10 minutes"]);
    let inner = doctor(&w, &[]);
    cmd.arg(inner.get_program()).args(inner.get_args());
    let found = Findings::of(cmd);
    found.expect("clock", "warning", &["this host", "behind", "10m"]);

    // The watcher stopped.
    w.stop();
    let found = Findings::of(doctor(&w, &[]));
    assert_eq!(found.code(), Some(1), "{found}");
    found.expect("watcher", "problem", &["not running"]);
    assert_eq!(found.problems().len(), 1, "{found}");
}

/// The fail2ban backend bans through fail2ban's socket: doctor connects to
/// it.
#[test]
fn doctor_connects_to_fail2bans_socket() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    fs::write(&log, "").unwrap();
    let socket = dir.path().join("fail2ban.sock");
    let config = dir.path().join("banshare.toml");
    fs::write(
        &config,
        format!("[backend.fail2ban]\nsocket = {socket:?}\n"),
    )
    .unwrap();
    let run = || {
        let mut cmd = Command::new(BANSHARE);
        cmd.arg("--config")
            .arg(&config)
            .args(["doctor", "--node", "me", "--backend", "fail2ban", "--log"])
            .arg(&log)
            .arg("--state-dir")
            .arg(dir.path().join("state"));
        Findings::of(cmd)
    };
    run().expect("fail2ban", "problem", &["fail2ban.sock", "No such file"]);
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    run().expect("fail2ban", "ok", &["accepts connections"]);
}

/// A share that is not mounted leaves an empty local folder where the log
/// should be: doctor says so, and how to mount it.
#[test]
fn doctor_finds_an_unmounted_share_and_a_read_only_lock_folder() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    fs::create_dir(&share).unwrap();
    let log = share.join("newbans.log");
    let run = |log: &Path, wrap: Option<&str>| {
        let mut cmd = match wrap {
            // A private mount namespace: the read-only mount ends with it.
            Some(script) => {
                let mut cmd = Command::new("unshare");
                cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(format!("{script} && exec \"$@\""))
                    .arg("sh")
                    .arg(BANSHARE);
                cmd
            }
            None => Command::new(BANSHARE),
        };
        cmd.args([
            "--config",
            "/dev/null",
            "doctor",
            "--node",
            "me",
            "--backend",
            "log",
        ])
        .arg("--log")
        .arg(log)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--spool-dir")
        .arg(dir.path().join("spool"));
        Findings::of(cmd)
    };
    let found = run(&log, None);
    assert_eq!(found.code(), Some(1), "{found}");
    let share_text = share.display().to_string();
    let finding = found.expect("log", "problem", &["not mounted", &share_text]);
    assert!(
        finding["fix"].as_str().unwrap().contains("mount"),
        "{found}"
    );
    // A ban made meanwhile waits in the spool, which doctor counts.
    support::run_ok(
        Command::new(BANSHARE)
            .args([
                "--config",
                "/dev/null",
                "--quiet",
                "ban",
                "192.0.2.1",
                "--node",
                "me",
                "--log",
            ])
            .arg(&log)
            .arg("--spool-dir")
            .arg(dir.path().join("spool")),
    );
    run(&log, None).expect("spool", "warning", &["1 record(s) wait"]);

    fs::write(&log, "").unwrap();
    let script = format!(
        "mount --bind {0:?} {0:?} && mount -o remount,bind,ro {0:?}",
        share.display().to_string()
    );
    let found = run(&log, Some(&script));
    assert_eq!(found.code(), Some(1), "{found}");
    found.expect("lock", "problem", &[&share_text, "Read-only"]);
    found.expect("log", "ok", &[]);
}

/// `banshare doctor` on the cluster's node 0, as node n0 with the log
/// backend and no configuration file; the caller adds the log's flags.
fn doctor_on_node0(cluster: &Cluster) -> Command {
    let mut cmd = cluster.command_in(cluster.node_ns(0), BANSHARE);
    cmd.args(["--config", "/dev/null", "doctor", "--node", "n0"])
        .args(["--backend", "log"]);
    cmd
}

fn mounted_log(cluster: &Cluster) -> PathBuf {
    cluster.mountpoint(0).join("newbans.log")
}

/// Across hosts: the log on a real sshfs mount is reachable and polled (and
/// doctor says why); unmounted, the share is found missing.
#[test]
fn doctor_over_sshfs_sees_the_mount_and_its_loss() {
    let cluster = Cluster::new("doctor", 1);
    cluster.mount(0);
    fs::write(cluster.export_dir().join("newbans.log"), "").unwrap();
    let state = tempfile::tempdir().unwrap();
    let run = || {
        let mut cmd = doctor_on_node0(&cluster);
        cmd.arg("--log")
            .arg(mounted_log(&cluster))
            .arg("--state-dir")
            .arg(state.path().join("state"))
            .arg("--spool-dir")
            .arg(state.path().join("spool"));
        Findings::of(cmd)
    };
    let found = run();
    found.expect("log", "ok", &["fuse.sshfs"]);
    found.expect("lock", "ok", &[]);
    found.expect("follow", "ok", &["poll", "fuse"]);

    // The file server drops this node's packets (as when the node bans
    // it): every call on the mount hangs, and doctor says so in time.
    let nft = |rule: &str| {
        support::run_ok(cluster.command_in(cluster.fileserver_ns(), "nft").arg(rule));
    };
    nft("add table inet doctor_hang");
    nft("add chain inet doctor_hang input { type filter hook input priority 0; }");
    nft(&format!(
        "add rule inet doctor_hang input ip saddr {} drop",
        cluster.node_ip(0)
    ));
    let config = state.path().join("banshare.toml");
    fs::write(&config, "[append]\nio_timeout = \"2s\"\n").unwrap();
    let mut cmd = cluster.command_in(cluster.node_ns(0), BANSHARE);
    cmd.arg("--config")
        .arg(&config)
        .args(["doctor", "--node", "n0", "--backend", "log", "--log"])
        .arg(mounted_log(&cluster))
        .arg("--state-dir")
        .arg(state.path().join("state"));
    let hung = Findings::of(cmd);
    nft("delete table inet doctor_hang");
    hung.expect("log", "problem", &["no answer within 2s", "fuse.sshfs"]);
    hung.expect("follow", "ok", &["not checked"]);

    cluster.unmount(0);
    let found = run();
    found.expect("log", "problem", &["not mounted"]);
    // Not "inotify on a local filesystem": that is the bare mount point.
    found.expect("follow", "ok", &["not checked", "missing"]);

    // A watcher started while the share is not mounted chooses inotify on
    // the bare mount point; once the share is mounted over it, it sees the
    // new filesystem (at its next safety poll) and polls instead, where
    // inotify would miss other hosts' writes.
    let watcher_state = state.path().join("watcher");
    let watcher = support::Daemon(
        Command::new(BANSHARE)
            .args(["--config", "/dev/null", "--quiet", "watch", "--node", "n0"])
            .args(["--backend", "log", "--log"])
            .arg(mounted_log(&cluster))
            .arg("--state-dir")
            .arg(&watcher_state)
            .arg("--spool-dir")
            .arg(state.path().join("spool"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || watcher_state
            .join("status.json")
            .exists()),
        "the watcher wrote no status"
    );
    let mode = || -> String {
        let text = fs::read_to_string(watcher_state.join("status.json")).unwrap_or_default();
        let status: Value = serde_json::from_str(&text).unwrap_or_default();
        status["mode"].as_str().unwrap_or_default().to_owned()
    };
    assert!(mode().starts_with("inotify"), "{}", mode());
    cluster.mount(0);
    assert!(
        wait_until(Duration::from_secs(20), || mode().starts_with("poll")),
        "the watcher still follows the mounted share with {:?}",
        mode()
    );
    let mut cmd = doctor_on_node0(&cluster);
    cmd.arg("--log")
        .arg(mounted_log(&cluster))
        .arg("--state-dir")
        .arg(&watcher_state);
    let found = Findings::of(cmd);
    found.expect("follow", "ok", &["poll", "fuse"]);
    drop(watcher);

    // The same share over SFTP: reachable, and the lock folder writable by
    // the SFTP account; with the server down, unreachable.
    cluster.create_sftp_file("newbans.log");
    let sftp = |extra: &[&str]| {
        let mut cmd = doctor_on_node0(&cluster);
        cmd.args(["--log", &cluster.sftp_url("newbans.log"), "--identity"])
            .arg(cluster.sftp_identity())
            .arg("--known-hosts")
            .arg(cluster.known_hosts())
            .arg("--state-dir")
            .arg(state.path().join("state"))
            .arg("--spool-dir")
            .arg(state.path().join("spool"))
            .args(extra);
        Findings::of(cmd)
    };
    let found = sftp(&[]);
    found.expect("log", "ok", &["over SFTP"]);
    found.expect("lock", "ok", &["writable over SFTP"]);
    found.expect("follow", "ok", &["poll", "SFTP"]);
    cluster.stop_sshd();
    let found = sftp(&[]);
    found.expect("log", "problem", &["cannot reach"]);
}

/// With the ZeroMQ transport, the publisher's ports are what the log's
/// reachability means.
#[test]
fn doctor_reaches_the_zmq_publisher_or_says_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    // Ports of this test run's own, so parallel runs do not collide.
    let base = 30000 + (std::process::id() % 3000) as u16 * 10;
    let ports = [base, base + 1, base + 2, base + 3];
    let config = dir.path().join("banshare.toml");
    fs::write(
        &config,
        format!(
            "[zmq]\ncatch_up_port = {}\nfeed_port = {}\n",
            ports[1], ports[3]
        ),
    )
    .unwrap();
    let url = format!("zmq+tcp://127.0.0.1:{}", ports[0]);
    let run = || {
        let mut cmd = Command::new(BANSHARE);
        cmd.arg("--config")
            .arg(&config)
            .args(["doctor", "--node", "me", "--backend", "log", "--log", &url])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--spool-dir")
            .arg(dir.path().join("spool"));
        Findings::of(cmd)
    };
    let found = run();
    found.expect("log", "problem", &["no connection", "submission port"]);
    let _publisher = support::Daemon(
        support::local_publisher(&dir.path().join("publisher"), ports)
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || !run()
            .with("log", "ok")
            .is_empty()),
        "the publisher's ports never accepted: {}",
        run()
    );
    run().expect("follow", "ok", &["pushed"]);
}
