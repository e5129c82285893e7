//! The SRT I/O threads: a small pool, each thread waiting on one `srt_epoll` for the sockets of
//! every route it serves (listeners accepting, connections being made, connections receiving or
//! breaking). An endpoint puts all its sockets on one thread, so its handler is never called on
//! two threads at once. Inputs are spread over the threads by how many inputs each has
//! ([`pick_for_input`]): an input's thread receives every packet of its route and runs the hub,
//! while outputs and the shared port only accept and hear of ends on theirs ([`pick`], by how
//! many sockets each thread has). Spread by sockets alone, the input and the output of each new
//! route took the two threads in turn, and every input landed on the same one.
//!
//! The pool grows with the sockets, one thread at first: libsrt wakes the threads waiting in
//! any `srt_epoll` of the process through one condition variable, one thread per event,
//! whichever thread that is (and each of them every 10 ms in any case). A second thread that
//! serves nothing of what happens (a relay of one stream) would be woken about as often as the
//! thread that does the work, for nothing; it starts once every thread serves
//! `SOCKETS_PER_THREAD` sockets, when there is work enough for two.
//!
//! Sending does not happen here: the hub sends on the input's thread, without waiting (libsrt's
//! send buffer is the queue). libsrt's own threads (per UDP socket: one receiving, one sending;
//! a delivery (TSBPD) thread per receiving connection; one timer thread per process) do the
//! protocol work. Those of castway's endpoints are batch threads (`Socket::batch_threads`): one
//! the I/O thread wakes (each send wakes the port's sending thread) does not take the CPU from
//! it on a busy machine, so the I/O thread sends a message to every output before they run.

use std::collections::HashMap;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::ffi::{self, SRTSOCKET};

/// How many I/O threads serve every SRT socket of the process, at most.
pub const IO_THREADS: usize = 2;
/// Sockets every thread serves before the pool starts another one.
const SOCKETS_PER_THREAD: usize = 64;
/// Events taken from one wait.
const BATCH: usize = 256;
/// A wait returns after this long with nothing ready (then waits again): how soon the threads
/// see that the process exits.
const WAIT_MS: i64 = 100;

