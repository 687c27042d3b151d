# Type stubs for the Rust core, checked against the built module by
# `python -m mypy.stubtest auditbus._native`.

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Final, Literal, final

from typing_extensions import Self

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
        timestamp: datetime | str | float | None = ...,
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
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]: ...
    def model_dump(
        self,
        *,
        mode: Literal["python", "json"] | str = "python",
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        exclude_none: bool = False,
        by_alias: bool = False,
        round_trip: bool = False,
        warnings: bool = True,
    ) -> dict[str, Any]: ...
    def model_dump_json(
        self,
        *,
        indent: int | None = None,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        exclude_none: bool = False,
        by_alias: bool = False,
        round_trip: bool = False,
        warnings: bool = True,
    ) -> str: ...
    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> DomainEvent: ...
    @classmethod
    def model_validate(cls, obj: Any) -> DomainEvent: ...
    @classmethod
    def model_validate_json(cls, json_data: str | bytes) -> DomainEvent: ...

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
