"""The controller's own metrics (``GET /metrics`` on the admin API) of a running controller.

The controller is :func:`controller.runtime.controller.run` on port 0 with a SQLite state file;
a real gRPC SotW stream stands in for an Envoy (it ACKs or NACKs what it is sent) and rollouts
are created and commanded through the store, as ``sluice rollout`` does. The exposition is
parsed with ``prometheus_client.parser``; one test has a real Prometheus scrape it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
from envoy_data_plane.google.rpc import Status
from prometheus_client.parser import text_string_to_metric_families
from prometheus_fixture import Prometheus, ScrapeTarget

from controller import __version__
from controller.policy.gateway import Gateway
from controller.policy.loading import load_policy
from controller.rollout.inputs import Command, CommandKind
from controller.rollout.machine import start
from controller.rollout.state import Phase
from controller.runtime.controller import ServeConfig, run
from controller.runtime.metrics import transition_target
from controller.store.rollouts import PolicySource
from controller.store.sqlite_rollouts import SqliteRolloutStore
from controller.store.transitions import apply_input
from controller.xds.server import SOTW_METHOD

RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
PY, GO = "comments-python", "comments-go"

GATEWAY = """
apiVersion: sluice.dev/v1alpha1
kind: Gateway
metadata: {name: metrics}
spec:
  listeners:
    - name: public
      address: 127.0.0.1
      port: 10000
      virtualHosts:
        - name: api
          routes:
            - name: comments
              match: {prefix: /api/comments}
              weightedClusters:
                - {cluster: comments-python, weight: 100}
                - {cluster: comments-go, weight: 0}
  clusters:
    - name: comments-python
      endpoints: [{address: 127.0.0.1, port: 8001}]
    - name: comments-go
      endpoints: [{address: 127.0.0.1, port: 8002}]
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def create_rollout(state: Path, stages: str) -> None:
    """Create rollout ``comments`` in the state file, as ``sluice rollout start`` does."""
    policy = load_policy(
        f"""apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: comments}}
spec:
  route: comments
  baseline: {{cluster: {PY}}}
  candidate: {{cluster: {GO}}}
  stages: {stages}
  analysis: {{interval: 100ms, slos: []}}
  ackTimeout: 2s
""",
        "policy.yaml",
    )
    store = SqliteRolloutStore(state)
    try:
        first, event = start(policy, time.time(), "test")
        source = PolicySource(path=None, git_commit=None, git_dirty=False, text="")
        store.create("comments", policy, source, first, event)
    finally:
        store.close()


def command(state: Path, kind: CommandKind) -> None:
    store = SqliteRolloutStore(state)
    try:
        _, decision = apply_input(
            store,
            "comments",
            Command(now=time.time(), kind=kind, actor="op"),
        )
        assert not decision.refused, decision.refused
    finally:
        store.close()


def phase_of(state: Path) -> Phase:
    store = SqliteRolloutStore(state)
    try:
        return store.get("comments").state.phase
    finally:
        store.close()


