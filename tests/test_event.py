"""DomainEvent and EventType: construction, defaults, value semantics and the pydantic surface."""

from __future__ import annotations

import copy
import datetime
import json
import pathlib
import pickle
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import timedelta, timezone
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import auditbus
import pytest
from auditbus import DomainEvent, EventType, ValidationError
from hypothesis import given
from hypothesis import strategies as st

WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
EVENT_ID = "0190b3f0-0000-7000-8000-000000000001"
FULL: dict[str, Any] = {
    "event_type": EventType.PLAN_APPLIED,
    "timestamp": WHEN,
    "plan_id": "plan-7",
    "project_name": "alpha",
    "actor_name": "planner",
    "session_id": "sess-1",
    "user_identity": "alice",
    "details": {"files_changed": 3, "nested": {"paths": ["/a", "/b"]}},
    "event_id": EVENT_ID,
}
TEXT_FIELDS = ("plan_id", "project_name", "actor_name", "session_id", "user_identity")


def full_event(**overrides: Any) -> DomainEvent:
    return DomainEvent(**{**FULL, **overrides})


# --- EventType ---------------------------------------------------------------------


def test_event_type_is_a_str_enum_looked_up_by_value() -> None:
    assert EventType("plan_applied") is EventType.PLAN_APPLIED
    assert EventType.PLAN_APPLIED == "plan_applied"
    assert isinstance(EventType.CONFIG_CHANGED, str)
    assert json.dumps({"t": EventType.AUTH_FAILURE}) == '{"t": "auth_failure"}'
    assert [m.value for m in EventType] == list(auditbus._native.EVENT_TYPE_VALUES)


# --- construction and defaults -----------------------------------------------------


def test_keyword_construction_keeps_every_field() -> None:
    event = full_event()
    assert event.event_type is EventType.PLAN_APPLIED
    assert event.timestamp == WHEN
    for name in TEXT_FIELDS:
        assert getattr(event, name) == FULL[name]
    assert event.details == FULL["details"]
    assert event.event_id == EVENT_ID


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        DomainEvent("plan_applied")  # type: ignore[misc]


def test_event_type_accepts_the_string_value_and_gives_back_the_member() -> None:
    assert DomainEvent(event_type="config_changed").event_type is EventType.CONFIG_CHANGED


def test_defaults() -> None:
    before = datetime.datetime.now(timezone.utc)
    event = DomainEvent(event_type=EventType.SESSION_CREATED)
    after = datetime.datetime.now(timezone.utc)
    assert before <= event.timestamp <= after
    assert event.timestamp.tzinfo == timezone.utc
    for name in TEXT_FIELDS:
        assert getattr(event, name) is None
    assert event.details == {}
    assert uuid.UUID(event.event_id).version == 7


def test_a_mock_in_details_dumps_as_its_text_instead_of_following_mocks_for_ever() -> None:
    """A `Mock` has a `model_dump` that returns another `Mock`: taking it for a model never ended.

    Run in a child with a bounded address space, so that the endless walk fails there
    instead of exhausting this machine's memory.
    """
    script = textwrap.dedent(
        """
        import json, resource
        from unittest import mock
        from auditbus import DomainEvent
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        held = {"client": mock.MagicMock(), "plain": mock.Mock()}
        event = DomainEvent(event_type="plan_applied", details=held)
        expected = {name: str(value) for name, value in held.items()}
        assert json.loads(event.model_dump_json())["details"] == expected
        assert event.model_dump(mode="json")["details"] == expected
        assert event.model_dump()["details"] == held
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr[-2000:]


# What freezegun and time-machine patch to freeze or move Python's clock.
FROZEN_NS = 1_704_164_645_678_901_234  # 2024-01-02T03:04:05.678901234Z


def test_the_default_timestamp_reads_pythons_clock_so_a_frozen_clock_freezes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The legacy default was `datetime.now(UTC)`: a service's tests under freezegun saw the frozen time."""
    monkeypatch.setattr(time, "time_ns", lambda: FROZEN_NS)
    expected = datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    assert DomainEvent(event_type="plan_applied").timestamp == expected
    assert DomainEvent(event_type="plan_applied", timestamp=None).timestamp == expected
    assert DomainEvent.model_validate({"event_type": "plan_applied"}).timestamp == expected
    assert DomainEvent(event_type="plan_applied", timestamp=WHEN).timestamp == WHEN


@pytest.mark.parametrize("clock", [lambda: "soon", lambda: 10**30, lambda: 1 / 0], ids=["text", "huge", "raises"])
def test_a_python_clock_that_gives_no_usable_instant_falls_back_to_the_system_clock(
    monkeypatch: pytest.MonkeyPatch, clock: Any
) -> None:
    before = datetime.datetime.now(timezone.utc)
    monkeypatch.setattr(time, "time_ns", clock)
    event = DomainEvent(event_type="plan_applied")
    monkeypatch.undo()
    assert before <= event.timestamp <= datetime.datetime.now(timezone.utc)


def test_an_interrupt_raised_by_pythons_clock_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted() -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "time_ns", interrupted)
    with pytest.raises(KeyboardInterrupt):
        DomainEvent(event_type="plan_applied")


