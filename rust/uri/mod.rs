//! Endpoint URIs: `srt://`, `udp://`, `file://`, `test://`.
//!
//! Parsing is strict: an unknown query key, a bad number or an impossible combination is an
//! error that names the offending part, so a typo never silently becomes a default. Keys follow
//! srt-live-transmit and ffmpeg spellings; docs/uri.md lists every key and its aliases.

mod file;
mod query;
pub(crate) use query::whole_number;
mod srt;
mod test;
mod udp;

pub use file::FileEndpoint;
pub use srt::{redact_stream_id, SrtDefaults, SrtEndpoint, SrtMode};
pub use test::TestEndpoint;
pub use udp::UdpEndpoint;

use crate::error::{Error, Result};
use std::fmt;

/// Whether an endpoint feeds a route or is fed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Input,
    Output,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Input => "input",
            Role::Output => "output",
        })
    }
}

/// A parsed endpoint URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Srt(SrtEndpoint),
    Udp(UdpEndpoint),
    File(FileEndpoint),
    Test(TestEndpoint),
}

impl Endpoint {
    /// Parses `uri` and checks that it can serve as `role`.
    pub fn parse(uri: &str, role: Role) -> Result<Endpoint> {
        let shown = redact(uri);
        let (scheme, rest) = uri.split_once("://").ok_or_else(|| {
            Error::uri(
                &shown,
                "missing scheme (expected srt://, udp://, file:// or test://)",
            )
        })?;
        let (authority_path, query) = match rest.split_once('?') {
            Some((a, q)) => (a, q),
            None => (rest, ""),
        };
        let query = query::Query::parse(query).map_err(|r| Error::uri(&shown, r))?;
        let endpoint = match scheme.to_ascii_lowercase().as_str() {
            "srt" => SrtEndpoint::parse(authority_path, query).map(Endpoint::Srt),
            "srt-shared" => SrtEndpoint::parse_shared(authority_path, query).map(Endpoint::Srt),
            "udp" => UdpEndpoint::parse(authority_path, query).map(Endpoint::Udp),
            "file" => FileEndpoint::parse(authority_path, query).map(Endpoint::File),
            "test" => TestEndpoint::parse(authority_path, query).map(Endpoint::Test),
            other => Err(format!(
                "unknown scheme `{other}` (expected srt, udp, file or test)"
            )),
        }
        .map_err(|r| Error::uri(&shown, r))?;
        endpoint
            .check_role(role)
            .map_err(|r| Error::uri(&shown, r))?;
        Ok(endpoint)
    }

    /// Parses an input URI, which may also say `standby=warm` (the default: connected and read
    /// while another input is active) or `standby=cold` (connected only when needed). Returns
    /// the endpoint and whether it is cold.
    pub fn parse_input(uri: &str) -> Result<(Endpoint, bool)> {
        let (base, query) = match uri.split_once('?') {
            Some((b, q)) => (b, q),
            None => return Ok((Endpoint::parse(uri, Role::Input)?, false)),
        };
        let mut cold = None;
        let mut rest = Vec::new();
        for part in query.split('&') {
            match part.split_once('=') {
                Some((k, v)) if k.eq_ignore_ascii_case("standby") => {
                    let shown = redact(uri);
                    if cold.is_some() {
                        return Err(Error::uri(&shown, "key `standby` is given twice"));
                    }
                    cold = Some(match v.to_ascii_lowercase().as_str() {
                        "warm" => false,
                        "cold" => true,
                        _ => {
                            return Err(Error::uri(
                                &shown,
                                format!("`standby={v}` is not `warm` or `cold`"),
                            ))
                        }
                    });
                }
                _ => rest.push(part),
            }
        }
        let uri = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        Ok((Endpoint::parse(&uri, Role::Input)?, cold.unwrap_or(false)))
    }

