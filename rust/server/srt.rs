//! The shared SRT port (`castway serve --srt-listen [HOST]:PORT`): one port that takes
//! publishers and readers of every route, chosen by the caller's stream ID (`streamid`).
//!
//! A route takes part through its `srt-shared://` endpoints: an input is where a publisher's
//! data goes (one publisher at a time; a route may have several, a main and a backup, which a
//! publisher names as `ROUTE/INPUT` or the port picks: the highest-priority free one that admits
//! it, in the route's failover order), an output serves every reader as a caller of its own.
//! Each registers here, in the gateway's [`Directory`], with its access: a passphrase and users.
//!
//! The port is bound [`RECEIVERS`] times (`SO_REUSEPORT`): libsrt serves each UDP socket with
//! one receiving thread, and one thread for every publisher of the gateway fell behind on a
//! busy machine (`benches/shared_port.py`: at 200 publishers of 2 Mb/s its socket's queue
//! overflowed while the same load on a port per route arrived whole). The kernel gives each
//! caller to one of the sockets by its address, so a caller's handshake and data always reach
//! the same listener; every listener has the same callback and directory.
//!
//! libsrt calls [`on_listen`] on its receiving thread with the new socket and its stream ID
//! before the handshake completes: the caller is looked up, checked, given the passphrase of its
//! route (or of its user) and its side's latency on its own socket, or refused with SRT's reject
//! reason (the peer sees it), logged and counted. A publisher let in reserves its input there
//! (`SrtInput::claim`): the port's receiving threads judge callers at once, and a second
//! publisher is refused as a conflict at its handshake, not closed once connected. Stream ID
//! [`PROBE`] is `castway probe`'s: served by the port itself, its data counted and discarded. libsrt checks the passphrase itself after the callback, and
//! rejects a wrong one (or one on a side only) without calling back: the callback leaves a watch
//! on its thread that libsrt's log calls (`srt::log`), so that refusal is logged and counted too. A caller let in
//! is accepted on the SRT I/O thread of the port
//! (no thread per connection) and handed to its route's input or output, which serve it on their
//! own I/O thread from then on.
//!
//! Lock order: the directory's lock is never held while an input's or output's lock is taken.

use std::collections::HashMap;
use std::ffi::CStr;
use std::net::SocketAddr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::streamid::{self, Mode, Refusal, StreamRequest};
use crate::events::{Event, EventLog, Kind};
use crate::sink::srt::SrtOutput;
use crate::source::srt::SrtInput;
use crate::srt::ffi::{self, SRTSOCKET, SRT_EPOLL_ERR, SRT_EPOLL_IN};
use crate::srt::io::{self, Handler, Worker};
use crate::srt::log::{self as srt_log, Rejection, Watch};
use crate::srt::refusals::EventBudget;
pub use crate::srt::refusals::REFUSAL_EVENTS_PER_SECOND;
use crate::srt::socket::{resolve, sockaddr_string, LISTEN_BACKLOG};
use crate::srt::{Io, Socket};
use crate::uri::{SrtEndpoint, SrtMode};

/// The stream ID of `castway probe`'s caller: the port takes it as a probe peer (its data
/// counted and discarded), unless a route of that name is on the port or the port's address
/// says `probe=off`.
pub const PROBE: &str = "probe";
/// Probes served at once; one more is refused as unavailable (1503).
pub const MAX_PROBES: usize = 2;
/// A probe's longest life: the port ends it then (`castway probe` runs for seconds).
pub const PROBE_MAX: Duration = Duration::from_secs(120);
/// A probe peer that sends nothing for this long is closed and its slot freed: `castway
/// probe` sends from its first moment, and a caller that only holds a slot (an encoder sent
/// stream ID `probe` by mistake, a peer gone without a word) would otherwise keep the next
/// probe out until libsrt notices it (never, while it answers keepalives).
pub const PROBE_IDLE: Duration = Duration::from_secs(2);

/// How many sockets (so libsrt receiving threads) the shared port is bound with: with four,
/// 200 publishers still lost now and then on the busy 2-core machine; with eight, never in
/// the runs made.
pub const RECEIVERS: usize = 8;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-srt-port",
        gst::DebugColorFlags::empty(),
        Some("castway's shared SRT port"),
    )
});

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who may publish or read a route on the shared port (from its `srt-shared://` endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub passphrase: Option<String>,
    pub pbkeylen: u32,
    /// `(name, password)`; empty: anyone (who knows the passphrase, if there is one).
    pub users: Vec<(String, String)>,
    /// castway API keys are users too: any key may read, operator and admin keys may publish.
    pub keys: bool,
    /// The latency set on each caller's socket; None: the port's.
    pub latency_ms: Option<u32>,
}

impl Access {
    pub fn of(ep: &SrtEndpoint) -> Access {
        Access {
            passphrase: ep.passphrase.clone(),
            pbkeylen: ep.pbkeylen,
            users: ep.users.clone(),
            keys: ep.keys,
            latency_ms: ep.shared_latency_ms,
        }
    }

    /// Whether callers must say who they are.
    fn restricted(&self) -> bool {
        !self.users.is_empty() || self.keys
    }

    fn password(&self, user: &str) -> Option<&str> {
        (self.users.iter())
            .find(|(n, _)| n == user)
            .map(|(_, p)| p.as_str())
    }
}

/// What a caller let in gets on its socket: the passphrase (and key length) of its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub passphrase: Option<(String, u32)>,
    /// Its route side's latency, when it has its own (else the port's).
    pub latency_ms: Option<u32>,
}

