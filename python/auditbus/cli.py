"""`auditbus`: ask the audit trail who did what, when, without writing Python.

Every command works on one SQLite database: `--db PATH`, else the
`AUDITBUS_DB` environment variable, else `./audit.db`. Commands that only read
(query, tail, verify, export, stats, purge) never create a database; `demo`
does. Errors a user can cause are printed as one `auditbus: error: ...` line
with a non-zero exit status, never a traceback (set `AUDITBUS_DEBUG=1` to get
the traceback of an unexpected failure).

Exit status: 0 success, 1 error, 2 bad usage (including an empty database
path, --since after --until, a future purge date, an export over the
database itself), 3 a check failed (a broken chain in `verify`, a failed
check in `demo`), 130 interrupted (143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import csv
import errno
import getpass
import io
import itertools
import json
import logging
import math
import os
import re
import secrets
import select
import shutil
import signal
import stat
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import IO, Any, Literal, NoReturn

from . import (
    AUDIT_LIFECYCLE_EVENT_TYPES,
    AuditEntry,
    AuditError,
    AuditService,
    __version__,
    current_identity,
    demo,
    identity,
    redact,
)
from .types import EventType

DEFAULT_DB = "audit.db"
ENV_DB = "AUDITBUS_DB"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CHECK_FAILED = 3
EXIT_INTERRUPTED = 130

_SQLITE_HEADER = b"SQLite format 3\x00"
#: How long a command waits for its own start row to be committed before it reports the disk failing.
_SETTLE_LIMIT = 10.0
_SQLITE_MAX_INT = 2**63 - 1
_UTC = timezone.utc

#: Columns of the table and CSV outputs, in order: (header, AuditEntry attribute).
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ID", "id"),
    ("TIME (UTC)", "timestamp"),
    ("TYPE", "event_type"),
    ("USER", "user_identity"),
    ("ACTOR", "actor_name"),
    ("PLAN", "plan_id"),
    ("PROJECT", "project_name"),
    ("SESSION", "session_id"),
    ("OUTCOME", "outcome"),
    ("DETAILS", "details"),
)
_CSV_FIELDS: tuple[str, ...] = (
    "id",
    "timestamp",
    "event_type",
    "user_identity",
    "actor_name",
    "plan_id",
    "project_name",
    "session_id",
    "outcome",
    "source",
    "event_id",
    "recorded_at",
    "chain_hash",
    "details",
    "details_error",
    "details_raw",
    "timestamp_error",
    "timestamp_raw",
    "recorded_at_error",
    "recorded_at_raw",
    "not_utf8",
)
_FILTERS: tuple[str, ...] = (
    "event_type",
    "user_identity",
    "actor_name",
    "plan_id",
    "session_id",
    "project_name",
    "outcome",
    "since",
    "until",
)


class CliError(Exception):
    """A problem the user can fix: printed as one line, exit status 1."""


class UsageError(CliError):
    """Arguments that cannot work together (or an empty path): one line, exit status 2 like argparse's errors."""


# ---------------------------------------------------------------------------
# argument types


_DURATION = re.compile(r"(\d+)\s*([smhdw])", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DATE_HELP = "a duration back from now (30s, 30m, 2h, 7d, 2w) or an ISO-8601 date (2026-05-01, 2026-05-01T12:00:00Z)"


def parse_when(value: str, *, now: datetime | None = None) -> datetime:
    """`2h`, `30m`, `7d` (that long ago) or an ISO-8601 date/time; a time without offset is UTC."""
    text = value.strip()
    match = _DURATION.fullmatch(text)
    if match:
        try:
            # int() refuses more than 4300 digits (ValueError): far before year 1 too.
            seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
            return (now or datetime.now(_UTC)) - timedelta(seconds=seconds)
        except (OverflowError, ValueError):
            raise argparse.ArgumentTypeError(f"duration {value!r} reaches before year 1") from None
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad date {value!r}: expected {_DATE_HELP}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=_UTC)
    try:
        # Normalised now: a date whose UTC time is outside years 1..9999 would fail later, mid-command.
        return parsed.astimezone(_UTC)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"date {value!r} falls outside the years 1 to 9999 in UTC") from None


#: Every type a row can have: the domain event types and the service's own lifecycle rows.
_ALL_TYPES: tuple[str, ...] = (*(t.value for t in EventType), *AUDIT_LIFECYCLE_EVENT_TYPES)


def _event_types(value: str) -> list[str]:
    known = _ALL_TYPES
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("empty event type")
    for name in names:
        if name not in known:
            raise argparse.ArgumentTypeError(f"unknown event type {name!r}; known types: {', '.join(known)}")
    return names


def _non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is negative; expected 0 or more")
    if number > _SQLITE_MAX_INT:
        # SQLite counts rows in 64 bits; a larger number would fail in the query as an OverflowError.
        raise argparse.ArgumentTypeError(f"{value!r} is too large; expected at most {_SQLITE_MAX_INT}")
    return number


_MAX_INTERVAL = 86400


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds > 0 or seconds > _MAX_INTERVAL:
        # Beyond a day is no longer polling, and time.sleep() refuses what overflows the platform's time_t.
        raise argparse.ArgumentTypeError(
            f"{value!r} must be a positive number of seconds, at most {_MAX_INTERVAL} (a day)"
        )
    return seconds


# ---------------------------------------------------------------------------
# opening the database


def db_path(args: argparse.Namespace) -> str:
    """`--db`, else `$AUDITBUS_DB`, else `./audit.db`.

    An empty value is refused rather than skipped: `--db "$UNSET"` quietly
    reading (or, for demo, writing) ./audit.db would answer about the wrong trail.
    """
    chosen: str | None = getattr(args, "db", None)
    if chosen is not None:
        if not chosen:
            raise UsageError("--db is empty: expected the path of an audit database")
        return chosen
    from_env = os.environ.get(ENV_DB)
    if from_env is not None:
        if not from_env:
            raise UsageError(
                f"{ENV_DB} is set but empty: expected the path of an audit database (unset it to use ./{DEFAULT_DB})"
            )
        return from_env
    return DEFAULT_DB


@contextlib.contextmanager
def open_service(path: str, *, create: bool = False, read_only: bool = False) -> Iterator[AuditService]:
    """The audit service on `path`; without `create`, a missing database is an error, not a new file.

    With `read_only`, nothing is written to the database: no lifecycle rows, no migration.
    """
    file = Path(path)
    if file.is_dir():
        raise CliError(f"{path} is a directory, not an audit database")
    if file.exists() and not file.is_file():
        # Reading a FIFO's first bytes would wait for a writer that may never come.
        raise CliError(f"{path} is not a regular file (a FIFO, socket or device), not an audit database")
    header = b""
    if file.exists():
        try:
            with file.open("rb") as handle:
                header = handle.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
        if header and header != _SQLITE_HEADER:
            raise CliError(f"{path} is not an audit database (not an SQLite file)")
        if not header and not create:
            raise CliError(f"{path} is an empty file, not an audit database (this command never creates one)")
    elif not create:
        raise CliError(f"no audit database at {path} (pass --db PATH or set {ENV_DB}; this command never creates one)")
    # An existing file is first opened read-only: an SQLite file of some other
    # application is refused instead of being given an audit table.
    service = _open(path, read_only=True) if header else None
    if service is None or not read_only:
        if service is not None:
            service.close()
        service = _open(path, read_only=False)
    try:
        # The service's own start row is written behind; settle it first so that
        # every count and preview below sees one fixed trail.
        service.flush(timeout=_SETTLE_LIMIT)
    except TimeoutError:
        # A failing disk (the writer retries for as long as it lasts): say so instead
        # of waiting for good. No close(), which would wait for that row as well; the
        # exit gives it up within its own limit and says how many rows were not written.
        failure = service.stats()["last_error"] or "no error reported yet"
        raise CliError(
            f"cannot record this access in {path}: the audit writer could not commit for "
            f"{_SETTLE_LIMIT:g} s ({failure}); pass --read-only to read it without recording this access"
        ) from None
    except BaseException:
        _close_after_error(service)
        raise
    try:
        yield service
    except BaseException:
        _close_after_error(service)
        raise
    service.close()


def _close_after_error(service: AuditService) -> None:
    """Closes the service under an error already on its way: that one says what happened.

    A writer stopped by the same fault (the trail removed while followed) raises
    from close() too, and would take that error's place on the one error line.
    """
    with contextlib.suppress(AuditError):
        service.close()


