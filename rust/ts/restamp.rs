//! The restamper: splices runs of TS packets into one stream a receiver plays without noticing.
//!
//! A *run* is what one source delivers between two cuts: a looped file starting over, or the
//! hub switching to another input or to the slate. Until the first cut the restamper only
//! observes, so a single run passes bit-exact. From a cut on it rewrites every packet:
//!
//! - **Timestamps.** PCR, PTS and DTS get one offset (mod 2^33). For a live source whose clock
//!   is known at the cut, the offset maps "its clock now" to "the output clock now" (the last
//!   PCR out plus the wall-clock time since), so PCR keeps its pace against arrival time. When
//!   the new run's clock is not known yet (a file starting over, a source that just started),
//!   nothing passes until its first PCR, which is placed the wall-clock time since the last PCR
//!   out after it, and at least one PCR interval plus a guard.
//! - **Clean starts.** Each PID is closed at the cut and opens at its first packet that starts
//!   something whole: a section or PES (payload unit start). The video PID opens only on a
//!   keyframe. A PES whose timestamp would not move forward from the last one out on its PID is
//!   held back (audio waits for its next PES); a video keyframe that would is moved forward by
//!   raising the offset, so a receiver never sees time run backwards. Packets held back that
//!   carry the PCR go out as adaptation-field-only packets, so the clock keeps ticking.
//! - **Continuity counters** carry on per PID from the last one out.
//! - **PAT and PMT versions.** A table whose content differs from what went out last gets a
//!   new version number, so receivers read it (`versions.rs`).

use super::versions::PsiVersions;
use super::{
    afc, pcr_base, pes_timestamp_offsets, pid, read_ts, starts_keyframe, write_pcr_base, write_ts,
    Video, PACKET_SIZE,
};

const PID_COUNT: usize = 8192;
const NULL_PID: usize = 0x1fff;
pub const PTS_WRAP: u64 = 1 << 33;
/// PCR spacing assumed when a stream carries a single PCR (90 kHz ticks, 40 ms).
const DEFAULT_PCR_GAP_90K: u64 = 3_600;
/// Extra room left between two runs of a file (90 kHz ticks, 40 ms): a run's audio can end a
/// frame after its last PCR plus one PCR interval.
const RUN_GUARD_90K: u64 = 3_600;
/// Largest PCR spacing trusted as "one interval" (90 kHz ticks, 100 ms; ISO 13818-1 maximum).
const MAX_PCR_GAP_90K: u64 = 9_000;
/// Least step from the last video frame out to the first keyframe of a new run (40 ms).
const VIDEO_STEP_90K: u64 = 3_600;
const NO_TS: u64 = u64::MAX;

/// How far `b` is ahead of `a` on the 33-bit clock; more than half the wrap means "behind".
fn ahead(a: u64, b: u64) -> u64 {
    b.wrapping_sub(a) % PTS_WRAP
}

fn is_forward(a: u64, b: u64) -> bool {
    let d = ahead(a, b);
    d > 0 && d < PTS_WRAP / 2
}

/// How a new run joins the stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cut {
    /// The new run's clock now (its latest PCR carried forward to now, 90 kHz), if known.
    /// Without it, the run is placed at its first PCR, right after the last PCR out.
    pub source_pcr: Option<u64>,
    /// The new run's PCR PID, if known from its PMT; else the first PID seen with a PCR.
    pub pcr_pid: Option<u16>,
    /// The new run's video, if known: its PID opens on a keyframe only.
    pub video: Option<Video>,
    /// Every PID opens at its first packet, whatever it starts: nothing is held back (a
    /// route's only input returning, where every byte it delivers must go out). Timestamps
    /// still never run backwards: the offset moves forward instead.
    pub whole: bool,
}

