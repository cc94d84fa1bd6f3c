use std::time::Duration;

use super::super::fake::{Answer, FakePublisher};
use super::*;

const LINES: &[u8] = b"<13>one\n<13>two\n<13>three\n";

#[test]
fn zmq_sender_delivers_a_batch_as_one_request() {
    let publisher = FakePublisher::start(7);
    let mut transport = ZmqTransport::new(
        &publisher.url(),
        &Default::default(),
        Duration::from_secs(5),
    );
    transport.append(LINES).unwrap();
    transport.append(b"<13>four\n").unwrap();
    let log = publisher.state().log.clone();
    assert_eq!(
        log,
        [&b"<13>one"[..], b"<13>two", b"<13>three", b"<13>four"]
    );
    assert_eq!(transport.refused(), 0);
    assert_eq!(transport.find_ids(&Default::default()).unwrap(), None);
}

#[test]
fn zmq_sender_without_a_publisher_is_unreachable_and_wrote_nothing() {
    // A port nothing listens on: ZMQ_IMMEDIATE queues nothing for it.
    let url = FakePublisher::start(1).url();
    let mut transport = ZmqTransport::new(&url, &Default::default(), Duration::from_millis(300));
    let e = transport.append(LINES).unwrap_err();
    assert!(matches!(e, TransportError::Unreachable { .. }), "{e:?}");
    assert!(e.wrote_nothing(), "{e}");
    assert!(e.to_string().contains("banshare publisher"), "{e}");
}

#[test]
fn zmq_sender_timeout_after_sending_is_uncertain_and_takes_a_fresh_socket() {
    let publisher = FakePublisher::start(7);
    publisher.state().answer = Answer::Silent;
    // Long enough to connect on a loaded machine: the call must get as far
    // as sending, then wait in vain for the reply.
    let mut transport = ZmqTransport::new(
        &publisher.url(),
        &Default::default(),
        Duration::from_millis(1500),
    );
    let e = transport.append(LINES).unwrap_err();
    assert!(matches!(e, TransportError::Write { .. }), "{e:?}");
    assert!(!e.wrote_nothing(), "the publisher may have stored it: {e}");
    assert!(
        transport.socket.is_none(),
        "the stuck REQ socket is dropped"
    );
    // The publisher answers again: the next call works on a fresh socket
    // (the old one would refuse to send before its reply came).
    publisher.state().answer = Answer::Store;
    transport.append(b"<13>four\n").unwrap();
    let log = publisher.state().log.clone();
    assert!(log.contains(&b"<13>four".to_vec()), "{log:?}");
}

#[test]
fn zmq_sender_logs_refused_records_and_does_not_keep_them() {
    let publisher = FakePublisher::start(7);
    // The legacy refusal, to a line the publisher read as a legacy message.
    publisher.state().answer = Answer::Refuse(String::new());
    let mut transport = ZmqTransport::new(
        &publisher.url(),
        &Default::default(),
        Duration::from_secs(5),
    );
    transport.append(b"<13>a|b\n").unwrap();
    assert_eq!(transport.refused(), 1);

    let publisher = FakePublisher::start(7);
    publisher.state().answer = Answer::Refuse("untrusted".into());
    let mut transport = ZmqTransport::new(
        &publisher.url(),
        &Default::default(),
        Duration::from_secs(5),
    );
    // Done with: spooling a refused record would resend it forever.
    transport.append(LINES).unwrap();
    assert_eq!(transport.refused(), 3);
    assert!(publisher.state().log.is_empty());
}

#[test]
fn zmq_sender_splits_a_large_batch_into_requests_the_publisher_takes() {
    let publisher = FakePublisher::start(7);
    let mut transport = ZmqTransport::new(
        &publisher.url(),
        &Default::default(),
        Duration::from_secs(5),
    );
    let batch: Vec<u8> = (0..2500)
        .flat_map(|i| format!("<13>r{i}\n").into_bytes())
        .collect();
    transport.append(&batch).unwrap();
    assert_eq!(transport.refused(), 0);
    let log = publisher.state().log.clone();
    assert_eq!(log.len(), 2500);
    assert_eq!(log[2499], b"<13>r2499");
}

#[test]
fn zmq_sender_keeps_a_batch_the_publisher_could_not_store() {
    let publisher = FakePublisher::start(7);
    publisher.state().answer = Answer::Refuse("store_failed".into());
    let mut transport = ZmqTransport::new(
        &publisher.url(),
        &Default::default(),
        Duration::from_secs(5),
    );
    // Nothing was stored: the spool keeps it, to send again later.
    let e = transport.append(LINES).unwrap_err();
    assert!(e.wrote_nothing(), "{e:?}");
    assert!(e.to_string().contains("store_failed"), "{e}");
    assert_eq!(transport.refused(), 0);
}

/// Review 12b: docs/zmq.md takes a bracketed IPv6 address in the URL
/// (`zmq+tcp://[2001:db8::1]`), and the publisher binds IPv6 (`--bind
/// ::1`), but the sender's socket never turns on ZMQ_IPV6, so libzmq never
/// connects to an IPv6 publisher: every ban is spooled as "unreachable".
#[test]
fn zmq_sender_reaches_a_publisher_on_an_ipv6_address() {
    let context = zmq::Context::new();
    let rep = context.socket(zmq::REP).unwrap();
    rep.set_ipv6(true).unwrap();
    rep.set_linger(0).unwrap();
    rep.bind("tcp://[::1]:*").unwrap();
    let endpoint = rep.get_last_endpoint().unwrap().unwrap();
    let port = endpoint.rsplit(':').next().unwrap().to_owned();
    let server = std::thread::spawn(move || {
        rep.set_rcvtimeo(5000).unwrap();
        if let Ok(frames) = rep.recv_multipart(0) {
            let replies: Vec<Vec<u8>> = (1..=frames.len())
                .map(|seq| format!("OK 0000000000000001 {seq}").into_bytes())
                .collect();
            rep.send_multipart(replies, 0).unwrap();
        }
        // Kept open until the sender is done: closed at once with linger
        // 0, it would drop the reply before libzmq wrote it (1 run in 5).
        rep
    });
    let url = ZmqUrl::parse(&format!("zmq+tcp://[::1]:{port}")).unwrap();
    let mut transport = ZmqTransport::new(&url, &Default::default(), Duration::from_secs(3));
    let sent = transport.append(LINES);
    let _rep = server.join().unwrap();
    sent.unwrap();
}
