//! A cluster in the middle of a rolling upgrade: the previous release's
//! `banshare` (built from its commit, see tests/support/prev.rs) and this
//! one, on test hosts that share the log over sshfs from a real sshd and
//! ban with nftables; a ban is proven by the attacker's TCP connect.
//!
//! - an old appender's ban reaches new and old watchers;
//! - a new appender's unban, ban and allowlist record reach an old watcher,
//!   which applies the first two and rejects the third as an unknown verb,
//!   without crashing and without banning;
//! - a new watcher takes over an old watcher's state directory: it resumes
//!   at the old cursor with the old active bans, applies nothing twice, and
//!   honours allowlist records from then on.
//!
//! Needs root, git and the commit of the previous release; fails without.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use support::cluster::{Cluster, require_root};
use support::prev::previous_banshare;
use support::{BANSHARE, wait_until};

const PORT: u16 = 8080;

/// A watcher (of either release) in a node's namespace.
struct Watcher {
    child: Child,
    bin: PathBuf,
    state: PathBuf,
}

impl Watcher {
    fn start(
        cluster: &Cluster,
        node: usize,
        bin: &Path,
        config: &Path,
        log: &Path,
        dir: &Path,
    ) -> Watcher {
        let state = dir.join("state");
        let child = cluster
            .command_in(cluster.node_ns(node), bin)
            .arg("--config")
            .arg(config)
            .args(["watch", "--backend", "nftables", "--node"])
            .arg(format!("node{node}"))
            .arg("--log")
            .arg(log)
            .arg("--state-dir")
            .arg(&state)
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let w = Watcher {
            child,
            bin: bin.to_owned(),
            state,
        };
        let started = wait_until(Duration::from_secs(20), || w.status()["running"] == true);
        assert!(
            started,
            "node{node}'s watcher did not start: {}",
            w.status()
        );
        w
    }

