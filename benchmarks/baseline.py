"""The pure-Python baseline, written to the legacy contract (pydantic v2 model, RxPY subject).

Benchmarks import the real legacy package when `../shared/legacy` is beside
the checkout and fall back to this module otherwise, so they run anywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

_LEGACY = Path(__file__).resolve().parents[2] / "shared" / "legacy"


def legacy_module():  # type: ignore[no-untyped-def]
    """The legacy package `cleveragents_legacy`, from the shared folder."""
    if str(_LEGACY) not in sys.path:
        sys.path.insert(0, str(_LEGACY))
    import cleveragents_legacy

    return cleveragents_legacy
