//! `host1:port,host2:port/chroot`.

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectString {
    /// `host:port` strings, in the order given.
    pub hosts: Vec<String>,
    /// The chroot without a trailing slash, or `None` for `/` or none.
    pub chroot: Option<String>,
}

/// Parses a connect string. A host without a port gets 2181; IPv6 literals are written `[::1]:2181`.
pub fn parse(s: &str) -> Result<ConnectString> {
    let bad = |why: &str| Error::BadArguments(format!("connect string {s:?}: {why}"));
    let (hosts_part, chroot) = match s.find('/') {
        Some(i) => (&s[..i], Some(&s[i..])),
        None => (s, None),
    };
    let chroot = match chroot {
        None | Some("/") => None,
        Some(c) => {
            crate::validate_path(c, false).map_err(|_| bad("invalid chroot"))?;
            Some(c.to_string())
        }
    };
    let mut hosts = Vec::new();
    for h in hosts_part.split(',') {
        let h = h.trim();
        if h.is_empty() {
            return Err(bad("empty host"));
        }
        let (host, port) = if let Some(rest) = h.strip_prefix('[') {
            let Some(end) = rest.find(']') else {
                return Err(bad("unterminated IPv6 literal"));
            };
            let host = &h[..end + 2];
            match &rest[end + 1..] {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(bad("junk after IPv6 literal")),
                },
            }
        } else {
            match h.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (h, None),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("invalid host"));
        }
        let port: u16 = match port {
            None => 2181,
            Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
        };
        if port == 0 {
            return Err(bad("port 0"));
        }
        hosts.push(format!("{host}:{port}"));
    }
    Ok(ConnectString { hosts, chroot })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_chroot() {
        let c = parse("a:1,b:2/app/x").unwrap();
        assert_eq!(c.hosts, vec!["a:1", "b:2"]);
        assert_eq!(c.chroot.as_deref(), Some("/app/x"));
        let c = parse("a,[::1]:5,[::2]/").unwrap();
        assert_eq!(c.hosts, vec!["a:2181", "[::1]:5", "[::2]:2181"]);
        assert_eq!(c.chroot, None);
    }

    #[test]
    fn rejects_bad_strings() {
        for s in [
            "",
            "a:1,",
            "a:x",
            "a:0",
            "a:1/app/",
            "a:1/app//x",
            "[::1:5",
            "a:99999",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
    }
}
