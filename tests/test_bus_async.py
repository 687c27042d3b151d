"""Coroutine-function handlers: scheduled on the emitting thread's loop, else the loop they were subscribed from."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import auditbus._aio as aio
import pytest
from audit_support import wait_until
from auditbus import DomainEvent, ReactiveEventBus, current_identity, identity

DEADLINE = 30.0


@contextmanager
def loop_in_thread() -> Iterator[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
    """An event loop running in a thread of its own, stopped and closed at the end."""
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    try:
        yield loop, loop_thread
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(timeout=DEADLINE)
        loop.close()


def subscribe_on(loop: asyncio.AbstractEventLoop, bus: ReactiveEventBus, handler: Any) -> None:
    """Subscribes from inside `loop`, which makes it the handler's subscribing loop."""

    async def subscribe() -> None:
        bus.subscribe("plan_created", handler)

    asyncio.run_coroutine_threadsafe(subscribe(), loop).result(timeout=DEADLINE)


def event(plan_id: str = "p") -> DomainEvent:
    return DomainEvent(event_type="plan_created", plan_id=plan_id)


def test_coroutine_handler_runs_on_the_emitting_threads_loop() -> None:
    bus = ReactiveEventBus()
    ran: list[tuple[str | None, int]] = []
    order: list[str] = []

    async def handler(ev: DomainEvent) -> None:
        await asyncio.sleep(0)
        ran.append((ev.plan_id, threading.get_ident()))

    bus.subscribe("plan_created", handler)
    bus.subscribe("plan_created", lambda e: order.append("sync"))

    async def main() -> None:
        bus.emit(event("1"))
        order.append("emit returned")
        async with asyncio.timeout(DEADLINE) if hasattr(asyncio, "timeout") else _no_timeout():
            while not ran:
                await asyncio.sleep(0.001)

    asyncio.run(main())
    assert ran == [("1", threading.get_ident())]
    assert order == ["sync", "emit returned"]  # scheduled, not awaited by emit


class _no_timeout:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_emit_from_a_thread_without_a_loop_uses_the_subscribing_loop() -> None:
    bus = ReactiveEventBus()
    ran: list[tuple[str | None, int]] = []

    async def handler(ev: DomainEvent) -> None:
        ran.append((ev.plan_id, threading.get_ident()))

    with loop_in_thread() as (loop, loop_thread):
        subscribe_on(loop, bus, handler)
        bus.emit(event("from worker"))
        wait_until(lambda: bool(ran), "the coroutine handler to run", DEADLINE)
        assert ran == [("from worker", loop_thread.ident)]


def test_a_coroutine_handler_runs_in_the_emitters_identity_on_either_loop() -> None:
    bus = ReactiveEventBus()
    seen: list[tuple[str | None, str | None]] = []

    async def handler(ev: DomainEvent) -> None:
        seen.append((ev.plan_id, current_identity()))

    async def on_own_loop() -> None:
        with identity("bob"):
            bus.emit(event("own loop"))
        while len(seen) < 2:
            await asyncio.sleep(0.001)

    with loop_in_thread() as (loop, _):
        subscribe_on(loop, bus, handler)
        with identity("alice"):
            bus.emit(event("subscribing loop"))
        wait_until(lambda: bool(seen), "the coroutine handler to run", DEADLINE)
        asyncio.run(asyncio.wait_for(on_own_loop(), DEADLINE))
        assert seen == [("subscribing loop", "alice"), ("own loop", "bob")]


def test_a_task_on_the_subscribing_loop_is_kept_until_it_is_done() -> None:
    """The loop holds its tasks weakly: a handler waiting on a future only it refers to must not be collected."""
    bus = ReactiveEventBus()
    waiting: list[weakref.ref[asyncio.Future[None]]] = []
    finished = threading.Event()

    async def handler(ev: DomainEvent) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append(weakref.ref(future))
        await future
        finished.set()

    async def collect() -> None:
        gc.collect()

    with loop_in_thread() as (loop, _):
        subscribe_on(loop, bus, handler)
        bus.emit(event("from worker"))
        wait_until(lambda: bool(waiting), "the coroutine handler to start waiting", DEADLINE)
        asyncio.run_coroutine_threadsafe(collect(), loop).result(timeout=DEADLINE)
        future = waiting[0]()
        assert future is not None, "the handler's task was collected while it waited"
        loop.call_soon_threadsafe(future.set_result, None)
        assert finished.wait(DEADLINE)


