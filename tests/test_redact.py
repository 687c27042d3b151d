"""auditbus.redact / redact_dict / Redactor: one test per rule and per tricky input.

The numbered comments refer to section 5 of research/redaction.md (tricky inputs).
"""

from __future__ import annotations

import collections
import copy
import datetime
import decimal
import enum
import json
import subprocess
import sys
import threading
import types
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import auditbus
import pytest
from auditbus import REDACTED, Redactor, redact, redact_dict

M = REDACTED
GHP = "ghp_" + "a1B2" * 9
AKIA = "AKIAIOSFODNN7EXAMPLE"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


def flat(value: Any) -> str:
    """Everything in a redacted value as one text, to search for leaks."""
    return json.dumps(value, default=repr, ensure_ascii=False)


# --- the public surface ------------------------------------------------------


def test_mask_is_the_legacy_fixed_string() -> None:
    assert REDACTED == "***REDACTED***"
    assert auditbus.REDACTED is REDACTED


def test_redact_dict_returns_a_new_dict_and_leaves_the_input_untouched() -> None:  # 9
    data = {"password": "p", "nested": {"token": "t", "items": [{"api_key": "k"}]}, "ok": [1, 2]}
    before = copy.deepcopy(data)
    out = redact_dict(data)
    assert data == before
    assert out is not data
    assert out["nested"] is not data["nested"]
    assert out["ok"] is not data["ok"]
    assert out == {"password": M, "nested": {"token": M, "items": [{"api_key": M}]}, "ok": [1, 2]}
    assert list(out) == list(data)


def test_non_json_leaves_are_kept_as_the_same_objects() -> None:  # 20
    when = datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)
    amount = decimal.Decimal("1.5")
    gen = (i for i in range(3))
    out = redact_dict({"when": when, "amount": amount, "gen": gen, "big": 10**40, "nan": float("nan")})
    assert out["when"] is when
    assert out["amount"] is amount
    assert out["gen"] is gen
    assert next(gen) == 0  # 8: not consumed
    assert out["big"] == 10**40
    assert out["nan"] != out["nan"]


def test_tuples_become_lists_as_in_the_legacy() -> None:  # 6
    assert redact_dict({"t": (1, {"password": "x"})}) == {"t": [1, {"password": M}]}


def test_redact_accepts_any_value() -> None:
    assert redact("plain") == "plain"
    assert redact(3) == 3
    assert redact(None) is None
    assert redact([{"token": "t"}]) == [{"token": M}]
    assert redact(f"key {GHP} here") == f"key {M} here"


def test_redact_dict_rejects_non_mappings_naming_the_type_only() -> None:  # 31
    with pytest.raises(TypeError, match=r"expects a dict \(or any Mapping\), got list") as info:
        redact_dict(["hunter2"])  # type: ignore[arg-type]
    assert "hunter2" not in str(info.value)


def test_redactor_configuration() -> None:  # 34
    r = Redactor(extra_keys=["employee_no"], safe_keys=["session_id"], mask="[Filtered]")
    assert r.redact({"EmployeeNo": 7, "session_id": "s1", "password": "p"}) == {
        "EmployeeNo": "[Filtered]",
        "session_id": "s1",
        "password": "[Filtered]",
    }
    assert r.mask == "[Filtered]"
    assert r.patterns is True
    assert r.extra_keys == ["employee_no"]
    assert r.safe_keys == ["session_id"]
    assert repr(r) == "Redactor(extra_keys=['employee_no'], safe_keys=['session_id'], patterns=True, mask='[Filtered]')"


def test_redactor_defaults_match_the_module_functions() -> None:
    data = {"password": "p", "note": f"t={GHP}", "changes": [{"key": "db.password", "new": "x"}]}
    assert Redactor().redact_dict(data) == redact_dict(data)
    assert Redactor().redact(data) == redact(data)


def test_redactor_without_patterns_keeps_key_rules() -> None:
    r = Redactor(patterns=False)
    assert r.redact({"password": "p", "note": f"t {GHP}"}) == {"password": M, "note": f"t {GHP}"}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"extra_keys": "password"}, TypeError, "extra_keys must be an iterable of key names"),
        ({"safe_keys": [1]}, TypeError, "safe_keys must be an iterable of key names"),
        ({"extra_keys": ["--"]}, auditbus.ValidationError, "extra_keys: '--' has no letters or digits"),
        ({"mask": ""}, auditbus.ValidationError, "mask: must be a non-empty string"),
        ({"mask": "x" * 300}, auditbus.ValidationError, "at most 256 characters"),
        ({"mask": 5}, TypeError, "mask must be a str, such as '\\[Filtered\\]', got int"),
        ({"mask": None}, TypeError, "mask must be a str, such as '\\[Filtered\\]', got NoneType"),
        ({"mask": "x\udcff"}, auditbus.ValidationError, "mask: must be encodable as UTF-8"),
        ({"patterns": 1}, TypeError, "patterns must be True or False, got int 1"),
        ({"patterns": "no"}, TypeError, "patterns must be True or False, got str 'no'"),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Redactor(**kwargs)


@pytest.mark.parametrize(("extra", "safe"), [("employee_no", "employee_no"), ("employee-no", "EmployeeNo")])
def test_a_name_both_secret_and_safe_is_rejected(extra: str, safe: str) -> None:
    # Silently letting the safe list win would store a value the caller asked to mask.
    with pytest.raises(auditbus.ValidationError, match=f"safe_keys: '{safe}' is also in extra_keys as '{extra}'"):
        Redactor(extra_keys=[extra], safe_keys=[safe])


def test_a_safe_name_may_be_a_longer_form_of_a_secret_one() -> None:
    r = Redactor(extra_keys=["session"], safe_keys=["session_timeout"])
    assert r.redact({"session_timeout": 30, "user_session": "s"}) == {"session_timeout": 30, "user_session": M}


def test_a_safe_name_turns_off_only_the_key_rule() -> None:
    # Value shapes are still masked under a safe name, and a secret nested inside it too;
    # the name is also safe where it appears as `name=value` in text.
    r = Redactor(safe_keys=["token", "password"])
    assert r.redact(
        {
            "token": "Bearer abcdefghijklmnop1234",
            "password": "https://u:hunter2@h/x",
            "TOKEN": GHP,
            "Token": {"secret": "s"},
            "note": "password=plain",
        }
    ) == {
        "token": f"Bearer {M}",
        "password": f"https://u:{M}@h/x",
        "TOKEN": M,
        "Token": {"secret": M},
        "note": "password=plain",
    }
    # A safe name also matches the trailing words of a longer key, not its leading ones.
    assert r.redact({"token": "plain", "access_token": "a", "token_value": "v"}) == {
        "token": "plain",
        "access_token": "a",
        "token_value": M,
    }


def test_extra_names_match_inside_longer_keys() -> None:
    r = Redactor(extra_keys=["id"])
    data = {"id": 1, "user_id": 2, "width": 3, "name": "n"}
    assert r.redact(data) == {"id": M, "user_id": M, "width": M, "name": "n"}


def test_without_patterns_key_rules_still_reach_json_text_and_records() -> None:
    r = Redactor(patterns=False)
    data = {
        "j": '{"password": "x"}',
        "changes": [{"key": "db.password", "new": "x"}],
        "pairs": [["token", "v"]],
        "note": "Bearer abcdefghijklmnop1234 https://u:pw@h/ password=x",
    }
    assert r.redact(data) == {
        "j": f'{{"password":"{M}"}}',
        "changes": [{"key": "db.password", "new": M}],
        "pairs": [["token", M]],
        "note": data["note"],
    }


def test_a_huge_user_list_builds() -> None:  # 34
    r = Redactor(extra_keys=[f"field_{i}" for i in range(20_000)])
    assert r.redact({"x_field_19999": "v"}) == {"x_field_19999": M}


def test_custom_mask_is_idempotent_even_with_spaces() -> None:  # 10
    r = Redactor(mask="[secret removed]")
    once = r.redact({"note": "password=hunter2 and https://u:p@h/x", "token": "t"})
    assert once == {"note": "password=[secret removed] and https://u:[secret removed]@h/x", "token": "[secret removed]"}
    assert r.redact(once) == once


# --- key names -----------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "Password",
        "pAsSwOrD",  # 12
        "APIKey",
        "ApiKEY",
        "apiKey",
        "API_KEY",
        "x-api-key",  # 13
        "x_api_key",
        "X-Api-Key",
        "x.api.key",
        "x api key",
        "xApiKey",
        "api-key",
        "PASS_WORD",
        "pass word",
        "user[password]",
        "card[number]",
        "HTTP_AUTHORIZATION",
        "db.password",
        "access_token",  # sentry-python#7542
        "client_secret",
        "refresh_token",
        "auth_token",
        "secret_key",
        "passphrase",
        "pwd",
        "DB_PWD",
        "pin",
        "otp",
        "ssn",
        "cvv",
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "PHPSESSID",
        "jsessionid",
        "csrftoken",
        "sentry_dsn",
        "connection_string",
        "private_key",
        "aws_secret_access_key",
        "password_hint",  # 17: a hint can disclose the password
        "slack_webhook_url",
        "sudo",
        "symfony",
        "id_rsa",
        "redis.requirepass",  # Redis's own setting names
        "masterauth",
        "AZURE_DEVOPS_EXT_PAT",  # a personal access token
        "GITHUB_PAT",
        "gitlabPat",
        "SMSESSION",  # session cookies
        "SSESS0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "SESS0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "_gh_sess",
        "BUNDLE_GEMS__CONTRIBSYS__COM",  # Bundler's gem server credentials
        "BUNDLE_RUBYGEMS__PKG__GITHUB__COM",
        "security_code",  # a card's CVV, by another name
        "card_security_code",
        "2fa_code",  # codes that prove who a user is
        "twoFactorCode",
        "reset_code",
    ],
)
def test_secret_key_names_are_masked(key: str) -> None:
    assert redact_dict({key: "s3cr3t"}) == {key: M}


