"""The legacy bus's behaviour, as one set of assertions run against both buses.

Each test takes `impl`: auditbus, and the legacy pure-Python bus from
`shared/legacy` when that folder is beside the checkout. Behaviour that auditbus
deliberately changes (README's table) is shown on both buses at the end of
this file, and pinned in more detail in `test_bus.py` for auditbus alone.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import subprocess
import sys
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from unittest.mock import MagicMock, patch

import auditbus
import pytest
from reactivex import operators as ops


def _legacy_root() -> Path | None:
    """`shared/legacy` beside the checkout (`parents[2]` from here), or beside a parent of a worktree."""
    for parent in Path(__file__).resolve().parents[2:]:
        candidate = parent / "shared" / "legacy"
        if (candidate / "cleveragents_legacy").is_dir():
            return candidate
    return None


LEGACY_ROOT = _legacy_root()


@dataclass
class Impl:
    name: str
    Bus: Any
    DomainEvent: Any
    EventType: Any
    logger: str

    def event(self, event_type: str = "plan_created", **fields: Any) -> Any:
        return self.DomainEvent(event_type=self.EventType(event_type), **fields)


def _auditbus() -> Impl:
    return Impl("auditbus", auditbus.ReactiveEventBus, auditbus.DomainEvent, auditbus.EventType, "auditbus")


def _legacy() -> Impl:
    if LEGACY_ROOT is None:
        pytest.skip("the legacy bus (shared/legacy) is not beside this checkout")
    if str(LEGACY_ROOT) not in sys.path:
        sys.path.insert(0, str(LEGACY_ROOT))
    import cleveragents_legacy as legacy  # noqa: PLC0415 - found on sys.path only now

    return Impl("legacy", legacy.ReactiveEventBus, legacy.DomainEvent, legacy.EventType, "cleveragents_legacy.reactive")


@pytest.fixture(params=["auditbus", "legacy"])
def impl(request: pytest.FixtureRequest) -> Impl:
    return _auditbus() if request.param == "auditbus" else _legacy()


@pytest.fixture
def bus(impl: Impl) -> Iterator[Any]:
    bus = impl.Bus()
    yield bus
    bus.dispose()


def recorder(calls: list[Any], label: str) -> Callable[[Any], None]:
    def handler(event: Any) -> None:
        calls.append((label, event.plan_id))

    return handler


def test_handlers_get_their_type_only_in_subscription_order(impl: Impl, bus: Any) -> None:
    calls: list[Any] = []
    for label in "abcdefgh":
        bus.subscribe(impl.EventType.PLAN_CREATED, recorder(calls, label))
    bus.subscribe(impl.EventType.PLAN_FAILED, recorder(calls, "other"))
    bus.emit(impl.event("plan_created", plan_id="p1"))
    assert calls == [(label, "p1") for label in "abcdefgh"]


def test_handler_receives_the_emitted_object(impl: Impl, bus: Any) -> None:
    seen: list[Any] = []
    bus.subscribe(impl.EventType.PLAN_APPLIED, seen.append)
    event = impl.event("plan_applied", plan_id="p1", details={"k": 1})
    bus.emit(event)
    assert len(seen) == 1
    assert seen[0] is event


def test_subscribe_accepts_the_string_value(impl: Impl, bus: Any) -> None:
    seen: list[Any] = []
    bus.subscribe("config_changed", seen.append)
    bus.emit(impl.event("config_changed"))
    assert len(seen) == 1


def test_returned_callable_unsubscribes_once(impl: Impl, bus: Any) -> None:
    seen: list[Any] = []
    unsubscribe = bus.subscribe(impl.EventType.PLAN_CREATED, seen.append)
    bus.emit(impl.event())
    assert unsubscribe() is True
    assert unsubscribe() is False
    bus.emit(impl.event())
    assert len(seen) == 1


def test_unsubscribe_by_handler_matches_a_fresh_bound_method(impl: Impl, bus: Any) -> None:
    class Subscriber:
        def __init__(self) -> None:
            self.seen: list[Any] = []

        def on_event(self, event: Any) -> None:
            self.seen.append(event)

    subscriber = Subscriber()
    bus.subscribe(impl.EventType.PLAN_CREATED, subscriber.on_event)
    assert bus.unsubscribe(impl.EventType.PLAN_CREATED, subscriber.on_event) is True
    assert bus.unsubscribe(impl.EventType.PLAN_CREATED, subscriber.on_event) is False
    assert bus.unsubscribe("plan_failed", subscriber.on_event) is False
    bus.emit(impl.event())
    assert subscriber.seen == []


def test_a_handler_subscribed_twice_runs_twice_until_one_is_removed(impl: Impl, bus: Any) -> None:
    calls: list[Any] = []
    handler = recorder(calls, "h")
    bus.subscribe(impl.EventType.PLAN_CREATED, handler)
    bus.subscribe(impl.EventType.PLAN_CREATED, handler)
    bus.emit(impl.event(plan_id="1"))
    assert bus.unsubscribe(impl.EventType.PLAN_CREATED, handler) is True
    bus.emit(impl.event(plan_id="2"))
    assert calls == [("h", "1"), ("h", "1"), ("h", "2")]


@pytest.mark.parametrize("bad", ["no_such_type", "PLAN_CREATED", ""])
def test_unknown_event_type_is_a_value_error(impl: Impl, bus: Any, bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(bad) or None):
        bus.subscribe(bad, lambda event: None)
    with pytest.raises(ValueError, match=re.escape(bad) or None):
        bus.unsubscribe(bad, lambda event: None)


def test_a_raising_handler_is_logged_and_the_others_still_run(
    impl: Impl, bus: Any, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Any] = []

    def failing(event: Any) -> None:
        raise RuntimeError("handler exploded")

    bus.subscribe(impl.EventType.PLAN_APPLIED, recorder(calls, "first"))
    bus.subscribe(impl.EventType.PLAN_APPLIED, failing)
    bus.subscribe(impl.EventType.PLAN_APPLIED, recorder(calls, "last"))
    with caplog.at_level(logging.ERROR, logger=impl.logger):
        bus.emit(impl.event("plan_applied", plan_id="p9"))
    assert calls == [("first", "p9"), ("last", "p9")]
    [record] = [r for r in caplog.records if r.name == impl.logger]
    assert record.levelno == logging.ERROR
    assert "plan_applied" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert "handler exploded" in caplog.text
    assert "Traceback" in caplog.text


def test_audit_log_is_a_bounded_copy_oldest_first(impl: Impl) -> None:
    bus = impl.Bus(max_log_size=3)
    events = [impl.event(plan_id=str(i)) for i in range(5)]
    for event in events:
        bus.emit(event)
    log = bus.audit_log
    assert isinstance(log, list)
    assert [e.plan_id for e in log] == ["2", "3", "4"]
    assert all(a is b for a, b in zip(log, events[2:], strict=True))
    log.clear()
    assert len(bus.audit_log) == 3


def test_default_log_keeps_ten_thousand(impl: Impl, bus: Any) -> None:
    event = impl.event()
    for _ in range(10_005):
        bus.emit(event)
    assert len(bus.audit_log) == 10_000


def test_clear_audit_log_and_zero_size(impl: Impl) -> None:
    bus = impl.Bus()
    bus.emit(impl.event())
    bus.clear_audit_log()
    assert bus.audit_log == []
    bus.emit(impl.event(plan_id="after"))
    assert [e.plan_id for e in bus.audit_log] == ["after"]
    nothing_kept = impl.Bus(max_log_size=0)
    nothing_kept.emit(impl.event())
    assert nothing_kept.audit_log == []


def test_events_without_handlers_are_still_logged(impl: Impl, bus: Any) -> None:
    bus.emit(impl.event("auth_failure", plan_id="x"))
    assert [e.plan_id for e in bus.audit_log] == ["x"]


def test_stream_sees_every_event_before_handlers(impl: Impl, bus: Any) -> None:
    order: list[Any] = []
    bus.subscribe(impl.EventType.PLAN_CREATED, lambda e: order.append(("handler", e.plan_id)))
    bus.stream.subscribe(lambda e: order.append(("stream", e.plan_id)))
    bus.emit(impl.event("plan_created", plan_id="1"))
    bus.emit(impl.event("plan_failed", plan_id="2"))
    assert order == [("stream", "1"), ("handler", "1"), ("stream", "2")]


def test_stream_works_with_operators_and_disposes(impl: Impl, bus: Any) -> None:
    applied: list[Any] = []
    subscription = bus.stream.pipe(
        ops.filter(lambda e: e.event_type == impl.EventType.PLAN_APPLIED),
        ops.map(lambda e: e.plan_id),
    ).subscribe(applied.append)
    bus.emit(impl.event("plan_created", plan_id="a"))
    bus.emit(impl.event("plan_applied", plan_id="b"))
    subscription.dispose()
    bus.emit(impl.event("plan_applied", plan_id="c"))
    assert applied == ["b"]


def test_reentrant_emit_is_depth_first(impl: Impl, bus: Any) -> None:
    calls: list[str] = []

    def a(event: Any) -> None:
        calls.append(f"A{event.plan_id}")
        if event.plan_id == "1":
            bus.emit(impl.event(plan_id="2"))

    bus.subscribe(impl.EventType.PLAN_CREATED, a)
    bus.subscribe(impl.EventType.PLAN_CREATED, lambda e: calls.append(f"B{e.plan_id}"))
    bus.emit(impl.event(plan_id="1"))
    assert calls == ["A1", "A2", "B2", "B1"]
    assert [e.plan_id for e in bus.audit_log] == ["1", "2"]


def test_handler_added_during_emit_runs_from_the_next_emit(impl: Impl, bus: Any) -> None:
    calls: list[Any] = []
    late = recorder(calls, "late")

    def adder(event: Any) -> None:
        calls.append(("adder", event.plan_id))
        if event.plan_id == "1":
            bus.subscribe(impl.EventType.PLAN_CREATED, late)

    bus.subscribe(impl.EventType.PLAN_CREATED, adder)
    bus.emit(impl.event(plan_id="1"))
    bus.emit(impl.event(plan_id="2"))
    assert calls == [("adder", "1"), ("adder", "2"), ("late", "2")]


def endless_reentrant_emit(impl: Impl, bus: Any) -> list[int]:
    """Subscribes a handler that emits again from every call, without end; returns its call counter."""
    calls = [0]

    def again(event: Any) -> None:
        calls[0] += 1
        bus.emit(impl.event())

    bus.subscribe(impl.EventType.PLAN_CREATED, again)
    return calls


def test_an_endless_reentrant_emit_is_one_logged_recursion_error(
    impl: Impl, bus: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that emits again and again ends in RecursionError at the deepest emit: the failure is logged
    once, by a frame that still has room to log it, and the outermost emit() returns."""
    calls = endless_reentrant_emit(impl, bus)
    with caplog.at_level(logging.ERROR, logger=impl.logger):
        bus.emit(impl.event())
    failures = [r for r in caplog.records if r.name == impl.logger and "failed for plan_created" in r.getMessage()]
    assert calls[0] > 100
    assert len(failures) == 1
    assert "RecursionError" in (failures[0].exc_text or failures[0].getMessage())
    if impl.name == "auditbus":
        assert bus.handler_errors == 1


