"""AuditService: auditbus against the legacy pure-Python service, same rows, same durability.

Rows carry ~1 KB of details with planted secrets; both sides redact them
(auditbus on the caller's thread, the legacy path with `redact_dict` as its
subscriber did). Both services use their default durability: auditbus WAL +
synchronous=FULL, the legacy default journal (DELETE, synchronous=FULL).
"""

from __future__ import annotations

import atexit
import json
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import auditbus
from audit_references import bare_fsync, query_case, raw_insert
from baseline import legacy_module
from harness import Case, one_each, scratch_folder


def details_1k(i: int) -> dict[str, Any]:
    """About 1 KB of JSON, with secrets by key name, nested and in a list."""
    return {
        "plan": f"plan-{i}",
        "password": "hunter2-correct-horse",
        "api_key": "sk-live-0123456789abcdef0123456789abcdef",
        "config": {"database_url": "postgres://app:s3cret@db:5432/main", "token": "ghp_" + "a" * 36, "retries": 3},
        "files": [{"path": f"/srv/app/module_{j}.py", "lines": j * 7} for j in range(8)],
        "summary": "applied changes to the resource graph; " * 8,
        "counts": {"added": i % 97, "removed": i % 13, "changed": i % 31},
    }


def check_durability(ours: auditbus.AuditService, old: Any) -> None:
    """Both sides commit with synchronous=FULL: auditbus in WAL, the legacy in its default DELETE journal."""
    assert ours.durability == "full", ours.durability
    conn = old._conn
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2, "the legacy side is not synchronous=FULL"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete", "the legacy side is not the DELETE journal"


# The writer checkpoints after a commit that leaves the WAL holding this many
# frames or more (src/audit/writer.rs CHECKPOINT_FRAMES, SQLite's own default).
CHECKPOINT_FRAMES = 1000


def wal_frames(db_path: str | Path) -> int:
    """Frames in the database's WAL (`mxFrame` of the wal-index header in the
    `-shm` file: https://www.sqlite.org/walformat.html), as the writer's WAL
    hook last saw them; read between commits, when no writer changes it."""
    header = Path(f"{db_path}-shm").read_bytes()[:96]
    # Two copies of the 48-byte header, in the machine's byte order; mxFrame at offset 16 of each.
    copies = [struct.unpack_from("=I", header, at + 16)[0] for at in (0, 48)] if len(header) == 96 else []
    if len(copies) != 2 or copies[0] != copies[1]:
        raise RuntimeError(f"no settled wal-index header in {db_path}-shm")
    return int(copies[0])


def _spare_hand_over(service: auditbus.AuditService) -> Callable[[], None]:
    """Hands the writer one spare (empty, distinct) event and flushes: answered
    after everything before it, a checkpoint it started included, since the
    writer takes messages in order."""
    spare = one_each(
        [
            auditbus.DomainEvent(event_type=auditbus.EventType.PLAN_APPLIED, plan_id=f"spare-{i}", details={})
            for i in range(256)
        ],
        "spare events",
    )

    def hand_over() -> None:
        service.record_event(spare())
        service.flush()

    return hand_over


def _checkpoint_wait(service: auditbus.AuditService, hand_over: Callable[[], None]) -> None:
    """Returns once no checkpoint is due: while the last commit left the WAL at
    the threshold, the writer checkpoints after answering it, so a spare is
    handed over to be answered after that (its commit starts the WAL afresh)."""
    for _ in range(3):
        if wal_frames(service.db_path) < CHECKPOINT_FRAMES:
            return
        hand_over()
    raise RuntimeError(f"the WAL of {service.db_path} stays at the checkpoint threshold: checkpoints do not finish")


def checkpointed(service: auditbus.AuditService) -> Callable[[], None]:
    """Inside a timed call, after `flush()`: returns once the checkpoint the
    writer runs after its last commit, when one is due, is done; the cost of
    writing the rows into the database file, which a sustained rate pays
    (the legacy's journal writes them there inside each commit). No spare
    is handed over when no checkpoint is due."""
    hand_over = _spare_hand_over(service)
    return lambda: _checkpoint_wait(service, hand_over)


