//! Counters written on streaming threads (atomics only), rates computed on the route's control
//! thread, and the shape of SRT statistics (read from libsrt by `srt::stats`).

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::ts::PACKET_SIZE;

mod srt;
pub use srt::{SrtLinkMeasures, SrtRecvStats, SrtSendStats, SrtSocketStats, SrtWindow};

/// Per input or output: updated lock-free on the streaming thread.
#[derive(Debug, Default)]
pub struct Counters {
    bytes: AtomicU64,
    packets: AtomicU64,
    /// TS packets not delivered: queue full, output not ready, or not MPEG-TS.
    drops: AtomicU64,
    /// Inputs: valid packets that arrived while another source went out (standby).
    off_air: AtomicU64,
    /// Inputs: packets of this input on air that the hub held back at a cut, waiting for
    /// their PID to start cleanly.
    held_back: AtomicU64,
    /// Outputs: packets sent from the hub's GOP cache when the output joined (instant start);
    /// also counted in `packets`.
    burst: AtomicU64,
    /// Outputs: packets handed to an output with no peer to take them (an SRT listener without
    /// callers, a caller not yet connected): discarded, not counted in `packets`.
    unheard: AtomicU64,
    bitrate_bps: AtomicU64,
}

/// A copy of the counters at one moment. Serialised as every endpoint's `bytes`, `packets`,
/// `bitrate_bps` and `drops`; the inputs' own counts are shown with the inputs' figures
/// (`route::InputStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    pub bytes: u64,
    pub packets: u64,
    pub bitrate_bps: u64,
    pub drops: u64,
    #[serde(skip)]
    pub off_air: u64,
    #[serde(skip)]
    pub held_back: u64,
    /// Shown with the outputs' figures (`route::EndpointStats::burst_packets`).
    #[serde(skip)]
    pub burst: u64,
    /// Shown with the outputs' figures (`route::EndpointStats::unheard_packets`).
    #[serde(skip)]
    pub unheard: u64,
}

impl Counters {
    pub fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.packets
            .fetch_add((bytes / PACKET_SIZE) as u64, Relaxed);
    }

    /// Counts a lost buffer of `bytes` as TS packets (rounded up: a partial packet is one lost).
    pub fn drop_bytes(&self, bytes: usize) {
        self.drops
            .fetch_add(bytes.div_ceil(PACKET_SIZE).max(1) as u64, Relaxed);
    }

    /// Counts whole packets that arrived while this input was not on air.
    pub fn off_air(&self, bytes: usize) {
        self.off_air
            .fetch_add((bytes / PACKET_SIZE) as u64, Relaxed);
    }

    /// Counts whole packets of this input held back at a cut.
    pub fn held_back(&self, packets: usize) {
        self.held_back.fetch_add(packets as u64, Relaxed);
    }

    /// Counts whole packets an output was sent from the GOP cache as it joined.
    pub fn burst(&self, bytes: usize) {
        self.burst.fetch_add((bytes / PACKET_SIZE) as u64, Relaxed);
    }

    /// Counts a buffer of `bytes` an output had no peer for, as TS packets (rounded up, as a
    /// drop).
    pub fn unheard(&self, bytes: usize) {
        self.unheard
            .fetch_add(bytes.div_ceil(PACKET_SIZE).max(1) as u64, Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            bytes: self.bytes.load(Relaxed),
            packets: self.packets.load(Relaxed),
            drops: self.drops.load(Relaxed),
            off_air: self.off_air.load(Relaxed),
            held_back: self.held_back.load(Relaxed),
            burst: self.burst.load(Relaxed),
            unheard: self.unheard.load(Relaxed),
            bitrate_bps: self.bitrate_bps.load(Relaxed),
        }
    }
}

/// Turns a byte counter into a bitrate; ticked about once a second by the control thread.
#[derive(Debug, Default)]
pub struct RateMeter {
    last: Option<(Instant, u64)>,
}