def test_a_routing_key_named_for_pagerduty_is_masked_and_amqps_stays() -> None:
    # PagerDuty's Events API routing key opens incidents; AMQP's routing key is an address.
    for key in ["PAGERDUTY_ROUTING_KEY", "pagerduty_routing_key", "pd_routing_key", "PD_ROUTING_KEY"]:
        assert redact_dict({key: "R0123456789abcdef0123456789abcde"}) == {key: M}, key
        assert redact(f"{key}=R0123456789abcdef") == f"{key}={M}", key
    for key in ["routing_key", "amqp_routing_key", "pdf_routing_key", "RoutingKey"]:
        assert redact_dict({key: "orders.created"}) == {key: "orders.created"}, key


def test_a_whole_token_under_a_prefix_name_is_still_masked_by_shape() -> None:
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    assert token not in str(redact_dict({"token_prefix": token}))


@pytest.mark.parametrize(
    "key",
    [
        "pass\u00adword",  # 14: soft hyphen
        "pass\u200bword",  # ZWSP
        "pass\u200dword",  # ZWJ
        "\ufeffpassword",  # BOM
        "pass\u2060word",  # word joiner
        "pass\u202eword",  # RTL override
        "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44",  # fullwidth "password"
        "p\u0430ssword",  # Cyrillic small a (U+0430)
        "pa\u0301ssword",  # combining accent
        "paßwort",  # casefold -> passwort
        "PASSWORD\u0130",  # dotted capital I
        " password\t",  # surrounding whitespace
        "pass\nword",
    ],
)
def test_unicode_tricks_in_keys_do_not_bypass(key: str) -> None:
    assert redact_dict({key: "s3cr3t"}) == {key: M}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_tokens", 300),  # 17
        ("prompt_tokens", 12),
        ("completion_tokens", 5),
        ("llm.max_tokens", 300),
        ("token_count", 4),
        ("token_prefix", "ghp_ab"),
        ("tokenizer", "cl100k"),
        ("token_type", "bearer"),
        ("author", "alice"),
        ("authority", "ca"),
        ("keyboard", "us"),
        ("monkey", "george"),
        ("public_key", "ssh-ed25519 AAAA"),
        ("primary_key", "id"),
        ("key_id", "k-1"),
        ("session_timeout", 30),
        ("password_policy", "strict"),
        ("password_updated_at", "2024-01-01"),
        ("passwordless", "enabled"),
        ("footprint", "small"),
        ("classname", "Foo"),
        ("bypass", "none"),
        ("compass", "north"),
        ("is_encrypted", "yes"),
        ("email_verified", "yes"),
        ("key", "llm.temperature"),
        ("spinner", "dots"),
        ("pat", "Pat Smith"),
        ("pat_id", 7),
        ("exclude_pat", "*.tmp"),
        ("file_pat", "*.log"),
        ("assessment", "pass"),
        ("sessions", 4),
        ("BUNDLE_BUILD__NOKOGIRI", "--use-system-libraries"),
        ("BUNDLE_PATH", "vendor/bundle"),
        ("BUNDLE_WITHOUT", "development:test"),
        ("preset_code", "P-7"),
    ],
)
def test_lookalike_keys_stay_readable(key: str, value: Any) -> None:
    assert redact_dict({key: value}) == {key: value}


@pytest.mark.parametrize("value", [None, True, False])
def test_none_and_booleans_under_secret_keys_stay_visible(value: Any) -> None:  # 21
    assert redact_dict({"password": value, "password_set": value, "has_password": value}) == {
        "password": value,
        "password_set": value,
        "has_password": value,
    }


@pytest.mark.parametrize("value", [1234, 12.5, "", "x", b"bytes", {"a": 1}, ["x"], ("x",), {"x"}, 10**30], ids=repr)
def test_everything_else_under_a_secret_key_is_masked_whole(value: Any) -> None:  # 21, 30
    assert redact_dict({"pin": value, "token": value}) == {"pin": M, "token": M}


def test_sensitive_parent_masks_the_whole_object_and_nested_secrets_are_still_found() -> None:  # 30
    data = {"credentials": {"username": "u", "password": "p"}, "config": {"db": {"password": "p"}}}
    assert redact_dict(data) == {"credentials": M, "config": {"db": {"password": M}}}


def test_keys_colliding_after_normalisation_are_all_kept_and_masked() -> None:  # 16
    assert redact_dict({"password": "a", "PASSWORD": "b", "pass_word": "c"}) == {
        "password": M,
        "PASSWORD": M,
        "pass_word": M,
    }


class Color(enum.Enum):
    SECRET = "client_secret"


class StrKey(str, enum.Enum):
    TOKEN = "api_token"


def test_non_string_keys_never_crash() -> None:  # 11
    data: dict[Any, Any] = {
        1: "one",
        2.5: "x",
        None: "n",
        ("password",): "tuple-key",
        frozenset({"a"}): "f",
        b"password": "bytes-key",
        Color.SECRET: "enum-key",
        StrKey.TOKEN: "str-enum-key",
    }
    out = redact_dict(data)
    assert list(out) == list(data)
    assert out[1] == "one"
    assert out[2.5] == "x"
    assert out[None] == "n"
    assert redact_dict({True: "t"}) == {True: "t"}
    assert out[frozenset({"a"})] == "f"
    # Keys are judged by the text the audit row will show for them.
    assert out[("password",)] == M
    assert out[b"password"] == M
    assert out[Color.SECRET] == M
    assert out[StrKey.TOKEN] == M


class Unprintable:
    """A key whose text cannot be read: its `str()` raises."""

    def __str__(self) -> str:
        raise ValueError("no text")


@pytest.mark.parametrize("key", [Unprintable(), (Unprintable(),), ("note", Unprintable())], ids=repr)
def test_a_key_whose_text_cannot_be_read_has_its_value_masked(key: Any) -> None:
    # Nothing says such a key is not `password`: its value is masked, the
    # values of the keys that can be read are not.
    out = redact_dict({key: "hunter2", "note": "plain", "count": None})
    assert list(out.values()) == [M, "plain", None]
    assert next(iter(out)) is key


def test_keys_that_contain_a_secret_are_rewritten() -> None:  # 18
    out = redact_dict({"password=hunter2": 1, f"Bearer {GHP}": 2})
    assert flat(out).count("hunter2") == 0
    assert GHP not in flat(out)
    # The key's own text names a secret too, so its value goes as well.
    assert out == {f"password={M}": M, f"Bearer {M}": M}


def test_rewritten_keys_that_collide_keep_both_entries() -> None:
    out = redact_dict({"password=a": 1, "password=b": 2})
    assert out == {f"password={M}": M, f"password={M} #2": M}
    assert redact_dict(out) == out


def test_empty_and_huge_keys() -> None:  # 19
    assert redact_dict({"": "x"}) == {"": "x"}
    long_key = "a" * 1_000_000 + "_password"
    assert redact_dict({long_key: "x"}) == {long_key: M}


def test_lone_surrogates_in_keys_and_values() -> None:  # 15
    assert redact_dict({"pass\udcffword": "x"}) == {"pass\udcffword": M}
    plain = "caf\udce9"
    assert redact(plain) is plain
    out = redact({"note": "\udcff password=hunter2"})
    assert "hunter2" not in out["note"]
    assert out["note"].endswith(f"password={M}")


# --- sibling names ----------------------------------------------------------------


def test_config_changed_records_mask_old_and_new_values() -> None:  # 28
    data = {
        "changes": [
            {"key": "llm.api_key", "old_value": "sk-old", "new_value": "sk-new"},
            {"field": "smtp_password", "old": "a", "new": "b"},
            {"setting": "db.password", "from": "a", "to": "b", "before": 1, "after": 2},
            {"name": "retries", "old": 1, "new": 2},
            {"key": "llm.max_tokens", "old_value": 100, "new_value": 200},
        ]
    }
    assert redact_dict(data) == {
        "changes": [
            {"key": "llm.api_key", "old_value": M, "new_value": M},
            {"field": "smtp_password", "old": M, "new": M},
            {"setting": "db.password", "from": M, "to": M, "before": M, "after": M},
            {"name": "retries", "old": 1, "new": 2},
            {"key": "llm.max_tokens", "old_value": 100, "new_value": 200},
        ]
    }


def test_sibling_rule_keeps_none_and_booleans() -> None:
    assert redact_dict({"key": "db.password", "old_value": None, "new_value": True}) == {
        "key": "db.password",
        "old_value": None,
        "new_value": True,
    }


def test_sibling_rule_does_not_depend_on_entry_order() -> None:
    assert redact_dict({"new_value": "x", "old_value": "y", "key": "api_key"}) == {
        "new_value": M,
        "old_value": M,
        "key": "api_key",
    }


SIBLING_CASES = [
    # a later name field names the secret
    ({"name": "retries", "path": "db.password", "value": "x"}, {"name": "retries", "path": "db.password", "value": M}),
    # more name fields than are held back for later
    (
        {"name": "a", "key": "b", "field": "api_key", "value": "x"},
        {"name": "a", "key": "b", "field": "api_key", "value": M},
    ),
    # names after the value they name
    ({"value": "x", "name": "retries", "key": "password"}, {"value": M, "name": "retries", "key": "password"}),
    # a name with no value field beside it: nothing to mask
    ({"path": "db.password", "lines": 3}, {"path": "db.password", "lines": 3}),
    ({"name": "retries", "value": "x", "field": "token"}, {"name": "retries", "value": M, "field": "token"}),
]


@pytest.mark.parametrize(("data", "expected"), SIBLING_CASES)
def test_sibling_names_in_any_number_and_position(data: dict[str, object], expected: dict[str, object]) -> None:
    assert redact_dict(data) == expected


def test_kubernetes_env_and_har_headers() -> None:  # 29
    data = {
        "env": [{"name": "DB_PASSWORD", "value": "x"}, {"name": "HOME", "value": "/root"}],
        "headers": [{"name": "Authorization", "value": "Bearer x"}, {"name": "Accept", "value": "*/*"}],
    }
    assert redact_dict(data) == {
        "env": [{"name": "DB_PASSWORD", "value": M}, {"name": "HOME", "value": "/root"}],
        "headers": [{"name": "Authorization", "value": M}, {"name": "Accept", "value": "*/*"}],
    }


