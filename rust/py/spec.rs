//! Specs and their checks as Python hands them over: the route spec dict, URIs, names, ids,
//! SRT defaults and listening ports. The control server checks its specs through these, so
//! each rule is the core's, written once (`route::spec`, `limits`, `uri`, `gateway::claims`).

use std::collections::BTreeMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyString};

use super::to_py;
use crate::error::Error;
use crate::gateway::{first_clash, Bind};
use crate::limits::{refuse_number, Limits};
use crate::route::{self, InputSpec, OutputSpec, RecordingSpec, RouteSpec, SpecKind, SwitchSpec};
use crate::uri::{Endpoint, Role, SrtDefaults};

/// The role a binding call names: "input" or "output".
fn parse_role(role: &str) -> PyResult<Role> {
    match role {
        "input" => Ok(Role::Input),
        "output" => Ok(Role::Output),
        other => Err(PyValueError::new_err(format!(
            "role must be 'input' or 'output', not {other:?}"
        ))),
    }
}

/// A URI as Python hands it over. Text Python cannot encode (a lone surrogate, as
/// `errors="surrogateescape"` makes from bytes that are not UTF-8) is a bad URI, said as such.
pub(super) struct Uri(pub String);

impl<'py> FromPyObject<'py> for Uri {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        let text = ob.downcast::<PyString>()?;
        match text.to_str() {
            Ok(s) => Ok(Uri(s.to_owned())),
            Err(_) => {
                // Shown with the surrogate as U+FFFD, and redacted like any URI in an error.
                let shown = crate::uri::redact(&text.to_string_lossy());
                Err(Error::uri(
                    shown,
                    "it is not valid Unicode (a lone surrogate, shown as \u{fffd}, left by \
                     decoding bytes that were not UTF-8); URIs are UTF-8 text",
                )
                .into())
            }
        }
    }
}

/// A whole number of a spec's setting. One that does not fit in 64 bits (negative, or huge)
/// is kept as written, so that the setting's check refuses it at its field like any other
/// value out of range.
pub(super) enum Whole {
    Fits(u64),
    Beyond(String),
}

impl<'py> FromPyObject<'py> for Whole {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        match ob.extract::<u64>() {
            Ok(n) => Ok(Whole::Fits(n)),
            Err(_) if ob.is_instance_of::<PyInt>() => Ok(Whole::Beyond(ob.str()?.to_string())),
            Err(e) => Err(e),
        }
    }
}

/// The number given for `field` (None when not given), or its refusal.
pub(super) fn whole(value: Option<Whole>, field: &str) -> Result<Option<u64>, Error> {
    match value {
        None => Ok(None),
        Some(Whole::Fits(n)) => Ok(Some(n)),
        Some(Whole::Beyond(text)) => Err(refuse_number(field, text)),
    }
}

/// A slate size: `(width, height)` or `"WIDTHxHEIGHT"`.
enum Size {
    Pair(u32, u32),
    Text(String),
}

impl<'py> FromPyObject<'py> for Size {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(text) = ob.extract::<String>() {
            return Ok(Size::Text(text));
        }
        let (w, h) = ob.extract()?;
        Ok(Size::Pair(w, h))
    }
}

/// A route spec as Python hands it over: a dict with `name`, `inputs` and `outputs` (lists of
/// `(uri, id)` pairs, `id` may be None) and optional `queue_bytes`, `gop_cache_bytes`, `loss_timeout_ms`,
/// `failback_after_ms`, `slate`, `slate_size`.
pub(super) struct Spec {
    name: String,
    inputs: Vec<(Uri, Option<String>)>,
    outputs: Vec<(Uri, Option<String>)>,
    queue_bytes: Option<Whole>,
    gop_cache_bytes: Option<Whole>,
    loss_timeout_ms: Option<Whole>,
    failback_after_ms: Option<Whole>,
    slate: Option<bool>,
    slate_size: Option<Size>,
    recording: Option<Recording>,
}

/// A spec's `recording` dict: optional `segment_ms`, `path`, `format`, `max_age_s`,
/// `max_bytes`, `min_free_bytes`.
struct Recording {
    segment_ms: Option<Whole>,
    path: Option<String>,
    format: Option<String>,
    max_age_s: Option<Whole>,
    max_bytes: Option<Whole>,
    min_free_bytes: Option<Whole>,
}

