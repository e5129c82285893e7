//! A route: one logical stream, inputs → switch → hub → outputs.
//!
//! A route owns its inputs and outputs (each a separate pipeline), the hub between them, and one
//! control thread. The control thread reads every bus message of the route's pipelines (their
//! sync handlers forward into one channel), restarts what failed after a backoff, and ticks the
//! rate meters. API calls run on the caller's thread under the same `inner` lock, so all state
//! changes of a route are serialised and none happens on a streaming thread.
//!
//! Lock order: `Gateway.routes` → `Route.inner` → `Claims` → hub locks.

mod slot;
mod spec;

pub use slot::EndpointStats;
pub use spec::{InputSpec, OutputSpec, RouteSpec, SwitchSpec};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::gateway::Claims;
use crate::hub::{Feed, Hub};
use crate::limits::{
    self, DEFAULT_SLATE_SIZE, DEFAULT_TAP_QUEUE_BYTES, MAX_FAILBACK_AFTER, MAX_LOSS_TIMEOUT,
    MIN_LOSS_TIMEOUT, MIN_QUEUE_BYTES, SLATE_ID,
};
use crate::switch::{Reason, Source, Switch, SwitchConfig, Switched, HISTORY};
use crate::uri::{Endpoint, Role, TestEndpoint};
use slot::{Slot, Status};

pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-route",
        gst::DebugColorFlags::empty(),
        Some("castway routes"),
    )
});

const TICK: Duration = Duration::from_secs(1);

pub(crate) enum Event {
    Bus {
        generation: u64,
        msg: gst::Message,
    },
    /// Something the next switch check depends on changed (timing, inputs, a lock).
    Reschedule,
    Shutdown,
}

/// The control thread re-checks the switch this often per loss timeout.
const SWITCH_CHECKS_PER_TIMEOUT: u32 = 4;
/// A cut armed for the next keyframe happens anyway after this long (no keyframe came).
const KEYFRAME_WAIT: Duration = Duration::from_secs(3);
/// How long a new route waits for its first input before the switch may pass it over, and
/// before it connects cold standby inputs (warm ones get that long to connect).
const START_GRACE: Duration = Duration::from_secs(2);

/// One switch, as the stats and events show it.
#[derive(Debug, Clone)]
pub struct SwitchRecord {
    /// Counts up from 1 over the route's life.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub at_unix: f64,
    /// Input id, `slate`, or None (nothing).
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: &'static str,
}

/// The switch part of a route's stats.
#[derive(Debug, Clone)]
pub struct SwitchStats {
    /// What goes out now: an input id, `slate`, or None.
    pub active: Option<String>,
    /// What goes out at the next keyframe, if a cut is armed.
    pub pending: Option<String>,
    pub locked: Option<String>,
    pub loss_timeout_ms: u64,
    pub failback_after_ms: u64,
    pub slate: bool,
    pub cuts: u64,
    pub held_back_packets: u64,
    /// Packets the slate put on air.
    pub slate_packets: u64,
    /// The last switches, oldest first.
    pub history: Vec<SwitchRecord>,
}

/// What `Route::stats` returns.
#[derive(Debug, Clone)]
pub struct RouteStats {
    pub name: String,
    pub state: &'static str,
    pub uptime_s: f64,
    pub active_input: Option<String>,
    pub inputs: Vec<EndpointStats>,
    pub outputs: Vec<EndpointStats>,
    pub switch: SwitchStats,
}

struct Inner {
    inputs: Vec<Slot>,
    outputs: Vec<Slot>,
    /// The slate's pipeline while it runs; its feed stays.
    slate: Option<Slot>,
    slate_feed: Arc<Feed>,
    switch: Switch,
    history: VecDeque<SwitchRecord>,
    seq: u64,
    /// When the armed keyframe cut was armed.
    pending_since: Option<Instant>,
    /// Some input delivered data since the route started.
    any_data: bool,
    next_input: usize,
    next_output: usize,
    closed: bool,
}

/// Which part of a route a pipeline belongs to.
#[derive(Clone, Copy)]
enum Part {
    Input(usize),
    Output(usize),
    Slate,
}

impl Inner {
    fn part_by_generation(&self, generation: u64) -> Option<Part> {
        if let Some(i) = self.inputs.iter().position(|s| s.generation == generation) {
            return Some(Part::Input(i));
        }
        if let Some(i) = self.outputs.iter().position(|s| s.generation == generation) {
            return Some(Part::Output(i));
        }
        self.slate
            .as_ref()
            .filter(|s| s.generation == generation)
            .map(|_| Part::Slate)
    }

    fn slot(&mut self, part: Part) -> Option<&mut Slot> {
        match part {
            Part::Input(i) => self.inputs.get_mut(i),
            Part::Output(i) => self.outputs.get_mut(i),
            Part::Slate => self.slate.as_mut(),
        }
    }

    /// The id the stats show for a source of the switch.
    fn source_name(&self, source: Source) -> Option<String> {
        match source {
            Source::Input(i) => self.inputs.get(i).map(|s| s.id.clone()),
            Source::Slate => Some(SLATE_ID.into()),
            Source::Nothing => None,
        }
    }

    /// The id the stats show for a hub feed.
    fn feed_name(&self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if id == self.slate_feed.id {
            return Some(SLATE_ID.into());
        }
        self.inputs
            .iter()
            .find(|s| s.feed.as_ref().is_some_and(|f| f.id == id))
            .map(|s| s.id.clone())
    }

    fn feed_by_id(&self, id: u64) -> Option<Arc<Feed>> {
        if id == self.slate_feed.id {
            return Some(self.slate_feed.clone());
        }
        self.inputs
            .iter()
            .filter_map(|s| s.feed.clone())
            .find(|f| f.id == id)
    }
}

