//! The Python value classes of the audit trail: `AuditEntry` (one row, the
//! legacy dataclass's fields first) and `VerifyReport`.

use chrono::{DateTime, Utc};
use pyo3::basic::CompareOp;
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::audit::chain::Verdict;
use crate::audit::query::RowData;
use crate::errors::{Error, Result};
use crate::timestamp;

/// One audit row. Frozen, like the legacy dataclass.
#[pyclass(frozen, module = "auditbus", name = "AuditEntry")]
pub struct AuditEntry {
    id: i64,
    timestamp: Stored,
    event_type: String,
    plan_id: Option<String>,
    user_identity: Option<String>,
    /// The stored JSON text, parsed on first access: `record()` and
    /// `query()` callers that never look at the details do not pay for it.
    details_text: Option<String>,
    /// std `OnceLock`, not `PyOnceLock`: `__traverse__` must read it without
    /// `py`. The dict is the caller's to change: an entry stored in its own
    /// details (or in an object they hold) is a cycle the collector must see.
    details: OnceLock<Py<PyAny>>,
    event_id: Option<String>,
    actor_name: Option<String>,
    project_name: Option<String>,
    session_id: Option<String>,
    outcome: Option<String>,
    source: Option<String>,
    recorded_at: Option<Stored>,
    chain_hash: Option<String>,
    /// The columns whose stored bytes were not UTF-8, read with U+FFFD.
    not_utf8: Vec<&'static str>,
}

/// A stored time column: the instant, or the text found there when it is not
/// a timestamp (another writer, an edit). Such a row is still returned, so
/// that one bad row cannot hide the trail; reading that field raises.
enum Stored {
    Time(DateTime<Utc>),
    Unreadable(String),
}

impl Stored {
    fn read(text: String) -> Self {
        timestamp::parse_stored(&text).map_or(Self::Unreadable(text), Self::Time)
    }

    fn unreadable(&self) -> Option<&str> {
        match self {
            Self::Time(_) => None,
            Self::Unreadable(text) => Some(text),
        }
    }

    fn get(&self, id: i64, column: &str) -> Result<DateTime<Utc>> {
        match self {
            Self::Time(t) => Ok(*t),
            Self::Unreadable(text) => Err(unreadable_time(id, column, text)),
        }
    }

    /// A caller's value; text (an unreadable column, pickled) is kept as read.
    fn from_py(field: &str, value: &Bound<'_, PyAny>) -> Result<Self> {
        match value.cast::<PyString>() {
            Ok(text) => Ok(Self::read(text.to_str()?.to_owned())),
            Err(_) => Ok(Self::Time(caller_time(field, value)?)),
        }
    }

    /// The datetime, or for unreadable text the text itself (what `__reduce__` hands back).
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Self::Time(t) => {
                timestamp::datetime_api(py)?;
                Ok(t.into_pyobject(py)?.into_any())
            }
            Self::Unreadable(text) => Ok(PyString::new(py, text).into_any()),
        }
    }
}

/// A caller's time for an entry, refused when a `datetime` in UTC cannot
/// hold it, as for an event: else every read of the field would raise.
fn caller_time(field: &str, value: &Bound<'_, PyAny>) -> Result<DateTime<Utc>> {
    timestamp::in_python_range(field, timestamp::from_py(field, value)?, value)
}

/// The error reading an unreadable time column raises: the row, the column
/// and the stored text, escaped (it may hold a newline or an escape sequence).
fn unreadable_time(id: i64, column: &str, text: &str) -> Error {
    Error::Storage(format!("audit row {id}: column {column} holds {text:?}, which is not an ISO-8601 timestamp"))
}

/// A field's Python value, or, for a column that cannot be read, its stored
/// text and the error reading it raises: `repr()` and `==` use the text,
/// `to_dict()` raises the error.
type Field<'py> = std::result::Result<Bound<'py, PyAny>, (String, PyErr)>;

