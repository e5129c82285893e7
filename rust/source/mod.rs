//! Input pipelines: one per input, `<protocol source> [! clocksync] ! fakesink`, with the hub
//! taking every buffer in a probe on the fakesink's pad. UDP and SRT inputs have no pipeline:
//! their sockets are read on castway's I/O threads (`udp.rs`, `srt.rs`).

mod file;
pub mod srt;
mod test;
pub mod udp;

use std::sync::Arc;

use gst::prelude::*;

use crate::elements::{add_chain, make};
use crate::error::Result;
use crate::hub::{Feed, Hub};
use crate::uri::Endpoint;

/// A built (not yet started) input pipeline.
pub struct Source {
    pub pipeline: gst::Pipeline,
}

/// Builds the pipeline for an input endpoint; its buffers go to `hub` through `feed`.
pub fn build(endpoint: &Endpoint, name: &str, hub: Arc<Hub>, feed: Arc<Feed>) -> Result<Source> {
    let pipeline = gst::Pipeline::with_name(name);
    let (tail, paced) = match endpoint {
        Endpoint::Srt(_) => unreachable!("SRT inputs are sockets: srt::SrtInput"),
        Endpoint::Udp(_) => unreachable!("UDP inputs are sockets: udp::UdpReceiver"),
        Endpoint::File(e) => (add_chain(&pipeline, &file::elements(e, name)?)?, true),
        Endpoint::Test(e) => (test::build(e, name, &pipeline)?, false),
    };
    // A file is paced by the clock from its PCR; live sources pace themselves.
    let tail = if paced {
        let clocksync = element("clocksync", name)?;
        pipeline.add(&clocksync)?;
        tail.link(&clocksync)?;
        clocksync
    } else {
        tail
    };
    let sink = element("fakesink", name)?;
    // PLAYING as soon as the source is set up, not at the first buffer: the route tells
    // "waiting for data" from "still starting" by it.
    sink.set_property("async", false);
    sink.set_property("sync", false);
    sink.set_property("enable-last-sample", false);
    pipeline.add(&sink)?;
    tail.link(&sink)?;
    // The hub takes each buffer in a probe on the sink's pad, on the source's streaming thread,
    // and the sink never sees it: no sample, no queue, no extra thread per buffer.
    let pad = sink.static_pad("sink").expect("fakesink has a sink pad");
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            match info.data.take() {
                Some(gst::PadProbeData::Buffer(buffer)) => hub.ingest(&feed, buffer),
                Some(gst::PadProbeData::BufferList(list)) => {
                    for buffer in list.iter_owned() {
                        hub.ingest(&feed, buffer);
                    }
                }
                other => {
                    info.data = other;
                    return gst::PadProbeReturn::Ok;
                }
            }
            // We took the buffer (and passed it on): handled, not dropped, so GStreamer does not
            // unref it a second time.
            gst::PadProbeReturn::Handled
        },
    );
    Ok(Source { pipeline })
}

/// Makes the element, naming it after the pipeline.
fn element(factory: &str, pipeline_name: &str) -> Result<gst::Element> {
    make(factory, &format!("{pipeline_name}-{factory}"))
}