def test_none_means_the_default() -> None:
    event = DomainEvent(event_type="plan_applied", timestamp=None, details=None, event_id=None, plan_id=None)
    assert event.details == {}
    assert event.plan_id is None
    assert uuid.UUID(event.event_id).version == 7
    assert event.timestamp.tzinfo == timezone.utc


def test_default_details_are_not_shared_between_events() -> None:
    first, second = DomainEvent(event_type="plan_applied"), DomainEvent(event_type="plan_applied")
    first.details["x"] = 1
    assert second.details == {}


class _DocsEastern(datetime.tzinfo):
    """A tzinfo as Python's documentation writes one: `utcoffset(None)` is the standard offset."""

    def utcoffset(self, dt: datetime.datetime | None) -> timedelta:
        return timedelta(hours=-5) + self.dst(dt)

    def dst(self, dt: datetime.datetime | None) -> timedelta:
        if dt is None or dt.tzinfo is None:
            return timedelta(0)
        return timedelta(hours=1) if 4 <= dt.month <= 10 else timedelta(0)

    def tzname(self, dt: datetime.datetime | None) -> str:
        return "EDT" if self.dst(dt) else "EST"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(WHEN, WHEN, id="aware-utc"),
        pytest.param(
            datetime.datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
            id="aware-offset-converted",
        ),
        pytest.param(
            datetime.datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris")),
            datetime.datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc),
            id="zoneinfo-converted",
        ),
        pytest.param(
            datetime.datetime(2026, 7, 1, 12, 0, tzinfo=_DocsEastern()),
            datetime.datetime(2026, 7, 1, 16, 0, tzinfo=timezone.utc),
            id="tzinfo-whose-offset-depends-on-the-date",
        ),
        pytest.param(
            datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(microseconds=1))),
            datetime.datetime(2026, 1, 2, 3, 4, 4, 999999, tzinfo=timezone.utc),
            id="offset-of-a-microsecond",
        ),
        pytest.param(
            datetime.datetime(2026, 1, 2, 3, 4, 5),
            datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
            id="naive-taken-as-utc",
        ),
        pytest.param("2026-01-02T03:04:05Z", datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), id="iso-z"),
        pytest.param(
            "2026-01-02T05:04:05.5+02:00",
            datetime.datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=timezone.utc),
            id="iso-offset",
        ),
        pytest.param(
            "2026-01-02 03:04:05", datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), id="iso-naive"
        ),
        pytest.param(
            "2026-01-02T03:04:05.123456789Z",
            datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc),
            id="iso-nanoseconds-truncated",
        ),
        pytest.param(0, datetime.datetime(1970, 1, 1, tzinfo=timezone.utc), id="unix-int"),
        pytest.param(
            1767323045.25, datetime.datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=timezone.utc), id="unix-float"
        ),
        pytest.param(
            1767323045000, datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), id="unix-milliseconds"
        ),
    ],
)
def test_timestamp_inputs_become_aware_utc(given: object, expected: datetime.datetime) -> None:
    stamp = DomainEvent(event_type="plan_applied", timestamp=given).timestamp  # type: ignore[arg-type]
    assert stamp == expected
    assert stamp.tzinfo == timezone.utc


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(datetime.datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))), id="max-west-of-utc"),
        pytest.param(datetime.datetime.min.replace(tzinfo=timezone(timedelta(hours=5))), id="min-east-of-utc"),
        pytest.param("9999-12-31T23:00:00-05:00", id="iso-text-past-9999-in-utc"),
        pytest.param(10**15, id="unix-milliseconds-in-year-33658"),
    ],
)
def test_a_timestamp_outside_the_datetime_range_in_utc_is_refused_at_construction(given: object) -> None:
    # Held in UTC, these instants fall outside the years a datetime holds: the
    # event must not be built with a `timestamp` that raises on every read.
    with pytest.raises(ValidationError, match=r"timestamp: .*outside the years 1 to 9999"):
        DomainEvent(event_type="plan_applied", timestamp=given)  # type: ignore[arg-type]


