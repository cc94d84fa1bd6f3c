//! The conformance suite: the same cases, run against every transport, on
//! real test hosts where the transport crosses hosts. Each transport is a
//! [`Subject`]: banshare's write side ([`Transport`]) and read side
//! ([`Feed`]) for a log, plus what only the test needs (several writers on
//! several hosts at once, taking the transport away, rotating the log).
//!
//! The cases go through the library's traits only, as the watcher, the
//! appender and the spool do. A new transport is added with a module that
//! implements those traits and [`Subject`], and one line in [`subjects`]:
//! [`memory`] is one, kept in memory, defined here in the tests.
//!
//! One test runs every case for every transport on one cluster of test
//! hosts, prints a table of the cases against the transports (straight to
//! stdout, past the test harness's capture, and to
//! `target/conformance-table.txt`), and fails at the end if any cell
//! failed. A cell says `skipped: <why>` where a transport cannot run a
//! case; only the cases marked skippable allow it, never the cross-host
//! ones.
//!
//! Needs root (network namespaces, sshd, sshfs); fails, never skips,
//! without it.

mod support;

#[path = "conformance/files.rs"]
mod files;
#[path = "conformance/memory.rs"]
mod memory;
#[cfg(feature = "nats")]
#[path = "conformance/nats.rs"]
mod nats;
#[cfg(feature = "zmq")]
#[path = "conformance/zmq.rs"]
mod zmq;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use banshare::backend::{Action, Backend, BackendError};
use banshare::follow::{Handle, Mode, Msg, Wake};
use banshare::outbox::append::{Request, Writer, build_records};
use banshare::outbox::spool::{Spool, to_batch};
use banshare::record::{MAX_LINE_LEN, Op, PortSpec, Record, Target};
use banshare::state::StateDir;
use banshare::transport::{Entry, Feed, FeedError, Position, Transport};
use banshare::watch::daemon::{Daemon, Options};
use banshare::watch::policy::PolicySettings;

use support::cluster::{Cluster, require_root};
use support::wait_until;

/// How long a case waits for records to arrive through a feed, or for a
/// transport to come back: far above what any transport needs here.
const PATIENCE: Duration = Duration::from_secs(30);

/// One transport, as the suite drives it. Logs are named (`c1.log`, ...):
/// each case works on a fresh one.
pub trait Subject {
    /// The column heading.
    fn name(&self) -> &'static str;

    /// Makes an empty log called `log`, as an administrator would: banshare
    /// never creates one.
    fn create_log(&self, log: &str);

    /// The write side for `log`, as a node writes to it.
    fn transport(&self, log: &str) -> Box<dyn Transport>;

    /// A new read side for `log`, as another node reads it.
    fn feed(&self, log: &str) -> Box<dyn Feed>;

    /// Runs the writers of `plan` all at once, from as many hosts as the
    /// transport can have, and waits for them. Returns how they ran, for
    /// the table.
    fn write_concurrently(&self, log: &str, plan: &Plan) -> Result<String, String>;

    /// Shares `targets` as a node's `banshare ban` does, with its spool in
    /// `spool`: delivered, or spooled when the log cannot be reached.
    fn ban(&self, log: &str, targets: &[String], spool: &Path) -> Result<(), String>;

    /// Delivers what waits in `spool`, as `banshare flush` does. `Err`
    /// when something is left in it.
    fn flush(&self, log: &str, spool: &Path) -> Result<(), String>;

    /// Takes the transport away (a file server down, a missing log, a
    /// broker switched off). Returns how, for the table.
    fn go_away(&self, log: &str) -> String;

    /// Undoes [`Subject::go_away`].
    fn come_back(&self, log: &str);

    /// Rotates `log`: its records move away, and appends from now on go
    /// to a new, empty log. Returns how, for the table; `Err` to skip,
    /// saying why.
    fn rotate(&self, log: &str) -> Result<String, String>;

