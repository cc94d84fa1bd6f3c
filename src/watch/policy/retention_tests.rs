use super::*;
use crate::trust::{TrustedKeys, generate, public_line, sign};

const NOW: &str = "2026-11-21T18:00:00Z";

fn now() -> DateTime<Utc> {
    NOW.parse().unwrap()
}

fn rules() -> RetentionRules {
    RetentionRules::new(Duration::from_secs(7 * 24 * 3600), Duration::from_secs(600))
}

/// A line as banshare writes it (`fields` after the port).
fn line(verb: &str, target: &str, fields: &str) -> String {
    format!("<13>Nov 21 17:00:00 banshare[1]: {verb} {target} PORT 22 {fields}\n")
}

fn ban(target: &str, jail: &str, ts: &str, bantime: &str, id: u32) -> String {
    line(
        "HOST",
        target,
        &format!("jail={jail} node=a ts={ts} bantime={bantime} id={id:016}"),
    )
}

fn unban(target: &str, jail: &str, ts: &str, id: u32) -> String {
    line(
        "UNBAN",
        target,
        &format!("jail={jail} node=a ts={ts} id={id:016}"),
    )
}

fn fates(lines: &[String], rules: &RetentionRules) -> Vec<Fate> {
    plan(lines.iter().map(|l| l.as_bytes()), rules, now())
}

#[test]
fn a_ban_is_kept_while_in_force_and_dropped_once_over() {
    let lines = [
        ban("192.0.2.1", "sshd", "2026-11-21T17:00:00Z", "600", 1),
        ban("192.0.2.2", "sshd", "2026-11-21T17:55:00Z", "600", 2),
        // Over by a few seconds: watchers whose clocks lag a little may
        // still hold it.
        ban("192.0.2.3", "sshd", "2026-11-21T17:49:30Z", "600", 3),
        // No bantime: each node's default is at most max_bantime.
        line(
            "HOST",
            "192.0.2.4",
            "node=a ts=2026-11-15T19:00:00Z id=0000000000000004",
        ),
        line(
            "HOST",
            "192.0.2.5",
            "node=a ts=2026-11-14T17:00:00Z id=0000000000000005",
        ),
        // Longer than max_bantime: cut to it, as the watchers cut it.
        ban("192.0.2.6", "sshd", "2026-11-01T00:00:00Z", "5184000", 6),
    ];
    assert_eq!(
        fates(&lines, &rules()),
        [
            Fate::Drop(Dropped::Expired),
            Fate::Keep(Kept::Ban),
            Fate::Keep(Kept::Ban),
            Fate::Keep(Kept::Ban),
            Fate::Drop(Dropped::Expired),
            Fate::Drop(Dropped::Expired),
        ]
    );
}

#[test]
fn a_permanent_ban_stays_only_when_signed_and_verified() {
    let key = generate().unwrap();
    let mut signed = record::parse(
        line(
            "HOST",
            "192.0.2.1",
            "node=a ts=2026-01-01T00:00:00Z bantime=-1 id=0000000000000001",
        )
        .as_bytes(),
    )
    .unwrap();
    sign(&mut signed, &key).unwrap();
    let signed = format!("{signed}\n");
    let unsigned = line(
        "HOST",
        "192.0.2.2",
        "node=a ts=2026-01-01T00:00:00Z bantime=-1 id=0000000000000002",
    );
    let lines = [signed.clone(), unsigned];
    assert_eq!(
        fates(&lines, &rules()),
        [Fate::Keep(Kept::PermanentBan), Fate::Drop(Dropped::Expired)],
        "an unsigned permanent ban lasts max_bantime"
    );
    // With the trusted keys: verified stays, a key they do not know is
    // refused outright (a bad signature).
    let trusting = |k| RetentionRules {
        trust: Some(TrustPolicy {
            keys: TrustedKeys::parse(&format!("a {}", public_line(k)), "test").unwrap(),
            require_signed: false,
            allow_unsigned_logger: false,
            operators: Vec::new(),
        }),
        ..rules()
    };
    assert_eq!(
        fates(&lines[..1], &trusting(&key)),
        [Fate::Keep(Kept::PermanentBan)]
    );
    assert_eq!(
        fates(&lines[..1], &trusting(&generate().unwrap())),
        [Fate::Drop(Dropped::Untrusted)]
    );
}

