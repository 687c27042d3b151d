//! Python value -> JSON, for audit rows and `model_dump(mode="json")`.
//!
//! Any Python object converts without raising: containers are walked with a
//! depth bound and cycle detection, well-known scalar types get their
//! canonical text, and anything else falls back to `str()`, as the legacy
//! `json.dumps(default=str)` did. Conversion never fails on odd input, because
//! an audit row must be written even when a caller put something strange in
//! `details`.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple,
};
use serde_json::{Map, Number, Value};

/// Nesting deeper than this is replaced by [`DEPTH_MARKER`]; it keeps the
/// walk off the stack limit whatever the input.
pub const MAX_DEPTH: usize = 64;
/// Stands in for a container that contains itself.
pub const CYCLE_MARKER: &str = "[circular reference]";
/// Stands in for a container nested deeper than [`MAX_DEPTH`].
pub const DEPTH_MARKER: &str = "[nested too deep]";

/// Converts any Python object to JSON.
pub fn to_json(obj: &Bound<'_, PyAny>) -> Value {
    let mut path = Vec::new();
    convert(obj, &mut path)
}

/// Converts a Python mapping to a JSON object, keys as text.
pub fn dict_to_json(dict: &Bound<'_, PyDict>) -> Map<String, Value> {
    let mut path = vec![dict.as_ptr() as usize];
    convert_dict(dict, &mut path)
}

/// The text a JSON object key gets for any Python key, as `json.dumps` would.
pub fn key_text(key: &Bound<'_, PyAny>) -> String {
    if let Ok(s) = key.cast::<PyString>() {
        return s.to_string_lossy().into_owned();
    }
    match convert(key, &mut Vec::new()) {
        Value::String(s) => s,
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// What a Python value is in JSON, one level deep. The one place that maps
/// Python types to JSON: [`to_json`] builds a `Value` from it, the audit
/// row's text sink (`redact::text`) writes text from it.
pub enum Json<'py> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// Finite only; NaN and infinities are [`Json::Text`], as `str()` gives them.
    Float(f64),
    /// A `str` or a subclass of it.
    Str(Bound<'py, PyString>),
    /// Any other value as text: bytes decoded, dates as ISO 8601, else `str()`.
    Text(String),
    /// A dict, or a dict copy of another Mapping; `usize` identifies the
    /// original for cycle detection.
    Object(Bound<'py, PyDict>, usize),
    /// A list, tuple, set or frozenset (or a subclass), or another Sequence
    /// or Set such as a deque: its items, in iteration order.
    Array(Bound<'py, PyAny>),
    /// Converts as this value instead (an Enum's value, a model's `model_dump(mode="json")`).
    As(Bound<'py, PyAny>),
}

/// Classifies any Python object; never raises (odd objects become text).
pub fn classify<'py>(obj: &Bound<'py, PyAny>) -> Json<'py> {
    // Exact-type checks are pointer compares; the subclass checks below are
    // calls under the stable ABI, so the common leaves take the short path.
    if let Ok(s) = obj.cast_exact::<PyString>() {
        return Json::Str(s.clone());
    }
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Json::Int(i);
        }
    }
    if obj.is_none() {
        return Json::Null;
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Json::Str(s.clone());
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Json::Bool(b.is_true());
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Json::Int(i);
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Json::UInt(u);
        }
        return Json::Text(text(obj));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let f = f.value();
        return if f.is_finite() { Json::Float(f) } else { Json::Text(text(obj)) };
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        return Json::Object(dict.clone(), obj.as_ptr() as usize);
    }
    if obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyTuple>()
        || obj.is_instance_of::<PySet>()
        || obj.is_instance_of::<PyFrozenSet>()
    {
        return Json::Array(obj.clone());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Json::Text(String::from_utf8_lossy(b.as_bytes()).into_owned());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Json::Text(String::from_utf8_lossy(&b.to_vec()).into_owned());
    }
    special(obj).unwrap_or_else(|| Json::Text(text(obj)))
}

