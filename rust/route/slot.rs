//! One input or output of a route: its endpoint, its current pipeline, and its restart policy.
//! Owned by the route's `Inner`; only the route's control path touches it.

use std::sync::mpsc::Sender;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::stats::{EndpointStats, InputStats};
use super::{Event, CAT};
use crate::error::Result;
use crate::hub::{Feed, Hub, Tap};
use crate::pipeline::{forward_bus, set_state_bounded, stop_forwarding};
use crate::sink::srt::SrtOutput;
use crate::source::srt::SrtInput;
use crate::srt::refusals::{Refusals, Refused};
use crate::srt::{CallerChange, Callers, Notify};
use crate::stats::{Counters, RateMeter, SrtLinkStats, SrtStats};
use crate::ts::AnalysisStats;
use crate::uri::{Endpoint, Role, SrtMode};
use crate::{sink, source};

/// First delay before restarting a failed endpoint; doubles up to `MAX_BACKOFF`.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// An endpoint that ran this long before failing starts over from `INITIAL_BACKOFF`.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// An input that delivered nothing for this long is shown as `waiting`.
pub(super) const IDLE_AFTER_MS: u64 = 1_000;
/// Time allowed for a pipeline state change before the control path moves on without it.
pub const STATE_CHANGE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Starting,
    Running,
    Retrying,
    Ended,
    Stopped,
    /// A cold standby input, not connected until it is needed.
    Standby,
}

/// An SRT endpoint: its sockets, served by the SRT I/O threads.
enum SrtEnd {
    Input(Arc<SrtInput>),
    Output(Arc<SrtOutput>),
}

impl SrtEnd {
    fn connected(&self) -> bool {
        match self {
            SrtEnd::Input(i) => i.connected(),
            SrtEnd::Output(o) => o.connected(),
        }
    }

    fn stats(&self) -> SrtStats {
        match self {
            SrtEnd::Input(i) => SrtStats::new(i.stats(), Vec::new()),
            SrtEnd::Output(o) => {
                let (link, callers) = o.stats();
                SrtStats::new(link, callers)
            }
        }
    }

    fn check_idle(&self) {
        match self {
            SrtEnd::Input(i) => i.check_idle(),
            SrtEnd::Output(o) => o.check_idle(),
        }
    }

    fn close(&self) {
        match self {
            SrtEnd::Input(i) => i.close(),
            SrtEnd::Output(o) => o.close(),
        }
    }
}

pub(super) struct Slot {
    pub id: String,
    pub role: Role,
    pub endpoint: Endpoint,
    /// Inputs: connected only while needed (`standby=cold`).
    pub cold: bool,
    pub counters: Arc<Counters>,
    meter: RateMeter,
    pipeline: Option<gst::Pipeline>,
    /// Tags bus messages; messages of an older pipeline of this slot are ignored.
    pub generation: u64,
    srt: Option<SrtEnd>,
    callers: Option<Callers>,
    /// An SRT listener's callers libsrt refused for their passphrase (kept across restarts).
    refusals: Option<Arc<Refusals>>,
    pub status: Status,
    pub last_error: Option<String>,
    /// How many times `last_error` was set (an error new since a moment is one counted after).
    pub errors: u64,
    /// Inputs: `errors` when the input was last seen healthy.
    pub errors_when_healthy: u64,
    reconnects: u64,
    backoff: Duration,
    pub restart_at: Option<Instant>,
    running_since: Option<Instant>,
    /// Inputs and the slate: their hub feed (kept across restarts). Outputs: None.
    pub feed: Option<Arc<Feed>>,
    /// Outputs: their attachment to the hub while they run.
    tap: Option<Arc<Tap>>,
    /// UDP inputs: their socket on the I/O threads while they run (no pipeline).
    receiver: Option<source::udp::UdpReceiver>,
    queue_bytes: u64,
    /// How many pipelines this slot started.
    pub starts: u64,
    /// The current pipeline's change to PLAYING failed.
    start_failed: bool,
    /// The byte count when the current pipeline started (to tell a stall from a slow start).
    bytes_at_start: u64,
    /// What the event log was last told about this slot: an input's health (`healthy`,
    /// `lost`), an output's link (see `link`). None: nothing yet.
    pub reported: Option<&'static str>,
    /// Joins and leaves of callers of a pipeline already stopped, not yet reported.
    caller_changes: Vec<CallerChange>,
    /// Inputs: the last stream-analysis condition change reported to the event log ...
    pub analysis_seen: u64,
    /// ... and how many were no longer kept when it looked (`changes_missed`).
    pub analysis_missed: u64,
}