/// Stored JSON text as a Python value.
///
/// The legacy service wrote with Python's `json.dumps`: `NaN` and
/// `Infinity` tokens, integers of any size and lone surrogates, which
/// serde_json refuses or reads as a float. Those rows are read by Python's
/// `json.loads`, as the legacy service reads them; auditbus's own rows never
/// need it (it stores standard JSON, wide integers as text).
fn json_to_py(py: Python<'_>, id: i64, text: &str) -> Result<Py<PyAny>> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) if !has_wide_integer(&value) => {
            Ok(pythonize::pythonize(py, &value).map_err(|e| Error::Storage(e.to_string()))?.unbind())
        }
        _ => crate::values::json_loads(py)?
            .call1((text,))
            .map(Bound::unbind)
            .map_err(|e| Error::Storage(format!("audit row {id}: details are not valid JSON ({})", e.value(py)))),
    }
}

/// A whole number serde_json read as a float because it is wider than 64
/// bits: it may have been an integer literal, which Python reads exactly.
fn has_wide_integer(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) => n.as_f64().is_some_and(|f| n.is_f64() && f.fract() == 0.0 && f.abs() >= 9.2e18),
        Value::Array(items) => items.iter().any(has_wide_integer),
        Value::Object(map) => map.values().any(has_wide_integer),
        _ => false,
    }
}

impl AuditEntry {
    pub fn from_row(row: RowData) -> Result<Self> {
        Ok(Self {
            id: row.id,
            timestamp: Stored::read(row.timestamp),
            event_type: row.event_type,
            plan_id: row.plan_id,
            user_identity: row.user_identity,
            details_text: Some(row.details),
            details: OnceLock::new(),
            event_id: row.event_id,
            actor_name: row.actor_name,
            project_name: row.project_name,
            session_id: row.session_id,
            outcome: row.outcome,
            source: row.source,
            recorded_at: row.recorded_at.map(Stored::read),
            chain_hash: row.chain_hash,
            not_utf8: row.not_utf8,
        })
    }

    fn details_py(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(details) = self.details.get() {
            return Ok(details.clone_ref(py));
        }
        // Parsed outside the cell (parsing may run Python code and release the
        // GIL): two threads may both parse, the first to store wins, and every
        // caller gets that one dict.
        let parsed = match &self.details_text {
            Some(text) => json_to_py(py, self.id, text)?,
            None => PyDict::new(py).into_any().unbind(),
        };
        let _ = self.details.set(parsed);
        Ok(self.details.get().map_or_else(|| py.None(), |d| d.clone_ref(py)))
    }

