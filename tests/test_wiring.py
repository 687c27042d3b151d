"""The bus wired to the audit trail: `ReactiveEventBus(audit=...)` and `AuditEventSubscriber`."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import auditbus
import pytest
from auditbus import (
    SECURITY_EVENT_TYPES,
    AuditEventSubscriber,
    AuditService,
    DomainEvent,
    EventType,
    ReactiveEventBus,
    identity,
)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[AuditService]:
    with AuditService(tmp_path / "audit.db") as svc:
        yield svc


@pytest.fixture
def bus(service: AuditService) -> Iterator[ReactiveEventBus]:
    with ReactiveEventBus(audit=service) as wired:
        yield wired


def test_every_event_type_is_persisted_from_emit(bus: ReactiveEventBus, service: AuditService) -> None:
    events = [DomainEvent(event_type=t, plan_id=f"plan-{t.value}") for t in EventType]
    for event in events:
        bus.emit(event)
    service.flush()
    stored = {entry.event_id: entry for entry in service.query(limit=None)}
    assert set(stored) == {e.event_id for e in events}
    for event in events:
        assert stored[event.event_id].event_type == event.event_type.value
        assert stored[event.event_id].plan_id == event.plan_id


def test_a_row_carries_the_events_own_fields(bus: ReactiveEventBus, service: AuditService) -> None:
    when = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)
    event = DomainEvent(
        event_type=EventType.PLAN_APPLIED,
        timestamp=when,
        plan_id="p-1",
        project_name="alpha",
        actor_name="planner",
        session_id="s-1",
        user_identity="alice",
        details={"files_changed": 3},
    )
    bus.emit(event)
    service.flush()
    (entry,) = service.query(plan_id="p-1")
    assert entry.timestamp == when  # the event's own time, not the write time
    assert entry.recorded_at >= when
    assert (entry.event_id, entry.user_identity, entry.actor_name) == (event.event_id, "alice", "planner")
    assert (entry.project_name, entry.session_id) == ("alpha", "s-1")
    assert entry.details["files_changed"] == 3


def test_identity_context_reaches_the_row(bus: ReactiveEventBus, service: AuditService) -> None:
    with identity("alice"):
        bus.emit(DomainEvent(event_type=EventType.SESSION_CREATED, session_id="s-9"))
    bus.emit(DomainEvent(event_type=EventType.SESSION_CREATED, session_id="s-10"))
    assert service.query(session_id="s-9")[0].user_identity == "alice"
    assert service.query(session_id="s-10")[0].user_identity is None


def test_persistence_happens_before_the_handlers(bus: ReactiveEventBus, service: AuditService) -> None:
    seen_by_handler: list[int] = []
    bus.subscribe(EventType.PLAN_CANCELLED, lambda e: seen_by_handler.append(service.count(plan_id=e.plan_id)))
    bus.emit(DomainEvent(event_type=EventType.PLAN_CANCELLED, plan_id="p-2"))
    assert seen_by_handler == [1]


def test_a_later_change_to_details_does_not_reach_the_row(bus: ReactiveEventBus, service: AuditService) -> None:
    event = DomainEvent(event_type=EventType.CONFIG_CHANGED, plan_id="p-3", details={"scope": "project"})
    bus.emit(event)
    event.details["scope"] = "changed after emit"
    service.flush()
    assert service.query(plan_id="p-3")[0].details["scope"] == "project"


def test_bus_and_subscriber_together_write_each_event_once(service: AuditService) -> None:
    bus = ReactiveEventBus(audit=service)
    subscriber = AuditEventSubscriber(bus, service)
    events = [DomainEvent(event_type=t) for t in EventType]
    for event in events:
        bus.emit(event)
    service.flush()
    assert service.count() == len(events)
    assert service.stats()["duplicates"] == len(SECURITY_EVENT_TYPES)
    subscriber.close()


def test_subscriber_alone_records_only_the_nine_security_types(service: AuditService) -> None:
    bus = ReactiveEventBus()
    AuditEventSubscriber(bus, service)
    for event_type in EventType:
        bus.emit(DomainEvent(event_type=event_type))
    service.flush()
    stored = {entry.event_type for entry in service.query(limit=None)}
    assert stored == {t.value for t in SECURITY_EVENT_TYPES}


def test_subscriber_failure_is_logged_and_never_reaches_the_emitter(
    service: AuditService, caplog: pytest.LogCaptureFixture
) -> None:
    bus = ReactiveEventBus()
    AuditEventSubscriber(bus, service)
    service.close()
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(DomainEvent(event_type=EventType.AUTH_FAILURE))
    assert any("audit record failed for auth_failure" in r.getMessage() for r in caplog.records)


def test_a_recorder_failure_is_logged_with_its_secrets_masked(caplog: pytest.LogCaptureFixture) -> None:
    secret = "ghp_" + "A1b2C3d4" * 4 + "E5f6"

    class Refusing:
        def record(self, event_type: str, **fields: Any) -> None:
            raise RuntimeError(f"refused {fields['details']} token={secret}")

    bus = ReactiveEventBus()
    AuditEventSubscriber(bus, Refusing())
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(DomainEvent(event_type=EventType.AUTH_FAILURE, details={"user": "bob"}))
    assert "audit record failed for auth_failure" in caplog.text
    assert "RuntimeError: refused {'user': 'bob'}" in caplog.text
    assert secret not in caplog.text


def test_a_recorder_failure_quoting_the_events_secret_value_logs_it_masked(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[DomainEvent] = []

    class Quoting:
        """Handed the details redacted, it fails quoting the value it looked up elsewhere."""

        def record(self, event_type: str, **fields: Any) -> None:
            raise ValueError(f"no user with pin {seen[-1].details['pin']!r}")

    bus = ReactiveEventBus()
    bus.subscribe(EventType.AUTH_FAILURE, seen.append)
    AuditEventSubscriber(bus, Quoting())
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(DomainEvent(event_type=EventType.AUTH_FAILURE, details={"pin": "4711-9"}))
    assert "audit record failed for auth_failure" in caplog.text
    assert "ValueError: no user with pin '***REDACTED***'" in caplog.text
    assert "4711-9" not in caplog.text


class _BrokenFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        raise RuntimeError("the formatter is broken")


def test_a_recorder_failure_logged_through_a_broken_formatter_prints_no_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """logging prints a handler's own failure to stderr with the exception being handled: not the recorder's."""

    secret = "ghp_" + "A1b2C3d4" * 4 + "E5f6"

    class Quoting:
        def record(self, event_type: str, **fields: Any) -> None:
            raise ValueError(f"upstream refused {secret} for hunter2pass")

    broken = logging.StreamHandler()
    broken.setFormatter(_BrokenFormatter())
    logger = logging.getLogger("auditbus")
    logger.addHandler(broken)
    try:
        bus = ReactiveEventBus()
        AuditEventSubscriber(bus, Quoting())
        details = {"password": "hunter2pass"}  # not on the line logging prints as its call stack
        bus.emit(DomainEvent(event_type=EventType.AUTH_FAILURE, details=details))
    finally:
        logger.removeHandler(broken)
    err = capsys.readouterr().err
    assert "the formatter is broken" in err  # logging did report its handler's failure
    assert secret not in err
    assert "hunter2pass" not in err


def test_a_closed_service_makes_emit_fail_loudly(tmp_path: Path) -> None:
    service = AuditService(tmp_path / "audit.db")
    bus = ReactiveEventBus(audit=service)
    service.close()
    with pytest.raises(auditbus.ClosedError):
        bus.emit(DomainEvent(event_type=EventType.PLAN_APPLIED))


def test_an_event_the_service_refuses_reaches_no_observer_handler_or_log(tmp_path: Path) -> None:
    """emit() raising means nobody saw the event: a retry is not a second delivery."""
    service = AuditService(tmp_path / "audit.db")
    bus = ReactiveEventBus(audit=service)
    observed: list[DomainEvent] = []
    handled: list[DomainEvent] = []
    bus.stream.subscribe(observed.append)
    bus.subscribe(EventType.PLAN_APPLIED, handled.append)
    service.close()
    with pytest.raises(auditbus.ClosedError):
        bus.emit(DomainEvent(event_type=EventType.PLAN_APPLIED))
    assert (observed, handled, bus.audit_log) == ([], [], [])


def test_a_bus_refuses_a_service_that_cannot_take_events(tmp_path: Path) -> None:
    """Wired to a closed or read-only service, every emit() would raise: the bus says so when built."""
    path = tmp_path / "audit.db"
    closed = AuditService(path)
    closed.close()
    with pytest.raises(
        auditbus.ClosedError, match=r'ReactiveEventBus\(audit=\): AuditService\(.*audit\.db"\) is closed'
    ):
        ReactiveEventBus(audit=closed)
    with (
        AuditService(path, read_only=True) as reader,
        pytest.raises(
            auditbus.AuditError, match=r"read_only=True; ReactiveEventBus\(audit=\) needs a writable service"
        ),
    ):
        ReactiveEventBus(audit=reader)


def test_a_subscriber_refuses_a_service_that_cannot_take_events(tmp_path: Path) -> None:
    """Each event would fail, only logged: the subscriber says so when built, and subscribes nothing."""
    path = tmp_path / "audit.db"
    closed = AuditService(path)
    closed.close()
    bus = ReactiveEventBus()
    with pytest.raises(auditbus.ClosedError, match=r'AuditEventSubscriber: AuditService\(.*audit\.db"\) is closed'):
        AuditEventSubscriber(bus, closed)
    with (
        AuditService(path, read_only=True) as reader,
        pytest.raises(auditbus.AuditError, match=r"read_only=True; AuditEventSubscriber needs a writable service"),
    ):
        AuditEventSubscriber(bus, reader)
    assert bus.stats()["handlers"] == 0


def test_subscriber_rejects_something_that_is_not_a_service() -> None:
    accepted = "audit_service: expected an auditbus.AuditService or an object with a legacy record() method, got str"
    with pytest.raises(TypeError, match=re.escape(accepted)):
        AuditEventSubscriber(ReactiveEventBus(), "audit.db")  # type: ignore[arg-type]


@pytest.mark.parametrize("double", ["spec", "autospec"])
def test_a_mocked_service_gets_the_legacy_record_call(impl: ModuleType, double: str) -> None:
    """A service's own tests mock the audit service and assert on `record()`; a spec'd mock passes isinstance()."""
    if double == "spec":
        audit = mock.MagicMock(spec=impl.AuditService)
    else:
        audit = mock.create_autospec(impl.AuditService, instance=True)
    bus = impl.ReactiveEventBus()
    impl.AuditEventSubscriber(bus, audit)
    bus.emit(impl.DomainEvent(event_type="plan_applied", plan_id="p1", actor_name="bob", details={"files": 2}))
    audit.record.assert_called_once_with(
        "plan_applied", plan_id="p1", user_identity=None, details={"files": 2, "actor_name": "bob"}
    )


def test_a_service_subclass_that_overrides_record_still_gets_the_record_call(impl: ModuleType, tmp_path: Path) -> None:
    """A service's own AuditService subclass that adds to every row keeps doing so behind the subscriber."""

    class TenantAudit(impl.AuditService):  # type: ignore[misc, name-defined]
        def record(self, event_type: str, **fields: Any) -> Any:
            fields["details"] = {**(fields.get("details") or {}), "tenant": "acme"}
            return super().record(event_type, **fields)

    audit = TenantAudit(tmp_path / "audit.db")
    bus = impl.ReactiveEventBus()
    impl.AuditEventSubscriber(bus, audit)
    bus.emit(impl.DomainEvent(event_type="plan_applied", details={"files": 2}))
    assert audit.query(event_type="plan_applied")[0].details == {"files": 2, "tenant": "acme"}
    audit.close()


