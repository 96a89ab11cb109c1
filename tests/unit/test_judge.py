"""The judge (``controller.analysis.judge``): per-SLO verdicts from counts, with Envoy-like
latency histograms over Sluice's own bucket bounds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from controller.analysis.judge import (
    PROMOTION_RISK,
    alpha_per_test,
    judge,
    quantile_lower_bound,
    quantile_upper_bound,
)
from controller.analysis.sli import (
    EMPTY_HISTOGRAM,
    LATENCY_GAP,
    Histogram,
    NoSample,
    Sample,
    SideCounts,
    custom_gap,
)
from controller.policy.rollout_policy import RolloutPolicy
from controller.xds.bootstrap import latency_buckets_ms

BOUNDS = (*latency_buckets_ms(), math.inf)
MEDIAN_MS, SIGMA = 50.0, 0.6
Z99 = 2.3263478740408408
TRUE_P99 = MEDIAN_MS * math.exp(SIGMA * Z99)  # ~201.6 ms

ERROR_RATE = {"metric": "error_rate", "maxDrift": "5%"}
LATENCY_P99 = {"metric": "latency_p99", "maxDrift": "5%"}


def make_policy(
    slos: list[dict[str, Any]] | None = None,
    stages: int = 4,
    **analysis: Any,
) -> RolloutPolicy:
    weights = [*["1%", "5%", "25%", "50%", "75%"][: stages - 1], "100%"]
    body: dict[str, Any] = {"interval": "30s", **analysis}
    if slos is not None:
        body["slos"] = slos
    return RolloutPolicy.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "comments"},
            "spec": {
                "route": "comments",
                "baseline": {"cluster": "comments-python"},
                "candidate": {"cluster": "comments-go"},
                "stages": [{"weight": w, "bake": "1m"} for w in weights],
                "analysis": body,
            },
        }
    )


POLICY = make_policy()  # default SLOs: latency_p99 and error_rate, maxDrift 5%; minRequests 500


# --- synthetic sides -----------------------------------------------------------------------------


def _cdf(t: float, median: float = MEDIAN_MS) -> float:
    """The log-normal latency distribution of the baseline (median 50 ms, sigma 0.6)."""
    if math.isinf(t):
        return 1.0
    return 0.5 * (1 + math.erf(math.log(t / median) / (SIGMA * math.sqrt(2))))


def _tail_slower(t: float) -> float:
    """The candidate whose slowest 5% are 50% slower: ``Q(u)`` below u = 0.95, ``1.5 Q(u)``
    above (its p99 is 1.5 times the baseline's)."""
    return min(_cdf(t), 0.95) + max(0.0, _cdf(t / 1.5) - 0.95)


def expected(requests: float, error_rate: float, cdf: Any = _cdf) -> SideCounts:
    """A side with exactly the expected counts (what an infinite average would read)."""
    counts = tuple(requests * cdf(b) for b in BOUNDS)
    return SideCounts(requests, requests * error_rate, Histogram(BOUNDS, counts))


def drawn(
    rng: np.random.Generator, requests: int, error_rate: float, scale: float = 1.0
) -> SideCounts:
    """A side drawn at random: per-bucket multinomial counts, binomial errors."""
    probs = np.diff([0.0, *[_cdf(b / scale) for b in BOUNDS]])
    counts = np.cumsum(rng.multinomial(requests, probs / probs.sum()))
    errors = float(rng.binomial(requests, error_rate))
    return SideCounts(float(requests), errors, Histogram(BOUNDS, tuple(counts.tolist())))


def sample(baseline: SideCounts, candidate: SideCounts, **custom: tuple[float, float]) -> Sample:
    return Sample(0.0, 300.0, baseline, candidate, dict(custom))


HEALTHY_BASE = expected(100_000, 0.01)
HEALTHY_CAND = expected(20_000, 0.01)


def slo_details(judgement: Any, name: str) -> dict[str, Any]:
    slos = judgement.details["slos"]
    assert isinstance(slos, dict)
    entry = slos[name]
    assert isinstance(entry, dict)
    return entry


# --- no SLOs, no sample --------------------------------------------------------------------------


def test_no_slos_is_a_pass_on_bake_time_alone() -> None:
    policy = make_policy(slos=[])
    verdict = judge(policy, 0, sample(HEALTHY_BASE, HEALTHY_CAND))
    assert verdict.outcome == "pass"
    assert "no SLOs" in verdict.reason


@pytest.mark.parametrize("no_data", ["hold", "fail"])
def test_a_query_error_is_inconclusive_whatever_no_data_says(no_data: str) -> None:
    policy = make_policy(noData=no_data)
    verdict = judge(policy, 1, NoSample("error", "connection refused to 127.0.0.1:9090"))
    assert verdict.outcome == "inconclusive"
    assert "query failed" in verdict.reason
    assert "connection refused" in verdict.reason
    assert "stage 2/4" in verdict.reason
    assert verdict.details == {"no_data": "error"}


@pytest.mark.parametrize("kind", ["empty", "nan"])
@pytest.mark.parametrize(("no_data", "outcome"), [("hold", "inconclusive"), ("fail", "fail")])
def test_no_data_follows_the_policy(kind: str, no_data: str, outcome: str) -> None:
    policy = make_policy(noData=no_data)
    verdict = judge(policy, 0, NoSample(kind, "no series for comments-go"))  # type: ignore[arg-type]
    assert verdict.outcome == outcome
    assert f"noData: {no_data}" in verdict.reason
    assert "no series for comments-go" in verdict.reason
    assert verdict.details == {"no_data": kind}


@pytest.mark.parametrize(("window_s", "outcome"), [(30.0, "inconclusive"), (60.0, "fail")])
def test_no_data_fails_only_once_the_window_spans_two_intervals(
    window_s: float, outcome: str
) -> None:
    """A window younger than two analysis intervals (30 s here) may hold fewer than the two
    scrapes a rate needs: its no-data holds even under ``noData: fail``."""
    policy = make_policy(noData="fail")
    verdict = judge(policy, 0, NoSample("empty", "no series"), window_s=window_s)
    assert verdict.outcome == outcome, verdict.reason


# --- healthy candidates --------------------------------------------------------------------------


def test_a_healthy_candidate_with_plenty_of_data_passes() -> None:
    verdict = judge(POLICY, 0, sample(HEALTHY_BASE, HEALTHY_CAND))
    assert verdict.outcome == "pass", verdict.reason
    assert [v.name for v in verdict.slos] == ["latency_p99", "error_rate"]
    assert all(v.outcome == "pass" for v in verdict.slos)
    latency = slo_details(verdict, "latency_p99")
    assert latency["baseline"] == latency["candidate"] == BOUNDS[BOUNDS.index(210)]
    assert latency["drift"] == 0.0
    assert latency["reference"] is False


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_seeded_healthy_candidates_pass(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = drawn(rng, 200_000, 0.01)
    cand = drawn(rng, 50_000, 0.01)
    verdict = judge(POLICY, 1, sample(base, cand))
    assert verdict.outcome == "pass", verdict.reason


# --- regressions ---------------------------------------------------------------------------------


def test_twice_the_error_rate_fails_with_every_figure() -> None:
    verdict = judge(POLICY, 0, sample(HEALTHY_BASE, expected(20_000, 0.02)))
    assert verdict.outcome == "fail"
    reason = verdict.reason
    assert reason.startswith("error_rate failed"), reason
    assert "latency_p99" not in reason  # only the failing SLO is named
    for text in ("2.00%", "1.00%", "drift +100.0%", "confidence", "20000 candidate requests"):
        assert text in reason, (text, reason)
    assert "100000 baseline requests" in reason, reason
    figures = slo_details(verdict, "error_rate")
    assert figures["outcome"] == "fail"
    assert figures["baseline"] == pytest.approx(0.01)
    assert figures["candidate"] == pytest.approx(0.02)
    assert figures["drift"] == pytest.approx(1.0)
    assert figures["confidence"] >= 1 - alpha_per_test(POLICY)
    assert figures["baseline_requests"] == 100_000
    assert figures["candidate_requests"] == 20_000
    assert 0.0105 < figures["threshold"] < 0.013  # 1.05 x the baseline's upper bound
    assert slo_details(verdict, "latency_p99")["outcome"] == "pass"


def test_slowest_five_percent_fifty_percent_slower_fails_on_p99() -> None:
    candidate = expected(20_000, 0.01, _tail_slower)
    verdict = judge(POLICY, 0, sample(HEALTHY_BASE, candidate))
    assert verdict.outcome == "fail"
    assert verdict.reason.startswith("latency_p99 failed"), verdict.reason
    assert "error_rate" not in verdict.reason
    figures = slo_details(verdict, "latency_p99")
    assert figures["drift"] == pytest.approx(0.5, abs=0.06)
    assert figures["candidate"] >= 1.4 * TRUE_P99
    assert figures["confidence"] >= 1 - alpha_per_test(POLICY)
    assert figures["threshold"] in BOUNDS
    assert TRUE_P99 * 1.05 <= figures["threshold"] <= TRUE_P99 * 1.25
    assert slo_details(verdict, "error_rate")["outcome"] == "pass"


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_seeded_bad_candidates_fail(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = drawn(rng, 200_000, 0.01)
    cand = drawn(rng, 50_000, 0.02, scale=1.2)
    verdict = judge(POLICY, 2, sample(base, cand))
    assert verdict.outcome == "fail"
    assert "latency_p99 failed" in verdict.reason
    assert "error_rate failed" in verdict.reason


# --- minRequests and the reference baseline ------------------------------------------------------


def test_too_few_candidate_requests_is_inconclusive_even_when_all_looks_good() -> None:
    enough = judge(make_policy(minRequests=10_000), 0, sample(HEALTHY_BASE, HEALTHY_CAND))
    assert enough.outcome == "pass", enough.reason
    verdict = judge(make_policy(minRequests=50_000), 0, sample(HEALTHY_BASE, HEALTHY_CAND))
    assert verdict.outcome == "inconclusive"
    assert "20000/50000 candidate requests" in verdict.reason
    assert "minRequests" in verdict.reason
    assert all(v.outcome == "inconclusive" for v in verdict.slos)


def test_a_breach_fails_before_min_requests() -> None:
    """Anytime-valid: a clear breach needs no minimum (only a pass does)."""
    verdict = judge(make_policy(minRequests=50_000), 0, sample(HEALTHY_BASE, expected(5_000, 0.05)))
    assert verdict.outcome == "fail"
    assert "error_rate failed" in verdict.reason


def test_the_reference_replaces_a_stage_baseline_with_too_few_requests() -> None:
    empty = SideCounts(0.0, 0.0, Histogram(BOUNDS, (0.0,) * len(BOUNDS)))
    alone = judge(POLICY, 3, sample(empty, HEALTHY_CAND))
    assert alone.outcome == "inconclusive", alone.reason

    verdict = judge(POLICY, 3, sample(empty, HEALTHY_CAND), reference=HEALTHY_BASE)
    assert verdict.outcome == "pass", verdict.reason
    for name in ("latency_p99", "error_rate"):
        figures = slo_details(verdict, name)
        assert figures["reference"] is True
        assert figures["baseline_requests"] == 100_000

    bad = judge(POLICY, 3, sample(empty, expected(20_000, 0.02)), reference=HEALTHY_BASE)
    assert bad.outcome == "fail"
    assert "100000 baseline requests (the rollout so far" in bad.reason


def test_the_reference_is_not_used_when_the_stage_has_enough() -> None:
    other = expected(1_000_000, 0.03)
    verdict = judge(POLICY, 0, sample(HEALTHY_BASE, HEALTHY_CAND), reference=other)
    assert verdict.outcome == "pass", verdict.reason
    assert slo_details(verdict, "error_rate")["reference"] is False
    assert slo_details(verdict, "error_rate")["baseline_requests"] == 100_000


# --- absolute ceilings ---------------------------------------------------------------------------


@pytest.mark.parametrize(("ceiling", "outcome"), [("100ms", "fail"), ("500ms", "pass")])
def test_latency_ceiling(ceiling: str, outcome: str) -> None:
    """Both sides alike (no drift): only the ceiling decides. p99 is ~202 ms."""
    policy = make_policy([{"metric": "latency_p99", "maxDrift": None, "maxValue": ceiling}])
    verdict = judge(policy, 0, sample(HEALTHY_BASE, HEALTHY_CAND))
    assert verdict.outcome == outcome, verdict.reason
    if outcome == "fail":
        assert "above the ceiling 100 ms" in verdict.reason
        assert slo_details(verdict, "latency_p99")["threshold"] == 100


def test_latency_ceiling_needs_no_baseline() -> None:
    policy = make_policy([{"metric": "latency_p99", "maxDrift": None, "maxValue": "100ms"}])
    empty = SideCounts(0.0, 0.0, Histogram(BOUNDS, (0.0,) * len(BOUNDS)))
    verdict = judge(policy, 0, sample(empty, HEALTHY_CAND))
    assert verdict.outcome == "fail", verdict.reason


@pytest.mark.parametrize(("rate", "outcome"), [(0.02, "fail"), (0.005, "pass")])
def test_error_rate_ceiling(rate: float, outcome: str) -> None:
    """Both sides at the same rate (no drift): only the 1% ceiling decides."""
    policy = make_policy([{"metric": "error_rate", "maxDrift": None, "maxValue": "1%"}])
    verdict = judge(policy, 0, sample(expected(100_000, rate), expected(20_000, rate)))
    assert verdict.outcome == outcome, verdict.reason
    if outcome == "fail":
        assert "above the ceiling 1%" in verdict.reason


@pytest.mark.parametrize("rate", [0.0101, 0.011, 0.02])
def test_a_candidate_above_the_ceiling_is_never_promoted(rate: float) -> None:
    policy = make_policy([{"metric": "error_rate", "maxDrift": None, "maxValue": "1%"}])
    verdict = judge(policy, 0, sample(expected(100_000, rate), expected(1_000_000, rate)))
    assert verdict.outcome != "pass", verdict.reason


# --- custom SLOs and parity -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slo", "values", "outcome", "text"),
    [
        ({"better": "lower", "maxDrift": "10%"}, (100.0, 109.0), "pass", ""),
        ({"better": "lower", "maxDrift": "10%"}, (100.0, 111.0), "fail", "drift +11.0%"),
        ({"better": "lower", "maxDrift": "10%"}, (100.0, 50.0), "pass", ""),
        ({"better": "higher", "maxDrift": "10%"}, (100.0, 91.0), "pass", ""),
        ({"better": "higher", "maxDrift": "10%"}, (100.0, 89.0), "fail", "drift -11.0%"),
        ({"better": "higher", "maxDrift": "10%"}, (100.0, 150.0), "pass", ""),
        ({"maxValue": 5.0}, (1.0, 5.0), "pass", ""),
        ({"maxValue": 5.0}, (1.0, 5.5), "fail", "5.5 above 5"),
        ({"better": "higher", "minValue": 0.9}, (0.99, 0.95), "pass", ""),
        ({"better": "higher", "minValue": 0.9}, (0.99, 0.85), "fail", "0.85 below 0.9"),
    ],
)
def test_custom_slo_point_comparison(
    slo: dict[str, Any], values: tuple[float, float], outcome: str, text: str
) -> None:
    policy = make_policy(
        [{"metric": "custom", "name": "queue", "query": 'q{cluster="{cluster}"}', **slo}]
    )
    verdict = judge(policy, 0, sample(HEALTHY_BASE, HEALTHY_CAND, queue=values))
    assert verdict.outcome == outcome, verdict.reason
    assert text in verdict.reason
    if outcome == "fail":
        assert "point values, no test" in verdict.reason


def test_custom_slo_without_value_or_traffic_is_inconclusive() -> None:
    policy = make_policy(
        [{"metric": "custom", "name": "queue", "query": 'q{cluster="{cluster}"}', "maxValue": 5}]
    )
    assert judge(policy, 0, sample(HEALTHY_BASE, HEALTHY_CAND)).outcome == "inconclusive"
    few = expected(100, 0.01)
    verdict = judge(policy, 0, sample(HEALTHY_BASE, few, queue=(1.0, 1.0)))
    assert verdict.outcome == "inconclusive"
    assert "too few candidate requests" in verdict.reason


def test_parity_is_inconclusive_and_holds_the_stage() -> None:
    policy = make_policy([ERROR_RATE, {"metric": "parity", "minValue": "99.9%"}])
    verdict = judge(policy, 0, sample(HEALTHY_BASE, HEALTHY_CAND))
    assert verdict.outcome == "inconclusive"
    assert "parity" in verdict.reason
    assert slo_details(verdict, "error_rate")["outcome"] == "pass"
    assert slo_details(verdict, "parity")["outcome"] == "inconclusive"


# --- the false-alarm budget ----------------------------------------------------------------------


def test_alpha_is_split_over_stages_and_slos() -> None:
    assert alpha_per_test(POLICY) == pytest.approx(0.01 / 8)
    assert alpha_per_test(make_policy(slos=[])) == pytest.approx(0.01 / 4)


@pytest.mark.parametrize(("tolerance", "outcome"), [("0.1%", "pass"), ("0%", "fail")])
def test_an_error_drift_fails_only_beyond_both_the_ratio_and_the_tolerance(
    tolerance: str, outcome: str
) -> None:
    """0.01% -> 0.05% is five times the baseline's errors but 0.04 points: within the default
    tolerance (an intersection-union test: both parts must reject); without one it fails."""
    policy = make_policy([{**ERROR_RATE, "tolerance": tolerance}])
    verdict = judge(policy, 0, sample(expected(10_000_000, 0.0001), expected(1_000_000, 0.0005)))
    assert verdict.outcome == outcome, verdict.reason


def test_a_candidate_at_the_error_limit_is_rolled_back_at_most_at_alpha() -> None:
    """At the SLO's boundary (1% -> 1.1%: the tolerance binds), 300 seeded stages looked at
    every 2,000 candidate requests: a fail in at most alpha of them (3-sigma allowance)."""
    policy = make_policy([ERROR_RATE], stages=1)
    alpha = alpha_per_test(policy)
    rng = np.random.default_rng(25)
    streams, fails = 300, 0
    for _ in range(streams):
        nb = nc = eb = ec = 0.0
        for _ in range(20):
            nb, nc = nb + 40_000, nc + 2_000
            eb += rng.binomial(40_000, 0.01)
            ec += rng.binomial(2_000, 0.011)
            outcome = judge(policy, 0, sample(SideCounts(nb, eb), SideCounts(nc, ec))).outcome
            if outcome == "fail":
                fails += 1
                break
    assert fails / streams <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / streams), fails


def test_a_ceiling_alone_is_tested_at_the_full_level() -> None:
    policy = make_policy([{"metric": "error_rate", "maxDrift": None, "maxValue": "1%"}])
    verdict = judge(policy, 0, sample(HEALTHY_BASE, HEALTHY_CAND))
    assert verdict.slos[0].alpha == pytest.approx(alpha_per_test(policy))


# --- the quantile's upper confidence bound -------------------------------------------------------


def test_quantile_upper_bound_is_inf_with_too_little_data() -> None:
    rng = np.random.default_rng(21)
    for n in (0, 10, 100):
        hist = drawn(rng, n, 0.0).latency
        assert quantile_upper_bound(hist, 0.99, 0.01) == math.inf


def test_quantile_upper_bound_is_close_with_plenty_of_data() -> None:
    hist = expected(1_000_000, 0.0).latency
    upper = quantile_upper_bound(hist, 0.99, 0.001)
    true_bucket = hist.bound_at_or_above(TRUE_P99)
    assert true_bucket <= upper <= 1.1 * true_bucket


def test_quantile_upper_bound_covers_the_true_quantile_at_every_look() -> None:
    """400 seeded streams, looked at every 1,000 requests up to 20,000: the bound falls below
    the true p99's bucket at some look in at most alpha of them."""
    alpha = 0.05
    rng = np.random.default_rng(22)
    probs = np.diff([0.0, *[_cdf(b) for b in BOUNDS]])
    probs = probs / probs.sum()
    true_bucket = BOUNDS[next(i for i, b in enumerate(BOUNDS) if b >= TRUE_P99)]
    streams, looks, step = 400, 20, 1_000
    missed = 0
    finite_at_end = 0
    for _ in range(streams):
        counts = np.cumsum(rng.multinomial(step, probs, size=looks), axis=0)
        miss = False
        upper = math.inf
        for look in counts:
            hist = Histogram(BOUNDS, tuple(np.cumsum(look).tolist()))
            upper = quantile_upper_bound(hist, 0.99, alpha)
            miss = miss or upper < true_bucket
        missed += miss
        finite_at_end += math.isfinite(upper)
    rate = missed / streams
    tolerance = 3 * math.sqrt(alpha * (1 - alpha) / streams)
    print(f"quantile upper bound below the true p99 at some look: {rate:.2%} of streams")
    assert rate <= alpha + tolerance, f"missed in {rate:.2%} of streams"
    assert finite_at_end == streams


def test_quantile_lower_bound_is_close_with_plenty_of_data_and_zero_without_any() -> None:
    hist = expected(1_000_000, 0.0).latency
    lower = quantile_lower_bound(hist, 0.99, 0.001)
    true_bucket = hist.bound_at_or_above(TRUE_P99)
    assert 0.9 * true_bucket <= lower <= true_bucket
    assert quantile_lower_bound(Histogram(BOUNDS, (0.0,) * len(BOUNDS)), 0.99, 0.01) == 0
    assert (
        quantile_lower_bound(drawn(np.random.default_rng(3), 50, 0.0).latency, 0.99, 0.01)
        <= TRUE_P99
    )


def test_quantile_lower_bound_stays_below_the_true_quantile_at_every_look() -> None:
    """The mirror of the upper bound's coverage: above the true p99 at some look in at most
    alpha of 400 seeded streams."""
    alpha = 0.05
    rng = np.random.default_rng(23)
    probs = np.diff([0.0, *[_cdf(b) for b in BOUNDS]])
    probs = probs / probs.sum()
    streams, looks, step = 400, 20, 1_000
    missed = 0
    for _ in range(streams):
        counts = np.cumsum(rng.multinomial(step, probs, size=looks), axis=0)
        miss = False
        for look in counts:
            hist = Histogram(BOUNDS, tuple(np.cumsum(look).tolist()))
            miss = miss or quantile_lower_bound(hist, 0.99, alpha) > TRUE_P99
        missed += miss
    rate = missed / streams
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / streams), rate


