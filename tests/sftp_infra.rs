//! Smoke tests of the test cluster's restricted SFTP account, with the
//! OpenSSH client tools only (no banshare code): upload and listing, the
//! chroot and the missing shell, host key rotation, and sshfs and SFTP
//! writers sharing files in one folder.
//!
//! These need root (CI runs as root) and fail without it.

mod support;

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Output, Stdio};
use support::cluster::Cluster;

/// ssh/sftp options: only the cluster's SFTP key and known_hosts, strict
/// host key checking, never a prompt, no config file of the machine's.
fn ssh_options(cluster: &Cluster) -> Vec<OsString> {
    let mut options: Vec<OsString> = vec!["-F".into(), "/dev/null".into(), "-i".into()];
    options.push(cluster.sftp_identity().into());
    let mut known_hosts = OsString::from("UserKnownHostsFile=");
    known_hosts.push(cluster.known_hosts());
    for option in [
        known_hosts,
        "GlobalKnownHostsFile=/dev/null".into(),
        "StrictHostKeyChecking=yes".into(),
        "BatchMode=yes".into(),
        "IdentitiesOnly=yes".into(),
        "ConnectTimeout=5".into(),
    ] {
        options.push("-o".into());
        options.push(option);
    }
    options
}

fn destination(cluster: &Cluster) -> String {
    format!("{}@{}", cluster.sftp_user(), cluster.fileserver_ip())
}

/// Runs `sftp -b` with `batch` (one command a line; the first failing
/// command ends it with exit 1) as the SFTP user from `node`'s namespace.
fn sftp(cluster: &Cluster, node: usize, dir: &Path, batch: &str) -> Output {
    let batch_file = dir.join("batch");
    fs::write(&batch_file, batch).unwrap();
    cluster
        .command_in(cluster.node_ns(node), "sftp")
        .args(ssh_options(cluster))
        .arg("-b")
        .arg(&batch_file)
        .arg(destination(cluster))
        .stdin(Stdio::null())
        .output()
        .expect("run sftp (Debian package openssh-client)")
}

