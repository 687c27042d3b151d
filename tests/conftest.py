"""Shared test helpers: the legacy package and the two-implementation parametrisation.

Contract tests run the same assertions against `auditbus` and the legacy
pure-Python package (`cleveragents_legacy`, in `shared/legacy` beside the
checkout), so drop-in parity is shown, not claimed:

    def test_something(impl):                 # runs once per implementation
        event = impl.DomainEvent(event_type=impl.EventType.PLAN_APPLIED)

    @pytest.mark.parametrize("impl", impls(legacy_xfail="legacy defect: ..."), indirect=True)
    def test_fixed_defect(impl): ...          # the legacy param must fail (strict xfail)

The legacy param is skipped only when the folder is absent; when it is present
but cannot be imported (say pydantic is missing) the tests error, loudly.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import auditbus
import pytest

IMPL_NAMES = ("auditbus", "legacy")

# A run started as a background job (`scripts/check.sh &`, nohup) has SIGINT
# ignored, and every process it starts inherits that: the Ctrl-C tests' children
# would never see their signal. With a handler here, they start with the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _find_legacy_dir() -> Path | None:
    """`shared/legacy` next to the checkout (`parents[2]` of this file), or further up for worktrees.

    `AUDITBUS_LEGACY_DIR` overrides the search.
    """
    override = os.environ.get("AUDITBUS_LEGACY_DIR")
    candidates = (
        [Path(override)] if override else [p / "shared" / "legacy" for p in Path(__file__).resolve().parents[2:]]
    )
    return next((c for c in candidates if (c / "cleveragents_legacy").is_dir()), None)


LEGACY_DIR = _find_legacy_dir()


def load_legacy() -> ModuleType | None:
    """The legacy package, or None when its folder is absent."""
    if LEGACY_DIR is None:
        return None
    if str(LEGACY_DIR) not in sys.path:
        sys.path.insert(0, str(LEGACY_DIR))
    return importlib.import_module("cleveragents_legacy")


@pytest.fixture(scope="session")
def legacy() -> ModuleType:
    """The legacy package `cleveragents_legacy`; skips the test when `shared/legacy` is absent."""
    module = load_legacy()
    if module is None:
        pytest.skip("shared/legacy is not beside this checkout")
    return module


def impls(*, legacy_xfail: str | None = None) -> list[Any]:
    """Params for the `impl` fixture: auditbus and legacy.

    `legacy_xfail` marks the legacy param as a strict expected failure, with
    the reason: a documented legacy defect or a deliberate difference.
    """
    legacy_marks = [] if legacy_xfail is None else [pytest.mark.xfail(strict=True, reason=legacy_xfail)]
    return [pytest.param("auditbus", id="auditbus"), pytest.param("legacy", id="legacy", marks=legacy_marks)]


@pytest.fixture(params=impls())
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The implementation under test: the `auditbus` module or the legacy package."""
    if request.param == "auditbus":
        return auditbus
    return request.getfixturevalue("legacy")  # type: ignore[no-any-return]
