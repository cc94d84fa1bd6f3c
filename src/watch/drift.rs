//! Firewall drift: banshare's table or sets removed from under a running
//! watcher (`nft flush ruleset`, another tool deleting `table inet
//! banshare`, `ipset destroy`), or missing at start after a reboot that
//! kept the watcher's state. The policy still counts those bans as active,
//! so without this the node would be unprotected while `status` says
//! otherwise, and reports of the same bans would be skipped as duplicates.
//!
//! [`FirewallGuard`] asks the backend ([`Backend::is_intact`], one cheap
//! call) at start and on every safety poll; when the objects are gone, it
//! sets them up again and applies every ban still in force, each with its
//! remaining time, and says so in the log.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::policy::Policy;
use crate::backend::{Action, Backend, Ban};
use crate::record::{PortSpec, Target};
use log::{error, warn};

/// When to check the backend's objects, and whether they still need
/// restoring.
#[derive(Debug)]
pub struct FirewallGuard {
    every: Duration,
    last: Instant,
    /// Found missing, and not yet restored with every active ban.
    lost: bool,
    /// The last check could not run; said once, not every safety poll.
    check_failing: bool,
}

impl FirewallGuard {
    pub fn new(every: Duration) -> FirewallGuard {
        FirewallGuard {
            every,
            last: Instant::now(),
            lost: false,
            check_failing: false,
        }
    }

    /// The objects were missing before the watcher's first `setup` (a
    /// reboot, or a flush while it was stopped): the saved active bans need
    /// applying again, at the first housekeeping.
    pub fn missing_at_start(&mut self, backend: &dyn Backend, policy: &Policy) {
        self.lost = true;
        let saved = bans_in_force(policy, Utc::now()).len();
        if saved > 0 {
            warn!(
                "the {} backend's firewall objects were not there at start (a reboot?): \
                 applying the {saved} saved active bans again",
                backend.name()
            );
        }
    }

    /// Checks once every safety poll, restores what is missing, and
    /// returns how many backend calls failed (for the status's count).
    pub fn poll(&mut self, backend: &mut dyn Backend, policy: &Policy) -> u64 {
        if !self.lost && self.last.elapsed() < self.every {
            return 0;
        }
        self.check(backend, policy)
    }

    /// Checks now (a batch just failed: the table may be what is missing)
    /// and restores what is missing.
    pub fn check(&mut self, backend: &mut dyn Backend, policy: &Policy) -> u64 {
        self.last = Instant::now();
        if !self.lost {
            let intact = backend.is_intact();
            let failing = intact.is_err();
            if failing && self.check_failing {
                return 1;
            }
            self.check_failing = failing;
            match intact {
                Ok(true) => return 0,
                Ok(false) => {
                    self.lost = true;
                    warn!(
                        "the {} backend's firewall objects are gone (nft flush ruleset, \
                         ipset destroy, another tool?): setting them up again",
                        backend.name()
                    );
                }
                Err(e) => {
                    warn!(
                        "cannot check the {} backend's firewall objects: {e} \
                         (said once until a check succeeds)",
                        backend.name()
                    );
                    return 1;
                }
            }
        }
        self.restore(backend, policy)
    }

    /// Sets the backend up and applies the bans in force. Stays `lost` when
    /// `setup` fails, so the next safety poll tries again. A failed apply
    /// is reported once and not retried: `apply` is best effort and names
    /// what it could not apply (a refused network would fail every retry).
    fn restore(&mut self, backend: &mut dyn Backend, policy: &Policy) -> u64 {
        if let Err(e) = backend.setup() {
            error!(
                "setting the {} backend up again failed: {e}; retrying at the next safety poll",
                backend.name()
            );
            return 1;
        }
        self.lost = false;
        let bans = bans_in_force(policy, Utc::now());
        if bans.is_empty() {
            return 0;
        }
        if let Err(e) = backend.apply(&bans) {
            error!(
                "re-applying {} active bans to the {} backend failed in part: {e}",
                bans.len(),
                backend.name()
            );
            return 1;
        }
        warn!(
            "re-applied {} active bans to the {} backend, each with its remaining time",
            bans.len(),
            backend.name()
        );
        0
    }
}

/// Every ban of the policy still in force at `now`, as an action that
/// applies it for the time it has left; not those the policy would refuse
/// now (see [`Policy::refuses`]).
pub fn bans_in_force(policy: &Policy, now: DateTime<Utc>) -> Vec<Action> {
    policy
        .active_bans()
        .filter(|(net, _)| policy.refuses(*net).is_none())
        .filter_map(|(net, ban)| {
            let remaining = match ban.until {
                None => None,
                Some(until) if until > now => Some((until - now).to_std().ok()?),
                Some(_) => return None,
            };
            Some(Action::Ban(Ban {
                target: target_of(net),
                ports: PortSpec::all(),
                jail: ban.jail,
                remaining,
                origin: None,
                ts: Some(ban.since),
            }))
        })
        .collect()
}

