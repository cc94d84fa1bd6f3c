//! Test hosts that are whole Debian systems: systemd-nspawn containers
//! booting their own systemd, each in a network namespace of its own on a
//! private bridge, each on its own copy of the one cached Debian 12 root
//! (`.ci/debroot`, made once into target/).
//!
//! ```text
//! root netns: bridge <id>br, no address
//!   ├─ veth ─ netns bsn-<id>-<tag>  198.18.0.x   a plain namespace (controller, attacker)
//!   └─ veth ─ netns bsn-<id>-<tag>  198.18.0.y   systemd-nspawn --boot on <target>/nspawn-<id>-<tag>
//! ```
//!
//! Why containers and not chroots: the units (`ssh.service`, the watcher,
//! the compaction timer) then run under a real systemd, as on a server, so
//! Ansible's `systemd` tasks and handlers act on real unit states.
//! `--register=no --keep-unit`: no machined, and no systemd as PID 1 on
//! CI hosts either; nspawn then needs neither. Each container has its own
//! mount, PID, UTS and IPC namespaces, and the network namespace made here.
//! nspawn drops `CAP_NET_ADMIN` from the container's bounding set unless
//! asked (`--network-namespace-path` does not grant it, unlike
//! `--private-network`): without it the watcher's unit cannot drive
//! nftables ("cache initialization failed: Operation not permitted"), so
//! it is granted, harmlessly, since the network namespace is the
//! container's own.
//!
//! Each namespace has a default route out of its `eth0` (to nowhere), as a
//! server has one: Ansible's `ansible_default_ipv4` is then set, and what
//! the roles derive from it (each node's `ignoreip` of the other nodes) is
//! what a real rollout gets.
//!
//! Everything is removed when dropped, also while a failed test unwinds:
//! the containers are shut down (SIGTERM to nspawn, then SIGKILL), whatever
//! still runs in a namespace is killed, the namespaces, links, bridge and
//! root copies are deleted. A test process killed outright (SIGKILL, a CI
//! timeout) runs no Drop: its nspawns get SIGTERM from the kernel as it
//! dies (`PR_SET_PDEATHSIG`), and the next [`Network::new`] sweeps the
//! namespaces, bridge and root copies of every test process no longer
//! alive. Setup panics, never skips, when root or a tool is missing.

use super::cluster::require_root;
use super::wait_until;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// What the host needs (Debian packages iproute2, systemd-container,
/// util-linux, openssh-client, debootstrap, coreutils).
const REQUIRED_TOOLS: &[&str] = &[
    "ip",
    "systemd-nspawn",
    "nsenter",
    "ssh-keygen",
    "debootstrap",
    "cp",
    "timeout",
    "bash",
];

/// How long a container may take from start to a finished boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a container may take to power off after SIGTERM to nspawn.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Panics unless every tool is installed, naming the missing ones.
pub fn require_tools() {
    require_root();
    let missing: Vec<&str> = REQUIRED_TOOLS
        .iter()
        .copied()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these programs are missing: {missing:?} (Debian packages iproute2 systemd-container \
         util-linux openssh-client debootstrap: .ci/install-deps)"
    );
}