    fn source_py(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.source {
            None => Ok(py.None()),
            Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(value) => Ok(pythonize::pythonize(py, &value)?.unbind()),
                Err(_) => Ok(PyString::new(py, text).into_any().unbind()),
            },
        }
    }

    fn time_field<'py>(&self, py: Python<'py>, column: &str, stored: Option<&Stored>) -> PyResult<Field<'py>> {
        Ok(match stored {
            None => Ok(py.None().into_bound(py)),
            Some(Stored::Time(t)) => {
                timestamp::datetime_api(py)?;
                Ok(t.into_pyobject(py)?.into_any())
            }
            Some(Stored::Unreadable(text)) => Err((text.clone(), unreadable_time(self.id, column, text).into())),
        })
    }

    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Vec<(&'static str, Field<'py>)>> {
        let opt = |v: &Option<String>| -> Field<'py> {
            Ok(v.as_ref().map_or_else(|| py.None().into_bound(py), |s| PyString::new(py, s).into_any()))
        };
        let details = match (self.details_py(py), &self.details_text) {
            (Ok(details), _) => Ok(details.into_bound(py)),
            (Err(error), Some(text)) => Err((text.clone(), error)),
            (Err(error), None) => return Err(error),
        };
        Ok(vec![
            ("id", Ok(self.id.into_pyobject(py)?.into_any())),
            ("timestamp", self.time_field(py, "timestamp", Some(&self.timestamp))?),
            ("event_type", Ok(PyString::new(py, &self.event_type).into_any())),
            ("plan_id", opt(&self.plan_id)),
            ("user_identity", opt(&self.user_identity)),
            ("details", details),
            ("event_id", opt(&self.event_id)),
            ("actor_name", opt(&self.actor_name)),
            ("project_name", opt(&self.project_name)),
            ("session_id", opt(&self.session_id)),
            ("outcome", opt(&self.outcome)),
            ("source", Ok(self.source_py(py)?.into_bound(py))),
            ("recorded_at", self.time_field(py, "recorded_at", self.recorded_at.as_ref())?),
            ("chain_hash", opt(&self.chain_hash)),
        ])
    }

    /// Field by field; a column that cannot be read equals only the same
    /// stored text, so entries of damaged rows compare without raising.
    fn equals(&self, other: &AuditEntry, py: Python<'_>) -> PyResult<bool> {
        for ((_, mine), (_, theirs)) in self.fields(py)?.into_iter().zip(other.fields(py)?) {
            let same = match (mine, theirs) {
                (Ok(a), Ok(b)) => a.eq(b)?,
                (Err((a, _)), Err((b, _))) => a == b,
                _ => false,
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[pymethods]
impl AuditEntry {
    /// The legacy dataclass's constructor (positional legacy fields), plus
    /// the new fields as keywords; `source` is stored as JSON text.
    #[new]
    #[pyo3(signature = (id, timestamp, event_type, plan_id=None, user_identity=None, details=None, *, event_id=None, actor_name=None, project_name=None, session_id=None, outcome=None, source=None, recorded_at=None, chain_hash=None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        id: i64,
        timestamp: &Bound<'_, PyAny>,
        event_type: String,
        plan_id: Option<String>,
        user_identity: Option<String>,
        details: Option<Py<PyAny>>,
        event_id: Option<String>,
        actor_name: Option<String>,
        project_name: Option<String>,
        session_id: Option<String>,
        outcome: Option<String>,
        source: Option<&Bound<'_, PyAny>>,
        recorded_at: Option<&Bound<'_, PyAny>>,
        chain_hash: Option<String>,
    ) -> Result<Self> {
        let source = source.filter(|s| !s.is_none()).map(|s| crate::values::to_json(s).to_string());
        Ok(Self {
            id,
            timestamp: Stored::Time(caller_time("timestamp", timestamp)?),
            event_type,
            plan_id,
            user_identity,
            details_text: None,
            details: parsed_details(py, details),
            event_id,
            actor_name,
            project_name,
            session_id,
            outcome,
            source,
            recorded_at: recorded_at
                .filter(|r| !r.is_none())
                .map(|r| caller_time("recorded_at", r).map(Stored::Time))
                .transpose()?,
            chain_hash,
            not_utf8: Vec::new(),
        })
    }

    #[getter]
    fn id(&self) -> i64 {
        self.id
    }
    /// When the event happened (the event's own time), aware, UTC. Raises
    /// `AuditError` naming the row when the stored text is not a timestamp.
    #[getter]
    fn timestamp(&self) -> Result<DateTime<Utc>> {
        self.timestamp.get(self.id, "timestamp")
    }
    /// The timestamp column's stored text when it is not a timestamp (reading
    /// `timestamp` then raises); None when it reads.
    #[getter]
    fn unreadable_timestamp(&self) -> Option<&str> {
        self.timestamp.unreadable()
    }
    #[getter]
    fn event_type(&self) -> &str {
        &self.event_type
    }
    #[getter]
    fn plan_id(&self) -> Option<&str> {
        self.plan_id.as_deref()
    }
    #[getter]
    fn user_identity(&self) -> Option<&str> {
        self.user_identity.as_deref()
    }
    /// The details as stored (already redacted).
    #[getter]
    fn details(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.details_py(py)
    }
    /// The details column's text exactly as read, even when it is not JSON
    /// (`details` then raises); None for an entry built in Python.
    #[getter]
    fn stored_details(&self) -> Option<&str> {
        self.details_text.as_deref()
    }
    /// The columns whose stored bytes are not UTF-8 (edited by hand, another
    /// writer): their values hold U+FFFD in place of each bad sequence.
    #[getter]
    fn not_utf8<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.not_utf8)
    }
    #[getter]
    fn event_id(&self) -> Option<&str> {
        self.event_id.as_deref()
    }
    #[getter]
    fn actor_name(&self) -> Option<&str> {
        self.actor_name.as_deref()
    }
    #[getter]
    fn project_name(&self) -> Option<&str> {
        self.project_name.as_deref()
    }
    #[getter]
    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
    #[getter]
    fn outcome(&self) -> Option<&str> {
        self.outcome.as_deref()
    }
    /// Where the row was written from: `{"host", "pid", "app"}`.
    #[getter]
    fn source(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.source_py(py)
    }
    /// When the writer committed it (None for rows other writers appended).
    /// Raises like `timestamp` when the stored text is not a timestamp.
    #[getter]
    fn recorded_at(&self) -> Result<Option<DateTime<Utc>>> {
        self.recorded_at.as_ref().map(|t| t.get(self.id, "recorded_at")).transpose()
    }
    /// The recorded_at column's stored text when it is not a timestamp; None
    /// when it reads or is empty.
    #[getter]
    fn unreadable_recorded_at(&self) -> Option<&str> {
        self.recorded_at.as_ref().and_then(Stored::unreadable)
    }
    #[getter]
    fn chain_hash(&self) -> Option<&str> {
        self.chain_hash.as_deref()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> std::result::Result<(), PyTraverseError> {
        visit.call(self.details.get())
    }

    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str, &'static str, &'static str, &'static str) {
        ("id", "timestamp", "event_type", "plan_id", "user_identity", "details")
    }

    /// Every field, in order.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (name, value) in self.fields(py)? {
            out.set_item(name, value.map_err(|(_, error)| error)?)?;
        }
        Ok(out)
    }

    /// Pickles (and copies) as a call to `_restore_audit_entry` with the row
    /// as read: details stay the stored text, parsed when first asked for.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let restore = py.import("auditbus._native")?.getattr("_restore_audit_entry")?;
        let details = match &self.details_text {
            Some(_) => py.None(),
            None => self.details_py(py)?,
        };
        let opt = |v: &Option<String>| v.into_pyobject(py).map(Bound::into_any);
        let args = [
            self.id.into_pyobject(py)?.into_any(),
            self.timestamp.to_py(py)?,
            PyString::new(py, &self.event_type).into_any(),
            opt(&self.plan_id)?,
            opt(&self.user_identity)?,
            opt(&self.details_text)?,
            details.into_bound(py),
            opt(&self.event_id)?,
            opt(&self.actor_name)?,
            opt(&self.project_name)?,
            opt(&self.session_id)?,
            opt(&self.outcome)?,
            opt(&self.source)?,
            self.recorded_at.as_ref().map_or_else(|| Ok(py.None().into_bound(py)), |t| t.to_py(py))?,
            opt(&self.chain_hash)?,
            PyTuple::new(py, &self.not_utf8)?.into_any(),
        ];
        Ok((restore, PyTuple::new(py, args)?))
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<AuditEntry>() else { return Ok(py.NotImplemented()) };
        let result = match op {
            CompareOp::Eq => self.equals(other.get(), py)?,
            CompareOp::Ne => !self.equals(other.get(), py)?,
            _ => return Ok(py.NotImplemented()),
        };
        Ok(result.into_pyobject(py)?.to_owned().into_any().unbind())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut parts = Vec::new();
        for (name, value) in self.fields(py)? {
            match value {
                Ok(value) => parts.push(format!("{name}={}", value.repr()?.to_string_lossy())),
                Err((text, _)) => {
                    parts.push(format!("{name}=<unreadable: {}>", PyString::new(py, &text).repr()?.to_string_lossy()))
                }
            }
        }
        Ok(format!("AuditEntry({})", parts.join(", ")))
    }
}

