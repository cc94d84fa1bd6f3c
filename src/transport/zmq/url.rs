//! `zmq+tcp://host[:port]`: a publisher, by the address of its submission
//! socket. Its catch-up and feed sockets are on the same host, at the
//! ports of `[zmq]` ([`ZmqSettings`](super::ZmqSettings)).

use std::fmt;

use super::wire::SUBMIT_PORT;
use crate::transport::host_port::split_host_port;

/// The scheme of a ZeroMQ log location.
pub const SCHEME: &str = "zmq+tcp://";

/// A parsed `zmq+tcp://` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZmqUrl {
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    /// The publisher's submission port.
    pub port: u16,
    /// The location as given, which is how it is shown and saved.
    text: String,
}

impl ZmqUrl {
    /// Parses `text`, which starts with `zmq+tcp://`. Takes nothing but the
    /// host and port: no user, path, query or fragment.
    pub fn parse(text: &str) -> Result<ZmqUrl, String> {
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or("a ZeroMQ location starts with zmq+tcp://")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err("zmq+tcp:// needs a host: zmq+tcp://host[:port]".into());
        }
        if rest.contains(['/', '@', '?', '#']) {
            return Err(format!(
                "bad ZeroMQ location {text:?}: only zmq+tcp://host[:port], no user, path or query"
            ));
        }
        let (host, port) = split_host_port(rest, SUBMIT_PORT)
            .ok_or_else(|| format!("bad host or port in the ZeroMQ location {text:?}"))?;
        Ok(ZmqUrl {
            host,
            port,
            text: text.to_owned(),
        })
    }

    /// The libzmq endpoint of `port` on this host: `tcp://host:port`.
    pub fn endpoint(&self, port: u16) -> String {
        if self.host.contains(':') {
            format!("tcp://[{}]:{port}", self.host)
        } else {
            format!("tcp://{}:{port}", self.host)
        }
    }
}

impl fmt::Display for ZmqUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zmq_urls_parse_strictly() {
        let url = ZmqUrl::parse("zmq+tcp://pub.example:6000").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("pub.example", 6000));
        assert_eq!(url.to_string(), "zmq+tcp://pub.example:6000");
        assert_eq!(url.endpoint(5681), "tcp://pub.example:5681");
        let url = ZmqUrl::parse("zmq+tcp://198.18.0.1").unwrap();
        assert_eq!(url.port, SUBMIT_PORT);
        let url = ZmqUrl::parse("zmq+tcp://[2001:db8::1]:7000").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("2001:db8::1", 7000));
        assert_eq!(url.endpoint(1), "tcp://[2001:db8::1]:1");
        for bad in [
            "zmq+tcp://",
            "zmq+tcp://host:",
            "zmq+tcp://host:0",
            "zmq+tcp://host:65536",
            "zmq+tcp://host:+1",
            "zmq+tcp://host/path",
            "zmq+tcp://user@host",
            "zmq+tcp://host?x=1",
            "zmq+tcp://[nothex]:1",
            "zmq+tcp://[::1]x",
            "zmq+tcp://-host",
            "zmq+tcp://ho st",
            "zmq://host",
        ] {
            assert!(ZmqUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
