"""`from auditbus.events import DomainEvent, EventType`: the legacy `events` module's names."""

from __future__ import annotations

from ._native import DomainEvent
from .types import EventType

__all__ = ["DomainEvent", "EventType"]
