//! The gateway's event log: one numbered sequence of typed events — what the routes' control
//! threads notice (state changes, lost and recovered inputs, switches, outputs connecting and
//! failing, SRT callers, stream-analysis conditions) and what the control plane reports
//! (routes, templates and keys created, changed or deleted) — kept in a bounded ring.
//!
//! Every event gets the next sequence number (from 1, never reused while the log lives) and
//! the wall-clock time when it is pushed, or the time its reporter gives (`push_at`: a
//! stream-analysis condition is dated when it started or cleared, which may be up to a second
//! before the control thread reports it; so `at` follows `seq` only nearly). Readers ask for the events numbered above the last
//! one they saw and may wait for them on the log's condition variable; one that falls behind
//! by more than the ring holds learns how many it missed (`Batch::oldest`).
//!
//! Pushing takes the log's one lock for a `VecDeque` push and a `notify_all`: it never waits
//! for a reader. The lock is a leaf (taken under `Route.inner`, never the other way round),
//! and nothing pushes per packet.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many events a gateway keeps unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// The most events a log may keep (about 300 bytes each).
pub const MAX_CAPACITY: usize = 1_000_000;

/// What happened. `as_str` is the name every API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// The route's state changed (`from` → `to`: `waiting`, `live`, `slate`, `stopped`).
    #[default]
    RouteState,
    /// An input the switch counted as delivering no longer does (`reason`: `lost`, `error`,
    /// `eos`; `error` the input's last error, if any).
    InputLost,
    /// A lost input delivers again.
    InputRecovered,
    /// The switch changed what goes out (`from`, `to`, `reason`).
    Switch,
    /// An output is up: a UDP or file output running, an SRT caller connected, an SRT
    /// listener with at least one caller.
    OutputConnected,
    /// An output that was up (or failing) is running without a peer.
    OutputDisconnected,
    /// An output failed and is retrying (`error`).
    OutputFailing,
    /// A caller connected to an SRT listener output (`address`, `stream_id`).
    CallerJoined,
    /// A caller of an SRT listener output went away.
    CallerLeft,
    /// A stream-analysis (TR 101 290) condition of an input started (`active`) or cleared
    /// (`condition`, `error` with details).
    Analysis,
    RouteCreated,
    /// A route's spec, desired state or manual lock changed (`reason` says which).
    RouteUpdated,
    RouteDeleted,
    TemplateCreated,
    TemplateUpdated,
    TemplateDeleted,
    KeyCreated,
    KeyRevoked,
    /// A recording opened a segment (`segment`: JSON with its `path`, `format`, `start`).
    SegmentOpened,
    /// A recording closed a segment (`segment`: its catalog record as JSON; `error` if a
    /// write failed and the segment ends early).
    SegmentClosed,
    /// A recording could not write, open or rename a segment (`error`); or the control
    /// plane's retention could not delete one (`error` names it; no `segment`).
    RecordingError,
    /// The control plane's retention deleted a segment (`segment`: JSON with its `path` and
    /// `reason`).
    RecordingDeleted,
    /// The shared SRT port refused a caller (`reason`: `bad_request`, `unauthorized`,
    /// `forbidden`, `not_found`, `conflict`, `unavailable`, `bad_secret`, `unsecure`, or
    /// `dropped`: let in, then not taken by its route once connected; `address`,
    /// `stream_id`, and `route`, `user` when it named them). Rate-limited: the port counts
    /// what it does not report.
    SrtRefused,
}

