"""End to end: stages judged on real metrics; bad candidates rolled back on their own.

Real upstreams with noisy latency and 5xx (``upstream_server.py`` options), a real Envoy with
Sluice's bootstrap (fine ``upstream_rq_time`` buckets), real traffic, ``sluice serve`` judging
every stage from a real Prometheus (scraping the Envoy every second) or from the Envoy's own
``/stats/prometheus`` (``envoy_admin``). Assertions are on what Envoy applied (``/config_dump``)
and on the rollout as the CLI reports it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_fixture import Prometheus, ScrapeTarget

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

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(270)]

NOISE = ("--median-ms", "20", "--sigma", "0.5", "--error-rate", "0.005")
"""Baseline behaviour: log-normal latency (median 20 ms: well above the scheduling noise of a
busy 2-core machine) and 0.5% 503s."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


POLICY = f"""apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: comments}}
spec:
  route: {ROUTE}
  baseline: {{cluster: {BASELINE}}}
  candidate: {{cluster: {CANDIDATE}}}
  stages:
    - {{weight: 50%, bake: 6s, deadline: DEADLINE}}
    - {{weight: 100%, bake: 4s, deadline: DEADLINE}}
  analysis:
    interval: 2s
    minRequests: 200
    slos:
      - {{metric: latency_p99, maxDrift: 5%, passDrift: 40%}}
      - {{metric: error_rate, maxDrift: 5%, passDrift: 200%, tolerance: 0.4%}}
  ackTimeout: 5s
"""
# passDrift 40% for latency: on a busy 2-core test bed, two identical upstream processes'
# p99s differ by up to ~20% from CPU scheduling alone (measured 120 vs 100 ms in one run);
# the default 20% then rightly refuses to promote. The slow candidate (p99 x1.5) stays beyond
# 40%: it can never pass, and its fail test rolls it back. passDrift 200% for errors: a stage
# of this short test sees ~100 errors in all (0.5% of ~20,000 requests), too few to rule out
# twice the baseline's rate at 99% (that takes ~150); the 2% candidate (x4) stays beyond x3.
# tolerance 0.4 points: the 100% stage is judged against the baseline over the rollout so far,
# which holds 2,000-8,000 requests (10-40 errors) after the first stage, too few for any ratio;
# the absolute part decides. At 0.3 a CI run held a healthy candidate to the deadline
# (candidate 0.59% of 25,571 vs reference 0.38% of 8,190); at 0.5 the 2% candidate needed
# ~8,000 requests a side to be shown beyond the fail limit, past a 60 s deadline. The error
# test's verdicts computed offline (slo_checks.error_rate_verdict): at 0.4 every such healthy
# case passes by 25,000 candidate requests and the 2% candidate fails by 8,000 a side, which
# the 120 s deadlines below leave room for.
# benchmarks/judge_power.py measures the defaults at production traffic.


@dataclass
class Setup:
    controller: Controller
    envoy: Envoy
    state: Path
    workdir: Path
    prometheus: Prometheus | None

    def cli(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "controller", "rollout", *args, "--state", str(self.state)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check is not None:
            assert done.returncode == check, f"{args}: {done.stdout}\n{done.stderr}"
        return done

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "comments", "-o", "json").stdout)  # type: ignore[no-any-return]

    def start(self, deadline: str = "60s") -> None:
        path = self.workdir / "policy.yaml"
        path.write_text(POLICY.replace("DEADLINE", deadline))
        self.cli("start", "comments", "--policy", str(path))

    def wait_end(self, timeout: float) -> dict[str, Any]:
        return wait_until(
            lambda: (
                (s := self.status())["phase"] in ("succeeded", "rolled_back", "aborted", "failed")
                and s
            ),
            timeout=timeout,
            what="the rollout to end",
            diagnostics=lambda: (
                json.dumps(self.status(), indent=1) + "\n" + self.controller.proc.logs(30)
            ),
            interval=0.5,
        )

    def history(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("history", "comments", "-o", "json").stdout)["history"]  # type: ignore[no-any-return]


@pytest.fixture
def setup_factory(
    tmp_path: Path, prometheus_factory: Callable[..., Prometheus]
) -> Iterator[Callable[..., Setup]]:
    """``make(provider, candidate_args)``: upstreams, an Envoy, maybe a Prometheus, and a
    controller judging from ``provider`` (``prometheus`` or ``envoy_admin``)."""
    upstreams: list[Upstream] = []
    controllers: list[Controller] = []
    envoys: list[Envoy] = []

    def make(provider: str, candidate: tuple[str, ...]) -> Setup:
        baseline_up = Upstream.start(BASELINE, tmp_path, *NOISE)
        candidate_up = Upstream.start(CANDIDATE, tmp_path, *candidate)
        upstreams.extend([baseline_up, candidate_up])
        gateway = tmp_path / "gateway.yaml"
        gateway.write_text(yaml.safe_dump(gateway_document(baseline_up.port, candidate_up.port)))
        xds_port = free_port()
        envoy = Envoy.start(tmp_path, node_id="analysis-e2e", xds_port=xds_port, protocol="sotw")
        envoys.append(envoy)
        prometheus: Prometheus | None = None
        if provider == "prometheus":
            address = envoy.admin_url.removeprefix("http://")
            prometheus = prometheus_factory([ScrapeTarget("envoy", address)], interval_s=1.0)
            extra = ("--prometheus-url", prometheus.url)
        else:
            extra = ("--envoy-admin", envoy.admin_url, "--scrape-interval", "1s")
        state = tmp_path / "state.db"
        controller = Controller.start(
            tmp_path, gateway, state, xds_port=xds_port, name="controller", extra=extra
        )
        controllers.append(controller)
        controller.wait_node_synced(envoy.node_id, timeout=20, diag=envoy.logs)
        envoy.wait_live()
        envoy.listener_port()
        return Setup(controller, envoy, state, tmp_path, prometheus)

    try:
        yield make
    finally:
        for controller in controllers:
            controller.stop()
        for envoy in envoys:
            envoy.stop()
        for upstream in upstreams:
            upstream.stop()


