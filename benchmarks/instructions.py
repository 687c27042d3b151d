"""One hot operation repeated N times, for counting instructions under callgrind.

    PYTHONHASHSEED=0 valgrind --tool=callgrind python benchmarks/instructions.py MODE 500
    PYTHONHASHSEED=0 valgrind --tool=callgrind python benchmarks/instructions.py MODE 1500

The difference of the two totals over 1000 is the cost per call of MODE plus
that of building its input; `none` counts the inputs alone. Instruction
counts do not drift with the machine's load, so two builds of the same code
(the default and `--features abi3`) compare exactly once the hash seed is
fixed: a fresh seed per process moves a figure by several percent.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import auditbus
from bench_audit import details_1k

MODES = ("none", "redact", "dump", "emit", "record_event")


def main(mode: str, n: int) -> None:
    details = [details_1k(i) for i in range(n)]
    events = [
        auditbus.DomainEvent(
            event_type=auditbus.EventType.PLAN_APPLIED, plan_id=f"plan-{i}", user_identity="alice", details=d
        )
        for i, d in enumerate(details)
    ]
    if mode == "redact":
        for d in details:
            auditbus.redact_dict(d)
    elif mode == "dump":
        for event in events:
            event.model_dump()
    elif mode == "emit":  # ten emits per input: the figure per call is the difference over 10,000
        bus = auditbus.ReactiveEventBus()
        bus.subscribe(auditbus.EventType.PLAN_APPLIED, lambda _event: None)
        for event in events:
            for _ in range(10):
                bus.emit(event)
    elif mode == "record_event":
        with auditbus.AuditService(Path(tempfile.mkdtemp()) / "audit.db", queue_size=1 << 20) as service:
            for event in events:
                service.record_event(event)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in MODES:
        raise SystemExit(f"usage: instructions.py {{{','.join(MODES)}}} N")
    main(sys.argv[1], int(sys.argv[2]))