/// Whether `request` may go on, given who may publish and read its route (None: the route
/// does not take that on the shared port) and whether the route has a live publisher. Users
/// are checked as their stream ID form allows: MediaMTX's carries the password, SRT's Access
/// Control form names the user only, whose password then is the connection's passphrase.
/// `key` tells whether a password is a castway API key and whether that key may publish (a key
/// goes in MediaMTX's form only: the listener cannot know its secret to use as a passphrase).
pub fn decide(
    publish: Option<&Access>,
    read: Option<&Access>,
    request: &StreamRequest,
    publisher_live: bool,
    key: &dyn Fn(&str) -> Option<bool>,
) -> Result<Admission, Refusal> {
    let (access, other) = match request.mode {
        Mode::Publish => (publish, read),
        Mode::Read => (read, publish),
    };
    let Some(access) = access else {
        return Err(if other.is_some() {
            Refusal::Forbidden
        } else {
            Refusal::NotFound
        });
    };
    let mut passphrase = (access.passphrase.clone()).map(|p| (p, access.pbkeylen));
    let by_key = (request.password.as_deref())
        .filter(|_| access.keys)
        .and_then(key);
    if let Some(may_publish) = by_key {
        if request.mode == Mode::Publish && !may_publish {
            return Err(Refusal::Forbidden);
        }
    } else if access.restricted() {
        let Some(user) = &request.user else {
            return Err(Refusal::Unauthorized);
        };
        match (access.password(user), &request.password) {
            (Some(want), Some(given)) if same(want, given) => {}
            (Some(want), None) => passphrase = Some((want.to_string(), access.pbkeylen)),
            (Some(_), Some(_)) => return Err(Refusal::Unauthorized),
            (None, given) => {
                // A user of the other side who proved who they are (MediaMTX's form, the right
                // password): known, not allowed. One who did not (a wrong password, or SRT's
                // form, whose password is a passphrase libsrt checks only after this) is
                // refused as an unknown user is, so that a refusal never tells who exists.
                let known = other.and_then(|o| o.password(user));
                return Err(match (known, given) {
                    (Some(p), Some(g)) if same(p, g) => Refusal::Forbidden,
                    _ => Refusal::Unauthorized,
                });
            }
        }
    }
    if request.mode == Mode::Publish && publisher_live {
        return Err(Refusal::Conflict);
    }
    Ok(Admission {
        passphrase,
        latency_ms: access.latency_ms,
    })
}

/// Whether two passwords are equal, in a time that does not tell how much of them matched.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A route's input or output on the shared port.
#[derive(Clone)]
enum Side {
    Input(Weak<SrtInput>),
    Output(Weak<SrtOutput>),
}

/// A route's shared input: its token, id, endpoint and access.
type SharedInput = (u64, String, Weak<SrtInput>, Access);

#[derive(Default)]
struct Entry {
    /// The route's shared inputs, highest priority first (`rank`).
    publish: Vec<SharedInput>,
    /// `(token, endpoint, access)` of the route's shared output.
    read: Option<(u64, Weak<SrtOutput>, Access)>,
    /// The route's input ids in its priority order, as it last told (`set_priority`).
    priority: Vec<String>,
    /// Input ids in the order they first registered: the order of those the route has not
    /// (yet) placed.
    order: Vec<String>,
}

impl Entry {
    /// Puts the shared inputs in the route's priority order: those it placed first, then the
    /// others as they first registered.
    fn rank(&mut self) {
        let (priority, order) = (&self.priority, &self.order);
        let rank = |p: &SharedInput| match priority.iter().position(|n| *n == p.1) {
            Some(i) => (0, i),
            None => (
                1,
                order.iter().position(|n| *n == p.1).unwrap_or(usize::MAX),
            ),
        };
        self.publish.sort_by_key(rank);
    }

    fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.read.is_none() && self.priority.is_empty()
    }
}

/// The routes on the gateway's shared SRT port, by name. Kept whether a port is open or not:
/// routes register their `srt-shared://` endpoints as they start.
#[derive(Clone, Default)]
pub struct Directory {
    routes: Arc<Mutex<HashMap<String, Entry>>>,
    next: Arc<AtomicU64>,
    /// castway's API keys: the SHA-256 (hex) of each live key's secret, and whether it may
    /// publish (operator, admin). The control plane keeps it up to date (`set_keys`).
    keys: Arc<Mutex<HashMap<String, bool>>>,
    /// Whether the gateway opened its shared port (`Gateway::listen_srt`): until it does, no
    /// peer can reach an `srt-shared://` endpoint.
    open: Arc<std::sync::atomic::AtomicBool>,
}

/// What an `srt-shared://` endpoint shows as its error while the gateway has no shared port.
pub const NO_SHARED_PORT: &str = "no shared SRT port: nothing can connect to an srt-shared:// \
    endpoint until the gateway opens one (`castway serve --srt-listen`, `Gateway.listen_srt`)";

/// A route's endpoint on the shared port; dropping it takes the endpoint off the port.
pub struct Registration {
    directory: Directory,
    route: String,
    mode: Mode,
    token: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = lock(&self.directory.routes);
        let Some(entry) = routes.get_mut(&self.route) else {
            return;
        };
        match self.mode {
            Mode::Publish => entry.publish.retain(|p| p.0 != self.token),
            Mode::Read if entry.read.as_ref().is_some_and(|r| r.0 == self.token) => {
                entry.read = None
            }
            Mode::Read => {}
        }
        if entry.is_empty() {
            routes.remove(&self.route);
        }
    }
}

/// The SHA-256 of `text`, in lowercase hex (as castway keeps API keys).
fn sha256_hex(text: &str) -> String {
    let mut md = [0u8; 32];
    // SAFETY: `text` is valid for its length; `md` takes SHA-256's 32 bytes.
    unsafe { ffi::SHA256(text.as_ptr(), text.len(), md.as_mut_ptr()) };
    md.iter().map(|b| format!("{b:02x}")).collect()
}

impl Directory {
    /// Marks the shared port open (it stays open until the gateway closes).
    pub fn set_open(&self) {
        self.open.store(true, Relaxed);
    }

    /// Whether the gateway's shared port is open.
    pub fn is_open(&self) -> bool {
        self.open.load(Relaxed)
    }

    /// castway's live API keys, as `(SHA-256 hex of the secret, role)`; replaces the last set.
    pub fn set_keys(&self, keys: &[(String, String)]) {
        let keys = (keys.iter())
            .map(|(hash, role)| {
                (
                    hash.to_ascii_lowercase(),
                    matches!(role.as_str(), "operator" | "admin"),
                )
            })
            .collect();
        *lock(&self.keys) = keys;
    }

