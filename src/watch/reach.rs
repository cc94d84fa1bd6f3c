//! Keeps the addresses this node reaches the shared log through (see
//! [`crate::transport::endpoint`]) up to date, so that the policy never
//! bans them: looked up at start, on reload, whenever the transport
//! reconnects, and again as the mount or DNS may change.
//!
//! A mount has no reconnect event, so every `check_every` (the safety
//! poll) the log's mount source is read again, which costs one read of
//! `/proc/self/mountinfo`; names and routes are looked up again when it
//! changed, and at least every [`RESOLVE_EVERY`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::transport::LogLocation;
use crate::transport::endpoint::{self, Endpoints};
use log::warn;

/// How often names and routes are looked up again when nothing else says
/// they may have changed.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(60);

/// What [`Reach::refresh`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh<'a> {
    /// Not due: nothing looked up.
    NotDue,
    /// Looked up again; the addresses are the same.
    Same,
    /// The addresses changed to these.
    Changed(&'a Endpoints),
}

/// The transport's endpoints and when to look them up again.
pub struct Reach {
    location: LogLocation,
    /// The transport's connection count (SFTP), and the last one seen.
    connections: Option<Arc<AtomicU64>>,
    seen_connections: u64,
    check_every: Duration,
    next_check: Option<Instant>,
    next_resolve: Option<Instant>,
    hosts: Vec<String>,
    endpoints: Endpoints,
    /// What went wrong at the last lookup, said once until it changes.
    problems: Vec<String>,
}

impl Reach {
    /// For the log at `location`, checking its mount every `check_every`.
    pub fn new(location: LogLocation, check_every: Duration) -> Reach {
        Reach {
            location,
            connections: None,
            seen_connections: 0,
            check_every,
            next_check: None,
            next_resolve: None,
            hosts: Vec::new(),
            endpoints: Endpoints::default(),
            problems: Vec::new(),
        }
    }

    /// Looks up again whenever `connections` (the transport's count of
    /// connections made) changes.
    pub fn on_reconnect(mut self, connections: Arc<AtomicU64>) -> Reach {
        self.connections = Some(connections);
        self
    }

    pub fn location(&self) -> &LogLocation {
        &self.location
    }

    /// Looks the endpoints up again if due, or now if `force`.
    pub fn refresh(&mut self, force: bool) -> Refresh<'_> {
        let now = Instant::now();
        let connections = self
            .connections
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed));
        let reconnected = connections != self.seen_connections;
        let due = |at: Option<Instant>| at.is_none_or(|at| now >= at);
        if !force && !reconnected && !due(self.next_check) {
            return Refresh::NotDue;
        }
        self.seen_connections = connections;
        self.next_check = Some(now + self.check_every);
        let (hosts, mut problems) = match endpoint::server_hosts(&self.location) {
            Ok(hosts) => (hosts, Vec::new()),
            // Keep protecting the last hosts known.
            Err(e) => (self.hosts.clone(), vec![e.to_string()]),
        };
        if !force && !reconnected && hosts == self.hosts && !due(self.next_resolve) {
            return Refresh::Same;
        }
        self.next_resolve = Some(now + RESOLVE_EVERY);
        let (mut found, errors) = endpoint::discover(&hosts);
        problems.extend(errors.iter().map(ToString::to_string));
        if hosts == self.hosts && !errors.is_empty() {
            // A name that does not resolve for a moment keeps its last
            // addresses: a DNS outage must not lift the protection.
            keep_previous(&mut found, &self.endpoints);
        }
        self.hosts = hosts;
        self.say_problems(problems);
        if found == self.endpoints {
            return Refresh::Same;
        }
        self.endpoints = found;
        Refresh::Changed(&self.endpoints)
    }

    fn say_problems(&mut self, problems: Vec<String>) {
        if problems != self.problems {
            for problem in &problems {
                warn!("{}", problem);
            }
        }
        self.problems = problems;
    }
}

/// Adds the addresses of `previous` that `found` lacks.
fn keep_previous(found: &mut Endpoints, previous: &Endpoints) {
    for (now, before) in [
        (&mut found.servers, &previous.servers),
        (&mut found.next_hops, &previous.next_hops),
    ] {
        for address in before {
            if !now.contains(address) {
                now.push(*address);
            }
        }
        now.sort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record;
    use crate::watch::policy::{Policy, PolicySettings, Skip};

    #[cfg(feature = "sftp")]
    #[test]
    fn an_sftp_host_is_protected_from_start_and_looked_up_again_on_reconnect() {
        let location = LogLocation::parse("sftp://banshare@127.0.0.1/share/newbans.log").unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let mut reach =
            Reach::new(location, Duration::from_secs(3600)).on_reconnect(Arc::clone(&connections));
        let expected = Endpoints {
            servers: vec!["127.0.0.1".parse().unwrap()],
            next_hops: Vec::new(),
        };
        assert_eq!(reach.refresh(false), Refresh::Changed(&expected));
        assert_eq!(reach.refresh(false), Refresh::NotDue);
        connections.fetch_add(1, Ordering::Relaxed);
        assert_eq!(reach.refresh(false), Refresh::Same);
        assert_eq!(reach.refresh(false), Refresh::NotDue);
        assert_eq!(reach.refresh(true), Refresh::Same, "reload");
    }

    #[test]
    fn a_name_that_stops_resolving_keeps_its_last_addresses() {
        let mut found = Endpoints::default();
        let previous = Endpoints {
            servers: vec!["198.18.0.1".parse().unwrap()],
            next_hops: vec!["198.18.0.12".parse().unwrap()],
        };
        keep_previous(&mut found, &previous);
        assert_eq!(found, previous);
    }

    #[test]
    fn the_policy_refuses_the_transport_addresses_and_networks_holding_them() {
        let mut settings = PolicySettings::defaults("me".parse().unwrap());
        // Not this host's own addresses: the rule holds without ignoreself.
        settings.ignoreself = false;
        let mut policy = Policy::new(settings);
        let endpoints = Endpoints {
            servers: vec![
                "198.18.0.1".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ],
            next_hops: vec!["198.18.0.12".parse().unwrap()],
        };
        policy.set_transport_addresses(endpoints.addresses());
        let now = chrono::Utc::now();
        let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut decide = |target: &str| {
            let text = format!(
                "<13>Nov 21 18:00:00 banshare[1]: HOST {target} PORT 22 node=other ts={ts} bantime=600"
            );
            policy.decide(&record::parse(text.as_bytes()).unwrap(), now)
        };
        for target in [
            "198.18.0.1",
            "::ffff:198.18.0.1",
            "198.18.0.0/24",
            "198.18.0.0/29",
            "198.18.0.12",
            "2001:db8::1",
            "2001:db8::/64",
        ] {
            assert_eq!(decide(target), Err(Skip::TransportAddress), "{target}");
        }
        for target in ["198.18.0.250", "198.18.0.16/29", "2001:db8:1::1"] {
            assert!(decide(target).is_ok(), "{target}");
        }
    }
}
