"""The hash chain: verify() finds the first edited, deleted or inserted row."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import auditbus
import pytest
from audit_support import execute, legacy_audit, raw_rows, sequence
from auditbus import AuditService, DomainEvent
from hypothesis import given, settings
from hypothesis import strategies as st

ROW_COLUMNS = (
    "id, timestamp, event_type, plan_id, user_identity, details, event_id, actor_name, project_name, session_id,"
    " outcome, source, recorded_at, prev_hash, chain_hash"
)


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    """A closed trail of 10 domain rows between the start and stop rows."""
    path = tmp_path / "chain.db"
    with AuditService(path) as svc:
        for i in range(10):
            svc.record_event(DomainEvent(event_type="resource_modified", plan_id=f"p{i}", details={"i": i}))
    return path


def ids(path: Path) -> list[int]:
    return [r["id"] for r in raw_rows(path)]


def verify(path: Path) -> object:
    with AuditService(path) as svc:
        return svc.verify()


def test_untouched_trail_verifies(trail: Path) -> None:
    report = verify(trail)
    assert report.ok
    assert bool(report)
    # start + 10 + stop, plus the verifying service's own start row if already committed.
    assert report.checked >= 12
    assert report.unchained == 0
    assert report.first_bad_id is None
    assert report.reason is None


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("UPDATE audit_log SET details = '{\"i\": 99}' WHERE id = ?", "details"),
        ("UPDATE audit_log SET user_identity = 'mallory' WHERE id = ?", "user"),
        ("UPDATE audit_log SET timestamp = '2000-01-01T00:00:00+00:00' WHERE id = ?", "time"),
        ("UPDATE audit_log SET event_type = 'plan_cancelled' WHERE id = ?", "type"),
        ("UPDATE audit_log SET chain_hash = 'ab' || substr(chain_hash, 3) WHERE id = ?", "hash"),
    ],
)
def test_an_edited_row_is_found(trail: Path, sql: str, what: str) -> None:
    target = ids(trail)[5]
    execute(trail, sql, (target,))
    report = verify(trail)
    assert not report.ok, what
    assert report.first_bad_id == target, what
    assert "edited" in report.reason


@pytest.mark.parametrize(
    ("sql", "column", "stored_as"),
    [
        # The same bytes as a blob: the hash reads them alike, but `user_identity = 'alice'` no longer matches.
        ("UPDATE audit_log SET user_identity = CAST(user_identity AS BLOB) WHERE id = ?", "user_identity", "a blob"),
        ("UPDATE audit_log SET event_type = CAST(event_type AS BLOB) WHERE id = ?", "event_type", "a blob"),
        ("UPDATE audit_log SET timestamp = CAST(timestamp AS BLOB) WHERE id = ?", "timestamp", "a blob"),
        # The hashes too: every column of a chained row is as auditbus wrote it, or verify() says so.
        ("UPDATE audit_log SET chain_hash = CAST(chain_hash AS BLOB) WHERE id = ?", "chain_hash", "a blob"),
        ("UPDATE audit_log SET prev_hash = CAST(prev_hash AS BLOB) WHERE id = ?", "prev_hash", "a blob"),
        # Invalid UTF-8 is read as U+FFFD, like the valid U+FFFD it replaced.
        (
            "UPDATE audit_log SET user_identity = CAST(X'6df0' AS TEXT) WHERE id = ?",
            "user_identity",
            "text that is not valid UTF-8",
        ),
    ],
)
def test_a_value_stored_as_another_type_with_the_same_bytes_is_found(
    tmp_path: Path, sql: str, column: str, stored_as: str
) -> None:
    path = tmp_path / "typed.db"
    with AuditService(path) as svc:
        target = svc.record("auth_success", user_identity="alice" if "BLOB" in sql else "m\ufffd").id
        svc.record("auth_success")
    execute(path, sql, (target,))
    with AuditService(path, read_only=True) as reader:
        report = reader.verify()
    assert not report.ok
    assert report.first_bad_id == target
    assert f"stores {column} as {stored_as}" in report.reason
    assert "edited" in report.reason


def test_a_deleted_row_is_found_at_the_row_after_it(trail: Path) -> None:
    rows = ids(trail)
    execute(trail, "DELETE FROM audit_log WHERE id = ?", (rows[4],))
    report = verify(trail)
    assert not report.ok
    assert report.first_bad_id == rows[5]
    assert "deleted" in report.reason


def test_an_inserted_row_is_found(trail: Path) -> None:
    rows = raw_rows(trail)
    # Replace row 4 by a forged row carrying a plausible link: copied hashes do not match it.
    victim = rows[4]
    execute(trail, "DELETE FROM audit_log WHERE id = ?", (victim["id"],))
    execute(
        trail,
        "INSERT INTO audit_log (id, timestamp, event_type, plan_id, user_identity, details, prev_hash, chain_hash)"
        " VALUES (?, ?, 'auth_success', NULL, 'mallory', '{}', ?, ?)",
        (victim["id"], victim["timestamp"], victim["prev_hash"], victim["chain_hash"]),
    )
    report = verify(trail)
    assert not report.ok
    assert report.first_bad_id == victim["id"]


def test_a_row_slipped_in_without_a_hash_is_found(trail: Path) -> None:
    rows = ids(trail)
    execute(trail, "DELETE FROM audit_log WHERE id = ?", (rows[3],))
    execute(
        trail,
        "INSERT INTO audit_log (id, timestamp, event_type, details) VALUES (?, '2026-01-01T00:00:00+00:00',"
        " 'auth_success', '{}')",
        (rows[3],),
    )
    report = verify(trail)
    assert not report.ok
    assert report.first_bad_id == rows[3]
    assert "slipped in" in report.reason


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, ...]]:
    """A closed trail whose rows fill every column, built once for the edits below."""
    path = tmp_path_factory.mktemp("pristine") / "pristine.db"
    with AuditService(path) as svc:
        for i in range(4):
            event = DomainEvent(
                event_type="plan_applied",
                plan_id=f"p{i}",
                user_identity="alice",
                actor_name="planner",
                project_name="billing",
                session_id=f"s{i}",
                details={"i": i, "outcome": "success"},
            )
            svc.record_event(event)
    return path, tuple(ids(path))


_EDITS = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from(["same bytes as a blob", "one more space", "upper case"]),
)


@settings(max_examples=500, deadline=None)
@given(row=st.integers(min_value=0), column=st.sampled_from(ROW_COLUMNS.split(", ")[1:]), edit=_EDITS)
def test_any_edit_of_one_column_of_a_chained_row_is_found_there(
    pristine: tuple[Path, tuple[int, ...]], row: int, column: str, edit: object
) -> None:
    """Whatever is stored instead, in whatever type: verify() names the row, or nothing changed."""
    original, rows = pristine
    target = rows[row % len(rows)]
    # A name of its own for each example: a copy under an earlier example's name could read that
    # example's -wal, left until the sqlite3 connection's statements are freed.
    path = original.with_name(f"edited-{uuid.uuid4().hex}.db")
    shutil.copy(original, path)
    # In this process, but never while a service has the file open (SQLite's locks are per process).
    with sqlite3.connect(path) as connection:
        read = f"SELECT {column}, typeof({column}), CAST({column} AS BLOB) FROM audit_log WHERE id = ?"
        value, *before = connection.execute(read, (target,)).fetchone()
        if isinstance(edit, str) and isinstance(value, str):
            edit = {
                "same bytes as a blob": value.encode(),
                "one more space": value + " ",
                "upper case": value.upper(),
            }.get(edit, edit)
        try:
            connection.execute(f"UPDATE audit_log SET {column} = ? WHERE id = ?", (edit, target))
        except sqlite3.IntegrityError:  # NOT NULL, or an event_id another row holds
            return
        after = list(connection.execute(read, (target,)).fetchone()[1:])
    connection.close()
    with AuditService(path, read_only=True) as reader:
        report = reader.verify()
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        name.unlink(missing_ok=True)
    if after == before:
        assert report.ok, report
    else:
        assert not report.ok, (column, edit)
        assert report.first_bad_id == target, report


def test_a_row_whose_chain_hash_was_removed_is_named_not_the_row_after_it(trail: Path) -> None:
    rows = ids(trail)
    execute(trail, "UPDATE audit_log SET chain_hash = NULL, prev_hash = NULL WHERE id = ?", (rows[5],))
    with AuditService(trail, read_only=True) as reader:
        report = reader.verify()
    assert not report.ok
    assert report.first_bad_id == rows[5]
    assert f"id {rows[5]}, without a chain hash, is not what row {rows[6]} was chained after" in report.reason
    # The walk stopped there: the row is not reported as appended after the chain.
    assert (report.unchained, report.appended) == (0, 0)


def test_the_newest_row_with_its_chain_hash_removed_is_found(trail: Path) -> None:
    """No row follows it to show the fold is wrong; the prev_hash auditbus wrote beside the hash is left."""
    last = ids(trail)[-1]
    execute(trail, "UPDATE audit_log SET chain_hash = NULL WHERE id = ?", (last,))
    with AuditService(trail, read_only=True) as reader:
        report = reader.verify()
    assert not report.ok
    assert report.first_bad_id == last
    assert "chain_hash was removed" in (report.reason or "")


def rebuild_without_primary_key(path: Path) -> None:
    """audit_log made again with an `id` column that holds anything, any number of times."""
    execute(path, "CREATE TABLE copy AS SELECT * FROM audit_log")
    execute(path, "DROP TABLE audit_log")
    execute(path, "ALTER TABLE copy RENAME TO audit_log")


@pytest.mark.parametrize("hashes", ["prev_hash, chain_hash", "NULL, NULL"])
def test_a_duplicated_id_in_a_rebuilt_table_is_named(trail: Path, hashes: str) -> None:
    rows = ids(trail)
    rebuild_without_primary_key(trail)
    columns = ROW_COLUMNS.removesuffix(", prev_hash, chain_hash")
    execute(trail, f"INSERT INTO audit_log SELECT {columns}, {hashes} FROM audit_log WHERE id = ?", (rows[4],))
    with AuditService(trail, read_only=True) as reader:
        report = reader.verify()
    assert not report.ok
    assert report.first_bad_id == rows[4]
    assert f"row id {rows[4]} appears twice" in report.reason


@pytest.mark.parametrize(("stored", "shown"), [("5.5", "5.5"), ("NULL", "NULL")])
def test_an_id_that_is_not_an_integer_in_a_rebuilt_table_is_named(trail: Path, stored: str, shown: str) -> None:
    rows = ids(trail)
    rebuild_without_primary_key(trail)
    execute(trail, f"UPDATE audit_log SET id = {stored} WHERE id = ?", (rows[4],))
    with AuditService(trail, read_only=True) as reader:
        report = reader.verify()
    assert not report.ok
    assert f"a row has id {shown}, not an integer" in report.reason


def test_a_row_left_out_of_an_index_is_found(trail: Path) -> None:
    """An index edited to lack a row hides it from every query filtering on that column."""
    target = ids(trail)[4]
    script = (
        "DROP INDEX ix_audit_log_plan_id;"
        f"CREATE INDEX ix_audit_log_plan_id ON audit_log(plan_id) WHERE id <> {target};"
        "PRAGMA writable_schema = ON;"
        "UPDATE sqlite_master SET sql = 'CREATE INDEX ix_audit_log_plan_id ON audit_log(plan_id)'"
        " WHERE name = 'ix_audit_log_plan_id';"
    )
    edit = f"import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); c.executescript({script!r})"
    subprocess.run([sys.executable, "-c", edit, str(trail)], check=True)
    plan = raw_rows(trail, "id = ?", (target,))[0]["plan_id"]
    with AuditService(trail, read_only=True) as reader:
        assert reader.count(plan_id=plan) == 0  # what the edit is for
        report = reader.verify()
    assert not report.ok
    assert report.first_bad_id == target
    assert f"row {target} missing from index ix_audit_log_plan_id" in (report.reason or "")


def test_reordered_rows_are_found(trail: Path) -> None:
    rows = raw_rows(trail)
    a, b = rows[2], rows[3]
    execute(trail, "UPDATE audit_log SET details = ? WHERE id = ?", (b["details"], a["id"]))
    execute(trail, "UPDATE audit_log SET details = ? WHERE id = ?", (a["details"], b["id"]))
    report = verify(trail)
    assert not report.ok
    assert report.first_bad_id == a["id"]


def test_rows_renumbered_with_the_anchor_moved_alike_are_found(trail: Path) -> None:
    """Ids are hashed with each row: every row moved one id up, anchor and sequence alike, is found though it links."""
    first = ids(trail)[0]
    # Two steps, so that no id is taken twice along the way.
    execute(trail, "UPDATE audit_log SET id = -id")
    execute(trail, "UPDATE audit_log SET id = 1 - id")
    execute(trail, "UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'audit_log'")
    execute(
        trail,
        "INSERT OR REPLACE INTO audit_meta (key, value) VALUES ('chain_anchor_id', ?)",
        (str(first),),
    )
    with AuditService(trail, read_only=True) as reader:
        report = reader.verify()
    assert (report.ok, report.first_bad_id) == (False, first + 1)
    assert "does not match its chain hash" in (report.reason or "")


def test_a_legacy_append_is_covered_by_the_next_chained_row(tmp_path: Path) -> None:
    legacy = legacy_audit()
    path = tmp_path / "mixed.db"
    with AuditService(path) as svc:
        svc.record("auth_success")
    old = legacy.AuditService(path)
    appended = old.record("auth_failure", user_identity="carol")
    old.close()
    report = verify(path)  # the verifier's own start row may or may not be in yet
    assert report.ok
    with AuditService(path) as svc:
        svc.record("auth_success", user_identity="dave")
        assert svc.verify().unchained == 0
    # Now the legacy row is inside the chain: editing it is tampering.
    execute(path, "UPDATE audit_log SET user_identity = 'nobody' WHERE id = ?", (appended.id,))
    report = verify(path)
    assert not report.ok
    assert report.first_bad_id == appended.id
    assert "edited" in report.reason


def test_two_services_on_one_file_extend_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    a = AuditService(path)
    b = AuditService(path)
    try:
        for i in range(50):
            (a if i % 2 else b).record_event(DomainEvent(event_type="step_started", details={"i": i}))
            if i % 7 == 0:
                a.record("step_completed")
        a.flush()
        b.flush()
        report = a.verify()
        assert report.ok, report
        assert a.count(event_type="step_started") == 50
    finally:
        a.close()
        b.close()
    assert verify(path).ok


def test_purge_reanchors_over_unchained_rows(tmp_path: Path) -> None:
    legacy = legacy_audit()
    path = tmp_path / "p.db"
    old = legacy.AuditService(path)
    for _ in range(3):
        old.record("auth_success")  # rows from before the migration
    old.close()
    with AuditService(path) as svc:
        first = svc.record("plan_applied")
    old = legacy.AuditService(path)
    old.record("auth_failure")  # a legacy append inside the chain
    old.close()
    with AuditService(path) as svc:
        last = svc.record("plan_applied")
        assert svc.verify().ok
        older = len(raw_rows(path, "id < ?", (last.id,)))
        assert older == 3 + 3 + 1 + 1  # 3 legacy, start+first+stop, 1 legacy append, this start row
        assert svc.purge(last.timestamp) == older
        assert raw_rows(path)[0]["id"] == last.id
        assert first.id < last.id
        report = svc.verify()
        assert report.ok, report
        assert report.unchained == 0


def test_a_cut_tail_is_found_after_the_trail_was_written_on(trail: Path) -> None:
    rows = ids(trail)
    first, last = rows[6], rows[-1]
    execute(trail, "DELETE FROM audit_log WHERE id >= ?", (first,))
    # The verifying service writes its start row first, chained to what is left.
    report = verify(trail)
    assert not report.ok
    assert report.first_bad_id == first
    assert f"newest rows (ids {first}..{last}) were removed" in report.reason


def test_removing_every_row_is_found(trail: Path) -> None:
    rows = ids(trail)
    execute(trail, "DELETE FROM audit_log")
    report = verify(trail)
    assert not report.ok
    assert report.first_bad_id == rows[0]
    assert f"ids {rows[0]}..{rows[-1]}" in report.reason


def test_a_cut_tail_with_a_lowered_sequence_is_not_seen(trail: Path) -> None:
    """The documented limit: sqlite_sequence is the only witness of the newest id."""
    rows = ids(trail)
    execute(trail, "DELETE FROM audit_log WHERE id >= ?", (rows[6],))
    execute(trail, "UPDATE sqlite_sequence SET seq = ? WHERE name = 'audit_log'", (rows[5],))
    assert verify(trail).ok


@pytest.mark.parametrize(
    ("stored", "read_as"),
    [("'abc'", 0), ("NULL", None), ("'{seq}'", "seq"), ("{seq}.5", "seq"), ("CAST('{seq}' AS BLOB)", "seq")],
)
def test_a_sequence_of_another_type_is_read_as_sqlite_reads_it(trail: Path, stored: str, read_as: object) -> None:
    """SQLite's AUTOINCREMENT reads sqlite_sequence as CAST(seq AS INTEGER); so does verify()."""
    rows = ids(trail)
    execute(trail, "DELETE FROM audit_log WHERE id > ?", (rows[5],))
    bigger = rows[-1] + 3
    execute(trail, f"UPDATE sqlite_sequence SET seq = {stored.format(seq=bigger)} WHERE name = 'audit_log'")
    with AuditService(trail, read_only=True) as reader:
        report = reader.verify()
    if read_as == "seq":
        assert not report.ok
        assert report.first_bad_id == rows[6]
        assert f"sqlite_sequence says id {bigger} was handed out" in report.reason
    else:
        assert report.ok, report  # no larger id is claimed: as if lowered, the documented limit
    # A writer reads it alike, and goes on writing.
    with AuditService(trail) as svc:
        written = svc.record("auth_success", user_identity="carol")
    assert written.id == (bigger if read_as == "seq" else rows[5]) + 2  # after the start row


