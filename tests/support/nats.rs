//! Real NATS JetStream servers on test hosts, for the NATS transport's
//! tests and benchmarks: Debian's `nats-server`, never a mock.
//!
//! ```text
//! bridge (its own <id>nbr, or a Cluster's <id>br)
//!   ├─ veth ─ netns bsnats-<id>-s0  198.18.0.2   nats-server s0: client 4222, route 6222, monitor 8222
//!   ├─ veth ─ netns bsnats-<id>-s1  198.18.0.3   nats-server s1  (a cluster only)
//!   ├─ veth ─ netns bsnats-<id>-s2  198.18.0.4   nats-server s2  (a cluster only)
//!   └─ veth ─ netns bsnats-<id>-c0  198.18.0.11  client host 0 (own bridge only), c1 at .12, ...
//! ```
//!
//! Each server has its own configuration, JetStream store and log under a
//! temp dir; a cluster's servers route to each other. Server addresses .2 to
//! .(1 + servers) are free in a [`Cluster`] (file server .1, nodes from .11,
//! attacker .250), so [`NatsServers::start_on`] puts the servers on a
//! Cluster's bridge, where its nodes are the clients.
//!
//! Optionally the servers admit only users of one account ([`ACCOUNT`],
//! JetStream enabled), either NKey users declared in their configuration
//! or users with credentials files under an operator (JWT auth), all
//! generated with PyPI's `nkeys` (`nsc` is not packaged); and serve clients
//! over TLS only, with a certificate for their IP addresses from a test CA
//! made with openssl.
//!
//! [`NatsServers::wait_ready`] waits on the servers' own monitoring
//! endpoints (`/healthz`, `/jsz`), read over a TCP connection made inside
//! the server's namespace: no sleeps. Dropping a [`NatsServers`] kills the
//! servers and everything else in their namespaces and removes the hosts,
//! also while a failing test unwinds; [`sweep_leftovers`] removes what a
//! killed test process (which ran no Drop) left behind.
//!
//! The independent client the tests check the servers with is PyPI's
//! `nats-py` (pinned in .ci/install-deps), run by [`NatsServers::python`].
//!
//! This needs root. Tests that use it fail, never skip, when root or a
//! package is missing.

use super::cluster::{
    Cluster, Host, add_bridge, add_host, append_to, kill_processes_in, lock, read_lossy,
    remove_host, remove_link, require_root, run, run_output, sanitize, tool_exists, unique_id,
};
use super::wait_until;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;
use tempfile::TempDir;

/// Debian's nats-server (2.9.10 in bookworm).
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// Debian's python3, with [`PYTHON_DIR`] on its path: [`NatsServers::python`].
pub const PYTHON: &str = "/usr/bin/python3";
/// Where .ci/install-deps puts PyPI's nats-py and nkeys.
pub const PYTHON_DIR: &str = "/usr/local/lib/banshare-test/python";

pub const CLIENT_PORT: u16 = 4222;
pub const ROUTE_PORT: u16 = 6222;
pub const MONITOR_PORT: u16 = 8222;
/// The account of the NKey users (with [`NatsOptions::nkey_users`]).
pub const ACCOUNT: &str = "BANSHARE";
/// The cluster name the servers of a cluster share.
pub const CLUSTER_NAME: &str = "banshare-test";

/// Server `i` is at 198.18.0.(FIRST_SERVER_OCTET + i).
const FIRST_SERVER_OCTET: usize = 2;
/// At most this many servers: .2 to .10 are the addresses free in a Cluster.
const MAX_SERVERS: usize = 9;
/// Client host `i` (own bridge only) is at 198.18.0.(FIRST_CLIENT_OCTET + i),
/// where a Cluster's node `i` is.
const FIRST_CLIENT_OCTET: usize = 11;
const MAX_CLIENTS: usize = 200;
/// Starts the names of everything of these servers: namespaces and temp
/// dirs, which [`sweep_leftovers`] recognizes by it.
const PREFIX: &str = "bsnats";

/// How long servers may take to be ready: a cluster elects its meta leader
/// within a few seconds; a restarted server also catches up its streams.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds one request to a monitoring endpoint; one takes about a
/// millisecond.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(2);

