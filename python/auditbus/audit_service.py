"""`from auditbus.audit_service import AuditService`: the legacy `audit_service` module's names."""

from __future__ import annotations

from .audit import VALID_EVENT_TYPES, AuditEntry, AuditService

__all__ = ["VALID_EVENT_TYPES", "AuditEntry", "AuditService"]