@pytest.mark.parametrize("given", [datetime.datetime.max, datetime.datetime.min], ids=["max", "min"])
def test_the_ends_of_the_naive_datetime_range_are_kept(given: datetime.datetime) -> None:
    event = DomainEvent(event_type="plan_applied", timestamp=given)
    assert event.timestamp == given.replace(tzinfo=timezone.utc)
    assert DomainEvent.model_validate_json(event.model_dump_json()) == event


def test_details_are_copied_at_construction() -> None:
    given = {"a": 1}
    event = DomainEvent(event_type="plan_applied", details=given)
    given["a"] = 2
    given["b"] = 3
    assert event.details == {"a": 1}
    assert event.details is not given


def test_details_accepts_any_mapping_and_stores_a_dict() -> None:
    event = DomainEvent(event_type="plan_applied", details=MappingProxyType({"k": "v"}))
    assert type(event.details) is dict
    assert event.details == {"k": "v"}


def test_str_subclasses_in_text_fields_are_stored_as_plain_str() -> None:
    event = DomainEvent(event_type="plan_applied", plan_id=EventType.PLAN_FAILED)
    assert event.plan_id == "plan_failed"
    assert type(event.plan_id) is str


# --- event_id ----------------------------------------------------------------------


def test_event_id_is_a_uuid7_carrying_the_creation_time() -> None:
    before_ms = time.time_ns() // 1_000_000
    event = DomainEvent(event_type="plan_applied")
    after_ms = time.time_ns() // 1_000_000
    parsed = uuid.UUID(event.event_id)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == event.event_id  # canonical lower-case hyphenated form
    assert before_ms <= parsed.int >> 80 <= after_ms


def test_fresh_event_ids_are_unique_and_strictly_increasing() -> None:
    ids = [DomainEvent(event_type="plan_applied").event_id for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert [uuid.UUID(i).bytes for i in ids] == sorted(uuid.UUID(i).bytes for i in ids)


def test_explicit_event_id_is_kept() -> None:
    assert DomainEvent(event_type="plan_applied", event_id="from-upstream").event_id == "from-upstream"


# --- frozen, equality, hash, repr ------------------------------------------------------


@pytest.mark.parametrize("name", [*FULL, "something_new"])
def test_assignment_and_deletion_raise(name: str) -> None:
    event = full_event()
    with pytest.raises(AttributeError):
        setattr(event, name, "x")
    with pytest.raises(AttributeError):
        delattr(event, name)
    assert event == full_event()


def test_equal_when_every_field_is_equal() -> None:
    assert full_event() == full_event()
    assert (full_event() != full_event()) is False


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("event_type", EventType.PLAN_FAILED),
        ("timestamp", WHEN + timedelta(microseconds=1)),
        *[(name, "someone else") for name in TEXT_FIELDS],
        ("details", {"files_changed": 4}),
        ("event_id", "another-id"),
    ],
)
def test_unequal_when_any_field_differs(name: str, other: object) -> None:
    assert full_event() != full_event(**{name: other})
    assert (full_event() == full_event(**{name: other})) is False


def test_none_and_missing_text_compare_unequal_to_a_value() -> None:
    assert full_event(plan_id=None) != full_event()


def test_comparing_with_other_types_is_not_equal() -> None:
    event = full_event()
    assert event != FULL
    assert event != "plan_applied"
    with pytest.raises(TypeError):
        _ = event < full_event()  # type: ignore[operator]


