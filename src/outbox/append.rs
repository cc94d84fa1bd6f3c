//! The appender: turns a ban or unban into records and delivers them to the
//! shared log, or to the local spool when the log cannot be reached in time.
//!
//! fail2ban runs `banshare ban` as its action, and a failing action makes
//! fail2ban log errors and retry, so everything short of losing the record
//! counts as success here: a record that cannot be delivered is spooled, and
//! only a record that can be neither delivered nor spooled is a failure.
//!
//! [`deliver_journaled`] is how `banshare ban` delivers: it writes the
//! records to a journal of the run's own first, delivers from a detached
//! child process, and returns within its deadline whatever the mount does
//! (see `docs/format.md`, section 3).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Local, SubsecRound, Utc};

use crate::outbox::detach::{self, Waited};
use crate::outbox::journal::Journal;
use crate::outbox::spool::{FlushReport, Spool, SpoolError, to_batch};
use crate::record::{
    BanTime, DEFAULT_PRIORITY, Fields, Jail, NodeId, Op, PortSpec, Record, RecordId, SyslogHeader,
    SyslogTime, Tag, Target,
};
use crate::transport::Publisher;
use crate::transport::zmq::message::LegacySubmission;

/// How much longer than its delivery deadline [`deliver_journaled`] waits
/// for the delivering child: time to move the journal to the spool and
/// report. `banshare ban` returns within `deadline + RETURN_GRACE`.
pub const RETURN_GRACE: Duration = Duration::from_secs(2);

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

/// The record for a legacy ZeroMQ submission (fail2ban-zmq-tools'
/// `host|jail|action|ip`), built as the monitor builds one for a line of
/// fail2ban.log: every port, the submission's jail, `bantime` for a ban.
/// Its node is the submitting host, not the writer's; the writer's tag,
/// pid and key (if any: the publisher then vouches for it) are used.
pub fn build_legacy_record(
    submission: &LegacySubmission,
    writer: &Writer,
    bantime: Option<BanTime>,
    now: DateTime<Utc>,
) -> Result<Record, getrandom::Error> {
    let request = Request {
        op: submission.action().op(),
        targets: vec![submission.target()],
        ports: PortSpec::all(),
        jail: Some(submission.jail().clone()),
        bantime,
    };
    let writer = Writer {
        node: submission.host().clone(),
        ..writer.clone()
    };
    build_records(&request, &writer, now).map(|mut records| records.remove(0))
}

/// Where the records went.
#[derive(Debug)]
pub enum Outcome {
    /// Sent to the log: `total` records, counting older spooled ones
    /// that went out ahead of them, of which it refused `refused` for good
    /// (a publisher's `NAK`: not appended, not kept).
    Delivered { total: usize, refused: u64 },
    /// Kept in the spool, for the reason given.
    Spooled { reason: String },
    /// Kept in this run's journal, fsynced: delivery did not finish in
    /// time, and may still be under way. If it does not finish, `flush` or
    /// the watcher delivers the journal once its run has ended.
    Journaled { path: PathBuf, reason: String },
}

/// Delivers `records` through `publisher`, giving up after `deadline`.
/// The publisher is only borrowed: a long-lived writer (the monitor) keeps
/// its connection from one batch to the next.
///
/// If older records wait in the spool, the new ones join the queue behind
/// them and the whole spool is flushed, so that the log keeps each host's
/// records in order.
pub fn deliver(
    records: Vec<Record>,
    publisher: &mut Publisher,
    spool: &Spool,
    deadline: Duration,
) -> Result<Outcome, SpoolError> {
    if spool.is_empty()? {
        deliver_direct(records, publisher, spool, deadline)
    } else {
        spool.put(&records, false)?;
        flush_with_deadline(publisher, spool, deadline)
    }
}

