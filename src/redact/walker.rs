//! The one walker over Python values. It applies every rule — key names,
//! sibling names, `[name, value]` pairs, value shapes, cycles and depth —
//! and hands each result to a [`Sink`], which builds the output:
//! [`super::py::Objects`] the redacted Python value (`redact_dict`),
//! [`super::text::JsonText`] the redacted JSON text of an audit row, written
//! directly (no intermediate tree, no second walk).
//!
//! The common shapes (exact `str` keys, `str`/`dict`/`list`/`tuple` values)
//! take a fast path of pointer compares; a mapping whose keys need care
//! (non-`str` keys, keys that hold a secret, a name field that comes after
//! the values it names) is redone by [`Walker::dict_general`].

use std::borrow::Cow;
use std::collections::HashSet;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::sibling::ArgItem;
use super::walk::unique_key;
use super::Rules;
use crate::values::{key_text, Json, CYCLE_MARKER, DEPTH_MARKER, MAX_DEPTH, UNPRINTABLE};

/// Extra `(key, value)` entries walked as if they were in the mapping.
pub type Extra<'py> = [(Bound<'py, PyAny>, Bound<'py, PyAny>)];

/// A mapping key as the output has it.
pub struct Key<'k, 'py> {
    /// The original key.
    pub obj: &'k Bound<'py, PyAny>,
    /// Its text in the output.
    pub text: &'k str,
    /// The text is not the original key's (rewritten or made unique).
    pub fresh: bool,
    /// The text needs no JSON escape (known from the key cache; `false` when unknown).
    pub plain: bool,
}

