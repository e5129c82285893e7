//! Outputs: file outputs are pipelines, `appsrc ! filesink`, fed by the hub; UDP and SRT
//! outputs are sockets the hub sends on directly (`udp.rs`, `srt.rs`).

mod file;
pub mod srt;
pub mod udp;

use gst::prelude::*;

use crate::elements::{add_chain, make};
use crate::error::Result;
use crate::uri::Endpoint;

/// A built (not yet started) output pipeline.
pub struct Sink {
    pub pipeline: gst::Pipeline,
    pub appsrc: gst_app::AppSrc,
}

/// Builds the pipeline for an output endpoint. `queue_bytes` bounds what the output may hold
/// back before the hub drops for it.
pub fn build(endpoint: &Endpoint, name: &str, queue_bytes: u64) -> Result<Sink> {
    let pipeline = gst::Pipeline::with_name(name);
    let appsrc = gst_app::AppSrc::builder()
        .name(format!("{name}-hub"))
        .caps(&crate::elements::ts_caps())
        .is_live(true)
        .format(gst::Format::Time)
        .stream_type(gst_app::AppStreamType::Stream)
        .max_bytes(queue_bytes)
        .block(false)
        .build();
    // Not leaky: when the queue is full, the appsrc still takes the one buffer that found it
    // full and reports enough-data, and the hub drops (and counts) from then until need-data.
    let sink = match endpoint {
        Endpoint::Srt(_) => unreachable!("SRT outputs are sockets: srt::SrtOutput"),
        Endpoint::Udp(_) => unreachable!("UDP outputs are sockets: udp::UdpSender"),
        Endpoint::File(e) => file::element(e, name)?,
        Endpoint::Test(_) => unreachable!("rejected by Endpoint::parse for outputs"),
    };
    // Output what arrives when it arrives: the input already paced it.
    sink.set_property("sync", false);
    sink.set_property("async", false);
    add_chain(&pipeline, &[appsrc.clone().upcast(), sink])?;
    Ok(Sink { pipeline, appsrc })
}

fn element(factory: &str, pipeline_name: &str) -> Result<gst::Element> {
    make(factory, &format!("{pipeline_name}-{factory}"))
}
