"""ReactiveEventBus semantics that the issue pins beyond the legacy contract."""

from __future__ import annotations

import gc
import logging
import re
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from auditbus import ClosedError, DomainEvent, EventType, ReactiveEventBus, ValidationError


def event(event_type: str = "plan_created", **fields: Any) -> DomainEvent:
    return DomainEvent(event_type=event_type, **fields)


@pytest.fixture
def bus() -> Iterator[ReactiveEventBus]:
    with ReactiveEventBus() as bus:
        yield bus


def recorder(calls: list[Any], label: str) -> Callable[[DomainEvent], None]:
    def handler(ev: DomainEvent) -> None:
        calls.append((label, ev.plan_id))

    return handler


# --- ordering -------------------------------------------------------------


def test_handlers_run_after_the_event_is_on_the_stream_and_in_the_log(bus: ReactiveEventBus) -> None:
    observed: list[str] = []
    bus.stream.subscribe(lambda e: observed.append(e.plan_id))
    snapshots: list[tuple[list[str], list[str | None]]] = []
    bus.subscribe(
        EventType.PLAN_APPLIED, lambda e: snapshots.append((list(observed), [x.plan_id for x in bus.audit_log]))
    )
    bus.emit(event("plan_applied", plan_id="p1"))
    assert snapshots == [(["p1"], ["p1"])]


def test_subscribe_all_interleaves_with_typed_handlers_in_subscription_order(bus: ReactiveEventBus) -> None:
    calls: list[Any] = []
    bus.subscribe(EventType.PLAN_CREATED, recorder(calls, "typed-1"))
    bus.subscribe_all(recorder(calls, "all"))
    bus.subscribe(EventType.PLAN_CREATED, recorder(calls, "typed-2"))
    bus.emit(event("plan_created", plan_id="a"))
    bus.emit(event("auth_failure", plan_id="b"))
    assert calls == [("typed-1", "a"), ("all", "a"), ("typed-2", "a"), ("all", "b")]


def test_subscribe_all_sees_each_event_exactly_once_and_unsubscribes(bus: ReactiveEventBus) -> None:
    seen: list[str] = []
    unsubscribe = bus.subscribe_all(lambda e: seen.append(e.event_type.value))
    for value in ("plan_created", "plan_applied", "auth_success", "plan_created"):
        bus.emit(event(value))
    assert seen == ["plan_created", "plan_applied", "auth_success", "plan_created"]
    assert unsubscribe() is True
    bus.emit(event("plan_created"))
    assert len(seen) == 4
    assert unsubscribe() is False


# --- isolation ------------------------------------------------------------


def test_raising_handlers_are_counted_and_emit_returns(bus: ReactiveEventBus, caplog: pytest.LogCaptureFixture) -> None:
    def failing(ev: DomainEvent) -> None:
        raise KeyError("missing")

    calls: list[Any] = []
    bus.subscribe("plan_failed", failing)
    bus.subscribe("plan_failed", recorder(calls, "after"))
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        assert bus.emit(event("plan_failed", plan_id="1")) is None
        bus.emit(event("plan_failed", plan_id="2"))
    assert calls == [("after", "1"), ("after", "2")]
    assert bus.handler_errors == 2
    assert bus.stats()["handler_errors"] == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "auditbus"]
    assert (
        messages
        == ["event handler test_raising_handlers_are_counted_and_emit_returns.<locals>.failing failed for plan_failed"]
        * 2
    )
    assert all(r.exc_info and isinstance(r.exc_info[1], KeyError) for r in caplog.records)
    assert "in failing" in caplog.text  # the traceback names the handler's frame


# A GitHub token shape and a URL password: secret shapes the redaction rules mask.
SECRET_TOKEN = "ghp_" + "A1b2C3d4" * 4 + "E5f6"
SECRET_URL = "https://bob:hunter22@db.example.com/prod"


