//! `udp://HOST:PORT?iface=…&ttl=…&buffer_size=…` (ffmpeg's `udp://@GROUP:PORT` is accepted too).

use super::query::Query;
use super::{host_port, is_multicast, split_host_port};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpEndpoint {
    /// Input: local address or multicast group to receive on ("" = any).
    /// Output: destination host or multicast group.
    pub host: String,
    pub port: u16,
    /// Network interface for multicast (join on input, send on output).
    pub iface: Option<String>,
    /// Multicast TTL for outputs.
    pub ttl: Option<u8>,
    /// Kernel socket buffer size in bytes (0 = system default).
    pub buffer_size: u32,
}

impl UdpEndpoint {
    pub(super) fn parse(authority: &str, mut q: Query) -> Result<UdpEndpoint, String> {
        let authority = authority.strip_prefix('@').unwrap_or(authority);
        let (host, port) = split_host_port(authority)?;
        let iface = q.take(&["iface", "multicast_iface"])?;
        if let Some(i) = &iface {
            if i.is_empty() || i.len() > 15 || i.contains(['/', ' ']) || i == "." || i == ".." {
                return Err(format!("`iface={i}` is not a network interface name"));
            }
        }
        let ttl = q.take_parsed::<u8>(&["ttl"], "a TTL in 0..255")?;
        let buffer_size = q
            .take_parsed::<u32>(&["buffer_size", "rcvbuf", "sndbuf"], "a size in bytes")?
            .unwrap_or(0);
        if buffer_size > i32::MAX as u32 {
            return Err(format!("`buffer_size={buffer_size}` is above {}", i32::MAX));
        }
        q.finish("udp")?;
        Ok(UdpEndpoint {
            host,
            port,
            iface,
            ttl,
            buffer_size,
        })
    }

    /// Whether the `iface` this endpoint names exists on this host (true when none is named).
    /// Parsing cannot know; a route checks it when it is created.
    pub fn iface_exists(&self) -> bool {
        self.iface.as_deref().is_none_or(|name| {
            std::ffi::CString::new(name)
                .is_ok_and(|c| unsafe { libc::if_nametoindex(c.as_ptr()) } != 0)
        })
    }

    pub fn is_multicast(&self) -> bool {
        is_multicast(&self.host)
    }

    pub fn is_wildcard(&self) -> bool {
        matches!(self.host.as_str(), "" | "0.0.0.0" | "::")
    }

    /// The address an input binds: the given host, or any.
    pub fn bind_host(&self) -> String {
        if self.host.is_empty() {
            "0.0.0.0".into()
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for UdpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp://{}", host_port(&self.host, self.port))?;
        let mut sep = '?';
        let mut key = |f: &mut fmt::Formatter<'_>, k: &str, v: &dyn fmt::Display| {
            let r = write!(f, "{sep}{k}={v}");
            sep = '&';
            r
        };
        if let Some(i) = &self.iface {
            key(f, "iface", i)?;
        }
        if let Some(t) = self.ttl {
            key(f, "ttl", &t)?;
        }
        if self.buffer_size > 0 {
            key(f, "buffer_size", &self.buffer_size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::uri::{assert_refused, Endpoint, Role, UdpEndpoint};

    fn udp(uri: &str, role: Role) -> UdpEndpoint {
        match Endpoint::parse(uri, role).unwrap() {
            Endpoint::Udp(u) => u,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multicast_input_and_output() {
        let i = udp("udp://@239.1.2.3:5000?iface=lo", Role::Input);
        assert!(i.is_multicast());
        assert_eq!(i.iface.as_deref(), Some("lo"));
        let o = udp("udp://239.1.2.3:5000?ttl=4&iface=lo", Role::Output);
        assert_eq!(o.ttl, Some(4));
        assert_eq!(o.to_string(), "udp://239.1.2.3:5000?iface=lo&ttl=4");
    }

    #[test]
    fn output_needs_a_destination_and_input_takes_no_ttl() {
        assert_refused(&[
            ("udp://:5000", Role::Output, "destination host"),
            ("udp://:5000?ttl=3", Role::Input, "`ttl` only applies"),
            ("udp://1.2.3.4:5000?ttl=300", Role::Output, "`ttl=300`"),
        ]);
    }
}