def test_hash_is_by_event_id() -> None:
    assert hash(full_event()) == hash(full_event())
    # details hold a dict, yet the event hashes: the hash does not look at it.
    assert hash(full_event(details={"other": [1]})) == hash(full_event())
    assert len({full_event(), full_event(), full_event(event_id="b")}) == 2


def test_repr_reads_like_the_constructor_and_round_trips() -> None:
    event = full_event()
    text = repr(event)
    assert text.startswith("DomainEvent(event_type=EventType.PLAN_APPLIED, timestamp=datetime.datetime(2026, 1, 2")
    assert "plan_id='plan-7'" in text
    assert f"event_id='{EVENT_ID}'" in text
    assert eval(text, {"DomainEvent": DomainEvent, "EventType": EventType, "datetime": datetime}) == event


def test_repr_masks_secrets_in_details_and_text_fields() -> None:
    """`logger.info("emitted %s", event)` is a log line: its text masks what the audit row masks."""
    token = "ghp_" + "c" * 36
    event = full_event(
        details={"password": "hunter2-plain", "key": "llm.api_key", "new_value": "sk-plain-value", "files": (1, 2)},
        session_id=f"Bearer {token}",
    )
    for text in (repr(event), str(event), f"{event}"):
        assert "hunter2-plain" not in text
        assert "sk-plain-value" not in text
        assert token not in text
        assert "'password': '***REDACTED***'" in text
        assert "session_id='Bearer ***REDACTED***'" in text
        assert "plan_id='plan-7'" in text
    # The masked text still evaluates, to the event with its secrets masked.
    shown = eval(repr(event), {"DomainEvent": DomainEvent, "EventType": EventType, "datetime": datetime})
    assert shown.event_id == event.event_id
    assert shown.details["password"] == "***REDACTED***"
    assert shown.details["key"] == "llm.api_key"
    # The event itself keeps its values.
    assert event.details["password"] == "hunter2-plain"


def test_repr_of_an_event_without_secrets_is_unchanged_by_masking() -> None:
    event = full_event(details={"files": (1, 2), "tags": {"a"}, "n": None})
    assert "details={'files': (1, 2), 'tags': {'a'}, 'n': None}" in repr(event)
    assert eval(repr(event), {"DomainEvent": DomainEvent, "EventType": EventType, "datetime": datetime}) == event


def test_repr_leaves_out_none_fields() -> None:
    text = repr(DomainEvent(event_type="auth_failure", event_id="x", timestamp=WHEN))
    assert "plan_id" not in text
    assert "user_identity" not in text
    assert eval(text, {"DomainEvent": DomainEvent, "EventType": EventType, "datetime": datetime}).event_id == "x"


# --- pickle and copy -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(protocol: int) -> None:
    event = full_event()
    restored = pickle.loads(pickle.dumps(event, protocol=protocol))
    assert restored == event
    assert restored.event_type is EventType.PLAN_APPLIED
    assert restored.timestamp.tzinfo == timezone.utc


def test_unpickling_does_not_pick_up_the_readers_identity() -> None:
    data = pickle.dumps(full_event(user_identity=None))
    with auditbus.identity("reader"):
        assert pickle.loads(data).user_identity is None


def test_copy_and_deepcopy() -> None:
    event = full_event()
    shallow, deep = copy.copy(event), copy.deepcopy(event)
    assert shallow == event
    assert deep == event
    assert deep.details["nested"] is not event.details["nested"]


# --- match ---------------------------------------------------------------------------


def test_match_args_follow_field_order() -> None:
    assert DomainEvent.__match_args__ == tuple(FULL)


def describe(event: DomainEvent) -> str:
    match event:
        case DomainEvent(EventType.PLAN_APPLIED, _, plan_id, user_identity=user):
            return f"plan {plan_id} applied by {user}"
        case DomainEvent(event_type=EventType.CONFIG_CHANGED, details={"key": key}):
            return f"config {key} changed"
        case _:
            return "other"


def test_match_by_position_and_keyword() -> None:
    assert describe(full_event()) == "plan plan-7 applied by alice"
    changed = DomainEvent(event_type="config_changed", details={"key": "llm.model"})
    assert describe(changed) == "config llm.model changed"
    assert describe(DomainEvent(event_type="auth_success")) == "other"


