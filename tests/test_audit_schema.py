"""The audit_log schema: versioned additive migrations and the legacy round trip, both ways."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import auditbus
import pytest
from audit_support import DOMAIN_ROWS, execute, legacy_audit, raw_rows, readable_folder, run_as_reader, write_locked
from auditbus import AuditService, DomainEvent

NEW_COLUMNS = {
    "event_id",
    "actor_name",
    "project_name",
    "session_id",
    "outcome",
    "source",
    "recorded_at",
    "prev_hash",
    "chain_hash",
}
LEGACY_COLUMNS = ["id", "timestamp", "event_type", "plan_id", "user_identity", "details"]


def _query(path: Path, sql: str) -> list[list[Any]]:
    script = (
        "import json, sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
        " print(json.dumps([list(r) for r in c.execute(sys.argv[2])]))"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path), sql], capture_output=True, text=True, check=True)
    rows: list[list[Any]] = json.loads(out.stdout)
    return rows


def columns(path: Path) -> list[str]:
    return [row[1] for row in _query(path, "PRAGMA table_info(audit_log)")]


def pragma(path: Path, name: str) -> object:
    return _query(path, f"PRAGMA {name}")[0][0]


def indexes(path: Path) -> list[list[str]]:
    names = [r[0] for r in _query(path, "SELECT name FROM pragma_index_list('audit_log')")]
    return [[r[0] for r in _query(path, f"SELECT name FROM pragma_index_info('{n}')")] for n in names]


def test_fresh_database_has_the_legacy_table_plus_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    AuditService(path).close()
    cols = columns(path)
    assert cols[:6] == LEGACY_COLUMNS
    assert set(cols[6:]) == NEW_COLUMNS
    assert pragma(path, "user_version") == 1
    assert pragma(path, "journal_mode") == "wal"
    found = indexes(path)
    for wanted in (
        ["event_type"],
        ["plan_id"],
        ["timestamp"],
        ["event_id"],
        ["user_identity"],
        ["session_id"],
        ["event_type", "timestamp"],
    ):
        assert wanted in found, wanted


def test_migration_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    for _ in range(3):
        with AuditService(path) as svc:
            svc.record("auth_success")
    assert len(columns(path)) == 15
    assert pragma(path, "user_version") == 1
    with AuditService(path) as svc:
        assert svc.count() == 3
        assert svc.verify().ok


def test_a_migrated_trail_opens_while_another_process_holds_its_write_lock(tmp_path: Path) -> None:
    """Nothing to migrate, no lock needed: a long purge elsewhere must not make every service opened meanwhile fail."""
    path = tmp_path / "a.db"
    AuditService(path).close()
    with write_locked(path):
        svc = AuditService(path, busy_timeout=0.1)
        event = DomainEvent(event_type="step_completed", plan_id="under-lock")
        svc.record_event(event)
        with pytest.raises(TimeoutError):
            svc.flush(timeout=0.3)  # the lock really is held: the row waits for it
    with svc:
        svc.flush()
        assert [e.event_id for e in svc.query(plan_id="under-lock")] == [event.event_id]
        assert svc.verify().ok
    # A legacy trail still needs the lock (to switch to WAL and migrate), and says so when it outlasts busy_timeout.
    legacy = tmp_path / "legacy.db"
    legacy_audit().AuditService(legacy).close()
    with write_locked(legacy), pytest.raises(auditbus.AuditError, match=r"legacy\.db.*database is locked"):
        AuditService(legacy, busy_timeout=0.1)


def test_a_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    AuditService(path).close()
    execute(path, "PRAGMA user_version = 99")
    for read_only in (False, True):
        with pytest.raises(auditbus.AuditError, match=r"a\.db.*schema version 99 is newer"):
            AuditService(path, read_only=read_only)


def test_legacy_database_opens_and_keeps_working(tmp_path: Path) -> None:
    legacy = legacy_audit()
    path = tmp_path / "legacy.db"
    old = legacy.AuditService(path)
    written = [
        old.record("plan_applied", plan_id="p1", user_identity="alice", details={"files": 2}),
        old.record("auth_failure", user_identity="mallory", details={"reason": "bad password"}),
    ]
    old.close()
    before = [tuple(r.values())[:6] for r in raw_rows(path)]

    with AuditService(path) as svc:
        found = svc.query(order="asc")
        assert [(e.id, e.timestamp, e.event_type, e.plan_id, e.user_identity, e.details) for e in found] == [
            (w.id, w.timestamp, w.event_type, w.plan_id, w.user_identity, w.details) for w in written
        ]
        added = svc.record("plan_cancelled", plan_id="p1")
        assert added.id > written[-1].id
        report = svc.verify()
        assert report.ok
        assert report.unchained == 2
        assert report.appended == 0  # the legacy rows come before the chain
        assert report.first_bad_id is None

    # The legacy rows are untouched, byte for byte (only columns were added).
    after = {r["id"]: tuple(r.values())[:6] for r in raw_rows(path)}
    assert [after[row[0]] for row in before] == before


def test_legacy_service_reads_and_appends_to_an_auditbus_database(tmp_path: Path) -> None:
    legacy = legacy_audit()
    path = tmp_path / "new.db"
    with AuditService(path) as svc:
        ours = svc.record("config_changed", plan_id="p1", user_identity="alice", details={"key": "theme"})
        svc.record_event(DomainEvent(event_type="plan_applied", plan_id="p2", user_identity="bob"))

    old = legacy.AuditService(path)
    seen = old.query(limit=100)
    by_id = {e.id: e for e in seen}
    assert by_id[ours.id].details == {"key": "theme"}
    assert by_id[ours.id].timestamp == ours.timestamp
    assert [e.plan_id for e in old.query(user_identity="bob")] == ["p2"]
    appended = old.record("auth_success", user_identity="carol", details={"via": "legacy"})
    old.close()

    with AuditService(path) as svc:
        (entry,) = svc.query(user_identity="carol")
        assert entry.id == appended.id
        assert entry.details == {"via": "legacy"}
        assert entry.chain_hash is None  # the legacy writer knows nothing of the chain
        report = svc.verify()
        assert report.ok, report
        svc.record("auth_success", user_identity="dave")
        svc.flush()
        # A chained row after the legacy append now covers it.
        report = svc.verify()
        assert report.ok
        assert report.unchained == 0
        assert svc.count() == 4

    # And the legacy service still reads the whole file.
    old = legacy.AuditService(path)
    assert {e.user_identity for e in old.query()} >= {"alice", "bob", "carol", "dave"}
    old.close()
    assert len(raw_rows(path, DOMAIN_ROWS)) == 4


def test_timestamps_are_iso_text_with_offset(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path) as svc:
        svc.record_event(
            DomainEvent(event_type="plan_created", timestamp=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc))
        )
    (row,) = raw_rows(path, "event_type = 'plan_created'")
    assert row["timestamp"] == "2026-01-02T03:04:05.000006+00:00"
    assert datetime.fromisoformat(row["recorded_at"]).tzinfo is not None


# A legacy writer that never pauses: each transaction holds the write lock
# while it inserts, and takes it again at once, as a busy legacy service does.
_BUSY_LEGACY_WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
n = 0
while True:
    conn.execute("BEGIN IMMEDIATE")
    for _ in range(1000):
        conn.execute(
            "INSERT INTO audit_log (timestamp, event_type, plan_id, details) VALUES (?, 'plan_applied', ?, '{}')",
            ("2026-01-01T00:00:00+00:00", f"legacy-{n}"),
        )
        n += 1
    conn.execute("COMMIT")
    print(n, flush=True)
"""


