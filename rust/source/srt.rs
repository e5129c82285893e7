//! SRT inputs on castway's own socket layer: no pipeline and no thread of their own. The
//! input's sockets sit on one of the SRT I/O threads (`srt::io`), which receives each message
//! into a buffer and hands it to [`Hub::ingest`], byte for byte, as the input pipelines' probe
//! does.
//!
//! A listener input serves one sender at a time: a caller knocking while the current one still
//! delivers is turned away (logged); one knocking after the current one fell silent takes its
//! place (a sender that restarted before its old connection timed out). When the sender leaves
//! (or is silent past the peer idle timeout), the input reports it like a pipeline's error: the
//! route's switch hears of it at once and the input starts listening again after the backoff;
//! a shared input (`srt-shared://`) stays on the shared port and takes the next publisher at once.
//! A caller or rendezvous input connects in the background; a failure to connect (with libsrt's
//! reason: a wrong passphrase, a timeout) or a lost connection is reported the same way.
//!
//! Lock order: `state` → the hub's locks (the I/O thread ingests under `state`).

use std::net::SocketAddr;
use std::os::raw::c_int;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use crate::hub::{Feed, Hub};
use crate::srt::ffi::{SRTSOCKET, SRT_EPOLL_ERR, SRT_EPOLL_IN, SRT_EPOLL_OUT};
use crate::srt::io::{self, Handler};
use crate::srt::refusals::Refusals;
use crate::srt::socket::{resolve, LISTEN_BACKLOG, MAX_PAYLOAD};
use crate::srt::{stats::link_stats, Io, Notify, Socket};
use crate::stats::SrtLinkStats;
use crate::uri::{SrtEndpoint, SrtMode};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-srt",
        gst::DebugColorFlags::empty(),
        Some("castway SRT endpoints"),
    )
});

/// Messages received per wake before the I/O thread turns to its other sockets.
const RECV_BATCH: usize = 64;
/// A listener input's sender silent this long gives way to a new caller.
const SILENT_MS: u64 = 500;
/// How long a shared input stays reserved for a publisher the shared port let in, waiting for
/// its handshake to end and the port to accept it.
const CLAIM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The connection of an input: its socket and, once made, its peer.
struct Conn {
    socket: Socket,
    peer: String,
    connected: bool,
    /// Data arrived on this connection.
    delivered: bool,
    /// When it was made or accepted.
    since: std::time::Instant,
    /// Data packets libsrt had received on it at the last idle check, and since when.
    heard: (i64, std::time::Instant),
}

#[derive(Default)]
struct State {
    closed: bool,
    /// A listener's listening socket.
    listener: Option<Socket>,
    conn: Option<Conn>,
    /// An `srt-shared://` input's place on the shared port.
    registration: Option<crate::server::srt::Registration>,
}