def test_a_loop_closed_with_handler_tasks_still_pending_is_not_kept_alive_by_them() -> None:
    """A service that runs one loop per job and closes it leaves handler tasks unfinished: the hold that
    keeps a running loop's tasks alive must not keep every closed loop, its tasks and their events forever."""
    bus = ReactiveEventBus(max_log_size=0)

    async def handler(ev: DomainEvent) -> None:
        await asyncio.sleep(3600)

    async def job() -> None:
        bus.emit(event())
        await asyncio.sleep(0)  # the handler's task starts and waits

    bus.subscribe("plan_created", handler)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Task was destroyed but it is pending!"
        for _ in range(5):
            loop = asyncio.new_event_loop()
            loops.append(weakref.ref(loop))
            loop.run_until_complete(job())
            loop.close()
            del loop
        # The next job's loop is the one still open: only its task is held.
        last = asyncio.new_event_loop()
        last.run_until_complete(job())
        gc.collect()
        assert [ref() for ref in loops] == [None] * 5
        assert sum(map(len, aio._pending.values())) == 1
        # Freed unfinished, each task's coroutine was closed (GeneratorExit): no handler failed.
        assert bus.handler_errors == 0
        for task in asyncio.all_tasks(last):
            task.cancel()
        last.run_until_complete(asyncio.sleep(0))
        last.close()
    assert not aio._pending


def emit_until_a_handler_fails(
    bus: ReactiveEventBus, caplog: pytest.LogCaptureFixture, emitted: DomainEvent | None = None
) -> None:
    """Emits one event inside a running loop and waits, logging captured, until a handler has failed."""

    async def main() -> None:
        bus.emit(event() if emitted is None else emitted)
        while bus.handler_errors == 0:
            await asyncio.sleep(0.001)

    with caplog.at_level(logging.ERROR, logger="auditbus"):
        asyncio.run(asyncio.wait_for(main(), DEADLINE))


def test_coroutine_handler_exceptions_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    bus = ReactiveEventBus()

    async def failing(ev: DomainEvent) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async handler exploded")

    bus.subscribe("plan_created", failing)

    emit_until_a_handler_fails(bus, caplog)
    [record] = [r for r in caplog.records if r.name == "auditbus"]
    assert "failed for plan_created" in record.getMessage()
    assert "failing" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert "async handler exploded" in caplog.text


def test_coroutine_handler_exception_text_is_logged_with_its_secrets_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "ghp_" + "A1b2C3d4" * 4 + "E5f6"
    bus = ReactiveEventBus()

    async def leaky(ev: DomainEvent) -> None:
        raise RuntimeError(f"async handler saw {secret}")

    bus.subscribe("plan_created", leaky)

    emit_until_a_handler_fails(bus, caplog)
    assert "RuntimeError: async handler saw ***REDACTED***" in caplog.text
    assert secret not in caplog.text


def test_a_coroutine_handler_quoting_the_events_secret_value_logs_it_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = ReactiveEventBus()

    async def leaky(ev: DomainEvent) -> None:
        raise KeyError(ev.details["password"])

    bus.subscribe("plan_created", leaky)

    emit_until_a_handler_fails(bus, caplog, DomainEvent(event_type="plan_created", details={"password": "hunter2pass"}))
    assert "KeyError: '***REDACTED***'" in caplog.text
    assert "hunter2pass" not in caplog.text


class _Aborted(BaseException):
    """Not an Exception, as pytest.fail()'s and some frameworks' own are."""


