//! What the policy knows per address: the ban in force, and the newest
//! unban that lifted one.
//!
//! Together they make the newest record about an address win, whatever
//! order records arrive in: a ban is refused when an unban at least as new
//! was seen (a copied line, a compacted log read again, a ban delivered
//! late from a spool), and an unban is refused when the ban in force is
//! newer. Every watcher thus ends in the same state from the same records.
//!
//! One entry per banned network, so this map is most of a watcher's memory
//! (100,000 bans is a normal day for a large fleet). Each entry holds three
//! `i64` times and one pointer to its origin, a shared pair of jail and
//! node names: a jail is spelled in a few ways across a fleet (`sshd`,
//! `recidive`, ...) and the nodes are few, so every ban from one jail and
//! node points at one copy of both instead of owning its own (56 bytes an
//! entry with its key, against 80 with a pointer per name).
//!
//! The maps hash with foldhash, not std's SipHash (which was 8% of a
//! catch-up, and the rehashing of a map grown one doubling at a time 43% at
//! 5 million records): a network is one or two machine words, which
//! foldhash mixes in a few multiplications. Its seed is drawn from the
//! operating system's random source once per process (through std's own
//! randomly keyed hasher), not from foldhash's address-based default: the
//! keys come from the log, and a forged log must not choose their buckets.
//! foldhash resists that only while its seed is secret, and nothing outside
//! this process sees a hash or the map's order (`active.json` is written in
//! it, but in the state directory, which only root reads).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, OnceLock};

use foldhash::SharedSeed;
use foldhash::fast::{FoldHasher, SeedableRandomState};

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::record::{Jail, NodeId};

/// The ban in force on an address: when it ends, and where it came from,
/// so that an unban from another jail or an older unban cannot lift it.
/// This is the form saved in `active.json`; the map keeps it compact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveBan {
    /// When the ban ends; `None` is never.
    pub until: Option<DateTime<Utc>>,
    pub jail: Option<Jail>,
    pub since: DateTime<Utc>,
    /// The node whose record put it in force (the newest one, when a later
    /// report extended it); `None` for a record without a node, or a ban
    /// saved by a release that did not keep it.
    pub node: Option<NodeId>,
}

/// An entry of the map. Times are ms since the epoch.
#[derive(Debug, Clone)]
pub(super) struct Held {
    /// When the ban ends by the records' own dates; `NEVER` for a
    /// permanent ban.
    pub until: i64,
    /// When the firewall's timeout for it ends: `until`, or earlier for a
    /// ban from a clock ahead, which the firewall holds for its bantime
    /// from now only (see `firewall_timeout`).
    pub firewall: i64,
    pub since: i64,
    origin: Arc<Origin>,
}

/// The jail and node of the record that put a ban in force (the node: see
/// [`ActiveBan::node`]), shared by every ban of that pair. Compared and
/// hashed by the names' addresses: each name is interned, so one address
/// is one name.
#[derive(Debug)]
struct Origin {
    jail: Option<Arc<str>>,
    node: Option<Arc<str>>,
}

impl Origin {
    fn addresses(&self) -> (Option<*const u8>, Option<*const u8>) {
        let address = |name: &Option<Arc<str>>| name.as_ref().map(|n| n.as_ptr());
        (address(&self.jail), address(&self.node))
    }
}

impl PartialEq for Origin {
    fn eq(&self, other: &Origin) -> bool {
        self.addresses() == other.addresses()
    }
}

impl Eq for Origin {}

impl Hash for Origin {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addresses().hash(state);
    }
}

/// `Held::until` of a permanent ban.
pub(super) const NEVER: i64 = i64::MAX;

/// The most bans [`ActiveBans::reserve`] makes room for: 16 million, about
/// 1.3 GB of map. A log that claims more is grown step by step beyond it.
const MAX_RESERVED: usize = 1 << 24;

/// Unbans from this many jails are remembered apart per address; more are
/// merged into one (see `ActiveBans::note_lift`).
const MAX_LIFTS_PER_ADDRESS: usize = 8;

impl Held {
    /// The ban came from another jail than `jail` (both known).
    pub fn other_jail(&self, jail: Option<&Jail>) -> bool {
        other_jail(&self.origin.jail, jail)
    }
}

/// A network as a map key. It hashes as one 64-bit word for IPv4 and a
/// 128-bit one and a byte for IPv6: `IpNet`'s derived hash makes four
/// writes, and these maps are probed two or three times per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NetKey(IpNet);

