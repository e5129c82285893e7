//! Routes and the gateway that holds them.
//!
//! A route owns its inputs and outputs (each a separate pipeline), the hub between them, and one
//! control thread. The control thread reads every bus message of the route's pipelines (their
//! sync handlers forward into one channel), restarts what failed after a backoff, and ticks the
//! rate meters. API calls run on the caller's thread under the same `inner` lock, so all state
//! changes of a route are serialised and none happens on a streaming thread.
//!
//! Lock order: `Gateway.routes` → `Route.inner` → `Claims` → hub locks.

mod claims;
mod gateway;
mod slot;

pub use claims::Claims;
pub use gateway::{Gateway, OutputSpec, RouteSpec};
pub use slot::EndpointStats;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::hub::{Hub, DEFAULT_TAP_QUEUE_BYTES};
use crate::uri::{Endpoint, Role};
use slot::{Slot, Status};

pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-route",
        gst::DebugColorFlags::empty(),
        Some("castway routes"),
    )
});

const TICK: Duration = Duration::from_secs(1);

/// Sets a pipeline's state on a helper thread and waits at most `timeout` for it: a sink stuck
/// in a blocking call (a FIFO nobody reads, a filesystem that hangs) must not hold up the route.
/// `None` means the change did not finish in time and goes on alone.
pub(crate) fn set_state_bounded(
    pipeline: &gst::Pipeline,
    state: gst::State,
    timeout: Duration,
) -> Option<std::result::Result<gst::StateChangeSuccess, gst::StateChangeError>> {
    use gst::prelude::*;
    let (tx, rx) = mpsc::channel();
    let p = pipeline.clone();
    std::thread::Builder::new()
        .name("castway-state".into())
        .spawn(move || {
            let _ = tx.send(p.set_state(state));
        })
        .ok()?;
    rx.recv_timeout(timeout).ok()
}

pub(crate) enum Event {
    Bus { generation: u64, msg: gst::Message },
    Shutdown,
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
}

struct Inner {
    inputs: Vec<Slot>,
    outputs: Vec<Slot>,
    next_output: usize,
    closed: bool,
}

impl Inner {
    fn slot_by_generation(&mut self, generation: u64) -> Option<&mut Slot> {
        self.inputs
            .iter_mut()
            .chain(self.outputs.iter_mut())
            .find(|s| s.generation == generation)
    }
}

/// One logical stream: inputs → hub → outputs.
pub struct Route {
    pub name: String,
    hub: Arc<Hub>,
    inner: Mutex<Inner>,
    events: Sender<Event>,
    generations: AtomicU64,
    claims: Arc<Claims>,
    queue_bytes: u64,
    started: Instant,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Route, input and output names: what fits in a URL path and a log line.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{what} name `{name}` must be 1 to 64 characters of A-Z, a-z, 0-9, `-`, `_`, `.`"
        )))
    }
}

