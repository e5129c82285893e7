//! MPEG-TS at the byte level: alignment checks on ingest, just enough PSI to find the video
//! and its keyframes, and the restamper that splices runs of packets (a looped file starting
//! over, a switch to another input) into one stream with continuous timestamps and counters
//! (and PAT/PMT versions a receiver follows across the switch).
//!
//! Everything here runs per buffer on a streaming thread, so it only reads a few header bytes
//! per 188-byte packet and never allocates (but for a PAT or PMT of new content going out).

mod analysis;
mod psi;
mod restamp;
mod section;
mod sps;
mod versions;

pub use analysis::{
    ActiveCondition, Analysis, AnalysisStats, AudioInfo, Check, ConditionChange, ErrorCounts,
    PidInfo, ProgramInfo, StreamInfo, VideoInfo,
};
pub use psi::{h264_size_in, starts_keyframe, Codec, Programs, Video};
pub use restamp::{Cut, Restamper, PTS_WRAP};

pub const PACKET_SIZE: usize = 188;
pub(crate) const SYNC_BYTE: u8 = 0x47;
/// Why a buffer is not MPEG-TS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTs {
    /// The length is not a whole number of 188-byte packets.
    Length(usize),
    /// The packet at this index does not start with 0x47.
    Sync(usize),
}

impl std::fmt::Display for NotTs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotTs::Length(n) => write!(f, "{n} bytes is not a whole number of 188-byte TS packets"),
            NotTs::Sync(i) => write!(f, "packet {i} does not start with the TS sync byte 0x47"),
        }
    }
}

/// Checks that `data` is whole, aligned TS packets; returns how many.
pub fn check_packets(data: &[u8]) -> Result<usize, NotTs> {
    if data.is_empty() || !data.len().is_multiple_of(PACKET_SIZE) {
        return Err(NotTs::Length(data.len()));
    }
    match data
        .chunks_exact(PACKET_SIZE)
        .position(|p| p[0] != SYNC_BYTE)
    {
        Some(i) => Err(NotTs::Sync(i)),
        None => Ok(data.len() / PACKET_SIZE),
    }
}

/// Sync bytes that must line up, 188 bytes apart, before a stream counts as found again.
const RESYNC_PACKETS: usize = 3;
/// Whole packets per buffer handed on after realignment (1316 bytes: one SRT/UDP payload).
pub const PACKETS_PER_BUFFER: usize = 7;

/// What the aligner hands on, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Aligned<'a> {
    /// Whole, aligned packets (at most `PACKETS_PER_BUFFER`).
    Packets(&'a [u8]),
    /// A byte that should have been a sync byte was not (TR 101 290 Sync_byte_error).
    SyncByteError,
    /// Sync is lost: the byte 188 further on was no sync byte either, or the stream was never
    /// in sync (TR 101 290 TS_sync_loss).
    SyncLost,
}

/// Turns whatever an input delivers into whole, aligned TS packets.
///
/// Senders that already send whole packets (srt-live-transmit from UDP, ffmpeg, GStreamer) take
/// the fast path: `passes_through` is true and the buffer goes on untouched, so passthrough stays
/// bit-exact. Senders that split the byte stream elsewhere (`cat file.ts | srt-live-transmit
/// file://con …` sends 1456-byte messages) are realigned: the bytes are the same, the boundaries
/// move. Bytes that are not TS are dropped until three sync bytes line up again, and counted.
///
/// It also says how sync was lost, as TR 101 290 counts it: one bad sync byte with the next
/// packet in place (one corrupted packet, dropped) is a sync byte error; two in a row (anything
/// else the search has to skip) is a loss of sync.
#[derive(Debug)]
pub struct Aligner {
    /// Synced: the start of a packet not yet complete. Searching: bytes not yet ruled out.
    carry: Vec<u8>,
    synced: bool,
    /// Searching since a bad sync byte: the bytes dropped since (one packet's worth and the
    /// next in place is one corrupted packet; more is a loss of sync).
    since_bad: Option<usize>,
}

impl Default for Aligner {
    fn default() -> Self {
        Aligner {
            carry: Vec::with_capacity(RESYNC_PACKETS * PACKET_SIZE),
            synced: true,
            since_bad: None,
        }
    }
}

