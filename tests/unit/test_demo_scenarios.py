"""The demo's scenarios: their gateway and policy are valid files, consistent with each other,
and each scenario's candidate differs from the baseline in the one way its story says."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from controller.demo.scenarios import (
    BASELINE,
    BASELINE_BEHAVIOUR,
    CANDIDATE,
    COMPARATOR,
    ROLLOUT,
    SCENARIOS,
    gateway_document,
    policy_document,
)
from controller.demo.service import main as service_main
from controller.policy.loading import load_gateway, load_policy
from controller.policy.rollout_checks import check_against_gateway


def test_the_policy_and_the_gateway_are_valid_together() -> None:
    gateway = load_gateway(yaml.safe_dump(gateway_document(8001, 8002, 8003)), "gateway.yaml")
    policy = load_policy(yaml.safe_dump(policy_document()), "policy.yaml")
    assert check_against_gateway(policy, gateway) == []
    spec = policy.spec
    assert (spec.route, spec.baseline.cluster, spec.candidate.cluster) == (
        ROLLOUT,
        BASELINE,
        CANDIDATE,
    )
    assert spec.parity is not None
    assert spec.parity.comparator.cluster == COMPARATOR
    weights = [s.weight for s in spec.stages]
    assert weights[0] == 0  # a shadow stage: parity known before any user reaches it
    assert weights[-1] == 100
    assert {slo.metric for slo in spec.analysis.slos} == {"latency_p99", "error_rate", "parity"}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_scenario_changes_one_thing(name: str) -> None:
    scenario = SCENARIOS[name]  # type: ignore[index]
    changed = {
        f.name
        for f in dataclasses.fields(BASELINE_BEHAVIOUR)
        if getattr(scenario.candidate, f.name) != getattr(BASELINE_BEHAVIOUR, f.name)
    }
    expected = {
        "healthy": set(),
        "latency": {"median_ms"},
        "errors": {"write_error_rate"},
        "parity": {"mismatch_share"},
    }[name]
    assert changed == expected
    assert (scenario.expected_phase == "succeeded") == (scenario.expected_slo is None)


def test_the_behaviour_is_what_the_service_parses() -> None:
    argv = SCENARIOS["errors"].candidate.argv()
    with pytest.raises(SystemExit) as exit_info:
        service_main(["x", *argv, "--help"])
    assert exit_info.value.code == 0
    assert "--write-error-rate" in argv