    /// Whether `secret` is a live API key, and whether it may publish.
    fn key(&self, secret: &str) -> Option<bool> {
        let hash = sha256_hex(secret);
        lock(&self.keys).get(&hash).copied()
    }

    /// The priority order of `route`'s inputs (their ids, the first preferred), which a
    /// publisher naming only the route follows; the route tells it as it starts and whenever
    /// its inputs change, and an empty list as it stops.
    pub fn set_priority(&self, route: &str, ids: &[&str]) {
        let mut routes = lock(&self.routes);
        if ids.is_empty() && !routes.contains_key(route) {
            return;
        }
        let entry = routes.entry(route.to_string()).or_default();
        entry.priority = ids.iter().map(|s| s.to_string()).collect();
        entry.rank();
        if entry.is_empty() {
            routes.remove(route);
        }
    }

    /// Puts a route's shared input `id` on the port (a route may have several).
    pub fn add_input(
        &self,
        route: &str,
        id: &str,
        input: &Arc<SrtInput>,
        access: Access,
    ) -> Result<Registration, String> {
        self.add(route, id, Side::Input(Arc::downgrade(input)), access)
    }

    /// Puts a route's shared output on the port. A route has one at most.
    pub fn add_output(
        &self,
        route: &str,
        output: &Arc<SrtOutput>,
        access: Access,
    ) -> Result<Registration, String> {
        self.add(route, "", Side::Output(Arc::downgrade(output)), access)
    }

    fn add(
        &self,
        route: &str,
        id: &str,
        side: Side,
        access: Access,
    ) -> Result<Registration, String> {
        let token = self.next.fetch_add(1, Relaxed);
        let mut routes = lock(&self.routes);
        let entry = routes.entry(route.to_string()).or_default();
        let mode = match side {
            Side::Input(i) => {
                if entry.publish.iter().any(|p| p.1 == id) {
                    return Err(format!(
                        "the route's srt-shared:// input `{id}` is on already"
                    ));
                }
                if !entry.order.iter().any(|n| n == id) {
                    entry.order.push(id.to_string());
                }
                entry.publish.push((token, id.to_string(), i, access));
                entry.rank();
                Mode::Publish
            }
            Side::Output(o) => {
                if entry.read.is_some() {
                    return Err(
                        "the route has an srt-shared:// output already (one at most)".into(),
                    );
                }
                entry.read = Some((token, o, access));
                Mode::Read
            }
        };
        Ok(Registration {
            directory: self.clone(),
            route: route.to_string(),
            mode,
            token,
        })
    }

    /// What the port needs to judge a caller of `route`: its shared inputs and its output
    /// (with their access).
    fn look_up(&self, route: &str) -> (Vec<SharedInput>, Option<(Weak<SrtOutput>, Access)>) {
        let routes = lock(&self.routes);
        let Some(e) = routes.get(route) else {
            return (Vec::new(), None);
        };
        let read = e.read.as_ref().map(|r| (r.1.clone(), r.2.clone()));
        (e.publish.clone(), read)
    }

    /// Judges the caller on socket `ns`: its admission, and where it goes once accepted. A
    /// publisher goes to the input it names, else to the first (in the route's priority order)
    /// that admits it and has no live
    /// publisher, and reserves it (`SrtInput::claim`); when each that admits it has one (or is
    /// reserved for another), it is refused as a conflict.
    fn judge(&self, request: &StreamRequest, ns: SRTSOCKET) -> Result<(Admission, Side), Refusal> {
        let (inputs, read) = self.look_up(&request.route);
        let key = |p: &str| self.key(p);
        let read_access = read.as_ref().map(|r| &r.1);
        match request.mode {
            Mode::Read => {
                // The input whose user the caller names, if any, tells a publisher reading.
                let user = request.user.as_deref().unwrap_or_default();
                let publish = (inputs.iter())
                    .find(|p| p.3.password(user).is_some())
                    .or(inputs.first())
                    .map(|p| &p.3);
                let admission = decide(publish, read_access, request, false, &key)?;
                let (output, _) = read.clone().ok_or(Refusal::NotFound)?;
                Ok((admission, Side::Output(output)))
            }
            Mode::Publish => {
                let named = |p: &&SharedInput| request.input.as_ref().is_none_or(|n| *n == p.1);
                let candidates: Vec<&SharedInput> = inputs.iter().filter(named).collect();
                if candidates.is_empty() {
                    if request.input.is_some() && !inputs.is_empty() {
                        return Err(Refusal::NotFound);
                    }
                    decide(None, read_access, request, false, &key)?;
                    return Err(Refusal::NotFound);
                }
                let mut refusal = None;
                for (_, _, input, access) in candidates {
                    // Credentials first, then the reservation (a live publisher holds it too).
                    match decide(Some(access), read_access, request, false, &key) {
                        Ok(admission) if input.upgrade().is_none_or(|i| i.claim(ns)) => {
                            return Ok((admission, Side::Input(input.clone())))
                        }
                        Ok(_) => refusal = Some(Refusal::Conflict),
                        Err(r) => refusal = refusal.or(Some(r)),
                    }
                }
                Err(refusal.expect("one candidate at least"))
            }
        }
    }
}

