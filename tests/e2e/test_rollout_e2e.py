"""End to end: rollouts started and steered with the ``sluice rollout`` CLI move real traffic.

A real ``sluice serve`` (its reconciler), a real Envoy fed over ADS, two real upstreams, and
the CLI as operators run it (a separate process writing the controller's state file). The
tests assert on what clients received (the ``x-upstream`` header of each answer) and on what
Envoy reports (``/config_dump``), and read the rollout's phase through the CLI's JSON output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import (
    BASELINE,
    CANDIDATE,
    ROUTE,
    ROUTE_PREFIX,
    UPSTREAM_HEADER,
    Controller,
    Envoy,
    LoadGenerator,
    Result,
    binomial_interval,
    summarize,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

TOTAL = 10_000
"""Envoy weights of a rollout sum to 10,000 (0.01% steps)."""


def policy_text(stages: list[tuple[str, str]], extra: str = "") -> str:
    lines = "\n".join(f"    - {{weight: {w}, bake: {b}}}" for w, b in stages)
    return f"""apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: comments}}
spec:
  route: {ROUTE}
  baseline: {{cluster: {BASELINE}}}
  candidate: {{cluster: {CANDIDATE}}}
  stages:
{lines}
  analysis: {{interval: 500ms, slos: []}}
  ackTimeout: 5s
{extra}"""


class Cli:
    """``python -m controller rollout ...`` against one controller's state file."""

    def __init__(self, state: Path, workdir: Path) -> None:
        self.state = state
        self.workdir = workdir

    def run(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "controller", "rollout", *args, "--state", str(self.state)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.workdir,
            env={**os.environ, "SLUICE_ACTOR": "e2e-operator"},
        )
        if check is not None:
            assert done.returncode == check, (
                f"sluice rollout {' '.join(args)}: exit {done.returncode}\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}"
            )
        return done

    def start(self, policy: str, name: str = "comments") -> None:
        path = self.workdir / f"{name}-policy.yaml"
        path.write_text(policy)
        self.run("start", name, "--policy", str(path))

    def status(self, name: str = "comments") -> dict[str, Any]:
        return json.loads(self.run("status", name, "-o", "json").stdout)  # type: ignore[no-any-return]


@pytest.fixture
def rollout_stack(
    controller_factory: Callable[..., Controller],
    envoy_factory: Callable[..., Envoy],
    tmp_path: Path,
) -> tuple[Controller, Envoy, Cli]:
    """A controller of the test's own (rollouts hold the route), one SotW Envoy, the CLI."""
    controller = controller_factory(state_path=tmp_path / "state.db")
    envoy = envoy_factory(controller, node_id="rollout-e2e", protocol="sotw")
    controller.wait_node_synced(envoy.node_id, timeout=20, diag=envoy.logs)
    return controller, envoy, Cli(controller.state_path, tmp_path)


def weights_for(candidate_percent: float) -> dict[str, int]:
    candidate = round(candidate_percent * 100)
    return {BASELINE: TOTAL - candidate, CANDIDATE: candidate}


class WeightWatcher:
    """Follows the weights Envoy applied (``/config_dump``) and labels the load's phases with
    them, so each request is attributed to the weights in force when it was sent."""

    def __init__(self, envoy: Envoy, load: LoadGenerator) -> None:
        self.envoy = envoy
        self.load = load
        self.seen: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WeightWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        last: dict[str, int] | None = None
        while not self._stop.is_set():
            try:
                weights = self.envoy.applied_weights()
            except httpx.HTTPError:
                weights = None
            if weights is not None and weights != last:
                last = weights
                self.seen.append((time.monotonic(), weights))
                self.load.set_phase(f"{weights.get(CANDIDATE, 0)}")
            time.sleep(0.02)


def steady(load: LoadGenerator, phase: str, trim_s: float = 0.3) -> list[Result]:
    """The requests sent and answered inside ``phase``, without those near its edges (the
    watcher notices a change up to a poll later)."""
    order = list(load.phase_started)
    start = load.phase_started[phase]
    later = [load.phase_started[p] for p in order[order.index(phase) + 1 :]]
    end = min(later) if later else float("inf")
    return [
        r
        for r in load.phase_results(phase)
        if start + trim_s <= r.started and r.started + r.elapsed <= end - trim_s
    ]