/// Builds the output of a walk. `Out` is what one walked value yields.
pub trait Sink<'py>: Sized {
    type Out;
    type Map;
    type Seq;

    /// Keys are text in the output (JSON), so every key is renamed when it
    /// holds a secret and kept unique; otherwise only `str` keys are.
    const TEXT_KEYS: bool;

    /// An unchanged text value; `obj` is the original.
    fn same_text(&mut self, obj: &Bound<'py, PyAny>, text: &str) -> PyResult<Self::Out>;
    /// An unchanged `str` value holding lone surrogates (a file name decoded
    /// with `surrogateescape`); `text` is its UTF-8 form, each replaced.
    fn same_lossy_text(&mut self, obj: &Bound<'py, PyAny>, text: &str) -> PyResult<Self::Out> {
        self.same_text(obj, text)
    }
    /// A new text value (redacted text, a marker).
    fn fresh_text(&mut self, text: &str) -> PyResult<Self::Out>;
    /// The mask.
    fn mask(&mut self) -> PyResult<Self::Out>;

    /// Starts a mapping. `like` is the mapping walked when the output has
    /// its keys in its order: a sink may start from a copy of it.
    fn begin_map(&mut self, like: Option<&Bound<'py, PyDict>>) -> PyResult<Self::Map>;
    /// Starts an entry (called before its value is walked).
    fn key(&mut self, map: &mut Self::Map, key: &Key<'_, 'py>) -> PyResult<()>;
    /// Ends the entry: `original` is the value walked, `value` its output.
    fn value(
        &mut self,
        map: &mut Self::Map,
        key: &Key<'_, 'py>,
        original: &Bound<'py, PyAny>,
        value: Self::Out,
    ) -> PyResult<()>;
    fn end_map(&mut self, map: Self::Map) -> PyResult<Self::Out>;
    /// Drops a mapping begun but not finished (the walker redoes it).
    fn abandon_map(&mut self, map: Self::Map);

    fn begin_seq(&mut self) -> Self::Seq;
    /// Called before each item is walked.
    fn next_item(&mut self, seq: &mut Self::Seq);
    fn item(&mut self, seq: &mut Self::Seq, item: Self::Out);
    fn end_seq(&mut self, seq: Self::Seq) -> PyResult<Self::Out>;

    /// Every value that is not a `str`, `dict`, `list` or `tuple` (exact types).
    fn leaf(w: &mut Walker<'_, 'py, Self>, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<Self::Out>;
    /// A value under a secret name that is not `None`, a bool, or an exact
    /// builtin: masked unless its output is `None`, a bool or the mask.
    fn mask_leaf(w: &mut Walker<'_, 'py, Self>, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<Self::Out>;

    /// The text a value has as a *name* (sibling rule, pair rule).
    fn name_text<'b>(value: &'b Bound<'py, PyAny>) -> Option<Cow<'b, str>> {
        name_text(value)
    }
}

/// The text a value has as a *name*, as the audit row shows it: a str,
/// bytes as text (`[b"x-api-key", ...]` ASGI headers), an Enum member by
/// its value (`{"key": Setting.API_KEY, "new_value": ...}`).
pub fn name_text<'b>(value: &'b Bound<'_, PyAny>) -> Option<Cow<'b, str>> {
    if let Some(text) = plain_name_text(value) {
        return Some(text);
    }
    // Builtins are never Enum members: pointer compares keep `[[1, 2], ...]` cheap.
    if value.is_none()
        || value.is_exact_instance_of::<PyInt>()
        || value.is_exact_instance_of::<PyFloat>()
        || value.is_exact_instance_of::<PyBool>()
        || value.is_exact_instance_of::<PyList>()
        || value.is_exact_instance_of::<PyTuple>()
        || value.is_exact_instance_of::<PyDict>()
    {
        return None;
    }
    let member_value = crate::values::enum_value(value)?;
    plain_name_text(&member_value).map(|text| Cow::Owned(text.into_owned()))
}

fn plain_name_text<'b>(value: &'b Bound<'_, PyAny>) -> Option<Cow<'b, str>> {
    if let Ok(s) = value.cast::<PyString>() {
        return Some(s.to_string_lossy());
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return Some(String::from_utf8_lossy(b.as_bytes()));
    }
    if let Ok(b) = value.cast::<PyByteArray>() {
        return Some(Cow::Owned(String::from_utf8_lossy(&b.to_vec()).into_owned()));
    }
    None
}

/// What a named tuple's field name says of its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Plain,
    /// A secret name: the item is masked.
    Secret,
    /// `netloc`, a URL's authority (`urllib.parse`'s `ParseResult`, `SplitResult`).
    Authority,
}

/// What a mapping's name fields said so far (the sibling rule).
struct Names<'py> {
    /// A name field names a secret: the value fields are masked.
    secret: bool,
    /// A value field has been written.
    value_seen: bool,
    /// Name fields not judged yet: a name matters only once a value field
    /// comes, and most records with a `name` or `path` have none.
    pending: [Option<Bound<'py, PyAny>>; 2],
    /// A `kind: Secret` member: the mapping is a Kubernetes Secret.
    secret_manifest: bool,
    /// A `data` or `stringData` member has been written.
    data_seen: bool,
}

impl Names<'_> {
    fn new() -> Self {
        Self { secret: false, value_seen: false, pending: [None, None], secret_manifest: false, data_seen: false }
    }
}

/// Notes a `kind` or `data` member of a mapping that may be a Kubernetes
/// Secret; `false` when the mapping needs the general path (a `kind:
/// Secret` after the data it makes secret, as kubectl sorts keys). Rare
/// keys: kept out of line, off the path of every other key.
#[cold]
#[inline(never)]
fn manifest_member(names: &mut Names<'_>, kind: bool, value: &Bound<'_, PyAny>) -> bool {
    if kind {
        if !names.secret_manifest && secret_kind(value) {
            if names.data_seen {
                return false;
            }
            names.secret_manifest = true;
        }
    } else {
        names.data_seen = true;
    }
    true
}

/// Whether a `kind` member's value says its mapping is a Kubernetes Secret.
fn secret_kind(value: &Bound<'_, PyAny>) -> bool {
    value.cast_exact::<PyString>().is_ok_and(|s| s.to_str().is_ok_and(super::keys::secret_kind))
}

/// One redaction of one Python value into a sink.
pub struct Walker<'a, 'py, S: Sink<'py>> {
    pub rules: &'a Rules,
    pub sink: S,
    /// Containers on the current path: a repeat is a cycle. Shared,
    /// non-cyclic references are redacted independently.
    path: Vec<usize>,
    /// Counts outputs that differ from their input (see [`Walker::changed_since`]).
    changes: usize,
    _py: std::marker::PhantomData<Python<'py>>,
}