/// Delivers `records` as `banshare ban` does, returning within `deadline +`
/// [`RETURN_GRACE`] even if a call on the mount never returns.
///
/// The records go to a journal of this run first (no fsync: see
/// [`crate::outbox::journal`]), then a detached child process delivers them (or
/// spools them) as [`deliver`] does and removes the journal. If the child
/// does not report in time, or dies, the journal is fsynced and left to it,
/// or to `flush` once it is dead. Call it only while the process has a
/// single thread (see [`detach::run_detached`]), with a publisher that has
/// not connected yet: the child connects, so the parent holds no session.
pub fn deliver_journaled(
    records: Vec<Record>,
    publisher: &mut Publisher,
    spool: &Spool,
    deadline: Duration,
) -> Result<Outcome, SpoolError> {
    let journal = match spool.new_journal(&records) {
        Ok(journal) => journal,
        Err(e) => {
            // A full or broken local disk must not stop a delivery the
            // share can take: deliver as before journals, in this process.
            log::warn!("delivering without a journal: {e}");
            return deliver(records, publisher, spool, deadline);
        }
    };
    // The records move into whichever process delivers: the child, or this
    // one if no child can be started. Either connects the publisher.
    let mut work = Some(records);
    let detached = detach::run_detached(deadline + RETURN_GRACE, || {
        let records = work.take().expect("runs once");
        report_line(deliver_from_journal(
            &journal, records, publisher, spool, deadline,
        ))
    });
    let detached = match detached {
        Ok(d) => d,
        Err(e) => {
            log::warn!("cannot start the delivery process ({e}); delivering here");
            let records = work.take().expect("the child never ran");
            return deliver_from_journal(&journal, records, publisher, spool, deadline);
        }
    };
    // The child's warnings (a broken stale lock, a corrupt spool file),
    // already formatted and filtered by the logger it inherited: passed on
    // as they are, not logged a second time.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), &detached.messages);
    match detached.waited {
        Waited::Reported(line) => match parse_report(&line) {
            Ok(outcome) => Ok(outcome),
            Err(reason) => keep_journal(&journal, reason),
        },
        Waited::Died => keep_journal(
            &journal,
            format!("the delivery process {} died", detached.pid),
        ),
        Waited::TimedOut => keep_journal(
            &journal,
            format!(
                "the log did not answer within {:?}; delivery goes on in process {}",
                deadline + RETURN_GRACE,
                detached.pid
            ),
        ),
    }
}

/// As [`deliver_journaled`], but delivers in this process, with no child:
/// for a log on a local disk (see [`crate::follow::mode::disk_filesystem`]),
/// whose calls answer or fail rather than hang the way a network mount's
/// can, so there is nothing to walk away from. That saves `banshare ban` a
/// fork and a process exit, a third of its time on such a log. The journal
/// stays: a run killed while it waits for the lock (another writer, local
/// or through the share, holds it) leaves its records to `flush` or the
/// watcher, as a detached run does. Returns within `deadline` and a little
/// more, whatever the lock does. The transport is called on this thread
/// too ([`Publisher::on_this_thread`]): the lock waits are bounded by the
/// lock timeout, which `deadline` includes, and the rest does not hang.
pub fn deliver_journaled_here(
    records: Vec<Record>,
    publisher: &mut Publisher,
    spool: &Spool,
    deadline: Duration,
) -> Result<Outcome, SpoolError> {
    publisher.on_this_thread();
    let journal = match spool.new_journal(&records) {
        Ok(journal) => journal,
        Err(e) => {
            log::warn!("delivering without a journal: {e}");
            return deliver(records, publisher, spool, deadline);
        }
    };
    match deliver_from_journal(&journal, records, publisher, spool, deadline) {
        Ok(outcome) => Ok(outcome),
        Err(e) => keep_journal(&journal, e.to_string()),
    }
}

