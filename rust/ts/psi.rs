//! Just enough PSI to splice streams: which PID carries the video and in which codec (from the
//! PAT and PMT), and whether a video PES starts on a keyframe.
//!
//! Only sections that fit in one packet are read (PATs and PMTs of one or a few programs
//! always do); anything else is ignored, never an error.

use super::{afc, payload_offset, pid, PACKET_SIZE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    Hevc,
    Mpeg2,
    /// Video of another kind: keyframes are only known from the random access indicator.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Video {
    pub pid: u16,
    pub codec: Codec,
}

/// The first program of a stream, as its PAT and PMT describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programs {
    pub program_number: Option<u16>,
    pub pmt_pid: Option<u16>,
    pub pcr_pid: Option<u16>,
    /// (PID, stream_type) of each elementary stream, in PMT order.
    pub streams: Vec<(u16, u8)>,
}

impl Programs {
    /// Reads `p` if it starts a PAT or the PMT; returns whether anything changed.
    pub fn observe(&mut self, p: &[u8]) -> bool {
        if p[1] & 0x40 == 0 {
            return false;
        }
        let pid = pid(p) as u16;
        if pid == 0 {
            return self.read_pat(p);
        }
        if Some(pid) == self.pmt_pid {
            return self.read_pmt(p);
        }
        false
    }

    /// The video stream: the first elementary stream of a video type.
    pub fn video(&self) -> Option<Video> {
        self.streams.iter().find_map(|&(pid, st)| {
            let codec = match st {
                0x1b => Codec::H264,
                0x24 => Codec::Hevc,
                0x01 | 0x02 => Codec::Mpeg2,
                0x10 | 0x20 | 0x42 | 0xd1 | 0xea => Codec::Other,
                _ => return None,
            };
            Some(Video { pid, codec })
        })
    }

    /// The first audio stream (MPEG audio, AAC, AC-3 or E-AC-3).
    pub fn audio_pid(&self) -> Option<u16> {
        self.streams
            .iter()
            .find(|(_, st)| matches!(st, 0x03 | 0x04 | 0x0f | 0x11 | 0x81 | 0x87))
            .map(|&(pid, _)| pid)
    }

    fn read_pat(&mut self, p: &[u8]) -> bool {
        let Some(s) = section(p, 0x00) else {
            return false;
        };
        // After the 8-byte header: 4-byte entries (program number, PID), then the CRC.
        let first = s[8..s.len() - 4]
            .chunks_exact(4)
            .map(|e| {
                (
                    u16::from_be_bytes([e[0], e[1]]),
                    u16::from_be_bytes([e[2] & 0x1f, e[3]]),
                )
            })
            .find(|&(number, _)| number != 0);
        let Some((number, pmt)) = first else {
            return false;
        };
        let changed = self.program_number != Some(number) || self.pmt_pid != Some(pmt);
        if changed {
            *self = Programs {
                program_number: Some(number),
                pmt_pid: Some(pmt),
                ..Programs::default()
            };
        }
        changed
    }

    fn read_pmt(&mut self, p: &[u8]) -> bool {
        let Some(s) = section(p, 0x02) else {
            return false;
        };
        if s.len() < 16 {
            return false;
        }
        let pcr_pid = u16::from_be_bytes([s[8] & 0x1f, s[9]]);
        let info_len = usize::from(u16::from_be_bytes([s[10] & 0x0f, s[11]]));
        let end = s.len() - 4;
        let mut i = 12 + info_len;
        let mut streams = Vec::new();
        while i + 5 <= end {
            let stream_type = s[i];
            let es_pid = u16::from_be_bytes([s[i + 1] & 0x1f, s[i + 2]]);
            let es_info = usize::from(u16::from_be_bytes([s[i + 3] & 0x0f, s[i + 4]]));
            streams.push((es_pid, stream_type));
            i += 5 + es_info;
        }
        let changed = self.pcr_pid != Some(pcr_pid) || self.streams != streams;
        self.pcr_pid = Some(pcr_pid);
        self.streams = streams;
        changed
    }
}

