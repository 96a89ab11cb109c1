"""Statistics for ``parity_throughput.py``'s Envoy part: two arms of latency samples, each
taken in several interleaved rounds, compared by quantile with a confidence interval.

Pure functions over numpy arrays (microseconds or milliseconds: whatever unit goes in comes
out). scipy is used for the Mann-Whitney U test when it is installed; everything else is
numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Difference:
    """``on - off`` at one quantile: the point estimate and a two-sided bootstrap interval."""

    quantile: float
    off: float
    on: float
    diff: float
    low: float
    high: float


def quantiles(samples: Samples, qs: Sequence[float]) -> list[float]:
    """Sample quantiles (numpy's default, linear interpolation); ``qs`` as ratios (0.99)."""
    return [float(v) for v in np.quantile(samples, qs)]


def _resample_round(
    rng: np.random.Generator, samples: Samples, block: int, draws: int
) -> npt.NDArray[np.float64]:
    """``draws`` moving-block resamples of one round (rows), each as long as the round.

    Blocks of ``block`` consecutive requests (in send order) keep the short-range dependence
    of latencies (a pause slows the requests around it together), which an i.i.d. bootstrap
    would break, making the interval too narrow (Kuensch 1989, the moving block bootstrap).
    """
    n = len(samples)
    size = max(1, min(block, n))
    count = -(-n // size)
    starts = rng.integers(0, n - size + 1, size=(draws, count))
    index = (starts[:, :, None] + np.arange(size)).reshape(draws, count * size)[:, :n]
    resampled: npt.NDArray[np.float64] = samples[index]
    return resampled


def bootstrap_differences(
    off_rounds: Sequence[Samples],
    on_rounds: Sequence[Samples],
    qs: Sequence[float],
    *,
    iterations: int,
    block: int,
    seed: int,
    confidence: float = 0.95,
) -> list[Difference]:
    """``on - off`` at each quantile of the pooled arms, with a percentile bootstrap interval.

    Each iteration resamples every round separately (stratified by round, moving blocks of
    ``block`` requests, :func:`_resample_round`), pools each arm's rounds and takes the
    quantile difference; the interval is the central ``confidence`` share of those. Rounds
    are kept apart so that each iteration has every round's share of the drift, as the
    interleaved design has.

    Raises:
        ValueError: an arm has no samples.
    """
    if not any(len(r) for r in off_rounds) or not any(len(r) for r in on_rounds):
        raise ValueError("both arms need samples")
    rng = np.random.default_rng(seed)
    off_all = np.concatenate(list(off_rounds))
    on_all = np.concatenate(list(on_rounds))
    point_off = np.quantile(off_all, qs)
    point_on = np.quantile(on_all, qs)
    diffs: list[npt.NDArray[np.float64]] = []
    chunk = 100  # iterations at a time: memory stays at a few tens of MB
    for start in range(0, iterations, chunk):
        draws = min(chunk, iterations - start)
        off = np.hstack([_resample_round(rng, r, block, draws) for r in off_rounds if len(r)])
        on = np.hstack([_resample_round(rng, r, block, draws) for r in on_rounds if len(r)])
        diffs.append(np.quantile(on, qs, axis=1).T - np.quantile(off, qs, axis=1).T)
    table = np.vstack(diffs)
    tail = (1 - confidence) / 2
    lows = np.quantile(table, tail, axis=0)
    highs = np.quantile(table, 1 - tail, axis=0)
    return [
        Difference(q, float(a), float(b), float(b - a), float(lo), float(hi))
        for q, a, b, lo, hi in zip(qs, point_off, point_on, lows, highs, strict=True)
    ]


def mann_whitney(off: Samples, on: Samples) -> tuple[float, float] | None:
    """Two-sided Mann-Whitney U test of the arms: (p-value, P(an "on" request is slower than
    an "off" one), ties counting half: 0.5 is no shift). None when scipy is not installed.

    It treats requests as independent, which latencies close in time are not: read its
    p-value as optimistic, the bootstrap interval as the verdict.
    """
    try:
        from scipy.stats import mannwhitneyu  # type: ignore[import-untyped]
    except ImportError:
        return None
    result = mannwhitneyu(on, off, alternative="two-sided")
    return float(result.pvalue), float(result.statistic) / (len(on) * len(off))


def histogram_quantiles(
    buckets: Sequence[tuple[float, float, int]], qs: Sequence[float]
) -> list[float | None]:
    """Quantiles of an Envoy histogram given as ``(lower_bound, width, count)`` buckets (the
    admin ``/stats?format=json&histogram_buckets=detailed`` form), interpolating linearly
    inside the bucket as Envoy's own summary does. None for every quantile when empty."""
    ordered = sorted((lo, width, n) for lo, width, n in buckets if n > 0)
    total = sum(n for _, _, n in ordered)
    if total == 0:
        return [None for _ in qs]
    out: list[float | None] = []
    for q in qs:
        rank = q * total
        seen = 0
        value = ordered[-1][0] + ordered[-1][1]
        for lo, width, n in ordered:
            if seen + n >= rank:
                value = lo + width * ((rank - seen) / n)
                break
            seen += n
        out.append(value)
    return out
