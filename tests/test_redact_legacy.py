"""Parity with the legacy `redact_dict` wherever its behaviour is defined, and the
documented, intentional differences pinned one by one (research section 5, item 35)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from auditbus import REDACTED, redact_dict
from hypothesis import given, settings
from hypothesis import strategies as st


def _legacy() -> ModuleType:
    override = os.environ.get("AUDITBUS_LEGACY_DIR")
    candidates = [Path(override)] if override else [p / "shared" / "legacy" for p in Path(__file__).resolve().parents]
    folder = next((c for c in candidates if (c / "cleveragents_legacy").is_dir()), None)
    if folder is None:
        pytest.skip("shared/legacy is not beside this checkout")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module("cleveragents_legacy")


@pytest.fixture(scope="module")
def legacy() -> ModuleType:
    return _legacy()


# Keys both implementations mask, and keys neither does (no name/value record fields).
SECRET = ["password", "db_password", "secret", "client_secret", "api_key", "apikey", "authorization"]
SECRET += ["credentials", "private_key", "access_token", "refresh_token", "passwd"]
PLAIN = ["id", "status", "region", "count", "owner", "host", "items", "meta"]
WORDS = st.sampled_from(["alpha", "beta", "ok", "eu-west-1", "v1.2.3", "hello world", ""])
SCALARS = st.one_of(WORDS, st.integers(-(10**6), 10**6), st.floats(allow_nan=False))

payloads = st.recursive(
    st.dictionaries(st.sampled_from(SECRET + PLAIN), SCALARS, max_size=5),
    lambda children: st.dictionaries(
        st.sampled_from(SECRET + PLAIN),
        st.one_of(SCALARS, children, st.lists(st.one_of(SCALARS, children), max_size=3).filter(lambda x: len(x) != 2)),
        max_size=5,
    ),
    max_leaves=20,
)


# The strategy's repr is long; hypothesis warns about it, and warnings are errors here.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@settings(max_examples=300, deadline=None)
@given(payloads)
def test_same_result_as_the_legacy_where_it_is_defined(legacy: ModuleType, data: dict[str, Any]) -> None:
    assert redact_dict(data) == legacy.redact_dict(data)


def test_same_mask_constant(legacy: ModuleType) -> None:
    assert legacy.REDACTED == REDACTED


@pytest.mark.parametrize(
    ("data", "ours", "why"),
    [
        ({"max_tokens": 300}, {"max_tokens": 300}, "counters stay readable"),
        ({"tokenizer": "cl100k"}, {"tokenizer": "cl100k"}, "look-alikes stay readable"),
        (
            {"password": None, "password_set": True},
            {"password": None, "password_set": True},
            "None/bool disclose nothing",
        ),
        (
            {"key": "llm.api_key", "new_value": "sk-x"},
            {"key": "llm.api_key", "new_value": REDACTED},
            "a sibling names the secret",
        ),
        ({"note": "password=hunter2"}, {"note": f"password={REDACTED}"}, "secrets in free text"),
        ({"pwd": "x", "x-auth": "y"}, {"pwd": REDACTED, "x-auth": REDACTED}, "short words as whole tokens"),
        ({"session_id": "s-1"}, {"session_id": REDACTED}, "a session id in details is a bearer credential"),
    ],
)
def test_documented_differences(legacy: ModuleType, data: dict[str, Any], ours: dict[str, Any], why: str) -> None:
    assert redact_dict(data) == ours, why
    assert legacy.redact_dict(data) != ours, f"the legacy now agrees on: {why}"
