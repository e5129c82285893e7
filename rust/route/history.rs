//! The route's recent figures, one sample a second: taken by the control thread at its
//! once-a-second tick (no extra wake, nothing per packet) into a bounded ring, for plots of
//! bitrate, RTT and loss over time (`Route.history()` in the notebook API). One more is taken
//! just before each switch, so a switch shows even when it follows a change within a second;
//! those are kept in a ring of their own, so a storm of switches never shortens the ten
//! minutes of once-a-second samples.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{lock, Inner, Route};

/// Seconds of samples a route keeps (about 150 bytes per endpoint per sample).
pub const HISTORY_SECONDS: usize = 600;
/// Samples taken before a switch a route keeps (the latest; older ones are forgotten).
pub const SWITCH_SAMPLES: usize = 100;

/// One endpoint's figures at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSample {
    pub id: String,
    /// `input` or `output`.
    pub role: &'static str,
    pub bytes: u64,
    pub bitrate_bps: u64,
    pub drops: u64,
    /// SRT endpoints with a peer connected only: the link's round trip and packets lost so
    /// far (a listener's: its callers' worst round trip and summed losses). None while no
    /// peer is connected (a listener without callers), so no made-up zero is plotted.
    pub rtt_ms: Option<f64>,
    pub loss: Option<i64>,
}

/// The route at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub at: f64,
    pub state: &'static str,
    /// What went out: an input id, `slate`, or None.
    pub active: Option<String>,
    /// Switches so far (a step marks a switch).
    pub switches: u64,
    pub endpoints: Vec<EndpointSample>,
}

/// The last [`HISTORY_SECONDS`] once-a-second samples and the last [`SWITCH_SAMPLES`] taken
/// before a switch, each oldest first.
#[derive(Debug, Default)]
pub struct History {
    ticks: VecDeque<Sample>,
    switches: VecDeque<Sample>,
}

impl History {
    fn push(&mut self, sample: Sample, before_switch: bool) {
        let (ring, max) = if before_switch {
            (&mut self.switches, SWITCH_SAMPLES)
        } else {
            (&mut self.ticks, HISTORY_SECONDS)
        };
        if ring.len() == max {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    /// The samples of both rings taken after `since`, oldest first.
    fn since(&self, since: f64) -> Vec<Sample> {
        let after = |ring: &VecDeque<Sample>| {
            let first = ring.partition_point(|s| s.at <= since);
            ring.range(first..).cloned().collect::<Vec<_>>()
        };
        let mut out = after(&self.ticks);
        out.extend(after(&self.switches));
        // Stable: a switch sample taken at the same instant as a tick stays after it.
        out.sort_by(|a, b| a.at.total_cmp(&b.at));
        out
    }

    fn latest(&self) -> Option<f64> {
        let at = |ring: &VecDeque<Sample>| ring.back().map(|s| s.at);
        match (at(&self.ticks), at(&self.switches)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Route {
    /// Takes a sample (the control thread, once a second, and `before_switch`): a few
    /// atomics per endpoint, and an SRT element's statistics.
    pub(super) fn sample(&self, inner: &mut Inner, before_switch: bool) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let endpoints = (inner.inputs.iter().map(|s| (s, "input")))
            .chain(inner.outputs.iter().map(|s| (s, "output")))
            .map(|(s, role)| {
                let c = s.counters.snapshot();
                let srt = s.srt_link();
                EndpointSample {
                    id: s.id.clone(),
                    role,
                    bytes: c.bytes,
                    bitrate_bps: c.bitrate_bps,
                    drops: c.drops,
                    rtt_ms: srt.as_ref().map(|l| l.rtt_ms),
                    loss: srt.as_ref().map(|l| l.loss),
                }
            })
            .collect();
        let sample = Sample {
            at,
            state: self.state_of(inner),
            active: inner.feed_name(self.hub.active()),
            switches: inner.seq,
            endpoints,
        };
        inner.samples.push(sample, before_switch);
    }

    /// The samples of the last `seconds` (at most [`HISTORY_SECONDS`] once-a-second ones and
    /// [`SWITCH_SAMPLES`] taken before switches), oldest first. `seconds` must be a finite
    /// number above 0.
    pub fn history(&self, seconds: f64) -> crate::error::Result<Vec<Sample>> {
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(crate::error::Error::InvalidConfig(format!(
                "seconds must be a finite number above 0, not {seconds}"
            )));
        }
        let inner = lock(&self.inner);
        let Some(last) = inner.samples.latest() else {
            return Ok(Vec::new());
        };
        Ok(inner.samples.since(last - seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at: f64) -> Sample {
        Sample {
            at,
            state: "live",
            active: None,
            switches: 0,
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn a_switch_storm_keeps_the_ten_minutes_of_ticks() {
        let mut h = History::default();
        for t in 0..HISTORY_SECONDS {
            h.push(at(t as f64), false);
        }
        // Five switches a second for the last 100 seconds.
        for i in 0..500 {
            h.push(at(500.0 + i as f64 * 0.2 + 0.1), true);
        }
        assert_eq!(h.ticks.len(), HISTORY_SECONDS);
        assert_eq!(h.switches.len(), SWITCH_SAMPLES);
        let all = h.since(-1.0);
        assert_eq!(all.len(), HISTORY_SECONDS + SWITCH_SAMPLES);
        assert_eq!(all[0].at, 0.0, "the oldest tick is kept");
        assert!(all.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");
        // The tick at 599 and the switch samples at 598.7, 598.9 … 599.9.
        assert_eq!(h.since(598.5).len(), 1 + 7);
    }
}
