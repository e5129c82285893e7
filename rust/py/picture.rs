//! Pictures of a route in Python: a snapshot, and a decode branch whose pictures a Python
//! iterator pulls (`castway.Route.frames`). Every wait releases the GIL.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use crate::route::Decoding;
use crate::tap::{DecodeSettings, Picture, PictureFormat};

/// A picture as Python takes it: data (bytes for an encoded image, a bytearray of raw pixels a
/// numpy array may write to), width, height, format, PTS and wall-clock time.
pub(super) type PyPicture<'py> = (Bound<'py, PyAny>, u32, u32, &'static str, Option<f64>, f64);

pub(super) fn picture<'py>(py: Python<'py>, p: Picture) -> PyPicture<'py> {
    let data = match p.format {
        PictureFormat::Jpeg | PictureFormat::Png => PyBytes::new(py, &p.data).into_any(),
        _ => PyByteArray::new(py, &p.data).into_any(),
    };
    (data, p.width, p.height, p.format.as_str(), p.pts, p.at)
}

/// Checks what a picture is asked as; `allowed`: the formats the caller takes (`frames`
/// pixels, `snapshot` images), checked before any branch starts.
pub(super) fn settings(
    format: &str,
    allowed: &[PictureFormat],
    size: Option<(u32, u32)>,
    fps: Option<f64>,
) -> PyResult<DecodeSettings> {
    let s = DecodeSettings {
        format: PictureFormat::parse_among("format", format, allowed)?,
        size,
        fps,
    };
    s.check()?;
    Ok(s)
}

pub(super) fn seconds(timeout: f64) -> PyResult<Duration> {
    if !timeout.is_finite() || timeout < 0.0 {
        return Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, not {timeout}"
        )));
    }
    Ok(Duration::from_secs_f64(timeout.min(1e6)))
}

/// Runs a wait without the GIL, handing it a check it makes between slices of at most a
/// second: the check takes the GIL and looks for signals, so Ctrl-C (or a Jupyter interrupt)
/// ends the wait with Python's own exception, which wins over the wait's result.
pub(super) fn interruptible<T>(
    py: Python<'_>,
    wait: impl FnOnce(&mut dyn FnMut() -> bool) -> crate::error::Result<T> + Send,
) -> PyResult<T>
where
    T: Send,
{
    let mut raised: Option<PyErr> = None;
    let r = py.allow_threads(|| {
        wait(&mut || match Python::with_gil(|py| py.check_signals()) {
            Ok(()) => true,
            Err(e) => {
                raised = Some(e);
                false
            }
        })
    });
    match raised {
        Some(e) => Err(e),
        None => Ok(r?),
    }
}

/// A running decode branch; `close()` (or dropping it) stops it.
#[pyclass(name = "Decoder", module = "castway._castway", frozen)]
pub(super) struct PyDecoder {
    pub inner: Decoding,
}

impl Drop for PyDecoder {
    /// A decoder dropped without `close()` stops its branch without holding the GIL.
    fn drop(&mut self) {
        Python::with_gil(|py| py.allow_threads(|| self.inner.close()));
    }
}

#[pymethods]
impl PyDecoder {
    /// The newest picture, waiting up to `timeout` seconds without the GIL (None: none came).
    fn pull<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Option<PyPicture<'py>>> {
        let wait = seconds(timeout)?;
        let p = interruptible(py, |go_on| self.inner.pull_or(wait, go_on))?;
        Ok(p.map(|p| picture(py, p)))
    }

    /// Bytes taken and dropped, pictures made, taken and skipped.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        super::to_py(py, &self.inner.stats())
    }

    fn close(&self, py: Python<'_>) {
        py.allow_threads(|| self.inner.close());
    }
}
