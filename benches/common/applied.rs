//! Who applied what, when: the nftables reports the latency benches
//! (`benches/nats.rs`, `benches/zmq.rs`) time a ban by, and the percentile
//! they print. Not in `common/mod.rs`, which every bench compiles, so that
//! the benches without subscribers do not carry it as dead code.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::element_addresses;
use crate::support::Daemon;
use crate::support::cluster::Cluster;

/// (subscriber, address, when it reported it applied).
pub type Event = (usize, Ipv4Addr, Instant);

pub struct Events {
    tx: Sender<Event>,
    rx: Receiver<Event>,
}

impl Events {
    pub fn new() -> Events {
        let (tx, rx) = mpsc::channel();
        Events { tx, rx }
    }

    /// `nft monitor new elements` in nodes `0..hosts`, as subscribers
    /// `0..hosts`: the kernel pushes each committed element, so nothing polls.
    pub fn start_nft_monitors(&self, cluster: &Cluster, hosts: usize) -> Vec<Daemon> {
        (0..hosts)
            .map(|node| {
                // stdbuf: one line per event, not one 4 KiB buffer at a time.
                let mut child: Child = cluster
                    .command_in(cluster.node_ns(node), "stdbuf")
                    .args(["-oL", "nft", "monitor", "new", "elements"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start nft monitor");
                let stdout = child.stdout.take().unwrap();
                let tx = self.tx.clone();
                thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        let at = Instant::now();
                        for addr in element_addresses(&line) {
                            let _ = tx.send((node, addr, at));
                        }
                    }
                });
                Daemon(child)
            })
            .collect()
    }

    /// A sender for subscribers other than the nftables monitors.
    pub fn sender(&self) -> Sender<Event> {
        self.tx.clone()
    }
}

#[derive(Default)]
pub struct Seen {
    /// Per address: the subscribers that applied it and when.
    pub by_addr: HashMap<Ipv4Addr, HashMap<usize, Instant>>,
}

impl Seen {
    pub fn take(&mut self, (who, addr, at): Event) {
        self.by_addr
            .entry(addr)
            .or_default()
            .entry(who)
            .or_insert(at);
    }

    /// The first and the last report of `addr`, once all of `who` did.
    pub fn on_all(&self, addr: Ipv4Addr, who: &HashSet<usize>) -> Option<(Instant, Instant)> {
        let got = self.by_addr.get(&addr)?;
        let times: Vec<Instant> = who
            .iter()
            .map(|w| got.get(w).copied())
            .collect::<Option<_>>()?;
        Some((*times.iter().min()?, *times.iter().max()?))
    }
}

/// Submits the ban of `addr` and waits until all of `who` applied it: the
/// first ban pays for connections and caches, which the measured ones must
/// not. Panics when it is not applied everywhere by `deadline` from now.
pub fn warm_up(
    events: &Events,
    who: &[usize],
    addr: Ipv4Addr,
    submit: &mut dyn FnMut(Ipv4Addr) -> Option<Instant>,
    deadline: Duration,
) {
    let who: HashSet<usize> = who.iter().copied().collect();
    let mut seen = Seen::default();
    submit(addr);
    let applied = wait_all(events, &mut seen, addr, &who, Instant::now() + deadline);
    assert!(
        applied.is_some(),
        "the warm-up ban {addr} never reached every subscriber"
    );
}

/// Takes reports until `addr` is applied by all of `who`, or `deadline`.
pub fn wait_all(
    events: &Events,
    seen: &mut Seen,
    addr: Ipv4Addr,
    who: &HashSet<usize>,
    deadline: Instant,
) -> Option<(Instant, Instant)> {
    loop {
        if let Some(t) = seen.on_all(addr, who) {
            return Some(t);
        }
        match events
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(e) => seen.take(e),
            Err(RecvTimeoutError::Timeout) => return None,
            Err(RecvTimeoutError::Disconnected) => unreachable!("Events holds a sender"),
        }
    }
}

/// Takes reports until `until`.
pub fn drain(events: &Events, seen: &mut Seen, until: Instant) {
    while let Ok(e) = events
        .rx
        .recv_timeout(until.saturating_duration_since(Instant::now()))
    {
        seen.take(e);
    }
}

/// Nearest rank, in milliseconds.
pub fn ms(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".to_owned();
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    format!(
        "{:.1}",
        sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
    )
}
