//! Event time: what a caller may pass, and the two text forms it is written in.
//!
//! Every timestamp is held as UTC. Callers may pass an aware `datetime`
//! (converted to UTC), a naive one (taken as UTC), a `date` (its midnight,
//! UTC, as pydantic and the legacy query read it), an ISO-8601 string, or
//! Unix time in seconds (milliseconds beyond 2e10, as pydantic reads it).

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, Timelike, Utc};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDate, PyDateTime, PyDict, PyFloat, PyInt, PyModule, PyString, PyTzInfo, PyTzInfoAccess};

use crate::errors::{Error, Result};
use crate::values::{masked, short_repr};

const ACCEPTED: &str = "expected a datetime, a date, an ISO-8601 string or Unix seconds";

/// Now, for an event's or a `record()` row's default timestamp: Python's
/// `time.time_ns()`, looked up at each call, as the legacy `datetime.now(UTC)`
/// read Python's clock, so a test that freezes or moves it (freezegun,
/// time-machine) moves these timestamps too. The system clock when that call
/// fails or gives no instant a `datetime` holds; a `KeyboardInterrupt` (any
/// `BaseException` that is not an `Exception`) raised there propagates.
pub fn now(py: Python<'_>) -> PyResult<DateTime<Utc>> {
    static TIME: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let from_python = || -> PyResult<i128> {
        let module = TIME.get_or_try_init(py, || py.import("time").map(Bound::unbind))?;
        module.bind(py).getattr(pyo3::intern!(py, "time_ns"))?.call0()?.extract::<i128>()
    };
    let ns = match from_python() {
        Ok(ns) => ns,
        Err(err) if err.is_instance_of::<pyo3::exceptions::PyException>(py) => return Ok(Utc::now()),
        Err(err) => return Err(err),
    };
    let instant = i64::try_from(ns.div_euclid(1_000_000_000)).ok().and_then(|secs| {
        let nanos = u32::try_from(ns.rem_euclid(1_000_000_000)).ok()?;
        DateTime::from_timestamp(secs, nanos)
    });
    Ok(instant.filter(|ts| (1..=9999).contains(&ts.year())).unwrap_or_else(Utc::now))
}

/// Loads Python's `datetime` C API, which every timestamp conversion uses,
/// before its first use. pyo3's type checks load it on first use and use it
/// even when that load failed (no file descriptor left): a crash. Loaded
/// here, a failure is raised instead, and says why: the C API's own loader
/// replaces the import's error with "could not import module".
pub fn datetime_api(py: Python<'_>) -> PyResult<()> {
    static LOADED: PyOnceLock<()> = PyOnceLock::new();
    LOADED
        .get_or_try_init(py, || {
            py.import("datetime").map_err(|err| no_datetime(py, err))?;
            pyo3::types::PyTzInfo::utc(py).map(|_| ())
        })
        .map(|_| ())
}

/// The error of a failed `import datetime`: with no file descriptor left,
/// one that says so and names the limit to raise.
fn no_datetime(py: Python<'_>, err: PyErr) -> PyErr {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    let errno = err
        .is_instance_of::<pyo3::exceptions::PyOSError>(py)
        .then(|| err.value(py).getattr("errno").ok()?.extract::<i32>().ok())
        .flatten();
    let what = match errno {
        Some(EMFILE) => {
            "too many open files: this process has as many open as its limit allows; raise the limit \
             (RLIMIT_NOFILE: `ulimit -n`, `LimitNOFILE=` for a systemd service, \
             `resource.setrlimit(resource.RLIMIT_NOFILE, ...)`) or close files it no longer needs"
        }
        Some(ENFILE) => {
            "too many open files in the system: its open file table is full; raise the system's limit \
             (`fs.file-max`) or close files"
        }
        _ => return err,
    };
    let raised = pyo3::exceptions::PyOSError::new_err((
        errno.unwrap_or_default(),
        format!("cannot load Python's datetime module, which every timestamp needs: {what}"),
    ));
    raised.set_cause(py, Some(err));
    raised
}

