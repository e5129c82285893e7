//! The switch: which input of a route the outputs receive.
//!
//! Pure logic, as DESIGN.md principle 5 asks: it is driven by events (data seen, error, EOS,
//! manual commands, inputs added or removed) and by `tick(now)`, with time passed in by the
//! caller, so every transition is unit-tested with a fake clock. GStreamer glue feeds it and
//! applies its decisions; nothing here touches a pipeline.
//!
//! Rules:
//! - An input is *alive* while data arrived within `loss_timeout` and no error/EOS came after.
//! - On loss of the active input, switch to the highest-priority alive input (`lost`, `error`
//!   or `eos`), or to the slate when none is alive (`slate`), or to nothing if the slate is off.
//! - From the slate (or nothing), the first input alive again is taken (`recovered`).
//! - Failback: a higher-priority input that has been alive for `failback_after` without a break
//!   replaces the active one (`failback`). Each loss restarts that wait, so a flapping input
//!   never wins the route back and the route cannot oscillate.
//! - Manual: `lock(i)` switches to input `i` and holds it (`manual`); if it is lost the slate
//!   covers until it returns. `unlock()` returns to automatic choice.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Default time without data after which an input counts as lost.
pub const DEFAULT_LOSS_TIMEOUT: Duration = Duration::from_millis(300);
/// Default time a higher-priority input must stay healthy before the route fails back to it.
pub const DEFAULT_FAILBACK_AFTER: Duration = Duration::from_secs(5);
/// How many switches the history keeps.
pub const HISTORY: usize = 20;

/// What the outputs receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Input(usize),
    Slate,
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Lost,
    Error,
    Eos,
    Manual,
    Failback,
    Recovered,
    InputAdded,
    InputRemoved,
    Slate,
}