_RSA_JWK = {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": "0vx7", "e": "AQAB"}
_RSA_PRIVATE = {"d": "X4cT", "p": "83i-", "q": "3dfO", "dp": "G4sP", "dq": "s9lA", "qi": "GyM_"}
_EC_JWK = {"kty": "EC", "crv": "P-256", "x": "f83O", "y": "x_FE"}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({**_RSA_JWK, **_RSA_PRIVATE}, {**_RSA_JWK, **dict.fromkeys(_RSA_PRIVATE, M)}),
        # a thumbprint's sorted order puts `d` before `kty`
        ({"crv": "P-256", "d": "870M", "kty": "EC", "x": "f83O", "y": "x_FE"}, {**_EC_JWK, "d": M}),
        ({"kty": "oct", "k": "GawgguFy", "alg": "HS256"}, {"kty": "oct", "k": M, "alg": "HS256"}),
        (
            {"kty": "OKP", "crv": "Ed25519", "x": "11qY", "d": "nWGx"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qY", "d": M},
        ),
        ({**_RSA_JWK, "oth": [{"r": "1", "d": "2", "t": "3"}]}, {**_RSA_JWK, "oth": M}),
        # a public key stays whole
        (_EC_JWK, _EC_JWK),
    ],
)
def test_a_json_web_key_has_its_private_members_masked(data: dict[str, Any], expected: dict[str, Any]) -> None:
    assert redact_dict({"jwk": data}) == {"jwk": expected}
    assert redact_dict({"jwks": {"keys": [_EC_JWK, data]}}) == {"jwks": {"keys": [_EC_JWK, expected]}}
    assert json.loads(redact_dict({"body": json.dumps({"keys": [data]})})["body"]) == {"keys": [expected]}


def test_a_json_web_key_in_free_text_has_its_private_members_masked() -> None:
    text = 'loaded key {"crv": "P-256", "d": "870MB6gf", "kty": "EC", "x": "f83O"} at start'
    assert redact_dict({"log": text}) == {"log": text.replace("870MB6gf", M)}
    escaped = json.dumps({"log": "jwk=" + json.dumps({"kty": "oct", "k": "GawgguFy"})})
    assert "GawgguFy" not in flat(redact_dict({"wrapped": escaped}))


def test_one_letter_members_outside_a_json_web_key_stay_readable() -> None:
    data = {"d": "2024-05-01", "p": 0.05, "q": "search words", "k": 3, "dp": 12, "oth": "x", "kty_hint": "RSA"}
    assert redact_dict(data) == data
    assert redact_dict({"point": {"kty": "RSA", "D": "x", "K": "y"}}) == {"point": {"kty": "RSA", "D": "x", "K": "y"}}
    text = '{"q": "kty", "k": 3} q=1 d: 2 ktype: x'
    assert redact_dict({"log": text}) == {"log": text}
    assert Redactor(safe_keys=["d"]).redact({"kty": "EC", "d": "x"}) == {"kty": "EC", "d": "x"}


def test_aws_parameter_and_option_lists() -> None:
    # boto3's `create_stack(Parameters=...)`, RDS parameter groups and
    # Elastic Beanstalk option settings name the value in a sibling field.
    data = {
        "Parameters": [
            {"ParameterKey": "DBPassword", "ParameterValue": "hunter2"},
            {"ParameterKey": "Region", "ParameterValue": "eu-west-1"},
        ],
        "rds": [{"ParameterName": "master_password", "ParameterValue": "hunter3"}],
        "OptionSettings": [
            {
                "Namespace": "aws:elasticbeanstalk:application:environment",
                "OptionName": "API_TOKEN",
                "Value": "hunter4",
            },
            {"Namespace": "aws:autoscaling:asg", "OptionName": "MinSize", "Value": "2"},
        ],
    }
    assert redact_dict(data) == {
        "Parameters": [
            {"ParameterKey": "DBPassword", "ParameterValue": M},
            {"ParameterKey": "Region", "ParameterValue": "eu-west-1"},
        ],
        "rds": [{"ParameterName": "master_password", "ParameterValue": M}],
        "OptionSettings": [
            {"Namespace": "aws:elasticbeanstalk:application:environment", "OptionName": "API_TOKEN", "Value": M},
            {"Namespace": "aws:autoscaling:asg", "OptionName": "MinSize", "Value": "2"},
        ],
    }


def test_a_kubernetes_secret_has_its_data_masked() -> None:
    # A Secret's values are only base64 or plain text, under names of any kind.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "data": {"url": "cG9zdGdyZXM6Ly91OnBAaC9k"},
        "stringData": {"license": "LIC-1234"},
    }
    masked = {**secret, "data": M, "stringData": M}
    assert redact_dict({"manifest": secret}) == {"manifest": masked}
    # kubectl's JSON sorts `data` before `kind`.
    ordered = dict(sorted(secret.items()))
    assert redact_dict({"manifest": ordered}) == {"manifest": dict(sorted(masked.items()))}
    assert json.loads(redact_dict({"body": json.dumps(ordered)})["body"]) == masked
    # Other kinds, and `data` beside another `kind`, stay readable.
    config_map = {"kind": "ConfigMap", "data": {"theme": "dark"}}
    assert redact_dict({"manifest": config_map, "export": {"kind": "csv", "data": "a,b"}}) == {
        "manifest": config_map,
        "export": {"kind": "csv", "data": "a,b"},
    }
    assert Redactor(safe_keys=["data"]).redact(secret) == secret


def test_a_kubernetes_secret_as_yaml_text_has_its_data_masked() -> None:
    # `kubectl get secret -o yaml`, a manifest in a log line: every entry
    # under `data` and `stringData`, whatever its name, and a block value's lines.
    manifest = (
        "apiVersion: v1\ndata:\n  tls.key: LS0tLS1CRUdJTg==\n  url: cG9zdGdyZXM6Ly91OnBAaC9k\n"
        "kind: Secret\nmetadata:\n  name: db\nstringData:\n  conn: Ky1yaml\n  license: |\n    LIC-Ky2\n"
        "type: Opaque\n"
    )
    masked = redact(manifest)
    for secret in ["LS0tLS1CRUdJTg==", "cG9zdGdyZXM6Ly91OnBAaC9k", "Ky1yaml", "LIC-Ky2"]:
        assert secret not in masked
    assert masked == (
        f"apiVersion: v1\ndata:\n  tls.key: {M}\n  url: {M}\n"
        f"kind: Secret\nmetadata:\n  name: db\nstringData:\n  conn: {M}\n  license: |\n    {M}\n"
        "type: Opaque\n"
    )
    # `kubectl apply`'s copy of the manifest, as a block or inline.
    applied = (
        "apiVersion: v1\ndata:\n  url: Ky5url\nkind: Secret\nmetadata:\n  annotations:\n"
        "    kubectl.kubernetes.io/last-applied-configuration: |\n"
        '      {"apiVersion":"v1","data":{"url":"Ky6url"},"kind":"Secret","metadata":{"name":"db"}}\n'
        "  name: db\n"
    )
    assert redact(applied) == (
        f"apiVersion: v1\ndata:\n  url: {M}\nkind: Secret\nmetadata:\n  annotations:\n"
        f"    kubectl.kubernetes.io/last-applied-configuration: |\n      {M}\n  name: db\n"
    )
    inline = (
        "kind: Secret\nmetadata:\n  annotations:\n"
        '    kubectl.kubernetes.io/last-applied-configuration: \'{"data":{"u":"Ky7"}}\'\n'
    )
    assert "Ky7" not in redact(inline)
    # In a stream of documents, only the Secret's; a ConfigMap keeps its data.
    stream = "kind: ConfigMap\ndata:\n  theme: dark\n---\nkind: Secret\ndata:\n  url: Ky3url\n"
    assert redact(stream) == f"kind: ConfigMap\ndata:\n  theme: dark\n---\nkind: Secret\ndata:\n  url: {M}\n"
    # A list item's Secret.
    listed = "items:\n- apiVersion: v1\n  data:\n    url: Ky4url\n  kind: Secret\n"
    assert "Ky4url" not in redact(listed)
    # A secret's name in prose and another kind stay readable.
    for text in ["kind: Deployment\ndata:\n  replicas: 3\nsecret: none\n", "created secret db; kind: Secret\n"]:
        assert redact(text) == text


def test_a_kubernetes_list_as_yaml_text_masks_only_its_secrets_data() -> None:
    # `kubectl get cm,secret -o yaml`: one List; each item is judged by its own kind.
    listed = (
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: ui\n  data:\n    theme: dark\n"
        "- apiVersion: v1\n  kind: Secret\n  metadata:\n    name: db\n  data:\n    url: Kl1url\n"
        "  stringData:\n    note: |\n      Kl2 line\n"
        "- kind: ConfigMap\n  data:\n    color: blue\n"
        'metadata:\n  resourceVersion: ""\n'
    )
    out = redact(listed)
    assert out == listed.replace("Kl1url", M).replace("Kl2 line", M)
    nested = "kind: List\nitems:\n  - kind: Secret\n    data:\n      a: Kl3\n"
    nested += "  - kind: ConfigMap\n    data:\n      b: plain\n"
    assert redact(nested) == nested.replace("Kl3", M)


def test_pair_lists() -> None:  # 29
    data = {"headers": [["Authorization", "Bearer x"], ("X-Api-Key", "k"), ["Accept", "json"]]}
    assert redact_dict(data) == {"headers": [["Authorization", M], ["X-Api-Key", M], ["Accept", "json"]]}


class Setting(enum.Enum):
    API_KEY = "llm.api_key"
    RETRIES = "llm.retries"


def test_names_given_as_enum_members_or_bytes_are_judged_by_their_text() -> None:
    # The audit row stores an Enum member as its value and bytes as text, so
    # `{"key": Setting.API_KEY, "new_value": ...}` reads as a secret setting
    # there: redaction must judge the name the same way.
    data = {
        "change": {"key": Setting.API_KEY, "old_value": "hunter1", "new_value": "hunter2"},
        "plain": {"key": Setting.RETRIES, "new_value": 3},
        "headers": [(b"authorization", b"hunter3"), (Setting.API_KEY, "hunter4"), (b"accept", b"json")],
    }
    assert redact_dict(data) == {
        "change": {"key": Setting.API_KEY, "old_value": M, "new_value": M},
        "plain": {"key": Setting.RETRIES, "new_value": 3},
        "headers": [[b"authorization", M], [Setting.API_KEY, M], [b"accept", b"json"]],
    }


def test_a_lone_two_string_list_is_not_a_pair() -> None:
    assert redact_dict({"tags": ["password", "reset"]}) == {"tags": ["password", "reset"]}


