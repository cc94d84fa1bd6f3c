//! Trust: signed records, replay, the circuit breaker, never-ban addresses
//! and injection strings, against the real binary (`banshare watch` with
//! the log or command backend, `banshare keygen`, `banshare ban --key`).

mod support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use banshare::outbox::append::{self, Request, Writer};
use banshare::record::{BanTime, Op};
use support::BANSHARE;
use support::watcher::{Watcher, now_ts};

/// Keys made with `banshare keygen`, and a trusted keys file.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Makes `name`'s key; returns the key file and its public line.
    fn keygen(&self, name: &str, node: &str) -> (PathBuf, String) {
        let out = self.dir.path().join(format!("{name}.key"));
        let run = Command::new(BANSHARE)
            .args(["--config", "/dev/null", "keygen", "--node", node, "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        (out, String::from_utf8(run.stdout).unwrap())
    }

    /// Writes the trusted keys file with `lines`; returns a config that
    /// uses it, plus `extra` config text.
    fn config(&self, lines: &[&str], extra: &str) -> String {
        let trusted = self.dir.path().join("trusted_keys");
        fs::write(&trusted, lines.concat()).unwrap();
        format!(
            "[trust]\nkeys = {:?}\n{extra}",
            trusted.display().to_string()
        )
    }
}

/// `logger -s` output for a ban of `address`, now.
fn logger_line(address: &str) -> String {
    let now = chrono::Local::now().format("%b %e %H:%M:%S");
    format!("<13>{now} root[1]: HOST {address} PORT 22\n")
}

fn applied_bans(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("ban "))
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect()
}

fn append(log: &Path, text: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(log)
        .unwrap()
        .write_all(text)
        .unwrap();
}

#[test]
fn signed_records_apply_forged_unsigned_and_unknown_ones_do_not() {
    let keys = Keys::new();
    let (a_key, a_line) = keys.keygen("a", "a");
    let (evil_key, _) = keys.keygen("evil", "a");
    let mut w = Watcher::start_with(&keys.config(&[&a_line], ""), &[]);
    let key = |p: &Path| p.display().to_string();
    w.share("ban", "192.0.2.1", "a", &["--key", &key(&a_key)]);
    w.share("ban", "192.0.2.2", "a", &["--key", &key(&evil_key)]);
    w.share("ban", "192.0.2.3", "a", &[]);
    w.share("ban", "192.0.2.4", "b", &["--key", &key(&evil_key)]);
    append(&w.log(), logger_line("192.0.2.6").as_bytes());
    w.share("ban", "192.0.2.5", "a", &["--key", &key(&a_key)]);
    w.expect("ban 192.0.2.5");
    let all = w.stop();
    assert_eq!(applied_bans(&all), ["192.0.2.1", "192.0.2.5"], "{all:?}");
    let rejected = &w.status()["rejected"];
    assert_eq!(rejected["bad_signature"], 1, "{rejected}");
    assert_eq!(
        rejected["unsigned"], 2,
        "the unsigned record and the logger line: {rejected}"
    );
    assert_eq!(rejected["unknown_key"], 1, "{rejected}");
}

#[test]
fn logger_lines_are_accepted_only_when_allowed() {
    let keys = Keys::new();
    let (_, a_line) = keys.keygen("a", "a");
    let mut w = Watcher::start_with(
        &keys.config(&[&a_line], "allow_unsigned_logger = true\n"),
        &[],
    );
    append(&w.log(), logger_line("192.0.2.6").as_bytes());
    w.share("ban", "192.0.2.3", "a", &[]);
    append(&w.log(), logger_line("192.0.2.7").as_bytes());
    w.expect("ban 192.0.2.7");
    let all = w.stop();
    assert_eq!(
        applied_bans(&all),
        ["192.0.2.6", "192.0.2.7"],
        "an unsigned banshare record is still refused: {all:?}"
    );
}

/// A ban record signed with `key` as `node`, dated `ts`, as a log line.
fn signed_line(
    key: &Path,
    node: &str,
    address: &str,
    ts: chrono::DateTime<chrono::Utc>,
    bantime: u64,
) -> String {
    signed_record(key, node, Op::Ban, address, ts, bantime)
}

