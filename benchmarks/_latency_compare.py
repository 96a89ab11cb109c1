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


_CHUNK = 50
"""Bootstrap iterations resampled at a time: every round block-resampled at once for them
(memory: a few MB)."""


def _block_indices(
    rng: np.random.Generator, n: int, block: int, draws: int
) -> npt.NDArray[np.intp]:
    """``draws`` rows of ``n`` indices into a round of ``n`` requests: moving blocks.

    Blocks of ``block`` consecutive requests (in send order) keep the short-range dependence
    of latencies (a pause slows the requests around it together), which an i.i.d. bootstrap
    would break, making the interval too narrow (Kuensch 1989, the moving block bootstrap).
    """
    size = max(1, min(block, n))
    count = -(-n // size)
    starts = rng.integers(0, n - size + 1, size=(draws, count))
    index: npt.NDArray[np.intp] = (starts[:, :, None] + np.arange(size)).reshape(
        draws, count * size
    )[:, :n]
    return index


def _resample_round(
    rng: np.random.Generator, samples: Samples, block: int, draws: int
) -> npt.NDArray[np.float64]:
    """``draws`` moving-block resamples of one round (rows), each as long as the round
    (:func:`_block_indices`)."""
    resampled: npt.NDArray[np.float64] = samples[_block_indices(rng, len(samples), block, draws)]
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
    """``on - off`` at each quantile of the pooled arms, with a two-stage bootstrap interval.

    Each iteration draws, for each arm, as many rounds as it has, with replacement (stage 1),
    resamples each drawn round in moving blocks of ``block`` requests (stage 2,
    :func:`_resample_round`), pools them and takes the quantile difference; the interval is
    the central ``confidence`` share of those differences (percentile interval).

    Stage 1 is what makes the interval honest on a shared machine: two rounds of the same arm
    differ by far more than their own sampling error (A/A rounds here, mirroring off in both
    arms: p99 from 4.1 to 27.6 ms), and an interval that resamples only within rounds treats
    those round effects as fixed, so it calls an A/A comparison a difference. Resampling both
    stages is the conservative choice for two-stage data (Davison & Hinkley 1997, Bootstrap
    Methods and their Application, section 3.8).

    Raises:
        ValueError: an arm has no samples.
    """
    off_rounds = [r for r in off_rounds if len(r)]
    on_rounds = [r for r in on_rounds if len(r)]
    if not off_rounds or not on_rounds:
        raise ValueError("both arms need samples")
    rng = np.random.default_rng(seed)
    point_off = np.quantile(np.concatenate(off_rounds), qs)
    point_on = np.quantile(np.concatenate(on_rounds), qs)
    diffs: list[npt.NDArray[np.float64]] = []
    for start in range(0, iterations, _CHUNK):
        draws = min(_CHUNK, iterations - start)
        off_tables = [_resample_round(rng, r, block, draws) for r in off_rounds]
        on_tables = [_resample_round(rng, r, block, draws) for r in on_rounds]
        for row in range(draws):
            off = _draw_rounds(rng, off_tables, row)
            on = _draw_rounds(rng, on_tables, row)
            diffs.append(np.quantile(on, qs) - np.quantile(off, qs))
    return _percentile_intervals(qs, point_off, point_on, diffs, confidence)


def _draw_rounds(
    rng: np.random.Generator, tables: Sequence[npt.NDArray[np.float64]], row: int
) -> npt.NDArray[np.float64]:
    """Stage 1 of one resample: as many rounds as the arm has, drawn with replacement, each
    taken as its ``row``-th block resample (stage 2). A round drawn twice repeats the same
    stage-2 resample, which errs on the wide side."""
    drawn = rng.integers(0, len(tables), size=len(tables))
    return np.concatenate([tables[k][row] for k in drawn])


def paired_bootstrap_differences(
    rounds: Sequence[tuple[Samples, npt.NDArray[np.bool_]]],
    qs: Sequence[float],
    *,
    iterations: int,
    block: int,
    seed: int,
    confidence: float = 0.95,
) -> list[Difference]:
    """``on - off`` at each quantile when every round interleaves both arms request by
    request: ``rounds`` holds, per round, the latencies in send order and a flag per request
    (True: the "on" arm). Returns the pooled quantile differences with a two-stage
    percentile bootstrap interval.

    Each iteration draws rounds with replacement (stage 1) and, within each drawn round,
    moving blocks of ``block`` requests (stage 2, :func:`_block_indices`), the same draws for
    both arms: a block holds both arms' requests of one stretch of time, so a machine pause or
    a slow round weighs on both sides of every resample and cancels in the difference instead
    of widening it (the paired design's point; the same two stages as
    :func:`bootstrap_differences`).

    Raises:
        ValueError: an arm has no samples.
    """
    rounds = [(latency, flags) for latency, flags in rounds if len(latency)]
    if not rounds or any(len(latency) != len(flags) for latency, flags in rounds):
        raise ValueError("every round needs as many flags as latencies")
    on_all = np.concatenate([latency[flags] for latency, flags in rounds])
    off_all = np.concatenate([latency[~flags] for latency, flags in rounds])
    if not len(on_all) or not len(off_all):
        raise ValueError("both arms need samples")
    rng = np.random.default_rng(seed)
    point_off = np.quantile(off_all, qs)
    point_on = np.quantile(on_all, qs)
    diffs: list[npt.NDArray[np.float64]] = []
    for start in range(0, iterations, _CHUNK):
        draws = min(_CHUNK, iterations - start)
        tables = []
        for latency, flags in rounds:
            index = _block_indices(rng, len(latency), block, draws)
            tables.append((latency[index], flags[index]))
        for row in range(draws):
            drawn = rng.integers(0, len(tables), size=len(tables))
            latency = np.concatenate([tables[k][0][row] for k in drawn])
            flags = np.concatenate([tables[k][1][row] for k in drawn])
            on, off = latency[flags], latency[~flags]
            if not len(on) or not len(off):
                continue  # a resample without one arm says nothing about the difference
            diffs.append(np.quantile(on, qs) - np.quantile(off, qs))
    if not diffs:
        raise ValueError("no resample held both arms: too few requests per arm")
    return _percentile_intervals(qs, point_off, point_on, diffs, confidence)


def _percentile_intervals(
    qs: Sequence[float],
    point_off: npt.NDArray[np.float64],
    point_on: npt.NDArray[np.float64],
    diffs: list[npt.NDArray[np.float64]],
    confidence: float,
) -> list[Difference]:
    """One :class:`Difference` per quantile: the point estimates, and the central
    ``confidence`` share of the resampled differences (``diffs``: one row per resample)."""
    table = np.vstack(diffs)
    tail = (1 - confidence) / 2
    lows = np.quantile(table, tail, axis=0)
    highs = np.quantile(table, 1 - tail, axis=0)
    return [
        Difference(q, float(a), float(b), float(b - a), float(lo), float(hi))
        for q, a, b, lo, hi in zip(qs, point_off, point_on, lows, highs, strict=True)
    ]


def verdict(
    p99: Difference, bound: float, narrower: str = "more rounds, or the paired design"
) -> str:
    """The reading of the p99 difference's 95% interval against ``bound`` (ms).

    "No measurable increase" is claimed only when the whole interval lies under the bound:
    an interval that includes 0 but reaches beyond the bound is inconclusive (absence of
    evidence is not evidence of absence), whatever its point estimate.
    """
    span = f"p99 on - off {p99.diff:+.3f} ms, 95% CI [{p99.low:+.3f}, {p99.high:+.3f}] ms"
    if p99.high <= bound:
        if p99.low > 0:
            return f"a measurable increase within the bound ({span}; bound {bound:.3f} ms)"
        return f"no measurable increase ({span}: under the bound {bound:.3f} ms)"
    if p99.low <= 0:
        return (
            f"inconclusive ({span}: includes 0 and increases above the bound {bound:.3f} ms;"
            f" {narrower} would narrow it)"
        )
    return f"a measurable increase beyond the bound ({span}; bound {bound:.3f} ms)"


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
