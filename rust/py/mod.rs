//! The Python binding `castway._castway`: thin classes over `Gateway` and `Route`. Every call
//! that may block (starting or stopping pipelines) releases the GIL; nothing here runs per
//! packet.

mod errors;
mod events;
mod picture;
mod spec;

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::gateway::Gateway;
use crate::route::Route;
use spec::{Spec, Uri};

#[pyclass(name = "Gateway", module = "castway._castway", frozen)]
struct PyGateway {
    inner: Gateway,
}

#[pymethods]
impl PyGateway {
    /// `event_history`: how many events the gateway's event log keeps (default 10000).
    #[new]
    #[pyo3(signature = (event_history=None))]
    fn new(event_history: Option<usize>) -> PyResult<Self> {
        let history = event_history.unwrap_or(crate::events::DEFAULT_CAPACITY);
        if !(1..=crate::events::MAX_CAPACITY).contains(&history) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "event_history must be 1..={}, not {history}",
                crate::events::MAX_CAPACITY
            )));
        }
        Ok(PyGateway {
            inner: Gateway::with_event_history(history)?,
        })
    }

    /// Blocks (without the GIL) up to `timeout` seconds for events numbered above `after`;
    /// returns them (at most `limit`), the number of the oldest event still kept, that of the
    /// latest, and whether the gateway is closed.
    #[pyo3(signature = (after, timeout, limit=1000))]
    fn wait_events<'py>(
        &self,
        py: Python<'py>,
        after: u64,
        timeout: f64,
        limit: usize,
    ) -> PyResult<(Bound<'py, PyList>, u64, u64, bool)> {
        events::wait_events(py, self.inner.events(), after, timeout, limit)
    }

    /// Adds a control-plane event (`route_created`, …) with text `fields` to the sequence;
    /// returns its number.
    #[pyo3(signature = (kind, fields=None))]
    fn emit(&self, kind: &str, fields: Option<&Bound<'_, PyDict>>) -> PyResult<u64> {
        events::emit(&self.inner, kind, fields)
    }

    /// Builds and starts a route from a spec dict (see `Spec`).
    fn add_route(&self, py: Python<'_>, spec: Spec) -> PyResult<PyRoute> {
        let spec = spec.into_route_spec()?;
        let route = py.allow_threads(|| self.inner.add_route(spec))?;
        Ok(PyRoute { inner: route })
    }

    /// Makes a running route match a new spec by difference; returns what changed.
    fn update_route<'py>(&self, py: Python<'py>, spec: Spec) -> PyResult<Bound<'py, PyAny>> {
        let spec = spec.into_route_spec()?;
        let (_, applied) = py.allow_threads(|| self.inner.update_route(spec))?;
        to_py(py, &applied)
    }

    fn route(&self, name: &str) -> PyResult<PyRoute> {
        Ok(PyRoute {
            inner: self.inner.route(name)?,
        })
    }

    fn route_names(&self) -> Vec<String> {
        self.inner.route_names()
    }

    fn remove_route(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        Ok(py.allow_threads(|| self.inner.remove_route(name))?)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let all = py.allow_threads(|| self.inner.stats());
        to_py(py, &all)
    }

    fn close(&self, py: Python<'_>) {
        py.allow_threads(|| self.inner.close());
    }

    /// Opens the shared SRT port on `address` (`[HOST]:PORT`); returns `HOST:PORT` it listens on.
    fn listen_srt(&self, py: Python<'_>, address: &str) -> PyResult<String> {
        let addr = py.allow_threads(|| self.inner.listen_srt(address))?;
        Ok(addr.to_string())
    }

    /// castway's live API keys for `srt-shared://?keys=1`: (SHA-256 hex of the secret, role).
    fn set_srt_keys(&self, keys: Vec<(String, String)>) {
        self.inner.set_srt_keys(&keys);
    }

    /// The shared SRT port's figures (None: not open).
    fn srt_port_stats<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.inner.srt_port_stats() {
            Some(s) => Ok(Some(to_py(py, &s)?)),
            None => Ok(None),
        }
    }
}

impl Drop for PyGateway {
    /// A gateway dropped without `close()` stops its routes without holding the GIL.
    fn drop(&mut self) {
        Python::with_gil(|py| py.allow_threads(|| self.inner.close()));
    }
}

#[pyclass(name = "Route", module = "castway._castway", frozen)]
struct PyRoute {
    inner: Arc<Route>,
}

