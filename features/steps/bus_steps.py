"""Steps for features/bus_handlers.feature, in the words of the services that emit."""

from __future__ import annotations

import logging
from typing import Any

from auditbus import ClosedError, DomainEvent, EventType, ReactiveEventBus
from behave import given, then, when
from behave.runner import Context


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@given("an event bus")
def step_event_bus(context: Context) -> None:
    context.bus = ReactiveEventBus()
    context.ran = []  # (handler name, plan_id or session_id)
    context.snapshots = {}
    context.capture = _Capture()
    logger = logging.getLogger("auditbus")
    logger.addHandler(context.capture)
    context.add_cleanup(logger.removeHandler, context.capture)
    context.add_cleanup(context.bus.dispose)
    context.error = None
    context.tokens = {}


def _recording(context: Context, name: str, fail: bool = False) -> Any:
    def handler(event: DomainEvent) -> None:
        context.ran.append((name, event.plan_id or event.session_id))
        context.snapshots[name] = (list(getattr(context, "dashboard", [])), list(context.bus.audit_log))
        if fail:
            raise RuntimeError(f"{name} is broken")

    handler.__qualname__ = name.replace(" ", "_")
    return handler


@given('the "{name}" handler subscribes to "{event_type}" and fails')
def step_subscribe_failing(context: Context, name: str, event_type: str) -> None:
    context.tokens[name] = context.bus.subscribe(event_type, _recording(context, name, fail=True))


@given('the "{name}" handler subscribes to every event')
def step_subscribe_all(context: Context, name: str) -> None:
    context.tokens[name] = context.bus.subscribe_all(_recording(context, name))


@given('the "{name}" handler subscribes to "{event_type}" and starts step "{step}"')
def step_subscribe_follow_up(context: Context, name: str, event_type: str, step: str) -> None:
    record = _recording(context, name)

    def handler(event: DomainEvent) -> None:
        record(event)
        context.bus.emit(DomainEvent(event_type=EventType.STEP_STARTED, plan_id=event.plan_id, details={"step": step}))

    context.tokens[name] = context.bus.subscribe(event_type, handler)


@given('the "{name}" handler subscribes to "{event_type}" and unsubscribes "{other}"')
def step_subscribe_unsubscriber(context: Context, name: str, event_type: str, other: str) -> None:
    record = _recording(context, name)

    def handler(event: DomainEvent) -> None:
        record(event)
        context.tokens[other]()

    context.tokens[name] = context.bus.subscribe(event_type, handler)


# Registered after the longer "... and ..." forms: behave tries steps in order.
@given('the "{name}" handler subscribes to "{event_type}"')
def step_subscribe(context: Context, name: str, event_type: str) -> None:
    context.tokens[name] = context.bus.subscribe(event_type, _recording(context, name))


@given("a dashboard watches the live event stream")
def step_dashboard(context: Context) -> None:
    context.dashboard = []
    context.bus.stream.subscribe(lambda event: context.dashboard.append(event.plan_id))


def _emit(context: Context, event: DomainEvent) -> None:
    try:
        context.bus.emit(event)
    except Exception as exc:  # recorded for the Then steps
        context.error = exc


@when('the plan lifecycle service applies plan "{plan_id}"')
def step_apply(context: Context, plan_id: str) -> None:
    _emit(
        context,
        DomainEvent(
            event_type=EventType.PLAN_APPLIED,
            plan_id=plan_id,
            actor_name="planner",
            project_name="alpha",
            details={"project_names": ["alpha"], "files_changed": 3},
        ),
    )


@when('the plan lifecycle service cancels plan "{plan_id}"')
def step_cancel(context: Context, plan_id: str) -> None:
    _emit(
        context,
        DomainEvent(event_type=EventType.PLAN_CANCELLED, plan_id=plan_id, details={"reason": "superseded"}),
    )


@when('the session service creates session "{session_id}"')
def step_session(context: Context, session_id: str) -> None:
    _emit(context, DomainEvent(event_type=EventType.SESSION_CREATED, session_id=session_id, actor_name="cli"))


@when("the application shuts the event bus down")
def step_shutdown(context: Context) -> None:
    context.bus.dispose()


@then("applying the plan succeeds")
def step_succeeds(context: Context) -> None:
    assert context.error is None, context.error


@then('applying plan "{plan_id}" fails because the bus is closed')
def step_fails_closed(context: Context, plan_id: str) -> None:
    step_apply(context, plan_id)
    assert isinstance(context.error, ClosedError), context.error


@then('"{name}" handled plan "{plan_id}"')
def step_handled(context: Context, name: str, plan_id: str) -> None:
    assert (name, plan_id) in context.ran, context.ran


@then('"{name}" handled exactly {count:d} event')
@then('"{name}" handled exactly {count:d} events')
def step_handled_count(context: Context, name: str, count: int) -> None:
    assert [n for n, _ in context.ran].count(name) == count, context.ran


@then('the failure of "{name}" is logged for "{event_type}" with its traceback')
def step_logged(context: Context, name: str, event_type: str) -> None:
    [record] = context.capture.records
    message = record.getMessage()
    assert name.replace(" ", "_") in message, message
    assert event_type in message, message
    assert record.exc_info is not None
    assert record.exc_info[2] is not None  # the traceback


@then("the bus counts {count:d} handler error")
def step_error_count(context: Context, count: int) -> None:
    assert context.bus.handler_errors == count


@then("the handlers ran in this order: {names}")
def step_order(context: Context, names: str) -> None:
    assert [n for n, _ in context.ran] == [n.strip() for n in names.split(",")], context.ran


@then('the dashboard saw plan "{plan_id}" before "{name}" ran')
def step_dashboard_first(context: Context, plan_id: str, name: str) -> None:
    seen_by_dashboard, _ = context.snapshots[name]
    assert seen_by_dashboard == [plan_id], seen_by_dashboard


@then('the event is in the recent-events log when "{name}" runs')
def step_in_log(context: Context, name: str) -> None:
    _, log = context.snapshots[name]
    assert [e.plan_id for e in log] == [context.ran[-1][1]], log
