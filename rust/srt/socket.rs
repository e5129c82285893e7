//! One libsrt socket: made, configured from an [`SrtEndpoint`], bound, listening or connecting,
//! sending and receiving without blocking, and closed when dropped.

use std::ffi::CStr;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::raw::{c_int, c_void};
use std::sync::LazyLock;

use super::ffi::{self, SRTSOCKET};
use super::options::{Kind, Value};
use crate::uri::{host_port, SrtEndpoint};

/// castway's peer idle timeout: a peer heard nothing from for this long is gone. libsrt's own
/// default is 5 s; a live peer sends a keepalive every second when it has nothing else to say,
/// so 2 s still leaves one keepalive's margin. libsrt 1.5.1 also waits for 16 expirations of
/// its response timer (at least 300 ms apart, growing), so on a short round trip it never gives
/// up on a peer before about 5 s whatever this says: castway checks its connections itself
/// (`SrtInput::check_idle`, `SrtOutput::check_idle`) against the same timeout.
pub const DEFAULT_PEER_IDLE_TIMEOUT_MS: u32 = 2_000;
/// How many callers may wait to be accepted by a listener (srtsink's was 1: callers knocking at
/// once were refused with "backlog exceeded").
pub const LISTEN_BACKLOG: c_int = 128;
/// libsrt's largest live payload: a message never exceeds it.
pub const MAX_PAYLOAD: usize = 1456;

/// libsrt's start-up, once per process, before the first socket.
static STARTUP: LazyLock<()> = LazyLock::new(|| {
    // SAFETY: plain library initialisation, safe to call once from any thread.
    unsafe {
        ffi::srt_startup();
    }
    // libsrt's log goes to castway's (not stderr); castway reports what matters through its
    // own errors and counters.
    super::log::install();
});

/// Runs `f` (a bind or a connect: libsrt starts the threads of a new UDP port, its receiving
/// and sending threads, on the calling thread) with the calling thread's scheduling policy set
/// to `SCHED_BATCH`, so that those threads, and the delivery (TSBPD) threads the receiving
/// thread starts later, inherit it (see [`Socket::batch_threads`]). The kernel never lets a batch thread that wakes
/// up preempt the thread running on a busy CPU: it runs when that thread waits or its time
/// slice ends (a few ms at most). Without it, on a busy machine the I/O thread was preempted
/// in `srt_sendmsg2` by the sending thread each send wakes (libsrt paces every message), and
/// the two took turns on the CPU message by message; docs/architecture.md has the figures.
/// A thread with another policy than the default (real-time) is left as it is.
fn starting_batch_threads<T>(f: impl FnOnce() -> T) -> T {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: reads and sets the calling thread's (id 0) policy; no memory is shared.
    let switched = unsafe {
        libc::sched_getscheduler(0) == libc::SCHED_OTHER
            && libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0
    };
    let r = f();
    if switched {
        // SAFETY: as above; going back to the default policy needs no privilege.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
    }
    r
}

/// The calling thread's last libsrt error: its code and text.
pub fn last_error() -> (c_int, String) {
    let code = last_error_code();
    // SAFETY: libsrt keeps the error per thread; the text is a NUL-terminated string it owns.
    let text = unsafe { ffi::srt_getlasterror_str() };
    let text = if text.is_null() {
        format!("SRT error {code}")
    } else {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    };
    (code, text)
}

/// The calling thread's last libsrt error code alone: a send or receive that would wait asks
/// only this (libsrt formats the text anew on each call).
fn last_error_code() -> c_int {
    // SAFETY: libsrt keeps the error per thread.
    unsafe { ffi::srt_getlasterror(std::ptr::null_mut()) }
}

/// Whether libsrt takes `config` as a packet filter (`SRTO_PACKETFILTER`): asked of a socket
/// made for the question, since libsrt's parser and the filter's own check are the only exact
/// rule. Never ask it of an empty text: libsrt 1.5.1 crashes parsing one.
pub fn packet_filter_ok(config: &str) -> bool {
    !config.is_empty()
        && !config.contains('\0')
        && Socket::new()
            .is_ok_and(|s| (s.set_str(ffi::SRTO_PACKETFILTER, config, "packetfilter")).is_ok())
}

