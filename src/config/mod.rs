//! The configuration file: TOML, one section per role.
//!
//! ```toml
//! [common]
//! log = "/mnt/banshare/newbans.log"
//! node = "web1"
//! spool_dir = "/var/lib/banshare/spool"
//!
//! [append]
//! port = "0:65535"
//! jail = "sshd"
//! bantime = "30m"
//! tag = "banshare"
//! lock_timeout = "15s"
//! stale_lock = "10s"
//! io_timeout = "10s"
//! ```
//!
//! The file is read into [`RawConfig`], which mirrors it exactly (unknown
//! keys are errors that name the key), then checked into [`Settings`], whose
//! values are all typed and valid. Command-line flags override settings
//! after that. [`Settings::to_toml`] prints the effective configuration.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod monitor;
mod publisher;
mod sftp;
mod trust;
mod watch;
mod watch_parts;
pub use watch_parts::metrics_folder;
mod nats;
mod zmq;

pub use monitor::{DEFAULT_FAIL2BAN_LOG, MonitorSettings};
pub use publisher::{
    BindAddress, DEFAULT_BIND, DEFAULT_PUBLISHER_DATA_DIR, LegacyMode, PublisherSettings,
};
pub use trust::TrustSettings;
pub use watch::{
    DEFAULT_MAX_BANTIME, DEFAULT_STATE_DIR, MIN_POLL_INTERVAL, WatchSettings, check_metrics_listen,
    check_poll_interval, parse_net,
};

use crate::record::{BanTime, Jail, MAX_BANTIME_SECS, NodeId, PortSpec, Tag};
use crate::transport::LogLocation;
use crate::transport::lock::LockTimings;

/// Where the configuration is read from unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/banshare/banshare.toml";
/// Where records wait while the log is unreachable.
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/banshare/spool";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
    #[error(
        "this host's name {0:?} is not a valid node id (letters, digits, '-', '_', '.'); \
         set `node` in [common] or pass --node"
    )]
    BadHostname(String),
}

