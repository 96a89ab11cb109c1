"""End to end: a candidate that is down from the start is rolled back on its errors.

The candidate cluster's endpoint is a port nothing listens on, from the start: Envoy answers
every request routed to it with its own 503 (upstream connect error), counted in
``upstream_rq_xx`` but not in ``upstream_rq_total``, and records no ``upstream_rq_time`` at
all (no upstream ever answered). A real Prometheus scrapes the Envoy every second and
``sluice serve --prometheus-url`` judges the stages: the missing latency histogram is a gap of
the sample (latency: no data), not a missing sample, so ``error_rate`` is judged and fails,
and the rollout is rolled back naming it (instead of holding until the stage's deadline).

Run with ``pytest tests/e2e/test_candidate_down_e2e.py --e2e -rP`` (~30 s).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_fixture import Prometheus, ScrapeTarget

from controller.analysis.providers.prometheus import PrometheusProvider
from controller.analysis.sli import EMPTY_HISTOGRAM, LATENCY_GAP, Sample

from .harness import (
    BASELINE,
    CANDIDATE,
    ROUTE,
    Controller,
    Envoy,
    LoadGenerator,
    Upstream,
    gateway_document,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

POLICY = f"""apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: comments}}
spec:
  route: {ROUTE}
  baseline: {{cluster: {BASELINE}}}
  candidate: {{cluster: {CANDIDATE}}}
  stages:
    - {{weight: 50%, bake: 6s, deadline: 60s}}
    - {{weight: 100%, bake: 4s, deadline: 60s}}
  analysis:
    interval: 2s
    minRequests: 200
    slos:
      - {{metric: latency_p99, maxDrift: 5%}}
      - {{metric: error_rate, maxDrift: 5%}}
  ackTimeout: 5s
"""
"""The stage deadline (60 s) is well beyond the time a verdict takes (~10 s): a rollout that
held on "no data" instead of judging the errors would be seen running, not rolled back."""


def dead_port() -> int:
    """A port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rollout_cli(state: Path, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "controller", "rollout", *args, "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return json.loads(done.stdout) if "-o" in args else done.stdout


@pytest.fixture
def processes() -> Iterator[list[Controller | Envoy | Upstream]]:
    started: list[Controller | Envoy | Upstream] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()


def test_a_candidate_down_from_the_start_is_rolled_back_on_error_rate(
    tmp_path: Path,
    prometheus_factory: Callable[..., Prometheus],
    processes: list[Controller | Envoy | Upstream],
) -> None:
    baseline = Upstream.start(BASELINE, tmp_path, "--median-ms", "5")
    processes.append(baseline)
    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(yaml.safe_dump(gateway_document(baseline.port, dead_port())))
    xds_port = dead_port()
    envoy = Envoy.start(tmp_path, node_id="candidate-down", xds_port=xds_port, protocol="sotw")
    processes.append(envoy)
    prometheus = prometheus_factory(
        [ScrapeTarget("envoy", envoy.admin_url.removeprefix("http://"))], interval_s=1.0
    )
    state = tmp_path / "state.db"
    controller = Controller.start(
        tmp_path,
        gateway,
        state,
        xds_port=xds_port,
        extra=("--prometheus-url", prometheus.url),
    )
    processes.append(controller)
    controller.wait_node_synced(envoy.node_id, timeout=20, diag=envoy.logs)
    envoy.wait_live()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)

    def status() -> dict[str, Any]:
        return rollout_cli(state, "status", "comments", "-o", "json")  # type: ignore[no-any-return]

    def ended_rollout() -> dict[str, Any] | None:
        now = status()
        return now if now["phase"] in ("succeeded", "rolled_back", "aborted", "failed") else None

    began = time.time()
    with LoadGenerator(f"http://127.0.0.1:{envoy.listener_port()}", concurrency=8) as load:
        load.start("run", duration=90)
        rollout_cli(state, "start", "comments", "--policy", str(policy))
        final = wait_until(
            ended_rollout,
            timeout=70,
            what="the rollout to end",
            diagnostics=lambda: json.dumps(status(), indent=1) + "\n" + controller.proc.logs(30),
            interval=0.5,
        )
    ended = time.time()
    clients = load.summary()
    history = rollout_cli(state, "history", "comments", "-o", "json")["history"]
    print(f"rolled back after {ended - began:.1f} s; clients: {clients.describe()}")

    assert final["phase"] == "rolled_back", json.dumps(final, indent=1)
    assert final["rollback_cause"] == "verdict", json.dumps(final, indent=1)
    assert envoy.applied_weights() == {BASELINE: 10_000, CANDIDATE: 0}
    failed = [e for e in history if "failed" in e["reason"] and "→ rolling_back" in e["transition"]]
    assert failed, json.dumps(history, indent=1)
    reason = failed[0]["reason"]
    print(f"rollback reason: {reason}")
    assert "error_rate" in reason, reason
    assert failed[0]["details"]["slos"]["error_rate"]["outcome"] == "fail", failed[0]
    # The candidate's requests were Envoy's own 503s (no upstream named in the answer).
    assert clients.by_status[503] > 0, clients.describe()
    assert clients.count(CANDIDATE) == 0, clients.describe()

    # What the provider read: the candidate's errors, and its latency as a gap.
    prometheus.wait_scraped(time.time(), scrapes=2)
    provider = PrometheusProvider(prometheus.url, timeout_s=2, retry_budget_s=2)

    async def sample() -> object:
        try:
            return await provider.sample(BASELINE, CANDIDATE, began, time.time())
        finally:
            await provider.close()

    result = asyncio.run(sample())
    assert isinstance(result, Sample), result
    figures = {
        side: (counts.requests, counts.errors, counts.latency.total)
        for side, counts in (("baseline", result.baseline), ("candidate", result.candidate))
    }
    print(f"sample over the rollout (requests, 5xx, histogram total): {figures}; {result.gaps}")
    assert result.candidate.requests == 0.0, result
    assert result.candidate.errors > 0, result
    assert result.candidate.error_rate == 1.0, result
    assert result.candidate.latency == EMPTY_HISTOGRAM, result
    assert set(result.gaps) == {LATENCY_GAP}, result.gaps
    gap = result.gaps[LATENCY_GAP]
    assert gap.kind == "empty", gap
    assert gap.message.startswith(f"{CANDIDATE}: "), gap
    assert result.baseline.latency.total > 0, result