impl Slot {
    pub fn new(
        id: String,
        role: Role,
        endpoint: Endpoint,
        feed: Option<Arc<Feed>>,
        queue_bytes: u64,
    ) -> Slot {
        let counters = feed
            .as_ref()
            .map(|f| f.counters.clone())
            .unwrap_or_default();
        Slot {
            id,
            role,
            endpoint,
            cold: false,
            counters,
            meter: RateMeter::default(),
            pipeline: None,
            generation: 0,
            srt: None,
            callers: None,
            refusals: None,
            status: Status::Stopped,
            last_error: None,
            errors: 0,
            errors_when_healthy: 0,
            reconnects: 0,
            backoff: INITIAL_BACKOFF,
            restart_at: None,
            running_since: None,
            feed,
            tap: None,
            receiver: None,
            queue_bytes,
            bytes_at_start: 0,
            starts: 0,
            start_failed: false,
            reported: None,
            caller_changes: Vec::new(),
            analysis_seen: 0,
            analysis_missed: 0,
        }
    }

    fn pipeline_name(&self, route: &str) -> String {
        format!("castway-{route}-{}", self.id)
    }

    /// Builds a fresh pipeline and sets it playing. Build errors (missing element, missing
    /// file) are returned; failures while running arrive later on the bus.
    pub fn start(
        &mut self,
        route: &str,
        hub: &Arc<Hub>,
        events: &Sender<Event>,
        generation: u64,
        now: Instant,
        shared: &crate::server::srt::Directory,
    ) -> Result<()> {
        let name = self.pipeline_name(route);
        if let (Role::Output, Endpoint::Udp(e)) = (self.role, &self.endpoint) {
            // No pipeline: the hub sends on the socket itself, and it is ready at once. A
            // destination that does not resolve (yet) is retried like a failed pipeline.
            let opened = sink::udp::UdpSender::open(e);
            self.generation = generation;
            self.starts += 1;
            self.bytes_at_start = self.counters.snapshot().bytes;
            self.restart_at = None;
            self.start_failed = false;
            match opened {
                Ok(sender) => {
                    let tap = Tap::udp(self.id.clone(), sender, self.counters.clone());
                    self.attach(hub, Arc::new(tap));
                    self.status = Status::Running;
                    self.running_since = Some(now);
                    gst::info!(
                        CAT,
                        "{route}: started output {} ({})",
                        self.id,
                        self.endpoint
                    );
                }
                Err(why) => {
                    self.status = Status::Starting;
                    self.fail(hub, why.to_string(), now);
                }
            }
            return Ok(());
        }
        if let (Role::Input, Endpoint::Udp(e)) = (self.role, &self.endpoint) {
            // No pipeline: the I/O threads read the socket into the hub, ready at once.
            let feed = self.feed.clone().expect("inputs have a feed");
            feed.reset();
            self.generation = generation;
            self.starts += 1;
            self.bytes_at_start = self.counters.snapshot().bytes;
            self.restart_at = None;
            self.start_failed = false;
            match source::udp::UdpReceiver::open(e, hub.clone(), feed) {
                Ok(receiver) => {
                    self.receiver = Some(receiver);
                    self.status = Status::Running;
                    self.running_since = Some(now);
                    gst::info!(
                        CAT,
                        "{route}: started input {} ({})",
                        self.id,
                        self.endpoint
                    );
                }
                Err(why) => {
                    self.status = Status::Starting;
                    self.fail(hub, why.to_string(), now);
                }
            }
            return Ok(());
        }
        if let Endpoint::Srt(e) = &self.endpoint {
            self.start_srt(e.clone(), route, hub, events, (generation, now), shared);
            return Ok(());
        }
        let (pipeline, tap) = match self.role {
            Role::Input => {
                let feed = self.feed.clone().expect("inputs have a feed");
                let s = source::build(&self.endpoint, &name, hub.clone(), feed)?;
                (s.pipeline, None)
            }
            Role::Output => {
                let s = sink::build(&self.endpoint, &name, self.queue_bytes)?;
                let tap = Arc::new(Tap::new(self.id.clone(), s.appsrc, self.counters.clone()));
                (s.pipeline, Some(tap))
            }
        };
        self.generation = generation;
        self.starts += 1;
        self.bytes_at_start = self.counters.snapshot().bytes;
        if let Some(feed) = &self.feed {
            // A new connection starts a new byte stream: nothing carried over from the last.
            feed.reset();
        }
        let tx = events.clone();
        forward_bus(&pipeline, move |msg| {
            let _ = tx.send(Event::Bus { generation, msg });
        });
        gst::info!(
            CAT,
            "{route}: starting {} {} ({})",
            self.role,
            self.id,
            self.endpoint
        );
        self.pipeline = Some(pipeline.clone());
        self.status = Status::Starting;
        self.restart_at = None;
        if let Some(tap) = tap {
            self.attach(hub, tap);
        }
        self.start_failed = false;
        if let Some(Err(_)) =
            set_state_bounded(&pipeline, gst::State::Playing, STATE_CHANGE_TIMEOUT)
        {
            // The element's error message, with the reason, is on its way over the bus and
            // schedules the retry; should none come, the next tick does.
            gst::info!(CAT, "{route}: {} {} failed to start", self.role, self.id);
            self.start_failed = true;
        }
        Ok(())
    }