def _open(path: str, *, read_only: bool) -> AuditService:
    try:
        # A writable service records its own start and stop rows, naming this
        # app: reading the trail is on the trail.
        return AuditService(path, app_name="auditbus-cli", read_only=read_only)
    except Exception as exc:  # the service names what is wrong; one line, no traceback
        detail = _one_line(exc)
        if "nothing can be written to it (a service opened with read_only=True" in detail:
            altered = detail.split(": ", 1)[-1].split("; nothing can be written", 1)[0]
            raise CliError(
                f"{path}: {altered}; nothing can be written to it, and a command records its own access unless run "
                "with --read-only: 'auditbus --read-only verify' reports the alteration"
            ) from None
        if "open it with read_only=True" in detail:
            what = (
                f"SQLite cannot create or write the -wal and -shm files beside {path} as this user (its folder "
                "may not be written)"
                if "its -wal and -shm files" in detail
                else f"{path} cannot be written by this user"
            )
            raise CliError(
                f"{what}, and every command records its own access in the trail "
                "(PCI DSS 10.2.1.3); pass --read-only to read it without recording this access"
            ) from None
        if path in detail or _quoted(path) in str(exc):  # the service's message already names the file
            raise CliError(detail) from None
        raise CliError(f"cannot open audit database {path}: {detail}") from None


def _quoted(path: str) -> str:
    """`path` as the core's messages quote it (Rust's `{:?}`): a quote or backslash in it escaped."""
    escapes = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"}
    return '"' + "".join(escapes.get(char, char) for char in path) + '"'


#: The files SQLite keeps beside a database: writing over any of them corrupts it.
_COMPANIONS = ("", "-wal", "-shm", "-journal")


def refuse_database_as_output(database: str, output: str) -> None:
    """Refuse an `--output` that is the database or one of its companion files.

    Compared by resolved path (`./x.db`, symlinks) and, where both exist, by
    inode (hard links); SQLite names the companions after the resolved path,
    so both spellings of the database are checked.
    """
    target = Path(output)
    resolved_target = target.resolve()
    for base in dict.fromkeys((database, str(Path(database).resolve()))):
        for suffix in _COMPANIONS:
            candidate = Path(base + suffix)
            same = candidate.resolve() == resolved_target
            if not same and candidate.exists() and target.exists():
                with contextlib.suppress(OSError):
                    same = os.path.samefile(candidate, target)
            if same:
                what = "the audit database" if not suffix else f"the audit database's {suffix[1:]} file"
                raise UsageError(f"--output {output} is {what} ({base}{suffix}); choose another file")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# ---------------------------------------------------------------------------
# reading details


@dataclass(frozen=True)
class UnreadableDetails:
    """Stored details that are not JSON: why, and the stored text itself (None if even that cannot be read)."""

    error: str
    raw: str | None


@dataclass(frozen=True)
class UnreadableTime:
    """A stored `timestamp` or `recorded_at` that is not an ISO-8601 timestamp: the stored text."""

    column: str
    raw: str


#: The time columns a row may hold unreadable text in, and the error text the outputs give for it.
_TIME_COLUMNS = ("timestamp", "recorded_at")
_TIME_ERROR = "not an ISO-8601 timestamp"

_ROW_PREFIX = re.compile(r"^audit row \d+: ")


class DetailsReader:
    """Each entry's details, times and other columns for display, never raising for one bad row.

    `AuditEntry.details` raises `AuditError` when the stored text is not JSON,
    and `timestamp`/`recorded_at` when the stored text is not a timestamp; the
    trail's other rows must still be shown. Such a row is shown with its
    stored text (`AuditEntry.stored_details`, `unreadable_timestamp`,
    `unreadable_recorded_at`), and its id is kept for one warning line at the end.

    A row without a chain hash was written by another writer (the legacy
    service masks details by key name only, and stores `user_identity` and
    `plan_id` as given): all it shows goes through auditbus's rules, so a
    secret stored there never reaches a terminal or an export.
    """

    def __init__(self) -> None:
        # Ids as dict keys: in order, and a row seen again (a table reads its rows twice) is found at once.
        self.bad_ids: dict[int, None] = {}
        self.doubled_ids: dict[int, None] = {}
        self.not_utf8_ids: dict[int, None] = {}
        self.bad_times: dict[str, dict[int, None]] = {column: {} for column in _TIME_COLUMNS}

    def time(self, entry: AuditEntry, column: str) -> datetime | UnreadableTime | None:
        """`entry.timestamp` or `entry.recorded_at`, or the stored text when it is not a timestamp."""
        raw = entry.unreadable_timestamp if column == "timestamp" else entry.unreadable_recorded_at
        if raw is None:
            return entry.timestamp if column == "timestamp" else entry.recorded_at
        self.bad_times[column][entry.id] = None
        return UnreadableTime(column, _shown(entry, raw))

    @staticmethod
    def column(entry: AuditEntry, name: str) -> Any:
        """A column other than details and the times, masked when another writer stored it."""
        return _shown(entry, getattr(entry, name, None))

    def details(self, entry: AuditEntry) -> Any:
        if entry.not_utf8:
            # Every output reads the details: the one place to note the row for its warning.
            self.not_utf8_ids[entry.id] = None
        foreign = entry.chain_hash is None
        try:
            details = entry.details
        except AuditError as exc:
            self.bad_ids[entry.id] = None
            raw = entry.stored_details
            return UnreadableDetails(
                error=_ROW_PREFIX.sub("", _one_line(exc)), raw=redact(raw) if foreign and raw is not None else raw
            )
        if foreign:
            raw = entry.stored_details
            doubled = _doubled_key(raw) if raw is not None and "{" in raw else None
            if doubled is not None:
                # Readers disagree on which value such a key has: show every one, as stored.
                self.doubled_ids[entry.id] = None
                return UnreadableDetails(error=f"details hold the key {_compact_json(doubled)} twice", raw=redact(raw))
        # Another writer's NaN and infinities take the text forms auditbus stores them in.
        return _finite(redact(details)) if foreign else details

    def as_dict(self, entry: AuditEntry) -> dict[str, Any]:
        """`AuditEntry.to_dict()`; for unreadable details, `details` None plus `details_error` and `details_raw`."""
        details = self.details(entry)
        times = {column: self.time(entry, column) for column in _TIME_COLUMNS}
        unreadable_times = [value for value in times.values() if isinstance(value, UnreadableTime)]
        if not isinstance(details, UnreadableDetails) and not unreadable_times:
            data: dict[str, Any] = entry.to_dict()
            if entry.chain_hash is None:
                data = {name: _shown(entry, value) for name, value in data.items()}
            data["details"] = details
            if entry.not_utf8:
                data["not_utf8"] = list(entry.not_utf8)
            return data
        fields: dict[str, Any] = {}
        for name in _DICT_FIELDS:
            if name == "details":
                fields[name] = None if isinstance(details, UnreadableDetails) else details
            elif name in times:
                fields[name] = None if isinstance(times[name], UnreadableTime) else times[name]
            else:
                fields[name] = self.column(entry, name)
        if isinstance(details, UnreadableDetails):
            fields.update(details_error=details.error, details_raw=details.raw)
        for bad in unreadable_times:
            fields.update({f"{bad.column}_error": _TIME_ERROR, f"{bad.column}_raw": bad.raw})
        if entry.not_utf8:
            fields["not_utf8"] = list(entry.not_utf8)
        return fields

    def warn(self, stream: IO[str]) -> None:
        """One stderr line per kind of unreadable column, naming the rows shown with it since the last call."""
        if self.bad_ids:
            self._warn(stream, self.bad_ids, "unreadable details (not valid JSON)", "details")
        if self.doubled_ids:
            self._warn(stream, self.doubled_ids, "details that hold a key twice", "details")
        if self.not_utf8_ids:
            ids = self.not_utf8_ids
            which = f"row {next(iter(ids))} holds" if len(ids) == 1 else f"rows {_id_list(ids)} hold"
            stream.flush()
            print(
                f"auditbus: warning: {which} bytes that are not UTF-8, shown with U+FFFD in their place (the "
                "columns are named in not_utf8 of --json and --csv); 'auditbus verify' checks the trail's integrity",
                file=stream,
            )
            ids.clear()
        for column, bad_ids in self.bad_times.items():
            if bad_ids:
                self._warn(stream, bad_ids, f"an unreadable {column} ({_TIME_ERROR})", column)

    @staticmethod
    def _warn(stream: IO[str], bad_ids: dict[int, None], what: str, column: str) -> None:
        which = f"row {next(iter(bad_ids))}" if len(bad_ids) == 1 else f"rows {_id_list(bad_ids)}"
        verb = "has" if len(bad_ids) == 1 else "have"
        stream.flush()
        print(
            f"auditbus: warning: {which} {verb} {what}, shown with the stored text "
            f"({column}_error, {column}_raw); 'auditbus verify' checks the trail's integrity",
            file=stream,
        )
        bad_ids.clear()


