//! The audit row's details: Python values straight to redacted JSON text,
//! in one walk (no `serde_json::Value` tree, no second walk to redact, no
//! third to serialise). Values map to JSON as [`crate::values::classify`]
//! says, the same mapping `model_dump(mode="json")` uses; keys keep their
//! insertion order.

use std::cell::Cell;

use serde::Serialize;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString};

use super::py::guarded;
use super::walker::{Extra, Key, Sink, Walker};
use super::Rules;
use crate::errors::Error;
use crate::values::{classify, Json};

/// Writes JSON text.
pub struct JsonText<'a> {
    /// Text, not bytes: every piece written is a `str`, so the row needs no
    /// UTF-8 check at the end.
    buf: String,
    /// The mask as a JSON string, quotes included.
    mask: &'a str,
}

impl<'a> JsonText<'a> {
    fn new(rules: &'a Rules, buf: String) -> Self {
        Self { buf, mask: rules.mask_literal() }
    }

    /// A comma unless this is the first item of an object or array.
    fn separate(&mut self) {
        if !matches!(self.buf.as_bytes().last(), Some(b'{' | b'[')) {
            self.buf.push(',');
        }
    }
}

/// Writes one JSON scalar or string, escaped as `serde_json` does.
fn put<T: Serialize + ?Sized>(buf: &mut String, value: &T) -> PyResult<()> {
    let text = serde_json::to_string(value).map_err(|e| Error::Storage(format!("details not serialisable: {e}")))?;
    buf.push_str(&text);
    Ok(())
}

/// Writes a JSON string. Most text needs no escape: it is copied whole;
/// anything else is escaped by `serde_json`.
#[inline(always)]
fn put_str(buf: &mut String, text: &str) -> PyResult<()> {
    if needs_escape(text.as_bytes()) {
        return put(buf, text);
    }
    buf.reserve(text.len() + 2);
    buf.push('"');
    buf.push_str(text);
    buf.push('"');
    Ok(())
}

/// Writes a `str` holding lone surrogates as `json.dumps` does (the legacy
/// row's form): each one as its `\udXXX` escape, which reads back to the
/// same `str`, instead of U+FFFD, which would store another value.
fn put_surrogates(buf: &mut String, s: &Bound<'_, PyString>) -> PyResult<()> {
    let encoded = s.call_method1(intern!(s.py(), "encode"), ("utf-16-le", "surrogatepass"))?;
    let units = encoded.cast::<PyBytes>()?.as_bytes().chunks_exact(2).map(|p| u16::from_le_bytes([p[0], p[1]]));
    // A run of characters is escaped as serde_json escapes it, without its quotes.
    fn flush(buf: &mut String, run: &mut String) -> PyResult<()> {
        let start = buf.len();
        put(buf, run.as_str())?;
        buf.pop();
        buf.remove(start);
        run.clear();
        Ok(())
    }
    let mut run = String::new();
    buf.push('"');
    for unit in char::decode_utf16(units) {
        match unit {
            Ok(c) => run.push(c),
            Err(lone) => {
                flush(buf, &mut run)?;
                buf.push_str(&format!("\\u{:04x}", lone.unpaired_surrogate()));
            }
        }
    }
    flush(buf, &mut run)?;
    buf.push('"');
    Ok(())
}