/// The child's side of [`deliver_journaled`], and all of
/// [`deliver_journaled_here`].
fn deliver_from_journal(
    journal: &Journal,
    records: Vec<Record>,
    publisher: &mut Publisher,
    spool: &Spool,
    deadline: Duration,
) -> Result<Outcome, SpoolError> {
    if !spool.is_empty()? {
        // Older records wait: queue behind them, as in `deliver`.
        spool.adopt(journal, false)?;
        return flush_with_deadline(publisher, spool, deadline);
    }
    let outcome = append_or_keep(&records, publisher, deadline, |uncertain| {
        spool.adopt(journal, uncertain)
    })?;
    if let Outcome::Delivered { .. } = outcome
        && let Err(e) = journal.remove()
    {
        // Harmless: flush finds its records in the log.
        log::warn!(
            "delivered, but cannot remove journal {}: {e}",
            journal.path().display()
        );
    }
    Ok(outcome)
}

/// Fsyncs the journal so that it survives a crash, and says where it is.
fn keep_journal(journal: &Journal, reason: String) -> Result<Outcome, SpoolError> {
    journal.sync().map_err(|source| SpoolError::Io {
        path: journal.path().to_owned(),
        source,
    })?;
    Ok(Outcome::Journaled {
        path: journal.path().to_owned(),
        reason,
    })
}

/// The child's report: `D <total>`, `S <reason>` or `E <error>`.
fn report_line(result: Result<Outcome, SpoolError>) -> String {
    match result {
        Ok(Outcome::Delivered { total, refused }) => format!("D {total} {refused}"),
        Ok(Outcome::Spooled { reason }) => format!("S {reason}"),
        Ok(Outcome::Journaled { reason, .. }) => format!("E {reason}"),
        Err(e) => format!("E {e}"),
    }
}

/// Reads [`report_line`]'s line back; an `E` report (the journal is still
/// there) or a garbled one is the reason to keep the journal.
fn parse_report(line: &str) -> Result<Outcome, String> {
    let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
    match kind {
        "D" => match rest.split_once(' ').map(|(t, r)| (t.parse(), r.parse())) {
            Some((Ok(total), Ok(refused))) => Ok(Outcome::Delivered { total, refused }),
            _ => Err(format!(
                "garbled report from the delivery process: {line:?}"
            )),
        },
        "S" => Ok(Outcome::Spooled {
            reason: rest.to_owned(),
        }),
        "E" => Err(rest.to_owned()),
        _ => Err(format!(
            "garbled report from the delivery process: {line:?}"
        )),
    }
}

fn deliver_direct(
    records: Vec<Record>,
    publisher: &mut Publisher,
    spool: &Spool,
    deadline: Duration,
) -> Result<Outcome, SpoolError> {
    append_or_keep(&records, publisher, deadline, |uncertain| {
        spool.put(&records, uncertain)
    })
}

/// Appends `records` as one batch, giving up after `deadline`; if that
/// fails, `keep(uncertain)` stores them in the spool, `uncertain` when
/// part of the batch may be in the log.
fn append_or_keep(
    records: &[Record],
    publisher: &mut Publisher,
    deadline: Duration,
    keep: impl FnOnce(bool) -> Result<PathBuf, SpoolError>,
) -> Result<Outcome, SpoolError> {
    let batch = to_batch(records);
    let appended = publisher.run_with_deadline(deadline, move |transport| {
        let before = transport.refused();
        let result = transport.append(&batch);
        (result, transport.refused() - before)
    });
    match appended {
        Some((Ok(()), refused)) => Ok(Outcome::Delivered {
            total: records.len(),
            refused,
        }),
        Some((Err(e), _)) => {
            let reason = e.to_string();
            keep(!e.wrote_nothing()).map_err(|source| not_kept(&reason, source))?;
            Ok(Outcome::Spooled { reason })
        }
        None => {
            // The write may still land after we give up, so mark the batch
            // uncertain: flush will look its ids up before sending it.
            let reason = format!("the log did not answer within {deadline:?}");
            keep(true).map_err(|source| not_kept(&reason, source))?;
            Ok(Outcome::Spooled { reason })
        }
    }
}