#[test]
fn a_lifted_ban_goes_and_the_newest_unban_stays() {
    let lines = [
        ban("192.0.2.1", "sshd", "2026-11-21T17:00:00Z", "86400", 1),
        unban("192.0.2.1", "sshd", "2026-11-21T17:10:00Z", 2),
        unban("192.0.2.1", "sshd", "2026-11-21T17:20:00Z", 3),
        // Another jail's ban is not lifted by an sshd unban.
        ban("192.0.2.1", "recidive", "2026-11-21T17:05:00Z", "86400", 4),
        // A ban newer than the unban stays.
        ban("192.0.2.1", "sshd", "2026-11-21T17:30:00Z", "86400", 5),
        // An unban that arrived late but is older than the newest one.
        unban("192.0.2.1", "sshd", "2026-11-21T17:15:00Z", 6),
        // An unban without a jail lifts every jail's older bans.
        ban("192.0.2.9", "recidive", "2026-11-21T17:00:00Z", "86400", 7),
        line(
            "UNBAN",
            "192.0.2.9",
            "node=a ts=2026-11-21T17:01:00Z id=0000000000000008",
        ),
    ];
    assert_eq!(
        fates(&lines, &rules()),
        [
            Fate::Drop(Dropped::Lifted),
            Fate::Drop(Dropped::OlderUnban),
            Fate::Keep(Kept::Unban),
            Fate::Keep(Kept::Ban),
            Fate::Keep(Kept::Ban),
            Fate::Drop(Dropped::OlderUnban),
            Fate::Drop(Dropped::Lifted),
            Fate::Keep(Kept::Unban),
        ]
    );
}

#[test]
fn an_unban_is_kept_as_long_as_a_ban_it_lifted_could_last() {
    let lines = [
        // Lifted an hour after it was made: without the unban, a watcher
        // that applied the ban would hold it 6 more days.
        unban("192.0.2.1", "sshd", "2026-11-15T18:30:00Z", 1),
        unban("192.0.2.2", "sshd", "2026-11-14T17:00:00Z", 2),
    ];
    assert_eq!(
        fates(&lines, &rules()),
        [Fate::Keep(Kept::Unban), Fate::Drop(Dropped::Forgotten)]
    );
}

#[test]
fn a_lifted_permanent_ban_stays_with_its_unban() {
    let key = generate().unwrap();
    let mut signed = record::parse(
        line(
            "HOST",
            "192.0.2.1",
            "jail=sshd node=a ts=2025-01-01T00:00:00Z bantime=-1 id=0000000000000001",
        )
        .as_bytes(),
    )
    .unwrap();
    sign(&mut signed, &key).unwrap();
    let lines = [
        format!("{signed}\n"),
        unban("192.0.2.1", "sshd", "2025-01-02T00:00:00Z", 2),
    ];
    assert_eq!(
        fates(&lines, &rules()),
        [
            Fate::Keep(Kept::LiftedPermanentBan),
            Fate::Keep(Kept::Unban)
        ]
    );
}

#[test]
fn copies_and_garbage_are_dropped() {
    let first = ban("192.0.2.1", "sshd", "2026-11-21T17:55:00Z", "600", 1);
    let logger = "<13>Nov 21 17:59:00 root[3284]: HOST 192.0.2.7 PORT 22\n".to_owned();
    let lines = [
        first.clone(),
        "torn <13>Nov 21 17:5\n".to_owned(),
        first.clone(),
        // The same id with other bytes (a replayed, edited line) is a copy.
        first.replace("PORT 22", "PORT 2222"),
        logger.clone(),
        logger,
        "# banshare-compacted at=2026-11-21T17:00:00Z nonce=1\n".to_owned(),
    ];
    assert_eq!(
        fates(&lines, &rules()),
        [
            Fate::Keep(Kept::Ban),
            Fate::Drop(Dropped::Garbage),
            Fate::Drop(Dropped::Copy),
            Fate::Drop(Dropped::Copy),
            Fate::Keep(Kept::Ban),
            Fate::Drop(Dropped::Copy),
            Fate::Drop(Dropped::Marker),
        ]
    );
}

