"""Envoy's ``/stats/prometheus`` parsed, and increases over scrapes (pure functions).

The fixture ``fixtures/envoy_stats_prometheus.txt`` is a trimmed real scrape of Envoy 1.40.0
(from the e2e harness: 200 requests split 70/30, then 100 more with the candidate upstream
stopped: 18 of them got Envoy's own 503).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.analysis.providers.envoy_stats import (
    ClusterStats,
    StatsFormatError,
    add,
    increase,
    is_reset,
    parse_envoy_stats,
    window,
)

FIXTURE = Path(__file__).with_name("fixtures") / "envoy_stats_prometheus.txt"
ENVOY_DEFAULT_BOUNDS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000, math.inf,
)  # fmt: skip


def test_parses_a_real_envoy_scrape() -> None:
    stats = parse_envoy_stats(FIXTURE.read_text())

    assert set(stats) == {"baseline", "candidate", "sluice_xds"}
    baseline, candidate = stats["baseline"], stats["candidate"]
    assert (baseline.requests, baseline.errors) == (212, 0)  # no 5xx series: 0
    assert (candidate.requests, candidate.errors) == (70, 18)  # Envoy's 503s are not in total
    assert baseline.bounds == ENVOY_DEFAULT_BOUNDS
    assert candidate.bounds == ENVOY_DEFAULT_BOUNDS
    assert baseline.buckets[-1] == 212
    assert candidate.buckets[:3] == (50, 61, 70)
    assert candidate.buckets[-1] == 70
    assert stats["sluice_xds"] == ClusterStats(1, 0)  # no histogram yet


def test_ignores_the_same_stats_under_other_names() -> None:
    """``external_upstream_rq_xx`` and ``external_upstream_rq_time`` are not the judge's."""
    text = "\n".join(
        line
        for line in FIXTURE.read_text().splitlines()
        if "external" in line or "TYPE" in line or "downstream" in line
    )
    assert parse_envoy_stats(text) == {}


def test_errors_only_count_class_5() -> None:
    text = (
        "# TYPE envoy_cluster_upstream_rq_xx counter\n"
        'envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="a"} 90\n'
        'envoy_cluster_upstream_rq_xx{envoy_response_code_class="4",envoy_cluster_name="a"} 7\n'
        'envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="a"} 3\n'
        "# TYPE envoy_cluster_upstream_rq_total counter\n"
        'envoy_cluster_upstream_rq_total{envoy_cluster_name="a"} 100\n'
    )
    assert parse_envoy_stats(text) == {"a": ClusterStats(100, 3)}


@pytest.mark.parametrize(
    "text",
    [
        "envoy_cluster_upstream_rq_total{envoy_cluster_name=baseline} 1\n",  # unquoted label
        'envoy_cluster_upstream_rq_total{envoy_cluster_name="baseline"} many\n',
        "<html>Envoy admin</html>\n",
        "# TYPE x counter\nx 1\n<html>\n",  # any line that is not a sample or a comment
        'envoy_cluster_upstream_rq_total{envoy_cluster_name="a",x=1} 1\n',
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="b"} 1\n',  # no le
        "# TYPE envoy_cluster_upstream_rq_time histogram\n"
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="b",le="5"} 1\n',  # no +Inf
        "# TYPE envoy_cluster_upstream_rq_time histogram\n"
        'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="b",le="x"} 1\n',
    ],
)
def test_refuses_what_is_not_envoy_stats(text: str) -> None:
    with pytest.raises(StatsFormatError):
        parse_envoy_stats(text)


def test_nan_is_kept_and_reported() -> None:
    text = (
        "# TYPE envoy_cluster_upstream_rq_total counter\n"
        'envoy_cluster_upstream_rq_total{envoy_cluster_name="a"} NaN\n'
    )
    stats = parse_envoy_stats(text)["a"]
    assert math.isnan(stats.requests)
    assert stats.nan_stat() == "envoy_cluster_upstream_rq_total"
    assert ClusterStats(1, 0, (1, math.inf), (0, math.nan)).nan_stat() == (
        "envoy_cluster_upstream_rq_time_bucket"
    )
    assert ClusterStats(1, 0, (1, math.inf), (0, 1)).nan_stat() is None


def reference_parse(text: str) -> dict[str, ClusterStats]:
    """The same reduction with ``prometheus_client``'s general parser (the former one)."""
    requests: dict[str, float] = {}
    errors: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            cluster = sample.labels.get("envoy_cluster_name")
            if cluster is None:
                continue
            if sample.name == "envoy_cluster_upstream_rq_total":
                requests[cluster] = sample.value
            elif sample.name.startswith("envoy_cluster_upstream_rq_xx"):
                if sample.labels.get("envoy_response_code_class") == "5":
                    errors[cluster] = sample.value
            elif sample.name == "envoy_cluster_upstream_rq_time_bucket":
                buckets.setdefault(cluster, {})[float(sample.labels["le"])] = sample.value
    out = {}
    for cluster in requests.keys() | errors.keys() | buckets.keys():
        per_le = buckets.get(cluster, {})
        bounds = tuple(sorted(per_le))
        out[cluster] = ClusterStats(
            requests.get(cluster, 0),
            errors.get(cluster, 0),
            bounds,
            tuple(per_le[b] for b in bounds),
        )
    return out


