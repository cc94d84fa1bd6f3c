//! The ipset backend, for hosts whose firewall is iptables.
//!
//! [`IpsetBackend::setup`] creates four sets with per-entry timeouts, in one
//! `ipset restore -exist` (an existing set with the same parameters is kept,
//! with its entries):
//!
//! ```text
//! create banshare-v4    hash:ip  family inet  timeout 0 maxelem 1048576
//! create banshare-v6    hash:ip  family inet6 timeout 0 maxelem 1048576
//! create banshare-v4net hash:net family inet  timeout 0 maxelem 1048576
//! create banshare-v6net hash:net family inet6 timeout 0 maxelem 1048576
//! ```
//!
//! banshare does **not** manage iptables rules. The administrator adds the
//! rules that drop what is in the sets, after the first `setup` (iptables
//! refuses a set that does not exist yet), for example:
//!
//! ```sh
//! iptables  -I INPUT -m set --match-set banshare-v4    src -j DROP
//! iptables  -I INPUT -m set --match-set banshare-v4net src -j DROP
//! ip6tables -I INPUT -m set --match-set banshare-v6    src -j DROP
//! ip6tables -I INPUT -m set --match-set banshare-v6net src -j DROP
//! # and the same in FORWARD (or DOCKER-USER) for routed or container traffic
//! ```
//!
//! and removes them before `banshare cleanup`, which destroys the sets
//! (the kernel refuses to destroy a set a rule still uses). Such rules ban
//! an address on **every port**; the record's port spec is not used. Sets
//! are per network namespace.
//!
//! [`is_intact`](IpsetBackend::is_intact) runs `ipset list -n` (names
//! only) and checks that the four sets are there.
//!
//! [`apply`](IpsetBackend::apply) writes one `ipset restore -exist` per
//! batch: `add <set> <addr> timeout <secs>` (timeout 0: permanent; `-exist`
//! replaces the timeout of an entry already there) and `del <set> <addr>`
//! (`-exist`: a missing entry is no error). The kernel's largest timeout is
//! 2147483 s (24.8 days): **longer bans are cut to that** and expire early
//! unless applied again. `ipset restore` stops at the first line it refuses
//! (say, a full set); banshare then goes on after that line, and reports
//! the refused ones.

use serde::{Deserialize, Serialize};

use super::exec::{Exec, failed, message_text};
use super::{Action, Backend, BackendError, FwOp, FwTarget, last_per_target, short};
use crate::record::Target;

/// The kernel's largest ipset timeout, in seconds.
pub const MAX_IPSET_TIMEOUT: u64 = 2_147_483;
/// After this many refused lines in one batch, give up on the rest.
const MAX_REFUSED: usize = 20;

/// Settings for [`IpsetBackend`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpsetSettings {
    /// The `ipset` program: found on `PATH` unless absolute.
    pub ipset: String,
    /// Set names are `<prefix>-v4`, `-v6`, `-v4net` and `-v6net`.
    pub prefix: String,
    /// The most entries in each set.
    pub maxelem: u32,
}

impl Default for IpsetSettings {
    fn default() -> IpsetSettings {
        IpsetSettings {
            ipset: "ipset".into(),
            prefix: "banshare".into(),
            maxelem: 1 << 20,
        }
    }
}

/// ipset names are at most 31 bytes; the longest suffix is `-v6net`.
const MAX_PREFIX: usize = 31 - "-v6net".len();

pub struct IpsetBackend {
    settings: IpsetSettings,
    exec: Exec,
}

/// One line of restore input, with what it is about for error messages.
struct Line {
    text: String,
    about: String,
}

