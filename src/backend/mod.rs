//! Ban backends: how a node applies bans locally. Every backend sits behind
//! [`Backend`] and applies a whole batch in as few external calls as it can
//! (one `nft -f -`, one `ipset restore`, one `fail2ban-client` call per
//! thousand addresses), so a storm of bans never becomes a storm of
//! processes.
//!
//! External programs are always run as argv, never through a shell: no
//! text from the shared log can become shell syntax. Every call has a
//! deadline ([`BackendSettings::timeout`], 30 s by default) after which the
//! program and its process group are killed and the call is an error.
//!
//! | kind | module | what it does |
//! |---|---|---|
//! | `nftables` | [`nftables`] | its own table `inet banshare`, timeout sets, an input-hook drop chain |
//! | `ipset` | [`ipset`] | timeout ipsets `banshare-v4`...; the admin's iptables rules match them |
//! | `fail2ban` | [`fail2ban`] | `fail2ban-client set <jail> banip ...` into a local jail |
//! | `command` | [`command`] | your own program, from argv templates |
//! | `log` | [`log`] | dry run: one line per action on stdout |
//!
//! The firewall backends (nftables, ipset, fail2ban) ban an address on
//! **every port**: the record's port spec only reaches the command and log
//! backends. An IPv4-mapped IPv6 address (`::ffff:192.0.2.7`) is banned as
//! the IPv4 address it stands for in nftables and ipset, since that is what
//! the packets carry.
//!
//! `apply` is best effort: it applies every action it can, then returns one
//! error naming what failed (the refused networks, the failed calls); the
//! actions not named in it were applied. Retrying the batch one action at a
//! time is never needed, and in a storm would cost a process per action.
//!
//! Settings, as TOML (where the table lives is up to the configuration;
//! every key is optional, shown with its default):
//!
//! ```toml
//! exec_prefix = []          # argv put before every external program, e.g. ["ip", "netns", "exec", "n1"]
//! timeout = "30s"           # kill an external program after this long
//!
//! [nftables]
//! nft = "nft"               # the program (found on PATH unless absolute)
//! table = "banshare"        # table inet <table>
//! forward = false           # also drop banned sources in a forward-hook chain
//!
//! [ipset]
//! ipset = "ipset"
//! prefix = "banshare"       # sets <prefix>-v4, -v6, -v4net, -v6net
//! maxelem = 1048576         # the most entries per set
//!
//! [fail2ban]
//! client = "fail2ban-client"
//! socket = "/run/fail2ban/fail2ban.sock"   # optional: fail2ban-client -s SOCKET
//! jail = "banshare"         # the local jail that receives the bans
//!
//! [command]                 # no defaults: both are required for the command backend
//! ban = ["/usr/local/sbin/ban", "{jail}", "{bantime}", "{ips}"]
//! unban = ["/usr/local/sbin/unban", "{jail}", "{ips}"]
//! ```

pub mod command;
pub mod exec;
pub mod fail2ban;
pub mod ipset;
pub mod log;
pub mod nftables;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::record::{Jail, MAX_BANTIME_SECS, NodeId, PortSpec, Target};

pub use command::{CommandBackend, CommandSettings};
pub use exec::Exec;
pub use fail2ban::{Fail2banBackend, Fail2banSettings};
pub use ipset::{IpsetBackend, IpsetSettings};
pub use log::LogBackend;
pub use nftables::{NftablesBackend, NftablesSettings};

/// One ban to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub target: Target,
    pub ports: PortSpec,
    pub jail: Option<Jail>,
    /// How long from now; `None` for a permanent ban.
    pub remaining: Option<Duration>,
    /// Where it came from, for logs: the origin node and when it banned.
    pub origin: Option<NodeId>,
    pub ts: Option<DateTime<Utc>>,
}

/// One ban to lift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unban {
    pub target: Target,
    pub ports: PortSpec,
    pub jail: Option<Jail>,
    pub origin: Option<NodeId>,
    pub ts: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Ban(Ban),
    Unban(Unban),
}

