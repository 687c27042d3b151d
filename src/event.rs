//! `DomainEvent`: one thing that happened, frozen once built.
//!
//! Construction is keyword-only and validates every field, with the legacy
//! pydantic model's fields and defaults plus an `event_id` (UUIDv7) that lets
//! the audit trail deduplicate and order events. The pydantic methods the
//! services call (`model_dump`, `model_dump_json`, `model_copy`,
//! `model_validate`, `model_validate_json`) are provided without pydantic.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use chrono::{DateTime, SubsecRound, Utc};
use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyMapping, PyString, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};
use serde_json::{Map, Value};

use crate::errors::{Error, Result};
use crate::redact::REDACTED;
use crate::values::{short_repr, type_name};
use crate::{identity, timestamp, values};

/// Every event type, in `EventType` declaration order; the index is the
/// Rust-side representation.
pub const EVENT_TYPES: [&str; 14] = [
    "plan_created",
    "plan_phase_changed",
    "plan_applied",
    "plan_cancelled",
    "plan_failed",
    "step_started",
    "step_completed",
    "resource_modified",
    "correction_applied",
    "config_changed",
    "entity_deleted",
    "session_created",
    "auth_success",
    "auth_failure",
];

/// The keyword arguments `DomainEvent` accepts, in field order.
pub const FIELDS: [&str; 9] = [
    "event_type",
    "timestamp",
    "plan_id",
    "project_name",
    "actor_name",
    "session_id",
    "user_identity",
    "details",
    "event_id",
];

/// The optional text fields, in field order.
const TEXT_FIELDS: [&str; 5] = ["plan_id", "project_name", "actor_name", "session_id", "user_identity"];

/// An index into [`EVENT_TYPES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventKind(u8);

impl EventKind {
    pub fn from_value(value: &str) -> Option<Self> {
        EVENT_TYPES.iter().position(|v| *v == value).and_then(|i| u8::try_from(i).ok()).map(Self)
    }

    pub fn value(self) -> &'static str {
        EVENT_TYPES[usize::from(self.0)]
    }

    /// Reads an `EventType` member or its string value.
    pub fn from_py(field: &str, value: &Bound<'_, PyAny>) -> Result<Self> {
        let Some(text) = str_or_enum_str(value) else {
            return Err(Error::invalid(
                field,
                format!("expected an EventType or its string value, got {} {}", type_name(value), short_repr(value)),
            ));
        };
        Self::from_value(&text.to_string_lossy()).ok_or_else(|| {
            Error::invalid(
                field,
                format!("{} is not an EventType; accepted: {}", short_repr(value), EVENT_TYPES.join(", ")),
            )
        })
    }

    /// The `auditbus.EventType` member.
    pub fn to_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        static MEMBERS: PyOnceLock<Vec<Py<PyAny>>> = PyOnceLock::new();
        let members = MEMBERS.get_or_try_init(py, || {
            let enum_type = py.import("auditbus.types")?.getattr("EventType")?;
            EVENT_TYPES.iter().map(|v| enum_type.call1((*v,)).map(Bound::unbind)).collect::<PyResult<Vec<_>>>()
        })?;
        Ok(members[usize::from(self.0)].bind(py).clone())
    }
}

/// One domain event. Frozen: attributes cannot be assigned, so every handler
/// sees what the emitter built.
#[pyclass(frozen, weakref, module = "auditbus", name = "DomainEvent")]
pub struct DomainEvent {
    kind: EventKind,
    timestamp: DateTime<Utc>,
    timestamp_obj: PyOnceLock<Py<PyAny>>,
    /// plan_id, project_name, actor_name, session_id, user_identity.
    texts: [Option<Py<PyString>>; 5],
    details: Py<PyDict>,
    event_id: String,
}

/// Where a missing `user_identity` comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// The `identity()` context: construction and validation.
    FromContext,
    /// Keep what was given: copies and unpickling must not pick up the caller's context.
    AsGiven,
}