def test_purging_then_verifying_stays_ok(trail: Path) -> None:
    with AuditService(trail) as svc:
        svc.flush()
        assert svc.purge(datetime(9999, 1, 1, tzinfo=timezone.utc)) > 0  # every row; the purge row follows
        report = svc.verify()
        assert report.ok, report
        assert report.checked == 1
    report = verify(trail)
    assert report.ok, report
    assert report.unchained == 0
    assert report.checked >= 3  # the purge row, the stop row, the verifier's start row


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_log SET user_identity = 'mallory' WHERE id = ?",
        "DELETE FROM audit_log WHERE id = ?",
    ],
)
def test_a_purge_does_not_delete_the_evidence_of_an_edit(trail: Path, sql: str) -> None:
    """Purging over an edited or deleted row would leave a trail that verifies."""
    rows = ids(trail)
    execute(trail, sql, (rows[3],))
    with AuditService(trail) as svc:
        before = svc.verify()
        assert not before.ok
        # A dry run answers as the purge would: refused, not a count of rows it would not delete.
        for dry_run in (True, False):
            with pytest.raises(auditbus.AuditError, match=f"refused: .*row {before.first_bad_id}"):
                svc.purge(datetime(9999, 1, 1, tzinfo=timezone.utc), dry_run=dry_run)
        assert svc.verify().first_bad_id == before.first_bad_id  # nothing was deleted
    assert ids(trail)[0] == rows[0]
    with AuditService(trail, read_only=True) as reader, pytest.raises(auditbus.AuditError, match="refused: "):
        reader.purge(datetime(9999, 1, 1, tzinfo=timezone.utc), dry_run=True)


