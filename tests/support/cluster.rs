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
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
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

const REQUIRED_TOOLS: &[&str] = &[
    "ip",
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
static NETWORK_SETUP: Mutex<()> = Mutex::new(());

/// Panics unless the effective user is root.
pub fn require_root() {
    if effective_uid() != Some(0) {
        panic!("this test needs root (CI runs as root)");
    }
}

/// One test host: a network namespace with one veth link to the bridge.
struct Host {
    ns: String,
    /// The root-namespace end of the veth pair; the other end is `eth0`.
    veth: String,
    ip: Ipv4Addr,
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
            dir,
            id,
            sshd: Mutex::new(None),
            sshfs: (0..n_nodes).map(|_| Mutex::new(None)).collect(),
        };
        // From here on, a panic drops `cluster`, and Drop removes whatever
        // part of the setup already exists.
        cluster.create_dirs();
        cluster.create_network();
        cluster.create_ssh_files();
        cluster.start_sshd();
        cluster
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
        self.command_in(self.node_ns(node), "python3")
            .args(["-c", script, &ip.to_string(), &port.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .expect("start python3 (Debian package python3)");
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
        let mut sshfs = lock(&self.sshfs[node]);
        assert!(sshfs.is_none(), "node {node} is already mounted");
        let mountpoint = self.mountpoint(node);
        // nsenter, not `ip netns exec`: that would put sshfs in a private
        // mount namespace, and the mount would be invisible to everyone else.
        // -f keeps sshfs in the foreground as our child, so that we can end
        // and reap it (it daemonizes otherwise).
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.nodes[node].ns))
            .args(["sshfs", "-f", "-F", "/dev/null"])
            .arg(format!("root@{FILESERVER_IP}:{}", self.export.display()))
            .arg(&mountpoint)
            .arg("-o")
            .arg(self.sshfs_options())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(append_to(&self.sshfs_log(node)))
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
                "sshfs did not mount and connect the export on node {node} at {} \
                 within {SETUP_TIMEOUT:?}\n\
                 --- sshfs log:\n{}\n--- sshd log:\n{}",
                mountpoint.display(),
                read_lossy(&self.sshfs_log(node)),
                self.sshd_log(),
            );
        }
        mountpoint
    }

    /// Unmounts `node`'s share and ends its sshfs process; no-op if it is
    /// not mounted. As on a real host that lost its mount, files still open
    /// on the old mount then fail with ENOTCONN, and the mountpoint is a
    /// plain empty local directory: writing there succeeds, locally.
    pub fn unmount(&self, node: usize) {
        self.detach_mount(node);
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

    fn bridge(&self) -> String {
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
        // sshd's privilege separation directory; it refuses to start without.
        dirs.push("/run/sshd".into());
        for dir in dirs {
            fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
    }

    fn create_network(&self) {
        let _serialized = lock(&NETWORK_SETUP);
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["link", "set", &bridge, "up"]);
        for host in self.hosts() {
            let address = format!("{}/24", host.ip);
            ip(&["netns", "add", &host.ns]);
            // Created directly inside the namespace, the inner end can be
            // called eth0 without clashing in the root namespace.
            ip(&[
                "link", "add", &host.veth, "type", "veth", "peer", "name", "eth0", "netns",
                &host.ns,
            ]);
            ip(&["link", "set", &host.veth, "master", &bridge, "up"]);
            ip(&["-n", &host.ns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &host.ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &host.ns, "link", "set", "lo", "up"]);
        }
    }

    /// Generates host and client keys, and the files that make each side
    /// trust exactly the other's fresh key.
    fn create_ssh_files(&self) {
        for key in ["ssh/host_key", "ssh/client_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "banshare-test", "-f"])
                .arg(self.path(key)));
        }
        let client_key = read_lossy(&self.path("ssh/client_key.pub"));
        write(&self.path("ssh/authorized_keys"), &client_key);
        // "<type> <base64> <comment>" becomes "<address> <type> <base64>".
        let host_key = read_lossy(&self.path("ssh/host_key.pub"));
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        write(
            &self.path("ssh/known_hosts"),
            &format!("{FILESERVER_IP} {}\n", host_key.join(" ")),
        );
        write(&self.path("ssh/sshd_config"), &self.sshd_config());
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
             Subsystem sftp internal-sftp\n",
            path("ssh/host_key"),
            path("log/sshd.pid"),
            path("ssh/authorized_keys"),
        )
    }

    fn sshfs_options(&self) -> String {
        format!(
            "IdentityFile={},UserKnownHostsFile={},{SSHFS_OPTIONS}",
            self.path("ssh/client_key").display(),
            self.path("ssh/known_hosts").display(),
        )
    }

    /// Lazily unmounts `node`'s share and ends its sshfs. Never panics
    /// (Drop uses it).
    fn detach_mount(&self, node: usize) {
        let Some(mut sshfs) = self.sshfs.get(node).and_then(|sshfs| lock(sshfs).take()) else {
            return;
        };
        let mountpoint = self.mountpoint(node);
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
        for node in 0..self.sshfs.len() {
            self.detach_mount(node);
        }
        self.stop_sshd();
        // Whatever a test started in a namespace and left running.
        for host in self.hosts() {
            kill_processes_in(&host.ns);
        }
        for host in self.hosts() {
            run_quietly(Command::new("ip").args(["netns", "del", &host.ns]));
            // Gone with the namespace, unless a process still holds it.
            run_quietly(Command::new("ip").args(["link", "del", &host.veth]));
        }
        run_quietly(Command::new("ip").args(["link", "del", &self.bridge()]));
        // The temp dir goes when the `dir` field drops, after this.
    }
}

fn node_ip(node: usize) -> Ipv4Addr {
    let octet = u8::try_from(FIRST_NODE_OCTET + node).expect("node index out of range");
    Ipv4Addr::new(198, 18, 0, octet)
}

/// Unique among the clusters alive on this machine: "b", the pid, then a
/// per-process counter, in hex. Interface names (at most 15 bytes) are this
/// plus a tag of up to 4: 1 + 6 (pids stay below 2^22) + 3 + 4 = 14.
fn unique_id() -> String {
    let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed) % 0x1000;
    format!("b{:x}{n:03x}", std::process::id())
}

/// `hint` reduced to a short, harmless piece of a namespace name.
fn sanitize(hint: &str) -> String {
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

fn tool_exists(tool: &str) -> bool {
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
fn run(command: &mut Command) {
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
}

/// Runs a cleanup command to completion, ignoring any failure.
fn run_quietly(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Locks `mutex` even if a panic poisoned it: the child process (or none)
/// it guards stays valid, and Drop must still clean up.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
fn append_to(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

fn write(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Kills all processes in network namespace `ns`.
fn kill_processes_in(ns: &str) {
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