def assert_split(results: list[Result], candidate_percent: float, context: str) -> None:
    """The candidate's share of ``results`` lies in the binomial 99.9% interval."""
    summary = summarize(results)
    assert summary.total >= 100, f"{context}: too few requests ({summary.describe()})"
    assert summary.ok == summary.total, f"{context}: {summary.describe()}"
    low, high = binomial_interval(0.999, summary.total, candidate_percent / 100)
    got = summary.count(CANDIDATE)
    assert low <= got <= high, (
        f"{context}: {got}/{summary.total} to the candidate, expected {low}..{high} "
        f"for {candidate_percent}% ({summary.describe()})"
    )


def wait_phase(cli: Cli, phase: str, timeout: float, name: str = "comments") -> dict[str, Any]:
    return wait_until(
        lambda: (s := cli.status(name))["phase"] == phase and s,
        timeout=timeout,
        what=f"rollout {name} to be {phase}",
        diagnostics=lambda: json.dumps(cli.status(name), indent=1),
        interval=0.2,
    )


def test_rollout_moves_every_stage_and_traffic_follows(
    rollout_stack: tuple[Controller, Envoy, Cli],
) -> None:
    _, envoy, cli = rollout_stack
    stages = [(10, "3s"), (50, "3s"), (100, "2s")]
    url = f"http://127.0.0.1:{envoy.listener_port()}"
    with LoadGenerator(url, concurrency=6) as load, WeightWatcher(envoy, load) as watcher:
        load.start("0", duration=90)  # the gateway sends nothing to the candidate
        wait_until(lambda: len(load.results) > 50, timeout=10, what="load running")
        cli.start(policy_text([(f"{w}%", b) for w, b in stages]))
        final = wait_phase(cli, "succeeded", timeout=60)
        time.sleep(0.5)
        load.stop()
    # Envoy went through every stage's weights, in order, and ends at 100% candidate.
    applied = [w.get(CANDIDATE, 0) for _, w in watcher.seen]
    assert applied == [0, 1000, 5000, 10000], f"weights Envoy applied, in order: {watcher.seen}"
    assert envoy.applied_weights() == weights_for(100)
    # At each stage the clients' split matches the weight.
    for weight, _ in stages:
        assert_split(steady(load, str(weight * 100)), weight, f"stage {weight}%")
    assert_split(steady(load, "0"), 0, "before the rollout")
    assert not summarize(load.results).errors, summarize(load.results).describe()
    assert summarize(load.results).server_errors == 0, summarize(load.results).describe()
    assert final["stage"] == 3
    assert final["weights"]["candidate"] == 100
    history = json.loads(cli.run("history", "comments", "-o", "json").stdout)["history"]
    transitions = [e["transition"] for e in history]
    assert transitions[0] == "pending"
    assert transitions[-1] == "progressing → succeeded"
    assert history[0]["actor"] == "e2e-operator"


def test_pause_holds_and_abort_returns_everything_to_the_baseline(
    rollout_stack: tuple[Controller, Envoy, Cli],
) -> None:
    _, envoy, cli = rollout_stack
    url = f"http://127.0.0.1:{envoy.listener_port()}"
    cli.start(policy_text([("20%", "4s"), ("60%", "1s"), ("100%", "1s")]))
    envoy.wait_route_weights(weights_for(20), timeout=15)
    cli.run("pause", "comments", "--reason", "looking at dashboards")
    paused = wait_phase(cli, "paused", timeout=5)
    assert paused["weights"]["candidate"] == 20
    with LoadGenerator(url, concurrency=6) as load:
        load.start("paused", duration=30)
        time.sleep(5)  # past the 4s bake: a running rollout would have moved on
        load.set_phase("aborting")
        assert envoy.applied_weights() == weights_for(20), "a paused rollout moved"
        assert cli.status()["phase"] == "paused"
        cli.run("abort", "comments", "--reason", "candidate misbehaves")
        envoy.wait_route_weights(weights_for(0), timeout=10)
        load.set_phase("aborted")
        time.sleep(2)
        load.stop()
    assert_split(steady(load, "paused"), 20, "while paused")
    after = summarize(steady(load, "aborted"))
    assert after.total >= 100, after.describe()
    assert after.count(CANDIDATE) == 0, after.describe()
    assert after.ok == after.total, after.describe()
    done = wait_phase(cli, "aborted", timeout=10)
    assert done["weights"]["candidate"] == 0
    assert done["in_effect"]
    # Commands that make no sense now are refused with exit code 4 and change nothing.
    refused = cli.run("resume", "comments", check=4)
    assert "has ended (aborted)" in refused.stderr
    assert cli.status()["phase"] == "aborted"


