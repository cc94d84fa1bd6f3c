//! The Ansible rollout converged for real (issue 14): `ansible/site.yml`
//! run by Debian's `ansible-playbook` over SSH against a file server and
//! two nodes, then a third, each a systemd-nspawn container booting its own
//! systemd on a copy of the one cached Debian 12 root (`.ci/debroot`), in a
//! network namespace of its own on 198.18.0.0/24 (tests/support/nspawn.rs).
//! The watcher runs as the packaged systemd unit, started by the playbook.
//! node2 also gets fail2ban (`banshare_node_fail2ban`); node3 reaches the
//! log over SFTP.
//!
//! ```text
//! 198.18.0.1    files    the file server (container)
//! 198.18.0.2    the Ansible controller (a namespace: ansible-playbook, ssh)
//! 198.18.0.11   node1, .12 node2, .13 node3 (containers; node3 joins later)
//! 198.18.0.250  the attacker, .249 a second one, .248 a third, .247 a fourth (namespaces)
//! ```
//!
//! Then: the watcher's unit is active on each node; `banshare ban` on node 1
//! blocks the attacker's TCP connect to node 2; an unsigned line appended by
//! hand on the file server is refused, not applied; a second run reports
//! `changed=0` on every host; drift (a changed configuration line, a removed
//! trusted key, a stopped unit) is reported and repaired by the next run,
//! the watcher reloaded, not restarted, for what SIGHUP re-reads; node3
//! added to the inventory (over SFTP, no mount) and a run later, its bans
//! apply on nodes 1 and 2, whose watchers were reloaded, not restarted;
//! one more run repairs a backend changed by hand on node1 and node2 and
//! an fstab line on node1 (remount, restart; node2 restarts with its share
//! mounted) and restarts node3's watcher for the note an interrupted run
//! leaves; a run with a malformed extra trusted key (node1) and a
//! configuration line `banshare config check` refuses (node2) fails and
//! writes neither; node1 moved to SFTP and node3 removed in one run: the
//! unmount succeeds, node3's open SSH session to the file server is ended,
//! and a ban over SFTP still reaches node2. Last, the nodes switch to a
//! NATS JetStream stream (`banshare_node_access: nats`): a nats-server on
//! the file server's host (`banshare_nats`), the stream made once by node1
//! (`banshare nats init` with an administrator's NKey), each node's NKey
//! made on it; `doctor` finds the stream, a ban on node1 blocks a fourth
//! attacker on node2 through NATS, and a run after that changes nothing.
//! Also checked:
//! the keys' owners and modes, the fstab line, the share out of other
//! local users' reach, the file server's account confined by the running
//! sshd, attribute caching off. Leftovers of a killed run are swept.
//!
//! Needs root, Debian's ansible, systemd-container, debootstrap (the root
//! is made once per machine), iproute2, and the .deb from
//! `packaging/build-deb` (as .ci/run does): fails, never skips, without
//! them. About 5 minutes on a quiet machine, 12 on a busy one: nine
//! playbook runs of 25 to 115 s each, each at most 300 s, the whole test at
//! most 17 minutes.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::nspawn::{self, Container, Network, can_connect};
use support::wait_until;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

const FILESERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CONTROLLER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);
const SECOND_ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 249);
const THIRD_ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 248);
const FOURTH_ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 247);

/// The shared log on the file server, as the role makes it (defaults).
const SERVER_LOG: &str = "/srv/banshare/share/newbans.log";

/// Where the NATS server's TLS certificate and key are placed on the file
/// server's host for the NATS phase.
const NATS_TLS_DIR: &str = "/etc/nats-tls";

/// A whole playbook run at most; the first, which installs everything,
/// takes minutes on a loaded 2-core machine.
const PLAYBOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// The whole test at most (CI allows 20 minutes): each playbook run gets
/// what is left of it, if less than [`PLAYBOOK_TIMEOUT`], so that a hung
/// run fails the test in time instead of being SIGKILLed by CI.
const TEST_DEADLINE: Duration = Duration::from_secs(17 * 60);
/// From `banshare ban` to the firewall of another node, and from an
/// appended line to a watcher's status: the watcher polls the sshfs mount.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(60);

fn node_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + n)
}

/// The newest .deb from packaging/build-deb, of this crate's version (an
/// older build left in target/debian would test old code).
fn built_deb() -> PathBuf {
    let dir = Path::new(MANIFEST).join("target/debian");
    let prefix = format!("banshare_{}-", env!("CARGO_PKG_VERSION"));
    fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                && p.extension().is_some_and(|e| e == "deb")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no {prefix}*.deb in {}: build it first with packaging/build-deb",
                dir.display()
            )
        })
}

fn require_ansible() {
    let found = Command::new("ansible-playbook")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "ansible-playbook is missing: Debian's ansible package (.ci/install-deps)"
    );
}

/// The Ansible controller: its namespace, its SSH key (root's on every
/// container), the containers' host keys pinned from their roots, and the
/// inventory.
struct Controller {
    dir: tempfile::TempDir,
    ns: String,
    deb: PathBuf,
    /// When the whole test must be over ([`TEST_DEADLINE`]).
    deadline: Instant,
}

/// What one `ansible-playbook` run reported.
struct PlaybookRun {
    output: String,
    /// Per host, the PLAY RECAP's counters (`ok`, `changed`, `failed`, ...).
    recap: BTreeMap<String, BTreeMap<String, u64>>,
    /// (task or handler, host) for every `changed:` line.
    changed: Vec<(String, String)>,
}

impl PlaybookRun {
    fn count(&self, host: &str, what: &str) -> u64 {
        *self
            .recap
            .get(host)
            .unwrap_or_else(|| panic!("no {host} in the PLAY RECAP:\n{}", self.output))
            .get(what)
            .unwrap_or_else(|| panic!("no {what} for {host} in the PLAY RECAP:\n{}", self.output))
    }

    fn changed_tasks(&self, host: &str) -> Vec<&str> {
        self.changed
            .iter()
            .filter(|(_, h)| h == host)
            .map(|(task, _)| task.as_str())
            .collect()
    }

    fn assert_changed(&self, host: &str, task: &str) {
        assert!(
            self.changed_tasks(host).iter().any(|t| t.ends_with(task)),
            "{task:?} was not reported changed on {host}; changed there: {:?}\n{}",
            self.changed_tasks(host),
            self.output
        );
    }
}