# --- the pass rule: passDrift and the indifference zone ---------------------------------------


def _promoted_at_some_look(
    policy: RolloutPolicy, rng: np.random.Generator, error_rate: float, scale: float
) -> bool:
    """One stage looked at every 2,000 candidate requests up to 40,000 (baseline 20x as many):
    whether a pass came before any fail."""
    base_probs = np.diff([0.0, *[_cdf(b) for b in BOUNDS]])
    cand_probs = np.diff([0.0, *[_cdf(b / scale) for b in BOUNDS]])
    hb, hc = np.zeros(len(BOUNDS)), np.zeros(len(BOUNDS))
    nb = nc = eb = ec = 0.0
    for _ in range(20):
        nb, nc = nb + 40_000, nc + 2_000
        eb += rng.binomial(40_000, 0.01)
        ec += rng.binomial(2_000, error_rate)
        hb += rng.multinomial(40_000, base_probs / base_probs.sum())
        hc += rng.multinomial(2_000, cand_probs / cand_probs.sum())
        verdict = judge(
            policy,
            0,
            sample(
                SideCounts(nb, eb, Histogram(BOUNDS, tuple(np.cumsum(hb).tolist()))),
                SideCounts(nc, ec, Histogram(BOUNDS, tuple(np.cumsum(hc).tolist()))),
            ),
        ).outcome
        if verdict != "inconclusive":
            return verdict == "pass"
    return False


