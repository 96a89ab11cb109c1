"""The judge: the candidate against the baseline, per SLO, from counts. Pure.

Each analysis gives the judge the stage so far (both sides over the same window) and, for a
baseline with too little traffic in the stage (at high weights it serves almost nothing), the
baseline over the rollout so far as a reference. Per SLO the verdict is
(:mod:`controller.analysis.slo_checks` has the tests):

- **fail** when an anytime-valid test rejects "the candidate is within the SLO" (``maxDrift``,
  ``tolerance``, ``maxValue``) at level :func:`alpha_per_test` (the rollout's false-alarm
  budget :data:`FALSE_ALARM_BUDGET` split over stages and SLOs), however many times the stage
  was looked at;
- **pass** when the candidate served at least ``minRequests`` in the stage and the mirrored
  test rejects "the candidate is as bad as the pass limit" (``passDrift``; a ceiling itself)
  at level :data:`PROMOTION_RISK`: a candidate that is that bad passes a stage with
  probability at most 1%, and one that merely lacks proof either way holds until the evidence
  decides or the stage's deadline comes, where ``onFailure`` applies;
- **inconclusive** otherwise: too few requests, no data (with ``noData: hold``; no data is
  decided per SLO: a candidate that is down has errors but no latencies), or a query error
  (always: an unreachable backend is not a breach).

**custom** SLOs: point comparison of the query values (no test is possible on an arbitrary
PromQL result). **parity**: the candidate's mismatch rate among the requests the comparator
compared, tested against ``1 - minValue/100`` both ways like a ceiling
(:mod:`controller.analysis.parity_check`); a pass needs ``minCompared`` compared requests
(mirrored requests reach the candidate at any weight: ``minRequests`` is not parity's floor).

A **shadow stage** (weight 0%: users stay on the baseline, Envoy only mirrors requests to the
comparator) is judged on its parity SLOs alone: no user request reaches the candidate, so its
latency and error rate say nothing. The other SLOs are listed in ``details`` as
:data:`NOT_JUDGED` with the reason, never as passes, and do not hold the stage; ``minRequests``
(the candidate's user requests) does not apply there, ``minCompared`` does.
"""

from __future__ import annotations

from dataclasses import replace

from controller.analysis.parity_check import parity_verdict
from controller.analysis.sli import (
    LATENCY_GAP,
    PARITY_GAP,
    NoSample,
    Sample,
    SampleResult,
    SideCounts,
    custom_gap,
)
from controller.analysis.slo_checks import (
    Levels,
    error_rate_verdict,
    latency_verdict,
    quantile_lower_bound,
    quantile_upper_bound,
)
from controller.analysis.verdicts import Judgement, Outcome, SloVerdict
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

PROMOTION_RISK = 0.01
"""Probability that a candidate beyond an SLO's pass limit (``passDrift``, or a ceiling) passes
a stage. Not split over stages: a candidate must pass every stage, so the risk of a full
promotion is at most this too."""

NOT_JUDGED = "not judged"
"""The ``outcome`` in ``details["slos"]`` of an SLO a shadow stage does not judge (no
:class:`SloVerdict`: it is neither a pass nor a hold)."""

SHADOW_NOT_JUDGED = "shadow stage: no user request reaches the candidate"
"""Why a shadow stage does not judge its latency, error-rate and custom SLOs."""

__all__ = [
    "FALSE_ALARM_BUDGET",
    "NOT_JUDGED",
    "PROMOTION_RISK",
    "Judgement",
    "Outcome",
    "SloVerdict",
    "alpha_per_test",
    "judge",
    "quantile_lower_bound",
    "quantile_upper_bound",
]


def alpha_per_test(policy: RolloutPolicy) -> float:
    """The level of each SLO's fail test in each stage: the rollout's false-alarm budget split
    evenly (Bonferroni) over stages and SLOs."""
    tests = max(1, len(policy.spec.stages) * max(1, len(policy.spec.analysis.slos)))
    return FALSE_ALARM_BUDGET / tests