/// The section of `table_id` starting in this packet, header to CRC, if it fits in the packet.
fn section(p: &[u8], table_id: u8) -> Option<&[u8]> {
    let off = payload_offset(p)?;
    let start = off + 1 + usize::from(p[off]);
    if start + 3 > PACKET_SIZE || p[start] != table_id {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([p[start + 1] & 0x0f, p[start + 2]]));
    let end = start + 3 + len;
    (len >= 9 && end <= PACKET_SIZE).then(|| &p[start..end])
}

/// Whether this packet begins a PES that a decoder can start from: the random access indicator
/// is set, or the first NAL units (or MPEG-2 start codes) in the packet say so.
pub fn starts_keyframe(p: &[u8], codec: Codec) -> bool {
    if p[1] & 0x40 == 0 {
        return false;
    }
    let (has_af, _) = afc(p);
    if has_af && p[4] > 0 && p[5] & 0x40 != 0 {
        return true;
    }
    let Some(off) = payload_offset(p) else {
        return false;
    };
    let pes = &p[off..];
    if pes.len() < 9 || pes[..3] != [0, 0, 1] {
        return false;
    }
    let es = 9 + usize::from(pes[8]);
    if es >= pes.len() {
        return false;
    }
    let data = &pes[es..];
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i..i + 3] != [0, 0, 1] {
            i += 1;
            continue;
        }
        let b = data[i + 3];
        let verdict = match codec {
            // IDR slice or parameter sets: key. Another slice: not. AUD, SEI, …: look further.
            Codec::H264 => match b & 0x1f {
                5 | 7 | 8 => Some(true),
                1..=4 => Some(false),
                _ => None,
            },
            // IRAP pictures (BLA, IDR, CRA) or parameter sets: key. Other slices: not.
            Codec::Hevc => match (b >> 1) & 0x3f {
                16..=21 | 32..=34 => Some(true),
                0..=9 => Some(false),
                _ => None,
            },
            // Sequence header or GOP header: key. A picture without them: not.
            Codec::Mpeg2 => match b {
                0xb3 | 0xb8 => Some(true),
                0x00 => Some(false),
                _ => None,
            },
            Codec::Other => Some(false),
        };
        if let Some(v) = verdict {
            return v;
        }
        i += 4;
    }
    false
}