/// Who may connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anyone, to the global account.
    Anyone,
    /// Only this many NKey users ([`NkeyUser::seed_file`]), all in account
    /// [`ACCOUNT`], declared in the servers' configuration.
    Nkeys(usize),
    /// Only this many users with a credentials file (user JWT and NKey
    /// seed, [`NkeyUser::credentials_file`]) of account [`ACCOUNT`]: the
    /// servers trust an operator (decentralized JWT auth, as `nsc` would
    /// set it up), with the accounts' JWTs preloaded in a memory resolver.
    Credentials(usize),
}

/// What to start: see [`NatsOptions::single`] and [`NatsOptions::cluster`].
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// 1: one server, no routes; more: a cluster, every server routed to
    /// every other.
    pub servers: usize,
    /// Client hosts of their own (only without a [`Cluster`]).
    pub clients: usize,
    pub auth: Auth,
    /// Clients connect with TLS only (`tls://` URLs, [`NatsServers::ca_file`]).
    pub tls: bool,
}

impl NatsOptions {
    /// One server with JetStream, no clients, no auth, no TLS.
    pub fn single() -> NatsOptions {
        NatsOptions {
            servers: 1,
            clients: 0,
            auth: Auth::Anyone,
            tls: false,
        }
    }

    /// Three servers with JetStream, clustered, no clients, no auth, no TLS.
    pub fn cluster() -> NatsOptions {
        NatsOptions {
            servers: 3,
            ..NatsOptions::single()
        }
    }

    pub fn with_clients(self, clients: usize) -> NatsOptions {
        NatsOptions { clients, ..self }
    }

    /// [`Auth::Nkeys`]: only `users` NKey users.
    pub fn with_nkey_users(self, users: usize) -> NatsOptions {
        NatsOptions {
            auth: Auth::Nkeys(users),
            ..self
        }
    }

    /// [`Auth::Credentials`]: only `users` users with credentials files.
    pub fn with_credentials(self, users: usize) -> NatsOptions {
        NatsOptions {
            auth: Auth::Credentials(users),
            ..self
        }
    }

    pub fn with_tls(self) -> NatsOptions {
        NatsOptions { tls: true, ..self }
    }
}

/// One user of account [`ACCOUNT`] ([`Auth::Nkeys`] or
/// [`Auth::Credentials`]).
#[derive(Clone, Debug)]
pub struct NkeyUser {
    /// "U...": the user's NKey.
    pub public_key: String,
    /// "SU...": its private seed.
    pub seed: String,
    /// A file holding just the seed (mode 0600), as clients read it: all a
    /// client needs with [`Auth::Nkeys`].
    pub seed_file: PathBuf,
    /// With [`Auth::Credentials`], the user's credentials file (mode 0600):
    /// its JWT, signed by the account, and its seed, in the format of
    /// `nsc generate creds`. None with [`Auth::Nkeys`].
    pub credentials_file: Option<PathBuf>,
}

/// The accounts and users [`GENERATE_USERS`] makes.
#[derive(serde::Deserialize)]
struct Generated {
    operator_jwt: String,
    system_account: String,
    /// Account public key to its JWT.
    accounts: BTreeMap<String, String>,
    users: Vec<GeneratedUser>,
}

#[derive(serde::Deserialize)]
struct GeneratedUser {
    seed: String,
    public_key: String,
    /// With [`Auth::Credentials`]: the credentials file's contents.
    credentials: Option<String>,
}

/// Writes server `i`'s configuration instead of [`NatsServers`]'s own:
/// see [`NatsServers::start_on_configured`].
pub type ServerConfig<'a> = &'a dyn Fn(&NatsServers, usize) -> String;

/// What /proc says about a server process, for the benchmarks.
#[derive(Clone, Copy, Debug)]
pub struct ProcessStats {
    /// User plus system CPU time used so far.
    pub cpu: Duration,
    /// Resident memory now (VmRSS).
    pub rss_bytes: u64,
    /// Peak resident memory so far (VmHWM).
    pub peak_rss_bytes: u64,
}

