//! Where the transport connects to: the hosts a node must reach to read and
//! write the shared log, and the next hop of the route to each. A node that
//! bans one of them cuts itself off from the log: its sshfs calls block in
//! uninterruptible waits, and so does every process that touches the mount.
//! The watcher's policy therefore never bans them.
//!
//! - a log on a mounted share: the host in the mount's source, from
//!   `/proc/self/mountinfo` (`user@host:/path` for sshfs, `host:/export` for
//!   NFS, `//host/share` for CIFS), and the address the kernel connected
//!   NFS and CIFS to (their `addr=` option);
//! - an `sftp://` log: the URL's host;
//! - a host name stands for every address it resolves to now;
//! - the next hop is the gateway of the route the kernel picks for each
//!   address, asked with `ip -j route get ADDRESS` (argv only). That is the
//!   kernel's own lookup, policy routing and VRFs included, for the price of
//!   one short process; a netlink crate would add several dependencies for
//!   the same one question.

use std::fmt;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::LogLocation;

/// The addresses a node reaches the shared log through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// The file server or SFTP host.
    pub servers: Vec<IpAddr>,
    /// The gateways of the routes to `servers` (none when on-link).
    pub next_hops: Vec<IpAddr>,
}

impl Endpoints {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.next_hops.is_empty()
    }

    /// Every address, servers first.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.servers.iter().chain(&self.next_hops).copied()
    }
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers = self.servers.iter().map(|a| format!("{a} (server)"));
        let hops = self.next_hops.iter().map(|a| format!("{a} (next hop)"));
        let all: Vec<String> = servers.chain(hops).collect();
        if all.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&all.join(", "))
    }
}

/// Why part of the transport's addresses is unknown. None is fatal: the
/// watcher says so and protects what it found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Mountinfo(String),
    #[error(
        "the log is on a {fstype} mount of {mounted:?}, whose server banshare cannot tell: \
         list that server and the gateway to it in ignoreip"
    )]
    UnknownServer { fstype: String, mounted: String },
    #[error(
        "cannot resolve the log's server {host:?}: {message}; it is not protected from bans \
         until it resolves (list it in ignoreip)"
    )]
    Resolve { host: String, message: String },
    #[error("cannot find the route to the log's server {address} (`ip -j route get`): {message}")]
    Route { address: IpAddr, message: String },
}

/// The hosts (names or address literals) the transport for `location`
/// connects to: none for a log on a local filesystem.
pub fn server_hosts(location: &LogLocation) -> Result<Vec<String>, EndpointError> {
    match location {
        LogLocation::File(path) => {
            let text = std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| EndpointError::Mountinfo(e.to_string()))?;
            let mounts = parse_mountinfo(&text);
            let Some(mount) = mount_of(&mounts, &log_dir(path)) else {
                return Ok(Vec::new());
            };
            mount.server_hosts()
        }
        #[cfg(feature = "sftp")]
        LogLocation::Sftp(url) => Ok(vec![url.host.clone()]),
        #[cfg(feature = "zmq")]
        LogLocation::Zmq(url) => Ok(vec![url.host.clone()]),
        // Every server given: the client reconnects to any of them.
        #[cfg(feature = "nats")]
        LogLocation::Nats(url) => Ok(url.servers.iter().map(|(h, _)| h.clone()).collect()),
    }
}

/// The addresses of `hosts` and the next hops to them, with what could not
/// be found.
pub fn discover(hosts: &[String]) -> (Endpoints, Vec<EndpointError>) {
    let mut found = Endpoints::default();
    let mut problems = Vec::new();
    for host in hosts {
        match resolve(host) {
            Ok(addrs) => found.servers.extend(addrs),
            Err(e) => problems.push(EndpointError::Resolve {
                host: host.clone(),
                message: e.to_string(),
            }),
        }
    }
    dedup(&mut found.servers);
    for &address in &found.servers {
        match next_hop(address) {
            Ok(Some(hop)) => found.next_hops.push(hop),
            Ok(None) => {}
            Err(message) => problems.push(EndpointError::Route { address, message }),
        }
    }
    dedup(&mut found.next_hops);
    (found, problems)
}

/// Every address `host` resolves to (a literal is itself).
pub fn resolve(host: &str) -> io::Result<Vec<IpAddr>> {
    if let Ok(address) = host.parse::<IpAddr>() {
        return Ok(vec![address]);
    }
    let mut addresses: Vec<IpAddr> = (host, 0u16).to_socket_addrs()?.map(|a| a.ip()).collect();
    dedup(&mut addresses);
    Ok(addresses)
}

/// The gateway of the route the kernel picks for `address`; `None` when the
/// address is on-link or local.
fn next_hop(address: IpAddr) -> Result<Option<IpAddr>, String> {
    let output = Command::new("ip")
        .args(["-j", "route", "get"])
        .arg(address.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    parse_route_get(&output.stdout)
}

/// The gateway in the output of `ip -j route get`: `gateway`, or
/// `via.host` when the next hop is of the other family (RFC 5549).
pub(crate) fn parse_route_get(json: &[u8]) -> Result<Option<IpAddr>, String> {
    let routes: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("unexpected output: {e}"))?;
    let route = routes
        .as_array()
        .and_then(|r| r.first())
        .ok_or("unexpected output: no route")?;
    let gateway = route
        .get("gateway")
        .or_else(|| route.get("via").and_then(|via| via.get("host")));
    match gateway.and_then(|g| g.as_str()) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("unexpected gateway {text:?}")),
    }
}