def test_a_handler_exception_text_is_logged_with_its_secrets_masked(
    bus: ReactiveEventBus, caplog: pytest.LogCaptureFixture
) -> None:
    def leaky(ev: DomainEvent) -> None:
        raise RuntimeError(f"upstream refused {SECRET_TOKEN} at {SECRET_URL}")

    bus.subscribe("plan_failed", leaky)
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(event("plan_failed"))
    assert bus.handler_errors == 1
    assert "RuntimeError: upstream refused ***REDACTED*** at https://bob:***REDACTED***@db.example.com" in caplog.text
    assert "in leaky" in caplog.text  # still the traceback
    assert SECRET_TOKEN not in caplog.text
    assert "hunter22" not in caplog.text
    [record] = caplog.records
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


class _FormatsExcInfo(logging.Handler):
    """Formats `record.exc_info` itself, as JSON log formatters do, instead of using `exc_text`."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.lines.append(logging.Formatter().formatException(record.exc_info))


def _logged_failure(
    bus: ReactiveEventBus,
    caplog: pytest.LogCaptureFixture,
    details: dict[str, Any],
    fail: Callable[[DomainEvent], Exception],
) -> list[str]:
    """Emits a `config_changed` event with `details` to a handler raising `fail(event)`; returns
    what the logs received: caplog's text, then each `exc_info` formatted by a handler itself."""

    def leaky(ev: DomainEvent) -> None:
        raise fail(ev)

    formats_exc_info = _FormatsExcInfo()
    logging.getLogger("auditbus").addHandler(formats_exc_info)
    try:
        bus.subscribe("config_changed", leaky)
        with caplog.at_level(logging.ERROR, logger="auditbus"):
            bus.emit(event("config_changed", details=details))
    finally:
        logging.getLogger("auditbus").removeHandler(formats_exc_info)
    assert bus.handler_errors == 1
    assert "in leaky" in caplog.text  # still the traceback
    assert "***REDACTED***" in caplog.text
    return [caplog.text, *formats_exc_info.lines]


@pytest.mark.parametrize(
    "raised",
    [
        lambda: RuntimeError(f"upstream refused {SECRET_TOKEN} at {SECRET_URL}"),
        lambda: KeyError(SECRET_TOKEN),
        lambda: OSError(13, f"denied for {SECRET_URL}"),
    ],
    ids=["RuntimeError", "KeyError", "OSError"],
)
def test_a_formatter_that_formats_exc_info_itself_sees_the_secret_masked(
    bus: ReactiveEventBus, raised: Callable[[], Exception]
) -> None:
    """JSON formatters call formatException(record.exc_info): the exception logged must be masked too."""
    original = raised()

    def leaky(ev: DomainEvent) -> None:
        raise original

    handler = _FormatsExcInfo()
    logger = logging.getLogger("auditbus")
    logger.addHandler(handler)
    try:
        bus.subscribe("plan_failed", leaky)
        bus.emit(event("plan_failed"))
    finally:
        logger.removeHandler(handler)
    [text] = handler.lines
    assert type(original).__name__ in text
    assert "in leaky" in text  # still the traceback
    assert "***REDACTED***" in text
    assert SECRET_TOKEN not in text
    assert "hunter22" not in text
    # The handler's own exception is left as it was.
    assert SECRET_TOKEN in str(original) or "hunter22" in str(original)


# Secrets without a shape of their own: masked in the event only because of their key names.
EVENT_SECRETS = {
    "password": "hunter2pass",
    "pin": 98765,
    "key": "db.password",
    "new_value": "s3cr3tval",
    "dsn": "postgres://app:pgpw7781@db/prod",
    "nested": [{"secret": b"bytes-secret"}],
    "tokens": ["tok-in-a-list", {"refresh": "tok-in-a-dict"}],
    "api_tokens": {"tok-as-a-key": "ci"},
}