def _id_list(ids: dict[int, None]) -> str:
    """The first ten ids, and how many more."""
    shown = ", ".join(str(row_id) for row_id in itertools.islice(ids, 10))
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def _doubled_key(text: str) -> str | None:
    """A key that an object of the JSON `text` holds twice (at any depth), None if none does.

    Such a key has no one value: JSON readers keep the first or the last, and the stored row says both.
    """
    doubled: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in items]
        if not doubled and len(set(keys)) != len(keys):
            doubled.append(next(key for i, key in enumerate(keys) if key in keys[:i]))
        return dict(items)

    try:
        json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None
    return doubled[0] if doubled else None


def _shown(entry: AuditEntry, value: Any) -> Any:
    """`value` of `entry` as shown: secret shapes masked when another writer stored the row."""
    if entry.chain_hash is None and isinstance(value, (str, dict, list)):
        return redact(value)
    return value


#: The keys of `AuditEntry.to_dict()`, in its order, taken from it (an entry
#: whose details cannot be read cannot give them itself).
_DICT_FIELDS: tuple[str, ...] = tuple(
    AuditEntry(0, datetime(1970, 1, 1, tzinfo=timezone.utc), "plan_applied").to_dict()
)


# ---------------------------------------------------------------------------
# rendering


def _utc(value: datetime) -> datetime:
    return value.astimezone(_UTC) if value.tzinfo is not None else value


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return _utc(value).isoformat().replace("+00:00", "Z")
    return "" if value is None else str(value)


def _short_time(value: Any) -> str:
    if isinstance(value, UnreadableTime):
        return f"[unreadable {value.column}: {_compact_json(value.raw)}]"
    if isinstance(value, datetime):
        # isoformat(), not strftime("%Y"): the C library writes year 1 as `1`, not `0001`.
        return _utc(value).replace(tzinfo=None).isoformat(sep=" ", timespec="milliseconds")
    return "" if value is None else str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def _compact_json(value: Any) -> str:
    """Compact JSON; the characters JSON leaves raw but a terminal or a line splitter acts on
    (DEL, C1, U+2028/2029, bidi controls) are written as `\\uXXXX`, which decodes to the same text."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default)
    except ValueError:
        # NaN or an infinity, which standard JSON has no form for (the legacy service's json.dumps
        # stores them): written as the text auditbus stores them as.
        text = json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False, default=_json_default)
    return _CONTROL.sub(_json_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    """The JSON escape of one character: beyond U+FFFF, its UTF-16 surrogate pair, as JSON spells it."""
    code = ord(match.group())
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def _finite(value: Any) -> Any:
    """`value` with NaN and the infinities as `"nan"`, `"inf"`, `"-inf"`."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _event_type_text(value: Any) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


# Control characters (C0, DEL, C1) in stored values could drive the auditor's
# terminal (e.g. an attacker's "user name" holding escape sequences), and so
# could the Unicode line/paragraph separators (a line break in many terminals)
# and the bidi controls (they reorder what the auditor reads): the human
# outputs show them all escaped, and so the invisible characters (soft hyphen, zero-width space and
# joiners, word joiner, BOM) that make `alice` + U+200B look like `alice`: every format character
# (Unicode category Cf: tags, annotation marks, ...), and the other characters that draw nothing or a
# blank (combining grapheme joiner, variation selectors, Hangul fillers, Braille blank). JSON escapes C0
# itself; CSV stays raw. A lone surrogate (another writer's JSON may escape one: a file name decoded
# with surrogateescape) has no UTF-8 form: escaped too, in JSON as the `\\udXXX` that decodes back to it.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    "\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u206f"
    "\u2800\u3164\ud800-\udfff\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if ord(char) < 0x100:
        return repr(char)[1:-1]
    return f"\\U{ord(char):08x}" if ord(char) > 0xFFFF else f"\\u{ord(char):04x}"


def _safe(text: str) -> str:
    return _CONTROL.sub(_escape, text)


def _masked(text: str) -> str:
    """Text the command puts in its own lines (a path it names, an error): secret shapes masked, controls escaped.

    What a command prints on success lands in a scheduled job's log too, as its errors do.
    """
    return _safe(redact(text))


def _field_text(value: Any) -> str:
    """A key or value of `key=value` text: bare when it cannot pass for more fields, else a JSON string.

    Any whitespace (not just a space: U+00A0, U+2028, ...) or a double quote
    would let a stored value such as `alice  outcome=success` forge a field.
    """
    if isinstance(value, str) and value and not any(char.isspace() or char == '"' for char in value):
        return value
    return _compact_json(value)


def _details_text(details: Any) -> str:
    if isinstance(details, UnreadableDetails):
        if details.raw is None:
            return f"[unreadable details: {details.error}]"
        return f"[unreadable details, stored text: {_compact_json(details.raw)}]"
    if not isinstance(details, dict):
        return "" if details is None else _compact_json(details)
    return " ".join(f"{_key_text(str(key))}={_field_text(value)}" for key, value in details.items())


def _key_text(key: str) -> str:
    """A details key before its `=`: quoted when it holds `=` itself, so `a=b=c` has one reading."""
    return _compact_json(key) if "=" in key else _field_text(key)


def _value(entry: AuditEntry, attribute: str, reader: DetailsReader) -> Any:
    if attribute == "details":
        return reader.details(entry)
    if attribute in _TIME_COLUMNS:
        return reader.time(entry, attribute)
    return reader.column(entry, attribute)


def _cell(entry: AuditEntry, attribute: str, reader: DetailsReader) -> str:
    return _cell_text(_value(entry, attribute, reader), attribute)


def _cell_text(value: Any, attribute: str) -> str:
    if attribute == "timestamp":
        text = _short_time(value)
    elif attribute == "details":
        text = _details_text(value)
    elif attribute == "event_type":
        text = _table_text(_event_type_text(value))
    else:
        text = "" if value is None else _table_text(str(value))
    return _safe(text)


def _table_text(text: str) -> str:
    """A table cell: bare when its spaces read as they are, else a JSON string.

    Columns are two spaces apart: a value holding two spaces in a row (`mallory  success`), a space
    at either end (`alice ` looks like `alice`), other whitespace (a no-break space looks like a
    space) or a leading double quote (which would pass for a quoted value) is quoted.
    """
    odd_space = any(char.isspace() and char != " " for char in text)
    if odd_space or text.startswith('"') or text != text.strip(" ") or "  " in text:
        return _compact_json(text)
    return text


def _drawn_width(text: str) -> int:
    """The columns a terminal draws `text` in: none for a combining mark, two for a wide (East Asian) character.

    Padding or cutting by characters instead would let a value of accents or wide letters move the
    later columns under the wrong header, or wrap a line whose tail then reads as a row of its own.
    """
    if text.isascii():
        return len(text)
    return sum(_char_width(char) for char in text)


