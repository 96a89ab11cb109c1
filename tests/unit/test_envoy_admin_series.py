"""The ``envoy_admin`` provider's retained series: a window's increase from its edges and
breaks equals the step-by-step ``increase()`` over every scrape of the window (property
tests: absences, resets, histograms appearing, vanishing or changing bounds, retention)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.analysis.providers.envoy_admin_sample import Span, side_increase
from controller.analysis.providers.envoy_admin_series import ClusterTrack, EnvoySeries
from controller.analysis.providers.envoy_stats import ClusterStats, increase

FINE = (10.0, 50.0, 100.0, math.inf)
COARSE = (10.0, 100.0, math.inf)


@st.composite
def scrapes(draw: st.DrawFn) -> list[ClusterStats | None]:
    """One cluster's values over consecutive scrapes of one Envoy (None: absent): growing
    counters with occasional restarts, the histogram (one of two bound sets) sometimes
    absent, sometimes unchanged (as between two stats flushes)."""
    out: list[ClusterStats | None] = []
    requests = errors = 0.0
    bounds: tuple[float, ...] = ()
    counts: list[float] = []
    for _ in range(draw(st.integers(1, 40))):
        event = draw(st.sampled_from(["grow"] * 6 + ["same", "absent", "restart", "hist"]))
        if event == "absent":
            out.append(None)
            continue
        if event == "restart":
            requests = errors = 0.0
            bounds, counts = (), []
        if event == "hist":
            bounds = draw(st.sampled_from([(), FINE, COARSE]))
            counts = [0.0] * len(bounds)
        if event in ("grow", "restart", "hist"):
            new = draw(st.integers(0, 20))
            requests += new
            errors += draw(st.integers(0, new))
            if bounds:
                slowest = draw(st.integers(0, len(bounds) - 1))
                for i in range(slowest, len(bounds)):
                    counts[i] += new
        out.append(ClusterStats(requests, errors, bounds, tuple(counts)))
    return out


def track_of(values: list[ClusterStats | None], offset: int = 0) -> ClusterTrack:
    track = ClusterTrack()
    for seq, value in enumerate(values, start=offset):
        if value is not None:
            track.append(seq, value)
    return track


@settings(max_examples=200, deadline=None)
@given(scrapes(), st.data())
def test_window_increase_equals_the_sum_of_steps(
    values: list[ClusterStats | None], data: st.DataObject
) -> None:
    offset = data.draw(st.integers(0, 5))
    track = track_of(values, offset)
    first = data.draw(st.integers(0, len(values) - 1))
    last = data.draw(st.integers(first, len(values) - 1))
    window = values[first : last + 1]
    expected = increase(window)
    assert track.increase(offset + first, offset + last) == expected
    assert track.present(offset + first, offset + last) == any(v is not None for v in window)


@settings(max_examples=100, deadline=None)
@given(scrapes(), st.data())
def test_dropping_old_scrapes_keeps_later_windows(
    values: list[ClusterStats | None], data: st.DataObject
) -> None:
    track = track_of(values)
    cut = data.draw(st.integers(0, len(values) - 1))
    track.drop_before(cut)
    assert all(seq >= cut for seq in (*track.seqs, *track.breaks))
    first = data.draw(st.integers(cut, len(values) - 1))
    last = data.draw(st.integers(first, len(values) - 1))
    assert track.increase(first, last) == increase(values[first : last + 1])


def test_unchanged_histograms_are_stored_once() -> None:
    track = ClusterTrack()
    for seq, requests in enumerate((10, 11, 12)):
        track.append(seq, ClusterStats(requests, 0, COARSE, (5, 9, 10)))
    assert len({id(b) for b in track.buckets}) == 1
    assert len({id(b) for b in track.bounds}) == 1
    assert track.breaks == [0]
    assert track.increase(0, 2) == ClusterStats(2, 0, COARSE, (0, 0, 0))


def test_nans_are_found_by_window() -> None:
    track = ClusterTrack()
    track.append(0, ClusterStats(1, 0, COARSE, (0, 1, 1)))
    track.append(1, ClusterStats(2, 0, COARSE, (0, math.nan, 2)))
    track.append(2, ClusterStats(math.nan, 0, COARSE, (0, 3, 3)))
    assert track.first_nan(0, 0) is None
    assert track.first_nan(0, 1) == (1, "envoy_cluster_upstream_rq_time_bucket")
    assert track.first_nan(0, 2) == (2, "envoy_cluster_upstream_rq_total")  # counters first


def test_series_retention_and_sums_over_envoys() -> None:
    one, two = EnvoySeries("http://a"), EnvoySeries("http://b")
    for t in range(10):
        one.record(100.0 + t, {"b": ClusterStats(10.0 * t, 0, COARSE, (t, 2 * t, 3 * t))}, 5.0)
        two.record(100.0 + t, {"b": ClusterStats(float(t), 1, FINE, (0, t, t, t))}, 5.0)
    assert one.times == [104.0, 105.0, 106.0, 107.0, 108.0, 109.0]
    assert one.first_seq == 4
    assert one.window(100.0, 109.0) == (4, 9)
    assert one.time_of(9) == 109.0
    spans = [Span(series, *edges) for series in (one, two) if (edges := series.window(105, 109))]
    side = side_increase("b", spans)
    assert side.found
    assert side.total == ClusterStats(40 + 4, 0, COARSE, (4 + 0, 8 + 4, 12 + 4))
    assert not side_increase("other", spans).found


def test_a_cluster_gone_for_the_whole_retention_is_forgotten() -> None:
    series = EnvoySeries("http://a")
    series.record(0.0, {"old": ClusterStats(1, 0)}, 2.0)
    for t in range(1, 5):
        series.record(float(t), {"new": ClusterStats(t, 0)}, 2.0)
    assert set(series.tracks) == {"new"}


@pytest.mark.parametrize("seq", [0, 3])
def test_one_scrape_has_no_increase(seq: int) -> None:
    track = track_of([ClusterStats(5, 1, COARSE, (1, 2, 5))], seq)
    assert track.increase(seq, seq) == ClusterStats(0, 0)
