//! The I/O threads: a small pool of epoll loops that serve the plain sockets of every route
//! (UDP inputs), instead of a GStreamer pipeline and a streaming thread per socket.
//!
//! A socket is registered with a callback; the loop with the fewest sockets takes it. When the
//! socket is readable (level-triggered) its loop calls the callback with the loop's own
//! [`Scratch`] (the receive buffers of `recvmmsg`, shared by every socket of the loop, since
//! one loop reads one socket at a time). A callback reads a bounded batch and returns, so a
//! busy socket cannot starve the others of its loop; what it leaves is reported again.
//!
//! Dropping the [`Registration`] takes the socket out of its loop and waits for a callback
//! that is running to return: after the drop, the callback never runs again. Callbacks must
//! therefore never wait for anything a dropper might hold (they run the hub's ingest, which
//! takes only the hub's locks; routes drop registrations under `Route.inner`).
//!
//! Lock order: `Loop::sockets` is released before any callback runs; a callback runs under
//! its own `Entry::callback` lock, a leaf taken also by the drop.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// Datagrams one `recvmmsg` call takes at most.
pub const BATCH: usize = 32;
/// The largest datagram received whole (UDP's limit); a larger one arrives cut and is counted.
pub const MAX_DATAGRAM: usize = 65_536;
/// Events one `epoll_wait` returns at most.
const EVENTS: usize = 64;
/// Loops in the pool at most; fewer on a machine with fewer cores.
const MAX_LOOPS: usize = 4;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-io",
        gst::DebugColorFlags::empty(),
        Some("castway I/O threads"),
    )
});

static POOL: LazyLock<Pool> = LazyLock::new(Pool::new);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Callback = Box<dyn FnMut(RawFd, &mut Scratch) + Send>;

struct Entry {
    fd: RawFd,
    /// None once deregistered.
    callback: Mutex<Option<Callback>>,
}

struct Loop {
    epoll: OwnedFd,
    sockets: Mutex<HashMap<u64, Arc<Entry>>>,
    count: AtomicUsize,
}

struct Pool {
    loops: Vec<Arc<Loop>>,
    next_token: AtomicU64,
}

/// A socket served by the pool; dropping it takes the socket out (see the module's doc).
pub struct Registration {
    lp: Arc<Loop>,
    token: u64,
    entry: Arc<Entry>,
}

impl Pool {
    fn new() -> Pool {
        let n = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_LOOPS);
        let loops = (0..n)
            .filter_map(|i| match Loop::start(i) {
                Ok(lp) => Some(lp),
                Err(e) => {
                    gst::error!(CAT, "cannot start I/O loop {i}: {e}");
                    None
                }
            })
            .collect();
        Pool {
            loops,
            next_token: AtomicU64::new(1),
        }
    }
}

impl Loop {
    fn start(i: usize) -> io::Result<Arc<Loop>> {
        // SAFETY: plain system call; the descriptor is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let lp = Arc::new(Loop {
            // SAFETY: a fresh descriptor nobody else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            sockets: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
        });
        let run = lp.clone();
        std::thread::Builder::new()
            .name(format!("castway-io{i}"))
            .spawn(move || run.run())?;
        Ok(lp)
    }

    fn run(&self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let mut scratch = Scratch::new();
        let mut ready = Vec::with_capacity(EVENTS);
        loop {
            // SAFETY: `events` has room for EVENTS entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    -1,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    gst::error!(CAT, "epoll_wait: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                continue;
            }
            {
                let sockets = lock(&self.sockets);
                ready.extend(
                    events[..n as usize]
                        .iter()
                        .filter_map(|ev| sockets.get(&{ ev.u64 }).cloned()),
                );
            }
            for entry in ready.drain(..) {
                if let Some(callback) = lock(&entry.callback).as_mut() {
                    callback(entry.fd, &mut scratch);
                }
            }
        }
    }
}