/// The port's figures (`SrtPort::stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SrtPortStats {
    /// `HOST:PORT` it listens on.
    pub address: String,
    /// Callers let in, by what they asked.
    pub publishers_accepted: u64,
    pub readers_accepted: u64,
    /// Callers refused, by SRT reject reason.
    pub refused_bad_request: u64,
    pub refused_unauthorized: u64,
    pub refused_forbidden: u64,
    pub refused_not_found: u64,
    pub refused_conflict: u64,
    /// Probes refused: `MAX_PROBES` were being served.
    pub refused_unavailable: u64,
    /// Refused by libsrt after the stream ID let them in: a wrong passphrase
    /// (`SRT_REJ_BADSECRET`).
    pub refused_bad_secret: u64,
    /// Refused by libsrt after the stream ID let them in: a passphrase on one side only (the
    /// caller's or the route's; `SRT_REJ_UNSECURE`).
    pub refused_unsecure: u64,
    /// Publishers let in whose route did not take them once connected (it was stopping, or
    /// another publisher was live): closed right after their handshake, and reported as
    /// `srt_refused` events of reason `dropped`.
    pub publishers_dropped: u64,
    /// `castway probe` callers served (stream ID `probe`), and the bytes they sent, discarded.
    pub probes_accepted: u64,
    pub probe_bytes: u64,
    /// Probe peers the port closed because they sent nothing for `PROBE_IDLE`.
    pub probes_idle_closed: u64,
    /// Probe peers served now, each holding one of the port's `MAX_PROBES` slots (a probe
    /// whose end the port did not hear holds its slot until `PROBE_IDLE` closes it).
    pub probes_active: u64,
    /// Refusals not reported as `srt_refused` events: more than `REFUSAL_EVENTS_PER_SECOND`
    /// came in one second.
    pub refusal_events_missed: u64,
}

#[derive(Default)]
struct Counts {
    publishers: AtomicU64,
    readers: AtomicU64,
    refused: [AtomicU64; 6],
    bad_secret: AtomicU64,
    unsecure: AtomicU64,
    dropped: AtomicU64,
    probes: AtomicU64,
    probe_bytes: AtomicU64,
    refusal_events_missed: AtomicU64,
}

fn refusal_index(r: Refusal) -> usize {
    match r {
        Refusal::BadRequest => 0,
        Refusal::Unauthorized => 1,
        Refusal::Forbidden => 2,
        Refusal::NotFound => 3,
        Refusal::Conflict => 4,
        Refusal::Unavailable => 5,
    }
}

/// A refusal's name in stats, metrics and events.
fn refusal_name(r: Refusal) -> &'static str {
    match r {
        Refusal::BadRequest => "bad_request",
        Refusal::Unauthorized => "unauthorized",
        Refusal::Forbidden => "forbidden",
        Refusal::NotFound => "not_found",
        Refusal::Conflict => "conflict",
        Refusal::Unavailable => "unavailable",
    }
}

fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::BadRequest => "bad request (stream ID)",
        Refusal::Unauthorized => "unauthorized",
        Refusal::Forbidden => "forbidden",
        Refusal::NotFound => "not found",
        Refusal::Conflict => "conflict (a publisher is live)",
        Refusal::Unavailable => "unavailable (as many probes as the port takes)",
    }
}

/// A probe peer being served: its socket, since when, and when it last sent.
struct Probe {
    socket: Socket,
    since: Instant,
    heard: Instant,
}

#[derive(Default)]
struct ProbeList {
    peers: Vec<Probe>,
    /// The port closed: the timer thread leaves.
    closed: bool,
}

/// The probe peers of a port, and what its timer thread (`end_overdue`) waits on: woken when
/// a probe comes or the port closes, and at the next probe's deadline (idle or past
/// `PROBE_MAX`); without probes it waits untimed.
#[derive(Default)]
struct Probes {
    list: Mutex<ProbeList>,
    changed: Condvar,
    idle_closed: AtomicU64,
}

/// The port's probe timer: ends each probe peer that sent nothing for `PROBE_IDLE` (counted)
/// or ran past `PROBE_MAX`, until the port closes.
fn end_overdue(probes: &Probes, worker: &Worker) {
    let mut list = lock(&probes.list);
    while !list.closed {
        let now = Instant::now();
        list.peers.retain(|p| {
            let over = now.duration_since(p.since) >= PROBE_MAX;
            let idle = now.duration_since(p.heard) >= PROBE_IDLE;
            if over || idle {
                worker.remove(p.socket.id());
                let peer = p.socket.peer().unwrap_or_default();
                if over {
                    gst::info!(CAT, "probe {peer} ended: its time is up");
                } else {
                    probes.idle_closed.fetch_add(1, Relaxed);
                    gst::info!(
                        CAT,
                        "probe {peer} closed: it sent nothing for {PROBE_IDLE:?}"
                    );
                }
            }
            !(over || idle)
        });
        let next = (list.peers.iter())
            .map(|p| (p.heard + PROBE_IDLE).min(p.since + PROBE_MAX))
            .min();
        list = match next {
            None => (probes.changed.wait(list)).unwrap_or_else(PoisonError::into_inner),
            Some(at) => {
                (probes
                    .changed
                    .wait_timeout(list, at.saturating_duration_since(now)))
                .unwrap_or_else(PoisonError::into_inner)
                .0
            }
        };
    }
}

struct PortInner {
    /// Itself, as the I/O thread's handler of probe peers' sockets.
    me: Weak<PortInner>,
    address: SocketAddr,
    directory: Directory,
    worker: Arc<Worker>,
    /// The port's listening sockets, all bound to `address` (`RECEIVERS` of them).
    listeners: Mutex<Vec<Socket>>,
    counts: Counts,
    /// Whether stream ID `probe` is a probe peer (`probe=off` on the address: it is not).
    probe: bool,
    /// The probe peers being served.
    probes: Arc<Probes>,
    /// Where refusals are reported (the gateway's event log), and how many this second.
    events: Arc<EventLog>,
    budget: Mutex<EventBudget>,
}