/// Running nats-servers on test hosts; dropping it removes all of it. All
/// methods take `&self`, so one thread can kill a server while others use
/// the rest.
pub struct NatsServers {
    id: String,
    options: NatsOptions,
    servers: Vec<Host>,
    /// Own client hosts; empty on a Cluster's bridge.
    clients: Vec<Host>,
    /// The bridge this made, to remove on drop; None on a Cluster's.
    own_bridge: Option<String>,
    /// Each server's process while it runs.
    processes: Vec<Mutex<Option<Child>>>,
    users: Vec<NkeyUser>,
    /// With [`Auth::Credentials`]: the system account's public key, and
    /// every account's public key and JWT, for the memory resolver.
    accounts: Option<(String, BTreeMap<String, String>)>,
    dir: TempDir,
}

impl NatsServers {
    /// Starts `options.servers` servers and `options.clients` client hosts
    /// on a bridge of their own, and waits until JetStream is ready.
    /// `name_hint` shows up in the temp dir's name.
    pub fn start(name_hint: &str, options: NatsOptions) -> NatsServers {
        let id = unique_id();
        let bridge = format!("{id}nbr");
        let clients = (0..options.clients)
            .map(|i| host(&id, &format!("c{i}"), FIRST_CLIENT_OCTET + i))
            .collect();
        Self::build(name_hint, options, id, bridge, clients, true, None)
    }

    /// Starts `options.servers` servers on `cluster`'s bridge, where its
    /// nodes (and attacker) are their clients, and waits until JetStream is
    /// ready. It removes only its own hosts: either may be dropped first.
    pub fn start_on(cluster: &Cluster, name_hint: &str, options: NatsOptions) -> NatsServers {
        Self::start_on_configured(cluster, name_hint, options, None)
    }

    /// As [`Self::start_on`], with each server's configuration written by
    /// `config` (given the servers, with their paths, and the server's
    /// index) instead of [`Self::config`]'s: to run a configuration as
    /// given elsewhere (docs/deploy.md's). It must name the server's own
    /// [`Self::store_dir`] and serve monitoring on its IP address at
    /// [`MONITOR_PORT`], by which readiness is known.
    pub fn start_on_configured(
        cluster: &Cluster,
        name_hint: &str,
        options: NatsOptions,
        config: Option<ServerConfig<'_>>,
    ) -> NatsServers {
        assert_eq!(
            options.clients, 0,
            "on a Cluster, the Cluster's nodes are the clients"
        );
        Self::build(
            name_hint,
            options,
            unique_id(),
            cluster.bridge(),
            Vec::new(),
            false,
            config,
        )
    }