impl Kind {
    pub const ALL: [Kind; 23] = [
        Kind::RouteState,
        Kind::InputLost,
        Kind::InputRecovered,
        Kind::Switch,
        Kind::OutputConnected,
        Kind::OutputDisconnected,
        Kind::OutputFailing,
        Kind::CallerJoined,
        Kind::CallerLeft,
        Kind::Analysis,
        Kind::RouteCreated,
        Kind::RouteUpdated,
        Kind::RouteDeleted,
        Kind::TemplateCreated,
        Kind::TemplateUpdated,
        Kind::TemplateDeleted,
        Kind::KeyCreated,
        Kind::KeyRevoked,
        Kind::SegmentOpened,
        Kind::SegmentClosed,
        Kind::RecordingError,
        Kind::RecordingDeleted,
        Kind::SrtRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RouteState => "route_state",
            Kind::InputLost => "input_lost",
            Kind::InputRecovered => "input_recovered",
            Kind::Switch => "switch",
            Kind::OutputConnected => "output_connected",
            Kind::OutputDisconnected => "output_disconnected",
            Kind::OutputFailing => "output_failing",
            Kind::CallerJoined => "caller_joined",
            Kind::CallerLeft => "caller_left",
            Kind::Analysis => "analysis",
            Kind::RouteCreated => "route_created",
            Kind::RouteUpdated => "route_updated",
            Kind::RouteDeleted => "route_deleted",
            Kind::TemplateCreated => "template_created",
            Kind::TemplateUpdated => "template_updated",
            Kind::TemplateDeleted => "template_deleted",
            Kind::KeyCreated => "key_created",
            Kind::KeyRevoked => "key_revoked",
            Kind::SegmentOpened => "segment_opened",
            Kind::SegmentClosed => "segment_closed",
            Kind::RecordingError => "recording_error",
            Kind::RecordingDeleted => "recording_deleted",
            Kind::SrtRefused => "srt_refused",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the control plane reports this kind (through `Gateway::emit`); the data plane
    /// reports the others itself (and `recording_error` too).
    pub fn from_control_plane(self) -> bool {
        matches!(
            self,
            Kind::RouteCreated
                | Kind::RouteUpdated
                | Kind::RouteDeleted
                | Kind::TemplateCreated
                | Kind::TemplateUpdated
                | Kind::TemplateDeleted
                | Kind::KeyCreated
                | Kind::KeyRevoked
                | Kind::RecordingError
                | Kind::RecordingDeleted
        )
    }
}

/// One event. Which optional fields a kind sets is documented on [`Kind`] and in
/// docs/events.md; the bindings carry the set ones by name ([`Event::fields`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// Counts from 1; set by [`EventLog::push`].
    pub seq: u64,
    /// Seconds since the Unix epoch; set by [`EventLog::push`] (or given to
    /// [`EventLog::push_at`]).
    pub at_unix: f64,
    pub kind: Kind,
    /// The route it is about (None for templates and keys).
    pub route: Option<String>,
    /// An input id (input events, analysis).
    pub input: Option<String>,
    /// An output id (output and caller events).
    pub output: Option<String>,
    /// A switch's source (input id, `slate`), or the route's previous state.
    pub from: Option<String>,
    /// A switch's target, or the route's new state.
    pub to: Option<String>,
    pub reason: Option<String>,
    pub error: Option<String>,
    /// An SRT caller's `IP:PORT`.
    pub address: Option<String>,
    /// The stream ID an SRT caller asked for.
    pub stream_id: Option<String>,
    /// The user an SRT caller of the shared port named.
    pub user: Option<String>,
    /// A stream-analysis condition (e.g. `continuity_count_error`).
    pub condition: Option<String>,
    /// A stream-analysis condition started (true) or cleared (false).
    pub active: Option<bool>,
    /// A template's or key's name.
    pub name: Option<String>,
    /// The id of the key created or revoked.
    pub key: Option<String>,
    /// The API key that made a control-plane change.
    pub key_id: Option<String>,
    /// A recording's segment, as JSON (segment events).
    pub segment: Option<String>,
}

/// A field's value as the bindings carry it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Text(&'a str),
    Flag(bool),
}

/// The names of the optional fields, as [`Event::fields`] spells them: `active` is a flag, the
/// others are text ([`Event::set`]).
pub const FIELDS: [&str; 16] = [
    "route",
    "input",
    "output",
    "from",
    "to",
    "reason",
    "error",
    "address",
    "stream_id",
    "user",
    "condition",
    "name",
    "key",
    "key_id",
    "segment",
    "active",
];

