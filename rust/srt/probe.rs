//! `castway probe`: measures an SRT path (round trip, loss, jitter) by sending a paced stream
//! of null TS packets to an SRT listener for a while, and recommends the latency and the
//! bandwidth overhead after the SRT Deployment Guide's table (RTT multiplier and recovery
//! overhead by packet loss rate).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Io, Socket};
use crate::uri::{SrtEndpoint, SrtMode};

/// How often the round trip is sampled.
const SAMPLE: Duration = Duration::from_millis(100);
/// How long a probe may run (s), and what it may send (bit/s): `castway probe`'s bounds.
pub const SECONDS: (f64, f64) = (1.0, 600.0);
pub const BITRATE: (u64, u64) = (8_000, 1_000_000_000);

/// Checks what a probe is asked before it connects: an endpoint that calls, a time and a
/// bitrate in their bounds. The error names what is wrong.
pub fn check(ep: &SrtEndpoint, seconds: f64, bitrate: u64) -> Result<(), (&'static str, String)> {
    match ep.mode {
        SrtMode::Caller => {}
        SrtMode::Shared => {
            return Err((
                "uri",
                "srt-shared:// is castway's own port seen by its routes: probe it as \
                 srt://HOST:PORT"
                    .into(),
            ))
        }
        mode => {
            return Err((
                "uri",
                format!(
                    "the probe calls a listener: give its address (`mode=caller`, the default \
                     with a host), not `mode={mode}`"
                ),
            ))
        }
    }
    // NaN fails both comparisons.
    if !(seconds >= SECONDS.0 && seconds <= SECONDS.1) {
        return Err((
            "seconds",
            format!(
                "probe for {} to {} seconds, not {seconds}",
                SECONDS.0, SECONDS.1
            ),
        ));
    }
    if !(BITRATE.0..=BITRATE.1).contains(&bitrate) {
        return Err((
            "bitrate",
            format!("the bitrate must be 8k to 1G bit/s, not {bitrate}"),
        ));
    }
    Ok(())
}

/// What the probe measured and what it recommends.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProbeReport {
    pub seconds: f64,
    /// The round trip: its mean, least and greatest sample (ms).
    pub rtt_ms: f64,
    pub rtt_min_ms: f64,
    pub rtt_max_ms: f64,
    /// The mean change of the round trip between samples 100 ms apart (ms).
    pub jitter_ms: f64,
    /// Data packets sent once (not counting retransmissions).
    pub packets: i64,
    /// Packets the receiver reported lost (a packet reported again by a periodic loss report
    /// counts again).
    pub lost: i64,
    pub retransmitted: i64,
    /// The loss rate of the path (%): retransmissions over all that was sent.
    pub loss_percent: f64,
    /// The path's bandwidth as libsrt estimates it (Mb/s).
    pub bandwidth_mbps: f64,
    /// The Deployment Guide's row for the loss rate.
    pub rtt_multiplier: u32,
    pub overhead_percent: u32,
    /// `rtt_multiplier` × the round trip, at least the row's minimum (ms).
    pub latency_ms: u32,
    /// The loss rate is beyond the guide's table (more than 10 %).
    pub beyond_guide: bool,
}

/// The SRT Deployment Guide's table: up to this loss (%), the RTT multiplier, the recovery
/// bandwidth overhead (%) and the least latency (ms, for a round trip up to 20 ms).
const GUIDE: [(f64, u32, u32, u32); 4] = [
    (1.0, 3, 33, 60),
    (3.0, 4, 25, 80),
    (7.0, 5, 20, 100),
    (10.0, 6, 17, 120),
];

/// The recommendation for a loss rate (%) and a round trip (ms).
pub fn recommend(loss_percent: f64, rtt_ms: f64) -> (u32, u32, u32, bool) {
    let row = GUIDE.iter().find(|(upto, ..)| loss_percent <= *upto);
    let (_, multiplier, overhead, least) = *row.unwrap_or(&GUIDE[GUIDE.len() - 1]);
    let latency = ((f64::from(multiplier) * rtt_ms).ceil() as u32).max(least);
    (multiplier, overhead, latency, row.is_none())
}

