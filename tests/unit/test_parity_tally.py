"""Per-route counts of the comparator (controller.parity.tally): outcomes, windows from the
history, the per-path cap, bounded samples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.parity.diff import Reply
from controller.parity.samples import MismatchSample
from controller.parity.tally import (
    MAX_PATHS,
    OTHER_PATH,
    OUTCOMES,
    Outcome,
    ParityCounts,
    PathCounts,
    RouteTally,
)

NONE: frozenset[str] = frozenset()


def sample(at: float) -> MismatchSample:
    return MismatchSample(
        at=at,
        method="GET",
        url=f"/items/{at}",
        request_headers=(),
        request_body=b"",
        primary=Reply(200, (), b'{"a": 1}'),
        candidate=Reply(200, (), b'{"a": 2}'),
        secondary=None,
        paths=("/a",),
    )


def test_counts_compared_and_subtraction() -> None:
    c = ParityCounts(matched=5, noisy=2, mismatched=1, errors=3, skipped=4, dropped=6)
    assert c.compared == 8
    assert c - ParityCounts(matched=1, errors=1) == ParityCounts(5 - 1, 2, 1, 3 - 1, 4, 6)
    assert c.to_json() == {
        "compared": 8,
        "matched": 5,
        "noisy": 2,
        "mismatched": 1,
        "errors": 3,
        "skipped": 4,
        "dropped": 6,
    }


def test_every_outcome_counts_in_its_field() -> None:
    tally = RouteTally()
    for i, outcome in enumerate(OUTCOMES):
        for _ in range(i + 1):
            tally.record(outcome, NONE, NONE, at=10.0)
    assert tally.counts() == ParityCounts(1, 2, 3, 4, 5, 6)
    with pytest.raises(KeyError):
        tally.record("bogus", NONE, NONE, at=10.0)  # type: ignore[arg-type]


def test_paths_counted_per_kind() -> None:
    tally = RouteTally()
    tally.record("mismatched", frozenset({"/price"}), frozenset({"/meta/t"}), at=1.0)
    tally.record("noisy", NONE, frozenset({"/meta/t"}), at=2.0)
    assert tally.paths() == {"/price": PathCounts(1, 0), "/meta/t": PathCounts(0, 2)}


def test_paths_are_capped_with_other() -> None:
    tally = RouteTally(max_paths=3)
    tally.record("mismatched", frozenset({"/a", "/b"}), NONE, at=1.0)
    tally.record("mismatched", frozenset({"/c", "/d", "/e"}), frozenset({"/f"}), at=1.0)
    tally.record("mismatched", frozenset({"/a", "/g"}), NONE, at=1.0)
    paths = tally.paths()
    assert len(paths) == 4
    assert paths[OTHER_PATH] == PathCounts(mismatched=2, noisy=1)  # once per request and kind
    assert paths["/a"] == PathCounts(2, 0)


def test_default_path_cap() -> None:
    tally = RouteTally()
    for i in range(MAX_PATHS + 50):
        tally.record("mismatched", frozenset({f"/k{i}"}), NONE, at=float(i))
    paths = tally.paths()
    assert len(paths) == MAX_PATHS + 1
    assert paths[OTHER_PATH].mismatched == 50


def test_samples_bounded_newest_last() -> None:
    tally = RouteTally(samples=2)
    for t in (1.0, 2.0, 3.0):
        tally.record("mismatched", frozenset({"/a"}), NONE, at=t, sample=sample(t))
    assert [s.at for s in tally.samples()] == [2.0, 3.0]
    none_kept = RouteTally(samples=0)
    none_kept.record("mismatched", frozenset({"/a"}), NONE, at=1.0, sample=sample(1.0))
    assert none_kept.samples() == ()


def test_windows_at_one_second_resolution() -> None:
    tally = RouteTally()
    tally.record("matched", NONE, NONE, at=100.2)
    tally.record("mismatched", frozenset({"/a"}), NONE, at=100.7)
    tally.record("matched", NONE, NONE, at=101.5)
    tally.record("error", NONE, NONE, at=103.0)
    assert tally.window(99.0, 103.9) == ParityCounts(matched=2, mismatched=1, errors=1)
    # Edges are rounded up to the end of their second: 100.5 counts all of second 100.
    assert tally.window(100.5, 101.0) == ParityCounts(matched=1)
    assert tally.window(101.0, 102.0) == ParityCounts()
    assert tally.window(50.0, 100.0) == ParityCounts(matched=1, mismatched=1)
    assert tally.window(102.0, 1e9) == ParityCounts(errors=1)
    assert tally.window(0.0, 10.0) == ParityCounts()
    with pytest.raises(ValueError, match="before its start"):
        tally.window(5.0, 4.0)


def test_windows_are_clipped_to_the_retention() -> None:
    tally = RouteTally(retention_s=10)
    tally.record("matched", NONE, NONE, at=0.5)
    tally.record("mismatched", NONE, NONE, at=5.5)
    tally.record("matched", NONE, NONE, at=100.0)
    tally.record("noisy", NONE, NONE, at=101.0)
    assert len(tally._keys) <= 11
    assert tally.window(-1.0, 101.0) == ParityCounts(matched=1, noisy=1)  # clipped
    assert tally.window(100.0, 101.0) == ParityCounts(noisy=1)
    assert tally.counts() == ParityCounts(matched=2, mismatched=1, noisy=1)


def test_a_time_going_back_counts_in_the_last_second() -> None:
    tally = RouteTally()
    tally.record("matched", NONE, NONE, at=10.0)
    tally.record("matched", NONE, NONE, at=9.0)
    assert tally.window(9.5, 10.0) == ParityCounts(matched=2)


def test_to_json() -> None:
    tally = RouteTally()
    tally.record("mismatched", frozenset({"/b", "/a"}), NONE, at=1.0, sample=sample(1.0))
    body = tally.to_json()
    assert body["counts"] == ParityCounts(mismatched=1).to_json()
    assert body["paths"] == {
        "/a": {"mismatched": 1, "noisy": 0},
        "/b": {"mismatched": 1, "noisy": 0},
    }
    assert body["samples"] == [sample(1.0).to_json()]


events = st.lists(
    st.tuples(st.sampled_from(OUTCOMES), st.floats(0, 5, allow_nan=False)), max_size=40
)


@given(events=events, start=st.floats(0, 400), length=st.floats(0, 400))
def test_window_equals_counting_the_records(
    events: list[tuple[Outcome, float]], start: float, length: float
) -> None:
    tally = RouteTally(retention_s=1e6)
    at, recorded = 0.0, []
    for outcome, gap in events:
        at += gap
        tally.record(outcome, NONE, NONE, at=at)
        recorded.append((outcome, math.floor(at)))
    end = start + length
    window = tally.window(start, end)
    inside = [o for o, second in recorded if math.floor(start) < second <= math.floor(end)]
    field = {"error": "errors"}
    expected = {f: 0 for f in ParityCounts().to_json() if f != "compared"}
    for o in inside:
        expected[field.get(o, o)] += 1
    assert window == ParityCounts(**expected)
    assert tally.window(-1.0, at) == tally.counts()
