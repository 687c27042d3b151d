"""AuditService: the legacy contract (run against both implementations) and the new surface."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import os
import pickle
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest.mock import patch

import auditbus
import pytest
from audit_support import (
    DOMAIN_ROWS,
    NOBODY,
    execute,
    legacy_audit,
    package_for_other_users,
    raw_rows,
    readable_folder,
    wait_until,
    write_locked,
    writer_threads,
)
from auditbus import AuditService, DomainEvent, EventType, identity

UTC = timezone.utc


@pytest.fixture(params=["legacy", "auditbus"])
def impl(request: pytest.FixtureRequest) -> Any:
    """The module-like object whose `AuditService` the contract tests drive."""
    if request.param == "legacy":
        return legacy_audit()
    return auditbus


@pytest.fixture
def service(impl: Any, tmp_path: Path) -> Any:
    svc = impl.AuditService(tmp_path / "audit.db")
    yield svc
    svc.close()


# --- the legacy contract, both implementations ---------------------------------------------


def test_record_returns_the_entry(service: Any) -> None:
    before = datetime.now(UTC)
    entry = service.record("plan_applied", plan_id="p1", user_identity="alice", details={"files": 3})
    assert entry.id > 0
    assert entry.event_type == "plan_applied"
    assert (entry.plan_id, entry.user_identity, entry.details) == ("p1", "alice", {"files": 3})
    assert entry.timestamp.tzinfo is not None
    assert before <= entry.timestamp <= datetime.now(UTC)


def test_details_default_to_an_empty_dict(service: Any) -> None:
    assert service.record("auth_success").details == {}
    assert service.query()[0].details == {}


def test_unknown_event_type_is_a_value_error_naming_it(service: Any) -> None:
    with pytest.raises(ValueError, match="no_such_type"):
        service.record("no_such_type")


def test_enum_members_are_accepted(service: Any, impl: Any) -> None:
    member = impl.EventType.AUTH_FAILURE if hasattr(impl, "EventType") else EventType.AUTH_FAILURE
    assert service.record(member).event_type == "auth_failure"


def test_query_is_newest_first_and_filters(service: Any) -> None:
    service.record("plan_applied", plan_id="p1", user_identity="alice")
    service.record("plan_cancelled", plan_id="p2", user_identity="bob")
    service.record("plan_applied", plan_id="p2", user_identity="alice")
    ids = [e.id for e in service.query()]
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == 3
    assert [e.plan_id for e in service.query(event_type="plan_applied")] == ["p2", "p1"]
    assert [e.event_type for e in service.query(plan_id="p2")] == ["plan_applied", "plan_cancelled"]
    assert [e.plan_id for e in service.query(user_identity="alice")] == ["p2", "p1"]
    assert [e.plan_id for e in service.query(user_identity="alice", plan_id="p1")] == ["p1"]
    assert len(service.query(limit=2)) == 2
    assert service.query(user_identity="nobody") == []


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("call", ["query", "count", "iter_entries"])
def test_a_signal_while_the_filters_are_read_is_raised_not_taken_for_a_bad_keyword(tmp_path: Path, call: str) -> None:
    """Ctrl-C or SIGTERM landing as a filter's name is read (`str()` runs pending signal handlers):
    before, its exception was swallowed and the call raised `TypeError: query() got an unexpected
    keyword argument '<unprintable str object>'`; `auditbus tail --follow` stopped by SIGTERM then
    failed with that error instead of ending quietly."""

    class Name(str):
        def __str__(self) -> str:
            os.kill(os.getpid(), signal.SIGUSR1)  # the signal arrives as the name is read
            return str.__str__(self)

    def interrupted(signum: int, frame: object) -> None:
        raise _Interrupted(signum)

    previous = signal.signal(signal.SIGUSR1, interrupted)
    try:
        with AuditService(tmp_path / "a.db") as service:
            with pytest.raises(_Interrupted):
                list(getattr(service, call)(**{Name("event_type"): "auth_failure"}))  # type: ignore[call-overload]
            assert service.count(event_type="auth_failure") == 0
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_query_by_time(service: Any) -> None:
    first = service.record("auth_success")
    second = service.record("auth_failure")
    assert [e.id for e in service.query(since=second.timestamp)] == [second.id]
    assert [e.id for e in service.query(until=first.timestamp)] == [first.id]
    later = second.timestamp + timedelta(days=1)
    assert service.query(since=later) == []


def test_query_by_date_bounds(service: Any) -> None:
    entry = service.record("auth_success")
    day = entry.timestamp.date()
    assert [e.id for e in service.query(since=day)] == [entry.id]  # the day's midnight
    assert service.query(since=day + timedelta(days=1)) == []
    assert service.query(until=day) == []
    assert [e.id for e in service.query(until=day + timedelta(days=1))] == [entry.id]


def test_entries_survive_reopening(impl: Any, tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    svc = impl.AuditService(path)
    entry = svc.record("entity_deleted", plan_id="p9", details={"kind": "file", "n": [1, 2]})
    svc.close()
    again = impl.AuditService(path)
    try:
        (found,) = again.query(event_type="entity_deleted")
        assert (found.id, found.plan_id, found.details) == (entry.id, "p9", {"kind": "file", "n": [1, 2]})
        assert found.timestamp == entry.timestamp
    finally:
        again.close()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_entries_pickle_and_copy(service: Any, protocol: int) -> None:
    recorded = service.record("config_changed", plan_id="p1", user_identity="alice", details={"key": "theme"})
    (read,) = service.query()
    for entry in (recorded, read):
        for twin in (pickle.loads(pickle.dumps(entry, protocol=protocol)), copy.copy(entry), copy.deepcopy(entry)):
            assert type(twin) is type(entry)
            assert twin == entry
            assert repr(twin) == repr(entry)
            assert twin.details == {"key": "theme"}


def test_ids_increase(service: Any) -> None:
    ids = [service.record("session_created").id for _ in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_valid_event_types_cover_the_legacy_set(impl: Any) -> None:
    legacy = legacy_audit()
    assert legacy.VALID_EVENT_TYPES <= auditbus.VALID_EVENT_TYPES
    assert frozenset(m.value for m in EventType) == auditbus.VALID_EVENT_TYPES
    assert [t.value for t in auditbus.SECURITY_EVENT_TYPES] == sorted(
        legacy.VALID_EVENT_TYPES, key=[t.value for t in auditbus.SECURITY_EVENT_TYPES].index
    )
    assert {t.value for t in auditbus.SECURITY_EVENT_TYPES} == set(legacy.VALID_EVENT_TYPES)
    assert not set(auditbus.AUDIT_LIFECYCLE_EVENT_TYPES) & auditbus.VALID_EVENT_TYPES


# --- auditbus only -----------------------------------------------------------------------------


@pytest.fixture
def svc(tmp_path: Path) -> Any:
    s = AuditService(tmp_path / "audit.db")
    yield s
    s.close()


def test_every_event_type_is_accepted_by_record(svc: AuditService) -> None:
    for member in EventType:
        assert svc.record(member.value).event_type == member.value


def test_record_event_keeps_the_events_own_fields(svc: AuditService) -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    event = DomainEvent(
        event_type=EventType.CONFIG_CHANGED,
        timestamp=when,
        plan_id="p1",
        project_name="alpha",
        actor_name="planner",
        session_id="s-1",
        user_identity="alice",
        details={"key": "theme", "new_value": "dark"},
    )
    svc.record_event(event)
    svc.flush()
    (entry,) = svc.query()
    assert entry.timestamp == when  # the event's time, not the time of writing (legacy defect L2)
    assert entry.recorded_at is not None
    assert entry.recorded_at > when
    assert (entry.event_id, entry.actor_name, entry.project_name, entry.session_id) == (
        event.event_id,
        "planner",
        "alpha",
        "s-1",
    )
    assert entry.details["key"] == "theme"
    # Like the legacy subscriber, the names are also in details for legacy readers.
    assert entry.details["actor_name"] == "planner"
    assert entry.source is not None
    assert entry.source["pid"] > 0
    assert entry.chain_hash is not None
    assert len(entry.chain_hash) == 64


LITERAL_NAMES = ["file:x.db", "file:y.db?mode=ro", "file:z.db#frag", "a#b.db", "c%41.db", "q?x.db"]


@pytest.mark.parametrize("name", LITERAL_NAMES)
def test_a_path_is_a_file_name_never_an_sqlite_uri_in_both_modes(tmp_path: Path, name: str, monkeypatch: Any) -> None:
    # As the legacy's sqlite3.connect(path): a path that reads as an SQLite URI is still the file of that name.
    monkeypatch.chdir(tmp_path)
    with AuditService(name) as svc:
        svc.record("auth_success", user_identity="alice")
    # Before, "file:x.db" wrote x.db (and "file:y.db?mode=ro" could not open), while
    # read_only=True looked for the file named "file:x.db".
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    with AuditService(name, read_only=True) as reader:
        assert [e.user_identity for e in reader.query(event_type="auth_success")] == ["alice"]
    with AuditService(tmp_path / name) as again:
        assert again.count(event_type="auth_success") == 1
    # A reader leaves SQLite's -wal and -shm files beside the trail; nothing else was made.
    assert {p.name for p in tmp_path.iterdir()} - {name + "-wal", name + "-shm"} == {name}


def test_the_services_own_rows_name_the_identity_in_force_at_the_call_that_wrote_them(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with identity("opener"):
        svc = AuditService(path)
    svc.record("auth_success")
    with identity("purger"):
        svc.purge("2000-01-01T00:00:00Z")
    with identity("closer"):
        svc.close()
    AuditService(path).close()
    own = [(r["event_type"], r["user_identity"]) for r in raw_rows(path, "event_type LIKE 'audit_%'")]
    # Before, none of them named anyone: who opened, purged or closed the trail was not on it.
    assert own == [
        ("audit_started", "opener"),
        ("audit_purged", "purger"),
        ("audit_stopped", "closer"),
        ("audit_started", None),
        ("audit_stopped", None),
    ]


def test_no_secret_reaches_disk(svc: AuditService, tmp_path: Path) -> None:
    entry = svc.record("auth_failure", details={"password": "hunter2-plain", "user": "alice"})
    svc.record_event(DomainEvent(event_type="config_changed", details={"api_key": "sk-live-abcdef123456"}))
    svc.flush()
    # What record() returns is what was stored: redacted.
    assert entry.details["password"] != "hunter2-plain"
    assert entry.details["user"] == "alice"
    for suffix in ("", "-wal"):
        file = Path(str(tmp_path / "audit.db") + suffix)
        if file.exists():
            # Read by another process: closing a descriptor of the open trail
            # here would drop this process's SQLite locks on it.
            data = subprocess.run(
                [sys.executable, "-c", "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())", file],
                capture_output=True,
                check=True,
            ).stdout
            assert b"hunter2-plain" not in data
            assert b"sk-live-abcdef123456" not in data
    stored = [json.loads(r["details"]) for r in raw_rows(tmp_path / "audit.db", DOMAIN_ROWS)]
    assert stored[0]["password"] == stored[1]["api_key"] != "hunter2-plain"


@pytest.mark.parametrize("method", ["query", "count", "iter_entries"])
def test_an_unknown_filter_names_the_accepted_ones(svc: AuditService, method: str) -> None:
    with pytest.raises(TypeError, match=rf"{method}\(\) got an unexpected keyword argument 'user'; accepted filters: "):
        getattr(svc, method)(user="alice")


# A GitHub token shape: a secret pasted into the wrong argument.
TOKEN = "ghp_" + "A1b2C3d4" * 4 + "E5f6"


class _FailingZone(tzinfo):
    """A tzinfo whose lookup fails quoting a credential, as a misconfigured zone database might."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise ValueError(f"zone server https://tz:hunter22@tz.example.com refused {TOKEN}")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda svc: svc.query(event_type=TOKEN), "event_type"),
        (lambda svc: svc.count(event_type=["plan_applied", f"password={TOKEN}"]), "event_type"),
        (lambda svc: svc.query(order=TOKEN), "order"),
        (lambda svc: svc.count(order=TOKEN), "order"),
        (lambda svc: svc.query(after_id=TOKEN), "after_id"),
        (lambda svc: svc.query(since=datetime(2025, 1, 1, tzinfo=_FailingZone())), "since"),
        (lambda svc: AuditService(svc.db_path + "-2", durability=TOKEN), "durability"),
    ],
    ids=["event_type", "event_type-list", "order", "count-order", "after_id", "since-tzinfo", "durability"],
)
def test_a_rejected_argument_is_quoted_with_its_secrets_masked(svc: AuditService, call: Any, field: str) -> None:
    """Callers log these errors: a token given to the wrong argument must not reach the log line."""
    with pytest.raises((ValueError, TypeError)) as caught:
        call(svc)
    text = str(caught.value)
    assert text.startswith(f"{field}: ")
    assert "***REDACTED***" in text
    assert TOKEN not in text
    assert "hunter22" not in text


