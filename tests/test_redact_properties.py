"""Property tests: secrets planted anywhere in random nested structures never survive;
planted non-secrets always do; redaction is idempotent and never mutates its input."""

from __future__ import annotations

import copy
import json
from typing import Any

from auditbus import REDACTED, redact, redact_dict
from hypothesis import given, settings
from hypothesis import strategies as st

# Plain material: keys and words that no rule treats as secret.
PLAIN_KEYS = ["id", "name_x", "count", "status", "region", "owner", "host", "port", "items", "meta"]
PLAIN_KEYS += ["max_tokens", "author"]
PLAIN_WORDS = ["alpha", "beta", "gamma", "delta", "ok", "done", "eu-west-1", "v1.2.3", "42", "hello world"]

SECRET_KEYS = ["password", "api_key", "X-Api-Key", "clientSecret", "access_token", "db.password"]
SECRET_KEYS += ["pass\u00adword", "PIN"]


# No i, j, l, o, w or f: a random tag can then never spell a secret key word
# such as "jwt" or "csrf" (a plain marker must stay plain).
_TAG_ALPHABET = "abcdeghkmnpqrstuvxyz234567"


def _unique(draw: st.DrawFn, prefix: str) -> str:
    return prefix + draw(st.text(_TAG_ALPHABET, min_size=12, max_size=12))


@st.composite
def planted_secret(draw: st.DrawFn) -> tuple[Any, str]:
    """A (value fragment, secret text) pair; the fragment puts the secret where a rule must find it."""
    tag = _unique(draw, "S3cr")
    token_shapes = [
        f"ghp_{(tag * 4)[:36]}",
        f"sk_live_{tag}",
        f"AKIA{tag.upper()[:16]}",
        f"xoxb-{tag}-{tag}",
        f"sk-proj-{tag}{tag}",
        f"glpat-{tag}{tag}",
        f"eyJ{tag}.eyJ{tag}.{tag}",
    ]
    key = draw(st.sampled_from(SECRET_KEYS))
    name = draw(st.sampled_from(["llm.api_key", "smtp_password", "DB_PASSWORD", "Authorization"]))
    field = draw(st.sampled_from(["key", "name", "field", "setting"]))
    slot = draw(st.sampled_from(["value", "old_value", "new_value", "old", "new"]))
    header = draw(st.sampled_from(["Authorization", "X-Api-Key", "Cookie"]))
    token = draw(st.sampled_from(token_shapes))
    shapes: dict[str, tuple[Any, str]] = {
        "key": ({key: tag}, tag),
        "sibling": ({field: name, slot: tag}, tag),
        "pair": ([[header, tag]], tag),
        "url": (f"see postgres://svc:{tag}@db.internal:5432/app now", tag),
        "kv": (f"login failed password={tag} for bob", tag),
        "bearer": (f"Authorization: Bearer {tag}", tag),
        "token": (f"rotated {token} today", token),
        "json": (json.dumps({"note": "x", "token": tag}), tag),
    }
    return shapes[draw(st.sampled_from(sorted(shapes)))]


plain_scalars = st.one_of(
    st.sampled_from(PLAIN_WORDS), st.integers(-1000, 1000), st.none(), st.booleans(), st.floats(allow_nan=False)
)


def nested(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            # Two-element sequences are left out: `[name, value]` is a pair, and
            # a pair named by a planted secret rightly masks its value.
            st.lists(children, max_size=4).filter(lambda items: len(items) != 2),
            st.tuples(children, children, children),
            st.dictionaries(st.sampled_from(PLAIN_KEYS), children, max_size=4),
        ),
        max_leaves=12,
    )


class Planted:
    """A leaf holding a secret; replaced by its fragment once the tree is drawn."""

    def __init__(self, fragment: Any, secret: str) -> None:
        self.fragment = fragment
        self.secret = secret


@st.composite
def leaf(draw: st.DrawFn) -> Any:
    roll = draw(st.integers(0, 4))
    if roll == 0:
        return Planted(*draw(planted_secret()))
    if roll == 1:
        return _unique(draw, "plain-")
    return draw(plain_scalars)


def _unwrap(value: Any, secrets: list[str], markers: list[str]) -> Any:
    """The drawn tree with planted fragments in place, collecting what was planted where."""
    if isinstance(value, Planted):
        secrets.append(value.secret)
        return value.fragment
    if isinstance(value, str) and value.startswith("plain-"):
        markers.append(value)
    if isinstance(value, list):
        return [_unwrap(v, secrets, markers) for v in value]
    if isinstance(value, tuple):
        return tuple(_unwrap(v, secrets, markers) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, secrets, markers) for k, v in value.items()}
    return value


@st.composite
def structure_with_secrets(draw: st.DrawFn) -> tuple[Any, list[str], list[str]]:
    """A random nested structure with secrets and unique plain markers planted at random places."""
    secrets: list[str] = []
    markers: list[str] = []
    tree = {"root": draw(nested(leaf())), "anchor": draw(leaf())}
    return _unwrap(tree, secrets, markers), secrets, markers


def _all_text(value: Any) -> str:
    return json.dumps(value, default=repr)


@settings(max_examples=300, deadline=None)
@given(structure_with_secrets())
def test_planted_secrets_never_survive_and_plain_values_do(case: tuple[Any, list[str], list[str]]) -> None:
    data, secrets, markers = case
    before = copy.deepcopy(data)
    out = redact_dict(data)
    text = _all_text(out)
    for secret in secrets:
        assert secret not in text
    for marker in markers:
        assert marker in text
    assert data == before


@settings(max_examples=200, deadline=None)
@given(structure_with_secrets())
def test_redaction_is_idempotent(case: tuple[Any, list[str], list[str]]) -> None:
    once = redact(case[0])
    assert redact(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_handled(text: str) -> None:
    out = redact(text)
    assert isinstance(out, str)
    assert redact(out) == out


@settings(max_examples=200, deadline=None)
@given(nested(plain_scalars))
def test_structures_without_secrets_come_back_equal(data: Any) -> None:
    def lists(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [lists(v) for v in value]
        if isinstance(value, dict):
            return {k: lists(v) for k, v in value.items()}
        return value

    out = redact({"x": data})
    assert out == {"x": lists(data)}
    assert REDACTED not in _all_text(out)