def test_purging_every_row_of_a_table_without_autoincrement_never_reuses_an_id(tmp_path: Path) -> None:
    # Made by an SQLite tool rather than the legacy service: no sqlite_sequence remembers the largest id.
    path = tmp_path / "plain.db"
    execute(
        path,
        "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, timestamp TEXT NOT NULL, event_type TEXT NOT NULL, "
        "plan_id TEXT, user_identity TEXT, details TEXT NOT NULL DEFAULT '{}')",
    )
    execute(path, "INSERT INTO audit_log (timestamp, event_type) VALUES ('2026-01-01T00:00:00+00:00', 'auth_failure')")
    with AuditService(path) as svc:
        svc.record("auth_success", user_identity="carol")
        last = max(ids(path))
        assert svc.purge(datetime(9999, 1, 1, tzinfo=timezone.utc)) == last
        report = svc.verify()
        assert report.ok, report
        assert report.head_id == last + 1  # the purge row, after every id handed out
        svc.record("auth_success", user_identity="dave")
    report = verify(path)
    assert report.ok, report
    assert ids(path) == list(range(last + 1, last + 6))  # purge, dave, stop, the verifier's start and stop


def test_a_row_inserted_without_a_hash_is_folded_and_counted(trail: Path) -> None:
    execute(
        trail,
        "INSERT INTO audit_log (timestamp, event_type, user_identity, details)"
        " VALUES ('2026-01-01T00:00:00+00:00', 'auth_success', 'carol', '{}')",
    )
    with AuditService(trail) as svc:
        svc.record("auth_success", user_identity="dave")
        report = svc.verify()
    assert report.ok, report
    assert report.folded == 1
    assert report.unchained == 0