impl DomainEvent {
    /// Reads a dict of keyword arguments into field order, rejecting unknown names.
    fn args_from_kwargs<'py>(kwargs: &Bound<'py, PyDict>) -> Result<[Option<Bound<'py, PyAny>>; 9]> {
        let mut given: [Option<Bound<'py, PyAny>>; 9] = Default::default();
        for (key, value) in kwargs.iter() {
            let Ok(name) = key.cast::<PyString>() else {
                return Err(Error::Type(format!(
                    "DomainEvent field names are str, got {} {}; accepted: {}",
                    type_name(&key),
                    short_repr(&key),
                    FIELDS.join(", ")
                )));
            };
            let Some(index) = FIELDS.iter().position(|f| *f == name.to_string_lossy()) else {
                return Err(unexpected_keyword(&key));
            };
            if !value.is_none() {
                given[index] = Some(value);
            }
        }
        Ok(given)
    }

    fn from_kwargs(kwargs: &Bound<'_, PyDict>, identity_source: Identity) -> Result<Self> {
        let given = Self::args_from_kwargs(kwargs)?;
        Self::build(kwargs.py(), given, identity_source)
    }

    fn build(py: Python<'_>, given: [Option<Bound<'_, PyAny>>; 9], identity_source: Identity) -> Result<Self> {
        let [event_type, ts, plan_id, project_name, actor_name, session_id, user_identity, details, event_id] = given;
        let Some(event_type) = event_type else {
            return Err(Error::Type("DomainEvent is missing the required keyword argument 'event_type'".into()));
        };
        let kind = EventKind::from_py("event_type", &event_type)?;
        let timestamp = match ts {
            Some(value) => {
                let ts = timestamp::from_py("timestamp", &value)
                    .or_else(|err| timestamp::from_numeric_text(&value).ok_or(err))?;
                timestamp::in_python_range("timestamp", ts, &value)?
            }
            None => timestamp::now(py)?,
        }
        .trunc_subsecs(6);
        let mut texts: [Option<Py<PyString>>; 5] = Default::default();
        for (slot, (name, value)) in
            texts.iter_mut().zip(TEXT_FIELDS.iter().zip([plan_id, project_name, actor_name, session_id, user_identity]))
        {
            *slot = value.map(|v| text_field(name, &v)).transpose()?;
        }
        if texts[4].is_none() && identity_source == Identity::FromContext {
            texts[4] = identity::current(py)?;
        }
        let details = match details {
            Some(value) => details_field(&value)?,
            None => PyDict::new(py).unbind(),
        };
        let event_id = match event_id {
            Some(value) => {
                let text = text_field("event_id", &value)?;
                let text = text.bind(py).to_string_lossy().into_owned();
                if text.is_empty() {
                    return Err(Error::invalid("event_id", "must not be empty"));
                }
                text
            }
            None => uuid::Uuid::now_v7().hyphenated().to_string(),
        };
        Ok(Self { kind, timestamp, timestamp_obj: PyOnceLock::new(), texts, details, event_id })
    }

    pub fn kind(&self) -> EventKind {
        self.kind
    }

    pub fn timestamp_utc(&self) -> DateTime<Utc> {
        self.timestamp
    }

    pub fn id(&self) -> &str {
        &self.event_id
    }

    pub fn details_dict<'py>(&self, py: Python<'py>) -> &Bound<'py, PyDict> {
        self.details.bind(py)
    }

    /// One of plan_id, project_name, actor_name, session_id, user_identity as Rust text.
    pub fn text(&self, py: Python<'_>, name: &str) -> Option<String> {
        let index = TEXT_FIELDS.iter().position(|f| *f == name)?;
        self.texts[index].as_ref().map(|s| s.bind(py).to_string_lossy().into_owned())
    }

    fn timestamp_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let obj = self.timestamp_obj.get_or_try_init(py, || {
            timestamp::datetime_api(py)?;
            self.timestamp.into_pyobject(py).map(|d| d.into_any().unbind())
        })?;
        Ok(obj.bind(py).clone())
    }

    /// Field name -> Python value, in field order, as `model_dump()` gives them.
    fn python_fields<'py>(&self, py: Python<'py>) -> PyResult<Vec<(&'static str, Bound<'py, PyAny>)>> {
        let mut fields = Vec::with_capacity(FIELDS.len());
        fields.push(("event_type", self.kind.to_py(py)?));
        fields.push(("timestamp", self.timestamp_py(py)?));
        for (name, text) in TEXT_FIELDS.iter().zip(&self.texts) {
            fields.push((
                name,
                text.as_ref().map_or_else(|| py.None().into_bound(py), |t| t.bind(py).clone().into_any()),
            ));
        }
        // The event's own dict: every caller either copies it or only reads it.
        fields.push(("details", self.details.bind(py).clone().into_any()));
        fields.push(("event_id", PyString::new(py, &self.event_id).into_any()));
        Ok(fields)
    }

    /// The event as JSON, field order kept; `keep` filters field names.
    pub fn to_json(&self, py: Python<'_>, keep: &dyn Fn(&str, bool) -> bool) -> Map<String, Value> {
        let mut map = Map::new();
        let mut put = |name: &str, value: Value| {
            if keep(name, value.is_null()) {
                map.insert(name.to_owned(), value);
            }
        };
        put("event_type", Value::String(self.kind.value().to_owned()));
        put("timestamp", Value::String(timestamp::json_text(&self.timestamp)));
        for (name, text) in TEXT_FIELDS.iter().zip(&self.texts) {
            put(name, text.as_ref().map_or(Value::Null, |t| Value::String(t.bind(py).to_string_lossy().into_owned())));
        }
        put("details", Value::Object(values::dict_to_json(self.details.bind(py))));
        put("event_id", Value::String(self.event_id.clone()));
        map
    }

    fn copy_kwargs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let kwargs = PyDict::new(py);
        for (name, value) in self.python_fields(py)? {
            kwargs.set_item(name, value)?;
        }
        Ok(kwargs)
    }
}

