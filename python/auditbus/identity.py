"""`identity(...)`: who is acting, for every event created inside the block."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar, cast

from ._native import _identity_var, redact

_F = TypeVar("_F", bound=Callable[..., Any])

_VAR: ContextVar[str | None] = _identity_var()
# The tokens of the open `identity()` blocks, innermost last. Kept in a context
# variable, not on the instance, so that one instance (say a module-level
# `as_admin = identity("admin")`) can be entered by several threads or tasks at
# once and each block still restores what it replaced in its own context.
_OPEN: ContextVar[tuple[Token[str | None], ...]] = ContextVar("auditbus.identity.open", default=())


def _shown(value: object) -> str:
    """`repr(value)` for an error message, as auditbus's other errors quote a value: secret
    shapes masked (callers log errors) and cut to about 60 characters."""
    with contextlib.suppress(Exception):  # an odd object: its repr is still scanned below
        value = redact(value)
    text = str(redact(repr(value)))
    return text if len(text) <= 60 else f"{text[:57]}..."


def current_identity() -> str | None:
    """The identity set by the innermost enclosing `identity()` block, or None."""
    return _VAR.get(None)


class identity:  # lower-case: used like contextlib's managers
    """Sets the acting user for events created inside a `with` block or a decorated call.

    >>> with identity("alice"):
    ...     event = DomainEvent(event_type=EventType.PLAN_APPLIED)
    >>> event.user_identity
    'alice'

    An explicit `user_identity=` on the event wins. The value follows
    `contextvars`: it is per thread, copied into asyncio tasks created inside
    the block, and restored when the block ends, even on an exception.
    `identity(None)` clears it for the block.
    """

    __slots__ = ("user_identity",)

    def __init__(self, user_identity: str | None) -> None:
        if user_identity is not None and not isinstance(user_identity, str):
            raise TypeError(
                f"identity() takes a str or None, got {type(user_identity).__name__} {_shown(user_identity)}"
            )
        self.user_identity = user_identity

    def __enter__(self) -> str | None:
        token = _VAR.set(self.user_identity)
        _OPEN.set((*_OPEN.get(), token))
        return self.user_identity

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        opened = _OPEN.get()
        if not opened:
            raise RuntimeError(
                f"identity({_shown(self.user_identity)}) is exited where no identity() block is open: "
                "a block must be entered and exited in the same thread or asyncio task"
            )
        *outer, token = opened
        _OPEN.set(tuple(outer))
        _VAR.reset(token)

    def __call__(self, func: _F) -> _F:
        """Decorates a function (sync or async) so each call runs inside the block."""
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            # A generator's body runs after the call returns, outside any block
            # the wrapper could open; refuse rather than silently not apply.
            raise TypeError(
                f"identity() decorates plain and async functions, not the generator function {func.__qualname__}; "
                "use `with identity(...)` inside its body"
            )
        if not callable(func):
            raise TypeError(f"identity() decorates a function, got {type(func).__name__} {_shown(func)}")
        user = self.user_identity
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with identity(user):
                    return await func(*args, **kwargs)

            return cast(_F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with identity(user):
                return func(*args, **kwargs)

        return cast(_F, wrapper)

    def __repr__(self) -> str:
        return f"identity({self.user_identity!r})"