def test_a_row_inserted_without_a_hash_past_the_next_id_is_named_as_inserted(trail: Path) -> None:
    """No row was deleted: the row without a hash skipped ids when it was inserted."""
    last = ids(trail)[-1]
    execute(
        trail,
        "INSERT INTO audit_log (id, timestamp, event_type, details)"
        " VALUES (?, '2026-01-01T00:00:00+00:00', 'auth_success', '{}')",
        (last + 5,),
    )
    with AuditService(trail, read_only=True) as reader:
        report = reader.verify()
    assert (report.ok, report.first_bad_id) == (False, last + 1)
    assert f"or row {last + 5} was inserted past them" in (report.reason or "")


def test_a_row_appended_without_a_hash_after_the_chain_is_counted_as_appended(trail: Path) -> None:
    execute(
        trail,
        "INSERT INTO audit_log (timestamp, event_type, user_identity, details)"
        " VALUES ('2026-01-01T00:00:00+00:00', 'auth_success', 'mallory', '{}')",
    )
    with AuditService(trail, read_only=True) as reader:  # no chained row comes after it
        report = reader.verify()
    assert report.ok, report
    assert (report.unchained, report.appended, report.folded) == (1, 1, 0)
    assert "appended=1" in repr(report)


def test_a_duplicate_event_id_leaves_the_trail_verifiable(tmp_path: Path) -> None:
    path = tmp_path / "dup.db"
    event = DomainEvent(event_type="plan_applied", plan_id="p1")
    with AuditService(path) as svc:
        svc.record_event(event)
        svc.flush()
        svc.record_event(event)  # ignored: its own batch, the last insert of it
        svc.flush()
        assert sequence(path) == ids(path)[-1]
        assert svc.verify().ok
    other = AuditService(path)  # reads the head afresh
    try:
        other.record_event(event)
        other.record("auth_success")
        report = other.verify()
        assert report.ok, report
    finally:
        other.close()
    rows = ids(path)
    assert rows == list(range(rows[0], rows[0] + len(rows)))


