//! Actions for the backends' tests, shared by their unit tests (as
//! `backend::testing`) and by `tests/backends.rs`, which includes this file
//! with `#[path]`. The including module brings `Action`, `Ban`, `Unban`,
//! `PortSpec` and `Duration` into scope.

use super::{Action, Ban, Duration, PortSpec, Unban};

/// A ban of `target` on every port, for `secs` (`None`: for good).
pub fn ban(target: &str, secs: Option<u64>) -> Action {
    Action::Ban(Ban {
        target: target.parse().unwrap(),
        ports: PortSpec::all(),
        jail: None,
        remaining: secs.map(Duration::from_secs),
        origin: None,
        ts: None,
    })
}

/// An unban of `target` on every port.
pub fn unban(target: &str) -> Action {
    Action::Unban(Unban {
        target: target.parse().unwrap(),
        ports: PortSpec::all(),
        jail: None,
        origin: None,
        ts: None,
    })
}

/// `action` from `jail`, on `port`.
#[allow(dead_code)] // not every includer uses it
pub fn with_jail_port(action: Action, jail: &str, port: &str) -> Action {
    match action {
        Action::Ban(b) => Action::Ban(Ban {
            jail: Some(jail.parse().unwrap()),
            ports: port.parse().unwrap(),
            ..b
        }),
        Action::Unban(u) => Action::Unban(Unban {
            jail: Some(jail.parse().unwrap()),
            ports: port.parse().unwrap(),
            ..u
        }),
    }
}