def test_an_argument_list_has_the_value_after_a_secret_flag_masked() -> None:
    # `sys.argv` or a `subprocess` command logged as a list: the flag and
    # its value are two items, where the text shape sees `--password pw`.
    argv = ["pg_dump", "--password", "hunter2", "--host", "db", "-storepass", "pw2"]
    masked = ["pg_dump", "--password", M, "--host", "db", "-storepass", M]
    assert redact_dict({"argv": argv}) == {"argv": masked}
    assert redact_dict({"cmd": tuple(argv)}) == {"cmd": masked}
    assert Redactor(patterns=False).redact({"argv": argv}) == {"argv": masked}
    assert redact_dict({"body": json.dumps({"argv": argv})}) == {
        "body": json.dumps({"argv": masked}, separators=(",", ":"))
    }
    # A flag without a value, a placeholder, a non-secret flag and where a secret is kept stay.
    plain = ["app", "--password", "--verbose", "--token", "$TOKEN", "--max-tokens", "100", "--password-file", "/run/pw"]
    assert redact_dict({"argv": plain}) == {"argv": plain}


def test_an_argument_list_masks_the_short_flags_its_command_makes_secret() -> None:
    # The command, named anywhere in the list (by its path too), says which
    # short flags carry a secret; `-p 8080` elsewhere is a port.
    cases = [
        (["sshpass", "-p", "pw3", "ssh", "h"], ["sshpass", "-p", M, "ssh", "h"]),
        (["mysql", "-u", "root", "-pSecret", "db"], ["mysql", "-u", "root", f"-p{M}", "db"]),
        (["/usr/bin/curl", "-u", "user:pw4", "https://h/"], ["/usr/bin/curl", "-u", f"user:{M}", "https://h/"]),
        (["docker", "exec", "db", "mysqldump", "-ppw5"], ["docker", "exec", "db", "mysqldump", f"-p{M}"]),
        (["redis-cli", "-h", "r", "-a", "pw6"], ["redis-cli", "-h", "r", "-a", M]),
        (["ldapsearch", "-D", "cn=admin", "-w", "pw7"], ["ldapsearch", "-D", "cn=admin", "-w", M]),
        (["smbclient", "//h/s", "-U", "bob%pw8"], ["smbclient", "//h/s", "-U", f"bob%{M}"]),
        (["docker", "login", "-u", "bob", "-p", "pw9", "reg"], ["docker", "login", "-u", "bob", "-p", M, "reg"]),
        (["az", "login", "-u", "bob", "-p", "pw10"], ["az", "login", "-u", "bob", "-p", M]),
        (
            ["kubectl", "create", "secret", "generic", "x", "--from-literal=url=pw11", "--from-literal", "k=pw12"],
            ["kubectl", "create", "secret", "generic", "x", f"--from-literal=url={M}", "--from-literal", f"k={M}"],
        ),
    ]
    for argv, masked in cases:
        assert redact_dict({"argv": argv}) == {"argv": masked}, argv
        assert redact_dict({"argv": tuple(argv)}) == {"argv": masked}, argv
        assert redact_dict({"body": json.dumps({"argv": argv})}) == {
            "body": json.dumps({"argv": masked}, separators=(",", ":"))
        }, argv
    # Ports, a prompt for the password, a user without one and unknown commands stay.
    plain = [
        ["docker", "run", "-p", "8080:80", "img"],
        ["ssh", "-p", "2222", "host"],
        ["mysql", "-h", "db", "-P", "3306", "-p", "appdb"],
        ["curl", "-u", "bob", "https://h/"],
        ["mkdir", "-p", "/tmp/x"],
        ["sshpass", "-p", "$SSHPASS", "ssh", "h"],
        ["docker", "run", "-p", "8080:80", "--name", "login", "img"],
        ["kubectl", "create", "configmap", "ui", "--from-literal=theme=dark"],
    ]
    for argv in plain:
        assert redact_dict({"argv": argv}) == {"argv": argv}, argv


def test_an_argument_list_masks_the_secret_its_command_takes_as_a_positional_word() -> None:
    # No flag names these secrets: only their place after the command does.
    cases = [
        (["htpasswd", "-bc", "/etc/h", "bob", "pw1"], ["htpasswd", "-bc", "/etc/h", "bob", M]),
        (
            ["htpasswd", "-b", "-B", "-C", "10", "/etc/h", "bob", "pw2"],
            ["htpasswd", "-b", "-B", "-C", "10", "/etc/h", "bob", M],
        ),
        (["/usr/bin/htpasswd", "-nb", "bob", "pw3"], ["/usr/bin/htpasswd", "-nb", "bob", M]),
        (["net", "user", "bob", "pw4", "/add"], ["net", "user", "bob", M, "/add"]),
        (
            ["C:\\Windows\\System32\\net.exe", "USER", "bob", "/domain", "pw5"],
            ["C:\\Windows\\System32\\net.exe", "USER", "bob", "/domain", M],
        ),
        (["vault", "login", "s.abcdef0123456789"], ["vault", "login", M]),
        (["vault", "login", "-no-print", "pw6"], ["vault", "login", "-no-print", M]),
        (["rabbitmqctl", "-n", "r@h", "add_user", "bob", "pw7"], ["rabbitmqctl", "-n", "r@h", "add_user", "bob", M]),
        (["mc", "alias", "set", "s3", "https://h", "AK", "pw8"], ["mc", "alias", "set", "s3", "https://h", "AK", M]),
        (
            [
                "rclone",
                "config",
                "create",
                "r",
                "s3",
                "access_key_id",
                "AK",
                "secret_access_key",
                "pw9",
                "region",
                "eu",
            ],
            ["rclone", "config", "create", "r", "s3", "access_key_id", "AK", "secret_access_key", M, "region", "eu"],
        ),
        (["rclone", "config", "update", "r", "pass", "pw10"], ["rclone", "config", "update", "r", "pass", M]),
    ]
    for argv, masked in cases:
        assert redact_dict({"argv": argv}) == {"argv": masked}, argv
        assert redact_dict({"body": json.dumps({"argv": argv})}) == {
            "body": json.dumps({"argv": masked}, separators=(",", ":"))
        }, argv
    # Without batch mode `htpasswd` prompts; `*` prompts too; other subcommands and word lists stay.
    plain = [
        ["htpasswd", "-c", "/etc/h", "bob"],
        ["net", "user", "bob", "*", "/add"],
        ["net", "user", "bob"],
        ["net", "view", "h", "x"],
        ["tags", "net", "ops", "user", "bob", "alice"],
        ["vault", "kv", "get", "secret/app"],
        ["vault", "login", "-method=userpass", "username=bob"],
        ["rabbitmqctl", "list_users"],
        ["mc", "cp", "a", "b", "c", "d", "e"],
        ["rclone", "config", "create", "r", "s3", "region", "eu", "provider", "AWS"],
        ["rclone", "copy", "a", "b", "token", "c"],
    ]
    for argv in plain:
        assert redact_dict({"argv": argv}) == {"argv": argv}, argv


def test_an_argument_list_of_a_command_the_text_shapes_know_is_read_as_its_command_line() -> None:
    # The same command as text is masked; as `sys.argv` or a `subprocess` list it was not.
    cases = [
        (
            ["aws", "configure", "set", "aws_secret_access_key", "Cm1"],
            ["aws", "configure", "set", "aws_secret_access_key", M],
        ),
        (
            ["/usr/local/bin/aws", "ssm", "put-parameter", "--name", "n", "--value", "Cm2 x", "--type", "String"],
            ["/usr/local/bin/aws", "ssm", "put-parameter", "--name", "n", "--value", M, "--type", "String"],
        ),
        (["npm", "config", "set", "//r/:_authToken", "Cm3"], ["npm", "config", "set", "//r/:_authToken", M]),
        (["gh", "secret", "set", "X", "--body", "Cm4"], ["gh", "secret", "set", "X", "--body", M]),
        (["openssl", "enc", "-k", "Cm5", "-in", "a"], ["openssl", "enc", "-k", M, "-in", "a"]),
        (["dotnet", "user-secrets", "set", "Db:Password", "Cm6"], ["dotnet", "user-secrets", "set", "Db:Password", M]),
        (["net", "use", "\\\\h\\s", "Cm7", "/user:bob"], ["net", "use", "\\\\h\\s", M, "/user:bob"]),
        (["sqlplus", "bob/Cm8@db"], ["sqlplus", f"bob/{M}@db"]),
        (["snmpwalk", "-v2c", "-c", "Cm9", "h"], ["snmpwalk", "-v2c", "-c", M, "h"]),
        (["chpasswd", "<<<", "bob:Cn1"], ["chpasswd", "<<<", f"bob:{M}"]),
        (["fly", "secrets", "set", "A=Cn2", "B=Cn3"], ["fly", "secrets", "set", f"A={M}", f"B={M}"]),
    ]
    for argv, masked in cases:
        assert redact_dict({"argv": argv}) == {"argv": masked}, argv
        assert redact_dict({"argv": tuple(argv)}) == {"argv": masked}, argv
        assert redact_dict({"body": json.dumps({"argv": argv})}) == {
            "body": json.dumps({"argv": masked}, separators=(",", ":"))
        }, argv
    # Other subcommands, another first word and patterns=False keep the list as it was.
    plain = [
        ["echo", "hello", "world"],
        ["aws", "s3", "ls", "s3://b/k"],
        ["gh", "pr", "list", "--limit", "5"],
        ["net", "ops", "team"],
        ["tags", "aws", "configure", "set", "aws_secret_access_key", "x"],
    ]
    for argv in plain:
        assert redact_dict({"argv": argv}) == {"argv": argv}, argv
    argv = ["aws", "configure", "set", "aws_secret_access_key", "Cn4"]
    assert Redactor(patterns=False).redact({"argv": argv}) == {"argv": argv}