    /// How the log's server refuses what is no record at submission (a
    /// ZeroMQ publisher parses every message), if it does: then garbage
    /// never reaches a feed, and the hostile-lines case checks that the
    /// records around it still come. `None` (the default): the log keeps
    /// any line, and the feed hands it out as it is.
    fn refuses_garbage(&self) -> Option<&'static str> {
        None
    }
}

/// Concurrent writers: `writers` of them, each sharing `batches` batches
/// of `per_batch` addresses, one after the other. Writer `w` shares
/// `10.2.w.0`, `10.2.w.1`, ... in that order.
pub struct Plan {
    pub writers: usize,
    pub batches: usize,
    pub per_batch: usize,
}

impl Plan {
    /// The addresses of writer `w`'s batch `b`, in order.
    pub fn batch(&self, w: usize, b: usize) -> Vec<String> {
        (0..self.per_batch)
            .map(|i| format!("10.2.{w}.{}", b * self.per_batch + i))
            .collect()
    }

    fn total(&self) -> usize {
        self.writers * self.batches * self.per_batch
    }
}

/// The transports under test. A new one is one more line here.
/// `BANSHARE_CONFORMANCE_ONLY=NATS,ZeroMQ` (column headings) runs only
/// those, for working on one transport; CI runs them all.
fn subjects(cluster: &Cluster) -> Vec<Box<dyn Subject + '_>> {
    let only = std::env::var("BANSHARE_CONFORMANCE_ONLY").ok();
    let wanted = |s: &(dyn Subject + '_)| {
        only.as_deref()
            .is_none_or(|only| only.split(',').any(|name| name == s.name()))
    };
    every_subject(cluster)
        .into_iter()
        .filter(|s| wanted(&**s))
        .collect()
}

fn every_subject(cluster: &Cluster) -> Vec<Box<dyn Subject + '_>> {
    vec![
        Box::new(files::FileShare::local()),
        Box::new(files::FileShare::sshfs(cluster)),
        Box::new(files::FileShare::sftp(cluster)),
        Box::new(memory::Memory::default()),
        #[cfg(feature = "zmq")]
        Box::new(zmq::ZeroMq::new(cluster)),
        #[cfg(feature = "nats")]
        Box::new(nats::Nats::new(cluster)),
        #[cfg(feature = "nats")]
        Box::new(nats::Nats::cluster(cluster)),
    ]
}

/// What a case found for one transport: a note for the table when it
/// passed, `Skip` with the reason, or the failure.
enum Cell {
    Pass(String),
    Skip(String),
    Fail(String),
}

type Outcome = Result<String, String>;

/// A case: run on one transport, it passes with a note, skips (a note
/// starting with [`SKIP`]), or fails.
type Case = fn(&dyn Subject) -> Outcome;

/// A row of the table.
struct Row {
    heading: &'static str,
    case: Case,
    /// Whether a transport may skip it, saying why; the cross-host cases
    /// may not be skipped.
    skippable: bool,
}

/// The cases, in table order.
const CASES: &[Row] = &[
    Row {
        heading: "1 append, read back in order",
        case: append_and_read_back,
        skippable: false,
    },
    Row {
        heading: "2 concurrent writers, no torn/lost line",
        case: concurrent_writers,
        skippable: false,
    },
    Row {
        heading: "3 restart at a saved position",
        case: restart_at_saved_position,
        skippable: false,
    },
    Row {
        heading: "4 away and back: spool, then delivery",
        case: away_and_back,
        skippable: false,
    },
    Row {
        heading: "5 rotation (or equivalent)",
        case: rotation,
        skippable: true,
    },
    Row {
        heading: "6 lag through the feed (unread)",
        case: lag_through_the_feed,
        skippable: false,
    },
    Row {
        heading: "7 the watcher daemon, unchanged, on it",
        case: the_watcher_runs_on_it,
        skippable: false,
    },
    Row {
        heading: "8 garbage and over-long lines pass as such",
        case: hostile_lines,
        skippable: false,
    },
];