# --- model_dump / model_dump_json --------------------------------------------------------


def test_model_dump_python_mode() -> None:
    dumped = full_event().model_dump()
    assert dumped == FULL
    assert list(dumped) == list(FULL)
    assert dumped["event_type"] is EventType.PLAN_APPLIED
    assert dumped["timestamp"] == WHEN


def test_model_dump_copies_details_down_to_nested_containers() -> None:
    marker = object()
    event = full_event(details={"nested": {"paths": ["/a"], "pair": ({"k": 1}, 2)}, "obj": marker})
    dumped = event.model_dump()["details"]
    dumped["added"] = 1
    dumped["nested"]["paths"].append("/b")
    dumped["nested"]["pair"][0]["k"] = 2
    assert event.details == {"nested": {"paths": ["/a"], "pair": ({"k": 1}, 2)}, "obj": marker}
    assert dumped["obj"] is marker  # other values are shared, as pydantic does


def test_model_dump_of_self_containing_details_terminates() -> None:
    details: dict[str, Any] = {"a": 1}
    details["self"] = details
    event = DomainEvent(event_type="plan_applied", details=details)
    dumped = event.model_dump()["details"]
    assert dumped["a"] == 1
    assert dumped is not event.details
    # details is a copy of the dict; the original, inside it, repeats itself.
    assert json.loads(event.model_dump_json())["details"]["self"]["self"] == "[circular reference]"


def test_model_dump_json_mode_gives_only_json_types() -> None:
    dumped = full_event().model_dump(mode="json")
    assert dumped["event_type"] == "plan_applied"
    assert type(dumped["event_type"]) is str
    assert dumped["timestamp"] == "2026-01-02T03:04:05.678901Z"
    assert datetime.datetime.fromisoformat(dumped["timestamp"].replace("Z", "+00:00")) == WHEN
    assert dumped["details"] == FULL["details"]
    assert json.loads(json.dumps(dumped)) == dumped


def test_model_dump_json_mode_whole_seconds_have_no_fraction() -> None:
    stamp = DomainEvent(event_type="plan_applied", timestamp="2026-01-02T03:04:05Z").model_dump(mode="json")
    assert stamp["timestamp"] == "2026-01-02T03:04:05Z"


def test_model_dump_exclude_none() -> None:
    dumped = DomainEvent(event_type="plan_applied", plan_id="p").model_dump(exclude_none=True)
    assert set(dumped) == {"event_type", "timestamp", "plan_id", "details", "event_id"}


@pytest.mark.parametrize("mode", ["python", "json"])
def test_model_dump_include_and_exclude(mode: str) -> None:
    event = full_event()
    assert event.model_dump(mode=mode, include={"plan_id", "event_id"}) == {"plan_id": "plan-7", "event_id": EVENT_ID}
    assert set(event.model_dump(mode=mode, exclude=["details", "timestamp"])) == set(FULL) - {"details", "timestamp"}
    assert event.model_dump(mode=mode, include={"plan_id", "session_id"}, exclude={"session_id"}) == {
        "plan_id": "plan-7"
    }


def test_model_dump_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match=r"mode.*'yaml'.*accepted: 'python', 'json'"):
        full_event().model_dump(mode="yaml")


def test_model_dump_rejects_non_str_field_names() -> None:
    with pytest.raises(ValueError, match=r"include: expected field names \(str\), got int 1"):
        full_event().model_dump(include=[1])  # type: ignore[list-item]


def test_model_dump_json_is_compact_json_of_the_json_dump() -> None:
    event = full_event()
    text = event.model_dump_json()
    assert "\n" not in text
    assert ", " not in text
    assert text == json.dumps(event.model_dump(mode="json"), separators=(",", ":"))


def test_model_dump_json_indent() -> None:
    event = full_event()
    text = event.model_dump_json(indent=2)
    assert text.startswith('{\n  "event_type": "plan_applied",\n  "timestamp"')
    assert json.loads(text) == event.model_dump(mode="json")


