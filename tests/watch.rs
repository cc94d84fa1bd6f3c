//! `banshare watch` on one host, with the log (dry-run) backend: the
//! policy, hostile lines, signals and resuming after a restart. The real
//! binary runs in a temporary folder; what it applied is read from its
//! stdout, one line per action.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::watcher::{Watcher, now_ts};
use support::{BANSHARE, wait_until};

#[test]
fn bans_and_unbans_from_other_nodes_are_applied_own_are_not() {
    let mut w = Watcher::start(&[]);
    w.share(
        "ban",
        "192.0.2.1",
        "other",
        &["--jail", "sshd", "--bantime", "600"],
    );
    let line = w.expect("ban 192.0.2.1");
    assert!(line.contains("origin=other"), "{line}");
    w.share("ban", "192.0.2.2", "me", &[]);
    w.share("unban", "192.0.2.1", "other", &[]);
    w.expect("unban 192.0.2.1");
    let all = w.stop();
    assert!(
        !all.iter().any(|l| l.contains("192.0.2.2")),
        "own record applied: {all:?}"
    );
    let status = w.status();
    assert_eq!(status["skipped"]["OwnNode"], 1, "{status}");
}

#[test]
fn logger_lines_are_bans() {
    let mut w = Watcher::start(&[]);
    let now = chrono::Local::now().format("%b %e %H:%M:%S");
    w.append(format!("<13>{now} root[3284]: HOST 198.51.100.9 PORT 22\n").as_bytes());
    w.expect("ban 198.51.100.9");
    w.stop();
}

#[test]
fn ignoreip_expired_and_never_ban_addresses_are_skipped() {
    let mut w = Watcher::start_with("[watch]\nignoreip = [\"203.0.113.0/24\"]\n", &[]);
    let old = "2020-01-01T00:00:00Z";
    let records = [
        format!("HOST 203.0.113.7 PORT 22 node=x ts={}", now_ts()),
        format!("HOST 127.0.0.1 PORT 22 node=x ts={}", now_ts()),
        format!("HOST 0.0.0.0/0 PORT 22 node=x ts={}", now_ts()),
        format!("HOST ::/0 PORT 22 node=x ts={}", now_ts()),
        format!("HOST ::1 PORT 22 node=x ts={}", now_ts()),
        format!("HOST 192.0.2.50 PORT 22 node=x ts={old} bantime=600"),
        format!("HOST 192.0.2.51 PORT 22 node=x ts={}", now_ts()),
    ];
    for r in &records {
        w.append(format!("<13>Nov 21 18:00:00 banshare[1]: {r}\n").as_bytes());
    }
    w.expect("ban 192.0.2.51");
    let all = w.stop();
    assert_eq!(
        all.iter().filter(|l| l.starts_with("ban ")).count(),
        1,
        "{all:?}"
    );
    let skipped = &w.status()["skipped"];
    assert_eq!(skipped["Ignored"], 1, "{skipped}");
    assert_eq!(skipped["NeverBan"], 2, "{skipped}");
    assert_eq!(skipped["TooWide"], 2, "{skipped}");
    assert_eq!(skipped["Expired"], 1, "{skipped}");
}

#[test]
fn own_addresses_are_never_banned() {
    // 127.0.0.1 is never banned anyway; the loopback interface also has
    // ::1. Every host has at least one of its own non-loopback addresses
    // only in a network namespace, so check with ignoreself's rule on
    // the local addresses the watcher itself reports: a ban of each of
    // them is refused.
    let addrs = banshare::watch::host::local_addresses().unwrap();
    let mut w = Watcher::start(&[]);
    for addr in &addrs {
        w.append(
            format!(
                "<13>Nov 21 18:00:00 banshare[1]: HOST {addr} PORT 22 node=x ts={}\n",
                now_ts()
            )
            .as_bytes(),
        );
    }
    w.append(
        format!(
            "<13>Nov 21 18:00:00 banshare[1]: HOST 192.0.2.99 PORT 22 node=x ts={}\n",
            now_ts()
        )
        .as_bytes(),
    );
    w.expect("ban 192.0.2.99");
    let all = w.stop();
    for addr in &addrs {
        assert!(
            !all.iter().any(|l| l.starts_with(&format!("ban {addr} "))),
            "banned own address {addr}: {all:?}"
        );
    }
}

