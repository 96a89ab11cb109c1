"""deploy/grafana/sluice-dashboard.yaml: a Grafana dashboard (in a ConfigMap the Grafana sidecar
loads) whose every query reads a series that exists: one the controller exports on /metrics
(its own, and the in-process comparator's) or one of Envoy's per-cluster series the judge reads
(``controller.analysis.queries``), with every template variable it uses defined."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_fixture import Prometheus

from controller.analysis import queries
from controller.parity.comparator import Comparator
from controller.policy.loading import load_gateway
from controller.rollout.actions import RecordEvent
from controller.runtime.metrics import ControllerMetrics
from controller.store.sqlite_rollouts import SqliteRolloutStore
from controller.xds.acks import AckResult
from controller.xds.weight_changes import WeightChange

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFEST = DEPLOY / "grafana" / "sluice-dashboard.yaml"
KEY = "sluice-dashboard.json"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

ENVOY_SERIES = frozenset(
    {queries.REQUESTS_METRIC, queries.RESPONSE_CLASS_METRIC, queries.LATENCY_BUCKET_METRIC}
)
"""Envoy's series the dashboard may read: those the judge reads from the gateway scrape job."""

PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "inf", "nan"}
)
GRAFANA_VARIABLES = frozenset({"__rate_interval", "__interval", "__range", "__range_s"})


def dashboard() -> dict[str, Any]:
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert manifest["kind"] == "ConfigMap"
    board: dict[str, Any] = json.loads(manifest["data"][KEY])
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", ())


def expressions(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", ())]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return exprs


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression (or a Grafana ``label_values(metric, label)``)
    reads: identifiers left once strings, label matchers, grouping clauses, ranges, variables
    and function calls are removed."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_WORDS:
            continue
        names.add(name)
    return names


def exported(tmp_path: Path) -> set[str]:
    """Every series name the controller's registry exports (each hook called once), with the
    in-process comparator's joined, as ``sluice serve --parity-address`` does."""
    store = SqliteRolloutStore(tmp_path / "state.db")
    try:
        metrics = ControllerMetrics(store)
        metrics.verdict("comments", "pass")
        metrics.transitions(
            [RecordEvent(at=0, actor="t", transition="pending → progressing", reason="")]
        )
        metrics.push(WeightChange("comments", {}, AckResult("acked", RDS, "1", elapsed_s=0.01)))
        metrics.nack(RDS)
        gateway = load_gateway((DEPLOY / "controller" / "gateway.yaml").read_text(), "gateway.yaml")
        metrics.join(Comparator(gateway).registry)
        names: set[str] = set()
        for family in metrics.registry.collect():
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_count", "_sum"),
            }.get(family.type, ("",))
            names.update(family.name + s for s in suffixes)
        return names
    finally:
        store.close()


def test_the_dashboard_is_a_grafana_dashboard_with_a_datasource_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert board["uid"]
    assert board["title"]
    (datasource,) = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip()


def test_the_dashboard_shows_what_the_issue_asks() -> None:
    exprs = " ".join(expressions(dashboard()))
    for needed in (
        "sluice_rollouts",
        "sluice_rollout_weight_percent",
        "sluice_verdicts_total",
        "histogram_quantile(0.5, sum by (le) (rate(sluice_xds_push_ack_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(sluice_xds_push_ack_seconds_bucket",
        "sluice_xds_nacks_total",
        "sluice_xds_connected_nodes",
        queries.REQUESTS_METRIC,
        queries.RESPONSE_CLASS_METRIC,
        queries.LATENCY_BUCKET_METRIC,
    ):
        assert needed in exprs, needed


def test_every_series_in_the_dashboard_is_exported(tmp_path: Path) -> None:
    known = exported(tmp_path)
    assert {"sluice_rollouts", "sluice_xds_push_ack_seconds_bucket"} <= known
    used = set().union(*(metric_names(e) for e in expressions(dashboard())))
    assert used
    unknown = {n for n in used if n not in known and n not in ENVOY_SERIES}
    assert not unknown, f"not exported by the controller nor read by the judge: {unknown}"


def test_the_series_check_can_fail(tmp_path: Path) -> None:
    names = metric_names(
        'sum by (envoy_cluster_name) (rate(sluice_rollout_weight{rollout=~"$rollout", x="y"}[5m]))'
        " / on (pod) group_left max by (pod) (envoy_cluster_upstream_rq_totl)"
    )
    assert names == {"sluice_rollout_weight", "envoy_cluster_upstream_rq_totl"}
    assert not names & (exported(tmp_path) | ENVOY_SERIES)
    assert metric_names("label_values(sluice_rollouts, phase)") == {"sluice_rollouts"}


def test_every_query_is_promql_a_real_prometheus_accepts(
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    """Each panel's expression, its variables replaced as Grafana would, is a valid query."""
    values = {"__rate_interval": "1m", "rollout": ".*", "baseline": "a", "candidate": "b"}
    prometheus = prometheus_factory([])
    board = dashboard()
    for expr in (t["expr"] for p in panels(board) for t in p.get("targets", ())):
        query = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)
        prometheus.query(query)  # raises unless Prometheus parsed and ran it


def test_every_variable_used_is_defined() -> None:
    board = dashboard()
    defined = {v["name"] for v in board["templating"]["list"]}
    for expr in expressions(board):
        for used in re.findall(r"\$\{?(\w+)\}?", expr):
            assert used in defined | GRAFANA_VARIABLES, (used, expr)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kustomize_ships_the_dashboard_for_the_grafana_sidecar() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    (configmap,) = [
        d
        for d in yaml.safe_load_all(result.stdout)
        if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sluice-grafana-dashboard"
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "sluice"
    assert json.loads(configmap["data"][KEY]) == dashboard()
