"""auditbus: domain events, an in-process bus and a durable, redacted, tamper-evident audit trail.

A drop-in replacement for the services' pure-Python event bus and audit
trail: change the import line, keep the call sites.
"""

from __future__ import annotations

from ._native import (
    AuditError,
    ClosedError,
    DomainEvent,
    QueueFullError,
    ReactiveEventBus,
    Unsubscribe,
    ValidationError,
)
from .identity import current_identity, identity
from .types import EventType

__version__ = "0.1.0"

__all__ = [
    "AuditError",
    "ClosedError",
    "DomainEvent",
    "EventType",
    "QueueFullError",
    "ReactiveEventBus",
    "Unsubscribe",
    "ValidationError",
    "__version__",
    "current_identity",
    "identity",
]
