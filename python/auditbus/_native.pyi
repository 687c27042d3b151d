# Type stubs for the Rust core, checked against the built module by
# `python -m mypy.stubtest auditbus._native`.

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import date, datetime
from os import PathLike
from typing import Any, Final, Literal, final

from reactivex import Observable
from reactivex.abc import ObserverBase
from typing_extensions import Self, disjoint_base

from .types import EventType

EVENT_TYPE_VALUES: Final[list[str]]
REDACTED: Final[str]

class ValidationError(ValueError): ...
class AuditError(Exception): ...
class QueueFullError(AuditError): ...
class ClosedError(AuditError): ...

@final
class DomainEvent:
    __match_args__: Final = (
        "event_type",
        "timestamp",
        "plan_id",
        "project_name",
        "actor_name",
        "session_id",
        "user_identity",
        "details",
        "event_id",
    )
    def __new__(
        cls,
        *,
        event_type: EventType | str,
        timestamp: datetime | date | str | float | None = ...,
        plan_id: str | None = ...,
        project_name: str | None = ...,
        actor_name: str | None = ...,
        session_id: str | None = ...,
        user_identity: str | None = ...,
        details: Mapping[str, Any] | None = ...,
        event_id: str | None = ...,
    ) -> Self: ...
    @property
    def event_type(self) -> EventType: ...
    @property
    def timestamp(self) -> datetime: ...
    @property
    def plan_id(self) -> str | None: ...
    @property
    def project_name(self) -> str | None: ...
    @property
    def actor_name(self) -> str | None: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def user_identity(self) -> str | None: ...
    @property
    def details(self) -> dict[str, Any]: ...
    @property
    def event_id(self) -> str: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]: ...
    def model_dump(
        self,
        *,
        mode: Literal["python", "json"] | str = "python",
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        exclude_none: bool = False,
        by_alias: bool = False,
        round_trip: bool = False,
        warnings: bool = True,
    ) -> dict[str, Any]: ...
    def model_dump_json(
        self,
        *,
        indent: int | None = None,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        exclude_none: bool = False,
        by_alias: bool = False,
        round_trip: bool = False,
        warnings: bool = True,
    ) -> str: ...
    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> DomainEvent: ...
    @classmethod
    def model_validate(cls, obj: Any) -> DomainEvent: ...
    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray) -> DomainEvent: ...

def _restore_event(
    event_type: str,
    timestamp: datetime,
    plan_id: str | None,
    project_name: str | None,
    actor_name: str | None,
    session_id: str | None,
    user_identity: str | None,
    details: dict[str, Any],
    event_id: str,
) -> DomainEvent: ...
def _identity_var() -> ContextVar[str | None]: ...

# Freed with this module as the interpreter shuts down: closes the services opened after the at-exit close.
_exit_guard: object

