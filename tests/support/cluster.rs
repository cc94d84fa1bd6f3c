//! A throwaway multi-host network on one machine, for integration tests.
//!
//! ```text
//! root netns: bridge <id>br, no address
//!   ├─ veth ─ netns <prefix>-fs  198.18.0.1    file server: sshd, serves <tmp>/export
//!   ├─ veth ─ netns <prefix>-n0  198.18.0.11   node 0: sshfs mount at <tmp>/mnt/n0
//!   ├─ ...                       198.18.0.1x   node i at .(11 + i)
//!   └─ veth ─ netns <prefix>-at  198.18.0.250  attacker
//! ```
//!
//! The file server also has a restricted SFTP account, as an administrator
//! would set one up for banshare's SFTP transport: the system user
//! [`SFTP_USER`] (created on first use, shared by all clusters on the machine
//! and left in place), chrooted with `ForceCommand internal-sftp` into a
//! directory of its own per cluster:
//!
//! ```text
//! /srv/banshare-test/                    root:root 0755, shared, left in place
//! /srv/banshare-test/<id>/               root:root 0755, removed on drop
//! /srv/banshare-test/<id>/authorized_keys  root 0644, the SFTP user's key
//! /srv/banshare-test/<id>/chroot/        root:root 0755, ChrootDirectory
//! /srv/banshare-test/<id>/chroot/share/  bsftp:bsftp 0775, the log's folder
//! ```
//!
//! The SFTP user sees `share` as `/share`. [`Cluster::mount_sftp_share`]
//! mounts that same folder on a node with sshfs *as the SFTP user*, so every
//! file in it, whichever way it was written, belongs to that one user.
//!
//! Every cluster has its own bridge, so clusters that exist at the same time
//! (parallel tests, benches) may reuse the same addresses. Names carry the
//! pid and a per-process counter, so they do not collide either.
//!
//! This needs root. Tests that use it must fail, never skip, when root or a
//! tool is missing (CI runs as root), so setup panics with a clear message.

use super::wait_until;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const FILESERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);
/// Node `i` gets 198.18.0.(FIRST_NODE_OCTET + i).
const FIRST_NODE_OCTET: usize = 11;
/// Keeps node addresses below the attacker's, and tags within "n199".
const MAX_NODES: usize = 200;

/// How long sshd may take to accept connections, and sshfs to mount.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds `can_connect` when a firewall drops the SYN; a connect across the
/// bridge otherwise takes well under a millisecond.
const CONNECT_TIMEOUT_SECS: &str = "2";

/// sshfs and ssh options common to every mount; `sshfs_options` adds the
/// cluster's key files. Measured with sshfs 3.7.3: with the defaults, stat()
/// and reads through an already open file see another host's append only
/// after about 20 s (sshfs's own cache); with `dir_cache=no` alone, after
/// 1 s (the kernel's FUSE attribute cache). With all three, at once.
const SSHFS_OPTIONS: &str = concat!(
    // Trust only the freshly generated host key; never prompt, never try
    // agent keys or passwords.
    "StrictHostKeyChecking=yes,BatchMode=yes,IdentitiesOnly=yes,",
    // Reconnect after the file server went away; notice a silent server
    // within ~4-6 s, and give up on an unreachable one after 5 s.
    "reconnect,ServerAliveInterval=2,ServerAliveCountMax=2,ConnectTimeout=5,",
    "dir_cache=no,attr_timeout=0,entry_timeout=0",
);

/// The restricted SFTP account on every cluster's file server.
pub const SFTP_USER: &str = "bsftp";
/// Holds one directory per cluster for the SFTP account: the chroot and the
/// account's authorized key. sshd accepts a chroot only if every component
/// of its path is root-owned and not group- or world-writable, so this
/// cannot be under /tmp.
const SFTP_BASE: &str = "/srv/banshare-test";

const REQUIRED_TOOLS: &[&str] = &[
    "ip",
    "useradd",
    "usermod",
    "nsenter",
    "ssh-keygen",
    "/usr/sbin/sshd",
    "sshfs",
    "fusermount3",
    "umount",
    "bash",
    "timeout",
];

static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);

/// The first `ip netns add` on a machine turns /run/netns into a mount
/// point, and two of them racing can stack two mounts there. Serializing
/// network setup avoids that at least among the tests of one binary.
pub(super) static NETWORK_SETUP: Mutex<()> = Mutex::new(());

/// Panics unless the effective user is root.
pub fn require_root() {
    if effective_uid() != Some(0) {
        panic!("this test needs root (CI runs as root)");
    }
}

/// The two folders a node can mount from the file server.
#[derive(Clone, Copy)]
enum Share {
    /// [`Cluster::export_dir`], as root.
    Export,
    /// [`Cluster::sftp_share_dir`], as the SFTP user.
    Sftp,
}

/// One test host: a network namespace with one veth link to the bridge.
pub(super) struct Host {
    pub(super) ns: String,
    /// The root-namespace end of the veth pair; the other end is `eth0`.
    pub(super) veth: String,
    pub(super) ip: Ipv4Addr,
}