# --- heads kept outside the file ------------------------------------------------------------


def forge(path: Path, like: Path) -> None:
    """Replaces `path` with a trail written afresh: every row's hash is valid, none is the original's."""
    with AuditService(like) as svc:
        for i in range(10):
            svc.record_event(DomainEvent(event_type="resource_modified", plan_id=f"p{i}", details={"i": -i}))
    path.write_bytes(like.read_bytes())


def test_the_report_names_its_head_and_a_kept_head_still_matches_later(trail: Path) -> None:
    with AuditService(trail, read_only=True) as svc:
        report = svc.verify()
    last = raw_rows(trail)[-1]
    assert (report.head_id, report.head_hash) == (last["id"], last["chain_hash"])
    with AuditService(trail) as svc:
        svc.record("auth_success", user_identity="alice")
        later = svc.verify(heads=[(report.head_id, report.head_hash)])
    assert later.ok, later.reason
    assert later.head_id is not None
    assert report.head_id is not None
    assert later.head_id > report.head_id


def test_a_kept_head_catches_a_trail_forged_wholesale(trail: Path, tmp_path: Path) -> None:
    with AuditService(trail, read_only=True) as svc:
        kept = svc.verify()
    forge(trail, tmp_path / "forged.db")
    with AuditService(trail, read_only=True) as svc:
        assert svc.verify().ok  # the forged chain links
        caught = svc.verify(heads=[(kept.head_id, kept.head_hash)])
    assert not caught.ok
    assert caught.first_bad_id == kept.head_id
    assert f"not the {kept.head_hash} kept for it (the trail was rewritten)" in (caught.reason or "")


