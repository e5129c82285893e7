//! What a video stream's sequence parameter set says: picture size, frame rate (when the SPS
//! carries timing), profile, level and scan, for H.264 and H.265. Read from the first packet of
//! a PES (where encoders put the parameter sets of a keyframe), a few hundred bits, never the
//! pictures.

use super::psi::Codec;
use super::{payload_offset, PACKET_SIZE};

/// A video stream's parameters, as its SPS declares them.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoParams {
    pub width: u32,
    pub height: u32,
    /// Frames per second from the SPS's timing information (H.264 VUI), if it has one.
    pub frame_rate: Option<f64>,
    pub profile: Option<&'static str>,
    /// As written: "3.1", "4".
    pub level: Option<String>,
    pub interlaced: bool,
}

/// Reads bits of a NAL unit's payload, skipping emulation prevention bytes (00 00 03).
struct Bits<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u8,
    zeros: u8,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
        }
    }

    fn bit(&mut self) -> Option<u32> {
        if self.bit == 0 {
            if self.zeros >= 2 && self.data.get(self.byte) == Some(&3) {
                self.byte += 1;
                self.zeros = 0;
            }
            let b = *self.data.get(self.byte)?;
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
        }
        let b = self.data[self.byte];
        let v = (b >> (7 - self.bit)) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
        }
        Some(u32::from(v))
    }

    /// Up to 32 bits, most significant first.
    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some(acc << 1 | self.bit()?))
    }

    fn skip(&mut self, n: u32) -> Option<()> {
        (0..n).try_for_each(|_| self.bit().map(|_| ()))
    }

    /// Exp-Golomb unsigned.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

fn h264_profile(idc: u32, constraints: u32) -> Option<&'static str> {
    Some(match idc {
        66 if constraints & 0x40 != 0 => "Constrained Baseline",
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 => "High 10",
        122 => "High 4:2:2",
        244 => "High 4:4:4 Predictive",
        44 => "CAVLC 4:4:4",
        _ => return None,
    })
}

/// A level of `idc / unit` written as ffprobe and encoders do ("3.1", "4").
fn level(idc: u32, unit: u32) -> Option<String> {
    if idc == 0 {
        return None;
    }
    let tenths = idc * 10 / unit;
    Some(if tenths.is_multiple_of(10) {
        format!("{}", tenths / 10)
    } else {
        format!("{}.{}", tenths / 10, tenths % 10)
    })
}

/// Frames per second, rounded to thousandths (29.97, 25).
fn rate(fps: f64) -> Option<f64> {
    (fps.is_finite() && fps > 0.0 && fps <= 1000.0).then(|| (fps * 1000.0).round() / 1000.0)
}

/// An H.264 SPS (the NAL payload after its header byte).
pub fn h264_sps(sps: &[u8]) -> Option<VideoParams> {
    let mut r = Bits::new(sps);
    let profile = r.bits(8)?;
    let constraints = r.bits(8)?;
    let level_idc = r.bits(8)?;
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bit()?;
        }
        r.ue()?;
        r.ue()?;
        r.bit()?;
        if r.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?;
    let width_mbs = r.ue()? + 1;
    let height_units = r.ue()? + 1;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?;
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bit()? == 1 {
        (cl, cr, ct, cb) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
    }
    let (crop_x, crop_y) = match chroma_format {
        0 => (1, 2 - frame_mbs_only),
        1 => (2, 2 * (2 - frame_mbs_only)),
        2 => (2, 2 - frame_mbs_only),
        _ => (1, 2 - frame_mbs_only),
    };
    let width = (width_mbs * 16).checked_sub(crop_x * (cl + cr))?;
    let height = ((2 - frame_mbs_only) * height_units * 16).checked_sub(crop_y * (ct + cb))?;
    if width == 0 || height == 0 {
        return None;
    }
    Some(VideoParams {
        width,
        height,
        // The size is known by here; timing is optional and read if it is there.
        frame_rate: h264_vui_rate(&mut r).flatten(),
        profile: h264_profile(profile, constraints),
        level: if level_idc == 11 && constraints & 0x10 != 0 {
            Some("1b".into())
        } else {
            level(level_idc, 10)
        },
        interlaced: frame_mbs_only == 0,
    })
}

/// The frame rate of an H.264 VUI, read from right after the frame cropping.
fn h264_vui_rate(r: &mut Bits<'_>) -> Option<Option<f64>> {
    if r.bit()? == 0 {
        return Some(None); // no VUI
    }
    if r.bit()? == 1 && r.bits(8)? == 255 {
        r.skip(32)?; // sar_width, sar_height
    }
    if r.bit()? == 1 {
        r.bit()?; // overscan_appropriate
    }
    if r.bit()? == 1 {
        r.skip(4)?; // video_format, video_full_range
        if r.bit()? == 1 {
            r.skip(24)?; // colour primaries, transfer, matrix
        }
    }
    if r.bit()? == 1 {
        r.ue()?;
        r.ue()?;
    }
    if r.bit()? == 0 {
        return Some(None); // no timing
    }
    let units = r.bits(32)?;
    let scale = r.bits(32)?;
    Some(
        (units > 0)
            .then(|| rate(f64::from(scale) / (2.0 * f64::from(units))))
            .flatten(),
    )
}

