"""Runs every benchmark side by side and prints a Markdown table for BENCHMARKS.md.

python benchmarks/run.py            # all groups
python benchmarks/run.py event bus  # some groups
python benchmarks/run.py --freeze audit wiring

`--freeze` moves each group's inputs, built before its timing, out of the
garbage collector (`gc.freeze()`), so the `gc.collect()` that starts every
sample does not walk them: the events built ahead for the timed rounds are
otherwise walked by it, which a service's events, emitted as soon as they
are made, never are. The published table is a run without it.

Refuses to run, rather than print a table with rows missing or figures that
mean nothing, when auditbus is not a release build with the `bench` feature
(`maturin develop --release --features bench`) or a peer is not installed.
The header names the build (its profile, its ABI and the commit it was run
from), the versions of every peer and baseline library, and the machine's
load when the run started.
"""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import os
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import measure, table

GROUPS = ["event", "bus", "redact", "audit", "wiring"]
# Distributions the baseline and the peers come from (the `bench` extra of pyproject.toml).
PEERS = ["pydantic", "reactivex", "sentry-sdk", "dust-riven"]


def _preflight() -> list[str]:
    """What makes the run unfit to publish; empty when it can run."""
    problems = []
    for peer in PEERS:
        try:
            importlib.metadata.version(peer)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{peer} is not installed: pip install {peer}")
    import auditbus  # noqa: PLC0415 - after the checks that need no build

    raw = getattr(auditbus._native, "_BenchRawInsert", None)
    if raw is None:
        problems.append("auditbus is not a `--features bench` build: maturin develop --release --features bench")
    elif raw.profile != "release":
        problems.append(f"auditbus is a {raw.profile} build: maturin develop --release --features bench")
    return problems


def build_kind(extension: str) -> str:
    """Which ABI the extension file was built for, from its name: abi3 reaches
    Python objects through calls, and is slower (BENCHMARKS.md, "abi3")."""
    name = Path(extension).name
    return "abi3 (stable ABI)" if ".abi3." in name else f"for this Python only ({name})"


def _source() -> str:
    """The checkout's commit, with `+changes` when files differ from it."""
    here = str(Path(__file__).parent)
    try:
        commit = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "source: not a git checkout"
    return f"source: commit {commit}" + (" +changes" if changed else "")


def _header() -> str:
    import auditbus  # noqa: PLC0415

    versions = ", ".join(f"{peer} {importlib.metadata.version(peer)}" for peer in ["auditbus", *PEERS])
    raw = auditbus._native._BenchRawInsert
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"Python {platform.python_version()} on {platform.machine()}, {platform.system()}, "
        f"{os.cpu_count()} CPUs, load average {load} at the start\n"
        f"auditbus {raw.profile} build with `bench`, {build_kind(auditbus._native.__file__)}, {_source()}; "
        f"bundled SQLite {raw.sqlite_version}; the legacy side's sqlite3 module uses SQLite {sqlite3.sqlite_version}\n"
        f"{versions}"
    )


def main(argv: list[str]) -> int:
    freeze = "--freeze" in argv
    wanted = [a for a in argv if a != "--freeze"] or GROUPS
    unknown = [g for g in wanted if g not in GROUPS]
    if unknown:
        print(f"unknown group(s) {unknown}; accepted: {GROUPS}", file=sys.stderr)
        return 2
    problems = _preflight()
    if problems:
        print("cannot run the benchmarks:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    header = _header()
    results = []
    for group in wanted:
        module = importlib.import_module(f"bench_{group}")
        cases = module.cases()
        if freeze:
            gc.freeze()
        for case in cases:
            results.append(measure(case))
            print(f"  measured: {case.operation}", file=sys.stderr, flush=True)
    print(header + ("\ninputs frozen out of the garbage collector (--freeze)" if freeze else ""))
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