#[pymethods]
impl PyRoute {
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    #[pyo3(signature = (uri, id=None))]
    fn add_output(&self, py: Python<'_>, uri: Uri, id: Option<&str>) -> PyResult<String> {
        Ok(py.allow_threads(|| self.inner.add_output(&uri.0, id))?)
    }

    fn remove_output(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        Ok(py.allow_threads(|| self.inner.remove_output(id))?)
    }

    #[pyo3(signature = (uri, id=None))]
    fn add_input(&self, py: Python<'_>, uri: Uri, id: Option<&str>) -> PyResult<String> {
        Ok(py.allow_threads(|| self.inner.add_input(&uri.0, id))?)
    }

    fn remove_input(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        Ok(py.allow_threads(|| self.inner.remove_input(id))?)
    }

    fn switch_to(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        Ok(py.allow_threads(|| self.inner.switch_to(id))?)
    }

    fn auto(&self, py: Python<'_>) {
        py.allow_threads(|| self.inner.auto());
    }

    /// Blocks (without the GIL) until a switch numbered above `after` happened; returns it, or
    /// None after `timeout` seconds or when the route stops.
    fn wait_switch<'py>(
        &self,
        py: Python<'py>,
        after: u64,
        timeout: f64,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if !timeout.is_finite() || timeout < 0.0 {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "timeout must be a non-negative number of seconds, not {timeout}"
            )));
        }
        let wait = std::time::Duration::from_secs_f64(timeout.min(1e6));
        let r = py.allow_threads(|| self.inner.wait_switch(after, wait));
        r.map(|r| to_py(py, &r)).transpose()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = py.allow_threads(|| self.inner.stats());
        to_py(py, &s)
    }

    /// The samples of the last `seconds` (one a second, the last 600 kept), oldest first.
    fn history<'py>(&self, py: Python<'py>, seconds: f64) -> PyResult<Bound<'py, PyAny>> {
        let h = py.allow_threads(|| self.inner.history(seconds))?;
        to_py(py, &h)
    }

    /// Blocks (without the GIL) until the route's state is `state`, at most `timeout` s.
    /// Ctrl-C (a signal) ends the wait within a second.
    fn wait_state(&self, py: Python<'_>, state: &str, timeout: f64) -> PyResult<()> {
        let wait = picture::seconds(timeout)?;
        picture::interruptible(py, |go_on| self.inner.wait_state_or(state, wait, go_on))
    }

    /// The current picture of the route's output (or of `input`), from its next keyframe.
    #[pyo3(signature = (input=None, format="jpeg", size=None, timeout=5.0))]
    fn snapshot<'py>(
        &self,
        py: Python<'py>,
        input: Option<&str>,
        format: &str,
        size: Option<(u32, u32)>,
        timeout: f64,
    ) -> PyResult<picture::PyPicture<'py>> {
        let settings = picture::settings(format, crate::tap::IMAGE_FORMATS, size, None)?;
        let wait = picture::seconds(timeout)?;
        let p = picture::interruptible(py, |go_on| {
            self.inner.snapshot_or(input, &settings, wait, go_on)
        })?;
        Ok(picture::picture(py, p))
    }

    /// Starts a decode branch of the route's output (or of `input`).
    #[pyo3(signature = (input=None, format="rgb", size=None, fps=None))]
    fn decoder(
        &self,
        py: Python<'_>,
        input: Option<&str>,
        format: &str,
        size: Option<(u32, u32)>,
        fps: Option<f64>,
    ) -> PyResult<picture::PyDecoder> {
        let settings = picture::settings(format, crate::tap::RAW_FORMATS, size, fps)?;
        let inner = py.allow_threads(|| self.inner.decode(input, &settings, false))?;
        Ok(picture::PyDecoder { inner })
    }

    /// Starts recording under `dir` (absolute): segments of `segment_ms` named by `path` (a
    /// pattern: strftime fields and `{route}`).
    #[pyo3(signature = (dir, path=None, segment_ms=None, format=None, queue_bytes=None,
                        min_free_bytes=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_recording(
        &self,
        py: Python<'_>,
        dir: std::path::PathBuf,
        path: Option<String>,
        segment_ms: Option<spec::Whole>,
        format: Option<String>,
        queue_bytes: Option<spec::Whole>,
        min_free_bytes: Option<spec::Whole>,
    ) -> PyResult<()> {
        // A number that does not fit in 64 bits (negative, huge) is refused at its field.
        let segment_ms = spec::whole(segment_ms, "recording.segment_ms")?;
        let queue_bytes = spec::whole(queue_bytes, "recording.queue_bytes")?;
        let min_free_bytes = spec::whole(min_free_bytes, "recording.min_free_bytes")?;
        let mut settings = crate::record::RecordSettings::new(dir);
        if let Some(p) = path {
            settings.pattern = p;
        }
        if let Some(ms) = segment_ms {
            settings.segment_ms = ms;
        }
        if let Some(f) = format {
            settings.format = f;
        }
        if let Some(q) = queue_bytes {
            settings.queue_bytes = q;
        }
        settings.min_free_bytes = min_free_bytes.unwrap_or(0);
        Ok(py.allow_threads(|| self.inner.start_recording(settings))?)
    }

    /// Sets the running recording's free-space floor (0: none).
    fn set_recording_floor(&self, py: Python<'_>, min_free_bytes: spec::Whole) -> PyResult<()> {
        let floor = spec::whole(Some(min_free_bytes), "recording.min_free_bytes")?.unwrap_or(0);
        Ok(py.allow_threads(|| self.inner.set_recording_floor(floor))?)
    }

    /// Pauses (`True`) or resumes (`False`) the recording.
    fn pause_recording(&self, py: Python<'_>, pause: bool) -> PyResult<()> {
        Ok(py.allow_threads(|| self.inner.pause_recording(pause))?)
    }

    /// Stops the recording once what it holds is written (at most 5 s).
    fn stop_recording(&self, py: Python<'_>) -> PyResult<()> {
        Ok(py.allow_threads(|| self.inner.stop_recording())?)
    }
}