@pytest.mark.parametrize(
    ("slo", "error_rate", "scale"),
    [
        (ERROR_RATE, 0.02, 1.0),  # twice the errors: passDrift 100%
        (LATENCY_P99, 0.01, 1.2),  # +20% p99: passDrift 20%
        ({**ERROR_RATE, "passDrift": "50%"}, 0.015, 1.0),
    ],
    ids=["errors-x2", "latency-x1.2", "errors-x1.5-passDrift-50%"],
)
def test_a_candidate_at_the_pass_limit_is_promoted_at_most_at_the_promotion_risk(
    slo: dict[str, Any], error_rate: float, scale: float
) -> None:
    """Before this rule a pass only had to rule out twice the limit: +50% errors and +20% p99
    were promoted most of the time. At the pass limit itself, at most PROMOTION_RISK of
    300 seeded stages pass (with a 3-sigma Monte Carlo allowance)."""
    policy = make_policy([slo], minRequests=100)
    rng = np.random.default_rng(24)
    streams = 300
    promoted = sum(_promoted_at_some_look(policy, rng, error_rate, scale) for _ in range(streams))
    allowance = 3 * math.sqrt(PROMOTION_RISK * (1 - PROMOTION_RISK) / streams)
    print(f"promoted at the pass limit: {promoted}/{streams}")
    assert promoted / streams <= PROMOTION_RISK + allowance