def test_killed_controller_resumes_the_same_stage_without_moving_weights(
    controller_factory: Callable[..., Controller],
    envoy_factory: Callable[..., Envoy],
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    controller = controller_factory(state_path=state, name="before-kill")
    xds_port = controller.xds_port
    envoy = envoy_factory(controller, node_id="resume-e2e", protocol="sotw")
    controller.wait_node_synced(envoy.node_id, timeout=20, diag=envoy.logs)
    cli = Cli(state, tmp_path)
    cli.start(policy_text([("25%", "1s"), ("50%", "60s"), ("100%", "1s")]))
    version = envoy.wait_route_weights(weights_for(50), timeout=20)
    before = wait_until(
        lambda: (s := cli.status())["bake"] is not None and s["stage"] == 2 and s,
        timeout=10,
        what="stage 2 baking",
    )
    url = f"http://127.0.0.1:{envoy.listener_port()}"
    with LoadGenerator(url, concurrency=4) as load:
        load.start("down", duration=60)
        controller.proc.stop(signal.SIGKILL, grace=0)
        time.sleep(1.5)
        load.set_phase("restarted")
        restarted = controller_factory(state_path=state, xds_port=xds_port, name="after-kill")
        restarted.wait_node_synced(envoy.node_id, timeout=30, diag=envoy.logs)
        time.sleep(2)
        load.stop()
    after = cli.status()
    assert after["phase"] == "progressing", after
    assert after["stage"] == 2, after
    assert after["bake"]["started_at"] == before["bake"]["started_at"], "the bake clock restarted"
    # The same weights, and the very same RDS version: nothing moved on Envoy.
    assert envoy.route_weights() == (weights_for(50), version)
    summary = summarize(load.results)
    assert not summary.errors, summary.describe()
    assert summary.ok == summary.total, summary.describe()
    assert_split(steady(load, "restarted"), 50, "after the restart")
    # And the restarted controller still drives it: promote moves on to 100%.
    cli.run("promote", "comments")
    envoy.wait_route_weights(weights_for(100), timeout=15)
    wait_phase(cli, "succeeded", timeout=15)


def test_header_override_and_sticky_users_through_envoy(
    rollout_stack: tuple[Controller, Envoy, Cli],
) -> None:
    _, envoy, cli = rollout_stack
    extra = "  override: {header: x-sluice-target}\n  sticky: {header: x-user-id}\n"
    cli.start(policy_text([("50%", "120s"), ("100%", "1s")], extra))
    envoy.wait_route_weights(weights_for(50), timeout=15)
    url = f"http://127.0.0.1:{envoy.listener_port()}{ROUTE_PREFIX}/7"

    def upstreams(headers: dict[str, str], n: int) -> Counter[str]:
        got: Counter[str] = Counter()
        with httpx.Client(timeout=5) as client:
            for _ in range(n):
                response = client.get(url, headers=headers)
                assert response.status_code == 200, response.text
                got[response.headers.get(UPSTREAM_HEADER, "?")] += 1
        return got

    assert upstreams({"x-sluice-target": "candidate"}, 40) == {CANDIDATE: 40}
    assert upstreams({"x-sluice-target": "baseline"}, 40) == {BASELINE: 40}
    # Another value is no override: the 50/50 split.
    mixed = upstreams({"x-sluice-target": "other"}, 200)
    assert 60 <= mixed[CANDIDATE] <= 140, mixed
    # Sticky: every user lands on one side, always; users spread over both sides.
    sides: dict[str, str] = {}
    for user in range(40):
        got = upstreams({"x-user-id": f"user-{user}"}, 8)
        assert len(got) == 1, f"user-{user} saw {dict(got)}"
        sides[f"user-{user}"] = next(iter(got))
    spread = Counter(sides.values())
    assert spread[CANDIDATE] >= 5, spread
    assert spread[BASELINE] >= 5, spread
    # The routes Envoy holds: forcing routes before the weighted one, hash policy on it.
    names = route_names(envoy)
    assert names[:3] == [f"{ROUTE}.force-{CANDIDATE}", f"{ROUTE}.force-{BASELINE}", ROUTE], names
    # Once the rollout ends, the forcing header reaches nobody in particular any more.
    cli.run("abort", "comments")
    wait_phase(cli, "aborted", timeout=15)
    wait_until(lambda: route_names(envoy) == [ROUTE], timeout=10, what="forcing routes removed")
    assert upstreams({"x-sluice-target": "candidate"}, 20) == {BASELINE: 20}


def route_names(envoy: Envoy) -> list[str]:
    for config in envoy.config_dump()["configs"]:
        if config.get("@type", "").endswith("RoutesConfigDump"):
            for dynamic in config.get("dynamic_route_configs", []):
                for vhost in dynamic.get("route_config", {}).get("virtual_hosts", []):
                    return [r.get("name", "") for r in vhost.get("routes", [])]
    return []
