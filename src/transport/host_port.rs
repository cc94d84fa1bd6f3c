//! `host[:port]` in a location URL, as the NATS and ZeroMQ transports take
//! it: one strict parser, so that both refuse the same malformed hosts.

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the host a DNS name or an
/// address literal, the port `default_port` when none is given. None for
/// anything else (an empty or port-0 port, a character no host name has).
pub(crate) fn split_host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let name_like = host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if host.is_empty() || !name_like {
        return None;
    }
    let port = match port {
        None => default_port,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().ok().filter(|p| *p > 0)?
        }
        Some(_) => return None,
    };
    Some((host.to_owned(), port))
}
