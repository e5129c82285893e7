//! A route: one logical stream, inputs → switch → hub → outputs.
//!
//! A route owns its inputs and outputs (each a separate pipeline, held by a [`slot::Slot`]),
//! the hub between them, and one control thread. The control thread reads every bus message
//! of the route's pipelines (their sync handlers forward into one channel), restarts what
//! failed after a backoff, checks the switch and ticks the rate meters. API calls run on the
//! caller's thread under the same `inner` lock, so all state changes of a route are serialised
//! and none happens on a streaming thread.
//!
//! The code is split by job. The files that act on a route (`lifecycle`, `edit`, `failover`,
//! `control`, `stats`) each add their own `impl Route` block; `spec`, `plan` and `timers` are
//! pure and know nothing of it:
//! - `spec`: the spec types and their checks (names, ids, URIs, settings);
//! - `lifecycle`: building and shutting down the route, starting and stopping its slots;
//! - `plan`: what `reconfigure` changes, worked out purely before anything changes;
//! - `edit`: live edits (add or remove an input or output, `reconfigure` by a plan);
//! - `failover`: the glue between the switch and the hub (decisions, slate, cold standby);
//! - `control`: the control thread (bus messages, restarts, ticks, when to check next);
//! - `stats`: what `stats()` returns;
//! - `notice`: what the control thread reports to the gateway's event log (state changes,
//!   lost and recovered inputs, outputs and SRT callers), by comparing with what it last saw;
//! - `timers`: the route's clock, start grace, keyframe wait and check schedule (pure);
//! - `slot`: one input or output and its restart policy.
//!
//! Lock order: `Route.inner` → `Claims.state` → the hub's locks (`splice` → `Feed::state` →
//! `taps`). `Route.thread` and `Gateway.routes` are only taken with no other lock held. The
//! gateway's event log is a leaf: pushed to under `Route.inner`, waited on with no lock held.

mod control;
mod edit;
mod failover;
mod history;
mod lifecycle;
mod notice;
mod picture;
mod plan;
mod record;
mod slot;
mod spec;
mod stats;
mod timers;
mod wait;

pub use edit::Applied;
pub use history::{EndpointSample, Sample, HISTORY_SECONDS};
pub use picture::Decoding;
pub use spec::{
    assign_ids, check_name, check_spec, parse_slate_size, InputSpec, OutputSpec, RecordingSpec,
    RouteSpec, SpecKind, SwitchSpec,
};
pub use stats::{EndpointStats, InputStats, RouteStats, SwitchRecord, SwitchStats};
pub(crate) use timers::SystemClock;

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::Sender;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::events::EventLog;
use crate::gateway::Claims;
use crate::hub::{Feed, Hub};
use crate::limits::SLATE_ID;
use crate::switch::{Reason, Source, Switch};
use slot::Slot;
use spec::RouteSettings;
use timers::{Clock, Timers};

pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "castway-route",
        gst::DebugColorFlags::empty(),
        Some("castway routes"),
    )
});

/// What the route's control thread receives.
pub(crate) enum Event {
    /// A bus message of the pipeline started as `generation`.
    Bus {
        generation: u64,
        msg: gst::Message,
    },
    /// Something the next switch check depends on changed (timing, inputs, a lock).
    Reschedule,
    Shutdown,
}

/// A route's mutable state: its slots, its switch and what the switch decided.
struct Inner {
    inputs: Vec<Slot>,
    outputs: Vec<Slot>,
    /// The slate's pipeline while it runs; its feed stays.
    slate: Option<Slot>,
    slate_feed: Arc<Feed>,
    switch: Switch,
    history: VecDeque<SwitchRecord>,
    seq: u64,
    /// Switches since the start, by `Reason as usize`.
    by_reason: [u64; Reason::ALL.len()],
    timers: Timers,
    /// Some input delivered data since the route started.
    any_data: bool,
    next_input: usize,
    next_output: usize,
    closed: bool,
    /// The route's state as last reported to the event log (None: not yet).
    reported_state: Option<&'static str>,
    /// One sample of its figures a second (`history.rs`).
    samples: history::History,
    /// The route's last recorder (kept after a stop for its stats) and whether it records.
    recorder: Option<Arc<crate::record::Recorder>>,
    recording: bool,
    /// What the route's earlier recorders did (each start adds the last one's figures).
    recorded_before: record::Earlier,
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

    /// Every slot of the route: the inputs, the slate, then the outputs (the order a shutdown
    /// stops them in: nothing new reaches the hub while the outputs close).
    fn slots_mut(&mut self) -> impl Iterator<Item = &mut Slot> + '_ {
        (self.inputs.iter_mut())
            .chain(self.slate.iter_mut())
            .chain(self.outputs.iter_mut())
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> + '_ {
        (self.inputs.iter())
            .chain(self.slate.iter())
            .chain(self.outputs.iter())
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

/// One logical stream: inputs → switch → hub → outputs.
pub struct Route {
    pub name: String,
    hub: Arc<Hub>,
    inner: Mutex<Inner>,
    /// The gateway's event log: switches, state changes and the rest go there (a switch and
    /// the shutdown of this route among them, which is what `wait_switch` waits for).
    log: Arc<EventLog>,
    events: Sender<Event>,
    generations: AtomicU64,
    claims: Arc<Claims>,
    /// As the route started; what only a restart changes stays so for its life.
    settings: RouteSettings,
    /// Where the route's timers read the time.
    clock: Arc<dyn Clock>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set when the route stops (with `Inner::closed`), for waits that do not hold its lock:
    /// a decode branch's `pull` ends with `Closed` then.
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
