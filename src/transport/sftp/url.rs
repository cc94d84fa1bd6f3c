//! `sftp://user@host[:port]/path/newbans.log`: where the log is, over SSH.

use std::fmt;
use std::path::PathBuf;

/// A parsed `sftp://` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpUrl {
    pub user: String,
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The log's path as the SSH account sees it (inside its chroot, if any).
    pub path: PathBuf,
}

impl SftpUrl {
    /// Parses `text`, which starts with `sftp://`.
    pub fn parse(text: &str) -> Result<SftpUrl, String> {
        let rest = text
            .strip_prefix("sftp://")
            .ok_or("an SFTP location starts with sftp://")?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or("sftp:// needs a path: sftp://user@host/path/newbans.log")?;
        let (user, host_port) = authority
            .split_once('@')
            .ok_or("sftp:// needs a user: sftp://user@host/...")?;
        if user.is_empty()
            || !user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(format!("bad user {user:?} in the sftp:// location"));
        }
        let (host, port) = split_host_port(host_port)?;
        let path = format!("/{path}");
        if path.ends_with('/')
            || path.contains("/../")
            || path.ends_with("/..")
            || path.contains('\0')
        {
            return Err(format!(
                "bad path {path:?} in the sftp:// location: name the log file"
            ));
        }
        Ok(SftpUrl {
            user: user.to_owned(),
            host,
            port,
            path: PathBuf::from(path),
        })
    }

    /// `host:port` for connecting (IPv6 in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(text: &str) -> Result<(String, u16), String> {
    let bad = || format!("bad host {text:?} in the sftp:// location");
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        (host, after.strip_prefix(':'))
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if !valid_host {
        return Err(bad());
    }
    let port = match port {
        None => 22,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
    };
    Ok((host.to_owned(), port))
}

impl fmt::Display for SftpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let port = if self.port == 22 {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        write!(
            f,
            "sftp://{}@{host}{port}{}",
            self.user,
            self.path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        for text in [
            "sftp://banshare@files/share/newbans.log",
            "sftp://b@198.18.0.1:2222/newbans.log",
            "sftp://b@[2001:db8::1]:22/x.log",
        ] {
            let url = SftpUrl::parse(text).unwrap();
            assert_eq!(SftpUrl::parse(&url.to_string()).unwrap(), url, "{text}");
        }
        let url = SftpUrl::parse("sftp://b@[2001:db8::1]/x.log").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.address()),
            ("2001:db8::1", 22, "[2001:db8::1]:22".to_owned())
        );
    }

    #[test]
    fn rejects_what_is_not_a_log_location() {
        for text in [
            "sftp://files/newbans.log",
            "sftp://b@files",
            "sftp://b@files/",
            "sftp://b@files:0/x",
            "sftp://b@files:99999/x",
            "sftp://b@fi les/x",
            "sftp://b;rm@files/x",
            "sftp://b@files/../etc/passwd",
            "sftp://@files/x",
        ] {
            assert!(SftpUrl::parse(text).is_err(), "{text}");
        }
    }
}
