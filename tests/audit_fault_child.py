"""A writer process for the fault tests: writes audit rows and prints what was acknowledged.

    python audit_fault_child.py load PATH WORKER BATCHES [--wait-go]
    python audit_fault_child.py full PATH rlimit|ballast:FILE
    python audit_fault_child.py lock PATH
    python audit_fault_child.py open PATH GATE
    python audit_fault_child.py interrupt PATH
    python audit_fault_child.py interrupt-close|interrupt-record|interrupt-purge PATH
    python audit_fault_child.py close-full PATH
    python audit_fault_child.py interrupt-close-full PATH
    python audit_fault_child.py interrupt-close-exit PATH
    python audit_fault_child.py close-twice PATH
    python audit_fault_child.py reenter PATH record|flush|purge|close|record_event
    python audit_fault_child.py purge|verify|legacy PATH
    python audit_fault_child.py io PATH     (run under the I/O error shim, tests/ioerr_shim.c)

Every acknowledgement is printed (and flushed) only after the call that made
it durable returned, one line each, so whatever the parent read before a
`kill -9` was acknowledged:

    F <event_id> <event_id> ...    rows handed to record_event(), then flush() returned
    R <row id> <event_id>          a record() call returned

`purge`, `verify` and `legacy` do one step per line read from stdin, until
an empty line, and answer each with one line:

    P <deleted> <report.ok> <reason>         purge(before=now) returned, then verify()
    V <report.ok> <checked> <reason>         verify() returned
    L <row id>                               the legacy service's record() returned

`io` does one step per stdin line (see `io_steps`) and forwards the
service's log records as `L <LEVEL> <json message>` lines.

Rows carry ~1 KB of details with a planted secret, the shape of the benchmarks.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import resource
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from audit_support import LEGACY
from auditbus import AuditError, AuditService, ClosedError, DomainEvent

PAD = "x" * 900
SECRET = "sk-live-4eC39HqLyjWDarjtT1zdp7dc"


def _details(worker: str, seq: int) -> dict[str, object]:
    return {"worker": worker, "seq": seq, "api_key": SECRET, "note": PAD}


_SAY = threading.Lock()


def say(*words: object) -> None:
    """One whole line per call, even with the writer thread logging at the same time."""
    line = " ".join(map(str, words)) + "\n"
    with _SAY:
        sys.stdout.write(line)
        sys.stdout.flush()


def load(path: str, worker: str, batches: int, wait_go: bool) -> None:
    """Emits batches of 25 events, flushing after each; a durable record() every 4th batch.

    `batches` 0 writes until killed.
    """
    svc = AuditService(path)
    say("ready")
    if wait_go:
        sys.stdin.readline()
    seq = 0
    batch = 0
    while batches == 0 or batch < batches:
        ids = []
        for _ in range(25):
            event = DomainEvent(event_type="step_completed", plan_id=worker, details=_details(worker, seq))
            svc.record_event(event)
            ids.append(event.event_id)
            seq += 1
        svc.flush()
        say("F", *ids)
        if batch % 4 == 3:
            entry = svc.record("config_changed", plan_id=worker, details=_details(worker, seq))
            say("R", entry.id, entry.event_id)
        batch += 1
    svc.close()
    say("done")


def _fill(how: str, path: str) -> object:
    """Makes further growth of the database files fail; returns what `_free` needs."""
    if how == "rlimit":
        # A file size limit is a full disk for this process alone: writes past
        # it fail (EFBIG, SIGXFSZ ignored) while everything below still works.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        before = resource.getrlimit(resource.RLIMIT_FSIZE)
        sizes = [os.path.getsize(path + suffix) for suffix in ("", "-wal") if os.path.exists(path + suffix)]
        resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes), before[1]))
        return before
    # ballast:FILE — fill the (small) filesystem until it reports ENOSPC.
    ballast = how.split(":", 1)[1]
    # Unbuffered: a buffered file would retry its unwritten tail on close and
    # raise ENOSPC from there, outside the handler below.
    with open(ballast, "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return ballast


def _free(how: str, token: object) -> None:
    if how == "rlimit":
        assert isinstance(token, tuple)
        resource.setrlimit(resource.RLIMIT_FSIZE, token)
    else:
        assert isinstance(token, str)
        os.remove(token)


class _Lines(logging.Handler):
    """Forwards the service's log records to the parent, one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        say("L", record.levelname, json.dumps(record.getMessage()))