# --- value shapes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://u:p@h/x", f"https://u:{M}@h/x"),  # 23
        ("postgres://u:p@h:5432/db", f"postgres://u:{M}@h:5432/db"),
        ("mongodb+srv://u:p@cluster/", f"mongodb+srv://u:{M}@cluster/"),
        ("redis://:p@h", f"redis://:{M}@h"),
        ("//u:p@h", f"//u:{M}@h"),
        ("http://u:p%40ss@h", f"http://u:{M}@h"),
        ("http://u:p:a@ss#w@h/path", f"http://u:{M}@h/path"),
        ("http://u:p@[::1]:8080", f"http://u:{M}@[::1]:8080"),
        ("a https://u:p@h1 b https://v:q@h2 c", f"a https://u:{M}@h1 b https://v:{M}@h2 c"),
        (
            '<a href="https://u:p@h">x</a> <a href="https://v:q@k">',
            f'<a href="https://u:{M}@h">x</a> <a href="https://v:{M}@k">',
        ),
        ("https://u:${PASS}@h", f"https://u:{M}@h"),
        (
            "https://h/x?access_token=abc&X-Amz-Signature=def&page=2",
            f"https://h/x?access_token={M}&X-Amz-Signature={M}&page=2",
        ),
    ],
)
def test_credentials_in_urls_mask_only_the_secret(text: str, expected: str) -> None:
    assert redact({"url": text}) == {"url": expected}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("connect to admin:Sl1pw@db.internal:5432/app", f"connect to admin:{M}@db.internal:5432/app"),
        ("DATABASE=app:Sl2pw@db:5432", f"DATABASE=app:{M}@db:5432"),
        ("redis :Sl3pw@cache:6379 down", f"redis :{M}@cache:6379 down"),
        ('addr "u:p@ss@10.0.0.5:3306/x"', f'addr "u:{M}@10.0.0.5:3306/x"'),
        # No port, a path, an address or a URL's authority are other things.
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("ssh deploy@host:/srv/app", "ssh deploy@host:/srv/app"),
        ("ratio a:b@c in prose", "ratio a:b@c in prose"),
        ("mail bob@example.com:25 at 12:30", "mail bob@example.com:25 at 12:30"),
        ("postgres://u:p@h:5432/db", f"postgres://u:{M}@h:5432/db"),
    ],
)
def test_a_connection_string_without_a_scheme_has_its_password_masked(text: str, expected: str) -> None:
    assert redact({"msg": text}) == {"msg": expected}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Cookie: sessionid=abc; csrftoken=def; theme=dark", f"Cookie: sessionid={M}; csrftoken={M}; theme=dark"),  # 24
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {M}"),
        ("Authorization: Bearer ", "Authorization: Bearer "),
        ("Authorization: Bearer abc.def.ghi", f"Authorization: Bearer {M}"),
        ("login failed for password=hunter2", f"login failed for password={M}"),  # 25
        ("--db-password hunter2 --verbose", f"--db-password {M} --verbose"),
        ("PASSWORD=x\nHOME=/root", f"PASSWORD={M}\nHOME=/root"),
        ("db:\n  password: hunter2\n  host: h", f"db:\n  password: {M}\n  host: h"),
        ("Server=s;Database=d;User Id=sa;Password=p@ss;", f"Server=s;Database=d;User Id=sa;Password={M};"),
        ("Driver={ODBC};Pwd=x;Uid=u", f"Driver={{ODBC}};Pwd={M};Uid=u"),
        ("DefaultEndpointsProtocol=https;AccountKey=abc+/d==;", f"DefaultEndpointsProtocol=https;AccountKey={M};"),
        ("password=${DB_PASSWORD}", "password=${DB_PASSWORD}"),
        ("password_set: true", "password_set: true"),
        # Base64 padding is no pair separator.
        ("password: aHVudGVyMg==", f"password: {M}"),
        (
            "kind: ConfigMap\ndata:\n  password: aHVudGVyMg==\n  user: YWxpY2U=\n",
            f"kind: ConfigMap\ndata:\n  password: {M}\n  user: YWxpY2U=\n",
        ),
        ("Authorization: dXNlcjpwYXNzd29yZA=", f"Authorization: {M}"),
        ("Cookie: sid=abc==; theme=dark", f"Cookie: sid={M}; theme=dark"),
    ],
)
def test_secrets_in_free_text(text: str, expected: str) -> None:
    assert redact({"msg": text}) == {"msg": expected}


# Each token prefix glued after another split the match and searched the rest
# of the run again: a 1 MB run took about 20 minutes on the emitting thread.
# Run in a process of its own, so a hang is a failed assertion.
_GLUED = """
import sys
from auditbus import REDACTED, redact
for prefix in ("sk-", "xoxb-", "glpat-", "-sk"):
    out = redact("before " + prefix * (1_000_000 // len(prefix)) + " after")
    assert out.startswith("before ") and out.endswith(REDACTED + " after"), prefix
    assert out.replace(REDACTED, "") in ("before  after", "before - after"), prefix
print("ok")
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rclone config create r s3 provider AWS access_key_id AK1 secret_access_key Rc1pass region eu",
            f"rclone config create r s3 provider AWS access_key_id AK1 secret_access_key {M} region eu",
        ),
        (
            "rclone config update gd client_secret 'Rc 2' token x",
            f"rclone config update gd client_secret '{M}' token {M}",
        ),
        (
            "rclone --config /c config create b b2 account a1 key k password Rc3",
            f"rclone --config /c config create b b2 account a1 key k password {M}",
        ),
        # Names and types, other keys and other subcommands stay.
        ("rclone config create token s3 region eu", "rclone config create token s3 region eu"),
        (
            "rclone config show token; rclone config delete password",
            "rclone config show token; rclone config delete password",
        ),
    ],
)
def test_rclone_config_create_masks_the_values_whose_key_names_a_secret(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vault login s.Vl1abcdefghijklmnop", f"vault login {M}"),
        ("vault login -no-print 'Vl2 tok' && vault kv get app", f"vault login -no-print '{M}' && vault kv get app"),
        (
            "VAULT_ADDR=https://v:8200 vault login -method=token Vl3tok\n",
            f"VAULT_ADDR=https://v:8200 vault login -method=token {M}\n",
        ),
        # Another method's pairs, stdin, a prompt and prose stay (the pair's password is the `key=value` shape's).
        ("vault login -method=userpass username=bob", "vault login -method=userpass username=bob"),
        ("vault login -", "vault login -"),
        ("vault login", "vault login"),
        ("vault login failed: permission denied", "vault login failed: permission denied"),
    ],
)
def test_vault_login_masks_its_token_argument(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The token is read from a file: the redirection and the file name stay.
        ("gh auth login --with-token < token.txt", "gh auth login --with-token < token.txt"),
        ("app --password >> out.log", "app --password >> out.log"),
        # A here-string gives the value after its `<<<`.
        ("gh auth login --with-token <<< Gh1tok", f"gh auth login --with-token <<< {M}"),
        (
            "gh auth login --with-token <<< 'Gh2 tok'; gh auth status",
            f"gh auth login --with-token <<< '{M}'; gh auth status",
        ),
    ],
)
def test_a_secret_flags_redirection_is_no_value_and_a_here_string_is_masked(text: str, expected: str) -> None:
    assert redact(text) == expected
    argv = ["gh", "auth", "login", "--with-token", "<", "token.txt"]
    assert redact_dict({"argv": argv}) == {"argv": argv}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "POST https://events.pagerduty.com/integration/0123456789abcdef0123456789abcdef/enqueue",
            f"POST https://events.pagerduty.com/integration/{M}/enqueue",
        ),
        (
            "https://events.eu.pagerduty.com/integration/R0123456789ABCDEF0123456789abcde/enqueue 202",
            f"https://events.eu.pagerduty.com/integration/{M}/enqueue 202",
        ),
        # The Events API v2 URL and an incident's page name no key.
        ("https://events.pagerduty.com/v2/enqueue", "https://events.pagerduty.com/v2/enqueue"),
        ("https://acme.pagerduty.com/incidents/Q1ABCDEFGHIJKL", "https://acme.pagerduty.com/incidents/Q1ABCDEFGHIJKL"),
    ],
)
def test_a_pagerduty_integration_key_in_its_events_url_is_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("argv", "secret"),
    [
        (["htpasswd", "-bc", "/etc/h", "bob", "Hl1pass"], "Hl1pass"),
        (["htpasswd", "-nb", "bob", "Hl2pass"], "Hl2pass"),
        (["rabbitmqctl", "add_user", "bob", "Rl1pass"], "Rl1pass"),
        (["rclone", "config", "create", "r", "s3", "secret_access_key", "Rl2pass", "region", "eu"], "Rl2pass"),
    ],
)
def test_an_argument_lists_text_masks_the_secret_its_command_takes_as_a_positional_word(
    argv: list[str], secret: str
) -> None:
    # As a `CalledProcessError` names the command it ran, with either quote.
    for shown in (repr(argv), json.dumps(argv)):
        message = f"Command '{shown}' returned non-zero exit status 1."
        assert redact(message) == message.replace(secret, M)
    plain = "Command '['htpasswd', '-c', '/etc/h', 'bob']' returned non-zero exit status 1."
    assert redact(plain) == plain


def test_a_long_run_of_glued_token_prefixes_is_masked_without_hanging() -> None:
    done = subprocess.run([sys.executable, "-c", _GLUED], capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


# Text made of pairs whose keys name a field (`key=key=key=…`): each key's
# name is itself such text, judged by its own pairs.
_PAIR_CHAINS = """
from auditbus import REDACTED, redact
for unit in ("key=", "name:", "key=name=", "field: "):
    for times in (60, 100_000):
        chain = unit * times
        assert redact(chain) == chain, (unit, times)
        assert list(redact({chain: "x"})) == [chain], (unit, times)
out = redact("key=password value=hunter2 " + "key=" * 60)
assert "hunter2" not in out and out.startswith("key=password value=" + REDACTED), out
print("ok")
"""


def test_text_made_of_chained_pairs_is_redacted_in_time_linear_in_its_length() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PAIR_CHAINS], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


# A literal cut off by the text's end right after an escape: the scan read past the end.
@pytest.mark.parametrize("text", ['setPassword("abc\\', "define('DB_PASSWORD', 'abc\\", 'login("u", "abc\\'])
def test_a_quoted_argument_cut_off_after_an_escape_is_masked(text: str) -> None:
    out = redact({"code": text})["code"]
    assert "abc" not in out, out
    assert out.endswith(M), out


# Shapes the code-argument, `.pgpass` and `net use` scans read, repeated over
# megabytes: each must be read in time linear in its length. Each took well
# over the limit below when a run of escapes was compared at every later
# quote, a port-shaped field read to its line's end, and every `/u:` read its
# line again; each takes under a second now.
_LONG_SHAPES = """
from auditbus import redact
shapes = {
    "escapes": "setPassword(" + "\\\\" * 3_000_000 + '"' + '"' * 3_000_000,
    "pgpass": "1:1:1:1:" * 1_000_000,
    "net use": "net use a /u:" * 1_000_000,
}
for name, text in shapes.items():
    out = redact(text)
    assert isinstance(out, str) and out, name
