use super::*;
use crate::record;

fn settings() -> PolicySettings {
    PolicySettings {
        ignoreip: vec!["203.0.113.0/24".parse().unwrap()],
        self_addresses: vec!["198.18.0.11".parse().unwrap()],
        default_bantime: BanTime::Seconds(600),
        ..PolicySettings::defaults("me".parse().unwrap())
    }
}

fn now() -> DateTime<Utc> {
    "2026-11-21T18:00:00Z".parse().unwrap()
}

fn line(verb: &str, target: &str, fields: &str) -> Record {
    let text = format!("<13>Nov 21 18:00:00 banshare[1]: {verb} {target} PORT 22 {fields}");
    record::parse(text.trim_end().as_bytes()).unwrap()
}

fn ban(target: &str, node: &str, ts: &str, bantime: u32, id: &str) -> Record {
    line(
        "HOST",
        target,
        &format!("node={node} ts={ts} bantime={bantime} id={id:0>16}"),
    )
}

#[test]
fn own_node_and_copies_are_skipped() {
    let mut p = Policy::new(settings());
    let r = ban("192.0.2.1", "me", "2026-11-21T17:59:00Z", 600, "1");
    assert_eq!(p.decide(&r, now()), Err(Skip::OwnNode));
    let r = ban("192.0.2.1", "other", "2026-11-21T17:59:00Z", 600, "2");
    assert!(p.decide(&r, now()).is_ok());
    assert_eq!(p.decide(&r, now()), Err(Skip::AlreadyBanned));
}

#[test]
fn a_copy_of_a_lifted_ban_does_not_ban_again_but_a_newer_ban_does() {
    let mut p = Policy::new(settings());
    let first = ban_in("192.0.2.1", "sshd", "2026-11-21T17:50:00Z", 3600, "1");
    let unban = unban_in("192.0.2.1", "sshd", "2026-11-21T17:55:00Z", "2");
    assert!(p.decide(&first, now()).is_ok());
    assert!(p.decide(&unban, now()).is_ok());
    assert_eq!(p.decide(&first, now()), Err(Skip::BanSuperseded));
    assert_eq!(p.decide(&unban, now()), Err(Skip::AlreadyLifted));
    // A ban from another jail, or from after the unban, is not stale.
    let recidive = ban_in("192.0.2.1", "recidive", "2026-11-21T17:51:00Z", 3600, "3");
    assert!(p.decide(&recidive, now()).is_ok());
    let mut p = Policy::new(settings());
    assert!(p.decide(&unban, now()).is_ok());
    let newer = ban_in("192.0.2.1", "sshd", "2026-11-21T17:56:00Z", 3600, "4");
    assert!(p.decide(&newer, now()).is_ok());
}

#[test]
fn the_newest_record_wins_in_whatever_order_records_arrive() {
    let records = [
        ban_in("192.0.2.1", "sshd", "2026-11-21T17:50:00Z", 3600, "1"),
        unban_in("192.0.2.1", "sshd", "2026-11-21T17:55:00Z", "2"),
        ban_in("192.0.2.2", "sshd", "2026-11-21T17:50:00Z", 3600, "3"),
        unban_in("192.0.2.2", "sshd", "2026-11-21T17:45:00Z", "4"),
        ban_in("192.0.2.3", "sshd", "2026-11-21T17:50:00Z", 600, "5"),
        ban_in("192.0.2.3", "sshd", "2026-11-21T17:52:00Z", 3600, "6"),
    ];
    let final_state = |order: &[usize]| {
        let mut p = Policy::new(settings());
        for &i in order {
            let _ = p.decide(&records[i], now());
        }
        let mut bans: Vec<_> = p.active_bans().collect();
        bans.sort_by_key(|(net, _)| *net);
        bans
    };
    let forward = final_state(&[0, 1, 2, 3, 4, 5]);
    assert_eq!(final_state(&[1, 0, 3, 2, 5, 4]), forward);
    assert_eq!(final_state(&[5, 3, 1, 4, 2, 0]), forward);
    let banned: Vec<String> = forward.iter().map(|(net, _)| net.to_string()).collect();
    assert_eq!(banned, ["192.0.2.2/32", "192.0.2.3/32"]);
}

#[test]
fn copies_of_a_nodes_bans_do_not_trip_its_breaker() {
    let mut p = Policy::new(PolicySettings {
        max_bans_per_node_per_minute: 3,
        ..settings()
    });
    let r = ban("192.0.2.1", "victim", "2026-11-21T17:59:30Z", 600, "1");
    assert!(p.decide(&r, now()).is_ok());
    for _ in 0..100 {
        assert_eq!(p.decide(&r, now()), Err(Skip::AlreadyBanned));
    }
    assert_eq!(p.tripped(now()).count(), 0);
}

#[test]
fn never_ban_addresses() {
    let mut p = Policy::new(settings());
    let cases = [
        ("127.0.0.1", Skip::NeverBan),
        ("0.0.0.0", Skip::NeverBan),
        ("0.0.0.0/0", Skip::TooWide),
        ("::/0", Skip::TooWide),
        ("::1", Skip::NeverBan),
        ("::", Skip::NeverBan),
        ("fe80::1", Skip::NeverBan),
        ("ff02::1", Skip::NeverBan),
        ("224.0.0.1", Skip::NeverBan),
        ("169.254.1.1", Skip::NeverBan),
        ("255.255.255.255", Skip::NeverBan),
        ("::ffff:127.0.0.1", Skip::NeverBan),
        ("127.0.0.0/16", Skip::NeverBan),
        ("203.0.113.9", Skip::Ignored),
        ("203.0.0.0/16", Skip::Ignored),
        ("198.18.0.11", Skip::SelfAddress),
        ("::ffff:198.18.0.11", Skip::SelfAddress),
        ("198.18.0.0/16", Skip::SelfAddress),
        ("10.0.0.0/8", Skip::TooWide),
        ("2001:db8::/32", Skip::TooWide),
    ];
    for (i, (target, why)) in cases.iter().enumerate() {
        let r = ban(
            target,
            "other",
            "2026-11-21T17:59:00Z",
            600,
            &format!("{:x}", i + 100),
        );
        assert_eq!(p.decide(&r, now()), Err(*why), "{target}");
    }
    let r = ban("10.1.0.0/16", "other", "2026-11-21T17:59:00Z", 600, "abc");
    assert!(p.decide(&r, now()).is_ok());
}

