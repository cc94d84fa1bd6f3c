//! The ban backends against the real tools: nftables and ipset inside fresh
//! network namespaces (their state is per namespace), a real fail2ban-server
//! with its own config, socket and pidfile, and the command backend with a
//! script that records its argv.
//!
//! These need root and nft, ipset, iptables, fail2ban and iproute2. They
//! fail, never skip, without them (CI runs as root).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use support::wait_until;

use banshare::backend::exec::Exec;
use banshare::backend::{
    self, Action, Backend, BackendError, BackendKind, BackendSettings, Ban, CommandBackend,
    CommandSettings, Unban,
};
use banshare::record::PortSpec;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the tests' own commands: bounded in time, with all their output.
fn exec(prefix: Vec<String>) -> Exec {
    Exec {
        output_cap: 64 << 20,
        ..Exec::new(prefix, TIMEOUT)
    }
}

fn require_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "needs root (CI runs as root)"
    );
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Runs a command on the host, bounded, and returns its stdout; panics with
/// its stderr when it fails.
fn host(args: &[&str]) -> String {
    exec(Vec::new())
        .run(&argv(args), None)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .stdout
}

#[path = "../src/backend/testing.rs"]
mod testing;
use testing::{ban, unban, with_jail_port};

/// `count` distinct IPv4 addresses in 10.0.0.0/8.
fn many(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("10.{}.{}.{}", i / 62500, i / 250 % 250, i % 250 + 1))
        .collect()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique short tag: pid and a per-process counter.