/// The cached clean Debian root, made by `.ci/debroot` if missing (it
/// needs the package mirror then, for a few minutes, once per machine).
pub fn cached_debian_root() -> PathBuf {
    let cache = Path::new(MANIFEST).join("target/debroot-bookworm");
    let made = Command::new(Path::new(MANIFEST).join(".ci/debroot"))
        .arg(&cache)
        .stdin(Stdio::null())
        .output()
        .expect("run .ci/debroot");
    assert!(
        made.status.success(),
        ".ci/debroot failed (needs debootstrap and the Debian mirror): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    cache
}

/// One network namespace with a veth link to the bridge.
struct Netns {
    name: String,
    veth: String,
}

/// A bridge and the network namespaces on it; all removed when dropped,
/// after whatever still runs in them is killed.
pub struct Network {
    id: String,
    hosts: Mutex<Vec<Netns>>,
}

impl Network {
    pub fn new() -> Network {
        require_tools();
        // "n", the pid in hex: interface names are this plus a tag of up to
        // 4 characters, within Linux's 15.
        let id = format!("n{:x}", std::process::id());
        {
            let _sweeping = SWEEPING.lock().unwrap_or_else(|e| e.into_inner());
            sweep_dead_runs();
        }
        let network = Network {
            id,
            hosts: Mutex::new(Vec::new()),
        };
        let bridge = network.bridge();
        // One left by an earlier process with our pid, if any.
        let _ = quiet(Command::new("ip").args(["link", "del", &bridge]));
        run(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]));
        run(Command::new("ip").args(["link", "set", &bridge, "up"]));
        network
    }

    /// Adds a namespace with `ip` on the bridge; returns its name (for
    /// `/run/netns/NAME` and `ip netns exec NAME`).
    pub fn add_host(&self, tag: &str, ip: Ipv4Addr) -> String {
        assert!(
            tag.len() <= 4,
            "tag {tag:?} is too long for an interface name"
        );
        let ns = format!("bsn-{}-{tag}", self.id);
        let veth = format!("{}{tag}", self.id);
        let _ = quiet(Command::new("ip").args(["netns", "del", &ns]));
        run(Command::new("ip").args(["netns", "add", &ns]));
        // Recorded before anything else can fail, so that Drop removes it.
        self.hosts.lock().unwrap().push(Netns {
            name: ns.clone(),
            veth: veth.clone(),
        });
        run(Command::new("ip").args([
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]));
        run(Command::new("ip").args(["link", "set", &veth, "master", &self.bridge(), "up"]));
        let address = format!("{ip}/24");
        run(Command::new("ip").args(["-n", &ns, "addr", "add", &address, "dev", "eth0"]));
        run(Command::new("ip").args(["-n", &ns, "link", "set", "eth0", "up"]));
        run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
        run(Command::new("ip").args(["-n", &ns, "route", "add", "default", "dev", "eth0"]));
        ns
    }

    fn bridge(&self) -> String {
        format!("{}br", self.id)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        for host in hosts.iter() {
            kill_processes_in(&host.name);
            let _ = quiet(Command::new("ip").args(["netns", "del", &host.name]));
            let _ = quiet(Command::new("ip").args(["link", "del", &host.veth]));
        }
        let _ = quiet(Command::new("ip").args(["link", "del", &self.bridge()]));
    }
}

