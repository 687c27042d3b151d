//! Python bindings: `redact_dict`, `redact` and `Redactor`, and the sink
//! that makes the walker's output Python objects (no JSON round trip).
//!
//! Contract kept from the legacy `redact_dict`: a new dict comes back and
//! the input is never mutated; dicts and lists are copied at every level,
//! tuples become lists; other leaves (datetimes, numbers, str subclasses,
//! any object) come back as the same objects unless the form an audit row
//! stores them in holds a secret, and then as that form, redacted.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyMemoryView, PyRange, PySet, PyString,
    PyTuple,
};

use super::walker::{Key, Sink, Walker};
use super::{Rules, REDACTED};
use crate::errors::Error;
use crate::values::{classify, type_name};

/// Builds the redacted Python value: dicts and lists are new at every
/// level, unchanged leaves are the original objects.
pub struct Objects<'py> {
    py: Python<'py>,
    mask: Bound<'py, PyString>,
}

impl<'py> Objects<'py> {
    fn new(py: Python<'py>, rules: &Rules) -> Self {
        Self { py, mask: PyString::new(py, rules.mask()) }
    }
}

type W<'a, 'py> = Walker<'a, 'py, Objects<'py>>;

/// A dict under construction: a copy of the input whose changed entries
/// are replaced (`patch`), or a new dict filled entry by entry.
pub struct Building<'py> {
    dict: Bound<'py, PyDict>,
    patch: bool,
}

impl<'py> Sink<'py> for Objects<'py> {
    type Out = Bound<'py, PyAny>;
    type Map = Building<'py>;
    type Seq = Vec<Bound<'py, PyAny>>;

    const TEXT_KEYS: bool = false;

    fn same_text(&mut self, obj: &Bound<'py, PyAny>, _text: &str) -> PyResult<Self::Out> {
        Ok(obj.clone())
    }

    fn fresh_text(&mut self, text: &str) -> PyResult<Self::Out> {
        Ok(PyString::new(self.py, text).into_any())
    }

    fn mask(&mut self) -> PyResult<Self::Out> {
        Ok(self.mask.clone().into_any())
    }

    fn begin_map(&mut self, like: Option<&Bound<'py, PyDict>>) -> PyResult<Self::Map> {
        // Copying a dict is one C call; only the entries that change are
        // then set, instead of every entry.
        Ok(match like.filter(|d| d.is_exact_instance_of::<PyDict>()) {
            Some(dict) => Building { dict: dict.copy()?, patch: true },
            None => Building { dict: PyDict::new(self.py), patch: false },
        })
    }

    fn key(&mut self, _map: &mut Self::Map, _key: &Key<'_, 'py>) -> PyResult<()> {
        Ok(())
    }

    fn value(
        &mut self,
        map: &mut Self::Map,
        key: &Key<'_, 'py>,
        original: &Bound<'py, PyAny>,
        value: Self::Out,
    ) -> PyResult<()> {
        if map.patch {
            if !value.is(original) {
                map.dict.set_item(key.obj, value)?;
            }
            return Ok(());
        }
        if key.fresh {
            map.dict.set_item(PyString::new(self.py, key.text), value)
        } else {
            map.dict.set_item(key.obj, value)
        }
    }

    fn end_map(&mut self, map: Self::Map) -> PyResult<Self::Out> {
        Ok(map.dict.into_any())
    }

    fn abandon_map(&mut self, _map: Self::Map) {}

    fn begin_seq(&mut self) -> Self::Seq {
        Vec::new()
    }

    fn next_item(&mut self, _seq: &mut Self::Seq) {}

    fn item(&mut self, seq: &mut Self::Seq, item: Self::Out) {
        seq.push(item);
    }

    fn end_seq(&mut self, seq: Self::Seq) -> PyResult<Self::Out> {
        Ok(PyList::new(self.py, seq)?.into_any())
    }

    fn leaf(w: &mut W<'_, 'py>, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<Self::Out> {
        if obj.is_none()
            || obj.is_exact_instance_of::<PyBool>()
            || obj.is_exact_instance_of::<PyInt>()
            || obj.is_exact_instance_of::<PyFloat>()
        {
            return Ok(obj.clone());
        }
        if let Ok(s) = obj.cast::<PyString>() {
            return w.text(obj, &s.to_string_lossy(), depth);
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            return w.dict(d, &[], depth, obj.as_ptr() as usize);
        }
        if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
            return w.seq(obj, depth);
        }
        if obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>() {
            return Ok(obj.clone());
        }
        if let Ok(b) = obj.cast::<PyBytes>() {
            return bytes(w, obj, b.as_bytes(), depth);
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            return bytes(w, obj, &b.to_vec(), depth);
        }
        if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
            return keep_unless_changed(w, obj, |w| w.seq(obj, depth));
        }
        if obj.is_instance_of::<PyRange>() || obj.is_instance_of::<PyMemoryView>() {
            return Ok(obj.clone());
        }
        let abcs = abcs(w.sink.py)?.bind(w.sink.py);
        if obj.is_instance(&abcs.get_item(0)?)? {
            // A Mapping that is not a dict (MappingProxyType, custom Mapping).
            return keep_unless_changed(w, obj, |w| {
                let as_dict = PyDict::new(w.sink.py);
                as_dict.update(obj.cast::<pyo3::types::PyMapping>()?)?;
                w.dict(&as_dict, &[], depth, obj.as_ptr() as usize)
            });
        }
        if obj.is_instance(&abcs.get_item(1)?)? || obj.is_instance(&abcs.get_item(2)?)? {
            // A Sequence or Set that is not a list/tuple/set (deque, ...).
            return keep_unless_changed(w, obj, |w| w.seq(obj, depth));
        }
        // Any other object (a dataclass, a model, an Enum, an exception, a
        // date) is judged in the form an audit row stores it in: its JSON
        // form or its text. Kept whole when that holds a secret, it would
        // carry the secret into whatever logs the result.
        keep_unless_changed(w, obj, |w| w.stored_form(obj, &classify(obj), depth).unwrap_or_else(|| Ok(obj.clone())))
    }

    fn mask_leaf(w: &mut W<'_, 'py>, obj: &Bound<'py, PyAny>, _depth: usize) -> PyResult<Self::Out> {
        if let Ok(s) = obj.cast::<PyString>() {
            if s.to_str().is_ok_and(|t| t == w.rules.mask()) {
                return Ok(obj.clone());
            }
        }
        w.mask()
    }
}