    fn build(
        name_hint: &str,
        options: NatsOptions,
        id: String,
        bridge: String,
        clients: Vec<Host>,
        own_bridge: bool,
        config: Option<ServerConfig<'_>>,
    ) -> NatsServers {
        require_root();
        require_packages();
        assert!(
            (1..=MAX_SERVERS).contains(&options.servers),
            "1 to {MAX_SERVERS} servers, not {}",
            options.servers
        );
        assert!(
            options.clients <= MAX_CLIENTS,
            "at most {MAX_CLIENTS} clients"
        );
        sweep_leftovers();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}-{id}-{}-", sanitize(name_hint)))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let mut nats = NatsServers {
            servers: (0..options.servers)
                .map(|i| host(&id, &format!("s{i}"), FIRST_SERVER_OCTET + i))
                .collect(),
            clients,
            own_bridge: own_bridge.then(|| bridge.clone()),
            processes: (0..options.servers).map(|_| Mutex::new(None)).collect(),
            users: Vec::new(),
            accounts: None,
            options,
            dir,
            id,
        };
        // From here on, a panic drops `nats`, and Drop removes whatever part
        // of the setup already exists.
        if let Some(bridge) = &nats.own_bridge {
            add_bridge(bridge);
        }
        for host in nats.servers.iter().chain(&nats.clients) {
            add_host(&bridge, host);
        }
        nats.users = nats.generate_users();
        if nats.options.tls {
            nats.generate_certificates();
        }
        for i in 0..nats.servers.len() {
            fs::create_dir_all(nats.store_dir(i)).expect("create a store dir");
            let text = match config {
                Some(config) => config(&nats, i),
                None => nats.config(i),
            };
            fs::write(nats.config_path(i), text).expect("write a server config");
        }
        for i in 0..nats.servers.len() {
            nats.spawn(i);
        }
        nats.wait_ready();
        nats
    }

    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Server `i`'s name in the cluster and in `/jsz`: "s<i>".
    pub fn server_name(&self, i: usize) -> String {
        format!("s{i}")
    }

    pub fn server_ns(&self, i: usize) -> &str {
        &self.servers[i].ns
    }

    pub fn server_ip(&self, i: usize) -> Ipv4Addr {
        self.servers[i].ip
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Own client host `i`'s namespace (with [`NatsOptions::clients`]).
    pub fn client_ns(&self, i: usize) -> &str {
        &self.clients[i].ns
    }

    pub fn client_ip(&self, i: usize) -> Ipv4Addr {
        self.clients[i].ip
    }

    /// Server `i`'s client URL, the same from every host on the bridge:
    /// `nats://198.18.0.2:4222`, or `tls://...` with TLS.
    pub fn url(&self, i: usize) -> String {
        let scheme = if self.options.tls { "tls" } else { "nats" };
        format!("{scheme}://{}:{CLIENT_PORT}", self.servers[i].ip)
    }

    /// Every server's client URL, in server order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.servers.len()).map(|i| self.url(i)).collect()
    }

    /// [`Self::urls`] joined by commas, as a client's server list.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// The users ([`Auth::Nkeys`], [`Auth::Credentials`]; empty with
    /// [`Auth::Anyone`]).
    pub fn users(&self) -> &[NkeyUser] {
        &self.users
    }

    /// The CA certificate (PEM) that signed the servers' certificate, for
    /// clients to verify them with; None without TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.path("tls/ca.pem"))
    }

    /// The test CA's server certificate (PEM) for every server's IP
    /// address, and its key: None without TLS.
    pub fn server_certificate(&self) -> Option<(PathBuf, PathBuf)> {
        self.options
            .tls
            .then(|| (self.path("tls/server.pem"), self.path("tls/server.key")))
    }

    /// Server `i`'s JetStream store directory, kept across [`Self::restart`].
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.path(&format!("s{i}/store"))
    }

    /// Server `i`'s configuration file.
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.path(&format!("s{i}/nats-server.conf"))
    }

    /// Everything server `i` logged, across restarts.
    pub fn log(&self, i: usize) -> String {
        read_lossy(&self.log_path(i))
    }

    /// Server `i`'s pid while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        lock(&self.processes[i]).as_ref().map(Child::id)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.pid(i).is_some()
    }

    /// CPU time and memory of server `i` now; None when it does not run.
    pub fn stats(&self, i: usize) -> Option<ProcessStats> {
        process_stats(self.pid(i)?)
    }

    /// Kills server `i` with SIGKILL (no lame duck, no flush: as a crash or
    /// a power loss of its host would) and reaps it. Its store stays.
    pub fn kill(&self, i: usize) {
        let mut process = lock(&self.processes[i]);
        let mut child = process
            .take()
            .unwrap_or_else(|| panic!("server s{i} is not running"));
        // Child::kill sends SIGKILL.
        child.kill().expect("SIGKILL a nats-server");
        let _ = child.wait();
    }

    /// Starts server `i` again with its configuration and store, and waits
    /// until every running server is ready ([`Self::wait_ready`]).
    pub fn restart(&self, i: usize) {
        self.spawn(i);
        self.wait_ready();
    }

    /// Starts every server that is not running again, with its
    /// configuration and store, and waits until all are ready: after a
    /// cluster lost a majority, no server alone can elect a leader, so
    /// they come back together.
    pub fn restart_all(&self) {
        for i in 0..self.servers.len() {
            if !self.is_running(i) {
                self.spawn(i);
            }
        }
        self.wait_ready();
    }

    /// Waits until every running server answers its health check (in a
    /// cluster: JetStream's meta group has a leader every server knows,
    /// and the server's streams are current) and panics with the servers'
    /// logs if that takes longer than [`READY_TIMEOUT`].
    pub fn wait_ready(&self) {
        let ready = wait_until(READY_TIMEOUT, || self.is_ready());
        if !ready {
            let logs: String = (0..self.servers.len())
                .map(|i| format!("\n--- s{i} log:\n{}", self.log(i)))
                .collect();
            panic!(
                "nats-servers not ready within {READY_TIMEOUT:?} (healthz: {:?}, meta leader: {:?}){logs}",
                self.running()
                    .map(|i| self.monitor(i, "/healthz").map(|(code, _)| code).ok())
                    .collect::<Vec<_>>(),
                self.meta_leader()
            );
        }
    }

    /// The JetStream meta leader's server name ("s0"...) as every running
    /// server sees it; None if they disagree or one knows none. A single
    /// server is its own.
    pub fn meta_leader(&self) -> Option<String> {
        if self.servers.len() == 1 {
            return self.is_running(0).then(|| self.server_name(0));
        }
        let mut leaders = self.running().map(|i| {
            let (_, body) = self.monitor(i, "/jsz").ok()?;
            let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
            let leader = jsz["meta_cluster"]["leader"].as_str()?;
            (!leader.is_empty()).then(|| leader.to_owned())
        });
        let first = leaders.next()??;
        leaders
            .all(|l| l.as_deref() == Some(&first))
            .then_some(first)
    }

    /// GETs `path` (with its query) from server `i`'s monitoring port, over
    /// a connection made in its namespace: the status code and the body.
    pub fn monitor(&self, i: usize, path: &str) -> std::io::Result<(u16, String)> {
        let address = SocketAddrV4::new(self.servers[i].ip, MONITOR_PORT);
        http_get(&self.servers[i].ns, address, path)
    }

    /// The messages server `i`'s own store holds of stream `stream` (its
    /// `/jsz`), if it has that stream: a follower's count shows how far it
    /// has caught up.
    pub fn stored_messages(&self, i: usize, stream: &str) -> Option<u64> {
        self.stream_detail(i, stream)?["state"]["messages"].as_u64()
    }

    /// The server that leads stream `stream` (where its publishes are
    /// stored first: the one to kill for the worst case), as a running
    /// server that holds a replica reports it.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        self.running().find_map(|i| {
            let detail = self.stream_detail(i, stream)?;
            let leader = detail["cluster"]["leader"].as_str()?;
            (0..self.servers.len()).find(|&j| self.server_name(j) == leader)
        })
    }

    /// Stream `stream`'s entry in server `i`'s `/jsz` (its state and its
    /// cluster as that server sees them), if it holds a replica.
    fn stream_detail(&self, i: usize, stream: &str) -> Option<serde_json::Value> {
        let (code, body) = self.monitor(i, "/jsz?accounts=true&streams=true").ok()?;
        if code != 200 {
            return None;
        }
        let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
        jsz["account_details"]
            .as_array()?
            .iter()
            .filter_map(|account| account["stream_detail"].as_array())
            .flatten()
            .find(|detail| detail["name"] == stream)
            .cloned()
    }

    /// `ip netns exec <ns> <program>`; the caller adds args, env and stdio.
    pub fn command_in(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(program);
        command
    }

    /// Debian's python3 in namespace `ns` with nats-py and nkeys importable,
    /// and in its environment `NATS_URLS` (the [`Self::url_list`]),
    /// `NATS_CA` (the CA file, or empty), and user 0's `NATS_CREDS`
    /// (credentials file, with [`Auth::Credentials`]) or `NATS_SEED` (seed
    /// file, with [`Auth::Nkeys`]), else empty. The caller adds `-c`, the
    /// script and its arguments.
    pub fn python(&self, ns: &str) -> Command {
        let user = self.users.first();
        let credentials = user.and_then(|user| user.credentials_file.clone());
        let seed = match (user, &credentials) {
            (Some(user), None) => user.seed_file.clone(),
            _ => PathBuf::new(),
        };
        let mut command = self.command_in(ns, PYTHON);
        command
            .env("PYTHONPATH", PYTHON_DIR)
            .env("NATS_URLS", self.url_list())
            .env("NATS_CA", self.ca_file().unwrap_or_default())
            .env("NATS_CREDS", credentials.unwrap_or_default())
            .env("NATS_SEED", seed);
        command
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.path(&format!("s{i}/nats-server.log"))
    }

    /// The servers running now.
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.servers.len()).filter(|&i| self.is_running(i))
    }

    fn is_ready(&self) -> bool {
        let healthy = self
            .running()
            .all(|i| matches!(self.monitor(i, "/healthz"), Ok((200, _))));
        healthy && self.running().next().is_some() && self.meta_leader().is_some()
    }

    /// Starts server `i` without waiting for it. nsenter execs it in the
    /// server's namespace, so the child is nats-server itself and SIGKILL
    /// reaches it, not a wrapper.
    fn spawn(&self, i: usize) {
        let mut process = lock(&self.processes[i]);
        assert!(process.is_none(), "server s{i} is already running");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.servers[i].ns))
            .arg(NATS_SERVER)
            .arg("-c")
            .arg(self.config_path(i))
            .stdin(Stdio::null())
            .stdout(append_to(&self.log_path(i)))
            .stderr(append_to(&self.log_path(i)))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {NATS_SERVER}: {e}"));
        *process = Some(child);
    }

    /// Server `i`'s configuration: JetStream with its own store, routes to
    /// every other server, and the options' accounts and TLS.
    fn config(&self, i: usize) -> String {
        let ip = self.servers[i].ip;
        let mut config = format!(
            "server_name: {name}\n\
             listen: \"{ip}:{CLIENT_PORT}\"\n\
             http: \"{ip}:{MONITOR_PORT}\"\n\
             logtime: true\n\
             jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n",
            name = self.server_name(i),
            store = self.store_dir(i).display(),
        );
        if self.servers.len() > 1 {
            let routes: Vec<String> = (0..self.servers.len())
                .filter(|&j| j != i)
                .map(|j| format!("\"nats-route://{}:{ROUTE_PORT}\"", self.servers[j].ip))
                .collect();
            config += &format!(
                "cluster {{\n  name: {CLUSTER_NAME}\n  listen: \"{ip}:{ROUTE_PORT}\"\n  routes: [{}]\n}}\n",
                routes.join(", ")
            );
        }
        if let Some((system_account, accounts)) = &self.accounts {
            let preload: Vec<String> = accounts
                .iter()
                .map(|(account, jwt)| format!("  {account}: \"{jwt}\""))
                .collect();
            config += &format!(
                "operator: \"{}\"\nsystem_account: {system_account}\n\
                 resolver: MEMORY\nresolver_preload: {{\n{}\n}}\n",
                self.operator_jwt_path().display(),
                preload.join("\n")
            );
        } else if !self.users.is_empty() {
            let users: Vec<String> = self
                .users
                .iter()
                .map(|user| format!("{{ nkey: {} }}", user.public_key))
                .collect();
            config += &format!(
                "accounts {{\n  {ACCOUNT}: {{\n    jetstream: enabled\n    users: [{}]\n  }}\n}}\n",
                users.join(", ")
            );
        }
        if self.options.tls {
            config += &format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n}}\n",
                self.path("tls/server.pem").display(),
                self.path("tls/server.key").display(),
            );
        }
        config
    }

    /// The options' users, generated with PyPI's nkeys (`nsc` is not
    /// packaged), their seed and credentials files written; with
    /// [`Auth::Credentials`] also the operator's JWT, and the accounts' kept
    /// for the configuration.
    fn generate_users(&mut self) -> Vec<NkeyUser> {
        let (count, kind) = match self.options.auth {
            Auth::Anyone => return Vec::new(),
            Auth::Nkeys(count) => (count, "nkeys"),
            Auth::Credentials(count) => (count, "jwts"),
        };
        let output = run_output(Command::new(PYTHON).env("PYTHONPATH", PYTHON_DIR).args([
            "-c",
            GENERATE_USERS,
            &count.to_string(),
            kind,
        ]));
        let generated: Generated =
            serde_json::from_str(&output).expect("the generated keys as JSON");
        let dir = self.path("nkeys");
        fs::create_dir_all(&dir).expect("create the nkeys dir");
        if matches!(self.options.auth, Auth::Credentials(_)) {
            write_secret(&self.operator_jwt_path(), &generated.operator_jwt);
            self.accounts = Some((generated.system_account, generated.accounts));
        }
        generated
            .users
            .into_iter()
            .enumerate()
            .map(|(i, user)| {
                let seed_file = dir.join(format!("user{i}.nk"));
                write_secret(&seed_file, &format!("{}\n", user.seed));
                let credentials_file = user.credentials.map(|credentials| {
                    let file = dir.join(format!("user{i}.creds"));
                    write_secret(&file, &credentials);
                    file
                });
                NkeyUser {
                    public_key: user.public_key,
                    seed: user.seed,
                    seed_file,
                    credentials_file,
                }
            })
            .collect()
    }

    fn operator_jwt_path(&self) -> PathBuf {
        self.path("nkeys/operator.jwt")
    }

    /// A test CA and one server certificate it signed for every server's IP
    /// address.
    fn generate_certificates(&self) {
        let dir = self.path("tls");
        fs::create_dir_all(&dir).expect("create the tls dir");
        let sans: Vec<String> = self
            .servers
            .iter()
            .map(|host| format!("IP:{}", host.ip))
            .collect();
        make_certificates(&dir, &sans);
    }
}

