"""`AuditEventSubscriber`: the legacy wiring of the nine security-relevant types to the audit trail."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from . import _log
from ._native import AuditService, DomainEvent, ReactiveEventBus, Redactor, redact_dict
from .audit import SECURITY_EVENT_TYPES

__all__ = ["SECURITY_EVENT_TYPES", "AuditEventSubscriber"]

logger = logging.getLogger("auditbus")


class _Recorder(Protocol):
    """What the legacy subscriber calls: the legacy `AuditService.record()`."""

    def record(
        self,
        event_type: str,
        *,
        plan_id: str | None = ...,
        user_identity: str | None = ...,
        details: dict[str, Any] | None = ...,
    ) -> object: ...


class AuditEventSubscriber:
    """Records every event of the nine `SECURITY_EVENT_TYPES` on `audit_service`, redacted.

    The legacy contract, on the write-behind path: each event is handed to
    `audit_service.record_event()` (redacted on the emitting thread, committed
    by the writer thread; `flush()` waits for it, and `query()` sees it). A
    failure to hand an event over is logged on the `auditbus` logger and never
    reaches the emitter. Wiring this subscriber and `ReactiveEventBus(audit=...)`
    together writes each event once: rows are unique by `event_id` (not for the
    legacy `record()` call below, which writes a row of its own).

    Any other object with a `record()` method (a test double, even one made
    with `spec=AuditService`; a wrapper around a service; a subclass of
    `AuditService` that overrides `record()`) gets the legacy call instead,
    durable on return: `record(event_type, plan_id=..., user_identity=..., details=...)`,
    with `actor_name`, `project_name` and `session_id` added to the details
    and the details redacted first.
    """

    def __init__(self, event_bus: ReactiveEventBus, audit_service: AuditService | _Recorder) -> None:
        # The type too: a mock made with spec=AuditService passes isinstance(),
        # and the tests that made it assert on the legacy record() call. A
        # subclass that overrides record() gets that call, as it did before.
        service_type = type(audit_service)
        if isinstance(audit_service, AuditService) and issubclass(service_type, AuditService):
            # A closed or read-only service would fail every event, each failure only logged: say so now.
            audit_service._check_accepting("AuditEventSubscriber")
        if (
            isinstance(audit_service, AuditService)
            and issubclass(service_type, AuditService)
            and service_type.record is AuditService.record
        ):
            self._record: Callable[[DomainEvent], object] = audit_service.record_event
        elif callable(getattr(audit_service, "record", None)):
            self._record = partial(_legacy_record, audit_service)
        else:
            raise TypeError(
                "audit_service: expected an auditbus.AuditService or an object with a legacy record() method, "
                f"got {type(audit_service).__name__}"
            )
        self._audit_service = audit_service
        # What the service's own redactor masks is a secret in every failure log line of the bus too.
        redactor = getattr(audit_service, "redactor", None) if issubclass(service_type, AuditService) else None
        self._redactors: tuple[Redactor, ...] = (redactor,) if isinstance(redactor, Redactor) else ()
        if self._redactors and isinstance(event_bus, ReactiveEventBus):
            event_bus._mask_failures_with(self._redactors[0])
        self._unsubscribes: list[Callable[[], object]] = [
            event_bus.subscribe(event_type, self._on_event) for event_type in SECURITY_EVENT_TYPES
        ]

    def _on_event(self, event: DomainEvent) -> None:
        try:
            self._record(event)
        except Exception as exc:  # auditing must never break the domain operation
            failed = exc
        else:
            return
        # Logged out of the `except` block: a logging handler that fails prints its own error with
        # the exception being handled, which would be this one, unmasked.
        _log.failure(
            "audit record failed for %s",
            (event.event_type.value,),
            type(failed),
            failed,
            failed.__traceback__,
            event=event,
            redactors=self._redactors,
        )

    def close(self) -> None:
        """Stops recording; idempotent."""
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes.clear()


def _legacy_record(recorder: _Recorder, event: DomainEvent) -> None:
    """The legacy subscriber's call, for a recorder that is not an `AuditService`."""
    details = dict(event.details)
    for name in ("actor_name", "project_name", "session_id"):
        value = getattr(event, name)
        if value is not None:
            details.setdefault(name, value)
    recorder.record(
        event.event_type.value,
        plan_id=event.plan_id,
        user_identity=event.user_identity,
        details=redact_dict(details),
    )
