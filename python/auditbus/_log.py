"""Failure log lines on the `auditbus` logger, with secrets masked in the traceback text.

A handler's, observer's or recorder's exception is user code's text: an HTTP
client error quoting an `Authorization` header, a URL with its password, a
token echoed back. The record carries the traceback text already formatted
and masked (`exc_text`), which `logging.Formatter` prints as it is. Its
`exc_info` holds a twin of the exception, of the same type, with the same
traceback and the masked text as its message (the caller's exception object
is left untouched): a formatter that formats `exc_info` itself, as JSON
formatters do, prints no secret either. An exception that cannot be twinned
(its `__str__` needs what its constructor set, or ignores `args` and still
prints a secret shape) is logged without `exc_info`.

The event whose delivery failed is known too: its values that redaction masks
(a `password` under its key name, a URL's password) carry no shape of their
own once quoted alone (`KeyError: 'hunter2'`), so they are masked wherever the
log line's text holds them. So are the values a custom `Redactor` of an audit
service wired to the bus masks (a key only its `extra_keys` names), and the
text is masked by its rules as well as by the default ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

from ._native import REDACTED, Redactor, redact

logger = logging.getLogger("auditbus")


def failure(
    message: str,
    args: tuple[object, ...],
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | None,
    *,
    event: object = None,
    redactors: Sequence[Redactor] = (),
) -> None:
    """Logs `message % args` at ERROR with the exception's traceback, its secrets masked (and
    `event`'s secret values, when the failure is one of delivering that event), by the default
    rules and by each of `redactors`."""
    if not logger.isEnabledFor(logging.ERROR):
        return
    # Near the recursion limit (a handler that emits again without end), logging would fail
    # part-way, after some handlers saw the record: fail before any did, and the caller hands
    # the failure up to a shallower frame that logs it once.
    _need_frames(_LOGGING_FRAMES)
    try:
        text = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
    except Exception:  # a broken __str__ or __repr__ somewhere in the chain
        text = f"{exc_type.__qualname__}: <traceback could not be formatted>"
    mask = _masker(event, redactors)
    # The frame that called into auditbus (emit(), a subscriber), as logger.error() would name it.
    path, line, func, _ = logger.findCaller(stacklevel=2)
    exc_info = _masked(exc_type, exc, tb, mask)
    record = logger.makeRecord(logger.name, logging.ERROR, path, line, message, args, exc_info, func)
    record.exc_text = mask(text)
    logger.handle(record)


# Frames a failure's log line may take: `traceback`, `logging`, and the application's handlers
# and formatters.
_LOGGING_FRAMES = 50


def _need_frames(count: int) -> None:
    """Raises RecursionError unless `count` more frames fit under the recursion limit."""
    if count > 0:
        _need_frames(count - 1)


def _masked(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None, mask: Callable[[str], str]
) -> tuple[type[BaseException], BaseException, TracebackType | None] | None:
    """`exc_info` for the record: a twin of `exc` whose message is `exc`'s text, masked."""
    try:
        twin = exc_type.__new__(exc_type)
        twin.args = (mask(str(exc)),)
        twin.__traceback__ = tb
        # A __str__ reading attributes only the constructor sets fails here, not in a formatter;
        # one that ignores `args` (a text built from globals or class attributes) prints what
        # it printed before, secrets included: such a twin is no better than the exception.
        shown = (str(twin), repr(twin))
    except Exception:  # any failure: no exception object rather than the raw one
        return None
    if any(mask(text) != text for text in shown):
        return None
    return exc_type, twin, tb


def _masker(event: object, redactors: Sequence[Redactor] = ()) -> Callable[[str], str]:
    """Masks secret shapes, and the secret values of `event` (if any), in a text: by the default
    rules and by each of `redactors`."""
    rules = [(redact, REDACTED), *((redactor.redact, redactor.mask) for redactor in redactors)]
    found: set[str] = set()
    details = getattr(event, "details", None)
    if details:
        for redacting, marker in rules:
            try:
                _collect(details, redacting(details), found, 0, marker)
            except RecursionError:  # too deep to mask here: the caller hands the failure up
                raise
            except Exception:  # an odd value in details: what was found, and the shapes, are still masked
                pass
    found = {form for secret in found for form in _forms(secret)}
    found.discard("")
    secrets = sorted(found)

    def mask(text: str) -> str:
        if secrets:
            # Python's own frame lines hold no value of the event: a short secret
            # (`password_length: 12`) is no line number or word of them.
            pieces = _FRAME_LINE.split(text)
            pieces[::2] = [_mask_values(piece, secrets) for piece in pieces[::2]]
            text = "".join(pieces)
        for redacting, _ in rules:
            text = str(redacting(text))
        return text

    return mask


def _mask_values(text: str, secrets: list[str]) -> str:
    """`text` with every place a value of `secrets` takes masked: places that overlap (one secret
    holding another, or two run together) are masked as one, so that no part of either is shown.
    A short one only where it stands alone (`KeyError: 98765`), not inside a longer word or number."""
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        at = text.find(secret)  # a scan per value, not a pattern of them all tried at each position
        while at >= 0:
            end = at + len(secret)
            if len(secret) >= _GLUED or (text[at - 1 : at] not in _ALNUM and text[end : end + 1] not in _ALNUM):
                spans.append((at, end))
            at = text.find(secret, at + 1)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    shown = 0  # where the text not yet copied starts
    start, end = spans[0]
    for at, until in spans[1:]:
        if at <= end:  # overlapping or touching: one mask
            end = max(end, until)
            continue
        out += (text[shown:start], REDACTED)
        shown, (start, end) = end, (at, until)
    out += (text[shown:start], REDACTED, text[end:])
    return "".join(out)