impl Event {
    pub fn new(kind: Kind) -> Event {
        Event {
            kind,
            ..Event::default()
        }
    }

    fn text_slots(&mut self) -> [(&'static str, &mut Option<String>); 15] {
        [
            ("route", &mut self.route),
            ("input", &mut self.input),
            ("output", &mut self.output),
            ("from", &mut self.from),
            ("to", &mut self.to),
            ("reason", &mut self.reason),
            ("error", &mut self.error),
            ("address", &mut self.address),
            ("stream_id", &mut self.stream_id),
            ("user", &mut self.user),
            ("condition", &mut self.condition),
            ("name", &mut self.name),
            ("key", &mut self.key),
            ("key_id", &mut self.key_id),
            ("segment", &mut self.segment),
        ]
    }

    /// Sets the text field `name`; false if there is no such field.
    pub fn set(&mut self, name: &str, value: String) -> bool {
        if name == "active" {
            return false;
        }
        match self.text_slots().into_iter().find(|(n, _)| *n == name) {
            Some((_, slot)) => {
                *slot = Some(value);
                true
            }
            None => false,
        }
    }

    /// The fields that are set, by name, in a fixed order (`seq`, `at` and `kind` are not
    /// among them).
    pub fn fields(&self) -> Vec<(&'static str, Value<'_>)> {
        let texts = [
            ("route", &self.route),
            ("input", &self.input),
            ("output", &self.output),
            ("from", &self.from),
            ("to", &self.to),
            ("reason", &self.reason),
            ("error", &self.error),
            ("address", &self.address),
            ("stream_id", &self.stream_id),
            ("user", &self.user),
            ("condition", &self.condition),
            ("name", &self.name),
            ("key", &self.key),
            ("key_id", &self.key_id),
            ("segment", &self.segment),
        ];
        let mut out: Vec<(&'static str, Value<'_>)> = texts
            .into_iter()
            .filter_map(|(n, v)| v.as_deref().map(|s| (n, Value::Text(s))))
            .collect();
        if let Some(a) = self.active {
            out.push(("active", Value::Flag(a)));
        }
        out
    }
}

/// What a read returns: the events numbered above `after` (at most `limit`), and where the log
/// stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub events: Vec<Event>,
    /// The number of the oldest event still kept (`latest + 1` when none is). A reader that
    /// asked for events above `after` missed `oldest - 1 - after` of them when that is above 0.
    pub oldest: u64,
    /// The number of the latest event (0: none yet).
    pub latest: u64,
    /// The log was closed (the gateway closes): waiting is over.
    pub closed: bool,
}

impl Batch {
    /// How many events numbered above `after` are gone from the ring.
    pub fn missed(&self, after: u64) -> u64 {
        self.oldest.saturating_sub(after.saturating_add(1))
    }
}

struct Ring {
    events: VecDeque<Event>,
    capacity: usize,
    latest: u64,
    closed: bool,
}

impl Ring {
    fn oldest(&self) -> u64 {
        self.events.front().map_or(self.latest + 1, |e| e.seq)
    }

    /// The kept events numbered above `after`: the ring holds consecutive numbers, so this is
    /// a slice from an index, not a search.
    fn after(&self, after: u64) -> impl Iterator<Item = &Event> + '_ {
        let skip = after.saturating_add(1).saturating_sub(self.oldest());
        self.events
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }

    fn batch(&self, after: u64, limit: usize) -> Batch {
        Batch {
            events: self.after(after).take(limit).cloned().collect(),
            oldest: self.oldest(),
            latest: self.latest,
            closed: self.closed,
        }
    }
}

/// The bounded, numbered event log of a gateway. Thread-safe.
pub struct EventLog {
    ring: Mutex<Ring>,
    /// Signalled (with `ring`) on every push and at close.
    changed: Condvar,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new(DEFAULT_CAPACITY)
    }
}

