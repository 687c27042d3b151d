"""The audit row's details: Python values written straight to redacted JSON text.

`record_event()` (and the wired bus) walk `details` once into JSON text. What
it stores must be what `redact_dict()` gives for the same data, and, for the
values JSON has no type for, what `record()` stores for the same details.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import json
import math
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from auditbus import REDACTED, AuditService, DomainEvent, redact_dict
from hypothesis import given, settings
from test_redact_properties import nested, plain_scalars, structure_with_secrets

M = REDACTED


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditService]:
    service = AuditService(tmp_path_factory.mktemp("text") / "audit.db", durability="normal")
    yield service
    service.close()


@pytest.fixture(scope="module")
def shared(svc: AuditService) -> Iterator[AuditService]:
    """The module's service, for the property tests (hypothesis runs many examples per call)."""
    _SHARED.append(svc)
    yield svc
    _SHARED.clear()


_SHARED: list[AuditService] = []


def stored(svc: AuditService, details: dict[Any, Any], **fields: Any) -> dict[str, Any]:
    """The details `record_event()` stored for `details`."""
    return dict(entry_of(svc, DomainEvent(event_type="step_completed", details=details, **fields)).details)


def same(a: Any, b: Any) -> bool:
    """Equal, floats to the last bit or two (the row is read back by a parser that is not
    correctly rounded; what is written is exact)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-15, abs_tol=0.0) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(type(a) is type(b) and a == b)


def entry_of(svc: AuditService, event: DomainEvent) -> Any:
    svc.record_event(event)
    svc.flush()
    (entry,) = [e for e in svc.query(limit=5) if e.event_id == event.event_id]
    return entry


def as_json(value: Any) -> Any:
    """What a JSON-native Python value reads back as from the row: tuples become lists,
    NaN and infinities their text (JSON has no number for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


@pytest.mark.usefixtures("shared")
@settings(max_examples=150, deadline=None)
@given(structure_with_secrets())
def test_stored_details_are_what_redact_dict_gives(case: tuple[Any, list[str], list[str]]) -> None:
    data, secrets, markers = case
    row = stored(_SHARED[0], data)
    assert same(row, as_json(redact_dict(data))), (row, redact_dict(data))
    text = json.dumps(row)
    for secret in secrets:
        assert secret not in text
    for marker in markers:
        assert marker in text


@pytest.mark.usefixtures("shared")
@settings(max_examples=100, deadline=None)
@given(nested(plain_scalars))
def test_plain_structures_are_stored_unchanged(data: Any) -> None:
    row = stored(_SHARED[0], {"x": data})
    assert same(row, as_json({"x": data})), row


def test_key_order_is_kept(svc: AuditService) -> None:
    details = {"zeta": 1, "alpha": {"y": 2, "b": 3}, "mid": [1, {"k2": 1, "k1": 2}]}
    assert json.dumps(stored(svc, details)) == json.dumps(details)


def test_sibling_records_pairs_and_rewritten_keys(svc: AuditService) -> None:
    details = {
        "late": {"old_value": "sk-old", "new_value": "sk-new", "key": "llm.api_key"},
        "early": {"key": "llm.api_key", "old_value": "a", "new_value": None},
        "headers": [["Authorization", "Bearer x"], ("X-Api-Key", "abc"), ["Accept", "json"]],
        "asgi": [(b"x-api-key", b"abc123"), (b"accept", b"json")],
        "password=hunter2": 1,
        "password=other": 2,
    }
    assert stored(svc, details) == {
        "late": {"old_value": M, "new_value": M, "key": "llm.api_key"},
        "early": {"key": "llm.api_key", "old_value": M, "new_value": None},
        "headers": [["Authorization", M], ["X-Api-Key", M], ["Accept", "json"]],
        "asgi": [["x-api-key", M], ["accept", "json"]],
        f"password={M}": M,
        f"password={M} #2": M,
    }


def test_argument_lists_parameter_lists_and_kubernetes_secrets(svc: AuditService) -> None:
    secret = {"data": {"url": "cG9zdGdyZXM6Ly91OnBAaC9k"}, "kind": "Secret", "stringData": {"license": "LIC-1"}}
    details = {
        "argv": ("pg_dump", "--password", "hunter2", "--host", "db"),
        "Parameters": [{"ParameterKey": "DBPassword", "ParameterValue": "hunter3"}],
        "manifest": secret,
        "dumped": json.dumps(secret),
    }
    row = stored(svc, details)
    assert row == as_json(redact_dict(details))
    assert row["argv"] == ["pg_dump", "--password", M, "--host", "db"]
    assert row["Parameters"] == [{"ParameterKey": "DBPassword", "ParameterValue": M}]
    assert row["manifest"] == {"data": M, "kind": "Secret", "stringData": M}
    assert json.loads(row["dumped"]) == row["manifest"]


class Setting(enum.Enum):
    API_KEY = "llm.api_key"


def test_a_name_given_as_an_enum_member_masks_its_values(svc: AuditService) -> None:
    details = {"key": Setting.API_KEY, "new_value": "hunter2", "pairs": [(Setting.API_KEY, "hunter3")]}
    assert stored(svc, details) == {"key": "llm.api_key", "new_value": M, "pairs": [["llm.api_key", M]]}


def test_a_sequence_that_is_not_a_list_is_walked_like_one(svc: AuditService) -> None:
    # redact() walks a deque or any Sequence; the row must not fall back to
    # its str(), where a ("password", ...) pair is just text.
    details = {"headers": collections.deque([("password", "hunter2"), ("accept", "json")])}
    assert redact_dict(details)["headers"] == [["password", M], ["accept", "json"]]
    assert stored(svc, details) == {"headers": [["password", M], ["accept", "json"]]}


class Color(enum.Enum):
    RED = "password=hunter2"
    NONE = None


class Level(enum.IntEnum):
    HIGH = 3


class Model:
    def model_dump(self, *, mode: str) -> dict[str, Any]:
        assert mode == "json"
        return {"token": "t-123", "n": 1}


class Weird:
    def __str__(self) -> str:
        return "Weird(api_key=AKIAABCDEFGHIJKLMNOP)"


class BadIter(list[Any]):
    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("no")


ODD: list[dict[Any, Any]] = [
    {"when": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc), "day": dt.date(2024, 5, 1)},
    {"color": Color.RED, "level": Level.HIGH, "none": Color.NONE, "password": Color.NONE},
    {"raw": b"token=abc123 ok", "ba": bytearray(b"plain"), "big": 10**30, "nan": math.nan, "inf": -math.inf},
    {"set": {"only"}, "fs": frozenset(), "tuple": (1, "password=x", 3), "deque": collections.deque([1, 2])},
    {"proxy": types.MappingProxyType({"secret": "s", "ok": 1}), "model": Model(), "weird": Weird()},
    {1: "one", None: "n", 2.5: "x", ("password",): "tuple-key", b"api_key": "bytes-key"},
    {"bad": BadIter([1, 2]), "ok": "yes"},
    {"json": json.dumps({"user": "bob", "password": "x"}), "url": "postgres://u:pw@h/db"},
    {"api_key": Model(), "secret": Weird(), "token": dt.date(2024, 1, 1), "pin": Level.HIGH},
    {"esc": 'line1\nline2 "quoted" back\\slash \x01 \u00e9 \U0001f600', 'k"e\\y': "\t"},
]


