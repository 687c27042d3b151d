"""AuditService(read_only=True): reading a trail without writing a byte of it.

Auditors read copies kept as evidence, trails on read-only media and trails
they may not write; opening such a file must change nothing in it and must
not need write access.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import auditbus
import pytest
from audit_support import legacy_audit, readable_folder, reader_process, run_as_reader
from auditbus import AuditError, AuditService, DomainEvent, ReactiveEventBus

UTC = timezone.utc
EVERY_TYPE = sorted(auditbus.VALID_EVENT_TYPES | set(auditbus.AUDIT_LIFECYCLE_EVENT_TYPES))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_trail(path: Path, rows: int = 3) -> None:
    with AuditService(path) as service:
        for n in range(rows):
            service.record("plan_applied", plan_id=f"p-{n}", user_identity="alice", details={"n": n})


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "trail.db"
    write_trail(path)
    return path


def test_a_read_only_service_reads_the_trail_and_leaves_the_file_as_it_was(trail: Path) -> None:
    before = digest(trail)
    with AuditService(trail, read_only=True) as reader:
        assert [e.plan_id for e in reader.query()] == ["p-2", "p-1", "p-0"]
        assert reader.count(user_identity="alice") == 3
        assert [e.details for e in reader.iter_entries(user_identity="alice")] == [{"n": 0}, {"n": 1}, {"n": 2}]
        report = reader.verify()
        assert (report.ok, report.checked) == (True, 5)  # three rows and the writer's start and stop
        # No start or stop row of its own: only the writing service's.
        assert reader.count(event_type="audit_started") == 1
    assert digest(trail) == before


@pytest.mark.parametrize("purged", [False, True])
def test_a_lowered_schema_version_reads_the_anchor_the_migration_keeps(tmp_path: Path, purged: bool) -> None:
    """The migration keeps an audit_meta it finds; a reader sees the chain as a writer would."""
    path = tmp_path / "trail.db"
    with AuditService(path) as service:
        cutoff = service.record("plan_applied", user_identity="alice").timestamp
        service.record("plan_applied", user_identity="bob")
        if purged:
            assert service.purge(cutoff) > 0
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")
    conn.close()
    with AuditService(path, read_only=True) as reader:
        report = reader.verify()
    assert report.ok, report
    with AuditService(path) as service:  # migrates again
        assert service.verify().ok


def test_writes_on_a_read_only_service_raise_naming_the_mode(trail: Path) -> None:
    with AuditService(trail, read_only=True) as reader:
        with pytest.raises(AuditError, match=r"read_only=True; record\(\) needs a writable service"):
            reader.record("plan_applied")
        with pytest.raises(AuditError, match=r"read_only=True; record_event\(\) needs a writable service"):
            reader.record_event(DomainEvent(event_type="plan_applied"))
        with pytest.raises(AuditError, match=r"read_only=True; purge\(\) needs a writable service"):
            reader.purge(datetime(2020, 1, 1, tzinfo=UTC))
        with pytest.raises(AuditError, match=r"read_only=True; ReactiveEventBus\(audit=\) needs a writable service"):
            ReactiveEventBus(audit=reader)
        reader.flush()  # nothing was handed over: nothing to wait for
        assert reader.count() == 3


def test_stats_and_repr_say_read_only(trail: Path) -> None:
    reader = AuditService(trail, read_only=True)
    assert repr(reader) == f"AuditService({str(trail)!r}, read_only=True)".replace("'", '"')
    stats = reader.stats()
    assert (stats["read_only"], stats["closed"], stats["written"], stats["queued"]) == (True, False, 0, 0)
    reader.close()
    assert reader.stats()["closed"] is True
    with pytest.raises(auditbus.ClosedError):
        reader.query()
    with AuditService(trail) as writer:
        assert writer.stats()["read_only"] is False


def test_read_only_never_creates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(AuditError, match=r"no audit database at .*missing\.db.*never creates one"):
        AuditService(missing, read_only=True)
    assert not missing.exists()
    with pytest.raises(AuditError, match="is a directory"):
        AuditService(tmp_path, read_only=True)
    with pytest.raises(ValueError, match=r":memory:. with read_only=True"):
        AuditService(":memory:", read_only=True)


def test_a_fifo_is_refused_read_only_instead_of_blocking_the_open(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer that never comes: run in a child with a deadline."""
    fifo = tmp_path / "trail.db"
    os.mkfifo(fifo)
    code = textwrap.dedent("""
        import auditbus, sys
        try:
            auditbus.AuditService(sys.argv[1], read_only=True)
        except auditbus.AuditError as e:
            print(e)
    """)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("AuditService(<a FIFO>, read_only=True) did not return within 60 s")
    assert done.returncode == 0, done.stderr
    assert "trail.db" in done.stdout
    assert "not a regular file" in done.stdout


def test_another_applications_sqlite_file_is_refused_read_only(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x)")
    connection.close()
    with pytest.raises(AuditError, match="without an audit_log table"):
        AuditService(path, read_only=True)


