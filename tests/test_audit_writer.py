"""The writer thread: flush semantics, group commit, back-pressure, retry under faults, hostile input."""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import auditbus
import pytest
from audit_support import (
    checkpoint_running,
    execute,
    raw_query,
    raw_rows,
    run_script,
    wait_until,
    write_locked,
    writer_threads,
)
from auditbus import AuditService, DomainEvent


def event(i: int) -> DomainEvent:
    return DomainEvent(event_type="step_completed", plan_id=f"p{i}", details={"i": i})


@contextmanager
def held_back(svc: AuditService, path: Path) -> Iterator[None]:
    """Another process holds the write lock, and the writer holds back its first row (`event(0)`), retrying."""
    svc.flush()
    with write_locked(path):
        svc.record_event(event(0))
        wait_until(lambda: svc.stats()["retries"] >= 1, "the writer to hold its batch")
        yield


def test_flush_returns_when_everything_before_it_is_committed(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path) as svc:
        for i in range(3000):  # more than one batch
            svc.record_event(event(i))
        svc.flush()
        # Read by another process: committed, not just visible to this one.
        rows = raw_rows(path, "event_type = 'step_completed'")
        assert [r["plan_id"] for r in rows] == [f"p{i}" for i in range(3000)]
        assert svc.stats()["queue_depth"] == 0


def test_record_is_durable_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path) as svc:
        entry = svc.record("auth_success", user_identity="alice")
        (row,) = raw_rows(path, "id = ?", (entry.id,))
        assert row["user_identity"] == "alice"
        assert row["chain_hash"] == entry.chain_hash


def test_a_lone_record_lands_after_every_row_handed_over_before_it(tmp_path: Path) -> None:
    # A lone durable caller commits its own row when the writer has nothing
    # in hand; rows it handed over just before must still come first.
    path = tmp_path / "a.db"
    with AuditService(path) as svc:
        order: list[str] = []
        for k in range(40):
            for i in range(k % 7):
                svc.record_event(event(1000 * k + i))
                order.append(f"p{1000 * k + i}")
            svc.record("auth_success", plan_id=f"r{k}")
            order.append(f"r{k}")
        svc.flush()
        rows = raw_rows(path, "event_type IN ('step_completed', 'auth_success')")
        assert [r["plan_id"] for r in rows] == order
        assert svc.verify().ok


@pytest.mark.parametrize(
    ("busy_timeout", "counter", "count"),
    [(0.02, "retries", 2), (2.0, "errors", 1)],
    # The lock outlasts the writer's first tries too; or it goes once only the caller's own commit gave up.
    ids=["locked-for-the-writer-too", "gone-before-the-writer-tries"],
)
def test_a_lone_record_facing_a_locked_database_waits_reports_the_outage_and_lands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, busy_timeout: float, counter: str, count: int
) -> None:
    path = tmp_path / "a.db"
    caplog.set_level(logging.WARNING, logger="auditbus")
    with AuditService(path, busy_timeout=busy_timeout) as svc:
        svc.flush()
        returned: list[auditbus.AuditEntry] = []
        with write_locked(path):
            caller = threading.Thread(target=lambda: returned.append(svc.record("auth_success", plan_id="r")))
            caller.start()
            wait_until(lambda: svc.stats()[counter] >= count, f"{counter} >= {count}", timeout=60)
            assert caller.is_alive()
            assert returned == []  # not acknowledged while it cannot be written
            assert "locked" in (svc.stats()["last_error"] or "")
        caller.join(timeout=60)
        (entry,) = returned
        (row,) = raw_rows(path, "id = ?", (entry.id,))
        assert row["plan_id"] == "r"
        # Reported however short: logged, and the outage is an audit row.
        (failure,) = svc.query(event_type="audit_failure")
        assert "locked" in failure.details["error"]
        assert svc.verify().ok
    assert any("keeping them and retrying" in r.getMessage() for r in caplog.records)
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_record_event_does_not_wait_for_a_locked_database(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path, busy_timeout=0.05) as svc:
        svc.flush()
        with write_locked(path):
            for i in range(100):
                svc.record_event(event(i))  # returns while the file is locked by another process
            wait_until(lambda: svc.stats()["retries"] >= 1, "the writer to retry")
            with pytest.raises(TimeoutError, match="flush"):
                svc.flush(timeout=0.1)
        svc.flush()  # the lock is gone: the rows land
        assert svc.count(event_type="step_completed") == 100


def test_flush_with_a_zero_timeout_returns_once_everything_handed_over_is_committed(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path, busy_timeout=0.05) as svc:
        svc.record_event(event(1))
        svc.flush()
        svc.flush(timeout=0)  # nothing is waiting: done, not a timeout
        svc.record("auth_success")
        svc.flush(timeout=0)
        with write_locked(path):
            svc.record_event(event(2))
            with pytest.raises(TimeoutError, match="flush"):
                svc.flush(timeout=0)  # a row is still waiting for the lock
        svc.flush()
        svc.flush(timeout=0)
        assert svc.count(event_type="step_completed") == 2


def test_a_locked_database_is_retried_logged_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "a.db"
    caplog.set_level(logging.WARNING, logger="auditbus")
    with AuditService(path, busy_timeout=0.02) as svc:
        svc.flush()
        with write_locked(path):
            svc.record_event(event(1))
            wait_until(lambda: svc.stats()["retries"] >= 2, "two retries")
            stats = svc.stats()
            assert stats["errors"] >= 2
            assert "locked" in (stats["last_error"] or "")
            wait_until(
                lambda: any(r.name == "auditbus" and "retrying" in r.getMessage() for r in caplog.records),
                "the failure to be logged",
            )
        svc.flush()
        assert svc.count(event_type="step_completed") == 1
        # The fault is itself an audit row, written once the database took writes again.
        (failure,) = svc.query(event_type="audit_failure")
        assert "locked" in failure.details["error"]
        assert svc.verify().ok
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_a_checkpoint_another_process_runs_is_neither_an_error_nor_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Several processes appending to one trail meet each other's checkpoints all the time.
    path = tmp_path / "a.db"
    wal = path.with_name("a.db-wal")
    caplog.set_level(logging.INFO, logger="auditbus")
    with AuditService(path) as svc:
        svc.flush()
        size = path.stat().st_size
        with checkpoint_running(path):
            for i in range(4000):
                svc.record_event(DomainEvent(event_type="step_completed", plan_id=f"p{i}", details={"t": "x" * 1000}))
                if i % 500 == 499:
                    svc.flush()
            stats = svc.stats()
            # Checkpoints came due (1000 WAL frames) and were held back: nothing reached the database file.
            assert wal.stat().st_size > 1000 * 4096
            assert path.stat().st_size == size
        assert (stats["errors"], stats["last_error"]) == (0, None), stats
        assert not [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()]
        # Once the other one is over, checkpoints run again.
        for i in range(1000):
            svc.record_event(DomainEvent(event_type="step_completed", plan_id=f"q{i}", details={"t": "x" * 1000}))
        svc.flush()
        wait_until(lambda: path.stat().st_size > size, "a checkpoint into the database file")
        assert svc.verify().ok


def test_concurrent_record_callers_share_a_commit(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path, busy_timeout=0.02) as svc:
        svc.flush()
        before = svc.stats()["batches"]
        results: list[auditbus.AuditEntry] = []
        with write_locked(path):
            svc.record_event(event(0))
            wait_until(lambda: svc.stats()["retries"] >= 1, "the writer to hold its first batch")
            threads = [threading.Thread(target=lambda: results.append(svc.record("auth_success"))) for _ in range(8)]
            for t in threads:
                t.start()
            wait_until(lambda: svc.stats()["queue_depth"] == 8, "8 durable callers waiting")
            assert results == []  # nobody returned before a commit
        for t in threads:
            t.join(timeout=60)
        assert len(results) == 8
        assert len({e.id for e in results}) == 8
        # One commit for the eight durable callers: the same batch stamped them all.
        assert len({e.recorded_at for e in results}) == 1
        assert svc.stats()["batches"] - before == 2


def test_concurrent_record_callers_are_grouped_into_few_commits(tmp_path: Path) -> None:
    workers, calls = 8, 25
    rows = workers * calls
    ids: list[list[int]] = [[] for _ in range(workers)]
    with AuditService(tmp_path / "a.db") as svc:
        svc.flush()
        before = svc.stats()["batches"]
        start = threading.Barrier(workers)

        def work(worker: int) -> None:
            start.wait()
            for i in range(calls):
                ids[worker].append(svc.record("auth_success", user_identity=f"w{worker}", details={"i": i}).id)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batches = svc.stats()["batches"] - before
        # Callers come back one at a time after each commit; committing on the
        # first row gives about 3 rows per commit, holding it open for the
        # callers inside record() gives close to 8.
        assert batches <= rows // 5, f"{rows} durable rows took {batches} commits"
        assert len({i for worker in ids for i in worker}) == rows
        for worker in range(workers):
            stored = svc.query(user_identity=f"w{worker}", order="asc", limit=None)
            assert [e.id for e in stored] == ids[worker]  # each caller's rows, in its order, under its ids
            assert [e.details["i"] for e in stored] == list(range(calls))
        assert svc.verify().ok


