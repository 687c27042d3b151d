"""`from auditbus.redaction import redact_dict`: the legacy `redaction` module's names."""

from __future__ import annotations

from ._native import REDACTED, redact_dict

__all__ = ["REDACTED", "redact_dict"]