@pytest.mark.parametrize(
    "fail",
    [
        lambda ev: KeyError(ev.details["password"]),
        lambda ev: ValueError(f"invalid literal for int() with base 10: {ev.details['new_value']!r}"),
        lambda ev: KeyError(ev.details["pin"]),
        lambda ev: ConnectionError(f"cannot reach pgpw7781@db as app={ev.details['password']}"),
        lambda ev: ValueError(f"bad secret {ev.details['nested'][0]['secret']!r}"),
        lambda ev: LookupError(f"{ev.details['tokens'][0]} and {ev.details['tokens'][1]['refresh']} expired"),
        lambda ev: KeyError(next(iter(ev.details["api_tokens"]))),
    ],
    ids=["KeyError", "int", "int-key", "partial", "bytes", "masked-whole", "key-in-masked-whole"],
)
def test_a_failure_that_quotes_the_events_own_secret_values_logs_them_masked(
    bus: ReactiveEventBus, caplog: pytest.LogCaptureFixture, fail: Callable[[DomainEvent], Exception]
) -> None:
    """The bus knows which of the event's values are secret: its log line masks them wherever they appear."""
    for text in _logged_failure(bus, caplog, EVENT_SECRETS, fail):
        for secret in (
            "hunter2pass",
            "98765",
            "s3cr3tval",
            "pgpw7781",
            "bytes-secret",
            "tok-in-a-list",
            "tok-in-a-dict",
            "tok-as-a-key",
        ):
            assert secret not in text


@pytest.mark.parametrize(
    ("details", "fail", "shown"),
    [
        ({"password": "pa\nss-word-x"}, lambda ev: KeyError(ev.details["password"]), "pa\\nss-word-x"),
        ({"password": "pa\\ss-word-x"}, lambda ev: KeyError(ev.details["password"]), "pa\\\\ss-word-x"),
        ({"password": 'it\'s "q" pw'}, lambda ev: KeyError(ev.details["password"]), 'it\\\'s "q" pw'),
        ({"password": "pa\u200bss-word"}, lambda ev: KeyError(ev.details["password"]), "pa\\u200bss-word"),
        ({"password": "p\u00e4ssw\u00f6rd-x"}, lambda ev: ValueError(ascii(ev.details["password"])), "p\\xe4ssw"),
        ({"password": "p\u00e4ssw\u00f6rd-x"}, lambda ev: KeyError(ev.details["password"].encode()), "p\\xc3\\xa4ssw"),
        ({"secret": b"\xff\xfepwsecret"}, lambda ev: KeyError(ev.details["secret"]), "\\xff\\xfepwsecret"),
    ],
    ids=["newline", "backslash", "quotes", "invisible", "ascii", "encoded", "bytes"],
)
def test_an_events_secret_value_quoted_escaped_is_logged_masked(
    bus: ReactiveEventBus,
    caplog: pytest.LogCaptureFixture,
    details: dict[str, Any],
    fail: Callable[[DomainEvent], Exception],
    shown: str,
) -> None:
    """A repr() escapes a secret value (`KeyError: 'pa\\nss'`): the escaped form is masked too."""
    for text in _logged_failure(bus, caplog, details, fail):
        assert shown not in text


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups came with Python 3.11")
def test_a_multi_line_secret_value_split_by_an_exception_groups_margin_is_logged_masked(
    bus: ReactiveEventBus, caplog: pytest.LogCaptureFixture
) -> None:
    """A traceback prints a group's members behind a `|` margin, which splits a multi-line value: each
    line of it is masked on its own."""

    def leaky(ev: DomainEvent) -> None:
        raise ExceptionGroup("checks failed", [ValueError(f"rejected {ev.details['private_key']}")])  # noqa: F821

    bus.subscribe("config_changed", leaky)
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(event("config_changed", details={"private_key": "first-line-of-it\nsecond-line-of-it"}))
    assert bus.handler_errors == 1
    assert "| ValueError: rejected ***REDACTED***" in caplog.text
    assert "first-line-of-it" not in caplog.text
    assert "second-line-of-it" not in caplog.text


