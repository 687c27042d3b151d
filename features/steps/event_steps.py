"""Steps for event_creation.feature: the services' calls, as they make them."""

from __future__ import annotations

import ast
import contextlib
import datetime
import uuid
from typing import Any

from auditbus import DomainEvent, EventType, identity
from behave import given, then, when  # type: ignore[import-untyped]
from behave.runner import Context  # type: ignore[import-untyped]


def emit(context: Context, **kwargs: Any) -> None:
    """Builds the event the way a service does, inside the operator's identity block if any."""
    operator = getattr(context, "operator", None)
    block = identity(operator) if operator is not None else contextlib.nullcontext()
    context.before = datetime.datetime.now(datetime.timezone.utc)
    with block:
        context.event = DomainEvent(**kwargs)
    context.after = datetime.datetime.now(datetime.timezone.utc)


@given('the operator "{user}" is acting')
def operator_acting(context: Context, user: str) -> None:
    context.operator = user


@when('the plan "{plan_id}" of project "{project}" is applied by the planner "{actor}"')
def plan_applied(context: Context, plan_id: str, project: str, actor: str) -> None:
    # PlanLifecycleService.complete_apply
    emit(
        context,
        event_type=EventType.PLAN_APPLIED,
        plan_id=plan_id,
        actor_name=actor,
        project_name=project,
        details={"project_names": [project], "files_changed": 3},
    )


@when('a session "{session_id}" is created for "{actor}" by the user "{user}"')
def session_created_by(context: Context, session_id: str, actor: str, user: str) -> None:
    emit(
        context,
        event_type=EventType.SESSION_CREATED,
        session_id=session_id,
        actor_name=actor,
        user_identity=user,
        details={"session_id": session_id, "actor_name": actor},
    )


@when('a session "{session_id}" is created for "{actor}"')
def session_created(context: Context, session_id: str, actor: str) -> None:
    # SessionService.create
    context.passed_details = {"session_id": session_id, "actor_name": actor}
    emit(
        context,
        event_type=EventType.SESSION_CREATED,
        session_id=session_id,
        actor_name=actor,
        details=context.passed_details,
    )


@when('the config key "{key}" changes from "{old}" to "{new}" in scope "{scope}"')
def config_changed(context: Context, key: str, old: str, new: str, scope: str) -> None:
    # ConfigService.set
    emit(
        context,
        event_type=EventType.CONFIG_CHANGED,
        details={"key": key, "old_value": old, "new_value": new, "scope": scope},
    )


@when("the service changes its own details dict afterwards")
def service_mutates(context: Context) -> None:
    context.passed_details["session_id"] = "tampered"
    context.passed_details["extra"] = True


@when("a service builds an event with {field} set to {value}")
def build_bad(context: Context, field: str, value: str) -> None:
    kwargs: dict[str, Any] = {"event_type": "plan_applied", field: ast.literal_eval(value)}
    try:
        DomainEvent(**kwargs)
    except Exception as exc:  # the Then steps check what it was
        context.error = exc
    else:
        context.error = None


@then('the event is a "{value}" event')
def event_type_is(context: Context, value: str) -> None:
    assert context.event.event_type is EventType(value), context.event


@then('the event names the plan "{plan_id}", the project "{project}" and the actor "{actor}"')
def event_names(context: Context, plan_id: str, project: str, actor: str) -> None:
    event = context.event
    assert (event.plan_id, event.project_name, event.actor_name) == (plan_id, project, actor), event


@then('the event was done by "{user}"')
def done_by(context: Context, user: str) -> None:
    assert context.event.user_identity == user, context.event


@then("the event was done by no one")
def done_by_no_one(context: Context) -> None:
    assert context.event.user_identity is None, context.event


@then("the event happened just now, in UTC")
def happened_now(context: Context) -> None:
    stamp = context.event.timestamp
    assert stamp.utcoffset() == datetime.timedelta(0), stamp
    assert context.before <= stamp <= context.after, (context.before, stamp, context.after)


@then("the event has its own event id")
def has_event_id(context: Context) -> None:
    assert uuid.UUID(context.event.event_id).version == 7, context.event.event_id


@then('the event details say key "{key}", old value "{old}", new value "{new}"')
def details_say(context: Context, key: str, old: str, new: str) -> None:
    details = context.event.details
    assert (details["key"], details["old_value"], details["new_value"]) == (key, old, new), details


@then('the event details still say session "{session_id}"')
def details_still(context: Context, session_id: str) -> None:
    assert context.event.details == {"session_id": session_id, "actor_name": "planner-bot"}, context.event.details


@then("changing the event is refused")
def change_refused(context: Context) -> None:
    try:
        context.event.user_identity = "mallory"
    except AttributeError:
        pass
    else:
        raise AssertionError("a DomainEvent accepted an attribute assignment")
    assert context.event.user_identity is None


@then("the event read back from its JSON is the same event")
def json_round_trip(context: Context) -> None:
    text = context.event.model_dump_json()
    assert DomainEvent.model_validate_json(text) == context.event, text


@then("it is rejected with a ValueError or TypeError")
def rejected(context: Context) -> None:
    assert isinstance(context.error, (ValueError, TypeError)), repr(context.error)


@then('the message names "{named}" and says "{accepted}"')
def message_says(context: Context, named: str, accepted: str) -> None:
    message = str(context.error)
    assert named in message, message
    assert accepted in message, message