/// The listener `address` (`[HOST]:PORT[?options]`) asks for (port 0: any free port), and
/// whether it takes probes; the error names the address as written, and what the port takes
/// from elsewhere (its mode; passphrases and stream IDs are each caller's and route's).
pub fn port_endpoint(address: &str) -> Result<(SrtEndpoint, bool), String> {
    let (hostport, query, probe) =
        port_keys(address).map_err(|why| format!("`{address}`: {why}"))?;
    for part in query.split('&') {
        let key = part
            .split('=')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let why = match key.as_str() {
            "mode" => "the shared SRT port is a listener: its address takes no `mode`",
            "passphrase" => {
                "the shared SRT port takes its passphrase from each route \
                 (srt-shared://?passphrase=…), not from its address"
            }
            "streamid" => {
                "each caller's stream ID chooses its route on the shared SRT port: its address \
                 takes no `streamid`"
            }
            _ => continue,
        };
        return Err(why.into());
    }
    // Port 0 (any free port) is not a URI's port: read as 1, bound as 0.
    let any_port = hostport.ends_with(":0");
    let hostport = match any_port {
        true => format!("{}1", &hostport[..hostport.len() - 1]),
        false => hostport.to_string(),
    };
    let uri = match query.is_empty() {
        true => format!("srt://{hostport}?mode=listener"),
        false => format!("srt://{hostport}?mode=listener&{query}"),
    };
    match crate::uri::Endpoint::parse(&uri, crate::uri::Role::Input) {
        Ok(crate::uri::Endpoint::Srt(mut e)) if e.mode == SrtMode::Listener => {
            if any_port {
                e.port = 0;
            }
            Ok((e, probe))
        }
        Ok(_) => Err(format!("`{address}` is not [HOST]:PORT to listen on")),
        // Named as written (the URI is castway's own, with port 0 read as 1).
        Err(e) => Err(e.to_string().replace(&uri, address)),
    }
}

/// `address` as `HOST:PORT`, its srt:// options, and whether it takes probes (`probe=on|off`,
/// the port's own key; on unless off).
fn port_keys(address: &str) -> Result<(&str, String, bool), String> {
    let (hostport, query) = address.split_once('?').unwrap_or((address, ""));
    let mut probe = true;
    let mut options = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case(PROBE) => match v {
                "on" | "1" | "true" => {}
                "off" | "0" | "false" => probe = false,
                _ => return Err(format!("`{part}` must be `{PROBE}=on` or `{PROBE}=off`")),
            },
            _ => options.push(part),
        }
    }
    Ok((hostport, options.join("&"), probe))
}

/// The shared SRT port; closed when dropped.
pub struct SrtPort {
    inner: Arc<PortInner>,
    /// The probe timer (`end_overdue`), when the port takes probes.
    timer: Option<std::thread::JoinHandle<()>>,
}

impl SrtPort {
    /// Listens on `address` (`[HOST]:PORT`, with srt:// socket options as a query:
    /// `:8890?latency=200`) for the routes of `directory`; refusals go to `events`.
    pub fn open(
        address: &str,
        directory: Directory,
        events: Arc<EventLog>,
    ) -> Result<SrtPort, String> {
        let (ep, probe) = port_endpoint(address)?;
        let bind = resolve(&ep.bind_host(), ep.port)?;
        let mut first = Socket::new()?;
        first.configure(&ep)?;
        first.batch_threads();
        first.bind_shared(bind)?;
        // Port 0: the others join the port the first one got.
        let address = first.local_address().unwrap_or(bind);
        let mut sockets = vec![first];
        for _ in 1..RECEIVERS {
            let mut socket = Socket::new()?;
            socket.configure(&ep)?;
            socket.batch_threads();
            socket.bind_shared(address)?;
            sockets.push(socket);
        }
        let inner = Arc::new_cyclic(|me| PortInner {
            me: me.clone(),
            address,
            directory,
            worker: io::pick(),
            listeners: Mutex::new(Vec::new()),
            counts: Counts::default(),
            probe,
            probes: Arc::default(),
            events,
            budget: Mutex::new(EventBudget::default()),
        });
        // libsrt keeps the pointer for the listeners' life; a weak reference leaked once per
        // port (a few bytes) stays valid however the callback races with the port's end.
        let opaque = Box::into_raw(Box::new(Arc::downgrade(&inner))).cast::<c_void>();
        let handler: Weak<dyn Handler> = Arc::downgrade(&inner) as Weak<PortInner>;
        for socket in &sockets {
            // SAFETY: a listening socket of ours, a function of the right type, a pointer
            // that is never freed.
            let r = unsafe { ffi::srt_listen_callback(socket.id(), on_listen, opaque) };
            if r == ffi::SRT_ERROR {
                return Err("cannot set the listen callback of the shared SRT port".into());
            }
            socket.listen(LISTEN_BACKLOG)?;
        }
        let mut listeners = lock(&inner.listeners);
        for socket in sockets {
            (inner.worker).add(socket.id(), SRT_EPOLL_IN | SRT_EPOLL_ERR, handler.clone());
            listeners.push(socket);
        }
        drop(listeners);
        let mut port = SrtPort { inner, timer: None };
        if probe {
            let (probes, worker) = (port.inner.probes.clone(), port.inner.worker.clone());
            let timer = std::thread::Builder::new()
                .name("castway-srt-probes".into())
                .spawn(move || end_overdue(&probes, &worker))
                .map_err(|e| format!("cannot start the probe timer: {e}"))?;
            port.timer = Some(timer);
        }
        gst::info!(CAT, "shared SRT port listening on {address}");
        Ok(port)
    }

    /// The address it listens on (the port chosen, when asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.inner.address
    }

    pub fn stats(&self) -> SrtPortStats {
        let c = &self.inner.counts;
        let refused = |r: Refusal| c.refused[refusal_index(r)].load(Relaxed);
        SrtPortStats {
            address: self.inner.address.to_string(),
            publishers_accepted: c.publishers.load(Relaxed),
            readers_accepted: c.readers.load(Relaxed),
            refused_bad_request: refused(Refusal::BadRequest),
            refused_unauthorized: refused(Refusal::Unauthorized),
            refused_forbidden: refused(Refusal::Forbidden),
            refused_not_found: refused(Refusal::NotFound),
            refused_conflict: refused(Refusal::Conflict),
            refused_unavailable: refused(Refusal::Unavailable),
            refused_bad_secret: c.bad_secret.load(Relaxed),
            refused_unsecure: c.unsecure.load(Relaxed),
            publishers_dropped: c.dropped.load(Relaxed),
            probes_accepted: c.probes.load(Relaxed),
            probe_bytes: c.probe_bytes.load(Relaxed),
            probes_idle_closed: self.inner.probes.idle_closed.load(Relaxed),
            probes_active: lock(&self.inner.probes.list).peers.len() as u64,
            refusal_events_missed: c.refusal_events_missed.load(Relaxed),
        }
    }
}