/// Prefix of an `Ok` note that makes the cell a skip.
const SKIP: &str = "skip:";

#[test]
fn every_transport_passes_every_case() {
    require_root();
    let started = Instant::now();
    let cluster = Cluster::new("conform", 3);
    for node in 0..3 {
        cluster.mount(node);
    }
    let subjects = subjects(&cluster);
    let mut table: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
    for (s, subject) in subjects.iter().enumerate() {
        for (c, row) in CASES.iter().enumerate() {
            let subject = &**subject;
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| (row.case)(subject)))
                .unwrap_or_else(|p| Err(panic_text(&p)));
            let cell = match outcome {
                Ok(note) => match note.strip_prefix(SKIP) {
                    Some(why) if row.skippable => Cell::Skip(why.trim().to_owned()),
                    Some(why) => Cell::Fail(format!("may not be skipped ({})", why.trim())),
                    None => Cell::Pass(note),
                },
                Err(e) => Cell::Fail(e),
            };
            table.insert((c, s), cell);
        }
    }
    let names: Vec<&str> = subjects.iter().map(|s| s.name()).collect();
    let text = render(&names, &table, started.elapsed());
    // Straight to the process's stdout, not through the test harness's
    // capture: shown with or without --nocapture, passed or failed.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    let file = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp is in target/")
        .join("conformance-table.txt");
    std::fs::write(&file, &text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));

    let failed: Vec<String> = table
        .iter()
        .filter_map(|((c, s), cell)| match cell {
            Cell::Fail(e) => Some(format!("{} / {}: {e}", CASES[*c].heading, names[*s])),
            _ => None,
        })
        .collect();
    assert!(failed.is_empty(), "failed cells:\n{}", failed.join("\n"));
}

fn panic_text(payload: &Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    format!("panicked: {text}")
}

/// The table: cases down, transports across; every cell's note follows,
/// numbered, so that columns stay narrow.
fn render(names: &[&str], table: &BTreeMap<(usize, usize), Cell>, took: Duration) -> String {
    let mut notes = Vec::new();
    let mut rows = vec![
        std::iter::once("case".to_owned())
            .chain(names.iter().map(|n| n.to_string()))
            .collect::<Vec<_>>(),
    ];
    for (c, Row { heading: case, .. }) in CASES.iter().enumerate() {
        let mut row = vec![case.to_string()];
        for (s, name) in names.iter().enumerate() {
            let (word, note) = match &table[&(c, s)] {
                Cell::Pass(note) => ("pass", note),
                Cell::Skip(why) => ("skipped", why),
                Cell::Fail(e) => ("FAIL", e),
            };
            if note.is_empty() {
                row.push(word.to_owned());
            } else {
                notes.push(format!(
                    "[{}] {case} / {name}: {word}: {note}",
                    notes.len() + 1
                ));
                row.push(format!("{word} [{}]", notes.len()));
            }
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::from("\nbanshare transport conformance\n");
    for (n, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        }
    }
    out.push('\n');
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    let _ = writeln!(out, "\n{:.1} s in all", took.as_secs_f64());
    out
}

// ---------------------------------------------------------------- records

/// Ban records for `targets`, as `banshare ban` makes them.
pub fn records(targets: &[String]) -> Vec<Record> {
    let request = Request {
        op: Op::Ban,
        targets: targets
            .iter()
            .map(|t| t.parse::<Target>().expect("a test address"))
            .collect(),
        ports: PortSpec::all(),
        jail: None,
        bantime: None,
    };
    let writer = Writer {
        node: "conformance".parse().unwrap(),
        tag: "banshare".parse().unwrap(),
        pid: std::process::id(),
        key: None,
    };
    build_records(&request, &writer, chrono::Utc::now()).expect("random ids")
}

/// Appends one batch of records for `targets`; returns the lines as the
/// feed must hand them out (without their newline).
fn append(t: &mut dyn Transport, targets: &[String]) -> Result<Vec<Vec<u8>>, String> {
    let batch = to_batch(&records(targets));
    t.append(&batch).map_err(|e| format!("append: {e}"))?;
    Ok(batch
        .split_inclusive(|&b| b == b'\n')
        .map(|l| l[..l.len() - 1].to_vec())
        .collect())
}

/// `n` addresses of case `case`, starting at number `from`.
fn addresses(case: u8, from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("10.{case}.{}.{}", i / 250, i % 250))
        .collect()
}

