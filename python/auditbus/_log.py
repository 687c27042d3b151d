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
"""

from __future__ import annotations

import logging
import traceback
from types import TracebackType

from ._native import redact

logger = logging.getLogger("auditbus")


def failure(
    message: str,
    args: tuple[object, ...],
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | None,
) -> None:
    """Logs `message % args` at ERROR with the exception's traceback, its secrets masked."""
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
    # The frame that called into auditbus (emit(), a subscriber), as logger.error() would name it.
    path, line, func, _ = logger.findCaller(stacklevel=2)
    record = logger.makeRecord(logger.name, logging.ERROR, path, line, message, args, _masked(exc_type, exc, tb), func)
    record.exc_text = str(redact(text))
    logger.handle(record)


# Frames a failure's log line may take: `traceback`, `logging`, and the application's handlers
# and formatters.
_LOGGING_FRAMES = 50


def _need_frames(count: int) -> None:
    """Raises RecursionError unless `count` more frames fit under the recursion limit."""
    if count > 0:
        _need_frames(count - 1)


def _masked(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> tuple[type[BaseException], BaseException, TracebackType | None] | None:
    """`exc_info` for the record: a twin of `exc` whose message is `exc`'s text, masked."""
    try:
        twin = exc_type.__new__(exc_type)
        twin.args = (str(redact(str(exc))),)
        twin.__traceback__ = tb
        # A __str__ reading attributes only the constructor sets fails here, not in a formatter;
        # one that ignores `args` (a text built from globals or class attributes) prints what
        # it printed before, secrets included: such a twin is no better than the exception.
        shown = (str(twin), repr(twin))
    except Exception:  # any failure: no exception object rather than the raw one
        return None
    if any(str(redact(text)) != text for text in shown):
        return None
    return exc_type, twin, tb
