//! What a route reports to the gateway's event log besides its switches: its state, inputs
//! lost and recovered, outputs connected, disconnected and failing, SRT callers joining and
//! leaving. Found on the control thread by comparing what it sees now with what it reported
//! last (`Inner::reported_state`, `Slot::reported`), right after the checks that can change
//! it: nothing here runs per packet, and pushing an event never waits.
//!
//! The stream analysis (TR 101 290) of each input is pulled once a second from its feed
//! (`Feed::condition_changes_after`, the last 128 changes) and reported through
//! `report_analysis`, each change dated with its own time. Changes no longer kept when the
//! control thread looks are counted (`changes_missed` in the input's `analysis`), never
//! silently lost.

use std::time::Instant;

use super::slot::{Slot, Status, IDLE_AFTER_MS};
use super::{Inner, Route, CAT};
use crate::events::{Event, Kind};
use crate::ts::ConditionChange;

impl Route {
    /// Pushes `event` about this route to the gateway's event log; returns the time it was
    /// stamped with.
    pub(super) fn emit(&self, event: Event) -> f64 {
        self.emit_at(event, None)
    }

    /// Like `emit`, dated `at` (Unix time) when given.
    fn emit_at(&self, mut event: Event, at: Option<f64>) -> f64 {
        event.route = Some(self.name.clone());
        self.log.push_at(event, at).1
    }

    /// Reports a change of the route's state.
    pub(super) fn report_state(&self, from: Option<&str>, to: &str) {
        self.emit(Event {
            from: from.map(str::to_owned),
            to: Some(to.to_owned()),
            ..Event::new(Kind::RouteState)
        });
    }

    /// Reports that a stream-analysis condition of input `input` started or cleared, dated
    /// when it did (`change.at`, not when the control thread got to it); `error` names its
    /// priority and PID. Called from the control thread's once-a-second look, never from a
    /// streaming thread.
    fn report_analysis(&self, input: &str, change: &ConditionChange) {
        let pid = change
            .pid
            .map(|p| format!(", PID 0x{p:04x}"))
            .unwrap_or_default();
        let event = Event {
            input: Some(input.to_owned()),
            condition: Some(change.check.to_owned()),
            active: Some(change.change == "started"),
            error: Some(format!("priority {}{pid}", change.priority)),
            ..Event::new(Kind::Analysis)
        };
        self.emit_at(event, Some(change.at));
    }

    /// Reports the stream-analysis condition changes of the input in `slot` since the last
    /// look. The feed keeps the last 128: if the first it still has is not the one after the
    /// last reported, the ones between are gone and counted in `slot.analysis_missed`.
    fn report_analysis_of(&self, slot: &mut Slot) {
        let Some(feed) = slot.feed.as_ref() else {
            return;
        };
        let changes = feed.condition_changes_after(slot.analysis_seen);
        if let Some(first) = changes.first() {
            let missed = first
                .seq
                .saturating_sub(slot.analysis_seen.saturating_add(1));
            if missed > 0 {
                gst::warning!(
                    CAT,
                    "{}/{}: {missed} stream-analysis condition changes were not reported (more than \
                     the 128 kept happened within a second)",
                    self.name,
                    slot.id
                );
                slot.analysis_missed += missed;
            }
        }
        for c in &changes {
            slot.analysis_seen = c.seq;
            self.report_analysis(&slot.id, c);
        }
    }

