//! The nftables backend: banshare's own table, timeout sets and drop rules.
//!
//! [`NftablesBackend::setup`] creates, in one `nft -f -` transaction and
//! idempotently (a restart neither duplicates rules nor loses bans):
//!
//! ```text
//! table inet banshare {
//!     set intact { type ipv4_addr; }   # always empty: see below
//!     set v4    { type ipv4_addr; flags timeout; }
//!     set v6    { type ipv6_addr; flags timeout; }
//!     set v4net { type ipv4_addr; flags interval,timeout; }
//!     set v6net { type ipv6_addr; flags interval,timeout; }
//!     chain input {
//!         type filter hook input priority filter - 10; policy accept;
//!         ip saddr @v4 counter drop
//!         ip saddr @v4net counter drop
//!         ip6 saddr @v6 counter drop
//!         ip6 saddr @v6net counter drop
//!     }
//!     # with `forward = true`, the same four rules in
//!     # chain forward { type filter hook forward priority filter - 10; policy accept; }
//! }
//! ```
//!
//! A ban drops **every packet from the address, on every port** (the
//! record's port spec is not used), including packets of connections that
//! were already established. Only the `input` hook is on by default: that is
//! the host itself, as fail2ban's own nftables actions do. Set `forward =
//! true` on routers and container hosts (Docker's published ports are
//! forwarded, not input); switching it off again removes the chain.
//!
//! Single addresses go into the hash sets `v4` and `v6`, networks into the
//! interval sets `v4net` and `v6net`: interval sets are slow once large
//! (deleting 1,000 entries from a 100k one took 84 s), so keep networks few.
//! Each element carries its own timeout and the kernel expires it; a
//! permanent ban is an element without one.
//!
//! [`apply`](NftablesBackend::apply) reduces the batch to the last action per
//! address and writes one transaction for all single addresses (100,000 bans
//! take a fraction of a second). It first assumes that the addresses it bans
//! are not in the sets yet, which is what a watcher applying new records
//! nearly always meets, and bans each with one statement:
//!
//! ```text
//! add element inet banshare v4 { c }                     # the unbans: add, so that
//! delete element inet banshare v4 { c }                  # the delete cannot fail
//! create element inet banshare v4 { a timeout 30m, b }   # the bans, in one statement
//! ```
//!
//! `create` refuses an element that is there already (a re-ban, a set that
//! outlived a restart, an element someone else added), and then the whole
//! transaction changes nothing. banshare then writes the transaction that
//! is right whatever the state before, three statements per set:
//!
//! ```text
//! add element inet banshare v4 { a, b, c }               # every address in the batch
//! delete element inet banshare v4 { a, b, c }            # so that none is left
//! add element inet banshare v4 { a timeout 30m, b }      # the bans, with their new timeouts
//! ```
//!
//! nft 1.0.6 has no `destroy`, and `delete` of a missing element fails the
//! whole transaction, hence the first `add`. `add` of an existing element
//! keeps its old timeout on older kernels (Debian 12's 6.1), and never
//! removes one, hence delete and add again. A batch that finds an element
//! in place so costs one refused transaction more; the kernel does three
//! times less work for a batch of new bans, which is most of the time nft
//! takes for a large one.
//!
//! Networks go in a transaction of their own, after that one. An interval set
//! refuses a network that overlaps a different one already in it (a /16
//! inside a banned /8); when the transaction fails, banshare splits it in
//! halves until it has applied every network it can, and reports the ones
//! refused. An unban refused that way is a success: the network cannot be
//! in the set.
//!
//! `cleanup` deletes the whole table, bans included.
//!
//! [`is_intact`](NftablesBackend::is_intact) runs `nft list set inet
//! banshare intact`: it fails once the table is gone (`nft flush ruleset`,
//! `nft delete table`, a reboot). The set is always empty, because any nft
//! call that reads a large interval set costs about half a second (even
//! `nft list tables` does, measured with 50,000 networks in `v4net`),
//! while listing one small set reads nothing else.

use serde::{Deserialize, Serialize};

use super::exec::{Exec, Finished};
use super::{Action, Backend, BackendError, FwOp, FwTarget, last_per_target, short};

