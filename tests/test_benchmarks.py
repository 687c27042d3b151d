"""The benchmark harness's own pieces (`benchmarks/`) measure what their rows say.

Nothing here is timed: these check the references, the settling between
samples and the verdicts, which a build without the `bench` feature can run.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from audit_references import bare_fsync  # noqa: E402 - after the path above


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