impl Hash for NetKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.0 {
            IpNet::V4(net) => {
                state.write_u64(u64::from(net.addr().to_bits()) << 8 | u64::from(net.prefix_len()))
            }
            IpNet::V6(net) => {
                state.write_u128(net.addr().to_bits());
                state.write_u8(net.prefix_len());
            }
        }
    }
}

/// The hasher of every map and set here: foldhash, seeded at random (see
/// the module's doc).
#[derive(Clone)]
pub(super) struct SeededHash(SeedableRandomState);

impl Default for SeededHash {
    fn default() -> SeededHash {
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(random_u64()));
        SeededHash(SeedableRandomState::with_seed(random_u64(), shared))
    }
}

impl BuildHasher for SeededHash {
    type Hasher = FoldHasher<'static>;

    fn build_hasher(&self) -> FoldHasher<'static> {
        self.0.build_hasher()
    }
}

impl fmt::Debug for SeededHash {
    /// Without the seed, which must stay secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededHash")
    }
}

/// 64 random bits: std's `RandomState` is keyed from the operating
/// system's random source, so its hash of anything is as good, and needs
/// no error path of its own.
fn random_u64() -> u64 {
    RandomState::new().hash_one(0x6261_6e73_6861_7265_u64)
}

type NetMap<V> = HashMap<NetKey, V, SeededHash>;

/// The newest unban seen for an address from one jail.
#[derive(Debug, Clone)]
struct Lift {
    /// The unban's time (ms since the epoch).
    ts: i64,
    jail: Option<Arc<str>>,
    /// Until when it is remembered: until any ban it lifted would have
    /// ended anyway, and at least a day (see `ActiveBans::lift`).
    keep: i64,
}

/// Two jails are different only when both are known: a record without a
/// jail (written by hand) concerns every jail.
fn other_jail(a: &Option<Arc<str>>, b: Option<&Jail>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if **a != *b.as_str())
}

#[derive(Debug, Default)]
pub(super) struct ActiveBans {
    map: NetMap<Held>,
    /// Per address, one per jail (usually just one).
    lifts: NetMap<Vec<Lift>>,
    /// One copy of each jail name in use.
    jails: Names,
    /// One copy of each node name in use.
    nodes: Names,
    /// One copy of each pair of them in use.
    origins: Origins,
}

/// One shared copy of each [`Origin`] in use.
#[derive(Debug, Default)]
struct Origins {
    origins: HashSet<Arc<Origin>, SeededHash>,
    /// The origin interned last.
    last: Option<Arc<Origin>>,
}

impl Origins {
    fn intern(&mut self, origin: Origin) -> Arc<Origin> {
        // Runs of bans from one jail and node, as for names.
        if let Some(last) = &self.last
            && **last == origin
        {
            return Arc::clone(last);
        }
        let shared = match self.origins.get(&origin) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared = Arc::new(origin);
                self.origins.insert(Arc::clone(&shared));
                shared
            }
        };
        self.last = Some(Arc::clone(&shared));
        shared
    }

    /// Forgets the origins no ban uses any more (before the names they
    /// hold are pruned).
    fn prune(&mut self) {
        self.last = None;
        self.origins.retain(|origin| Arc::strong_count(origin) > 1);
    }
}

/// One shared copy of each name in use (see the module's doc).
#[derive(Debug, Default)]
struct Names {
    names: HashSet<Arc<str>, SeededHash>,
    /// The name interned last.
    last: Option<Arc<str>>,
}

