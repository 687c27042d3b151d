"""ReactiveEventBus under threads: emit, subscribe and unsubscribe at once."""

from __future__ import annotations

import threading
from typing import Any

from auditbus import DomainEvent, ReactiveEventBus

THREADS = 8
ROUNDS = 400
DEADLINE = 120.0  # seconds; a deadlock shows up as a thread still alive


def test_eight_threads_emit_subscribe_and_unsubscribe_without_loss_or_deadlock() -> None:
    bus = ReactiveEventBus(max_log_size=None)
    lock = threading.Lock()
    permanent_calls = 0
    wildcard_calls = 0
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def permanent(ev: DomainEvent) -> None:
        nonlocal permanent_calls
        with lock:
            permanent_calls += 1

    def wildcard(ev: DomainEvent) -> None:
        nonlocal wildcard_calls
        with lock:
            wildcard_calls += 1

    bus.subscribe("plan_created", permanent)
    bus.subscribe_all(wildcard)
    churn_results: list[bool] = []
    nested_emits = 0

    def make_churn_handler() -> Any:
        def churn_handler(ev: DomainEvent) -> None:
            nonlocal nested_emits
            # re-entrant emit from a handler, under contention
            if ev.plan_id == "nest":
                with lock:
                    nested_emits += 1
                bus.emit(DomainEvent(event_type="step_started", plan_id="nested"))

        return churn_handler

    def worker(index: int) -> None:
        churn_handler = make_churn_handler()  # one per thread: unsubscribe(type, handler) removes this thread's
        try:
            start.wait(timeout=DEADLINE)
            events = [
                DomainEvent(event_type="plan_created", plan_id="nest" if i % 10 == 0 else str(i)) for i in range(5)
            ]
            for round_ in range(ROUNDS):
                token = bus.subscribe("plan_created", churn_handler)
                for ev in events:
                    bus.emit(ev)
                # both ways out: the token, and unsubscribe(type, handler)
                result = token() if (round_ + index) % 2 else bus.unsubscribe("plan_created", churn_handler)
                with lock:
                    churn_results.append(result)
        except BaseException as exc:  # surfaced by the assertions below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert not [t for t in threads if t.is_alive()], "a thread did not finish: deadlock"
    assert failures == []

    emitted = THREADS * ROUNDS * 5
    assert permanent_calls == emitted
    nested = nested_emits
    assert wildcard_calls == emitted + nested
    assert len(bus.audit_log) == emitted + nested
    # every subscription made was removed exactly once, by whichever path
    assert churn_results == [True] * (THREADS * ROUNDS)
    assert bus.stats()["handlers"] == 2
    assert bus.handler_errors == 0


def test_concurrent_unsubscribes_of_one_token_succeed_exactly_once() -> None:
    bus = ReactiveEventBus()
    results: list[Any] = []
    lock = threading.Lock()
    for _ in range(50):
        token = bus.subscribe("plan_created", lambda e: None)
        barrier = threading.Barrier(4)

        def race(token: Any = token, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(timeout=DEADLINE)
            outcome = token()
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=race) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=DEADLINE)
        assert not any(t.is_alive() for t in threads)
    assert results.count(True) == 50
    assert results.count(False) == 150
    assert bus.stats()["handlers"] == 0


def key(ev: DomainEvent) -> tuple[str, int]:
    """`plan_id` "<thread>:<index>" split."""
    thread, index = str(ev.plan_id).split(":")
    return thread, int(index)


def check_runs(log: list[DomainEvent], size: int) -> None:
    """The log is bounded, and holds each thread's events as one run of consecutive indexes, in order."""
    assert len(log) <= size
    runs: dict[str, list[int]] = {}
    for ev in log:
        thread, index = key(ev)
        runs.setdefault(thread, []).append(index)
    for thread, run in runs.items():
        assert run == list(range(run[0], run[0] + len(run))), f"thread {thread}'s events in the log: {run}"


def test_the_bounded_log_and_each_threads_order_hold_under_concurrent_emits() -> None:
    """Threads emitting at once into a bounded log: every handler call once, in each thread's emit order;
    every snapshot of the log (taken while they emit) holds, per thread, a run of consecutive events in
    order, and the final log is full and ends with the newest event."""
    size = 300
    per_thread = 500
    bus = ReactiveEventBus(max_log_size=size)
    lock = threading.Lock()
    handled: dict[str, list[int]] = {}
    streamed: dict[str, list[int]] = {}
    failures: list[BaseException] = []
    emitting = threading.Event()
    start = threading.Barrier(THREADS + 1)

    def record(into: dict[str, list[int]]) -> Any:
        def handler(ev: DomainEvent) -> None:
            thread, index = key(ev)
            with lock:
                into.setdefault(thread, []).append(index)

        return handler

    bus.subscribe("plan_created", record(handled))
    bus.stream.subscribe(record(streamed))

    def emitter(thread: int) -> None:
        try:
            start.wait(timeout=DEADLINE)
            for index in range(per_thread):
                bus.emit(DomainEvent(event_type="plan_created", plan_id=f"{thread}:{index}"))
        except BaseException as exc:  # surfaced by the assertions below
            failures.append(exc)

    def reader() -> None:
        try:
            start.wait(timeout=DEADLINE)
            while not emitting.is_set():
                check_runs(bus.audit_log, size)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=emitter, args=(i,), daemon=True) for i in range(THREADS)]
    watcher = threading.Thread(target=reader, daemon=True)
    for thread in [*threads, watcher]:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    emitting.set()
    watcher.join(timeout=DEADLINE)
    assert not [t for t in [*threads, watcher] if t.is_alive()], "a thread did not finish: deadlock"
    assert failures == []
    expected = {str(i): list(range(per_thread)) for i in range(THREADS)}
    assert handled == expected
    assert streamed == expected
    final = bus.audit_log
    assert len(final) == size
    check_runs(final, size)
    assert key(final[-1])[1] == per_thread - 1  # the newest entry: the last emit of whichever thread ended last
