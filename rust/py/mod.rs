//! The Python binding `castway._castway`: thin classes over `Gateway` and `Route`. Every call
//! that may block (starting or stopping pipelines) releases the GIL; nothing here runs per
//! packet.

mod errors;

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::gateway::Gateway;
use crate::route::{
    EndpointStats, InputSpec, OutputSpec, Route, RouteSpec, RouteStats, SwitchRecord, SwitchSpec,
};
use crate::uri::{Endpoint, Role};

#[pyclass(name = "Gateway", module = "castway._castway", frozen)]
struct PyGateway {
    inner: Gateway,
}

#[pymethods]
impl PyGateway {
    #[new]
    fn new() -> PyResult<Self> {
        Ok(PyGateway {
            inner: Gateway::new()?,
        })
    }

    /// Builds and starts a route from a spec dict (see `Spec`).
    fn add_route(&self, py: Python<'_>, spec: Spec) -> PyResult<PyRoute> {
        let spec = spec.into_route_spec();
        let route = py.allow_threads(|| self.inner.add_route(spec))?;
        Ok(PyRoute { inner: route })
    }

    /// Makes a running route match a new spec by difference; returns what changed.
    fn update_route<'py>(&self, py: Python<'py>, spec: Spec) -> PyResult<Bound<'py, PyDict>> {
        let spec = spec.into_route_spec();
        let (_, a) = py.allow_threads(|| self.inner.update_route(spec))?;
        let d = PyDict::new(py);
        d.set_item("inputs_added", &a.inputs_added)?;
        d.set_item("inputs_removed", &a.inputs_removed)?;
        d.set_item("outputs_added", &a.outputs_added)?;
        d.set_item("outputs_removed", &a.outputs_removed)?;
        d.set_item("reordered", a.reordered)?;
        d.set_item("settings", a.settings)?;
        d.set_item("restarted", a.restarted)?;
        Ok(d)
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

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let all = py.allow_threads(|| self.inner.stats());
        let list = PyList::empty(py);
        for r in &all {
            list.append(route_stats(py, r)?)?;
        }
        Ok(list)
    }

    fn close(&self, py: Python<'_>) {
        py.allow_threads(|| self.inner.close());
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
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        if !timeout.is_finite() || timeout < 0.0 {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "timeout must be a non-negative number of seconds, not {timeout}"
            )));
        }
        let wait = std::time::Duration::from_secs_f64(timeout.min(1e6));
        let r = py.allow_threads(|| self.inner.wait_switch(after, wait));
        r.map(|r| switch_record(py, &r)).transpose()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.allow_threads(|| self.inner.stats());
        route_stats(py, &s)
    }
}

fn switch_record<'py>(py: Python<'py>, r: &SwitchRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("seq", r.seq)?;
    d.set_item("at", r.at_unix)?;
    d.set_item("from", &r.from)?;
    d.set_item("to", &r.to)?;
    d.set_item("reason", r.reason)?;
    Ok(d)
}

fn route_stats<'py>(py: Python<'py>, r: &RouteStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &r.name)?;
    d.set_item("state", r.state)?;
    d.set_item("uptime_s", r.uptime_s)?;
    d.set_item("active_input", &r.active_input)?;
    let inputs = PyList::empty(py);
    for e in &r.inputs {
        inputs.append(endpoint_stats(py, e, Role::Input)?)?;
    }
    let outputs = PyList::empty(py);
    for e in &r.outputs {
        outputs.append(endpoint_stats(py, e, Role::Output)?)?;
    }
    d.set_item("inputs", inputs)?;
    d.set_item("outputs", outputs)?;
    let sw = &r.switch;
    let s = PyDict::new(py);
    s.set_item("active", &sw.active)?;
    s.set_item("pending", &sw.pending)?;
    s.set_item("locked", &sw.locked)?;
    s.set_item("loss_timeout_ms", sw.loss_timeout_ms)?;
    s.set_item("failback_after_ms", sw.failback_after_ms)?;
    s.set_item("slate", sw.slate)?;
    s.set_item("cuts", sw.cuts)?;
    s.set_item("held_back_packets", sw.held_back_packets)?;
    s.set_item("slate_packets", sw.slate_packets)?;
    let history = PyList::empty(py);
    for rec in &sw.history {
        history.append(switch_record(py, rec)?)?;
    }
    s.set_item("history", history)?;
    s.set_item("by_reason", &sw.by_reason)?;
    d.set_item("switch", s)?;
    Ok(d)
}