@contextlib.asynccontextmanager
async def serving(
    state: Path, capsys: pytest.CaptureFixture[str], parity: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """``run()`` on port 0 until the block ends; yields its ready line."""
    gateway = Gateway.model_validate(yaml.safe_load(GATEWAY))
    config = ServeConfig(
        gateway,
        None,
        "127.0.0.1:0",
        "127.0.0.1:0",
        state,
        poll_s=0.05,
        parity_address="127.0.0.1:0" if parity else None,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, stop))
    ready: dict[str, Any] | None = None
    deadline = time.monotonic() + 10
    out = ""
    while ready is None:
        out += capsys.readouterr().out
        for line in out.splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "ready":
                ready = json.loads(line)
        assert time.monotonic() < deadline, "the controller did not get ready"
        assert not task.done(), task.exception()
        await asyncio.sleep(0.02)
    try:
        yield ready
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class Edge:
    """One SotW ADS stream subscribed to RDS ``public``, as an Envoy node."""

    def __init__(self, xds: str, node_id: str = "edge-1") -> None:
        self.channel = grpc.aio.insecure_channel(xds)
        self.call = self.channel.stream_stream(
            SOTW_METHOD, request_serializer=bytes, response_deserializer=DiscoveryResponse.parse
        )()
        self.node_id = node_id

    async def subscribe(self) -> DiscoveryResponse:
        await self.call.write(
            DiscoveryRequest(node=Node(id=self.node_id), type_url=RDS, resource_names=["public"])
        )
        return await self.recv()

    async def recv(self) -> DiscoveryResponse:
        resp: DiscoveryResponse = await asyncio.wait_for(self.call.read(), 5)
        return resp

    async def answer(self, resp: DiscoveryResponse, nack: str = "", last_good: str = "") -> None:
        await self.call.write(
            DiscoveryRequest(
                type_url=RDS,
                resource_names=["public"],
                version_info=last_good if nack else resp.version_info,
                response_nonce=resp.nonce,
                error_detail=Status(code=3, message=nack) if nack else None,
            )
        )

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def candidate_weight(resp: DiscoveryResponse) -> int:
    config = RouteConfiguration.parse(resp.resources[0].value)
    route = next(r for vh in config.virtual_hosts for r in vh.routes if r.name == "comments")
    assert route.route is not None
    assert route.route.weighted_clusters is not None
    return int({c.name: c.weight for c in route.route.weighted_clusters.clusters}[GO] or 0)


