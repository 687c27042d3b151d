"""`identity(...)`: who is acting, for every event created inside the block."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, NamedTuple, TypeVar, cast

from ._native import _identity_var, redact

_F = TypeVar("_F", bound=Callable[..., Any])

_VAR: ContextVar[str | None] = _identity_var()
# What `_Open.restore` holds when the block restores what its token replaced.
_AS_REPLACED: Any = object()


class _Open(NamedTuple):
    """One open `identity()` block: who opened it, its token, what its exit restores."""

    block: identity
    token: Token[str | None]
    # `_AS_REPLACED`, or the value of an outer block that was exited first
    # (blocks exited out of order): this block then restores what that one replaced.
    restore: Any


# The open `identity()` blocks, innermost last. Kept in a context variable, not
# on the instance, so that one instance (say a module-level
# `as_admin = identity("admin")`) can be entered by several threads or tasks at
# once and each block still restores what it replaced in its own context.
_OPEN: ContextVar[tuple[_Open, ...]] = ContextVar("auditbus.identity.open", default=())


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

    A generator's `with identity()` runs in its caller's context (contextvars
    do not isolate generators): while the generator is suspended inside the
    block, that identity is in force in the caller. A block exited before
    one opened inside it (such a generator, a manual `__exit__`) leaves the
    inner block's value in force, and the inner block's exit then restores
    what the outer one replaced. Exiting a block where it is not open (another
    thread or task) raises `RuntimeError` and changes nothing. So an async
    generator left inside its block (`async for ...: break`), which the event
    loop closes later in a task of its own, leaves its identity in force in
    the consumer: close it there, with `contextlib.aclosing()`.
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
        _OPEN.set((*_OPEN.get(), _Open(self, token, _AS_REPLACED)))
        return self.user_identity

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        opened = list(_OPEN.get())
        if not opened:
            raise RuntimeError(
                f"identity({_shown(self.user_identity)}) is exited where no identity() block is open: "
                "a block must be entered and exited in the same thread or asyncio task"
            )
        at = next((i for i in reversed(range(len(opened))) if opened[i].block is self), None)
        if at is None:
            raise RuntimeError(
                f"identity({_shown(self.user_identity)}) is exited where it is not open: "
                "a block must be entered and exited in the same thread or asyncio task"
            )
        entry = opened.pop(at)
        in_force = _VAR.get(None)
        try:
            # Also the check that the block was opened in this context: an asyncio
            # task copies its parent's open blocks, but not the right to exit them.
            _VAR.reset(entry.token)
        except ValueError:
            raise RuntimeError(
                f"identity({_shown(self.user_identity)}) is exited where it is not open: "
                "a block must be entered and exited in the same thread or asyncio task"
            ) from None
        if at < len(opened):
            # Exited before a block opened inside it (a generator suspended in
            # its block, a manual __exit__): the inner block's value stays in
            # force, and its exit restores what this block replaced.
            _VAR.set(in_force)
            opened[at] = opened[at]._replace(restore=self._restored(entry))
            _OPEN.set(tuple(opened))
            return
        _OPEN.set(tuple(opened))
        if entry.restore is not _AS_REPLACED:
            _VAR.set(entry.restore)

    @staticmethod
    def _restored(entry: _Open) -> str | None:
        """The value `entry`'s exit restores (None for a variable that was unset: its default)."""
        if entry.restore is not _AS_REPLACED:
            return cast("str | None", entry.restore)
        old = entry.token.old_value
        return None if old is Token.MISSING else cast("str | None", old)

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
