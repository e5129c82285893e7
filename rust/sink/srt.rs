//! SRT outputs on castway's own socket layer: no pipeline, no queue and no thread of their own.
//! The hub sends each buffer (7 TS packets, one SRT message) on every connection of the output
//! from the input's thread, without waiting: libsrt's send buffer is the output's queue, and a
//! connection whose buffer is full drops the message, counted for the output and for that
//! caller only. The output's sockets sit on one of the SRT I/O threads (`srt::io`), which accepts
//! callers, finishes connecting and hears of broken connections.
//!
//! A listener output serves every caller that connects (a backlog of `LISTEN_BACKLOG`, accepted
//! in a loop); each new caller gets the hub's join burst (instant start: PAT, PMT and the last
//! GOP) in [`SrtOutput::welcome`] before it gets live data, as does the peer of a caller or
//! rendezvous output once connected. What of a burst libsrt's send buffer cannot take at once
//! waits in the connection's backlog, and live data after it (at most the burst's own size,
//! and never less than `MAX_BEHIND_BURST` bytes), sent as the I/O thread hears the socket is
//! writable again; live data keeps queueing until the socket is writable with nothing waiting
//! (the burst's last messages fill the send buffer). A burst goes out whole (live data still
//! queued when the connection ends is counted as its drop). A
//! caller or rendezvous output connects when it starts and keeps its connection while the route
//! is idle; a failure or a lost connection is reported like a pipeline's error, and the route
//! connects again after the backoff.
//!
//! Lock order: the hub's `splice` → its `taps` → `state` (the hub sends under all three; a
//! connection is added under `splice` too, in [`Hub::join`], so that no buffer falls between
//! its burst and its first live buffer); `state` → the callers list.

use std::collections::VecDeque;
use std::os::raw::c_int;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::hub::Hub;
use crate::srt::ffi::{SRTSOCKET, SRT_EPOLL_ERR, SRT_EPOLL_IN, SRT_EPOLL_OUT};
use crate::srt::io::{self, Handler, Worker};
use crate::srt::refusals::Refusals;
use crate::srt::socket::{resolve, LISTEN_BACKLOG};
use crate::srt::{stats::link_stats, Callers, Io, Notify, Socket};
use crate::stats::{Counters, SrtCaller, SrtLinkStats};
use crate::ts::PACKET_SIZE;
use crate::uri::{SrtEndpoint, SrtMode};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-srt",
        gst::DebugColorFlags::empty(),
        Some("castway SRT endpoints"),
    )
});

/// Live data a connection keeps behind the rest of its burst while its send buffer is full, at
/// least (about 4 s at 8 Mb/s); beyond its bound, live data is its drop. A connection's bound
/// is the larger of this and its burst's size: a path that carries the live rate drains a
/// burst of B bytes while about B bytes of live data arrive, so a GOP cache larger than 4 MiB
/// (a 50 Mb/s route) would otherwise cost each new caller live data at every join.
const MAX_BEHIND_BURST: usize = 4 << 20;

/// One connection of the output: a caller of a listener, or the peer of a caller/rendezvous.
struct Conn {
    socket: Socket,
    peer: String,
    /// TS packets this connection did not take (its send buffer was full).
    drops: u64,
    /// What its send buffer could not take yet of its burst, then the live data since, in
    /// order: `(buffer, offset of what is left, part of the burst)`; sent as the socket becomes
    /// writable, before any live data.
    backlog: VecDeque<(gst::Buffer, usize, bool)>,
    /// Live bytes in `backlog`.
    behind: usize,
    /// The most live bytes `backlog` holds: the larger of `MAX_BEHIND_BURST` and its burst.
    max_behind: usize,
    /// It was sent a burst, and has not yet been seen writable with nothing waiting: live data
    /// still queues in `backlog`. The last of a burst fills the send buffer, and a peer that
    /// acknowledges late (a loaded machine) would otherwise lose the first live message after
    /// it, sent into a buffer with no room yet.
    settling: bool,
    /// A send failed: the I/O thread removes it when it hears of the break.
    broken: bool,
    /// The peer's ACKs and NAKs and the packets sent when the peer was last heard from
    /// (`check_idle`), and when.
    heard: (i64, i64, Instant),
}

