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
//! 198.18.0.250  the attacker, .249 a second one (namespaces)
//! ```
//!
//! Then: the watcher's unit is active on each node; `banshare ban` on node 1
//! blocks the attacker's TCP connect to node 2; an unsigned line appended by
//! hand on the file server is refused, not applied; a second run reports
//! `changed=0` on every host; drift (a changed configuration line, a removed
//! trusted key, a stopped unit) is reported and repaired by the next run;
//! node3 added to the inventory (over SFTP, no mount) and a run later, its
//! bans apply on nodes 1 and 2, and one more run changes nothing.
//!
//! Needs root, Debian's ansible, systemd-container, debootstrap (the root
//! is made once per machine), iproute2, and the .deb from
//! `packaging/build-deb` (as .ci/run does): fails, never skips, without
//! them. About 4 minutes: five playbook runs of 25 to 55 s each.

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

/// The shared log on the file server, as the role makes it (defaults).
const SERVER_LOG: &str = "/srv/banshare/share/newbans.log";

/// A whole playbook run; the first, which installs everything, takes
/// minutes on a loaded 2-core machine.
const PLAYBOOK_TIMEOUT_SECS: u64 = 900;
/// From `banshare ban` to the firewall of another node, and from an
/// appended line to a watcher's status: the watcher polls the sshfs mount.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(60);

fn node_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + n)
}

/// The newest .deb from packaging/build-deb.
fn built_deb() -> PathBuf {
    let dir = Path::new(MANIFEST).join("target/debian");
    fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("banshare_"))
                && p.extension().is_some_and(|e| e == "deb")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no banshare_*.deb in {}: build it first with packaging/build-deb",
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
    fn new(network: &Network) -> Controller {
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
        let known_hosts: String = std::iter::once(files)
            .chain(nodes.iter().copied())
            .map(|c| format!("{} {}\n", c.ip, c.host_key()))
            .collect();
        fs::write(self.path("known_hosts"), known_hosts).unwrap();
        let node_lines: String = nodes
            .iter()
            .map(|c| {
                let access = match c.name.as_str() {
                    "node2" => "          banshare_node_fail2ban: true\n".to_owned(),
                    "node3" => format!(
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
             \x20 children:\n\
             \x20   banshare_fileserver:\n\
             \x20     hosts:\n\
             \x20       {fs}:\n\
             \x20         ansible_host: {fs_ip}\n\
             \x20   banshare_nodes:\n\
             \x20     hosts:\n\
             {node_lines}",
            key = self.path("id_ed25519").display(),
            known_hosts = self.path("known_hosts").display(),
            deb = self.deb.display(),
            fs = files.name,
            fs_ip = files.ip,
        );
        fs::write(self.path("hosts.yml"), inventory).unwrap();
    }

    /// Runs site.yml from the controller's namespace; panics with its
    /// output unless it succeeded.
    fn converge(&self, what: &str) -> PlaybookRun {
        let started = Instant::now();
        let out: Output = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(["timeout", "--kill-after=10"])
            .arg(PLAYBOOK_TIMEOUT_SECS.to_string())
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
        assert!(
            out.status.success(),
            "ansible-playbook ({what}) failed ({}):\n{output}",
            out.status
        );
        PlaybookRun {
            recap: parse_recap(&output),
            changed: parse_changed(&output),
            output,
        }
    }
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
    let cache = nspawn::cached_debian_root();
    // Dropped last: the containers go first, then every namespace.
    let network = Network::new();
    let controller = Controller::new(&network);
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
    let first = controller.converge("first run");
    for host in ["files", "node1", "node2"] {
        assert!(first.count(host, "changed") > 0, "{host}: nothing changed");
    }

    // The watcher runs on each node, as the packaged systemd unit.
    for node in [node1, node2] {
        assert_watcher_unit_runs(node);
    }
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
    files.exec_ok(&[
        "sh",
        "-c",
        &format!(
            "printf '<13>Nov 30 12:00:00 root[1]: HOST {SECOND_ATTACKER_IP} PORT 22\\n' >> {SERVER_LOG}"
        ),
    ]);
    assert!(
        wait_until(PROPAGATION_TIMEOUT, || rejected_counts(node2)
            .contains("unsigned 1")),
        "node2's watcher did not count the unsigned line as rejected (before: {rejected_before:?}, \
         now: {:?})",
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
    let second = controller.converge("second run");
    for host in ["files", "node1", "node2"] {
        assert_eq!(
            second.count(host, "changed"),
            0,
            "{host} changed on the second run: {:?}\n{}",
            second.changed_tasks(host),
            second.output
        );
    }

    // Drift: a changed configuration line and a removed trusted key on
    // node 1, a stopped watcher on node 2. The next run reports and repairs
    // each.
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
    let repair = controller.converge("after drift");
    assert_eq!(repair.count("files", "changed"), 0, "{}", repair.output);
    repair.assert_changed("node1", "Configure banshare");
    repair.assert_changed("node1", "Trust every node's signing key");
    repair.assert_changed("node1", "Restart the watcher");
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
    assert_ne!(
        watcher_pid(node1),
        node1_watcher,
        "node1's watcher was not restarted"
    );
    for node in [node1, node2] {
        assert_watcher_unit_runs(node);
    }

    // A third node joins, reaching the log over SFTP (no mount): after one
    // run over the grown inventory, the first two trust it and apply its
    // bans.
    controller.write_inventory(files, &[node1, node2, node3]);
    let grown = controller.converge("with node3");
    for host in ["node1", "node2"] {
        grown.assert_changed(host, "Trust every node's signing key");
        grown.assert_changed(host, "Reload the watcher");
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

    // The grown cluster is converged: another run changes nothing.
    let last = controller.converge("again with node3");
    for host in ["files", "node1", "node2", "node3"] {
        assert_eq!(
            last.count(host, "changed"),
            0,
            "{host} changed on the run after node3 joined: {:?}\n{}",
            last.changed_tasks(host),
            last.output
        );
    }
    eprintln!(
        "the whole converge test took {:.0} s",
        test_started.elapsed().as_secs_f64()
    );
}