def test_a_legacy_trail_opens_while_the_legacy_service_writes_to_it_without_pause(tmp_path: Path) -> None:
    """The switch to WAL needs the lock the legacy writer keeps taking: the open waits for it instead of failing."""
    path = tmp_path / "legacy.db"
    legacy_audit().AuditService(path).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", _BUSY_LEGACY_WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "1000"  # writing
        with AuditService(path, busy_timeout=2.0) as svc:
            assert pragma(path, "journal_mode") == "wal"
            ours = svc.record("plan_cancelled", plan_id="ours")
            # The legacy writer goes on appending to the switched file.
            written = int(writer.stdout.readline())
            assert int(writer.stdout.readline()) == written + 1000
    finally:
        writer.kill()
        _, err = writer.communicate()
    assert "Error" not in err, err
    with AuditService(path, read_only=True) as svc:
        assert [e.id for e in svc.query(plan_id="ours")] == [ours.id]
        assert svc.count(plan_id="legacy-0") == 1
        assert svc.verify().ok


def test_a_file_refused_as_newer_is_left_as_it_was(tmp_path: Path) -> None:
    """A file refused is not written: not even switched to WAL first (its owner may not read WAL files)."""
    path = tmp_path / "a.db"
    legacy_audit().AuditService(path).close()
    execute(path, "PRAGMA user_version = 7")
    before = path.read_bytes()
    with pytest.raises(auditbus.AuditError, match=r"a\.db.*schema version 7 is newer"):
        AuditService(path)
    assert pragma(path, "journal_mode") == "delete"
    assert path.read_bytes() == before