impl Action {
    pub fn target(&self) -> Target {
        match self {
            Action::Ban(b) => b.target,
            Action::Unban(u) => u.target,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Config(String),
}

/// Applies bans on this host.
pub trait Backend: Send {
    /// A short name for logs and `banshare status`.
    fn name(&self) -> &'static str;

    /// Prepares the host (tables, sets). Called once before the first batch;
    /// safe to call again.
    fn setup(&mut self) -> Result<(), BackendError>;

    /// Applies a batch, in order, in as few external calls as possible.
    fn apply(&mut self, batch: &[Action]) -> Result<(), BackendError>;

    /// Removes what `setup` created (`banshare cleanup`).
    fn cleanup(&mut self) -> Result<(), BackendError>;

    /// Whether what `setup` created is still there. Another tool (`nft
    /// flush ruleset`, `ipset destroy`) or a reboot can remove it while the
    /// watcher still counts its bans as active; the watcher asks at start
    /// and on every safety poll, and sets up and applies its active bans
    /// again when the answer is no. One cheap external call that lists no
    /// bans. Backends whose state banshare does not own (fail2ban keeps
    /// its own, a command's is unknown, the log has none) answer yes.
    fn is_intact(&mut self) -> Result<bool, BackendError> {
        Ok(true)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Ban(b) => write!(f, "ban {} port {}", b.target, b.ports),
            Action::Unban(u) => write!(f, "unban {} port {}", u.target, u.ports),
        }
    }
}

/// Which backend a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Nftables,
    Ipset,
    Fail2ban,
    Command,
    Log,
}

impl BackendKind {
    pub const ALL: [BackendKind; 5] = [
        BackendKind::Nftables,
        BackendKind::Ipset,
        BackendKind::Fail2ban,
        BackendKind::Command,
        BackendKind::Log,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Nftables => "nftables",
            BackendKind::Ipset => "ipset",
            BackendKind::Fail2ban => "fail2ban",
            BackendKind::Command => "command",
            BackendKind::Log => "log",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(text: &str) -> Result<BackendKind, BackendError> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| {
                BackendError::Config(format!(
                    "unknown backend {:?} (expected nftables, ipset, fail2ban, command or log)",
                    crate::backend::short(text)
                ))
            })
    }
}

/// What every backend needs to know. All keys are optional; see the module
/// documentation for the TOML form and the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendSettings {
    /// Put before every external command line, e.g.
    /// `["ip", "netns", "exec", "n1"]`. Empty by default.
    pub exec_prefix: Vec<String>,
    /// Kill an external program that runs longer than this (30 s).
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    pub nftables: NftablesSettings,
    pub ipset: IpsetSettings,
    pub fail2ban: Fail2banSettings,
    pub command: CommandSettings,
}

impl Default for BackendSettings {
    fn default() -> BackendSettings {
        BackendSettings {
            exec_prefix: Vec::new(),
            timeout: exec::DEFAULT_TIMEOUT,
            nftables: NftablesSettings::default(),
            ipset: IpsetSettings::default(),
            fail2ban: Fail2banSettings::default(),
            command: CommandSettings::default(),
        }
    }
}

impl BackendSettings {
    /// How the backends run programs under these settings.
    pub fn exec(&self) -> Exec {
        Exec::new(self.exec_prefix.clone(), self.timeout)
    }
}

/// Builds the backend of `kind` from `settings`, checking the settings it
/// uses. Touches nothing on the host: call [`Backend::setup`] next.
pub fn open(
    kind: BackendKind,
    settings: &BackendSettings,
) -> Result<Box<dyn Backend>, BackendError> {
    if settings.timeout.is_zero() {
        return Err(BackendError::Config(
            "backend timeout must be more than 0".into(),
        ));
    }
    Ok(match kind {
        BackendKind::Nftables => Box::new(NftablesBackend::new(
            settings.nftables.clone(),
            settings.exec(),
        )?),
        BackendKind::Ipset => Box::new(IpsetBackend::new(settings.ipset.clone(), settings.exec())?),
        BackendKind::Fail2ban => Box::new(Fail2banBackend::new(
            settings.fail2ban.clone(),
            settings.exec(),
        )?),
        BackendKind::Command => Box::new(CommandBackend::new(&settings.command, settings.exec())?),
        BackendKind::Log => Box::new(LogBackend::new(Box::new(std::io::stdout()))),
    })
}

