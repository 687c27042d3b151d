//! Python bindings: `redact_dict`, `redact` and `Redactor`, and the walker
//! that goes Python -> Python directly (no JSON round trip), calling the
//! same rule functions as the JSON walker.
//!
//! Contract kept from the legacy `redact_dict`: a new dict comes back and
//! the input is never mutated; dicts and lists are copied at every level,
//! tuples become lists; other leaves (datetimes, numbers, str subclasses)
//! come back as the same objects unless they hold a secret.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyMemoryView, PyRange, PySet, PyString,
    PyTuple,
};

use super::sibling::{self, Record};
use super::walk::unique_key;
use super::{Rules, REDACTED};
use crate::errors::Error;
use crate::values::{key_text, CYCLE_MARKER, DEPTH_MARKER, MAX_DEPTH};

/// One redaction of one Python value.
struct Walker<'a, 'py> {
    rules: &'a Rules,
    py: Python<'py>,
    mask: Bound<'py, PyString>,
    /// Containers on the current path: a repeat is a cycle. Shared,
    /// non-cyclic references are redacted independently.
    path: Vec<usize>,
}

impl<'a, 'py> Walker<'a, 'py> {
    fn new(py: Python<'py>, rules: &'a Rules) -> Self {
        Self { rules, py, mask: PyString::new(py, rules.mask()), path: Vec::new() }
    }