def test_a_handler_failing_near_the_recursion_limit_is_still_logged_by_its_own_emit(
    impl: Impl, bus: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a failure too deep to log is handed up: 100 frames under the limit (a deep framework stack),
    a handler's exception is logged and emit() returns, as on the legacy bus."""

    def failing(event: Any) -> None:
        raise ValueError("handler failed")

    bus.subscribe(impl.EventType.PLAN_CREATED, failing)

    def depth() -> int:
        frame: FrameType | None = sys._getframe()
        count = 0
        while frame is not None:
            frame, count = frame.f_back, count + 1
        return count

    def emit_at(target: int) -> None:
        if depth() < target:
            emit_at(target)
        else:
            bus.emit(impl.event())

    with caplog.at_level(logging.ERROR, logger=impl.logger):
        emit_at(sys.getrecursionlimit() - 100)
    failures = [r for r in caplog.records if r.name == impl.logger and "failed for plan_created" in r.getMessage()]
    assert len(failures) == 1
    assert "ValueError: handler failed" in (failures[0].exc_text or "")


ENDLESS_IN_A_SMALL_STACK = """
import logging, sys, threading
sys.path.insert(0, sys.argv[2])
module = __import__(sys.argv[1])
failures = []
class Collect(logging.Handler):
    def emit(self, record):
        failures.append(record)
logging.getLogger().addHandler(Collect(level=logging.ERROR))
bus = module.ReactiveEventBus()
calls = [0]
def again(event):
    calls[0] += 1
    bus.emit(module.DomainEvent(event_type="plan_created"))
bus.subscribe("plan_created", again)
def run():
    bus.emit(module.DomainEvent(event_type="plan_created"))
threading.stack_size(1024 * 1024)  # services that run many threads shrink their stacks
thread = threading.Thread(target=run)
thread.start()
thread.join()
print(calls[0], len(failures), failures[0].exc_info[0].__name__ if failures and failures[0].exc_info else None)
"""


def test_an_endless_reentrant_emit_in_a_thread_with_a_small_stack_does_not_crash(impl: Impl) -> None:
    """Each nested emit() takes C stack that Python's recursion limit does not count: the bus itself refuses
    to nest deeper when the thread's stack runs low, so the process gets a logged RecursionError, not a
    segmentation fault."""
    module, path = ("auditbus", "") if impl.name == "auditbus" else ("cleveragents_legacy", str(LEGACY_ROOT))
    done = subprocess.run(
        [sys.executable, "-c", ENDLESS_IN_A_SMALL_STACK, module, path],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-2000:]}"
    calls, failures, error = done.stdout.split()
    assert int(calls) > 20
    assert (failures, error) == ("1", "RecursionError")