def test_a_short_secret_value_leaves_the_tracebacks_frame_lines_readable(
    bus: ReactiveEventBus, caplog: pytest.LogCaptureFixture
) -> None:
    """A small number (`password_length: 12`) is masked where the failure quotes it, not where it is the
    line number of a frame, nor a word (`line`, `in`) of the frame lines Python writes."""

    def leaky(ev: DomainEvent) -> None:
        raise KeyError(ev.details["secret_version"])

    raised_at = leaky.__code__.co_firstlineno + 1
    bus.subscribe("config_changed", leaky)
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(event("config_changed", details={"secret_version": raised_at, "password": "line"}))
    assert bus.handler_errors == 1
    assert f'", line {raised_at}, in leaky' in caplog.text
    assert "KeyError: ***REDACTED***" in caplog.text


def test_two_secret_values_overlapping_in_the_text_are_both_masked_whole(
    bus: ReactiveEventBus, caplog: pytest.LogCaptureFixture
) -> None:
    """`abcdefgh12` and `12345678zz` run together share `12`: neither leaves a part of it shown."""
    texts = _logged_failure(
        bus,
        caplog,
        {"old_password": "abcdefgh12", "new_password": "12345678zz"},
        lambda ev: ValueError(ev.details["old_password"][:-2] + ev.details["new_password"]),
    )
    assert "ValueError: ***REDACTED***\n" in caplog.text
    for text in texts:
        assert "345678zz" not in text
        assert "abcdefgh" not in text


def test_an_exception_that_cannot_be_twinned_is_logged_masked_without_exc_info(
    bus: ReactiveEventBus, caplog: pytest.LogCaptureFixture
) -> None:
    class Refused(Exception):
        def __init__(self, token: str) -> None:
            super().__init__()
            self.token = token

        def __str__(self) -> str:
            return f"refused {self.token}"

    def leaky(ev: DomainEvent) -> None:
        raise Refused(SECRET_TOKEN)

    bus.subscribe("plan_failed", leaky)
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(event("plan_failed"))
    [record] = caplog.records
    assert record.exc_info is None  # a formatter that formats exc_info has nothing raw to print
    assert "Refused: refused ***REDACTED***" in caplog.text
    assert SECRET_TOKEN not in caplog.text


def test_an_exception_whose_str_ignores_its_args_is_logged_without_exc_info(
    bus: ReactiveEventBus, caplog: pytest.LogCaptureFixture
) -> None:
    """A twin of such an exception would print the raw text again: the record carries none."""
    handler = _FormatsExcInfo()
    logger = logging.getLogger("auditbus")

    class Denied(Exception):
        def __str__(self) -> str:
            return f"denied for {SECRET_URL}"

    def leaky(ev: DomainEvent) -> None:
        raise Denied

    bus.subscribe("plan_failed", leaky)
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.ERROR, logger="auditbus"):
            bus.emit(event("plan_failed"))
    finally:
        logger.removeHandler(handler)
    [record] = caplog.records
    assert record.exc_info is None
    assert handler.lines == []
    assert "Denied: denied for https://bob:***REDACTED***@db.example.com" in caplog.text
    assert "hunter22" not in caplog.text


def test_a_handler_exception_whose_str_raises_is_still_logged(
    bus: ReactiveEventBus, caplog: pytest.LogCaptureFixture
) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise ValueError("no text")

    def failing(ev: DomainEvent) -> None:
        raise Unprintable

    calls: list[Any] = []
    bus.subscribe("plan_failed", failing)
    bus.subscribe("plan_failed", recorder(calls, "after"))
    with caplog.at_level(logging.ERROR, logger="auditbus"):
        bus.emit(event("plan_failed", plan_id="1"))
    assert calls == [("after", "1")]
    assert "Unprintable" in caplog.text


def test_base_exceptions_still_propagate(bus: ReactiveEventBus) -> None:
    """Like the legacy bus (`except Exception`), a KeyboardInterrupt is not swallowed."""

    class Interrupt(BaseException):
        pass

    calls: list[Any] = []

    def interrupt(ev: DomainEvent) -> None:
        raise Interrupt

    bus.subscribe("plan_created", interrupt)
    bus.subscribe("plan_created", recorder(calls, "never"))
    with pytest.raises(Interrupt):
        bus.emit(event())
    assert calls == []
    assert bus.handler_errors == 0