fn convert(obj: &Bound<'_, PyAny>, path: &mut Vec<usize>) -> Value {
    match classify(obj) {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Int(i) => Value::Number(i.into()),
        Json::UInt(u) => Value::Number(u.into()),
        Json::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Json::Str(s) => Value::String(s.to_string_lossy().into_owned()),
        Json::Text(t) => Value::String(t),
        Json::As(inner) => convert(&inner, path),
        Json::Object(dict, id) => container(id, path, |path| Value::Object(convert_dict(&dict, path))),
        Json::Array(items) => container(items.as_ptr() as usize, path, |path| {
            Value::Array(
                items.try_iter().map(|it| it.flatten().map(|item| convert(&item, path)).collect()).unwrap_or_default(),
            )
        }),
    }
}

/// A container's value, or a marker for a cycle or too deep a nesting.
fn container(id: usize, path: &mut Vec<usize>, f: impl FnOnce(&mut Vec<usize>) -> Value) -> Value {
    if path.contains(&id) {
        return Value::String(CYCLE_MARKER.to_owned());
    }
    if path.len() >= MAX_DEPTH {
        return Value::String(DEPTH_MARKER.to_owned());
    }
    path.push(id);
    let value = f(path);
    path.pop();
    value
}

fn convert_dict(dict: &Bound<'_, PyDict>, path: &mut Vec<usize>) -> Map<String, Value> {
    let mut map = Map::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        map.insert(key_text(&key), convert(&value, path));
    }
    map
}

/// Dates, enums, mappings and pydantic-like models, which have a better
/// JSON form than their `str()`.
fn special<'py>(obj: &Bound<'py, PyAny>) -> Option<Json<'py>> {
    let py = obj.py();
    let kinds = py_kinds(py).ok()?;
    let kinds = kinds.bind(py);
    let date_like = kinds.get_item(0).ok()?;
    if obj.is_instance(&date_like).unwrap_or(false) {
        return obj.call_method0("isoformat").ok().map(|s| Json::Text(text(&s)));
    }
    let enum_type = kinds.get_item(1).ok()?;
    if obj.is_instance(&enum_type).unwrap_or(false) {
        return obj.getattr("value").ok().map(Json::As);
    }
    let mapping = kinds.get_item(2).ok()?;
    if obj.is_instance(&mapping).unwrap_or(false) {
        let dict = PyDict::new(py);
        dict.update(obj.cast::<pyo3::types::PyMapping>().ok()?).ok()?;
        return Some(Json::Object(dict, obj.as_ptr() as usize));
    }
    // A Sequence or Set that is not a list, tuple or set (a deque, a
    // UserList): its items, as `redact()` walks them and pydantic dumps
    // them; its str() would hide a `("password", ...)` pair in plain text.
    let collections = (kinds.get_item(3).ok()?, kinds.get_item(4).ok()?);
    if (obj.is_instance(&collections.0).unwrap_or(false) || obj.is_instance(&collections.1).unwrap_or(false))
        && !obj.is_instance_of::<pyo3::types::PyRange>()
        && !obj.is_instance_of::<pyo3::types::PyMemoryView>()
    {
        return Some(Json::Array(obj.clone()));
    }
    if let Some(dumped) = model_dump(obj, Some("json")) {
        return Some(Json::As(dumped));
    }
    dataclass_dict(obj).map(|dict| Json::Object(dict, obj.as_ptr() as usize))
}

/// A pydantic-like model's `model_dump(mode=...)`: a dict, or a root model's
/// value. A dump that has a `model_dump` of its own and is not a dict is not a
/// model's: a `Mock` answers every attribute with another `Mock`, and
/// following those would never end.
fn model_dump<'py>(obj: &Bound<'py, PyAny>, mode: Option<&str>) -> Option<Bound<'py, PyAny>> {
    if obj.is_instance_of::<pyo3::types::PyType>() || !obj.hasattr("model_dump").unwrap_or(false) {
        return None;
    }
    let kwargs = PyDict::new(obj.py());
    if let Some(mode) = mode {
        kwargs.set_item("mode", mode).ok()?;
    }
    let dumped = obj.call_method("model_dump", (), Some(&kwargs)).ok()?;
    (dumped.is_instance_of::<PyDict>() || !dumped.hasattr("model_dump").unwrap_or(true)).then_some(dumped)
}