def writer_settle(service: auditbus.AuditService) -> Callable[[], None]:
    """Untimed, after an auditbus sample: returns once the writer thread is idle.

    The writer checkpoints the WAL after it answers a commit, so a `flush()`
    can return while that checkpoint still runs and overlaps the next
    implementation's sample. One spare event handed over and flushed is
    answered only after it. The spare's own commit can bring the WAL to the
    checkpoint threshold, so the next checkpoint starts right after that
    answer: spares go on until a commit leaves the WAL below it.
    """
    hand_over = _spare_hand_over(service)

    def settle() -> None:
        hand_over()
        _checkpoint_wait(service, hand_over)

    return settle


def _threads(n: int, per_thread: int, call: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        def work() -> None:
            for _ in range(per_thread):
                call()

        threads = [threading.Thread(target=work) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return run


def plan_events(ids: range, payload: dict[str, Any]) -> list[auditbus.DomainEvent]:
    """One distinct `plan_applied` event per id, all carrying `payload`."""
    return [
        auditbus.DomainEvent(
            event_type=auditbus.EventType.PLAN_APPLIED,
            plan_id=f"plan-{i}",
            user_identity=("alice", "bob", "carol")[i % 3],
            details=payload,
        )
        for i in ids
    ]


def cases() -> list[Case]:
    legacy = legacy_module()
    folder = scratch_folder("bench-audit-")
    ours = auditbus.AuditService(folder / "auditbus.db", queue_size=1 << 20, put_timeout=None)
    atexit.register(ours.close)
    old = legacy.AuditService(folder / "legacy.db")
    check_durability(ours, old)
    payload = details_1k(7)
    # The writer starts a burst's commit once 512 events are queued (see
    # src/audit/writer.rs COMMIT_ROWS) and commits what queued meanwhile
    # right after: a sample of 32,000 events spans many of its commits, made
    # beside the emitting thread, as for a service that keeps emitting.
    caller_number, caller_rounds = 32_000, 5
    legacy_caller_number = 4000
    # Distinct events (an event sent twice is a duplicate the writer skips, not
    # a row) carrying the same details, as every legacy call below records
    # `payload`: one for each call of the warm-up and the timed rounds.
    next_event = one_each(plan_events(range((1 + caller_rounds) * caller_number), payload), "events")

    def emit() -> None:
        ours.record_event(next_event())

    def legacy_record() -> None:
        old.record("plan_applied", plan_id="plan-7", user_identity="alice", details=legacy.redact_dict(payload))

    # The durable rows go into files of their own, both started empty, as the
    # raw one-row reference's do. In the file the caller-side case filled
    # (192,000 rows, against the legacy's 36,000), each WAL checkpoint copies
    # pages spread over much larger indexes: the ratio would measure the two
    # files, not the two services.
    durable = auditbus.AuditService(folder / "durable.db", queue_size=1 << 20, put_timeout=None)
    atexit.register(durable.close)
    old_durable = legacy.AuditService(folder / "legacy-durable.db")
    check_durability(durable, old_durable)

    def ours_record() -> None:
        durable.record("plan_applied", plan_id="plan-7", user_identity="alice", details=payload)

    def legacy_durable_record() -> None:
        old_durable.record("plan_applied", plan_id="plan-7", user_identity="alice", details=legacy.redact_dict(payload))

    burst, sustained_rounds = 2000, 5
    # Two bursts a sample for auditbus and the raw reference: a burst's rows
    # fill about 800 WAL frames, so each sample passes the checkpoint
    # threshold (1,000) once and pays one checkpoint, as a long run does.
    bursts_per_sample = 2
    # The sustained rows go into a file of their own, as the raw reference's
    # do: both files start empty and take the same rows (plan ids, users,
    # details) in the same order. In the file the caller-side case filled,
    # 192,000 rows with other plan ids, a burst's plan ids land on most
    # pages of that index, which the raw insert into its small file never
    # pays: the ratio would measure the two files, not the two writers.
    steady = auditbus.AuditService(folder / "sustained.db", queue_size=1 << 20, put_timeout=None)
    atexit.register(steady.close)
    check_durability(steady, old)
    # Fresh events for every burst (an event sent twice is a duplicate the
    # writer skips, not a row), each burst the raw reference's rows.
    bursts = iter([plan_events(range(burst), payload) for _ in range((1 + sustained_rounds) * bursts_per_sample)])
    steady_checkpointed = checkpointed(steady)

    def sustained() -> None:
        for event in next(bursts):
            steady.record_event(event)
        steady.flush()
        steady_checkpointed()

    def legacy_sustained() -> None:
        for _ in range(burst):
            legacy_record()

    # The details text auditbus stores for these rows, byte for byte (compact
    # JSON: Python's default separators would make the raw rows 6% larger).
    redacted = ours.record("plan_applied", details=payload).stored_details
    assert redacted is not None
    raw = raw_insert(
        folder / "raw.db",
        [("plan_applied", f"plan-{i}", ("alice", "bob", "carol")[i % 3], redacted) for i in range(burst)],
    )
    # SQLite's own floor for one durable row: a one-row transaction into the same schema.
    raw_one = raw_insert(folder / "raw-one.db", [("plan_applied", "plan-7", "alice", redacted)])
    sustained_impls: dict[str, Callable[[], object]] = {
        "auditbus record_event()+flush()": sustained,
        "legacy record()": legacy_sustained,
    }
    raw_name = f"raw rusqlite insert, {burst} rows per transaction"
    sustained_impls[raw_name] = raw
    # The checkpoints each side makes due run in its own timed calls (the
    # writer's and the raw reference's alike); what the writer still has to
    # do after an auditbus sample runs untimed, never in another's sample.
    settle: dict[str, Callable[[], object]] = {
        "auditbus record_event()+flush()": writer_settle(steady),
        "auditbus record()": writer_settle(durable),
    }

    durable_impls: dict[str, Callable[[], object]] = {
        "auditbus record()": ours_record,
        "legacy record()": legacy_durable_record,
        "bare write+fsync of 1 KB": bare_fsync(folder / "bare.log", json.dumps(payload).encode()),
    }
    durable_impls["raw rusqlite insert, 1 row per transaction"] = raw_one

    return [
        Case(
            "record_event() caller-side time (1 KB details, redacted)",
            "auditbus record_event()",
            {"auditbus record_event()": emit, "legacy record()": legacy_record},
            targets={"legacy record()": 300},
            number=legacy_caller_number,
            numbers={"auditbus record_event()": caller_number},
            rounds=caller_rounds,
            # The rows still queued when a sample ends are committed (and
            # checkpointed) before the legacy's sample starts, so the writer
            # never shares the CPU or the disk with it.
            settle={"auditbus record_event()": writer_settle(ours)},
        ),
        Case(
            f"{burst} events emitted then flushed (per row)",
            "auditbus record_event()+flush()",
            sustained_impls,
            ops_per_call=burst,
            targets={"legacy record()": 30, raw_name: 0.7},
            number=1,
            numbers={"auditbus record_event()+flush()": bursts_per_sample, raw_name: bursts_per_sample},
            rounds=sustained_rounds,
            settle=settle,
        ),
        Case(
            "record() from one thread, durable on return",
            "auditbus record()",
            durable_impls,
            targets={"legacy record()": 4, "bare write+fsync of 1 KB": 0.7},
            rounds=5,
            settle=settle,
        ),
        Case(
            "record() from 8 threads, durable on return (per row)",
            "auditbus record()",
            {
                "auditbus record()": _threads(8, 25, ours_record),
                "legacy record()": _threads(8, 25, legacy_durable_record),
            },
            ops_per_call=200,
            targets={"legacy record()": 8},
            number=1,
            rounds=3,
            settle={"auditbus record()": writer_settle(durable)},
        ),
        query_case(legacy, details_1k),
    ]