/// The picture size from the SPS at the start of an H.264 PES in this packet, if it has one.
pub fn h264_size_in(p: &[u8]) -> Option<(u32, u32)> {
    super::sps::params_in(p, Codec::H264).map(|v| (v.width, v.height))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A packet of `pid` carrying `section` (PUSI, pointer field 0).
    fn psi_packet(pid: u16, section: &[u8]) -> [u8; PACKET_SIZE] {
        let mut p = [0xffu8; PACKET_SIZE];
        p[..5].copy_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10, 0]);
        p[5..5 + section.len()].copy_from_slice(section);
        p
    }

    pub(crate) fn pat(program: u16, pmt: u16) -> [u8; PACKET_SIZE] {
        let mut s = vec![0x00, 0xb0, 13, 0, 1, 0xc1, 0, 0];
        s.extend_from_slice(&program.to_be_bytes());
        s.extend_from_slice(&(0xe000 | pmt).to_be_bytes());
        s.extend_from_slice(&[0; 4]);
        psi_packet(0, &s)
    }

    pub(crate) fn pmt(pmt_pid: u16, pcr: u16, streams: &[(u16, u8)]) -> [u8; PACKET_SIZE] {
        let len = 13 + 5 * streams.len();
        let mut s = vec![0x02, 0xb0, len as u8, 0, 1, 0xc1, 0, 0];
        s.extend_from_slice(&(0xe000 | pcr).to_be_bytes());
        s.extend_from_slice(&[0xf0, 0]);
        for &(pid, st) in streams {
            s.push(st);
            s.extend_from_slice(&(0xe000 | pid).to_be_bytes());
            s.extend_from_slice(&[0xf0, 0]);
        }
        s.extend_from_slice(&[0; 4]);
        psi_packet(pmt_pid, &s)
    }

    /// A video PES start on `pid` whose elementary stream begins with `es`.
    fn pes_start(pid: u16, rai: bool, es: &[u8]) -> [u8; PACKET_SIZE] {
        let mut p = [0xffu8; PACKET_SIZE];
        p[..4].copy_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x30]);
        p[4] = 1;
        p[5] = if rai { 0x40 } else { 0 };
        let off = 6;
        p[off..off + 9].copy_from_slice(&[0, 0, 1, 0xe0, 0, 0, 0x80, 0, 0]);
        p[off + 9..off + 9 + es.len()].copy_from_slice(es);
        p
    }

    #[test]
    fn pat_then_pmt_find_the_video() {
        let mut pr = Programs::default();
        assert!(pr.observe(&pat(1, 0x1000)));
        assert_eq!(pr.pmt_pid, Some(0x1000));
        assert!(pr.observe(&pmt(0x1000, 0x100, &[(0x100, 0x1b), (0x101, 0x0f)])));
        assert_eq!(
            pr.video(),
            Some(Video {
                pid: 0x100,
                codec: Codec::H264
            })
        );
        assert_eq!(pr.audio_pid(), Some(0x101));
        assert_eq!(pr.pcr_pid, Some(0x100));
        // The same tables again change nothing.
        assert!(!pr.observe(&pat(1, 0x1000)));
        assert!(!pr.observe(&pmt(0x1000, 0x100, &[(0x100, 0x1b), (0x101, 0x0f)])));
    }

    #[test]
    fn a_new_pat_forgets_the_old_program() {
        let mut pr = Programs::default();
        pr.observe(&pat(1, 0x1000));
        pr.observe(&pmt(0x1000, 0x100, &[(0x100, 0x1b)]));
        assert!(pr.observe(&pat(1, 0x20)));
        assert_eq!(pr.video(), None);
        // The old PMT PID is no longer read.
        assert!(!pr.observe(&pmt(0x1000, 0x100, &[(0x100, 0x1b)])));
        assert!(pr.observe(&pmt(0x20, 0x41, &[(0x41, 0x24)])));
        assert_eq!(pr.video().map(|v| v.codec), Some(Codec::Hevc));
    }

    #[test]
    fn truncated_sections_are_ignored() {
        let mut p = pat(1, 0x1000);
        p[5 + 2] = 200; // section_length beyond the packet
        let mut pr = Programs::default();
        assert!(!pr.observe(&p));
        assert_eq!(pr, Programs::default());
    }

    #[test]
    fn keyframes_by_random_access_indicator() {
        assert!(starts_keyframe(&pes_start(0x100, true, &[]), Codec::Other));
        assert!(!starts_keyframe(
            &pes_start(0x100, false, &[]),
            Codec::Other
        ));
    }

    #[test]
    fn keyframes_by_nal_type() {
        // AUD, SPS: key. AUD, non-IDR slice: not.
        let idr = pes_start(0x100, false, &[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67]);
        let p = pes_start(0x100, false, &[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x41]);
        assert!(starts_keyframe(&idr, Codec::H264));
        assert!(!starts_keyframe(&p, Codec::H264));
        // 0x41 is a non-IDR H.264 slice, but would read as a VPS in HEVC: the codec decides.
        let vps = pes_start(0x100, false, &[0, 0, 1, 0x40, 0x01]);
        let trail = pes_start(0x100, false, &[0, 0, 1, 0x02, 0x01]);
        assert!(starts_keyframe(&vps, Codec::Hevc));
        assert!(!starts_keyframe(&trail, Codec::Hevc));
        assert!(starts_keyframe(
            &pes_start(0x100, false, &[0, 0, 1, 0xb3]),
            Codec::Mpeg2
        ));
        assert!(!starts_keyframe(
            &pes_start(0x100, false, &[0, 0, 1, 0x00]),
            Codec::Mpeg2
        ));
    }

    #[test]
    fn continuation_packets_never_start_a_keyframe() {
        let mut p = pes_start(0x100, true, &[]);
        p[1] &= !0x40;
        assert!(!starts_keyframe(&p, Codec::H264));
    }
}