def test_a_service_subclass_that_overrides_record_wired_both_ways_gets_the_nine_types_twice(tmp_path: Path) -> None:
    """record() writes a row of its own, with no event_id: the README says to wire one of the two."""

    class TenantAudit(AuditService):
        def record(self, event_type: str, **fields: Any) -> Any:
            return super().record(event_type, **fields)

    with TenantAudit(tmp_path / "audit.db") as audit:
        bus = ReactiveEventBus(audit=audit)
        AuditEventSubscriber(bus, audit)
        bus.emit(DomainEvent(event_type="plan_applied"))
        bus.emit(DomainEvent(event_type="plan_created"))
        audit.flush()
        assert audit.count(event_type="plan_applied") == 2
        assert audit.count(event_type="plan_created") == 1


def test_a_service_subclass_that_keeps_record_is_written_behind(service: AuditService, tmp_path: Path) -> None:
    class PlainSubclass(AuditService):
        pass

    when = datetime(2020, 1, 2, tzinfo=timezone.utc)
    with PlainSubclass(tmp_path / "sub.db") as audit:
        bus = ReactiveEventBus()
        AuditEventSubscriber(bus, audit)
        bus.emit(DomainEvent(event_type="plan_applied", timestamp=when))
        audit.flush()
        assert audit.query(event_type="plan_applied")[0].timestamp == when  # the event's own: record_event()


