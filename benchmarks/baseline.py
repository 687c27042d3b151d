"""The pure-Python baseline every benchmark compares auditbus with.

Written in the project to the legacy contract (`../shared/legacy/cleveragents_legacy`),
so the benchmarks run on any checkout: a frozen pydantic v2 `DomainEvent`, an
RxPY-subject + dict-of-lists `ReactiveEventBus`, the key-only `redact_dict`, an
`AuditService` that INSERTs and COMMITs each row on the caller's thread, and the
`AuditEventSubscriber` that wires them. It mirrors the legacy code line for line
in behaviour, defects included (they are what auditbus is measured against);
`tests/test_baseline.py` checks it against the shared legacy package when that
is present, so it cannot drift.

Needs the `bench` extra (`pydantic`, `reactivex`); it is not part of the
installed package.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from reactivex import Observable
from reactivex.subject import Subject

logger = logging.getLogger("baseline")

# --- events -----------------------------------------------------------------------


class EventType(str, Enum):
    """Every kind of domain event; the value is what is stored."""

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


class DomainEvent(BaseModel):
    """One thing that happened. Frozen: handlers cannot change what others see."""

    model_config = ConfigDict(frozen=True)

    event_type: EventType
    timestamp: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    plan_id: str | None = None
    project_name: str | None = None
    actor_name: str | None = None
    session_id: str | None = None
    user_identity: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


# --- bus --------------------------------------------------------------------------

Handler = Callable[[DomainEvent], None]


class ReactiveEventBus:
    """emit() pushes to the stream, keeps the event in memory, then calls handlers."""

    def __init__(self, max_log_size: int = 10_000) -> None:
        self._subject: Subject[DomainEvent] = Subject()
        self._subscriptions: dict[EventType, list[Handler]] = defaultdict(list)
        self._audit_log: deque[DomainEvent] = deque(maxlen=max_log_size)
        self._lock = threading.RLock()

    @property
    def stream(self) -> Observable[DomainEvent]:
        return self._subject

    @property
    def audit_log(self) -> list[DomainEvent]:
        with self._lock:
            return list(self._audit_log)

    def subscribe(self, event_type: EventType, handler: Handler) -> Callable[[], None]:
        with self._lock:
            self._subscriptions[EventType(event_type)].append(handler)
        return lambda: self.unsubscribe(event_type, handler)

    def unsubscribe(self, event_type: EventType, handler: Handler) -> bool:
        with self._lock:
            handlers = self._subscriptions.get(EventType(event_type), [])
            if handler in handlers:
                handlers.remove(handler)
                return True
            return False

    def emit(self, event: DomainEvent) -> None:
        self._subject.on_next(event)
        with self._lock:
            self._audit_log.append(event)
            handlers = list(self._subscriptions.get(event.event_type, ()))
        for handler in handlers:
            try:
                handler(event)
            except Exception:  # one failing handler must not stop the others
                logger.exception("event handler failed for %s", event.event_type.value)

    def clear_audit_log(self) -> None:
        with self._lock:
            self._audit_log.clear()

    def dispose(self) -> None:
        self._subject.on_completed()
        with self._lock:
            self._subscriptions.clear()


# --- redaction --------------------------------------------------------------------

REDACTED = "***REDACTED***"

_SENSITIVE_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
)


def _is_sensitive(key: object) -> bool:
    lowered = str(key).lower()
    return any(part in lowered for part in _SENSITIVE_KEY_PARTS)


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return redact_dict(value)
    if isinstance(value, (list, tuple)):
        return [_redact(item) for item in value]
    return value


def redact_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of data with the values of secret-named keys masked, at any depth (key names only)."""
    return {key: REDACTED if _is_sensitive(key) else _redact(value) for key, value in data.items()}


# --- audit service ----------------------------------------------------------------