impl Aligner {
    /// Whether `data` can go on as it is: in sync, nothing carried, whole packets.
    pub fn passes_through(&self, data: &[u8]) -> bool {
        self.synced && self.carry.is_empty() && check_packets(data).is_ok()
    }

    /// Realigns `data` (after what was carried), calling `emit` with runs of whole packets of at
    /// most `PACKETS_PER_BUFFER` and with what happened to sync, in stream order. Returns how
    /// many bytes were dropped as not TS.
    pub fn push(&mut self, data: &[u8], mut emit: impl FnMut(Aligned<'_>)) -> usize {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(data);
        let mut garbage = 0;
        let mut i = 0;
        let mut run_start = 0;
        loop {
            if self.synced {
                if buf.len() - i < PACKET_SIZE && (i == buf.len() || buf[i] == SYNC_BYTE) {
                    break;
                }
                if buf[i] == SYNC_BYTE {
                    i += PACKET_SIZE;
                    if (i - run_start) / PACKET_SIZE == PACKETS_PER_BUFFER {
                        emit(Aligned::Packets(&buf[run_start..i]));
                        run_start = i;
                    }
                    continue;
                }
                if run_start < i {
                    emit(Aligned::Packets(&buf[run_start..i]));
                }
                self.synced = false;
                self.since_bad = Some(0);
                emit(Aligned::SyncByteError);
            }
            let span = (RESYNC_PACKETS - 1) * PACKET_SIZE;
            let confirmed = (i..buf.len().saturating_sub(span))
                .find(|&p| (0..RESYNC_PACKETS).all(|k| buf[p + k * PACKET_SIZE] == SYNC_BYTE));
            let dropped = match confirmed {
                Some(p) => p - i,
                // Keep the tail that could still start a confirmed run.
                None => buf.len().saturating_sub(span).max(i) - i,
            };
            garbage += dropped;
            i += dropped;
            run_start = i;
            if let Some(since) = self.since_bad.as_mut() {
                *since += dropped;
                // The next packet was in place only if exactly one packet's bytes went.
                if *since > PACKET_SIZE || (confirmed.is_some() && *since != PACKET_SIZE) {
                    self.since_bad = None;
                    emit(Aligned::SyncByteError);
                    emit(Aligned::SyncLost);
                }
            }
            if confirmed.is_none() {
                break;
            }
            self.synced = true;
            self.since_bad = None;
        }
        if self.synced && run_start < i {
            emit(Aligned::Packets(&buf[run_start..i]));
        }
        buf.drain(..i);
        self.carry = buf;
        garbage
    }
}

pub fn pid(p: &[u8]) -> usize {
    (usize::from(p[1] & 0x1f) << 8) | usize::from(p[2])
}

/// Adaptation field control bits: (has adaptation field, has payload).
fn afc(p: &[u8]) -> (bool, bool) {
    (p[3] & 0x20 != 0, p[3] & 0x10 != 0)
}

/// Offset of the payload in the packet, if it has one that fits.
fn payload_offset(p: &[u8]) -> Option<usize> {
    let (has_af, has_payload) = afc(p);
    if !has_payload {
        return None;
    }
    let off = if has_af { 5 + usize::from(p[4]) } else { 4 };
    (off < PACKET_SIZE).then_some(off)
}

/// Reads the 33-bit PCR base (90 kHz) if this packet carries a PCR.
pub fn pcr_base(p: &[u8]) -> Option<u64> {
    let (has_af, _) = afc(p);
    if !has_af || p[4] < 7 || p[5] & 0x10 == 0 {
        return None;
    }
    let b = &p[6..11];
    Some(
        (u64::from(b[0]) << 25)
            | (u64::from(b[1]) << 17)
            | (u64::from(b[2]) << 9)
            | (u64::from(b[3]) << 1)
            | (u64::from(b[4]) >> 7),
    )
}

fn write_pcr_base(p: &mut [u8], base: u64) {
    let b = &mut p[6..11];
    b[0] = (base >> 25) as u8;
    b[1] = (base >> 17) as u8;
    b[2] = (base >> 9) as u8;
    b[3] = (base >> 1) as u8;
    b[4] = (b[4] & 0x7f) | (((base & 1) as u8) << 7);
}

fn read_ts(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1 & 0x07) << 30)
        | (u64::from(b[1]) << 22)
        | (u64::from(b[2] >> 1) << 15)
        | (u64::from(b[3]) << 7)
        | u64::from(b[4] >> 1)
}