/// Whether any byte is a control character, `"` or `\\`, eight bytes at a
/// time: a zero byte in `x ^ pattern` marks a match (the classic exact
/// "has a zero byte" test).
pub fn needs_escape(bytes: &[u8]) -> bool {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(LOW) & !x & HIGH != 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let x = super::word(chunk, 0);
        // A byte below 0x20 has its top three bits clear.
        let control = has_zero(x & (LOW * 0xE0));
        if control || has_zero(x ^ (LOW * u64::from(b'"'))) || has_zero(x ^ (LOW * u64::from(b'\\'))) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

impl<'a, 'py> Sink<'py> for JsonText<'a> {
    type Out = ();
    /// Where the object starts, to abandon it.
    type Map = usize;
    type Seq = ();

    const TEXT_KEYS: bool = true;

    #[inline(always)]
    fn same_text(&mut self, _obj: &Bound<'py, PyAny>, text: &str) -> PyResult<()> {
        put_str(&mut self.buf, text)
    }

    fn same_lossy_text(&mut self, obj: &Bound<'py, PyAny>, text: &str) -> PyResult<()> {
        match obj.cast::<PyString>() {
            Ok(s) => put_surrogates(&mut self.buf, s),
            Err(_) => put_str(&mut self.buf, text),
        }
    }

    fn fresh_text(&mut self, text: &str) -> PyResult<()> {
        put_str(&mut self.buf, text)
    }

    fn mask(&mut self) -> PyResult<()> {
        self.buf.push_str(self.mask);
        Ok(())
    }

    fn begin_map(&mut self, _like: Option<&Bound<'py, PyDict>>) -> PyResult<usize> {
        let start = self.buf.len();
        self.buf.push('{');
        Ok(start)
    }

    #[inline(always)]
    fn key(&mut self, _map: &mut usize, key: &Key<'_, 'py>) -> PyResult<()> {
        self.separate();
        if key.plain {
            self.buf.reserve(key.text.len() + 3);
            self.buf.push('"');
            self.buf.push_str(key.text);
            self.buf.push_str("\":");
            return Ok(());
        }
        // A key with lone surrogates (only the general path, never `plain`) keeps them escaped.
        if !key.fresh && key.text.contains('\u{FFFD}') {
            if let Ok(s) = key.obj.cast::<PyString>() {
                if s.to_str().is_err() {
                    put_surrogates(&mut self.buf, s)?;
                    self.buf.push(':');
                    return Ok(());
                }
            }
        }
        put_str(&mut self.buf, key.text)?;
        self.buf.push(':');
        Ok(())
    }

    fn value(
        &mut self,
        _map: &mut usize,
        _key: &Key<'_, 'py>,
        _original: &Bound<'py, PyAny>,
        _value: (),
    ) -> PyResult<()> {
        Ok(())
    }

    fn end_map(&mut self, _map: usize) -> PyResult<()> {
        self.buf.push('}');
        Ok(())
    }

    fn abandon_map(&mut self, start: usize) {
        self.buf.truncate(start);
    }

    fn begin_seq(&mut self) {
        self.buf.push('[');
    }

    fn next_item(&mut self, _seq: &mut ()) {
        self.separate();
    }

    fn item(&mut self, _seq: &mut (), _item: ()) {}

    fn end_seq(&mut self, _seq: ()) -> PyResult<()> {
        self.buf.push(']');
        Ok(())
    }

    fn leaf(w: &mut Walker<'_, 'py, Self>, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<()> {
        if obj.is_none() {
            w.sink.buf.push_str("null");
            return Ok(());
        }
        if let Ok(b) = obj.cast_exact::<PyBool>() {
            w.sink.buf.push_str(if b.is_true() { "true" } else { "false" });
            return Ok(());
        }
        if obj.is_exact_instance_of::<PyInt>() {
            if let Ok(i) = obj.extract::<i64>() {
                // What serde_json writes for an i64, without its serializer around it.
                w.sink.buf.push_str(itoa::Buffer::new().format(i));
                return Ok(());
            }
        }
        if let Ok(f) = obj.cast_exact::<PyFloat>() {
            let f = f.value();
            if f.is_finite() {
                return put(&mut w.sink.buf, &f);
            }
        }
        let form = classify(obj);
        if let Some(out) = w.stored_form(obj, &form, depth) {
            return out;
        }
        match form {
            Json::Bool(b) => {
                w.sink.buf.push_str(if b { "true" } else { "false" });
                Ok(())
            }
            Json::Int(i) => put(&mut w.sink.buf, &i),
            Json::UInt(u) => put(&mut w.sink.buf, &u),
            Json::Float(f) => put(&mut w.sink.buf, &f),
            // `Json::Null`; the other forms were walked above.
            _ => {
                w.sink.buf.push_str("null");
                Ok(())
            }
        }
    }

    fn mask_leaf(w: &mut Walker<'_, 'py, Self>, obj: &Bound<'py, PyAny>, depth: usize) -> PyResult<()> {
        // What the value is in JSON decides: `null`, booleans and the mask stay.
        let start = w.sink.buf.len();
        w.walk(obj, depth)?;
        let written = &w.sink.buf[start..];
        if !matches!(written, "null" | "true" | "false") && written != w.sink.mask {
            w.sink.buf.truncate(start);
            w.mask()?;
        }
        Ok(())
    }
}

/// The redacted JSON text of `details`, with `extra` entries walked as if
/// they were in it (the caller adds only keys the dict does not have).
pub fn details_json<'py>(rules: &Rules, details: &Bound<'py, PyDict>, extra: &Extra<'py>) -> PyResult<String> {
    // The text is written into this thread's scratch buffer, which keeps its
    // capacity, and copied out once at its exact size: no reallocation as
    // it grows, and the row owns one right-sized allocation (freed later by
    // the writer thread). A nested call (user code run by the walk records
    // an event) finds the scratch taken and starts an empty buffer.
    let mut scratch = SCRATCH.with(Cell::take);
    scratch.clear();
    let mut walker = Walker::new(rules, JsonText::new(rules, scratch));
    let walked = guarded(|| walker.dict(details, extra, 0, details.as_ptr() as usize));
    let text = walked.map(|()| walker.sink.buf.as_str().to_owned());
    let mut scratch = walker.sink.buf;
    if scratch.capacity() <= SCRATCH_MAX {
        scratch.clear();
        SCRATCH.with(|cell| cell.set(scratch));
    }
    text
}

/// The scratch buffer is kept only up to this size (a huge row's buffer is dropped).
const SCRATCH_MAX: usize = 1 << 20;

thread_local! {
    static SCRATCH: Cell<String> = const { Cell::new(String::new()) };
}

#[cfg(test)]
mod tests {
    use super::needs_escape;

    #[test]
    fn escape_detection_matches_the_byte_rule_at_every_position() {
        for special in [0u8, 0x01, 0x1f, b'"', b'\\'] {
            for len in 1..20 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert!(needs_escape(&bytes), "{special:#x} at {at} of {len}");
                }
            }
        }
        for plain in [" ", "~", "\u{7f}", "é", "😀", "plain text / with: punctuation! ' ` #", "\u{a0}\u{2028}"] {
            let long = plain.repeat(9);
            assert!(!needs_escape(long.as_bytes()), "{plain}");
        }
        let all_plain: Vec<u8> = (0x20u8..=0xff).filter(|&b| b != b'"' && b != b'\\').collect();
        assert!(!needs_escape(&all_plain));
    }
}
