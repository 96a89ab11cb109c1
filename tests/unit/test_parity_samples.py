"""Mismatch samples (controller.parity.samples): redaction and their JSON form."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from controller.parity.diff import Reply
from controller.parity.samples import (
    DEFAULT_REDACT,
    MAX_BODY_BYTES,
    REDACTED,
    BodySizes,
    MismatchSample,
    body_text,
    redact,
    redact_url,
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
        "url": "/items/3?x=[redacted]",
        "paths": ["/a"],
        "request": {
            "headers": [["Authorization", REDACTED], ["x-trace", "t"]],
            "body": "",
            "body_bytes": 0,
        },
        "primary": {
            "status": 200,
            "headers": [["set-cookie", REDACTED], ["content-type", "a/json"]],
            "body": '{"a":1}',
            "body_bytes": 7,
        },
        "candidate": {
            "status": 200,
            "headers": [["Set-Cookie", REDACTED]],
            "body": '{"a":2}',
            "body_bytes": 7,
        },
        "secondary": {
            "status": 200,
            "headers": [["x-token", REDACTED]],
            "body": '{"a":1}',
            "body_bytes": 7,
        },
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
        "body_bytes": MAX_BODY_BYTES + 5,
    }


def big_sample(size: int = 10 * MAX_BODY_BYTES) -> MismatchSample:
    return MismatchSample(
        at=1.0,
        method="POST",
        url="/reports",
        request_headers=(),
        request_body=b"q" * size,
        primary=Reply(200, (), b"p" * size),
        candidate=Reply(200, (), b"c" * (size + 1)),
        secondary=Reply(200, (), b"s" * (size + 2)),
        paths=(":body",),
    )


def test_bodies_are_cut_when_the_sample_is_built() -> None:
    size = 10 * MAX_BODY_BYTES
    sample = big_sample(size)
    assert len(sample.request_body) == MAX_BODY_BYTES
    assert sample.secondary is not None
    for reply in (sample.primary, sample.candidate, sample.secondary):
        assert len(reply.body) == MAX_BODY_BYTES
    assert sample.sizes == BodySizes(size, size, size + 1, size + 2)
    data = sample.to_json()
    cut = size - MAX_BODY_BYTES
    assert data["request"]["body"].endswith(f"…[{cut} bytes cut]")  # type: ignore[index]
    assert data["candidate"]["body"].endswith(f"…[{cut + 1} bytes cut]")  # type: ignore[index]
    assert data["secondary"]["body_bytes"] == size + 2  # type: ignore[index]


def test_replace_keeps_the_original_sizes() -> None:
    sample = big_sample()
    again = replace(sample, paths=("/x",))
    assert again.sizes == sample.sizes
    assert again.to_json()["primary"] == sample.to_json()["primary"]
    assert replace(sample) == sample


def test_short_bodies_are_kept_whole() -> None:
    sample = big_sample(size=MAX_BODY_BYTES)
    assert sample.request_body == b"q" * MAX_BODY_BYTES
    assert "cut" not in json.dumps(sample.to_json()["request"])


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/items/3", "/items/3"),
        ("/items/3?", "/items/3?"),
        ("/items/3?x=1", "/items/3?x=[redacted]"),
        (
            "/login?user=a%40b.c&token=s3cret&debug",
            "/login?user=[redacted]&token=[redacted]&[redacted]",
        ),
        ("/a?k=&&v=a=b", "/a?k=[redacted]&&v=[redacted]"),
        ("/verify?3f9a8b", "/verify?[redacted]"),
        ("/a?x=1#frag", "/a?x=[redacted]#[redacted]"),
        ("https://h.example/a/b?key=abc", "https://h.example/a/b?key=[redacted]"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # idempotent


def test_sample_url_keeps_no_query_value() -> None:
    sample = replace(big_sample(0), url="/items/3?api_key=s3cret&page=2")
    assert sample.url == "/items/3?api_key=[redacted]&page=[redacted]"
    assert "s3cret" not in repr(sample)
    assert "s3cret" not in json.dumps(sample.to_json())