/// An H.265 SPS (the NAL payload after its two header bytes). The frame rate is left out:
/// its timing sits behind the reference picture sets, which are not worth reading here.
pub fn h265_sps(sps: &[u8]) -> Option<VideoParams> {
    let mut r = Bits::new(sps);
    r.skip(4)?; // sps_video_parameter_set_id
    let sub_layers = r.bits(3)?;
    r.skip(1)?;
    // profile_tier_level(1, sub_layers)
    r.skip(3)?; // profile space, tier
    let profile_idc = r.bits(5)?;
    r.skip(32)?; // compatibility flags
    r.skip(1)?; // progressive_source
    let interlaced = r.bit()? == 1;
    r.skip(2 + 43 + 1)?;
    let level_idc = r.bits(8)?;
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(sub_layers as usize) {
        *p = (r.bit()? == 1, r.bit()? == 1);
    }
    if sub_layers > 0 {
        r.skip(2 * (8 - sub_layers))?;
    }
    for &(profile, level) in present.iter().take(sub_layers as usize) {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let mut chroma_format = r.ue()?;
    if chroma_format == 3 && r.bit()? == 1 {
        chroma_format = 0; // separate colour planes: cropped like monochrome
    }
    let width = r.ue()?;
    let height = r.ue()?;
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bit()? == 1 {
        (cl, cr, ct, cb) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
    }
    let sub_w = if matches!(chroma_format, 1 | 2) { 2 } else { 1 };
    let sub_h = if chroma_format == 1 { 2 } else { 1 };
    let width = width.checked_sub(sub_w * (cl + cr))?;
    let height = height.checked_sub(sub_h * (ct + cb))?;
    if width == 0 || height == 0 {
        return None;
    }
    Some(VideoParams {
        width,
        height,
        frame_rate: None,
        profile: match profile_idc {
            1 => Some("Main"),
            2 => Some("Main 10"),
            3 => Some("Main Still Picture"),
            4 => Some("Rext"),
            _ => None,
        },
        level: level(level_idc, 30),
        interlaced,
    })
}

/// The parameters of the SPS at the start of a PES of `codec` in this packet, if it has one.
pub fn params_in(p: &[u8], codec: Codec) -> Option<VideoParams> {
    if p[1] & 0x40 == 0 || !matches!(codec, Codec::H264 | Codec::Hevc) {
        return None;
    }
    let pes = &p[payload_offset(p)?..PACKET_SIZE];
    if pes.len() < 9 || pes[..3] != [0, 0, 1] {
        return None;
    }
    let es = pes.get(9 + usize::from(pes[8])..)?;
    let is_sps = |b: u8| match codec {
        Codec::H264 => b & 0x1f == 7,
        _ => (b >> 1) & 0x3f == 33,
    };
    let at = es
        .windows(4)
        .position(|w| w[..3] == [0, 0, 1] && is_sps(w[3]))?;
    match codec {
        Codec::H264 => h264_sps(&es[at + 4..]),
        _ => h265_sps(es.get(at + 5..)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn x264_sps_gives_its_picture_size() {
        // The SPS x264 wrote for a 640x360 clip (height coded as 368, cropped by 8).
        let sps = [
            0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00,
            0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x58, 0xba, 0x80, 0x00,
        ];
        let v = h264_sps(&sps).unwrap();
        assert_eq!((v.width, v.height), (640, 360));
        assert_eq!(v.profile, Some("Constrained Baseline"));
        assert_eq!(v.level.as_deref(), Some("3"));
        assert_eq!(v.frame_rate, Some(25.0));
        assert!(h264_sps(&sps[..3]).is_none());
    }

    #[test]
    fn x264_sps_with_vui_timing_gives_the_frame_rate() {
        // ffmpeg -f lavfi -i testsrc2=size=1280x720:rate=30000/1001 -c:v libx264 -f h264
        let sps = hex("64001facd9405005bb011000003e90000ea600f1831960");
        let v = h264_sps(&sps).unwrap();
        assert_eq!((v.width, v.height), (1280, 720));
        assert_eq!(v.frame_rate, Some(29.97));
        assert_eq!(v.profile, Some("High"));
        assert_eq!(v.level.as_deref(), Some("3.1"));
        assert!(!v.interlaced);
    }

    #[test]
    fn x265_sps_gives_its_picture_size_profile_and_level() {
        // ffmpeg -f lavfi -i testsrc2=size=720x576:rate=25 -c:v libx265 -f hevc
        let sps = hex(
            "0101600000030090000003000003005aa005a20090596566924caf016808000003000800000300c840",
        );
        let v = h265_sps(&sps).unwrap();
        assert_eq!((v.width, v.height), (720, 576));
        assert_eq!(v.profile, Some("Main"));
        assert_eq!(v.level.as_deref(), Some("3"));
        assert_eq!(v.frame_rate, None);
    }
}