/// The details cell of an entry given its details as a Python value (`{}` for None).
fn parsed_details(py: Python<'_>, details: Option<Py<PyAny>>) -> OnceLock<Py<PyAny>> {
    OnceLock::from(details.unwrap_or_else(|| PyDict::new(py).into_any().unbind()))
}

/// Rebuilds a pickled or copied entry exactly, stored details text included.
#[pyfunction]
#[pyo3(signature = (id, timestamp, event_type, plan_id, user_identity, stored_details, details, event_id, actor_name, project_name, session_id, outcome, source, recorded_at, chain_hash, not_utf8=Vec::new()))]
#[allow(clippy::too_many_arguments)]
pub fn _restore_audit_entry(
    py: Python<'_>,
    id: i64,
    timestamp: &Bound<'_, PyAny>,
    event_type: String,
    plan_id: Option<String>,
    user_identity: Option<String>,
    stored_details: Option<String>,
    details: Option<Py<PyAny>>,
    event_id: Option<String>,
    actor_name: Option<String>,
    project_name: Option<String>,
    session_id: Option<String>,
    outcome: Option<String>,
    source: Option<String>,
    recorded_at: Option<&Bound<'_, PyAny>>,
    chain_hash: Option<String>,
    not_utf8: Vec<String>,
) -> Result<AuditEntry> {
    // Stored text is parsed when first asked for, as for an entry read from the trail.
    let details = if stored_details.is_none() { parsed_details(py, details) } else { OnceLock::new() };
    Ok(AuditEntry {
        id,
        timestamp: Stored::from_py("timestamp", timestamp)?,
        event_type,
        plan_id,
        user_identity,
        details_text: stored_details,
        details,
        event_id,
        actor_name,
        project_name,
        session_id,
        outcome,
        source,
        recorded_at: recorded_at.filter(|r| !r.is_none()).map(|r| Stored::from_py("recorded_at", r)).transpose()?,
        chain_hash,
        not_utf8: crate::audit::schema::row_column_names().filter(|c| not_utf8.iter().any(|n| n == c)).collect(),
    })
}