    /// Opens an SRT endpoint's sockets: no pipeline, and running at once (listening, or
    /// connecting in the background). It reports a failure as a pipeline's bus would, with an
    /// error message of this generation; a socket that cannot be opened is retried likewise.
    fn start_srt(
        &mut self,
        ep: crate::uri::SrtEndpoint,
        route: &str,
        hub: &Arc<Hub>,
        events: &Sender<Event>,
        (generation, now): (u64, Instant),
        shared: &crate::server::srt::Directory,
    ) {
        self.generation = generation;
        self.starts += 1;
        self.bytes_at_start = self.counters.snapshot().bytes;
        self.restart_at = None;
        self.start_failed = false;
        if let Some(feed) = &self.feed {
            // A new connection starts a new byte stream: nothing carried over from the last.
            feed.reset();
        }
        let tx = events.clone();
        let notify: Notify = Box::new(move |why: String| {
            let why = format!("SRT: {why}");
            let msg = gst::message::Error::builder(gst::ResourceError::Failed, &why).build();
            let _ = tx.send(Event::Bus { generation, msg });
        });
        let label = format!("{route}/{}", self.id);
        let on_port = ep.mode == SrtMode::Shared;
        let access = crate::server::srt::Access::of(&ep);
        if ep.mode == SrtMode::Listener && self.refusals.is_none() {
            self.refusals = Some(Refusals::new(label.clone()));
        }
        let refusals = self.refusals.as_deref();
        let opened = match self.role {
            Role::Input => {
                let feed = self.feed.clone().expect("inputs have a feed");
                SrtInput::open(&ep, label, hub.clone(), feed, notify, refusals).and_then(|i| {
                    if on_port {
                        i.set_registration(shared.add_input(route, &self.id, &i, access)?);
                    }
                    Ok(SrtEnd::Input(i))
                })
            }
            Role::Output => {
                SrtOutput::open(&ep, label, notify, hub, self.counters.clone(), refusals).and_then(
                    |o| {
                        if on_port {
                            o.set_registration(shared.add_output(route, &o, access)?);
                        }
                        self.callers = o.callers();
                        let tap = Tap::srt(self.id.clone(), o.clone(), self.counters.clone());
                        self.attach(hub, Arc::new(tap));
                        Ok(SrtEnd::Output(o))
                    },
                )
            }
        };
        match opened {
            Ok(end) => {
                self.srt = Some(end);
                self.status = Status::Running;
                self.running_since = Some(now);
                gst::info!(CAT, "{route}: started {} {} ({ep})", self.role, self.id);
            }
            Err(why) => {
                self.status = Status::Starting;
                self.fail(hub, format!("SRT {ep}: {why}"), now);
            }
        }
    }

    fn attach(&mut self, hub: &Hub, tap: Arc<Tap>) {
        if let Some(old) = self.tap.replace(tap.clone()) {
            hub.detach(&old.id);
        }
        hub.attach(tap);
    }

