"""The ``envoy_admin`` provider's answer: a window's :class:`~controller.analysis.sli.Sample`
(or :class:`~controller.analysis.sli.NoSample`) from the retained scrapes of every Envoy.

Pure (no I/O; ``now`` is given). Outcomes, none of them a pass:

- no Envoy has scrapes covering the window (every scrape failed, nothing scraped yet, or the
  last good scrape is stale) → ``NoSample("error")`` naming each URL and its error;
- a cluster is absent from the scrapes of every usable Envoy → ``NoSample("empty")``;
- a counter read is NaN → ``NoSample("nan")``.

The latency alone can be missing while the counts are not: a side that served requests (or
5xx) without a histogram (a candidate down from the start: Envoy answers 503 itself, counts
them in ``upstream_rq_xx`` but times no response), a NaN bucket, or a histogram that does not
add up reads as :data:`~controller.analysis.sli.EMPTY_HISTOGRAM` and ``gaps[LATENCY_GAP]``
says why (``empty``, ``nan``, ``error``). A side without requests nor histogram is zero, no gap.

Some Envoys failing while others have data: the sample counts the ones with data and says
which were left out in :attr:`Sample.warnings`. Zero requests is a sample (the judge decides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.analysis.providers import envoy_stats
from controller.analysis.providers.envoy_admin_series import EnvoySeries
from controller.analysis.providers.envoy_stats import ClusterStats
from controller.analysis.sli import (
    EMPTY_HISTOGRAM,
    LATENCY_GAP,
    Histogram,
    NoSample,
    Sample,
    SampleResult,
    SideCounts,
    merge_gaps,
)


def window_sample(
    envoys: Sequence[EnvoySeries],
    baseline: str,
    candidate: str,
    start: float,
    end: float,
    *,
    now: float,
    stale_after_s: float,
) -> SampleResult:
    """Both clusters' increases over ``[start, end]``, summed over the Envoys with data (an
    Envoy whose last scrape in the window is older than ``stale_after_s`` at ``min(end, now)``
    is left out)."""
    horizon = min(end, now)
    spans: list[Span] = []
    problems: list[str] = []
    warnings: list[str] = []
    for series in envoys:
        edges = series.window(start, end)
        if edges is None or horizon - series.time_of(edges[1]) > stale_after_s:
            problems.append(series.problem(now))
            continue
        offset = series.time_of(edges[0]) - start
        if abs(offset) > stale_after_s:
            warnings.append(
                f"{series.url}: counted from a scrape {abs(offset):.1f}s"
                f" {'after' if offset > 0 else 'before'} the window's start (none closer)"
            )
        spans.append(Span(series, *edges))
    if not spans:
        return NoSample(
            "error",
            f"no Envoy admin endpoint has scrapes covering the window [{start:.3f},"
            f" {end:.3f}]: " + "; ".join(problems),
        )
    if problems:
        warnings.insert(
            0, f"counted {len(spans)} of {len(envoys)} Envoys; left out: " + "; ".join(problems)
        )
    sides = {cluster: side_increase(cluster, spans) for cluster in (baseline, candidate)}
    urls = ", ".join(span.series.url for span in spans)
    for side in sides.values():
        if side.counter_nan is not None:
            return NoSample("nan", side.counter_nan)
    missing = [cluster for cluster, side in sides.items() if not side.found]
    if missing:
        return NoSample(
            "empty",
            f"no stats for cluster(s) {', '.join(map(repr, missing))} in the scrapes of"
            f" {urls} over the window (unknown cluster name, or not pushed to Envoy yet)"
            + (f"; also: {'; '.join(problems)}" if problems else ""),
        )
    gaps: list[NoSample] = []
    base, cand = (_counts(c, sides[c], urls, gaps) for c in (baseline, candidate))
    return Sample(start, end, base, cand, gaps=_latency_gap(gaps), warnings=tuple(warnings))


@dataclass(frozen=True)
class Span:
    """The scrapes of one Envoy that bound a window (seqs)."""

    series: EnvoySeries
    first: int
    last: int


@dataclass(frozen=True)
class SideIncrease:
    """One cluster's increase over a window, summed over Envoys.

    Attributes:
        total: the sum (bounds ``()``: no Envoy had a histogram for it in the window).
        found: whether any scrape of the window had the cluster at all.
        counter_nan: a NaN counter, for people (the sample is NaN).
        bucket_nan: a NaN latency bucket, for people (the latency is).
    """

    total: ClusterStats
    found: bool
    counter_nan: str | None = None
    bucket_nan: str | None = None


def side_increase(cluster: str, spans: Sequence[Span]) -> SideIncrease:
    """``cluster``'s increase over each span, summed."""
    total, found, bucket_nan = envoy_stats.ZERO, False, None
    for span in spans:
        track = span.series.tracks.get(cluster)
        if track is None or not track.present(span.first, span.last):
            continue
        found = True
        nan = track.first_nan(span.first, span.last)
        if nan is not None:
            seq, stat = nan
            message = (
                f'{stat} is NaN for {envoy_stats.CLUSTER_LABEL}="{cluster}" in the scrape of'
                f" {span.series.url} at {span.series.time_of(seq):.3f}"
            )
            if stat != envoy_stats.LATENCY_BUCKET:
                return SideIncrease(total, found, counter_nan=message)
            bucket_nan = bucket_nan or message
        total = envoy_stats.add(total, track.increase(span.first, span.last))
    if bucket_nan is not None:
        total = ClusterStats(total.requests, total.errors)
    return SideIncrease(total, found, bucket_nan=bucket_nan)


def _counts(cluster: str, side: SideIncrease, urls: str, gaps: list[NoSample]) -> SideCounts:
    """The side's counts; its latency :data:`EMPTY_HISTOGRAM` with a gap added to ``gaps``
    when its histogram is NaN, does not add up, or is missing while it served requests."""
    total = side.total
    counts = SideCounts(total.requests, total.errors)
    if side.bucket_nan is not None:
        gaps.append(NoSample("nan", side.bucket_nan))
    elif not total.bounds:
        if counts.attempts > 0:  # nothing served: no histogram is an empty one, not a gap
            gaps.append(
                NoSample(
                    "empty",
                    f"no latency histogram ({envoy_stats.LATENCY_BUCKET}) for cluster"
                    f" {cluster!r} in the scrapes of {urls} over the window, for"
                    f" {counts.attempts:.0f} requests: Envoy timed no response (none answered"
                    " by the upstream, e.g. every connection refused), or not flushed yet",
                )
            )
    else:
        try:
            return SideCounts(total.requests, total.errors, Histogram(total.bounds, total.buckets))
        except ValueError as exc:  # a histogram Envoy should never produce
            gaps.append(NoSample("error", f"inconsistent latency histogram for {cluster!r}: {exc}"))
    return SideCounts(total.requests, total.errors, EMPTY_HISTOGRAM)


def _latency_gap(gaps: Sequence[NoSample]) -> dict[str, NoSample]:
    """One :data:`LATENCY_GAP` for both sides: the worst kind, every message."""
    return {LATENCY_GAP: merge_gaps(gaps)} if gaps else {}