def test_model_dump_json_exclude_none_and_include() -> None:
    event = DomainEvent(event_type="plan_applied", plan_id="p", event_id="e", timestamp=WHEN)
    assert json.loads(event.model_dump_json(exclude_none=True, exclude={"timestamp"})) == {
        "event_type": "plan_applied",
        "plan_id": "p",
        "details": {},
        "event_id": "e",
    }
    assert event.model_dump_json(include={"plan_id"}) == '{"plan_id":"p"}'


def test_model_dump_json_writes_dates_and_durations_in_details_in_python_text_forms() -> None:
    details = {"at": WHEN, "took": timedelta(seconds=90), "nan": float("nan")}
    dumped = json.loads(DomainEvent(event_type="plan_applied", details=details).model_dump_json())["details"]
    assert dumped == {"at": "2026-01-02T03:04:05.678901+00:00", "took": "0:01:30", "nan": "nan"}


def test_model_dump_json_writes_odd_details_values_as_text() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    event = DomainEvent(event_type="plan_applied", details={"o": Opaque(), "t": (1, 2), "big": 10**30})
    assert json.loads(event.model_dump_json())["details"] == {"o": "opaque!", "t": [1, 2], "big": str(10**30)}


# --- model_copy ---------------------------------------------------------------------


def test_model_copy_with_update() -> None:
    event = full_event()
    changed = event.model_copy(update={"plan_id": "plan-8", "event_type": "plan_failed"})
    assert changed.plan_id == "plan-8"
    assert changed.event_type is EventType.PLAN_FAILED
    assert changed.event_id == event.event_id
    assert changed.timestamp == event.timestamp
    assert event.plan_id == "plan-7"


def test_model_copy_without_update_is_equal() -> None:
    event = full_event()
    assert event.model_copy() == event


def test_model_copy_shallow_shares_nested_values_deep_does_not() -> None:
    event = full_event()
    shallow = event.model_copy()
    deep = event.model_copy(deep=True)
    assert shallow.details["nested"] is event.details["nested"]
    assert deep.details["nested"] is not event.details["nested"]
    assert deep.details == event.details


def test_model_copy_validates_the_update() -> None:
    with pytest.raises(ValidationError, match="plan_id: expected str or None, got int 3"):
        full_event().model_copy(update={"plan_id": 3})
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        full_event().model_copy(update={"bogus": 1})
    with pytest.raises(ValidationError, match="update: expected a dict"):
        full_event().model_copy(update=[("plan_id", "x")])  # type: ignore[arg-type]


def test_model_copy_does_not_pick_up_the_callers_identity() -> None:
    event = full_event(user_identity=None)
    with auditbus.identity("bob"):
        assert event.model_copy().user_identity is None


# --- model_validate / model_validate_json -----------------------------------------------


@pytest.mark.parametrize("mode", ["python", "json"])
def test_model_validate_round_trips_a_dump(mode: str) -> None:
    event = full_event()
    assert DomainEvent.model_validate(event.model_dump(mode=mode)) == event


def test_model_validate_fills_defaults() -> None:
    event = DomainEvent.model_validate({"event_type": "auth_success", "user_identity": "carol"})
    assert event.event_type is EventType.AUTH_SUCCESS
    assert event.user_identity == "carol"
    assert event.details == {}


def test_model_validate_returns_an_event_unchanged() -> None:
    event = full_event()
    assert DomainEvent.model_validate(event) is event


@pytest.mark.parametrize("bad", [None, 3, ["event_type", "plan_applied"], "plan_applied"])
def test_model_validate_rejects_what_is_not_a_dict(bad: object) -> None:
    with pytest.raises(ValidationError, match="expected a dict of field values or a DomainEvent, got"):
        DomainEvent.model_validate(bad)


def test_model_validate_rejects_bad_fields() -> None:
    with pytest.raises(ValidationError, match="event_type"):
        DomainEvent.model_validate({"event_type": "nope"})
    with pytest.raises(ValidationError, match="unexpected keyword argument 'extra'"):
        DomainEvent.model_validate({"event_type": "plan_applied", "extra": 1})
    with pytest.raises(ValidationError, match="field names are str, got int 1"):
        DomainEvent.model_validate({"event_type": "plan_applied", 1: "x"})


