//! One real `nats-server` with JetStream (Debian's package), for the NATS
//! transport's tests: started on a given address (in a network namespace
//! of a test cluster, or on the loopback), ready once its log says so,
//! killed (SIGKILL) and reaped when dropped. Its store outlives a
//! [`NatsServer::kill`], so [`NatsServer::start_again`] is a restart after
//! a crash.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// The server binary; a test that needs it fails, never skips, without it.
pub const NATS_SERVER: &str = "nats-server";

/// How long a server may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(20);

pub struct NatsServer {
    bind: Ipv4Addr,
    port: u16,
    /// The namespace it runs in (`ip netns exec`); `None`: this one.
    netns: Option<String>,
    dir: tempfile::TempDir,
    /// A configuration file's text (TLS, accounts), if any.
    config: Option<String>,
    child: Option<Child>,
}

impl NatsServer {
    /// A server on the loopback, on a free port.
    pub fn local() -> NatsServer {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        NatsServer::start(Ipv4Addr::LOCALHOST, port, None)
    }

    /// A server on `bind:port`, in network namespace `netns` if given.
    pub fn start(bind: Ipv4Addr, port: u16, netns: Option<&str>) -> NatsServer {
        NatsServer::start_with(bind, port, netns, None)
    }

    /// A server on the loopback, on a free port, with `config` as its
    /// configuration file (the address, port and store still come from
    /// the command line).
    pub fn local_with(config: &str) -> NatsServer {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        NatsServer::start_with(Ipv4Addr::LOCALHOST, port, None, Some(config))
    }

    fn start_with(
        bind: Ipv4Addr,
        port: u16,
        netns: Option<&str>,
        config: Option<&str>,
    ) -> NatsServer {
        let mut server = NatsServer {
            bind,
            port,
            netns: netns.map(str::to_owned),
            dir: tempfile::tempdir().expect("a temp dir"),
            config: config.map(str::to_owned),
            child: None,
        };
        server.start_again();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bind(&self) -> Ipv4Addr {
        self.bind
    }

    /// `nats://bind:port/STREAM`.
    pub fn url(&self, stream: &str) -> String {
        format!("nats://{}:{}/{stream}", self.bind, self.port)
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What the server logged so far, for a failure message.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Starts the server (again, on the same store, after [`kill`]) and
    /// waits until it is ready.
    ///
    /// [`kill`]: NatsServer::kill
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server runs already");
        let log = self.log_file();
        let _ = fs::remove_file(&log);
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, NATS_SERVER]);
                c
            }
            None => Command::new(NATS_SERVER),
        };
        if let Some(config) = &self.config {
            let file = self.dir.path().join("server.conf");
            fs::write(&file, config).expect("write the server's configuration");
            command.arg("-c").arg(file);
        }
        command
            .args([
                "-js",
                "-a",
                &self.bind.to_string(),
                "-p",
                &self.port.to_string(),
            ])
            .arg("-sd")
            .arg(store_dir(self.dir.path()))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {NATS_SERVER} (Debian package nats-server): {e}")
        });
        let ready = wait_until(READY_WITHIN, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{NATS_SERVER} exited ({status}): {}", self.log());
            }
            self.log().contains("Server is ready")
        });
        self.child = Some(child);
        assert!(ready, "{NATS_SERVER} not ready: {}", self.log());
    }

    /// Kills the server (SIGKILL) and reaps it: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `ip netns exec` execs the server: the pid is the server's.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server, removes its store (every stream) and starts it
    /// again: streams made anew start from sequence 1.
    pub fn wipe(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(store_dir(self.dir.path()));
        self.start_again();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

fn store_dir(dir: &Path) -> PathBuf {
    dir.join("store")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
