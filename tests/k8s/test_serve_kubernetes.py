"""``sluice serve`` and Kubernetes: what it refuses, naming why (exit 2, nothing left running)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from fakekube import FakeKube

GATEWAY = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "Gateway",
    "metadata": {"name": "k8s"},
    "spec": {
        "listeners": [
            {
                "name": "public",
                "address": "127.0.0.1",
                "port": 0,
                "virtualHosts": [
                    {
                        "name": "api",
                        "routes": [
                            {"name": "comments", "match": {"prefix": "/"}, "cluster": "comments"}
                        ],
                    }
                ],
            }
        ],
        "clusters": [{"name": "comments", "kubernetes": {"service": "comments", "port": 80}}],
    },
}


def serve(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(yaml.safe_dump(GATEWAY))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "controller",
            "serve",
            "--gateway",
            str(gateway),
            "--xds-address",
            "127.0.0.1:0",
            "--admin-address",
            "127.0.0.1:0",
            "--state",
            str(tmp_path / "state.db"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_gateway_naming_services_needs_kubernetes_mode(tmp_path: Path) -> None:
    done = serve(tmp_path)
    assert done.returncode == 2, done.stderr
    assert "comments take their endpoints from Kubernetes Services" in done.stderr
    assert "--kubernetes" in done.stderr
    assert '"ready"' not in done.stdout


def test_an_unreachable_cluster_is_a_clear_startup_error(tmp_path: Path, kube: FakeKube) -> None:
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", namespace="sluice")
    kube.stop()
    done = serve(tmp_path, "--kubeconfig", str(kubeconfig), "--lease-duration", "15s")
    assert done.returncode == 2, done.stderr
    assert "cannot read the Rollouts of namespace sluice" in done.stderr
    assert "deploy/crd.yaml" in done.stderr


def test_lease_timings_are_checked(tmp_path: Path, kube: FakeKube) -> None:
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", namespace="sluice")
    done = serve(tmp_path, "--kubeconfig", str(kubeconfig), "--renew-deadline", "20s")
    assert done.returncode == 2, done.stderr
    assert "renew" in done.stderr


def test_a_lease_too_short_to_fence_a_replica_in_is_refused(tmp_path: Path, kube: FakeKube) -> None:
    """Checked every second, a replica cut off from the API must fence itself before the
    leader stops counting it: a 1.4 s lease leaves no time for that."""
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", namespace="sluice")
    done = serve(
        tmp_path,
        "--kubeconfig",
        str(kubeconfig),
        *("--lease-duration", "1400ms", "--renew-deadline", "1s", "--retry-period", "500ms"),
    )
    assert done.returncode == 2, done.stderr
    assert "leaves no time to fence a replica" in done.stderr