def test_dispose_completes_the_stream(impl: Impl) -> None:
    bus = impl.Bus()
    completed: list[bool] = []
    bus.stream.subscribe(on_completed=lambda: completed.append(True))
    bus.dispose()
    assert completed == [True]


def test_audit_event_subscriber_records_through_the_bus(impl: Impl, tmp_path: Path) -> None:
    """The legacy wiring (subscribe bound methods, close() through the returned callables) works on both buses."""
    if LEGACY_ROOT is None:
        pytest.skip("needs the legacy AuditService")
    legacy = _legacy()
    import cleveragents_legacy as reference  # noqa: PLC0415 - put on sys.path by _legacy()

    service = reference.AuditService(tmp_path / "audit.db")
    bus = impl.Bus()
    subscriber = reference.AuditEventSubscriber(bus, service)
    bus.emit(impl.event("plan_applied", plan_id="p1", actor_name="planner", details={"api_key": "sk-secret"}))
    bus.emit(impl.event("plan_created", plan_id="p2"))
    subscriber.close()
    bus.emit(impl.event("plan_applied", plan_id="p3"))
    entries = service.query()
    service.close()
    assert [(e.event_type, e.plan_id) for e in entries] == [("plan_applied", "p1")]
    assert entries[0].details["actor_name"] == "planner"
    assert entries[0].details["api_key"] != "sk-secret"
    assert legacy.name == "legacy"