/// Settings for [`NftablesBackend`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NftablesSettings {
    /// The `nft` program: found on `PATH` unless absolute.
    pub nft: String,
    /// The table, in family `inet`.
    pub table: String,
    /// Also drop banned sources in a `forward` hook chain.
    pub forward: bool,
}

impl Default for NftablesSettings {
    fn default() -> NftablesSettings {
        NftablesSettings {
            nft: "nft".into(),
            table: "banshare".into(),
            forward: false,
        }
    }
}

/// An always empty set: while it is there, so is the table `setup` made.
const INTACT_SET: &str = "intact";

/// The sets, in the order the scripts treat them.
const SETS: [&str; 4] = ["v4", "v6", "v4net", "v6net"];

/// What an elements script may take as known about the elements it bans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prior {
    /// Each may be there already, with any timeout or none.
    Unknown,
    /// None is there yet.
    Absent,
}

fn set_of(target: &FwTarget) -> &'static str {
    match target {
        FwTarget::V4(_) => "v4",
        FwTarget::V6(_) => "v6",
        FwTarget::V4Net(_) => "v4net",
        FwTarget::V6Net(_) => "v6net",
    }
}

pub struct NftablesBackend {
    settings: NftablesSettings,
    exec: Exec,
}

impl NftablesBackend {
    pub fn new(settings: NftablesSettings, exec: Exec) -> Result<NftablesBackend, BackendError> {
        if !valid_table_name(&settings.table) {
            return Err(BackendError::Config(format!(
                "nftables table name {:?}: use 1 to 32 letters, digits and '_', starting with a letter",
                short(&settings.table)
            )));
        }
        if settings.nft.is_empty() {
            return Err(BackendError::Config(
                "nftables: the nft program is empty".into(),
            ));
        }
        Ok(NftablesBackend { settings, exec })
    }

    /// The `setup` transaction.
    pub fn setup_script(&self) -> String {
        let t = &self.settings.table;
        let mut s = format!("add table inet {t}\n");
        s += &format!("add set inet {t} {INTACT_SET} {{ type ipv4_addr; }}\n");
        s += &format!("add set inet {t} v4 {{ type ipv4_addr; flags timeout; }}\n");
        s += &format!("add set inet {t} v6 {{ type ipv6_addr; flags timeout; }}\n");
        s += &format!("add set inet {t} v4net {{ type ipv4_addr; flags interval, timeout; }}\n");
        s += &format!("add set inet {t} v6net {{ type ipv6_addr; flags interval, timeout; }}\n");
        for (chain, wanted) in [("input", true), ("forward", self.settings.forward)] {
            // Add (a no-op if it exists) and flush, so that the rules below
            // are the chain's only ones however often setup runs.
            s += &format!(
                "add chain inet {t} {chain} {{ type filter hook {chain} priority filter - 10; policy accept; }}\n"
            );
            s += &format!("flush chain inet {t} {chain}\n");
            if wanted {
                for (family, set) in [
                    ("ip", "v4"),
                    ("ip", "v4net"),
                    ("ip6", "v6"),
                    ("ip6", "v6net"),
                ] {
                    s += &format!("add rule inet {t} {chain} {family} saddr @{set} counter drop\n");
                }
            } else {
                s += &format!("delete chain inet {t} {chain}\n");
            }
        }
        s
    }

    /// The `cleanup` transaction: the `add` makes the `delete` succeed when
    /// the table is already gone.
    pub fn cleanup_script(&self) -> String {
        let t = &self.settings.table;
        format!("add table inet {t}\ndelete table inet {t}\n")
    }