/// `repr(value)` with secrets masked: by key, sibling name and shape, as
/// details are redacted, then by shape in the text. A value with nothing to
/// mask keeps its exact repr (redaction copies tuples as lists), so it
/// still evaluates to an equal value.
fn masked_repr(value: &Bound<'_, PyAny>) -> PyResult<String> {
    let raw = value.repr()?.to_string_lossy().into_owned();
    let redacted = crate::redact::redact(value)?.repr()?.to_string_lossy().into_owned();
    let text = if redacted.matches(REDACTED).count() > raw.matches(REDACTED).count() { redacted } else { raw };
    Ok(crate::values::masked(&text))
}

fn unexpected_keyword(name: &Bound<'_, PyAny>) -> Error {
    Error::Type(format!(
        "DomainEvent got an unexpected keyword argument {}; accepted: {}",
        short_repr(name),
        FIELDS.join(", ")
    ))
}

/// A `str`, or the `str` value of an Enum member that is not a `str` itself
/// (a service's own `class Phase(Enum)`), which pydantic reads as that text.
fn str_or_enum_str<'py>(value: &Bound<'py, PyAny>) -> Option<Bound<'py, PyString>> {
    match value.cast::<PyString>() {
        Ok(text) => Some(text.clone()),
        Err(_) => crate::values::enum_value(value).and_then(|inner| inner.cast_into::<PyString>().ok()),
    }
}

fn text_field(field: &str, value: &Bound<'_, PyAny>) -> Result<Py<PyString>> {
    let Some(text) = str_or_enum_str(value) else {
        return Err(Error::invalid(
            field,
            format!("expected str or None, got {} {}", type_name(value), short_repr(value)),
        ));
    };
    if text.is_exact_instance_of::<PyString>() {
        Ok(text.unbind())
    } else {
        // str subclasses (enums) are stored as their plain text, as pydantic does.
        Ok(PyString::new(value.py(), &text.to_string_lossy()).unbind())
    }
}

