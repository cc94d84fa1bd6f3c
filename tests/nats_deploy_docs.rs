//! docs/deploy.md's NATS JetStream setup, run as written: its server
//! configuration block is the configuration of 3 nats-servers on test
//! hosts (tests/support/nats.rs), its keys are made with `banshare nats
//! keygen` as it says, its stream with its `banshare nats init` command,
//! and two nodes configured with its node block share a ban: the
//! attacker's TCP connect to node 1 fails once node 0 bans it.
//!
//! What the test changes in the blocks, and only that: the servers' and
//! certificate files' names become the test hosts' addresses and temp
//! files, each server's name the test's ("s0"...), the
//! `UADMIN...`/`UWEB1...` placeholders the keys made here, the
//! example node `web1` each node (its entry repeated per node, as the docs
//! say), the route secret `SECRET...` one made as the docs say (`openssl
//! rand -hex 24`), and each server gets a monitoring port, by which the
//! test knows it is ready. A change of the docs that the test no longer
//! finds fails it, naming what is missing.
//!
//! Then a fourth server, the attacker's, with the same block but another
//! route secret (and its own user in the account, and no TLS for its own
//! client), must not route in: the cluster's `/routez` does not list it,
//! it logs the servers' "Authorization Violation", and a ban published
//! through it never reaches the stream (review19 H2).
//!
//! Needs root, nats-server and the Python client (.ci/install-deps); fails,
//! never skips, without them.

mod support;

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use banshare::outbox::spool::Spool;
use support::cluster::{Cluster, require_root};
use support::nats::{MONITOR_PORT, NATS_SERVER, NatsOptions, NatsServers};
use support::{BANSHARE, wait_until};

const DEPLOY_MD: &str = include_str!("../docs/deploy.md");

/// The TCP port the attacker connects to on node 1.
const PORT: u16 = 8080;

/// From a ban on one node to the other's firewall, at most.
const PROPAGATION: Duration = Duration::from_secs(30);

/// The docs' NATS section: from its heading to the next one of its level.
fn nats_section() -> &'static str {
    let start = DEPLOY_MD
        .find("\n## NATS JetStream\n")
        .expect("docs/deploy.md has no \"## NATS JetStream\" section");
    let rest = &DEPLOY_MD[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

/// The body of the first fenced block of `section` whose opening line is
/// "```" + `info` and whose body starts with `first_line`.
fn code_block(section: &str, info: &str, first_line: &str) -> String {
    let fence = format!("```{info}\n");
    let mut rest = section;
    while let Some(at) = rest.find(&fence) {
        let body = &rest[at + fence.len()..];
        let end = body.find("\n```").expect("an unterminated code block");
        if body.starts_with(first_line) {
            return body[..end + 1].to_owned();
        }
        rest = &body[end..];
    }
    panic!("docs/deploy.md's NATS section has no ```{info} block starting with {first_line:?}")
}

/// `text` with `from` replaced by `to`, which it must hold.
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "docs/deploy.md's NATS block no longer holds {from:?}:\n{text}"
    );
    text.replace(from, to)
}

/// The docs' server names, nats1 to nats3, as the test's addresses.
fn server_addresses(text: &str, nats: &NatsServers) -> String {
    (0..3).fold(text.to_owned(), |text, i| {
        replace(
            &text,
            &format!("nats{}", i + 1),
            &nats.server_ip(i).to_string(),
        )
    })
}

/// An NKey made by `banshare nats keygen --out FILE`, as the docs say:
/// the seed file and the public key printed.
struct Key {
    seed_file: String,
    public: String,
}

