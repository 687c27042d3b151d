"""ReactiveEventBus.stream: a reactivex Observable fed by the Rust core."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import reactivex
from auditbus import DomainEvent, ReactiveEventBus
from reactivex import operators as ops


def event(plan_id: str, event_type: str = "plan_created") -> DomainEvent:
    return DomainEvent(event_type=event_type, plan_id=plan_id)


def test_stream_is_an_observable_and_the_same_object_each_time() -> None:
    bus = ReactiveEventBus()
    assert isinstance(bus.stream, reactivex.Observable)
    assert bus.stream is bus.stream


def test_a_raising_observer_is_logged_and_the_stream_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    bus = ReactiveEventBus()
    good: list[Any] = []
    failing_calls: list[Any] = []
    handled: list[Any] = []

    def failing(ev: DomainEvent) -> None:
        failing_calls.append(ev.plan_id)
        raise ValueError("observer exploded")

    bus.stream.subscribe(failing)
    bus.stream.subscribe(lambda e: good.append(e.plan_id))
    bus.subscribe("plan_created", lambda e: handled.append(e.plan_id))
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(event("1"))
        bus.emit(event("2"))
    assert failing_calls == ["1", "2"]  # its own subscription is not ended either
    assert good == ["1", "2"]
    assert handled == ["1", "2"]
    assert bus.observer_errors == 2
    assert bus.handler_errors == 0
    records = [r for r in caplog.records if r.name == "auditbus"]
    assert len(records) == 2
    assert all("stream observer" in r.getMessage() and "plan_created" in r.getMessage() for r in records)
    assert all(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in records)


def test_an_operator_error_ends_only_that_subscription() -> None:
    """Rx semantics for operators are kept: `map` raising sends on_error and detaches that chain."""
    bus = ReactiveEventBus()
    errors: list[BaseException] = []
    mapped: list[Any] = []
    plain: list[Any] = []

    def explode(ev: DomainEvent) -> str:
        if ev.plan_id == "bad":
            raise RuntimeError("map failed")
        return str(ev.plan_id)

    bus.stream.pipe(ops.map(explode)).subscribe(mapped.append, errors.append)
    bus.stream.subscribe(lambda e: plain.append(e.plan_id))
    for plan_id in ("ok", "bad", "later"):
        bus.emit(event(plan_id))
    assert mapped == ["ok"]
    assert [str(e) for e in errors] == ["map failed"]
    assert plain == ["ok", "bad", "later"]
    assert bus.observer_errors == 0


def test_observer_disposed_during_emit_is_not_called() -> None:
    bus = ReactiveEventBus()
    calls: list[str] = []
    subscriptions: list[Any] = []

    def first(ev: DomainEvent) -> None:
        calls.append("first")
        subscriptions[1].dispose()

    subscriptions.append(bus.stream.subscribe(first))
    subscriptions.append(bus.stream.subscribe(lambda e: calls.append("second")))
    bus.emit(event("1"))
    assert calls == ["first"]
    assert bus.stats()["observers"] == 1


def test_no_observers_after_all_dispose() -> None:
    bus = ReactiveEventBus()
    seen: list[Any] = []
    subscription = bus.stream.subscribe(seen.append)
    assert bus.stats()["observers"] == 1
    subscription.dispose()
    assert bus.stats()["observers"] == 0
    bus.emit(event("1"))
    assert seen == []


def test_an_observer_can_emit_reentrantly() -> None:
    bus = ReactiveEventBus()
    order: list[str] = []

    def observer(ev: DomainEvent) -> None:
        order.append(f"stream {ev.plan_id}")
        if ev.plan_id == "1":
            bus.emit(event("2"))

    bus.stream.subscribe(observer)
    bus.subscribe("plan_created", lambda e: order.append(f"handler {e.plan_id}"))
    bus.emit(event("1"))
    assert order == ["stream 1", "stream 2", "handler 2", "handler 1"]


def test_an_observer_exception_text_is_logged_with_its_secrets_masked(caplog: pytest.LogCaptureFixture) -> None:
    secret = "ghp_" + "A1b2C3d4" * 4 + "E5f6"
    bus = ReactiveEventBus()

    def leaky(ev: DomainEvent) -> None:
        raise ValueError(f"observer saw {secret}")

    bus.stream.subscribe(leaky)
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(event("1"))
    assert bus.observer_errors == 1
    assert "ValueError: observer saw ***REDACTED***" in caplog.text
    assert secret not in caplog.text