    /// `status --json`, by the watcher's own release.
    fn status(&self) -> serde_json::Value {
        let out = std::process::Command::new(&self.bin)
            .args(["--config", "/dev/null", "status", "--json", "--state-dir"])
            .arg(&self.state)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn wait_status(&self, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
        let ok = wait_until(Duration::from_secs(20), || cond(&self.status()));
        assert!(ok, "{what}: status {}", self.status());
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "the watcher exited with {status} on SIGTERM"
        );
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn old_and_new_releases_share_bans_and_the_new_one_takes_over_old_state() {
    require_root();
    let old = previous_banshare();
    let cluster = Cluster::new("upgrade", 3);
    fs::write(cluster.export_dir().join("newbans.log"), b"").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mounts: Vec<PathBuf> = (0..3).map(|i| cluster.mount(i)).collect();
    let log = |i: usize| mounts[i].join("newbans.log");
    for node in 1..3 {
        cluster.serve_tcp(node, PORT);
    }
    let reachable =
        |node: usize| cluster.can_connect(cluster.attacker_ns(), cluster.node_ip(node), PORT);
    let blocked_on = |node: usize, yes: bool, what: &str| {
        let ok = wait_until(Duration::from_secs(15), || reachable(node) != yes);
        assert!(
            ok,
            "node{node} {}: {what}",
            if yes {
                "still accepts the attacker"
            } else {
                "still blocks the attacker"
            }
        );
    };

    // node0 writes, with its own key and the operator's.
    let key = |name: &str| -> String {
        let out = support::run_ok(
            std::process::Command::new(BANSHARE)
                .args(["--config", "/dev/null", "keygen", "--node", name, "--out"])
                .arg(dir.path().join(format!("{name}.key"))),
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let trusted = dir.path().join("trusted_keys");
    fs::write(&trusted, key("node0") + &key("ops")).unwrap();
    let old_config = dir.path().join("old.toml");
    fs::write(&old_config, format!("[trust]\nkeys = {trusted:?}\n")).unwrap();
    let new_config = dir.path().join("new.toml");
    fs::write(
        &new_config,
        format!("[trust]\nkeys = {trusted:?}\noperators = [\"ops\"]\n"),
    )
    .unwrap();
    let attacker = cluster.attacker_ip().to_string();
    let write = |bin: &Path, op: &str, extra: &[&str], signer: &str| {
        support::run_ok(
            cluster
                .command_in(cluster.node_ns(0), bin)
                .args(["--config", "/dev/null", "--quiet", op])
                .args(extra)
                .args(["--node", signer, "--key"])
                .arg(dir.path().join(format!("{signer}.key")))
                .arg("--log")
                .arg(log(0))
                .arg("--spool-dir")
                .arg(dir.path().join(format!("spool-{signer}"))),
        );
    };

    let mut old_watcher = Watcher::start(
        &cluster,
        1,
        &old,
        &old_config,
        &log(1),
        &dir.path().join("n1"),
    );
    let new_watcher = Watcher::start(
        &cluster,
        2,
        Path::new(BANSHARE),
        &new_config,
        &log(2),
        &dir.path().join("n2"),
    );
    for node in 1..3 {
        assert!(reachable(node), "node{node} must accept the attacker first");
    }

    write(&old, "ban", &[&attacker, "--bantime", "600"], "node0");
    blocked_on(1, true, "old appender, old watcher");
    blocked_on(2, true, "old appender, new watcher");
    write(Path::new(BANSHARE), "unban", &[&attacker], "node0");
    blocked_on(1, false, "new appender's unban, old watcher");
    blocked_on(2, false, "new appender's unban, new watcher");
    write(
        Path::new(BANSHARE),
        "ban",
        &[&attacker, "--bantime", "600"],
        "node0",
    );
    blocked_on(1, true, "new appender's ban, old watcher");
    blocked_on(2, true, "new appender's ban, new watcher");

    // The allowlist record: the new watcher lifts the ban; the old one
    // rejects the line, keeps running, and bans nothing more.
    write(Path::new(BANSHARE), "allow", &[&attacker], "ops");
    blocked_on(2, false, "allowlisted, new watcher");
    old_watcher.wait_status("the old watcher read the allowlist record", |s| {
        s["rejected"]["unknown_verb"] == 1
    });
    assert!(
        old_watcher.alive(),
        "the old watcher died on the new record"
    );
    assert!(!reachable(1), "the old watcher lifted nothing");
    old_watcher.wait_status("the old watcher applied the ban, unban, ban", |s| {
        s["applied"] == 3
    });
    let old_status = old_watcher.status();

    // The new `pause` refuses to signal an old watcher (SIGUSR1 would end
    // it) and says so; `resume` takes the flag back.
    let control = |cmd: &str| {
        std::process::Command::new(BANSHARE)
            .args(["--config", "/dev/null", cmd, "--state-dir"])
            .arg(dir.path().join("n1/state"))
            .output()
            .unwrap()
    };
    let paused = control("pause");
    let said = String::from_utf8_lossy(&paused.stderr);
    assert_eq!(paused.status.code(), Some(1), "{said}");
    assert!(said.contains("older release"), "{said}");
    assert!(old_watcher.alive(), "the old watcher was signalled");
    assert!(control("resume").status.success());

    // The new release takes over the old one's state directory.
    old_watcher.stop();
    let upgraded = Watcher::start(
        &cluster,
        1,
        Path::new(BANSHARE),
        &new_config,
        &log(1),
        &dir.path().join("n1"),
    );
    upgraded.wait_status("resumed at the old cursor, old bans restored", |s| {
        s["offset"] == old_status["offset"] && s["active_bans"] == 1 && s["lines_read"] == 0
    });
    assert!(!reachable(1), "the upgrade lifted the ban");
    // The allowlist record the old release rejected is behind the cursor:
    // an operator sends it again once every watcher is upgraded.
    write(Path::new(BANSHARE), "allow", &[&attacker], "ops");
    blocked_on(1, false, "allowlisted again, upgraded watcher");
    upgraded.wait_status("only the allowlist's unban applied", |s| {
        s["applied"] == 1 && s["lines_read"] == 1
    });
    upgraded.stop();
    new_watcher.stop();
}