/// Reads a caller's timestamp; `field` names it in the error.
pub fn from_py(field: &str, value: &Bound<'_, PyAny>) -> Result<DateTime<Utc>> {
    datetime_api(value.py())?;
    // pyo3 reads an aware datetime's offset as `tzinfo.utcoffset(None)` in
    // whole seconds: the datetime's own only for a fixed `timezone` of whole
    // seconds. Any other tzinfo is asked about the datetime itself.
    if let Ok(dt) = value.cast::<PyDateTime>() {
        if let Some(tz) = dt.get_tzinfo() {
            if !fixed_whole_seconds(&tz)? {
                return other_tzinfo(field, value);
            }
        }
    }
    if let Ok(aware) = value.extract::<DateTime<FixedOffset>>() {
        return Ok(aware.with_timezone(&Utc));
    }
    if let Ok(naive) = value.extract::<NaiveDateTime>() {
        return Ok(naive.and_utc());
    }
    if value.is_instance_of::<PyDateTime>() {
        return other_tzinfo(field, value);
    }
    if value.is_instance_of::<PyDate>() {
        let day: NaiveDate = value.extract()?;
        return day.and_hms_opt(0, 0, 0).map(|n| n.and_utc()).ok_or_else(|| Error::invalid(field, "no midnight"));
    }
    if let Ok(text) = value.cast::<PyString>() {
        return parse(&text.to_string_lossy())
            .ok_or_else(|| Error::invalid(field, format!("{ACCEPTED}, got the string {}", short_repr(value))));
    }
    if !value.is_instance_of::<PyBool>() && (value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>()) {
        let seconds: f64 =
            value.extract().map_err(|_| Error::invalid(field, format!("{ACCEPTED}, got {}", short_repr(value))))?;
        return from_unix(seconds)
            .ok_or_else(|| Error::invalid(field, format!("{ACCEPTED}; {} is out of range", short_repr(value))));
    }
    Err(Error::invalid(field, format!("{ACCEPTED}, got {}", crate::values::type_name(value))))
}

/// `ts` if a Python `datetime` can hold it in UTC (years 1 to 9999).
/// chrono holds a wider range: an aware datetime at either end of Python's
/// range, or Unix time far in the future, would otherwise build an event
/// whose `timestamp` raises on every read.
pub fn in_python_range(field: &str, ts: DateTime<Utc>, value: &Bound<'_, PyAny>) -> Result<DateTime<Utc>> {
    if (1..=9999).contains(&ts.year()) {
        return Ok(ts);
    }
    Err(Error::invalid(
        field,
        format!(
            "{} is {} in UTC, outside the years 1 to 9999 that a datetime holds",
            short_repr(value),
            ts.to_rfc3339()
        ),
    ))
}

/// Whether `tz` is a `datetime.timezone` whose offset has no fraction of a
/// second (`timezone.utc`, `timezone(timedelta(hours=2))`).
fn fixed_whole_seconds(tz: &Bound<'_, PyTzInfo>) -> PyResult<bool> {
    let py = tz.py();
    let utc = PyTzInfo::utc(py)?;
    if tz.is(&*utc) {
        return Ok(true);
    }
    if !tz.get_type().is(utc.get_type()) {
        return Ok(false);
    }
    let offset = tz.call_method1(pyo3::intern!(py, "utcoffset"), (py.None(),))?;
    // `microseconds` read as an attribute: the stable ABI has no accessor for it.
    Ok(offset.getattr(pyo3::intern!(py, "microseconds")).and_then(|us| us.extract::<u32>()).is_ok_and(|us| us == 0))
}

/// An aware datetime whose tzinfo is not a fixed `timezone` (`zoneinfo`,
/// `dateutil`, pytz): its offset is asked of the tzinfo, as Python does. A
/// tzinfo whose `utcoffset()` is None makes the datetime naive, so UTC.
fn other_tzinfo(field: &str, value: &Bound<'_, PyAny>) -> Result<DateTime<Utc>> {
    let py = value.py();
    // The tzinfo's own error text, which may quote what it was configured with.
    let rejected =
        |err: PyErr| Error::invalid(field, format!("{ACCEPTED}; its tzinfo failed: {}", masked(&err.to_string())));
    let offset = value.call_method0("utcoffset").map_err(rejected)?;
    let wall =
        if offset.is_none() { value.clone() } else { value.call_method1("__sub__", (offset,)).map_err(rejected)? };
    let kwargs = PyDict::new(py);
    kwargs.set_item("tzinfo", py.None())?;
    let naive: NaiveDateTime =
        wall.call_method("replace", (), Some(&kwargs)).and_then(|d| d.extract()).map_err(rejected)?;
    Ok(naive.and_utc())
}

/// Parses ISO-8601 / RFC 3339 text; a missing offset means UTC. A leap
/// second (`23:59:60`), which chrono reads and a `datetime` cannot hold, is
/// refused, as `fromisoformat` and pydantic refuse it.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    parse_text(text).filter(|ts| ts.nanosecond() < 1_000_000_000)
}

