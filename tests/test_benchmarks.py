"""The benchmark harness's own pieces (`benchmarks/`) measure what their rows say.

Nothing here is timed: these check the references, the settling between
samples and the verdicts, which a build without the `bench` feature can run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import auditbus
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from audit_references import bare_fsync  # noqa: E402 - after the path above
from bench_audit import (  # noqa: E402
    CHECKPOINT_FRAMES,
    checkpointed,
    details_1k,
    plan_events,
    wal_frames,
    writer_settle,
)
from bench_bus import DUST_RIVEN_PARITY  # noqa: E402
from harness import Case, Result, one_each, table  # noqa: E402


def test_bare_fsync_writes_in_place_without_growing_its_file(tmp_path: Path) -> None:
    # A file grown by each call pays a size and block update in every fsync, which SQLite's reused WAL does not.
    path = tmp_path / "bare.log"
    write = bare_fsync(path, b"x" * 1000)
    size = path.stat().st_size
    for _ in range(20):
        write()
        assert path.stat().st_size == size
    assert path.read_bytes()[: 20 * 1000] == b"x" * 20_000


def test_bare_fsync_wraps_at_the_end_of_its_file(tmp_path: Path) -> None:
    path = tmp_path / "bare.log"
    write = bare_fsync(path, b"ab", size=5)
    for _ in range(3):
        write()
    # Two payloads fit; the third starts again at the beginning.
    assert path.read_bytes() == b"abab\0"


def test_wal_frames_counts_the_frames_of_the_wal_file(tmp_path: Path) -> None:
    service = auditbus.AuditService(tmp_path / "audit.db")
    for i in range(5):
        service.record("plan_applied", plan_id=f"p{i}", details=details_1k(i))
    service.flush()
    frames = wal_frames(service.db_path)
    # A new WAL, never restarted by a checkpoint, holds exactly its frames after a
    # 32-byte header; each frame is a 24-byte header and a page (its size at offset 8).
    wal = Path(f"{service.db_path}-wal").read_bytes()
    service.close()
    page_size = int.from_bytes(wal[8:12], "big")
    assert frames == (len(wal) - 32) // (24 + page_size)
    assert frames > 0


def test_writer_settle_returns_with_no_checkpoint_left_to_run(tmp_path: Path) -> None:
    # The writer checkpoints after answering the commit that reaches the
    # threshold; a settle answered by that commit would leave the checkpoint
    # to run in the next implementation's sample.
    service = auditbus.AuditService(tmp_path / "audit.db")
    settle = writer_settle(service)
    payload = details_1k(7)
    checkpoints, previous = 0, 0
    for _ in range(200):
        service.record("plan_applied", plan_id="p", user_identity="alice", details=payload)
        settle()
        frames = wal_frames(service.db_path)
        assert frames < CHECKPOINT_FRAMES
        checkpoints += frames < previous
        previous = frames
        if checkpoints == 3:
            break
    service.close()
    assert checkpoints == 3  # the threshold was crossed, and settled, more than once


def test_checkpointed_waits_only_for_a_checkpoint_that_is_due(tmp_path: Path) -> None:
    # In a timed call: the writer's checkpoint is part of a sustained rate, and
    # a spare commit when none is due would be a cost auditbus does not have.
    service = auditbus.AuditService(tmp_path / "audit.db")
    wait = checkpointed(service)
    # Whether a checkpoint is still due when the burst is flushed depends on how soon
    # the writer ran the one its commit started: bursts go on until two were due.
    bursts = iter(plan_events(range(k * 500, (k + 1) * 500), details_1k(7)) for k in range(120))
    waited = 0
    for burst in bursts:
        for event in burst:
            service.record_event(event)
        service.flush()
        due = wal_frames(service.db_path) >= CHECKPOINT_FRAMES
        written = service.stats()["written"]
        wait()
        assert wal_frames(service.db_path) < CHECKPOINT_FRAMES
        # A spare row is written only to wait for a checkpoint.
        assert (service.stats()["written"] > written) == due
        waited += due
        if waited == 2:
            break
    service.close()
    assert waited == 2


def verdict(subject: float, peer: float, promised: float) -> str:
    case = Case("emit", "auditbus", {"auditbus": object, "peer": object}, targets={"peer": promised})
    return table([Result(case, {"auditbus": subject, "peer": peer})]).splitlines()[-1]


def test_parity_with_dust_riven_fails_past_1_2_times_its_time() -> None:
    # Issue: auditbus "no slower than 1.2x" dust-riven's Signal.emit.
    assert verdict(1.201e-7, 1.0e-7, DUST_RIVEN_PARITY).endswith("| >= 0.833x ❌ |")
    assert verdict(1.19e-7, 1.0e-7, DUST_RIVEN_PARITY).endswith("| >= 0.833x ✅ |")


def test_the_header_names_the_extension_s_abi() -> None:
    from run import build_kind  # noqa: PLC0415 - run.py is the runner; its helpers are tested here

    assert build_kind("/site/auditbus/_native.abi3.so") == "abi3 (stable ABI)"
    name = "_native.cpython-311-x86_64-linux-gnu.so"
    assert build_kind(f"/site/auditbus/{name}") == f"for this Python only ({name})"


def test_one_each_hands_out_each_item_once_in_order_then_refuses() -> None:
    take = one_each(["a", "b", "c"], "letters")
    assert [take(), take(), take()] == ["a", "b", "c"]
    with pytest.raises(RuntimeError, match="the 3 distinct letters are used up"):
        take()