#[test]
fn expired_bans_are_skipped_and_catch_up_gets_the_remainder() {
    let mut p = Policy::new(settings());
    let r = ban("192.0.2.1", "other", "2026-11-21T17:00:00Z", 600, "1");
    assert_eq!(p.decide(&r, now()), Err(Skip::Expired));
    let r = ban("192.0.2.2", "other", "2026-11-21T17:55:00Z", 600, "2");
    match p.decide(&r, now()) {
        Ok(Verdict::Ban { remaining, .. }) => {
            assert_eq!(remaining, Some(Duration::from_secs(300)))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn longest_ban_wins() {
    let mut p = Policy::new(settings());
    let long = ban("192.0.2.1", "a", "2026-11-21T17:59:00Z", 3600, "1");
    let short = ban("192.0.2.1", "b", "2026-11-21T17:59:30Z", 600, "2");
    let longer = ban("192.0.2.1", "c", "2026-11-21T17:59:40Z", 7200, "3");
    assert!(p.decide(&long, now()).is_ok());
    assert_eq!(p.decide(&short, now()), Err(Skip::AlreadyBanned));
    assert!(p.decide(&longer, now()).is_ok());
    assert_eq!(p.active_count(now()), 1);
}

#[test]
fn min_nodes_needs_distinct_nodes_within_findtime() {
    let mut p = Policy::new(PolicySettings {
        min_nodes: 2,
        ..settings()
    });
    let a = ban("192.0.2.1", "a", "2026-11-21T17:59:00Z", 600, "1");
    let a_again = ban("192.0.2.1", "a", "2026-11-21T17:59:10Z", 600, "2");
    let b_old = ban("192.0.2.1", "b", "2026-11-21T17:40:00Z", 3600, "3");
    let b = ban("192.0.2.1", "b", "2026-11-21T17:59:20Z", 600, "4");
    assert_eq!(p.decide(&a, now()), Err(Skip::WaitingForNodes));
    assert_eq!(p.decide(&a_again, now()), Err(Skip::WaitingForNodes));
    assert_eq!(
        p.decide(&b_old, now()),
        Err(Skip::WaitingForNodes),
        "outside findtime"
    );
    assert!(p.decide(&b, now()).is_ok());
}

#[test]
fn unban_lifts_and_forgets() {
    let mut p = Policy::new(settings());
    assert!(
        p.decide(
            &ban("192.0.2.1", "a", "2026-11-21T17:59:00Z", 600, "1"),
            now()
        )
        .is_ok()
    );
    let unban = line(
        "UNBAN",
        "192.0.2.1",
        "node=a ts=2026-11-21T17:59:30Z id=0000000000000002",
    );
    assert!(matches!(p.decide(&unban, now()), Ok(Verdict::Unban { .. })));
    assert_eq!(p.active_count(now()), 0);
    assert!(
        p.decide(
            &ban("192.0.2.1", "a", "2026-11-21T17:59:50Z", 600, "3"),
            now()
        )
        .is_ok()
    );
}

#[test]
fn logger_lines_use_the_header_time() {
    let r = record::parse(b"<13>Nov 21 17:59:00 root[1]: HOST 192.0.2.1 PORT 22").unwrap();
    let t = record_time(&r, now());
    assert!(t <= now() + chrono::Duration::minutes(5));
    assert!(now() - t < chrono::Duration::days(1) + chrono::Duration::hours(14));
    // A header date more than a month later this year than now is from
    // last year.
    let r = record::parse(b"<13>Dec 31 23:00:00 root[1]: HOST 192.0.2.1 PORT 22").unwrap();
    assert!(record_time(&r, now()) < now() - chrono::Duration::days(300));
}

fn ban_in(target: &str, jail: &str, ts: &str, bantime: u32, id: &str) -> Record {
    line(
        "HOST",
        target,
        &format!("jail={jail} node=a ts={ts} bantime={bantime} id={id:0>16}"),
    )
}

fn unban_in(target: &str, jail: &str, ts: &str, id: &str) -> Record {
    line(
        "UNBAN",
        target,
        &format!("jail={jail} node=a ts={ts} id={id:0>16}"),
    )
}

#[test]
fn an_unban_from_another_jail_or_an_older_one_does_not_lift_a_ban() {
    let mut p = Policy::new(settings());
    assert!(
        p.decide(
            &ban_in("192.0.2.1", "sshd", "2026-11-21T17:52:00Z", 600, "1"),
            now()
        )
        .is_ok()
    );
    assert!(
        p.decide(
            &ban_in("192.0.2.1", "recidive", "2026-11-21T17:55:00Z", 604800, "2"),
            now()
        )
        .is_ok()
    );
    // sshd's own ban ends: its unban must not lift the week-long one.
    let sshd_unban = unban_in("192.0.2.1", "sshd", "2026-11-21T17:59:00Z", "3");
    assert_eq!(p.decide(&sshd_unban, now()), Err(Skip::UnbanSuperseded));
    // An unban older than the ban in force (spooled while the share
    // was down, delivered late) does not lift it either.
    let old = unban_in("192.0.2.1", "recidive", "2026-11-21T17:54:00Z", "4");
    assert_eq!(p.decide(&old, now()), Err(Skip::UnbanSuperseded));
    let current = unban_in("192.0.2.1", "recidive", "2026-11-21T17:59:30Z", "5");
    assert!(matches!(
        p.decide(&current, now()),
        Ok(Verdict::Unban { .. })
    ));
    assert_eq!(p.active_count(now()), 0);
}

#[test]
fn one_address_is_one_key_however_it_is_spelled() {
    let mut p = Policy::new(settings());
    let permanent = line(
        "HOST",
        "192.0.2.1",
        "node=a ts=2026-11-21T17:59:00Z bantime=-1 id=0000000000000001",
    );
    assert!(p.decide(&permanent, now()).is_ok());
    for (i, spelling) in ["192.0.2.1/32", "::ffff:192.0.2.1", "::ffff:192.0.2.1/128"]
        .iter()
        .enumerate()
    {
        let short = ban(
            spelling,
            "b",
            "2026-11-21T17:59:10Z",
            60,
            &format!("{}", i + 10),
        );
        assert_eq!(
            p.decide(&short, now()),
            Err(Skip::AlreadyBanned),
            "{spelling}"
        );
    }
    let unban = line(
        "UNBAN",
        "192.0.2.1/32",
        "node=a ts=2026-11-21T17:59:20Z id=0000000000000020",
    );
    assert!(p.decide(&unban, now()).is_ok());
    assert!(
        p.decide(
            &ban("192.0.2.1", "c", "2026-11-21T17:59:30Z", 60, "21"),
            now()
        )
        .is_ok()
    );
}

#[test]
fn a_flood_of_reports_keeps_one_per_node() {
    // The breaker would stop the flood first; this is about memory.
    let mut p = Policy::new(PolicySettings {
        min_nodes: 3,
        max_bans_per_node_per_minute: u32::MAX,
        ..settings()
    });
    for _ in 0..10_000 {
        let r = line("HOST", "192.0.2.1", "node=a ts=2026-11-21T17:59:00Z");
        assert_eq!(p.decide(&r, now()), Err(Skip::WaitingForNodes));
    }
    assert_eq!(p.reports.values().map(HashMap::len).sum::<usize>(), 1);
}

#[test]
fn refused_unbans_are_not_remembered() {
    let mut p = Policy::new(settings());
    for i in 0..100 {
        let r = unban_in(
            &format!("127.0.0.{i}"),
            "sshd",
            "2026-11-21T17:59:00Z",
            &format!("{:x}", i + 1000),
        );
        assert_eq!(p.decide(&r, now()), Err(Skip::NeverBan));
    }
    assert_eq!(p.active.lift_count(), 0);
}

#[test]
fn a_flooding_node_trips_its_breaker_and_others_still_apply() {
    let mut p = Policy::new(PolicySettings {
        max_bans_per_node_per_minute: 10,
        ..settings()
    });
    let mut applied = 0;
    let mut outcome = Vec::new();
    for i in 0..30 {
        let r = ban(
            &format!("198.51.100.{i}"),
            "flood",
            "2026-11-21T17:59:30Z",
            600,
            &format!("{:x}", i + 1),
        );
        match p.decide(&r, now()) {
            Ok(_) => applied += 1,
            Err(skip) => outcome.push(skip),
        }
    }
    assert_eq!(applied, 10);
    assert_eq!(outcome[0], Skip::BreakerTripped);
    assert!(outcome[1..].iter().all(|s| *s == Skip::NodeTripped));
    let unban = line(
        "UNBAN",
        "198.51.100.1",
        "node=flood ts=2026-11-21T17:59:40Z id=00000000000000ff",
    );
    assert_eq!(
        p.decide(&unban, now()),
        Err(Skip::NodeTripped),
        "a tripped node cannot unban either"
    );
    assert!(
        p.decide(
            &ban("192.0.2.1", "calm", "2026-11-21T17:59:30Z", 600, "abcd"),
            now()
        )
        .is_ok()
    );
    assert_eq!(p.tripped(now()).count(), 1);
    // After the cooldown the node is heard again.
    let later = now() + chrono::Duration::minutes(11);
    assert_eq!(p.tripped(later).count(), 0);
    let r = ban(
        "198.51.100.200",
        "flood",
        "2026-11-21T18:10:30Z",
        600,
        "beef",
    );
    assert!(p.decide(&r, later).is_ok());
}

#[test]
fn catching_up_is_not_a_flood() {
    let mut p = Policy::new(PolicySettings {
        max_bans_per_node_per_minute: 10,
        ..settings()
    });
    // 30 bans spread over 30 minutes, all read at once.
    for i in 0..30 {
        let ts = format!("2026-11-21T17:{:02}:00Z", 30 + i);
        let r = ban(
            &format!("198.51.100.{i}"),
            "busy",
            &ts,
            3600,
            &format!("{:x}", i + 1),
        );
        assert!(p.decide(&r, now()).is_ok(), "record {i}");
    }
}

#[test]
fn a_verdict_becomes_an_action_with_the_records_own_fields() {
    let mut p = Policy::new(settings());
    let r = line(
        "HOST",
        "192.0.2.1",
        "jail=sshd node=a ts=2026-11-21T17:59:00Z bantime=600 id=0000000000000001",
    );
    let verdict = p.decide(&r, now()).unwrap();
    let Action::Ban(ban) = verdict.into_action(r.clone()) else {
        panic!("a ban record gives a ban")
    };
    assert_eq!(ban.target, r.target);
    assert_eq!(ban.ports, r.ports);
    assert_eq!(ban.jail, r.fields.jail);
    assert_eq!(ban.origin, r.fields.node);
    assert_eq!(ban.ts, r.fields.ts);
    assert_eq!(ban.remaining, Some(Duration::from_secs(540)));
}

#[test]
fn overlaps_agrees_with_ipnet() {
    let nets: Vec<IpNet> = [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.3/32",
        "11.0.0.0/8",
        "255.255.255.255/32",
        "::/0",
        "fe80::/10",
        "fe80::1/128",
        "2001:db8::/32",
        "::ffff:0.0.0.0/128",
    ]
    .iter()
    .map(|n| n.parse().unwrap())
    .collect();
    for a in &nets {
        for b in &nets {
            assert_eq!(overlaps(a, b), a.contains(b) || b.contains(a), "{a} {b}");
        }
    }
}

#[test]
fn records_more_than_a_day_ahead_are_refused() {
    let mut p = Policy::new(settings());
    // An unban dated years ahead would otherwise make every ban stale.
    let unban = unban_in("192.0.2.1", "sshd", "2036-01-01T00:00:00Z", "1");
    assert_eq!(p.decide(&unban, now()), Err(Skip::FromTheFuture));
    let two_days = ban_in("192.0.2.2", "sshd", "2026-11-23T18:00:00Z", 600, "2");
    assert_eq!(p.decide(&two_days, now()), Err(Skip::FromTheFuture));
    let ban = ban_in("192.0.2.1", "sshd", "2026-11-21T17:59:00Z", 600, "3");
    assert!(p.decide(&ban, now()).is_ok());
}

/// The verdict's remaining time and adjustments, for a ban.
fn applied_ban(verdict: Result<Verdict, Skip>) -> (Option<Duration>, Adjusted) {
    match verdict {
        Ok(Verdict::Ban {
            remaining,
            adjusted,
            ..
        }) => (remaining, adjusted),
        other => panic!("not applied as a ban: {other:?}"),
    }
}

#[test]
fn a_record_less_than_a_day_ahead_applies_as_written_now() {
    let mut p = Policy::new(settings());
    let minutes = chrono::Duration::minutes;
    // Ten minutes ahead: the whole bantime, from now, and a warning.
    let ahead = ban_in("192.0.2.1", "sshd", "2026-11-21T18:10:00Z", 600, "1");
    let (remaining, adjusted) = applied_ban(p.decide(&ahead, now()));
    assert_eq!(remaining, Some(Duration::from_secs(600)));
    assert_eq!(adjusted.ahead, Some(minutes(10)));
    // Seconds ahead is a clock's ordinary jitter: no warning.
    let jitter = ban_in("192.0.2.2", "sshd", "2026-11-21T18:00:30Z", 600, "2");
    let (remaining, adjusted) = applied_ban(p.decide(&jitter, now()));
    assert_eq!(remaining, Some(Duration::from_secs(600)));
    assert_eq!(adjusted, Adjusted::default());
    // 23 hours ahead still applies, for its bantime from now.
    let far = ban_in("192.0.2.3", "sshd", "2026-11-22T17:00:00Z", 600, "3");
    let (remaining, adjusted) = applied_ban(p.decide(&far, now()));
    assert_eq!(remaining, Some(Duration::from_secs(600)));
    assert_eq!(adjusted.ahead, Some(minutes(23 * 60)));
}

#[test]
fn an_unban_from_a_clock_ahead_outranks_bans_for_as_long_as_it_is_ahead() {
    let mut p = Policy::new(settings());
    let ban = ban_in("192.0.2.1", "sshd", "2026-11-21T17:50:00Z", 3600, "1");
    assert!(p.decide(&ban, now()).is_ok());
    // From a clock 2 hours fast: it lifts the ban in force ...
    let unban = unban_in("192.0.2.1", "sshd", "2026-11-21T20:00:00Z", "2");
    let verdict = p.decide(&unban, now());
    assert!(matches!(verdict, Ok(Verdict::Unban { .. })), "{verdict:?}");
    assert_eq!(
        verdict.unwrap().adjusted().ahead,
        Some(chrono::Duration::hours(2))
    );
    // ... and, by its date, is newer than the bans of the next two hours ...
    let at = |t: &str| -> DateTime<Utc> { t.parse().unwrap() };
    let within = ban_in("192.0.2.1", "sshd", "2026-11-21T19:00:00Z", 3600, "3");
    assert_eq!(
        p.decide(&within, at("2026-11-21T19:00:00Z")),
        Err(Skip::BanSuperseded)
    );
    // ... but not than those written after the date it carries.
    let after = ban_in("192.0.2.1", "sshd", "2026-11-21T20:01:00Z", 3600, "4");
    assert!(p.decide(&after, at("2026-11-21T20:01:00Z")).is_ok());
}

#[test]
fn a_ban_from_a_clock_ahead_is_held_for_its_bantime_from_now_and_lifted_by_a_newer_unban() {
    let mut p = Policy::new(settings());
    let ban = ban_in("192.0.2.1", "sshd", "2026-11-21T20:00:00Z", 3600, "1");
    let (remaining, _) = applied_ban(p.decide(&ban, now()));
    assert_eq!(remaining, Some(Duration::from_secs(3600)), "not 3 hours");
    // An unban dated before the ban's date does not lift it ...
    let later = now() + chrono::Duration::minutes(5);
    let older = unban_in("192.0.2.1", "sshd", "2026-11-21T18:04:00Z", "2");
    assert_eq!(p.decide(&older, later), Err(Skip::UnbanSuperseded));
    // ... one dated after it does.
    let newer = unban_in("192.0.2.1", "sshd", "2026-11-21T20:00:01Z", "3");
    assert!(matches!(p.decide(&newer, later), Ok(Verdict::Unban { .. })));
    assert_eq!(p.active_count(later), 0);
}

#[test]
fn records_from_a_clock_ahead_read_together_keep_their_order() {
    // fail2ban on a host 10 minutes fast unbans, then bans again; a
    // watcher catching up reads both in one batch, as of the same now.
    let unban = unban_in("192.0.2.1", "sshd", "2026-11-21T18:08:00Z", "1");
    let ban = ban_in("192.0.2.1", "sshd", "2026-11-21T18:09:00Z", 600, "2");
    let mut p = Policy::new(settings());
    assert!(p.decide(&unban, now()).is_ok());
    assert!(p.decide(&ban, now()).is_ok(), "the ban is newer");
    // The other way round, the ban is older than the unban.
    let unban = unban_in("192.0.2.2", "sshd", "2026-11-21T18:09:00Z", "3");
    let ban = ban_in("192.0.2.2", "sshd", "2026-11-21T18:08:00Z", 600, "4");
    let mut p = Policy::new(settings());
    assert!(p.decide(&unban, now()).is_ok());
    assert_eq!(p.decide(&ban, now()), Err(Skip::BanSuperseded));
}

/// A logger line whose header says `at`, in this host's time zone.
fn logger_line_at(at: DateTime<Utc>) -> Record {
    let header = at.with_timezone(&Local).format("%b %e %H:%M:%S");
    record::parse(format!("<13>{header} root[1]: HOST 192.0.2.1 PORT 22").as_bytes()).unwrap()
}

#[test]
fn a_syslog_header_a_little_ahead_is_this_year() {
    let ten_minutes = now() + chrono::Duration::minutes(10);
    assert_eq!(
        record_time(&logger_line_at(ten_minutes), now()),
        ten_minutes
    );
    let mut p = Policy::new(settings());
    let (remaining, adjusted) = applied_ban(p.decide(&logger_line_at(ten_minutes), now()));
    assert_eq!(remaining, Some(Duration::from_secs(600)));
    assert_eq!(adjusted.ahead, Some(chrono::Duration::minutes(10)));
    // Around New Year, a clock ahead writes next year's date.
    let new_year: DateTime<Utc> = Local
        .with_ymd_and_hms(2026, 12, 31, 23, 55, 0)
        .unwrap()
        .with_timezone(&Utc);
    let next_year = new_year + chrono::Duration::minutes(10);
    assert_eq!(record_time(&logger_line_at(next_year), new_year), next_year);
    // Days ahead: this year's too, and so refused, not dropped as a year
    // old (and so long over) without a word.
    let two_days = now() + chrono::Duration::days(2);
    assert_eq!(record_time(&logger_line_at(two_days), now()), two_days);
    assert_eq!(
        p.decide(&logger_line_at(two_days), now()),
        Err(Skip::FromTheFuture)
    );
}

fn clamped(max_bantime: u64) -> PolicySettings {
    PolicySettings {
        max_bantime: Duration::from_secs(max_bantime),
        ..settings()
    }
}

#[test]
fn bantimes_longer_than_max_bantime_are_cut_to_it() {
    let mut p = Policy::new(clamped(3600));
    let ten_years = 10 * 365 * 24 * 3600;
    let long = ban("192.0.2.1", "a", "2026-11-21T17:59:00Z", ten_years, "1");
    let (remaining, adjusted) = applied_ban(p.decide(&long, now()));
    assert_eq!(remaining, Some(Duration::from_secs(3540)), "from its ts");
    assert_eq!(adjusted.clamped, Some(BanTime::Seconds(ten_years.into())));
    let exact = ban("192.0.2.2", "a", "2026-11-21T17:59:00Z", 3600, "2");
    let (_, adjusted) = applied_ban(p.decide(&exact, now()));
    assert_eq!(adjusted, Adjusted::default());
    // The default for records without one is cut likewise.
    let mut p = Policy::new(PolicySettings {
        default_bantime: BanTime::Permanent,
        ..clamped(3600)
    });
    let logger = record::parse(b"<13>Nov 21 17:59:00 root[1]: HOST 192.0.2.1 PORT 22").unwrap();
    let (remaining, adjusted) = applied_ban(p.decide_as(&logger, Provenance::Unverified, now()));
    assert!(remaining.is_some_and(|r| r <= Duration::from_secs(3600)));
    assert_eq!(adjusted.clamped, Some(BanTime::Permanent));
}

#[test]
fn a_permanent_ban_needs_a_trusted_signature() {
    let permanent = |id: &str| {
        line(
            "HOST",
            "192.0.2.1",
            &format!("node=a ts=2026-11-21T17:59:00Z bantime=-1 id={id:0>16}"),
        )
    };
    let mut p = Policy::new(clamped(3600));
    let (remaining, adjusted) =
        applied_ban(p.decide_as(&permanent("1"), Provenance::Unverified, now()));
    assert_eq!(remaining, Some(Duration::from_secs(3540)));
    assert_eq!(adjusted.clamped, Some(BanTime::Permanent));
    // Signed by a trusted node, it is permanent, and outlasts the cut one.
    let (remaining, adjusted) =
        applied_ban(p.decide_as(&permanent("2"), Provenance::Verified, now()));
    assert_eq!(remaining, None);
    assert_eq!(adjusted, Adjusted::default());
    // Even a trusted node's finite bantime is cut to max_bantime.
    let long = ban("192.0.2.9", "a", "2026-11-21T17:59:00Z", 7200, "3");
    let (remaining, _) = applied_ban(p.decide_as(&long, Provenance::Verified, now()));
    assert_eq!(remaining, Some(Duration::from_secs(3540)));
}

#[test]
fn copies_of_a_waiting_report_do_not_trip_the_breaker() {
    let mut p = Policy::new(PolicySettings {
        min_nodes: 2,
        max_bans_per_node_per_minute: 3,
        ..settings()
    });
    let r = ban("192.0.2.1", "victim", "2026-11-21T17:59:30Z", 600, "1");
    for _ in 0..100 {
        assert_eq!(p.decide(&r, now()), Err(Skip::WaitingForNodes));
    }
    assert_eq!(p.tripped(now()).count(), 0);
    let other = ban("192.0.2.1", "other", "2026-11-21T17:59:40Z", 600, "2");
    assert!(p.decide(&other, now()).is_ok());
}

#[test]
fn an_unban_that_cannot_lift_still_makes_older_bans_of_its_jail_stale() {
    let mut p = Policy::new(settings());
    let sshd = ban_in("192.0.2.1", "sshd", "2026-11-21T17:50:00Z", 3600, "1");
    let recidive = ban_in("192.0.2.1", "recidive", "2026-11-21T17:51:00Z", 86400, "2");
    let sshd_unban = unban_in("192.0.2.1", "sshd", "2026-11-21T17:52:00Z", "3");
    let recidive_unban = unban_in("192.0.2.1", "recidive", "2026-11-21T17:53:00Z", "4");
    assert!(p.decide(&sshd, now()).is_ok());
    assert!(p.decide(&recidive, now()).is_ok());
    assert_eq!(p.decide(&sshd_unban, now()), Err(Skip::UnbanSuperseded));
    assert!(p.decide(&recidive_unban, now()).is_ok());
    assert_eq!(p.decide(&sshd, now()), Err(Skip::BanSuperseded));
    assert_eq!(p.active_count(now()), 0);
}

#[test]
fn a_longer_older_report_does_not_let_an_unban_between_them_lift_the_newer_ban() {
    let records = [
        ban_in("192.0.2.1", "sshd", "2026-11-21T17:50:00Z", 1200, "1"),
        ban_in("192.0.2.1", "sshd", "2026-11-21T17:40:00Z", 3600, "2"),
        unban_in("192.0.2.1", "sshd", "2026-11-21T17:45:00Z", "3"),
    ];
    for order in [[0, 1, 2], [1, 2, 0], [1, 0, 2], [2, 0, 1]] {
        let mut p = Policy::new(settings());
        for i in order {
            let _ = p.decide(&records[i], now());
        }
        assert_eq!(p.active_count(now()), 1, "order {order:?}");
    }
}

/// Every watcher decides alike about records from a clock ahead, whether
/// it reads each as it comes or catches up on them later: they keep their
/// own dates. (Review finding: taken as written when read, they made a
/// watcher catching up end unlike the watchers that read them online.)
#[test]
fn watchers_reading_records_from_a_clock_ahead_at_different_times_agree() {
    let at = |t: &str| -> DateTime<Utc> { t.parse().unwrap() };
    let verdicts = |records: &[(&Record, &str)], late: DateTime<Utc>| {
        let mut online = Policy::new(settings());
        let mut caught_up = Policy::new(settings());
        for (record, read_at) in records {
            let a = online.decide(record, at(read_at)).is_ok();
            let b = caught_up.decide(record, late).is_ok();
            assert_eq!(a, b, "{record:?}: online {a}, caught up {b}");
        }
        (online.active_count(late), caught_up.active_count(late))
    };
    // A node 2 hours fast bans at 17:00 (dated 19:00, for 3 hours); at
    // 17:30 an admin on a correct clock unbans.
    let ban = ban_in("192.0.2.1", "sshd", "2026-11-21T19:00:00Z", 3 * 3600, "1");
    let unban = unban_in("192.0.2.1", "sshd", "2026-11-21T17:30:00Z", "2");
    let (a, b) = verdicts(
        &[
            (&ban, "2026-11-21T17:00:00Z"),
            (&unban, "2026-11-21T17:30:00Z"),
        ],
        at("2026-11-21T18:00:00Z"),
    );
    assert_eq!(a, b);
    // The fast node unbans at 17:00 (dated 19:00); a correct node bans
    // again at 17:30.
    let unban = unban_in("192.0.2.2", "sshd", "2026-11-21T19:00:00Z", "3");
    let ban = ban_in("192.0.2.2", "sshd", "2026-11-21T17:30:00Z", 3600, "4");
    let (a, b) = verdicts(
        &[
            (&unban, "2026-11-21T17:00:00Z"),
            (&ban, "2026-11-21T17:30:00Z"),
        ],
        at("2026-11-21T18:00:00Z"),
    );
    assert_eq!(a, b);
}

/// A copy of a record from a clock ahead, appended later by any writer, is
/// a copy: it neither lifts a ban newer than the original nor bans again
/// after the original's ban ran out. (Review finding: taken as written
/// when read, a copy was as new as the moment it was read.)
#[test]
fn copies_of_records_from_a_clock_ahead_are_copies() {
    let mins = |m| now() + chrono::Duration::minutes(m);
    // An unban from a clock 10 minutes fast, then a ban from a correct one
    // dated after the unban's date.
    let unban = unban_in("192.0.2.1", "sshd", "2026-11-21T18:10:00Z", "1");
    let mut p = Policy::new(settings());
    assert!(p.decide(&unban, now()).is_ok());
    let ban = ban_in("192.0.2.1", "sshd", "2026-11-21T18:11:00Z", 3600, "2");
    assert!(p.decide(&ban, mins(11)).is_ok());
    let copy = p.decide(&unban, mins(20));
    assert_eq!(
        p.active_count(mins(20)),
        1,
        "a copy of the old unban lifted the newer ban: {copy:?}"
    );

    // A 10-minute ban from a clock 18 hours fast, copied after the
    // firewall let it go (10 minutes after it was read).
    let ban = ban_in("192.0.2.2", "sshd", "2026-11-22T12:00:00Z", 600, "3");
    let mut p = Policy::new(settings());
    let (remaining, _) = applied_ban(p.decide(&ban, now()));
    assert_eq!(remaining, Some(Duration::from_secs(600)));
    let copy = p.decide(&ban, mins(20));
    assert!(copy.is_err(), "a copy banned again: {copy:?}");
}

/// A ban from a clock ahead is held by the firewall for its bantime from
/// now only, so it does not cover a ban from a correct clock that ends
/// later than that: the later ban must still be applied. (Review2 finding:
/// the policy compared the correct ban with the record's dated end, skipped
/// it as `AlreadyBanned`, and the address went free when the firewall's
/// shorter timeout ran out.)
#[test]
fn a_ban_from_a_clock_ahead_does_not_cover_a_later_ban_beyond_what_the_firewall_holds() {
    let at = |t: &str| -> DateTime<Utc> { t.parse().unwrap() };
    let mut p = Policy::new(settings());
    // Read at 18:00 from a clock 2 hours fast: dated 20:00, for 1 hour.
    // The firewall holds it until 19:00.
    let fast = ban_in("192.0.2.1", "sshd", "2026-11-21T20:00:00Z", 3600, "1");
    let (remaining, _) = applied_ban(p.decide(&fast, now()));
    assert_eq!(remaining, Some(Duration::from_secs(3600)));
    // At 18:30 a correct clock bans the same address for 2 hours (until
    // 20:30): the firewall must hold it past 19:00.
    let correct = ban("192.0.2.1", "b", "2026-11-21T18:30:00Z", 7200, "2");
    let verdict = p.decide(&correct, at("2026-11-21T18:30:00Z"));
    assert!(
        matches!(verdict, Ok(Verdict::Ban { .. })),
        "the address goes free at 19:00 although a ban runs to 20:30: {verdict:?}"
    );
}

/// A ban from a clock ahead that outlasts the ban in force by its date is
/// applied, but its firewall timeout (its bantime from now) must not cut
/// the ban in force short: the backends replace an element's timeout.
#[test]
fn a_ban_from_a_clock_ahead_does_not_shorten_the_firewalls_hold_of_a_ban_in_force() {
    let at = |t: &str| -> DateTime<Utc> { t.parse().unwrap() };
    let mut p = Policy::new(settings());
    // At 18:00 a correct clock bans for 2 hours: held until 20:00.
    let correct = ban("192.0.2.1", "b", "2026-11-21T18:00:00Z", 7200, "1");
    let (remaining, _) = applied_ban(p.decide(&correct, now()));
    assert_eq!(remaining, Some(Duration::from_secs(7200)));
    // At 18:10, from a clock 2 hours fast: dated 20:00, for 1 hour (until
    // 21:00 by its date). Whatever is applied must still hold to 20:00.
    let fast = ban_in("192.0.2.1", "sshd", "2026-11-21T20:00:00Z", 3600, "2");
    match p.decide(&fast, at("2026-11-21T18:10:00Z")) {
        Ok(Verdict::Ban { remaining, .. }) => assert!(
            remaining >= Some(Duration::from_secs(110 * 60)),
            "the firewall would let it go at 19:10, not 20:00: {remaining:?}"
        ),
        Err(Skip::AlreadyBanned) => {}
        other => panic!("{other:?}"),
    }
}

fn allowlist(verb: &str, target: &str, ts: &str, id: &str) -> Record {
    let text = format!(
        "<13>Nov 21 18:00:00 banshare[1]: {verb} {target} PORT 0:65535 node=ops ts={ts} id={id:0>16}"
    );
    record::parse(text.as_bytes()).unwrap()
}

#[test]
fn an_allow_lifts_overlapping_bans_and_refuses_new_ones_until_unallowed() {
    let mut p = Policy::new(settings());
    for (target, id) in [
        ("198.51.100.7", "1"),
        ("198.51.100.0/28", "2"),
        ("192.0.2.1", "3"),
    ] {
        let r = ban(target, "web1", "2026-11-21T17:50:00Z", 3600, id);
        assert!(p.decide(&r, now()).is_ok(), "{target}");
    }
    let allow = allowlist("ALLOW", "198.51.100.0/24", "2026-11-21T17:55:00Z", "4");
    let mut lifted: Vec<String> = p
        .control(&allow, now())
        .unwrap()
        .iter()
        .map(|u| format!("{} {}", u.target, u.origin.as_ref().unwrap()))
        .collect();
    lifted.sort();
    assert_eq!(lifted, ["198.51.100.0/28 web1", "198.51.100.7 web1"]);
    assert_eq!(p.active_bans().count(), 1);
    let later = ban("198.51.100.9", "web2", "2026-11-21T17:58:00Z", 3600, "5");
    assert_eq!(p.decide(&later, now()), Err(Skip::Allowlisted));
    assert_eq!(
        p.refuses("198.51.100.9/32".parse().unwrap()),
        Some(Skip::Allowlisted)
    );
    // A copy of the ALLOW changes nothing; an older UNALLOW neither.
    assert_eq!(p.control(&allow, now()), Err(Skip::AllowSuperseded));
    let old = allowlist("UNALLOW", "198.51.100.0/24", "2026-11-21T17:54:00Z", "6");
    assert_eq!(p.control(&old, now()), Err(Skip::AllowSuperseded));
    let unallow = allowlist("UNALLOW", "198.51.100.0/24", "2026-11-21T17:59:00Z", "7");
    assert_eq!(p.control(&unallow, now()), Ok(Vec::new()));
    // Dated before the removal (a copy read again): still refused; a
    // report made after it bans.
    assert_eq!(p.decide(&later, now()), Err(Skip::Allowlisted));
    let copy = ban("198.51.100.7", "web1", "2026-11-21T17:50:00Z", 3600, "1");
    assert_eq!(p.decide(&copy, now()), Err(Skip::Allowlisted));
    let after = ban("198.51.100.9", "web2", "2026-11-21T17:59:30Z", 3600, "9");
    assert!(p.decide(&after, now()).is_ok(), "no longer listed");
    let everything = allowlist("ALLOW", "0.0.0.0/0", "2026-11-21T17:59:30Z", "8");
    assert_eq!(p.control(&everything, now()), Err(Skip::TooWide));
}

#[test]
fn lifting_a_node_removes_its_bans_and_refuses_its_older_records() {
    let mut p = Policy::new(settings());
    let theirs = ban("192.0.2.1", "web3", "2026-11-21T17:50:00Z", 3600, "1");
    let ours = ban("192.0.2.2", "web1", "2026-11-21T17:50:00Z", 3600, "2");
    assert!(p.decide(&theirs, now()).is_ok());
    assert!(p.decide(&ours, now()).is_ok());
    let web3: NodeId = "web3".parse().unwrap();
    let lifted = p.lift_node(&web3, now());
    assert_eq!(lifted.len(), 1);
    assert_eq!(lifted[0].target.to_string(), "192.0.2.1");
    assert_eq!(p.decide(&theirs, now()), Err(Skip::NodeLifted));
    let newer = ban("192.0.2.3", "web3", "2026-11-21T18:00:01Z", 3600, "3");
    assert!(p.decide(&newer, now()).is_ok(), "dated after the lift");
    // Saved and restored, as across a restart.
    let mut again = Policy::new(settings());
    again.restore_control(p.saved_control());
    assert_eq!(again.decide(&theirs, now()), Err(Skip::NodeLifted));
}

/// The watcher checks a signature only where [`Policy::precheck`] says the
/// record could change something: where it says not, deciding the record
/// must return that skip and change nothing at all.
fn assert_precheck_agrees(p: &mut Policy, r: &Record, now: DateTime<Utc>) -> Result<(), Skip> {
    let before = format!("{p:?}");
    let pre = p.precheck(r, Provenance::Verified, now);
    assert_eq!(format!("{p:?}"), before, "precheck changed the state: {r}");
    let decided = p.decide_as(r, Provenance::Verified, now);
    if let Err(skip) = pre {
        assert_eq!(decided, Err(skip), "{r}");
        assert_eq!(format!("{p:?}"), before, "{skip:?} changed the state: {r}");
    }
    pre
}

#[test]
fn the_precheck_names_records_that_change_nothing_and_only_those() {
    let mut p = Policy::new(settings());
    let live = ban_in("192.0.2.1", "sshd", "2026-11-21T17:50:00Z", 3600, "1");
    assert_eq!(assert_precheck_agrees(&mut p, &live, now()), Ok(()));
    let unban = unban_in("192.0.2.2", "sshd", "2026-11-21T17:55:00Z", "2");
    assert_eq!(assert_precheck_agrees(&mut p, &unban, now()), Ok(()));
    let dropped = [
        (live.clone(), Skip::AlreadyBanned),
        (
            ban("192.0.2.3", "me", "2026-11-21T17:50:00Z", 3600, "3"),
            Skip::OwnNode,
        ),
        (
            ban_in("192.0.2.3", "sshd", "2026-11-21T15:00:00Z", 3600, "4"),
            Skip::Expired,
        ),
        (
            ban_in("192.0.2.2", "sshd", "2026-11-21T17:54:00Z", 3600, "5"),
            Skip::BanSuperseded,
        ),
        (
            unban_in("192.0.2.2", "sshd", "2026-11-21T17:51:00Z", "6"),
            Skip::AlreadyLifted,
        ),
        (
            ban_in("203.0.113.5", "sshd", "2026-11-21T17:50:00Z", 3600, "7"),
            Skip::Ignored,
        ),
        (
            ban_in("127.0.0.1", "sshd", "2026-11-21T17:50:00Z", 3600, "8"),
            Skip::NeverBan,
        ),
        (
            ban_in("192.0.2.3", "sshd", "2026-11-23T17:50:00Z", 3600, "9"),
            Skip::FromTheFuture,
        ),
    ];
    for (record, skip) in &dropped {
        assert_eq!(
            assert_precheck_agrees(&mut p, record, now()),
            Err(*skip),
            "{record}"
        );
    }
    // Allowlist records are the daemon's to hand to `control`, even from
    // this node (an operator's key kept here) or an allowlisted network.
    let mut p_ops = Policy::new(PolicySettings {
        node: "ops".parse().unwrap(),
        ..settings()
    });
    let allow = allowlist("ALLOW", "192.0.2.0/24", "2026-11-21T17:50:00Z", "20");
    assert_eq!(p_ops.precheck(&allow, Provenance::Verified, now()), Ok(()));
    p_ops.control(&allow, now()).unwrap();
    assert_eq!(p_ops.precheck(&allow, Provenance::Verified, now()), Ok(()));
    // Could change something: a newer copy moves the ban's `since` up, an
    // unban older than the ban in force is still remembered, a longer ban
    // extends it.
    for record in [
        ban_in("192.0.2.1", "sshd", "2026-11-21T17:51:00Z", 600, "10"),
        unban_in("192.0.2.1", "recidive", "2026-11-21T17:40:00Z", "11"),
        ban_in("192.0.2.1", "sshd", "2026-11-21T17:52:00Z", 7200, "12"),
    ] {
        assert_eq!(assert_precheck_agrees(&mut p, &record, now()), Ok(()));
    }
}

#[test]
fn the_precheck_agrees_with_decide_on_random_records() {
    // A small world, so that records meet: 3 addresses, 2 jails, 3 nodes
    // (one of them this node), times around now, min_nodes 2 for half.
    for min_nodes in [1, 2] {
        let mut p = Policy::new(PolicySettings {
            min_nodes,
            max_bans_per_node_per_minute: 20,
            ..settings()
        });
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 + min_nodes as u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut dropped, mut kept) = (0, 0);
        for i in 0..3000 {
            let addr = format!("192.0.2.{}", 1 + next(3));
            let jail = ["sshd", "recidive"][next(2) as usize];
            let node = ["me", "a", "b"][next(3) as usize];
            let ts = now() - chrono::Duration::seconds(next(7200) as i64 - 600);
            let ts = ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let fields = format!("jail={jail} node={node} ts={ts} id={i:016x}");
            let record = match next(3) {
                0 => line("UNBAN", &addr, &fields),
                _ => {
                    let bantime = [60, 600, 3600, 86400][next(4) as usize];
                    line("HOST", &addr, &format!("{fields} bantime={bantime}"))
                }
            };
            match assert_precheck_agrees(&mut p, &record, now()) {
                Ok(()) => kept += 1,
                Err(_) => dropped += 1,
            }
        }
        assert!(dropped > 1000 && kept > 100, "{dropped} {kept}");
    }
}