fn signed_record(
    key: &Path,
    node: &str,
    op: Op,
    address: &str,
    ts: chrono::DateTime<chrono::Utc>,
    bantime: u64,
) -> String {
    let writer = Writer {
        node: node.parse().unwrap(),
        tag: "banshare".parse().unwrap(),
        pid: 1,
        key: Some(Arc::new(banshare::trust::load_signing_key(key).unwrap())),
    };
    let request = Request {
        op,
        targets: vec![address.parse().unwrap()],
        ports: "22".parse().unwrap(),
        jail: Some("sshd".parse().unwrap()),
        bantime: Some(BanTime::Seconds(bantime)),
    };
    format!(
        "{}\n",
        append::build_records(&request, &writer, ts).unwrap()[0]
    )
}

#[test]
fn replayed_and_expired_signed_lines_are_not_applied() {
    let keys = Keys::new();
    let (a_key, a_line) = keys.keygen("a", "a");
    let mut w = Watcher::start_with(&keys.config(&[&a_line], ""), &[]);
    let line = signed_line(&a_key, "a", "192.0.2.1", chrono::Utc::now(), 3600);
    append(&w.log(), line.as_bytes());
    w.expect("ban 192.0.2.1");
    // The same signed line, copied and appended again, now and after a
    // restart of the watcher.
    append(&w.log(), line.as_bytes());
    let old = signed_line(
        &a_key,
        "a",
        "203.0.113.2",
        chrono::Utc::now() - chrono::Duration::hours(2),
        3600,
    );
    append(&w.log(), old.as_bytes());
    append(
        &w.log(),
        signed_line(&a_key, "a", "192.0.2.3", chrono::Utc::now(), 3600).as_bytes(),
    );
    w.expect("ban 192.0.2.3");
    let first = w.stop();
    let first_skipped = w.status()["skipped"].clone();
    append(&w.log(), line.as_bytes());
    append(
        &w.log(),
        signed_line(&a_key, "a", "192.0.2.4", chrono::Utc::now(), 3600).as_bytes(),
    );
    w.restart(&[]);
    w.expect("ban 192.0.2.4");
    let second = w.stop();
    assert_eq!(
        applied_bans(&first),
        ["192.0.2.1", "192.0.2.3"],
        "{first:?}"
    );
    assert_eq!(
        first_skipped["AlreadyBanned"], 1,
        "the copy while running: {first_skipped}"
    );
    assert_eq!(
        first_skipped["Expired"], 1,
        "the signed line whose ban is over: {first_skipped}"
    );
    assert_eq!(
        applied_bans(&second),
        ["192.0.2.4"],
        "the copy after the restart: {second:?}"
    );
    let skipped = &w.status()["skipped"];
    assert_eq!(
        skipped["AlreadyBanned"], 1,
        "the copy after the restart is known as applied: {skipped}"
    );
}

#[test]
fn a_replayed_ban_does_not_undo_the_unban_that_lifted_it() {
    let keys = Keys::new();
    let (a_key, a_line) = keys.keygen("a", "a");
    let mut w = Watcher::start_with(&keys.config(&[&a_line], ""), &[]);
    let now = chrono::Utc::now();
    let ban = signed_line(
        &a_key,
        "a",
        "192.0.2.1",
        now - chrono::Duration::seconds(10),
        3600,
    );
    let unban = signed_record(&a_key, "a", Op::Unban, "192.0.2.1", now, 3600);
    append(&w.log(), ban.as_bytes());
    w.expect("ban 192.0.2.1");
    append(&w.log(), unban.as_bytes());
    w.expect("unban 192.0.2.1");
    // The replayer copies the signed ban line; a marker follows it.
    append(&w.log(), ban.as_bytes());
    append(&w.log(), unban.as_bytes());
    append(
        &w.log(),
        signed_line(&a_key, "a", "198.51.100.7", chrono::Utc::now(), 3600).as_bytes(),
    );
    w.expect("ban 198.51.100.7");
    let lines = w.stop();
    assert_eq!(
        applied_bans(&lines),
        ["192.0.2.1", "198.51.100.7"],
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("unban ")).count(),
        1,
        "{lines:?}"
    );
    let skipped = &w.status()["skipped"];
    assert_eq!(skipped["BanSuperseded"], 1, "{skipped}");
    assert_eq!(skipped["AlreadyLifted"], 1, "{skipped}");
}

