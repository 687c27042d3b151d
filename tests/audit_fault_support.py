"""Helpers of the audit fault tests: a writer child process read line by line with deadlines."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("audit_fault_child.py")


@dataclass
class Acks:
    """What a writer process acknowledged: event ids after flush(), (row id, event id) after record()."""

    events: list[str] = field(default_factory=list)
    rows: list[tuple[int, str]] = field(default_factory=list)
    flushes: int = 0

    def take(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "F":
            self.events.extend(rest.split())
            self.flushes += 1
        elif kind == "R":
            row_id, event_id = rest.split()
            self.rows.append((int(row_id), event_id))

    @property
    def event_ids(self) -> set[str]:
        return set(self.events) | {event_id for _, event_id in self.rows}


class Child:
    """A fault-test writer process; its stdout is read by a thread so every wait has a deadline."""

    def __init__(self, *args: str | Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *map(str, args)],
            env=None if env is None else {**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            # A line cut by a kill has no newline: it was never fully printed, so never acknowledged.
            if line.endswith("\n"):
                self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float = 60.0) -> str | None:
        """The next complete line, None at end of output."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            pytest.fail(f"writer process printed nothing for {timeout} s; last lines: {self.seen[-3:]}")
        if line is not None:
            self.seen.append(line)
        return line

    def expect(self, word: str, timeout: float = 60.0) -> str:
        """Reads until a line starting with `word`; fails at end of output."""
        while True:
            line = self.next_line(timeout)
            if line is None:
                pytest.fail(f"writer process ended before {word!r}: rc={self.proc.wait()}, stderr={self.stderr()}")
            if line.split(" ", 1)[0] == word:
                return line

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)

    def rest(self) -> list[str]:
        """Every remaining complete line, after the process has ended."""
        out = []
        while (line := self.next_line()) is not None:
            out.append(line)
        return out

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr is not None and self.proc.poll() is not None else ""

    def finish(self, acks: Acks | None = None, timeout: float = 120.0) -> list[str]:
        """Reads to the end, feeding `acks`; the process must exit 0."""
        lines = []
        while (line := self.next_line(timeout)) is not None:
            lines.append(line)
            if acks is not None:
                acks.take(line)
        rc = self.proc.wait(timeout=timeout)
        assert rc == 0, f"writer process failed (rc={rc}): {self.stderr()}"
        return lines

    def close(self) -> None:
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


_PRAGMA = """
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=30)
print(json.dumps([row[0] for row in conn.execute(sys.argv[2])]))
conn.close()
"""


def pragma(path: Path | str, statement: str) -> list[object]:
    """One read-only statement's first column, run by another process (another SQLite library)."""
    done = subprocess.run(
        [sys.executable, "-c", _PRAGMA, str(path), statement], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    result: list[object] = json.loads(done.stdout)
    return result
