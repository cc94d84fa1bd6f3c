//! Review 13: failing tests for what a sysadmin running the package meets.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

use support::watcher::Watcher;
use support::{BANSHARE, wait_until};

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
}
