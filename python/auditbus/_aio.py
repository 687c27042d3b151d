"""Coroutine-function handlers of `ReactiveEventBus`.

Whether a handler is a coroutine function is decided once, at subscribe time
(`is_coroutine_handler`), together with the loop it was subscribed from
(`running_loop`). At emit time `schedule` starts the coroutine on the emitting
thread's running loop, or else on that subscribe-time loop; its exception is
reported back to the bus, which logs and counts it like a sync handler's, and
so is a call queued on the subscribing loop that the loop, closed, never ran. A
plain handler that returns a coroutine (`schedule_result`) has it started on
the emitting thread's running loop, the only loop known for it.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import asyncio

    from ._native import DomainEvent, ReactiveEventBus

# The loop keeps only weak references to tasks; these keep them until done,
# per loop: a loop closed with tasks still pending never finishes them, and
# is let go (with its tasks) when a handler task next starts on a new loop.
_pending: dict[asyncio.AbstractEventLoop, set[asyncio.Task[None]]] = {}


def is_coroutine_handler(handler: object) -> bool:
    """True for an async function, a partial or bound method of one, or an object with an async `__call__`."""
    if inspect.iscoroutinefunction(handler):
        return True
    if inspect.isroutine(handler) or isinstance(handler, type):
        return False
    return callable(handler) and inspect.iscoroutinefunction(type(handler).__call__)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop of this thread, without importing asyncio if nothing has."""
    aio = sys.modules.get("asyncio")
    return None if aio is None else aio._get_running_loop()


def schedule(
    bus: ReactiveEventBus,
    handler: Callable[[DomainEvent], Awaitable[Any]],
    event: DomainEvent,
    home_loop: asyncio.AbstractEventLoop | None,
) -> None:
    """Start `handler(event)` on this thread's running loop, else on `home_loop`."""
    import asyncio  # noqa: PLC0415 - only coroutine handlers pay for importing asyncio

    loop = asyncio._get_running_loop()
    if loop is None and home_loop is None:
        raise RuntimeError(
            f"coroutine handler {_name(handler)} has no event loop to run on: "
            "emit() was called outside a running loop and the handler was subscribed outside one; "
            "subscribe it from inside the loop that should run it"
        )
    if loop is None:
        assert home_loop is not None
        queued = _Queued(bus, handler, event, home_loop)
        try:
            # The call runs in a copy of this thread's context (identity included).
            home_loop.call_soon_threadsafe(queued)
        except BaseException:
            queued.ran = True  # refused here: the caller reports it, not the finaliser
            raise
        return
    coro = _run(bus, handler, event)
    try:
        _start(loop, coro)
    except BaseException:
        coro.close()  # never started: no "coroutine was never awaited" warning
        raise


def schedule_result(
    bus: ReactiveEventBus,
    handler: Callable[[DomainEvent], object],
    event: DomainEvent,
    result: object,
) -> None:
    """A plain handler returned `result` (not None): start it on this thread's running loop if it is a
    coroutine (`lambda e: service.on_event(e)` with an async `on_event`); leave any other value alone."""
    if not inspect.iscoroutine(result):
        return
    import asyncio  # noqa: PLC0415 - only coroutine handlers pay for importing asyncio

    loop = asyncio._get_running_loop()
    if loop is None:
        result.close()  # never started: no "coroutine was never awaited" warning
        raise RuntimeError(
            f"handler {_name(handler)} returned a coroutine and has no event loop "
            "to run on: emit() was called outside a running loop; emit from inside the loop, or subscribe "
            "an async def handler from inside the loop that should run it"
        )
    _start(loop, _run(bus, handler, event, result))


def _name(handler: object) -> str:
    """The handler's name, never its text: a partial's or a callable object's repr quotes what it
    holds (clients, webhook URLs, credentials), and this name goes into a logged error."""
    name = getattr(handler, "__qualname__", None)
    if isinstance(name, str):
        return name
    if isinstance(handler, functools.partial):
        return f"partial({_name(handler.func)})"
    return type(handler).__qualname__


class _Queued:
    """A coroutine handler's call queued on its subscribing loop by an emit() on another thread.

    A loop closed before it runs the queued calls (a job's loop: `run_until_complete()` returned,
    then `close()`) drops them: the handler never runs. Reported then, when the dropped call is
    freed, as a handler error, like a loop already closed at the emit. The coroutine is created
    only when the call runs, so a dropped call leaves no "never awaited" warning either.
    """

    __slots__ = ("bus", "event", "handler", "loop", "ran")

    def __init__(
        self,
        bus: ReactiveEventBus,
        handler: Callable[[DomainEvent], Awaitable[Any]],
        event: DomainEvent,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.bus = bus
        self.handler = handler
        self.event = event
        self.loop = loop
        self.ran = False

    def __call__(self) -> None:
        self.ran = True
        coro = _run(self.bus, self.handler, self.event)
        try:
            _start(self.loop, coro)
        except BaseException:
            coro.close()
            raise

    def __del__(self) -> None:
        if not self.ran:
            self.bus._handler_failed(
                self.event,
                self.handler,
                RuntimeError(
                    f"coroutine handler {_name(self.handler)} did not run: emit() queued it on the loop it "
                    "was subscribed from, and its event loop was closed before running it"
                ),
            )


def _start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
    """Create the task on `loop` (its thread) and hold it until it is done."""
    task = loop.create_task(coro)
    held = _pending.get(loop)
    if held is None:
        # A snapshot: tasks start on other threads' loops too.
        for other in list(_pending):
            if other.is_closed():
                _pending.pop(other, None)
        held = _pending[loop] = set()
    held.add(task)
    task.add_done_callback(functools.partial(_done, loop))


def _done(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> None:
    """Drops the hold on a finished task, and on its loop once none of its tasks is pending."""
    held = _pending.get(loop)
    if held is not None:
        held.discard(task)
        if not held:
            _pending.pop(loop, None)


async def _run(
    bus: ReactiveEventBus,
    handler: Callable[[DomainEvent], object],
    event: DomainEvent,
    started: Awaitable[Any] | None = None,
) -> None:
    """Awaits `handler(event)`, or the coroutine a plain handler already returned (`started`)."""
    import asyncio  # noqa: PLC0415 - loaded already: this runs on a loop

    try:
        await (cast("Awaitable[Any]", handler(event)) if started is None else started)
    except Exception as exc:  # isolated like a sync handler's: logged and counted by the bus
        failed: BaseException = exc
    except (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit):
        # The loop's run ends with the first two, as emit() would; a task cancelled, or freed unfinished
        # (its coroutine closed), is no failure.
        raise
    except BaseException as exc:
        # Raised from a sync handler it reaches the emitter; a task has none, and asyncio would log it
        # unmasked when the task is freed ("Task exception was never retrieved"): logged and counted.
        failed = exc
    else:
        return
    # Logged out of the `except` block: a logging handler that fails prints its own error with the
    # exception being handled, which would be this one, unmasked.
    bus._handler_failed(event, handler, failed)