impl<'py> FromPyObject<'py> for Recording {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        let d = ob.downcast::<PyDict>()?;
        Ok(Recording {
            segment_ms: item(d, "segment_ms")?,
            path: item(d, "path")?,
            format: item(d, "format")?,
            max_age_s: item(d, "max_age_s")?,
            max_bytes: item(d, "max_bytes")?,
            min_free_bytes: item(d, "min_free_bytes")?,
        })
    }
}

/// `d[key]`, None when absent or None.
fn item<'py, T: FromPyObject<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<T>> {
    match d.get_item(key)? {
        Some(v) if !v.is_none() => v.extract().map(Some),
        _ => Ok(None),
    }
}

/// Read by hand rather than derived: a derived extraction wraps a field's error in a
/// `TypeError`, and a bad URI must stay an `InvalidUriError`.
impl<'py> FromPyObject<'py> for Spec {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        let d = ob.downcast::<PyDict>()?;
        let required = |key: &str| {
            pyo3::exceptions::PyKeyError::new_err(format!("route spec without `{key}`"))
        };
        Ok(Spec {
            name: item(d, "name")?.ok_or_else(|| required("name"))?,
            inputs: item(d, "inputs")?.ok_or_else(|| required("inputs"))?,
            outputs: item(d, "outputs")?.unwrap_or_default(),
            queue_bytes: item(d, "queue_bytes")?,
            gop_cache_bytes: item(d, "gop_cache_bytes")?,
            loss_timeout_ms: item(d, "loss_timeout_ms")?,
            failback_after_ms: item(d, "failback_after_ms")?,
            slate: item(d, "slate")?,
            slate_size: item(d, "slate_size")?,
            recording: item(d, "recording")?,
        })
    }
}

impl Spec {
    /// The core's spec; numbers beyond 64 bits and a slate size that does not parse are
    /// refused here, at their field.
    pub(super) fn into_route_spec(self) -> Result<RouteSpec, Error> {
        let endpoints = |v: Vec<(Uri, Option<String>)>| v.into_iter();
        Ok(RouteSpec {
            name: self.name,
            inputs: endpoints(self.inputs)
                .map(|(uri, id)| InputSpec { uri: uri.0, id })
                .collect(),
            outputs: endpoints(self.outputs)
                .map(|(uri, id)| OutputSpec { uri: uri.0, id })
                .collect(),
            queue_bytes: whole(self.queue_bytes, "queue_bytes")?,
            gop_cache_bytes: whole(self.gop_cache_bytes, "gop_cache_bytes")?,
            switch: SwitchSpec {
                loss_timeout_ms: whole(self.loss_timeout_ms, "loss_timeout_ms")?,
                failback_after_ms: whole(self.failback_after_ms, "failback_after_ms")?,
                slate: self.slate,
                slate_size: match self.slate_size {
                    None => None,
                    Some(Size::Pair(w, h)) => Some((w, h)),
                    Some(Size::Text(text)) => Some(route::parse_slate_size(&text)?),
                },
            },
            recording: match self.recording {
                None => RecordingSpec::default(),
                Some(r) => RecordingSpec {
                    segment_ms: whole(r.segment_ms, "recording.segment_ms")?,
                    path: r.path,
                    format: r.format,
                    max_age_s: whole(r.max_age_s, "recording.max_age_s")?,
                    max_bytes: whole(r.max_bytes, "recording.max_bytes")?,
                    min_free_bytes: whole(r.min_free_bytes, "recording.min_free_bytes")?,
                },
            },
        })
    }
}

/// Parses a URI as `role` ("input" or "output") and returns its canonical, redacted form;
/// raises InvalidUriError naming the bad part. Used by the CLI to fail before anything starts.
#[pyfunction]
fn check_uri(uri: Uri, role: &str) -> PyResult<String> {
    Ok(Endpoint::parse_as(&uri.0, parse_role(role)?)?.0.to_string())
}

/// Checks a route spec dict without starting anything. `whole`: a route as it runs (it needs
/// its name and an input; URIs are checked on this host too); else a part of one, every field
/// given checked. An error about one field says which (`castway.errors.field_of`).
#[pyfunction]
#[pyo3(signature = (spec, whole=true))]
fn check_spec(spec: Spec, whole: bool) -> PyResult<()> {
    let kind = if whole {
        SpecKind::Whole
    } else {
        SpecKind::Part
    };
    Ok(route::check_spec(&spec.into_route_spec()?, kind)?)
}

