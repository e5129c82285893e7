//! PSI sections as the analysis reads them: reassembled across the packets of one PID, and
//! checked by their CRC-32 (ISO/IEC 13818-1 annex A: polynomial 0x04C11DB7, no reflection).
//! Only the PIDs that carry PSI and DVB SI are reassembled, so this runs for a few packets per
//! second.

use super::payload_offset;

/// The longest section the analysis reassembles: a PAT or PMT is at most 1024 bytes, an SDT or
/// EIT 4096.
const MAX_SECTION: usize = 4096;

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04c1_1db7
            } else {
                c << 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32/MPEG-2 of `data`. Over a whole section, CRC field included, it is 0 when it holds.
pub fn crc32(data: &[u8]) -> u32 {
    data.iter().fold(0xffff_ffff, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ b) as usize]
    })
}

/// Reassembles the sections of one PID.
#[derive(Debug, Default)]
pub struct Sections {
    buf: Vec<u8>,
    /// The whole length of the section being assembled, once its header is in.
    need: Option<usize>,
}

impl Sections {
    /// Forgets a section in progress (a packet of the PID was lost).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.need = None;
    }

    /// Takes one packet of the PID; calls `done` with each section it completes.
    pub fn push(&mut self, p: &[u8], mut done: impl FnMut(&[u8])) {
        let Some(off) = payload_offset(p) else {
            return;
        };
        let payload = &p[off..];
        if p[1] & 0x40 == 0 {
            if !self.buf.is_empty() {
                self.feed(payload, &mut done);
            }
            return;
        }
        // A section starts at the pointer; what comes before it ends the one in progress.
        let pointer = usize::from(payload[0]);
        let Some(rest) = payload.get(1..) else {
            return;
        };
        if pointer > rest.len() {
            self.reset();
            return;
        }
        if !self.buf.is_empty() {
            self.feed(&rest[..pointer], &mut done);
        }
        self.reset();
        self.feed(&rest[pointer..], &mut done);
    }

    fn feed(&mut self, mut data: &[u8], done: &mut impl FnMut(&[u8])) {
        while !data.is_empty() {
            if self.buf.is_empty() && data[0] == 0xff {
                return; // stuffing to the end of the packet
            }
            let target = self.need.unwrap_or(3);
            let take = (target - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < target {
                return;
            }
            match self.need {
                None => {
                    let len = usize::from(u16::from_be_bytes([self.buf[1] & 0x0f, self.buf[2]]));
                    if len == 0 || 3 + len > MAX_SECTION {
                        self.reset();
                        return;
                    }
                    self.need = Some(3 + len);
                }
                Some(_) => {
                    done(&self.buf);
                    self.reset();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::PACKET_SIZE;

    /// A section with a correct CRC: table id, then `body` after the 5 bytes of a long header.
    pub(crate) fn section(table_id: u8, body: &[u8]) -> Vec<u8> {
        let len = 5 + body.len() + 4;
        let mut s = vec![
            table_id,
            0xb0 | (len >> 8) as u8,
            len as u8,
            0,
            1,
            0xc1,
            0,
            0,
        ];
        s.extend_from_slice(body);
        let crc = crc32(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    fn packets(pid: u16, section: &[u8]) -> Vec<[u8; PACKET_SIZE]> {
        let mut data = vec![0u8];
        data.extend_from_slice(section);
        data.chunks(184)
            .enumerate()
            .map(|(i, c)| {
                let mut p = [0xffu8; PACKET_SIZE];
                let pusi = if i == 0 { 0x40 } else { 0 };
                p[..4].copy_from_slice(&[0x47, pusi | (pid >> 8) as u8, pid as u8, 0x10]);
                p[4..4 + c.len()].copy_from_slice(c);
                p
            })
            .collect()
    }

    #[test]
    fn the_crc_of_a_whole_section_is_zero_and_a_flipped_bit_breaks_it() {
        let mut s = section(0x00, &[0, 1, 0xf0, 0x00]);
        assert_eq!(crc32(&s), 0);
        s[9] ^= 0x04;
        assert_ne!(crc32(&s), 0);
        // The check value of CRC-32/MPEG-2.
        assert_eq!(crc32(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn a_section_over_three_packets_is_reassembled() {
        let body: Vec<u8> = (0..400u32).map(|i| i as u8).collect();
        let s = section(0x02, &body);
        let mut out = Vec::new();
        let mut asm = Sections::default();
        for p in packets(0x100, &s) {
            asm.push(&p, |d| out.push(d.to_vec()));
        }
        assert_eq!(out, vec![s]);
    }

    #[test]
    fn a_lost_packet_drops_the_section_in_progress() {
        let body = vec![7u8; 300];
        let s = section(0x02, &body);
        let ps = packets(0x100, &s);
        let mut asm = Sections::default();
        let mut n = 0;
        asm.push(&ps[0], |_| n += 1);
        asm.reset();
        asm.push(&ps[1], |_| n += 1);
        assert_eq!(n, 0);
    }
}