/// The file as written. Every key is optional; missing ones take defaults.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub common: RawCommon,
    pub append: RawAppend,
    pub watch: watch::RawWatch,
    pub monitor: monitor::RawMonitor,
    pub publisher: publisher::RawPublisher,
    pub sftp: sftp::RawSftp,
    pub zmq: zmq::RawZmq,
    pub nats: nats::RawNats,
    pub trust: trust::RawTrust,
    /// The ban backends' own settings; checked when a backend is opened.
    pub backend: crate::backend::BackendSettings,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCommon {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAppend {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bantime: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_timeout: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_lock: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_timeout: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_jails: Option<Vec<String>>,
}

/// A duration as the file may spell it: whole seconds (`30`) or text with
/// units (`"250ms"`, `"30m"`, `"1h 30m"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum DurationText {
    Seconds(i64),
    Text(String),
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `None` until given by the file or `--log`; commands that need it say so.
    pub log: Option<LogLocation>,
    pub node: NodeId,
    pub spool_dir: PathBuf,
    /// This node's signing key; records are signed when it is set.
    pub key: Option<PathBuf>,
    pub append: AppendSettings,
    pub watch: WatchSettings,
    pub monitor: MonitorSettings,
    pub publisher: PublisherSettings,
    /// How to reach an `sftp://` log.
    pub sftp: crate::transport::SftpSettings,
    /// Where a `zmq+tcp://` publisher's other sockets are.
    pub zmq: crate::transport::zmq::ZmqSettings,
    /// How to reach the servers of a `nats://` log.
    pub nats: crate::transport::nats::NatsSettings,
    pub trust: TrustSettings,
    pub backend: crate::backend::BackendSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppendSettings {
    /// Port spec for records when `--port` is not given.
    pub port: PortSpec,
    pub jail: Option<Jail>,
    /// `None`: the record carries no bantime and each watcher applies its own.
    pub bantime: Option<BanTime>,
    pub tag: Tag,
    pub lock: LockTimings,
    /// How long one delivery may take in all before its records are spooled.
    pub io_timeout: Duration,
    /// Bans of these jails are not shared: they came from banshare (the
    /// jail its fail2ban backend or filter feeds), so sharing them again
    /// would echo.
    pub skip_jails: Vec<Jail>,
}

impl AppendSettings {
    /// The longest a `ban` may block its caller: waiting for the lock, then
    /// the write itself.
    pub fn deadline(&self) -> Duration {
        self.lock.timeout + self.io_timeout
    }
}

impl Settings {
    /// Reads `path`. A missing file is an error only if `required` (it was
    /// named with `--config`); otherwise every default applies.
    pub fn load(path: &Path, required: bool) -> Result<Settings, ConfigError> {
        let raw = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: one_line(&e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => RawConfig::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Settings::from_raw(&raw, path)
    }

    /// Checks every value; `origin` names the file in error messages.
    pub fn from_raw(raw: &RawConfig, origin: &Path) -> Result<Settings, ConfigError> {
        let check = Checker { origin };
        let c = &raw.common;
        let a = &raw.append;
        let lock = LockTimings {
            timeout: check.duration(
                "append.lock_timeout",
                &a.lock_timeout,
                LockTimings::default().timeout,
            )?,
            stale_after: check.duration(
                "append.stale_lock",
                &a.stale_lock,
                LockTimings::default().stale_after,
            )?,
        };
        let settings = Settings {
            log: c
                .log
                .as_deref()
                .map(LogLocation::parse)
                .transpose()
                .map_err(|m| check.invalid("common.log", m))?,
            node: match &c.node {
                Some(node) => check.parse("common.node", node)?,
                None => default_node()?,
            },
            spool_dir: c
                .spool_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_SPOOL_DIR.into()),
            key: c.key.clone(),
            append: AppendSettings {
                port: check.parse_or("append.port", &a.port, PortSpec::all())?,
                jail: a
                    .jail
                    .as_deref()
                    .map(|j| check.parse("append.jail", j))
                    .transpose()?,
                bantime: a
                    .bantime
                    .as_ref()
                    .map(|b| check.bantime("append.bantime", b))
                    .transpose()?,
                tag: check.parse_or(
                    "append.tag",
                    &a.tag,
                    "banshare".parse().expect("valid tag"),
                )?,
                lock,
                io_timeout: check.duration(
                    "append.io_timeout",
                    &a.io_timeout,
                    Duration::from_secs(10),
                )?,
                skip_jails: match &a.skip_jails {
                    Some(jails) => jails
                        .iter()
                        .map(|j| check.parse("append.skip_jails", j))
                        .collect::<Result<_, _>>()?,
                    None => vec!["banshare".parse().expect("valid jail")],
                },
            },
            watch: WatchSettings::check(&raw.watch, &check)?,
            monitor: MonitorSettings::check(&raw.monitor, &check)?,
            publisher: PublisherSettings::check(&raw.publisher, &check)?,
            sftp: sftp::check(&raw.sftp, &check)?,
            zmq: zmq::check(&raw.zmq, &check)?,
            nats: nats::check(&raw.nats, &check)?,
            trust: trust::check(&raw.trust, &check)?,
            backend: raw.backend.clone(),
        };
        settings
            .check_consistency()
            .map_err(|(key, m)| check.invalid(key, m))?;
        Ok(settings)
    }

    /// Rules that tie several values together. Also called after flags
    /// override the file.
    pub fn check_consistency(&self) -> Result<(), (&'static str, String)> {
        let lock = &self.append.lock;
        if lock.stale_after >= lock.timeout {
            return Err((
                "append.stale_lock",
                format!(
                    "must be shorter than append.lock_timeout ({:?} >= {:?}), or a stale lock \
                     would never be broken before giving up",
                    lock.stale_after, lock.timeout
                ),
            ));
        }
        self.publisher.check_consistency()
    }

    /// The effective configuration, as a file that would produce it.
    pub fn to_toml(&self) -> String {
        let a = &self.append;
        let raw = RawConfig {
            common: RawCommon {
                log: self.log.as_ref().map(|l| l.to_string()),
                node: Some(self.node.to_string()),
                spool_dir: Some(self.spool_dir.clone()),
                key: self.key.clone(),
            },
            append: RawAppend {
                port: Some(a.port.to_string()),
                jail: a.jail.as_ref().map(|j| j.to_string()),
                bantime: a.bantime.map(bantime_text),
                tag: Some(a.tag.to_string()),
                lock_timeout: duration_text(a.lock.timeout),
                stale_lock: duration_text(a.lock.stale_after),
                io_timeout: duration_text(a.io_timeout),
                skip_jails: Some(a.skip_jails.iter().map(|j| j.to_string()).collect()),
            },
            watch: self.watch.to_raw(),
            monitor: self.monitor.to_raw(),
            publisher: self.publisher.to_raw(),
            sftp: sftp::to_raw(&self.sftp),
            zmq: zmq::to_raw(&self.zmq),
            nats: nats::to_raw(&self.nats),
            trust: trust::to_raw(&self.trust),
            backend: self.backend.clone(),
        };
        toml::to_string(&raw).expect("settings always serialize")
    }
}

/// Checks values and names the offending key in errors.
pub(crate) struct Checker<'a> {
    origin: &'a Path,
}