def test_a_legacy_table_missing_columns_is_refused_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    execute(
        path,
        "CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL,"
        " event_type TEXT NOT NULL, details TEXT NOT NULL DEFAULT '{}')",
    )
    with pytest.raises(auditbus.AuditError) as refused:
        AuditService(path)
    message = str(refused.value)
    assert "a.db" in message
    assert "audit_log has no columns 'plan_id', 'user_identity'" in message
    assert "read_only=True" in message  # what to do
    assert "CREATE INDEX" not in message


def test_two_services_on_one_file_through_a_hard_link_both_commit(tmp_path: Path) -> None:
    """SQLite names a -wal file after the name a database is opened by, and shares one -shm per file:
    two services in one process opening one file by two names used to pair one -wal with the other's
    index, and the second writer retried for ever (its close() never returned)."""
    first = tmp_path / "trail.db"
    AuditService(first).close()
    second = tmp_path / "also.db"
    second.hardlink_to(first)
    code = f"""
import auditbus
a = auditbus.AuditService({str(first)!r})
b = auditbus.AuditService({str(second)!r})
for i in range(20):
    a.record("plan_applied", plan_id=f"a-{{i}}")
    b.record("plan_applied", plan_id=f"b-{{i}}")
    b.record_event(auditbus.DomainEvent(event_type="plan_cancelled", plan_id=f"b-{{i}}"))
b.close()
a.close()
with auditbus.AuditService({str(second)!r}, read_only=True) as reader:
    print(reader.count(event_type=["plan_applied", "plan_cancelled"]), reader.verify().ok)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["60", "True"]


def test_opening_a_file_with_several_names_warns_that_processes_must_share_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process opening the file by another name cannot be seen, and would damage it: said once, at open."""
    first = tmp_path / "trail.db"
    with caplog.at_level("WARNING", logger="auditbus"):
        AuditService(first).close()
    assert not [r for r in caplog.records if "hard links" in r.getMessage()]
    (tmp_path / "also.db").hardlink_to(first)
    with caplog.at_level("WARNING", logger="auditbus"):
        AuditService(first).close()
    warned = [r.getMessage() for r in caplog.records if "hard links" in r.getMessage()]
    assert len(warned) == 1
    assert "trail.db" in warned[0]
    assert "has 2 names" in warned[0]
    assert "same name" in warned[0]


