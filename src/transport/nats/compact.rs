//! `banshare compact` on a `nats://` log: retention by banshare's own
//! rules ([`retention::plan`], the rules a file log's compaction keeps),
//! carried out with JetStream's per-message delete. The stream's records
//! up to its last sequence when the compaction starts are read; each one
//! no watcher can still need (a ban that ended or was lifted, an unban no
//! longer remembered, a copy, garbage) is deleted by its sequence; the
//! rest, permanent bans and the unbans that lift them included, stay,
//! with their sequences. Positions saved by watchers therefore stay
//! valid, and records published meanwhile are not looked at. Why not
//! JetStream's `max_age`: see docs/nats.md ("Retention").

use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::push::OrderedConfig};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use super::runtime::{self, ConnectFailure, Link, Runtime};
use super::{NatsSettings, NatsUrl};
use crate::compact::Outcome;
use crate::watch::policy::retention::{self, Fate, RetentionRules};

/// Why a NATS compaction stopped; the stream is as it was, or with part
/// of the deletions done (each one is right on its own).
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("cannot reach the NATS servers: {0}")]
    Unreachable(String),
    #[error("the NATS servers refused this node: {0}")]
    Refused(String),
    #[error("{0}")]
    Stream(String),
    #[error("reading the stream: {0}")]
    Read(String),
    #[error("deleting record {seq} from the stream: {why}")]
    Delete { seq: u64, why: String },
}

/// Compacts the stream `url` names by `rules` at `now`; `on_line` is told
/// each record's fate. In a dry run nothing is deleted.
pub fn compact(
    url: &NatsUrl,
    settings: &NatsSettings,
    rules: &RetentionRules,
    now: DateTime<Utc>,
    dry_run: bool,
    on_line: &mut dyn FnMut(&[u8], Fate),
) -> Result<Outcome, CompactError> {
    let runtime = Runtime::start().map_err(|e| CompactError::Unreachable(e.to_string()))?;
    runtime.block_on(async {
        let client = runtime::connect(url, settings, std::sync::Arc::new(Link::default()))
            .await
            .map_err(|failure| match failure {
                ConnectFailure::Unreachable(why) => CompactError::Unreachable(why),
                ConnectFailure::Refused(why) => CompactError::Refused(why),
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(settings.timeout);
        let mut stream = js
            .get_stream(&url.stream)
            .await
            .map_err(|e| CompactError::Stream(format!("stream {:?}: {e}", url.stream)))?;
        let last = stream
            .info()
            .await
            .map_err(|e| CompactError::Stream(e.to_string()))?
            .state
            .last_sequence;
        let records = read_through(&stream, &client, last, settings.timeout).await?;
        let fates = retention::plan(records.iter().map(|(_, r)| r.as_slice()), rules, now);
        let mut outcome = Outcome::default();
        for ((seq, record), fate) in records.iter().zip(fates) {
            on_line(record, fate);
            *outcome.fates.entry(fate).or_insert(0) += 1;
            let size = record.len() as u64 + 1;
            outcome.bytes_before += size;
            if fate.is_kept() {
                outcome.bytes_after += size;
            } else if !dry_run {
                delete(&stream, *seq).await?;
            }
        }
        Ok(outcome)
    })
}

/// Every record of the stream up to sequence `last`, with its sequence,
/// through an ordered consumer of its own.
async fn read_through(
    stream: &jetstream::stream::Stream,
    client: &async_nats::Client,
    last: u64,
    timeout: Duration,
) -> Result<Vec<(u64, Vec<u8>)>, CompactError> {
    let mut records = Vec::new();
    if last == 0 {
        return Ok(records);
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| CompactError::Read(format!("making a consumer: {e}")))?;
    // Every record deleted (a quiet fleet, compacted before): the last
    // sequence stays, and nothing comes.
    if consumer.cached_info().num_pending == 0 {
        return Ok(records);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| CompactError::Read(e.to_string()))?;
    loop {
        let next = tokio::time::timeout(timeout, messages.next()).await;
        let message = match next {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(CompactError::Read(e.to_string())),
            Ok(None) => return Err(CompactError::Read("the consumer ended".into())),
            Err(_) => {
                return Err(CompactError::Read(format!(
                    "no record within {timeout:?}, {} read",
                    records.len()
                )));
            }
        };
        let info = message
            .info()
            .map_err(|e| CompactError::Read(e.to_string()))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        if seq > last {
            break;
        }
        records.push((seq, message.message.payload.to_vec()));
        if seq == last || pending == 0 {
            break;
        }
    }
    Ok(records)
}

/// Deletes record `seq`; one already gone (another compaction) is no
/// error.
async fn delete(stream: &jetstream::stream::Stream, seq: u64) -> Result<(), CompactError> {
    match stream.delete_message(seq).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("no message found") => Ok(()),
        Err(e) => Err(CompactError::Delete {
            seq,
            why: e.to_string(),
        }),
    }
}
