//! The appender: turns a ban or unban into records and delivers them to the
//! shared log, or to the local spool when the log cannot be reached in time.
//!
//! fail2ban runs `banshare ban` as its action, and a failing action makes
//! fail2ban log errors and retry, so everything short of losing the record
//! counts as success here: a record that cannot be delivered is spooled, and
//! only a record that can be neither delivered nor spooled is a failure.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Local, SubsecRound, Utc};

use crate::record::{
    BanTime, DEFAULT_PRIORITY, Fields, Jail, NodeId, Op, PortSpec, Record, RecordId, SyslogHeader,
    SyslogTime, Tag, Target,
};
use crate::spool::{FlushReport, Spool, SpoolError, to_batch};
use crate::transport::Transport;

/// What to share: one operation on one or more addresses.
#[derive(Debug, Clone)]
pub struct Request {
    pub op: Op,
    pub targets: Vec<Target>,
    pub ports: PortSpec,
    pub jail: Option<Jail>,
    pub bantime: Option<BanTime>,
}

/// Who writes: the identity stamped on each record.
#[derive(Debug, Clone)]
pub struct Writer {
    pub node: NodeId,
    pub tag: Tag,
    pub pid: u32,
    /// This node's signing key: records are signed when it is set.
    pub key: Option<std::sync::Arc<ed25519_dalek::SigningKey>>,
}

/// Builds one record per target, all stamped with `now` (to the millisecond,
/// which is all a ban needs), and signed if the writer has a key.
pub fn build_records(
    request: &Request,
    writer: &Writer,
    now: DateTime<Utc>,
) -> Result<Vec<Record>, getrandom::Error> {
    let now = now.trunc_subsecs(3);
    let header = SyslogHeader {
        priority: DEFAULT_PRIORITY,
        // logger writes local time; fail2ban reads the header the same way.
        time: SyslogTime::from_naive(now.with_timezone(&Local).naive_local()),
        tag: writer.tag.clone(),
        pid: Some(writer.pid),
    };
    let bantime = if request.op == Op::Ban {
        request.bantime
    } else {
        None
    };
    request
        .targets
        .iter()
        .map(|target| {
            let mut record = Record {
                header: header.clone(),
                op: request.op,
                target: *target,
                ports: request.ports.clone(),
                fields: Fields {
                    jail: request.jail.clone(),
                    node: Some(writer.node.clone()),
                    ts: Some(now),
                    bantime,
                    id: Some(RecordId::random()?),
                    sig: None,
                },
            };
            if let Some(key) = &writer.key {
                crate::trust::sign(&mut record, key).expect("node, ts and id are set above");
            }
            Ok(record)
        })
        .collect()
}

/// Where the records went.
#[derive(Debug)]
pub enum Outcome {
    /// Appended to the log: `total` records, counting older spooled ones
    /// that went out ahead of them.
    Delivered { total: usize },
    /// Kept in the spool, for the reason given.
    Spooled { reason: String },
}

/// Delivers `records` through `transport`, giving up after `deadline`.
///
/// If older records wait in the spool, the new ones join the queue behind
/// them and the whole spool is flushed, so that the log keeps each host's
/// records in order.
pub fn deliver(
    records: Vec<Record>,
    transport: Box<dyn Transport>,
    spool: &Spool,
    deadline: Duration,
) -> Result<Outcome, SpoolError> {
    if spool.is_empty()? {
        deliver_direct(records, transport, spool, deadline)
    } else {
        spool.put(&records, false)?;
        flush_with_deadline(transport, spool, deadline)
    }
}

fn deliver_direct(
    records: Vec<Record>,
    mut transport: Box<dyn Transport>,
    spool: &Spool,
    deadline: Duration,
) -> Result<Outcome, SpoolError> {
    let batch = to_batch(&records);
    match run_with_deadline(deadline, move || transport.append(&batch)) {
        Some(Ok(())) => Ok(Outcome::Delivered {
            total: records.len(),
        }),
        Some(Err(e)) => {
            spool.put(&records, !e.wrote_nothing())?;
            Ok(Outcome::Spooled {
                reason: e.to_string(),
            })
        }
        None => {
            // The write may still land after we give up, so mark the batch
            // uncertain: flush will look its ids up before sending it.
            spool.put(&records, true)?;
            Ok(Outcome::Spooled {
                reason: format!("the log did not answer within {deadline:?}"),
            })
        }
    }
}

fn flush_with_deadline(
    mut transport: Box<dyn Transport>,
    spool: &Spool,
    deadline: Duration,
) -> Result<Outcome, SpoolError> {
    let worker_spool = spool.clone();
    let flushed = run_with_deadline(deadline, move || {
        worker_spool.flush(&mut *transport, deadline)
    });
    match flushed {
        Some(Ok(FlushReport {
            batches_left: 0,
            delivered,
            ..
        })) => Ok(Outcome::Delivered { total: delivered }),
        // `batches_left` counts this batch too: it went in last.
        Some(Ok(report)) => Ok(Outcome::Spooled {
            reason: format!(
                "it waits behind {} older batch(es) the log has not taken yet",
                report.batches_left.saturating_sub(1)
            ),
        }),
        // The records were put in the spool before the flush began: they
        // are safe, whatever went wrong with the older ones.
        Some(Err(e)) => Ok(Outcome::Spooled {
            reason: format!("flushing the spool failed: {e}"),
        }),
        None => Ok(Outcome::Spooled {
            reason: format!("the log did not answer within {deadline:?}"),
        }),
    }
}

/// Runs `work` on a worker thread and waits at most `deadline` for it. A
/// hung filesystem call cannot be cancelled, but it need not hold up the
/// caller: the process exits without waiting for the worker.
pub fn run_with_deadline<T: Send + 'static>(
    deadline: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(deadline).ok()
}
