//! The `[watch]` section: how the watcher follows the log and its policy.

use crate::follow::FollowKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Checker, ConfigError, DurationText, duration_text};
use crate::backend::BackendKind;
use crate::record::BanTime;

/// Where the watcher keeps its cursor and status.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/banshare/watch";
/// The shortest poll_interval: shorter would spend a core re-reading an
/// idle log (0 would never sleep at all) for no gain in speed.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// `watch.poll_interval` when not configured. A poll where nothing changed
/// asks the log's size alone (one SFTP request through sshfs; the full
/// look, about a dozen, comes when the size changed or every
/// `safety_poll`), so polling every 50 ms costs the file server about half
/// of what the full look every 250 ms cost before, and a ban reaches every
/// node within about 0.1 s. See docs/watch.md, *Polling*.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// `watch.max_bantime` when not configured: a week, the longest bantime of
/// fail2ban's own example jails (recidive's).
pub const DEFAULT_MAX_BANTIME: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_poll: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_interval: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bantime: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bantime: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignoreip: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignoreself: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_nodes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findtime: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prefix_v4: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prefix_v6: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen_any: Option<bool>,
}

/// The checked `[watch]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSettings {
    /// `None` until given; `banshare watch` requires it.
    pub backend: Option<String>,
    pub state_dir: PathBuf,
    pub follow: FollowKind,
    pub poll_interval: Duration,
    pub safety_poll: Duration,
    pub flush_interval: Duration,
    pub batch_max: usize,
    pub bantime: BanTime,
    /// The longest ban applied, cluster-wide (see `docs/watch.md`).
    pub max_bantime: Duration,
    pub ignoreip: Vec<IpNet>,
    pub ignoreself: bool,
    pub min_nodes: usize,
    pub findtime: Duration,
    pub max_prefix_v4: u8,
    pub max_prefix_v6: u8,
    /// Where the metrics for Prometheus are written, if anywhere (see
    /// `docs/operations.md`).
    pub metrics_file: Option<PathBuf>,
    /// Where to serve the metrics over HTTP, if anywhere: loopback only,
    /// unless `metrics_listen_any`.
    pub metrics_listen: Option<SocketAddr>,
    /// Allows `metrics_listen` on an address other hosts reach.
    pub metrics_listen_any: bool,
}

impl WatchSettings {
    pub(super) fn check(raw: &RawWatch, check: &Checker) -> Result<WatchSettings, ConfigError> {
        let settings = WatchSettings {
            backend: raw
                .backend
                .as_deref()
                .map(|b| {
                    check
                        .parse::<BackendKind>("watch.backend", b)
                        .map(|_| b.to_owned())
                })
                .transpose()?,
            state_dir: raw
                .state_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            follow: check.parse_or("watch.follow", &raw.follow, FollowKind::Auto)?,
            poll_interval: check.duration(
                "watch.poll_interval",
                &raw.poll_interval,
                DEFAULT_POLL_INTERVAL,
            )?,
            safety_poll: check.duration(
                "watch.safety_poll",
                &raw.safety_poll,
                Duration::from_secs(5),
            )?,
            flush_interval: check.duration(
                "watch.flush_interval",
                &raw.flush_interval,
                Duration::from_secs(5),
            )?,
            batch_max: raw.batch_max.unwrap_or(10_000),
            bantime: match &raw.bantime {
                Some(b) => watch_bantime(b, check)?,
                None => BanTime::Seconds(1800),
            },
            max_bantime: check.duration(
                "watch.max_bantime",
                &raw.max_bantime,
                DEFAULT_MAX_BANTIME,
            )?,
            ignoreip: raw
                .ignoreip
                .iter()
                .flatten()
                .map(|t| parse_net(t).map_err(|m| check.invalid("watch.ignoreip", m)))
                .collect::<Result<_, _>>()?,
            ignoreself: raw.ignoreself.unwrap_or(true),
            min_nodes: raw.min_nodes.unwrap_or(1),
            findtime: check.duration("watch.findtime", &raw.findtime, Duration::from_secs(600))?,
            max_prefix_v4: raw.max_prefix_v4.unwrap_or(16),
            max_prefix_v6: raw.max_prefix_v6.unwrap_or(48),
            metrics_file: raw.metrics_file.clone(),
            metrics_listen: raw
                .metrics_listen
                .as_deref()
                .map(|a| check.parse::<SocketAddr>("watch.metrics_listen", a))
                .transpose()?,
            metrics_listen_any: raw.metrics_listen_any.unwrap_or(false),
        };
        settings
            .check_ranges()
            .map_err(|(key, m)| check.invalid(key, m))?;
        Ok(settings)
    }

