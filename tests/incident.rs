//! Incident controls against the real binary (`banshare watch` with the log
//! backend): pausing and resuming one node, lifting every ban of one node,
//! and the shared allowlist, whose records count only signed by an
//! operator. The allowlist across hosts, with nftables and sshfs, is in
//! tests/rolling_upgrade.rs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::watcher::{Watcher, now_ts};
use support::{BANSHARE, wait_until};

/// `banshare ARGS --state-dir <w's>`, which must succeed; its stderr.
fn control(w: &Watcher, args: &[&str]) -> String {
    let out = support::run_ok(
        Command::new(BANSHARE)
            .args(["--config", "/dev/null"])
            .args(args)
            .arg("--state-dir")
            .arg(w.state_dir()),
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn keygen(dir: &Path, node: &str) -> (PathBuf, String) {
    let out = dir.join(format!("{node}.key"));
    let run = support::run_ok(
        Command::new(BANSHARE)
            .args(["--config", "/dev/null", "keygen", "--node", node, "--out"])
            .arg(&out),
    );
    (out, String::from_utf8(run.stdout).unwrap())
}

/// Waits until `status --json` satisfies `cond`; panics with it if not.
fn wait_status(w: &Watcher, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let ok = wait_until(Duration::from_secs(10), || cond(&w.status()));
    assert!(ok, "{what}: status {}", w.status());
}

#[test]
fn a_paused_watcher_applies_nothing_and_catches_up_on_resume() {
    let mut w = Watcher::start(&[]);
    w.share("ban", "203.0.113.1", "web1", &[]);
    w.expect("ban 203.0.113.1");
    control(&w, &["pause", "--reason", "incident 42"]);
    let status = w.status();
    assert!(
        status["paused"]
            .as_str()
            .is_some_and(|p| p.ends_with("incident 42")),
        "pause returns once the watcher says so: {status}"
    );
    w.share("ban", "203.0.113.2", "web1", &[]);
    w.share("unban", "203.0.113.1", "web1", &[]);
    // Paused, it reads nothing: both records wait in the log.
    wait_status(&w, "the two records wait behind the cursor", |s| {
        s["lag_records"] == 2
    });
    assert!(
        !w.applied_now().iter().any(|l| l.contains("203.0.113.2")),
        "{:?}",
        w.applied_now()
    );
    // The pause outlives a restart.
    w.stop();
    w.restart(&[]);
    wait_status(&w, "restarted paused", |s| s["paused"].is_string());
    control(&w, &["resume"]);
    w.expect("ban 203.0.113.2");
    w.expect("unban 203.0.113.1");
    wait_status(&w, "resumed", |s| s["paused"].is_null());
}

#[test]
fn lift_node_lifts_its_bans_only_and_refuses_its_older_records() {
    let mut w = Watcher::start(&[]);
    w.share("ban", "203.0.113.1", "web3", &[]);
    w.share("ban", "203.0.113.2", "web3", &[]);
    w.share("ban", "203.0.113.3", "web1", &[]);
    w.expect("ban 203.0.113.3");
    let before = now_ts();
    // A record of web3's from before the lift, appended after it (a
    // replay, or a copy read again) must not ban.
    let late = format!(
        "<13>Nov 21 18:28:04 banshare[1]: HOST 203.0.113.4 PORT 22 node=web3 ts={before} id=0123456789abcdef0123\n"
    );
    let said = control(&w, &["lift", "--node", "web3"]);
    assert!(said.contains("lifted 2 ban(s) of node web3"), "{said}");
    w.expect("unban 203.0.113.1");
    w.expect("unban 203.0.113.2");
    w.append(late.as_bytes());
    w.share("ban", "203.0.113.5", "web3", &[]);
    w.expect("ban 203.0.113.5");
    let all = w.stop();
    assert!(!all.iter().any(|l| l.contains("203.0.113.4")), "{all:?}");
    assert!(!all.iter().any(|l| l == "unban 203.0.113.3"), "{all:?}");
    let status = w.status();
    assert_eq!(status["skipped"]["NodeLifted"], 1, "{status}");
    assert_eq!(status["lifted"]["web3"]["bans"], 2, "{status}");
    // After a restart, the lifted bans stay lifted and the old record
    // stays refused.
    w.append(late.as_bytes());
    w.restart(&[]);
    w.share("ban", "203.0.113.6", "web1", &[]);
    w.expect("ban 203.0.113.6");
    let again = w.stop();
    assert!(
        !again
            .iter()
            .any(|l| l.contains("203.0.113.1") || l.contains("203.0.113.4")),
        "{again:?}"
    );
}

#[test]
fn an_operators_allowlist_lifts_and_refuses_bans_until_removed() {
    let keys = tempfile::tempdir().unwrap();
    let (web1_key, web1_line) = keygen(keys.path(), "web1");
    let (ops_key, ops_line) = keygen(keys.path(), "ops");
    let trusted = keys.path().join("trusted_keys");
    std::fs::write(&trusted, format!("{web1_line}{ops_line}")).unwrap();
    let config = format!(
        "[trust]\nkeys = {:?}\noperators = [\"ops\"]\n",
        trusted.display().to_string()
    );
    let mut w = Watcher::start_with(&config, &[]);
    let web1 = ["--key", web1_key.to_str().unwrap()];
    let ops = ["--key", ops_key.to_str().unwrap()];
    w.share("ban", "198.51.100.7", "web1", &web1);
    w.share("ban", "203.0.113.9", "web1", &web1);
    w.expect("ban 203.0.113.9");
    // A node's own key cannot allowlist (nor can no key at all).
    w.share("allow", "203.0.113.0/24", "web1", &web1);
    w.share("allow", "198.51.100.0/24", "ops", &ops);
    w.expect("unban 198.51.100.7");
    w.share("ban", "198.51.100.8", "web1", &web1);
    w.share(
        "allow",
        "198.51.100.0/24",
        "ops",
        &[&ops[..], &["--remove"]].concat(),
    );
    w.share("ban", "198.51.100.9", "web1", &web1);
    w.expect("ban 198.51.100.9");
    let all = w.stop();
    assert!(
        !all.iter()
            .any(|l| l.contains("203.0.113.9") && l.starts_with("unban")),
        "{all:?}"
    );
    assert!(!all.iter().any(|l| l.contains("198.51.100.8")), "{all:?}");
    let status = w.status();
    assert_eq!(status["rejected"]["not_operator"], 1, "{status}");
    assert_eq!(status["skipped"]["Allowlisted"], 1, "{status}");
    // The entry survives restarts: the cursor moves past its record.
    w.share("allow", "198.51.100.0/24", "ops", &ops);
    w.restart(&[]);
    let listed = serde_json::json!(["198.51.100.0/24"]);
    wait_status(&w, "listed again", |s| s["allowlist"] == listed);
    w.stop();
    w.restart(&[]);
    wait_status(&w, "still listed after a restart", |s| {
        s["allowlist"] == listed
    });
    w.share("ban", "198.51.100.10", "web1", &web1);
    w.share("ban", "192.0.2.10", "web1", &web1);
    w.expect("ban 192.0.2.10");
    let again = w.stop();
    assert!(
        !again.iter().any(|l| l.contains("198.51.100.10")),
        "{again:?}"
    );
}

#[test]
fn allow_refuses_to_write_an_unsigned_record_or_an_entry_for_everything() {
    let w = Watcher::prepare("");
    for (args, says) in [
        (&["198.51.100.0/24"][..], "signed by an operator"),
        (&["0.0.0.0/0"][..], "every address"),
    ] {
        let out = Command::new(BANSHARE)
            .args(["--config", "/dev/null", "allow"])
            .args(args)
            .args(["--node", "ops", "--log"])
            .arg(w.log())
            .arg("--spool-dir")
            .arg(w.dir.path().join("spool"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
    assert_eq!(std::fs::read(w.log()).unwrap(), b"");
}