impl Names {
    fn intern(&mut self, name: &str) -> Arc<str> {
        // Bans come in runs from one jail and node: the last name saves
        // the lookup.
        if let Some(last) = &self.last
            && **last == *name
        {
            return Arc::clone(last);
        }
        let shared = match self.names.get(name) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = Arc::from(name);
                self.names.insert(Arc::clone(&shared));
                shared
            }
        };
        self.last = Some(Arc::clone(&shared));
        shared
    }

    /// Forgets the names no entry uses any more.
    fn prune(&mut self) {
        // A name is in use while some entry holds another reference to it.
        self.last = None;
        self.names.retain(|name| Arc::strong_count(name) > 1);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.names.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl ActiveBans {
    /// Makes room for `additional` more bans in force without growing the
    /// map step by step: each step rehashes every entry, and holds the old
    /// table and the new one at once, half again the steady memory. Up to
    /// [`MAX_RESERVED`] bans, since `additional` is a guess from the log's
    /// size, which the file server tells; and never at the cost of failing:
    /// without the memory, the map grows as it goes.
    pub fn reserve(&mut self, additional: usize) {
        let _ = self.map.try_reserve(reservable(self.map.len(), additional));
    }

    /// Bans the map has room for without growing.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.map.capacity()
    }

    pub fn get(&self, net: &IpNet) -> Option<&Held> {
        self.map.get(&NetKey(*net))
    }

    /// Puts a ban in force until `until`, held by the firewall until
    /// `firewall`, extending the ban in force. A ban in force keeps its
    /// later times: a longer but older report extends the time, and must
    /// not make an unban between the two lift both; a ban that outlasts
    /// only the firewall's hold of one from a clock ahead must not shorten
    /// what that record's date says.
    pub fn insert(
        &mut self,
        net: IpNet,
        until: i64,
        firewall: i64,
        since: i64,
        from: (Option<&Jail>, Option<&NodeId>),
    ) {
        let jail = from.0.map(|j| self.jails.intern(j.as_str()));
        let node = from.1.map(|n| self.nodes.intern(n.as_str()));
        let origin = self.origins.intern(Origin { jail, node });
        match self.map.entry(NetKey(net)) {
            Entry::Occupied(mut held) => {
                let held = held.get_mut();
                *held = Held {
                    until: held.until.max(until),
                    firewall: held.firewall.max(firewall),
                    since: held.since.max(since),
                    origin,
                };
            }
            Entry::Vacant(slot) => {
                slot.insert(Held {
                    until,
                    firewall,
                    since,
                    origin,
                });
            }
        }
    }

    /// Removes every ban in force that `node`'s records put there, and
    /// returns them.
    pub fn remove_by_node(&mut self, node: &NodeId) -> Vec<(IpNet, ActiveBan)> {
        let mut removed = Vec::new();
        self.map.retain(|key, held| {
            let theirs = held.origin.node.as_deref() == Some(node.as_str());
            if theirs {
                removed.push((key.0, saved_form(held)));
            }
            !theirs
        });
        removed
    }

    /// Removes every ban in force on a network that overlaps `net`, and
    /// returns them.
    pub fn remove_overlapping(&mut self, net: &IpNet) -> Vec<(IpNet, ActiveBan)> {
        let mut removed = Vec::new();
        self.map.retain(|key, held| {
            let covered = crate::record::never_ban::overlaps(&key.0, net);
            if covered {
                removed.push((key.0, saved_form(held)));
            }
            !covered
        });
        removed
    }

    /// Moves the ban in force's `since` up to `ts` if that is later.
    /// Returns whether it changed.
    pub fn renew_since(&mut self, net: &IpNet, ts: i64) -> bool {
        match self.map.get_mut(&NetKey(*net)) {
            Some(held) if held.since < ts => {
                held.since = ts;
                true
            }
            _ => false,
        }
    }

    pub fn remove(&mut self, net: &IpNet) {
        self.map.remove(&NetKey(*net));
    }

    /// An unban at `ts` (ms) from `jail` lifts the ban on `net`. It is
    /// remembered until `keep`, or until the lifted ban would have ended if
    /// that is later, so that no copy of a lifted ban record can ban again.
    pub fn lift(&mut self, net: IpNet, ts: i64, jail: Option<&Jail>, keep: i64) {
        let lifted_until = self.map.remove(&NetKey(net)).map_or(keep, |b| b.until);
        self.note_lift(net, ts, jail, keep.max(lifted_until));
    }

    /// Remembers an unban at `ts` (ms) from `jail` on `net` until `keep`,
    /// without touching the ban in force.
    pub fn note_lift(&mut self, net: IpNet, ts: i64, jail: Option<&Jail>, keep: i64) {
        let jail = jail.map(|j| self.jails.intern(j.as_str()));
        let lifts = self.lifts.entry(NetKey(net)).or_default();
        match lifts.iter_mut().find(|l| l.jail == jail) {
            Some(lift) => {
                lift.ts = lift.ts.max(ts);
                lift.keep = lift.keep.max(keep);
            }
            None => lifts.push(Lift { ts, jail, keep }),
        }
        if lifts.len() > MAX_LIFTS_PER_ADDRESS {
            // Unbans from many jails on one address (a flood of made-up
            // jail names): one unban for all jails at the newest time
            // stands for them all. It refuses at least what they refused,
            // and no more than an unban without a jail may anyway.
            let merged = Lift {
                ts: lifts.iter().map(|l| l.ts).max().unwrap_or(ts),
                jail: None,
                keep: lifts.iter().map(|l| l.keep).max().unwrap_or(keep),
            };
            *lifts = vec![merged];
        }
    }

    /// An unban at least as new as `ts` (ms) lifted bans from `jail` on
    /// `net`: a ban record from then or before is stale.
    pub fn lifted_since(&self, net: &IpNet, ts: i64, jail: Option<&Jail>) -> bool {
        self.lifts.get(&NetKey(*net)).is_some_and(|lifts| {
            lifts
                .iter()
                .any(|lift| lift.ts >= ts && !other_jail(&lift.jail, jail))
        })
    }

    /// Bans not over at `now_ms`.
    pub fn count_live(&self, now_ms: i64) -> usize {
        self.map.values().filter(|b| b.until > now_ms).count()
    }

    /// Bans not over at `now_ms`, counted per jail (`None`: bans from
    /// records without a jail).
    pub fn count_live_by_jail(&self, now_ms: i64) -> HashMap<Option<Arc<str>>, usize> {
        let mut counts: HashMap<Option<Arc<str>>, usize> = HashMap::new();
        for held in self.map.values().filter(|b| b.until > now_ms) {
            *counts.entry(held.origin.jail.clone()).or_default() += 1;
        }
        counts
    }

    /// Drops the bans over at `now_ms`, the unbans no longer needed, and
    /// the jail names neither uses.
    pub fn prune(&mut self, now_ms: i64) {
        self.map.retain(|_, b| b.until > now_ms);
        self.lifts.retain(|_, lifts| {
            lifts.retain(|l| l.keep > now_ms);
            !lifts.is_empty()
        });
        self.origins.prune();
        self.jails.prune();
        self.nodes.prune();
    }

    /// Addresses with an unban remembered.
    #[cfg(test)]
    pub fn lift_count(&self) -> usize {
        self.lifts.len()
    }

    /// Every ban, in the form saved to disk.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, ActiveBan)> + '_ {
        self.map.iter().map(|(key, held)| (key.0, saved_form(held)))
    }
}

