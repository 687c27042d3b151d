"""Helpers shared by the audit tests: the legacy implementation, raw SQLite access, condition waits."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# `<checkout>/../shared/legacy` (the layout of /work/main); a worktree one level
# deeper finds the same folder further up.
LEGACY = next(
    (p / "shared" / "legacy" for p in Path(__file__).resolve().parents[2:] if (p / "shared" / "legacy").is_dir()),
    Path(__file__).resolve().parents[2] / "shared" / "legacy",
)


def legacy_audit() -> ModuleType:
    """`cleveragents_legacy.audit_service`, or skip when the legacy folder is absent."""
    if not (LEGACY / "cleveragents_legacy" / "audit_service.py").is_file():
        pytest.skip(f"legacy implementation not found at {LEGACY}")
    if str(LEGACY) not in sys.path:
        sys.path.insert(0, str(LEGACY))
    import cleveragents_legacy.audit_service as module

    return module


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Polls `condition` until it is truthy; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def raw_rows(path: Path | str, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Rows as stored, read by a separate connection."""
    conn = sqlite3.connect(str(path))
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(f"SELECT * FROM audit_log WHERE {where} ORDER BY id", params))
    finally:
        conn.close()


def execute(path: Path | str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """One statement in its own committed transaction (the tampering tool of the chain tests)."""
    conn = sqlite3.connect(str(path))
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


@contextmanager
def write_locked(path: Path | str) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock until the block ends."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


DOMAIN_ROWS = "event_type NOT LIKE 'audit\\_%' ESCAPE '\\'"