/// Redacts a container of a type the legacy kept as a leaf: the same
/// object comes back unless something inside it was masked.
fn keep_unless_changed<'py>(
    w: &mut W<'_, 'py>,
    obj: &Bound<'py, PyAny>,
    f: impl FnOnce(&mut W<'_, 'py>) -> PyResult<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mark = w.changes();
    let out = f(w)?;
    Ok(if w.changed_since(mark) { out } else { obj.clone() })
}

/// Bytes are judged as text and stay bytes.
fn bytes<'py>(w: &mut W<'_, 'py>, obj: &Bound<'py, PyAny>, data: &[u8], depth: usize) -> PyResult<Bound<'py, PyAny>> {
    let text = String::from_utf8_lossy(data);
    match w.rules.redact_text(&text, depth) {
        Some(new) => {
            w.note_change();
            Ok(PyBytes::new(w.sink.py, new.as_bytes()).into_any())
        }
        None => Ok(obj.clone()),
    }
}

/// `(Mapping, Sequence, Set)` from `collections.abc`, imported once.
fn abcs(py: Python<'_>) -> PyResult<&Py<PyTuple>> {
    static ABCS: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    ABCS.get_or_try_init(py, || {
        let abc = py.import("collections.abc")?;
        Ok(PyTuple::new(py, [abc.getattr("Mapping")?, abc.getattr("Sequence")?, abc.getattr("Set")?])?.unbind())
    })
}

/// Runs a walk; a container mutated by code the walk triggered (a hostile
/// `__hash__` or `__eq__`) makes PyO3's iterator panic: that becomes a
/// Python error here instead of crossing the boundary as a panic.
pub fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::invalid("data", "a container changed while it was being redacted; redact a stable copy").into())
    })
}

fn redact_with<'py>(rules: &Rules, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = value.py();
    guarded(|| Walker::new(rules, Objects::new(py, rules)).walk(value, 0))
}

fn redact_dict_with<'py>(rules: &Rules, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = data.py();
    let dict = if let Ok(d) = data.cast::<PyDict>() {
        d.clone()
    } else if data.is_instance(&abcs(py)?.bind(py).get_item(0)?)? {
        let d = PyDict::new(py);
        d.update(data.cast::<pyo3::types::PyMapping>()?)?;
        d
    } else {
        return Err(Error::Type(format!(
            "redact_dict() expects a dict (or any Mapping), got {}; use auditbus.redact() for other values",
            type_name(data)
        ))
        .into());
    };
    guarded(|| Walker::new(rules, Objects::new(py, rules)).dict(&dict, &[], 0, data.as_ptr() as usize))
}

