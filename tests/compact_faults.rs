//! `banshare compact` under the faults a file server meets: run by another
//! user than the log's owner, and a disk that fills during the copy.

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

/// Unmounts a tmpfs on drop, even when the test fails.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A compaction on a nearly full disk fails writing its copy (exit 1, the
/// log as it was: right), but leaves the partial copy behind, holding
/// whatever space was left: the writers' next appends fail for want of
/// it, and each daily run leaves another (a new pid in its name). Only a
/// failure after the copy was written removed it.
#[test]
fn a_compaction_that_runs_out_of_space_removes_its_partial_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("fs");
    fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96k", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount runs (root)");
    assert!(ok.success(), "mount tmpfs (needs root)");
    let _umount = Tmpfs(mnt.clone());
    let log = mnt.join("newbans.log");
    let config = dir.path().join("c.toml");
    fs::write(
        &config,
        format!(
            "[common]\nlog = \"{}\"\nnode = \"n1\"\nspool_dir = \"{}\"\n",
            log.display(),
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    fs::write(&log, "").unwrap();
    let addrs: String = (0..400)
        .map(|i| format!("198.51.{}.{}\n", 100 + i / 250, i % 250))
        .collect();
    let mut ban = Command::new(BANSHARE);
    ban.args([
        "-c",
        config.to_str().unwrap(),
        "ban",
        "-q",
        "-b",
        "600",
        "-",
    ]);
    let mut child = ban.stdin(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(addrs.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let size = fs::metadata(&log).unwrap().len();
    // Leave less room than the copy needs, more than nothing.
    let room = 96 * 1024 - size;
    assert!(room > 4096 && room < size, "log {size} bytes");
    let out = Command::new(BANSHARE)
        .args(["-c", config.to_str().unwrap(), "compact"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let left: Vec<_> = fs::read_dir(&mnt)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), e.metadata().unwrap().len()))
        .filter(|(name, _)| name.to_string_lossy().contains(".compact-"))
        .collect();
    assert!(
        left.is_empty(),
        "left behind: {left:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