// ------------------------------------------------------------------- feed

/// Reads until `n` records came, or fails after [`PATIENCE`]. Errors from
/// the feed are retried (a share reconnecting); they are kept for the
/// failure message.
fn read_n(feed: &mut dyn Feed, n: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut got = Vec::new();
    let mut last_error = None;
    let arrived = wait_until(PATIENCE, || {
        match feed.read(n - got.len()) {
            Ok(entries) => got.extend(entries),
            Err(e) => last_error = Some(e.to_string()),
        }
        got.len() >= n
    });
    let _ = feed.take_notices();
    if !arrived {
        return Err(format!(
            "{} of {n} records arrived through the feed within {PATIENCE:?} (last error: {})",
            got.len(),
            last_error.as_deref().unwrap_or("none")
        ));
    }
    got.into_iter()
        .map(|entry| match entry {
            Entry::Record(bytes) => Ok(bytes),
            Entry::TooLong { len } => Err(format!("an over-long record of {len} bytes")),
        })
        .collect()
}

/// Fails if the feed hands out anything more now.
fn nothing_more(feed: &mut dyn Feed) -> Result<(), String> {
    match feed.read(100) {
        Ok(more) if more.is_empty() => Ok(()),
        Ok(more) => Err(format!(
            "{} record(s) more than written, first {}",
            more.len(),
            describe(&more[0])
        )),
        Err(e) => Err(format!("reading once more: {e}")),
    }
}