def _char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _cut(text: str, width: int) -> str:
    """`text` if it fits in `width` columns, else as much as fits before a closing `…`."""
    if _drawn_width(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        used += _char_width(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + "…"


def render_table(entries: Sequence[AuditEntry], out: IO[str], reader: DetailsReader, *, width: int | None) -> None:
    """An aligned table; columns empty on every row are left out; DETAILS is cut to `width` if given."""
    render_table_twice(lambda: entries, out, reader, width=width)


def render_table_twice(
    entries: Callable[[], Iterable[AuditEntry]], out: IO[str], reader: DetailsReader, *, width: int | None
) -> None:
    """`render_table` over two passes of `entries()`: one measures the columns, one prints the rows.

    Neither holds the rows, so a table of every row of a large trail takes no more memory than one row.
    """
    always = ("id", "timestamp", "event_type")
    filled = {attribute: attribute in always for _, attribute in _COLUMNS}
    widths = {attribute: len(header) for header, attribute in _COLUMNS}
    empty = True
    for entry in entries():
        empty = False
        for _, attribute in _COLUMNS:
            value = _value(entry, attribute, reader)
            if value not in (None, "", {}):
                filled[attribute] = True
            widths[attribute] = max(widths[attribute], _drawn_width(_cell_text(value, attribute)))
    if empty:
        out.write("(no matching audit entries)\n")
        return
    columns = [(header, attribute) for header, attribute in _COLUMNS if filled[attribute]]
    sizes = [widths[attribute] for _, attribute in columns]
    last = len(columns) - 1
    if width is not None:
        used = sum(sizes[:last]) + 2 * last
        sizes[last] = max(len(columns[last][0]), width - used)

    def line(cells: Sequence[str]) -> str:
        padded = []
        for i, cell in enumerate(cells):
            if i == last:
                padded.append(_cut(cell, sizes[i]))
                continue
            fill = " " * (sizes[i] - _drawn_width(cell))
            padded.append(fill + cell if columns[i][1] == "id" else cell + fill)
        text = "  ".join(padded).rstrip()
        # The columns before DETAILS may already be wider than the terminal: cut the line itself.
        return text if width is None else _cut(text, width)

    out.write(line([header for header, _ in columns]) + "\n")
    for entry in entries():
        out.write(line([_cell(entry, attribute, reader) for _, attribute in columns]) + "\n")


def render_line(entry: AuditEntry, reader: DetailsReader, *, width: int | None = None) -> str:
    """One entry on one line, for `tail`: id, time, type, then the fields that are set; cut to `width` if given."""
    fields = [
        f"{_cell(entry, 'id', reader):>6}",
        _cell(entry, "timestamp", reader),
        # Another writer's row may hold any type text: quoted like a field value when it holds whitespace.
        f"{_safe(_field_text(_event_type_text(reader.column(entry, 'event_type')))):<18}",
    ]
    for label, attribute in (
        ("user", "user_identity"),
        ("actor", "actor_name"),
        ("plan", "plan_id"),
        ("project", "project_name"),
        ("session", "session_id"),
        ("outcome", "outcome"),
    ):
        value = reader.column(entry, attribute)
        if value:
            fields.append(f"{label}={_safe(_field_text(str(value)))}")
    details = _cell(entry, "details", reader)
    if details:
        # Marked, so that details such as {"user": "admin"} cannot pass for the row's own `user=` field.
        fields.append(f"details: {details}")
    text = "  ".join(fields)
    return text if width is None else _cut(text, width)


def write_jsonl(entries: Iterable[AuditEntry], out: IO[str], reader: DetailsReader) -> Iterator[AuditEntry]:
    for entry in entries:
        out.write(_compact_json(reader.as_dict(entry)) + "\n")
        yield entry


#: A cell starting with one of these is run as a formula by spreadsheets (OWASP "CSV Injection"); a
#: leading quote is included so that the one quote added in front can always be taken off again.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\x00", "'")


def _csv_cell(text: str) -> str:
    """The cell for `text`: one `'` in front when a spreadsheet would run it; removing that quote restores it."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def write_csv(entries: Iterable[AuditEntry], out: IO[str], reader: DetailsReader) -> Iterator[AuditEntry]:
    writer = csv.writer(out, lineterminator="\n")
    # With "\n" rows, the csv module leaves a bare CR unquoted, yet CSV readers end a row at one: a row
    # holding a CR is written with every cell quoted, so a stored value cannot forge a row.
    quoting_all = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    # Written as stored for the programs that read it; printed on a terminal, shown as the tables show
    # text, or a stored escape sequence would drive the auditor's terminal.
    on_terminal = out.isatty()
    writer.writerow(_CSV_FIELDS)
    for entry in entries:
        row = []
        details = reader.details(entry)
        unreadable = details if isinstance(details, UnreadableDetails) else None
        # The cells this row fills in itself: details and times, with the stored text when unreadable.
        own: dict[str, str] = {
            # JSON null stays `null`, as in JSON Lines: an empty cell is for unreadable details only.
            "details": "" if unreadable else _compact_json(details),
            "details_error": unreadable.error if unreadable else "",
            "details_raw": unreadable.raw or "" if unreadable else "",
        }
        own["not_utf8"] = _compact_json(list(entry.not_utf8)) if entry.not_utf8 else ""
        for column in _TIME_COLUMNS:
            value = reader.time(entry, column)
            bad = value if isinstance(value, UnreadableTime) else None
            own[column] = "" if bad else _iso(value)
            own[f"{column}_error"] = _TIME_ERROR if bad else ""
            own[f"{column}_raw"] = bad.raw if bad else ""
        for name in _CSV_FIELDS:
            if name in own:
                row.append(own[name])
                continue
            value = reader.column(entry, name)
            if name == "event_type":
                row.append(_event_type_text(value))
            elif isinstance(value, (dict, list)):
                row.append(_compact_json(value))
            else:
                row.append("" if value is None else str(value))
        row = [_safe(_csv_cell(cell)) if on_terminal else _csv_cell(cell) for cell in row]
        (quoting_all if any("\r" in cell for cell in row) else writer).writerow(row)
        yield entry


def _terminal_width(out: IO[str]) -> int | None:
    return shutil.get_terminal_size().columns if out.isatty() else None


def _print_entries(
    entries: Callable[[], Iterable[AuditEntry]], args: argparse.Namespace, out: IO[str], reader: DetailsReader
) -> None:
    """The rows `entries()` gives (called twice for a table) in the format `args` asks for."""
    with _standard_output():
        if args.json:
            for _ in write_jsonl(entries(), out, reader):
                pass
        elif args.csv:
            for _ in write_csv(entries(), out, reader):
                pass
        else:
            render_table_twice(entries, out, reader, width=_terminal_width(out))


# ---------------------------------------------------------------------------
# commands


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """The query filters given on the command line, as `AuditService.query` keywords."""
    types = [name for group in (args.types or []) for name in group]
    filters: dict[str, Any] = {
        "event_type": list(dict.fromkeys(types)) or None,
        "user_identity": args.user,
        "actor_name": args.actor,
        "plan_id": args.plan,
        "session_id": args.session,
        "project_name": args.project,
        "outcome": args.outcome,
        "since": args.since,
        "until": args.until,
    }
    if args.since is not None and args.until is not None and args.since > args.until:
        raise UsageError(f"--since ({_iso(args.since)}) is after --until ({_iso(args.until)}); nothing can match")
    return {key: value for key, value in filters.items() if value is not None}


def limit_notice(
    shown: int, total: int, *, offset: int, ascending: bool, after_id: int | None, last_id: int
) -> str | None:
    """The stderr line saying the limit cut the answer short, or None when nothing more matches.

    It names the `--after-id` that reads the next page: unlike a larger
    `--offset`, it repeats no row when rows are appended between two calls.
    """
    if offset + shown >= total:
        return None
    order = "oldest" if ascending else "newest"
    matching = "matching rows"
    if after_id is not None:
        matching += f" {'above' if ascending else 'below'} id {after_id}"
    if offset:
        what = f"{matching} {offset + 1} to {offset + shown} of {total}, {order} first"
    else:
        what = f"the {order} {shown} of {total} {matching}"
    without = " without --offset" if offset else ""
    return f"auditbus: showing {what}; --limit 0 shows all, --after-id {last_id}{without} the next page"


def cmd_query(args: argparse.Namespace) -> int:
    filters = _filters(args)
    if args.after_id is not None:
        filters["after_id"] = args.after_id
    notice = None
    path = db_path(args)
    reader = DetailsReader()
    order: Literal["asc", "desc"] = "asc" if args.asc else "desc"
    with open_service(path, read_only=args.read_only) as service:
        if not args.limit:
            # Fewer rows shown than counted means some were purged (see cmd_export).
            if args.asc and args.after_id is not None:
                # Ids above --after-id: a count bounded on both sides would take two reads. Counted
                # before the end is read; a row appended between the two is shown uncounted, and can
                # make up for a row purged meanwhile (docs/cli.md says so).
                expected = service.count(**filters, order=order)
                every, _ = _every_row(service, filters, args.offset, ascending=args.asc)
            else:
                # Counted up to the end the walk stops at, read first: a row appended between
                # the two reads is neither shown nor counted.
                every, end = _every_row(service, filters, args.offset, ascending=args.asc)
                expected = _count_up_to(service, filters, end)
            expected = max(0, expected - args.offset)
            shown = 0

            def counted() -> Iterator[AuditEntry]:
                nonlocal shown
                shown = 0
                for entry in every():
                    shown += 1
                    yield entry

            # Every row: streamed, so that a trail of millions of rows is never held in memory.
            _print_entries(counted, args, sys.stdout, reader)
            _refuse_incomplete(shown, expected, "standard output holds an incomplete answer")
            reader.warn(sys.stderr)
            return EXIT_OK
        entries = service.query(**filters, limit=args.limit, offset=args.offset, order=order)
        if len(entries) == args.limit:
            # A full page may hide more rows: say so, or an auditor takes 100 rows for the whole answer.
            # What the next page reads (past the last row shown), counted after this page was read: a
            # row appended meanwhile is counted only where that page would show it (asc), never as a
            # newer row that no next page of a newest-first listing holds.
            after = service.count(**_unbounded(filters), after_id=entries[-1].id, order=order)
            notice = limit_notice(
                len(entries),
                args.offset + len(entries) + after,
                offset=args.offset,
                ascending=args.asc,
                after_id=args.after_id,
                last_id=entries[-1].id,
            )
    _print_entries(lambda: entries, args, sys.stdout, reader)
    if notice:
        sys.stdout.flush()
        print(notice, file=sys.stderr)
    reader.warn(sys.stderr)
    return EXIT_OK


def _up_to(row_id: int) -> int | None:
    """The `after_id` that keeps ids up to `row_id` in descending order (None: no larger id can exist)."""
    return row_id + 1 if row_id < _SQLITE_MAX_INT else None


def _unbounded(filters: dict[str, Any]) -> dict[str, Any]:
    """`filters` without their `after_id`."""
    return {key: value for key, value in filters.items() if key != "after_id"}


def _count_up_to(service: AuditService, filters: dict[str, Any], end: int) -> int:
    """The rows matching `filters` (their `after_id` left out) up to id `end`; 0 when `end` is 0 (no row)."""
    return service.count(**_unbounded(filters), after_id=_up_to(end), order="desc") if end else 0


def _every_row(
    service: AuditService, filters: dict[str, Any], offset: int, *, ascending: bool
) -> tuple[Callable[[], Iterator[AuditEntry]], int]:
    """The matching rows after the first `offset`, read in pages each time it is called, and the id they end at.

    Every call stops at the newest row that matched when this was called, so it gives
    the same rows (a table reads them twice), less any purged meanwhile, and a writer
    appending faster than they are read cannot make it run on.
    """
    # The newest match (below `after_id`, newest first) ends the walk.
    unbounded = _unbounded(filters)
    top = service.query(**(unbounded if ascending else filters), limit=1, order="desc")
    end = top[0].id if top else 0

    def read() -> Iterator[AuditEntry]:
        if ascending:
            rows = service.iter_entries(**filters, order="asc")
            return itertools.takewhile(lambda entry: entry.id <= end, rows)
        # In descending order, `after_id` keeps the ids below it.
        return service.iter_entries(**unbounded, order="desc", after_id=_up_to(end))

    return (lambda: itertools.islice(read(), offset, None) if top else iter(())), end


def cmd_tail(args: argparse.Namespace) -> int:
    out = sys.stdout
    filters = _filters(args)
    path = db_path(args)
    reader = DetailsReader()

    def show(entries: Iterable[AuditEntry]) -> None:
        # On a terminal, a line wider than it would wrap, and the wrapped part read as a row of its own.
        width = None if args.json else _terminal_width(out)
        with _standard_output():
            for entry in entries:
                text = _compact_json(reader.as_dict(entry)) if args.json else render_line(entry, reader, width=width)
                out.write(text + "\n")
            out.flush()
        reader.warn(sys.stderr)

    with open_service(path, read_only=args.read_only) as service:
        try:
            _tail(service, args, filters, show)
        except KeyboardInterrupt:
            # For --follow, Ctrl-C (or SIGTERM) is the way out, whenever it comes.
            if not args.follow:
                raise
    return EXIT_OK


def _tail(
    service: AuditService,
    args: argparse.Namespace,
    filters: dict[str, Any],
    show: Callable[[Iterable[AuditEntry]], None],
) -> None:
    """The last `args.lines` matching rows, then, with `args.follow`, new ones until interrupted."""
    path = db_path(args)
    # The file the service opened, taken before anything is shown.
    followed = _file_identity(path)
    # Purges are looked for from the newest one before anything is read.
    purges = service.query(event_type=_PURGED, limit=1, order="desc")
    purge_seen = purges[0].id if purges else 0
    covered = _newest_id(service)
    # Followed on from the newest matching row, not the newest domain row: with --type naming the
    # service's own rows, those after it were already there.
    top = service.query(**filters, limit=1, order="desc")
    last_id = top[0].id if top else 0
    # Every matching row up to `covered` was shown or is older than the rows asked for.
    covered = max(covered, last_id)
    if top and args.lines:
        # The Nth newest matching row (`after_id` keeps smaller ids in descending order), then
        # every row from it on, read in pages: `-n` of any size takes little memory.
        nth = service.query(**filters, after_id=_up_to(top[0].id), offset=args.lines - 1, limit=1, order="desc")
        rows = service.iter_entries(**filters, order="asc", after_id=nth[0].id - 1 if nth else None)
        show(itertools.takewhile(lambda entry: entry.id <= top[0].id, rows))
    if not args.follow:
        return
    while True:
        # Polling a file no longer at the path would show nothing new, or another trail's rows.
        now = _file_identity(path)
        if now is None or now != followed:
            change = "removed" if now is None else "replaced"
            raise CliError(f"{path} was {change} while it was followed; the last row shown is row {last_id}")
        # Read before the batch: every matching row up to it is in the batch, unless the batch is full.
        head = _newest_id(service)
        batch = service.query(**filters, after_id=last_id, order="asc", limit=1000)
        if batch:
            show(batch)
            last_id = batch[-1].id
        # Read after the batch: a purge found here ran before it was read or after.
        for purge in service.query(event_type=_PURGED, after_id=purge_seen, order="asc", limit=None):
            purge_seen = purge.id
            notice = _purge_gap_notice(purge, covered, [entry.id for entry in batch])
            if notice:
                sys.stdout.flush()
                print(_masked(notice), file=sys.stderr, flush=True)
        covered = last_id if len(batch) == 1000 else max(last_id, head)
        if batch:
            continue
        if _wait_for_reader_gone(sys.stdout, args.interval):
            # `tail -f | head -1`: with no row to write, nothing else would tell that the reader left.
            raise BrokenPipeError(errno.EPIPE, "the reader of standard output went away")


_PURGED = "audit_purged"


def _newest_id(service: AuditService) -> int:
    """The id of the newest row of any type auditbus knows, 0 when there is none."""
    newest = service.query(event_type=list(_ALL_TYPES), limit=1, order="desc")
    return newest[0].id if newest else 0


def _purge_gap_notice(purge: AuditEntry, covered: int, batch_ids: list[int]) -> str | None:
    """The stderr line of `tail --follow` for a purge that deleted rows it had not shown, else None.

    A purge deletes every row up to its `through_id`. Run before the batch was read, the
    batch holds no row up to it, and matching rows after `covered` (up to which every
    matching row was shown) up to it were never shown; run after, the batch's rows up to
    it were shown and only later ones went unseen.
    """
    details = purge.details if isinstance(purge.details, dict) else {}
    through = details.get("through_id")
    if not isinstance(through, int) or isinstance(through, bool):
        return None
    shown = max([covered, *(row_id for row_id in batch_ids if row_id <= through)])
    if through <= shown:
        return None
    by = f" by {purge.user_identity}" if purge.user_identity else ""
    return (
        f"auditbus: a purge{by} (row {purge.id}) deleted the rows up to id {through} before they were "
        f"shown: any matching row after id {shown} up to {through} is missing here"
    )


def _wait_for_reader_gone(out: IO[str], seconds: float) -> bool:
    """Waits `seconds`, less if `out` is a pipe (or socket) whose reader closed it; says whether it did."""
    try:
        fd = out.fileno()
        poller = select.poll()
    except (AttributeError, OSError, ValueError):  # no poll() on this platform, or no descriptor
        time.sleep(seconds)
        return False
    # No events asked for: poll() reports only an error or a hang-up on the descriptor, and a pipe
    # whose reader closed it reports an error. A file or a terminal in use reports nothing.
    poller.register(fd, 0)
    started = time.monotonic()
    events = poller.poll(seconds * 1000)
    if any(event & (select.POLLERR | select.POLLHUP) for _, event in events):
        return True
    if events:  # POLLNVAL or the like: not a stream to watch; wait out the rest
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    return False


def _file_identity(path: str) -> tuple[int, int] | None:
    """The device and inode of the file at `path`, None when there is none."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _report_fields(report: Any) -> dict[str, Any]:
    names = ("ok", "checked", "unchained", "appended", "folded", "first_bad_id", "reason", "head_id", "head_hash")
    return {name: getattr(report, name, None) for name in names}


def describe_verify(report: Any) -> str:
    fields = _report_fields(report)
    unchained = fields["unchained"] or 0
    folded = fields["folded"] or 0
    # `unchained` counts rows older than the chain and rows appended without a hash after its
    # head; an auditor must not read the second kind as history from before the migration.
    appended = getattr(report, "appended", 0) or 0
    before = unchained - appended
    legacy = (
        f"; {before} legacy row{'s' if before != 1 else ''} written before the hash chain "
        "(unchained: not covered by the chain)"
        if before > 0
        else ""
    )
    if appended:
        legacy += (
            f"; {appended} row{'s' if appended != 1 else ''} appended without a hash after the newest chained row "
            "(unchained: not covered by the chain, writer unknown)"
        )
    if folded:
        # Protected from the next chained row on, but nothing says who wrote them.
        legacy += (
            f"; {folded} row{'s' if folded != 1 else ''} written without a hash (legacy service or SQLite tool), "
            "covered by the next auditbus row (folded: writer unknown)"
        )
    checked = f"{fields['checked']} row{'s' if fields['checked'] != 1 else ''} checked"
    if fields["ok"]:
        return f"chain intact: {checked}{legacy}"
    where = f"chain BROKEN at row {fields['first_bad_id']}: {fields['reason']}"
    return f"{where} ({checked}{legacy})"


def cmd_verify(args: argparse.Namespace) -> int:
    heads: list[tuple[int, str]] = args.heads or []
    with open_service(db_path(args), read_only=args.read_only) as service:
        report = service.verify(heads=heads)
    if args.json:
        print(_compact_json(_report_fields(report)))
    else:
        print(_safe(describe_verify(report)))
        kept = sorted({row for row, _ in heads})
        if report.ok and kept:
            print(f"kept head{'s' if len(kept) != 1 else ''} matched: {', '.join(f'row {i}' for i in kept)}")
        if report.ok and report.head_id is not None:
            # The value to keep where the trail's writers cannot change it.
            print(f"head: --head {report.head_id}:{report.head_hash}")
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED


def parse_head(value: str) -> tuple[int, str]:
    """`ID:HASH`, as `auditbus verify` prints it: a row id and its 64-hex-digit chain hash."""
    row, sep, digest = value.strip().partition(":")
    # An SQLite row id: ASCII digits (str.isdigit() also takes '²'), 1 to 2**63 - 1.
    if sep and row.isascii() and row.isdigit() and 1 <= int(row) < 2**63 and re.fullmatch(r"[0-9a-f]{64}", digest):
        return int(row), digest
    raise argparse.ArgumentTypeError(
        f"bad head {value!r}: expected ID:HASH, a row id and its 64 lowercase hex digit chain hash, "
        "as 'auditbus verify' prints it"
    )


class _Progress:
    """`exported n/total rows` on stderr, redrawn at most ten times a second; silent unless enabled."""

    def __init__(self, total: int | None, stream: IO[str], enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.done = 0
        self._drawn = 0.0

    def follow(self, rows: Iterable[object]) -> None:
        """Advances once per row `rows` gives, driving it to the end."""
        for _ in rows:
            self.advance()

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.enabled and now - self._drawn >= 0.1:
            self._drawn = now
            self._draw()

    def _draw(self) -> None:
        if self.total:
            share = min(100, self.done * 100 // self.total)
            text = f"exported {self.done:,}/{self.total:,} rows ({share}%)"
        else:
            text = f"exported {self.done:,} rows"
        self.stream.write(f"\r{text}")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


def cmd_export(args: argparse.Namespace) -> int:
    filters = _filters(args)
    writer: Callable[[Iterable[AuditEntry], IO[str], DetailsReader], Iterator[AuditEntry]] = (
        write_csv if args.format == "csv" else write_jsonl
    )
    path = db_path(args)
    if args.output:
        refuse_database_as_output(path, args.output)
    target = Path(args.output) if args.output else None
    # A progress line only helps a person watching, and must not mix into the export itself.
    show_progress = sys.stderr.isatty() and (target is not None or not sys.stdout.isatty())
    reader = DetailsReader()
    with open_service(path, read_only=args.read_only) as service:
        # The rows there when the export began: a writer appending meanwhile neither makes the export
        # run on nor slips rows past the count it reports.
        top = service.query(**filters, limit=1, order="desc")
        end = top[0].id if top else 0
        # Counted up to that end, in a read of its own: an export that writes fewer rows lost some,
        # deleted (purged) before it read them. A row appended between the two reads is not counted
        # (before, it was written and made up for a purged one, and the export passed as complete).
        total = _count_up_to(service, filters, end)
        progress = _Progress(total if show_progress else None, sys.stderr, show_progress)
        entries = itertools.takewhile(lambda entry: entry.id <= end, service.iter_entries(**filters, order="asc"))
        if target is None:
            with _standard_output():
                for _ in writer(entries, sys.stdout, reader):
                    progress.advance()
            progress.finish()
            _refuse_incomplete(progress.done, total, "standard output holds an incomplete export")
            reader.warn(sys.stderr)
            return EXIT_OK

        shown = _masked(str(target))
        outcome = f"{shown} holds an incomplete export" if _streamed(target) else f"{shown} was not written"

        def write(handle: IO[str]) -> None:
            progress.follow(writer(entries, handle, reader))
            # Raised before the file takes its name: an incomplete export never replaces FILE.
            _refuse_incomplete(progress.done, total, outcome)

        try:
            _export_to(target, write)
        except OSError as exc:
            # The temporary file is an implementation detail: name what the user asked for.
            raise CliError(f"cannot write {args.output}: {exc.strerror or type(exc).__name__}") from None
        progress.finish()
        print(f"exported {progress.done} rows to {_masked(str(target))}", file=sys.stderr)
        reader.warn(sys.stderr)
    return EXIT_OK


def _streamed(target: Path) -> bool:
    """Whether `_export_to` writes into `target` as a stream (a FIFO, a device) instead of replacing it."""
    try:
        kind = target.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(kind) and not stat.S_ISDIR(kind)


def _refuse_incomplete(done: int, total: int, outcome: str) -> None:
    """Fails a command that wrote fewer rows than matched when it began: a purge ran meanwhile."""
    if done < total:
        raise CliError(
            f"{total - done} of the {total} rows that matched when the command began were deleted (purged) "
            f"before they were read; {outcome}: run the command again"
        )


def _export_to(target: Path, write: Callable[[IO[str]], object]) -> None:
    """`write(handle)` into `target`: complete or not at all for a file, as a stream for anything else."""
    try:
        existing: os.stat_result | None = target.stat()
    except FileNotFoundError:
        existing = None
    kind = existing.st_mode if existing else stat.S_IFREG
    if not stat.S_ISREG(kind) and not stat.S_ISDIR(kind):
        # A FIFO, a device or /dev/fd/N (`-o >(gzip > x.gz)`, /dev/stdout): written into, as a
        # stream; a rename would replace the node itself with a regular file.
        with target.open("w", encoding="utf-8", newline="") as handle:
            write(handle)
        return
    # Through a symlink, the file it points to is replaced and the link kept.
    final = Path(os.path.realpath(target))
    # Written beside the target and renamed when complete: an interrupted export leaves no partial
    # file. An unguessable name, created only as a new file: in a shared folder (/tmp), a link
    # planted under the name is not followed. Private while written when it replaces a FILE, which
    # keeps that FILE's permissions (and owner, where allowed).
    partial = final.with_name(f".{final.name}.{secrets.token_hex(8)}.partial")
    fd = os.open(
        partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600 if existing else 0o666
    )
    try:
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
            if existing:
                with contextlib.suppress(OSError):
                    os.fchown(fd, existing.st_uid, existing.st_gid)
                os.fchmod(fd, stat.S_IMODE(existing.st_mode))
            # On disk before it takes the name: else a power loss can leave FILE empty or cut.
            handle.flush()
            os.fsync(fd)
        os.replace(partial, final)
        _sync_folder(final.parent)
    finally:
        # On a read-only file system even removing a file fails (EROFS), which must not replace
        # the error on its way out.
        with contextlib.suppress(OSError):
            partial.unlink()


def _sync_folder(folder: Path) -> None:
    """Makes a rename in `folder` durable, where the file system can sync a folder."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _print_mapping(data: Any, out: IO[str], indent: int = 0) -> None:
    if not isinstance(data, dict):
        out.write(" " * indent + _safe(str(data)) + "\n")
        return
    width = max((len(str(key)) for key in data), default=0)
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.write(f"{' ' * indent}{_safe(str(key))}:\n")
            _print_mapping(value, out, indent + 2)
        else:
            shown = _iso(value) if isinstance(value, datetime) else value
            text = _compact_json(shown) if isinstance(shown, (dict, list)) else str(shown)
            out.write(f"{' ' * indent}{_safe(str(key)) + ':':<{width + 1}}  {_safe(text)}\n")


def trail_summary(service: AuditService, reader: DetailsReader | None = None) -> dict[str, Any]:
    """What the trail holds: row counts, overall and per type, and the time span of the events.

    An event time that is not a timestamp is None, its row named by `reader`'s warning.
    """
    reader = reader or DetailsReader()

    def event_time(entry: AuditEntry | None) -> str | None:
        value = reader.time(entry, "timestamp") if entry else None
        return None if isinstance(value, UnreadableTime) else _iso(value)

    # One read: figures taken one by one disagree while another process appends or purges (rows
    # committed between two counts looked like rows of an unknown type).
    rows, counts, first, last = service._summary(_ALL_TYPES)
    by_type = dict(counts)
    # Rows another writer stored under a type of its own are counted too, as `other`.
    by_type["other"] = rows - sum(by_type.values())
    return {
        "rows": rows,
        "rows_by_type": {name: n for name, n in by_type.items() if n},
        "first_id": first.id if first else None,
        "last_id": last.id if last else None,
        "oldest_event": event_time(first),
        "newest_event": event_time(last),
    }


def cmd_stats(args: argparse.Namespace) -> int:
    reader = DetailsReader()
    with open_service(db_path(args), read_only=args.read_only) as service:
        counters = service.stats()
        # The path given, and an error naming it, as every line the command prints names them:
        # secret shapes masked (a token in a folder name), in --json too.
        for name in ("db_path", "last_error"):
            if isinstance(counters.get(name), str):
                counters[name] = redact(counters[name])
        figures = {"trail": trail_summary(service, reader), "service": counters}
    if args.json:
        print(_compact_json(figures))
    else:
        _print_mapping(figures, sys.stdout)
    reader.warn(sys.stderr)
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    before: datetime = args.before
    if before > datetime.now(_UTC):
        raise UsageError(f"--before {_iso(before)} is in the future; purge only removes rows older than a past date")
    if args.read_only:
        raise UsageError("--read-only: purge deletes rows and records that it did; it needs write access")
    if not args.yes and not sys.stdin.isatty():
        # Refused before the trail is opened for writing, which would record the service's start and stop.
        raise CliError("purge deletes audit rows for good: pass --yes to confirm when not at a terminal")
    path = db_path(args)
    with open_service(path) as service:
        if not args.yes:
            candidates = service.purge(before, dry_run=True)
            if candidates == 0:
                print(f"nothing to purge: no row before the first one recorded at or after {_iso(before)}")
                return EXIT_OK
            prompt = (
                f"Delete the {candidates} oldest audit row{'s' if candidates != 1 else ''}, recorded before "
                f"{_iso(before)}, from {_masked(path)}? This cannot be undone. [y/N] "
            )
            try:
                answer = input(prompt)
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("purge cancelled: nothing was deleted", file=sys.stderr)
                return EXIT_ERROR
        try:
            purged = service.purge(before)
        except KeyboardInterrupt as exc:
            # A purge handed to the writer still runs: say what it deleted, not just "interrupted".
            # close() waits for everything handed over, the purge included (Ctrl-C again stops the wait).
            service.close()
            done = _own_purge(path, before)
            if done is None:
                raise
            print(_purged_line(done, before, path))
            signum = exc.signum if isinstance(exc, _Terminated) else signal.SIGINT
            how = "interrupted" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"
            print(f"auditbus: {how} after the purge was handed over; it was carried out", file=sys.stderr)
            return 128 + signum
    print(_purged_line(purged, before, path))
    return EXIT_OK


def _purged_line(purged: int, before: datetime, path: str) -> str:
    return f"purged {purged} row{'s' if purged != 1 else ''} recorded before {_iso(before)} from {_masked(path)}"


def _own_purge(path: str, before: datetime) -> int | None:
    """How many rows this process's purge deleted, from its `audit_purged` row; None without one."""
    with AuditService(path, read_only=True) as service:
        rows = service.query(event_type="audit_purged", order="desc", limit=10)
    for row in rows:
        source = row.source if isinstance(row.source, dict) else {}
        details = row.details if isinstance(row.details, dict) else {}
        with contextlib.suppress(KeyError, TypeError, ValueError):  # another writer's row: not ours
            if source.get("pid") == os.getpid() and datetime.fromisoformat(details["before"]) == before:
                deleted = details.get("deleted")
                return deleted if isinstance(deleted, int) else None
    return None


_SCAN_CHUNK = 1 << 20


def _scan_for(needles: dict[str, bytes], path: str) -> tuple[dict[str, bool], list[str], int]:
    """Which needles occur in the bytes of the database and its journal/WAL files."""
    found = dict.fromkeys(needles, False)
    files = [name for name in (path, f"{path}-wal", f"{path}-journal", f"{path}-shm") if Path(name).is_file()]
    size = 0
    # Read in chunks, each with the end of the one before (a needle may straddle two): a large
    # trail is scanned in little memory.
    overlap = max((len(needle) for needle in needles.values()), default=1) - 1
    for name in files:
        with Path(name).open("rb") as handle:
            tail = b""
            while chunk := handle.read(_SCAN_CHUNK):
                size += len(chunk)
                data = tail + chunk
                for label, needle in needles.items():
                    found[label] = found[label] or needle in data
                tail = data[-overlap:] if overlap else b""
    return found, files, size


def cmd_demo(args: argparse.Namespace) -> int:
    if args.read_only:
        raise UsageError("--read-only: demo writes a sample trail; it needs write access")
    path = db_path(args)
    out = sys.stdout
    run_id = secrets.token_hex(4)
    # A fresh key each run, so finding it absent cannot be an accident of older data.
    secret = "sk-proj-" + secrets.token_urlsafe(30).replace("-", "x").replace("_", "y")
    out.write(f"auditbus demo: services emit through a wired bus into {_masked(path)}, as user 'alice'\n\n")
    with open_service(path, create=True) as service:
        newest = service.query(limit=1, order="desc")
        start_id = newest[0].id if newest else 0
        bus = demo.wired_bus(service)
        emitted: list[str] = []
        bus.subscribe_all(lambda event: emitted.append(event.event_id))
        with identity("alice"):
            demo.play(bus, run_id=run_id, secret=secret)
        service.flush()
        rows = [row for row in service.query(after_id=start_id, order="asc", limit=None) if row.event_id in emitted]
        report = service.verify()
    reader = DetailsReader()
    render_table(rows, out, reader, width=_terminal_width(out))
    in_rows = any(secret in _compact_json(reader.as_dict(row)) for row in rows)
    out.write("\n")

    checks: list[tuple[bool, str]] = []
    checks.append(
        (
            len(rows) == len(emitted)
            and [_event_type_text(row.event_type) for row in rows] == [t.value for t in demo.PLAYED_TYPES],
            f"persisted: {len(rows)} of {len(emitted)} emitted events are rows, covering "
            f"{len({_event_type_text(row.event_type) for row in rows})} audit types",
        )
    )
    users = {row.user_identity for row in rows}
    checks.append((users == {"alice"}, f"identity: every row carries user_identity={sorted(map(str, users))}"))
    masked = f"{secret[:8]}…({len(secret)} chars)"
    found, files, size = _scan_for({"secret": secret.encode(), "control": run_id.encode()}, path)
    checks.append(
        (
            not found["secret"] and not in_rows and found["control"],
            f"redaction: the planted API key {masked} is {'FOUND' if found['secret'] else 'absent'} in "
            f"{len(files)} database file(s), {size:,} bytes scanned; this run's id {run_id} is "
            f"{'present' if found['control'] else 'MISSING'} (the scan sees stored text)",
        )
    )
    checks.append((bool(report.ok), f"verify: {describe_verify(report)}"))
    for ok, text in checks:
        out.write(f"[{'ok' if ok else 'FAIL'}] {_safe(text)}\n")
    passed = all(ok for ok, _ in checks)
    out.write(
        "\nall checks passed; ask the trail: auditbus query --user alice\n"
        if passed
        else "\nauditbus demo: a check FAILED (see above)\n"
    )
    return EXIT_OK if passed else EXIT_CHECK_FAILED


# ---------------------------------------------------------------------------
# the parser


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one `auditbus: error: ...` line.

    The line quotes the arguments given (a date, a filter, an unrecognised
    word) with secret shapes masked: a token pasted into the wrong argument
    of a scheduled job's call would otherwise be copied into the job's log.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"auditbus: error: {_masked(message)} (see '{self.prog} --help')\n")


def _add_db(parser: argparse.ArgumentParser, default: Any, read_only_default: Any) -> None:
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=default,
        help=f"the audit database (default: ${ENV_DB}, else ./{DEFAULT_DB})",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        default=read_only_default,
        help="read without writing anything to the database, this access included (an evidence copy, "
        "read-only media, a reader without write permission); not for demo or purge",
    )


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (all must match)")
    group.add_argument(
        "--type",
        dest="types",
        action="append",
        type=_event_types,
        metavar="TYPE",
        help="event type; repeat or separate by commas for any of several",
    )
    group.add_argument("--user", help="user identity (who acted)")
    group.add_argument("--actor", help="actor name")
    group.add_argument("--plan", help="plan id")
    group.add_argument("--session", help="session id")
    group.add_argument("--project", help="project name")
    group.add_argument("--outcome", help="outcome, e.g. success or failure")
    group.add_argument("--since", type=parse_when, metavar="WHEN", help=f"at or after WHEN: {_DATE_HELP}")
    group.add_argument("--until", type=parse_when, metavar="WHEN", help="at or before WHEN (same forms)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="auditbus",
        description="Ask the auditbus audit trail who did what, when.",
        epilog="Run 'auditbus demo' to fill ./audit.db with a sample trail. Exit status: 0 ok, 1 error, "
        "2 bad usage, 3 a check failed.",
    )
    parser.add_argument("--version", action="version", version=f"auditbus {__version__}")
    _add_db(parser, None, False)
    # Subcommands take --db and --read-only too, without overriding one given before the command.
    common = _Parser(add_help=False)
    _add_db(common, argparse.SUPPRESS, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="run the services through a wired bus, show the trail, prove redaction, verify",
        description="Runs the services' audit points (plan apply and cancel, config set with a secret, "
        "session create, auth success and failure, resource modification, correction, entity deletion) "
        "under identity 'alice' through a wired bus, then prints the trail, proves the secret is not in the "
        "database file and verifies the chain. Creates the database if needed. Exit 0 only if every check passes.",
    )
    demo.set_defaults(handler=cmd_demo)

    query = commands.add_parser(
        "query",
        parents=[common],
        help="entries matching filters, newest first",
        description="Entries matching filters.",
    )
    _add_filters(query)
    query.add_argument("--limit", type=_non_negative, default=100, help="at most N entries (default 100; 0: all)")
    query.add_argument("--offset", type=_non_negative, default=0, help="skip the first N matches")
    query.add_argument(
        "--after-id",
        type=_non_negative,
        metavar="ID",
        help="only the entries past row ID in the listing's order (older ids newest first, newer with --asc): "
        "the next page after a row shown, with no row repeated when rows are appended meanwhile",
    )
    query.add_argument("--asc", action="store_true", help="oldest first")
    fmt = query.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON Lines: one JSON object per entry")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row; details as JSON")
    query.set_defaults(handler=cmd_query)

    tail = commands.add_parser(
        "tail", parents=[common], help="the latest entries; --follow for new ones", description="The latest entries."
    )
    _add_filters(tail)
    tail.add_argument("-n", "--lines", type=_non_negative, default=10, metavar="N", help="show the last N (default 10)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new entries; Ctrl-C stops")
    tail.add_argument(
        "--interval", type=_positive_seconds, default=1.0, metavar="SECONDS", help="poll period (default 1)"
    )
    tail.add_argument("--json", action="store_true", help="JSON Lines")
    tail.set_defaults(handler=cmd_tail, csv=False)

    verify = commands.add_parser(
        "verify",
        parents=[common],
        help="check the hash chain; exit 3 naming the first bad row",
        description="Checks every row's hash against the row before, and that no newest rows were cut from the"
        " end (while sqlite_sequence is left alone); with --head, that rows whose hashes were kept outside the"
        " trail still carry them. Prints the head to keep. Exit 0 if the chain is intact, 3 if not.",
    )
    verify.add_argument("--json", action="store_true", help="the report as one JSON object")
    verify.add_argument(
        "--head",
        dest="heads",
        action="append",
        type=parse_head,
        metavar="ID:HASH",
        help="a head an earlier verify printed, kept outside the trail: row ID must still carry HASH "
        "(finds a trail rewritten wholesale); repeatable",
    )
    verify.set_defaults(handler=cmd_verify)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="stream every matching entry, oldest first, as JSON Lines or CSV",
        description="Streams matching entries, oldest first. Shows progress on stderr when it is a terminal.",
    )
    _add_filters(export)
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="default jsonl")
    export.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE (complete or not at all); default (or -) stdout"
    )
    export.set_defaults(handler=cmd_export)

    stats = commands.add_parser(
        "stats",
        parents=[common],
        help="row counts per type, time span, and the service's figures",
        description="What the trail holds (rows, per type, first and last event) and AuditService.stats().",
    )
    stats.add_argument("--json", action="store_true", help="as one JSON object")
    stats.set_defaults(handler=cmd_stats)

    purge = commands.add_parser(
        "purge",
        parents=[common],
        help="delete the oldest rows, dated before a date (asks first)",
        description="Deletes the oldest rows, up to the first dated at or after WHEN (the event's own timestamp). "
        "Asks for confirmation at a terminal; elsewhere requires --yes.",
    )
    purge.add_argument("--before", type=parse_when, required=True, metavar="WHEN", help=_DATE_HELP)
    purge.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(handler=cmd_purge)
    return parser