pub struct SrtInput {
    ep: SrtEndpoint,
    /// `route/id`, for the log.
    label: String,
    hub: Arc<Hub>,
    feed: Arc<Feed>,
    notify: Notify,
    worker: io::InputPlace,
    /// This input, as the I/O thread's handler of its sockets.
    me: Weak<SrtInput>,
    state: Mutex<State>,
    /// A shared input reserved by the shared port for a publisher it let in: the publisher's
    /// new socket, and until when. Taken before `state` (which it only tries).
    claim: Mutex<Option<(SRTSOCKET, std::time::Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The local address a listener or rendezvous peer binds.
fn local_address(ep: &SrtEndpoint, port: u16) -> Result<SocketAddr, String> {
    resolve(&ep.bind_host(), port)
}

impl SrtInput {
    /// Opens the input's socket: listening, or connecting in the background.
    pub fn open(
        ep: &SrtEndpoint,
        label: String,
        hub: Arc<Hub>,
        feed: Arc<Feed>,
        notify: Notify,
        refusals: Option<&Refusals>,
    ) -> Result<Arc<SrtInput>, String> {
        let input = Arc::new_cyclic(|me| SrtInput {
            ep: ep.clone(),
            label,
            hub,
            feed,
            notify,
            worker: io::pick_for_input(),
            me: me.clone(),
            state: Mutex::new(State::default()),
            claim: Mutex::new(None),
        });
        let weak = input.handler();
        let mut socket = Socket::new()?;
        socket.configure(ep)?;
        socket.batch_threads();
        let mut state = lock(&input.state);
        match ep.mode {
            SrtMode::Listener => {
                socket.bind(local_address(ep, ep.port)?)?;
                if let Some(r) = refusals {
                    r.watch(&socket)?;
                }
                socket.listen(LISTEN_BACKLOG)?;
                input
                    .worker
                    .add(socket.id(), SRT_EPOLL_IN | SRT_EPOLL_ERR, weak);
                state.listener = Some(socket);
            }
            SrtMode::Caller | SrtMode::Rendezvous => {
                let remote = resolve(&ep.host, ep.port)?;
                input
                    .worker
                    .add(socket.id(), SRT_EPOLL_OUT | SRT_EPOLL_ERR, weak);
                let started = if ep.mode == SrtMode::Rendezvous {
                    let local = local_address(ep, ep.local_port.unwrap_or(ep.port))?;
                    socket.rendezvous(local, remote)
                } else {
                    if ep.local_addr.is_some() || ep.local_port.is_some() {
                        socket.bind(local_address(ep, ep.local_port.unwrap_or(0))?)?;
                    }
                    socket.connect(remote)
                };
                if let Err(e) = started {
                    input.worker.remove(socket.id());
                    return Err(e);
                }
                state.conn = Some(Conn {
                    socket,
                    peer: remote.to_string(),
                    connected: false,
                    delivered: false,
                    since: std::time::Instant::now(),
                    heard: (0, std::time::Instant::now()),
                });
            }
            // A publisher of the shared port is handed over by the port (`adopt`).
            SrtMode::Shared => {}
        }
        drop(state);
        Ok(input)
    }

    /// Closes every socket of the input; nothing more reaches the hub or the control thread.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        // Off the shared port first: no new publisher is handed over.
        state.registration = None;
        // The connection first: its listener's port is given up with the listener.
        for socket in [state.conn.take().map(|c| c.socket), state.listener.take()]
            .into_iter()
            .flatten()
        {
            self.worker.remove(socket.id());
        }
    }

    /// Whether a sender is connected.
    pub fn connected(&self) -> bool {
        lock(&self.state).conn.as_ref().is_some_and(|c| c.connected)
    }

    /// The receiving side of the connection's statistics (zeros while there is none).
    pub fn stats(&self) -> SrtLinkStats {
        let state = lock(&self.state);
        (state.conn.as_ref())
            .filter(|c| c.connected)
            .and_then(|c| c.socket.stats())
            .map(|p| link_stats(&p, false))
            .unwrap_or_default()
    }

    /// A connected sender that delivered data and then nothing for the peer idle timeout is
    /// gone (libsrt would notice only after about 5 s): the input reports it as lost. Nothing
    /// reaching the hub is not enough: libsrt must not have received a data packet from it
    /// either for as long (on a machine too busy to run the I/O thread or libsrt's delivery in
    /// time, the packets of a live sender wait in libsrt's buffer). Called by the route's
    /// control thread once a second.
    pub fn check_idle(&self) {
        let timeout = self.ep.peer_idle_timeout_ms();
        let mut state = lock(&self.state);
        let now = std::time::Instant::now();
        if state.closed {
            return;
        }
        let Some(conn) = state.conn.as_mut().filter(|c| c.connected) else {
            return;
        };
        if let Some(p) = conn.socket.stats() {
            if p.pktRecvTotal != conn.heard.0 {
                conn.heard = (p.pktRecvTotal, now);
            }
        }
        let silent = conn.delivered
            && now.duration_since(conn.heard.1).as_millis() >= u128::from(timeout)
            && self
                .hub
                .idle_ms(&self.feed)
                .is_some_and(|ms| ms >= u64::from(timeout));
        if !silent {
            return;
        }
        let conn = state.conn.take().expect("looked at above");
        self.worker.remove(conn.socket.id());
        let why = format!(
            "no data from {} for {timeout} ms (peer idle timeout)",
            conn.peer
        );
        self.end(state, conn, why);
    }

    /// The connection ended: the input reports why and waits to be started again.
    fn end(&self, mut state: std::sync::MutexGuard<'_, State>, conn: Conn, why: String) {
        let why = match self.ep.mode {
            SrtMode::Listener | SrtMode::Shared => {
                format!("the sender {} left: {why}", conn.peer)
            }
            _ if conn.connected => format!("the connection to {} ended: {why}", conn.peer),
            _ => why,
        };
        gst::info!(CAT, "{}: {why}", self.label);
        drop(conn);
        // A listener stops taking callers until the route starts it again. A shared input
        // stays on the port and takes the next publisher at once: its publisher leaving is no
        // failure of the input (the route's switch loses it all the same; `Slot::fail`).
        if self.ep.mode != SrtMode::Shared {
            state.closed = true;
        }
        drop(state);
        (self.notify)(why);
    }

    /// Takes the callers waiting on the listener.
    fn accept(&self, state: &mut State) {
        let Some(listener) = &state.listener else {
            return;
        };
        let mut callers = Vec::new();
        while let Some(socket) = listener.accept() {
            callers.push(socket);
        }
        for socket in callers {
            self.take_sender(state, socket);
        }
    }

    /// Whether a sender is connected and delivering (or connected but not yet silent for the
    /// peer idle timeout): a new one is turned away.
    fn busy_with(&self, state: &State) -> bool {
        let Some(conn) = &state.conn else {
            return false;
        };
        match self.hub.idle_ms(&self.feed) {
            Some(ms) if conn.delivered => ms < SILENT_MS,
            _ => conn.since.elapsed().as_millis() < u128::from(self.ep.peer_idle_timeout_ms()),
        }
    }

    /// Whether a publisher is live (the shared port refuses another with "conflict"). Asked on
    /// libsrt's receiving thread, which must never wait on a lock held across a libsrt call
    /// (closing a socket under the lock): the lock is tried a few times, and if it stays held
    /// the caller is let in and judged again when accepted (`take_sender` turns it away).
    pub fn busy(&self) -> bool {
        for _ in 0..20 {
            if let Ok(state) = self.state.try_lock() {
                return !state.closed && self.busy_with(&state);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    }

    /// Whether it is an `srt-shared://` input still on the shared port (not closed).
    pub fn on_shared_port(&self) -> bool {
        self.ep.mode == SrtMode::Shared && !lock(&self.state).closed
    }

    /// Reserves the shared input for the publisher on `socket`, which the shared port lets in
    /// (on libsrt's receiving thread, before the handshake ends): false when a publisher is
    /// live or another one holds it (reserved a short while: until accepted, refused by
    /// libsrt, or `CLAIM_TIMEOUT`). The port's receiving threads judge callers at once: what
    /// one let in, the others see.
    pub fn claim(&self, socket: SRTSOCKET) -> bool {
        let mut claim = lock(&self.claim);
        let now = std::time::Instant::now();
        if claim.is_some_and(|(s, until)| s != socket && now < until) {
            return false;
        }
        if self.busy() {
            return false;
        }
        *claim = Some((socket, now + CLAIM_TIMEOUT));
        true
    }

    /// Gives up the reservation of the publisher on `socket` (accepted, or refused by libsrt).
    pub fn release(&self, socket: SRTSOCKET) {
        let mut claim = lock(&self.claim);
        if claim.is_some_and(|(s, _)| s == socket) {
            *claim = None;
        }
    }

    /// Keeps the shared port's place of an `srt-shared://` input until it closes.
    pub fn set_registration(&self, r: crate::server::srt::Registration) {
        lock(&self.state).registration = Some(r);
    }

    /// A publisher the shared port accepted for this input; false if the input no longer
    /// takes one (closed, or a sender is live: the socket is closed).
    pub fn adopt(&self, socket: Socket) -> bool {
        let id = socket.id();
        let mut state = lock(&self.state);
        let taken = !state.closed && self.take_sender(&mut state, socket);
        drop(state);
        self.release(id);
        taken
    }

    /// A caller becomes the input's sender, unless the current one still delivers.
    fn take_sender(&self, state: &mut State, socket: Socket) -> bool {
        let peer = socket.peer().unwrap_or_default();
        if self.busy_with(state) {
            gst::warning!(
                CAT,
                "{}: refused {peer}: a sender is connected and delivering",
                self.label
            );
            return false;
        }
        if let Some(old) = state.conn.take() {
            gst::info!(
                CAT,
                "{}: {peer} takes over from the silent {}",
                self.label,
                old.peer
            );
            self.worker.remove(old.socket.id());
        }
        gst::info!(CAT, "{}: sender {peer} connected", self.label);
        if self.ep.mode == SrtMode::Shared {
            // A new publisher starts a new byte stream (the route restarts other inputs for it).
            self.feed.reset();
        }
        self.worker
            .add(socket.id(), SRT_EPOLL_IN | SRT_EPOLL_ERR, self.handler());
        state.conn = Some(Conn {
            socket,
            peer,
            connected: true,
            delivered: false,
            since: std::time::Instant::now(),
            heard: (0, std::time::Instant::now()),
        });
        true
    }

    fn handler(&self) -> Weak<dyn Handler> {
        self.me.clone()
    }

    /// Receives what is ready (at most `RECV_BATCH` messages, then the I/O thread turns to
    /// its other sockets); returns why the connection ended, if it did.
    ///
    /// After each message it asks libsrt whether another is ready (`Socket::readable`) rather
    /// than receiving until a receive fails: libsrt reports that failure by throwing a C++
    /// exception inside, and most wakes bring one message. One message per wake alone is not
    /// enough: with many sockets on a thread libsrt's epoll does not report a socket that is
    /// still readable at once, and 150 SRT routes at 2 Mb/s delivered half their data late
    /// (`benches/scale.py --kind srt`). A broken connection is drained of what it holds.
    fn receive(&self, conn: &mut Conn, broken: bool) -> Option<String> {
        for _ in 0..RECV_BATCH {
            let Ok(mut buffer) = gst::Buffer::with_size(MAX_PAYLOAD) else {
                return None;
            };
            let b = buffer.get_mut().expect("a new buffer is writable");
            let got = match b.map_writable() {
                Ok(mut map) => conn.socket.recv(&mut map),
                Err(_) => return None,
            };
            match got {
                Io::Done(n) => {
                    conn.delivered = true;
                    b.set_size(n);
                    self.hub.ingest(&self.feed, buffer);
                    if !broken && !conn.socket.readable() {
                        return None;
                    }
                }
                Io::WouldBlock => return None,
                Io::Failed(why) => return Some(why),
            }
        }
        None
    }
}

impl Handler for SrtInput {
    fn ready(&self, socket: SRTSOCKET, events: c_int) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        if state.listener.as_ref().is_some_and(|l| l.id() == socket) {
            self.accept(&mut state);
            return;
        }
        let Some(conn) = state.conn.as_mut().filter(|c| c.socket.id() == socket) else {
            return;
        };
        let ended = if !conn.connected {
            if events & SRT_EPOLL_ERR != 0 {
                Some(format!(
                    "cannot connect to {}: {}",
                    conn.peer,
                    conn.socket.reject_reason()
                ))
            } else {
                conn.connected = true;
                conn.peer = conn.socket.peer().unwrap_or(conn.peer.clone());
                gst::info!(CAT, "{}: connected to {}", self.label, conn.peer);
                self.worker.update(socket, SRT_EPOLL_IN | SRT_EPOLL_ERR);
                None
            }
        } else {
            let why = self.receive(conn, events & SRT_EPOLL_ERR != 0);
            match why {
                Some(why) => Some(why),
                None if events & SRT_EPOLL_ERR != 0 => Some("the connection broke".into()),
                None => None,
            }
        };
        let Some(why) = ended else { return };
        let conn = state.conn.take().expect("looked at above");
        self.worker.remove(socket);
        self.end(state, conn, why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::tests::packet;
    use crate::uri::{Endpoint, Role};
    use std::time::{Duration, Instant};

    fn endpoint(uri: &str, role: Role) -> SrtEndpoint {
        match Endpoint::parse(uri, role) {
            Ok(Endpoint::Srt(ep)) => ep,
            other => panic!("{uri}: {other:?}"),
        }
    }

    /// Polls `done` every 10 ms for at most 10 s.
    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One wake of the I/O thread for an input with several messages ready receives them all,
    /// not one (a relay reading one message per wake fell behind: libsrt's epoll does not
    /// report a socket still readable at once when it serves many).
    #[test]
    fn an_input_receives_every_ready_message_in_one_wake() {
        const MESSAGES: usize = 20;
        const LATENCY_MS: u64 = 20;
        gst::init().unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .unwrap()
            .port();
        let hub = Arc::new(Hub::default());
        let feed = hub.feed();
        let ep = endpoint(
            &format!("srt://127.0.0.1:{port}?mode=listener&latency={LATENCY_MS}"),
            Role::Input,
        );
        let input = SrtInput::open(
            &ep,
            "test/in".into(),
            hub,
            feed.clone(),
            Box::new(|_| {}),
            None,
        )
        .unwrap();
        let caller = Socket::new().unwrap();
        caller
            .configure(&endpoint(
                &format!("srt://127.0.0.1:{port}?mode=caller&latency={LATENCY_MS}"),
                Role::Output,
            ))
            .unwrap();
        caller.connect(resolve("127.0.0.1", port).unwrap()).unwrap();
        wait_for("the sender to connect", || {
            caller.connected() && input.connected()
        });

        // The I/O thread waits for the input's lock while the messages arrive.
        let mut state = lock(&input.state);
        let message: Vec<u8> = (0..7u8)
            .flat_map(|cc| packet(0x100, cc, None, None))
            .collect();
        for _ in 0..MESSAGES {
            assert!(matches!(caller.send(&message), Io::Done(_)));
        }
        let conn = state.conn.as_mut().unwrap();
        wait_for("libsrt to receive every message", || {
            conn.socket
                .stats()
                .is_some_and(|s| s.pktRecvTotal >= MESSAGES as i64)
        });
        // Each is ready to read at its play time, `latency` after it was sent; libsrt tells
        // whether a message is ready, not how many are, so this waits well past the last one's.
        std::thread::sleep(Duration::from_millis(LATENCY_MS + 300));
        assert_eq!(input.receive(conn, false), None);
        assert_eq!(
            feed.counters.snapshot().packets,
            7 * MESSAGES as u64,
            "one wake received only part of what was ready"
        );
        drop(state);
        input.close();
    }
}
