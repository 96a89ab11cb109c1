"""``sluice rollout`` in cluster mode: the same commands on the Rollout objects of a (fake)
cluster, reached from a kubeconfig through the official client."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakekube import FakeKube
from typer.testing import CliRunner, Result

from controller.cli import exitcodes
from controller.cli.app import app

NS = "team-a"
POLICY = """apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {name: comments}
spec:
  route: comments
  baseline: {cluster: comments-python}
  candidate: {cluster: comments-go}
  stages:
    - {weight: 10%, bake: 1m}
    - {weight: 100%, bake: 1m}
  analysis: {interval: 30s, slos: []}
"""


@pytest.fixture
def sluice(kube: FakeKube, tmp_path: Path) -> Callable[..., Result]:
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(
            app, ["rollout", *args, "--kubeconfig", str(kubeconfig)], env={"SLUICE_ACTOR": "ana"}
        )

    return run


def rollouts(kube: FakeKube) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in kube.objects("rollouts", NS)}


def test_start_creates_a_rollout_object_and_status_reads_it(
    kube: FakeKube, sluice: Callable[..., Result], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    started = sluice("start", "comments", "--policy", str(policy))
    assert started.exit_code == 0, started.output
    obj = rollouts(kube)["comments"]
    assert obj["spec"]["route"] == "comments"
    assert obj["spec"]["candidate"] == {"cluster": "comments-go"}
    status = sluice("status", "comments", "-o", "json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["phase"] == "pending"
    # The same route again: refused, as locally.
    again = sluice("start", "other", "--policy", str(policy))
    assert again.exit_code == exitcodes.REFUSED, again.output
    assert "already being moved" in again.output
    assert set(rollouts(kube)) == {"comments"}


def test_commands_write_the_status_and_the_history_names_the_actor(
    kube: FakeKube, sluice: Callable[..., Result], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    assert sluice("start", "comments", "-p", str(policy)).exit_code == 0
    aborted = sluice("abort", "comments", "--reason", "wrong build")
    assert aborted.exit_code == 0, aborted.output
    status = rollouts(kube)["comments"]["status"]
    assert status["phase"] in ("aborted", "rolling_back")
    history = json.loads(sluice("history", "comments", "-o", "json").output)
    last = history["history"][-1]
    assert last["actor"] == "ana"
    assert "wrong build" in last["reason"]
    # A command the phase does not allow is refused and changes nothing.
    before = rollouts(kube)["comments"]["metadata"]["resourceVersion"]
    paused = sluice("pause", "comments")
    assert paused.exit_code == exitcodes.REFUSED, paused.output
    assert rollouts(kube)["comments"]["metadata"]["resourceVersion"] == before


def test_a_missing_rollout_exits_5_and_an_unreachable_cluster_exits_6(
    kube: FakeKube, sluice: Callable[..., Result], tmp_path: Path
) -> None:
    missing = sluice("status", "nope")
    assert missing.exit_code == exitcodes.NOT_FOUND, missing.output
    kube.stop()
    down = sluice("list")
    assert down.exit_code == exitcodes.STATE_UNAVAILABLE, down.output