#[test]
fn min_nodes_waits_for_distinct_nodes() {
    let mut w = Watcher::start_with("[watch]\nmin_nodes = 2\n", &[]);
    w.share("ban", "192.0.2.7", "a", &[]);
    w.share("ban", "192.0.2.7", "a", &[]);
    w.share("ban", "192.0.2.8", "b", &[]);
    w.share("ban", "192.0.2.7", "b", &[]);
    w.expect("ban 192.0.2.7");
    let all = w.stop();
    assert!(
        !all.iter().any(|l| l.starts_with("ban 192.0.2.8")),
        "{all:?}"
    );
    assert_eq!(
        all.iter()
            .filter(|l| l.starts_with("ban 192.0.2.7"))
            .count(),
        1
    );
}

#[test]
fn hostile_lines_are_counted_and_skipped_and_the_watcher_goes_on() {
    let mut w = Watcher::start(&[]);
    let head = "<13>Nov 21 18:00:00 x[1]: ";
    let mut hostile: Vec<Vec<u8>> = vec![
        format!("{head}HOST $(touch /tmp/banshare-pwned) PORT 22\n").into(),
        format!("{head}HOST `reboot` PORT 22\n").into(),
        format!("{head}HOST 1.2.3.4;rm -rf / PORT 22\n").into(),
        format!("{head}HOST 192.0.2.1 PORT 22;id\n").into(),
        format!("{head}HOST 1.2.3 PORT 22\n").into(),
        format!("{head}HOST 999.1.1.1 PORT 22\n").into(),
        format!("{head}HOST 192.0.2.1 PORT 22\rHOST 6.6.6.6 PORT 22\n").into(),
        format!("{head}HOST 192.0.2.1\0 PORT 22\n").into(),
        b"garbage without a header\n".to_vec(),
    ];
    // A 1 MB line with no newline, then the newline much later.
    let mut huge = format!("{head}HOST 192.0.2.66 PORT 22 sig=").into_bytes();
    huge.extend(std::iter::repeat_n(b'A', 1 << 20));
    hostile.push(huge);
    for line in &hostile {
        w.append(line);
    }
    w.append(b"\n");
    w.append(format!("{head}HOST 0.0.0.0/0 PORT 22 node=x ts={}\n", now_ts()).as_bytes());
    w.append(format!("{head}HOST 192.0.2.42 PORT 22 node=x ts={}\n", now_ts()).as_bytes());
    w.expect("ban 192.0.2.42");
    let all = w.stop();
    assert_eq!(
        all.iter().filter(|l| l.starts_with("ban ")).count(),
        1,
        "only the valid line: {all:?}"
    );
    assert!(!Path::new("/tmp/banshare-pwned").exists());
    let status = w.status();
    let rejected: u64 = status["rejected"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(rejected, 10, "{status}");
    assert_eq!(status["rejected"]["too_long"], 1, "{status}");
    assert_eq!(status["skipped"]["TooWide"], 1, "{status}");
}

#[test]
fn restart_after_sigterm_and_sigkill_resumes_after_the_last_applied_record() {
    let mut w = Watcher::start(&[]);
    for i in 0..5 {
        w.share("ban", &format!("192.0.2.{i}"), "other", &[]);
    }
    w.expect("ban 192.0.2.4");
    w.stop();
    for i in 5..8 {
        w.share("ban", &format!("192.0.2.{i}"), "other", &[]);
    }
    w.restart(&[]);
    w.expect("ban 192.0.2.7");
    let size = fs::metadata(w.log()).unwrap().len();
    assert!(
        wait_until(Duration::from_secs(10), || w.saved_offset() == Some(size)),
        "cursor never saved"
    );
    w.kill();
    for i in 8..10 {
        w.share("ban", &format!("192.0.2.{i}"), "other", &[]);
    }
    w.restart(&[]);
    w.expect("ban 192.0.2.9");
    let after_kill = w.stop();
    let bans: Vec<&String> = after_kill
        .iter()
        .filter(|l| l.starts_with("ban "))
        .collect();
    assert_eq!(
        bans.len(),
        2,
        "only the records after the cursor: {after_kill:?}"
    );
}

#[test]
fn a_missing_log_is_waited_for() {
    let mut w = Watcher::start(&[]);
    fs::remove_file(w.log()).unwrap();
    let noticed = wait_until(Duration::from_secs(10), || {
        w.status()["log_present"] == false
    });
    assert!(noticed, "the watcher never noticed the log was gone");
    fs::write(w.log(), b"").unwrap();
    w.share("ban", "192.0.2.77", "other", &[]);
    w.expect("ban 192.0.2.77");
    // The status file is rewritten at most once a second.
    let readable = wait_until(Duration::from_secs(10), || {
        w.status()["log_present"] == true
    });
    assert!(
        readable,
        "status never showed the log readable again: {}",
        w.status()
    );
    w.stop();
}

#[test]
fn sighup_reloads_the_policy() {
    let mut w = Watcher::start(&[]);
    w.share("ban", "203.0.113.1", "other", &[]);
    w.expect("ban 203.0.113.1");
    w.reload_with("[watch]\nignoreip = [\"203.0.113.0/24\"]\n");
    // Reload happens between cycles; a record after it is judged anew.
    let ignored = wait_until(Duration::from_secs(10), || {
        w.share("ban", "203.0.113.2", "other", &[]);
        w.status()["skipped"]["Ignored"].as_u64().unwrap_or(0) > 0
    });
    assert!(
        ignored,
        "ignoreip from the reloaded config never applied: {}",
        w.status()
    );
    w.share("ban", "192.0.2.3", "other", &[]);
    w.expect("ban 192.0.2.3");
    let all = w.stop();
    assert!(
        !all.iter().any(|l| l.starts_with("ban 203.0.113.2")),
        "{all:?}"
    );
}

#[test]
fn the_watcher_delivers_its_nodes_spool() {
    let mut w = Watcher::start_with("[watch]\nflush_interval = \"50ms\"\n", &[]);
    let away = w.dir.path().join("away.log");
    fs::rename(w.log(), &away).unwrap();
    // This node's own `banshare ban`, spooled while the log is gone.
    let out = Command::new(BANSHARE)
        .args([
            "--config",
            "/dev/null",
            "--quiet",
            "ban",
            "192.0.2.200",
            "--node",
            "me",
            "--log",
        ])
        .arg(w.log())
        .arg("--spool-dir")
        .arg(w.dir.path().join("spool"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spooled"));
    fs::rename(&away, w.log()).unwrap();
    let delivered = wait_until(Duration::from_secs(10), || {
        fs::read_to_string(w.log())
            .unwrap_or_default()
            .contains("HOST 192.0.2.200 ")
    });
    assert!(delivered, "the watcher never flushed the spool");
    let status = w.status();
    w.stop();
    assert_eq!(status["spool_records"], 0, "{status}");
}

#[test]
fn a_batch_the_backend_refuses_is_retried_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("refuse");
    let applied = dir.path().join("applied.txt");
    let script = dir.path().join("ban.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ -e {} ] && exit 1\necho \"$@\" >> {}\n",
            flag.display(),
            applied.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        "[backend.command]\nban = [{:?}, \"{{ips}}\"]\nunban = [{:?}, \"{{ips}}\"]\n",
        script.display().to_string(),
        script.display().to_string()
    );
    fs::write(&flag, b"").unwrap();
    let mut w = Watcher::start_with(&config, &["--backend", "command"]);
    w.share("ban", "192.0.2.9", "other", &[]);
    let size = fs::metadata(w.log()).unwrap().len();
    // The status tells the refused record as lag, as the watcher measured it.
    let refused = wait_until(Duration::from_secs(10), || {
        let s = w.status();
        s["backend_errors"].as_u64().unwrap_or(0) >= 1
            && (s["lag_records"].as_u64(), s["lag_bytes"].as_u64()) == (Some(1), Some(size))
    });
    assert!(refused, "the backend never refused: {}", w.status());
    assert_eq!(
        w.saved_offset().unwrap_or(0),
        0,
        "the cursor must stay before the refused batch"
    );
    fs::remove_file(&flag).unwrap();
    let done = wait_until(Duration::from_secs(20), || {
        fs::read_to_string(&applied).is_ok_and(|t| t.contains("192.0.2.9"))
    });
    assert!(done, "the batch was never retried");
    assert!(
        wait_until(Duration::from_secs(10), || w.saved_offset() == Some(size)),
        "cursor not saved after the retry"
    );
    let caught_up = wait_until(Duration::from_secs(10), || {
        w.status()["lag_records"].as_u64() == Some(0)
    });
    assert!(caught_up, "no lag once applied: {}", w.status());
    w.stop();
}

/// `program` run with its clock moved by `offset` (libfaketime, as in
/// `faketime '+10 minutes' logger ...`): a writer on a host whose clock is
/// wrong. Test hosts share this machine's clock, so skew is faked.
fn skewed(offset: &str, program: &str) -> Command {
    let mut command = Command::new("faketime");
    command.args([offset, program]);
    command
}

/// `banshare ban address` from a writer whose clock is `offset` off.
fn skewed_ban(w: &Watcher, offset: &str, address: &str) {
    support::run_ok(
        skewed(offset, BANSHARE)
            .args(["--config", "/dev/null", "--quiet", "ban", address])
            .args(["--node", "fast", "--bantime", "600", "--log"])
            .arg(w.log())
            .arg("--spool-dir")
            .arg(w.dir.path().join("spool-fast")),
    );
}

/// `logger -s` from a writer whose clock is `offset` off, its line
/// appended to the log (there is no syslog daemon here to send it to).
fn skewed_logger(w: &Watcher, offset: &str, address: &str) {
    let out = support::run_ok(skewed(offset, "logger").args([
        "-s",
        "--socket-errors=off",
        "-t",
        "root",
        &format!("HOST {address} PORT 22"),
    ]));
    assert!(out.stderr.starts_with(b"<13>"), "{out:?}");
    w.append(&out.stderr);
}

#[test]
fn records_from_a_clock_ahead_apply_with_a_warning_and_far_ahead_are_refused_loudly() {
    let mut w = Watcher::start(&[]);
    skewed_ban(&w, "+10 minutes", "198.51.100.1");
    let line = w.expect("ban 198.51.100.1 ");
    assert!(line.contains(" for=600s "), "counted from now: {line}");
    w.expect_logged(&["198.51.100.1", "ahead of this host's clock"]);
    // A logger line 10 minutes ahead is this year's, not last year's.
    skewed_logger(&w, "+10 minutes", "198.51.100.2");
    w.expect("ban 198.51.100.2 ");
    w.expect_logged(&["198.51.100.2", "ahead of this host's clock"]);
    // Two days ahead: refused, and said so.
    skewed_ban(&w, "+2 days", "198.51.100.3");
    skewed_logger(&w, "+2 days", "198.51.100.4");
    w.share("ban", "198.51.100.5", "other", &[]);
    w.expect("ban 198.51.100.5 ");
    w.expect_logged(&["198.51.100.3", "more than a day ahead"]);
    w.expect_logged(&["198.51.100.4", "more than a day ahead"]);
    let all = w.stop();
    assert!(
        !all.iter()
            .any(|l| l.contains("198.51.100.3") || l.contains("198.51.100.4")),
        "{all:?}"
    );
    let status = w.status();
    assert_eq!(status["skipped"]["FromTheFuture"], 2, "{status}");
    assert_eq!(status["adjusted"]["ClockAhead"], 2, "{status}");
}

/// Review 12b MEDIUM 4: a writer whose clock is behind by more than the
/// bantime (a ZeroMQ publisher dating legacy bans) has every ban skipped as
/// already over; the watcher says so instead of counting it silently.
#[test]
fn a_recent_ban_already_over_when_read_is_told() {
    let mut w = Watcher::start(&[]);
    // bantime 600 s, dated 15 minutes back: over, but recent.
    skewed_ban(&w, "-15 minutes", "198.51.100.21");
    w.share("ban", "198.51.100.22", "other", &[]);
    w.expect("ban 198.51.100.22 ");
    w.expect_logged(&["198.51.100.21", "already over when read", "clock behind"]);
    let all = w.stop();
    assert!(!all.iter().any(|l| l.contains("198.51.100.21")), "{all:?}");
    assert_eq!(w.status()["skipped"]["Expired"], 1);
}

#[test]
fn the_watcher_delivers_the_journal_of_a_killed_ban_once_and_leaves_a_live_one() {
    let mut w = Watcher::start_with("[watch]\nflush_interval = \"50ms\"\n", &[]);
    let spool = w.dir.path().join("spool");
    let journals = || -> usize {
        fs::read_dir(&spool).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "journal")
            })
            .count()
        })
    };
    // Another host holds the lock: this node's ban waits for it.
    let lock = w.dir.path().join("newbans.log.lock");
    fs::write(&lock, "banshare-lock node=other pid=1 token=held since=x\n").unwrap();
    let mut ban = Command::new(BANSHARE)
        .args(["--config", "/dev/null", "--quiet", "ban", "192.0.2.201"])
        .args([
            "--node",
            "me",
            "--stale-lock",
            "50s",
            "--lock-timeout",
            "60s",
        ])
        .arg("--log")
        .arg(w.log())
        .arg("--spool-dir")
        .arg(&spool)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // On a local disk the run delivers in its own process: once its
    // journal is there, it waits for the lock.
    assert!(
        wait_until(Duration::from_secs(10), || journals() == 1),
        "the ban never started delivering"
    );
    // Many flush intervals: the live run's journal stays its own.
    let stayed = !wait_until(Duration::from_millis(500), || journals() == 0);
    support::kill_tree(&mut ban);
    fs::remove_file(&lock).unwrap();
    assert!(stayed, "the watcher took the journal of a live run");
    let delivered = wait_until(Duration::from_secs(10), || {
        fs::read_to_string(w.log())
            .unwrap_or_default()
            .contains("HOST 192.0.2.201 ")
    });
    assert!(delivered, "the watcher never delivered the orphan journal");
    assert!(wait_until(Duration::from_secs(10), || journals() == 0));
    let status = w.status();
    w.stop();
    let log = fs::read_to_string(w.log()).unwrap();
    assert_eq!(log.matches("HOST 192.0.2.201 ").count(), 1, "{log}");
    assert_eq!(status["spool_records"], 0, "{status}");
}

