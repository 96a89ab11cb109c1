"""``sluice serve --kubernetes`` reads its Rollouts from a watch: once it is open, the
controller's once-a-second reads (reconciler, metrics) no longer LIST."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from e2e.harness import gateway_document
from fakekube import FakeKube

from controller.k8s.crd import GROUP, PLURAL, VERSION, rollout_crd

NS = "sluice"
ROLLOUTS = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
GATEWAY = gateway_document(9, 9)  # port 9 (discard): no request reaches an upstream here


def wait_for(cond: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def rollout_calls(kube: FakeKube, since: int = 0) -> list[str]:
    """ "list" / "watch" for each request on the Rollouts collection since ``since``."""
    return [
        "watch" if "watch=true" in query else "list"
        for method, path, query in kube.requests[since:]
        if method == "GET" and path == ROLLOUTS
    ]


def test_a_replica_reads_from_a_watch_not_a_list_per_poll(tmp_path: Path, kube: FakeKube) -> None:
    kube.install_crd(rollout_crd())
    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(yaml.safe_dump(GATEWAY))
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    argv = [
        *(sys.executable, "-m", "controller", "serve", "--gateway", str(gateway)),
        *("--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"),
        *("--state", str(tmp_path / "state.db"), "--kubeconfig", str(kubeconfig)),
        *("--identity", "only"),
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        wait_for(lambda: "watch" in rollout_calls(kube), what="the Rollouts watch")
        # the replica leads (one replica): its reconciler reads the store every second
        wait_for(
            lambda: any(p.endswith("/leases/sluice-controller") for m, p, _ in kube.requests),
            what="the Lease",
        )
        mark = len(kube.requests)
        wait_for(lambda: len(kube.requests) - mark >= 6, what="a few Lease renewals")
        assert rollout_calls(kube, mark) == []  # with polling: two LISTs a second
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