# --- subscription changes during emit -------------------------------------


def test_handler_removed_during_emit_is_not_called_even_in_that_emit(bus: ReactiveEventBus) -> None:
    calls: list[Any] = []
    later = recorder(calls, "later")

    def remover(ev: DomainEvent) -> None:
        calls.append(("remover", ev.plan_id))
        assert bus.unsubscribe("plan_created", later) is True

    bus.subscribe("plan_created", remover)
    bus.subscribe("plan_created", later)
    bus.emit(event(plan_id="1"))
    bus.emit(event(plan_id="2"))
    assert calls == [("remover", "1"), ("remover", "2")]


def test_token_removed_during_a_nested_emit_is_not_called_by_the_outer_emit(bus: ReactiveEventBus) -> None:
    calls: list[Any] = []
    tokens: dict[str, Any] = {}

    def first(ev: DomainEvent) -> None:
        calls.append(("first", ev.plan_id))
        if ev.plan_id == "outer":
            bus.emit(event(plan_id="inner"))
        else:
            tokens["second"]()

    bus.subscribe("plan_created", first)
    tokens["second"] = bus.subscribe("plan_created", recorder(calls, "second"))
    bus.emit(event(plan_id="outer"))
    assert calls == [("first", "outer"), ("first", "inner")]


def test_unsubscribe_token_is_its_own_subscription(bus: ReactiveEventBus) -> None:
    calls: list[Any] = []
    handler = recorder(calls, "h")
    first = bus.subscribe("plan_created", handler)
    second = bus.subscribe("plan_created", handler)
    assert second() is True
    assert first.active is True
    assert second.active is False
    assert repr(first) == "<Unsubscribe recorder.<locals>.handler from plan_created active=True>"
    bus.emit(event(plan_id="1"))
    first.dispose()
    bus.emit(event(plan_id="2"))
    assert calls == [("h", "1")]
    assert repr(first) == "<Unsubscribe active=False>"


# --- dispose and context manager ------------------------------------------


def test_dispose_drops_handlers_completes_stream_and_closes_emit() -> None:
    bus = ReactiveEventBus()
    calls: list[Any] = []
    completed: list[bool] = []
    token = bus.subscribe("plan_created", recorder(calls, "h"))
    bus.stream.subscribe(on_completed=lambda: completed.append(True))
    bus.emit(event(plan_id="before"))
    bus.dispose()
    assert bus.closed is True
    assert completed == [True]
    assert token.active is False
    assert bus.stats()["handlers"] == 0
    with pytest.raises(ClosedError, match=r"emit.*disposed"):
        bus.emit(event(plan_id="after"))
    with pytest.raises(ClosedError, match="subscribe"):
        bus.subscribe("plan_created", recorder(calls, "late"))
    with pytest.raises(ClosedError, match="subscribe_all"):
        bus.subscribe_all(recorder(calls, "late"))
    late: list[bool] = []
    bus.stream.subscribe(on_completed=lambda: late.append(True))
    assert late == [True]
    bus.dispose()  # a second dispose does nothing
    assert completed == [True]
    assert calls == [("h", "before")]
    assert [e.plan_id for e in bus.audit_log] == ["before"]


def test_dispose_from_a_handler_stops_the_remaining_handlers() -> None:
    bus = ReactiveEventBus()
    calls: list[Any] = []
    bus.subscribe("plan_created", lambda e: bus.dispose())
    bus.subscribe("plan_created", recorder(calls, "after"))
    bus.emit(event())
    assert calls == []
    assert bus.closed


def test_context_manager_disposes_on_exit_even_on_error() -> None:
    bus = ReactiveEventBus()

    def body() -> None:
        with bus as entered:
            assert entered is bus
            raise RuntimeError("body failed")

    with pytest.raises(RuntimeError, match="body failed"):
        body()
    assert bus.closed
    with pytest.raises(ClosedError):
        bus.emit(event())