def test_failures_are_logged_on_the_auditbus_logger_not_the_legacy_module_loggers(
    impl: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """A logging configuration naming `cleveragents_legacy.reactive` (or `.audit_event_subscriber`) names `auditbus`."""

    def failing(*_args: object, **_fields: object) -> None:
        raise RuntimeError("refused")

    bus = impl.ReactiveEventBus()
    impl.AuditEventSubscriber(bus, mock.Mock(record=failing))
    bus.subscribe("plan_applied", failing)
    with caplog.at_level(logging.ERROR):
        bus.emit(impl.DomainEvent(event_type="plan_applied"))
    names = sorted(record.name for record in caplog.records)
    if impl.__name__ == "auditbus":
        assert names == ["auditbus", "auditbus"]
    else:
        assert names == [f"{impl.__name__}.audit_event_subscriber", f"{impl.__name__}.reactive"]


@pytest.mark.parametrize("mask", ["***REDACTED***", "[Filtered]"])
@pytest.mark.parametrize("wiring", ["audit=", "subscriber", "coroutine handler"])
def test_a_failing_handler_logs_a_value_only_the_services_redactor_masks_masked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, wiring: str, mask: str
) -> None:
    """A key only the service's own `Redactor` names is a secret in the log line too, not only in the row."""
    redactor = auditbus.Redactor(extra_keys=["vault_phrase"], mask=mask)
    assert auditbus.redact_dict({"vault_phrase": "chartreuse-4242"}) == {"vault_phrase": "chartreuse-4242"}

    def leaky(ev: DomainEvent) -> None:
        raise KeyError(ev.details["vault_phrase"])

    async def leaky_coroutine(ev: DomainEvent) -> None:
        leaky(ev)

    with AuditService(tmp_path / "audit.db", redactor=redactor) as service:
        assert service.redactor is redactor
        bus = ReactiveEventBus(audit=service) if wiring != "subscriber" else ReactiveEventBus()
        if wiring == "subscriber":
            AuditEventSubscriber(bus, service)
        bus.subscribe(EventType.CONFIG_CHANGED, leaky_coroutine if wiring == "coroutine handler" else leaky)
        emitted = DomainEvent(event_type=EventType.CONFIG_CHANGED, details={"vault_phrase": "chartreuse-4242"})

        async def emit_until_the_handler_failed() -> None:  # a coroutine handler runs on the emitter's loop
            bus.emit(emitted)
            while bus.handler_errors == 0:
                await asyncio.sleep(0.001)

        with caplog.at_level(logging.ERROR, logger="auditbus"):
            asyncio.run(asyncio.wait_for(emit_until_the_handler_failed(), 30))
        service.flush()
        [row] = service.query(event_type="config_changed")
    assert row.details == {"vault_phrase": mask}
    assert bus.handler_errors == 1
    assert "KeyError" in caplog.text
    assert "chartreuse-4242" not in caplog.text
    [record] = [r for r in caplog.records if r.exc_info]
    assert "chartreuse-4242" not in logging.Formatter().formatException(record.exc_info)