/// A watcher that trusts `key` for node `a` (and `trust` says the rest of
/// `[trust]`), and the folder of its keys.
fn trusting_node_a(key: &ed25519_dalek::SigningKey, trust: &str) -> (Watcher, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("trusted_keys");
    let line = banshare::trust::public_line(key);
    fs::write(&trusted, format!("a {line}\n")).unwrap();
    let w = Watcher::start_with(
        &format!(
            "[trust]\nkeys = {:?}\n{trust}",
            trusted.display().to_string()
        ),
        &[],
    );
    (w, dir)
}

/// A ban signed with `key` for node `a`, dated `ts`, as a log line.
fn signed_ban(
    key: &ed25519_dalek::SigningKey,
    address: &str,
    ts: chrono::DateTime<chrono::Utc>,
    bantime: u64,
) -> String {
    signed_record(key, banshare::record::Op::Ban, address, ts, Some(bantime))
}

/// The log line `line` signed again by `by`: a forgery with its id.
fn resigned(line: &str, by: &ed25519_dalek::SigningKey) -> String {
    let mut record = banshare::record::parse(line.trim_end().as_bytes()).unwrap();
    banshare::trust::sign(&mut record, by).unwrap();
    format!("{record}\n")
}

/// A record `op` signed with `key` for node `a`, dated `ts`, as a log line.
fn signed_record(
    key: &ed25519_dalek::SigningKey,
    op: banshare::record::Op,
    address: &str,
    ts: chrono::DateTime<chrono::Utc>,
    bantime: Option<u64>,
) -> String {
    use banshare::outbox::append::{self, Request, Writer};
    let writer = Writer {
        node: "a".parse().unwrap(),
        tag: "banshare".parse().unwrap(),
        pid: 1,
        key: Some(std::sync::Arc::new(key.clone())),
    };
    let request = Request {
        op,
        targets: vec![address.parse().unwrap()],
        ports: "22".parse().unwrap(),
        jail: Some("sshd".parse().unwrap()),
        bantime: bantime.map(banshare::record::BanTime::Seconds),
    };
    format!(
        "{}\n",
        append::build_records(&request, &writer, ts).unwrap()[0]
    )
}