/// [`sftp`] that must succeed; returns its stdout.
fn sftp_ok(cluster: &Cluster, node: usize, dir: &Path, batch: &str) -> String {
    let output = sftp(cluster, node, dir, batch);
    assert!(
        output.status.success(),
        "sftp failed ({}) on batch:\n{batch}\n--- stdout:\n{}\n--- stderr:\n{}\n--- sshd log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        cluster.sshd_log(),
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The lines of `sftp -b` output that are not the echoed commands.
fn listing(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|line| !line.starts_with("sftp>"))
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}

fn sftp_uid(cluster: &Cluster) -> u32 {
    fs::metadata(cluster.sftp_share_dir()).unwrap().uid()
}

#[test]
fn sftp_user_puts_and_lists_files_in_share() {
    let cluster = Cluster::new("sftpput", 1);
    let local = tempfile::tempdir().unwrap();
    let upload = local.path().join("hello.txt");
    fs::write(&upload, "uploaded over sftp\n").unwrap();

    let stdout = sftp_ok(
        &cluster,
        0,
        local.path(),
        &format!("put {} /share/hello.txt\nls -1 /share\n", upload.display()),
    );

    assert!(
        listing(&stdout)
            .iter()
            .any(|name| name.ends_with("hello.txt")),
        "ls /share does not show hello.txt:\n{stdout}"
    );
    let on_disk = cluster.sftp_share_dir().join("hello.txt");
    assert_eq!(
        fs::read_to_string(&on_disk).expect("the uploaded file on the file server"),
        "uploaded over sftp\n"
    );
    let owner = fs::metadata(&on_disk).unwrap().uid();
    assert_eq!(owner, sftp_uid(&cluster), "uploaded file's owner");
    assert_eq!(
        cluster.sftp_url("hello.txt"),
        format!("sftp://bsftp@{}/share/hello.txt", cluster.fileserver_ip())
    );
}

#[test]
fn sftp_user_is_chrooted_and_has_no_shell() {
    let cluster = Cluster::new("sftpjail", 1);
    let local = tempfile::tempdir().unwrap();

    // Inside the chroot, / holds only share, and .. of / is / itself.
    let stdout = sftp_ok(&cluster, 0, local.path(), "ls -1 /\nls -1 /..\npwd\n");
    let names = listing(&stdout);
    assert_eq!(
        names,
        ["/share", "/../share", "Remote working directory: /share"],
        "sftp output:\n{stdout}"
    );
    let escape = sftp(
        &cluster,
        0,
        local.path(),
        &format!(
            "get /etc/passwd {}\n",
            local.path().join("passwd").display()
        ),
    );
    assert!(
        !escape.status.success(),
        "got /etc/passwd through the chroot"
    );
    assert!(!local.path().join("passwd").exists());

    // ForceCommand internal-sftp replaces any command: it never runs.
    // internal-sftp exits 1 at once on our empty input, but a status
    // proves little, so the command's own effects are checked too.
    let marker = local.path().join("shell-ran");
    let shell = cluster
        .command_in(cluster.node_ns(0), "ssh")
        .args(ssh_options(&cluster))
        .arg(destination(&cluster))
        .arg(format!("touch {}; echo shell-$((6 * 7))", marker.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shell_stdout = String::from_utf8_lossy(&shell.stdout);
    assert!(
        !shell.status.success() && !shell_stdout.contains("shell-42") && !marker.exists(),
        "the SFTP user ran a shell command: {shell_stdout}"
    );
    // Nor with a terminal.
    let tty = cluster
        .command_in(cluster.node_ns(0), "ssh")
        .args(ssh_options(&cluster))
        .args(["-tt", &destination(&cluster)])
        .arg("echo shell-$((6 * 7))")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&tty.stdout).contains("shell-42"));

    // No TCP forwarding: ssh -W asks the server for a direct-tcpip channel.
    let forward = cluster
        .command_in(cluster.node_ns(0), "ssh")
        .args(ssh_options(&cluster))
        .args(["-W", &format!("{}:22", cluster.fileserver_ip())])
        .arg(destination(&cluster))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let forward_stderr = String::from_utf8_lossy(&forward.stderr);
    assert!(
        !forward.status.success() && forward_stderr.contains("administratively prohibited"),
        "ssh -W was not refused ({}): {forward_stderr}",
        forward.status
    );

    // The account's key is not root's: the SFTP key does not log in as root.
    let as_root = cluster
        .command_in(cluster.node_ns(0), "ssh")
        .args(ssh_options(&cluster))
        .arg(format!("root@{}", cluster.fileserver_ip()))
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!as_root.status.success(), "the SFTP key logged in as root");
}

#[test]
fn rotated_host_key_is_refused_until_pinned() {
    let cluster = Cluster::new("sftprotate", 1);
    let local = tempfile::tempdir().unwrap();
    let before = cluster.host_public_key();
    sftp_ok(&cluster, 0, local.path(), "ls /share\n");

    cluster.rotate_host_key();

    let after = cluster.host_public_key();
    assert_ne!(before, after, "rotate_host_key kept the key");
    assert!(after.starts_with("ssh-ed25519 "), "{after}");
    assert!(cluster.host_key_path().is_file());
    let refused = sftp(&cluster, 0, local.path(), "ls /share\n");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            && stderr.contains("Host key verification failed"),
        "sftp with a stale known_hosts was not refused for the host key ({}):\n{stderr}",
        refused.status
    );

    cluster.trust_host_key();
    let known_hosts = fs::read_to_string(cluster.known_hosts()).unwrap();
    assert_eq!(
        known_hosts,
        format!("{} {after}\n", cluster.fileserver_ip())
    );
    sftp_ok(&cluster, 0, local.path(), "ls /share\n");
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for append: {e}", path.display()));
    file.write_all(text.as_bytes()).unwrap();
}