fn write_ts(b: &mut [u8], ts: u64) {
    b[0] = (b[0] & 0xf1) | (((ts >> 30) as u8 & 0x07) << 1);
    b[1] = (ts >> 22) as u8;
    b[2] = (((ts >> 15) as u8) << 1) | 1;
    b[3] = (ts >> 7) as u8;
    b[4] = ((ts as u8) << 1) | 1;
}

/// The PTS of a PES header starting in this packet, if it carries one (90 kHz, 33 bits).
pub fn pes_pts(p: &[u8]) -> Option<u64> {
    let (pts, _) = pes_timestamp_offsets(p);
    pts.map(|o| read_ts(&p[o..o + 5]))
}

/// The PTS (and DTS) positions of a PES header starting in this packet.
pub(crate) fn pes_timestamp_offsets(p: &[u8]) -> (Option<usize>, Option<usize>) {
    if p[1] & 0x40 == 0 {
        return (None, None);
    }
    let Some(off) = payload_offset(p) else {
        return (None, None);
    };
    let pes = &p[off..];
    if pes.len() < 19 || pes[0..3] != [0, 0, 1] {
        return (None, None);
    }
    // Stream ids without the optional PES header (ISO 13818-1 table 2-21).
    if matches!(
        pes[3],
        0xbc | 0xbe | 0xbf | 0xf0 | 0xf1 | 0xf2 | 0xf8 | 0xff
    ) {
        return (None, None);
    }
    match pes[7] >> 6 {
        0b10 => (Some(off + 9), None),
        0b11 => (Some(off + 9), Some(off + 14)),
        _ => (None, None),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    pub(crate) use super::psi::tests::{pat, pmt};
    pub(crate) use super::versions::tests as tables;
    use super::*;

    /// Builds one TS packet: PID, CC, optional PCR (90 kHz base), optional PES PTS.
    pub(crate) fn packet(
        pid: u16,
        cc: u8,
        pcr: Option<u64>,
        pts: Option<u64>,
    ) -> [u8; PACKET_SIZE] {
        let mut p = [0xffu8; PACKET_SIZE];
        p[0] = SYNC_BYTE;
        p[1] = ((pid >> 8) as u8 & 0x1f) | if pts.is_some() { 0x40 } else { 0 };
        p[2] = pid as u8;
        p[3] = 0x10 | (cc & 0x0f);
        let off = pcr.map_or(4, |pcr| put_pcr(&mut p, pcr));
        if let Some(pts) = pts {
            put_pes_header(&mut p, off, pts);
        }
        p
    }

    /// Gives packet `p` an adaptation field carrying `pcr` (90 kHz base); returns where the
    /// payload starts.
    pub(crate) fn put_pcr(p: &mut [u8; PACKET_SIZE], pcr: u64) -> usize {
        p[3] |= 0x20;
        p[4] = 7;
        p[5] = 0x10;
        write_pcr_base(p, pcr);
        p[10] |= 0x7e;
        p[11] = 0;
        12
    }

    /// Writes a video PES header with `pts` at `off`; returns where its data starts.
    pub(crate) fn put_pes_header(p: &mut [u8; PACKET_SIZE], off: usize, pts: u64) -> usize {
        p[off..off + 9].copy_from_slice(&[0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5]);
        p[off + 9] = 0x21;
        write_ts(&mut p[off + 9..off + 14], pts);
        off + 14
    }

    #[test]
    fn alignment_is_checked() {
        let p = packet(0x100, 0, None, None);
        assert_eq!(check_packets(&p), Ok(1));
        assert_eq!(check_packets(&p[..100]), Err(NotTs::Length(100)));
        let mut two = [p, p].concat();
        two[PACKET_SIZE] = 0x00;
        assert_eq!(check_packets(&two), Err(NotTs::Sync(1)));
        assert_eq!(check_packets(b""), Err(NotTs::Length(0)));
    }

    fn stream(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| packet(0x100, i as u8, None, None))
            .collect()
    }

    fn realign(a: &mut Aligner, data: &[u8]) -> (Vec<u8>, Vec<usize>, usize) {
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        let garbage = a.push(data, |piece| {
            if let Aligned::Packets(run) = piece {
                sizes.push(run.len());
                out.extend_from_slice(run)
            }
        });
        (out, sizes, garbage)
    }

    #[test]
    fn aligned_input_passes_through() {
        let a = Aligner::default();
        assert!(a.passes_through(&stream(7)));
        assert!(!a.passes_through(&stream(7)[..1000]));
    }

    #[test]
    fn split_messages_are_realigned_byte_for_byte() {
        let data = stream(40);
        let mut a = Aligner::default();
        let mut out = Vec::new();
        for chunk in data.chunks(1456) {
            let (o, sizes, garbage) = realign(&mut a, chunk);
            assert_eq!(garbage, 0);
            assert!(
                sizes.iter().all(|s| s % PACKET_SIZE == 0 && *s <= 1316),
                "{sizes:?}"
            );
            out.extend(o);
        }
        assert_eq!(out, data);
    }

    #[test]
    fn garbage_is_dropped_and_counted_then_sync_is_found_again() {
        let junk: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8 & 0x3f).collect();
        let mut a = Aligner::default();
        let (out, _, garbage) = realign(&mut a, &junk);
        assert!(out.is_empty());
        let good = stream(10);
        let (out2, _, garbage2) = realign(&mut a, &good);
        assert_eq!(garbage + garbage2, junk.len());
        assert_eq!(out2, good[..]);
    }

    #[test]
    fn a_corrupt_packet_in_the_middle_is_skipped() {
        let mut data = stream(10);
        data[3 * PACKET_SIZE] = 0x00; // packet 3 loses its sync byte
        let mut a = Aligner::default();
        let (out, _, garbage) = realign(&mut a, &data);
        // Packet 3 goes; 0..3 and, once three sync bytes line up again, 4..10 survive.
        assert_eq!(garbage, PACKET_SIZE);
        assert_eq!(out.len(), 9 * PACKET_SIZE);
        let (rest, _, _) = realign(&mut a, &stream(3));
        assert_eq!(out.len() + rest.len(), 12 * PACKET_SIZE);
    }

    /// What the aligner reports for `data` pushed in `chunk`-byte pieces: "P" for each packet,
    /// "E" for a sync byte error, "L" for a loss of sync.
    fn sync_report(data: &[u8], chunk: usize) -> String {
        let mut a = Aligner::default();
        let mut out = String::new();
        for c in data.chunks(chunk) {
            a.push(c, |piece| match piece {
                Aligned::Packets(run) => out.push_str(&"P".repeat(run.len() / PACKET_SIZE)),
                Aligned::SyncByteError => out.push('E'),
                Aligned::SyncLost => out.push('L'),
            });
        }
        out
    }

    #[test]
    fn one_corrupted_sync_byte_is_a_sync_byte_error_not_a_loss_of_sync() {
        let mut data = stream(10);
        data[3 * PACKET_SIZE] = 0x00;
        for chunk in [1316, 1456, 100, data.len()] {
            assert_eq!(sync_report(&data, chunk), "PPPEPPPPPP", "{chunk}");
        }
    }

    #[test]
    fn garbage_between_packets_is_two_sync_byte_errors_and_one_loss_of_sync() {
        // Bytes that are never 0x47, long and short, inserted between whole packets.
        for len in [500, 150, 188 * 3] {
            let junk: Vec<u8> = (0..len as u32).map(|i| (i * 7 + 3) as u8 & 0x3f).collect();
            let data = [stream(4), junk, stream(10)].concat();
            for chunk in [1316, 1456, 100] {
                assert_eq!(
                    sync_report(&data, chunk),
                    "PPPPEELPPPPPPPPPP",
                    "{len} bytes in {chunk}-byte pieces"
                );
            }
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let p = packet(0x100, 3, Some(0x1_2345_6789), Some(0x1_8765_4321));
        assert_eq!(pcr_base(&p), Some(0x1_2345_6789));
        let (pts, dts) = pes_timestamp_offsets(&p);
        assert_eq!(dts, None);
        assert_eq!(read_ts(&p[pts.unwrap()..]), 0x1_8765_4321);
    }
}
