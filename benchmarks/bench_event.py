"""DomainEvent construction: auditbus against the pydantic v2 baseline model (`baseline.py`)."""

from __future__ import annotations

from typing import Any

import auditbus
from baseline import legacy_module
from harness import Case


def nested_details() -> dict[str, Any]:
    """About fifty keys, nested two levels, the shape of a plan_applied payload."""
    details: dict[str, Any] = {f"field_{i}": f"value {i}" for i in range(30)}
    details["project_names"] = ["alpha", "beta"]
    details["stats"] = {f"s{i}": i for i in range(10)}
    details["resources"] = [{"path": f"/src/f{i}.py", "lines": i} for i in range(5)]
    details.update({"files_changed": 12, "lines_added": 340, "lines_removed": 20, "duration_ms": 1234.5})
    return details


def cases() -> list[Case]:
    legacy = legacy_module()
    details = nested_details()
    fields = {
        "plan_id": "plan-1",
        "project_name": "alpha",
        "actor_name": "planner",
        "session_id": "sess-1",
        "user_identity": "alice",
        "details": details,
    }

    def ours() -> auditbus.DomainEvent:
        return auditbus.DomainEvent(event_type=auditbus.EventType.PLAN_APPLIED, **fields)

    def pydantic() -> Any:
        return legacy.DomainEvent(event_type=legacy.EventType.PLAN_APPLIED, **fields)

    our_event, their_event = ours(), pydantic()
    our_json, their_json = our_event.model_dump_json(), their_event.model_dump_json()
    return [
        Case(
            "DomainEvent(6 fields, ~50-key details)",
            "auditbus",
            {"auditbus": ours, "pydantic baseline": pydantic},
            targets={"pydantic baseline": 3},
        ),
        Case(
            "event.model_dump()",
            "auditbus",
            {"auditbus": our_event.model_dump, "pydantic baseline": their_event.model_dump},
        ),
        Case(
            "event.model_dump_json()",
            "auditbus",
            {"auditbus": our_event.model_dump_json, "pydantic baseline": their_event.model_dump_json},
        ),
        Case(
            "DomainEvent.model_validate_json(text)",
            "auditbus",
            {
                "auditbus": lambda: auditbus.DomainEvent.model_validate_json(our_json),
                "pydantic baseline": lambda: legacy.DomainEvent.model_validate_json(their_json),
            },
        ),
    ]