def full(path: str, how: str) -> None:
    """Writes, fills the disk, keeps writing until the writer reports the failure, frees space, flushes."""
    logging.getLogger("auditbus").addHandler(_Lines())
    svc = AuditService(path)
    seq = 0

    def emit() -> str:
        nonlocal seq
        event = DomainEvent(event_type="step_completed", plan_id="full", details=_details("full", seq))
        svc.record_event(event)
        seq += 1
        return event.event_id

    written = [emit() for _ in range(200)]
    svc.flush()
    say("F", *written)
    token = _fill(how, path)
    say("filled")
    # Keep emitting (bounded) until the writer has hit the full disk; every
    # one of these rows must land once space returns.
    pending = []
    deadline = time.monotonic() + 120
    while svc.stats()["errors"] == 0:
        if time.monotonic() > deadline:
            say("never-failed", json.dumps(svc.stats()))
            sys.exit(3)
        pending.extend(emit() for _ in range(10))
    stats = svc.stats()
    say("failing", json.dumps(stats))
    _free(how, token)
    say("freed")
    svc.flush()
    say("F", *pending)
    entry = svc.record("config_changed", plan_id="full", details=_details("full", seq))
    say("R", entry.id, entry.event_id)
    say("stats", json.dumps(svc.stats()))
    svc.close()
    say("done")