/// A test CA and one server certificate it signed for `sans` (openssl's
/// subjectAltName entries: `IP:127.0.0.1`), in `dir`: `ca.pem`, `ca.key`,
/// `server.pem`, `server.key`. The server's is a leaf, not a CA: rustls
/// refuses a CA as a server's own.
pub fn make_certificates(dir: &Path, sans: &[String]) {
    let extensions = format!(
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName={}\n",
        sans.join(",")
    );
    fs::write(dir.join("server.ext"), extensions).expect("write the extensions");
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").current_dir(dir).args(args));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    openssl(
        &[
            &["req", "-x509", "-nodes"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=banshare test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-nodes"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=nats",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

impl Drop for NatsServers {
    /// Best effort throughout: this also runs while a failed test unwinds.
    fn drop(&mut self) {
        for process in &self.processes {
            if let Some(mut child) = lock(process).take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for host in self.servers.iter().chain(&self.clients) {
            kill_processes_in(&host.ns);
            remove_host(host);
        }
        if let Some(bridge) = &self.own_bridge {
            remove_link(bridge);
        }
        // The temp dir, stores included, goes when `dir` drops.
    }
}

/// CPU time and memory of process `pid` from /proc/PID/stat and
/// /proc/PID/status; None when it is gone.
pub fn process_stats(pid: u32) -> Option<ProcessStats> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses (which may hold spaces):
    // state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // "VmRSS:\t  12345 kB"
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(ProcessStats {
        cpu: Duration::from_millis(ticks * 1000 / per_second),
        rss_bytes: kib("VmRSS:")? * 1024,
        peak_rss_bytes: kib("VmHWM:")? * 1024,
    })
}

/// Removes what test processes that died without dropping their
/// [`NatsServers`] (SIGKILL, abort) left: their namespaces with the servers
/// in them, their links and bridges, their temp dirs. Only those whose
/// process is gone: the id in every name carries the pid. Runs at every
/// start; safe while other tests run.
pub fn sweep_leftovers() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    // "bsnats-<id>-<tag>" or "bsnats-<id>-<tag> (id: 3)"
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        let Some((id, tag)) = ns
            .strip_prefix(&format!("{PREFIX}-"))
            .and_then(|rest| rest.split_once('-'))
        else {
            continue;
        };
        if owner_is_gone(id) {
            kill_processes_in(ns);
            remove_host(&Host {
                ns: ns.to_owned(),
                veth: format!("{id}{tag}"),
                ip: Ipv4Addr::UNSPECIFIED,
            });
            remove_link(&format!("{id}nbr"));
        }
    }
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|name| name.strip_prefix(&format!("{PREFIX}-")))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if owner_is_gone(id) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether the process whose [`unique_id`] is `id` ("b", the pid in hex,
/// a 3-digit counter) has ended. False when `id` is not such an id.
fn owner_is_gone(id: &str) -> bool {
    let Some(hex) = id.strip_prefix('b') else {
        return false;
    };
    if hex.len() <= 3 {
        return false;
    }
    let Ok(pid) = u32::from_str_radix(&hex[..hex.len() - 3], 16) else {
        return false;
    };
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn host(id: &str, tag: &str, octet: usize) -> Host {
    Host {
        ns: format!("{PREFIX}-{id}-{tag}"),
        veth: format!("{id}{tag}"),
        ip: Ipv4Addr::new(198, 18, 0, u8::try_from(octet).expect("host octet")),
    }
}

/// Panics unless nats-server and the Python client are installed.
fn require_packages() {
    let missing: Vec<&str> = [NATS_SERVER, "nsenter", "ip", "openssl", PYTHON]
        .into_iter()
        .filter(|tool| !tool_exists(tool))
        .collect();
    assert!(
        missing.is_empty(),
        "NATS tests need {missing:?} (Debian packages nats-server util-linux iproute2 openssl \
         python3; .ci/install-deps installs them)"
    );
    let client = Command::new(PYTHON)
        .env("PYTHONPATH", PYTHON_DIR)
        .args(["-c", "import nats, nats.js, nkeys"])
        .output()
        .expect("run python3");
    assert!(
        client.status.success(),
        "NATS tests need PyPI's nats-py and nkeys in {PYTHON_DIR} and Debian's python3-nacl \
         (.ci/install-deps installs them): {}",
        String::from_utf8_lossy(&client.stderr).trim()
    );
}

/// Writes a file only root may read: a seed, credentials, a JWT.
fn write_secret(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// A TCP connection to `address` made inside network namespace `ns`: a
/// thread of ours enters the namespace, connects, and ends; the socket
/// stays in that namespace and works from any thread. No process per
/// request, so readiness can be polled cheaply.
pub fn connect_in(ns: &str, address: SocketAddrV4) -> std::io::Result<TcpStream> {
    let netns = File::open(format!("/run/netns/{ns}"))?;
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns(2) moves only this thread, which ends right
                // after; the fd is open for the call.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                TcpStream::connect_timeout(&SocketAddr::V4(address), MONITOR_TIMEOUT)
            })
            .join()
            .expect("the connecting thread panicked")
    })
}