# --- bad input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({"event_type": "plan_created"}, "dict {'event_type': 'plan_created'}"),
        (None, "NoneType None"),
        ("plan_created", "str 'plan_created'"),
    ],
)
def test_emit_rejects_what_is_not_a_domain_event(bus: ReactiveEventBus, value: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=rf"DomainEvent, got {re.escape(type_name)}$"):
        bus.emit(value)  # type: ignore[arg-type]
    assert bus.audit_log == []


def test_subscribe_rejects_a_non_callable_handler(bus: ReactiveEventBus) -> None:
    with pytest.raises(TypeError, match=r"subscribe: handler must be callable.*got int 42$"):
        bus.subscribe("plan_created", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"subscribe_all: handler must be callable.*got str 'not a function'$"):
        bus.subscribe_all("not a function")  # type: ignore[arg-type]
    assert bus.stats()["handlers"] == 0


def test_a_rejected_value_is_quoted_with_its_secrets_masked(bus: ReactiveEventBus) -> None:
    with pytest.raises(TypeError, match=r"got dict \{'password': '\*\*\*REDACTED\*\*\*'\}$") as raised:
        bus.emit({"password": "hunter22"})  # type: ignore[arg-type]
    assert "hunter22" not in str(raised.value)
    with pytest.raises(TypeError, match=r"got str '\*\*\*REDACTED\*\*\*'$"):
        bus.subscribe("plan_created", SECRET_TOKEN)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "named"), [("planCreated", "'planCreated'|\"planCreated\""), (3, "got int 3"), (None, "got NoneType None")]
)
def test_subscribe_rejects_an_unknown_type_naming_it(bus: ReactiveEventBus, bad: object, named: str) -> None:
    with pytest.raises(ValidationError, match=named) as info:
        bus.subscribe(bad, print)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("event_type: ")
    assert "EventType" in str(info.value)


@pytest.mark.parametrize(
    ("bad", "error", "named"),
    [
        (2.5, TypeError, r"max_log_size: expected an int >= 0 or None, got float 2\.5"),
        ("big", TypeError, r"max_log_size: expected an int >= 0 or None, got str 'big'"),
        (-1, ValidationError, r"max_log_size: got -1"),
        (2**70, ValidationError, rf"max_log_size: got {2**70}"),
    ],
)
def test_a_bad_max_log_size_is_named_in_the_message(bad: object, error: type[Exception], named: str) -> None:
    with pytest.raises(error, match=named) as info:
        ReactiveEventBus(bad)  # type: ignore[arg-type]
    assert "accepted: an int >= 0, or None for no bound" in str(info.value)


def test_max_log_size_takes_what_deque_maxlen_takes() -> None:
    assert repr(ReactiveEventBus()) == "ReactiveEventBus(max_log_size=10000)"
    assert repr(ReactiveEventBus(None)) == "ReactiveEventBus(max_log_size=None)"
    assert repr(ReactiveEventBus(max_log_size=0)) == "ReactiveEventBus(max_log_size=0)"
    assert repr(ReactiveEventBus(True)) == "ReactiveEventBus(max_log_size=1)"  # an int, as deque(maxlen=True)


def test_constructor_validates_its_arguments() -> None:
    with pytest.raises(ValidationError, match=r"max_log_size.*-1"):
        ReactiveEventBus(-1)
    with pytest.raises(TypeError, match="max_log_size"):
        ReactiveEventBus("big")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"audit= takes an auditbus.AuditService or None, got object"):
        ReactiveEventBus(audit=object())  # type: ignore[arg-type]
    unbounded = ReactiveEventBus(max_log_size=None)
    for _ in range(10_050):
        unbounded.emit(event())
    assert len(unbounded.audit_log) == 10_050
    assert repr(ReactiveEventBus(5)) == "ReactiveEventBus(max_log_size=5)"


