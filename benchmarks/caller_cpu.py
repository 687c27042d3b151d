"""Where the emitting thread's time goes while the writer commits beside it.

    python benchmarks/caller_cpu.py [EVENTS]

Hands bursts of EVENTS (default 32,000: many of the writer's commits long,
since it starts one once 512 events are queued) to one service, alternately with
the writer free and with it held off by another process's open write
transaction (it then only waits). Prints, per event, the emitting thread's
wall-clock time and its CPU time (`time.thread_time_ns`), and the commits
made during each burst. CPU time that stays put while wall-clock time grows
is time the thread spent descheduled, not work auditbus added to it.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import auditbus
from bench_audit import details_1k, plan_events

ROUNDS = 4

# Holds a write transaction open on argv[1] until its stdin closes.
_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
sys.stdin.read()
"""


def _burst(service: auditbus.AuditService, events: list[auditbus.DomainEvent]) -> tuple[float, float, int]:
    """Wall-clock and CPU nanoseconds per event, and the commits made meanwhile."""
    batches = service.stats()["batches"]
    gc.disable()
    cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
    for event in events:
        service.record_event(event)
    wall, cpu = time.perf_counter_ns() - wall, time.thread_time_ns() - cpu
    gc.enable()
    return wall / len(events), cpu / len(events), service.stats()["batches"] - batches


def main(count: int) -> None:
    payload = details_1k(7)
    path = Path(tempfile.mkdtemp()) / "audit.db"
    next_id = 0

    def fresh() -> list[auditbus.DomainEvent]:
        nonlocal next_id
        next_id += count
        return plan_events(range(next_id - count, next_id), payload)

    free: list[tuple[float, float, int]] = []
    held: list[tuple[float, float, int]] = []
    with auditbus.AuditService(path, queue_size=1 << 20, put_timeout=None) as service:
        service.record_event(fresh()[0])
        service.flush()
        for _ in range(ROUNDS):
            free.append(_burst(service, fresh()))
            service.flush()
            holder = subprocess.Popen(
                [sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            assert holder.stdin is not None
            assert holder.stdout is not None
            if holder.stdout.readline() != "holding\n":
                raise RuntimeError("the process holding the write lock did not start")
            try:
                held.append(_burst(service, fresh()))
            finally:
                holder.stdin.close()
                holder.wait()
            service.flush()
    for name, runs in (("writer free", free), ("writer held off", held)):
        wall = statistics.median(run[0] for run in runs)
        cpu = statistics.median(run[1] for run in runs)
        commits = ", ".join(str(run[2]) for run in runs)
        print(f"{name}: {wall / 1000:.2f} µs wall, {cpu / 1000:.2f} µs CPU per event (commits per burst: {commits})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 32_000)