/// An entry for a failure message, cut short.
fn describe(entry: &Entry) -> String {
    match entry {
        Entry::Record(bytes) if bytes.len() > 200 => format!(
            "{:?}... ({} bytes)",
            String::from_utf8_lossy(&bytes[..200]),
            bytes.len()
        ),
        Entry::Record(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
        Entry::TooLong { len } => format!("an over-long record of {len} bytes"),
    }
}

/// Whether the feed hands out exactly `want`, in order, and then nothing.
fn read_exactly(feed: &mut dyn Feed, want: &[Vec<u8>], what: &str) -> Result<(), String> {
    let got = read_n(feed, want.len()).map_err(|e| format!("{what}: {e}"))?;
    if got != want {
        let first = got.iter().zip(want).position(|(g, w)| g != w);
        return Err(format!(
            "{what}: the records differ from those written, first at {first:?}: got {:?}",
            first.map(|i| String::from_utf8_lossy(&got[i]).into_owned())
        ));
    }
    nothing_more(feed).map_err(|e| format!("{what}: {e}"))
}

/// The ban target of a record line; `Err` for a torn or garbage line.
fn target_of(line: &[u8]) -> Result<String, String> {
    banshare::record::parse(line)
        .map(|r| r.target.to_string())
        .map_err(|e| format!("torn or bad line {:?}: {e}", String::from_utf8_lossy(line)))
}

// ------------------------------------------------------------------ cases

/// Several batches, read back: exactly those records, in order. A feed
/// that says it wakes the loop on changes (rather than asking it to poll)
/// does so for an append.
fn append_and_read_back(s: &dyn Subject) -> Outcome {
    let log = "c1.log";
    s.create_log(log);
    let mut feed = s.feed(log);
    let (mut wake, handle) = Wake::new(Mode::Poll(Duration::from_secs(1)));
    let mode = feed.watch(handle);
    wake.set_mode(mode);
    let mut t = s.transport(log);
    let mut written = Vec::new();
    for b in 0..5 {
        written.extend(append(&mut *t, &addresses(1, b * 20, 20))?);
    }
    if let Mode::Native { safety } | Mode::Pushed { safety } = mode {
        // The first wake-up, within the safety interval, must be the
        // feed's own: one for the batches just appended.
        match wake.wait() {
            Some(Msg::Changed) => {}
            other => {
                return Err(format!(
                    "watching ({mode:?}), the appends did not wake the loop within {safety:?} \
                     ({other:?})",
                ));
            }
        }
    }
    read_exactly(&mut *feed, &written, "5 batches of 20")?;
    // More after the feed caught up comes too.
    let more = append(&mut *t, &addresses(1, 100, 3))?;
    read_exactly(&mut *feed, &more, "3 more after catching up")?;
    Ok(match mode {
        Mode::Native { safety } => format!("woken by the feed on append (safety poll {safety:?})"),
        Mode::Poll(every) => format!("the feed asks for a poll every {every:?}"),
        Mode::Pushed { safety } => {
            format!("woken by the publisher's broadcast (safety poll {safety:?})")
        }
    })
}

/// Writers on several hosts at once: every record arrives whole, once,
/// and each writer's records in its order.
fn concurrent_writers(s: &dyn Subject) -> Outcome {
    let log = "c2.log";
    s.create_log(log);
    let plan = Plan {
        writers: 4,
        batches: 5,
        per_batch: 10,
    };
    let how = s.write_concurrently(log, &plan)?;
    let mut feed = s.feed(log);
    let lines = read_n(&mut *feed, plan.total())?;
    let mut next = vec![0usize; plan.writers];
    let mut seen = HashSet::new();
    for line in &lines {
        let target = target_of(line)?;
        if !seen.insert(target.clone()) {
            return Err(format!("{target} arrived twice"));
        }
        let (w, i) = writer_and_number(&target)?;
        let expected = next.get_mut(w).ok_or(format!("unexpected {target}"))?;
        if i != *expected {
            return Err(format!(
                "writer {w}: {target} came where 10.2.{w}.{expected} was due"
            ));
        }
        *expected += 1;
    }
    nothing_more(&mut *feed)?;
    Ok(how)
}

/// `10.2.w.i` to `(w, i)`.
fn writer_and_number(target: &str) -> Result<(usize, usize), String> {
    let parts: Vec<usize> = target
        .split('.')
        .map(|p| p.parse().map_err(|_| format!("unexpected target {target}")))
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [10, 2, w, i] => Ok((w, i)),
        _ => Err(format!("unexpected target {target}")),
    }
}

/// Read some, save the position (through JSON, as the state file keeps
/// it), stop; write more; a new feed resumed there reads exactly the rest.
fn restart_at_saved_position(s: &dyn Subject) -> Outcome {
    let log = "c3.log";
    s.create_log(log);
    let mut t = s.transport(log);
    let first = append(&mut *t, &addresses(3, 0, 10))?;
    let saved = {
        let mut feed = s.feed(log);
        let part = read_n(&mut *feed, 4)?;
        if part != first[..4] {
            return Err("the first 4 records are not the first 4 written".into());
        }
        feed.position()
            .ok_or("no position after reading 4 records")?
    };
    let json = serde_json::to_string(&saved).map_err(|e| e.to_string())?;
    let restored: Position = serde_json::from_str(&json).map_err(|e| format!("{json}: {e}"))?;
    if restored != saved {
        return Err(format!("the position changed through JSON: {json}"));
    }
    let second = append(&mut *t, &addresses(3, 10, 5))?;

    let mut feed = s.feed(log);
    let foreign = Position {
        kind: "no-such-kind".into(),
        ..restored.clone()
    };
    if feed.resume(&foreign).is_ok() {
        return Err("a position of another kind of feed was accepted".into());
    }
    let mut feed = s.feed(log);
    feed.resume(&restored)
        .map_err(|e| format!("resume at {json}: {e}"))?;
    let rest: Vec<Vec<u8>> = first[4..].iter().chain(&second).cloned().collect();
    read_exactly(&mut *feed, &rest, "after the restart")?;
    Ok(String::new())
}