# --- memory ----------------------------------------------------------------


class UsesTheBusWhenFreed:
    """A handler, or a value in an event's details, whose `__del__` emits, subscribes and reads the bus:
    freed while the bus held one of its locks, it would deadlock (the locks are not re-entrant)."""

    def __init__(self, bus: ReactiveEventBus, name: str, freed: list[str]) -> None:
        self.bus, self.name, self.freed = bus, name, freed

    def __call__(self, ev: DomainEvent) -> None:
        pass

    def __del__(self) -> None:
        try:
            self.bus.emit(event("step_started", plan_id=f"from {self.name}"))
            self.bus.subscribe("step_started", lambda e: None)()
            self.bus.stats()
            assert [e.plan_id for e in self.bus.audit_log][-1] == f"from {self.name}"
            self.freed.append(f"{self.name}: used the bus")
        except ClosedError:
            self.freed.append(f"{self.name}: closed")


class NamedLike:
    """Equal to any object with this `name`: unsubscribes a handler without holding a reference to it."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return getattr(other, "name", None) == self.name


def test_handlers_and_logged_events_are_freed_outside_the_buses_locks() -> None:
    """Unsubscribing (token or handler), disposing, evicting from the bounded log and clearing it free
    Python objects; each is freed after the lock is released, so its `__del__` can use the bus."""
    freed: list[str] = []
    outcome: list[BaseException | None] = []

    def scenario() -> None:
        try:
            bus = ReactiveEventBus(max_log_size=1)
            bus.subscribe("plan_created", UsesTheBusWhenFreed(bus, "by token", freed))()
            bus.subscribe("plan_created", UsesTheBusWhenFreed(bus, "by handler", freed))
            assert bus.unsubscribe("plan_created", NamedLike("by handler")) is True  # holds no reference
            bus.emit(event(details={"value": UsesTheBusWhenFreed(bus, "evicted", freed)}))
            bus.emit(event())  # evicts the first event
            bus.emit(event(details={"value": UsesTheBusWhenFreed(bus, "cleared", freed)}))
            bus.clear_audit_log()
            bus.subscribe_all(UsesTheBusWhenFreed(bus, "disposed", freed))
            bus.dispose()
            outcome.append(None)
        except BaseException as exc:  # surfaced below
            outcome.append(exc)

    worker = threading.Thread(target=scenario, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), f"deadlock: freed so far {freed}"
    assert outcome == [None]
    assert freed == [
        "by token: used the bus",
        "by handler: used the bus",
        "evicted: used the bus",
        "cleared: used the bus",
        "disposed: closed",
    ]


def test_a_bus_in_a_cycle_with_its_handler_is_collected() -> None:
    class Service:
        def __init__(self) -> None:
            self.bus = ReactiveEventBus()
            self.tokens = [self.bus.subscribe("plan_created", self.on_event), self.bus.subscribe_all(self.on_event)]
            self.bus.stream.subscribe(self.on_event)

        def on_event(self, ev: DomainEvent) -> None:
            pass

    service = Service()
    service.bus.emit(event())
    bus_ref = weakref.ref(service.bus)
    service_ref = weakref.ref(service)
    del service
    gc.collect()
    assert service_ref() is None
    assert bus_ref() is None


def test_the_stream_costs_nothing_until_used() -> None:
    """Without `stream`, reactivex is never imported; missing reactivex is an ImportError naming the extra."""
    script = """
import sys
import auditbus
bus = auditbus.ReactiveEventBus()
bus.subscribe("plan_created", lambda e: None)
bus.emit(auditbus.DomainEvent(event_type="plan_created"))
assert "reactivex" not in sys.modules and "auditbus.stream" not in sys.modules, sorted(sys.modules)
sys.modules["reactivex"] = None  # as if it were not installed
try:
    bus.stream
except ImportError as exc:
    print(exc)
else:
    raise SystemExit("stream did not raise")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "pip install 'auditbus[rx]'" in done.stdout