/// A value of the core as Python sees it: its serde shape, structs as dicts by field name. The
/// stats, switch records and applied changes are defined once, in the core's types.
fn to_py<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    Ok(pythonize::pythonize(py, value)?)
}

/// Whether the GStreamer element factory `name` is installed here.
#[pyfunction]
fn element_available(name: &str) -> PyResult<bool> {
    gst::init().map_err(crate::Error::from)?;
    Ok(crate::elements::available(name))
}

/// Checks a recording's path pattern (raises naming what is wrong).
#[pyfunction]
fn check_recording_path(pattern: &str) -> PyResult<()> {
    Ok(crate::record::check_pattern(pattern)?)
}

#[pyfunction]
fn gstreamer_version() -> PyResult<String> {
    gst::init().map_err(crate::Error::from)?;
    Ok(crate::gstreamer_version())
}

/// Probes an SRT listener (`castway probe`): round trip, loss and jitter over `seconds` at
/// `bitrate` bit/s, and the latency and overhead the SRT Deployment Guide recommends.
#[pyfunction]
fn srt_probe<'py>(
    py: Python<'py>,
    uri: &str,
    seconds: f64,
    bitrate: u64,
) -> PyResult<Bound<'py, PyAny>> {
    let ep = match crate::uri::Endpoint::parse(uri, crate::uri::Role::Output)? {
        crate::uri::Endpoint::Srt(e) => e,
        _ => {
            return Err(crate::Error::InvalidUri {
                uri: crate::uri::redact(uri),
                reason: "the probe takes an srt:// URI".into(),
            }
            .into())
        }
    };
    // Before it connects: a time that cannot be a duration would panic there.
    if let Err((what, why)) = crate::srt::probe::check(&ep, seconds, bitrate) {
        return Err(match what {
            "uri" => crate::Error::InvalidUri {
                uri: crate::uri::redact(uri),
                reason: why,
            },
            _ => crate::Error::InvalidConfig(why).at(what),
        }
        .into());
    }
    let report = py
        .allow_threads(|| crate::srt::probe::probe(&ep, seconds, bitrate))
        .map_err(|why| crate::Error::Network(format!("SRT probe of {ep}: {why}")))?;
    to_py(py, &report)
}

#[pymodule]
fn _castway(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyGateway>()?;
    m.add_class::<PyRoute>()?;
    m.add_class::<picture::PyDecoder>()?;
    m.add_function(wrap_pyfunction!(element_available, m)?)?;
    m.add_function(wrap_pyfunction!(gstreamer_version, m)?)?;
    m.add_function(wrap_pyfunction!(srt_probe, m)?)?;
    m.add_function(wrap_pyfunction!(events::event_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(check_recording_path, m)?)?;
    spec::register(m)?;
    errors::register(m)?;
    Ok(())
}