/// Whether a TCP connection from namespace `from` to `ip:port` is accepted
/// within 2 s (a dropped SYN is a refusal too).
pub fn can_connect(from: &str, ip: Ipv4Addr, port: u16) -> bool {
    Command::new("ip")
        .args(["netns", "exec", from, "timeout", "2", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{ip}/{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A copy of a Debian root, booted with systemd-nspawn in a network
/// namespace. Shut down and removed when dropped.
pub struct Container {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    root: PathBuf,
    nspawn: Mutex<Option<Child>>,
    console: PathBuf,
}

impl Container {
    /// Copies `cache` for host `name` (also its host name) in namespace
    /// `ns`: fresh SSH host keys and machine id, no policy-rc.d (so the
    /// system behaves as a server's), `authorized_key` for root's SSH
    /// logins. Does not boot it: see [`Container::boot`].
    pub fn prepare(
        cache: &Path,
        name: &str,
        ns: &str,
        ip: Ipv4Addr,
        authorized_key: &str,
    ) -> Container {
        let root =
            Path::new(MANIFEST).join(format!("target/nspawn-{:x}-{name}", std::process::id()));
        let console = root.with_extension("console.log");
        let _ = fs::remove_dir_all(&root);
        let container = Container {
            name: name.to_owned(),
            ns: ns.to_owned(),
            ip,
            root,
            nspawn: Mutex::new(None),
            console,
        };
        run(Command::new("cp").arg("-a").arg(cache).arg(&container.root));
        let path = |p: &str| container.root.join(p);
        // Made by the cache for chroots, where nothing must start; these
        // systems boot.
        let _ = fs::remove_file(path("usr/sbin/policy-rc.d"));
        fs::write(path("etc/hostname"), format!("{name}\n")).unwrap();
        // Each system its own id (journald, D-Bus and dbus-less systemd key
        // things on it).
        let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
        fs::write(
            path("etc/machine-id"),
            format!("{}\n", uuid.trim().replace('-', "")),
        )
        .unwrap();
        // Each host its own host keys, not the ones the cache was made with.
        for entry in fs::read_dir(path("etc/ssh")).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
                fs::remove_file(entry.path()).unwrap();
            }
        }
        run(Command::new("ssh-keygen")
            .arg("-A")
            .arg("-f")
            .arg(&container.root));
        // Daily jobs a test host has no use for, which would only load
        // the CI machine if their time came during a run.
        for timer in [
            "apt-daily.timer",
            "apt-daily-upgrade.timer",
            "man-db.timer",
            "dpkg-db-backup.timer",
            "e2scrub_all.timer",
            "fstrim.timer",
        ] {
            let _ = std::os::unix::fs::symlink("/dev/null", path("etc/systemd/system").join(timer));
        }
        // fail2ban is in the cache only because the containers have no
        // package mirror: a bare server has none running, and Debian's
        // stock configuration would fail at boot anyway (its sshd jail
        // finds no auth.log). The roles enable it where asked.
        let _ = fs::remove_file(path(
            "etc/systemd/system/multi-user.target.wants/fail2ban.service",
        ));
        // nats-server likewise: a bare server runs none; the banshare_nats
        // role enables it where asked.
        let _ = fs::remove_file(path(
            "etc/systemd/system/multi-user.target.wants/nats-server.service",
        ));
        let ssh = path("root/.ssh");
        fs::create_dir_all(&ssh).unwrap();
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(ssh.join("authorized_keys"), authorized_key).unwrap();
        fs::set_permissions(
            ssh.join("authorized_keys"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        container
    }

    /// The host's public ed25519 key, "ssh-ed25519 AAAA...", read from its
    /// root (for the controller's known_hosts: pinned, never learnt).
    pub fn host_key(&self) -> String {
        let text = fs::read_to_string(self.root.join("etc/ssh/ssh_host_ed25519_key.pub")).unwrap();
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A file of the container's root, as seen from the host.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// Starts systemd-nspawn; [`Container::wait_booted`] waits for it.
    pub fn boot(&self) {
        let console = fs::File::create(&self.console).unwrap();
        let mut command = Command::new("systemd-nspawn");
        command
            .arg("--quiet")
            .arg("--boot")
            .arg(format!("--directory={}", self.root.display()))
            .arg(format!("--machine={}", self.name))
            .arg(format!("--network-namespace-path=/run/netns/{}", self.ns))
            .args(["--register=no", "--keep-unit", "--console=read-only"])
            .arg("--capability=CAP_NET_ADMIN")
            // sshfs mounts the share inside.
            .arg("--bind=/dev/fuse")
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console);
        let child = spawn_dying_with_us(command)
            .unwrap_or_else(|e| panic!("cannot start systemd-nspawn: {e}"));
        *self.nspawn.lock().unwrap() = Some(child);
    }

    /// Waits until the container's systemd finished booting and its sshd
    /// runs; panics with its console and failed units if not within the
    /// deadline. A unit failing that the tests do not use (seen once:
    /// `systemd-user-sessions.service` under a loaded CI host) is printed,
    /// not fatal: the tests check the units they rely on themselves.
    pub fn wait_booted(&self) {
        let mut state = String::new();
        let booted = wait_until(BOOT_TIMEOUT, || {
            if self.leader().is_none() {
                return false;
            }
            let out = self.exec(&["systemctl", "is-system-running"]);
            state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            // "offline" while PID 1 is still nspawn's stub, not systemd yet;
            // "initializing" and "starting" while it boots.
            ["running", "degraded", "maintenance", "stopping"].contains(&state.as_str())
        });
        let failed = if booted {
            self.exec(&["systemctl", "--failed", "--no-legend"])
        } else {
            Command::new("true").output().unwrap()
        };
        let failed = String::from_utf8_lossy(&failed.stdout).into_owned();
        let console = || fs::read_to_string(&self.console).unwrap_or_default();
        assert!(
            booted && (state == "running" || state == "degraded"),
            "container {} did not finish booting within {BOOT_TIMEOUT:?} (state {state:?}); \
             failed units:\n{failed}\n--- console:\n{}",
            self.name,
            console()
        );
        if state == "degraded" {
            let journal = self.exec(&[
                "journalctl",
                "-b",
                "-p",
                "warning",
                "--no-pager",
                "-n",
                "40",
            ]);
            eprintln!(
                "container {} booted degraded; failed units:\n{failed}--- its warnings:\n{}",
                self.name,
                String::from_utf8_lossy(&journal.stdout)
            );
        }
        let ssh = self.exec(&["systemctl", "is-active", "ssh.service"]);
        assert_eq!(
            String::from_utf8_lossy(&ssh.stdout).trim(),
            "active",
            "sshd does not run in container {}; failed units:\n{failed}\n--- console:\n{}",
            self.name,
            console()
        );
    }

    /// The container's PID 1 as the host sees it: the process in its
    /// network namespace that is PID 1 in its own PID namespace.
    pub fn leader(&self) -> Option<u32> {
        netns_pids(&self.ns).into_iter().find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    let nspid = s.lines().find_map(|l| l.strip_prefix("NSpid:"))?.to_owned();
                    let ids: Vec<&str> = nspid.split_whitespace().collect();
                    Some(ids.len() > 1 && ids.last() == Some(&"1"))
                })
                .unwrap_or(false)
        })
    }

    /// Runs `argv` inside the container (all its namespaces, its root),
    /// as root, and returns what it printed.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let leader = self
            .leader()
            .unwrap_or_else(|| panic!("container {} is not running", self.name));
        Command::new("nsenter")
            .arg("-t")
            .arg(leader.to_string())
            .args(["-m", "-u", "-i", "-n", "-p", "-r", "-w", "--"])
            .args([
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
            ])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"))
    }

    /// [`Container::exec`], panicking unless it succeeded; its stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        assert!(
            out.status.success(),
            "{argv:?} in {} failed ({}): {}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Powers the container off (SIGTERM to nspawn asks its systemd to),
    /// or kills it after [`SHUTDOWN_TIMEOUT`]. Never panics.
    fn shut_down(&self) {
        let mut slot = self.nspawn.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut nspawn) = slot.take() else {
            return;
        };
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(nspawn.id() as libc::pid_t, libc::SIGTERM) };
        let exited = wait_until(SHUTDOWN_TIMEOUT, || {
            matches!(nspawn.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = nspawn.kill();
        }
        let _ = nspawn.wait();
        // Whatever survived (nspawn killed before its container).
        kill_processes_in(&self.ns);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.shut_down();
        // Nothing is mounted into the copy from the host side: the
        // container's mounts lived in its own mount namespace, gone with it.
        let _ = fs::remove_dir_all(&self.root);
        let _ = fs::remove_file(&self.console);
    }
}

