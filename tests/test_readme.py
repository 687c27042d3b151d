"""The README's Python snippets run as shown and do what its prose says."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from auditbus import REDACTED, AuditService

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_readme_has_its_snippets() -> None:
    assert len(python_blocks()) == 2


def test_migration_snippet_stores_the_row_with_new_value_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(python_blocks()[0], str(README), "exec"), namespace)
    audit = namespace["audit"]
    try:
        [row] = audit.query(user_identity="alice")
        assert row.event_type == "config_changed"
        assert row.details == {"key": "llm.api_key", "old_value": None, "new_value": REDACTED}
    finally:
        audit.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
    assert b"llm.api_key" in stored  # the scan sees the stored text
    assert b"sk-..." not in stored


# Emits, then stops itself with SIGTERM once the README's handler is installed
# (argv[2] == "handled"): the events still queued must reach the trail.
_TERMINATED = """
import os, signal, sys, time
from auditbus import AuditService, DomainEvent, ReactiveEventBus
if sys.argv[2] == "handled":
    exec(sys.argv[3])
bus = ReactiveEventBus(audit=AuditService(sys.argv[1]))
for i in range(5000):
    bus.emit(DomainEvent(event_type="step_completed", details={"i": i}))
os.kill(os.getpid(), signal.SIGTERM)
# Short sleeps, not signal.pause(): the signal may be handled by the writer
# thread's C handler, and a flag set just before pause() would go unseen.
while True:
    time.sleep(0.05)
"""


def test_the_sigterm_snippet_turns_the_signal_into_an_exit_that_commits_what_was_queued(tmp_path: Path) -> None:
    snippet = textwrap.dedent(python_blocks()[1])
    assert "signal.SIGTERM" in snippet
    path = tmp_path / "a.db"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_TERMINATED), str(path), "handled", f"import signal, sys\n{snippet}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 143, done.stderr
    with AuditService(path, read_only=True) as svc:
        assert svc.count(event_type="step_completed") == 5000
        assert svc.count(event_type="audit_stopped") == 1