/// Durations as text (`"30s"`, `"1m 30s"`) or a number of seconds.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Seconds(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Text::deserialize(d)? {
            Text::Seconds(secs) => Ok(Duration::from_secs(secs)),
            Text::Text(text) => humantime::parse_duration(&text)
                .map_err(|e| serde::de::Error::custom(format!("bad duration {text:?}: {e}"))),
        }
    }
}

/// At most 64 bytes of untrusted or configured text, for error messages
/// (which show it with `{:?}`).
pub(crate) fn short(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A ban's remaining time in whole seconds for a firewall timeout: rounded
/// up, at least 1 (a timeout of 0 means *no timeout* to nftables and ipset),
/// at most the longest bantime a record may carry.
pub(crate) fn timeout_secs(remaining: Duration) -> u64 {
    let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
    secs.clamp(1, MAX_BANTIME_SECS)
}

/// Where a target goes in a firewall with separate sets per family and for
/// single addresses and networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FwTarget {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    V4Net(Ipv4Net),
    V6Net(Ipv6Net),
}

impl FwTarget {
    /// Full-length networks become addresses; IPv4-mapped IPv6 addresses and
    /// networks become the IPv4 ones the packets carry.
    pub(crate) fn of(target: Target) -> FwTarget {
        match target {
            Target::Addr(IpAddr::V4(a)) => FwTarget::V4(a),
            Target::Addr(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(v4) => FwTarget::V4(v4),
                None => FwTarget::V6(a),
            },
            Target::Net(IpNet::V4(n)) if n.prefix_len() == 32 => FwTarget::V4(n.addr()),
            Target::Net(IpNet::V4(n)) => FwTarget::V4Net(n),
            Target::Net(IpNet::V6(n)) => match n.addr().to_ipv4_mapped() {
                Some(v4) if n.prefix_len() >= 96 => FwTarget::of(Target::Net(IpNet::V4(
                    Ipv4Net::new(v4, n.prefix_len() - 96).expect("prefix in range"),
                ))),
                _ if n.prefix_len() == 128 => FwTarget::V6(n.addr()),
                _ => FwTarget::V6Net(n),
            },
        }
    }

    pub(crate) fn is_net(&self) -> bool {
        matches!(self, FwTarget::V4Net(_) | FwTarget::V6Net(_))
    }
}

impl fmt::Display for FwTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FwTarget::V4(a) => a.fmt(f),
            FwTarget::V6(a) => a.fmt(f),
            FwTarget::V4Net(n) => n.fmt(f),
            FwTarget::V6Net(n) => n.fmt(f),
        }
    }
}

/// What a firewall does with one address: ban for so many seconds (`None`:
/// permanent), or unban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FwOp {
    Ban(Option<u64>),
    Unban,
}