/// The transport goes away: appends fail before writing anything, `ban`
/// spools, the feed hands out nothing. It comes back: `flush` delivers,
/// the same write side works again by itself, and the feed reads the
/// spooled records once, then the new ones.
fn away_and_back(s: &dyn Subject) -> Outcome {
    let log = "c4.log";
    s.create_log(log);
    let spool_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spool = spool_dir.path();
    let mut feed = s.feed(log);
    let mut t = s.transport(log);
    let before = append(&mut *t, &addresses(4, 0, 5))?;
    read_exactly(&mut *feed, &before, "before the outage")?;
    let connections = feed.connections();
    let connected = connections.as_ref().map(|c| c.load(Ordering::Relaxed));

    let how = s.go_away(log);
    let while_away = (|| {
        match t.append(&to_batch(&records(&addresses(4, 50, 1)))) {
            Ok(()) => return Err("an append succeeded while away".to_owned()),
            Err(e) if !e.wrote_nothing() => {
                return Err(format!("an append failed while away, after writing: {e}"));
            }
            Err(_) => {}
        }
        let targets = addresses(4, 5, 7);
        s.ban(log, &targets, spool)?;
        let spooled = Spool::open(spool)
            .and_then(|sp| sp.depth())
            .map_err(|e| e.to_string())?;
        if spooled != targets.len() {
            return Err(format!(
                "{spooled} record(s) in the spool while away, not {}",
                targets.len()
            ));
        }
        let feed_said = match feed.read(100) {
            Ok(got) if !got.is_empty() => {
                return Err(format!("{} record(s) read while away", got.len()));
            }
            // An outage must show as one (in `status`, in the log), and as
            // what it is: not as a quiet log, nor as a broken one.
            Ok(_) => return Err("the feed said nothing of the outage".to_owned()),
            Err(FeedError::Missing(_)) => "missing".to_owned(),
            Err(FeedError::Unreachable(_)) => "unreachable".to_owned(),
            Err(FeedError::Other(e)) => {
                return Err(format!(
                    "the feed called the outage neither missing nor unreachable: {e}"
                ));
            }
        };
        Ok((targets, feed_said))
    })();
    s.come_back(log);
    let (targets, feed_said) = while_away?;

    let mut last = String::new();
    let flushed = wait_until(PATIENCE, || match s.flush(log, spool) {
        Ok(()) => true,
        Err(e) => {
            last = e;
            false
        }
    });
    if !flushed {
        return Err(format!(
            "the spool was not delivered after the return: {last}"
        ));
    }
    // The write side kept from before the outage: it recovers by itself.
    let after = records(&addresses(4, 12, 3));
    let recovered = wait_until(PATIENCE, || match t.append(&to_batch(&after)) {
        Ok(()) => true,
        Err(e) => {
            last = e.to_string();
            false
        }
    });
    if !recovered {
        return Err(format!(
            "the write side did not work again after the return: {last}"
        ));
    }
    let want: Vec<String> = targets
        .iter()
        .cloned()
        .chain(after.iter().map(|r| r.target.to_string()))
        .collect();
    let got = read_n(&mut *feed, want.len())?;
    let got: Vec<String> = got.iter().map(|l| target_of(l)).collect::<Result<_, _>>()?;
    if got != want {
        return Err(format!(
            "after the return the feed read {got:?}, not {want:?}"
        ));
    }
    nothing_more(&mut *feed)?;
    if let (Some(count), Some(before)) = (connections, connected) {
        let now = count.load(Ordering::Relaxed);
        if now <= before {
            return Err(format!(
                "the feed counts {now} connection(s), as before the outage: a reconnect went unseen"
            ));
        }
    }
    Ok(format!("{how}; while away, the feed said: {feed_said}"))
}

