"""Injected faults: kill -9 under load, four writer processes, another process's lock, a full disk, corrupt files.

Each test makes the fault really happen (a SIGKILL, a held SQLite lock, a
file size limit or a full filesystem, damaged bytes) and then checks the
promise: every acknowledged row is on disk, the file is intact, the chain
verifies, and failures are reported, never silent.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import auditbus
import pytest
from audit_fault_child import SECRET
from audit_fault_support import Acks, Child, pragma
from audit_support import legacy_audit, raw_rows, run_script, wait_until, write_locked
from auditbus import AuditService, DomainEvent


def assert_intact(path: Path) -> list[dict[str, object]]:
    """`PRAGMA integrity_check` is ok, no secret is on disk, the chain verifies; returns the rows."""
    assert pragma(path, "PRAGMA integrity_check") == ["ok"]
    rows = raw_rows(path)
    assert not [r["id"] for r in rows if SECRET in str(r["details"])], "a planted secret reached the disk"
    with AuditService(path) as svc:
        report = svc.verify()
        assert report.ok, report
        assert report.checked >= len(rows)
    return rows


def assert_all_present(rows: list[dict[str, object]], acks: Acks) -> None:
    by_event = {r["event_id"]: r for r in rows}
    missing = acks.event_ids - by_event.keys()
    assert not missing, f"{len(missing)} acknowledged rows are missing, e.g. {sorted(missing)[:3]}"
    for row_id, event_id in acks.rows:
        assert by_event[event_id]["id"] == row_id


def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    acks = Acks()
    # Three crashes in a row on the same file: each restart recovers the
    # previous one's WAL and goes on with the same chain.
    for crash in range(3):
        child = Child("load", path, f"w{crash}", "0")
        try:
            child.expect("ready")
            flushes, rows = acks.flushes, len(acks.rows)
            while acks.flushes - flushes < 12 or len(acks.rows) - rows < 2:
                line = child.next_line()
                assert line is not None, child.stderr()
                acks.take(line)
            # The writer never pauses: the kill lands mid-stream, with events
            # queued and a batch being committed.
            child.kill()
            assert child.proc.returncode == -signal.SIGKILL
            for line in child.rest():
                acks.take(line)
        finally:
            child.close()
    rows = assert_intact(path)
    assert_all_present(rows, acks)
    assert len(acks.rows) >= 6
    assert len(acks.events) >= 3 * 12 * 25


def test_four_processes_append_to_one_file_and_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    # All four open the new file at once (one of them migrates it), then write together.
    children = [Child("load", path, f"w{i}", "12", "--wait-go") for i in range(4)]
    acks = [Acks() for _ in children]
    try:
        for child in children:
            child.expect("ready")
        for child in children:
            child.send("go")
        for child, ack in zip(children, acks, strict=True):
            child.finish(ack)
    finally:
        for child in children:
            child.close()
    rows = assert_intact(path)
    domain = [r for r in rows if r["event_type"] in ("step_completed", "config_changed")]
    assert len(domain) == sum(len(a.event_ids) for a in acks) == 4 * (12 * 25 + 3)
    for worker, ack in enumerate(acks):
        assert_all_present(rows, ack)
        assert sum(1 for r in domain if r["plan_id"] == f"w{worker}") == len(ack.event_ids)
    assert len({r["source"] for r in domain}) == 4
    # One chain through every process's rows: each row links to the one before it.
    assert all(r["prev_hash"] == before["chain_hash"] for before, r in itertools.pairwise(rows))
    with AuditService(path) as svc:
        assert svc.verify().unchained == 0


@dataclass
class _Shared:
    """What the processes sharing one file acknowledged and reported."""

    acks: list[Acks] = field(default_factory=list)
    purged: list[list[str]] = field(default_factory=list)  # P, deleted, ok, reason
    verdicts: list[list[str]] = field(default_factory=list)  # V, ok, checked, reason
    legacy_ids: list[int] = field(default_factory=list)


def _take_through_flush(child: Child, ack: Acks) -> None:
    """Feeds `ack` every line up to the child's next flush acknowledgement."""
    flushes = ack.flushes
    while ack.flushes == flushes:
        line = child.next_line()
        if line is None:
            pytest.fail(f"writer process ended early: {child.stderr()}")
        ack.take(line)


def _share_with_purges(path: Path) -> _Shared:
    """Three writers to the end and one killed -9 mid-run, while other processes purge, verify and append (legacy)."""
    loaders = [Child("load", path, f"w{i}", "12", "--wait-go") for i in range(3)]
    killed = Child("load", path, "killed", "0", "--wait-go")  # writes until killed
    purger, verifier, legacy = Child("purge", path), Child("verify", path), Child("legacy", path)
    others = [purger, verifier, legacy]
    out = _Shared(acks=[Acks() for _ in range(4)])
    try:
        for child in [*loaders, killed, *others]:
            child.expect("ready")
        for child in [*loaders, killed]:
            child.send("go")
        # Steps in lockstep with the writers' own progress, so each round meets rows in flight.
        while not all(ack.flushes >= 12 for ack in out.acks[:3]):
            for child, ack in zip(loaders, out.acks[:3], strict=True):
                if ack.flushes < 12:
                    _take_through_flush(child, ack)
            if out.acks[3].flushes < 4:
                _take_through_flush(killed, out.acks[3])
            elif killed.proc.poll() is None:
                killed.kill()  # mid-batch: it writes without pause
            # One purge, one verify and one legacy append, all at once.
            for child in others:
                child.send("go")
            out.purged.append(purger.expect("P").split(" ", 3))
            out.verdicts.append(verifier.expect("V").split(" ", 3))
            out.legacy_ids.append(int(legacy.expect("L").split()[1]))
        legacy.send("go")  # one more legacy row, after the last purge
        out.legacy_ids.append(int(legacy.expect("L").split()[1]))
        for child, ack in zip(loaders, out.acks[:3], strict=True):
            child.finish(ack)
        list(map(out.acks[3].take, killed.rest()))
        # Ended by the kill above, not by a failure of its own before it.
        assert killed.proc.wait(timeout=60) == -signal.SIGKILL, killed.stderr()
        for child in others:
            child.send("")
            child.finish()
    finally:
        for child in [*loaders, killed, *others]:
            child.close()
    return out


def test_processes_appending_while_others_purge_verify_and_the_legacy_service_appends(tmp_path: Path) -> None:
    legacy_audit()  # one of the processes is the legacy service: skipped where it is not beside the checkout
    path = tmp_path / "audit.db"
    AuditService(path).close()
    run = _share_with_purges(path)
    # Never a false alarm, neither right after a purge nor from the process that only verifies.
    assert [p[2:] for p in run.purged if p[2] != "True"] == []
    assert [v[1:] for v in run.verdicts if v[1] != "True"] == []
    assert_intact(path)
    with AuditService(path, read_only=True) as svc:
        report = svc.verify()
        assert (report.ok, report.unchained, report.appended) == (True, 0, 0), report
    rows = raw_rows(path)
    # Only purges removed rows, and only the oldest: the ids left run without a gap to the
    # largest ever handed out, and with the rows the purges said they deleted they are all of them.
    ids = [r["id"] for r in rows]
    assert ids == list(range(ids[0], ids[-1] + 1))
    assert ids[-1] == pragma(path, "SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'")[0]
    assert sum(int(p[1]) for p in run.purged) + len(ids) == ids[-1]
    assert ids[0] - 1 == max(json.loads(r["details"])["through_id"] for r in rows if r["event_type"] == "audit_purged")
    # Every acknowledged row is still there unless a purge deleted it (ids up to the last cut).
    present = {r["event_id"] for r in rows}
    for ack in run.acks:
        for row_id, event_id in ack.rows:
            assert (event_id in present) == (row_id >= ids[0])
    assert {r["id"] for r in rows if r["user_identity"] == "legacy"} == {i for i in run.legacy_ids if i >= ids[0]}
    # The run did what it claims: purges deleted rows, the last legacy row is folded in, the kill came mid-run.
    assert sum(int(p[1]) for p in run.purged) > 0
    assert run.legacy_ids[-1] in ids
    assert run.acks[3].flushes >= 4