fn tag() -> String {
    format!(
        "{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted on drop (with everything in it: sets,
/// tables, veths), even when the test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        require_root();
        let name = format!("bs-bk-{}", tag());
        host(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The argv prefix that runs a program inside.
    fn prefix(&self) -> Vec<String> {
        argv(&["ip", "netns", "exec", &self.name])
    }

    fn run(&self, args: &[&str]) -> String {
        exec(self.prefix())
            .run(&argv(args), None)
            .unwrap_or_else(|e| panic!("in {}: {args:?}: {e}", self.name))
            .stdout
    }

    fn settings(&self) -> BackendSettings {
        BackendSettings {
            exec_prefix: self.prefix(),
            ..BackendSettings::default()
        }
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it
    /// creates stay in the namespace.
    fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let file = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on this thread only, with a valid fd.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ =
            Exec::new(Vec::new(), TIMEOUT).run(&argv(&["ip", "netns", "del", &self.name]), None);
    }
}

/// Two namespaces joined by a veth pair: `node` (198.18.0.1, 2001:db8:ff::1)
/// and `attacker` (198.18.0.2, 2001:db8:ff::2), and a listener on the node.
struct Link {
    node: Netns,
    attacker: Netns,
    listen4: SocketAddr,
    listen6: SocketAddr,
    // Kept open: connections complete in its backlog without accept().
    _listeners: (TcpListener, TcpListener),
}

impl Link {
    fn new() -> Link {
        let node = Netns::new();
        let attacker = Netns::new();
        let t = tag();
        let (a, b) = (format!("bk{t}a"), format!("bk{t}b"));
        node.run(&[
            "ip",
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &attacker.name,
        ]);
        for (ns, dev, n) in [(&node, &a, 1), (&attacker, &b, 2)] {
            ns.run(&["ip", "addr", "add", &format!("198.18.0.{n}/24"), "dev", dev]);
            ns.run(&[
                "ip",
                "addr",
                "add",
                &format!("2001:db8:ff::{n}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ns.run(&["ip", "link", "set", dev, "up"]);
        }
        let l4 = node.within(|| TcpListener::bind("198.18.0.1:0").unwrap());
        let l6 = node.within(|| TcpListener::bind("[2001:db8:ff::1]:0").unwrap());
        let link = Link {
            listen4: l4.local_addr().unwrap(),
            listen6: l6.local_addr().unwrap(),
            _listeners: (l4, l6),
            node,
            attacker,
        };
        // The link comes up asynchronously.
        assert!(
            wait_until(Duration::from_secs(10), || link.connects(link.listen4)
                && link.connects(link.listen6)),
            "the attacker cannot reach the node before any ban"
        );
        link
    }

    /// Whether a TCP connect from the attacker to `to` succeeds (a dropped
    /// SYN makes it time out).
    fn connects(&self, to: SocketAddr) -> bool {
        self.attacker
            .within(move || TcpStream::connect_timeout(&to, Duration::from_millis(700)).is_ok())
    }
}

// ---------------------------------------------------------------- nftables

/// The elements of an nft set: address or prefix -> timeout in seconds
/// (`None`: no timeout).
fn nft_elements(ns: &Netns, table: &str, set: &str) -> BTreeMap<String, Option<u64>> {
    let text = ns.run(&["nft", "-j", "list", "set", "inet", table, set]);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let set = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o.get("set"))
        .unwrap_or_else(|| panic!("no set in {text}"));
    let value = |v: &serde_json::Value| -> String {
        if let Some(s) = v.as_str() {
            s.to_owned()
        } else if let Some(p) = v.get("prefix") {
            format!("{}/{}", p["addr"].as_str().unwrap(), p["len"])
        } else {
            panic!("unexpected element value {v}")
        }
    };
    set.get("elem")
        .and_then(|e| e.as_array())
        .map(|elems| {
            elems
                .iter()
                .map(|e| match e.get("elem") {
                    Some(inner) => (value(&inner["val"]), inner["timeout"].as_u64()),
                    None => (value(e), None),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn nft_tables(ns: &Netns) -> String {
    ns.run(&["nft", "list", "tables"])
}

#[test]
fn nft_setup_is_idempotent_and_cleanup_removes_the_table() {
    let ns = Netns::new();
    let mut settings = ns.settings();
    let mut b = backend::open(BackendKind::Nftables, &settings).unwrap();
    assert_eq!(b.name(), "nftables");
    b.setup().unwrap();
    b.apply(&[ban("192.0.2.1", Some(600))]).unwrap();
    b.setup().unwrap();
    let ruleset = ns.run(&["nft", "list", "table", "inet", "banshare"]);
    assert_eq!(ruleset.matches(" drop").count(), 4, "{ruleset}");
    assert!(
        ruleset.contains("type filter hook input priority filter - 10; policy accept;"),
        "{ruleset}"
    );
    assert!(!ruleset.contains("chain forward"), "{ruleset}");
    // A restart keeps the bans.
    assert!(nft_elements(&ns, "banshare", "v4").contains_key("192.0.2.1"));

    // The forward chain comes and goes with the setting.
    settings.nftables.forward = true;
    let mut fwd = backend::open(BackendKind::Nftables, &settings).unwrap();
    fwd.setup().unwrap();
    fwd.setup().unwrap();
    let ruleset = ns.run(&["nft", "list", "table", "inet", "banshare"]);
    assert_eq!(ruleset.matches(" drop").count(), 8, "{ruleset}");
    assert!(
        ruleset.contains("type filter hook forward priority filter - 10; policy accept;"),
        "{ruleset}"
    );
    b.setup().unwrap();
    let ruleset = ns.run(&["nft", "list", "table", "inet", "banshare"]);
    assert!(!ruleset.contains("chain forward"), "{ruleset}");
    println!("ruleset after setup:\n{ruleset}");

    b.cleanup().unwrap();
    assert!(!nft_tables(&ns).contains("banshare"), "{}", nft_tables(&ns));
    // Cleaning up twice is no error.
    b.cleanup().unwrap();
}

#[test]
fn nft_is_intact_until_the_table_is_flushed_or_deleted() {
    let ns = Netns::new();
    let mut b = backend::open(BackendKind::Nftables, &ns.settings()).unwrap();
    assert!(!b.is_intact().unwrap(), "before setup");
    b.setup().unwrap();
    assert!(b.is_intact().unwrap());
    ns.run(&["nft", "flush", "ruleset"]);
    assert!(!b.is_intact().unwrap(), "after nft flush ruleset");
    b.setup().unwrap();
    ns.run(&["nft", "delete", "table", "inet", "banshare"]);
    assert!(!b.is_intact().unwrap(), "after the table was deleted");
}

#[test]
fn nft_ban_unban_and_reban() {
    let ns = Netns::new();
    let mut b = backend::open(BackendKind::Nftables, &ns.settings()).unwrap();
    b.setup().unwrap();
    b.apply(&[
        ban("192.0.2.1", Some(1800)),
        ban("192.0.2.2", None),
        ban("::ffff:192.0.2.3", Some(60)),
        ban("2001:db8::1", Some(3600)),
        ban("2001:db8::2/128", None),
        // Unbanning what is not there is no error.
        unban("192.0.2.99"),
        unban("2001:db8::99"),
    ])
    .unwrap();
    let v4 = nft_elements(&ns, "banshare", "v4");
    assert_eq!(
        v4,
        BTreeMap::from([
            ("192.0.2.1".into(), Some(1800)),
            ("192.0.2.2".into(), None),
            ("192.0.2.3".into(), Some(60)),
        ])
    );
    let v6 = nft_elements(&ns, "banshare", "v6");
    assert_eq!(
        v6,
        BTreeMap::from([
            ("2001:db8::1".into(), Some(3600)),
            ("2001:db8::2".into(), None)
        ])
    );

    // A longer re-ban replaces the timeout; a timed ban can become permanent
    // and the other way round.
    b.apply(&[
        ban("192.0.2.1", Some(7200)),
        ban("192.0.2.3", None),
        ban("192.0.2.2", Some(86400 * 3660)),
    ])
    .unwrap();
    let v4 = nft_elements(&ns, "banshare", "v4");
    assert_eq!(v4["192.0.2.1"], Some(7200));
    assert_eq!(v4["192.0.2.3"], None);
    assert_eq!(v4["192.0.2.2"], Some(86400 * 3660));

    // Unban; within one batch the last action counts.
    b.apply(&[
        unban("192.0.2.1"),
        unban("2001:db8::1"),
        unban("192.0.2.2"),
        ban("192.0.2.2", Some(100)),
        ban("192.0.2.3", Some(100)),
        unban("192.0.2.3"),
    ])
    .unwrap();
    let v4 = nft_elements(&ns, "banshare", "v4");
    assert_eq!(v4, BTreeMap::from([("192.0.2.2".into(), Some(100))]));
    assert_eq!(
        nft_elements(&ns, "banshare", "v6")
            .keys()
            .collect::<Vec<_>>(),
        ["2001:db8::2"]
    );

    // Applying before setup fails, and says why.
    b.cleanup().unwrap();
    let err = b.apply(&[ban("192.0.2.1", Some(60))]).unwrap_err();
    assert!(
        err.to_string().contains("No such file or directory"),
        "{err}"
    );
}

#[test]
fn nft_ten_thousand_bans_in_one_apply() {
    let ns = Netns::new();
    let mut b = backend::open(BackendKind::Nftables, &ns.settings()).unwrap();
    b.setup().unwrap();
    let addrs = many(10_000);
    let bans: Vec<Action> = addrs.iter().map(|a| ban(a, Some(1800))).collect();
    let start = Instant::now();
    b.apply(&bans).unwrap();
    let first = start.elapsed();
    let elems = nft_elements(&ns, "banshare", "v4");
    assert_eq!(elems.len(), 10_000);
    assert!(addrs.iter().all(|a| elems[a] == Some(1800)));

    let longer: Vec<Action> = addrs.iter().map(|a| ban(a, Some(3600))).collect();
    let start = Instant::now();
    b.apply(&longer).unwrap();
    let again = start.elapsed();
    let elems = nft_elements(&ns, "banshare", "v4");
    assert!(addrs.iter().all(|a| elems[a] == Some(3600)));

    let unbans: Vec<Action> = addrs.iter().map(|a| unban(a)).collect();
    let start = Instant::now();
    b.apply(&unbans).unwrap();
    let gone = start.elapsed();
    assert!(nft_elements(&ns, "banshare", "v4").is_empty());
    println!(
        "nftables, 10,000 actions in one apply: bans {first:?}, longer re-bans {again:?}, unbans {gone:?}"
    );
    // Speed is a benchmark's business (benches/watch.rs), not a pass/fail
    // test's: a loaded machine must not fail this.
}

/// `nft monitor elements` in a namespace: every element event the kernel
/// commits, one line each (`add element inet banshare v4 { 10.0.0.1 }`,
/// `delete element ...`). Killed on drop.
struct NftMonitor {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NftMonitor {
    /// Starts the monitor and waits until it reports an element added to
    /// `table`'s set `intact` (emptied again): from then on it sees every
    /// event.
    fn start(ns: &Netns, table: &str) -> NftMonitor {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "stdbuf", "-oL", "nft", "monitor"])
            .arg("elements")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nft monitor");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let monitor = NftMonitor { child, lines };
        // Added again each try: only a change makes an event, and the
        // monitor may not have been listening yet at the first.
        let marker = "192.0.2.254";
        let script = format!(
            "flush set inet {table} intact\nadd element inet {table} intact {{ {marker} }}\n"
        );
        let seen = wait_until(TIMEOUT, || {
            let _ = exec(ns.prefix()).run(&argv(&["nft", "-f", "-"]), Some(script.as_bytes()));
            monitor.lines().iter().any(|l| l.contains(marker))
        });
        assert!(seen, "nft monitor never reported the marker element");
        ns.run(&["nft", "flush", "set", "inet", table, "intact"]);
        monitor.lines.lock().unwrap().clear();
        monitor
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `count` lines contain `what`.
    fn wait_for(&self, what: &str, count: usize) -> Vec<String> {
        let ok = wait_until(TIMEOUT, || {
            self.lines().iter().filter(|l| l.contains(what)).count() >= count
        });
        let lines = self.lines();
        assert!(ok, "never saw {count} lines with {what:?}: {lines:?}");
        lines
    }
}

impl Drop for NftMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn nft_new_bans_are_added_once_and_never_deleted() {
    let ns = Netns::new();
    let mut b = backend::open(BackendKind::Nftables, &ns.settings()).unwrap();
    b.setup().unwrap();
    let monitor = NftMonitor::start(&ns, "banshare");
    let addrs = many(1000);
    let bans: Vec<Action> = addrs.iter().map(|a| ban(a, Some(1800))).collect();
    b.apply(&bans).unwrap();
    // One event per element; the last statement's come last, so once
    // there is one per address, every earlier event is in too.
    let lines = monitor.wait_for(" element inet banshare v4 ", addrs.len());
    let deleted = lines.iter().filter(|l| l.starts_with("delete ")).count();
    assert_eq!(
        (lines.len(), deleted),
        (addrs.len(), 0),
        "new elements must be added once, and never deleted: {:?}",
        &lines[..lines.len().min(6)]
    );
    let elems = nft_elements(&ns, "banshare", "v4");
    assert!(addrs.iter().all(|a| elems[a] == Some(1800)));

    // Elements that are there already, new ones in the same batch: one put
    // in by someone else (shorter), a longer re-ban, a timed ban made
    // permanent, a permanent one made timed. Each ends as the batch says.
    ns.run(&[
        "nft",
        "add",
        "element",
        "inet",
        "banshare",
        "v4",
        "{ 192.0.2.5 timeout 1m }",
    ]);
    b.apply(&[ban("192.0.2.6", None)]).unwrap();
    b.apply(&[
        ban("192.0.2.5", Some(7200)),
        ban(&addrs[0], Some(3600)),
        ban(&addrs[1], None),
        ban("192.0.2.6", Some(600)),
        ban("192.0.2.7", Some(60)),
        unban(&addrs[2]),
    ])
    .unwrap();
    let elems = nft_elements(&ns, "banshare", "v4");
    assert_eq!(elems["192.0.2.5"], Some(7200));
    assert_eq!(elems[&addrs[0]], Some(3600));
    assert_eq!(elems[&addrs[1]], None);
    assert_eq!(elems["192.0.2.6"], Some(600));
    assert_eq!(elems["192.0.2.7"], Some(60));
    assert!(!elems.contains_key(&addrs[2]));
    assert_eq!(elems.len(), addrs.len() + 2);
}

#[test]
fn nft_networks_go_to_interval_sets() {
    let ns = Netns::new();
    let mut b = backend::open(BackendKind::Nftables, &ns.settings()).unwrap();
    b.setup().unwrap();
    b.apply(&[
        ban("10.0.0.0/8", Some(600)),
        ban("198.51.100.0/24", None),
        ban("2001:db8::/32", Some(600)),
        ban("192.0.2.7", Some(600)),
    ])
    .unwrap();
    assert_eq!(
        nft_elements(&ns, "banshare", "v4net"),
        BTreeMap::from([
            ("10.0.0.0/8".into(), Some(600)),
            ("198.51.100.0/24".into(), None)
        ])
    );
    assert_eq!(
        nft_elements(&ns, "banshare", "v6net"),
        BTreeMap::from([("2001:db8::/32".into(), Some(600))])
    );
    assert_eq!(nft_elements(&ns, "banshare", "v4").len(), 1);

    // A network inside a banned one is refused, and reported; the rest of
    // the batch is applied all the same.
    let err = b
        .apply(&[
            ban("10.1.0.0/16", Some(600)),
            ban("172.16.0.0/12", Some(600)),
            ban("192.0.2.8", Some(600)),
            ban("2001:db8:1::/48", Some(60)),
        ])
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("10.1.0.0/16") && text.contains("2001:db8:1::/48"),
        "{text}"
    );
    assert!(!text.contains("172.16.0.0/12"), "{text}");
    println!("refused as expected: {text}");
    assert!(nft_elements(&ns, "banshare", "v4net").contains_key("172.16.0.0/12"));
    assert!(!nft_elements(&ns, "banshare", "v4net").contains_key("10.1.0.0/16"));
    assert!(nft_elements(&ns, "banshare", "v4").contains_key("192.0.2.8"));

    // A longer re-ban of the same network updates it; unbanning a network
    // that overlaps a banned one (so cannot be there) is no error.
    b.apply(&[
        ban("10.0.0.0/8", Some(7200)),
        unban("10.1.0.0/16"),
        unban("2001:db8::/32"),
    ])
    .unwrap();
    assert_eq!(
        nft_elements(&ns, "banshare", "v4net")["10.0.0.0/8"],
        Some(7200)
    );
    assert!(nft_elements(&ns, "banshare", "v6net").is_empty());
    b.cleanup().unwrap();
}

#[test]
fn nft_ban_drops_traffic_and_unban_restores_it() {
    let link = Link::new();
    let mut b = backend::open(BackendKind::Nftables, &link.node.settings()).unwrap();
    b.setup().unwrap();
    assert!(link.connects(link.listen4));
    b.apply(&[
        ban("198.18.0.2", Some(600)),
        ban("2001:db8:ff::/64", Some(600)),
    ])
    .unwrap();
    assert!(!link.connects(link.listen4), "IPv4 ban did not drop");
    assert!(
        !link.connects(link.listen6),
        "IPv6 network ban did not drop"
    );
    b.apply(&[unban("198.18.0.2"), unban("2001:db8:ff::/64")])
        .unwrap();
    assert!(link.connects(link.listen4));
    assert!(link.connects(link.listen6));
    b.apply(&[ban("198.18.0.0/24", None)]).unwrap();
    assert!(
        !link.connects(link.listen4),
        "IPv4 network ban did not drop"
    );
    b.cleanup().unwrap();
    assert!(link.connects(link.listen4));
}

// ------------------------------------------------------------------- ipset

/// The members of an ipset: address or network -> timeout (0: permanent).
fn ipset_members(ns: &Netns, set: &str) -> BTreeMap<String, u64> {
    let text = ns.run(&["ipset", "list", set]);
    let members = text
        .split_once("Members:\n")
        .unwrap_or_else(|| panic!("no members in {text}"))
        .1;
    members
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(words.get(1), Some(&"timeout"), "{l}");
            (words[0].to_owned(), words[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn ipset_is_intact_until_a_set_is_destroyed() {
    let ns = Netns::new();
    let mut b = backend::open(BackendKind::Ipset, &ns.settings()).unwrap();
    assert!(!b.is_intact().unwrap(), "before setup");
    b.setup().unwrap();
    assert!(b.is_intact().unwrap());
    ns.run(&["ipset", "destroy", "banshare-v6net"]);
    assert!(!b.is_intact().unwrap(), "after one set was destroyed");
}

#[test]
fn ipset_lifecycle() {
    let ns = Netns::new();
    let mut b = backend::open(BackendKind::Ipset, &ns.settings()).unwrap();
    assert_eq!(b.name(), "ipset");
    b.setup().unwrap();
    b.setup().unwrap();
    b.apply(&[
        ban("192.0.2.1", Some(1800)),
        ban("192.0.2.2", None),
        ban("2001:db8::1", Some(600)),
        ban("10.0.0.0/8", Some(600)),
        ban("10.1.0.0/16", Some(900)),
        ban("2001:db8:1::/48", None),
        unban("192.0.2.99"),
    ])
    .unwrap();
    let v4 = ipset_members(&ns, "banshare-v4");
    assert_eq!(v4.len(), 2);
    // The kernel counts down at once: 1799 or 1800.
    assert!((1795..=1800).contains(&v4["192.0.2.1"]), "{v4:?}");
    assert_eq!(v4["192.0.2.2"], 0);
    assert!(ipset_members(&ns, "banshare-v6").contains_key("2001:db8::1"));
    let nets = ipset_members(&ns, "banshare-v4net");
    assert_eq!(
        nets.keys().collect::<Vec<_>>(),
        ["10.0.0.0/8", "10.1.0.0/16"]
    );
    assert_eq!(ipset_members(&ns, "banshare-v6net")["2001:db8:1::/48"], 0);

    // Longer re-ban, to permanent, and unban.
    b.apply(&[
        ban("192.0.2.1", Some(7200)),
        ban("2001:db8::1", None),
        unban("192.0.2.2"),
    ])
    .unwrap();
    let v4 = ipset_members(&ns, "banshare-v4");
    assert!((7195..=7200).contains(&v4["192.0.2.1"]), "{v4:?}");
    assert!(!v4.contains_key("192.0.2.2"));
    assert_eq!(ipset_members(&ns, "banshare-v6")["2001:db8::1"], 0);

    // A ban longer than ipset's largest timeout is cut to it.
    b.apply(&[ban("192.0.2.3", Some(3660 * 86400))]).unwrap();
    assert!(ipset_members(&ns, "banshare-v4")["192.0.2.3"] > 2_147_000);

    // 10,000 in one apply.
    let addrs = many(10_000);
    let start = Instant::now();
    b.apply(&addrs.iter().map(|a| ban(a, Some(1800))).collect::<Vec<_>>())
        .unwrap();
    let took = start.elapsed();
    assert_eq!(ipset_members(&ns, "banshare-v4").len(), 10_002);
    // Printed, not asserted: speed belongs to the benchmarks.
    println!("ipset, 10,000 bans in one apply: {took:?}");

    // A line the kernel refuses (no /0 in hash:net) is reported; the lines
    // after it are applied all the same.
    let err = b
        .apply(&[
            ban("192.0.2.50", Some(60)),
            ban("0.0.0.0/0", Some(60)),
            ban("192.0.2.51", Some(60)),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("0.0.0.0/0"), "{err}");
    let v4 = ipset_members(&ns, "banshare-v4");
    assert!(
        v4.contains_key("192.0.2.50") && v4.contains_key("192.0.2.51"),
        "{err}"
    );

    b.cleanup().unwrap();
    assert_eq!(ns.run(&["ipset", "list", "-n"]).trim(), "");
    b.cleanup().unwrap();
    // Applying before setup fails at once, and says why.
    let err = b
        .apply(
            &many(100)
                .iter()
                .map(|a| ban(a, Some(60)))
                .collect::<Vec<_>>(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn ipset_with_the_documented_iptables_rules_drops_traffic() {
    let link = Link::new();
    let mut b = backend::open(BackendKind::Ipset, &link.node.settings()).unwrap();
    b.setup().unwrap();
    for (tool, set) in [
        ("iptables", "banshare-v4"),
        ("iptables", "banshare-v4net"),
        ("ip6tables", "banshare-v6"),
        ("ip6tables", "banshare-v6net"),
    ] {
        link.node.run(&[
            tool,
            "-I",
            "INPUT",
            "-m",
            "set",
            "--match-set",
            set,
            "src",
            "-j",
            "DROP",
        ]);
    }
    assert!(link.connects(link.listen4));
    b.apply(&[
        ban("198.18.0.2", Some(600)),
        ban("2001:db8:ff::2", Some(600)),
    ])
    .unwrap();
    assert!(!link.connects(link.listen4));
    assert!(!link.connects(link.listen6));
    b.apply(&[unban("198.18.0.2"), unban("2001:db8:ff::2")])
        .unwrap();
    assert!(link.connects(link.listen4));
    assert!(link.connects(link.listen6));
    // The kernel refuses to destroy sets in use, and cleanup says so.
    let err = b.cleanup().unwrap_err();
    assert!(err.to_string().contains("iptables"), "{err}");
}

// ---------------------------------------------------------------- fail2ban

/// A fail2ban-server of its own: config dir, socket, pidfile, an in-memory
/// database and one jail `banshare` with no actions (so it touches no
/// firewall). Stopped on drop.
struct Fail2ban {
    dir: tempfile::TempDir,
    server: Child,
}

impl Fail2ban {
    fn start() -> Fail2ban {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(
            d.join("fail2ban.conf"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {log}\nsocket = {sock}\npidfile = {pid}\ndbfile = :memory:\n",
                log = d.join("fail2ban.log").display(),
                sock = d.join("f2b.sock").display(),
                pid = d.join("f2b.pid").display(),
            ),
        )
        .unwrap();
        fs::write(d.join("dummy.log"), "").unwrap();
        fs::write(
            d.join("jail.conf"),
            format!(
                "[banshare]\nenabled = true\nfilter =\nfailregex = ^banshare-never-matches <HOST>$\n\
                 backend = polling\nlogpath = {}\nbantime = 600\n",
                d.join("dummy.log").display()
            ),
        )
        .unwrap();
        let server = Command::new("fail2ban-server")
            .arg("-f")
            .arg("-x")
            .arg("-c")
            .arg(d)
            .arg("-s")
            .arg(d.join("f2b.sock"))
            .arg("-p")
            .arg(d.join("f2b.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(d.join("server.err")).unwrap())
            .spawn()
            .expect("start fail2ban-server (apt-get install fail2ban)");
        let f2b = Fail2ban { dir, server };
        let ready = wait_until(Duration::from_secs(30), || {
            Exec::new(Vec::new(), TIMEOUT)
                .run(&f2b.client(&["ping"]), None)
                .is_ok_and(|o| o.stdout.contains("pong"))
        });
        assert!(
            ready,
            "fail2ban-server did not answer: {}",
            fs::read_to_string(f2b.dir.path().join("server.err")).unwrap_or_default()
        );
        f2b
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("f2b.sock")
    }

    fn client(&self, args: &[&str]) -> Vec<String> {
        let mut v = argv(&["fail2ban-client", "-s"]);
        v.push(self.socket().display().to_string());
        v.extend(argv(args));
        v
    }

    fn banned(&self) -> BTreeSet<String> {
        let out = exec(Vec::new())
            .run(&self.client(&["get", "banshare", "banip"]), None)
            .unwrap();
        out.stdout.split_whitespace().map(str::to_owned).collect()
    }

    fn settings(&self) -> BackendSettings {
        let mut s = BackendSettings::default();
        s.fail2ban.socket = Some(self.socket());
        s
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = Exec::new(Vec::new(), Duration::from_secs(10)).run(&self.client(&["stop"]), None);
        let stopped = wait_until(Duration::from_secs(10), || {
            matches!(self.server.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.server.kill();
            let _ = self.server.wait();
        }
    }
}

#[test]
fn fail2ban_bans_and_unbans_in_batches() {
    let f2b = Fail2ban::start();
    let mut b = backend::open(BackendKind::Fail2ban, &f2b.settings()).unwrap();
    assert_eq!(b.name(), "fail2ban");
    b.setup().unwrap();

    let mut addrs = many(99);
    addrs.push("2001:db8::7".into());
    let start = Instant::now();
    b.apply(&addrs.iter().map(|a| ban(a, Some(600))).collect::<Vec<_>>())
        .unwrap();
    let took = start.elapsed();
    assert_eq!(f2b.banned(), addrs.iter().cloned().collect());
    println!("fail2ban, 100 bans in one apply (one call): {took:?}");

    let (gone, kept) = addrs.split_at(50);
    b.apply(
        &gone
            .iter()
            .map(|a| unban(a))
            .chain([unban("192.0.2.200")])
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(f2b.banned(), kept.iter().cloned().collect());

    // A bigger batch: 2,500 bans in three calls.
    let big = many(2_500);
    let start = Instant::now();
    b.apply(&big.iter().map(|a| ban(a, Some(600))).collect::<Vec<_>>())
        .unwrap();
    let took = start.elapsed();
    assert_eq!(f2b.banned().len(), 2_501);
    println!("fail2ban, 2,500 bans in one apply (3 calls): {took:?}");
    b.cleanup().unwrap();
}

#[test]
fn fail2ban_setup_names_a_missing_jail_or_server() {
    let f2b = Fail2ban::start();
    let mut s = f2b.settings();
    s.fail2ban.jail = "nosuchjail".into();
    let err = backend::open(BackendKind::Fail2ban, &s)
        .unwrap()
        .setup()
        .unwrap_err();
    assert!(matches!(err, BackendError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("nosuchjail"), "{err}");

    s.fail2ban.jail = "banshare".into();
    s.fail2ban.socket = Some(f2b.dir.path().join("nothing-here.sock"));
    let err = backend::open(BackendKind::Fail2ban, &s)
        .unwrap()
        .setup()
        .unwrap_err();
    assert!(err.to_string().contains("fail2ban-server running"), "{err}");
}

// ----------------------------------------------------------------- command

/// A script that writes its argv, NUL-separated, to a new file per call.
fn recorder(dir: &Path, extra: &str) -> PathBuf {
    let calls = dir.join("calls");
    fs::create_dir(&calls).unwrap();
    let script = dir.join("record.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nf=$(mktemp {}/call.XXXXXX)\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > \"$f\"\n{extra}\n",
            calls.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn calls(dir: &Path) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = fs::read_dir(dir.join("calls"))
        .unwrap()
        .map(|e| {
            let data = fs::read(e.unwrap().path()).unwrap();
            data.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8(a.to_vec()).unwrap())
                .collect()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn command_batch_template_runs_one_process_per_thousand() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let script = recorder(dir.path(), "").display().to_string();
    let hostile = "--note=$(id);rm -rf / `x` 'q' \"d\" a b";
    let settings = BackendSettings {
        command: CommandSettings {
            ban: Some(argv(&[
                &script,
                "ban",
                hostile,
                "--jail={jail}",
                "{port}",
                "{bantime}",
                "{{lit}}",
                "{ips}",
            ])),
            unban: Some(argv(&[&script, "unban", "{jail}", "{ips}"])),
        },
        ..BackendSettings::default()
    };
    let mut b = backend::open(BackendKind::Command, &settings).unwrap();
    assert_eq!(b.name(), "command");
    b.setup().unwrap();
    let addrs = many(2_500);
    let batch: Vec<Action> = addrs
        .iter()
        .map(|a| with_jail_port(ban(a, Some(1800)), "a.b@c-d_e", "ssh,80:90"))
        .collect();
    b.apply(&batch).unwrap();
    let got = calls(dir.path());
    assert_eq!(got.len(), 3, "2,500 bans alike take 3 processes");
    let mut seen = Vec::new();
    for call in &got {
        assert_eq!(
            call[..6],
            argv(&[
                "ban",
                hostile,
                "--jail=a.b@c-d_e",
                "ssh,80:90",
                "1800",
                "{lit}"
            ]),
            "arguments arrive verbatim"
        );
        seen.extend(call[6..].iter().cloned());
    }
    seen.sort();
    let mut want = addrs.clone();
    want.sort();
    assert_eq!(seen, want);

    b.apply(&[
        with_jail_port(unban("192.0.2.1"), "sshd", "22"),
        with_jail_port(unban("2001:db8::/48"), "sshd", "22"),
    ])
    .unwrap();
    assert!(calls(dir.path()).contains(&argv(&["unban", "sshd", "192.0.2.1", "2001:db8::/48"])));
    b.cleanup().unwrap();
}

#[test]
fn command_per_record_template_and_failures() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    // Fails for one address, after recording the call.
    let script = recorder(
        dir.path(),
        "[ \"$1\" = 192.0.2.66 ] && { echo refused >&2; exit 4; }; exit 0",
    )
    .display()
    .to_string();
    let mut b = CommandBackend::new(
        &CommandSettings {
            ban: Some(argv(&[&script, "{ip}", "{bantime}"])),
            unban: Some(argv(&[&script, "{ip}", "unban"])),
        },
        Exec::new(Vec::new(), TIMEOUT),
    )
    .unwrap();
    let err = b
        .apply(&[
            ban("192.0.2.1", None),
            ban("192.0.2.66", Some(5)),
            unban("192.0.2.2"),
        ])
        .unwrap_err();
    assert!(
        err.to_string().contains("refused") && err.to_string().contains("1 of 3"),
        "{err}"
    );
    assert_eq!(
        calls(dir.path()),
        vec![
            argv(&["192.0.2.1", "permanent"]),
            argv(&["192.0.2.2", "unban"]),
            argv(&["192.0.2.66", "5"]),
        ]
    );
}

#[test]
fn command_that_hangs_is_killed() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let script = recorder(dir.path(), "sleep 60").display().to_string();
    let settings = BackendSettings {
        timeout: Duration::from_millis(500),
        command: CommandSettings {
            ban: Some(argv(&[&script, "{ips}"])),
            unban: Some(argv(&[&script, "{ips}"])),
        },
        ..BackendSettings::default()
    };
    let mut b = backend::open(BackendKind::Command, &settings).unwrap();
    let start = Instant::now();
    let err = b.apply(&[ban("192.0.2.1", Some(60))]).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("timeout"), "{err}");
}

#[test]
fn log_backend_opens() {
    let b = backend::open(BackendKind::Log, &BackendSettings::default()).unwrap();
    assert_eq!(b.name(), "log");
}