def _configure_output(args: argparse.Namespace) -> None:
    """Output that any stored text can pass through, whatever the locale.

    Under a locale that cannot encode every character (LC_ALL=C without Python's UTF-8 mode, Latin-1),
    one stored name would otherwise stop the output half-way. Human output shows what the locale cannot
    encode as `\\xNN`/`\\uXXXX`; JSON Lines and CSV, read by programs, are always UTF-8 and exact.
    """
    machine = bool(getattr(args, "json", False) or getattr(args, "csv", False) or args.command == "export")
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and codecs.lookup(stream.encoding).name != "utf-8":
            if stream is sys.stdout and machine:
                stream.reconfigure(encoding="utf-8")
            else:
                stream.reconfigure(errors="backslashreplace")


class _LevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Not "auditbus: error:", which is the command's own failure: the service's lines come and go.
        return f"auditbus: audit service {record.levelname.lower()}: {super().format(record)}"


@contextlib.contextmanager
def _logging_as_command() -> Iterator[None]:
    """The service's own log lines (a writer retrying on a locked trail) as lines of this command.

    Without a handler, Python prints a warning's bare text: nothing would say which program wrote it.
    """
    log = logging.getLogger("auditbus")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter())
    propagate = log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, unwound as Ctrl-C is: the service closed, an export's partial file removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, _frame: object) -> None:
    raise _Terminated(signum)


