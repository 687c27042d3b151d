"""Side-by-side timing: every implementation of an operation in one run, medians and ratios.

Each `bench_*.py` module exposes `cases() -> list[Case]`; `run.py` times them
all, interleaving implementations round by round so that a noisy machine
slows every side alike (after one untimed warm-up round each), and prints
one Markdown table.
"""

from __future__ import annotations

import atexit
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Case:
    """One operation, timed for each implementation; `subject` is the one the ratios are about."""

    operation: str
    subject: str
    impls: dict[str, Callable[[], object]]
    # Operations per call of an implementation (a call may do a batch).
    ops_per_call: int = 1
    # Minimum speed-up of `subject` over each named implementation that the project promises.
    targets: dict[str, float] = field(default_factory=dict)
    # Calls per timed sample; None picks enough for about 20 ms.
    number: int | None = None
    # Calls per timed sample of the named implementations, overriding `number`
    # (one that draws from a finite pool of distinct inputs must know its count).
    numbers: dict[str, int] = field(default_factory=dict)
    rounds: int = 9
    # Untimed work run right after each timed sample (and the warm-up) of the
    # named implementation: deferred work, such as a write-behind queue's
    # backlog or a reference's checkpoint, so it never overlaps another's sample.
    settle: dict[str, Callable[[], object]] = field(default_factory=dict)


@dataclass
class Result:
    case: Case
    median: dict[str, float]  # seconds per operation


def _calibrate(fn: Callable[[], object], budget: float = 0.02) -> int:
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= budget or number >= 1 << 20:
            return number
        number *= 2 if elapsed == 0 else max(2, min(10, int(budget / elapsed) + 1))


def measure(case: Case) -> Result:
    numbers = {name: case.numbers.get(name) or case.number or _calibrate(fn) for name, fn in case.impls.items()}
    # One untimed round first: the first calls of a process pay for page
    # faults, allocator growth and cold caches that no later call sees.
    for name, fn in case.impls.items():
        for _ in range(numbers[name]):
            fn()
        if name in case.settle:
            case.settle[name]()
    samples: dict[str, list[float]] = {name: [] for name in case.impls}
    gc_was_enabled = gc.isenabled()
    try:
        for _ in range(case.rounds):
            for name, fn in case.impls.items():
                number = numbers[name]
                gc.collect()
                gc.disable()
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                elapsed = time.perf_counter() - start
                if gc_was_enabled:
                    gc.enable()
                samples[name].append(elapsed / (number * case.ops_per_call))
                if name in case.settle:
                    case.settle[name]()
    finally:
        if gc_was_enabled:
            gc.enable()
    return Result(case, {name: statistics.median(values) for name, values in samples.items()})


def _fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def table(results: list[Result]) -> str:
    lines = [
        "| operation | implementation | median per op | subject's speed-up | promised |",
        "|---|---|---:|---:|---:|",
    ]
    for result in results:
        case = result.case
        subject_time = result.median[case.subject]
        for name, seconds in result.median.items():
            if name == case.subject:
                ratio, target = "—", ""
            else:
                # Two decimals below 10x: a 0.66 printed as "0.7x" beside "❌" reads as a wrong verdict.
                speedup = seconds / subject_time
                ratio = f"{speedup:.2f}x" if speedup < 10 else f"{speedup:.1f}x"
                promised = case.targets.get(name)
                # Three digits: a parity promise of 1/1.2 prints as 0.833, not 0.83 beside a 0.83x that misses it.
                target = "" if promised is None else f">= {promised:.3g}x " + ("✅" if speedup >= promised else "❌")
            lines.append(f"| {case.operation} | {name} | {_fmt(seconds)} | {ratio} | {target} |")
    return "\n".join(lines)


def one_each(pool: list[T], what: str) -> Callable[[], T]:
    """A function returning the pool's items in turn, each once (the list is consumed); raises when they are used up.

    For write-behind rows: an event handed over twice is a duplicate the
    writer skips, not a row, so a benchmark cycling a pool would time cheaper
    work on its second pass without saying so.
    """
    # Taken from the end of the reversed list, so that each item is let go once
    # used: a pool of hundreds of thousands of events is not all kept alive.
    size = len(pool)
    pool.reverse()

    def take() -> T:
        if not pool:
            raise RuntimeError(f"the {size} distinct {what} are used up: enlarge the pool or lower number/rounds")
        return pool.pop()

    return take


def scratch_folder(prefix: str) -> Path:
    """A temporary folder for a group's databases, removed at exit (a run leaves gigabytes otherwise).

    Registered before the services opened in it, whose `close()` the caller
    registers with `atexit` too: exit handlers run last-registered first, so
    the services are closed before their files go.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
