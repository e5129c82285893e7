//! One Python exception class per `Error` variant, all under `CastwayError`; re-exported by
//! `castway.errors`. This is the only place errors become Python objects.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::error::Error;

create_exception!(
    castway.errors,
    CastwayError,
    PyException,
    "Base class of castway's errors."
);
create_exception!(
    castway.errors,
    InvalidUriError,
    CastwayError,
    "An endpoint URI is malformed or impossible."
);
create_exception!(
    castway.errors,
    ConfigError,
    CastwayError,
    "A route or gateway setting is invalid."
);
create_exception!(
    castway.errors,
    AddressInUseError,
    CastwayError,
    "A listening address is already taken."
);
create_exception!(
    castway.errors,
    NotFoundError,
    CastwayError,
    "No such route, output or file."
);
create_exception!(
    castway.errors,
    AlreadyExistsError,
    CastwayError,
    "The name is already taken."
);
create_exception!(
    castway.errors,
    MissingElementError,
    CastwayError,
    "A GStreamer element is not installed."
);
create_exception!(
    castway.errors,
    PipelineError,
    CastwayError,
    "GStreamer failed to build or run a pipeline."
);
create_exception!(
    castway.errors,
    TimedOutError,
    CastwayError,
    "Something waited for (a picture, a route state) did not happen in time."
);
create_exception!(
    castway.errors,
    NetworkError,
    CastwayError,
    "A network peer could not be reached, refused the connection or dropped it."
);
create_exception!(
    castway.errors,
    ClosedError,
    CastwayError,
    "The gateway or route is closed."
);

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        let msg = e.to_string();
        if let Error::At { field, source } = e {
            // The exception of what is wrong, saying where: `.field` is the path in the spec
            // (`outputs[2].uri`), `.reason` the message without it.
            let reason = source.to_string();
            let err = PyErr::from(*source);
            return Python::with_gil(|py| {
                let value = err.value(py);
                let _ = value.setattr("field", field);
                let _ = value.setattr("reason", reason);
                let _ = value.setattr("args", (msg,));
                err
            });
        }
        match e {
            Error::InvalidUri { .. } => InvalidUriError::new_err(msg),
            Error::InvalidConfig(_) => ConfigError::new_err(msg),
            Error::AddressInUse { .. } => AddressInUseError::new_err(msg),
            Error::NotFound(_) => NotFoundError::new_err(msg),
            Error::AlreadyExists(_) => AlreadyExistsError::new_err(msg),
            Error::MissingElement { .. } => MissingElementError::new_err(msg),
            Error::Pipeline(_) => PipelineError::new_err(msg),
            Error::Network(_) => NetworkError::new_err(msg),
            Error::Closed(_) => ClosedError::new_err(msg),
            Error::Timeout(_) => TimedOutError::new_err(msg),
            Error::At { .. } => unreachable!("handled above"),
        }
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CastwayError", py.get_type::<CastwayError>())?;
    m.add("InvalidUriError", py.get_type::<InvalidUriError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("AddressInUseError", py.get_type::<AddressInUseError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("AlreadyExistsError", py.get_type::<AlreadyExistsError>())?;
    m.add("MissingElementError", py.get_type::<MissingElementError>())?;
    m.add("PipelineError", py.get_type::<PipelineError>())?;
    m.add("NetworkError", py.get_type::<NetworkError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    m.add("TimedOutError", py.get_type::<TimedOutError>())?;
    Ok(())
}