/// What compaction keeps, read by a fresh watcher, bans what the whole log
/// bans: the policy and the rules agree.
#[test]
fn a_fresh_policy_reading_the_kept_lines_ends_where_one_reading_all_does() {
    use crate::watch::policy::{Policy, PolicySettings};
    let lines = [
        ban("192.0.2.1", "sshd", "2026-11-21T17:00:00Z", "86400", 1),
        unban("192.0.2.1", "sshd", "2026-11-21T17:10:00Z", 2),
        ban("192.0.2.2", "sshd", "2026-11-21T10:00:00Z", "3600", 3),
        ban("192.0.2.3", "sshd", "2026-11-21T17:50:00Z", "3600", 4),
        ban("192.0.2.3", "sshd", "2026-11-21T17:50:00Z", "3600", 4),
        ban("192.0.2.4", "sshd", "2026-11-21T17:00:00Z", "86400", 5),
        unban("192.0.2.4", "recidive", "2026-11-21T17:10:00Z", 6),
    ];
    let kept: Vec<&String> = lines
        .iter()
        .zip(fates(&lines, &rules()))
        .filter(|(_, f)| f.is_kept())
        .map(|(l, _)| l)
        .collect();
    let ends = |lines: &mut dyn Iterator<Item = &String>| {
        let mut p = Policy::new(PolicySettings::defaults("me".parse().unwrap()));
        for l in lines {
            let _ = p.decide(&record::parse(l.as_bytes()).unwrap(), now());
        }
        let mut bans: Vec<_> = p.active_bans().map(|(net, b)| (net, b.until)).collect();
        bans.sort();
        bans
    };
    assert_eq!(ends(&mut kept.into_iter()), ends(&mut lines.iter()));
}

#[test]
fn the_newest_signed_allowlist_record_of_a_network_and_signer_stays_for_good() {
    // Control records cover every port; only signed ones count.
    let key = generate().unwrap();
    let signed = |verb: &str, target: &str, fields: &str| {
        let text = line(verb, target, fields).replace("PORT 22", "PORT 0:65535");
        let mut r = record::parse(text.as_bytes()).unwrap();
        sign(&mut r, &key).unwrap();
        format!("{r}\n")
    };
    let lines = [
        signed(
            "ALLOW",
            "198.51.100.0/24",
            "node=ops ts=2025-01-01T00:00:00Z id=0000000000000001",
        ),
        signed(
            "UNALLOW",
            "198.51.100.0/24",
            "node=ops ts=2025-02-01T00:00:00Z id=0000000000000002",
        ),
        // Late, but older than the UNALLOW: dropped.
        signed(
            "ALLOW",
            "198.51.100.0/24",
            "node=ops ts=2025-01-15T00:00:00Z id=0000000000000003",
        ),
        signed(
            "ALLOW",
            "203.0.113.7",
            "node=ops ts=2024-01-01T00:00:00Z id=0000000000000004",
        ),
        // Newer, by another signer: a watcher for which only `ops` is an
        // operator still needs the UNALLOW of `ops`, so both stay.
        signed(
            "ALLOW",
            "198.51.100.0/24",
            "node=ops2 ts=2025-03-01T00:00:00Z id=0000000000000005",
        ),
    ];
    assert_eq!(
        fates(&lines, &rules()),
        [
            Fate::Drop(Dropped::OlderAllowlist),
            Fate::Keep(Kept::Allowlist),
            Fate::Drop(Dropped::OlderAllowlist),
            Fate::Keep(Kept::Allowlist),
            Fate::Keep(Kept::Allowlist),
        ]
    );
}