/// What `Route::reconfigure` changed; ids as the route names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub inputs_added: Vec<String>,
    pub inputs_removed: Vec<String>,
    pub outputs_added: Vec<String>,
    pub outputs_removed: Vec<String>,
    /// The inputs took a new priority order.
    pub reordered: bool,
    /// Loss or failback time changed.
    pub settings: bool,
    /// The whole route was restarted (see `Route::needs_restart`).
    pub restarted: bool,
}

/// An input or output as a spec wants it, checked.
struct Wanted {
    id: String,
    endpoint: Endpoint,
    cold: bool,
}

/// A spec checked: ids assigned, URIs parsed, settings in range.
struct Checked {
    queue_bytes: u64,
    config: SwitchConfig,
    inputs: Vec<Wanted>,
    outputs: Vec<Wanted>,
    /// The counters behind the `in<n>`/`out<n>` ids given so far.
    next_input: usize,
    next_output: usize,
}

/// One logical stream: inputs → switch → hub → outputs.
pub struct Route {
    pub name: String,
    hub: Arc<Hub>,
    inner: Mutex<Inner>,
    /// Signalled (with `inner`) on every switch and at shutdown.
    switched: Condvar,
    events: Sender<Event>,
    generations: AtomicU64,
    claims: Arc<Claims>,
    queue_bytes: u64,
    slate_size: Option<(u32, u32)>,
    started: Instant,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Checks the switch settings of a spec and fills in the defaults.
fn switch_config(spec: &SwitchSpec) -> Result<SwitchConfig> {
    let d = SwitchConfig::default();
    let loss_timeout = spec
        .loss_timeout_ms
        .map_or(d.loss_timeout, Duration::from_millis);
    if loss_timeout < MIN_LOSS_TIMEOUT || loss_timeout > MAX_LOSS_TIMEOUT {
        return Err(Error::InvalidConfig(format!(
            "loss_timeout={} ms is outside {}..{} ms",
            loss_timeout.as_millis(),
            MIN_LOSS_TIMEOUT.as_millis(),
            MAX_LOSS_TIMEOUT.as_millis()
        )));
    }
    let failback_after = spec
        .failback_after_ms
        .map_or(d.failback_after, Duration::from_millis);
    if failback_after > MAX_FAILBACK_AFTER {
        return Err(Error::InvalidConfig(format!(
            "failback_after={} ms is above {} ms",
            failback_after.as_millis(),
            MAX_FAILBACK_AFTER.as_millis()
        )));
    }
    if let Some((w, h)) = spec.slate_size {
        if !limits::slate_size_in_range((w, h)) || w % 2 != 0 || h % 2 != 0 {
            return Err(Error::InvalidConfig(format!(
                "slate size {w}x{h} must have even sides from {min}x{min} to {}x{}",
                limits::MAX_SLATE_WIDTH,
                limits::MAX_SLATE_HEIGHT,
                min = limits::MIN_SLATE_SIDE,
            )));
        }
    }
    Ok(SwitchConfig {
        loss_timeout,
        failback_after,
        slate: spec.slate.unwrap_or(d.slate),
    })
}

/// Route, input and output names: what fits in a URL path and a log line.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if limits::name_ok(name) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{what} name `{name}` must be 1 to {} characters of A-Z, a-z, 0-9, `-`, `_`, `.`",
            limits::MAX_NAME_LEN
        )))
    }
}

impl Route {
    /// Checks a spec without starting anything: name, ids, URIs and settings.
    pub fn check(spec: &RouteSpec) -> Result<()> {
        Self::checked(spec).map(|_| ())
    }