impl Drop for SrtPort {
    fn drop(&mut self) {
        for s in lock(&self.inner.listeners).drain(..) {
            self.inner.worker.remove(s.id());
        }
        let mut probes = lock(&self.inner.probes.list);
        probes.closed = true;
        for p in probes.peers.drain(..) {
            self.inner.worker.remove(p.socket.id());
        }
        drop(probes);
        self.inner.probes.changed.notify_all();
        if let Some(timer) = self.timer.take() {
            let _ = timer.join();
        }
    }
}

impl PortInner {
    /// Judges a caller from its stream ID (libsrt's receiving thread, before the handshake
    /// completes): sets its passphrase, or refuses it with the reason. A caller let in is
    /// watched for libsrt's own refusal of its passphrase.
    fn admit(self: &Arc<Self>, ns: SRTSOCKET, peer: &str, stream_id: &str) -> Result<(), Refusal> {
        if self.is_probe(stream_id) {
            // Checked again when accepted (callers knocking at once may pass here together).
            if lock(&self.probes.list).peers.len() >= MAX_PROBES {
                gst::warning!(
                    CAT,
                    "refused {peer}: probe: {}",
                    refusal_text(Refusal::Unavailable)
                );
                return Err(Refusal::Unavailable);
            }
            gst::info!(CAT, "{peer}: probe: let in");
            return Ok(());
        }
        let request = match streamid::parse(stream_id) {
            Ok(r) => r,
            Err(why) => {
                // The stream ID itself is not logged: it may carry a password.
                gst::warning!(
                    CAT,
                    "refused {peer}: its stream ID: {why} ({})",
                    refusal_text(Refusal::BadRequest)
                );
                return Err(Refusal::BadRequest);
            }
        };
        let mode = match request.mode {
            Mode::Publish => "publish",
            Mode::Read => "read",
        };
        let user = request.user.as_deref().unwrap_or("-");
        let (admission, side) = self.directory.judge(&request, ns).inspect_err(|r| {
            gst::warning!(
                CAT,
                "refused {peer}: route `{}`, {mode}, user {user}: {}",
                request.route,
                refusal_text(*r)
            );
        })?;
        let set = |opt, ptr: *const c_void, len| {
            // SAFETY: the new socket libsrt handed us, a value valid for its length.
            unsafe { ffi::srt_setsockflag(ns, opt, ptr, len) }
        };
        if let Some(ms) = admission.latency_ms {
            // Before the handshake ends, as on a listener: the caller's latency is negotiated
            // with it (the greater wins).
            let ms = ms as i32;
            if set(ffi::SRTO_LATENCY, (&ms as *const i32).cast(), 4) == ffi::SRT_ERROR {
                gst::warning!(
                    CAT,
                    "{peer}: route `{}`: its latency cannot be set",
                    request.route
                );
            }
        }
        if let Some((p, keylen)) = &admission.passphrase {
            let keylen = *keylen as i32;
            let ok = set(ffi::SRTO_PASSPHRASE, p.as_ptr().cast(), p.len() as c_int)
                != ffi::SRT_ERROR
                && set(ffi::SRTO_PBKEYLEN, (&keylen as *const i32).cast(), 4) != ffi::SRT_ERROR;
            if !ok {
                if let Side::Input(i) = &side {
                    i.upgrade().inspect(|i| i.release(ns));
                }
                // A user's password that cannot be a passphrase (10 to 79 bytes).
                gst::warning!(
                    CAT,
                    "refused {peer}: route `{}`, {mode}, user {user}: its passphrase cannot be set",
                    request.route
                );
                return Err(Refusal::Unauthorized);
            }
        }
        gst::info!(
            CAT,
            "{peer}: route `{}`, {mode}, user {user}: let in",
            request.route
        );
        let port = Arc::downgrade(self);
        let who = format!("{peer}: route `{}`, {mode}, user {user}", request.route);
        let (peer, stream_id) = (peer.to_string(), stream_id.to_string());
        srt_log::watch(Watch {
            socket: ns,
            on_rejected: Box::new(move |why| {
                if let Side::Input(i) = &side {
                    i.upgrade().inspect(|i| i.release(ns));
                }
                let Some(port) = port.upgrade() else {
                    return;
                };
                let (count, name, text) = match why {
                    Rejection::BadSecret => (
                        &port.counts.bad_secret,
                        "bad_secret",
                        "wrong passphrase (bad secret)",
                    ),
                    Rejection::Unsecure => (
                        &port.counts.unsecure,
                        "unsecure",
                        "a passphrase on one side only (unsecure)",
                    ),
                };
                count.fetch_add(1, Relaxed);
                gst::warning!(CAT, "refused {who}: {text}");
                port.report_refusal(name, &peer, &stream_id, Some(&request));
            }),
        });
        Ok(())
    }

    /// Reports a refusal as an `srt_refused` event, unless this second's budget is spent
    /// (`REFUSAL_EVENTS_PER_SECOND`; then it is counted). `reason` is its name in the stats
    /// (`not_found`, `bad_secret`, …); the stream ID is shown redacted, and not at all when it
    /// could not be read (in an unknown form a password cannot be told apart).
    fn report_refusal(
        &self,
        reason: &str,
        peer: &str,
        stream_id: &str,
        request: Option<&StreamRequest>,
    ) {
        if !lock(&self.budget).allow(Instant::now()) {
            self.counts.refusal_events_missed.fetch_add(1, Relaxed);
            return;
        }
        let readable = request.is_some() || stream_id == PROBE;
        self.events.push(Event {
            route: request.map(|r| r.route.clone()),
            input: request.and_then(|r| r.input.clone()),
            reason: Some(reason.to_string()),
            address: Some(peer.to_string()),
            stream_id: readable.then(|| crate::uri::redact_stream_id(stream_id)),
            user: request.and_then(|r| r.user.clone()),
            ..Event::new(Kind::SrtRefused)
        });
    }