/// Issue 16: signatures are checked only for records that could change
/// something. Copies of a ban in force and bans already over are dropped
/// unchecked (counted as skipped), forged or not; a forged live ban is
/// still refused, and changes nothing.
#[test]
fn a_signed_log_checks_only_the_records_that_could_change_something() {
    use banshare::trust::generate;
    let key = generate().unwrap();
    let forger = generate().unwrap();
    let (mut w, _dir) = trusting_node_a(&key, "");
    let now = chrono::Utc::now();
    let applied = signed_ban(&key, "192.0.2.10", now, 3600);
    w.append(applied.as_bytes());
    w.expect("ban 192.0.2.10");
    let old = now - chrono::Duration::hours(3);
    let lines = [
        // A signed copy of the applied record, and a forged one.
        applied.clone(),
        signed_ban(&forger, "192.0.2.10", now, 3600),
        // Over long ago, signed and forged.
        signed_ban(&key, "192.0.2.20", old, 600),
        signed_ban(&forger, "192.0.2.21", old, 600),
        // Live and forged: checked, refused.
        signed_ban(&forger, "192.0.2.11", now, 3600),
        signed_ban(&key, "192.0.2.12", now, 3600),
    ];
    w.append(lines.concat().as_bytes());
    w.expect("ban 192.0.2.12");
    let all = w.stop();
    let bans: Vec<&String> = all.iter().filter(|l| l.starts_with("ban ")).collect();
    assert_eq!(bans.len(), 2, "{all:?}");
    let status = w.status();
    assert_eq!(status["rejected"]["bad_signature"], 1, "{status}");
    assert_eq!(status["skipped"]["AlreadyBanned"], 2, "{status}");
    assert_eq!(status["skipped"]["Expired"], 2, "{status}");
}