@disjoint_base
class ReactiveEventBus:
    def __new__(cls, max_log_size: int | None = 10000, *, audit: AuditService | None = None) -> Self: ...
    def __init__(self, max_log_size: int | None = 10000, *, audit: AuditService | None = None) -> None: ...
    def emit(self, event: DomainEvent) -> None: ...
    @property
    def audit(self) -> AuditService | None: ...
    def subscribe(
        self,
        event_type: EventType | str,
        handler: Callable[[DomainEvent], object] | Callable[[DomainEvent], Awaitable[object]],
    ) -> Unsubscribe: ...
    def subscribe_all(
        self, handler: Callable[[DomainEvent], object] | Callable[[DomainEvent], Awaitable[object]]
    ) -> Unsubscribe: ...
    def unsubscribe(self, event_type: EventType | str, handler: object) -> bool: ...
    @property
    def stream(self) -> Observable[DomainEvent]: ...
    @property
    def audit_log(self) -> list[DomainEvent]: ...
    def clear_audit_log(self) -> None: ...
    def dispose(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def handler_errors(self) -> int: ...
    @property
    def observer_errors(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def _add_observer(self, observer: ObserverBase[DomainEvent]) -> Unsubscribe | None: ...
    def _handler_failed(self, event: DomainEvent, handler: object, error: BaseException) -> None: ...
    def _mask_failures_with(self, redactor: Redactor) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> bool: ...

@final
class Unsubscribe:
    def __call__(self) -> bool: ...
    def dispose(self) -> None: ...
    @property
    def active(self) -> bool: ...

def redact_dict(data: Mapping[Any, Any]) -> dict[Any, Any]: ...
def redact(value: Any) -> Any: ...

@final
class Redactor:
    def __new__(
        cls,
        *,
        extra_keys: Iterable[str] | None = None,
        safe_keys: Iterable[str] | None = None,
        patterns: bool = True,
        mask: str = ...,
    ) -> Self: ...
    def redact(self, value: Any) -> Any: ...
    def redact_dict(self, data: Mapping[Any, Any]) -> dict[Any, Any]: ...
    @property
    def mask(self) -> str: ...
    @property
    def patterns(self) -> bool: ...
    @property
    def extra_keys(self) -> list[str]: ...
    @property
    def safe_keys(self) -> list[str]: ...

_Text = str | None
_TimeArg = datetime | date | str | float | None

@final
class AuditEntry:
    __match_args__: Final = ("id", "timestamp", "event_type", "plan_id", "user_identity", "details")
    def __new__(
        cls,
        id: int,
        timestamp: datetime | date | str | float,
        event_type: str,
        plan_id: str | None = None,
        user_identity: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        actor_name: str | None = None,
        project_name: str | None = None,
        session_id: str | None = None,
        outcome: str | None = None,
        source: Any = None,
        recorded_at: datetime | str | float | None = None,
        chain_hash: str | None = None,
    ) -> Self: ...
    @property
    def id(self) -> int: ...
    @property
    def timestamp(self) -> datetime: ...
    @property
    def unreadable_timestamp(self) -> str | None: ...
    @property
    def event_type(self) -> str: ...
    @property
    def plan_id(self) -> str | None: ...
    @property
    def user_identity(self) -> str | None: ...
    @property
    def details(self) -> dict[str, Any]: ...
    @property
    def stored_details(self) -> str | None: ...
    @property
    def not_utf8(self) -> tuple[str, ...]: ...
    @property
    def event_id(self) -> str | None: ...
    @property
    def actor_name(self) -> str | None: ...
    @property
    def project_name(self) -> str | None: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def source(self) -> dict[str, Any] | str | None: ...
    @property
    def recorded_at(self) -> datetime | None: ...
    @property
    def unreadable_recorded_at(self) -> str | None: ...
    @property
    def chain_hash(self) -> str | None: ...
    def to_dict(self) -> dict[str, Any]: ...
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...

def _restore_audit_entry(
    id: int,
    timestamp: datetime | str,
    event_type: str,
    plan_id: str | None,
    user_identity: str | None,
    stored_details: str | None,
    details: dict[str, Any] | None,
    event_id: str | None,
    actor_name: str | None,
    project_name: str | None,
    session_id: str | None,
    outcome: str | None,
    source: str | None,
    recorded_at: datetime | str | None,
    chain_hash: str | None,
    not_utf8: Sequence[str] = ...,
) -> AuditEntry: ...

@final
class VerifyReport:
    @property
    def ok(self) -> bool: ...
    @property
    def checked(self) -> int: ...
    @property
    def unchained(self) -> int: ...
    @property
    def appended(self) -> int: ...
    @property
    def folded(self) -> int: ...
    @property
    def first_bad_id(self) -> int | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def head_id(self) -> int | None: ...
    @property
    def head_hash(self) -> str | None: ...
    def __bool__(self) -> bool: ...

@final
class AuditEntryIterator:
    def __iter__(self) -> Self: ...
    def __next__(self) -> AuditEntry: ...

@disjoint_base
class AuditService:
    def __new__(
        cls,
        db_path: str | PathLike[str],
        *,
        durability: Literal["full", "normal"] = "full",
        redactor: Redactor | None = None,
        queue_size: int = 65536,
        put_timeout: float | None = 5.0,
        busy_timeout: float = 5.0,
        app_name: str | None = None,
        read_only: bool = False,
    ) -> Self: ...
    def __init__(
        self,
        db_path: str | PathLike[str],
        *,
        durability: Literal["full", "normal"] = "full",
        redactor: Redactor | None = None,
        queue_size: int = 65536,
        put_timeout: float | None = 5.0,
        busy_timeout: float = 5.0,
        app_name: str | None = None,
        read_only: bool = False,
    ) -> None: ...
    @property
    def db_path(self) -> str: ...
    @property
    def durability(self) -> str: ...
    @property
    def redactor(self) -> Redactor | None: ...
    def _check_accepting(self, what: str) -> None: ...
    def record(
        self,
        event_type: EventType | str,
        *,
        plan_id: str | None = None,
        user_identity: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry: ...
    def record_event(self, event: DomainEvent) -> None: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def query(
        self,
        *,
        event_type: str | Iterable[str] | None = None,
        plan_id: _Text = None,
        user_identity: _Text = None,
        actor_name: _Text = None,
        session_id: _Text = None,
        project_name: _Text = None,
        outcome: _Text = None,
        since: _TimeArg = None,
        until: _TimeArg = None,
        limit: int | None = 100,
        offset: int = 0,
        after_id: int | None = None,
        order: Literal["desc", "asc"] = "desc",
    ) -> list[AuditEntry]: ...
    def count(
        self,
        *,
        event_type: str | Iterable[str] | None = None,
        plan_id: _Text = None,
        user_identity: _Text = None,
        actor_name: _Text = None,
        session_id: _Text = None,
        project_name: _Text = None,
        outcome: _Text = None,
        since: _TimeArg = None,
        until: _TimeArg = None,
        after_id: int | None = None,
        order: Literal["asc", "desc"] = "asc",
    ) -> int: ...
    def iter_entries(
        self,
        *,
        event_type: str | Iterable[str] | None = None,
        plan_id: _Text = None,
        user_identity: _Text = None,
        actor_name: _Text = None,
        session_id: _Text = None,
        project_name: _Text = None,
        outcome: _Text = None,
        since: _TimeArg = None,
        until: _TimeArg = None,
        after_id: int | None = None,
        order: Literal["asc", "desc"] = "asc",
        batch_size: int = 1000,
    ) -> Iterator[AuditEntry]: ...
    def _summary(
        self, event_types: Sequence[str]
    ) -> tuple[int, list[tuple[str, int]], AuditEntry | None, AuditEntry | None]: ...
    def verify(self, *, heads: Iterable[tuple[int, str] | list[int | str]] | None = None) -> VerifyReport: ...
    def stats(self) -> dict[str, Any]: ...
    def purge(self, before: datetime | date | str | float, *, dry_run: bool = False) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *_args: object) -> bool: ...
