//! libsrt's statistics of one connection (`srt_bistats`) as castway's [`SrtLinkStats`].

use super::ffi::CBytePerfMon;
use crate::stats::{
    SrtLinkMeasures, SrtLinkStats, SrtRecvStats, SrtSendStats, SrtSocketStats, SrtWindow,
};

/// All of a connection's figures, in srt-live-transmit's groups and names.
pub fn socket_stats(p: &CBytePerfMon) -> SrtSocketStats {
    SrtSocketStats {
        window: SrtWindow {
            flow: p.pktFlowWindow.into(),
            congestion: p.pktCongestionWindow.into(),
            flight: p.pktFlightSize.into(),
        },
        link: SrtLinkMeasures {
            rtt: p.msRTT,
            bandwidth: p.mbpsBandwidth,
            max_bandwidth: p.mbpsMaxBW,
        },
        send: SrtSendStats {
            packets: p.pktSentTotal,
            packets_unique: p.pktSentUniqueTotal,
            packets_lost: p.pktSndLossTotal.into(),
            packets_dropped: p.pktSndDropTotal.into(),
            packets_retransmitted: p.pktRetransTotal.into(),
            packets_filter_extra: p.pktSndFilterExtraTotal.into(),
            bytes: p.byteSentTotal,
            bytes_unique: p.byteSentUniqueTotal,
            bytes_dropped: p.byteSndDropTotal,
            byte_avail_buf: p.byteAvailSndBuf.into(),
            ms_buf: p.msSndBuf.into(),
            mbit_rate: p.mbpsSendRate,
            send_period: p.usPktSndPeriod,
        },
        recv: SrtRecvStats {
            packets: p.pktRecvTotal,
            packets_unique: p.pktRecvUniqueTotal,
            packets_lost: p.pktRcvLossTotal.into(),
            packets_dropped: p.pktRcvDropTotal.into(),
            // libsrt keeps no total of these; castway never clears, so the interval is all.
            packets_retransmitted: p.pktRcvRetrans.into(),
            packets_belated: p.pktRcvBelated,
            packets_filter_extra: p.pktRcvFilterExtraTotal.into(),
            packets_filter_supply: p.pktRcvFilterSupplyTotal.into(),
            packets_filter_loss: p.pktRcvFilterLossTotal.into(),
            bytes: p.byteRecvTotal,
            bytes_unique: p.byteRecvUniqueTotal,
            bytes_lost: p.byteRcvLossTotal,
            bytes_dropped: p.byteRcvDropTotal,
            byte_avail_buf: p.byteAvailRcvBuf.into(),
            ms_buf: p.msRcvBuf.into(),
            mbit_rate: p.mbpsRecvRate,
            ms_tsb_pd_delay: p.msRcvTsbPdDelay.into(),
        },
    }
}

/// The sending (`sender`) or receiving side of a connection's statistics. Counters are totals
/// since the connection was made (castway never clears them).
pub fn link_stats(p: &CBytePerfMon, sender: bool) -> SrtLinkStats {
    let pick = |send: i64, receive: i64| if sender { send } else { receive };
    SrtLinkStats {
        rtt_ms: p.msRTT,
        loss: pick(p.pktSndLossTotal.into(), p.pktRcvLossTotal.into()),
        retransmissions: pick(p.pktRetransTotal.into(), p.pktRcvRetrans.into()),
        dropped: pick(p.pktSndDropTotal.into(), p.pktRcvDropTotal.into()),
        bandwidth_mbps: p.mbpsBandwidth,
        latency_ms: pick(p.msSndTsbPdDelay.into(), p.msRcvTsbPdDelay.into()),
        packets: pick(p.pktSentTotal, p.pktRecvTotal),
        acks: pick(p.pktRecvACKTotal.into(), p.pktSentACKTotal.into()),
        naks: pick(p.pktRecvNAKTotal.into(), p.pktSentNAKTotal.into()),
        rate_mbps: if sender {
            p.mbpsSendRate
        } else {
            p.mbpsRecvRate
        },
        libsrt: socket_stats(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_reads_its_own_counters() {
        let p = CBytePerfMon {
            msRTT: 1.5,
            pktRcvLossTotal: 3,
            pktRcvRetrans: 2,
            msRcvTsbPdDelay: 120,
            pktRecvTotal: 1000,
            pktSentTotal: 7,
            pktSndLossTotal: 9,
            msSndTsbPdDelay: 200,
            ..Default::default()
        };
        let l = link_stats(&p, false);
        assert_eq!(
            (l.rtt_ms, l.loss, l.retransmissions, l.latency_ms, l.packets),
            (1.5, 3, 2, 120, 1000)
        );
        let sent = link_stats(&p, true);
        assert_eq!((sent.loss, sent.packets, sent.latency_ms), (9, 7, 200));
        // Both sides in srt-live-transmit's groups.
        assert_eq!((l.libsrt.send.packets, l.libsrt.recv.packets), (7, 1000));
        assert_eq!(l.libsrt.recv.ms_tsb_pd_delay, 120);
    }
}