    /// The route's state: `live` (the input on air delivers), `slate` (the slate does),
    /// `waiting` or `stopped`, as `stats()` shows it. Reads a few atomics.
    pub(super) fn state_of(&self, inner: &Inner) -> &'static str {
        if inner.closed {
            return "stopped";
        }
        let active = self.hub.active();
        let input_live = inner.inputs.iter().any(|s| {
            s.status == Status::Running
                && s.feed.as_ref().is_some_and(|f| {
                    f.id == active && self.hub.idle_ms(f).is_some_and(|ms| ms <= IDLE_AFTER_MS)
                })
        });
        let slate_live = active == inner.slate_feed.id
            && self
                .hub
                .idle_ms(&inner.slate_feed)
                .is_some_and(|ms| ms < IDLE_AFTER_MS);
        if input_live {
            "live"
        } else if slate_live {
            "slate"
        } else {
            "waiting"
        }
    }

    /// Reports inputs that the switch no longer counts as delivering (`input_lost`) and lost
    /// ones that deliver again (`input_recovered`); only `input` when given. Call it right after
    /// the switch was fed (`feed_switch`) or told of a failure, and before it decides, so a
    /// loss comes before the switch it causes. An input that never delivered is waiting, not
    /// lost; a cold input put back in standby is neither.
    pub(super) fn notice_inputs(&self, inner: &mut Inner, now: Instant, only: Option<usize>) {
        let Inner { inputs, switch, .. } = inner;
        for (i, slot) in inputs.iter_mut().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let health = if switch.alive(i, now) {
                "healthy"
            } else if matches!(slot.status, Status::Standby | Status::Stopped) {
                slot.reported = None;
                continue;
            } else {
                "lost"
            };
            let event = match (slot.reported, health) {
                (Some("healthy"), "lost") => Event {
                    reason: Some(switch.cause(i).as_str().to_owned()),
                    // Only an error raised since the input was last healthy says why it went.
                    error: slot
                        .last_error
                        .clone()
                        .filter(|_| slot.errors > slot.errors_when_healthy),
                    ..Event::new(Kind::InputLost)
                },
                (Some("lost"), "healthy") => Event::new(Kind::InputRecovered),
                _ => {
                    if slot.reported.is_some() || health == "healthy" {
                        slot.reported = Some(health);
                    }
                    if health == "healthy" {
                        slot.errors_when_healthy = slot.errors;
                    }
                    continue;
                }
            };
            slot.reported = Some(health);
            self.emit(Event {
                input: Some(slot.id.clone()),
                ..event
            });
            if health == "healthy" {
                slot.errors_when_healthy = slot.errors;
            }
        }
    }

    /// Reports a change of the route's state; with `outputs` also each output's link and the
    /// SRT callers that joined or left (this reads SRT statistics: the control thread asks
    /// once a second, and after an error).
    pub(super) fn notice_route(&self, inner: &mut Inner, outputs: bool) {
        if inner.closed {
            return;
        }
        let state = self.state_of(inner);
        if inner.reported_state != Some(state) {
            let from = inner.reported_state.replace(state);
            self.report_state(from, state);
        }
        if !outputs {
            return;
        }
        // The inputs' stream-analysis conditions that started or cleared since the last look.
        for slot in &mut inner.inputs {
            self.report_analysis_of(slot);
        }
        // Callers SRT listeners had refused by libsrt for their passphrase.
        for (slot, input) in
            (inner.inputs.iter().map(|s| (s, true))).chain(inner.outputs.iter().map(|s| (s, false)))
        {
            for r in slot.take_refusals() {
                let id = Some(slot.id.clone());
                let event = Event {
                    input: if input { id.clone() } else { None },
                    output: if input { None } else { id },
                    reason: Some(r.reason().to_string()),
                    address: Some(r.address),
                    stream_id: r.stream_id,
                    ..Event::new(Kind::SrtRefused)
                };
                // Dated when libsrt refused the caller, not a second later.
                self.emit_at(event, Some(r.at));
            }
        }
        for slot in &mut inner.outputs {
            for c in slot.take_caller_changes() {
                let kind = if c.joined {
                    Kind::CallerJoined
                } else {
                    Kind::CallerLeft
                };
                self.emit(Event {
                    output: Some(slot.id.clone()),
                    address: Some(c.address),
                    stream_id: c.stream_id,
                    ..Event::new(kind)
                });
            }
            let Some(link) = slot.link() else { continue };
            // A new output reports when it is up or failing, not that it waits for a peer; a
            // failing one stays failing through its retries until it is up again.
            let kind = match (slot.reported, link) {
                (b, l) if b == Some(l) => continue,
                (Some("failing"), "disconnected") => continue,
                (_, "connected") => Kind::OutputConnected,
                (_, "failing") => Kind::OutputFailing,
                (Some("connected"), "disconnected") => Kind::OutputDisconnected,
                _ => {
                    slot.reported = Some(link);
                    continue;
                }
            };
            slot.reported = Some(link);
            let error = match kind {
                Kind::OutputFailing => slot.last_error.clone(),
                _ => None,
            };
            self.emit(Event {
                output: Some(slot.id.clone()),
                error,
                ..Event::new(kind)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::events::{Event, Kind};
    use crate::hub::Feed;
    use crate::route::{lock, InputSpec, Route, RouteSpec};
    use crate::ts::tests::packet;
    use crate::ts::{ConditionChange, PACKET_SIZE};
    use crate::Gateway;

    /// A real route with one UDP input that nothing sends to (its feed is fed by the test),
    /// no output.
    fn route(gw: &Gateway) -> (Arc<Route>, Arc<Feed>) {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let spec = RouteSpec {
            name: "r".into(),
            inputs: vec![InputSpec {
                uri: format!("udp://127.0.0.1:{port}"),
                id: Some("main".into()),
            }],
            ..RouteSpec::default()
        };
        let route = gw.add_route(spec).unwrap();
        let feed = lock(&route.inner).inputs[0].feed.clone().unwrap();
        (route, feed)
    }

    /// Hands the input's feed `n` PIDs (from 0x100) with one continuity error each, in one
    /// buffer as the input's streaming thread would: `n` conditions start at one instant.
    fn continuity_errors(route: &Route, feed: &Feed, n: u16) {
        let pids = 0x100..0x100 + n;
        let data: Vec<u8> = pids
            .clone()
            .map(|pid| packet(pid, 0, None, None))
            .chain(pids.map(|pid| packet(pid, 2, None, None)))
            .flatten()
            .collect();
        assert_eq!(data.len(), 2 * usize::from(n) * PACKET_SIZE);
        route.hub.ingest(feed, gst::Buffer::from_mut_slice(data));
    }

    fn analysis_events(gw: &Gateway) -> Vec<Event> {
        let events = gw.events().read(0, 10_000).events;
        events
            .into_iter()
            .filter(|e| e.kind == Kind::Analysis)
            .collect()
    }

    /// Waits (up to 10 s) until the control thread reported `n` analysis events.
    fn wait_for_analysis_events(gw: &Gateway, n: usize) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = analysis_events(gw);
            if events.len() >= n || Instant::now() > deadline {
                return events;
            }
            gw.events()
                .wait_for(gw.events().latest(), deadline, |e| e.kind == Kind::Analysis);
        }
    }

    fn history(route: &Route) -> (Vec<ConditionChange>, u64) {
        let stats = route.stats().inputs.remove(0).input.unwrap().analysis;
        (stats.history, stats.changes_missed)
    }

    /// What a route reports as it starts and stops, and a condition of its input's stream
    /// analysis: started and cleared, reported by the control thread's once-a-second look and
    /// dated when it happened (the analysis's own times, a second apart), not when reported.
    #[test]
    fn a_route_reports_its_state_and_its_inputs_analysis_conditions_dated_when_they_happened() {
        let gw = Gateway::with_event_history(100).unwrap();
        let (route, feed) = route(&gw);
        continuity_errors(&route, &feed, 1);
        let reported = wait_for_analysis_events(&gw, 2);
        let (history, missed) = history(&route);
        assert_eq!(missed, 0);
        assert_eq!(reported.len(), 2, "{reported:?}");
        assert_eq!(history.len(), 2, "{history:?}");
        for (event, change) in reported.iter().zip(&history) {
            assert_eq!(event.route.as_deref(), Some("r"));
            assert_eq!(event.input.as_deref(), Some("main"));
            assert_eq!(event.condition.as_deref(), Some("continuity_count_error"));
            assert_eq!(event.error.as_deref(), Some("priority 1, PID 0x0100"));
            assert_eq!(event.active, Some(change.change == "started"));
            assert_eq!(event.at_unix, change.at);
        }
        assert_eq!(reported[0].active, Some(true));
        // Held for a second: cleared exactly then, whenever the control thread looked.
        let held = reported[1].at_unix - reported[0].at_unix;
        assert!((held - 1.0).abs() < 1e-3, "{held}");

        gw.remove_route("r").unwrap();
        let events = gw.events().read(0, 100).events;
        let first = &events[0];
        assert_eq!(
            (first.kind, first.to.as_deref()),
            (Kind::RouteState, Some("waiting"))
        );
        let last = events.last().unwrap();
        assert_eq!(
            (last.kind, last.to.as_deref()),
            (Kind::RouteState, Some("stopped"))
        );
        // Numbered one after another.
        assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }

    /// The feed keeps its last 128 condition changes for the control thread's look: more at
    /// once are lost to the event log, and the input's analysis counts them. Every change is
    /// either reported or counted.
    #[test]
    fn analysis_changes_no_longer_kept_when_reported_are_counted() {
        let gw = Gateway::with_event_history(1_000).unwrap();
        let (route, feed) = route(&gw);
        // 200 conditions start at one instant (changes 1..=200) and clear at one instant a
        // second later (201..=400): of each 200, at most the last 128 are still kept when the
        // control thread looks (none of the first if it looks late, after they cleared).
        continuity_errors(&route, &feed, 200);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (reported, missed) = loop {
            let (history, missed) = history(&route);
            let reported = analysis_events(&gw);
            let done = history.last().is_some_and(|c| c.seq == 400)
                && reported.len() as u64 + missed == 400;
            if done || Instant::now() > deadline {
                break (reported, missed);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(reported.len() as u64 + missed, 400, "{missed} missed");
        assert!(missed >= 2 * 72, "{missed}");
        // The first reported is change 73 or later: the 73rd PID's condition starting.
        assert_eq!(reported[0].error.as_deref(), Some("priority 1, PID 0x0148"));
        let cleared: Vec<_> = reported
            .iter()
            .filter(|e| e.active == Some(false))
            .collect();
        assert_eq!(cleared.len(), 128);
        assert_eq!(cleared[0].error.as_deref(), Some("priority 1, PID 0x0148"));
        gw.remove_route("r").unwrap();
    }
}