def test_durable_write_behind_and_flush_callers_mixed_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path) as svc:
        durable: list[int] = []

        def record(worker: int) -> None:
            for i in range(30):
                durable.append(svc.record("auth_success", details={"w": worker, "i": i}).id)

        def emit() -> None:
            for i in range(300):
                svc.record_event(event(i))
                if i % 50 == 0:
                    svc.flush()

        threads = [threading.Thread(target=record, args=(w,)) for w in range(4)]
        threads.append(threading.Thread(target=emit))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        svc.flush()
        assert len(set(durable)) == 120
        stored = {r["id"] for r in raw_rows(path, "event_type = 'auth_success'")}
        assert stored == set(durable)  # every acknowledged row is on disk, under the id it was given
        assert len(raw_rows(path, "event_type = 'step_completed'")) == 300
        assert svc.verify().ok


def test_writers_taking_turns_on_one_file_keep_consecutive_ids_and_one_chain(tmp_path: Path) -> None:
    # Each writer reuses the chain head of its own last commit only while no
    # other connection wrote: here every batch follows another writer's.
    path = tmp_path / "a.db"
    with AuditService(path) as a, AuditService(path) as b:
        a.flush()
        b.flush()
        entries: list[auditbus.AuditEntry] = []
        for i in range(10):
            entries.append(a.record("auth_success", details={"i": i}))
            if i == 7:  # a purge on a's own connection, which data_version does not show to a
                assert a.purge(entries[0].timestamp) >= 1
                entries.append(a.record("auth_success", details={"after_purge": i}))
            entries.append(b.record("auth_failure", details={"i": i}))
            if i == 4:  # another process appends the way the legacy service does: no chain columns
                execute(
                    path,
                    "INSERT INTO audit_log (timestamp, event_type, details) VALUES (?, 'plan_applied', '{}')",
                    (entries[-1].timestamp.isoformat(),),
                )
        ids = [e.id for e in entries]
        assert ids == sorted(set(ids))
        rows = raw_rows(path, "id >= ?", (ids[0],))
        by_id = {r["id"]: r for r in rows}
        for before, after in itertools.pairwise(entries):
            if after.id == before.id + 1:  # nothing between them: the chain links them directly
                assert by_id[after.id]["prev_hash"] == before.chain_hash
        assert all(by_id[e.id]["chain_hash"] == e.chain_hash for e in entries)
        assert list(by_id) == list(range(ids[0], ids[-1] + 1))  # no id skipped or reused
        assert a.verify().ok
        assert b.verify().ok


def test_the_wal_is_checkpointed_as_it_grows(tmp_path: Path) -> None:
    # The writer runs its own checkpoints (after replying); without them
    # 400 one-row commits of ~11 WAL frames each would leave a ~18 MB WAL.
    path = tmp_path / "a.db"
    wal = tmp_path / "a.db-wal"
    with AuditService(path) as svc:
        for i in range(400):
            svc.record("step_completed", plan_id=f"p{i}", details={"blob": "x" * 1000})
        assert 0 < wal.stat().st_size < 8 << 20
        assert path.stat().st_size > 300 << 10  # the rows were copied into the database file
        assert svc.verify().ok
        assert svc.count(event_type="step_completed") == 400


def test_a_checkpoint_coming_due_takes_no_room_in_the_queue(tmp_path: Path) -> None:
    # One record() at a time, in a queue of one slot that never waits: the
    # caller queued nothing else, so the WAL's checkpoints (one about every
    # hundred of these commits) must not make a record() find the queue full.
    path = tmp_path / "a.db"
    wal = tmp_path / "a.db-wal"
    with AuditService(path, queue_size=1, put_timeout=0) as svc:
        svc.flush()
        for i in range(400):
            svc.record("step_completed", plan_id=f"p{i}")
        assert svc.stats()["rejected"] == 0
        assert 0 < wal.stat().st_size < 8 << 20
        assert svc.count(event_type="step_completed") == 400


def test_a_full_queue_raises_and_drops_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path, queue_size=4, put_timeout=0.05, busy_timeout=0.02) as svc:
        with held_back(svc, path):
            for i in range(1, 5):
                svc.record_event(event(i))  # fills the queue
            with pytest.raises(auditbus.QueueFullError, match="put_timeout"):
                svc.record_event(event(5))
            with pytest.raises(auditbus.QueueFullError):
                svc.record("auth_success")
            assert svc.stats()["rejected"] == 2
        svc.flush()
        assert [e.details["i"] for e in svc.query(event_type="step_completed", order="asc")] == [0, 1, 2, 3, 4]


def test_a_flush_that_finds_the_queue_full_is_not_counted_as_a_rejected_record(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path, queue_size=2, put_timeout=0, busy_timeout=0.02) as svc:
        with held_back(svc, path):
            svc.record_event(event(1))
            svc.record_event(event(2))  # the queue is full
            for timeout in (0, 0.05):
                with pytest.raises(TimeoutError, match="flush"):
                    svc.flush(timeout=timeout)
            # `rejected` counts records not accepted: none was.
            assert svc.stats()["rejected"] == 0
            with pytest.raises(auditbus.QueueFullError):
                svc.record_event(event(3))
            assert svc.stats()["rejected"] == 1
        svc.flush()
        assert svc.count(event_type="step_completed") == 3


def test_flush_with_a_zero_timeout_leaves_nothing_in_the_queue_that_records_need(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path, queue_size=4, put_timeout=0, busy_timeout=0.02) as svc:
        with held_back(svc, path):
            # A poll for durability during the outage; before, each call left a
            # message in the queue and the fifth found it full.
            for _ in range(10):
                with pytest.raises(TimeoutError, match="flush"):
                    svc.flush(timeout=0)
            assert svc.stats()["queue_depth"] == 0
            for i in range(1, 5):
                svc.record_event(event(i))  # the queue still holds four records
        svc.flush()
        assert svc.count(event_type="step_completed") == 5


def test_flushes_that_time_out_during_an_outage_leave_the_queue_to_the_records(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path, queue_size=4, put_timeout=0, busy_timeout=0.02) as svc:
        with held_back(svc, path):
            # Before, each flush that gave up left its message queued: the
            # queue filled with them and refused the records.
            for _ in range(10):
                with pytest.raises(TimeoutError, match="flush"):
                    svc.flush(timeout=0.01)
            assert svc.stats()["queue_depth"] == 1
            for i in range(1, 4):
                svc.record_event(event(i))
            with pytest.raises(TimeoutError, match="flush"):
                svc.flush(timeout=0.01)  # waits on the kept message; its own would not fit
        svc.flush()
        assert svc.count(event_type="step_completed") == 4
        # Once the lock is gone, a flush answers for the rows after the kept message too.
        svc.record_event(event(4))
        svc.flush(timeout=60)
        assert len(raw_rows(path, "event_type = 'step_completed'")) == 5


class Interrupted(Exception):
    """Raised by the test's SIGINT handler, as Ctrl-C raises KeyboardInterrupt."""


@contextmanager
def _sigint_interrupts() -> Iterator[int]:
    """SIGINT raises `Interrupted` in this thread, the main one (signals run
    there); yields its id for `signal.pthread_kill`."""

    def interrupted(signum: int, frame: object) -> None:
        raise Interrupted

    main = threading.main_thread().ident
    assert main is not None
    assert threading.get_ident() == main
    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield main
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted(main: int, ready: Callable[[], bool], what: str, call: Callable[[], object]) -> None:
    """Runs `call` here, on the main thread, and sends it SIGINT once `ready()`:
    `call` must end in `Interrupted`."""

    def kick() -> None:
        wait_until(ready, what)
        signal.pthread_kill(main, signal.SIGINT)

    kicker = threading.Thread(target=kick)
    kicker.start()
    try:
        with pytest.raises(Interrupted):
            call()
    finally:
        kicker.join()


@pytest.mark.parametrize(
    "read",
    [
        lambda svc: svc.count(),
        lambda svc: svc.query(),
        lambda svc: svc.verify(),
        lambda svc: next(svc.iter_entries()),
    ],
    ids=["count", "query", "verify", "iter_entries"],
)
def test_a_signal_during_a_reads_wait_for_queued_rows_is_raised_not_swallowed(
    tmp_path: Path, read: Callable[[AuditService], object]
) -> None:
    path = tmp_path / "a.db"
    with _sigint_interrupts() as main, AuditService(path, busy_timeout=0.05) as svc:
        svc.flush()
        with write_locked(path):
            svc.record_event(event(0))
            wait_until(lambda: svc.stats()["errors"] >= 1, "the writer to hold its batch")

            # The read's wait is queued behind the row the lock holds back. Before,
            # the read dropped the handler's exception and went on, the signal lost.
            _interrupted(main, lambda: svc.stats()["queue_depth"] >= 1, "the read to wait", lambda: read(svc))
        svc.flush()
        assert svc.count(event_type="step_completed") == 1
        # The interrupted read's wait leaves the queue once the writer reaches it: flush()
        # returns as soon as every row is committed, which can be before that.
        wait_until(lambda: svc.stats()["queue_depth"] == 0, "the interrupted read's wait to leave the queue")
    assert len(raw_rows(path, "event_type = 'step_completed'")) == 1


