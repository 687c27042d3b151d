"""The wired bus: auditbus `ReactiveEventBus(audit=...)` against the legacy wired bus.

The legacy side is the in-project baseline (`baseline.legacy_module()`): its
`ReactiveEventBus` with `AuditEventSubscriber` recording each event through the
per-row-commit `AuditService` (redacted with its `redact_dict`), on a file in a
temporary folder. Both sides emit the same `plan_applied` event (~1 KB of
details with planted secrets, `bench_audit.details_1k`) to a bus with one
handler, and both commit with `synchronous=FULL` (auditbus `durability="full"`,
WAL; the legacy default rollback journal).

- caller-side time of `emit()`: what the emitting thread pays. auditbus redacts
  and hands the record to its writer thread; the legacy bus commits the row
  before `emit()` returns.
- end to end: N events constructed, emitted, then `flush()`ed, and the WAL
  checkpoint that commit made due waited for (the legacy rows are committed
  into the database file when `emit()` returns), per event.
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

import auditbus
from baseline import legacy_module
from bench_audit import check_durability, checkpointed, details_1k, writer_settle
from harness import Case, one_each, scratch_folder

#: Events per end-to-end call. The legacy bus commits each one (~ms with FULL sync).
BURST = 1000
#: auditbus's calls per end-to-end sample: a burst's rows fill about 480 WAL
#: frames, so three pass the checkpoint threshold (1,000) once and each sample
#: pays one checkpoint, as a long run does.
BURSTS_PER_SAMPLE = 3


def _handler(_event: object) -> None:
    """The one subscribed handler: a no-op, so the rows measure the bus and the trail."""


def _ours(folder: Path, name: str) -> tuple[auditbus.AuditService, auditbus.ReactiveEventBus]:
    # A queue large enough that back-pressure never stands in for the caller-side cost;
    # the end-to-end row measures the sustained rate, writer included.
    service = auditbus.AuditService(folder / f"{name}.db", durability="full", queue_size=1 << 20, put_timeout=None)
    atexit.register(service.close)
    bus = auditbus.ReactiveEventBus(audit=service)
    bus.subscribe(auditbus.EventType.PLAN_APPLIED, _handler)
    return service, bus


def _legacy(folder: Path, name: str, ours: auditbus.AuditService) -> Any:
    legacy = legacy_module()
    service = legacy.AuditService(folder / f"{name}.db")
    check_durability(ours, service)
    bus = legacy.ReactiveEventBus()
    legacy.AuditEventSubscriber(bus, service)
    bus.subscribe(legacy.EventType.PLAN_APPLIED, _handler)
    return bus


def cases() -> list[Case]:
    legacy = legacy_module()
    folder = scratch_folder("bench-wiring-")
    payload = details_1k(7)

    # (a) emit() of an already constructed event; distinct events, each emitted
    # once (a repeated event_id is a duplicate the writer skips, not a row).
    caller_service, caller_bus = _ours(folder, "caller")
    legacy_caller_bus = _legacy(folder, "legacy-caller", caller_service)
    # 32,000 emits a sample: many of the writer's commits long, made during
    # the sample as for a service that keeps emitting (bench_audit.py, the
    # record_event() case).
    caller_number, caller_rounds = 32_000, 5
    next_event = one_each(
        [
            auditbus.DomainEvent(
                event_type=auditbus.EventType.PLAN_APPLIED, plan_id=f"plan-{i}", user_identity="alice", details=payload
            )
            for i in range((1 + caller_rounds) * caller_number)
        ],
        "events",
    )
    legacy_event = legacy.DomainEvent(
        event_type=legacy.EventType.PLAN_APPLIED, plan_id="plan-7", user_identity="alice", details=payload
    )

    def emit() -> None:
        caller_bus.emit(next_event())

    def legacy_emit() -> None:
        legacy_caller_bus.emit(legacy_event)

    # (b) N fresh events constructed, emitted and flushed.
    e2e_service, e2e_bus = _ours(folder, "e2e")
    legacy_e2e_bus = _legacy(folder, "legacy-e2e", e2e_service)
    e2e_checkpointed = checkpointed(e2e_service)

    def burst() -> None:
        for i in range(BURST):
            e2e_bus.emit(
                auditbus.DomainEvent(
                    event_type=auditbus.EventType.PLAN_APPLIED,
                    plan_id=f"plan-{i}",
                    user_identity="alice",
                    details=payload,
                )
            )
        e2e_service.flush()
        # The checkpoint the commit made due, if any: the legacy rows are in their file when emit() returns.
        e2e_checkpointed()

    def legacy_burst() -> None:
        for i in range(BURST):
            legacy_e2e_bus.emit(
                legacy.DomainEvent(
                    event_type=legacy.EventType.PLAN_APPLIED,
                    plan_id=f"plan-{i}",
                    user_identity="alice",
                    details=payload,
                )
            )

    return [
        Case(
            "wired emit() caller-side time (1 KB details, one handler)",
            "auditbus bus(audit=)",
            {"auditbus bus(audit=)": emit, "legacy bus + subscriber": legacy_emit},
            targets={"legacy bus + subscriber": 300},
            # A fixed count for auditbus: the pool holds one event per call.
            numbers={"auditbus bus(audit=)": caller_number},
            rounds=caller_rounds,
            # The rows queued in a sample are committed, untimed, before the
            # next sample starts: the writer never shares the machine with the
            # legacy's sample, nor carries a backlog into the next case.
            settle={"auditbus bus(audit=)": writer_settle(caller_service)},
        ),
        Case(
            f"wired, {BURST} events emitted then flushed (per event)",
            "auditbus bus(audit=)",
            {"auditbus bus(audit=)": burst, "legacy bus + subscriber": legacy_burst},
            ops_per_call=BURST,
            targets={"legacy bus + subscriber": 50},
            # Anything the writer still does after the sample, untimed and out of the legacy's sample.
            settle={"auditbus bus(audit=)": writer_settle(e2e_service)},
            number=1,
            numbers={"auditbus bus(audit=)": BURSTS_PER_SAMPLE},
            rounds=3,
        ),
    ]