    fn marker(&self, text: &str) -> Bound<'py, PyAny> {
        PyString::new(self.py, text).into_any()
    }

    /// The value to store under a secret name: the mask, except `None` and booleans.
    fn masked(&self, value: &Bound<'py, PyAny>) -> (Bound<'py, PyAny>, bool) {
        if value.is_none() || value.is_instance_of::<PyBool>() {
            return (value.clone(), false);
        }
        if let Ok(s) = value.cast::<PyString>() {
            if s.to_str().is_ok_and(|t| t == self.rules.mask()) {
                return (value.clone(), false);
            }
        }
        (self.mask.clone().into_any(), true)
    }

    /// Returns the redacted value and whether its content differs.
    fn walk(&mut self, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<(Bound<'py, PyAny>, bool)> {
        if let Ok(s) = obj.cast::<PyString>() {
            let text = s.to_string_lossy();
            return Ok(match self.rules.redact_text(&text, depth) {
                Some(new) => (PyString::new(self.py, &new).into_any(), true),
                None => (obj.clone(), false),
            });
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            return self.dict(d, depth);
        }
        if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
            return self.sequence(obj, depth);
        }
        if obj.is_none() || obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>() {
            return Ok((obj.clone(), false));
        }
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(self.bytes(obj, b.as_bytes(), depth));
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            let data = b.to_vec();
            return Ok(self.bytes(obj, &data, depth));
        }
        if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
            return self.keep_unless_changed(obj, depth, |w, o, d| w.sequence(o, d));
        }
        if obj.is_instance_of::<PyRange>() || obj.is_instance_of::<PyMemoryView>() {
            return Ok((obj.clone(), false));
        }
        let abcs = abcs(self.py)?.bind(self.py);
        if obj.is_instance(&abcs.get_item(0)?)? {
            // A Mapping that is not a dict (MappingProxyType, custom Mapping).
            return self.keep_unless_changed(obj, depth, |w, o, d| {
                let as_dict = PyDict::new(w.py);
                as_dict.update(o.cast::<pyo3::types::PyMapping>()?)?;
                w.dict_at(&as_dict, d, o.as_ptr() as usize)
            });
        }
        if obj.is_instance(&abcs.get_item(1)?)? || obj.is_instance(&abcs.get_item(2)?)? {
            // A Sequence or Set that is not a list/tuple/set (deque, ...).
            return self.keep_unless_changed(obj, depth, |w, o, d| w.sequence(o, d));
        }
        Ok((obj.clone(), false))
    }

    /// Redacts a container of a type the legacy kept as a leaf: the same
    /// object comes back unless something inside it was masked.
    fn keep_unless_changed(
        &mut self,
        obj: &Bound<'py, PyAny>,
        depth: usize,
        f: impl FnOnce(&mut Self, &Bound<'py, PyAny>, usize) -> PyResult<(Bound<'py, PyAny>, bool)>,
    ) -> PyResult<(Bound<'py, PyAny>, bool)> {
        let (out, changed) = f(self, obj, depth)?;
        Ok(if changed { (out, true) } else { (obj.clone(), false) })
    }

    fn bytes(&self, obj: &Bound<'py, PyAny>, data: &[u8], depth: usize) -> (Bound<'py, PyAny>, bool) {
        let text = String::from_utf8_lossy(data);
        match self.rules.redact_text(&text, depth) {
            Some(new) => (PyBytes::new(self.py, new.as_bytes()).into_any(), true),
            None => (obj.clone(), false),
        }
    }

    /// The text a key is judged by: str as is, bytes decoded, anything else
    /// as its JSON key text, exactly as the audit row will show it.
    fn key_text<'k>(key: &'k Bound<'py, PyAny>) -> Cow<'k, str> {
        if let Ok(s) = key.cast::<PyString>() {
            return s.to_str().map_or_else(|_| Cow::Owned(s.to_string_lossy().into_owned()), Cow::Borrowed);
        }
        if let Ok(b) = key.cast::<PyBytes>() {
            return Cow::Owned(String::from_utf8_lossy(b.as_bytes()).into_owned());
        }
        Cow::Owned(key_text(key))
    }

    fn dict(&mut self, dict: &Bound<'py, PyDict>, depth: usize) -> PyResult<(Bound<'py, PyAny>, bool)> {
        self.dict_at(dict, depth, dict.as_ptr() as usize)
    }

    fn dict_at(&mut self, dict: &Bound<'py, PyDict>, depth: usize, id: usize) -> PyResult<(Bound<'py, PyAny>, bool)> {
        if self.path.contains(&id) {
            return Ok((self.marker(CYCLE_MARKER), true));
        }
        if depth >= MAX_DEPTH {
            return Ok((self.marker(DEPTH_MARKER), true));
        }
        self.path.push(id);
        let out = PyDict::new(self.py);
        let mut changed = false;
        let mut record: Record<Bound<'py, PyAny>> = Record::default();
        for (key, value) in dict.iter() {
            let text = Self::key_text(&key);
            let verdict = if key.is_exact_instance_of::<PyString>() {
                // An exact str caches its hash: no user code, no rehashing.
                match key.hash() {
                    Ok(h) => self.rules.verdict_hashed(&text, h as u64),
                    Err(_) => self.rules.verdict(&text),
                }
            } else {
                self.rules.verdict(&text)
            };
            let info = verdict.info;
            let (new_value, value_changed) =
                if info.secret { self.masked(&value) } else { self.walk(&value, depth + 1)? };
            changed |= value_changed;
            let new_key = match key.cast::<PyString>() {
                Ok(_) if verdict.rewrite => match self.rules.scan_text(&text) {
                    Some(new) => {
                        changed = true;
                        let unique = unique_key(new, |k| out.contains(k).unwrap_or(true));
                        PyString::new(self.py, &unique).into_any()
                    }
                    None => key.clone(),
                },
                _ => key.clone(),
            };
            let name_text =
                if info.name_field { value.cast::<PyString>().ok().map(|s| s.to_string_lossy()) } else { None };
            record.note(self.rules, info, || new_key.clone(), name_text.as_deref());
            out.set_item(&new_key, new_value)?;
        }
        for key in record.finish() {
            if let Some(current) = out.get_item(&key)? {
                let (masked, did) = self.masked(&current);
                if did {
                    out.set_item(&key, masked)?;
                    changed = true;
                }
            }
        }
        self.path.pop();
        Ok((out.into_any(), changed))
    }

    /// Lists, tuples, sets and other iterables, as a new list.
    fn sequence(&mut self, seq: &Bound<'py, PyAny>, depth: usize) -> PyResult<(Bound<'py, PyAny>, bool)> {
        let id = seq.as_ptr() as usize;
        if self.path.contains(&id) {
            return Ok((self.marker(CYCLE_MARKER), true));
        }
        if depth >= MAX_DEPTH {
            return Ok((self.marker(DEPTH_MARKER), true));
        }
        self.path.push(id);
        let mut items = Vec::with_capacity(seq.len().unwrap_or(0));
        let mut changed = false;
        for item in seq.try_iter()? {
            let item = item?;
            let (new, did) = match self.secret_pair(&item)? {
                Some((name, value)) => {
                    let (name, name_changed) = self.walk(&name, depth + 2)?;
                    let (value, masked) = self.masked(&value);
                    (PyList::new(self.py, [name, value])?.into_any(), name_changed || masked)
                }
                None => self.walk(&item, depth + 1)?,
            };
            changed |= did;
            items.push(new);
        }
        self.path.pop();
        Ok((PyList::new(self.py, items)?.into_any(), changed))
    }

    /// A `[name, value]` item whose name is secret.
    fn secret_pair(&self, item: &Bound<'py, PyAny>) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        if !(item.is_instance_of::<PyList>() || item.is_instance_of::<PyTuple>()) || item.len()? != 2 {
            return Ok(None);
        }
        let name = item.get_item(0)?;
        let Ok(text) = name.cast::<PyString>() else { return Ok(None) };
        if !sibling::pair_is_secret(self.rules, &text.to_string_lossy()) {
            return Ok(None);
        }
        Ok(Some((name.clone(), item.get_item(1)?)))
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
fn guarded<'py>(f: impl FnOnce() -> PyResult<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::invalid("data", "a container changed while it was being redacted; redact a stable copy").into())
    })
}

fn redact_with<'py>(rules: &Rules, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = value.py();
    guarded(|| Walker::new(py, rules).walk(value, 0).map(|(out, _)| out))
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
        let type_name = data.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        return Err(Error::Type(format!(
            "redact_dict() expects a dict (or any Mapping), got {type_name}; use auditbus.redact() for other values"
        ))
        .into());
    };
    guarded(|| {
        let mut walker = Walker::new(py, rules);
        let (out, _) = walker.dict_at(&dict, 0, data.as_ptr() as usize)?;
        Ok(out)
    })
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
        let type_name = got.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        Error::Type(format!(
            "{field} must be an iterable of key names (str), such as ['employee_ssn'], got {type_name}"
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

#[pymethods]
impl Redactor {
    #[new]
    #[pyo3(signature = (*, extra_keys = None, safe_keys = None, patterns = true, mask = REDACTED.to_owned()))]
    fn py_new(
        extra_keys: Option<&Bound<'_, PyAny>>,
        safe_keys: Option<&Bound<'_, PyAny>>,
        patterns: bool,
        mask: String,
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
