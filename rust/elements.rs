//! Making GStreamer elements with errors that say which Debian package is missing.

use crate::error::{Error, Result};

/// The Debian package that ships each element castway uses.
fn package_of(factory: &str) -> &'static str {
    match factory {
        "srtsrc" | "srtsink" | "tsparse" | "mpegtsmux" | "openh264enc" => {
            "gstreamer1.0-plugins-bad"
        }
        "udpsrc" | "udpsink" => "gstreamer1.0-plugins-good",
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "avenc_aac" => "gstreamer1.0-libav",
        "h264parse" | "aacparse" => "gstreamer1.0-plugins-bad / gstreamer1.0-plugins-good",
        _ => "gstreamer1.0-plugins-base",
    }
}

/// Makes an element of `factory`, named `name`.
pub fn make(factory: &str, name: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|_| Error::MissingElement {
            element: factory.to_string(),
            package: package_of(factory).to_string(),
        })
}

/// The caps of what the hub hands on: MPEG-TS in whole 188-byte packets.
pub fn ts_caps() -> gst::Caps {
    gst::Caps::builder("video/mpegts")
        .field("systemstream", true)
        .field("packetsize", 188i32)
        .build()
}

/// Whether an element factory is installed.
pub fn available(factory: &str) -> bool {
    gst::ElementFactory::find(factory).is_some()
}

/// Adds `elements` to `pipeline`, links them in order and returns the last.
pub fn add_chain(pipeline: &gst::Pipeline, elements: &[gst::Element]) -> Result<gst::Element> {
    use gst::prelude::*;
    pipeline.add_many(elements)?;
    gst::Element::link_many(elements)?;
    elements
        .last()
        .cloned()
        .ok_or_else(|| crate::error::Error::pipeline("empty element chain"))
}