/// A single address for a host network (`192.0.2.1/32`), as records and
/// logs write it.
fn target_of(net: IpNet) -> Target {
    if net.prefix_len() == net.max_prefix_len() {
        Target::Addr(net.addr())
    } else {
        Target::Net(net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendError;
    use crate::watch::policy::{ActiveBan, PolicySettings};

    #[test]
    fn bans_in_force_keep_their_remaining_time_and_skip_expired_ones() {
        // Whole seconds: the policy keeps times in milliseconds.
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut policy = Policy::new(PolicySettings::defaults("me".parse().unwrap()));
        let ban = |until: Option<DateTime<Utc>>| ActiveBan {
            until,
            jail: None,
            since: now - chrono::Duration::seconds(10),
            node: None,
        };
        policy.restore_active(
            "192.0.2.1/32".parse().unwrap(),
            ban(Some(now + chrono::Duration::seconds(600))),
        );
        policy.restore_active("198.51.100.0/24".parse().unwrap(), ban(None));
        policy.restore_active(
            "192.0.2.2/32".parse().unwrap(),
            ban(Some(now - chrono::Duration::seconds(1))),
        );
        let mut actions: Vec<String> = bans_in_force(&policy, now)
            .iter()
            .map(|a| match a {
                Action::Ban(b) => format!("{} {:?}", b.target, b.remaining.map(|r| r.as_secs())),
                Action::Unban(_) => unreachable!(),
            })
            .collect();
        actions.sort();
        assert_eq!(actions, ["192.0.2.1 Some(600)", "198.51.100.0/24 None"]);
    }

    #[test]
    fn bans_in_force_leave_out_what_the_policy_now_refuses() {
        // Saved before an upgrade or a change of ignoreip or of the file
        // server: re-applying them after a reboot would cut the node off
        // from its log again (the file server) or ban what the admin
        // exempted since.
        let now = Utc::now();
        let mut policy = Policy::new(PolicySettings {
            ignoreip: vec!["203.0.113.0/24".parse().unwrap()],
            ..PolicySettings::defaults("me".parse().unwrap())
        });
        policy.set_transport_addresses(["198.18.0.1".parse().unwrap()]);
        let ban = ActiveBan {
            until: Some(now + chrono::Duration::seconds(600)),
            jail: None,
            since: now,
            node: None,
        };
        for net in [
            "198.18.0.1/32",
            "198.18.0.0/29",
            "203.0.113.7/32",
            "192.0.2.1/32",
        ] {
            policy.restore_active(net.parse().unwrap(), ban.clone());
        }
        let targets: Vec<String> = bans_in_force(&policy, now)
            .iter()
            .map(|a| match a {
                Action::Ban(b) => b.target.to_string(),
                Action::Unban(_) => unreachable!(),
            })
            .collect();
        assert_eq!(targets, ["192.0.2.1"]);
    }

    /// A backend whose objects come and go as the test says.
    #[derive(Default)]
    struct Fake {
        intact: bool,
        setup_fails: bool,
        setups: usize,
        applied: Vec<Action>,
    }

    impl Backend for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn setup(&mut self) -> Result<(), BackendError> {
            self.setups += 1;
            if self.setup_fails {
                return Err(BackendError::Config("no".into()));
            }
            self.intact = true;
            Ok(())
        }
        fn apply(&mut self, batch: &[Action]) -> Result<(), BackendError> {
            self.applied.extend_from_slice(batch);
            Ok(())
        }
        fn cleanup(&mut self) -> Result<(), BackendError> {
            Ok(())
        }
        fn is_intact(&mut self) -> Result<bool, BackendError> {
            Ok(self.intact)
        }
    }

    #[test]
    fn guard_restores_once_per_loss_and_retries_a_failed_setup() {
        let mut policy = Policy::new(PolicySettings::defaults("me".parse().unwrap()));
        policy.restore_active(
            "192.0.2.1/32".parse().unwrap(),
            ActiveBan {
                until: Some(Utc::now() + chrono::Duration::seconds(600)),
                jail: None,
                since: Utc::now(),
                node: None,
            },
        );
        let mut backend = Fake {
            intact: true,
            ..Fake::default()
        };
        let mut guard = FirewallGuard::new(Duration::ZERO);
        assert_eq!(guard.poll(&mut backend, &policy), 0);
        assert_eq!((backend.setups, backend.applied.len()), (0, 0));

        backend.intact = false;
        backend.setup_fails = true;
        assert_eq!(guard.poll(&mut backend, &policy), 1);
        assert_eq!(guard.poll(&mut backend, &policy), 1, "tried again");
        assert_eq!((backend.setups, backend.applied.len()), (2, 0));

        backend.setup_fails = false;
        assert_eq!(guard.poll(&mut backend, &policy), 0);
        assert_eq!((backend.setups, backend.applied.len()), (3, 1));
        assert_eq!(guard.poll(&mut backend, &policy), 0);
        assert_eq!(
            (backend.setups, backend.applied.len()),
            (3, 1),
            "restored once"
        );

        // Not yet time for the next safety poll: no call at all.
        let mut slow = FirewallGuard::new(Duration::from_secs(3600));
        backend.intact = false;
        assert_eq!(slow.poll(&mut backend, &policy), 0);
        assert_eq!(backend.setups, 3);
    }
}