@contextlib.contextmanager
def _termination_unwinds() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `_Terminated` (when not ignored, and only on the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _terminate)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _open_closed_descriptors() -> None:
    """Opens /dev/null on a closed stdin, stdout or stderr (`2>&-`, a daemon's closed descriptors).

    Python leaves `sys.stderr` None then, and `print(file=None)` writes to stdout: a warning would
    land in the `--json` output. A file the command opens could also take the number, and what is
    written to that descriptor would land in it.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the life of the process
    if sys.stdin is None:
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - for the life of the process


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `auditbus` command; returns the exit status."""
    _open_closed_descriptors()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "output", None) == "-":
        args.output = None  # the usual name of standard output; `./-` names a file
    if sys.stdout is None:
        if not (args.command == "export" and args.output):
            print("auditbus: error: standard output is closed: the answer has nowhere to go", file=sys.stderr)
            return EXIT_ERROR
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the life of the process
    _configure_output(args)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with _logging_as_command():
        return _run(handler, args)


def os_user() -> str | None:
    """The operating-system account running the command, for its own rows in the trail.

    The name of the process's user id, not `$USER` or `$LOGNAME`, which whoever
    runs the command sets; `uid:N` for a user id with no account (a container's
    arbitrary user). Where there are no user ids, `getpass.getuser()`; None when
    that fails too.
    """
    try:
        import pwd  # noqa: PLC0415 - POSIX only
    except ImportError:
        try:
            return getpass.getuser()
        except Exception:  # no name in the environment, no account to ask
            return None
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


