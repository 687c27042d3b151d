"""auditbus: domain events, an in-process bus and a durable, redacted, tamper-evident audit trail.

A drop-in replacement for the services' pure-Python event bus and audit
trail: change the import line, keep the call sites.
"""

from __future__ import annotations

from ._native import (
    REDACTED,
    AuditEntry,
    AuditError,
    AuditService,
    ClosedError,
    DomainEvent,
    QueueFullError,
    ReactiveEventBus,
    Redactor,
    Unsubscribe,
    ValidationError,
    VerifyReport,
    redact,
    redact_dict,
)
from .audit import AUDIT_LIFECYCLE_EVENT_TYPES, SECURITY_EVENT_TYPES, VALID_EVENT_TYPES
from .identity import current_identity, identity
from .subscriber import AuditEventSubscriber
from .types import EventType

__version__ = "0.1.0"

__all__ = [
    "AUDIT_LIFECYCLE_EVENT_TYPES",
    "REDACTED",
    "SECURITY_EVENT_TYPES",
    "VALID_EVENT_TYPES",
    "AuditEntry",
    "AuditError",
    "AuditEventSubscriber",
    "AuditService",
    "ClosedError",
    "DomainEvent",
    "EventType",
    "QueueFullError",
    "ReactiveEventBus",
    "Redactor",
    "Unsubscribe",
    "ValidationError",
    "VerifyReport",
    "__version__",
    "current_identity",
    "identity",
    "redact",
    "redact_dict",
]