def test_filters_combine_the_same_way_in_query_count_and_iteration(svc: AuditService) -> None:
    for n, user in enumerate(["alice", "bob", "alice"]):
        svc.record_event(DomainEvent(event_type=EventType.PLAN_APPLIED, plan_id=f"p{n}", user_identity=user))
    filters = {"event_type": ["plan_applied"], "user_identity": "alice", "after_id": 0}
    ids = [e.id for e in svc.query(**filters, order="asc")]
    assert len(ids) == 2
    assert svc.count(**filters) == 2
    assert [e.id for e in svc.iter_entries(**filters, batch_size=1)] == ids


def test_numbers_read_back_exactly(svc: AuditService) -> None:
    rng = random.Random(7)
    values = {
        "sum": 0.1 + 0.2,
        "third": 1 / 3,
        "big": 2**62,
        "ints": [0, -1, -(2**63), 2**63 - 1, 2**64 - 1],
        "tiny": 5e-324,
        "many": [rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-20, 20) for _ in range(2000)],
    }
    svc.record_event(DomainEvent(event_type=EventType.STEP_COMPLETED, plan_id="floats", details=values))
    assert svc.query(plan_id="floats")[0].details == values


def test_the_record_timestamp_reads_pythons_clock_so_a_frozen_clock_freezes_it(
    svc: AuditService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The legacy `record()` stamped `datetime.now(UTC)`; freezegun and time-machine patch `time.time_ns`."""
    monkeypatch.setattr(time, "time_ns", lambda: 1_704_164_645_678_901_234)
    expected = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert svc.record("auth_success").timestamp == expected
    monkeypatch.undo()
    assert svc.query(event_type="auth_success")[0].timestamp == expected


# --- deliberate differences from the legacy service (README, "Deliberate differences") ---------


def test_an_unknown_event_type_filter_raises_where_the_legacy_matched_nothing(tmp_path: Path) -> None:
    legacy = legacy_audit().AuditService(tmp_path / "legacy.db")
    legacy.record("plan_applied")
    assert legacy.query(event_type="plan_aplied") == []  # a typo reads as "no such rows"
    legacy.close()
    with (
        AuditService(tmp_path / "a.db") as svc,
        pytest.raises(ValueError, match=r"plan_aplied.*accepted: plan_created"),
    ):
        svc.query(event_type="plan_aplied")


@dataclasses.dataclass
class _Credentials:
    user: str
    password: str


def test_a_dataclass_in_details_is_stored_as_its_fields_redacted_where_the_legacy_wrote_its_str(
    tmp_path: Path,
) -> None:
    held = _Credentials("alice", "hunter2hunter2")
    legacy = legacy_audit().AuditService(tmp_path / "legacy.db")
    legacy.record("config_changed", details={"held": held})
    assert legacy.query()[0].details == {"held": str(held)}  # json.dumps(default=str)
    legacy.close()
    with AuditService(tmp_path / "a.db") as svc:
        svc.record("config_changed", details={"held": held, "listed": [held]})
        stored = {"user": "alice", "password": auditbus.REDACTED}
        assert svc.query(event_type="config_changed")[0].details == {"held": stored, "listed": [stored]}
    assert b"hunter2hunter2" not in (tmp_path / "a.db").read_bytes()


def test_record_returns_what_was_stored_where_the_legacy_returned_the_callers_details(tmp_path: Path) -> None:
    details = {"password": "hunter2hunter2", "amount": Decimal("1.50")}
    legacy = legacy_audit().AuditService(tmp_path / "legacy.db")
    entry = legacy.record(EventType.CONFIG_CHANGED, details=details)
    assert entry.details is details  # the caller's own dict: secret and Decimal as given
    assert entry.event_type is EventType.CONFIG_CHANGED
    legacy.close()
    with AuditService(tmp_path / "a.db") as svc:
        entry = svc.record(EventType.CONFIG_CHANGED, details=details)
        assert entry.details == {"password": auditbus.REDACTED, "amount": "1.50"}
        assert type(entry.event_type) is str
        assert entry == svc.query(event_type="config_changed")[0]


def test_record_and_query_refuse_values_the_legacy_handed_to_sqlite(tmp_path: Path) -> None:
    """The legacy service bound whatever it got: an int id was stored, and matched, as text."""
    legacy = legacy_audit().AuditService(tmp_path / "legacy.db")
    legacy.record("plan_applied", plan_id=5, user_identity=7)  # type: ignore[arg-type]
    legacy.record("plan_applied", details=["not", "a", "dict"])  # type: ignore[arg-type]
    assert [(e.plan_id, e.user_identity) for e in legacy.query(plan_id=5)] == [("5", "7")]  # type: ignore[arg-type]
    assert len(legacy.query(limit="5")) == len(legacy.query(limit=2.0)) == 2  # type: ignore[arg-type]
    legacy.close()
    with AuditService(tmp_path / "a.db") as svc:
        for call, error in [
            (lambda: svc.record("plan_applied", plan_id=5), TypeError),  # type: ignore[arg-type]
            (lambda: svc.record("plan_applied", user_identity=7), TypeError),  # type: ignore[arg-type]
            (lambda: svc.record("plan_applied", details=["not", "a", "dict"]), ValueError),  # type: ignore[arg-type]
            (lambda: svc.query(plan_id=5), TypeError),  # type: ignore[arg-type]
            (lambda: svc.query(limit="5"), TypeError),  # type: ignore[arg-type]
            (lambda: svc.query(limit=2.0), TypeError),  # type: ignore[arg-type]
        ]:
            with pytest.raises(error):
                call()
        assert svc.count(event_type="plan_applied") == 0


def test_errors_are_audit_errors_where_the_legacy_raised_sqlite3_errors(tmp_path: Path) -> None:
    missing = tmp_path / "no such folder" / "audit.db"
    legacy_service = legacy_audit().AuditService
    with pytest.raises(sqlite3.OperationalError):
        legacy_service(missing)
    legacy = legacy_service(tmp_path / "legacy.db")
    legacy.close()
    with pytest.raises(sqlite3.ProgrammingError):
        legacy.record("plan_applied")
    with pytest.raises(auditbus.AuditError) as opening:
        AuditService(missing)
    svc = AuditService(tmp_path / "a.db")
    svc.close()
    with pytest.raises(auditbus.ClosedError) as recording:
        svc.record("plan_applied")
    assert not isinstance(opening.value, sqlite3.Error)
    assert not isinstance(recording.value, sqlite3.Error)


def test_a_negative_limit_raises_where_the_legacy_returned_every_row(tmp_path: Path) -> None:
    legacy = legacy_audit().AuditService(tmp_path / "legacy.db")
    for _ in range(3):
        legacy.record("plan_applied")
    assert len(legacy.query(limit=-1)) == 3  # SQLite's LIMIT -1: no limit
    legacy.close()
    with AuditService(tmp_path / "a.db") as svc:
        for _ in range(3):
            svc.record("plan_applied")
        with pytest.raises(ValueError, match="limit: expected an int >= 0 or None, got -1"):
            svc.query(limit=-1)
        assert len(svc.query(limit=None)) == 3


def test_an_entry_is_a_frozen_class_with_to_dict_where_the_legacy_was_a_dataclass(tmp_path: Path) -> None:
    legacy = legacy_audit().AuditService(tmp_path / "legacy.db")
    old = legacy.record("plan_applied", plan_id="p1")
    legacy.close()
    assert dataclasses.asdict(old)["plan_id"] == "p1"
    with AuditService(tmp_path / "a.db") as svc:
        entry = svc.record("plan_applied", plan_id="p1")
    with pytest.raises(TypeError, match="dataclass"):
        dataclasses.asdict(entry)
    fields = entry.to_dict()
    assert list(fields)[:6] == [f.name for f in dataclasses.fields(old)]
    assert fields["plan_id"] == "p1"
    assert fields["event_id"] == entry.event_id


@pytest.mark.parametrize("column", ["timestamp", "recorded_at"])
def test_an_entry_built_with_a_time_no_utc_datetime_holds_is_refused_at_construction(column: str) -> None:
    # 9999-12-31T23:00-02:00 is in year 10000 in UTC: the entry must not be one whose every read raises.
    beyond = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2)))
    times = {"timestamp": datetime(2026, 1, 1, tzinfo=UTC), column: beyond}
    with pytest.raises(auditbus.ValidationError, match=rf"{column}: .*outside the years 1 to 9999"):
        auditbus.AuditEntry(1, times["timestamp"], "plan_applied", recorded_at=times.get("recorded_at"))


def test_time_bounds_in_another_offset_are_instants_where_the_legacy_compared_their_text(tmp_path: Path) -> None:
    paris = timezone(timedelta(hours=2))
    legacy = legacy_audit().AuditService(tmp_path / "legacy.db")
    first, second = legacy.record("plan_applied"), legacy.record("plan_applied")
    # The bound's text ("...T19:..+02:00") sorts after the rows' ("...T17:..+00:00"): the row is missed.
    assert legacy.query(since=first.timestamp.astimezone(paris)) == []
    legacy.close()
    with AuditService(tmp_path / "a.db") as svc:
        first, second = svc.record("plan_applied"), svc.record("plan_applied")
        assert [e.id for e in svc.query(since=first.timestamp.astimezone(paris))] == [second.id, first.id]
        assert [e.id for e in svc.query(until=first.timestamp.astimezone(paris))] == [first.id]


def test_details_the_legacy_wrote_read_back_as_the_legacy_reads_them(tmp_path: Path) -> None:
    # The legacy json.dumps writes NaN/Infinity tokens, integers of any size and lone surrogates.
    path = tmp_path / "legacy.db"
    legacy = legacy_audit().AuditService(path)
    details = {
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": float("-inf"),
        "huge": 2**64,
        "neg": -(2**70),
        "float": 1.8446744073709552e19,
        "lone": "\ud800",
        "n": [1, 2.5, None, True],
    }
    legacy.record("plan_applied", plan_id="odd", details=details)
    (expected,) = legacy.query()
    legacy.close()
    with AuditService(path) as svc:
        (entry,) = svc.query(plan_id="odd")
        assert json.dumps(entry.details) == json.dumps(expected.details) == json.dumps(details)
        assert [type(entry.details[k]) for k in details] == [type(v) for v in details.values()]


def test_lone_surrogates_in_details_are_stored_as_the_legacy_stores_them(tmp_path: Path) -> None:
    # A file name os.fsdecode() gives for bytes that are not UTF-8; the legacy json.dumps escapes it.
    details = {"file": os.fsdecode(b"report-\xff.txt"), "parts": ['\ud800 "q"', "ok"], "at": {"dir": "\udc80\n"}}
    legacy = legacy_audit().AuditService(tmp_path / "legacy.db")
    legacy.record("plan_applied", details=details)
    (expected,) = legacy.query()
    legacy.close()
    path = tmp_path / "a.db"
    with AuditService(path) as svc:
        recorded = svc.record("plan_applied", plan_id="record", details=details)
        with auditbus.ReactiveEventBus(audit=svc) as bus:
            bus.emit(DomainEvent(event_type=EventType.PLAN_APPLIED, plan_id="emit", details=details))
        svc.flush()
        rows = {e.plan_id: e.details for e in svc.query(event_type="plan_applied")}
        assert svc.verify().ok
    assert recorded.details == rows["record"] == rows["emit"] == expected.details == details
    db = sqlite3.connect(path)
    stored = [row[0] for row in db.execute("SELECT details FROM audit_log WHERE plan_id IS NOT NULL")]
    db.close()
    assert [json.loads(text) for text in stored] == [details, details]
    assert all("\\udcff" in text and "\ufffd" not in text for text in stored)


def test_a_lone_surrogate_in_a_details_key_is_stored_as_the_legacy_stores_it(tmp_path: Path) -> None:
    details = {os.fsdecode(b"report-\xff.txt"): "uploaded", "at": {"\ud800": 1}}
    legacy = legacy_audit().AuditService(tmp_path / "legacy.db")
    legacy.record("plan_applied", details=details)
    (expected,) = legacy.query()
    legacy.close()
    with AuditService(tmp_path / "a.db") as svc:
        recorded = svc.record("plan_applied", details=details)
        (entry,) = svc.query(event_type="plan_applied")
        assert svc.verify().ok
    assert recorded.details == entry.details == expected.details == details


def test_numbers_json_cannot_hold_are_stored_as_text(tmp_path: Path) -> None:
    details = {"huge": 2**64, "nan": float("nan"), "inf": float("-inf")}
    legacy = legacy_audit().AuditService(tmp_path / "legacy.db")
    legacy.record("plan_applied", details=details)
    stored = legacy.query()[0].details
    assert stored["huge"] == 2**64
    assert stored["nan"] != stored["nan"]  # written as the non-standard JSON token NaN
    legacy.close()
    with AuditService(tmp_path / "a.db") as svc:
        svc.record("plan_applied", details=details)
        assert svc.query()[0].details == {"huge": "18446744073709551616", "nan": "nan", "inf": "-inf"}
    # The stored text is standard JSON: a strict parser reads it.
    text = raw_rows(tmp_path / "a.db", "event_type = 'plan_applied'")[0]["details"]
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))


def test_details_nested_deeper_than_64_levels_are_cut_where_the_legacy_kept_them(tmp_path: Path) -> None:
    details: dict[str, Any] = {}
    inner = details
    for _ in range(80):
        inner["down"] = {}
        inner = inner["down"]
    inner["leaf"] = 1

    def depth(value: Any) -> tuple[int, Any]:
        levels = 0
        while isinstance(value, dict) and "down" in value:
            value, levels = value["down"], levels + 1
        return levels, value

    legacy = legacy_audit().AuditService(tmp_path / "legacy.db")
    assert depth(legacy.record("plan_applied", details=details).details) == (80, {"leaf": 1})
    legacy.close()
    with AuditService(tmp_path / "a.db") as svc:
        svc.record("plan_applied", details=details)
        assert depth(svc.query()[0].details) == (64, "[nested too deep]")


def test_keys_that_need_escaping_read_back_exactly(svc: AuditService) -> None:
    # Twice each: the second walk takes its keys from the key cache.
    details = {'qu"ote': 1, "back\\slash": 2, "new\nline": 3, "bell\x07": 4, "ключ": 5, "plain": 6}
    for plan in ("first", "second"):
        svc.record_event(DomainEvent(event_type=EventType.STEP_COMPLETED, plan_id=plan, details=details))
        assert svc.query(plan_id=plan)[0].details == details


def test_details_are_read_when_first_asked_for_and_a_damaged_row_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path) as svc:
        entry = svc.record("step_completed", plan_id="ok", details={"n": [1, 2]})
        assert entry.details == {"n": [1, 2]}
        assert entry.details is entry.details  # parsed once, then the same object
        bad = svc.record("step_completed", plan_id="bad", details={"n": 1})
    execute(path, "UPDATE audit_log SET details = '{not json' WHERE id = ?", (bad.id,))
    with AuditService(path) as svc:
        (row,) = svc.query(plan_id="bad")
        assert (row.id, row.plan_id) == (bad.id, "bad")  # the other fields read fine
        with pytest.raises(auditbus.AuditError, match=rf"audit row {bad.id}: details are not valid JSON"):
            _ = row.details
        assert svc.query(plan_id="ok")[0].details == {"n": [1, 2]}


def test_an_entry_names_the_columns_whose_stored_bytes_are_not_utf8(tmp_path: Path) -> None:
    # Read with U+FFFD in place of the bad bytes: the entry says which values are not as stored.
    path = tmp_path / "a.db"
    with AuditService(path) as svc:
        edited = svc.record("step_completed", plan_id="edited", user_identity="alice")
        kept = svc.record("step_completed", plan_id="kept\ufffd")
    execute(path, "UPDATE audit_log SET user_identity = CAST(X'616c6963ff' AS TEXT) WHERE id = ?", (edited.id,))
    with AuditService(path, read_only=True) as svc:
        rows = {row.id: row for row in svc.query(event_type="step_completed")}
    assert rows[edited.id].user_identity == "alic\ufffd"
    assert rows[edited.id].not_utf8 == ("user_identity",)
    assert rows[kept.id].not_utf8 == ()  # a stored U+FFFD is UTF-8
    assert kept.not_utf8 == ()
    assert pickle.loads(pickle.dumps(rows[edited.id])).not_utf8 == ("user_identity",)
    assert auditbus.AuditEntry(1, datetime.now(UTC), "step_completed").not_utf8 == ()


class _Held:
    """An object a caller keeps in an entry's details, holding the entry back."""

    def __init__(self, entry: object) -> None:
        self.entry = entry


@pytest.mark.parametrize("made", ["read", "built", "unpickled"])
def test_an_entry_held_by_its_own_details_is_freed_by_the_garbage_collector(tmp_path: Path, made: str) -> None:
    # The details dict is the caller's to change (a parsed model cached beside the entry, the entry
    # itself): the cycle through it must be one the collector sees, or each such entry lives forever.
    probes: list[weakref.ref[_Held]] = []
    with AuditService(tmp_path / "a.db") as svc:
        svc.record("step_completed", details={"n": 1})
        for _ in range(3):
            (entry,) = svc.query(event_type="step_completed")
            if made == "built":
                entry = auditbus.AuditEntry(1, datetime.now(UTC), "step_completed", details={"n": 1})
            elif made == "unpickled":
                entry = pickle.loads(pickle.dumps(entry))
            held = _Held(entry)
            entry.details["held"] = held
            probes.append(weakref.ref(held))
            del entry, held
    gc.collect()
    assert [p() for p in probes] == [None, None, None]


def test_an_entry_whose_details_are_not_json_pickles_as_stored(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path) as svc:
        bad = svc.record("step_completed", plan_id="bad")
    execute(path, "UPDATE audit_log SET details = '{not json' WHERE id = ?", (bad.id,))
    with AuditService(path) as svc:
        (row,) = svc.query(plan_id="bad")
    twin = pickle.loads(pickle.dumps(row))
    assert (twin.id, twin.plan_id, twin.stored_details, twin.source) == (row.id, "bad", "{not json", row.source)
    assert twin == row  # equality and repr use the stored text, never raising
    assert "details=<unreadable: '{not json'>" in repr(twin)
    with pytest.raises(auditbus.AuditError, match=rf"audit row {bad.id}: details are not valid JSON"):
        _ = twin.details


UNREADABLE_TIMES = [
    ("timestamp", "garbage", r'"garbage"'),
    ("timestamp", "", r'""'),
    ("timestamp", "2026-05-01T00:00:00Z\nforged row", r'"2026-05-01T00:00:00Z\\nforged row"'),
    ("recorded_at", "garbage\x1b[2J", r'"garbage\\u\{1b\}\[2J"'),
]


@pytest.mark.parametrize(("column", "text", "shown"), UNREADABLE_TIMES)
def test_a_row_whose_time_is_not_a_timestamp_is_returned_and_names_itself(
    tmp_path: Path, column: str, text: str, shown: str
) -> None:
    path = tmp_path / "a.db"
    with AuditService(path) as svc:
        ids = [svc.record("step_completed", plan_id=f"p{i}").id for i in range(3)]
    execute(path, f"UPDATE audit_log SET {column} = ? WHERE id = ?", (text, ids[1]))
    with AuditService(path) as svc:
        rows = svc.query(event_type="step_completed", order="asc")
        assert [row.id for row in rows] == ids  # one bad row hides no other
        assert [row.id for row in svc.iter_entries(event_type="step_completed", batch_size=2)] == ids
        assert svc.count(event_type="step_completed") == 3
        report = svc.verify()
    assert (report.ok, report.first_bad_id) == (False, ids[1])  # the edit breaks the chain there
    good, bad = rows[0], rows[1]
    assert isinstance(good.timestamp, datetime)
    assert isinstance(good.recorded_at, datetime)
    assert good.unreadable_timestamp is None
    assert good.unreadable_recorded_at is None
    message = rf"audit row {ids[1]}: column {column} holds {shown}, which is not an ISO-8601 timestamp"
    with pytest.raises(auditbus.AuditError, match=message):
        _ = getattr(bad, column)
    assert getattr(bad, f"unreadable_{column}") == text
    other = "recorded_at" if column == "timestamp" else "timestamp"
    assert isinstance(getattr(bad, other), datetime)  # the other fields read fine
    assert (bad.plan_id, bad.details) == ("p1", {})
    # repr never raises and shows the stored text escaped; to_dict raises like the field.
    assert f"{column}=<unreadable: {text!r}>" in repr(bad)
    with pytest.raises(auditbus.AuditError, match=message):
        bad.to_dict()
    # Equality compares the stored text; pickling and copying keep it.
    twin = pickle.loads(pickle.dumps(bad))
    assert twin == bad
    assert copy.deepcopy(bad) == bad
    assert bad != good
    assert getattr(twin, f"unreadable_{column}") == text
    with pytest.raises(auditbus.AuditError, match=message):
        _ = getattr(twin, column)


def test_the_row_and_redact_dict_apply_the_sibling_rule_alike(svc: AuditService) -> None:
    from test_redact import SIBLING_CASES  # noqa: PLC0415 - the cases live with the redaction tests

    for i, (data, expected) in enumerate(SIBLING_CASES):
        svc.record_event(DomainEvent(event_type=EventType.CONFIG_CHANGED, plan_id=f"s{i}", details=data))
        assert svc.query(plan_id=f"s{i}")[0].details == expected


def test_outcome_column(svc: AuditService) -> None:
    svc.record("auth_failure")
    svc.record("auth_success")
    svc.record("config_changed", details={"outcome": "denied"})
    svc.record("config_changed")
    assert [e.outcome for e in svc.query(order="asc")] == ["failure", "success", "denied", None]
    assert [e.event_type for e in svc.query(outcome="failure")] == ["auth_failure"]


def test_duplicate_event_id_is_stored_once(svc: AuditService) -> None:
    event = DomainEvent(event_type="plan_applied", plan_id="p1")
    svc.record_event(event)
    svc.record_event(event)
    svc.flush()
    svc.record_event(event)
    svc.flush()
    assert svc.count() == 1
    assert svc.stats()["duplicates"] == 2
    assert svc.verify().ok


def events(n: int) -> list[DomainEvent]:
    return [
        DomainEvent(
            event_type=("plan_applied", "auth_failure", "session_created")[i % 3],
            plan_id=f"p{i % 4}",
            user_identity=("alice", "bob")[i % 2],
            actor_name=("planner", "applier")[i % 2],
            session_id=f"s{i % 5}",
            project_name=("alpha", "beta", "gamma")[i % 3],
            details={"i": i},
        )
        for i in range(n)
    ]


def test_auditor_filters(svc: AuditService) -> None:
    for event in events(30):
        svc.record_event(event)
    svc.flush()

    def idx(entries: list[auditbus.AuditEntry]) -> list[int]:
        return [e.details["i"] for e in entries]

    assert idx(svc.query(actor_name="planner", order="asc", limit=None)) == list(range(0, 30, 2))
    assert idx(svc.query(session_id="s3", order="asc")) == [3, 8, 13, 18, 23, 28]
    assert idx(svc.query(project_name="gamma", order="asc")) == list(range(2, 30, 3))
    both = svc.query(event_type=["plan_applied", EventType.AUTH_FAILURE], limit=None)
    assert sorted(idx(both)) == [i for i in range(30) if i % 3 != 2]
    assert idx(svc.query(limit=3)) == [29, 28, 27]
    assert idx(svc.query(limit=3, offset=3)) == [26, 25, 24]
    cursor = svc.query(limit=3)[-1].id
    assert idx(svc.query(limit=3, after_id=cursor)) == [26, 25, 24]
    first = svc.query(order="asc", limit=2)
    assert idx(first) == [0, 1]
    assert idx(svc.query(order="asc", limit=2, after_id=first[-1].id)) == [2, 3]
    assert svc.count() == 30
    assert svc.count(user_identity="bob", session_id="s1") == 3
    assert svc.count(event_type=("auth_failure",)) == 10
    # count() counts what a query in the same order reads past the cursor (ascending by default).
    assert svc.count(after_id=cursor) == len(svc.query(after_id=cursor, order="asc", limit=None)) == 2
    assert svc.count(after_id=cursor, order="desc") == len(svc.query(after_id=cursor, limit=None)) == 27
    assert svc.count(after_id=cursor, order="asc", user_identity="bob") == 1


def test_iter_entries_streams_every_match(svc: AuditService) -> None:
    for event in events(25):
        svc.record_event(event)
    svc.flush()
    assert [e.details["i"] for e in svc.iter_entries(batch_size=4)] == list(range(25))
    assert [e.details["i"] for e in svc.iter_entries(order="desc", batch_size=7)] == list(range(24, -1, -1))
    assert [e.details["i"] for e in svc.iter_entries(user_identity="bob", batch_size=5)] == list(range(1, 25, 2))
    assert list(svc.iter_entries(user_identity="nobody")) == []


# Timestamps as other writers store them (an import, the sqlite3 tool, another service):
# other offsets, 'Z', a space, no offset, milliseconds, a bare date.
FOREIGN_STAMPS = {
    "ours": "2026-01-01T10:00:00+00:00",
    "fraction": "2026-01-01T10:00:00.500000+00:00",
    "naive": "2026-01-01T10:30:00",
    "east": "2026-01-01T12:45:00+02:00",
    "zulu": "2026-01-01T11:00:00Z",
    "space": "2026-01-01 11:15:00+00:00",
    "west": "2026-01-01T09:00:00-05:00",
    "millis": "2026-01-01T11:30:00.123+00:00",
    "date": "2025-12-31",
    # Every form `isoformat()` writes, which the legacy service reads back with `fromisoformat`:
    # any separator, hours or minutes only, an offset with seconds.
    "hours": "2026-01-01T13+02:00",
    "minutes": "2026-01-01 11:45",
    "separator": "2026-01-01_11:50:00",
    "offset_seconds": "2026-01-01T12:40:30+01:00:30",
    "zero_fraction": "2026-01-01T11:35:00.000000+00:00",  # isoformat(timespec="microseconds")
    # Other writers' forms Python 3.11's `fromisoformat` reads: PostgreSQL's offset of hours, a decimal comma.
    "postgres": "2026-01-01 16:20:00.25+05",
    "comma": "2026-01-01T11:25:00,25+00:00",
}


def test_since_and_until_compare_instants_whatever_text_a_row_holds(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    AuditService(path).close()
    for plan, stamp in FOREIGN_STAMPS.items():
        execute(
            path,
            "INSERT INTO audit_log (timestamp, event_type, plan_id, details) VALUES (?, 'plan_applied', ?, '{}')",
            (stamp, plan),
        )
    with AuditService(path, read_only=True) as svc:
        when = {e.plan_id: e.timestamp for e in svc.query(limit=None)}
        for plan, stamp in FOREIGN_STAMPS.items():
            if sys.version_info < (3, 11) and plan in ("postgres", "comma"):
                continue
            legacy = datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # how the legacy service reads it
            assert when[plan] == (legacy if legacy.tzinfo else legacy.replace(tzinfo=UTC)), stamp
        assert when["east"] == datetime(2026, 1, 1, 10, 45, tzinfo=UTC)
        assert when["postgres"] == datetime(2026, 1, 1, 11, 20, 0, 250000, tzinfo=UTC)
        assert when["west"] == datetime(2026, 1, 1, 14, 0, tzinfo=UTC)
        # Every row's own instant as a bound (the boundary is inclusive), and instants between them.
        bounds = sorted({*when.values(), *(t + timedelta(minutes=1) for t in when.values())})
        for bound in bounds:
            for given in (bound, bound.astimezone(timezone(timedelta(hours=-8))), bound.isoformat()):
                newer = sorted(plan for plan, t in when.items() if t >= bound)
                older = sorted(plan for plan, t in when.items() if t <= bound)
                assert sorted(e.plan_id for e in svc.query(since=given, limit=None)) == newer, given
                assert sorted(e.plan_id for e in svc.query(until=given, limit=None)) == older, given
                assert svc.count(since=given) == len(newer), given
                assert [e.plan_id for e in svc.iter_entries(until=given)] == [
                    plan for plan in FOREIGN_STAMPS if plan in older
                ], given


# Text that is no instant a datetime holds, though shaped like one: no such
# day or hour, an instant outside the years 1 to 9999 once in UTC, or a
# timestamp with space around it, a date not written YYYY-MM-DD or a leap
# second (which `fromisoformat` refuses too).
NO_INSTANT_STAMPS = [
    "2026-02-30T12:00:00+00:00",
    "2026-01-01T25:00:00+00:00",
    "0000-12-31T23:00:00+00:00",
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:00:00-02:00",
    " 2026-01-01T10:30:00+00:00",
    "2026-01-01T10:30:00+00:00\n",
    "+2026-01-01T10:30:00+00:00",
    "2026-1-1T10:30:00+00:00",
    "2016-12-31T23:59:60Z",
    "2016-12-31T23:59:60.5+00:00",
]


@pytest.mark.parametrize("stamp", NO_INSTANT_STAMPS)
def test_a_row_the_read_cannot_place_in_time_no_filter_or_purge_places_either(tmp_path: Path, stamp: str) -> None:
    path = tmp_path / "audit.db"
    legacy_audit().AuditService(path).close()
    for plan, text in [("before", "2026-01-01T10:00:00+00:00"), ("odd", stamp), ("after", "2026-01-01T11:00:00+00:00")]:
        execute(
            path,
            "INSERT INTO audit_log (timestamp, event_type, plan_id, details) VALUES (?, 'plan_applied', ?, '{}')",
            (text, plan),
        )
    with AuditService(path) as svc:
        (odd,) = svc.query(plan_id="odd")
        assert odd.unreadable_timestamp == stamp
        with pytest.raises(auditbus.AuditError, match="not an ISO-8601 timestamp"):
            _ = odd.timestamp
        for bounds in ({"since": datetime(1, 1, 2, tzinfo=UTC)}, {"until": datetime(2026, 6, 1, tzinfo=UTC)}):
            assert sorted(e.plan_id for e in svc.query(limit=None, **bounds)) == ["after", "before"], bounds
            assert svc.count(**bounds) == 2, bounds
        # The cut stops at it, as at any row whose time cannot be read.
        assert svc.purge(datetime(2026, 6, 1, tzinfo=UTC), dry_run=True) == 1
        assert svc.purge(datetime(2026, 6, 1, tzinfo=UTC)) == 1
        assert [e.plan_id for e in svc.query(order="asc")] == ["odd", "after"]
        assert svc.verify().ok


def test_bounds_at_the_end_of_time_compare_as_instants(tmp_path: Path) -> None:
    """`datetime.max`, and a bound whose UTC instant is past year 9999, are later than every row."""
    path = tmp_path / "audit.db"
    with AuditService(path) as svc:
        for when in (datetime(2026, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 12, tzinfo=UTC)):
            svc.record_event(DomainEvent(event_type=EventType.PLAN_APPLIED, timestamp=when, plan_id=str(when.year)))
        svc.flush()
        everything = ["2026", "9999"]
        beyond = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2)))  # 10000-01-01T01:00Z
        for late in (datetime.max.replace(tzinfo=UTC), datetime.max, datetime(9999, 12, 31, 23, tzinfo=UTC), beyond):
            assert sorted(e.plan_id for e in svc.query(until=late, limit=None)) == everything, late
            assert svc.count(until=late) == 2, late
        assert [e.plan_id for e in svc.query(since=datetime(9999, 12, 31, 12, tzinfo=UTC))] == ["9999"]
        assert svc.query(since=datetime.max.replace(tzinfo=UTC)) == []
        assert svc.query(since=beyond) == []
        assert svc.count(since=beyond) == 0
        rows = len(raw_rows(path))
        assert svc.purge(beyond, dry_run=True) == rows
        assert svc.purge(beyond) == rows
        assert svc.query() == []
        assert svc.verify().ok