fn dedup(addresses: &mut Vec<IpAddr>) {
    addresses.sort();
    addresses.dedup();
}

/// The directory holding the log, absolute. Symlinks are resolved when the
/// directory can be read; otherwise (the share hangs or is gone) the path is
/// cleaned up lexically, which still finds the mount it names.
fn log_dir(log: &Path) -> PathBuf {
    let dir = match log.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(real) = std::fs::canonicalize(dir) {
        return real;
    }
    let absolute = std::env::current_dir().unwrap_or_default().join(dir);
    let mut clean = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    clean
}

/// One line of `/proc/self/mountinfo`, the fields used here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    fstype: String,
    source: String,
    /// The superblock options (`rw,vers=4.2,addr=198.18.0.5`).
    options: String,
}

impl Mount {
    /// The server's host in the mount's source, and the address the
    /// kernel connected to, if it is a network filesystem.
    fn server_hosts(&self) -> Result<Vec<String>, EndpointError> {
        let host = match self.fstype.as_str() {
            "fuse.sshfs" => remote_host(&self.source),
            "nfs" | "nfs4" => remote_host(&self.source),
            "cifs" | "smb3" => unc_host(&self.source),
            other if is_network_fs(other) => None,
            _ => return Ok(Vec::new()),
        };
        let Some(host) = host.filter(|h| valid_host(h)) else {
            return Err(EndpointError::UnknownServer {
                fstype: self.fstype.clone(),
                mounted: self.source.clone(),
            });
        };
        let mut hosts = vec![host.to_owned()];
        // The kernel's NFS and CIFS clients record the address they
        // connected to, which a later lookup of the name may not return.
        if self.fstype != "fuse.sshfs" {
            let addr = self
                .options
                .split(',')
                .find_map(|o| o.strip_prefix("addr="));
            hosts.extend(
                addr.filter(|a| a.parse::<IpAddr>().is_ok())
                    .map(str::to_owned),
            );
        }
        hosts.dedup();
        Ok(hosts)
    }
}

/// Filesystems with a server that banshare cannot read from the source.
fn is_network_fs(fstype: &str) -> bool {
    fstype.starts_with("fuse.")
        || matches!(
            fstype,
            "ceph" | "9p" | "afs" | "glusterfs" | "lustre" | "smbfs" | "ncpfs"
        )
}

/// `host` in `[user@]host:path` or `[user@][v6]:path`.
fn remote_host(source: &str) -> Option<&str> {
    // A user ends at the first '@' before the host part; a path may hold
    // '@' and ':' of its own.
    let rest = match source.split_once('@') {
        Some((user, rest)) if !user.contains([':', '[']) => rest,
        _ => source,
    };
    match rest.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(host, _)| host),
        None => rest.split_once(':').map(|(host, _)| host),
    }
}

/// `host` in `//host/share` (`//[v6]/share` too).
fn unc_host(source: &str) -> Option<&str> {
    let rest = source.strip_prefix("//")?;
    let host = rest.split('/').next()?;
    Some(
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host),
    )
}

/// A host name or address literal, nothing else (it is resolved, never
/// given to a shell, but an odd one means the source was misread).
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
}

/// Mounts in mountinfo order: `ID PARENT MAJ:MIN ROOT POINT OPTIONS
/// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`, with spaces and other odd
/// bytes in paths escaped as `\ooo`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let point = head.split(' ').nth(4)?;
            let mut tail = tail.split(' ');
            let fstype = tail.next()?;
            let source = tail.next()?;
            let options = tail.next().unwrap_or("");
            Some(Mount {
                point: PathBuf::from(unescape(point)),
                fstype: unescape(fstype),
                source: unescape(source),
                options: unescape(options),
            })
        })
        .collect()
}