impl RateMeter {
    /// Records `counters`' byte count at `now` and stores the bitrate since the last tick.
    pub fn tick(&mut self, counters: &Counters, now: Instant) {
        let bytes = counters.bytes.load(Relaxed);
        if let Some((then, before)) = self.last {
            let secs = now.duration_since(then).as_secs_f64();
            if secs > 0.0 {
                let bps = (bytes.saturating_sub(before) as f64 * 8.0 / secs).round() as u64;
                counters.bitrate_bps.store(bps, Relaxed);
            }
        }
        self.last = Some((now, bytes));
    }
}

/// SRT link statistics of one connection: its sending side (outputs) or receiving side (inputs).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SrtLinkStats {
    pub rtt_ms: f64,
    /// Packets lost on the link (before retransmission recovered them).
    pub loss: i64,
    pub retransmissions: i64,
    /// Packets lost for good (dropped as too late).
    pub dropped: i64,
    /// Shown per endpoint (`SrtStats`), not per caller: a listener's is its callers' sum.
    #[serde(skip)]
    pub bandwidth_mbps: f64,
    pub latency_ms: i64,
    /// Data packets sent (outputs) or received (inputs) on the link.
    pub packets: i64,
    /// ACKs and NAKs (loss reports): received by a sender, sent by a receiver.
    pub acks: i64,
    pub naks: i64,
    /// The link's send (outputs) or receive (inputs) rate as libsrt measures it.
    pub rate_mbps: f64,
    /// Everything libsrt tells of the connection, as srt-live-transmit's `-s` names it.
    pub libsrt: SrtSocketStats,
}

/// One caller connected to an SRT listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SrtCaller {
    pub address: String,
    /// TS packets this caller did not take (its send buffer was full), while the others did.
    pub drops: u64,
    #[serde(flatten)]
    pub link: SrtLinkStats,
}

/// What the stats show of an SRT endpoint: its link (a listener's: its callers' summed up),
/// and a listener's callers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SrtStats {
    #[serde(flatten)]
    pub link: SrtLinkStats,
    pub bandwidth_mbps: f64,
    pub callers: Vec<SrtCaller>,
    /// Plain listeners: callers libsrt refused for a wrong passphrase (`SRT_REJ_BADSECRET`) or
    /// one on a side only (`SRT_REJ_UNSECURE`), since the route started; and those of the
    /// refusals not reported as `srt_refused` events (more than 10 in a second).
    pub refused_bad_secret: u64,
    pub refused_unsecure: u64,
    pub refusal_events_missed: u64,
}

impl SrtStats {
    pub fn new(link: SrtLinkStats, callers: Vec<SrtCaller>) -> SrtStats {
        SrtStats {
            bandwidth_mbps: link.bandwidth_mbps,
            link,
            callers,
            ..SrtStats::default()
        }
    }
}

impl SrtLinkStats {
    /// Several links as one: totals of counters, the worst round trip and latency.
    pub fn aggregate<'a>(links: impl Iterator<Item = &'a SrtLinkStats>) -> SrtLinkStats {
        links.fold(SrtLinkStats::default(), |acc, l| SrtLinkStats {
            rtt_ms: acc.rtt_ms.max(l.rtt_ms),
            loss: acc.loss + l.loss,
            retransmissions: acc.retransmissions + l.retransmissions,
            dropped: acc.dropped + l.dropped,
            bandwidth_mbps: acc.bandwidth_mbps + l.bandwidth_mbps,
            latency_ms: acc.latency_ms.max(l.latency_ms),
            packets: acc.packets + l.packets,
            acks: acc.acks + l.acks,
            naks: acc.naks + l.naks,
            rate_mbps: acc.rate_mbps + l.rate_mbps,
            libsrt: {
                let mut all = acc.libsrt;
                all.add(&l.libsrt);
                all
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn drops_round_up_to_whole_packets() {
        let c = Counters::default();
        c.drop_bytes(1316);
        c.drop_bytes(100);
        c.add(1316);
        let s = c.snapshot();
        assert_eq!((s.bytes, s.packets, s.drops), (1316, 7, 8));
    }

    #[test]
    fn rate_meter_measures_between_ticks() {
        let c = Counters::default();
        let mut m = RateMeter::default();
        let t0 = Instant::now();
        m.tick(&c, t0);
        c.add(125_000);
        m.tick(&c, t0 + Duration::from_millis(500));
        assert_eq!(c.snapshot().bitrate_bps, 2_000_000);
    }
}
