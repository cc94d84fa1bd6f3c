use std::time::{Duration, Instant};

use super::super::fake::FakePublisher;
use super::*;
use crate::follow::Wake;

/// A feed on `publisher`, watched, and the wake it pokes.
fn watched(publisher: &FakePublisher) -> (ZmqFeed, Wake) {
    let mut feed = ZmqFeed::new(
        &publisher.url(),
        &publisher.settings(),
        Duration::from_secs(30),
    );
    let (wake, handle) = Wake::new(Mode::Poll(Duration::from_millis(100)));
    let mode = feed.watch(handle);
    assert!(
        mode.describe().starts_with("pushed by the publisher"),
        "{mode:?}"
    );
    (feed, wake)
}

/// Reads until `n` records came, waiting on the feed's wake-ups.
fn read_n(feed: &mut ZmqFeed, wake: &mut Wake, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(Instant::now() < deadline, "only {got:?} of {n}");
        for entry in feed.read(n - got.len()).unwrap() {
            match entry {
                Entry::Record(line) => got.push(line),
                other => panic!("{other:?}"),
            }
        }
        if got.len() < n {
            wake.wait();
        }
    }
    got
}

fn line(i: u64) -> Vec<u8> {
    format!("<13>record {i}").into_bytes()
}

#[test]
fn zmq_feed_hands_out_records_in_order_with_their_position() {
    let publisher = FakePublisher::start(0xabc);
    publisher.store(&line(1), false);
    let (mut feed, mut wake) = watched(&publisher);
    assert_eq!(read_n(&mut feed, &mut wake, 1), [line(1)]);
    for i in 2..=4 {
        publisher.store(&line(i), false);
    }
    assert_eq!(read_n(&mut feed, &mut wake, 3), [line(2), line(3), line(4)]);
    let position = feed.position().unwrap();
    assert_eq!((position.kind.as_str(), position.seq), ("zmq", 4));
    assert_eq!(position.log, publisher.url().to_string());
    assert_eq!(
        position.at,
        serde_json::json!({
            "epoch": "0000000000000abc",
            "digest": Digest::of(&line(4)).to_string(),
        })
    );
    assert_eq!(feed.unread(0).unwrap().lines, Some(0));
}

#[test]
fn zmq_feed_recovers_a_record_the_broadcast_lost() {
    let publisher = FakePublisher::start(1);
    publisher.store(&line(1), false);
    let (mut feed, mut wake) = watched(&publisher);
    assert_eq!(read_n(&mut feed, &mut wake, 1), [line(1)]);
    let asked = publisher.state().catch_ups;
    publisher.store(&line(2), true);
    publisher.store(&line(3), false);
    assert_eq!(read_n(&mut feed, &mut wake, 2), [line(2), line(3)]);
    assert!(publisher.state().catch_ups > asked, "the gap was asked for");
}

#[test]
fn zmq_feed_resumes_exactly_after_a_saved_position() {
    let publisher = FakePublisher::start(5);
    for i in 1..=5 {
        publisher.store(&line(i), false);
    }
    let (mut first, mut wake) = watched(&publisher);
    assert_eq!(read_n(&mut first, &mut wake, 3).len(), 3);
    let saved = first.position().unwrap();
    drop(first);
    publisher.store(&line(6), false);
    let (mut feed, mut wake) = watched(&publisher);
    feed.resume(&saved).unwrap();
    assert_eq!(read_n(&mut feed, &mut wake, 3), [line(4), line(5), line(6)]);
    assert!(feed.read(10).unwrap().is_empty(), "nothing twice");
    let mut other = saved.clone();
    other.kind = "file".into();
    assert!(feed.resume(&other).is_err());
}

#[test]
fn zmq_feed_starts_a_new_epoch_from_its_first_record_and_warns() {
    let publisher = FakePublisher::start(0x2);
    publisher.store(&line(1), false);
    publisher.store(&line(2), false);
    let (mut feed, mut wake) = watched(&publisher);
    let saved = Position {
        kind: KIND.into(),
        log: publisher.url().to_string(),
        seq: 9,
        at: serde_json::json!({"epoch": "0000000000000001"}),
    };
    feed.resume(&saved).unwrap();
    assert_eq!(read_n(&mut feed, &mut wake, 2), [line(1), line(2)]);
    let notices = feed.take_notices();
    assert!(
        notices
            .iter()
            .any(|n| n.warning && n.text.contains("new log")),
        "{notices:?}"
    );
}

