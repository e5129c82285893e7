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

    /// The gateway or route was already closed.
    #[error("{0} is closed")]
    Closed(String),

    /// Another error, at a field of a route spec (`outputs[2].uri`, `inputs[0].id`): what is
    /// wrong is `source`, of its own kind.
    #[error("{field}: {source}")]
    At { field: String, source: Box<Error> },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn uri(uri: impl fmt::Display, reason: impl Into<String>) -> Self {
        Error::InvalidUri {
            uri: uri.to_string(),
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
