"""``sluice policy validate`` and ``sluice policy schema``: output, lines and exit codes, through
typer's CliRunner on the whole ``sluice`` app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from controller.cli import exitcodes
from controller.cli.app import app
from controller.policy.schema import policy_json_schema

POLICIES = Path(__file__).resolve().parents[2] / "policies"

POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata:
  name: comments
spec:
  route: comments
  baseline:
    cluster: comments-python
  candidate:
    cluster: comments-go
  stages:
    - weight: 1%
      bake: 2m
    - weight: 25%
      bake: 5m
    - weight: 100%
      bake: 5m
  analysis:
    slos:
      - metric: latency_p99
        maxDrift: 5%
      - metric: error_rate
        maxDrift: 5%
        maxValue: 1%
"""


def _run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["policy", *args], input=stdin)


def _write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _line(text: str, needle: str) -> int:
    [number] = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return number


def _edit(old: str, new: str, text: str = POLICY) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_valid_policy_prints_ok_and_exits_0(tmp_path: Path) -> None:
    path = _write(tmp_path, POLICY)
    result = _run("validate", str(path))
    assert (result.exit_code, result.stdout, result.stderr) == (exitcodes.OK, f"OK {path}\n", "")


@pytest.mark.parametrize(
    ("old", "new", "needle", "field", "message"),
    [
        (
            "    - weight: 25%\n      bake: 5m\n",
            "    - weight: 25%\n      bake: 5m\n      bakeTime: 5m\n",
            "bakeTime",
            "spec.stages[1].bakeTime",
            "unknown field (did you mean 'bake'?); allowed: weight, bake, deadline",
        ),
        (
            "weight: 25%",
            "weight: 150%",
            "150%",
            "spec.stages[1].weight",
            "must be at most 100% (got 150%)",
        ),
        (
            "weight: 25%",
            "weight: 150",
            "150",
            "spec.stages[1].weight",
            "percentage 150 has no unit; write e.g. '150%'",
        ),
        (
            "weight: 25%",
            "weight: 5",
            "weight: 5",
            "spec.stages[1].weight",
            "percentage 5 has no unit; write e.g. '5%'",
        ),
        (
            "bake: 2m",
            "bake: 2",
            "bake: 2",
            "spec.stages[0].bake",
            "duration 2 has no unit; write e.g. '2s' or '2ms'",
        ),
        (
            "    - weight: 1%\n      bake: 2m\n    - weight: 25%",
            "    - weight: 30%\n      bake: 2m\n    - weight: 25%",
            "weight: 25%",
            "spec.stages[1].weight",
            "stage weights must increase: 25% follows 30% (stage 1)",
        ),
        (
            "weight: 100%",
            "weight: 50%",
            "weight: 50%",
            "spec.stages[2].weight",
            "the last stage must send 100% to the candidate, got 50%",
        ),
        (
            "cluster: comments-go",
            "cluster: comments-python  # the same",
            "the same",
            "spec.candidate.cluster",
            "the candidate must differ from the baseline",
        ),
        (
            "metric: latency_p99",
            "metric: latency_p90",
            "latency_p90",
            "spec.analysis.slos[0].metric",
            "unknown metric 'latency_p90' (did you mean 'latency_p99'?); allowed: latency_p50,"
            " latency_p95, latency_p99, error_rate, parity, custom",
        ),
        (
            "        maxValue: 1%\n",
            "        maxValue: 1%\n        minValue: 99%\n",
            "minValue",
            "spec.analysis.slos[1].minValue",
            "unknown field (did you mean 'maxValue'?); allowed: metric, maxDrift, passDrift,"
            " tolerance, maxValue",
        ),
        (
            "      - metric: latency_p99\n        maxDrift: 5%\n",
            "      - metric: custom\n        name: cpu\n        query: rate(cpu_seconds[1m])\n"
            "        maxDrift: 10%\n",
            "query:",
            "spec.analysis.slos[0].query",
            "must contain {cluster} (replaced by the baseline's and the candidate's cluster name,"
            ' e.g. envoy_cluster_name="{cluster}")',
        ),
    ],
    ids=[
        "unknown-field",
        "weight-150%",
        "weight-150",
        "weight-no-unit",
        "bake-no-unit",
        "stages-not-increasing",
        "last-stage-below-100",
        "same-baseline-and-candidate",
        "unknown-metric",
        "unknown-field-in-slo",
        "custom-slo-without-cluster",
    ],
)
def test_malformed_policy_names_the_line_and_exits_2(
    tmp_path: Path, old: str, new: str, needle: str, field: str, message: str
) -> None:
    text = _edit(old, new)
    line = _line(text, needle)
    path = _write(tmp_path, text)
    result = _run("validate", str(path))
    assert result.exit_code == exitcodes.INVALID_INPUT == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"{path}:{line}: {field}: {message}"]