fn details_field(value: &Bound<'_, PyAny>) -> Result<Py<PyDict>> {
    let py = value.py();
    let copy = if let Ok(dict) = value.cast::<PyDict>() {
        dict.copy()?
    } else if let Ok(mapping) = value.cast::<PyMapping>() {
        let dict = PyDict::new(py);
        dict.update(mapping)?;
        dict
    } else {
        return Err(Error::invalid(
            "details",
            format!("expected a dict, got {} {}", type_name(value), short_repr(value)),
        ));
    };
    // Keys are not type-checked here: every consumer (JSON, redaction, the
    // audit row) turns a non-str key into text, and the check would cost a
    // walk of every dict on the hot path.
    Ok(copy.unbind())
}

/// `include=`/`exclude=`: any iterable of field names (a set, list, or dict's keys).
fn field_set(param: &str, arg: Option<&Bound<'_, PyAny>>) -> Result<Option<Vec<String>>> {
    let Some(arg) = arg else { return Ok(None) };
    if arg.is_none() {
        return Ok(None);
    }
    let rejected = |value: &Bound<'_, PyAny>| {
        Error::invalid(
            param,
            format!(
                "expected field names (str), got {} {}; fields: {}",
                type_name(value),
                short_repr(value),
                FIELDS.join(", ")
            ),
        )
    };
    if let Ok(name) = arg.cast::<PyString>() {
        // One field name, as pydantic reads it; iterating would give its letters.
        return Ok(Some(vec![name.to_string_lossy().into_owned()]));
    }
    let mut names = Vec::new();
    for item in arg.try_iter().map_err(|_| rejected(arg))? {
        let item = item?;
        let Ok(name) = item.cast::<PyString>() else { return Err(rejected(&item)) };
        if let Ok(dict) = arg.cast::<PyDict>() {
            // pydantic's `{"details": {"password"}}` selects keys inside the
            // field; ignoring it would dump all of `details` where the caller
            // asked for part of it, so only whole fields (True, ...) pass.
            let selection = dict.get_item(&item)?;
            if let Some(selection) = selection.filter(|v| !is_whole(v)) {
                return Err(Error::invalid(
                    param,
                    format!(
                        "{} selects {} inside the field; only whole fields are selected, give field names (or True); fields: {}",
                        short_repr(&item),
                        short_repr(&selection),
                        FIELDS.join(", ")
                    ),
                ));
            }
        }
        names.push(name.to_string_lossy().into_owned());
    }
    Ok(Some(names))
}

/// `True` or `...`: the whole field, in a pydantic include/exclude dict.
fn is_whole(value: &Bound<'_, PyAny>) -> bool {
    let py = value.py();
    value.is(pyo3::types::PyBool::new(py, true)) || value.is(py.Ellipsis())
}

/// `include`/`exclude`/`exclude_none` as one predicate over (field, is_none).
fn keep_fn(
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    exclude_none: bool,
) -> impl Fn(&str, bool) -> bool {
    move |name: &str, is_none: bool| {
        include.as_ref().is_none_or(|inc| inc.iter().any(|f| f == name))
            && !exclude.as_ref().is_some_and(|exc| exc.iter().any(|f| f == name))
            && !(exclude_none && is_none)
    }
}