def test_put_timeout_zero_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path, queue_size=1, put_timeout=0, busy_timeout=0.02) as svc:
        with held_back(svc, path):
            svc.record_event(event(1))
            with pytest.raises(auditbus.QueueFullError):
                svc.record_event(event(2))
        svc.flush()
        assert svc.count() == 2


@pytest.mark.parametrize(
    "value",
    ["' OR '1'='1", "alice'; DROP TABLE audit_log; --", "%", "*", 'alice" OR "1"="1', "' UNION SELECT 1--"],
)
def test_sql_looking_filter_values_match_nothing(tmp_path: Path, value: str) -> None:
    with AuditService(tmp_path / "a.db") as svc:
        svc.record("auth_success", user_identity="alice", plan_id="p1")
        for field in ("user_identity", "plan_id", "actor_name", "session_id", "project_name", "outcome"):
            assert svc.query(**{field: value}) == []
            assert svc.count(**{field: value}) == 0
        assert svc.count() == 1
        # And a value stored verbatim is found verbatim.
        svc.record("auth_failure", user_identity=value)
        assert [e.user_identity for e in svc.query(user_identity=value)] == [value]


def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not an SQLite database, just some bytes\n" * 100)
    with pytest.raises(auditbus.AuditError, match=r"corrupt\.db"):
        AuditService(path)
    header_only = tmp_path / "damaged.db"
    AuditService(header_only).close()
    data = bytearray(header_only.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # keep the header, wreck every page
    header_only.write_bytes(bytes(data))
    with pytest.raises(auditbus.AuditError, match=r"damaged\.db"):
        AuditService(header_only)


def test_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(auditbus.AuditError, match="is a directory, not an audit database"):
        AuditService(tmp_path)


def test_close_flushes_and_waits(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    svc = AuditService(path)
    for i in range(2500):
        svc.record_event(event(i))
    svc.close()
    assert len(raw_rows(path, "event_type = 'step_completed'")) == 2500
    assert raw_rows(path)[-1]["event_type"] == "audit_stopped"


def test_many_threads_emit_and_every_row_lands(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path) as svc:

        def emit(worker: int) -> None:
            for i in range(300):
                svc.record_event(DomainEvent(event_type="step_started", details={"w": worker, "i": i}))

        threads = [threading.Thread(target=emit, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        svc.flush()
        assert svc.count(event_type="step_started") == 1800
        assert svc.stats()["written"] >= 1800
        assert svc.verify().ok


def test_a_fault_that_never_clears_is_refused_loudly_not_retried_forever(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    svc = AuditService(path)
    svc.flush()
    # A trigger refusing every insert: no retry can land these rows.
    execute(path, "CREATE TRIGGER refuse BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'inserts refused'); END")
    svc.record_event(event(1))
    with pytest.raises(auditbus.AuditError, match="inserts refused"):
        svc.record("auth_success", user_identity="alice")
    with pytest.raises(auditbus.AuditError, match="stopped"):
        svc.flush()
    assert svc.stats()["lost"] >= 1
    with pytest.raises(auditbus.AuditError, match=r"has stopped.*inserts refused"):
        svc.close()  # closed all the same
    # A flush on the closed service does not pretend the lost row was written.
    with pytest.raises(auditbus.AuditError, match="not written"):
        svc.flush()
    assert raw_rows(path, "event_type = 'step_completed'") == []


def test_a_trigger_that_silently_ignores_inserts_is_refused_loudly_not_looped_on(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    svc = AuditService(path)
    svc.flush()
    # RAISE(IGNORE) drops the row with no error, as a taken event_id does; no row holds the id.
    execute(
        path,
        "CREATE TRIGGER hide BEFORE INSERT ON audit_log WHEN NEW.user_identity = 'mallory'"
        " BEGIN SELECT RAISE(IGNORE); END",
    )
    outcome: list[BaseException | int] = []

    def hand_over() -> None:
        try:
            outcome.append(svc.record("auth_success", user_identity="mallory").id)
        except BaseException as err:
            outcome.append(err)

    caller = threading.Thread(target=hand_over, daemon=True)
    caller.start()
    wait_until(lambda: not caller.is_alive(), "record() to return")
    assert len(outcome) == 1
    assert isinstance(outcome[0], auditbus.AuditError), outcome
    assert "ignored" in str(outcome[0])
    assert "trigger" in str(outcome[0])
    with pytest.raises(auditbus.AuditError, match="has stopped"):
        svc.close()
    assert raw_rows(path, "user_identity = 'mallory'") == []


# Past SQLite's length limit for a row (1,000,000,000 bytes): no retry could ever store it.
TOO_BIG = 1_000_000_000


@pytest.mark.parametrize("path_in", ["record_event", "record", "emit", "plan_id"])
def test_a_row_too_big_for_sqlite_is_refused_when_handed_over_and_the_trail_goes_on(
    tmp_path: Path, path_in: str
) -> None:
    path = tmp_path / "a.db"
    svc = AuditService(path)
    bus = auditbus.ReactiveEventBus(audit=svc)
    big = {"blob": "x" * TOO_BIG}

    def hand_over(details: dict[str, str]) -> None:
        if path_in == "record_event":
            svc.record_event(DomainEvent(event_type="step_completed", plan_id="big", details=details))
        elif path_in == "record":
            svc.record("auth_success", plan_id="big", details=details)
        elif path_in == "emit":
            bus.emit(DomainEvent(event_type="step_completed", plan_id="big", details=details))
        else:
            svc.record_event(DomainEvent(event_type="step_completed", plan_id="p" * TOO_BIG))

    with pytest.raises(auditbus.ValidationError, match=r"at most 1,000,000,000 bytes") as refused:
        hand_over(big)
    assert ("plan_id" if path_in == "plan_id" else "details") in str(refused.value)
    del big
    # Refused before it was counted: the writer never saw it, and goes on.
    svc.record_event(event(1))
    entry = svc.record("auth_success", user_identity="alice")
    svc.flush()
    assert [r["plan_id"] for r in raw_rows(path, "event_type = 'step_completed'")] == ["p1"]
    assert raw_rows(path, "id = ?", (entry.id,))[0]["user_identity"] == "alice"
    stats = svc.stats()
    assert (stats["lost"], stats["errors"], stats["queue_depth"]) == (0, 0, 0)
    svc.close()


# Over half of the bytes that rows waiting for the writer may hold together.
HALF_QUEUE_BYTES = 130_000_000


@pytest.mark.parametrize("path_in", ["record_event", "emit"])
def test_large_rows_wait_for_room_in_memory_instead_of_growing_the_process_without_bound(
    tmp_path: Path, path_in: str
) -> None:
    path = tmp_path / "a.db"
    big = {"blob": "x" * HALF_QUEUE_BYTES}
    with AuditService(path, put_timeout=0, busy_timeout=0.02) as svc:
        bus = auditbus.ReactiveEventBus(audit=svc)
        second = DomainEvent(event_type="step_completed", plan_id="big2", details=big)
        hand_over = svc.record_event if path_in == "record_event" else bus.emit
        with held_back(svc, path):
            svc.record_event(DomainEvent(event_type="step_completed", plan_id="big1", details=big))
            # The queue has slots left, but not the memory for a second copy of the blob.
            with pytest.raises(auditbus.QueueFullError, match=r"held over 256,000,000 bytes"):
                hand_over(second)
            assert svc.stats()["rejected"] == 1
            svc.record_event(event(1))  # a small row still fits
        svc.flush()
        # Written rows give their room back, however large.
        svc.record_event(DomainEvent(event_type="step_completed", plan_id="big3", details=big))
        svc.flush()
        svc.record("step_completed", plan_id="big4", details=big)
        stats = svc.stats()
        assert (stats["lost"], stats["queue_depth"]) == (0, 0)
    rows = raw_query(path, "SELECT plan_id, length(details) AS n FROM audit_log WHERE event_type = 'step_completed'")
    assert [(r["plan_id"], r["n"] > HALF_QUEUE_BYTES) for r in rows] == [
        ("p0", False),
        ("big1", True),
        ("p1", False),
        ("big3", True),
        ("big4", True),
    ]


def test_an_edited_head_row_of_another_type_does_not_stop_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path) as svc:
        svc.record("auth_success", user_identity="alice")
    (last,) = raw_rows(path, "id = (SELECT max(id) FROM audit_log)")
    execute(path, "UPDATE audit_log SET chain_hash = x'00' WHERE id = ?", (last["id"],))
    with AuditService(path) as svc:
        entry = svc.record("auth_success", user_identity="bob")
        report = svc.verify()
    assert raw_rows(path, "id = ?", (entry.id,))[0]["user_identity"] == "bob"
    assert not report.ok
    assert report.first_bad_id == last["id"]


def test_a_different_event_reusing_an_event_id_is_kept_not_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "a.db"
    caplog.set_level(logging.WARNING, logger="auditbus")
    base = DomainEvent(event_type="entity_deleted", plan_id="p0")
    with AuditService(path) as svc:
        for plan in ("p1", "p2", "p3", "p1"):  # copies keep the event_id; the last repeats the first
            svc.record_event(base.model_copy(update={"plan_id": plan}))
        svc.flush()
        rows = raw_rows(path, "event_type = 'entity_deleted'")
        assert [r["plan_id"] for r in rows] == ["p1", "p2", "p3"]
        assert [r["event_id"] for r in rows] == [base.event_id, f"{base.event_id}.2", f"{base.event_id}.3"]
        assert svc.stats()["duplicates"] == 1
        assert svc.verify().ok
    assert f"event_id {base.event_id} was already stored for a different event" in caplog.text


def test_a_writer_log_line_masks_a_secret_in_the_trail_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A token in a folder name: before, the warning named the path as is.
    token = "ghp_" + "a1B2c3D4e5" * 3 + "abcdef"
    folder = tmp_path / token
    folder.mkdir()
    caplog.set_level(logging.WARNING, logger="auditbus")
    event = DomainEvent(event_type="entity_deleted", plan_id="p0")
    with AuditService(folder / "a.db") as svc:
        svc.record_event(event)
        svc.record_event(event.model_copy(update={"plan_id": "p1"}))
        svc.flush()
    assert "was already stored for a different event" in caplog.text
    assert token not in caplog.text
    assert f"{tmp_path}/***REDACTED***/a.db" in caplog.text


@pytest.mark.parametrize("waiter", ["flush", "purge", "close"])
def test_the_log_line_of_a_kept_copy_comes_after_the_reply_its_waiter_needs(tmp_path: Path, waiter: str) -> None:
    """A log handler may wait on a lock the waiting caller holds (the app's own lock around its
    audit calls): the writer answers a flush(), purge() or close() waiting on a commit before it
    logs that commit's warnings, or both would wait for ever."""
    app_lock = threading.Lock()
    handled: list[bool] = []

    class NeedsTheAppLock(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got = app_lock.acquire(timeout=10)
            handled.append(got)
            if got:
                app_lock.release()

    handler = NeedsTheAppLock(logging.WARNING)
    logger = logging.getLogger("auditbus")
    logger.addHandler(handler)
    try:
        base = DomainEvent(event_type="entity_deleted", plan_id="p0")
        svc = AuditService(tmp_path / "a.db")
        svc.record_event(base)
        svc.flush()
        with app_lock:
            svc.record_event(base.model_copy(update={"plan_id": "p1"}))  # kept as a copy: logged
            if waiter == "flush":
                svc.flush()
            elif waiter == "purge":
                svc.purge(datetime(2000, 1, 1, tzinfo=timezone.utc))
            else:
                svc.close()
        wait_until(lambda: handled, "the kept copy's log line")
        svc.close()
    finally:
        logger.removeHandler(handler)
    assert handled == [True]


def test_a_copy_numbered_past_the_last_suffix_handed_over_twice_is_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    base = DomainEvent(event_type="entity_deleted", plan_id="p0")
    # The id itself, `.2` to `.1000`, then copies whose suffix is made from
    # their content: finding one handed over again is one lookup, not a read
    # of every copy before it (which made each further copy slower).
    copies = [base.model_copy(update={"plan_id": f"p{i}"}) for i in range(1, 1004)]
    with AuditService(path) as svc:
        for copied in copies:
            svc.record_event(copied)
        for again in (copies[-1], copies[-2], copies[500]):  # a bus and a subscriber both wired
            svc.record_event(again)
        svc.flush()
        rows = raw_rows(path, "event_type = 'entity_deleted'")
        assert [r["plan_id"] for r in rows] == [f"p{i}" for i in range(1, 1004)]
        ids = [r["event_id"] for r in rows]
        assert ids[:1000] == [base.event_id] + [f"{base.event_id}.{n}" for n in range(2, 1001)]
        assert all(re.fullmatch(re.escape(base.event_id) + r"\.h[0-9a-f]{32}", i) for i in ids[1000:]), ids[1000:]
        assert len(set(ids)) == len(ids)
        assert svc.stats()["duplicates"] == 3
        assert svc.verify().ok
    # The same content makes the same suffix, in another service or process.
    with AuditService(tmp_path / "b.db") as other:
        for copied in copies:
            other.record_event(copied)
        other.flush()
        assert [r["event_id"] for r in raw_rows(tmp_path / "b.db", "event_type = 'entity_deleted'")] == ids


def test_a_duplicate_on_a_table_without_autoincrement_is_skipped_not_a_stopped_writer(tmp_path: Path) -> None:
    # Made by an SQLite tool rather than the legacy service: no sqlite_sequence table at all.
    path = tmp_path / "plain.db"
    execute(
        path,
        "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, timestamp TEXT NOT NULL, event_type TEXT NOT NULL, "
        "plan_id TEXT, user_identity TEXT, details TEXT NOT NULL DEFAULT '{}')",
    )
    same = event(1)
    with AuditService(path) as svc:
        svc.record_event(same)
        svc.flush()
        svc.record_event(same)  # handed over twice (a bus and a subscriber both wired)
        after = event(2)
        svc.record_event(after)
        svc.flush(timeout=10)
        stats = svc.stats()
        assert (stats["duplicates"], stats["lost"], stats["last_error"]) == (1, 0, None)
        assert [r["event_id"] for r in raw_rows(path, "event_type = 'step_completed'")] == [
            same.event_id,
            after.event_id,
        ]
        assert svc.verify().ok


# The writer's log line meets a handler that raises, and falls back to standard error,
# which is a pipe nobody reads any more (a supervisor gone, `2>&1 | head`).
_LOG_TO_A_BROKEN_STDERR = """
import json, logging, sys
import auditbus
class Broken(logging.Handler):
    def emit(self, record):
        raise RuntimeError("log collector down")
logging.getLogger("auditbus").addHandler(Broken())
svc = auditbus.AuditService(sys.argv[1])
svc.record_event(auditbus.DomainEvent(event_type="step_started", event_id="same"))
svc.flush()
sys.stdin.readline()  # standard error is closed at the other end now
# The same id for another event: the writer logs the id it keeps it under.
svc.record_event(auditbus.DomainEvent(event_type="step_completed", event_id="same"))
svc.flush()
for i in range(3):
    svc.record_event(auditbus.DomainEvent(event_type="step_started", details={"i": i}))
svc.flush()
print(json.dumps(svc.stats()), flush=True)
"""


def test_a_log_line_no_handler_and_no_stderr_takes_leaves_the_writer_running(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    pipe = subprocess.PIPE
    with subprocess.Popen(
        [sys.executable, "-c", _LOG_TO_A_BROKEN_STDERR, str(path)], stdin=pipe, stdout=pipe, stderr=pipe, text=True
    ) as child:
        assert child.stderr is not None
        child.stderr.close()
        out, _ = child.communicate("go\n", timeout=60)
    assert child.returncode == 0, out
    stats = json.loads(out.splitlines()[-1])
    assert not stats["stopped"], stats
    assert [r["event_type"] for r in raw_rows(path, "event_type LIKE 'step_%'")] == [
        "step_started",
        "step_completed",
    ] + ["step_started"] * 3


def test_an_event_id_holding_line_breaks_cannot_forge_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="auditbus")
    forged = "evt\nCRITICAL:auditbus:audit trail verified, nothing removed\r"
    base = DomainEvent(event_type="entity_deleted", plan_id="p0", event_id=forged)
    with AuditService(tmp_path / "a.db") as svc:
        for plan in ("p1", "p2"):
            svc.record_event(base.model_copy(update={"plan_id": plan}))
        svc.flush()
        assert [e.event_id for e in svc.query(event_type="entity_deleted", order="asc")] == [forged, f"{forged}.2"]
    (warning,) = [r.getMessage() for r in caplog.records if "already stored" in r.getMessage()]
    assert "\n" not in warning, warning
    assert "\r" not in warning, warning
    assert "evt\\nCRITICAL:auditbus:audit trail verified, nothing removed\\r" in warning


# A service opened before `os.fork()` (a `multiprocessing` worker, a pre-forking
# server): the child has a copy of the queue but no writer thread. Run in a
# process of its own, so a hang is a failed assertion, not a stuck test run.
_FORKED = """
import os, signal, sys
import auditbus
from auditbus import AuditService, DomainEvent
svc = AuditService(sys.argv[1])
svc.record("auth_success", user_identity="parent-before")
pid = os.fork()
if pid == 0:
    signal.alarm(30)  # a hang in the child ends it (and fails the test) instead of outliving the run
    calls = [
        ("record_event", lambda: svc.record_event(DomainEvent(event_type="step_completed", user_identity="child"))),
        ("record", lambda: svc.record("auth_success", user_identity="child")),
        ("flush", svc.flush),
        ("count", svc.count),
    ]
    for name, call in calls:
        try:
            call()
            print(name, "accepted", flush=True)
        except auditbus.AuditError as exc:
            print(name, "AuditError", exc, flush=True)
    with AuditService(sys.argv[1] + "-child") as own:  # a service opened in the child is its own
        print("own", own.record("auth_success", user_identity="child").id, flush=True)
    sys.exit(0)  # a normal exit: the at-exit close runs in the child too
svc.record("auth_success", user_identity="parent-after")
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status), flush=True)
svc.close()
"""


def test_a_forked_child_is_refused_instead_of_queueing_into_a_writer_it_does_not_have(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    done = run_script(textwrap.dedent(_FORKED), path)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    # Nothing the child hands over is accepted and then silently never written:
    # every call says the service belongs to the parent process.
    for name in ("record_event", "record", "flush", "count"):
        (line,) = [line for line in out if line.startswith(name + " ")]
        assert line.startswith(f"{name} AuditError"), line
        assert "fork" in line, line
        assert "a.db" in line, line
    assert "child exit 0" in out
    assert any(line.startswith("own ") for line in out), out
    assert [r["user_identity"] for r in raw_rows(tmp_path / "a.db-child") if r["event_type"] == "auth_success"] == [
        "child"
    ]
    assert "panic" not in done.stderr.lower(), done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    # The parent's writer is untouched by the child's exit.
    rows = raw_rows(path)
    assert [r["user_identity"] for r in rows if r["event_type"] == "auth_success"] == ["parent-before", "parent-after"]
    assert [r["event_type"] for r in rows if r["event_type"].startswith("audit_")] == ["audit_started", "audit_stopped"]
    with AuditService(path) as svc:
        assert svc.verify().ok


# A fork while the parent's writer thread commits: SQLite keeps the locks a
# process's connections hold in process memory, and a child copied mid-commit
# found the trail's write lock held there by a thread it does not have. A
# service the child opened on the same trail (as the fork section says to do)
# then retried its commits for good: its record() never returned. Run in a
# process of its own, each child ended by an alarm if it hangs.
_FORKED_WHILE_COMMITTING = """
import os, signal, sys, threading
from auditbus import AuditService, DomainEvent
path = sys.argv[1]
svc = AuditService(path)
running = True
def hand_over_in_a_loop():
    while running:
        svc.record_event(DomainEvent(event_type="step_completed", plan_id="parent"))
committer = threading.Thread(target=hand_over_in_a_loop)
committer.start()
children = []
for n in range(10):
    svc.flush()  # what queued meanwhile is being committed by the writer thread as the fork comes
    pid = os.fork()
    if pid == 0:
        signal.alarm(30)
        with AuditService(path) as own:
            own.record("step_completed", plan_id="child", user_identity=f"child-{n}")
        os._exit(0)
    children.append(pid)
statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
running = False
committer.join()
svc.close()
print(*statuses, flush=True)
"""


def test_a_child_forked_while_the_parent_commits_can_commit_to_the_same_trail(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    done = run_script(_FORKED_WHILE_COMMITTING, path, timeout=180)
    assert done.returncode == 0, done.stderr
    # Before, most children were ended by their alarm (-14), their row never committed.
    assert done.stdout.split() == ["0"] * 10, done.stderr
    rows = raw_rows(path, "plan_id = 'child'")
    assert sorted(r["user_identity"] for r in rows) == sorted(f"child-{n}" for n in range(10))
    with AuditService(path) as svc:
        assert svc.verify().ok


# Pre-forked workers are processes appending to one trail: their event ids
# must differ in the part that does not come from the clock. Before, every
# child drew the same random bits as its siblings (a copy of the parent's
# generator), so two recording in the same millisecond made the same id, and
# the second row was stored under `<id>.2` with a warning.
_FORKED_IDS = """
import os, sys
from auditbus import AuditService, DomainEvent
path = sys.argv[1]
DomainEvent(event_type="step_completed")  # the parent has drawn ids before it forks
read, write = os.pipe()
children = []
for n in range(3):
    pid = os.fork()
    if pid == 0:
        ids = [DomainEvent(event_type="step_completed").event_id for _ in range(3)]
        with AuditService(f"{path}-{n}") as own:
            ids.append(own.record("step_completed").event_id)
        os.write(write, (" ".join(ids) + "\\n").encode())
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
os.close(write)
with os.fdopen(read) as lines:
    print(lines.read(), end="")
"""


def test_children_forked_from_one_parent_draw_event_ids_of_their_own(tmp_path: Path) -> None:
    done = run_script(_FORKED_IDS, tmp_path / "a.db")
    assert done.returncode == 0, done.stderr
    children = [line.split() for line in done.stdout.splitlines()]
    assert [len(ids) for ids in children] == [4, 4, 4], done.stdout
    # What follows the 48-bit millisecond (`xxxxxxxx-xxxx`) is the generator's.
    drawn = [event_id[13:] for ids in children for event_id in ids]
    assert len(set(drawn)) == len(drawn), done.stdout


# A fork while another thread waits for room in the queue (another process's
# lock keeps it full): the child inherits the writer's gate held by a thread
# it does not have. Run in a process of its own, so a hang is a failed
# assertion, not a stuck test run.
_FORKED_WHILE_WAITING = """
import os, sys, threading, time
from auditbus import AuditService, DomainEvent
svc = AuditService(sys.argv[1], queue_size=1, put_timeout=None, busy_timeout=0.05)
svc.flush()
print("ready", flush=True)
sys.stdin.readline()  # another process holds the lock now
svc.record_event(DomainEvent(event_type="step_completed", plan_id="stuck"))
while svc.stats()["errors"] < 1:
    time.sleep(0.005)
svc.record_event(DomainEvent(event_type="step_completed", plan_id="queued"))  # fills the queue
waiting = threading.Thread(
    target=lambda: svc.record_event(DomainEvent(event_type="step_completed", plan_id="waited")), daemon=True
)
waiting.start()
# The thread waits inside record_event() once its frame stays on one line.
lines = []
while len(lines) < 5 or len(set(lines[-5:])) != 1:
    frame = sys._current_frames().get(waiting.ident)
    lines.append(frame.f_lineno if frame is not None else -len(lines))
    time.sleep(0.02)
pid = os.fork()
if pid == 0:
    try:
        svc.close()
        os.write(1, b"child closed\\n")
    except BaseException as exc:
        os.write(1, f"child {exc!r}\\n".encode())
    os._exit(0)
os.waitpid(pid, 0)
print("child ended", flush=True)
sys.stdin.readline()  # the lock is gone
waiting.join()
svc.close()
print("written", svc.stats()["written"], flush=True)
"""


def test_a_forked_child_closes_the_parents_service_while_a_parent_thread_waits_for_room(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    pipe = subprocess.PIPE
    child = subprocess.Popen(
        [sys.executable, "-c", _FORKED_WHILE_WAITING, str(path)],
        stdin=pipe,
        stdout=pipe,
        stderr=pipe,
        text=True,
        start_new_session=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in child.stdout or ()], daemon=True).start()

    def next_line() -> str:
        try:
            return lines.get(timeout=60)
        except queue.Empty:
            pytest.fail("the process printed nothing for 60 s (a forked child closing the service hung)")

    try:
        assert next_line() == "ready"
        with write_locked(path):
            child.stdin.write("go\n")
            child.stdin.flush()
            # Before, the child's close() waited for the gate for good, holding the GIL.
            assert next_line() == "child closed"
            assert next_line() == "child ended"
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0, child.stderr.read() if child.stderr else ""
        assert next_line().startswith("written ")
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)  # the process and a hung forked child with it
            child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert [r["plan_id"] for r in raw_rows(path, "event_type = 'step_completed'")] == ["stuck", "queued", "waited"]


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_trail_removed_or_replaced_under_the_writer_refuses_rows_instead_of_acknowledging_them(
    tmp_path: Path, how: str
) -> None:
    path = tmp_path / "a.db"
    svc = AuditService(path)
    svc.record("auth_success", user_identity="before")
    if how == "removed":
        path.unlink()
    else:
        other = tmp_path / "other.db"
        AuditService(other).close()
        other.replace(path)
    # The writer's open file is no longer the trail at `path`: a row committed
    # to it would be acknowledged and then be in no file anyone can read.
    svc.record_event(event(1))
    with pytest.raises(auditbus.AuditError, match=r"a\.db.*removed or replaced"):
        svc.record("auth_success", user_identity="after")
    with pytest.raises(auditbus.AuditError, match="stopped"):
        svc.flush()
    assert svc.stats()["lost"] >= 1
    with pytest.raises(auditbus.AuditError, match="has stopped"):
        svc.close()


# Rows acknowledged, then the -wal file beside the trail removed or replaced
# while the service runs, then one more record(); the process is killed.
_WAL_GONE = """
import os, shutil, signal, sys
import auditbus
from auditbus import AuditService
path, how = sys.argv[1], sys.argv[2]
svc = AuditService(path)
for i in range(20):
    print("R", svc.record("auth_success", plan_id=f"before{i}").id, flush=True)
wal = path + "-wal"
if how == "removed":
    os.remove(wal)
else:
    shutil.copy(wal, wal + ".copy")
    os.replace(wal + ".copy", wal)
try:
    print("R", svc.record("auth_success", plan_id="after").id, flush=True)
except auditbus.AuditError as exc:
    print("E", exc, flush=True)
for call in (lambda: svc.record_event(auditbus.DomainEvent(event_type="step_completed")), svc.flush):
    try:
        call()
    except auditbus.AuditError as exc:
        print("F", exc, flush=True)
print("lost", svc.stats()["lost"], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_wal_file_removed_or_replaced_under_the_writer_loses_no_acknowledged_row(tmp_path: Path, how: str) -> None:
    path = tmp_path / "a.db"
    done = run_script(_WAL_GONE, path, how)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr)
    lines = done.stdout.splitlines()
    acked = [int(line.split()[1]) for line in lines if line.startswith("R ")]
    # Before, the writer went on committing to the -wal file it had open, now in
    # no directory (or not at its path): acknowledged, then gone with the process,
    # and with it every row not yet copied into the database file.
    assert len(acked) == 20, lines
    assert any(line.startswith("E ") and "a.db-wal" in line and "removed or replaced" in line for line in lines), lines
    # The writer stops, as on a damaged file: later calls raise.
    assert len([line for line in lines if line.startswith("F ") and "stopped" in line]) == 2, lines
    assert "lost 1" in lines, lines
    rows = raw_rows(path, "event_type = 'auth_success'")
    assert [r["id"] for r in rows] == acked
    assert [r["plan_id"] for r in rows] == [f"before{i}" for i in range(20)]


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_purge_after_the_trails_files_were_removed_is_refused_instead_of_written_through_them(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / "a.db"
    svc = AuditService(path)
    svc.record("auth_success")
    (tmp_path / f"a.db{suffix}").unlink()
    # Before, a purge with no row queued before it was written through the
    # removed file (or a -shm file other processes no longer share) and reported done.
    with pytest.raises(auditbus.AuditError, match="removed or replaced"):
        svc.purge("2000-01-01T00:00:00Z")
    with pytest.raises(auditbus.AuditError, match="stopped"):
        svc.record_event(event(1))
    with pytest.raises(auditbus.AuditError, match="has stopped"):
        svc.close()


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_once_the_writer_stopped_with_nothing_queued_flush_close_and_stats_say_so(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "a.db"
    svc = AuditService(path)
    svc.record("auth_success")
    assert svc.stats()["stopped"] is False
    (tmp_path / f"a.db{suffix}").unlink()
    with pytest.raises(auditbus.AuditError, match="removed or replaced"):
        svc.purge("2000-01-01T00:00:00Z")
    stats = svc.stats()
    assert (stats["queue_depth"], stats["lost"], stats["stopped"], stats["closed"]) == (0, 0, True, False), stats
    # Before, flush() with nothing queued returned: a caller using it as a
    # health check was told all is well by a writer that had stopped for good.
    for timeout in (None, 0, 1.0):
        with pytest.raises(auditbus.AuditError, match=r"has stopped.*removed or replaced"):
            svc.flush(timeout)
    with pytest.raises(auditbus.AuditError, match=r"has stopped.*removed or replaced"):
        svc.record_event(event(1))
    # close() releases everything and says the trail is not whole, each time asked.
    for _ in range(2):
        with pytest.raises(auditbus.AuditError, match=r"has stopped.*removed or replaced"):
            svc.close()
        stats = svc.stats()
        assert (stats["closed"], stats["stopped"]) == (True, True), stats
        with pytest.raises(auditbus.AuditError, match="has stopped"):
            svc.flush()


def test_a_close_that_meets_the_fault_raises_naming_the_rows_not_written(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    svc = AuditService(path)
    svc.record("auth_success")
    (tmp_path / "a.db-wal").unlink()
    for i in range(5):
        svc.record_event(event(i))
    # Before, close() returned, as if everything queued was committed; the
    # five events and the stop row were not written.
    with pytest.raises(auditbus.AuditError, match=r"has stopped; 6 records were not written.*a\.db-wal"):
        svc.close()
    assert svc.stats()["lost"] == 6
    assert raw_rows(path, "event_type = 'step_completed'") == []


def _accounted(stats: dict[str, object]) -> bool:
    return stats["queued"] == stats["written"] + stats["duplicates"] + stats["lost"]  # type: ignore[operator]


def test_after_close_every_queued_row_is_written_a_duplicate_or_lost(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    svc = AuditService(path, busy_timeout=0.02)
    svc.flush()
    with write_locked(path):
        svc.record_event(event(0))
        wait_until(lambda: svc.stats()["retries"] >= 1, "the writer to retry")
    svc.flush()
    repeated = event(1)
    svc.record_event(repeated)
    svc.record_event(repeated)  # stored once
    svc.record("auth_success")
    svc.purge("1970-01-02T00:00:00Z")
    svc.close()
    stats = svc.stats()
    # The service's own rows (start, stop, the outage, the purge) count as queued too.
    assert raw_rows(path, "event_type = 'audit_failure'")
    assert stats["duplicates"] == 1
    assert stats["lost"] == 0
    assert stats["written"] == len(raw_rows(path))
    assert _accounted(stats), stats


def test_rows_refused_for_good_are_counted_lost_durable_ones_included(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    svc = AuditService(path)
    svc.flush()
    execute(path, "CREATE TRIGGER refuse BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'inserts refused'); END")
    with pytest.raises(auditbus.AuditError, match="inserts refused"):
        svc.record("auth_success")
    with pytest.raises(auditbus.AuditError, match="has stopped"):
        svc.close()
    stats = svc.stats()
    # "A handed-over row is not written ... counted in stats()['lost']": the
    # durable row was handed over and not written, like the outage row with it.
    assert stats["lost"] == 2, stats
    assert _accounted(stats), stats


def _remove_under_emitters(path: Path) -> tuple[dict[str, int], int, list[str]]:
    """Three threads hand rows over until refused while the trail is removed; the counters after close()."""
    svc = AuditService(path, queue_size=256, put_timeout=0)
    svc.flush()
    accepted = [0] * 3
    refused: list[str] = []

    def emit(k: int) -> None:
        i = 0
        while True:
            i += 1
            try:
                svc.record_event(event(i))
            except auditbus.QueueFullError:
                continue
            except auditbus.AuditError as exc:
                refused.append(str(exc))
                return
            accepted[k] += 1

    threads = [threading.Thread(target=emit, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: sum(accepted) >= 50, "rows to be handed over")
    path.unlink()
    for thread in threads:
        thread.join()
    with pytest.raises(auditbus.AuditError, match="has stopped"):
        svc.close()
    return svc.stats(), sum(accepted), refused


def test_rows_handed_over_while_the_writer_stops_on_a_removed_trail_are_all_accounted_for(tmp_path: Path) -> None:
    # Every row record_event() accepted is written or counted lost. Before, a
    # row queued after the stopping writer drained its queue for the last
    # time was acknowledged, then dropped with the queue, uncounted (a race:
    # a few attempts hit it).
    for attempt in range(12):
        stats, accepted, refused = _remove_under_emitters(tmp_path / f"a{attempt}.db")
        assert len(refused) == 3, refused
        assert _accounted(stats), (attempt, stats)
        # Queued: the started row and every accepted row (no stop row once stopped).
        assert stats["queued"] == 1 + accepted, stats


def _close_under_senders(path: Path) -> tuple[dict[str, int], list[str]]:
    """Threads hand rows over (write-behind and durable, waiting for room in a
    small queue) until a close() on another thread refuses them."""
    svc = AuditService(path, queue_size=4, put_timeout=None)
    accepted: list[list[str]] = [[] for _ in range(4)]

    def send(k: int) -> None:
        i = 0
        while True:
            i += 1
            try:
                if k == 3:
                    entry = svc.record("auth_success", plan_id=f"r{i}")
                    assert entry.event_id is not None
                    accepted[k].append(entry.event_id)
                else:
                    handed = event(i)
                    svc.record_event(handed)
                    accepted[k].append(handed.event_id)
            except auditbus.ClosedError:
                return

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: sum(map(len, accepted)) >= 300, "rows to be handed over")
    svc.close()
    for thread in threads:
        thread.join()
    return svc.stats(), [i for ids in accepted for i in ids]


def test_every_row_accepted_while_another_thread_closes_is_written_before_the_stop_row(tmp_path: Path) -> None:
    # A close() racing senders that wait for room: no row is queued after the
    # stop (acknowledged, never written), and the stop row is the last one.
    for attempt in range(5):
        path = tmp_path / f"a{attempt}.db"
        stats, accepted = _close_under_senders(path)
        assert _accounted(stats), stats
        assert stats["lost"] == 0, stats
        rows = raw_rows(path)
        stored = {r["event_id"] for r in rows}
        assert [i for i in accepted if i not in stored] == []
        assert stats["written"] == len(rows), stats
        assert rows[-1]["event_type"] == "audit_stopped"
        assert [r["event_type"] for r in rows].count("audit_stopped") == 1


def test_concurrent_flushes_after_abandoned_ones_return_only_once_their_rows_are_committed(tmp_path: Path) -> None:
    # Flushes that gave up during an outage leave their messages for later
    # flushes to wait on; racing flushers must neither hang on an answer that
    # never comes nor return before the row they handed over is committed.
    path = tmp_path / "a.db"
    with AuditService(path, busy_timeout=0.02) as svc:
        with held_back(svc, path):
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    svc.flush(timeout=0.01)
        reader = AuditService(path, read_only=True)
        missing: list[str] = []
        errors: list[BaseException] = []

        def flusher(k: int) -> None:
            try:
                for i in range(40):
                    plan = f"t{k}-{i}"
                    svc.record_event(DomainEvent(event_type="step_completed", plan_id=plan))
                    svc.flush(timeout=60)
                    # Read by a service with no writer: it sees what is committed, and waits for nothing.
                    if reader.count(plan_id=plan) != 1:
                        missing.append(plan)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=flusher, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        reader.close()
        assert errors == []
        assert missing == []
        assert svc.stats()["queue_depth"] == 0


def test_the_wal_file_is_cut_back_after_a_large_purge_instead_of_keeping_its_size_until_close(tmp_path: Path) -> None:
    # A long-running service purges months of rows in one transaction: its -wal file grows past the
    # database's size. Once checkpointed, SQLite starts it over; it must also give the disk back then.
    path = tmp_path / "a.db"
    wal = Path(f"{path}-wal")
    limit = 8 << 20
    with AuditService(path, durability="normal") as svc:
        pad = "x" * 300
        for i in range(30000):
            svc.record_event(DomainEvent(event_type="step_completed", details={"i": i, "pad": pad}))
        svc.flush()
        assert svc.purge("2999-01-01T00:00:00Z") == 30001
        assert wal.stat().st_size > limit
        # Rows after it: a commit past the checkpoint threshold checkpoints, the next starts the file over.
        sizes = []
        for _ in range(5):
            svc.record("auth_success")
            sizes.append(wal.stat().st_size)
        assert sizes[-1] <= limit, sizes
        assert svc.count(event_type="auth_success") == 5


# Write-behind bursts. The writer leaves a burst queued while it grows and
# starts its commit once it pauses (1 ms), holds 512 rows, after 20 ms, or at
# once when someone waits (a flush, a durable record(), a read, a purge, a close).


#: Room for a burst of the tests' length that is never half full: only a pause,
#: 512 rows, the time limit or a waiter ends its gather. Commits without an fsync each
#: ("normal"): a disk slowed by other work must not let the burst outrun them.
_BURST_QUEUE = 1_000_000


class _Burst:
    """A thread handing events over one every `every` seconds, without a pause, until stopped.

    Paced by spinning, not by sleeping: a sleep's wake-up can take longer than
    the writer's 1 ms gap, which would end the burst in its eyes.
    """

    def __init__(self, svc: AuditService, every: float = 0.0002, prefix: str = "b") -> None:
        self.svc = svc
        self.every = every
        self.prefix = prefix
        self.accepted: list[str] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        clock = time.perf_counter
        due = clock()
        i = 0
        try:
            while not self.stop.is_set():
                handed = DomainEvent(event_type="step_completed", plan_id=f"{self.prefix}{i}")
                self.svc.record_event(handed)
                self.accepted.append(handed.event_id)
                i += 1
                due += self.every
                while clock() < due:
                    pass
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def __enter__(self) -> _Burst:
        self.thread.start()
        wait_until(lambda: len(self.accepted) >= 10, "the burst to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the burst's thread did not stop"

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self.stop.is_set() and not self.errors


def test_a_burst_that_never_pauses_is_committed_while_it_lasts(tmp_path: Path) -> None:
    # Rows of a burst that never pauses for 1 ms must not wait for its end (nor
    # for half of a large queue): another connection sees rows while it still
    # runs. 512 queued rows, full batches and the 20 ms gather limit all give
    # that; the limit alone is pinned by the writer's unit test of a burst
    # that never pauses.
    path = tmp_path / "a.db"
    with AuditService(path, queue_size=_BURST_QUEUE, durability="normal") as svc:
        svc.flush()
        reader = AuditService(path, read_only=True)  # no writer: it sees what is committed, waits for nothing
        try:
            with _Burst(svc) as burst:
                seen: list[int] = [0]

                def committed_again() -> bool:
                    newest = reader.query(event_type="step_completed", limit=1)
                    if newest and newest[0].id > seen[-1]:
                        seen.append(newest[0].id)
                    return len(seen) > 10

                # Ten commits within a second or so; one that waited for a pause would see few.
                wait_until(committed_again, "ten commits of the running burst", timeout=60)
                assert burst.running, burst.errors
            svc.flush()
            assert reader.count(event_type="step_completed") == len(burst.accepted)
        finally:
            reader.close()


@pytest.mark.parametrize("wait", ["flush", "record", "count", "purge"])
def test_a_caller_waiting_during_a_burst_returns_while_it_lasts_with_every_row_before_it_committed(
    tmp_path: Path, wait: str
) -> None:
    path = tmp_path / "a.db"
    with AuditService(path, queue_size=_BURST_QUEUE, durability="normal") as svc:
        reader = AuditService(path, read_only=True)
        try:
            with _Burst(svc) as burst:
                for _ in range(8):
                    last = f"{burst.prefix}{len(burst.accepted) - 1}"  # the burst's plan ids count its rows
                    if wait == "flush":
                        svc.flush(timeout=60)
                    elif wait == "record":
                        svc.record("auth_success")
                    elif wait == "count":
                        svc.count(plan_id="none")
                    else:
                        svc.purge("1970-01-02T00:00:00Z")
                    # The last row the burst handed over before the call (and so every one
                    # before it) is committed, seen by another connection.
                    assert reader.count(plan_id=last) == 1
                    assert burst.running, burst.errors
            svc.flush()
            assert reader.count(event_type="step_completed") == len(burst.accepted)
        finally:
            reader.close()


def test_a_long_burst_through_a_small_queue_is_committed_in_transactions_of_at_most_2048_rows(tmp_path: Path) -> None:
    # A small queue is taken into the batch each time it is half full, and the
    # gather goes on: the batch must still stop at MAX_BATCH (2,048) rows.
    path = tmp_path / "a.db"
    with AuditService(path, queue_size=3, put_timeout=None) as svc:
        svc.flush()
        batches = svc.stats()["batches"]

        def emit(k: int) -> None:
            for i in range(2500):
                svc.record_event(DomainEvent(event_type="step_completed", plan_id=f"t{k}-{i}"))

        threads = [threading.Thread(target=emit, args=(k,)) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        svc.flush(timeout=60)
        assert svc.stats()["batches"] - batches >= 3  # 5,000 rows
    rows = raw_rows(path, "event_type = 'step_completed'")
    assert len(rows) == 5000
    # One transaction stamps its rows with one recorded_at.
    per_commit: dict[str, int] = {}
    for row in rows:
        per_commit[row["recorded_at"]] = per_commit.get(row["recorded_at"], 0) + 1
    assert max(per_commit.values()) <= 2048, sorted(per_commit.values())


@pytest.mark.parametrize("queue_size", [1, 2, 3, 64])
@pytest.mark.parametrize("put_timeout", [None, 5.0, 0.001])
def test_threads_mixing_record_event_record_and_flush_never_wait_for_good_and_lose_nothing(
    tmp_path: Path, queue_size: int, put_timeout: float | None
) -> None:
    # Every waiter (a flush, a durable record()) may arrive while the writer
    # gathers a burst or reads `urgent`: none may be left waiting, and every
    # acknowledged row is on disk.
    path = tmp_path / "a.db"
    svc = AuditService(path, queue_size=queue_size, put_timeout=put_timeout)
    accepted: list[str] = []
    refused = 0
    errors: list[BaseException] = []
    guard = threading.Lock()

    def work(k: int) -> None:
        nonlocal refused
        try:
            for i in range(150):
                kind = (k + i) % 7
                try:
                    if kind < 4:
                        handed = DomainEvent(event_type="step_completed", plan_id=f"w{k}-{i}")
                        svc.record_event(handed)
                        ids = [handed.event_id]
                    elif kind < 6:
                        ids = [svc.record("auth_success", plan_id=f"r{k}-{i}").event_id]
                    else:
                        svc.flush(timeout=60)
                        ids = []
                except auditbus.QueueFullError:
                    with guard:
                        refused += 1
                    continue
                with guard:
                    accepted.extend(i for i in ids if i is not None)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not [t for t in threads if t.is_alive()], "a caller is still waiting"
    assert errors == []
    if put_timeout != 0.001:
        assert refused == 0
    svc.close()
    stats = svc.stats()
    assert _accounted(stats), stats
    assert stats["lost"] == 0
    assert stats["rejected"] == refused
    stored = {r["event_id"] for r in raw_rows(path)}
    assert [i for i in accepted if i not in stored] == []
    assert stats["written"] == len(stored)


def test_a_close_from_another_thread_during_a_long_burst_writes_every_accepted_row_before_the_stop_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    svc = AuditService(path, queue_size=_BURST_QUEUE, durability="normal")
    burst = _Burst(svc)
    with burst:
        wait_until(lambda: len(burst.accepted) >= 2000, "the burst to outgrow a batch")
        svc.close()
        wait_until(lambda: burst.errors, "the burst to be refused")
    assert [type(e) for e in burst.errors] == [auditbus.ClosedError]
    stats = svc.stats()
    assert _accounted(stats), stats
    rows = raw_rows(path)
    assert [r["event_id"] for r in rows if r["event_type"] == "step_completed"] == burst.accepted
    assert rows[-1]["event_type"] == "audit_stopped"
    assert stats["written"] == len(rows)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
@pytest.mark.parametrize("queue_size", [3, 65536])
def test_a_service_dropped_in_the_middle_of_a_burst_writes_it_then_its_stop_row(
    tmp_path: Path, queue_size: int
) -> None:
    path = tmp_path / "a.db"
    before = writer_threads()
    svc = AuditService(path, queue_size=queue_size, put_timeout=None)
    handed = [event(i) for i in range(5000)]
    for one in handed:
        svc.record_event(one)
    del svc  # no close(), the burst still queued or gathered
    wait_until(lambda: writer_threads() <= before, "the dropped service's writer thread to end")
    rows = raw_rows(path)
    assert [r["event_id"] for r in rows if r["event_type"] == "step_completed"] == [e.event_id for e in handed]
    assert rows[-1]["event_type"] == "audit_stopped"
    assert "garbage collected" in rows[-1]["details"]


# The interpreter exits while daemon threads hand events over without a
# pause: each writes the id of every event accepted to a file first thing.
_EXIT_MID_BURST = """
import atexit, json, os, sys, threading
# Registered before auditbus's own hook, so it runs after it: the counters once the writer has stopped.
atexit.register(lambda: print("stats", json.dumps(svc.stats()), flush=True))
from auditbus import AuditService, DomainEvent
svc = AuditService(sys.argv[1], queue_size=int(sys.argv[2]), put_timeout=None)
acks = os.open(sys.argv[1] + ".acks", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
count = [0]
def emit(k):
    i = 0
    while True:
        handed = DomainEvent(event_type="step_completed", plan_id=f"t{k}-{i}")
        try:
            svc.record_event(handed)
        except Exception as exc:
            os.write(acks, f"refused {type(exc).__name__}\\n".encode())
            return
        os.write(acks, (handed.event_id + "\\n").encode())
        count[0] += 1
        i += 1
for k in range(3):
    threading.Thread(target=emit, args=(k,), daemon=True).start()
while count[0] < 3000:
    pass
# Exit with the burst running: the at-exit close writes what was accepted.
"""


@pytest.mark.parametrize("queue_size", [2, 65536])
def test_an_interpreter_exit_in_the_middle_of_a_burst_writes_every_accepted_row(
    tmp_path: Path, queue_size: int
) -> None:
    path = tmp_path / "a.db"
    done = run_script(_EXIT_MID_BURST, path, str(queue_size))
    assert done.returncode == 0, done.stderr
    assert "panic" not in done.stderr.lower(), done.stderr
    lines = Path(f"{path}.acks").read_text().splitlines()
    accepted = [line for line in lines if not line.startswith("refused ")]
    assert len(accepted) >= 3000
    assert {line for line in lines if line.startswith("refused ")} <= {"refused ClosedError"}
    rows = raw_rows(path)
    stored = {r["event_id"] for r in rows}
    assert [i for i in accepted if i not in stored] == []
    assert rows[-1]["event_type"] == "audit_stopped"
    assert "interpreter exit" in rows[-1]["details"]
    (stats,) = [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("stats ")]
    assert stats["closed"], stats
    assert _accounted(stats), stats
    assert (stats["written"], stats["lost"]) == (len(rows), 0), stats


# A fork while another thread's burst is being gathered: the child cannot
# use the service and leaves it to the parent, whose rows all land.
_FORK_MID_BURST = """
import os, sys, threading
import auditbus
from auditbus import AuditService, DomainEvent
svc = AuditService(sys.argv[1], queue_size=1_000_000)
accepted = []
stop = threading.Event()
def emit():
    i = 0
    while not stop.is_set():
        handed = DomainEvent(event_type="step_completed", plan_id=f"p{i}")
        svc.record_event(handed)
        accepted.append(handed.event_id)
        i += 1
burst = threading.Thread(target=emit)
burst.start()
while len(accepted) < 1000:
    pass
pid = os.fork()
if pid == 0:
    try:
        svc.record_event(DomainEvent(event_type="step_completed", plan_id="child"))
        print("child accepted", flush=True)
    except auditbus.AuditError as exc:
        print("child refused", "fork" in str(exc), flush=True)
    sys.exit(0)  # a normal exit: the at-exit hook runs in the child, the parent's burst in its queue
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status), flush=True)
while len(accepted) < 3000:
    pass
stop.set()
burst.join()
svc.flush()
print("accepted", " ".join(accepted), flush=True)
svc.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_fork_in_the_middle_of_a_burst_leaves_every_row_to_the_parent(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _FORK_MID_BURST, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "child refused True" in out, out
    assert "child exit 0" in out, out
    (accepted,) = [line.split()[1:] for line in out if line.startswith("accepted ")]
    rows = raw_rows(path)
    assert [r["event_id"] for r in rows if r["event_type"] == "step_completed"] == accepted
    assert [r["event_type"] for r in rows if r["event_type"].startswith("audit_")] == ["audit_started", "audit_stopped"]


def test_a_lock_taken_by_another_process_during_a_burst_holds_it_back_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditService(path, busy_timeout=0.05, queue_size=_BURST_QUEUE, durability="normal") as svc:
        svc.flush()
        with _Burst(svc) as burst:
            with write_locked(path):
                wait_until(lambda: svc.stats()["retries"] >= 2, "the writer to hold the burst back")
                with pytest.raises(TimeoutError, match="flush"):
                    svc.flush(timeout=0.05)
                assert burst.running, burst.errors
            # The lock is gone: the burst, still running, is committed again.
            svc.flush(timeout=60)
            assert burst.running, burst.errors
        svc.flush(timeout=60)
    stats = svc.stats()
    assert burst.errors == []
    rows = raw_rows(path)
    assert [r["event_id"] for r in rows if r["event_type"] == "step_completed"] == burst.accepted
    assert [r["event_type"] for r in rows].count("audit_failure") >= 1
    assert _accounted(stats), stats
    assert stats["written"] == len(rows)


def _flush(svc: AuditService) -> None:
    svc.flush()


def _innermost_code(thread: int) -> object:
    frame = sys._current_frames().get(thread)
    return frame.f_code if frame is not None else None


def test_a_signal_ending_a_flush_during_a_burst_leaves_the_burst_and_its_flush_to_be_written(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with (
        _sigint_interrupts() as main,
        AuditService(path, busy_timeout=0.05, queue_size=_BURST_QUEUE, durability="normal") as svc,
    ):
        svc.flush()
        with _Burst(svc) as burst:
            with write_locked(path):
                wait_until(lambda: svc.stats()["retries"] >= 1, "the writer to hold the burst back")
                handed = len(burst.accepted)

                # The signal comes once the main thread waits inside flush().
                def waiting() -> bool:
                    return _innermost_code(main) is _flush.__code__

                _interrupted(main, waiting, "the flush to wait", lambda: _flush(svc))
                assert burst.running, burst.errors
            # The abandoned flush is answered once the lock is gone; a new one waits for it.
            svc.flush(timeout=60)
            assert svc.count(event_type="step_completed") >= handed
            assert burst.running, burst.errors
    assert burst.errors == []
    rows = raw_rows(path, "event_type = 'step_completed'")
    assert [r["event_id"] for r in rows] == burst.accepted