def test_unknown_field_in_place_of_a_required_one(tmp_path: Path) -> None:
    text = _edit("    - weight: 25%\n      bake: 5m\n", "    - weight: 25%\n      bak: 5m\n")
    path = _write(tmp_path, text)
    result = _run("validate", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{path}:{_line(text, 'weight: 25%')}: spec.stages[1].bake: required field is missing",
        f"{path}:{_line(text, 'bak:')}: spec.stages[1].bak:"
        " unknown field (did you mean 'bake'?); allowed: weight, bake, deadline",
    ]


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    text = _edit("    - weight: 25%\n", "    - weight: 25%\n     bake: [5m\n")
    path = _write(tmp_path, text)
    result = _run("validate", str(path))
    assert result.exit_code == 2
    [issue] = result.stderr.splitlines()
    assert issue.startswith(f"{path}:{_line(text, 'bake: [5m')}: invalid YAML: ")


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    text = _edit("bake: 2m", "bake: 2")
    text = _edit("weight: 100%", "weight: 101%", text)
    text = _edit("metric: error_rate", "metric: errors", text)
    path = _write(tmp_path, text)
    result = _run("validate", str(path))
    assert result.exit_code == 2
    lines = [line.split(": ", 2)[:2] for line in result.stderr.splitlines()]
    assert lines == [
        [f"{path}:{_line(text, 'bake: 2')}", "spec.stages[0].bake"],
        [f"{path}:{_line(text, '101%')}", "spec.stages[2].weight"],
        [f"{path}:{_line(text, 'errors')}", "spec.analysis.slos[1].metric"],
    ]


def test_every_file_in_policies_is_valid() -> None:
    result = _run("validate", str(POLICIES), "--gateway", str(POLICIES / "gateway.yaml"))
    assert result.exit_code == 0, result.stderr
    names = sorted(str(p) for p in POLICIES.rglob("*") if p.suffix in (".yaml", ".yml"))
    assert result.stdout.splitlines() == [f"OK {name}" for name in names]
    assert {"comments.yaml", "search.yaml", "gateway.yaml"} <= {Path(n).name for n in names}


def test_folder_input_is_recursive_sorted_and_checks_each_kind(tmp_path: Path) -> None:
    gateway = (POLICIES / "gateway.yaml").read_text(encoding="utf-8")
    _write(tmp_path, POLICY, "b/comments.yml")
    _write(tmp_path, gateway, "a/gateway.yaml")
    broken = _edit("weight: 25%", "weight: 2")
    _write(tmp_path, broken, "c/broken.yaml")
    _write(tmp_path, "kind: Deployment\napiVersion: apps/v1\n", "c/deploy.yaml")
    _write(tmp_path, "not: yaml: here\n", "notes.txt")
    result = _run("validate", str(tmp_path))
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        f"OK {tmp_path / 'a/gateway.yaml'}",
        f"OK {tmp_path / 'b/comments.yml'}",
    ]
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'c/broken.yaml'}:{_line(broken, 'weight: 2')}: spec.stages[1].weight:"
        " percentage 2 has no unit; write e.g. '2%'",
        f"{tmp_path / 'c/deploy.yaml'}:1: kind:"
        " 'Deployment' is not a kind sluice checks; expected kind RolloutPolicy or Gateway",
    ]