impl Checker<'_> {
    pub(crate) fn invalid(&self, key: &'static str, message: impl Display) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            key,
            message: message.to_string(),
        }
    }

    pub(crate) fn parse<T: FromStr>(&self, key: &'static str, text: &str) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        text.parse().map_err(|e| self.invalid(key, e))
    }

    pub(crate) fn parse_or<T: FromStr>(
        &self,
        key: &'static str,
        text: &Option<String>,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        text.as_deref().map_or(Ok(default), |t| self.parse(key, t))
    }

    pub(crate) fn duration(
        &self,
        key: &'static str,
        value: &Option<DurationText>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        match parse_duration_text(value) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(self.invalid(key, "must be longer than zero")),
            Err(m) => Err(self.invalid(key, m)),
        }
    }

    /// A bantime as the file spells it: seconds, -1, or a duration, at
    /// most ten years.
    pub(crate) fn bantime(
        &self,
        key: &'static str,
        value: &DurationText,
    ) -> Result<BanTime, ConfigError> {
        let text = match value {
            DurationText::Seconds(s) => s.to_string(),
            DurationText::Text(t) => t.clone(),
        };
        parse_bantime(&text).map_err(|m| self.invalid(key, m))
    }
}

fn parse_duration_text(value: &DurationText) -> Result<Duration, String> {
    match value {
        DurationText::Seconds(s) if *s >= 0 => check_duration(Duration::from_secs(*s as u64)),
        DurationText::Seconds(s) => Err(format!("{s} is negative")),
        DurationText::Text(t) => parse_duration(t),
    }
}

/// A duration as the effective config prints it: `250ms`, `30m`.
fn duration_text(d: Duration) -> Option<DurationText> {
    Some(DurationText::Text(
        humantime::format_duration(d).to_string(),
    ))
}

/// A bantime as the effective config prints it: seconds, or -1.
fn bantime_text(b: BanTime) -> DurationText {
    match b {
        BanTime::Seconds(s) => DurationText::Seconds(s as i64),
        BanTime::Permanent => DurationText::Seconds(-1),
    }
}

/// `30`, `250ms`, `30m`, `1h 30m`: a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    check_duration(parse_duration_unbounded(text)?)
}

fn parse_duration_unbounded(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => {
            humantime::parse_duration(text).map_err(|e| format!("bad duration {text:?}: {e}"))
        }
    }
}

/// The longest duration any setting takes; bounding them keeps clock
/// arithmetic (`now + findtime`, `Instant + timeout`) far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(MAX_BANTIME_SECS);