@pytest.mark.parametrize("details", ODD, ids=range(len(ODD)))
def test_odd_values_are_stored_as_record_stores_them(svc: AuditService, details: dict[Any, Any]) -> None:
    assert stored(svc, details) == svc.record("step_completed", details=details).details


class Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text")


def test_a_key_whose_text_cannot_be_read_has_its_value_masked_in_the_row(svc: AuditService) -> None:
    details = {Unprintable(): "hunter2", "note": "plain"}
    assert stored(svc, details) == {"<unprintable Unprintable>": M, "note": "plain"}
    assert "hunter2" not in repr(DomainEvent(event_type="step_completed", details=details))


# Text whose secret sits behind unusual spacing or separators.
@pytest.mark.parametrize(
    "text",
    [
        "login ok password\x00=hunter2pass next",
        "password\uff1dhunter2pass",
        "password\uff1ahunter2pass",
        "run --password\xa0hunter2pass",
        "Authorization: Bearer\r\n hunter2pass.0123456789",
    ],
    ids=repr,
)
def test_a_secret_behind_unusual_spacing_in_text_is_not_stored(svc: AuditService, text: str) -> None:
    row = stored(svc, {"msg": text})
    assert "hunter2pass" not in row["msg"]
    assert M in row["msg"]


def test_cycles_and_depth_become_markers(svc: AuditService) -> None:
    loop: dict[str, Any] = {"name": "x"}
    loop["self"] = loop
    deep: list[Any] = []
    cur = deep
    for _ in range(200):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    row = stored(svc, {"loop": loop, "deep": deep})
    assert row["loop"] == {"name": "x", "self": "[circular reference]"}
    assert "[nested too deep]" in json.dumps(row["deep"])