def test_a_broken_gateway_in_a_folder_is_reported(tmp_path: Path) -> None:
    gateway = (POLICIES / "gateway.yaml").read_text(encoding="utf-8")
    text = _edit("      port: 8080\n", "      port: 80800\n", gateway)
    path = _write(tmp_path, text, "gateway.yaml")
    result = _run("validate", str(tmp_path))
    assert result.exit_code == 2
    [issue] = result.stderr.splitlines()
    assert issue.startswith(f"{path}:{_line(text, 'port: 80800')}: spec.listeners[0].port: ")


def test_a_document_without_kind(tmp_path: Path) -> None:
    path = _write(tmp_path, "apiVersion: sluice.dev/v1alpha1\nspec: {}\n")
    result = _run("validate", str(path))
    assert result.exit_code == 2
    assert result.stderr == f"{path}:1: kind: missing; expected kind RolloutPolicy or Gateway\n"


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    result = _run("validate", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == f"{tmp_path}: a folder without .yaml or .yml files\n"


def test_missing_file_is_reported_and_others_still_checked(tmp_path: Path) -> None:
    good = _write(tmp_path, POLICY)
    missing = tmp_path / "nope.yaml"
    result = _run("validate", str(missing), str(good))
    assert result.exit_code == 2
    assert result.stdout == f"OK {good}\n"
    assert result.stderr == f"{missing}: cannot read: No such file or directory\n"


def test_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(POLICY.encode() + b"# caf\xe9\n")
    result = _run("validate", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}: cannot read: not UTF-8 text: ")


def test_stdin(tmp_path: Path) -> None:
    assert _run("validate", "-", stdin=POLICY).stdout == "OK <stdin>\n"
    result = _run("validate", "-", stdin=_edit("weight: 25%", "weight: 250%"))
    assert result.exit_code == 2
    assert result.stderr == (
        f"<stdin>:{_line(POLICY, 'weight: 25%')}: spec.stages[1].weight:"
        " must be at most 100% (got 250%)\n"
    )


def test_gateway_option_checks_route_and_clusters(tmp_path: Path) -> None:
    text = _edit("route: comments", "route: comment")
    text = _edit("cluster: comments-go", "cluster: comments-rs", text)
    path = _write(tmp_path, text)
    ok = _write(tmp_path, POLICY, "ok.yaml")
    gateway = str(POLICIES / "gateway.yaml")
    result = _run("validate", str(path), str(ok), "--gateway", gateway)
    assert result.exit_code == 2
    assert result.stdout == f"OK {ok}\n"
    lines = result.stderr.splitlines()
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [f"{path}:{_line(text, 'route: comment')}", "spec.route"],
        [f"{path}:{_line(text, 'comments-rs')}", "spec.candidate.cluster"],
    ]
    assert "has no route 'comment' (routes: api-default, comments," in lines[0]
    assert "declares no cluster 'comments-rs' (clusters: comments-go," in lines[1]


def test_without_gateway_option_the_route_is_not_checked(tmp_path: Path) -> None:
    path = _write(tmp_path, _edit("route: comments", "route: comment"))
    assert _run("validate", str(path)).exit_code == 0


def test_an_invalid_gateway_option_is_reported_once(tmp_path: Path) -> None:
    gateway = _write(tmp_path, "kind: Gateway\n", "gw.yaml")
    policy = _write(tmp_path, POLICY)
    result = _run("validate", str(policy), str(gateway), "--gateway", str(gateway))
    assert result.exit_code == 2
    assert result.stdout == f"OK {policy}\n"
    errors = result.stderr.splitlines()
    assert errors
    assert len(errors) == len(set(errors))
    assert all(line.startswith(f"{gateway}:") for line in errors)


def test_schema_prints_the_json_schema() -> None:
    result = _run("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema == policy_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://sluice.dev/schemas/rolloutpolicy-v1alpha1.json"
    assert result.stdout.startswith('{\n  "$schema"')  # pretty-printed, $schema first


def test_policy_group_is_listed_in_the_help() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert "policy" in result.stdout