def test_a_legacy_trail_is_read_without_being_migrated(tmp_path: Path) -> None:
    legacy = legacy_audit()
    path = tmp_path / "legacy.db"
    old = legacy.AuditService(path)
    old.record("plan_applied", plan_id="p-1", user_identity="bob", details={"files": 2})
    old.record("auth_failure", user_identity="eve")
    old.close()
    before = digest(path)
    with AuditService(path, read_only=True) as reader:
        entries = reader.query()
        assert [(e.event_type, e.user_identity, e.event_id, e.chain_hash) for e in entries] == [
            ("auth_failure", "eve", None, None),
            ("plan_applied", "bob", None, None),
        ]
        assert entries[1].details == {"files": 2}
        assert reader.count(user_identity="bob") == 1
        report = reader.verify()
        assert (report.ok, report.checked, report.unchained) == (True, 0, 2)
    assert digest(path) == before
    # Still the legacy schema: a writable auditbus service would have migrated it.
    assert legacy.AuditService(path).query(user_identity="eve")[0].event_type == "auth_failure"


_MIGRATE_AND_PURGE = """
import sys
from datetime import datetime, timezone
from auditbus import AuditService
with AuditService(sys.argv[1]) as service:
    service.record("config_changed", user_identity="carol", details={"step": 1})
    service.purge(datetime.now(timezone.utc))
    service.record("config_changed", user_identity="carol", details={"step": 2})
"""


def test_a_legacy_trail_migrated_and_purged_by_another_process_is_read_as_it_is_now(tmp_path: Path) -> None:
    legacy = legacy_audit()
    path = tmp_path / "legacy.db"
    old = legacy.AuditService(path)
    for n in range(3):
        old.record("auth_failure", user_identity="eve", details={"n": n})
    old.close()
    with AuditService(path, read_only=True) as reader:
        assert (reader.verify().ok, reader.verify().unchained) == (True, 3)
        # Another process migrates the trail, purges every row so far and writes on.
        subprocess.run([sys.executable, "-c", _MIGRATE_AND_PURGE, str(path)], check=True, timeout=60)
        # Not the legacy views of the file as it was: the chained rows with their hashes, not a gap.
        report = reader.verify()
        assert (report.ok, report.reason, report.unchained, report.appended) == (True, None, 0, 0)
        assert report.checked == reader.count(event_type=EVERY_TYPE) == 3  # the purge row, step 2, the stop row
        entry = reader.query(user_identity="carol")[0]
        assert entry.details == {"step": 2}
        assert entry.event_id is not None
        assert entry.chain_hash is not None


def test_a_path_beginning_with_two_slashes_is_read_as_the_writable_service_reads_it(trail: Path) -> None:
    # POSIX allows "//" at the start of a path; as a URI it would name a host.
    doubled = "/" + str(trail.resolve())
    with AuditService(doubled) as writer:
        writer.record("auth_success", user_identity="carol")
    with AuditService(doubled, read_only=True) as reader:
        assert reader.count(user_identity="carol") == 1


def test_a_legacy_table_made_without_autoincrement_is_read_and_migrated(tmp_path: Path) -> None:
    # Made by an SQLite tool rather than the legacy service: no sqlite_sequence table at all.
    path = tmp_path / "plain.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(
            "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, timestamp TEXT NOT NULL, event_type TEXT NOT NULL, "
            "plan_id TEXT, user_identity TEXT, details TEXT NOT NULL DEFAULT '{}');"
            "INSERT INTO audit_log (timestamp, event_type, user_identity) "
            "VALUES ('2026-01-01T00:00:00+00:00', 'auth_failure', 'eve');"
        )
    connection.close()
    before = digest(path)
    with AuditService(path, read_only=True) as reader:
        assert [e.user_identity for e in reader.query()] == ["eve"]
        assert (reader.verify().ok, reader.verify().unchained) == (True, 1)
    assert digest(path) == before
    with AuditService(path) as writer:
        writer.record("auth_success", user_identity="carol")
        assert [e.user_identity for e in writer.query()] == ["carol", "eve"]
        assert writer.verify().ok


def _copy_with_wal(trail: Path, folder: Path) -> Path:
    """A copy (in `folder`) of a live trail whose newest rows are still only in its -wal file."""
    folder.mkdir(exist_ok=True)
    copy = folder / "copy.db"
    with AuditService(trail) as writer:
        writer.record("auth_success", user_identity="carol")
        shutil.copyfile(trail, copy)
        shutil.copyfile(f"{trail}-wal", f"{copy}-wal")
    assert Path(f"{copy}-wal").stat().st_size > 0
    return copy


def test_rows_still_in_a_copied_wal_file_are_read(trail: Path, tmp_path: Path) -> None:
    copy = _copy_with_wal(trail, tmp_path / "evidence")
    with AuditService(copy, read_only=True) as reader:
        assert reader.query(limit=1)[0].user_identity == "carol"
        assert reader.verify().ok


# --- a reader without write permission -------------------------------------------------------


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    with readable_folder() as folder:
        yield folder


