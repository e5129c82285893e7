//! Where segments begin: pure logic over the packets a recorder receives, so that each
//! segment starts with the PAT/PMT and a keyframe and decodes from its first frames, and the
//! segments, put end to end, are the very bytes the outputs carried (less the PSI copies
//! below).
//!
//! The stream is cut at the first keyframe at or after the target duration, but *in front of the
//! last PAT before it*: the packets from the last PAT on (the PAT, the PMT, often a PCR or an
//! audio packet) are held in memory until the next keyframe or the next PAT. A keyframe that
//! is due finds them held and the new segment begins with them; otherwise they go to the
//! segment that is open. ffmpeg writes a PAT and a PMT right before every video keyframe: the
//! cut is clean and nothing is added.
//!
//! A muxer that writes PSI on a timer only (GStreamer's mpegtsmux, every 100 ms) has a video
//! frame or two between its last PAT and the keyframe, and a stream may carry no PAT at all
//! since the last keyframe: then what is held goes to the open segment, and the new one starts
//! with copies of the latest PAT and PMT packets (`Step::Psi`, counted in `psi_inserted`)
//! followed by the keyframe. Only before any PAT and PMT were seen is a segment cut at the
//! keyframe itself, without PSI (`cuts_without_psi`).
//!
//! Without video (a radio stream) every PAT is a point to cut at.
//!
//! A segment's duration comes from its own video timestamps: from its first keyframe to the
//! furthest frame in it, plus one frame. A timestamp step that disagrees with the arrival
//! clock by more than `MAX_SKEW` (a sender restarted, its timestamps started over) is a jump:
//! the open segment is told (`Step::Jump`: its duration is then its wall-clock span) and the
//! next keyframe begins a new segment, on the new timeline.

use crate::ts::{pes_pts, pid, starts_keyframe, Programs, PACKET_SIZE, PTS_WRAP};

/// The most bytes held from a PAT while waiting for a keyframe; past it they are written on
/// (no keyframe follows that PAT closely).
const MAX_HELD: usize = 4 * 1024 * 1024;
/// A video timestamp step further than this (90 kHz ticks: 2 s) from the arrival clock's
/// step is a jump of the timeline, not the stream going on.
const MAX_SKEW: i64 = 2 * 90_000;
/// The longest frame a frame duration is taken from (1 s).
const MAX_FRAME: u64 = 90_000;