impl EventLog {
    /// A log keeping the last `capacity` events (1 ..= `MAX_CAPACITY`; clamped).
    pub fn new(capacity: usize) -> EventLog {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        EventLog {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.min(1024)),
                capacity,
                latest: 0,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn capacity(&self) -> usize {
        self.ring().capacity
    }

    /// Numbers, stamps and keeps `event` (dropping the oldest when full); returns its number
    /// and time. Never waits for a reader.
    pub fn push(&self, event: Event) -> (u64, f64) {
        self.push_at(event, None)
    }

    /// Like `push`, dated `at` (Unix time) when given: when it happened rather than when it is
    /// reported.
    pub fn push_at(&self, mut event: Event, at: Option<f64>) -> (u64, f64) {
        let at = at.unwrap_or_else(unix_now);
        event.at_unix = at;
        let mut ring = self.ring();
        ring.latest += 1;
        event.seq = ring.latest;
        if ring.events.len() == ring.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event);
        let seq = ring.latest;
        drop(ring);
        self.changed.notify_all();
        (seq, at)
    }

    /// The kept events numbered above `after`, at most `limit`, without waiting.
    pub fn read(&self, after: u64, limit: usize) -> Batch {
        self.ring().batch(after, limit)
    }

    /// Like `read`, but waits up to `timeout` for an event numbered above `after` when there
    /// is none yet (not once the log is closed). A reader ahead of the log (`after` above
    /// `latest`: a cursor from before a restart) is answered at once: it learns where the log
    /// stands instead of waiting for numbers the log may take long to reach.
    pub fn wait(&self, after: u64, timeout: Duration, limit: usize) -> Batch {
        let deadline = Instant::now() + timeout;
        let mut ring = self.ring();
        loop {
            if ring.latest != after || ring.closed {
                return ring.batch(after, limit);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ring.batch(after, limit);
            }
            ring = self
                .changed
                .wait_timeout(ring, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until an event numbered above `after` for which `wanted` holds is pushed (true),
    /// or until `deadline` or the log's close (false). Events that do not match do not end the
    /// wait.
    pub fn wait_for(&self, after: u64, deadline: Instant, wanted: impl Fn(&Event) -> bool) -> bool {
        let mut seen = after;
        let mut ring = self.ring();
        loop {
            if ring.after(seen).any(&wanted) {
                return true;
            }
            seen = ring.latest;
            let left = deadline.saturating_duration_since(Instant::now());
            if ring.closed || left.is_zero() {
                return false;
            }
            ring = self
                .changed
                .wait_timeout(ring, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The number of the latest event (0: none yet).
    pub fn latest(&self) -> u64 {
        self.ring().latest
    }

    /// Ends every wait, now and later (events may still be pushed and read).
    pub fn close(&self) {
        self.ring().closed = true;
        self.changed.notify_all();
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn on(route: &str) -> Event {
        Event {
            route: Some(route.into()),
            ..Event::new(Kind::Switch)
        }
    }

    #[test]
    fn numbers_count_up_and_the_ring_keeps_the_last() {
        let log = EventLog::new(3);
        for i in 1..=5 {
            assert_eq!(log.push(on("r")).0, i);
        }
        let b = log.read(0, 100);
        assert_eq!(
            b.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!((b.oldest, b.latest), (3, 5));
        assert!(b.events.iter().all(|e| e.at_unix > 1.6e9));
        // Two events after #0 are gone; none after #2 or later.
        assert_eq!(b.missed(0), 2);
        assert_eq!(log.read(2, 100).missed(2), 0);
        assert_eq!(log.read(3, 100).events[0].seq, 4);
        assert_eq!(log.read(4, 1).events.len(), 1);
        assert!(log.read(5, 100).events.is_empty());
        assert!(log.read(99, 100).events.is_empty());
    }

    #[test]
    fn an_event_may_be_dated_when_it_happened() {
        let log = EventLog::new(10);
        assert_eq!(
            log.push_at(on("r"), Some(1_700_000_000.5)),
            (1, 1_700_000_000.5)
        );
        let (_, now) = log.push_at(on("r"), None);
        assert!(now > 1_700_000_001.0);
        let b = log.read(0, 10);
        assert_eq!(b.events[0].at_unix, 1_700_000_000.5);
        assert_eq!(b.events[1].at_unix, now);
    }

    #[test]
    fn an_empty_log_says_where_it_stands() {
        let b = EventLog::new(10).read(0, 10);
        assert_eq!((b.oldest, b.latest, b.missed(0)), (1, 0, 0));
    }

    #[test]
    fn wait_returns_at_the_timeout_without_events() {
        let log = EventLog::new(10);
        let t = Instant::now();
        let b = log.wait(0, Duration::from_millis(50), 10);
        assert!(b.events.is_empty());
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_reader_at_the_largest_number_gets_nothing_and_misses_nothing() {
        let log = EventLog::new(3);
        for _ in 0..5 {
            log.push(on("r"));
        }
        let b = log.read(u64::MAX, 100);
        assert!(b.events.is_empty());
        assert_eq!((b.oldest, b.latest, b.missed(u64::MAX)), (3, 5, 0));
        assert_eq!(log.read(u64::MAX - 1, 100).missed(u64::MAX - 1), 0);
        let t = Instant::now();
        assert!(log
            .wait(u64::MAX, Duration::from_secs(30), 10)
            .events
            .is_empty());
        assert!(!log.wait_for(u64::MAX, Instant::now(), |_| true));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_reader_ahead_of_the_log_is_answered_at_once() {
        let log = EventLog::new(10);
        log.push(on("r"));
        let t = Instant::now();
        let b = log.wait(7, Duration::from_secs(30), 10);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "waited {:?}",
            t.elapsed()
        );
        assert!(b.events.is_empty());
        assert_eq!((b.oldest, b.latest), (1, 1));
    }

    #[test]
    fn wait_wakes_on_a_push_and_on_close() {
        let log = Arc::new(EventLog::new(10));
        let waiter = {
            let log = log.clone();
            std::thread::spawn(move || log.wait(0, Duration::from_secs(30), 10))
        };
        log.push(on("r"));
        let b = waiter.join().unwrap();
        assert_eq!(b.events.len(), 1);

        let waiter = {
            let log = log.clone();
            std::thread::spawn(move || log.wait(1, Duration::from_secs(30), 10))
        };
        log.close();
        let b = waiter.join().unwrap();
        assert!(b.closed && b.events.is_empty());
    }

    #[test]
    fn wait_for_skips_what_does_not_match() {
        let log = Arc::new(EventLog::new(10));
        log.push(on("b"));
        let waiter = {
            let log = log.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                log.wait_for(0, deadline, |e| e.route.as_deref() == Some("a"))
            })
        };
        log.push(on("b"));
        log.push(on("a"));
        assert!(waiter.join().unwrap());
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(!log.wait_for(3, soon, |_| true));
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("nope"), None);
        assert!(Kind::RouteCreated.from_control_plane());
        assert!(!Kind::Switch.from_control_plane() && !Kind::Analysis.from_control_plane());
    }

    #[test]
    fn fields_are_the_set_ones_by_name() {
        let mut e = on("r");
        assert!(e.set("from", "a".into()) && e.set("to", "b".into()));
        assert!(!e.set("nope", "x".into()) && !e.set("active", "x".into()));
        e.active = Some(true);
        assert_eq!(
            e.fields(),
            [
                ("route", Value::Text("r")),
                ("from", Value::Text("a")),
                ("to", Value::Text("b")),
                ("active", Value::Flag(true)),
            ]
        );
        for (name, _) in e.fields() {
            assert!(FIELDS.contains(&name));
        }
    }
}
