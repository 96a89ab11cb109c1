"""Mismatch samples (controller.parity.samples): redaction and their JSON form."""

from __future__ import annotations

import json

from controller.parity.diff import Reply
from controller.parity.samples import (
    DEFAULT_REDACT,
    MAX_BODY_BYTES,
    REDACTED,
    MismatchSample,
    body_text,
    redact,
)
from controller.policy.parity import ParityPolicy


def test_redact_is_case_insensitive_and_keeps_order() -> None:
    headers = (("Authorization", "Bearer s3cret"), ("accept", "*/*"), ("COOKIE", "sid=1"))
    assert redact(headers, frozenset({"authorization", "Cookie"})) == (
        ("Authorization", REDACTED),
        ("accept", "*/*"),
        ("COOKIE", REDACTED),
    )


def test_default_matches_the_policy() -> None:
    assert frozenset(ParityPolicy().redact) == DEFAULT_REDACT


def test_body_text_truncates_with_a_marker() -> None:
    assert body_text(b"abc") == "abc"
    assert body_text(b"\xff{") == "\ufffd{"
    long = b"x" * (MAX_BODY_BYTES + 10)
    text = body_text(long)
    assert text.startswith("x" * MAX_BODY_BYTES)
    assert text.endswith("…[10 bytes cut]")
    assert len(text) < MAX_BODY_BYTES + 30


def test_sample_keeps_no_secret() -> None:
    sample = MismatchSample(
        at=12.5,
        method="GET",
        url="/items/3?x=1",
        request_headers=(("Authorization", "Bearer s3cret"), ("x-trace", "t")),
        request_body=b"",
        primary=Reply(200, (("set-cookie", "sid=abc"), ("content-type", "a/json")), b'{"a":1}'),
        candidate=Reply(200, (("Set-Cookie", "sid=def"),), b'{"a":2}'),
        secondary=Reply(200, (("x-token", "tok"),), b'{"a":1}'),
        paths=("/a",),
        redact=frozenset({"authorization", "set-cookie", "X-Token"}),
    )
    assert "s3cret" not in repr(sample)
    assert "sid=" not in repr(sample)
    assert "'tok'" not in repr(sample.secondary)
    data = sample.to_json()
    text = json.dumps(data)
    for secret in ("s3cret", "sid=abc", "sid=def", '"tok"'):
        assert secret not in text
    assert data == {
        "at": 12.5,
        "method": "GET",
        "url": "/items/3?x=1",
        "paths": ["/a"],
        "request": {"headers": [["Authorization", REDACTED], ["x-trace", "t"]], "body": ""},
        "primary": {
            "status": 200,
            "headers": [["set-cookie", REDACTED], ["content-type", "a/json"]],
            "body": '{"a":1}',
        },
        "candidate": {"status": 200, "headers": [["Set-Cookie", REDACTED]], "body": '{"a":2}'},
        "secondary": {"status": 200, "headers": [["x-token", REDACTED]], "body": '{"a":1}'},
    }


def test_sample_without_secondary_and_default_redaction() -> None:
    sample = MismatchSample(
        at=1.0,
        method="POST",
        url="/x",
        request_headers=(("Cookie", "a=b"),),
        request_body=b"\xffbody" + b"y" * MAX_BODY_BYTES,
        primary=Reply(500),
        candidate=Reply(200),
        secondary=None,
        paths=(":status",),
    )
    data = sample.to_json()
    assert data["secondary"] is None
    assert data["request"] == {
        "headers": [["Cookie", REDACTED]],
        "body": "\ufffdbody" + "y" * (MAX_BODY_BYTES - 5) + "…[5 bytes cut]",
    }
