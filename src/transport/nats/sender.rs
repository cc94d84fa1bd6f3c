//! The write side of the NATS transport: each record line of a batch is
//! published to the stream as one message, all of them at once, and the
//! batch is delivered when JetStream acknowledged every one (stored, or
//! known already by its `Nats-Msg-Id`).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::{Client, jetstream};
use bytes::Bytes;

use super::runtime::{self, ConnectFailure, Link, Runtime};
use super::{MISSING_HINT, NatsSettings, NatsUrl, UNREACHABLE_HINT};
use crate::transport::{Transport, TransportError, id_field};

/// Delivers batches to a JetStream stream.
///
/// What is spooled when (the spool decides by
/// [`TransportError::wrote_nothing`]):
///
/// - no server connected (down, unreachable, not answering within the
///   timeout): nothing was sent, [`TransportError::Unreachable`];
/// - a server refused this node (credentials, TLS), or a secret file is
///   readable by others: [`TransportError::Open`];
/// - the stream does not exist (no JetStream responder for the subject):
///   nothing was stored, [`TransportError::Missing`];
/// - sent, but some acknowledgement did not come within the timeout, or
///   came as an error: part of the batch may be stored,
///   [`TransportError::Write`]; the spool sends it again whole, and the
///   stream stores each record once (its id is the `Nats-Msg-Id`) within
///   the duplicate window, the watchers' policy drops copies after it.
pub struct NatsTransport {
    url: NatsUrl,
    settings: NatsSettings,
    timeout: Duration,
    runtime: Option<Runtime>,
    client: Option<Client>,
    link: Arc<Link>,
}

impl NatsTransport {
    /// A transport to the stream at `url`, reached as `settings` say;
    /// every append waits at most `timeout` for its acknowledgements.
    /// Starts nothing and connects on the first call.
    pub fn new(url: &NatsUrl, settings: &NatsSettings, timeout: Duration) -> NatsTransport {
        NatsTransport {
            url: url.clone(),
            settings: settings.clone(),
            timeout,
            runtime: None,
            client: None,
            link: Arc::default(),
        }
    }

    fn unreachable(&self, why: String) -> TransportError {
        TransportError::Unreachable {
            log: self.url.to_string(),
            hint: UNREACHABLE_HINT,
            source: io::Error::new(io::ErrorKind::TimedOut, why),
        }
    }

    fn possibly_written(&self, why: String) -> TransportError {
        TransportError::Write {
            log: self.url.to_string(),
            source: io::Error::new(io::ErrorKind::TimedOut, why),
        }
    }

    /// The client, connected now: made on first use; kept afterwards,
    /// since it reconnects by itself.
    fn connected(&mut self) -> Result<Client, TransportError> {
        if self.runtime.is_none() {
            let runtime = Runtime::start().map_err(|e| TransportError::Open {
                log: self.url.to_string(),
                source: e,
            })?;
            self.runtime = Some(runtime);
        }
        if self.client.is_none() {
            let runtime = self.runtime.as_ref().expect("just made");
            // Connecting is bounded by the append's own deadline too.
            let settings = NatsSettings {
                timeout: self.settings.timeout.min(self.timeout),
                ..self.settings.clone()
            };
            let connecting = runtime::connect(&self.url, &settings, self.link.clone());
            match runtime.block_on(connecting) {
                Ok(client) => self.client = Some(client),
                Err(ConnectFailure::Unreachable(why)) => return Err(self.unreachable(why)),
                Err(ConnectFailure::Refused(why)) => {
                    return Err(TransportError::Open {
                        log: self.url.to_string(),
                        source: io::Error::new(io::ErrorKind::PermissionDenied, why),
                    });
                }
            }
        }
        let client = self.client.clone().expect("just made");
        // A server that died just now has closed the connection, but the
        // client may not have read that yet and would still say Connected.
        // A flush goes through its connection task, which reads what came
        // before it takes a command: after it, the state is current. (It
        // waits while the client reconnects, hence the bound.)
        let runtime = self.runtime.as_ref().expect("just made");
        let connected = || client.connection_state() == async_nats::connection::State::Connected;
        let flushed = connected()
            && runtime.block_on(async {
                tokio::time::timeout(LOOKUP_WAIT, client.flush())
                    .await
                    .is_ok_and(|flushed| flushed.is_ok())
            });
        // The client queues what is published while it reconnects: nothing
        // is handed to it then, so that "not sent" stays true.
        if !flushed || !connected() {
            return Err(self.unreachable(
                "not connected to any server now (the client keeps trying); nothing was sent"
                    .into(),
            ));
        }
        Ok(client)
    }
}

/// How the publishing of a batch ended, before it is told in words.
enum Outcome {
    Acked,
    /// No acknowledgement for `missing` of `of` records; `first` says why
    /// for the first one.
    Unacked {
        missing: usize,
        of: usize,
        stream_missing: bool,
        first: String,
    },
}