pub struct Restamper {
    pcr_pid: Option<usize>,
    last_in_pcr: Option<u64>,
    /// Last PCR out (output time) and when it went out (the caller's clock, 90 kHz).
    last_out_pcr: Option<u64>,
    last_out_pcr_at: u64,
    pcr_gap: u64,
    /// Added to every timestamp (mod 2^33).
    offset: u64,
    /// Nothing passes until a PCR settles the offset.
    awaiting_pcr: bool,
    video: Option<Video>,
    last_cc: Box<[u8; PID_COUNT]>,
    cc_offset: Box<[u8; PID_COUNT]>,
    /// Per PID: whether packets pass (false from a cut until the PID starts cleanly).
    open: Box<[bool; PID_COUNT]>,
    /// Per PID: the DTS (else PTS) of the last PES out.
    last_ts: Box<[u64; PID_COUNT]>,
    /// Per PID: opened mid-PES by a whole cut, so its next PES start is still to be checked
    /// against the last timestamp out.
    unchecked: Box<[bool; PID_COUNT]>,
    /// This run opens every PID at its first packet (`Cut::whole`).
    whole: bool,
    active: bool,
    /// Anything went out yet.
    seen: bool,
    held_back: u64,
    /// The PAT and PMTs that went out, and their versions.
    versions: PsiVersions,
}

impl Default for Restamper {
    fn default() -> Self {
        Restamper {
            pcr_pid: None,
            last_in_pcr: None,
            last_out_pcr: None,
            last_out_pcr_at: 0,
            pcr_gap: DEFAULT_PCR_GAP_90K,
            offset: 0,
            awaiting_pcr: false,
            video: None,
            last_cc: Box::new([0xff; PID_COUNT]),
            cc_offset: Box::new([0; PID_COUNT]),
            open: Box::new([true; PID_COUNT]),
            last_ts: Box::new([NO_TS; PID_COUNT]),
            unchecked: Box::new([false; PID_COUNT]),
            whole: false,
            active: false,
            seen: false,
            held_back: 0,
            versions: PsiVersions::default(),
        }
    }
}

impl Restamper {
    /// A new run begins with the next packet; `now` is the caller's clock in 90 kHz ticks.
    pub fn restart(&mut self, cut: Cut, now: u64) {
        self.active = true;
        self.open.fill(false);
        self.unchecked.fill(false);
        self.video = cut.video;
        self.whole = cut.whole;
        self.pcr_pid = cut.pcr_pid.map(usize::from);
        self.last_in_pcr = None;
        self.awaiting_pcr = false;
        match (cut.source_pcr, self.last_out_pcr) {
            (_, None) => {}
            (Some(source), Some(last)) => {
                let elapsed = now.saturating_sub(self.last_out_pcr_at).max(1);
                self.offset = ahead(source, last + elapsed);
            }
            (None, Some(_)) => self.awaiting_pcr = true,
        }
    }

    /// Whether buffers need rewriting (false until the first cut, so the first run stays
    /// bit-exact and its buffers need not be made writable).
    pub fn rewrites(&self) -> bool {
        self.active
    }

    /// Whether any packet went out yet (before that, a cut needs no splicing).
    pub fn seen(&self) -> bool {
        self.seen
    }

    /// Packets dropped at cuts so far (waiting for a clean start on their PID).
    pub fn held_back(&self) -> u64 {
        self.held_back
    }

    /// Times a PAT or PMT of new content got a version of the splicer's in place of its own,
    /// and PAT and PMT sections passed as they are after a cut because they span packets
    /// (`versions.rs`).
    pub fn psi_versions(&self) -> (u64, u64) {
        (self.versions.bumped(), self.versions.left())
    }

    /// Whether the run's clock is unknown until its first PCR (before which packets are held).
    pub fn awaiting_pcr(&self) -> bool {
        self.awaiting_pcr
    }

    /// Gives up waiting for a PCR: the run keeps the offset it has (no PCR came in time).
    pub fn stop_awaiting(&mut self) {
        self.awaiting_pcr = false;
    }

    /// Whether the current run opens every PID at its first packet (`Cut::whole`).
    pub fn whole(&self) -> bool {
        self.whole
    }

