"""`from auditbus.reactive import ReactiveEventBus`: the legacy `reactive` module's names."""

from __future__ import annotations

from collections.abc import Callable

from ._native import DomainEvent, ReactiveEventBus

__all__ = ["Handler", "ReactiveEventBus"]

#: What `ReactiveEventBus.subscribe()` calls with each event of its type.
Handler = Callable[[DomainEvent], None]