/// Appends `text` to `/share/<file>` over SFTP: `reput` (put -a) writes a
/// local file from offset = the remote size, without truncating, so the
/// local copy is the remote content plus `text`.
fn sftp_append(cluster: &Cluster, node: usize, dir: &Path, file: &str, text: &str) {
    let current = fs::read_to_string(cluster.sftp_share_dir().join(file)).unwrap();
    let local = dir.join(format!("{file}.local"));
    fs::write(&local, format!("{current}{text}")).unwrap();
    sftp_ok(
        cluster,
        node,
        dir,
        &format!("reput {} /share/{file}\n", local.display()),
    );
}

#[test]
fn sshfs_and_sftp_writers_share_one_folder() {
    let cluster = Cluster::new("sftpmix", 2);
    let local = tempfile::tempdir().unwrap();
    let share = cluster.sftp_share_dir();
    let uid = sftp_uid(&cluster);
    let mount = cluster.mount_sftp_share(1);
    assert_eq!(mount, cluster.sftp_share_mountpoint(1));

    // Created through sshfs (by root on node 1), appended over SFTP.
    fs::write(mount.join("a.log"), "a: sshfs\n").unwrap();
    assert_eq!(fs::metadata(share.join("a.log")).unwrap().uid(), uid);
    sftp_append(&cluster, 0, local.path(), "a.log", "a: sftp\n");
    assert_eq!(
        fs::read_to_string(share.join("a.log")).unwrap(),
        "a: sshfs\na: sftp\n"
    );

    // Created over SFTP, appended through sshfs.
    let upload = local.path().join("b");
    fs::write(&upload, "b: sftp\n").unwrap();
    sftp_ok(
        &cluster,
        0,
        local.path(),
        &format!("put {} /share/b.log\n", upload.display()),
    );
    append(&mount.join("b.log"), "b: sshfs\n");
    assert_eq!(
        fs::read_to_string(share.join("b.log")).unwrap(),
        "b: sftp\nb: sshfs\n"
    );

    // Created by the administrator on the server, appended both ways.
    let log = cluster.create_sftp_file("newbans.log");
    assert_eq!(log, share.join("newbans.log"));
    append(&mount.join("newbans.log"), "1 sshfs\n");
    sftp_append(&cluster, 0, local.path(), "newbans.log", "2 sftp\n");
    append(&mount.join("newbans.log"), "3 sshfs\n");
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "1 sshfs\n2 sftp\n3 sshfs\n"
    );

    // A lock file made through one path can be broken through the other.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(mount.join("newbans.log.lock"))
        .unwrap();
    sftp_ok(&cluster, 0, local.path(), "rm /share/newbans.log.lock\n");
    assert!(!share.join("newbans.log.lock").exists());
    sftp_ok(
        &cluster,
        0,
        local.path(),
        &format!("put {} /share/newbans.log.lock\n", upload.display()),
    );
    fs::remove_file(mount.join("newbans.log.lock")).expect("remove the lock through sshfs");
    assert!(!share.join("newbans.log.lock").exists());

    cluster.unmount_sftp_share(1);
    assert!(fs::read_dir(&mount).unwrap().next().is_none());
}

#[test]
fn sftp_share_mount_reconnects_after_sshd_restart() {
    let cluster = Cluster::new("sftprestart", 1);
    let mount = cluster.mount_sftp_share(0);
    let export = cluster.mount(0);
    cluster.stop_sshd();
    cluster.start_sshd();
    let mut errors = Vec::new();
    let written = support::wait_until(std::time::Duration::from_secs(20), || {
        fs::write(mount.join("after.txt"), "x")
            .map_err(|e| {
                if errors.last() != Some(&e.to_string()) {
                    errors.push(e.to_string());
                }
            })
            .is_ok()
    });
    assert!(
        written,
        "the SFTP share mount did not reconnect within 20 s: {errors:?}\n--- sshfs log:\n{}\n--- sshd log:\n{}",
        cluster.sftp_share_sshfs_log(0),
        cluster.sshd_log()
    );
    assert_eq!(
        fs::read_to_string(cluster.sftp_share_dir().join("after.txt")).unwrap(),
        "x"
    );
    // Both kinds of mount coexist on one node.
    fs::write(export.join("export.txt"), "y").unwrap();
    assert!(cluster.export_dir().join("export.txt").exists());
    assert!(!cluster.sftp_share_dir().join("export.txt").exists());
}
