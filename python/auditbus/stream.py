"""`ReactiveEventBus.stream`: every emitted event as a reactivex `Observable`.

Imported on the first use of `stream`, so reactivex stays an optional
dependency (`pip install 'auditbus[rx]'`) and a bus nobody observes never pays
for it. Observers are held by the Rust core and called by `emit()` on the
emitting thread, in subscription order, after persistence (with `audit=`) and before handlers; an
observer's exception is logged on the `auditbus` logger and counted, and the
stream goes on for every observer, including that one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

try:
    from reactivex import Observable, abc
    from reactivex.disposable import Disposable
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "ReactiveEventBus.stream needs the optional dependency 'reactivex'; install it with: pip install 'auditbus[rx]'"
    ) from exc

if TYPE_CHECKING:
    from ._native import DomainEvent, ReactiveEventBus


class BusStream(Observable["DomainEvent"]):
    """The observable behind `ReactiveEventBus.stream`; completes when the bus is disposed."""

    def __init__(self, bus: ReactiveEventBus) -> None:
        super().__init__()
        self._bus = bus

    def _subscribe_core(
        self, observer: abc.ObserverBase[DomainEvent], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        token = self._bus._add_observer(observer)
        if token is None:  # disposed: a late observer sees the completion, as with a completed Subject
            observer.on_completed()
            return Disposable()
        return Disposable(token.dispose)