#[pymethods]
impl DomainEvent {
    #[new]
    #[pyo3(signature = (*, event_type, timestamp=None, plan_id=None, project_name=None, actor_name=None, session_id=None, user_identity=None, details=None, event_id=None, **extra))]
    #[allow(clippy::too_many_arguments)]
    fn py_new<'py>(
        event_type: Bound<'py, PyAny>,
        timestamp: Option<Bound<'py, PyAny>>,
        plan_id: Option<Bound<'py, PyAny>>,
        project_name: Option<Bound<'py, PyAny>>,
        actor_name: Option<Bound<'py, PyAny>>,
        session_id: Option<Bound<'py, PyAny>>,
        user_identity: Option<Bound<'py, PyAny>>,
        details: Option<Bound<'py, PyAny>>,
        event_id: Option<Bound<'py, PyAny>>,
        extra: Option<&Bound<'py, PyDict>>,
    ) -> Result<Self> {
        if let Some((key, _)) = extra.and_then(|e| e.iter().next()) {
            return Err(unexpected_keyword(&key));
        }
        let py = event_type.py();
        let given = [
            Some(event_type),
            timestamp,
            plan_id,
            project_name,
            actor_name,
            session_id,
            user_identity,
            details,
            event_id,
        ];
        Self::build(py, given, Identity::FromContext)
    }

    #[getter]
    fn event_type<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.kind.to_py(py)
    }

    #[getter]
    fn timestamp<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.timestamp_py(py)
    }

    #[getter]
    fn plan_id(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.texts[0].as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn project_name(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.texts[1].as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn actor_name(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.texts[2].as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn session_id(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.texts[3].as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn user_identity(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.texts[4].as_ref().map(|s| s.clone_ref(py))
    }

    /// The dict copied at construction. As with the pydantic model, the dict
    /// itself is not frozen; the audit record is taken from it at emit time.
    #[getter]
    fn details(&self, py: Python<'_>) -> Py<PyDict> {
        self.details.clone_ref(py)
    }

    #[getter]
    fn event_id(&self) -> &str {
        &self.event_id
    }

    #[classattr]
    fn __match_args__() -> (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ) {
        (
            "event_type",
            "timestamp",
            "plan_id",
            "project_name",
            "actor_name",
            "session_id",
            "user_identity",
            "details",
            "event_id",
        )
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<DomainEvent>() else {
            return Ok(py.NotImplemented());
        };
        let other = other.get();
        let equal = || -> PyResult<bool> {
            if self.kind != other.kind || self.timestamp != other.timestamp || self.event_id != other.event_id {
                return Ok(false);
            }
            for (a, b) in self.texts.iter().zip(&other.texts) {
                match (a, b) {
                    (None, None) => {}
                    (Some(a), Some(b)) if a.bind(py).to_string_lossy() == b.bind(py).to_string_lossy() => {}
                    _ => return Ok(false),
                }
            }
            self.details.bind(py).eq(other.details.bind(py))
        };
        match op {
            CompareOp::Eq => Ok(equal()?.into_pyobject(py)?.to_owned().into_any().unbind()),
            CompareOp::Ne => Ok((!equal()?).into_pyobject(py)?.to_owned().into_any().unbind()),
            _ => Ok(py.NotImplemented()),
        }
    }

    /// By `event_id`: equal events share it, and it never changes.
    fn __hash__(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.event_id.hash(&mut hasher);
        hasher.finish()
    }

    /// Reads like the constructor call, with secrets masked as the audit row
    /// masks them: `str(event)` is this text, and `logger.info("emitted %s",
    /// event)` is a log line. It still evaluates (to the masked event).
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut parts = vec![format!("event_type=EventType.{}", self.kind.value().to_uppercase())];
        for (name, value) in self.python_fields(py)?.into_iter().skip(1) {
            if value.is_none() {
                continue;
            }
            let shown =
                if name == "timestamp" { value.repr()?.to_string_lossy().into_owned() } else { masked_repr(&value)? };
            parts.push(format!("{name}={shown}"));
        }
        Ok(format!("DomainEvent({})", parts.join(", ")))
    }

    /// Pickles as a call to `_restore_event` with the fields in order.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let restore = py.import("auditbus._native")?.getattr("_restore_event")?;
        let mut args: Vec<Bound<'py, PyAny>> = Vec::with_capacity(FIELDS.len());
        for (name, value) in self.python_fields(py)? {
            args.push(if name == "event_type" { PyString::new(py, self.kind.value()).into_any() } else { value });
        }
        Ok((restore, PyTuple::new(py, args)?))
    }

    /// The fields as a dict; `mode="json"` gives only JSON types.
    #[pyo3(signature = (*, mode = "python", include = None, exclude = None, exclude_none = false, by_alias = false, round_trip = false, warnings = true))]
    #[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)]
    fn model_dump<'py>(
        &self,
        py: Python<'py>,
        mode: &str,
        include: Option<&Bound<'py, PyAny>>,
        exclude: Option<&Bound<'py, PyAny>>,
        exclude_none: bool,
        by_alias: bool,
        round_trip: bool,
        warnings: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let _ = (by_alias, round_trip, warnings);
        let keep = keep_fn(field_set("include", include)?, field_set("exclude", exclude)?, exclude_none);
        let out = PyDict::new(py);
        match mode {
            "python" => {
                for (name, value) in self.python_fields(py)? {
                    if keep(name, value.is_none()) {
                        if name == "details" {
                            // New dicts and lists all the way down, as pydantic
                            // dumps them: editing a dump never edits the event.
                            out.set_item(name, values::copy_containers(&value)?)?;
                        } else {
                            out.set_item(name, value)?;
                        }
                    }
                }
            }
            "json" => {
                for (name, value) in self.to_json(py, &keep) {
                    out.set_item(name, pythonize::pythonize(py, &value)?)?;
                }
            }
            other => {
                return Err(Error::invalid(
                    "mode",
                    format!(
                        "{} is not a dump mode; accepted: 'python', 'json'",
                        short_repr(PyString::new(py, other).as_any())
                    ),
                )
                .into())
            }
        }
        Ok(out)
    }

    /// The event as compact JSON text (or indented with `indent`).
    #[pyo3(signature = (*, indent = None, include = None, exclude = None, exclude_none = false, by_alias = false, round_trip = false, warnings = true))]
    #[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)]
    fn model_dump_json(
        &self,
        py: Python<'_>,
        indent: Option<usize>,
        include: Option<&Bound<'_, PyAny>>,
        exclude: Option<&Bound<'_, PyAny>>,
        exclude_none: bool,
        by_alias: bool,
        round_trip: bool,
        warnings: bool,
    ) -> PyResult<String> {
        let _ = (by_alias, round_trip, warnings);
        let keep = keep_fn(field_set("include", include)?, field_set("exclude", exclude)?, exclude_none);
        let value = Value::Object(self.to_json(py, &keep));
        let text = match indent {
            None => serde_json::to_string(&value),
            Some(width) => {
                let indent = " ".repeat(width);
                let mut out = Vec::new();
                let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
                let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
                serde::Serialize::serialize(&value, &mut ser).map(|()| String::from_utf8_lossy(&out).into_owned())
            }
        };
        text.map_err(|e| Error::Storage(format!("cannot serialise event: {e}")).into())
    }

    /// A new event with `update` applied; the copy keeps `event_id` unless updated.
    #[pyo3(signature = (*, update = None, deep = false))]
    fn model_copy(&self, py: Python<'_>, update: Option<&Bound<'_, PyAny>>, deep: bool) -> PyResult<Self> {
        let kwargs = self.copy_kwargs(py)?;
        if deep {
            let details = kwargs.get_item("details")?;
            if let Some(details) = details {
                kwargs.set_item("details", py.import("copy")?.getattr("deepcopy")?.call1((details,))?)?;
            }
        }
        if let Some(update) = update {
            if !update.is_none() {
                let mapping = update.cast::<PyMapping>().map_err(|_| {
                    Error::invalid("update", format!("expected a dict of field values, got {}", type_name(update)))
                })?;
                kwargs.update(mapping)?;
            }
        }
        Ok(Self::from_kwargs(&kwargs, Identity::AsGiven)?)
    }

    /// Builds an event from a dict (or returns an event unchanged).
    #[classmethod]
    fn model_validate<'py>(_cls: &Bound<'py, PyType>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = obj.py();
        if obj.is_instance_of::<DomainEvent>() {
            return Ok(obj.clone());
        }
        let Ok(mapping) = obj.cast::<PyMapping>() else {
            return Err(Error::invalid(
                "DomainEvent",
                format!("expected a dict of field values or a DomainEvent, got {}", type_name(obj)),
            )
            .into());
        };
        let kwargs = PyDict::new(py);
        kwargs.update(mapping)?;
        // Bad data is a ValidationError (a ValueError), as pydantic raises,
        // even where the same mistake in a call's keywords is a TypeError.
        let event = Self::from_kwargs(&kwargs, Identity::FromContext).map_err(|err| match err {
            Error::Type(message) => Error::invalid("DomainEvent.model_validate", message),
            other => other,
        })?;
        Ok(Bound::new(py, event)?.into_any())
    }

    /// Builds an event from JSON text, as `model_dump_json()` writes it.
    ///
    /// Parsed by Python's `json.loads`, which reads what pydantic reads and
    /// serde_json would not: integers of any size kept exact, `NaN` and
    /// `Infinity`, and a `bytearray`; bytes must be UTF-8.
    #[classmethod]
    fn model_validate_json<'py>(
        cls: &Bound<'py, PyType>,
        json_data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let text = if json_data.is_instance_of::<PyString>() {
            json_data.clone()
        } else if json_data.is_instance_of::<pyo3::types::PyBytes>()
            || json_data.is_instance_of::<pyo3::types::PyByteArray>()
        {
            // Decoded here: `json.loads` would also take UTF-16 and UTF-32 bytes.
            json_data
                .call_method1("decode", ("utf-8",))
                .map_err(|e| Error::invalid("json_data", format!("invalid JSON: {}", e.value(py))))?
        } else {
            return Err(Error::invalid(
                "json_data",
                format!("expected str, bytes or bytearray, got {}", type_name(json_data)),
            )
            .into());
        };
        let obj = crate::values::json_loads(py)?.call1((text,)).map_err(|e| {
            if e.is_instance_of::<pyo3::exceptions::PyValueError>(py)
                || e.is_instance_of::<pyo3::exceptions::PyRecursionError>(py)
            {
                Error::invalid("json_data", format!("invalid JSON: {}", e.value(py))).into()
            } else {
                e
            }
        })?;
        if !obj.is_instance_of::<PyDict>() {
            return Err(Error::invalid("json_data", "expected a JSON object of field values").into());
        }
        Self::model_validate(cls, &obj)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> std::result::Result<(), PyTraverseError> {
        visit.call(&self.details)
    }
}

