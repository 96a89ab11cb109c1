"""The Rollout CRD (``rollouts.sluice.dev``): generated from the policy model, structural, valid
for Kubernetes, and as strict as the model on the policy files' specs."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from crd_checks import K8S_VERSIONS, crd_schema, object_validator, structural_violations
from pydantic import ValidationError
from typer.testing import CliRunner

from controller.cli.app import app
from controller.k8s.crd import REGENERATE, crd_yaml, rollout_crd, spec_schema, status_schema
from controller.k8s.structural import StructuralError, to_structural
from controller.policy.loading import load_policy
from controller.policy.rollout_policy import PolicySpec
from controller.policy.schema import policy_json_schema
from controller.rollout.state import Phase, RolloutState, VerdictRecord

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "deploy" / "crd.yaml"
POLICIES = ROOT / "policies"


SPEC = object_validator(spec_schema())
STATUS = object_validator(status_schema())


def _policy_files() -> list[Path]:
    return [
        path
        for path in sorted(POLICIES.glob("*.y*ml"))
        if yaml.safe_load(path.read_text(encoding="utf-8")).get("kind") == "RolloutPolicy"
    ]


def _spec(name: str = "comments.yaml") -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((POLICIES / name).read_text(encoding="utf-8"))["spec"]
    return spec


def test_deploy_crd_is_what_the_generator_writes() -> None:
    assert CRD_FILE.read_text(encoding="utf-8") == crd_yaml(), (
        f"deploy/crd.yaml differs from the policy model's CRD: run `{REGENERATE}`"
    )


def test_cli_prints_the_crd() -> None:
    result = CliRunner().invoke(app, ["k8s", "crd"])
    assert result.exit_code == 0, result.output
    assert result.output == crd_yaml()
    assert yaml.safe_load(result.output) == rollout_crd()


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_crd_validates_against_kubernetes(version: str) -> None:
    doc = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_kubernetes_validate_can_fail_on_a_crd() -> None:
    doc = rollout_crd()
    crd_schema(doc)["properties"]["spec"]["discriminator"] = {"propertyName": "metric"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


def test_the_crd_names_and_columns() -> None:
    crd = rollout_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "rollouts.sluice.dev"
    assert (spec["group"], spec["scope"]) == ("sluice.dev", "Namespaced")
    assert spec["names"]["kind"] == "Rollout"
    assert spec["names"]["plural"] == "rollouts"
    assert "ro" not in spec["names"]["shortNames"]  # Argo Rollouts' short name
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Stage"] == ".status.stage"
    assert columns["Weight"] == ".status.desiredWeight"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_printer_columns_point_at_fields_of_the_schema() -> None:
    crd = rollout_crd()
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    for column in columns:
        parts = column["jsonPath"].lstrip(".").split(".")
        if parts[0] == "metadata":
            continue
        node = crd_schema(crd)
        for part in parts:
            node = node["properties"][part]
        assert node["type"] == column["type"], column


def test_the_schema_is_structural() -> None:
    assert structural_violations(crd_schema(rollout_crd())) == []


def test_the_structural_check_can_fail() -> None:
    """pydantic's own schema is not structural: $ref, const, a union with types inside."""
    policy = policy_json_schema()
    spec = {**policy["$defs"]["PolicySpec"], "$defs": policy["$defs"]}
    problems = structural_violations(spec)
    assert any("$ref" in p for p in problems)
    assert any("rule 3" in p for p in problems)
    assert any("additionalProperties: false" in p for p in problems)


def test_the_schema_keeps_the_models_constraints() -> None:
    spec = spec_schema()
    stage = spec["properties"]["stages"]["items"]
    model_stage = policy_json_schema()["$defs"]["Stage"]["properties"]
    assert stage["properties"]["weight"]["pattern"] == model_stage["weight"]["pattern"]
    assert stage["required"] == ["weight", "bake"]
    assert spec["required"] == ["route", "baseline", "candidate"]
    assert spec["properties"]["onFailure"]["enum"] == ["rollback", "pause"]
    assert spec["properties"]["stages"]["minItems"] == 1
    compare = spec["properties"]["parity"]["properties"]["compare"]["properties"]
    assert compare["relativeTolerance"]["maximum"] == 1
    assert compare["relativeTolerance"]["exclusiveMaximum"] is True
    assert spec["properties"]["ackTimeout"]["default"] == "10s"
    assert "the controller only" in spec["description"]


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_every_default_is_valid_where_it_stands() -> None:
    """The API server refuses a CRD whose defaults fail their own schema (or are not pruned)."""
    defaults = 0
    for path, node in _walk(crd_schema(rollout_crd())):
        if "default" in node:
            defaults += 1
            errors = list(object_validator(node).iter_errors(node["default"]))
            assert not errors, (path, [e.message for e in errors])
    assert defaults >= 10


def test_patterns_are_re2() -> None:
    """Kubernetes matches patterns with Go's RE2: no look-around, no back-references."""
    for path, node in _walk(crd_schema(rollout_crd())):
        for pattern in re.findall(r"'pattern': '([^']*)'", repr(node)):
            assert not re.search(r"\(\?[=!<]|\\[1-9]", pattern), (path, pattern)


