"""Corpus: the anchors' documented bypasses and false positives (research/redaction.md, sections 1 and 5).

Each entry names where the case is documented, the input, the secrets that
must be gone from the output and the readable text that must stay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from auditbus import redact


@dataclass
class Case:
    source: str
    data: Any
    gone: list[str]
    kept: list[str] = field(default_factory=list)


def _cyclic() -> dict[str, Any]:
    data: dict[str, Any] = {"password": "cy1"}
    data["me"] = [data]
    return data


CASES = [
    # Sentry SDK: exact-match denylist (getsentry/sentry-python#7542).
    *(
        Case("sentry-python#7542", {key: "sekr1t-value"}, ["sekr1t-value"])
        for key in ["api_token", "access_token", "auth_token", "refresh_token", "client_secret", "secret_key"]
    ),
    Case("sentry-python (x-api-key, api-key)", {"x-api-key": "k1v", "api-key": "k2v"}, ["k1v", "k2v"]),
    Case(
        "sentry-python#7620 nested authorization",
        {"extra": {"request": {"data": {"authorization": "Bearer zz9"}}}},
        ["zz9"],
    ),
    Case("sentry-python#4441 query parameter", {"url": "https://api/x?token=qq7&page=2"}, ["qq7"], ["page=2"]),
    Case("sentry-python: tuples skipped", {"creds": ({"password": "tp1"},)}, ["tp1"]),
    Case("sentry-python: cycle (RecursionError)", _cyclic(), ["cy1"]),
    # Relay / Sentry server.
    Case("Relay: soft hyphen", {"pass\u00adword": "sh1"}, ["sh1"]),
    Case("Relay: pair list", {"headers": [["Authorization", "pl1"]]}, ["pl1"]),
    Case("getsentry/sentry#65142 over-masked domain", {"site": "mywebsiteauth.com"}, [], ["mywebsiteauth.com"]),
    Case("getsentry/sentry#2614 over-masked message", {"message": "User authenticated"}, [], ["User authenticated"]),
    Case("getsentry/sentry#1518 15-digit id", {"order": "123456789012345"}, [], ["123456789012345"]),
    # detect-secrets.
    Case(
        "Yelp/detect-secrets#458 YAML env block",
        {"manifest": "env:\n  DB_PASSWORD: ym1\n  API_TOKEN: ym2\n  LOG_LEVEL: debug"},
        ["ym1", "ym2"],
        ["LOG_LEVEL: debug"],
    ),
    Case(
        "Yelp/detect-secrets#699 unquoted connection string",
        {"config_line": "Server=tcp:h,1433;Database=d;User ID=sa;Password=cs1;"},
        ["cs1"],
        ["Database=d"],
    ),
    Case(
        "detect-secrets: Authorization Bearer <hex>",
        {"log": "GET / Authorization: Bearer 0123456789abcdef0123456789abcdef"},
        ["0123456789abcdef0123456789abcdef"],
    ),
    # gitleaks.
    Case("gitleaks#824 quoted key", {"cfg": '"api_key": "gq1abc"'}, ["gq1abc"]),
    Case("gitleaks#1231 letters-only secret", {"cfg": "password=hunterhunter"}, ["hunterhunter"]),
    Case("gitleaks#1336 base64 with / and +", {"cfg": "secret=ab+/cd==x9"}, ["ab+/cd==x9"]),
    Case(
        "gitleaks jwt-base64",
        {"blob": "ZXlKaGJHY2lPaUpJVXpJMU5pSjkuZXlKemRXSWlPaUl4TWpNMElu"},
        ["ZXlKaGJHY2lPaUpJVXpJMU5pSjkuZXlKemRXSWlPaUl4TWpNMElu"],
    ),
    # trufflehog.
    Case("trufflehog#4527 postgres URI", {"db": "postgres://app:tp9@db:5432/x"}, ["tp9"], ["@db:5432/x"]),
    Case("trufflehog#3576 SQL Server Password=", {"c": "Data Source=h;Password=ss2;"}, ["ss2"]),
    Case(
        "trufflehog#3686 two URIs in HTML",
        {"html": '<a href="https://u:h1x@a.com">a</a><a href="https://v:h2x@b.com">b</a>'},
        ["h1x", "h2x"],
        ["@a.com", "@b.com"],
    ),
    Case("trufflehog#678 plain assignment", {"code": '$password = "tf6";'}, ["tf6"]),
    Case("trufflehog#894 placeholders stay readable", {"c": "password=${DB_PASSWORD}"}, [], ["${DB_PASSWORD}"]),
    # OpenTelemetry redaction processor: non-string values never matched (#37590-#37592).
    Case("otel#37590 int under secret key", {"pin": 4321}, ["4321"]),
    Case("otel#37591 array under secret key", {"secrets": ["ar1", "ar2"]}, ["ar1", "ar2"]),
    # Rails ParameterFilter.
    Case("rails#37428 integer keys", {1: "one", "password": "ri1"}, ["ri1"], ["one"]),
    Case(
        "rails defaults miss x-api-key, api-key, passphrase, pwd",
        {"x-api-key": "r1", "api-key": "r2", "passphrase": "r3", "pwd": "r4"},
        ["r1", "r2", "r3", "r4"],
    ),
    Case("rails over-masks footprint, classname", {"footprint": "fp", "classname": "cn"}, [], ["fp", "cn"]),
    # Django SafeExceptionReporterFilter over-masks by substring.
    Case(
        "django over-masks monkey, keyboard, author, bypass, compass",
        {"monkey": "m", "keyboard": "k", "author": "a", "bypass": "b", "compass": "c"},
        [],
        ['"monkey": "m"', '"keyboard": "k"', '"author": "a"', '"bypass": "b"', '"compass": "c"'],
    ),
    # Community structlog processors.
    Case("kubeflow/mcp-server#159 tokenizer", {"tokenizer": "cl100k_base"}, [], ["cl100k_base"]),
    Case("cds-snc/sre-bot#1262 not recursive", {"a": {"b": {"c": {"token": "nr1"}}}}, ["nr1"]),
    # The legacy redact_dict.
    Case(
        "legacy: config_changed sibling",
        {"key": "llm.api_key", "old_value": "sk-o1d", "new_value": "sk-n3w"},
        ["sk-o1d", "sk-n3w"],
        ["llm.api_key"],
    ),
    Case(
        "legacy: token in free text",
        {"output": "cloned with ghp_" + "Z9" * 18 + " ok"},
        ["ghp_" + "Z9" * 18],
        ["cloned with", " ok"],
    ),
    Case("legacy: over-masked counters", {"max_tokens": 300, "prompt_tokens": 12}, [], ['"max_tokens": 300']),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.source)
def test_documented_bypasses_are_closed(case: Case) -> None:
    text = json.dumps(redact(case.data), default=repr)
    for secret in case.gone:
        assert secret not in text, f"{case.source}: {secret!r} survived in {text}"
    for readable in case.kept:
        assert readable in text, f"{case.source}: {readable!r} was lost from {text}"
