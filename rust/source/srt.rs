use crate::error::Result;
use crate::uri::{SrtEndpoint, SrtMode};
use gst::prelude::*;

/// `srtsrc`: emits the payload of each SRT message, byte for byte.
pub(super) fn element(ep: &SrtEndpoint, name: &str) -> Result<gst::Element> {
    let src = super::element("srtsrc", name)?;
    crate::srt::configure(&src, ep);
    // A listener input outlives its callers: when one leaves, wait for the next.
    if ep.mode == SrtMode::Listener {
        src.set_property("keep-listening", true);
    }
    Ok(src)
}