def test_lifecycle_rows_are_recorded_but_not_in_default_queries(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditService(path) as svc:
        svc.record("auth_success")
        assert [e.event_type for e in svc.query()] == ["auth_success"]
        svc.flush()
        assert svc.count(event_type="audit_started") == 1
    with AuditService(path) as svc:
        svc.flush()
        types = [e.event_type for e in svc.query(event_type=auditbus.AUDIT_LIFECYCLE_EVENT_TYPES, order="asc")]
        assert types == ["audit_started", "audit_stopped", "audit_started"]
        with pytest.raises(ValueError, match="audit_started"):
            svc.record("audit_started")


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"user_identity": 42}, TypeError, "user_identity"),
        ({"plan_id": ["p1"]}, TypeError, "plan_id"),
        ({"event_type": "bogus"}, ValueError, "bogus"),
        ({"event_type": ["plan_applied", "bogus2"]}, ValueError, "bogus2"),
        ({"event_type": []}, ValueError, "event_type"),
        ({"event_type": 7}, TypeError, "event_type"),
        ({"since": "yesterday"}, ValueError, "since"),
        ({"order": "sideways"}, ValueError, "sideways"),
        ({"limit": -1}, ValueError, "limit"),
        ({"offset": -5}, ValueError, "offset"),
    ],
)
def test_bad_filters_name_the_value(svc: AuditService, kwargs: dict[str, Any], error: type, names: str) -> None:
    with pytest.raises(error, match=names):
        svc.query(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"durability": None}, TypeError, r"durability: expected 'full' or 'normal', got NoneType"),
        ({"durability": 1}, TypeError, r"durability: .*got int"),
        ({"queue_size": 1.5}, TypeError, r"queue_size: expected an int >= 1, got float"),
        ({"queue_size": "10"}, TypeError, r"queue_size: .*got str"),
        ({"queue_size": True}, TypeError, r"queue_size: .*got bool"),
        ({"queue_size": -(10**20)}, ValueError, r"queue_size: .*-100000000000000000000"),
        ({"put_timeout": "5"}, TypeError, r"put_timeout: expected a number of seconds >= 0 or None, got str"),
        ({"busy_timeout": None}, TypeError, r"busy_timeout: expected a number of seconds >= 0, got NoneType"),
        ({"busy_timeout": -1}, ValueError, r"busy_timeout: expected a number of seconds >= 0, got -1$"),
        ({"app_name": 5}, TypeError, r"app_name: expected str or None, got int"),
        ({"read_only": "yes"}, TypeError, r"read_only: expected a bool, got str"),
    ],
)
def test_bad_keywords_name_the_keyword(tmp_path: Path, kwargs: dict[str, Any], error: type, names: str) -> None:
    """The README promises that a bad value raises ValueError or TypeError naming it."""
    with pytest.raises(error, match=names):
        AuditService(tmp_path / "a.db", **kwargs)
    assert not (tmp_path / "a.db").exists()


