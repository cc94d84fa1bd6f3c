//! What an operator reads from a running watcher, through the real binary:
//! its metrics file, parsed by Prometheus's own Python client (Debian's
//! `python3-prometheus-client`, which `.ci/install-deps` installs), and
//! `banshare bans`, which lists its active bans from its state directory
//! while it runs.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::prometheus::{parse_metrics, unlabelled, value};
use support::watcher::Watcher;
use support::{BANSHARE, Daemon, wait_until};

/// The documentation addresses the tests ban may be this host's own, when
/// other tests run beside: they are banned all the same.
const NOT_SELF: &str = "[watch]\nignoreself = false\n";

/// Bans from two other nodes and two jails, an unban, a line that is no
/// record and one of this node's own records, all through the watcher.
fn share_bans(w: &Watcher) {
    for address in ["192.0.2.1", "192.0.2.2", "2001:db8::/64"] {
        w.share("ban", address, "web1", &["--jail", "sshd"]);
    }
    w.share("ban", "198.51.100.7", "web2", &["--jail", "recidive"]);
    w.share("ban", "198.51.100.8", "web2", &["--jail", "recidive"]);
    w.share("unban", "198.51.100.8", "web2", &["--jail", "recidive"]);
    w.share("ban", "203.0.113.9", "me", &["--jail", "sshd"]);
    w.append(b"this is no record\n");
}