    /// Parses `uri` as `role`: an input's with its `standby` (see `parse_input`), an output's
    /// as `parse` does (never cold).
    pub fn parse_as(uri: &str, role: Role) -> Result<(Endpoint, bool)> {
        match role {
            Role::Input => Endpoint::parse_input(uri),
            Role::Output => Ok((Endpoint::parse(uri, role)?, false)),
        }
    }

    fn check_role(&self, role: Role) -> std::result::Result<(), String> {
        match (self, role) {
            (Endpoint::Test(_), Role::Output) => {
                Err("test:// generates a signal and can only be an input".into())
            }
            (Endpoint::File(f), Role::Output) if f.looped => {
                Err("`loop` only applies to file inputs".into())
            }
            (Endpoint::Udp(u), Role::Input) if u.ttl.is_some() => {
                Err("`ttl` only applies to UDP outputs".into())
            }
            (Endpoint::Udp(u), Role::Output) if u.host.is_empty() || u.is_wildcard() => {
                Err("a UDP output needs a destination host".into())
            }
            (Endpoint::Srt(s), _)
                if !matches!(s.mode, SrtMode::Listener | SrtMode::Shared) && s.host.is_empty() =>
            {
                Err(format!("mode={} needs a remote host", s.mode))
            }
            _ => Ok(()),
        }
    }

    /// The scheme, as used in stats (`srt`, `udp`, `file`, `test`).
    pub fn kind(&self) -> &'static str {
        match self {
            Endpoint::Srt(_) => "srt",
            Endpoint::Udp(_) => "udp",
            Endpoint::File(_) => "file",
            Endpoint::Test(_) => "test",
        }
    }

    /// The local UDP socket address this endpoint binds exclusively, if any: SRT listeners and
    /// rendezvous peers, and unicast UDP inputs. Multicast inputs share their port on purpose.
    pub fn exclusive_bind(&self, role: Role) -> Option<(String, u16)> {
        match self {
            Endpoint::Srt(s) => match s.mode {
                SrtMode::Listener => Some((s.bind_host(), s.port)),
                SrtMode::Rendezvous => Some((s.bind_host(), s.local_port.unwrap_or(s.port))),
                SrtMode::Caller | SrtMode::Shared => None,
            },
            Endpoint::Udp(u) if role == Role::Input && !u.is_multicast() => {
                Some((u.bind_host(), u.port))
            }
            _ => None,
        }
    }

    /// Whether this is an `srt-shared://` endpoint (a place on the gateway's shared SRT port).
    pub fn is_shared(&self) -> bool {
        matches!(self, Endpoint::Srt(s) if s.mode == SrtMode::Shared)
    }

    /// The file this endpoint writes, if any (file outputs): a second writer of one file would
    /// interleave two streams in it, so each is claimed like a port.
    pub fn written_file(&self, role: Role) -> Option<&std::path::Path> {
        match self {
            Endpoint::File(f) if role == Role::Output => Some(&f.path),
            _ => None,
        }
    }
}

impl fmt::Display for Endpoint {
    /// The canonical URI with the passphrase hidden, safe for logs and stats.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Srt(e) => e.fmt(f),
            Endpoint::Udp(e) => e.fmt(f),
            Endpoint::File(e) => e.fmt(f),
            Endpoint::Test(e) => e.fmt(f),
        }
    }
}

/// `uri` with any passphrase and user list replaced by `***`, and a stream ID shown as
/// `srt::redact_stream_id` shows it.
pub fn redact(uri: &str) -> String {
    let Some((head, query)) = uri.split_once('?') else {
        return uri.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            // Compared as the parser reads keys: percent-decoded, any case (`pass%70hrase`).
            Some((k, _))
                if query::percent_decode(k).is_ok_and(|d| {
                    d.eq_ignore_ascii_case("passphrase") || d.eq_ignore_ascii_case("users")
                }) =>
            {
                format!("{k}=***")
            }
            Some((k, v))
                if query::percent_decode(k).is_ok_and(|d| d.eq_ignore_ascii_case("streamid")) =>
            {
                let id = query::percent_decode(v).unwrap_or_else(|_| v.to_string());
                let shown = srt::redact_stream_id(&id);
                if shown == id {
                    kv.to_string()
                } else {
                    // Shown decoded: a redacted URI is for reading, not for parsing again.
                    format!("{k}={shown}")
                }
            }
            _ => kv.to_string(),
        })
        .collect();
    format!("{head}?{}", parts.join("&"))
}