    fn checked(spec: &RouteSpec) -> Result<Checked> {
        check_name("route", &spec.name)?;
        if spec.inputs.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "route `{}` needs at least one input",
                spec.name
            )));
        }
        let queue_bytes = spec.queue_bytes.unwrap_or(DEFAULT_TAP_QUEUE_BYTES);
        if queue_bytes < MIN_QUEUE_BYTES {
            return Err(Error::InvalidConfig(format!(
                "queue_bytes={queue_bytes} is below {MIN_QUEUE_BYTES}"
            )));
        }
        let config = switch_config(&spec.switch)?;
        let mut inputs: Vec<Wanted> = Vec::new();
        let mut next_input = 0;
        for i in &spec.inputs {
            let taken = |id: &str| inputs.iter().any(|w| w.id == id);
            let id = slot_id("input", "in", i.id.as_deref(), &mut next_input, taken)?;
            let (endpoint, cold) = Endpoint::parse_input(&i.uri)?;
            let endpoint = on_this_host(endpoint)?;
            inputs.push(Wanted { id, endpoint, cold });
        }
        let mut outputs: Vec<Wanted> = Vec::new();
        let mut next_output = 0;
        for o in &spec.outputs {
            let taken = |id: &str| outputs.iter().any(|w| w.id == id);
            let id = slot_id("output", "out", o.id.as_deref(), &mut next_output, taken)?;
            let endpoint = on_this_host(Endpoint::parse(&o.uri, Role::Output)?)?;
            outputs.push(Wanted {
                id,
                endpoint,
                cold: false,
            });
        }
        Ok(Checked {
            queue_bytes,
            config,
            inputs,
            outputs,
            next_input,
            next_output,
        })
    }

    /// Builds and starts a route. Every URI is parsed and every listening address claimed
    /// before anything starts; on error nothing is left running.
    pub(crate) fn start(spec: RouteSpec, claims: Arc<Claims>) -> Result<Arc<Route>> {
        let Checked {
            queue_bytes,
            config,
            inputs: want_inputs,
            outputs: want_outputs,
            next_input,
            next_output,
        } = Self::checked(&spec)?;
        let hub = Arc::new(Hub::default());
        let inputs: Vec<Slot> = want_inputs
            .into_iter()
            .map(|w| input_slot(w.id, w.endpoint, w.cold, &hub, queue_bytes))
            .collect();
        let outputs: Vec<Slot> = want_outputs
            .into_iter()
            .map(|w| Slot::new(w.id, Role::Output, w.endpoint, None, queue_bytes))
            .collect();
        let binds: Vec<(String, &Endpoint, Role)> = inputs
            .iter()
            .chain(outputs.iter())
            .map(|s| (format!("{}/{}", spec.name, s.id), &s.endpoint, s.role))
            .collect();
        claims.claim_all(&binds)?;

        let (tx, rx) = mpsc::channel();
        let switch = Switch::new(inputs.len(), config);
        let route = Arc::new(Route {
            name: spec.name.clone(),
            inner: Mutex::new(Inner {
                inputs,
                outputs,
                slate: None,
                slate_feed: hub.feed(),
                switch,
                history: VecDeque::with_capacity(HISTORY),
                seq: 0,
                pending_since: None,
                any_data: false,
                next_input,
                next_output,
                closed: false,
            }),
            hub,
            switched: Condvar::new(),
            events: tx,
            generations: AtomicU64::new(1),
            claims,
            queue_bytes,
            slate_size: spec.switch.slate_size,
            started: Instant::now(),
            thread: Mutex::new(None),
        });
        {
            let mut inner = lock(&route.inner);
            // The first input goes out until the switch says otherwise.
            route.hub.cut_to(inner.inputs[0].feed.as_deref());
            route.note_sole(&inner);
            // Outputs first, so the first input buffer already finds them attached. Cold
            // standby inputs wait until they are needed.
            let Inner {
                inputs, outputs, ..
            } = &mut *inner;
            let warm = inputs
                .iter_mut()
                .enumerate()
                .filter(|(i, s)| *i == 0 || !s.cold);
            for slot in outputs.iter_mut().chain(warm.map(|(_, s)| s)) {
                if let Err(e) = route.start_slot(slot) {
                    drop(inner);
                    route.shutdown();
                    return Err(e);
                }
            }
        }
        let weak = Arc::downgrade(&route);
        let handle = std::thread::Builder::new()
            .name(format!("castway-{}", spec.name))
            .spawn(move || control_loop(weak, rx))
            .map_err(|e| Error::pipeline(format!("cannot start the control thread: {e}")))?;
        *lock(&route.thread) = Some(handle);
        Ok(route)
    }

    fn start_slot(&self, slot: &mut Slot) -> Result<()> {
        let generation = self.generations.fetch_add(1, Relaxed);
        let restart = slot.starts > 0;
        slot.start(&self.name, &self.hub, &self.events, generation)?;
        if restart {
            if let Some(feed) = &slot.feed {
                // A looped file, a reconnected sender: a new run for the outputs if it is on.
                let looped = matches!(&slot.endpoint, Endpoint::File(f) if f.looped);
                self.hub.restart_run(feed, looped);
            }
        }
        Ok(())
    }

    /// Claims a new slot's listening address and starts it (a cold input only claims); on
    /// failure nothing is left claimed.
    fn claim_and_start(&self, slot: &mut Slot) -> Result<()> {
        let owner = format!("{}/{}", self.name, slot.id);
        self.claims
            .claim_all(&[(owner.clone(), &slot.endpoint, slot.role)])?;
        if slot.cold {
            return Ok(());
        }
        self.start_slot(slot)
            .inspect_err(|_| self.claims.release(&owner))
    }

    /// Where the input or output `id` is in `slots`.
    fn position(&self, slots: &[Slot], what: &str, id: &str) -> Result<usize> {
        slots
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| Error::NotFound(format!("{what} `{id}` of route `{}`", self.name)))
    }

    /// Adds an output to the running route; the other outputs see no gap. Returns its id.
    pub fn add_output(&self, uri: &str, id: Option<&str>) -> Result<String> {
        let endpoint = on_this_host(Endpoint::parse(uri, Role::Output)?)?;
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Err(Error::Closed(format!("route `{}`", self.name)));
        }
        let mut next = inner.next_output;
        let id = slot_id("output", "out", id, &mut next, has_id(&inner.outputs))?;
        let mut slot = Slot::new(id.clone(), Role::Output, endpoint, None, self.queue_bytes);
        self.claim_and_start(&mut slot)?;
        inner.next_output = next;
        inner.outputs.push(slot);
        Ok(id)
    }

    /// Removes an output from the running route; the other outputs see no gap.
    pub fn remove_output(&self, id: &str) -> Result<()> {
        let mut inner = lock(&self.inner);
        let i = self.position(&inner.outputs, "output", id)?;
        let mut slot = inner.outputs.remove(i);
        let owner = format!("{}/{id}", self.name);
        self.claims.release(&owner);
        drop(inner);
        slot.stop(&self.hub, Status::Stopped);
        self.claims.await_free(&owner);
        Ok(())
    }

    /// Adds an input at the lowest priority while the route runs; what goes out is untouched
    /// unless the route was on the slate. Returns its id.
    pub fn add_input(&self, uri: &str, id: Option<&str>) -> Result<String> {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Err(Error::Closed(format!("route `{}`", self.name)));
        }
        let mut next = inner.next_input;
        let id = slot_id("input", "in", id, &mut next, has_id(&inner.inputs))?;
        let (endpoint, cold) = Endpoint::parse_input(uri)?;
        let endpoint = on_this_host(endpoint)?;
        let mut slot = input_slot(id.clone(), endpoint, cold, &self.hub, self.queue_bytes);
        self.claim_and_start(&mut slot)?;
        inner.next_input = next;
        inner.inputs.push(slot);
        self.note_sole(&inner);
        let now = Instant::now();
        if let Some(s) = inner.switch.input_added(now) {
            self.apply(&mut inner, s, now);
        }
        self.reschedule();
        Ok(id)
    }

    /// Removes an input while the route runs. If it was the one going out, the switch picks
    /// another at once; otherwise the outputs see no change.
    pub fn remove_input(&self, id: &str) -> Result<()> {
        let mut inner = lock(&self.inner);
        let i = self.position(&inner.inputs, "input", id)?;
        if inner.inputs.len() == 1 {
            return Err(Error::InvalidConfig(format!(
                "input `{id}` is the last input of route `{}`; a route needs one",
                self.name
            )));
        }
        self.remove_input_at(&mut inner, i);
        drop(inner);
        self.reschedule();
        self.claims.await_free(&format!("{}/{id}", self.name));
        Ok(())
    }

    /// Stops and removes input `i`, releases its address and lets the switch choose again.
    fn remove_input_at(&self, inner: &mut Inner, i: usize) {
        let mut slot = inner.inputs.remove(i);
        self.claims.release(&format!("{}/{}", self.name, slot.id));
        slot.stop(&self.hub, Status::Stopped);
        self.note_sole(inner);
        let now = Instant::now();
        let decision = inner.switch.input_removed(i, now);
        // The record names the input that is gone.
        if let Some(s) = decision {
            let from = match s.from {
                Source::Input(a) if a == i => Some(slot.id.clone()),
                other => inner.source_name(other),
            };
            self.apply_named(inner, s, from, now);
        }
        // A removed input never stays on air, nor armed (the route may have kept it on air
        // while every input was lost): what the switch has chosen goes out instead.
        let gone = slot.feed.as_ref().map(|f| f.id);
        if gone.is_some_and(|id| id == self.hub.active() || id == self.hub.pending()) {
            let instead = match inner.switch.active() {
                Source::Slate => Some(inner.slate_feed.clone()),
                Source::Input(a) => inner.inputs.get(a).and_then(|s| s.feed.clone()),
                Source::Nothing => None,
            };
            self.hub.cut_to(instead.as_deref());
        }
    }

    /// Whether `spec` changes something only a restart of the whole route can: the per-output
    /// queue bound, the slate on/off or its picture size.
    pub fn needs_restart(&self, spec: &RouteSpec) -> bool {
        let slate = lock(&self.inner).switch.config().slate;
        spec.queue_bytes.unwrap_or(DEFAULT_TAP_QUEUE_BYTES) != self.queue_bytes
            || spec.switch.slate_size != self.slate_size
            || spec.switch.slate.unwrap_or(true) != slate
    }

    /// Makes the running route match `spec` by difference: inputs and outputs are matched by
    /// id (an entry without one gets the id it would get at creation, `in0…`/`out0…`); only
    /// those added, removed or with a changed endpoint start or stop, so a receiver on an
    /// unchanged output sees no gap. Inputs take the spec's priority order; loss and failback
    /// times apply at once. What `needs_restart` reports is refused here.
    ///
    /// Every URI and setting is checked before anything changes. A new endpoint that fails to
    /// start (its address taken by another process) ends the call with its error; applying
    /// the previous spec again puts the route back.
    pub fn reconfigure(&self, spec: &RouteSpec) -> Result<Applied> {
        if self.needs_restart(spec) {
            return Err(Error::InvalidConfig(format!(
                "route `{}`: queue_bytes, slate and slate_size change only by restarting it",
                self.name
            )));
        }
        let Checked {
            config,
            inputs: want_inputs,
            outputs: want_outputs,
            ..
        } = Self::checked(spec)?;
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Err(Error::Closed(format!("route `{}`", self.name)));
        }
        let unchanged = |wanted: &[Wanted], slot: &Slot| {
            wanted
                .iter()
                .any(|w| w.id == slot.id && w.endpoint == slot.endpoint && w.cold == slot.cold)
        };
        let mut applied = Applied::default();
        let timing = (config.loss_timeout, config.failback_after);
        let old = *inner.switch.config();
        if (old.loss_timeout, old.failback_after) != timing {
            inner.switch.set_timing(timing.0, timing.1);
            applied.settings = true;
        }

        // Outputs: stop what goes, then start what comes.
        let mut k = 0;
        while k < inner.outputs.len() {
            if unchanged(&want_outputs, &inner.outputs[k]) {
                k += 1;
                continue;
            }
            let mut slot = inner.outputs.remove(k);
            self.claims.release(&format!("{}/{}", self.name, slot.id));
            slot.stop(&self.hub, Status::Stopped);
            applied.outputs_removed.push(slot.id.clone());
        }
        for w in &want_outputs {
            if inner.outputs.iter().any(|s| s.id == w.id) {
                continue;
            }
            let mut slot = Slot::new(
                w.id.clone(),
                Role::Output,
                w.endpoint.clone(),
                None,
                self.queue_bytes,
            );
            self.claim_and_start(&mut slot)?;
            inner.outputs.push(slot);
            applied.outputs_added.push(w.id.clone());
        }

        // Inputs likewise: a changed input may keep its port, so the old one goes first (the
        // switch covers with another input or the slate meanwhile).
        let mut k = 0;
        while k < inner.inputs.len() {
            if unchanged(&want_inputs, &inner.inputs[k]) {
                k += 1;
                continue;
            }
            applied.inputs_removed.push(inner.inputs[k].id.clone());
            self.remove_input_at(&mut inner, k);
        }
        for w in &want_inputs {
            if inner.inputs.iter().any(|s| s.id == w.id) {
                continue;
            }
            let mut slot = input_slot(
                w.id.clone(),
                w.endpoint.clone(),
                w.cold,
                &self.hub,
                self.queue_bytes,
            );
            self.claim_and_start(&mut slot)?;
            inner.inputs.push(slot);
            self.note_sole(&inner);
            applied.inputs_added.push(w.id.clone());
            let now = Instant::now();
            if let Some(s) = inner.switch.input_added(now) {
                self.apply(&mut inner, s, now);
            }
        }
        // Priority order as the spec gives it.
        let order: Vec<usize> = want_inputs
            .iter()
            .filter_map(|w| inner.inputs.iter().position(|s| s.id == w.id))
            .collect();
        if order.iter().enumerate().any(|(n, &o)| n != o) && order.len() == inner.inputs.len() {
            let mut old: Vec<Option<Slot>> = inner.inputs.drain(..).map(Some).collect();
            inner.inputs = order.iter().filter_map(|&o| old[o].take()).collect();
            let now = Instant::now();
            self.feed_switch(&mut inner, now);
            if let Some(s) = inner.switch.reorder(&order, now) {
                self.apply(&mut inner, s, now);
            }
            applied.reordered = true;
        }
        self.reschedule();
        Ok(applied)
    }

    /// Switches to input `id` and holds it there until `unlock`: at its next keyframe if what
    /// goes out now still plays, at once otherwise. If it is lost the slate covers.
    pub fn lock_input(&self, id: &str) -> Result<()> {
        let mut inner = lock(&self.inner);
        let i = self.position(&inner.inputs, "input", id)?;
        let now = Instant::now();
        self.feed_switch(&mut inner, now);
        if let Some(s) = inner.switch.lock(i, now) {
            self.apply(&mut inner, s, now);
        }
        // A cold input is connected now; the switch takes it once it delivers.
        self.manage_cold(&mut inner, now);
        self.reschedule();
        Ok(())
    }

    /// Back to automatic choice by priority.
    pub fn unlock(&self) {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        self.feed_switch(&mut inner, now);
        if let Some(s) = inner.switch.unlock(now) {
            self.apply(&mut inner, s, now);
        }
        self.reschedule();
    }

    /// Has the control thread work out its next switch check again (see `next_check`).
    fn reschedule(&self) {
        let _ = self.events.send(Event::Reschedule);
    }

    /// Waits until a switch with a sequence number above `after` happened and returns it (the
    /// oldest one still kept), or None after `timeout` or when the route stops.
    pub fn wait_switch(&self, after: u64, timeout: Duration) -> Option<SwitchRecord> {
        let deadline = Instant::now() + timeout;
        let mut inner = lock(&self.inner);
        loop {
            if let Some(r) = inner.history.iter().find(|r| r.seq > after) {
                return Some(r.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if inner.closed || left.is_zero() {
                return None;
            }
            inner = self
                .switched
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    pub fn stats(&self) -> RouteStats {
        let now = Instant::now();
        let inner = lock(&self.inner);
        let inputs: Vec<EndpointStats> = inner
            .inputs
            .iter()
            .enumerate()
            .map(|(i, s)| EndpointStats {
                healthy: inner.switch.alive(i, now),
                ..s.stats(&self.hub, now)
            })
            .collect();
        let outputs: Vec<EndpointStats> = inner
            .outputs
            .iter()
            .map(|s| s.stats(&self.hub, now))
            .collect();
        let active = inner.feed_name(self.hub.active());
        let active_input = inputs.iter().find(|s| s.active).map(|s| s.id.clone());
        let slate_live = active.as_deref() == Some(SLATE_ID)
            && self
                .hub
                .idle_ms(&inner.slate_feed)
                .is_some_and(|ms| ms < 1_000);
        let state = if inner.closed {
            "stopped"
        } else if inputs.iter().any(|s| s.active && s.state == "live") {
            "live"
        } else if slate_live {
            "slate"
        } else {
            "waiting"
        };
        let splice = self.hub.splice_stats();
        let config = inner.switch.config();
        let switch = SwitchStats {
            active,
            pending: inner.feed_name(self.hub.pending()),
            locked: inner
                .switch
                .locked()
                .and_then(|i| inner.source_name(Source::Input(i))),
            loss_timeout_ms: config.loss_timeout.as_millis() as u64,
            failback_after_ms: config.failback_after.as_millis() as u64,
            slate: config.slate,
            cuts: splice.cuts,
            held_back_packets: splice.held_back,
            slate_packets: {
                // Read one after another while the slate runs: never below zero.
                let c = inner.slate_feed.counters.snapshot();
                c.packets.saturating_sub(c.off_air + c.held_back)
            },
            history: inner.history.iter().cloned().collect(),
        };
        RouteStats {
            name: self.name.clone(),
            state,
            uptime_s: self.started.elapsed().as_secs_f64(),
            active_input,
            inputs,
            outputs,
            switch,
        }
    }

    /// Stops every pipeline and the control thread, and releases the route's addresses.
    /// Idempotent.
    pub fn shutdown(&self) {
        {
            let mut inner = lock(&self.inner);
            if !inner.closed {
                inner.closed = true;
                let Inner {
                    inputs,
                    outputs,
                    slate,
                    ..
                } = &mut *inner;
                // Inputs first: nothing new reaches the hub while the outputs close.
                for slot in inputs
                    .iter_mut()
                    .chain(slate.iter_mut())
                    .chain(outputs.iter_mut())
                {
                    slot.stop(&self.hub, Status::Stopped);
                }
                self.hub.drop_deferred();
                // Once only: a later call (Drop) must not free a new route of the same name.
                self.claims.release_prefix(&format!("{}/", self.name));
            }
        }
        // Returns when the route's ports can be bound again.
        self.claims.await_route_free(&self.name);
        self.switched.notify_all();
        let _ = self.events.send(Event::Shutdown);
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    /// Hands the switch the latest data time of each input.
    fn feed_switch(&self, inner: &mut Inner, now: Instant) {
        let Inner { inputs, switch, .. } = inner;
        for (i, slot) in inputs.iter().enumerate() {
            let fresh = slot.status == Status::Running || slot.status == Status::Starting;
            if let (true, Some(feed)) = (fresh, &slot.feed) {
                if let Some(t) = self.hub.last_data(feed) {
                    if t <= now && slot.delivered() {
                        switch.data(i, t);
                    }
                }
            }
        }
    }

    /// Records a decision of the switch and makes the hub follow it.
    fn apply(&self, inner: &mut Inner, s: Switched, now: Instant) {
        let from = inner.source_name(s.from);
        self.apply_named(inner, s, from, now);
    }

    fn apply_named(&self, inner: &mut Inner, s: Switched, from: Option<String>, now: Instant) {
        // The hub feed of what the switch had on air (before an input's removal shifts the
        // indices, the caller names it; its feed is the one on air if any).
        let from_feed = match s.from {
            Source::Input(i) => inner
                .inputs
                .get(i)
                .filter(|slot| from.as_deref() == Some(slot.id.as_str()))
                .and_then(|slot| slot.feed.as_ref().map(|f| f.id)),
            Source::Slate => Some(inner.slate_feed.id),
            Source::Nothing => None,
        };
        inner.seq += 1;
        let record = SwitchRecord {
            seq: inner.seq,
            at_unix: unix_now(),
            from,
            to: inner.source_name(s.to),
            reason: s.reason.as_str(),
        };
        gst::info!(
            CAT,
            "{}: switch {} -> {} ({})",
            self.name,
            record.from.as_deref().unwrap_or("nothing"),
            record.to.as_deref().unwrap_or("nothing"),
            record.reason
        );
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(record);
        inner.pending_since = None;
        let target = match s.to {
            Source::Input(i) => inner.inputs.get(i).and_then(|s| s.feed.clone()),
            Source::Slate => {
                self.start_slate(inner, now);
                Some(inner.slate_feed.clone())
            }
            Source::Nothing => None,
        };
        // Every input is lost and the input on air stays the hub's until something else can
        // really go out: a stall that ends before the slate delivers costs nothing, and a
        // route with one input passes all it receives.
        // Only when the input that was lost is the one on air (not, say, an input a manual
        // switch was waiting for while another still plays).
        let lost = matches!(
            s.reason,
            Reason::Lost | Reason::Error | Reason::Eos | Reason::Slate
        ) && matches!(s.to, Source::Slate | Source::Nothing)
            && self.hub.active() != 0
            && from_feed.is_some_and(|id| id == self.hub.active());
        // A slate already running (a cover called off before) has no first keyframe to wait
        // for: it goes out at once, its video from its next keyframe.
        let slate_plays = s.to == Source::Slate
            && self
                .hub
                .idle_ms(&inner.slate_feed)
                .is_some_and(|ms| ms < inner.switch.config().loss_timeout.as_millis() as u64);
        match target {
            // Only the slate can replace what was on air: it goes out at its first keyframe,
            // unless what was on air delivers again first.
            Some(feed) if lost && !slate_plays => {
                self.hub.cover_with(&feed);
                inner.pending_since = Some(now);
            }
            // What goes out still plays: change over at the new feed's keyframe, no gap.
            Some(feed) if self.on_air_plays(inner) => {
                self.hub.cut_at_keyframe(&feed);
                inner.pending_since = Some(now);
            }
            None if lost => self.hub.disarm(),
            target => self.hub.cut_to(target.as_deref()),
        }
        self.switched.notify_all();
    }

    /// Tells the hub which input is the route's only one, if it has one input: that input
    /// has nothing to switch to, so all it delivers goes out.
    fn note_sole(&self, inner: &Inner) {
        let sole = match inner.inputs.as_slice() {
            [only] => only.feed.as_deref(),
            _ => None,
        };
        self.hub.set_sole(sole);
    }

    /// Whether the feed going out delivered within the loss timeout.
    fn on_air_plays(&self, inner: &Inner) -> bool {
        let loss = inner.switch.config().loss_timeout.as_millis() as u64;
        inner
            .feed_by_id(self.hub.active())
            .and_then(|f| self.hub.idle_ms(&f))
            .is_some_and(|ms| ms < loss)
    }

    /// Starts the slate's pipeline unless it runs, matching the route's video PIDs and size.
    fn start_slate(&self, inner: &mut Inner, _now: Instant) {
        if inner
            .slate
            .as_ref()
            .is_some_and(|s| s.status != Status::Stopped)
        {
            return;
        }
        // The layout of what went out last, so receivers keep their streams.
        let feed = inner
            .feed_by_id(self.hub.active())
            .or_else(|| inner.inputs.first().and_then(|s| s.feed.clone()));
        let programs = feed.as_ref().map(|f| f.programs()).unwrap_or_default();
        // The configured size, else the picture of what was on air, else 720p.
        let seen = feed
            .and_then(|f| f.video_size())
            .filter(|&size| limits::slate_size_in_range(size))
            .map(|(w, h)| (w & !1, h & !1));
        let (width, height) = self.slate_size.or(seen).unwrap_or(DEFAULT_SLATE_SIZE);
        let endpoint = Endpoint::Test(TestEndpoint {
            width,
            height,
            fps: 25,
            bitrate_kbps: 1_000,
            pattern: "smpte".into(),
            audio: true,
            silence: true,
            video_pid: programs.video().map(|v| v.pid).filter(|&p| p >= 0x20),
            audio_pid: programs.audio_pid().filter(|&p| p >= 0x20),
        });
        let mut slot = Slot::new(
            SLATE_ID.into(),
            Role::Input,
            endpoint,
            Some(inner.slate_feed.clone()),
            self.queue_bytes,
        );
        if let Err(e) = self.start_slot(&mut slot) {
            gst::warning!(CAT, "{}: the slate cannot start: {e}", self.name);
            slot.last_error = Some(e.to_string());
        }
        inner.slate = Some(slot);
    }

    /// Starts cold inputs that are needed (nothing of higher priority delivers, or locked) and
    /// stops those no longer needed.
    fn manage_cold(&self, inner: &mut Inner, now: Instant) {
        let young = self.started.elapsed() < START_GRACE;
        let active = self.hub.active();
        let pending = self.hub.pending();
        for i in 1..inner.inputs.len() {
            if !inner.inputs[i].cold {
                continue;
            }
            let needed = inner.switch.locked() == Some(i)
                || (!young && !(0..i).any(|h| inner.switch.alive(h, now)));
            let slot = &mut inner.inputs[i];
            let on_air = slot
                .feed
                .as_ref()
                .is_some_and(|f| f.id == active || f.id == pending);
            match slot.status {
                Status::Standby | Status::Stopped if needed => {
                    if let Err(e) = self.start_slot(slot) {
                        slot.fail(&self.hub, e.to_string(), now);
                    }
                }
                Status::Starting | Status::Running | Status::Retrying if !needed && !on_air => {
                    slot.stop(&self.hub, Status::Standby);
                    slot.restart_at = None;
                }
                _ => {}
            }
        }
    }

    fn on_bus(&self, generation: u64, msg: &gst::Message) {
        use gst::MessageView as M;
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        if inner.closed {
            return;
        }
        let Some(part) = inner.part_by_generation(generation) else {
            return;
        };
        let mut failed = None;
        {
            let Some(slot) = inner.slot(part) else { return };
            match msg.view() {
                M::StateChanged(_) => slot.on_running(),
                M::Warning(w) => {
                    gst::warning!(CAT, "{}/{}: {}", self.name, slot.id, w.error());
                }
                M::Error(e) => {
                    slot.fail(&self.hub, error_reason(e), now);
                    failed = Some(Reason::Error);
                }
                M::Eos(_) if self.on_eos(slot, now) => failed = Some(Reason::Eos),
                _ => {}
            }
        }
        if let (Part::Input(i), Some(why), true) = (part, failed, inner.any_data) {
            // An error or EOS is a loss at once, not after the timeout.
            if let Some(s) = inner.switch.failed(i, why, now) {
                self.apply(&mut inner, s, now);
            }
        }
    }

    /// Handles an end of stream; returns whether the input is gone (not a loop starting over).
    fn on_eos(&self, slot: &mut Slot, now: Instant) -> bool {
        match &slot.endpoint {
            Endpoint::File(f) if f.looped && !slot.delivered() => {
                slot.fail(&self.hub, "the file holds no MPEG-TS to play".into(), now);
                true
            }
            Endpoint::File(f) if f.looped => {
                slot.stop(&self.hub, Status::Starting);
                if let Err(e) = self.start_slot(slot) {
                    slot.fail(&self.hub, e.to_string(), now);
                    return true;
                }
                false
            }
            Endpoint::File(_) => {
                slot.stop(&self.hub, Status::Ended);
                true
            }
            _ => {
                slot.fail(&self.hub, "the stream ended (EOS)".into(), now);
                true
            }
        }
    }

    /// Loss detection, failback and cold standby; runs several times per loss timeout.
    fn on_switch_tick(&self, now: Instant) {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return;
        }
        self.feed_switch(&mut inner, now);
        // Inputs that never delivered are waiting, not lost: the switch starts deciding at the
        // route's first data, and gives the preferred input a moment to connect too.
        inner.any_data |= inner.inputs.iter().any(|s| s.delivered());
        let first_delivered = inner.inputs.first().is_some_and(|s| s.delivered());
        let settled = first_delivered || self.started.elapsed() >= START_GRACE;
        if inner.any_data && settled {
            if let Some(s) = inner.switch.tick(now) {
                self.apply(&mut inner, s, now);
            }
        }
        // An armed cut whose feed never showed a keyframe, or whose on-air feed died meanwhile,
        // happens now. The slate is awaited (its first packet is a keyframe): until it
        // delivers, the lost input stays on air in case it comes back.
        let pending = self.hub.pending();
        if pending != 0 {
            let waited = inner
                .pending_since
                .is_some_and(|t| now.duration_since(t) >= KEYFRAME_WAIT);
            let slate = pending == inner.slate_feed.id;
            if waited || (!slate && !self.on_air_plays(&inner)) {
                let feed = inner.feed_by_id(pending);
                self.hub.cut_to(feed.as_deref());
                inner.pending_since = None;
            }
        }
        self.manage_cold(&mut inner, now);
        // The slate stops once something else goes out.
        let slate_id = inner.slate_feed.id;
        if self.hub.active() != slate_id
            && self.hub.pending() != slate_id
            && inner.switch.active() != Source::Slate
        {
            if let Some(mut slate) = inner.slate.take() {
                slate.stop(&self.hub, Status::Stopped);
            }
        }
    }

    /// Restarts what is due; with `full` (once a second) also the slots' meters and checks.
    fn on_tick(&self, now: Instant, full: bool) {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return;
        }
        let Inner {
            inputs,
            outputs,
            slate,
            ..
        } = &mut *inner;
        for slot in inputs
            .iter_mut()
            .chain(outputs.iter_mut())
            .chain(slate.iter_mut())
        {
            if full {
                slot.tick(&self.hub, now);
            }
            if slot.status == Status::Retrying && slot.restart_at.is_some_and(|t| t <= now) {
                if let Err(e) = self.start_slot(slot) {
                    slot.fail(&self.hub, e.to_string(), now);
                }
            }
        }
    }

    /// When the switch must be checked next, after a check at `now`. A route with several
    /// inputs is checked several times per loss timeout (failback needs each input's unbroken
    /// run of data). A route with one input only at the moment its input would count as lost,
    /// and one that never received anything once a second: there is nothing to decide before.
    fn next_check(&self, now: Instant) -> Instant {
        let inner = lock(&self.inner);
        let loss = inner.switch.config().loss_timeout;
        let period = (loss / SWITCH_CHECKS_PER_TIMEOUT).clamp(Duration::from_millis(10), TICK);
        if !inner.any_data && self.started.elapsed() >= START_GRACE {
            return now + TICK;
        }
        let busy = self.hub.pending() != 0 || inner.slate.is_some();
        if let ([only], false) = (inner.inputs.as_slice(), busy) {
            if let Some(t) = only.feed.as_ref().and_then(|f| self.hub.last_data(f)) {
                if inner.switch.alive(0, now) {
                    return (t + loss).max(now + period);
                }
            }
        }
        now + period
    }

    /// When the control thread must next wake up: the earliest restart, or the next tick.
    fn next_wake(&self, next_tick: Instant) -> Instant {
        let inner = lock(&self.inner);
        inner
            .inputs
            .iter()
            .chain(inner.outputs.iter())
            .chain(inner.slate.iter())
            .filter_map(|s| s.restart_at)
            .fold(next_tick, Instant::min)
    }
}

/// A bus error's text, with the cause some elements only put in the debug string.
fn error_reason(e: &gst::message::Error) -> String {
    let mut reason = e.error().to_string();
    if let Some(d) = e.debug() {
        // Skip GStreamer's own "file.c(line): function (): /GstPipeline:…" location lines.
        let cause = d.lines().map(str::trim).rfind(|l| {
            !l.is_empty() && !l.contains(".c(") && !l.starts_with("/Gst") && !reason.contains(l)
        });
        if let Some(c) = cause {
            reason = format!("{reason} ({c})");
        }
    }
    reason
}

/// Checks what a URI cannot say by itself but this host can: the network interface it names
/// exists.
fn on_this_host(endpoint: Endpoint) -> Result<Endpoint> {
    if let Endpoint::Udp(u) = &endpoint {
        if !u.iface_exists() {
            let name = u.iface.as_deref().unwrap_or_default();
            return Err(Error::uri(
                &endpoint,
                format!("network interface `iface={name}` does not exist on this host"),
            ));
        }
    }
    Ok(endpoint)
}

/// An input slot with a new hub feed.
fn input_slot(id: String, endpoint: Endpoint, cold: bool, hub: &Hub, queue_bytes: u64) -> Slot {
    let mut slot = Slot::new(id, Role::Input, endpoint, Some(hub.feed()), queue_bytes);
    slot.cold = cold;
    if cold {
        slot.status = Status::Standby;
    }
    slot
}

impl Drop for Route {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether one of `slots` has the id.
fn has_id(slots: &[Slot]) -> impl Fn(&str) -> bool + '_ {
    move |id| slots.iter().any(|s| s.id == id)
}

/// The id of a new input or output: the given one (checked), or `{prefix}{n}`.
fn slot_id(
    what: &str,
    prefix: &str,
    given: Option<&str>,
    next: &mut usize,
    taken: impl Fn(&str) -> bool,
) -> Result<String> {
    let id = match given {
        Some(id) => {
            check_name(what, id)?;
            if id == SLATE_ID {
                return Err(Error::InvalidConfig(format!(
                    "{what} id `{SLATE_ID}` is reserved for the route's slate"
                )));
            }
            id.to_string()
        }
        None => loop {
            let candidate = format!("{prefix}{next}");
            *next += 1;
            if !taken(&candidate) {
                break candidate;
            }
        },
    };
    if taken(&id) {
        return Err(Error::AlreadyExists(format!("{what} `{id}`")));
    }
    Ok(id)
}

/// The route's control thread: bus messages, restarts, switch checks and ticks until shutdown.
/// Holds only a weak reference, so dropping the last `Arc<Route>` ends it.
fn control_loop(route: std::sync::Weak<Route>, rx: Receiver<Event>) {
    let mut next_tick = Instant::now() + TICK;
    let mut next_check = match route.upgrade() {
        Some(r) => r.next_check(Instant::now()),
        None => return,
    };
    loop {
        let wake = match route.upgrade() {
            Some(r) => r.next_wake(next_tick).min(next_check),
            None => return,
        };
        let event = rx.recv_timeout(wake.saturating_duration_since(Instant::now()));
        let Some(r) = route.upgrade() else { return };
        match event {
            Ok(Event::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Event::Bus { generation, msg }) => {
                r.on_bus(generation, &msg);
                next_check = next_check.min(r.next_check(Instant::now()));
            }
            Ok(Event::Reschedule) => {
                next_check = next_check.min(r.next_check(Instant::now()));
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if now >= next_check {
                    r.on_switch_tick(now);
                    next_check = r.next_check(now);
                }
                let full = now >= next_tick;
                if full {
                    next_tick = now + TICK;
                }
                r.on_tick(now, full);
            }
        }
    }
}
