//! What a route's stats show: its state, each endpoint's figures, and the switch with its
//! history.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{lock, Route};
use crate::hub::GopCacheStats;
use crate::stats::{CounterSnapshot, SrtStats};
use crate::switch::{Reason, Source};
use crate::ts::AnalysisStats;

// These types are the one definition of the stats' shape: the Python binding converts them
// as they serialise (`Route.stats()` dicts, by field name), and the gRPC server fills its
// messages from those dicts by field name. A new figure is a field here, in the TypedDicts of
// `castway/gateway.py` and in `route.proto` (tests/test_stats_shape.py names what is missing).

/// What the stats show for one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStats {
    pub id: String,
    pub uri: String,
    pub kind: &'static str,
    pub state: &'static str,
    /// Inputs only; an output's stats have none of these keys.
    #[serde(flatten)]
    pub input: Option<InputStats>,
    #[serde(flatten)]
    pub counters: CounterSnapshot,
    /// Outputs only: packets sent from the GOP cache as the output joined (instant start),
    /// also counted in `packets`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst_packets: Option<u64>,
    /// Outputs only: packets the output had no peer for (an SRT listener without callers, a
    /// caller or rendezvous not connected), discarded and not counted in `packets`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unheard_packets: Option<u64>,
    pub reconnects: u64,
    pub retry_in_ms: Option<u64>,
    pub last_error: Option<String>,
    pub srt: Option<SrtStats>,
}

/// What only an input's stats show.
#[derive(Debug, Clone, Serialize)]
pub struct InputStats {
    /// On air.
    pub active: bool,
    /// Whether the switch counts it as delivering.
    pub healthy: bool,
    /// `warm` or `cold`.
    pub standby: &'static str,
    /// Milliseconds since its last valid data (None: none yet).
    pub idle_ms: Option<u64>,
    /// Packets that arrived while another source was on air.
    pub off_air_packets: u64,
    /// Packets of this input on air held back at a cut.
    pub held_back_packets: u64,
    /// TR 101 290 and what the stream carries, as it arrives.
    pub analysis: AnalysisStats,
}

impl EndpointStats {
    /// An input on air.
    pub fn active(&self) -> bool {
        self.input.as_ref().is_some_and(|i| i.active)
    }
}

/// One switch, as the stats and events show it.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchRecord {
    /// Counts up from 1 over the route's life.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    #[serde(rename = "at")]
    pub at_unix: f64,
    /// Input id, `slate`, or None (nothing).
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: &'static str,
}

/// The switch part of a route's stats.
#[derive(Debug, Clone, Serialize)]
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
    /// Times a PAT or PMT going out after a cut differed from what the outputs last carried
    /// and got a new version number.
    pub psi_versions_bumped: u64,
    /// PAT and PMT sections after a cut that span TS packets, passed as they are.
    pub psi_multi_packet: u64,
    /// Packets the slate put on air.
    pub slate_packets: u64,
    /// The last switches, oldest first.
    pub history: Vec<SwitchRecord>,
    /// Switches since the start by reason, every reason (zero included).
    pub by_reason: BTreeMap<&'static str, u64>,
}

/// What `Route::stats` returns.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStats {
    pub name: String,
    pub state: &'static str,
    pub uptime_s: f64,
    pub active_input: Option<String>,
    pub inputs: Vec<EndpointStats>,
    pub outputs: Vec<EndpointStats>,
    pub switch: SwitchStats,
    /// Instant start: the route's GOP cache.
    pub gop_cache: GopCacheStats,
    /// The recorder (state `stopped` when the route does not record).
    pub recording: crate::record::RecorderStats,
}

impl Route {
    pub fn stats(&self) -> RouteStats {
        let now = self.clock.now();
        let inner = lock(&self.inner);
        let inputs: Vec<EndpointStats> = inner
            .inputs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut stats = s.stats(&self.hub, now);
                if let Some(input) = &mut stats.input {
                    input.healthy = inner.switch.alive(i, now);
                }
                stats
            })
            .collect();
        let mut outputs: Vec<EndpointStats> = inner
            .outputs
            .iter()
            .map(|s| s.stats(&self.hub, now))
            .collect();
        let mut inputs = inputs;
        if !self.claims.shared_srt.is_open() {
            // Nothing can reach an srt-shared:// endpoint: say why it waits.
            let slots = inner.inputs.iter().zip(inputs.iter_mut());
            for (slot, stats) in slots.chain(inner.outputs.iter().zip(outputs.iter_mut())) {
                if slot.endpoint.is_shared() && stats.last_error.is_none() {
                    stats.last_error = Some(crate::server::srt::NO_SHARED_PORT.into());
                }
            }
        }
        let active = inner.feed_name(self.hub.active());
        let active_input = inputs.iter().find(|s| s.active()).map(|s| s.id.clone());
        let state = self.state_of(&inner);
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
            psi_versions_bumped: splice.psi_versions_bumped,
            psi_multi_packet: splice.psi_multi_packet,
            slate_packets: {
                // Read one after another while the slate runs: never below zero.
                let c = inner.slate_feed.counters.snapshot();
                c.packets.saturating_sub(c.off_air + c.held_back)
            },
            history: inner.history.iter().cloned().collect(),
            by_reason: Reason::ALL
                .iter()
                .map(|r| (r.as_str(), inner.by_reason[*r as usize]))
                .collect(),
        };
        RouteStats {
            name: self.name.clone(),
            state,
            uptime_s: inner.timers.uptime(now).as_secs_f64(),
            active_input,
            inputs,
            outputs,
            switch,
            gop_cache: self.hub.gop_cache_stats(),
            recording: self.recording_stats(&inner),
        }
    }
}
