//! Input pipelines: one per input, `<protocol source> ! appsink`, feeding the hub.

mod file;
mod srt;
mod test;
mod udp;

use std::sync::Arc;

use gst::prelude::*;

use crate::elements::{add_chain, make};
use crate::error::Result;
use crate::hub::{Feed, Hub};
use crate::uri::Endpoint;

/// A built (not yet started) input pipeline.
pub struct Source {
    pub pipeline: gst::Pipeline,
    /// The srtsrc, for its statistics.
    pub srt: Option<gst::Element>,
}

/// Builds the pipeline for an input endpoint; its buffers go to `hub` through `feed`.
pub fn build(endpoint: &Endpoint, name: &str, hub: Arc<Hub>, feed: Arc<Feed>) -> Result<Source> {
    let pipeline = gst::Pipeline::with_name(name);
    let (tail, srt, paced) = match endpoint {
        Endpoint::Srt(e) => {
            let src = srt::element(e, name)?;
            pipeline.add(&src)?;
            (src.clone(), Some(src), false)
        }
        Endpoint::Udp(e) => (add_chain(&pipeline, &udp::elements(e, name)?)?, None, false),
        Endpoint::File(e) => (add_chain(&pipeline, &file::elements(e, name)?)?, None, true),
        Endpoint::Test(e) => (test::build(e, name, &pipeline)?, None, false),
    };
    let sink = gst_app::AppSink::builder()
        .name(format!("{name}-hub"))
        // A file is paced by the clock from its PCR; live sources pace themselves.
        .sync(paced)
        .max_buffers(if paced { 8 } else { 0 })
        .wait_on_eos(false)
        // PLAYING as soon as the source is set up, not at the first buffer: the route tells
        // "waiting for data" from "still starting" by it.
        .async_(false)
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    let buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
                    drop(sample);
                    hub.ingest(&feed, buffer);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        )
        .build();
    pipeline.add(&sink)?;
    tail.link(&sink)?;
    Ok(Source { pipeline, srt })
}

/// Makes the element, naming it after the pipeline.
fn element(factory: &str, pipeline_name: &str) -> Result<gst::Element> {
    make(factory, &format!("{pipeline_name}-{factory}"))
}
