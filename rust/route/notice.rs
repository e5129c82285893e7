//! What a route reports to the gateway's event log besides its switches: its state, inputs
//! lost and recovered, outputs connected, disconnected and failing, SRT callers joining and
//! leaving. Found on the control thread by comparing what it sees now with what it reported
//! last (`Inner::reported_state`, `Slot::reported`), right after the checks that can change
//! it: nothing here runs per packet, and pushing an event never waits.
//!
//! The stream analysis (TR 101 290) reports through `report_analysis`.

use std::time::Instant;

use super::slot::{Status, IDLE_AFTER_MS};
use super::{Inner, Route};
use crate::events::{Event, Kind};

impl Route {
    /// Pushes `event` about this route to the gateway's event log; returns the time it was
    /// stamped with.
    pub(super) fn emit(&self, mut event: Event) -> f64 {
        event.route = Some(self.name.clone());
        self.log.push(event).1
    }

    /// Reports a change of the route's state.
    pub(super) fn report_state(&self, from: Option<&str>, to: &str) {
        self.emit(Event {
            from: from.map(str::to_owned),
            to: Some(to.to_owned()),
            ..Event::new(Kind::RouteState)
        });
    }

    /// Reports that the stream-analysis condition `condition` (e.g. `pat_error`) of input
    /// `input` started (`active`) or cleared; `detail` says what was seen. Call it from the
    /// control thread where the analysis state is read (the once-a-second tick), never from a
    /// streaming thread.
    pub fn report_analysis(
        &self,
        input: &str,
        condition: &str,
        active: bool,
        detail: Option<String>,
    ) {
        self.emit(Event {
            input: Some(input.to_owned()),
            condition: Some(condition.to_owned()),
            active: Some(active),
            error: detail,
            ..Event::new(Kind::Analysis)
        });
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
        // The inputs' stream-analysis conditions that started or cleared since the last look
        // (each feed keeps its last 128 changes; this looks once a second).
        for slot in &mut inner.inputs {
            let Some(feed) = slot.feed.as_ref() else {
                continue;
            };
            for c in feed.condition_changes_after(slot.analysis_seen) {
                slot.analysis_seen = c.seq;
                let pid = c
                    .pid
                    .map(|p| format!(", PID 0x{p:04x}"))
                    .unwrap_or_default();
                let detail = format!("priority {}{pid}", c.priority);
                self.report_analysis(&slot.id, c.check, c.change == "started", Some(detail));
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
    use crate::events::Kind;
    use crate::route::{InputSpec, RouteSpec};
    use crate::Gateway;

    /// A real route (a generated test pattern, no output): what it reports as it starts and
    /// stops, and the stream analysis's hook.
    #[test]
    fn a_route_reports_its_state_and_analysis_conditions() {
        let gw = Gateway::with_event_history(100).unwrap();
        let spec = RouteSpec {
            name: "r".into(),
            inputs: vec![InputSpec {
                uri: "test://?size=160x90&bitrate=200".into(),
                id: Some("main".into()),
            }],
            ..RouteSpec::default()
        };
        let route = gw.add_route(spec).unwrap();
        route.report_analysis("main", "pat_error", true, Some("no PAT for 1 s".into()));
        gw.remove_route("r").unwrap();
        let events = gw.events().read(0, 100).events;
        let first = &events[0];
        assert_eq!(
            (first.kind, first.to.as_deref()),
            (Kind::RouteState, Some("waiting"))
        );
        let analysis = events.iter().find(|e| e.kind == Kind::Analysis).unwrap();
        assert_eq!(analysis.route.as_deref(), Some("r"));
        assert_eq!(analysis.input.as_deref(), Some("main"));
        assert_eq!(analysis.condition.as_deref(), Some("pat_error"));
        assert_eq!(analysis.active, Some(true));
        let last = events.last().unwrap();
        assert_eq!(
            (last.kind, last.to.as_deref()),
            (Kind::RouteState, Some("stopped"))
        );
        // Numbered one after another.
        assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }
}
