"""The RolloutPolicy model: defaults, units, ranges, cross-field checks and their messages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from controller.policy.gateway import Gateway
from controller.policy.loading import load_gateway, load_policy
from controller.policy.rollout_policy import (
    WEIGHT_SCALE,
    CustomSlo,
    ErrorRateSlo,
    LatencySlo,
    ParitySlo,
    RolloutPolicy,
    Stage,
    default_slos,
    default_stages,
    slo_name,
)
from controller.policy.source import DocumentError
from controller.policy.units import PercentRange, parse_percent

POLICIES = Path(__file__).resolve().parents[2] / "policies"

MINIMAL = """\
apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {name: comments}
spec:
  route: comments
  baseline: {cluster: comments-python}
  candidate: {cluster: comments-go}
"""


def _load(text: str, gateway: Gateway | None = None) -> RolloutPolicy:
    return load_policy(text, "p.yaml", gateway)


def _issues(text: str, gateway: Gateway | None = None) -> list[tuple[int | None, str, str]]:
    with pytest.raises(DocumentError) as info:
        _load(text, gateway)
    return [(i.line, i.field, i.message) for i in info.value.issues]


def _with(extra: str) -> str:
    """MINIMAL plus lines under spec (indented by the caller as under spec)."""
    return MINIMAL + extra


def test_defaults_of_a_minimal_policy() -> None:
    spec = _load(MINIMAL).spec
    assert [(s.weight, s.bake) for s in spec.stages] == [
        (1.0, timedelta(minutes=2)),
        (5.0, timedelta(minutes=5)),
        (25.0, timedelta(minutes=5)),
        (100.0, timedelta(minutes=5)),
    ]
    assert [s.deadline for s in spec.stages] == [None] * 4
    latency, errors = spec.analysis.slos
    assert isinstance(latency, LatencySlo)
    assert (latency.metric, latency.max_drift, latency.max_value) == ("latency_p99", 5.0, None)
    assert isinstance(errors, ErrorRateSlo)
    assert (errors.metric, errors.max_drift, errors.max_value) == ("error_rate", 5.0, None)
    analysis = spec.analysis
    assert (analysis.interval, analysis.min_requests, analysis.no_data) == (
        timedelta(seconds=30),
        500,
        "hold",
    )
    assert (analysis.failure_limit, analysis.failure_counting) == (1, "consecutive")
    assert spec.on_failure == "rollback"
    assert (spec.override, spec.sticky) == (None, None)
    assert spec.ack_timeout == timedelta(seconds=10)


def test_default_stages_and_slos_are_the_design_defaults() -> None:
    assert [s.weight for s in default_stages()] == [1, 5, 25, 100]
    assert [slo_name(s) for s in default_slos()] == ["latency_p99", "error_rate"]


def test_the_commented_example_writes_out_the_defaults() -> None:
    policy = _load((POLICIES / "comments.yaml").read_text(encoding="utf-8"))
    assert [(s.weight, s.bake) for s in policy.spec.stages] == [
        (s.weight, s.bake) for s in default_stages()
    ]
    assert policy.spec.analysis.slos == default_slos()
    assert policy.stage_deadline(3) == _load(MINIMAL).stage_deadline(3)


def test_stage_deadline_defaults_to_bake_plus_ten_intervals() -> None:
    text = (
        MINIMAL
        + "  stages:\n    - {weight: 50%, bake: 1m}\n    - {weight: 100%, bake: 1m, deadline: 3m}\n"
    )
    text += "  analysis: {interval: 10s}\n"
    policy = _load(text)
    assert policy.stage_deadline(0) == timedelta(minutes=1) + 20 * timedelta(seconds=10)
    assert policy.stage_deadline(1) == timedelta(minutes=3)


def test_envoy_weights_sum_to_the_scale() -> None:
    policy = _load(MINIMAL)
    assert policy.envoy_weights(0.25) == {"comments-python": 9975, "comments-go": 25}
    assert policy.envoy_weights(100) == {"comments-python": 0, "comments-go": 100 * WEIGHT_SCALE}
    assert Stage.model_validate({"weight": "0.29%", "bake": "1s"}).envoy_weight == 29


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        ("150%", "must be at most 100% (got 150%)"),
        ("100.5%", "must be at most 100% (got 100.5%)"),
        ("0.125%", "must be a multiple of 0.01% (got 0.125%)"),
        ("150", "percentage 150 has no unit; write e.g. '150%'"),
        ("-5%", "invalid percentage '-5%'; expected e.g. '5%', '0.5%', '99.9%'"),
        ("'5 percent'", "invalid percentage '5 percent'; expected e.g. '5%', '0.5%', '99.9%'"),
    ],
)
def test_stage_weight_errors_read_in_percent(weight: str, message: str) -> None:
    text = MINIMAL + f"  stages:\n    - weight: {weight}\n      bake: 1m\n"
    assert _issues(text) == [(9, "spec.stages[0].weight", message)]


@pytest.mark.parametrize("weight", ["0.01%", "0.29%", "33.33%", "100%", "100.00%"])
def test_stage_weights_in_steps_of_a_hundredth_are_accepted(weight: str) -> None:
    stage = Stage.model_validate({"weight": weight, "bake": "1m"})
    assert stage.weight == parse_percent(weight)


def test_percent_range_messages() -> None:
    bounds = PercentRange(ge=1, le=50)
    assert bounds.check(1.0) == 1.0
    with pytest.raises(ValueError, match=r"^must be at least 1% \(got 0.5%\)$"):
        bounds.check(0.5)
    assert bounds.describe() == "at least 1%, at most 50%"


def test_deadline_shorter_than_bake_is_reported_at_the_deadline() -> None:
    text = MINIMAL + "  stages:\n    - weight: 100%\n      bake: 5m\n      deadline: 1m\n"
    assert _issues(text) == [
        (11, "spec.stages[0].deadline", "must be at least the bake time (300s), got 60s")
    ]


def test_a_deadline_within_the_initial_delay_is_reported_at_the_deadline() -> None:
    text = MINIMAL + (
        "  stages:\n"
        "    - {weight: 50%, bake: 10s, deadline: 30s}\n"
        "    - {weight: 100%, bake: 10s, deadline: 2m}\n"
        "  analysis: {initialDelay: 30s}\n"
    )
    assert _issues(text) == [
        (
            9,
            "spec.stages[0].deadline",
            "the deadline (30s) must be longer than spec.analysis.initialDelay (30s): no"
            " analysis could pass the stage before it",
        )
    ]


def test_stages_must_increase_and_end_at_100() -> None:
    text = MINIMAL + (
        "  stages:\n"
        "    - {weight: 5%, bake: 1m}\n"
        "    - {weight: 5%, bake: 1m}\n"
        "    - {weight: 50%, bake: 1m}\n"
    )
    assert _issues(text) == [
        (10, "spec.stages[1].weight", "stage weights must increase: 5% follows 5% (stage 1)"),
        (
            11,
            "spec.stages[2].weight",
            "the last stage must send 100% to the candidate, got 50%",
        ),
    ]


def test_empty_stages_are_refused() -> None:
    assert _issues(MINIMAL + "  stages: []\n") == [
        (8, "spec.stages", "needs at least 1 item(s), got 0")
    ]


def test_same_cluster_on_both_sides() -> None:
    text = MINIMAL.replace("comments-go", "comments-python")
    assert _issues(text) == [
        (7, "spec.candidate.cluster", "the candidate must differ from the baseline")
    ]


def test_slo_kinds_and_names() -> None:
    text = MINIMAL + (
        "  analysis:\n"
        "    slos:\n"
        "      - {metric: latency_p95, maxDrift: 10%, maxValue: 250ms}\n"
        "      - {metric: error_rate, maxValue: 1%}\n"
        "      - {metric: parity, minValue: 99.9%}\n"
        "      - metric: custom\n"
        "        name: cpu\n"
        '        query: sum(rate(cpu_seconds{cluster="{cluster}"}[{window}]))\n'
        "        maxDrift: 20%\n"
        "  parity: {}\n"  # a parity SLO needs tap-compare
    )
    slos = _load(text).spec.analysis.slos
    latency, errors, parity, custom = slos
    assert isinstance(latency, LatencySlo)
    assert (latency.max_drift, latency.max_value) == (10.0, timedelta(milliseconds=250))
    assert isinstance(errors, ErrorRateSlo)
    assert (errors.max_drift, errors.max_value) == (5.0, 1.0)
    assert isinstance(parity, ParitySlo)
    assert parity.min_value == 99.9
    assert isinstance(custom, CustomSlo)
    assert (custom.better, custom.max_drift, custom.max_value) == ("lower", 20.0, None)
    assert [slo_name(s) for s in slos] == ["latency_p95", "error_rate", "parity", "cpu"]


def test_an_empty_slo_list_stays_empty() -> None:
    assert _load(MINIMAL + "  analysis: {slos: []}\n").spec.analysis.slos == ()


def test_slo_defined_twice() -> None:
    text = MINIMAL + (
        "  analysis:\n"
        "    slos:\n"
        "      - {metric: error_rate}\n"
        "      - {metric: error_rate, maxValue: 1%}\n"
    )
    assert _issues(text) == [
        (
            11,
            "spec.analysis.slos[1].metric",
            "SLO 'error_rate' is already defined at spec.analysis.slos[0]",
        )
    ]


@pytest.mark.parametrize(
    ("slo", "field", "message"),
    [
        (
            "{metric: latency_p90}",
            "spec.analysis.slos[0].metric",
            "unknown metric 'latency_p90' (did you mean 'latency_p99'?); allowed: latency_p50,"
            " latency_p95, latency_p99, error_rate, parity, custom",
        ),
        (
            "{maxDrift: 5%}",
            "spec.analysis.slos[0].metric",
            "required field is missing; allowed: latency_p50, latency_p95, latency_p99,"
            " error_rate, parity, custom",
        ),
        (
            "{metric: parity, minValue: 99%, maxDrift: 5%}",
            "spec.analysis.slos[0].maxDrift",
            "unknown field; allowed: metric, minValue, minCompared",
        ),
        (
            "{metric: latency_p99, maxdrift: 5%}",
            "spec.analysis.slos[0].maxdrift",
            "unknown field (did you mean 'maxDrift'?); allowed: metric, maxDrift, passDrift,"
            " maxValue",
        ),
        (
            "{metric: error_rate, maxValue: 150%}",
            "spec.analysis.slos[0].maxValue",
            "must be at most 100% (got 150%)",
        ),
        (
            "{metric: parity, minValue: 99.9}",
            "spec.analysis.slos[0].minValue",
            "percentage 99.9 has no unit; write e.g. '99.9%'",
        ),
        (
            "{metric: custom, name: cpu, query: 'rate(cpu[1m])', maxValue: 2}",
            "spec.analysis.slos[0].query",
            "must contain {cluster} (replaced by the baseline's and the candidate's cluster"
            ' name, e.g. envoy_cluster_name="{cluster}")',
        ),
        (
            "{metric: custom, name: cpu, query: 'rate(cpu{c=\"{cluster}\"}[1m])'}",
            "spec.analysis.slos[0]",
            "a custom SLO needs maxDrift, maxValue or minValue",
        ),
        ("latency_p99", "spec.analysis.slos[0]", "expected a mapping (key: value), got a string"),
    ],
)
def test_slo_errors_name_the_field_and_what_is_allowed(slo: str, field: str, message: str) -> None:
    text = MINIMAL + f"  analysis:\n    slos:\n      - {slo}\n"
    assert _issues(text) == [(10, field, message)]


def test_unknown_metric_points_at_the_metric_line() -> None:
    text = MINIMAL + "  analysis:\n    slos:\n      - maxDrift: 5%\n        metric: p99\n"
    [(line, field, _)] = _issues(text)
    assert (line, field) == (11, "spec.analysis.slos[0].metric")


def test_analysis_interval_must_be_positive() -> None:
    assert _issues(MINIMAL + "  analysis: {interval: 0s}\n") == [
        (8, "spec.analysis.interval", "must be longer than 0s (got 0s)")
    ]


def test_override_and_sticky() -> None:
    text = MINIMAL + "  override: {header: x-sluice-target}\n  sticky: {cookie: session}\n"
    spec = _load(text).spec
    assert spec.override is not None
    assert spec.sticky is not None
    assert (spec.override.header, spec.override.candidate, spec.override.baseline) == (
        "x-sluice-target",
        "candidate",
        "baseline",
    )
    assert (spec.sticky.header, spec.sticky.cookie) == (None, "session")


def test_override_values_must_differ() -> None:
    text = MINIMAL + "  override: {header: x-t, candidate: go, baseline: go}\n"
    assert _issues(text) == [
        (8, "spec.override.baseline", "must differ from the candidate value (both are 'go')")
    ]


@pytest.mark.parametrize("sticky", ["{}", "{header: x-user, cookie: session}"])
def test_sticky_needs_exactly_one_of_header_or_cookie(sticky: str) -> None:
    assert _issues(MINIMAL + f"  sticky: {sticky}\n") == [
        (8, "spec.sticky", "sticky needs exactly one of header or cookie")
    ]


def test_names_must_be_lower_case() -> None:
    assert _issues(MINIMAL.replace("route: comments", "route: Comments")) == [
        (
            5,
            "spec.route",
            "a name is lower-case letters, digits, '.', '_' and '-', starting and ending with a"
            " letter or digit (got 'Comments')",
        )
    ]


def test_a_gateway_file_is_not_a_policy() -> None:
    gateway = (POLICIES / "gateway.yaml").read_text(encoding="utf-8")
    [(_, field, message)] = _issues(gateway)
    assert (field, message) == ("kind", "this is a Gateway document, expected kind RolloutPolicy")


def test_policy_against_the_gateway() -> None:
    gateway = load_gateway((POLICIES / "gateway.yaml").read_text(encoding="utf-8"), "gw.yaml")
    assert _load(MINIMAL, gateway).spec.route == "comments"
    text = MINIMAL.replace("route: comments", "route: comment").replace(
        "cluster: comments-go", "cluster: comments-rs"
    )
    issues = _issues(text, gateway)
    assert [(line, field) for line, field, _ in issues] == [
        (5, "spec.route"),
        (7, "spec.candidate.cluster"),
    ]
    assert issues[0][2].startswith("gateway 'shop' has no route 'comment' (routes: api-default,")
    assert issues[1][2].startswith("gateway 'shop' declares no cluster 'comments-rs' (clusters:")


def test_baseline_must_be_where_the_route_sends_traffic_today() -> None:
    gateway = load_gateway((POLICIES / "gateway.yaml").read_text(encoding="utf-8"), "gw.yaml")
    text = MINIMAL.replace("comments-python", "monolith")
    assert _issues(text, gateway) == [
        (
            6,
            "spec.baseline.cluster",
            "route 'comments' does not send traffic to 'monolith' (it sends to comments-python,"
            " comments-go)",
        )
    ]