@pytest.mark.parametrize("path", _policy_files(), ids=lambda p: p.name)
def test_the_crd_accepts_every_policy_files_spec(path: Path) -> None:
    SPEC.validate(yaml.safe_load(path.read_text(encoding="utf-8"))["spec"])


@pytest.mark.parametrize("path", _policy_files(), ids=lambda p: p.name)
def test_the_crd_accepts_the_models_full_spec(path: Path) -> None:
    """Every default written out (as the controller would write a spec back) still fits."""
    policy = load_policy(path.read_text(encoding="utf-8"), path.name)
    SPEC.validate(policy.spec.model_dump(mode="json", by_alias=True, exclude_none=True))


def test_there_are_policy_files() -> None:
    assert {p.name for p in _policy_files()} >= {"comments.yaml", "comments-parity.yaml"}


def _mutate(change: str) -> dict[str, Any]:
    spec = copy.deepcopy(_spec())
    slos = spec["analysis"]["slos"]
    if change == "unknown field":
        spec["speed"] = "fast"
    elif change == "unknown field in a stage":
        spec["stages"][0]["bakeTime"] = "1m"
    elif change == "weight without %":
        spec["stages"][0]["weight"] = "1"
    elif change == "weight above 100%":
        spec["stages"][0]["weight"] = "101%"
    elif change == "weight with 3 decimals":
        spec["stages"][0]["weight"] = "1.125%"
    elif change == "weight as a number":
        spec["stages"][0]["weight"] = 1
    elif change == "no route":
        del spec["route"]
    elif change == "route name with capitals":
        spec["route"] = "Comments"
    elif change == "bake without unit":
        spec["stages"][0]["bake"] = "120"
    elif change == "unknown metric":
        slos[0]["metric"] = "latency_p90"
    elif change == "latency SLO with an error-rate field":
        slos[0]["tolerance"] = "0.1%"
    elif change == "latency maxValue as a percentage":
        slos[0]["maxValue"] = "5%"
    elif change == "parity SLO without minValue":
        slos.append({"metric": "parity"})
    elif change == "custom SLO without cluster in its query":
        slos.append({"metric": "custom", "name": "x", "query": "up", "maxValue": 1})
    elif change == "custom SLO without a limit":
        slos.append({"metric": "custom", "name": "x", "query": 'up{c="{cluster}"}'})
    elif change == "sticky with header and cookie":
        spec["sticky"] = {"header": "x-user", "cookie": "session"}
    elif change == "no stages":
        spec["stages"] = []
    elif change == "negative minRequests":
        spec["analysis"]["minRequests"] = -1
    elif change == "unknown onFailure":
        spec["onFailure"] = "ignore"
    else:
        raise AssertionError(change)
    return spec


INVALID = [
    "unknown field",
    "unknown field in a stage",
    "weight without %",
    "weight above 100%",
    "weight with 3 decimals",
    "weight as a number",
    "no route",
    "route name with capitals",
    "bake without unit",
    "unknown metric",
    "latency SLO with an error-rate field",
    "latency maxValue as a percentage",
    "parity SLO without minValue",
    "custom SLO without cluster in its query",
    "custom SLO without a limit",
    "sticky with header and cookie",
    "no stages",
    "negative minRequests",
    "unknown onFailure",
]


@pytest.mark.parametrize("change", INVALID)
def test_the_crd_rejects_what_the_model_rejects(change: str) -> None:
    spec = _mutate(change)
    with pytest.raises(ValidationError):
        PolicySpec.model_validate(spec)
    with pytest.raises(jsonschema.ValidationError):
        SPEC.validate(spec)


def test_the_base_of_the_mutations_is_valid() -> None:
    PolicySpec.model_validate(_spec())
    SPEC.validate(_spec())


def _status(state: RolloutState) -> dict[str, Any]:
    from pydantic.alias_generators import to_camel

    return {to_camel(k): v for k, v in state.model_dump(mode="json").items()}


def test_the_status_holds_a_rollout_state() -> None:
    verdict = VerdictRecord(at=1.5, outcome="fail", reason="latency", details={"p99": [1, 2]})
    for state in (
        RolloutState(),
        RolloutState(
            phase=Phase.PAUSED,
            stage=2,
            desired_weight=25.0,
            acked_weight=5.0,
            stage_started_at=10.0,
            last_verdict=verdict,
            cause="verdict",
            resume_to=Phase.PROGRESSING,
            hold="no Envoy connected",
        ),
    ):
        STATUS.validate({**_status(state), "observedGeneration": 3, "history": [{"any": 1}]})
    with pytest.raises(jsonschema.ValidationError):
        STATUS.validate({**_status(RolloutState()), "phase": "sleeping"})


def test_every_state_field_is_in_the_status() -> None:
    from pydantic.alias_generators import to_camel

    fields = {to_camel(name) for name in RolloutState.model_fields}
    assert fields <= set(status_schema()["properties"])


def test_the_converter_refuses_what_it_cannot_express() -> None:
    with pytest.raises(StructuralError, match="recursive"):
        to_structural({"$ref": "#/$defs/A"}, {"A": {"properties": {"a": {"$ref": "#/$defs/A"}}}})
    with pytest.raises(StructuralError, match="inside"):
        to_structural({"type": "object", "anyOf": [{"type": "string"}]})
