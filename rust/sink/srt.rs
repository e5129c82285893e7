use crate::error::Result;
use crate::srt::{track_callers, Callers};
use crate::uri::{SrtEndpoint, SrtMode};
use gst::prelude::*;

/// `srtsink`: each buffer (7 TS packets from the hub) goes out as one SRT message. A listener
/// serves every caller that connects; until one does, data is discarded rather than queued.
pub(super) fn element(ep: &SrtEndpoint, name: &str) -> Result<(gst::Element, Option<Callers>)> {
    let sink = super::element("srtsink", name)?;
    crate::srt::configure(&sink, ep);
    sink.set_property("wait-for-connection", false);
    let callers = (ep.mode == SrtMode::Listener).then(|| track_callers(&sink));
    Ok((sink, callers))
}