# --- deliberate differences (README), each shown on both buses ----------------------------


def test_after_dispose_the_legacy_bus_drops_events_silently_and_auditbus_refuses(impl: Impl) -> None:
    """The legacy bus accepts emit() and subscribe() after dispose(): the event is logged, no handler runs,
    and a late handler runs again. auditbus raises ClosedError, so an event is never silently not delivered."""
    bus = impl.Bus()
    calls: list[Any] = []
    bus.subscribe(impl.EventType.PLAN_CREATED, recorder(calls, "early"))
    bus.dispose()
    if impl.name == "legacy":
        bus.emit(impl.event(plan_id="after"))
        assert calls == []
        assert [e.plan_id for e in bus.audit_log] == ["after"]
        bus.subscribe(impl.EventType.PLAN_CREATED, recorder(calls, "late"))
        bus.emit(impl.event(plan_id="later"))
        assert calls == [("late", "later")]
    else:
        with pytest.raises(auditbus.ClosedError, match=r"ReactiveEventBus\.emit: the bus was disposed"):
            bus.emit(impl.event(plan_id="after"))
        with pytest.raises(auditbus.ClosedError, match=r"ReactiveEventBus\.subscribe: the bus was disposed"):
            bus.subscribe(impl.EventType.PLAN_CREATED, recorder(calls, "late"))
        assert calls == []
        assert bus.audit_log == []


