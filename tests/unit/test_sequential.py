"""The anytime-valid e-values and confidence sequences for a proportion
(``controller.analysis.sequential``): their shape, their monotonicity (which the judge's
validity argument relies on) and, by simulation, their time-uniform error rates next to a naive
fixed-level test repeated at every look."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from controller.analysis.sequential import (
    log_e_value,
    log_e_value_below,
    lower_bound,
    upper_bound,
)

ALPHA = 0.05
STREAMS = 2_000
EVERY = 50
LOOKS = 100  # looks every 50 trials up to 5,000
Z_ONE_SIDED = 1.6448536269514722  # the 95% quantile of N(0, 1)


def _tolerance(rate: float, n: int) -> float:
    """Three binomial standard deviations of an observed rate over ``n`` streams."""
    return 3 * math.sqrt(rate * (1 - rate) / n)


# --- shape -------------------------------------------------------------------------------------


@pytest.mark.parametrize("p0", [1e-6, 0.001, 0.01, 0.3, 0.9])
def test_no_data_is_no_evidence(p0: float) -> None:
    assert log_e_value(0, 0, p0) == 0.0
    assert log_e_value_below(0, 0, p0) == 0.0
    assert upper_bound(0, 0, 0.05) == 1.0
    assert lower_bound(0, 0, 0.05) == 0.0


def test_e_value_decreases_in_the_null() -> None:
    values = [log_e_value(30, 1000, p0) for p0 in (0.005, 0.01, 0.02, 0.03, 0.05, 0.1)]
    assert all(a > b for a, b in itertools.pairwise(values)), values
    # Far above the null it is large, at the maximum-likelihood value it is below 1.
    assert values[0] > math.log(1 / 1e-6)
    assert log_e_value(30, 1000, 0.03) <= 0.0


def test_e_value_increases_in_the_successes() -> None:
    values = [log_e_value(x, 1000, 0.01) for x in range(0, 60, 5)]
    assert all(a < b for a, b in itertools.pairwise(values)), values


def test_mirror_e_value_moves_the_other_way() -> None:
    in_null = [log_e_value_below(10, 1000, p0) for p0 in (0.01, 0.02, 0.05, 0.1)]
    assert all(a < b for a, b in itertools.pairwise(in_null)), in_null
    in_x = [log_e_value_below(x, 1000, 0.05) for x in range(0, 60, 5)]
    assert all(a > b for a, b in itertools.pairwise(in_x)), in_x


@pytest.mark.parametrize(("x", "m"), [(-1, 10), (1, -1), (11, 10)])
def test_invalid_counts_are_refused(x: float, m: float) -> None:
    with pytest.raises(ValueError, match="invalid counts"):
        log_e_value(x, m, 0.1)


def test_a_null_of_one_cannot_be_exceeded() -> None:
    assert log_e_value(10, 10, 1.0) == -math.inf


_NULLS = [i / 200 for i in range(1, 200)]  # 0.005 ... 0.995, through every clipping point
_COUNTS = [(x, m) for m in (1, 2, 5, 20, 100, 400) for x in sorted({0, 1, m // 3, m // 2, m})]


@pytest.mark.parametrize(
    ("name", "fn", "sign"),
    [("log_e_value", log_e_value, -1), ("log_e_value_below", log_e_value_below, +1)],
)
def test_a_larger_null_never_gives_a_larger_e_value(
    name: str, fn: Callable[[float, float, float], float], sign: int
) -> None:
    """The judge tests against a conservative null (the baseline's upper confidence bound
    times 1 + maxDrift) and relies on this: for fixed counts, ``log_e_value`` never grows with
    ``p0`` (and ``log_e_value_below`` never falls), over the whole range of ``p0`` and of
    counts. (Clipping the alternatives ``k * p0`` at a constant near 1 broke it for
    ``p0 > 1 / k``.)"""
    bad = []
    for x, m in _COUNTS:
        values = [fn(x, m, p0) for p0 in _NULLS]
        for p0, a, b in zip(_NULLS[1:], values, values[1:], strict=False):
            if sign * (b - a) < -1e-9 * max(1.0, abs(a)):
                bad.append((x, m, p0, a, b))
    assert not bad, f"{name} not monotone in p0 at (x, m, p0, before, after): {bad[:5]}"


# --- confidence bounds -------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "m"), [(0, 10), (3, 10), (10, 10), (5, 1000), (500, 1000)])
def test_bounds_bracket_the_share(x: float, m: float) -> None:
    lo, hi = lower_bound(x, m, 0.05), upper_bound(x, m, 0.05)
    assert 0.0 <= lo <= x / m <= hi <= 1.0
    assert lo < hi


def test_bounds_shrink_with_more_trials() -> None:
    widths = []
    for m in (100, 1_000, 10_000, 100_000):
        x = m // 10
        lo, hi = lower_bound(x, m, 0.05), upper_bound(x, m, 0.05)
        assert lo < 0.1 < hi
        widths.append(hi - lo)
    assert all(a > b for a, b in itertools.pairwise(widths)), widths
    assert widths[0] > 2 * widths[1] > 4 * widths[2], widths


def test_bounds_shrink_to_the_share() -> None:
    """With the 1.05x alternatives the confidence sequence closes to within ~2.5% of p."""
    x, m = 1_000_000, 100_000_000
    assert upper_bound(x, m, 0.05) < 1.05 * 0.01
    assert lower_bound(x, m, 0.05) > 0.95 * 0.01


def test_bounds_are_the_inversion_of_the_tests() -> None:
    """``upper_bound`` is where ``H0: p >= p0`` starts being rejected, ``lower_bound`` where
    ``H0: p <= p0`` stops being rejected (what the coverage simulation below relies on)."""
    threshold = math.log(1 / ALPHA)
    for x, m in [(0, 50), (1, 50), (7, 300), (40, 2000), (120, 5000), (2400, 5000)]:
        hi = upper_bound(x, m, ALPHA)
        assert log_e_value_below(x, m, hi * (1 + 1e-6)) >= threshold
        assert log_e_value_below(x, m, hi * (1 - 1e-6)) < threshold
        lo = lower_bound(x, m, ALPHA)
        if lo > 0:  # with few successes no null is ever rejected (E <= mean(k^x) over GRID)
            assert log_e_value(x, m, lo * (1 - 1e-6)) >= threshold
            assert log_e_value(x, m, lo * (1 + 1e-6)) < threshold


# --- time-uniform error rates by simulation -----------------------------------------------------


def _streams(p: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative successes (STREAMS x LOOKS) and trials per look of Bernoulli(p) streams."""
    rng = np.random.default_rng(seed)
    x = rng.binomial(EVERY, p, size=(STREAMS, LOOKS)).cumsum(axis=1)
    m = EVERY * np.arange(1, LOOKS + 1)
    return x, m


