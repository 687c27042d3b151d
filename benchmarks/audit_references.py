"""The limits and the scale case the audit benchmarks are measured against, in the same run.

- `raw_insert`: the same rows inserted straight into the same schema (same
  indexes, same `synchronous`, the same checkpoint policy as the writer:
  after the commit, not inside it, in the same timed call as the writer's
  are) with rusqlite, batched (or one row per
  transaction: SQLite's own floor for a durable row), no queue, no chain:
  the `_BenchRawInsert` helper, compiled only into a benchmark build
  (`maturin develop --release --features bench`), so a shipped module carries
  no benchmark code; `run.py` refuses a build without it.
- `bare_fsync`: a write of ~1 KB + `os.fsync` per call to a file in the
  same folder: one fsync per durable return is the limit of `record()`. The
  writes go in turn into a file written out and synced once beforehand, as
  SQLite reuses its `-wal` file: a file grown by every call costs each fsync
  an update of the file's size and blocks too, which no floor pays.
- `query_case`: an auditor's "what did this user do" on 1,000,000 rows. The
  legacy database is bulk-loaded once with the legacy schema; the auditbus one
  is a copy of that file opened (so migrated) by auditbus: the same rows, each
  side with its own indexes. Each timed call reads every entry's `details`
  and `timestamp`: the legacy `query()` parses them all before it returns,
  auditbus's entries parse `details` on first access, and an auditor's query
  is read. The legacy schema has no index on user_identity,
  so most of that speed-up is the index auditbus's migration adds; a third
  file, the legacy one with that same index added, is timed with the legacy
  `query()` beside them to show how much. All are cached in
  `$AUDITBUS_BENCH_CACHE` (default: the system temp folder), in a folder named
  after a digest of what they are built from, so a change to the schema, the
  rows or the index builds them afresh.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import auditbus
from harness import Case

MILLION = 1_000_000
RARE_EVERY = 10_000  # the queried user owns every 10,000th row: 100 rows spread over the whole table
# auditbus's own index for the filter (src/audit/schema.rs, V1_INDEXES), added to a copy of the legacy file.
USER_INDEX = "CREATE INDEX IF NOT EXISTS ix_audit_log_user_identity ON audit_log(user_identity)"


def raw_insert(path: Path, rows: list[tuple[str, str | None, str | None, str]]) -> Callable[[], object]:
    """Writes `rows` (event_type, plan_id, user_identity, details JSON) in one
    transaction, then runs the WAL checkpoint the writer would run after that
    commit, when one is due."""
    raw_class = getattr(auditbus._native, "_BenchRawInsert", None)
    if raw_class is None:
        raise RuntimeError(
            "auditbus is not a `--features bench` build, so the raw rusqlite references (rows with promised "
            "targets) cannot run: build it with `maturin develop --release --features bench`"
        )
    raw = raw_class(str(path), rows, "full")
    batch = len(rows)

    def insert_then_checkpoint() -> None:
        raw.insert(batch)
        raw.checkpoint()

    return insert_then_checkpoint


# The bare reference's file: written out once, then overwritten in turn.
BARE_FILE_SIZE = 4 << 20


def bare_fsync(path: Path, payload: bytes, size: int = BARE_FILE_SIZE) -> Callable[[], None]:
    """Writes `payload` and fsyncs, each call at the next offset of a preallocated file of `size` bytes, wrapping."""
    if not 0 < len(payload) <= size:
        raise ValueError(f"payload of {len(payload)} bytes; accepted: 1 to {size} (the file's size)")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    atexit.register(os.close, fd)
    # Zeros written (not a sparse or fallocated range, whose first write converts extents) and synced, untimed.
    if os.write(fd, bytes(size)) != size:
        raise OSError(f"short write preallocating {path}")
    os.fsync(fd)
    offset = 0

    def write_and_sync() -> None:
        nonlocal offset
        if offset + len(payload) > size:
            offset = 0
        os.pwrite(fd, payload, offset)
        offset += len(payload)
        os.fsync(fd)

    return write_and_sync


def _cache(legacy: Any, details: Callable[[int], dict[str, Any]]) -> Path:
    """The cache folder, named after what its files are built from."""
    recipe = json.dumps([legacy.SCHEMA, USER_INDEX, MILLION, RARE_EVERY, details(0), details(MILLION - 1)])
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    root = Path(os.environ.get("AUDITBUS_BENCH_CACHE", tempfile.gettempdir()))
    return root / f"auditbus-bench-query-{digest}"


def _million_rows(legacy: Any, details: Callable[[int], dict[str, Any]]) -> tuple[Path, Path, Path]:
    cache = _cache(legacy, details)
    legacy_path, indexed_path, ours_path = cache / "legacy.db", cache / "legacy-indexed.db", cache / "auditbus.db"
    done = cache / "complete"
    if done.exists():
        return legacy_path, indexed_path, ours_path
    print(f"building the {MILLION:,}-row databases in {cache} (once)", file=sys.stderr, flush=True)
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    types = sorted(legacy.VALID_EVENT_TYPES)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    conn = sqlite3.connect(legacy_path, isolation_level=None)
    conn.executescript(legacy.SCHEMA)
    conn.execute("PRAGMA journal_mode=OFF")  # a bulk load into a file thrown away if it fails
    conn.execute("PRAGMA synchronous=OFF")
    chunk = min(50_000, MILLION)
    for base in range(0, MILLION, chunk):
        rows = [
            (
                (start + timedelta(seconds=i)).isoformat(),
                types[i % len(types)],
                f"plan-{i % 5000}",
                "auditor-target" if i % RARE_EVERY == 0 else f"user-{i % 997}",
                json.dumps(details(i)),
            )
            for i in range(base, min(base + chunk, MILLION))
        ]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO audit_log (timestamp, event_type, plan_id, user_identity, details) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    shutil.copyfile(legacy_path, ours_path)
    auditbus.AuditService(ours_path).close()  # the migration: new columns and indexes, old rows untouched
    shutil.copyfile(legacy_path, indexed_path)
    conn = sqlite3.connect(indexed_path, isolation_level=None)
    conn.execute(USER_INDEX)
    conn.close()
    done.touch()
    return legacy_path, indexed_path, ours_path


def read(entries: list[Any]) -> list[Any]:
    """Every entry's details and timestamp read, as whoever asked will: auditbus parses details on first access."""
    for entry in entries:
        _ = entry.details, entry.timestamp
    return entries


def query_case(legacy: Any, details: Callable[[int], dict[str, Any]]) -> Case:
    legacy_path, indexed_path, ours_path = _million_rows(legacy, details)
    ours = auditbus.AuditService(ours_path)
    old = legacy.AuditService(legacy_path)
    indexed = legacy.AuditService(indexed_path)
    atexit.register(ours.close)
    found = [e.id for e in ours.query(user_identity="auditor-target")]
    assert found == [e.id for e in old.query(user_identity="auditor-target")], "the two answers differ"
    assert found == [e.id for e in indexed.query(user_identity="auditor-target")], "the indexed answer differs"
    assert len(found) == MILLION // RARE_EVERY
    return Case(
        f"query(user_identity=...) on {MILLION:,} rows, {len(found)} matches spread over the table, read",
        "auditbus query()",
        {
            "auditbus query()": lambda: read(ours.query(user_identity="auditor-target")),
            "legacy query()": lambda: read(old.query(user_identity="auditor-target")),
            # What the index alone buys: the legacy code on the legacy rows, plus auditbus's user index.
            "legacy query(), auditbus's user_identity index added": lambda: read(
                indexed.query(user_identity="auditor-target")
            ),
        },
        targets={"legacy query()": 50},
        rounds=5,
    )
