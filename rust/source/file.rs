use super::element;
use crate::error::{Error, Result};
use crate::uri::FileEndpoint;
use gst::prelude::*;

/// `filesrc ! tsparse`: tsparse aligns to 7-packet buffers and timestamps them from the PCR,
/// so the clocksync behind them releases them at real-time pace.
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
    parse.set_property("alignment", 7u32);
    Ok(vec![src, parse])
}