VALID_EVENT_TYPES = frozenset(
    {
        "plan_applied",
        "plan_cancelled",
        "resource_modified",
        "correction_applied",
        "config_changed",
        "entity_deleted",
        "session_created",
        "auth_success",
        "auth_failure",
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    event_type TEXT NOT NULL,
    plan_id TEXT,
    user_identity TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS ix_audit_log_event_type ON audit_log(event_type);
CREATE INDEX IF NOT EXISTS ix_audit_log_plan_id ON audit_log(plan_id);
CREATE INDEX IF NOT EXISTS ix_audit_log_timestamp ON audit_log(timestamp);
"""


@dataclass(frozen=True)
class AuditEntry:
    id: int
    timestamp: datetime
    event_type: str
    plan_id: str | None = None
    user_identity: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class AuditService:
    """record() and query() over the audit_log table; one INSERT + COMMIT per record()."""

    def __init__(self, db_path: str | Path) -> None:
        self._conn = sqlite3.connect(str(db_path), check_same_thread=False)
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def record(
        self,
        event_type: str,
        *,
        plan_id: str | None = None,
        user_identity: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        if event_type not in VALID_EVENT_TYPES:
            raise ValueError(f"unknown audit event type: {event_type!r}")
        timestamp = datetime.now(timezone.utc)
        payload = details or {}
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO audit_log (timestamp, event_type, plan_id, user_identity, details) VALUES (?, ?, ?, ?, ?)",
                (timestamp.isoformat(), event_type, plan_id, user_identity, json.dumps(payload, default=str)),
            )
            self._conn.commit()
        return AuditEntry(cursor.lastrowid or 0, timestamp, event_type, plan_id, user_identity, payload)

    def query(
        self,
        *,
        event_type: str | None = None,
        plan_id: str | None = None,
        user_identity: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Matching entries, newest first."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("event_type", event_type), ("plan_id", plan_id), ("user_identity", user_identity)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("timestamp >= ?")
            params.append(since.isoformat())
        if until is not None:
            clauses.append("timestamp <= ?")
            params.append(until.isoformat())
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, timestamp, event_type, plan_id, user_identity, details FROM audit_log"
                f"{where} ORDER BY id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [
            AuditEntry(row[0], datetime.fromisoformat(row[1]), row[2], row[3], row[4], json.loads(row[5]))
            for row in rows
        ]

    def close(self) -> None:
        self._conn.close()


# --- subscriber -------------------------------------------------------------------

SECURITY_EVENT_TYPES = (
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


class AuditEventSubscriber:
    """Subscribes to the nine security-relevant types and records each, redacted."""

    def __init__(self, event_bus: ReactiveEventBus, audit_service: AuditService) -> None:
        self._audit_service = audit_service
        self._unsubscribes = [event_bus.subscribe(t, self._on_event) for t in SECURITY_EVENT_TYPES]

    def _on_event(self, event: DomainEvent) -> None:
        details = dict(event.details)
        for name in ("actor_name", "project_name", "session_id"):
            value = getattr(event, name)
            if value is not None:
                details.setdefault(name, value)
        try:
            self._audit_service.record(
                event.event_type.value,
                plan_id=event.plan_id,
                user_identity=event.user_identity,
                details=redact_dict(details),
            )
        except Exception:  # auditing must never break the domain operation
            logger.exception("audit record failed for %s", event.event_type.value)

    def close(self) -> None:
        for unsubscribe in self._unsubscribes:
            unsubscribe()


# --- the module-like view the bench files use ---------------------------------------

BASELINE = SimpleNamespace(
    AuditEntry=AuditEntry,
    AuditEventSubscriber=AuditEventSubscriber,
    AuditService=AuditService,
    DomainEvent=DomainEvent,
    EventType=EventType,
    REDACTED=REDACTED,
    ReactiveEventBus=ReactiveEventBus,
    # The legacy `audit_service._SCHEMA`: the query benchmark bulk-loads a database with it.
    SCHEMA=_SCHEMA,
    SECURITY_EVENT_TYPES=SECURITY_EVENT_TYPES,
    VALID_EVENT_TYPES=VALID_EVENT_TYPES,
    redact_dict=redact_dict,
)


def legacy_module() -> SimpleNamespace:
    """The in-project baseline, with the names (and behaviour) of `cleveragents_legacy`."""
    return BASELINE
