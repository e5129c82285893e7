//! libsrt's statistics of one connection (`srt_bistats`) as castway's [`SrtLinkStats`].

use super::ffi::CBytePerfMon;
use crate::stats::SrtLinkStats;

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
    }
}