def judge(
    policy: RolloutPolicy,
    stage: int,
    sample: SampleResult,
    reference: SideCounts | None = None,
    window_s: float | None = None,
) -> Judgement:
    """Judge stage ``stage`` of a rollout of ``policy`` from its metrics.

    Args:
        policy: the rollout's policy (SLOs, minRequests, noData).
        stage: the stage's index (for messages; a stage at weight 0% is a shadow stage).
        sample: both sides over the stage so far, or why there is none.
        reference: the baseline over the rollout so far, used when the stage's baseline has
            fewer than ``minRequests`` requests.
        window_s: the stage window's length in seconds, if known. ``noData: fail`` applies
            only to windows of at least two analysis intervals: a younger window may simply
            hold fewer than the two scrapes a rate needs (PromQL ``increase()``).

    Returns:
        The :class:`Judgement`; ``details`` maps each SLO name to its figures
        (:meth:`SloVerdict.to_json`) under ``"slos"`` (at a shadow stage, the SLOs it does
        not judge as ``{"outcome": NOT_JUDGED, "reason": ...}``), and the sample's warnings
        (e.g. Envoys left out) under ``"warnings"``, also appended to the reason.
    """
    analysis = policy.spec.analysis
    where = f"stage {stage + 1}/{len(policy.spec.stages)}"
    if not analysis.slos:
        return Judgement("pass", f"{where}: no SLOs, bake time only")
    shadow = 0 <= stage < len(policy.spec.stages) and policy.spec.stages[stage].weight == 0
    judged = [slo for slo in analysis.slos if not shadow or isinstance(slo, ParitySlo)]
    if not judged:
        return Judgement(
            "inconclusive", f"{where}: a shadow stage without a parity SLO: nothing judges it"
        )
    no_data_fails = analysis.no_data == "fail" and (
        window_s is None or window_s >= 2 * analysis.interval.total_seconds()
    )
    if isinstance(sample, NoSample):
        return _no_sample(where, sample, no_data_fails)
    verdicts = tuple(_judge_slo(slo, sample, reference, policy, no_data_fails) for slo in judged)
    by_name = {v.name: v.to_json() for v in verdicts}
    details: dict[str, object] = {
        "slos": {
            slo_name(slo): by_name.get(
                slo_name(slo), {"outcome": NOT_JUDGED, "reason": SHADOW_NOT_JUDGED}
            )
            for slo in analysis.slos
        }
    }
    warned = ""
    if shadow:
        details["shadow"] = True
        warned = f" ({where} is a shadow stage: only parity is judged)"
    if sample.warnings:
        details["warnings"] = list(sample.warnings)
        warned += " (warning: " + "; ".join(sample.warnings) + ")"
    failed = [v for v in verdicts if v.outcome == "fail"]
    if failed:
        return Judgement("fail", "; ".join(v.reason for v in failed) + warned, verdicts, details)
    if all(v.outcome == "pass" for v in verdicts):
        reason = "; ".join(v.reason for v in verdicts) + warned
        return Judgement("pass", reason, verdicts, details)
    pending = [v for v in verdicts if v.outcome != "pass"]
    reason = "; ".join(v.reason for v in pending) + warned
    return Judgement("inconclusive", reason, verdicts, details)


def _no_sample(where: str, sample: NoSample, no_data_fails: bool) -> Judgement:
    if sample.kind == "error":
        reason = f"{where}: metrics query failed (not a breach; holding): {sample.message}"
        return Judgement("inconclusive", reason, details={"no_data": "error"})
    what = "no data" if sample.kind == "empty" else "NaN"
    if no_data_fails:
        return Judgement(
            "fail",
            f"{where}: {what} (noData: fail): {sample.message}",
            details={"no_data": sample.kind},
        )
    return Judgement(
        "inconclusive",
        f"{where}: {what} (holding: noData: hold, or a window under two intervals): "
        f"{sample.message}",
        details={"no_data": sample.kind},
    )


def _no_data(name: str, gap: NoSample, no_data_fails: bool) -> SloVerdict:
    """An SLO whose metric could not be read: ``noData`` decides (a query error holds)."""
    what = {"empty": "no data", "nan": "NaN", "error": "query failed"}[gap.kind]
    if gap.kind != "error" and no_data_fails:
        return SloVerdict(name, "fail", f"{name}: {what} (noData: fail): {gap.message}")
    mode = "not a breach; holding" if gap.kind == "error" else "holding"
    return SloVerdict(name, "inconclusive", f"{name}: {what} ({mode}): {gap.message}")


def _judge_slo(
    slo: LatencySlo | ErrorRateSlo | ParitySlo | CustomSlo,
    sample: Sample,
    reference: SideCounts | None,
    policy: RolloutPolicy,
    no_data_fails: bool,
) -> SloVerdict:
    name = slo_name(slo)
    levels = Levels(alpha_per_test(policy), PROMOTION_RISK)
    min_requests = policy.spec.analysis.min_requests
    baseline, used_reference = sample.baseline, False
    if (
        baseline.requests < min_requests
        and reference is not None
        and reference.requests > baseline.requests
    ):
        baseline, used_reference = reference, True
    if isinstance(slo, ParitySlo):
        return _parity(slo, sample, levels, no_data_fails)
    if isinstance(slo, CustomSlo):
        gap = sample.gaps.get(custom_gap(slo.name))
        return _no_data(name, gap, no_data_fails) if gap else _custom(slo, sample, min_requests)
    candidate = sample.candidate
    if isinstance(slo, ErrorRateSlo):
        verdict = error_rate_verdict(slo, baseline, candidate, levels)
    else:
        gap = sample.gaps.get(LATENCY_GAP)
        if gap is not None and (candidate.latency.total <= 0 or baseline.latency.total <= 0):
            verdict = _no_data(name, gap, no_data_fails)
            return _with_counts(verdict, baseline, candidate, used_reference)
        verdict = latency_verdict(slo, baseline, candidate, levels)
    verdict = _with_counts(verdict, baseline, candidate, used_reference)
    if verdict.outcome == "pass" and candidate.requests < min_requests:
        return replace(
            verdict,
            outcome="inconclusive",
            reason=f"{name}: {candidate.requests:.0f}/{min_requests} candidate requests "
            f"in this stage (minRequests); {verdict.reason}",
        )
    return verdict


def _parity(slo: ParitySlo, sample: Sample, levels: Levels, no_data_fails: bool) -> SloVerdict:
    """The parity SLO. Its evidence is the comparator's compared requests, which mirroring
    gives at any weight: ``minCompared`` applies, ``minRequests`` (user requests) does not."""
    if sample.parity is None:
        gap = sample.gaps.get(PARITY_GAP) or NoSample(
            "empty", "the metrics provider returned no parity figures"
        )
        return _no_data(slo_name(slo), gap, no_data_fails)
    return parity_verdict(slo, sample.parity, levels)


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
    return replace(
        verdict,
        reason=reason,
        baseline_requests=baseline.requests,
        candidate_requests=candidate.requests,
        reference=reference,
    )