    /// One transaction that leaves each element in the state its operation
    /// asks for: whatever the state before with [`Prior::Unknown`]; with
    /// [`Prior::Absent`], only if no banned element is in its set yet, and
    /// otherwise nft refuses the whole transaction. Each target appears at
    /// most once.
    pub(crate) fn elements_script(&self, elems: &[(FwTarget, FwOp)], prior: Prior) -> String {
        let t = &self.settings.table;
        let mut s = String::with_capacity(elems.len() * 64);
        for set in SETS {
            let mine: Vec<&(FwTarget, FwOp)> =
                elems.iter().filter(|(t, _)| set_of(t) == set).collect();
            if mine.is_empty() {
                continue;
            }
            let mut statement = |verb: &str, items: &mut dyn Iterator<Item = String>| {
                s += &format!("{verb} element inet {t} {set} {{\n");
                let mut first = true;
                for item in items {
                    if !first {
                        s += ",\n";
                    }
                    first = false;
                    s += &item;
                }
                s += "\n}\n";
            };
            // The elements that must first be made present, then removed.
            let cleared: Vec<&&(FwTarget, FwOp)> = mine
                .iter()
                .filter(|(_, op)| prior == Prior::Unknown || *op == FwOp::Unban)
                .collect();
            if !cleared.is_empty() {
                statement("add", &mut cleared.iter().map(|(t, _)| t.to_string()));
                statement("delete", &mut cleared.iter().map(|(t, _)| t.to_string()));
            }
            let mut bans = mine.iter().filter_map(|(t, op)| match op {
                FwOp::Ban(None) => Some(t.to_string()),
                FwOp::Ban(Some(secs)) => Some(format!("{t} timeout {}", nft_duration(*secs))),
                FwOp::Unban => None,
            });
            if mine.iter().any(|(_, op)| matches!(op, FwOp::Ban(_))) {
                let verb = match prior {
                    Prior::Unknown => "add",
                    Prior::Absent => "create",
                };
                statement(verb, &mut bans);
            }
        }
        s
    }

    /// Applies single addresses: in one statement per set if none of the
    /// banned ones is there yet, else (nft refused that) in the transaction
    /// that is right whatever was there.
    fn apply_hosts(&self, elems: &[(FwTarget, FwOp)]) -> Result<(), BackendError> {
        if elems.iter().any(|(_, op)| matches!(op, FwOp::Ban(_))) {
            let script = self.elements_script(elems, Prior::Absent);
            let Finished { status, output } = self
                .exec
                .run_status(&self.nft_argv(), Some(script.as_bytes()))?;
            if status.success() {
                return Ok(());
            }
            // Nothing was changed. Any other cause (a missing table) fails
            // the next transaction too, which then says so.
            log::debug!(
                "nft refused {} element(s) as new ({}); applying them as possibly present",
                elems.len(),
                nft_error_line(&output.stderr)
            );
        }
        self.nft(&self.elements_script(elems, Prior::Unknown))
    }

    fn nft_argv(&self) -> Vec<String> {
        vec![self.settings.nft.clone(), "-f".into(), "-".into()]
    }

    fn nft(&self, script: &str) -> Result<(), BackendError> {
        self.exec
            .run(&self.nft_argv(), Some(script.as_bytes()))
            .map(|_| ())
    }

    /// Applies networks, splitting the transaction when the set refuses it,
    /// and returns the ones that could not be applied, with the reason.
    fn apply_nets(
        &self,
        elems: &[(FwTarget, FwOp)],
        refused: &mut Vec<String>,
    ) -> Result<(), BackendError> {
        if elems.is_empty() {
            return Ok(());
        }
        let script = self.elements_script(elems, Prior::Unknown);
        // Cannot run nft at all, or it hung: splitting will not help.
        let Finished { status, output } = self
            .exec
            .run_status(&self.nft_argv(), Some(script.as_bytes()))?;
        if status.success() {
            return Ok(());
        }
        let reason = nft_error_line(&output.stderr);
        let overlaps = is_overlap(&reason);
        if let [(target, op)] = elems {
            // The exact network cannot be in the set if an overlapping one
            // is: nothing to unban.
            if !(*op == FwOp::Unban && overlaps) {
                let what = if *op == FwOp::Unban { "unban" } else { "ban" };
                refused.push(format!("{what} {target}: {reason}"));
            }
            return Ok(());
        }
        if !overlaps {
            // Not about one element (a missing table...): splitting would
            // only fail the same way, once per element.
            return Err(BackendError::Failed {
                program: self.settings.nft.clone(),
                status: status.to_string(),
                stderr: reason,
            });
        }
        // Split until the refused elements are alone. At most two calls per
        // element in all, and few when few are refused.
        let (left, right) = elems.split_at(elems.len() / 2);
        self.apply_nets(left, refused)?;
        self.apply_nets(right, refused)
    }
}