#[test]
fn the_metrics_file_is_valid_prometheus_text_with_the_watchers_real_counts() {
    // The watcher does not deliver the spool while the test looks at it.
    let mut w = Watcher::prepare(&format!("{NOT_SELF}flush_interval = \"1h\"\n"));
    let metrics = w.dir.path().join("textfile/banshare.prom");
    fs::create_dir(w.dir.path().join("textfile")).unwrap();
    w.restart(&[
        "--metrics-file",
        metrics.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    share_bans(&w);
    // 5 bans and an unban applied; the file is rewritten every few seconds.
    let read = |name: &str| unlabelled(&fs::read_to_string(&metrics).unwrap_or_default(), name);
    let applied = || read("banshare_watch_applied_total");
    assert!(
        wait_until(Duration::from_secs(20), || applied() == Some(6.0)),
        "the metrics never showed 6 applied: {:?}\n{}",
        applied(),
        fs::read_to_string(&metrics).unwrap_or_default()
    );
    let text = fs::read_to_string(&metrics).unwrap();
    let m = parse_metrics(&text);
    let get = |name: &str, labels: &[(&str, &str)]| {
        value(&m, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
    };
    assert_eq!(get("banshare_watch_lines_read_total", &[]), 8.0);
    assert_eq!(get("banshare_watch_active_bans", &[("jail", "sshd")]), 3.0);
    assert_eq!(
        get("banshare_watch_active_bans", &[("jail", "recidive")]),
        1.0
    );
    assert_eq!(
        get("banshare_watch_refused_total", &[("reason", "OwnNode")]),
        1.0
    );
    let malformed: f64 = m
        .iter()
        .filter(|((name, labels), _)| name == "banshare_watch_rejected_total" && !labels.is_empty())
        .map(|(_, (v, _))| v)
        .sum();
    assert_eq!(malformed, 1.0, "one line was no record:\n{text}");
    assert_eq!(get("banshare_watch_backend_errors_total", &[]), 0.0);
    assert_eq!(get("banshare_watch_lag_bytes", &[]), 0.0);
    assert_eq!(get("banshare_watch_lag_seconds", &[]), 0.0);
    assert_eq!(get("banshare_spool_records", &[]), 0.0);
    // Each origin node's last record, by its own time: a few seconds ago.
    let now = chrono::Utc::now().timestamp() as f64;
    for node in ["web1", "web2", "me"] {
        let seen = get(
            "banshare_watch_node_last_seen_timestamp_seconds",
            &[("node", node)],
        );
        assert!((now - 120.0..=now + 1.0).contains(&seen), "{node}: {seen}");
        assert_eq!(
            get("banshare_watch_node_breaker_open", &[("node", node)]),
            0.0
        );
    }
    // The propagation delay of the 6 applied records, with its type.
    assert_eq!(
        get("banshare_watch_propagation_delay_seconds_count", &[]),
        6.0
    );
    let (_, kind) = &m[&(
        "banshare_watch_propagation_delay_seconds_count".to_owned(),
        vec![],
    )];
    assert_eq!(kind, "histogram");
    let (_, kind) = &m[&("banshare_watch_applied_total".to_owned(), vec![])];
    assert_eq!(kind, "counter");

    // The same text over HTTP, on the loopback port it chose.
    let started = w.expect_logged(&["writing metrics to", "http://"]);
    let url = started.rsplit(' ').next().unwrap();
    let served = http_get(url.trim_start_matches("http://"));
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    let body = served.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(body, text);
    assert!(
        http_get(&url.trim_start_matches("http://").replace("/metrics", "/"))
            .starts_with("HTTP/1.1 404")
    );

    // A ban this node spooled (its log unreachable) shows, and its age
    // grows while it waits.
    support::run_ok(
        Command::new(BANSHARE)
            .args(["--config", "/dev/null", "--quiet", "ban", "192.0.2.50"])
            .args(["--node", "me", "--log"])
            .arg(w.dir.path().join("unmounted/newbans.log"))
            .arg("--spool-dir")
            .arg(w.dir.path().join("spool")),
    );
    assert!(
        wait_until(Duration::from_secs(20), || read("banshare_spool_records")
            == Some(1.0)),
        "{}",
        fs::read_to_string(&metrics).unwrap()
    );
    let age = read("banshare_spool_oldest_age_seconds").unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || read(
            "banshare_spool_oldest_age_seconds"
        )
        .unwrap()
            > age),
        "the age was not written again"
    );
    let spool = |name: &str| {
        let text = fs::read_to_string(&metrics).unwrap();
        value(&parse_metrics(&text), name, &[])
    };
    assert_eq!(spool("banshare_spool_records"), Some(1.0));
    let oldest = spool("banshare_spool_oldest_timestamp_seconds").unwrap();
    assert!((now - 60.0..=now + 60.0).contains(&oldest), "{oldest}");

    // Written atomically: no temporary file is left beside it, and the
    // last state is there after a clean stop.
    w.share("ban", "192.0.2.3", "web1", &["--jail", "sshd"]);
    w.expect("ban 192.0.2.3");
    w.stop();
    let m = parse_metrics(&fs::read_to_string(&metrics).unwrap());
    assert_eq!(value(&m, "banshare_watch_applied_total", &[]), Some(7.0));
    let names: Vec<_> = fs::read_dir(metrics.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["banshare.prom"]);
}

/// A plain HTTP/1.1 GET of `host:port/path`: the whole response.
fn http_get(address_and_path: &str) -> String {
    use std::io::{Read, Write};
    let (address, path) = address_and_path.split_at(address_and_path.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn the_metrics_endpoint_is_refused_on_an_address_other_hosts_reach() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BANSHARE)
        .args([
            "--config",
            "/dev/null",
            "watch",
            "--backend",
            "log",
            "--log",
        ])
        .arg(dir.path().join("newbans.log"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--metrics-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--metrics-listen") && err.contains("loopback"),
        "{err}"
    );
    assert!(!dir.path().join("state").exists());
}

#[test]
fn config_check_refuses_the_metrics_settings_the_daemons_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("banshare.toml");
    let missing = dir.path().join("no-such-folder/banshare.prom");
    for (text, key) in [
        (
            format!(
                "[watch]\nmetrics_file = {:?}\n",
                missing.display().to_string()
            ),
            "watch.metrics_file",
        ),
        (
            format!(
                "[monitor]\nmetrics_file = {:?}\n",
                missing.display().to_string()
            ),
            "monitor.metrics_file",
        ),
        (
            "[watch]\nmetrics_listen = \"198.51.100.1:9610\"\n".to_owned(),
            "watch.metrics_listen",
        ),
    ] {
        fs::write(&config, &text).unwrap();
        let out = Command::new(BANSHARE)
            .arg("--config")
            .arg(&config)
            .args(["config", "check"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(key), "{text}: {err}");
    }
    // Allowed explicitly, and a folder that exists: accepted.
    // With a log and a backend, without which `config check` refuses
    // what `watch` refuses.
    let text = format!(
        "[common]\nlog = {:?}\n[watch]\nbackend = \"log\"\n\
         metrics_listen = \"198.51.100.1:9610\"\nmetrics_listen_any = true\n\
         metrics_file = {:?}\n",
        dir.path().join("newbans.log").display().to_string(),
        dir.path().join("banshare.prom").display().to_string()
    );
    fs::write(&config, &text).unwrap();
    let out = Command::new(BANSHARE)
        .arg("--config")
        .arg(&config)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("metrics_listen_any = true"));
}

fn bans(state: &Path, args: &[&str]) -> Output {
    Command::new(BANSHARE)
        .args(["--config", "/dev/null", "bans", "--state-dir"])
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

/// `banshare bans --json` with `args`: the targets listed, in order.
fn listed(state: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--json"];
    all.extend(args);
    let out = bans(state, &all);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["version"], 1, "{json}");
    json["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn bans_lists_a_running_watchers_active_bans_with_filters() {
    let mut w = Watcher::start_with(NOT_SELF, &[]);
    let state = w.state_dir();
    share_bans(&w);
    w.expect("unban 198.51.100.8");
    // Saved within seconds of being applied, while the watcher runs.
    let saved = || {
        let text = fs::read_to_string(state.join("active.json")).unwrap_or_default();
        text.matches("\"target\"").count()
    };
    assert!(
        wait_until(Duration::from_secs(20), || saved() == 4),
        "the watcher never saved 4 bans: {:?}",
        listed(&state, &[])
    );
    assert_eq!(
        listed(&state, &[]),
        ["192.0.2.1", "192.0.2.2", "198.51.100.7", "2001:db8::/64"]
    );
    assert_eq!(listed(&state, &["--jail", "recidive"]), ["198.51.100.7"]);
    assert_eq!(
        listed(&state, &["--node", "web2"]),
        ["198.51.100.7"],
        "the unbanned address is not listed"
    );
    assert_eq!(
        listed(&state, &["--net", "192.0.2.0/24"]),
        ["192.0.2.1", "192.0.2.2"]
    );
    // An address inside a banned network is banned by it.
    assert_eq!(
        listed(&state, &["--addr", "2001:db8::5"]),
        ["2001:db8::/64"]
    );
    assert_eq!(
        listed(
            &state,
            &["--addr", "192.0.2.2", "--jail", "sshd", "--node", "web1"]
        ),
        ["192.0.2.2"]
    );
    assert!(listed(&state, &["--addr", "192.0.2.9"]).is_empty());

    let out = bans(&state, &["--json", "--addr", "198.51.100.7"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ban = &json["bans"][0];
    assert_eq!(
        (&ban["jail"], &ban["node"]),
        (&"recidive".into(), &"web2".into())
    );
    let since: chrono::DateTime<chrono::Utc> = ban["since"].as_str().unwrap().parse().unwrap();
    let until: chrono::DateTime<chrono::Utc> = ban["until"].as_str().unwrap().parse().unwrap();
    // The watcher's default bantime (30 minutes) from the record's time.
    assert_eq!((until - since).num_seconds(), 1800, "{ban}");

    // Text, one line per ban with its jail, node, since and until.
    let out = bans(&state, &["--jail", "sshd"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "a heading and 3 bans:\n{text}");
    assert!(lines[0].starts_with("ADDRESS"), "{text}");
    assert!(
        lines[1].starts_with("192.0.2.1 ")
            && lines[1].contains(" sshd ")
            && lines[1].contains(" web1 "),
        "{text}"
    );

    // Bad filters: exit 2, one line naming the argument, nothing read.
    for bad in [
        &["--net", "192.0.2.0/33"][..],
        &["--addr", "192.0.2.300"],
        &["--jail", "no such jail!"],
        &["--node", "a/b"],
    ] {
        let out = bans(&state, bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        assert!(err.contains(bad[0]), "{bad:?}: {err}");
    }

    // Without the watcher, from what it saved.
    w.stop();
    assert_eq!(listed(&state, &["--node", "web1"]).len(), 3);
    // No watcher ever ran there: exit 3, as for `status`.
    let out = bans(&w.dir.path().join("nothing"), &[]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

#[test]
fn the_monitor_metrics_count_what_it_shared() {
    let dir = tempfile::tempdir().unwrap();
    let (f2b_log, shared) = (
        dir.path().join("fail2ban.log"),
        dir.path().join("newbans.log"),
    );
    let (state, metrics) = (dir.path().join("state"), dir.path().join("monitor.prom"));
    fs::write(&f2b_log, b"").unwrap();
    fs::write(&shared, b"").unwrap();
    let mut monitor = Daemon(
        Command::new(BANSHARE)
            .args(["--config", "/dev/null", "monitor", "--node", "me"])
            .arg("--fail2ban-log")
            .arg(&f2b_log)
            .arg("--log")
            .arg(&shared)
            .arg("--state-dir")
            .arg(&state)
            .arg("--spool-dir")
            .arg(dir.path().join("spool"))
            .arg("--metrics-file")
            .arg(&metrics)
            .spawn()
            .unwrap(),
    );
    // Its first run starts at the end of fail2ban.log, once its cursor is
    // saved.
    assert!(wait_until(Duration::from_secs(20), || state
        .join("cursor.json")
        .exists()));
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S,%3f");
    let notice =
        |jail: &str, what: &str| format!("{now} fail2ban.actions [1]: NOTICE [{jail}] {what}\n");
    let lines = [
        notice("sshd", "Ban 192.0.2.10"),
        notice("sshd", "Ban 192.0.2.11"),
        notice("banshare", "Ban 192.0.2.12"),
    ];
    fs::write(&f2b_log, lines.concat()).unwrap();
    let read = || parse_metrics(&fs::read_to_string(&metrics).unwrap_or_default());
    let shared = || {
        let text = fs::read_to_string(&metrics).unwrap_or_default();
        unlabelled(&text, "banshare_monitor_shared_total")
    };
    assert!(
        wait_until(Duration::from_secs(20), || shared() == Some(2.0)),
        "{:?}",
        fs::read_to_string(&metrics)
    );
    let m = read();
    assert_eq!(
        value(&m, "banshare_monitor_not_shared_total", &[]),
        Some(1.0)
    );
    assert_eq!(value(&m, "banshare_monitor_spooled_total", &[]), Some(0.0));
    assert_eq!(
        value(&m, "banshare_monitor_fail2ban_log_readable", &[]),
        Some(1.0)
    );
    assert_eq!(value(&m, "banshare_monitor_running", &[]), Some(1.0));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(monitor.0.id() as i32, libc::SIGTERM) };
    assert!(monitor.0.wait().unwrap().success());
    assert_eq!(value(&read(), "banshare_monitor_running", &[]), Some(0.0));
}

/// docs/operations.md's `BanshareNodeSilent` alert (`time() - max by (node)
/// (banshare_watch_node_last_seen_timestamp_seconds) > 3600`) must go on
/// firing for a node that fell silent. The last-seen times live only in
/// the watcher's memory: restarted (a reboot, the rolling upgrade to this
/// release), a watcher resumes at its cursor and writes no series for the
/// silent node, so once every watcher restarted the alert resolves while
/// the node is still silent.
#[test]
fn a_restarted_watcher_still_reports_when_it_last_saw_each_node() {
    let mut w = Watcher::prepare("[watch]\nignoreself = false\n");
    let metrics = w.dir.path().join("banshare.prom");
    let args = ["--metrics-file", metrics.to_str().unwrap()];
    w.restart(&args);
    w.share("ban", "192.0.2.1", "web1", &["--jail", "sshd"]);
    let seen = || {
        let text = fs::read_to_string(&metrics).unwrap_or_default();
        text.lines().any(|l| {
            l.starts_with("banshare_watch_node_last_seen_timestamp_seconds{node=\"web1\"}")
        })
    };
    assert!(
        wait_until(Duration::from_secs(20), seen),
        "the first watcher never reported web1"
    );
    let started = || {
        fs::read_to_string(&metrics)
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("banshare_watch_start_time_seconds "))
            .map(str::to_owned)
    };
    let first = started().expect("the first watcher's start time");
    w.stop();
    w.restart(&args);
    // The restarted watcher's own file: another start time, running.
    let rewritten = || {
        started().is_some_and(|s| s != first)
            && fs::read_to_string(&metrics)
                .unwrap_or_default()
                .contains("banshare_watch_running 1")
    };
    assert!(wait_until(Duration::from_secs(20), rewritten));
    assert!(
        wait_until(Duration::from_secs(10), seen),
        "after a restart, no last-seen time for web1:\n{}",
        fs::read_to_string(&metrics)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("node"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Review 13 (L6): right after a ban, `status` counted it while `bans`
/// listed nothing for up to 5 s: the active bans were saved on their own
/// timer. Whatever `status` counts, `bans` lists.
#[test]
fn bans_lists_every_ban_that_status_counts() {
    let w = Watcher::start_with(NOT_SELF, &[]);
    let state = w.state_dir();
    w.share("ban", "192.0.2.41", "web1", &["--jail", "sshd"]);
    assert!(
        wait_until(Duration::from_secs(20), || w.status()["active_bans"] == 1),
        "status never counted the ban: {}",
        w.status()
    );
    assert_eq!(listed(&state, &[]), ["192.0.2.41"]);
}
