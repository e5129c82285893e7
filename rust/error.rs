//! The one error type of the crate. The Python binding maps each variant to its own exception
//! class (see `py/errors.rs`); nothing here knows about Python.

use std::fmt;

/// Everything that can go wrong in castway's core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An endpoint URI that does not parse or names an impossible combination.
    /// `uri` is already redacted (no passphrase).
    #[error("invalid URI `{uri}`: {reason}")]
    InvalidUri { uri: String, reason: String },

    /// A route or gateway setting that is not valid (not tied to one URI).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A listening endpoint whose local address is taken by another socket.
    #[error("{endpoint}: {addr} is already in use")]
    AddressInUse { endpoint: String, addr: String },

    /// A route, input or output that does not exist.
    #[error("{0} not found")]
    NotFound(String),

    /// A route, input or output whose name is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),

    /// A GStreamer element that is not installed.
    #[error("GStreamer element `{element}` is missing (install the Debian package `{package}`)")]
    MissingElement { element: String, package: String },

    /// GStreamer failed to build or run a pipeline.
    #[error("pipeline error: {0}")]
    Pipeline(String),

    /// A network peer that could not be reached, refused the connection or dropped it (the
    /// SRT probe's: what went wrong is the message, no prefix).
    #[error("{0}")]
    Network(String),

    /// The gateway or route was already closed.
    #[error("{0} is closed")]
    Closed(String),

    /// Something waited for did not happen in time (a picture, a state).
    #[error("timed out: {0}")]
    Timeout(String),

    /// Another error, at a field of a route spec (`outputs[2].uri`, `inputs[0].id`): what is
    /// wrong is `source`, of its own kind.
    #[error("{field}: {source}")]
    At { field: String, source: Box<Error> },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The most of a URI an error shows. A longer one (up to 4 KB as the control server takes
/// them) is cut short: the reason names the part that is wrong, and an error must fit gRPC's
/// 8 KB of metadata twice (its message, and again in its status details).
const SHOWN_URI_CHARS: usize = 200;

impl Error {
    pub(crate) fn uri(uri: impl fmt::Display, reason: impl Into<String>) -> Self {
        let uri = uri.to_string();
        let chars = uri.chars().count();
        let uri = if chars > SHOWN_URI_CHARS {
            let head: String = uri.chars().take(SHOWN_URI_CHARS).collect();
            format!("{head}… ({chars} characters)")
        } else {
            uri
        };
        Error::InvalidUri {
            uri,
            reason: reason.into(),
        }
    }

    pub(crate) fn pipeline(what: impl fmt::Display) -> Self {
        Error::Pipeline(what.to_string())
    }

    /// This error, at `field` of a route spec.
    pub(crate) fn at(self, field: impl Into<String>) -> Self {
        Error::At {
            field: field.into(),
            source: Box::new(self),
        }
    }
}

impl From<gst::glib::Error> for Error {
    fn from(e: gst::glib::Error) -> Self {
        Error::pipeline(e)
    }
}

impl From<gst::glib::BoolError> for Error {
    fn from(e: gst::glib::BoolError) -> Self {
        Error::pipeline(e)
    }
}

impl From<gst::StateChangeError> for Error {
    fn from(e: gst::StateChangeError) -> Self {
        Error::pipeline(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_uri_is_cut_short_in_its_error() {
        let long = format!("srt://:9000?streamid={}", "x".repeat(4000));
        let e = Error::uri(&long, "`latency=999999` is above 60000 ms").to_string();
        assert!(e.len() < 300, "{e}");
        assert!(
            e.starts_with("invalid URI `srt://:9000?streamid=xxx"),
            "{e}"
        );
        assert!(e.contains("… (4021 characters)`: `latency=999999`"), "{e}");
        let short = Error::uri("udp://:1", "why").to_string();
        assert_eq!(short, "invalid URI `udp://:1`: why");
    }
}