    /// Settles the run's clock from the first PCR in `data` without rewriting anything, so
    /// packets that came before it (held by the caller) can be rewritten after all. Returns
    /// whether a PCR settled it.
    pub fn settle(&mut self, data: &[u8], now: u64) -> bool {
        if !self.awaiting_pcr {
            return true;
        }
        let first = data.chunks_exact(PACKET_SIZE).find_map(|p| {
            let pid = pid(p);
            pcr_base(p)
                .filter(|_| self.pcr_pid.is_none_or(|x| x == pid))
                .map(|pcr| (pcr, pid))
        });
        match first {
            Some((pcr, pid)) => {
                self.settle_at(pcr, pid, now);
                true
            }
            None => false,
        }
    }

    /// The run's clock is `pcr` (on `pid`): placed as much wall time after the last PCR out
    /// as really passed, and at least one PCR interval.
    fn settle_at(&mut self, pcr: u64, pid: usize, now: u64) {
        self.pcr_pid = Some(pid);
        if let Some(last) = self.last_out_pcr {
            let elapsed = now.saturating_sub(self.last_out_pcr_at);
            let step = elapsed.max(self.pcr_gap + RUN_GUARD_90K);
            self.offset = ahead(pcr, last + step);
        }
        self.awaiting_pcr = false;
    }

    /// Observes packets going out unchanged (while `rewrites()` is false).
    pub fn observe(&mut self, data: &[u8], now: u64) {
        self.seen = true;
        for p in data.chunks_exact(PACKET_SIZE) {
            let pid = pid(p);
            self.versions.observe(p);
            if afc(p).1 {
                self.last_cc[pid] = p[3] & 0x0f;
            }
            if let Some(pcr) = pcr_base(p) {
                if *self.pcr_pid.get_or_insert(pid) == pid {
                    self.input_pcr(pcr);
                    self.last_out_pcr = Some(pcr);
                    self.last_out_pcr_at = now;
                }
            }
            let (pts, dts) = pes_timestamp_offsets(p);
            if let Some(at) = dts.or(pts) {
                self.last_ts[pid] = read_ts(&p[at..at + 5]);
            }
        }
    }

    /// Rewrites whole TS packets in place, moving those that pass to the front; returns how
    /// many bytes passed.
    pub fn rewrite(&mut self, data: &mut [u8], now: u64) -> usize {
        let n = data.len() / PACKET_SIZE;
        self.seen = true;
        let mut kept = 0;
        for i in 0..n {
            let at = i * PACKET_SIZE;
            let p = &mut data[at..at + PACKET_SIZE];
            if self.packet(p, now) {
                self.versions.rewrite(p);
                if kept != i {
                    data.copy_within(at..at + PACKET_SIZE, kept * PACKET_SIZE);
                }
                kept += 1;
            } else {
                self.held_back += 1;
            }
        }
        kept * PACKET_SIZE
    }

    /// Rewrites one packet; false if it is held back.
    fn packet(&mut self, p: &mut [u8], now: u64) -> bool {
        let pid = pid(p);
        let pcr = pcr_base(p);
        if self.awaiting_pcr {
            match pcr {
                Some(v) if self.pcr_pid.is_none_or(|x| x == pid) => self.settle_at(v, pid, now),
                _ => return false,
            }
        }
        if pid == NULL_PID {
            return true;
        }
        if pcr.is_some() && self.pcr_pid.is_none() {
            self.pcr_pid = Some(pid);
        }
        let pcr = pcr.filter(|_| self.pcr_pid == Some(pid));
        if !self.open[pid] && !self.try_open(p, pid) {
            let Some(pcr) = pcr else {
                return false;
            };
            // Held back, but the clock goes on: the same PCR in a packet without payload.
            self.strip_payload(p, pid);
            self.write_pcr(p, pcr, now);
            return true;
        }
        if let Some(pcr) = pcr {
            self.write_pcr(p, pcr, now);
        }
        let (pts, dts) = pes_timestamp_offsets(p);
        if self.unchecked[pid] {
            if let Some(at) = dts.or(pts) {
                // The first PES start of a PID opened mid-PES: never before the last one out.
                self.unchecked[pid] = false;
                self.keep_forward(&p[at..at + 5], pid);
            }
        }
        for at in [pts, dts].into_iter().flatten() {
            let ts = (read_ts(&p[at..at + 5]) + self.offset) % PTS_WRAP;
            write_ts(&mut p[at..at + 5], ts);
        }
        if let Some(at) = dts.or(pts) {
            self.last_ts[pid] = read_ts(&p[at..at + 5]);
        }
        if afc(p).1 {
            let out = ((p[3] & 0x0f) + self.cc_offset[pid]) & 0x0f;
            p[3] = (p[3] & 0xf0) | out;
            self.last_cc[pid] = out;
        } else if self.last_cc[pid] != 0xff {
            // ISO/IEC 13818-1 2.4.3.3: a packet without payload does not advance the counter,
            // so it repeats the last one out on its PID, whatever the input numbered it.
            p[3] = (p[3] & 0xf0) | self.last_cc[pid];
        }
        true
    }