/// A dataclass instance's fields by name, as pydantic dumps it (its `str()`
/// would hide the field names that redaction matches).
fn dataclass_dict<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyDict>> {
    static FIELDS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = obj.py();
    // On the type, as `dataclasses.is_dataclass` looks: a `Mock` instance has every attribute.
    if obj.is_instance_of::<pyo3::types::PyType>() || !obj.get_type().hasattr("__dataclass_fields__").unwrap_or(false) {
        return None;
    }
    let fields = FIELDS.get_or_try_init(py, || py.import("dataclasses")?.getattr("fields").map(Bound::unbind)).ok()?;
    let dict = PyDict::new(py);
    for field in fields.bind(py).call1((obj,)).ok()?.try_iter().ok()? {
        let name = field.ok()?.getattr("name").ok()?;
        dict.set_item(&name, obj.getattr(name.cast::<PyString>().ok()?).ok()?).ok()?;
    }
    Some(dict)
}

/// An Enum member's value; `None` for anything else.
pub fn enum_value<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    let py = obj.py();
    let enum_type = py_kinds(py).ok()?.bind(py).get_item(1).ok()?;
    if obj.is_instance(&enum_type).unwrap_or(false) {
        obj.getattr("value").ok()
    } else {
        None
    }
}

/// `(date | time, Enum, Mapping, Sequence, Set)`, imported once.
fn py_kinds(py: Python<'_>) -> PyResult<&Py<PyTuple>> {
    static KINDS: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    KINDS.get_or_try_init(py, || {
        let datetime = py.import("datetime")?;
        let date_like = PyTuple::new(py, [datetime.getattr("date")?, datetime.getattr("time")?])?;
        let enum_type = py.import("enum")?.getattr("Enum")?;
        let abc = py.import("collections.abc")?;
        let (mapping, sequence, set) = (abc.getattr("Mapping")?, abc.getattr("Sequence")?, abc.getattr("Set")?);
        Ok(PyTuple::new(py, [date_like.into_any(), enum_type, mapping, sequence, set])?.unbind())
    })
}

/// A copy of `obj` in which every dict, list and tuple is new, down to
/// [`MAX_DEPTH`]; other values are shared. This is what pydantic's
/// `model_dump()` hands out for a `dict[str, Any]` field, so a caller that
/// edits a dump cannot reach into the event. A container that contains itself
/// is shared at the point where it repeats.
pub fn copy_containers<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    copy_walk(obj, &mut Vec::new())
}

fn copy_walk<'py>(obj: &Bound<'py, PyAny>, path: &mut Vec<usize>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let is_dict = obj.is_instance_of::<PyDict>();
    let simple = is_dict || obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>();
    // pydantic's model_dump() gives a model or a dataclass held in a field
    // typed `Any` as a dict of its fields (a root model as its value).
    let mut as_dict = None;
    if !simple && !is_leaf(obj) {
        match model_dump(obj, None) {
            Some(dumped) if dumped.is_instance_of::<PyDict>() => as_dict = Some(dumped.cast_into::<PyDict>()?),
            Some(root_value) => return Ok(root_value),
            None => as_dict = dataclass_dict(obj),
        }
    }
    if !simple && as_dict.is_none() {
        return Ok(obj.clone());
    }
    let id = obj.as_ptr() as usize;
    if path.len() >= MAX_DEPTH || path.contains(&id) {
        return Ok(obj.clone());
    }
    path.push(id);
    let copied = if let Some(dict) = as_dict {
        let out = PyDict::new(py);
        for (key, value) in dict.iter() {
            out.set_item(key, copy_walk(&value, path)?)?;
        }
        out.into_any()
    } else if let Ok(dict) = obj.cast::<PyDict>() {
        let out = PyDict::new(py);
        for (key, value) in dict.iter() {
            out.set_item(key, copy_walk(&value, path)?)?;
        }
        out.into_any()
    } else {
        let items = obj.try_iter()?.map(|item| copy_walk(&item?, path)).collect::<PyResult<Vec<_>>>()?;
        if obj.is_instance_of::<PyList>() {
            PyList::new(py, items)?.into_any()
        } else {
            PyTuple::new(py, items)?.into_any()
        }
    };
    path.pop();
    Ok(copied)
}