ODD_BUT_VALID = (
    "# HELP envoy_cluster_upstream_rq_total Total requests\n"
    "# TYPE envoy_cluster_upstream_rq_total counter\n"
    'envoy_cluster_upstream_rq_total{envoy_cluster_name="a\\"b\\\\c",zone="x"} 7 1700000000000\n'
    'envoy_cluster_upstream_rq_total{ zone="y" , envoy_cluster_name="plain" } 3\n'
    "\n"
    "# TYPE envoy_cluster_upstream_rq_xx counter\n"
    'envoy_cluster_upstream_rq_xx{envoy_cluster_name="plain",envoy_response_code_class="5"} 2\n'
    'envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",'
    'envoy_cluster_name="a\\"b\\\\c"} 1\n'
    "# TYPE envoy_cluster_upstream_rq_time histogram\n"
    'envoy_cluster_upstream_rq_time_bucket{le="10",envoy_cluster_name="plain"} 1\n'
    'envoy_cluster_upstream_rq_time_bucket{le="+Inf",envoy_cluster_name="plain"} 3\n'
    'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="plain",le="1e1"} 1\n'
    'envoy_cluster_upstream_rq_time_count{envoy_cluster_name="plain"} 3\n'
    'envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="plain"} 12.5\n'
)


@pytest.mark.parametrize("name", ["fixture", "odd_but_valid"])
def test_agrees_with_prometheus_client(name: str) -> None:
    text = FIXTURE.read_text() if name == "fixture" else ODD_BUT_VALID
    assert parse_envoy_stats(text) == reference_parse(text)


def test_reads_escaped_names_and_any_label_order() -> None:
    stats = parse_envoy_stats(ODD_BUT_VALID)
    assert stats['a"b\\c'] == ClusterStats(7, 1)
    assert stats["plain"] == ClusterStats(3, 2, (10, math.inf), (1, 3))


# --- increases ------------------------------------------------------------------------------


def stats(requests: float, errors: float = 0, buckets: tuple[float, ...] = ()) -> ClusterStats:
    """Values with bounds (10, 100, +Inf) when ``buckets`` are given."""
    return ClusterStats(requests, errors, (10, 100, math.inf) if buckets else (), buckets)


def test_increase_is_last_minus_first() -> None:
    series = [
        stats(100, 1, (50, 90, 100)),
        stats(150, 1, (80, 130, 150)),
        stats(400, 5, (300, 390, 400)),
    ]
    assert increase(series) == stats(300, 4, (250, 300, 300))


def test_increase_of_one_scrape_is_zero() -> None:
    assert increase([stats(100, 1, (50, 90, 100))]) == ClusterStats(0, 0)


def test_counter_reset_counts_from_zero_like_promql() -> None:
    """PromQL's increase() over 10, 20, 5, 8 is 10 + 5 + 3 = 18 (Envoy restarted after 20)."""
    series = [stats(10), stats(20), stats(5), stats(8)]
    assert increase(series).requests == 18


def test_reset_is_seen_even_when_the_counter_climbed_back_above_its_old_value() -> None:
    """Restarted between scrapes 2 and 3, errors and buckets say so although requests grew."""
    series = [
        stats(100, 10, (50, 90, 100)),
        stats(120, 10, (60, 110, 120)),
        stats(130, 2, (100, 125, 130)),  # requests 130 > 120, but errors and buckets went down
    ]
    assert increase(series) == stats(20 + 130, 0 + 2, (10 + 100, 20 + 125, 20 + 130))


def test_a_nan_is_not_a_reset() -> None:
    """A NaN bucket spoils the latency only: the counters still grow by their difference."""
    before, after = stats(10, 0, (5, 9, 10)), stats(20, 1, (5, math.nan, 20))
    assert not is_reset(before, after)
    assert (increase([before, after]).requests, increase([before, after]).errors) == (10, 1)


def test_a_cluster_appearing_counts_from_zero() -> None:
    """Absent at the window's start (added by CDS, or Envoy's lazy 5xx/histogram stats)."""
    assert increase([None, stats(7, 1, (5, 7, 7)), stats(9, 1, (6, 9, 9))]) == stats(
        9, 1, (6, 9, 9)
    )
    # a histogram that appears (first flush) counts whole; the counters grow normally
    assert increase([stats(10), stats(12, 0, (10, 12, 12))]) == stats(2, 0, (10, 12, 12))


def test_a_cluster_removed_and_added_again_counts_from_zero() -> None:
    assert increase([stats(50), None, stats(4)]).requests == 4


def test_bounds_changed_by_a_restart_take_the_new_histogram() -> None:
    before = stats(100, 0, (50, 90, 100))
    after = ClusterStats(10, 0, (5, 10, 100, math.inf), (2, 4, 9, 10))
    assert increase([before, after]) == after


def test_sum_of_histograms_with_different_bounds_keeps_the_shared_ones() -> None:
    a = ClusterStats(10, 1, (5, 10, 100, math.inf), (2, 4, 9, 10))
    b = ClusterStats(20, 2, (10, 50, math.inf), (15, 18, 20))
    assert add(a, b) == ClusterStats(30, 3, (10, math.inf), (4 + 15, 10 + 20))
    assert add(a, ClusterStats(1, 0)) == ClusterStats(11, 1, a.bounds, a.buckets)


# --- windows --------------------------------------------------------------------------------

TIMES = (100.0, 101.0, 102.0, 103.0)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (100.0, 103.0, (0, 3)),  # scrapes exactly at the edges
        (100.5, 102.5, (0, 2)),  # last at or before each edge
        (90.0, 102.0, (0, 2)),  # nothing before start: the first scrape after it
        (101.0, 101.0, None),  # an empty window
        (101.2, 101.8, None),  # no scrape inside: both edges read the same scrape
        (50.0, 99.0, None),  # before the first scrape
        (103.0, 110.0, None),  # after the last scrape
    ],
)
def test_window_edges(start: float, end: float, expected: tuple[int, int] | None) -> None:
    assert window(TIMES, start, end) == expected


def test_window_of_nothing() -> None:
    assert window((), 0, 10) is None