impl Conn {
    fn new(socket: Socket, peer: String) -> Conn {
        Conn {
            socket,
            peer,
            drops: 0,
            backlog: VecDeque::new(),
            behind: 0,
            max_behind: MAX_BEHIND_BURST,
            settling: false,
            broken: false,
            heard: (0, 0, Instant::now()),
        }
    }

    /// Lets go of the backlog (the connection is gone or closing): the live data in it was
    /// counted as sent when it was queued, so it counts as this connection's drop now.
    fn discard_backlog(&mut self, counters: &Counters) {
        if self.behind > 0 {
            self.drops += self.behind.div_ceil(PACKET_SIZE) as u64;
            counters.drop_bytes(self.behind);
        }
        self.backlog.clear();
        self.behind = 0;
    }
}

#[derive(Default)]
struct State {
    closed: bool,
    listener: Option<Socket>,
    /// A caller/rendezvous socket until its connection is made.
    connecting: Option<(Socket, String)>,
    conns: Vec<Conn>,
    /// An `srt-shared://` output's place on the shared port.
    registration: Option<crate::server::srt::Registration>,
}

pub struct SrtOutput {
    ep: SrtEndpoint,
    label: String,
    notify: Notify,
    worker: Arc<Worker>,
    me: Weak<SrtOutput>,
    /// A listener's callers, for the event log.
    callers: Option<Callers>,
    /// The route's hub, for the join burst of each new connection, and the output's
    /// counters (what a burst sends counts as sent, and in `burst_packets`).
    hub: Weak<Hub>,
    counters: Arc<Counters>,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SrtOutput {
    /// Opens the output's socket: listening, or connecting in the background.
    pub fn open(
        ep: &SrtEndpoint,
        label: String,
        notify: Notify,
        hub: &Arc<Hub>,
        counters: Arc<Counters>,
        refusals: Option<&Refusals>,
    ) -> Result<Arc<SrtOutput>, String> {
        let output = Arc::new_cyclic(|me| SrtOutput {
            ep: ep.clone(),
            label,
            notify,
            worker: io::pick(),
            me: me.clone(),
            callers: matches!(ep.mode, SrtMode::Listener | SrtMode::Shared).then(Callers::default),
            hub: Arc::downgrade(hub),
            counters,
            state: Mutex::new(State::default()),
        });
        let mut socket = Socket::new()?;
        socket.configure(ep)?;
        socket.batch_threads();
        let mut state = lock(&output.state);
        match ep.mode {
            SrtMode::Listener => {
                socket.bind(resolve(&ep.bind_host(), ep.port)?)?;
                if let Some(r) = refusals {
                    r.watch(&socket)?;
                }
                socket.listen(LISTEN_BACKLOG)?;
                output
                    .worker
                    .add(socket.id(), SRT_EPOLL_IN | SRT_EPOLL_ERR, output.handler());
                state.listener = Some(socket);
            }
            SrtMode::Caller | SrtMode::Rendezvous => {
                let remote = resolve(&ep.host, ep.port)?;
                output
                    .worker
                    .add(socket.id(), SRT_EPOLL_OUT | SRT_EPOLL_ERR, output.handler());
                let started = if ep.mode == SrtMode::Rendezvous {
                    let local = resolve(&ep.bind_host(), ep.local_port.unwrap_or(ep.port))?;
                    socket.rendezvous(local, remote)
                } else {
                    if ep.local_addr.is_some() || ep.local_port.is_some() {
                        socket.bind(resolve(&ep.bind_host(), ep.local_port.unwrap_or(0))?)?;
                    }
                    socket.connect(remote)
                };
                if let Err(e) = started {
                    output.worker.remove(socket.id());
                    return Err(e);
                }
                state.connecting = Some((socket, remote.to_string()));
            }
            // Readers of the shared port are handed over by the port (`adopt`).
            SrtMode::Shared => {}
        }
        drop(state);
        Ok(output)
    }

    fn handler(&self) -> Weak<dyn Handler> {
        self.me.clone()
    }

    /// The callers of a listener output.
    pub fn callers(&self) -> Option<Callers> {
        self.callers.clone()
    }

    /// Sends one message on every connection, without waiting, and counts it: `bytes` once if
    /// any connection took it, `drops` once if any connection's send buffer was full, and
    /// `unheard` if there was no connection to take it (a listener with no caller, a caller not
    /// connected yet, or every connection broken): nobody to deliver to.
    pub fn send(&self, data: &[u8], counters: &Counters) -> bool {
        let mut state = lock(&self.state);
        let (mut took, mut dropped) = (false, false);
        for conn in state.conns.iter_mut().filter(|c| !c.broken) {
            if conn.settling || !conn.backlog.is_empty() {
                // The rest of its burst is still waiting, or has just filled the send buffer:
                // live data waits behind it.
                if conn.behind + data.len() <= conn.max_behind {
                    conn.backlog
                        .push_back((gst::Buffer::from_slice(data.to_vec()), 0, false));
                    conn.behind += data.len();
                    took = true;
                } else {
                    conn.drops += data.len().div_ceil(PACKET_SIZE) as u64;
                    dropped = true;
                }
                continue;
            }
            match conn.socket.send(data) {
                Io::Done(_) => took = true,
                Io::WouldBlock => {
                    conn.drops += data.len().div_ceil(PACKET_SIZE) as u64;
                    dropped = true;
                }
                Io::Failed(why) => {
                    // The peer is gone (the I/O thread is about to hear of it): no one to
                    // deliver to, as a listener without callers.
                    gst::debug!(CAT, "{}: sending to {}: {why}", self.label, conn.peer);
                    conn.broken = true;
                }
            }
        }
        if took {
            counters.add(data.len());
        }
        if dropped {
            counters.drop_bytes(data.len());
        }
        if !took && !dropped {
            counters.unheard(data.len());
        }
        took || !dropped
    }

    /// Sends a new connection the hub's join burst (instant start), before it is added where
    /// the fan-out reaches it: called inside [`Hub::join`], so the burst ends where its live
    /// data begins. What the connection took counts as sent (and in `burst_packets`); what its
    /// send buffer could not take yet is its backlog, sent by [`SrtOutput::flush`].
    fn welcome(&self, conn: &mut Conn, burst: &[gst::Buffer]) {
        conn.backlog = burst.iter().map(|b| (b.clone(), 0, true)).collect();
        conn.max_behind = MAX_BEHIND_BURST.max(burst.iter().map(|b| b.size()).sum());
        conn.settling = !burst.is_empty();
        self.flush(conn);
    }

    /// Sends what a connection's backlog holds until its send buffer is full; true when the
    /// backlog is empty. What it sends of a burst counts as sent, and in `burst_packets`.
    fn flush(&self, conn: &mut Conn) -> bool {
        // A buffer of the hub is at most one SRT message (7 packets); PAT and PMT, two.
        const MESSAGE: usize = crate::ts::PACKETS_PER_BUFFER * PACKET_SIZE;
        while let Some((buffer, offset, burst)) = conn.backlog.front_mut() {
            let Ok(map) = buffer.map_readable() else {
                conn.backlog.pop_front();
                continue;
            };
            let message = &map[*offset..map.len().min(*offset + MESSAGE)];
            let failed = match conn.socket.send(message) {
                Io::Done(_) => {
                    if *burst {
                        self.counters.add(message.len());
                        self.counters.burst(message.len());
                    }
                    *offset += message.len();
                    None
                }
                Io::WouldBlock => return false,
                Io::Failed(why) => Some(why),
            };
            let (done, live, len) = (*offset >= map.len(), !*burst, map.len());
            drop(map);
            if let Some(why) = failed {
                gst::debug!(CAT, "{}: sending to {}: {why}", self.label, conn.peer);
                conn.broken = true;
                conn.discard_backlog(&self.counters);
                return true;
            }
            if done {
                conn.backlog.pop_front();
                if live {
                    conn.behind -= len;
                }
            }
        }
        true
    }

    /// What a new connection's socket waits for on the I/O thread: being writable too while
    /// its burst waits or settles.
    fn events(conn: &Conn) -> c_int {
        match conn.settling || !conn.backlog.is_empty() {
            true => SRT_EPOLL_OUT | SRT_EPOLL_ERR,
            false => SRT_EPOLL_ERR,
        }
    }

    /// Runs `f` on the output's state inside [`Hub::join`] with the burst (none when the hub
    /// is gone), unless the output is closed.
    fn joining(&self, f: impl FnOnce(&mut State, &[gst::Buffer])) {
        let run = |burst: Vec<gst::Buffer>| {
            let mut state = lock(&self.state);
            if !state.closed {
                f(&mut state, &burst);
            }
        };
        match self.hub.upgrade() {
            Some(hub) => hub.join(run),
            None => run(Vec::new()),
        }
    }

    /// Closes every socket of the output.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        // Off the shared port first: no new reader is handed over.
        state.registration = None;
        // The connections first: their listener's port is given up with the listener.
        let counters = &self.counters;
        let conns: Vec<Socket> = (state.conns.drain(..))
            .map(|mut c| {
                c.discard_backlog(counters);
                c.socket
            })
            .collect();
        let others = [
            state.connecting.take().map(|(s, _)| s),
            state.listener.take(),
        ];
        for socket in conns.into_iter().chain(others.into_iter().flatten()) {
            self.worker.remove(socket.id());
        }
    }