    /// Whether a caller of `stream_id` is a probe peer: stream ID `probe`, taken by no route.
    fn is_probe(&self, stream_id: &str) -> bool {
        let routes = lock(&self.directory.routes);
        let on_port = routes
            .get(PROBE)
            .is_some_and(|e| !e.publish.is_empty() || e.read.is_some());
        self.probe && stream_id == PROBE && !on_port
    }

    /// Serves a probe peer: what it sends is counted and discarded until it leaves, or the
    /// timer ends it (idle for `PROBE_IDLE`, or past `PROBE_MAX`); refused (closed) when
    /// `MAX_PROBES` are served.
    fn take_probe(&self, socket: Socket, peer: &str) {
        let mut probes = lock(&self.probes.list);
        if probes.peers.len() >= MAX_PROBES {
            let r = Refusal::Unavailable;
            self.counts.refused[refusal_index(r)].fetch_add(1, Relaxed);
            gst::warning!(CAT, "dropped {peer}: probe: {}", refusal_text(r));
            drop(probes);
            self.report_refusal(refusal_name(r), peer, PROBE, None);
            return;
        }
        self.counts.probes.fetch_add(1, Relaxed);
        gst::info!(CAT, "{peer}: probe connected");
        let handler: Weak<dyn Handler> = self.me.clone();
        (self.worker).add(socket.id(), SRT_EPOLL_IN | SRT_EPOLL_ERR, handler);
        let now = Instant::now();
        probes.peers.push(Probe {
            socket,
            since: now,
            heard: now,
        });
        drop(probes);
        self.probes.changed.notify_all();
    }

    /// Reads what a probe peer sent (discarded, counted); ends it when it broke or left.
    fn serve_probe(&self, socket: SRTSOCKET, events: c_int) {
        let mut probes = lock(&self.probes.list);
        let mut buf = [0u8; crate::srt::socket::MAX_PAYLOAD];
        let mut ended = events & SRT_EPOLL_ERR != 0;
        if let Some(p) = probes.peers.iter_mut().find(|p| p.socket.id() == socket) {
            // Bounded: one wake reads what a few milliseconds bring.
            for _ in 0..64 {
                match p.socket.recv(&mut buf) {
                    Io::Done(n) => {
                        self.counts.probe_bytes.fetch_add(n as u64, Relaxed);
                        p.heard = Instant::now();
                    }
                    Io::WouldBlock => break,
                    Io::Failed(_) => {
                        ended = true;
                        break;
                    }
                }
            }
        }
        probes.peers.retain(|p| {
            let gone = p.socket.id() == socket && ended;
            if gone {
                self.worker.remove(socket);
                let peer = p.socket.peer().unwrap_or_default();
                gst::info!(CAT, "probe {peer} ended: it left");
            }
            !gone
        });
    }

    /// Takes the callers let in on `listener` and hands each to its route.
    fn accept(&self, listener: SRTSOCKET) {
        let listeners = lock(&self.listeners);
        let Some(listener) = listeners.iter().find(|l| l.id() == listener) else {
            return;
        };
        while let Some(socket) = listener.accept() {
            let stream_id = socket.stream_id().unwrap_or_default();
            let peer = socket.peer().unwrap_or_default();
            if self.is_probe(&stream_id) {
                self.take_probe(socket, &peer);
                continue;
            }
            let Ok(request) = streamid::parse(&stream_id) else {
                continue;
            };
            // Judged again: the route may have changed since the callback let it in.
            match self.directory.judge(&request, socket.id()) {
                Ok((_, Side::Input(i))) => match i.upgrade() {
                    Some(i) if i.adopt(socket) => {
                        self.counts.publishers.fetch_add(1, Relaxed);
                    }
                    _ => {
                        self.counts.dropped.fetch_add(1, Relaxed);
                        gst::warning!(
                            CAT,
                            "dropped {peer}: route `{}` did not take the publisher (stopping, \
                             or one is live)",
                            request.route
                        );
                        self.report_refusal("dropped", &peer, &stream_id, Some(&request));
                    }
                },
                Ok((_, Side::Output(o))) => match o.upgrade() {
                    Some(o) if o.adopt(socket, Some(stream_id.clone())) => {
                        self.counts.readers.fetch_add(1, Relaxed);
                    }
                    _ => gst::info!(CAT, "{peer}: route `{}` is stopping", request.route),
                },
                Err(r) => {
                    gst::warning!(
                        CAT,
                        "dropped {peer}: route `{}`: {}",
                        request.route,
                        refusal_text(r)
                    );
                    self.counts.refused[refusal_index(r)].fetch_add(1, Relaxed);
                    self.report_refusal(refusal_name(r), &peer, &stream_id, Some(&request));
                }
            }
        }
    }
}

impl Handler for PortInner {
    fn ready(&self, socket: SRTSOCKET, events: c_int) {
        let listener = lock(&self.listeners).iter().any(|l| l.id() == socket);
        if listener {
            self.accept(socket);
        } else {
            self.serve_probe(socket, events);
        }
    }
}