def test_a_healthy_candidate_passes_once_its_requests_rule_out_the_pass_limit() -> None:
    policy = make_policy([ERROR_RATE, LATENCY_P99])
    few = judge(policy, 0, sample(HEALTHY_BASE, expected(1_000, 0.01)))
    assert few.outcome == "inconclusive", few.reason
    assert "not enough evidence either way" in few.reason
    enough = judge(policy, 0, sample(HEALTHY_BASE, expected(30_000, 0.01)))
    assert enough.outcome == "pass", enough.reason
    details = slo_details(enough, "error_rate")
    assert details["threshold"] < details["pass_threshold"]


def test_pass_drift_must_exceed_max_drift() -> None:
    with pytest.raises(ValueError, match="must be above maxDrift"):
        make_policy([{**LATENCY_P99, "passDrift": "5%"}])


# --- near-zero error rates: the absolute tolerance ----------------------------------------------


@pytest.mark.parametrize(("tolerance", "outcome"), [("0.1%", "pass"), ("0%", "inconclusive")])
def test_a_service_without_errors_passes_within_the_tolerance(tolerance: str, outcome: str) -> None:
    """Both sides error-free: a relative drift of nothing is nothing, so without an absolute
    tolerance no pass can ever be shown; 0.1 points are ruled out by 10,000 clean requests."""
    policy = make_policy([{**ERROR_RATE, "tolerance": tolerance}])
    verdict = judge(policy, 0, sample(expected(1_000_000, 0.0), expected(10_000, 0.0)))
    assert verdict.outcome == outcome, verdict.reason