/// Probes `ep` (a caller; the listener's address) for `seconds` at `bitrate` bit/s.
pub fn probe(ep: &SrtEndpoint, seconds: f64, bitrate: u64) -> Result<ProbeReport, String> {
    if let Err((_, why)) = check(ep, seconds, bitrate) {
        return Err(why);
    }
    let mut ep = ep.clone();
    if ep.streamid.is_none() {
        // What a castway shared port routes to its probe responder.
        ep.streamid = Some("probe".into());
    }
    let socket = Socket::new()?;
    socket.configure(&ep)?;
    // Retransmit a packet again only when a loss report comes after its last retransmission
    // had time to arrive (libsrt's reduced algorithm): the retransmissions then count the
    // packets lost on the way, not the periodic reports' repeats.
    socket.set_int(super::ffi::SRTO_RETRANSMITALGO, 1, "retransmitalgo")?;
    let target = super::socket::resolve(&ep.host, ep.port)?;
    socket.connect(target)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.connected() {
        if socket.state() >= super::ffi::SRTS_BROKEN || Instant::now() > deadline {
            return Err(format!(
                "cannot connect to {target}: {}",
                socket.reject_reason()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Null packets (PID 0x1FFF), 7 to a message: nothing a receiver would play.
    let mut message = Vec::with_capacity(1316);
    for _ in 0..7 {
        message.extend_from_slice(&[0x47, 0x1f, 0xff, 0x10]);
        message.extend(std::iter::repeat_n(0xffu8, 184));
    }
    let interval = Duration::from_secs_f64(1316.0 * 8.0 / bitrate.max(8_000) as f64);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let (mut next_send, mut next_sample) = (start, start + SAMPLE);
    let mut rtts: Vec<f64> = Vec::new();
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_send {
            if let Io::Failed(why) = socket.send(&message) {
                return Err(format!("the connection to {target} ended: {why}"));
            }
            next_send += interval;
        }
        if now >= next_sample {
            if let Some(p) = socket.stats() {
                if p.msRTT > 0.0 {
                    rtts.push(p.msRTT);
                }
            }
            next_sample += SAMPLE;
        }
        let wake = next_send.min(next_sample).min(end);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    let p = socket
        .stats()
        .ok_or_else(|| "libsrt gave no statistics".to_string())?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let jitter: Vec<f64> = rtts.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    let packets = p.pktSentUniqueTotal.max(1);
    let lost = i64::from(p.pktSndLossTotal);
    // The share of what went on the link that had to be sent again: a lost packet is
    // retransmitted, and so is a lost retransmission.
    let retransmitted = i64::from(p.pktRetransTotal);
    let loss_percent = retransmitted as f64 * 100.0 / (packets + retransmitted) as f64;
    let rtt = mean(&rtts);
    let (rtt_multiplier, overhead_percent, latency_ms, beyond_guide) = recommend(loss_percent, rtt);
    Ok(ProbeReport {
        seconds: start.elapsed().as_secs_f64(),
        rtt_ms: rtt,
        rtt_min_ms: rtts.iter().copied().fold(f64::INFINITY, f64::min).min(rtt),
        rtt_max_ms: rtts.iter().copied().fold(0.0, f64::max),
        jitter_ms: mean(&jitter),
        packets,
        lost,
        loss_percent,
        retransmitted,
        bandwidth_mbps: p.mbpsBandwidth,
        rtt_multiplier,
        overhead_percent,
        latency_ms,
        beyond_guide,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommendations_follow_the_guides_rows() {
        // A clean short path: the least latency of the first row.
        assert_eq!(recommend(0.0, 2.0), (3, 33, 60, false));
        // 5 % loss over a 45 ms round trip: 5 x RTT, 20 % overhead.
        assert_eq!(recommend(5.0, 45.0), (5, 20, 225, false));
        assert_eq!(recommend(10.0, 10.0), (6, 17, 120, false));
        // Beyond the table: its last row, and said so.
        assert_eq!(recommend(15.0, 50.0), (6, 17, 300, true));
    }
}