#[test]
fn zmq_feed_refuses_garbage_and_keeps_going() {
    let publisher = FakePublisher::start(3);
    let (mut feed, mut wake) = watched(&publisher);
    assert!(read_n(&mut feed, &mut wake, 0).is_empty());
    let header = "banshare/1 0000000000000003 1".as_bytes().to_vec();
    // Garbage until the feed saw some (the first may go before it is
    // subscribed), then a good record.
    let deadline = Instant::now() + Duration::from_secs(20);
    while feed.malformed == 0 {
        assert!(Instant::now() < deadline);
        publisher.state().outbox.extend([
            vec![b"junk\xff".to_vec()],
            vec![header.clone(), b"x not a number".to_vec()],
            vec![header.clone(), b"1 a".to_vec(), b"extra".to_vec()],
            vec![],
        ]);
        wake.wait();
        feed.read(10).unwrap();
    }
    publisher.store(&line(1), false);
    assert_eq!(read_n(&mut feed, &mut wake, 1), [line(1)]);
    let notices = feed.take_notices();
    assert_eq!(notices.len(), 1, "rate-limited: {notices:?}");
    assert!(notices[0].text.contains("refused"), "{notices:?}");
}

#[test]
fn zmq_feed_without_a_publisher_is_unreachable() {
    let publisher = FakePublisher::start(1);
    let (url, mut settings) = (publisher.url(), publisher.settings());
    drop(publisher);
    settings.timeout = Duration::from_millis(300);
    let mut feed = ZmqFeed::new(&url, &settings, Duration::from_secs(30));
    let e = feed.read(10).unwrap_err();
    assert!(matches!(e, FeedError::Unreachable(_)), "{e:?}");
    assert_eq!(feed.position(), None);
}

#[test]
fn zmq_feed_tells_of_a_publisher_that_went_away() {
    let publisher = FakePublisher::start(1);
    publisher.store(&line(1), false);
    let mut settings = publisher.settings();
    settings.timeout = Duration::from_millis(300);
    let mut feed = ZmqFeed::new(&publisher.url(), &settings, Duration::from_secs(30));
    let (mut wake, handle) = Wake::new(Mode::Poll(Duration::from_millis(100)));
    feed.watch(handle);
    assert_eq!(read_n(&mut feed, &mut wake, 1), [line(1)]);
    drop(publisher);
    // The broadcast's connection drops at once; the next read asks the
    // catch-up socket, which does not answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match feed.read(10) {
            Err(FeedError::Unreachable(e)) => {
                assert!(e.contains("banshare publisher"), "{e}");
                break;
            }
            other => assert!(other.unwrap().is_empty()),
        }
        assert!(Instant::now() < deadline, "the outage went unseen");
        wake.wait();
    }
    assert_eq!(feed.position().unwrap().seq, 1);
}

#[test]
fn zmq_feed_refuses_a_malformed_catch_up_reply_and_recovers() {
    let publisher = FakePublisher::start(4);
    publisher.store(&line(1), false);
    let (mut feed, mut wake) = watched(&publisher);
    feed.settings.timeout = Duration::from_millis(500);
    assert_eq!(read_n(&mut feed, &mut wake, 1), [line(1)]);
    publisher.store(&line(2), true);
    // Resuming where it stands makes the feed ask at once.
    let here = feed.position().unwrap();
    feed.resume(&here).unwrap();
    for (i, garbage) in [
        vec![vec![]],
        vec![b"banshare/9 0000000000000004 1".to_vec()],
    ]
    .into_iter()
    .enumerate()
    {
        publisher.state().catch_up_garbage = Some(garbage);
        match feed.read(10) {
            Err(FeedError::Other(e)) => assert!(e.contains("malformed"), "{e}"),
            other => panic!("garbage {i}: {other:?}"),
        }
    }
    // A frame over the limit: libzmq drops the connection unread, and the
    // publisher does not answer.
    publisher.state().catch_up_garbage = Some(vec![vec![0xff; 5000]]);
    assert!(matches!(feed.read(10), Err(FeedError::Unreachable(_))));
    // A record frame that is no `<seq> <line>` is refused and counted.
    let header = b"banshare/1 0000000000000004 1".to_vec();
    publisher.state().catch_up_garbage = Some(vec![header, b"one x".to_vec()]);
    assert_eq!(feed.read(10).unwrap(), []);
    assert_eq!(feed.malformed, 1);
    publisher.state().catch_up_garbage = None;
    assert_eq!(read_n(&mut feed, &mut wake, 1), [line(2)]);
}

