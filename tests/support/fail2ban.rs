//! A stock fail2ban server (the Debian package) as a baseline: its own
//! configuration directory, socket, pid file, log and database, optionally
//! inside a test host's network namespace, so that several run side by side
//! (fail2ban allows that when each instance has its own `-c` folder, `-s`
//! socket and `-p` pid file). Dropping it stops the server.
//!
//! The configuration is a copy of `/etc/fail2ban` without `jail.d/*` (which
//! enables sshd on Debian), plus the seed system's newbans filter and one
//! jail of the caller's.

use super::wait_until;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The seed system's filter (Black Hills InfoSec), with the datepattern
/// without which it matches nothing on fail2ban >= 1.0. Not anchored at the
/// end, as in the original, so banshare's records match it too.
pub const NEWBANS_FILTER: &str = "[INCLUDES]\n\
    before = common.conf\n\n\
    [Definition]\n\
    failregex = ^%(__prefix_line)sHOST <HOST> PORT \\d+\n\
    datepattern = ^<\\d+>%%b %%d %%H:%%M:%%S\n";

/// How long fail2ban may take to start its jail, or to stop.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes `<dir>/filter.d/newbans.conf` (and the `common.conf` it
/// includes) and returns its absolute path, for `fail2ban-regex LOG PATH`
/// (a relative argument would be taken for a regex).
pub fn write_newbans_filter(dir: &Path) -> PathBuf {
    let filter_d = dir.join("filter.d");
    fs::create_dir_all(&filter_d).unwrap_or_else(|e| panic!("create {}: {e}", filter_d.display()));
    fs::copy(
        "/etc/fail2ban/filter.d/common.conf",
        filter_d.join("common.conf"),
    )
    .unwrap_or_else(|e| panic!("copy fail2ban's common.conf (Debian package fail2ban): {e}"));
    let path = filter_d.join("newbans.conf");
    fs::write(&path, NEWBANS_FILTER).unwrap();
    fs::canonicalize(&path).unwrap()
}

/// A line as the seed system's `logger -s -i "HOST <ip> PORT <port>"`
/// writes it, stamped with the current local time (fail2ban ignores lines
/// older than findtime).
pub fn logger_line(ip: &str, port: u16) -> String {
    let now = chrono::Local::now().format("%b %d %H:%M:%S");
    format!("<13>{now} root[1]: HOST {ip} PORT {port}\n")
}

/// One running `fail2ban-server -f`.
pub struct Fail2ban {
    child: Option<Child>,
    dir: TempDir,
    jail: String,
}

impl Fail2ban {
    /// Writes the configuration and starts the server, in network namespace
    /// `ns` if given; does not wait for it (see [`Fail2ban::wait_ready`]),
    /// so that several can start at once. `jail_options` are the jail's
    /// lines after `enabled = true`, e.g. `filter = newbans\nlogpath = ...`.
    pub fn spawn(ns: Option<&str>, jail: &str, jail_options: &str) -> Fail2ban {
        Fail2ban::spawn_with_files(ns, jail, jail_options, &[])
    }

    /// As [`Fail2ban::spawn`], with `files` (paths relative to the
    /// configuration folder, and their content) written before the start,
    /// e.g. `("action.d/banshare.conf", ...)`.
    pub fn spawn_with_files(
        ns: Option<&str>,
        jail: &str,
        jail_options: &str,
        files: &[(&str, &str)],
    ) -> Fail2ban {
        let dir = tempfile::Builder::new()
            .prefix("bs-fail2ban-")
            .tempdir()
            .unwrap();
        let conf = dir.path().join("conf");
        let copied = Command::new("cp")
            .args(["-r", "/etc/fail2ban"])
            .arg(&conf)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            copied,
            "cannot copy /etc/fail2ban (Debian package fail2ban)"
        );
        for entry in fs::read_dir(conf.join("jail.d")).into_iter().flatten() {
            let _ = fs::remove_file(entry.unwrap().path());
        }
        fs::write(conf.join("filter.d/newbans.conf"), NEWBANS_FILTER).unwrap();
        for (name, content) in files {
            fs::write(conf.join(name), content).unwrap_or_else(|e| panic!("write {name}: {e}"));
        }
        let path = |name: &str| dir.path().join(name).display().to_string();
        fs::write(
            conf.join("fail2ban.local"),
            format!(
                "[DEFAULT]\nloglevel = INFO\nlogtarget = {}\ndbfile = {}\n",
                path("fail2ban.log"),
                path("fail2ban.sqlite3")
            ),
        )
        .unwrap();
        fs::write(
            conf.join("jail.local"),
            format!("[{jail}]\nenabled = true\n{jail_options}\n"),
        )
        .unwrap();
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "fail2ban-server"]);
                c
            }
            None => Command::new("fail2ban-server"),
        };
        // `ip netns exec` execs the server, so the child is the server.
        let out = fs::File::create(dir.path().join("server.out")).unwrap();
        let child = command
            .args(["-f", "-x", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(dir.path().join("fail2ban.sock"))
            .arg("-p")
            .arg(dir.path().join("fail2ban.pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start fail2ban-server: {e}"));
        Fail2ban {
            child: Some(child),
            dir,
            jail: jail.into(),
        }
    }

    /// Waits until the jail has started (its own log says so); panics with
    /// the server's output if it does not within a minute.
    pub fn wait_ready(&mut self) {
        let started = format!("Jail '{}' started", self.jail);
        let ready = wait_until(START_TIMEOUT, || {
            self.log().contains(&started) || self.has_exited()
        });
        if !ready || self.has_exited() {
            panic!(
                "fail2ban did not start jail {} within {START_TIMEOUT:?}\n--- server output:\n{}\n--- log:\n{}",
                self.jail,
                read_lossy(&self.dir.path().join("server.out")),
                self.log()
            );
        }
    }

    /// `fail2ban-client -s <socket>`; the caller adds the command.
    pub fn client(&self) -> Command {
        let mut c = Command::new("fail2ban-client");
        c.arg("-s").arg(self.dir.path().join("fail2ban.sock"));
        c
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn jail(&self) -> &str {
        &self.jail
    }

    /// The server's log file (`logtarget`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("fail2ban.log")
    }

    /// The server's log (`logtarget`).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("fail2ban.log"))
    }

    /// Asks the server to stop (SIGTERM: it runs its actions' actionstop
    /// and exits) without waiting, so that several can stop at once.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited within
    /// 20 s. Never panics (Drop uses it).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: as in `terminate`.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