/// Review 13: an allowlist record without a signature is honoured by no
/// watcher (`TrustPolicy::check` wants an operator's verified signature,
/// whatever the keys), yet compaction on a host without the trusted keys
/// (the file server, where the timer is meant to run) keeps it for good and
/// lets it displace the operator's real, older record of the same network:
/// a writer with no key at all erases an allowlist entry from the log, and
/// a watcher started afresh on the compacted log bans the network again.
#[test]
fn an_unsigned_allowlist_record_neither_stays_nor_displaces_an_operators_one() {
    let control = |verb: &str, target: &str, fields: &str| {
        line(verb, target, fields).replace("PORT 22", "PORT 0:65535")
    };
    let key = generate().unwrap();
    let mut allow = record::parse(
        control(
            "ALLOW",
            "198.51.100.0/24",
            "node=ops ts=2025-01-01T00:00:00Z id=0000000000000001",
        )
        .as_bytes(),
    )
    .unwrap();
    sign(&mut allow, &key).unwrap();
    let lines = [
        format!("{allow}\n"),
        // Forged by anyone who can append: no signature.
        control(
            "UNALLOW",
            "198.51.100.0/24",
            "node=web1 ts=2025-02-01T00:00:00Z id=0000000000000002",
        ),
        control(
            "ALLOW",
            "203.0.113.7",
            "node=web1 ts=2025-02-01T00:00:00Z id=0000000000000003",
        ),
    ];
    assert_eq!(
        fates(&lines, &rules()),
        [
            Fate::Keep(Kept::Allowlist),
            Fate::Drop(Dropped::Untrusted),
            Fate::Drop(Dropped::Untrusted),
        ]
    );
}

/// Review 13: `[trust] operators` is documented as a watcher setting ("on
/// every watcher"), but compaction reads it too: on a compacting host with
/// the trusted keys and no operators list (a file server that watches
/// nothing), the operator's verified `ALLOW` is dropped as untrusted, and a
/// watcher started afresh on the compacted log no longer allowlists it.
#[test]
fn an_operators_allowlist_record_survives_a_compacting_host_without_the_operators_list() {
    let key = generate().unwrap();
    let mut allow = record::parse(
        line(
            "ALLOW",
            "198.51.100.0/24",
            "node=ops ts=2025-01-01T00:00:00Z id=0000000000000001",
        )
        .replace("PORT 22", "PORT 0:65535")
        .as_bytes(),
    )
    .unwrap();
    sign(&mut allow, &key).unwrap();
    let rules = RetentionRules {
        trust: Some(TrustPolicy {
            keys: TrustedKeys::parse(&format!("ops {}", public_line(&key)), "test").unwrap(),
            require_signed: false,
            allow_unsigned_logger: false,
            operators: Vec::new(),
        }),
        ..rules()
    };
    assert_eq!(
        fates(&[format!("{allow}\n")], &rules),
        [Fate::Keep(Kept::Allowlist)]
    );
}

/// Every watcher refuses a record dated more than a day ahead of its clock
/// (`FromTheFuture`), so keeping it (until its far `ts` plus its bantime,
/// for good for a year-2099 one) only grew the log.
#[test]
fn a_record_every_watcher_refuses_as_from_the_future_is_dropped() {
    let lines = [
        ban("192.0.2.1", "sshd", "2026-11-24T18:00:00Z", "600", 1),
        ban("192.0.2.2", "sshd", "2099-01-01T00:00:00Z", "600", 2),
        unban("192.0.2.3", "sshd", "2026-11-25T00:00:00Z", 3),
        // Within a day (and the clock margin) ahead: a watcher may apply it.
        ban("192.0.2.4", "sshd", "2026-11-22T17:59:00Z", "600", 4),
    ];
    assert_eq!(
        fates(&lines, &rules()),
        [
            Fate::Drop(Dropped::FromTheFuture),
            Fate::Drop(Dropped::FromTheFuture),
            Fate::Drop(Dropped::FromTheFuture),
            Fate::Keep(Kept::Ban),
        ]
    );
}
