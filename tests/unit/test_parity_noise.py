"""Noise (controller.parity.noise) and the classification of one request
(controller.parity.classify): Diffy's primary/secondary/candidate rule."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.parity.classify import Classification, classify
from controller.parity.diff import Reply
from controller.parity.noise import NOISE_MIN_REQUESTS, NoiseModel
from controller.parity.rules import CompareRules

RULES = CompareRules()


def result(
    outcome: str, mismatched: set[str] | None = None, noisy: set[str] | None = None
) -> object:
    return (outcome, frozenset(mismatched or ()), frozenset(noisy or ()))


def item(price: float = 10.0, generated_at: str = "t0", request_id: str = "r0") -> Reply:
    body: dict[str, Any] = {
        "id": 3,
        "price": price,
        "meta": {"generated_at": generated_at, "request_id": request_id},
    }
    return Reply(200, (("content-type", "application/json"),), json.dumps(body).encode())


def test_noise_min_requests_is_two() -> None:
    assert NOISE_MIN_REQUESTS == 2


def test_per_request_noise() -> None:
    noise = NoiseModel()
    assert noise.is_noise("/a", frozenset({"/a"}))
    assert not noise.is_noise("/a", frozenset({"/b"}))


def test_learnt_after_min_requests() -> None:
    noise = NoiseModel()
    noise.observe(frozenset({"/t"}))
    assert not noise.is_noise("/t", frozenset())
    noise.observe(frozenset({"/t", "/u"}))
    assert noise.is_noise("/t", frozenset())
    assert not noise.is_noise("/u", frozenset())
    assert noise.learnt() == {"/t"}


def test_memory_is_bounded() -> None:
    noise = NoiseModel(max_paths=3)
    for i in range(100):
        noise.observe(frozenset({f"/once/{i}"}))  # never twice: pending, oldest forgotten
    for i in range(5):
        noise.observe(frozenset({f"/twice/{i}"}))
        noise.observe(frozenset({f"/twice/{i}"}))
    assert noise.learnt() == {"/twice/0", "/twice/1", "/twice/2"}  # then nothing more
    assert len(noise._pending) <= 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        NoiseModel(min_requests=0)


@given(st.lists(st.frozensets(st.sampled_from(["/a", "/b", "/c", ":status"])), max_size=8))
def test_learnt_is_paths_seen_at_least_twice(requests: list[frozenset[str]]) -> None:
    noise = NoiseModel()
    for paths in requests:
        noise.observe(paths)
    expected = {p for p in ["/a", "/b", "/c", ":status"] if sum(p in r for r in requests) >= 2}
    assert noise.learnt() == expected


def test_matched() -> None:
    found = classify(item(), item(), item(), RULES, NoiseModel())
    assert found == Classification("matched", frozenset(), frozenset())
    outcome, mismatched, noisy = found
    assert (outcome, mismatched, noisy) == ("matched", frozenset(), frozenset())


def test_a_timestamp_differing_is_noise_per_request_then_learnt() -> None:
    noise = NoiseModel()
    # Request 1: the secondary's timestamp differs too: noise for this request.
    first = classify(item(), item(generated_at="t2"), item(generated_at="t1"), RULES, noise)
    assert first == result("noisy", noisy={"/meta/generated_at"})
    # Without a secondary, one observation is not enough to call it noise.
    alone = classify(item(), item(generated_at="t3"), None, RULES, noise)
    assert alone == result("mismatched", {"/meta/generated_at"})
    # A second request where primary and secondary differ there: learnt.
    classify(item(), item(), item(generated_at="t4"), RULES, noise)
    later = classify(item(), item(generated_at="t5"), None, RULES, noise)
    assert later == result("noisy", noisy={"/meta/generated_at"})


def test_a_real_difference_next_to_noise_is_a_mismatch() -> None:
    noise = NoiseModel()
    candidate = item(price=11.0, generated_at="t2", request_id="r2")
    secondary = item(generated_at="t1", request_id="r1")
    found = classify(item(), candidate, secondary, RULES, noise)
    assert found.outcome == "mismatched"
    assert found.mismatched == {"/price"}
    assert found.noisy == {"/meta/generated_at", "/meta/request_id"}


def test_status_noise() -> None:
    noise = NoiseModel()
    found = classify(Reply(200), Reply(503), Reply(503), RULES, noise)
    assert found == result("noisy", noisy={":status"})