def test_a_failing_record_of_a_service_subclass_logs_a_value_only_its_redactor_masks_masked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The subscriber's own failure line: the legacy record() call it makes to the subclass failed."""

    class Refusing(AuditService):
        def record(self, event_type: str, **fields: Any) -> Any:
            raise ValueError(f"refused {fields['details']['vault_phrase']}")

    with Refusing(tmp_path / "audit.db", redactor=auditbus.Redactor(extra_keys=["vault_phrase"])) as service:
        bus = ReactiveEventBus()
        AuditEventSubscriber(bus, service)
        with caplog.at_level(logging.ERROR, logger="auditbus"):
            bus.emit(DomainEvent(event_type=EventType.CONFIG_CHANGED, details={"vault_phrase": "chartreuse-4242"}))
    assert "audit record failed for config_changed" in caplog.text
    assert "ValueError: refused ***REDACTED***" in caplog.text
    assert "chartreuse-4242" not in caplog.text


def test_the_bus_exposes_its_service(bus: ReactiveEventBus, service: AuditService) -> None:
    assert bus.audit is service
    assert ReactiveEventBus().audit is None


def test_events_emitted_by_one_process_are_read_by_the_next(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    script = textwrap.dedent(
        f"""
        from auditbus import AuditService, DomainEvent, EventType, ReactiveEventBus, identity
        bus = ReactiveEventBus(audit=AuditService({str(db)!r}))
        with identity("alice"):
            for n in range(50):
                bus.emit(DomainEvent(event_type=EventType.STEP_COMPLETED, plan_id="p", details={{"n": n}}))
        # no flush, no close: a normal interpreter exit must flush
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    with AuditService(db) as reader:
        entries = reader.query(plan_id="p", limit=None, order="asc")
    assert [e.details["n"] for e in entries] == list(range(50))
    assert {e.user_identity for e in entries} == {"alice"}
    with AuditService(db) as again:
        assert again.verify().ok