def forged_hash(prev: str, row: dict[str, object]) -> str:
    """A row's chain hash as a forger computes it: SHA-256 of the domain, `prev` and every column, framed."""
    digest = hashlib.sha256(b"auditbus-chain-v1" + prev.encode())
    digest.update(int(str(row["id"])).to_bytes(8, "little", signed=True))
    for column in ROW_COLUMNS.split(", ")[1:-2]:
        value = row[column.strip()]
        if value is None:
            digest.update(b"\0")
        else:
            data = str(value).encode()
            digest.update(b"\1" + len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def test_a_row_edited_and_hashed_again_is_found_though_the_next_row_names_its_new_hash(trail: Path) -> None:
    """Each hash covers the prev_hash it follows: relinking the next row to a forged hash breaks that row's own."""
    with AuditService(trail, read_only=True) as svc:
        kept = svc.verify()
    rows = raw_rows(trail)
    edited, after = rows[4], rows[5]
    edited["details"] = '{"i": 99}'
    forged = forged_hash(edited["prev_hash"], edited)
    execute(
        trail,
        "UPDATE audit_log SET details = ?, chain_hash = ? WHERE id = ?",
        (edited["details"], forged, edited["id"]),
    )
    execute(trail, "UPDATE audit_log SET prev_hash = ? WHERE id = ?", (forged, after["id"]))
    with AuditService(trail, read_only=True) as svc:
        caught = svc.verify(heads=[(kept.head_id, kept.head_hash)])
    assert (caught.ok, caught.first_bad_id) == (False, after["id"])
    assert "does not match its chain hash" in (caught.reason or "")


def test_a_kept_head_that_was_cut_or_purged_fails_naming_it(trail: Path) -> None:
    with AuditService(trail, read_only=True) as svc:
        kept = svc.verify()
    assert kept.head_id is not None
    assert kept.head_hash is not None
    head = (kept.head_id, kept.head_hash)
    with AuditService(trail) as svc:
        svc.purge(datetime.now(timezone.utc))
        purged = svc.verify(heads=[head])
    assert (purged.ok, purged.first_bad_id) == (False, kept.head_id)
    assert "no longer in the chain" in (purged.reason or "")


@pytest.mark.parametrize(
    ("heads", "error", "fragment"),
    [
        ("12:" + "0" * 64, TypeError, "got a str"),
        ([(0, "0" * 64)], ValueError, "int >= 1"),
        ([(3, "XYZ")], ValueError, "64 lowercase hex digits"),
        ([3], ValueError, "(head_id, head_hash) pairs"),
        (5, TypeError, "got int"),
    ],
)
def test_bad_heads_name_what_is_accepted(trail: Path, heads: object, error: type, fragment: str) -> None:
    with AuditService(trail, read_only=True) as svc, pytest.raises(error, match=re.escape(fragment)):
        svc.verify(heads=heads)  # type: ignore[arg-type]


def test_heads_kept_as_json_are_read_back_as_lists(trail: Path) -> None:
    with AuditService(trail, read_only=True) as svc:
        kept = svc.verify()
        heads = json.loads(json.dumps([(kept.head_id, kept.head_hash)]))
        assert heads == [[kept.head_id, kept.head_hash]]
        assert svc.verify(heads=heads).ok
        wrong = [[kept.head_id, "0" * 64]]
        assert (svc.verify(heads=wrong).ok, svc.verify(heads=wrong).first_bad_id) == (False, kept.head_id)
        with pytest.raises(ValueError, match=re.escape("(head_id, head_hash) pairs")):
            svc.verify(heads=[[kept.head_id, kept.head_hash, "extra"]])


def test_an_anchor_moved_past_chained_rows_is_named_as_such(trail: Path) -> None:
    rows = ids(trail)
    execute(trail, "UPDATE audit_meta SET value = ? WHERE key = 'chain_anchor_id'", (str(rows[4]),))
    with AuditService(trail, read_only=True) as reader:
        report = reader.verify()
    assert (report.ok, report.first_bad_id) == (False, rows[0])
    assert "the chain anchor was moved past it" in (report.reason or "")


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_meta SET value = CAST(value - 1 AS TEXT) WHERE key = 'chain_anchor_id'",
        "UPDATE audit_meta SET value = ' ' || value WHERE key = 'chain_anchor_id'",
        f"UPDATE audit_meta SET value = '{'0' * 64}' WHERE key = 'chain_anchor_hash'",
        "DELETE FROM audit_meta",
    ],
)
def test_an_edited_anchor_after_a_purge_is_named_as_such(tmp_path: Path, sql: str) -> None:
    """Rows a purge removed are not reported as deleted when the anchor after them was edited."""
    path = tmp_path / "purged.db"
    with AuditService(path) as svc:
        cutoff = svc.record("auth_success").timestamp
        svc.record("auth_success")
        assert svc.purge(cutoff) > 0
    execute(path, sql)
    with AuditService(path, read_only=True) as reader:
        report = reader.verify()
    assert not report.ok
    assert "the chain anchor" in (report.reason or "")
    assert "audit_meta" in (report.reason or "")


