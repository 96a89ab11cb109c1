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
``max((1 + d) p_b, p_b + tau)``, pass limit ``max((1 + D) p_b, p_b + 2 tau)``. The ratio part
is tested on the errors of both sides (the conditional test of two Poisson rates,
:func:`_error_drift_check`), which needs no bound on ``p_b``; the absolute part uses the
baseline's time-uniform *upper* (fail) or *lower* (pass) confidence bound at
:data:`BASELINE_SHARE` of the test's level, the candidate's test getting the rest, so each pair
stays valid (Bonferroni over the two statements): a larger fail null or a smaller pass null
only lowers the e-value.

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
    """One limit of an SLO, tested both ways; evidence is ``log E - log(1/level)`` (at least 0:
    the test rejects).

    Attributes:
        what: the limit for people (``more than 5% above the baseline``).
        fail_evidence: against "the candidate is within the limit" (a fail when >= 0).
        fail_log_e: the fail test's log e-value (for the confidence).
        threshold: the fail limit in the SLO's unit (ratio or ms).
        pass_evidence: against "the candidate is as bad as the pass limit" (a pass when >= 0).
        pass_threshold: the pass limit in the SLO's unit.
        tested: what was tested, for people (``error rate 2.00% vs limit 1.14%``).
    """

    what: str
    fail_evidence: float
    fail_log_e: float
    threshold: float
    pass_evidence: float
    pass_threshold: float
    tested: str


def _evidence(log_e: float, level: float) -> float:
    return log_e - math.log(1 / level)


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
    # A false fail happens when any limit's test errs: with two limits each gets half.
    both = relative and slo.max_value is not None
    check_levels = Levels(levels.fail / 2, levels.passing) if both else levels
    checks: list[Check] = []
    if slo.max_drift is not None and p_b is not None:
        checks.append(_error_drift_check(slo, baseline, candidate, check_levels))
    if slo.max_value is not None:
        ceiling = slo.max_value / 100
        fail_log_e = log_e_value(x, m, ceiling)
        checks.append(
            Check(
                f"above the ceiling {slo.max_value:g}%",
                _evidence(fail_log_e, check_levels.fail),
                fail_log_e,
                ceiling,
                _evidence(log_e_value_below(x, m, ceiling, COARSE_GRID), check_levels.passing),
                ceiling,
                f"error rate {p_c:.2%} vs ceiling {ceiling:.2%}",
            )
        )
    drift = (p_c / p_b - 1) if p_b else None
    if not checks or (slo.max_drift is not None and p_b is None):
        # A drift limit with nothing to compare with: a ceiling may still fail, never pass.
        return _without_baseline(name, checks, m, check_levels, p_c, True)
    return decide(name, checks, m, check_levels, p_b, p_c, drift, True)