def lock(path: str) -> None:
    """Another process writing: holds the write lock with a row written but not committed."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute(
        "INSERT INTO audit_log (timestamp, event_type, user_identity, details) VALUES (?, ?, ?, ?)",
        ("2026-01-01T00:00:00+00:00", "auth_success", "other-process", "{}"),
    )
    say("locked")
    sys.stdin.readline()
    conn.execute("COMMIT")
    conn.close()
    say("released")


def open_at_gate(path: str, gate: str) -> None:
    """Opens the service once the parent lets go of its lock on `gate`, with the other children at once."""
    with open(gate) as held:
        say("ready")
        fcntl.flock(held, fcntl.LOCK_SH)
    try:
        AuditService(path).close()
    except AuditError as exc:
        say("failed", exc)
    else:
        say("opened")


def interrupt(path: str) -> None:
    """Flushes a row that cannot commit (the parent has another process hold the lock) until SIGINT comes."""
    svc = AuditService(path, busy_timeout=0.05)
    svc.flush()
    say("ready")
    sys.stdin.readline()  # the lock is held now
    event = DomainEvent(event_type="step_completed", plan_id="interrupt")
    svc.record_event(event)
    main_thread = threading.main_thread().ident
    calling = threading.Event()

    def announce() -> None:
        # "flushing" only once the main thread sits on one line past `calling` on
        # consecutive looks, i.e. waits inside flush(): a SIGINT that came earlier
        # would be caught with no flush() interrupted, or end the process.
        calling.wait()
        lines: list[int] = []
        while len(lines) < 5 or len(set(lines[-5:])) != 1:
            frame = sys._current_frames().get(main_thread)
            here = frame is not None and frame.f_code is interrupt.__code__
            lines.append(frame.f_lineno if here and frame is not None else -len(lines))
            time.sleep(0.02)
        say("flushing")

    threading.Thread(target=announce, daemon=True).start()
    try:
        calling.set()
        svc.flush()
    except KeyboardInterrupt:
        say("interrupted")
    else:
        say("returned")
    sys.stdin.readline()  # the lock is gone
    svc.flush()
    say("F", event.event_id)
    svc.close()
    say("done")


def _until(condition: Callable[[], object], what: str) -> None:
    """Waits for `condition` with a deadline; the process fails naming `what` after it."""
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            say("never", what)
            sys.exit(3)
        time.sleep(0.005)


def _stuck(
    path: str, opened: Callable[[AuditService], None] | None = None, **options: object
) -> tuple[AuditService, list[str]]:
    """A service whose writer holds a row it cannot commit (the parent has another process take the lock)."""
    svc = AuditService(path, busy_timeout=0.05, **options)  # type: ignore[arg-type]
    if opened is not None:
        opened(svc)
    svc.flush()
    say("ready")
    sys.stdin.readline()  # the lock is held now
    event = DomainEvent(event_type="step_completed", plan_id="stuck")
    svc.record_event(event)
    # A retry, not just an error: the writer counts its audit_failure row as
    # queued after the error, and a caller waiting for `queued` to grow must
    # not take that row for its own.
    _until(lambda: svc.stats()["retries"] >= 1, "the writer retrying on the lock")
    return svc, [event.event_id]


def _stuck_full(path: str, put_timeout: float | None) -> tuple[AuditService, list[str]]:
    """`_stuck`, with its queue of two full of rows the held lock keeps back."""
    svc, acked = _stuck(path, queue_size=2, put_timeout=put_timeout)
    while svc.stats()["queue_depth"] < 2:
        event = DomainEvent(event_type="step_completed", plan_id="stuck")
        svc.record_event(event)
        acked.append(event.event_id)
    return svc, acked


def _signal_main_when(condition: Callable[[], object], what: str) -> None:
    """SIGINT to the main thread once `condition` holds (the main thread waits inside a call by then)."""
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    def watch() -> None:
        _until(condition, what)
        signal.pthread_kill(main_thread, signal.SIGINT)

    threading.Thread(target=watch, daemon=True).start()


def _finish(svc: AuditService, acked: list[str]) -> None:
    """Once the lock is gone: flush and close, printing what was acknowledged and the final counters."""
    sys.stdin.readline()  # the lock is gone
    svc.flush()
    say("F", *acked)
    svc.close()
    say("stats", json.dumps(svc.stats()))
    say("done")


def _close_saying_how(svc: AuditService) -> None:
    """close(), then "interrupted" if a Ctrl-C ended its wait, else "returned"."""
    try:
        svc.close()
    except KeyboardInterrupt:
        say("interrupted")
    else:
        say("returned")


def interrupt_close(path: str) -> None:
    """Ctrl-C while close() waits for a row another process's lock holds back."""
    svc, acked = _stuck(path)
    _signal_main_when(lambda: svc.stats()["closed"], "close() to start")
    _close_saying_how(svc)
    try:
        svc.record_event(DomainEvent(event_type="step_completed"))
    except ClosedError:
        say("refused")
    _finish(svc, acked)


def interrupt_record(path: str) -> None:
    """Ctrl-C while record() waits (put_timeout=None) for room in a queue the held lock keeps full."""
    svc, acked = _stuck_full(path, put_timeout=None)
    queued = svc.stats()["queued"]
    # record() counts its row as queued before it waits for room.
    _signal_main_when(lambda: svc.stats()["queued"] > queued, "record() to wait for room")
    try:
        svc.record("auth_failure", plan_id="interrupted")
    except KeyboardInterrupt:
        say("interrupted", queued, json.dumps(svc.stats()))
    else:
        say("returned")
    _finish(svc, acked)


def interrupt_purge(path: str) -> None:
    """Ctrl-C while purge() waits behind a row another process's lock holds back."""
    svc, acked = _stuck(path)
    _signal_main_when(lambda: svc.stats()["queue_depth"] >= 1, "purge() to be queued")
    try:
        svc.purge("2000-01-01T00:00:00+00:00")
    except KeyboardInterrupt:
        say("interrupted")
    else:
        say("returned")
    sys.stdin.readline()  # the lock is gone
    svc.flush()
    say("F", *acked)
    say("purged", svc.count(event_type="audit_purged"))
    svc.close()
    say("done")


