//! Live edits: inputs and outputs added, removed or changed while the route runs. The public
//! calls and `reconfigure` share the same steps (`add_output_slot`, `take_output`,
//! `add_input_slot`, `remove_input_at`); `reconfigure` runs them as `plan::plan` says.

use super::lifecycle::input_slot;
use super::plan::{plan, Entry};
use super::slot::{Slot, Status};
use super::spec::{conflicting_output, slot_id, wanted, Checked, RouteSpec, Wanted};
use super::{lock, Inner, Route};
use crate::error::{Error, Result};
use crate::switch::Source;
use crate::uri::Role;

/// What `Route::reconfigure` changed; ids as the route names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
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

impl Route {
    /// Where the input or output `id` is in `slots`.
    pub(super) fn position(&self, slots: &[Slot], what: &str, id: &str) -> Result<usize> {
        slots
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| Error::NotFound(format!("{what} `{id}` of route `{}`", self.name)))
    }

    /// Refuses edits once the route is shut down.
    fn check_open(&self, inner: &Inner) -> Result<()> {
        if inner.closed {
            return Err(Error::Closed(format!("route `{}`", self.name)));
        }
        Ok(())
    }

    /// Adds an output to the running route; the other outputs see no gap. Returns its id.
    pub fn add_output(&self, uri: &str, id: Option<&str>) -> Result<String> {
        let Wanted { endpoint, .. } = wanted(Role::Output, String::new(), uri)?;
        let mut inner = lock(&self.inner);
        self.check_open(&inner)?;
        let others = inner.outputs.iter().map(|s| (s.id.as_str(), &s.endpoint));
        if let Some(e) = conflicting_output(others, &endpoint) {
            return Err(e.at("uri"));
        }
        let mut next = inner.next_output;
        let id = slot_id(Role::Output, id, &mut next, has_id(&inner.outputs))?;
        let wanted = Wanted {
            id: id.clone(),
            endpoint,
            cold: false,
        };
        self.add_output_slot(&mut inner, wanted)?;
        inner.next_output = next;
        Ok(id)
    }

    /// Claims, starts and attaches a new output.
    fn add_output_slot(&self, inner: &mut Inner, w: Wanted) -> Result<()> {
        let queue_bytes = self.settings.queue_bytes;
        let mut slot = Slot::new(w.id, Role::Output, w.endpoint, None, queue_bytes);
        self.claim_and_start(&mut slot)?;
        inner.outputs.push(slot);
        Ok(())
    }

    /// Takes output `i` out of the route and releases its address; the caller stops it.
    fn take_output(&self, inner: &mut Inner, i: usize) -> Slot {
        let slot = inner.outputs.remove(i);
        self.claims.release(&self.owner(&slot.id));
        slot
    }

    /// Removes an output from the running route; the other outputs see no gap.
    pub fn remove_output(&self, id: &str) -> Result<()> {
        let mut inner = lock(&self.inner);
        let i = self.position(&inner.outputs, "output", id)?;
        let mut slot = self.take_output(&mut inner, i);
        drop(inner);
        slot.stop(&self.hub, Status::Stopped);
        self.claims.await_free(&self.owner(id));
        Ok(())
    }

    /// Adds an input at the lowest priority while the route runs; what goes out is untouched
    /// unless the route was on the slate. Returns its id.
    pub fn add_input(&self, uri: &str, id: Option<&str>) -> Result<String> {
        let mut inner = lock(&self.inner);
        self.check_open(&inner)?;
        let mut next = inner.next_input;
        let id = slot_id(Role::Input, id, &mut next, has_id(&inner.inputs))?;
        let wanted = wanted(Role::Input, id.clone(), uri)?;
        self.add_input_slot(&mut inner, wanted)?;
        inner.next_input = next;
        self.reschedule();
        Ok(id)
    }

    /// Claims and starts (unless cold) a new input at the lowest priority and tells the switch.
    fn add_input_slot(&self, inner: &mut Inner, w: Wanted) -> Result<()> {
        let queue_bytes = self.settings.queue_bytes;
        let mut slot = input_slot(w.id, w.endpoint, w.cold, &self.hub, queue_bytes);
        self.claim_and_start(&mut slot)?;
        inner.inputs.push(slot);
        self.note_sole(inner);
        self.note_priority(inner);
        let now = self.clock.now();
        if let Some(s) = inner.switch.input_added(now) {
            self.apply(inner, s, now);
        }
        Ok(())
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
        self.claims.await_free(&self.owner(id));
        Ok(())
    }

    /// Stops and removes input `i`, releases its address and lets the switch choose again.
    fn remove_input_at(&self, inner: &mut Inner, i: usize) {
        let mut slot = inner.inputs.remove(i);
        self.claims.release(&self.owner(&slot.id));
        slot.stop(&self.hub, Status::Stopped);
        self.note_sole(inner);
        self.note_priority(inner);
        let now = self.clock.now();
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
        self.settings.needs_restart(spec)
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
            settings,
            inputs: want_inputs,
            outputs: want_outputs,
            ..
        } = Checked::new(spec)?;
        let mut inner = lock(&self.inner);
        self.check_open(&inner)?;
        let plan = plan(
            &slot_entries(&inner.inputs),
            &slot_entries(&inner.outputs),
            &wanted_entries(&want_inputs),
            &wanted_entries(&want_outputs),
        );
        let mut applied = Applied::default();
        let (loss_timeout, failback_after) =
            (settings.switch.loss_timeout, settings.switch.failback_after);
        let old = *inner.switch.config();
        if (old.loss_timeout, old.failback_after) != (loss_timeout, failback_after) {
            inner.switch.set_timing(loss_timeout, failback_after);
            applied.settings = true;
        }
        if self.hub.gop_cache_stats().limit_bytes != settings.gop_cache_bytes {
            self.hub.set_gop_cache_bytes(settings.gop_cache_bytes);
            applied.settings = true;
        }

        // Outputs: stop what goes, then start what comes.
        for id in plan.outputs.remove {
            let i = self.position(&inner.outputs, "output", &id)?;
            let mut slot = self.take_output(&mut inner, i);
            slot.stop(&self.hub, Status::Stopped);
            applied.outputs_removed.push(id);
        }
        for n in plan.outputs.add {
            let w = want_outputs[n].clone();
            let id = w.id.clone();
            self.add_output_slot(&mut inner, w)?;
            applied.outputs_added.push(id);
        }

        // Inputs likewise: a changed input may keep its port, so the old one goes first (the
        // switch covers with another input or the slate meanwhile).
        for id in plan.inputs.remove {
            let i = self.position(&inner.inputs, "input", &id)?;
            self.remove_input_at(&mut inner, i);
            applied.inputs_removed.push(id);
        }
        for n in plan.inputs.add {
            let w = want_inputs[n].clone();
            let id = w.id.clone();
            self.add_input_slot(&mut inner, w)?;
            applied.inputs_added.push(id);
        }
        // Priority order as the spec gives it.
        if let Some(order) = plan.order {
            let mut old: Vec<Option<Slot>> = inner.inputs.drain(..).map(Some).collect();
            inner.inputs = order.iter().filter_map(|&o| old[o].take()).collect();
            let now = self.clock.now();
            self.feed_switch(&mut inner, now);
            if let Some(s) = inner.switch.reorder(&order, now) {
                self.apply(&mut inner, s, now);
            }
            self.note_priority(&inner);
            applied.reordered = true;
        }
        self.reschedule();
        Ok(applied)
    }
}

/// Whether one of `slots` has the id.
fn has_id(slots: &[Slot]) -> impl Fn(&str) -> bool + '_ {
    move |id| slots.iter().any(|s| s.id == id)
}

fn slot_entries(slots: &[Slot]) -> Vec<Entry<'_>> {
    (slots.iter())
        .map(|s| Entry::from((s.id.as_str(), &s.endpoint, s.cold)))
        .collect()
}

fn wanted_entries(wanted: &[Wanted]) -> Vec<Entry<'_>> {
    (wanted.iter())
        .map(|w| Entry::from((w.id.as_str(), &w.endpoint, w.cold)))
        .collect()
}