/// Whether nft refused an interval because it overlaps another: nft 1.0.6
/// says so itself (against the set, or within the statement); newer
/// versions leave it to the kernel, which answers EEXIST.
fn is_overlap(reason: &str) -> bool {
    reason.contains("overlap")
        || reason.contains("conflicting intervals")
        || reason.contains("File exists")
}

/// nft's error lines without the echo of the input and the carets.
fn nft_error_line(stderr: &str) -> String {
    let mut errors: Vec<&str> = Vec::new();
    for error in stderr
        .lines()
        .filter_map(|l| l.split_once("Error: ").map(|(_, e)| e.trim()))
    {
        // The same complaint comes once per statement about the element.
        if !errors.contains(&error) {
            errors.push(error);
        }
    }
    if errors.is_empty() {
        super::exec::message_text(stderr)
    } else {
        errors.join("; ")
    }
}

/// `1800` -> `30m`, `90061` -> `1d1h1m1s`. nft refuses plain seconds of
/// nine digits and more (`316224000s`: "value too large"), but takes days.
pub(crate) fn nft_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out += &format!("{n}{unit}");
        }
    }
    if out.is_empty() {
        // Never reached: timeouts are at least 1 s. `0s` would mean no timeout.
        out = "1s".into();
    }
    out
}

