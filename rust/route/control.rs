//! The route's control thread: bus messages, restarts, switch checks and meter ticks.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use super::slot::{Slot, Status};
use super::timers::{Schedule, TICK};
use super::{lock, Event, Part, Route, CAT};
use crate::switch::Reason;
use crate::uri::Endpoint;

impl Route {
    /// Has the control thread work out its next switch check again (see `next_check`).
    pub(super) fn reschedule(&self) {
        let _ = self.events.send(Event::Reschedule);
    }

    pub(super) fn on_bus(&self, generation: u64, msg: &gst::Message) {
        use gst::MessageView as M;
        let now = self.clock.now();
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
                M::StateChanged(_) => slot.on_running(now),
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
            // An error or EOS is a loss at once, not after the timeout (reported before the
            // switch it causes).
            let switched = inner.switch.failed(i, why, now);
            self.notice_inputs(&mut inner, now, Some(i));
            if let Some(s) = switched {
                self.apply(&mut inner, s, now);
            }
        }
        // An output that failed says so at once; the rest is seen at the next tick.
        self.notice_route(
            &mut inner,
            matches!(part, Part::Output(_)) && failed.is_some(),
        );
    }

    /// Handles an end of stream; returns whether the input is gone (not a loop starting over).
    pub(super) fn on_eos(&self, slot: &mut Slot, now: Instant) -> bool {
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

    /// Restarts what is due; with `full` (once a second) also the slots' meters and checks.
    pub(super) fn on_tick(&self, now: Instant, full: bool) {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return;
        }
        for slot in inner.slots_mut() {
            if full {
                slot.tick(&self.hub, now);
            }
            if slot.status == Status::Retrying && slot.restart_at.is_some_and(|t| t <= now) {
                if let Err(e) = self.start_slot(slot) {
                    slot.fail(&self.hub, e.to_string(), now);
                }
            }
        }
        if full {
            self.notice_route(&mut inner, true);
            self.sample(&mut inner, false);
        }
    }

    /// When the switch must be checked next, after a check at `now` (see
    /// `Timers::next_check`).
    pub(super) fn next_check(&self, now: Instant) -> Instant {
        let inner = lock(&self.inner);
        let schedule = Schedule {
            loss_timeout: inner.switch.config().loss_timeout,
            any_data: inner.any_data,
            busy: self.hub.pending() != 0 || inner.slate.is_some(),
            inputs: inner.inputs.len(),
            first_data: inner
                .inputs
                .first()
                .and_then(|s| s.feed.as_ref())
                .and_then(|f| self.hub.last_data(f)),
            first_alive: inner.switch.alive(0, now),
        };
        inner.timers.next_check(now, &schedule)
    }

    /// When the control thread must next wake up: the earliest restart, or the next tick.
    pub(super) fn next_wake(&self, next_tick: Instant) -> Instant {
        let inner = lock(&self.inner);
        (inner.slots())
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

/// The route's control thread: bus messages, restarts, switch checks and ticks until shutdown.
/// Holds only a weak reference, so dropping the last `Arc<Route>` ends it.
pub(super) fn control_loop(route: std::sync::Weak<Route>, rx: Receiver<Event>) {
    let (clock, mut next_check) = match route.upgrade() {
        Some(r) => (r.clock.clone(), r.next_check(r.clock.now())),
        None => return,
    };
    let mut next_tick = clock.now() + TICK;
    loop {
        let wake = match route.upgrade() {
            Some(r) => r.next_wake(next_tick).min(next_check),
            None => return,
        };
        let event = rx.recv_timeout(wake.saturating_duration_since(clock.now()));
        let Some(r) = route.upgrade() else { return };
        match event {
            Ok(Event::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Event::Bus { generation, msg }) => {
                r.on_bus(generation, &msg);
                next_check = next_check.min(r.next_check(clock.now()));
            }
            Ok(Event::Reschedule) => {
                next_check = next_check.min(r.next_check(clock.now()));
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = clock.now();
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