def test_a_dropped_audit_meta_is_read_as_no_anchor(trail: Path, tmp_path: Path) -> None:
    """Without the table, the chain starts at the first row: a trail never purged still verifies."""
    execute(trail, "DROP TABLE audit_meta")
    with AuditService(trail, read_only=True) as reader:
        assert reader.verify().ok
    with AuditService(trail) as svc:
        cutoff = svc.record("auth_success", user_identity="carol").timestamp  # the writer goes on
        assert svc.verify().ok
        assert svc.purge(cutoff) > 0  # and a purge anchors the chain again
        assert svc.verify().ok
    # After a purge the rows left no longer follow the start of the chain.
    purged = tmp_path / "purged.db"
    with AuditService(purged) as svc:
        cutoff = svc.record("auth_success").timestamp
        svc.record("auth_success")
        assert svc.purge(cutoff) > 0
    execute(purged, "DROP TABLE audit_meta")
    with AuditService(purged, read_only=True) as reader:
        report = reader.verify()
    assert not report.ok
    assert report.first_bad_id == ids(purged)[0]


@pytest.mark.parametrize(
    "dropped",
    [
        ("outcome",),
        ("source",),
        ("chain_hash",),
        ("recorded_at", "prev_hash"),
        ("session_id",),  # its index dropped first, as SQLite requires
    ],
    ids=",".join,
)
def test_a_dropped_column_is_a_verdict_and_a_writer_refuses_the_file(trail: Path, dropped: tuple[str, ...]) -> None:
    """Every chained row's hash covers the column: without it, no row can be checked."""
    first = ids(trail)[0]
    for column in dropped:
        execute(trail, f"DROP INDEX IF EXISTS ix_audit_log_{column}")
        execute(trail, f"ALTER TABLE audit_log DROP COLUMN {column}")
    with AuditService(trail, read_only=True) as reader:
        report = reader.verify()
    assert not report.ok
    assert report.first_bad_id == first
    for column in dropped:
        assert f"'{column}'" in (report.reason or "")
    assert "dropped" in (report.reason or "")
    # A writer cannot write a row the chain covers: refused when opened, naming the column.
    with pytest.raises(auditbus.AuditError, match=f"no columns? '{dropped[0]}'.*read_only=True"):
        AuditService(trail)


