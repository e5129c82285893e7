use super::element;
use crate::elements::{add_chain, available};
use crate::error::Result;
use crate::uri::TestEndpoint;
use gst::prelude::*;

/// A live test signal: `videotestsrc ! x264enc ! h264parse` and `audiotestsrc ! avenc_aac`,
/// muxed by `mpegtsmux` into 7-packet buffers. Adds it all to `pipeline`; returns the mux.
pub(super) fn build(
    ep: &TestEndpoint,
    name: &str,
    pipeline: &gst::Pipeline,
) -> Result<gst::Element> {
    let mux = element("mpegtsmux", name)?;
    mux.set_property("alignment", 7i32);
    // mpegtsmux writes a PCR on the first video packet after `pcr-interval`: at its default
    // (40 ms) that is every other frame at 30 fps, 67 ms apart, over the 40 ms DVB allows
    // (TR 101 290 2.3a). At 20 ms every frame carries one.
    mux.set_property("pcr-interval", 1_800u32);
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
    link_to_mux(&vq, &mux, ep.video_pid)?;

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
        link_to_mux(&aq, &mux, ep.audio_pid)?;
    }
    Ok(mux)
}

/// Links `queue` to a new pad of `mux`, on `pid` if one is given (mpegtsmux names pads by PID).
fn link_to_mux(queue: &gst::Element, mux: &gst::Element, pid: Option<u16>) -> Result<()> {
    match pid {
        Some(pid) => {
            let pad = mux
                .request_pad_simple(&format!("sink_{pid}"))
                .ok_or_else(|| {
                    crate::Error::pipeline(format!("mpegtsmux has no pad for PID {pid}"))
                })?;
            let src = queue.static_pad("src").expect("a queue has a src pad");
            src.link(&pad)
                .map_err(|e| crate::Error::pipeline(format!("cannot link to PID {pid}: {e:?}")))?;
        }
        None => queue.link(mux)?,
    }
    Ok(())
}