async def scrape(admin: str) -> tuple[str, Samples]:
    """``GET /metrics``: the body and every sample keyed by (name, labels)."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{admin}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def eventually_scraped(
    admin: str, check: Callable[[Samples], bool], timeout_s: float = 5.0
) -> Samples:
    """Scrape until ``check`` holds (the store's listing is cached for a second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, samples = await scrape(admin)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, f"not seen within {timeout_s}s: {samples}"
        await asyncio.sleep(0.1)


async def test_a_rollout_walked_over_the_wire_shows_in_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    async with serving(state, capsys) as ready:
        admin = ready["admin"]
        _, before = await scrape(admin)
        assert {value(before, "sluice_rollouts", phase=p.value) for p in Phase} == {0.0}
        assert value(before, "sluice_leader") == 1
        assert value(before, "sluice_build_info", version=__version__) == 1
        assert value(before, "sluice_xds_connected_nodes", protocol="sotw") == 0

        edge = Edge(ready["xds"])
        try:
            await edge.answer(await edge.subscribe())
            await asyncio.to_thread(
                create_rollout,
                state,
                "[{weight: 10%, bake: 100ms}, {weight: 50%, bake: 1h},"
                " {weight: 100%, bake: 100ms}]",
            )
            seen: list[int] = []
            while not seen or seen[-1] != 5000:
                resp = await edge.recv()
                seen.append(candidate_weight(resp))
                await edge.answer(resp)
            # Stage 2 bakes for an hour: the gauges show it ACKed.
            held = await eventually_scraped(
                admin,
                lambda s: (
                    value(
                        s,
                        "sluice_rollout_weight_percent",
                        rollout="comments",
                        route="comments",
                        kind="acked",
                    )
                    == 50
                ),
            )
            assert value(held, "sluice_rollouts", phase="progressing") == 1
            assert (
                value(
                    held,
                    "sluice_rollout_weight_percent",
                    rollout="comments",
                    route="comments",
                    kind="desired",
                )
                == 50
            )
            assert value(held, "sluice_rollout_stage", rollout="comments", route="comments") == 2
            assert value(held, "sluice_xds_connected_nodes", protocol="sotw") == 1
            assert value(held, "sluice_xds_connected_nodes", protocol="delta") == 0

            await asyncio.to_thread(command, state, "promote")
            while seen[-1] != 10_000:
                resp = await edge.recv()
                seen.append(candidate_weight(resp))
                await edge.answer(resp)
            done = await eventually_scraped(
                admin, lambda s: value(s, "sluice_rollouts", phase="succeeded") == 1
            )
        finally:
            await edge.close()
    assert seen == [1000, 5000, 10_000]
    assert await asyncio.to_thread(phase_of, state) == Phase.SUCCEEDED
    assert value(done, "sluice_rollouts", phase="progressing") == 0
    # An ended rollout has no weight or stage series.
    assert not [
        k for k in done if k[0] in ("sluice_rollout_weight_percent", "sluice_rollout_stage")
    ]
    # Stage 1 passed on its own; stage 2 was promoted by the operator; stage 3 passed.
    passes = value(done, "sluice_verdicts_total", rollout="comments", outcome="pass")
    assert passes is not None
    assert passes >= 2
    assert value(done, "sluice_rollout_transitions_total", to="progressing") == 1
    assert value(done, "sluice_rollout_transitions_total", to="succeeded") == 1
    # One observation per push, each ACKed (10%, 50%, 100%).
    assert value(done, "sluice_xds_push_ack_seconds_count", outcome="acked") == 3
    assert value(done, "sluice_xds_push_ack_seconds_bucket", outcome="acked", le="30.0") == 3
    assert value(done, "sluice_xds_nacks_total", type="RDS") is None


async def test_a_nack_is_counted_and_observed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    async with serving(state, capsys) as ready:
        edge = Edge(ready["xds"])
        try:
            first = await edge.subscribe()
            await edge.answer(first)
            await asyncio.to_thread(
                create_rollout, state, "[{weight: 10%, bake: 1s}, {weight: 100%, bake: 1s}]"
            )
            pushed = await edge.recv()
            assert candidate_weight(pushed) == 1000
            await edge.answer(
                pushed, nack="weights rejected for the test", last_good=first.version_info
            )
            while True:  # the last good weights again, then the rollback's 0%
                resp = await edge.recv()
                await edge.answer(resp)
                if candidate_weight(resp) == 0 and await asyncio.to_thread(phase_of, state) in (
                    Phase.ROLLING_BACK,
                    Phase.FAILED,
                ):
                    break
            done = await eventually_scraped(
                ready["admin"], lambda s: value(s, "sluice_rollouts", phase="failed") == 1
            )
        finally:
            await edge.close()
    assert value(done, "sluice_xds_nacks_total", type="RDS") == 1
    assert value(done, "sluice_xds_push_ack_seconds_count", outcome="nacked") == 1
    assert value(done, "sluice_rollout_transitions_total", to="rolling_back") == 1
    assert value(done, "sluice_rollout_transitions_total", to="failed") == 1


async def test_the_comparator_joins_the_one_metrics_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serving(tmp_path / "state.db", capsys, parity=True) as ready:
        text, samples = await scrape(ready["admin"])
        async with httpx.AsyncClient() as client:
            routes = await client.get(f"http://{ready['admin']}/v1/parity/routes")
    assert routes.status_code == 200
    assert value(samples, "sluice_parity_unrouted_total") == 0
    assert value(samples, "sluice_rollouts", phase="pending") == 0
    assert text.count("# TYPE sluice_rollouts gauge") == 1


async def test_prometheus_scrapes_the_admin_metrics(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    state = tmp_path / "state.db"
    await asyncio.to_thread(create_rollout, state, "[{weight: 100%, bake: 1h}]")
    async with serving(state, capsys) as ready:
        # Prometheus' client is blocking: off the event loop, which serves the scrapes.
        prometheus = await asyncio.to_thread(
            prometheus_factory, [ScrapeTarget("sluice", ready["admin"], "/metrics")]
        )
        await asyncio.to_thread(prometheus.wait_scraped, time.time())
        data = await asyncio.to_thread(prometheus.query, "sluice_rollouts")
        leader = await asyncio.to_thread(prometheus.query, "sluice_leader")
    phases = {r["metric"]["phase"]: float(r["value"][1]) for r in data["result"]}
    assert set(phases) == {p.value for p in Phase}
    # No Envoy connected: the first push waits (pending or progressing, never moved on).
    assert sum(phases.values()) == 1
    assert [float(r["value"][1]) for r in leader["result"]] == [1.0]


def test_transition_targets() -> None:
    assert transition_target("progressing → paused") == "paused"
    assert transition_target("pending → progressing") == "progressing"
    assert transition_target("progressing") is None