/// The log is rotated while the feed reads: the feed reads the old log's
/// rest, then the new log, each record once.
fn rotation(s: &dyn Subject) -> Outcome {
    let log = "c5.log";
    s.create_log(log);
    let mut feed = s.feed(log);
    let mut t = s.transport(log);
    let first = append(&mut *t, &addresses(5, 0, 10))?;
    let part = read_n(&mut *feed, 4)?;
    if part != first[..4] {
        return Err("the first 4 records are not the first 4 written".into());
    }
    let tail = append(&mut *t, &addresses(5, 10, 6))?;
    let how = match s.rotate(log) {
        Ok(how) => how,
        Err(why) => return Ok(format!("{SKIP} {why}")),
    };
    let after = append(&mut *t, &addresses(5, 16, 5))?;
    let rest: Vec<Vec<u8>> = first[4..]
        .iter()
        .chain(&tail)
        .chain(&after)
        .cloned()
        .collect();
    read_exactly(&mut *feed, &rest, "across the rotation")?;
    Ok(how)
}

/// What the feed holds past its position, measured through the feed (what
/// `banshare status` shows as the lag, whatever the transport).
fn lag_through_the_feed(s: &dyn Subject) -> Outcome {
    let log = "c6.log";
    s.create_log(log);
    let mut feed = s.feed(log);
    let mut t = s.transport(log);
    let written = append(&mut *t, &addresses(6, 0, 10))?;
    read_n(&mut *feed, 3)?;
    let unread = feed
        .unread(1 << 20)
        .ok_or("the feed cannot tell what is unread")?;
    let bytes: u64 = written[3..].iter().map(|l| l.len() as u64 + 1).sum();
    if unread.lines != Some(7) || unread.bytes != bytes {
        return Err(format!("unread {unread:?}, not 7 records in {bytes} bytes"));
    }
    let position = feed.position().ok_or("no position")?;
    read_n(&mut *feed, 7)?;
    let caught_up = feed.unread(1 << 20).ok_or("cannot tell once caught up")?;
    if caught_up.lines != Some(0) || caught_up.bytes != 0 {
        return Err(format!("caught up, yet unread {caught_up:?}"));
    }
    let end = feed.position().ok_or("no position")?;
    if end.seq <= position.seq {
        return Err(format!(
            "the position's seq did not grow: {} then {}",
            position.seq, end.seq
        ));
    }
    Ok(String::new())
}