/// Serves `socket` on one of the pool's loops: `on_readable(fd, scratch)` runs on that loop's
/// thread whenever it is readable, until the registration is dropped. The socket must be
/// non-blocking and outlive the registration.
pub fn register(
    socket: RawFd,
    on_readable: impl FnMut(RawFd, &mut Scratch) + Send + 'static,
) -> io::Result<Registration> {
    let pool = &*POOL;
    let lp = pool
        .loops
        .iter()
        .min_by_key(|l| l.count.load(Relaxed))
        .ok_or_else(|| io::Error::other("no I/O thread could be started"))?
        .clone();
    let token = pool.next_token.fetch_add(1, Relaxed);
    let entry = Arc::new(Entry {
        fd: socket,
        callback: Mutex::new(Some(Box::new(on_readable))),
    });
    lock(&lp.sockets).insert(token, entry.clone());
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: valid descriptors and a live event struct.
    let r = unsafe { libc::epoll_ctl(lp.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, socket, &mut ev) };
    if r != 0 {
        let e = io::Error::last_os_error();
        lock(&lp.sockets).remove(&token);
        return Err(e);
    }
    lp.count.fetch_add(1, Relaxed);
    Ok(Registration { lp, token, entry })
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: valid descriptors; a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.lp.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.entry.fd,
                std::ptr::null_mut(),
            );
        }
        lock(&self.lp.sockets).remove(&self.token);
        // Waits for a callback running now; none runs after this.
        lock(&self.entry.callback).take();
        self.lp.count.fetch_sub(1, Relaxed);
    }
}

/// A loop's receive buffers for `recvmmsg`: `BATCH` datagrams of up to `MAX_DATAGRAM` bytes.
pub struct Scratch {
    data: Vec<u8>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovecs`/`headers` point into `data`, owned by the same value
// and never shared; the loop's thread alone uses it.
unsafe impl Send for Scratch {}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            data: Vec::new(),
            iovecs: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Receives up to `BATCH` datagrams from `fd` at once (never blocks); calls `each` with
    /// each datagram and whether it arrived cut (larger than `MAX_DATAGRAM`). Returns how many
    /// arrived: 0 when none was waiting.
    pub fn recv(&mut self, fd: RawFd, mut each: impl FnMut(&[u8], bool)) -> io::Result<usize> {
        if self.data.is_empty() {
            self.data = vec![0; BATCH * MAX_DATAGRAM];
            let base = self.data.as_mut_ptr();
            self.iovecs = (0..BATCH)
                .map(|i| libc::iovec {
                    // SAFETY: within `data`, which is never resized after this.
                    iov_base: unsafe { base.add(i * MAX_DATAGRAM) }.cast(),
                    iov_len: MAX_DATAGRAM,
                })
                .collect();
            // SAFETY: an all-zero mmsghdr is a valid value (null pointers, zero lengths).
            self.headers = vec![unsafe { std::mem::zeroed() }; BATCH];
            let iov = self.iovecs.as_mut_ptr();
            for (i, h) in self.headers.iter_mut().enumerate() {
                // SAFETY: within `iovecs`, never resized after this.
                h.msg_hdr.msg_iov = unsafe { iov.add(i) };
                h.msg_hdr.msg_iovlen = 1;
            }
        }
        // SAFETY: `headers` describes BATCH buffers inside `data`, all live for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        for (i, h) in self.headers[..n as usize].iter_mut().enumerate() {
            let len = (h.msg_len as usize).min(MAX_DATAGRAM);
            let cut = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            h.msg_hdr.msg_flags = 0;
            each(&self.data[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len], cut);
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_registered_socket_is_read_in_batches_and_never_after_its_registration_is_dropped() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (got, seen) = mpsc::channel();
        let reg = register(rx.as_raw_fd(), move |fd, scratch| {
            while scratch
                .recv(fd, |d, cut| got.send((d.to_vec(), cut)).unwrap())
                .unwrap()
                > 0
            {}
        })
        .unwrap();
        // Fewer than the default receive buffer holds, so none is lost before the loop reads.
        for i in 0..50u8 {
            tx.send_to(&[i; 1316], rx.local_addr().unwrap()).unwrap();
        }
        for i in 0..50u8 {
            let (d, cut) = seen.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!((d.len(), d[0], cut), (1316, i, false));
        }
        drop(reg);
        tx.send_to(&[7; 10], rx.local_addr().unwrap()).unwrap();
        assert!(seen.recv_timeout(Duration::from_millis(200)).is_err());
    }
}
