//! PAT and PMT versions across a splice.
//!
//! A receiver reads a PAT or PMT again only when its `version_number` changes. Two encoders
//! often number their tables alike (ffmpeg and GStreamer's `mpegtsmux` both send version 0 of
//! transport stream 1) yet put the program elsewhere (ffmpeg's PMT on PID 0x1000, video on
//! 0x100; `mpegtsmux`'s on 0x20 and 65). Spliced after one another, the second one's tables
//! look like the ones the receiver already holds, so it never learns the new PIDs and stops
//! playing.
//!
//! So the splicer remembers, per table (the PAT; the PMT of each program), what the outputs
//! last carried: its content (everything but the version number and the CRC, and the PID it
//! came on) and its version out. A section of other content that goes out after a cut gets
//! the version after the last one out (mod 32) and a new CRC; later repetitions of it keep
//! that number, and each further change of content takes the next. A section whose content is
//! what went out last passes byte for byte (the usual main/backup pair, a looped file).
//!
//! Only sections that fit in one TS packet are rewritten (a PAT or the PMT of one program
//! always does). A PAT or PMT spanning packets, or one of several sections of its table,
//! passes as it is, counted: its version is not checked.

use super::section::crc32;
use super::{payload_offset, pid, PACKET_SIZE};

const PAT: u8 = 0x00;
const PMT: u8 = 0x02;
const NULL_PID: usize = 0x1fff;
/// The version_number bits of a section's sixth byte.
const VERSION_BITS: u8 = 0x3e;
/// The most tables followed (the PAT and a PMT per program number seen); the tables of more
/// programs than this pass as they are.
const MAX_TABLES: usize = 64;

/// What the outputs last carried of one table.
#[derive(Debug)]
struct Carried {
    table_id: u8,
    /// The program number of a PMT (0 for the PAT).
    program: u16,
    pid: usize,
    /// The section without its CRC, the version bits cleared.
    content: Vec<u8>,
    /// The version the input gave it, and the one that went out.
    version_in: u8,
    version_out: u8,
}

impl Carried {
    fn holds(&self, pid: usize, s: &[u8]) -> bool {
        let body = &s[..s.len() - 4];
        self.pid == pid
            && self.content.len() == body.len()
            && self
                .content
                .iter()
                .zip(body)
                .enumerate()
                .all(|(i, (&a, &b))| a == if i == 5 { b & !VERSION_BITS } else { b })
    }

    fn set(&mut self, pid: usize, s: &[u8], version_in: u8, version_out: u8) {
        self.pid = pid;
        self.content.clear();
        self.content.extend_from_slice(&s[..s.len() - 4]);
        self.content[5] &= !VERSION_BITS;
        self.version_in = version_in;
        self.version_out = version_out;
    }
}

fn version(s: &[u8]) -> u8 {
    (s[5] & VERSION_BITS) >> 1
}

/// The tables the outputs carry, and what the splicer renumbered.
#[derive(Debug, Default)]
pub struct PsiVersions {
    /// A few entries: the PAT and one PMT per program seen (at most `MAX_TABLES`).
    carried: Vec<Carried>,
    bumped: u64,
    left: u64,
}

impl PsiVersions {
    /// Notes the tables in a packet going out unchanged (before the first cut).
    pub fn observe(&mut self, p: &[u8]) {
        let pid = pid(p);
        let Some(mut at) = first_section(p) else {
            return;
        };
        while let Found::Table(len) = table_at(p, pid, at) {
            self.version_out(pid, &p[at..at + len], false);
            at += len;
        }
    }

    /// Gives the tables in a packet going out after a cut the version they need (see the
    /// module docs); rewrites the packet in place if one changes.
    pub fn rewrite(&mut self, p: &mut [u8]) {
        let pid = pid(p);
        let Some(mut at) = first_section(p) else {
            return;
        };
        loop {
            let len = match table_at(p, pid, at) {
                Found::Table(len) => len,
                Found::Left => {
                    self.left += 1;
                    return;
                }
                Found::Nothing => return,
            };
            let s = &mut p[at..at + len];
            let out = self.version_out(pid, s, true);
            if out != version(s) {
                s[5] = (s[5] & !VERSION_BITS) | (out << 1);
                let crc = crc32(&s[..len - 4]);
                s[len - 4..].copy_from_slice(&crc.to_be_bytes());
            }
            at += len;
        }
    }