fn endpoint_stats<'py>(
    py: Python<'py>,
    e: &EndpointStats,
    role: Role,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", &e.id)?;
    d.set_item("uri", &e.uri)?;
    d.set_item("kind", e.kind)?;
    d.set_item("state", e.state)?;
    if role == Role::Input {
        d.set_item("active", e.active)?;
        d.set_item("healthy", e.healthy)?;
        d.set_item("standby", e.standby)?;
        d.set_item("idle_ms", e.idle_ms)?;
        d.set_item("off_air_packets", e.counters.off_air)?;
        d.set_item("held_back_packets", e.counters.held_back)?;
        d.set_item("analysis", pythonize::pythonize(py, &e.analysis)?)?;
    }
    d.set_item("bytes", e.counters.bytes)?;
    d.set_item("packets", e.counters.packets)?;
    d.set_item("bitrate_bps", e.counters.bitrate_bps)?;
    d.set_item("drops", e.counters.drops)?;
    d.set_item("reconnects", e.reconnects)?;
    d.set_item("retry_in_ms", e.retry_in_ms)?;
    d.set_item("last_error", &e.last_error)?;
    match &e.srt {
        None => d.set_item("srt", py.None())?,
        Some((link, callers)) => {
            let s = PyDict::new(py);
            s.set_item("rtt_ms", link.rtt_ms)?;
            s.set_item("loss", link.loss)?;
            s.set_item("retransmissions", link.retransmissions)?;
            s.set_item("dropped", link.dropped)?;
            s.set_item("bandwidth_mbps", link.bandwidth_mbps)?;
            s.set_item("latency_ms", link.latency_ms)?;
            let list = PyList::empty(py);
            for c in callers {
                let cd = PyDict::new(py);
                cd.set_item("address", &c.address)?;
                cd.set_item("rtt_ms", c.link.rtt_ms)?;
                cd.set_item("loss", c.link.loss)?;
                cd.set_item("retransmissions", c.link.retransmissions)?;
                cd.set_item("dropped", c.link.dropped)?;
                cd.set_item("latency_ms", c.link.latency_ms)?;
                list.append(cd)?;
            }
            s.set_item("callers", list)?;
            d.set_item("srt", s)?;
        }
    }
    Ok(d)
}

/// The role a binding call names: "input" or "output".
fn parse_role(role: &str) -> PyResult<Role> {
    match role {
        "input" => Ok(Role::Input),
        "output" => Ok(Role::Output),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "role must be 'input' or 'output', not {other:?}"
        ))),
    }
}

/// A URI as Python hands it over. Text Python cannot encode (a lone surrogate, as
/// `errors="surrogateescape"` makes from bytes that are not UTF-8) is a bad URI, said as such.
struct Uri(String);

impl<'py> FromPyObject<'py> for Uri {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        let text = ob.downcast::<PyString>()?;
        match text.to_str() {
            Ok(s) => Ok(Uri(s.to_owned())),
            Err(_) => {
                // Shown with the surrogate as U+FFFD, and redacted like any URI in an error.
                let shown = crate::uri::redact(&text.to_string_lossy());
                Err(crate::Error::uri(
                    shown,
                    "it is not valid Unicode (a lone surrogate, shown as \u{fffd}, left by \
                     decoding bytes that were not UTF-8); URIs are UTF-8 text",
                )
                .into())
            }
        }
    }
}

/// Parses a URI as `role` ("input" or "output") and returns its canonical, redacted form;
/// raises InvalidUriError naming the bad part. Used by the CLI to fail before anything starts.
#[pyfunction]
fn check_uri(uri: Uri, role: &str) -> PyResult<String> {
    let uri = uri.0.as_str();
    let role = parse_role(role)?;
    Ok(match role {
        Role::Input => Endpoint::parse_input(uri)?.0.to_string(),
        Role::Output => Endpoint::parse(uri, role)?.to_string(),
    })
}

/// Checks a route spec dict without starting anything.
#[pyfunction]
fn check_route(spec: Spec) -> PyResult<()> {
    Ok(Route::check(&spec.into_route_spec())?)
}

/// The local address an endpoint binds for itself alone (a listener's port), as
/// `(host, port)`; None when it binds nothing exclusively.
#[pyfunction]
fn listen_address(uri: Uri, role: &str) -> PyResult<Option<(String, u16)>> {
    let uri = uri.0.as_str();
    let role = parse_role(role)?;
    let endpoint = match role {
        Role::Input => Endpoint::parse_input(uri)?.0,
        Role::Output => Endpoint::parse(uri, role)?,
    };
    Ok(endpoint.exclusive_bind(role))
}

