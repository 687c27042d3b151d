"""Redaction of a ~50-key nested audit payload: auditbus against the legacy and the Sentry SDK.

The payload is the one of research/redaction.md section 6.3. Before timing,
`check_outputs()` asserts what each implementation catches: auditbus masks
the `config_changed` record and the URL password, which both others miss.
"""

from __future__ import annotations

import json
from typing import Any

import auditbus
from baseline import legacy_module
from harness import Case
from sentry_sdk.scrubber import EventScrubber


def make_payload() -> dict[str, Any]:
    """50 keys in total (counting keys at every level), a few secrets planted."""
    return {
        "event": "config_changed",
        "actor": "alice",
        "actor_id": 42,
        "ip": "10.0.0.1",
        "ts": 1700000000.5,
        "request_id": "req-123",
        "password": "hunter2",
        "api_key": "AKIAABCDEFGHIJKLMNOP",
        "authorization": "Bearer abc.def.ghi",
        "note": "rotated creds",
        "success": True,
        "count": 3,
        "tags": ["a", "b", "c"],
        "source": "cli",
        "version": "1.2.3",
        "env": "prod",
        "config": {
            "name": "db",
            "host": "db.internal",
            "port": 5432,
            "user": "svc",
            "secret": "s3cr3t",
            "timeout": 30,
            "url": "postgres://svc:pw@db.internal/app",
            "pool": 10,
            "ssl": True,
            "token": "tok_123",
        },
        "user": {"id": 7, "email": "a@example.com", "name": "Alice", "session": "sess-abc", "role": "admin"},
        "changes": [
            {"field": "smtp_password", "old": "x-old-smtp", "new": "y-new-smtp", "by": "alice", "at": 1},
            {"field": "retries", "old": 1, "new": 2, "by": "alice", "at": 2},
            {"field": "webhook", "old": "u1", "new": "u2", "by": "bob", "at": 3},
        ],
        "meta": None,
    }


# Secrets that only a name-in-a-sibling rule or a value-shape rule can find.
MISSED_BY_KEY_SCRUBBERS = ("x-old-smtp", "y-new-smtp", ":pw@")


def _text(value: Any) -> str:
    return json.dumps(value, default=str)


def check_outputs(legacy_redact: Any, sentry_scrub: Any) -> None:
    """auditbus catches what both others miss, and what they catch."""
    ours = _text(auditbus.redact_dict(make_payload()))
    for secret in ("hunter2", "AKIAABCDEFGHIJKLMNOP", "abc.def.ghi", "s3cr3t", "tok_123", "sess-abc"):
        assert secret not in ours, secret
    for secret in MISSED_BY_KEY_SCRUBBERS:
        assert secret not in ours, secret
    for readable in ('"retries"', '"webhook"', "db.internal", "svc"):
        assert readable in ours, readable
    theirs = {"legacy": _text(legacy_redact(make_payload())), "sentry": _text(sentry_scrub(make_payload()))}
    for name, text in theirs.items():
        missed = [s for s in MISSED_BY_KEY_SCRUBBERS if s in text]
        assert missed, f"{name} now catches {MISSED_BY_KEY_SCRUBBERS}; update the benchmark's claim"


def cases() -> list[Case]:
    legacy = legacy_module()
    scrubber = EventScrubber(recursive=True)

    def sentry_scrub(payload: dict[str, Any]) -> dict[str, Any]:
        scrubber.scrub_dict(payload)  # in place
        return payload

    check_outputs(legacy.redact_dict, sentry_scrub)
    payload = make_payload()
    # Sentry mutates in place; scrubbing the same dict again does the same work
    # (it is idempotent), as in the research measurement.
    sentry_payload = make_payload()

    return [
        Case(
            "redact_dict(~50-key nested payload, 8 secrets)",
            "auditbus",
            {
                "auditbus": lambda: auditbus.redact_dict(payload),
                "legacy redact_dict": lambda: legacy.redact_dict(payload),
                "sentry EventScrubber(recursive=True)": lambda: scrubber.scrub_dict(sentry_payload),
            },
            targets={"legacy redact_dict": 10, "sentry EventScrubber(recursive=True)": 5},
        )
    ]
