//! Instant start: the most recent GOP of what a route sends, so a reader that joins starts
//! decoding at once instead of waiting for the next keyframe.
//!
//! The cache watches the stream the hub fans out (after the splicer, so what it keeps is
//! byte for byte what the outputs got) and keeps the buffers from the latest video keyframe
//! on, bounded in bytes. A joining reader gets a *burst*: copies of the latest PAT and PMT, then
//! the cached buffers from the keyframe on. The live data that follows continues the burst
//! exactly (the cache ends with the buffer fanned out last), so its continuity counters and
//! timestamps run on without a jump: the burst is the stream's last GOP, delivered at once.
//! The PAT and PMT copies carry the counter just before the next one of their PID, so they
//! never show as a continuity error either.
//!
//! A GOP that grows past the bound is not kept (counted in `too_large`) and the cache stays
//! empty until the next keyframe: a reader joining then starts live, as without the cache.
//! A stream whose video is not known (no PMT with a video stream yet) is not cached at all.
//!
//! Pure: no clock, no locks; the hub holds it under a lock of its own (see `hub/mod.rs`).

use serde::Serialize;

use crate::ts::{pid, starts_keyframe, Programs, PACKET_SIZE};

/// The cache's bound when a route's spec sets none: 1 MiB, a 2 s GOP at 4 Mb/s, and half an
/// output's default queue (so a whole burst fits in it with room for the live data).
pub const DEFAULT_GOP_CACHE_BYTES: u64 = 1024 * 1024;

/// What the stats show of a route's GOP cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GopCacheStats {
    /// The bound in bytes (0: instant start is off).
    pub limit_bytes: u64,
    /// Bytes held now: the GOP a reader joining now would get (without the PAT/PMT copies).
    pub bytes: u64,
    /// GOPs the cache started keeping (keyframes seen on the route's output).
    pub gops: u64,
    /// GOPs not kept because they grew past the bound.
    pub too_large: u64,
    /// Bursts sent to joining readers.
    pub bursts: u64,
}

/// The last GOP of a stream, bounded in bytes.
#[derive(Debug, Default)]
pub struct GopCache {
    limit: usize,
    programs: Programs,
    /// The latest PAT and PMT packets, as they went out.
    pat: Option<[u8; PACKET_SIZE]>,
    pmt: Option<[u8; PACKET_SIZE]>,
    /// From the latest keyframe on (the first buffer starts with its packet).
    buffers: Vec<gst::Buffer>,
    bytes: usize,
    /// Past the bound since the last keyframe: nothing kept until the next.
    overflowed: bool,
    gops: u64,
    too_large: u64,
    bursts: u64,
}

impl GopCache {
    /// A cache of at most `limit` bytes (0: off, keeps nothing).
    pub fn new(limit: u64) -> GopCache {
        GopCache {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            ..GopCache::default()
        }
    }