/// Issue 16: of two records with one id in a window (a log read again, a
/// spool sent twice), only the first is checked with the window; the
/// other waits for its turn. A forged copy of a ban that held is then
/// dropped unchecked as a copy; a genuine copy of a forged record is
/// checked alone, and applied.
#[test]
fn a_copy_in_the_same_window_waits_for_the_first_and_is_checked_only_if_it_matters() {
    use banshare::trust::generate;
    let key = generate().unwrap();
    let forger = generate().unwrap();
    let (mut w, _dir) = trusting_node_a(&key, "");
    let now = chrono::Utc::now();
    let genuine = signed_ban(&key, "192.0.2.30", now, 3600);
    let other = signed_ban(&key, "192.0.2.31", now, 3600);
    let lines = [
        // A ban, then a forgery of it with its id: a copy of a ban in force.
        genuine.clone(),
        resigned(&genuine, &forger),
        // A forgery first, then the genuine record of that id.
        resigned(&other, &forger),
        other.clone(),
    ];
    w.append(lines.concat().as_bytes());
    w.expect("ban 192.0.2.31");
    let all = w.stop();
    let bans: Vec<&String> = all.iter().filter(|l| l.starts_with("ban ")).collect();
    assert_eq!(bans.len(), 2, "{all:?}");
    let status = w.status();
    assert_eq!(status["rejected"]["bad_signature"], 1, "{status}");
    assert_eq!(status["skipped"]["AlreadyBanned"], 1, "{status}");
}