/// `auditbus.redact_dict(data)`: a new dict with every secret masked; the
/// input is left untouched. The legacy name and contract.
#[pyfunction]
pub fn redact_dict<'py>(data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    redact_dict_with(&Rules::shared_default(), data)
}

/// `auditbus.redact(value)`: any JSON-like value with every secret masked.
#[pyfunction]
pub fn redact<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    redact_with(&Rules::shared_default(), value)
}

/// `auditbus.Redactor`: a configured rule set.
#[pyclass(frozen, module = "auditbus", name = "Redactor")]
pub struct Redactor {
    rules: Arc<Rules>,
    extra_keys: Vec<String>,
    safe_keys: Vec<String>,
}

impl Redactor {
    /// The rule set, for the audit writer.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.clone()
    }
}

/// A list of key names from Python: any iterable of str, but not a bare str
/// (which would iterate as single characters).
fn names(field: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let wrong = |got: &Bound<'_, PyAny>| -> PyErr {
        Error::Type(format!(
            "{field} must be an iterable of key names (str), such as ['employee_ssn'], got {}",
            type_name(got)
        ))
        .into()
    };
    if value.is_instance_of::<PyString>() || value.is_instance_of::<PyBytes>() {
        return Err(wrong(value));
    }
    let mut out = Vec::new();
    for item in value.try_iter().map_err(|_| wrong(value))? {
        let item = item?;
        let Ok(s) = item.cast::<PyString>() else { return Err(wrong(&item)) };
        out.push(s.to_string_lossy().into_owned());
    }
    Ok(out)
}

/// `patterns`: exactly `True` or `False` (a truthy `1` or `"no"` is a mistake, not a choice).
fn patterns_flag(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    match value.cast::<PyBool>() {
        Ok(b) => Ok(b.is_true()),
        Err(_) => Err(Error::Type(format!(
            "patterns must be True or False, got {} {}",
            type_name(value),
            value.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
        .into()),
    }
}

/// `mask`: a str that can be written as UTF-8 (the audit row is UTF-8 text).
fn mask_text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    let Ok(s) = value.cast::<PyString>() else {
        return Err(Error::Type(format!("mask must be a str, such as '[Filtered]', got {}", type_name(value))).into());
    };
    match s.to_str() {
        Ok(text) => Ok(text.to_owned()),
        Err(_) => Err(Error::invalid(
            "mask",
            format!(
                "must be encodable as UTF-8 (no lone surrogates), got {}",
                s.repr().map(|r| r.to_string()).unwrap_or_default()
            ),
        )
        .into()),
    }
}

#[pymethods]
impl Redactor {
    #[new]
    #[pyo3(signature = (*, extra_keys = None, safe_keys = None, patterns = true, mask = REDACTED.to_owned()))]
    fn py_new(
        extra_keys: Option<&Bound<'_, PyAny>>,
        safe_keys: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = patterns_flag)] patterns: bool,
        #[pyo3(from_py_with = mask_text)] mask: String,
    ) -> PyResult<Self> {
        let extra_keys = names("extra_keys", extra_keys)?;
        let safe_keys = names("safe_keys", safe_keys)?;
        let rules = Rules::new(&extra_keys, &safe_keys, patterns, &mask)?;
        Ok(Self { rules: Arc::new(rules), extra_keys, safe_keys })
    }

    /// Any JSON-like value with every secret masked; the input is untouched.
    fn redact<'py>(&self, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        redact_with(&self.rules, value)
    }

    /// A new dict with every secret masked; the input is untouched.
    fn redact_dict<'py>(&self, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        redact_dict_with(&self.rules, data)
    }

    #[getter]
    fn mask(&self) -> &str {
        self.rules.mask()
    }

    #[getter]
    fn patterns(&self) -> bool {
        self.rules.patterns()
    }

    #[getter]
    fn extra_keys(&self) -> Vec<String> {
        self.extra_keys.clone()
    }

    #[getter]
    fn safe_keys(&self) -> Vec<String> {
        self.safe_keys.clone()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Redactor(extra_keys={}, safe_keys={}, patterns={}, mask={})",
            PyList::new(py, &self.extra_keys)?.repr()?,
            PyList::new(py, &self.safe_keys)?.repr()?,
            if self.rules.patterns() { "True" } else { "False" },
            PyString::new(py, self.rules.mask()).repr()?
        ))
    }
}