def test_the_tolerance_does_not_hide_a_real_regression_near_zero() -> None:
    policy = make_policy([ERROR_RATE])
    verdict = judge(policy, 0, sample(expected(1_000_000, 0.0), expected(10_000, 0.005)))
    assert verdict.outcome == "fail", verdict.reason


# --- no data per SLO, and warnings --------------------------------------------------------------


@pytest.mark.parametrize(("no_data", "latency"), [("hold", "inconclusive"), ("fail", "fail")])
def test_a_missing_latency_histogram_is_no_data_for_latency_only(
    no_data: str, latency: str
) -> None:
    """A candidate down from the start: Envoy's local 503s, no timed response at all."""
    policy = make_policy([LATENCY_P99, ERROR_RATE], noData=no_data)
    down = SideCounts(0.0, 2_000.0, EMPTY_HISTOGRAM)
    gaps = {LATENCY_GAP: NoSample("empty", "comments-go: no upstream_rq_time series")}
    verdict = judge(policy, 0, Sample(0.0, 60.0, HEALTHY_BASE, down, gaps=gaps))
    assert verdict.outcome == "fail", verdict.reason
    assert slo_details(verdict, "error_rate")["outcome"] == "fail"
    assert slo_details(verdict, "latency_p99")["outcome"] == latency
    assert "no upstream_rq_time series" in slo_details(verdict, "latency_p99")["reason"]


