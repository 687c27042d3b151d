"""`identity(...)`: who is acting, for every event created inside the block."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar, cast

from ._native import _identity_var

_F = TypeVar("_F", bound=Callable[..., Any])

_VAR: ContextVar[str | None] = _identity_var()


def current_identity() -> str | None:
    """The identity set by the innermost enclosing `identity()` block, or None."""
    return _VAR.get(None)


class identity:
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

    __slots__ = ("_tokens", "user_identity")

    def __init__(self, user_identity: str | None) -> None:
        if user_identity is not None and not isinstance(user_identity, str):
            raise TypeError(f"identity() takes a str or None, got {type(user_identity).__name__} {user_identity!r}")
        self.user_identity = user_identity
        self._tokens: list[Token[str | None]] = []

    def __enter__(self) -> str | None:
        self._tokens.append(_VAR.set(self.user_identity))
        return self.user_identity

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _VAR.reset(self._tokens.pop())

    def __call__(self, func: _F) -> _F:
        """Decorates a function (sync or async) so each call runs inside the block."""
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