def test_a_file_the_process_may_not_write_is_refused_at_open_and_read_read_only(shared_folder: Path) -> None:
    path = shared_folder / "trail.db"
    write_trail(path)
    code = f"""
import auditbus
try:
    auditbus.AuditService({str(path)!r})
except auditbus.AuditError as exc:
    print("refused:", exc)
with auditbus.AuditService({str(path)!r}, read_only=True) as reader:
    print("rows:", reader.count(), "ok:", reader.verify().ok)
"""
    result = run_as_reader(["-c", code], shared_folder)
    assert result.returncode == 0, result.stderr
    # Refused when opened, not accepted and then retried for ever by the writer.
    assert "refused:" in result.stdout
    assert "cannot be written by this process" in result.stdout
    assert "read_only=True" in result.stdout
    assert "rows: 3 ok: True" in result.stdout


def test_a_copy_in_a_folder_the_reader_may_not_write_is_read_as_immutable(shared_folder: Path) -> None:
    path = shared_folder / "trail.db"
    write_trail(path)
    assert not Path(f"{path}-wal").exists()  # a clean close leaves the database file alone
    before = digest(path)
    code = f"""
import auditbus
with auditbus.AuditService({str(path)!r}, read_only=True) as reader:
    print("rows:", reader.count(), "ok:", reader.verify().ok)
"""
    result = run_as_reader(["-c", code], shared_folder)
    # SQLite cannot create its -shm file there; with no -wal file, nothing is missed by reading it as immutable.
    assert result.returncode == 0, result.stderr
    assert "rows: 3 ok: True" in result.stdout
    assert digest(path) == before
    assert sorted(p.name for p in shared_folder.iterdir()) == ["trail.db"]


def test_rows_in_a_wal_file_the_reader_cannot_open_are_an_error_not_a_silent_gap(
    trail: Path, shared_folder: Path
) -> None:
    copy = _copy_with_wal(trail, shared_folder)
    code = f"""
import auditbus
try:
    auditbus.AuditService({str(copy)!r}, read_only=True)
except auditbus.AuditError as exc:
    print("refused:", exc)
"""
    result = run_as_reader(["-c", code], shared_folder)
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout
    assert "its -wal file holds rows" in result.stdout


def test_a_link_to_a_copy_whose_wal_file_holds_rows_is_an_error_not_a_silent_gap(
    trail: Path, shared_folder: Path
) -> None:
    copy = _copy_with_wal(trail, shared_folder)
    with readable_folder() as links:
        # SQLite follows the link: the -wal file it reads is the one beside the copy, not beside the link.
        link = links / "link.db"
        link.symlink_to(copy)
        code = f"""
import auditbus
try:
    with auditbus.AuditService({str(link)!r}, read_only=True) as reader:
        print("carol:", reader.count(user_identity="carol"))
except auditbus.AuditError as exc:
    print("refused:", exc)
"""
        result = run_as_reader(["-c", code], shared_folder)
    assert result.returncode == 0, result.stderr
    assert "carol: 0" not in result.stdout
    assert "refused:" in result.stdout
    assert "its -wal file holds rows" in result.stdout


def test_a_trail_read_as_immutable_shows_rows_written_after_it_was_opened(shared_folder: Path) -> None:
    path = shared_folder / "trail.db"
    write_trail(path)
    # Counts alice's rows each time it reads a line: a follower such as `auditbus tail -f`.
    code = f"""
import sys, auditbus
reader = auditbus.AuditService({str(path)!r}, read_only=True)
print(reader.count(user_identity="alice"), flush=True)
for _ in sys.stdin:
    print(reader.count(user_identity="alice"), flush=True)
"""

    def count_now(child: subprocess.Popen[str]) -> str:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write("\n")
        child.stdin.flush()
        return child.stdout.readline().strip()

    with reader_process(["-c", code], shared_folder) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "3"
        with AuditService(path) as writer:
            writer.record("plan_applied", user_identity="alice")
        # Closed: its -wal file was folded into the database file and removed.
        assert not Path(f"{path}-wal").exists()
        assert count_now(child) == "4"
        writer = AuditService(path)
        writer.record("plan_applied", user_identity="alice")
        assert count_now(child) == "5"  # the row is still only in the -wal file the writer made
        writer.record("plan_applied", user_identity="alice")
        writer.close()
        assert count_now(child) == "6"


def test_a_writable_file_in_a_folder_the_process_may_not_write_is_refused_naming_the_folder(
    shared_folder: Path,
) -> None:
    path = shared_folder / "trail.db"
    write_trail(path)
    code = f"""
import os, auditbus
print("file writable:", os.access({str(path)!r}, os.W_OK))
try:
    auditbus.AuditService({str(path)!r})
except auditbus.AuditError as exc:
    print("refused:", exc)
"""
    result = run_as_reader(["-c", code], shared_folder, own_files=True)
    assert result.returncode == 0, result.stderr
    assert "file writable: True" in result.stdout
    # Not "cannot be written": the file can; SQLite's -wal and -shm files beside it cannot.
    assert "cannot be written by this process" not in result.stdout
    assert "its -wal and -shm files" in result.stdout
    assert "read_only=True" in result.stdout
