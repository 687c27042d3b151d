"""Steps for observability/audit_service_wiring.feature: the services' own calls, on a wired bus.

The services are `auditbus.demo`'s copies of the legacy call sites (unchanged
but for the import line). Rows are read back with `AuditService.query`, or,
for the restart scenario, from the raw database file in a child process: this
process never opens the file with Python's `sqlite3` while an `AuditService`
holds it (two SQLite libraries in one process break WAL locking).

Every context attribute set here starts with `wiring_`, so nothing is shared
by accident with the other features' steps.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from datetime import datetime
from pathlib import Path

from auditbus import SECURITY_EVENT_TYPES, AuditEntry, AuditService, DomainEvent, EventType, identity
from auditbus.demo import (
    AuthService,
    ConfigService,
    CorrectionService,
    EntityService,
    PlanLifecycleService,
    SessionService,
    ToolExecutor,
    wired_bus,
)
from behave import given, then, when
from behave.runner import Context

_NINE = {t.value for t in SECURITY_EVENT_TYPES}


def _as_user(context: Context) -> identity:
    """The `identity()` block a request of the current user runs in (`identity(None)`: nobody)."""
    return identity(context.wiring_user)


def _projects(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


# --- the wired services -----------------------------------------------------------


@given("the services emit on a bus wired to a fresh audit trail")
def step_wired_services(context: Context) -> None:
    folder = Path(tempfile.mkdtemp(prefix="auditbus-wiring-"))
    context.add_cleanup(shutil.rmtree, folder, True)
    context.wiring_db = folder / "audit.db"
    context.wiring_service = AuditService(context.wiring_db)
    context.add_cleanup(context.wiring_service.close)
    context.wiring_bus = wired_bus(context.wiring_service)
    context.add_cleanup(context.wiring_bus.dispose)
    context.wiring_emitted = []
    context.wiring_bus.subscribe_all(context.wiring_emitted.append)
    bus = context.wiring_bus
    context.wiring_plans = PlanLifecycleService(bus)
    context.wiring_config = ConfigService(bus)
    context.wiring_sessions = SessionService(bus)
    context.wiring_tools = ToolExecutor(bus)
    context.wiring_corrections = CorrectionService(bus)
    context.wiring_entities = EntityService(bus)
    context.wiring_auth = AuthService(bus)
    context.wiring_user = None


@given('the services act for the user "{user}"')
def step_act_for(context: Context, user: str) -> None:
    context.wiring_user = user


@given("the services act for no user")
def step_act_for_nobody(context: Context) -> None:
    context.wiring_user = None


# --- the services' calls, unchanged -------------------------------------------------


@when(
    'the plan lifecycle service completes the apply of plan "{plan}" by "{actor}" for projects "{projects}"'
    " with these stats:"
)
def step_apply_with_stats(context: Context, plan: str, actor: str, projects: str) -> None:
    stats = {row["stat"]: json.loads(row["value"]) for row in context.table}
    with _as_user(context):
        context.wiring_plans.complete_apply(plan, actor, _projects(projects), stats)


@when('the plan lifecycle service completes the apply of plan "{plan}" by "{actor}" for projects "{projects}"')
def step_apply(context: Context, plan: str, actor: str, projects: str) -> None:
    with _as_user(context):
        context.wiring_plans.complete_apply(plan, actor, _projects(projects), {"files_changed": 1})


@when('the plan lifecycle service calls off plan "{plan}" by "{actor}" for projects "{projects}" because "{reason}"')
def step_cancel(context: Context, plan: str, actor: str, projects: str, reason: str) -> None:
    with _as_user(context):
        context.wiring_plans.cancel_plan(plan, actor, reason, _projects(projects))


@when(
    'the tool executor\'s "{tool}" tool does a "{modification}" of resource "{resource}" at "{path}" for plan "{plan}"'
)
def step_tool_write(context: Context, *, tool: str, modification: str, resource: str, path: str, plan: str) -> None:
    with _as_user(context):
        context.wiring_tools.write_file(plan, resource, path, tool, modification)


@when(
    'the correction service applies correction "{attempt}" to decision "{decision}" of plan "{plan}"'
    ' in "{mode}" mode with the guidance "{guidance}"'
)
def step_correct(context: Context, *, attempt: str, decision: str, plan: str, mode: str, guidance: str) -> None:
    with _as_user(context):
        context.wiring_corrections.apply(plan, attempt, decision, mode, guidance)


@when('the config service sets "{key}" to "{value}"')
def step_config_set(context: Context, key: str, value: str) -> None:
    with _as_user(context):
        context.wiring_config.set(key, value)


@when('the entity service deletes the {entity_type} "{name}", which also removes "{cascade}"')
def step_delete_entity(context: Context, entity_type: str, name: str, cascade: str) -> None:
    with _as_user(context):
        context.wiring_entities.delete(entity_type, name, [cascade])


@when('the session service opens session "{session}" for the actor "{actor}"')
def step_create_session(context: Context, session: str, actor: str) -> None:
    with _as_user(context):
        context.wiring_sessions.create(session, actor)


@when('the auth service logs "{user}" in from {ip} with a token starting "{prefix}"')
def step_login_ok(context: Context, user: str, ip: str, prefix: str) -> None:
    with _as_user(context):
        context.wiring_auth.login_succeeded(user, ip, prefix)


@when('the auth service refuses "{user}" from {ip} because "{reason}"')
def step_login_refused(context: Context, user: str, ip: str, reason: str) -> None:
    with _as_user(context):
        context.wiring_auth.login_failed(user, ip, reason)


@when('the session service opens sessions for "{first}" and "{second}" on two threads at once, {count:d} each')
def step_sessions_in_threads(context: Context, first: str, second: str, count: int) -> None:
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def serve(user: str) -> None:
        try:
            start.wait(timeout=30)
            with identity(user):
                for n in range(count):
                    context.wiring_sessions.create(f"{user}-sess-{n}", "planner")
        except BaseException as exc:  # reported by the main thread below
            failures.append(exc)

    threads = [threading.Thread(target=serve, args=(user,)) for user in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a request thread did not finish"
    assert not failures, failures
    context.wiring_thread_users = (first, second)
    context.wiring_thread_count = count


# --- what the trail holds ---------------------------------------------------------


def _rows(context: Context, event_type: str) -> list[AuditEntry]:
    return context.wiring_service.query(event_type=event_type, limit=None)


def _same_user(row: AuditEntry, user: str | None) -> None:
    assert row.user_identity == user, f"row done by {row.user_identity!r}, expected {user!r}: {row.to_dict()}"


@then('the audit trail holds one "{event_type}" row, done by "{user}"')
def step_one_row_by(context: Context, event_type: str, user: str) -> None:
    rows = _rows(context, event_type)
    assert len(rows) == 1, [r.to_dict() for r in rows]
    _same_user(rows[0], user)
    context.wiring_row = rows[0]


@then('the audit trail holds one "{event_type}" row, done by no one')
def step_one_row_by_nobody(context: Context, event_type: str) -> None:
    rows = _rows(context, event_type)
    assert len(rows) == 1, [r.to_dict() for r in rows]
    _same_user(rows[0], None)
    context.wiring_row = rows[0]


@then('the newest "{event_type}" row was done by "{user}"')
def step_newest_row_by(context: Context, event_type: str, user: str) -> None:
    rows = _rows(context, event_type)
    assert rows, f"no {event_type} row"
    _same_user(rows[0], user)
    context.wiring_row = rows[0]


@then("that row's columns say:")
def step_columns(context: Context) -> None:
    row = context.wiring_row
    for line in context.table:
        column, expected = line["column"], line["value"] or None
        assert getattr(row, column) == expected, f"{column} is {getattr(row, column)!r}, expected {expected!r}"


@then("that row's details are exactly:")
def step_details(context: Context) -> None:
    expected = {line["detail"]: json.loads(line["value"]) for line in context.table}
    stored = context.wiring_row.details
    assert stored == expected, f"stored details {stored!r}\nexpected       {expected!r}"


@then('the event the service emitted itself named the user "{user}"')
def step_event_named_user(context: Context, user: str) -> None:
    (event,) = context.wiring_emitted
    assert event.user_identity == user, event
    assert event.event_id == context.wiring_row.event_id


@then('every "{event_type}" row names the user whose request thread created it')
def step_rows_per_thread(context: Context, event_type: str) -> None:
    users = context.wiring_thread_users
    rows = _rows(context, event_type)
    assert len(rows) == len(users) * context.wiring_thread_count, len(rows)
    for row in rows:
        owner = str(row.session_id).split("-sess-")[0]
        assert owner in users, row.to_dict()
        _same_user(row, owner)


# --- #3936: across a restart ------------------------------------------------------

_SERVICE_PROCESS = """
import atexit, json, sys
from auditbus import AuditService, DomainEvent, EventType, identity
from auditbus.demo import play, wired_bus