/// The process is exiting: the I/O threads stop calling libsrt (see `leave_libsrt`).
static STOPPING: AtomicBool = AtomicBool::new(false);
/// I/O threads still inside their loop.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Runs at exit, before libsrt's own static destructors (registered after them, so run before
/// them): those destroy the condition variable an `srt_epoll_uwait` waits on, and glibc's
/// `pthread_cond_destroy` waits for its waiters; with the I/O threads waiting again and again
/// the process could take many seconds to exit. The threads are asked to leave libsrt alone and
/// waited for (at most a second).
extern "C" fn leave_libsrt() {
    STOPPING.store(true, Relaxed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while RUNNING.load(Relaxed) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What an endpoint does when one of its sockets is ready. Called on the endpoint's I/O thread
/// with no lock of the pool held; it may (un)register sockets.
pub trait Handler: Send + Sync {
    /// `events`: `SRT_EPOLL_IN` (data, or a caller to accept), `SRT_EPOLL_OUT` (a connection
    /// made), `SRT_EPOLL_ERR` (broken, or failed to connect).
    fn ready(&self, socket: SRTSOCKET, events: c_int);
}

/// One I/O thread: its epoll and the handlers of the sockets on it.
pub struct Worker {
    eid: c_int,
    handlers: Mutex<HashMap<SRTSOCKET, Weak<dyn Handler>>>,
    sockets: AtomicUsize,
    /// Inputs placed on this thread (`pick_for_input`), whether connected or not.
    inputs: AtomicUsize,
}

/// The threads started so far (see the module's doc for when one more starts).
static POOL: Mutex<Vec<Arc<Worker>>> = Mutex::new(Vec::new());

/// Starts the `i`th I/O thread.
fn start(i: usize) -> Arc<Worker> {
    if i == 0 {
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(leave_libsrt) };
    }
    // Sockets must exist before an epoll can take them: libsrt starts up first.
    drop(super::socket::Socket::new());
    // SAFETY: creates an epoll owned by the worker for the life of the process.
    let eid = unsafe { ffi::srt_epoll_create() };
    // An empty epoll waits (for the first socket) instead of failing.
    unsafe { ffi::srt_epoll_set(eid, ffi::SRT_EPOLL_ENABLE_EMPTY) };
    let worker = Arc::new(Worker {
        eid,
        handlers: Mutex::new(HashMap::new()),
        sockets: AtomicUsize::new(0),
        inputs: AtomicUsize::new(0),
    });
    let w = worker.clone();
    RUNNING.fetch_add(1, Relaxed);
    std::thread::Builder::new()
        .name(format!("castway-srt-io{i}"))
        .spawn(move || w.run())
        .expect("cannot start an SRT I/O thread");
    worker
}

/// The I/O thread that comes first by `key`, for a new endpoint; a new thread instead when that
/// one serves `SOCKETS_PER_THREAD` sockets or more and the pool has room for one.
fn pick_by<K: Ord>(key: impl Fn(&Worker) -> K) -> Arc<Worker> {
    let mut pool = lock(&POOL);
    match pool.iter().min_by_key(|w| key(w)) {
        Some(w) if w.sockets.load(Relaxed) < SOCKETS_PER_THREAD || pool.len() >= IO_THREADS => {
            w.clone()
        }
        _ => {
            let worker = start(pool.len());
            pool.push(worker.clone());
            worker
        }
    }
}

/// The I/O thread with the fewest sockets, for a new endpoint.
pub fn pick() -> Arc<Worker> {
    pick_by(|w| w.sockets.load(Relaxed))
}

/// An input's place on an I/O thread; given back when dropped.
pub struct InputPlace(Arc<Worker>);

impl std::ops::Deref for InputPlace {
    type Target = Worker;
    fn deref(&self) -> &Worker {
        &self.0
    }
}

impl Drop for InputPlace {
    fn drop(&mut self) {
        self.0.inputs.fetch_sub(1, Relaxed);
    }
}

/// The I/O thread with the fewest inputs (then the fewest sockets), for a new input.
pub fn pick_for_input() -> InputPlace {
    let worker = pick_by(|w| (w.inputs.load(Relaxed), w.sockets.load(Relaxed)));
    worker.inputs.fetch_add(1, Relaxed);
    InputPlace(worker)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Worker {
    /// Watches `socket` for `events` (SRT_EPOLL_*), calling `handler` when it is ready.
    pub fn add(&self, socket: SRTSOCKET, events: c_int, handler: Weak<dyn Handler>) {
        if lock(&self.handlers).insert(socket, handler).is_none() {
            self.sockets.fetch_add(1, Relaxed);
        }
        // SAFETY: a socket id and a flag word; libsrt checks the id.
        unsafe { ffi::srt_epoll_add_usock(self.eid, socket, &events) };
    }

    /// Watches `socket` for other events.
    pub fn update(&self, socket: SRTSOCKET, events: c_int) {
        // SAFETY: as in `add`.
        unsafe { ffi::srt_epoll_update_usock(self.eid, socket, &events) };
    }

    /// Stops watching `socket` (before it is closed, or after).
    pub fn remove(&self, socket: SRTSOCKET) {
        if lock(&self.handlers).remove(&socket).is_some() {
            self.sockets.fetch_sub(1, Relaxed);
        }
        // SAFETY: as in `add`; an id no longer known is an error libsrt reports, harmlessly.
        unsafe { ffi::srt_epoll_remove_usock(self.eid, socket) };
    }

    fn run(&self) {
        let mut ready = vec![ffi::SRT_EPOLL_EVENT::default(); BATCH];
        loop {
            if STOPPING.load(Relaxed) {
                RUNNING.fetch_sub(1, Relaxed);
                // The process is exiting: never touch libsrt again.
                loop {
                    std::thread::park();
                }
            }
            // SAFETY: `ready` holds BATCH events for libsrt to fill.
            let n = unsafe {
                ffi::srt_epoll_uwait(self.eid, ready.as_mut_ptr(), BATCH as c_int, WAIT_MS)
            };
            if n <= 0 {
                continue;
            }
            for ev in &ready[..(n as usize).min(BATCH)] {
                let handler = lock(&self.handlers).get(&ev.fd).and_then(Weak::upgrade);
                match handler {
                    Some(h) => h.ready(ev.fd, ev.events),
                    // Its endpoint is gone: nothing to tell.
                    None => self.remove(ev.fd),
                }
            }
        }
    }
}
