"""The parity SLO in the judge (``controller.analysis.parity_check``, ``judge``): the mismatch
rate among compared requests against ``1 - minValue/100``, both ways, anytime-valid; a shadow
stage (weight 0%) judged on parity alone; no parity data decided by ``noData``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from controller.analysis.judge import NOT_JUDGED, alpha_per_test, judge
from controller.analysis.parity_check import parity_limit, parity_verdict
from controller.analysis.queries import PARITY_OUTCOMES, parity_query
from controller.analysis.sequential import upper_bound
from controller.analysis.sli import PARITY_GAP, NoSample, ParitySli, Sample, SideCounts
from controller.analysis.slo_checks import Levels
from controller.analysis.verdicts import Judgement
from controller.cli.rolloutview import slo_table
from controller.policy.rollout_policy import ParitySlo, RolloutPolicy

PARITY = {"metric": "parity", "minValue": "99.9%"}
ERROR_RATE = {"metric": "error_rate", "maxDrift": "5%"}
LATENCY = {"metric": "latency_p99", "maxDrift": "5%"}

HEALTHY = SideCounts(100_000.0, 100.0)
BROKEN = SideCounts(2_000.0, 1_000.0)  # half its requests fail: any error SLO fails it


def make_policy(
    slos: list[dict[str, Any]], weights: tuple[str, ...] = ("1%", "50%", "100%"), **analysis: Any
) -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "items"},
            "spec": {
                "route": "items",
                "baseline": {"cluster": "items-v1"},
                "candidate": {"cluster": "items-v2"},
                "stages": [{"weight": w, "bake": "1m"} for w in weights],
                "analysis": {"interval": "30s", "slos": slos, **analysis},
                "parity": {"mirror": "10%"},
            },
        }
    )


SHADOW = ("0%", "10%", "100%")


def sample(
    parity: ParitySli | None,
    candidate: SideCounts = HEALTHY,
    gaps: dict[str, NoSample] | None = None,
) -> Sample:
    return Sample(0.0, 600.0, HEALTHY, candidate, gaps=gaps or {}, parity=parity)


def compared(n: float, mismatched: float = 0.0, noisy: float = 0.0) -> ParitySli:
    return ParitySli(compared=n, mismatched=mismatched, noisy=noisy, errors=0.0)


def slos(verdict: Judgement) -> dict[str, dict[str, Any]]:
    figures = verdict.details["slos"]
    assert isinstance(figures, dict)
    return figures


# --- the verdict ----------------------------------------------------------------------------------


def test_zero_mismatches_in_100_is_inconclusive() -> None:
    """0 in 100 is no proof of a rate under 0.1%: the bound is ~8.6%."""
    verdict = judge(make_policy([PARITY]), 0, sample(compared(100)))
    assert verdict.outcome == "inconclusive", verdict.reason
    assert "0 mismatches in 100 compared" in verdict.reason
    assert "not enough evidence either way yet" in verdict.reason
    figures = slos(verdict)["parity"]
    assert figures["candidate"] == 0.0
    assert figures["upper_bound"] > 0.05
    assert figures["threshold"] == figures["pass_threshold"] == pytest.approx(0.001)


def test_zero_mismatches_in_10_000_passes_99_9() -> None:
    verdict = judge(make_policy([PARITY]), 0, sample(compared(10_000, noisy=40)))
    assert verdict.outcome == "pass", verdict.reason
    bound = upper_bound(0, 10_000, 0.01, (1.25, 1.5, 2.0, 3.0))
    assert bound < 0.001
    assert f"the rate is below {bound * 100:.3g}% at 99%" in verdict.reason
    assert "0 mismatches in 10,000 compared" in verdict.reason
    assert "40 noisy" in verdict.reason
    figures = slos(verdict)["parity"]
    assert figures["candidate_requests"] == 10_000
    assert figures["compared"] == 10_000
    assert figures["noisy"] == 40
    assert figures["upper_bound"] == pytest.approx(bound)


def test_the_reason_states_the_bound_of_zero_mismatches_in_1000() -> None:
    slo = ParitySlo.model_validate({"metric": "parity", "minValue": "99.9%"})
    verdict = parity_verdict(slo, compared(1_000), Levels(0.001, 0.01))
    assert verdict.outcome == "inconclusive"
    assert verdict.reason.startswith(
        "parity: 0 mismatches in 1,000 compared: the rate is below 0.853% at 99%"
    ), verdict.reason
    assert "limit 0.1% (minValue 99.9%)" in verdict.reason


def test_one_percent_mismatches_fail_99_9_quickly() -> None:
    """A candidate mismatching 1% of requests against a 0.1% limit, looked at every 100
    compared requests: every run fails, half of them within 1,000 compared."""
    policy = make_policy([PARITY, ERROR_RATE])
    rng = np.random.default_rng(5)
    failed_at: list[int] = []
    for _ in range(100):
        x, n = 0, 0
        while n < 5_000:
            x += int(rng.binomial(100, 0.01))
            n += 100
            verdict = judge(policy, 1, sample(compared(n, x)))
            if verdict.outcome == "fail":
                break
        assert verdict.outcome == "fail", verdict.reason
        failed_at.append(n)
    assert float(np.median(failed_at)) <= 1_000, failed_at
    assert verdict.reason.startswith("parity failed: mismatch rate")
    assert "above the limit 0.1% (minValue 99.9%)" in verdict.reason
    figures = slos(verdict)["parity"]
    assert figures["confidence"] >= 1 - figures["alpha"]
    assert figures["alpha"] == pytest.approx(alpha_per_test(policy))


def test_a_parity_fail_fails_the_stage_whatever_the_other_slos_say() -> None:
    verdict = judge(make_policy([ERROR_RATE, PARITY]), 1, sample(compared(5_000, 100)))
    assert verdict.outcome == "fail"
    assert slos(verdict)["error_rate"]["outcome"] == "pass"
    assert slos(verdict)["parity"]["outcome"] == "fail"


@pytest.mark.parametrize(
    ("min_compared", "outcome"), [(20_000, "inconclusive"), (10_000, "pass"), (0, "pass")]
)
def test_min_compared_holds_a_pass(min_compared: int, outcome: str) -> None:
    policy = make_policy([{**PARITY, "minCompared": min_compared}])
    verdict = judge(policy, 0, sample(compared(10_000)))
    assert verdict.outcome == outcome, verdict.reason
    if outcome == "inconclusive":
        assert verdict.reason.startswith(
            "parity: 10,000/20000 compared requests in this stage (minCompared)"
        )


def test_min_compared_never_holds_a_fail() -> None:
    policy = make_policy([{**PARITY, "minCompared": 100_000}])
    assert judge(policy, 0, sample(compared(2_000, 40))).outcome == "fail"


def test_no_compared_request_yet_is_inconclusive_and_names_the_errors() -> None:
    verdict = judge(make_policy([PARITY]), 0, sample(ParitySli(0.0, 0.0, 0.0, 12.0)))
    assert verdict.outcome == "inconclusive"
    assert "no compared requests yet" in verdict.reason
    assert "12 not compared" in verdict.reason


def test_a_limit_of_zero_never_passes() -> None:
    policy = make_policy([{"metric": "parity", "minValue": "100%"}])
    verdict = judge(policy, 0, sample(compared(1_000_000)))
    assert verdict.outcome == "inconclusive"
    assert "a limit of 0 can never be shown" in verdict.reason
    assert parity_limit(policy.spec.analysis.slos[0]) == 0.0  # type: ignore[arg-type]


# --- a shadow stage -------------------------------------------------------------------------------


def test_a_shadow_stage_judges_parity_only() -> None:
    """The candidate's user-facing figures are bad (it served nobody: here they even fail),
    yet a shadow stage judges parity alone and lists the others as not judged."""
    policy = make_policy([LATENCY, ERROR_RATE, PARITY], SHADOW)
    verdict = judge(policy, 0, sample(compared(10_000), candidate=BROKEN))
    assert verdict.outcome == "pass", verdict.reason
    assert [v.name for v in verdict.slos] == ["parity"]
    figures = slos(verdict)
    assert list(figures) == ["latency_p99", "error_rate", "parity"]
    for name in ("latency_p99", "error_rate"):
        assert figures[name] == {
            "outcome": NOT_JUDGED,
            "reason": "shadow stage: no user request reaches the candidate",
        }
    assert figures["parity"]["outcome"] == "pass"
    assert verdict.details["shadow"] is True
    assert "shadow stage: only parity is judged" in verdict.reason
    assert "error_rate" not in verdict.reason


def test_the_next_stage_judges_every_slo() -> None:
    policy = make_policy([ERROR_RATE, PARITY], SHADOW)
    verdict = judge(policy, 1, sample(compared(10_000), candidate=BROKEN))
    assert verdict.outcome == "fail"
    assert slos(verdict)["error_rate"]["outcome"] == "fail"
    assert "shadow" not in verdict.details


def test_a_shadow_stage_needs_no_candidate_requests_but_min_compared() -> None:
    """minRequests (user requests) does not apply at a shadow stage, minCompared does; the
    other SLOs' lack of data does not hold it."""
    policy = make_policy([ERROR_RATE, {**PARITY, "minCompared": 12_000}], SHADOW, minRequests=500)
    nobody = SideCounts(0.0, 0.0)
    held = judge(policy, 0, sample(compared(10_000), candidate=nobody))
    assert held.outcome == "inconclusive"
    assert "minCompared" in held.reason
    assert "error_rate" not in held.reason
    passed = judge(policy, 0, sample(compared(12_000), candidate=nobody))
    assert passed.outcome == "pass", passed.reason