/// Scalars that are never a model or a dataclass, spared the attribute look-ups.
fn is_leaf(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_none()
        || obj.is_instance_of::<PyString>()
        || obj.is_instance_of::<PyInt>()
        || obj.is_instance_of::<PyFloat>()
        || obj.is_instance_of::<PyBytes>()
}

/// The name of a value's type, for error messages.
pub fn type_name(value: &Bound<'_, PyAny>) -> String {
    value.get_type().name().map(|n| n.to_string()).unwrap_or_default()
}

/// Python's `json.loads`, imported once: it reads what pydantic and the
/// legacy service read and serde_json does not (integers of any size,
/// `NaN` and `Infinity`, lone surrogates).
pub fn json_loads(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOADS.get_or_try_init(py, || py.import("json")?.getattr("loads").map(Bound::unbind)).map(|f| f.bind(py).clone())
}

/// `repr(obj)` cut to about 60 characters, for error messages that quote
/// the bad value. Secrets in it are masked first, by the rules details get
/// (a list of `("password", ...)` pairs passed as `details`), then by value
/// shape in the text: callers log exceptions, and a secret passed to the
/// wrong parameter must not reach a log.
pub fn short_repr(value: &Bound<'_, PyAny>) -> String {
    let shown = crate::redact::redact(value).unwrap_or_else(|_| value.clone());
    let text = shown.repr().map(|r| r.to_string_lossy().into_owned()).unwrap_or_default();
    bounded(masked(&text))
}

/// A caller's text already out of Python (an `order`, a `durability`),
/// quoted like [`short_repr`] quotes a value: secret shapes masked, cut to
/// about 60 characters.
pub fn short_text(text: &str) -> String {
    bounded(format!("{:?}", masked(text)))
}

/// `text` with secret shapes masked (tokens, URL passwords, `key=value`
/// secrets): for text an error or a log line carries whole, such as the
/// message of an exception raised by a caller's object.
pub fn masked(text: &str) -> String {
    crate::redact::Rules::shared_default().redact_text(text, 0).unwrap_or_else(|| text.to_owned())
}

/// `text` cut to about 60 characters.
fn bounded(text: String) -> String {
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    }
}

/// How the text of a value whose `str()` raises starts (see [`text`]).
pub const UNPRINTABLE: &str = "<unprintable ";

/// `str(obj)`, or its type name when even that raises.
fn text(obj: &Bound<'_, PyAny>) -> String {
    match obj.str() {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => format!("{UNPRINTABLE}{}>", type_name(obj)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::types::PyDictMethods;

    #[test]
    fn converts_nested_values_and_marks_cycles() {
        Python::attach(|py| {
            let d = PyDict::new(py);
            d.set_item("n", 1).unwrap();
            d.set_item("f", 1.5).unwrap();
            d.set_item("s", "x").unwrap();
            d.set_item("t", (1, "a")).unwrap();
            d.set_item(2, "int key").unwrap();
            d.set_item("self", &d).unwrap();
            let v = to_json(d.as_any());
            assert_eq!(v["n"], 1);
            assert_eq!(v["f"], 1.5);
            assert_eq!(v["t"], serde_json::json!([1, "a"]));
            assert_eq!(v["2"], "int key");
            assert_eq!(v["self"], CYCLE_MARKER);
        });
    }

    #[test]
    fn bounds_depth() {
        Python::attach(|py| {
            let root = PyList::empty(py);
            let mut cur = root.clone();
            for _ in 0..(MAX_DEPTH * 3) {
                let next = PyList::empty(py);
                cur.append(&next).unwrap();
                cur = next;
            }
            let text = to_json(root.as_any()).to_string();
            assert!(text.contains(DEPTH_MARKER));
        });
    }

    #[test]
    fn huge_ints_and_nan_become_text() {
        Python::attach(|py| {
            let big = py.eval(c"10**30", None, None).unwrap();
            assert_eq!(to_json(&big), Value::String("1000000000000000000000000000000".into()));
            let nan = py.eval(c"float('nan')", None, None).unwrap();
            assert_eq!(to_json(&nan), Value::String("nan".into()));
        });
    }
}