def close_full(path: str) -> None:
    """stats() and record_event() on other threads while close() waits for room in a full queue."""
    svc, acked = _stuck_full(path, put_timeout=0)
    closer = threading.Thread(target=svc.close)
    closer.start()
    answered = threading.Event()

    def ask() -> None:
        _until(lambda: svc.stats()["closed"], "stats() to show the close")
        answered.set()

    threading.Thread(target=ask, daemon=True).start()
    answered.wait()
    try:
        svc.record_event(DomainEvent(event_type="step_completed"))
    except ClosedError:
        say("refused")
    say("answered")
    sys.stdin.readline()  # the lock is gone
    closer.join()
    say("F", *acked)
    say("stats", json.dumps(svc.stats()))
    say("done")


def _close_interrupted_in_a_full_queue(path: str) -> tuple[AuditService, list[str]]:
    """Ctrl-C while close() waits for room for its last messages in a queue the held lock keeps full."""
    svc, acked = _stuck_full(path, put_timeout=0)
    # The stop row is counted as queued once close() has shut the service; it waits for room then.
    queued = svc.stats()["queued"]
    _signal_main_when(lambda: svc.stats()["queued"] > queued, "close() to wait for room")
    _close_saying_how(svc)
    return svc, acked


def interrupt_close_full(path: str) -> None:
    """An interrupted close() in a full queue; then a record, a flush and a second close()."""
    svc, acked = _close_interrupted_in_a_full_queue(path)
    try:
        svc.record_event(DomainEvent(event_type="step_completed"))
    except ClosedError:
        say("refused")
    # A flush on the closed service with a limit: the stop is still not queued, and the lock holds.
    try:
        svc.flush(timeout=0.2)
    except TimeoutError:
        say("flush timed out")
    _finish(svc, acked)


def interrupt_close_exit(path: str) -> None:
    """An interrupted close() in a full queue, then the interpreter exits without another close()."""
    _, acked = _close_interrupted_in_a_full_queue(path)
    say("F", *acked)  # handed over before the exit: the at-exit hook must write them
    sys.stdin.readline()  # the lock is gone
    say("exiting")


def close_twice(path: str) -> None:
    """A second close() while a first one, on another thread, waits for a row the held lock keeps back."""
    svc, acked = _stuck(path)
    first = threading.Thread(target=svc.close)
    first.start()
    _until(lambda: svc.stats()["closed"], "the first close() to start")
    say("closing")
    svc.close()
    stats = svc.stats()
    # Returned: every row handed over is written (the lock is gone by now).
    say("returned", stats["queued"] == stats["written"] + stats["duplicates"] + stats["lost"])
    first.join()
    sys.stdin.readline()
    say("F", *acked)
    say("stats", json.dumps(svc.stats()))
    say("done")


