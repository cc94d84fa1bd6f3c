//! What `banshare watch` builds from the settings beyond plain values: the
//! ban backend (its name and its `[backend]` table) and the trust policy
//! (the trusted keys file), and this node's signing key, which the
//! appender and the monitor load. `banshare config check` runs these same
//! functions, so it approves exactly what they accept.
//!
//! Errors name the configuration key. Flags that override these values
//! (`--backend`) are checked by the command line itself and name the flag.

use std::path::Path;

use super::{Checker, ConfigError, Settings};
use crate::backend::{self, Backend, BackendKind};
use crate::trust::{TrustPolicy, TrustedKeys, load_signing_key};
use ed25519_dalek::SigningKey;

impl Settings {
    /// The backend named by `[watch] backend`, built from `[backend]`
    /// without touching the host; `None` when no backend is named.
    /// `origin` names the configuration file in errors.
    pub fn watch_backend(&self, origin: &Path) -> Result<Option<Box<dyn Backend>>, ConfigError> {
        let check = Checker { origin };
        let Some(name) = self.watch.backend.as_deref() else {
            return Ok(None);
        };
        let kind: BackendKind = check.parse("watch.backend", name)?;
        backend::open(kind, &self.backend)
            .map(Some)
            .map_err(|e| check.invalid(backend_key(kind), e))
    }

    /// The trusted keys (read from `[trust] keys`) and what they require.
    pub fn trust_policy(&self, origin: &Path) -> Result<TrustPolicy, ConfigError> {
        let check = Checker { origin };
        let t = &self.trust;
        let keys = match &t.keys {
            Some(path) => TrustedKeys::load(path).map_err(|e| check.invalid("trust.keys", e))?,
            None => TrustedKeys::default(),
        };
        if t.require_signed && keys.is_empty() {
            return Err(check.invalid("trust.keys", "lists no key, but trust.require_signed is on"));
        }
        Ok(TrustPolicy {
            keys,
            require_signed: t.require_signed,
            allow_unsigned_logger: t.allow_unsigned_logger,
            operators: t.operators.clone(),
        })
    }

    /// Everything `watch` would refuse in these settings, short of a
    /// missing backend or log (which a flag may still give).
    pub fn check_watch(&self, origin: &Path) -> Result<(), ConfigError> {
        self.watch_backend(origin)?;
        self.trust_policy(origin)?;
        self.check_metrics_folders(origin)?;
        Ok(())
    }

    /// What each command still needs that these settings do not give (a
    /// flag may: `--log`, `--backend`; the packaged units pass none), as
    /// `(commands, settings)`: e.g. `watch` needs `[common] log` and
    /// `[watch] backend`. Empty when every daemon could start. The
    /// publisher serves its own log and needs neither.
    pub fn unmet_needs(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let log = self.log.is_none().then_some("[common] log");
        let backend = self.watch.backend.is_none().then_some("[watch] backend");
        let mut needs = Vec::new();
        let watch: Vec<_> = [log, backend].into_iter().flatten().collect();
        if !watch.is_empty() {
            needs.push(("watch", watch));
        }
        if let Some(log) = log {
            needs.push(("ban, unban, monitor and compact", vec![log]));
        }
        needs
    }

    /// The daemons' metrics files must be in folders that exist (they are
    /// node_exporter's, not banshare's to create): each daemon refuses to
    /// start otherwise, so `config check` refuses too.
    fn check_metrics_folders(&self, origin: &Path) -> Result<(), ConfigError> {
        let check = Checker { origin };
        for (key, file) in [
            ("watch.metrics_file", &self.watch.metrics_file),
            ("monitor.metrics_file", &self.monitor.metrics_file),
            ("publisher.metrics_file", &self.publisher.metrics_file),
        ] {
            let Some(folder) = file.as_deref().map(metrics_folder) else {
                continue;
            };
            if !folder.is_dir() {
                return Err(check.invalid(
                    key,
                    format!("the folder {} does not exist", folder.display()),
                ));
            }
        }
        Ok(())
    }

    /// The state directories of the watcher, the monitor and the
    /// publisher, as each daemon checks its own at start: none may hold
    /// files of a newer banshare (refused, exit 2). Reads only.
    pub fn check_state_dirs(&self, origin: &Path) -> Result<(), ConfigError> {
        let check = Checker { origin };
        for (key, dir) in [
            ("watch.state_dir", &self.watch.state_dir),
            ("monitor.state_dir", &self.monitor.state_dir),
            ("publisher.data_dir", &self.publisher.data_dir),
        ] {
            crate::state::check_versions(dir).map_err(|e| check.invalid(key, e))?;
        }
        Ok(())
    }

    /// This node's signing key (`[common] key`), which `ban`, `unban` and
    /// `monitor` refuse to run without when it is set; `None` when unset.
    pub fn signing_key(&self, origin: &Path) -> Result<Option<SigningKey>, ConfigError> {
        let check = Checker { origin };
        self.key
            .as_deref()
            .map(|path| load_signing_key(path).map_err(|e| check.invalid("common.key", e)))
            .transpose()
    }
}

/// The folder a metrics file is written in.
pub fn metrics_folder(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The `[backend]` table a backend of `kind` reads.
fn backend_key(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Nftables => "backend.nftables",
        BackendKind::Ipset => "backend.ipset",
        BackendKind::Fail2ban => "backend.fail2ban",
        BackendKind::Command => "backend.command",
        BackendKind::Log => "backend",
    }
}