@pytest.mark.parametrize("attempt", range(16))
def test_eight_processes_that_open_one_new_file_together_all_start(tmp_path: Path, attempt: int) -> None:
    # Each switches the new file to WAL; SQLite refuses all but one such switch at once.
    path = tmp_path / f"audit-{attempt}.db"
    gate = tmp_path / "gate"
    gate.touch()
    with gate.open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        children = [Child("open", path, str(gate)) for _ in range(8)]
        try:
            for child in children:
                child.expect("ready")
            fcntl.flock(held, fcntl.LOCK_UN)
            assert [child.next_line() for child in children] == ["opened"] * 8
        finally:
            for child in children:
                child.close()
    with AuditService(path, read_only=True) as svc:
        assert svc.count(event_type="audit_started") == 8
        assert svc.verify().ok


@pytest.mark.parametrize("busy_timeout", [5.0, 0.05], ids=["waits-in-sqlite", "retries"])
def test_a_database_locked_by_another_process_does_not_block_record_event(tmp_path: Path, busy_timeout: float) -> None:
    path = tmp_path / "audit.db"
    with AuditService(path, busy_timeout=busy_timeout) as svc:
        svc.record("auth_success", user_identity="before")
        locker = Child("lock", path)
        try:
            locker.expect("locked")
            events = [DomainEvent(event_type="step_completed", details={"i": i}) for i in range(200)]
            for event in events:
                svc.record_event(event)
            # Every call above returned while the other process still holds the
            # lock: it lets go only when told to, below.
            assert locker.proc.poll() is None
            durable: list[auditbus.AuditEntry] = []
            waiter = threading.Thread(target=lambda: durable.append(svc.record("auth_failure", user_identity="x")))
            waiter.start()
            with pytest.raises(TimeoutError, match="flush"):
                svc.flush(timeout=1.0)  # nothing can commit while the lock is held
            assert durable == [], "record() returned before its row could be committed"
            assert svc.count(user_identity="before") == 1  # readers are not blocked (WAL)
            if busy_timeout < 1:
                wait_until(lambda: svc.stats()["retries"] >= 1, "the writer to retry")
                assert "locked" in (svc.stats()["last_error"] or "")
            locker.send("release")
            locker.expect("released")
            assert locker.proc.wait(timeout=60) == 0
        finally:
            locker.close()
        svc.flush()
        waiter.join(timeout=60)
        assert not waiter.is_alive()
        assert len(durable) == 1
        assert svc.count(event_type="step_completed") == 200
        assert {e.event_id for e in svc.iter_entries(event_type="step_completed")} == {e.event_id for e in events}
        # The other process's row committed first; ours follow it, on one chain.
        (other,) = svc.query(user_identity="other-process")
        assert other.id < min(e.id for e in svc.query(event_type="step_completed", limit=None))
        assert svc.verify().ok