def test_a_shadow_stage_with_mismatches_fails() -> None:
    policy = make_policy([ERROR_RATE, PARITY], SHADOW)
    verdict = judge(policy, 0, sample(compared(3_000, 30)))
    assert verdict.outcome == "fail"
    assert verdict.reason.startswith("parity failed")


# --- no parity data -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("no_data", "window_s", "kind", "outcome"),
    [
        ("hold", 600.0, "empty", "inconclusive"),
        ("fail", 600.0, "empty", "fail"),
        ("fail", 600.0, "nan", "fail"),
        ("fail", 40.0, "empty", "inconclusive"),  # under two intervals: maybe one scrape
        ("fail", 600.0, "error", "inconclusive"),  # a query error is never a breach
    ],
)
def test_no_parity_data_follows_no_data(
    no_data: str, window_s: float, kind: str, outcome: str
) -> None:
    policy = make_policy([ERROR_RATE, PARITY], noData=no_data)
    gap = NoSample(kind, "no sluice_parity_requests_total series")  # type: ignore[arg-type]
    verdict = judge(policy, 1, sample(None, gaps={PARITY_GAP: gap}), window_s=window_s)
    assert verdict.outcome == outcome, verdict.reason
    assert slos(verdict)["error_rate"]["outcome"] == "pass"
    assert slos(verdict)["parity"]["outcome"] == outcome
    assert "no sluice_parity_requests_total series" in verdict.reason