/// A route spec as Python hands it over: a dict with `name`, `inputs` and `outputs` (lists of
/// `(uri, id)` pairs, `id` may be None) and optional `queue_bytes`, `loss_timeout_ms`,
/// `failback_after_ms`, `slate`, `slate_size`.
struct Spec {
    name: String,
    inputs: Vec<(Uri, Option<String>)>,
    outputs: Vec<(Uri, Option<String>)>,
    queue_bytes: Option<u64>,
    loss_timeout_ms: Option<u64>,
    failback_after_ms: Option<u64>,
    slate: Option<bool>,
    slate_size: Option<(u32, u32)>,
}

/// Read by hand rather than derived: a derived extraction wraps a field's error in a
/// `TypeError`, and a bad URI must stay an `InvalidUriError`.
impl<'py> FromPyObject<'py> for Spec {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        let d = ob.downcast::<PyDict>()?;
        fn item<'py, T: FromPyObject<'py>>(
            d: &Bound<'py, PyDict>,
            key: &str,
        ) -> PyResult<Option<T>> {
            match d.get_item(key)? {
                Some(v) if !v.is_none() => v.extract().map(Some),
                _ => Ok(None),
            }
        }
        let required = |key: &str| {
            pyo3::exceptions::PyKeyError::new_err(format!("route spec without `{key}`"))
        };
        Ok(Spec {
            name: item(d, "name")?.ok_or_else(|| required("name"))?,
            inputs: item(d, "inputs")?.ok_or_else(|| required("inputs"))?,
            outputs: item(d, "outputs")?.unwrap_or_default(),
            queue_bytes: item(d, "queue_bytes")?,
            loss_timeout_ms: item(d, "loss_timeout_ms")?,
            failback_after_ms: item(d, "failback_after_ms")?,
            slate: item(d, "slate")?,
            slate_size: item(d, "slate_size")?,
        })
    }
}

impl Spec {
    fn into_route_spec(self) -> RouteSpec {
        let endpoints = |v: Vec<(Uri, Option<String>)>| v.into_iter();
        RouteSpec {
            name: self.name,
            inputs: endpoints(self.inputs)
                .map(|(uri, id)| InputSpec { uri: uri.0, id })
                .collect(),
            outputs: endpoints(self.outputs)
                .map(|(uri, id)| OutputSpec { uri: uri.0, id })
                .collect(),
            queue_bytes: self.queue_bytes,
            switch: SwitchSpec {
                loss_timeout_ms: self.loss_timeout_ms,
                failback_after_ms: self.failback_after_ms,
                slate: self.slate,
                slate_size: self.slate_size,
            },
        }
    }
}

/// The defaults and bounds of route settings, in the units the specs use.
#[pyfunction]
fn limits(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    use crate::limits as l;
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let d = PyDict::new(py);
    d.set_item("queue_bytes", l::DEFAULT_TAP_QUEUE_BYTES)?;
    d.set_item("min_queue_bytes", l::MIN_QUEUE_BYTES)?;
    d.set_item("loss_timeout_ms", ms(l::DEFAULT_LOSS_TIMEOUT))?;
    d.set_item("min_loss_timeout_ms", ms(l::MIN_LOSS_TIMEOUT))?;
    d.set_item("max_loss_timeout_ms", ms(l::MAX_LOSS_TIMEOUT))?;
    d.set_item("failback_after_ms", ms(l::DEFAULT_FAILBACK_AFTER))?;
    d.set_item("max_failback_after_ms", ms(l::MAX_FAILBACK_AFTER))?;
    Ok(d)
}

/// Whether the GStreamer element factory `name` is installed here.
#[pyfunction]
fn element_available(name: &str) -> PyResult<bool> {
    gst::init().map_err(crate::Error::from)?;
    Ok(crate::elements::available(name))
}

#[pyfunction]
fn gstreamer_version() -> PyResult<String> {
    gst::init().map_err(crate::Error::from)?;
    Ok(crate::gstreamer_version())
}

#[pymodule]
fn _castway(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyGateway>()?;
    m.add_class::<PyRoute>()?;
    m.add_function(wrap_pyfunction!(check_uri, m)?)?;
    m.add_function(wrap_pyfunction!(check_route, m)?)?;
    m.add_function(wrap_pyfunction!(listen_address, m)?)?;
    m.add_function(wrap_pyfunction!(limits, m)?)?;
    m.add_function(wrap_pyfunction!(element_available, m)?)?;
    m.add_function(wrap_pyfunction!(gstreamer_version, m)?)?;
    errors::register(m)?;
    Ok(())
}