    /// Whether a closed PID opens at this packet (see the module docs).
    fn try_open(&mut self, p: &[u8], pid: usize) -> bool {
        if p[1] & 0x40 == 0 && !self.whole {
            return false;
        }
        self.unchecked[pid] = self.whole && p[1] & 0x40 == 0;
        let video = self.video.filter(|v| usize::from(v.pid) == pid);
        if let Some(v) = video {
            if !self.whole && !starts_keyframe(p, v.codec) {
                return false;
            }
        }
        let (pts, dts) = pes_timestamp_offsets(p);
        if let Some(at) = dts.or(pts) {
            if video.is_some() || self.whole {
                self.keep_forward(&p[at..at + 5], pid);
            } else {
                let out = (read_ts(&p[at..at + 5]) + self.offset) % PTS_WRAP;
                let last = self.last_ts[pid];
                if last != NO_TS && !is_forward(last, out) {
                    return false;
                }
            }
        }
        // The counter goes on from the last one out: up by one with payload, the same
        // without (a whole cut may open a PID on a PCR-only packet).
        let cc = p[3] & 0x0f;
        let step = u8::from(afc(p).1);
        self.cc_offset[pid] = match self.last_cc[pid] {
            0xff => 0,
            last => (last + step).wrapping_sub(cc) & 0x0f,
        };
        self.open[pid] = true;
        true
    }

    /// Raises the offset if the timestamp `ts` (5 bytes of a PES header) on `pid` would not
    /// land at least a frame after the last one out: later than the wall clock says, but never
    /// backwards.
    fn keep_forward(&mut self, ts: &[u8], pid: usize) {
        let last = self.last_ts[pid];
        if last == NO_TS {
            return;
        }
        let out = (read_ts(ts) + self.offset) % PTS_WRAP;
        let least = (last + VIDEO_STEP_90K) % PTS_WRAP;
        if is_forward(out, least) {
            self.offset = (self.offset + ahead(out, least)) % PTS_WRAP;
        }
    }

    /// Turns the packet into one with an adaptation field only (its PCR stays).
    fn strip_payload(&self, p: &mut [u8], pid: usize) {
        let af_len = usize::from(p[4]);
        p[1] &= !0x40;
        p[5] &= !0x60; // no random access, no ES priority: there is no payload now
        p[5 + af_len..].fill(0xff);
        p[4] = (PACKET_SIZE - 5) as u8;
        // Without payload the counter does not advance: it repeats the last one out.
        let cc = match self.last_cc[pid] {
            0xff => p[3] & 0x0f,
            last => last,
        };
        p[3] = (p[3] & 0xc0) | 0x20 | cc;
    }

    fn write_pcr(&mut self, p: &mut [u8], pcr: u64, now: u64) {
        self.input_pcr(pcr);
        let mut out = (pcr + self.offset) % PTS_WRAP;
        if let Some(last) = self.last_out_pcr {
            if !is_forward(last, out) {
                // The clock never runs backwards: a cut's estimate of the new run's clock can be
                // a few ms late (it is read from the newest PCR of the buffer being cut), so the
                // run moves later by what is missing.
                let step = ahead(out, last) + 1;
                self.offset = (self.offset + step) % PTS_WRAP;
                out = (out + step) % PTS_WRAP;
            }
        }
        write_pcr_base(p, out);
        self.last_out_pcr = Some(out);
        self.last_out_pcr_at = now;
    }