def reenter(path: str, call: str) -> None:
    """A handler of the "auditbus" logger calls the service back, on the writer thread that logs."""
    outcome: list[str] = []
    opened: list[AuditService] = []
    handed: list[str] = []

    class CallBack(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if outcome or not opened:
                return
            service = opened[0]
            try:
                if call == "record":
                    service.record("auth_failure", details={"log": record.getMessage()})
                elif call == "flush":
                    service.flush()
                elif call == "purge":
                    service.purge("2000-01-01T00:00:00+00:00")
                elif call == "close":
                    service.close()
                else:
                    # More than the queue holds: only the writer thread itself could make room.
                    for _ in range(3):
                        event = DomainEvent(event_type="step_completed", plan_id="handler")
                        service.record_event(event)
                        handed.append(event.event_id)
                outcome.append("returned")
            except Exception as exc:  # the outcome is what the parent checks
                outcome.append(type(exc).__name__)

    # In place before the writer's first failure, which it logs.
    logging.getLogger("auditbus").addHandler(CallBack())
    svc, acked = _stuck(path, opened=opened.append, queue_size=2, put_timeout=None)
    _until(lambda: outcome, "the handler to be called")
    say("outcome", outcome[0])
    _finish(svc, acked + handed)


class _Io:
    """The service of the `io` child and its calls in flight: each flush() or record() runs on a thread of its own."""

    def __init__(self, path: str) -> None:
        self.svc = AuditService(path)
        self.seq = 0
        self.pending: list[str] = []
        self.calls: list[threading.Thread] = []

    def emit(self, n: int) -> None:
        for _ in range(n):
            event = DomainEvent(event_type="step_completed", plan_id="io", details=_details("io", self.seq))
            self.svc.record_event(event)
            self.pending.append(event.event_id)
            self.seq += 1

    def _call(self, run: Callable[[], None]) -> None:
        def call() -> None:
            try:
                run()
            except AuditError as exc:  # printed, so the parent sees the call did not succeed
                say("E", type(exc).__name__, json.dumps(str(exc)))

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        self.calls.append(thread)

    def flush(self) -> None:
        ids, self.pending = self.pending, []

        def run() -> None:
            self.svc.flush()
            say("F", *ids)

        self._call(run)

    def record(self) -> None:
        self.seq += 1
        seq = self.seq

        def run() -> None:
            entry = self.svc.record("config_changed", plan_id="io", details=_details("io", seq))
            say("R", entry.id, entry.event_id)

        self._call(run)

    def waiting(self) -> int:
        return sum(call.is_alive() for call in self.calls)

    def wait(self, counter: str, at_least: int) -> None:
        """Waits for stats()[counter] >= at_least; says the calls still waiting and the counters."""
        _until(lambda: self.svc.stats()[counter] >= at_least, f"{counter} >= {at_least}")
        say("failing" if counter == "retries" else "erring", self.waiting(), json.dumps(self.svc.stats()))

    def closing(self) -> None:
        """close() on a thread; from then on only `retries N`, `stats` and `join` (wait for the close) are read."""

        def close() -> None:
            self.svc.close()
            say("closed", json.dumps(self.svc.stats()))

        closer = threading.Thread(target=close)
        closer.start()
        self.calls.append(closer)
        say("called")
        for line in sys.stdin:
            step, *args = line.split()
            if step == "stats":
                say("stats", json.dumps(self.svc.stats()))
            elif step == "retries":
                self.wait(step, int(args[0]))
            elif step == "join":
                closer.join()
                break
        say("done")

    def ask(self, what: str) -> None:
        """purge() (its count, or the error it raised) or stats()."""
        if what == "stats":
            say("stats", json.dumps(self.svc.stats()))
            return
        try:
            say("purged", self.svc.purge(datetime.now(timezone.utc)))
        except AuditError as exc:
            say("E", type(exc).__name__, json.dumps(str(exc)))

    def read(self, what: str) -> None:
        """One read; says what it returned, or the error it raised."""
        try:
            if what == "query":
                result: object = len(self.svc.query(plan_id="io", limit=None))
            elif what == "count":
                result = self.svc.count()
            else:
                report = self.svc.verify()
                result = f"{report.ok}:{report.checked}"
        except AuditError as exc:
            say("read", what, "AuditError", json.dumps(str(exc)))
        else:
            say("read", what, "ok", result)


def io_steps(path: str) -> None:
    """Steps read from stdin, one a line, each answered once done:

    emit N           N rows to record_event()                   -> "emitted"
    flush            flush() on a thread of its own             -> "called"; later "F <ids>" once it returned
    record           record() on a thread of its own            -> "called"; later "R <id> <event_id>"
    retries N        waits for stats()["retries"] >= N          -> "failing <calls still waiting> <stats>"
    errors N         waits for stats()["errors"] >= N           -> "erring <calls still waiting> <stats>"
    join             waits for every call to return             -> "joined"
    query|count|verify                                          -> "read WHAT ok RESULT" or "read WHAT AuditError MSG"
    purge                                                       -> "purged N" or "E <exception> <json message>"
    stats                                                       -> "stats <stats>"
    close            close(), then the counters                 -> "stats <stats>", "done"
    closing          close() on a thread of its own             -> "called"; later "closed <stats>", "done"
    exit             the interpreter exits without close()      -> "exiting"

    A flush() or record() that raises prints "E <exception> <json message>".
    """
    logging.getLogger("auditbus").addHandler(_Lines())
    io = _Io(path)
    say("ready")
    for line in sys.stdin:
        step, *args = line.split()
        if step == "emit":
            io.emit(int(args[0]))
            say("emitted")
        elif step in ("flush", "record"):
            getattr(io, step)()
            say("called")
        elif step in ("retries", "errors"):
            io.wait(step, int(args[0]))
        elif step == "join":
            for call in io.calls:
                call.join(timeout=120)
            _until(lambda: io.waiting() == 0, "every call to return")
            say("joined")
        elif step in ("query", "count", "verify"):
            io.read(step)
        elif step in ("purge", "stats"):
            io.ask(step)
        elif step == "close":
            io.svc.close()
            say("stats", json.dumps(io.svc.stats()))
            say("done")
            return
        elif step == "closing":
            io.closing()
            return
        elif step == "exit":
            say("exiting")
            return


def steps(path: str, step: Callable[[], None], close: Callable[[], None]) -> None:
    """Runs `step` once per non-empty stdin line; an empty line (or end of input) closes."""
    say("ready")
    while sys.stdin.readline().strip():
        step()
    close()
    say("done")


def purger(path: str) -> None:
    svc = AuditService(path)

    def step() -> None:
        deleted = svc.purge(datetime.now(timezone.utc))
        report = svc.verify()
        say("P", deleted, report.ok, json.dumps(report.reason))

    steps(path, step, svc.close)


def verifier(path: str) -> None:
    svc = AuditService(path)

    def step() -> None:
        report = svc.verify()
        say("V", report.ok, report.checked, json.dumps(report.reason))

    steps(path, step, svc.close)


def legacy(path: str) -> None:
    """The legacy pure-Python service appending to the shared file."""
    sys.path.insert(0, str(LEGACY))
    from cleveragents_legacy.audit_service import AuditService as LegacyService  # noqa: PLC0415

    svc = LegacyService(path)

    def step() -> None:
        say("L", svc.record("auth_success", user_identity="legacy", details={"from": "legacy"}).id)

    steps(path, step, svc.close)


def main(argv: list[str]) -> None:
    # The Ctrl-C tests signal this process: started with SIGINT ignored (a job
    # that a shell ran in the background), Python would never raise KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    command, path = argv[0], argv[1]
    if command == "load":
        load(path, argv[2], int(argv[3]), "--wait-go" in argv)
    elif command == "full":
        full(path, argv[2])
    elif command == "lock":
        lock(path)
    elif command == "open":
        open_at_gate(path, argv[2])
    elif command == "interrupt":
        interrupt(path)
    elif command in (
        "interrupt-close",
        "interrupt-record",
        "interrupt-purge",
        "close-full",
        "close-twice",
        "interrupt-close-full",
        "interrupt-close-exit",
    ):
        {
            "interrupt-close": interrupt_close,
            "interrupt-close-full": interrupt_close_full,
            "interrupt-close-exit": interrupt_close_exit,
            "interrupt-record": interrupt_record,
            "interrupt-purge": interrupt_purge,
            "close-full": close_full,
            "close-twice": close_twice,
        }[command](path)
    elif command == "reenter":
        reenter(path, argv[2])
    elif command == "io":
        io_steps(path)
    elif command in ("purge", "verify", "legacy"):
        {"purge": purger, "verify": verifier, "legacy": legacy}[command](path)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main(sys.argv[1:])