def test_a_coroutine_handler_raising_a_base_exception_is_logged_masked_not_left_to_asyncio(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task has no emitter to raise to: asyncio would log it unmasked when the task is freed."""
    secret = "ghp_" + "A1b2C3d4" * 4 + "E5f6"
    bus = ReactiveEventBus()

    async def aborting(ev: DomainEvent) -> None:
        raise _Aborted(f"gave up on {ev.details['password']} with {secret}")

    bus.subscribe("plan_created", aborting)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        emit_until_a_handler_fails(
            bus, caplog, DomainEvent(event_type="plan_created", details={"password": "pw0xyz12"})
        )
        gc.collect()
    assert bus.handler_errors == 1
    assert "event handler test_a_coroutine_handler_raising_a_base_exception" in caplog.text
    assert "_Aborted: gave up on ***REDACTED*** with ***REDACTED***" in caplog.text
    assert "never retrieved" not in caplog.text
    assert secret not in caplog.text
    assert "pw0xyz12" not in caplog.text


def test_a_cancelled_coroutine_handler_is_not_a_handler_error(caplog: pytest.LogCaptureFixture) -> None:
    bus = ReactiveEventBus()
    started = threading.Event()

    async def waiting(ev: DomainEvent) -> None:
        started.set()
        await asyncio.sleep(DEADLINE)

    async def main() -> None:
        bus.subscribe("plan_created", waiting)
        bus.emit(event())
        while not started.is_set():
            await asyncio.sleep(0.001)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())  # cancels the handler's task on its way out
    assert bus.handler_errors == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_coroutine_handler_failure_logged_through_a_broken_formatter_prints_no_secret(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """logging prints a handler's own failure to stderr with the exception being handled: not the coroutine's."""

    class BrokenFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            raise RuntimeError("the formatter is broken")

    bus = ReactiveEventBus()

    async def leaky(ev: DomainEvent) -> None:
        raise KeyError(ev.details["password"])

    bus.subscribe("plan_created", leaky)
    broken = logging.StreamHandler()
    broken.setFormatter(BrokenFormatter())
    logger = logging.getLogger("auditbus")
    logger.addHandler(broken)
    try:
        emit_until_a_handler_fails(
            bus, caplog, DomainEvent(event_type="plan_created", details={"password": "hunter2pass"})
        )
    finally:
        logger.removeHandler(broken)
    err = capsys.readouterr().err
    assert "the formatter is broken" in err  # logging did report its handler's failure
    assert "hunter2pass" not in err


def test_no_loop_anywhere_is_a_logged_handler_error(caplog: pytest.LogCaptureFixture) -> None:
    bus = ReactiveEventBus()
    after: list[str] = []

    async def handler(ev: DomainEvent) -> None:
        raise AssertionError("must not run")

    bus.subscribe("plan_created", handler)
    bus.subscribe("plan_created", lambda e: after.append("sync"))
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(event())
    assert after == ["sync"]
    assert bus.handler_errors == 1
    assert "has no event loop" in caplog.text


def test_a_closed_subscribing_loop_is_a_logged_handler_error(caplog: pytest.LogCaptureFixture) -> None:
    bus = ReactiveEventBus()

    async def handler(ev: DomainEvent) -> None:
        raise AssertionError("must not run")

    async def subscribe() -> None:
        bus.subscribe("plan_created", handler)

    asyncio.run(subscribe())  # the loop is closed when run() returns
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(event())
    assert bus.handler_errors == 1
    assert "closed" in caplog.text


def test_a_call_queued_on_a_subscribing_loop_closed_before_running_it_is_a_logged_handler_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """emit() from a thread without a loop queues the call on the subscribing loop; a loop closed before it
    ran the call drops it (a job's loop: run_until_complete() returned, then close()). The handler never
    runs: logged and counted as a handler error, as for a loop closed before the emit, never silent."""
    bus = ReactiveEventBus()
    loop = asyncio.new_event_loop()

    async def handler(ev: DomainEvent) -> None:
        raise AssertionError("must not run")

    async def subscribe() -> None:
        bus.subscribe("plan_created", handler)

    loop.run_until_complete(subscribe())  # stopped, still open: the emit below is queued on it
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR, logger="auditbus"):
        warnings.simplefilter("always")
        bus.emit(event("queued"))
        assert bus.handler_errors == 0
        loop.close()
        gc.collect()
    assert bus.handler_errors == 1
    assert "event handler test_a_call_queued" in caplog.text
    assert "its event loop was closed before running it" in caplog.text
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


def test_a_call_queued_on_a_subscribing_loop_that_runs_it_is_not_reported() -> None:
    bus = ReactiveEventBus()
    ran: list[str | None] = []

    async def handler(ev: DomainEvent) -> None:
        ran.append(ev.plan_id)

    with loop_in_thread() as (loop, _):
        subscribe_on(loop, bus, handler)
        bus.emit(event("queued"))
        wait_until(lambda: bool(ran), "the coroutine handler to run", DEADLINE)
    gc.collect()
    assert ran == ["queued"]
    assert bus.handler_errors == 0


def test_a_coroutine_returned_by_a_plain_handler_runs_on_the_emitting_threads_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`lambda e: service.on_event(e)` with an async `on_event`: the coroutine is started, not dropped."""
    bus = ReactiveEventBus()
    ran: list[str | None] = []

    async def on_event(ev: DomainEvent) -> None:
        await asyncio.sleep(0)
        ran.append(ev.plan_id)
        if ev.plan_id == "2":
            raise RuntimeError("returned coroutine exploded")

    bus.subscribe("plan_created", lambda e: on_event(e))  # noqa: PLW0108 - a plain function returning a coroutine

    async def main() -> None:
        bus.emit(event("1"))
        bus.emit(event("2"))
        while len(ran) < 2 or bus.handler_errors == 0:
            await asyncio.sleep(0.001)

    with caplog.at_level(logging.ERROR, logger="auditbus"):
        asyncio.run(asyncio.wait_for(main(), DEADLINE))
    assert ran == ["1", "2"]
    assert bus.handler_errors == 1
    assert "returned coroutine exploded" in caplog.text


def test_a_coroutine_returned_outside_a_loop_is_a_logged_handler_error_and_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = ReactiveEventBus()

    async def on_event(ev: DomainEvent) -> None:
        raise AssertionError("must not run")

    bus.subscribe("plan_created", lambda e: on_event(e))  # noqa: PLW0108 - a plain function returning a coroutine
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR, logger="auditbus"):
        warnings.simplefilter("always")
        bus.emit(event())
        gc.collect()
    assert bus.handler_errors == 1
    assert "has no event loop" in caplog.text
    assert not [w for w in caught if "never awaited" in str(w.message)]


class _Webhook:
    """A handler's bound argument whose repr holds a credential of no known shape."""

    def __repr__(self) -> str:
        return "_Webhook('https://hooks.example.com/services/T0001/B0001/plainwebhookcredential')"


def test_a_handler_without_a_loop_is_named_without_its_bound_arguments(caplog: pytest.LogCaptureFixture) -> None:
    """A partial's text holds its bound arguments (clients, webhook URLs): the error names the function."""
    bus = ReactiveEventBus()

    async def notify(ev: DomainEvent, hook: _Webhook) -> None:
        raise AssertionError("must not run")

    async def on_event(ev: DomainEvent) -> None:
        raise AssertionError("must not run")

    def relay(ev: DomainEvent, hook: _Webhook) -> Any:
        return on_event(ev)

    bus.subscribe("plan_created", functools.partial(notify, hook=_Webhook()))
    bus.subscribe("plan_created", functools.partial(relay, hook=_Webhook()))
    with warnings.catch_warnings(), caplog.at_level(logging.ERROR, logger="auditbus"):
        warnings.simplefilter("ignore")
        bus.emit(event())
    assert bus.handler_errors == 2
    assert "coroutine handler partial(" in caplog.text
    assert ".notify) has no event loop" in caplog.text
    assert ".relay) returned a coroutine" in caplog.text
    assert "plainwebhookcredential" not in caplog.text


def test_a_plain_handler_returning_a_value_is_left_alone() -> None:
    bus = ReactiveEventBus()
    bus.subscribe("plan_created", lambda e: 42)
    future: asyncio.Future[None] | None = None

    async def main() -> None:
        nonlocal future
        future = asyncio.get_running_loop().create_future()
        bus.subscribe("plan_created", lambda e: future)
        bus.emit(event())

    asyncio.run(main())
    assert bus.handler_errors == 0


def test_coroutine_handlers_are_recognised_in_their_usual_shapes() -> None:
    async def plain(ev: Any) -> None:
        return None

    class Service:
        async def on_event(self, ev: Any) -> None:
            return None

    class AsyncCallable:
        async def __call__(self, ev: Any) -> None:
            return None

    class SyncCallable:
        def __call__(self, ev: Any) -> None:
            return None

    assert aio.is_coroutine_handler(plain)
    assert aio.is_coroutine_handler(Service().on_event)
    assert aio.is_coroutine_handler(functools.partial(plain))
    assert aio.is_coroutine_handler(AsyncCallable())
    assert not aio.is_coroutine_handler(SyncCallable())
    assert not aio.is_coroutine_handler(print)
    assert not aio.is_coroutine_handler(lambda ev: None)
    assert not aio.is_coroutine_handler(AsyncCallable)  # the class itself builds an object; it is not a coroutine


def test_the_kind_of_handler_is_decided_once_at_subscribe_time(monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[object] = []
    original = aio.is_coroutine_handler

    def counting(handler: object) -> bool:
        checks.append(handler)
        return original(handler)

    monkeypatch.setattr(aio, "is_coroutine_handler", counting)
    bus = ReactiveEventBus()
    calls: list[str | None] = []
    bus.subscribe("plan_created", lambda e: calls.append(e.plan_id))
    for plan_id in "abc":
        bus.emit(event(plan_id))
    assert calls == ["a", "b", "c"]
    assert len(checks) == 1
