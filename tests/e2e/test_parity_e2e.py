"""End to end: response parity gates a rollout (tap-compare built into the gate).

A real Envoy mirrors the route's GETs to the comparator that ``sluice serve --parity-address``
runs; the comparator sends each to the baseline (``items_server.py``), maybe a second baseline
replica, and the candidate, compares the JSON replies, and the judge reads its tallies. The
policy starts with a shadow stage (weight 0%): parity is known before any user reaches the
candidate. Assertions are on what Envoy applied and counted, and on the rollout and the
parity diff as the CLI reports them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_fixture import free_port

from .harness import (
    BASELINE,
    CANDIDATE,
    ROUTE,
    ROUTE_PREFIX,
    Controller,
    Envoy,
    LoadGenerator,
    Process,
    Upstream,
    gateway_document,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ITEMS_SCRIPT = Path(__file__).with_name("items_server.py")
SECONDARY = "baseline-2"
COMPARATOR = "sluice-parity"
ITEM_PATH = f"{ROUTE_PREFIX}/items/42"


def policy(parity: dict[str, Any], min_value: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "comments"},
            "spec": {
                "route": ROUTE,
                "baseline": {"cluster": BASELINE},
                "candidate": {"cluster": CANDIDATE},
                "stages": [
                    {"weight": "0%", "bake": "4s", "deadline": "90s"},
                    {"weight": "100%", "bake": "4s", "deadline": "90s"},
                ],
                "analysis": {
                    "interval": "2s",
                    "minRequests": 200,
                    "slos": [{"metric": "parity", "minValue": min_value, "minCompared": 1000}],
                },
                "parity": {"mirror": "100%", **parity},
                "ackTimeout": "5s",
            },
        }
    )


@dataclass
class Setup:
    controller: Controller
    envoy: Envoy
    state: Path
    workdir: Path

    def cli(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "controller", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check is not None:
            assert done.returncode == check, f"{args}: {done.stdout}\n{done.stderr}"
        return done

    def status(self) -> dict[str, Any]:
        done = self.cli("rollout", "status", "comments", "-o", "json", "--state", str(self.state))
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def start(self, parity: dict[str, Any], min_value: str) -> None:
        path = self.workdir / "policy.yaml"
        path.write_text(policy(parity, min_value))
        self.cli("rollout", "start", "comments", "--policy", str(path), "--state", str(self.state))

    def wait_end(self, timeout: float) -> dict[str, Any]:
        return wait_until(
            lambda: (
                (s := self.status())["phase"] in ("succeeded", "rolled_back", "aborted", "failed")
                and s
            ),
            timeout=timeout,
            what="the rollout to end",
            diagnostics=lambda: (
                json.dumps(self.status(), indent=1) + "\n" + self.controller.proc.logs(40)
            ),
            interval=0.5,
        )


@pytest.fixture
def setup_factory(tmp_path: Path) -> Iterator[Callable[..., Setup]]:
    """``make(candidate_args, secondary=False)``: items upstreams, an Envoy, and a controller
    running the comparator and judging from the Envoy's own stats."""
    procs: list[Process] = []
    controllers: list[Controller] = []
    envoys: list[Envoy] = []

    def make(candidate: tuple[str, ...], secondary: bool = False) -> Setup:
        baseline_up = Upstream.start(BASELINE, tmp_path, script=ITEMS_SCRIPT)
        candidate_up = Upstream.start(CANDIDATE, tmp_path, *candidate, script=ITEMS_SCRIPT)
        procs.extend([baseline_up.proc, candidate_up.proc])
        document = gateway_document(baseline_up.port, candidate_up.port)
        comparator_port = free_port()
        clusters = document["spec"]["clusters"]
        clusters.append(
            {
                "name": COMPARATOR,
                "connectTimeout": "1s",
                "endpoints": [{"address": "127.0.0.1", "port": comparator_port}],
            }
        )
        if secondary:
            secondary_up = Upstream.start(SECONDARY, tmp_path, script=ITEMS_SCRIPT)
            procs.append(secondary_up.proc)
            clusters.append(
                {
                    "name": SECONDARY,
                    "connectTimeout": "1s",
                    "endpoints": [{"address": "127.0.0.1", "port": secondary_up.port}],
                }
            )
        gateway = tmp_path / "gateway.yaml"
        gateway.write_text(yaml.safe_dump(document))
        xds_port = free_port()
        envoy = Envoy.start(tmp_path, node_id="parity-e2e", xds_port=xds_port, protocol="sotw")
        envoys.append(envoy)
        state = tmp_path / "state.db"
        controller = Controller.start(
            tmp_path,
            gateway,
            state,
            xds_port=xds_port,
            extra=(
                "--envoy-admin",
                envoy.admin_url,
                "--scrape-interval",
                "1s",
                "--parity-address",
                f"127.0.0.1:{comparator_port}",
            ),
        )
        controllers.append(controller)
        controller.wait_node_synced(envoy.node_id, timeout=20, diag=envoy.logs)
        envoy.wait_live()
        envoy.listener_port()
        return Setup(controller, envoy, state, tmp_path)

    try:
        yield make
    finally:
        for controller in controllers:
            controller.stop()
        for envoy in envoys:
            envoy.stop()
        for proc in procs:
            proc.stop(grace=3.0)


VOLATILE = ["/meta/generated_at", "/meta/request_id"]


# A field bug failing parity in the shadow stage (no user request reaching the candidate, the
# field path in the comparator's samples) and volatile fields ignored by path (a healthy
# candidate promoted) are the demo's parity and healthy scenarios: tests/e2e/test_demo_e2e.py.


@pytest.mark.parametrize("via", ["secondary-noise"])
def test_volatile_fields_alone_pass_parity(setup_factory: Callable[..., Setup], via: str) -> None:
    secondary = via == "secondary-noise"
    setup = setup_factory((), secondary=secondary)
    url = f"http://127.0.0.1:{setup.envoy.listener_port()}"
    parity: dict[str, Any] = (
        {"secondary": {"cluster": SECONDARY}} if secondary else {"compare": {"ignore": VOLATILE}}
    )
    with LoadGenerator(url, concurrency=8, path=ITEM_PATH) as load:
        load.start("run", duration=170)
        # 99.5%: a pass shows the mismatch rate below the limit L at 99% however often it
        # looks, which with no mismatch takes about ln(400) / (2/3 L) compared requests per
        # stage: ~9,000 at 99.9%, ~1,800 at 99.5% (seconds here, for two stages).
        setup.start(parity, "99.5%")
        final = setup.wait_end(timeout=170)
    assert final["phase"] == "succeeded", json.dumps(final, indent=1)
    weights = setup.envoy.applied_weights()
    assert weights is not None
    assert weights.get(CANDIDATE) == 10_000
    parity_figures = final["last_verdict"]["details"]["slos"]["parity"]
    assert parity_figures["outcome"] == "pass", parity_figures
    admin = setup.controller.admin_url
    report = json.loads(setup.cli("parity", "diff", ROUTE, "--admin", admin, "-o", "json").stdout)
    assert report["counts"]["mismatched"] == 0, report
    if secondary:
        # The volatile fields were seen and classed as noise, not ignored up front.
        assert report["counts"]["noisy"] > 0, report
        assert {"/meta/generated_at", "/meta/request_id"} <= set(report["paths"]), report