impl IpsetBackend {
    pub fn new(settings: IpsetSettings, exec: Exec) -> Result<IpsetBackend, BackendError> {
        let p = &settings.prefix;
        let valid = p.len() <= MAX_PREFIX
            && p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(BackendError::Config(format!(
                "ipset prefix {:?}: use 1 to {MAX_PREFIX} letters, digits, '-' and '_', starting with a letter or digit",
                short(p)
            )));
        }
        if settings.maxelem == 0 {
            return Err(BackendError::Config(
                "ipset maxelem must be more than 0".into(),
            ));
        }
        if settings.ipset.is_empty() {
            return Err(BackendError::Config(
                "ipset: the ipset program is empty".into(),
            ));
        }
        Ok(IpsetBackend { settings, exec })
    }

    /// The set a target goes into.
    pub fn set_name(&self, target: Target) -> String {
        self.set_of(&FwTarget::of(target))
    }

    fn set_of(&self, target: &FwTarget) -> String {
        let suffix = match target {
            FwTarget::V4(_) => "v4",
            FwTarget::V6(_) => "v6",
            FwTarget::V4Net(_) => "v4net",
            FwTarget::V6Net(_) => "v6net",
        };
        format!("{}-{suffix}", self.settings.prefix)
    }

    fn set_names(&self) -> [(String, &'static str, &'static str); 4] {
        let p = &self.settings.prefix;
        [
            (format!("{p}-v4"), "hash:ip", "inet"),
            (format!("{p}-v6"), "hash:ip", "inet6"),
            (format!("{p}-v4net"), "hash:net", "inet"),
            (format!("{p}-v6net"), "hash:net", "inet6"),
        ]
    }

    /// `ipset restore` input for `setup`.
    pub fn setup_text(&self) -> String {
        self.set_names()
            .iter()
            .map(|(name, kind, family)| {
                format!(
                    "create {name} {kind} family {family} timeout 0 maxelem {}\n",
                    self.settings.maxelem
                )
            })
            .collect()
    }

    /// `ipset restore` input for `cleanup`.
    pub fn cleanup_text(&self) -> String {
        self.set_names()
            .iter()
            .map(|(name, _, _)| format!("destroy {name}\n"))
            .collect()
    }

    fn apply_lines(&self, batch: &[Action]) -> Vec<Line> {
        last_per_target(batch)
            .into_iter()
            .map(|(target, op)| {
                let set = self.set_of(&target);
                match op {
                    FwOp::Ban(secs) => Line {
                        text: format!(
                            "add {set} {target} timeout {}\n",
                            secs.map_or(0, |s| s.min(MAX_IPSET_TIMEOUT))
                        ),
                        about: format!("ban {target}"),
                    },
                    FwOp::Unban => Line {
                        text: format!("del {set} {target}\n"),
                        about: format!("unban {target}"),
                    },
                }
            })
            .collect()
    }

    /// `ipset restore` input for a batch.
    pub fn apply_text(&self, batch: &[Action]) -> String {
        self.apply_lines(batch)
            .iter()
            .map(|l| l.text.as_str())
            .collect()
    }

    fn argv(&self) -> Vec<String> {
        vec![
            self.settings.ipset.clone(),
            "restore".into(),
            "-exist".into(),
        ]
    }

    /// Feeds `lines` to `ipset restore -exist`; when it stops at a line,
    /// goes on after that line. Returns the refused lines' reasons.
    fn restore(&self, lines: &[Line]) -> Result<Vec<String>, BackendError> {
        let mut refused = Vec::new();
        let mut start = 0;
        while start < lines.len() {
            let input: String = lines[start..].iter().map(|l| l.text.as_str()).collect();
            let done = self.exec.run_status(&self.argv(), Some(input.as_bytes()))?;
            if done.status.success() {
                break;
            }
            // Not about one line (no set: setup has not run), or not the
            // answer we know: going on line by line would not help.
            let Some((n, reason)) = refused_line(&done.output.stderr).filter(|(n, r)| {
                (1..=lines.len() - start).contains(n) && !r.contains("does not exist")
            }) else {
                return Err(failed(&self.argv(), &done.status.to_string(), &done.output));
            };
            refused.push(format!("{}: {reason}", lines[start + n - 1].about));
            start += n;
            if refused.len() >= MAX_REFUSED && start < lines.len() {
                refused.push(format!("{} more not attempted", lines.len() - start));
                break;
            }
        }
        Ok(refused)
    }

    fn restore_all(&self, lines: &[Line], hint: &str) -> Result<(), BackendError> {
        let refused = self.restore(lines)?;
        if refused.is_empty() {
            return Ok(());
        }
        Err(BackendError::Failed {
            program: self.settings.ipset.clone(),
            status: format!("refused {} of {} lines", refused.len(), lines.len()),
            stderr: message_text(&format!("{}{hint}", refused.join("; "))),
        })
    }
}