fn parse_text(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(aware) = DateTime::parse_from_rfc3339(text) {
        return Some(aware.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M%:z"] {
        if let Ok(aware) = DateTime::parse_from_str(text, format) {
            return Some(aware.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| n.and_utc())
        .or_else(|| parse_isoformat(text))
}

/// What Python's `isoformat()` writes and `fromisoformat()` (so the legacy
/// service) reads back, in the forms RFC 3339 lacks:
/// `YYYY-MM-DD?HH[:MM[:SS[.ffffff]]][+HH:MM[:SS[.ffffff]]]`, `?` any one
/// character (`isoformat(sep=...)`), the time cut at any `timespec`, the
/// offset with seconds when its tzinfo has them. Also what Python 3.11's
/// `fromisoformat()` reads of other writers: an offset of hours alone or
/// without colons (PostgreSQL's `2026-01-02 03:04:05+05`), a decimal comma,
/// more than six fraction digits (cut to microseconds). And `z` for `Z`,
/// which pydantic (so the legacy `DomainEvent`) reads in every form.
fn parse_isoformat(text: &str) -> Option<DateTime<Utc>> {
    let number = |digits: &str| -> Option<u32> {
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
    };
    let day = text.get(..10)?;
    if day.as_bytes()[4] != b'-' || day.as_bytes()[7] != b'-' {
        return None;
    }
    let day =
        NaiveDate::from_ymd_opt(i32::try_from(number(&day[..4])?).ok()?, number(&day[5..7])?, number(&day[8..])?)?;
    let mut rest = text[10..].chars();
    rest.next()?;
    let rest = rest.as_str();
    let (time, offset) = match rest.find(['+', '-', 'Z', 'z']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    fn split_fraction(clock: &str) -> (&str, Option<&str>) {
        clock.split_once(['.', ',']).map_or((clock, None), |(c, f)| (c, Some(f)))
    }
    // A fraction as microseconds: digits past the sixth are cut (at most `most` digits).
    let micros = |fraction: Option<&str>, most: usize| -> Option<u32> {
        let Some(f) = fraction else { return Some(0) };
        if f.len() > most {
            return None;
        }
        let kept = f.get(..f.len().min(6))?;
        number(f)?;
        Some(number(kept)? * 10u32.pow(6 - u32::try_from(kept.len()).ok()?))
    };
    // `HH[:MM[:SS]]`, or in an offset `HH[MM[SS]]` too.
    let hms = |clock: &str, compact: bool| -> Option<[u32; 3]> {
        let parts: Vec<&str> = if compact && !clock.contains(':') && clock.len() % 2 == 0 && clock.is_ascii() {
            (0..clock.len()).step_by(2).map(|i| &clock[i..i + 2]).collect()
        } else {
            clock.split(':').collect()
        };
        if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.len() != 2) {
            return None;
        }
        let mut out = [0; 3];
        for (slot, part) in out.iter_mut().zip(&parts) {
            *slot = number(part)?;
        }
        Some(out)
    };
    let (clock, fraction) = split_fraction(time);
    let [h, m, sec] = hms(clock, false)?;
    if fraction.is_some() && clock.len() != 8 {
        return None;
    }
    let local = day.and_hms_micro_opt(h, m, sec, micros(fraction, usize::MAX)?)?;
    let shift = match offset {
        "" | "Z" | "z" => 0,
        _ => {
            let negative = offset.starts_with('-');
            let (clock, fraction) = split_fraction(&offset[1..]);
            let [oh, om, os] = hms(clock, true)?;
            if oh > 23 || om > 59 || os > 59 || (fraction.is_some() && !matches!(clock.len(), 6 | 8)) {
                return None;
            }
            let total = i64::from(oh * 3600 + om * 60 + os) * 1_000_000 + i64::from(micros(fraction, 6)?);
            if negative {
                -total
            } else {
                total
            }
        }
    };
    local.and_utc().checked_sub_signed(chrono::TimeDelta::microseconds(shift))
}

/// A stored time column's text as an instant: what [`parse`] reads, when a
/// `datetime` can hold it in UTC (years 1 to 9999). The read of a row and
/// the filters and purge that place it in time all go through here, so a
/// row is placed by all of them or by none. The text must start with its
/// date as `YYYY-MM-DD` and have no space around it, as `fromisoformat`
/// requires: the index range the filters narrow by first orders text by
/// those first characters (a leading space, `+2026-...` or `2026-1-5`
/// would sort away from the instant it names).
pub fn parse_stored(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let dated = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    if !dated || text.trim_end() != text {
        return None;
    }
    parse(text).filter(|ts| (1..=9999).contains(&ts.year()))
}

/// Unix time written as text (`"1700000000"`), which pydantic reads for an
/// event's timestamp. Not part of [`from_py`]: a query bound of `"2026"`
/// must not silently mean 33 minutes after the epoch.
pub fn from_numeric_text(value: &Bound<'_, PyAny>) -> Option<DateTime<Utc>> {
    let text = value.cast::<PyString>().ok()?.to_string_lossy().trim().parse::<f64>().ok()?;
    from_unix(text)
}

fn from_unix(value: f64) -> Option<DateTime<Utc>> {
    if !value.is_finite() {
        return None;
    }
    let seconds = if value.abs() > 2e10 { value / 1000.0 } else { value };
    let micros = (seconds * 1e6).round();
    if micros.abs() > 9.0e18 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    DateTime::from_timestamp_micros(micros as i64)
}

/// `datetime.isoformat()` of an aware UTC datetime: `2026-01-02T03:04:05.000006+00:00`.
/// This is the audit table's text form; the legacy service and Python 3.10's
/// `fromisoformat` both read it.
pub fn isoformat(ts: &DateTime<Utc>) -> String {
    let mut text = ts.to_rfc3339_opts(SecondsFormat::AutoSi, false);
    // AutoSi may print nanoseconds; the table keeps microseconds like Python.
    if let Some(dot) = text.find('.') {
        let end = text.len() - "+00:00".len();
        let digits = &text[dot + 1..end];
        let fixed = format!("{:0<6}", &digits[..digits.len().min(6)]);
        text = format!("{}.{}+00:00", &text[..dot], fixed);
    }
    text
}

/// pydantic's JSON form of a UTC datetime: `2026-01-02T03:04:05.000006Z`,
/// fraction only when there is one.
pub fn json_text(ts: &DateTime<Utc>) -> String {
    isoformat(ts).replace("+00:00", "Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let expected = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().with_timezone(&Utc);
        for text in
            ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05+00:00", "2026-01-02 03:04:05", "2026-01-02T05:04:05+02:00"]
        {
            assert_eq!(parse(text), Some(expected), "{text}");
        }
        assert!(parse("yesterday").is_none());
        assert!(parse("2016-12-31T23:59:60Z").is_none());
    }

    #[test]
    fn parses_every_form_isoformat_writes() {
        let at = |text: &str| parse(text).map(|t| isoformat(&t));
        for (text, instant) in [
            ("2026-01-02T03+02:00", "2026-01-02T01:00:00+00:00"),
            ("2026-01-02 03:04", "2026-01-02T03:04:00+00:00"),
            ("2026-01-02_03:04:05.123", "2026-01-02T03:04:05.123000+00:00"),
            ("2026-01-02\u{e9}03:04:05", "2026-01-02T03:04:05+00:00"),
            ("2026-01-02T03:04:05-01:00:30", "2026-01-02T04:04:35+00:00"),
            ("2026-01-02T03:04:05.000001+00:00:00.000001", "2026-01-02T03:04:05+00:00"),
            ("2026-01-02 03:04:05+05", "2026-01-01T22:04:05+00:00"),
            ("2026-01-02 03:04:05.5-0130", "2026-01-02T04:34:05.500000+00:00"),
            ("2026-01-02T03:04:05,25+013015", "2026-01-02T01:33:50.250000+00:00"),
            ("2026-01-02T03:04:05.12345678+05", "2026-01-01T22:04:05.123456+00:00"),
        ] {
            assert_eq!(at(text).as_deref(), Some(instant), "{text}");
        }
        for text in [
            "2026-01-02T03:04.5",
            "2026-01-02T03:04:05+24:00",
            "2026-01-02T03:04:05+1",
            "2026-01-02T03:04:05+015",
            "2026-01-02T03:04:05+01:5",
            "2026-01-02T03:04:05+01:00.5",
            "2026-01-02T03:04:05+01:00:00.1234567",
            "2026-01-02T03:04:05,",
            "2026-01-02T",
            "2026-01-02TT03",
            "2026-13-02T03",
            "\u{e9}\u{e9}\u{e9}\u{e9}-01-02T03",
        ] {
            assert_eq!(at(text), None, "{text}");
        }
    }

    #[test]
    fn formats_like_python() {
        let ts = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.000006Z").unwrap().with_timezone(&Utc);
        assert_eq!(isoformat(&ts), "2026-01-02T03:04:05.000006+00:00");
        assert_eq!(json_text(&ts), "2026-01-02T03:04:05.000006Z");
        let whole = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().with_timezone(&Utc);
        assert_eq!(isoformat(&whole), "2026-01-02T03:04:05+00:00");
    }

    #[test]
    fn reads_unix_seconds_and_millis() {
        assert_eq!(from_unix(1.0).unwrap().timestamp(), 1);
        assert_eq!(from_unix(1_700_000_000_000.0).unwrap().timestamp(), 1_700_000_000);
        assert!(from_unix(f64::NAN).is_none());
    }
}