fn check_duration(d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!(
            "{} is longer than the 10-year limit",
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}

/// A bantime as the configuration file spells it: `-1` (permanent),
/// seconds (`600`; `600.5` is rounded up), or a duration with units (`30m`;
/// `1500ms` is rounded up to whole seconds). At least one second, and at
/// most the record format's 10 years: a longer one is refused.
pub fn parse_bantime(text: &str) -> Result<BanTime, String> {
    match bantime_secs(text)? {
        None => Ok(BanTime::Permanent),
        Some(secs) if secs > MAX_BANTIME_SECS => Err(format!(
            "{text} is longer than the 10-year limit (-1 is a permanent ban)"
        )),
        Some(secs) => Ok(BanTime::Seconds(secs)),
    }
}

/// A bantime as given to `banshare ban --bantime`: as [`parse_bantime`],
/// but one over the 10-year limit becomes that limit, and the second value
/// says so (the caller warns). fail2ban passes whatever its
/// `bantime.increment` computed, and its action must not fail over it.
pub fn parse_bantime_clamped(text: &str) -> Result<(BanTime, bool), String> {
    match bantime_secs(text)? {
        None => Ok((BanTime::Permanent, false)),
        Some(secs) if secs > MAX_BANTIME_SECS => Ok((BanTime::Seconds(MAX_BANTIME_SECS), true)),
        Some(secs) => Ok((BanTime::Seconds(secs), false)),
    }
}

/// Whole seconds, rounded up; `None` for `-1` (permanent). Under one
/// second is refused, naming the value as given.
fn bantime_secs(text: &str) -> Result<Option<u64>, String> {
    if text == "-1" {
        return Ok(None);
    }
    let (whole, fraction) = match fractional_seconds(text) {
        Some(parts) => parts,
        None => {
            let d = parse_duration_unbounded(text)?;
            (d.as_secs(), d.subsec_nanos() > 0)
        }
    };
    if whole == 0 {
        return Err(format!(
            "{text} is shorter than a bantime may be: at least 1 second, or -1 for a \
             permanent ban"
        ));
    }
    Ok(Some(whole.saturating_add(u64::from(fraction))))
}

/// `600.0` or `600.5` (fail2ban may print a bantime so): the whole seconds
/// and whether a fraction is left; `None` for anything else.
fn fractional_seconds(text: &str) -> Option<(u64, bool)> {
    let (whole, fraction) = text.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    Some((whole.parse().ok()?, fraction.bytes().any(|b| b != b'0')))
}

/// This host's name, as the default node id.
pub fn default_node() -> Result<NodeId, ConfigError> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    name.parse()
        .map_err(|_| ConfigError::BadHostname(name.to_owned()))
}