def test_a_coroutine_handler_never_runs_on_the_legacy_bus_and_is_scheduled_on_auditbus(impl: Impl) -> None:
    """The legacy bus calls an `async def` handler and drops the coroutine (a RuntimeWarning, the body never
    runs); auditbus starts it as a task on the running loop."""
    bus = impl.Bus()
    ran: list[Any] = []

    async def handler(event: Any) -> None:
        ran.append(event.plan_id)

    async def main() -> None:
        bus.subscribe(impl.EventType.PLAN_CREATED, handler)
        bus.emit(impl.event(plan_id="p1"))
        for _ in range(100):  # a bounded number of loop turns, not a sleep
            if ran:
                break
            await asyncio.sleep(0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    never_awaited = [w for w in caught if "was never awaited" in str(w.message)]
    if impl.name == "legacy":
        assert ran == []
        assert never_awaited
    else:
        assert ran == ["p1"]
        assert never_awaited == []


def test_the_legacy_stream_is_a_subject_and_auditbus_stream_only_an_observable(impl: Impl, bus: Any) -> None:
    """The legacy `stream` is its RxPY `Subject`: `on_next` reaches its observers and no handler."""
    seen: list[str] = []
    bus.stream.subscribe(lambda e: seen.append(("stream", e.plan_id)))
    bus.subscribe(impl.EventType.PLAN_CREATED, lambda e: seen.append(("handler", e.plan_id)))
    if impl.name == "legacy":
        bus.stream.on_next(impl.event(plan_id="p1"))
        assert seen == [("stream", "p1")]
    else:
        assert not any(hasattr(bus.stream, name) for name in ("on_next", "on_error", "on_completed"))
        bus.emit(impl.event(plan_id="p1"))
        assert seen == [("stream", "p1"), ("handler", "p1")]


def test_the_legacy_private_state_is_absent_and_stats_counts_what_it_held(impl: Impl, bus: Any) -> None:
    """Tests that read the legacy bus's private attributes move to `stats()` and `audit_log`."""
    bus.subscribe(impl.EventType.PLAN_CREATED, lambda e: None)
    bus.emit(impl.event())
    private = ("_subject", "_subscriptions", "_audit_log", "_lock")
    if impl.name == "legacy":
        assert len(bus._subscriptions[impl.EventType.PLAN_CREATED]) == 1
        assert all(hasattr(bus, name) for name in private)
    else:
        assert not any(hasattr(bus, name) for name in private)
        assert (bus.stats()["handlers"], bus.stats()["logged"]) == (1, 1)
    assert len(bus.audit_log) == 1


def test_bad_input_reaches_the_legacy_bus_and_is_refused_by_auditbus(
    impl: Impl, caplog: pytest.LogCaptureFixture
) -> None:
    """The legacy bus pushes a non-event to the stream and the log before failing with AttributeError, and
    accepts a non-callable handler that then fails, logged, at every emit. auditbus raises TypeError first."""
    bus = impl.Bus()
    streamed: list[Any] = []
    bus.stream.subscribe(streamed.append)
    not_an_event = {"event_type": "plan_created"}
    if impl.name == "legacy":
        with pytest.raises(AttributeError):
            bus.emit(not_an_event)
        assert streamed == [not_an_event]
        assert bus.audit_log == [not_an_event]
        bus.subscribe(impl.EventType.PLAN_CREATED, None)
        with caplog.at_level(logging.ERROR, logger=impl.logger):
            bus.emit(impl.event())
        assert "event handler failed for plan_created" in caplog.text
    else:
        with pytest.raises(TypeError, match=r"takes an auditbus\.DomainEvent, got dict"):
            bus.emit(not_an_event)
        assert streamed == []
        assert bus.audit_log == []
        with pytest.raises(TypeError, match=r"handler must be callable.*got NoneType"):
            bus.subscribe(impl.EventType.PLAN_CREATED, None)
    bus.dispose()


def test_the_subscriber_gives_any_recorder_the_legacy_call(impl: Impl) -> None:
    """A test double (or a wrapper) standing in for the audit service gets the legacy
    `record(...)` call from both subscribers: same arguments, identity fields in the details,
    the details redacted."""
    if LEGACY_ROOT is None:
        pytest.skip("needs the legacy AuditEventSubscriber")
    _legacy()
    import cleveragents_legacy as reference  # noqa: PLC0415 - put on sys.path by _legacy()

    subscriber_type = reference.AuditEventSubscriber if impl.name == "legacy" else auditbus.AuditEventSubscriber
    bus = impl.Bus()
    recorder = MagicMock()
    subscriber_type(bus, recorder)
    bus.emit(
        impl.event(
            "plan_applied",
            plan_id="p1",
            user_identity="alice",
            actor_name="deployer",
            details={"password": "hunter2", "step": 3},
        )
    )
    bus.emit(impl.event("step_completed", plan_id="p1"))  # not one of the nine: not recorded
    recorder.record.assert_called_once_with(
        "plan_applied",
        plan_id="p1",
        user_identity="alice",
        details={"password": "***REDACTED***", "step": 3, "actor_name": "deployer"},
    )
    bus.dispose()


def test_the_legacy_token_removes_an_equal_handler_and_auditbus_its_own_subscription(impl: Impl) -> None:
    """The legacy `subscribe()` returns `lambda: unsubscribe(type, handler)`: with a handler subscribed twice,
    the second token removes the earliest subscription (the order of the rest changes), and succeeds again
    while one is left. auditbus's token removes its own subscription, once."""
    bus = impl.Bus()
    calls: list[Any] = []
    handler = recorder(calls, "h")
    bus.subscribe(impl.EventType.PLAN_CREATED, handler)
    bus.subscribe(impl.EventType.PLAN_CREATED, recorder(calls, "x"))
    second = bus.subscribe(impl.EventType.PLAN_CREATED, handler)
    assert second() is True
    bus.emit(impl.event(plan_id="1"))
    if impl.name == "legacy":
        assert calls == [("x", "1"), ("h", "1")]
        assert second() is True
    else:
        assert calls == [("h", "1"), ("x", "1")]
        assert second() is False
    bus.dispose()


# --- services extend and patch the bus as they did the legacy class -------------------------


def test_a_subclass_calls_super_init_with_its_arguments_and_keeps_its_own_state(impl: Impl) -> None:
    # The subclass takes the bus's own arguments (see the README for one that takes others).
    class CountingBus(impl.Bus):  # type: ignore[name-defined,misc]
        def __init__(self, max_log_size: int) -> None:
            super().__init__(max_log_size=max_log_size)
            self.label = "audit"
            self.emitted = 0

        def emit(self, event: Any) -> None:
            self.emitted += 1
            super().emit(event)

    bus = CountingBus(5)
    calls: list[Any] = []
    bus.subscribe(impl.EventType.PLAN_APPLIED, recorder(calls, "h"))
    bus.emit(impl.DomainEvent(event_type=impl.EventType.PLAN_APPLIED, plan_id="p1"))
    assert (bus.label, bus.emitted, calls) == ("audit", 1, [("h", "p1")])
    assert isinstance(bus, impl.Bus)
    bus.dispose()


def test_an_instance_method_can_be_patched_for_a_test(impl: Impl, bus: Any) -> None:
    event = impl.DomainEvent(event_type=impl.EventType.PLAN_APPLIED, plan_id="p1")
    with patch.object(bus, "emit") as emit:
        bus.emit(event)
    emit.assert_called_once_with(event)
    calls: list[Any] = []
    bus.subscribe(impl.EventType.PLAN_APPLIED, recorder(calls, "h"))
    bus.emit(event)  # the patch is gone: the real emit again
    assert calls == [("h", "p1")]


def test_a_bus_kept_alive_only_by_its_own_attributes_is_collected(impl: Impl) -> None:
    bus = impl.Bus()
    bus.me = bus
    gone = weakref.ref(bus)
    del bus
    gc.collect()
    assert gone() is None
