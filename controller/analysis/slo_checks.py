"""The sequential tests behind the error-rate and latency SLOs. Pure.

Each limit of an SLO (a drift against the baseline, or an absolute ceiling) is one
:class:`Check`, tested both ways on the candidate's counts with anytime-valid e-values
(:mod:`controller.analysis.sequential`):

- the **fail test**, ``H0: the candidate is within the limit``; rejecting it (a fail) when the
  candidate meets the SLO happens with probability at most the fail level, however often the
  stage is looked at;
- the **pass test**, ``H0': the candidate is at least as bad as the pass limit`` (``passDrift``
  beyond the baseline, or the ceiling itself); rejecting it (a pass) when the candidate is
  that bad happens with probability at most the pass level.

Between the two limits lies the *indifference zone* of a sequential probability ratio test
(Wald 1945): a candidate there may end either way, or hold until the stage's deadline. A
candidate below both tests' evidence holds too: no data is never a pass.

**Error rate**, drift ``d``, pass drift ``D``, tolerance ``tau`` (absolute): fail limit
``max((1 + d) p_b, p_b + tau)``, pass limit ``max((1 + D) p_b, p_b + 2 tau)``. ``p_b`` is not
known: the fail test uses its time-uniform *upper* confidence bound and the pass test its
*lower* one, at :data:`BASELINE_SHARE` of the test's level, the candidate's test getting the
rest, so each pair stays valid (``P(wrong) <= share * level + (1 - share) * level``: Bonferroni
over the two statements): a larger fail null or a smaller pass
null only lowers the e-value.

**Latency quantile** ``q`` (p99: 0.99), judged by counts, never by comparing interpolated
quantiles: the baseline's quantile is bounded from above (fail) or below (pass) by a confidence
sequence over Envoy's histogram buckets (Howard & Ramdas 2022, :func:`quantile_upper_bound`,
:func:`quantile_lower_bound`); the fail threshold ``T`` is the first bucket bound at or above
``(1 + d)`` times the upper bound, the pass threshold ``T'`` the last bucket bound at or below
``(1 + D)`` times the lower bound, and the candidate's share of requests slower than ``T`` is
tested against ``1 - q`` (at most that if the candidate's quantile is within ``T``; at least
that if it is beyond ``T'``). Both roundings go the safe way, so the effective fail limit is
``maxDrift`` plus the baseline bound's slack (shrinking with the baseline's requests) plus at
most one bucket step (~4% with the bootstrap's buckets,
:func:`controller.xds.bootstrap.latency_buckets_ms`); the threshold actually tested is in the
verdict. A coarser bucket grid widens the indifference zone, never the error rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controller.analysis.sequential import (
    COARSE_GRID,
    log_e_value,
    log_e_value_below,
    lower_bound,
    upper_bound,
)
from controller.analysis.sli import Histogram, SideCounts
from controller.analysis.verdicts import Outcome, SloVerdict, show
from controller.policy.rollout_policy import ErrorRateSlo, LatencySlo

BASELINE_SHARE = 0.2
"""The part of a test's level spent on the baseline's confidence bound when a limit is relative
to the baseline. Small because the baseline's bound is cheap: at the low stages the baseline
serves most requests, at the high ones the judge uses the rollout so far. The candidate's own
test gets the rest, where evidence is scarce."""

QUANTILES = {"latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}
"""The quantile each latency SLO judges."""


@dataclass(frozen=True)
class Levels:
    """The tests' levels: ``fail`` is the chance to fail a candidate within the SLO (the
    rollout's false-alarm budget split over its stages and SLOs); ``passing`` the chance to
    pass a candidate beyond the pass limit (per stage and SLO)."""

    fail: float
    passing: float


@dataclass(frozen=True)
class Check:
    """One limit of an SLO, as two proportions of ``m`` candidate requests.

    Attributes:
        what: the limit for people (``more than 5% above the baseline``).
        fail_x, fail_null: the candidate's count (errors, or requests slower than
            ``threshold``) and the proportion it is at most when the candidate is within the
            limit (``H0`` of the fail test; 1 or more disables the test).
        threshold: the fail limit in the SLO's unit (ratio or ms).
        pass_x, pass_null: the count and the proportion it is at least when the candidate is
            as bad as the pass limit (``H0'`` of the pass test; 0 or less: no pass possible).
        pass_threshold: the pass limit in the SLO's unit.
    """

    what: str
    fail_x: float
    fail_null: float
    threshold: float
    pass_x: float
    pass_null: float
    pass_threshold: float


def error_rate_verdict(
    slo: ErrorRateSlo, baseline: SideCounts, candidate: SideCounts, levels: Levels
) -> SloVerdict:
    """The error-rate SLO's verdict (see the module doc); values are ratios (0-1)."""
    name = slo.metric
    m = candidate.attempts
    if m <= 0:
        return SloVerdict(name, "inconclusive", f"{name}: no candidate requests yet")
    x = candidate.errors
    p_c, p_b = x / m, baseline.error_rate
    relative = slo.max_drift is not None and p_b is not None
    base, cand = _split(levels, relative)
    checks: list[Check] = []
    if slo.max_drift is not None and p_b is not None:
        tau = slo.tolerance / 100
        ucb = upper_bound(baseline.errors, baseline.attempts, base.fail)
        lcb = lower_bound(baseline.errors, baseline.attempts, base.passing)
        fail_null = min(1.0, max((1 + slo.max_drift / 100) * ucb, ucb + tau))
        pass_null = min(1.0, max((1 + slo.pass_drift / 100) * lcb, lcb + 2 * tau))
        what = f"more than {slo.max_drift:g}% and {slo.tolerance:g} points above the baseline"
        checks.append(Check(what, x, fail_null, fail_null, x, pass_null, pass_null))
    if slo.max_value is not None:
        ceiling = slo.max_value / 100
        what = f"above the ceiling {slo.max_value:g}%"
        checks.append(Check(what, x, ceiling, ceiling, x, ceiling, ceiling))
    drift = (p_c / p_b - 1) if p_b else None
    if not checks:
        return SloVerdict(
            name, "inconclusive", f"{name}: no baseline traffic to compare with", None, p_c
        )
    return decide(name, "error rate", checks, m, cand, p_b, p_c, drift, True)


def latency_verdict(
    slo: LatencySlo, baseline: SideCounts, candidate: SideCounts, levels: Levels
) -> SloVerdict:
    """A latency quantile SLO's verdict (see the module doc); values in ms."""
    name = slo.metric
    q = QUANTILES[slo.metric]
    hist_c, hist_b = candidate.latency, baseline.latency
    m = hist_c.total
    if m <= 0:
        return SloVerdict(name, "inconclusive", f"{name}: no candidate latencies yet")
    relative = slo.max_drift is not None and hist_b.total > 0
    base, cand = _split(levels, relative)
    baseline_q = hist_b.quantile(q) if hist_b.total > 0 else None
    checks: list[Check] = []
    if slo.max_drift is not None and hist_b.total > 0:
        upper = quantile_upper_bound(hist_b, q, base.fail)
        lower = quantile_lower_bound(hist_b, q, base.passing)
        threshold = hist_c.bound_at_or_above((1 + slo.max_drift / 100) * upper)
        pass_threshold = hist_c.bound_at_or_below((1 + slo.pass_drift / 100) * lower)
        what = f"more than {slo.max_drift:g}% slower than the baseline"
        checks.append(_latency_check(what, hist_c, q, threshold, pass_threshold))
    if slo.max_value is not None:
        ceiling_ms = slo.max_value.total_seconds() * 1000
        what = f"above the ceiling {ceiling_ms:g} ms"
        checks.append(
            _latency_check(
                what,
                hist_c,
                q,
                hist_c.bound_at_or_above(ceiling_ms),
                hist_c.bound_at_or_below(ceiling_ms),
            )
        )
    candidate_q = hist_c.quantile(q)
    drift = (
        (candidate_q / baseline_q - 1)
        if candidate_q and baseline_q and math.isfinite(candidate_q) and math.isfinite(baseline_q)
        else None
    )
    if not checks:
        return SloVerdict(
            name,
            "inconclusive",
            f"{name}: no baseline latencies to compare with",
            baseline_q,
            candidate_q,
        )
    return decide(
        name,
        "share of requests slower than the threshold",
        checks,
        m,
        cand,
        baseline_q,
        candidate_q,
        drift,
        False,
    )


def _split(levels: Levels, relative: bool) -> tuple[Levels, Levels]:
    """(the baseline bounds' levels, the candidate tests' levels)."""
    if not relative:
        return levels, levels
    share = BASELINE_SHARE
    return (
        Levels(levels.fail * share, levels.passing * share),
        Levels(levels.fail * (1 - share), levels.passing * (1 - share)),
    )


def _latency_check(
    what: str, hist: Histogram, q: float, threshold: float, pass_threshold: float
) -> Check:
    # An infinite threshold (baseline too thin for a bound) disables the fail test; no finite
    # pass threshold disables the pass test (every request counts as beyond it).
    fail_x = hist.above(threshold) if math.isfinite(threshold) else 0.0
    fail_null = 1 - q if math.isfinite(threshold) else 1.0
    usable = math.isfinite(pass_threshold) and pass_threshold > 0
    pass_x = hist.above(pass_threshold) if usable else hist.total
    return Check(what, fail_x, fail_null, threshold, pass_x, 1 - q, pass_threshold)


def quantile_upper_bound(hist: Histogram, q: float, alpha: float) -> float:
    """A time-uniform upper confidence bound of the ``q`` quantile from a histogram: the first
    bucket bound ``t`` whose exceedance share is shown to be at most ``1 - q`` (the test of
    ``H0: P(X > t) >= 1 - q`` rejects at level ``alpha``); ``inf`` when no finite bound
    qualifies yet (too few requests). Howard & Ramdas 2022: a confidence sequence for a
    quantile from confidence sequences of ``P(X > t)``; the bound is below the true quantile
    only if the test at the last bucket bound below it errs (probability <= ``alpha``)."""
    n = hist.total
    reject = math.log(1 / alpha)
    finite = [b for b in hist.bounds if math.isfinite(b)]
    # The exceedance count falls as t grows: the first qualifying bound is found by bisection.
    lo, hi = 0, len(finite)
    while lo < hi:
        mid = (lo + hi) // 2
        if log_e_value_below(hist.above(finite[mid]), n, 1 - q) >= reject:
            hi = mid
        else:
            lo = mid + 1
    return finite[lo] if lo < len(finite) else math.inf


def quantile_lower_bound(hist: Histogram, q: float, alpha: float) -> float:
    """A time-uniform lower confidence bound of the ``q`` quantile, the mirror of
    :func:`quantile_upper_bound`: the last bucket bound ``t`` whose exceedance share is shown
    to be above ``1 - q`` (the test of ``H0: P(X > t) <= 1 - q`` rejects at level ``alpha``);
    0 when none qualifies. It is above the true quantile only if the test at that bound
    errs (probability <= ``alpha``)."""
    n = hist.total
    reject = math.log(1 / alpha)
    finite = [b for b in hist.bounds if math.isfinite(b)]
    # Rejection holds for small t (many requests above) and stops as t grows: find the last.
    lo, hi = 0, len(finite)
    while lo < hi:
        mid = (lo + hi) // 2
        if log_e_value(hist.above(finite[mid]), n, 1 - q) >= reject:
            lo = mid + 1
        else:
            hi = mid
    return finite[lo - 1] if lo > 0 else 0.0


def decide(
    name: str,
    what_share: str,
    checks: list[Check],
    m: float,
    levels: Levels,
    baseline_value: float | None,
    candidate_value: float | None,
    drift: float | None,
    percent: bool,
) -> SloVerdict:
    """Fail on the strongest evidence of a breach of any check; pass when every check's pass
    test rejected; inconclusive otherwise. ``m``: the candidate's requests (trials)."""
    reject_fail = math.log(1 / levels.fail)
    reject_pass = math.log(1 / levels.passing)
    best_log_e, best = -math.inf, checks[0]
    for check in checks:
        log_e = log_e_value(check.fail_x, m, check.fail_null)
        if log_e > best_log_e:
            best_log_e, best = log_e, check
    cleared = all(
        log_e_value_below(c.pass_x, m, c.pass_null, COARSE_GRID) >= reject_pass for c in checks
    )
    confidence = max(0.0, 1 - math.exp(-best_log_e)) if best_log_e > 0 else 0.0
    values = (
        f"candidate {show(candidate_value, percent)} vs baseline {show(baseline_value, percent)}"
    )
    if drift is not None:
        values += f", drift {drift:+.1%}"
    limits = ", ".join(
        f"fail above {show(c.threshold, percent)}, pass below {show(c.pass_threshold, percent)}"
        for c in checks
    )
    outcome: Outcome
    if best_log_e >= reject_fail:
        share = best.fail_x / m
        reason = (
            f"{name} failed: {values}: {what_share} {share:.2%} > {best.fail_null:.2%} "
            f"({best.what}), confidence {confidence:.4f} (alpha {levels.fail:.2g}); "
            f"{m:.0f} candidate requests"
        )
        outcome = "fail"
    elif cleared:
        reason = f"{name}: {values}: within the SLO ({limits})"
        outcome = "pass"
    else:
        reason = (
            f"{name}: {values}: not enough evidence either way yet ({limits}; "
            f"{m:.0f} candidate requests)"
        )
        outcome = "inconclusive"
    return SloVerdict(
        name,
        outcome,
        reason,
        baseline_value,
        candidate_value,
        drift,
        best.threshold,
        confidence,
        levels.fail,
        pass_threshold=best.pass_threshold,
    )
