"""Helpers shared by the audit tests: the legacy implementation, raw SQLite access, condition waits."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
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
    import cleveragents_legacy.audit_service as module  # noqa: PLC0415 - importable only after the path insert

    return module


def run_script(script: str, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Runs `script` in a Python process of its own (a fault it injects, a hang, a crash stays there)."""
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


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


# Raw SQLite access runs in a child process. Python's `sqlite3` links another
# SQLite library than auditbus's bundled one; two libraries in one process do
# not see each other's POSIX locks, so a `sqlite3` connection closing would
# checkpoint and delete the WAL under an open AuditService
# (https://sqlite.org/howtocorrupt.html, "multiple copies of SQLite").
_RAW = """
import json, sqlite3, sys
path, mode, sql, params = json.loads(sys.argv[1])
conn = sqlite3.connect(path, isolation_level=None, timeout=30)
conn.row_factory = sqlite3.Row
if mode == "rows":
    print(json.dumps([dict(r) for r in conn.execute(sql, params)]))
elif mode == "execute":
    conn.execute(sql, params)
else:
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
conn.close()
"""


def _raw(path: Path | str, mode: str, sql: str = "", params: tuple[Any, ...] = ()) -> str:
    arg = json.dumps([str(path), mode, sql, list(params)])
    done = subprocess.run([sys.executable, "-c", _RAW, arg], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"raw SQLite helper failed: {done.stderr}")
    return done.stdout


def raw_rows(path: Path | str, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows as stored, read by another process."""
    out = _raw(path, "rows", f"SELECT * FROM audit_log WHERE {where} ORDER BY id", params)
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def raw_query(path: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Any SELECT, read by another process."""
    rows: list[dict[str, Any]] = json.loads(_raw(path, "rows", sql, params))
    return rows


def sequence(path: Path | str) -> int | None:
    """`sqlite_sequence`'s entry for `audit_log`: the largest id ever handed out."""
    rows = raw_query(path, "SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'")
    return rows[0]["seq"] if rows else None


def execute(path: Path | str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """One statement, committed, by another process (the tampering tool of the chain tests)."""
    _raw(path, "execute", sql, params)


@contextmanager
def write_locked(path: Path | str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the database's write lock until the block ends."""
    arg = json.dumps([str(path), "lock", "", []])
    child = subprocess.Popen(
        [sys.executable, "-c", _RAW, arg], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    with child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "locked"
            yield child
        finally:
            if child.stdin is not None:
                child.stdin.write("\n")
                child.stdin.flush()
            child.wait(timeout=60)


# The `-shm` file's lock byte a WAL checkpoint takes (SQLite's WAL_CKPT_LOCK, 120 + 1).
_HOLD_CHECKPOINT = """
import fcntl, os, sys
fd = os.open(sys.argv[1] + "-shm", os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 121)
print("locked", flush=True)
sys.stdin.readline()
"""


@contextmanager
def checkpoint_running(path: Path | str) -> Iterator[None]:
    """Another process holding the lock a WAL checkpoint takes, as one running a checkpoint does."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_CHECKPOINT, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    with child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "locked"
            yield
        finally:
            if child.stdin is not None:
                child.stdin.write("\n")
                child.stdin.flush()
            child.wait(timeout=60)


def writer_threads() -> int:
    """This process's audit writer threads (named by the core), alive or not yet reaped.

    A thread may end between the listing and the read of its name: it is not counted.
    """
    count = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            count += (task / "comm").read_text().strip() == "auditbus-writer"
        # Gone before its name was read: the entry vanishes, or reading it gives ESRCH.
        except (FileNotFoundError, ProcessLookupError):
            continue
    return count


DOMAIN_ROWS = "event_type NOT LIKE 'audit\\_%' ESCAPE '\\'"


#: The user a root test process runs its readers as.
NOBODY = 65534


@contextmanager
def readable_folder() -> Iterator[Path]:
    """A folder another user may read (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="auditbus-ro-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def run_as_reader(args: list[str], folder: Path, *, own_files: bool = False) -> subprocess.CompletedProcess[str]:
    """Runs `python *args` as a process that may read but not write `folder` and the files in it.

    Permissions do not bind root, so as root the child runs as nobody (with
    setpriv); the test is skipped only where neither is possible. With
    `own_files`, the files stay writable by the child (only the folder is not).
    """
    command, env = _reader_command(args, folder, own_files=own_files)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=folder, env=env)
    finally:
        folder.chmod(0o755)


@contextmanager
def reader_process(args: list[str], folder: Path) -> Iterator[subprocess.Popen[str]]:
    """`python *args` started as a reader of `folder` (as `run_as_reader`), its stdin and stdout piped.

    Meanwhile this process, root or the folder's owner, can still write the
    files there.
    """
    command, env = _reader_command(args, folder)
    try:
        pipe = subprocess.PIPE
        with subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=pipe, text=True, cwd=folder, env=env) as process:
            try:
                yield process
            finally:
                if process.poll() is None:
                    process.kill()
    finally:
        folder.chmod(0o755)


def _reader_command(
    args: list[str], folder: Path, *, own_files: bool = False
) -> tuple[list[str], dict[str, str] | None]:
    """Makes `folder` and its files read-only; returns how to run `python *args` without write access.

    That is the command and, where it runs as another user, its environment.
    """
    for item in folder.iterdir():
        item.chmod(0o644 if own_files else 0o444)
        if own_files and os.geteuid() == 0:
            os.chown(item, NOBODY, NOBODY)
    command = [sys.executable, *args]
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return command, None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        folder.chmod(0o755)
        pytest.skip("running as root without setpriv: cannot drop write permission")
    # Where the package is installed (root's own Python, say) may be closed to nobody.
    env = {**os.environ, "PYTHONPATH": str(package_for_other_users())}
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command], env


@functools.cache
def package_for_other_users() -> Path:
    """A copy of the `auditbus` package under test, in a folder every user may read."""
    import auditbus  # noqa: PLC0415 - only the processes run as another user need it

    folder = Path(tempfile.mkdtemp(prefix="auditbus-pkg-"))
    folder.chmod(0o755)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    shutil.copytree(Path(auditbus.__file__).parent, folder / "auditbus")
    for item in folder.rglob("*"):
        item.chmod(0o755 if item.is_dir() else 0o644)
    return folder
