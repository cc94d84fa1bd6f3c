//! What the backend needs on this host: its programs on PATH, the
//! CAP_NET_ADMIN capability for the firewall backends, and fail2ban's
//! socket for the fail2ban backend and the monitor.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Finding;
use crate::backend::BackendKind;
use crate::config::Settings;

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
/// fail2ban's socket unless `[backend.fail2ban] socket` says otherwise.
pub const DEFAULT_FAIL2BAN_SOCKET: &str = "/var/run/fail2ban/fail2ban.sock";

fn kind(settings: &Settings) -> Option<BackendKind> {
    settings.watch.backend.as_deref()?.parse().ok()
}

/// A program the backend runs: what it is for, and the Debian package.
struct Program {
    name: String,
    setting: &'static str,
    package: &'static str,
    /// Missing is a problem; else a warning (needed only beside banshare).
    required: bool,
}

fn programs(settings: &Settings, kind: BackendKind) -> Vec<Program> {
    let b = &settings.backend;
    let program = |name: &str, setting, package, required| Program {
        name: name.to_owned(),
        setting,
        package,
        required,
    };
    let mut list = match kind {
        BackendKind::Nftables => vec![program(
            &b.nftables.nft,
            "[backend.nftables] nft",
            "nftables",
            true,
        )],
        BackendKind::Ipset => vec![
            program(&b.ipset.ipset, "[backend.ipset] ipset", "ipset", true),
            // The rule that matches the sets is the admin's, in iptables.
            program("iptables", "your firewall rules", "iptables", false),
        ],
        BackendKind::Fail2ban => vec![program(
            &b.fail2ban.client,
            "[backend.fail2ban] client",
            "fail2ban",
            true,
        )],
        BackendKind::Command => [&b.command.ban, &b.command.unban]
            .into_iter()
            .filter_map(|argv| argv.as_ref()?.first())
            .map(|p| program(p, "[backend.command]", "(yours)", true))
            .collect(),
        BackendKind::Log => Vec::new(),
    };
    if let Some(prefix) = b.exec_prefix.first() {
        list.insert(
            0,
            program(prefix, "[backend] exec_prefix", "(the prefix's)", true),
        );
    }
    list
}

/// One finding per program the backend runs: found on PATH (or at its
/// absolute path) and executable.
pub fn backend(settings: &Settings) -> Vec<Finding> {
    let Some(kind) = kind(settings) else {
        return vec![Finding::ok(
            "backend",
            "not checked: no backend is configured (see config)",
        )];
    };
    let list = programs(settings, kind);
    if list.is_empty() {
        return vec![Finding::ok("backend", format!("{kind}: runs no program"))];
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    list.into_iter()
        .map(|p| match find_program(&p.name, &path) {
            Some(found) => Finding::ok(
                "backend",
                format!("{kind}: {} is {}", p.name, found.display()),
            ),
            None => {
                let detail = format!(
                    "{kind}: {} is not found{} (PATH={}): {}",
                    p.name,
                    if p.name.contains('/') { "" } else { " on PATH" },
                    path.to_string_lossy(),
                    if p.required {
                        "no ban can be applied"
                    } else {
                        "it is needed beside banshare"
                    }
                );
                let fix = format!(
                    "install it (Debian package {}), or give its full path in {}; a systemd unit's \
                     PATH is /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    p.package, p.setting
                );
                match p.required {
                    true => Finding::problem("backend", detail, fix),
                    false => Finding::warning("backend", detail, fix),
                }
            }
        })
        .collect()
}

/// Where `name` runs from: itself if it has a slash, else the first
/// executable file of that name in `path`'s folders.
pub fn find_program(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        return executable(Path::new(name)).then(|| PathBuf::from(name));
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

/// CAP_NET_ADMIN in this process's effective set, from `/proc/self/status`.
pub fn has_net_admin(status: &str) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << CAP_NET_ADMIN) != 0)
}

/// The firewall backends change the firewall, which takes CAP_NET_ADMIN.
pub fn privileges(settings: &Settings) -> Finding {
    let needs = match kind(settings) {
        Some(BackendKind::Nftables) => "nft",
        Some(BackendKind::Ipset) => "ipset",
        Some(k) => return Finding::ok("privileges", format!("not needed by the {k} backend")),
        None => return Finding::ok("privileges", "not checked: no backend is configured"),
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match has_net_admin(&status) {
        Some(true) => Finding::ok(
            "privileges",
            "CAP_NET_ADMIN is in this process's effective set",
        ),
        Some(false) => Finding::problem(
            "privileges",
            format!(
                "this process lacks CAP_NET_ADMIN (CapEff in /proc/self/status): {needs} will be \
                 refused. Run doctor as the user the watcher runs as to check the watcher's"
            ),
            "run the watcher as root, or give its unit AmbientCapabilities=CAP_NET_ADMIN and \
             CapabilityBoundingSet=CAP_NET_ADMIN",
        ),
        None => Finding::warning(
            "privileges",
            "cannot read CapEff from /proc/self/status",
            "check that /proc is mounted",
        ),
    }
}

/// fail2ban's socket answers, where banshare relies on fail2ban: the
/// fail2ban backend bans through it; the monitor shares what fail2ban
/// bans, which it does only while it runs.
pub fn fail2ban(settings: &Settings) -> Finding {
    let backend = kind(settings) == Some(BackendKind::Fail2ban);
    let monitor = settings.monitor.state_dir.is_dir();
    if !backend && !monitor {
        return Finding::ok(
            "fail2ban",
            "not used (no fail2ban backend, no monitor has run)",
        );
    }
    let socket = settings
        .backend
        .fail2ban
        .socket
        .clone()
        .unwrap_or_else(|| DEFAULT_FAIL2BAN_SOCKET.into());
    let user = if backend {
        "the fail2ban backend"
    } else {
        "the monitor"
    };
    let is_socket = std::fs::metadata(&socket).map(|m| m.file_type().is_socket());
    let answer = match is_socket {
        Ok(true) => std::os::unix::net::UnixStream::connect(&socket).map(drop),
        Ok(false) => Err(std::io::Error::other("not a socket")),
        Err(e) => Err(e),
    };
    match answer {
        Ok(()) => Finding::ok(
            "fail2ban",
            format!("{} accepts connections ({user})", socket.display()),
        ),
        Err(e) => {
            let detail = format!(
                "fail2ban's socket {}: {e}: {user} cannot work",
                socket.display()
            );
            let fix = "start fail2ban (`systemctl start fail2ban`), or set [backend.fail2ban] socket \
                       to the socket it uses (`fail2ban-client -s`)";
            match backend {
                true => Finding::problem("fail2ban", detail, fix),
                false => Finding::warning("fail2ban", detail, fix),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_admin_is_bit_12_of_capeff() {
        assert_eq!(
            has_net_admin("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(true)
        );
        assert_eq!(has_net_admin("CapEff:\t0000000000000000\n"), Some(false));
        assert_eq!(has_net_admin("CapEff:\t0000000000001000\n"), Some(true));
        assert_eq!(has_net_admin("nothing"), None);
    }

    #[test]
    fn programs_are_found_on_path_or_by_their_path() {
        let path = std::ffi::OsString::from("/nonexistent:/bin:/usr/bin");
        assert!(find_program("sh", &path).is_some());
        assert_eq!(
            find_program("sh", std::ffi::OsStr::new("/nonexistent")),
            None
        );
        assert_eq!(
            find_program("/bin/sh", std::ffi::OsStr::new("")),
            Some(PathBuf::from("/bin/sh"))
        );
    }
}