/// Rebuilds a pickled event exactly, whatever identity context the reader is in.
#[pyfunction]
#[pyo3(signature = (event_type, timestamp, plan_id, project_name, actor_name, session_id, user_identity, details, event_id))]
#[allow(clippy::too_many_arguments)]
pub fn _restore_event<'py>(
    event_type: &Bound<'py, PyAny>,
    timestamp: &Bound<'py, PyAny>,
    plan_id: &Bound<'py, PyAny>,
    project_name: &Bound<'py, PyAny>,
    actor_name: &Bound<'py, PyAny>,
    session_id: &Bound<'py, PyAny>,
    user_identity: &Bound<'py, PyAny>,
    details: &Bound<'py, PyAny>,
    event_id: &Bound<'py, PyAny>,
) -> PyResult<DomainEvent> {
    let given =
        [event_type, timestamp, plan_id, project_name, actor_name, session_id, user_identity, details, event_id]
            .map(|value| Some(value.clone()).filter(|v| !v.is_none()));
    Ok(DomainEvent::build(event_type.py(), given, Identity::AsGiven)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_round_trip() {
        for value in EVENT_TYPES {
            assert_eq!(EventKind::from_value(value).map(EventKind::value), Some(value));
        }
        assert!(EventKind::from_value("PLAN_APPLIED").is_none());
    }
}