/// How many more bans [`ActiveBans::reserve`] makes room for, with `len`
/// in the map and `additional` asked for.
fn reservable(len: usize, additional: usize) -> usize {
    additional.min(MAX_RESERVED.saturating_sub(len))
}

fn saved_form(held: &Held) -> ActiveBan {
    ActiveBan {
        until: (held.until != NEVER)
            .then(|| DateTime::from_timestamp_millis(held.until))
            .flatten(),
        // A name in the map was a valid jail when it was interned.
        jail: held.origin.jail.as_deref().and_then(|j| j.parse().ok()),
        since: DateTime::from_timestamp_millis(held.since).unwrap_or_default(),
        node: held.origin.node.as_deref().and_then(|n| n.parse().ok()),
    }
}

/// `Held::until` for an expiry (`None`: never).
pub(super) fn until_ms(until: Option<DateTime<Utc>>) -> i64 {
    until.map_or(NEVER, |t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_of_one_jail_share_its_name_and_unused_names_go() {
        let mut active = ActiveBans::default();
        let sshd: Jail = "sshd".parse().unwrap();
        let recidive: Jail = "recidive".parse().unwrap();
        for i in 0..100u32 {
            let net = IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(i)));
            let until = 1_000 + i64::from(i);
            active.insert(net, until, until, 0, (Some(&sshd), None));
        }
        let other: IpNet = "192.0.2.1/32".parse().unwrap();
        active.insert(other, 500, 500, 0, (Some(&recidive), None));
        assert_eq!(active.jails.len(), 2);
        active.prune(600);
        assert_eq!(active.jails.len(), 1, "recidive's only ban is over");
        assert_eq!(active.count_live(600), 100);
    }

    #[test]
    fn a_map_sized_in_advance_does_not_grow_and_each_map_hashes_its_own_way() {
        let mut active = ActiveBans::default();
        active.reserve(50_000);
        let room = active.capacity();
        assert!(room >= 50_000);
        for i in 0..50_000u32 {
            let net = IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(i)));
            active.insert(net, 1_000, 1_000, 0, (None, None));
        }
        assert_eq!(active.capacity(), room, "rehashed while filling");
        // What a ban costs: the key, three times and its origin.
        assert_eq!(std::mem::size_of::<(NetKey, Held)>(), 56);
        // A guess beyond any reason (a file server lying about the log's
        // size) is bounded.
        assert_eq!(reservable(1_000, usize::MAX), MAX_RESERVED - 1_000);
        assert_eq!(reservable(MAX_RESERVED + 1, 10), 0);
        // Seeded at random: two maps place the same key apart, so what one
        // log makes collide in one watcher does not in the next.
        let key = NetKey("192.0.2.1/32".parse().unwrap());
        let hashes: HashSet<u64> = (0..4)
            .map(|_| SeededHash::default().hash_one(key))
            .collect();
        assert_eq!(hashes.len(), 4);
        assert_eq!(format!("{:?}", SeededHash::default()), "SeededHash");
    }

    #[test]
    fn the_saved_form_keeps_every_field() {
        let mut active = ActiveBans::default();
        let net: IpNet = "2001:db8::/64".parse().unwrap();
        let since: DateTime<Utc> = "2026-11-21T18:00:00.123Z".parse().unwrap();
        let until: DateTime<Utc> = "2026-11-21T19:00:00.123Z".parse().unwrap();
        let jail: Jail = "sshd".parse().unwrap();
        let node: NodeId = "web1".parse().unwrap();
        active.insert(
            net,
            until_ms(Some(until)),
            until_ms(Some(until)),
            since.timestamp_millis(),
            (Some(&jail), Some(&node)),
        );
        let permanent: IpNet = "192.0.2.9/32".parse().unwrap();
        active.insert(
            permanent,
            NEVER,
            NEVER,
            since.timestamp_millis(),
            (None, None),
        );
        let mut saved: Vec<_> = active.iter().collect();
        saved.sort_by_key(|(net, _)| *net);
        assert_eq!(
            saved,
            [
                (
                    permanent,
                    ActiveBan {
                        until: None,
                        jail: None,
                        since,
                        node: None,
                    }
                ),
                (
                    net,
                    ActiveBan {
                        until: Some(until),
                        jail: Some(jail),
                        since,
                        node: Some(node),
                    }
                ),
            ]
        );
    }

    #[test]
    fn an_unban_refuses_bans_from_before_it_in_its_jail_until_it_is_forgotten() {
        let mut active = ActiveBans::default();
        let net: IpNet = "192.0.2.1/32".parse().unwrap();
        let sshd: Jail = "sshd".parse().unwrap();
        let recidive: Jail = "recidive".parse().unwrap();
        active.insert(net, 50_000, 50_000, 1_000, (Some(&sshd), None));
        active.lift(net, 2_000, Some(&sshd), 10_000);
        assert!(active.get(&net).is_none());
        assert!(active.lifted_since(&net, 2_000, Some(&sshd)));
        assert!(active.lifted_since(&net, 1_000, None), "a ban by hand");
        assert!(!active.lifted_since(&net, 2_001, Some(&sshd)), "newer");
        assert!(!active.lifted_since(&net, 1_000, Some(&recidive)));
        // An older unban does not make the newest one older, and one from
        // another jail does not stand for this one's.
        active.lift(net, 1_500, Some(&sshd), 10_000);
        active.lift(net, 3_000, Some(&recidive), 10_000);
        assert!(active.lifted_since(&net, 2_000, Some(&sshd)));
        assert!(!active.lifted_since(&net, 2_001, Some(&sshd)));
        assert!(active.lifted_since(&net, 2_001, Some(&recidive)));
        // Kept until the lifted ban would have ended (50 s), not 10 s.
        active.prune(49_999);
        assert!(active.lifted_since(&net, 2_000, Some(&sshd)));
        active.prune(50_000);
        assert!(!active.lifted_since(&net, 2_000, Some(&sshd)));
        assert!(active.jails.is_empty());
    }

    #[test]
    fn unbans_from_many_jails_on_one_address_are_merged() {
        let mut active = ActiveBans::default();
        let net: IpNet = "192.0.2.1/32".parse().unwrap();
        for i in 0..1000 {
            let jail: Jail = format!("made-up-{i}").parse().unwrap();
            active.note_lift(net, i, Some(&jail), 10_000);
        }
        let lifts = &active.lifts[&NetKey(net)];
        assert!(lifts.len() <= MAX_LIFTS_PER_ADDRESS);
        // Whatever was refused before still is.
        let sshd: Jail = "sshd".parse().unwrap();
        assert!(active.lifted_since(&net, 990, Some(&sshd)) || lifts.len() > 1);
        let last: Jail = "made-up-999".parse().unwrap();
        assert!(active.lifted_since(&net, 999, Some(&last)));
        active.prune(10_000);
        assert!(active.jails.is_empty());
    }
}