def _error_drift_check(
    slo: ErrorRateSlo, baseline: SideCounts, candidate: SideCounts, levels: Levels
) -> Check:
    """The drift limit: a ratio of error rates, and an absolute difference (``tolerance``).

    The ratio is tested on the errors of both sides: with Poisson errors at rates
    ``p_c = r p_b`` over exposures ``m_c``, ``m_b`` (requests), each error is the candidate's
    with probability ``r m_c / (r m_c + m_b)`` whatever ``p_b`` is, so ``H0: r <= 1 + d`` is a
    one-sample Bernoulli null over the stream of errors (the conditional test of two Poisson
    rates; sequentially, Lindon & Malek, "Anytime-valid inference for multinomial count data",
    NeurIPS 2022). No bound on the baseline is spent, and a small baseline costs only its
    share of the errors. The absolute part (``p_c > p_b + tau``) uses the baseline's
    confidence bound. A fail needs both (an intersection-union test: each at the full level);
    a pass needs either (each at half the pass level).

    Assumes the baseline's error rate is steady over the window: when the baseline is the
    rollout so far (a reference for a thin stage baseline), a change of the baseline's rate
    between stages shifts the null, and switching from the reference to the stage's own
    baseline mid-stage watches two e-processes (at most twice the level; see Known limits).
    """
    assert slo.max_drift is not None
    p_b = baseline.error_rate or 0.0
    x_c, m_c = candidate.errors, candidate.attempts
    x_b, m_b = baseline.errors, baseline.attempts
    errors = x_c + x_b
    tau = slo.tolerance / 100
    k_fail, k_pass = 1 + slo.max_drift / 100, 1 + slo.pass_drift / 100
    ratio_fail = log_e_value(x_c, errors, k_fail * m_c / (k_fail * m_c + m_b))
    fail_evidence = _evidence(ratio_fail, levels.fail)
    fail_log_e = ratio_fail
    pass_level = levels.passing / 2 if tau > 0 else levels.passing
    ratio_pass = log_e_value_below(x_c, errors, k_pass * m_c / (k_pass * m_c + m_b), COARSE_GRID)
    pass_evidence = _evidence(ratio_pass, pass_level)
    if tau > 0:
        base, cand = _split(levels, True)
        ucb = upper_bound(x_b, m_b, base.fail)
        absolute_fail = log_e_value(x_c, m_c, min(1.0, ucb + tau))
        if _evidence(absolute_fail, cand.fail) < fail_evidence:
            fail_evidence, fail_log_e = _evidence(absolute_fail, cand.fail), absolute_fail
        half = Levels(levels.fail, pass_level)
        base_p, cand_p = _split(half, True)
        lcb = lower_bound(x_b, m_b, base_p.passing)
        absolute_pass = log_e_value_below(x_c, m_c, min(1.0, lcb + 2 * tau), COARSE_GRID)
        pass_evidence = max(pass_evidence, _evidence(absolute_pass, cand_p.passing))
    threshold = min(1.0, max(k_fail * p_b, p_b + tau))
    pass_threshold = min(1.0, max(k_pass * p_b, p_b + 2 * tau))
    return Check(
        f"more than {slo.max_drift:g}%"
        + (f" and {slo.tolerance:g} points" if tau > 0 else "")
        + " above the baseline",
        fail_evidence,
        fail_log_e,
        threshold,
        pass_evidence,
        pass_threshold,
        f"error rate {x_c / m_c:.2%} vs limit {threshold:.2%} ({x_c:.0f} of {errors:.0f} "
        "errors on the candidate)",
    )


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
        checks.append(_latency_check(what, hist_c, q, threshold, pass_threshold, cand))
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
                cand,
            )
        )
    candidate_q = hist_c.quantile(q)
    drift = (
        (candidate_q / baseline_q - 1)
        if candidate_q and baseline_q and math.isfinite(candidate_q) and math.isfinite(baseline_q)
        else None
    )
    if not checks or (slo.max_drift is not None and hist_b.total <= 0):
        return _without_baseline(name, checks, m, cand, candidate_q, False)
    return decide(name, checks, m, cand, baseline_q, candidate_q, drift, False)


def _without_baseline(
    name: str,
    checks: list[Check],
    m: float,
    levels: Levels,
    candidate_value: float | None,
    percent: bool,
) -> SloVerdict:
    """A drift limit without baseline traffic: inconclusive, unless a ceiling fails."""
    if checks:
        verdict = decide(name, checks, m, levels, None, candidate_value, None, percent)
        if verdict.outcome == "fail":
            return verdict
    return SloVerdict(
        name,
        "inconclusive",
        f"{name}: no baseline traffic to compare with (a drift limit cannot pass without one)",
        None,
        candidate_value,
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
    what: str, hist: Histogram, q: float, threshold: float, pass_threshold: float, levels: Levels
) -> Check:
    # An infinite threshold (baseline too thin for a bound) disables the fail test; no finite
    # pass threshold disables the pass test.
    m = hist.total
    fail_x = hist.above(threshold) if math.isfinite(threshold) else 0.0
    fail_log_e = log_e_value(fail_x, m, 1 - q) if math.isfinite(threshold) else -math.inf
    usable = math.isfinite(pass_threshold) and pass_threshold > 0
    pass_log_e = (
        log_e_value_below(hist.above(pass_threshold), m, 1 - q, COARSE_GRID)
        if usable
        else -math.inf
    )
    return Check(
        what,
        _evidence(fail_log_e, levels.fail),
        fail_log_e,
        threshold,
        _evidence(pass_log_e, levels.passing),
        pass_threshold,
        f"share of requests slower than {threshold:g} ms {fail_x / m:.2%} vs {1 - q:.0%}",
    )


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
    checks: list[Check],
    m: float,
    levels: Levels,
    baseline_value: float | None,
    candidate_value: float | None,
    drift: float | None,
    percent: bool,
) -> SloVerdict:
    """Fail on the strongest evidence of a breach of any check; pass when every check's pass
    test rejected; inconclusive otherwise. ``m``: the candidate's requests."""
    best = max(checks, key=lambda c: c.fail_evidence)
    cleared = all(c.pass_evidence >= 0 for c in checks)
    confidence = max(0.0, 1 - math.exp(-best.fail_log_e)) if best.fail_log_e > 0 else 0.0
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
    if best.fail_evidence >= 0:
        reason = (
            f"{name} failed: {values}: {best.tested} ({best.what}), confidence "
            f"{confidence:.4f} (alpha {levels.fail:.2g}); {m:.0f} candidate requests"
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
