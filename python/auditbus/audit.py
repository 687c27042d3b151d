"""The audit trail's Python-level names: the event-type sets the legacy module exported.

`AuditService`, `AuditEntry` and `VerifyReport` live in the Rust core and are
re-exported here so that ``from auditbus.audit import AuditService`` mirrors
``from cleveragents_legacy.audit_service import AuditService``.
"""

from __future__ import annotations

from ._native import AuditEntry, AuditService, VerifyReport
from .types import EventType

__all__ = [
    "AUDIT_LIFECYCLE_EVENT_TYPES",
    "SECURITY_EVENT_TYPES",
    "VALID_EVENT_TYPES",
    "AuditEntry",
    "AuditService",
    "VerifyReport",
]

#: Every event type ``AuditService.record()`` accepts: all ``EventType`` values
#: (the legacy service accepted only the nine in ``SECURITY_EVENT_TYPES``).
VALID_EVENT_TYPES: frozenset[str] = frozenset(member.value for member in EventType)

#: The nine security-relevant types the legacy subscriber wired to the audit trail.
SECURITY_EVENT_TYPES: tuple[EventType, ...] = (
    EventType.PLAN_APPLIED,
    EventType.PLAN_CANCELLED,
    EventType.RESOURCE_MODIFIED,
    EventType.CORRECTION_APPLIED,
    EventType.CONFIG_CHANGED,
    EventType.ENTITY_DELETED,
    EventType.SESSION_CREATED,
    EventType.AUTH_SUCCESS,
    EventType.AUTH_FAILURE,
)

#: The service's own rows (start, stop, storage failure, purge). They are not
#: ``EventType`` values and ``record()`` refuses them; ``query()``/``count()``/
#: ``iter_entries()`` return them only when ``event_type`` names them.
AUDIT_LIFECYCLE_EVENT_TYPES: tuple[str, ...] = ("audit_started", "audit_stopped", "audit_failure", "audit_purged")
