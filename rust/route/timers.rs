//! The route's clock and timers: the start grace, the keyframe wait of an armed cut, and when
//! the control thread checks the switch next. Time comes from the [`Clock`] the route holds
//! (the system's; a fake one in tests) and is passed in as `now`, so every timer here is
//! unit-tested without sleeping.
//!
//! The hub keeps its own clock for the data timestamps its streaming threads write per packet;
//! `Hub::last_data` turns one into an `Instant` of the system clock.

use std::time::{Duration, Instant};

/// Where a route reads the time.
pub(crate) trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The system's monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The control thread's tick: restarts due, rate meters, stall checks; and how long a route
/// that never received anything sleeps between switch checks.
pub(super) const TICK: Duration = Duration::from_secs(1);
/// The control thread re-checks the switch this often per loss timeout.
const SWITCH_CHECKS_PER_TIMEOUT: u32 = 4;
/// A cut armed for the next keyframe happens anyway after this long (no keyframe came).
const KEYFRAME_WAIT: Duration = Duration::from_secs(3);
/// How long a new route waits for its first input before the switch may pass it over, and
/// before it connects cold standby inputs (warm ones get that long to connect).
const START_GRACE: Duration = Duration::from_secs(2);

/// What the next switch check depends on, read from the route at `now`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    pub loss_timeout: Duration,
    /// Some input delivered since the route started.
    pub any_data: bool,
    /// A cut is armed or the slate runs: there is something to decide soon.
    pub busy: bool,
    /// How many inputs the route has.
    pub inputs: usize,
    /// When the first input last delivered (None: never).
    pub first_data: Option<Instant>,
    /// Whether the switch counts the first input as delivering.
    pub first_alive: bool,
}

/// The route's timers, read against the `now` of its clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timers {
    started: Instant,
    /// When the cut armed for a keyframe was armed.
    armed_at: Option<Instant>,
}

impl Timers {
    pub fn new(started: Instant) -> Timers {
        Timers {
            started,
            armed_at: None,
        }
    }

    /// How long the route has run.
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Within the start grace: cold standby inputs are not connected yet.
    pub fn young(&self, now: Instant) -> bool {
        self.uptime(now) < START_GRACE
    }

    /// Whether the switch may decide. Inputs that never delivered are waiting, not lost: the
    /// switch starts at the route's first data, and gives the preferred (first) input the
    /// start grace to connect unless it delivered already.
    pub fn may_decide(&self, now: Instant, any_data: bool, first_delivered: bool) -> bool {
        any_data && (first_delivered || !self.young(now))
    }

    /// A cut was armed for a keyframe at `now`.
    pub fn arm(&mut self, now: Instant) {
        self.armed_at = Some(now);
    }

    /// No cut is armed (it happened, or a decision replaced it).
    pub fn disarm(&mut self) {
        self.armed_at = None;
    }

    /// Whether the armed cut waited `KEYFRAME_WAIT` for a keyframe and must happen now.
    pub fn keyframe_overdue(&self, now: Instant) -> bool {
        self.armed_at
            .is_some_and(|t| now.saturating_duration_since(t) >= KEYFRAME_WAIT)
    }

