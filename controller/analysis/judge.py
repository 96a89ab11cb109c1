"""The judge: the candidate against the baseline, per SLO, from counts. Pure.

Each analysis gives the judge the stage so far (both sides over the same window) and, for a
baseline with too little traffic in the stage (at high weights it serves almost nothing), the
baseline over the rollout so far as a reference. Per SLO the verdict is:

- **fail** when an anytime-valid test (:mod:`controller.analysis.sequential`) rejects "the
  candidate is within the SLO" at level ``alpha`` (the rollout's false-alarm budget split over
  stages and SLOs, :func:`alpha_per_test`), however many times the stage was looked at;
- **pass** when the candidate served at least ``minRequests`` in the stage, no test rejected,
  and the mirrored test shows, at the same level, that the candidate is *not* worse than
  :data:`PASS_MARGIN` times the SLO's limit (evidence of no large regression: a candidate that
  merely lacks proof either way stays inconclusive until the evidence decides or the stage's
  deadline comes, where ``onFailure`` applies);
- **inconclusive** otherwise: too few requests, or no data (with ``noData: hold``), or a
  query error (always: an unreachable backend is not a breach).

The tests, for a drift ``d`` (``maxDrift``) and quantile ``q``:

- **error rate** ``H0: p_c <= (1 + d) * p_b``. ``p_b`` is replaced by its time-uniform upper
  confidence bound (level ``alpha/2``) and the candidate's errors tested against that null
  with the mixture e-value (level ``alpha/2``). A larger null only lowers the e-value, so the
  pair stays valid: ``P(false fail) <= alpha/2 + alpha/2 = alpha``. Whenever a check of an
  SLO leans on a baseline bound, all its checks are tested at ``alpha/2`` (the strongest of
  them is the one with the smallest null, or for latency the lowest threshold, so together
  they spend ``alpha/2``); an SLO with only fixed ceilings tests them at ``alpha``.
- **latency quantile** (p99: ``q = 0.99``) ``H0: t_q(c) <= (1 + d) * t_q(b)``, judged by
  counts, never by comparing interpolated quantiles: take a time-uniform *upper* confidence
  bound of the baseline's quantile over Envoy's histogram buckets (Howard & Ramdas 2022), the
  threshold ``T`` = the first bucket bound at or above ``(1 + d)`` times it, and test the
  candidate's share of requests slower than ``T`` against ``1 - q`` (under H0 it is at most
  that). Envoy's buckets must be fine around the SLO: ``controller.xds.bootstrap`` configures
  ~4% steps; a coarser grid only makes ``T`` (and the test) more lenient.
- **absolute ceilings** (``maxValue``): the same one-sample tests against the fixed value.
- **custom** SLOs: point comparison of the query values (no test is possible on an arbitrary
  PromQL result); **parity** is judged once tap-compare exists (issue 5): inconclusive now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from controller.analysis.sequential import (
    COARSE_GRID,
    log_e_value,
    log_e_value_below,
    upper_bound,
)
from controller.analysis.sli import Histogram, NoSample, Sample, SampleResult, SideCounts
from controller.policy.rollout_policy import (
    CustomSlo,
    ErrorRateSlo,
    LatencySlo,
    ParitySlo,
    RolloutPolicy,
    slo_name,
)

FALSE_ALARM_BUDGET = 0.01
"""Probability, per rollout, of rolling back a candidate that meets every SLO (split over the
rollout's stages and SLOs)."""

PASS_MARGIN = 2.0
"""A pass needs evidence that the tested proportion (error rate, share of slow requests) is
below this multiple of its limit. With little traffic no such evidence comes: the stage holds
until its deadline instead of promoting on a guess."""

_QUANTILE = {"latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}

Outcome = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class SloVerdict:
    """One SLO's verdict with its figures (for the rollout's status and history).

    Attributes:
        name: the SLO's name (its metric, or a custom SLO's name).
        outcome: pass, fail or inconclusive.
        reason: one line for people.
        baseline: the baseline's value (ms for latency, a ratio 0-1 for rates), if known.
        candidate: the candidate's value, same unit.
        drift: ``candidate / baseline - 1`` (a ratio; 0.05 is 5% worse), if both are known.
        threshold: the value the candidate was tested against (same unit as the values).
        confidence: ``1 - 1/E`` for the test's e-value E (0 without evidence); a fail needs
            at least ``1 - alpha``.
        alpha: the test's level.
        baseline_requests, candidate_requests: requests counted on each side.
        reference: the baseline came from the rollout so far (the stage had too little).
    """

    name: str
    outcome: Outcome
    reason: str
    baseline: float | None = None
    candidate: float | None = None
    drift: float | None = None
    threshold: float | None = None
    confidence: float = 0.0
    alpha: float = 0.0
    baseline_requests: float = 0.0
    candidate_requests: float = 0.0
    reference: bool = False

    def to_json(self) -> dict[str, object]:
        """The verdict as JSON values (``details`` of a rollout's verdict)."""
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "baseline": _finite(self.baseline),
            "candidate": _finite(self.candidate),
            "drift": _finite(self.drift),
            "threshold": _finite(self.threshold),
            "confidence": round(self.confidence, 6),
            "alpha": self.alpha,
            "baseline_requests": self.baseline_requests,
            "candidate_requests": self.candidate_requests,
            "reference": self.reference,
        }


@dataclass(frozen=True)
class Judgement:
    """The verdict on a stage: fail if any SLO failed, pass if all passed, else inconclusive.

    ``reason`` names the failing SLOs with both values, the drift, the confidence and the
    request counts (what a rollback records).
    """

    outcome: Outcome
    reason: str
    slos: tuple[SloVerdict, ...] = ()
    details: dict[str, object] = field(default_factory=dict)


def alpha_per_test(policy: RolloutPolicy) -> float:
    """The level of each SLO's test in each stage: the rollout's false-alarm budget split
    evenly (Bonferroni) over stages and SLOs."""
    tests = max(1, len(policy.spec.stages) * max(1, len(policy.spec.analysis.slos)))
    return FALSE_ALARM_BUDGET / tests


def judge(
    policy: RolloutPolicy,
    stage: int,
    sample: SampleResult,
    reference: SideCounts | None = None,
) -> Judgement:
    """Judge stage ``stage`` of a rollout of ``policy`` from its metrics.

    Args:
        policy: the rollout's policy (SLOs, minRequests, noData).
        stage: the stage's index (for messages).
        sample: both sides over the stage so far, or why there is none.
        reference: the baseline over the rollout so far, used when the stage's baseline has
            fewer than ``minRequests`` requests.

    Returns:
        The :class:`Judgement`; ``details`` maps each SLO name to its figures
        (:meth:`SloVerdict.to_json`) under ``"slos"``.
    """
    analysis = policy.spec.analysis
    where = f"stage {stage + 1}/{len(policy.spec.stages)}"
    if not analysis.slos:
        return Judgement("pass", f"{where}: no SLOs, bake time only")
    if isinstance(sample, NoSample):
        return _no_sample(policy, where, sample)
    verdicts = tuple(_judge_slo(slo, sample, reference, policy) for slo in analysis.slos)
    failed = [v for v in verdicts if v.outcome == "fail"]
    details: dict[str, object] = {"slos": {v.name: v.to_json() for v in verdicts}}
    if failed:
        return Judgement("fail", "; ".join(v.reason for v in failed), verdicts, details)
    if all(v.outcome == "pass" for v in verdicts):
        return Judgement("pass", "; ".join(v.reason for v in verdicts), verdicts, details)
    pending = [v for v in verdicts if v.outcome != "pass"]
    return Judgement("inconclusive", "; ".join(v.reason for v in pending), verdicts, details)


def _no_sample(policy: RolloutPolicy, where: str, sample: NoSample) -> Judgement:
    if sample.kind == "error":
        reason = f"{where}: metrics query failed (not a breach; holding): {sample.message}"
        return Judgement("inconclusive", reason, details={"no_data": "error"})
    what = "no data" if sample.kind == "empty" else "NaN"
    if policy.spec.analysis.no_data == "fail":
        return Judgement(
            "fail",
            f"{where}: {what} (noData: fail): {sample.message}",
            details={"no_data": sample.kind},
        )
    return Judgement(
        "inconclusive",
        f"{where}: {what} (noData: hold): {sample.message}",
        details={"no_data": sample.kind},
    )


def _judge_slo(
    slo: LatencySlo | ErrorRateSlo | ParitySlo | CustomSlo,
    sample: Sample,
    reference: SideCounts | None,
    policy: RolloutPolicy,
) -> SloVerdict:
    name = slo_name(slo)
    alpha = alpha_per_test(policy)
    min_requests = policy.spec.analysis.min_requests
    baseline, used_reference = sample.baseline, False
    use_reference = reference is not None and reference.requests > baseline.requests
    if baseline.requests < min_requests and reference is not None and use_reference:
        baseline, used_reference = reference, True
    if isinstance(slo, ParitySlo):
        return SloVerdict(name, "inconclusive", "parity: needs tap-compare (not available yet)")
    if isinstance(slo, CustomSlo):
        return _custom(slo, sample, min_requests)
    candidate = sample.candidate
    if isinstance(slo, ErrorRateSlo):
        verdict = _error_rate(slo, baseline, candidate, alpha)
    else:
        verdict = _latency(slo, baseline, candidate, alpha)
    verdict = _with_counts(verdict, baseline, candidate, used_reference)
    if verdict.outcome == "pass" and candidate.requests < min_requests:
        return _replace(
            verdict,
            outcome="inconclusive",
            reason=f"{name}: {candidate.requests:.0f}/{min_requests} candidate requests "
            f"in this stage (minRequests); {verdict.reason}",
        )
    return verdict


def _error_rate(
    slo: ErrorRateSlo, baseline: SideCounts, candidate: SideCounts, alpha: float
) -> SloVerdict:
    name = slo.metric
    if candidate.attempts <= 0:
        return SloVerdict(name, "inconclusive", f"{name}: no candidate requests yet")
    p_c = candidate.errors / candidate.attempts
    p_b = baseline.error_rate
    checks: list[tuple[str, float, float]] = []  # (what, null proportion, point value it limits)
    passes: list[tuple[float, float, float]] = []  # (x, m, limit a pass must be shown below)
    if slo.max_drift is not None and p_b is not None:
        ucb = upper_bound(baseline.errors, baseline.attempts, alpha / 2)
        null = min(1.0, (1 + slo.max_drift / 100) * ucb)
        checks.append((f"more than {slo.max_drift:g}% above the baseline", null, null))
        # A pass is measured against the baseline's point estimate (floored by the rule of
        # three when it saw no error), not against its lenient upper bound: thin baseline data
        # must not let a worse candidate through.
        point = max(p_b, 3 / baseline.attempts)
        passes.append((candidate.errors, candidate.attempts, (1 + slo.max_drift / 100) * point))
    if slo.max_value is not None:
        checks.append(
            (f"above the ceiling {slo.max_value:g}%", slo.max_value / 100, slo.max_value / 100)
        )
        passes.append((candidate.errors, candidate.attempts, slo.max_value / 100))
    drift = (p_c / p_b - 1) if p_b else None
    if not checks:
        return SloVerdict(
            name, "inconclusive", f"{name}: no baseline traffic to compare with", None, p_c
        )
    # The baseline's bound spent alpha/2: the candidate's test gets the other half.
    level = alpha / 2 if slo.max_drift is not None and p_b is not None else alpha
    return _decide(
        name,
        "error rate",
        checks,
        candidate.errors,
        candidate.attempts,
        level,
        p_b,
        p_c,
        drift,
        percent=True,
        passes=passes,
    )


def _latency(
    slo: LatencySlo, baseline: SideCounts, candidate: SideCounts, alpha: float
) -> SloVerdict:
    name = slo.metric
    q = _QUANTILE[slo.metric]
    hist_c = candidate.latency
    if hist_c.total <= 0:
        return SloVerdict(name, "inconclusive", f"{name}: no candidate latencies yet")
    checks: list[tuple[str, float, float]] = []
    thresholds: list[float] = []
    pass_limits: list[float] = []
    against_baseline = False
    baseline_q = baseline.latency.quantile(q) if baseline.latency.total > 0 else None
    if slo.max_drift is not None and baseline.latency.total > 0:
        upper = quantile_upper_bound(baseline.latency, q, alpha / 2)
        if math.isfinite(upper):
            limit = hist_c.bound_at_or_above((1 + slo.max_drift / 100) * upper)
            if math.isfinite(limit):
                checks.append(
                    (f"more than {slo.max_drift:g}% slower than the baseline", 1 - q, limit)
                )
                thresholds.append(limit)
                # A pass is measured against the baseline's point quantile (see _error_rate).
                assert baseline_q is not None
                pass_limits.append(hist_c.bound_at_or_above((1 + slo.max_drift / 100) * baseline_q))
                against_baseline = True
    if slo.max_value is not None:
        ceiling_ms = slo.max_value.total_seconds() * 1000
        limit = hist_c.bound_at_or_above(ceiling_ms)
        if math.isfinite(limit):
            checks.append((f"above the ceiling {ceiling_ms:g} ms", 1 - q, limit))
            thresholds.append(limit)
            pass_limits.append(limit)
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
    # Each check tests the share of candidate requests slower than its threshold; the
    # baseline's bound spent alpha/2 when a drift check is there: the candidate's tests get the
    # other half.
    level = alpha / 2 if against_baseline else alpha
    worst: SloVerdict | None = None
    for (what, null, limit), pass_limit in zip(checks, pass_limits, strict=True):
        slower = hist_c.above(limit)
        pass_slower = hist_c.above(pass_limit) if math.isfinite(pass_limit) else 0.0
        verdict = _decide(
            name,
            f"share of requests slower than {limit:g} ms",
            [(what, null, null)],
            slower,
            hist_c.total,
            level,
            baseline_q,
            candidate_q,
            drift,
            percent=False,
            threshold=limit,
            passes=[(pass_slower, hist_c.total, 1 - q)],
        )
        if worst is None or _rank(verdict.outcome) > _rank(worst.outcome):
            worst = verdict
    assert worst is not None
    return worst


def quantile_upper_bound(hist: Histogram, q: float, alpha: float) -> float:
    """A time-uniform upper confidence bound of the ``q`` quantile from a histogram: the first
    bucket bound ``t`` whose exceedance share is shown to be at most ``1 - q`` (its upper
    confidence bound at level ``alpha`` is at most ``1 - q``); ``inf`` when no finite bound
    qualifies yet (too few requests). Howard & Ramdas 2022: a confidence sequence for a
    quantile from confidence sequences of ``P(X > t)``; the bound is below the true quantile
    only if the test at the last bucket bound below it errs (probability <= ``alpha``)."""
    n = hist.total
    reject = math.log(1 / alpha)
    # "UCB(P(X > t)) <= 1 - q" is "H0: P(X > t) >= 1 - q is rejected"; the exceedance count
    # falls as t grows, so the first such bound is found by bisection. Below the true quantile
    # P(X > t) > 1 - q, and the test rejects that true statement with probability <= alpha.
    finite = [b for b in hist.bounds if math.isfinite(b)]
    lo, hi = 0, len(finite)
    while lo < hi:
        mid = (lo + hi) // 2
        if log_e_value_below(hist.above(finite[mid]), n, 1 - q) >= reject:
            hi = mid
        else:
            lo = mid + 1
    return finite[lo] if lo < len(finite) else math.inf


def _decide(
    name: str,
    what_share: str,
    checks: list[tuple[str, float, float]],
    x: float,
    m: float,
    alpha: float,
    baseline_value: float | None,
    candidate_value: float | None,
    drift: float | None,
    *,
    percent: bool,
    threshold: float | None = None,
    passes: list[tuple[float, float, float]] | None = None,
) -> SloVerdict:
    """Test ``x`` of ``m`` against each null proportion: fail on the strongest evidence of a
    breach; pass when every limit is shown not to be exceeded by :data:`PASS_MARGIN` times."""
    reject = math.log(1 / alpha)
    best_log_e, best = -math.inf, checks[0]
    for check in checks:
        log_e = log_e_value(x, m, check[1])
        if log_e > best_log_e:
            best_log_e, best = log_e, check
    pass_tests = passes if passes is not None else [(x, m, c[1]) for c in checks]
    cleared = all(
        log_e_value_below(px, pm, PASS_MARGIN * limit, COARSE_GRID) >= reject
        for px, pm, limit in pass_tests
    )
    what, null, _ = best
    confidence = max(0.0, 1 - math.exp(-best_log_e)) if best_log_e > 0 else 0.0
    share = x / m if m else 0.0
    shown = _show(candidate_value, percent)
    base = _show(baseline_value, percent)
    drift_text = f", drift {drift:+.1%}" if drift is not None else ""
    if best_log_e >= reject:
        reason = (
            f"{name} failed: candidate {shown} vs baseline {base}{drift_text}: {what_share} "
            f"{share:.2%} > {null:.2%} ({what}), confidence {confidence:.4f} "
            f"(alpha {alpha:.2g}); {m:.0f} candidate requests"
        )
        outcome: Outcome = "fail"
    elif cleared:
        reason = f"{name}: candidate {shown} vs baseline {base}{drift_text}: within the SLO"
        outcome = "pass"
    else:
        reason = (
            f"{name}: candidate {shown} vs baseline {base}{drift_text}: not enough evidence "
            f"either way yet ({what_share} {share:.2%}, limit {null:.2%}, {m:.0f} requests)"
        )
        outcome = "inconclusive"
    return SloVerdict(
        name,
        outcome,
        reason,
        baseline_value,
        candidate_value,
        drift,
        threshold if threshold is not None else null,
        confidence,
        alpha,
    )


def _custom(slo: CustomSlo, sample: Sample, min_requests: int) -> SloVerdict:
    values = sample.custom.get(slo.name)
    if values is None:
        return SloVerdict(slo.name, "inconclusive", f"{slo.name}: no value")
    base, cand = values
    if sample.candidate.requests < min_requests:
        return SloVerdict(
            slo.name, "inconclusive", f"{slo.name}: too few candidate requests", base, cand
        )
    sign = 1 if slo.better == "lower" else -1
    drift = (cand / base - 1) if base else None
    breaches = []
    if slo.max_drift is not None and drift is not None and sign * drift > slo.max_drift / 100:
        breaches.append(f"drift {drift:+.1%} beyond {slo.max_drift:g}%")
    if slo.max_value is not None and cand > slo.max_value:
        breaches.append(f"{cand:g} above {slo.max_value:g}")
    if slo.min_value is not None and cand < slo.min_value:
        breaches.append(f"{cand:g} below {slo.min_value:g}")
    if breaches:
        reason = f"{slo.name} failed (point values, no test): " + ", ".join(breaches)
        return SloVerdict(slo.name, "fail", reason, base, cand, drift)
    return SloVerdict(slo.name, "pass", f"{slo.name}: {cand:g} vs {base:g}", base, cand, drift)


def _with_counts(
    verdict: SloVerdict, baseline: SideCounts, candidate: SideCounts, reference: bool
) -> SloVerdict:
    reason = verdict.reason
    if verdict.outcome == "fail":
        reason += f", {baseline.requests:.0f} baseline requests" + (
            " (the rollout so far: too few in this stage)" if reference else ""
        )
    return _replace(
        verdict,
        reason=reason,
        baseline_requests=baseline.requests,
        candidate_requests=candidate.requests,
        reference=reference,
    )


def _replace(verdict: SloVerdict, **changes: object) -> SloVerdict:
    from dataclasses import replace

    return replace(verdict, **changes)  # type: ignore[arg-type]


def _rank(outcome: Outcome) -> int:
    return {"pass": 0, "inconclusive": 1, "fail": 2}[outcome]


def _show(value: float | None, percent: bool) -> str:
    if value is None:
        return "n/a"
    if percent:
        return f"{value:.2%}"
    return f"{value:g} ms"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