/// What `verify()` found. Truthy when the chain is intact.
#[pyclass(frozen, module = "auditbus", name = "VerifyReport", get_all)]
pub struct VerifyReport {
    /// No edited, deleted or inserted row was found.
    ok: bool,
    /// Rows whose place in the chain was checked.
    checked: u64,
    /// Rows outside the chain: written before the migration, or appended
    /// without a hash (the legacy service) after the last chained row.
    unchained: u64,
    /// Of `unchained`, the rows appended without a hash after the newest
    /// chained row: not legacy history, and nothing says who wrote them.
    appended: u64,
    /// Rows after the chain anchor written without a hash of their own (the
    /// legacy service, an SQLite tool) and covered by the next chained row:
    /// counted in `checked`, protected from that row on, but nothing says who
    /// wrote them.
    folded: u64,
    first_bad_id: Option<i64>,
    reason: Option<String>,
    /// The newest chained row that checked out, and its chain hash: kept
    /// where the trail's writers cannot change it, and passed back to a later
    /// `verify(heads=...)`, it shows that the trail up to it was not rewritten.
    head_id: Option<i64>,
    head_hash: Option<String>,
}

impl From<Verdict> for VerifyReport {
    fn from(v: Verdict) -> Self {
        Self {
            ok: v.first_bad_id.is_none(),
            checked: v.checked,
            unchained: v.unchained,
            appended: v.appended,
            folded: v.folded,
            first_bad_id: v.first_bad_id,
            reason: v.reason,
            head_id: v.head.as_ref().map(|h| h.0),
            head_hash: v.head.map(|h| h.1),
        }
    }
}

#[pymethods]
impl VerifyReport {
    fn __bool__(&self) -> bool {
        self.ok
    }

    fn __repr__(&self) -> String {
        let opt_id = self.first_bad_id.map_or_else(|| "None".to_owned(), |i| i.to_string());
        let reason = self.reason.as_ref().map_or_else(|| "None".to_owned(), |r| format!("{r:?}"));
        let head_id = self.head_id.map_or_else(|| "None".to_owned(), |i| i.to_string());
        let head_hash = self.head_hash.as_ref().map_or_else(|| "None".to_owned(), |h| format!("{h:?}"));
        format!(
            "VerifyReport(ok={}, checked={}, unchained={}, appended={}, folded={}, first_bad_id={opt_id}, \
             reason={reason}, head_id={head_id}, head_hash={head_hash})",
            if self.ok { "True" } else { "False" },
            self.checked,
            self.unchained,
            self.appended,
            self.folded
        )
    }
}
