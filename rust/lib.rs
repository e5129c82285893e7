//! castway's media core: endpoint URIs, input and output pipelines on GStreamer, the fan-out hub
//! and the route graph. Free of PyO3 (the `py` module, behind the `python` feature, binds it).

pub mod elements;
pub mod error;
pub mod graph;
pub mod hub;
pub mod sink;
pub mod source;
pub mod srt;
pub mod stats;
pub mod switch;
pub mod ts;
pub mod uri;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
pub use graph::{EndpointStats, Gateway, OutputSpec, Route, RouteSpec, RouteStats};

/// The GStreamer version linked at run time, e.g. `1.22.0`.
pub fn gstreamer_version() -> String {
    let (major, minor, micro, _) = gst::version();
    format!("{major}.{minor}.{micro}")
}