/// Spawns `command` so that it gets SIGTERM when this test process dies,
/// even by SIGKILL (nspawn then powers its container off). The kernel
/// sends `PR_SET_PDEATHSIG` when the *thread* that forked the child ends,
/// and containers boot from short-lived scoped threads: every spawn is
/// made by one thread that lives as long as the process.
fn spawn_dying_with_us(mut command: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("nspawn-parent".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the nspawn-parent thread");
        Mutex::new(requests)
    });
    // SAFETY: prctl(2) and getppid(2) are async-signal-safe; nothing else
    // runs between fork and exec.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before prctl: the signal would never come.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the test process is gone"));
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command, reply))
        .expect("the nspawn-parent thread is gone");
    answer.recv().expect("the nspawn-parent thread is gone")
}

/// Held around a sweep: a test making leftovers to be swept holds it, so
/// that another test's [`Network::new`] does not sweep them half made.
pub static SWEEPING: Mutex<()> = Mutex::new(());

/// Removes what test processes killed outright left behind (no Drop ran):
/// for every `n<pid in hex>` id whose process is gone, the processes in
/// its namespaces are killed, then the namespaces (and with them their
/// veths), its bridge and its root copies in target/ are deleted. Those of
/// live processes (other tests running now) are left alone.
pub fn sweep_dead_runs() {
    let dead = |id: &str| {
        u32::from_str_radix(id.strip_prefix('n').unwrap_or("-"), 16)
            .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    let netns = Command::new("ip").args(["netns", "list"]).output();
    let netns = netns.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for line in netns.unwrap_or_default().lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some((id, _tag)) = name.strip_prefix("bsn-").and_then(|r| r.split_once('-')) else {
            continue;
        };
        if dead(id) {
            eprintln!("sweeping netns {name}, left by a killed test");
            kill_processes_in(name);
            let _ = quiet(Command::new("ip").args(["netns", "del", name]));
        }
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output();
    let links = links.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for line in links.unwrap_or_default().lines() {
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        if let Some(id) = name.strip_suffix("br").filter(|id| id.starts_with('n'))
            && dead(id)
        {
            eprintln!("sweeping bridge {name}, left by a killed test");
            let _ = quiet(Command::new("ip").args(["link", "del", name]));
        }
    }
    let target = Path::new(MANIFEST).join("target");
    for entry in fs::read_dir(&target).into_iter().flatten().flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some((hex, _)) = file_name
            .strip_prefix("nspawn-")
            .and_then(|r| r.split_once('-'))
        else {
            continue;
        };
        if dead(&format!("n{hex}")) {
            eprintln!("sweeping {}, left by a killed test", entry.path().display());
            let _ = fs::remove_dir_all(entry.path()).or_else(|_| fs::remove_file(entry.path()));
        }
    }
}

fn netns_pids(ns: &str) -> Vec<u32> {
    let Ok(output) = Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

/// SIGKILLs every process in namespace `ns`, until none is left (a few
/// rounds: a dying parent may start a child meanwhile).
fn kill_processes_in(ns: &str) {
    for _ in 0..10 {
        let pids = netns_pids(ns);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory effects.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        wait_until(Duration::from_secs(1), || netns_pids(ns).is_empty());
    }
}

/// Runs a setup command; panics with its stderr if it fails.
fn run(command: &mut Command) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs a cleanup command, ignoring its failure.
fn quiet(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
