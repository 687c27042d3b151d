//! The acting user, carried by a `contextvars.ContextVar`.
//!
//! `auditbus.identity(...)` (Python) sets the variable; a `DomainEvent`
//! created without a `user_identity` reads it. A context variable follows
//! threads and asyncio tasks the way callers expect: per thread, copied into
//! tasks created inside the block, gone after it.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

static VAR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn var(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    VAR.get_or_try_init(py, || {
        let var = py.import("contextvars")?.getattr("ContextVar")?.call1(("auditbus.identity",))?;
        Ok(var.unbind())
    })
    .map(|v| v.bind(py))
}

/// The identity set by the innermost `identity()` block, if any.
pub fn current(py: Python<'_>) -> PyResult<Option<Py<PyString>>> {
    let value = var(py)?.call_method1("get", (py.None(),))?;
    Ok(value.cast_into::<PyString>().ok().map(Bound::unbind))
}

/// The context variable itself, for `auditbus.identity`.
#[pyfunction]
pub fn _identity_var(py: Python<'_>) -> PyResult<Py<PyAny>> {
    var(py).map(|v| v.clone().unbind())
}
