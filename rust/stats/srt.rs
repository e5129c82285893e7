//! libsrt's statistics of one SRT connection, grouped and named as srt-live-transmit's `-s`
//! JSON output names them (`window`, `link`, `send`, `recv`), so a tool or a dashboard made for
//! one reads the other. Counters are totals since the connection was made (srt-live-transmit
//! prints them per interval); the rest is how things stand now.

use serde::Serialize;

/// `window`: flow control.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SrtWindow {
    /// Flow window (packets).
    pub flow: i64,
    /// Congestion window (packets).
    pub congestion: i64,
    /// Packets sent and not yet acknowledged.
    pub flight: i64,
}

/// `link`: the path.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SrtLinkMeasures {
    /// Round-trip time (ms).
    pub rtt: f64,
    /// Estimated bandwidth (Mb/s).
    pub bandwidth: f64,
    /// The sending rate's ceiling (Mb/s).
    pub max_bandwidth: f64,
}

/// `send`: the sending side.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SrtSendStats {
    pub packets: i64,
    pub packets_unique: i64,
    pub packets_lost: i64,
    pub packets_dropped: i64,
    pub packets_retransmitted: i64,
    pub packets_filter_extra: i64,
    pub bytes: u64,
    pub bytes_unique: u64,
    pub bytes_dropped: u64,
    /// Free space in the send buffer (bytes).
    pub byte_avail_buf: i64,
    /// What the send buffer holds, in milliseconds of stream.
    pub ms_buf: i64,
    pub mbit_rate: f64,
    /// Time between two packets sent (µs).
    pub send_period: f64,
}

/// `recv`: the receiving side.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SrtRecvStats {
    pub packets: i64,
    pub packets_unique: i64,
    pub packets_lost: i64,
    pub packets_dropped: i64,
    pub packets_retransmitted: i64,
    pub packets_belated: i64,
    pub packets_filter_extra: i64,
    pub packets_filter_supply: i64,
    pub packets_filter_loss: i64,
    pub bytes: u64,
    pub bytes_unique: u64,
    pub bytes_lost: u64,
    pub bytes_dropped: u64,
    /// Free space in the receive buffer (bytes).
    pub byte_avail_buf: i64,
    /// What the receive buffer holds, in milliseconds of stream.
    pub ms_buf: i64,
    pub mbit_rate: f64,
    /// The latency the receiver plays at (ms).
    pub ms_tsb_pd_delay: i64,
}

/// One connection's figures in srt-live-transmit's groups.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SrtSocketStats {
    pub window: SrtWindow,
    pub link: SrtLinkMeasures,
    pub send: SrtSendStats,
    pub recv: SrtRecvStats,
}

impl SrtSocketStats {
    /// Adds another connection's figures: counts, rates and buffer space summed; round trip,
    /// buffered time, flight and latency the worst of the two.
    pub fn add(&mut self, o: &SrtSocketStats) {
        let (w, l, s, r) = (
            &mut self.window,
            &mut self.link,
            &mut self.send,
            &mut self.recv,
        );
        w.flow = w.flow.max(o.window.flow);
        w.congestion = w.congestion.max(o.window.congestion);
        w.flight = w.flight.max(o.window.flight);
        l.rtt = l.rtt.max(o.link.rtt);
        l.bandwidth += o.link.bandwidth;
        l.max_bandwidth += o.link.max_bandwidth;
        let os = &o.send;
        s.packets += os.packets;
        s.packets_unique += os.packets_unique;
        s.packets_lost += os.packets_lost;
        s.packets_dropped += os.packets_dropped;
        s.packets_retransmitted += os.packets_retransmitted;
        s.packets_filter_extra += os.packets_filter_extra;
        s.bytes += os.bytes;
        s.bytes_unique += os.bytes_unique;
        s.bytes_dropped += os.bytes_dropped;
        s.byte_avail_buf += os.byte_avail_buf;
        s.ms_buf = s.ms_buf.max(os.ms_buf);
        s.mbit_rate += os.mbit_rate;
        s.send_period = s.send_period.max(os.send_period);
        let or = &o.recv;
        r.packets += or.packets;
        r.packets_unique += or.packets_unique;
        r.packets_lost += or.packets_lost;
        r.packets_dropped += or.packets_dropped;
        r.packets_retransmitted += or.packets_retransmitted;
        r.packets_belated += or.packets_belated;
        r.packets_filter_extra += or.packets_filter_extra;
        r.packets_filter_supply += or.packets_filter_supply;
        r.packets_filter_loss += or.packets_filter_loss;
        r.bytes += or.bytes;
        r.bytes_unique += or.bytes_unique;
        r.bytes_lost += or.bytes_lost;
        r.bytes_dropped += or.bytes_dropped;
        r.byte_avail_buf += or.byte_avail_buf;
        r.ms_buf = r.ms_buf.max(or.ms_buf);
        r.mbit_rate += or.mbit_rate;
        r.ms_tsb_pd_delay = r.ms_tsb_pd_delay.max(or.ms_tsb_pd_delay);
    }
}
