"""auditbus: domain events, an in-process bus and a durable, redacted, tamper-evident audit trail.

A drop-in replacement for the services' pure-Python event bus and audit
trail: change the import line, keep the call sites.
"""

from __future__ import annotations

from ._native import (
    REDACTED,
    AuditError,
    ClosedError,
    DomainEvent,
    QueueFullError,
    Redactor,
    ValidationError,
    redact,
    redact_dict,
)
from .identity import current_identity, identity
from .types import EventType

__version__ = "0.1.0"

__all__ = [
    "REDACTED",
    "AuditError",
    "ClosedError",
    "DomainEvent",
    "EventType",
    "QueueFullError",
    "Redactor",
    "ValidationError",
    "__version__",
    "current_identity",
    "identity",
    "redact",
    "redact_dict",
]