def test_a_renamed_column_is_found_as_dropped(trail: Path) -> None:
    execute(trail, "ALTER TABLE audit_log RENAME COLUMN outcome TO result")
    with AuditService(trail, read_only=True) as reader:
        report = reader.verify()
    assert not report.ok
    assert "'outcome'" in (report.reason or "")


def test_rows_before_a_kept_head_rewritten_and_re_anchored_are_found(trail: Path) -> None:
    with AuditService(trail, read_only=True) as svc:
        kept = svc.verify()
    assert kept.head_id is not None
    assert kept.head_hash is not None
    # Every row before the head edited and stripped of its hash, the anchor
    # moved to just before the head with the head's prev_hash: the head links.
    prev = raw_rows(trail, "id = ?", (kept.head_id,))[0]["prev_hash"]
    execute(
        trail,
        "UPDATE audit_log SET details = '{\"i\": 99}', prev_hash = NULL, chain_hash = NULL WHERE id < ?",
        (kept.head_id,),
    )
    execute(
        trail,
        "INSERT OR REPLACE INTO audit_meta (key, value) VALUES ('chain_anchor_id', ?), ('chain_anchor_hash', ?)",
        (str(kept.head_id - 1), prev),
    )
    with AuditService(trail, read_only=True) as svc:
        caught = svc.verify(heads=[(kept.head_id, kept.head_hash)])
    assert (caught.ok, caught.first_bad_id) == (False, ids(trail)[0])
    assert "at or before the chain anchor" in (caught.reason or "")


def test_kept_heads_that_disagree_fail(trail: Path) -> None:
    with AuditService(trail, read_only=True) as svc:
        kept = svc.verify()
        assert kept.head_id is not None
        other = "0" * 64
        for heads in (
            [(kept.head_id, kept.head_hash), (kept.head_id, other)],
            [(kept.head_id, other), (kept.head_id, kept.head_hash)],
        ):
            report = svc.verify(heads=heads)
            assert (report.ok, report.first_bad_id) == (False, kept.head_id)
            assert f"not the {other} kept for it" in (report.reason or "")