bus = wired_bus(AuditService(sys.argv[1]))
bus.audit.flush()  # the service's own start row, before the backup job takes the lock
# atexit runs hooks last-registered first: this line is printed when the exit
# begins, before auditbus's own hook flushes.
atexit.register(lambda: print("exiting", flush=True))
print("ready", flush=True)
sys.stdin.readline()
emitted = []
bus.subscribe_all(lambda event: emitted.append(event.event_id))
with identity(sys.argv[2]):
    play(bus, run_id="restart", secret="sk-proj-Qm4Tn8Wv2Xy6Za0Bc3De7Fg1Hj5Kl9Mn")
    for step in range(int(sys.argv[3])):
        bus.emit(DomainEvent(
            event_type=EventType.STEP_COMPLETED,
            plan_id="plan-restart",
            details={"step": step, "output": "compiled and tested module %d; " % step * 30},
        ))
print(json.dumps(emitted), flush=True)
# No flush() and no close(): a normal interpreter exit must write everything.
"""

# A backup job: another process holding the database's write lock until told to let go.
_BACKUP_JOB = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
connection.close()
"""

_RAW_READER = """
import json, sqlite3, sys
connection = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
rows = connection.execute("SELECT event_id, event_type, user_identity FROM audit_log ORDER BY id").fetchall()
connection.close()
print(json.dumps([row for row in rows if not row[1].startswith("audit_")]))
"""