def _ever(x: np.ndarray, m: np.ndarray, crossed: Callable[[int, int], bool]) -> float:
    """The share of streams where ``crossed(x, m)`` holds at some look (cached per count)."""
    cache: dict[tuple[int, int], bool] = {}
    hits = 0
    for row in x:
        for xi, mi in zip(row.tolist(), m.tolist(), strict=True):
            key = (xi, mi)
            if key not in cache:
                cache[key] = crossed(xi, mi)
            if cache[key]:
                hits += 1
                break
    return hits / len(x)


@pytest.mark.parametrize(("p", "seed"), [(0.02, 11), (0.25, 12)])
def test_anytime_false_alarms_stay_below_alpha_where_a_repeated_z_test_does_not(
    p: float, seed: int
) -> None:
    """2,000 Bernoulli(p) streams, looked at every 50 trials up to 5,000 (100 looks).

    - the e-process for the TRUE null ``p <= p`` ever reaches ``1/alpha`` in at most ``alpha``
      of the streams (Ville's inequality);
    - the two-sided confidence sequence (each side at ``alpha/2``) misses ``p`` at some look in
      at most ``alpha`` of them (checked through the test inversion, see above);
    - a one-sided z-test at level ``alpha`` repeated at every look rejects the true null in far
      more than ``alpha`` of the same streams.
    """
    x, m = _streams(p, seed)
    tolerance = _tolerance(ALPHA, STREAMS)
    reject = math.log(1 / ALPHA)
    half = math.log(2 / ALPHA)

    e_process = _ever(x, m, lambda xi, mi: log_e_value(xi, mi, p) >= reject)
    cs_miss = _ever(
        x,
        m,
        lambda xi, mi: log_e_value_below(xi, mi, p) >= half or log_e_value(xi, mi, p) >= half,
    )
    z = (x - m * p) / np.sqrt(m * p * (1 - p))
    naive = float(np.mean((z > Z_ONE_SIDED).any(axis=1)))
    figures = (
        f"p={p}: e-process ever >= 1/alpha in {e_process:.2%} of streams, confidence sequence "
        f"missed p in {cs_miss:.2%}, naive z-test at every look rejected {naive:.2%} "
        f"(alpha {ALPHA:.0%}, tolerance {tolerance:.2%})"
    )
    print(figures)
    assert e_process <= ALPHA + tolerance, figures
    assert cs_miss <= ALPHA + tolerance, figures
    assert naive >= 3 * ALPHA, figures
    assert naive > e_process + 0.15, figures


def test_confidence_sequence_at_the_worst_look_agrees_with_the_bounds() -> None:
    """The simulation above checks coverage through the tests; here the bounds themselves, at
    each stream's most extreme look (300 streams), give the same verdicts."""
    p = 0.02
    x, m = _streams(p, 13)
    x, m_all = x[:300], m
    z = (x - m_all * p) / np.sqrt(m_all * p * (1 - p))
    misses = 0
    for row, zrow in zip(x, z, strict=True):
        for j in (int(np.argmax(zrow)), int(np.argmin(zrow))):
            xi, mi = int(row[j]), int(m_all[j])
            by_bounds = not (lower_bound(xi, mi, ALPHA / 2) <= p <= upper_bound(xi, mi, ALPHA / 2))
            by_tests = max(log_e_value(xi, mi, p), log_e_value_below(xi, mi, p)) >= math.log(
                2 / ALPHA
            )
            assert by_bounds == by_tests, (xi, mi)
            misses += by_bounds
    assert misses / 300 <= ALPHA + _tolerance(ALPHA, 300)


def test_a_real_increase_is_detected() -> None:
    """Power: the e-process against the healthy rate crosses ``1/alpha`` for a doubled rate in
    (almost) every stream within 5,000 trials."""
    x, m = _streams(0.04, 14)
    detected = _ever(x[:500], m, lambda xi, mi: log_e_value(xi, mi, 0.02) >= math.log(1 / ALPHA))
    assert detected >= 0.95, f"detected a doubled rate in only {detected:.1%} of streams"