/// A bridge, a file server running sshd, `n` nodes that can mount its export
/// over sshfs, and an attacker. Dropping it removes all of it.
///
/// All methods take `&self`, so that one thread can, say, stop the file
/// server while others drive the nodes.
pub struct Cluster {
    /// Unique per live cluster; starts every interface name.
    id: String,
    fileserver: Host,
    attacker: Host,
    nodes: Vec<Host>,
    dir: TempDir,
    export: PathBuf,
    sshd: Mutex<Option<Child>>,
    /// The sshfs process of each node while its share is mounted.
    sshfs: Vec<Mutex<Option<Child>>>,
    /// The sshfs process of each node while the SFTP share is mounted.
    sftp_sshfs: Vec<Mutex<Option<Child>>>,
    /// `/srv/banshare-test/<id>`: everything of this cluster's SFTP account
    /// on the file server.
    sftp_base: PathBuf,
    sftp_identity: PathBuf,
    known_hosts: PathBuf,
    /// Servers started by [`Cluster::serve_tcp`], reaped on drop.
    servers: Mutex<Vec<Child>>,
}

impl Cluster {
    /// Builds the network and starts the file server. `name_hint` shows up
    /// in namespace and temp dir names, to tell clusters apart when debugging.
    pub fn new(name_hint: &str, n_nodes: usize) -> Cluster {
        require_root();
        require_tools();
        assert!(
            (1..=MAX_NODES).contains(&n_nodes),
            "a cluster has 1 to {MAX_NODES} nodes, not {n_nodes}"
        );
        let id = unique_id();
        let prefix = format!("bs-{}-{id}", sanitize(name_hint));
        let host = |tag: &str, ip| Host {
            ns: format!("{prefix}-{tag}"),
            veth: format!("{id}{tag}"),
            ip,
        };
        let nodes = (0..n_nodes)
            .map(|i| host(&format!("n{i}"), node_ip(i)))
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let cluster = Cluster {
            fileserver: host("fs", FILESERVER_IP),
            attacker: host("at", ATTACKER_IP),
            nodes,
            export: dir.path().join("export"),
            sftp_identity: dir.path().join("ssh/sftp_key"),
            known_hosts: dir.path().join("ssh/known_hosts"),
            dir,
            sftp_base: Path::new(SFTP_BASE).join(&id),
            id,
            sshd: Mutex::new(None),
            sshfs: (0..n_nodes).map(|_| Mutex::new(None)).collect(),
            sftp_sshfs: (0..n_nodes).map(|_| Mutex::new(None)).collect(),
            servers: Mutex::new(Vec::new()),
        };
        // From here on, a panic drops `cluster`, and Drop removes whatever
        // part of the setup already exists.
        cluster.create_dirs();
        cluster.create_sftp_dirs();
        cluster.create_network();
        cluster.create_ssh_files();
        cluster.start_sshd();
        cluster
    }

