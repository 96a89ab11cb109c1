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
from controller.parity.noise import NOISE_MIN_REQUESTS, NOISE_MIN_SHARE, NoiseModel, learnable
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


def test_noise_min_share_is_a_ratio() -> None:
    assert 0.0 < NOISE_MIN_SHARE < 1.0


def test_learnt_after_min_requests() -> None:
    noise = NoiseModel()
    noise.observe(frozenset({"/t"}))
    assert not noise.is_noise("/t", frozenset())
    noise.observe(frozenset({"/t", "/u"}))
    assert noise.is_noise("/t", frozenset())
    assert not noise.is_noise("/u", frozenset())
    assert noise.learnt() == {"/t"}
    assert noise.observed == 2


def test_whole_reply_paths_are_never_learnt_only_per_request() -> None:
    noise = NoiseModel()
    whole = frozenset({":body", ":header/content-type", "/"})
    for _ in range(50):
        noise.observe(whole)
    assert noise.learnt() == frozenset()
    for path in whole:
        assert not noise.is_noise(path, frozenset())
        assert noise.is_noise(path, whole)  # the secondary differed there in this request
    assert not learnable(":status")
    assert not learnable(":header/x-anything")
    assert learnable("/meta/generated_at")
    assert learnable("/items")


def test_a_request_whose_statuses_differ_is_not_observed() -> None:
    noise = NoiseModel()
    for _ in range(10):
        noise.observe(frozenset({":status", "/error"}))
    assert noise.observed == 0
    assert noise.learnt() == frozenset()
    noise.observe(frozenset({"/error"}))  # counted from zero: the 10 above never were
    assert noise.learnt() == frozenset()


def test_rarely_differing_path_is_not_learnt() -> None:
    """Two unlucky requests in a thousand do not excuse the candidate at that path."""
    noise = NoiseModel()
    noise.observe(frozenset({"/price"}))
    for _ in range(998):
        noise.observe(frozenset())
    noise.observe(frozenset({"/price"}))
    assert noise.observed == 1000
    assert noise.learnt() == frozenset()
    assert not noise.is_noise("/price", frozenset())


def test_learnt_noise_fades_when_the_baseline_stops_differing() -> None:
    noise = NoiseModel()
    noise.observe(frozenset({"/t"}))
    noise.observe(frozenset({"/t"}))
    assert noise.learnt() == {"/t"}
    for _ in range(38):  # 2 of 40 = 5%: still noise
        noise.observe(frozenset())
    assert noise.learnt() == {"/t"}
    noise.observe(frozenset())  # 2 of 41 < 5%
    assert noise.learnt() == frozenset()
    assert not noise.is_noise("/t", frozenset())


def test_share_is_compared_exactly() -> None:
    noise = NoiseModel(min_requests=1, min_share=0.05)
    noise.observe(frozenset({"/a"}))
    for _ in range(19):
        noise.observe(frozenset())
    assert noise.learnt() == {"/a"}  # 1 of 20: exactly 5%
    noise.observe(frozenset())
    assert noise.learnt() == frozenset()


def test_memory_is_bounded() -> None:
    noise = NoiseModel(max_paths=3)
    for i in range(100):
        noise.observe(frozenset({f"/once/{i}"}))  # never twice: pending, oldest forgotten
    for i in range(5):
        noise.observe(frozenset({f"/twice/{i}"}))
        noise.observe(frozenset({f"/twice/{i}"}))
    # 110 observed: 2 of 110 is below 5%, so each new path makes room by dropping the others.
    assert noise.learnt() == frozenset()
    assert len(noise._pending) <= 3
    assert len(noise._counted) <= 3
    assert "/twice/4" in noise._counted


def test_counted_paths_full_of_noise_count_no_new_path() -> None:
    noise = NoiseModel(max_paths=2)
    for _ in range(2):
        noise.observe(frozenset({"/a", "/b"}))
    noise.observe(frozenset({"/c"}))
    noise.observe(frozenset({"/c"}))
    assert noise.learnt() == {"/a", "/b"}  # /c: no room, so never noise (a mismatch shows)
    assert not noise.is_noise("/c", frozenset())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        NoiseModel(min_requests=0)
    with pytest.raises(ValueError, match="ratio"):
        NoiseModel(min_share=5.0)


PATHS = ["/a", "/b", "/c", ":status", ":body", "/"]


@given(st.lists(st.frozensets(st.sampled_from(PATHS)), max_size=40))
def test_learnt_is_json_paths_seen_often_enough(requests: list[frozenset[str]]) -> None:
    noise = NoiseModel()
    for paths in requests:
        noise.observe(paths)
    observed = [r for r in requests if ":status" not in r]
    expected = {
        p
        for p in ["/a", "/b", "/c"]
        if (n := sum(p in r for r in observed)) >= NOISE_MIN_REQUESTS
        and n >= NOISE_MIN_SHARE * len(observed)
    }
    assert noise.observed == len(observed)
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


def error_page(status: int) -> Reply:
    return Reply(status, (("content-type", "text/html"),), f"<h1>{status}</h1>".encode())


def test_a_failing_secondary_never_excuses_a_failing_candidate() -> None:
    """The reviewer's case: a secondary answering 502 text/html twice made `:status`, `:body`
    and `content-type` learnt noise, and a candidate failing everything then passed."""
    noise = NoiseModel()
    for _ in range(2):
        found = classify(item(), item(), error_page(502), RULES, noise)
        assert found == result("matched")
    assert noise.learnt() == frozenset()
    assert noise.observed == 0
    whole = {":status", ":body", ":header/content-type"}
    assert classify(item(), error_page(500), None, RULES, noise) == result("mismatched", whole)
    # Nor does a failing secondary in the same request excuse the candidate's failure.
    assert classify(item(), error_page(502), error_page(502), RULES, noise) == result(
        "mismatched", whole
    )


def test_status_is_never_noise_through_the_secondary() -> None:
    noise = NoiseModel()
    found = classify(Reply(200), Reply(503), Reply(503), RULES, noise)
    assert found == result("mismatched", {":status"})


def test_a_whole_body_differing_is_noise_for_this_request_only() -> None:
    page = Reply(200, (("content-type", "text/html"),), b"<p>now: 1</p>")
    noise = NoiseModel()
    for now in range(2, 5):
        later = Reply(200, (("content-type", "text/html"),), f"<p>now: {now}</p>".encode())
        found = classify(page, later, later, RULES, noise)
        assert found == result("noisy", noisy={":body"})
    alone = classify(page, Reply(200, page.headers, b"<p>broken</p>"), None, RULES, noise)
    assert alone == result("mismatched", {":body"})


def test_a_candidate_failing_where_the_secondary_agrees_is_a_mismatch() -> None:
    noise = NoiseModel()
    for t in ("t1", "t2"):
        classify(item(), item(), item(generated_at=t), RULES, noise)
    assert noise.learnt() == {"/meta/generated_at"}
    found = classify(item(), error_page(500), item(generated_at="t3"), RULES, noise)
    assert found == result("mismatched", {":status", ":body", ":header/content-type"})
