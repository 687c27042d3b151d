"""How the services emit, run on auditbus: the drop-in, shown on real call sites.

The first three classes are the services' audit points as they are written
today (`cleveragents_legacy/services.py`), copied with their call sites
unchanged: only the import line differs. The services after them cover the
other audit types of the spec's table (resource_modified, correction_applied,
entity_deleted, auth_success, auth_failure) with the details it lists.
None of them passes `user_identity`; `auditbus.identity(...)` supplies it.

`auditbus demo` (see `cli.py`) runs `play()` on a bus wired by `wired_bus()`.
"""

from __future__ import annotations

from typing import Any

from auditbus import AuditService, DomainEvent, EventType, ReactiveEventBus


class PlanLifecycleService:
    def __init__(self, event_bus: ReactiveEventBus) -> None:
        self.event_bus = event_bus

    def complete_apply(self, plan_id: str, created_by: str, project_names: list[str], stats: dict[str, Any]) -> None:
        self.event_bus.emit(
            DomainEvent(
                event_type=EventType.PLAN_APPLIED,
                plan_id=plan_id,
                actor_name=created_by,
                project_name=project_names[0] if project_names else None,
                details={"project_names": project_names, **stats},
            )
        )

    def cancel_plan(self, plan_id: str, created_by: str, reason: str, project_names: list[str]) -> None:
        self.event_bus.emit(
            DomainEvent(
                event_type=EventType.PLAN_CANCELLED,
                plan_id=plan_id,
                actor_name=created_by,
                project_name=project_names[0] if project_names else None,
                details={"reason": reason, "project_names": project_names},
            )
        )


class ConfigService:
    def __init__(self, event_bus: ReactiveEventBus) -> None:
        self._event_bus = event_bus
        self._values: dict[str, Any] = {}

    def set(self, key: str, value: Any, scope: str = "project") -> None:
        old_value = self._values.get(key)
        self._values[key] = value
        self._event_bus.emit(
            DomainEvent(
                event_type=EventType.CONFIG_CHANGED,
                details={"key": key, "old_value": old_value, "new_value": value, "scope": scope},
            )
        )


class SessionService:
    def __init__(self, event_bus: ReactiveEventBus) -> None:
        self._event_bus = event_bus

    def create(self, session_id: str, actor_name: str) -> None:
        self._event_bus.emit(
            DomainEvent(
                event_type=EventType.SESSION_CREATED,
                session_id=session_id,
                actor_name=actor_name,
                details={"session_id": session_id, "actor_name": actor_name},
            )
        )


# The other audit points of the spec's table, written the way the services above are.


class ToolExecutor:
    """Tool write operations during Execute (resource_modified)."""

    def __init__(self, event_bus: ReactiveEventBus) -> None:
        self._event_bus = event_bus

    def write_file(
        self, plan_id: str, resource_id: str, sandbox_path: str, tool_name: str, modification_type: str = "update"
    ) -> None:
        self._event_bus.emit(
            DomainEvent(
                event_type=EventType.RESOURCE_MODIFIED,
                plan_id=plan_id,
                details={
                    "resource_id": resource_id,
                    "modification_type": modification_type,
                    "sandbox_path": sandbox_path,
                    "tool_name": tool_name,
                },
            )
        )


class CorrectionService:
    """`agents plan correct` (correction_applied)."""

    def __init__(self, event_bus: ReactiveEventBus) -> None:
        self._event_bus = event_bus

    def apply(
        self, plan_id: str, correction_attempt_id: str, original_decision_id: str, mode: str, guidance: str
    ) -> None:
        self._event_bus.emit(
            DomainEvent(
                event_type=EventType.CORRECTION_APPLIED,
                plan_id=plan_id,
                details={
                    "correction_attempt_id": correction_attempt_id,
                    "original_decision_id": original_decision_id,
                    "mode": mode,
                    "guidance": guidance,
                },
            )
        )


class EntityService:
    """`agents <entity> delete/remove` (entity_deleted)."""

    def __init__(self, event_bus: ReactiveEventBus) -> None:
        self._event_bus = event_bus

    def delete(self, entity_type: str, entity_name: str, cascade_effects: list[str]) -> None:
        self._event_bus.emit(
            DomainEvent(
                event_type=EventType.ENTITY_DELETED,
                details={"entity_type": entity_type, "entity_name": entity_name, "cascade_effects": cascade_effects},
            )
        )


class AuthService:
    """Server-mode login (auth_success, auth_failure)."""

    def __init__(self, event_bus: ReactiveEventBus) -> None:
        self._event_bus = event_bus

    def login_succeeded(self, user: str, ip_address: str, token_prefix: str) -> None:
        self._event_bus.emit(
            DomainEvent(
                event_type=EventType.AUTH_SUCCESS,
                details={"user_identity": user, "ip_address": ip_address, "token_prefix": token_prefix},
            )
        )

    def login_failed(self, attempted_identity: str, ip_address: str, failure_reason: str) -> None:
        self._event_bus.emit(
            DomainEvent(
                event_type=EventType.AUTH_FAILURE,
                details={
                    "attempted_identity": attempted_identity,
                    "ip_address": ip_address,
                    "failure_reason": failure_reason,
                },
            )
        )


def wired_bus(service: AuditService) -> ReactiveEventBus:
    """A bus whose every emitted event is persisted by `service` (write-behind, inside `emit()`)."""
    return ReactiveEventBus(audit=service)


#: The event types `play()` emits, in order.
PLAYED_TYPES: tuple[EventType, ...] = (
    EventType.AUTH_FAILURE,
    EventType.AUTH_SUCCESS,
    EventType.SESSION_CREATED,
    EventType.CONFIG_CHANGED,
    EventType.CONFIG_CHANGED,
    EventType.RESOURCE_MODIFIED,
    EventType.CORRECTION_APPLIED,
    EventType.PLAN_APPLIED,
    EventType.PLAN_CANCELLED,
    EventType.ENTITY_DELETED,
)


def play(bus: ReactiveEventBus, *, run_id: str, secret: str) -> None:
    """A working session in the services' own calls, one audit point of each kind.

    `run_id` makes this run's ids unique; `secret` is the API key set through
    `ConfigService.set`, which must never reach the database.
    """
    plans = PlanLifecycleService(bus)
    config = ConfigService(bus)
    sessions = SessionService(bus)
    tools = ToolExecutor(bus)
    corrections = CorrectionService(bus)
    entities = EntityService(bus)
    auth = AuthService(bus)

    plan_id = f"plan-{run_id}"
    auth.login_failed("alice", "203.0.113.7", "invalid password")
    auth.login_succeeded("alice", "203.0.113.7", "ab12cd")
    sessions.create(f"session-{run_id}", "planner")
    config.set("llm.model", "gpt-4o")
    config.set("llm.api_key", secret)
    tools.write_file(plan_id, f"file:{run_id}:src/app.py", f"/sandbox/{run_id}/src/app.py", "write_file")
    corrections.apply(plan_id, f"correction-{run_id}", f"decision-{run_id}", "guided", "keep the public API stable")
    plans.complete_apply(
        plan_id,
        "planner",
        ["billing"],
        {
            "files_changed": 1,
            "lines_added": 12,
            "lines_removed": 3,
            "validation_results": {"tests": "passed", "lint": "passed"},
            "apply_duration_ms": 840,
        },
    )
    plans.cancel_plan(f"plan-{run_id}-b", "planner", "superseded by the applied plan", ["billing"])
    entities.delete("actor", f"scratch-actor-{run_id}", [f"2 sessions of scratch-actor-{run_id}"])