def _python(*args: str) -> str:
    result = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, f"status {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _child(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _line(child: subprocess.Popen[str]) -> str:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, f"the child process ended early:\n{child.communicate(timeout=60)[1]}"
    return line.strip()


def _tell(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("\n")
    child.stdin.flush()


def _stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.kill()
    child.communicate(timeout=60)


@given(
    'a service process ran a working session for "{user}" and reported {steps:d} completed steps'
    " while a backup job held the database's write lock"
)
def step_service_process(context: Context, user: str, steps: int) -> None:
    # The Background's service holds another file; this one belongs to the child processes.
    db = context.wiring_db.with_name("restart.db")
    context.wiring_restart_db = db
    service = _child(_SERVICE_PROCESS, str(db), user, str(steps))
    context.add_cleanup(_stop, service)
    assert _line(service) == "ready"
    backup = _child(_BACKUP_JOB, str(db))
    context.add_cleanup(_stop, backup)
    assert _line(backup) == "locked"
    _tell(service)
    context.wiring_first_ids = json.loads(_line(service))
    assert len(context.wiring_first_ids) == 10 + steps, len(context.wiring_first_ids)
    assert _line(service) == "exiting"
    context.wiring_service_process, context.wiring_backup_job = service, backup


@given("none of its events was on disk yet when the process began to exit")
def step_none_on_disk_yet(context: Context) -> None:
    rows = json.loads(_python(textwrap.dedent(_RAW_READER), str(context.wiring_restart_db)))
    assert rows == [], f"{len(rows)} rows were committed under the backup job's lock"


@when("the backup job lets go and the service process has exited by itself, without flushing")
def step_backup_lets_go(context: Context) -> None:
    _tell(context.wiring_backup_job)
    assert context.wiring_backup_job.wait(timeout=60) == 0
    service = context.wiring_service_process
    _, errors = service.communicate(timeout=60)
    assert service.returncode == 0, f"status {service.returncode}\n{errors}"
    assert "Traceback" not in errors, errors


@when("a second process reads the audit trail straight from the database file")
def step_second_process(context: Context) -> None:
    context.wiring_second_rows = json.loads(_python(textwrap.dedent(_RAW_READER), str(context.wiring_restart_db)))


@then('the second process finds every event the first one emitted, once each, all done by "{user}"')
def step_second_finds_all(context: Context, user: str) -> None:
    rows = context.wiring_second_rows
    found = [row[0] for row in rows]
    missing = set(context.wiring_first_ids) - set(found)
    assert not missing, f"{len(missing)} of {len(context.wiring_first_ids)} emitted events are not on disk"
    assert sorted(found) == sorted(context.wiring_first_ids), "rows that were not emitted, or twice"
    assert {row[2] for row in rows} == {user}


@then("the second process finds the nine audit types among them")
def step_second_finds_nine(context: Context) -> None:
    assert {row[1] for row in context.wiring_second_rows} >= _NINE


# --- L2: the event's own time -----------------------------------------------------


@given('a "{event_type}" event of plan "{plan}" that happened at {happened}')
def step_past_event(context: Context, event_type: str, plan: str, happened: str) -> None:
    context.wiring_happened = datetime.fromisoformat(happened)
    with _as_user(context):
        context.wiring_event = DomainEvent(
            event_type=EventType(event_type), plan_id=plan, timestamp=context.wiring_happened
        )


@when("the event is emitted on the wired bus")
def step_emit_past_event(context: Context) -> None:
    context.wiring_bus.emit(context.wiring_event)


@then('the row of plan "{plan}" is stamped {stored}')
def step_stamped(context: Context, plan: str, stored: str) -> None:
    (row,) = context.wiring_service.query(plan_id=plan)
    assert row.event_id == context.wiring_event.event_id
    assert row.timestamp.isoformat() == stored, f"stamped {row.timestamp.isoformat()}, expected {stored}"
    assert row.timestamp == context.wiring_happened
    context.wiring_row = row


@then("that row was written after the event happened")
def step_written_later(context: Context) -> None:
    row = context.wiring_row
    assert row.recorded_at is not None
    assert row.recorded_at > row.timestamp, (row.recorded_at, row.timestamp)


@then("the auditor asking for events between {start} and {end} finds that row")
def step_window(context: Context, start: str, end: str) -> None:
    rows = context.wiring_service.query(since=start, until=end, limit=None)
    assert [r.event_id for r in rows] == [context.wiring_row.event_id], [r.to_dict() for r in rows]


# --- redaction on disk --------------------------------------------------------------


@then('neither API key is anywhere in the bytes of the database\'s files, which do hold "{marker}"')
def step_no_key_on_disk(context: Context, marker: str) -> None:
    keys = [e.details["new_value"] for e in context.wiring_emitted if e.details.get("key") == marker]
    assert len(keys) == 2, keys
    assert all(k.startswith("sk-") for k in keys), keys
    context.wiring_service.flush()
    files = sorted(context.wiring_db.parent.glob(context.wiring_db.name + "*"))
    stored = b"".join(path.read_bytes() for path in files)
    assert marker.encode() in stored, f"{marker!r} is not in {[p.name for p in files]}: not the trail's files"
    for key in keys:
        assert key.encode() not in stored, f"{key[:12]}... reached {[p.name for p in files]}"
