"""Runs every benchmark side by side and prints a Markdown table for BENCHMARKS.md.

python benchmarks/run.py            # all groups
python benchmarks/run.py event bus  # some groups
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import measure, table

GROUPS = ["event", "bus", "redact", "audit", "wiring"]


def main(argv: list[str]) -> int:
    wanted = argv or GROUPS
    unknown = [g for g in wanted if g not in GROUPS]
    if unknown:
        print(f"unknown group(s) {unknown}; accepted: {GROUPS}", file=sys.stderr)
        return 2
    results = []
    for group in wanted:
        path = Path(__file__).parent / f"bench_{group}.py"
        if not path.exists():
            continue
        module = importlib.import_module(f"bench_{group}")
        for case in module.cases():
            results.append(measure(case))
            print(f"  measured: {case.operation}", file=sys.stderr, flush=True)
    print(f"Python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