/// toml's errors span several lines with a source excerpt; keep the first.
fn one_line(e: &toml::de::Error) -> String {
    let text = e.to_string();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("syntax error").trim();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if first == last {
        first.to_owned()
    } else {
        format!("{first}: {last}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: "t".into(),
            message: one_line(&e),
        })?;
        Settings::from_raw(&raw, Path::new("t"))
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load("[append]\nlock_timout = 3\n").unwrap_err().to_string();
        assert!(err.contains("lock_timout"), "{err}");
    }

    #[test]
    fn bad_value_names_key() {
        let err = load("[append]\nport = \"1:0\"\n").unwrap_err().to_string();
        assert!(err.contains("append.port"), "{err}");
    }

    #[test]
    fn stale_must_be_shorter_than_timeout() {
        let err =
            load("[common]\nnode='n'\n[append]\nlock_timeout = 5\nstale_lock = 5\n").unwrap_err();
        assert!(err.to_string().contains("stale_lock"), "{err}");
    }

    #[test]
    fn bantimes_round_up_and_name_the_value_given() {
        assert_eq!(parse_bantime("600.5"), Ok(BanTime::Seconds(601)));
        assert_eq!(parse_bantime("1500ms"), Ok(BanTime::Seconds(2)));
        assert_eq!(parse_bantime("-1"), Ok(BanTime::Permanent));
        for short in ["500ms", "0", "0.5"] {
            let err = parse_bantime(short).unwrap_err();
            assert!(err.starts_with(short), "{err}");
        }
        assert!(parse_bantime("11y").unwrap_err().contains("11y"));
        assert_eq!(
            parse_bantime_clamped("11y"),
            Ok((BanTime::Seconds(MAX_BANTIME_SECS), true))
        );
        assert_eq!(
            parse_bantime_clamped("30m"),
            Ok((BanTime::Seconds(1800), false))
        );
    }

    #[test]
    #[cfg(feature = "zmq")]
    fn zmq_section_places_the_publishers_other_sockets_and_round_trips() {
        let s = load("[common]\nnode='n'\nlog='zmq+tcp://pub:6000'\n[zmq]\nfeed_port = 7000\ntimeout = '3s'\n")
            .unwrap();
        assert_eq!(s.zmq.feed_port, 7000);
        assert_eq!(
            s.zmq.catch_up_port,
            crate::transport::zmq::wire::CATCH_UP_PORT
        );
        assert_eq!(s.zmq.timeout, Duration::from_secs(3));
        assert_eq!(load(&s.to_toml()).unwrap(), s);
        let err = load("[zmq]\ncatch_up_port = 0\n").unwrap_err().to_string();
        assert!(err.contains("zmq.catch_up_port"), "{err}");
        let key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
        // The key file is read when the section is loaded.
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("node.curve");
        crate::transport::zmq::curve::write_key_pair(&key_file).unwrap();
        let curve = format!(
            "[zmq]\ncurve_server_key = '{key}'\ncurve_key_file = '{}'\n",
            key_file.display()
        );
        let s = load(&curve).unwrap();
        assert_eq!(s.zmq.curve.as_ref().unwrap().server_key, key);
        assert_eq!(load(&s.to_toml()).unwrap(), s);
        let err = load(&format!("[zmq]\ncurve_server_key = '{key}'\n")).unwrap_err();
        assert!(err.to_string().contains("together"), "{err}");
        let err = load(&curve.replace("key = 'rq", "key = 'r q")).unwrap_err();
        assert!(err.to_string().contains("zmq.curve_server_key"), "{err}");
        let err = load("[common]\nlog='zmq+tcp://pub/x'\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no user, path or query"), "{err}");
    }

    #[cfg(feature = "nats")]
    #[test]
    fn nats_section_takes_secret_files_only_their_owner_reads_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("node.nkey");
        std::fs::write(&seed, "SUAEXAMPLE\n").unwrap();
        std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "[common]\nnode='n'\nlog='nats://n1,n2:4333/BANS'\n[nats]\nnkey_seed_file = '{}'\n\
             ca_file = '/etc/banshare/ca.pem'\ntimeout = '3s'\n",
            seed.display()
        );
        let s = load(&text).unwrap();
        assert_eq!(s.nats.nkey_seed_file.as_deref(), Some(seed.as_path()));
        assert_eq!(s.nats.timeout, Duration::from_secs(3));
        assert_eq!(load(&s.to_toml()).unwrap(), s);

        std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("nats.nkey_seed_file"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
        let both = format!(
            "[nats]\nnkey_seed_file = '{0}'\ncredentials_file = '{0}'\n",
            seed.display()
        );
        let err = load(&both).unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
        let err = load("[common]\nlog='nats://host/a.b'\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("stream name"), "{err}");
    }

    #[test]
    fn operators_need_the_trusted_keys_and_valid_ids_and_round_trip() {
        let s =
            load("[common]\nnode='n'\n[trust]\nkeys='/k'\noperators=['ops','sec-2']\n").unwrap();
        let ids: Vec<String> = s.trust.operators.iter().map(ToString::to_string).collect();
        assert_eq!(ids, ["ops", "sec-2"]);
        assert_eq!(load(&s.to_toml()).unwrap(), s);
        for bad in ["operators=['ops']\n", "keys='/k'\noperators=['o ps']\n"] {
            let err = load(&format!("[trust]\n{bad}")).unwrap_err().to_string();
            assert!(err.contains("trust.operators"), "{bad}: {err}");
        }
        let none = load("[common]\nnode='n'\n").unwrap();
        assert!(!none.to_toml().contains("operators"), "left out when empty");
    }

    #[test]
    fn effective_config_round_trips() {
        let s = load("[common]\nnode='n1'\nlog='/x/newbans.log'\n[append]\nbantime='30m'\nlock_timeout='250ms'\nstale_lock='100ms'\n").unwrap();
        let again = load(&s.to_toml()).unwrap();
        assert_eq!(s, again);
        assert_eq!(s.append.bantime, Some(BanTime::Seconds(1800)));
    }

    #[test]
    fn max_bantime_is_checked_and_bounds_the_watchers_default_bantime() {
        let watch = |text: &str| load(&format!("[common]\nnode='n'\n[watch]\n{text}"));
        assert_eq!(watch("").unwrap().watch.max_bantime, DEFAULT_MAX_BANTIME);
        let s = watch("max_bantime = '30days'\nbantime = '2weeks'\n").unwrap();
        assert_eq!(s.watch.max_bantime, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(load(&s.to_toml()).unwrap(), s);
        // Permanent stays a valid default: for trusted signed records.
        assert_eq!(
            watch("bantime = -1\n").unwrap().watch.bantime,
            BanTime::Permanent
        );
        for (text, key) in [
            ("max_bantime = -1\n", "watch.max_bantime"),
            ("max_bantime = '500ms'\n", "watch.max_bantime"),
            ("max_bantime = '11y'\n", "watch.max_bantime"),
            ("bantime = '2weeks'\n", "watch.bantime"),
            ("bantime = '11y'\n", "watch.bantime"),
        ] {
            let err = watch(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
