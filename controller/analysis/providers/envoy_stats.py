"""Envoy's ``/stats/prometheus`` reduced to what the judge reads, and increases over a window.

Pure (no I/O, no clock): :func:`parse_envoy_stats` turns one scrape's text into per-cluster
cumulative values; :func:`increase` turns the scrapes of one Envoy over a window into the
growth of those values, handling counter resets the way PromQL's ``increase()`` does (a value
that goes down means Envoy restarted, or the cluster was removed and added again: the new value
counted from 0). No extrapolation: the increase is exactly the difference between two scrapes.

Envoy's quirks, seen on Envoy 1.40 (``tests/unit/fixtures/envoy_stats_prometheus.txt``):

- ``upstream_rq_5xx`` (exported as ``envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}``)
  exists only after the cluster's first 5xx: no series means 0 errors;
- ``upstream_rq_time`` exists only after the first flush (``stats_flush_interval``) that saw a
  request; histograms are updated at each flush while counters are live, so a scrape's
  histogram lags its counters by up to one flush interval;
- a 503 that Envoy sends itself because no connection to the upstream could be made is counted
  in ``upstream_rq_5xx`` but neither in ``upstream_rq_total`` nor in ``upstream_rq_time``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "envoy_cluster_upstream_rq_total"
RESPONSE_CLASSES = "envoy_cluster_upstream_rq_xx"
LATENCY_BUCKET = "envoy_cluster_upstream_rq_time_bucket"
_RESPONSE_CLASS_SAMPLES = frozenset({RESPONSE_CLASSES, f"{RESPONSE_CLASSES}_total"})
"""``prometheus_client``'s parser renames the samples of a ``counter`` family whose name lacks
``_total`` (OpenMetrics' rule): ``envoy_cluster_upstream_rq_xx`` comes out as ``..._xx_total``."""
CLUSTER_LABEL = "envoy_cluster_name"
CLASS_LABEL = "envoy_response_code_class"

STATS_FILTER = r"^cluster\..+\.(upstream_rq_total|upstream_rq_5xx|upstream_rq_time)$"
"""Envoy's admin ``filter`` (RE2 over Envoy's own stat names) that keeps the scrape to the
three stats read here (and a few same-suffix ones, e.g. ``external.upstream_rq_time``, that
the parser ignores): ~250 lines per cluster instead of ~1,700 lines per Envoy."""


class StatsFormatError(ValueError):
    """A scrape's text is not the Prometheus text format, or a histogram has no ``+Inf``."""


@dataclass(frozen=True, slots=True)
class ClusterStats:
    """One cluster's cumulative values in one scrape (or their increase over a window).

    Attributes:
        requests: ``envoy_cluster_upstream_rq_total``.
        errors: ``envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}`` (0: no series).
        bounds: ``le`` bounds of ``envoy_cluster_upstream_rq_time_bucket`` in ms, ascending,
            the last ``inf``; ``()`` when Envoy has no histogram for the cluster yet.
        buckets: cumulative counts per bound.
    """

    requests: float
    errors: float
    bounds: tuple[float, ...] = ()
    buckets: tuple[float, ...] = ()

    def nan_stat(self) -> str | None:
        """The name of a stat whose value is NaN, or None."""
        if math.isnan(self.requests):
            return REQUESTS
        if math.isnan(self.errors):
            return f'{RESPONSE_CLASSES}{{{CLASS_LABEL}="5"}}'
        if any(math.isnan(v) for v in self.buckets):
            return LATENCY_BUCKET
        return None


EnvoyStats = dict[str, ClusterStats]
"""One scrape of one Envoy: cluster name → its values."""


def parse_envoy_stats(text: str) -> EnvoyStats:
    """The per-cluster values in one ``/stats/prometheus`` text (other stats are ignored).

    Raises:
        StatsFormatError: the text does not parse, or a cluster's histogram has no ``+Inf``
            bucket or a non-numeric ``le``.
    """
    requests: dict[str, float] = {}
    errors: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    shared: dict[float, float] = {}  # one object per distinct value: cumulative buckets repeat
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                cluster = sample.labels.get(CLUSTER_LABEL)
                if cluster is None:
                    continue
                if sample.name == REQUESTS:
                    requests[cluster] = float(sample.value)
                elif sample.name in _RESPONSE_CLASS_SAMPLES:
                    if sample.labels.get(CLASS_LABEL) == "5":
                        errors[cluster] = float(sample.value)
                elif sample.name == LATENCY_BUCKET:
                    le = float(sample.labels["le"])
                    value = float(sample.value)
                    buckets.setdefault(cluster, {})[le] = shared.setdefault(value, value)
    except (ValueError, KeyError, TypeError) as exc:
        raise StatsFormatError(f"not the Prometheus text format: {exc}") from exc
    stats: EnvoyStats = {}
    for cluster in sorted(requests.keys() | errors.keys() | buckets.keys()):
        per_le = buckets.get(cluster, {})
        if per_le and math.inf not in per_le:
            raise StatsFormatError(f'{LATENCY_BUCKET}{{{CLUSTER_LABEL}="{cluster}"}} has no +Inf')
        bounds = tuple(sorted(per_le))
        stats[cluster] = ClusterStats(
            requests.get(cluster, 0.0),
            errors.get(cluster, 0.0),
            bounds,
            tuple(per_le[b] for b in bounds),
        )
    return stats


def coarsen(
    bounds: tuple[float, ...], buckets: tuple[float, ...], keep: Iterable[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The histogram restricted to the bounds in ``keep`` (cumulative counts stay exact at
    every bound, so dropping bounds loses resolution, never correctness)."""
    wanted = set(keep)
    pairs = [(b, c) for b, c in zip(bounds, buckets, strict=True) if b in wanted]
    return tuple(b for b, _ in pairs), tuple(c for _, c in pairs)


def add(a: ClusterStats, b: ClusterStats) -> ClusterStats:
    """The sum of two increases. Histograms with different bounds are summed on the bounds
    they share (at least ``+Inf``); an empty histogram is neutral."""
    if not a.bounds or not b.bounds:
        bounds, counts = (a.bounds, a.buckets) if a.bounds else (b.bounds, b.buckets)
    elif a.bounds == b.bounds:
        bounds, counts = a.bounds, tuple(x + y for x, y in zip(a.buckets, b.buckets, strict=True))
    else:
        common = set(a.bounds) & set(b.bounds)
        bounds, ca = coarsen(a.bounds, a.buckets, common)
        _, cb = coarsen(b.bounds, b.buckets, common)
        counts = tuple(x + y for x, y in zip(ca, cb, strict=True))
    return ClusterStats(a.requests + b.requests, a.errors + b.errors, bounds, counts)


ZERO = ClusterStats(0.0, 0.0)


def _is_reset(before: ClusterStats, after: ClusterStats) -> bool:
    if after.requests < before.requests or after.errors < before.errors:
        return True
    if not before.bounds:
        return False
    if after.bounds != before.bounds:
        return bool(after.bounds)  # a histogram that vanished is ignored, not a reset
    return any(y < x for x, y in zip(before.buckets, after.buckets, strict=True))


def _step(before: ClusterStats, after: ClusterStats) -> ClusterStats:
    """The growth from ``before`` to ``after`` (consecutive scrapes of one cluster)."""
    if before is after:
        return ZERO
    if _is_reset(before, after):
        return after
    if not after.bounds:
        bounds: tuple[float, ...] = ()
        counts: tuple[float, ...] = ()
    elif not before.bounds:
        bounds, counts = after.bounds, after.buckets
    else:
        bounds = after.bounds
        counts = tuple(y - x for x, y in zip(before.buckets, after.buckets, strict=True))
    return ClusterStats(
        after.requests - before.requests, after.errors - before.errors, bounds, counts
    )


def increase(series: Sequence[ClusterStats | None]) -> ClusterStats:
    """The growth of one cluster's values over consecutive scrapes of one Envoy (``None``: the
    cluster was absent from that scrape, i.e. all zero), resets handled per step."""
    total = ZERO
    previous: ClusterStats | None = None
    for index, current in enumerate(series):
        if current is None:
            previous = None
            continue
        if previous is not None:
            total = add(total, _step(previous, current))
        elif index > 0:
            total = add(total, current)  # the cluster (re)appeared: its values are new
        previous = current
    return total


def window(times: Sequence[float], start: float, end: float) -> tuple[int, int] | None:
    """Indexes ``(first, last)`` of the scrapes (``times`` ascending) that bound ``[start,
    end]``: ``first`` the last scrape at or before ``start`` (the first after it when there is
    none), ``last`` the last scrape at or before ``end``. None when no two distinct scrapes do
    (nothing scraped yet, or no scrape after ``first`` and at or before ``end``)."""
    last = last_at_or_before(times, end)
    if last is None:
        return None
    first = last_at_or_before(times, start)
    if first is None:
        first = 0
    if last <= first:
        return None
    return first, last


def last_at_or_before(times: Sequence[float], t: float) -> int | None:
    lo, hi = 0, len(times)
    while lo < hi:  # first index with times[index] > t
        mid = (lo + hi) // 2
        if times[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1 if lo > 0 else None
