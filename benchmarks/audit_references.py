"""The limits and the scale case the audit benchmarks are measured against, in the same run.

- `raw_insert`: the same rows inserted straight into the same schema (same
  indexes, same `synchronous`, the same checkpoint policy as the writer:
  after the commit, not inside it, here untimed between samples) with
  rusqlite, batched (or one row per
  transaction: SQLite's own floor for a durable row), no queue, no chain:
  the `_BenchRawInsert` helper, compiled only into a benchmark build
  (`maturin develop --release --features bench`), so a shipped module carries
  no benchmark code. None, with a note, on a build without it.
- `bare_fsync`: `os.write` + `os.fsync` of ~1 KB per call to a file in the
  same folder: one fsync per durable return is the limit of `record()`.
- `query_case`: an auditor's "what did this user do" on 1,000,000 rows. The
  legacy database is bulk-loaded once with the legacy schema; the auditbus one
  is a copy of that file opened (so migrated) by auditbus: the same rows, each
  side with its own indexes (the legacy has none on user_identity). Both are
  cached in `$AUDITBUS_BENCH_CACHE` (default: the system temp folder).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import auditbus
from harness import Case

MILLION = 1_000_000
RARE_EVERY = 10_000  # the queried user owns every 10,000th row: 100 rows spread over the whole table
CACHE = Path(os.environ.get("AUDITBUS_BENCH_CACHE", tempfile.gettempdir())) / "auditbus-bench-query-v1"


def raw_insert(
    path: Path, rows: list[tuple[str, str | None, str | None, str]]
) -> tuple[Callable[[], object], Callable[[], object]] | None:
    """`(insert, checkpoint)`: `insert` writes `rows` (event_type, plan_id,
    user_identity, details JSON) in one transaction; `checkpoint` is the
    WAL checkpoint the writer runs after a commit, for the untimed `settle`."""
    raw_class = getattr(auditbus._native, "_BenchRawInsert", None)
    if raw_class is None:
        print("note: not a `--features bench` build: no raw rusqlite reference row", file=sys.stderr)
        return None
    raw = raw_class(str(path), rows, "full")
    batch = len(rows)
    return (lambda: raw.insert(batch)), raw.checkpoint


def bare_fsync(path: Path, payload: bytes) -> Callable[[], None]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    atexit.register(os.close, fd)

    def write_and_sync() -> None:
        os.write(fd, payload)
        os.fsync(fd)

    return write_and_sync


def _million_rows(legacy_audit: Any, details: Callable[[int], dict[str, Any]]) -> tuple[Path, Path]:
    legacy_path, ours_path, done = CACHE / "legacy.db", CACHE / "auditbus.db", CACHE / "complete"
    if done.exists():
        return legacy_path, ours_path
    print(f"building the {MILLION:,}-row databases in {CACHE} (once)", file=sys.stderr, flush=True)
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.mkdir(parents=True)
    types = sorted(legacy_audit.VALID_EVENT_TYPES)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    conn = sqlite3.connect(legacy_path, isolation_level=None)
    conn.executescript(legacy_audit._SCHEMA)
    conn.execute("PRAGMA journal_mode=OFF")  # a bulk load into a file thrown away if it fails
    conn.execute("PRAGMA synchronous=OFF")
    chunk = 50_000
    for base in range(0, MILLION, chunk):
        rows = [
            (
                (start + timedelta(seconds=i)).isoformat(),
                types[i % len(types)],
                f"plan-{i % 5000}",
                "auditor-target" if i % RARE_EVERY == 0 else f"user-{i % 997}",
                json.dumps(details(i)),
            )
            for i in range(base, base + chunk)
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
    done.touch()
    return legacy_path, ours_path


def query_case(legacy: Any, details: Callable[[int], dict[str, Any]]) -> Case:
    legacy_audit = SimpleNamespace(_SCHEMA=legacy.SCHEMA, VALID_EVENT_TYPES=legacy.VALID_EVENT_TYPES)
    legacy_path, ours_path = _million_rows(legacy_audit, details)
    ours = auditbus.AuditService(ours_path)
    old = legacy.AuditService(legacy_path)
    atexit.register(ours.close)
    found = [e.id for e in ours.query(user_identity="auditor-target")]
    assert found == [e.id for e in old.query(user_identity="auditor-target")], "the two answers differ"
    assert len(found) == 100
    return Case(
        f"query(user_identity=...) on {MILLION:,} rows, 100 matches spread over the table",
        "auditbus query()",
        {
            "auditbus query()": lambda: ours.query(user_identity="auditor-target"),
            "legacy query()": lambda: old.query(user_identity="auditor-target"),
        },
        targets={"legacy query()": 50},
        rounds=5,
    )
