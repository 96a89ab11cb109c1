"""The JSON Schema of policy files (``sluice policy schema``) against the model it comes from.

What the schema cannot express, and only ``sluice policy validate`` checks: stage weights that
increase and end at 100%, baseline and candidate being different clusters, SLO names used once,
a deadline at least the bake time, an analysis interval above 0s, the override's two values
differing, and the route and clusters existing in the gateway.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from controller.policy.loading import load_policy
from controller.policy.rollout_policy import Stage, default_slos, default_stages
from controller.policy.schema import policy_json_schema
from controller.policy.source import DocumentError

POLICIES = Path(__file__).resolve().parents[2] / "policies"

VALIDATOR = jsonschema.Draft202012Validator(policy_json_schema())

BASE: dict[str, Any] = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "RolloutPolicy",
    "metadata": {"name": "comments"},
    "spec": {
        "route": "comments",
        "baseline": {"cluster": "comments-python"},
        "candidate": {"cluster": "comments-go"},
        "stages": [{"weight": "10%", "bake": "1m"}, {"weight": "100%", "bake": "1m"}],
    },
}


def _policy_files() -> list[Path]:
    return [
        p
        for p in sorted(POLICIES.glob("*.y*ml"))
        if yaml.safe_load(p.read_text(encoding="utf-8")).get("kind") == "RolloutPolicy"
    ]


def _doc(**spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(spec)
    return doc


def _schema_ok(doc: dict[str, Any]) -> bool:
    return VALIDATOR.is_valid(doc)


def _model_ok(doc: dict[str, Any]) -> bool:
    try:
        load_policy(yaml.safe_dump(doc), "doc.yaml")
    except DocumentError:
        return False
    return True


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = policy_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://sluice.dev/schemas/rolloutpolicy-v1alpha1.json"
    assert "RolloutPolicy" in schema["title"]
    assert "sluice policy validate" in schema["$comment"]


def test_there_are_example_policies() -> None:
    assert {p.name for p in _policy_files()} >= {"comments.yaml", "search.yaml"}


@pytest.mark.parametrize("path", _policy_files(), ids=lambda p: p.name)
def test_every_example_policy_validates_against_the_schema(path: Path) -> None:
    VALIDATOR.validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def test_durations_and_percentages_are_strings_with_a_pattern() -> None:
    stage = policy_json_schema()["$defs"]["Stage"]["properties"]
    assert stage["weight"]["type"] == stage["bake"]["type"] == "string"
    assert "pattern" in stage["weight"]
    assert "pattern" in stage["bake"]


def test_only_standard_keywords() -> None:
    """pydantic writes ge/le/gt/lt into a schema it cannot map onto a string: none here."""

    def keys(node: object) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        if isinstance(node, list):
            return {k for v in node for k in keys(v)}
        return set()

    properties = {
        k for d in policy_json_schema()["$defs"].values() for k in d.get("properties", {})
    }
    assert not (keys(policy_json_schema()) - properties) & {"ge", "le", "gt", "lt"}


@pytest.mark.parametrize(
    "stage",
    [
        {"weight": 150, "bake": "1m"},
        {"weight": "150%", "bake": "1m"},
        {"weight": "100.5%", "bake": "1m"},
        {"weight": "0.125%", "bake": "1m"},
        {"weight": "5", "bake": "1m"},
        {"weight": "5%", "bake": 5},
        {"weight": "5%", "bake": "5"},
        {"weight": "5%", "bake": "5 minutes"},
        {"weight": "5%"},
        {"weight": "5%", "bake": "1m", "bakeTime": "1m"},
    ],
)
def test_the_schema_rejects_what_the_model_rejects_in_a_stage(stage: dict[str, Any]) -> None:
    doc = _doc(stages=[stage, {"weight": "100%", "bake": "1m"}])
    assert not _model_ok(doc)
    assert not _schema_ok(doc)


@pytest.mark.parametrize(
    "weight",
    [
        *("0.01%", "1%", "5.5%", "33.33%", "99.99%", "100%", "100.0%", "100.00%", "007%", "0.10%"),
        *("0%", "0.0%", "0.001%", "100.01%", "101%", "1000%", "1.234%", "-1%", ".5%", "5.%"),
    ],
)
def test_schema_and_model_agree_on_stage_weights(weight: str) -> None:
    # The schema sees one stage at a time (it cannot compare stages), so one stage suffices.
    schema_ok = _schema_ok(_doc(stages=[{"weight": weight, "bake": "1m"}]))
    try:
        Stage.model_validate({"weight": weight, "bake": "1m"})
    except ValidationError:
        model_ok = False
    else:
        model_ok = True
    assert schema_ok == model_ok


@pytest.mark.parametrize(
    "slo",
    [
        {"metric": "latency_p90"},
        {"maxDrift": "5%"},
        {"metric": "latency_p99", "maxDrift": 5},
        {"metric": "error_rate", "maxValue": "150%"},
        {"metric": "parity"},
        {"metric": "parity", "minValue": "99.9%", "maxDrift": "5%"},
        {"metric": "custom", "name": "cpu", "query": "rate(cpu[1m])", "maxValue": 1},
        {"metric": "custom", "name": "cpu", "query": 'cpu{c="{cluster}"}'},
    ],
)
def test_the_schema_rejects_what_the_model_rejects_in_an_slo(slo: dict[str, Any]) -> None:
    doc = _doc(analysis={"slos": [slo]})
    assert not _model_ok(doc)
    assert not _schema_ok(doc)


@pytest.mark.parametrize(
    "spec",
    [
        {"sticky": {"header": "x-user", "cookie": "session"}},
        {"sticky": {}},
        {"onFailure": "retry"},
        {"override": {}},
        {"ackTimeout": 10},
        {"route": "Comments"},
    ],
)
def test_the_schema_rejects_what_the_model_rejects_in_the_spec(spec: dict[str, Any]) -> None:
    doc = _doc(**spec)
    assert not _model_ok(doc)
    assert not _schema_ok(doc)


@pytest.mark.parametrize(
    "spec",
    [
        {"stages": [{"weight": "50%", "bake": "1m"}, {"weight": "10%", "bake": "1m"}]},
        {"stages": [{"weight": "50%", "bake": "1m"}]},
        {"candidate": {"cluster": "comments-python"}},
        {"analysis": {"slos": [{"metric": "error_rate"}, {"metric": "error_rate"}]}},
        {"stages": [{"weight": "100%", "bake": "5m", "deadline": "1m"}]},
        {"analysis": {"interval": "0s"}},
        {"override": {"header": "x-t", "candidate": "a", "baseline": "a"}},
        # A 0% (shadow) stage needs spec.parity and a parity SLO, and comes first only.
        {"stages": [{"weight": "0%", "bake": "1m"}, {"weight": "100%", "bake": "1m"}]},
        {"analysis": {"slos": [{"metric": "parity", "minValue": "99.9%"}]}},
        {"parity": {"methods": ["GET", "POST"]}},
        {"parity": {"comparator": {"cluster": "comments-go"}}},
    ],
)
def test_what_only_validate_can_check(spec: dict[str, Any]) -> None:
    """Documented limits: the schema accepts these, ``sluice policy validate`` does not."""
    doc = _doc(**spec)
    assert _schema_ok(doc)
    assert not _model_ok(doc)


def test_defaults_are_written_as_in_files() -> None:
    properties = policy_json_schema()["$defs"]["PolicySpec"]["properties"]
    assert properties["stages"]["default"] == [
        {"weight": "1%", "bake": "120s"},
        {"weight": "5%", "bake": "300s"},
        {"weight": "25%", "bake": "300s"},
        {"weight": "100%", "bake": "300s"},
    ]
    assert properties["ackTimeout"]["default"] == "10s"
    analysis = properties["analysis"]["default"]
    assert analysis["interval"] == "30s"
    assert analysis["slos"] == [
        {"metric": "latency_p99", "maxDrift": "5%", "passDrift": "20%"},
        {"metric": "error_rate", "maxDrift": "5%", "passDrift": "100%", "tolerance": "0.1%"},
    ]
    # The defaults are valid values, by the schema and by the model.
    doc = _doc(stages=properties["stages"]["default"], analysis=analysis)
    assert _schema_ok(doc)
    assert _model_ok(doc)
    assert len(default_stages()) == 4
    assert len(default_slos()) == 2
