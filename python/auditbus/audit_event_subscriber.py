"""`from auditbus.audit_event_subscriber import AuditEventSubscriber`: the legacy module's names."""

from __future__ import annotations

from .subscriber import SECURITY_EVENT_TYPES, AuditEventSubscriber

__all__ = ["SECURITY_EVENT_TYPES", "AuditEventSubscriber"]