fn keygen(dir: &Path, name: &str) -> Key {
    let seed_file = dir.join(format!("{name}.nkey"));
    let out = Command::new(BANSHARE)
        .args(["--config", "/dev/null", "nats", "keygen", "--out"])
        .arg(&seed_file)
        .stdin(Stdio::null())
        .output()
        .expect("run banshare nats keygen");
    assert_ok(&out, "banshare nats keygen");
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(public.starts_with('U'), "not a user's public key: {public}");
    Key {
        seed_file: seed_file.display().to_string(),
        public,
    }
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A route secret, made as the docs say.
fn route_secret() -> String {
    let out = Command::new("openssl")
        .args(["rand", "-hex", "24"])
        .output()
        .expect("run openssl rand");
    assert_ok(&out, "openssl rand -hex 24");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Server `i`'s configuration: the docs' block, made concrete (see the
/// module's doc), with route secret `secret`.
fn server_config(
    block: &str,
    nats: &NatsServers,
    i: usize,
    admin: &Key,
    nodes: &[Key],
    secret: &str,
) -> String {
    let (cert, key) = nats.server_certificate().expect("servers with TLS");
    // Not required to be there: a block without a route secret must fail
    // on the attacker's server routing in, not on this.
    let mut config = block.replace("SECRET...", secret);
    config = replace(
        &config,
        "server_name: nats1",
        &format!("server_name: {}", nats.server_name(i)),
    );
    config = replace(
        &config,
        "/var/lib/nats/jetstream",
        &nats.store_dir(i).display().to_string(),
    );
    config = replace(&config, "/etc/nats/server.pem", &cert.display().to_string());
    config = replace(&config, "/etc/nats/server.key", &key.display().to_string());
    config = replace(&config, "UADMIN...", &admin.public);
    // The example node's entry, from its `{ nkey: UWEB1...` line to the
    // line closing it, once per node.
    let at = config
        .find("{ nkey: UWEB1...")
        .expect("the docs' server block has no entry for node web1 (UWEB1...)");
    let start = config[..at].rfind('\n').map_or(0, |i| i + 1);
    let len = config[start..]
        .find("} }\n")
        .expect("the docs' web1 entry does not end with \"} }\"")
        + "} }\n".len();
    let entry = config[start..start + len].to_owned();
    let entries: String = nodes
        .iter()
        .enumerate()
        .map(|(n, key)| {
            let entry = replace(&entry, "UWEB1...", &key.public);
            replace(
                &entry,
                "banshare.BANS.web1",
                &format!("banshare.BANS.node{n}"),
            )
        })
        .collect();
    config.replace_range(start..start + len, &entries);
    config = server_addresses(&config, nats);
    format!("{config}http: \"{}:{MONITOR_PORT}\"\n", nats.server_ip(i))
}

/// A node's configuration: the docs' node block made concrete, with what
/// a test host needs besides (its node id, its own spool and state).
fn node_config(block: &str, nats: &NatsServers, key: &Key, node: usize, home: &Path) -> String {
    let config = replace(block, "/etc/banshare/nats.nkey", &key.seed_file);
    let ca = nats.ca_file().expect("servers with TLS");
    let config = replace(
        &config,
        "/etc/banshare/nats-ca.pem",
        &ca.display().to_string(),
    );
    let config = server_addresses(&config, nats);
    let config = replace(
        &config,
        "[common]\n",
        &format!(
            "[common]\nnode = \"node{node}\"\nspool_dir = \"{}\"\n",
            home.join("spool").display()
        ),
    );
    format!(
        "{config}\n[watch]\nstate_dir = \"{}\"\n",
        home.join("state").display()
    )
}

#[test]
fn the_deploy_docs_nats_setup_runs_as_written_and_shares_a_ban() {
    require_root();
    let section = nats_section();
    let server_block = code_block(section, "text", "# /etc/nats-server.conf\n");
    let node_block = code_block(section, "toml", "[common]\n");
    let init_command = code_block(section, "sh", "banshare nats init ")
        .trim()
        .to_owned();

    let dir = tempfile::tempdir().expect("a temp dir");
    let admin = keygen(dir.path(), "admin");
    let nodes = [keygen(dir.path(), "node0"), keygen(dir.path(), "node1")];

    let secret = route_secret();

    let cluster = Cluster::new("natsdocs", 2);
    let config = |nats: &NatsServers, i: usize| {
        server_config(&server_block, nats, i, &admin, &nodes, &secret)
    };
    let nats = NatsServers::start_on_configured(
        &cluster,
        "natsdocs",
        NatsOptions::cluster().with_tls(),
        Some(&config),
    );

    // Node configurations, and the administrator's: the node block with
    // the administrator's key, on node 0's host.
    let homes: Vec<_> = (0..2)
        .map(|n| dir.path().join(format!("node{n}")))
        .collect();
    let configs: Vec<_> = (0..2)
        .map(|n| {
            fs::create_dir_all(&homes[n]).unwrap();
            let path = homes[n].join("banshare.toml");
            fs::write(
                &path,
                node_config(&node_block, &nats, &nodes[n], n, &homes[n]),
            )
            .unwrap();
            path
        })
        .collect();
    let admin_home = dir.path().join("admin");
    fs::create_dir_all(&admin_home).unwrap();
    let admin_config = admin_home.join("banshare.toml");
    fs::write(
        &admin_config,
        node_config(&node_block, &nats, &admin, 0, &admin_home),
    )
    .unwrap();
    let banshare = |node: usize, config: &Path, args: &[&str]| -> Output {
        cluster
            .command_in(cluster.node_ns(node), BANSHARE)
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run banshare")
    };

    // A node may not make the stream; the administrator does, with the
    // docs' command.
    let init_args: Vec<String> = server_addresses(&init_command, &nats)
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect();
    let init_args: Vec<&str> = init_args.iter().map(String::as_str).collect();
    let by_node = banshare(0, &configs[0], &init_args);
    assert!(
        !by_node.status.success(),
        "a node made the stream with the docs' node permissions"
    );
    assert_ok(
        &banshare(0, &admin_config, &init_args),
        "the docs' nats init",
    );
    assert!(
        wait_until(Duration::from_secs(10), || nats
            .stream_leader("BANS")
            .is_some()),
        "the stream BANS has no leader after nats init"
    );

    // doctor on a node, as it logs in: the stream is there.
    let doctor = banshare(1, &configs[1], &["doctor"]);
    let doctor_text = format!(
        "{}{}",
        String::from_utf8_lossy(&doctor.stdout),
        String::from_utf8_lossy(&doctor.stderr)
    );
    let log_finding = doctor_text
        .lines()
        .find(|l| l.contains(" log: "))
        .unwrap_or_else(|| panic!("doctor has no log finding:\n{doctor_text}"));
    assert!(
        log_finding.starts_with("ok") && log_finding.contains("stream BANS holds"),
        "doctor on node1: {log_finding}\n{doctor_text}"
    );

    // Node 1's watcher bans with nftables what node 0 shares.
    cluster.serve_tcp(1, PORT);
    let _watcher = support::Daemon(
        cluster
            .command_in(cluster.node_ns(1), BANSHARE)
            .arg("--config")
            .arg(&configs[1])
            .args(["watch", "--backend", "nftables"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start banshare watch"),
    );
    let nft_table = || {
        cluster
            .command_in(cluster.node_ns(1), "nft")
            .args(["list", "table", "inet", "banshare"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        wait_until(Duration::from_secs(20), nft_table),
        "node1's watcher never made its nftables table"
    );
    let reachable = || cluster.can_connect(cluster.attacker_ns(), cluster.node_ip(1), PORT);
    assert!(reachable(), "node1 must accept the attacker before the ban");
    let attacker = cluster.attacker_ip().to_string();
    let ban = banshare(0, &configs[0], &["ban", &attacker, "--bantime", "600"]);
    assert_ok(&ban, "banshare ban on node0");
    let spooled = Spool::open(&homes[0].join("spool"))
        .and_then(|s| s.depth())
        .expect("node0's spool");
    assert_eq!(
        spooled,
        0,
        "node0's ban was spooled, not published: {}",
        String::from_utf8_lossy(&ban.stderr)
    );
    assert!(
        wait_until(PROPAGATION, || !reachable()),
        "node1 still accepts the attacker after node0's ban through the docs' NATS setup"
    );

    // A node cannot publish on another's subject: node 1's record with
    // node 0's name (so node 0's subject) is refused by the servers, and
    // waits in node 1's spool. (A record naming node 0 on node 1's own
    // subject would be taken: only signatures bind a record to its node.)
    let forged = banshare(
        1,
        &configs[1],
        &[
            "ban",
            "192.0.2.99",
            "--node",
            "node0",
            // Not acknowledged: spooled after this, not the default 15 s.
            "--lock-timeout",
            "2s",
            "--stale-lock",
            "1s",
        ],
    );
    assert_ok(&forged, "banshare ban --node node0 on node1");
    let spooled = Spool::open(&homes[1].join("spool"))
        .and_then(|s| s.depth())
        .expect("node1's spool");
    assert_eq!(
        spooled,
        1,
        "node1 published as node0: {}",
        String::from_utf8_lossy(&forged.stderr)
    );

    rogue_server_cannot_route_in(&cluster, &nats, dir.path(), &server_block, &nodes);
}

/// review19 H2: a server anyone starts with the docs' block but another
/// route secret, on the attacker's host, declaring its own user in
/// banshare's account. Were it let in as a route, that user's publishes
/// would reach the stream, past the nodes' NKeys and permissions.
fn rogue_server_cannot_route_in(
    cluster: &Cluster,
    nats: &NatsServers,
    dir: &Path,
    server_block: &str,
    nodes: &[Key],
) {
    let evil = keygen(dir, "evil");
    let rogue_dir = dir.join("rogue");
    fs::create_dir_all(rogue_dir.join("store")).unwrap();
    let ip = cluster.attacker_ip();
    let mut config = server_config(server_block, nats, 0, &evil, nodes, &route_secret());
    config = replace(&config, "server_name: s0", "server_name: rogue");
    config = replace(
        &config,
        &nats.store_dir(0).display().to_string(),
        &rogue_dir.join("store").display().to_string(),
    );
    config = replace(
        &config,
        &format!("http: \"{}:{MONITOR_PORT}\"", nats.server_ip(0)),
        &format!("http: \"{ip}:{MONITOR_PORT}\""),
    );
    // Its client connects without TLS: the test's certificate does not
    // name the attacker's address, and the attacker's server is theirs to
    // configure.
    let tls = config
        .find("tls {")
        .expect("the docs' block has a tls block");
    let tls_end = tls + config[tls..].find("\n}\n").expect("the tls block's end") + 3;
    config.replace_range(tls..tls_end, "");
    let config_path = rogue_dir.join("nats-server.conf");
    fs::write(&config_path, &config).unwrap();
    let log_path = rogue_dir.join("nats-server.log");
    let log = File::create(&log_path).unwrap();
    let _rogue = support::Daemon(
        cluster
            .command_in(cluster.attacker_ns(), NATS_SERVER)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the rogue nats-server"),
    );
    let rogue_log = || fs::read_to_string(&log_path).unwrap_or_default();
    // The route's address in a server's /routez: the rogue's, whichever
    // side dialled.
    let routed_in = || {
        (0..nats.server_count()).any(|i| {
            nats.monitor(i, "/routez")
                .is_ok_and(|(_, body)| body.contains(&format!("\"{ip}\"")))
        })
    };
    wait_until(Duration::from_secs(15), || {
        routed_in() || rogue_log().contains("Authorization Violation")
    });
    let routez: String = (0..nats.server_count())
        .map(|i| {
            let body = nats
                .monitor(i, "/routez")
                .map(|(_, body)| body)
                .unwrap_or_default();
            format!("\n--- s{i} /routez:\n{body}")
        })
        .collect();
    assert!(
        !routed_in(),
        "a server with another route secret routed into the docs' cluster:{routez}\n\
         --- its log:\n{}",
        rogue_log()
    );
    assert!(
        rogue_log().contains("Authorization Violation"),
        "the servers did not refuse the rogue server's routes by their secret:\n{}{routez}",
        rogue_log()
    );

    // Its own user publishes a ban as node 0, through it: the stream does
    // not take it.
    let leader = nats.stream_leader("BANS").expect("the stream's leader");
    let before = nats.stored_messages(leader, "BANS");
    let evil_config = rogue_dir.join("evil.toml");
    fs::write(
        &evil_config,
        format!("[nats]\nnkey_seed_file = \"{}\"\n", evil.seed_file),
    )
    .unwrap();
    fs::set_permissions(&evil_config, fs::Permissions::from_mode(0o600)).unwrap();
    let log_url = format!("nats://{ip}/BANS");
    let published = cluster
        .command_in(cluster.attacker_ns(), BANSHARE)
        .arg("--config")
        .arg(&evil_config)
        .args(["ban", "192.0.2.98", "--node", "node0", "--log", &log_url])
        .args(["--lock-timeout", "2s", "--stale-lock", "1s", "--spool-dir"])
        .arg(rogue_dir.join("spool"))
        .stdin(Stdio::null())
        .output()
        .expect("run banshare ban through the rogue server");
    let after = nats.stored_messages(leader, "BANS");
    assert_eq!(
        after,
        before,
        "a ban through the rogue server reached the stream:\n{}{}",
        String::from_utf8_lossy(&published.stdout),
        String::from_utf8_lossy(&published.stderr)
    );
}