/// A socket address as libsrt takes it.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: c_int,
}

impl RawAddr {
    fn new(addr: SocketAddr) -> RawAddr {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin)
                };
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
                // SAFETY: as above, for sockaddr_in6.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6)
                };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        RawAddr {
            storage,
            len: len as c_int,
        }
    }

    fn ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }
}

/// `HOST:PORT` of an address libsrt filled in.
fn address_string(storage: &libc::sockaddr_storage) -> Option<String> {
    match c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(storage as *const _ as *const _) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(host_port(&ip.to_string(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 = unsafe { &*(storage as *const _ as *const _) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(host_port(&ip.to_string(), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

/// `HOST:PORT` of an address libsrt passes (a listen callback's peer).
///
/// # Safety
/// `addr` is null or points to a sockaddr_in or sockaddr_in6 as its family says.
pub unsafe fn sockaddr_string(addr: *const libc::sockaddr) -> Option<String> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: the caller's promise; only as many bytes as the family says are copied.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match c_int::from(unsafe { (*addr).sa_family }) {
        libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>(),
        libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>(),
        _ => return None,
    };
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.cast::<u8>(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        )
    };
    address_string(&storage)
}

/// A reject reason libsrt calls "application-defined" (1000 and above), as SRT's Access
/// Control spec names them: `SRT_REJC_PREDEFINED` + an HTTP status, `SRT_REJC_USERDEFINED` +
/// the listener's own code.
fn predefined_reason(code: c_int) -> Option<String> {
    let name = match code {
        1400 => "bad request",
        1401 => "unauthorized",
        1403 => "forbidden",
        1404 => "not found",
        1405 => "bad mode",
        1409 => "conflict",
        1415 => "unacceptable",
        1500 => "internal server error",
        1503 => "unavailable",
        1000..=1999 => return Some(format!("rejected by the listener: {}", code - 1000)),
        2000.. => {
            return Some(format!(
                "rejected by the listener (its code {})",
                code - 2000
            ))
        }
        _ => return None,
    };
    Some(format!("rejected by the listener: {} {name}", code - 1000))
}

/// Resolves `host:port` (an IP address, or a name with a bounded lookup), IPv4 first.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("`{host}` has no address"))
}

/// An open libsrt socket; closed when dropped.
#[derive(Debug)]
pub struct Socket {
    id: SRTSOCKET,
    /// The UDP socket castway bound for it (`bind`), which libsrt owns and uses.
    udp: Option<c_int>,
    /// libsrt's threads for this socket's port start as batch threads (`batch_threads`).
    batch: bool,
}

/// What a non-blocking call found.
pub enum Io {
    /// Done: bytes sent or received.
    Done(usize),
    /// Nothing to receive now, or no room to send.
    WouldBlock,
    /// The connection is gone (or never was): the reason.
    Failed(String),
}

impl Socket {
    /// A new socket, not blocking on send, receive, connect or accept.
    pub fn new() -> Result<Socket, String> {
        LazyLock::force(&STARTUP);
        // SAFETY: creates a socket owned by the returned value.
        let id = unsafe { ffi::srt_create_socket() };
        if id == ffi::SRT_INVALID_SOCK {
            return Err(format!("cannot create an SRT socket: {}", last_error().1));
        }
        let s = Socket {
            id,
            udp: None,
            batch: false,
        };
        s.set_int(ffi::SRTO_SNDSYN, 0, "sndsyn")?;
        s.set_int(ffi::SRTO_RCVSYN, 0, "rcvsyn")?;
        Ok(s)
    }

    /// The threads libsrt starts when this socket binds or connects (those of its UDP port)
    /// are batch threads ([`starting_batch_threads`]). castway's endpoints ask for it: their
    /// threads then wake without preempting castway's I/O thread.
    pub fn batch_threads(&mut self) {
        self.batch = true;
    }

    /// Runs `f`, a call that may start libsrt's threads of this socket's port.
    fn starting_threads<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.batch {
            starting_batch_threads(f)
        } else {
            f()
        }
    }

    pub fn id(&self) -> SRTSOCKET {
        self.id
    }

    fn check(&self, r: c_int, what: &str) -> Result<(), String> {
        if r == ffi::SRT_ERROR {
            Err(format!("{what}: {}", last_error().1))
        } else {
            Ok(())
        }
    }

    pub fn set_int(&self, opt: c_int, value: i32, key: &str) -> Result<(), String> {
        // SAFETY: `value` is a live int of the size given.
        let r = unsafe {
            ffi::srt_setsockflag(
                self.id,
                opt,
                (&value as *const i32).cast::<c_void>(),
                std::mem::size_of::<i32>() as c_int,
            )
        };
        self.check(r, &format!("`{key}={value}`"))
    }

    pub fn set_i64(&self, opt: c_int, value: i64, key: &str) -> Result<(), String> {
        // SAFETY: `value` is a live int64_t of the size given.
        let r = unsafe {
            ffi::srt_setsockflag(
                self.id,
                opt,
                (&value as *const i64).cast::<c_void>(),
                std::mem::size_of::<i64>() as c_int,
            )
        };
        self.check(r, &format!("`{key}={value}`"))
    }

    pub fn set_str(&self, opt: c_int, value: &str, key: &str) -> Result<(), String> {
        // SAFETY: the bytes of `value`, with their length (libsrt copies them).
        let r = unsafe {
            ffi::srt_setsockflag(
                self.id,
                opt,
                value.as_ptr().cast::<c_void>(),
                value.len() as c_int,
            )
        };
        self.check(r, &format!("`{key}`"))
    }

    /// Sets what the endpoint's URI asks for (and castway's defaults), before bind/connect.
    pub fn configure(&self, ep: &SrtEndpoint) -> Result<(), String> {
        self.set_int(ffi::SRTO_TRANSTYPE, 0, "transtype")?;
        self.set_int(ffi::SRTO_LATENCY, ep.latency_ms as i32, "latency")?;
        self.set_int(
            ffi::SRTO_PEERIDLETIMEO,
            ep.peer_idle_timeout_ms() as i32,
            "peeridletimeo",
        )?;
        if let Some(p) = &ep.passphrase {
            self.set_str(ffi::SRTO_PASSPHRASE, p, "passphrase")?;
            self.set_int(ffi::SRTO_PBKEYLEN, ep.pbkeylen as i32, "pbkeylen")?;
        }
        if let Some(s) = &ep.streamid {
            self.set_str(ffi::SRTO_STREAMID, s, "streamid")?;
        }
        for o in &ep.options {
            let def = o.def();
            match (&o.value, def.kind) {
                (Value::Text(t), _) => self.set_str(def.opt, t, def.key)?,
                (Value::Int(v), Kind::Int64 { .. }) => self.set_i64(def.opt, *v, def.key)?,
                (Value::Int(v), Kind::Linger) => self.set_linger(*v as i32)?,
                (Value::Int(v), _) => self.set_int(def.opt, *v as i32, def.key)?,
            }
        }
        Ok(())
    }

    fn set_linger(&self, seconds: i32) -> Result<(), String> {
        let l = libc::linger {
            l_onoff: i32::from(seconds > 0),
            l_linger: seconds,
        };
        // SAFETY: `l` is a live struct linger of the size given.
        let r = unsafe {
            ffi::srt_setsockflag(
                self.id,
                ffi::SRTO_LINGER,
                (&l as *const libc::linger).cast::<c_void>(),
                std::mem::size_of::<libc::linger>() as c_int,
            )
        };
        self.check(r, &format!("`linger={seconds}`"))
    }

    /// Binds `addr` on a UDP socket castway makes (with `SO_REUSEADDR`, as libsrt's own) and
    /// hands to libsrt (`srt_bind_acquire`). libsrt keeps a closed listener's UDP socket for
    /// 4 to 5 s (it waits 3 s for callers still connecting, then its garbage collector's
    /// pace); castway frees the port as soon as it closes the socket instead (see `Drop`), so a
    /// removed route's port is free at once, for castway and for anyone else.
    pub fn bind(&mut self, addr: SocketAddr) -> Result<(), String> {
        self.bind_with(addr, false)
    }

    /// As `bind`, with `SO_REUSEPORT` too: every socket bound so to the same port (by the same
    /// user) takes a share of its callers, the kernel choosing by their address, so each
    /// caller's packets always reach the same socket. libsrt serves each UDP socket with one
    /// receiving thread; a port bound N times has N.
    pub fn bind_shared(&mut self, addr: SocketAddr) -> Result<(), String> {
        self.bind_with(addr, true)
    }

    fn bind_with(&mut self, addr: SocketAddr, reuse_port: bool) -> Result<(), String> {
        let fail = |what: &str| format!("cannot bind {addr}: {what}");
        let family = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket calls on a descriptor this function owns until libsrt takes it.
        unsafe {
            let fd = libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(fail(&std::io::Error::last_os_error().to_string()));
            }
            let one: c_int = 1;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const c_int).cast(),
                std::mem::size_of::<c_int>() as libc::socklen_t,
            );
            if reuse_port {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEPORT,
                    (&one as *const c_int).cast(),
                    std::mem::size_of::<c_int>() as libc::socklen_t,
                );
            }
            // libsrt binds its UDP socket to the device itself (`bindtodevice`), saying only
            // that it failed; the kernel's own answer, asked first, names the reason.
            if let Some(dev) = self.device() {
                if libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_BINDTODEVICE,
                    dev.as_ptr().cast(),
                    dev.len() as libc::socklen_t,
                ) != 0
                {
                    let e = std::io::Error::last_os_error();
                    libc::close(fd);
                    return Err(fail(&format!(
                        "`bindtodevice={dev}`: {e} (the interface must exist, and binding to \
                         one needs CAP_NET_RAW)"
                    )));
                }
            }
            let a = RawAddr::new(addr);
            if libc::bind(fd, a.ptr(), a.len as libc::socklen_t) != 0 {
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                return Err(fail(&e.to_string()));
            }
            if self.starting_threads(|| ffi::srt_bind_acquire(self.id, fd)) == ffi::SRT_ERROR {
                libc::close(fd);
                return Err(fail(&last_error().1));
            }
            self.udp = Some(fd);
        }
        Ok(())
    }

    /// The interface `bindtodevice` set, if any.
    fn device(&self) -> Option<String> {
        let mut name = [0u8; libc::IFNAMSIZ];
        let mut len = name.len() as c_int;
        // SAFETY: libsrt writes at most `len` bytes into `name` and sets `len`.
        let r = unsafe {
            ffi::srt_getsockflag(
                self.id,
                ffi::SRTO_BINDTODEVICE,
                name.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let len = usize::try_from(len).unwrap_or(0).min(name.len());
        let name = &name[..len];
        let name = name.split(|b| *b == 0).next().unwrap_or_default();
        (r != ffi::SRT_ERROR && !name.is_empty())
            .then(|| String::from_utf8_lossy(name).into_owned())
    }

    pub fn listen(&self, backlog: c_int) -> Result<(), String> {
        // SAFETY: a bound socket.
        let r = unsafe { ffi::srt_listen(self.id, backlog) };
        self.check(r, "cannot listen")
    }

    /// Starts connecting (it goes on in the background: the I/O thread hears how it ends).
    pub fn connect(&self, addr: SocketAddr) -> Result<(), String> {
        let a = RawAddr::new(addr);
        // SAFETY: a valid address of the length given.
        let r = self.starting_threads(|| unsafe { ffi::srt_connect(self.id, a.ptr(), a.len) });
        self.check(r, &format!("cannot connect to {addr}"))
    }

    /// Starts a rendezvous between `local` and `remote` (in the background, like `connect`).
    pub fn rendezvous(&mut self, local: SocketAddr, remote: SocketAddr) -> Result<(), String> {
        self.set_int(ffi::SRTO_RENDEZVOUS, 1, "rendezvous")?;
        self.bind(local)?;
        self.connect(remote)
            .map_err(|e| format!("cannot start a rendezvous with {remote}: {e}"))
    }

    /// Takes the next caller waiting on a listener, if any.
    pub fn accept(&self) -> Option<Socket> {
        // SAFETY: all-zero is a valid sockaddr_storage; libsrt fills at most `len` bytes.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
        let id = unsafe {
            ffi::srt_accept(
                self.id,
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        (id != ffi::SRT_INVALID_SOCK).then_some(Socket {
            id,
            udp: None,
            batch: false,
        })
    }

    /// The address the socket is bound to (a listener's port when it asked for port 0).
    pub fn local_address(&self) -> Option<SocketAddr> {
        // SAFETY: as in `accept`.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
        let r = unsafe {
            ffi::srt_getsockname(
                self.id,
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if r == ffi::SRT_ERROR {
            return None;
        }
        address_string(&storage).and_then(|a| {
            let (host, port) = a.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some(SocketAddr::new(host.parse().ok()?, port.parse().ok()?))
        })
    }

    /// The peer's `HOST:PORT`.
    pub fn peer(&self) -> Option<String> {
        // SAFETY: as in `accept`.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
        let r = unsafe {
            ffi::srt_getpeername(
                self.id,
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if r == ffi::SRT_ERROR {
            return None;
        }
        address_string(&storage)
    }

    /// Whether a message is ready to be received now (`SRTO_EVENT` has `SRT_EPOLL_IN`): asks
    /// without receiving, so a drained socket costs no failing `srt_recvmsg`.
    pub fn readable(&self) -> bool {
        let mut events: c_int = 0;
        let mut len = std::mem::size_of::<c_int>() as c_int;
        // SAFETY: libsrt writes one int into `events` and sets `len`.
        let r = unsafe {
            ffi::srt_getsockflag(
                self.id,
                ffi::SRTO_EVENT,
                (&mut events as *mut c_int).cast(),
                &mut len,
            )
        };
        r != ffi::SRT_ERROR && events & ffi::SRT_EPOLL_IN != 0
    }

    /// The stream ID the peer sent (an accepted socket), if any.
    pub fn stream_id(&self) -> Option<String> {
        let mut buf = [0u8; 768];
        let mut len = buf.len() as c_int;
        // SAFETY: libsrt writes at most `len` bytes and sets `len` to what it wrote.
        let r = unsafe {
            ffi::srt_getsockflag(
                self.id,
                ffi::SRTO_STREAMID,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == ffi::SRT_ERROR || len <= 0 {
            return None;
        }
        let s = &buf[..(len as usize).min(buf.len())];
        let s = s.split(|&b| b == 0).next().unwrap_or(s);
        Some(String::from_utf8_lossy(s).into_owned()).filter(|s| !s.is_empty())
    }

    pub fn state(&self) -> c_int {
        // SAFETY: any socket id may be asked.
        unsafe { ffi::srt_getsockstate(self.id) }
    }

    pub fn connected(&self) -> bool {
        self.state() == ffi::SRTS_CONNECTED
    }

    /// Why a connection attempt failed, as libsrt tells it (the reject reason).
    pub fn reject_reason(&self) -> String {
        // SAFETY: the text is a static NUL-terminated string of libsrt.
        unsafe {
            let code = ffi::srt_getrejectreason(self.id);
            if let Some(text) = predefined_reason(code) {
                return text;
            }
            let text = ffi::srt_rejectreason_str(code);
            if text.is_null() {
                format!("rejected ({code})")
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            }
        }
    }

    /// Sends one message without waiting.
    pub fn send(&self, data: &[u8]) -> Io {
        // SAFETY: `data` is valid for its length.
        let r =
            unsafe { ffi::srt_sendmsg(self.id, data.as_ptr().cast(), data.len() as c_int, -1, 0) };
        if r >= 0 {
            return Io::Done(r as usize);
        }
        match last_error_code() {
            ffi::SRT_EASYNCSND => Io::WouldBlock,
            _ => Io::Failed(last_error().1),
        }
    }

    /// Receives one message into `buf` without waiting.
    pub fn recv(&self, buf: &mut [u8]) -> Io {
        // SAFETY: `buf` is writable for its length.
        let r = unsafe { ffi::srt_recvmsg(self.id, buf.as_mut_ptr().cast(), buf.len() as c_int) };
        if r > 0 {
            return Io::Done(r as usize);
        }
        match last_error_code() {
            ffi::SRT_EASYNCRCV => Io::WouldBlock,
            _ if r < 0 => Io::Failed(last_error().1),
            // 0: the connection closed.
            _ => Io::Failed("the connection was closed".into()),
        }
    }

    /// libsrt's statistics of the connection (counters since it started).
    pub fn stats(&self) -> Option<ffi::CBytePerfMon> {
        let mut perf = ffi::CBytePerfMon::default();
        // SAFETY: `perf` is a CBytePerfMon as the header declares it.
        let r = unsafe { ffi::srt_bistats(self.id, &mut perf, 0, 1) };
        (r != ffi::SRT_ERROR).then_some(perf)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the socket is ours; closing also takes it out of every epoll.
        unsafe { ffi::srt_close(self.id) };
        if let Some(fd) = self.udp {
            // libsrt closes its UDP socket seconds later, from its garbage collector. Put an
            // unbound UDP socket in its place under the same descriptor now: the port is free
            // at once, and what libsrt does with the descriptor until it closes it (waits on
            // it with a 10 ms timeout; closes it) touches only the stand-in.
            // SAFETY: `fd` is the descriptor libsrt holds; dup2 swaps what it refers to
            // atomically, and the stand-in's own descriptor is closed right after.
            unsafe {
                let family = if self.udp_is_v6(fd) {
                    libc::AF_INET6
                } else {
                    libc::AF_INET
                };
                let stand_in = libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                if stand_in >= 0 {
                    // libsrt's receiving thread waits in recvmsg with the socket's receive
                    // timeout to look for its end; the stand-in keeps the same timeout.
                    let mut tv: libc::timeval = std::mem::zeroed();
                    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
                    let p = (&mut tv as *mut libc::timeval).cast();
                    if libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, p, &mut len) != 0
                        || (tv.tv_sec == 0 && tv.tv_usec == 0)
                    {
                        tv = libc::timeval {
                            tv_sec: 0,
                            tv_usec: 10_000,
                        };
                    }
                    libc::setsockopt(
                        stand_in,
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&tv as *const libc::timeval).cast(),
                        std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                    );
                    libc::dup2(stand_in, fd);
                    libc::close(stand_in);
                }
            }
        }
    }
}

impl Socket {
    fn udp_is_v6(&self, fd: c_int) -> bool {
        // SAFETY: getsockname on a descriptor libsrt holds open, into a large enough buffer.
        unsafe {
            let mut storage: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            libc::getsockname(
                fd,
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            );
            c_int::from(storage.ss_family) == libc::AF_INET6
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uri::{Endpoint, Role, SrtDefaults};

    /// A socket option's value as libsrt reads it back (`bool`, `int` or `int64_t`; positive).
    fn get(socket: &Socket, opt: c_int) -> i64 {
        let mut value = 0i64;
        let mut len = std::mem::size_of::<i64>() as c_int;
        // SAFETY: libsrt writes at most `len` bytes into `value` and sets `len`.
        let r = unsafe {
            ffi::srt_getsockflag(socket.id(), opt, (&mut value as *mut i64).cast(), &mut len)
        };
        assert_ne!(r, ffi::SRT_ERROR, "option {opt}");
        value
    }

    /// The threads started inside `starting_batch_threads` are batch threads, the calling
    /// thread is back to the default policy after it, and an endpoint's socket that binds
    /// leaves libsrt's threads of its port running as batch threads.
    #[test]
    fn libsrt_threads_of_an_endpoint_are_batch_threads() {
        // SAFETY: reads the calling thread's policy.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let spawned = || std::thread::spawn(policy).join().unwrap();
        assert_eq!(policy(), libc::SCHED_OTHER);
        assert_eq!(starting_batch_threads(spawned), libc::SCHED_BATCH);
        assert_eq!(policy(), libc::SCHED_OTHER);
        assert_eq!(spawned(), libc::SCHED_OTHER);

        let mut socket = Socket::new().unwrap();
        socket.batch_threads();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(policy(), libc::SCHED_OTHER);
        // libsrt's receiving and sending threads of the port, among those of other tests.
        let batch = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let name = std::fs::read_to_string(t.join("comm")).ok()?;
                let tid: libc::pid_t = t.file_name()?.to_str()?.parse().ok()?;
                // SAFETY: reads the policy of a thread of this process (gone: an error).
                let batch = unsafe { libc::sched_getscheduler(tid) } == libc::SCHED_BATCH;
                (batch && name.starts_with("SRT:")).then_some(name)
            })
            .collect::<Vec<_>>();
        assert!(
            batch.iter().any(|n| n.starts_with("SRT:RcvQ"))
                && batch.iter().any(|n| n.starts_with("SRT:SndQ")),
            "no batch thread of libsrt: {batch:?}"
        );
    }

    #[test]
    fn srt_defaults_of_a_template_are_set_on_the_socket() {
        let defaults = SrtDefaults {
            latency_ms: Some(250),
            options: [
                ("oheadbw", "50"),
                ("maxbw", "2000000"),
                ("peeridletimeo", "1500"),
                ("tlpktdrop", "false"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec(),
            ..SrtDefaults::default()
        };
        let uri = defaults.apply("srt://127.0.0.1:9000?oheadbw=30");
        let Ok(Endpoint::Srt(ep)) = Endpoint::parse(&uri, Role::Output) else {
            panic!("{uri}");
        };
        let socket = Socket::new().unwrap();
        socket.configure(&ep).unwrap();
        let read = |opt| get(&socket, opt);
        // The URI's own value wins over the default.
        assert_eq!(read(ffi::SRTO_OHEADBW), 30);
        assert_eq!(read(ffi::SRTO_MAXBW), 2_000_000);
        assert_eq!(read(ffi::SRTO_PEERIDLETIMEO), 1500);
        assert_eq!(read(ffi::SRTO_TLPKTDROP), 0);
        assert_eq!(read(ffi::SRTO_LATENCY), 250);
    }

    fn endpoint(uri: &str) -> crate::uri::SrtEndpoint {
        match Endpoint::parse(uri, Role::Output) {
            Ok(Endpoint::Srt(ep)) => ep,
            other => panic!("{uri}: {other:?}"),
        }
    }

    #[test]
    fn live_keys_are_set_and_bindtodevice_binds_the_udp_socket() {
        let ep = endpoint(
            "srt://127.0.0.1:9000?mode=listener&tsbpdmode=true&messageapi=1&bindtodevice=lo",
        );
        let mut socket = Socket::new().unwrap();
        socket.configure(&ep).unwrap();
        assert_eq!(get(&socket, ffi::SRTO_TSBPDMODE), 1);
        assert_eq!(get(&socket, ffi::SRTO_MESSAGEAPI), 1);
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut name = [0u8; libc::IFNAMSIZ];
        let mut len = name.len() as libc::socklen_t;
        // SAFETY: getsockopt into a buffer of the length given.
        let r = unsafe {
            libc::getsockopt(
                socket.udp.unwrap(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        assert_eq!(&name[..2], b"lo");
    }

    #[test]
    fn bindtodevice_of_no_such_interface_is_an_error_naming_the_key() {
        let ep = endpoint("srt://127.0.0.1:9000?mode=listener&bindtodevice=nosuchdev0");
        let mut socket = Socket::new().unwrap();
        let e = (socket.configure(&ep))
            .and_then(|()| socket.bind("127.0.0.1:0".parse().unwrap()))
            .unwrap_err();
        assert!(e.contains("`bindtodevice=nosuchdev0`"), "{e}");
    }

    #[test]
    fn this_libsrt_has_no_bonding() {
        // What `srt::options` refuses `groupconnect` and `groupminstabletimeo` for: if this
        // fails, libsrt was built with ENABLE_BONDING and the keys could be taken.
        let socket = Socket::new().unwrap();
        assert!(socket
            .set_int(ffi::SRTO_GROUPCONNECT, 1, "groupconnect")
            .is_err());
    }
}