#[test]
fn zmq_feed_first_read_hands_out_what_the_publisher_has() {
    let publisher = FakePublisher::start(6);
    publisher.store(&line(1), false);
    publisher.store(&line(2), false);
    let mut feed = ZmqFeed::new(
        &publisher.url(),
        &publisher.settings(),
        Duration::from_secs(30),
    );
    let first = feed.read(10).unwrap();
    assert_eq!(first, [Entry::Record(line(1)), Entry::Record(line(2))]);
}

#[test]
fn zmq_feed_survives_the_last_possible_number() {
    let publisher = FakePublisher::start(4);
    let mut feed = ZmqFeed::new(
        &publisher.url(),
        &publisher.settings(),
        Duration::from_secs(30),
    );
    let max = u64::MAX;
    let header = format!("banshare/1 0000000000000004 {max}").into_bytes();
    let record = format!("{max} <13>last").into_bytes();
    publisher.state().catch_up_garbage = Some(vec![header, record]);
    for _ in 0..3 {
        feed.read(10).unwrap();
    }
    assert_eq!(feed.position().unwrap().seq, max);
}

/// Review 12: a publisher whose log was restored from an older copy (the
/// epoch file with it: a backup, a VM snapshot, a disk that lost its
/// tail) numbers its next records from where the copy ends. A watcher that
/// had read further must not drop them as "already seen": they are new
/// bans, ACKed to their senders.
#[test]
fn zmq_feed_does_not_drop_new_records_after_the_log_was_rolled_back() {
    let publisher = FakePublisher::start(0x77);
    publisher.store(&line(1), false);
    let (mut feed, mut wake) = watched(&publisher);
    // The watcher had read up to 5 before the publisher's log was restored
    // to a copy holding only record 1 (same epoch).
    let saved = Position {
        kind: KIND.into(),
        log: publisher.url().to_string(),
        seq: 5,
        at: serde_json::json!({"epoch": "0000000000000077"}),
    };
    feed.resume(&saved).unwrap();
    // New bans, numbered 2 and 3 by the restored log, ACKed to senders.
    publisher.store(b"<13>new ban A", false);
    publisher.store(b"<13>new ban B", false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while Instant::now() < deadline && got.len() < 2 {
        for entry in feed.read(10).unwrap() {
            if let Entry::Record(line) = entry {
                got.push(line);
            }
        }
        if got.len() < 2 {
            wake.wait();
        }
    }
    assert!(
        got.contains(&b"<13>new ban A".to_vec()) && got.contains(&b"<13>new ban B".to_vec()),
        "records ACKed after the rollback were dropped; got {got:?}, position {:?}, notices {:?}",
        feed.position().map(|p| p.seq),
        feed.take_notices()
    );
}

/// A publisher that compacted its log keeps the numbers of the records in
/// force; a watcher that had read up to 3 goes on with what is left after
/// it, in one catch-up request however many gaps there are, and nothing
/// twice.
#[test]
fn zmq_feed_catches_up_across_a_compacted_log_in_one_request() {
    let publisher = FakePublisher::start(0x33);
    for i in 1..=12 {
        publisher.store(&line(i), false);
    }
    let (mut first, mut wake) = watched(&publisher);
    assert_eq!(read_n(&mut first, &mut wake, 3).len(), 3);
    let saved = first.position().unwrap();
    drop(first);
    publisher.state().compacted.extend([4, 5, 6, 7, 9, 11]);
    let (mut feed, mut wake) = watched(&publisher);
    feed.resume(&saved).unwrap();
    let asked = publisher.state().catch_ups;
    assert_eq!(
        read_n(&mut feed, &mut wake, 3),
        [line(8), line(10), line(12)]
    );
    let asked = publisher.state().catch_ups - asked;
    assert_eq!(feed.position().unwrap().seq, 12);
    assert!(feed.read(10).unwrap().is_empty(), "nothing twice");
    assert_eq!(
        asked, 1,
        "one catch-up request for the whole compacted range"
    );
}

/// A position saved after record `seq` of epoch `epoch` (hex), naming that
/// record by the digest of `last`, as a feed saves it.
fn saved_with_digest(publisher: &FakePublisher, seq: u64, epoch: &str, last: &[u8]) -> Position {
    Position {
        kind: KIND.into(),
        log: publisher.url().to_string(),
        seq,
        at: serde_json::json!({"epoch": epoch, "digest": Digest::of(last).to_string()}),
    }
}

/// Review 12b: the same rollback as above, but the restored publisher took
/// more new records than the watcher had read before the watcher came back
/// (it was stopped, or its host was down, during the restore). The log's
/// `last` is then past the saved position, so nothing tells the watcher the
/// numbers were given again: new ACKed bans numbered at or below its saved
/// position are dropped as "already read", silently.
#[test]
fn zmq_feed_does_not_drop_new_records_after_a_rollback_it_did_not_see() {
    let publisher = FakePublisher::start(0x78);
    publisher.store(&line(1), false);
    // Saved while the log held records 1 to 5 (before the restore), with
    // the digest of record 5 as the feed read it, as a feed saves it.
    let saved = saved_with_digest(&publisher, 5, "0000000000000078", &line(5));
    // The log restored to a copy holding record 1 (same epoch), then new
    // bans, numbered 2 to 8, ACKed to senders while the watcher is away.
    let new: Vec<Vec<u8>> = (2..=8)
        .map(|i| format!("<13>new ban {i}").into_bytes())
        .collect();
    for l in &new {
        publisher.store(l, false);
    }
    let (mut feed, mut wake) = watched(&publisher);
    feed.resume(&saved).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while Instant::now() < deadline && got.len() < new.len() {
        for entry in feed.read(10).unwrap() {
            if let Entry::Record(line) = entry {
                got.push(line);
            }
        }
        if got.len() < new.len() {
            wake.wait();
        }
    }
    let lost: Vec<String> = new
        .iter()
        .filter(|l| !got.contains(l))
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let notices = feed.take_notices();
    assert!(
        lost.is_empty(),
        "ACKed records never handed out: {lost:?}; notices {notices:?}"
    );
    assert!(
        notices
            .iter()
            .any(|n| n.warning && n.text.contains("is not the one read here")),
        "the re-read was not told: {notices:?}"
    );
    // The position names the last record by its digest from now on.
    let at = feed.position().unwrap().at;
    assert_eq!(at["digest"], Digest::of(new.last().unwrap()).to_string());
}

/// A feed whose saved record is still the publisher's goes on after it,
/// reading nothing again and saying nothing.
#[test]
fn zmq_feed_with_a_matching_digest_resumes_after_its_position() {
    let publisher = FakePublisher::start(0x79);
    for i in 1..=3 {
        publisher.store(&line(i), false);
    }
    let saved = saved_with_digest(&publisher, 2, "0000000000000079", &line(2));
    let (mut feed, mut wake) = watched(&publisher);
    feed.resume(&saved).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while Instant::now() < deadline && got.is_empty() {
        got.extend(feed.read(10).unwrap());
        if got.is_empty() {
            wake.wait();
        }
    }
    assert_eq!(got, vec![Entry::Record(line(3))]);
    assert_eq!(feed.take_notices(), vec![]);
}

/// A publisher from before the digest refuses a request that carries one
/// (`NAK malformed`): the feed asks again without it, says so once, and
/// reads on.
#[test]
fn zmq_feed_asks_an_older_publisher_without_the_digest() {
    let publisher = FakePublisher::start(0x7a);
    publisher.state().no_digest = true;
    for i in 1..=3 {
        publisher.store(&line(i), false);
    }
    let saved = saved_with_digest(&publisher, 2, "000000000000007a", &line(2));
    let (mut feed, mut wake) = watched(&publisher);
    feed.resume(&saved).unwrap();
    assert_eq!(read_n(&mut feed, &mut wake, 1), [line(3)]);
    let notices = feed.take_notices();
    assert!(
        notices.len() == 1 && notices[0].text.contains("older banshare"),
        "{notices:?}"
    );
}