impl<'a, 'py, S: Sink<'py>> Walker<'a, 'py, S> {
    pub fn new(rules: &'a Rules, sink: S) -> Self {
        Self { rules, sink, path: Vec::new(), changes: 0, _py: std::marker::PhantomData }
    }

    /// A mark to compare with [`Walker::changed_since`].
    pub fn changes(&self) -> usize {
        self.changes
    }

    /// Whether any output differed from its input since `mark`.
    pub fn changed_since(&self, mark: usize) -> bool {
        self.changes != mark
    }

    /// Walks one value at nesting `depth`.
    #[inline(always)]
    pub fn walk(&mut self, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<S::Out> {
        if let Ok(s) = obj.cast_exact::<PyString>() {
            return match s.to_str() {
                Ok(text) => self.text(obj, text, depth),
                Err(_) => self.lossy_text(obj, s, depth),
            };
        }
        if let Ok(d) = obj.cast_exact::<PyDict>() {
            return self.dict(d, &[], depth, obj.as_ptr() as usize);
        }
        if obj.is_exact_instance_of::<PyList>() || obj.is_exact_instance_of::<PyTuple>() {
            return self.seq(obj, depth);
        }
        S::leaf(self, obj, depth)
    }

    /// Walks a value in the form an audit row stores it in (`form`, from
    /// [`crate::values::classify`]): its text, a mapping, a sequence (read
    /// leniently: an item that raises is left out, the row is still written)
    /// or the value it converts as; `None` for a scalar, which the sink writes.
    pub fn stored_form(&mut self, obj: &Bound<'py, PyAny>, form: &Json<'py>, depth: usize) -> Option<PyResult<S::Out>> {
        Some(match form {
            Json::Str(s) => match s.to_str() {
                Ok(text) => self.text(obj, text, depth),
                Err(_) => self.lossy_text(obj, s, depth),
            },
            Json::Text(t) => self.text(obj, t, depth),
            Json::Object(dict, id) => self.dict(dict, &[], depth, *id),
            Json::Array(items) => self.seq_lenient(items, depth),
            Json::As(inner) => self.walk(inner, depth),
            Json::Null | Json::Bool(_) | Json::Int(_) | Json::UInt(_) | Json::Float(_) => return None,
        })
    }

    /// A text value: redacted when it holds a secret.
    #[inline(always)]
    pub fn text(&mut self, obj: &Bound<'py, PyAny>, text: &str, depth: usize) -> PyResult<S::Out> {
        match self.rules.redact_text(text, depth) {
            Some(new) => self.fresh_text(&new),
            None => self.sink.same_text(obj, text),
        }
    }

    /// A `str` with lone surrogates: judged by its UTF-8 form, kept whole
    /// when that holds no secret.
    fn lossy_text(&mut self, obj: &Bound<'py, PyAny>, s: &Bound<'py, PyString>, depth: usize) -> PyResult<S::Out> {
        let text = s.to_string_lossy();
        match self.rules.redact_text(&text, depth) {
            Some(new) => self.fresh_text(&new),
            None => self.sink.same_lossy_text(obj, &text),
        }
    }

    pub fn fresh_text(&mut self, text: &str) -> PyResult<S::Out> {
        self.changes += 1;
        self.sink.fresh_text(text)
    }

    /// Records an output that differs from its input, made by the sink.
    pub fn note_change(&mut self) {
        self.changes += 1;
    }

    pub fn mask(&mut self) -> PyResult<S::Out> {
        self.changes += 1;
        self.sink.mask()
    }

    /// The value to store under a secret name: the mask, except `None`,
    /// booleans and the mask itself, which stay.
    pub fn masked(&mut self, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<S::Out> {
        if obj.is_none() || obj.is_exact_instance_of::<PyBool>() {
            return S::leaf(self, obj, depth);
        }
        if let Ok(s) = obj.cast_exact::<PyString>() {
            return match s.to_str() {
                Ok(text) if text == self.rules.mask() => self.sink.same_text(obj, text),
                _ => self.mask(),
            };
        }
        if obj.is_exact_instance_of::<pyo3::types::PyInt>()
            || obj.is_exact_instance_of::<pyo3::types::PyFloat>()
            || obj.is_exact_instance_of::<PyDict>()
            || obj.is_exact_instance_of::<PyList>()
            || obj.is_exact_instance_of::<PyTuple>()
        {
            return self.mask();
        }
        S::mask_leaf(self, obj, depth)
    }

    /// Walks a mapping; `id` identifies it on the path (a non-dict Mapping
    /// is walked as a dict copy but is the original on the path), `extra`
    /// entries are walked as if they were in it.
    pub fn dict(&mut self, dict: &Bound<'py, PyDict>, extra: &Extra<'py>, depth: usize, id: usize) -> PyResult<S::Out> {
        if self.path.contains(&id) {
            return self.fresh_text(CYCLE_MARKER);
        }
        if depth >= MAX_DEPTH {
            return self.fresh_text(DEPTH_MARKER);
        }
        self.path.push(id);
        let mark = self.changes;
        let out = match self.dict_fast(dict, extra, depth)? {
            Some(out) => out,
            None => {
                self.changes = mark;
                self.dict_general(dict, extra, depth)?
            }
        };
        self.path.pop();
        Ok(out)
    }

    /// One pass over a mapping of exact `str` keys, which is nearly every
    /// mapping; `None` when the mapping needs [`Walker::dict_general`].
    fn dict_fast(&mut self, dict: &Bound<'py, PyDict>, extra: &Extra<'py>, depth: usize) -> PyResult<Option<S::Out>> {
        let mut map = self.sink.begin_map(extra.is_empty().then_some(dict))?;
        let mut names = Names::new();
        for (key, value) in dict.iter() {
            if !self.fast_entry(&mut map, &mut names, &key, &value, depth)? {
                return self.bail(map);
            }
        }
        for (key, value) in extra {
            if !self.fast_entry(&mut map, &mut names, key, value, depth)? {
                return self.bail(map);
            }
        }
        self.sink.end_map(map).map(Some)
    }

    /// One entry of [`Walker::dict_fast`]; `false` when the mapping needs the general path.
    #[inline(always)]
    fn fast_entry(
        &mut self,
        map: &mut S::Map,
        names: &mut Names<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        depth: usize,
    ) -> PyResult<bool> {
        let Ok(s) = key.cast_exact::<PyString>() else { return Ok(false) };
        // An exact str caches its hash: no user code, no rehashing.
        let Ok(text) = s.to_str() else { return Ok(false) };
        let Ok(hash) = key.hash() else { return Ok(false) };
        let verdict = self.rules.verdict_hashed(text, hash as u64);
        if verdict.general {
            return Ok(false);
        }
        let info = verdict.info;
        if info.name_field && !names.secret {
            if names.value_seen {
                // A name that comes after a value it names: the values
                // already written were not masked.
                if self.names_secret(value) {
                    return Ok(false);
                }
            } else if let Some(slot) = names.pending.iter_mut().find(|slot| slot.is_none()) {
                *slot = Some(value.clone());
            } else if self.names_secret(value) {
                names.secret = true;
            }
        }
        if info.value_field && !names.secret {
            for name in names.pending.iter_mut().filter_map(Option::take) {
                names.secret |= self.names_secret(&name);
            }
        }
        names.value_seen |= info.value_field;
        if (info.manifest_kind || info.manifest_data) && !manifest_member(names, info.manifest_kind, value) {
            return Ok(false);
        }
        let k = Key { obj: key, text, fresh: false, plain: verdict.plain };
        self.sink.key(map, &k)?;
        let out = if info.secret || (info.value_field && names.secret) || (info.manifest_data && names.secret_manifest)
        {
            self.masked(value, depth + 1)?
        } else {
            self.walk(value, depth + 1)?
        };
        self.sink.value(map, &k, value, out)?;
        Ok(true)
    }

    /// Whether `value`, as a name field's value, names a secret.
    fn names_secret(&self, value: &Bound<'py, PyAny>) -> bool {
        S::name_text(value).is_some_and(|n| self.rules.key_is_secret(&n))
    }

    fn bail(&mut self, map: S::Map) -> PyResult<Option<S::Out>> {
        self.sink.abandon_map(map);
        Ok(None)
    }

    /// Any mapping: keys of any type, keys that hold a secret themselves
    /// (`{"password=hunter2": 1}`, rewritten), and sibling names anywhere.
    /// Rewritten keys that collide with another key get ` #2`, ` #3`, ...:
    /// merging them would lose an entry.
    fn dict_general(&mut self, dict: &Bound<'py, PyDict>, extra: &Extra<'py>, depth: usize) -> PyResult<S::Out> {
        let mut secret_name = false;
        let mut jwk = false;
        let mut secret_manifest = false;
        for (key, value) in dict.iter().chain(extra.iter().cloned()) {
            let info = self.rules.verdict(&entry_key_text(&key)).info;
            jwk |= info.jwk_type;
            secret_manifest |= info.manifest_kind && secret_kind(&value);
            if !secret_name && info.name_field && S::name_text(&value).is_some_and(|n| self.rules.key_is_secret(&n)) {
                secret_name = true;
            }
        }
        let mut taken: HashSet<String> = HashSet::new();
        let mut map = self.sink.begin_map(None)?;
        for (key, value) in dict.iter().chain(extra.iter().cloned()) {
            let text = entry_key_text(&key);
            let verdict = self.rules.verdict(&text);
            // A key whose `str()` raised cannot be judged: its value is masked.
            let unreadable = !key.is_instance_of::<PyString>() && text.contains(UNPRINTABLE);
            let text_key = S::TEXT_KEYS || key.is_instance_of::<PyString>();
            let (final_text, fresh) = if text_key {
                let rewritten = if verdict.rewrite { self.rules.scan_text(&text) } else { None };
                let candidate = rewritten.unwrap_or_else(|| text.clone());
                let unique = unique_key(candidate, |k| taken.contains(k));
                taken.insert(unique.clone());
                let fresh = unique != text;
                (unique, fresh)
            } else {
                (text, false)
            };
            if fresh {
                self.changes += 1;
            }
            let k = Key { obj: &key, text: &final_text, fresh, plain: false };
            self.sink.key(&mut map, &k)?;
            let info = verdict.info;
            let out = if info.secret
                || (info.value_field && secret_name)
                || (info.jwk_private && jwk)
                || (info.manifest_data && secret_manifest)
                || unreadable
            {
                self.masked(&value, depth + 1)?
            } else {
                self.walk(&value, depth + 1)?
            };
            self.sink.value(&mut map, &k, &value, out)?;
        }
        self.sink.end_map(map)
    }

    /// Lists, tuples and any other iterable, as a sequence.
    pub fn seq(&mut self, seq: &Bound<'py, PyAny>, depth: usize) -> PyResult<S::Out> {
        self.seq_from(seq, depth, false)
    }

    /// [`Walker::seq`], leaving out items that raise (and everything when
    /// iteration cannot start): an audit row is written whatever its details hold.
    pub fn seq_lenient(&mut self, seq: &Bound<'py, PyAny>, depth: usize) -> PyResult<S::Out> {
        self.seq_from(seq, depth, true)
    }

    fn seq_from(&mut self, seq: &Bound<'py, PyAny>, depth: usize, lenient: bool) -> PyResult<S::Out> {
        let id = seq.as_ptr() as usize;
        if self.path.contains(&id) {
            return self.fresh_text(CYCLE_MARKER);
        }
        if depth >= MAX_DEPTH {
            return self.fresh_text(DEPTH_MARKER);
        }
        self.path.push(id);
        let mut out = self.sink.begin_seq();
        if let Ok(list) = seq.cast_exact::<PyList>() {
            self.arg_items(&mut out, || list.iter(), depth)?;
        } else if let Ok(tuple) = seq.cast_exact::<PyTuple>() {
            self.arg_items(&mut out, || tuple.iter(), depth)?;
        } else if let Ok(tuple) = seq.cast::<PyTuple>() {
            // A named tuple is written as a list, without its field names:
            // the field name decides here, as a key would.
            let fields = self.field_roles(tuple);
            for (i, item) in tuple.iter().enumerate() {
                match fields.get(i).copied().unwrap_or(Field::Plain) {
                    Field::Secret => {
                        self.sink.next_item(&mut out);
                        let value = self.masked(&item, depth + 1)?;
                        self.sink.item(&mut out, value);
                    }
                    Field::Authority if item.is_exact_instance_of::<PyString>() => {
                        self.sink.next_item(&mut out);
                        let value = self.authority(&item, depth + 1)?;
                        self.sink.item(&mut out, value);
                    }
                    _ => self.seq_item(&mut out, &item, depth)?,
                }
            }
        } else {
            match seq.try_iter() {
                Ok(items) => {
                    for item in items {
                        match item {
                            Ok(item) => self.seq_item(&mut out, &item, depth)?,
                            Err(_) if lenient => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(_) if lenient => {}
                Err(e) => return Err(e),
            }
        }
        self.path.pop();
        self.sink.end_seq(out)
    }

    /// The items of a list or tuple, read as one command's arguments: a
    /// secret flag's value (`["--password", "pw"]`, `["sshpass", "-p",
    /// "pw"]`), and what the command line's scan finds (see
    /// [`Walker::command_line`]). `items` gives the items afresh each call.
    fn arg_items<I>(&mut self, out: &mut S::Seq, items: impl Fn() -> I, depth: usize) -> PyResult<()>
    where
        I: ExactSizeIterator<Item = Bound<'py, PyAny>>,
    {
        let mut args = super::sibling::ArgList::default();
        match if items().len() > 1 { self.command_line(items()) } else { None } {
            // Most lists: no command line to look up item by item.
            None => {
                for item in items() {
                    self.arg_item(out, &item, depth, &mut args, None)?;
                }
            }
            Some(line) => {
                for (i, item) in items().enumerate() {
                    self.arg_item(out, &item, depth, &mut args, line_spans(&line, i))?;
                }
            }
        }
        Ok(())
    }

    /// An argument list whose first item names a command the text shapes
    /// know, read as its command line: the secrets found, by item (see
    /// [`super::sibling::command_line_spans`]). Other lists cost a look at
    /// their first item.
    fn command_line(
        &self,
        mut items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
    ) -> Option<Vec<Vec<(usize, usize)>>> {
        let first = items.next()?;
        let first = first.cast_exact::<PyString>().ok()?;
        let first = first.to_str().ok()?;
        if !super::sibling::names_text_command(first) {
            return None;
        }
        let mut words = vec![first.to_owned()];
        words.extend(items.map(|item| {
            item.cast_exact::<PyString>().ok().and_then(|s| s.to_str().ok().map(str::to_owned)).unwrap_or_default()
        }));
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        super::sibling::command_line_spans(self.rules, &words)
    }

    /// An item of a list or tuple that may be an argument list: a text item
    /// after a secret flag is the flag's value, masked; `line` holds the
    /// secrets its command line's scan found in it.
    #[inline(always)]
    fn arg_item(
        &mut self,
        seq: &mut S::Seq,
        item: &Bound<'py, PyAny>,
        depth: usize,
        args: &mut super::sibling::ArgList,
        line: Option<&[(usize, usize)]>,
    ) -> PyResult<()> {
        let Ok(s) = item.cast_exact::<PyString>() else {
            args.other();
            return self.seq_item(seq, item, depth);
        };
        let text = match s.to_str() {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => s.to_string_lossy(),
        };
        self.sink.next_item(seq);
        let out = match args.item(self.rules, &text) {
            ArgItem::Secret => self.masked(item, depth + 1)?,
            ArgItem::SecretFrom(at) => {
                // The flag or the user stays readable; the rest is the secret.
                let kept = text.get(..at).unwrap_or_default();
                let masked = format!("{kept}{}", self.rules.mask());
                self.fresh_text(&masked)?
            }
            // The command line's scan read this item too.
            ArgItem::Plain => {
                match (line.and_then(|l| super::patterns::apply(&text, &mut l.to_vec(), self.rules.mask())), &text) {
                    (Some(masked), _) => self.fresh_text(&masked)?,
                    (None, Cow::Borrowed(text)) => self.text(item, text, depth + 1)?,
                    // Lone surrogates: the walk's own path, which keeps them for the sink.
                    (None, Cow::Owned(_)) => self.lossy_text(item, s, depth + 1)?,
                }
            }
        };
        self.sink.item(seq, out);
        Ok(())
    }

    #[inline(always)]
    fn seq_item(&mut self, seq: &mut S::Seq, item: &Bound<'py, PyAny>, depth: usize) -> PyResult<()> {
        self.sink.next_item(seq);
        let out = match self.secret_pair(item)? {
            Some((name, value)) => {
                // A `[name, value]` pair with a secret name: a new pair, value masked.
                self.changes += 1;
                let mut pair = self.sink.begin_seq();
                self.sink.next_item(&mut pair);
                let name = self.walk(&name, depth + 2)?;
                self.sink.item(&mut pair, name);
                self.sink.next_item(&mut pair);
                let value = self.masked(&value, depth + 2)?;
                self.sink.item(&mut pair, value);
                self.sink.end_seq(pair)?
            }
            None => self.walk(item, depth + 1)?,
        };
        self.sink.item(seq, out);
        Ok(())
    }

    /// For a named tuple, what each field's name says of its item; empty
    /// for any other tuple subclass (or one whose `_fields` is not names).
    fn field_roles(&self, tuple: &Bound<'py, PyTuple>) -> Vec<Field> {
        let Ok(fields) = tuple.get_type().getattr("_fields") else { return Vec::new() };
        let Ok(fields) = fields.cast::<PyTuple>() else { return Vec::new() };
        fields
            .iter()
            .map(|f| match f.cast::<PyString>() {
                Ok(n) => {
                    let name = n.to_string_lossy();
                    if self.rules.key_is_secret(&name) {
                        Field::Secret
                    } else if name == "netloc" {
                        Field::Authority
                    } else {
                        Field::Plain
                    }
                }
                Err(_) => Field::Plain,
            })
            .collect()
    }

    /// A URL's authority without its `//` (`urlparse()`'s `netloc`,
    /// `user:pw@host`): scanned as the URL it comes from, so its password is masked.
    fn authority(&mut self, item: &Bound<'py, PyAny>, depth: usize) -> PyResult<S::Out> {
        let text = item.str()?.to_string_lossy().into_owned();
        match self.rules.redact_text(&format!("//{text}"), depth) {
            Some(new) => match new.strip_prefix("//") {
                Some(rest) => self.fresh_text(rest),
                // The scan took the `//` too: nothing of the authority is kept.
                None => self.mask(),
            },
            None => self.text(item, &text, depth),
        }
    }

    /// A two-item list or tuple whose first item is a secret name.
    fn secret_pair(&self, item: &Bound<'py, PyAny>) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        if item.is_exact_instance_of::<PyString>() || item.is_exact_instance_of::<PyDict>() {
            return Ok(None);
        }
        let (name, value) = if let Ok(list) = item.cast::<PyList>() {
            if list.len() != 2 {
                return Ok(None);
            }
            (list.get_item(0)?, list.get_item(1)?)
        } else if let Ok(tuple) = item.cast::<PyTuple>() {
            if tuple.len() != 2 {
                return Ok(None);
            }
            (tuple.get_item(0)?, tuple.get_item(1)?)
        } else {
            return Ok(None);
        };
        let secret = S::name_text(&name).is_some_and(|n| super::sibling::pair_is_secret(self.rules, &n));
        Ok(secret.then_some((name, value)))
    }
}

/// The text a key is judged by: str as is, bytes decoded, anything else as
/// its JSON key text, exactly as the audit row shows it.
pub fn entry_key_text(key: &Bound<'_, PyAny>) -> String {
    if let Ok(s) = key.cast::<PyString>() {
        return s.to_string_lossy().into_owned();
    }
    if let Ok(b) = key.cast::<PyBytes>() {
        return String::from_utf8_lossy(b.as_bytes()).into_owned();
    }
    if let Ok(b) = key.cast::<PyByteArray>() {
        return String::from_utf8_lossy(&b.to_vec()).into_owned();
    }
    key_text(key)
}

/// The secrets an argument list's command line holds in its item `i`, if any.
fn line_spans(line: &[Vec<(usize, usize)>], i: usize) -> Option<&[(usize, usize)]> {
    line.get(i).map(Vec::as_slice).filter(|spans| !spans.is_empty())
}

#[cfg(test)]
mod tests {
    use pyo3::prelude::*;

    use crate::redact::REDACTED;

    /// `redact(value)` of a Python expression, as its `repr`.
    fn redacted(expr: &std::ffi::CStr) -> String {
        Python::attach(|py| {
            let value = py.eval(expr, None, None).unwrap();
            crate::redact::py::redact(&value).unwrap().repr().unwrap().to_string()
        })
    }

    #[test]
    fn an_argument_list_masks_the_item_after_a_secret_flag() {
        assert_eq!(
            redacted(c"['pg_dump', '--password', 'hunter2', '--host', 'db', '--password-file', '/run/pw']"),
            format!("['pg_dump', '--password', '{REDACTED}', '--host', 'db', '--password-file', '/run/pw']")
        );
        assert_eq!(redacted(c"('app', '--token', '$TOKEN', '--verbose')"), "['app', '--token', '$TOKEN', '--verbose']");
    }

    #[test]
    fn a_parsed_url_masks_the_password_in_its_netloc() {
        assert_eq!(
            redacted(c"__import__('urllib.parse').parse.urlsplit('https://bob:hunter2@h:5432/x')"),
            format!("['https', 'bob:{REDACTED}@h:5432', '/x', '', '']")
        );
        assert_eq!(
            redacted(c"__import__('urllib.parse').parse.urlsplit('https://bob@h/x')"),
            "['https', 'bob@h', '/x', '', '']"
        );
    }
}