@pytest.mark.parametrize("as_bytes", [False, True])
def test_model_validate_json_round_trips(as_bytes: bool) -> None:
    event = full_event()
    text = event.model_dump_json()
    assert DomainEvent.model_validate_json(text.encode() if as_bytes else text) == event


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{", "json_data: invalid JSON"),
        (b"\xff\xfe", "json_data: invalid JSON"),
        ("[1, 2]", "json_data: expected a JSON object"),
        ('"plan_applied"', "json_data: expected a JSON object"),
        ('{"event_type": "nope"}', "event_type:"),
        ('{"event_type": "plan_applied", "timestamp": "soon"}', "timestamp:"),
        (3, "json_data: expected str, bytes or bytearray, got int"),
    ],
)
def test_model_validate_json_rejects_bad_input(bad: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DomainEvent.model_validate_json(bad)


@given(
    texts=st.fixed_dictionaries({name: st.none() | st.text() for name in TEXT_FIELDS}),
    details=st.dictionaries(
        st.text(),
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
            max_leaves=10,
        ),
        max_size=5,
    ),
    event_type=st.sampled_from(list(EventType)),
    micros=st.integers(0, 4_000_000_000_000_000),
)
def test_json_round_trip_of_any_event(
    texts: dict[str, str | None], details: dict[str, Any], event_type: EventType, micros: int
) -> None:
    stamp = datetime.datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)
    event = DomainEvent(event_type=event_type, timestamp=stamp, details=details, **texts)
    assert DomainEvent.model_validate_json(event.model_dump_json()) == event
    assert DomainEvent.model_validate(event.model_dump(mode="json")) == event


# --- errors --------------------------------------------------------------------------


class Weird:
    def __repr__(self) -> str:
        return "<weird>"


def ok(**extra: Any) -> dict[str, Any]:
    return {"event_type": "plan_applied", **extra}


V, T = ValidationError, TypeError
BAD_INPUT = [
    pytest.param({"event_type": "nope"}, V, ["'nope'", "event_type", "plan_applied"], id="unknown-type"),
    pytest.param({"event_type": "PLAN_APPLIED"}, V, ["event_type", "accepted"], id="member-name"),
    pytest.param({"event_type": 3}, V, ["event_type", "EventType or its string value", "got int 3"], id="int-type"),
    *[pytest.param(ok(**{n: 3}), V, [n, "str or None", "int 3"], id=f"int-{n}") for n in TEXT_FIELDS],
    pytest.param(ok(event_id=7), V, ["event_id", "str"], id="int-id"),
    pytest.param(ok(event_id=""), V, ["event_id", "empty"], id="empty-id"),
    pytest.param(ok(details=[1]), V, ["details", "dict", "list [1]"], id="list-details"),
    pytest.param(ok(details="x=1"), V, ["details", "dict", "str"], id="str-details"),
    pytest.param(
        ok(timestamp="yesterday"),
        V,
        ["timestamp", "'yesterday'", "datetime", "ISO-8601", "Unix seconds"],
        id="bad-timestamp-text",
    ),
    pytest.param(ok(timestamp=True), V, ["timestamp", "bool"], id="bool-timestamp"),
    pytest.param(ok(timestamp=Weird()), V, ["timestamp", "Weird"], id="object-timestamp"),
    pytest.param(ok(timestamp=float("nan")), V, ["timestamp", "nan"], id="nan-timestamp"),
    pytest.param(ok(colour="red"), T, ["'colour'", "accepted", "plan_id"], id="unknown-keyword"),
    pytest.param({"plan_id": "p"}, T, ["event_type"], id="missing-type"),
]


