//! The small asynchronous world a NATS transport or feed lives in: one
//! current-thread tokio runtime, driven by one thread of its own, so that
//! the client keeps its connection (pings, reconnects, deliveries) while
//! banshare's synchronous code is elsewhere; and the connection to the
//! servers, made as `[nats]` says.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, ServerError};

use super::{NatsSettings, NatsUrl};
use crate::file_mode::{self, Holds};

/// A current-thread runtime on its own thread; stopped when dropped, its
/// tasks (the client's connection among them) with it.
pub(super) struct Runtime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Runtime {
    pub(super) fn start() -> io::Result<Runtime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::Builder::new().name("nats".into()).spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        Ok(Runtime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `future` to its end from synchronous code; the runtime's own
    /// thread drives its I/O meanwhile.
    pub(super) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    pub(super) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the client's events tell, for whoever must know: how often it
/// connected (a reconnect is when the watcher looks up the servers'
/// addresses again), and the last permissions violation a server reported.
#[derive(Default)]
pub(super) struct Link {
    pub connections: Arc<AtomicU64>,
    /// Wakes whoever waits for the next connection (a feed's follower,
    /// which then makes its own consumer at once).
    pub connected: tokio::sync::Notify,
    refusal: Mutex<Option<String>>,
}

impl Link {
    /// The last "Permissions Violation" a server sent, if any. A server
    /// answers a request this node's user may not make with that error on
    /// the connection, not as the request's answer, which then never
    /// comes: without it, a missing permission looks like a timeout.
    pub(super) fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the last refusal: what comes after is about what follows.
    pub(super) fn clear_refusal(&self) {
        *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn note(&self, event: &Event) {
        match event {
            Event::Connected => {
                self.connections.fetch_add(1, Ordering::Relaxed);
                self.connected.notify_waiters();
            }
            Event::ServerError(ServerError::Other(text)) if is_refusal(text) => {
                *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(text.clone());
            }
            _ => {}
        }
    }
}

fn is_refusal(text: &str) -> bool {
    text.to_ascii_lowercase().contains("permissions violation")
}

/// Why no connection was made: the answer the caller reports.
pub(super) enum ConnectFailure {
    /// No server answered, or not in time: try again later.
    Unreachable(String),
    /// A server answered and refused us (credentials, TLS), or our own
    /// files are unusable: a fix is needed.
    Refused(String),
}

impl ConnectFailure {
    pub(super) fn text(&self) -> &str {
        match self {
            ConnectFailure::Unreachable(why) | ConnectFailure::Refused(why) => why,
        }
    }
}

/// Connects to `url`'s servers as `settings` say, within their timeout.
/// Once connected, the client reconnects by itself, trying each server
/// again every 250 ms to 2 s (fast enough that a restarted server is found
/// well within a spool's retry).
pub(super) async fn connect(
    url: &NatsUrl,
    settings: &NatsSettings,
    link: Arc<Link>,
) -> Result<Client, ConnectFailure> {
    let options = options(url, settings, link).await?;
    let connecting = options.connect(url.server_addresses());
    match tokio::time::timeout(settings.timeout, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => {
            let text = e.to_string();
            // A certificate the handshake refused comes as an I/O error.
            let refused = matches!(
                e.kind(),
                ConnectErrorKind::Authentication
                    | ConnectErrorKind::AuthorizationViolation
                    | ConnectErrorKind::Tls
                    | ConnectErrorKind::ServerParse
            ) || text.contains("certificate");
            Err(match refused {
                true => ConnectFailure::Refused(text),
                false => ConnectFailure::Unreachable(text),
            })
        }
        Err(_) => Err(ConnectFailure::Unreachable(format!(
            "no server answered within {:?}",
            settings.timeout
        ))),
    }
}

/// How long the client waits before its `attempts`th try in a row (the
/// first is 1; the client counts one per server tried) to connect to one
/// of `servers`: none for the first round through every server, so that
/// a `banshare ban` run or a reconnect after one server died connects at
/// once; then 250 ms more each round, up to 2 s.
fn reconnect_delay(attempts: usize, servers: usize) -> Duration {
    let round = attempts.saturating_sub(1) / servers.max(1);
    Duration::from_millis(250 * round.min(8) as u64)
}

async fn options(
    url: &NatsUrl,
    settings: &NatsSettings,
    link: Arc<Link>,
) -> Result<ConnectOptions, ConnectFailure> {
    let mut options = ConnectOptions::new()
        .name("banshare")
        .connection_timeout(settings.timeout)
        .request_timeout(Some(settings.timeout))
        .max_reconnects(None)
        .reconnect_delay_callback({
            let servers = url.servers.len();
            move |attempts| reconnect_delay(attempts, servers)
        })
        .event_callback(move |event| {
            let link = link.clone();
            async move { link.note(&event) }
        });
    let secret = |path: &std::path::Path| {
        file_mode::check(path, Holds::Secret).map_err(|e| ConnectFailure::Refused(e.to_string()))
    };
    if let Some(path) = &settings.credentials_file {
        secret(path)?;
        options = options.credentials_file(path).await.map_err(|e| {
            ConnectFailure::Refused(format!("credentials file {}: {e}", path.display()))
        })?;
    }
    if let Some(path) = &settings.nkey_seed_file {
        secret(path)?;
        let seed = std::fs::read_to_string(path).map_err(|e| {
            ConnectFailure::Refused(format!("NKey seed file {}: {e}", path.display()))
        })?;
        // The client would only log a bad seed, and connect without one:
        // the server's "authorization violation" would not name the file.
        let user_seed =
            seed.trim().starts_with("SU") && nkeys::KeyPair::from_seed(seed.trim()).is_ok();
        if !user_seed {
            return Err(ConnectFailure::Refused(format!(
                "NKey seed file {} holds no user's NKey seed (one line, SU...; not the public key \
                 U...): `banshare nats keygen --out FILE` makes one",
                path.display()
            )));
        }
        options = options.nkey(seed.trim().to_owned());
    }
    if let Some(ca) = &settings.ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if url.tls {
        options = options.require_tls(true);
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_round_through_the_servers_connects_without_waiting() {
        let ms = |attempts, servers| reconnect_delay(attempts, servers).as_millis();
        // One server: the first try at once, then 250 ms more each time.
        assert_eq!(
            [1, 2, 3, 9, 50].map(|a| ms(a, 1)),
            [0, 250, 500, 2000, 2000]
        );
        // Three servers, one dead: the two others are tried at once.
        assert_eq!(
            [1, 2, 3, 4, 7, 100].map(|a| ms(a, 3)),
            [0, 0, 0, 250, 500, 2000]
        );
    }
}