    fn check_ranges(&self) -> Result<(), (&'static str, String)> {
        // A zero interval would make the loop (or the flusher) spin.
        for (key, interval) in [
            ("watch.poll_interval", self.poll_interval),
            ("watch.safety_poll", self.safety_poll),
            ("watch.flush_interval", self.flush_interval),
        ] {
            if interval < MIN_POLL_INTERVAL {
                return Err((key, poll_interval_too_short()));
            }
        }
        if self.batch_max == 0 {
            return Err(("watch.batch_max", "must be at least 1".into()));
        }
        if self.min_nodes == 0 {
            return Err(("watch.min_nodes", "must be at least 1".into()));
        }
        if self.max_bantime < Duration::from_secs(1) {
            return Err(("watch.max_bantime", "must be at least 1s".into()));
        }
        // Permanent (-1) stays allowed: it is the default for signed
        // records of trusted nodes that carry no bantime; other records
        // get max_bantime instead.
        if let BanTime::Seconds(secs) = self.bantime
            && secs > self.max_bantime.as_secs()
        {
            return Err((
                "watch.bantime",
                format!(
                    "{} is longer than watch.max_bantime ({}); raise max_bantime on every node if you mean it",
                    humantime::format_duration(Duration::from_secs(secs)),
                    humantime::format_duration(self.max_bantime)
                ),
            ));
        }
        if self.max_prefix_v4 > 32 {
            return Err(("watch.max_prefix_v4", "must be 0 to 32".into()));
        }
        if self.max_prefix_v6 > 128 {
            return Err(("watch.max_prefix_v6", "must be 0 to 128".into()));
        }
        if let Some(addr) = self.metrics_listen {
            check_metrics_listen(addr, self.metrics_listen_any)
                .map_err(|m| ("watch.metrics_listen", m))?;
        }
        Ok(())
    }

    pub(super) fn to_raw(&self) -> RawWatch {
        RawWatch {
            backend: self.backend.clone(),
            state_dir: Some(self.state_dir.clone()),
            follow: Some(self.follow.to_string()),
            poll_interval: duration_text(self.poll_interval),
            safety_poll: duration_text(self.safety_poll),
            flush_interval: duration_text(self.flush_interval),
            batch_max: Some(self.batch_max),
            bantime: Some(super::bantime_text(self.bantime)),
            max_bantime: duration_text(self.max_bantime),
            ignoreip: Some(self.ignoreip.iter().map(|n| n.to_string()).collect()),
            ignoreself: Some(self.ignoreself),
            min_nodes: Some(self.min_nodes),
            findtime: duration_text(self.findtime),
            max_prefix_v4: Some(self.max_prefix_v4),
            max_prefix_v6: Some(self.max_prefix_v6),
            metrics_file: self.metrics_file.clone(),
            metrics_listen: self.metrics_listen.map(|a| a.to_string()),
            metrics_listen_any: Some(self.metrics_listen_any),
        }
    }
}

/// `watch.bantime`. A duration longer than ten years reads as permanent on
/// the command line; here it is refused as longer than `max_bantime`, since
/// a permanent default is for trusted signed records only and must be asked
/// for as `-1`.
fn watch_bantime(value: &DurationText, check: &Checker) -> Result<BanTime, ConfigError> {
    let bantime = check.bantime("watch.bantime", value)?;
    let asked_permanent = match value {
        DurationText::Seconds(s) => *s == -1,
        DurationText::Text(t) => t == "-1",
    };
    if bantime == BanTime::Permanent && !asked_permanent {
        return Err(check.invalid(
            "watch.bantime",
            "longer than ten years, and so than watch.max_bantime; -1 asks for permanent",
        ));
    }
    Ok(bantime)
}

/// An address (`192.0.2.7`, as a /32) or a network (`10.0.0.0/8`).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not an address or network"))
}

/// Refuses to serve the metrics on an address other than loopback unless
/// `any` allows it: they tell which bans this host applies and which
/// nodes it hears, and the endpoint has no authentication.
pub fn check_metrics_listen(addr: SocketAddr, any: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || any {
        return Ok(());
    }
    Err(format!(
        "{addr} is not a loopback address: the metrics endpoint has no authentication; \
         use 127.0.0.1 or ::1, or set metrics_listen_any = true (--metrics-listen-any) \
         if a firewall guards it"
    ))
}

/// Checks a poll interval given on the command line.
pub fn check_poll_interval(interval: Duration) -> Result<Duration, String> {
    if interval < MIN_POLL_INTERVAL {
        return Err(poll_interval_too_short());
    }
    Ok(interval)
}

fn poll_interval_too_short() -> String {
    format!(
        "must be at least {} (polling more often only burns CPU)",
        humantime::format_duration(MIN_POLL_INTERVAL)
    )
}
