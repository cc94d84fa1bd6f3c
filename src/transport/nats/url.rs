//! `nats://host[:port][,host[:port]...]/STREAM`: a JetStream stream, by the
//! servers to reach it through and its name. `nats+tls://` requires TLS
//! from every server (plain `nats://` still upgrades when a server asks
//! for it). Credentials never go in the URL: `[nats]` names the files.

use std::fmt;

use crate::transport::host_port::split_host_port;

/// The schemes of a NATS log location.
pub const SCHEME: &str = "nats://";
pub const TLS_SCHEME: &str = "nats+tls://";

/// The NATS client port, when the URL names none.
pub const DEFAULT_PORT: u16 = 4222;

/// The longest stream name taken (JetStream's own limit is higher; a
/// name is also a file name on the servers).
const STREAM_NAME_MAX: usize = 64;

/// A parsed `nats://` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUrl {
    /// Host (a DNS name or an IP address, IPv6 without brackets) and port
    /// of each server given, in order.
    pub servers: Vec<(String, u16)>,
    /// The stream's name.
    pub stream: String,
    /// `nats+tls://`: refuse a server that does not speak TLS.
    pub tls: bool,
    /// The location as given, which is how it is shown and saved.
    text: String,
}

impl NatsUrl {
    /// Parses `text`, which starts with `nats://` or `nats+tls://`. Takes
    /// servers and a stream name only: no user, password, query or
    /// fragment.
    pub fn parse(text: &str) -> Result<NatsUrl, String> {
        let (rest, tls) = match (text.strip_prefix(SCHEME), text.strip_prefix(TLS_SCHEME)) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err("a NATS location starts with nats:// or nats+tls://".into()),
        };
        let usage = "nats://host[:port][,host[:port]...]/STREAM";
        if rest.contains(['@', '?', '#']) {
            return Err(format!(
                "bad NATS location {text:?}: no user, password or query ({usage}; credentials \
                 go in [nats])"
            ));
        }
        let (hosts, stream) = rest
            .split_once('/')
            .ok_or_else(|| format!("the NATS location {text:?} names no stream: {usage}"))?;
        if !is_stream_name(stream) {
            return Err(format!(
                "bad stream name {stream:?} in {text:?}: 1 to {STREAM_NAME_MAX} letters, digits, \
                 '-' or '_'"
            ));
        }
        let servers = hosts
            .split(',')
            .map(|h| {
                split_host_port(h, DEFAULT_PORT)
                    .ok_or_else(|| format!("bad server {h:?} in the NATS location {text:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NatsUrl {
            servers,
            stream: stream.to_owned(),
            tls,
            text: text.to_owned(),
        })
    }

    /// The servers as the client takes them: `nats://host:port` (or
    /// `tls://`).
    pub fn server_addresses(&self) -> Vec<String> {
        let scheme = if self.tls { "tls" } else { "nats" };
        self.servers
            .iter()
            .map(|(host, port)| match host.contains(':') {
                true => format!("{scheme}://[{host}]:{port}"),
                false => format!("{scheme}://{host}:{port}"),
            })
            .collect()
    }

    /// The subjects of the stream: one per origin node under
    /// [`NatsUrl::subject_prefix`].
    pub fn stream_subjects(&self) -> String {
        format!("{}.>", self.subject_prefix())
    }

    /// `banshare.<stream>`: each stream has its own subjects, so that
    /// several streams (a test fleet beside the real one) can share
    /// servers.
    pub fn subject_prefix(&self) -> String {
        format!("banshare.{}", self.stream)
    }

    /// The subject a record from `node` is published on. A node name is
    /// one subject token: anything but letters, digits, `-` and `_`
    /// becomes `_` (node ids are checked when records are parsed; this
    /// only keeps a token a token). Records without a node go to `_`.
    pub fn subject_for(&self, node: Option<&str>) -> String {
        let token: String = match node.filter(|n| !n.is_empty()) {
            Some(node) => node
                .chars()
                .map(
                    |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        true => c,
                        false => '_',
                    },
                )
                .collect(),
            None => "_".into(),
        };
        format!("{}.{token}", self.subject_prefix())
    }
}

/// Whether `name` is taken as a stream name.
pub fn is_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= STREAM_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls_parse_strictly() {
        let url = NatsUrl::parse("nats://n1.example,n2.example:4333,[2001:db8::1]/bans").unwrap();
        assert_eq!(
            url.servers,
            [
                ("n1.example".to_owned(), DEFAULT_PORT),
                ("n2.example".to_owned(), 4333),
                ("2001:db8::1".to_owned(), DEFAULT_PORT)
            ]
        );
        assert_eq!(url.stream, "bans");
        assert!(!url.tls);
        assert_eq!(
            url.server_addresses(),
            [
                "nats://n1.example:4222",
                "nats://n2.example:4333",
                "nats://[2001:db8::1]:4222"
            ]
        );
        assert_eq!(
            url.to_string(),
            "nats://n1.example,n2.example:4333,[2001:db8::1]/bans"
        );
        assert_eq!(url.stream_subjects(), "banshare.bans.>");
        assert_eq!(url.subject_for(Some("web-1")), "banshare.bans.web-1");
        assert_eq!(url.subject_for(Some("a.b*>")), "banshare.bans.a_b__");
        assert_eq!(url.subject_for(None), "banshare.bans._");
        let tls = NatsUrl::parse("nats+tls://198.18.0.1:4222/BANS_1").unwrap();
        assert!(tls.tls);
        assert_eq!(tls.server_addresses(), ["tls://198.18.0.1:4222"]);
        for bad in [
            "nats://",
            "nats://host",
            "nats://host/",
            "nats:///bans",
            "nats://host:0/bans",
            "nats://host:/bans",
            "nats://host:70000/bans",
            "nats://user:pw@host/bans",
            "nats://host/bans?x=1",
            "nats://host/ba.ns",
            "nats://host/ba ns",
            "nats://host/a/b",
            "nats://host,/bans",
            "nats://-host/bans",
            "nats://[nothex]/bans",
            "tls://host/bans",
        ] {
            assert!(NatsUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