    /// Changes the bound (0: off); forgets what it holds, keeps its counts.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.clear();
    }

    /// Whether it keeps anything at all.
    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Forgets what it holds (nothing goes out any more); the counts stay.
    pub fn clear(&mut self) {
        self.buffers.clear();
        self.bytes = 0;
        self.overflowed = false;
    }

    /// Notes a buffer of whole packets that just went out.
    pub fn push(&mut self, buffer: &gst::Buffer) {
        if !self.enabled() {
            return;
        }
        let Ok(map) = buffer.map_readable() else {
            return;
        };
        let mut key_at = None;
        for (i, p) in map.chunks_exact(PACKET_SIZE).enumerate() {
            if p[1] & 0x40 == 0 {
                continue;
            }
            let pid = pid(p);
            if pid == 0 {
                self.pat = p.try_into().ok();
            } else if self.programs.pmt_pid.is_some_and(|x| usize::from(x) == pid) {
                self.pmt = p.try_into().ok();
            }
            self.programs.observe(p);
            if key_at.is_none() {
                if let Some(v) = self.programs.video() {
                    if usize::from(v.pid) == pid && starts_keyframe(p, v.codec) {
                        key_at = Some(i * PACKET_SIZE);
                    }
                }
            }
        }
        drop(map);
        let kept = match key_at {
            Some(0) => buffer.clone(),
            Some(at) => match buffer.copy_region(gst::BufferCopyFlags::MEMORY, at..buffer.size()) {
                Ok(b) => b,
                Err(_) => return,
            },
            None if self.buffers.is_empty() => return,
            None => buffer.clone(),
        };
        if key_at.is_some() {
            self.clear();
            self.gops += 1;
        } else if self.overflowed {
            return;
        }
        if self.bytes + kept.size() > self.limit {
            self.clear();
            self.overflowed = true;
            self.too_large += 1;
            return;
        }
        self.bytes += kept.size();
        self.buffers.push(kept);
    }

    /// What a reader joining now is sent before the live data: the latest PAT and PMT, then
    /// the buffers from the latest keyframe on. Empty when no whole GOP start is held (off, no
    /// keyframe yet, or the GOP outgrew the bound). Counts a burst when it is not empty.
    pub fn burst(&mut self) -> Vec<gst::Buffer> {
        if self.buffers.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.buffers.len() + 1);
        let mut psi = Vec::with_capacity(2 * PACKET_SIZE);
        for p in [self.pat, self.pmt].into_iter().flatten() {
            psi.extend_from_slice(&self.ahead_of(p));
        }
        if !psi.is_empty() {
            out.push(gst::Buffer::from_mut_slice(psi));
        }
        out.extend(self.buffers.iter().cloned());
        self.bursts += 1;
        out
    }

    /// A copy of PSI packet `p` whose continuity counter comes just before the next packet of
    /// its PID a reader gets: the first in the cached GOP, else the next live one (the copy is
    /// then the very packet that went out last, repeated as its own value).
    fn ahead_of(&self, mut p: [u8; PACKET_SIZE]) -> [u8; PACKET_SIZE] {
        let of = pid(&p);
        let next = self.buffers.iter().find_map(|b| {
            let map = b.map_readable().ok()?;
            map.chunks_exact(PACKET_SIZE)
                .find(|q| pid(q) == of && q[3] & 0x10 != 0)
                .map(|q| q[3] & 0x0f)
        });
        if let Some(cc) = next {
            p[3] = (p[3] & 0xf0) | (cc.wrapping_sub(1) & 0x0f);
        }
        p
    }

    pub fn stats(&self) -> GopCacheStats {
        GopCacheStats {
            limit_bytes: self.limit as u64,
            bytes: self.bytes as u64,
            gops: self.gops,
            too_large: self.too_large,
            bursts: self.bursts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::tests::{packet, pat, pmt};

    const VIDEO: u16 = 0x100;
    const PMT: u16 = 0x1000;

    fn buffer(packets: &[[u8; PACKET_SIZE]]) -> gst::Buffer {
        gst::Buffer::from_mut_slice(packets.concat())
    }

    /// A video packet on 0x100 with counter `cc`: a keyframe start (random access) or not.
    fn video(cc: u8, key: bool) -> [u8; PACKET_SIZE] {
        let mut p = packet(VIDEO, cc, Some(1_000), Some(10_000));
        if key {
            p[5] |= 0x40;
        }
        p
    }

    fn with_cc(mut p: [u8; PACKET_SIZE], cc: u8) -> [u8; PACKET_SIZE] {
        p[3] = (p[3] & 0xf0) | cc;
        p
    }

    fn psi() -> Vec<[u8; PACKET_SIZE]> {
        vec![
            with_cc(pat(1, PMT), 4),
            with_cc(pmt(PMT, VIDEO, &[(VIDEO, 0x1b)]), 9),
        ]
    }

    fn bytes_of(burst: &[gst::Buffer]) -> Vec<u8> {
        burst
            .iter()
            .flat_map(|b| b.map_readable().unwrap().to_vec())
            .collect()
    }

    #[test]
    fn a_burst_is_pat_pmt_then_the_gop_from_its_keyframe_with_counters_that_run_on() {
        gst::init().unwrap();
        let mut cache = GopCache::new(64 * 1024);
        let mut first = psi();
        first.push(video(0, false));
        cache.push(&buffer(&first));
        assert!(cache.burst().is_empty(), "no keyframe yet");
        // The keyframe starts mid-buffer: the burst starts at its packet.
        cache.push(&buffer(&[video(1, false), video(2, true), video(3, false)]));
        cache.push(&buffer(&[video(4, false)]));
        let burst = bytes_of(&cache.burst());
        let packets: Vec<&[u8]> = burst.chunks(PACKET_SIZE).collect();
        assert_eq!(packets.len(), 5);
        assert_eq!((pid(packets[0]), pid(packets[1])), (0, usize::from(PMT)));
        // No PAT or PMT in the GOP: the copies repeat the last ones out, counters and all, so
        // the next live PAT (5) and PMT (10) follow them.
        assert_eq!((packets[0][3] & 0x0f, packets[1][3] & 0x0f), (4, 9));
        let ccs: Vec<u8> = packets[2..].iter().map(|p| p[3] & 0x0f).collect();
        assert_eq!(ccs, [2, 3, 4]);
        assert_eq!(cache.stats().bursts, 1);
    }

    #[test]
    fn the_psi_copies_come_just_before_the_next_psi_inside_the_gop() {
        gst::init().unwrap();
        let mut cache = GopCache::new(64 * 1024);
        cache.push(&buffer(&psi()));
        cache.push(&buffer(&[video(0, true)]));
        cache.push(&buffer(&[with_cc(pat(1, PMT), 5), video(1, false)]));
        let burst = bytes_of(&cache.burst());
        assert_eq!(burst[3] & 0x0f, 4, "the GOP's PAT has 5: the copy takes 4");
    }

    #[test]
    fn a_new_keyframe_starts_the_cache_over() {
        gst::init().unwrap();
        let mut cache = GopCache::new(64 * 1024);
        cache.push(&buffer(&psi()));
        cache.push(&buffer(&[video(0, true), video(1, false)]));
        cache.push(&buffer(&[video(2, true)]));
        let stats = cache.stats();
        assert_eq!((stats.gops, stats.bytes), (2, PACKET_SIZE as u64));
    }

    #[test]
    fn a_gop_larger_than_the_bound_is_not_kept_and_counted() {
        gst::init().unwrap();
        let mut cache = GopCache::new(3 * PACKET_SIZE as u64);
        cache.push(&buffer(&psi()));
        cache.push(&buffer(&[video(0, true), video(1, false)]));
        cache.push(&buffer(&[video(2, false), video(3, false)]));
        assert!(cache.burst().is_empty());
        cache.push(&buffer(&[video(4, false)]));
        let stats = cache.stats();
        assert_eq!((stats.too_large, stats.bytes, stats.bursts), (1, 0, 0));
        // The next GOP fits again.
        cache.push(&buffer(&[video(5, true)]));
        assert_eq!(bytes_of(&cache.burst()).len(), 3 * PACKET_SIZE);
    }

    #[test]
    fn off_keeps_nothing() {
        gst::init().unwrap();
        let mut cache = GopCache::new(0);
        cache.push(&buffer(&psi()));
        cache.push(&buffer(&[video(0, true)]));
        assert!(cache.burst().is_empty());
        assert_eq!(cache.stats(), GopCacheStats::default());
    }
}
