//! UDP inputs: read on the I/O threads (`io::epoll`) with batched `recvmmsg`, without a
//! pipeline. docs/architecture.md says why not `udpsrc`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::hub::{Feed, Hub};
use crate::sink::udp::setsockopt;
use crate::uri::UdpEndpoint;

/// A UDP input on the I/O threads (`io::epoll`): its socket, read with `recvmmsg` in batches,
/// each datagram handed to the hub as one buffer. No pipeline and no thread of its own.
/// Dropping it stops the reading (a batch being read finishes first) and closes the socket.
pub struct UdpReceiver {
    // Field order: the registration goes before the socket closes.
    _registration: crate::io::epoll::Registration,
    _socket: OwnedFd,
    error: Arc<Mutex<Option<String>>>,
    has_error: Arc<AtomicBool>,
}

/// Batches one readable wake reads at most before the loop serves its other sockets.
const BATCHES_PER_WAKE: usize = 8;
/// An input's receive buffer when its URI sets none: 1 MiB (about 1 s at 8 Mb/s), so a loop
/// busy with another socket's batch does not cost this one datagrams. Past
/// `net.core.rmem_max` only where allowed (root); elsewhere the system's limit caps it.
const DEFAULT_RCVBUF: i32 = 1 << 20;

impl UdpReceiver {
    /// Binds the endpoint's address (a multicast group: joined, on `iface` if given, shared
    /// with other listeners), sets its receive buffer and starts reading into `hub`. Errors
    /// name the endpoint and what failed.
    pub fn open(ep: &UdpEndpoint, hub: Arc<Hub>, feed: Arc<Feed>) -> Result<UdpReceiver> {
        let fail = |what: String| Error::pipeline(format!("UDP input {ep}: {what}"));
        let host = ep.bind_host();
        let addr = (host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| fail(format!("cannot resolve `{host}`: {e}")))?
            .min_by_key(|a| a.is_ipv6())
            .ok_or_else(|| fail(format!("`{host}` has no address")))?;
        let socket = bound_socket(ep, addr).map_err(fail)?;
        let error = Arc::new(Mutex::new(None));
        let has_error = Arc::new(AtomicBool::new(false));
        let (err, has_err) = (error.clone(), has_error.clone());
        let where_ = ep.to_string();
        let registration = crate::io::epoll::register(socket.as_raw_fd(), move |fd, scratch| {
            for _ in 0..BATCHES_PER_WAKE {
                let got = scratch.recv(fd, |datagram, cut| {
                    if cut {
                        feed.counters.drop_bytes(crate::io::epoll::MAX_DATAGRAM);
                        return;
                    }
                    hub.ingest(&feed, gst::Buffer::from_mut_slice(datagram.to_vec()));
                });
                match got {
                    Ok(n) if n < crate::io::epoll::BATCH => return,
                    Ok(_) => {}
                    Err(e) => {
                        if !has_err.swap(true, Relaxed) {
                            *err.lock().unwrap_or_else(PoisonError::into_inner) =
                                Some(format!("receiving on {where_}: {e}"));
                        }
                        return;
                    }
                }
            }
        })
        .map_err(|e| fail(format!("I/O thread: {e}")))?;
        Ok(UdpReceiver {
            _registration: registration,
            _socket: socket,
            error,
            has_error,
        })
    }

    /// The first receive error since the last call, if any.
    pub fn take_error(&self) -> Option<String> {
        if !self.has_error.swap(false, Relaxed) {
            return None;
        }
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A non-blocking socket bound to `addr` as the endpoint wants it (see `UdpReceiver::open`).
fn bound_socket(ep: &UdpEndpoint, addr: SocketAddr) -> std::result::Result<OwnedFd, String> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain system call; the descriptor is owned from here on.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let os_error = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // A unicast port is ours alone (so a clash is an error, not two half-fed inputs); a
    // multicast group is shared with whoever else listens to it.
    if ep.is_multicast() {
        setsockopt(&socket, libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32)
            .map_err(|_| os_error("SO_REUSEADDR"))?;
    }
    // Past net.core.rmem_max where allowed (root), as udpsrc did.
    let size = match ep.buffer_size {
        0 => DEFAULT_RCVBUF,
        n => n as i32,
    };
    if setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size).is_err() {
        let r = setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, &size);
        if ep.buffer_size > 0 {
            r.map_err(|_| os_error(&format!("buffer_size={}", ep.buffer_size)))?;
        }
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(os_error(&format!("cannot bind {addr}")));
    }
    if ep.is_multicast() {
        join(&socket, ep, addr)?;
    }
    Ok(socket)
}

/// Joins the endpoint's multicast group on its `iface` (any, if none is named).
fn join(socket: &OwnedFd, ep: &UdpEndpoint, addr: SocketAddr) -> std::result::Result<(), String> {
    let index = match &ep.iface {
        Some(name) => {
            let c = std::ffi::CString::new(name.as_str()).map_err(|_| "iface".to_string())?;
            // SAFETY: a NUL-terminated name.
            match unsafe { libc::if_nametoindex(c.as_ptr()) } {
                0 => return Err(format!("no network interface `{name}`")),
                i => i,
            }
        }
        None => 0,
    };
    let r = match addr.ip() {
        IpAddr::V4(group) => {
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from(group).to_be(),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: index as i32,
            };
            setsockopt(socket, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)
        }
        IpAddr::V6(group) => {
            let mreq = libc::ipv6_mreq {
                ipv6mr_multiaddr: libc::in6_addr {
                    s6_addr: group.octets(),
                },
                ipv6mr_interface: index,
            };
            setsockopt(socket, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)
        }
    };
    r.map_err(|e| format!("cannot join {}: {e}", addr.ip()))
}

/// `addr` as a C socket address and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the family's struct fits in it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}