def test_a_sample_without_parity_nor_gap_is_no_data() -> None:
    policy = make_policy([PARITY], SHADOW, noData="fail")
    verdict = judge(policy, 0, sample(None), window_s=600.0)
    assert verdict.outcome == "fail"
    assert "no parity figures" in verdict.reason


def test_a_parity_gap_does_not_touch_the_other_slos() -> None:
    """With a parity SLO gap, the error rate is still judged (and fails a broken candidate)."""
    policy = make_policy([ERROR_RATE, PARITY])
    gap = NoSample("empty", "nothing mirrored")
    verdict = judge(policy, 1, sample(None, candidate=BROKEN, gaps={PARITY_GAP: gap}))
    assert verdict.outcome == "fail"
    assert slos(verdict)["error_rate"]["outcome"] == "fail"


# --- error rates at the limit ---------------------------------------------------------------------


def _looks(rng: np.random.Generator, p: float, runs: int, looks: int, step: int) -> np.ndarray:
    """Cumulative mismatches at each look of ``runs`` streams of Bernoulli(p) requests."""
    return np.cumsum(rng.binomial(step, p, size=(runs, looks)), axis=1)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(
    min_value=st.sampled_from([99.9, 99.0, 95.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_at_the_limit_the_fail_test_rarely_rejects(min_value: float, seed: int) -> None:
    """A candidate whose true mismatch rate is exactly the limit, looked at 20 times: the fail
    test rejects in at most its level's share of runs (Ville's inequality; level 5% here so
    that the simulation can see it), and the pass test at most the pass level's. (A
    fixed-sample binomial test at 5% repeated at every look rejects in 14-16 runs of 100
    here: this bound catches it.)"""
    slo = ParitySlo.model_validate({"metric": "parity", "minValue": f"{min_value}%"})
    limit = parity_limit(slo)
    levels = Levels(fail=0.05, passing=0.05)
    runs, looks = 100, 20
    step = max(50, round(20 / limit / looks))  # up to ~20 expected mismatches per run
    rng = np.random.default_rng(seed)
    mismatches = _looks(rng, limit, runs, looks, step)
    fails = passes = 0
    for run in mismatches:
        outcomes = {
            parity_verdict(slo, compared(step * (i + 1), float(x)), levels).outcome
            for i, x in enumerate(run)
        }
        fails += "fail" in outcomes
        passes += "pass" in outcomes
    # Binomial(100, 0.05) exceeds 12 with probability ~0.2%; the mixture is more conservative.
    assert fails <= 12, (fails, runs)
    assert passes <= 12, (passes, runs)


def test_the_limit_is_a_ratio_of_the_matched_share() -> None:
    assert (
        parity_limit(ParitySlo.model_validate({"metric": "parity", "minValue": "99.9%"})) == 0.001
    )
    assert parity_limit(ParitySlo.model_validate({"metric": "parity", "minValue": "0.0%"})) == 1.0
    assert math.isclose(
        parity_limit(ParitySlo.model_validate({"metric": "parity", "minValue": "95.5%"})), 0.045
    )


# --- the status table -----------------------------------------------------------------------------


def test_the_status_table_shows_the_parity_row_and_the_slos_not_judged() -> None:
    policy = make_policy([ERROR_RATE, PARITY], SHADOW)
    verdict = judge(policy, 0, sample(compared(12_000, 3, noisy=31)))
    console = Console(width=160, record=True)
    console.print(slo_table(slos(verdict)))
    rows = {line.split()[0]: line for line in console.export_text().splitlines() if line}
    assert "not judged" in rows["error_rate"]
    assert "0.000%" not in rows["error_rate"]
    parity = rows["parity"]
    for text in ("0.025%", "0.100%", "12000 compared, 31 noisy"):
        assert text in parity, parity


# --- the PromQL -----------------------------------------------------------------------------------


def test_the_parity_query_per_outcome_escapes_the_route() -> None:
    assert parity_query("items", "mismatched", 120) == (
        'sum(increase(sluice_parity_requests_total{route="items",outcome="mismatched"}[120s]))'
    )
    assert 'route="a\\"b",' in parity_query('a"b', "matched", 5)
    assert PARITY_OUTCOMES == ("matched", "noisy", "mismatched", "error")
    with pytest.raises(ValueError, match="unknown parity outcome"):
        parity_query("items", "skipped", 5)