impl Route {
    /// Builds and starts a route. Every URI is parsed and every listening address claimed
    /// before anything starts; on error nothing is left running.
    fn start(spec: RouteSpec, claims: Arc<Claims>) -> Result<Arc<Route>> {
        check_name("route", &spec.name)?;
        if spec.inputs.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "route `{}` needs at least one input",
                spec.name
            )));
        }
        let queue_bytes = spec.queue_bytes.unwrap_or(DEFAULT_TAP_QUEUE_BYTES);
        if queue_bytes < 64 * 1024 {
            return Err(Error::InvalidConfig(format!(
                "queue_bytes={queue_bytes} is below 65536"
            )));
        }
        let hub = Arc::new(Hub::default());
        let mut inputs = Vec::new();
        for (i, uri) in spec.inputs.iter().enumerate() {
            let endpoint = Endpoint::parse(uri, Role::Input)?;
            inputs.push(Slot::new(
                format!("in{i}"),
                Role::Input,
                endpoint,
                Some(hub.feed(i)),
                queue_bytes,
            ));
        }
        let mut outputs = Vec::new();
        let mut next_output = 0;
        for o in &spec.outputs {
            let id = output_id(o.id.as_deref(), &mut next_output, &outputs)?;
            outputs.push(Slot::new(
                id,
                Role::Output,
                Endpoint::parse(&o.uri, Role::Output)?,
                None,
                queue_bytes,
            ));
        }
        let binds: Vec<(String, &Endpoint, Role)> = inputs
            .iter()
            .chain(outputs.iter())
            .map(|s| (format!("{}/{}", spec.name, s.id), &s.endpoint, s.role))
            .collect();
        claims.claim_all(&binds)?;
        if let Some(Endpoint::File(f)) = inputs.first().map(|s| &s.endpoint) {
            hub.set_track_timeline(f.looped);
        }

        let (tx, rx) = mpsc::channel();
        let route = Arc::new(Route {
            name: spec.name.clone(),
            hub,
            inner: Mutex::new(Inner {
                inputs,
                outputs,
                next_output,
                closed: false,
            }),
            events: tx,
            generations: AtomicU64::new(1),
            claims,
            queue_bytes,
            started: Instant::now(),
            thread: Mutex::new(None),
        });
        {
            let mut inner = lock(&route.inner);
            // Outputs first, so the first input buffer already finds them attached.
            let Inner {
                inputs, outputs, ..
            } = &mut *inner;
            for slot in outputs.iter_mut().chain(inputs.iter_mut()) {
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
        slot.start(&self.name, &self.hub, &self.events, generation)
    }

    /// Adds an output to the running route; the other outputs see no gap. Returns its id.
    pub fn add_output(&self, uri: &str, id: Option<&str>) -> Result<String> {
        let endpoint = Endpoint::parse(uri, Role::Output)?;
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Err(Error::Closed(format!("route `{}`", self.name)));
        }
        let mut next = inner.next_output;
        let id = output_id(id, &mut next, &inner.outputs)?;
        let owner = format!("{}/{id}", self.name);
        self.claims
            .claim_all(&[(owner.clone(), &endpoint, Role::Output)])?;
        let mut slot = Slot::new(id.clone(), Role::Output, endpoint, None, self.queue_bytes);
        if let Err(e) = self.start_slot(&mut slot) {
            self.claims.release(&owner);
            return Err(e);
        }
        inner.next_output = next;
        inner.outputs.push(slot);
        Ok(id)
    }

    /// Removes an output from the running route; the other outputs see no gap.
    pub fn remove_output(&self, id: &str) -> Result<()> {
        let mut inner = lock(&self.inner);
        let i = inner
            .outputs
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| Error::NotFound(format!("output `{id}` of route `{}`", self.name)))?;
        let mut slot = inner.outputs.remove(i);
        self.claims.release(&format!("{}/{id}", self.name));
        drop(inner);
        slot.stop(&self.hub, Status::Stopped);
        Ok(())
    }

    pub fn stats(&self) -> RouteStats {
        let now = Instant::now();
        let inner = lock(&self.inner);
        let inputs: Vec<EndpointStats> = inner
            .inputs
            .iter()
            .map(|s| s.stats(&self.hub, now))
            .collect();
        let outputs: Vec<EndpointStats> = inner
            .outputs
            .iter()
            .map(|s| s.stats(&self.hub, now))
            .collect();
        let active_input = inputs.iter().find(|s| s.active).map(|s| s.id.clone());
        let state = if inner.closed {
            "stopped"
        } else if inputs.iter().any(|s| s.active && s.state == "live") {
            "live"
        } else {
            "waiting"
        };
        RouteStats {
            name: self.name.clone(),
            state,
            uptime_s: self.started.elapsed().as_secs_f64(),
            active_input,
            inputs,
            outputs,
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
                    inputs, outputs, ..
                } = &mut *inner;
                // Inputs first: nothing new reaches the hub while the outputs close.
                for slot in inputs.iter_mut().chain(outputs.iter_mut()) {
                    slot.stop(&self.hub, Status::Stopped);
                }
                // Once only: a later call (Drop) must not free a new route of the same name.
                self.claims.release_prefix(&format!("{}/", self.name));
            }
        }
        let _ = self.events.send(Event::Shutdown);
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
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
        let Some(slot) = inner.slot_by_generation(generation) else {
            return;
        };
        match msg.view() {
            M::StateChanged(_) => slot.on_running(),
            M::Warning(w) => {
                gst::warning!(CAT, "{}/{}: {}", self.name, slot.id, w.error());
            }
            M::Error(e) => {
                let mut reason = e.error().to_string();
                if let Some(d) = e.debug() {
                    // Some elements put the cause in the debug string; skip GStreamer's own
                    // "file.c(line): function (): /GstPipeline:…" location lines.
                    let cause = d.lines().map(str::trim).rfind(|l| {
                        !l.is_empty()
                            && !l.contains(".c(")
                            && !l.starts_with("/Gst")
                            && !reason.contains(l)
                    });
                    if let Some(c) = cause {
                        reason = format!("{reason} ({c})");
                    }
                }
                slot.fail(&self.hub, reason, now);
            }
            M::Eos(_) => self.on_eos(slot, now),
            _ => {}
        }
    }

    fn on_eos(&self, slot: &mut Slot, now: Instant) {
        match &slot.endpoint {
            Endpoint::File(f) if f.looped && !slot.delivered() => {
                slot.fail(&self.hub, "the file holds no MPEG-TS to play".into(), now);
            }
            Endpoint::File(f) if f.looped => {
                slot.stop(&self.hub, Status::Starting);
                if slot
                    .feed
                    .as_ref()
                    .is_some_and(|f| f.index == self.hub.active())
                {
                    self.hub.timeline_restart();
                }
                if let Err(e) = self.start_slot(slot) {
                    slot.fail(&self.hub, e.to_string(), now);
                }
            }
            Endpoint::File(_) => slot.stop(&self.hub, Status::Ended),
            _ => slot.fail(&self.hub, "the stream ended (EOS)".into(), now),
        }
    }

    fn on_tick(&self, now: Instant) {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return;
        }
        let Inner {
            inputs, outputs, ..
        } = &mut *inner;
        for slot in inputs.iter_mut().chain(outputs.iter_mut()) {
            slot.tick(&self.hub, now);
            if slot.status == Status::Retrying && slot.restart_at.is_some_and(|t| t <= now) {
                if let Err(e) = self.start_slot(slot) {
                    slot.fail(&self.hub, e.to_string(), now);
                }
            }
        }
    }

    /// When the control thread must next wake up: the earliest restart, or the next tick.
    fn next_wake(&self, next_tick: Instant) -> Instant {
        let inner = lock(&self.inner);
        inner
            .inputs
            .iter()
            .chain(inner.outputs.iter())
            .filter_map(|s| s.restart_at)
            .fold(next_tick, Instant::min)
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn output_id(given: Option<&str>, next: &mut usize, existing: &[Slot]) -> Result<String> {
    let id = match given {
        Some(id) => {
            check_name("output", id)?;
            id.to_string()
        }
        None => loop {
            let candidate = format!("out{next}");
            *next += 1;
            if !existing.iter().any(|s| s.id == candidate) {
                break candidate;
            }
        },
    };
    if existing.iter().any(|s| s.id == id) {
        return Err(Error::AlreadyExists(format!("output `{id}`")));
    }
    Ok(id)
}

/// The route's control thread: bus messages, restarts and ticks until shutdown. Holds only a
/// weak reference, so dropping the last `Arc<Route>` ends it.
fn control_loop(route: std::sync::Weak<Route>, rx: Receiver<Event>) {
    let mut next_tick = Instant::now() + TICK;
    loop {
        let wake = match route.upgrade() {
            Some(r) => r.next_wake(next_tick),
            None => return,
        };
        let event = rx.recv_timeout(wake.saturating_duration_since(Instant::now()));
        let Some(r) = route.upgrade() else { return };
        match event {
            Ok(Event::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Event::Bus { generation, msg }) => r.on_bus(generation, &msg),
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if now >= next_tick {
                    next_tick = now + TICK;
                }
                r.on_tick(now);
            }
        }
    }
}