@contextlib.contextmanager
def _acting_user() -> Iterator[None]:
    """The command's own rows (its start and stop, a purge) name who ran it.

    An identity already in force (`cli.main()` called inside `identity(...)`) is kept.
    """
    user = None if current_identity() is not None else os_user()
    if user is None:
        yield
        return
    with identity(user):
        yield


def _flush_output() -> None:
    """Writes out what standard output still holds while a failure can be reported.

    A short answer stays in Python's buffer until exit, where a full disk or a reader
    gone would print "Exception ignored" and end with status 120 instead of one line.
    """
    with _standard_output():
        sys.stdout.flush()


@contextlib.contextmanager
def _standard_output() -> Iterator[None]:
    """Names standard output in a write to it that fails (a full disk under `> FILE`).

    The rows are read meanwhile, but the trail raises `AuditError`, never `OSError`: the
    error line must not leave the auditor thinking that the trail's disk is full.
    """
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        _discard_output()
        raise CliError(f"cannot write standard output: {exc.strerror or type(exc).__name__}") from None


def _discard_output() -> None:
    """Points standard output at /dev/null, so that Python's flush at exit has nowhere to fail."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """`handler(args)`'s exit status; what it raises, as one line on stderr and its status."""
    try:
        with _termination_unwinds(), _acting_user():
            status = handler(args)
        _flush_output()
        return status
    except CliError as exc:
        print(f"auditbus: error: {_masked(str(exc))}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR
    except KeyboardInterrupt as exc:
        if isinstance(exc, _Terminated):
            print(f"auditbus: terminated ({signal.Signals(exc.signum).name})", file=sys.stderr)
            return 128 + exc.signum
        print("auditbus: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`auditbus query | head`): not an error; keep Python quiet at exit.
        _discard_output()
        return EXIT_OK
    except Exception as exc:
        if os.environ.get("AUDITBUS_DEBUG"):
            raise
        if isinstance(exc, OSError):
            _discard_output()
        print(f"auditbus: error: {_masked(_one_line(exc))} ({type(exc).__name__})", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