/// Issue 16, review 21: after a failed batch equation the watcher reads
/// 2,048 lines at a time only while there are signatures to check: a
/// forged record followed by a long history that needs no check (bans
/// long over) is read in full batches again after one small read.
#[test]
fn after_a_forged_record_a_history_without_checks_is_read_in_full_batches() {
    use banshare::trust::generate;
    let key = generate().unwrap();
    let forger = generate().unwrap();
    let (mut w, _dir) = trusting_node_a(&key, "max_bans_per_node_per_minute = 100000\n");
    let now = chrono::Utc::now();
    let history = signed_ban(&key, "10.9.0.1", now - chrono::Duration::days(3), 3600);
    let log = [
        signed_ban(&forger, "192.0.2.1", now, 3600),
        history.repeat(30_000),
        signed_ban(&key, "192.0.2.99", now, 3600),
    ];
    // Read from the start by a watcher with its debug log.
    w.kill();
    w.append(log.concat().as_bytes());
    w.restart(&["-v"]);
    w.expect("ban 192.0.2.99");
    let reads = lines_per_read(&w.logged_now());
    w.stop();
    // A watcher starts with small reads, as if an equation had failed;
    // the forged record fails the first read's; the next read has
    // nothing to check, and the rest are full.
    assert_eq!(reads, [2048, 2048, 10_000, 10_000, 5906], "lines per read");
    assert_eq!(w.status()["rejected"]["bad_signature"], 1);
}