@pytest.mark.parametrize(("kwargs", "error", "words"), BAD_INPUT)
def test_bad_input_names_the_field_and_what_is_accepted(
    kwargs: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as caught:
        DomainEvent(**kwargs)
    assert isinstance(caught.value, (ValueError, TypeError))
    for word in words:
        assert word in str(caught.value)


def test_a_date_timestamp_is_its_midnight_in_utc() -> None:
    stamp = DomainEvent(event_type="plan_applied", timestamp=datetime.date(2026, 1, 2)).timestamp
    assert stamp == datetime.datetime(2026, 1, 2, tzinfo=timezone.utc)


def test_validation_error_is_a_value_error() -> None:
    assert issubclass(ValidationError, ValueError)
    with pytest.raises(ValueError, match="event_type"):
        DomainEvent(event_type="nope")


def test_a_failing_tzinfo_is_reported_against_the_timestamp() -> None:
    class Broken(datetime.tzinfo):
        def utcoffset(self, dt: datetime.datetime | None) -> timedelta | None:
            raise RuntimeError("no offset today")

    with pytest.raises(ValidationError, match=r"timestamp: .*no offset today"):
        DomainEvent(event_type="plan_applied", timestamp=datetime.datetime(2026, 1, 1, tzinfo=Broken()))


# --- no pydantic -------------------------------------------------------------------


def test_auditbus_never_imports_pydantic() -> None:
    script = textwrap.dedent(
        """
        import copy, pickle, sys
        import auditbus
        from auditbus import DomainEvent, EventType, identity

        def loaded():
            return sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core"))

        after_import = loaded()
        with identity("alice"):
            event = DomainEvent(event_type=EventType.PLAN_APPLIED, plan_id="p", details={"a": [1, {"b": 2}]})
        event.model_dump(); event.model_dump(mode="json", exclude_none=True)
        text = event.model_dump_json(indent=2)
        DomainEvent.model_validate_json(text); DomainEvent.model_validate(event.model_dump())
        event.model_copy(update={"plan_id": "q"}, deep=True)
        pickle.loads(pickle.dumps(event)); copy.deepcopy(event); repr(event); hash(event)
        try:
            DomainEvent(event_type="nope")
        except ValueError:
            pass
        print(after_import, loaded())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[] []", result.stdout + result.stderr


def test_an_error_quoting_a_bad_value_masks_a_secret_in_it(tmp_path: pathlib.Path) -> None:
    token = "ghp_" + "c" * 36
    with pytest.raises(auditbus.ValidationError) as raised:
        DomainEvent(event_type="plan_applied", plan_id=token.encode())
    assert "plan_id" in str(raised.value)
    assert token not in str(raised.value)
    with auditbus.AuditService(tmp_path / "a.db") as svc, pytest.raises(TypeError) as raised_too:
        svc.record("auth_success", user_identity=token.encode())  # type: ignore[arg-type]
    assert "user_identity" in str(raised_too.value)
    assert token not in str(raised_too.value)


@pytest.mark.parametrize(
    "details",
    [
        [("password", "hunter2")],  # headers.items() passed as a list of pairs
        [{"name": "DB_PASSWORD", "value": "hunter2"}],
        ({"api_key": "hunter2"},),
    ],
    ids=["pairs", "env-list", "tuple-of-dict"],
)
def test_an_error_quoting_a_bad_value_masks_secrets_by_name_too(details: object) -> None:
    # The value shapes are not enough: a secret sits under a secret name in
    # the quoted value, as the redaction rules for details would find it.
    with pytest.raises(auditbus.ValidationError) as raised:
        DomainEvent(event_type="config_changed", details=details)  # type: ignore[arg-type]
    assert "details" in str(raised.value)
    assert "hunter2" not in str(raised.value)


class _Seconds(int):
    """Unix seconds whose text is a token: the value is quoted masked, whichever way it is shown."""

    def __str__(self) -> str:
        return "ghp_" + "c" * 36

    __repr__ = __str__


def test_a_timestamp_that_cannot_be_read_is_quoted_masked() -> None:
    with pytest.raises(auditbus.ValidationError) as raised:
        DomainEvent(event_type="plan_applied", timestamp=_Seconds(10**400))
    assert str(raised.value).startswith("timestamp: ")
    assert "***REDACTED***" in str(raised.value)
    assert "ghp_" + "c" * 36 not in str(raised.value)


def test_a_bad_dump_mode_is_quoted_masked() -> None:
    token = "ghp_" + "c" * 36
    with pytest.raises(auditbus.ValidationError) as raised:
        DomainEvent(event_type="plan_applied").model_dump(mode=token)
    assert str(raised.value).startswith("mode: ")
    assert "is not a dump mode; accepted: 'python', 'json'" in str(raised.value)
    assert token not in str(raised.value)
