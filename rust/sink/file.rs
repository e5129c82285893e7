use crate::error::{Error, Result};
use crate::uri::FileEndpoint;
use gst::prelude::*;

/// `filesink`: the TS as received. The directory must exist.
pub(super) fn element(ep: &FileEndpoint, name: &str) -> Result<gst::Element> {
    match ep.path.parent() {
        Some(dir) if dir.is_dir() => {}
        _ => {
            return Err(Error::NotFound(format!(
                "output directory of `{}`",
                ep.path.display()
            )))
        }
    }
    let sink = super::element("filesink", name)?;
    sink.set_property("location", ep.path.to_string_lossy().as_ref());
    Ok(sink)
}