/// Issue 16: until a batch equation holds, a watcher with trusted keys
/// reads 2,048 lines at a time (a log of forged records never holds
/// more in memory); a genuine log's first read holds, and the rest are
/// full.
#[test]
fn a_signed_catch_up_reads_small_until_an_equation_holds() {
    use banshare::trust::generate;
    let key = generate().unwrap();
    let (mut w, _dir) = trusting_node_a(&key, "max_bans_per_node_per_minute = 100000\n");
    w.kill();
    let now = chrono::Utc::now();
    let log: Vec<String> = (0..12_049)
        .map(|i| {
            signed_ban(
                &key,
                &format!("10.8.{}.{}", i / 250, i % 250 + 1),
                now,
                3600,
            )
        })
        .collect();
    w.append(log.concat().as_bytes());
    w.restart(&["-v"]);
    w.expect("ban 10.8.48.49");
    let reads = lines_per_read(&w.logged_now());
    w.stop();
    assert_eq!(reads, [2048, 10_000, 1], "lines per read");
}

/// Review 21: a reload that takes the trusted keys away after a failed
/// batch equation leaves nothing to check: reads are full again.
#[test]
fn a_reload_without_trusted_keys_after_a_forged_record_reads_full_batches() {
    use banshare::trust::generate;
    let key = generate().unwrap();
    let forger = generate().unwrap();
    let (mut w, _dir) = trusting_node_a(&key, "max_bans_per_node_per_minute = 100000\n");
    // With its debug log, which says how many lines each read took.
    w.kill();
    w.restart(&["-v"]);
    let now = chrono::Utc::now();
    // Forged last: the failed equation is what the watcher remembers.
    w.append(signed_ban(&key, "203.0.113.40", now, 3600).as_bytes());
    w.expect("ban 203.0.113.40");
    w.append(signed_ban(&forger, "203.0.113.41", now, 3600).as_bytes());
    let refused = wait_until(Duration::from_secs(10), || {
        w.status()["rejected"]["bad_signature"] == 1
    });
    assert!(refused, "the forged ban was never refused: {}", w.status());
    w.reload_with("[trust]\nrequire_signed = false\nmax_bans_per_node_per_minute = 100000\n");
    w.expect_logged(&["configuration reloaded"]);
    let before = w.logged_now().len();
    let history = signed_ban(&key, "10.9.0.1", now - chrono::Duration::days(3), 3600);
    let log = [
        history.repeat(25_000),
        signed_ban(&key, "192.0.2.99", now, 3600),
    ];
    w.append(log.concat().as_bytes());
    w.expect("ban 192.0.2.99");
    let reads = lines_per_read(&w.logged_now()[before..]);
    w.stop();
    assert!(
        reads.iter().all(|n| *n != 2048),
        "lines per read: {reads:?}"
    );
    assert_eq!(
        reads.iter().sum::<usize>(),
        25_001,
        "lines per read: {reads:?}"
    );
}

