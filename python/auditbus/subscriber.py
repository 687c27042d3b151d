"""`AuditEventSubscriber`: the legacy wiring of the nine security-relevant types to the audit trail."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._native import AuditService, DomainEvent, ReactiveEventBus
from .audit import SECURITY_EVENT_TYPES

__all__ = ["SECURITY_EVENT_TYPES", "AuditEventSubscriber"]

logger = logging.getLogger("auditbus")


class AuditEventSubscriber:
    """Records every event of the nine `SECURITY_EVENT_TYPES` on `audit_service`, redacted.

    The legacy contract, on the write-behind path: each event is handed to
    `audit_service.record_event()` (redacted on the emitting thread, committed
    by the writer thread; `flush()` waits for it, and `query()` sees it). A
    failure to hand an event over is logged on the `auditbus` logger and never
    reaches the emitter. Wiring this subscriber and `ReactiveEventBus(audit=...)`
    together writes each event once: rows are unique by `event_id`.
    """

    def __init__(self, event_bus: ReactiveEventBus, audit_service: AuditService) -> None:
        if not isinstance(audit_service, AuditService):
            raise TypeError(f"audit_service must be an auditbus.AuditService, got {type(audit_service).__name__}")
        self._audit_service = audit_service
        self._unsubscribes: list[Callable[[], object]] = [
            event_bus.subscribe(event_type, self._on_event) for event_type in SECURITY_EVENT_TYPES
        ]

    def _on_event(self, event: DomainEvent) -> None:
        try:
            self._audit_service.record_event(event)
        except Exception:  # auditing must never break the domain operation
            logger.exception("audit record failed for %s", event.event_type.value)

    def close(self) -> None:
        """Stops recording; idempotent."""
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes.clear()
