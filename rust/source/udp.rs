use super::element;
use crate::error::Result;
use crate::uri::UdpEndpoint;
use gst::prelude::*;

/// `udpsrc`: one buffer per datagram. A multicast group is joined (on `iface` if given).
pub(super) fn elements(ep: &UdpEndpoint, name: &str) -> Result<Vec<gst::Element>> {
    let src = element("udpsrc", name)?;
    src.set_property("address", ep.bind_host());
    src.set_property("port", i32::from(ep.port));
    // A unicast port is ours alone (so a clash is an error, not two half-fed inputs); a
    // multicast group is shared with whoever else listens to it.
    src.set_property("reuse", ep.is_multicast());
    src.set_property("retrieve-sender-address", false);
    if let Some(i) = &ep.iface {
        src.set_property("multicast-iface", i);
    }
    if ep.buffer_size > 0 {
        src.set_property("buffer-size", ep.buffer_size as i32);
    }
    Ok(vec![src])
}