def test_ctrl_c_interrupts_a_flush_waiting_on_another_processs_lock_and_the_row_still_lands(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    flusher = Child("interrupt", path)
    locker = None
    try:
        flusher.expect("ready")
        locker = Child("lock", path)
        locker.expect("locked")
        flusher.send("go")
        flusher.expect("flushing")
        flusher.proc.send_signal(signal.SIGINT)
        # Before, the flush waited for the lock with Ctrl-C held back: this read timed out.
        assert flusher.next_line(timeout=60) == "interrupted"
        locker.send("release")
        locker.expect("released")
        flusher.send("go")
        acks = Acks()
        assert flusher.finish(acks)[-1] == "done"
    finally:
        flusher.close()
        if locker is not None:
            locker.close()
    assert_all_present(assert_intact(path), acks)
    assert len(acks.events) == 1


class _Stuck:
    """A writer process (`audit_fault_child.py MODE PATH ...`) whose writer another process's lock holds back.

    A context manager: both processes are ended on leaving it. `acks` collects what the writer acknowledged.
    """

    def __init__(self, path: Path, *args: str) -> None:
        self.acks = Acks()
        self.child = Child(args[0], path, *args[1:])
        self.locker: Child | None = None
        try:
            self.child.expect("ready")
            self.locker = Child("lock", path)
            self.locker.expect("locked")
            self.child.send("go")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> _Stuck:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def release(self) -> None:
        """Ends the other process's lock, and tells the writer process so."""
        assert self.locker is not None
        self.locker.send("release")
        self.locker.expect("released")
        self.child.send("go")

    def finish(self) -> dict[str, int]:
        """Reads to the end; returns the counters the process printed after close()."""
        lines = self.child.finish(self.acks)
        assert lines[-1] == "done", lines
        stats: dict[str, int] = json.loads(next(line for line in lines if line.startswith("stats ")).split(" ", 1)[1])
        # Every row that entered the queue is accounted for, and none was lost.
        assert stats["queued"] == stats["written"] + stats["duplicates"] + stats["lost"], stats
        assert stats["lost"] == 0, stats
        return stats

    def close(self) -> None:
        self.child.close()
        if self.locker is not None:
            self.locker.close()


def test_ctrl_c_interrupts_a_close_waiting_on_another_processs_lock_and_the_rows_still_land(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with _Stuck(path, "interrupt-close") as stuck:
        # Before, close() joined the writer with signals held back: no line came while the lock lasted.
        assert stuck.child.next_line(timeout=30) == "interrupted"
        # Interrupted, the service stays closed to new rows; a second close() waits for the rest.
        assert stuck.child.next_line(timeout=30) == "refused"
        stuck.release()
        stuck.finish()
    rows = assert_intact(path)
    assert_all_present(rows, stuck.acks)
    assert [r["details"] for r in rows if r["event_type"] == "audit_stopped"] == ['{"reason":"close()"}']


def test_ctrl_c_interrupts_a_close_waiting_for_room_in_a_full_queue_and_a_later_close_writes_everything(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"
    with _Stuck(path, "interrupt-close-full") as stuck:
        # Before, close() waited for room for its stop row with signals held
        # back: no line came for as long as another process held the lock.
        assert stuck.child.next_line(timeout=30) == "interrupted"
        assert stuck.child.next_line(timeout=30) == "refused"
        assert stuck.child.next_line(timeout=30) == "flush timed out"
        stuck.release()
        # The flush and the second close() queue what the first left: the stop row, then the stop.
        stuck.finish()
    rows = assert_intact(path)
    assert_all_present(rows, stuck.acks)
    assert len(stuck.acks.events) == 3
    assert [r["details"] for r in rows if r["event_type"] == "audit_stopped"] == ['{"reason":"close()"}']


def test_an_exit_after_an_interrupted_close_writes_every_row_and_the_stop_row(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with _Stuck(path, "interrupt-close-exit") as stuck:
        assert stuck.child.next_line(timeout=30) == "interrupted"
        stuck.release()
        lines = stuck.child.finish(stuck.acks)
        stderr = stuck.child.stderr()
    assert lines[-1] == "exiting", lines
    # The exit queued what the interrupted close() left, and waited for it: nothing given up.
    assert "NOT written" not in stderr, stderr
    rows = assert_intact(path)
    assert_all_present(rows, stuck.acks)
    assert len(stuck.acks.events) == 3
    assert [r["details"] for r in rows if r["event_type"] == "audit_stopped"] == ['{"reason":"close()"}']
    assert rows[-1]["event_type"] == "audit_stopped"


def test_ctrl_c_interrupts_a_record_waiting_for_room_in_a_full_queue_and_its_row_is_not_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"
    with _Stuck(path, "interrupt-record") as stuck:
        # Before, with put_timeout=None the wait for room ignored Ctrl-C for as long as the lock lasted.
        line = stuck.child.next_line(timeout=30)
        assert line is not None
        assert line.startswith("interrupted "), line
        _, before, stats = line.split(" ", 2)
        during = json.loads(stats)
        # The interrupted row was not accepted: it is not counted as queued, nor rejected as full.
        assert (during["queued"], during["rejected"]) == (int(before), 0), during
        stuck.release()
        stuck.finish()
    rows = assert_intact(path)
    assert_all_present(rows, stuck.acks)
    assert len(stuck.acks.events) == 3
    assert [r for r in rows if r["plan_id"] == "interrupted"] == []


def test_ctrl_c_interrupts_a_purge_waiting_on_another_processs_lock_and_the_purge_still_runs(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with _Stuck(path, "interrupt-purge") as stuck:
        assert stuck.child.next_line(timeout=30) == "interrupted"
        stuck.release()
        lines = stuck.child.finish(stuck.acks)
    assert lines[-2:] == ["purged 1", "done"]
    assert_all_present(assert_intact(path), stuck.acks)


def test_stats_and_record_event_answer_while_close_waits_for_room_in_a_full_queue(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with _Stuck(path, "close-full") as stuck:
        # Before, stats() waited for the close holding the GIL: the whole process stood still.
        assert stuck.child.next_line(timeout=30) == "refused"
        assert stuck.child.next_line(timeout=30) == "answered"
        stuck.release()
        stuck.finish()
    assert_all_present(assert_intact(path), stuck.acks)
    assert len(stuck.acks.events) == 3


def test_a_second_close_returns_only_once_the_rows_are_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with _Stuck(path, "close-twice") as stuck:
        assert stuck.child.next_line(timeout=30) == "closing"
        # Before, the second close() found the first one joining the writer and
        # returned at once, with the row still held back by the lock.
        stuck.release()
        assert stuck.child.next_line(timeout=30) == "returned True"
        stuck.finish()
    assert_all_present(assert_intact(path), stuck.acks)


@pytest.mark.parametrize(
    ("call", "raised"),
    [
        ("record", "AuditError"),
        ("flush", "AuditError"),
        ("purge", "AuditError"),
        ("close", "AuditError"),
        ("record_event", "QueueFullError"),
    ],
)
def test_a_handler_of_the_auditbus_logger_calling_the_service_gets_an_error_instead_of_stopping_the_writer(
    tmp_path: Path, call: str, raised: str
) -> None:
    # The writer thread logs its first failure; the handler runs there. Before,
    # record(), flush(), purge() and a record_event() into a full queue waited
    # for that very thread (the service stopped for good) and close() panicked.
    path = tmp_path / "audit.db"
    with _Stuck(path, "reenter", call) as stuck:
        assert stuck.child.next_line(timeout=30) == f"outcome {raised}"
        stuck.release()
        stuck.finish()
    assert_all_present(assert_intact(path), stuck.acks)
    # The stuck row, and for record_event() the two rows the queue had room for.
    assert len(stuck.acks.events) == (3 if call == "record_event" else 1)


# Three services with more rows queued than one batch holds, exiting while
# another process holds the write lock.
_EXIT_LOCKED = """
import sys
from auditbus import AuditService, DomainEvent
services = [AuditService(sys.argv[1]) for _ in range(3)]
for svc in services:
    svc.flush()
print("ready", flush=True)
sys.stdin.readline()
for svc in services:
    for i in range(6000):
        svc.record_event(DomainEvent(event_type="step_completed", details={"i": i}))
print("queued", flush=True)
"""


def _exit_with_the_database_locked(path: Path, script: str) -> tuple[str, str]:
    """Runs `script` on `path`; once it prints "ready", another process holds the write lock, and the
    script, sent a line, goes on and exits under it. Its stdout and stderr, after a clean exit."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n", child.stderr.read() if child.stderr else ""
        with write_locked(path):
            child.stdin.write("go\n")
            child.stdin.flush()
            # The 10 s exit limit is one for the whole exit, not 10 s per service
            # plus a busy_timeout per batch still queued (which took minutes).
            try:
                out, err = child.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                pytest.fail("the interpreter exit did not give up within one exit limit while the database was locked")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == 0, err
    return out, err


def test_an_exit_on_a_locked_database_gives_up_within_one_limit_for_every_service_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _, err = _exit_with_the_database_locked(path, _EXIT_LOCKED)
    # Every row given up is counted on stderr (no logging configured), never silently.
    given_up = [int(n) for n in re.findall(r"gave up at interpreter exit: (\d+) records were NOT written", err)]
    assert sum(given_up) >= 3 * 6000, err
    assert raw_rows(path, "event_type = 'step_completed'") == []
    with AuditService(path) as svc:
        assert svc.verify().ok


# Ctrl-C while the exit waits for a locked database. A handler's close()
# is where buffering handlers write what they hold: logging's own exit hook,
# which runs after auditbus's, must still call it.
_INTERRUPTED_EXIT = """
import logging, os, signal, sys, threading, time
class Handler(logging.Handler):
    def emit(self, record):
        pass
    def close(self):
        print("handler closed", flush=True)
        super().close()
logging.getLogger("app").addHandler(Handler())
from auditbus import AuditService, DomainEvent
svc = AuditService(sys.argv[1], busy_timeout=0.05)
svc.flush()
print("ready", flush=True)
sys.stdin.readline()
for i in range(10):
    svc.record_event(DomainEvent(event_type="step_completed", details={"i": i}))
def interrupt():
    while not svc.stats()["closed"]:  # the exit's close has begun: it waits for the lock
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=interrupt, daemon=True).start()
"""


def test_a_ctrl_c_while_the_exit_waits_for_a_locked_database_leaves_logging_s_exit_alone(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    out, err = _exit_with_the_database_locked(path, _INTERRUPTED_EXIT)
    assert "gave up at interpreter exit: 11 records were NOT written" in err, err
    assert "KeyboardInterrupt" in err, err
    assert "handler closed" in out.splitlines(), (out, err)


# A thread waits in flush() while the database is locked and the main thread
# exits. An at-exit function registered before auditbus is imported runs after
# the services' own exit hook, and reports what that flush() did.
_FLUSH_WAITING_AT_EXIT = """
import atexit, sys, threading, time
answers = []
def report():
    waiter.join(timeout=60)
    print("flush", *answers, flush=True)
atexit.register(report)
from auditbus import AuditService, DomainEvent
svc = AuditService(sys.argv[1], busy_timeout=0.05)
svc.flush()
print("ready", flush=True)
sys.stdin.readline()
for i in range(10):
    svc.record_event(DomainEvent(event_type="step_completed", details={"i": i}))
while svc.stats()["retries"] == 0:  # the writer holds the rows, retrying, and reads no message meanwhile
    time.sleep(0.01)
def wait():
    try:
        svc.flush()
        answers.append("returned")
    except Exception as exc:
        answers.append(type(exc).__name__)
waiter = threading.Thread(target=wait, daemon=True)
waiter.start()
while svc.stats()["queue_depth"] == 0:  # the flush is queued behind them
    time.sleep(0.01)
"""


def test_a_flush_waiting_when_the_exit_gives_its_rows_up_raises_instead_of_returning(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    out, err = _exit_with_the_database_locked(path, _FLUSH_WAITING_AT_EXIT)
    assert "gave up at interpreter exit" in err, err
    # The rows it waited for were not written: a flush() that returned would say they were.
    assert out.splitlines() == ["flush AuditError"], (out, err)
    assert raw_rows(path, "event_type = 'step_completed'") == []


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs: a real filesystem that runs out of space (needs root and mount)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and mount): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("how", ["rlimit", "tmpfs"])
def test_a_full_disk_loses_nothing_once_space_returns(tmp_path: Path, how: str, request: pytest.FixtureRequest) -> None:
    if how == "tmpfs":
        folder = request.getfixturevalue("small_filesystem")
        fault = f"ballast:{folder / 'ballast'}"
    else:
        # A file size limit on the writer process: writes that would grow the
        # database files fail with EFBIG, as on a full disk, for it alone.
        folder, fault = tmp_path, "rlimit"
    path = folder / "audit.db"
    child = Child("full", path, fault)
    acks = Acks()
    try:
        lines = child.finish(acks)
    finally:
        child.close()
    assert "filled" in lines
    assert "freed" in lines
    failing = next(line for line in lines if line.startswith("failing "))
    stats = next(line for line in lines if line.startswith("stats "))
    during, after = json.loads(failing.split(" ", 1)[1]), json.loads(stats.split(" ", 1)[1])
    assert during["errors"] >= 1, during
    assert during["last_error"], during
    assert after["retries"] >= 1, after
    assert after["lost"] == 0, after
    logged = [line for line in lines if line.startswith("L ")]
    assert any(line.startswith("L ERROR") and "retrying" in line for line in logged), logged
    assert any(line.startswith("L WARNING") and "recovered" in line for line in logged), logged
    rows = assert_intact(path)
    assert_all_present(rows, acks)
    assert len(acks.events) > 200  # rows written before and during the fault
    (failure, *_) = [r for r in rows if r["event_type"] == "audit_failure"]
    assert during["last_error"] in str(failure["details"])


def _database_with_rows(path: Path, n: int = 400) -> None:
    with AuditService(path) as svc:
        for i in range(n):
            svc.record_event(DomainEvent(event_type="step_completed", user_identity=f"u{i % 5}", details={"i": i}))


@pytest.mark.parametrize("damage", ["garbage", "truncated-half", "truncated-header", "empty-pages"])
def test_a_corrupt_file_is_a_clear_error_naming_it(tmp_path: Path, damage: str) -> None:
    path = tmp_path / f"{damage}.db"
    if damage == "garbage":
        path.write_bytes(bytes(range(256)) * 64)
    else:
        _database_with_rows(path)
        data = path.read_bytes()
        if damage == "truncated-half":
            data = data[: len(data) // 2 + 123]
        elif damage == "truncated-header":
            data = data[:60]
        else:
            data = data[:4096] + b"\0" * (len(data) - 4096)
        path.write_bytes(data)

    def open_and_read() -> None:
        with AuditService(path) as svc:
            svc.query(user_identity="u1")
            svc.verify()

    # Found at open or by the first read that touches a damaged page; either way an AuditError naming the file.
    with pytest.raises(auditbus.AuditError, match=rf"{damage}\.db"):
        open_and_read()


# Damage that opening cannot see: an index page of a real database. Run in a
# child process, so a hang is a failed assertion, not a stuck test run.
_DAMAGED_INDEX = """
import sys, threading, auditbus
from auditbus import AuditService
svc = AuditService(sys.argv[1])
for name, call in [("query", lambda: svc.query(user_identity="u1")), ("verify", svc.verify),
                   ("record", lambda: svc.record("auth_success", user_identity="u1"))]:
    try:
        call()
        print(name, "ok", flush=True)
    except auditbus.AuditError as e:
        print(name, "AuditError", e, flush=True)
try:
    svc.close()
    print("closed", flush=True)
except auditbus.AuditError as e:  # the writer stopped on the damage: closed all the same
    print("closed", "AuditError", e, flush=True)
"""


def _damage_user_index(path: Path) -> None:
    """Overwrites the root page of the `user_identity` index: SQLite reports that file as malformed."""
    (root,) = pragma(path, "SELECT rootpage FROM sqlite_master WHERE name = 'ix_audit_log_user_identity'")
    (page_size,) = pragma(path, "PRAGMA page_size")
    assert isinstance(root, int)
    assert isinstance(page_size, int)
    with path.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)


def test_a_damaged_index_page_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    _database_with_rows(path, 3000)
    _damage_user_index(path)
    done = run_script(_DAMAGED_INDEX, path)
    out = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    for name in ("query", "record"):
        (line,) = [line for line in out if line.startswith(name + " ")]
        assert line.startswith(f"{name} AuditError"), line
        assert "index.db" in line, line
        assert "malformed" in line, line
    assert out[-1].startswith("closed AuditError"), out
    assert "malformed" in out[-1], out


_HOLDS_LOCKS = """
import sys, auditbus
from auditbus import AuditService
svc = AuditService(sys.argv[1])
svc.count()
reported = 0
if sys.argv[2] == "damaged":
    for call in (lambda: svc.query(user_identity="u1"), lambda: svc.record("auth_success", user_identity="u1")):
        try:
            call()
        except auditbus.AuditError as e:
            assert "malformed" in str(e), e
            reported += 1
print("ready", reported, flush=True)
sys.stdin.readline()
try:
    svc.close()
except auditbus.AuditError as e:  # the writer stopped on the damage
    assert "malformed" in str(e), e
"""


def _exclusive_lock_taken(path: Path) -> bool:
    """Whether this process gets the write lock SQLite's shared readers of `path` keep out."""
    shared_first, shared_size = 0x40000000 + 2, 510  # SQLite's lock bytes (PENDING_BYTE + 2)
    with path.open("r+b") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, shared_size, shared_first)
        except OSError:
            return False
        fcntl.lockf(f, fcntl.LOCK_UN, shared_size, shared_first)
        return True


@pytest.mark.parametrize("state", ["sound", "damaged"])
def test_a_damaged_page_reported_keeps_the_processs_sqlite_locks(tmp_path: Path, state: str) -> None:
    # Telling a failing disk from a damaged page reads the files; closing a
    # descriptor of the database file would drop every POSIX lock this
    # process holds on it, and another process could then checkpoint and
    # delete the -wal file under the open service.
    path = tmp_path / "locks.db"
    _database_with_rows(path, 3000)
    if state == "damaged":
        _damage_user_index(path)
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDS_LOCKS, str(path), state], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stdin is not None
        try:
            # Both calls on the damaged file reported the damage: the check below follows a report.
            assert child.stdout.readline() == f"ready {2 if state == 'damaged' else 0}\n"
            # The child's service holds SQLite's shared lock on the file: no
            # other process may take the write lock on those bytes.
            assert not _exclusive_lock_taken(path)
        finally:
            child.stdin.write("\n")
            child.stdin.flush()
            child.wait(timeout=120)


HOSTILE = [
    "' OR '1'='1",
    "x'); DELETE FROM audit_log; --",
    "u1' UNION SELECT * FROM audit_log --",
    "%",
    "_",
    "u1\0",
    "u1; PRAGMA writable_schema=1",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_sql_looking_filter_values_match_nothing_and_harm_nothing(tmp_path: Path, value: str) -> None:
    path = tmp_path / "audit.db"
    with AuditService(path) as svc:
        svc.record("auth_success", user_identity="u1", plan_id="p1", details={"outcome": "success"})
        svc.record_event(DomainEvent(event_type="step_completed", actor_name="a", session_id="s", project_name="pr"))
        svc.flush()
        before = svc.count()
        for field in ("user_identity", "plan_id", "actor_name", "session_id", "project_name", "outcome"):
            assert svc.query(**{field: value}) == []
            assert svc.count(**{field: value}) == 0
            assert list(svc.iter_entries(**{field: value})) == []
        for field in ("event_type", "since", "until"):
            with pytest.raises(ValueError, match=field):
                svc.query(**{field: value})
        assert svc.count() == before
        assert svc.verify().ok
    assert pragma(path, "PRAGMA integrity_check") == ["ok"]
    assert pragma(path, "SELECT count(*) FROM audit_log WHERE event_type IN ('auth_success', 'step_completed')") == [2]


def test_the_legacy_surface_binds_hostile_values_too(tmp_path: Path) -> None:
    # The legacy query() takes the same three text filters: same answer there.
    with AuditService(tmp_path / "audit.db") as svc:
        svc.record("auth_success", user_identity="u1", plan_id="p1")
        for value in HOSTILE:
            assert svc.query(event_type="auth_success", user_identity=value) == []
            assert svc.query(event_type="auth_success", plan_id=value) == []
        assert len(svc.query(event_type="auth_success")) == 1


def test_the_writer_child_really_plants_secrets() -> None:
    # The intactness check above looks for this value on disk; it must be one the redactor masks.
    with AuditService(":memory:") as svc:
        entry = svc.record("config_changed", details={"api_key": SECRET, "note": "n"})
        assert SECRET not in str(entry.details)
        assert entry.details["note"] == "n"


# Real I/O errors: an LD_PRELOAD shim (tests/ioerr_shim.c) makes write, fsync
# or read fail with EIO or ENOSPC on one of the database's files while a
# trigger file exists, in the writer process only.
SHIM_SOURCE = Path(__file__).with_name("ioerr_shim.c")


@pytest.fixture(scope="session")
def ioerr_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shim, compiled for this machine (the CI image has a C compiler: it builds SQLite)."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler (cc, gcc or clang) to build the I/O error shim tests/ioerr_shim.c")
    out = tmp_path_factory.mktemp("shim") / "ioerr_shim.so"
    done = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


class _Faulty:
    """A writer process (`audit_fault_child.py io PATH`) under the shim: `fail()` starts the fault, `clear()` ends it.

    `acks` collects what the process acknowledged, `logged` its log lines, `raised` the calls that raised.
    """

    def __init__(self, shim: Path, path: Path) -> None:
        self.trigger = path.with_name("ioerr.trigger")
        self.hit_log = path.with_name("ioerr.hits")
        self.acks = Acks()
        self.logged: list[str] = []
        self.raised: list[str] = []
        env = {"LD_PRELOAD": str(shim), "IOERR_TRIGGER": str(self.trigger), "IOERR_LOG": str(self.hit_log)}
        self.child = Child("io", path, env=env)
        try:
            self.child.expect("ready")
        except BaseException:
            self.child.close()
            raise

    def __enter__(self) -> _Faulty:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.child.close()

    def fail(self, *faults: str) -> None:
        self.trigger.write_text("".join(f"{fault}\n" for fault in faults))

    def clear(self) -> None:
        self.trigger.unlink()

    def hits(self) -> list[str]:
        """The calls the shim failed, as "OP PATH"."""
        return self.hit_log.read_text().splitlines() if self.hit_log.exists() else []

    def take(self, line: str) -> None:
        self.acks.take(line)
        if line.startswith("L "):
            self.logged.append(line)
        elif line.startswith("E "):
            self.raised.append(line)

    def until(self, word: str) -> str:
        """Reads (taking acknowledgements, log lines and errors) up to a line starting with `word`."""
        while True:
            line = self.child.next_line()
            if line is None:
                pytest.fail(f"writer process ended before {word!r}: rc={self.child.proc.wait()}, {self.child.stderr()}")
            self.take(line)
            if line.split(" ", 1)[0] == word:
                return line

    def step(self, command: str, answer: str) -> str:
        self.child.send(command)
        return self.until(answer)

    def write(self, emitted: int, records: int = 1) -> None:
        """`emitted` rows to record_event() and a flush(), then `records` durable record() calls; returns at once."""
        self.step(f"emit {emitted}", "emitted")
        self.step("flush", "called")
        for _ in range(records):
            self.step("record", "called")

    def failing(self, retries: int = 3) -> tuple[int, dict[str, Any]]:
        """Waits for the writer to have retried `retries` times; returns the calls still waiting and the counters."""
        _, waiting, stats = self.step(f"retries {retries}", "failing").split(" ", 2)
        return int(waiting), json.loads(stats)

    def close(self) -> dict[str, Any]:
        """close(); the process must end cleanly. Returns the counters after close()."""
        stats: dict[str, Any] = json.loads(self.step("close", "stats").split(" ", 1)[1])
        for line in self.child.finish():
            self.take(line)
        # Every row handed over is accounted for, and none was lost.
        assert stats["queued"] == stats["written"] + stats["duplicates"] + stats["lost"], stats
        assert stats["lost"] == 0, stats
        return stats


def assert_once_and_contiguous(rows: list[dict[str, Any]], acks: Acks) -> None:
    """Every acknowledged row is there exactly once; the ids run without a gap."""
    assert_all_present(rows, acks)
    ids = [r["id"] for r in rows]
    assert ids == list(range(1, len(ids) + 1))
    event_ids = [r["event_id"] for r in rows]
    assert len(set(event_ids)) == len(event_ids), "a row was written twice"


def _logged(faulty: _Faulty, level: str, text: str) -> list[str]:
    return [line for line in faulty.logged if line.startswith(f"L {level} ") and text in line]


@pytest.mark.parametrize(
    "fault",
    ["fsync -wal EIO", "write -wal EIO", "write -wal ENOSPC"],
    ids=["fsync-wal-eio", "pwrite-wal-eio", "pwrite-wal-enospc"],
)
def test_an_io_error_on_the_wal_acknowledges_nothing_until_it_clears_and_then_loses_nothing(
    tmp_path: Path, ioerr_shim: Path, fault: str
) -> None:
    path = tmp_path / "audit.db"
    op, suffix, _ = fault.split()
    with _Faulty(ioerr_shim, path) as faulty:
        faulty.write(50)
        faulty.step("join", "joined")
        faulty.fail(fault)
        # Two write-behind flushes and three durable records while every commit fails.
        faulty.write(40, records=2)
        faulty.write(10)
        waiting, during = faulty.failing()
        # No flush() or record() returned: an acknowledged row must be durable, and these are not.
        assert waiting == 5, faulty.child.seen
        assert (faulty.acks.flushes, len(faulty.acks.rows)) == (1, 1)
        assert faulty.raised == []
        assert during["errors"] >= 3, during
        assert during["lost"] == 0, during
        expected = "database or disk is full" if fault.endswith("ENOSPC") else "disk I/O error"
        assert expected in (during["last_error"] or ""), during
        if expected == "disk I/O error":
            # Which call failed, not only that one did.
            said = {"fsync": "an fsync of the database files failed", "write": "a write to the database files failed"}
            assert said[op] in during["last_error"], during
        hits = faulty.hits()
        assert hits, "the shim failed no call: the fault was not injected"
        assert all(h.startswith(f"{op} ") and h.endswith(f"audit.db{suffix}") for h in hits), hits[:3]
        faulty.clear()
        faulty.step("join", "joined")
        assert (faulty.acks.flushes, len(faulty.acks.rows)) == (3, 4)
        # The writer goes on once the fault is gone.
        faulty.write(20)
        faulty.step("join", "joined")
        after = faulty.close()
    assert faulty.raised == []
    assert after["retries"] >= 3, after
    assert _logged(faulty, "ERROR", "keeping them and retrying"), faulty.logged
    assert _logged(faulty, "WARNING", "recovered after"), faulty.logged
    rows = assert_intact(path)
    assert_once_and_contiguous(rows, faulty.acks)
    assert len(faulty.acks.events) == 120
    # The fault is in the trail itself, written once, with the batch it held back.
    (failure,) = [r for r in rows if r["event_type"] == "audit_failure"]
    assert expected in str(failure["details"])


@pytest.mark.parametrize("fault", ["write .db EIO", "write .db ENOSPC", "fsync .db EIO"])
def test_a_failing_checkpoint_into_the_database_file_stops_no_commit_and_loses_nothing(
    tmp_path: Path, ioerr_shim: Path, fault: str
) -> None:
    # Commits go to the WAL; only the checkpoint after them writes the main file.
    path = tmp_path / "audit.db"
    op = fault.split(maxsplit=1)[0]
    with _Faulty(ioerr_shim, path) as faulty:
        faulty.write(20)
        faulty.step("join", "joined")
        faulty.fail(fault)
        rounds = 0
        # Rows until a checkpoint has come due and failed (about 1000 WAL frames).
        while not faulty.hits():
            rounds += 1
            assert rounds <= 40, "no checkpoint was attempted"
            faulty.write(200)
            faulty.step("join", "joined")
        # Every flush and record returned: a checkpoint that fails holds no commit back.
        assert faulty.raised == []
        assert (faulty.acks.flushes, len(faulty.acks.rows)) == (rounds + 1, rounds + 1)
        # The shim has failed the checkpoint's write; the writer counts it once the checkpoint returns.
        _, _, stats = faulty.step("errors 1", "erring").split(" ", 2)
        during = json.loads(stats)
        assert (during["last_error"] or "").startswith("checkpoint"), during
        if fault.endswith("EIO"):
            assert f" {op} " in during["last_error"], during
        assert all(h.startswith(f"{op} ") and h.endswith("audit.db") for h in faulty.hits())
        # Reported, not only counted: a failing disk under a growing WAL must reach the operator.
        while not _logged(faulty, "WARNING", "checkpoint"):
            faulty.until("L")
        # More checkpoints come due and fail while the fault lasts; the writer goes on.
        faulty.write(600)
        faulty.step("join", "joined")
        faulty.clear()
        for _ in range(6):
            faulty.write(200)
            faulty.step("join", "joined")
        faulty.close()
    assert faulty.raised == []
    assert _logged(faulty, "WARNING", "checkpoint"), faulty.logged
    # The last connection's close folded the WAL into the database file: the checkpoint works again.
    assert not path.with_name("audit.db-wal").exists()
    rows = assert_intact(path)
    assert_once_and_contiguous(rows, faulty.acks)
    assert len(faulty.acks.events) == 20 + 200 * rounds + 600 + 6 * 200


def test_an_exit_while_fsync_fails_gives_up_within_the_limit_and_counts_exactly_the_rows_not_written(
    tmp_path: Path, ioerr_shim: Path
) -> None:
    path = tmp_path / "audit.db"
    with _Faulty(ioerr_shim, path) as faulty:
        faulty.write(10, records=0)
        faulty.step("join", "joined")
        faulty.fail("fsync -wal EIO")
        faulty.step("emit 30", "emitted")
        waiting, during = faulty.failing()
        assert waiting == 0
        # The interpreter exits with the fault on: the exit hook waits its limit, then gives up.
        faulty.step("exit", "exiting")
        for line in faulty.child.finish():
            faulty.take(line)
    gave_up = re.compile(r"gave up at interpreter exit: (\d+) records were NOT written")
    given_up = [int(n) for line in faulty.logged for n in gave_up.findall(line)]
    # The 30 rows handed over, the audit_failure row that tells of the fault, and the
    # audit_stopped row of the exit. Before, each batch given up after the limit first
    # made an audit_failure row of its own, counted NOT written too.
    assert sum(given_up) == 30 + 1 + 1, faulty.logged
    assert len(_logged(faulty, "ERROR", "keeping them and retrying")) == 1, faulty.logged
    assert during["lost"] == 0
    # SQLite cannot say whether a commit whose fsync failed is in the file: the rows of the
    # last one are in the -wal file and may be found there at the next open. Said so, not hidden.
    assert all("may still turn up" in line for line in _logged(faulty, "CRITICAL", "gave up")), faulty.logged
    faulty.clear()
    rows = assert_intact(path)
    assert_once_and_contiguous(rows, faulty.acks)
    # The acknowledged rows, and of those given up at most the last commit tried (the stop row here).
    assert [r for r in rows if r["event_type"] == "step_completed"] == rows[1:11]
    assert {r["event_type"] for r in rows[11:]} <= {"audit_stopped"}, rows[11:]


def _trail_in_the_database_file(path: Path, rows: int) -> None:
    """`rows` rows of ~1 KB (more than SQLite's page cache holds), all in the main file (the close folds the WAL in)."""
    with AuditService(path) as svc:
        for i in range(rows):
            details = {"i": i, "note": "x" * 900}
            svc.record_event(DomainEvent(event_type="step_completed", plan_id="io", details=details))
    assert not path.with_name(path.name + "-wal").exists()


@pytest.mark.parametrize("suffix", [".db", "-wal"])
def test_a_read_error_makes_the_writer_retry_and_readers_raise_naming_the_file(
    tmp_path: Path, ioerr_shim: Path, suffix: str
) -> None:
    path = tmp_path / "audit.db"
    _trail_in_the_database_file(path, 3000)
    with _Faulty(ioerr_shim, path) as faulty:
        if suffix == "-wal":
            # Rows in the WAL (no checkpoint comes due before 1000 frames), read back from there.
            faulty.write(300, records=0)
            faulty.step("join", "joined")
        before = faulty.acks.flushes
        faulty.fail(f"read {suffix} EIO")
        # Another process commits: the writer's page cache is stale, its next
        # commit must read the files again.
        with AuditService(path) as other:
            other.record("auth_success", user_identity="other")
        faulty.write(10)
        waiting, during = faulty.failing()
        assert waiting == 2
        assert (faulty.acks.flushes, len(faulty.acks.rows), faulty.raised) == (before, 0, [])
        # SQLite reports a failed read() as "database disk image is malformed": before, the
        # writer took that for a damaged file and stopped for good, the rows given up.
        assert "Input/output error" in (during["last_error"] or ""), during
        assert during["lost"] == 0, during
        # Readers: a clear error naming the file and the failed read, never a crash or a wrong answer.
        for read in ("query", "count", "verify"):
            line = faulty.step(read, "read")
            assert line.startswith(f"read {read} AuditError "), line
            assert "audit.db" in line, line
            # "disk I/O error" from SQLite, or the failed read() it reported as damage.
            assert "I/O error" in line, line
            assert "malformed" not in line or "Input/output error" in line, line
        hits = faulty.hits()
        assert hits, "the shim failed no call: the fault was not injected"
        assert all(h.startswith("read ") and h.endswith(f"audit.db{suffix.replace('.db', '')}") for h in hits), hits[:3]
        faulty.clear()
        faulty.step("join", "joined")
        assert (faulty.acks.flushes, len(faulty.acks.rows)) == (before + 1, 1)
        assert faulty.step("count", "read").startswith("read count ok ")
        assert faulty.step("verify", "read").startswith("read verify ok True:")
        faulty.close()
    assert faulty.raised == []
    assert _logged(faulty, "WARNING", "recovered after"), faulty.logged
    rows = assert_intact(path)
    assert_once_and_contiguous(rows, faulty.acks)
    assert len([r for r in rows if r["plan_id"] == "io"]) == 3000 + 11 + (300 if suffix == "-wal" else 0)


@pytest.mark.parametrize("fault", ["fsync -wal EIO", "write -wal EIO"], ids=["fsync-wal-eio", "pwrite-wal-eio"])
def test_kill_9_while_an_io_error_holds_loses_nothing_acknowledged(
    tmp_path: Path, ioerr_shim: Path, fault: str
) -> None:
    path = tmp_path / "audit.db"
    with _Faulty(ioerr_shim, path) as faulty:
        faulty.write(60, records=2)
        faulty.step("join", "joined")
        faulty.fail(fault)
        faulty.write(40, records=2)
        waiting, _ = faulty.failing()
        assert waiting == 3
        faulty.child.kill()
        assert faulty.child.proc.returncode == -signal.SIGKILL
        for line in faulty.child.rest():
            faulty.take(line)
    assert (faulty.acks.flushes, len(faulty.acks.rows)) == (1, 2)
    faulty.clear()
    # A fresh process (no fault) recovers the WAL: what was acknowledged is there, once.
    rows = assert_intact(path)
    assert_once_and_contiguous(rows, faulty.acks)
    # A commit whose WAL sync failed may still be found after the crash: never acknowledged, never a duplicate.
    written = [r for r in rows if r["event_type"] == "step_completed"]
    assert len(written) in (60, 100), len(written)
    # And the file takes new rows on the same chain.
    with _Faulty(ioerr_shim, path) as again:
        again.write(10)
        again.step("join", "joined")
        again.close()
    rows = assert_intact(path)
    assert_once_and_contiguous(rows, again.acks)


# Reads past the header fail (the CLI reads the header itself, so SQLite meets the
# fault); or the WAL cannot be synced, so the command's own start row never commits.
_CLI_FAULTS = [
    ("verify", "read .db EIO 4096", True, "Input/output error"),
    ("query", "read .db EIO 4096", True, "Input/output error"),
    ("verify", "read .db EIO 4096", False, "Input/output error"),
    ("query", "read .db EIO 4096", False, "Input/output error"),
    ("verify", "fsync -wal EIO", False, "disk I/O error"),
]


_CLI_IDS = ["-".join([c, f.split(maxsplit=1)[0], "read-only" if r else "recording"]) for c, f, r, _ in _CLI_FAULTS]


@pytest.mark.parametrize("case", _CLI_FAULTS, ids=_CLI_IDS)
def test_the_cli_on_a_failing_file_prints_one_error_line_and_exits_non_zero(
    tmp_path: Path, ioerr_shim: Path, case: tuple[str, str, bool, str]
) -> None:
    command, fault, read_only, said = case
    path = tmp_path / "audit.db"
    _trail_in_the_database_file(path, 3000)
    trigger, hits = tmp_path / "ioerr.trigger", tmp_path / "ioerr.hits"
    trigger.write_text(f"{fault}\n")
    env = {**os.environ, "LD_PRELOAD": str(ioerr_shim), "IOERR_TRIGGER": str(trigger), "IOERR_LOG": str(hits)}
    flags = ["--read-only"] if read_only else []
    try:
        done = subprocess.run(
            [sys.executable, "-m", "auditbus", "--db", str(path), *flags, command],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        # Before, a command that records its access waited for good for its start row.
        pytest.fail(f"auditbus {command} did not end while its database failed ({fault})")
    assert hits.read_text(), "the shim failed no call: the fault was not injected"
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("auditbus: error:")]
    assert "audit.db" in error, error
    assert said in error, error
    if not read_only:
        # The access could not be recorded: the way to read anyway is named, and the
        # exit says that the command's own rows were not written.
        assert "--read-only" in error, error
        assert "records were NOT written" in done.stderr, done.stderr
    trigger.unlink()
    with AuditService(path, read_only=True) as svc:
        assert svc.verify().ok
        assert svc.count(event_type="step_completed") == 3000


def test_a_close_while_fsync_fails_returns_only_once_every_row_is_written(tmp_path: Path, ioerr_shim: Path) -> None:
    path = tmp_path / "audit.db"
    with _Faulty(ioerr_shim, path) as faulty:
        faulty.fail("fsync -wal EIO")
        faulty.step("emit 30", "emitted")
        faulty.step("closing", "called")
        # close() is still waiting after several failed commits: it returns only once the rows are written.
        closing, during = faulty.failing()
        assert closing == 1, faulty.child.seen
        assert (during["closed"], during["lost"]) == (True, 0), during
        faulty.clear()
        faulty.child.send("join")
        _, stats = faulty.until("closed").split(" ", 1)
        after = json.loads(stats)
        for line in faulty.child.finish():
            faulty.take(line)
    assert after["queued"] == after["written"] + after["duplicates"], after
    assert after["lost"] == 0, after
    rows = assert_intact(path)
    assert len([r for r in rows if r["event_type"] == "step_completed"]) == 30
    assert [r["details"] for r in rows if r["event_type"] == "audit_stopped"] == ['{"reason":"close()"}']


@pytest.mark.parametrize("fault", ["fsync -wal EIO", "write -wal ENOSPC"], ids=["fsync-wal-eio", "pwrite-wal-enospc"])
def test_a_purge_that_fails_on_an_io_error_raises_and_deletes_nothing(
    tmp_path: Path, ioerr_shim: Path, fault: str
) -> None:
    path = tmp_path / "audit.db"
    with _Faulty(ioerr_shim, path) as faulty:
        faulty.write(50)
        faulty.step("join", "joined")
        faulty.fail(fault)
        # Nothing is queued: the purge's own transaction meets the fault, and its caller hears of it.
        line = faulty.step("purge", "E")
        assert line.startswith("E AuditError "), line
        assert "purge of" in line, line
        assert "audit.db" in line, line
        assert faulty.hits(), "the shim failed no call: the fault was not injected"
        faulty.clear()
        assert faulty.step("verify", "read").startswith("read verify ok True:")
        assert faulty.step("purge", "purged") == f"purged {1 + 50 + 1}"
        faulty.close()
    assert faulty.raised == [line]
    rows = assert_intact(path)
    # Only the one purge that ran left its row; the failed one deleted nothing and left none.
    assert [r["event_type"] for r in rows][:2] == ["audit_purged", "audit_stopped"]
    assert len([r for r in rows if r["event_type"] == "audit_purged"]) == 1


# Runs before anything has imported `datetime`: its C API is then loaded by the
# first timestamp auditbus reads, and that load needs file descriptors.
_NO_FDS_LEFT = """
import os, resource, sys
assert "datetime" not in sys.modules, "datetime already imported: the fault would not be met"
from auditbus import AuditService, DomainEvent
svc = AuditService(sys.argv[1])
svc.record("auth_success")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 2, hard))
hog = []
try:
    while True:
        hog.append(open(os.devnull))
except OSError:
    pass
calls = {
    "count": lambda: svc.count(since="2000-01-01T00:00:00Z"),
    "purge": lambda: svc.purge("2000-01-01T00:00:00Z", dry_run=True),
    "event": lambda: DomainEvent(event_type="auth_success", timestamp="2000-01-01T00:00:00Z"),
}
for name, call in calls.items():
    try:
        call()
    except Exception as exc:
        print(name, "raised", type(exc).__name__, exc, flush=True)
    else:
        print(name, "returned", flush=True)
for f in hog:
    f.close()
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print("after", svc.count(since="2000-01-01T00:00:00Z"), svc.purge("2000-01-01T00:00:00Z", dry_run=True), flush=True)
svc.close()
"""


def test_reading_a_timestamp_with_no_file_descriptor_left_raises_an_error_naming_the_limit(tmp_path: Path) -> None:
    done = run_script(_NO_FDS_LEFT, tmp_path / "a.db")
    # Before, the first timestamp read crashed the process (SIGSEGV): Python's
    # `datetime` could not be loaded, and its missing C API was used anyway.
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["count", "purge", "event", "after"], lines
    assert lines[3] == "after 1 0", lines
    # Then it raised ImportError "PyCapsule_Import could not import module "datetime"",
    # which said neither what happened nor what to do.
    for line in lines[:3]:
        assert line.split()[1:3] == ["raised", "OSError"], line
        assert "too many open files" in line, line
        assert "RLIMIT_NOFILE" in line, line
        assert "ulimit -n" in line, line


# Hands rows over while another process holds the write lock (so they stay
# queued), says so, and waits for a signal; with `handler`, SIGTERM and SIGHUP
# raise SystemExit, as a service's own handler would.
_STOPPED_BY_SIGNAL = """
import signal, sys, time
from auditbus import AuditService, DomainEvent
path, handler = sys.argv[1], sys.argv[2] == "handler"

def leave(signum, frame):
    print("leaving", flush=True)
    sys.exit(0)

# "default" is the default action even when the parent ignores a signal (nohup ignores SIGHUP).
for signum in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, leave if handler else signal.SIG_DFL)
svc = AuditService(path, busy_timeout=0.05)
for i in range(50):
    svc.record_event(DomainEvent(event_type="step_completed", plan_id=f"p{i}"))
try:
    print("handed", flush=True)
    # Short sleeps, not signal.pause(): a signal that lands between the check
    # for pending signals and the pause() call would leave it waiting forever.
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    print("leaving", flush=True)
    raise
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.parametrize("handler", [True, False], ids=["handler", "default"])
def test_a_service_stopped_by_a_signal_writes_what_was_handed_over_only_through_a_normal_exit(
    tmp_path: Path, sig: signal.Signals, handler: bool
) -> None:
    path = tmp_path / "a.db"
    AuditService(path).close()
    # Ctrl-C's KeyboardInterrupt is Python's own exit; so is SystemExit from a
    # handler. Either runs the at-exit close, which waits for the lock.
    exits = handler or sig == signal.SIGINT
    with contextlib.ExitStack() as cleanup:
        with write_locked(path):
            child = cleanup.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", _STOPPED_BY_SIGNAL, str(path), "handler" if handler else "default"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            # A child that never answers is killed: the readline() below ends and the test fails, not hangs.
            watchdog = threading.Timer(120, child.kill)
            watchdog.start()
            cleanup.callback(watchdog.cancel)
            cleanup.callback(child.kill)
            assert child.stdout is not None
            assert child.stdout.readline() == "handed\n"
            child.send_signal(sig)
            if exits:
                assert child.stdout.readline() == "leaving\n"
            else:
                child.wait(timeout=60)
        # The lock is released: a process still alive writes its queue now.
        rc = child.wait(timeout=60)
        child.communicate()
    rows = raw_rows(path, "event_type = 'step_completed'")
    if exits:
        assert rc == (-signal.SIGINT if sig == signal.SIGINT else 0), rc
        assert [r["plan_id"] for r in rows] == [f"p{i}" for i in range(50)]
        assert [json.loads(str(r["details"]))["reason"] for r in raw_rows(path, "event_type = 'audit_stopped'")] == [
            "close()",
            "interpreter exit",
        ]
    else:
        # The default action of SIGTERM and SIGHUP ends the process at once, as
        # kill -9 does: rows handed over and not yet committed are not written.
        assert rc == -sig, rc
        assert rows == []


# Acknowledges rows, then, at each line read, one more record(): its row id
# or the error; at end of input, closes.
_SHM_HOLDER = """
import sys
import auditbus
from auditbus import AuditService
svc = AuditService(sys.argv[1])
for i in range(20):
    print("R", svc.record("auth_success", plan_id=f"a{i}").id, flush=True)
for line in sys.stdin:
    try:
        print("R", svc.record("auth_success", plan_id=line.strip()).id, flush=True)
    except auditbus.AuditError as exc:
        print("E", exc, flush=True)
try:
    svc.close()
except auditbus.AuditError as exc:  # the writer stopped: closed all the same
    print("E", exc, flush=True)
print("closed", svc.stats()["lost"], flush=True)
"""


@pytest.mark.parametrize("suffix", ["-shm", "-wal"])
def test_a_shm_or_wal_file_removed_under_a_service_stops_its_writer_before_it_damages_another_processs_rows(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / "a.db"
    with subprocess.Popen(
        [sys.executable, "-c", _SHM_HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None
        assert holder.stdout is not None
        assert holder.stderr is not None
        acked = [(int(holder.stdout.readline().split()[1]), f"a{i}") for i in range(20)]
        if suffix == "-wal":
            # Every row in the database file: another process can open the trail without them.
            pragma(path, "PRAGMA wal_checkpoint(PASSIVE)")
        (tmp_path / f"a.db{suffix}").unlink()
        # A process opening the trail now makes a new file: the two no longer see
        # each other's locks (-shm) or rows (-wal), and two writers damage it.
        other = AuditService(path)
        acked += [(other.record("auth_success", plan_id=f"b{i}").id, f"b{i}") for i in range(20)]
        holder.stdin.write("late\n")
        holder.stdin.flush()
        answer = holder.stdout.readline()
        acked += [(other.record("auth_success", plan_id=f"c{i}").id, f"c{i}") for i in range(20)]
        other.close()
        holder.stdin.close()
        rest = holder.stdout.read()
        assert holder.wait(timeout=60) == 0, holder.stderr.read()
    # Before, the first service went on writing through the removed file, or
    # checkpointed through it at close: its pages went over the other's rows,
    # and the trail was damaged.
    assert answer.startswith("E "), answer
    assert f"a.db{suffix}" in answer, answer
    assert "removed or replaced" in answer, answer
    # close() says the writer stopped, and how many rows (the late one) were not written.
    closing, closed = rest.splitlines()
    assert closing.startswith("E the audit writer for"), rest
    assert "1 records were not written" in closing, rest
    assert closed == "closed 1", rest
    rows = assert_intact(path)
    by_id = {r["id"]: r["plan_id"] for r in rows}
    assert [by_id.get(row_id) for row_id, _ in acked] == [plan for _, plan in acked]


# The writer thread itself fails (a panic, here from a handler of the "auditbus"
# logger raising pyo3's PanicException on the thread) while rows wait behind it.
_WRITER_CRASH = """
import json, logging, sys, threading
from auditbus import AuditError, AuditService, DomainEvent

svc = AuditService(sys.argv[1])
# pyo3's own type, made as the extension loads: raised back into the core, it resumes as a panic.
panic = next(c for c in BaseException.__subclasses__() if c.__name__ == "PanicException")
entered, release, critical = threading.Event(), threading.Event(), []

class Crash(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.CRITICAL:
            critical.append(record.getMessage())
        elif "already stored for a different event" in record.getMessage():
            entered.set()
            release.wait()
            raise panic("injected")

logging.getLogger("auditbus").addHandler(Crash())
event = DomainEvent(event_type="config_changed", details={"n": 0})
svc.record_event(event)
svc.record_event(event.model_copy(update={"details": {"n": 1}}))  # same id, other content: a warning
svc.flush()
entered.wait()
# The writer is inside the handler: these wait in the queue.
for n in range(5):
    svc.record_event(DomainEvent(event_type="config_changed", details={"n": n}))
outcome = {}
def durable():
    try:
        svc.record("config_changed", details={"durable": True})
        outcome["record"] = "returned"
    except AuditError as exc:
        outcome["record"] = str(exc)
caller = threading.Thread(target=durable)
caller.start()
while svc.stats()["queue_depth"] < 6:  # the 5 and the durable one, in the queue
    threading.Event().wait(0.01)
release.set()
caller.join()
outcome["stats"] = {k: svc.stats()[k] for k in ("queued", "written", "duplicates", "lost", "stopped")}
for call in (svc.flush, svc.close):
    try:
        call()
        outcome[call.__name__] = "returned"
    except AuditError as exc:
        outcome[call.__name__] = str(exc)
outcome["critical"] = critical
print(json.dumps(outcome))
"""


def test_a_crash_of_the_writer_thread_counts_the_rows_it_left_as_lost_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    done = run_script(_WRITER_CRASH, path)
    assert done.returncode == 0, done.stderr
    assert "PanicException: injected" in done.stderr  # the fault really happened
    outcome = json.loads(done.stdout)
    stats = outcome["stats"]
    # Before, lost stayed 0 and queued != written + duplicates + lost: the 5 rows
    # queued and the durable one went with the thread, counted nowhere.
    assert stats == {"queued": 9, "written": 3, "duplicates": 0, "lost": 6, "stopped": True}, stats
    for call in ("record", "flush", "close"):
        assert "has stopped; 6 records were not written" in outcome[call], outcome
        assert "internal error" in outcome[call], outcome
    assert len(outcome["critical"]) == 1, outcome
    assert "6 records were NOT written" in outcome["critical"][0], outcome
    rows = raw_rows(path)
    assert [json.loads(r["details"]) for r in rows if r["event_type"] == "config_changed"] == [{"n": 0}, {"n": 1}]