fn not_kept(delivery: &str, source: SpoolError) -> SpoolError {
    SpoolError::NotKept {
        delivery: delivery.to_owned(),
        source: Box::new(source),
    }
}

fn flush_with_deadline(
    publisher: &mut Publisher,
    spool: &Spool,
    deadline: Duration,
) -> Result<Outcome, SpoolError> {
    let worker_spool = spool.clone();
    let flushed = publisher.run_with_deadline(deadline, move |transport| {
        let before = transport.refused();
        let result = worker_spool.flush(transport, deadline);
        (result, transport.refused() - before)
    });
    let (flushed, refused) = match flushed {
        Some((result, refused)) => (Some(result), refused),
        None => (None, 0),
    };
    match flushed {
        Some(Ok(FlushReport {
            batches_left: 0,
            delivered,
            ..
        })) => Ok(Outcome::Delivered {
            total: delivered,
            refused,
        }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::testing::SlowLog;
    use crate::transport::{Transport, TransportError};

    fn records() -> Vec<Record> {
        let line = "<13>Nov 21 18:28:04 t[1]: HOST 192.0.2.1 PORT 22 id=0123456789abcdef\n";
        vec![crate::record::parse(line.as_bytes()).unwrap()]
    }

    fn files(spool: &Spool) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(spool.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// A confirmed delivery removes the journal. `banshare ban` hands over a
    /// publisher that has not connected: the delivering child opens the
    /// transport, so the parent, which must stay single-threaded, never
    /// holds a session.
    #[test]
    fn a_confirmed_delivery_removes_the_journal_and_only_the_child_connects() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        // Counts in this process's memory: the child's count is its own.
        let opened_here = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = opened_here.clone();
        let mut log = Publisher::new(move || {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::new(SlowLog {
                delay: Duration::ZERO,
            })
        });
        let outcome =
            deliver_journaled(records(), &mut log, &spool, Duration::from_secs(10)).unwrap();
        assert!(
            matches!(
                outcome,
                Outcome::Delivered {
                    total: 1,
                    refused: 0
                }
            ),
            "{outcome:?}"
        );
        assert!(files(&spool).is_empty(), "{:?}", files(&spool));
        let opened_here = opened_here.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(opened_here, 0, "the parent opened the transport");
    }

    /// A log that notes the thread each append ran on.
    struct ThreadNotingLog(std::sync::Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>);

    impl Transport for ThreadNotingLog {
        fn append(&mut self, _: &[u8]) -> Result<(), TransportError> {
            self.0.lock().unwrap().push(std::thread::current().id());
            Ok(())
        }
    }

    /// A log on a local disk is appended to from the calling thread: no
    /// worker thread to start and wait for.
    #[test]
    fn a_delivery_here_appends_from_this_thread_and_removes_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let noted = seen.clone();
        let mut log = Publisher::new(move || Box::new(ThreadNotingLog(noted.clone())));
        let outcome =
            deliver_journaled_here(records(), &mut log, &spool, Duration::from_secs(10)).unwrap();
        assert!(
            matches!(outcome, Outcome::Delivered { total: 1, .. }),
            "{outcome:?}"
        );
        assert_eq!(*seen.lock().unwrap(), [std::thread::current().id()]);
        assert!(files(&spool).is_empty(), "{:?}", files(&spool));
    }

    #[test]
    fn a_delivery_past_its_deadline_is_spooled_as_uncertain() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut log = Publisher::new(|| {
            Box::new(SlowLog {
                delay: Duration::from_secs(30),
            })
        });
        let outcome =
            deliver_journaled(records(), &mut log, &spool, Duration::from_millis(100)).unwrap();
        assert!(matches!(outcome, Outcome::Spooled { .. }), "{outcome:?}");
        let names = files(&spool);
        assert!(
            names.len() == 1 && names[0].ends_with(".uncertain"),
            "{names:?}"
        );
    }

    /// A log that refuses every batch.
    struct RefusingLog;

    impl Transport for RefusingLog {
        fn append(&mut self, _: &[u8]) -> Result<(), TransportError> {
            Err(TransportError::Missing {
                log: "/share/newbans.log".into(),
                hint: "is the share mounted?",
            })
        }
    }

    #[test]
    fn records_neither_delivered_nor_spooled_say_why_delivery_failed() {
        let full_spool = |_| {
            Err(SpoolError::Io {
                path: "/var/lib/banshare/spool".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            })
        };
        let err = append_or_keep(
            &records(),
            &mut Publisher::new(|| Box::new(RefusingLog)),
            Duration::from_secs(10),
            full_spool,
        )
        .unwrap_err();
        let text = error_chain(&err);
        assert!(text.contains("/share/newbans.log does not exist"), "{text}");
        assert!(text.contains("No space left"), "{text}");
    }

    fn error_chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    #[test]
    fn reports_read_back() {
        for outcome in [
            Outcome::Delivered {
                total: 3,
                refused: 1,
            },
            Outcome::Spooled {
                reason: "why not".into(),
            },
        ] {
            let line = report_line(Ok(outcome));
            assert_eq!(report_line(Ok(parse_report(&line).unwrap())), line);
        }
        assert_eq!(parse_report("E disk on fire").unwrap_err(), "disk on fire");
        assert!(parse_report("Z").is_err());
    }

    /// A legacy ZeroMQ submission makes the record the monitor would write
    /// for the same fail2ban.log line, under the submitting host's name,
    /// signed by the writer's key; its legacy broadcast is the ACK again.
    #[test]
    fn zmq_legacy_submission_becomes_a_monitor_like_record() {
        use crate::transport::zmq::message::{self, LegacyPolicy, Message};

        let key = std::sync::Arc::new(ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
        let writer = Writer {
            node: "publisher".parse().unwrap(),
            tag: "banshare".parse().unwrap(),
            pid: 42,
            key: Some(key.clone()),
        };
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-21T18:28:04.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let bantime = Some(BanTime::Seconds(1800));
        for (ack, op) in [
            ("web1|sshd|Ban|203.0.113.9", Op::Ban),
            ("web1.example.com|nginx-auth|UnBan|2001:db8::9", Op::Unban),
        ] {
            let Ok(Message::Legacy(submission)) =
                message::parse(ack.as_bytes(), &LegacyPolicy::Open)
            else {
                panic!("{ack} refused");
            };
            let record = build_legacy_record(&submission, &writer, bantime, now).unwrap();
            let f = &record.fields;
            assert_eq!(record.op, op);
            assert_eq!(record.target, submission.target());
            assert_eq!(record.ports, PortSpec::all());
            assert_eq!(f.jail.as_ref(), Some(submission.jail()));
            assert_eq!(f.node.as_ref(), Some(submission.host()));
            assert_eq!(f.ts, Some(now.trunc_subsecs(3)));
            assert_eq!(f.bantime, if op == Op::Ban { bantime } else { None });
            assert!(f.id.is_some());
            assert_eq!(record.header.tag.as_str(), "banshare");
            // Signed by the publisher's key, over the submitting host's name.
            let line = format!("{} {}", submission.host(), crate::trust::public_line(&key));
            let keys = crate::trust::TrustedKeys::parse(&line, "test").unwrap();
            let policy = crate::trust::TrustPolicy {
                keys,
                require_signed: true,
                allow_unsigned_logger: false,
                operators: Vec::new(),
            };
            assert_eq!(
                policy.check(&record),
                Ok(crate::trust::Provenance::Verified)
            );
            assert_eq!(
                crate::record::parse(record.to_string().as_bytes()),
                Ok(record.clone())
            );
            let broadcast = message::legacy_broadcast(&record).unwrap();
            assert_eq!(broadcast, ack.replace("UnBan", "Unban"));
        }
    }
}
