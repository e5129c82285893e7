use crate::error::Result;
use crate::uri::UdpEndpoint;
use gst::prelude::*;

/// `udpsink`: one datagram per buffer (1316 bytes, 7 TS packets, from the hub).
pub(super) fn element(ep: &UdpEndpoint, name: &str) -> Result<gst::Element> {
    let sink = super::element("udpsink", name)?;
    sink.set_property("host", &ep.host);
    sink.set_property("port", i32::from(ep.port));
    if let Some(ttl) = ep.ttl {
        sink.set_property("ttl-mc", i32::from(ttl));
        sink.set_property("ttl", i32::from(ttl));
    }
    if let Some(i) = &ep.iface {
        sink.set_property("multicast-iface", i);
    }
    if ep.buffer_size > 0 {
        sink.set_property("buffer-size", ep.buffer_size as i32);
    }
    Ok(sink)
}
