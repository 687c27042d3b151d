"""Failure log lines on the `auditbus` logger, with secrets masked in the traceback text.

A handler's, observer's or recorder's exception is user code's text: an HTTP
client error quoting an `Authorization` header, a URL with its password, a
token echoed back. The record keeps the exception object (`exc_info`) for
code that inspects it, and carries its traceback text already formatted and
masked (`exc_text`), which `logging.Formatter` prints instead of formatting
`exc_info` again: the log line never holds the secret.
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
    try:
        text = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
    except Exception:  # a broken __str__ or __repr__ somewhere in the chain
        text = f"{exc_type.__qualname__}: <traceback could not be formatted>"
    # The frame that called into auditbus (emit(), a subscriber), as logger.error() would name it.
    path, line, func, _ = logger.findCaller(stacklevel=2)
    record = logger.makeRecord(logger.name, logging.ERROR, path, line, message, args, (exc_type, exc, tb), func)
    record.exc_text = str(redact(text))
    logger.handle(record)
