//! The route's recent figures, one sample a second: taken by the control thread at its
//! once-a-second tick (no extra wake, nothing per packet) into a bounded ring, for plots of
//! bitrate, RTT and loss over time (`Route.history()` in the notebook API). One more is taken
//! just before each switch, so a switch shows even when it follows a change within a second.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{lock, Inner, Route};

/// Seconds of samples a route keeps (about 150 bytes per endpoint per sample).
pub const HISTORY_SECONDS: usize = 600;

/// One endpoint's figures at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSample {
    pub id: String,
    /// `input` or `output`.
    pub role: &'static str,
    pub bytes: u64,
    pub bitrate_bps: u64,
    pub drops: u64,
    /// SRT endpoints only: the link's round trip and packets lost so far (a listener's: its
    /// callers' worst round trip and summed losses).
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

/// The last [`HISTORY_SECONDS`] samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    fn push(&mut self, sample: Sample) {
        if self.samples.len() == HISTORY_SECONDS {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }
}

impl Route {
    /// Takes a sample (the control thread, once a second): a few atomics per endpoint, and
    /// an SRT element's statistics.
    pub(super) fn sample(&self, inner: &mut Inner) {
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
        inner.samples.push(sample);
    }

    /// The samples of the last `seconds` (at most [`HISTORY_SECONDS`]), oldest first.
    pub fn history(&self, seconds: f64) -> Vec<Sample> {
        let inner = lock(&self.inner);
        let Some(last) = inner.samples.samples.back() else {
            return Vec::new();
        };
        let since = last.at - seconds;
        let first = inner.samples.samples.partition_point(|s| s.at <= since);
        inner.samples.samples.range(first..).cloned().collect()
    }
}