/// Reads the PLAY RECAP lines: `node1 : ok=25 changed=3 unreachable=0 ...`.
fn parse_recap(output: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let Some((_, recap)) = output.rsplit_once("PLAY RECAP") else {
        return BTreeMap::new();
    };
    recap
        .lines()
        .filter_map(|line| {
            let (host, counters) = line.split_once(" : ")?;
            let counters = counters
                .split_whitespace()
                .filter_map(|c| {
                    let (k, v) = c.split_once('=')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect();
            Some((host.trim().to_owned(), counters))
        })
        .collect()
}

/// Every `changed: [host]` line with the task or handler it is under.
fn parse_changed(output: &str) -> Vec<(String, String)> {
    let mut task = String::new();
    let mut changed = Vec::new();
    for line in output.lines() {
        for header in ["TASK [", "RUNNING HANDLER ["] {
            if let Some(rest) = line.strip_prefix(header) {
                task = rest.rsplit_once(']').map_or(rest, |(t, _)| t).to_owned();
            }
        }
        if let Some(rest) = line.strip_prefix("changed: [") {
            let host = rest.split(']').next().unwrap_or_default();
            changed.push((task.clone(), host.to_owned()));
        }
    }
    changed
}

impl Controller {
    fn new(network: &Network, deadline: Instant) -> Controller {
        let dir = tempfile::Builder::new()
            .prefix("banshare-converge-")
            .tempdir()
            .unwrap();
        let key = dir.path().join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "controller", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-keygen: {out:?}");
        Controller {
            ns: network.add_host("ctl", CONTROLLER_IP),
            deb: built_deb(),
            dir,
            deadline,
        }
    }

    fn public_key(&self) -> String {
        fs::read_to_string(self.dir.path().join("id_ed25519.pub")).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes known_hosts (each container's key, read from its root) and
    /// the inventory: `files` serves, `nodes` are the cluster's nodes: node2
    /// also runs fail2ban; node3 reaches the log over SFTP (no mount) and
    /// is let in by the file server from its own address only
    /// (authorized_keys from="..."); the others mount it with sshfs, as the
    /// roles do by default.
    fn write_inventory(&self, files: &Container, nodes: &[&Container]) {
        self.write_inventory_on(files, nodes, Log::File);
    }

    /// As [`Controller::write_inventory`], with the nodes on `log`: with
    /// [`Log::Nats`], every node on a NATS stream
    /// (`banshare_node_access: nats`) served by one nats-server on the
    /// file server's host (`banshare_nats_servers`), made by node1
    /// (`banshare_node_nats_init`).
    fn write_inventory_on(&self, files: &Container, nodes: &[&Container], log: Log) {
        let known_hosts: String = std::iter::once(files)
            .chain(nodes.iter().copied())
            .map(|c| format!("{} {}\n", c.ip, c.host_key()))
            .collect();
        fs::write(self.path("known_hosts"), known_hosts).unwrap();
        let node_lines: String = nodes
            .iter()
            .map(|c| {
                let access = match (c.name.as_str(), log) {
                    ("node2", _) => "          banshare_node_fail2ban: true\n".to_owned(),
                    ("node1", Log::Nats) => "          banshare_node_nats_init: true\n".to_owned(),
                    ("node3", Log::File) => format!(
                        "          banshare_node_access: sftp\n\
                         \x20         banshare_node_ssh_from: {}\n",
                        c.ip
                    ),
                    _ => String::new(),
                };
                format!(
                    "        {}:\n          ansible_host: {}\n{access}",
                    c.name, c.ip
                )
            })
            .collect();
        let nats = match log {
            Log::File => String::new(),
            // TLS with the servers verified against the test's CA: the
            // certificate and key placed on the server's host as an
            // operator would (see `place_nats_certificates`).
            Log::Nats => format!(
                "\x20     vars:\n\
                 \x20       banshare_node_access: nats\n\
                 \x20       banshare_node_nats_servers: [\"{fs_ip}\"]\n\
                 \x20       banshare_node_nats_replicas: 1\n\
                 \x20       banshare_node_nats_tls: true\n\
                 \x20       banshare_node_nats_ca_file: {ca}\n\
                 \x20   banshare_nats_servers:\n\
                 \x20     hosts:\n\
                 \x20       {fs}:\n\
                 \x20         banshare_nats_tls_cert: {NATS_TLS_DIR}/server.pem\n\
                 \x20         banshare_nats_tls_key: {NATS_TLS_DIR}/server.key\n",
                fs = files.name,
                fs_ip = files.ip,
                ca = self.path("nats-tls/ca.pem").display(),
            ),
        };
        // banshare_package_apt_cache_valid_time: the containers have no
        // package mirror, their apt lists (from .ci/debroot) are never
        // refreshed.
        let inventory = format!(
            "all:\n\
             \x20 vars:\n\
             \x20   ansible_user: root\n\
             \x20   ansible_python_interpreter: /usr/bin/python3\n\
             \x20   ansible_ssh_private_key_file: {key}\n\
             \x20   ansible_ssh_common_args: >-\n\
             \x20     -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes\n\
             \x20     -o IdentitiesOnly=yes -o BatchMode=yes\n\
             \x20   banshare_package_deb: {deb}\n\
             \x20   banshare_package_apt_cache_valid_time: 3153600000\n\
             \x20 children:\n\
             \x20   banshare_fileserver:\n\
             \x20     hosts:\n\
             \x20       {fs}:\n\
             \x20         ansible_host: {fs_ip}\n\
             \x20   banshare_nodes:\n\
             \x20     hosts:\n\
             {node_lines}{nats}",
            key = self.path("id_ed25519").display(),
            known_hosts = self.path("known_hosts").display(),
            deb = self.deb.display(),
            fs = files.name,
            fs_ip = files.ip,
        );
        fs::write(self.path("hosts.yml"), inventory).unwrap();
    }

    /// A CA (kept on the controller, for `banshare_node_nats_ca_file`) and
    /// a certificate for the file server's address signed by it, placed
    /// with its key in [`NATS_TLS_DIR`] on `files`, root's, as an operator
    /// places them before the run (the role lets nats-server read them).
    fn place_nats_certificates(&self, files: &Container) {
        let dir = self.path("nats-tls");
        fs::create_dir_all(&dir).unwrap();
        support::nats::make_certificates(&dir, &[format!("IP:{}", files.ip)]);
        let on_files = files.path(NATS_TLS_DIR);
        fs::create_dir_all(&on_files).unwrap();
        for name in ["server.pem", "server.key"] {
            fs::copy(dir.join(name), on_files.join(name)).unwrap();
            files.exec_ok(&["chmod", "0600", &format!("{NATS_TLS_DIR}/{name}")]);
        }
    }

    /// Runs site.yml from the controller's namespace; panics with its
    /// output unless it succeeded.
    fn converge(&self, what: &str, hosts: &[&Container]) -> PlaybookRun {
        let (ok, output) = self.try_converge(what, hosts);
        assert!(ok, "ansible-playbook ({what}) failed:\n{output}");
        PlaybookRun {
            recap: parse_recap(&output),
            changed: parse_changed(&output),
            output,
        }
    }

    /// Runs site.yml; whether it succeeded, and its output.
    fn try_converge(&self, what: &str, hosts: &[&Container]) -> (bool, String) {
        let started = Instant::now();
        let left = self.deadline.saturating_duration_since(started);
        assert!(
            left > Duration::from_secs(10),
            "no time left for ansible-playbook ({what}) within the test's {TEST_DEADLINE:?}"
        );
        let timeout = left.min(PLAYBOOK_TIMEOUT);
        let out: Output = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(["timeout", "--kill-after=10"])
            .arg(format!("{}s", timeout.as_secs()))
            .arg("ansible-playbook")
            .arg("-i")
            .arg(self.path("hosts.yml"))
            .arg("site.yml")
            .current_dir(Path::new(MANIFEST).join("ansible"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("ANSIBLE_PIPELINING", "1")
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", self.path("cp"))
            .env("ANSIBLE_LOCAL_TEMP", self.path("tmp"))
            .env("ANSIBLE_HOST_KEY_CHECKING", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run ansible-playbook");
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "ansible-playbook ({what}): {:.0} s, {}",
            started.elapsed().as_secs_f64(),
            output
                .rsplit_once("PLAY RECAP")
                .map_or("no PLAY RECAP", |(_, r)| r.trim())
        );
        if !out.status.success() {
            // What the watchers said, for a failed start or restart.
            for host in hosts {
                let journal = host.exec(&[
                    "journalctl",
                    "-u",
                    "banshare-watch.service",
                    "--no-pager",
                    "-n",
                    "25",
                ]);
                eprintln!(
                    "--- {}: the watcher's journal:\n{}",
                    host.name,
                    String::from_utf8_lossy(&journal.stdout)
                );
            }
        }
        (out.status.success(), output)
    }
}

/// Where the nodes' log is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Log {
    /// The file server's log, over sshfs (node3: SFTP).
    File,
    /// A NATS JetStream stream: [`Controller::write_inventory_on`].
    Nats,
}

/// The nodes and the file server, booted in parallel. The file server
/// comes last, so that it is shut down last (a Vec drops in order): a node
/// shutting down unmounts its share while the server still answers.
fn boot_all(cache: &Path, network: &Network, controller: &Controller) -> Vec<Container> {
    let hosts = [
        ("node1", "n1", node_ip(1)),
        ("node2", "n2", node_ip(2)),
        ("node3", "n3", node_ip(3)),
        ("files", "fs", FILESERVER_IP),
    ];
    let key = controller.public_key();
    let containers: Vec<Container> = thread::scope(|scope| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|&(name, tag, ip)| {
                let ns = network.add_host(tag, ip);
                let key = &key;
                scope.spawn(move || {
                    let container = Container::prepare(cache, name, &ns, ip, key);
                    container.boot();
                    container
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for container in &containers {
        container.wait_booted();
        assert!(
            wait_until(Duration::from_secs(30), || can_connect(
                &controller.ns,
                container.ip,
                22
            )),
            "sshd of {} does not accept connections from the controller",
            container.name
        );
    }
    containers
}

/// The watcher's unit on `node` is active, and its main process is
/// `banshare watch` (the packaged unit, not something started by hand).
fn assert_watcher_unit_runs(node: &Container) {
    let active = node.exec(&["systemctl", "is-active", "banshare-watch.service"]);
    let state = String::from_utf8_lossy(&active.stdout).trim().to_owned();
    assert_eq!(
        state,
        "active",
        "banshare-watch.service on {} is {state}:\n{}",
        node.name,
        node.exec_ok(&[
            "journalctl",
            "-u",
            "banshare-watch.service",
            "--no-pager",
            "-n",
            "30"
        ])
    );
    let pid = node.exec_ok(&[
        "systemctl",
        "show",
        "--value",
        "-p",
        "MainPID",
        "banshare-watch.service",
    ]);
    let cmdline = node.exec_ok(&["cat", &format!("/proc/{}/cmdline", pid.trim())]);
    assert_eq!(
        cmdline.split('\0').take(2).collect::<Vec<_>>(),
        ["/usr/bin/banshare", "watch"],
        "the main process of banshare-watch.service on {}",
        node.name
    );
}

fn watcher_pid(node: &Container) -> String {
    node.exec_ok(&[
        "systemctl",
        "show",
        "--value",
        "-p",
        "MainPID",
        "banshare-watch.service",
    ])
    .trim()
    .to_owned()
}

/// `node`'s watcher status line `rejected:` (counts by reason).
fn rejected_counts(node: &Container) -> String {
    let out = node.exec(&["banshare", "status"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("rejected:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The number of `reason` in a `rejected:` line ("3 (unsigned 2, ...)");
/// 0 when absent.
fn rejected_count(counts: &str, reason: &str) -> u64 {
    let inner = counts
        .split_once('(')
        .map_or("", |(_, r)| r.trim_end_matches(')'));
    inner
        .split(", ")
        .find_map(|part| part.strip_prefix(reason)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// The value of `key = "..."` in a configuration file's text.
fn config_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

/// Properties checked without stopping the test: every one that fails is
/// printed at once and the test fails at its end with all of them, so one
/// run shows every broken promise.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("CHECK FAILED: {what}");
            self.0.push(what);
        }
    }

    fn assert_all_passed(&self) {
        assert!(
            self.0.is_empty(),
            "{} check(s) failed:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

/// `stat -c FORMAT path` in `node`.
fn stat(node: &Container, format: &str, path: &str) -> String {
    node.exec_ok(&["stat", "-c", format, path])
        .trim()
        .to_owned()
}

/// `ssh` from `node` to the file server as its banshare account, with the
/// node's own key and pinned host key (what sshfs and SFTP use), bounded.
fn ssh_from_node(node: &Container, args: &[&str]) -> Output {
    let target = format!("banshare@{FILESERVER_IP}");
    let mut argv = vec![
        "timeout",
        "20",
        "ssh",
        "-i",
        "/etc/banshare/id_ed25519",
        "-o",
        "UserKnownHostsFile=/etc/banshare/known_hosts",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
    ];
    argv.extend_from_slice(args);
    argv.push(&target);
    node.exec(&argv)
}

/// What the first converge promises beyond a running watcher: the keys'
/// owners and modes, the sshfs line, the share out of other local users'
/// reach, and the file server's account confined by the running sshd.
fn check_node_hardening(checks: &mut Checks, node: &Container) {
    let name = &node.name;
    let signing = stat(node, "%U:%G:%a", "/etc/banshare/node.key");
    checks.check(signing == "root:root:600", || {
        format!("{name}: node.key is {signing}, not root:root:600 (only root signs)")
    });
    let ssh_key = stat(node, "%U:%G:%a", "/etc/banshare/id_ed25519");
    checks.check(ssh_key == "banshare:banshare:600", || {
        format!("{name}: id_ed25519 is {ssh_key}, not banshare:banshare:600")
    });
    let config = fs::read_to_string(node.path("/etc/banshare/banshare.toml")).unwrap();
    let log = config_value(&config, "log");
    let fstab = fs::read_to_string(node.path("/etc/fstab")).unwrap();
    let line = fstab
        .lines()
        .find(|l| l.contains("fuse.sshfs"))
        .unwrap_or_else(|| panic!("{name}: no sshfs line in fstab:\n{fstab}"));
    for option in [
        "StrictHostKeyChecking=yes",
        "UserKnownHostsFile=/etc/banshare/known_hosts",
        "IdentityFile=/etc/banshare/id_ed25519",
        "attr_timeout=0",
        "dir_cache=no",
        "reconnect",
        "_netdev",
    ] {
        checks.check(line.split([',', ' ']).any(|o| o == option), || {
            format!("{name}: the fstab line lacks {option}: {line}")
        });
    }
    checks.check(!line.contains("StrictHostKeyChecking=no"), || {
        format!("{name}: {line}")
    });
    // Root mounts with allow_other: any local user could read, truncate or
    // remove the cluster's log through the mount unless it is out of reach.
    let nobody_reads = node.exec(&["runuser", "-u", "nobody", "--", "cat", &log]);
    checks.check(!nobody_reads.status.success(), || {
        format!("{name}: user nobody can read the shared log {log} through the mount")
    });
    let nobody_lists = node.exec(&["runuser", "-u", "nobody", "--", "ls", "-d", &log]);
    checks.check(!nobody_lists.status.success(), || {
        format!("{name}: user nobody can reach the shared log {log}")
    });
    // The confinement, on the running sshd: an SFTP login works, into the
    // share; a command runs no shell; a forwarding is refused.
    let sftp = node.exec(&[
        "sh",
        "-c",
        &format!(
            "echo pwd | timeout 20 sftp -b - -i /etc/banshare/id_ed25519 \
             -o UserKnownHostsFile=/etc/banshare/known_hosts -o StrictHostKeyChecking=yes \
             -o BatchMode=yes banshare@{FILESERVER_IP}"
        ),
    ]);
    let sftp_out = String::from_utf8_lossy(&sftp.stdout).into_owned();
    assert!(
        sftp.status.success() && sftp_out.contains("Remote working directory: /share"),
        "{name}: SFTP login as banshare: {sftp:?}"
    );
    let shell = ssh_from_node(node, &["echo", "SHELL-RAN"]);
    let shell_out = String::from_utf8_lossy(&shell.stdout).into_owned();
    checks.check(!shell_out.contains("SHELL-RAN"), || {
        format!("{name}: a command ran for banshare on the file server: {shell_out:?}")
    });
    let forward = ssh_from_node(node, &["-W", &format!("{FILESERVER_IP}:22")]);
    let forward_out = String::from_utf8_lossy(&forward.stdout).into_owned();
    checks.check(
        !forward.status.success() && !forward_out.contains("SSH-2.0"),
        || format!("{name}: a TCP forwarding through banshare@files was let through: {forward:?}"),
    );
}

/// The local ports of `node`'s established TCP connections to the file
/// server's sshd: its sshfs mount's or its watcher's SFTP session.
fn ssh_client_ports(node: &Container) -> Vec<String> {
    node.exec_ok(&[
        "ss",
        "-Htn",
        "state",
        "established",
        "dst",
        &format!("{FILESERVER_IP}:22"),
    ])
    .lines()
    .filter_map(|l| {
        l.split_whitespace()
            .nth(2)?
            .rsplit_once(':')
            .map(|(_, p)| p.to_owned())
    })
    .collect()
}

/// Starts `host`'s compaction unit as its timer would (the packaged unit
/// with the role's drop-in) and checks that it succeeded and its journal
/// says `kept` (its summary line); `what` names the compaction.
fn assert_compaction_runs(checks: &mut Checks, host: &Container, kept: &str, what: &str) {
    let compacted = host.exec(&["systemctl", "start", "banshare-compact.service"]);
    let journal = host.exec_ok(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-u",
        "banshare-compact.service",
    ]);
    checks.check(compacted.status.success() && journal.contains(kept), || {
        format!(
            "the compaction unit ({what}) failed ({}):\n{journal}",
            compacted.status
        )
    });
}

fn wait_blocked(attacker: &str, node: &Container, what: &str) {
    assert!(
        wait_until(PROPAGATION_TIMEOUT, || !can_connect(attacker, node.ip, 22)),
        "{what}: the attacker can still connect to {}; its nftables ruleset:\n{}\nits status:\n{}",
        node.name,
        String::from_utf8_lossy(&node.exec(&["nft", "list", "ruleset"]).stdout),
        String::from_utf8_lossy(&node.exec(&["banshare", "status"]).stdout),
    );
}

#[test]
fn playbook_converges_a_real_cluster_and_a_second_run_changes_nothing() {
    nspawn::require_tools();
    require_ansible();
    let test_started = Instant::now();
    let mut checks = Checks::default();
    let cache = nspawn::cached_debian_root();
    // Dropped last: the containers go first, then every namespace.
    let network = Network::new();
    let controller = Controller::new(&network, test_started + TEST_DEADLINE);
    let attacker = network.add_host("at", ATTACKER_IP);
    let second_attacker = network.add_host("at2", SECOND_ATTACKER_IP);
    let containers = boot_all(&cache, &network, &controller);
    let [node1, node2, node3, files] = &containers[..] else {
        unreachable!()
    };
    eprintln!(
        "four containers booted in {:.0} s",
        test_started.elapsed().as_secs_f64()
    );

    // The first converge: bare systems to a cluster.
    controller.write_inventory(files, &[node1, node2]);
    let first = controller.converge("first run", &[node1, node2]);
    for host in ["files", "node1", "node2"] {
        assert!(first.count(host, "changed") > 0, "{host}: nothing changed");
    }

    // The watcher runs on each node, as the packaged systemd unit.
    for node in [node1, node2] {
        assert_watcher_unit_runs(node);
        check_node_hardening(&mut checks, node);
    }
    // The namespaces have a default route: each node never bans the other
    // (ignore_cluster, from ansible_default_ipv4).
    let node1_config = fs::read_to_string(node1.path("/etc/banshare/banshare.toml")).unwrap();
    assert!(
        node1_config.contains(&format!("ignoreip = [\"{}\"]", node2.ip)),
        "node1 does not ignore node2 (no default IPv4 address in the facts?):\n{node1_config}"
    );
    let timer = files.exec(&["systemctl", "is-active", "banshare-compact.timer"]);
    assert_eq!(String::from_utf8_lossy(&timer.stdout).trim(), "active");
    // node2 asked for fail2ban: it runs (its sshd jail on the journal, as
    // Debian 12 has no auth.log), with banshare's action installed, and the
    // watcher runs as root beside it (the drop-in says so).
    let fail2ban = node2.exec(&["fail2ban-client", "status", "sshd"]);
    assert!(
        fail2ban.status.success(),
        "fail2ban's sshd jail on node2: {}{}",
        String::from_utf8_lossy(&fail2ban.stdout),
        String::from_utf8_lossy(&fail2ban.stderr)
    );
    assert!(node2.path("/etc/fail2ban/action.d/banshare.conf").is_file());
    let dropin = fs::read_to_string(
        node2.path("/etc/systemd/system/banshare-watch.service.d/banshare-dropin.conf"),
    )
    .unwrap();
    assert!(dropin.contains("\nUser=root\n"), "{dropin}");

    // A ban on node 1 reaches node 2's firewall through the file server.
    assert!(
        can_connect(&attacker, node2.ip, 22),
        "the attacker cannot connect to node2 before any ban"
    );
    node1.exec_ok(&[
        "banshare",
        "ban",
        &ATTACKER_IP.to_string(),
        "--jail",
        "sshd",
    ]);
    wait_blocked(&attacker, node2, "after the ban on node1");
    eprintln!(
        "node1's ban blocks the attacker on node2 ({:.0} s into the test)",
        test_started.elapsed().as_secs_f64()
    );

    // An unsigned line appended by hand on the file server is refused by
    // the watchers, and bans nobody.
    assert!(can_connect(&second_attacker, node2.ip, 22));
    let rejected_before = rejected_counts(node2);
    // Attribute caching off: the size node1 sees through its mount right
    // after the append is the server's, not the one it saw just before
    // (sshfs would answer from its cache for 20 s otherwise).
    let node1_log = config_value(&node1_config, "log");
    let seen_before = stat(node1, "%s", &node1_log);
    files.exec_ok(&[
        "sh",
        "-c",
        &format!(
            "printf '<13>Nov 30 12:00:00 root[1]: HOST {SECOND_ATTACKER_IP} PORT 22\\n' >> {SERVER_LOG}"
        ),
    ]);
    let server_size = stat(files, "%s", SERVER_LOG);
    let seen_after = stat(node1, "%s", &node1_log);
    checks.check(seen_after == server_size, || {
        format!(
            "node1 sees {node1_log} at {seen_after} bytes right after an append made it \
             {server_size} on the server (before: {seen_before}): attributes are cached"
        )
    });
    let unsigned_before = rejected_count(&rejected_before, "unsigned");
    assert!(
        wait_until(PROPAGATION_TIMEOUT, || rejected_count(
            &rejected_counts(node2),
            "unsigned"
        ) == unsigned_before + 1),
        "node2's watcher did not count the unsigned line as rejected once (before: \
         {rejected_before:?}, now: {:?})",
        rejected_counts(node2)
    );
    assert!(
        can_connect(&second_attacker, node2.ip, 22),
        "the unsigned line banned its address on node2"
    );

    eprintln!(
        "the unsigned line refused ({:.0} s into the test)",
        test_started.elapsed().as_secs_f64()
    );

    // A second run changes nothing.
    let second = controller.converge("second run", &[node1, node2]);
    for host in ["files", "node1", "node2"] {
        assert_eq!(
            second.count(host, "changed"),
            0,
            "{host} changed on the second run: {:?}\n{}",
            second.changed_tasks(host),
            second.output
        );
    }

    // Drift: a changed configuration line (one SIGHUP re-reads) and a
    // removed trusted key on node 1, a stopped watcher on node 2. The next
    // run reports and repairs each, and reloads node1's watcher without a
    // restart.
    let config = "/etc/banshare/banshare.toml";
    let trusted = "/etc/banshare/trusted-keys";
    let config_before = fs::read_to_string(node1.path(config)).unwrap();
    let trusted_before = fs::read_to_string(node1.path(trusted)).unwrap();
    let node1_watcher = watcher_pid(node1);
    node1.exec_ok(&[
        "sed",
        "-i",
        "s/^max_bantime = .*/max_bantime = \"2d\"/",
        config,
    ]);
    node1.exec_ok(&["sed", "-i", "/^node2 /d", trusted]);
    assert_ne!(
        fs::read_to_string(node1.path(config)).unwrap(),
        config_before
    );
    assert_ne!(
        fs::read_to_string(node1.path(trusted)).unwrap(),
        trusted_before
    );
    node2.exec_ok(&["systemctl", "stop", "banshare-watch.service"]);
    let repair = controller.converge("after drift", &[node1, node2]);
    assert_eq!(repair.count("files", "changed"), 0, "{}", repair.output);
    repair.assert_changed("node1", "Configure banshare");
    repair.assert_changed("node1", "Trust every node's signing key");
    repair.assert_changed("node1", "Reload the watcher");
    checks.check(
        !repair
            .changed_tasks("node1")
            .iter()
            .any(|t| t.ends_with("Restart the watcher")),
        || {
            format!(
                "node1's watcher was restarted for a max_bantime and a trusted key, both \
                 re-read on SIGHUP: {:?}",
                repair.changed_tasks("node1")
            )
        },
    );
    repair.assert_changed("node2", "Enable and start the watcher");
    assert_eq!(
        repair.changed_tasks("node2").len(),
        1,
        "node2 changed more than its stopped watcher: {:?}",
        repair.changed_tasks("node2")
    );
    assert_eq!(
        fs::read_to_string(node1.path(config)).unwrap(),
        config_before
    );
    assert_eq!(
        fs::read_to_string(node1.path(trusted)).unwrap(),
        trusted_before
    );
    let node1_after = watcher_pid(node1);
    checks.check(node1_after == node1_watcher, || {
        format!(
            "node1's watcher was restarted on a reloadable drift ({node1_watcher} -> {node1_after})"
        )
    });
    for node in [node1, node2] {
        assert_watcher_unit_runs(node);
    }

    // A third node joins, reaching the log over SFTP (no mount): after one
    // run over the grown inventory, the first two trust it and apply its
    // bans.
    // Their watchers reload (SIGHUP), not restart, although their
    // ignoreip gains node3 too.
    controller.write_inventory(files, &[node1, node2, node3]);
    let watchers_before = [watcher_pid(node1), watcher_pid(node2)];
    let grown = controller.converge("with node3", &[node1, node2, node3]);
    for (host, before) in ["node1", "node2"].into_iter().zip(&watchers_before) {
        grown.assert_changed(host, "Trust every node's signing key");
        grown.assert_changed(host, "Reload the watcher");
        checks.check(
            !grown
                .changed_tasks(host)
                .iter()
                .any(|t| t.ends_with("Restart the watcher")),
            || {
                format!(
                    "{host}'s watcher was restarted when node3 joined: {:?}",
                    grown.changed_tasks(host)
                )
            },
        );
        let node = if host == "node1" { node1 } else { node2 };
        let after = watcher_pid(node);
        checks.check(&after == before, || {
            format!("{host}'s watcher changed its pid when node3 joined ({before} -> {after})")
        });
        let config = fs::read_to_string(node.path(config)).unwrap();
        assert!(
            config.contains(&format!("\"{}\"", node3.ip)),
            "{host} does not ignore node3:\n{config}"
        );
    }
    assert_watcher_unit_runs(node3);
    let authorized = fs::read_to_string(files.path("/etc/ssh/banshare/authorized_keys")).unwrap();
    assert!(
        authorized.contains(&format!("restrict,from=\"{}\" ssh-ed25519 ", node3.ip)),
        "{authorized}"
    );
    let node3_config = fs::read_to_string(node3.path(config)).unwrap();
    assert!(
        node3_config.contains("log = \"sftp://banshare@198.18.0.1/share/newbans.log\""),
        "{node3_config}"
    );
    for node in [node1, node2] {
        let keys = fs::read_to_string(node.path(trusted)).unwrap();
        assert!(keys.contains("\nnode3 ed25519 "), "{}: {keys}", node.name);
        assert!(can_connect(&second_attacker, node.ip, 22));
    }
    node3.exec_ok(&[
        "banshare",
        "ban",
        &SECOND_ATTACKER_IP.to_string(),
        "--jail",
        "sshd",
    ]);
    for node in [node1, node2] {
        wait_blocked(&second_attacker, node, "after the ban on node3");
    }
    // node1's ban reached node3 over SFTP too (the attacker's first ban).
    wait_blocked(&attacker, node3, "node1's ban, on node3 over SFTP");

    // The grown cluster is converged: another run changes nothing, but
    // for what is drifted by hand, each repaired the way it needs.
    // - node2 (review14b's restart-only drift): a setting read at start
    //   only (the backend) changed while its watcher runs and its share
    //   stays mounted: the run restarts the watcher, and the restart must
    //   succeed.
    // - node1: the backend too, and its fstab line edited: the share is
    //   unmounted (the watcher stopped first, or the unmount fails
    //   "busy") and mounted again with the role's line.
    // - node3: a restart an interrupted run left pending (its note on the
    //   node, written before the configuration was, so no diff is left
    //   to show it): this run restarts the watcher and drops the note.
    let marker = "/etc/banshare/.watcher-restart-pending";
    let running_before = [watcher_pid(node1), watcher_pid(node2), watcher_pid(node3)];
    for node in [node1, node2] {
        node.exec_ok(&["sed", "-i", "s/^backend = .*/backend = \"log\"/", config]);
    }
    node3.exec_ok(&["sh", "-c", &format!("echo interrupted > {marker}")]);
    let fstab_before = fs::read_to_string(node1.path("/etc/fstab")).unwrap();
    node1.exec_ok(&[
        "sed",
        "-i",
        "s/ServerAliveInterval=5/ServerAliveInterval=7/",
        "/etc/fstab",
    ]);
    let last = controller.converge("restart-only drift", &[node1, node2, node3]);
    let restarted = [
        "Note a changed setting the watcher reads at start only",
        "Restart the watcher",
        "Forget the restart once done",
    ];
    let expected: [(&Container, Vec<&str>); 3] = [
        (
            node1,
            [
                "Configure banshare",
                "Write the share's sshfs line to fstab",
                "Stop the watcher for a remount",
                "Unmount the share for a remount",
                "Mount the share with sshfs, checking the server's host key",
            ]
            .into_iter()
            .chain(restarted)
            .collect(),
        ),
        (
            node2,
            std::iter::once("Configure banshare")
                .chain(restarted)
                .collect(),
        ),
        (node3, restarted.to_vec()),
    ];
    for ((node, tasks), before) in expected.iter().zip(&running_before) {
        for task in tasks {
            last.assert_changed(&node.name, task);
        }
        assert_eq!(
            last.changed_tasks(&node.name).len(),
            tasks.len(),
            "{}: {:?}",
            node.name,
            last.changed_tasks(&node.name)
        );
        let journal = node.exec(&[
            "journalctl",
            "-u",
            "banshare-watch.service",
            "--no-pager",
            "-n",
            "8",
        ]);
        eprintln!(
            "--- {}: the watcher's journal after its restart:\n{}",
            node.name,
            String::from_utf8_lossy(&journal.stdout)
        );
        assert_ne!(&watcher_pid(node), before, "{}: not restarted", node.name);
        assert_watcher_unit_runs(node);
        assert!(
            !node.path(marker).exists(),
            "{}: the pending restart's note is left after the restart",
            node.name
        );
    }
    assert_eq!(
        fs::read_to_string(node1.path("/etc/fstab")).unwrap(),
        fstab_before
    );
    assert_eq!(last.count("files", "changed"), 0, "{}", last.output);

    // review14b M1: a value the watcher would refuse fails the run, and
    // is never written: a malformed extra trusted key on node1 (refused by
    // the role's check before any change), a configuration line `banshare
    // config check` refuses on node2 (refused by the template's
    // validation). Before the fix, the run succeeded and node1's watcher
    // logged "configuration not reloaded ... keeping the old one".
    let hosts = controller.path("hosts.yml");
    let good_inventory = fs::read_to_string(&hosts).unwrap();
    let host_line = |node: &Container| {
        let line = format!(
            "        {}:\n          ansible_host: {}\n",
            node.name, node.ip
        );
        assert!(good_inventory.contains(&line), "{good_inventory}");
        line
    };
    let bad_inventory = good_inventory
        .replace(
            &host_line(node1),
            &format!(
                "{}          banshare_node_extra_trusted_keys: [\"rotated ed25519 not-a-key\"]\n",
                host_line(node1)
            ),
        )
        .replace(
            &host_line(node2),
            &format!(
                "{}          banshare_node_config_extra: \"[monitor]\\nbogus = 1\"\n",
                host_line(node2)
            ),
        );
    fs::write(&hosts, bad_inventory).unwrap();
    let files_before: Vec<String> = [node1, node2]
        .iter()
        .flat_map(|n| [n.path(config), n.path(trusted)])
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    let node1_watcher = watcher_pid(node1);
    let (bad_ok, bad_output) = controller.try_converge("bad values", &[node1, node2, node3]);
    let journal = node1.exec_ok(&[
        "journalctl",
        "-u",
        "banshare-watch.service",
        "--no-pager",
        "-n",
        "4",
    ]);
    eprintln!("--- node1's watcher after the bad values:\n{journal}");
    assert!(
        !bad_ok,
        "a malformed extra trusted key and a refused configuration line were accepted, \
         the run reported success:\n{bad_output}"
    );
    let fatal = |host: &str| {
        bad_output
            .lines()
            .filter(|l| l.starts_with(&format!("fatal: [{host}]")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    eprintln!(
        "--- the bad values' refusals:\n{}\n{}",
        fatal("node1"),
        fatal("node2")
    );
    assert!(
        fatal("node1").contains("banshare_node_extra_trusted_keys"),
        "node1 was not refused for its bad extra key:\n{bad_output}"
    );
    assert!(
        fatal("node2").contains("unknown field `bogus`"),
        "node2's configuration was not refused by banshare config check:\n{bad_output}"
    );
    assert_eq!(bad_output.matches("fatal: [").count(), 2, "{bad_output}");
    let files_after: Vec<String> = [node1, node2]
        .iter()
        .flat_map(|n| [n.path(config), n.path(trusted)])
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        files_after == files_before,
        "a refused value was written to a node's banshare.toml or trusted keys"
    );
    assert_eq!(
        watcher_pid(node1),
        node1_watcher,
        "node1's watcher was touched"
    );
    for node in [node1, node2] {
        assert_watcher_unit_runs(node);
    }
    let bad_recap = parse_recap(&bad_output);
    for host in ["files", "node3"] {
        assert_eq!(
            bad_recap.get(host).and_then(|r| r.get("changed")),
            Some(&0),
            "{bad_output}"
        );
    }

    // review14b M2 and M5, in one run: node1 moves from sshfs to SFTP
    // while its watcher holds the log on the share (the unmount failed
    // "target is busy" before the fix), and node3 is taken out of the
    // inventory: its key leaves authorized_keys, and its SFTP session,
    // open since it joined, must end (sshd checks keys only at login, so
    // it used to stay open, with write access to the log). The cluster
    // then still works: a ban on node1, now over SFTP, blocks a third
    // attacker on node2, whose sshfs session was ended too and comes back.
    let node3_ports = ssh_client_ports(node3);
    assert!(
        !node3_ports.is_empty(),
        "node3's watcher holds no SSH connection to the file server before its removal"
    );
    let third_attacker = network.add_host("at3", THIRD_ATTACKER_IP);
    assert!(can_connect(&third_attacker, node2.ip, 22));
    controller.write_inventory(files, &[node1, node2]);
    fs::write(
        &hosts,
        fs::read_to_string(&hosts).unwrap().replace(
            &host_line(node1),
            &format!("{}          banshare_node_access: sftp\n", host_line(node1)),
        ),
    )
    .unwrap();
    let switched = controller.converge("node1 to sftp, node3 removed", &[node1, node2, node3]);
    for task in [
        "Stop the watcher before unmounting the share of a node on SFTP",
        "Unmount the share of a node on SFTP",
        "Remove the sshfs mount of a node on SFTP",
        "Configure banshare",
        "Restart the watcher",
    ] {
        switched.assert_changed("node1", task);
    }
    switched.assert_changed(
        "files",
        "End the account's open sessions when a key was removed",
    );
    let fstab = fs::read_to_string(node1.path("/etc/fstab")).unwrap();
    assert!(!fstab.contains("fuse.sshfs"), "node1's fstab: {fstab}");
    let mounts = node1.exec_ok(&["cat", "/proc/mounts"]);
    assert!(!mounts.contains("fuse.sshfs"), "node1's mounts: {mounts}");
    let node1_config = fs::read_to_string(node1.path(config)).unwrap();
    assert!(
        node1_config.contains("log = \"sftp://banshare@198.18.0.1/share/newbans.log\""),
        "{node1_config}"
    );
    assert_watcher_unit_runs(node1);
    let authorized = fs::read_to_string(files.path("/etc/ssh/banshare/authorized_keys")).unwrap();
    assert!(
        !authorized.contains("banshare@node3"),
        "node3's key is still authorized:\n{authorized}"
    );
    for node in [node1, node2] {
        let keys = fs::read_to_string(node.path(trusted)).unwrap();
        assert!(!keys.contains("\nnode3 "), "{}: {keys}", node.name);
    }
    assert!(
        wait_until(Duration::from_secs(30), || ssh_client_ports(node3)
            .iter()
            .all(|p| !node3_ports.contains(p))),
        "node3's SSH session to the file server (ports {node3_ports:?}) is still open after its \
         key was removed: {:?}",
        ssh_client_ports(node3)
    );
    node1.exec_ok(&[
        "banshare",
        "ban",
        &THIRD_ATTACKER_IP.to_string(),
        "--jail",
        "sshd",
    ]);
    wait_blocked(
        &third_attacker,
        node2,
        "node1's ban over SFTP, after node3's removal",
    );
    assert_watcher_unit_runs(node2);
    // What node2's watcher made of its sshfs session ended under it.
    let journal = node2.exec(&[
        "journalctl",
        "-u",
        "banshare-watch.service",
        "--no-pager",
        "-n",
        "10",
    ]);
    eprintln!(
        "--- node2's watcher after the file server ended its session:\n{}",
        String::from_utf8_lossy(&journal.stdout)
    );

    // The file server's compaction, run now as its timer would run it:
    // the packaged unit with the role's drop-in, as the banshare user who
    // owns the log. The bans in force stay.
    assert_compaction_runs(
        &mut checks,
        files,
        "line(s) kept",
        "the file server's, of the log",
    );
    assert!(
        !can_connect(&third_attacker, node2.ip, 22),
        "the third attacker reaches node2 after the file server's compaction"
    );

    // The nodes switch to a NATS JetStream stream (banshare_node_access:
    // nats): one nats-server on the file server's host (banshare_nats), the
    // stream made once by node1 with an administrator's NKey made there,
    // each node's own NKey made on it, only the public keys read. A ban on
    // node1 then blocks a fourth attacker on node2 through NATS.
    let nats_started = Instant::now();
    controller.place_nats_certificates(files);
    controller.write_inventory_on(files, &[node1, node2], Log::Nats);
    let on_nats = controller.converge("switched to NATS", &[node1, node2]);
    on_nats.assert_changed("files", "Configure nats-server");
    on_nats.assert_changed("node1", "Make the NATS stream (banshare nats init)");
    on_nats.assert_changed("node1", "Compact the stream with the administrator's NKey");
    let timer = node1.exec_ok(&["systemctl", "is-active", "banshare-compact.timer"]);
    checks.check(timer.trim() == "active", || {
        format!("node1's compaction timer is {timer:?}, not active")
    });
    let server = files.exec_ok(&["systemctl", "is-active", "nats-server.service"]);
    assert_eq!(server.trim(), "active");
    let nats_log = format!("log = \"nats+tls://{FILESERVER_IP}/BANS\"");
    for node in [node1, node2] {
        let text = fs::read_to_string(node.path(config)).unwrap();
        assert!(text.contains(&nats_log), "{}:\n{text}", node.name);
        assert!(
            text.contains("nkey_seed_file = \"/etc/banshare/nats.nkey\""),
            "{}:\n{text}",
            node.name
        );
        assert!(
            text.contains("ca_file = \"/etc/banshare/nats-ca.pem\""),
            "{}:\n{text}",
            node.name
        );
        let seed = stat(node, "%U:%G:%a", "/etc/banshare/nats.nkey");
        checks.check(seed == "banshare:banshare:600", || {
            format!(
                "{}: nats.nkey is {seed}, not banshare:banshare:600",
                node.name
            )
        });
        assert_watcher_unit_runs(node);
    }
    let admin = stat(node1, "%U:%G:%a", "/etc/banshare/nats-admin.nkey");
    checks.check(admin == "root:root:600", || {
        format!("node1: nats-admin.nkey is {admin}, not root:root:600")
    });
    // Only public keys reached the server's configuration; node2's mount
    // is gone (a NATS log needs none).
    let server_config = fs::read_to_string(files.path("/etc/nats-server.conf")).unwrap();
    let seed = node2.exec_ok(&["cat", "/etc/banshare/nats.nkey"]);
    assert!(
        !server_config.contains(seed.trim()),
        "node2's seed in the server's config"
    );
    let public = node2.exec_ok(&["cat", "/etc/banshare/nats.nkey.pub"]);
    assert!(server_config.contains(public.trim()), "{server_config}");
    let fstab = fs::read_to_string(node2.path("/etc/fstab")).unwrap();
    checks.check(!fstab.contains("fuse.sshfs"), || {
        format!("node2 on NATS kept its sshfs line:\n{fstab}")
    });
    // doctor on a node finds the stream, logged in as the node.
    let doctor = node2.exec(&["banshare", "doctor"]);
    let doctor_text = format!(
        "{}{}",
        String::from_utf8_lossy(&doctor.stdout),
        String::from_utf8_lossy(&doctor.stderr)
    );
    let finding = doctor_text
        .lines()
        .find(|l| l.contains(" log: "))
        .unwrap_or_else(|| panic!("node2's doctor has no log finding:\n{doctor_text}"));
    checks.check(
        finding.starts_with("ok") && finding.contains("stream BANS holds"),
        || format!("node2's doctor on the NATS log: {finding}\n{doctor_text}"),
    );
    let fourth_attacker = network.add_host("at4", FOURTH_ATTACKER_IP);
    assert!(
        can_connect(&fourth_attacker, node2.ip, 22),
        "the fourth attacker cannot connect to node2 before its ban"
    );
    node1.exec_ok(&[
        "banshare",
        "ban",
        &FOURTH_ATTACKER_IP.to_string(),
        "--jail",
        "sshd",
    ]);
    wait_blocked(
        &fourth_attacker,
        node2,
        "after the ban on node1, through NATS",
    );
    // The stream's compaction, run now as its timer would run it: the
    // packaged unit with the role's drop-in (root, the administrator's
    // configuration) compacts the stream and keeps the ban in force.
    assert_compaction_runs(
        &mut checks,
        node1,
        "record(s) kept",
        "node1's, of the stream",
    );
    assert!(
        !can_connect(&fourth_attacker, node2.ip, 22),
        "the fourth attacker reaches node2 after the compaction"
    );
    let again = controller.converge("again on NATS", &[node1, node2]);
    for host in ["files", "node1", "node2"] {
        assert_eq!(
            again.count(host, "changed"),
            0,
            "{host} changed on the second run on NATS: {:?}\n{}",
            again.changed_tasks(host),
            again.output
        );
    }
    eprintln!(
        "the NATS phase took {:.0} s",
        nats_started.elapsed().as_secs_f64()
    );

    eprintln!(
        "the whole converge test took {:.0} s",
        test_started.elapsed().as_secs_f64()
    );
    checks.assert_all_passed();
}

/// What a test killed outright (no Drop) leaves behind is removed by the
/// next run's start: a namespace with a process still in it, its veth, the
/// bridge and a root copy, all named after a process no longer alive;
/// those named after a live process are kept.
#[test]
fn leftovers_of_a_killed_run_are_swept() {
    nspawn::require_tools();
    let _sweeping = nspawn::SWEEPING.lock().unwrap_or_else(|e| e.into_inner());
    let mut exited = Command::new("true").spawn().unwrap();
    exited.wait().unwrap();
    let dead = format!("n{:x}", exited.id());
    let live = format!("n{:x}", std::process::id());
    let ns = format!("bsn-{dead}-lft");
    let bridge = format!("{dead}br");
    let root = Path::new(MANIFEST).join(format!("target/nspawn-{}-left", &dead[1..]));
    let kept_root = Path::new(MANIFEST).join(format!("target/nspawn-{}-kept", &live[1..]));
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&["link", "add", &bridge, "type", "bridge"]);
    ip(&["netns", "add", &ns]);
    ip(&[
        "link",
        "add",
        &format!("{dead}lft"),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &ns,
    ]);
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &ns, "sleep", "600"])
        .spawn()
        .unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(&kept_root).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    }));

    nspawn::sweep_dead_runs();

    let listed = |args: &[&str]| {
        String::from_utf8_lossy(&Command::new("ip").args(args).output().unwrap().stdout)
            .into_owned()
    };
    let swept_ns = !listed(&["netns", "list"]).contains(&ns);
    let swept_bridge = !listed(&["link", "show"]).contains(&bridge);
    let sleeper_gone = wait_until(Duration::from_secs(10), || {
        matches!(sleeper.try_wait(), Ok(Some(_)))
    });
    let swept_root = !root.exists();
    let kept = kept_root.exists();
    // Whatever the outcome, nothing of this test stays.
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    let _ = fs::remove_dir_all(&root);
    let _ = fs::remove_dir_all(&kept_root);
    assert!(swept_ns, "namespace {ns} was not swept");
    assert!(swept_bridge, "bridge {bridge} was not swept");
    assert!(sleeper_gone, "the process in {ns} was not killed");
    assert!(swept_root, "{} was not swept", root.display());
    assert!(kept, "the root copy of a live test process was swept");
}
