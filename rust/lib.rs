//! castway's media core: endpoint URIs, input and output pipelines on GStreamer, the fan-out hub,
//! routes and the gateway that holds them. Free of PyO3 (the `py` module, behind the `python`
//! feature, binds it).

pub mod elements;
pub mod error;
pub mod events;
pub mod gateway;
pub mod hub;
pub mod io;
pub mod limits;
mod pipeline;
pub mod record;
pub mod route;
pub mod server;
pub mod sink;
pub mod source;
pub mod srt;
pub mod stats;
pub mod switch;
pub mod tap;
pub mod ts;
pub mod uri;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
pub use events::{EventLog, Kind as EventKind};
pub use gateway::Gateway;
pub use route::{EndpointStats, OutputSpec, Route, RouteSpec, RouteStats};

/// The GStreamer version linked at run time, e.g. `1.22.0`.
pub fn gstreamer_version() -> String {
    let (major, minor, micro, _) = gst::version();
    format!("{major}.{minor}.{micro}")
}