    /// When the switch must be checked next, after a check at `now`. A route with several
    /// inputs is checked several times per loss timeout (failback needs each input's unbroken
    /// run of data). A route with one input only at the moment its input would count as lost,
    /// and one that never received anything once a second after the start grace: there is
    /// nothing to decide before.
    pub fn next_check(&self, now: Instant, s: &Schedule) -> Instant {
        let period =
            (s.loss_timeout / SWITCH_CHECKS_PER_TIMEOUT).clamp(Duration::from_millis(10), TICK);
        if !s.any_data && !self.young(now) {
            return now + TICK;
        }
        if let (1, false, Some(t), true) = (s.inputs, s.busy, s.first_data, s.first_alive) {
            return (t + s.loss_timeout).max(now + period);
        }
        now + period
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::switch::{Reason, Source, Switch, SwitchConfig};

    const MS: Duration = Duration::from_millis(1);

    /// A clock that moves only when told.
    pub(crate) struct FakeClock(Mutex<Instant>);

    impl FakeClock {
        pub(crate) fn new() -> FakeClock {
            FakeClock(Mutex::new(Instant::now()))
        }

        pub(crate) fn advance(&self, d: Duration) -> Instant {
            let mut t = self.0.lock().unwrap();
            *t += d;
            *t
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn schedule(inputs: usize) -> Schedule {
        Schedule {
            loss_timeout: 300 * MS,
            any_data: true,
            busy: false,
            inputs,
            first_data: None,
            first_alive: false,
        }
    }

    /// The first input never delivers, the second does from the start: the switch passes the
    /// first over only once the start grace is out.
    #[test]
    fn the_switch_waits_out_the_start_grace_for_the_first_input() {
        let clock = FakeClock::new();
        let timers = Timers::new(clock.now());
        let mut switch = Switch::new(
            2,
            SwitchConfig {
                loss_timeout: 100 * MS,
                ..SwitchConfig::default()
            },
        );
        let mut decided = None;
        while decided.is_none() && timers.uptime(clock.now()) < 3 * START_GRACE {
            let now = clock.advance(25 * MS);
            switch.data(1, now);
            if timers.may_decide(now, true, false) {
                decided = switch.tick(now).map(|s| (timers.uptime(now), s));
            }
        }
        let (at, s) = decided.expect("the switch decided");
        assert_eq!(at, START_GRACE);
        assert_eq!(
            (s.from, s.to, s.reason),
            (Source::Input(0), Source::Input(1), Reason::Lost)
        );
    }

    #[test]
    fn the_first_input_delivering_ends_the_start_grace() {
        let clock = FakeClock::new();
        let timers = Timers::new(clock.now());
        let now = clock.advance(100 * MS);
        assert!(!timers.may_decide(now, true, false));
        assert!(timers.may_decide(now, true, true));
    }

    #[test]
    fn nothing_is_decided_before_some_input_delivered() {
        let clock = FakeClock::new();
        let timers = Timers::new(clock.now());
        let now = clock.advance(10 * START_GRACE);
        assert!(!timers.may_decide(now, false, false));
        assert!(timers.may_decide(now, true, false));
    }

    #[test]
    fn cold_inputs_wait_out_the_start_grace() {
        let clock = FakeClock::new();
        let timers = Timers::new(clock.now());
        assert!(timers.young(clock.advance(START_GRACE - MS)));
        assert!(!timers.young(clock.advance(MS)));
    }

    #[test]
    fn an_armed_cut_is_forced_after_the_keyframe_wait() {
        let clock = FakeClock::new();
        let mut timers = Timers::new(clock.now());
        assert!(!timers.keyframe_overdue(clock.advance(10 * KEYFRAME_WAIT)));
        timers.arm(clock.now());
        assert!(!timers.keyframe_overdue(clock.advance(KEYFRAME_WAIT - MS)));
        assert!(timers.keyframe_overdue(clock.advance(MS)));
        // A new decision arms again: the wait starts over.
        timers.arm(clock.now());
        assert!(!timers.keyframe_overdue(clock.advance(KEYFRAME_WAIT / 2)));
        timers.disarm();
        assert!(!timers.keyframe_overdue(clock.advance(KEYFRAME_WAIT)));
    }

    #[test]
    fn a_one_input_route_is_checked_when_its_input_would_be_lost() {
        let clock = FakeClock::new();
        let timers = Timers::new(clock.now());
        let data = clock.advance(5 * MS);
        let now = clock.advance(10 * MS);
        let s = Schedule {
            first_data: Some(data),
            first_alive: true,
            ..schedule(1)
        };
        assert_eq!(timers.next_check(now, &s), data + 300 * MS);
        // Never sooner than the multi-input pace.
        let now = clock.advance(290 * MS);
        assert_eq!(timers.next_check(now, &s), now + 75 * MS);
        // Once lost, or while a cut is armed or the slate runs: at the multi-input pace.
        let lost = Schedule {
            first_alive: false,
            ..s
        };
        assert_eq!(timers.next_check(now, &lost), now + 75 * MS);
        let busy = Schedule { busy: true, ..s };
        assert_eq!(timers.next_check(now, &busy), now + 75 * MS);
    }

    #[test]
    fn a_route_with_several_inputs_is_checked_four_times_per_loss_timeout() {
        let clock = FakeClock::new();
        let timers = Timers::new(clock.now());
        let now = clock.advance(5 * MS);
        let s = Schedule {
            first_data: Some(now),
            first_alive: true,
            ..schedule(2)
        };
        assert_eq!(timers.next_check(now, &s), now + 75 * MS);
        // Bounded: not more often than every 10 ms, not less than once a second.
        let fast = Schedule {
            loss_timeout: 20 * MS,
            ..s
        };
        assert_eq!(timers.next_check(now, &fast), now + 10 * MS);
        let slow = Schedule {
            loss_timeout: Duration::from_secs(60),
            ..s
        };
        assert_eq!(timers.next_check(now, &slow), now + TICK);
    }

    #[test]
    fn a_route_that_never_got_data_is_checked_once_a_second_after_the_start_grace() {
        let clock = FakeClock::new();
        let timers = Timers::new(clock.now());
        let s = Schedule {
            any_data: false,
            ..schedule(1)
        };
        let now = clock.advance(MS);
        assert_eq!(timers.next_check(now, &s), now + 75 * MS);
        let now = clock.advance(START_GRACE);
        assert_eq!(timers.next_check(now, &s), now + TICK);
        let several = Schedule { inputs: 3, ..s };
        assert_eq!(timers.next_check(now, &several), now + TICK);
    }
}