def test_names_are_added_only_when_absent_and_redacted_like_the_rest(svc: AuditService) -> None:
    row = stored(svc, {"actor_name": "given", "n": 1}, actor_name="planner", project_name="password=hunter2")
    assert row["actor_name"] == "given"
    assert row["project_name"] == f"password={M}"
    assert list(row) == ["actor_name", "n", "project_name"]


def test_the_outcome_is_read_from_the_details_and_redacted(svc: AuditService) -> None:
    entry = entry_of(svc, DomainEvent(event_type="auth_success", details={"outcome": Color.RED, "n": 1}))
    assert entry.outcome == entry.details["outcome"] == f"password={M}"
    assert svc.record("auth_success", details={"outcome": "token=abc123"}).outcome == f"token={M}"
    assert entry_of(svc, DomainEvent(event_type="auth_failure")).outcome == "failure"


def test_a_custom_mask_and_user_rules(tmp_path: Path) -> None:
    from auditbus import Redactor  # noqa: PLC0415 - local to the one test that needs it

    redactor = Redactor(extra_keys=["employee_no"], safe_keys=["session_id"], mask='<"x">')
    with AuditService(tmp_path / "a.db", redactor=redactor, durability="normal") as service:
        details = {"EmployeeNo": 7, "session_id": "s-1", "password": '<"x">', "note": "password=a"}
        assert stored(service, details) == {
            "EmployeeNo": '<"x">',
            "session_id": "s-1",
            "password": '<"x">',
            "note": 'password=<"x">',
        }


def test_two_services_with_opposite_rules_on_one_thread_keep_their_own_verdicts(tmp_path: Path) -> None:
    # The per-thread key cache must never serve one rule set's verdict to another.
    from auditbus import ReactiveEventBus, Redactor  # noqa: PLC0415 - local to the tests that need it

    masks_employee = Redactor(extra_keys=["employee_no"], safe_keys=["session_id"])
    masks_session = Redactor(safe_keys=["employee_no"])
    details = {"employee_no": "E1", "session_id": "S1", "note": "employee_no=e session_id=s"}
    want_a = {"employee_no": M, "session_id": "S1", "note": f"employee_no={M} session_id=s"}
    want_b = {"employee_no": "E1", "session_id": M, "note": f"employee_no=e session_id={M}"}
    with (
        AuditService(tmp_path / "a.db", redactor=masks_employee, durability="normal") as a,
        AuditService(tmp_path / "b.db", redactor=masks_session, durability="normal") as b,
    ):
        bus_a, bus_b = ReactiveEventBus(audit=a), ReactiveEventBus(audit=b)
        for _ in range(3):
            assert masks_employee.redact(details) == want_a
            assert masks_session.redact(details) == want_b
            assert stored(a, details) == want_a
            assert stored(b, details) == want_b
            bus_a.emit(DomainEvent(event_type="step_completed", details=details))
            bus_b.emit(DomainEvent(event_type="step_completed", details=details))
        a.flush()
        b.flush()
        assert [dict(e.details) for e in a.query(limit=None)] == [want_a] * 6
        assert [dict(e.details) for e in b.query(limit=None)] == [want_b] * 6


class Creds:
    """A plain object that prints like a dataclass."""

    def __init__(self, user: str, password: list[str]) -> None:
        self.user, self.password = user, password

    def __repr__(self) -> str:
        return f"Creds(user={self.user!r}, password={self.password!r})"


@dataclasses.dataclass
class DataCreds:
    user: str
    password: list[str]


def test_an_object_stored_as_its_text_has_a_secret_container_field_masked_whole(svc: AuditService) -> None:
    # An object with no JSON form: its str() is stored, and the list under
    # `password` in that text is the secret, brackets to brackets.
    row = stored(svc, {"login": Creds("bob", ["hunter2", "x"])})
    assert row == {"login": f"Creds(user='bob', password={M})"}


def test_a_dataclass_is_stored_as_its_fields_with_a_secret_container_field_masked_whole(svc: AuditService) -> None:
    row = stored(svc, {"login": DataCreds("bob", ["hunter2", "x"])})
    assert row == {"login": {"user": "bob", "password": M}}


def test_an_event_recorded_while_details_are_walked_is_stored_whole(svc: AuditService) -> None:
    inner = DomainEvent(event_type="step_completed", details={"inner": "password=hunter2", "n": [1, 2]})

    class RecordsWhilePrinted:
        def __str__(self) -> str:
            svc.record_event(inner)
            return "outer-text"

    outer = stored(svc, {"a": "before", "odd": RecordsWhilePrinted(), "b": ["after", {"token": "t"}]})
    assert outer == {"a": "before", "odd": "outer-text", "b": ["after", {"token": M}]}
    assert dict(entry_of(svc, inner).details) == {"inner": f"password={M}", "n": [1, 2]}