    /// Stops the current pipeline (bounded in time) and detaches from the hub.
    pub fn stop(&mut self, hub: &Hub, status: Status) {
        if let Some(tap) = self.tap.take() {
            hub.detach(&tap.id);
        }
        // Waits for a batch being read; nothing reaches the hub from it after this.
        self.receiver = None;
        if let Some(p) = self.pipeline.take() {
            stop_forwarding(&p);
            if set_state_bounded(&p, gst::State::Null, STATE_CHANGE_TIMEOUT).is_none() {
                gst::warning!(
                    CAT,
                    "{}: pipeline did not stop in time; left to finish alone",
                    self.id
                );
            }
        }
        if let Some(end) = self.srt.take() {
            end.close();
        }
        if let Some(callers) = self.callers.take() {
            // Whoever is still connected leaves with the pipeline.
            let mut list = callers.lock().unwrap_or_else(PoisonError::into_inner);
            let mut changes = list.take_changes();
            changes.extend(list.connected.drain(..).map(|address| CallerChange {
                joined: false,
                address,
                stream_id: None,
            }));
            self.caller_changes.extend(changes);
        }
        self.running_since = None;
        self.status = status;
        // Whatever the old pipeline still had queued on its bus is of no interest now.
        self.generation = 0;
    }

    /// Whether the current pipeline delivered any data since it started.
    pub fn delivered(&self) -> bool {
        self.counters.snapshot().bytes > self.bytes_at_start
    }

    /// The pipeline reached PLAYING at `now`.
    pub fn on_running(&mut self, now: Instant) {
        if self.status == Status::Starting {
            self.status = Status::Running;
            self.running_since = Some(now);
        }
    }

    /// The pipeline failed: stop it and schedule a restart after the backoff. A shared input
    /// whose publisher left keeps running instead: it stays on the shared port for the next
    /// publisher (a restart would take it off the port for the backoff, and the port would
    /// refuse a publisher coming back meanwhile).
    pub fn fail(&mut self, hub: &Hub, reason: String, now: Instant) {
        if matches!(&self.srt, Some(SrtEnd::Input(i)) if i.on_shared_port()) {
            gst::info!(CAT, "{}: {reason}; waiting for the next publisher", self.id);
            self.set_error(reason);
            self.reconnects += 1;
            return;
        }
        if self
            .running_since
            .is_some_and(|t| now.duration_since(t) >= HEALTHY_AFTER)
        {
            self.backoff = INITIAL_BACKOFF;
        }
        gst::info!(
            CAT,
            "{} failed, retrying in {:?}: {reason}",
            self.id,
            self.backoff
        );
        self.stop(hub, Status::Retrying);
        self.set_error(reason);
        self.reconnects += 1;
        self.restart_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    pub fn set_error(&mut self, why: String) {
        self.last_error = Some(why);
        self.errors += 1;
    }

    /// Once a second: bitrate, any rejected-input reason from the streaming thread, and the
    /// peer idle check of SRT connections.
    pub fn tick(&mut self, hub: &Hub, now: Instant) {
        self.meter.tick(&self.counters, now);
        if let Some(end) = &self.srt {
            end.check_idle();
        }
        if let Some(why) = self.tap.as_ref().and_then(|t| t.take_error()) {
            self.set_error(why);
        }
        if let Some(why) = self.receiver.as_ref().and_then(|r| r.take_error()) {
            self.set_error(why);
        }
        if self.start_failed && self.status == Status::Starting {
            self.fail(hub, "the pipeline failed to start".into(), now);
            return;
        }
        let Some(feed) = self.feed.clone() else {
            return;
        };
        if let Some(why) = feed.take_not_ts() {
            self.set_error(why);
        }
        hub.analysis_tick(&feed);
    }

    /// An output's link as the event log reports it: `connected` (running, and an SRT output
    /// with its peer or, a listener, at least one caller), `disconnected` (running without
    /// one), `failing` (retrying after an error), `stopped`; None while it starts (no change).
    /// Reads an SRT caller's statistics: the control thread calls it once a second at most.
    pub fn link(&self) -> Option<&'static str> {
        match self.status {
            Status::Retrying => Some("failing"),
            Status::Starting => None,
            Status::Stopped | Status::Ended | Status::Standby => Some("stopped"),
            Status::Running => {
                let connected = self.srt.as_ref().is_none_or(SrtEnd::connected);
                Some(if connected {
                    "connected"
                } else {
                    "disconnected"
                })
            }
        }
    }

