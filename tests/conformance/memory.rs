//! A transport that keeps the log in memory, for the conformance suite
//! only: it shows what a transport that pushes records (ZeroMQ, NATS
//! JetStream) has to provide, and that adding one takes this module plus
//! one line in the suite's table of transports.
//!
//! The log is a [`Bus`]: a list of segments of records, as a message
//! broker keeps a stream. [`Bus::roll`] starts a new segment, the broker's
//! equivalent of rotating a file: a feed reads the old segment to its end
//! before it goes on to the new one. A position is a segment and an index
//! into it. [`Bus::set_online`] is the switch that takes the transport
//! away and brings it back.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use banshare::follow::{Handle, Mode, Msg};
use banshare::outbox::append::deliver;
use banshare::outbox::spool::{Spool, to_batch};
use banshare::record::{MAX_LINE_LEN, RecordId};
use banshare::transport::feed::Unread;
use banshare::transport::{
    Entry, Feed, FeedError, Notice, Position, Publisher, Transport, TransportError,
};
use serde_json::json;

use crate::{Plan, Subject, records};

/// What [`Position::kind`] says for a position in a bus.
const KIND: &str = "memory";

/// The shared log: every writer and every feed of one log hold the same bus.
#[derive(Default)]
pub struct Bus {
    name: String,
    state: Mutex<State>,
    online: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Never empty once the bus exists: the last one takes appends.
    segments: Vec<Vec<Vec<u8>>>,
    /// The loops to wake when records arrive.
    watchers: Vec<Handle>,
}

impl Bus {
    pub fn new(name: &str) -> Arc<Bus> {
        Arc::new(Bus {
            name: format!("memory://{name}"),
            state: Mutex::new(State {
                segments: vec![Vec::new()],
                watchers: Vec::new(),
            }),
            online: AtomicBool::new(true),
        })
    }

    /// Takes the bus away (`false`) or brings it back: while away, appends
    /// and reads fail as a broker that does not answer.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::SeqCst);
    }

    /// Starts a new segment: appends go there from now on.
    pub fn roll(&self) {
        self.lock().segments.push(Vec::new());
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_online(&self) -> io::Result<()> {
        if self.online.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the bus is switched off",
            ))
        }
    }
}

/// The write side: appends whole batches, atomically.
pub struct MemoryTransport(pub Arc<Bus>);

impl Transport for MemoryTransport {
    fn append(&mut self, batch: &[u8]) -> Result<(), TransportError> {
        let bus = &self.0;
        bus.check_online()
            .map_err(|source| TransportError::Unreachable {
                log: bus.name.clone(),
                hint: "the bus is switched off",
                source,
            })?;
        let mut state = bus.lock();
        let segment = state.segments.last_mut().expect("a bus has a segment");
        // A batch is whole lines: each one is a record.
        segment.extend(
            batch
                .split_inclusive(|&b| b == b'\n')
                .map(|line| line.strip_suffix(b"\n").unwrap_or(line).to_vec()),
        );
        for watcher in &state.watchers {
            watcher.send(Msg::Changed);
        }
        Ok(())
    }

    /// A bus that keeps its stream can read it back, as JetStream can.
    fn find_ids(
        &mut self,
        ids: &HashSet<RecordId>,
    ) -> Result<Option<HashSet<RecordId>>, TransportError> {
        let bus = &self.0;
        bus.check_online().map_err(|source| TransportError::Read {
            log: bus.name.clone(),
            source,
        })?;
        let state = bus.lock();
        Ok(Some(
            state
                .segments
                .iter()
                .flatten()
                .filter_map(|line| banshare::record::parse(line).ok()?.fields.id)
                .filter(|id| ids.contains(id))
                .collect(),
        ))
    }
}

/// The read side: a segment and the index of the next record in it.
pub struct MemoryFeed {
    bus: Arc<Bus>,
    segment: usize,
    index: usize,
    /// Whether there is a position to tell: something read or resumed.
    placed: bool,
    notices: Vec<Notice>,
}

impl MemoryFeed {
    pub fn new(bus: Arc<Bus>) -> MemoryFeed {
        MemoryFeed {
            bus,
            segment: 0,
            index: 0,
            placed: false,
            notices: Vec::new(),
        }
    }

    /// Records before the position, across segments: the position's `seq`.
    fn seq(&self, state: &State) -> u64 {
        let before: usize = state.segments[..self.segment].iter().map(Vec::len).sum();
        (before + self.index) as u64
    }
}

impl Feed for MemoryFeed {
    fn log(&self) -> &str {
        &self.bus.name
    }

    fn resume(&mut self, saved: &Position) -> Result<(), String> {
        if saved.kind != KIND || saved.log != self.bus.name {
            return Err(format!(
                "a {} position in {} is not one of {}",
                saved.kind, saved.log, self.bus.name
            ));
        }
        let field = |name: &str| {
            saved.at[name]
                .as_u64()
                .ok_or_else(|| format!("position without {name}: {}", saved.at))
        };
        let (segment, index) = (field("segment")? as usize, field("index")? as usize);
        let state = self.bus.lock();
        match state.segments.get(segment) {
            Some(records) if index <= records.len() => {}
            _ => return Err(format!("no record {index} in segment {segment}")),
        }
        (self.segment, self.index, self.placed) = (segment, index, true);
        Ok(())
    }