print("ok")
"""


def test_long_runs_of_argument_pgpass_and_net_use_shapes_are_redacted_without_hanging() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LONG_SHAPES], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


# Command shapes repeated on one long line: each `chpasswd` looked back to
# its line's start and forward to its end, each `npm config set` read the
# words to its line's end again; each took minutes on a megabyte.
_LONG_COMMAND = """
import sys
from auditbus import redact
out = redact(sys.argv[1] * int(sys.argv[2]) + "_auth x")
assert isinstance(out, str) and out
print("ok")
"""


@pytest.mark.parametrize(
    ("unit", "times"),
    [
        ("echo a:b | chpasswd ", 200_000),
        ("chpasswd ", 300_000),
        ("htpasswd -b f u p ", 150_000),
        ("mc alias set a //h k ", 150_000),
        ("mc -x alias  set -x ", 150_000),
        ("gh secret set A --body x --body ", 100_000),
        ("rabbitmqctl add_user u p ", 150_000),
        ("x: &'a y: &str = ", 100_000),
        ("npm config set ", 200_000),
        ("npm config set _auth ", 150_000),
        ("gh auth login --with-token <<< ", 100_000),
        ("rclone config create r s3 secret_access_key x ", 100_000),
        ("['htpasswd', '-b', 'f', 'u', 'p', ", 50_000),
        ('password "\\"', 200_000),
        ("password <- <-", 200_000),
        ("var password string = string ", 100_000),
        ("?state=1&code=0123456789abcdefgh", 100_000),
        ("&key=0123456789abcdefgh&code=0123456789abcdefgh ", 100_000),
    ],
)
def test_a_long_line_of_one_command_is_redacted_without_hanging(unit: str, times: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LONG_COMMAND, unit, str(times)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


# Pasted from a web page or a chat (a no-break space), or spaced by a control
# character: the credential after the scheme is still a credential.
@pytest.mark.parametrize(
    "space",
    [
        *("\xa0", "\u2003", "\u202f", "\u3000", "\x0b", "\x0c", "\x00", "\u200b", "\ufeff"),
        *("\xad", "\u200d", "\u200e", "\u2060", "\u202e", "\u180e"),
    ],
    ids=repr,
)
@pytest.mark.parametrize("scheme", ["Bearer", "Authorization: Bearer", "Basic", "token"])
def test_a_credential_after_its_scheme_and_an_unusual_space_is_masked(scheme: str, space: str) -> None:
    out = redact({"msg": f"{scheme}{space}abcdef0123456789abcdef"})["msg"]
    assert "abcdef0123456789abcdef" not in out
    assert out.endswith(M)


# A credential on the line after its scheme: a wrapped log line, a folded
# HTTP header (`\r\n` then a tab or a space).
@pytest.mark.parametrize(
    "gap", ["\n", "\r\n", "\r", "\n ", "\r\n\t", " \n", "\xa0\n\u3000", "\t", "\x85", "\u2028", "\u2029"], ids=repr
)
@pytest.mark.parametrize("scheme", ["Bearer", "Authorization: Bearer", "Basic", "token"])
def test_a_credential_on_the_line_after_its_scheme_is_masked(scheme: str, gap: str) -> None:
    out = redact({"msg": f"{scheme}{gap}abcdef0123456789abcdef\nnext line"})["msg"]
    assert out == f"{scheme}{gap}{M}\nnext line"


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer\nHost: api.example.com",
        "sign in with Basic\nauthentication is disabled",
        "the token\nexpired at noon",
        "Bearer\n\nabcdef0123456789abcdef",
    ],
)
def test_prose_and_headers_on_the_line_after_a_scheme_stay_readable(text: str) -> None:
    assert redact(text) == text


# The same spaces between a secret key's separator and its value.
@pytest.mark.parametrize("space", ["\xa0", "\u2003", "\u3000", "\x0b", "\x0c", "\x00", "\u200b", "\ufeff"])
@pytest.mark.parametrize("separator", ["=", ": ", ":", "=\t"])
def test_a_value_after_its_secret_key_and_an_unusual_space_is_masked(separator: str, space: str) -> None:
    out = redact({"msg": f"login ok password{separator}{space}hunter2pass next"})["msg"]
    assert "hunter2pass" not in out
    assert out.endswith(f"{M} next")
    out = redact({"msg": f"Authorization:{space}Bearer{space}abcdef0123456789abcdef"})["msg"]
    assert "abcdef0123456789abcdef" not in out


# The same spaces between a command-line flag naming a secret and its value.
@pytest.mark.parametrize("space", ["\xa0", "\u2003", "\u202f", "\u3000", "\x0b", "\x0c", "\x00", "\u200b", "\ufeff"])
@pytest.mark.parametrize("flag", ["--password", "--db-password", "-storepass", "-pw"])
def test_a_secret_flag_spaced_by_an_unusual_space_has_its_value_masked(flag: str, space: str) -> None:
    out = redact({"msg": f"run {flag}{space}hunter2pass --verbose"})["msg"]
    assert out == f"run {flag}{space}{M} --verbose"
    assert redact(f"run --retries{space}3 --verbose") == f"run --retries{space}3 --verbose"
    out = redact({"msg": f"run{space}--password hunter2pass --verbose"})["msg"]
    assert out == f"run{space}--password {M} --verbose"


# A command whose password flag only the command names, pasted with other spaces.
@pytest.mark.parametrize("space", ["\xa0", "\u2003", "\u3000", "\x0b", "\x00", "\ufeff"], ids=repr)
@pytest.mark.parametrize(
    "command",
    [
        "sshpass -p{s}hunter2pass ssh host",
        "redis-cli{s}-a{s}hunter2pass ping",
        "docker login -u bob -p{s}hunter2pass registry",
        "curl{s}-u{s}bob:hunter2pass https://h",
        "mysql{s}-u{s}root{s}-phunter2pass db",
        "sqlplus{s}scott/hunter2pass@orcl",
    ],
)
def test_a_command_spaced_by_unusual_spaces_has_its_password_masked(command: str, space: str) -> None:
    out = redact(command.format(s=space))
    assert "hunter2pass" not in out
    assert M in out
    assert redact(f"ssh{space}-p{space}2222 host") == f"ssh{space}-p{space}2222 host"


# A control character or an unusual space between a secret key and its
# separator (a NUL left by a C string, a pasted no-break space).
@pytest.mark.parametrize(
    "gap", ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x0b", "\xa0", "\u2003", "\u3000", "\ufeff", "\x00 \t"], ids=repr
)
@pytest.mark.parametrize("separator", ["=", ": ", ":"])
def test_a_value_after_its_secret_key_a_control_character_and_its_separator_is_masked(separator: str, gap: str) -> None:
    out = redact({"msg": f"login ok password{gap}{separator}hunter2pass next"})["msg"]
    assert out == f"login ok password{gap}{separator}{M} next"


# The fullwidth `=` and `:` of CJK text and input methods separate a key from its value too.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password\uff1dhunter2pass next", f"password\uff1d{M} next"),
        ("password\uff1ahunter2pass next", f"password\uff1a{M} next"),
        ("密码 password\uff1a hunter2pass next", f"密码 password\uff1a {M} next"),
        ("api_key\uff1a\u3000hunter2pass", f"api_key\uff1a\u3000{M}"),
        ("用户\uff1abob\uff0ctoken\uff1dhunter2pass", f"用户\uff1abob\uff0ctoken\uff1d{M}"),
        ("password\uff1a\n  hunter2pass\nnext: 1", f"password\uff1a\n  {M}\nnext: 1"),
        ("api\uff3fkey\uff1dhunter2pass", f"api\uff3fkey\uff1d{M}"),
        ("db\uff0dpassword\uff1ahunter2pass", f"db\uff0dpassword\uff1a{M}"),
        ("db\uff0epassword=hunter2pass", f"db\uff0epassword={M}"),
        ("user\uff1abob max_tokens\uff1d300 \uff50\uff41\uff53\uff53", None),
    ],
)
def test_a_value_after_a_fullwidth_separator_is_masked(text: str, expected: str | None) -> None:
    # `None`: the text stays as it is.
    assert redact(text) == (text if expected is None else expected)


def test_a_line_break_between_a_key_and_a_separator_still_ends_the_key() -> None:
    # The text on the next line is no value of the word before the break.
    assert redact("Reset your password\n=== Steps ===") == "Reset your password\n=== Steps ==="


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Creds(user='bob', password=['hunter2', 'x'])", f"Creds(user='bob', password={M})"),
        ("password={'a': 'hunter2'} user=bob", f"password={M} user=bob"),
        ('"token": {"a": ["x", "}"], "b": "hunter2"}, "c": 1', f'"token": {M}, "c": 1'),
        ("Server=s;Pwd={p@ss;hunter2};Uid=u", f"Server=s;Pwd={M};Uid=u"),
        ("secrets=(hunter2, 'x'", f"secrets={M}"),
    ],
)
def test_a_container_after_a_secret_key_in_text_is_masked_whole(text: str, expected: str) -> None:
    # The text form of an object whose secret field holds a list or dict (a
    # dataclass's str(), a logged config): the whole container is the value.
    assert redact({"msg": text}) == {"msg": expected}


def test_private_key_blocks_keep_their_armour_lines() -> None:  # 25
    body = "MIIEowIBAAKCAQEA" * 10
    for nl in ("\n", "\r\n"):
        text = f"deploy failed\n-----BEGIN RSA PRIVATE KEY-----{nl}{body}{nl}-----END RSA PRIVATE KEY-----{nl}retrying"
        out = redact({"log": text})["log"]
        assert body not in out
        armour = f"-----BEGIN RSA PRIVATE KEY-----{nl}{M}{nl}-----END RSA PRIVATE KEY-----"
        assert out == f"deploy failed\n{armour}{nl}retrying"


@pytest.mark.parametrize(
    "token",
    [
        AKIA,
        "ASIAIOSFODNN7EXAMPLE",
        GHP,
        "github_pat_" + "A1b_" * 21,
        "glpat-" + "x1Y2" * 5,
        "xoxb-123456789012-1234567890123-abcdefghijklmnop",
        "xapp-1-A0123-0123456789-abcdef",
        "sk_live_" + "a1" * 12,
        "rk_prod_" + "a1" * 12,
        "whsec_" + "a" * 32,
        "sk-proj-" + "Ab1" * 16,
        "sk-ant-api03-" + "Ab1_" * 20,
        "AIza" + "B" * 35,
        "ya29." + "a1" * 20,
        "hf_" + "a" * 34,
        "npm_" + "a" * 36,
        "SG." + "a" * 22 + "." + "b" * 43,
        "hvs." + "a" * 24,
        "dop_v1_" + "a" * 64,
        "shpat_" + "a" * 32,
        JWT,
        "ZXlK" + "aGJHY2lPaUpJVXpJMU5pSjk" * 3,
    ],
)
def test_token_formats_are_masked_inside_text(token: str) -> None:
    assert redact({"msg": f"using {token} now"}) == {"msg": f"using {M} now"}


@pytest.mark.parametrize(
    "token",
    [
        AKIA,
        GHP,
        "github_pat_" + "A1b_" * 21,
        "glpat-" + "x1Y2" * 5,
        "xoxb-123456789012-1234567890123-abcdefghijklmnop",
        "whsec_" + "a" * 32,
        "ya29." + "a1" * 20,
        "npm_" + "a" * 36,
        "dop_v1_" + "a" * 64,
        "shpat_" + "a" * 32,
        JWT,
    ],
)
@pytest.mark.parametrize("before", ["token%3D", "%22", "x"], ids=["url-encoded-equals", "url-encoded-quote", "glued"])
def test_a_distinctive_token_right_after_a_letter_or_digit_is_masked(token: str, before: str) -> None:
    """A URL-encoded separator (`token%3Dghp_...`) leaves a letter or digit right before the token."""
    out = redact({"msg": f"GET /cb?{before}{token}&x=1"})["msg"]
    assert token not in out
    assert token[-12:] not in out
    assert out == f"GET /cb?{before}{M}&x=1"


def test_two_tokens_glued_together_are_both_masked() -> None:
    out = redact({"msg": f"pair {GHP}{GHP.replace('a', 'c')} end"})["msg"]
    assert GHP[-12:] not in out
    assert GHP.replace("a", "c")[-12:] not in out
    assert out.startswith("pair ***REDACTED***")
    assert out.endswith(" end")


@pytest.mark.parametrize(
    "text",
    [
        "task-scheduler-background-worker-pool",  # sk- inside a word
        "desk_test_0123456789abcdef",  # sk_test_ inside a word
        "MSG.abcdefghijklmnopq.rstuvwxyzabcdefgh",  # SG. inside a word
        "boxapp-production-server-01",  # xapp- inside a word
    ],
)
def test_prefixes_that_occur_inside_words_still_need_a_word_start(text: str) -> None:
    assert redact({"msg": f"see {text} here"}) == {"msg": f"see {text} here"}


def test_slack_webhook_keeps_the_host() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"
    assert redact({"hook": url}) == {"hook": f"https://hooks.slack.com/services/{M}"}


def test_a_telegram_bot_token_in_its_api_url_is_masked() -> None:
    token = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    out = redact({"url": f"https://api.telegram.org/bot{token}/sendMessage?chat_id=1"})["url"]
    assert out == f"https://api.telegram.org/{M}/sendMessage?chat_id=1"


@pytest.mark.parametrize(
    "url",
    [
        "https://contoso.webhook.office.com/webhookb2/7f1e@9c2a/IncomingWebhook/0123456789abcdef0123456789abcdef/9f8e7d6c",
        "https://outlook.office.com/webhook/7f1e@9c2a/IncomingWebhook/0123456789abcdef0123456789abcdef/9f8e7d6c",
    ],
)
def test_a_teams_incoming_webhook_keeps_only_its_host(url: str) -> None:
    host, _, path = url.partition(".com/")
    kind = path.split("/")[0]
    assert redact({"hook": f"posting to {url} now"}) == {"hook": f"posting to {host}.com/{kind}/{M} now"}


@pytest.mark.parametrize(
    "host", ["discord.com/api/webhooks", "discordapp.com/api/webhooks", "discord.com/api/v10/webhooks"]
)
def test_a_discord_webhook_token_is_masked_and_the_host_and_id_kept(host: str) -> None:
    token = "aBcD-efGh_" * 6 + "ijKL"
    out = redact({"hook": f"posting to https://{host}/112233445566778899/{token} now"})["hook"]
    assert token[:20] not in out
    assert out == f"posting to https://{host}/112233445566778899/{M} now"


@pytest.mark.parametrize("before", [" ", "api_key=", ":"], ids=["after-space", "after-other-key", "after-colon"])
def test_a_mailgun_api_key_is_masked(before: str) -> None:
    key = "key-" + "3ax6xnjp29jd6fds4gc373sgvjxteol0"
    out = redact({"msg": f"mailgun{before}{key} end"})["msg"]
    assert key[4:] not in out


@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",  # Visa, spaced
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555555555554444",  # Mastercard
        "2223003122003222",  # Mastercard, 2-series
        "378282246310005",  # Amex, 15 digits
        "3782 822463 10005",  # Amex as printed
        "6011111111111117",  # Discover
        "3530111333300000",  # JCB
        "6200000000000005",  # UnionPay
        "4222222222222",  # Visa, 13 digits
    ],
)
@pytest.mark.parametrize("around", ["paid with {} today", "{}", "card={}", "pan: {};", "(#{})"])
def test_a_card_number_in_text_is_masked(card: str, around: str) -> None:
    out = redact({"msg": around.format(card)})["msg"]
    assert out == around.format(M)


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # fails the Luhn check
        "1700000000004 ms",  # a millisecond timestamp (Luhn-valid): no card starts with 1
        "9111111111111110",  # Luhn-valid, but no card number starts with 9
        "order 4111111111111111x",  # glued to a letter
        "v0.4111111111111111",  # the digits of a decimal
        "+1 415 555 2671",  # a phone number
        "41111111111111111111",  # 20 digits
        "DE89370400440532013000",  # an IBAN
        "2024-05-01 12:30:00 4111",
    ],
)
def test_numbers_that_are_not_card_numbers_stay_readable(text: str) -> None:
    assert redact({"msg": text}) == {"msg": text}


@pytest.mark.parametrize(
    "text", ["key-value store", "hot key-3 pressed", "key-" + "0123456789abcdef" * 3, "monkey-" + "a" * 32]
)
def test_key_dash_words_that_are_not_mailgun_keys_stay_readable(text: str) -> None:
    assert redact({"msg": f"see {text} here"}) == {"msg": f"see {text} here"}


@pytest.mark.parametrize(
    "text",
    [
        "AKIAIOSFODNN7EXAMP",  # 27: AKIA + 14
        "AKIAIOSFODNN7EXAMPL",  # AKIA + 15
        "AKIAIOSFODNN7EXAMPLEX",  # AKIA + 17
        "pk_live_" + "a1" * 12,  # Stripe publishable key is public
        "123456789012345",  # 15-digit id failing Luhn
        "4111 1111 1111 1112",
        "550e8400-e29b-41d4-a716-446655440000",  # UUID
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # git SHA
        "Bearer token expired",
        "basic authentication is enabled",
        "the author set max_tokens=300",
        "see https://example.com/a@b",
        "time 12:30:00",
        "[Filtered]",
        "x" + GHP[:-1],  # one character short of a token, even glued to a word
    ],
)
def test_lookalike_values_stay_readable(text: str) -> None:
    assert redact({"msg": text}) == {"msg": text}


def test_only_the_secret_part_of_a_string_is_masked() -> None:
    text = f"rotated key {GHP} for user alice at https://admin:pw@db.internal/app (ticket OPS-12)"
    assert redact(text) == f"rotated key {M} for user alice at https://admin:{M}@db.internal/app (ticket OPS-12)"


def test_str_subclasses_bytes_and_bytearray() -> None:  # 20
    class Markup(str):
        pass

    safe = Markup("<b>hello</b>")
    out = redact({"a": safe, "b": b"Bearer abcdefgh12345678", "c": bytearray(b"password=x"), "d": b"\xff\xfe"})
    assert out["a"] is safe
    assert out["b"] == f"Bearer {M}".encode()
    assert out["c"] == f"password={M}".encode()
    assert out["d"] == b"\xff\xfe"
    assert redact(Markup(f"t {GHP}")) == f"t {M}"


# --- JSON inside strings ----------------------------------------------------------------


def test_json_in_a_string_is_parsed_and_redacted() -> None:  # 22
    out = redact({"body": '{"user": "bob", "password": "hunter2"}'})
    assert json.loads(out["body"]) == {"user": "bob", "password": M}


def test_json_twice_nested_and_with_escapes() -> None:  # 22
    inner = json.dumps({"token": "t0k3n", "n": 1})
    outer = json.dumps({"payload": inner, "\\u0070assword": "p"})
    outer = outer.replace("\\\\u0070", "\\u0070")  # a real \u escape in the key
    out = redact({"body": outer})
    assert "t0k3n" not in flat(out)
    doc = json.loads(out["body"])
    assert doc["password"] == M
    assert json.loads(doc["payload"]) == {"token": M, "n": 1}


def test_pretty_printed_json_arrays_and_untouched_documents() -> None:  # 22
    pretty = json.dumps([{"api_key": "k"}, {"x": 1}], indent=2)
    assert json.loads(redact(pretty)) == [{"api_key": M}, {"x": 1}]
    clean = json.dumps({"x": [1, 2]}, indent=2)
    assert redact(clean) is not None
    assert redact(clean) == clean  # nothing to mask: the original text, formatting and all


def test_truncated_or_invalid_json_falls_back_to_text_patterns() -> None:  # 22
    truncated = '{"user": "bob", "password": "hunter2", "x": [1, 2'
    assert redact(truncated) == f'{{"user": "bob", "password": "{M}", "x": [1, 2'
    assert redact("{'password': 'hunter2'}") == f"{{'password': '{M}'}}"


def test_json_holding_a_key_twice_is_masked_in_every_value_of_that_key() -> None:
    """Parsed, such a document keeps one value per key: the other one stayed in the text unseen."""
    token = "sk-proj-" + "A1b2C3d4" * 4
    for body in (
        f'{{"note": "{token}", "note": "again"}}',
        '{"password": "hunter2hunter2", "password": null}',
        f'[{{"a": {{"k": "{token}", "k": 1}}}}]',
    ):
        out = redact({"body": body})["body"]
        assert token not in out, body
        assert "hunter2hunter2" not in out, body
        assert M in out, body


def test_large_json_in_a_string_under_and_over_the_cap() -> None:  # 22
    filler = "x" * 100
    small = json.dumps({"items": [filler] * 10_000, "password": "hunter2"})  # ~1 MB
    assert json.loads(redact(small))["password"] == M
    big = json.dumps({"items": [filler] * 50_000, "password": "hunter2"})  # ~5 MB, scanned as text
    out = redact(big)
    assert "hunter2" not in out
    assert out.endswith(f'"password": "{M}"}}')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('body={"name": "api_key", "value": "hunter2"}', f'body={{"name": "api_key", "value": "{M}"}}'),
        (
            '{"key": "db.password", "new_value": "hunter2"}\n{"key": "retries", "new_value": 3}',
            f'{{"key": "db.password", "new_value": "{M}"}}\n{{"key": "retries", "new_value": 3}}',
        ),
        (
            "Change(key='db.password', old_value='a', new_value='hunter2')",
            f"Change(key='db.password', old_value='{M}', new_value='{M}')",
        ),
        (
            '{"n": NaN, "field": "smtp_password", "new": "hunter2"}',
            f'{{"n": NaN, "field": "smtp_password", "new": "{M}"}}',
        ),
        ("setting=llm.api_key value=hunter2 by=alice", f"setting=llm.api_key value={M} by=alice"),
        ("name=HOME value=/root", "name=HOME value=/root"),
    ],
)
def test_a_record_naming_a_secret_in_text_that_is_not_one_json_document(text: str, expected: str) -> None:
    # JSON after a prefix, JSON lines, Python's text of a record: the name
    # field still names the secret its value fields carry.
    assert redact({"msg": text}) == {"msg": expected}


def test_a_record_naming_a_secret_in_json_over_the_parse_cap() -> None:
    big = json.dumps({"items": ["x" * 100] * 50_000, "env": [{"name": "DB_PASSWORD", "value": "hunter2"}]})
    assert "hunter2" not in redact(big)


# --- structure and robustness ------------------------------------------------------------


def test_cycles_become_a_marker() -> None:  # 1
    d: dict[str, Any] = {"password": "p"}
    d["self"] = d
    lst: list[Any] = [1]
    lst.append(lst)
    a: dict[str, Any] = {}
    b: dict[str, Any] = {"a": a, "token": "t"}
    a["b"] = b
    out = redact({"d": d, "l": lst, "a": a})
    assert out["d"] == {"password": M, "self": "[circular reference]"}
    assert out["l"] == [1, "[circular reference]"]
    assert out["a"] == {"b": {"a": "[circular reference]", "token": M}}
    top: dict[str, Any] = {}
    top["me"] = top
    assert redact_dict(top) == {"me": "[circular reference]"}


def test_shared_references_are_redacted_independently() -> None:  # 2
    shared = {"user": "u", "password": "p"}
    out = redact_dict({"credentials": shared, "copy": shared, "again": shared})
    assert out == {"credentials": M, "copy": {"user": "u", "password": M}, "again": {"user": "u", "password": M}}


@pytest.mark.parametrize("depth", [1_000, 10_000, 100_000])
def test_deep_nesting_is_bounded_and_never_leaks_the_deep_part(depth: int) -> None:  # 3
    data: Any = "hunter2"
    for i in range(depth):
        data = {"k": data} if i % 2 else [data]
    out = redact({"root": data})
    text = flat(out)
    assert "hunter2" not in text
    assert "[nested too deep]" in text


def test_wide_containers() -> None:  # 4
    wide = {f"k{i}": i for i in range(200_000)}
    wide["password"] = "p"
    out = redact_dict(wide)
    assert len(out) == len(wide)
    assert out["password"] == M
    rows = redact([{"id": i, "token": "t"} for i in range(100_000)])
    assert rows[-1] == {"id": 99_999, "token": M}


def test_huge_strings() -> None:  # 5
    spaces = " " * 100_000
    assert redact(spaces) is spaces
    big = "a=b " * 200_000 + "password=hunter2"
    out = redact(big)
    assert out.endswith(f"password={M}")
    assert redact("x" * 20_000_000 + " password=p").endswith(f"password={M}")


def test_sets_deques_and_ranges() -> None:  # 6
    plain_set = {"a", "b"}
    frozen = frozenset({1, 2})
    dq = collections.deque([1, 2])
    rng = range(10**12)
    out = redact({"s": plain_set, "f": frozen, "d": dq, "r": rng})
    assert out["s"] is plain_set
    assert out["f"] is frozen
    assert out["d"] is dq
    assert out["r"] is rng
    secret_set = redact({"s": {f"t {GHP}"}, "d": collections.deque([{"password": "p"}])})
    assert secret_set == {"s": [f"t {M}"], "d": [{"password": M}]}


def test_namedtuples_become_lists() -> None:  # 6
    Point = collections.namedtuple("Point", "name secret")
    assert redact({"p": Point("x", f"{GHP}")}) == {"p": ["x", M]}


def test_a_parsed_url_has_the_password_in_its_netloc_masked() -> None:
    # `urlparse()` splits the `//` off: its netloc `user:pw@host` alone is no URL.
    parsed = urllib.parse.urlparse("https://bob:hunter2@db.example.com:5432/x?token=abc123456789")
    split = urllib.parse.urlsplit("postgres://app:hunter3@db/app")
    assert redact({"url": parsed, "db": split}) == {
        "url": ["https", f"bob:{M}@db.example.com:5432", "/x", "", f"token={M}", ""],
        "db": ["postgres", f"app:{M}@db", "/app", "", ""],
    }
    plain = urllib.parse.urlparse("https://bob@example.com:8080/x")
    assert redact({"url": plain}) == {"url": list(plain)}


class Settings(Mapping[str, Any]):
    def __init__(self, **kw: Any) -> None:
        self._d = kw

    def __getitem__(self, k: str) -> Any:
        return self._d[k]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)


def test_dict_subclasses_and_other_mappings() -> None:  # 7
    class MyDict(dict):  # type: ignore[type-arg]
        pass

    dd = collections.defaultdict(list, {"password": "p"})
    out = redact(
        {
            "od": collections.OrderedDict(password="p", x=1),
            "dd": dd,
            "counter": collections.Counter(token=3),
            "mine": MyDict(api_key="k"),
            "proxy": types.MappingProxyType({"secret": "s"}),
            "custom": Settings(password="p", y=2),
        }
    )
    assert out == {
        "od": {"password": M, "x": 1},
        "dd": {"password": M},
        "counter": {"token": M},
        "mine": {"api_key": M},
        "proxy": {"secret": M},
        "custom": {"password": M, "y": 2},
    }
    assert type(out["od"]) is dict
    plain_proxy = types.MappingProxyType({"x": 1})
    assert redact({"p": plain_proxy})["p"] is plain_proxy
    assert redact_dict(Settings(password="p")) == {"password": M}  # type: ignore[arg-type]


def test_objects_are_leaves() -> None:  # 7
    class Obj:
        password = "p"

    obj = Obj()
    assert redact({"o": obj})["o"] is obj


class _Kind(enum.Enum):
    LEAKY = "password=hunter2"
    PLAIN = "plain"


class _Creds:
    def __init__(self, password: str) -> None:
        self.password = password

    def __repr__(self) -> str:
        return f"Creds(user='bob', password={self.password!r})"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (_Creds("hunter2"), f"Creds(user='bob', password='{M}')"),
        (_Kind.LEAKY, f"password={M}"),
        (ValueError("login failed, password=hunter2"), f"login failed, password={M}"),
        (types.SimpleNamespace(token="hunter2"), f"namespace(token='{M}')"),
    ],
    ids=["repr", "enum", "exception", "namespace"],
)
def test_an_object_whose_stored_form_holds_a_secret_comes_back_redacted(obj: object, expected: str) -> None:
    """Kept as is, the object would carry the secret into whatever logs the result."""
    out = redact_dict({"o": obj})["o"]
    assert "hunter2" not in repr(out)
    assert out == expected
    assert redact({"o": [obj]}) == {"o": [expected]}


def test_an_object_whose_stored_form_holds_no_secret_comes_back_as_is() -> None:
    for obj in (_Creds("***"), _Kind.PLAIN, ValueError("plain"), datetime.date(2024, 5, 1), decimal.Decimal("1.5")):
        assert redact_dict({"o": obj})["o"] is obj


def test_idempotent() -> None:  # 10
    data = {
        "password": "p",
        "note": f"password=hunter2 {GHP} https://u:p@h Bearer abc.def.ghi",
        "json": '{"token": "t", "x": 1.50}',
        "changes": [{"key": "api_key", "new": "x"}],
        "pairs": [["cookie", "sid=1"]],
        "password=k": 1,
    }
    once = redact_dict(data)
    assert redact_dict(once) == once


def test_concurrent_calls_give_identical_results() -> None:  # 32, 33
    data = {"password": "p", "note": f"t {GHP}", "nested": [{"key": "db.password", "value": "x"}] * 50}
    expected = json.dumps(redact_dict(data))
    results: list[str] = []

    def work() -> None:
        for _ in range(50):
            results.append(json.dumps(redact_dict(data)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200
    assert set(results) == {expected}


def test_a_mapping_mutated_during_redaction_raises_instead_of_crashing() -> None:
    target: dict[Any, Any] = {}

    class Evil:
        def __hash__(self) -> int:
            target[f"new{len(target)}"] = 1
            return 1

    target["a"] = 1
    target[Evil()] = 2
    target["b"] = 3
    with pytest.raises(auditbus.ValidationError, match="changed while it was being redacted"):
        redact_dict(target)
