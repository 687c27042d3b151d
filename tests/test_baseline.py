"""The benchmarks' in-project baseline (`benchmarks/baseline.py`) behaves like the legacy package.

The benchmarks compare auditbus with that baseline, so it must stay the
legacy contract; these tests run the same calls on both and compare results.
They need the shared legacy folder and are skipped without it.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

BASELINE_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "baseline.py"


@pytest.fixture(scope="module")
def baseline() -> SimpleNamespace:
    spec = importlib.util.spec_from_file_location("auditbus_benchmarks_baseline", BASELINE_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    namespace = module.legacy_module()
    assert isinstance(namespace, SimpleNamespace)
    return namespace


def test_baseline_exposes_the_names_the_bench_files_use(baseline: SimpleNamespace, legacy: ModuleType) -> None:
    for name in legacy.__all__:
        assert hasattr(baseline, name), name


def test_event_model_has_the_legacy_schema(baseline: SimpleNamespace, legacy: ModuleType) -> None:
    assert [m.value for m in baseline.EventType] == [m.value for m in legacy.EventType]
    assert baseline.DomainEvent.model_json_schema() == legacy.DomainEvent.model_json_schema()
    assert baseline.DomainEvent.model_config == legacy.DomainEvent.model_config


def event_behaviour(impl: Any) -> dict[str, Any]:
    event = impl.DomainEvent(
        event_type="plan_applied", timestamp="2026-01-02T03:04:05+02:00", plan_id="p", colour="ignored"
    )
    outcome: dict[str, Any] = {"json": event.model_dump_json(), "naive": None, "none_details": None}
    outcome["naive"] = impl.DomainEvent(event_type="plan_applied", timestamp="2026-01-02T03:04:05").timestamp.tzinfo
    try:
        impl.DomainEvent(event_type="plan_applied", details=None)
    except ValueError as exc:
        outcome["none_details"] = type(exc).__name__
    return outcome


def test_event_behaviour_matches(baseline: SimpleNamespace, legacy: ModuleType) -> None:
    assert event_behaviour(baseline) == event_behaviour(legacy)


def test_redaction_matches(baseline: SimpleNamespace, legacy: ModuleType) -> None:
    data = {
        "user": "alice",
        "password": "hunter2",
        "Authorization": "Bearer x",
        "nested": {"api_key": "sk-1", "items": [{"token": "t"}, ("a", {"secret": 1})]},
        "key": "llm.api_key",
        "new_value": "sk-live-passes-through",  # the key-only defect, kept on purpose
        3: "non-str key",
    }
    assert baseline.REDACTED == legacy.REDACTED
    assert baseline.redact_dict(data) == legacy.redact_dict(data)


def bus_behaviour(impl: Any) -> list[Any]:
    bus = impl.ReactiveEventBus(max_log_size=3)
    calls: list[Any] = []
    streamed: list[str] = []
    bus.stream.subscribe(lambda e: streamed.append(e.plan_id))

    def failing(event: Any) -> None:
        raise RuntimeError("handler failure")

    bus.subscribe(impl.EventType.PLAN_APPLIED, failing)
    unsubscribe = bus.subscribe(impl.EventType.PLAN_APPLIED, lambda e: calls.append(("a", e.plan_id)))
    bus.subscribe("config_changed", lambda e: calls.append(("c", e.plan_id)))
    for i in range(4):
        bus.emit(impl.DomainEvent(event_type="plan_applied", plan_id=f"p{i}"))
    unsubscribe()
    calls.append(("unsubscribed again", bus.unsubscribe(impl.EventType.PLAN_APPLIED, failing)))
    bus.emit(impl.DomainEvent(event_type="plan_applied", plan_id="p4"))
    bus.emit(impl.DomainEvent(event_type="config_changed", plan_id="c0"))
    log = [e.plan_id for e in bus.audit_log]
    bus.clear_audit_log()
    bus.dispose()
    return [calls, streamed, log, bus.audit_log]


def test_bus_behaviour_matches(baseline: SimpleNamespace, legacy: ModuleType) -> None:
    assert bus_behaviour(baseline) == bus_behaviour(legacy)


def audit_behaviour(impl: Any, db: Path) -> dict[str, Any]:
    service = impl.AuditService(db)
    bus = impl.ReactiveEventBus()
    subscriber = impl.AuditEventSubscriber(bus, service)
    bus.emit(
        impl.DomainEvent(
            event_type="config_changed",
            actor_name="ops",
            user_identity="alice",
            details={"key": "db.password", "password": "x", "new_value": 5},
        )
    )
    bus.emit(impl.DomainEvent(event_type="plan_created", plan_id="not-audited"))
    bus.emit(impl.DomainEvent(event_type="plan_applied", plan_id="p1", project_name="alpha", details={"n": 1}))
    subscriber.close()
    bus.emit(impl.DomainEvent(event_type="auth_failure"))  # after close: not recorded
    direct = service.record("auth_success", user_identity="bob", details={"token": "kept as given"})
    try:
        service.record("plan_created")
    except ValueError as exc:
        refused = str(exc)
    rows = [(e.event_type, e.plan_id, e.user_identity, e.details) for e in service.query()]
    filtered = [e.plan_id for e in service.query(event_type="plan_applied", limit=5)]
    service.close()
    schema = sorted(row[0] for row in sqlite3.connect(db).execute("SELECT sql FROM sqlite_master WHERE sql NOT NULL"))
    return {
        "direct": (direct.event_type, direct.details),
        "refused": refused,
        "rows": rows,
        "filtered": filtered,
        "schema": schema,
        "security": [t.value for t in impl.SECURITY_EVENT_TYPES],
        "valid": sorted(impl.VALID_EVENT_TYPES),
    }


def test_schema_the_query_benchmark_loads_is_the_legacy_one(baseline: SimpleNamespace, legacy: ModuleType) -> None:
    assert baseline.SCHEMA == legacy.audit_service._SCHEMA


def test_audit_service_and_subscriber_match(baseline: SimpleNamespace, legacy: ModuleType, tmp_path: Path) -> None:
    ours = audit_behaviour(baseline, tmp_path / "baseline.db")
    theirs = audit_behaviour(legacy, tmp_path / "legacy.db")
    assert ours == theirs
    assert len(ours["rows"]) == 3  # the comparison is about real rows
