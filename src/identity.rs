//! The acting user, carried by a `contextvars.ContextVar`.
//!
//! `auditbus.identity(...)` (Python) sets the variable; a `DomainEvent`
//! created without a `user_identity` reads it. A context variable follows
//! threads and asyncio tasks the way callers expect: per thread, copied into
//! tasks created inside the block, gone after it.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

/// The variable and its bound `get`, which is called once per event.
static VAR: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();

fn var(py: Python<'_>) -> PyResult<&(Py<PyAny>, Py<PyAny>)> {
    VAR.get_or_try_init(py, || {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("default", py.None())?;
        let var = py.import("contextvars")?.getattr("ContextVar")?.call(("auditbus.identity",), Some(&kwargs))?;
        let get = var.getattr("get")?;
        Ok((var.unbind(), get.unbind()))
    })
}

/// The identity set by the innermost `identity()` block, if any, as a plain
/// `str`: a `str` subclass (a `StrEnum` role) is stored as its text, the way an
/// explicit `user_identity=` argument is, so both paths give the same event.
pub fn current(py: Python<'_>) -> PyResult<Option<Py<PyString>>> {
    let value = var(py)?.1.bind(py).call0()?;
    let Ok(text) = value.cast_into::<PyString>() else { return Ok(None) };
    if text.is_exact_instance_of::<PyString>() {
        Ok(Some(text.unbind()))
    } else {
        Ok(Some(PyString::new(py, &text.to_string_lossy()).unbind()))
    }
}

/// The context variable itself, for `auditbus.identity`.
#[pyfunction]
pub fn _identity_var(py: Python<'_>) -> PyResult<Py<PyAny>> {
    var(py).map(|v| v.0.clone_ref(py))
}