    /// Whether the output has a peer: its connection, or at least one caller.
    pub fn connected(&self) -> bool {
        !lock(&self.state).conns.is_empty()
    }

    /// The sending side of each connection's statistics: the output's link (a listener's: its
    /// callers' summed up) and a listener's callers.
    pub fn stats(&self) -> (SrtLinkStats, Vec<SrtCaller>) {
        let state = lock(&self.state);
        let links: Vec<(String, u64, SrtLinkStats)> = (state.conns.iter())
            .map(|c| {
                let link = c.socket.stats().map(|p| link_stats(&p, true));
                (c.peer.clone(), c.drops, link.unwrap_or_default())
            })
            .collect();
        drop(state);
        if !matches!(self.ep.mode, SrtMode::Listener | SrtMode::Shared) {
            let link = links.into_iter().next().map(|(_, _, l)| l);
            return (link.unwrap_or_default(), Vec::new());
        }
        let callers: Vec<SrtCaller> = links
            .into_iter()
            .map(|(address, drops, link)| SrtCaller {
                address,
                drops,
                link,
            })
            .collect();
        let link = SrtLinkStats::aggregate(callers.iter().map(|c| &c.link));
        (link, callers)
    }

    /// A connection that was sent data and has not answered (no ACK, no NAK) for the peer idle
    /// timeout is gone (libsrt would notice only after about 5 s): a caller is dropped, the
    /// connection of a caller/rendezvous output is reported as lost. Called by the route's
    /// control thread once a second.
    pub fn check_idle(&self) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        let ms = self.ep.peer_idle_timeout_ms();
        let timeout = Duration::from_millis(ms.into());
        let now = Instant::now();
        let mut gone = Vec::new();
        for conn in &mut state.conns {
            let Some(p) = conn.socket.stats() else {
                continue;
            };
            let answers = i64::from(p.pktRecvACKTotal) + i64::from(p.pktRecvNAKTotal);
            let (heard, sent_then, at) = conn.heard;
            if answers != heard || p.pktSentTotal == sent_then {
                conn.heard = (answers, p.pktSentTotal, now);
            } else if now.duration_since(at) >= timeout {
                gone.push(conn.socket.id());
            }
        }
        for id in gone {
            self.worker.remove(id);
            let i = (state.conns.iter().position(|c| c.socket.id() == id)).expect("listed above");
            let mut conn = state.conns.remove(i);
            conn.discard_backlog(&self.counters);
            let why = format!(
                "{} did not answer for {ms} ms (peer idle timeout)",
                conn.peer
            );
            match &self.callers {
                Some(c) => {
                    gst::info!(CAT, "{}: caller {} left: {why}", self.label, conn.peer);
                    lock(c).left(conn.peer.clone());
                }
                None => {
                    drop(conn);
                    return self.fail(state, why);
                }
            }
        }
    }

    fn accept(&self, state: &mut State, burst: &[gst::Buffer]) {
        let Some(listener) = &state.listener else {
            return;
        };
        let mut callers = Vec::new();
        while let Some(socket) = listener.accept() {
            callers.push(socket);
        }
        for socket in callers {
            let stream_id = socket.stream_id();
            self.take_caller(state, socket, stream_id, burst);
        }
    }

    /// Keeps the shared port's place of an `srt-shared://` output until it closes.
    pub fn set_registration(&self, r: crate::server::srt::Registration) {
        lock(&self.state).registration = Some(r);
    }

    /// A reader the shared port accepted for this output, served as one of its callers; false
    /// if the output is closed (the socket is closed).
    pub fn adopt(&self, socket: Socket, stream_id: Option<String>) -> bool {
        let mut taken = false;
        // Inside the hub's join, as a listener's own callers: the burst, then live data.
        self.joining(|state, burst| {
            self.take_caller(state, socket, stream_id, burst);
            taken = true;
        });
        taken
    }

    fn take_caller(
        &self,
        state: &mut State,
        socket: Socket,
        stream_id: Option<String>,
        burst: &[gst::Buffer],
    ) {
        let peer = socket.peer().unwrap_or_default();
        let mut conn = Conn::new(socket, peer.clone());
        self.welcome(&mut conn, burst);
        let id = conn.socket.id();
        self.worker.add(id, Self::events(&conn), self.handler());
        gst::info!(CAT, "{}: caller {peer} joined", self.label);
        if let Some(c) = &self.callers {
            lock(c).joined(peer, stream_id);
        }
        state.conns.push(conn);
    }
}