/// The batch reduced to one operation per firewall target, the last one,
/// in the order of those last occurrences. For a firewall set this is the
/// same as applying the batch in order, as long as every operation sets the
/// element's state regardless of what it was (ban: replace, with the new
/// timeout; unban: remove if present).
pub(crate) fn last_per_target(batch: &[Action]) -> Vec<(FwTarget, FwOp)> {
    let mut last: HashMap<FwTarget, usize> = HashMap::with_capacity(batch.len());
    for (i, action) in batch.iter().enumerate() {
        last.insert(FwTarget::of(action.target()), i);
    }
    batch
        .iter()
        .enumerate()
        .filter_map(|(i, action)| {
            let target = FwTarget::of(action.target());
            (last[&target] == i).then(|| {
                let op = match action {
                    Action::Ban(b) => FwOp::Ban(b.remaining.map(timeout_secs)),
                    Action::Unban(_) => FwOp::Unban,
                };
                (target, op)
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn kind_round_trips() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.to_string().parse::<BackendKind>().unwrap(), kind);
        }
        assert!("iptables".parse::<BackendKind>().is_err());
        assert!("NFTABLES".parse::<BackendKind>().is_err());
    }

    #[test]
    fn settings_defaults_and_unknown_keys() {
        let s: BackendSettings = toml::from_str("").unwrap();
        assert_eq!(s, BackendSettings::default());
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(s.nftables.table, "banshare");
        assert_eq!(s.ipset.prefix, "banshare");
        assert_eq!(s.fail2ban.jail, "banshare");
        assert_eq!(s.fail2ban.socket, None);
        assert!(s.command.ban.is_none());

        let s: BackendSettings = toml::from_str(
            "exec_prefix = [\"ip\", \"netns\", \"exec\", \"x\"]\ntimeout = \"2s\"\n\
             [nftables]\ntable = \"t1\"\nforward = true\n\
             [fail2ban]\nsocket = \"/run/f.sock\"\n\
             [command]\nban = [\"/bin/b\", \"{ips}\"]\n",
        )
        .unwrap();
        assert_eq!(s.exec_prefix.len(), 4);
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.nftables.table, "t1");
        assert!(s.nftables.forward);
        assert_eq!(s.fail2ban.socket, Some(PathBuf::from("/run/f.sock")));
        let s: BackendSettings = toml::from_str("timeout = 5").unwrap();
        assert_eq!(s.timeout, Duration::from_secs(5));

        for bad in [
            "tabel = \"x\"",
            "[nftables]\ntabel = \"x\"",
            "[ipset]\nset = \"x\"",
            "timeout = \"soon\"",
        ] {
            let err = toml::from_str::<BackendSettings>(bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("tabel") || err.contains("set") || err.contains("soon"),
                "{bad}: {err}"
            );
        }
        // Prints back to what it reads.
        let text = toml::to_string(&BackendSettings::default()).unwrap();
        assert_eq!(
            toml::from_str::<BackendSettings>(&text).unwrap(),
            BackendSettings::default()
        );
    }

    #[test]
    fn open_checks_settings() {
        let mut s = BackendSettings::default();
        assert!(open(BackendKind::Log, &s).is_ok());
        assert!(open(BackendKind::Nftables, &s).is_ok());
        assert!(open(BackendKind::Ipset, &s).is_ok());
        assert!(open(BackendKind::Fail2ban, &s).is_ok());
        // No templates.
        assert!(matches!(
            open(BackendKind::Command, &s),
            Err(BackendError::Config(_))
        ));
        s.nftables.table = "bad name".into();
        assert!(matches!(
            open(BackendKind::Nftables, &s),
            Err(BackendError::Config(_))
        ));
        s.timeout = Duration::ZERO;
        assert!(open(BackendKind::Log, &s).is_err());
    }

    #[test]
    fn timeouts_round_up_and_never_reach_zero() {
        assert_eq!(timeout_secs(Duration::from_millis(1)), 1);
        assert_eq!(timeout_secs(Duration::ZERO), 1);
        assert_eq!(timeout_secs(Duration::from_millis(1_799_001)), 1800);
        assert_eq!(timeout_secs(Duration::from_secs(1800)), 1800);
        assert_eq!(
            timeout_secs(Duration::from_secs(u64::MAX)),
            MAX_BANTIME_SECS
        );
    }

    #[test]
    fn firewall_targets() {
        let of = |t: &str| FwTarget::of(t.parse().unwrap());
        assert_eq!(of("192.0.2.7"), FwTarget::V4("192.0.2.7".parse().unwrap()));
        assert_eq!(
            of("192.0.2.7/32"),
            FwTarget::V4("192.0.2.7".parse().unwrap())
        );
        assert_eq!(
            of("::ffff:192.0.2.7"),
            FwTarget::V4("192.0.2.7".parse().unwrap())
        );
        assert_eq!(
            of("::ffff:192.0.2.0/120"),
            FwTarget::V4Net("192.0.2.0/24".parse().unwrap())
        );
        assert_eq!(
            of("2001:db8::1/128"),
            FwTarget::V6("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            of("2001:db8::/32"),
            FwTarget::V6Net("2001:db8::/32".parse().unwrap())
        );
        assert_eq!(of("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert!(of("::/0").is_net());
    }

    #[test]
    fn last_action_per_target_wins() {
        let batch = [
            ban("192.0.2.1", Some(10)),
            ban("192.0.2.2", None),
            unban("192.0.2.1"),
            ban("::ffff:192.0.2.2", Some(20)),
            ban("192.0.2.3", Some(5)),
        ];
        let v4 = |s: &str| FwTarget::V4(s.parse().unwrap());
        assert_eq!(
            last_per_target(&batch),
            vec![
                (v4("192.0.2.1"), FwOp::Unban),
                (v4("192.0.2.2"), FwOp::Ban(Some(20))),
                (v4("192.0.2.3"), FwOp::Ban(Some(5))),
            ]
        );
    }
}
