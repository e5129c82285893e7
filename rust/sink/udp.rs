//! UDP outputs without a pipeline: the hub sends each buffer (7 TS packets, one datagram) on a
//! non-blocking socket from the input's streaming thread. A UDP send never waits for a
//! receiver, so this keeps outputs isolated without a queue and a thread per output: when the
//! socket's send buffer is full the datagram is dropped and counted, like a full queue. One
//! thread wake per datagram fewer than `appsrc ! udpsink` (docs/architecture.md).

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::uri::UdpEndpoint;

pub struct UdpSender {
    socket: UdpSocket,
    dest: SocketAddr,
    /// The first send error since it was last taken (for the stats), and whether there is one.
    error: Mutex<Option<String>>,
    has_error: AtomicBool,
}

/// `setsockopt(2)` with a value of type `T`: the UDP inputs' and outputs' sockets.
pub(crate) fn setsockopt<T>(
    socket: &impl AsRawFd,
    level: i32,
    name: i32,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: `value` points to a live `T` of the size given, as setsockopt requires.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How long a destination name may take to resolve (the route waits for it).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Resolves `host:port`, on a helper thread so a slow resolver holds the route at most
/// `RESOLVE_TIMEOUT` (the lookup goes on alone after that, and the output retries).
fn resolve(host: &str, port: u16) -> std::result::Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("castway-resolve".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
        })
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?;
    match rx.recv_timeout(RESOLVE_TIMEOUT) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(format!("cannot resolve `{host}`: {e}")),
        Err(_) => Err(format!(
            "`{host}` did not resolve within {} s",
            RESOLVE_TIMEOUT.as_secs()
        )),
    }
}

impl UdpSender {
    /// Resolves the destination and opens the socket with the endpoint's TTL, multicast
    /// interface and send buffer size.
    pub fn open(ep: &UdpEndpoint) -> Result<UdpSender> {
        let fail = |what: String| Error::pipeline(format!("UDP output {ep}: {what}"));
        // A name with both kinds of address (`localhost`) is sent to over IPv4, as receivers
        // listening on 0.0.0.0 expect.
        let addrs = resolve(&ep.host, ep.port).map_err(fail)?;
        let dest = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| fail(format!("`{}` has no address", ep.host)))?;
        let local: SocketAddr = if dest.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let socket = UdpSocket::bind(local).map_err(|e| fail(format!("socket: {e}")))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| fail(format!("non-blocking: {e}")))?;
        if let Some(ttl) = ep.ttl {
            let ttl = u32::from(ttl);
            let r = if dest.is_ipv4() {
                socket
                    .set_ttl(ttl)
                    .and_then(|_| socket.set_multicast_ttl_v4(ttl))
            } else {
                setsockopt(
                    &socket,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_HOPS,
                    &(ttl as i32),
                )
                .and_then(|_| {
                    setsockopt(
                        &socket,
                        libc::IPPROTO_IPV6,
                        libc::IPV6_UNICAST_HOPS,
                        &(ttl as i32),
                    )
                })
            };
            r.map_err(|e| fail(format!("ttl={ttl}: {e}")))?;
        }
        if let Some(name) = &ep.iface {
            let c = std::ffi::CString::new(name.as_str()).map_err(|_| fail("iface".into()))?;
            // SAFETY: a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if index == 0 {
                return Err(fail(format!("no network interface `{name}`")));
            }
            let r = if dest.is_ipv4() {
                let mreq = libc::ip_mreqn {
                    imr_multiaddr: libc::in_addr { s_addr: 0 },
                    imr_address: libc::in_addr { s_addr: 0 },
                    imr_ifindex: index as i32,
                };
                setsockopt(&socket, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq)
            } else {
                setsockopt(
                    &socket,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_IF,
                    &(index as i32),
                )
            };
            r.map_err(|e| fail(format!("iface={name}: {e}")))?;
        }
        if ep.buffer_size > 0 {
            setsockopt(
                &socket,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &(ep.buffer_size as i32),
            )
            .map_err(|e| fail(format!("buffer_size={}: {e}", ep.buffer_size)))?;
        }
        Ok(UdpSender {
            socket,
            dest,
            error: Mutex::new(None),
            has_error: AtomicBool::new(false),
        })
    }

    /// Sends one datagram; false if it was dropped (send buffer full, or an error, kept for
    /// `take_error`).
    pub fn send(&self, data: &[u8]) -> bool {
        match self.socket.send_to(data, self.dest) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => {
                if !self.has_error.swap(true, Relaxed) {
                    if let Ok(mut slot) = self.error.lock() {
                        *slot = Some(format!("sending to {}: {e}", self.dest));
                    }
                }
                false
            }
        }
    }

    /// The first send error since the last call, if any.
    pub fn take_error(&self) -> Option<String> {
        if !self.has_error.swap(false, Relaxed) {
            return None;
        }
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}