fn valid_table_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && name.len() <= 32
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Backend for NftablesBackend {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn setup(&mut self) -> Result<(), BackendError> {
        self.nft(&self.setup_script())
    }

    fn apply(&mut self, batch: &[Action]) -> Result<(), BackendError> {
        let (nets, hosts): (Vec<_>, Vec<_>) = last_per_target(batch)
            .into_iter()
            .partition(|(t, _)| t.is_net());
        let mut errors = Vec::new();
        if !hosts.is_empty()
            && let Err(e) = self.apply_hosts(&hosts)
        {
            errors.push(e.to_string());
        }
        let mut refused = Vec::new();
        if let Err(e) = self.apply_nets(&nets, &mut refused) {
            errors.push(e.to_string());
        }
        if !refused.is_empty() {
            errors.push(format!(
                "{} of {} networks refused: {}",
                refused.len(),
                nets.len(),
                refused.join("; ")
            ));
        }
        match errors.len() {
            0 => Ok(()),
            _ => Err(BackendError::Failed {
                program: self.settings.nft.clone(),
                status: format!("refused part of a batch of {}", batch.len()),
                stderr: super::exec::message_text(&errors.join("; ")),
            }),
        }
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        self.nft(&self.cleanup_script())
    }

    fn is_intact(&mut self) -> Result<bool, BackendError> {
        let argv = [
            self.settings.nft.clone(),
            "list".into(),
            "set".into(),
            "inet".into(),
            self.settings.table.clone(),
            INTACT_SET.into(),
        ];
        // Any refusal means the set is not there (nft says "No such file or
        // directory"); if nft itself is broken, `setup` will say so.
        Ok(self.exec.run_status(&argv, None)?.status.success())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ban, unban};
    use super::*;

    fn backend() -> NftablesBackend {
        NftablesBackend::new(NftablesSettings::default(), Exec::default()).unwrap()
    }

    #[test]
    fn setup_script_is_the_documented_ruleset() {
        assert_eq!(
            backend().setup_script(),
            "add table inet banshare\n\
             add set inet banshare intact { type ipv4_addr; }\n\
             add set inet banshare v4 { type ipv4_addr; flags timeout; }\n\
             add set inet banshare v6 { type ipv6_addr; flags timeout; }\n\
             add set inet banshare v4net { type ipv4_addr; flags interval, timeout; }\n\
             add set inet banshare v6net { type ipv6_addr; flags interval, timeout; }\n\
             add chain inet banshare input { type filter hook input priority filter - 10; policy accept; }\n\
             flush chain inet banshare input\n\
             add rule inet banshare input ip saddr @v4 counter drop\n\
             add rule inet banshare input ip saddr @v4net counter drop\n\
             add rule inet banshare input ip6 saddr @v6 counter drop\n\
             add rule inet banshare input ip6 saddr @v6net counter drop\n\
             add chain inet banshare forward { type filter hook forward priority filter - 10; policy accept; }\n\
             flush chain inet banshare forward\n\
             delete chain inet banshare forward\n"
        );
        let fwd = NftablesBackend::new(
            NftablesSettings {
                table: "bs2".into(),
                forward: true,
                ..Default::default()
            },
            Exec::default(),
        )
        .unwrap()
        .setup_script();
        assert!(
            fwd.contains("add rule inet bs2 forward ip6 saddr @v6net counter drop\n"),
            "{fwd}"
        );
        assert!(!fwd.contains("delete chain"), "{fwd}");
    }

    #[test]
    fn cleanup_script_tolerates_a_missing_table() {
        assert_eq!(
            backend().cleanup_script(),
            "add table inet banshare\ndelete table inet banshare\n"
        );
    }

    #[test]
    fn elements_script() {
        let b = backend();
        let batch = [
            ban("192.0.2.1", Some(1800)),
            ban("2001:db8::1", None),
            unban("192.0.2.2"),
            ban("192.0.2.3", None),
            ban("10.0.0.0/8", Some(90061)),
        ];
        let plan = last_per_target(&batch);
        assert_eq!(
            b.elements_script(&plan, Prior::Unknown),
            "add element inet banshare v4 {\n192.0.2.1,\n192.0.2.2,\n192.0.2.3\n}\n\
             delete element inet banshare v4 {\n192.0.2.1,\n192.0.2.2,\n192.0.2.3\n}\n\
             add element inet banshare v4 {\n192.0.2.1 timeout 30m,\n192.0.2.3\n}\n\
             add element inet banshare v6 {\n2001:db8::1\n}\n\
             delete element inet banshare v6 {\n2001:db8::1\n}\n\
             add element inet banshare v6 {\n2001:db8::1\n}\n\
             add element inet banshare v4net {\n10.0.0.0/8\n}\n\
             delete element inet banshare v4net {\n10.0.0.0/8\n}\n\
             add element inet banshare v4net {\n10.0.0.0/8 timeout 1d1h1m1s\n}\n"
        );
        // Unbans only: no third statement.
        let plan = last_per_target(&[unban("2001:db8::/48")]);
        assert_eq!(
            b.elements_script(&plan, Prior::Unknown),
            "add element inet banshare v6net {\n2001:db8::/48\n}\n\
             delete element inet banshare v6net {\n2001:db8::/48\n}\n"
        );
        // Bans of elements not there yet: one `create`; unbans as before.
        let plan = last_per_target(&batch);
        assert_eq!(
            b.elements_script(&plan, Prior::Absent),
            "add element inet banshare v4 {\n192.0.2.2\n}\n\
             delete element inet banshare v4 {\n192.0.2.2\n}\n\
             create element inet banshare v4 {\n192.0.2.1 timeout 30m,\n192.0.2.3\n}\n\
             create element inet banshare v6 {\n2001:db8::1\n}\n\
             create element inet banshare v4net {\n10.0.0.0/8 timeout 1d1h1m1s\n}\n"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(nft_duration(1), "1s");
        assert_eq!(nft_duration(60), "1m");
        assert_eq!(nft_duration(1800), "30m");
        assert_eq!(nft_duration(86400), "1d");
        assert_eq!(nft_duration(90061), "1d1h1m1s");
        assert_eq!(nft_duration(crate::record::MAX_BANTIME_SECS), "3660d");
    }

    #[test]
    fn table_names() {
        for good in ["banshare", "b", "bs_2", "A23456789012345678901234567890ab"] {
            assert!(valid_table_name(good), "{good}");
        }
        for bad in [
            "",
            "2bs",
            "bs-2",
            "bs 2",
            "bs;flush",
            "{x}",
            "a23456789012345678901234567890abc",
        ] {
            assert!(!valid_table_name(bad), "{bad}");
        }
    }

    #[test]
    fn error_lines() {
        let stderr =
            "/dev/stdin:3:1-11: Error: conflicting intervals specified\n20.1.0.0/16\n^^^^\n";
        assert_eq!(nft_error_line(stderr), "conflicting intervals specified");
        let twice =
            "x:1:1: Error: interval overlaps\na\n^\nx:3:1: Error: interval overlaps\na\n^\n";
        assert_eq!(nft_error_line(twice), "interval overlaps");
        assert_eq!(nft_error_line("  something else \n"), "something else");
    }
}