_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


# A traceback's frame line (`  File "app.py", line 12, in handle`), behind an exception group's margin or not.
_FRAME_LINE = re.compile(r'^((?:[ ]*\|)*[ ]*File "[^"\n]*", line [0-9]+, in [\w.<>]+)$', re.MULTILINE)


# A secret value this long is masked even where it is glued to other text.
_GLUED = 8


def _forms(secret: str) -> set[str]:
    """`secret` and the forms a repr() of it shows: escaped (`pa\\nss`, `\\u200b`, `\\'`), ASCII-only,
    and as UTF-8 bytes (`b'p\\xc3\\xa4ss'`)."""
    forms = {secret, repr(secret)[1:-1], ascii(secret)[1:-1]}
    with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate has no UTF-8 form
        forms.add(repr(secret.encode())[2:-1])
    # A traceback prints an exception group's members behind a `|` margin, which splits a
    # multi-line value: each line is masked on its own, but a line too short to tell apart.
    forms.update(line for line in secret.splitlines() if len(line.strip()) >= _LINE)
    return forms


# The shortest line of a multi-line secret value masked on its own.
_LINE = 4


def _collect(original: object, redacted: object, found: set[str], depth: int, marker: str = REDACTED) -> None:
    """Adds to `found` the texts of `original` that `redacted` (its redacted form, masked with
    `marker`) masks."""
    if depth > 64:  # the depth past which redaction keeps no value either
        return
    if isinstance(redacted, str):
        _collect_text(original, redacted, found, depth, marker)
    elif isinstance(redacted, dict):
        for key, value in redacted.items():
            if isinstance(original, Mapping):
                inner = original.get(key)
            else:  # a dataclass or a model, which redaction gives as the dict of its fields
                inner = getattr(original, key, None) if isinstance(key, str) else None
            _collect(inner, value, found, depth + 1, marker)
    elif isinstance(redacted, list) and isinstance(original, (list, tuple)) and len(original) == len(redacted):
        for inner, value in zip(original, redacted, strict=True):
            _collect(inner, value, found, depth + 1, marker)


def _collect_text(original: object, redacted: str, found: set[str], depth: int, marker: str) -> None:
    """`_collect` for a value redaction gave as text."""
    if isinstance(original, str):
        text = original
    elif isinstance(original, (bytes, bytearray)):
        text = bytes(original).decode("utf-8", "replace")
        if text != redacted:  # its repr, which shows what is not UTF-8 escaped (`b'\\xff\\xfe'`)
            found.add(repr(bytes(original))[2:-1])
    elif isinstance(original, (dict, list, tuple)):
        if redacted == marker:  # a container under a secret name, masked whole: each value in it
            _collect_all(original, found, depth)
        return
    else:  # a number, or an object whose text form held a secret
        text = str(original)
    if text == redacted:
        return
    if redacted == marker:
        found.add(text)
        # Masked whole by its key name: a part of it may be quoted alone (a DSN's password).
        shapes = str(redact(text))
        if shapes != text:
            _masked_parts(text, shapes, found)
    elif not _masked_parts(text, redacted, found, marker) and isinstance(original, str):
        # JSON text, which redaction parsed and wrote back.
        with contextlib.suppress(ValueError):
            _collect(json.loads(text), json.loads(redacted), found, depth + 1, marker)


def _collect_all(original: object, found: set[str], depth: int) -> None:
    """Adds to `found` every key and value in `original` but `None` and booleans, which redaction
    shows: a container masked whole hides its keys too (`{"api_tokens": {"tok-1": "ci"}}`)."""
    if depth > 64 or original is None or isinstance(original, bool):
        return
    if isinstance(original, Mapping):
        for key, value in original.items():
            _collect_all(key, found, depth + 1)
            _collect_all(value, found, depth + 1)
    elif isinstance(original, (list, tuple)):
        for value in original:
            _collect_all(value, found, depth + 1)
    else:
        _collect_text(original, REDACTED, found, depth, REDACTED)


def _masked_parts(text: str, redacted: str, found: set[str], marker: str = REDACTED) -> bool:
    """The parts of `text` that `redacted` shows masked with `marker` (`postgres://app:***REDACTED***@db`);
    False if the text kept around the masks is not the original's (the value was rewritten)."""
    pieces = redacted.split(marker)
    if len(pieces) < 2 or not text.startswith(pieces[0]) or not text.endswith(pieces[-1]):
        return False
    parts: list[str] = []
    start = position = len(pieces[0])
    for piece in pieces[1:-1]:
        if not piece:  # two masks side by side: one secret runs on
            continue
        at = text.find(piece, position)
        if at < 0:
            return False
        parts.append(text[start:at])
        start = position = at + len(piece)
    end = len(text) - len(pieces[-1])
    if end < start:
        return False
    parts.append(text[start:end])
    found.update(parts)
    return True