/// Checks a route, template, key, input or output name (`limits()["name_rule"]`); `what` says
/// which in the error.
#[pyfunction]
fn check_name(what: &str, name: &str) -> PyResult<()> {
    Ok(route::check_name(what, name)?)
}

/// The ids of a spec's inputs or outputs (`role`), given as `(uri, id)` pairs (`id` None when
/// not given): the given ones checked, the others kept from the `previous` spec's `(uri, id)`
/// pairs by URI, else the next free `{prefix}in<n>` (`out<n>`). Errors are at `inputs[n].id`.
#[pyfunction]
#[pyo3(signature = (role, endpoints, previous=Vec::new(), prefix=""))]
fn assign_ids(
    role: &str,
    endpoints: Vec<(String, Option<String>)>,
    previous: Vec<(String, String)>,
    prefix: &str,
) -> PyResult<Vec<String>> {
    let endpoints: Vec<(&str, Option<&str>)> = (endpoints.iter())
        .map(|(uri, id)| (uri.as_str(), id.as_deref()))
        .collect();
    let previous: Vec<(&str, &str)> = (previous.iter())
        .map(|(uri, id)| (uri.as_str(), id.as_str()))
        .collect();
    let (ids, _) = route::assign_ids(parse_role(role)?, prefix, &endpoints, &previous)?;
    Ok(ids)
}

/// Checks defaults for the SRT parameters of many URIs as the URI keys they stand for; errors
/// are at `latency_ms`, `passphrase`, `pbkeylen` or `options.KEY` (`options`: any other socket
/// option of docs/uri.md, by its URI key, valued as a URI writes it). `with_srt_defaults` puts
/// them in a URI.
#[pyfunction]
#[pyo3(signature = (latency_ms=None, passphrase=None, pbkeylen=None, options=None))]
fn check_srt_defaults(
    latency_ms: Option<Whole>,
    passphrase: Option<String>,
    pbkeylen: Option<Whole>,
    options: Option<BTreeMap<String, String>>,
) -> PyResult<()> {
    let defaults = SrtDefaults {
        latency_ms: whole(latency_ms, "latency_ms")?,
        passphrase,
        pbkeylen: whole(pbkeylen, "pbkeylen")?,
        options: options.unwrap_or_default().into_iter().collect(),
    };
    Ok(defaults.check()?)
}

/// `uri` with each SRT default added that it does not set itself (only to `srt://` URIs).
#[pyfunction]
#[pyo3(signature = (uri, latency_ms=None, passphrase=None, pbkeylen=None, options=None))]
fn with_srt_defaults(
    uri: Uri,
    latency_ms: Option<u64>,
    passphrase: Option<String>,
    pbkeylen: Option<u64>,
    options: Option<BTreeMap<String, String>>,
) -> String {
    let defaults = SrtDefaults {
        latency_ms,
        passphrase,
        pbkeylen,
        options: options.unwrap_or_default().into_iter().collect(),
    };
    defaults.apply(&uri.0)
}

/// The local address an endpoint binds for itself alone (a listener's port), as
/// `(host, port)`; None when it binds nothing exclusively.
#[pyfunction]
fn listen_address(uri: Uri, role: &str) -> PyResult<Option<(String, u16)>> {
    let role = parse_role(role)?;
    Ok(Endpoint::parse_as(&uri.0, role)?.0.exclusive_bind(role))
}

/// The first of `binds` (`(owner, host, port)` each) that clashes with one of `held` or with
/// one before it in `binds`, as `(its owner, the other's owner, port)`; None when none does.
/// Two binds clash on one port when their hosts match or either is a wildcard.
#[pyfunction]
fn find_clash(binds: Vec<Bind>, held: Vec<Bind>) -> Option<(String, String, u16)> {
    first_clash(&binds, &held).map(|(mine, other)| (mine.0.clone(), other.0.clone(), mine.2))
}

/// The defaults and bounds of route specs, in the units the specs use (`limits::Limits`).
#[pyfunction]
fn limits(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    to_py(py, &Limits::get())
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(check_uri, m)?)?;
    m.add_function(wrap_pyfunction!(check_spec, m)?)?;
    m.add_function(wrap_pyfunction!(check_name, m)?)?;
    m.add_function(wrap_pyfunction!(assign_ids, m)?)?;
    m.add_function(wrap_pyfunction!(check_srt_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(with_srt_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(listen_address, m)?)?;
    m.add_function(wrap_pyfunction!(find_clash, m)?)?;
    m.add_function(wrap_pyfunction!(limits, m)?)?;
    Ok(())
}
