//! Building a route, starting and stopping its slots, and shutting it down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::control::control_loop;
use super::slot::{Slot, Status};
use super::spec::{Checked, RouteSpec};
use super::timers::{Clock, Timers};
use super::{lock, Inner, Route};
use crate::error::{Error, Result};
use crate::events::EventLog;
use crate::gateway::Claims;
use crate::hub::Hub;
use crate::switch::{Reason, Switch, HISTORY};
use crate::uri::{Endpoint, Role};

impl Route {
    /// Checks a spec without starting anything: name, ids, URIs and settings.
    pub fn check(spec: &RouteSpec) -> Result<()> {
        Checked::new(spec).map(|_| ())
    }

    /// Builds and starts a route whose timers read `clock`. Every URI is parsed and every
    /// listening address claimed before anything starts; on error nothing is left running.
    pub(crate) fn start(
        spec: RouteSpec,
        claims: Arc<Claims>,
        clock: Arc<dyn Clock>,
        log: Arc<EventLog>,
    ) -> Result<Arc<Route>> {
        let Checked {
            settings,
            inputs: want_inputs,
            outputs: want_outputs,
            next_input,
            next_output,
        } = Checked::new(&spec)?;
        let queue_bytes = settings.queue_bytes;
        let hub = Arc::new(Hub::new(settings.gop_cache_bytes));
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
        let switch = Switch::new(inputs.len(), settings.switch);
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
                by_reason: [0; Reason::ALL.len()],
                timers: Timers::new(clock.now()),
                any_data: false,
                next_input,
                next_output,
                closed: false,
                reported_state: None,
                samples: Default::default(),
                recorder: None,
                recording: false,
                recorded_before: Default::default(),
            }),
            hub,
            log,
            events: tx,
            generations: AtomicU64::new(1),
            claims,
            settings,
            clock,
            thread: Mutex::new(None),
            stopped: Default::default(),
        });
        {
            let mut inner = lock(&route.inner);
            // The first input goes out until the switch says otherwise.
            route.hub.cut_to(inner.inputs[0].feed.as_deref());
            route.note_sole(&inner);
            route.note_priority(&inner);
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
            inner.reported_state = Some("waiting");
            route.report_state(None, "waiting");
        }
        let weak = Arc::downgrade(&route);
        let handle = std::thread::Builder::new()
            .name(format!("castway-{}", spec.name))
            .spawn(move || control_loop(weak, rx))
            .map_err(|e| Error::pipeline(format!("cannot start the control thread: {e}")))?;
        *lock(&route.thread) = Some(handle);
        Ok(route)
    }

    /// Starts (or restarts) a slot's pipeline under a new generation. A restarted input
    /// starts a new run for the outputs if it is on air.
    pub(super) fn start_slot(&self, slot: &mut Slot) -> Result<()> {
        let generation = self.generations.fetch_add(1, Relaxed);
        let restart = slot.starts > 0;
        let now = self.clock.now();
        let shared = &self.claims.shared_srt;
        slot.start(&self.name, &self.hub, &self.events, generation, now, shared)?;
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
    pub(super) fn claim_and_start(&self, slot: &mut Slot) -> Result<()> {
        let owner = self.owner(&slot.id);
        self.claims
            .claim_all(&[(owner.clone(), &slot.endpoint, slot.role)])?;
        if slot.cold {
            return Ok(());
        }
        self.start_slot(slot)
            .inspect_err(|_| self.claims.release(&owner))
    }

    /// The name a slot's claims go by: `route/id`.
    pub(super) fn owner(&self, id: &str) -> String {
        format!("{}/{id}", self.name)
    }

    /// Stops every pipeline and the control thread, and releases the route's addresses.
    /// Idempotent.
    pub fn shutdown(&self) {
        // The state it stopped from, the first time only (none if it never started).
        let mut stopped_from = None;
        let mut recorder = None;
        self.settle_recording();
        {
            let mut inner = lock(&self.inner);
            if !inner.closed {
                inner.closed = true;
                self.stopped
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                if std::mem::take(&mut inner.recording) {
                    drop(self.hub.detach(crate::record::TAP_ID));
                    recorder = inner.recorder.clone();
                }
                stopped_from = inner.reported_state.replace("stopped");
                // Inputs first: nothing new reaches the hub while the outputs close.
                for slot in inner.slots_mut() {
                    slot.stop(&self.hub, Status::Stopped);
                }
                self.hub.drop_deferred();
                // Once only: a later call (Drop) must not free a new route of the same name.
                self.claims.release_prefix(&format!("{}/", self.name));
                self.claims.shared_srt.set_priority(&self.name, &[]);
            }
        }
        // What the recorder still holds reaches its segment (with the route's lock let go).
        if let Some(r) = recorder {
            r.finish();
        }
        // Returns when the route's ports can be bound again.
        self.claims.await_route_free(&self.name);
        // Reported once the ports are free (this also ends `wait_switch`).
        if let Some(from) = stopped_from {
            self.report_state(Some(from), "stopped");
        }
        let _ = self.events.send(super::Event::Shutdown);
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

/// An input slot with a new hub feed.
pub(super) fn input_slot(
    id: String,
    endpoint: Endpoint,
    cold: bool,
    hub: &Hub,
    queue_bytes: u64,
) -> Slot {
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
