use super::element;
use crate::error::{Error, Result};
use crate::uri::FileEndpoint;
use gst::prelude::*;

/// `filesrc ! tsparse`: tsparse cuts whole packets and timestamps them from the PCR, so the
/// clocksync behind it releases them at real-time pace. Its `alignment` stays 0: with 7 it
/// pads with null packets (seen mid-file, not only at EOS), and the hub cuts buffers to 7
/// packets itself.
pub(super) fn elements(ep: &FileEndpoint, name: &str) -> Result<Vec<gst::Element>> {
    if !ep.path.is_file() {
        return Err(Error::NotFound(format!(
            "input file `{}`",
            ep.path.display()
        )));
    }
    let src = element("filesrc", name)?;
    src.set_property("location", ep.path.to_string_lossy().as_ref());
    let parse = element("tsparse", name)?;
    parse.set_property("set-timestamps", true);
    Ok(vec![src, parse])
}
