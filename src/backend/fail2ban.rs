//! The fail2ban backend: hands bans to a jail of the local fail2ban, whose
//! actions then ban (with whatever banaction the jail has).
//!
//! ```text
//! fail2ban-client [-s SOCKET] set banshare banip 192.0.2.7 2001:db8::7 ...
//! fail2ban-client [-s SOCKET] set banshare unbanip 192.0.2.8 ...
//! ```
//!
//! One call per batch, at most [`CHUNK`] addresses each: a call costs about
//! 100 ms, one address per call would manage 8 bans/s, a thousand per call
//! about 400/s. Unbans of addresses the jail does not hold are ignored.
//!
//! The jail must exist: [`Fail2banBackend::setup`] checks with
//! `fail2ban-client status <jail>` and fails with a clear error when it does
//! not (or when fail2ban is not running). For example, in
//! `/etc/fail2ban/jail.d/banshare.local`:
//!
//! ```ini
//! [banshare]
//! enabled  = true
//! # bans only come from banshare: a filter that never matches
//! filter   =
//! failregex = ^banshare-never-matches <HOST>$
//! backend  = polling
//! logpath  = /dev/null
//! bantime  = 30m
//! # banaction as usual; NOT banshare's own sharing action, or every ban
//! # received would be shared again
//! ```
//!
//! Limits, from fail2ban itself:
//! - `banip` takes no ban time: **the jail's `bantime` applies** to every
//!   ban (and `bantime.increment`, if set), whatever the record says; a
//!   record's permanent ban is the jail's bantime too. Re-banning an address
//!   the jail holds prolongs it by the jail's bantime at most.
//! - All bans go to the one configured jail, whatever the record's jail.
//! - Whether the ban covers all ports is up to the jail's banaction (the
//!   `*-allports` actions do); the record's port spec is not passed.
//! - Networks (`10.0.0.0/8`) are passed through as they are; fail2ban
//!   accepts them, but not every banaction handles them.
//!
//! `cleanup` does nothing: the jail belongs to the administrator
//! (`fail2ban-client set banshare unbanip --all`... is theirs to run).

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::exec::{Exec, message_text};
use super::{Action, Backend, BackendError, short};
use crate::record::{Jail, Target};

/// The most addresses per `fail2ban-client` call.
pub const CHUNK: usize = 1000;

/// Settings for [`Fail2banBackend`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fail2banSettings {
    /// The `fail2ban-client` program: found on `PATH` unless absolute.
    pub client: String,
    /// fail2ban's socket (`fail2ban-client -s`); by default the one in
    /// fail2ban's own configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// The jail that receives the bans.
    pub jail: String,
}

impl Default for Fail2banSettings {
    fn default() -> Fail2banSettings {
        Fail2banSettings {
            client: "fail2ban-client".into(),
            socket: None,
            jail: "banshare".into(),
        }
    }
}

pub struct Fail2banBackend {
    settings: Fail2banSettings,
    jail: Jail,
    exec: Exec,
}

impl Fail2banBackend {
    pub fn new(settings: Fail2banSettings, exec: Exec) -> Result<Fail2banBackend, BackendError> {
        let jail: Jail = settings.jail.parse().map_err(|_| {
            BackendError::Config(format!(
                "fail2ban jail {:?}: use 1 to 64 letters, digits, '-', '_', '.', '@', starting with a letter or digit",
                short(&settings.jail)
            ))
        })?;
        if settings.client.is_empty() {
            return Err(BackendError::Config(
                "fail2ban: the client program is empty".into(),
            ));
        }
        Ok(Fail2banBackend {
            settings,
            jail,
            exec,
        })
    }

    /// `fail2ban-client [-s SOCKET]`, then `args`.
    fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![self.settings.client.clone()];
        if let Some(socket) = &self.settings.socket {
            argv.push("-s".into());
            argv.push(socket.to_string_lossy().into_owned());
        }
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// The command lines for a batch: the last action per address counts;
    /// unbans first, then bans, each in chunks of [`CHUNK`].
    pub fn apply_argvs(&self, batch: &[Action]) -> Vec<Vec<String>> {
        let mut last: HashMap<Target, usize> = HashMap::with_capacity(batch.len());
        for (i, action) in batch.iter().enumerate() {
            last.insert(action.target(), i);
        }
        let mut bans = Vec::new();
        let mut unbans = Vec::new();
        for (i, action) in batch.iter().enumerate() {
            if last[&action.target()] != i {
                continue;
            }
            match action {
                Action::Ban(b) => bans.push(b.target.to_string()),
                Action::Unban(u) => unbans.push(u.target.to_string()),
            }
        }
        let mut argvs = Vec::new();
        for (verb, addrs) in [("unbanip", unbans), ("banip", bans)] {
            for chunk in addrs.chunks(CHUNK) {
                let mut argv = self.argv(&["set", self.jail.as_str(), verb]);
                argv.extend(chunk.iter().cloned());
                argvs.push(argv);
            }
        }
        argvs
    }
}