    fn input_pcr(&mut self, pcr: u64) {
        if let Some(prev) = self.last_in_pcr {
            let gap = ahead(prev, pcr);
            if gap > 0 && gap <= MAX_PCR_GAP_90K {
                self.pcr_gap = gap;
            }
        }
        self.last_in_pcr = Some(pcr);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::packet;
    use super::super::{payload_offset, Codec};
    use super::*;

    /// One "file": PCR every 40 ms on PID 0x100 with a PTS, CC counting from 0.
    fn run(first_pcr: u64, n: u64) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                packet(
                    0x100,
                    i as u8,
                    Some(first_pcr + i * 3600),
                    Some(first_pcr + 9000 + i * 3600),
                )
            })
            .collect()
    }

    fn pkts(data: &[u8]) -> Vec<&[u8]> {
        data.chunks(PACKET_SIZE).collect()
    }

    fn pts_of(p: &[u8]) -> Option<u64> {
        pes_timestamp_offsets(p).0.map(|at| read_ts(&p[at..]))
    }

    fn rewrite(r: &mut Restamper, mut data: Vec<u8>, now: u64) -> Vec<u8> {
        let n = r.rewrite(&mut data, now);
        data.truncate(n);
        data
    }

    const LOOP: Cut = Cut {
        source_pcr: None,
        pcr_pid: None,
        video: None,
        whole: false,
    };

    #[test]
    fn first_run_is_untouched() {
        let mut r = Restamper::default();
        let data = run(1000, 5);
        assert!(!r.rewrites());
        r.observe(&data, 0);
        assert_eq!(r.last_out_pcr, Some(1000 + 4 * 3600));
    }

    #[test]
    fn a_loop_continues_pcr_pts_and_cc() {
        let mut r = Restamper::default();
        r.observe(&run(1000, 5), 0); // last PCR 15400, CC 4
        r.restart(LOOP, 0);
        let second = rewrite(&mut r, run(1000, 3), 0);
        let p = pkts(&second);
        let first = 15400 + 3600 + RUN_GUARD_90K;
        assert_eq!(pcr_base(p[0]), Some(first));
        assert_eq!(pcr_base(p[2]), Some(first + 2 * 3600));
        assert_eq!(pts_of(p[0]), Some(first + 9000));
        let ccs: Vec<u8> = p.iter().map(|p| p[3] & 0x0f).collect();
        assert_eq!(ccs, vec![5, 6, 7]);
    }

    #[test]
    fn packets_before_the_first_pcr_of_a_loop_are_held_back() {
        let mut r = Restamper::default();
        r.observe(&run(1000, 5), 0);
        r.restart(LOOP, 0);
        let lead = packet(0x101, 0, None, Some(1000 + 500)).to_vec();
        assert!(rewrite(&mut r, lead, 0).is_empty());
        assert_eq!(r.held_back(), 1);
        assert_eq!(rewrite(&mut r, run(1000, 1), 0).len(), PACKET_SIZE);
    }

    #[test]
    fn second_loop_continues_the_first_rewritten_one() {
        let mut r = Restamper::default();
        r.observe(&run(1000, 5), 0);
        r.restart(LOOP, 0);
        rewrite(&mut r, run(1000, 5), 0);
        r.restart(LOOP, 0);
        let third = rewrite(&mut r, run(1000, 1), 0);
        let second_last = 15400 + 3600 + RUN_GUARD_90K + 4 * 3600;
        assert_eq!(pcr_base(&third), Some(second_last + 3600 + RUN_GUARD_90K));
    }

    #[test]
    fn timestamps_wrap_at_33_bits() {
        let mut r = Restamper::default();
        let near_wrap = PTS_WRAP - 3600 - RUN_GUARD_90K;
        r.observe(&run(near_wrap, 1), 0);
        r.restart(LOOP, 0);
        let second = rewrite(&mut r, run(0, 1), 0);
        assert_eq!(pcr_base(&second), Some(0));
    }

    const VIDEO: Video = Video {
        pid: 0x100,
        codec: Codec::H264,
    };

    /// A video PES start with PCR: a keyframe (random access) or not.
    fn frame(cc: u8, pcr: u64, pts: u64, key: bool) -> Vec<u8> {
        let mut p = packet(0x100, cc, Some(pcr), Some(pts));
        if key {
            p[5] |= 0x40;
        }
        p.to_vec()
    }

    /// Input A went out up to PCR 100_000 at t=0; then input B (its clock at 5_000_000).
    fn cut_to_b(now: u64) -> Restamper {
        cut_to_b_as(now, false)
    }

    fn cut_to_b_as(now: u64, whole: bool) -> Restamper {
        let mut r = Restamper::default();
        r.observe(&frame(3, 100_000, 130_000, false), 0);
        r.observe(&packet(0x101, 7, None, Some(125_000)), 0);
        r.restart(
            Cut {
                source_pcr: Some(5_000_000),
                pcr_pid: Some(0x100),
                video: Some(VIDEO),
                whole,
            },
            now,
        );
        r
    }

    #[test]
    fn a_cut_whose_clock_estimate_is_late_never_sends_a_pcr_backwards() {
        // B's clock is taken as 5_000_000 at the cut, but the buffer being cut starts with an
        // older PCR of B's: mapped as is, it would land before A's last PCR (100_000).
        let mut r = cut_to_b(0);
        let out = rewrite(&mut r, frame(0, 4_999_000, 5_029_000, true), 0);
        let first = pcr_base(&out).unwrap();
        assert!(first > 100_000, "{first}");
        let next = rewrite(&mut r, frame(1, 5_002_600, 5_032_600, false), 3_600);
        assert_eq!(
            pcr_base(&next).unwrap() - first,
            3_600,
            "the run keeps its own pace"
        );
    }

    #[test]
    fn a_whole_cut_holds_nothing_back_and_keeps_time_and_counters_going() {
        let mut r = cut_to_b_as(9_000, true);
        // A continuation packet first, then a frame that is no keyframe, then early audio.
        let mut cont = packet(0x100, 14, None, None);
        cont[1] &= !0x40;
        let out = rewrite(&mut r, cont.to_vec(), 9_000);
        assert_eq!(out.len(), PACKET_SIZE);
        assert_eq!(out[3] & 0x0f, 4, "CC continues A's");
        let f = rewrite(&mut r, frame(15, 5_000_000, 5_030_000, false), 9_000);
        assert_eq!(f.len(), PACKET_SIZE);
        assert_eq!(pcr_base(&f), Some(109_000));
        assert_eq!(f[3] & 0x0f, 5);
        // Audio that maps before A's last audio (125_000) moves the offset, not held.
        let a = rewrite(
            &mut r,
            packet(0x101, 0, None, Some(5_010_000)).to_vec(),
            9_000,
        );
        assert_eq!(a.len(), PACKET_SIZE);
        assert!(pts_of(&a).unwrap() > 125_000);
        assert_eq!(a[3] & 0x0f, 8);
        assert_eq!(r.held_back(), 0);
    }

    #[test]
    fn a_live_cut_keeps_the_clock_against_wall_time() {
        // 9_000 ticks (100 ms) of wall time passed since A's last PCR.
        let mut r = cut_to_b(9_000);
        let out = rewrite(&mut r, frame(0, 5_000_000, 5_030_000, true), 9_000);
        assert_eq!(pcr_base(&out), Some(109_000));
        assert_eq!(pts_of(&out), Some(139_000));
        assert_eq!(out[3] & 0x0f, 4, "CC continues A's");
    }

    #[test]
    fn video_waits_for_a_keyframe_but_its_pcr_goes_on() {
        let mut r = cut_to_b(9_000);
        let out = rewrite(&mut r, frame(0, 5_000_000, 5_030_000, false), 9_000);
        assert_eq!(out.len(), PACKET_SIZE);
        // Adaptation field only, PCR carried on, counter repeated (no payload, no advance).
        assert_eq!(out[3] & 0x30, 0x20);
        assert_eq!(out[1] & 0x40, 0);
        assert_eq!(out[4] as usize, PACKET_SIZE - 5);
        assert_eq!(payload_offset(&out), None);
        assert_eq!(pcr_base(&out), Some(109_000));
        assert_eq!(out[3] & 0x0f, 3);
        let key = rewrite(&mut r, frame(1, 5_003_600, 5_033_600, true), 12_600);
        assert_eq!(pts_of(&key), Some(142_600));
        assert_eq!(key[3] & 0x0f, 4);
    }

    #[test]
    fn audio_that_would_go_backwards_waits_for_its_next_pes() {
        let mut r = cut_to_b(9_000);
        rewrite(&mut r, frame(0, 5_000_000, 5_030_000, true), 9_000);
        // B's audio at 4_980_000 maps to 89_000 + … = before A's last audio (125_000).
        let early = rewrite(
            &mut r,
            packet(0x101, 0, None, Some(5_010_000)).to_vec(),
            9_000,
        );
        assert!(early.is_empty(), "119_000 is not after 125_000");
        let cont = rewrite(&mut r, packet(0x101, 1, None, None).to_vec(), 9_000);
        assert!(cont.is_empty(), "the rest of a held PES is held too");
        let next = rewrite(
            &mut r,
            packet(0x101, 2, None, Some(5_020_000)).to_vec(),
            9_000,
        );
        assert_eq!(pts_of(&next), Some(129_000));
        assert_eq!(next[3] & 0x0f, 8);
    }

    #[test]
    fn a_keyframe_that_would_go_backwards_moves_the_offset_forward() {
        // Only 1_000 ticks passed, and B's video is early against its clock.
        let mut r = cut_to_b(1_000);
        let out = rewrite(&mut r, frame(0, 5_000_000, 5_000_500, true), 1_000);
        let pts = pts_of(&out).unwrap();
        assert_eq!(pts, 130_000 + VIDEO_STEP_90K);
        // PCR moved by the same amount: forward, never back.
        let pcr = pcr_base(&out).unwrap();
        assert_eq!(pts - pcr, 500);
        assert!(pcr > 100_000);
    }

    /// A packet with the PCR in an adaptation field and no payload, as encoders send between
    /// frames.
    fn pcr_only(cc: u8, pcr: u64) -> Vec<u8> {
        let mut p = frame(cc, pcr, 0, false);
        p[1] &= !0x40;
        p[3] = (p[3] & 0xc0) | 0x20 | (cc & 0x0f);
        p[4] = (PACKET_SIZE - 5) as u8;
        p[12..].fill(0xff);
        p
    }

    #[test]
    fn counters_of_packets_without_payload_repeat_the_last_one_out() {
        let mut r = cut_to_b(9_000);
        let key = rewrite(&mut r, frame(0, 5_000_000, 5_030_000, true), 9_000);
        assert_eq!(key[3] & 0x0f, 4);
        // The input numbered its PCR-only packet 3 (not 0, as its own rule would): what goes
        // out must repeat the 4 of the last payload packet out, or receivers count an error.
        let af = rewrite(&mut r, pcr_only(3, 5_001_800), 10_800);
        assert_eq!(af.len(), PACKET_SIZE);
        assert_eq!(af[3] & 0x30, 0x20);
        assert_eq!(af[3] & 0x0f, 4);
        assert_eq!(pcr_base(&af), Some(110_800));
        let next = rewrite(&mut r, frame(1, 5_003_600, 5_033_600, false), 12_600);
        assert_eq!(next[3] & 0x0f, 5);
    }

    #[test]
    fn continuation_packets_wait_for_a_unit_start() {
        let mut r = cut_to_b(9_000);
        let mut cont = packet(0x102, 5, None, None);
        cont[1] &= !0x40;
        assert!(rewrite(&mut r, cont.to_vec(), 9_000).is_empty());
        let start = packet(0x102, 6, None, Some(5_040_000));
        assert_eq!(rewrite(&mut r, start.to_vec(), 9_000).len(), PACKET_SIZE);
    }
}