impl SrtOutput {
    /// The output's connection failed or ended: the route starts it again after the backoff.
    fn fail(&self, mut state: std::sync::MutexGuard<'_, State>, why: String) {
        state.closed = true;
        drop(state);
        gst::info!(CAT, "{}: {why}", self.label);
        (self.notify)(why);
    }
}

impl Handler for SrtOutput {
    fn ready(&self, socket: SRTSOCKET, events: c_int) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        if state.listener.as_ref().is_some_and(|l| l.id() == socket) {
            // The hub's `splice` comes before `state`: let go, and accept inside its join.
            drop(state);
            self.joining(|state, burst| self.accept(state, burst));
            return;
        }
        if (state.connecting.as_ref()).is_some_and(|(s, _)| s.id() == socket) {
            if events & SRT_EPOLL_ERR != 0 {
                let (s, peer) = state.connecting.take().expect("looked at above");
                self.worker.remove(socket);
                let why = format!("cannot connect to {peer}: {}", s.reject_reason());
                drop(s);
                return self.fail(state, why);
            }
            drop(state);
            self.joining(|state, burst| {
                let Some((s, peer)) = state.connecting.take() else {
                    return;
                };
                let peer = s.peer().unwrap_or(peer);
                gst::info!(CAT, "{}: connected to {peer}", self.label);
                let mut conn = Conn::new(s, peer);
                self.welcome(&mut conn, burst);
                self.worker.update(socket, Self::events(&conn));
                state.conns.push(conn);
            });
            return;
        }
        let Some(i) = state.conns.iter().position(|c| c.socket.id() == socket) else {
            return;
        };
        if events & SRT_EPOLL_ERR == 0 {
            // Writable again: more of its burst (and the live data behind it). Writable with
            // nothing waiting: the burst has settled, and live data goes straight to libsrt.
            let conn = &mut state.conns[i];
            let waiting = !conn.backlog.is_empty();
            if self.flush(conn) && !conn.broken && !waiting {
                conn.settling = false;
                self.worker.update(socket, SRT_EPOLL_ERR);
            }
            return;
        }
        let mut conn = state.conns.remove(i);
        self.worker.remove(socket);
        conn.discard_backlog(&self.counters);
        if conn.drops > 0 {
            gst::info!(
                CAT,
                "{}: {} did not take {} packets",
                self.label,
                conn.peer,
                conn.drops
            );
        }
        match &self.callers {
            Some(c) => {
                gst::info!(CAT, "{}: caller {} left", self.label, conn.peer);
                lock(c).left(conn.peer.clone());
            }
            None => {
                let why = format!("the connection to {} ended", conn.peer);
                drop(conn);
                self.fail(state, why);
            }
        }
    }
}