impl Backend for Fail2banBackend {
    fn name(&self) -> &'static str {
        "fail2ban"
    }

    fn setup(&mut self) -> Result<(), BackendError> {
        let argv = self.argv(&["status", self.jail.as_str()]);
        let done = self.exec.run_status(&argv, None)?;
        if done.status.success() {
            return Ok(());
        }
        let said = message_text(&format!("{}\n{}", done.output.stderr, done.output.stdout));
        if said.contains("does not exist") {
            return Err(BackendError::Config(format!(
                "fail2ban has no jail {:?}: add one (enabled = true) for banshare's bans; fail2ban-client said: {said}",
                self.jail.as_str()
            )));
        }
        Err(BackendError::Failed {
            program: self.settings.client.clone(),
            status: format!(
                "{} (is fail2ban-server running, and is this its socket?)",
                done.status
            ),
            stderr: said,
        })
    }

    fn apply(&mut self, batch: &[Action]) -> Result<(), BackendError> {
        let mut errors = Vec::new();
        let argvs = self.apply_argvs(batch);
        // `fail2ban-client [-s SOCKET] set JAIL VERB ADDR...`
        let verb_at = self.argv(&[]).len() + 2;
        for argv in &argvs {
            if let Err(e) = self.exec.run(argv, None) {
                let addrs = argv.len() - verb_at - 1;
                errors.push(format!("{} of {addrs} addresses: {e}", argv[verb_at]));
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        Err(BackendError::Failed {
            program: self.settings.client.clone(),
            status: format!("{} of {} calls failed", errors.len(), argvs.len()),
            stderr: message_text(&errors.join("; ")),
        })
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ban, unban};
    use super::*;

    #[test]
    fn argv_per_batch() {
        let b = Fail2banBackend::new(
            Fail2banSettings {
                socket: Some("/tmp/f2b.sock".into()),
                jail: "recidive".into(),
                ..Default::default()
            },
            Exec::default(),
        )
        .unwrap();
        let batch = [
            ban("192.0.2.1", Some(60)),
            ban("2001:db8::1", None),
            unban("192.0.2.1"),
            ban("192.0.2.2", Some(60)),
            unban("10.0.0.0/8"),
        ];
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            b.apply_argvs(&batch),
            vec![
                s(&[
                    "fail2ban-client",
                    "-s",
                    "/tmp/f2b.sock",
                    "set",
                    "recidive",
                    "unbanip",
                    "192.0.2.1",
                    "10.0.0.0/8"
                ]),
                s(&[
                    "fail2ban-client",
                    "-s",
                    "/tmp/f2b.sock",
                    "set",
                    "recidive",
                    "banip",
                    "2001:db8::1",
                    "192.0.2.2"
                ]),
            ]
        );
    }

    #[test]
    fn chunks_of_a_thousand() {
        let b = Fail2banBackend::new(Fail2banSettings::default(), Exec::default()).unwrap();
        let batch: Vec<Action> = (0..2500)
            .map(|i| ban(&format!("10.0.{}.{}", i / 250, i % 250), Some(60)))
            .collect();
        let argvs = b.apply_argvs(&batch);
        let sizes: Vec<usize> = argvs.iter().map(|a| a.len() - 4).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        assert_eq!(
            &argvs[0][..5],
            &["fail2ban-client", "set", "banshare", "banip", "10.0.0.0"]
        );
    }

    #[test]
    fn jail_names() {
        let with = |j: &str| {
            Fail2banBackend::new(
                Fail2banSettings {
                    jail: j.into(),
                    ..Default::default()
                },
                Exec::default(),
            )
        };
        assert!(with("nginx-http-auth").is_ok());
        assert!(with("").is_err());
        assert!(with("a b").is_err());
        assert!(with("-s").is_err());
    }
}