    /// `nft ARGS` in node `node`'s namespace; its stdout, or None on failure.
    pub fn nft(&self, node: usize, args: &[&str]) -> Option<String> {
        let out = self
            .command_in(self.node_ns(node), "nft")
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The addresses in node `node`'s nftables v4 set (`inet banshare v4`);
    /// none while the set cannot be listed.
    pub fn banned_v4(&self, node: usize) -> Vec<String> {
        let Some(json) = self.nft(node, &["-j", "list", "set", "inet", "banshare", "v4"]) else {
            return Vec::new();
        };
        let value: serde_json::Value = serde_json::from_str(&json).expect("nft's JSON");
        let mut found = Vec::new();
        for item in value["nftables"].as_array().into_iter().flatten() {
            for elem in item["set"]["elem"].as_array().into_iter().flatten() {
                // Elements with a timeout are {"elem": {"val": ..., "timeout": ...}}.
                let val = elem.get("elem").map_or(elem, |e| &e["val"]);
                if let Some(address) = val.as_str() {
                    found.push(address.to_owned());
                }
            }
        }
        found
    }

    /// The number of elements in `nft list set inet TABLE SET` in namespace
    /// `ns`; 0 while the set cannot be listed.
    pub fn nft_set_len(&self, ns: &str, table: &str, set: &str) -> usize {
        let Ok(out) = self
            .command_in(ns, "nft")
            .args(["-j", "list", "set", "inet", table, set])
            .output()
        else {
            return 0;
        };
        if !out.status.success() {
            return 0;
        }
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft's JSON");
        value["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["set"]["elem"].as_array())
            .map(Vec::len)
            .sum()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn node_ns(&self, node: usize) -> &str {
        &self.nodes[node].ns
    }

    pub fn fileserver_ns(&self) -> &str {
        &self.fileserver.ns
    }

    pub fn attacker_ns(&self) -> &str {
        &self.attacker.ns
    }

    pub fn node_ip(&self, node: usize) -> Ipv4Addr {
        self.nodes[node].ip
    }

    pub fn fileserver_ip(&self) -> Ipv4Addr {
        self.fileserver.ip
    }

    pub fn attacker_ip(&self) -> Ipv4Addr {
        self.attacker.ip
    }

    /// The directory the file server exports, as seen on the file server.
    pub fn export_dir(&self) -> &Path {
        &self.export
    }

    /// Where `node` mounts the export (whether or not it is mounted now).
    pub fn mountpoint(&self, node: usize) -> PathBuf {
        self.path(&format!("mnt/n{node}"))
    }

    /// `ip netns exec <ns> <program>`; the caller adds args, env and stdio.
    pub fn command_in(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(program);
        command
    }

    /// Whether a TCP connection from namespace `from_ns` to `ip:port` is
    /// accepted within 2 s (false when refused, dropped or timed out).
    pub fn can_connect(&self, from_ns: &str, ip: Ipv4Addr, port: u16) -> bool {
        // bash's /dev/tcp makes the connection, so no netcat is needed.
        self.command_in(from_ns, "timeout")
            .args([
                CONNECT_TIMEOUT_SECS,
                "bash",
                "-c",
                r#"exec 3<>"/dev/tcp/$0/$1""#,
            ])
            .arg(ip.to_string())
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Starts a TCP server on `port` in node `node`'s namespace that accepts
    /// and closes every connection (python3, no netcat needed), and waits
    /// until the attacker can connect to it. Drop kills it with everything
    /// else in the namespace.
    pub fn serve_tcp(&self, node: usize, port: u16) {
        let script = "import socket,sys\n\
            s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n\
            s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
            s.bind((sys.argv[1],int(sys.argv[2])))\n\
            s.listen(128)\n\
            while True:\n    c,_=s.accept(); c.close()\n";
        let ip = self.node_ip(node);
        let server = self
            .command_in(self.node_ns(node), "python3")
            .args(["-c", script, &ip.to_string(), &port.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .expect("start python3 (Debian package python3)");
        lock(&self.servers).push(server);
        let up = wait_until(SETUP_TIMEOUT, || {
            self.can_connect(self.attacker_ns(), ip, port)
        });
        assert!(
            up,
            "the TCP server on {ip}:{port} never accepted a connection"
        );
    }

    /// Mounts the export on `node` with sshfs over that node's network, and
    /// returns the mountpoint once the mount is in place.
    pub fn mount(&self, node: usize) -> PathBuf {
        self.mount_sshfs(Share::Export, node)
    }

    /// Unmounts `node`'s share and ends its sshfs process; no-op if it is
    /// not mounted. As on a real host that lost its mount, files still open
    /// on the old mount then fail with ENOTCONN, and the mountpoint is a
    /// plain empty local directory: writing there succeeds, locally.
    pub fn unmount(&self, node: usize) {
        self.detach_mount(Share::Export, node);
        let mountpoint = self.mountpoint(node);
        assert!(
            !is_sshfs_mounted(&mountpoint),
            "sshfs still mounted at {} after unmounting",
            mountpoint.display()
        );
    }

    pub fn remount(&self, node: usize) -> PathBuf {
        self.unmount(node);
        self.mount(node)
    }

    /// The restricted SFTP account's user name, [`SFTP_USER`].
    pub fn sftp_user(&self) -> &str {
        SFTP_USER
    }

    /// The private key (ed25519, OpenSSH format, no passphrase) that the SFTP
    /// user's authorized_keys accepts. Root's key (used by [`Self::mount`])
    /// is not accepted for the SFTP user, nor this one for root.
    pub fn sftp_identity(&self) -> &Path {
        &self.sftp_identity
    }

    /// A known_hosts file that trusts exactly the file server's host key at
    /// 198.18.0.1 as of cluster creation or the last [`Self::trust_host_key`].
    /// The sshfs mounts use it too.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// The SFTP user's `share` folder as the file server sees it (the real
    /// path on disk); the SFTP user sees it as `/share`.
    pub fn sftp_share_dir(&self) -> PathBuf {
        self.sftp_chroot().join("share")
    }

    /// `sftp://<user>@198.18.0.1/share/<file>`: `file` in the share, with
    /// the path as the chrooted SFTP user sees it.
    pub fn sftp_url(&self, file: &str) -> String {
        format!("sftp://{SFTP_USER}@{FILESERVER_IP}/share/{file}")
    }

    /// Creates the empty file `file` in the share, as an administrator
    /// would create the log before the first append: owned by the SFTP user,
    /// mode 0664. Returns its real path on disk. Files a test writes into
    /// [`Self::sftp_share_dir`] directly belong to root and are not
    /// writable over SFTP; use this (or chown) for those.
    pub fn create_sftp_file(&self, file: &str) -> PathBuf {
        let path = self.sftp_share_dir().join(file);
        write(&path, "");
        let (uid, gid) = sftp_user_ids();
        chown(&path, uid, gid);
        chmod(&path, 0o664);
        path
    }

    /// Where `node` mounts the SFTP share (whether or not it is mounted).
    pub fn sftp_share_mountpoint(&self, node: usize) -> PathBuf {
        self.path(&format!("mnt/n{node}-sftp"))
    }

    /// Mounts the SFTP share on `node` with sshfs over that node's network,
    /// as the SFTP user with [`Self::sftp_identity`] (the chroot applies:
    /// the remote path is `/share`), with the same options as
    /// [`Self::mount`]. The sshfs process is root's; files it creates belong
    /// to the SFTP user on the file server, like those created over SFTP,
    /// so writers through either path can append to and remove each other's
    /// files. Independent of [`Self::mount`]: a node may have both.
    pub fn mount_sftp_share(&self, node: usize) -> PathBuf {
        self.mount_sshfs(Share::Sftp, node)
    }

    /// Unmounts `node`'s SFTP share, like [`Self::unmount`]; no-op if it is
    /// not mounted.
    pub fn unmount_sftp_share(&self, node: usize) {
        self.detach_mount(Share::Sftp, node);
        let mountpoint = self.sftp_share_mountpoint(node);
        assert!(
            !is_sshfs_mounted(&mountpoint),
            "sshfs still mounted at {} after unmounting",
            mountpoint.display()
        );
    }

    /// Everything the sshfs of `node`'s SFTP share wrote, across mounts.
    pub fn sftp_share_sshfs_log(&self, node: usize) -> String {
        read_lossy(&self.sftp_share_sshfs_log_path(node))
    }

    /// The file server's private host key; the public key is beside it with
    /// `.pub` appended. Replaced (not rewritten in place) by
    /// [`Self::rotate_host_key`].
    pub fn host_key_path(&self) -> PathBuf {
        self.path("ssh/host_key")
    }

    /// The file server's current public host key, "<type> <base64>" (as in
    /// a known_hosts line after the host name).
    pub fn host_public_key(&self) -> String {
        let public = read_lossy(&self.path("ssh/host_key.pub"));
        public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Gives the file server a freshly generated host key: stops sshd (and
    /// every session), swaps the key, and starts sshd again, which it leaves
    /// running even if it was stopped before. [`Self::known_hosts`] is left
    /// alone, so clients that check strictly, the sshfs mounts' reconnects
    /// included, now refuse the server until [`Self::trust_host_key`].
    pub fn rotate_host_key(&self) {
        self.stop_sshd();
        let new = self.path("ssh/host_key.new");
        let _ = fs::remove_file(&new);
        let _ = fs::remove_file(self.path("ssh/host_key.new.pub"));
        generate_key(&new);
        rename(&new, &self.host_key_path());
        rename(
            &self.path("ssh/host_key.new.pub"),
            &self.path("ssh/host_key.pub"),
        );
        self.start_sshd();
    }

    /// Rewrites [`Self::known_hosts`] to trust exactly the current host key
    /// (pinning a rotated key on purpose). Atomic: a client reading the file
    /// meanwhile sees the old or the new one.
    pub fn trust_host_key(&self) {
        let line = format!("{FILESERVER_IP} {}\n", self.host_public_key());
        let new = self.path("ssh/known_hosts.new");
        write(&new, &line);
        rename(&new, &self.known_hosts);
    }

    /// Starts sshd on the file server and waits until it accepts TCP
    /// connections from node 0.
    pub fn start_sshd(&self) {
        let mut sshd = lock(&self.sshd);
        assert!(sshd.is_none(), "sshd is already running");
        let child = self
            .command_in(&self.fileserver.ns, "/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.path("ssh/sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(append_to(&self.path("log/sshd.log")))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sshd: {e}"));
        *sshd = Some(child);
        let ready = wait_until(SETUP_TIMEOUT, || {
            has_exited(&mut sshd) || self.can_connect(&self.nodes[0].ns, FILESERVER_IP, 22)
        });
        if !ready || has_exited(&mut sshd) {
            panic!(
                "sshd did not accept connections on {FILESERVER_IP}:22 within {SETUP_TIMEOUT:?} \
                 (exited: {}). If it says it listens, check the root netns firewall: with \
                 br_netfilter loaded, bridged packets pass its FORWARD chain.\n--- sshd log:\n{}",
                has_exited(&mut sshd),
                self.sshd_log()
            );
        }
    }

    /// Stops the file server's sshd and every session it serves, so mounted
    /// nodes lose their connection. No-op if sshd is not running.
    pub fn stop_sshd(&self) {
        let mut running = lock(&self.sshd);
        if let Some(mut sshd) = running.take() {
            kill_descendants(sshd.id());
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
    }

    /// What the file server's sshd processes (the listener and every
    /// session, SFTP included: the cluster's sftp is internal-sftp) have
    /// done so far, summed from /proc: for measuring what followers cost
    /// the file server. Processes that ended are not counted, so take
    /// differences over a stretch in which the sessions stay up.
    pub fn fileserver_work(&self) -> ServerWork {
        let ns = fs::metadata(format!("/run/netns/{}", self.fileserver.ns))
            .map(|m| (m.dev(), m.ino()))
            .ok();
        let mut work = ServerWork::default();
        let Ok(dir) = fs::read_dir("/proc") else {
            return work;
        };
        for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            let in_ns = fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| (m.dev(), m.ino()))
                .ok();
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if in_ns.is_none() || in_ns != ns || comm.trim() != "sshd" {
                continue;
            }
            work.add(pid);
        }
        work
    }

    /// Everything sshd wrote to stderr, across restarts.
    pub fn sshd_log(&self) -> String {
        read_lossy(&self.path("log/sshd.log"))
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn sshfs_log(&self, node: usize) -> PathBuf {
        self.path(&format!("log/sshfs-n{node}.log"))
    }

    fn sftp_share_sshfs_log_path(&self, node: usize) -> PathBuf {
        self.path(&format!("log/sshfs-sftp-n{node}.log"))
    }

    /// The SFTP user's ChrootDirectory.
    fn sftp_chroot(&self) -> PathBuf {
        self.sftp_base.join("chroot")
    }

    /// The sshfs process slot of `share` on `node`.
    fn sshfs_slot(&self, share: Share, node: usize) -> &Mutex<Option<Child>> {
        match share {
            Share::Export => &self.sshfs[node],
            Share::Sftp => &self.sftp_sshfs[node],
        }
    }

    fn share_mountpoint(&self, share: Share, node: usize) -> PathBuf {
        match share {
            Share::Export => self.mountpoint(node),
            Share::Sftp => self.sftp_share_mountpoint(node),
        }
    }

    /// Mounts `share` on `node` with sshfs over that node's network. Returns
    /// the mountpoint once mounted and connected.
    fn mount_sshfs(&self, share: Share, node: usize) -> PathBuf {
        let (remote, identity, log, what) = match share {
            Share::Export => (
                format!("root@{FILESERVER_IP}:{}", self.export.display()),
                self.path("ssh/client_key"),
                self.sshfs_log(node),
                format!("the export on node {node}"),
            ),
            Share::Sftp => (
                format!("{SFTP_USER}@{FILESERVER_IP}:/share"),
                self.sftp_identity.clone(),
                self.sftp_share_sshfs_log_path(node),
                format!("the SFTP share on node {node}"),
            ),
        };
        let mountpoint = self.share_mountpoint(share, node);
        let mut sshfs = lock(self.sshfs_slot(share, node));
        assert!(sshfs.is_none(), "{what} is already mounted");
        // nsenter, not `ip netns exec`: that would put sshfs in a private
        // mount namespace, and the mount would be invisible to everyone else.
        // -f keeps sshfs in the foreground as our child, so that we can end
        // and reap it (it daemonizes otherwise).
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.nodes[node].ns))
            .args(["sshfs", "-f", "-F", "/dev/null"])
            .arg(remote)
            .arg(&mountpoint)
            .arg("-o")
            .arg(self.sshfs_options(&identity))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(append_to(&log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sshfs: {e}"));
        *sshfs = Some(child);
        wait_until(SETUP_TIMEOUT, || {
            is_sshfs_mounted(&mountpoint) || has_exited(&mut sshfs)
        });
        // sshfs 3.7 mounts first and connects after; a request through the
        // mount waits for the connection. Without this, a test that stops
        // sshd right away kills the connection before it is up, sshfs exits
        // and unmounts, and writes land in the bare local mountpoint.
        let connected = is_sshfs_mounted(&mountpoint)
            && fs::read_dir(&mountpoint).is_ok()
            && is_sshfs_mounted(&mountpoint);
        if !connected {
            panic!(
                "sshfs did not mount and connect {what} at {} within {SETUP_TIMEOUT:?}\n\
                 --- sshfs log:\n{}\n--- sshd log:\n{}",
                mountpoint.display(),
                read_lossy(&log),
                self.sshd_log(),
            );
        }
        mountpoint
    }

    /// The bridge every host of this cluster is linked to: more hosts
    /// (tests/support/nats.rs's servers) can join it with [`add_host`].
    pub fn bridge(&self) -> String {
        format!("{}br", self.id)
    }

    fn hosts(&self) -> impl Iterator<Item = &Host> {
        [&self.fileserver, &self.attacker]
            .into_iter()
            .chain(&self.nodes)
    }

    fn create_dirs(&self) {
        let mut dirs = vec![self.export.clone(), self.path("ssh"), self.path("log")];
        dirs.extend((0..self.nodes.len()).map(|node| self.mountpoint(node)));
        dirs.extend((0..self.nodes.len()).map(|node| self.sftp_share_mountpoint(node)));
        // sshd's privilege separation directory; it refuses to start without.
        dirs.push("/run/sshd".into());
        for dir in dirs {
            fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
    }

    fn create_network(&self) {
        add_bridge(&self.bridge());
        for host in self.hosts() {
            add_host(&self.bridge(), host);
        }
    }

    /// Generates host and client keys, and the files that make each side
    /// trust exactly the other's fresh key.
    fn create_ssh_files(&self) {
        for key in ["ssh/host_key", "ssh/client_key", "ssh/sftp_key"] {
            generate_key(&self.path(key));
        }
        let client_key = read_lossy(&self.path("ssh/client_key.pub"));
        write(&self.path("ssh/authorized_keys"), &client_key);
        // sshd reads authorized_keys with the user's uid, and the temp dir
        // is private to root: the SFTP user's file lives on the server side.
        let sftp_key = read_lossy(&self.path("ssh/sftp_key.pub"));
        let sftp_authorized_keys = self.sftp_base.join("authorized_keys");
        write(&sftp_authorized_keys, &sftp_key);
        chmod(&sftp_authorized_keys, 0o644);
        self.trust_host_key();
        write(&self.path("ssh/sshd_config"), &self.sshd_config());
    }

    /// The SFTP user (if missing) and this cluster's directories for it;
    /// see the module doc for the layout.
    fn create_sftp_dirs(&self) {
        let base = Path::new(SFTP_BASE);
        // Tolerates other clusters creating it at the same time.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(base)
            .unwrap_or_else(|e| panic!("cannot create {SFTP_BASE}: {e}"));
        // Ours: repair it if something loosened it. The ancestors are the
        // system's: only check them.
        chown(base, 0, 0);
        chmod(base, 0o755);
        for ancestor in base.ancestors().skip(1) {
            require_chroot_safe(ancestor);
        }
        ensure_sftp_user(&base.join(".sftp-user.lock"));
        // The id is unique among live clusters, so a directory of that name
        // was left behind by a dead process that had our pid.
        if self.sftp_base.exists() {
            let _ = fs::remove_dir_all(&self.sftp_base);
        }
        let chroot = self.sftp_chroot();
        for dir in [&self.sftp_base, &chroot] {
            fs::create_dir(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            chmod(dir, 0o755);
        }
        let share = self.sftp_share_dir();
        fs::create_dir(&share).unwrap_or_else(|e| panic!("cannot create {}: {e}", share.display()));
        let (uid, gid) = sftp_user_ids();
        chown(&share, uid, gid);
        chmod(&share, 0o775);
    }

    fn sshd_config(&self) -> String {
        let path = |relative| self.path(relative).display().to_string();
        format!(
            "ListenAddress {FILESERVER_IP}:22\n\
             HostKey {}\n\
             PidFile {}\n\
             AuthorizedKeysFile {}\n\
             StrictModes no\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             Subsystem sftp internal-sftp\n\
             \n\
             Match User {SFTP_USER}\n\
             \tChrootDirectory {}\n\
             \tForceCommand internal-sftp -d /share\n\
             \tAuthorizedKeysFile {}\n\
             \tPasswordAuthentication no\n\
             \tAllowTcpForwarding no\n\
             \tX11Forwarding no\n\
             \tAllowAgentForwarding no\n\
             \tPermitTunnel no\n\
             \tPermitTTY no\n",
            path("ssh/host_key"),
            path("log/sshd.pid"),
            path("ssh/authorized_keys"),
            self.sftp_chroot().display(),
            self.sftp_base.join("authorized_keys").display(),
        )
    }

    fn sshfs_options(&self, identity: &Path) -> String {
        format!(
            "IdentityFile={},UserKnownHostsFile={},{SSHFS_OPTIONS}",
            identity.display(),
            self.known_hosts.display(),
        )
    }

    /// Lazily unmounts `share` on `node` and ends its sshfs. Never panics
    /// (Drop uses it).
    fn detach_mount(&self, share: Share, node: usize) {
        if node >= self.nodes.len() {
            return;
        }
        let Some(mut sshfs) = lock(self.sshfs_slot(share, node)).take() else {
            return;
        };
        let mountpoint = self.share_mountpoint(share, node);
        // Lazy (-z, -l): detach at once even while files are open on it.
        let unmounted = run_quietly(
            Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&mountpoint),
        );
        if !unmounted {
            run_quietly(Command::new("umount").arg("-l").arg(&mountpoint));
        }
        // A detached mount with open files would keep sshfs serving them.
        let _ = sshfs.kill();
        let _ = sshfs.wait();
    }
}

impl Drop for Cluster {
    /// Best effort throughout: this also runs while a failed test unwinds,
    /// and a panic here would abort the whole test binary.
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.detach_mount(Share::Export, node);
            self.detach_mount(Share::Sftp, node);
        }
        self.stop_sshd();
        // Whatever a test started in a namespace and left running.
        for host in self.hosts() {
            kill_processes_in(&host.ns);
        }
        for mut server in lock(&self.servers).drain(..) {
            let _ = server.kill();
            let _ = server.wait();
        }
        for host in self.hosts() {
            remove_host(host);
        }
        remove_link(&self.bridge());
        // No mounts lead into it (the SFTP share is mounted under the temp
        // dir, from the server's side), and the name is this cluster's own.
        // The shared parent and the SFTP user stay for other clusters.
        let _ = fs::remove_dir_all(&self.sftp_base);
        // The temp dir goes when the `dir` field drops, after this.
    }
}

/// Creates bridge `name`, up, with no address: the hosts on it reach each
/// other, and nothing else.
pub(super) fn add_bridge(name: &str) {
    let _serialized = lock(&NETWORK_SETUP);
    ip(&["link", "add", name, "type", "bridge"]);
    ip(&["link", "set", name, "up"]);
}

/// Creates `host`'s namespace and links it to `bridge` with its address.
/// Panics if any step fails; [`remove_host`] undoes what was done.
pub(super) fn add_host(bridge: &str, host: &Host) {
    let _serialized = lock(&NETWORK_SETUP);
    let address = format!("{}/24", host.ip);
    ip(&["netns", "add", &host.ns]);
    // Created directly inside the namespace, the inner end can be
    // called eth0 without clashing in the root namespace.
    ip(&[
        "link", "add", &host.veth, "type", "veth", "peer", "name", "eth0", "netns", &host.ns,
    ]);
    ip(&["link", "set", &host.veth, "master", bridge, "up"]);
    ip(&["-n", &host.ns, "addr", "add", &address, "dev", "eth0"]);
    ip(&["-n", &host.ns, "link", "set", "eth0", "up"]);
    ip(&["-n", &host.ns, "link", "set", "lo", "up"]);
}

/// Deletes `host`'s namespace and link; never panics (Drop uses it). The
/// caller kills the namespace's processes first.
pub(super) fn remove_host(host: &Host) {
    run_quietly(Command::new("ip").args(["netns", "del", &host.ns]));
    // Gone with the namespace, unless a process still holds it.
    remove_link(&host.veth);
}

/// Deletes the network interface `name` (a bridge, a veth); never panics.
pub(super) fn remove_link(name: &str) {
    run_quietly(Command::new("ip").args(["link", "del", name]));
}

fn node_ip(node: usize) -> Ipv4Addr {
    let octet = u8::try_from(FIRST_NODE_OCTET + node).expect("node index out of range");
    Ipv4Addr::new(198, 18, 0, octet)
}

/// Unique among the clusters alive on this machine: "b", the pid, then a
/// per-process counter, in hex. Interface names (at most 15 bytes) are this
/// plus a tag of up to 4: 1 + 6 (pids stay below 2^22) + 3 + 4 = 14.
pub(super) fn unique_id() -> String {
    let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed) % 0x1000;
    format!("b{:x}{n:03x}", std::process::id())
}

/// `hint` reduced to a short, harmless piece of a namespace name.
pub(super) fn sanitize(hint: &str) -> String {
    let clean: String = hint
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(20)
        .collect::<String>()
        .to_ascii_lowercase();
    if clean.is_empty() {
        "cluster".into()
    } else {
        clean
    }
}

fn effective_uid() -> Option<u32> {
    // "Uid:\t<real>\t<effective>\t<saved>\t<filesystem>"
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

fn require_tools() {
    let missing: Vec<&str> = REQUIRED_TOOLS
        .iter()
        .copied()
        .filter(|tool| !tool_exists(tool))
        .collect();
    assert!(
        missing.is_empty(),
        "cluster tests need these programs, which are not installed or not in PATH: {missing:?} \
         (Debian packages: iproute2 util-linux openssh-client openssh-server sshfs fuse3 bash coreutils)"
    );
}

pub(super) fn tool_exists(tool: &str) -> bool {
    if tool.contains('/') {
        return Path::new(tool).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// Runs a setup command to completion; panics with its stderr if it fails.
pub(super) fn run(command: &mut Command) {
    run_output(command);
}

/// Runs `command` to completion and returns its stdout; panics with its
/// stderr if it fails.
pub(super) fn run_output(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a cleanup command to completion, ignoring any failure.
pub(super) fn run_quietly(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Locks `mutex` even if a panic poisoned it: the child process (or none)
/// it guards stays valid, and Drop must still clean up.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn has_exited(child: &mut Option<Child>) -> bool {
    child
        .as_mut()
        .is_some_and(|child| !matches!(child.try_wait(), Ok(None)))
}

/// Whether /proc/self/mountinfo lists an sshfs mount at `mountpoint`.
fn is_sshfs_mounted(mountpoint: &Path) -> bool {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let mountpoint = mountpoint.to_string_lossy();
    // "<id> <parent> <dev> <root> <mountpoint> <options> ... - <fstype> <source> <options>"
    mountinfo.lines().any(|line| {
        line.split(' ').nth(4) == Some(&*mountpoint)
            && line
                .split(" - ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with("fuse.sshfs "))
    })
}

/// A log file that a child process's output is appended to.
pub(super) fn append_to(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

pub(super) fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

fn write(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn rename(from: &Path, to: &Path) {
    fs::rename(from, to)
        .unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", from.display(), to.display()));
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {mode:o} {}: {e}", path.display()));
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("cannot chown {uid}:{gid} {}: {e}", path.display()));
}

/// A new ed25519 key pair without passphrase: `path` and `path.pub`.
fn generate_key(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "banshare-test", "-f"])
        .arg(path));
}

/// Panics unless sshd would accept `dir` as a component of a chroot path:
/// a directory owned by root, not writable by group or others.
fn require_chroot_safe(dir: &Path) {
    let meta = fs::metadata(dir).unwrap_or_else(|e| panic!("cannot stat {}: {e}", dir.display()));
    assert!(
        meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o022 == 0,
        "sshd refuses a chroot under {}: every component must be a root-owned directory \
         that is not group- or world-writable (it is uid {}, mode {:o})",
        dir.display(),
        meta.uid(),
        meta.mode() & 0o7777,
    );
}

/// The field of [`SFTP_USER`]'s line in `file` (/etc/passwd or /etc/shadow)
/// at `index`, if the user exists.
fn sftp_user_field(file: &str, index: usize) -> Option<String> {
    let text = fs::read_to_string(file).ok()?;
    text.lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&SFTP_USER))
        .and_then(|fields| fields.get(index).map(|field| field.to_string()))
}

/// The SFTP user's uid and gid; panics if the user does not exist.
fn sftp_user_ids() -> (u32, u32) {
    let id = |index| {
        sftp_user_field("/etc/passwd", index)
            .and_then(|field| field.parse().ok())
            .unwrap_or_else(|| panic!("no user {SFTP_USER} in /etc/passwd"))
    };
    (id(2), id(3))
}

/// Creates the SFTP user unless it exists, and makes sure sshd lets it log
/// in. Idempotent, and safe when several clusters, in this process or in
/// others, do it at once.
///
/// "Already exists" is not enough for that: useradd checks whether the name
/// is taken before it locks /etc/passwd, so two racing `useradd bsftp` can
/// both succeed, the second replacing the first's entry with a new uid and
/// gid, after which the first cluster's `share` belongs to nobody. Hence
/// `lock_file`, held exclusively (flock) from the check to the end.
fn ensure_sftp_user(lock_file: &Path) {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_file)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_file.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_file.display()));
    let deadline = Instant::now() + SETUP_TIMEOUT;
    // With `UsePAM no`, sshd refuses every login, keys included, to an
    // account whose password field starts with "!" ("account is locked"),
    // which is what useradd writes by default. "*" means no password
    // either, without the lock.
    let unlocked = || sftp_user_field("/etc/shadow", 1).is_some_and(|pw| !pw.starts_with('!'));
    loop {
        let exists = sftp_user_field("/etc/passwd", 0).is_some();
        let outcome = if !exists {
            Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .args(["--password", "*", SFTP_USER])
                .stdin(Stdio::null())
                .output()
        } else if !unlocked() {
            Command::new("usermod")
                .args(["--password", "*", SFTP_USER])
                .stdin(Stdio::null())
                .output()
        } else {
            return;
        };
        // Success or not, the next round checks the files again. A failure
        // is retried: something other than a cluster (an administrator's
        // tool) may hold the passwd lock for a moment.
        let failure = match outcome {
            Ok(output) if output.status.success() => continue,
            Ok(output) => format!(
                "{} ({})",
                String::from_utf8_lossy(&output.stderr).trim(),
                output.status
            ),
            Err(e) => e.to_string(),
        };
        let settled = sftp_user_field("/etc/passwd", 0).is_some() && unlocked();
        if !settled && Instant::now() >= deadline {
            panic!("cannot create the SFTP test user {SFTP_USER}: {failure}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Kills all processes in network namespace `ns`.
pub(super) fn kill_processes_in(ns: &str) {
    let Ok(output) = Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    let pids: Vec<u32> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect();
    kill(&pids);
}

/// Kills every descendant of `root`, leaves first, and lets each parent reap
/// its killed children before killing the parent in turn. Killing a parent
/// first would orphan its children to PID 1, and on minimal VMs and
/// containers PID 1 may never reap them: zombies would pile up.
fn kill_descendants(root: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let leaves = live_descendant_leaves(root);
        if leaves.is_empty() {
            return;
        }
        kill(&leaves);
        wait_until(Duration::from_secs(1), || {
            leaves
                .iter()
                .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        });
    }
}

/// The descendants of `root` that are alive and have no live children.
fn live_descendant_leaves(root: u32) -> Vec<u32> {
    let live: Vec<ProcessStat> = processes().into_iter().filter(|p| !p.zombie).collect();
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&parent) = tree.get(next) {
        tree.extend(live.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        next += 1;
    }
    let has_children = |pid: u32| live.iter().any(|p| p.ppid == pid);
    tree.into_iter()
        .skip(1)
        .filter(|&pid| !has_children(pid))
        .collect()
}

fn kill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    // The shell's builtin kill, so that procps need not be installed.
    run_quietly(
        Command::new("sh")
            .args(["-c", r#"kill -KILL "$@""#, "sh"])
            .args(pids.iter().map(u32::to_string)),
    );
}

struct ProcessStat {
    pid: u32,
    ppid: u32,
    zombie: bool,
}

fn processes() -> Vec<ProcessStat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter_map(process_stat)
        .collect()
}

/// Parses /proc/<pid>/stat: "<pid> (<comm>) <state> <ppid> ...", where
/// comm may itself contain spaces and parentheses.
fn process_stat(pid: u32) -> Option<ProcessStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let zombie = fields.next()? == "Z";
    let ppid = fields.next()?.parse().ok()?;
    Some(ProcessStat { pid, ppid, zombie })
}

/// Work done by a set of processes: see [`Cluster::fileserver_work`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerWork {
    /// CPU time, user and system.
    pub cpu: Duration,
    /// write(2)-like system calls (`syscw` in /proc/PID/io): about three
    /// per SFTP request an sshd session answers.
    pub writes: u64,
}

impl ServerWork {
    fn add(&mut self, pid: u32) {
        let writes = fs::read_to_string(format!("/proc/{pid}/io"))
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|l| l.strip_prefix("syscw: "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            });
        let ticks = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the command name, which is in parentheses:
                // utime and stime are the 12th and 13th.
                let rest = stat.rsplit_once(')')?.1.to_owned();
                let fields: Vec<&str> = rest.split_whitespace().collect();
                Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
            });
        // A process that ended meanwhile counts for nothing.
        if let (Some(writes), Some(ticks)) = (writes, ticks) {
            // SAFETY: sysconf has no preconditions.
            let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
            self.writes += writes;
            self.cpu += Duration::from_millis(ticks * 1000 / per_second);
        }
    }

    /// What was done since `earlier`.
    pub fn since(self, earlier: ServerWork) -> ServerWork {
        ServerWork {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            writes: self.writes.saturating_sub(earlier.writes),
        }
    }
}