    fn watch(&mut self, wake: Handle) -> Mode {
        self.bus.lock().watchers.push(wake);
        // Every append wakes the loop; the poll is only a safety net.
        Mode::Native {
            safety: Duration::from_secs(5),
        }
    }

    fn read(&mut self, max: usize) -> Result<Vec<Entry>, FeedError> {
        self.bus
            .check_online()
            .map_err(|e| FeedError::Unreachable(format!("{}: {e}", self.bus.name)))?;
        let state = self.bus.lock();
        let mut entries = Vec::new();
        while entries.len() < max {
            let records = &state.segments[self.segment];
            if let Some(record) = records.get(self.index) {
                entries.push(if record.len() > MAX_LINE_LEN {
                    Entry::TooLong {
                        len: record.len() as u64,
                    }
                } else {
                    Entry::Record(record.clone())
                });
                self.index += 1;
            } else if self.segment + 1 < state.segments.len() {
                // The segment is done for good: a roll went past it.
                self.segment += 1;
                self.index = 0;
                self.notices.push(Notice {
                    warning: false,
                    text: format!("{}: on to segment {}", self.bus.name, self.segment),
                });
            } else {
                break;
            }
        }
        self.placed |= !entries.is_empty();
        Ok(entries)
    }

    fn position(&self) -> Option<Position> {
        if !self.placed {
            return None;
        }
        let state = self.bus.lock();
        Some(Position {
            kind: KIND.into(),
            log: self.bus.name.clone(),
            seq: self.seq(&state),
            at: json!({"segment": self.segment, "index": self.index}),
        })
    }

    fn unread(&mut self, count_max: u64) -> Option<Unread> {
        self.bus.check_online().ok()?;
        let state = self.bus.lock();
        let rest = state.segments[self.segment][self.index..]
            .iter()
            .chain(state.segments[self.segment + 1..].iter().flatten());
        let (mut bytes, mut lines) = (0, 0);
        for record in rest {
            bytes += record.len() as u64 + 1;
            lines += 1;
        }
        Some(Unread {
            bytes,
            lines: (bytes <= count_max).then_some(lines),
        })
    }

    fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }
}

/// The in-memory transport as the conformance suite drives it: one bus
/// per log.
#[derive(Default)]
pub struct Memory {
    buses: Mutex<HashMap<String, Arc<Bus>>>,
}

impl Memory {
    fn bus(&self, log: &str) -> Arc<Bus> {
        let buses = self.buses.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(buses.get(log).expect("the log was created"))
    }
}

impl Subject for Memory {
    fn name(&self) -> &'static str {
        "in-memory (test)"
    }

    fn create_log(&self, log: &str) {
        let mut buses = self.buses.lock().unwrap_or_else(PoisonError::into_inner);
        buses.insert(log.to_owned(), Bus::new(log));
    }

    fn transport(&self, log: &str) -> Box<dyn Transport> {
        Box::new(MemoryTransport(self.bus(log)))
    }

    fn feed(&self, log: &str) -> Box<dyn Feed> {
        Box::new(MemoryFeed::new(self.bus(log)))
    }

    fn write_concurrently(&self, log: &str, plan: &Plan) -> Result<String, String> {
        let bus = self.bus(log);
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..plan.writers)
                .map(|w| {
                    let mut transport = MemoryTransport(Arc::clone(&bus));
                    scope.spawn(move || {
                        for b in 0..plan.batches {
                            let batch = to_batch(&records(&plan.batch(w, b)));
                            transport.append(&batch).map_err(|e| e.to_string())?;
                        }
                        Ok::<(), String>(())
                    })
                })
                .collect();
            for writer in writers {
                writer
                    .join()
                    .map_err(|_| "a writer panicked".to_owned())??;
            }
            Ok(format!(
                "{} threads of one process (a bus in memory has no hosts)",
                plan.writers
            ))
        })
    }

    fn ban(&self, log: &str, targets: &[String], spool: &Path) -> Result<(), String> {
        let bus = self.bus(log);
        let spool = Spool::open(spool).map_err(|e| e.to_string())?;
        let mut publisher = Publisher::new(move || Box::new(MemoryTransport(Arc::clone(&bus))));
        deliver(
            records(targets),
            &mut publisher,
            &spool,
            Duration::from_secs(5),
        )
        .map(drop)
        .map_err(|e| e.to_string())
    }

    fn flush(&self, log: &str, spool: &Path) -> Result<(), String> {
        let spool = Spool::open(spool).map_err(|e| e.to_string())?;
        let mut transport = MemoryTransport(self.bus(log));
        let report = spool
            .flush(&mut transport, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        match report.batches_left {
            0 => Ok(()),
            left => Err(format!("{left} batch(es) left in the spool")),
        }
    }

    fn go_away(&self, log: &str) -> String {
        self.bus(log).set_online(false);
        "a switch: appends and reads fail as a broker that does not answer".into()
    }

    fn come_back(&self, log: &str) {
        self.bus(log).set_online(true);
    }

    fn rotate(&self, log: &str) -> Result<String, String> {
        self.bus(log).roll();
        Ok("segment roll: appends go to a new segment".into())
    }
}