def test_bad_arguments_name_the_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fast"):
        AuditService(tmp_path / "a.db", durability="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue_size"):
        AuditService(tmp_path / "a.db", queue_size=0)
    with pytest.raises(ValueError, match="put_timeout"):
        AuditService(tmp_path / "a.db", put_timeout=-1)
    with pytest.raises(TypeError, match="db_path"):
        AuditService(123)  # type: ignore[arg-type]
    with AuditService(tmp_path / "a.db") as svc:
        with pytest.raises(TypeError, match="DomainEvent"):
            svc.record_event({"event_type": "plan_applied"})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="details"):
            svc.record("auth_success", details=["not", "a", "dict"])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="plan_id"):
            svc.record("auth_success", plan_id=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("read_only", [False, True])
def test_a_path_with_undecodable_bytes_is_refused_naming_it_instead_of_opening_another_file(
    tmp_path: Path, read_only: bool
) -> None:
    """`os.fsdecode()` of a name that is not UTF-8 holds surrogates; no trail may go under another name."""
    name = tmp_path / os.fsdecode(b"trail\xff.db")
    if read_only:
        AuditService(tmp_path / "ok.db").close()
        (tmp_path / "ok.db").rename(name)
    before = sorted(os.listdir(os.fsencode(tmp_path)))
    with pytest.raises(ValueError, match=r"db_path: .*trail\\udcff\.db.* not valid UTF-8"):
        AuditService(name, read_only=read_only)
    assert sorted(os.listdir(os.fsencode(tmp_path))) == before


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_path_that_is_not_a_regular_file_is_refused_for_writing_naming_what_it_is(tmp_path: Path, kind: str) -> None:
    """As `read_only=True` does: said plainly, not as SQLite's "disk I/O error"."""
    if kind == "fifo":
        path = tmp_path / "trail.db"
        os.mkfifo(path)
        said = "is not a regular file"
    elif kind == "device":
        path = Path(os.devnull)
        said = "is not a regular file"
    else:
        path = tmp_path
        said = "is a directory"
    with pytest.raises(auditbus.AuditError, match="not an audit database") as raised:
        AuditService(path)
    assert said in str(raised.value)
    assert str(path) in str(raised.value)


def test_an_undecodable_path_holding_a_token_is_quoted_masked(tmp_path: Path) -> None:
    token = "ghp_" + "a1B2" * 9
    with pytest.raises(ValueError, match="not valid UTF-8") as raised:
        AuditService(tmp_path / os.fsdecode(f"{token}\xff.db".encode("latin-1")))
    assert token not in str(raised.value)
    assert "REDACTED" in str(raised.value)


@pytest.mark.parametrize(
    ("timeout", "error", "names"),
    [
        ("1", TypeError, r"^timeout: expected a number of seconds >= 0 or None, got str$"),
        (10**400, TypeError, r"^timeout: expected a number of seconds >= 0 or None, got int$"),
        (-1, ValueError, r"^timeout: expected a number of seconds >= 0 or None, got -1$"),
        (float("nan"), ValueError, r"^timeout: .*got NaN$"),
    ],
)
def test_a_bad_flush_timeout_names_the_parameter(tmp_path: Path, timeout: object, error: type, names: str) -> None:
    with AuditService(tmp_path / "a.db") as svc, pytest.raises(error, match=names):
        svc.flush(timeout=timeout)  # type: ignore[arg-type]


def test_properties_and_stats(tmp_path: Path) -> None:
    with AuditService(str(tmp_path / "a.db"), durability="normal", app_name="tests") as svc:
        assert svc.db_path == str(tmp_path / "a.db")
        assert svc.durability == "normal"
        svc.record("auth_success")
        stats = svc.stats()
        assert {"queued", "written", "batches", "retries", "errors", "last_error", "queue_depth"} <= set(stats)
        assert stats["written"] >= 2  # the start row and ours
        assert stats["errors"] == 0
        assert stats["last_error"] is None
        assert stats["db_path"] == svc.db_path
        assert stats["durability"] == "normal"
        assert svc.query()[0].source["app"] == "tests"


def test_closed_service(tmp_path: Path) -> None:
    svc = AuditService(tmp_path / "a.db")
    svc.record_event(DomainEvent(event_type="plan_created"))
    svc.close()
    svc.close()  # idempotent
    with pytest.raises(auditbus.ClosedError):
        svc.record("auth_success")
    with pytest.raises(auditbus.ClosedError):
        svc.record_event(DomainEvent(event_type="plan_created"))
    with pytest.raises(auditbus.ClosedError):
        svc.query()
    svc.flush()  # nothing left to flush
    assert len(raw_rows(tmp_path / "a.db", "event_type = 'plan_created'")) == 1


def test_memory_database_works_like_the_legacy_one() -> None:
    with AuditService(":memory:") as svc:
        svc.record("auth_success", user_identity="alice")
        assert svc.db_path == ":memory:"
        assert [e.user_identity for e in svc.query()] == ["alice"]


def test_a_memory_database_is_a_private_file_removed_on_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with AuditService(":memory:") as svc:
        svc.record("auth_success", user_identity="alice")
        assert [p.name.startswith("auditbus-memory-") for p in tmp_path.iterdir()] == [True] * 3  # with -wal, -shm
    assert list(tmp_path.iterdir()) == []


def test_an_empty_path_is_a_temporary_trail_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As for the legacy service, "" works like ":memory:"; an unset setting read as "" would
    # otherwise lose the whole trail at close without a word.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with caplog.at_level("WARNING", logger="auditbus"), AuditService("") as svc:
        svc.record("auth_success", user_identity="alice")
        assert [e.user_identity for e in svc.query()] == ["alice"]
    assert list(tmp_path.iterdir()) == []
    (warning,) = [r for r in caplog.records if r.name == "auditbus" and r.levelname == "WARNING"]
    assert "empty path" in warning.getMessage()
    assert "removed on close" in warning.getMessage()


def test_purge_deletes_the_oldest_rows_and_records_itself(svc: AuditService) -> None:
    entries = [svc.record("auth_success", details={"i": i}) for i in range(5)]
    deleted = svc.purge(entries[3].timestamp)
    assert deleted == 4  # the audit_started row and entries 0..2
    assert [e.details["i"] for e in svc.query(order="asc")] == [3, 4]
    (row,) = svc.query(event_type="audit_purged")
    assert row.details["deleted"] == 4
    assert row.details["through_id"] == entries[2].id
    assert svc.verify().ok
    svc.record("auth_failure")
    assert svc.verify().ok
    assert svc.purge(datetime(2000, 1, 1, tzinfo=UTC)) == 0


def test_purge_stops_at_the_first_newer_row_in_id_order(svc: AuditService) -> None:
    """Purge removes a run of rows from the start, so the chain is cut in one place only."""
    svc.record("auth_success", details={"i": 0})
    svc.record_event(DomainEvent(event_type="plan_applied", timestamp=datetime(2001, 1, 1, tzinfo=UTC)))
    svc.flush()
    assert svc.purge(datetime(2002, 1, 1, tzinfo=UTC)) == 0
    assert svc.count() == 2
    with pytest.raises(ValueError, match="before"):
        svc.purge("not a date")


def test_purge_keeps_a_newer_row_stored_in_another_offset(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    legacy_audit().AuditService(path).close()  # the table, without auditbus's own rows
    for plan, stamp in [("old", "2026-01-01T10:00:00+00:00"), ("west", "2026-01-01T09:00:00-05:00")]:
        execute(
            path,
            "INSERT INTO audit_log (timestamp, event_type, plan_id, details) VALUES (?, 'plan_applied', ?, '{}')",
            (stamp, plan),
        )
    with AuditService(path) as svc:
        # "west" is 14:00 UTC, after the bound, though its text sorts before it.
        assert svc.purge("2026-01-01T11:00:00Z") == 1
        assert [e.plan_id for e in svc.query()] == ["west"]
        assert svc.verify().ok


def test_purge_dry_run_counts_exactly_what_purge_deletes_and_deletes_nothing(tmp_path: Path) -> None:
    """Rows of a type no service knows are counted; a row whose time cannot be read stops the cut, as in purge."""
    path = tmp_path / "audit.db"
    legacy_audit().AuditService(path).close()
    rows = [
        ("2026-01-01T10:00:00+00:00", "plan_applied"),
        ("2026-01-01T10:01:00+00:00", "custom_type_of_another_writer"),
        ("garbage", "plan_applied"),  # unreadable: kept, and every row after it
        ("2026-01-01T10:02:00+00:00", "plan_applied"),
    ]
    for stamp, kind in rows:
        execute(path, "INSERT INTO audit_log (timestamp, event_type, details) VALUES (?, ?, '{}')", (stamp, kind))
    with AuditService(path) as svc:
        before = "2026-06-01T00:00:00Z"
        assert svc.purge(before, dry_run=True) == 2
        assert svc.purge(before, dry_run=True) == 2  # nothing deleted, nothing recorded
        assert svc.count(event_type="audit_purged") == 0
        assert svc.purge(before) == 2
        assert svc.purge(before, dry_run=True) == 0
    with AuditService(path, read_only=True) as reader:
        assert reader.purge("2000-01-01", dry_run=True) == 0
        with pytest.raises(ValueError, match="before"):
            reader.purge("not a date", dry_run=True)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
@pytest.mark.parametrize("full", ["queue_size=1", "queue held full"])
def test_a_service_dropped_with_no_room_left_in_its_queue_still_stops_its_writer(tmp_path: Path, full: str) -> None:
    # Dropped without close(), a service asks its writer to stop without waiting. With no room in
    # the queue for the stop row and the stop, the thread (its connection, its file descriptors)
    # lived until the interpreter's exit: one more for each such service of a long-running process.
    path = tmp_path / "a.db"
    before = writer_threads()
    if full == "queue_size=1":
        svc = AuditService(path, queue_size=1)
        svc.record("auth_success", user_identity="alice")
        del svc
    else:
        svc = AuditService(path, queue_size=4, busy_timeout=0.02)
        svc.flush()
        with write_locked(path):
            svc.record_event(DomainEvent(event_type="step_completed", plan_id="p0"))
            wait_until(lambda: svc.stats()["retries"] >= 1, "the writer to hold its first row back")
            for i in range(1, 5):  # the queue's four places
                svc.record_event(DomainEvent(event_type="step_completed", plan_id=f"p{i}"))
            assert svc.stats()["queue_depth"] == 4
            del svc
    wait_until(lambda: writer_threads() <= before, "the dropped service's writer thread to end")
    rows = raw_rows(path)
    # The stop row is the last one written (the held-back case records its outage before it).
    assert (rows[0]["event_type"], rows[-1]["event_type"]) == ("audit_started", "audit_stopped")
    assert "garbage collected" in rows[-1]["details"]
    if full != "queue_size=1":
        assert [r["plan_id"] for r in rows if r["event_type"] == "step_completed"] == [f"p{i}" for i in range(5)]


class _Interrupted(Exception):
    """Raised by the test's SIGINT handler, as Ctrl-C raises KeyboardInterrupt."""


def _raise_interrupted(signum: int, frame: object) -> None:
    raise _Interrupted


def _close_interrupted_with_the_queue_full(svc: AuditService, path: Path) -> None:
    """Fills the queue of `svc` behind a row the write lock holds back, then interrupts its close()
    (SIGINT from another thread) while it waits for room; call with the lock held."""
    main = threading.main_thread().ident
    assert main is not None
    assert threading.get_ident() == main
    svc.record_event(DomainEvent(event_type="step_completed", plan_id="p0"))
    wait_until(lambda: svc.stats()["retries"] >= 1, "the writer to hold its first row back")
    for i in range(1, 5):  # the queue's four places
        svc.record_event(DomainEvent(event_type="step_completed", plan_id=f"p{i}"))
    assert svc.stats()["queue_depth"] == 4

    def interrupt_close() -> None:
        wait_until(lambda: svc.stats()["closed"], "close() to wait for room")
        signal.pthread_kill(main, signal.SIGINT)

    kicker = threading.Thread(target=interrupt_close)
    previous = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        kicker.start()
        with pytest.raises(_Interrupted):
            svc.close()
    finally:
        kicker.join()
        signal.signal(signal.SIGINT, previous)
    assert svc.stats()["queue_depth"] == 4  # neither the stop row nor the stop is queued


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
def test_a_service_dropped_after_a_close_interrupted_while_its_queue_was_full_still_stops_its_writer(
    tmp_path: Path,
) -> None:
    # close() waits for room for its stop row and the stop; a Ctrl-C ends that wait with neither
    # queued. Dropped then, with the queue still full, the service left its writer thread running
    # until the interpreter's exit. Every row handed over is written, and the stop row of that
    # close() once, last.
    path = tmp_path / "a.db"
    before = writer_threads()
    svc = AuditService(path, queue_size=4, busy_timeout=0.02)
    svc.flush()
    with write_locked(path):
        _close_interrupted_with_the_queue_full(svc, path)
        del svc
        gc.collect()
    wait_until(lambda: writer_threads() <= before, "the dropped service's writer thread to end")
    rows = raw_rows(path)
    assert [r["plan_id"] for r in rows if r["event_type"] == "step_completed"] == [f"p{i}" for i in range(5)]
    assert [r["event_type"] for r in rows if r["event_type"] == "audit_stopped"] == ["audit_stopped"]
    assert rows[-1]["event_type"] == "audit_stopped"
    assert json.loads(rows[-1]["details"])["reason"] == "close()"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files in /proc/self/fd")
def test_services_dropped_without_close_do_not_pile_up_threads_or_open_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One service per request, never closed: each dropped service's writer writes what it took,
    # then ends and closes its files, so a long-running process does not run out of descriptors.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    gc.collect()
    threads, files = writer_threads(), open_files()
    handed = 0

    class Holder:
        pass

    def request(n: int) -> None:
        svc = AuditService(tmp_path / f"trail{n % 3}.db" if n % 4 else ":memory:")
        for i in range(5):
            svc.record_event(DomainEvent(event_type="step_started", plan_id=f"p{n}-{i}"))
        if n % 2:
            holder = Holder()
            holder.svc, holder.me = svc, holder  # freed by the garbage collector only

    for n in range(60):
        worker = threading.Thread(target=request, args=(n,)) if n % 3 == 0 else None
        if worker is None:
            request(n)
        else:
            worker.start()
            worker.join()
        handed += 5 * (n % 4 != 0)
    gc.collect()
    wait_until(lambda: writer_threads() <= threads, "the dropped services' writer threads to end")
    wait_until(lambda: open_files() <= files, "the dropped services' files to be closed")
    wait_until(lambda: not list((tmp_path / "tmp").iterdir()), 'the ":memory:" services\' files to be removed')
    stored = sum(len(raw_rows(tmp_path / f"trail{k}.db", "event_type = 'step_started'")) for k in range(3))
    assert stored == handed


def test_a_memory_database_dropped_without_close_is_removed_once_its_writer_has_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its writer (queue, file) was kept for the exit hook until another service was opened: a
    # process that opens no other kept its temporary trail and about 3 MB of queue for good.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    svc = AuditService(":memory:")
    svc.record("auth_success", user_identity="alice")
    assert list(tmp_path.iterdir())
    del svc
    gc.collect()
    wait_until(lambda: not list(tmp_path.iterdir()), "the dropped service's temporary trail to be removed")


def test_a_memory_database_whose_writer_thread_cannot_start_leaves_no_file() -> None:
    # With the process's thread limit reached the service cannot start its writer: the error
    # says so, and the temporary file made for ":memory:" must go with it, not pile up.
    with readable_folder() as shared:
        folder = shared / "tmp"
        folder.mkdir()
        folder.chmod(0o777)
        _a_memory_database_without_its_writer_thread(folder)


def _a_memory_database_without_its_writer_thread(folder: Path) -> None:
    script = textwrap.dedent(
        """
        import resource, auditbus
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))  # no thread more for this user
        try:
            auditbus.AuditService(":memory:").close()
        except auditbus.AuditError as exc:
            print("refused:", exc)
        """
    )
    command, env = [sys.executable, "-c", script], {**os.environ, "TMPDIR": str(folder)}
    if os.geteuid() == 0:
        # The limit does not bind root: as nobody, whose processes it counts.
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: the thread limit does not apply")
        env["PYTHONPATH"] = str(package_for_other_users())
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60, env=env, cwd=folder)
    if "refused:" not in done.stdout:
        pytest.skip(f"the thread limit did not stop the writer thread here ({done.stderr[-300:]})")
    assert "cannot start the audit writer thread" in done.stdout, done.stdout
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_forked_while_dropped_services_writers_end_can_still_exit(tmp_path: Path) -> None:
    # A dropped service's writer thread takes it out of the at-exit registry as it ends. It took
    # the registry's lock detached from the interpreter: a fork() made then copied the lock held
    # into the child, whose at-exit hook waited for it forever. Many writers ending at once, each
    # taking the lock in turn, while the parent forks: before, a child hung within a few rounds.
    script = textwrap.dedent(
        f"""
        import atexit, os, time
        import auditbus
        for r in range(12):
            services = [
                auditbus.AuditService(os.path.join({str(tmp_path)!r}, f"{{r}}-{{i}}.db"), queue_size=1)
                for i in range(30)
            ]
            for svc in services:
                svc.flush()
            del svc
            services.clear()  # every writer ends now, each on its own thread
            children = []
            for _ in range(20):
                pid = os.fork()
                if pid == 0:
                    atexit._run_exitfuncs()  # the at-exit hook takes the registry's lock
                    os._exit(0)
                children.append(pid)
            for pid in children:
                deadline = time.monotonic() + 30
                while not os.waitpid(pid, os.WNOHANG)[0]:
                    if time.monotonic() > deadline:
                        for other in children:
                            try:
                                os.kill(other, 9)
                            except ProcessLookupError:
                                pass
                        raise SystemExit(f"round {{r}}: a forked child never exited")
                    time.sleep(0.001)
        """
    )
    command = [sys.executable, "-W", "ignore", "-c", script]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_interpreter_exit_flushes(tmp_path: Path) -> None:
    path = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        import auditbus
        svc = auditbus.AuditService({str(path)!r})
        for i in range(500):
            svc.record_event(auditbus.DomainEvent(event_type="step_started", details={{"i": i}}))
        # no flush(), no close(): the interpreter's exit must write them
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert len(raw_rows(path, "event_type = 'step_started'")) == 500
    assert [r["event_type"] for r in raw_rows(path, "event_type LIKE 'audit_%'")] == [
        "audit_started",
        "audit_stopped",
    ]


def test_interpreter_exit_flushes_every_service_still_open(tmp_path: Path) -> None:
    paths = [tmp_path / f"exit{n}.db" for n in range(3)]
    script = textwrap.dedent(
        f"""
        import auditbus
        services = [auditbus.AuditService(path) for path in {[str(p) for p in paths]!r}]
        for i in range(2000):
            for svc in services:
                svc.record_event(auditbus.DomainEvent(event_type="step_started", details={{"i": i}}))
        # none flushed or closed: the interpreter's exit must write them all
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    for path in paths:
        assert len(raw_rows(path, "event_type = 'step_started'")) == 2000, path
        # Closed by the exit itself, each, not left to a destructor the process may not wait for.
        lifecycle = raw_rows(path, "event_type LIKE 'audit_%'")
        assert [r["event_type"] for r in lifecycle] == ["audit_started", "audit_stopped"], path
        assert json.loads(lifecycle[-1]["details"])["reason"] == "interpreter exit", path


def test_an_exit_hook_the_application_registered_before_opening_the_service_can_still_record(tmp_path: Path) -> None:
    # An application registers its shutdown hook at start-up and opens the service later, on
    # first use: the hook runs at exit, and its rows must land as with the legacy service,
    # before the service's own stop row.
    path = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        import atexit
        import auditbus
        def shutdown():
            svc.record_event(auditbus.DomainEvent(event_type="step_completed", details={{"phase": "shutdown"}}))
            svc.record(auditbus.EventType.CONFIG_CHANGED, details={{"phase": "shutdown"}})
        atexit.register(shutdown)
        svc = auditbus.AuditService({str(path)!r})
        svc.record_event(auditbus.DomainEvent(event_type="step_started"))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert "Error" not in done.stderr, done.stderr
    assert [r["event_type"] for r in raw_rows(path)] == [
        "audit_started",
        "step_started",
        "step_completed",
        "config_changed",
        "audit_stopped",
    ]
    assert json.loads(raw_rows(path)[-1]["details"])["reason"] == "interpreter exit"


def test_an_exit_hook_registered_before_multiprocessing_was_imported_can_still_record(tmp_path: Path) -> None:
    # multiprocessing runs its finalizers at exit in an atexit hook of its own, registered when
    # it is first imported (here by concurrent.futures, as many libraries do, after the
    # application's hook): in the main process the services must not close there, before it.
    path = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        import atexit
        import auditbus
        def shutdown():
            svc.record_event(auditbus.DomainEvent(event_type="step_completed"))
        atexit.register(shutdown)
        import concurrent.futures.process
        svc = auditbus.AuditService({str(path)!r})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert "Error" not in done.stderr, done.stderr
    assert [r["event_type"] for r in raw_rows(path)] == ["audit_started", "step_completed", "audit_stopped"]


def test_what_the_writer_logs_at_exit_reaches_handlers_logging_has_not_shut_down(tmp_path: Path) -> None:
    # logging closes its handlers in an exit hook of its own: the services must close before it,
    # or the writer's last lines (an event id kept under another, rows given up) meet closed handlers.
    path = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        import auditbus, logging
        class Handler(logging.Handler):
            shut = False
            def emit(self, record):
                print("closed handler:" if self.shut else "open handler:", record.getMessage(), flush=True)
            def close(self):
                self.shut = True
                super().close()
        logging.getLogger("auditbus").addHandler(Handler())
        svc = auditbus.AuditService({str(path)!r})
        svc.record_event(auditbus.DomainEvent(event_type="step_started", event_id="same"))
        svc.flush()
        # The same id for another event: the writer logs the id it keeps it under as it commits it, at exit.
        svc.record_event(auditbus.DomainEvent(event_type="step_completed", event_id="same"))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert "open handler:" in done.stdout, (done.stdout, done.stderr)
    assert "closed handler:" not in done.stdout, done.stdout
    assert [r["event_type"] for r in raw_rows(path)][-2:] == ["step_completed", "audit_stopped"]


def test_an_exit_held_by_a_logging_handler_that_never_returns_says_what_it_waits_for(tmp_path: Path) -> None:
    # The writer's last log line reaches a handler that never returns: the exit keeps waiting
    # (the rows after that line would be lost otherwise, and logging's own exit waits for the
    # handler's lock anyway), but it must say what it waits for, not hang without a word.
    path = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        import auditbus, logging, threading
        class Stuck(logging.Handler):
            def emit(self, record):
                threading.Event().wait()
        logging.getLogger("auditbus").addHandler(Stuck())
        svc = auditbus.AuditService({str(path)!r})
        svc.record_event(auditbus.DomainEvent(event_type="step_started", event_id="same"))
        svc.flush()
        # The same id for another event: the writer logs the id it keeps it under as it commits it, at exit.
        svc.record_event(auditbus.DomainEvent(event_type="step_completed", event_id="same"))
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stderr or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: lines, "a line on stderr saying what the exit waits for", timeout=60)
        assert "interpreter exit" in lines[0], lines
        assert "exit.db" in lines[0], lines
        assert 'handler of the "auditbus" logger' in lines[0], lines
    finally:
        child.kill()
        child.wait(timeout=60)
        reader.join(timeout=60)
        child.stderr.close()
    # Committed before the handler was called: on disk, whatever becomes of the process.
    assert [r["event_type"] for r in raw_rows(path)][-2:] == ["step_completed", "audit_stopped"]


def test_a_service_used_after_the_exit_closed_it_says_the_exit_did(tmp_path: Path) -> None:
    # A hook registered before auditbus was imported runs after the services were closed:
    # the program never called close(), and the error must say who did.
    path = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        import atexit
        def late():
            try:
                svc.record_event(auditbus.DomainEvent(event_type="step_completed"))
            except auditbus.ClosedError as exc:
                print("refused:", exc)
        atexit.register(late)
        import auditbus
        svc = auditbus.AuditService({str(path)!r})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert "refused:" in done.stdout, done.stderr
    assert "closed at interpreter exit" in done.stdout, done.stdout
    assert "imported" in done.stdout, done.stdout
    assert [r["event_type"] for r in raw_rows(path)] == ["audit_started", "audit_stopped"]


def test_the_exit_guard_let_go_of_while_python_still_runs_closes_without_a_hang(tmp_path: Path) -> None:
    # The guard freed by hand in a late exit hook, not by the interpreter's shutdown: the writer
    # it closes still logs through Python (here the copy of a reused event_id), which needs the
    # GIL; waited for with the GIL held, neither would ever go on.
    path = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        import atexit
        def late():
            svc = auditbus.AuditService({str(path)!r})
            svc.record_event(auditbus.DomainEvent(event_type="step_started", event_id="same"))
            svc.flush()
            svc.record_event(auditbus.DomainEvent(event_type="step_completed", event_id="same"))
            del auditbus._native._exit_guard
            try:
                auditbus.AuditService({str(path)!r})
            except auditbus.ClosedError:
                print("refused")
        atexit.register(late)
        import auditbus
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert "refused" in done.stdout, done.stderr
    assert "was already stored for a different event" in done.stderr, done.stderr
    assert [r["event_type"] for r in raw_rows(path)][-2:] == ["step_completed", "audit_stopped"]


def test_a_service_an_exit_hook_opens_after_the_services_closed_commits_what_it_took(tmp_path: Path) -> None:
    # A hook registered before auditbus was imported runs after auditbus's own exit hook,
    # and an exit hook registered from there is never run: the service it opens must still
    # be closed, with the rows it took, not left to a writer the process ends under.
    path = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        import atexit
        held = []
        def late():
            svc = auditbus.AuditService({str(path)!r})
            held.append(svc)
            for i in range(20000):
                svc.record_event(auditbus.DomainEvent(event_type="step_completed", details={{"i": i}}))
        atexit.register(late)
        import auditbus
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert "Error" not in done.stderr, done.stderr
    assert len(raw_rows(path, "event_type = 'step_completed'")) == 20000
    assert [r["event_type"] for r in raw_rows(path, "event_type LIKE 'audit_%'")] == ["audit_started", "audit_stopped"]


def test_a_service_a_daemon_thread_opens_during_the_exit_commits_what_it_took(tmp_path: Path) -> None:
    # A daemon thread still runs while the exit hooks do, and its frame (with the service in
    # it) is never freed: nothing but the exit itself can close that service.
    path = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        import atexit, threading
        go, handed, never = threading.Event(), threading.Event(), threading.Event()
        def late():
            go.set()
            handed.wait(60)
        atexit.register(late)
        import auditbus
        def work():
            go.wait()
            svc = auditbus.AuditService({str(path)!r})
            for i in range(20000):
                svc.record_event(auditbus.DomainEvent(event_type="step_completed", details={{"i": i}}))
            handed.set()
            never.wait()
        threading.Thread(target=work, daemon=True).start()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert "Error" not in done.stderr, done.stderr
    assert len(raw_rows(path, "event_type = 'step_completed'")) == 20000
    stops = raw_rows(path, "event_type = 'audit_stopped'")
    assert [json.loads(r["details"])["reason"] for r in stops] == ["interpreter exit"]


# A `multiprocessing` child (fork and forkserver, and a pool worker the pool
# closes) ends with `os._exit()`, which skips `atexit`: a service the child
# opened and did not close must still commit what it took. A function of a
# file of its own, so that every start method can import it.
_CHILD_TASK = """
import sys
from auditbus import AuditService, DomainEvent

def work(path):
    svc = AuditService(path)
    for i in range(500):
        svc.record_event(DomainEvent(event_type="step_completed", details={"i": i}))
"""

_MULTIPROCESSING_CHILD = """
import multiprocessing, sys
import child_task

if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    if sys.argv[3] == "process":
        child = ctx.Process(target=child_task.work, args=(sys.argv[2],))
        child.start()
        child.join(60)
        print("exit", child.exitcode, flush=True)
    else:
        pool = ctx.Pool(1)
        pool.apply(child_task.work, (sys.argv[2],))
        pool.close()
        pool.join()
        print("exit", 0, flush=True)
"""


@pytest.mark.parametrize("how", ["process", "pool"])
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_multiprocessing_child_commits_what_its_open_service_took(tmp_path: Path, method: str, how: str) -> None:
    (tmp_path / "child_task.py").write_text(textwrap.dedent(_CHILD_TASK))
    path = tmp_path / "a.db"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MULTIPROCESSING_CHILD), method, str(path), how],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert "exit 0" in done.stdout.splitlines(), done.stdout
    rows = raw_rows(path)
    taken = sorted(json.loads(r["details"])["i"] for r in rows if r["event_type"] == "step_completed")
    assert taken == list(range(500))
    assert [r["event_type"] for r in rows if r["event_type"].startswith("audit_")] == ["audit_started", "audit_stopped"]


def test_value_shaped_secrets_in_identity_fields_never_reach_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    token = "ghp_" + "b" * 36
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    password = "s3cretpassw0rd"
    with AuditService(path) as svc:
        svc.record_event(
            DomainEvent(
                event_type="session_created",
                session_id=f"Bearer {jwt}",
                actor_name="alice",
                project_name=token,
                plan_id=f"https://deploy:{password}@git.example.com/repo",
                user_identity="carol",
            )
        )
        svc.record("auth_success", user_identity=token, plan_id="plan-1")
    rows = raw_rows(path, "event_type IN ('session_created', 'auth_success')")
    stored = json.dumps(rows)
    for secret in (token, jwt, password):
        assert secret not in stored
    session, auth = rows
    assert session["user_identity"] == "carol"
    assert session["actor_name"] == "alice"
    assert session["plan_id"].startswith("https://deploy:")
    assert session["session_id"].startswith("Bearer ")
    assert auth["plan_id"] == "plan-1"
    files = [p for p in (path, Path(f"{path}-wal")) if p.exists()]
    for secret in (token, jwt, password):
        assert all(secret.encode() not in p.read_bytes() for p in files)


def test_a_value_shaped_secret_given_as_event_id_never_reaches_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    token = "ghp_" + "d" * 36
    with AuditService(path) as svc:
        svc.record_event(DomainEvent(event_type="plan_created", event_id=f"import-{token}"))
        plain = DomainEvent(event_type="plan_created", event_id="import-42")
        svc.record_event(plain)
    rows = raw_rows(path, "event_type = 'plan_created'")
    assert [row["event_id"] for row in rows] == [f"import-{auditbus.REDACTED}", "import-42"]
    files = [p for p in (path, Path(f"{path}-wal")) if p.exists()]
    assert all(token.encode() not in p.read_bytes() for p in files)


def test_a_column_another_writer_filled_with_bytes_or_a_number_reads_as_text(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    AuditService(path).close()
    # Not UTF-8 (a BLOB), valid UTF-8 stored as a BLOB, and an integer: the legacy bound whatever it was given.
    execute(
        path,
        "INSERT INTO audit_log (timestamp, event_type, plan_id, user_identity, actor_name, details) "
        "VALUES ('2026-01-01T00:00:00+00:00', 'plan_applied', X'ff41', X'c3a9', 42, '{}')",
    )
    with AuditService(path) as svc:
        (entry,) = svc.query(event_type="plan_applied")
    assert (entry.plan_id, entry.user_identity, entry.actor_name) == ("\ufffdA", "\u00e9", "42")


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda svc: svc.query(limit=10**30), "limit"),
        (lambda svc: svc.query(offset=10**30), "offset"),
        (lambda svc: svc.query(limit="3"), "limit"),
        (lambda svc: svc.query(offset=None), "offset"),
        (lambda svc: list(svc.iter_entries(batch_size=10**30)), "batch_size"),
    ],
)
def test_a_count_or_position_out_of_range_or_of_another_type_names_the_parameter(
    svc: AuditService, call: Any, name: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=f"^{name}: expected an int"):
        call(svc)


# --- services extend and patch the service as they did the legacy class ---------------------


def test_a_subclass_calls_super_init_with_its_arguments_and_keeps_its_own_state(impl: Any, tmp_path: Path) -> None:
    # The subclass takes the service's own arguments (see the README for one that takes others).
    class TaggedService(impl.AuditService):  # type: ignore[misc,name-defined]
        def __init__(self, db_path: Path, **options: Any) -> None:
            super().__init__(db_path, **options)
            self.tag = "ops"

        def record(self, event_type: str, **kwargs: Any) -> Any:
            details = {**(kwargs.pop("details", None) or {}), "tag": self.tag}
            return super().record(event_type, details=details, **kwargs)

    service = TaggedService(tmp_path / "audit.db")
    try:
        entry = service.record("plan_applied", plan_id="p1")
        assert entry.details == {"tag": "ops"}
        assert [e.plan_id for e in service.query(plan_id="p1")] == ["p1"]
        assert isinstance(service, impl.AuditService)
    finally:
        service.close()


def test_an_instance_method_can_be_patched_for_a_test(service: Any) -> None:
    with patch.object(service, "record") as record:
        service.record("plan_applied", plan_id="p1")
    record.assert_called_once_with("plan_applied", plan_id="p1")
    assert service.query(plan_id="p1") == []  # the mock stood in; nothing was written
    assert service.record("plan_applied", plan_id="p2").plan_id == "p2"  # the patch is gone


def test_a_subclass_taking_other_arguments_passes_the_services_own_to_new(tmp_path: Path) -> None:
    class TaggedService(AuditService):
        def __new__(cls, db_path: Path, tag: str) -> TaggedService:
            return super().__new__(cls, db_path)

        def __init__(self, db_path: Path, tag: str) -> None:
            super().__init__(db_path)
            self.tag = tag

    with pytest.raises(TypeError, match=r"AuditService.__new__\(\) takes 1 positional arguments but 2 were given"):
        type("Untold", (AuditService,), {"__init__": TaggedService.__init__})(tmp_path / "a.db", "ops")
    service = TaggedService(tmp_path / "audit.db", "ops")
    try:
        assert (service.tag, service.record("plan_applied").event_type) == ("ops", "plan_applied")
    finally:
        service.close()
