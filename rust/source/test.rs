use super::element;
use crate::elements::{add_chain, available};
use crate::error::Result;
use crate::uri::TestEndpoint;
use gst::prelude::*;

/// A live test signal: `videotestsrc ! x264enc ! h264parse` and `audiotestsrc ! avenc_aac`,
/// muxed by `mpegtsmux` into 7-packet buffers. Adds it all to `pipeline`; returns the mux.
///
/// DVB wants a PCR at least every 40 ms (TR 101 290 2.3a), but `mpegtsmux` writes one only on
/// a packet of the PCR stream, and without padding a video PID carries packets only once per
/// frame: 67 ms apart at 15 fps, 100 ms at 10. So the PCR goes where it can come often enough:
/// - with audio, on the audio PID: an AAC frame every 21.3 ms (1024 samples at 48 kHz), each
///   with a PCR; no padding, and the PCR stays the PES timestamps' clock (no drift). The slate
///   keeps it on the video PID if the input's was there (receivers keep their clock's PID): at
///   its 25 fps each frame carries one, 40 ms apart, which DVB still allows;
/// - video only, at a constant mux rate ([`video_only_mux_rate`]): `mpegtsmux` then fills the
///   gaps with null packets and PCR-only packets on the video PID, a PCR every 20 ms.
pub(super) fn build(
    ep: &TestEndpoint,
    name: &str,
    pipeline: &gst::Pipeline,
) -> Result<gst::Element> {
    let mux = element("mpegtsmux", name)?;
    mux.set_property("alignment", 7i32);
    // A PCR on the first packet of the PCR stream after `pcr-interval`: at the default (40 ms)
    // only every other packet of a stream 40 ms apart would carry one. At 20 ms each AAC frame
    // does, and at a constant rate a PCR-only packet comes every 20 ms.
    mux.set_property("pcr-interval", 1_800u32);
    if !ep.audio {
        mux.set_property("bitrate", video_only_mux_rate(ep.bitrate_kbps));
    }
    pipeline.add(&mux)?;

    let vsrc = element("videotestsrc", name)?;
    vsrc.set_property("is-live", true);
    vsrc.set_property_from_str("pattern", &ep.pattern);
    // 8-bit 4:2:0: left to negotiate, x264enc takes 10-bit 4:4:4 (High 4:4:4 Predictive),
    // which most decoders, hardware and browsers cannot play.
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", ep.width as i32)
        .field("height", ep.height as i32)
        .field("framerate", gst::Fraction::new(ep.fps as i32, 1))
        .build();
    let vcaps = element("capsfilter", &format!("{name}-v"))?;
    vcaps.set_property("caps", &caps);
    let mut video = vec![vsrc, vcaps];
    if available("timeoverlay") {
        let overlay = element("timeoverlay", name)?;
        overlay.set_property_from_str("time-mode", "running-time");
        overlay.set_property_from_str("halignment", "center");
        overlay.set_property_from_str("valignment", "bottom");
        video.push(overlay);
    }
    let gop = ep.fps * 2;
    let enc = if available("x264enc") {
        let enc = element("x264enc", name)?;
        enc.set_property_from_str("tune", "zerolatency");
        enc.set_property_from_str("speed-preset", "ultrafast");
        enc.set_property("bitrate", ep.bitrate_kbps);
        enc.set_property("key-int-max", gop);
        enc
    } else {
        let enc = element("openh264enc", name)?;
        enc.set_property("bitrate", ep.bitrate_kbps * 1000);
        enc.set_property("gop-size", gop);
        enc
    };
    let parse = element("h264parse", name)?;
    parse.set_property("config-interval", -1i32);
    let vq = element("queue", &format!("{name}-v"))?;
    video.extend([enc, parse, vq.clone()]);
    add_chain(pipeline, &video)?;
    let video_pid = ep
        .video_pid
        .unwrap_or_else(|| default_pid(DEFAULT_VIDEO_PID, ep.audio_pid));
    link_to_mux(&vq, &mux, video_pid)?;
    let mut pcr_pid = video_pid;

    if ep.audio {
        let asrc = element("audiotestsrc", name)?;
        asrc.set_property("is-live", true);
        asrc.set_property("volume", 0.2f64);
        asrc.set_property("samplesperbuffer", 1024i32);
        if ep.silence {
            asrc.set_property_from_str("wave", "silence");
        }
        let conv = element("audioconvert", name)?;
        let resample = element("audioresample", name)?;
        let acaps = element("capsfilter", &format!("{name}-a"))?;
        acaps.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("rate", 48_000i32)
                .field("channels", 2i32)
                .build(),
        );
        let aenc = element("avenc_aac", name)?;
        let aparse = element("aacparse", name)?;
        let aq = element("queue", &format!("{name}-a"))?;
        add_chain(
            pipeline,
            &[asrc, conv, resample, acaps, aenc, aparse, aq.clone()],
        )?;
        let audio_pid = ep
            .audio_pid
            .unwrap_or_else(|| default_pid(DEFAULT_AUDIO_PID, Some(video_pid)));
        link_to_mux(&aq, &mux, audio_pid)?;
        if ep.pcr_pid != Some(video_pid) {
            pcr_pid = audio_pid;
        }
    }
    // The program's PCR stream (mpegtsmux's program 1, its only one), named, not left to which
    // pad's caps come first.
    let map = gst::Structure::builder("prog-map")
        .field("PCR_1", format!("sink_{pcr_pid}"))
        .build();
    mux.set_property("prog-map", map);
    Ok(mux)
}

/// mpegtsmux's own PIDs for its first two pads (`sink_65`, `sink_66`), which the test source
/// always had: its video and audio PIDs when the slate is not given the input's.
const DEFAULT_VIDEO_PID: u16 = 0x41;
const DEFAULT_AUDIO_PID: u16 = 0x42;

/// `default`, unless the other stream took it (the slate given one of the input's PIDs only).
fn default_pid(default: u16, other: Option<u16>) -> u16 {
    if other == Some(default) {
        0x43
    } else {
        default
    }
}

/// The constant mux rate (bit/s) of a video-only test signal: 1.5 times the video bitrate, so a
/// keyframe leaves the PCR (which counts the bytes at this rate) behind the video's PTS at 10
/// fps and more, plus 150 kbit/s for the PSI and the PCR-only packets (50 a second). The rest
/// is null packets: about a third of the stream.
fn video_only_mux_rate(video_kbps: u32) -> u64 {
    u64::from(video_kbps) * 1_500 + 150_000
}

/// Links `queue` to a new pad of `mux` on `pid` (mpegtsmux names pads by PID).
fn link_to_mux(queue: &gst::Element, mux: &gst::Element, pid: u16) -> Result<()> {
    let pad = mux
        .request_pad_simple(&format!("sink_{pid}"))
        .ok_or_else(|| crate::Error::pipeline(format!("mpegtsmux has no pad for PID {pid}")))?;
    let src = queue.static_pad("src").expect("a queue has a src pad");
    src.link(&pad)
        .map_err(|e| crate::Error::pipeline(format!("cannot link to PID {pid}: {e:?}")))?;
    Ok(())
}