    /// Times a PAT or PMT of new content got a version of the splicer's in place of its own.
    pub fn bumped(&self) -> u64 {
        self.bumped
    }

    /// PAT and PMT sections after a cut passed as they are: spanning packets, or one of
    /// several sections of their table.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The version section `s` on `pid` goes out with; notes it as carried.
    fn version_out(&mut self, pid: usize, s: &[u8], renumber: bool) -> u8 {
        let v = version(s);
        let table_id = s[0];
        let program = if table_id == PMT {
            u16::from_be_bytes([s[3], s[4]])
        } else {
            0
        };
        let Some(c) = self
            .carried
            .iter_mut()
            .find(|c| c.table_id == table_id && c.program == program)
        else {
            if self.carried.len() == MAX_TABLES {
                return v;
            }
            let mut c = Carried {
                table_id,
                program,
                pid,
                content: Vec::new(),
                version_in: v,
                version_out: v,
            };
            c.set(pid, s, v, v);
            self.carried.push(c);
            return v;
        };
        if c.holds(pid, s) {
            if c.version_in != v {
                // The same content numbered anew by its input: it passes as it is.
                c.version_in = v;
                c.version_out = v;
            }
            return c.version_out;
        }
        let out = if renumber {
            (c.version_out + 1) & 0x1f
        } else {
            v
        };
        if out != v {
            self.bumped += 1;
        }
        c.set(pid, s, v, out);
        out
    }
}

/// What starts at a position of a packet's payload.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// A whole PAT or PMT section in force, of this many bytes, CRC checked.
    Table(usize),
    /// A PAT or PMT this module leaves as it is: spanning packets, or one of several
    /// sections of its table.
    Left,
    /// Anything else (stuffing, another table, a PES, a broken section).
    Nothing,
}

/// Where the first section starting in `p` begins, if a section starts in it.
fn first_section(p: &[u8]) -> Option<usize> {
    if p[1] & 0x40 == 0 {
        return None;
    }
    let off = payload_offset(p)?;
    Some(off + 1 + usize::from(p[off]))
}

