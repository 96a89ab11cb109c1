"""End to end: two controller replicas on one cluster; the leader dies, the other resumes.

Two ``sluice serve --kubernetes`` processes share the Rollouts of a fake Kubernetes API server
(tests/fakekube, reached through the official client from a kubeconfig) and compete for the
Lease. A real Envoy is connected to the replica that does *not* lead, so what it applies is
what a follower serves, and the leader can only confirm its pushes through that replica's
report. The rollout is started and steered with the CLI in cluster mode. The
leader is killed (SIGKILL: no release of the Lease) in the middle of a stage; the assertions are
on the Lease, on the Rollout object the API server holds, and on the weights Envoy applied.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakekube import FakeKube

from .harness import BASELINE, CANDIDATE, ROUTE, Controller, Envoy, gateway_document, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

NAMESPACE = "sluice"
LEASE = ("--lease-duration", "3s", "--renew-deadline", "2s", "--retry-period", "500ms")
"""Short lease timings so that a takeover takes seconds; the defaults are client-go's."""

POLICY = f"""apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: comments}}
spec:
  route: {ROUTE}
  baseline: {{cluster: {BASELINE}}}
  candidate: {{cluster: {CANDIDATE}}}
  stages:
    - {{weight: 20%, bake: 1s}}
    - {{weight: 60%, bake: 1h}}
    - {{weight: 100%, bake: 1s}}
  analysis: {{interval: 500ms, slos: []}}
  ackTimeout: 5s
"""


def lease_holder(kube: FakeKube) -> str | None:
    for lease in kube.objects("leases", NAMESPACE):
        if lease["metadata"]["name"] == "sluice-controller":
            return lease.get("spec", {}).get("holderIdentity") or None
    return None


def rollout_status(kube: FakeKube) -> dict[str, Any]:
    for obj in kube.objects("rollouts", NAMESPACE):
        if obj["metadata"]["name"] == "comments":
            return obj.get("status") or {}
    raise AssertionError("no Rollout named comments")


def cli(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller",
            "rollout",
            *args,
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            NAMESPACE,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def test_killing_the_leader_hands_the_rollout_to_the_other_replica_at_the_same_stage(
    tmp_path: Path, kube: FakeKube
) -> None:
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
    gateway = tmp_path / "gateway.yaml"
    # No upstream needs to answer: the assertions are on the configuration Envoy applied.
    gateway.write_text(yaml.safe_dump(gateway_document(9, 9)))
    replicas: dict[str, Controller] = {}
    envoys: list[Envoy] = []
    try:
        for name in ("replica-a", "replica-b"):
            workdir = tmp_path / name
            replicas[name] = Controller.start(
                workdir,
                gateway,
                workdir / "state.db",
                name=name,
                extra=(
                    "--kubeconfig",
                    str(kubeconfig),
                    "-n",
                    NAMESPACE,
                    "--identity",
                    name,
                    *LEASE,
                ),
            )
        holder = wait_until(lambda: lease_holder(kube), timeout=20, what="a leader")
        assert holder in replicas
        leader = replicas[holder]
        follower_name = next(n for n in replicas if n != holder)
        follower = replicas[follower_name]
        # The only Envoy is on the follower: the leader confirms its pushes through the
        # follower's report (Envoys spread over replicas all count).
        envoy = Envoy.start(tmp_path, node_id="edge", xds_port=follower.xds_port, protocol="sotw")
        envoys.append(envoy)
        follower.wait_node_synced(envoy.node_id, timeout=20, diag=envoy.logs)
        envoy.wait_live()

        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        cli(kubeconfig, "start", "comments", "--policy", str(policy))
        # The leader drives; the follower's Envoy follows it to the second stage (60%).
        envoy.wait_route_weights({BASELINE: 4000, CANDIDATE: 6000}, timeout=30)
        baking = wait_until(
            lambda: (
                (s := rollout_status(kube)).get("stage") == 1 and not s.get("awaitingAck") and s
            ),
            timeout=20,
            what="stage 2 baking",
        )

        leader.proc.kill()
        applied: list[int | None] = []

        def taken_over() -> bool:
            weights = envoy.applied_weights()
            applied.append(None if weights is None else weights.get(CANDIDATE))
            return lease_holder(kube) == follower_name

        wait_until(taken_over, timeout=20, what=f"{follower_name} to take the Lease", interval=0.2)
        # Nothing moved: the new leader resumed the stage where it was, its bake clock too.
        time.sleep(2.0)  # a few of the new leader's reconcile rounds
        resumed = rollout_status(kube)
        assert resumed["phase"] == "progressing", resumed
        assert resumed["stage"] == 1
        assert resumed["desiredWeight"] == 60
        assert resumed["stageStartedAt"] == baking["stageStartedAt"]
        assert set(applied) == {6000}, applied
        assert envoy.applied_weights() == {BASELINE: 4000, CANDIDATE: 6000}

        # And it drives: a promotion is carried out by the new leader, through its own Envoy.
        cli(kubeconfig, "promote", "comments", "--reason", "after the failover")
        envoy.wait_route_weights({BASELINE: 0, CANDIDATE: 10_000}, timeout=30)
        final = wait_until(
            lambda: (s := rollout_status(kube)).get("phase") == "succeeded" and s,
            timeout=30,
            what="the rollout to succeed",
        )
        assert final["desiredWeight"] == 100
        status = json.loads(cli(kubeconfig, "status", "comments", "-o", "json").stdout)
        assert status["phase"] == "succeeded"
    finally:
        for started in envoys:
            started.stop()
        for replica in replicas.values():
            replica.stop()