def test_a_new_trail_in_a_folder_that_does_not_exist_is_refused_naming_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "audit.db"
    with pytest.raises(auditbus.AuditError) as refused:
        AuditService(path)
    message = str(refused.value)
    assert f"its folder {str(path.parent)!r} does not exist" in message.replace('"', "'")
    assert not path.parent.exists()


def test_a_closed_reader_by_another_name_does_not_send_a_later_writer_to_its_folder(tmp_path: Path) -> None:
    """Only a connection still open needs its name shared: a reader that opened the file by a hard link in a
    folder it may not write (read as immutable, then closed) must not make the process's next writer, given
    the name in a writable folder, keep its -wal file in the reader's folder and fail to open."""
    with readable_folder() as writable, readable_folder() as read_only:
        writable.chmod(0o777)
        first = writable / "trail.db"
        with AuditService(first) as svc:
            svc.record("plan_applied", plan_id="p-0")
        assert sorted(p.name for p in writable.iterdir()) == ["trail.db"]
        link = read_only / "trail.db"
        link.hardlink_to(first)
        code = f"""
import auditbus
with auditbus.AuditService({str(link)!r}, read_only=True) as reader:
    print(reader.count(event_type="plan_applied"))
with auditbus.AuditService({str(first)!r}) as writer:
    writer.record("plan_applied", plan_id="p-1")
with auditbus.AuditService({str(first)!r}, read_only=True) as reader:
    print(reader.count(event_type="plan_applied"), reader.verify().ok)
"""
        # The file stays writable by the child; only the reader's folder is not.
        done = run_as_reader(["-c", code], read_only, own_files=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["1", "2", "True"]


def test_rows_left_in_the_wal_beside_one_name_are_read_through_another(tmp_path: Path) -> None:
    """A read_only=True reader closing after the writer leaves the -wal file, with the rows, beside the name the
    file was opened by: a later open by a hard link must still go through that name, or it sees none of them."""
    first = tmp_path / "trail.db"
    second = tmp_path / "also.db"
    writer = AuditService(first)
    writer.record("plan_applied", plan_id="p-0")
    second.hardlink_to(first)
    reader = AuditService(second, read_only=True)
    writer.close()
    reader.close()
    assert (tmp_path / "trail.db-wal").stat().st_size > 0  # the rows are only there
    with AuditService(second, read_only=True) as again:
        assert again.count(event_type="plan_applied") == 1
        assert again.verify().ok
    with AuditService(second) as writer:
        writer.record("plan_applied", plan_id="p-1")
    with AuditService(first, read_only=True) as again:
        assert again.count(event_type="plan_applied") == 2
        assert again.verify().ok


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("how", ["renamed", "linked, then removed"])
def test_a_file_open_by_a_name_that_no_longer_leads_to_it_is_refused_by_another_naming_both(
    tmp_path: Path, how: str, read_only: bool
) -> None:
    """SQLite cannot open a WAL file by a second name while a connection has it open by the first (one -shm index,
    two -wal files), nor by the first once it leads elsewhere: the open says so instead of 'disk I/O error'."""
    first = tmp_path / "trail.db"
    second = tmp_path / "also.db"
    svc = AuditService(first)
    svc.record("plan_applied", plan_id="p-0")
    if how == "renamed":
        first.rename(second)
    else:
        second.hardlink_to(first)
        first.unlink()
    with pytest.raises(auditbus.AuditError) as caught:
        AuditService(second, read_only=read_only)
    message = str(caught.value)
    assert str(second) in message
    assert str(first) in message
    assert "no longer leads to it" in message
    assert "disk I/O error" not in message
    with pytest.raises(auditbus.AuditError, match="removed or replaced"):
        svc.close()
    # Once the service on the old name is closed, the file opens by its new name.
    with AuditService(second) as svc:
        svc.record("plan_applied", plan_id="p-1")
    with AuditService(second, read_only=True) as reader:
        assert reader.count(plan_id="p-1") == 1
        assert reader.verify().ok
