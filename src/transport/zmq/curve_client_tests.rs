//! The transport as a CURVE client of a publisher that admits only the
//! keys in its allow-list.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::curve::{Key, encode_key, key_pair};
use super::fake::FakePublisher;
use super::{CurveClient, ZmqFeed, ZmqSettings, ZmqTransport};
use crate::transport::{Entry, Feed, FeedError, Transport, TransportError};

fn client(dir: &Path, name: &str, server: &Key, (_, secret): (Key, Key)) -> CurveClient {
    let file = dir.join(name);
    std::fs::write(&file, encode_key(&secret)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    CurveClient {
        server_key: encode_key(server),
        key_file: file,
    }
}

#[test]
fn zmq_curve_client_with_an_allowed_key_gets_through_and_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (server_public, server_secret) = key_pair().unwrap();
    let allowed = key_pair().unwrap();
    let publisher = FakePublisher::start_curve(9, server_secret, HashSet::from([allowed.0]));
    let with = |curve: Option<CurveClient>| ZmqSettings {
        timeout: Duration::from_millis(500),
        curve,
        ..publisher.settings()
    };
    let url = publisher.url();
    let timeout = Duration::from_millis(500);

    let good = with(Some(client(dir.path(), "good", &server_public, allowed)));
    ZmqTransport::new(&url, &good, Duration::from_secs(5))
        .append(b"<13>one\n")
        .unwrap();
    let mut feed = ZmqFeed::new(&url, &good, Duration::from_secs(30));
    assert_eq!(feed.read(10).unwrap(), [Entry::Record(b"<13>one".to_vec())]);

    let other = key_pair().unwrap();
    // Each refusal names its cause (libzmq's handshake events), not a
    // publisher that is away: (what, settings, the cause named).
    let refused = [
        (
            "a key not in the allow-list",
            with(Some(client(dir.path(), "other", &server_public, other))),
            format!(
                "the publisher refused this node's CURVE key (not in its allow-list; ZAP status \
                 400): add {}",
                encode_key(&other.0)
            ),
        ),
        (
            "another server key",
            with(Some(client(dir.path(), "wrong", &other.0, allowed))),
            "CURVE handshake failed: server key mismatch".to_owned(),
        ),
        (
            "plaintext",
            with(None),
            // Named as a mismatch, or as a connection closed in the
            // handshake, by which side closed first.
            "set [zmq] curve_server_key and curve_key_file".to_owned(),
        ),
    ];
    for (what, settings, cause) in refused {
        let e = ZmqTransport::new(&url, &settings, timeout)
            .append(b"<13>two\n")
            .unwrap_err();
        assert!(
            matches!(e, TransportError::Open { .. }) && e.wrote_nothing(),
            "{what}: {e:?}"
        );
        assert!(e.to_string().contains(&cause), "{what}: {e}");
        let mut feed = ZmqFeed::new(&url, &settings, Duration::from_secs(30));
        let e = feed.read(10).unwrap_err();
        assert!(matches!(e, FeedError::Other(_)), "{what}: {e:?}");
        assert!(e.to_string().contains(&cause), "{what}: {e}");
    }
    // A publisher that is away is still unreachable, CURVE or not.
    let away = ZmqSettings {
        catch_up_port: 9,
        ..good.clone()
    };
    let mut feed = ZmqFeed::new(&url, &away, Duration::from_secs(30));
    let e = feed.read(10).unwrap_err();
    assert!(matches!(e, FeedError::Unreachable(_)), "{e:?}");
    assert_eq!(
        publisher.state().log.len(),
        1,
        "only the allowed client's record"
    );
    assert!(publisher.zap.as_ref().unwrap().refused() > 0);

    // A secret key others can read is refused before anything is sent.
    std::fs::set_permissions(
        &good.curve.as_ref().unwrap().key_file,
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = ZmqTransport::new(&url, &good, timeout)
        .append(b"<13>three\n")
        .unwrap_err();
    assert!(
        matches!(&e, TransportError::Open { .. }) && e.wrote_nothing(),
        "{e:?}"
    );
    assert!(e.to_string().contains("chmod 600"), "{e}");
}