/// Splits `host:port`, `[v6]:port` or `:port`. The port is mandatory.
pub(crate) fn split_host_port(authority: &str) -> std::result::Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed `[` in host `{authority}`"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("missing `:PORT` after `[{h}]`"))?;
        h.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("`{h}` is not an IPv6 address"))?;
        (h.to_string(), port)
    } else {
        let (h, p) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("missing `:PORT` in `{authority}`"))?;
        if h.contains(':') {
            return Err(format!(
                "IPv6 host `{h}` must be written in brackets: `[{h}]`"
            ));
        }
        if !h.is_empty() && !valid_hostname(h) {
            return Err(format!("host `{h}` is not a valid host name or address"));
        }
        (h.to_string(), p)
    };
    // Digits only, no sign and no leading zero: `+5000` and `05000` are typos, not ports.
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && digits && !port.starts_with('0') => p,
        _ => return Err(format!("port `{port}` is not a number in 1..65535")),
    };
    Ok((host, port))
}

fn valid_hostname(h: &str) -> bool {
    // All-numeric names are IPv4 literals, and must be valid ones.
    if h.split('.')
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
    {
        return h.parse::<std::net::Ipv4Addr>().is_ok();
    }
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `host` (an IP literal) is a multicast group.
pub(crate) fn is_multicast(host: &str) -> bool {
    host.parse::<std::net::IpAddr>()
        .map(|a| a.is_multicast())
        .unwrap_or(false)
}

/// `HOST:PORT` as a URI or a log line writes it: an IPv6 host in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What parsing `uri` as `role` refuses, as the error says it (for the parsers' tests).
#[cfg(test)]
pub(crate) fn parse_error(uri: &str, role: Role) -> String {
    Endpoint::parse(uri, role).unwrap_err().to_string()
}

/// Checks that parsing refuses each `(uri, role, what the error names)` (for the parsers' tests).
#[cfg(test)]
pub(crate) fn assert_refused(cases: &[(&str, Role, &str)]) {
    for &(uri, role, needle) in cases {
        let e = parse_error(uri, role);
        assert!(e.contains(needle), "{uri}: {e}");
    }
}

/// `uri` parsed as an input (for tests).
#[cfg(test)]
pub(crate) fn input(uri: &str) -> Endpoint {
    Endpoint::parse(uri, Role::Input).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::parse_error as err;

    #[test]
    fn standby_is_an_input_key() {
        let (e, cold) = Endpoint::parse_input("srt://:9000?standby=cold&latency=80").unwrap();
        assert!(cold);
        assert!(matches!(e, Endpoint::Srt(s) if s.latency_ms == 80));
        assert!(!Endpoint::parse_input("udp://:5000?standby=warm").unwrap().1);
        assert!(!Endpoint::parse_input("udp://:5000").unwrap().1);
        let bad = Endpoint::parse_input("udp://:5000?standby=tepid")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("`standby=tepid`"), "{bad}");
        assert!(Endpoint::parse("udp://1.2.3.4:5000?standby=cold", Role::Output).is_err());
    }

    #[test]
    fn unknown_scheme_is_named() {
        assert!(err("rtp://1.2.3.4:5", Role::Input).contains("unknown scheme `rtp`"));
        assert!(err("nonsense", Role::Input).contains("missing scheme"));
    }

    #[test]
    fn test_scheme_cannot_be_an_output() {
        assert!(err("test://", Role::Output).contains("can only be an input"));
    }

    #[test]
    fn passphrase_is_redacted_in_errors_and_display() {
        let e = err(
            "srt://:9000?mode=listener&passphrase=supersecret1&bogus=1",
            Role::Input,
        );
        assert!(!e.contains("supersecret1"), "{e}");
        assert!(e.contains("passphrase=***"), "{e}");
        let ep = input("srt://:9000?passphrase=supersecret1");
        assert!(!ep.to_string().contains("supersecret1"));
    }

    #[test]
    fn stream_id_passwords_are_redacted_in_errors_and_display() {
        let e = err(
            "srt://127.0.0.1:9000?streamid=publish:news:cam:campassword1&bogus=1",
            Role::Input,
        );
        assert!(!e.contains("campassword1"), "{e}");
        assert!(e.contains("streamid=publish:news:cam:***"), "{e}");
        let e = err(
            "srt://127.0.0.1:9000?stream%69d=read%3Anews%3Aviewer%3Aviewerpassword&bogus=1",
            Role::Input,
        );
        assert!(!e.contains("viewerpassword"), "{e}");
        let ep = input("srt://127.0.0.1:9000?streamid=publish:x:u:streampw123");
        assert!(
            ep.to_string().ends_with("&streamid=publish:x:u:***"),
            "{ep}"
        );
        let ep = input("srt://127.0.0.1:9000?streamid=%23!::r=news,s=token123,u=cam");
        assert!(
            ep.to_string().ends_with("&streamid=#!::r=news,s=***,u=cam"),
            "{ep}"
        );
        assert_eq!(redact_stream_id("publish:news"), "publish:news");
        assert_eq!(
            redact_stream_id("read:news:viewer:pw:with:colons"),
            "read:news:viewer:***"
        );
        assert_eq!(redact_stream_id("news"), "news");
    }

    #[test]
    fn ipv6_hosts_need_brackets() {
        assert!(err("udp://::1:5000", Role::Output).contains("brackets"));
        match Endpoint::parse("udp://[::1]:5000", Role::Output).unwrap() {
            Endpoint::Udp(u) => assert_eq!(u.host, "::1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numeric_hosts_must_be_ipv4() {
        assert!(err("udp://999.1.1.1:5000", Role::Output).contains("not a valid host"));
        assert!(err("udp://1.2.3:5000", Role::Output).contains("not a valid host"));
        Endpoint::parse("udp://encoder-1.studio:5000", Role::Output).unwrap();
    }

    #[test]
    fn percent_encoded_passphrases_are_redacted_in_errors() {
        for uri in [
            "srt://:9000?pass%70hrase=SECRETAAAAAAAA1&pass%70hrase=SECRETBBBBBBBB2",
            "srt://:9000?PassPhrase=SECRETAAAAAAAA1&bogus=1",
            "srt://:9000?passphrase=SECRET%ZZBBBBBB2",
        ] {
            let e = err(uri, Role::Input);
            assert!(!e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn bad_ports_are_named() {
        assert!(err("udp://127.0.0.1:70000", Role::Output).contains("port `70000`"));
        assert!(err("udp://127.0.0.1:0", Role::Output).contains("port `0`"));
        assert!(err("udp://127.0.0.1:+5000", Role::Output).contains("port `+5000`"));
        assert!(err("udp://127.0.0.1:05000", Role::Output).contains("port `05000`"));
        assert!(err("srt://:00", Role::Input).contains("port `00`"));
        assert!(err("udp://127.0.0.1: 5000", Role::Output).contains("port ` 5000`"));
        assert!(err("udp://127.0.0.1", Role::Output).contains("missing `:PORT`"));
    }

    #[test]
    fn exclusive_binds() {
        assert_eq!(
            input("srt://:9000").exclusive_bind(Role::Input),
            Some(("0.0.0.0".to_string(), 9000))
        );
        assert_eq!(
            input("srt://10.0.0.1:9000").exclusive_bind(Role::Input),
            None
        );
        assert_eq!(
            input("udp://@239.1.1.1:5000").exclusive_bind(Role::Input),
            None
        );
        assert_eq!(
            input("udp://:5000").exclusive_bind(Role::Input),
            Some(("0.0.0.0".to_string(), 5000))
        );
    }
}