/// Undoes mountinfo's `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')));
        match octal.and_then(|n| u8::try_from(n).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount `dir` is on: the one with the longest mount point above it,
/// the last such one when several are stacked on the same point.
fn mount_of<'a>(mounts: &'a [Mount], dir: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| dir.starts_with(&m.point))
        .max_by_key(|(i, m)| (m.point.components().count(), *i))
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:38 / /mnt/share rw,nosuid,nodev,relatime shared:20 - fuse.sshfs banshare@files.example:/srv/share rw,user_id=0,group_id=0
41 22 0:39 / /mnt/nfs rw,relatime shared:21 - nfs4 [2001:db8::5]:/export rw,vers=4.2,addr=2001:db8::5
42 22 0:40 / /mnt/my\\040files rw,relatime shared:22 - cifs //files.example/logs rw,vers=3.1.1,addr=198.18.0.7
45 22 0:43 / /mnt/named rw,relatime shared:25 - nfs files.example:/export rw,vers=3,addr=198.18.0.8
43 40 0:41 / /mnt/share/inner rw,relatime shared:23 - tmpfs tmpfs rw
44 22 0:42 / /mnt/share rw,relatime shared:24 - fuse.sshfs 198.18.0.1:/x@y:z rw
";

    fn hosts_of(dir: &str) -> Result<Vec<String>, EndpointError> {
        let mounts = parse_mountinfo(MOUNTINFO);
        mount_of(&mounts, Path::new(dir)).unwrap().server_hosts()
    }

    #[test]
    fn the_server_is_the_host_in_the_mount_source_of_the_log_folder() {
        // Mount 44 is stacked on 40's mount point: the later one is seen.
        assert_eq!(hosts_of("/mnt/share/logs").unwrap(), ["198.18.0.1"]);
        assert_eq!(hosts_of("/mnt/nfs").unwrap(), ["2001:db8::5"]);
        assert_eq!(
            hosts_of("/mnt/my files").unwrap(),
            ["files.example", "198.18.0.7"]
        );
        assert_eq!(
            hosts_of("/mnt/named/x").unwrap(),
            ["files.example", "198.18.0.8"]
        );
        let none: [&str; 0] = [];
        assert_eq!(hosts_of("/mnt/share/inner/x").unwrap(), none);
        assert_eq!(hosts_of("/var/log").unwrap(), none);
        assert_eq!(hosts_of("/mnt/sharex").unwrap(), none, "not a path prefix");
    }

    #[test]
    fn mount_sources_of_each_kind() {
        assert_eq!(remote_host("u@files:/srv/share"), Some("files"));
        assert_eq!(remote_host("files:share"), Some("files"));
        assert_eq!(remote_host("u@[2001:db8::1]:/x"), Some("2001:db8::1"));
        assert_eq!(remote_host("files:/a@b:c"), Some("files"));
        assert_eq!(remote_host("nocolon"), None);
        assert_eq!(unc_host("//fs.example/share"), Some("fs.example"));
        assert_eq!(unc_host("//[2001:db8::2]/share"), Some("2001:db8::2"));
        assert_eq!(unc_host("fs/share"), None);
    }

    #[test]
    fn an_unreadable_network_source_is_reported_not_ignored() {
        let mount = Mount {
            point: "/mnt/x".into(),
            fstype: "fuse.rclone".into(),
            source: "remote:".into(),
            options: "rw".into(),
        };
        assert!(matches!(
            mount.server_hosts(),
            Err(EndpointError::UnknownServer { .. })
        ));
        let bad = Mount {
            fstype: "fuse.sshfs".into(),
            source: "u@$(reboot):/x".into(),
            ..mount
        };
        assert!(bad.server_hosts().is_err());
    }

    #[test]
    fn the_next_hop_is_the_routes_gateway() {
        let via_gateway = br#"[{"dst":"203.0.113.9","gateway":"198.18.0.12","dev":"eth0","prefsrc":"198.18.0.11","flags":[],"uid":0,"cache":[]}]"#;
        let on_link = br#"[{"dst":"198.18.0.1","dev":"eth0","prefsrc":"198.18.0.11","flags":[],"uid":0,"cache":[]}]"#;
        let other_family = br#"[{"dst":"203.0.113.9","via":{"family":"inet6","host":"fe80::1"},"dev":"eth0","flags":[],"uid":0,"cache":[]}]"#;
        assert_eq!(
            parse_route_get(via_gateway).unwrap(),
            Some("198.18.0.12".parse().unwrap())
        );
        assert_eq!(parse_route_get(on_link).unwrap(), None);
        assert_eq!(
            parse_route_get(other_family).unwrap(),
            Some("fe80::1".parse().unwrap())
        );
        assert!(parse_route_get(b"[]").is_err());
        assert!(parse_route_get(br#"[{"gateway":"nonsense"}]"#).is_err());
        assert!(parse_route_get(b"garbage").is_err());
    }

    #[test]
    fn a_host_name_resolves_to_all_its_addresses() {
        assert_eq!(
            resolve("198.18.0.1").unwrap(),
            vec!["198.18.0.1".parse::<IpAddr>().unwrap()]
        );
        let local = resolve("localhost").unwrap();
        assert!(local.iter().all(|a| a.is_loopback()), "{local:?}");
        assert!(local.contains(&"127.0.0.1".parse().unwrap()), "{local:?}");
    }

    #[cfg(feature = "sftp")]
    #[test]
    fn the_server_of_an_sftp_log_is_the_urls_host() {
        let location =
            LogLocation::parse("sftp://banshare@files.example:2222/share/x.log").unwrap();
        assert_eq!(server_hosts(&location).unwrap(), vec!["files.example"]);
        let location = LogLocation::parse("sftp://b@[2001:db8::1]/x.log").unwrap();
        assert_eq!(server_hosts(&location).unwrap(), vec!["2001:db8::1"]);
    }

    #[test]
    fn octal_escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/a\040b\011c\134d"), "/mnt/a b\tc\\d");
        assert_eq!(unescape(r"\9"), r"\9");
    }
}