impl Transport for NatsTransport {
    fn append(&mut self, batch: &[u8]) -> Result<(), TransportError> {
        let lines: Vec<&[u8]> = batch
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .collect();
        if lines.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        let client = self.connected()?;
        // A refusal is reported with the batch it came during, not later.
        self.link.clear_refusal();
        let messages: Vec<(String, Publish)> = lines.iter().map(|l| self.message(l)).collect();
        let runtime = self.runtime.as_ref().expect("connected");
        match runtime.block_on(publish(client.clone(), self.timeout, messages, deadline)) {
            Outcome::Acked => Ok(()),
            Outcome::Unacked {
                missing,
                of,
                stream_missing: true,
                ..
            } if missing == of => {
                // No server took the records: either the stream is not
                // there, or no server leads it now (its servers are
                // electing a leader, after losing one). Only the servers'
                // own answer tells the first.
                let stream = self.url.stream.clone();
                match runtime.block_on(stream_not_found(client, stream)) {
                    true => Err(TransportError::Missing {
                        log: self.url.to_string(),
                        hint: MISSING_HINT,
                    }),
                    false => Err(self.unreachable(format!(
                        "no server leads stream {:?} now (its servers may be electing a \
                         leader after losing one); nothing was stored",
                        self.url.stream
                    ))),
                }
            }
            Outcome::Unacked {
                missing, of, first, ..
            } => {
                let refused = match self.link.refusal() {
                    Some(refusal) => format!(
                        "; meanwhile the server refused: {refusal} (this node's NATS user \
                         may lack that permission: docs/nats.md)"
                    ),
                    None => String::new(),
                };
                Err(self.possibly_written(format!(
                    "{missing} of {of} record(s) not acknowledged by JetStream within {:?} \
                     ({first}); they may have been stored{refused}",
                    self.timeout
                )))
            }
        }
    }
}

impl NatsTransport {
    /// A record line as a message: on its origin node's subject, with its
    /// id as `Nats-Msg-Id` so that a batch sent again is stored once. A
    /// line that is no record is published as it is (on `_`, without an
    /// id): the watchers' parser refuses it, as it would in a file.
    fn message(&self, line: &[u8]) -> (String, Publish) {
        let node = crate::record::parse(line)
            .ok()
            .and_then(|r| r.fields.node)
            .map(|n| n.to_string());
        let subject = self.url.subject_for(node.as_deref());
        let mut message = Publish::build().payload(Bytes::copy_from_slice(line));
        if let Some(id) = id_field(line) {
            message = message.message_id(id.to_string());
        }
        (subject, message)
    }
}

/// Whether the servers say that `stream` does not exist. Asked briefly
/// ([`LOOKUP_WAIT`]): a stream without a leader may get no answer at all,
/// and a publisher during an election must not wait for one.
async fn stream_not_found(client: Client, stream: String) -> bool {
    let js = jetstream::new(client);
    let lookup = js.get_stream(stream);
    match tokio::time::timeout(LOOKUP_WAIT, lookup).await {
        Ok(Err(e)) => matches!(
            e.kind(),
            jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
        ),
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// How long a publisher asks whether a stream that took no record exists,
/// or waits for its client to confirm the connection.
const LOOKUP_WAIT: Duration = Duration::from_millis(250);

/// Publishes every message, then waits for every acknowledgement until
/// `deadline`.
async fn publish(
    client: Client,
    timeout: Duration,
    messages: Vec<(String, Publish)>,
    deadline: Instant,
) -> Outcome {
    // Made inside the runtime: the context starts a task of its own.
    let mut js = jetstream::new(client);
    js.set_timeout(timeout);
    let of = messages.len();
    let mut acks = Vec::with_capacity(of);
    let mut failures: Vec<(bool, String)> = Vec::new();
    for (subject, message) in messages {
        match js.send_publish(subject, message).await {
            Ok(ack) => acks.push(ack),
            Err(e) => failures.push((false, e.to_string())),
        }
    }
    let deadline = tokio::time::Instant::from_std(deadline);
    for ack in acks {
        match tokio::time::timeout_at(deadline, ack.into_future()).await {
            Ok(Ok(_stored_or_duplicate)) => {}
            Ok(Err(e)) => {
                let stream_missing = e.kind() == PublishErrorKind::StreamNotFound;
                failures.push((stream_missing, e.to_string()));
            }
            Err(_) => failures.push((false, "timed out".into())),
        }
    }
    match failures.first() {
        None => Outcome::Acked,
        Some((_, first)) => Outcome::Unacked {
            missing: failures.len(),
            of,
            stream_missing: failures.iter().all(|(missing, _)| *missing),
            first: first.clone(),
        },
    }
}
