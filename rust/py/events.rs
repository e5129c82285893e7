//! The gateway's event log in Python: waiting for events (without the GIL), and the control
//! plane's events added to the same sequence. An event is a dict of the fields it sets
//! (`seq`, `at`, `kind`, then those of `events::Event::fields`).

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::events::{Event, EventLog, Kind, Value};
use crate::gateway::Gateway;

/// The most events one call returns.
const MAX_BATCH: usize = 10_000;

fn event_dict<'py>(py: Python<'py>, e: &Event) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("seq", e.seq)?;
    d.set_item("at", e.at_unix)?;
    d.set_item("kind", e.kind.as_str())?;
    for (name, value) in e.fields() {
        match value {
            Value::Text(s) => d.set_item(name, s)?,
            Value::Flag(b) => d.set_item(name, b)?,
        }
    }
    Ok(d)
}

/// A timeout in seconds from Python: finite and not negative.
fn seconds(timeout: f64) -> PyResult<Duration> {
    if !timeout.is_finite() || timeout < 0.0 {
        return Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, not {timeout}"
        )));
    }
    Ok(Duration::from_secs_f64(timeout.min(1e6)))
}

/// `Gateway.wait_events`: the events numbered above `after` (at most `limit`), waiting up to
/// `timeout` seconds for one without the GIL; with the number of the oldest event still kept,
/// that of the latest, and whether the log is closed (the gateway closed: waits are over).
pub(super) fn wait_events<'py>(
    py: Python<'py>,
    log: &EventLog,
    after: u64,
    timeout: f64,
    limit: usize,
) -> PyResult<(Bound<'py, PyList>, u64, u64, bool)> {
    let wait = seconds(timeout)?;
    let limit = limit.clamp(1, MAX_BATCH);
    let batch = py.allow_threads(|| log.wait(after, wait, limit));
    let list = PyList::empty(py);
    for e in &batch.events {
        list.append(event_dict(py, e)?)?;
    }
    Ok((list, batch.oldest, batch.latest, batch.closed))
}

/// `Gateway.emit`: an event of the control plane (`route_created`, …, `key_revoked`) with the
/// given text fields; returns its number.
pub(super) fn emit(
    gateway: &Gateway,
    kind: &str,
    fields: Option<&Bound<'_, PyDict>>,
) -> PyResult<u64> {
    let known = || {
        Kind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kind = Kind::parse(kind).ok_or_else(|| {
        PyValueError::new_err(format!("unknown event kind {kind:?} (known: {})", known()))
    })?;
    let mut event = Event::new(kind);
    for (name, value) in fields.into_iter().flat_map(|d| d.iter()) {
        let name: String = name.extract()?;
        if value.is_none() {
            continue;
        }
        let text: String = value.extract()?;
        if !event.set(&name, text) {
            return Err(PyValueError::new_err(format!(
                "an event has no text field {name:?}"
            )));
        }
    }
    Ok(gateway.emit(event)?)
}

/// Every event kind, in the order of the docs.
#[pyfunction]
pub(super) fn event_kinds() -> Vec<&'static str> {
    Kind::ALL.iter().map(|k| k.as_str()).collect()
}