/// `ipset v7.17: Error in line 2: Syntax error: ...` -> (2, "Syntax error: ...").
fn refused_line(stderr: &str) -> Option<(usize, String)> {
    let (_, rest) = stderr.split_once("Error in line ")?;
    let (n, reason) = rest.split_once(':')?;
    Some((
        n.trim().parse().ok()?,
        reason.trim().lines().next().unwrap_or("").to_owned(),
    ))
}

fn lines_of(text: &str, about: &str) -> Vec<Line> {
    text.lines()
        .map(|l| Line {
            text: format!("{l}\n"),
            about: format!("{about} {}", l.split(' ').nth(1).unwrap_or("")),
        })
        .collect()
}

impl Backend for IpsetBackend {
    fn name(&self) -> &'static str {
        "ipset"
    }

    fn setup(&mut self) -> Result<(), BackendError> {
        self.restore_all(
            &lines_of(&self.setup_text(), "create"),
            " (a set of that name with other parameters exists: `banshare cleanup` destroys it)",
        )
    }

    fn apply(&mut self, batch: &[Action]) -> Result<(), BackendError> {
        let lines = self.apply_lines(batch);
        if lines.is_empty() {
            return Ok(());
        }
        self.restore_all(&lines, "")
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        self.restore_all(
            &lines_of(&self.cleanup_text(), "destroy"),
            " (remove the iptables rules that use the sets first)",
        )
    }

    /// `ipset list -n`: the names of all sets, not their entries.
    fn is_intact(&mut self) -> Result<bool, BackendError> {
        let argv = [self.settings.ipset.clone(), "list".into(), "-n".into()];
        let names = self.exec.run(&argv, None)?.stdout;
        let present: Vec<&str> = names.lines().map(str::trim).collect();
        Ok(self
            .set_names()
            .iter()
            .all(|(name, _, _)| present.contains(&name.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ban, unban};
    use super::*;

    fn backend() -> IpsetBackend {
        IpsetBackend::new(IpsetSettings::default(), Exec::default()).unwrap()
    }

    #[test]
    fn setup_and_cleanup_text() {
        assert_eq!(
            backend().setup_text(),
            "create banshare-v4 hash:ip family inet timeout 0 maxelem 1048576\n\
             create banshare-v6 hash:ip family inet6 timeout 0 maxelem 1048576\n\
             create banshare-v4net hash:net family inet timeout 0 maxelem 1048576\n\
             create banshare-v6net hash:net family inet6 timeout 0 maxelem 1048576\n"
        );
        assert_eq!(
            backend().cleanup_text(),
            "destroy banshare-v4\ndestroy banshare-v6\ndestroy banshare-v4net\ndestroy banshare-v6net\n"
        );
    }

    #[test]
    fn apply_text() {
        let batch = [
            ban("192.0.2.1", Some(1800)),
            ban("2001:db8::1", None),
            unban("192.0.2.2"),
            ban("10.0.0.0/8", Some(100_000_000)),
            ban("2001:db8::/48", Some(60)),
            ban("192.0.2.3", Some(5)),
            unban("192.0.2.3"),
        ];
        assert_eq!(
            backend().apply_text(&batch),
            "add banshare-v4 192.0.2.1 timeout 1800\n\
             add banshare-v6 2001:db8::1 timeout 0\n\
             del banshare-v4 192.0.2.2\n\
             add banshare-v4net 10.0.0.0/8 timeout 2147483\n\
             add banshare-v6net 2001:db8::/48 timeout 60\n\
             del banshare-v4 192.0.2.3\n"
        );
    }

    #[test]
    fn prefixes() {
        let with = |p: &str| {
            IpsetBackend::new(
                IpsetSettings {
                    prefix: p.into(),
                    ..Default::default()
                },
                Exec::default(),
            )
        };
        assert!(with("bs-1_x").is_ok());
        assert!(with("a234567890123456789012345").is_ok());
        for bad in ["", "-x", "a b", "a;b", "a2345678901234567890123456"] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refused_lines() {
        assert_eq!(
            refused_line("ipset v7.17: Error in line 2: Syntax error: cannot parse 1.1.1.x\n"),
            Some((2, "Syntax error: cannot parse 1.1.1.x".into()))
        );
        assert_eq!(
            refused_line("ipset v7.17: Kernel error received: Operation not permitted\n"),
            None
        );
    }
}