fn table_at(p: &[u8], pid: usize, at: usize) -> Found {
    if at + 3 > PACKET_SIZE {
        return Found::Nothing;
    }
    let table_id = p[at];
    let ours = match pid {
        0 => table_id == PAT,
        NULL_PID => false,
        _ => table_id == PMT,
    };
    if !ours || p[at + 1] & 0x80 == 0 {
        return Found::Nothing;
    }
    let len = 3 + usize::from(u16::from_be_bytes([p[at + 1] & 0x0f, p[at + 2]]));
    if len < 12 {
        return Found::Nothing;
    }
    if at + len > PACKET_SIZE {
        return Found::Left;
    }
    let s = &p[at..at + len];
    if s[5] & 0x01 == 0 || crc32(s) != 0 {
        // A table to come (current_next_indicator 0), or a damaged one: not ours to touch.
        return Found::Nothing;
    }
    if s[6] != 0 || s[7] != 0 {
        return Found::Left;
    }
    Found::Table(len)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// ffmpeg's PAT as it sends it: transport stream 1, version 0, program 1 on PMT PID 0x1000.
    const FFMPEG_PAT: [u8; 16] = [
        0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00, 0x2a, 0xb1, 0x04,
        0xb2,
    ];

    /// CRC-32/MPEG-2 bit by bit, straight from ISO/IEC 13818-1 annex A (no table): a check of
    /// the table-driven one the module uses.
    fn mpeg_crc(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in data {
            for bit in (0..8).rev() {
                let top = (crc >> 31) ^ u32::from((byte >> bit) & 1);
                crc <<= 1;
                if top == 1 {
                    crc ^= 0x04c1_1db7;
                }
            }
        }
        crc
    }

    /// A section of `table_id` and `ext` (transport stream id or program number) at `version`,
    /// with a correct CRC.
    fn section(table_id: u8, ext: u16, version: u8, body: &[u8]) -> Vec<u8> {
        let len = 5 + body.len() + 4;
        let mut s = vec![table_id, 0xb0 | (len >> 8) as u8, len as u8];
        s.extend_from_slice(&ext.to_be_bytes());
        s.extend_from_slice(&[0xc1 | (version << 1), 0, 0]);
        s.extend_from_slice(body);
        let crc = mpeg_crc(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    /// A PAT (transport stream 1, CRC correct) naming program 1's PMT PID.
    pub(crate) fn pat(version: u8, pmt_pid: u16) -> Vec<u8> {
        let mut body = vec![0, 1];
        body.extend_from_slice(&(0xe000 | pmt_pid).to_be_bytes());
        section(PAT, 1, version, &body)
    }

    /// Program 1's PMT (CRC correct): one H.264 stream on `video`, which carries the PCR.
    pub(crate) fn pmt(version: u8, video: u16) -> Vec<u8> {
        let mut body = (0xe000 | video).to_be_bytes().to_vec();
        body.extend_from_slice(&[0xf0, 0, 0x1b]);
        body.extend_from_slice(&(0xe000 | video).to_be_bytes());
        body.extend_from_slice(&[0xf0, 0]);
        section(PMT, 1, version, &body)
    }

    /// A packet of `pid` carrying `section` (unit start, pointer field 0, stuffing after).
    pub(crate) fn packet(pid: u16, section: &[u8]) -> [u8; PACKET_SIZE] {
        let mut p = [0xffu8; PACKET_SIZE];
        p[..5].copy_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10, 0]);
        p[5..5 + section.len()].copy_from_slice(section);
        p
    }

    /// The section in a packet made by `packet`.
    pub(crate) fn section_of(p: &[u8]) -> &[u8] {
        let len = 3 + usize::from(u16::from_be_bytes([p[6] & 0x0f, p[7]]));
        &p[5..5 + len]
    }

    /// `p` as it goes out after a cut.
    fn rewritten(v: &mut PsiVersions, mut p: [u8; PACKET_SIZE]) -> [u8; PACKET_SIZE] {
        v.rewrite(&mut p);
        p
    }

    #[test]
    fn the_helpers_make_ffmpegs_pat_byte_for_byte() {
        assert_eq!(pat(0, 0x1000), FFMPEG_PAT);
        assert_eq!(crc32(&FFMPEG_PAT), 0);
    }

    #[test]
    fn another_layout_gets_the_next_version_with_a_valid_crc() {
        let mut v = PsiVersions::default();
        // ffmpeg's tables go out first, untouched (before any cut).
        v.observe(&packet(0, &FFMPEG_PAT));
        v.observe(&packet(0x1000, &pmt(0, 0x100)));
        // mpegtsmux's, numbered alike (version 0) but laid out elsewhere.
        let pat_out = rewritten(&mut v, packet(0, &pat(0, 0x20)));
        let pmt_out = rewritten(&mut v, packet(0x20, &pmt(0, 65)));
        for (out, want) in [(&pat_out, pat(1, 0x20)), (&pmt_out, pmt(1, 65))] {
            let s = section_of(out);
            assert_eq!(version(s), 1);
            assert_eq!(s, want, "only the version and the CRC change");
            assert_eq!(mpeg_crc(s), 0, "CRC-32/MPEG-2 over the section holds");
        }
        assert_eq!(
            pat_out[..5],
            packet(0, &pat(0, 0x20))[..5],
            "header untouched"
        );
        assert_eq!(v.bumped(), 2);
        // Its repetitions carry the same number, and count no further.
        assert_eq!(rewritten(&mut v, packet(0, &pat(0, 0x20))), pat_out);
        assert_eq!(rewritten(&mut v, packet(0x20, &pmt(0, 65))), pmt_out);
        assert_eq!(v.bumped(), 2);
        // Back to ffmpeg's: differs from what went out last, so the next version again.
        let back = rewritten(&mut v, packet(0, &FFMPEG_PAT));
        assert_eq!(section_of(&back), pat(2, 0x1000));
        let back = rewritten(&mut v, packet(0x1000, &pmt(0, 0x100)));
        assert_eq!(section_of(&back), pmt(2, 0x100));
        assert_eq!(v.bumped(), 4);
    }

    #[test]
    fn tables_of_the_same_content_pass_byte_for_byte() {
        let mut v = PsiVersions::default();
        v.observe(&packet(0, &FFMPEG_PAT));
        v.observe(&packet(0x1000, &pmt(0, 0x100)));
        // The backup encoder of the pair: the same tables.
        for p in [packet(0, &FFMPEG_PAT), packet(0x1000, &pmt(0, 0x100))] {
            assert_eq!(rewritten(&mut v, p), p);
        }
        // The same content under a number of its own passes as it is too.
        let renumbered = packet(0, &pat(7, 0x1000));
        assert_eq!(rewritten(&mut v, renumbered), renumbered);
        assert_eq!((v.bumped(), v.left()), (0, 0));
    }

    #[test]
    fn the_same_pmt_on_another_pid_is_another_layout() {
        let mut v = PsiVersions::default();
        v.observe(&packet(0x1000, &pmt(0, 0x100)));
        let out = rewritten(&mut v, packet(0x20, &pmt(0, 0x100)));
        assert_eq!(section_of(&out), pmt(1, 0x100));
    }

    #[test]
    fn the_inputs_own_changes_take_further_versions() {
        let mut v = PsiVersions::default();
        v.observe(&packet(0x1000, &pmt(0, 0x100)));
        let out = rewritten(&mut v, packet(0x20, &pmt(0, 65)));
        assert_eq!(version(section_of(&out)), 1);
        // The input on air changes its PMT (version 0 to 1): out goes 2, not its own 1.
        let out = rewritten(&mut v, packet(0x20, &pmt(1, 66)));
        assert_eq!(section_of(&out), pmt(2, 66));
        assert_eq!(v.bumped(), 2);
    }

    #[test]
    fn versions_wrap_at_32() {
        let mut v = PsiVersions::default();
        v.observe(&packet(0, &pat(31, 0x1000)));
        let out = rewritten(&mut v, packet(0, &pat(31, 0x20)));
        assert_eq!(section_of(&out), pat(0, 0x20));
        let out = rewritten(&mut v, packet(0, &pat(31, 0x1000)));
        assert_eq!(section_of(&out), pat(1, 0x1000));
    }

    #[test]
    fn past_the_most_tables_followed_new_programs_pass_as_they_are() {
        let mut v = PsiVersions::default();
        let pmt_of = |program: u16, video: u16| {
            let mut body = (0xe000 | video).to_be_bytes().to_vec();
            body.extend_from_slice(&[0xf0, 0]);
            packet(0x20, &section(PMT, program, 0, &body))
        };
        for program in 1..=MAX_TABLES as u16 {
            v.observe(&pmt_of(program, 0x100));
        }
        let extra = pmt_of(1000, 0x100);
        v.observe(&extra);
        let changed = pmt_of(1000, 0x200);
        assert_eq!(rewritten(&mut v, changed), changed);
        // A table followed still gets its new version.
        let out = rewritten(&mut v, pmt_of(1, 0x200));
        assert_eq!(version(section_of(&out)), 1);
    }

    #[test]
    fn sections_spanning_packets_are_left_as_they_are_and_counted() {
        let mut v = PsiVersions::default();
        v.observe(&packet(0x1000, &pmt(0, 0x100)));
        let mut long = packet(0x20, &pmt(0, 65));
        // section_length 400: it goes on in the next packet of the PID.
        long[6] = 0xb1;
        long[7] = 0x90;
        assert_eq!(rewritten(&mut v, long), long);
        assert_eq!((v.bumped(), v.left()), (0, 1));
    }

    #[test]
    fn damaged_sections_pes_and_other_tables_are_not_touched() {
        let mut v = PsiVersions::default();
        v.observe(&packet(0, &FFMPEG_PAT));
        let mut bad = packet(0, &pat(0, 0x20));
        bad[16] ^= 0x01; // the CRC no longer holds
        assert_eq!(rewritten(&mut v, bad), bad);
        // An SDT (table 0x42) on PID 0x11, a PES start on a PMT-like PID.
        let sdt = packet(0x11, &section(0x42, 1, 0, &[0xff, 0x01]));
        assert_eq!(rewritten(&mut v, sdt), sdt);
        let pes = crate::ts::tests::packet(0x20, 0, None, Some(90_000));
        assert_eq!(rewritten(&mut v, pes), pes);
        // A continuation packet (no unit start) carries no section start.
        let mut cont = packet(0, &pat(0, 0x20));
        cont[1] &= !0x40;
        assert_eq!(rewritten(&mut v, cont), cont);
        assert_eq!((v.bumped(), v.left()), (0, 0));
    }
}