/// What the cutter tells its writer, in stream order.
#[derive(Debug, PartialEq)]
pub enum Step<'a> {
    /// Close the open segment (if any) and open a new one. `pts`: its first keyframe's PTS;
    /// `psi`: it begins with the PAT (false: a cut at a keyframe alone); `span`: the closing
    /// segment's duration by its own timestamps, in 90 kHz ticks (None: it had none, or its
    /// timeline jumped).
    Open {
        pts: Option<u64>,
        psi: bool,
        span: Option<u64>,
    },
    /// The video timestamps jumped (see `MAX_SKEW`) inside the open segment.
    Jump,
    /// Bytes for the open segment (dropped, counted as skipped, when none is open).
    Bytes(&'a [u8]),
    /// Copies of the latest PAT and PMT packets put at the start of a segment whose keyframe
    /// has no PSI right before it: written like `Bytes`, but not the stream's own.
    Psi(&'a [u8]),
    /// A keyframe starts here (its PTS, when its PES header carries one).
    Keyframe(Option<u64>),
}

pub struct Cutter {
    programs: Programs,
    /// Target duration in 90 kHz ticks.
    target: u64,
    /// A segment is open.
    open: bool,
    /// Cut at the next chance, due or not (the first segment, after a pause or an error).
    force: bool,
    /// The open segment's first keyframe PTS and its arrival time (Unix seconds).
    start_pts: Option<u64>,
    start_unix: f64,
    held: Vec<u8>,
    held_has_pat: bool,
    /// Video frames that started in `held` (after its PAT).
    held_frames: u32,
    /// Cuts at a PAT with video frames between it and the keyframe (no longer made: such a
    /// segment now starts with copies of the PSI; kept at 0 for the stats' shape).
    pub cuts_off_keyframe: u64,
    /// Cuts at a keyframe with no PAT and PMT known yet to copy in front of it.
    pub cuts_without_psi: u64,
    /// Packets of PSI copied in front of keyframes (`Step::Psi`).
    pub psi_inserted: u64,
    /// The latest PAT and PMT packets (single-packet sections, as `Programs` reads them).
    pat: Option<[u8; PACKET_SIZE]>,
    pmt: Option<[u8; PACKET_SIZE]>,
    /// The latest video PTS and its arrival time (Unix seconds).
    last_pts: Option<(u64, f64)>,
    /// The shortest forward step between video PTSs seen: one frame (0: none yet).
    frame: u64,
    /// The open segment's furthest video PTS from its start, in ticks.
    reach: Option<u64>,
    /// The open segment's timeline jumped.
    jumped: bool,
}

impl Cutter {
    pub fn new(target_ms: u64) -> Cutter {
        Cutter {
            programs: Programs::default(),
            target: target_ms.saturating_mul(90),
            open: false,
            force: true,
            start_pts: None,
            start_unix: 0.0,
            held: Vec::new(),
            held_has_pat: false,
            held_frames: 0,
            cuts_off_keyframe: 0,
            cuts_without_psi: 0,
            psi_inserted: 0,
            pat: None,
            pmt: None,
            last_pts: None,
            frame: 0,
            reach: None,
            jumped: false,
        }
    }

    /// The next segment starts at the next point to cut at, however long the open one is
    /// (`open`: whether the writer still has a segment open).
    pub fn cut_soon(&mut self, open: bool) {
        self.force = true;
        self.open = open;
    }

    /// Gives up what is held (to the open segment), e.g. before the writer closes it.
    pub fn flush(&mut self, emit: &mut impl FnMut(Step<'_>)) {
        if !self.held.is_empty() {
            emit(Step::Bytes(&self.held));
            self.held.clear();
        }
        self.held_has_pat = false;
        self.held_frames = 0;
    }

    /// The video PID, once the PMT named one.
    pub fn video_pid(&self) -> Option<u16> {
        self.programs.video().map(|v| v.pid)
    }

    /// The open segment's duration by its own video timestamps, in 90 kHz ticks: from its
    /// first keyframe to its furthest frame, plus one frame (None: no timestamps, or they
    /// jumped inside it).
    pub fn span(&self) -> Option<u64> {
        if self.jumped {
            return None;
        }
        self.reach.map(|r| r + self.frame)
    }

    /// Follows the video timestamps: one frame's duration, and jumps of the timeline (said to the open segment, which ends at the next keyframe).
    fn follow(&mut self, pts: u64, unix: f64, emit: &mut impl FnMut(Step<'_>)) {
        if let Some((last, at)) = self.last_pts {
            let step = pts.wrapping_sub(last) % PTS_WRAP;
            let step = if step > PTS_WRAP / 2 {
                step as i64 - PTS_WRAP as i64
            } else {
                step as i64
            };
            let clock = ((unix - at).max(0.0) * 90_000.0) as i64;
            if (step - clock).abs() > MAX_SKEW {
                self.last_pts = Some((pts, unix));
                if self.open && !self.jumped {
                    self.jumped = true;
                    emit(Step::Jump);
                }
                self.force = true;
                return;
            }
            if step > 0 && (self.frame == 0 || (step as u64) < self.frame) {
                self.frame = (step as u64).min(MAX_FRAME);
            }
        }
        self.last_pts = Some((pts, unix));
    }

    /// A frame at `pts` belongs to the open segment: how far it reaches.
    fn reach_to(&mut self, pts: u64) {
        if let Some(start) = self.start_pts {
            let off = pts.wrapping_sub(start) % PTS_WRAP;
            if off < PTS_WRAP / 2 && self.reach.is_none_or(|r| off > r) {
                self.reach = Some(off);
            }
        }
    }

    /// Whether a keyframe at `pts`, arriving at `unix`, is due to start a new segment.
    fn due(&self, pts: Option<u64>, unix: f64) -> bool {
        if self.force || !self.open {
            return true;
        }
        let elapsed = match (self.start_pts, pts) {
            (Some(a), Some(b)) => b.wrapping_sub(a) % PTS_WRAP,
            _ => ((unix - self.start_unix).max(0.0) * 90_000.0) as u64,
        };
        elapsed >= self.target
    }

    fn open(&mut self, pts: Option<u64>, unix: f64, psi: bool, emit: &mut impl FnMut(Step<'_>)) {
        let span = self.span();
        emit(Step::Open { pts, psi, span });
        self.open = true;
        self.force = false;
        self.start_pts = pts;
        self.start_unix = unix;
        self.reach = pts.map(|_| 0);
        self.jumped = false;
        if !psi {
            self.cuts_without_psi += 1;
        }
    }

    /// Takes whole packets that arrived at `unix` (Unix seconds) and says what to do with them.
    pub fn push(&mut self, data: &[u8], unix: f64, emit: &mut impl FnMut(Step<'_>)) {
        for p in data.chunks_exact(PACKET_SIZE) {
            self.packet(p, unix, emit);
        }
    }

    fn packet(&mut self, p: &[u8], unix: f64, emit: &mut impl FnMut(Step<'_>)) {
        self.programs.observe(p);
        let starts = p[1] & 0x40 != 0;
        if starts {
            let at = pid(p);
            if at == 0 {
                self.pat = p.try_into().ok();
            } else if self.programs.pmt_pid.is_some_and(|m| usize::from(m) == at) {
                self.pmt = p.try_into().ok();
            }
        }
        let is_pat = starts && pid(p) == 0;
        let video = self.programs.video();
        if is_pat {
            self.flush(emit);
            if video.is_none() && !self.programs.streams.is_empty() {
                // No video: a PAT is where the stream can be cut.
                if self.due(None, unix) {
                    self.open(None, unix, true, emit);
                }
                emit(Step::Bytes(p));
                return;
            }
            self.held.extend_from_slice(p);
            self.held_has_pat = true;
            return;
        }
        let Some(video) = video else {
            self.hold_or_emit(p, emit);
            return;
        };
        let video_start = starts && pid(p) == usize::from(video.pid);
        let pts = video_start.then(|| pes_pts(p)).flatten();
        if let Some(pts) = pts {
            self.follow(pts, unix, emit);
        }
        if video_start && starts_keyframe(p, video.codec) {
            if self.due(pts, unix) {
                if self.held_has_pat && self.held_frames == 0 {
                    // PSI right before the keyframe: the cut is in front of it.
                    let held = std::mem::take(&mut self.held);
                    self.held_has_pat = false;
                    self.open(pts, unix, true, emit);
                    emit(Step::Bytes(&held));
                    self.held = held;
                    self.held.clear();
                } else if let (Some(pat), Some(pmt)) = (self.pat, self.pmt) {
                    // PSI on a timer (frames between the last PAT and the keyframe), or none
                    // since the last keyframe: what is held ends the open segment, and the
                    // new one starts with copies of the latest PAT and PMT, then the keyframe.
                    self.flush(emit);
                    self.open(pts, unix, true, emit);
                    emit(Step::Psi(&[pat, pmt].concat()));
                    self.psi_inserted += 2;
                } else {
                    self.flush(emit);
                    self.open(pts, unix, false, emit);
                }
            }
            if let Some(pts) = pts {
                self.reach_to(pts);
            }
            self.flush(emit);
            emit(Step::Keyframe(pts));
            emit(Step::Bytes(p));
            return;
        }
        if let Some(pts) = pts {
            self.reach_to(pts);
        }
        self.hold_or_emit(p, emit);
    }

    /// A packet that is neither a PAT nor a keyframe: held behind a PAT, else passed on.
    fn hold_or_emit(&mut self, p: &[u8], emit: &mut impl FnMut(Step<'_>)) {
        if self.held_has_pat {
            if p[1] & 0x40 != 0
                && self
                    .programs
                    .video()
                    .is_some_and(|v| usize::from(v.pid) == pid(p))
            {
                self.held_frames += 1;
            }
            self.held.extend_from_slice(p);
            if self.held.len() > MAX_HELD {
                self.flush(emit);
            }
            return;
        }
        emit(Step::Bytes(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::tests::packet;

    /// A PAT naming PMT 0x1000 and a PMT with H.264 video on 0x100, as two packets.
    fn psi() -> Vec<u8> {
        fn section_packet(pid: u16, body: &[u8]) -> [u8; PACKET_SIZE] {
            let mut p = [0xffu8; PACKET_SIZE];
            p[0] = 0x47;
            p[1] = 0x40 | (pid >> 8) as u8;
            p[2] = pid as u8;
            p[3] = 0x10;
            p[4] = 0;
            p[5..5 + body.len()].copy_from_slice(body);
            p
        }
        // table_id, length, id, version, section numbers, then entries, then a CRC (not read).
        let pat = [
            0x00, 0xb0, 13, 0, 1, 0xc1, 0, 0, 0, 1, 0xf0, 0x00, 0, 0, 0, 0,
        ];
        let pmt = [
            0x02, 0xb0, 18, 0, 1, 0xc1, 0, 0, 0xe1, 0x00, 0xf0, 0, 0x1b, 0xe1, 0x00, 0xf0, 0, 0, 0,
            0, 0,
        ];
        let mut out = section_packet(0, &pat).to_vec();
        out.extend_from_slice(&section_packet(0x1000, &pmt));
        out
    }

    fn frame(pts: u64, key: bool) -> Vec<u8> {
        let mut p = packet(0x100, 0, Some(pts), Some(pts));
        if key {
            p[5] |= 0x40;
        }
        p.to_vec()
    }

    /// Runs `data` through a cutter; returns each segment's bytes (bytes before the first are
    /// left out) and whether it began with PSI.
    fn segments(cutter: &mut Cutter, data: &[Vec<u8>]) -> Vec<(Vec<u8>, bool)> {
        let mut out: Vec<(Vec<u8>, bool)> = Vec::new();
        for d in data {
            cutter.push(d, 0.0, &mut |s| match s {
                Step::Open { psi, .. } => out.push((Vec::new(), psi)),
                Step::Bytes(b) | Step::Psi(b) => {
                    if let Some(last) = out.last_mut() {
                        last.0.extend_from_slice(b);
                    }
                }
                Step::Keyframe(_) | Step::Jump => {}
            });
        }
        let mut tail = Vec::new();
        cutter.flush(&mut |s| {
            if let Step::Bytes(b) = s {
                tail.extend_from_slice(b)
            }
        });
        if let Some(last) = out.last_mut() {
            last.0.extend_from_slice(&tail);
        }
        out
    }

    #[test]
    fn segments_begin_at_the_pat_before_the_first_keyframe_past_the_target() {
        let mut cutter = Cutter::new(1000);
        let mut data = Vec::new();
        // GOPs of 10 frames at 25 fps (0.4 s), each keyframe with PSI in front of it.
        for gop in 0..8u64 {
            data.push(psi());
            for f in 0..10u64 {
                data.push(frame((gop * 10 + f) * 3600, f == 0));
            }
        }
        let segs = segments(&mut cutter, &data);
        // Cuts at 0, 1.2 s (the first keyframe at or past 1 s), 2.4 s.
        assert_eq!(segs.len(), 3);
        let all: Vec<u8> = data.concat();
        let joined = segs
            .iter()
            .map(|s| s.0.clone())
            .collect::<Vec<_>>()
            .concat();
        assert!(joined == all, "the segments are the stream");
        for (bytes, psi_first) in &segs {
            assert!(psi_first);
            assert_eq!(pid(bytes), 0, "a segment starts with the PAT");
            assert!(starts_keyframe(
                &bytes[2 * PACKET_SIZE..],
                crate::ts::Codec::H264
            ));
        }
        assert_eq!(segs[0].0.len(), 3 * 12 * PACKET_SIZE);
    }

    #[test]
    fn a_keyframe_exactly_at_the_target_starts_the_next_segment() {
        // 1 s GOPs at 25 fps and a 3 s target: cuts at 0, 3 and 6 s (not at 4 and 8 s), whether
        // the PTS start at 0 or near the 33-bit wrap.
        for base in [0u64, PTS_WRAP - 90_000] {
            let mut cutter = Cutter::new(3000);
            let mut data = Vec::new();
            for gop in 0..9u64 {
                data.push(psi());
                for f in 0..25u64 {
                    data.push(frame((base + (gop * 25 + f) * 3600) % PTS_WRAP, f == 0));
                }
            }
            let segs = segments(&mut cutter, &data);
            let gop = (2 + 25) * PACKET_SIZE;
            let sizes: Vec<usize> = segs.iter().map(|s| s.0.len() / gop).collect();
            assert_eq!(sizes, [3, 3, 3], "segments of three GOPs each");
        }
    }

    #[test]
    fn a_segment_lasts_to_its_last_frame_and_a_timeline_jump_is_said_and_cut_at() {
        let mut cutter = Cutter::new(1000);
        let mut steps = Vec::new();
        // 3 s of 0.4 s GOPs at 25 fps arriving in real time, then the sender restarts: its
        // timestamps begin again at 0 (a jump back of 3 s while the clock went on).
        for run in 0..2u64 {
            for n in 0..75u64 {
                let unix = (run * 75 + n) as f64 / 25.0;
                let mut data = if n % 10 == 0 { psi() } else { Vec::new() };
                data.extend(frame(n * 3600, n % 10 == 0));
                cutter.push(&data, unix, &mut |s| match s {
                    Step::Open { span, .. } => steps.push(format!("open {span:?}")),
                    Step::Jump => steps.push("jump".into()),
                    _ => {}
                });
            }
        }
        // Cuts at 0, 1.2 s and 2.4 s (each 1.2 s to its last frame plus one); the jump is said
        // to the segment open since 2.4 s and cuts it: its span is not known (the wall clock
        // is its duration). The new timeline is cut at its own 1.2 s and 2.4 s.
        assert_eq!(
            steps,
            [
                "open None",
                "open Some(108000)",
                "open Some(108000)",
                "jump",
                "open None",
                "open Some(108000)",
                "open Some(108000)"
            ]
        );
        assert_eq!(cutter.span(), Some(54_000));
    }

    /// The segments with the PSI copied in front of their keyframes taken out again, joined.
    fn without_copies(segs: &[(Vec<u8>, bool)]) -> Vec<u8> {
        let copies = psi();
        segs.iter()
            .map(|s| s.0.strip_prefix(copies.as_slice()).unwrap_or(&s.0).to_vec())
            .collect::<Vec<_>>()
            .concat()
    }

    #[test]
    fn a_stream_without_psi_before_its_keyframes_gets_copies_of_it_in_front_of_each_cut() {
        let mut cutter = Cutter::new(1000);
        let mut data = vec![psi()];
        for f in 0..80u64 {
            data.push(frame(f * 3600, f % 10 == 0));
        }
        let segs = segments(&mut cutter, &data);
        assert!(segs.len() >= 2, "{}", segs.len());
        for (bytes, psi_first) in &segs {
            assert!(
                *psi_first && bytes.starts_with(&psi()),
                "each starts with the PAT and PMT"
            );
            assert!(starts_keyframe(
                &bytes[2 * PACKET_SIZE..],
                crate::ts::Codec::H264
            ));
        }
        assert_eq!(cutter.cuts_without_psi, 0);
        assert_eq!(cutter.psi_inserted, 2 * (segs.len() as u64 - 1));
        // The first begins at the stream's own PAT; the others at copies.
        let mut joined = segs[0].0.clone();
        joined.extend(without_copies(&segs[1..]));
        assert!(
            joined == data.concat(),
            "without the copies, the segments are the stream"
        );
    }

    #[test]
    fn psi_on_a_timer_is_copied_in_front_of_the_keyframe_so_each_segment_decodes_at_once() {
        let mut cutter = Cutter::new(1000);
        let mut data = vec![psi()];
        // A PAT every 4 frames, keyframes every 10: frames between the PAT and the keyframe.
        for f in 0..80u64 {
            if f % 4 == 1 {
                data.push(psi());
            }
            data.push(frame(f * 3600, f % 10 == 0));
        }
        let segs = segments(&mut cutter, &data);
        assert!(segs.len() >= 2, "{}", segs.len());
        for (bytes, psi_first) in &segs {
            assert!(
                *psi_first && bytes.starts_with(&psi()),
                "each starts with the PAT and PMT"
            );
            assert!(
                starts_keyframe(&bytes[2 * PACKET_SIZE..], crate::ts::Codec::H264),
                "then the keyframe: no frame before it"
            );
        }
        assert_eq!(cutter.cuts_off_keyframe, 0);
        assert_eq!(cutter.psi_inserted, 2 * (segs.len() as u64 - 1));
        let mut joined = segs[0].0.clone();
        joined.extend(without_copies(&segs[1..]));
        assert!(
            joined == data.concat(),
            "without the copies, the segments are the stream"
        );
    }

    #[test]
    fn bytes_before_the_first_pat_and_keyframe_belong_to_no_segment() {
        let mut cutter = Cutter::new(1000);
        let data = vec![
            frame(0, false),
            psi(),
            frame(3600, false),
            psi(),
            frame(7200, true),
        ];
        let segs = segments(&mut cutter, &data);
        assert_eq!(segs.len(), 1);
        assert!(segs[0].0 == [psi(), frame(7200, true)].concat());
    }
}