#[test]
fn a_flooding_node_trips_its_breaker_while_another_nodes_bans_still_apply() {
    let config = "[trust]\nmax_bans_per_node_per_minute = 20\n";
    let mut w = Watcher::start_with(config, &[]);
    let addresses: String = (0..60).map(|i| format!("198.51.100.{i}\n")).collect();
    let mut flood = Command::new(BANSHARE)
        .args([
            "--config",
            "/dev/null",
            "--quiet",
            "ban",
            "-",
            "--node",
            "flood",
            "--log",
        ])
        .arg(w.log())
        .arg("--spool-dir")
        .arg(w.dir.path().join("spool-flood"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    flood
        .stdin
        .take()
        .unwrap()
        .write_all(addresses.as_bytes())
        .unwrap();
    assert!(flood.wait().unwrap().success());
    w.share("ban", "192.0.2.77", "calm", &[]);
    w.expect("ban 192.0.2.77");
    let all = w.stop();
    let flood_bans = applied_bans(&all)
        .iter()
        .filter(|a| a.starts_with("198.51.100."))
        .count();
    assert_eq!(flood_bans, 20, "{all:?}");
    let status = w.status();
    assert!(
        status["tripped_nodes"]["flood"].is_string(),
        "status shows the open breaker: {status}"
    );
    assert_eq!(status["skipped"]["BreakerTripped"], 1, "{status}");
    assert_eq!(status["skipped"]["NodeTripped"], 39, "{status}");
}

#[test]
fn whole_internet_networks_and_own_addresses_are_never_banned_even_signed() {
    let keys = Keys::new();
    let (a_key, a_line) = keys.keygen("a", "a");
    let mut w = Watcher::start_with(&keys.config(&[&a_line], ""), &[]);
    let own = banshare::watch::host::local_addresses().unwrap();
    let mut targets: Vec<String> = vec!["0.0.0.0/0".into(), "::/0".into()];
    targets.extend(own.iter().map(|a| a.to_string()));
    for t in &targets {
        append(
            &w.log(),
            signed_line(&a_key, "a", t, chrono::Utc::now(), 600).as_bytes(),
        );
    }
    append(
        &w.log(),
        signed_line(&a_key, "a", "192.0.2.9", chrono::Utc::now(), 600).as_bytes(),
    );
    w.expect("ban 192.0.2.9");
    let all = w.stop();
    assert_eq!(applied_bans(&all), ["192.0.2.9"], "{all:?}");
}

#[test]
fn injection_strings_never_reach_a_shell_and_never_ban() {
    let dir = tempfile::tempdir().unwrap();
    let pwned = dir.path().join("pwned");
    let calls = dir.path().join("calls");
    let script = dir.path().join("ban.sh");
    fs::write(
        &script,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" >> {}\n", calls.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let s = script.display().to_string();
    let config = format!(
        "[backend.command]\nban = [{s:?}, \"{{jail}}\", \"{{port}}\", \"{{ips}}\"]\nunban = [{s:?}, \"{{ips}}\"]\n"
    );
    let mut w = Watcher::start_with(&config, &["--backend", "command"]);
    let touch = pwned.display();
    let head = "<13>Nov 21 18:00:00 x[1]: ";
    let ts = now_ts();
    let hostile: Vec<Vec<u8>> = vec![
        format!("{head}HOST $(touch {touch}) PORT 22 node=x ts={ts}\n").into(),
        format!("{head}HOST `touch {touch}` PORT 22 node=x ts={ts}\n").into(),
        format!("{head}HOST 192.0.2.1;touch {touch} PORT 22 node=x ts={ts}\n").into(),
        format!("{head}HOST 192.0.2.1 PORT 22;touch${{IFS}}{touch} node=x ts={ts}\n").into(),
        format!("{head}HOST 192.0.2.1 PORT 22 jail=$(touch${{IFS}}{touch}) node=x ts={ts}\n")
            .into(),
        format!("{head}HOST 192.0.2.1 PORT 22 jail=`id` node=x ts={ts}\n").into(),
        format!("{head}HOST 192.0.2.1 PORT 22\rHOST 192.0.2.2 PORT 22 node=x ts={ts}\n").into(),
        format!("{head}HOST 192.0.2.1\0 PORT 22 node=x ts={ts}\n").into(),
        [
            format!("{head}HOST 192.0.2.1 PORT 22 node=x ts={ts} sig=").into_bytes(),
            vec![b'A'; 100_000],
            b"\n".to_vec(),
        ]
        .concat(),
    ];
    for line in &hostile {
        append(&w.log(), line);
    }
    append(
        &w.log(),
        format!("{head}HOST 192.0.2.50 PORT 22 jail=sshd node=x ts={ts}\n").as_bytes(),
    );
    assert!(
        support::wait_until(std::time::Duration::from_secs(10), || fs::read_to_string(
            &calls
        )
        .is_ok_and(|c| c.contains("192.0.2.50"))),
        "the valid line after the hostile ones was not applied"
    );
    w.stop();
    assert!(!pwned.exists(), "an injection string ran");
    let argv = fs::read_to_string(&calls).unwrap();
    assert_eq!(
        argv.lines().collect::<Vec<_>>(),
        ["sshd", "22", "192.0.2.50"],
        "one call, verbatim argv"
    );
    let status = w.status();
    let rejected: u64 = status["rejected"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(rejected, hostile.len() as u64, "{status}");
}

/// The `for=` of an applied ban line: `600s`, or `permanent`.
fn ban_length(line: &str) -> &str {
    line.split(' ')
        .find_map(|word| word.strip_prefix("for="))
        .unwrap_or_else(|| panic!("no for= in {line:?}"))
}

#[test]
fn bantimes_longer_than_max_bantime_are_clamped_and_permanent_needs_a_trusted_signature() {
    let keys = Keys::new();
    let (a_key, a_line) = keys.keygen("a", "a");
    let (stranger_key, _) = keys.keygen("stranger", "stranger");
    // Signatures are checked where present, not required: unsigned
    // records apply, as in a cluster that has not rolled out keys yet.
    let mut w = Watcher::start_with(&keys.config(&[&a_line], "require_signed = false\n"), &[]);
    let key = |p: &Path| p.display().to_string();
    let ten_years = (10 * 365 * 24 * 3600).to_string();
    w.share("ban", "198.51.100.1", "b", &["--bantime", &ten_years]);
    w.share("ban", "198.51.100.2", "b", &["--bantime", "-1"]);
    w.share(
        "ban",
        "198.51.100.3",
        "stranger",
        &["--bantime", "-1", "--key", &key(&stranger_key)],
    );
    w.share(
        "ban",
        "198.51.100.4",
        "a",
        &["--bantime", "-1", "--key", &key(&a_key)],
    );
    w.share("ban", "198.51.100.5", "b", &["--bantime", "3600"]);
    let week = "604800s";
    assert_eq!(ban_length(&w.expect("ban 198.51.100.1 ")), week, "10 years");
    assert_eq!(
        ban_length(&w.expect("ban 198.51.100.2 ")),
        week,
        "unsigned -1"
    );
    assert_eq!(
        ban_length(&w.expect("ban 198.51.100.3 ")),
        week,
        "-1 signed by a node with no trusted key"
    );
    assert_eq!(
        ban_length(&w.expect("ban 198.51.100.4 ")),
        "permanent",
        "-1 signed by a trusted node"
    );
    assert_eq!(ban_length(&w.expect("ban 198.51.100.5 ")), "3600s");
    w.expect_logged(&["198.51.100.1", "max_bantime"]);
    w.expect_logged(&["198.51.100.2", "max_bantime"]);
    w.stop();
    let adjusted = &w.status()["adjusted"];
    assert_eq!(adjusted["BantimeClamped"], 3, "{adjusted}");
}

#[test]
fn max_bantime_is_a_config_key() {
    let w_config = "[watch]\nmax_bantime = \"2h\"\n";
    let mut w = Watcher::start_with(w_config, &[]);
    w.share("ban", "198.51.100.1", "b", &["--bantime", "1d"]);
    assert_eq!(ban_length(&w.expect("ban 198.51.100.1 ")), "7200s");
    w.stop();
}
