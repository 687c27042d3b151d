"""The domain event taxonomy."""

from __future__ import annotations

from enum import Enum


class EventType(str, Enum):
    """Every kind of domain event; the value is what is stored in the audit trail."""

    PLAN_CREATED = "plan_created"
    PLAN_PHASE_CHANGED = "plan_phase_changed"
    PLAN_APPLIED = "plan_applied"
    PLAN_CANCELLED = "plan_cancelled"
    PLAN_FAILED = "plan_failed"
    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    RESOURCE_MODIFIED = "resource_modified"
    CORRECTION_APPLIED = "correction_applied"
    CONFIG_CHANGED = "config_changed"
    ENTITY_DELETED = "entity_deleted"
    SESSION_CREATED = "session_created"
    AUTH_SUCCESS = "auth_success"
    AUTH_FAILURE = "auth_failure"