/// A backend that only records the bans it is given.
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Backend for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn setup(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn apply(&mut self, batch: &[Action]) -> Result<(), BackendError> {
        let mut applied = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        applied.extend(batch.iter().map(|a| a.target().to_string()));
        Ok(())
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The watcher daemon running on its own thread; stopped when dropped.
struct Running {
    handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
    applied: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Starts `banshare watch`'s daemon (the library's, as the binary
    /// runs it) over `feed`, keeping its state in `state`.
    fn start(feed: Box<dyn Feed>, state: &Path) -> Result<Running, String> {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let opts = Options {
            node: "watcher".into(),
            batch_max: 1000,
            state: StateDir::open(state).map_err(|e| e.to_string())?,
            trust: Default::default(),
            safety_poll: Duration::from_secs(5),
        };
        let policy = PolicySettings {
            ignoreself: false,
            ..PolicySettings::defaults("watcher".parse().unwrap())
        };
        let backend = Box::new(Recorder(Arc::clone(&applied)));
        let (daemon, handle) =
            Daemon::new(feed, opts, policy, backend).map_err(|e| e.to_string())?;
        let thread = std::thread::spawn(move || {
            daemon.run(|| None);
        });
        Ok(Running {
            handle,
            thread: Some(thread),
            applied,
        })
    }

    /// Waits until the backend was given `want`, in that order, and fails
    /// on anything else.
    fn expect(&self, want: &[String], what: &str) -> Result<(), String> {
        let applied = || {
            self.applied
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        };
        wait_until(PATIENCE, || applied().len() >= want.len());
        match applied() {
            got if got == want => Ok(()),
            got => Err(format!("{what}: the watcher applied {got:?}, not {want:?}")),
        }
    }

    fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.handle.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The watcher daemon (`watch::Daemon`, with a backend that records)
/// holds the transport's feed and applies what arrives, woken as the feed
/// says; stopped and started again on the same state, it applies only
/// what came since.
fn the_watcher_runs_on_it(s: &dyn Subject) -> Outcome {
    let log = "c7.log";
    s.create_log(log);
    let state = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut t = s.transport(log);
    let first = addresses(7, 0, 5);
    append(&mut *t, &first)?;
    let watcher = Running::start(s.feed(log), state.path())?;
    watcher.expect(&first, "at start")?;
    let second = addresses(7, 5, 3);
    append(&mut *t, &second)?;
    let both: Vec<String> = first.iter().chain(&second).cloned().collect();
    watcher.expect(&both, "while running")?;
    watcher.stop();

    let third = addresses(7, 8, 2);
    append(&mut *t, &third)?;
    // Without its list of active bans the watcher's policy would not know
    // the first ones again: only the saved position keeps them from being
    // applied twice.
    std::fs::remove_file(state.path().join("active.json")).map_err(|e| e.to_string())?;
    let watcher = Running::start(s.feed(log), state.path())?;
    watcher.expect(&third, "after a restart")?;
    // Anything applied twice would have come by now.
    append(&mut *t, &addresses(7, 10, 1))?;
    let all: Vec<String> = third.iter().cloned().chain(addresses(7, 10, 1)).collect();
    watcher.expect(&all, "after a restart")?;
    Ok(String::new())
}

/// Whatever a writer put in the log comes out as it is, a line that is no
/// record included (the watcher's parser refuses it, not the feed); a line
/// over the longest a record may be comes out as its length alone. The
/// records after them still come.
fn hostile_lines(s: &dyn Subject) -> Outcome {
    let log = "c8.log";
    s.create_log(log);
    let mut feed = s.feed(log);
    let mut t = s.transport(log);
    let good = records(&addresses(8, 0, 2));
    let overlong = MAX_LINE_LEN + 100;
    let mut batch = to_batch(&good[..1]);
    batch.extend_from_slice(b"HOST 1.2.3.4 not a record\n");
    batch.extend(std::iter::repeat_n(b'x', overlong));
    batch.push(b'\n');
    batch.extend(to_batch(&good[1..]));
    t.append(&batch).map_err(|e| format!("append: {e}"))?;
    let line = |r: &Record| r.to_string().into_bytes();
    let refused = s.refuses_garbage();
    let mut want = vec![
        Entry::Record(line(&good[0])),
        Entry::Record(b"HOST 1.2.3.4 not a record".to_vec()),
        Entry::TooLong {
            len: overlong as u64,
        },
        Entry::Record(line(&good[1])),
    ];
    if refused.is_some() {
        want = vec![Entry::Record(line(&good[0])), Entry::Record(line(&good[1]))];
    }
    let mut got = Vec::new();
    wait_until(PATIENCE, || {
        if let Ok(entries) = feed.read(want.len() - got.len()) {
            got.extend(entries);
        }
        got.len() >= want.len()
    });
    if got != want {
        let shown: Vec<String> = got.iter().map(describe).collect();
        return Err(format!("the feed handed out {shown:?}"));
    }
    nothing_more(&mut *feed)?;
    Ok(refused.unwrap_or_default().to_owned())
}
