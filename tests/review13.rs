//! Review 13: failing tests for what a sysadmin running the package meets.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

use support::BANSHARE;

/// `banshare` run as `uid` (its own group, no other groups): the packaged
/// compaction unit runs as the `banshare` user, the writers reach the log
/// as the file server's sshfs account.
fn banshare_as(uid: u32, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
        ])
        .arg(BANSHARE)
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs")
}

/// The packaged `banshare-compact` runs as the `banshare` user. On a file
/// server where another account (the one the nodes' sshfs mounts log in
/// as) owns the log, a compaction that cannot give the new log the old
/// one's owner must not rename it over the log: it did, said
/// "compacted" and exited 0, and from then on every writer was refused
/// (Permission denied) and only spooled.
#[test]
fn a_compaction_that_cannot_keep_the_logs_owner_leaves_the_log_to_its_writers() {
    const WRITER: u32 = 64_100;
    const COMPACTOR: u32 = 64_101;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    fs::create_dir(&share).unwrap();
    // A folder both may write in (a shared group, here simply 0777).
    for d in [dir.path(), &share] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let log = share.join("newbans.log");
    let config = |name: &str| {
        let spool = dir.path().join(format!("spool-{name}"));
        fs::create_dir(&spool).unwrap();
        fs::set_permissions(&spool, fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join(format!("{name}.toml"));
        fs::write(
            &path,
            format!(
                "[common]\nlog = \"{}\"\nnode = \"{name}\"\nspool_dir = \"{}\"\n",
                log.display(),
                spool.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (writer, compactor) = (config("writer"), config("compactor"));
    fs::write(&log, "").unwrap();
    std::os::unix::fs::chown(&log, Some(WRITER), Some(WRITER)).unwrap();
    fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).unwrap();
    let ban = |addr: &str| banshare_as(WRITER, &["-c", &writer, "ban", "-b", "600", addr]);
    let out = ban("198.51.100.7");
    assert!(out.status.success(), "{out:?}");

    let out = banshare_as(COMPACTOR, &["-c", &compactor, "compact"]);
    let owner = fs::metadata(&log).unwrap().uid();
    let out2 = ban("198.51.100.8");
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        owner == WRITER && text.contains("198.51.100.8"),
        "compact exit {:?}, stdout {}, stderr {}\nthe log now belongs to uid {owner}; \
         the writer's next ban: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out2.stderr),
    );
}