@pytest.mark.parametrize(("no_data", "outcome"), [("hold", "inconclusive"), ("fail", "fail")])
def test_a_custom_query_without_data_follows_no_data_and_leaves_the_others(
    no_data: str, outcome: str
) -> None:
    policy = make_policy(
        [
            ERROR_RATE,
            {"metric": "custom", "name": "queue", "query": 'q{c="{cluster}"}', "maxValue": 5},
        ],
        noData=no_data,
    )
    gaps = {custom_gap("queue"): NoSample("empty", "query 'q' returned no series")}
    verdict = judge(policy, 0, Sample(0.0, 60.0, HEALTHY_BASE, HEALTHY_CAND, gaps=gaps))
    assert verdict.outcome == outcome, verdict.reason
    assert slo_details(verdict, "error_rate")["outcome"] == "pass"
    assert slo_details(verdict, "queue")["outcome"] == outcome


def test_sample_warnings_reach_the_verdict() -> None:
    warned = Sample(
        0.0, 60.0, HEALTHY_BASE, HEALTHY_CAND, warnings=("envoy 127.0.0.1:9901 left out",)
    )
    verdict = judge(POLICY, 0, warned)
    assert verdict.details["warnings"] == ["envoy 127.0.0.1:9901 left out"]
    assert "envoy 127.0.0.1:9901 left out" in verdict.reason


