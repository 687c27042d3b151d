//! The one error type of the crate and its one conversion to Python exceptions.
//!
//! Every fallible function in the core returns [`Result`]; the binding layer
//! turns an [`Error`] into a Python exception in exactly one place, the
//! `From<Error> for PyErr` impl below, so the mapping is easy to audit.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::PyErr;

create_exception!(
    auditbus,
    ValidationError,
    PyValueError,
    "A value given to auditbus was rejected; the message names the field and what is accepted."
);
create_exception!(
    auditbus,
    AuditError,
    PyException,
    "The audit trail could not do what was asked (storage failure, closed service, corrupt file)."
);
create_exception!(
    auditbus,
    QueueFullError,
    AuditError,
    "The audit writer's queue stayed full for longer than the caller agreed to wait."
);
create_exception!(
    auditbus,
    ClosedError,
    AuditError,
    "The bus or audit service was closed or disposed before the call."
);

/// Everything that can go wrong inside auditbus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value of the right type but not an accepted one.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A value of the wrong type.
    #[error("{0}")]
    Type(String),
    /// Use after `close()`/`dispose()`.
    #[error("{0}")]
    Closed(String),
    /// Back-pressure gave up waiting.
    #[error("{0}")]
    QueueFull(String),
    /// A wait with a deadline ran out.
    #[error("{0}")]
    Timeout(String),
    /// SQLite reported a failure.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Any other storage failure, already described.
    #[error("{0}")]
    Storage(String),
    /// A Python exception raised by Python code the core called.
    #[error(transparent)]
    Python(#[from] PyErr),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A rejected value: `field` names where it came from, `message` says what is accepted.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}

impl From<Error> for PyErr {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid { .. } => ValidationError::new_err(err.to_string()),
            Error::Type(message) => PyTypeError::new_err(message),
            Error::Closed(message) => ClosedError::new_err(message),
            Error::QueueFull(message) => QueueFullError::new_err(message),
            Error::Timeout(message) => PyTimeoutError::new_err(message),
            Error::Sqlite(_) | Error::Storage(_) => AuditError::new_err(err.to_string()),
            Error::Python(inner) => inner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::types::PyTypeMethods;
    use pyo3::Python;

    #[test]
    fn each_variant_maps_to_its_exception() {
        Python::attach(|py| {
            let cases: Vec<(Error, &str)> = vec![
                (Error::invalid("plan_id", "expected str"), "ValidationError"),
                (Error::Type("not callable".into()), "TypeError"),
                (Error::Closed("closed".into()), "ClosedError"),
                (Error::QueueFull("full".into()), "QueueFullError"),
                (Error::Timeout("late".into()), "TimeoutError"),
                (Error::Storage("disk".into()), "AuditError"),
            ];
            for (err, name) in cases {
                let py_err: PyErr = err.into();
                let type_name = py_err.get_type(py).name().map(|n| n.to_string()).unwrap_or_default();
                assert_eq!(type_name, name);
            }
        });
    }

    #[test]
    fn invalid_names_the_field() {
        assert_eq!(Error::invalid("plan_id", "expected str, got int").to_string(), "plan_id: expected str, got int");
    }
}