/// libsrt's listen callback (`srt_listen_callback_fn`).
unsafe extern "C" fn on_listen(
    opaque: *mut c_void,
    ns: SRTSOCKET,
    _hsversion: c_int,
    peeraddr: *const libc::sockaddr,
    streamid: *const c_char,
) -> c_int {
    // SAFETY: `opaque` is the leaked Weak of `SrtPort::open`.
    let weak = unsafe { &*(opaque as *const Weak<PortInner>) };
    let Some(port) = weak.upgrade() else {
        return -1;
    };
    // SAFETY: libsrt passes the caller's address and a NUL-terminated stream ID (or null).
    let peer = unsafe { sockaddr_string(peeraddr) }.unwrap_or_default();
    let stream_id = if streamid.is_null() {
        String::new()
    } else {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(streamid) }
            .to_string_lossy()
            .into_owned()
    };
    // Never unwind into libsrt.
    let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        port.admit(ns, &peer, &stream_id)
    }))
    .unwrap_or(Err(Refusal::BadRequest));
    match verdict {
        Ok(()) => 0,
        Err(r) => {
            port.counts.refused[refusal_index(r)].fetch_add(1, Relaxed);
            // SAFETY: the new socket libsrt handed us.
            unsafe { ffi::srt_setrejectreason(ns, r.code()) };
            let request = match port.is_probe(&stream_id) {
                true => None,
                false => streamid::parse(&stream_id).ok(),
            };
            port.report_refusal(refusal_name(r), &peer, &stream_id, request.as_ref());
            -1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(pass: Option<&str>, users: &[(&str, &str)]) -> Access {
        Access {
            passphrase: pass.map(String::from),
            pbkeylen: 16,
            users: (users.iter())
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .collect(),
            keys: false,
            latency_ms: None,
        }
    }

    fn no_key(_: &str) -> Option<bool> {
        None
    }

    fn ask(s: &str) -> StreamRequest {
        streamid::parse(s).unwrap()
    }

    #[test]
    fn callers_are_judged_by_route_mode_user_and_live_publisher() {
        let publish = access(Some("routepassphrase"), &[("cam", "campassword1")]);
        let read = access(None, &[("viewer", "viewerpassword")]);
        let d = |s: &str, live| decide(Some(&publish), Some(&read), &ask(s), live, &no_key);
        // MediaMTX's form carries the password; the connection uses the route's passphrase.
        assert_eq!(
            d("publish:news:cam:campassword1", false)
                .unwrap()
                .passphrase,
            Some(("routepassphrase".into(), 16))
        );
        // SRT's form names the user: its password is the connection's passphrase.
        assert_eq!(
            d("#!::r=news,m=publish,u=cam", false).unwrap().passphrase,
            Some(("campassword1".into(), 16))
        );
        assert_eq!(
            d("publish:news:cam:wrong", false),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(d("publish:news", false), Err(Refusal::Unauthorized));
        assert_eq!(
            d("publish:news:nobody:x", false),
            Err(Refusal::Unauthorized)
        );
        // A reader who may not publish, and a publisher who may not read, having proved who
        // they are.
        assert_eq!(
            d("publish:news:viewer:viewerpassword", false),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            d("read:news:cam:campassword1", false),
            Err(Refusal::Forbidden)
        );
        // Not having proved it (SRT's form: the password is the passphrase, checked by libsrt
        // after the stream ID), a user of the other side is refused as one that does not exist.
        for s in [
            "#!::r=news,u=cam",
            "#!::r=news,m=publish,u=viewer",
            "#!::r=news,m=publish,u=nobody",
            "publish:news:viewer:wrong",
        ] {
            assert_eq!(d(s, false), Err(Refusal::Unauthorized), "{s}");
        }
        assert_eq!(
            d("publish:news:cam:campassword1", true),
            Err(Refusal::Conflict)
        );
        // Bad credentials are told before a live publisher is.
        assert_eq!(
            d("publish:news:cam:wrong", true),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            d("read:news:viewer:viewerpassword", true)
                .unwrap()
                .passphrase,
            None
        );
    }

    #[test]
    fn api_keys_are_users_where_the_side_takes_them() {
        let mut publish = access(None, &[("cam", "campassword1")]);
        publish.keys = true;
        let mut read = access(None, &[]);
        read.keys = true;
        let dir = Directory::default();
        dir.set_keys(&[
            (sha256_hex("operator-secret"), "operator".into()),
            (sha256_hex("viewer-secret"), "viewer".into()),
        ]);
        let key = |p: &str| dir.key(p);
        let d = |s: &str| decide(Some(&publish), Some(&read), &ask(s), false, &key);
        assert!(d("publish:news:anyone:operator-secret").is_ok());
        assert_eq!(
            d("publish:news:anyone:viewer-secret"),
            Err(Refusal::Forbidden)
        );
        assert!(d("read:news:anyone:viewer-secret").is_ok());
        assert_eq!(d("read:news:anyone:revoked"), Err(Refusal::Unauthorized));
        assert_eq!(d("news"), Err(Refusal::Unauthorized));
        // Users still work beside keys.
        assert!(d("publish:news:cam:campassword1").is_ok());
        // Where keys are not taken, a key is no password.
        publish.keys = false;
        let d = |s: &str| decide(Some(&publish), Some(&read), &ask(s), false, &key);
        assert_eq!(
            d("publish:news:anyone:operator-secret"),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_route_without_that_side_is_forbidden_and_no_route_is_not_found() {
        let open = access(None, &[]);
        assert_eq!(
            decide(Some(&open), None, &ask("news"), false, &no_key),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            decide(None, None, &ask("publish:news"), false, &no_key),
            Err(Refusal::NotFound)
        );
        assert_eq!(
            decide(None, Some(&open), &ask("news"), false, &no_key),
            Ok(Admission {
                passphrase: None,
                latency_ms: None
            })
        );
    }

    #[test]
    fn a_publisher_let_in_and_then_dropped_by_its_route_is_an_srt_refused_event() {
        gst::init().unwrap();
        // An input gone (its route stopping) still on the port: the handshake lets the
        // publisher in, and the route does not take it once connected.
        let directory = Directory::default();
        let _place = directory
            .add("r", "in", Side::Input(Weak::new()), access(None, &[]))
            .unwrap();
        let events = Arc::new(EventLog::default());
        let port = SrtPort::open("127.0.0.1:0", directory, events.clone()).unwrap();
        let caller = Socket::new().unwrap();
        caller
            .set_str(ffi::SRTO_STREAMID, "publish:r", "streamid")
            .unwrap();
        caller.connect(port.address()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let refused = |e: &Event| e.kind == Kind::SrtRefused;
        assert!(
            events.wait_for(0, deadline, refused),
            "no srt_refused event"
        );
        let batch = events.read(0, 10);
        let event = batch.events.iter().find(|e| refused(e)).unwrap();
        assert_eq!(event.reason.as_deref(), Some("dropped"));
        assert_eq!(event.route.as_deref(), Some("r"));
        assert!(event.address.is_some() && event.stream_id.is_some());
        assert_eq!(port.stats().publishers_dropped, 1);
        assert_eq!(port.stats().publishers_accepted, 0);
    }
}