@pytest.mark.parametrize(
    "slo",
    [
        {"metric": "latency_p99", "maxDrift": "30%"},
        {"metric": "error_rate", "maxDrift": "150%"},
    ],
)
def test_a_max_drift_at_or_above_the_default_pass_drift_is_refused(slo: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must be below passDrift \(default"):
        make_policy([slo])


@pytest.mark.parametrize(
    "slo",
    [
        {"metric": "error_rate", "maxDrift": "5%", "maxValue": "1%"},
        {"metric": "latency_p99", "maxDrift": "5%", "maxValue": "500ms"},
    ],
)
def test_a_drift_limit_without_baseline_traffic_never_passes_on_its_ceiling_alone(
    slo: dict[str, Any],
) -> None:
    empty = SideCounts(0.0, 0.0, Histogram(BOUNDS, (0.0,) * len(BOUNDS)))
    verdict = judge(make_policy([slo]), 0, sample(empty, expected(20_000, 0.0)))
    assert verdict.outcome == "inconclusive", verdict.reason
    assert "no baseline traffic" in verdict.reason


def test_without_baseline_traffic_a_ceiling_still_fails() -> None:
    policy = make_policy([{"metric": "error_rate", "maxDrift": "5%", "maxValue": "1%"}])
    verdict = judge(policy, 0, sample(SideCounts(0.0, 0.0), expected(20_000, 0.05)))
    assert verdict.outcome == "fail", verdict.reason
    assert "above the ceiling 1%" in verdict.reason