impl Reason {
    /// Every reason, in the order of `Reason as usize` (what per-reason counts index by).
    pub const ALL: [Reason; 9] = [
        Reason::Lost,
        Reason::Error,
        Reason::Eos,
        Reason::Manual,
        Reason::Failback,
        Reason::Recovered,
        Reason::InputAdded,
        Reason::InputRemoved,
        Reason::Slate,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Lost => "lost",
            Reason::Error => "error",
            Reason::Eos => "eos",
            Reason::Manual => "manual",
            Reason::Failback => "failback",
            Reason::Recovered => "recovered",
            Reason::InputAdded => "input_added",
            Reason::InputRemoved => "input_removed",
            Reason::Slate => "slate",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision of the switch. Input indices are those in force when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switched {
    pub at: Instant,
    pub from: Source,
    pub to: Source,
    pub reason: Reason,
}

#[derive(Debug, Clone, Copy)]
pub struct SwitchConfig {
    pub loss_timeout: Duration,
    pub failback_after: Duration,
    pub slate: bool,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            loss_timeout: DEFAULT_LOSS_TIMEOUT,
            failback_after: DEFAULT_FAILBACK_AFTER,
            slate: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Health {
    last_data: Option<Instant>,
    /// Start of the current unbroken run of data.
    alive_since: Option<Instant>,
    /// An error or EOS after the last data: dead until data comes again.
    failed: Option<Reason>,
}

impl Health {
    fn alive(&self, now: Instant, loss_timeout: Duration) -> bool {
        self.failed.is_none()
            && self
                .last_data
                .is_some_and(|t| now.saturating_duration_since(t) < loss_timeout)
    }

    /// Why a dead input is dead.
    fn cause(&self) -> Reason {
        self.failed.unwrap_or(Reason::Lost)
    }
}

#[derive(Debug)]
pub struct Switch {
    config: SwitchConfig,
    inputs: Vec<Health>,
    active: Source,
    locked: Option<usize>,
    history: VecDeque<Switched>,
}

impl Switch {
    /// A switch over `inputs` inputs (priority = index), on the first input until told
    /// otherwise.
    pub fn new(inputs: usize, config: SwitchConfig) -> Switch {
        Switch {
            config,
            inputs: vec![Health::default(); inputs],
            active: if inputs > 0 {
                Source::Input(0)
            } else {
                Source::Nothing
            },
            locked: None,
            history: VecDeque::with_capacity(HISTORY),
        }
    }

    pub fn active(&self) -> Source {
        self.active
    }

    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    pub fn locked(&self) -> Option<usize> {
        self.locked
    }

    /// The most recent switches, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Switched> {
        self.history.iter()
    }

    /// Data arrived on `input` at `now`. Cheap enough to call once per tick with the input's
    /// last-data time rather than per packet.
    pub fn data(&mut self, input: usize, at: Instant) {
        let loss = self.config.loss_timeout;
        if let Some(h) = self.inputs.get_mut(input) {
            let was_alive = h.alive(at, loss);
            h.last_data = Some(at);
            if !was_alive {
                h.failed = None;
                h.alive_since = Some(at);
            }
        }
    }

    /// `input` reported an error (`Reason::Error`) or ended (`Reason::Eos`); it is dead at once.
    pub fn failed(&mut self, input: usize, why: Reason, now: Instant) -> Option<Switched> {
        if let Some(h) = self.inputs.get_mut(input) {
            h.failed = Some(why);
            h.alive_since = None;
        }
        self.evaluate(now)
    }

    /// Re-evaluates the choice at `now`: loss timeouts and failback.
    pub fn tick(&mut self, now: Instant) -> Option<Switched> {
        let loss = self.config.loss_timeout;
        for h in &mut self.inputs {
            if h.alive_since.is_some() && !h.alive(now, loss) {
                h.alive_since = None;
            }
        }
        self.evaluate(now)
    }

    /// Switches to `input` and holds it there.
    pub fn lock(&mut self, input: usize, now: Instant) -> Option<Switched> {
        if input >= self.inputs.len() {
            return None;
        }
        self.locked = Some(input);
        let to = if self.alive(input, now) || !self.config.slate {
            Source::Input(input)
        } else {
            Source::Slate
        };
        self.switch(to, Reason::Manual, now)
    }

    /// Back to automatic choice.
    pub fn unlock(&mut self, now: Instant) -> Option<Switched> {
        self.locked = None;
        self.evaluate(now)
    }

    /// An input was appended (lowest priority).
    pub fn input_added(&mut self, now: Instant) -> Option<Switched> {
        self.inputs.push(Health::default());
        let s = self.evaluate(now);
        s.map(|s| self.relabel(s, Reason::InputAdded))
    }

    /// Input `index` was removed; later inputs move up one place.
    pub fn input_removed(&mut self, index: usize, now: Instant) -> Option<Switched> {
        if index >= self.inputs.len() {
            return None;
        }
        self.inputs.remove(index);
        let shift = |i: usize| if i > index { i - 1 } else { i };
        self.locked = match self.locked {
            Some(l) if l == index => None,
            Some(l) => Some(shift(l)),
            None => None,
        };
        match self.active {
            Source::Input(a) if a == index => {
                // The active input is gone: the choice is made again, as removal.
                self.active = Source::Nothing;
                let gone = Source::Input(index);
                match self.evaluate(now) {
                    Some(s) => {
                        Some(self.relabel(Switched { from: gone, ..s }, Reason::InputRemoved))
                    }
                    None => {
                        let s = Switched {
                            at: now,
                            from: gone,
                            to: Source::Nothing,
                            reason: Reason::InputRemoved,
                        };
                        self.record(s);
                        Some(s)
                    }
                }
            }
            Source::Input(a) => {
                self.active = Source::Input(shift(a));
                None
            }
            _ => self.evaluate(now),
        }
    }

    /// Takes new loss and failback times; the choice follows at the next tick.
    pub fn set_timing(&mut self, loss_timeout: Duration, failback_after: Duration) {
        self.config.loss_timeout = loss_timeout;
        self.config.failback_after = failback_after;
    }

    /// Puts the inputs in a new priority order: `order[new] = old`. What is on air and what is
    /// locked stay the same inputs; the choice is made again under the new priorities.
    pub fn reorder(&mut self, order: &[usize], now: Instant) -> Option<Switched> {
        let n = self.inputs.len();
        let mut seen = vec![false; n];
        if order.len() != n
            || order
                .iter()
                .any(|&o| o >= n || std::mem::replace(&mut seen[o], true))
        {
            return None;
        }
        let old = std::mem::take(&mut self.inputs);
        self.inputs = order.iter().map(|&o| old[o]).collect();
        let new_index = |i: usize| order.iter().position(|&o| o == i);
        let remap = |s: Source| match s {
            Source::Input(i) => new_index(i).map_or(Source::Nothing, Source::Input),
            other => other,
        };
        self.active = remap(self.active);
        self.locked = self.locked.and_then(new_index);
        for s in &mut self.history {
            s.from = remap(s.from);
            s.to = remap(s.to);
        }
        self.evaluate(now)
    }

    /// Whether `input` delivers: data within the loss timeout and no error or EOS since.
    pub fn alive(&self, input: usize, now: Instant) -> bool {
        self.inputs
            .get(input)
            .is_some_and(|h| h.alive(now, self.config.loss_timeout))
    }

    fn best_alive(&self, now: Instant) -> Option<usize> {
        (0..self.inputs.len()).find(|&i| self.alive(i, now))
    }

    fn evaluate(&mut self, now: Instant) -> Option<Switched> {
        let fallback = if self.config.slate {
            Source::Slate
        } else {
            Source::Nothing
        };
        if let Some(l) = self.locked {
            let to = if self.alive(l, now) {
                Source::Input(l)
            } else {
                fallback
            };
            let reason = if to == Source::Input(l) {
                Reason::Recovered
            } else {
                self.inputs[l].cause()
            };
            return self.switch(to, reason, now);
        }
        match self.active {
            Source::Input(a) if !self.alive(a, now) => {
                let cause = self.inputs.get(a).map_or(Reason::Lost, Health::cause);
                match self.best_alive(now) {
                    Some(b) => self.switch(Source::Input(b), cause, now),
                    None if self.config.slate => self.switch(Source::Slate, Reason::Slate, now),
                    None => self.switch(Source::Nothing, cause, now),
                }
            }
            Source::Input(a) => {
                let after = self.config.failback_after;
                let better = (0..a).find(|&h| {
                    self.alive(h, now)
                        && self.inputs[h]
                            .alive_since
                            .is_some_and(|t| now.saturating_duration_since(t) >= after)
                });
                better.and_then(|h| self.switch(Source::Input(h), Reason::Failback, now))
            }
            Source::Slate | Source::Nothing => match self.best_alive(now) {
                Some(b) => self.switch(Source::Input(b), Reason::Recovered, now),
                None if self.active != fallback && !self.inputs.is_empty() => {
                    self.switch(fallback, Reason::Slate, now)
                }
                None => None,
            },
        }
    }

    fn switch(&mut self, to: Source, reason: Reason, now: Instant) -> Option<Switched> {
        if to == self.active {
            return None;
        }
        let s = Switched {
            at: now,
            from: self.active,
            to,
            reason,
        };
        self.active = to;
        self.record(s);
        Some(s)
    }

    fn record(&mut self, s: Switched) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(s);
    }

    /// Rewrites the switch just recorded (`s`, as `evaluate` returned it) with `reason`.
    fn relabel(&mut self, s: Switched, reason: Reason) -> Switched {
        let s = Switched { reason, ..s };
        if let Some(last) = self.history.back_mut() {
            *last = s;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A fake clock: a fixed origin and an offset the test advances.
    struct Clock(Instant, Duration);

    impl Clock {
        fn new() -> Clock {
            Clock(Instant::now(), Duration::ZERO)
        }
        fn now(&self) -> Instant {
            self.0 + self.1
        }
        fn advance(&mut self, d: Duration) -> Instant {
            self.1 += d;
            self.now()
        }
    }

    fn config() -> SwitchConfig {
        SwitchConfig {
            loss_timeout: 100 * MS,
            failback_after: 1000 * MS,
            slate: true,
        }
    }

    /// Feeds data on `inputs` every 20 ms for `d`, ticking the switch; returns its decisions.
    fn run(sw: &mut Switch, clock: &mut Clock, inputs: &[usize], d: Duration) -> Vec<Switched> {
        let mut out = Vec::new();
        let steps = d.as_millis() / 20;
        for _ in 0..steps {
            let now = clock.advance(20 * MS);
            for &i in inputs {
                sw.data(i, now);
            }
            out.extend(sw.tick(now));
        }
        out
    }

    fn moves(v: &[Switched]) -> Vec<(Source, Source, Reason)> {
        v.iter().map(|s| (s.from, s.to, s.reason)).collect()
    }

    #[test]
    fn reorder_keeps_what_is_on_air_and_applies_the_new_priorities() {
        let mut clock = Clock::new();
        let mut sw = Switch::new(3, config());
        // Only inputs 1 and 2 deliver: the switch goes to 1 and stays there.
        run(&mut sw, &mut clock, &[1, 2], 2000 * MS);
        assert_eq!(sw.active(), Source::Input(1));
        assert_eq!(
            sw.lock(2, clock.now()).map(|s| s.to),
            Some(Source::Input(2))
        );
        assert!(sw.unlock(clock.now()).is_some());
        // New order: old 2 first, then old 0, then old 1. Old 2 has been healthy for longer
        // than the failback time, so it takes over as the new top priority.
        let s = sw
            .reorder(&[2, 0, 1], clock.now())
            .expect("the new first input takes over");
        assert_eq!(
            (s.from, s.to, s.reason),
            (Source::Input(2), Source::Input(0), Reason::Failback)
        );
        assert!(sw.alive(0, clock.now()) && !sw.alive(1, clock.now()));
        // A bad permutation changes nothing.
        assert!(sw.reorder(&[0, 0, 1], clock.now()).is_none());
        assert!(sw.reorder(&[0, 1], clock.now()).is_none());
        assert_eq!(sw.active(), Source::Input(0));
    }

    #[test]
    fn reorder_moves_the_lock_with_its_input() {
        let mut clock = Clock::new();
        let mut sw = Switch::new(2, config());
        run(&mut sw, &mut clock, &[0, 1], 500 * MS);
        sw.lock(1, clock.now());
        assert_eq!(sw.reorder(&[1, 0], clock.now()), None);
        assert_eq!((sw.locked(), sw.active()), (Some(0), Source::Input(0)));
    }

    #[test]
    fn loss_of_the_main_fails_over_to_the_backup() {
        let (mut sw, mut c) = (Switch::new(2, config()), Clock::new());
        assert!(run(&mut sw, &mut c, &[0, 1], 500 * MS).is_empty());
        let s = run(&mut sw, &mut c, &[1], 200 * MS);
        assert_eq!(
            moves(&s),
            vec![(Source::Input(0), Source::Input(1), Reason::Lost)]
        );
        // Decided within one tick after the loss timeout.
        assert!(s[0].at.duration_since(c.0) <= (500 + 100 + 20) * MS);
    }

    #[test]
    fn an_error_or_eos_fails_over_at_once() {
        for why in [Reason::Error, Reason::Eos] {
            let (mut sw, mut c) = (Switch::new(2, config()), Clock::new());
            run(&mut sw, &mut c, &[0, 1], 200 * MS);
            let s = sw.failed(0, why, c.now()).unwrap();
            assert_eq!(
                (s.from, s.to, s.reason),
                (Source::Input(0), Source::Input(1), why)
            );
        }
    }

    #[test]
    fn failover_picks_the_highest_priority_alive_input() {
        let (mut sw, mut c) = (Switch::new(3, config()), Clock::new());
        run(&mut sw, &mut c, &[0, 1, 2], 200 * MS);
        sw.failed(1, Reason::Error, c.now());
        let s = sw.failed(0, Reason::Error, c.now()).unwrap();
        assert_eq!(s.to, Source::Input(2));
    }

    #[test]
    fn failback_waits_for_failback_after_of_unbroken_health() {
        let (mut sw, mut c) = (Switch::new(2, config()), Clock::new());
        run(&mut sw, &mut c, &[0, 1], 200 * MS);
        run(&mut sw, &mut c, &[1], 200 * MS);
        assert_eq!(sw.active(), Source::Input(1));
        // The main returns; after 900 ms nothing happens, after 1 s it is taken back.
        assert!(run(&mut sw, &mut c, &[0, 1], 900 * MS).is_empty());
        let s = run(&mut sw, &mut c, &[0, 1], 200 * MS);
        assert_eq!(
            moves(&s),
            vec![(Source::Input(1), Source::Input(0), Reason::Failback)]
        );
    }

    #[test]
    fn a_flapping_main_never_wins_the_route_back() {
        let (mut sw, mut c) = (Switch::new(2, config()), Clock::new());
        run(&mut sw, &mut c, &[0, 1], 200 * MS);
        run(&mut sw, &mut c, &[1], 200 * MS);
        let mut all = Vec::new();
        for _ in 0..20 {
            all.extend(run(&mut sw, &mut c, &[0, 1], 600 * MS)); // up 600 ms
            all.extend(run(&mut sw, &mut c, &[1], 200 * MS)); // down 200 ms
        }
        assert!(all.is_empty(), "the route moved: {:?}", moves(&all));
        assert_eq!(sw.active(), Source::Input(1));
    }

    #[test]
    fn all_lost_goes_to_the_slate_and_recovers() {
        let (mut sw, mut c) = (Switch::new(2, config()), Clock::new());
        run(&mut sw, &mut c, &[0, 1], 200 * MS);
        // Both go at once: straight to the slate.
        let s = run(&mut sw, &mut c, &[], 300 * MS);
        assert_eq!(
            moves(&s),
            vec![(Source::Input(0), Source::Slate, Reason::Slate)]
        );
        assert_eq!(sw.active(), Source::Slate);
        let s = run(&mut sw, &mut c, &[1], 100 * MS);
        assert_eq!(
            moves(&s),
            vec![(Source::Slate, Source::Input(1), Reason::Recovered)]
        );
    }

    #[test]
    fn without_a_slate_all_lost_means_nothing() {
        let (mut sw, mut c) = (
            Switch::new(
                1,
                SwitchConfig {
                    slate: false,
                    ..config()
                },
            ),
            Clock::new(),
        );
        run(&mut sw, &mut c, &[0], 200 * MS);
        let s = run(&mut sw, &mut c, &[], 200 * MS);
        assert_eq!(
            moves(&s),
            vec![(Source::Input(0), Source::Nothing, Reason::Lost)]
        );
        let s = run(&mut sw, &mut c, &[0], 100 * MS);
        assert_eq!(
            moves(&s),
            vec![(Source::Nothing, Source::Input(0), Reason::Recovered)]
        );
    }

    #[test]
    fn a_manual_lock_holds_against_failback_and_unlock_resumes() {
        let (mut sw, mut c) = (Switch::new(2, config()), Clock::new());
        run(&mut sw, &mut c, &[0, 1], 200 * MS);
        let s = sw.lock(1, c.now()).unwrap();
        assert_eq!((s.to, s.reason), (Source::Input(1), Reason::Manual));
        assert!(run(&mut sw, &mut c, &[0, 1], 3000 * MS).is_empty());
        // The locked input is lost: the slate covers; it returns: back on it.
        let s = run(&mut sw, &mut c, &[0], 200 * MS);
        assert_eq!(
            moves(&s),
            vec![(Source::Input(1), Source::Slate, Reason::Lost)]
        );
        let s = run(&mut sw, &mut c, &[0, 1], 100 * MS);
        assert_eq!(
            moves(&s),
            vec![(Source::Slate, Source::Input(1), Reason::Recovered)]
        );
        // Unlocked, the main has been healthy for long: failback at once.
        let s = sw.unlock(c.now()).unwrap();
        assert_eq!((s.to, s.reason), (Source::Input(0), Reason::Failback));
    }

    #[test]
    fn inputs_added_and_removed() {
        let (mut sw, mut c) = (Switch::new(2, config()), Clock::new());
        run(&mut sw, &mut c, &[0, 1], 200 * MS);
        // Removing an inactive input leaves the active one (renumbered if needed).
        assert!(sw.input_removed(1, c.now()).is_none());
        assert!(sw.input_added(c.now()).is_none());
        run(&mut sw, &mut c, &[0, 1], 100 * MS);
        // Removing the active input switches, labelled as such.
        let s = sw.input_removed(0, c.now()).unwrap();
        assert_eq!(
            (s.from, s.to, s.reason),
            (Source::Input(0), Source::Input(0), Reason::InputRemoved)
        );
        assert_eq!(sw.active(), Source::Input(0));
        // Without a slate, removing the last input leaves nothing, and says so.
        let mut bare = Switch::new(
            1,
            SwitchConfig {
                slate: false,
                ..config()
            },
        );
        let s = bare.input_removed(0, c.now()).unwrap();
        assert_eq!((s.to, s.reason), (Source::Nothing, Reason::InputRemoved));
        assert_eq!(bare.history().count(), 1);
        // The one left is lost; the slate takes over; a new input is taken as it comes alive.
        run(&mut sw, &mut c, &[], 200 * MS);
        assert_eq!(sw.active(), Source::Slate);
        sw.input_added(c.now());
        let s = run(&mut sw, &mut c, &[1], 40 * MS);
        assert_eq!(
            moves(&s),
            vec![(Source::Slate, Source::Input(1), Reason::Recovered)]
        );
    }

    #[test]
    fn history_keeps_the_last_twenty() {
        let (mut sw, mut c) = (Switch::new(2, config()), Clock::new());
        run(&mut sw, &mut c, &[0, 1], 100 * MS);
        for i in 0..30 {
            sw.lock(i % 2, c.advance(MS));
        }
        assert_eq!(sw.history().count(), HISTORY);
        assert!(sw.history().all(|s| s.reason == Reason::Manual));
    }
}
