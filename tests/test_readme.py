"""The README's Python snippets run as shown and do what its prose says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from auditbus import REDACTED

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_readme_has_its_snippet() -> None:
    assert len(python_blocks()) == 1


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