def candidate_weights(envoy: Envoy) -> int | None:
    weights = envoy.applied_weights()
    return None if weights is None else weights.get(CANDIDATE, 0)


# Each provider judges each kind of candidate at least once across this module, the demo's
# end-to-end test (tests/e2e/test_demo_e2e.py, Prometheus in CI) and
# tests/e2e/test_candidate_down_e2e.py: healthy (envoy_admin here, prometheus in the demo), a
# slow tail (envoy_admin here), a slower median (prometheus in the demo), errors (a candidate
# down, prometheus; failed writes, envoy_admin in the demo). A 2% 5xx candidate judged by
# Prometheus took 47-86 s of CI for no new path; the judge's power on such small drifts is
# measured by benchmarks/judge_power.py. Running every pair would cost CI minutes.
@pytest.mark.parametrize("provider", ["envoy_admin"])
def test_a_healthy_candidate_is_promoted(
    setup_factory: Callable[..., Setup], provider: str
) -> None:
    setup = setup_factory(provider, NOISE)
    with LoadGenerator(f"http://127.0.0.1:{setup.envoy.listener_port()}", concurrency=8) as load:
        load.start("run", duration=210)
        setup.start(deadline="120s")
        final = setup.wait_end(timeout=215)
    assert final["phase"] == "succeeded", json.dumps(final, indent=1)
    assert candidate_weights(setup.envoy) == 10_000
    # Every stage passed on evidence: the last verdict names both SLOs within the SLO.
    slos = final["last_verdict"]["details"]["slos"]
    assert set(slos) == {"latency_p99", "error_rate"}
    assert all(s["outcome"] == "pass" for s in slos.values()), slos


@pytest.mark.parametrize(
    ("provider", "candidate", "slo"),
    [
        (
            "envoy_admin",
            (*NOISE[:4], "--error-rate", "0.005", "--slow-share", "0.05", "--slow-factor", "1.5"),
            "latency_p99",
        ),
    ],
    ids=["slowest-5%-50%-slower-envoy_admin"],
)
def test_a_bad_candidate_is_rolled_back_naming_the_slo(
    setup_factory: Callable[..., Setup], provider: str, candidate: tuple[str, ...], slo: str
) -> None:
    setup = setup_factory(provider, candidate)
    with LoadGenerator(f"http://127.0.0.1:{setup.envoy.listener_port()}", concurrency=8) as load:
        load.start("run", duration=180)
        setup.start(deadline="120s")
        final = setup.wait_end(timeout=175)
    assert final["phase"] == "rolled_back", json.dumps(final, indent=1)
    assert final["rollback_cause"] == "verdict"
    assert candidate_weights(setup.envoy) == 0
    failed = [
        e
        for e in setup.history()
        if "failed" in e["reason"] and "→ rolling_back" in e["transition"]
    ]
    assert failed, setup.history()
    assert slo in failed[0]["reason"], failed[0]["reason"]
    figures = failed[0]["details"]["slos"][slo]
    assert figures["outcome"] == "fail"
    for key in ("baseline", "candidate", "drift", "confidence", "candidate_requests"):
        assert figures[key] is not None, (key, figures)


def test_prometheus_down_mid_rollout_holds_then_follows_the_policy(
    setup_factory: Callable[..., Setup],
) -> None:
    setup = setup_factory("prometheus", NOISE)
    assert setup.prometheus is not None
    with LoadGenerator(f"http://127.0.0.1:{setup.envoy.listener_port()}", concurrency=8) as load:
        load.start("run", duration=120)
        setup.start(deadline="20s")
        setup.envoy.wait_route_weights({BASELINE: 5000, CANDIDATE: 5000}, timeout=20)
        setup.prometheus.stop()
        final = setup.wait_end(timeout=60)
    assert final["phase"] == "rolled_back", json.dumps(final, indent=1)
    assert final["rollback_cause"] == "deadline"
    assert candidate_weights(setup.envoy) == 0
    history = setup.history()
    # It never promoted: the 100% stage was never entered.
    assert not any("stage 2/2" in e["reason"] and "pushing" in e["reason"] for e in history)
    deadline = [e for e in history if "deadline" in e["reason"]]
    assert deadline, history
    assert "metrics query failed" in deadline[0]["reason"], deadline[0]["reason"]
