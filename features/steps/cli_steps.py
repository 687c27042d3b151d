"""Steps for cli_audit_trail.feature: the auditor runs the real `auditbus` command."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from auditbus import SECURITY_EVENT_TYPES, AuditService, DomainEvent, EventType, identity
from behave import given, then, when

_AGO = re.compile(r"(\d+) (minute|hour|day)s? ago")


def _workdir(context: Any) -> Path:
    if not hasattr(context, "cli_dir"):
        context.cli_dir = Path(tempfile.mkdtemp(prefix="auditbus-cli-"))
        context.add_cleanup(shutil.rmtree, context.cli_dir, True)
        context.cli_db = context.cli_dir / "audit.db"
    return Path(context.cli_dir)


def _when(text: str) -> datetime:
    match = _AGO.fullmatch(text.strip())
    assert match, f"write times as 'N minutes/hours/days ago', not {text!r}"
    amount, unit = int(match.group(1)), match.group(2)
    return datetime.now(timezone.utc) - timedelta(**{f"{unit}s": amount})


@given("an audit trail with these events:")
def step_trail(context: Any) -> None:
    _workdir(context)
    context.cli_events = [dict(row.as_dict()) for row in context.table]
    _write_events(context)


def _write_events(context: Any) -> None:
    with AuditService(str(context.cli_db)) as service:
        for row in context.cli_events:
            with identity(row["user"]):
                event = DomainEvent(
                    event_type=EventType(row["event"]),
                    timestamp=_when(row["when"]),
                    plan_id=row["plan"] or None,
                    session_id=row["session"] or None,
                    details={"note": f"{row['user']} {row['event']}"},
                )
            service.record_event(event)
        service.flush()


@given("the trail was migrated from the legacy service, which left {count:d} rows from {age:d} days ago")
def step_legacy_prefix(context: Any, count: int, age: int) -> None:
    """Rebuilds the trail as a legacy database (rows without hashes) that auditbus then took over."""
    shutil.rmtree(context.cli_dir)
    context.cli_dir.mkdir()
    with sqlite3.connect(context.cli_db) as connection:
        connection.execute(
            "CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL,"
            " event_type TEXT NOT NULL, plan_id TEXT, user_identity TEXT, details TEXT NOT NULL DEFAULT '{}')"
        )
        stamp = (datetime.now(timezone.utc) - timedelta(days=age)).isoformat()
        for _ in range(count):
            connection.execute(
                "INSERT INTO audit_log (timestamp, event_type, user_identity) VALUES (?, 'plan_applied', 'alice')",
                (stamp,),
            )
    connection.close()
    _write_events(context)


@given("an empty working directory")
def step_empty_dir(context: Any) -> None:
    context.cli_dir = Path(tempfile.mkdtemp(prefix="auditbus-demo-"))
    context.add_cleanup(shutil.rmtree, context.cli_dir, True)
    context.cli_db = context.cli_dir / "audit.db"


@given('someone changed the details of plan "{plan}"\'s row directly in the database file')
def step_tamper(context: Any, plan: str) -> None:
    with AuditService(str(context.cli_db)) as service:
        context.cli_tampered = service.query(plan_id=plan)[0].id
    with sqlite3.connect(context.cli_db) as connection:
        connection.execute(
            'UPDATE audit_log SET details = \'{"note":"nothing here"}\' WHERE id = ?', (context.cli_tampered,)
        )
    connection.close()


def _run(context: Any, command: str, *, stdin: Any = subprocess.DEVNULL) -> None:
    words = shlex.split(command)
    assert words[0] == "auditbus"
    env = {k: v for k, v in os.environ.items() if k != "AUDITBUS_DEBUG"}
    env["AUDITBUS_DB"] = str(context.cli_db)
    if "--db" in words:
        env.pop("AUDITBUS_DB")
    context.cli_result = subprocess.run(
        [sys.executable, "-m", "auditbus", *words[1:]],
        cwd=_workdir(context),
        env=env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@when('the auditor runs "{command}" from a script')
def step_run_scripted(context: Any, command: str) -> None:
    _run(context, command, stdin=subprocess.DEVNULL)


@when('the auditor runs "{command}"')
def step_run(context: Any, command: str) -> None:
    _run(context, command)


@then("the command succeeds")
def step_succeeds(context: Any) -> None:
    result = context.cli_result
    assert result.returncode == 0, f"status {result.returncode}\n{result.stdout}\n{result.stderr}"


@then("the command fails with status {status:d}")
def step_fails(context: Any, status: int) -> None:
    assert context.cli_result.returncode == status, context.cli_result
    assert "Traceback" not in context.cli_result.stderr


@then('the command fails with status {status:d} and the one-line error "{text}"')
def step_fails_with(context: Any, status: int, text: str) -> None:
    step_fails(context, status)
    lines = context.cli_result.stderr.strip().splitlines()
    assert len(lines) == 1, context.cli_result.stderr
    assert lines[0].startswith("auditbus: error: "), lines[0]
    assert text in lines[0], lines[0]


@then("the answer lists, newest first: {types}")
def step_lists(context: Any, types: str) -> None:
    lines = context.cli_result.stdout.splitlines()
    type_column = lines[0].index("TYPE")
    shown = [line[type_column:].split()[0] for line in lines[1:]]
    assert shown == [t.strip() for t in types.split(",")], shown


@then('every line of the answer is a JSON object with plan_id "{plan}" and user_identity "{user}"')
def step_json(context: Any, plan: str, user: str) -> None:
    rows = [json.loads(line) for line in context.cli_result.stdout.splitlines()]
    assert rows
    assert all(row["plan_id"] == plan and row["user_identity"] == user for row in rows), rows


@then('the answer names plan "{plan}"\'s row as the first bad row')
def step_names_bad_row(context: Any, plan: str) -> None:
    assert f"chain BROKEN at row {context.cli_tampered}:" in context.cli_result.stdout, context.cli_result.stdout


@then('the answer says "{text}"')
def step_says(context: Any, text: str) -> None:
    assert text in context.cli_result.stdout, context.cli_result.stdout


@then('"{name}" holds these events, oldest first: {types}')
def step_export_file(context: Any, name: str, types: str) -> None:
    with (_workdir(context) / name).open(encoding="utf-8", newline="") as handle:
        shown = [row["event_type"] for row in csv.DictReader(handle)]
    assert shown == [t.strip() for t in types.split(",")], shown


@then('there is no file "{name}"')
def step_no_file(context: Any, name: str) -> None:
    assert not (_workdir(context) / name).exists()


@then("the trail still holds {count:d} events")
def step_count(context: Any, count: int) -> None:
    with AuditService(str(context.cli_db)) as service:
        assert service.count() == count


@then('the trail in "{name}" holds every one of the nine audit types, each by user "{user}"')
def step_nine_types(context: Any, name: str, user: str) -> None:
    with AuditService(str(_workdir(context) / name)) as service:
        rows = service.query(limit=None)
    nine = {t.value for t in SECURITY_EVENT_TYPES}
    types = {getattr(row.event_type, "value", row.event_type) for row in rows}
    assert types == nine, types
    assert {row.user_identity for row in rows} == {user}


@then('no API key of the form sk-proj-... is stored in "{name}"')
def step_no_key(context: Any, name: str) -> None:
    stored = b"".join(p.read_bytes() for p in _workdir(context).glob(name + "*"))
    assert stored
    assert not re.search(rb"sk-proj-[A-Za-z0-9]{20,}", stored)