    /// The joins and leaves of callers not yet reported (an SRT listener output), oldest first.
    pub fn take_caller_changes(&mut self) -> Vec<CallerChange> {
        let mut changes = std::mem::take(&mut self.caller_changes);
        if let Some(c) = &self.callers {
            let mut list = c.lock().unwrap_or_else(PoisonError::into_inner);
            if list.forgotten > 0 {
                gst::warning!(
                    CAT,
                    "{}: {} caller joins and leaves were not reported (too many at once)",
                    self.id,
                    std::mem::take(&mut list.forgotten)
                );
            }
            changes.extend(list.take_changes());
        }
        changes
    }

    /// The callers an SRT listener had refused by libsrt for their passphrase, not yet
    /// reported, oldest first.
    pub fn take_refusals(&self) -> Vec<Refused> {
        (self.refusals.as_ref()).map_or_else(Vec::new, |r| r.take())
    }

    /// An SRT endpoint's link figures (a listener's callers summed up), for the history.
    /// The SRT link's figures while a peer is connected (None: not SRT, or no peer).
    pub fn srt_link(&self) -> Option<SrtLinkStats> {
        (self.srt.as_ref())
            .filter(|e| e.connected())
            .map(|e| e.stats().link)
    }

    pub fn stats(&self, hub: &Hub, now: Instant) -> EndpointStats {
        let idle_ms = self.feed.as_ref().and_then(|f| hub.idle_ms(f));
        // An SRT endpoint shows its figures (zeros) also while it is not running.
        let is_srt = matches!(self.endpoint, Endpoint::Srt(_));
        let mut srt =
            (self.srt.as_ref().map(SrtEnd::stats)).or_else(|| is_srt.then(SrtStats::default));
        if let (Some(srt), Some(r)) = (&mut srt, &self.refusals) {
            let c = r.counts();
            srt.refused_bad_secret = c.bad_secret;
            srt.refused_unsecure = c.unsecure;
            srt.refusal_events_missed = c.events_missed;
        }
        let srt_connected = (self.srt.as_ref().map(SrtEnd::connected)).or(is_srt.then_some(false));
        let srt_mode = match &self.endpoint {
            Endpoint::Srt(e) => Some(e.mode),
            _ => None,
        };
        let starting_or_idle = match self.status {
            Status::Starting => true,
            Status::Running => match self.role {
                Role::Input => idle_ms.is_none_or(|ms| ms > IDLE_AFTER_MS),
                Role::Output => srt_connected == Some(false),
            },
            _ => false,
        };
        let state = match self.status {
            _ if starting_or_idle && srt_connected == Some(false) => match srt_mode {
                Some(SrtMode::Listener | SrtMode::Shared) => "listening",
                _ => "connecting",
            },
            Status::Starting => "starting",
            Status::Running if starting_or_idle => "waiting",
            Status::Running => "live",
            Status::Retrying => "retrying",
            Status::Ended => "ended",
            Status::Stopped => "stopped",
            Status::Standby => "standby",
        };
        let counters = self.counters.snapshot();
        EndpointStats {
            id: self.id.clone(),
            uri: self.endpoint.to_string(),
            kind: self.endpoint.kind(),
            state,
            input: (self.role == Role::Input).then(|| InputStats {
                active: self.feed.as_ref().is_some_and(|f| f.id == hub.active()),
                // The switch's to say: `Route::stats` fills it in.
                healthy: false,
                standby: if self.cold { "cold" } else { "warm" },
                idle_ms,
                off_air_packets: counters.off_air,
                held_back_packets: counters.held_back,
                analysis: AnalysisStats {
                    changes_missed: self.analysis_missed,
                    ..self
                        .feed
                        .as_ref()
                        .map(|f| hub.analysis(f))
                        .unwrap_or_default()
                },
            }),
            burst_packets: (self.role == Role::Output).then_some(counters.burst),
            unheard_packets: (self.role == Role::Output).then_some(counters.unheard),
            counters,
            reconnects: self.reconnects,
            retry_in_ms: self
                .restart_at
                .map(|t| t.saturating_duration_since(now).as_millis() as u64),
            last_error: self
                .feed
                .as_ref()
                .and_then(|f| f.peek_not_ts())
                .or_else(|| self.last_error.clone()),
            srt,
        }
    }
}