/// A plain HTTP/1.0 GET of `path` from `address` in namespace `ns`: the
/// status code and the body.
fn http_get(ns: &str, address: SocketAddrV4, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = connect_in(ns, address)?;
    stream.set_read_timeout(Some(MONITOR_TIMEOUT))?;
    stream.set_write_timeout(Some(MONITOR_TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, body.to_owned()))
}

/// Generates users with PyPI's nkeys, printed as JSON ([`Generated`]).
/// Arguments: the number of users, then "nkeys" for their NKeys only, or
/// "jwts" for them with credentials files, under an operator, a system
/// account and account [`ACCOUNT`] (JetStream, no limits): the JWTs `nsc`
/// would make (header, claims per NATS's JWT v2, ed25519 signature by the
/// issuer's NKey, each base64url).
const GENERATE_USERS: &str = r#"
import base64, hashlib, json, os, sys, time
import nkeys

def keypair(prefix):
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed.decode(), nkeys.from_seed(seed)

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def jwt(signer, subject, name, nats):
    claims = {"iat": int(time.time()), "iss": signer.public_key.decode(),
              "name": name, "sub": subject, "nats": dict(nats, version=2)}
    digest = hashlib.new("sha512_256", json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    signed = b64(b'{"typ":"JWT","alg":"ed25519-nkey"}') + "." + b64(json.dumps(claims).encode())
    return signed + "." + b64(signer.sign(signed.encode()))

count, kind = int(sys.argv[1]), sys.argv[2]
unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
             "wildcards": True, "conn": -1, "leaf": -1}
jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
_, operator = keypair(nkeys.PREFIX_BYTE_OPERATOR)
_, system = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
_, account = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
op, sys_account, banshare = (k.public_key.decode() for k in (operator, system, account))
out = {
    "operator_jwt": jwt(operator, op, "banshare-test", {"type": "operator", "system_account": sys_account}),
    "system_account": sys_account,
    "accounts": {
        sys_account: jwt(operator, sys_account, "SYS", {"type": "account", "limits": unlimited}),
        banshare: jwt(operator, banshare, "BANSHARE",
                      {"type": "account", "limits": dict(unlimited, **jetstream)}),
    },
    "users": [],
}
for i in range(count):
    seed, user = keypair(nkeys.PREFIX_BYTE_USER)
    public_key = user.public_key.decode()
    credentials = None
    if kind == "jwts":
        token = jwt(account, public_key, f"user{i}",
                    {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
        credentials = ("-----BEGIN NATS USER JWT-----\n" + token + "\n------END NATS USER JWT------\n\n"
                       "-----BEGIN USER NKEY SEED-----\n" + seed + "\n------END USER NKEY SEED------\n")
    out["users"].append({"seed": seed, "public_key": public_key, "credentials": credentials})
print(json.dumps(out))
"#;