/// The lines of each read, from a watcher's debug log.
fn lines_per_read(logged: &[String]) -> Vec<usize> {
    logged
        .iter()
        .filter_map(|l| {
            l.split("read ")
                .nth(1)?
                .strip_suffix(" line(s) from the log")
        })
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Issue 16: which records of a window are checked is chosen by the state
/// before that window; each is still decided on the state the records
/// before it left (a record left unchecked is asked again in its turn, and
/// checked alone if it now could change something): an unban of a ban
/// from earlier in the batch is applied, a forged one is refused.
#[test]
fn records_that_depend_on_the_window_before_are_decided_on_the_state_it_left() {
    // One batch of the default size, one window.
    decided_on_the_state_the_records_before_left(4200, "");
}

/// The same across windows: a batch raised past the window of 16,384
/// lines is decided in two, the unbans in the second window of the bans
/// they lift.
#[test]
fn records_are_decided_on_the_state_the_windows_before_left() {
    decided_on_the_state_the_records_before_left(17_000, "[watch]\nbatch_max = 40000\n");
}

fn decided_on_the_state_the_records_before_left(bans: usize, watch: &str) {
    use banshare::record::Op;
    use banshare::trust::generate;
    let key = generate().unwrap();
    let forger = generate().unwrap();
    // Thousands of bans from one node at once: its breaker would trip at 600.
    let (mut w, _dir) = trusting_node_a(
        &key,
        &format!("max_bans_per_node_per_minute = 100000\n{watch}"),
    );
    let now = chrono::Utc::now();
    let later = now + chrono::Duration::seconds(1);
    let mut lines: Vec<String> = (0..bans)
        .map(|i| {
            signed_ban(
                &key,
                &format!("10.{}.{}.{}", 1 + i / 62_500, i / 250 % 250, i % 250 + 1),
                now,
                3600,
            )
        })
        .collect();
    lines.extend([
        signed_record(&key, Op::Unban, "10.1.0.1", later, None),
        resigned(
            &signed_record(&key, Op::Unban, "10.1.0.2", later, None),
            &forger,
        ),
        signed_ban(&key, "192.0.2.99", later, 3600),
    ]);
    w.append(lines.concat().as_bytes());
    w.expect("ban 192.0.2.99");
    let all = w.stop();
    let unbans: Vec<&str> = all
        .iter()
        .filter(|l| l.starts_with("unban "))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(
        unbans,
        ["10.1.0.1"],
        "{:?}",
        &all[all.len().saturating_sub(5)..]
    );
    let status = w.status();
    assert_eq!(status["rejected"]["bad_signature"], 1, "{status}");
    assert_eq!(status["active_bans"], bans as u64, "{status}");
}
